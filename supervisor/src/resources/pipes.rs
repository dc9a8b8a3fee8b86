//! Pipes and FIFOs: a pipe whose both ends are inside the computation is
//! made again with the bytes in flight; a pipe that leads outside becomes
//! the restarting tool's own fd of that number.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use dmtcp_image::{FdEntry, FdKind};

use crate::resources::fdshare::{pipe_inode, FdContext};
use crate::resources::{FdObjects, FdResource, OpenFd};

/// Pipes (`pipe:[INODE]` targets).
pub struct Pipes;

impl FdResource for Pipes {
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        let (pid, fd, target, flags) = (f.pid, f.fd, f.target, f.flags);
        if let Some(ino) = pipe_inode(target).filter(|i| cx.is_internal_pipe(*i)) {
            let write = flags & libc::O_ACCMODE == libc::O_WRONLY;
            let buffered = if !write && cx.claim_buffer(ino) {
                let dup = crate::kernel::sys::steal_fd(pid.0, fd)?;
                crate::kernel::sys::peek_pipe(&dup)
                    .map_err(|e| io::Error::new(e.kind(), format!("reading pipe fd {fd}: {e}")))?
            } else {
                Vec::new()
            };
            return Ok(Some(FdKind::Pipe {
                id: ino,
                write,
                flags,
                buffered,
            }));
        }
        if target.starts_with("pipe:") {
            // A pipe that leads outside the computation: at restart the
            // restarting tool's own fd of that number takes its place.
            return Ok(Some(FdKind::Inherit {
                from: fd,
                what: target.to_string(),
            }));
        }
        Ok(None)
    }

    fn restore(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd> {
        match &e.kind {
            FdKind::Pipe {
                id, write, flags, ..
            } => {
                let (rd, wr) = &objects.made[id];
                let end = if *write { wr } else { rd };
                let fd = crate::kernel::sys::dup_above(end.as_raw_fd(), 0)?;
                let status = flags & (libc::O_NONBLOCK | libc::O_DIRECT);
                // SAFETY: fcntl on an fd we own.
                unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, status) };
                Ok(fd)
            }
            _ => Err(super::wrong_kind(e, "pipe")),
        }
    }
}
