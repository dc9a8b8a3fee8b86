//! What a checkpoint image says about one process, independent of how it is
//! laid out on disk (see `format` for that).
//!
//! Everything here is plain data (serde), so the same structs serve the writer,
//! the reader, `dmtcp-restart --inspect` and the golden tests. Addresses are
//! addresses in the *target's* address space.

use serde::{Deserialize, Serialize};

pub const PAGE_SIZE: u64 = 4096;

/// The whole metadata of one process image (page data is stored apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessImage {
    pub computation: ComputationInfo,
    pub process: ProcessInfo,
    pub threads: Vec<ThreadState>,
    pub fds: Vec<FdEntry>,
    pub vmas: Vec<Vma>,
    /// An incremental image: pages listed in a VMA's `from_parent` are
    /// the parent image's pages at the same addresses.
    pub parent: Option<ParentRef>,
    /// SysV IPC objects of the computation's IPC namespace. Computation-wide:
    /// recorded in one image only (the lowest pid's), `None` in the others.
    pub ipc: Option<IpcState>,
    /// The computation's clocks at the checkpoint (`None` when they could
    /// not be read: the restart then cannot keep them continuous).
    pub clocks: Option<Clocks>,
    /// Format 2.2: the process's seccomp filters and the computation's
    /// sandbox. Stored in the [`ImageExt2`] record after the 2.1 record,
    /// not in the metadata itself; `Default` (nothing) in older images.
    #[serde(skip)]
    pub security: Security,
    /// Format 2.5: the fds of the process whose socket had `SO_PASSCRED`
    /// set (a unix socket that receives its senders' credentials), set
    /// again at restart. Stored in the [`ImageExt4`] record; empty in older
    /// images.
    #[serde(skip)]
    pub passcred_fds: Vec<i32>,
}

/// CLOCK_MONOTONIC and CLOCK_BOOTTIME as the computation saw them (in its
/// time namespace) while it was frozen for the checkpoint, in ns. A restart
/// sets its new time namespace's offsets so both continue from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    pub monotonic_ns: u64,
    pub boottime_ns: u64,
}

/// The image an incremental image builds on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// File name of the parent image, in the same directory.
    pub file: String,
    /// Its checkpoint generation (checked when it is opened).
    pub generation: u64,
}

/// The SysV IPC objects of an IPC namespace, each with its id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpcState {
    pub shm: Vec<ShmSegment>,
    pub sem: Vec<SemSet>,
    pub msg: Vec<MsgQueue>,
}

/// Owner and permissions of a SysV IPC object (`struct ipc_perm`), with
/// uids/gids as seen inside the computation's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcPerm {
    pub id: i32,
    pub key: i32,
    /// Permission bits (for shared memory also `SHM_DEST`, 0o1000, when it
    /// was removed while still attached).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A SysV shared memory segment. Its bytes are in the image's page data:
/// `pages` are runs whose `addr` is the byte offset in the segment; pages
/// not in a run are zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmSegment {
    pub perm: IpcPerm,
    pub size: u64,
    pub pages: Vec<PageRun>,
}

/// A SysV semaphore set and the value of each semaphore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemSet {
    pub perm: IpcPerm,
    pub values: Vec<u16>,
}

/// A SysV message queue, its byte limit and the messages in it, in order:
/// `(mtype, text)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgQueue {
    pub perm: IpcPerm,
    pub qbytes: u64,
    pub messages: Vec<(i64, Vec<u8>)>,
}

