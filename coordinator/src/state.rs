//! The coordinator's state machine: one thread owns everything and reacts to
//! [`Event`]s and timers.
//!
//! A checkpoint walks [`Phase::ALL`]: the coordinator announces a phase to
//! every participating supervisor and waits until each has reported
//! `Reached` for it. Then it commits in two phases: once every participant
//! has reached `Resume` and reported its images durable (`ImagesDurable`,
//! under temporary names), each is sent `Commit` and renames them into
//! place; the checkpoint is complete when every participant has answered
//! `ImagesWritten`. A checkpoint abandoned before `Commit` replaces no
//! image anywhere. A failure report, a participant's
//! disconnect, or a barrier timeout abandons it (`Abort` to the others).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use dmtcp_protocol::{
    write_frame, CheckpointOptions, CheckpointProgress, FromCoordinator, ImageEntry, LaunchProc,
    Phase, ProcEntry, Reply, Request, Role, Status, SupervisorHello, ToCoordinator,
};

use crate::event::{kind, Config, ConnId, Event};

struct Client {
    stream: TcpStream,
    role: ClientRole,
    /// The protocol minor version the client's Hello said it speaks: 2.1
    /// replies go only to clients of minor 1 or more.
    minor: u16,
}

enum ClientRole {
    Supervisor {
        hello: SupervisorHello,
        procs: Vec<ProcEntry>,
        /// Its launch id (2.1 `Launch`; empty until said).
        launch: String,
    },
    Command,
}

/// A checkpoint in progress.
struct Checkpoint {
    options: CheckpointOptions,
    phase: Phase,
    /// Supervisors connected when it started; only they take part.
    participants: BTreeSet<ConnId>,
    reached: BTreeSet<ConnId>,
    /// Every participant has reached [`Phase::Resume`].
    resumed: bool,
    /// Participants whose images are durable under temporary names.
    durable: BTreeSet<ConnId>,
    /// `Commit` was sent to every participant.
    committing: bool,
    images: BTreeMap<ConnId, Vec<ImageEntry>>,
    /// Connections waiting for the final reply (blocking requests).
    waiters: Vec<ConnId>,
    started: Instant,
    /// When the current barrier (or the wait for images) times out.
    deadline: Instant,
    /// The supervisors' warnings (2.1 `Warnings`), for the waiters.
    warnings: Vec<String>,
    /// Each participant's last 2.2 `Progress`: (bytes, done, processes).
    progress: BTreeMap<ConnId, (u64, u32, u32)>,
    /// Plugin global barriers (2.3 `HookBarrier`): per participant and
    /// moment, the barrier its hook threads wait at, or `None` once it is
    /// done with the moment.
    hooks: BTreeMap<(ConnId, u32), Option<String>>,
}

/// The barrier phase in which a plugin moment runs (`HookBarrier.moment`:
/// 1 PRESUSPEND and 2 PRECHECKPOINT in Suspend, 3 RESUME in Resume).
fn moment_phase(moment: u32) -> Phase {
    match moment {
        3 => Phase::Resume,
        _ => Phase::Suspend,
    }
}

/// One supervisor's state at a RESTART barrier of an image set (2.4).
struct SetMember {
    /// Its `dmtcp-restart`'s token (`RestartGo` names it).
    token: String,
    /// The launch groups of its `dmtcp-restart`.
    groups: u32,
    /// The processes it restored.
    procs: u32,
    /// The set's size as its `dmtcp-restart` was told (0: not told).
    set_size: u32,
    /// The barrier it waits at; `None`: done with RESTART.
    barrier: Option<String>,
}

/// Upper-case name of a phase, as `--status` shows it.
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Suspend => "SUSPEND",
        Phase::FdLeaderElection => "FD_LEADER_ELECTION",
        Phase::Drain => "DRAIN",
        Phase::Checkpoint => "CHECKPOINT",
        Phase::Refill => "REFILL",
        Phase::Resume => "RESUME",
    }
}

/// All coordinator state; see the module docs.
pub struct State {
    cfg: Config,
    clients: BTreeMap<ConnId, Client>,
    /// Computation id; `None` until the first supervisor joins, and again
    /// after the last one has left.
    computation: Option<String>,
    generation: u64,
    last_id: u64,
    ckpt: Option<Checkpoint>,
    last_images: Vec<ImageEntry>,
    /// Figures of the last completed checkpoint (2.2 status).
    last_progress: Option<CheckpointProgress>,
    names: HashMap<Vec<u8>, Vec<u8>>,
    /// RESTART plugin barriers (2.3 `RestartBarrier`): per restart token,
    /// each supervisor's barrier, or `None` once done.
    restart_barriers: BTreeMap<String, BTreeMap<ConnId, Option<String>>>,
    /// RESTART plugin barriers across every `dmtcp-restart` of one image
    /// set (2.4 `RestartSetBarrier`): per (computation, generation), each
    /// supervisor's state.
    restart_sets: BTreeMap<(String, u64), BTreeMap<ConnId, SetMember>>,
    /// The image set of the last checkpoint this coordinator completed:
    /// (computation, generation, processes).
    last_set: Option<(String, u64, usize)>,
    /// Bytes of keys and values in `names`.
    names_bytes: usize,
    interval: u32,
    next_periodic: Option<Instant>,
    had_supervisor: bool,
    /// Connections whose writes failed; dropped after the current event.
    dead: Vec<ConnId>,
    quit: bool,
    /// Clients of `Kill`/`Quit` waiting for every supervisor to have left
    /// (each leaves once its processes are gone), with their deadline.
    kill_waiters: Vec<(ConnId, Instant)>,
    /// Quit once `kill_waiters` are answered.
    quit_after_kill: bool,
    /// (2.5) A kill's first step under way: the supervisors asked to halt
    /// that have not answered yet, and when to kill regardless.
    halting: Option<(HashSet<ConnId>, Instant)>,
}

