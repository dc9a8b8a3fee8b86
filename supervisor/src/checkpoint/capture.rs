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
use std::time::Duration;

use std::os::fd::OwnedFd;

use dmtcp_image::{
    Capabilities, ComputationInfo, Ctty, FdEntry, ImageWriter, MmFields, PosixTimer, ProcessImage,
    ProcessInfo, SigAction, PAGE_SIZE,
};

use crate::kernel::freeze::FrozenProcess;
use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs::{self, MapEntry, Mem, Pagemap};
use crate::kernel::ptrace;
use crate::kernel::remote::{
    install_stubs, library_stubs, syscall_insn, write_rescue_blocks, Injector, Rescue,
};
use crate::resources::capture_ctx as ctx;
use crate::resources::fds;
use crate::resources::fdshare::FdContext;
use crate::resources::memory::capture::{
    capture_memory, flags_from_snapshot, MapReader, MemoryPlan, VmFlags,
};
pub use crate::resources::memory::capture::{Deferred, DirtyScan};
use crate::resources::memory::precopy::max_residue;
pub use crate::resources::memory::precopy::AtFreeze;
use crate::resources::signals::parse_timers;
use crate::resources::threads::{
    capture_threads, mark_signal, per_thread_queries, ProcessQuery, QueryRescue, ThreadQuery,
    PROCESS_QUERY_LEN, QUERY_SLOT, SCRATCH_SLOTS, STUBS_OFF,
};
use crate::resources::OpenFd;

/// Where injected calls can run from: a `syscall` in the vdso, and the
/// rescue stubs of the process's own inject library if it has them.
#[derive(Clone, Copy)]
struct CallSites {
    insn: RemoteAddr,
    lib_stubs: Option<(RemoteAddr, RemoteAddr)>,
}

/// State only syscalls inside the target can tell.
struct InjectedState {
    /// Where our scratch mapping was (gone by now).
    scratch: (u64, u64),
    process: ProcessWide,
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

fn read_u64s(mem: &Mem, addr: u64, n: usize) -> io::Result<Vec<u64>> {
    let mut b = vec![0u8; n * 8];
    mem.read(RemoteAddr(addr), &mut b)?;
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8")))
        .collect())
}

/// Process-wide state only the process itself can tell.
struct ProcessWide {
    brk: u64,
    dumpable: u32,
    /// `PR_GET_SECUREBITS` of the leader.
    securebits: u32,
    child_subreaper: bool,
    sigactions: Vec<SigAction>,
    itimers: [(u64, u64); 3],
}

/// `r` of the call `what`, or the error it returned.
fn kernel_ok(what: &str, r: i64) -> io::Result<u64> {
    if (-4095..0).contains(&r) {
        let e = io::Error::from_raw_os_error((-r) as i32);
        return Err(io::Error::new(
            e.kind(),
            format!("{what} in the leader: {e}"),
        ));
    }
    Ok(r as u64)
}

/// The kernel's `struct sigaction` words: handler, flags, restorer, mask.
fn sigaction_of(w: &[u64]) -> SigAction {
    SigAction {
        handler: w[0],
        flags: w[1],
        restorer: w[2],
        mask: w[3],
    }
}

/// `struct itimerval` words as (interval, value) in microseconds.
fn itimer_us(w: &[u64]) -> (u64, u64) {
    (w[0] * 1_000_000 + w[1], w[2] * 1_000_000 + w[3])
}

impl ProcessWide {
    /// From the leader's run of the process query code; the actions of
    /// signals in `caught_or_ignored` only (the others stay default).
    fn from_query(q: &ProcessQuery, caught_or_ignored: u64) -> io::Result<ProcessWide> {
        kernel_ok("prctl(PR_GET_CHILD_SUBREAPER)", q.subreaper.0)?;
        let mut sigactions = vec![SigAction::default(); 64];
        for (i, (a, w)) in sigactions.iter_mut().zip(&q.sigactions).enumerate() {
            if caught_or_ignored & (1 << i) != 0 {
                *a = sigaction_of(w);
            }
        }
        Ok(ProcessWide {
            brk: kernel_ok("brk", q.brk)?,
            dumpable: kernel_ok("prctl(PR_GET_DUMPABLE)", q.dumpable)? as u32,
            securebits: kernel_ok("prctl(PR_GET_SECUREBITS)", q.securebits)? as u32,
            child_subreaper: q.subreaper.1 != 0,
            sigactions,
            itimers: q.itimers.map(|w| itimer_us(&w)),
        })
    }

