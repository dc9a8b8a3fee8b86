//! What the file descriptors of a whole computation share.
//!
//! Looked at one process at a time, an fd cannot tell whether its open file
//! description is also held by another process (after `fork`) or whether the
//! pipe it is one end of stays inside the computation. This module answers
//! both for all frozen processes at once:
//! - fds that share an open file description get the same description id
//!   (`kcmp(KCMP_FILE)`, bucketed by link target so few comparisons run);
//! - a pipe is internal when some process of the computation holds a read
//!   end and some (possibly other) process holds a write end; its buffered
//!   bytes are saved once, with the first read end seen.

use std::collections::{HashMap, HashSet};
use std::io;

use crate::pid::HostPid;
use crate::procfs;

const KCMP_FILE: i32 = 0;

/// An fd of a process.
type FdRef = (HostPid, i32);

fn same_description(a: (HostPid, i32), b: (HostPid, i32)) -> bool {
    // SAFETY: kcmp takes plain integers and touches no memory.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a.0 .0, b.0 .0, KCMP_FILE, a.1, b.1) };
    r == 0
}

/// `pipe:[INODE]` -> INODE.
pub fn pipe_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("pipe:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Sharing facts about every fd of a set of frozen processes.
#[derive(Debug, Default)]
pub struct FdContext {
    desc: HashMap<(HostPid, i32), u64>,
    internal_pipes: HashSet<u64>,
    peeked: HashSet<u64>,
}

impl FdContext {
    /// Examines every fd of `procs` (which must all be frozen).
    pub fn build(procs: &[HostPid]) -> io::Result<FdContext> {
        let mut ctx = FdContext::default();
        let mut readers = HashSet::new();
        let mut writers = HashSet::new();
        // Representatives of each description, bucketed by link target.
        let mut buckets: HashMap<String, Vec<(FdRef, u64)>> = HashMap::new();
        let mut next_id = 1u64;
        for &pid in procs {
            for fd in procfs::fds(pid)? {
                let Ok(target) = procfs::link(pid, &format!("fd/{fd}")) else {
                    continue;
                };
                if let Some(ino) = pipe_inode(&target) {
                    let (_, flags) = procfs::fdinfo(pid, fd)?;
                    if flags & libc::O_ACCMODE == libc::O_WRONLY {
                        writers.insert(ino);
                    } else {
                        readers.insert(ino);
                    }
                }
                let reps = buckets.entry(target).or_default();
                let id = match reps.iter().find(|(r, _)| same_description(*r, (pid, fd))) {
                    Some((_, id)) => *id,
                    None => {
                        let id = next_id;
                        next_id += 1;
                        reps.push(((pid, fd), id));
                        id
                    }
                };
                ctx.desc.insert((pid, fd), id);
            }
        }
        ctx.internal_pipes = readers.intersection(&writers).copied().collect();
        Ok(ctx)
    }

    /// The description id of `fd` in `pid` (0 if it appeared after `build`).
    pub fn desc(&self, pid: HostPid, fd: i32) -> u64 {
        self.desc.get(&(pid, fd)).copied().unwrap_or(0)
    }

    pub fn is_internal_pipe(&self, ino: u64) -> bool {
        self.internal_pipes.contains(&ino)
    }

    /// True the first time it is asked for a pipe: that read end saves the
    /// buffered bytes.
    pub fn claim_buffer(&mut self, ino: u64) -> bool {
        self.peeked.insert(ino)
    }
}
