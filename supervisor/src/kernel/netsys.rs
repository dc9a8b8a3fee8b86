//! Socket system calls on raw `sockaddr` bytes, for any family: what the
//! capture of TCP, UDP and named unix sockets asks of a duplicate of a
//! frozen process's socket, and what their restore needs to recreate them.
//!
//! Addresses are kept exactly as `getsockname`/`getpeername` return them
//! (`sockaddr_in`, `sockaddr_in6`, `sockaddr_un` bytes), so they can be
//! handed back to `bind`/`connect` unchanged.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::kernel::sockdiag::{os_err, peek_off, set_peek_off};

/// `SIOCOUTQ`: bytes in the send queue not yet acknowledged by the peer.
const SIOCOUTQ: libc::c_ulong = 0x5411;
/// `SIOCOUTQNSD`: bytes in the send queue not yet sent.
const SIOCOUTQNSD: libc::c_ulong = 0x894B;
const TCP_REPAIR: libc::c_int = 19;
const TCP_REPAIR_QUEUE: libc::c_int = 20;
const TCP_SEND_QUEUE: libc::c_int = 2;
/// Leave repair mode without sending a window probe.
const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;

/// TCP states (`include/net/tcp_states.h`).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;

pub fn int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are live locals sized for one c_int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(os_err(format!("getsockopt({level}, {opt})")));
    }
    Ok(v)
}

pub fn set_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: i32) -> io::Result<()> {
    // SAFETY: v is a live c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err(format!("setsockopt({level}, {opt}, {v})")));
    }
    Ok(())
}

/// `getsockname` (or `getpeername` with `peer`); `None` when not connected.
pub fn sockaddr(fd: RawFd, peer: bool) -> io::Result<Option<Vec<u8>>> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: ss/len describe a live buffer large enough for any address.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if peer && e.raw_os_error() == Some(libc::ENOTCONN) {
            return Ok(None);
        }
        let call = if peer { "getpeername" } else { "getsockname" };
        return Err(io::Error::new(e.kind(), format!("{call}: {e}")));
    }
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: the kernel wrote len (<= sizeof ss) bytes into ss.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    Ok(Some(bytes.to_vec()))
}

/// A socket's `struct tcp_info` (`getsockopt(TCP_INFO)`), and how many of
/// its bytes the kernel filled in.
fn tcp_info(fd: RawFd) -> io::Result<([u8; 256], usize)> {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: info/len describe a live buffer; the kernel writes at most len bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(os_err("getsockopt(TCP_INFO)".into()));
    }
    Ok((info, len as usize))
}

/// The TCP state of a socket (`tcpi_state`, the first byte of `tcp_info`).
pub fn tcp_state(fd: RawFd) -> io::Result<u8> {
    Ok(tcp_info(fd)?.0[0])
}

/// Bytes of a TCP socket's send queue the peer has not acknowledged.
pub fn unacked(fd: RawFd) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int into the live local v.
    if unsafe { libc::ioctl(fd, SIOCOUTQ, &mut v as *mut libc::c_int) } < 0 {
        return Err(os_err("ioctl(SIOCOUTQ)".into()));
    }
    Ok(v.max(0) as usize)
}

/// Bytes of a TCP socket's send queue not sent yet (a subset of
/// [`unacked`]).
pub fn unsent(fd: RawFd) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one c_int into the live local v.
    if unsafe { libc::ioctl(fd, SIOCOUTQNSD, &mut v as *mut libc::c_int) } < 0 {
        return Err(os_err("ioctl(SIOCOUTQNSD)".into()));
    }
    Ok(v.max(0) as usize)
}

