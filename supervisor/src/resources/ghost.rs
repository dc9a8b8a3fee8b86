//! Ghost files: regular files unlinked while open or mapped (CRIU's name).
//!
//! At checkpoint an fd on such a file records its offset and flags; the
//! first fd of each file also records its contents, size, mode and owner
//! (`FdKind::Ghost`). A shared mapping of one is `VmaKind::Ghost` (its
//! pages are saved with it when no fd of the computation holds the file);
//! a private mapping is saved as anonymous memory with every page. Files
//! above the ghost size limit (`DMTCP_GHOST_LIMIT`, 64 MiB by default)
//! refuse the checkpoint with one line.
//!
//! At restart nsinit creates each file once, already unlinked
//! (`O_TMPFILE` in its old directory, else in `/tmp` or `/dev/shm`),
//! fills it, and every fd and shared mapping of the same id uses it, so
//! processes that shared it share it again.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use dmtcp_image::{FdEntry, FdKind};

use crate::resources::fdshare::FdContext;
use crate::resources::files::{open, seek, CREATION};
use crate::resources::{FdObjects, FdResource, OpenFd};

/// Default ghost size limit: 64 MiB.
pub const DEFAULT_LIMIT: u64 = 64 << 20;
/// The image metadata holds the contents; its decoder takes 256 MiB at most.
pub const MAX_LIMIT: u64 = 192 << 20;

/// The id of an unlinked file with inode `ino`: the inode with the top bit
/// set, so it never meets the inode of a shared memory object or memfd in
/// the table of parked objects.
pub fn ghost_id(ino: u64) -> u64 {
    ino | 1 << 63
}

/// Parses a size: bytes, or with a `k`, `M` or `G` suffix (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// The ghost size limit in bytes: `DMTCP_GHOST_LIMIT` (bytes, or with a
/// k/M/G suffix; at most 192 MiB, which the image metadata can hold),
/// 64 MiB when unset. A bad value is an error naming it.
pub fn limit() -> io::Result<u64> {
    match std::env::var("DMTCP_GHOST_LIMIT") {
        Err(_) => Ok(DEFAULT_LIMIT),
        Ok(v) => match parse_size(&v) {
            Some(n) if n <= MAX_LIMIT => Ok(n),
            _ => Err(io::Error::other(format!(
                "DMTCP_GHOST_LIMIT={v}: not a size of at most 192M"
            ))),
        },
    }
}

/// Refuses a ghost of `size` bytes above the limit.
pub fn check_size(what: &str, size: u64) -> io::Result<()> {
    let lim = limit()?;
    if size > lim {
        return Err(io::Error::other(format!(
            "{what} is {size} bytes, above the limit of {lim} bytes for files unlinked while open or mapped (raise it with DMTCP_GHOST_LIMIT, up to 192M)"
        )));
    }
    Ok(())
}

/// Whether a mapping's name is a regular file unlinked while mapped (not
/// shared anonymous memory, a memfd or SysV shared memory, which look alike).
pub fn is_unlinked_mapping(name: &str, inode: u64) -> bool {
    inode != 0
        && name.starts_with('/')
        && name.ends_with(" (deleted)")
        && !name.starts_with("/memfd:")
        && !name.starts_with("/SYSV")
        && name != "/dev/zero (deleted)"
}

/// Regular files unlinked while open.
pub struct Ghost;

impl FdResource for Ghost {
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        let Some(path) = f
            .target
            .strip_suffix(" (deleted)")
            .filter(|p| p.starts_with('/'))
        else {
            return Ok(None);
        };
        let proc_path = format!("/proc/{}/fd/{}", f.pid.0, f.fd);
        let Ok(meta) = std::fs::metadata(&proc_path) else {
            return Ok(None);
        };
        if !meta.file_type().is_file() || meta.nlink() != 0 {
            return Ok(None);
        }
        let id = ghost_id(meta.ino());
        let contents = if cx.claim_ghost(id) {
            check_size(
                &format!("pid {} fd {}: unlinked file {path}", f.pid.0, f.fd),
                meta.len(),
            )?;
            let c = read_whole(f.pid.0, f.fd, &proc_path, meta.len()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "pid {} fd {}: reading unlinked file {path}: {e}",
                        f.pid.0, f.fd
                    ),
                )
            })?;
            Some(c)
        } else {
            None
        };
        Ok(Some(FdKind::Ghost {
            id,
            path: path.to_string(),
            flags: f.flags,
            offset: f.pos,
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            contents,
        }))
    }

    fn restore(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd> {
        let FdKind::Ghost {
            id,
            path,
            flags,
            offset,
            ..
        } = &e.kind
        else {
            return Err(super::wrong_kind(e, "unlinked file"));
        };
        let fd = objects.ghosts.raw(*id)?;
        // A description of its own with the saved flags (but O_NOFOLLOW,
        // which refuses the /proc magic link: Open MPI opens its shared
        // memory files with it).
        let again = open(
            &format!("/proc/self/fd/{fd}"),
            flags & !(CREATION | libc::O_NOFOLLOW),
            0,
        )
        .map_err(|err| io::Error::new(err.kind(), format!("unlinked file {path}: {err}")))?;
        seek(&again, *offset, path)?;
        Ok(again)
    }
}

