//! Every message that crosses a coordinator connection.
//!
//! One enum per direction keeps the state machines honest: a coordinator can
//! only ever receive a [`ToCoordinator`] and a client only a [`FromCoordinator`].
//! Adding a variant at the end is a minor version bump; changing or removing one
//! is a major bump (bincode encodes the variant index).

use serde::{Deserialize, Serialize};

/// Who is on the other end of a connection, announced in [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A supervisor (`dmtcp-run`, `dmtcp-restart`, `dmtcp-attach`): it owns a
    /// tree of target processes on one host and takes part in every barrier.
    Supervisor(SupervisorHello),
    /// A one-shot client (`dmtcp-command`, the application API).
    Command,
}

/// What a supervisor says about itself when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorHello {
    /// Host name of the supervisor.
    pub host: String,
    /// Host pid of the supervisor process itself.
    pub pid: u32,
    /// The computation this supervisor belongs to, when it is restarting one
    /// (`None` for a fresh launch: the coordinator assigns one).
    pub computation: Option<String>,
    /// Checkpoint generation the restarted images were taken at (0 on launch).
    pub generation: u64,
}

/// First frame on every connection: the client speaks first. It carries no
/// secret: both sides prove they know it afterwards ([`crate::auth`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 8],
    pub major: u16,
    pub minor: u16,
    /// The client's fresh random challenge.
    pub nonce: [u8; 32],
    pub role: Role,
}

/// One target process as the coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcEntry {
    /// Pid inside the computation's pid namespace (what `getpid()` returns).
    pub vpid: u32,
    /// Pid on the host (what `ps` and `gdb -p` use).
    pub host_pid: u32,
    /// Program name (comm).
    pub prog: String,
    /// Host the process runs on.
    pub host: String,
}

/// A checkpoint image written by a supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// Absolute path of the durable image.
    pub path: String,
    pub vpid: u32,
    pub prog: String,
    pub host: String,
    /// Bytes on disk.
    pub size: u64,
}

/// The checkpoint barriers, in order. A checkpoint walks them one after the
/// other; every supervisor must report [`ToCoordinator::Reached`] for a phase
/// before the coordinator announces the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Freeze every user thread of every process.
    Suspend,
    /// Elect the process that saves each shared fd (pipes, sockets).
    FdLeaderElection,
    /// Drain data in flight out of pipes and sockets.
    Drain,
    /// Capture a consistent snapshot (state and memory) of every process.
    Checkpoint,
    /// Put drained data back.
    Refill,
    /// Let every user thread run again.
    Resume,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Suspend,
        Phase::FdLeaderElection,
        Phase::Drain,
        Phase::Checkpoint,
        Phase::Refill,
        Phase::Resume,
    ];

    /// The phase after this one, `None` after [`Phase::Resume`].
    pub fn next(self) -> Option<Phase> {
        let i = Self::ALL.iter().position(|p| *p == self)?;
        Self::ALL.get(i + 1).copied()
    }
}

/// Options of one checkpoint, sent with every barrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointOptions {
    /// Checkpoint id, increasing per coordinator.
    pub id: u64,
    /// Generation of the computation (counts checkpoints across restarts).
    pub generation: u64,
    /// Directory the images go to (absolute).
    pub dir: String,
    /// Codec name: "gzip", "zstd", "none". Empty: the supervisor's default.
    pub codec: String,
    /// Write only pages written since the previous checkpoint.
    pub incremental: bool,
}

/// What `dmtcp-command` (or the application API) asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Start a checkpoint; `blocking`: reply only once every image is durable.
    Checkpoint {
        blocking: bool,
        /// Write only the pages written since the previous checkpoint.
        incremental: bool,
    },
    Status,
    List,
    /// Kill every process of the computation.
    Kill,
    /// Kill the computation and stop the coordinator.
    Quit,
    /// Checkpoint every N seconds (0 = off).
    SetInterval(u32),
    /// (2.6) [`Request::Checkpoint`] with options added since:
    /// `precopy`: every supervisor copies the program's memory into its
    /// images while the program runs, before freezing it (as
    /// `DMTCP_PRECOPY=1` does for every checkpoint of one launch). Sent
    /// only to coordinators of minor 6 or more.
    CheckpointWith {
        blocking: bool,
        incremental: bool,
        precopy: bool,
    },
}

