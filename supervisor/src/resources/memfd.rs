//! Memfds (`memfd_create`): the object (size, seals, contents, saved with
//! the first fd seen) and each fd's own description, created once per id
//! at restart and shared with the mappings of the same memfd.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use dmtcp_image::{FdEntry, FdKind};

use crate::kernel::pid::HostPid;
use crate::resources::fdshare::FdContext;
use crate::resources::files::{open, seek, CREATION};
use crate::resources::{FdObjects, FdResource, OpenFd};

/// "/memfd:NAME (deleted)" -> NAME.
pub(crate) fn memfd_name(target: &str) -> &str {
    target
        .strip_prefix("/memfd:")
        .and_then(|n| n.strip_suffix(" (deleted)"))
        .unwrap_or(target)
}

/// A memfd; its size, seals and contents are saved with the first fd seen.
fn memfd_kind(
    pid: HostPid,
    fd: i32,
    target: &str,
    flags: i32,
    offset: u64,
    fdctx: &mut FdContext,
) -> io::Result<Option<FdKind>> {
    let path = format!("/proc/{}/fd/{fd}", pid.0);
    let meta =
        std::fs::metadata(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
    let Some(seals) = crate::kernel::sys::memfd_seals(&dup) else {
        return Ok(None); // a deleted file that only looks like a memfd
    };
    let contents = if fdctx.claim_memfd(meta.ino()) {
        let mut c = std::fs::read(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading memfd fd {fd}: {e}")))?;
        let used = c.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        c.truncate(used);
        Some(c)
    } else {
        None
    };
    Ok(Some(FdKind::Memfd {
        id: meta.ino(),
        name: memfd_name(target).to_string(),
        flags,
        offset,
        size: meta.len(),
        seals,
        contents,
    }))
}

/// Memfds (`/memfd:NAME (deleted)` whose seals can be read).
pub struct Memfd;

impl FdResource for Memfd {
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        if !(f.target.starts_with("/memfd:") && f.target.ends_with(" (deleted)")) {
            return Ok(None);
        }
        memfd_kind(f.pid, f.fd, f.target, f.flags, f.pos, cx)
    }

    fn restore(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd> {
        let FdKind::Memfd {
            id, flags, offset, ..
        } = &e.kind
        else {
            return Err(super::wrong_kind(e, "memfd"));
        };
        // A description of our own on the same memfd, with the saved flags.
        let (fd, _) = &objects.memfds[id];
        let again = open(
            &format!("/proc/self/fd/{}", fd.as_raw_fd()),
            flags & !CREATION,
            0,
        )?;
        seek(&again, *offset, "memfd")?;
        Ok(again)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_names() {
        assert_eq!(memfd_name("/memfd:buf (deleted)"), "buf");
        assert_eq!(memfd_name("/memfd: spaced name (deleted)"), " spaced name");
        assert_eq!(memfd_name("/tmp/x"), "/tmp/x");
    }
}
