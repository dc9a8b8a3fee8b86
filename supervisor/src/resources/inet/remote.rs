//! TCP connections whose two ends are in different launches of the
//! computation (several `dmtcp-run` joined to one coordinator, or launches
//! on other hosts through ssh): found at checkpoint, rebuilt at restart,
//! both through the coordinator's name service. No TCP repair is needed
//! (it only reads bytes a sender still holds because its receiver's buffer
//! is full, as for connections inside one launch).
//!
//! **Checkpoint** (`roles/session.rs` drives it, every launch frozen):
//! - barrier `FdLeaderElection`: [`scan`] lists this launch's TCP ends whose
//!   peer is not in the launch; each is published under
//!   `tcpx-ckpt/<checkpoint>/<local end>><peer end>` with our launch id;
//! - barrier `Drain`: each end asks for `.../<peer end>><local end>`: a
//!   value means the peer is an end of another launch (the publications of
//!   every launch were in before any launch entered `Drain`). Then
//!   [`drain`] waits (bounded) until those ends have no bytes in flight, so
//!   that what each end sent is in its peer's receive queue, which the
//!   peer's launch peeks at `Checkpoint`; bytes held back by a full
//!   receiver are read from the sender's queue in repair mode (root) and
//!   saved as the sender's `unsent`;
//! - barrier `Checkpoint`: the capture saves such an end as
//!   [`FdKind::TcpRemote`] with its receive queue.
//!
//! An end's name is `ip:port` (`[ip]:port` for IPv6), prefixed with
//! `host!` for loopback addresses, which only mean something on one host.
//!
//! **Restart** ([`rendezvous`], in `dmtcp-restart` once it has joined the
//! coordinator and before nsinit opens any fd): of the two ends, the one
//! whose name sorts first listens. Every listening end binds its original
//! address when it can (else the address this host reaches the coordinator
//! from, a fresh port), listens and publishes `tcpx/<key>` = a random
//! token and its address; every connecting end waits for that publication
//! (`DMTCP_TCP_REJOIN_TIMEOUT`, 120 s), connects from its original address
//! when it can (else a fresh one) and sends the token; then every listening
//! end accepts the connection that brings its token. On each connection
//! both sides send their saved receive queue to the other; each side sends
//! back what it got (then its `unsent` bytes and, if it had shut down
//! writing, a FIN), so each end's receive queue holds exactly what it held
//! at checkpoint. Publishing all, then connecting all, then accepting all,
//! then exchanging on every connection at once keeps launches that wait on
//! each other in a ring from deadlocking. The sockets reach nsinit as
//! inherited fds (`inherited`), which it takes over.
//!
//! In place, `getsockname`/`getpeername` are unchanged when the original
//! addresses can be bound; after a migration they are the new host's.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use dmtcp_coordinator::client::Connection;
use dmtcp_image::FdKind;
use dmtcp_protocol::{FromCoordinator, ToCoordinator};

use crate::kernel::netsys::{self, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2};
use crate::kernel::pid::HostPid;

/// How long a frozen computation may wait for bytes in flight to be
/// acknowledged (as for connections inside one launch).
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Each read and write of the exchange at restart.
const IO_WAIT: Duration = Duration::from_secs(30);

/// A TCP end of this launch whose peer is not in the launch.
pub struct Candidate {
    pub ino: u64,
    pub pid: HostPid,
    pub fd: i32,
    dup: OwnedFd,
    pub local: Vec<u8>,
    pub peer: Vec<u8>,
    /// [`end_name`] of `local` and `peer`.
    pub lname: String,
    pub pname: String,
}

/// What the capture needs of an end whose peer is in another launch.
#[derive(Debug, Clone)]
pub struct RemoteEnd {
    pub key: String,
    pub listen: bool,
    pub peer_launch: String,
    pub unsent: Vec<u8>,
}

/// The name of a TCP end, the same in every launch: `ip:port`, loopback
/// addresses prefixed with `host!`.
pub fn end_name(addr: &[u8], host: &str) -> Option<String> {
    let (ip, port) = netsys::endpoint_key(addr)?;
    let v6 = Ipv6Addr::from(ip);
    let (shown, lo) = match v6.to_ipv4_mapped() {
        Some(v4) => (format!("{v4}:{port}"), v4.is_loopback()),
        None => (format!("[{v6}]:{port}"), v6.is_loopback()),
    };
    Some(if lo { format!("{host}!{shown}") } else { shown })
}

/// The key a checkpoint publishes an end under.
pub fn ckpt_key(id: u64, from: &str, to: &str) -> Vec<u8> {
    format!("tcpx-ckpt/{id}/{from}>{to}").into_bytes()
}

