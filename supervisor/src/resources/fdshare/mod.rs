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
//!   bytes are saved once, with the first read end seen;
//! - a unix socket is one end of an internal pair when it is connected
//!   and its peer (matched by inode through `sock_diag`) is held by
//!   some process of the computation and has it as peer in turn (stream
//!   and seqpacket sockets may have a name: a client and the socket a
//!   listener accepted for it);
//! - TCP connections with both ends inside, and UDP sockets
//!   (`netcapture::examine`);
//! - a pty is inside the computation when some process holds its master
//!   (`/dev/ptmx`, whose fdinfo names the pts number); its state is saved
//!   once, with the first master fd seen.
//!
//! It also maps process group ids as the supervisor sees them to the ids
//! inside the namespace (for a terminal's foreground group).

pub mod net;

use std::collections::{HashMap, HashSet};
use std::io;

use crate::kernel::pid::HostPid;
use crate::kernel::procfs;
use crate::kernel::sockdiag::{self as sockets, UnixInfo};

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
    /// Socket inode -> (pair id, end, type) for internal unix pairs.
    unix_pairs: HashMap<u64, (u64, u8, i32)>,
    peeked_sockets: HashSet<u64>,
    /// Unix pair ends where at least one end of the pair has a name.
    named_pairs: HashSet<u64>,
    /// TCP and UDP sockets.
    pub net: net::NetShare,
    /// pts numbers of ptys whose master some process holds.
    internal_ptys: HashSet<u32>,
    /// pts numbers of slaves some process holds.
    held_slaves: HashSet<u32>,
    captured_ptys: HashSet<u32>,
    /// Host process group id -> the id inside the namespace.
    vpgids: HashMap<i32, u32>,
    /// POSIX message queues (by inode) whose messages are already saved.
    peeked_mqueues: HashSet<u64>,
    /// Memfds (by inode) some fd of the computation holds.
    memfds: HashSet<u64>,
    /// Memfds whose contents are already saved.
    saved_memfds: HashSet<u64>,
    /// Files unlinked while open (ghost ids) some fd of the computation holds.
    ghosts: HashSet<u64>,
    /// Ghost files whose contents are already saved.
    saved_ghosts: HashSet<u64>,
}

/// Whether a link target is a pty master (`/dev/ptmx`, `/dev/pts/ptmx`).
pub fn is_ptmx(target: &str) -> bool {
    target == "/dev/ptmx" || target.ends_with("/pts/ptmx")
}

impl FdContext {
    /// Examines every fd of `procs` (which must all be frozen).
    pub fn build(procs: &[HostPid]) -> io::Result<FdContext> {
        Self::build_with(procs, &std::collections::HashMap::new())
    }

