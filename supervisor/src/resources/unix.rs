//! Unix sockets whose both ends are inside the computation.
//!
//! Capture: `sock_diag` netlink (`NETLINK_SOCK_DIAG`, `AF_UNIX`, looked up
//! by inode) tells a socket's type, state, name and peer inode, so the two
//! ends of a socketpair are matched exactly. The bytes waiting to be read on
//! each end are peeked on a `pidfd_getfd` duplicate without consuming them
//! (`MSG_PEEK` with `SO_PEEK_OFF`, which is put back as found), one message
//! at a time for datagram and seqpacket sockets so boundaries survive.
//!
//! Restore: each pair is made once with `socketpair`, and each end's queued
//! messages are sent from the other end, so they land in its receive queue
//! in order.
//!
//! Not handled here: listeners (`listener`, `listen_again` below),
//! connected pairs with a name (`resources::inet`), and non-unix
//! families. A peer outside the computation or an unconnected socket stays
//! `Unsupported`. File descriptors in flight (`SCM_RIGHTS`) and
//! credentials are dropped with a warning; zero-length datagrams in a queue
//! cannot be seen by a peek with an offset and are lost.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;

use dmtcp_image::{FdEntry, FdKind};

use crate::kernel::sockdiag::socket_inode;
use crate::kernel::sockdiag::{os_err, peek_off, set_peek_off};
use crate::resources::fdshare::FdContext;
use crate::resources::{FdObjects, FdResource, OpenFd};

/// One `recvmsg(MSG_PEEK | MSG_DONTWAIT [| MSG_TRUNC])` into `buf`, no
/// control buffer (so fds in flight are not installed here). With `trunc`
/// (datagrams) the length returned is the whole message's.
/// Returns (length, control data was dropped) or `None` when empty.
fn peek_one(fd: RawFd, buf: &mut [u8], trunc: bool) -> io::Result<Option<(usize, bool)>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero means no name, no control.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: msg points at one live iovec over buf; no name or control buffer.
    let n = unsafe {
        libc::recvmsg(
            fd,
            &mut msg,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | if trunc { libc::MSG_TRUNC } else { 0 },
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(None);
        }
        return Err(io::Error::new(e.kind(), format!("recvmsg(MSG_PEEK): {e}")));
    }
    Ok(Some((n as usize, msg.msg_flags & libc::MSG_CTRUNC != 0)))
}

/// Everything waiting to be read on `sock` (a duplicate of a frozen
/// process's socket), not consumed: one chunk for a stream socket, one
/// entry per message otherwise. `SO_PEEK_OFF` is left as found.
pub fn peek_queue(sock: &OwnedFd, sotype: i32) -> io::Result<Vec<Vec<u8>>> {
    let fd = sock.as_raw_fd();
    let saved = peek_off(fd)?;
    set_peek_off(fd, 0)?;
    let result = peek_all(fd, sotype);
    let restored = set_peek_off(fd, saved);
    let out = result?;
    restored?;
    Ok(out)
}

fn peek_all(fd: RawFd, sotype: i32) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut dropped_control = false;
    if sotype == libc::SOCK_STREAM {
        let mut chunk = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        // The peek offset advances with every peek, so this walks the queue.
        while let Some((n, ctrunc)) = peek_one(fd, &mut buf, false)? {
            if n == 0 {
                break; // the peer shut down and nothing is left
            }
            dropped_control |= ctrunc;
            chunk.extend_from_slice(&buf[..n.min(buf.len())]);
        }
        if !chunk.is_empty() {
            out.push(chunk);
        }
    } else {
        let mut buf = vec![0u8; 64 * 1024];
        let mut off: usize = 0;
        while let Some((n, ctrunc)) = peek_one(fd, &mut buf, true)? {
            if n > buf.len() {
                // Truncated: peek this message again with room for all of it.
                set_peek_off(fd, off as libc::c_int)?;
                buf.resize(n, 0);
                continue;
            }
            if n == 0 {
                // A zero-length message does not move the peek offset.
                break;
            }
            dropped_control |= ctrunc;
            out.push(buf[..n].to_vec());
            off += n;
        }
    }
    if dropped_control {
        crate::resources::checkpoint_warning(
            "a unix socket has file descriptors or credentials in flight; they are not saved"
                .to_string(),
        );
    }
    Ok(out)
}