/// The connection's name at restart, the same on both ends.
pub fn conn_key(generation: u64, a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("tcpx/{generation}/{lo}/{hi}")
}

/// The TCP ends of the (frozen) processes `pids` whose peer is not one of
/// them, one per socket.
pub fn scan(pids: &[HostPid], host: &str) -> Vec<Candidate> {
    let mut ends: Vec<Candidate> = Vec::new();
    for &pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", pid.0)) else {
            continue;
        };
        for ent in dir.flatten() {
            let Some(fd) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(target) = std::fs::read_link(ent.path()) else {
                continue;
            };
            let Some(ino) = target
                .to_str()
                .and_then(crate::kernel::sockdiag::socket_inode)
            else {
                continue;
            };
            if ends.iter().any(|e| e.ino == ino) {
                continue;
            }
            if let Some(c) = examine_one(pid, fd, ino, host) {
                ends.push(c);
            }
        }
    }
    // Ends whose peer is in this launch are the inside path's.
    let here: std::collections::HashSet<(String, String)> = ends
        .iter()
        .map(|e| (e.lname.clone(), e.pname.clone()))
        .collect();
    ends.retain(|e| !here.contains(&(e.pname.clone(), e.lname.clone())));
    ends
}

fn examine_one(pid: HostPid, fd: i32, ino: u64, host: &str) -> Option<Candidate> {
    let dup = crate::kernel::sys::steal_fd(pid.0, fd).ok()?;
    let raw = dup.as_raw_fd();
    let opt = |o| netsys::int_opt(raw, libc::SOL_SOCKET, o).ok();
    if !matches!(opt(libc::SO_DOMAIN)?, libc::AF_INET | libc::AF_INET6)
        || opt(libc::SO_TYPE)? != libc::SOCK_STREAM
        || opt(libc::SO_PROTOCOL)? != libc::IPPROTO_TCP
        || opt(libc::SO_ACCEPTCONN)? != 0
    {
        return None;
    }
    let state = netsys::tcp_state(raw).ok()?;
    if !matches!(
        state,
        TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSE_WAIT
    ) {
        return None;
    }
    let local = netsys::sockaddr(raw, false).ok()??;
    let peer = netsys::sockaddr(raw, true).ok()??;
    Some(Candidate {
        ino,
        pid,
        fd,
        lname: end_name(&local, host)?,
        pname: end_name(&peer, host)?,
        dup,
        local,
        peer,
    })
}

/// Waits (frozen, bounded) until the ends `ends` have no bytes in flight;
/// returns, per socket inode, the bytes an end still holds because its
/// receiver's buffer is full (read in TCP repair mode: CAP_NET_ADMIN;
/// without it the checkpoint fails, as inside one launch).
pub fn drain(ends: &[&Candidate]) -> io::Result<HashMap<u64, Vec<u8>>> {
    let deadline = Instant::now() + DRAIN_WAIT;
    let mut last: Vec<usize> = Vec::new();
    let mut steady = 0;
    let mut waiting: Vec<(&Candidate, usize)>;
    loop {
        waiting = Vec::new();
        let mut in_flight = false;
        let mut unsent = Vec::new();
        for e in ends {
            let raw = e.dup.as_raw_fd();
            let n = netsys::unacked(raw)?;
            if n > 0 {
                let u = netsys::unsent(raw)?;
                in_flight |= n > u;
                unsent.push(u);
                waiting.push((e, n));
            }
        }
        steady = if !in_flight && unsent == last {
            steady + 1
        } else {
            0
        };
        last = unsent;
        if waiting.is_empty() || steady >= 10 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut held = HashMap::new();
    for (e, n) in waiting {
        let bytes = netsys::peek_send_queue(&e.dup).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "pid {} fd {}: TCP connection {} -> {} (peer in another launch): {n} bytes sent are not yet in the receiver's queue (its buffer is full) and cannot be read without CAP_NET_ADMIN ({err}); checkpoint again once the receiver reads",
                    e.pid.0, e.fd, e.lname, e.pname
                ),
            )
        })?;
        held.insert(e.ino, bytes);
    }
    Ok(held)
}

