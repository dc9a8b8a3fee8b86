//! `dmtcp-restart --stop` (DMTCP's `--debug-restart-pause`,
//! `DMTCP_RESTART_PAUSE`): the computation is restored completely and
//! every thread is left in a job-control stop at its checkpointed
//! instruction, for a debugger to attach.
//!
//! How: while every restored thread is still in the restorer's ptrace stop
//! with its saved registers loaded, a process-directed SIGSTOP is queued
//! ([`queue_stop`]). No thread can take it while traced; each one sees it
//! when it is detached, before it returns to user space, so the first
//! thread detached starts a group stop that every other thread joins when
//! it is detached in turn. No user instruction runs in between.
//!
//! A debugger that attaches to a stopped process and detaches again leaves
//! it stopped (the kernel puts a detached thread back into the group stop
//! that is still in effect). What gdb users expect is that the program
//! goes on when gdb detaches or quits, so [`watch`] resumes (SIGCONT) each
//! process once a tracer has come and gone. A process resumed by other
//! means (`kill -CONT`) is left alone from then on.

use std::io;
use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::kernel::pid::{HostPid, VirtPid};
use crate::kernel::procfs;
use crate::kernel::ptrace;

/// A restored process left stopped.
#[derive(Debug, Clone)]
pub struct Held {
    pub pid: HostPid,
    pub vpid: VirtPid,
    /// The executable (`/proc/PID/exe` at checkpoint time).
    pub exe: String,
}

/// Queues a SIGSTOP for the whole process `pid`, whose threads are all
/// still in ptrace stops: they stop on detach, before running anything.
pub fn queue_stop(pid: HostPid) -> io::Result<()> {
    ptrace::kill(pid, libc::SIGSTOP)
}

/// A word for a POSIX shell, quoted when it needs to be.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The gdb command that attaches to `h` with the program's symbols. The
/// computation has its own mount namespace; an unprivileged gdb cannot
/// enter it to read the program's files, and is told they are its own
/// (they are the same files: the namespace is a copy of ours).
pub fn gdb_command(h: &Held, privileged: bool) -> String {
    let mut cmd = String::from("gdb");
    if !privileged {
        cmd.push_str(" -iex 'set sysroot /'");
    }
    cmd.push_str(&format!(" -p {}", h.pid.0));
    let exe = h.exe.strip_suffix(" (deleted)").unwrap_or(&h.exe);
    if !exe.is_empty() && Path::new(exe).is_file() {
        cmd.push(' ');
        cmd.push_str(&shell_word(exe));
    }
    cmd
}

/// Tells the user, on stderr, how to attach to every stopped process.
pub fn announce(held: &[Held]) {
    // SAFETY: geteuid has no arguments and cannot fail.
    let privileged = unsafe { libc::geteuid() } == 0;
    for h in held {
        eprintln!(
            "dmtcp-restart: pid {} ({}) is stopped at its checkpointed instruction; debug it with:\n    {}",
            h.vpid,
            Path::new(&h.exe)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            gdb_command(h, privileged)
        );
    }
    if let Some(h) = held.first() {
        eprintln!(
            "dmtcp-restart: each process goes on when gdb detaches or quits; without gdb: kill -CONT {}",
            held.iter()
                .map(|h| h.pid.0.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        tracing::debug!("first stopped process: host pid {}", h.pid);
    }
}

/// How often [`watch`] looks at each process.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// Consecutive looks that must find a process running without a tracer
/// before [`watch`] stops watching it (half a second).
const RUNNING_LOOKS: u32 = 10;

/// What one look at a process found.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Gone,
    /// Some thread has a tracer.
    Traced,
    /// No tracer; every thread is in a job-control stop.
    Stopped,
    /// No tracer; some thread runs.
    Running,
}

fn look(pid: HostPid) -> Seen {
    let Ok(tids) = procfs::tasks(pid) else {
        return Seen::Gone;
    };
    let mut stopped = true;
    let mut any = false;
    for t in tids {
        let Ok(kv) = procfs::status_of(pid, Some(t)) else {
            continue;
        };
        any = true;
        if procfs::field(&kv, "TracerPid").is_some_and(|v| v != "0") {
            return Seen::Traced;
        }
        match procfs::field(&kv, "State").and_then(|s| s.chars().next()) {
            Some('T') => {}
            Some('Z') | Some('X') => return Seen::Gone,
            _ => stopped = false,
        }
    }
    match (any, stopped) {
        (false, _) => Seen::Gone,
        (true, true) => Seen::Stopped,
        (true, false) => Seen::Running,
    }
}

/// Waits (up to 5 s) until every thread of every process in `held` has
/// entered the group stop, so that the commands printed then attach to
/// stopped processes.
pub fn wait_stopped(held: &[Held]) -> io::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for h in held {
        loop {
            match look(h.pid) {
                Seen::Stopped | Seen::Traced => break,
                Seen::Gone => {
                    return Err(io::Error::other(format!(
                        "pid {} (host pid {}) ended instead of stopping",
                        h.vpid, h.pid
                    )))
                }
                Seen::Running if std::time::Instant::now() > deadline => {
                    return Err(io::Error::other(format!(
                        "pid {} (host pid {}) did not stop within 5 s",
                        h.vpid, h.pid
                    )))
                }
                Seen::Running => thread::sleep(Duration::from_millis(2)),
            }
        }
    }
    Ok(())
}

/// Resumes each stopped process once a debugger has attached to it and
/// detached again (gdb's `detach` or `quit`), in a thread of its own that
/// ends when no process is left to watch.
pub fn watch(held: Vec<Held>) -> io::Result<()> {
    thread::Builder::new()
        .name("stop-watch".into())
        .spawn(move || {
            // (pid, a tracer was seen, consecutive looks found it running)
            let mut left: Vec<(HostPid, bool, u32)> =
                held.iter().map(|h| (h.pid, false, 0)).collect();
            while !left.is_empty() {
                left.retain_mut(|(pid, traced, running)| match look(*pid) {
                    Seen::Gone => false,
                    Seen::Traced => {
                        *traced = true;
                        *running = 0;
                        true
                    }
                    Seen::Stopped if *traced => {
                        tracing::debug!("debugger gone from pid {pid}: resuming it");
                        if let Err(e) = ptrace::kill(*pid, libc::SIGCONT) {
                            tracing::warn!("cannot resume pid {pid}: {e}");
                        }
                        false
                    }
                    Seen::Stopped => {
                        *running = 0;
                        true
                    }
                    // Resumed by other means: the user's to handle from
                    // now on. A thread just detached runs for a moment
                    // before it re-enters the group stop: only a process
                    // seen running for RUNNING_LOOKS looks in a row is let go.
                    Seen::Running => {
                        *running += 1;
                        *running < RUNNING_LOOKS
                    }
                });
                thread::sleep(LOOK_EVERY);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_command_quotes_and_adds_sysroot() {
        let h = Held {
            pid: HostPid(42),
            vpid: VirtPid(1),
            exe: "/nonexistent/a b".into(),
        };
        assert_eq!(gdb_command(&h, true), "gdb -p 42");
        assert_eq!(gdb_command(&h, false), "gdb -iex 'set sysroot /' -p 42");
        assert_eq!(shell_word("/bin/x y"), "'/bin/x y'");
        assert_eq!(shell_word("/usr/bin/true"), "/usr/bin/true");
    }
}
