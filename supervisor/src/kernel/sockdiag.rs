//! `sock_diag` netlink for unix sockets (`NETLINK_SOCK_DIAG`, `AF_UNIX`,
//! looked up by inode): a socket's type, state, name and peer inode, so the
//! two ends of a socketpair are matched exactly; and the `SO_PEEK_OFF`
//! socket option the peeks of queued bytes use.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
/// `INET_DIAG_NOCOOKIE`: look the socket up by inode alone.
const NOCOOKIE: u32 = !0;
/// `TCP_ESTABLISHED`, the state of a connected unix socket.
pub const STATE_ESTABLISHED: u8 = 1;

/// `struct unix_diag_req`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UnixDiagReq {
    family: u8,
    protocol: u8,
    pad: u16,
    states: u32,
    ino: u32,
    show: u32,
    cookie: [u32; 2],
}

/// `struct unix_diag_msg`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UnixDiagMsg {
    family: u8,
    sotype: u8,
    state: u8,
    pad: u8,
    ino: u32,
    cookie: [u32; 2],
}

#[repr(C)]
struct Request {
    nlh: libc::nlmsghdr,
    req: UnixDiagReq,
}

const _: () = assert!(std::mem::size_of::<UnixDiagReq>() == 24);
const _: () = assert!(std::mem::size_of::<UnixDiagMsg>() == 16);
const _: () = assert!(std::mem::size_of::<libc::nlmsghdr>() == 16);

/// What `sock_diag` reports about one unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixInfo {
    pub ino: u64,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub sotype: i32,
    /// `TCP_*` state (`STATE_ESTABLISHED` when connected).
    pub state: u8,
    /// Peer inode, 0 without a peer.
    pub peer: u64,
    /// Bound to a path or an abstract name.
    pub named: bool,
    /// Bytes (stream, seqpacket) or first message length (datagram) queued.
    pub rqlen: u32,
}

pub fn os_err(what: String) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A `NETLINK_SOCK_DIAG` socket in the supervisor's network namespace
/// (which the computation shares).
pub struct Diag {
    sock: OwnedFd,
    seq: u32,
}

impl Diag {
    pub fn open() -> io::Result<Diag> {
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
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Diag { sock, seq: 0 })
    }

    /// The unix socket with inode `ino`, or `None` if it is not a unix
    /// socket of this network namespace.
    pub fn unix(&mut self, ino: u64) -> io::Result<Option<UnixInfo>> {
        let Ok(ino32) = u32::try_from(ino) else {
            return Ok(None);
        };
        self.seq = self.seq.wrapping_add(1);
        let msg = Request {
            nlh: libc::nlmsghdr {
                nlmsg_len: std::mem::size_of::<Request>() as u32,
                nlmsg_type: SOCK_DIAG_BY_FAMILY,
                nlmsg_flags: libc::NLM_F_REQUEST as u16,
                nlmsg_seq: self.seq,
                nlmsg_pid: 0,
            },
            req: UnixDiagReq {
                family: libc::AF_UNIX as u8,
                protocol: 0,
                pad: 0,
                states: !0,
                ino: ino32,
                show: UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN,
                cookie: [NOCOOKIE, NOCOOKIE],
            },
        };
        // SAFETY: msg is a live, fully initialised repr(C) struct of the size given.
        let r = unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                &msg as *const Request as *const libc::c_void,
                std::mem::size_of::<Request>(),
                0,
            )
        };
        if r < 0 {
            return Err(os_err(format!("sock_diag request for inode {ino}")));
        }
        // u64 elements keep the buffer aligned for nlmsghdr.
        let mut buf = vec![0u64; 1024];
        loop {
            // SAFETY: buf is a live buffer of exactly the byte length given.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len() * 8,
                    0,
                )
            };
            if n < 0 {
                return Err(os_err(format!("sock_diag reply for inode {ino}")));
            }
            // SAFETY: we view the u64 buffer as bytes; n <= its byte length.
            let bytes =
                unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, n as usize) };
            match parse_reply(bytes, self.seq, ino)? {
                Reply::Other => continue,
                Reply::Done(info) => return Ok(info),
            }
        }
    }
}

enum Reply {
    /// A stale message of an earlier request.
    Other,
    Done(Option<UnixInfo>),
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn parse_reply(b: &[u8], seq: u32, ino: u64) -> io::Result<Reply> {
    let bad = || io::Error::other(format!("sock_diag: malformed reply for inode {ino}"));
    let len = u32_at(b, 0).ok_or_else(bad)? as usize;
    let kind = u16_at(b, 4).ok_or_else(bad)?;
    let mseq = u32_at(b, 8).ok_or_else(bad)?;
    if len < 16 || len > b.len() {
        return Err(bad());
    }
    if mseq != seq {
        return Ok(Reply::Other);
    }
    let body = &b[16..len];
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = -(u32_at(body, 0).ok_or_else(bad)? as i32);
        return match errno {
            0 => Ok(Reply::Done(None)),
            // Not a unix socket of this namespace (or gone).
            libc::ENOENT => Ok(Reply::Done(None)),
            e => Err(io::Error::new(
                io::Error::from_raw_os_error(e).kind(),
                format!(
                    "sock_diag for inode {ino}: {}",
                    io::Error::from_raw_os_error(e)
                ),
            )),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY || body.len() < 16 {
        return Err(bad());
    }
    let mut info = UnixInfo {
        ino: u64::from(u32_at(body, 4).ok_or_else(bad)?),
        sotype: i32::from(body[1]),
        state: body[2],
        peer: 0,
        named: false,
        rqlen: 0,
    };
    let mut at = 16;
    while at + 4 <= body.len() {
        let alen = usize::from(u16_at(body, at).ok_or_else(bad)?);
        let atype = u16_at(body, at + 2).ok_or_else(bad)?;
        if alen < 4 || at + alen > body.len() {
            return Err(bad());
        }
        let data = &body[at + 4..at + alen];
        match atype {
            UNIX_DIAG_NAME => info.named = !data.is_empty(),
            UNIX_DIAG_PEER => info.peer = u64::from(u32_at(data, 0).ok_or_else(bad)?),
            UNIX_DIAG_RQLEN => info.rqlen = u32_at(data, 0).ok_or_else(bad)?,
            _ => {}
        }
        at += (alen + 3) & !3;
    }
    Ok(Reply::Done(Some(info)))
}

/// `socket:[INODE]` -> INODE.
pub fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

pub fn peek_off(fd: RawFd) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are live and sized for one c_int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(os_err("getsockopt(SO_PEEK_OFF)".into()));
    }
    Ok(v)
}

pub fn set_peek_off(fd: RawFd, v: libc::c_int) -> io::Result<()> {
    // SAFETY: v is a live c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err(format!("setsockopt(SO_PEEK_OFF, {v})")));
    }
    Ok(())
}