/// Which computation and checkpoint this image belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputationInfo {
    /// Random hex id given at launch and kept across restarts.
    pub id: String,
    /// Checkpoint generation (1 for the first checkpoint).
    pub generation: u64,
    /// Host the image was taken on.
    pub host: String,
    /// Wall-clock time of the snapshot, ns since the epoch.
    pub taken_at_unix_ns: u64,
    /// Coordinator the computation used (host, port) when checkpointed.
    pub coord_host: String,
    pub coord_port: u16,
    /// Format 2.1: the launch (the supervisor's pid namespace) the process
    /// belongs to; empty in 2.0 images. Stored in the [`ImageExt`] record
    /// after the metadata, not in the metadata itself.
    #[serde(skip)]
    pub launch: String,
    /// Format 2.1: every process of this launch that the checkpoint saved
    /// (the set a restart of this generation needs); empty in 2.0 images.
    #[serde(skip)]
    pub set: Vec<SetMember>,
    /// Format 2.4: the computation ran without namespaces of its own
    /// (`dmtcp-run --no-namespaces`): its processes had the pids the kernel
    /// gave them, and the program saw the virtual pids the inject library
    /// translates (`vpid` and the other ids here are those virtual ones).
    /// Stored in the [`ImageExt3`] record; `false` in older images.
    #[serde(skip)]
    pub no_namespaces: bool,
}

/// One process of a checkpoint's set (format 2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SetMember {
    pub launch: String,
    pub vpid: u32,
}

/// The record that follows the metadata in format 2.1 images (same codec,
/// same MAC): what 2.1 added to [`ComputationInfo`]. A 2.0 image has none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageExt {
    pub launch: String,
    pub set: Vec<SetMember>,
}

/// The record that follows [`ImageExt`] in format 2.2 images.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageExt2 {
    pub security: Security,
}

/// The record that follows [`ImageExt3`] in format 2.5 images.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageExt4 {
    /// See [`ProcessImage::passcred_fds`].
    pub passcred_fds: Vec<i32>,
}

/// The record that follows [`ImageExt2`] in format 2.4 images.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageExt3 {
    /// See [`ComputationInfo::no_namespaces`].
    pub no_namespaces: bool,
}

/// Seccomp state of one process and the sandbox of its computation
/// (format 2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Security {
    /// Every distinct filter of the process, parents before children.
    pub filters: Vec<SeccompFilter>,
    /// Per thread: which filters it runs, oldest first (indices into
    /// `filters`), and whether it is in strict mode.
    pub threads: Vec<ThreadSeccomp>,
    /// The computation's `--sandbox`, when it has one.
    pub sandbox: Option<SandboxInfo>,
}

/// One classic-BPF seccomp program.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeccompFilter {
    /// `struct sock_filter` array, 8 bytes per instruction.
    pub prog: Vec<u8>,
    /// `SECCOMP_FILTER_FLAG_*` it was installed with.
    pub flags: u32,
    /// The sandbox's own filter (installed by the tool, not the program).
    pub sandbox: bool,
}

/// One thread's seccomp mode.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ThreadSeccomp {
    pub vtid: u32,
    pub chain: Vec<u32>,
    pub strict: bool,
}

/// What `dmtcp-run --sandbox` set up, so a restart sets up the same.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// "default" or the profile file's path, for messages.
    pub policy: String,
    /// Uid that ran `dmtcp-run`: a restart by another user is refused.
    pub owner_uid: u32,
    /// Landlock read-only and read-write paths (empty: none).
    pub allow_read: Vec<String>,
    pub allow_write: Vec<String>,
    /// `--net=none`.
    pub net_none: bool,
}

/// Process-wide state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Pids inside the computation's pid namespace.
    pub vpid: u32,
    pub vppid: u32,
    pub vpgid: u32,
    pub vsid: u32,
    /// Host pid at checkpoint time (informational).
    pub host_pid: u32,
    /// comm (thread name of the leader), at most 15 bytes.
    pub comm: String,
    /// Path of the executable (`/proc/PID/exe`).
    pub exe: String,
    /// argv as in `/proc/PID/cmdline`.
    pub cmdline: Vec<Vec<u8>>,
    pub cwd: String,
    pub umask: u32,
    /// `(resource, soft, hard)` for every resource `prlimit` knows.
    pub rlimits: Vec<(u32, u64, u64)>,
    pub personality: u32,
    pub caps: Capabilities,
    /// Real uid and gid (as `creds.uids[0]`, `creds.gids[0]`).
    pub uid: u32,
    pub gid: u32,
    /// Every id the process held (format 2.0 on).
    pub creds: Credentials,
    pub no_new_privs: bool,
    pub dumpable: u32,
    pub mm: MmFields,
    /// `/proc/PID/auxv` as 64-bit words.
    pub auxv: Vec<u64>,
    /// Dispositions of signals 1..=64 (index 0 is signal 1); SIGKILL and
    /// SIGSTOP are recorded as default.
    pub sigactions: Vec<SigAction>,
    /// Signals pending for the whole process (raw `siginfo_t` bytes, 128 each).
    pub shared_pending: Vec<Vec<u8>>,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF as (interval, value), in µs.
    pub itimers: [(u64, u64); 3],
    /// Whether the process was the child subreaper of its subtree.
    pub child_subreaper: bool,
    /// POSIX timers (`timer_create`), restored with the same ids.
    pub posix_timers: Vec<PosixTimer>,
    /// A zombie: the wait status its parent has yet to collect. A zombie's
    /// image holds no threads, memory or fds; at restart it is recreated in
    /// its place in the tree and dies again with this status.
    pub zombie: Option<i32>,
    /// The controlling terminal, when the process has one.
    pub ctty: Option<Ctty>,
}

