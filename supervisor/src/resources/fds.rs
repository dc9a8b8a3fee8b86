//! The fd table of a process: which resource kind each fd is (capture) and
//! opening each fd entry of an image again (restore), through one registry
//! of the kinds.
//!
//! Adding an fd kind: a variant of [`FdKind`] in the image, a module under
//! `resources/` implementing [`FdResource`], one line in [`CAPTURE_ORDER`]
//! and one arm in [`open_fd`] (the match is exhaustive: a kind without a
//! restore does not compile).

use std::io;
use std::os::fd::OwnedFd;

use dmtcp_image::{FdEntry, FdKind};

use crate::resources::fdshare::FdContext;
use crate::resources::{
    anonfd::AnonFd, files::Files, ghost::Ghost, inet::Inet, inotify::Inotify, memfd::Memfd,
    mqueue::Mqueue, pipes::Pipes, pty::Pty, unix::Unix, FdResource, OpenFd,
};

/// The capture of one fd kind: `None` when the fd is not of that kind.
type CaptureFn = fn(&OpenFd<'_>, &mut FdContext) -> io::Result<Option<FdKind>>;

/// The kinds in the order they are tried; the first that recognises an fd
/// describes it. Order matters where targets overlap: a memfd and a
/// message queue look like (deleted) files, a pty like a device.
pub const CAPTURE_ORDER: &[CaptureFn] = &[
    Memfd::capture,
    Mqueue::capture,
    Pty::capture,
    Ghost::capture,
    Files::capture,
    Pipes::capture,
    Inet::capture,
    Unix::capture,
    Inotify::capture,
    AnonFd::capture,
];

/// What fd `f` is, for the image. An fd no kind can restore refuses the
/// checkpoint with one line naming the process, the fd and what it is,
/// unless `DMTCP_UNSUPPORTED_FDS=accept` (then it is saved as
/// `Unsupported` and is `/dev/null` after restart, with a warning).
pub fn capture_kind(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<FdKind> {
    let mut found = None;
    for capture in CAPTURE_ORDER {
        if let Some(kind) = capture(f, cx)? {
            found = Some(kind);
            break;
        }
    }
    let what = match found {
        Some(FdKind::Unsupported { what }) => what,
        Some(kind) => return Ok(kind),
        None => describe_unknown(f),
    };
    if std::env::var("DMTCP_UNSUPPORTED_FDS").is_ok_and(|v| v == "accept") {
        crate::resources::checkpoint_warning(format!(
            "pid {} fd {}: {what} cannot be checkpointed; it will be /dev/null after restart (DMTCP_UNSUPPORTED_FDS=accept)",
            f.pid.0,
            f.fd
        ));
        return Ok(FdKind::Unsupported { what });
    }
    Err(io::Error::other(format!(
        "pid {} fd {}: {what} cannot be checkpointed (close it first, or set DMTCP_UNSUPPORTED_FDS=accept to have it /dev/null after restart)",
        f.pid.0, f.fd
    )))
}

/// A readable name for an fd no kind knows: the socket family and type for
/// sockets, the link target otherwise.
fn describe_unknown(f: &OpenFd<'_>) -> String {
    use crate::kernel::netsys::int_opt;
    if !f.target.starts_with("socket:") {
        return f.target.to_string();
    }
    let Ok(dup) = crate::kernel::sys::steal_fd(f.pid.0, f.fd) else {
        return f.target.to_string();
    };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&dup);
    let opt = |o| int_opt(raw, libc::SOL_SOCKET, o).unwrap_or(-1);
    let (family, sotype, proto) = (
        opt(libc::SO_DOMAIN),
        opt(libc::SO_TYPE),
        opt(libc::SO_PROTOCOL),
    );
    let fam = match family {
        libc::AF_UNIX => "unix".to_string(),
        libc::AF_INET => "IPv4".into(),
        libc::AF_INET6 => "IPv6".into(),
        libc::AF_NETLINK => "netlink".into(),
        libc::AF_PACKET => "packet".into(),
        f => format!("family {f}"),
    };
    let ty = match sotype {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "datagram",
        libc::SOCK_SEQPACKET => "seqpacket",
        libc::SOCK_RAW => "raw",
        _ => "other",
    };
    format!(
        "{} ({fam} {ty} socket, protocol {proto}, not connected to a peer in the computation)",
        f.target
    )
}

/// Opens the object an fd entry describes, at any free number.
pub fn open_fd(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd> {
    match &e.kind {
        FdKind::File { .. }
        | FdKind::WrittenFile { .. }
        | FdKind::Device { .. }
        | FdKind::Inherit { .. }
        | FdKind::Unsupported { .. } => Files::restore(e, objects),
        FdKind::Pipe { .. } => Pipes::restore(e, objects),
        FdKind::Epoll { .. }
        | FdKind::EventFd { .. }
        | FdKind::SignalFd { .. }
        | FdKind::TimerFd { .. } => AnonFd::restore(e, objects),
        FdKind::UnixPair { .. } | FdKind::Listener { .. } => Unix::restore(e, objects),
        FdKind::TcpConn { .. }
        | FdKind::TcpRemote { .. }
        | FdKind::Udp { .. }
        | FdKind::UnixNamedPair { .. }
        | FdKind::OutsidePeer { .. } => Inet::restore(e, objects),
        FdKind::PtyMaster { .. } | FdKind::PtySlave { .. } => Pty::restore(e, objects),
        FdKind::Mqueue { .. } => Mqueue::restore(e, objects),
        FdKind::Memfd { .. } => Memfd::restore(e, objects),
        FdKind::Inotify { .. } => Inotify::restore(e, objects),
        FdKind::Ghost { .. } => Ghost::restore(e, objects),
    }
}

/// The objects several fds (and mappings) of the computation may share,
/// created once per id before any fd is opened: pipes, unix socket pairs,
/// memfds, ptys, and TCP connections, UDP sockets and named unix pairs.
/// Each kind keeps its own table; the restore of an fd takes its object
/// from there.
#[derive(Default)]
pub struct FdObjects {
    pub(crate) pipes: crate::resources::pipes::PipeSet,
    pub(crate) pairs: crate::resources::unix::Pairs,
    pub(crate) net: crate::resources::inet::restore::NetSockets,
    /// Ptys made inside the computation, by pts number at checkpoint.
    pub(crate) ptys: crate::resources::pty::Ptys,
    pub(crate) memfds: crate::resources::memfd::Memfds,
    /// Files unlinked while open or mapped, by id.
    pub(crate) ghosts: crate::resources::ghost::Ghosts,
    /// Names of message queues unlinked at checkpoint time.
    pub(crate) mq_names: crate::resources::mqueue::UnlinkedNames,
}

impl FdObjects {
    /// Creates every object the entries name and puts their contents back
    /// (buffered bytes, queued messages, memfd contents).
    pub fn create(entries: &[FdEntry]) -> io::Result<FdObjects> {
        let mut p = FdObjects {
            net: crate::resources::inet::restore::NetSockets::create(entries)?,
            ptys: crate::resources::pty::Ptys::create(entries)?,
            mq_names: crate::resources::mqueue::UnlinkedNames::new(entries),
            ..FdObjects::default()
        };
        for e in entries {
            match &e.kind {
                FdKind::Memfd { .. } => p.memfds.add(e)?,
                FdKind::Ghost { .. } => p.ghosts.add(e)?,
                FdKind::UnixPair { .. } => p.pairs.add(e)?,
                FdKind::Pipe { .. } => p.pipes.add(e)?,
                _ => {}
            }
        }
        Ok(p)
    }

    /// Makes memfd `id` named `name`, `size` bytes long, if it is new.
    pub fn ensure_memfd(&mut self, id: u64, name: &str, size: u64) -> io::Result<()> {
        self.memfds.ensure(id, name, size)
    }

    /// Memfd `id` (raw fd) and whether it may be mapped writable (no write seal).
    pub fn memfd(&self, id: u64) -> io::Result<(i32, bool)> {
        self.memfds.for_mapping(id)
    }

    /// Makes the unlinked file `id` (last at `path`), `size` bytes long, if
    /// it is new.
    pub fn ensure_ghost(&mut self, id: u64, path: &str, size: u64) -> io::Result<()> {
        self.ghosts.ensure(id, path, size)
    }

    /// The unlinked file `id` (raw fd, open for reading and writing).
    pub fn ghost(&self, id: u64) -> io::Result<i32> {
        self.ghosts.raw(id)
    }

    /// Adds the saved seals to every memfd (after filling and parking).
    pub fn seal_memfds(&self) -> io::Result<()> {
        self.memfds.seal()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    use super::*;
    use crate::kernel::pid::HostPid;
    use crate::kernel::procfs;

    /// The kind the registry gives fd `fd` of this very process, with a
    /// context that knows no other process (every pipe leads outside).
    fn classify(fd: RawFd, cx: &mut FdContext) -> FdKind {
        let me = HostPid(std::process::id() as i32);
        let target = procfs::link(me, &format!("fd/{fd}")).unwrap();
        let info = procfs::fdinfo_text(me, fd).unwrap();
        let (pos, flags) = procfs::fdinfo_pos_flags(&info);
        let open = OpenFd {
            pid: me,
            fd,
            target: &target,
            flags: flags & !libc::O_CLOEXEC,
            pos,
            info: &info,
        };
        capture_kind(&open, cx).unwrap()
    }

    fn owned(fd: libc::c_int) -> OwnedFd {
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: a fresh fd just returned by the kernel, owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn each_fd_kind_is_recognised_by_its_resource() {
        let mut cx = FdContext::default();
        let dir = std::env::temp_dir().join(format!("dmtcp-fds-test-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut file = std::fs::File::create(&dir).unwrap();
        file.write_all(b"hello").unwrap();
        match classify(file.as_raw_fd(), &mut cx) {
            FdKind::WrittenFile {
                path,
                offset: 5,
                size: 5,
                tail_crc,
                ..
            } => {
                assert_eq!(std::path::Path::new(&path), dir);
                assert_eq!(tail_crc, crc32fast::hash(b"hello"));
            }
            other => panic!("regular file open for writing: {other:?}"),
        }
        let reader = std::fs::File::open(&dir).unwrap();
        assert!(matches!(
            classify(reader.as_raw_fd(), &mut cx),
            FdKind::File { deleted: false, .. }
        ));
        std::fs::remove_file(&dir).unwrap();
        match classify(file.as_raw_fd(), &mut cx) {
            FdKind::Ghost {
                contents: Some(c),
                size: 5,
                offset: 5,
                ..
            } => assert_eq!(c, b"hello"),
            other => panic!("deleted file: {other:?}"),
        }

        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(
            classify(null.as_raw_fd(), &mut cx),
            FdKind::Device { .. }
        ));

        let (rd, _wr) = crate::kernel::sys::pipe_cloexec().unwrap();
        assert!(matches!(
            classify(rd.as_raw_fd(), &mut cx),
            FdKind::Inherit { .. }
        ));

        // SAFETY: plain syscalls returning fresh fds or -1.
        let efd = owned(unsafe { libc::eventfd(3, libc::EFD_CLOEXEC) });
        assert!(matches!(
            classify(efd.as_raw_fd(), &mut cx),
            FdKind::EventFd { count: 3, .. }
        ));
        // SAFETY: as above.
        let ep = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) });
        assert!(matches!(
            classify(ep.as_raw_fd(), &mut cx),
            FdKind::Epoll { .. }
        ));
        // SAFETY: as above.
        let tfd = owned(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) });
        assert!(matches!(
            classify(tfd.as_raw_fd(), &mut cx),
            FdKind::TimerFd {
                clock: libc::CLOCK_MONOTONIC,
                ..
            }
        ));
        let mask: u64 = 1 << (libc::SIGUSR1 - 1);
        // SAFETY: signalfd4 reads 8 bytes of mask from a live u64.
        let sfd = owned(unsafe {
            libc::syscall(
                libc::SYS_signalfd4,
                -1,
                &mask as *const u64,
                8usize,
                libc::SFD_CLOEXEC,
            ) as libc::c_int
        });
        assert!(matches!(
            classify(sfd.as_raw_fd(), &mut cx),
            FdKind::SignalFd { mask: m, .. } if m == mask
        ));

        let mfd = crate::kernel::sys::memfd_create("fds-test").unwrap();
        match classify(mfd.as_raw_fd(), &mut cx) {
            FdKind::Memfd { name, .. } => assert_eq!(name, "fds-test"),
            other => panic!("memfd: {other:?}"),
        }

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            classify(listener.as_raw_fd(), &mut cx),
            FdKind::Listener {
                family: libc::AF_INET,
                sotype: libc::SOCK_STREAM,
                ..
            }
        ));
        // A TCP connection whose peer this context does not know (no
        // examine ran): no kind takes it, so the checkpoint is refused.
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let me = HostPid(std::process::id() as i32);
        let fd = client.as_raw_fd();
        let target = procfs::link(me, &format!("fd/{fd}")).unwrap();
        let open = OpenFd {
            pid: me,
            fd,
            target: &target,
            flags: 0,
            pos: 0,
            info: "",
        };
        let err = capture_kind(&open, &mut cx).unwrap_err().to_string();
        assert!(
            err.contains(&format!("fd {fd}")) && err.contains("IPv4 stream socket"),
            "{err}"
        );
    }
}