/// The whole send queue of a TCP socket, not consumed, read in repair mode
/// (needs CAP_NET_ADMIN in the socket's network namespace). Repair mode is
/// left again without a window probe and `SO_REUSEADDR` (which leaving it
/// clears) is put back.
pub fn peek_send_queue(sock: &OwnedFd) -> io::Result<Vec<u8>> {
    let fd = sock.as_raw_fd();
    let reuse = int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    set_int_opt(fd, libc::IPPROTO_TCP, TCP_REPAIR, 1)?;
    let result = (|| {
        set_int_opt(fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        let n = unacked(fd)?;
        let mut buf = vec![0u8; n + 1];
        // SAFETY: buf is a live buffer of the length given.
        let got = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if got < 0 {
            return Err(os_err("recv(MSG_PEEK) of the send queue".into()));
        }
        buf.truncate(got as usize);
        Ok(buf)
    })();
    let off = set_int_opt(fd, libc::IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    let back = set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuse);
    let out = result?;
    off?;
    back?;
    Ok(out)
}

/// Every datagram waiting on a UDP socket, with its source address, not
/// consumed (`MSG_PEEK` with `SO_PEEK_OFF`, put back as found). A
/// zero-length datagram ends the walk (a peek offset cannot pass it).
pub fn peek_datagrams(sock: &OwnedFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = sock.as_raw_fd();
    let saved = peek_off(fd)?;
    set_peek_off(fd, 0)?;
    let mut out = Vec::new();
    let result = (|| {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: msghdr is plain old data; all-zero means no control buffer.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            // SAFETY: msg points at a live name buffer and one live iovec over buf.
            let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EAGAIN) {
                    return Ok(());
                }
                return Err(io::Error::new(e.kind(), format!("recvmsg(MSG_PEEK): {e}")));
            }
            if n == 0 {
                return Ok(());
            }
            let namelen = (msg.msg_namelen as usize).min(std::mem::size_of_val(&from));
            // SAFETY: the kernel wrote namelen bytes of address into from.
            let name = unsafe {
                std::slice::from_raw_parts(
                    (&from as *const libc::sockaddr_storage).cast::<u8>(),
                    namelen,
                )
            };
            out.push((name.to_vec(), buf[..n as usize].to_vec()));
        }
    })();
    let restored = set_peek_off(fd, saved);
    result?;
    restored?;
    Ok(out)
}

/// A new socket, close-on-exec.
pub fn socket(family: i32, sotype: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers and returns a fresh fd or -1.
    let fd = unsafe { libc::socket(family, sotype | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err(format!("socket({family}, {sotype})")));
    }
    // SAFETY: fd was just returned and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn bind(sock: &OwnedFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: addr holds a sockaddr of addr.len() bytes.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err(format!("bind to {}", describe(addr))));
    }
    Ok(())
}

/// A blocking `connect` (the socket must be in blocking mode).
pub fn connect(sock: &OwnedFd, addr: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: addr holds a sockaddr of addr.len() bytes.
        let r = unsafe {
            libc::connect(
                sock.as_raw_fd(),
                addr.as_ptr().cast(),
                addr.len() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(io::Error::new(
                e.kind(),
                format!("connect to {}: {e}", describe(addr)),
            ));
        }
    }
}

pub fn listen(sock: &OwnedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(sock.as_raw_fd(), backlog) } < 0 {
        return Err(os_err("listen".into()));
    }
    Ok(())
}

/// Accepts one connection, waiting at most `timeout`.
pub fn accept(sock: &OwnedFd, timeout: Duration) -> io::Result<OwnedFd> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one live pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    if r <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "accept: no connection came",
        ));
    }
    // SAFETY: accept4 with no address buffer returns a fresh fd or -1.
    let fd = unsafe {
        libc::accept4(
            sock.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("accept".into()));
    }
    // SAFETY: fd was just returned and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn shutdown_write(sock: &OwnedFd) -> io::Result<()> {
    // SAFETY: shutdown on a socket we own.
    if unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_WR) } < 0 {
        return Err(os_err("shutdown(SHUT_WR)".into()));
    }
    Ok(())
}

/// Sends all of `data` on a stream socket, waiting for room at most
/// `stall` each time no byte can be sent.
pub fn send_all(sock: &OwnedFd, data: &[u8], stall: Duration) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: rest is a live byte slice of the length given.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n > 0 {
            done += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR)
        {
            return Err(io::Error::new(
                e.kind(),
                format!("send ({done} of {} bytes sent): {e}", data.len()),
            ));
        }
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let t = Instant::now();
        // SAFETY: pfd is one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, stall.as_millis() as libc::c_int) };
        if r == 0 && t.elapsed() >= stall {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "send: no room for {} more bytes (of {})",
                    data.len() - done,
                    data.len()
                ),
            ));
        }
    }
    Ok(())
}

/// One datagram to `to`.
pub fn send_to(sock: &OwnedFd, data: &[u8], to: &[u8]) -> io::Result<()> {
    // SAFETY: data and to are live byte slices of the lengths given.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            to.as_ptr().cast(),
            to.len() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(os_err(format!("sendto {}", describe(to))));
    }
    Ok(())
}

/// The family of a raw address (0 if too short).
pub fn family(addr: &[u8]) -> i32 {
    addr.get(..2)
        .map(|b| i32::from(u16::from_ne_bytes([b[0], b[1]])))
        .unwrap_or(0)
}

/// The port of an IPv4/IPv6 address (0 otherwise).
pub fn port(addr: &[u8]) -> u16 {
    match family(addr) {
        libc::AF_INET | libc::AF_INET6 if addr.len() >= 4 => u16::from_be_bytes([addr[2], addr[3]]),
        _ => 0,
    }
}

/// The same IPv4/IPv6 address with port 0 (the kernel picks one).
pub fn with_port0(addr: &[u8]) -> Vec<u8> {
    let mut a = addr.to_vec();
    if matches!(family(addr), libc::AF_INET | libc::AF_INET6) && a.len() >= 4 {
        a[2] = 0;
        a[3] = 0;
    }
    a
}