    /// [`build`](Self::build), knowing which TCP ends (by socket inode)
    /// have their peer in another launch of the computation
    /// (`inet::remote`).
    pub fn build_with(
        procs: &[HostPid],
        remote: &std::collections::HashMap<u64, crate::resources::inet::remote::RemoteEnd>,
    ) -> io::Result<FdContext> {
        let mut ctx = FdContext::default();
        let mut readers = HashSet::new();
        let mut writers = HashSet::new();
        // Representatives of each description, bucketed by link target.
        let mut buckets: HashMap<String, Vec<(FdRef, u64)>> = HashMap::new();
        let mut next_id = 1u64;
        let mut diag = match sockets::Diag::open() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("unix sockets will not be saved: {e}");
                None
            }
        };
        let mut unix: HashMap<u64, UnixInfo> = HashMap::new();
        // Sockets that are not unix sockets: (pid, fd, inode), once each.
        let mut others: Vec<(HostPid, i32, u64)> = Vec::new();
        let mut seen_other = HashSet::new();
        for &pid in procs {
            if let Some(pgid) = procfs::status(pid)
                .ok()
                .and_then(|kv| procfs::field(&kv, "NSpgid").map(str::to_owned))
            {
                let ids: Vec<i64> = pgid
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                // Without a pid namespace of the computation's own
                // (`--no-pidns`, no namespaces at all) the one id is both.
                if let (Some(&host), Some(&inner)) = (ids.first(), ids.last()) {
                    if inner > 0 {
                        ctx.vpgids.insert(host as i32, inner as u32);
                    }
                }
            }
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
                if let (Some(ino), Some(d)) = (sockets::socket_inode(&target), diag.as_mut()) {
                    if let std::collections::hash_map::Entry::Vacant(slot) = unix.entry(ino) {
                        match d.unix(ino) {
                            Ok(Some(info)) => {
                                slot.insert(info);
                            }
                            Ok(None) => {
                                if seen_other.insert(ino) {
                                    others.push((pid, fd, ino));
                                }
                            }
                            Err(e) => tracing::warn!("pid {} fd {fd}: {e}", pid.0),
                        }
                    }
                }
                if is_ptmx(&target) {
                    if let Some(idx) = procfs::fdinfo_text(pid, fd)
                        .ok()
                        .and_then(|t| procfs::fdinfo_tty_index(&t))
                    {
                        ctx.internal_ptys.insert(idx);
                    }
                }
                if let Some(idx) = target
                    .strip_prefix("/dev/pts/")
                    .and_then(|n| n.parse().ok())
                {
                    ctx.held_slaves.insert(idx);
                }
                if target.starts_with("/memfd:") {
                    if let Ok(m) = std::fs::metadata(format!("/proc/{}/fd/{fd}", pid.0)) {
                        ctx.memfds.insert(std::os::unix::fs::MetadataExt::ino(&m));
                    }
                }
                if target.starts_with('/') && target.ends_with(" (deleted)") {
                    if let Ok(m) = std::fs::metadata(format!("/proc/{}/fd/{fd}", pid.0)) {
                        use std::os::unix::fs::MetadataExt;
                        if m.file_type().is_file() && m.nlink() == 0 {
                            ctx.ghosts
                                .insert(crate::resources::ghost::ghost_id(m.ino()));
                        }
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
        ctx.unix_pairs = internal_unix_pairs(&unix);
        ctx.named_pairs = ctx
            .unix_pairs
            .keys()
            .filter(|ino| {
                let s = &unix[*ino];
                s.named || unix.get(&s.peer).is_some_and(|p| p.named)
            })
            .copied()
            .collect();
        ctx.net = net::examine(&others, remote)?;
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

    /// (pair id, end, socket type) when socket `ino` is one end of a unix
    /// pair whose both ends are inside the computation.
    pub fn unix_pair(&self, ino: u64) -> Option<(u64, u8, i32)> {
        self.unix_pairs.get(&ino).copied()
    }

    /// True when unix pair end `ino` or its peer has a name.
    pub fn is_named_pair(&self, ino: u64) -> bool {
        self.named_pairs.contains(&ino)
    }

    /// True the first time it is asked for a socket: that fd saves the
    /// socket's receive queue.
    pub fn claim_socket_queue(&mut self, ino: u64) -> bool {
        self.peeked_sockets.insert(ino)
    }

    /// True when some process of the computation holds the master of pty
    /// `index`.
    pub fn is_internal_pty(&self, index: u32) -> bool {
        self.internal_ptys.contains(&index)
    }

    /// True when some process of the computation holds the slave of pty
    /// `index`.
    pub fn holds_pty_slave(&self, index: u32) -> bool {
        self.held_slaves.contains(&index)
    }

    /// True the first time it is asked for a pty: that master fd saves the
    /// pty's state.
    pub fn claim_pty(&mut self, index: u32) -> bool {
        self.captured_ptys.insert(index)
    }

    /// The id inside the namespace of host process group `pgid` (None when
    /// no process of the computation is in it).
    pub fn vpgid(&self, pgid: i32) -> Option<u32> {
        self.vpgids.get(&pgid).copied()
    }

    /// Whether some fd of the computation holds memfd `ino` (its contents
    /// are then saved with the fd, not with its mappings).
    pub fn memfd_has_fd(&self, ino: u64) -> bool {
        self.memfds.contains(&ino)
    }

    /// Whether some fd of the computation holds the unlinked file `id`.
    pub fn ghost_has_fd(&self, id: u64) -> bool {
        self.ghosts.contains(&id)
    }

    /// True the first time it is asked for an unlinked file: that fd saves
    /// its contents.
    pub fn claim_ghost(&mut self, id: u64) -> bool {
        self.saved_ghosts.insert(id)
    }

    /// True the first time it is asked for a memfd: that fd saves its contents.
    pub fn claim_memfd(&mut self, ino: u64) -> bool {
        self.saved_memfds.insert(ino)
    }

    /// Whether the messages of message queue `ino` are yet to be saved
    /// (true once per queue, never claimed).
    pub fn mqueue_unclaimed(&self, ino: u64) -> bool {
        !self.peeked_mqueues.contains(&ino)
    }

    /// Records that the messages of message queue `ino` are saved.
    pub fn claim_mqueue(&mut self, ino: u64) {
        self.peeked_mqueues.insert(ino);
    }
}

/// Sockets that are mutual, connected peers of the same type, both seen in
/// the computation (unnamed, or stream/seqpacket with names):
/// inode -> (pair id, end, type).
fn internal_unix_pairs(unix: &HashMap<u64, UnixInfo>) -> HashMap<u64, (u64, u8, i32)> {
    let usable = |s: &UnixInfo| {
        s.state == sockets::STATE_ESTABLISHED
            && match s.sotype {
                libc::SOCK_STREAM | libc::SOCK_SEQPACKET => true,
                libc::SOCK_DGRAM => !s.named,
                _ => false,
            }
    };
    unix.values()
        .filter(|s| usable(s))
        .filter_map(|s| {
            let p = unix.get(&s.peer)?;
            (usable(p) && p.peer == s.ino && p.sotype == s.sotype && p.ino != s.ino).then(|| {
                let id = s.ino.min(p.ino);
                (s.ino, (id, u8::from(s.ino != id), s.sotype))
            })
        })
        .collect()
}