/// A process's controlling terminal (`/proc/PID/stat` tty_nr and tpgid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ctty {
    /// pts number of a pty made inside the computation (its master is in
    /// some process); `None`: a terminal outside the computation.
    pub pty: Option<u32>,
    /// Foreground process group of the terminal, inside the namespace;
    /// 0 when that group is outside the computation (or there is none).
    pub fg_vpgid: u32,
    /// Settings of a terminal outside the computation, read through one of
    /// the process's fds on it (`None` for a pty inside: its settings are
    /// with the master, or when no fd of the process is on it).
    pub termios: Option<Termios>,
}

/// `struct termios` as `tcgetattr` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    /// `c_cc`, all 32 entries.
    pub cc: Vec<u8>,
    pub ispeed: u32,
    pub ospeed: u32,
}

/// The state of a pty made inside the computation, read through its master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyState {
    /// The slave's settings (the master has none of its own).
    pub termios: Termios,
    /// `TIOCGWINSZ`: rows, columns, x pixels, y pixels.
    pub winsize: [u16; 4],
    /// Packet mode (`TIOCPKT`) on the master.
    pub packet: bool,
    /// The slave is locked (`unlockpt` not called yet).
    pub locked: bool,
    /// Bytes written to the slave and not yet read from the master.
    pub output: Vec<u8>,
    /// Bytes written to the master and not yet read from the slave
    /// (complete lines and a partial line in canonical mode).
    pub input: Vec<u8>,
    /// The slave was opened and every fd of it closed again: reading the
    /// master fails with EIO until it is opened again.
    pub hangup: bool,
}

/// One POSIX timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    /// `sigev_notify`: SIGEV_SIGNAL (0), SIGEV_NONE (1), SIGEV_THREAD_ID (4).
    pub notify: i32,
    pub signo: i32,
    /// `sigev_value` as delivered in `si_value`.
    pub value: u64,
    /// Target thread (tid in the namespace) for SIGEV_THREAD_ID.
    pub thread: u32,
    /// Time to the next expiry and the period, in ns (0: disarmed / one-shot).
    pub value_ns: u64,
    pub interval_ns: u64,
}

/// The `prctl(PR_SET_MM_MAP)` fields and brk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// Capability sets as in `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// A process's ids, as `/proc/PID/status` shows them (inside the
/// computation's user namespace).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// Real, effective, saved set and filesystem uid.
    pub uids: [u32; 4],
    /// Real, effective, saved set and filesystem gid.
    pub gids: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// `prctl(PR_GET_SECUREBITS)`; None when not captured.
    pub securebits: Option<u32>,
}