/// A wildcard IPv4/IPv6 address (0.0.0.0, ::) turned into loopback, so a
/// datagram can be sent to a socket bound to it.
pub fn loopback_if_any(addr: &[u8]) -> Vec<u8> {
    let mut a = addr.to_vec();
    match family(addr) {
        libc::AF_INET if a.len() >= 8 && a[4..8] == [0; 4] => {
            a[4..8].copy_from_slice(&[127, 0, 0, 1])
        }
        libc::AF_INET6 if a.len() >= 24 && a[8..24] == [0; 16] => a[23] = 1,
        _ => {}
    }
    a
}

/// An IPv4/IPv6 address as (IPv6 bytes, port), IPv4 as v4-mapped, so the
/// two views of a dual-stack connection (`127.0.0.1` on one end,
/// `::ffff:127.0.0.1` on the other) compare equal. Flow info and scope id
/// are left out.
pub fn endpoint_key(addr: &[u8]) -> Option<([u8; 16], u16)> {
    match family(addr) {
        libc::AF_INET if addr.len() >= 8 => {
            let mut ip = [0u8; 16];
            ip[10] = 0xff;
            ip[11] = 0xff;
            ip[12..].copy_from_slice(&addr[4..8]);
            Some((ip, port(addr)))
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&addr[8..24]);
            Some((ip, port(addr)))
        }
        _ => None,
    }
}

/// `addr` as an address of `family`: IPv4 and v4-mapped IPv6 converted
/// into each other; `None` if it has no such form.
pub fn in_family(addr: &[u8], fam: i32) -> Option<Vec<u8>> {
    if family(addr) == fam {
        return Some(addr.to_vec());
    }
    let (ip, port) = endpoint_key(addr)?;
    let mut a = match fam {
        libc::AF_INET if ip[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] => {
            let mut a = vec![0u8; 16];
            a[4..8].copy_from_slice(&ip[12..]);
            a
        }
        libc::AF_INET6 => {
            let mut a = vec![0u8; 28];
            a[8..24].copy_from_slice(&ip);
            a
        }
        _ => return None,
    };
    a[..2].copy_from_slice(&(fam as u16).to_ne_bytes());
    a[2..4].copy_from_slice(&port.to_be_bytes());
    Some(a)
}

/// A readable form of a raw address for messages.
pub fn describe(addr: &[u8]) -> String {
    match family(addr) {
        libc::AF_INET if addr.len() >= 8 => {
            let ip = std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]);
            format!("{ip}:{}", port(addr))
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&addr[8..24]);
            format!("[{}]:{}", std::net::Ipv6Addr::from(b), port(addr))
        }
        libc::AF_UNIX => {
            let path = addr.get(2..).unwrap_or(&[]);
            match path.first() {
                None => "(unnamed)".into(),
                Some(0) => format!("@{}", String::from_utf8_lossy(&path[1..])),
                Some(_) => {
                    let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                    String::from_utf8_lossy(&path[..end]).into_owned()
                }
            }
        }
        f => format!("(family {f}, {} bytes)", addr.len()),
    }
}

/// `SO_LINGER {on, 0}`: a later `close` resets the connection (RST)
/// instead of the orderly FIN.
pub fn set_linger_reset(sock: &OwnedFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: l is a live linger of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err("setsockopt(SO_LINGER)".into()));
    }
    Ok(())
}

