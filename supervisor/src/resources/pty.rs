//! Terminals: pseudo-terminals made inside the computation (read at
//! checkpoint through a duplicate of the master, recreated at restart) and
//! the settings of terminals outside it.
//!
//! A pty's settings live with its slave, but every ioctl used here works on
//! the master too (the kernel redirects termios and window size ioctls to
//! the slave), so the state is read from a `pidfd_getfd` duplicate of the
//! master. Bytes in flight are taken out with ordinary reads and written
//! straight back (with output processing, echo and signal characters
//! switched off for the moment), so the running program sees its pty as it
//! was, and the same bytes are written into the new pty at restart.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::os::unix::fs::MetadataExt;

use dmtcp_image::{FdEntry, FdKind, PtyState, Termios};

use crate::kernel::pid::HostPid;
use crate::kernel::procfs;
use crate::resources::fdshare::{is_ptmx, FdContext};
use crate::resources::{FdObjects, FdResource, OpenFd};

/// At most this many bytes are taken out of a pty in one direction.
const MAX_IN_FLIGHT: usize = 1 << 20;
/// At most this many other ptys are held open while looking for a number.
const MAX_FILLERS: usize = 1024;

fn os_err(what: impl std::fmt::Display) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `ioctl(fd, req, &mut int)`.
fn ioctl_get_int(fd: RawFd, req: libc::Ioctl, what: &str) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one c_int into v, a live local.
    if unsafe { libc::ioctl(fd, req, &mut v) } < 0 {
        return Err(os_err(what));
    }
    Ok(v)
}

/// `ioctl(fd, req, &int)`.
fn ioctl_set_int(fd: RawFd, req: libc::Ioctl, v: libc::c_int, what: &str) -> io::Result<()> {
    // SAFETY: the request reads one c_int from v, a live local.
    if unsafe { libc::ioctl(fd, req, &v) } < 0 {
        return Err(os_err(what));
    }
    Ok(())
}

/// The pts number of a pty master.
pub fn index(master: RawFd) -> io::Result<u32> {
    ioctl_get_int(master, libc::TIOCGPTN, "ioctl(TIOCGPTN)").map(|v| v as u32)
}

/// Reads the terminal settings of `fd` (a master reads its slave's).
pub fn termios(fd: RawFd) -> io::Result<Termios> {
    // SAFETY: termios is plain old data; zeroed is a valid value.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes into t, a live local.
    if unsafe { libc::tcgetattr(fd, &mut t) } < 0 {
        return Err(os_err("tcgetattr"));
    }
    Ok(Termios {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: t.c_line,
        cc: t.c_cc.to_vec(),
        ispeed: t.c_ispeed,
        ospeed: t.c_ospeed,
    })
}

/// Applies terminal settings to `fd` at once (`TCSANOW`).
pub fn set_termios(fd: RawFd, s: &Termios) -> io::Result<()> {
    // SAFETY: termios is plain old data; zeroed is a valid value.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    t.c_iflag = s.iflag;
    t.c_oflag = s.oflag;
    t.c_cflag = s.cflag;
    t.c_lflag = s.lflag;
    t.c_line = s.line;
    for (d, v) in t.c_cc.iter_mut().zip(&s.cc) {
        *d = *v;
    }
    t.c_ispeed = s.ispeed;
    t.c_ospeed = s.ospeed;
    // SAFETY: tcsetattr reads t, a live local.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } < 0 {
        return Err(os_err("tcsetattr"));
    }
    Ok(())
}

/// Settings under which bytes written to either side pass unchanged:
/// no output processing, no echo, no signal or input mapping. Canonical
/// mode is kept so lines written back stay lines.
fn passthrough(t: &Termios) -> Termios {
    let mut p = t.clone();
    p.oflag &= !libc::OPOST;
    p.lflag &= !(libc::ECHO | libc::ECHONL | libc::ISIG | libc::IEXTEN);
    p.iflag &= !(libc::ICRNL
        | libc::INLCR
        | libc::IGNCR
        | libc::IUCLC
        | libc::ISTRIP
        | libc::IXON
        | libc::IXOFF
        | libc::PARMRK);
    p
}

