//! Capturing a frozen process: its threads, process-wide state, file
//! descriptors and memory, into a [`ProcessImage`] plus page data.
//!
//! Everything is read from outside: registers through ptrace, kernel state
//! through `/proc` or syscalls injected into a stopped thread (the scratch
//! page they need is unmapped again before the memory map is read), memory
//! through `/proc/PID/mem` guided by pagemap so pages never populated are not
//! read at all and zero pages are not stored.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use std::os::fd::OwnedFd;

use dmtcp_image::{
    Capabilities, ComputationInfo, Ctty, FdEntry, FdKind, ImageWriter, MmFields, PageSpan,
    ParentRef, PosixTimer, ProcessImage, ProcessInfo, Rseq, SigAction, ThreadState, Vma, VmaKind,
    PAGE_SIZE,
};

use crate::dirty::{DirtyTracker, Written};
use crate::fdshare::{pipe_inode, FdContext};
use crate::freeze::FrozenProcess;
use crate::pageread;
use crate::pid::{HostPid, RemoteAddr};
use crate::procfs::{self, MapEntry, Mem, Pagemap};
use crate::ptrace;
use crate::remote::{find_syscall_insn, Injector};

/// Errors of a capture carry the pid and the step.
fn ctx<T>(r: io::Result<T>, pid: HostPid, what: &str) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("pid {pid}: {what}: {e}")))
}

/// Locates a `syscall` instruction usable for injection: the vdso has some.
pub fn syscall_insn(pid: HostPid, maps: &[MapEntry], mem: &Mem) -> io::Result<RemoteAddr> {
    let vdso = maps
        .iter()
        .find(|m| m.name == "[vdso]")
        .ok_or_else(|| io::Error::other(format!("pid {pid} has no [vdso]")))?;
    find_syscall_insn(mem, vdso.start, vdso.end)
}

/// State only syscalls inside the target can tell.
struct InjectedState {
    /// Where our scratch mapping was (gone by now).
    scratch: (u64, u64),
    brk: u64,
    dumpable: u32,
    child_subreaper: bool,
    sigactions: Vec<SigAction>,
    itimers: [(u64, u64); 3],
    /// Per thread (same order as `FrozenProcess::threads`): clear_child_tid, sigaltstack.
    per_thread: Vec<ThreadQuery>,
    posix_timers: Vec<PosixTimer>,
    /// The copy-on-write snapshot child, when one was asked for and made.
    snapshot: Option<(HostPid, i32)>,
    /// A userfaultfd made inside the process for dirty-page tracking.
    uffd: Option<OwnedFd>,
    /// Each thread's signal mask (as found, before we blocked everything).
    sigmasks: Vec<u64>,
}

/// Dirty-page tracking for one capture (incremental checkpoints).
pub struct DirtyScan<'a> {
    pub tracker: &'a mut DirtyTracker,
    /// The image to build on; `None` makes a full image (tracking still
    /// restarts from this checkpoint).
    pub base: Option<ParentRef>,
}

fn read_u64s(mem: &Mem, addr: u64, n: usize) -> io::Result<Vec<u64>> {
    let mut b = vec![0u8; n * 8];
    mem.read(addr, &mut b)?;
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8")))
        .collect())
}

fn inject_queries(
    fp: &mut FrozenProcess,
    insn: RemoteAddr,
    mem: &Mem,
    caught_or_ignored: u64,
    want_snapshot: bool,
    want_uffd: bool,
) -> io::Result<InjectedState> {
    let leader = fp.threads[0].tid;
    // Signals arriving while we run syscalls in a thread must pend, not be
    // delivered to (or swallowed by) our injected code: block them all in
    // every thread for the duration and put the masks back afterwards.
    let masks: Vec<u64> = fp
        .threads
        .iter()
        .map(|t| ptrace::get_sigmask(t.tid))
        .collect::<io::Result<_>>()?;
    for t in &fp.threads {
        ptrace::set_sigmask(t.tid, u64::MAX)?;
    }
    let result = inject_queries_blocked(
        fp,
        insn,
        mem,
        caught_or_ignored,
        leader,
        want_snapshot,
        want_uffd,
    );
    for (t, m) in fp.threads.iter().zip(&masks) {
        ptrace::set_sigmask(t.tid, *m)?;
    }
    let mut state = result?;
    state.sigmasks = masks;
    Ok(state)
}

