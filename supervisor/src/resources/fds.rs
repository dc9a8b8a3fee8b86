//! Re-opening the file descriptors of an image inside a restart shell.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use dmtcp_image::{FdEntry, FdKind};

fn open(path: &str, flags: i32, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::other("NUL in path"))?;
    // SAFETY: c is a valid C string; open returns a fresh fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("open {path}: {e}")));
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn seek(fd: &OwnedFd, offset: u64, path: &str) -> io::Result<()> {
    // SAFETY: lseek on an fd we own.
    if unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, libc::SEEK_SET) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("seek {path} to {offset}: {e}"),
        ));
    }
    Ok(())
}

fn owned(fd: libc::c_int, what: &str) -> io::Result<OwnedFd> {
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    // SAFETY: fd was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers every saved epoll watch; call once all fds sit at their numbers.
pub fn add_epoll_watches(entries: &[FdEntry]) -> io::Result<()> {
    for e in entries {
        let FdKind::Epoll { watches, .. } = &e.kind else {
            continue;
        };
        for &(tfd, events, data) in watches {
            let mut ev = libc::epoll_event { events, u64: data };
            // SAFETY: ev is a live epoll_event; both fds are ours.
            if unsafe { libc::epoll_ctl(e.fd, libc::EPOLL_CTL_ADD, tfd, &mut ev) } < 0 {
                let err = io::Error::last_os_error();
                return Err(io::Error::new(
                    err.kind(),
                    format!("epoll fd {}: watching fd {tfd}: {err}", e.fd),
                ));
            }
        }
    }
    Ok(())
}

/// Flags that must not be replayed when re-opening.
const CREATION: i32 = libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY;

/// Pipes, unix socket pairs and ptys of the computation, created once per
/// id: pipes as (read end, write end), socket pairs as [end 0, end 1], ptys
/// by pts number; and its TCP connections, UDP sockets and named unix pairs.
#[derive(Default)]
pub struct Pipes {
    made: HashMap<u64, (OwnedFd, OwnedFd)>,
    pairs: HashMap<u64, [OwnedFd; 2]>,
    net: crate::resources::inet::restore::NetSockets,
    /// Ptys made inside the computation, by pts number at checkpoint.
    ptys: crate::resources::pty::Ptys,
    /// Memfds by id, with the seals to add once they are filled and parked.
    memfds: HashMap<u64, (OwnedFd, i32)>,
}

impl Pipes {
    /// Creates every pipe and unix socket pair the entries name and puts
    /// their buffered bytes and queued messages back.
    pub fn create(entries: &[FdEntry]) -> io::Result<Pipes> {
        let mut p = Pipes {
            net: crate::resources::inet::restore::NetSockets::create(entries)?,
            ptys: crate::resources::pty::Ptys::create(entries)?,
            ..Pipes::default()
        };
        for e in entries {
            if let FdKind::Memfd {
                id,
                name,
                size,
                seals,
                contents,
                ..
            } = &e.kind
            {
                p.ensure_memfd(*id, name, 0)?;
                if let Some(c) = contents {
                    let (fd, s) = p.memfds.get_mut(id).expect("just made");
                    *s = *seals;
                    let mut f = std::fs::File::from(fd.try_clone()?);
                    f.write_all(c)
                        .and_then(|()| f.set_len(*size))
                        .map_err(|err| {
                            io::Error::new(err.kind(), format!("filling memfd:{name}: {err}"))
                        })?;
                }
                continue;
            }
            if let FdKind::UnixPair {
                id,
                end,
                sotype,
                queued,
                ..
            } = &e.kind
            {
                p.create_pair(*id, *end, *sotype, queued)
                    .map_err(|err| io::Error::new(err.kind(), format!("fd {}: {err}", e.fd)))?;
                continue;
            }
            let FdKind::Pipe { id, buffered, .. } = &e.kind else {
                continue;
            };
            if !p.made.contains_key(id) {
                let (rd, wr) = crate::kernel::sys::pipe_cloexec()?;
                let rd = OwnedFd::from(rd);
                p.made.insert(*id, (rd, wr));
            }
            if !buffered.is_empty() {
                let (_, wr) = &p.made[id];
                // SAFETY: fcntl on our own pipe fd; failure keeps the default size.
                unsafe {
                    libc::fcntl(
                        wr.as_raw_fd(),
                        libc::F_SETPIPE_SZ,
                        buffered.len().max(4096) as libc::c_int,
                    )
                };
                let mut f = std::fs::File::from(wr.try_clone()?);
                f.write_all(buffered)
                    .map_err(|e| io::Error::new(e.kind(), format!("refilling pipe: {e}")))?;
            }
        }
        Ok(p)
    }

    /// Makes memfd `id` named `name`, `size` bytes long, if it is new.
    pub fn ensure_memfd(&mut self, id: u64, name: &str, size: u64) -> io::Result<()> {
        if self.memfds.contains_key(&id) {
            return Ok(());
        }
        let fd = crate::kernel::sys::memfd_create(name)?;
        std::fs::File::from(fd.try_clone()?).set_len(size)?;
        self.memfds.insert(id, (fd, 0));
        Ok(())
    }

    /// Memfd `id` (raw fd) and whether it may be mapped writable (no write seal).
    pub fn memfd(&self, id: u64) -> io::Result<(i32, bool)> {
        let (fd, seals) = self
            .memfds
            .get(&id)
            .ok_or_else(|| io::Error::other(format!("memfd {id} was not created")))?;
        Ok((fd.as_raw_fd(), seals & libc::F_SEAL_WRITE == 0))
    }

    /// Adds the saved seals to every memfd (after filling and parking).
    pub fn seal_memfds(&self) -> io::Result<()> {
        for (id, (fd, seals)) in &self.memfds {
            if *seals == 0 {
                continue;
            }
            // SAFETY: fcntl with an integer argument on our own fd.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, *seals) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("sealing memfd {id}: {e}")));
            }
        }
        Ok(())
    }

    /// Makes pair `id` if it is new and queues `queued` for reading on end
    /// `end` (sent from the other end, so order and boundaries are kept).
    fn create_pair(&mut self, id: u64, end: u8, sotype: i32, queued: &[Vec<u8>]) -> io::Result<()> {
        if end > 1 {
            return Err(io::Error::other(format!("unix pair {id}: bad end {end}")));
        }
        let pair = match self.pairs.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(crate::resources::unix::socketpair(sotype)?)
            }
        };
        if !queued.is_empty() {
            crate::resources::unix::refill(&pair[usize::from(1 - end)], queued)
                .map_err(|e| io::Error::new(e.kind(), format!("unix pair {id} end {end}: {e}")))?;
        }
        Ok(())
    }
}

