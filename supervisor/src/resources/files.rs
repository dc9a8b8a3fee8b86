//! Regular files, directories and character devices reopened by path;
//! deleted files with their contents; terminals and other fds on things
//! outside the computation (the restarting tool's own fd of that number).

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use dmtcp_image::{FdEntry, FdKind};

use crate::resources::fdshare::FdContext;
use crate::resources::{FdObjects, FdResource, OpenFd};

pub(crate) fn open(path: &str, flags: i32, mode: libc::mode_t) -> io::Result<OwnedFd> {
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

pub(crate) fn seek(fd: &OwnedFd, offset: u64, path: &str) -> io::Result<()> {
    // SAFETY: lseek on an fd we own.
    if unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, libc::SEEK_SET) } < 0 {
        let e = io::Error::last_os_error();
        // A FIFO opened by path (Open MPI's debugger_attach_fifo) has no
        // offset: offset 0 is what it had.
        if e.raw_os_error() == Some(libc::ESPIPE) && offset == 0 {
            return Ok(());
        }
        return Err(io::Error::new(
            e.kind(),
            format!("seek {path} to {offset}: {e}"),
        ));
    }
    Ok(())
}

/// Flags that must not be replayed when re-opening.
pub(crate) const CREATION: i32 = libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY;

fn is_tty(path: &str) -> bool {
    path.starts_with("/dev/pts/") || path.starts_with("/dev/tty") || path == "/dev/console"
}

/// Files and devices by path (after pipes, sockets and the other kinds
/// that also have a path-like target were tried).
pub struct Files;

impl FdResource for Files {
    fn capture(f: &OpenFd<'_>, _cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        let (pid, fd, target, flags, pos) = (f.pid, f.fd, f.target, f.flags, f.pos);
        // Without namespaces a /proc/PID file names the kernel pid; the
        // image keeps the pid the program knows (restored under another).
        let virtual_path = crate::kernel::pid::virt::enabled()
            .then(|| map_proc_pids(target, |r| Some(crate::kernel::pid::virt::of_real(r))))
            .flatten();
        let target = virtual_path.as_deref().unwrap_or(target);
        let kind = if let Some(path) = target.strip_suffix(" (deleted)") {
            let contents = std::fs::read(format!("/proc/{}/fd/{fd}", pid.0)).ok();
            FdKind::File {
                path: path.to_string(),
                flags,
                offset: pos,
                deleted: true,
                contents,
            }
        } else if target.starts_with('/') {
            let is_chr = std::fs::metadata(format!("/proc/{}/fd/{fd}", pid.0))
                .map(|m| m.mode() & libc::S_IFMT == libc::S_IFCHR)
                .unwrap_or(false);
            if is_chr && is_tty(target) && fd <= 2 {
                FdKind::Inherit {
                    from: fd,
                    what: target.to_string(),
                }
            } else if is_chr {
                FdKind::Device {
                    path: target.to_string(),
                    flags,
                }
            } else if let Some(w) = written_file(pid.0, fd, target, flags, pos) {
                w
            } else {
                FdKind::File {
                    path: target.to_string(),
                    flags,
                    offset: pos,
                    deleted: false,
                    contents: None,
                }
            }
        } else {
            return Ok(None);
        };
        Ok(Some(kind))
    }

    fn restore(e: &FdEntry, _objects: &FdObjects) -> io::Result<OwnedFd> {
        if let Some((path, flags, offset)) = by_path(e) {
            let fd = match open(path, flags & !CREATION, 0) {
                Err(err)
                    if err.kind() == io::ErrorKind::NotFound
                        && flags & libc::O_ACCMODE == libc::O_WRONLY =>
                {
                    let size = match &e.kind {
                        FdKind::WrittenFile { size, .. } => *size,
                        _ => offset,
                    };
                    recreate_missing(e.fd, path, flags, size)?
                }
                r => r?,
            };
            seek(&fd, offset, path)?;
            return Ok(fd);
        }
        match &e.kind {
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
                flags & !(CREATION | libc::O_NOFOLLOW),
                0,
            )
            .unwrap_or(fd);
            seek(&again, *offset, path)?;
            Ok(again)
        }
        FdKind::Device { path, flags } => open(path, flags & !CREATION, 0),
        FdKind::Inherit { from, what } => std::env::var(CLOSED_STDIO)
            .ok()
            .filter(|l| l.split(',').any(|f| f == from.to_string()))
            .map_or_else(|| crate::kernel::sys::dup_above(*from, 0), |_| Err(io::Error::from_raw_os_error(libc::EBADF)))
            .or_else(|_| {
            if what.starts_with("pipe:") || what.starts_with("socket:") {
                // The peer outside is gone with its process: what a closed
                // peer looks like (reads see end of file, writes EPIPE).
                eprintln!(
                    "dmtcp-restart: fd {} was {what} to a process outside the computation and this restart has no fd {from}; its peer is closed now",
                    e.fd
                );
                let (ours, peer) = std::os::unix::net::UnixStream::pair()?;
                drop(peer);
                return Ok(OwnedFd::from(ours));
            }
            eprintln!(
                "dmtcp-restart: fd {} was {what} outside the computation and this restart has no fd {from}; it is /dev/null now",
                e.fd
            );
            open("/dev/null", libc::O_RDWR, 0)
        }),
        FdKind::Unsupported { what } => {
            // Only saved with DMTCP_UNSUPPORTED_FDS=accept (the checkpoint is
            // refused otherwise).
            eprintln!("dmtcp-restart: fd {} ({what}) cannot be restored; it is /dev/null now (DMTCP_UNSUPPORTED_FDS=accept)", e.fd);
            open("/dev/null", libc::O_RDWR, 0)
        }
            _ => Err(super::wrong_kind(e, "file")),
        }
    }
}

