//! Capture of TCP connections, UDP sockets and connected named unix sockets.
//!
//! At checkpoint every process is frozen. [`examine`] looks at each
//! non-unix socket of the computation through a `pidfd_getfd` duplicate:
//! family, type, TCP state, local and peer address. Two TCP sockets are the
//! two ends of one connection when each one's (local, peer) is the other's
//! (peer, local) (IPv4 and v4-mapped IPv6 addresses compare equal, so a
//! dual-stack listener's connections pair too); a connection with only one end inside the computation
//! stays unsupported. Before any receive queue is read, [`examine`] waits
//! (bounded) until no end has bytes its peer has not acknowledged: on
//! loopback, acknowledged bytes sit in the peer's receive queue, where a
//! peek sees them. Bytes a sender still holds because its receiver's buffer
//! is full are read from the sender's queue in TCP repair mode, which needs
//! CAP_NET_ADMIN; without it such a checkpoint fails rather than lose data.
//!
//! `SO_REUSEADDR` is switched on for every TCP socket of the computation:
//! listeners (the connections they accept from then on inherit it) and
//! connections (an internal connection's original value is saved in the
//! image and put back at restart): the sockets the killed computation leaves
//! in TIME_WAIT or FIN_WAIT then do not keep the restarted listeners and
//! ends from binding their old ports. Connections closed before the
//! checkpoint may linger in TIME_WAIT without it (see `unix::listen_again`).
//!
//! A connection whose peer is outside the computation (or a socket already
//! reset) is saved as [`dmtcp_image::FdKind::OutsidePeer`]: a warning names
//! the process, fd and peer; `DMTCP_OUTSIDE_PEERS=refuse` refuses the
//! checkpoint instead.
//!
//! [`crate::resources::inet::Inet`] then describes one fd: its addresses, options and the bytes
//! waiting to be read (peeked, `MSG_PEEK` with `SO_PEEK_OFF`, once per
//! socket).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::kernel::netsys::{
    self, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
};
use crate::kernel::pid::HostPid;

/// How long a frozen computation may wait for TCP bytes in flight to be
/// acknowledged.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Polls (2 ms apart) with unsent bytes unchanged and none in flight after
/// which a sender is taken to be blocked by a closed window.
const STUCK_POLLS: u32 = 10;

/// Computation-wide facts about TCP and UDP sockets.
#[derive(Debug, Default)]
pub struct NetShare {
    /// Socket inode -> (connection id, end) for internal TCP connections.
    pub(crate) tcp_pairs: HashMap<u64, (u64, u8)>,
    /// Bytes a peer had not delivered yet, to append to this end's queue.
    pub(crate) tcp_extra: HashMap<u64, Vec<u8>>,
    /// The `SO_REUSEADDR` value the program had set.
    pub(crate) tcp_reuse: HashMap<u64, bool>,
    pub(crate) udp: HashSet<u64>,
    /// TCP connections with one end outside (or already reset): inode ->
    /// description.
    pub(crate) outside: HashMap<u64, String>,
    /// TCP ends whose peer is in another launch (`inet::remote`).
    pub(crate) remote: HashMap<u64, crate::resources::inet::remote::RemoteEnd>,
}

struct TcpEnd {
    ino: u64,
    pid: HostPid,
    fd: i32,
    dup: OwnedFd,
    local: Vec<u8>,
    peer: Vec<u8>,
}

