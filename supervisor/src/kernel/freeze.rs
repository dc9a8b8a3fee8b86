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
    /// CPU affinity before we pinned the thread next to the tracer.
    pub affinity: Option<libc::cpu_set_t>,
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
            Ok(FrozenProcess {
                pid,
                vpid,
                threads: seized.into_values().flatten().collect(),
            })
        }
        Err(e) => {
            for tid in seized.keys() {
                let _ = ptrace::detach(*tid, 0);
            }
            Err(e)
        }
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
                Stop::Signal(sig) => break Some((sig, ptrace::get_siginfo(tid)?)),
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
        let regs = ptrace::get_regs(tid)?;
        seized.insert(
            tid,
            Some(FrozenThread {
                tid,
                vtid: 0,
                regs,
                pending_signal: pending,
                touched: false,
                affinity: None,
            }),
        );
    }
    Ok(())
}

impl FrozenProcess {
    /// Lets every thread run again, exactly where it was.
    pub fn thaw(self) -> io::Result<()> {
        let mut first_err = None;
        for t in &self.threads {
            let mut regs = t.regs;
            let fixed = ptrace::fix_interrupted_syscall(&mut regs, true);
            let r = (|| {
                if let Some(mask) = &t.affinity {
                    ptrace::set_affinity(t.tid, mask)?;
                }
                if fixed || t.touched {
                    ptrace::set_regs(t.tid, &regs)?;
                }
                match t.pending_signal {
                    Some((sig, _)) if !t.touched => ptrace::detach(t.tid, sig),
                    Some((sig, _)) => {
                        ptrace::detach(t.tid, 0)?;
                        ptrace::tgkill(self.pid, t.tid, sig)
                    }
                    None => ptrace::detach(t.tid, 0),
                }
            })();
            if let Err(e) = r {
                if ptrace::errno(&e) != Some(libc::ESRCH) && first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
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