/// A kernel `struct sigaction` (x86_64 `rt_sigaction` layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// Per-thread state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    /// Tid inside the computation's pid namespace.
    pub vtid: u32,
    /// Thread name (`/proc/PID/task/TID/comm`).
    pub name: String,
    /// `struct user_regs_struct` as `NT_PRSTATUS` returns it (27 u64 words),
    /// exactly as captured (no syscall-restart fix-up applied).
    pub regs: Vec<u64>,
    /// `NT_X86_XSTATE` bytes (XSAVE layout, includes AVX-512 state).
    pub xstate: Vec<u8>,
    pub sigmask: u64,
    /// Signals pending for this thread only (raw `siginfo_t`, 128 bytes each).
    pub pending: Vec<Vec<u8>>,
    /// `set_tid_address` value.
    pub clear_child_tid: u64,
    /// `set_robust_list` head and length.
    pub robust_list: (u64, u64),
    pub rseq: Option<Rseq>,
    /// `sigaltstack`: (ss_sp, ss_flags, ss_size).
    pub sigaltstack: (u64, i32, u64),
}

/// An rseq registration (`PTRACE_GET_RSEQ_CONFIGURATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub flags: u32,
    pub signature: u32,
}

/// One file descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdEntry {
    pub fd: i32,
    pub cloexec: bool,
    /// Open file description id, unique within the computation: fds (in any
    /// process) with the same id share one description (offset, flags), as
    /// after `dup` or `fork`.
    pub desc: u64,
    pub kind: FdKind,
    /// File locks held through this fd: `flock` and OFD locks belong to the
    /// description (listed on every fd of it), POSIX record locks to this
    /// process.
    pub locks: Vec<FileLock>,
}

/// A file lock as `/proc/PID/fdinfo` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLock {
    pub kind: LockKind,
    /// Exclusive (write) or shared (read).
    pub write: bool,
    /// Byte range, `end` inclusive; `None`: to the end of the file. A
    /// `flock` lock is always the whole file.
    pub start: u64,
    pub end: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// `flock()`.
    Flock,
    /// `fcntl(F_SETLK)`: owned by the process.
    Posix,
    /// `fcntl(F_OFD_SETLK)`: owned by the open file description.
    Ofd,
}

