//! Memfds (`memfd_create`): the object (size, seals, contents, saved with
//! the first fd seen) and each fd's own description, created once per id
//! at restart and shared with the mappings of the same memfd.

use std::collections::HashMap;
use std::io::{self, Write};
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
        let (fd, _) = &objects.memfds.0[id];
        let again = open(
            &format!("/proc/self/fd/{}", fd.as_raw_fd()),
            flags & !CREATION,
            0,
        )?;
        seek(&again, *offset, "memfd")?;
        Ok(again)
    }
}

/// Memfds by id, with the seals to add once they are filled and parked.
#[derive(Default)]
pub struct Memfds(HashMap<u64, (OwnedFd, i32)>);

impl Memfds {
    /// Makes the memfd of entry `e` and fills it (on the fd that holds
    /// its contents).
    pub(crate) fn add(&mut self, e: &FdEntry) -> io::Result<()> {
        let FdKind::Memfd {
            id,
            name,
            size,
            seals,
            contents,
            ..
        } = &e.kind
        else {
            return Err(super::wrong_kind(e, "memfd"));
        };
        self.ensure(*id, name, 0)?;
        if let Some(c) = contents {
            let (fd, s) = self.0.get_mut(id).expect("just made");
            *s = *seals;
            let mut f = std::fs::File::from(fd.try_clone()?);
            f.write_all(c)
                .and_then(|()| f.set_len(*size))
                .map_err(|err| {
                    io::Error::new(err.kind(), format!("filling memfd:{name}: {err}"))
                })?;
        }
        Ok(())
    }

    /// Makes memfd `id` named `name`, `size` bytes long, if it is new.
    pub(crate) fn ensure(&mut self, id: u64, name: &str, size: u64) -> io::Result<()> {
        if self.0.contains_key(&id) {
            return Ok(());
        }
        let fd = crate::kernel::sys::memfd_create(name)?;
        std::fs::File::from(fd.try_clone()?).set_len(size)?;
        self.0.insert(id, (fd, 0));
        Ok(())
    }

    /// Memfd `id` (raw fd) and whether it may be mapped writable (no write seal).
    pub(crate) fn for_mapping(&self, id: u64) -> io::Result<(i32, bool)> {
        let (fd, seals) = self
            .0
            .get(&id)
            .ok_or_else(|| io::Error::other(format!("memfd {id} was not created")))?;
        Ok((fd.as_raw_fd(), seals & libc::F_SEAL_WRITE == 0))
    }

    /// Adds the saved seals to every memfd (after filling and parking).
    pub(crate) fn seal(&self) -> io::Result<()> {
        for (id, (fd, seals)) in &self.0 {
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
