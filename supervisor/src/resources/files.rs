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
        match &e.kind {
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

#[cfg(test)]
mod tests {
    use super::*;

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