/// What an fd refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// A regular file or directory reopened by path.
    File {
        path: String,
        /// `open` flags as in fdinfo (access mode, O_APPEND, O_NONBLOCK, ...).
        flags: i32,
        offset: u64,
        /// The file was deleted while open; `contents` holds its bytes.
        deleted: bool,
        contents: Option<Vec<u8>>,
    },
    /// A character device reopened by path (`/dev/null`, `/dev/zero`, ...).
    Device { path: String, flags: i32 },
    /// One of the restarting tool's own standard fds takes its place:
    /// a terminal or a pipe that leads outside the computation.
    Inherit { from: i32, what: String },
    /// Something this version cannot restore; restored as `/dev/null`
    /// with a warning (`what` names it, e.g. `socket:[1234]`).
    Unsupported { what: String },
    /// One end of a pipe whose both ends are inside the computation.
    /// `id` is the pipe's inode at checkpoint time (ends with the same id are
    /// the same pipe); `buffered` holds the bytes in flight (recorded on one
    /// read end only).
    Pipe {
        id: u64,
        write: bool,
        flags: i32,
        buffered: Vec<u8>,
    },
    /// An epoll instance and what it watches: (fd, events, data).
    Epoll {
        flags: i32,
        watches: Vec<(i32, u32, u64)>,
    },
    /// An eventfd with its counter.
    EventFd {
        flags: i32,
        count: u64,
        semaphore: bool,
    },
    /// A signalfd and the signals it accepts.
    SignalFd { flags: i32, mask: u64 },
    /// A timerfd: clock, and the remaining time and interval in ns.
    TimerFd {
        flags: i32,
        clock: i32,
        value_ns: u64,
        interval_ns: u64,
    },
    /// One end of a connected unix socket pair (stream, datagram or
    /// seqpacket) whose both ends are inside the computation. `id` is the
    /// same on both ends (the smaller inode at checkpoint time), `end` is 0
    /// or 1; `queued` holds the messages waiting to be read on THIS end, in
    /// order (a stream socket's bytes are one chunk), recorded on one fd of
    /// the end only. Fds in flight (`SCM_RIGHTS`) are not saved.
    UnixPair {
        id: u64,
        end: u8,
        /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
        sotype: i32,
        /// File status flags (`O_NONBLOCK`).
        flags: i32,
        queued: Vec<Vec<u8>>,
    },
    /// A listening socket (TCP over IPv4/IPv6, or unix), recreated bound to
    /// the same address. Connections waiting in its accept queue at
    /// checkpoint time are not kept.
    Listener {
        family: i32,
        sotype: i32,
        /// Raw `sockaddr` as `getsockname` returned it.
        addr: Vec<u8>,
        flags: i32,
        backlog: i32,
    },
    /// One end of a TCP connection (IPv4 or IPv6) whose both ends are inside
    /// the computation. `id` is the same on both ends (the smaller socket
    /// inode at checkpoint time), `end` is 0 or 1. At restart the pair is
    /// reconnected, each end bound to its original `local` address when
    /// possible.
    TcpConn {
        id: u64,
        end: u8,
        family: i32,
        /// Raw `sockaddr` of this end (`getsockname`) and of its peer.
        local: Vec<u8>,
        peer: Vec<u8>,
        /// File status flags (`O_NONBLOCK`).
        flags: i32,
        /// Bytes waiting to be read on THIS end (its receive queue, plus
        /// bytes the peer had queued but not yet delivered), recorded on
        /// one fd of the end only.
        queued: Vec<u8>,
        /// This end had shut down writing (`FIN_WAIT1`/`FIN_WAIT2`).
        shut_wr: bool,
        nodelay: bool,
        keepalive: bool,
        reuseaddr: bool,
        /// `SO_RCVBUF` and `SO_SNDBUF` as `getsockopt` returned them (the
        /// kernel's doubled values). Put back only when a large queue made
        /// restart enlarge the buffers.
        rcvbuf: i32,
        sndbuf: i32,
    },
    /// A UDP socket (IPv4 or IPv6), recreated bound to `local` (when it was
    /// bound) and connected to `peer` (when it was connected).
    Udp {
        /// The socket's inode at checkpoint time (fds with the same id are
        /// the same socket).
        id: u64,
        family: i32,
        local: Vec<u8>,
        peer: Option<Vec<u8>>,
        flags: i32,
        /// Datagrams waiting to be read, in order, as (raw source
        /// `sockaddr`, payload); recorded on one fd of the socket only.
        queued: Vec<(Vec<u8>, Vec<u8>)>,
        reuseaddr: bool,
    },
    /// One end of a connected unix stream or seqpacket socket whose peer is
    /// inside the computation and where at least one end has a name (path
    /// or abstract), e.g. a client and the socket a listener accepted for
    /// it. Fields as in `UnixPair`, plus each end's own raw `sockaddr_un`
    /// (`getsockname`; just the family for an unnamed end).
    UnixNamedPair {
        id: u64,
        end: u8,
        sotype: i32,
        flags: i32,
        queued: Vec<Vec<u8>>,
        name: Vec<u8>,
    },
    /// The master of a pseudo-terminal made inside the computation
    /// (`/dev/ptmx`). `index` is its pts number at checkpoint (the same for
    /// its slave); `state` is recorded on one master fd of the pty only.
    PtyMaster {
        index: u32,
        flags: i32,
        state: Option<PtyState>,
    },
    /// The slave (`/dev/pts/N`) of a pty whose master is in the computation.
    /// `dev_tty`: the fd was opened as `/dev/tty` (the controlling terminal)
    /// and is opened so again at restart once the process has its terminal.
    PtySlave {
        index: u32,
        flags: i32,
        dev_tty: bool,
    },
    /// A POSIX message queue (`mq_open`), by name in the computation's IPC
    /// namespace. `messages` holds the messages in the queue as
    /// `(priority, bytes)` in receive order, recorded on one fd of the queue
    /// only.
    Mqueue {
        /// Name without the leading `/`.
        name: String,
        /// Access mode and `O_NONBLOCK`.
        flags: i32,
        /// Permission bits of the queue.
        mode: u32,
        maxmsg: i64,
        msgsize: i64,
        messages: Vec<(u32, Vec<u8>)>,
    },
    /// A memfd (`memfd_create`). `id` names the memory object (its inode;
    /// fds and mappings with the same id share it); `size`, `seals` and
    /// `contents` (trailing zeros not stored) are recorded on one fd of the
    /// object only, `contents: None` on the others.
    Memfd {
        id: u64,
        /// The name given to `memfd_create` (without the `memfd:` prefix).
        name: String,
        flags: i32,
        offset: u64,
        size: u64,
        /// `F_GET_SEALS`.
        seals: i32,
        contents: Option<Vec<u8>>,
    },
    /// A connected stream socket whose peer is outside the computation (a
    /// TCP connection to a client or server that is not checkpointed, a
    /// unix stream or seqpacket socket whose peer is not in the
    /// computation or is closed), or a TCP socket already reset. It cannot
    /// be reconnected: at restart it is a socket of the same family and type
    /// whose peer is gone (a TCP socket in the reset state, a unix socket
    /// whose other end is closed), so the program sees a dropped connection.
    /// `id` is the socket inode at checkpoint time (fds with the same id
    /// share the socket); `queued` holds what was waiting to be read,
    /// recorded on one fd of the socket only; it is read before the reset.
    OutsidePeer {
        id: u64,
        family: i32,
        sotype: i32,
        /// Raw `sockaddr` of this end (`getsockname`) and of the peer
        /// (`getpeername`; `None` when the socket was already reset).
        local: Vec<u8>,
        peer: Option<Vec<u8>>,
        /// File status flags (`O_NONBLOCK`).
        flags: i32,
        queued: Vec<Vec<u8>>,
    },
    /// An inotify instance (2.1) and its watches as `(wd, mask, path)`,
    /// ascending by wd; the path was found from the watched inode. Events
    /// waiting to be read at checkpoint time are not kept.
    Inotify {
        flags: i32,
        watches: Vec<(i32, u32, String)>,
    },
    /// A regular file unlinked while open (2.2; CRIU's ghost file). `id`
    /// names the file (its inode, top bit set; fds and mappings with the
    /// same id, in any process, share it). `size`, `mode`, `uid`, `gid`
    /// and `contents` (the whole file) are recorded on one fd of the file
    /// only, `contents: None` on the others. At restart it is a new file
    /// that is already unlinked (in the same directory when possible), with
    /// the same contents, size and mode, at the saved offset.
    Ghost {
        id: u64,
        /// Its last path (without ` (deleted)`).
        path: String,
        flags: i32,
        offset: u64,
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        contents: Option<Vec<u8>>,
    },
    /// A regular file open for writing (2.2), reopened by path and seeked
    /// like `File`. `size`, `dev`, `ino` and `tail_crc` (crc32 of the last
    /// `min(size, 4096)` bytes before `size`) are the file at checkpoint
    /// time: a restart cuts it back to `size` when it only grew since (see
    /// `resources/files.rs`, `cut_back`).
    WrittenFile {
        path: String,
        flags: i32,
        offset: u64,
        size: u64,
        dev: u64,
        ino: u64,
        tail_crc: u32,
    },
    /// (2.3) One end of a TCP connection whose other end is in another
    /// launch of the computation (another `dmtcp-run` joined to the same
    /// coordinator, or another host). The two ends found each other at
    /// checkpoint through the coordinator's name service; at restart they
    /// meet again through it (one listens, the other connects) and each
    /// end's bytes are sent again by its peer. `key` names the connection
    /// the same way on both ends (`tcpx/<generation>/<end>/<end>`, the ends
    /// in ascending order); `listen` says which end listens at restart.
    TcpRemote {
        /// The socket's inode at checkpoint time (fds with the same id are
        /// the same socket).
        id: u64,
        key: String,
        listen: bool,
        family: i32,
        /// Raw `sockaddr` of this end (`getsockname`) and of its peer.
        local: Vec<u8>,
        peer: Vec<u8>,
        /// File status flags (`O_NONBLOCK`).
        flags: i32,
        /// Bytes waiting to be read on this end (its receive queue),
        /// recorded on one fd of the socket only.
        queued: Vec<u8>,
        /// Bytes this end had sent that were not yet in the peer's receive
        /// queue (read in TCP repair mode), sent again after the peer's
        /// queue; on the same fd as `queued`.
        unsent: Vec<u8>,
        /// This end had shut down writing (`FIN_WAIT1`/`FIN_WAIT2`).
        shut_wr: bool,
        nodelay: bool,
        keepalive: bool,
        reuseaddr: bool,
        /// The peer's launch id (for messages).
        peer_launch: String,
        /// At restart only: nsinit's fd holding the rebuilt socket (set by
        /// `dmtcp-restart` after the rendezvous; -1 in images).
        inherited: i32,
    },
}