/// Coordinator's view of the computation, for `--status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub computation: String,
    pub num_processes: u32,
    pub num_supervisors: u32,
    /// "RUNNING", or the barrier in progress ("SUSPEND", "DRAIN", ...).
    pub state: String,
    pub generation: u64,
    pub interval: u32,
    pub ckpt_dir: String,
    /// Images of the last completed checkpoint.
    pub last_images: Vec<ImageEntry>,
}

/// Reply to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    Status(Status),
    List(Vec<ProcEntry>),
    /// A checkpoint finished; images are durable.
    CheckpointDone {
        id: u64,
        images: Vec<ImageEntry>,
        /// Milliseconds from the request to durable images.
        millis: u64,
    },
    /// A checkpoint was started (non-blocking request).
    CheckpointStarted {
        id: u64,
    },
    CheckpointFailed {
        id: u64,
        reason: String,
    },
    Error(String),
    /// (2.1, replaces `List` for clients of minor 1 or more) the processes
    /// with the launch they belong to.
    Launches(Vec<LaunchProc>),
    /// (2.1, replaces `CheckpointDone`) a checkpoint finished; `generation`
    /// is the one its images and the restart script record; `warnings` are
    /// the supervisors' [`ToCoordinator::Warnings`].
    Committed {
        id: u64,
        generation: u64,
        images: Vec<ImageEntry>,
        millis: u64,
        warnings: Vec<String>,
    },
    /// (2.1, replaces `CheckpointStarted`) a checkpoint was started; its
    /// images will record `generation`.
    Started {
        id: u64,
        generation: u64,
    },
    /// (2.2, replaces `Status` for clients of minor 2 or more) the status
    /// with the progress of the checkpoint in progress and the figures of
    /// the last completed one.
    StatusProgress {
        status: Status,
        current: Option<CheckpointProgress>,
        last: Option<CheckpointProgress>,
    },
}

/// How far a checkpoint got (2.2): bytes of images written so far (on disk,
/// every supervisor), processes whose image is complete, out of how many,
/// and milliseconds since it started. `expected_bytes` is the size of the
/// previous checkpoint's images (0 when there was none): what a time-left
/// estimate can go by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointProgress {
    pub id: u64,
    pub bytes: u64,
    pub expected_bytes: u64,
    pub processes_done: u32,
    pub processes: u32,
    pub millis: u64,
}

