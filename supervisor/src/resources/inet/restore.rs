//! Restart side of TCP connections, UDP sockets and named unix pairs.
//!
//! nsinit restores every process of a computation on one host, so both ends
//! of an internal connection are recreated here and joined locally; the
//! coordinator's name service is not needed.
//!
//! - **TCP**: a temporary listener is bound to end 1's original address
//!   (with `SO_REUSEADDR`), a socket bound to end 0's original address
//!   connects to it, and the accepted socket becomes end 1: both ends keep
//!   their `getsockname`/`getpeername`. When an address cannot be bound
//!   (the port is taken by someone else), a fresh port of the same address
//!   is used and a warning printed. Each end's saved bytes are sent from the
//!   other end (buffers are enlarged first for large queues), then ends that had shut down writing do so again, and
//!   `TCP_NODELAY` and `SO_KEEPALIVE` are set as saved; `SO_REUSEADDR` stays
//!   on until every listener of the computation is bound again (an accepted
//!   connection restored on a listener's port would otherwise keep it from
//!   binding), then the saved value is set (`NetSockets`'s `Drop`). All of
//!   this happens before any listener of the computation is bound again (a
//!   temporary listener cannot share a port with a real one). A port held
//!   by the killed computation's closing sockets (TIME_WAIT...) is freed
//!   by destroying them when we may (root, `kernel::tcpdiag`).
//! - **UDP**: every socket is recreated bound to its address and connected
//!   to its peer; then queued datagrams are sent again to their socket from
//!   the restored socket that had their source address (or a temporary
//!   socket bound to it), so a connected receiver accepts them.
//! - **Named unix pairs**: a temporary listener takes the named end's name
//!   (a stale socket file at the path is replaced; a path that did not
//!   exist is removed again afterwards), the other end connects (bound to
//!   its own name if it had one) and the accepted socket becomes the named
//!   end. If the name cannot be bound, a `socketpair` is used instead and
//!   only the names differ (a warning says so).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use dmtcp_image::{FdEntry, FdKind};

use crate::kernel::netsys;

const WAIT: Duration = Duration::from_secs(5);

fn warn(msg: String) {
    eprintln!("dmtcp-restart: warning: {msg}");
}

/// The TCP, UDP and named unix sockets of a computation, made once each.
#[derive(Default)]
pub struct NetSockets {
    tcp: HashMap<(u64, u8), OwnedFd>,
    udp: HashMap<u64, OwnedFd>,
    unix: HashMap<(u64, u8), OwnedFd>,
    /// Sockets whose peer was outside the computation, reset, by id.
    dropped: HashMap<u64, OwnedFd>,
    /// The `SO_REUSEADDR` each TCP end had: the ends keep it on until the
    /// restore is over (every fd open, every listener bound again), so that
    /// a listener whose accepted connections are restored before it can
    /// still bind its port; then [`Drop`] puts the program's values back.
    tcp_reuse: HashMap<(u64, u8), bool>,
    /// Ends whose peer is in another launch, rebuilt by `dmtcp-restart`
    /// (`inet::remote::rendezvous`) and inherited, by socket id, with the
    /// program's `SO_REUSEADDR`.
    remote: HashMap<u64, (OwnedFd, bool)>,
}

impl Drop for NetSockets {
    /// The end of the restore (nsinit drops the objects once every fd of
    /// every process is open): the programs' own `SO_REUSEADDR` values go
    /// back on their connections (the processes hold duplicates of these
    /// very sockets).
    fn drop(&mut self) {
        for (key, s) in &self.tcp {
            let on = self.tcp_reuse.get(key).copied().unwrap_or(false);
            if let Err(e) = reuse(s, on) {
                tracing::debug!("tcp connection {}: SO_REUSEADDR: {e}", key.0);
            }
        }
        for (id, (s, on)) in &self.remote {
            if let Err(e) = reuse(s, *on) {
                tracing::debug!("tcp connection {id}: SO_REUSEADDR: {e}");
            }
        }
    }
}