    /// The same by one injected call each (two ptrace stops apiece), each
    /// checked against the leader's own filters.
    fn injected(
        inj: &mut Injector,
        mem: &Mem,
        scratch: u64,
        caught_or_ignored: u64,
    ) -> io::Result<ProcessWide> {
        let brk = inj.syscall(libc::SYS_brk, [0; 6])?;
        let dumpable = inj.syscall(
            libc::SYS_prctl,
            [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
        )? as u32;
        let securebits = inj.syscall(
            libc::SYS_prctl,
            [libc::PR_GET_SECUREBITS as u64, 0, 0, 0, 0, 0],
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
            sigactions[(sig - 1) as usize] = sigaction_of(&read_u64s(mem, scratch, 4)?);
        }
        let mut itimers = [(0, 0); 3];
        for (which, slot) in itimers.iter_mut().enumerate() {
            inj.syscall(libc::SYS_getitimer, [which as u64, scratch, 0, 0, 0, 0])?;
            *slot = itimer_us(&read_u64s(mem, scratch, 4)?);
        }
        Ok(ProcessWide {
            brk,
            dumpable,
            securebits,
            child_subreaper,
            sigactions,
            itimers,
        })
    }
}

fn inject_queries(
    fp: &mut FrozenProcess,
    sites: CallSites,
    mem: &Mem,
    caught_or_ignored: u64,
    want_snapshot: bool,
    want_uffd: bool,
) -> io::Result<InjectedState> {
    // Signals arriving while we run syscalls in a thread must pend, not be
    // delivered to (or swallowed by) our injected code: block them all in
    // every thread for the duration and put the masks back afterwards.
    let masks: Vec<u64> = fp
        .threads
        .iter()
        .map(|t| ptrace::get_sigmask(t.tid))
        .collect::<io::Result<_>>()?;
    // The leader now; the others only while they run the per-thread
    // queries (so that a supervisor dying meanwhile leaves them their own).
    ptrace::set_sigmask(fp.threads[0].tid, u64::MAX)?;
    let result = inject_queries_blocked(
        fp,
        sites,
        mem,
        caught_or_ignored,
        &masks,
        want_snapshot,
        want_uffd,
    );
    // The other threads' masks went back with their registers after the
    // per-thread queries; all of them if the queries failed.
    let restore = if result.is_ok() { 1 } else { masks.len() };
    for (t, m) in fp.threads.iter().zip(&masks).take(restore) {
        ptrace::set_sigmask(t.tid, *m)?;
    }
    let mut state = result?;
    state.sigmasks = masks;
    Ok(state)
}

fn inject_queries_blocked(
    fp: &mut FrozenProcess,
    sites: CallSites,
    mem: &Mem,
    caught_or_ignored: u64,
    masks: &[u64],
    want_snapshot: bool,
    want_uffd: bool,
) -> io::Result<InjectedState> {
    let pid = fp.pid;
    let leader = fp.threads[0].tid;
    let CallSites { insn, lib_stubs } = sites;
    let mut inj = Injector::new(leader, insn)?;
    // From here on, a supervisor that dies leaves no thread in our code:
    // every thread gets a rescue block, and calls run from the library's
    // stubs (or, without the library, from stubs in the scratch mapping
    // once it exists).
    let blocks = rescue_blocks(fp, masks);
    let rescue_at = |(stub, clone_stub): (RemoteAddr, RemoteAddr)| {
        blocks.as_ref().map(|b| Rescue {
            stub,
            clone_stub,
            block: b[0],
        })
    };
    let from_library = lib_stubs.and_then(rescue_at);
    inj.set_rescue(from_library);
    inj.seccomp = fp.threads[0].seccomp.clone();
    // Scratch: the query code at 0, per-thread results from SCRATCH_SLOTS,
    // then the process block.
    let slots_end = SCRATCH_SLOTS + fp.threads.len() as u64 * QUERY_SLOT;
    let scratch_len = (slots_end + PROCESS_QUERY_LEN).next_multiple_of(PAGE_SIZE);
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
    if from_library.is_none() && blocks.is_some() {
        let stubs = Mem::open(pid, true).and_then(|w| install_stubs(&w, scratch + STUBS_OFF));
        match stubs {
            Ok(s) => inj.set_rescue(rescue_at(s)),
            Err(e) => tracing::debug!("pid {pid}: no rescue stubs: {e}"),
        }
    }
    let mark = mark_signal(caught_or_ignored)
        .filter(|_| crate::resources::seccomp::rescue_calls_allowed(fp));
    let query_rescue = match (&blocks, mark) {
        (Some(b), Some(mark)) => Some(QueryRescue {
            mark,
            blocks: b.clone(),
        }),
        _ => {
            tracing::debug!("pid {pid}: per-thread queries without a rescue");
            None
        }
    };
    // The process-wide queries run in the leader's stop of the per-thread
    // queries, unless its own filters would not let one of them through.
    let process_block =
        crate::resources::seccomp::leader_query_allowed(fp, scratch).then_some(scratch + slots_end);
    let result = (|| {
        let tq = std::time::Instant::now();
        let rescue = query_rescue.as_ref();
        let (process, per_thread) = match process_block {
            Some(block) => {
                let per_thread = per_thread_queries(fp, mem, scratch, masks, rescue, Some(block))?;
                let q = ProcessQuery::read(mem, block)?;
                (ProcessWide::from_query(&q, caught_or_ignored)?, per_thread)
            }
            None => {
                tracing::debug!("pid {pid}: process queries injected one by one (seccomp)");
                let process = ProcessWide::injected(&mut inj, mem, scratch, caught_or_ignored)?;
                // After them: the query code goes where their results did.
                let per_thread = per_thread_queries(fp, mem, scratch, masks, rescue, None)?;
                (process, per_thread)
            }
        };
        // Without a rescue the queries end in `int3`, a forced SIGTRAP: with every signal
        // blocked the kernel resets its disposition to SIG_DFL. Put the
        // program's own back (a JIT or in-process debugger keeps its handler).
        let trap = &process.sigactions[(libc::SIGTRAP - 1) as usize];
        if query_rescue.is_none() && caught_or_ignored & (1 << (libc::SIGTRAP - 1)) != 0 {
            let bytes: Vec<u8> = [trap.handler, trap.flags, trap.restorer, trap.mask]
                .iter()
                .flat_map(|w| w.to_ne_bytes())
                .collect();
            Mem::open(pid, true)?.write(RemoteAddr(scratch), &bytes)?;
            inj.syscall(
                libc::SYS_rt_sigaction,
                [libc::SIGTRAP as u64, scratch, 0, 8, 0, 0],
            )?;
        }
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
            process,
            per_thread,
            posix_timers,
            snapshot: None,
            uffd: None,
            sigmasks: Vec::new(),
        })
    })();
    let mut state = match ctx(result, pid, "querying state inside the process") {
        Ok(state) => state,
        Err(e) => {
            inj.set_rescue(from_library);
            let _ = inj.syscall(libc::SYS_munmap, [scratch, scratch_len, 0, 0, 0, 0]);
            return Err(e);
        }
    };
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
        match snap {
            Ok(s) => {
                // Which snapshot ran (the benchmark reads this line): the
                // forked child. A userfaultfd write-protect snapshot was
                // measured and not taken (docs/performance.md, issue 20).
                tracing::info!(
                    "pid {pid}: snapshot fork (copy-on-write child) made in {:?}",
                    ts.elapsed()
                );
                state.snapshot = Some(s)
            }
            Err(e) => tracing::warn!(
                "pid {pid}: no copy-on-write snapshot ({e}); memory is read while frozen"
            ),
        }
    }
    // Last: stubs in the scratch mapping go with it, so without the
    // library this call runs from the vdso's `syscall`, without a rescue.
    inj.set_rescue(from_library);
    let unmap = inj.syscall(libc::SYS_munmap, [scratch, scratch_len, 0, 0, 0, 0]);
    if let Err(e) = ctx(unmap, pid, "unmapping the scratch page") {
        if let Some((snap, _)) = state.snapshot.take() {
            let _ = ptrace::kill(snap, libc::SIGKILL);
        }
        return Err(e);
    }
    Ok(state)
}

