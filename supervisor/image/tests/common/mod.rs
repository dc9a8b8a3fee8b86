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
            launch: "0a1b2c3d".into(),
            set: vec![
                SetMember {
                    launch: "0a1b2c3d".into(),
                    vpid: 42,
                },
                SetMember {
                    launch: "0a1b2c3d".into(),
                    vpid: 43,
                },
            ],
            no_namespaces: true,
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
            creds: Default::default(),
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
        clocks: Some(dmtcp_image::Clocks {
            monotonic_ns: 123_456_789_012,
            boottime_ns: 223_456_789_012,
        }),
        security: Security {
            filters: vec![
                SeccompFilter {
                    prog: vec![6, 0, 0, 0, 0, 0, 0xff, 0x7f],
                    flags: 0,
                    sandbox: true,
                },
                SeccompFilter {
                    prog: vec![6, 0, 0, 0, 1, 0, 5, 0],
                    flags: 1,
                    sandbox: false,
                },
            ],
            threads: vec![ThreadSeccomp {
                vtid: 42,
                chain: vec![0, 1],
                strict: false,
            }],
            sandbox: Some(SandboxInfo {
                policy: "default".into(),
                owner_uid: 1000,
                allow_read: vec!["/usr".into()],
                allow_write: vec!["/tmp".into()],
                net_none: true,
            }),
        },
        passcred_fds: vec![5, 7],
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
    write_image_with(path, opts, chunks, |w, _, c| w.add_pages(c).unwrap())
}

/// [`write_image`], each chunk's pages handed to the writer by `add`
/// (chunk index, its bytes), which says where they went.
pub fn write_image_with(
    path: &std::path::Path,
    opts: WriteOptions,
    chunks: &[Vec<u8>],
    mut add: impl FnMut(&mut ImageWriter, usize, &[u8]) -> DataRef,
) -> (ProcessImage, u64) {
    let mut w = ImageWriter::create(path, opts).unwrap();
    let mut vmas = Vec::new();
    let mut addr = 0x10_0000_0000u64;
    for (i, c) in chunks.iter().enumerate() {
        let at = add(&mut w, i, c);
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

/// A fixed key for tests that must not depend on the user's key.
pub fn test_key() -> std::sync::Arc<ImageKey> {
    std::sync::Arc::new(ImageKey::from_bytes(&[0x5e; 32]))
}

fn rd64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Recomputes every crc32 of a (possibly edited) format 2.0 image and,
/// with `key`, every MAC: what an attacker can do without the key (crc
/// only), or with it. Fields pointing outside the file are left alone.
pub fn reseal(b: &mut [u8], key: Option<&ImageKey>) {
    const H: usize = 64;
    const T: usize = 96;
    const E: usize = 64;
    let n = b.len();
    if n < H + T {
        return;
    }
    let t0 = n - T;
    let in_file = |off: u64, len: u64| off.checked_add(len).is_some_and(|end| end <= t0 as u64);
    let (table_off, count) = (rd64(b, t0 + 24), rd64(b, t0 + 32));
    let table = count
        .checked_mul(E as u64)
        .filter(|&l| in_file(table_off, l))
        .map(|l| (table_off as usize, l as usize));
    if let Some((at, len)) = table {
        for i in 0..count as usize {
            let e = at + i * E;
            let (off, slen) = (rd64(b, e), rd64(b, e + 8));
            if in_file(off, slen) {
                let stored = &b[off as usize..(off + slen) as usize];
                let crc = crc32fast::hash(stored);
                let mac = key.map(|k| k.block_mac(stored));
                b[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
                if let Some(m) = mac {
                    b[e + 32..e + 64].copy_from_slice(&m);
                }
            }
        }
        let crc = crc32fast::hash(&b[at..at + len]);
        b[t0 + 44..t0 + 48].copy_from_slice(&crc.to_le_bytes());
    }
    let (meta_off, meta_len) = (rd64(b, t0), rd64(b, t0 + 8));
    let meta = in_file(meta_off, meta_len).then_some((meta_off as usize, meta_len as usize));
    if let Some((at, len)) = meta {
        let crc = crc32fast::hash(&b[at..at + len]);
        b[t0 + 40..t0 + 44].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    if let (Some(k), Some((ta, tl)), Some((ma, ml))) = (key, table, meta) {
        let mac = k.image_mac(&[&b[0..H], &b[t0..t0 + 52], &b[ma..ma + ml], &b[ta..ta + tl]]);
        b[t0 + 52..t0 + 84].copy_from_slice(&mac);
    }
    let crc = crc32fast::hash(&b[t0..t0 + 84]);
    b[t0 + 84..t0 + 88].copy_from_slice(&crc.to_le_bytes());
}

/// Flips bit `bit` of `data` and the bits among the 32 at byte `fix_at`
/// that keep its crc32 unchanged (crc32 is linear: any 32 consecutive
/// bits can compensate any edit). The edit a crc cannot see.
pub fn flip_keeping_crc(data: &mut [u8], bit: usize, fix_at: usize) {
    let zero = vec![0u8; data.len()];
    let c0 = crc32fast::hash(&zero);
    let f = |pos: usize| {
        let mut v = zero.clone();
        v[pos / 8] ^= 1 << (pos % 8);
        crc32fast::hash(&v) ^ c0
    };
    // xor basis of the 32 compensating columns: (value, columns used).
    let mut basis: Vec<(u32, u32)> = Vec::new();
    for j in 0..32 {
        let (mut v, mut m) = (f(fix_at * 8 + j), 1u32 << j);
        for &(bv, bm) in &basis {
            if v ^ bv < v {
                v ^= bv;
                m ^= bm;
            }
        }
        if v != 0 {
            basis.push((v, m));
            basis.sort_by_key(|b| std::cmp::Reverse(b.0));
        }
    }
    let (mut t, mut s) = (f(bit), 0u32);
    for &(bv, bm) in &basis {
        if t ^ bv < t {
            t ^= bv;
            s ^= bm;
        }
    }
    assert_eq!(t, 0, "32 consecutive bits always compensate");
    let before = crc32fast::hash(data);
    data[bit / 8] ^= 1 << (bit % 8);
    for j in 0..32 {
        if s & (1 << j) != 0 {
            let p = fix_at * 8 + j;
            data[p / 8] ^= 1 << (p % 8);
        }
    }
    assert_eq!(crc32fast::hash(data), before);
}