/// The capture of one end found to have its peer in another launch.
pub fn capture(
    dup: &OwnedFd,
    ino: u64,
    flags: i32,
    remote: &RemoteEnd,
    claim_queue: bool,
    reuseaddr: bool,
) -> io::Result<FdKind> {
    let raw = dup.as_raw_fd();
    let state = netsys::tcp_state(raw)?;
    let (queued, unsent) = if claim_queue {
        (
            crate::resources::unix::peek_queue(dup, libc::SOCK_STREAM)?.concat(),
            remote.unsent.clone(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let missing = || io::Error::other("the connection lost its address");
    Ok(FdKind::TcpRemote {
        id: ino,
        key: remote.key.clone(),
        listen: remote.listen,
        family: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        local: netsys::sockaddr(raw, false)?.ok_or_else(missing)?,
        peer: netsys::sockaddr(raw, true)?.ok_or_else(missing)?,
        flags,
        queued,
        unsent,
        shut_wr: matches!(state, TCP_FIN_WAIT1 | TCP_FIN_WAIT2),
        nodelay: netsys::int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0,
        keepalive: netsys::int_opt(raw, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0,
        reuseaddr,
        peer_launch: remote.peer_launch.clone(),
        inherited: -1,
    })
}

/// One end to rebuild at restart (from the fd entry that carries its
/// queue).
struct Spec {
    id: u64,
    key: String,
    listen: bool,
    family: i32,
    local: Vec<u8>,
    queued: Vec<u8>,
    unsent: Vec<u8>,
    shut_wr: bool,
    nodelay: bool,
    keepalive: bool,
}

fn specs<'a>(entries: impl Iterator<Item = &'a FdKind>) -> Vec<Spec> {
    let mut out: Vec<Spec> = Vec::new();
    for k in entries {
        let FdKind::TcpRemote {
            id,
            key,
            listen,
            family,
            local,
            queued,
            unsent,
            shut_wr,
            nodelay,
            keepalive,
            ..
        } = k
        else {
            continue;
        };
        let spec = Spec {
            id: *id,
            key: key.clone(),
            listen: *listen,
            family: *family,
            local: local.clone(),
            queued: queued.clone(),
            unsent: unsent.clone(),
            shut_wr: *shut_wr,
            nodelay: *nodelay,
            keepalive: *keepalive,
        };
        match out.iter_mut().find(|s| s.id == *id) {
            Some(s) if s.queued.is_empty() && s.unsent.is_empty() => *s = spec,
            Some(_) => {}
            None => out.push(spec),
        }
    }
    out
}

/// How long a restart waits for the other launches' ends.
fn rejoin_timeout() -> Duration {
    std::env::var("DMTCP_TCP_REJOIN_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(120), Duration::from_secs)
}

/// Sends a name service query and waits for its answer (other frames are
/// ignored: the session has not started yet).
fn query(conn: &mut Connection, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    conn.send(&ToCoordinator::Query { key: key.to_vec() })?;
    loop {
        match conn.recv()? {
            FromCoordinator::Published { key: k, value } if k == key => {
                return Ok(value.filter(|v| !v.is_empty()))
            }
            other => tracing::debug!("rendezvous: ignoring {other:?}"),
        }
    }
}

fn with_ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Rebuilds every connection of `entries` (the fd kinds of this launch's
/// images) whose peer is in another launch; returns socket id -> socket.
pub fn rendezvous<'a>(
    conn: &mut Connection,
    entries: impl Iterator<Item = &'a FdKind>,
) -> anyhow::Result<HashMap<u64, OwnedFd>> {
    let specs = specs(entries);
    if specs.is_empty() {
        return Ok(HashMap::new());
    }
    let started = Instant::now();
    let deadline = started + rejoin_timeout();
    // The address this host reaches the coordinator from: reachable from
    // the other launches when our original one cannot be bound here.
    let here: Option<IpAddr> = conn.stream().local_addr().ok().map(|a| a.ip());
    // 1. Listen and publish.
    let mut listening: Vec<(&Spec, OwnedFd, [u8; 16])> = Vec::new();
    for s in specs.iter().filter(|s| s.listen) {
        let what = format!("tcp connection {}", s.key);
        let l = listen_socket(s, here).map_err(|e| with_ctx(e, &what))?;
        let token: [u8; 16] = rand::random();
        let at = netsys::sockaddr(l.as_raw_fd(), false)?.unwrap_or_default();
        tracing::debug!("{what}: listening at {}", netsys::describe(&at));
        let mut value = token.to_vec();
        value.extend_from_slice(&at);
        conn.send(&ToCoordinator::Publish {
            key: s.key.clone().into_bytes(),
            value,
        })?;
        listening.push((s, l, token));
    }
    // 2. Connect (the listeners' kernels complete the handshakes).
    let mut joined: Vec<(&Spec, OwnedFd)> = Vec::new();
    for s in specs.iter().filter(|s| !s.listen) {
        let what = format!("tcp connection {}", s.key);
        let sock = loop {
            let value = query(conn, s.key.as_bytes())?;
            if let Some(v) = value.filter(|v| v.len() > 16) {
                let (token, at) = v.split_at(16);
                match connect_socket(s, at) {
                    Ok(c) => {
                        let mut st = TcpStream::from(c);
                        st.set_write_timeout(Some(IO_WAIT))?;
                        st.write_all(token).map_err(|e| with_ctx(e, &what))?;
                        break OwnedFd::from(st);
                    }
                    Err(e) => {
                        tracing::debug!("{what}: connecting to {}: {e}", netsys::describe(at))
                    }
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{what}: its peer (in another launch of the computation) did not come back within {} s (DMTCP_TCP_REJOIN_TIMEOUT): restart every launch of the computation together (dmtcp_restart_script.sh, or dmtcp-restart with every image)",
                    rejoin_timeout().as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        joined.push((s, sock));
    }
    // 3. Accept the connections that bring our tokens.
    for (s, l, token) in listening {
        let what = format!("tcp connection {}", s.key);
        let sock = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                anyhow::bail!(
                    "{what}: its peer (in another launch of the computation) did not connect within {} s (DMTCP_TCP_REJOIN_TIMEOUT)",
                    rejoin_timeout().as_secs()
                );
            }
            let Ok(c) = netsys::accept(&l, left.min(Duration::from_secs(1))) else {
                continue;
            };
            let mut st = TcpStream::from(c);
            st.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut got = [0u8; 16];
            if st.read_exact(&mut got).is_ok() && got == token {
                break OwnedFd::from(st);
            }
            tracing::warn!("{what}: a connection without the token was dropped");
        };
        drop(l);
        conn.send(&ToCoordinator::Publish {
            key: s.key.clone().into_bytes(),
            value: Vec::new(),
        })?;
        joined.push((s, sock));
    }
    // 4. Exchange the queues on every connection at once.
    let results: Vec<io::Result<(u64, OwnedFd)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = joined
            .into_iter()
            .map(|(s, sock)| scope.spawn(move || exchange(s, sock).map(|f| (s.id, f))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("exchange thread panicked")))
            })
            .collect()
    });
    let mut out = HashMap::new();
    for r in results {
        let (id, fd) = r?;
        out.insert(id, fd);
    }
    tracing::info!(
        "{} TCP connection(s) to other launches rebuilt in {:?}",
        out.len(),
        started.elapsed()
    );
    Ok(out)
}

/// Says that an end gets another address than it had. After a migration
/// that is expected (info); in place, a port someone else holds means the
/// program will see a changed address: a warning naming the holders.
fn fallback_said(said: &str, e: &io::Error, local: &[u8]) {
    if e.kind() == io::ErrorKind::AddrInUse {
        tracing::warn!(
            "{said} (the program will see the new address; port {} holds: {})",
            netsys::port(local),
            crate::resources::unix::port_holders(netsys::port(local))
        );
    } else {
        tracing::info!("{said}");
    }
}

fn reuse_on(s: &OwnedFd) -> io::Result<()> {
    netsys::set_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
}

/// `addr` with its ip replaced by `ip` (port 0), in `family`.
fn addr_of(ip: IpAddr, family: i32) -> Option<Vec<u8>> {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut a = vec![0u8; 28];
    a[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    a[8..24].copy_from_slice(&v6.octets());
    netsys::in_family(&a, family)
}

fn listen_socket(s: &Spec, here: Option<IpAddr>) -> io::Result<OwnedFd> {
    let l = netsys::socket(s.family, libc::SOCK_STREAM)?;
    reuse_on(&l)?;
    super::restore::grow_buffers(&l, s.queued.len().max(s.unsent.len()));
    if let Err(e) = super::restore::bind_freeing(&l, &s.local) {
        let alt = here.and_then(|ip| addr_of(ip, s.family));
        let said = format!(
            "tcp connection {}: {} cannot be bound here ({e}); listening on {} instead",
            s.key,
            netsys::describe(&s.local),
            alt.as_deref().map_or("?".into(), netsys::describe)
        );
        fallback_said(&said, &e, &s.local);
        let l2 = netsys::socket(s.family, libc::SOCK_STREAM)?;
        reuse_on(&l2)?;
        super::restore::grow_buffers(&l2, s.queued.len().max(s.unsent.len()));
        netsys::bind(&l2, &alt.ok_or(e)?)?;
        netsys::listen(&l2, 8)?;
        return Ok(l2);
    }
    netsys::listen(&l, 8)?;
    Ok(l)
}

/// How long a connecting end waits for the killed run's TIME_WAIT of its
/// four-tuple to become reusable (loopback: one second after its last
/// segment) before it connects from a fresh port.
const TW_REUSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn connect_socket(s: &Spec, at: &[u8]) -> io::Result<OwnedFd> {
    let to = netsys::in_family(at, s.family)
        .ok_or_else(|| io::Error::other("the listener's address is of another family"))?;
    let attempt = |bind: Option<&[u8]>| -> io::Result<OwnedFd> {
        let c = netsys::socket(s.family, libc::SOCK_STREAM)?;
        reuse_on(&c)?;
        super::restore::grow_buffers(&c, s.queued.len().max(s.unsent.len()));
        if let Some(b) = bind {
            super::restore::bind_freeing(&c, b)?;
        }
        netsys::connect(&c, &to)?;
        Ok(c)
    };
    match attempt(Some(&s.local)) {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(e),
        Err(mut e) => {
            // A lingering TIME_WAIT of the same four-tuple, or an address
            // this host does not have (migration): a fresh port.
            if let Ok(n) = crate::kernel::tcpdiag::destroy_closing(netsys::port(&s.local)) {
                if n > 0 {
                    if let Ok(c) = attempt(Some(&s.local)) {
                        return Ok(c);
                    }
                }
            }
            // Without CAP_NET_ADMIN the killed run's TIME_WAIT of this very
            // four-tuple cannot be destroyed; on loopback the kernel lets a
            // new connection take it over one second after its last
            // segment (net.ipv4.tcp_tw_reuse = 2): try again for a while
            // before giving up the original port.
            let deadline = std::time::Instant::now() + TW_REUSE_WAIT;
            while e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                && netsys::port(&s.local) != 0
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
                match attempt(Some(&s.local)) {
                    Ok(c) => return Ok(c),
                    Err(again) if again.kind() == io::ErrorKind::ConnectionRefused => {
                        return Err(again)
                    }
                    Err(again) => e = again,
                }
            }
            let said = format!(
                "tcp connection {}: connecting from {}: {e}; from a fresh port instead",
                s.key,
                netsys::describe(&s.local)
            );
            fallback_said(&said, &e, &s.local);
            attempt(None)
        }
    }
}

/// Both sides send their saved receive queue; each sends back what it got,
/// then its own unsent bytes (and a FIN if it had shut down writing). The
/// listening side first confirms the token with one byte.
fn exchange(s: &Spec, sock: OwnedFd) -> io::Result<OwnedFd> {
    let what = format!("tcp connection {}", s.key);
    let st = TcpStream::from(sock);
    st.set_read_timeout(Some(IO_WAIT))?;
    st.set_write_timeout(Some(IO_WAIT))?;
    let mut w = st.try_clone()?;
    let mut r = st.try_clone()?;
    let mine = &s.queued;
    let listen = s.listen;
    let theirs = std::thread::scope(|scope| -> io::Result<Vec<u8>> {
        let writer = scope.spawn(move || -> io::Result<()> {
            if listen {
                w.write_all(b"K")?;
            }
            w.write_all(&(mine.len() as u64).to_le_bytes())?;
            w.write_all(mine)
        });
        let read = (|| -> io::Result<Vec<u8>> {
            if !listen {
                let mut k = [0u8; 1];
                r.read_exact(&mut k)?;
                if &k != b"K" {
                    return Err(io::Error::other("the listener did not confirm"));
                }
            }
            let mut n = [0u8; 8];
            r.read_exact(&mut n)?;
            let n = u64::from_le_bytes(n);
            if n > 1 << 30 {
                return Err(io::Error::other(format!("peer announced {n} bytes")));
            }
            let mut buf = vec![0u8; n as usize];
            r.read_exact(&mut buf)?;
            Ok(buf)
        })();
        let wrote = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("writer panicked")));
        let buf = read?;
        wrote?;
        Ok(buf)
    })
    .map_err(|e| with_ctx(e, &what))?;
    let mut st = st;
    st.write_all(&theirs).map_err(|e| with_ctx(e, &what))?;
    st.write_all(&s.unsent).map_err(|e| with_ctx(e, &what))?;
    if s.shut_wr {
        st.shutdown(std::net::Shutdown::Write)?;
    }
    st.set_read_timeout(None)?;
    st.set_write_timeout(None)?;
    let fd = OwnedFd::from(st);
    let raw = fd.as_raw_fd();
    netsys::set_int_opt(
        raw,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        i32::from(s.nodelay),
    )?;
    netsys::set_int_opt(
        raw,
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        i32::from(s.keepalive),
    )?;
    tracing::debug!(
        "{what}: rebuilt, {} bytes refilled here, {} sent back, {} unsent sent again",
        mine.len(),
        theirs.len(),
        s.unsent.len()
    );
    Ok(fd)
}
