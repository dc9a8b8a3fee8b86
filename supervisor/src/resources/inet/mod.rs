//! TCP connections, UDP sockets and connected named unix sockets: capture
//! (here, on top of the computation-wide analysis in
//! [`crate::resources::fdshare::net`]) and restore ([`restore`]).

pub mod remote;
pub mod restore;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use dmtcp_image::{FdEntry, FdKind};

use crate::kernel::netsys::{self, TCP_FIN_WAIT1, TCP_FIN_WAIT2};
use crate::kernel::pid::HostPid;
use crate::kernel::sockdiag::socket_inode;
use crate::resources::fdshare::FdContext;
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
            Some(ino) => capture_fd(f.pid, f.fd, ino, f.flags, cx),
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
            FdKind::TcpRemote { id, key, flags, .. } => dup_socket(
                objects.net.remote(*id),
                *flags,
                &format!("tcp connection {key} (peer in another launch)"),
            ),
            FdKind::Udp { id, flags, .. } => {
                dup_socket(objects.net.udp(*id), *flags, &format!("udp socket {id}"))
            }
            FdKind::UnixNamedPair { id, end, flags, .. } => dup_socket(
                objects.net.unix(*id, *end),
                *flags,
                &format!("unix connection {id} end {end}"),
            ),
            FdKind::OutsidePeer { id, flags, .. } => dup_socket(
                objects.net.dropped(*id),
                *flags,
                &format!("socket {id} with a peer outside the computation"),
            ),
            _ => Err(super::wrong_kind(e, "inet socket")),
        }
    }
}

/// Describes fd `fd` of `pid` (socket inode `ino`) when it is an internal
/// TCP connection end, a UDP socket or one end of a named unix pair.
fn capture_fd(
    pid: HostPid,
    fd: i32,
    ino: u64,
    flags: i32,
    fdctx: &mut FdContext,
) -> io::Result<Option<FdKind>> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("socket fd {fd}: {e}"));
    if let Some((id, end)) = fdctx.net.tcp_pair(ino) {
        let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
        let raw = dup.as_raw_fd();
        let mut queued = Vec::new();
        if fdctx.claim_socket_queue(ino) {
            queued = crate::resources::unix::peek_queue(&dup, libc::SOCK_STREAM)
                .map_err(ctx)?
                .concat();
            if let Some(extra) = fdctx.net.tcp_extra.get(&ino) {
                queued.extend_from_slice(extra);
            }
        }
        let state = netsys::tcp_state(raw).map_err(ctx)?;
        let missing = || ctx(io::Error::other("the connection lost its address"));
        return Ok(Some(FdKind::TcpConn {
            id,
            end,
            family: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
            local: netsys::sockaddr(raw, false)?.ok_or_else(missing)?,
            peer: netsys::sockaddr(raw, true)?.ok_or_else(missing)?,
            flags,
            queued,
            shut_wr: matches!(state, TCP_FIN_WAIT1 | TCP_FIN_WAIT2),
            nodelay: netsys::int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0,
            keepalive: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0,
            reuseaddr: fdctx.net.tcp_reuse.get(&ino).copied().unwrap_or(false),
            rcvbuf: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF)?,
            sndbuf: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF)?,
        }));
    }
    if let Some(r) = fdctx.net.remote.get(&ino).cloned() {
        let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
        let claim = fdctx.claim_socket_queue(ino);
        let reuse = fdctx.net.tcp_reuse.get(&ino).copied().unwrap_or(false);
        return remote::capture(&dup, ino, flags, &r, claim, reuse)
            .map(Some)
            .map_err(ctx);
    }
    if fdctx.net.outside.contains_key(&ino) {
        let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
        let raw = dup.as_raw_fd();
        // A reset socket is not peeked: a peek past its queue would take
        // the pending ECONNRESET the program has yet to see.
        let reset = netsys::tcp_state(raw).map_err(ctx)? == netsys::TCP_CLOSE;
        let queued = if !reset && fdctx.claim_socket_queue(ino) {
            crate::resources::unix::peek_queue(&dup, libc::SOCK_STREAM).map_err(ctx)?
        } else {
            Vec::new()
        };
        return Ok(Some(FdKind::OutsidePeer {
            id: ino,
            family: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
            sotype: libc::SOCK_STREAM,
            local: netsys::sockaddr(raw, false)
                .map_err(ctx)?
                .unwrap_or_default(),
            peer: netsys::sockaddr(raw, true).ok().flatten(),
            flags,
            queued,
        }));
    }
    if fdctx.net.udp.contains(&ino) {
        let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
        let raw = dup.as_raw_fd();
        let queued = if fdctx.claim_socket_queue(ino) {
            netsys::peek_datagrams(&dup).map_err(ctx)?
        } else {
            Vec::new()
        };
        return Ok(Some(FdKind::Udp {
            id: ino,
            family: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
            local: netsys::sockaddr(raw, false)
                .map_err(ctx)?
                .ok_or_else(|| ctx(io::Error::other("no address")))?,
            peer: netsys::sockaddr(raw, true).map_err(ctx)?,
            flags,
            queued,
            reuseaddr: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR)? != 0,
        }));
    }
    if let Some((id, end, sotype)) = fdctx.unix_pair(ino).filter(|_| fdctx.is_named_pair(ino)) {
        let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
        let queued = if fdctx.claim_socket_queue(ino) {
            crate::resources::unix::peek_queue(&dup, sotype).map_err(ctx)?
        } else {
            Vec::new()
        };
        return Ok(Some(FdKind::UnixNamedPair {
            id,
            end,
            sotype,
            flags,
            queued,
            name: netsys::sockaddr(dup.as_raw_fd(), false)
                .map_err(ctx)?
                .unwrap_or_default(),
        }));
    }
    Ok(None)
}
