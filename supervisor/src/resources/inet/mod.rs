//! TCP connections, UDP sockets and connected named unix sockets: capture
//! ([`capture`]) and restore ([`restore`]).

pub mod capture;
pub mod restore;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use dmtcp_image::{FdEntry, FdKind};

use crate::resources::fdshare::FdContext;
use crate::resources::unix::socket_inode;
use crate::resources::{FdObjects, FdResource, OpenFd};

/// A new fd for a socket made by `FdObjects::create`, with the saved
/// `O_NONBLOCK`.
fn dup_socket(sock: Option<&OwnedFd>, flags: i32, what: &str) -> io::Result<OwnedFd> {
    let sock = sock.ok_or_else(|| io::Error::other(format!("{what} was not created")))?;
    let fd = crate::kernel::sys::dup_above(sock.as_raw_fd(), 0)?;
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & libc::O_NONBLOCK) } < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("fcntl(F_SETFL) on {what}: {err}"),
        ));
    }
    Ok(fd)
}

/// TCP connections, UDP sockets and named unix connections.
pub struct Inet;

impl FdResource for Inet {
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        match socket_inode(f.target) {
            Some(ino) => capture::capture(f.pid, f.fd, ino, f.flags, cx),
            None => Ok(None),
        }
    }

    fn restore(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd> {
        match &e.kind {
            FdKind::TcpConn { id, end, flags, .. } => dup_socket(
                objects.net.tcp(*id, *end),
                *flags,
                &format!("tcp connection {id} end {end}"),
            ),
            FdKind::Udp { id, flags, .. } => {
                dup_socket(objects.net.udp(*id), *flags, &format!("udp socket {id}"))
            }
            FdKind::UnixNamedPair { id, end, flags, .. } => dup_socket(
                objects.net.unix(*id, *end),
                *flags,
                &format!("unix connection {id} end {end}"),
            ),
            _ => Err(super::wrong_kind(e, "inet socket")),
        }
    }
}