fn winsize(fd: RawFd) -> io::Result<[u16; 4]> {
    // SAFETY: winsize is plain old data; zeroed is a valid value.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into w.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) } < 0 {
        return Err(os_err("ioctl(TIOCGWINSZ)"));
    }
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel])
}

fn set_winsize(fd: RawFd, s: [u16; 4]) -> io::Result<()> {
    let w = libc::winsize {
        ws_row: s[0],
        ws_col: s[1],
        ws_xpixel: s[2],
        ws_ypixel: s[3],
    };
    // SAFETY: TIOCSWINSZ reads one winsize from w.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &w) } < 0 {
        return Err(os_err("ioctl(TIOCSWINSZ)"));
    }
    Ok(())
}

/// Opens a new description of the slave of `master` (`TIOCGPTPEER`), never
/// as our controlling terminal and close-on-exec.
pub fn open_slave(master: RawFd, flags: i32) -> io::Result<OwnedFd> {
    // O_CLOEXEC is set on the fd afterwards: passed here it would also
    // stay in the description's flags (the kernel keeps them as given).
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC))
        | libc::O_NOCTTY;
    // SAFETY: TIOCGPTPEER takes the open flags as an integer and returns a
    // fresh fd or -1.
    let fd = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(os_err("ioctl(TIOCGPTPEER)"));
    }
    // SAFETY: fd was just returned by the kernel and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::kernel::sys::set_cloexec(fd.as_raw_fd())?;
    Ok(fd)
}

/// The poll events of `fd` now (no timeout; a tty's poll also pushes
/// bytes the kernel has not handed to it yet).
fn poll_now(fd: RawFd) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: p is one live pollfd.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(os_err("poll"));
    }
    Ok(if r > 0 { p.revents } else { 0 })
}

/// True when `fd` can be read without blocking.
fn readable(fd: RawFd) -> io::Result<bool> {
    Ok(poll_now(fd)? & libc::POLLIN != 0)
}

/// Reads whatever `fd` holds now. With `packet`, every read starts with a
/// status byte: data follows only after a 0 (`TIOCPKT_DATA`).
fn drain(fd: RawFd, packet: bool) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4097];
    while out.len() < MAX_IN_FLIGHT && readable(fd)? {
        // SAFETY: buf is live and buf.len() bytes long.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // EIO: the other side is closed and nothing is left.
                Some(libc::EIO) | Some(libc::EAGAIN) => break,
                Some(libc::EINTR) => continue,
                _ => return Err(io::Error::new(e.kind(), format!("read: {e}"))),
            }
        }
        if n == 0 {
            break;
        }
        let got = &buf[..n as usize];
        match (packet, got.split_first()) {
            (true, Some((&0, data))) => out.extend_from_slice(data),
            (true, _) => {} // a status byte only (flush/stop/start events)
            (false, _) => out.extend_from_slice(got),
        }
    }
    Ok(out)
}

