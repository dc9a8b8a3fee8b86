//! One module per kind of process state, each holding its capture (at
//! checkpoint) and its restore (at restart) side by side.
//!
//! Fd kinds implement [`FdResource`] and are listed once in
//! [`fds::CAPTURE_ORDER`] and [`fds::open_fd`].

pub mod anonfd;
pub mod fds;
pub mod fdshare;
pub mod files;
pub mod ghost;
pub mod inet;
pub mod inotify;
pub mod locks;
pub mod memfd;
pub mod memory;
pub mod mqueue;
pub mod pipes;
pub mod pty;
pub mod sandbox;
pub mod seccomp;
pub mod signals;
pub mod sysv;
pub mod threads;
pub mod tree;
pub mod unix;
pub mod vpid_trap;

use std::io;
use std::os::fd::OwnedFd;

use dmtcp_image::{FdEntry, FdKind};

use crate::kernel::pid::HostPid;

/// Warnings of the checkpoint being captured, for the command that asked
/// for it (see [`checkpoint_warning`]).
static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records a warning about the checkpoint being taken (something saved
/// differently from what the program has, such as an outside connection
/// that a restart will drop). It is logged here, and `dmtcp-command -c/-bc`
/// prints it on its own stderr once the checkpoint is committed (protocol
/// 2.1 `Warnings`, sent by the session). Call it from the capture code
/// during the Checkpoint barrier (any thread); warnings of a checkpoint that
/// fails are dropped.
pub fn checkpoint_warning(msg: String) {
    tracing::warn!("{msg}");
    if let Ok(mut w) = WARNINGS.lock() {
        w.push(msg);
    }
}

/// What to do with a connection whose peer is outside the computation:
/// `DMTCP_OUTSIDE_PEERS=refuse` refuses the checkpoint, anything else (the
/// default, `reset`) saves it as a connection that will be reset.
pub fn refuse_outside_peers() -> bool {
    std::env::var("DMTCP_OUTSIDE_PEERS").is_ok_and(|v| v == "refuse")
}

/// Warns (or, with [`refuse_outside_peers`], fails) about fd `fd` of `pid`
/// whose peer `what` is outside the computation.
pub fn outside_peer(pid: HostPid, fd: i32, what: &str) -> io::Result<()> {
    if refuse_outside_peers() {
        return Err(io::Error::other(format!(
            "pid {} fd {fd}: {what}: the connection cannot be saved and DMTCP_OUTSIDE_PEERS=refuse",
            pid.0
        )));
    }
    crate::resources::checkpoint_warning(format!(
        "pid {} fd {fd}: {what}: the connection cannot be saved; after a restart the program sees it reset by the peer",
        pid.0
    ));
    Ok(())
}

/// The warnings recorded since the last call.
pub fn take_warnings() -> Vec<String> {
    WARNINGS
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default()
}
pub use fds::FdObjects;
use fdshare::FdContext;

/// An fd of a frozen process, as the capture finds it.
pub struct OpenFd<'a> {
    pub pid: HostPid,
    pub fd: i32,
    /// Its `/proc/PID/fd/N` link target (`/path`, `pipe:[INODE]`, ...).
    pub target: &'a str,
    /// File status flags, without `O_CLOEXEC`.
    pub flags: i32,
    /// File offset (fdinfo `pos`).
    pub pos: u64,
    /// The whole text of its `/proc/PID/fdinfo/N`, read once for every
    /// kind that looks at it.
    pub info: &'a str,
}

/// One kind of file descriptor: how an fd of the kind is captured from a
/// frozen process, and how it is opened again in a restart shell.
pub trait FdResource {
    /// The image's description of `f`, or `None` when `f` is not of this
    /// kind (the next kind is tried).
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>>;
    /// Opens the object `e` describes (an entry of this kind), at any free
    /// number; `objects` holds what several fds share.
    fn restore(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd>;
}

/// An entry handed to the restore of another kind (a bug of the dispatch).
fn wrong_kind(e: &FdEntry, kind: &str) -> io::Error {
    io::Error::other(format!("fd {}: not a {kind}: {:?}", e.fd, e.kind))
}

/// An error of the restore of `pid`, naming the step.
pub(crate) fn restore_err(pid: HostPid, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("restoring pid {pid}: {what}: {e}"))
}

/// Errors of a capture carry the pid and the step.
pub(crate) fn capture_ctx<T>(r: io::Result<T>, pid: HostPid, what: &str) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("pid {pid}: {what}: {e}")))
}
