//! Shared test helpers: a deterministic sample image and page generators.
#![allow(dead_code)]

use dmtcp_image::*;

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub fn random_pages(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n * 4096];
    rng.fill(&mut v);
    v
}

pub fn zero_pages(n: usize) -> Vec<u8> {
    vec![0u8; n * 4096]
}

pub fn text_pages(rng: &mut Rng, n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "checkpoint ",
        "restart ",
        "process ",
        "thread ",
        "memory ",
        "the ",
        "a ",
        "of ",
        "page ",
        "image\n",
        "coordinator ",
        "signal ",
    ];
    let mut v = Vec::with_capacity(n * 4096);
    while v.len() < n * 4096 {
        v.extend_from_slice(WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes());
    }
    v.truncate(n * 4096);
    v
}

/// A ProcessImage with every field set; `vmas` are filled in by the caller.
pub fn sample_image(vmas: Vec<Vma>) -> ProcessImage {
    let mut regs = vec![0u64; 27];
    regs[16] = 0x401000;
    regs[19] = 0x7ffd_0000_1000;
    ProcessImage {
        computation: ComputationInfo {
            id: "a1b2c3d4".into(),
            generation: 2,
            host: "node1".into(),
            taken_at_unix_ns: 1_700_000_000_000_000_000,
            coord_host: "127.0.0.1".into(),
            coord_port: 7779,
        },
        process: ProcessInfo {
            vpid: 42,
            vppid: 1,
            vpgid: 42,
            vsid: 42,
            host_pid: 31337,
            comm: "counter".into(),
            exe: "/usr/bin/counter".into(),
            cmdline: vec![b"counter".to_vec(), b"--n".to_vec(), b"5".to_vec()],
            cwd: "/home/user".into(),
            umask: 0o022,
            rlimits: vec![(7, 1024, 4096)],
            personality: 0,
            caps: Capabilities::default(),
            uid: 1000,
            gid: 1000,
            no_new_privs: false,
            dumpable: 1,
            mm: MmFields::default(),
            auxv: vec![6, 4096, 0, 0],
            sigactions: vec![SigAction::default(); 64],
            shared_pending: vec![],
            itimers: [(0, 0); 3],
            child_subreaper: false,
            posix_timers: Vec::new(),
            zombie: None,
            ctty: None,
        },
        threads: vec![
            ThreadState {
                vtid: 42,
                name: "counter".into(),
                regs: regs.clone(),
                xstate: vec![0xab; 64],
                sigmask: 0,
                pending: vec![],
                clear_child_tid: 0x7f00_0000_0990,
                robust_list: (0x7f00_0000_09a0, 24),
                rseq: Some(Rseq {
                    addr: 0x7f00_0000_0fe0,
                    len: 32,
                    flags: 0,
                    signature: 0x5305_3053,
                }),
                sigaltstack: (0, 2, 0),
            },
            ThreadState {
                vtid: 43,
                name: "dmtcp-ckpt".into(),
                regs,
                xstate: vec![],
                sigmask: u64::MAX,
                pending: vec![],
                clear_child_tid: 0,
                robust_list: (0, 0),
                rseq: None,
                sigaltstack: (0, 2, 0),
            },
        ],
        fds: vec![
            FdEntry {
                fd: 0,
                desc: 1,
                cloexec: false,
                kind: FdKind::Inherit {
                    from: 0,
                    what: "/dev/pts/3".into(),
                },
                locks: Vec::new(),
            },
            FdEntry {
                fd: 3,
                desc: 2,
                cloexec: true,
                kind: FdKind::File {
                    path: "/tmp/log".into(),
                    flags: 0o2001,
                    offset: 120,
                    deleted: false,
                    contents: None,
                },
                locks: vec![
                    FileLock {
                        kind: LockKind::Posix,
                        write: true,
                        start: 10,
                        end: Some(19),
                    },
                    FileLock {
                        kind: LockKind::Flock,
                        write: false,
                        start: 0,
                        end: None,
                    },
                ],
            },
            FdEntry {
                fd: 4,
                desc: 3,
                cloexec: false,
                kind: FdKind::Unsupported {
                    what: "socket:[1234]".into(),
                },
                locks: Vec::new(),
            },
            FdEntry {
                fd: 5,
                desc: 4,
                cloexec: false,
                kind: FdKind::Mqueue {
                    name: "q".into(),
                    flags: 0o4002,
                    mode: 0o600,
                    maxmsg: 8,
                    msgsize: 64,
                    messages: vec![(3, b"hi".to_vec()), (0, b"low".to_vec())],
                },
                locks: Vec::new(),
            },
            FdEntry {
                fd: 6,
                desc: 5,
                cloexec: true,
                kind: FdKind::Memfd {
                    id: 77,
                    name: "buf".into(),
                    flags: 2,
                    offset: 5,
                    size: 8192,
                    seals: 8,
                    contents: Some(b"memfd".to_vec()),
                },
                locks: Vec::new(),
            },
        ],
        vmas,
        parent: None,
        ipc: Some(IpcState {
            shm: vec![ShmSegment {
                perm: IpcPerm {
                    id: 32768,
                    key: 0x1234,
                    mode: 0o1600,
                    uid: 1000,
                    gid: 1000,
                },
                size: 8192,
                pages: Vec::new(),
            }],
            sem: vec![SemSet {
                perm: IpcPerm {
                    id: 1,
                    key: 0,
                    mode: 0o600,
                    uid: 1000,
                    gid: 1000,
                },
                values: vec![1, 0, 7],
            }],
            msg: vec![MsgQueue {
                perm: IpcPerm {
                    id: 2,
                    key: 0x55,
                    mode: 0o640,
                    uid: 1000,
                    gid: 1000,
                },
                qbytes: 16384,
                messages: vec![(1, b"m".to_vec())],
            }],
        }),
        clocks: None,
    }
}

/// Writes `chunks` (one run each, into one anonymous VMA per chunk, laid
/// out one after another) and returns the final image metadata and the
/// bytes of each run.
pub fn write_image(
    path: &std::path::Path,
    opts: WriteOptions,
    chunks: &[Vec<u8>],
) -> (ProcessImage, u64) {
    let mut w = ImageWriter::create(path, opts).unwrap();
    let mut vmas = Vec::new();
    let mut addr = 0x10_0000_0000u64;
    for (i, c) in chunks.iter().enumerate() {
        let at = w.add_pages(c).unwrap();
        let npages = (c.len() / 4096) as u64;
        vmas.push(Vma {
            start: addr,
            end: addr + (npages + 1) * 4096,
            prot: 3,
            shared: false,
            kind: if i == 0 {
                VmaKind::Anon {
                    name: Some("[heap]".into()),
                }
            } else {
                VmaKind::Anon { name: None }
            },
            growsdown: false,
            account: false,
            pages: vec![PageRun {
                addr,
                npages,
                data: at,
            }],
            from_parent: vec![],
        });
        addr += (npages + 16) * 4096;
    }
    let meta = sample_image(vmas);
    let size = w.finish(&meta).unwrap();
    (meta, size)
}

/// All runs of an image in order.
pub fn runs(meta: &ProcessImage) -> Vec<PageRun> {
    meta.vmas
        .iter()
        .flat_map(|v| v.pages.iter().copied())
        .collect()
}
