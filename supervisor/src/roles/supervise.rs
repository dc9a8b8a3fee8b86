//! Running a computation under a supervisor until it ends: the nsinit child,
//! the session thread, signal forwarding and the exit status.
//!
//! `dmtcp-run` and `dmtcp-restart` both end up here once their processes exist.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use dmtcp_image::IpcState;

use crate::kernel::pid::HostPid;
use crate::kernel::procfs;
use crate::roles::nsinit::{exit_code_for, InitReply, InitRequest};
use crate::roles::nsinit_ctrl::NsinitCtrl;
use crate::roles::session::Session;

/// A binary that ships next to the running executable (or `$DMTCP_<NAME>`).
/// Fails, in one sentence naming the cause, when this user cannot make the
/// user namespace an unprivileged computation needs; checked before a
/// coordinator is started or anything runs.
pub fn check_namespaces() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    crate::kernel::sys::try_new_userns()
        .map_err(|e| anyhow::anyhow!(crate::kernel::userns::why_no_userns(&e)))
}

/// Why this user cannot make a user namespace (a clause naming the
/// setting), `None` when one can be made or when root needs none.
pub fn userns_cause() -> Option<String> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    crate::kernel::sys::try_new_userns()
        .err()
        .and_then(|e| crate::kernel::userns::userns_cause(&e))
}

pub fn sibling(name: &str, env: &str) -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe.parent().map(|d| d.join(name)).unwrap_or_default();
    if p.exists() {
        Ok(p)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} not found next to {} (set {env})", exe.display()),
        ))
    }
}

/// Signals the supervisor handles itself: forwarded ones and SIGCHLD.
fn handled_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        s.add(sig);
    }
    s
}

/// Blocks the handled signals in the calling thread (call before spawning
/// threads so they inherit the mask).
pub fn block_signals() -> io::Result<()> {
    crate::kernel::sys::no_sigchld_for_stops()
        .map_err(|e| io::Error::other(format!("sigaction(SIGCHLD): {e}")))?;
    handled_signals()
        .thread_block()
        .map_err(|e| io::Error::other(format!("sigprocmask: {e}")))
}

/// Starts nsinit in fresh namespaces and sends it `req` (and `ipc`, the
/// SysV IPC objects to recreate, for a `Restore` that asks for them).
pub fn start_nsinit(
    req: &InitRequest,
    ipc: Option<(&IpcState, &crate::resources::sysv::ShmBytes)>,
) -> io::Result<(HostPid, InitReply, NsinitCtrl)> {
    let nsinit = sibling("dmtcp-nsinit", "DMTCP_NSINIT")?;
    let (ours, theirs) = UnixStream::pair()?;
    let theirs: OwnedFd = theirs.into();
    let pid = crate::roles::spawn::spawn_nsinit(&nsinit, &theirs)?;
    drop(theirs);
    let mut ours = ours;
    dmtcp_protocol::write_local_frame(&mut ours, req)
        .map_err(|e| io::Error::other(format!("talking to dmtcp-nsinit: {e}")))?;
    if let Some((state, bytes)) = ipc {
        crate::resources::sysv::send(&mut ours, state, bytes)?;
    }
    let reply: InitReply = match dmtcp_protocol::read_local_frame(&mut ours) {
        Ok(r) => r,
        Err(e) => {
            let code = wait_nsinit(pid);
            return Err(io::Error::other(format!(
                "dmtcp-nsinit ended before answering (exit {code}): {e}"
            )));
        }
    };
    // A checkpoint must not hang on a stuck nsinit.
    ours.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    Ok((pid, reply, NsinitCtrl(ours)))
}