fn inject_queries_blocked(
    fp: &mut FrozenProcess,
    insn: RemoteAddr,
    mem: &Mem,
    caught_or_ignored: u64,
    leader: HostPid,
    want_snapshot: bool,
    want_uffd: bool,
) -> io::Result<InjectedState> {
    let pid = fp.pid;
    let mut inj = Injector::new(leader, insn)?;
    // Scratch: the per-thread query code at 0, results from SCRATCH_SLOTS.
    let scratch_len = (SCRATCH_SLOTS + fp.threads.len() as u64 * SLOT).next_multiple_of(PAGE_SIZE);
    let scratch = inj.syscall(
        libc::SYS_mmap,
        [
            0,
            scratch_len,
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
            // Shared: a mapping of its own that never merges with a
            // neighbour, so the memory map read meanwhile (`MapReader`)
            // can leave it out exactly.
            (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )?;
    fp.threads[0].touched = true;
    let result = (|| {
        let brk = inj.syscall(libc::SYS_brk, [0; 6])?;
        let dumpable = inj.syscall(
            libc::SYS_prctl,
            [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
        )? as u32;
        inj.syscall(
            libc::SYS_prctl,
            [libc::PR_GET_CHILD_SUBREAPER as u64, scratch, 0, 0, 0, 0],
        )?;
        let child_subreaper = read_u64s(mem, scratch, 1)?[0] as u32 != 0;
        let mut sigactions = vec![SigAction::default(); 64];
        for sig in 1..=64u64 {
            if caught_or_ignored & (1 << (sig - 1)) == 0 {
                continue;
            }
            inj.syscall(libc::SYS_rt_sigaction, [sig, 0, scratch, 8, 0, 0])?;
            let w = read_u64s(mem, scratch, 4)?;
            sigactions[(sig - 1) as usize] = SigAction {
                handler: w[0],
                flags: w[1],
                restorer: w[2],
                mask: w[3],
            };
        }
        let mut itimers = [(0, 0); 3];
        for (which, slot) in itimers.iter_mut().enumerate() {
            inj.syscall(libc::SYS_getitimer, [which as u64, scratch, 0, 0, 0, 0])?;
            let w = read_u64s(mem, scratch, 4)?;
            *slot = (w[0] * 1_000_000 + w[1], w[2] * 1_000_000 + w[3]);
        }
        // First: it also learns each thread's tid in the namespace.
        let tq = std::time::Instant::now();
        let per_thread = per_thread_queries(fp, mem, scratch)?;
        tracing::debug!(
            "pid {pid}: per-thread queries of {} threads in {:?}",
            fp.threads.len(),
            tq.elapsed()
        );
        let mut posix_timers = parse_timers(fp)?;
        for t in posix_timers.iter_mut() {
            inj.syscall(libc::SYS_timer_gettime, [t.id as u64, scratch, 0, 0, 0, 0])?;
            let w = read_u64s(mem, scratch, 4)?;
            t.interval_ns = w[0] * 1_000_000_000 + w[1];
            t.value_ns = w[2] * 1_000_000_000 + w[3];
        }
        Ok(InjectedState {
            scratch: (scratch, scratch + scratch_len),
            brk,
            dumpable,
            child_subreaper,
            sigactions,
            itimers,
            per_thread,
            posix_timers,
            snapshot: None,
            uffd: None,
            sigmasks: Vec::new(),
        })
    })();
    let unmap = inj.syscall(libc::SYS_munmap, [scratch, scratch_len, 0, 0, 0, 0]);
    let mut state = ctx(result, pid, "querying state inside the process")?;
    ctx(unmap, pid, "unmapping the scratch page")?;
    if want_uffd {
        match make_uffd(&mut inj, pid) {
            Ok(fd) => state.uffd = Some(fd),
            Err(e) => {
                tracing::warn!("pid {pid}: no dirty-page tracking ({e}); its checkpoints stay full")
            }
        }
    }
    if want_snapshot {
        // Last, after our own scratch page is gone: the child's memory is
        // the process's memory at this instant.
        let ts = std::time::Instant::now();
        let snap = make_snapshot(&mut inj);
        tracing::debug!("pid {pid}: snapshot made in {:?}", ts.elapsed());
        match snap {
            Ok(s) => state.snapshot = Some(s),
            Err(e) => tracing::warn!(
                "pid {pid}: no copy-on-write snapshot ({e}); memory is read while frozen"
            ),
        }
    }
    Ok(state)
}

/// What each thread reports about itself (the query code below).
struct ThreadQuery {
    clear_child_tid: u64,
    /// sigaltstack: (ss_sp, ss_flags, ss_size).
    altstack: (u64, i32, u64),
    /// PR_GET_NAME.
    name: String,
    /// get_robust_list: (head, len).
    robust: (u64, u64),
}

/// Where per-thread results start in the scratch area, and their size.
const SCRATCH_SLOTS: u64 = 256;
const SLOT: u64 = 80;

/// x86-64 code run by every thread at once, writing to its slot at r12:
/// `prctl(PR_GET_TID_ADDRESS, r12)`, `sigaltstack(NULL, r12+8)`,
/// `gettid()` to r12+32, `prctl(PR_GET_NAME, r12+40)`,
/// `get_robust_list(0, r12+56, r12+64)`, then `int3` to stop. One ptrace
/// stop per thread instead of four per injected syscall, and the threads
/// run it in parallel.
const THREAD_QUERY_CODE: [u8; 78] = [
    0xb8, 0x9d, 0x00, 0x00, 0x00, // mov eax, SYS_prctl (157)
    0xbf, 0x28, 0x00, 0x00, 0x00, // mov edi, PR_GET_TID_ADDRESS (40)
    0x4c, 0x89, 0xe6, // mov rsi, r12
    0x0f, 0x05, // syscall
    0xb8, 0x83, 0x00, 0x00, 0x00, // mov eax, SYS_sigaltstack (131)
    0x31, 0xff, // xor edi, edi
    0x49, 0x8d, 0x74, 0x24, 0x08, // lea rsi, [r12+8]
    0x0f, 0x05, // syscall
    0xb8, 0xba, 0x00, 0x00, 0x00, // mov eax, SYS_gettid (186)
    0x0f, 0x05, // syscall
    0x49, 0x89, 0x44, 0x24, 0x20, // mov [r12+32], rax
    0xb8, 0x9d, 0x00, 0x00, 0x00, // mov eax, SYS_prctl (157)
    0xbf, 0x10, 0x00, 0x00, 0x00, // mov edi, PR_GET_NAME (16)
    0x49, 0x8d, 0x74, 0x24, 0x28, // lea rsi, [r12+40]
    0x0f, 0x05, // syscall
    0xb8, 0x12, 0x01, 0x00, 0x00, // mov eax, SYS_get_robust_list (274)
    0x31, 0xff, // xor edi, edi
    0x49, 0x8d, 0x74, 0x24, 0x38, // lea rsi, [r12+56]
    0x49, 0x8d, 0x54, 0x24, 0x40, // lea rdx, [r12+64]
    0x0f, 0x05, // syscall
    0xcc, // int3
];

/// Runs [`THREAD_QUERY_CODE`] in every thread concurrently, each writing
/// its own slot, and fills in each thread's `vtid`.
fn per_thread_queries(
    fp: &mut FrozenProcess,
    mem: &Mem,
    scratch: u64,
) -> io::Result<Vec<ThreadQuery>> {
    // The code goes in through /proc/PID/mem: the scratch mapping is ours.
    let wmem = Mem::open(fp.pid, true)?;
    wmem.write(scratch, &THREAD_QUERY_CODE)?;
    let slot = |i: usize| scratch + SCRATCH_SLOTS + i as u64 * SLOT;
    for (i, t) in fp.threads.iter_mut().enumerate() {
        let mut r = t.regs;
        r.rip = scratch;
        r.r12 = slot(i);
        r.orig_rax = u64::MAX; // no syscall restart on the way out
        r.eflags &= !(0x100 | 0x400);
        ptrace::set_regs(t.tid, &r)?;
        t.touched = true;
    }
    for t in &fp.threads {
        ptrace::cont(t.tid, 0)?;
    }
    for t in &fp.threads {
        loop {
            match ptrace::wait_alive(t.tid)? {
                ptrace::Stop::Signal(libc::SIGTRAP) => break,
                ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_) => {
                    return Err(io::Error::other(format!(
                        "tid {} died during the queries",
                        t.tid
                    )))
                }
                // Signals are blocked; anything else just lets it go on.
                _ => ptrace::cont(t.tid, 0)?,
            }
        }
        // Back to where the freeze found it (the SIGTRAP stop is discarded
        // when it runs again).
        ptrace::set_regs(t.tid, &t.regs)?;
    }
    let n = fp.threads.len();
    let mut all = vec![0u8; n * SLOT as usize];
    mem.read(slot(0), &mut all)?;
    let mut out = Vec::with_capacity(n);
    for (t, b) in fp.threads.iter_mut().zip(all.chunks_exact(SLOT as usize)) {
        let w = |k: usize| u64::from_ne_bytes(b[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
        let name = &b[40..56];
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(16)];
        t.vtid = w(4) as i32;
        out.push(ThreadQuery {
            clear_child_tid: w(0),
            altstack: (w(1), w(2) as u32 as i32, w(3)),
            name: String::from_utf8_lossy(name).into_owned(),
            robust: (w(7), w(8)),
        });
    }
    Ok(out)
}

/// Forks the process from inside (an injected `clone` in a stopped thread)
/// into a copy-on-write snapshot child that never runs: it is auto-attached
/// and stays in its first ptrace stop until we kill it. It shares the fd
/// table and fs info, so it holds no extra reference to any file, and has
/// no exit signal, so the program gets no SIGCHLD for it.
/// Returns (host pid, pid inside the namespace).
fn make_snapshot(inj: &mut Injector) -> io::Result<(HostPid, i32)> {
    let opts = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE;
    ptrace::set_options(inj.tid, opts)?;
    let flags = (libc::CLONE_FILES | libc::CLONE_FS) as u64;
    let r = inj.syscall(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]);
    ptrace::set_options(inj.tid, libc::PTRACE_O_TRACESYSGOOD)?;
    let vpid = r? as i32;
    let child = inj
        .cloned
        .take()
        .ok_or_else(|| io::Error::other("clone reported no new process"))?;
    match ptrace::wait_alive(child)? {
        ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_) => {
            Err(io::Error::other("snapshot child died at birth"))
        }
        _ => Ok((child, vpid)),
    }
}

/// A userfaultfd bound to the process's memory, made by an injected
/// `userfaultfd()`, copied to us and closed in the process again.
fn make_uffd(inj: &mut Injector, pid: HostPid) -> io::Result<OwnedFd> {
    let flags = crate::dirty::UFFD_USER_MODE_ONLY | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = inj.syscall(libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
    let ours = crate::sys::steal_fd(pid.0, fd as i32);
    inj.syscall(libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    ours
}

/// `/proc/PID/timers`: id, clock, notification and signal of each timer
/// (times come from an injected `timer_gettime`).
fn parse_timers(fp: &FrozenProcess) -> io::Result<Vec<PosixTimer>> {
    let text = match std::fs::read_to_string(format!("/proc/{}/timers", fp.pid.0)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let (k, v) = match line.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => continue,
        };
        match k {
            "ID" => out.push(PosixTimer {
                id: v
                    .parse()
                    .map_err(|_| io::Error::other(format!("timers: {line}")))?,
                clock: 0,
                notify: libc::SIGEV_SIGNAL,
                signo: 0,
                value: 0,
                thread: 0,
                value_ns: 0,
                interval_ns: 0,
            }),
            "signal" => {
                if let (Some(t), Some((sig, val))) = (out.last_mut(), v.split_once('/')) {
                    t.signo = sig.parse().unwrap_or(0);
                    t.value = u64::from_str_radix(val, 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let Some(t) = out.last_mut() {
                    let (kind, target) = v.split_once('/').unwrap_or((v, ""));
                    t.notify = match kind {
                        "none" => libc::SIGEV_NONE,
                        "thread" => libc::SIGEV_THREAD_ID,
                        _ => libc::SIGEV_SIGNAL,
                    };
                    if t.notify == libc::SIGEV_THREAD_ID {
                        let host: i32 = target
                            .rsplit('.')
                            .next()
                            .and_then(|x| x.parse().ok())
                            .unwrap_or(0);
                        t.thread = fp
                            .threads
                            .iter()
                            .find(|th| th.tid.0 == host)
                            .map(|th| th.vtid as u32)
                            .unwrap_or(0);
                    }
                }
            }
            "ClockID" => {
                if let Some(t) = out.last_mut() {
                    t.clock = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn mm_fields(pid: HostPid, brk: u64) -> io::Result<MmFields> {
    let f = procfs::stat_fields(pid)?;
    let g = |n| procfs::stat_field(&f, n);
    Ok(MmFields {
        start_code: g(26)?,
        end_code: g(27)?,
        start_stack: g(28)?,
        start_data: g(45)?,
        end_data: g(46)?,
        start_brk: g(47)?,
        brk,
        arg_start: g(48)?,
        arg_end: g(49)?,
        env_start: g(50)?,
        env_end: g(51)?,
    })
}

/// "/memfd:NAME (deleted)" -> NAME.
fn memfd_name(target: &str) -> &str {
    target
        .strip_prefix("/memfd:")
        .and_then(|n| n.strip_suffix(" (deleted)"))
        .unwrap_or(target)
}

/// A memfd; its size, seals and contents are saved with the first fd seen.
fn memfd_kind(
    pid: HostPid,
    fd: i32,
    target: &str,
    flags: i32,
    offset: u64,
    fdctx: &mut FdContext,
) -> io::Result<Option<FdKind>> {
    let path = format!("/proc/{}/fd/{fd}", pid.0);
    let meta =
        std::fs::metadata(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let dup = crate::sys::steal_fd(pid.0, fd)?;
    let Some(seals) = crate::sys::memfd_seals(&dup) else {
        return Ok(None); // a deleted file that only looks like a memfd
    };
    let contents = if fdctx.claim_memfd(meta.ino()) {
        let mut c = std::fs::read(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading memfd fd {fd}: {e}")))?;
        let used = c.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        c.truncate(used);
        Some(c)
    } else {
        None
    };
    Ok(Some(FdKind::Memfd {
        id: meta.ino(),
        name: memfd_name(target).to_string(),
        flags,
        offset,
        size: meta.len(),
        seals,
        contents,
    }))
}

fn vma_kind(m: &MapEntry) -> VmaKind {
    match m.name.as_str() {
        "[vdso]" => VmaKind::Vdso,
        "[vvar]" => VmaKind::Vvar,
        "[vvar_vclock]" => VmaKind::VvarVclock,
        "[vsyscall]" => VmaKind::Vsyscall,
        "/dev/zero (deleted)" if m.shared => VmaKind::SharedAnon {
            id: m.inode,
            offset: m.offset,
        },
        n if n.starts_with("/memfd:") && n.ends_with(" (deleted)") => VmaKind::Memfd {
            id: m.inode,
            name: memfd_name(n).to_string(),
            offset: m.offset,
        },
        // SysV shared memory: the kernel uses the shmid as the inode number.
        n if m.shared && n.starts_with("/SYSV") && n.ends_with(" (deleted)") => VmaKind::SysvShm {
            id: m.inode as i32,
            offset: m.offset,
        },
        n if m.inode != 0 && n.starts_with('/') => VmaKind::File {
            path: n.trim_end_matches(" (deleted)").to_string(),
            offset: m.offset,
            dev: m.dev,
            inode: m.inode,
        },
        "" => VmaKind::Anon { name: None },
        n => VmaKind::Anon {
            name: Some(n.to_string()),
        },
    }
}

/// Which pages of a mapping must be saved, by pagemap.
/// `object`: a shared memory object whose pages are saved with the mapping
/// (shared anonymous memory, a memfd no fd holds).
fn wanted(m: &MapEntry, entry: u64, object: bool) -> bool {
    let populated = entry & (procfs::PM_PRESENT | procfs::PM_SWAPPED) != 0;
    if !populated {
        return false;
    }
    let file_backed = m.inode != 0 && !object;
    if file_backed {
        // Shared file pages live in the file; private ones only when COW'd
        // (an anonymous copy: present but not a file page).
        !m.shared && entry & procfs::PM_FILE_OR_SHARED == 0
    } else {
        true
    }
}

/// Which pages of one mapping are saved (`vma` is its index in the
/// image), from pagemap: the ranges to read, and with `unchanged` (per
/// page, incremental images) the spans left to the parent image.
fn plan_vma(
    vma: usize,
    m: &MapEntry,
    object: bool,
    pagemap: &Pagemap,
    unchanged: Option<&[bool]>,
) -> io::Result<(Vec<pageread::Range>, Vec<PageSpan>)> {
    let entries = pagemap.entries(m.start, m.end)?;
    let mut from_parent: Vec<PageSpan> = Vec::new();
    let mut ranges: Vec<pageread::Range> = Vec::new();
    // A fresh anonymous (or shared anonymous) mapping is zero: zero pages
    // need not be stored.
    let anon = m.inode == 0 || object;
    for (i, &e) in entries.iter().enumerate() {
        if !wanted(m, e, object) {
            continue;
        }
        let addr = m.start + i as u64 * PAGE_SIZE;
        if unchanged.is_some_and(|u| u[i]) {
            match from_parent.last_mut() {
                Some(s) if s.end() == addr => s.npages += 1,
                _ => from_parent.push(PageSpan { addr, npages: 1 }),
            }
            continue;
        }
        match ranges.last_mut() {
            Some(r) if r.addr + r.npages * PAGE_SIZE == addr => r.npages += 1,
            _ => ranges.push(pageread::Range {
                vma,
                addr,
                npages: 1,
                anon,
            }),
        }
    }
    Ok((ranges, from_parent))
}

/// Reads the pages worth saving of `todo` (mapping index in `vmas`, the
/// mapping, whether it is a shared memory object, its unchanged pages)
/// into the writer on every core, and fills in each mapping's runs and
/// pages left to the parent image.
fn capture_vmas(
    todo: &[(usize, MapEntry, bool, Option<Vec<bool>>)],
    pagemap: &Pagemap,
    mem: &Mem,
    writer: &mut ImageWriter,
    vmas: &mut [Vma],
    what: &str,
) -> io::Result<()> {
    let mut ranges = Vec::new();
    for (i, m, object, unchanged) in todo {
        let (r, from_parent) = plan_vma(*i, m, *object, pagemap, unchanged.as_deref())
            .map_err(|e| vma_error(e, what, m))?;
        ranges.extend(r);
        vmas[*i].from_parent = from_parent;
    }
    let runs = pageread::read_into_image(mem, &ranges, vmas.len(), writer)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    for (v, r) in vmas.iter_mut().zip(runs) {
        if !r.is_empty() {
            v.pages = r;
        }
    }
    Ok(())
}

/// An error while reading one mapping, naming it.
fn vma_error(e: io::Error, what: &str, m: &MapEntry) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{what} {:#x}-{:#x} {}: {e}", m.start, m.end, m.name),
    )
}

/// Memory whose pages are read after the program runs again, from the
/// copy-on-write snapshot child.
pub struct Deferred {
    /// The snapshot child (host pid; stopped and traced by us) and its pid
    /// inside the namespace.
    pub child: HostPid,
    child_vpid: i32,
    /// The process it was cloned from, which must reap it.
    pub parent: HostPid,
    /// (index into the image's VMAs, the mapping, its unchanged pages for
    /// an incremental image) for each deferred VMA.
    vmas: Vec<(usize, MapEntry, Option<Vec<bool>>)>,
    released: bool,
}

/// Pages of mappings that a snapshot child cannot stand in for are read at
/// once: shared memory (the program keeps writing it), and mappings a fork
/// does not copy (`MADV_DONTFORK`, `MADV_WIPEONFORK`).
fn needs_reading_now(m: &MapEntry, vf: &[String]) -> bool {
    m.shared || vf.iter().any(|f| f == "dc" || f == "wf")
}

/// Dirty-page scan at the freeze: which pages are unchanged since the
/// image `dirty.base` (None: a full image). Tracking problems never fail the
/// checkpoint; they make it a full one.
fn scan_written(
    pid: HostPid,
    maps: &[MapEntry],
    flags: &[(u64, Vec<String>)],
    dirty: Option<DirtyScan<'_>>,
    uffd: Option<OwnedFd>,
) -> Option<(Written, ParentRef)> {
    let dirty = dirty?;
    let t = std::time::Instant::now();
    let pairs: Vec<(&MapEntry, &[String])> =
        maps.iter().map(|m| (m, vm_flags_of(flags, m))).collect();
    match dirty.tracker.scan(pid, uffd, &pairs) {
        Ok(w) => {
            tracing::debug!("pid {pid}: dirty-page scan in {:?}", t.elapsed());
            dirty.base.map(|b| (w, b))
        }
        Err(e) => {
            tracing::warn!("pid {pid}: dirty-page tracking lost ({e}); this image is a full one");
            dirty.tracker.forget(pid);
            None
        }
    }
}

fn vm_flags_of<'a>(flags: &'a [(u64, Vec<String>)], m: &MapEntry) -> &'a [String] {
    flags
        .iter()
        .find(|(s, _)| *s == m.start)
        .map(|(_, f)| f.as_slice())
        .unwrap_or(&[])
}

/// The memory map and VM flags of a frozen process, read on a thread of
/// its own while syscalls are injected (`smaps` costs ~9 us per mapping:
/// 9 ms for a process with 512 threads' stacks). The only mapping that
/// changes meanwhile is our scratch mapping, which is left out.
struct MapReader(std::thread::JoinHandle<io::Result<MemoryMap>>);

/// A process's mappings and each mapping's VM flags (by start address).
type MemoryMap = (Vec<MapEntry>, Vec<(u64, Vec<String>)>);

impl MapReader {
    fn start(pid: HostPid) -> io::Result<MapReader> {
        std::thread::Builder::new()
            .name("maps".into())
            .spawn(move || {
                Ok((
                    procfs::maps(pid)?,
                    procfs::vm_flags(pid).unwrap_or_default(),
                ))
            })
            .map(MapReader)
    }

    /// The map without `[scratch.0, scratch.1)`.
    fn finish(self, scratch: (u64, u64)) -> io::Result<MemoryMap> {
        let (mut maps, mut flags) = self
            .0
            .join()
            .map_err(|_| io::Error::other("the memory map reader panicked"))??;
        maps.retain(|m| (m.start, m.end) != scratch);
        flags.retain(|(start, _)| *start != scratch.0);
        Ok((maps, flags))
    }
}

#[allow(clippy::too_many_arguments)]
fn capture_memory(
    pid: HostPid,
    (maps, flags): MemoryMap,
    mem: &Mem,
    writer: &mut ImageWriter,
    snapshot: Option<(HostPid, i32)>,
    dirty: Option<DirtyScan<'_>>,
    uffd: Option<OwnedFd>,
    fdctx: &FdContext,
) -> io::Result<(Vec<Vma>, Option<Deferred>, Option<ParentRef>)> {
    let written = scan_written(pid, &maps, &flags, dirty, uffd);
    let pagemap = Pagemap::open(pid)?;
    let mut vmas = Vec::with_capacity(maps.len());
    let mut now = Vec::new();
    let mut deferred = snapshot.map(|(child, child_vpid)| Deferred {
        child,
        child_vpid,
        parent: pid,
        vmas: Vec::new(),
        released: false,
    });
    for m in &maps {
        let kind = vma_kind(m);
        let object = match &kind {
            VmaKind::SharedAnon { .. } => true,
            VmaKind::Memfd { id, .. } => m.shared && !fdctx.memfd_has_fd(*id),
            _ => false,
        };
        let vf = vm_flags_of(&flags, m);
        let growsdown = vf.iter().any(|f| f == "gd");
        let account = vf.iter().any(|f| f == "ac");
        let special = matches!(
            kind,
            VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall
        ) || vf.iter().any(|f| f == "io" || f == "pf");
        // Shared memory and mappings read now are always saved whole.
        let unchanged = written
            .as_ref()
            .filter(|_| !needs_reading_now(m, vf))
            .map(|(w, _)| w.unchanged(m.start, m.end));
        match deferred.as_mut() {
            _ if special => {}
            Some(d) if !needs_reading_now(m, vf) => {
                d.vmas.push((vmas.len(), m.clone(), unchanged));
            }
            _ => now.push((vmas.len(), m.clone(), object, unchanged)),
        }
        vmas.push(Vma {
            start: m.start,
            end: m.end,
            prot: m.prot(),
            shared: m.shared,
            kind,
            growsdown,
            account,
            pages: Vec::new(),
            from_parent: Vec::new(),
        });
    }
    capture_vmas(&now, &pagemap, mem, writer, &mut vmas, "memory")?;
    Ok((vmas, deferred, written.map(|(_, base)| base)))
}

impl Deferred {
    /// Reads the deferred pages from the snapshot into the writer and the
    /// image's VMAs. The program runs meanwhile.
    pub fn capture(&self, meta: &mut ProcessImage, writer: &mut ImageWriter) -> io::Result<()> {
        let mem = Mem::open(self.child, false)?;
        let pagemap = Pagemap::open(self.child)?;
        let todo: Vec<_> = self
            .vmas
            .iter()
            .map(|(i, m, unchanged)| (*i, m.clone(), false, unchanged.clone()))
            .collect();
        capture_vmas(
            &todo,
            &pagemap,
            &mem,
            writer,
            &mut meta.vmas,
            "snapshot memory",
        )
    }

    /// Kills the snapshot and has its parent reap it (one thread of the
    /// parent is stopped for an injected `wait4`, ~0.1 ms).
    pub fn release(mut self) -> io::Result<()> {
        self.released = true;
        self.kill_and_reap()
    }

    fn kill_and_reap(&self) -> io::Result<()> {
        // SAFETY: kill with integer arguments; the child is ours to end.
        unsafe { libc::kill(self.child.0, libc::SIGKILL) };
        // As its tracer we collect its death first (a blocking wait is safe:
        // it has a single thread); only then can its parent reap it.
        loop {
            match ptrace::wait(self.child) {
                Ok(ptrace::Stop::Exited(_)) | Ok(ptrace::Stop::Killed(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        reap_in(self.parent, self.child_vpid)
    }
}

/// A snapshot is never left behind, whatever path drops it.
impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.kill_and_reap() {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Runs `wait4(vpid, NULL, __WALL, NULL)` inside `parent`, in its leader
/// thread stopped just for that.
fn reap_in(parent: HostPid, vpid: i32) -> io::Result<()> {
    let mut fp = match crate::freeze::freeze_threads(parent, &[parent]) {
        Ok(fp) => fp,
        // The parent exited: the snapshot went to the namespace's init,
        // which reaps it.
        Err(e) if ptrace::errno(&e) == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e),
    };
    let result = (|| {
        let maps = procfs::maps(parent)?;
        let mem = Mem::open(parent, false)?;
        let insn = syscall_insn(parent, &maps, &mem)?;
        let t = &mut fp.threads[0];
        let mask = ptrace::get_sigmask(t.tid)?;
        ptrace::set_sigmask(t.tid, u64::MAX)?;
        t.touched = true;
        let mut inj = Injector::new(t.tid, insn)?;
        // WNOHANG: the program must never block here, whatever happened.
        let flags = (libc::__WALL | libc::WNOHANG) as u64;
        let r = inj.syscall(libc::SYS_wait4, [vpid as u64, 0, flags, 0, 0, 0]);
        ptrace::set_sigmask(t.tid, mask)?;
        r.map(drop)
    })();
    fp.thaw()?;
    result.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reaping the snapshot of pid {parent}: {e}"),
        )
    })
}

/// (pts number, is master) when the fd is either side of a pty whose
/// master is held inside the computation. `/dev/tty` opened on such a pty
/// counts as its slave (it is restored as a slave fd: the process has no
/// controlling terminal yet when nsinit opens the fds).
fn internal_pty(
    pid: HostPid,
    fd: i32,
    target: &str,
    rdev: u64,
    fdctx: &FdContext,
) -> Option<(u32, bool)> {
    let (index, master) = if crate::fdshare::is_ptmx(target) {
        let info = procfs::fdinfo_text(pid, fd).ok()?;
        (crate::pty::fdinfo_index(&info)?, true)
    } else if rdev == libc::makedev(5, 0) {
        let dup = crate::sys::steal_fd(pid.0, fd).ok()?;
        (
            crate::pty::pts_index(crate::pty::device_of(dup.as_raw_fd()).ok()?)?,
            false,
        )
    } else {
        (crate::pty::pts_index(rdev)?, false)
    };
    fdctx.is_internal_pty(index).then_some((index, master))
}

/// The controlling terminal of a process (`stat` fields 7 and 8): which
/// pty, or the settings of an outside terminal read through one of the
/// process's fds on it, and the foreground group.
fn controlling_tty(pid: HostPid, fdctx: &FdContext) -> io::Result<Option<Ctty>> {
    let stat = procfs::stat_fields(pid)?;
    let tty_nr = procfs::stat_field(&stat, 7)?;
    if tty_nr == 0 {
        return Ok(None);
    }
    let tpgid = procfs::stat_field(&stat, 8)? as i64 as i32;
    let fg_vpgid = if tpgid > 0 {
        fdctx.vpgid(tpgid).unwrap_or(0)
    } else {
        0
    };
    let pty = crate::pty::pts_index(tty_nr).filter(|i| fdctx.is_internal_pty(*i));
    let termios = if pty.is_some() {
        None
    } else {
        // An fd of the process on that terminal, to read its settings.
        procfs::fds(pid)?
            .into_iter()
            .find(|fd| {
                std::fs::metadata(format!("/proc/{}/fd/{fd}", pid.0))
                    .is_ok_and(|m| m.mode() & libc::S_IFMT == libc::S_IFCHR && m.rdev() == tty_nr)
            })
            .and_then(|fd| crate::sys::steal_fd(pid.0, fd).ok())
            .and_then(|dup| crate::pty::termios(dup.as_raw_fd()).ok())
    };
    Ok(Some(Ctty {
        pty,
        fg_vpgid,
        termios,
    }))
}

fn is_tty(path: &str) -> bool {
    path.starts_with("/dev/pts/") || path.starts_with("/dev/tty") || path == "/dev/console"
}

/// `key: value` from fdinfo text.
fn fdinfo_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// `(sec, nsec)` as fdinfo prints timer values -> ns.
fn parse_timespec(v: &str) -> Option<u64> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (s, n) = v.split_once(',')?;
    Some(s.trim().parse::<u64>().ok()? * 1_000_000_000 + n.trim().parse::<u64>().ok()?)
}

/// epoll, eventfd, signalfd and timerfd from their fdinfo.
fn anon_inode_kind(kind: &str, info: &str, flags: i32) -> Option<FdKind> {
    let status = flags & (libc::O_NONBLOCK | libc::O_CLOEXEC);
    match kind {
        "[eventpoll]" => {
            let watches = info
                .lines()
                .filter(|l| l.starts_with("tfd:"))
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let at = |k: &str| w.iter().position(|x| *x == k).and_then(|i| w.get(i + 1));
                    Some((
                        at("tfd:")?.parse().ok()?,
                        u32::from_str_radix(at("events:")?, 16).ok()?,
                        u64::from_str_radix(at("data:")?, 16).ok()?,
                    ))
                })
                .collect();
            Some(FdKind::Epoll {
                flags: status,
                watches,
            })
        }
        "[eventfd]" => Some(FdKind::EventFd {
            flags: status,
            // The kernel prints the counter in hex.
            count: u64::from_str_radix(fdinfo_value(info, "eventfd-count")?, 16).ok()?,
            semaphore: fdinfo_value(info, "eventfd-semaphore") == Some("1"),
        }),
        "[signalfd]" => Some(FdKind::SignalFd {
            flags: status,
            mask: u64::from_str_radix(fdinfo_value(info, "sigmask")?, 16).ok()?,
        }),
        "[timerfd]" => {
            let interval_ns = parse_timespec(fdinfo_value(info, "it_interval")?)?;
            let mut value_ns = parse_timespec(fdinfo_value(info, "it_value")?)?;
            let ticks: u64 = fdinfo_value(info, "ticks")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            // An expired timer nobody has read yet shows no remaining time
            // (periodic ones are re-armed lazily, on read): it must fire
            // again at once after restart, not be taken for disarmed.
            if value_ns == 0 && (interval_ns > 0 || ticks > 0) {
                value_ns = 1;
            }
            Some(FdKind::TimerFd {
                flags: status,
                clock: fdinfo_value(info, "clockid")?.parse().ok()?,
                value_ns,
                interval_ns,
            })
        }
        _ => None,
    }
}

/// A POSIX message queue; its messages are saved with the first fd seen.
fn mqueue_kind(
    pid: HostPid,
    fd: i32,
    target: &str,
    flags: i32,
    fdctx: &mut FdContext,
) -> io::Result<FdKind> {
    if target.ends_with(" (deleted)") {
        tracing::warn!("pid {pid} fd {fd}: message queue {target} was unlinked; not saved");
        return Ok(FdKind::Unsupported {
            what: target.to_string(),
        });
    }
    let err = |e: io::Error| io::Error::new(e.kind(), format!("message queue fd {fd}: {e}"));
    let ino = crate::mqueue::capture(pid, fd, false).map_err(err)?.inode;
    let take = fdctx.mqueue_unclaimed(ino);
    let q = crate::mqueue::capture(pid, fd, take).map_err(err)?;
    if take {
        fdctx.claim_mqueue(ino);
    }
    Ok(FdKind::Mqueue {
        name: target.trim_start_matches('/').to_string(),
        flags: flags & (libc::O_ACCMODE | libc::O_NONBLOCK),
        mode: q.mode,
        maxmsg: q.maxmsg,
        msgsize: q.msgsize,
        messages: q.messages,
    })
}

fn capture_fds(pid: HostPid, fdctx: &mut FdContext) -> io::Result<Vec<FdEntry>> {
    let mut out = Vec::new();
    for fd in procfs::fds(pid)? {
        let target = match procfs::link(pid, &format!("fd/{fd}")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // closed meanwhile
            Err(e) => return Err(e),
        };
        let (pos, flags) = procfs::fdinfo(pid, fd)?;
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let flags = flags & !libc::O_CLOEXEC;
        let memfd = if target.starts_with("/memfd:") && target.ends_with(" (deleted)") {
            memfd_kind(pid, fd, &target, flags, pos, fdctx)?
        } else {
            None
        };
        let kind = if let Some(kind) = memfd {
            kind
        } else if target.starts_with('/') && crate::mqueue::is_mqueue(pid, fd) {
            mqueue_kind(pid, fd, &target, flags, fdctx)?
        } else if let Some(path) = target.strip_suffix(" (deleted)") {
            let contents = std::fs::read(format!("/proc/{}/fd/{fd}", pid.0)).ok();
            FdKind::File {
                path: path.to_string(),
                flags,
                offset: pos,
                deleted: true,
                contents,
            }
        } else if target.starts_with('/') {
            let meta = std::fs::metadata(format!("/proc/{}/fd/{fd}", pid.0));
            let is_chr = meta
                .as_ref()
                .map(|m| m.mode() & libc::S_IFMT == libc::S_IFCHR)
                .unwrap_or(false);
            let pty = if is_chr {
                internal_pty(
                    pid,
                    fd,
                    &target,
                    meta.as_ref().map_or(0, |m| m.rdev()),
                    fdctx,
                )
            } else {
                None
            };
            if let Some((index, master)) = pty {
                if master {
                    let state = if fdctx.claim_pty(index) {
                        let dup = crate::sys::steal_fd(pid.0, fd)?;
                        let slave_held = fdctx.holds_pty_slave(index);
                        Some(crate::pty::capture(&dup, slave_held).map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("pty master fd {fd} (pts {index}): {e}"),
                            )
                        })?)
                    } else {
                        None
                    };
                    FdKind::PtyMaster {
                        index,
                        flags,
                        state,
                    }
                } else {
                    FdKind::PtySlave {
                        index,
                        flags,
                        dev_tty: target == "/dev/tty",
                    }
                }
            } else if is_chr && is_tty(&target) && fd <= 2 {
                FdKind::Inherit {
                    from: fd,
                    what: target.clone(),
                }
            } else if is_chr {
                FdKind::Device {
                    path: target.clone(),
                    flags,
                }
            } else {
                FdKind::File {
                    path: target.clone(),
                    flags,
                    offset: pos,
                    deleted: false,
                    contents: None,
                }
            }
        } else if let Some(ino) = pipe_inode(&target).filter(|i| fdctx.is_internal_pipe(*i)) {
            let write = flags & libc::O_ACCMODE == libc::O_WRONLY;
            let buffered = if !write && fdctx.claim_buffer(ino) {
                let dup = crate::sys::steal_fd(pid.0, fd)?;
                crate::sys::peek_pipe(&dup)
                    .map_err(|e| io::Error::new(e.kind(), format!("reading pipe fd {fd}: {e}")))?
            } else {
                Vec::new()
            };
            FdKind::Pipe {
                id: ino,
                write,
                flags,
                buffered,
            }
        } else if let Some(kind) = match crate::sockets::socket_inode(&target) {
            Some(ino) => crate::netcapture::capture(pid, fd, ino, flags, fdctx)?,
            None => None,
        } {
            kind
        } else if let Some((ino, (id, end, sotype))) =
            crate::sockets::socket_inode(&target).and_then(|i| Some((i, fdctx.unix_pair(i)?)))
        {
            let queued = if fdctx.claim_socket_queue(ino) {
                let dup = crate::sys::steal_fd(pid.0, fd)?;
                crate::sockets::peek_queue(&dup, sotype).map_err(|e| {
                    io::Error::new(e.kind(), format!("reading unix socket fd {fd}: {e}"))
                })?
            } else {
                Vec::new()
            };
            FdKind::UnixPair {
                id,
                end,
                sotype,
                flags,
                queued,
            }
        } else if let Some(kind) = target
            .strip_prefix("anon_inode:")
            .and_then(|k| anon_inode_kind(k, &procfs::fdinfo_text(pid, fd).ok()?, flags))
        {
            kind
        } else if let Some((family, sotype, addr)) = target
            .starts_with("socket:")
            .then(|| crate::sys::steal_fd(pid.0, fd).ok())
            .flatten()
            .and_then(|s| crate::sockets::listener(&s).ok().flatten())
        {
            FdKind::Listener {
                family,
                sotype,
                addr,
                flags,
                backlog: 128,
            }
        } else if target.starts_with("pipe:") {
            // A pipe that leads outside the computation: at restart the
            // restarting tool's own fd of that number takes its place.
            FdKind::Inherit {
                from: fd,
                what: target.clone(),
            }
        } else {
            FdKind::Unsupported {
                what: target.clone(),
            }
        };
        let locks = match procfs::fdinfo_text(pid, fd) {
            Ok(text) => crate::locks::parse_fdinfo(&text),
            Err(_) => Vec::new(),
        };
        out.push(FdEntry {
            fd,
            cloexec,
            desc: fdctx.desc(pid, fd),
            kind,
            locks,
        });
    }
    Ok(out)
}

/// The parent's pid as the process sees it (1 for nsinit, 0 outside).
pub fn parent_vpid(status: &[(String, String)]) -> u32 {
    procfs::field(status, "PPid")
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(|p| procfs::status(HostPid(p)).ok())
        .and_then(|kv| {
            let levels = procfs::field(&kv, "NSpid")?.split_whitespace().count();
            // Only a parent inside our namespace has a second NSpid level.
            (levels > 1).then(|| procfs::innermost_pid(&kv)).flatten()
        })
        .unwrap_or(0) as u32
}

fn rlimits(pid: HostPid) -> Vec<(u32, u64, u64)> {
    let mut out = Vec::new();
    for res in 0..16u32 {
        let mut old = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 with a null new limit only writes `old`, a live local.
        let r = unsafe { libc::prlimit64(pid.0, res as _, std::ptr::null(), &mut old) };
        if r == 0 {
            out.push((res, old.rlim_cur, old.rlim_max));
        }
    }
    out
}

/// Captures a frozen process into `writer` and returns its metadata.
/// The caller finishes (or drops) the writer.
/// With `snapshot`, private memory is not read now: a copy-on-write child
/// stands in for it and [`Deferred::capture`] reads it after the thaw.
pub fn capture(
    fp: &mut FrozenProcess,
    writer: &mut ImageWriter,
    computation: ComputationInfo,
    fdctx: &mut FdContext,
    snapshot: bool,
    dirty: Option<DirtyScan<'_>>,
) -> io::Result<(ProcessImage, Option<Deferred>)> {
    let pid = fp.pid;
    let status = ctx(procfs::status(pid), pid, "status")?;
    let maps = ctx(procfs::maps(pid), pid, "maps")?;
    let mem = ctx(Mem::open(pid, false), pid, "mem")?;
    let insn = ctx(syscall_insn(pid, &maps, &mem), pid, "syscall instruction")?;
    let caught = procfs::hex_field(&status, "SigCgt") | procfs::hex_field(&status, "SigIgn");
    let t0 = std::time::Instant::now();
    // Started before we pin ourselves: it runs on another CPU.
    let map_reader = MapReader::start(pid);
    // Tracer and tracees on one CPU while we inject (PLATFORM.md: local
    // wake-ups are 4-7x cheaper). Only here: threads we start later (the
    // compression pool) must not inherit the pinning.
    let cpu = ptrace::current_cpu();
    let my_mask = ptrace::pin_to_cpu(HostPid(0), cpu).ok();
    fp.pin_leader(cpu);
    let want_uffd = dirty.as_ref().is_some_and(|d| d.tracker.needs_uffd(pid));
    let injected = inject_queries(fp, insn, &mem, caught, snapshot, want_uffd);
    if let Some(m) = my_mask {
        let _ = ptrace::set_affinity(HostPid(0), &m);
    }
    let mut injected = injected?;
    let t_inject = t0.elapsed();

    let mut threads = Vec::with_capacity(fp.threads.len());
    for ((t, q), sigmask) in fp
        .threads
        .iter()
        .zip(&injected.per_thread)
        .zip(&injected.sigmasks)
    {
        let tid = t.tid;
        let xstate = ctx(ptrace::get_xstate(tid), pid, "xstate")?;
        let rseq = ctx(ptrace::get_rseq(tid), pid, "rseq")?;
        let mut pending = ctx(ptrace::pending_signals(tid, false), pid, "pending signals")?;
        if let Some((_, info)) = t.pending_signal {
            pending.push(info.to_vec());
        }
        threads.push(ThreadState {
            vtid: t.vtid as u32,
            name: q.name.clone(),
            regs: ptrace::regs_to_words(&t.regs),
            xstate,
            sigmask: *sigmask,
            pending,
            clear_child_tid: q.clear_child_tid,
            robust_list: q.robust,
            rseq: (rseq.rseq_abi_pointer != 0).then_some(Rseq {
                addr: rseq.rseq_abi_pointer,
                len: rseq.rseq_abi_size,
                flags: rseq.flags,
                signature: rseq.signature,
            }),
            sigaltstack: q.altstack,
        });
    }

    let t_threads = t0.elapsed();
    let map = match map_reader {
        Ok(r) => r.finish(injected.scratch),
        // No thread for it: read it now (the scratch mapping is gone).
        Err(_) => procfs::maps(pid).map(|m| (m, procfs::vm_flags(pid).unwrap_or_default())),
    };
    let map = ctx(map, pid, "memory map")?;
    let (vmas, deferred, parent) = ctx(
        capture_memory(
            pid,
            map,
            &mem,
            writer,
            injected.snapshot,
            dirty,
            injected.uffd.take(),
            fdctx,
        ),
        pid,
        "memory",
    )?;
    let t_memory = t0.elapsed();
    let fds = ctx(capture_fds(pid, fdctx), pid, "file descriptors")?;
    let ctty = ctx(controlling_tty(pid, fdctx), pid, "controlling terminal")?;
    tracing::debug!(
        "pid {pid}: injected queries {t_inject:?}, threads {:?}, memory {:?}, fds {:?}",
        t_threads - t_inject,
        t_memory - t_threads,
        t0.elapsed() - t_memory
    );

    let ns = |key: &str| -> u32 {
        procfs::field(&status, key)
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let first_id = |key: &str| -> u32 {
        procfs::field(&status, key)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let process = ProcessInfo {
        vpid: fp.vpid as u32,
        vppid: parent_vpid(&status),
        vpgid: ns("NSpgid"),
        vsid: ns("NSsid"),
        host_pid: pid.0 as u32,
        comm: procfs::comm(pid, None).unwrap_or_default(),
        exe: ctx(procfs::link(pid, "exe"), pid, "exe")?,
        cmdline: procfs::cmdline(pid).unwrap_or_default(),
        cwd: ctx(procfs::link(pid, "cwd"), pid, "cwd")?,
        umask: procfs::field(&status, "Umask")
            .and_then(|v| u32::from_str_radix(v, 8).ok())
            .unwrap_or(0o022),
        rlimits: rlimits(pid),
        personality: procfs::personality(pid).unwrap_or(0),
        caps: Capabilities {
            inheritable: procfs::hex_field(&status, "CapInh"),
            permitted: procfs::hex_field(&status, "CapPrm"),
            effective: procfs::hex_field(&status, "CapEff"),
            bounding: procfs::hex_field(&status, "CapBnd"),
            ambient: procfs::hex_field(&status, "CapAmb"),
        },
        uid: first_id("Uid"),
        gid: first_id("Gid"),
        creds: credentials(&status),
        no_new_privs: procfs::field(&status, "NoNewPrivs") == Some("1"),
        dumpable: injected.dumpable,
        mm: ctx(mm_fields(pid, injected.brk), pid, "mm fields")?,
        auxv: ctx(procfs::auxv(pid), pid, "auxv")?,
        sigactions: injected.sigactions,
        shared_pending: ctx(
            ptrace::pending_signals(fp.threads[0].tid, true),
            pid,
            "pending signals",
        )?,
        itimers: injected.itimers,
        child_subreaper: injected.child_subreaper,
        posix_timers: injected.posix_timers,
        zombie: None,
        ctty,
    };
    Ok((
        ProcessImage {
            computation,
            process,
            threads,
            fds,
            vmas,
            parent,
            ipc: None,
        },
        deferred,
    ))
}

/// uids, gids and groups from `/proc/PID/status` (securebits are not
/// there: left unknown).
fn credentials(status: &[(String, String)]) -> dmtcp_image::Credentials {
    let ids = |key: &str| -> [u32; 4] {
        let mut out = [0u32; 4];
        if let Some(v) = procfs::field(status, key) {
            for (o, x) in out.iter_mut().zip(v.split_whitespace()) {
                *o = x.parse().unwrap_or(0);
            }
        }
        out
    };
    dmtcp_image::Credentials {
        uids: ids("Uid"),
        gids: ids("Gid"),
        groups: procfs::field(status, "Groups")
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        securebits: None,
    }
}