fn write_all(fd: RawFd, mut bytes: &[u8], what: &str) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: bytes is a live slice of bytes.len() bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os_err(what));
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Puts bytes in flight into a pty: `output` is written to the slave (to be
/// read from the master), `input` to the master (to be read from the
/// slave), under pass-through settings; `settings` are applied after.
fn put_in_flight(
    master: RawFd,
    slave: RawFd,
    settings: &Termios,
    output: &[u8],
    input: &[u8],
) -> io::Result<()> {
    if output.is_empty() && input.is_empty() {
        return Ok(());
    }
    set_termios(master, &passthrough(settings))?;
    let written = write_all(slave, output, "writing pty output back")
        .and_then(|()| write_all(master, input, "writing pty input back"));
    let restored = set_termios(master, settings);
    written.and(restored)
}

/// Reads the state of the pty whose master `master` is (a duplicate of a
/// frozen process's fd): settings, window size, modes and the bytes in
/// flight both ways. The bytes are put back at once, so the pty is left as
/// it was found. A partial line in canonical mode is read by switching
/// canonical mode off for the moment.
///
/// Putting bytes back needs a slave fd of our own. Opening one is harmless
/// only while the computation holds the slave (`slave_held`): closing the
/// last slave fd hangs the master up, which a pty whose slave was never
/// opened must not see. Otherwise the bytes in flight are not saved.
pub fn capture(master: &OwnedFd, slave_held: bool) -> io::Result<PtyState> {
    let m = master.as_raw_fd();
    let settings = termios(m)?;
    let packet = ioctl_get_int(m, libc::TIOCGPKT, "ioctl(TIOCGPKT)")? != 0;
    let locked = ioctl_get_int(m, libc::TIOCGPTLCK, "ioctl(TIOCGPTLCK)")? != 0;
    let winsize = winsize(m)?;
    let hangup = !slave_held && poll_now(m)? & libc::POLLHUP != 0;
    if locked || !slave_held {
        return Ok(PtyState {
            termios: settings,
            winsize,
            packet,
            locked,
            output: Vec::new(),
            input: Vec::new(),
            hangup,
        });
    }
    let output = drain(m, packet)?;
    let slave = open_slave(m, libc::O_RDWR | libc::O_NONBLOCK)?;
    let s = slave.as_raw_fd();
    let mut raw = settings.clone();
    raw.lflag &= !libc::ICANON;
    raw.cc[libc::VMIN] = 0;
    raw.cc[libc::VTIME] = 0;
    set_termios(m, &raw)?;
    let input = drain(s, false);
    set_termios(m, &settings)?;
    let input = input?;
    put_in_flight(m, s, &settings, &output, &input)?;
    Ok(PtyState {
        termios: settings,
        winsize,
        packet,
        locked,
        output,
        input,
        hangup,
    })
}

/// Opens a new pty master (`/dev/ptmx`).
fn open_ptmx() -> io::Result<OwnedFd> {
    let path = CString::new("/dev/ptmx").expect("no NUL");
    // SAFETY: path is a valid C string; open returns a fresh fd or -1.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("open /dev/ptmx"));
    }
    // SAFETY: fd was just returned by open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The ptys of a computation, made again at restart: pts number at
/// checkpoint -> master.
#[derive(Default)]
pub struct Ptys {
    made: HashMap<u32, OwnedFd>,
}

impl Ptys {
    /// Makes one pty per master in `entries`, each with the pts number it
    /// had when that number is free (ptys are numbered lowest free first,
    /// so lower free numbers are held open meanwhile), and restores the
    /// saved state of each.
    pub fn create(entries: &[FdEntry]) -> io::Result<Ptys> {
        let mut wanted: Vec<u32> = entries
            .iter()
            .filter_map(|e| match e.kind {
                FdKind::PtyMaster { index, .. } => Some(index),
                _ => None,
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut ptys = Ptys::default();
        let mut fillers = Vec::new();
        for want in wanted {
            let master = loop {
                let m = open_ptmx()?;
                let got = index(m.as_raw_fd())?;
                if got >= want || fillers.len() >= MAX_FILLERS {
                    if got != want {
                        tracing::warn!("pts {want} is taken: the pty comes back as /dev/pts/{got}");
                    }
                    break m;
                }
                fillers.push(m);
            };
            ioctl_set_int(master.as_raw_fd(), libc::TIOCSPTLCK, 0, "unlockpt")?;
            ptys.made.insert(want, master);
        }
        drop(fillers);
        for e in entries {
            if let FdKind::PtyMaster {
                index,
                state: Some(st),
                ..
            } = &e.kind
            {
                ptys.restore_state(*index, st)
                    .map_err(|err| io::Error::new(err.kind(), format!("pty {index}: {err}")))?;
            }
        }
        Ok(ptys)
    }

    fn restore_state(&self, index: u32, st: &PtyState) -> io::Result<()> {
        let m = self.made[&index].as_raw_fd();
        // A slave fd of our own only when needed: closing it hangs the
        // master up (wanted when it was hung up, and harmless when the
        // processes hold slave fds of their own).
        if !st.output.is_empty() || !st.input.is_empty() || st.hangup {
            let slave = open_slave(m, libc::O_RDWR)?;
            put_in_flight(m, slave.as_raw_fd(), &st.termios, &st.output, &st.input)?;
        }
        set_termios(m, &st.termios)?;
        set_winsize(m, st.winsize)?;
        ioctl_set_int(m, libc::TIOCPKT, st.packet as libc::c_int, "ioctl(TIOCPKT)")?;
        if st.locked {
            ioctl_set_int(m, libc::TIOCSPTLCK, 1, "ioctl(TIOCSPTLCK)")?;
        }
        Ok(())
    }

    /// An fd for a saved master or slave entry: the master itself (a pty
    /// has one master description) or a new description of the slave.
    pub fn open(&self, index: u32, slave: bool, flags: i32) -> io::Result<OwnedFd> {
        let m = self
            .made
            .get(&index)
            .ok_or_else(|| io::Error::other(format!("pty {index} was not created")))?;
        let fd = if slave {
            open_slave(m.as_raw_fd(), flags & !libc::O_CLOEXEC)?
        } else {
            crate::kernel::sys::dup_above(m.as_raw_fd(), 0)?
        };
        if !slave {
            let status = flags & (libc::O_NONBLOCK | libc::O_APPEND | libc::O_ASYNC);
            // SAFETY: fcntl on an fd we own.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, status) } < 0 {
                return Err(os_err(format!("fcntl(F_SETFL) on pty {index} master")));
            }
        }
        Ok(fd)
    }
}

/// Makes the terminal of `fd` the controlling terminal of the calling
/// process (a session leader without one).
pub fn set_controlling(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        return Err(os_err("ioctl(TIOCSCTTY)"));
    }
    Ok(())
}

/// Opens the calling process's controlling terminal (`/dev/tty`) with
/// `flags` (creation flags dropped; close-on-exec), if it has one.
pub fn open_controlling(flags: i32) -> Option<OwnedFd> {
    let path = CString::new("/dev/tty").expect("no NUL");
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC)) | libc::O_NOCTTY;
    // SAFETY: path is a valid C string; open returns a fresh fd or -1.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    // SAFETY: fd was just returned by open and nothing else owns it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The calling process's controlling terminal, if it has one.
