//! `sock_diag` for TCP (`NETLINK_SOCK_DIAG`, `AF_INET`/`AF_INET6`): the
//! closing sockets (TIME_WAIT, FIN_WAIT, CLOSING, LAST_ACK) on a local port,
//! and `SOCK_DESTROY` of them. A restart uses it when the killed
//! computation's connections still hold a port its listener or connection
//! must bind again (issue 16): destroying needs CAP_NET_ADMIN over the
//! network namespace (root); without it the caller waits for them instead.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::sockdiag::os_err;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
/// TCP states (`include/net/tcp_states.h`) that end by themselves.
const FIN_WAIT1: u32 = 4;
const FIN_WAIT2: u32 = 5;
const TIME_WAIT: u32 = 6;
const LAST_ACK: u32 = 9;
const CLOSING: u32 = 11;
const LISTEN: u32 = 10;
const CLOSING_STATES: u32 =
    1 << FIN_WAIT1 | 1 << FIN_WAIT2 | 1 << TIME_WAIT | 1 << LAST_ACK | 1 << CLOSING;

/// `struct inet_diag_sockid` (ports and addresses in network order).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

#[repr(C)]
struct Request {
    nlh: libc::nlmsghdr,
    req: ReqV2,
}

const _: () = assert!(std::mem::size_of::<SockId>() == 48);
const _: () = assert!(std::mem::size_of::<ReqV2>() == 56);
/// `struct inet_diag_msg`: family, state, timer, retrans, then the id.
const MSG_ID_AT: usize = 4;
const MSG_LEN: usize = 72;

fn open() -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers and returns a fresh fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(os_err("socket(NETLINK_SOCK_DIAG)".into()));
    }
    // SAFETY: fd was just returned by socket and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(sock: &OwnedFd, kind: u16, flags: i32, seq: u32, req: ReqV2) -> io::Result<()> {
    let msg = Request {
        nlh: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Request>() as u32,
            nlmsg_type: kind,
            nlmsg_flags: (libc::NLM_F_REQUEST | flags) as u16,
            nlmsg_seq: seq,
            nlmsg_pid: 0,
        },
        req,
    };
    // SAFETY: msg is a live, fully initialised repr(C) struct of the size given.
    let r = unsafe {
        libc::send(
            sock.as_raw_fd(),
            &msg as *const Request as *const libc::c_void,
            std::mem::size_of::<Request>(),
            0,
        )
    };
    if r < 0 {
        return Err(os_err("sock_diag request".into()));
    }
    Ok(())
}

/// Reads netlink messages of request `seq` until NLMSG_DONE (a dump) or
/// the first NLMSG_ERROR (an ack); calls `each` with every other payload.
fn receive(sock: &OwnedFd, seq: u32, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    // u64 elements keep the buffer aligned for nlmsghdr.
    let mut buf = vec![0u64; 4096];
    loop {
        // SAFETY: buf is a live buffer of exactly the byte length given.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len() * 8,
                0,
            )
        };
        if n < 0 {
            return Err(os_err("sock_diag reply".into()));
        }
        // SAFETY: we view the u64 buffer as bytes; n <= its byte length.
        let b = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, n as usize) };
        let mut at = 0;
        while at + 16 <= b.len() {
            let len = u32::from_ne_bytes(b[at..at + 4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes(b[at + 4..at + 6].try_into().unwrap_or_default());
            let mseq = u32::from_ne_bytes(b[at + 8..at + 12].try_into().unwrap_or_default());
            if len < 16 || at + len > b.len() {
                break;
            }
            let payload = &b[at + 16..at + len];
            if mseq == seq {
                if kind == libc::NLMSG_DONE as u16 {
                    return Ok(());
                }
                if kind == libc::NLMSG_ERROR as u16 {
                    let err = payload
                        .get(..4)
                        .map(|e| i32::from_ne_bytes(e.try_into().unwrap_or_default()))
                        .unwrap_or(0);
                    if err != 0 {
                        return Err(io::Error::from_raw_os_error(-err));
                    }
                    return Ok(());
                }
                each(payload);
            }
            at += (len + 3) & !3;
        }
    }
}

/// Family, state and id of one `inet_diag_msg`.
fn sock_id(payload: &[u8]) -> Option<(u8, u8, SockId)> {
    if payload.len() < MSG_LEN {
        return None;
    }
    let (family, state) = (payload[0], payload[1]);
    let b = &payload[MSG_ID_AT..MSG_ID_AT + 48];
    let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap_or_default());
    let id = SockId {
        sport: u16::from_ne_bytes([b[0], b[1]]),
        dport: u16::from_ne_bytes([b[2], b[3]]),
        src: [u32_at(4), u32_at(8), u32_at(12), u32_at(16)],
        dst: [u32_at(20), u32_at(24), u32_at(28), u32_at(32)],
        ifindex: u32_at(36),
        cookie: [u32_at(40), u32_at(44)],
    };
    Some((family, state, id))
}

/// Destroys the closing TCP sockets (IPv4 and IPv6) whose local port is
/// `port`, in the caller's network namespace, unless something listens on
/// that port (then it is someone else's: nothing is touched); returns how
/// many. Fails with
/// `EPERM` without CAP_NET_ADMIN, `EOPNOTSUPP` on kernels without
/// `CONFIG_INET_DIAG_DESTROY` or without TIME_WAIT support in it.
pub fn destroy_closing(port: u16) -> io::Result<usize> {
    let sock = open()?;
    let mut found = Vec::new();
    let mut listening = false;
    let mut seq = 0;
    for family in [libc::AF_INET, libc::AF_INET6] {
        seq += 1;
        let req = ReqV2 {
            family: family as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: CLOSING_STATES | 1 << LISTEN,
            id: SockId::default(),
        };
        send(&sock, SOCK_DIAG_BY_FAMILY, libc::NLM_F_DUMP, seq, req)?;
        receive(&sock, seq, |p| {
            if let Some((fam, state, id)) = sock_id(p) {
                if u16::from_be(id.sport) == port {
                    if u32::from(state) == LISTEN {
                        listening = true;
                    } else {
                        found.push((fam, id));
                    }
                }
            }
        })?;
    }
    if listening {
        return Ok(0);
    }
    let mut n = 0;
    for (family, id) in found {
        seq += 1;
        let req = ReqV2 {
            family,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: !0,
            id,
        };
        send(&sock, SOCK_DESTROY, libc::NLM_F_ACK, seq, req)?;
        match receive(&sock, seq, |_| {}) {
            Ok(()) => n += 1,
            // Gone by itself meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
