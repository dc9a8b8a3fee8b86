//! Pipes and FIFOs: a pipe whose both ends are inside the computation is
//! made again with the bytes in flight, and so is one whose other side is
//! closed everywhere (a reader whose writer has exited, as `popen`'s
//! stream once its child is gone: the bytes in flight, then the end of the
//! pipe; a writer whose reader is gone: EPIPE); a pipe that leads to a
//! live process outside becomes the restarting tool's own fd of that
//! number.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use dmtcp_image::{FdEntry, FdKind};

use crate::resources::fdshare::{pipe_inode, FdContext};
use crate::resources::{FdObjects, FdResource, OpenFd};

/// Pipes (`pipe:[INODE]` targets).
pub struct Pipes;

impl FdResource for Pipes {
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        let (pid, fd, target, flags) = (f.pid, f.fd, f.target, f.flags);
        let write = flags & libc::O_ACCMODE == libc::O_WRONLY;
        if let Some(ino) = pipe_inode(target) {
            // A copy of the end, taken at most once: for the look at the
            // other side and for the bytes in flight.
            let mut end = None;
            let internal = cx.is_internal_pipe(ino) || {
                end = crate::kernel::sys::steal_fd(pid.0, fd).ok();
                end.as_ref()
                    .is_some_and(|e| crate::kernel::sys::pipe_peer_closed(e, write))
            };
            if internal {
                let buffered = if !write && cx.claim_buffer(ino) {
                    let dup = match end {
                        Some(e) => e,
                        None => crate::kernel::sys::steal_fd(pid.0, fd)?,
                    };
                    crate::kernel::sys::peek_pipe(&dup).map_err(|e| {
                        io::Error::new(e.kind(), format!("reading pipe fd {fd}: {e}"))
                    })?
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
                let (rd, wr) = &objects.pipes.0[id];
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

/// Pipes inside the computation by id, as (read end, write end).
#[derive(Default)]
pub struct PipeSet(HashMap<u64, (OwnedFd, OwnedFd)>);

impl PipeSet {
    /// Makes the pipe of entry `e` if it is new and refills it with the
    /// bytes in flight (recorded on one read end).
    pub(crate) fn add(&mut self, e: &FdEntry) -> io::Result<()> {
        let FdKind::Pipe { id, buffered, .. } = &e.kind else {
            return Err(super::wrong_kind(e, "pipe"));
        };
        if !self.0.contains_key(id) {
            let (rd, wr) = crate::kernel::sys::pipe_cloexec()?;
            let rd = OwnedFd::from(rd);
            self.0.insert(*id, (rd, wr));
        }
        if !buffered.is_empty() {
            let (_, wr) = &self.0[id];
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
        Ok(())
    }
}