/// What the image says about one end of a connection (from whichever fd
/// of it carries the queue).
#[derive(Clone, Default)]
struct End<'a> {
    family: i32,
    local: &'a [u8],
    queued: &'a [u8],
    shut_wr: bool,
    nodelay: bool,
    keepalive: bool,
    reuseaddr: bool,
    bufs: (i32, i32),
    messages: &'a [Vec<u8>],
}

impl NetSockets {
    pub fn create(entries: &[FdEntry]) -> io::Result<NetSockets> {
        let mut net = NetSockets::default();
        let mut tcp: HashMap<u64, [Option<End>; 2]> = HashMap::new();
        let mut unix: HashMap<u64, (i32, [Option<End>; 2])> = HashMap::new();
        let mut udp: Vec<&FdEntry> = Vec::new();
        for e in entries {
            match &e.kind {
                FdKind::TcpConn {
                    id,
                    end,
                    family,
                    local,
                    queued,
                    shut_wr,
                    nodelay,
                    keepalive,
                    reuseaddr,
                    rcvbuf,
                    sndbuf,
                    ..
                } => {
                    let slot =
                        &mut tcp.entry(*id).or_insert([None, None])[usize::from(*end).min(1)];
                    if slot.as_ref().is_none_or(|s| s.queued.is_empty()) {
                        *slot = Some(End {
                            family: *family,
                            local,
                            queued,
                            shut_wr: *shut_wr,
                            nodelay: *nodelay,
                            keepalive: *keepalive,
                            reuseaddr: *reuseaddr,
                            bufs: (*rcvbuf, *sndbuf),
                            messages: &[],
                        });
                    }
                }
                FdKind::UnixNamedPair {
                    id,
                    end,
                    sotype,
                    queued,
                    name,
                    ..
                } => {
                    let slot = &mut unix.entry(*id).or_insert((*sotype, [None, None])).1
                        [usize::from(*end).min(1)];
                    if slot.as_ref().is_none_or(|s| s.messages.is_empty()) {
                        *slot = Some(End {
                            local: name,
                            messages: queued,
                            ..End::default()
                        });
                    }
                }
                FdKind::TcpRemote {
                    id,
                    key,
                    inherited,
                    reuseaddr,
                    ..
                } => {
                    if net.remote.contains_key(id) {
                        continue;
                    }
                    if *inherited < 0 {
                        return Err(io::Error::other(format!(
                            "fd {}: tcp connection {key} (peer in another launch) was not rebuilt",
                            e.fd
                        )));
                    }
                    let s = crate::kernel::sys::adopt_inherited(*inherited)?;
                    net.remote.insert(*id, (s, *reuseaddr));
                }
                FdKind::Udp { .. } => udp.push(e),
                FdKind::OutsidePeer {
                    id,
                    family,
                    sotype,
                    local,
                    peer,
                    queued,
                    ..
                } => {
                    // Another fd of the same socket is made again only if
                    // it carries the queue.
                    if net.dropped.contains_key(id) && queued.is_empty() {
                        continue;
                    }
                    let s = dropped_socket(*family, *sotype, local, peer.as_deref(), queued)
                        .map_err(|err| {
                            io::Error::new(
                                err.kind(),
                                format!("fd {} (peer outside the computation): {err}", e.fd),
                            )
                        })?;
                    net.dropped.insert(*id, s);
                }
                _ => {}
            }
        }
        for (id, ends) in tcp {
            let [Some(a), Some(b)] = ends else {
                return Err(io::Error::other(format!(
                    "tcp connection {id}: only one end is in the images"
                )));
            };
            let pair = tcp_pair(&a, &b)
                .map_err(|e| io::Error::new(e.kind(), format!("tcp connection {id}: {e}")))?;
            let [s0, s1] = pair;
            net.tcp.insert((id, 0), s0);
            net.tcp.insert((id, 1), s1);
            net.tcp_reuse.insert((id, 0), a.reuseaddr);
            net.tcp_reuse.insert((id, 1), b.reuseaddr);
        }
        for (id, (sotype, ends)) in unix {
            let [Some(a), Some(b)] = ends else {
                return Err(io::Error::other(format!(
                    "unix connection {id}: only one end is in the images"
                )));
            };
            let [s0, s1] = unix_pair(id, sotype, &a, &b)
                .map_err(|e| io::Error::new(e.kind(), format!("unix connection {id}: {e}")))?;
            net.unix.insert((id, 0), s0);
            net.unix.insert((id, 1), s1);
        }
        net.create_udp(&udp)?;
        Ok(net)
    }