/// The whole file behind fd `fd` of `pid`: through a description of our
/// own, or (a file we may not open, e.g. mode 0200) through the process's
/// own description with `pread`, which leaves its offset alone.
fn read_whole(pid: i32, fd: i32, proc_path: &str, size: u64) -> io::Result<Vec<u8>> {
    if let Ok(c) = std::fs::read(proc_path) {
        return Ok(c);
    }
    let dup = crate::kernel::sys::steal_fd(pid, fd)?;
    let f = std::fs::File::from(dup);
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        let n = std::os::unix::fs::FileExt::read_at(&f, &mut buf[done..], done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// A new file at `path` (which must be free: never another's file, never
/// through a symlink), unlinked at once, so /proc shows the old name with
/// ` (deleted)`. `None` when the name is taken or cannot be used.
fn at_old_name(path: &str) -> Option<OwnedFd> {
    let fd = open(
        path,
        libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_RDWR,
        0o600,
    )
    .ok()?;
    let f = std::fs::File::from(fd);
    let ours = f.metadata().ok()?;
    // Only the file we just made goes (its name could have been swapped in
    // a directory others may write).
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {
            std::fs::remove_file(path).ok()?;
        }
        _ => return None,
    }
    Some(OwnedFd::from(f))
}

/// The unlinked files of a restart, by id, created once each in nsinit.
#[derive(Default)]
pub struct Ghosts(HashMap<u64, OwnedFd>);

impl Ghosts {
    /// Creates (once) and fills the file of entry `e`.
    pub(crate) fn add(&mut self, e: &FdEntry) -> io::Result<()> {
        let FdKind::Ghost {
            id,
            path,
            size,
            mode,
            uid,
            gid,
            contents,
            ..
        } = &e.kind
        else {
            return Err(super::wrong_kind(e, "unlinked file"));
        };
        self.ensure(*id, path, 0)?;
        if let Some(c) = contents {
            let fd = &self.0[id];
            let mut f = std::fs::File::from(fd.try_clone()?);
            f.write_all(c)
                .and_then(|()| f.set_len(*size))
                .map_err(|err| {
                    io::Error::new(err.kind(), format!("filling unlinked file {path}: {err}"))
                })?;
            // SAFETY: fchown/fchmod with integers on our own fd. The owner
            // matters when root restarts another user's image; failures
            // (an unprivileged restart) leave it ours.
            unsafe {
                libc::fchown(fd.as_raw_fd(), *uid, *gid);
                libc::fchmod(fd.as_raw_fd(), *mode as libc::mode_t);
            }
        }
        Ok(())
    }

    /// Makes the unlinked file `id` (last seen at `path`), `size` bytes
    /// long, if it is new.
    pub(crate) fn ensure(&mut self, id: u64, path: &str, size: u64) -> io::Result<()> {
        if self.0.contains_key(&id) {
            // Made from an fd's entry with its own size (a mapping may
            // reach past the end of the file).
            return Ok(());
        }
        let dir = Path::new(path)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/tmp".into());
        let flags = libc::O_TMPFILE | libc::O_RDWR;
        let fd = at_old_name(path)
            .ok_or(())
            .or_else(|()| open(&dir, flags, 0o600))
            .or_else(|_| open("/tmp", flags, 0o600))
            .or_else(|_| open("/dev/shm", flags, 0o600))
            .map_err(|e| {
                io::Error::new(e.kind(), format!("recreating unlinked file {path}: {e}"))
            })?;
        std::fs::File::from(fd.try_clone()?).set_len(size)?;
        tracing::debug!("unlinked file {path} recreated");
        self.0.insert(id, fd);
        Ok(())
    }

    /// The raw fd of file `id`.
    pub(crate) fn raw(&self, id: u64) -> io::Result<i32> {
        self.0
            .get(&id)
            .map(|fd| fd.as_raw_fd())
            .ok_or_else(|| io::Error::other(format!("unlinked file {id:#x} was not recreated")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn unlinked_mappings() {
        assert!(is_unlinked_mapping("/tmp/x (deleted)", 5));
        assert!(!is_unlinked_mapping("/tmp/x", 5));
        assert!(!is_unlinked_mapping("/dev/zero (deleted)", 5));
        assert!(!is_unlinked_mapping("/memfd:a (deleted)", 5));
        assert!(!is_unlinked_mapping("/SYSV00000000 (deleted)", 5));
        assert!(!is_unlinked_mapping("/tmp/x (deleted)", 0));
    }
}
