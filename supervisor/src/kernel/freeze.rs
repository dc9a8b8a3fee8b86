//! Freezing a process the way a debugger does, and thawing it.
//!
//! Every thread is `PTRACE_SEIZE`d and `PTRACE_INTERRUPT`ed. Unlike a signal
//! handler quiesce (DMTCP's way), a ptrace stop is invisible to the program:
//! the kernel restarts interrupted sleeps and polls itself, and the few calls
//! that return EINTR after any stop (epoll_wait, ...) are re-issued by
//! [`ptrace::fix_interrupted_syscall`] before the thread runs again. ptrace is
//! held only while frozen, so gdb can attach at any other time.

use std::collections::BTreeMap;
use std::io;

use crate::kernel::pid::{HostPid, VirtPid};
use crate::kernel::procfs;
use crate::kernel::ptrace::{self, Regs, Stop, SysError};

/// One stopped thread.
pub struct FrozenThread {
    pub tid: HostPid,
    /// Tid inside the computation's pid namespace; 0 until a capture asks
    /// the thread itself (reading every thread's /proc status here would
    /// cost more than the whole freeze).
    pub vtid: i32,
    /// Registers exactly as the stop found them.
    pub regs: Regs,
    /// A signal that was about to be delivered when we stopped the thread
    /// (signal-delivery stop), with its siginfo.
    pub pending_signal: Option<(i32, [u8; 128])>,
    /// We ran syscalls in this thread: its registers must be written back.
    pub touched: bool,
    /// The registers the thaw gives it ([`thaw_regs`]) are in the thread
    /// already (written back after our per-thread code ran in it): the thaw
    /// does not write them again.
    pub regs_written: bool,
    /// CPU affinity before we pinned the thread next to the tracer.
    pub affinity: Option<libc::cpu_set_t>,
    /// The thread's own seccomp filters when they apply to what we inject
    /// (set by the capture; `None`: no filter or suspended).
    pub seccomp: Option<std::sync::Arc<crate::kernel::seccomp::Chain>>,
}

/// A process with every thread in a ptrace stop.
pub struct FrozenProcess {
    pub pid: HostPid,
    /// Its pid inside the computation's namespace.
    pub vpid: VirtPid,
    pub threads: Vec<FrozenThread>,
}

fn tracer_of(pid: HostPid) -> String {
    procfs::status(pid)
        .ok()
        .and_then(|kv| procfs::field(&kv, "TracerPid").map(str::to_string))
        .map(|t| {
            let name = t
                .parse()
                .ok()
                .and_then(|p| procfs::comm(HostPid(p), None).ok())
                .unwrap_or_default();
            format!("pid {t} ({name})")
        })
        .unwrap_or_else(|| "another tracer".into())
}

/// Whether a thread of ours traces `pid` (its `TracerPid` is the tracing
/// thread's id).
pub fn is_traced_by_us(pid: HostPid) -> bool {
    procfs::status(pid)
        .ok()
        .and_then(|kv| procfs::field(&kv, "TracerPid").and_then(|t| t.parse::<i32>().ok()))
        .is_some_and(|t| t != 0 && std::path::Path::new(&format!("/proc/self/task/{t}")).exists())
}

/// Whether thread `tid` of `pid` is exiting or gone: its state is `Z` or
/// `X` (an exit state), or it is no longer listed.
fn exiting(pid: HostPid, tid: HostPid) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/task/{}/stat", pid.0, tid.0)) {
        Ok(s) => s
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|c| c == 'Z' || c == 'X'),
        Err(_) => true,
    }
}

/// Stops every thread of `pid`. On error nothing stays stopped.
pub fn freeze(pid: HostPid) -> io::Result<FrozenProcess> {
    freeze_threads(pid, &[])
}

/// Stops the given threads of `pid` only (all of them if `only` is empty).
pub fn freeze_threads(pid: HostPid, only: &[HostPid]) -> io::Result<FrozenProcess> {
    let mut seized: BTreeMap<HostPid, Option<FrozenThread>> = BTreeMap::new();
    let result = freeze_into(pid, &mut seized, only);
    match result {
        Ok(()) if seized.values().all(Option::is_none) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            SysError {
                errno: libc::ESRCH,
                what: format!("pid {pid} exited before it could be stopped"),
            },
        )),
        Ok(()) => {
            let vpid = procfs::status(pid)
                .ok()
                .and_then(|kv| procfs::innermost_pid(&kv))
                .unwrap_or(VirtPid(pid.0));
            // Without namespaces: the pid the program sees.
            let vpid = VirtPid(crate::kernel::pid::virt::of_real(vpid.0));
            Ok(FrozenProcess {
                pid,
                vpid,
                threads: seized.into_values().flatten().collect(),
            })
        }
        Err(e) => {
            let dead: Vec<HostPid> = seized
                .keys()
                .copied()
                .filter(|tid| {
                    ptrace::detach(*tid, 0).is_err_and(|e| ptrace::errno(&e) == Some(libc::ESRCH))
                })
                .collect();
            collect_dead(pid, dead);
            Err(e)
        }
    }
}