/// Waits for nsinit and returns the exit code it carried.
pub fn wait_nsinit(pid: HostPid) -> i32 {
    let mut st = 0;
    loop {
        // SAFETY: waitpid on our own child; st is a live c_int.
        let r = unsafe { libc::waitpid(pid.0, &mut st, 0) };
        if r == pid.0 {
            return exit_code_for(st);
        }
        if r == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}

/// Kills a computation we may still be tracing and reaps it. A dying pid 1
/// waits until every process of its namespace is reaped, and a traced
/// process is reaped by its tracer (us), so we reap everything we are owed
/// until nsinit itself is gone.
pub fn kill_and_reap(nsinit: HostPid) {
    kill_computation(nsinit);
    loop {
        let mut st = 0;
        // SAFETY: st is a live c_int.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
        if r == nsinit.0 {
            return;
        }
        if r == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Waits until `nsinit` is reaped, by us or by another thread of ours.
pub fn reap(nsinit: HostPid) {
    loop {
        let mut st = 0;
        // SAFETY: st is a live c_int.
        let r = unsafe { libc::waitpid(nsinit.0, &mut st, libc::__WALL) };
        if r == nsinit.0
            || (r == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
        {
            return;
        }
    }
}

/// Ends the computation under `nsinit`: SIGKILL to nsinit, whose death
/// as pid 1 ends its pid namespace. Without one (`--no-pidns`, nsinit a
/// child subreaper) the processes are killed one by one: see
/// [`stop_then_kill`].
pub fn kill_computation(nsinit: HostPid) {
    if crate::roles::spawn::host_pids() {
        stop_then_kill(|| procfs::descendants(nsinit));
    }
    // SAFETY: kill with integer arguments; nsinit is our child.
    unsafe { libc::kill(nsinit.0, libc::SIGKILL) };
}

/// Kills every process `live` lists (parents before their children), as
/// the death of a pid namespace's init does, with no process seeing
/// another die: killed one by one, a process would run on for a moment
/// after its peer's death, see its pipe or socket closed (EPIPE, ECONNRESET,
/// EOF) and act on it, writing a failure to a file by path, say. So every
/// process is stopped first (SIGSTOP, parents first, so no parent is left
/// running to see a child stop), until a look finds none it has not
/// stopped (a fork under way when its parent got SIGSTOP is restarted by
/// the kernel; a child made before shows up in the next look), and only
/// then killed, until none is left. The killed ones stay their reaper's
/// zombies.
pub fn stop_then_kill(mut live: impl FnMut() -> Vec<HostPid>) {
    stop_all(&mut live);
    let alive = |p: &HostPid| crate::roles::members::proc_stat(p.0).is_some_and(|st| !st.zombie);
    for _ in 0..400 {
        let left: Vec<HostPid> = live().into_iter().filter(alive).collect();
        if left.is_empty() {
            break;
        }
        for p in left {
            let _ = crate::kernel::ptrace::kill(p, libc::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The stopping half of [`stop_then_kill`], also the first step of a kill
/// across launches (`FromCoordinator::Halt`): every process `live` lists
/// gets SIGSTOP (in the order listed: parents first), until a look finds
/// none it has not stopped. Returns how many were stopped.
pub fn stop_all(mut live: impl FnMut() -> Vec<HostPid>) -> usize {
    let alive = |p: &HostPid| crate::roles::members::proc_stat(p.0).is_some_and(|st| !st.zombie);
    let mut stopped = std::collections::HashSet::new();
    for _ in 0..400 {
        let new: Vec<HostPid> = live()
            .into_iter()
            .filter(|p| !stopped.contains(&p.0) && alive(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            // Gone meanwhile: nothing to stop.
            let _ = crate::kernel::ptrace::kill(p, libc::SIGSTOP);
            stopped.insert(p.0);
        }
    }
    stopped.len()
}

/// Runs the session on its own thread and waits for the computation to end,
/// forwarding SIGINT/SIGTERM/SIGHUP sent to us to the root process.
/// Returns the exit code of the root process.
pub fn supervise(session: Session, nsinit: HostPid) -> i32 {
    let waker = session.waker();
    let worker = std::thread::Builder::new()
        .name("session".into())
        .spawn(move || session.run())
        .expect("spawning the session thread");
    let code = wait_forwarding(nsinit);
    waker.wake();
    let _ = worker.join();
    code
}

fn wait_forwarding(nsinit: HostPid) -> i32 {
    let sfd = match SignalFd::with_flags(&handled_signals(), SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("signalfd: {e}; signals will not be forwarded");
            return wait_nsinit(nsinit);
        }
    };
    loop {
        let mut st = 0;
        // SAFETY: waitpid on our own child; st is a live c_int.
        let r = unsafe { libc::waitpid(nsinit.0, &mut st, libc::WNOHANG) };
        if r == nsinit.0 {
            return exit_code_for(st);
        }
        match sfd.read_signal() {
            Ok(Some(info)) => {
                let sig = info.ssi_signo as i32;
                // Terminal signals reach the whole foreground group already;
                // forward only what was sent to us personally.
                if sig != libc::SIGCHLD && info.ssi_code <= 0 {
                    if let Some(root) = procfs::children(nsinit)
                        .ok()
                        .and_then(|c| c.first().copied())
                    {
                        // SAFETY: kill with integer arguments.
                        unsafe { libc::kill(root.0, sig) };
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("signalfd read: {e}");
                return wait_nsinit(nsinit);
            }
        }
    }
}

/// Path of the inject library: `$DMTCP_INJECT_LIB` or next to the executable.
pub fn inject_library() -> io::Result<PathBuf> {
    sibling("libdmtcp_inject.so", "DMTCP_INJECT_LIB")
}

/// Makes a path absolute against the current directory.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}