/// Examines the sockets `(pid, fd, inode)` (one fd per socket, processes
/// frozen) that are not unix sockets.
pub fn examine(
    socks: &[(HostPid, i32, u64)],
    remote: &HashMap<u64, crate::resources::inet::remote::RemoteEnd>,
) -> io::Result<NetShare> {
    let mut share = NetShare::default();
    let mut tcp = Vec::new();
    let mut orig_reuse: HashMap<u64, bool> = HashMap::new();
    for &(pid, fd, ino) in socks {
        let Ok(dup) = crate::kernel::sys::steal_fd(pid.0, fd) else {
            continue;
        };
        let raw = dup.as_raw_fd();
        let opt = |o| netsys::int_opt(raw, libc::SOL_SOCKET, o);
        let Ok(family) = opt(libc::SO_DOMAIN) else {
            continue;
        };
        if !matches!(family, libc::AF_INET | libc::AF_INET6) {
            continue;
        }
        if opt(libc::SO_ACCEPTCONN)? != 0 {
            // Connections accepted from now on inherit SO_REUSEADDR, so
            // they cannot keep the restarted listener from its port either.
            let _ = netsys::set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
            continue;
        }
        let (sotype, proto) = (opt(libc::SO_TYPE)?, opt(libc::SO_PROTOCOL)?);
        if sotype == libc::SOCK_DGRAM && proto == libc::IPPROTO_UDP {
            share.udp.insert(ino);
            continue;
        }
        if sotype != libc::SOCK_STREAM || proto != libc::IPPROTO_TCP {
            continue;
        }
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("pid {} fd {fd}: {e}", pid.0));
        let state = netsys::tcp_state(raw).map_err(ctx)?;
        // Every TCP socket gets SO_REUSEADDR (the program's value is saved
        // for internal connections): what the killed computation leaves in
        // TIME_WAIT or FIN_WAIT then does not keep the restarted listeners
        // and connections from their ports.
        orig_reuse.insert(ino, opt(libc::SO_REUSEADDR)? != 0);
        let _ = netsys::set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        if state == TCP_CLOSE && netsys::tcp_segs_out(raw).map_err(ctx)? > 0 {
            // Connected once and reset (or refused) since: nothing to rejoin.
            let local = netsys::sockaddr(raw, false)
                .map_err(ctx)?
                .unwrap_or_default();
            let what = format!(
                "TCP socket {}, already reset or closed by its peer",
                netsys::describe(&local)
            );
            share.outside.insert(ino, what);
            continue;
        }
        if !matches!(
            state,
            TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSE_WAIT
        ) {
            continue;
        }
        let local = netsys::sockaddr(raw, false).map_err(ctx)?;
        let peer = netsys::sockaddr(raw, true).map_err(ctx)?;
        if let (Some(local), Some(peer)) = (local, peer) {
            tcp.push(TcpEnd {
                ino,
                pid,
                fd,
                dup,
                local,
                peer,
            });
        }
    }
    let key = |a: &[u8]| netsys::endpoint_key(a);
    let by_addr: HashMap<_, usize> = tcp
        .iter()
        .enumerate()
        .map(|(i, e)| ((key(&e.local), key(&e.peer)), i))
        .collect();
    let mut paired = Vec::new();
    for (i, e) in tcp.iter().enumerate() {
        match by_addr.get(&(key(&e.peer), key(&e.local))) {
            Some(&j) if j != i => {
                let id = e.ino.min(tcp[j].ino);
                share.tcp_pairs.insert(e.ino, (id, u8::from(e.ino != id)));
                paired.push((i, j));
            }
            _ if remote.contains_key(&e.ino) => {
                share.remote.insert(e.ino, remote[&e.ino].clone());
                share
                    .tcp_reuse
                    .insert(e.ino, orig_reuse.get(&e.ino).copied().unwrap_or(false));
            }
            _ => {
                let what = format!(
                    "TCP connection {} -> {}, peer outside the computation",
                    netsys::describe(&e.local),
                    netsys::describe(&e.peer)
                );
                crate::resources::outside_peer(e.pid, e.fd, &what)?;
                share.outside.insert(e.ino, what);
            }
        }
    }
    // Wait (frozen, bounded) for bytes in flight to be acknowledged. Bytes
    // not even sent, that stay so while nothing is in flight, are held
    // back by a closed receive window: no point waiting for those.
    let deadline = Instant::now() + DRAIN_WAIT;
    let mut waiting: Vec<(usize, usize, usize)> = Vec::new();
    let mut last_unsent: Vec<usize> = Vec::new();
    let mut steady = 0;
    loop {
        waiting.clear();
        let mut in_flight = false;
        let mut unsent = Vec::new();
        for &(i, j) in &paired {
            let raw = tcp[i].dup.as_raw_fd();
            let n = netsys::unacked(raw)?;
            if n > 0 {
                let u = netsys::unsent(raw)?;
                in_flight |= n > u;
                unsent.push(u);
                waiting.push((i, j, n));
            }
        }
        steady = if !in_flight && unsent == last_unsent {
            steady + 1
        } else {
            0
        };
        last_unsent = unsent;
        if waiting.is_empty() || steady >= STUCK_POLLS || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for &(i, j, n) in &waiting {
        // The receiver has no room: the bytes are still the sender's.
        let bytes = netsys::peek_send_queue(&tcp[i].dup).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "TCP connection {} -> {}: {n} bytes sent are not yet in the receiver's queue (its buffer is full) and cannot be read without CAP_NET_ADMIN ({e}); checkpoint again once the receiver reads",
                    netsys::describe(&tcp[i].local),
                    netsys::describe(&tcp[i].peer)
                ),
            )
        })?;
        tracing::debug!(
            "TCP {} -> {}: {} unsent bytes read from the send queue",
            netsys::describe(&tcp[i].local),
            netsys::describe(&tcp[i].peer),
            bytes.len()
        );
        share.tcp_extra.insert(tcp[j].ino, bytes);
    }
    for &(i, _) in &paired {
        let ino = tcp[i].ino;
        share
            .tcp_reuse
            .insert(ino, orig_reuse.get(&ino).copied().unwrap_or(false));
    }
    Ok(share)
}

impl NetShare {
    pub fn tcp_pair(&self, ino: u64) -> Option<(u64, u8)> {
        self.tcp_pairs.get(&ino).copied()
    }
}