/// A connected `socketpair(AF_UNIX, sotype)`, both ends close-on-exec.
pub fn socketpair(sotype: i32) -> io::Result<[OwnedFd; 2]> {
    let mut fds = [0; 2];
    // SAFETY: fds is a live [c_int; 2] the kernel fills.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            sotype | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(os_err(format!("socketpair(AF_UNIX, type {sotype})")));
    }
    // SAFETY: socketpair just returned two fresh fds that nothing else owns.
    Ok(unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] })
}

/// Sends `messages` through `from` so they wait, in order and with their
/// boundaries, in the receive queue of its peer. Never blocks.
pub fn refill(from: &OwnedFd, messages: &[Vec<u8>]) -> io::Result<()> {
    // The queue fitted in the original pair, but its sender may have had a
    // larger SO_SNDBUF than this new one: make room (best effort; the kernel
    // caps it at wmem_max).
    let want = messages.iter().map(|m| m.len() + 1024).sum::<usize>();
    let want = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
    let mut cur: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: cur and len are live and sized for one c_int.
    let got = unsafe {
        libc::getsockopt(
            from.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &mut cur as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if got == 0 && cur < want {
        // SAFETY: want is a live c_int of the size given; failure keeps the
        // default size and the sends below report any shortfall.
        unsafe {
            libc::setsockopt(
                from.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &want as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    for m in messages {
        let mut done = 0;
        loop {
            let rest = &m[done..];
            // SAFETY: rest is a live byte slice of the length given.
            let n = unsafe {
                libc::send(
                    from.as_raw_fd(),
                    rest.as_ptr() as *const libc::c_void,
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                return Err(os_err(format!(
                    "refilling a unix socket ({} of {} bytes of a message sent)",
                    done,
                    m.len()
                )));
            }
            done += n as usize;
            if done >= m.len() {
                break;
            }
        }
    }
    Ok(())
}

/// A listening socket's family, type and bound address, read from a
/// duplicate of the target's fd; `None` if it is not listening.
pub fn listener(sock: &OwnedFd) -> io::Result<Option<(i32, i32, Vec<u8>)>> {
    let int_opt = |opt: libc::c_int| -> io::Result<i32> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: v and len are live locals of the sizes getsockopt expects.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(v)
        }
    };
    if int_opt(libc::SO_ACCEPTCONN)? == 0 {
        return Ok(None);
    }
    let family = int_opt(libc::SO_DOMAIN)?;
    let sotype = int_opt(libc::SO_TYPE)?;
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss/len describe a live buffer large enough for any address.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote len (<= sizeof ss) bytes into ss.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    };
    Ok(Some((family, sotype, bytes.to_vec())))
}

/// How long a listener's restore waits for TIME_WAIT connections on its
/// port to end: `DMTCP_LISTEN_WAIT` seconds, default 65 (TIME_WAIT lasts 60).
fn linger_wait() -> std::time::Duration {
    let secs = std::env::var("DMTCP_LISTEN_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(65);
    std::time::Duration::from_secs(secs)
}

/// The TCP sockets on local port `port` in this network namespace
/// (`/proc/net/tcp` and `tcp6`): state (hex, as the kernel writes it),
/// local and remote address (hex) and inode.
fn tcp_sockets_on(port: u16) -> Vec<(String, String, String, u64)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state)) = (cols.get(1), cols.get(2), cols.get(3))
            else {
                continue;
            };
            let p = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if p == Some(port) {
                let inode = cols.get(9).and_then(|i| i.parse().ok()).unwrap_or(0);
                out.push((
                    state.to_string(),
                    local.to_string(),
                    remote.to_string(),
                    inode,
                ));
            }
        }
    }
    out
}