    fn create_udp(&mut self, entries: &[&FdEntry]) -> io::Result<()> {
        // Actual local address of each socket, for re-queueing.
        let mut locals: Vec<(u64, Vec<u8>)> = Vec::new();
        for e in entries {
            let FdKind::Udp {
                id,
                family,
                local,
                peer,
                reuseaddr,
                ..
            } = &e.kind
            else {
                continue;
            };
            if self.udp.contains_key(id) {
                continue;
            }
            let s = udp_socket(*family, local, peer.as_deref(), *reuseaddr).map_err(|err| {
                io::Error::new(err.kind(), format!("udp socket fd {}: {err}", e.fd))
            })?;
            if let Some(a) = netsys::sockaddr(s.as_raw_fd(), false)? {
                locals.push((*id, a));
            }
            self.udp.insert(*id, s);
        }
        for e in entries {
            let FdKind::Udp { id, queued, .. } = &e.kind else {
                continue;
            };
            let Some(to) = locals.iter().find(|(i, _)| i == id).map(|(_, a)| a) else {
                continue;
            };
            let to = netsys::loopback_if_any(to);
            for (from, data) in queued {
                let sender = locals
                    .iter()
                    .find(|(_, a)| a == from || netsys::loopback_if_any(a) == *from)
                    .and_then(|(i, _)| self.udp.get(i));
                let result = match sender {
                    Some(s) => netsys::send_to(s, data, &to),
                    None => udp_socket(netsys::family(from), from, None, true)
                        .and_then(|t| netsys::send_to(&t, data, &to)),
                };
                if let Err(err) = result {
                    warn(format!(
                        "fd {}: a queued UDP datagram from {} is dropped: {err}",
                        e.fd,
                        netsys::describe(from)
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn tcp(&self, id: u64, end: u8) -> Option<&OwnedFd> {
        self.tcp.get(&(id, end))
    }

    pub fn udp(&self, id: u64) -> Option<&OwnedFd> {
        self.udp.get(&id)
    }

    pub fn unix(&self, id: u64, end: u8) -> Option<&OwnedFd> {
        self.unix.get(&(id, end))
    }
}

impl NetSockets {
    pub fn dropped(&self, id: u64) -> Option<&OwnedFd> {
        self.dropped.get(&id)
    }

    pub fn remote(&self, id: u64) -> Option<&OwnedFd> {
        self.remote.get(&id).map(|(s, _)| s)
    }
}

/// A socket whose peer is gone, standing for one whose peer was outside
/// the computation: what a program sees of a connection dropped while it
/// was not running. `queued` is read first.
///
/// - TCP: a connection on loopback made here, its far end closed with
///   `SO_LINGER {1, 0}` so it sends a reset: the kept end is a real TCP
///   socket in the reset state (reads give the queued bytes, then
///   `ECONNRESET` once, then end of file; writes `ECONNRESET`, then `EPIPE`;
///   poll and epoll report `POLLIN | POLLHUP | POLLRDHUP` and `POLLERR`
///   until the error is read). The kept end is the accepted one, bound to
///   the original local address when it can be bound (otherwise loopback,
///   a fresh port); the far end connects from the original peer address
///   when it can (otherwise a fresh loopback port). The kept end keeps
///   `SO_REUSEADDR` on, so it never holds a restored listener's port.
/// - unix: a `socketpair` of the same type whose other end is closed after
///   the queue is written into it (reads give the queue, then end of file;
///   writes `EPIPE`; poll reports `POLLHUP`). Its name is not kept.
fn dropped_socket(
    family: i32,
    sotype: i32,
    local: &[u8],
    peer: Option<&[u8]>,
    queued: &[Vec<u8>],
) -> io::Result<OwnedFd> {
    if family == libc::AF_UNIX {
        let [kept, far] = crate::resources::unix::socketpair(sotype)?;
        crate::resources::unix::refill(&far, queued)?;
        drop(far);
        return Ok(kept);
    }
    if !matches!(family, libc::AF_INET | libc::AF_INET6) || sotype != libc::SOCK_STREAM {
        return Err(io::Error::other(format!(
            "family {family} type {sotype} cannot stand for a dropped connection"
        )));
    }
    let faithful = || -> io::Result<(OwnedFd, OwnedFd)> {
        let l = netsys::socket(family, libc::SOCK_STREAM)?;
        reuse(&l, true)?;
        netsys::bind(&l, local)?;
        reset_pair(&l, family, peer)
    };
    let (kept, far) = match faithful() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(
                "dropped connection at {}: {e}; loopback is used instead",
                netsys::describe(local)
            );
            let l = netsys::socket(family, libc::SOCK_STREAM)?;
            reuse(&l, true)?;
            netsys::bind(&l, &loopback(family))?;
            reset_pair(&l, family, None)?
        }
    };
    let data = queued.concat();
    netsys::send_all(&far, &data, WAIT)?;
    netsys::set_linger_reset(&far)?;
    drop(far);
    if !netsys::wait_hangup(&kept, WAIT) {
        return Err(io::Error::other("the reset did not arrive"));
    }
    Ok(kept)
}

/// Listens on `l` (bound), connects a socket to it (from `from` when that
/// can be bound) and returns (accepted end, connecting end).
fn reset_pair(l: &OwnedFd, family: i32, from: Option<&[u8]>) -> io::Result<(OwnedFd, OwnedFd)> {
    netsys::listen(l, 1)?;
    let at = netsys::sockaddr(l.as_raw_fd(), false)?.unwrap_or_default();
    let c = netsys::socket(family, libc::SOCK_STREAM)?;
    reuse(&c, true)?;
    if let Some(from) = from.and_then(|f| netsys::in_family(f, family)) {
        if netsys::bind(&c, &from).is_err() {
            netsys::bind(&c, &netsys::with_port0(&loopback(family)))?;
        }
    }
    netsys::connect(&c, &netsys::loopback_if_any(&at))?;
    let key = |a: Option<Vec<u8>>| a.as_deref().and_then(netsys::endpoint_key);
    let mine = key(netsys::sockaddr(c.as_raw_fd(), false)?);
    let s = loop {
        let s = netsys::accept(l, WAIT)?;
        if key(netsys::sockaddr(s.as_raw_fd(), true)?) == mine {
            break s;
        }
    };
    Ok((s, c))
}

/// 127.0.0.1 or ::1, port 0.
fn loopback(family: i32) -> Vec<u8> {
    let v4 = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
    let mut a = vec![0u8; 28];
    a[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    a[8..24].copy_from_slice(&v4);
    let mut a = netsys::in_family(&a, family).unwrap_or(a);
    if family == libc::AF_INET6 {
        a[8..24].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
    a
}

fn reuse(s: &OwnedFd, on: bool) -> io::Result<()> {
    netsys::set_int_opt(
        s.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        i32::from(on),
    )
}

/// Binds `s` to `addr`; when the killed computation's closing connections
/// (TIME_WAIT...) hold the port and we may destroy them (root), after
/// destroying them; else to a fresh port of the same address (warning).
fn bind_or_fresh(s: &OwnedFd, addr: &[u8], what: &str) -> io::Result<()> {
    match bind_freeing(s, addr) {
        Ok(()) => Ok(()),
        Err(e) if netsys::port(addr) != 0 => {
            warn(format!("{what}: {e}; a fresh port is used instead"));
            netsys::bind(s, &netsys::with_port0(addr))
        }
        Err(e) => Err(e),
    }
}

/// `bind`, tried once more after destroying the closing TCP sockets that
/// hold the port (nothing listening on it; see `kernel::tcpdiag`).
pub(super) fn bind_freeing(s: &OwnedFd, addr: &[u8]) -> io::Result<()> {
    match netsys::bind(s, addr) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && netsys::port(addr) != 0 => {
            match crate::kernel::tcpdiag::destroy_closing(netsys::port(addr)) {
                Ok(n) if n > 0 => netsys::bind(s, addr),
                _ => Err(e),
            }
        }
        r => r,
    }
}

fn udp_socket(
    family: i32,
    local: &[u8],
    peer: Option<&[u8]>,
    reuseaddr: bool,
) -> io::Result<OwnedFd> {
    let s = netsys::socket(family, libc::SOCK_DGRAM)?;
    reuse(&s, true)?;
    if netsys::port(local) != 0 {
        bind_or_fresh(&s, local, "udp socket")?;
    }
    if let Some(p) = peer {
        netsys::connect(&s, p)?;
    }
    reuse(&s, reuseaddr)?;
    Ok(s)
}

/// Connects end `a` (end 0) to end `b` (end 1) through a temporary
/// listener at `b`'s address; returns [end 0, end 1].
fn tcp_pair(a: &End, b: &End) -> io::Result<[OwnedFd; 2]> {
    let need = a.queued.len().max(b.queued.len());
    let l = netsys::socket(b.family, libc::SOCK_STREAM)?;
    reuse(&l, true)?;
    // The accepted end inherits the listener's buffer sizes.
    grow_buffers(&l, need);
    bind_or_fresh(&l, b.local, "tcp connection")?;
    netsys::listen(&l, 8)?;
    // End 0 may see the address in the other family (IPv4 client of a
    // dual-stack IPv6 listener).
    let at = netsys::sockaddr(l.as_raw_fd(), false)?.unwrap_or_default();
    let to = netsys::in_family(&at, a.family).ok_or_else(|| {
        io::Error::other(format!(
            "{} cannot be reached from family {}",
            netsys::describe(&at),
            a.family
        ))
    })?;
    let connect_from = |addr: &[u8]| -> io::Result<OwnedFd> {
        let c = netsys::socket(a.family, libc::SOCK_STREAM)?;
        reuse(&c, true)?;
        grow_buffers(&c, need);
        bind_freeing(&c, addr)?;
        netsys::connect(&c, &to)?;
        Ok(c)
    };
    let c = match connect_from(a.local) {
        Ok(c) => c,
        Err(e) => {
            warn(format!(
                "tcp connection {}: {e}; a fresh port is used instead",
                netsys::describe(a.local)
            ));
            connect_from(&netsys::with_port0(a.local))?
        }
    };
    let key = |a: Option<Vec<u8>>| a.as_deref().and_then(netsys::endpoint_key);
    let mine = key(netsys::sockaddr(c.as_raw_fd(), false)?);
    // Only our connection is wanted (anyone may connect to the port).
    let s = loop {
        let s = netsys::accept(&l, WAIT)?;
        if key(netsys::sockaddr(s.as_raw_fd(), true)?) == mine {
            break s;
        }
    };
    drop(l);
    netsys::send_all(&c, b.queued, WAIT)?;
    netsys::send_all(&s, a.queued, WAIT)?;
    for (sock, end) in [(&c, a), (&s, b)] {
        if end.shut_wr {
            netsys::shutdown_write(sock)?;
        }
        let raw = sock.as_raw_fd();
        netsys::set_int_opt(
            raw,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            i32::from(end.nodelay),
        )?;
        netsys::set_int_opt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            i32::from(end.keepalive),
        )?;
        // On until the restore is over (see `NetSockets::tcp_reuse`).
        reuse(sock, true)?;
        if need > GROW_ABOVE {
            // Back to the sizes of checkpoint time (the queue stays, the
            // window opens as the program reads): enlarged buffers kept
            // would let the queue grow at every checkpoint and restart.
            set_buffers(sock, end.bufs.0 / 2, end.bufs.1 / 2);
        }
    }
    Ok([c, s])
}

/// Queues larger than a fresh connection holds (receive window plus send
/// buffer) need larger buffers, set before connecting so the window scale
/// allows them: `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (with CAP_NET_ADMIN),
/// else `SO_RCVBUF`/`SO_SNDBUF` (capped by `rmem_max`/`wmem_max`). Best
/// effort: a refill that still does not fit fails with its own error. After
/// the refill such an end gets its checkpoint-time sizes back, fixed (no
/// longer autotuned).
pub(super) fn grow_buffers(s: &OwnedFd, need: usize) {
    if need <= GROW_ABOVE {
        return;
    }
    let want = i32::try_from(need + GROW_ABOVE).unwrap_or(i32::MAX);
    set_buffers(s, want, want);
}

/// Queues up to this size fit a fresh connection.
const GROW_ABOVE: usize = 64 * 1024;

/// `SO_RCVBUF`/`SO_SNDBUF` (forced when allowed), best effort.
fn set_buffers(s: &OwnedFd, rcv: i32, snd: i32) {
    for (force, plain, v) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, rcv),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, snd),
    ] {
        let raw = s.as_raw_fd();
        if v > 0 && netsys::set_int_opt(raw, libc::SOL_SOCKET, force, v).is_err() {
            let _ = netsys::set_int_opt(raw, libc::SOL_SOCKET, plain, v);
        }
    }
}

/// A name of a unix socket: `sun_path` bytes (empty when unnamed).
fn unix_path(name: &[u8]) -> &[u8] {
    name.get(2..).unwrap_or(&[])
}

/// The file system path of a path name (not abstract, not unnamed).
fn fs_path(name: &[u8]) -> Option<std::path::PathBuf> {
    let p = unix_path(name);
    if p.first().is_none_or(|&c| c == 0) {
        return None;
    }
    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
    Some(std::path::Path::new(std::ffi::OsStr::from_bytes(&p[..end])).to_path_buf())
}

/// Binds a unix socket to `name`, replacing a stale socket file; returns
/// whether a path was created that did not exist before.
fn bind_unix(s: &OwnedFd, name: &[u8]) -> io::Result<Option<std::path::PathBuf>> {
    let path = fs_path(name);
    let mut created = None;
    if let Some(p) = &path {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(p)?,
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a socket",
                    p.display()
                )))
            }
            Err(_) => created = Some(p.clone()),
        }
    }
    netsys::bind(s, name)?;
    Ok(created)
}