fn own_terminal() -> Option<OwnedFd> {
    open_controlling(libc::O_RDWR)
}

/// Sends `sig` to the foreground process group of the calling process's
/// controlling terminal (nothing without one).
pub fn signal_foreground(sig: i32) -> io::Result<()> {
    let Some(tty) = own_terminal() else {
        return Ok(());
    };
    // SAFETY: tcgetpgrp takes no pointers.
    let pgrp = unsafe { libc::tcgetpgrp(tty.as_raw_fd()) };
    if pgrp <= 0 {
        return Err(os_err("tcgetpgrp"));
    }
    // SAFETY: kill with integer arguments.
    if unsafe { libc::kill(-pgrp, sig) } < 0 {
        return Err(os_err(format!("kill(-{pgrp}, {sig})")));
    }
    Ok(())
}

/// Whether the calling process has a controlling terminal and is in its
/// foreground process group.
pub fn in_foreground() -> bool {
    own_terminal().is_some_and(|tty| is_foreground(&tty))
}

fn is_foreground(tty: &OwnedFd) -> bool {
    // SAFETY: tcgetpgrp/getpgrp take no pointers.
    unsafe { libc::tcgetpgrp(tty.as_raw_fd()) == libc::getpgrp() }
}

/// Applies saved settings to the controlling terminal of the calling
/// process (`/dev/tty`) if it has one and is in its foreground group.
/// Returns whether they were applied.
pub fn apply_to_own_terminal(s: &Termios) -> io::Result<bool> {
    let Some(tty) = own_terminal() else {
        return Ok(false);
    };
    if !is_foreground(&tty) {
        return Ok(false);
    }
    set_termios(tty.as_raw_fd(), s)?;
    Ok(true)
}