/// What holds local port `port`, for an error: e.g. `LISTEN 0100007F:1F90
/// -> 00000000:0000 inode 123 (pid 45 sshd)`.
pub(crate) fn port_holders(port: u16) -> String {
    const STATES: [&str; 12] = [
        "?",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
    ];
    let found = tcp_sockets_on(port);
    if found.is_empty() {
        return "no TCP socket shows on that port".into();
    }
    let owners = crate::kernel::procfs::socket_owners(found.iter().map(|f| f.3));
    found
        .iter()
        .map(|(state, local, remote, inode)| {
            let st = usize::from_str_radix(state, 16)
                .ok()
                .and_then(|i| STATES.get(i))
                .unwrap_or(&"?");
            match owners.get(inode) {
                Some((pid, comm)) => {
                    format!("{st} {local} -> {remote} inode {inode} (pid {pid} {comm})")
                }
                None => format!("{st} {local} -> {remote} inode {inode}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether local port `port` has closing TCP sockets (TIME_WAIT, FIN_WAIT,
/// CLOSING, LAST_ACK) and no listener (`/proc/net/tcp` and `tcp6`, this
/// network namespace): the port will come free by itself.
fn lingering_only(port: u16) -> bool {
    let mut lingering = false;
    for (state, ..) in tcp_sockets_on(port) {
        // TCP states: 04 FIN_WAIT1, 05 FIN_WAIT2, 06 TIME_WAIT, 09
        // LAST_ACK, 0B CLOSING: orphans that end by themselves; 0A
        // LISTEN: someone else has the port.
        match state.as_str() {
            "04" | "05" | "06" | "09" | "0B" => lingering = true,
            "0A" => return false,
            _ => {}
        }
    }
    lingering
}

/// Recreates a listening socket at `addr` (a unix socket file left by the
/// dead original is replaced). A TCP port held only by connections of the
/// old computation that are still closing is waited for (see
/// [`lingering_only`]), with one line saying so.
pub fn listen_again(family: i32, sotype: i32, addr: &[u8], backlog: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers and returns a fresh fd or -1.
    let fd = unsafe { libc::socket(family, sotype | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if family == libc::AF_INET || family == libc::AF_INET6 {
        let one: libc::c_int = 1;
        // SAFETY: one is a live c_int of the size we pass.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    if family == libc::AF_UNIX && addr.len() > 3 && addr[2] != 0 {
        // A path name: the old socket file is in the way.
        let path: Vec<u8> = addr[2..].iter().copied().take_while(|&c| c != 0).collect();
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(&path));
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(p);
        }
    }
    let inet = family == libc::AF_INET || family == libc::AF_INET6;
    let deadline = std::time::Instant::now() + linger_wait();
    // Sockets of the killed computation may still be going away (not yet
    // shown as closing) for a moment after its processes died.
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut said = false;
    let mut tried_v6only = false;
    let r = loop {
        // SAFETY: addr holds a sockaddr of addr.len() bytes as getsockname gave it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                addr.as_ptr().cast(),
                addr.len() as libc::socklen_t,
            )
        };
        let busy = r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EADDRINUSE);
        if busy && family == libc::AF_INET6 && !tried_v6only {
            // An IPv6 listener that shared its port with an IPv4 one (Open
            // MPI's TCP transport) was IPv6-only: the IPv4 listener, bound
            // again first, holds the port for both families otherwise.
            tried_v6only = true;
            if crate::kernel::netsys::set_int_opt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                1,
            )
            .is_ok()
            {
                continue;
            }
        }
        if !(busy && inet && std::time::Instant::now() < deadline) {
            break r;
        }
        // Connections the old computation closed before its checkpoint,
        // without SO_REUSEADDR, hold the port until their TIME_WAIT ends
        // (60 s at most); nobody else listening on it: wait for them.
        let port = crate::kernel::netsys::port(addr);
        if !lingering_only(port) {
            if std::time::Instant::now() < settle {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            break r;
        }
        // Root: the old computation's closing sockets are destroyed
        // (sock_diag SOCK_DESTROY) and the bind tried again at once.
        match crate::kernel::tcpdiag::destroy_closing(port) {
            Ok(n) if n > 0 => {
                tracing::debug!(
                    "port {port}: destroyed {n} closing socket(s) of the old computation"
                );
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("port {port}: cannot destroy closing sockets: {e}"),
        }
        if !said {
            eprintln!(
                "dmtcp-restart: port {port} is held by connections of the old computation in TIME_WAIT (the program did not set SO_REUSEADDR, and destroying them needs CAP_NET_ADMIN); waiting for them to end (up to {} s)",
                linger_wait().as_secs()
            );
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::EADDRINUSE) && inet {
            format!(
                " (port {} holds: {})",
                crate::kernel::netsys::port(addr),
                port_holders(crate::kernel::netsys::port(addr))
            )
        } else {
            String::new()
        };
        return Err(io::Error::new(
            e.kind(),
            format!("binding the listening socket again: {e}{hint}"),
        ));
    }
    // SAFETY: listen on our own socket.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Unix socket pairs inside the computation, and listening sockets (unix
/// or TCP) recreated bound to their address.
pub struct Unix;

impl FdResource for Unix {
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        let (pid, fd, target, flags) = (f.pid, f.fd, f.target, f.flags);
        if let Some((ino, (id, end, sotype))) =
            socket_inode(target).and_then(|i| Some((i, cx.unix_pair(i)?)))
        {
            let queued = if cx.claim_socket_queue(ino) {
                let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
                peek_queue(&dup, sotype).map_err(|e| {
                    io::Error::new(e.kind(), format!("reading unix socket fd {fd}: {e}"))
                })?
            } else {
                Vec::new()
            };
            return Ok(Some(FdKind::UnixPair {
                id,
                end,
                sotype,
                flags,
                queued,
            }));
        }
        let Some(dup) = target
            .starts_with("socket:")
            .then(|| crate::kernel::sys::steal_fd(pid.0, fd).ok())
            .flatten()
        else {
            return Ok(None);
        };
        if let Some((family, sotype, addr)) = listener(&dup).ok().flatten() {
            return Ok(Some(FdKind::Listener {
                family,
                sotype,
                addr,
                flags,
                backlog: 128,
            }));
        }
        outside_unix(pid, fd, target, flags, &dup, cx)
    }

    fn restore(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd> {
        match &e.kind {
            FdKind::UnixPair { id, end, flags, .. } => {
                let sock = objects
                    .pairs
                    .0
                    .get(id)
                    .and_then(|p| p.get(usize::from(*end)))
                    .ok_or_else(|| {
                        io::Error::other(format!("unix pair {id} end {end} was not created"))
                    })?;
                let fd = crate::kernel::sys::dup_above(sock.as_raw_fd(), 0)?;
                // SAFETY: fcntl on an fd we own; a socket end is one description
                // per end, so its status flags are this end's.
                if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & libc::O_NONBLOCK) }
                    < 0
                {
                    let err = io::Error::last_os_error();
                    return Err(io::Error::new(
                        err.kind(),
                        format!("fcntl(F_SETFL) on unix pair {id}: {err}"),
                    ));
                }
                Ok(fd)
            }
            FdKind::Listener {
                family,
                sotype,
                addr,
                flags,
                backlog,
            } => {
                let fd = listen_again(*family, *sotype, addr, *backlog)?;
                // SAFETY: fcntl on an fd we own.
                unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & libc::O_NONBLOCK) };
                Ok(fd)
            }
            _ => Err(super::wrong_kind(e, "unix socket")),
        }
    }
}