/// A file the program only writes to, gone at restart (renamed or removed
/// since the checkpoint, as logrotate does), is created again as DMTCP
/// does: mode 0600 (the image does not keep the mode), `size` zero bytes in
/// place of what it held (the image does not keep that either), so the
/// program's offset lands where it was. Said in one line.
fn recreate_missing(fd: i32, path: &str, flags: i32, size: u64) -> io::Result<OwnedFd> {
    let made = open(
        path,
        (flags & !CREATION) | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )
    .map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("fd {fd}: {path} is gone and cannot be created again: {err}"),
        )
    })?;
    let f = std::fs::File::from(made);
    f.set_len(size)
        .map_err(|err| io::Error::new(err.kind(), format!("extending {path} to {size}: {err}")))?;
    // Created without following a link; the program's own flags (no
    // O_NOFOLLOW) come from a reopen of the new file itself.
    let made = OwnedFd::from(f);
    let f = open(
        &format!("/proc/self/fd/{}", made.as_raw_fd()),
        flags & !(CREATION | libc::O_NOFOLLOW),
        0,
    )
    .unwrap_or(made);
    eprintln!(
        "dmtcp-restart: fd {fd}: {path} was gone (renamed or removed after the checkpoint); created again, mode 0600, with {size} zero bytes where its contents were, as the program only writes to it"
    );
    Ok(f)
}

/// `/dev/null`, read-write: what holds a place until the real file opens.
pub fn open_dev_null() -> io::Result<OwnedFd> {
    open("/dev/null", libc::O_RDWR, 0)
}