/// Waits at most `timeout` until `sock` reports `POLLHUP` or `POLLERR`
/// (its peer is gone); returns whether it did. Consumes nothing.
pub fn wait_hangup(sock: &OwnedFd, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // SAFETY: pfd is one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
        if r > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return true;
        }
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Segments a TCP socket ever sent (`tcpi_segs_out`): 0 for a socket that
/// never tried to connect.
pub fn tcp_segs_out(fd: RawFd) -> io::Result<u32> {
    let (info, len) = tcp_info(fd)?;
    // struct tcp_info: 8 bytes of u8 fields, 24 u32, 4 u64, then tcpi_segs_out.
    const SEGS_OUT: usize = 8 + 24 * 4 + 4 * 8;
    if len < SEGS_OUT + 4 {
        return Ok(0);
    }
    Ok(u32::from_ne_bytes(
        info[SEGS_OUT..SEGS_OUT + 4].try_into().unwrap_or([0; 4]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&ip);
        a
    }

    #[test]
    fn addresses() {
        let a = v4([127, 0, 0, 1], 4242);
        assert_eq!(describe(&a), "127.0.0.1:4242");
        assert_eq!(port(&with_port0(&a)), 0);
        assert_eq!(describe(&loopback_if_any(&v4([0; 4], 7))), "127.0.0.1:7");
        let mapped = in_family(&a, libc::AF_INET6).unwrap();
        assert_eq!(describe(&mapped), "[::ffff:127.0.0.1]:4242");
        assert_eq!(endpoint_key(&mapped), endpoint_key(&a));
        assert_eq!(in_family(&mapped, libc::AF_INET).unwrap(), a);
    }

    #[test]
    fn udp_peek_keeps_datagrams_and_sources() {
        let a = socket(libc::AF_INET, libc::SOCK_DGRAM).unwrap();
        let b = socket(libc::AF_INET, libc::SOCK_DGRAM).unwrap();
        bind(&a, &v4([127, 0, 0, 1], 0)).unwrap();
        bind(&b, &v4([127, 0, 0, 1], 0)).unwrap();
        let aa = sockaddr(a.as_raw_fd(), false).unwrap().unwrap();
        let ba = sockaddr(b.as_raw_fd(), false).unwrap().unwrap();
        send_to(&b, b"one", &aa).unwrap();
        send_to(&b, &[9u8; 3000], &aa).unwrap();
        let q1 = peek_datagrams(&a).unwrap();
        let q2 = peek_datagrams(&a).unwrap();
        assert_eq!(q1, q2);
        assert_eq!(
            q1,
            vec![(ba.clone(), b"one".to_vec()), (ba, vec![9u8; 3000])]
        );
    }

    #[test]
    fn tcp_peek_keeps_stream() {
        let l = socket(libc::AF_INET, libc::SOCK_STREAM).unwrap();
        bind(&l, &v4([127, 0, 0, 1], 0)).unwrap();
        listen(&l, 1).unwrap();
        let la = sockaddr(l.as_raw_fd(), false).unwrap().unwrap();
        let c = socket(libc::AF_INET, libc::SOCK_STREAM).unwrap();
        connect(&c, &la).unwrap();
        let s = accept(&l, Duration::from_secs(5)).unwrap();
        send_all(&c, &[5u8; 100_000], Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let q = crate::resources::unix::peek_queue(&s, libc::SOCK_STREAM).unwrap();
        assert_eq!(q, vec![vec![5u8; 100_000]]);
        assert_eq!(unacked(c.as_raw_fd()).unwrap(), 0);
        assert_eq!(tcp_state(s.as_raw_fd()).unwrap(), TCP_ESTABLISHED);
    }

    /// A sender whose receiver's buffer is full keeps bytes in its own
    /// queue; repair mode reads them (with CAP_NET_ADMIN) and the
    /// connection carries on afterwards with every byte once, in order.
    #[test]
    fn send_queue_of_a_blocked_sender() {
        let l = socket(libc::AF_INET, libc::SOCK_STREAM).unwrap();
        bind(&l, &v4([127, 0, 0, 1], 0)).unwrap();
        listen(&l, 1).unwrap();
        let la = sockaddr(l.as_raw_fd(), false).unwrap().unwrap();
        let c = socket(libc::AF_INET, libc::SOCK_STREAM).unwrap();
        connect(&c, &la).unwrap();
        let s = accept(&l, Duration::from_secs(5)).unwrap();
        set_int_opt(c.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap();
        let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
        // Send until the receiver's window is closed and our queue is full.
        let mut sent = 0;
        let mut stalls = 0;
        while stalls < 20 {
            let rest = &data[sent..];
            // SAFETY: rest is a live byte slice of the length given.
            let n = unsafe {
                libc::send(
                    c.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                sent += n as usize;
                stalls = 0;
            } else {
                stalls += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert!(
            sent < data.len(),
            "8 MB fitted: the receiver's window never closed"
        );
        std::thread::sleep(Duration::from_millis(50));
        let held = unacked(c.as_raw_fd()).unwrap();
        assert!(held > 0, "nothing held back by the sender");
        let in_receiver = crate::resources::unix::peek_queue(&s, libc::SOCK_STREAM)
            .unwrap()
            .concat();
        assert_eq!(in_receiver.len() + held, sent);
        // SAFETY: geteuid has no arguments and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        match peek_send_queue(&c) {
            Ok(q) => {
                assert!(root);
                assert_eq!(q, data[in_receiver.len()..sent]);
                assert_eq!(
                    int_opt(c.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR).unwrap(),
                    1
                );
            }
            Err(e) => {
                assert!(!root, "as root: {e}");
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            }
        }
        // The connection still delivers every byte once, in order.
        let mut got = Vec::with_capacity(sent);
        let mut buf = vec![0u8; 1 << 16];
        while got.len() < sent {
            // SAFETY: buf is a live buffer of the length given.
            let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(n > 0);
            got.extend_from_slice(&buf[..n as usize]);
        }
        assert_eq!(got, data[..sent]);
    }
}
