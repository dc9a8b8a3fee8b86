//! Turning the coordinator into a background daemon (double fork + setsid).

use nix::unistd::{fork, setsid, ForkResult};

/// Detaches from the terminal: the calling process exits 0 (its caller sees
/// success only after everything done before this call, e.g. binding the
/// port), and the grandchild returns from this function in a new session.
/// stdin/stdout (and stderr unless `keep_stderr`) go to /dev/null.
///
/// Must be called while the process has only one thread.
pub fn daemonize(keep_stderr: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    // SAFETY: the caller guarantees the process is single-threaded (no thread
    // has been spawned yet), so the child's copy of the address space holds no
    // lock owned by a vanished thread and may run ordinary Rust code.
    match unsafe { fork() }.context("fork for --daemon")? {
        // The parent leaves without running destructors or atexit handlers:
        // the files it made (port file, secret file) belong to the daemon now.
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().context("setsid for --daemon")?;
    // SAFETY: still single-threaded (the first child only called setsid), as above.
    match unsafe { fork() }.context("second fork for --daemon")? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    let _ = std::env::set_current_dir("/");
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    nix::unistd::dup2_stdin(&null).context("redirecting stdin to /dev/null")?;
    nix::unistd::dup2_stdout(&null).context("redirecting stdout to /dev/null")?;
    if !keep_stderr {
        nix::unistd::dup2_stderr(&null).context("redirecting stderr to /dev/null")?;
    }
    Ok(())
}