/// Whether `path` is a file of one process's `/proc/PID/` directory (also
/// what `/proc/self/...` reads as), which cannot be opened before that
/// process exists at restart.
pub fn is_proc_pid_file(path: &str) -> bool {
    path.strip_prefix("/proc/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(pid, _)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// `path`, a [`is_proc_pid_file`], with its pid (and the tid of a
/// `/proc/PID/task/TID` path) mapped by `map`; `None` for any other path
/// or when `map` has no answer.
pub fn map_proc_pids(path: &str, map: impl Fn(i32) -> Option<i32>) -> Option<String> {
    fn number(s: &str) -> Option<i32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    }
    let (pid, rest) = path.strip_prefix("/proc/")?.split_once('/')?;
    let mut out = format!("/proc/{}/", map(number(pid)?)?);
    match rest.strip_prefix("task/") {
        Some(task) if !task.is_empty() => {
            let (tid, tail) = task
                .split_once('/')
                .map_or((task, None), |(t, r)| (t, Some(r)));
            out.push_str(&format!("task/{}", map(number(tid)?)?));
            if let Some(tail) = tail {
                out.push('/');
                out.push_str(tail);
            }
        }
        _ => out.push_str(rest),
    }
    Some(out)
}

/// The path, flags and offset of an fd reopened by its path: a file that
/// was not deleted, or one open for writing.
fn by_path(e: &FdEntry) -> Option<(&str, i32, u64)> {
    match &e.kind {
        FdKind::File {
            path,
            flags,
            offset,
            deleted: false,
            ..
        }
        | FdKind::WrittenFile {
            path,
            flags,
            offset,
            ..
        } => Some((path, *flags, *offset)),
        _ => None,
    }
}

/// The path, flags and offset of an fd that [`is_proc_pid_file`].
pub fn proc_pid_file(e: &FdEntry) -> Option<(&str, i32, u64)> {
    by_path(e).filter(|(path, _, _)| is_proc_pid_file(path))
}

/// Opens, in the restored process itself (its shell, once it exists), the
/// `/proc/PID/...` files nsinit could only hold places for: the process's
/// own entry, and those of processes made before it (its ancestors and its
/// children). The image's pids are the ones the program knows: `kernel`
/// gives the pid each has now (itself in the restart's pid namespace; the
/// new kernel pid without namespaces).
pub fn reopen_proc_files(fds: &[FdEntry], kernel: impl Fn(i32) -> i32) -> io::Result<()> {
    for e in fds {
        let Some((path, flags, offset)) = proc_pid_file(e) else {
            continue;
        };
        let path = map_proc_pids(path, |v| Some(kernel(v))).unwrap_or_else(|| path.to_string());
        let fd = open(&path, flags & !CREATION, 0)
            .map_err(|err| io::Error::new(err.kind(), format!("fd {}: {err}", e.fd)))?;
        // Not every /proc file can seek; those start at 0.
        let _ = seek(&fd, offset, &path);
        crate::kernel::sys::dup3(fd.as_raw_fd(), e.fd, e.cloexec)?;
    }
    Ok(())
}

/// Environment variable naming the standard fds `dmtcp-restart` was
/// started without (see [`hold_closed_stdio`]).
const CLOSED_STDIO: &str = "DMTCP_RESTART_CLOSED_STDIO";

/// Called first by `dmtcp-restart`: fds 0-2 it was started without (noted
/// by [`note_closed_stdio`](crate::kernel::sys::note_closed_stdio) from its
/// `.init_array`) are
/// held by a socket whose peer is closed (so nothing opened later lands on
/// them), and listed for nsinit, which then treats an inherited fd of that
/// number as missing: the program gets a closed peer and the restart says
/// so in one line.
pub fn hold_closed_stdio() {
    let mut closed = Vec::new();
    let at_start = crate::kernel::sys::CLOSED_AT_START.load(std::sync::atomic::Ordering::Relaxed);
    for fd in 0..=2 {
        // Closed at start (the runtime has put /dev/null there since), or
        // closed now.
        if at_start & (1 << fd) == 0 && crate::kernel::sys::fd_is_open(fd) {
            continue;
        }
        let Ok((ours, peer)) = std::os::unix::net::UnixStream::pair() else {
            continue;
        };
        drop(peer);
        if crate::kernel::sys::dup3(ours.as_raw_fd(), fd, false).is_ok() {
            closed.push(fd.to_string());
        }
    }
    if !closed.is_empty() {
        // Before any thread exists; nsinit inherits the environment.
        std::env::set_var(CLOSED_STDIO, closed.join(","));
    }
}

/// How many bytes before a file's checkpoint-time size its crc covers.
const TAIL: u64 = 4096;

/// crc32 of `[size - min(size, TAIL), size)` of `f`; `None` when the file
/// is shorter than `size` or cannot be read.
fn tail_crc(f: &std::fs::File, size: u64) -> Option<u32> {
    let start = size.saturating_sub(TAIL);
    let mut buf = vec![0u8; (size - start) as usize];
    std::os::unix::fs::FileExt::read_exact_at(f, &mut buf, start).ok()?;
    Some(crc32fast::hash(&buf))
}

/// A regular file open for writing, with what a restart needs to cut it
/// back to its checkpoint-time size; `None` for anything else (read-only,
/// not a regular file, a file we cannot read).
fn written_file(pid: i32, fd: i32, target: &str, flags: i32, pos: u64) -> Option<FdKind> {
    if flags & libc::O_ACCMODE == libc::O_RDONLY {
        return None;
    }
    let proc_path = format!("/proc/{pid}/fd/{fd}");
    // stat first: opening a FIFO or a device could block or act.
    if !std::fs::metadata(&proc_path).ok()?.file_type().is_file() {
        return None;
    }
    let f = open(&proc_path, libc::O_RDONLY | libc::O_NONBLOCK, 0)
        .ok()
        .map(std::fs::File::from)?;
    let meta = f.metadata().ok()?;
    Some(FdKind::WrittenFile {
        path: target.to_string(),
        flags,
        offset: pos,
        size: meta.len(),
        dev: meta.dev(),
        ino: meta.ino(),
        tail_crc: tail_crc(&f, meta.len())?,
    })
}

/// Whether `DMTCP_NO_TRUNCATE_FILES` is set to something other than 0.
pub fn truncation_disabled() -> bool {
    std::env::var("DMTCP_NO_TRUNCATE_FILES").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether a process other than `except` (host pids) has `(dev, ino)` open
/// or mapped, as far as /proc lets us see (another user's processes are
/// invisible to a user who is not root).
fn held_elsewhere(dev: u64, ino: u64, except: &[i32]) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    let same = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if except.contains(&pid) {
            continue;
        }
        if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
            if fds.flatten().any(|e| same(&e.path())) {
                return true;
            }
        }
        if let Ok(maps) = std::fs::read_to_string(p.path().join("maps")) {
            let want = ino.to_string();
            let hit = maps.lines().any(|l| {
                l.split_whitespace().nth(4) == Some(want.as_str())
                    && l.split_whitespace()
                        .nth(5)
                        .is_some_and(|path| same(Path::new(path)))
            });
            if hit {
                return true;
            }
        }
    }
    false
}