/// How long a kill waits for every supervisor to have stopped its
/// processes before it kills anyway.
const HALT_WAIT: Duration = Duration::from_secs(5);

/// How long `Kill` and `Quit` wait for the computation's processes to end.
const KILL_WAIT: Duration = Duration::from_secs(20);

impl State {
    pub fn new(cfg: Config) -> State {
        let interval = cfg.interval;
        State {
            cfg,
            clients: BTreeMap::new(),
            computation: None,
            generation: 0,
            last_id: 0,
            ckpt: None,
            last_images: Vec::new(),
            last_progress: None,
            names: HashMap::new(),
            restart_barriers: BTreeMap::new(),
            restart_sets: BTreeMap::new(),
            last_set: None,
            names_bytes: 0,
            interval,
            next_periodic: (interval > 0)
                .then(|| Instant::now() + Duration::from_secs(interval.into())),
            had_supervisor: false,
            dead: Vec::new(),
            quit: false,
            kill_waiters: Vec::new(),
            halting: None,
            quit_after_kill: false,
        }
    }

    /// Handles events until a Quit, or until the last supervisor has left with `exit_on_last`.
    pub fn run(mut self, rx: Receiver<Event>) {
        loop {
            self.on_timers();
            self.reap();
            if self.quit {
                tracing::info!("quitting");
                break;
            }
            if self.cfg.exit_on_last
                && self.had_supervisor
                && self.num_supervisors() == 0
                && self.ckpt.is_none()
            {
                tracing::info!("last supervisor has left; exiting");
                break;
            }
            let wait = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(wait) {
                Ok(ev) => self.on_event(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for c in self.clients.values() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ck = self.ckpt.as_ref().map(|c| c.deadline);
        let kill = self
            .kill_waiters
            .iter()
            .map(|(_, d)| *d)
            .chain(self.halting.as_ref().map(|(_, d)| *d))
            .min();
        let ck = match (ck, kill) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let periodic = if self.ckpt.is_none() {
            self.next_periodic
        } else {
            None
        };
        match (ck, periodic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if self.halting.as_ref().is_some_and(|(_, d)| now >= *d) {
            let late: Vec<String> = self.halting.as_ref().map_or(Vec::new(), |(w, _)| {
                w.iter().map(|c| self.describe(*c)).collect()
            });
            tracing::warn!(
                "kill: not halted after {} s: {}; killing anyway",
                HALT_WAIT.as_secs(),
                late.join(", ")
            );
            self.kill_halted();
        }
        if self.kill_waiters.iter().any(|(_, d)| now >= *d) {
            let left: Vec<String> = self
                .supervisors()
                .into_iter()
                .map(|c| self.describe(c))
                .collect();
            let reason = format!(
                "kill sent, but after {} s these have not ended: {}",
                KILL_WAIT.as_secs(),
                left.join(", ")
            );
            let (late, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.kill_waiters)
                .into_iter()
                .partition(|(_, d)| now >= *d);
            self.kill_waiters = wait;
            for (c, _) in late {
                self.reply(c, Reply::Error(reason.clone()));
            }
            if self.kill_waiters.is_empty() && self.quit_after_kill {
                self.quit = true;
            }
        }
        if let Some(ck) = &self.ckpt {
            if now >= ck.deadline {
                let missing: Vec<String> = if ck.committing {
                    ck.participants
                        .iter()
                        .filter(|c| !ck.images.contains_key(c))
                        .map(|c| self.describe(*c))
                        .collect()
                } else if ck.resumed {
                    ck.participants
                        .iter()
                        .filter(|c| !ck.durable.contains(c))
                        .map(|c| self.describe(*c))
                        .collect()
                } else {
                    ck.participants
                        .iter()
                        .filter(|c| !ck.reached.contains(c))
                        .map(|c| self.describe(*c))
                        .collect()
                };
                let what = if ck.committing {
                    "committing images".to_string()
                } else if ck.resumed {
                    "writing images".to_string()
                } else {
                    format!("barrier {}", phase_name(ck.phase))
                };
                let reason = format!(
                    "{what} timed out after {} s waiting for {}",
                    self.cfg.barrier_timeout.as_secs(),
                    missing.join(", ")
                );
                self.fail_checkpoint(reason);
            }
        }
        if self.ckpt.is_none() {
            if let Some(t) = self.next_periodic {
                if now >= t {
                    self.next_periodic = Some(now + Duration::from_secs(self.interval.into()));
                    if self.num_supervisors() > 0 {
                        tracing::info!("periodic checkpoint");
                        self.start_checkpoint(None, false, false);
                    }
                }
            }
        }
    }

    /// Drops connections whose writes failed, as if they had disconnected.
    fn reap(&mut self) {
        while let Some(conn) = self.dead.pop() {
            self.on_closed(conn);
        }
    }

    fn num_supervisors(&self) -> usize {
        self.clients
            .values()
            .filter(|c| matches!(c.role, ClientRole::Supervisor { .. }))
            .count()
    }

    fn supervisors(&self) -> Vec<ConnId> {
        self.clients
            .iter()
            .filter(|(_, c)| matches!(c.role, ClientRole::Supervisor { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// "supervisor on HOST pid PID" (or "connection N" when it has gone).
    fn describe(&self, conn: ConnId) -> String {
        match self.clients.get(&conn).map(|c| &c.role) {
            Some(ClientRole::Supervisor { hello, .. }) => {
                format!("supervisor on {} pid {}", hello.host, hello.pid)
            }
            _ => format!("connection {conn}"),
        }
    }

    fn send(&mut self, conn: ConnId, msg: &FromCoordinator) {
        let Some(c) = self.clients.get(&conn) else {
            return;
        };
        let mut w = &c.stream;
        if let Err(e) = write_frame(&mut w, msg).and_then(|_| w.flush().map_err(Into::into)) {
            tracing::warn!("connection {conn}: write failed: {e}");
            let _ = c.stream.shutdown(Shutdown::Both);
            self.dead.push(conn);
        }
    }

    fn reply(&mut self, conn: ConnId, r: Reply) {
        self.send(conn, &FromCoordinator::Reply(r));
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Hello {
                conn,
                hello,
                stream,
            } => self.on_hello(conn, hello.role, hello.minor, stream),
            Event::Frame { conn, msg } => self.on_frame(conn, msg),
            Event::Bad { conn, reason } => self.kick(conn, reason),
            Event::Closed { conn } => self.on_closed(conn),
        }
    }

    /// Answers with an error and closes the connection.
    fn kick(&mut self, conn: ConnId, why: String) {
        tracing::warn!("{}: {why}; closing it", self.describe(conn));
        self.send(conn, &FromCoordinator::Error(why));
        if let Some(c) = self.clients.get(&conn) {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        self.on_closed(conn);
    }

    fn on_hello(&mut self, conn: ConnId, role: Role, minor: u16, stream: TcpStream) {
        let role = match role {
            Role::Command => ClientRole::Command,
            Role::Supervisor(h) => {
                if self.num_supervisors() == 0 {
                    self.computation =
                        Some(h.computation.clone().unwrap_or_else(crate::random_hex16));
                } else if let (Some(ours), Some(theirs)) = (&self.computation, &h.computation) {
                    if ours != theirs {
                        let why = format!("this coordinator runs computation {ours}, not {theirs}");
                        tracing::warn!("connection {conn}: refused: {why}");
                        let mut w = &stream;
                        let _ = write_frame(&mut w, &FromCoordinator::Error(why));
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                }
                self.generation = self.generation.max(h.generation);
                self.had_supervisor = true;
                tracing::info!(
                    "connection {conn}: supervisor on {} pid {} joined (generation {})",
                    h.host,
                    h.pid,
                    h.generation
                );
                if let Some(ck) = &self.ckpt {
                    tracing::warn!(
                        "supervisor on {} pid {} joined during checkpoint {}; it takes part in the next one",
                        h.host,
                        h.pid,
                        ck.options.id
                    );
                }
                ClientRole::Supervisor {
                    hello: h,
                    procs: Vec::new(),
                    launch: String::new(),
                }
            }
        };
        self.clients.insert(
            conn,
            Client {
                stream,
                role,
                minor,
            },
        );
        let welcome = FromCoordinator::Welcome {
            computation: self.computation.clone().unwrap_or_default(),
            generation: self.generation,
            ckpt_dir: self.cfg.ckpt_dir.display().to_string(),
        };
        if minor >= 1 {
            self.send(
                conn,
                &FromCoordinator::Version {
                    minor: dmtcp_protocol::MINOR,
                },
            );
        }
        self.send(conn, &welcome);
    }

    /// Whether the client speaks protocol 2.1 or later.
    /// Stores a name service value, within the bounds
    /// (`dmtcp_protocol::NAME_MAX_*`); beyond them it is dropped (logged).
    fn publish(&mut self, conn: ConnId, key: Vec<u8>, value: Vec<u8>) -> bool {
        use dmtcp_protocol::{NAME_MAX_KEY, NAME_MAX_KEYS, NAME_MAX_TOTAL, NAME_MAX_VALUE};
        let old = self.names.get(&key).map_or(0, |v| key.len() + v.len());
        let total = self.names_bytes - old + key.len() + value.len();
        let full = !self.names.contains_key(&key) && self.names.len() >= NAME_MAX_KEYS;
        if key.len() > NAME_MAX_KEY
            || value.len() > NAME_MAX_VALUE
            || total > NAME_MAX_TOTAL
            || full
        {
            tracing::warn!(
                "connection {conn}: name service publication of {} + {} bytes refused (limits: key {NAME_MAX_KEY}, value {NAME_MAX_VALUE}, total {NAME_MAX_TOTAL}, keys {NAME_MAX_KEYS})",
                key.len(),
                value.len()
            );
            return false;
        }
        self.names_bytes = total;
        self.names.insert(key, value);
        true
    }

    /// `KvOp`: the value before the operation (8 bytes), or None.
    fn kv_op(&mut self, conn: ConnId, key: &[u8], op: u8, operand: i64) -> Option<Vec<u8>> {
        let old = self
            .names
            .get(key)
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, i64::from_le_bytes);
        let new = match op {
            1 => operand,
            2 => old.wrapping_add(operand),
            3 => old & operand,
            4 => old | operand,
            5 => old ^ operand,
            6 => old.min(operand),
            7 => old.max(operand),
            8 => return Some(old.to_le_bytes().to_vec()),
            _ => return None,
        };
        self.publish(conn, key.to_vec(), new.to_le_bytes().to_vec())
            .then(|| old.to_le_bytes().to_vec())
    }

    fn speaks_2_1(&self, conn: ConnId) -> bool {
        self.clients.get(&conn).is_some_and(|c| c.minor >= 1)
    }

    fn on_closed(&mut self, conn: ConnId) {
        let Some(c) = self.clients.remove(&conn) else {
            return;
        };
        let _ = c.stream.shutdown(Shutdown::Both);
        self.restart_barriers.retain(|_, st| {
            st.remove(&conn);
            !st.is_empty()
        });
        // A group that left counts no more; those still waiting may now be
        // all there is of a set (they wait for the rest until their
        // timeout, as DMTCP's coordinator waits for every image).
        self.restart_sets.retain(|_, st| {
            st.remove(&conn);
            !st.is_empty()
        });
        let ClientRole::Supervisor { hello, .. } = c.role else {
            tracing::debug!("connection {conn}: command client left");
            return;
        };
        self.on_halted(conn);
        tracing::info!("supervisor on {} pid {} left", hello.host, hello.pid);
        if let Some(ck) = &self.ckpt {
            if ck.participants.contains(&conn) {
                let during = if ck.committing {
                    "while committing images".to_string()
                } else if ck.resumed {
                    "while writing images".to_string()
                } else {
                    format!("during barrier {}", phase_name(ck.phase))
                };
                self.fail_checkpoint(format!(
                    "supervisor on {} pid {} disconnected {during}",
                    hello.host, hello.pid
                ));
            }
        }
        if self.num_supervisors() == 0 {
            // The computation is gone; a restart may bring its id back.
            self.computation = None;
            for (c, _) in std::mem::take(&mut self.kill_waiters) {
                self.reply(c, Reply::Ok);
            }
            if self.quit_after_kill {
                self.quit = true;
            }
        }
    }

    fn is_supervisor(&self, conn: ConnId) -> bool {
        matches!(
            self.clients.get(&conn).map(|c| &c.role),
            Some(ClientRole::Supervisor { .. })
        )
    }

    fn on_frame(&mut self, conn: ConnId, msg: ToCoordinator) {
        if !self.clients.contains_key(&conn) {
            return;
        }
        let supervisor_only = matches!(
            msg,
            ToCoordinator::Processes(_)
                | ToCoordinator::Reached { .. }
                | ToCoordinator::ImagesWritten { .. }
                | ToCoordinator::ImagesDurable { .. }
                | ToCoordinator::CheckpointFailed { .. }
                | ToCoordinator::Exited { .. }
                | ToCoordinator::Launch { .. }
                | ToCoordinator::Warnings { .. }
                | ToCoordinator::Progress { .. }
                | ToCoordinator::HookBarrier { .. }
                | ToCoordinator::RestartBarrier { .. }
                | ToCoordinator::RestartSetBarrier { .. }
                | ToCoordinator::Halted
        );
        if supervisor_only && !self.is_supervisor(conn) {
            return self.kick(conn, format!("{} is only for supervisors", kind(&msg)));
        }
        match msg {
            ToCoordinator::Hello(_) | ToCoordinator::Auth { .. } => self.kick(
                conn,
                format!("unexpected {} after the handshake", kind(&msg)),
            ),
            ToCoordinator::Request(r) => self.on_request(conn, r),
            ToCoordinator::Processes(list) => {
                if let Some(Client {
                    role: ClientRole::Supervisor { procs, .. },
                    ..
                }) = self.clients.get_mut(&conn)
                {
                    *procs = list;
                }
            }
            ToCoordinator::Reached { id, phase } => self.on_reached(conn, id, phase),
            ToCoordinator::ImagesWritten { id, images } => {
                let Some(ck) = self.ckpt.as_mut().filter(|c| c.options.id == id) else {
                    return tracing::debug!(
                        "connection {conn}: stale ImagesWritten for checkpoint {id}"
                    );
                };
                if ck.participants.contains(&conn) && ck.committing {
                    ck.images.insert(conn, images);
                    self.maybe_complete();
                } else {
                    tracing::warn!(
                        "connection {conn}: ImagesWritten for checkpoint {id} before Commit"
                    );
                }
            }
            ToCoordinator::ImagesDurable { id, .. } => {
                let Some(ck) = self.ckpt.as_mut().filter(|c| c.options.id == id) else {
                    return tracing::debug!(
                        "connection {conn}: stale ImagesDurable for checkpoint {id}"
                    );
                };
                if ck.participants.contains(&conn) {
                    ck.durable.insert(conn);
                    self.maybe_commit();
                }
            }
            ToCoordinator::CheckpointFailed { id, reason } => {
                if self.ckpt.as_ref().is_some_and(|c| c.options.id == id) {
                    let who = self.describe(conn);
                    self.fail_checkpoint(format!("{who}: {reason}"));
                } else {
                    tracing::debug!(
                        "connection {conn}: stale CheckpointFailed for checkpoint {id}: {reason}"
                    );
                }
            }
            ToCoordinator::Publish { key, value } => {
                self.publish(conn, key, value);
            }
            ToCoordinator::KvOp { key, op, operand } => {
                let value = self.kv_op(conn, &key, op, operand);
                self.send(conn, &FromCoordinator::Published { key, value });
            }
            ToCoordinator::Query { key } => {
                let value = self.names.get(&key).cloned();
                self.send(conn, &FromCoordinator::Published { key, value });
            }
            ToCoordinator::Launch { id } => {
                if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return self.kick(conn, format!("launch id {id:?} is not 1-16 hex digits"));
                }
                let clash = self.clients.iter().any(|(c, cl)| {
                    *c != conn
                        && matches!(&cl.role, ClientRole::Supervisor { launch, .. } if *launch == id)
                });
                if clash {
                    tracing::warn!(
                        "{}: launch id {id} is already used by another supervisor of the computation",
                        self.describe(conn)
                    );
                }
                if let Some(Client {
                    role: ClientRole::Supervisor { launch, .. },
                    ..
                }) = self.clients.get_mut(&conn)
                {
                    *launch = id;
                }
            }
            ToCoordinator::Warnings { id, warnings } => {
                let who = self.describe(conn);
                for w in &warnings {
                    tracing::warn!("checkpoint {id}: {who}: {w}");
                }
                if let Some(ck) = self.ckpt.as_mut().filter(|c| c.options.id == id) {
                    ck.warnings.extend(warnings);
                }
            }
            ToCoordinator::Progress {
                id,
                bytes,
                done,
                processes,
            } => {
                if let Some(ck) = self.ckpt.as_mut().filter(|c| c.options.id == id) {
                    if ck.participants.contains(&conn) {
                        ck.progress.insert(conn, (bytes, done, processes));
                    }
                }
            }
            ToCoordinator::HookBarrier {
                id,
                moment,
                barrier,
            } => {
                let Some(ck) = self.ckpt.as_mut().filter(|c| c.options.id == id) else {
                    return tracing::debug!(
                        "connection {conn}: stale HookBarrier for checkpoint {id}"
                    );
                };
                if !ck.participants.contains(&conn) {
                    return;
                }
                if let Some(name) = &barrier {
                    tracing::debug!("checkpoint {id}: connection {conn} at plugin barrier {name:?} (moment {moment})");
                }
                ck.hooks.insert((conn, moment), barrier);
                self.release_hooks();
            }
            ToCoordinator::RestartBarrier {
                restart,
                groups,
                barrier,
            } => self.on_restart_barrier(conn, restart, groups, barrier),
            ToCoordinator::Halted => self.on_halted(conn),
            ToCoordinator::RestartSetBarrier {
                restart,
                groups,
                procs,
                set_size,
                barrier,
            } => self.on_restart_set_barrier(
                conn,
                SetMember {
                    token: restart,
                    groups,
                    procs,
                    set_size,
                    barrier,
                },
            ),
            ToCoordinator::Exited { status } => {
                tracing::info!(
                    "{}: computation exited with status {status}",
                    self.describe(conn)
                );
                if let Some(Client {
                    role: ClientRole::Supervisor { procs, .. },
                    ..
                }) = self.clients.get_mut(&conn)
                {
                    procs.clear();
                }
            }
        }
    }

    /// A checkpoint request (`precopy`: 2.6 pre-copy on request).
    fn on_checkpoint_request(
        &mut self,
        conn: ConnId,
        blocking: bool,
        incremental: bool,
        precopy: bool,
    ) {
        if let Some(ck) = &self.ckpt {
            let id = ck.options.id;
            return self.reply(
                conn,
                Reply::Error(format!("checkpoint {id} is already in progress")),
            );
        }
        if self.num_supervisors() == 0 {
            return self.reply(
                conn,
                Reply::CheckpointFailed {
                    id: 0,
                    reason: "no processes to checkpoint".into(),
                },
            );
        }
        let id = self.start_checkpoint(blocking.then_some(conn), incremental, precopy);
        if !blocking {
            let generation = self.generation + 1;
            let r = if self.speaks_2_1(conn) {
                Reply::Started { id, generation }
            } else {
                Reply::CheckpointStarted { id }
            };
            self.reply(conn, r);
        }
    }

    fn on_request(&mut self, conn: ConnId, req: Request) {
        tracing::debug!("connection {conn}: request {req:?}");
        match req {
            Request::Checkpoint {
                blocking,
                incremental,
            } => self.on_checkpoint_request(conn, blocking, incremental, false),
            Request::CheckpointWith {
                blocking,
                incremental,
                precopy,
            } => self.on_checkpoint_request(conn, blocking, incremental, precopy),
            Request::Status => {
                let status = self.status();
                let r = if self.clients.get(&conn).is_some_and(|c| c.minor >= 2) {
                    Reply::StatusProgress {
                        status,
                        current: self.current_progress(),
                        last: self.last_progress.clone(),
                    }
                } else {
                    Reply::Status(status)
                };
                self.reply(conn, r);
            }
            Request::List => {
                let r = if self.speaks_2_1(conn) {
                    Reply::Launches(self.launches())
                } else {
                    Reply::List(self.list())
                };
                self.reply(conn, r);
            }
            Request::Kill => {
                self.kill_all();
                self.answer_when_gone(conn);
            }
            Request::Quit => {
                self.kill_all();
                self.quit_after_kill = true;
                self.answer_when_gone(conn);
            }
            Request::SetInterval(n) => {
                self.interval = n;
                self.next_periodic =
                    (n > 0).then(|| Instant::now() + Duration::from_secs(n.into()));
                tracing::info!("checkpoint interval set to {n} s");
                self.reply(conn, Reply::Ok);
            }
        }
    }

    /// How far the checkpoint in progress got, from the supervisors'
    /// `Progress` (processes not yet reported count as not done).
    fn current_progress(&self) -> Option<CheckpointProgress> {
        let ck = self.ckpt.as_ref()?;
        let (mut bytes, mut done, mut reported) = (0, 0, 0);
        for (b, d, n) in ck.progress.values() {
            bytes += b;
            done += d;
            reported += n;
        }
        let listed = self.list().len() as u32;
        Some(CheckpointProgress {
            id: ck.options.id,
            bytes,
            expected_bytes: self.last_images.iter().map(|i| i.size).sum(),
            processes_done: done,
            processes: reported.max(listed),
            millis: ck.started.elapsed().as_millis() as u64,
        })
    }

    fn status(&self) -> Status {
        let state = match &self.ckpt {
            None => "RUNNING".to_string(),
            Some(ck) if ck.committing => "COMMITTING".to_string(),
            Some(ck) if ck.resumed => "WRITING_IMAGES".to_string(),
            Some(ck) => phase_name(ck.phase).to_string(),
        };
        Status {
            computation: self.computation.clone().unwrap_or_default(),
            num_processes: self.list().len() as u32,
            num_supervisors: self.num_supervisors() as u32,
            state,
            generation: self.generation,
            interval: self.interval,
            ckpt_dir: self.cfg.ckpt_dir.display().to_string(),
            last_images: self.last_images.clone(),
        }
    }

    fn list(&self) -> Vec<ProcEntry> {
        self.clients
            .values()
            .filter_map(|c| match &c.role {
                ClientRole::Supervisor { procs, .. } => Some(procs.iter().cloned()),
                ClientRole::Command => None,
            })
            .flatten()
            .collect()
    }

    /// Every process with its launch, ordered by launch then pid.
    fn launches(&self) -> Vec<LaunchProc> {
        let mut out: Vec<LaunchProc> = self
            .clients
            .values()
            .filter_map(|c| match &c.role {
                ClientRole::Supervisor {
                    procs,
                    launch,
                    hello,
                } => Some(procs.iter().map(|p| LaunchProc {
                    launch: launch.clone(),
                    supervisor_pid: hello.pid,
                    process: p.clone(),
                })),
                ClientRole::Command => None,
            })
            .flatten()
            .collect();
        out.sort_by(|a, b| {
            (&a.launch, a.supervisor_pid, a.process.vpid).cmp(&(
                &b.launch,
                b.supervisor_pid,
                b.process.vpid,
            ))
        });
        out
    }

    /// Answers a `Kill`/`Quit` once no supervisor is left (at once when
    /// none is), so that the processes are gone when `dmtcp-command`
    /// returns and a restart that follows meets none of them still writing.
    fn answer_when_gone(&mut self, conn: ConnId) {
        if self.num_supervisors() == 0 {
            self.reply(conn, Reply::Ok);
            if self.quit_after_kill && self.kill_waiters.is_empty() {
                self.quit = true;
            }
        } else {
            self.kill_waiters.push((conn, Instant::now() + KILL_WAIT));
        }
    }

    /// Kills the computation in two steps when its supervisors speak 2.5:
    /// `Halt` to all (each stops its processes and answers `Halted`), then
    /// `Kill` to all, so that no process runs its reaction to another
    /// launch's death (an MPI launcher would remove the session files its
    /// image still names). Older supervisors get `Kill` at once.
    fn kill_all(&mut self) {
        if self.ckpt.is_some() {
            self.fail_checkpoint("the computation was killed".into());
        }
        if self.halting.is_some() {
            return;
        }
        let sups = self.supervisors();
        let (new, old): (Vec<ConnId>, Vec<ConnId>) = sups
            .into_iter()
            .partition(|c| self.clients.get(c).is_some_and(|cl| cl.minor >= 5));
        for s in old {
            self.send(s, &FromCoordinator::Kill);
        }
        if new.is_empty() {
            return;
        }
        for s in &new {
            self.send(*s, &FromCoordinator::Halt);
        }
        self.halting = Some((new.into_iter().collect(), Instant::now() + HALT_WAIT));
    }

    /// `conn` has halted (or left): the kill's second step once all have.
    fn on_halted(&mut self, conn: ConnId) {
        let Some((waiting, _)) = self.halting.as_mut() else {
            return;
        };
        waiting.remove(&conn);
        if waiting.is_empty() {
            self.kill_halted();
        }
    }

    fn kill_halted(&mut self) {
        if self.halting.take().is_none() {
            return;
        }
        for s in self.supervisors() {
            self.send(s, &FromCoordinator::Kill);
        }
    }

    /// Starts a checkpoint (there must be none running); returns its id.
    fn start_checkpoint(
        &mut self,
        waiter: Option<ConnId>,
        incremental: bool,
        precopy: bool,
    ) -> u64 {
        self.last_id += 1;
        let options = CheckpointOptions {
            id: self.last_id,
            generation: self.generation + 1,
            dir: self.cfg.ckpt_dir.display().to_string(),
            codec: String::new(),
            incremental,
        };
        let participants: BTreeSet<ConnId> = self.supervisors().into_iter().collect();
        tracing::info!(
            "checkpoint {} (generation {}) of {} supervisor(s)",
            options.id,
            options.generation,
            participants.len()
        );
        let now = Instant::now();
        self.ckpt = Some(Checkpoint {
            options,
            phase: Phase::Suspend,
            participants,
            reached: BTreeSet::new(),
            resumed: false,
            durable: BTreeSet::new(),
            committing: false,
            images: BTreeMap::new(),
            waiters: waiter.into_iter().collect(),
            started: now,
            deadline: now + self.cfg.barrier_timeout,
            warnings: Vec::new(),
            progress: BTreeMap::new(),
            hooks: BTreeMap::new(),
        });
        if precopy {
            // Before the Suspend barrier, on the same connection: each
            // supervisor knows it when the barrier comes.
            let msg = FromCoordinator::Precopy { id: self.last_id };
            let to: Vec<ConnId> = self
                .ckpt
                .iter()
                .flat_map(|ck| ck.participants.iter().copied())
                .filter(|c| self.clients.get(c).is_some_and(|cl| cl.minor >= 6))
                .collect();
            for c in to {
                self.send(c, &msg);
            }
        }
        self.announce_phase();
        self.last_id
    }

    fn announce_phase(&mut self) {
        let Some(ck) = &self.ckpt else { return };
        let msg = FromCoordinator::Barrier {
            phase: ck.phase,
            options: ck.options.clone(),
        };
        tracing::debug!(
            "checkpoint {}: barrier {}",
            ck.options.id,
            phase_name(ck.phase)
        );
        let to: Vec<ConnId> = ck.participants.iter().copied().collect();
        for c in to {
            self.send(c, &msg);
        }
    }

    fn on_reached(&mut self, conn: ConnId, id: u64, phase: Phase) {
        let Some(ck) = self.ckpt.as_mut().filter(|c| c.options.id == id) else {
            return tracing::debug!("connection {conn}: stale Reached for checkpoint {id}");
        };
        if !ck.participants.contains(&conn) || ck.resumed || ck.phase != phase {
            return tracing::warn!(
                "connection {conn}: unexpected Reached {} for checkpoint {id} (now at {})",
                phase_name(phase),
                phase_name(ck.phase)
            );
        }
        ck.reached.insert(conn);
        if ck.reached != ck.participants {
            // Done with this phase's plugin moments too.
            return self.release_hooks();
        }
        ck.reached.clear();
        ck.deadline = Instant::now() + self.cfg.barrier_timeout;
        match ck.phase.next() {
            Some(next) => {
                ck.phase = next;
                self.announce_phase();
            }
            None => {
                ck.resumed = true;
                tracing::debug!("checkpoint {id}: every supervisor resumed");
                self.maybe_commit();
            }
        }
    }

    /// Plugin global barriers: for each moment some supervisor waits at,
    /// once every participant is at a barrier of it or done with it (said
    /// so, or reached the moment's phase), those waiting go on.
    fn release_hooks(&mut self) {
        let Some(ck) = self.ckpt.as_mut() else { return };
        let id = ck.options.id;
        let moments: BTreeSet<u32> = ck
            .hooks
            .iter()
            .filter(|(_, b)| b.is_some())
            .map(|((_, m), _)| *m)
            .collect();
        let mut go = Vec::new();
        for m in moments {
            let all_there = ck.participants.iter().all(|p| {
                ck.hooks.contains_key(&(*p, m))
                    || (ck.phase == moment_phase(m) && ck.reached.contains(p))
            });
            if !all_there {
                continue;
            }
            let waiting: Vec<ConnId> = ck
                .hooks
                .iter()
                .filter(|((_, mm), b)| *mm == m && b.is_some())
                .map(|((c, _), _)| *c)
                .collect();
            for c in waiting {
                ck.hooks.remove(&(c, m));
                go.push((c, m));
            }
        }
        for (c, moment) in go {
            tracing::debug!(
                "checkpoint {id}: plugin barrier of moment {moment} released for connection {c}"
            );
            self.send(c, &FromCoordinator::HookGo { id, moment });
        }
    }

    /// RESTART plugin barriers of one `dmtcp-restart`'s launch groups: once
    /// `groups` supervisors of token `restart` are each at a barrier or
    /// done, those at a barrier go on. A token's states go when every group
    /// is done (or its supervisors left).
    fn on_restart_barrier(
        &mut self,
        conn: ConnId,
        restart: String,
        groups: u32,
        barrier: Option<String>,
    ) {
        if restart.is_empty() || restart.len() > 64 || groups == 0 || groups > 4096 {
            return self.kick(
                conn,
                format!("bad RestartBarrier ({restart:?}, {groups} groups)"),
            );
        }
        // Supervisors that left count no more.
        let live: BTreeSet<ConnId> = self.clients.keys().copied().collect();
        let states = self.restart_barriers.entry(restart.clone()).or_default();
        states.retain(|c, _| live.contains(c));
        states.insert(conn, barrier);
        if states.len() < groups as usize {
            return;
        }
        if states.values().all(Option::is_none) {
            self.restart_barriers.remove(&restart);
            return;
        }
        let waiting: Vec<ConnId> = states
            .iter()
            .filter(|(_, b)| b.is_some())
            .map(|(c, _)| *c)
            .collect();
        for c in &waiting {
            states.remove(c);
        }
        for c in waiting {
            self.send(
                c,
                &FromCoordinator::RestartGo {
                    restart: restart.clone(),
                },
            );
        }
    }

    /// RESTART plugin barriers of a whole image set (2.4): the groups of
    /// every `dmtcp-restart` restoring the same computation and generation
    /// meet once their processes add up to the set's size: the size of the
    /// set this coordinator's last checkpoint wrote when it is that set, else
    /// the largest `set_size` a group brought (the restart script passes
    /// it). With neither, the barrier is that of the group's own
    /// `dmtcp-restart` (as 2.3's `RestartBarrier`).
    fn on_restart_set_barrier(&mut self, conn: ConnId, m: SetMember) {
        if m.token.is_empty() || m.token.len() > 64 || m.groups == 0 || m.groups > 4096 {
            return self.kick(
                conn,
                format!("bad RestartSetBarrier ({:?}, {} groups)", m.token, m.groups),
            );
        }
        let key = match self.clients.get(&conn).map(|c| &c.role) {
            Some(ClientRole::Supervisor { hello, .. }) => {
                hello.computation.clone().map(|c| (c, hello.generation))
            }
            _ => None,
        };
        let Some(key) = key else {
            return self.on_restart_barrier(conn, m.token, m.groups, m.barrier);
        };
        let live: BTreeSet<ConnId> = self.clients.keys().copied().collect();
        let states = self.restart_sets.entry(key.clone()).or_default();
        states.retain(|c, _| live.contains(c));
        states.insert(conn, m);
        let known = self
            .last_set
            .as_ref()
            .filter(|(c, g, _)| (c, *g) == (&key.0, key.1))
            .map(|(_, _, n)| *n as u64);
        let brought = states.values().map(|s| u64::from(s.set_size)).max();
        let size = known.or(brought.filter(|&n| n > 0));
        let here: u64 = states.values().map(|s| u64::from(s.procs)).sum();
        let ready = match size {
            Some(n) => here >= n,
            // Unknown set: each dmtcp-restart's groups meet among
            // themselves (2.3).
            None => {
                let mut by_token: BTreeMap<&str, (usize, u32)> = BTreeMap::new();
                for s in states.values() {
                    let e = by_token.entry(&s.token).or_insert((0, s.groups));
                    e.0 += 1;
                }
                let token = &states[&conn].token;
                by_token
                    .get(token.as_str())
                    .is_some_and(|(n, g)| *n >= *g as usize)
            }
        };
        tracing::debug!(
            "restart set {}/{}: connection {conn} at {:?}; {here} of {size:?} processes said",
            key.0,
            key.1,
            states[&conn].barrier
        );
        if !ready {
            return;
        }
        // Those released: the whole set, or (unknown set) this token's groups.
        let token = states[&conn].token.clone();
        let members: Vec<ConnId> = states
            .iter()
            .filter(|(_, s)| size.is_some() || s.token == token)
            .map(|(c, _)| *c)
            .collect();
        if members.iter().all(|c| states[c].barrier.is_none()) {
            for c in &members {
                states.remove(c);
            }
            if states.is_empty() {
                self.restart_sets.remove(&key);
            }
            return;
        }
        let waiting: Vec<(ConnId, String)> = members
            .iter()
            .filter(|c| states[c].barrier.is_some())
            .map(|c| (*c, states[c].token.clone()))
            .collect();
        for (c, _) in &waiting {
            states.remove(c);
        }
        for (c, restart) in waiting {
            self.send(c, &FromCoordinator::RestartGo { restart });
        }
    }

    /// Second phase: every participant resumed and has its images durable,
    /// so each may now replace its previous images.
    fn maybe_commit(&mut self) {
        let Some(ck) = self.ckpt.as_mut() else { return };
        if ck.committing || !ck.resumed || ck.durable != ck.participants {
            return;
        }
        ck.committing = true;
        ck.deadline = Instant::now() + self.cfg.barrier_timeout;
        let id = ck.options.id;
        tracing::debug!("checkpoint {id}: every image durable; commit");
        let to: Vec<ConnId> = ck.participants.iter().copied().collect();
        for c in to {
            self.send(c, &FromCoordinator::Commit { id });
        }
    }

    fn maybe_complete(&mut self) {
        let done = self.ckpt.as_ref().is_some_and(|ck| {
            ck.committing && ck.participants.iter().all(|p| ck.images.contains_key(p))
        });
        if !done {
            return;
        }
        let Some(ck) = self.ckpt.take() else { return };
        let id = ck.options.id;
        self.generation = ck.options.generation;
        let mut images: Vec<ImageEntry> = ck.images.into_values().flatten().collect();
        images.sort_by(|a, b| (&a.host, a.vpid).cmp(&(&b.host, b.vpid)));
        let expected_bytes = self.last_images.iter().map(|i| i.size).sum();
        self.last_images = images.clone();
        if let Some(c) = &self.computation {
            self.last_set = Some((c.clone(), self.generation, images.len()));
        }
        let millis = ck.started.elapsed().as_millis() as u64;
        self.last_progress = Some(CheckpointProgress {
            id,
            bytes: images.iter().map(|i| i.size).sum(),
            expected_bytes,
            processes_done: images.len() as u32,
            processes: images.len() as u32,
            millis,
        });
        match crate::script::write_restart_script(
            &self.cfg,
            self.generation,
            &self.computation,
            &images,
        ) {
            Ok(p) => tracing::debug!("wrote {}", p.display()),
            Err(e) => tracing::error!("checkpoint {id}: cannot write the restart script: {e:#}"),
        }
        tracing::info!(
            "checkpoint {id} done in {millis} ms: {} image(s)",
            images.len()
        );
        let generation = self.generation;
        for w in ck.waiters {
            let r = if self.speaks_2_1(w) {
                Reply::Committed {
                    id,
                    generation,
                    images: images.clone(),
                    millis,
                    warnings: ck.warnings.clone(),
                }
            } else {
                Reply::CheckpointDone {
                    id,
                    images: images.clone(),
                    millis,
                }
            };
            self.reply(w, r);
        }
    }

    fn fail_checkpoint(&mut self, reason: String) {
        let Some(ck) = self.ckpt.take() else { return };
        let id = ck.options.id;
        tracing::warn!("checkpoint {id} failed: {reason}");
        for p in ck.participants {
            if self.clients.contains_key(&p) {
                self.send(
                    p,
                    &FromCoordinator::Abort {
                        id,
                        reason: reason.clone(),
                    },
                );
            }
        }
        for w in ck.waiters {
            self.reply(
                w,
                Reply::CheckpointFailed {
                    id,
                    reason: reason.clone(),
                },
            );
        }
    }
}