/// A new fd for a socket made by `Pipes::create`, with the saved
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

/// Opens the object an fd entry describes, at any free number.
pub fn open_fd(e: &FdEntry, pipes: &Pipes) -> io::Result<OwnedFd> {
    match &e.kind {
        FdKind::Pipe {
            id, write, flags, ..
        } => {
            let (rd, wr) = &pipes.made[id];
            let end = if *write { wr } else { rd };
            let fd = crate::kernel::sys::dup_above(end.as_raw_fd(), 0)?;
            let status = flags & (libc::O_NONBLOCK | libc::O_DIRECT);
            // SAFETY: fcntl on an fd we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, status) };
            Ok(fd)
        }
        FdKind::UnixPair { id, end, flags, .. } => {
            let sock = pipes
                .pairs
                .get(id)
                .and_then(|p| p.get(usize::from(*end)))
                .ok_or_else(|| io::Error::other(format!("unix pair {id} end {end} was not created")))?;
            let fd = crate::kernel::sys::dup_above(sock.as_raw_fd(), 0)?;
            // SAFETY: fcntl on an fd we own; a socket end is one description
            // per end, so its status flags are this end's.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & libc::O_NONBLOCK) } < 0 {
                let err = io::Error::last_os_error();
                return Err(io::Error::new(err.kind(), format!("fcntl(F_SETFL) on unix pair {id}: {err}")));
            }
            Ok(fd)
        }
        FdKind::TcpConn { id, end, flags, .. } => {
            dup_socket(pipes.net.tcp(*id, *end), *flags, &format!("tcp connection {id} end {end}"))
        }
        FdKind::Udp { id, flags, .. } => {
            dup_socket(pipes.net.udp(*id), *flags, &format!("udp socket {id}"))
        }
        FdKind::UnixNamedPair { id, end, flags, .. } => dup_socket(
            pipes.net.unix(*id, *end),
            *flags,
            &format!("unix connection {id} end {end}"),
        ),
        FdKind::File {
            path,
            flags,
            offset,
            deleted: false,
            ..
        } => {
            let fd = open(path, flags & !CREATION, 0)?;
            seek(&fd, *offset, path)?;
            Ok(fd)
        }
        FdKind::File {
            path,
            flags,
            offset,
            deleted: true,
            contents,
        } => {
            // A deleted file comes back as an unnamed file in the same
            // directory with the saved contents.
            let dir = Path::new(path)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/tmp".into());
            let fd = open(&dir, libc::O_TMPFILE | libc::O_RDWR, 0o600)
                .or_else(|_| open("/tmp", libc::O_TMPFILE | libc::O_RDWR, 0o600))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(contents.as_deref().unwrap_or(&[]))?;
            let fd = OwnedFd::from(f);
            // Reopen with the original access mode through /proc.
            let again = open(
                &format!("/proc/self/fd/{}", fd.as_raw_fd()),
                flags & !CREATION,
                0,
            )
            .unwrap_or(fd);
            seek(&again, *offset, path)?;
            Ok(again)
        }
        FdKind::Device { path, flags } => open(path, flags & !CREATION, 0),
        FdKind::Inherit { from, what } => crate::kernel::sys::dup_above(*from, 0).or_else(|_| {
            eprintln!(
                "dmtcp-restart: fd {} was {what} outside the computation and this restart has no fd {from}; it is /dev/null now",
                e.fd
            );
            open("/dev/null", libc::O_RDWR, 0)
        }),
        FdKind::Listener {
            family,
            sotype,
            addr,
            flags,
            backlog,
        } => {
            let fd = crate::resources::unix::listen_again(*family, *sotype, addr, *backlog)?;
            // SAFETY: fcntl on an fd we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & libc::O_NONBLOCK) };
            Ok(fd)
        }
        FdKind::Epoll { .. } => {
            // Watches are added once every fd sits at its number (`add_epoll_watches`).
            // SAFETY: epoll_create1 returns a fresh fd or -1.
            owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }, "epoll_create1")
        }
        FdKind::EventFd {
            flags,
            count,
            semaphore,
        } => {
            let mut f = libc::EFD_CLOEXEC | (flags & libc::O_NONBLOCK);
            if *semaphore {
                f |= libc::EFD_SEMAPHORE;
            }
            let fd = owned(
                // SAFETY: eventfd returns a fresh fd or -1.
                unsafe { libc::eventfd(0, f) },
                "eventfd",
            )?;
            if *count > 0 {
                let mut w = std::fs::File::from(fd.try_clone()?);
                w.write_all(&count.to_ne_bytes())?;
            }
            Ok(fd)
        }
        FdKind::SignalFd { flags, mask } => {
            // The kernel's sigset_t for signalfd is the 8-byte mask we saved.
            let set = *mask;
            owned(
                // SAFETY: signalfd reads 8 bytes of mask from a live u64.
                unsafe {
                    libc::syscall(
                        libc::SYS_signalfd4,
                        -1,
                        &set as *const u64,
                        8usize,
                        libc::SFD_CLOEXEC | (flags & libc::O_NONBLOCK),
                    ) as libc::c_int
                },
                "signalfd",
            )
        }
        FdKind::TimerFd {
            flags,
            clock,
            value_ns,
            interval_ns,
        } => {
            let fd = owned(
                // SAFETY: timerfd_create returns a fresh fd or -1.
                unsafe { libc::timerfd_create(*clock, libc::TFD_CLOEXEC | (flags & libc::O_NONBLOCK)) },
                "timerfd_create",
            )?;
            if *value_ns > 0 {
                let ts = |ns: u64| libc::timespec {
                    tv_sec: (ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (ns % 1_000_000_000) as libc::c_long,
                };
                let spec = libc::itimerspec {
                    it_interval: ts(*interval_ns),
                    it_value: ts(*value_ns),
                };
                // SAFETY: spec is a live itimerspec; old value not requested.
                if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(fd)
        }
        FdKind::PtyMaster { index, flags, .. } => pipes.ptys.open(*index, false, *flags),
        FdKind::PtySlave { index, flags, .. } => pipes.ptys.open(*index, true, *flags),
        FdKind::Memfd {
            id, flags, offset, ..
        } => {
            // A description of our own on the same memfd, with the saved flags.
            let (fd, _) = &pipes.memfds[id];
            let again = open(&format!("/proc/self/fd/{}", fd.as_raw_fd()), flags & !CREATION, 0)?;
            seek(&again, *offset, "memfd")?;
            Ok(again)
        }
        FdKind::Mqueue {
            name,
            flags,
            mode,
            maxmsg,
            msgsize,
            ..
        } => crate::resources::mqueue::open(name, *flags, *mode, *maxmsg, *msgsize),
        FdKind::Unsupported { what } => {
            eprintln!("dmtcp-restart: fd {} ({what}) cannot be restored yet; it is /dev/null now", e.fd);
            open("/dev/null", libc::O_RDWR, 0)
        }
    }
}