/// The device number of the terminal behind `fd` (`TIOCGDEV`; for
/// `/dev/tty`, the controlling terminal it was opened on).
pub fn device_of(fd: RawFd) -> io::Result<u64> {
    let mut dev: libc::c_uint = 0;
    // SAFETY: TIOCGDEV writes one unsigned int into dev, a live local.
    if unsafe { libc::ioctl(fd, libc::TIOCGDEV, &mut dev) } < 0 {
        return Err(os_err("ioctl(TIOCGDEV)"));
    }
    Ok(dev as u64)
}

/// `major:minor` of a pts device -> its number (Unix98 ptys use majors
/// 136-143, 256 minors each).
pub fn pts_index(rdev: u64) -> Option<u32> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (136..=143)
        .contains(&major)
        .then(|| (major - 136) * 256 + minor)
}

/// (pts number, is master) when the fd is either side of a pty whose
/// master is held inside the computation. `/dev/tty` opened on such a pty
/// counts as its slave (it is restored as a slave fd: the process has no
/// controlling terminal yet when nsinit opens the fds).
fn internal_pty(
    pid: HostPid,
    fd: i32,
    target: &str,
    rdev: u64,
    fdctx: &FdContext,
) -> Option<(u32, bool)> {
    let (index, master) = if is_ptmx(target) {
        let info = procfs::fdinfo_text(pid, fd).ok()?;
        (procfs::fdinfo_tty_index(&info)?, true)
    } else if rdev == libc::makedev(5, 0) {
        let dup = crate::kernel::sys::steal_fd(pid.0, fd).ok()?;
        (pts_index(device_of(dup.as_raw_fd()).ok()?)?, false)
    } else {
        (pts_index(rdev)?, false)
    };
    fdctx.is_internal_pty(index).then_some((index, master))
}

/// Both sides of ptys whose master is inside the computation.
pub struct Pty;