/// What a restart did with one file the computation had open for writing.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    /// Cut back from `from` bytes to its checkpoint-time size.
    Cut { from: u64 },
    /// Left alone, and why.
    Kept(&'static str),
}

/// Cuts the file of `WrittenFile` entry `e` back to its checkpoint-time
/// size when that is safe: the file at `path` is still the same file (dev
/// and inode), it grew since the checkpoint, the `min(size, 4096)` bytes
/// before its checkpoint-time size are unchanged (crc32), and no process
/// but `except` has it open or mapped. Call with the access of the
/// image's owner.
pub fn cut_back(e: &FdEntry, except: &[i32]) -> io::Result<Cut> {
    let FdKind::WrittenFile {
        path,
        size,
        dev,
        ino,
        tail_crc: crc,
        ..
    } = &e.kind
    else {
        return Err(super::wrong_kind(e, "file open for writing"));
    };
    let Ok(fd) = open(path, libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0) else {
        return Ok(Cut::Kept("cannot be opened for reading and writing"));
    };
    let f = std::fs::File::from(fd);
    let meta = f.metadata()?;
    if !meta.file_type().is_file() || meta.dev() != *dev || meta.ino() != *ino {
        return Ok(Cut::Kept("another file has its name now"));
    }
    if meta.len() <= *size {
        return Ok(Cut::Kept(if meta.len() == *size {
            "unchanged size"
        } else {
            "shorter than at checkpoint time"
        }));
    }
    if tail_crc(&f, *size) != Some(*crc) {
        return Ok(Cut::Kept("changed before its checkpoint-time end"));
    }
    if held_elsewhere(*dev, *ino, except) {
        return Ok(Cut::Kept("a process outside the computation has it open"));
    }
    f.set_len(*size)
        .map_err(|err| io::Error::new(err.kind(), format!("truncating {path} to {size}: {err}")))?;
    Ok(Cut::Cut { from: meta.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_pid_files() {
        for p in ["/proc/2/maps", "/proc/17/task/17/stat", "/proc/2/fd/"] {
            assert!(is_proc_pid_file(p), "{p}");
        }
        for p in [
            "/proc/self/maps",
            "/proc/cpuinfo",
            "/proc/2",
            "/proc//x",
            "/tmp/proc/2/x",
        ] {
            assert!(!is_proc_pid_file(p), "{p}");
        }
    }

    #[test]
    fn proc_pids_mapped() {
        let plus = |p: i32| Some(p + 100);
        for (from, to) in [
            ("/proc/2/maps", "/proc/102/maps"),
            ("/proc/17/task/18/stat", "/proc/117/task/118/stat"),
            ("/proc/17/task/18", "/proc/117/task/118"),
            ("/proc/17/task/", "/proc/117/task/"),
            ("/proc/2/fd/", "/proc/102/fd/"),
        ] {
            assert_eq!(map_proc_pids(from, plus).as_deref(), Some(to), "{from}");
        }
        for p in [
            "/proc/self/maps",
            "/proc/cpuinfo",
            "/tmp/proc/2/x",
            "/proc/2/task/x/stat",
        ] {
            assert_eq!(map_proc_pids(p, plus), None, "{p}");
        }
        assert_eq!(map_proc_pids("/proc/2/maps", |_| None), None);
    }

    #[test]
    fn terminals_by_path() {
        for t in ["/dev/pts/3", "/dev/tty", "/dev/tty1", "/dev/console"] {
            assert!(is_tty(t), "{t}");
        }
        for t in ["/dev/null", "/dev/ptmx", "/tmp/tty", "/dev/zero"] {
            assert!(!is_tty(t), "{t}");
        }
    }
}