/// One process of the computation and the launch it belongs to (2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchProc {
    /// The supervisor's launch id (hex; empty if it did not say).
    pub launch: String,
    /// Host pid of the supervisor (`dmtcp-run` or `dmtcp-restart`).
    pub supervisor_pid: u32,
    pub process: ProcEntry,
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCoordinator {
    Hello(Hello),
    /// Command role: one request, one (or for blocking checkpoints, a final) reply.
    Request(Request),
    /// Supervisor role: the full current list of its processes (replaces the old one).
    Processes(Vec<ProcEntry>),
    /// Supervisor role: a barrier phase is done on this supervisor.
    Reached {
        id: u64,
        phase: Phase,
    },
    /// Supervisor role: images of checkpoint `id` are in place (renamed
    /// over the previous ones after [`FromCoordinator::Commit`]).
    ImagesWritten {
        id: u64,
        images: Vec<ImageEntry>,
    },
    /// Supervisor role: checkpoint `id` failed here; the computation keeps running.
    CheckpointFailed {
        id: u64,
        reason: String,
    },
    /// Name service: publish `value` under `key` (restart-time address exchange).
    Publish {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Name service: ask for `key`; answered with [`FromCoordinator::Published`].
    Query {
        key: Vec<u8>,
    },
    /// Supervisor role: the computation's tree on this supervisor has exited.
    Exited {
        status: i32,
    },
    /// Handshake, second client frame: the client's proof of the secret,
    /// sent only after the coordinator proved it ([`crate::auth`]).
    Auth {
        proof: [u8; 32],
    },
    /// Supervisor role, two-phase commit: the images of checkpoint `id` are
    /// written and fsynced under temporary names; they replace the previous
    /// ones only on [`FromCoordinator::Commit`].
    ImagesDurable {
        id: u64,
        images: Vec<ImageEntry>,
    },
    /// Supervisor role (2.1): this supervisor's launch id, a 1-16 digit hex
    /// string that sets its processes apart from other launches of the
    /// computation (each launch is a pid namespace of its own, so pids
    /// repeat). Sent once after [`FromCoordinator::Version`].
    Launch {
        id: String,
    },
    /// Supervisor role (2.1): what checkpoint `id` could not save as it is
    /// (an outside connection that a restart will drop, ...): the command
    /// that asked for the checkpoint prints them. Sent before
    /// [`ToCoordinator::ImagesDurable`].
    Warnings {
        id: u64,
        warnings: Vec<String>,
    },
    /// Supervisor role (2.2): while the images of checkpoint `id` are
    /// written, every ~250 ms: `bytes` of its images on disk so far,
    /// `done` of its `processes` images complete. Sent only to a
    /// coordinator of minor 2 or more, before `ImagesDurable`.
    Progress {
        id: u64,
        bytes: u64,
        done: u32,
        processes: u32,
    },
    /// (2.2) Name service: an atomic integer operation on the value under
    /// `key` (8 bytes little-endian; a missing value or one of another
    /// length counts as 0). Answered with [`FromCoordinator::Published`]
    /// carrying the value before the operation (`None`: unknown `op`, or
    /// the store is full). `op`: 1 set, 2 add, 3 and, 4 or, 5 xor, 6 min,
    /// 7 max, 8 get (operand ignored). Sent only to coordinators of minor 2
    /// or more.
    KvOp {
        key: Vec<u8>,
        op: u8,
        operand: i64,
    },
    /// Supervisor role (2.3): plugin hooks of moment `moment` (the
    /// `MOMENT_*` of the inject library's hook ABI) in checkpoint `id`:
    /// every hook thread of this supervisor is at a global barrier
    /// (`Some(name)`) or done with the moment (`None`). Sent only to a
    /// coordinator of minor 3 or more, only by a supervisor with plugins.
    HookBarrier {
        id: u64,
        moment: u32,
        barrier: Option<String>,
    },
    /// Supervisor role (2.3): plugin hooks of RESTART in launch group
    /// `restart` (a token shared by the `groups` launch groups one
    /// `dmtcp-restart` restarts): every hook thread of this supervisor is at
    /// a global barrier (`Some(name)`) or done (`None`). Sent only to a
    /// coordinator of minor 3 or more.
    RestartBarrier {
        restart: String,
        groups: u32,
        barrier: Option<String>,
    },
    /// Supervisor role (2.4): [`ToCoordinator::RestartBarrier`] for a
    /// launch group that restores `procs` processes of a computation whose
    /// complete image set (of the generation in this supervisor's Hello) has
    /// `set_size` processes (0: unknown to the supervisor). Once the
    /// coordinator knows the set's size (from the checkpoint it completed,
    /// else from `set_size`), the barrier spans every launch group of that
    /// computation and generation, whichever `dmtcp-restart` restarts it; it
    /// is released when the groups' `procs` add up to the set's size. Sent
    /// only to a coordinator of minor 4 or more, by every restarted group
    /// (one `None` from a group without plugins).
    RestartSetBarrier {
        restart: String,
        groups: u32,
        procs: u32,
        set_size: u32,
        barrier: Option<String>,
    },
    /// (2.5) Supervisor role: every process of this launch is stopped
    /// (answer to [`FromCoordinator::Halt`]).
    Halted,
}

/// Frames the coordinator sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromCoordinator {
    /// Handshake accepted.
    Welcome {
        /// Computation id (hex) this connection belongs to.
        computation: String,
        /// Current generation (number of completed checkpoints).
        generation: u64,
        /// The coordinator's checkpoint directory (absolute).
        ckpt_dir: String,
    },
    /// Handshake refused or frame not understood; the connection closes after it.
    Error(String),
    Reply(Reply),
    /// Supervisor role: enter a barrier phase.
    Barrier {
        phase: Phase,
        options: CheckpointOptions,
    },
    /// Supervisor role: checkpoint `id` was abandoned (another supervisor failed);
    /// resume the processes if they are frozen and keep old images.
    Abort {
        id: u64,
        reason: String,
    },
    /// Supervisor role: kill the computation.
    Kill,
    /// Name service answer (`None`: not published).
    Published {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    /// Handshake, the coordinator's answer to a [`Hello`]: its own random
    /// challenge and its proof of the secret ([`crate::auth`]).
    Challenge {
        nonce: [u8; 32],
        proof: [u8; 32],
    },
    /// Supervisor role, two-phase commit: every participant's images of
    /// checkpoint `id` are durable; rename them into place and answer with
    /// [`ToCoordinator::ImagesWritten`].
    Commit {
        id: u64,
    },
    /// (2.1) Sent right before `Welcome` to clients whose `Hello` said minor
    /// 1 or more: the coordinator's minor version. A supervisor sends the
    /// 2.1 frames ([`ToCoordinator::Launch`], [`ToCoordinator::Warnings`])
    /// only after it.
    Version {
        minor: u16,
    },
    /// (2.3) Supervisor role: every participant of checkpoint `id` is at a
    /// global plugin barrier of `moment` or done with it: the hook threads
    /// waiting at it go on. Sent only to supervisors that sent
    /// [`ToCoordinator::HookBarrier`].
    HookGo {
        id: u64,
        moment: u32,
    },
    /// (2.3) Supervisor role: every launch group of restart `restart` is at
    /// a global plugin barrier of RESTART or done: go on. Sent only to
    /// supervisors that sent [`ToCoordinator::RestartBarrier`] or (2.4)
    /// [`ToCoordinator::RestartSetBarrier`] (then `restart` is its token).
    RestartGo {
        restart: String,
    },
    /// (2.5) Supervisor role: the first step of a kill. Stop every process
    /// of the launch (`SIGSTOP`, so none runs its cleanup when another
    /// launch dies first, e.g. an MPI launcher removing its session files
    /// when a remote daemon's connection closes) and answer
    /// [`ToCoordinator::Halted`]; [`FromCoordinator::Kill`] follows once
    /// every supervisor has answered or a few seconds have passed. Sent only
    /// to supervisors of minor 5 or more.
    Halt,
    /// (2.6) Supervisor role: checkpoint `id`, whose Suspend barrier
    /// follows, pre-copies memory while the program runs
    /// ([`Request::CheckpointWith`]). Sent only to supervisors of minor 6
    /// or more; older ones take the checkpoint without pre-copy.
    Precopy {
        id: u64,
    },
}

impl ToCoordinator {
    /// Variant name of the message, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ToCoordinator::Hello(_) => "Hello",
            ToCoordinator::Request(_) => "Request",
            ToCoordinator::Processes(_) => "Processes",
            ToCoordinator::Reached { .. } => "Reached",
            ToCoordinator::ImagesWritten { .. } => "ImagesWritten",
            ToCoordinator::CheckpointFailed { .. } => "CheckpointFailed",
            ToCoordinator::Publish { .. } => "Publish",
            ToCoordinator::Query { .. } => "Query",
            ToCoordinator::Exited { .. } => "Exited",
            ToCoordinator::Auth { .. } => "Auth",
            ToCoordinator::ImagesDurable { .. } => "ImagesDurable",
            ToCoordinator::Launch { .. } => "Launch",
            ToCoordinator::Warnings { .. } => "Warnings",
            ToCoordinator::Progress { .. } => "Progress",
            ToCoordinator::KvOp { .. } => "KvOp",
            ToCoordinator::HookBarrier { .. } => "HookBarrier",
            ToCoordinator::RestartBarrier { .. } => "RestartBarrier",
            ToCoordinator::RestartSetBarrier { .. } => "RestartSetBarrier",
            ToCoordinator::Halted => "Halted",
        }
    }
}