/// How long a thaw waits for threads that were killed while stopped to be
/// reported dead.
const DEAD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Lets go of threads of `pid` that could not be detached (ESRCH: not in
/// a ptrace stop). Mostly threads killed (SIGKILL from a process that was
/// not stopped, or from outside) while we traced them: the kernel reports
/// such a death to the tracer, and until the tracer has collected it the
/// real parent's `waitpid` does not see the child (a parent blocked in it
/// waits forever, holding whatever it holds). A dead leader is reported
/// only after its other threads, so they go first. On a freeze's error
/// path, also threads seized but not stopped yet: detached at their stop.
fn collect_dead(pid: HostPid, mut tids: Vec<HostPid>) {
    if tids.is_empty() {
        return;
    }
    tids.sort_by_key(|t| *t == pid);
    let deadline = std::time::Instant::now() + DEAD_WAIT;
    loop {
        tids.retain(|&tid| match ptrace::try_wait(tid) {
            Ok(None) => true,
            Ok(Some(Stop::Exited(_) | Stop::Killed(_))) => false,
            // Alive and now stopped: let it go, with the signal it was
            // about to take.
            Ok(Some(Stop::Signal(sig))) => ptrace::detach(tid, sig).is_err(),
            Ok(Some(_)) => ptrace::detach(tid, 0).is_err(),
            // No longer our tracee: nothing is held.
            Err(_) => false,
        });
        if tids.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!("pid {pid}: threads {tids:?} could not be let go (neither reported dead nor stopped) within {DEAD_WAIT:?}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn freeze_into(
    pid: HostPid,
    seized: &mut BTreeMap<HostPid, Option<FrozenThread>>,
    only: &[HostPid],
) -> io::Result<()> {
    // Threads may be created while we seize: repeat until the set is stable.
    // Seized threads are stopped (or stopping) and cannot create more.
    // Threads that exited before we could seize them are not looked at again.
    let mut gone: Vec<HostPid> = Vec::new();
    loop {
        let tids = if only.is_empty() {
            procfs::tasks(pid).map_err(|e| match e.kind() {
                // The whole process is gone: report it as such.
                io::ErrorKind::NotFound => io::Error::new(
                    io::ErrorKind::NotFound,
                    SysError {
                        errno: libc::ESRCH,
                        what: format!("pid {pid} exited before it could be stopped"),
                    },
                ),
                _ => e,
            })?
        } else {
            only.to_vec()
        };
        let fresh: Vec<HostPid> = tids
            .into_iter()
            .filter(|t| !seized.contains_key(t) && !gone.contains(t))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for tid in fresh {
            match ptrace::seize(tid, 0) {
                Ok(()) => {}
                Err(e) if ptrace::errno(&e) == Some(libc::ESRCH) => {
                    gone.push(tid);
                    continue;
                }
                // The kernel refuses to seize a thread that is exiting
                // (EPERM for a task with an exit state, traced by nobody):
                // it runs no more code, so it is left out, unless it is
                // the leader of a process whose other threads live on.
                Err(e) if ptrace::errno(&e) == Some(libc::EPERM) && exiting(pid, tid) => {
                    if tid == pid && procfs::tasks(pid).is_ok_and(|t| t.len() > 1) {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "cannot stop pid {pid}: its main thread has exited (pthread_exit) while other threads run, which cannot be checkpointed yet"
                            ),
                        ));
                    }
                    gone.push(tid);
                    continue;
                }
                Err(e) if ptrace::errno(&e) == Some(libc::EPERM) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                        "cannot stop pid {pid}: it is traced by {} (detach the debugger and retry)",
                        tracer_of(pid)
                    ),
                    ))
                }
                Err(e) => return Err(e),
            }
            seized.insert(tid, None);
            if let Err(e) = ptrace::interrupt(tid) {
                if ptrace::errno(&e) != Some(libc::ESRCH) {
                    return Err(e);
                }
            }
        }
    }
    let tids: Vec<HostPid> = seized.keys().copied().collect();
    for tid in tids {
        let pending = loop {
            match ptrace::wait(tid)? {
                Stop::Event { event, .. } if event == ptrace::PTRACE_EVENT_STOP => break None,
                Stop::Signal(sig) => {
                    let info = ptrace::get_siginfo(tid)?;
                    if undo_seccomp_trap(tid, sig, &info)? {
                        break None;
                    }
                    break Some((sig, info));
                }
                Stop::Exited(_) | Stop::Killed(_) => {
                    seized.remove(&tid);
                    break None;
                }
                Stop::Event { .. } | Stop::Syscall => ptrace::cont(tid, 0)?,
            }
        };
        if !seized.contains_key(&tid) {
            continue;
        }
        ptrace::suspend_seccomp(tid, 0)?;
        let regs = ptrace::get_regs(tid)?;
        seized.insert(
            tid,
            Some(FrozenThread {
                tid,
                vtid: 0,
                regs,
                pending_signal: pending,
                touched: false,
                regs_written: false,
                affinity: None,
                seccomp: None,
            }),
        );
    }
    Ok(())
}