/// A connected unix stream or seqpacket socket whose peer is not in the
/// computation (outside it, or closed): on fds 0-2 the restarting tool's
/// own fd takes its place (a journal or a supervisor's socket as stdout);
/// elsewhere it is saved as dropped ([`FdKind::OutsidePeer`]) with the
/// bytes waiting to be read, or the checkpoint is refused with
/// `DMTCP_OUTSIDE_PEERS=refuse`.
fn outside_unix(
    pid: crate::kernel::pid::HostPid,
    fd: i32,
    target: &str,
    flags: i32,
    dup: &OwnedFd,
    cx: &mut FdContext,
) -> io::Result<Option<FdKind>> {
    use crate::kernel::netsys;
    let raw = dup.as_raw_fd();
    let opt = |o| netsys::int_opt(raw, libc::SOL_SOCKET, o);
    if opt(libc::SO_DOMAIN).ok() != Some(libc::AF_UNIX) {
        return Ok(None);
    }
    let sotype = opt(libc::SO_TYPE)?;
    if !matches!(sotype, libc::SOCK_STREAM | libc::SOCK_SEQPACKET) {
        return Ok(None);
    }
    let Ok(Some(peer)) = netsys::sockaddr(raw, true) else {
        return Ok(None); // not connected
    };
    if fd <= 2 {
        return Ok(Some(FdKind::Inherit {
            from: fd,
            what: target.to_string(),
        }));
    }
    let local = netsys::sockaddr(raw, false)?.unwrap_or_default();
    let what = format!(
        "unix socket {} connected to {}, peer outside the computation (or closed)",
        netsys::describe(&local),
        netsys::describe(&peer)
    );
    crate::resources::outside_peer(pid, fd, &what)?;
    let ino = socket_inode(target).unwrap_or(0);
    let queued = if cx.claim_socket_queue(ino) {
        peek_queue(dup, sotype)
            .map_err(|e| io::Error::new(e.kind(), format!("reading unix socket fd {fd}: {e}")))?
    } else {
        Vec::new()
    };
    Ok(Some(FdKind::OutsidePeer {
        id: ino,
        family: libc::AF_UNIX,
        sotype,
        local,
        peer: Some(peer),
        flags,
        queued,
    }))
}