fn unix_pair(id: u64, sotype: i32, a: &End, b: &End) -> io::Result<[OwnedFd; 2]> {
    // The named end (end 1 when both are) is the one a listener accepted.
    let server_is_b = !unix_path(b.local).is_empty();
    let (srv, cli) = if server_is_b { (b, a) } else { (a, b) };
    let joined = (|| -> io::Result<(OwnedFd, OwnedFd)> {
        let l = netsys::socket(libc::AF_UNIX, sotype)?;
        let made = bind_unix(&l, srv.local)?;
        let result = (|| {
            netsys::listen(&l, 8)?;
            let c = netsys::socket(libc::AF_UNIX, sotype)?;
            if !unix_path(cli.local).is_empty() {
                bind_unix(&c, cli.local)?;
            }
            netsys::connect(&c, srv.local)?;
            let s = netsys::accept(&l, WAIT)?;
            Ok((c, s))
        })();
        if let Some(p) = made {
            let _ = std::fs::remove_file(p);
        }
        result
    })();
    let (c, s) = match joined {
        Ok(cs) => cs,
        Err(e) => {
            warn(format!(
                "unix connection {id} to {}: {e}; restored as a socket pair without names",
                netsys::describe(srv.local)
            ));
            let [x, y] = crate::resources::unix::socketpair(sotype)?;
            (x, y)
        }
    };
    crate::resources::unix::refill(&c, srv.messages)?;
    crate::resources::unix::refill(&s, cli.messages)?;
    Ok(if server_is_b { [c, s] } else { [s, c] })
}