impl FdResource for Pty {
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        let (pid, fd, target, flags) = (f.pid, f.fd, f.target, f.flags);
        if !target.starts_with('/') || target.ends_with(" (deleted)") {
            return Ok(None);
        }
        let Ok(meta) = std::fs::metadata(format!("/proc/{}/fd/{fd}", pid.0)) else {
            return Ok(None);
        };
        if meta.mode() & libc::S_IFMT != libc::S_IFCHR {
            return Ok(None);
        }
        let Some((index, master)) = internal_pty(pid, fd, target, meta.rdev(), cx) else {
            return Ok(None);
        };
        if !master {
            return Ok(Some(FdKind::PtySlave {
                index,
                flags,
                dev_tty: target == "/dev/tty",
            }));
        }
        let state = if cx.claim_pty(index) {
            let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
            let slave_held = cx.holds_pty_slave(index);
            Some(capture(&dup, slave_held).map_err(|e| {
                io::Error::new(e.kind(), format!("pty master fd {fd} (pts {index}): {e}"))
            })?)
        } else {
            None
        };
        Ok(Some(FdKind::PtyMaster {
            index,
            flags,
            state,
        }))
    }

    fn restore(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd> {
        match &e.kind {
            FdKind::PtyMaster { index, flags, .. } => objects.ptys.open(*index, false, *flags),
            FdKind::PtySlave { index, flags, .. } => objects.ptys.open(*index, true, *flags),
            _ => Err(super::wrong_kind(e, "pty")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        let m = open_ptmx().unwrap();
        ioctl_set_int(m.as_raw_fd(), libc::TIOCSPTLCK, 0, "unlockpt").unwrap();
        let s = open_slave(m.as_raw_fd(), libc::O_RDWR | libc::O_NONBLOCK).unwrap();
        (m, s)
    }

    /// One read (a tty in canonical mode returns one line per read).
    fn read_now(fd: RawFd) -> Vec<u8> {
        let mut b = [0u8; 256];
        // SAFETY: b is a live buffer of b.len() bytes.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
        b[..n.max(0) as usize].to_vec()
    }

    #[test]
    fn capture_takes_bytes_in_flight_and_leaves_them_in_place() {
        let (m, s) = pair();
        let mut t = termios(m.as_raw_fd()).unwrap();
        t.lflag |= libc::ICANON;
        t.lflag &= !libc::ECHO;
        t.cc[libc::VMIN] = 3;
        set_termios(m.as_raw_fd(), &t).unwrap();
        write_all(m.as_raw_fd(), b"one\ntwo\npart", "master").unwrap();
        write_all(s.as_raw_fd(), b"out\n", "slave").unwrap();

        let st = capture(&m, true).unwrap();
        assert_eq!(st.input, b"one\ntwo\npart");
        assert_eq!(st.output, b"out\r\n");
        assert_eq!(st.termios, t);

        // The live pty is as it was: whole lines one by one, the partial
        // line still pending, output unchanged and nothing echoed.
        assert_eq!(read_now(m.as_raw_fd()), b"out\r\n");
        assert_eq!(read_now(s.as_raw_fd()), b"one\n");
        assert_eq!(read_now(s.as_raw_fd()), b"two\n");
        assert_eq!(read_now(s.as_raw_fd()), b"");
        write_all(m.as_raw_fd(), b"ial\n", "master").unwrap();
        assert_eq!(read_now(s.as_raw_fd()), b"partial\n");
        assert_eq!(termios(m.as_raw_fd()).unwrap(), t);
    }

    #[test]
    fn a_new_pty_gets_the_saved_state() {
        let (m, _s) = pair();
        let mut t = termios(m.as_raw_fd()).unwrap();
        t.lflag &= !libc::ECHO;
        t.cc[libc::VQUIT] = 0x1d;
        let want = index(m.as_raw_fd()).unwrap();
        let state = PtyState {
            termios: t.clone(),
            winsize: [30, 100, 0, 0],
            packet: false,
            locked: false,
            output: b"out\r\n".to_vec(),
            input: b"in\npar".to_vec(),
            hangup: false,
        };
        let entries = [FdEntry {
            fd: 3,
            cloexec: false,
            desc: 1,
            kind: FdKind::PtyMaster {
                index: want,
                flags: libc::O_RDWR,
                state: Some(state),
            },
            locks: Vec::new(),
        }];
        drop((m, _s));
        let ptys = Ptys::create(&entries).unwrap();
        let m = ptys.open(want, false, libc::O_RDWR).unwrap();
        let s = ptys
            .open(want, true, libc::O_RDWR | libc::O_NONBLOCK)
            .unwrap();
        assert_eq!(termios(m.as_raw_fd()).unwrap(), t);
        assert_eq!(winsize(m.as_raw_fd()).unwrap(), [30, 100, 0, 0]);
        assert_eq!(read_now(m.as_raw_fd()), b"out\r\n");
        assert_eq!(read_now(s.as_raw_fd()), b"in\n");
        assert_eq!(read_now(s.as_raw_fd()), b"");
    }

    #[test]
    fn a_slave_never_opened_stays_unopened_and_a_hangup_is_kept() {
        let m = open_ptmx().unwrap();
        ioctl_set_int(m.as_raw_fd(), libc::TIOCSPTLCK, 0, "unlockpt").unwrap();
        let st = capture(&m, false).unwrap();
        assert!(!st.hangup);
        assert_eq!(poll_now(m.as_raw_fd()).unwrap() & libc::POLLHUP, 0);
        drop(open_slave(m.as_raw_fd(), libc::O_RDWR).unwrap());
        let hung = capture(&m, false).unwrap();
        assert!(hung.hangup);

        let entry = |index, state| FdEntry {
            fd: 3,
            cloexec: false,
            desc: 1,
            kind: FdKind::PtyMaster {
                index,
                flags: libc::O_RDWR,
                state: Some(state),
            },
            locks: Vec::new(),
        };
        let a = index(m.as_raw_fd()).unwrap();
        let b = a + 1;
        drop(m);
        let ptys = Ptys::create(&[entry(a, st), entry(b, hung)]).unwrap();
        let (ma, mb) = (&ptys.made[&a], &ptys.made[&b]);
        assert_eq!(poll_now(ma.as_raw_fd()).unwrap() & libc::POLLHUP, 0);
        assert_ne!(poll_now(mb.as_raw_fd()).unwrap() & libc::POLLHUP, 0);
    }
}