/// `si_code` of a SIGSYS sent by a seccomp filter's `SECCOMP_RET_TRAP`.
const SYS_SECCOMP: i32 = 1;

/// A seccomp trap's SIGSYS caught in its signal-delivery stop (`tid`
/// stopped there, `info` its siginfo): the call was skipped and rolled
/// back (rax holds its number again, rip is just past the `syscall`
/// instruction). If our code runs in the thread before the thaw, the
/// signal cannot be handed back by the detach, and queued again from
/// outside it would lose its siginfo (the kernel takes `si_code` >= 0 only
/// from the process itself): the thread's handler would get a SIGSYS that
/// is not a trap, and the call would return its own number. So the thread
/// is set back onto the `syscall` instruction instead and the signal
/// dropped: when it runs again it makes the call, which traps again.
/// True when that was done; false (nothing changed) for any other signal.
fn undo_seccomp_trap(tid: HostPid, sig: i32, info: &[u8; 128]) -> io::Result<bool> {
    let word = |at: usize| i32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
    if sig != libc::SIGSYS || word(8) != SYS_SECCOMP {
        return Ok(false);
    }
    // The SIGSYS fields: _call_addr (16), _syscall (24), _arch (28).
    let mut a = [0u8; 8];
    a.copy_from_slice(&info[16..24]);
    let call_addr = u64::from_ne_bytes(a);
    let nr = word(24);
    if word(28) as u32 != crate::kernel::seccomp::AUDIT_ARCH_X86_64 || call_addr < 2 {
        return Ok(false);
    }
    let mut regs = ptrace::get_regs(tid)?;
    if regs.rip != call_addr || regs.rax != nr as i64 as u64 || regs.orig_rax != regs.rax {
        return Ok(false);
    }
    // Only over the instruction itself (`syscall` is 0f 05): a SIGSYS
    // the program queued to itself with a made-up siginfo is left alone.
    let mut insn = [0u8; 2];
    let readable = procfs::Mem::open(tid, false)
        .and_then(|m| m.read(crate::kernel::pid::RemoteAddr(call_addr - 2), &mut insn))
        .is_ok();
    if !readable || insn != [0x0f, 0x05] {
        return Ok(false);
    }
    regs.rip = call_addr - 2;
    // No syscall in progress (as `ptrace::fix_interrupted_syscall` leaves
    // a call to be issued again): nothing to restart or translate on resume.
    regs.orig_rax = u64::MAX;
    ptrace::set_regs(tid, &regs)?;
    tracing::debug!(
        "tid {tid}: stopped on its way into a seccomp trap's SIGSYS (call {nr}): set back onto the call"
    );
    Ok(true)
}

/// The registers a thread stopped with `regs` resumes with: an interrupted
/// call is set to be issued again (see [`ptrace::fix_interrupted_syscall`]);
/// and whether they differ from `regs`.
pub fn thaw_regs(regs: &Regs) -> (Regs, bool) {
    let mut r = *regs;
    let fixed = ptrace::fix_interrupted_syscall(&mut r, true);
    (r, fixed)
}