/// The fds of `pid` among `fds` whose socket has `SO_PASSCRED` set (it
/// receives its senders' credentials with every message): the option is
/// not part of any fd kind, and a restart sets it again
/// ([`set_passcred`]). A socket that cannot be read is left out.
pub fn passcred_fds(pid: crate::kernel::pid::HostPid, fds: &[FdEntry]) -> Vec<i32> {
    fds.iter()
        .filter(|e| {
            matches!(
                e.kind,
                FdKind::UnixPair { .. }
                    | FdKind::UnixNamedPair { .. }
                    | FdKind::Listener { .. }
                    | FdKind::OutsidePeer { .. }
            )
        })
        .filter(|e| {
            crate::kernel::sys::steal_fd(pid.0, e.fd).is_ok_and(|dup| {
                crate::kernel::netsys::int_opt(dup.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED)
                    .is_ok_and(|v| v != 0)
            })
        })
        .map(|e| e.fd)
        .collect()
}

/// Sets `SO_PASSCRED` again on the restored fds `fds` (see
/// [`passcred_fds`]).
pub fn set_passcred(fds: &[i32]) -> io::Result<()> {
    for &fd in fds {
        crate::kernel::netsys::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
            .map_err(|e| io::Error::new(e.kind(), format!("fd {fd}: SO_PASSCRED: {e}")))?;
    }
    Ok(())
}

/// Unix socket pairs inside the computation by id, as [end 0, end 1].
#[derive(Default)]
pub struct Pairs(HashMap<u64, [OwnedFd; 2]>);

impl Pairs {
    /// Makes the pair of entry `e` if it is new and queues the messages
    /// recorded for its end.
    pub(crate) fn add(&mut self, e: &FdEntry) -> io::Result<()> {
        let FdKind::UnixPair {
            id,
            end,
            sotype,
            queued,
            ..
        } = &e.kind
        else {
            return Err(super::wrong_kind(e, "unix pair"));
        };
        self.create_pair(*id, *end, *sotype, queued)
            .map_err(|err| io::Error::new(err.kind(), format!("fd {}: {err}", e.fd)))
    }

    /// Makes pair `id` if it is new and queues `queued` for reading on end
    /// `end` (sent from the other end, so order and boundaries are kept).
    fn create_pair(&mut self, id: u64, end: u8, sotype: i32, queued: &[Vec<u8>]) -> io::Result<()> {
        if end > 1 {
            return Err(io::Error::other(format!("unix pair {id}: bad end {end}")));
        }
        let pair = match self.0.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(socketpair(sotype)?),
        };
        if !queued.is_empty() {
            refill(&pair[usize::from(1 - end)], queued)
                .map_err(|e| io::Error::new(e.kind(), format!("unix pair {id} end {end}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::sockdiag::{Diag, STATE_ESTABLISHED};

    #[test]
    fn diag_matches_socketpair_peers() {
        let [a, b] = socketpair(libc::SOCK_STREAM).unwrap();
        let ino = |fd: &OwnedFd| {
            let t = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
            socket_inode(t.to_str().unwrap()).unwrap()
        };
        let mut d = Diag::open().unwrap();
        let ia = d.unix(ino(&a)).unwrap().unwrap();
        assert_eq!(ia.peer, ino(&b));
        assert_eq!(ia.sotype, libc::SOCK_STREAM);
        assert_eq!(ia.state, STATE_ESTABLISHED);
        assert!(!ia.named);
        refill(&b, &[b"hello".to_vec()]).unwrap();
        assert_eq!(d.unix(ino(&a)).unwrap().unwrap().rqlen, 5);
        for t in [libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
            let [a, b] = socketpair(t).unwrap();
            let ia = d.unix(ino(&a)).unwrap().unwrap();
            assert_eq!(
                (ia.peer, ia.sotype, ia.state),
                (ino(&b), t, STATE_ESTABLISHED)
            );
        }
    }

    #[test]
    fn peek_keeps_queue_and_boundaries() {
        for t in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
            let [a, b] = socketpair(t).unwrap();
            let msgs = vec![b"one".to_vec(), vec![7u8; 100_000], b"three".to_vec()];
            refill(&b, &msgs).unwrap();
            let q1 = peek_queue(&a, t).unwrap();
            let q2 = peek_queue(&a, t).unwrap();
            assert_eq!(q1, q2, "type {t}: peeking twice");
            if t == libc::SOCK_STREAM {
                assert_eq!(q1, vec![msgs.concat()]);
            } else {
                assert_eq!(q1, msgs);
            }
            assert_eq!(peek_off(a.as_raw_fd()).unwrap(), -1);
        }
    }
}