/// A memory mapping and its saved pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: u32,
    pub shared: bool,
    pub kind: VmaKind,
    /// `VM_GROWSDOWN` (the main stack).
    pub growsdown: bool,
    /// `VM_ACCOUNT`: the mapping was writable once (e.g. RELRO after
    /// `mprotect`). Restored writable and then `mprotect`ed, so the kernel
    /// keeps it a separate VMA exactly as before.
    pub account: bool,
    /// Runs of saved pages, ascending, not overlapping.
    pub pages: Vec<PageRun>,
    /// Incremental images only: pages unchanged since the parent image,
    /// ascending, disjoint from `pages`. Their content is whatever the
    /// parent restores at the same address (saved there, or zero / the
    /// file's page if the parent saved nothing).
    pub from_parent: Vec<PageSpan>,
}

/// A range of pages, `npages` from `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageSpan {
    pub addr: u64,
    pub npages: u64,
}

impl PageSpan {
    pub fn end(&self) -> u64 {
        self.addr + self.npages * PAGE_SIZE
    }
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmaKind {
    /// Anonymous memory (including `[heap]` and `[stack]`, see `name`).
    Anon {
        name: Option<String>,
    },
    /// A file mapping: pages not in `pages` come from the file.
    File {
        path: String,
        offset: u64,
        dev: u64,
        inode: u64,
    },
    Vdso,
    Vvar,
    VvarVclock,
    Vsyscall,
    /// Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`, "/dev/zero
    /// (deleted)"): `id` names the memory object (its inode; mappings with
    /// the same id, in any process, share it) and `offset` is where this
    /// mapping starts in it. Its pages are saved.
    SharedAnon {
        id: u64,
        offset: u64,
    },
    /// An attached SysV shared memory segment ("/SYSV<key> (deleted)"): `id`
    /// is its shmid (the kernel shows it as the inode), `offset` is where
    /// this mapping starts in the segment. The pages live in the segment
    /// (saved with [`IpcState`]), not here.
    SysvShm {
        id: i32,
        offset: u64,
    },
    /// A mapping of a memfd ("/memfd:NAME (deleted)"): `id` is the memfd's
    /// inode, `offset` where the mapping starts in it. Shared: its pages are
    /// saved only when no fd of the computation holds the memfd (otherwise
    /// the fd's `FdKind::Memfd` carries the contents). Private: mapped from
    /// the memfd through an fd the process holds; privately modified pages
    /// are saved.
    Memfd {
        id: u64,
        name: String,
        offset: u64,
    },
    /// A shared mapping of a regular file unlinked while mapped (2.2): `id`
    /// is the file's id as in [`FdKind::Ghost`], `offset` where the mapping
    /// starts in it. When no fd of the computation holds the file, every
    /// page of the mapping is saved here (the file is rebuilt from them);
    /// otherwise the fd's `FdKind::Ghost` carries the contents. At restart
    /// every mapping with the same id maps the same (unlinked) file again.
    /// (A private mapping of an unlinked file is saved as `Anon` with all
    /// its pages.)
    Ghost {
        id: u64,
        path: String,
        offset: u64,
    },
}

/// A run of pages saved for a VMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    /// Address of the first page.
    pub addr: u64,
    /// Number of pages.
    pub npages: u64,
    /// Where the bytes are, in the image's page data (format-specific locator).
    pub data: DataRef,
}

/// Locator of page bytes inside the image file; meaning owned by `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRef {
    /// Index of the first block holding this run.
    pub block: u32,
    /// Byte offset of the run inside the block's uncompressed data.
    pub offset: u64,
}