/// Lets one stopped thread run from its (saved or changed) registers.
fn thaw_one(pid: HostPid, t: &FrozenThread) -> io::Result<()> {
    ptrace::note_continued_call(t.tid, &t.regs);
    let (regs, fixed) = thaw_regs(&t.regs);
    if let Some(mask) = &t.affinity {
        ptrace::set_affinity(t.tid, mask)?;
    }
    if (fixed || t.touched) && !t.regs_written {
        ptrace::set_regs(t.tid, &regs)?;
    }
    match &t.pending_signal {
        Some((sig, _)) if !t.touched => ptrace::detach(t.tid, *sig),
        // Our code ran in the thread since its signal-delivery stop, so
        // the detach cannot hand the signal over: it is queued again while
        // the thread is still stopped, so that the thread takes it before
        // its first instruction (queued after the detach, the thread ran
        // on without it for a moment: a program that checks its handler
        // ran right after raising a signal saw it had not).
        Some((sig, info)) => {
            ptrace::queue_signal(pid, t.tid, *sig, info)?;
            ptrace::detach(t.tid, 0)
        }
        None => ptrace::detach(t.tid, 0),
    }
}

impl FrozenProcess {
    /// Lets one thread run again, exactly where it was (a plugin hook
    /// thread while the others stay stopped); it is no longer part of this
    /// frozen process. Unknown tids are ignored.
    pub fn thaw_thread(&mut self, tid: HostPid) -> io::Result<()> {
        let Some(i) = self.threads.iter().position(|t| t.tid == tid) else {
            return Ok(());
        };
        let t = self.threads.remove(i);
        thaw_one(self.pid, &t)
    }

    /// Stops `tid` again (after [`thaw_thread`](Self::thaw_thread)) and
    /// makes it part of this frozen process once more.
    pub fn refreeze_thread(&mut self, tid: HostPid) -> io::Result<()> {
        let fp = freeze_threads(self.pid, &[tid])?;
        self.threads.extend(fp.threads);
        Ok(())
    }

    /// Lets every thread run again, exactly where it was.
    /// Threads that died while stopped (ESRCH) have their deaths collected
    /// so that their parent can reap them ([`collect_dead`]).
    pub fn thaw(self) -> io::Result<()> {
        let mut first_err = None;
        let mut dead = Vec::new();
        for t in &self.threads {
            match thaw_one(self.pid, t) {
                Ok(()) => {}
                Err(e) if ptrace::errno(&e) == Some(libc::ESRCH) => dead.push(t.tid),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        collect_dead(self.pid, dead);
        first_err.map_or(Ok(()), Err)
    }

    /// Pins the leader thread (where syscalls are injected) to `cpu` (the
    /// tracer's) so injected syscalls are local wake-ups; [`thaw`](Self::thaw)
    /// puts the old affinity back. The other threads only run the short
    /// per-thread query code, better spread over all CPUs.
    pub fn pin_leader(&mut self, cpu: usize) {
        if let Some(t) = self.threads.first_mut() {
            if t.affinity.is_none() {
                t.affinity = ptrace::pin_to_cpu(t.tid, cpu).ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A seized thread that has not stopped yet runs its own code under its
    /// own seccomp filters: suspending them (root) waits for the stop.
    #[test]
    fn filters_hold_until_the_thread_stops() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: suspending seccomp filters needs root");
            return;
        }
        // ld nr; jeq getppid ? errno(EPERM) : allow.
        let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        let filter = [
            ins(0x20, 0, 0, 0),
            ins(0x15, 0, 1, libc::SYS_getppid as u32),
            ins(0x06, 0, 0, 0x0005_0000 | libc::EPERM as u32),
            ins(0x06, 0, 0, 0x7fff_0000),
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        let mut fds = [0; 2];
        // SAFETY: fds is an array of two ints for pipe2 to fill.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
        assert_eq!(r, 0, "pipe2");
        // SAFETY: the child only makes async-signal-safe system calls
        // (prctl, seccomp, getppid, write, _exit) on memory it owns.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            // SAFETY: as above; `prog` lives on this (copied) stack.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if libc::syscall(libc::SYS_seccomp, 1, 0, &prog) != 0 {
                    libc::_exit(2);
                }
                for _ in 0..2_000_000_000u64 {
                    if libc::syscall(libc::SYS_getppid) > 0 {
                        libc::write(fds[1], b"A".as_ptr().cast(), 1);
                        libc::_exit(1);
                    }
                }
                libc::_exit(0);
            }
        }
        let pid = HostPid(child);
        std::thread::sleep(Duration::from_millis(50));
        ptrace::seize(pid, 0).expect("seize");
        // Seized but running: the filter must still deny getppid.
        std::thread::sleep(Duration::from_millis(100));
        let mut b = [0u8; 1];
        // SAFETY: b is a one-byte buffer.
        let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
        let fp = freeze(pid);
        // SAFETY: kill and waitpid take no pointers but the status.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        drop(fp);
        assert_ne!(
            n, 1,
            "getppid was allowed while the thread was seized and running"
        );
    }
}