/// A rescue block on every thread's stack ([`crate::kernel::remote`]), so
/// that no thread is left running our code if the supervisor dies; `None`
/// (and a log line) when one cannot be written (a stack at its very
/// limit): the checkpoint goes on without the rescue.
fn rescue_blocks(fp: &FrozenProcess, masks: &[u64]) -> Option<Vec<u64>> {
    let pid = fp.pid;
    let threads: Vec<_> = fp
        .threads
        .iter()
        .zip(masks)
        .map(|(t, m)| (t.regs, *m))
        .collect();
    let made = write_rescue_blocks(pid, &threads);
    made.map_err(|e| tracing::debug!("pid {pid}: no rescue if the supervisor dies: {e}"))
        .ok()
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
    let flags = crate::resources::memory::dirty::UFFD_USER_MODE_ONLY
        | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = inj.syscall(libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
    let ours = crate::kernel::sys::steal_fd(pid.0, fd as i32);
    inj.syscall(libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    ours
}

/// A userfaultfd for running `pid` (pre-copy): its leader thread alone is
/// stopped for the injected `userfaultfd()` and `close()`, as in
/// [`crate::resources::memory::capture::reap_in`].
pub fn make_uffd_running(pid: HostPid) -> io::Result<OwnedFd> {
    let mut fp = crate::kernel::freeze::freeze_threads(pid, &[pid])?;
    let result = crate::kernel::remote::in_stopped_leader(&mut fp, pid, |inj| make_uffd(inj, pid));
    fp.thaw()?;
    result
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
    let pty = crate::resources::pty::pts_index(tty_nr).filter(|i| fdctx.is_internal_pty(*i));
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
            .and_then(|fd| crate::kernel::sys::steal_fd(pid.0, fd).ok())
            .and_then(|dup| crate::resources::pty::termios(dup.as_raw_fd()).ok())
    };
    Ok(Some(Ctty {
        pty,
        fg_vpgid,
        termios,
    }))
}

fn capture_fds(pid: HostPid, fdctx: &mut FdContext) -> io::Result<Vec<FdEntry>> {
    let mut out = Vec::new();
    for fd in procfs::fds(pid)? {
        let target = match procfs::link(pid, &format!("fd/{fd}")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // closed meanwhile
            Err(e) => return Err(e),
        };
        let info = procfs::fdinfo_text(pid, fd)?;
        let (pos, flags) = procfs::fdinfo_pos_flags(&info);
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let flags = flags & !libc::O_CLOEXEC;
        let open = OpenFd {
            pid,
            fd,
            target: &target,
            flags,
            pos,
            info: &info,
        };
        let kind = fds::capture_kind(&open, fdctx)?;
        let locks = crate::resources::locks::parse_fdinfo(&info);
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

/// Runs the injected queries with the tracer pinned next to the process
/// (local wake-ups measured 4-7x cheaper than cross-CPU ones), then gives
/// the tracer its affinity back: threads started later (the compression
/// pool) must not inherit the pinning.
fn inject_pinned(
    fp: &mut FrozenProcess,
    sites: CallSites,
    mem: &Mem,
    caught: u64,
    snapshot: bool,
    want_uffd: bool,
) -> io::Result<InjectedState> {
    let cpu = ptrace::current_cpu();
    let my_mask = ptrace::pin_to_cpu(HostPid(0), cpu).ok();
    fp.pin_leader(cpu);
    let injected = inject_queries(fp, sites, mem, caught, snapshot, want_uffd);
    if let Some(m) = my_mask {
        let _ = ptrace::set_affinity(HostPid(0), &m);
    }
    injected
}

/// The process-wide fields of the image, from `/proc/PID/status` and
/// friends and from what the injected queries found.
/// uids, gids and groups from `/proc/PID/status`; securebits from the
/// injected `PR_GET_SECUREBITS` (they are not in `/proc`).
fn credentials(status: &[(String, String)], securebits: u32) -> dmtcp_image::Credentials {
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
        securebits: Some(securebits),
    }
}

fn process_info(
    pid: HostPid,
    vpid: crate::kernel::pid::VirtPid,
    status: &[(String, String)],
    injected: InjectedState,
    ctty: Option<Ctty>,
    shared_pending: Vec<Vec<u8>>,
) -> io::Result<ProcessInfo> {
    let ns = |key: &str| -> u32 {
        procfs::field(status, key)
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let first_id = |key: &str| -> u32 {
        procfs::field(status, key)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcessInfo {
        vpid: vpid.to_image(),
        vppid: crate::resources::tree::parent_vpid(status),
        vpgid: ns("NSpgid"),
        vsid: ns("NSsid"),
        host_pid: pid.0 as u32,
        comm: procfs::comm(pid, None).unwrap_or_default(),
        exe: ctx(procfs::link(pid, "exe"), pid, "exe")?,
        cmdline: procfs::cmdline(pid).unwrap_or_default(),
        cwd: ctx(procfs::link(pid, "cwd"), pid, "cwd")?,
        umask: procfs::field(status, "Umask")
            .and_then(|v| u32::from_str_radix(v, 8).ok())
            .unwrap_or(0o022),
        rlimits: rlimits(pid),
        personality: procfs::personality(pid).unwrap_or(0),
        caps: Capabilities {
            inheritable: procfs::hex_field(status, "CapInh"),
            permitted: procfs::hex_field(status, "CapPrm"),
            effective: procfs::hex_field(status, "CapEff"),
            bounding: procfs::hex_field(status, "CapBnd"),
            ambient: procfs::hex_field(status, "CapAmb"),
        },
        uid: first_id("Uid"),
        gid: first_id("Gid"),
        creds: credentials(status, injected.process.securebits),
        no_new_privs: procfs::field(status, "NoNewPrivs") == Some("1"),
        dumpable: injected.process.dumpable,
        mm: ctx(mm_fields(pid, injected.process.brk), pid, "mm fields")?,
        auxv: ctx(procfs::auxv(pid), pid, "auxv")?,
        sigactions: injected.process.sigactions,
        shared_pending,
        itimers: injected.process.itimers,
        child_subreaper: injected.process.child_subreaper,
        posix_timers: injected.posix_timers,
        zombie: None,
        ctty,
    })
}

/// The memory map at the freeze (less our scratch mapping) and its VM
/// flags: read while the queries ran, or (with a snapshot child) mostly
/// from the child after the thaw (`true`: pending), or from the
/// pre-copy, or from smaps now.
fn map_and_flags(
    pid: HostPid,
    map_reader: io::Result<MapReader>,
    scratch: (u64, u64),
    precopy: Option<&AtFreeze>,
    snapshot_child: Option<HostPid>,
) -> io::Result<(Vec<MapEntry>, VmFlags, bool)> {
    let (maps, flags) = match map_reader {
        Ok(r) => r.finish(scratch)?,
        // No thread for it: read it now (the scratch mapping is gone).
        Err(_) => (procfs::maps(pid)?, None),
    };
    let from_precopy =
        precopy
            .filter(|_| snapshot_child.is_none())
            .map(|a| match a.flags_for(&maps) {
                Some(f) => f,
                None => {
                    tracing::debug!(
                        "pid {pid}: mappings new since the pre-copy: VM flags read while frozen"
                    );
                    procfs::vm_flags(pid).unwrap_or_default()
                }
            });
    let (flags, pending) = match (flags.or(from_precopy), snapshot_child) {
        (Some(f), _) => (f, false),
        (None, Some(child)) => match flags_from_snapshot(pid, &maps, child) {
            Some(f) => (f, true),
            None => (procfs::vm_flags(pid).unwrap_or_default(), false),
        },
        (None, None) => (procfs::vm_flags(pid).unwrap_or_default(), false),
    };
    Ok((maps, flags, pending))
}

/// What the tracer thread takes of a frozen process: everything that needs
/// a ptrace request or runs inside the process (the injected queries, the
/// snapshot fork, each thread's registers, the seccomp filters, the pending
/// signals), and the memory map. The rest ([`capture_rest`]) reads from
/// outside and may run on another thread, beside the tracer's work on the
/// next process.
pub struct Traced {
    pid: HostPid,
    vpid: crate::kernel::pid::VirtPid,
    t_frozen: std::time::Instant,
    status: Vec<(String, String)>,
    mem: Mem,
    security: dmtcp_image::Security,
    injected: InjectedState,
    threads: Vec<dmtcp_image::ThreadState>,
    maps: (Vec<MapEntry>, VmFlags),
    flags_pending: bool,
    precopy: Option<AtFreeze>,
    residue: Option<u64>,
    shared_pending: Vec<Vec<u8>>,
    /// Injected queries, threads, map and flags (beside the threads).
    times: [Duration; 3],
}

impl Traced {
    pub fn pid(&self) -> HostPid {
        self.pid
    }

    pub fn vpid(&self) -> crate::kernel::pid::VirtPid {
        self.vpid
    }

    /// For a process whose capture is not finished: its snapshot child,
    /// if one was made, to be released (killed, and reaped by the process)
    /// once the process runs again.
    pub fn into_snapshot(self) -> Option<Deferred> {
        self.injected
            .snapshot
            .map(|child| Deferred::snapshot_only(self.pid, child))
    }
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
    precopy: Option<AtFreeze>,
) -> io::Result<(ProcessImage, Option<Deferred>)> {
    let want_uffd = dirty.as_ref().is_some_and(|d| d.tracker.needs_uffd(fp.pid));
    let traced = capture_traced(fp, snapshot, want_uffd, precopy)?;
    capture_rest(traced, writer, computation, fdctx, dirty)
}

/// The tracer's part of [`capture`]: must run on the thread that froze
/// `fp`. `want_uffd`: make a userfaultfd for dirty-page tracking.
pub fn capture_traced(
    fp: &mut FrozenProcess,
    snapshot: bool,
    want_uffd: bool,
    precopy: Option<AtFreeze>,
) -> io::Result<Traced> {
    let pid = fp.pid;
    let t_frozen = std::time::Instant::now();
    let status = ctx(procfs::status(pid), pid, "status")?;
    let maps = ctx(procfs::maps(pid), pid, "maps")?;
    let mem = ctx(Mem::open(pid, false), pid, "mem")?;
    let insn = ctx(syscall_insn(pid, &maps, &mem), pid, "syscall instruction")?;
    let sites = CallSites {
        insn,
        lib_stubs: library_stubs(&maps, &mem),
    };
    // First: it arms the check of our injected calls against the program's
    // own seccomp filters.
    let security = ctx(
        crate::resources::seccomp::capture(fp, &maps, &mem),
        pid,
        "seccomp",
    )?;
    ctx(
        crate::resources::seccomp::check_query_code(fp),
        pid,
        "seccomp",
    )?;
    let caught = procfs::hex_field(&status, "SigCgt") | procfs::hex_field(&status, "SigIgn");
    // Pre-copy: a small residue is copied now, without a snapshot fork.
    let residue = precopy.as_ref().map(|a| {
        Pagemap::open(pid)
            .map(|pm| a.residue(&maps, &pm))
            .unwrap_or(u64::MAX)
    });
    let snapshot = snapshot && residue.is_none_or(|r| r > max_residue());
    let t0 = std::time::Instant::now();
    // Started before we pin ourselves: it runs on another CPU.
    // With a snapshot, only the map: smaps would hold the lock the fork
    // needs while it walks every page table.
    let map_reader = MapReader::start(pid, !snapshot && precopy.is_none());
    let injected = inject_pinned(fp, sites, &mem, caught, snapshot, want_uffd)?;
    let t_inject = t0.elapsed();

    // The memory map and its VM flags need no ptrace request: they are
    // read on another thread while this one (the tracer) reads each
    // thread's state (512 threads: 2.4 ms for each side).
    let snapshot_child = injected.snapshot.map(|(c, _)| c);
    let scratch = injected.scratch;
    let (threads, map) = std::thread::scope(|s| {
        let precopy = precopy.as_ref();
        let map = s.spawn(move || {
            let t = std::time::Instant::now();
            let m = map_and_flags(pid, map_reader, scratch, precopy, snapshot_child);
            (m, t.elapsed())
        });
        let threads = capture_threads(fp, &injected.per_thread, &injected.sigmasks);
        let map = map.join().unwrap_or_else(|_| {
            (
                Err(io::Error::other("the memory map reader panicked")),
                Duration::ZERO,
            )
        });
        (threads, map)
    });
    let threads = threads?;
    let t_threads = t0.elapsed() - t_inject;
    let (map, t_map) = map;
    let (maps, flags, flags_pending) = ctx(map, pid, "memory map")?;
    let mut shared_pending = ctx(
        ptrace::pending_signals(fp.threads[0].tid, true),
        pid,
        "pending signals",
    )?;
    crate::resources::signals::convert_senders(
        &mut shared_pending,
        crate::kernel::pid::virt::of_real,
    );
    Ok(Traced {
        pid,
        vpid: fp.vpid,
        t_frozen,
        status,
        mem,
        security,
        injected,
        threads,
        maps: (maps, flags),
        flags_pending,
        precopy,
        residue,
        shared_pending,
        times: [t_inject, t_threads, t_map],
    })
}

/// The rest of [`capture`]: memory, file descriptors and the process's
/// fields, all read from outside (any thread; the process stays frozen).
pub fn capture_rest(
    t: Traced,
    writer: &mut ImageWriter,
    computation: ComputationInfo,
    fdctx: &mut FdContext,
    dirty: Option<DirtyScan<'_>>,
) -> io::Result<(ProcessImage, Option<Deferred>)> {
    let Traced {
        pid,
        vpid,
        t_frozen,
        status,
        mem,
        security,
        mut injected,
        threads,
        maps,
        flags_pending,
        precopy,
        residue,
        shared_pending,
        times: [t_inject, t_threads, t_map],
    } = t;
    let t0 = std::time::Instant::now();
    let (vmas, deferred, parent) = ctx(
        capture_memory(
            pid,
            maps,
            &mem,
            writer,
            match (injected.snapshot, precopy.as_ref()) {
                (Some((c, v)), Some(a)) => MemoryPlan::SnapshotAfterCopy(c, v, a),
                (Some((c, v)), None) => MemoryPlan::Snapshot(c, v),
                (None, Some(a)) => MemoryPlan::Copy(a),
                (None, None) => MemoryPlan::Now,
            },
            flags_pending,
            dirty,
            injected.uffd.take(),
            fdctx,
        ),
        pid,
        "memory",
    )?;
    let t_memory = t0.elapsed();
    let fds = ctx(capture_fds(pid, fdctx), pid, "file descriptors")?;
    let passcred_fds = crate::resources::unix::passcred_fds(pid, &fds);
    let ctty = ctx(controlling_tty(pid, fdctx), pid, "controlling terminal")?;
    tracing::debug!(
        "pid {pid}: injected queries {t_inject:?}, threads {t_threads:?}, memory {t_memory:?}, fds {:?} (map and flags beside the threads: {t_map:?})",
        t0.elapsed() - t_memory
    );

    if let Some(r) = residue {
        // Which snapshot ran (the benchmark reads this line).
        match (&deferred, injected.snapshot.is_some()) {
            (Some(d), false) => tracing::info!(
                "pid {pid}: pre-copy: {} KiB copied while frozen, no snapshot fork; memory captured in {:?} since the capture began",
                d.copied_bytes() >> 10,
                t_frozen.elapsed()
            ),
            _ => tracing::info!(
                "pid {pid}: pre-copy: residue of up to {} KiB above {} KiB: the snapshot fork reads it",
                r >> 10,
                max_residue() >> 10
            ),
        }
    }
    let process = process_info(pid, vpid, &status, injected, ctty, shared_pending)?;
    Ok((
        ProcessImage {
            computation,
            process,
            threads,
            fds,
            vmas,
            parent,
            ipc: None,
            clocks: match crate::kernel::nsview::clocks_of(pid) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("pid {pid}: {e}; its clocks will jump at restart");
                    None
                }
            },
            security,
            passcred_fds,
        },
        deferred,
    ))
}
