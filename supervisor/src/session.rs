//! The supervisor's side of a computation: its connection to the coordinator
//! and the checkpoint barriers run on its process tree.
//!
//! One thread owns every ptrace interaction (the kernel wants all requests
//! for a tracee from the thread that seized it); a reader thread turns
//! coordinator frames into channel messages so the owner can also wake up
//! periodically (process list refresh, end of the computation). If the
//! coordinator goes away the computation keeps running and the session
//! reconnects when a coordinator answers again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dmtcp_coordinator::client::{read_secret, Connection, CoordAddr};
use dmtcp_image::{image_file_name, ComputationInfo, ImageWriter, PendingImage, WriteOptions};
use dmtcp_protocol::{
    CheckpointOptions, FromCoordinator, ImageEntry, Phase, ProcEntry, Role, SupervisorHello,
    ToCoordinator,
};
use tracing::{debug, info, warn};

use crate::capture;
use crate::freeze::{self, FrozenProcess};
use crate::incremental::{ChainFiles, Chains};
use crate::pid::HostPid;
use crate::procfs;

/// Settings of a supervisor session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub addr: CoordAddr,
    pub secret: String,
    /// The computation id when restarting (None on launch).
    pub computation: Option<String>,
    pub generation: u64,
    /// Image writer settings (codec from `--no-gzip` / `DMTCP_GZIP`).
    pub write: WriteOptions,
    /// Overrides the coordinator's checkpoint directory (`--ckpt-dir`).
    pub ckpt_dir: Option<PathBuf>,
    /// Every checkpoint after the first is incremental (`--incremental`).
    pub incremental: bool,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Connects to the coordinator as a supervisor.
pub fn connect(cfg: &SessionConfig) -> anyhow::Result<(Connection, String, u64)> {
    let role = Role::Supervisor(SupervisorHello {
        host: hostname(),
        pid: std::process::id(),
        computation: cfg.computation.clone(),
        generation: cfg.generation,
    });
    let (conn, welcome) = Connection::connect(&cfg.addr, &cfg.secret, role)?;
    match welcome {
        FromCoordinator::Welcome {
            computation,
            generation,
            ..
        } => Ok((conn, computation, generation)),
        other => anyhow::bail!("unexpected handshake answer {other:?}"),
    }
}

/// Events of the session loop; coordinator events carry the number of the
/// connection they came from, so a stale reader cannot act on a new one.
enum Event {
    Coord(u64, FromCoordinator),
    Lost(u64, String),
    /// The computation ended (see [`Waker`]).
    Ended,
}

/// Tells a running session that the computation has ended, at once.
#[derive(Clone)]
pub struct Waker {
    done: Arc<AtomicBool>,
    tx: Sender<Event>,
}

impl Waker {
    pub fn wake(&self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Event::Ended);
    }
}

/// A process captured while frozen whose image is finished after the thaw:
/// private memory still comes from its copy-on-write snapshot.
struct OpenCapture {
    writer: ImageWriter,
    meta: dmtcp_image::ProcessImage,
    deferred: Option<capture::Deferred>,
    entry: ImageEntry,
    /// The live process (None for a zombie) and the image files a restart
    /// from this image needs.
    pid: Option<HostPid>,
    chain: ChainFiles,
}

impl OpenCapture {
    /// Reads the snapshot, releases it, and writes the image (not yet durable).
    fn finish(mut self) -> Result<(PendingImage, Committed), String> {
        if let Some(d) = self.deferred.take() {
            let read = d.capture(&mut self.meta, &mut self.writer);
            let released = d.release();
            read.map_err(|e| e.to_string())?;
            if let Err(e) = released {
                warn!("{e}");
            }
        }
        let pending = self
            .writer
            .finish_unsynced(&self.meta)
            .map_err(|e| e.to_string())?;
        Ok((
            pending,
            Committed {
                entry: self.entry,
                pid: self.pid,
                generation: self.meta.computation.generation,
                chain: self.chain,
            },
        ))
    }
}

/// What is left of an [`OpenCapture`] once its image is written.
struct Committed {
    entry: ImageEntry,
    pid: Option<HostPid>,
    generation: u64,
    chain: ChainFiles,
}

/// A running session; `run` returns when `done` is set (the computation ended).
pub struct Session {
    cfg: SessionConfig,
    nsinit: HostPid,
    /// nsinit's control socket: it reads the SysV IPC objects for us.
    ctrl: crate::supervise::NsinitCtrl,
    computation: String,
    conn: Option<Connection>,
    /// Coordinator frames (from the reader thread) and wake-ups.
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// Number of the current connection (0: none).
    conn_gen: u64,
    last_attempt: Instant,
    /// nsinit takes the computation down if we die (lazy restore pending).
    lifeline: bool,
    frozen: Vec<FrozenProcess>,
    /// Zombies of the computation during a checkpoint (not frozen: they
    /// cannot run).
    zombies: Vec<HostPid>,
    /// Images complete under temp names, made durable after Resume.
    pending: Vec<OpenCapture>,
    last_list: Vec<ProcEntry>,
    /// Application API: coordinator publication to new processes.
    agent: crate::agent::Publisher,
    /// Incremental checkpoints: dirty-page tracking and image chains.
    chains: Chains,
    pub done: Arc<AtomicBool>,
}

fn spawn_reader(mut conn: Connection, tx: Sender<Event>, gen: u64) {
    std::thread::Builder::new()
        .name("coord-reader".into())
        .spawn(move || loop {
            match conn.recv() {
                Ok(m) => {
                    if tx.send(Event::Coord(gen, m)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Event::Lost(gen, e.to_string()));
                    return;
                }
            }
        })
        .expect("spawning the coordinator reader thread");
}

impl Session {
    pub fn new(
        cfg: SessionConfig,
        nsinit: HostPid,
        ctrl: crate::supervise::NsinitCtrl,
        conn: Connection,
        computation: String,
    ) -> Session {
        let reader = conn
            .try_clone()
            .expect("cloning the coordinator connection");
        let (tx, rx) = mpsc::channel();
        spawn_reader(reader, tx.clone(), 1);
        Session {
            cfg,
            nsinit,
            ctrl,
            computation,
            tx,
            rx,
            conn_gen: 1,
            last_attempt: Instant::now(),
            lifeline: false,
            conn: Some(conn),
            frozen: Vec::new(),
            zombies: Vec::new(),
            pending: Vec::new(),
            last_list: Vec::new(),
            agent: Default::default(),
            chains: Default::default(),
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The restorer tied the computation's life to ours
    /// ([`NsinitCtrl::lifeline`](crate::supervise::NsinitCtrl::lifeline)):
    /// untie it once every lazily restored page is in place.
    pub fn with_lifeline(mut self, on: bool) -> Session {
        self.lifeline = on;
        self
    }

    /// A handle that ends [`run`](Self::run) without delay.
    pub fn waker(&self) -> Waker {
        Waker {
            done: self.done.clone(),
            tx: self.tx.clone(),
        }
    }

    /// The processes of the computation: every descendant of nsinit.
    pub fn processes(&self) -> Vec<(HostPid, ProcEntry)> {
        let host = hostname();
        procfs::descendants(self.nsinit)
            .into_iter()
            .filter_map(|p| {
                let st = procfs::status(p).ok()?;
                let vpid = procfs::innermost_pid(&st)?;
                Some((
                    p,
                    ProcEntry {
                        vpid: vpid as u32,
                        host_pid: p.0 as u32,
                        prog: procfs::comm(p, None).unwrap_or_default(),
                        host: host.clone(),
                    },
                ))
            })
            .collect()
    }

    fn send(&mut self, msg: ToCoordinator) {
        if let Some(c) = self.conn.as_mut() {
            if let Err(e) = c.send(&msg) {
                warn!("coordinator connection: {e}");
                c.shutdown();
            }
        }
    }

    fn refresh_list(&mut self) {
        let list: Vec<ProcEntry> = self.processes().into_iter().map(|(_, e)| e).collect();
        if list != self.last_list {
            self.last_list = list.clone();
            self.send(ToCoordinator::Processes(list));
        }
    }

    fn thaw_all(&mut self) {
        self.zombies.clear();
        if self.frozen.is_empty() {
            return;
        }
        let t = Instant::now();
        let n = self.frozen.len();
        for fp in self.frozen.drain(..) {
            let pid = fp.pid;
            if let Err(e) = fp.thaw() {
                warn!("resuming pid {pid}: {e}");
            }
        }
        debug!("thawed {n} process(es) in {:?}", t.elapsed());
    }

    /// Drops a checkpoint in progress: its images, and (as tracking was
    /// reset at its freeze) the bases of incremental images.
    fn abandon(&mut self) {
        self.pending.clear();
        self.chains.abandon();
        self.thaw_all();
    }

    fn fail(&mut self, id: u64, reason: String) {
        warn!("checkpoint {id} failed: {reason}");
        self.abandon();
        self.send(ToCoordinator::CheckpointFailed { id, reason });
    }

    /// Freezes everything; while a process is inside `dmtcp_disable_ckpt()`
    /// thaws, waits 10 ms and tries again (application API, `agent`).
    fn suspend(&mut self) -> Result<(), String> {
        // Lazily restored memory must be in place before it is read.
        crate::lazy::wait_until_restored();
        let deadline = Instant::now() + crate::agent::critical_section_wait();
        loop {
            self.freeze_all()?;
            let Some((pid, n)) = crate::agent::critical_section(&self.frozen) else {
                break;
            };
            self.thaw_all();
            if Instant::now() > deadline {
                let pids: Vec<HostPid> = self.processes().into_iter().map(|(p, _)| p).collect();
                crate::agent::release_waiting(&pids);
                return Err(format!(
                    "pid {pid} kept checkpoints disabled ({n} open dmtcp_disable_ckpt sections)"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let a = &self.cfg.addr;
        crate::agent::prepare_capture(&self.frozen, &a.host, a.port, &self.cfg.secret);
        Ok(())
    }

    fn freeze_all(&mut self) -> Result<(), String> {
        let procs = self.processes();
        if procs.is_empty() {
            return Err("no live process in the computation".into());
        }
        let t = Instant::now();
        // A process not yet frozen may fork: repeat until a pass finds
        // nothing new (frozen processes cannot create any).
        let mut procs = procs;
        loop {
            let mut fresh = false;
            for (pid, e) in procs {
                if self.frozen.iter().any(|f| f.pid == pid) || self.zombies.contains(&pid) {
                    continue;
                }
                fresh = true;
                if crate::zombie::is_zombie(pid) {
                    self.zombies.push(pid);
                    continue;
                }
                match freeze::freeze(pid) {
                    Ok(fp) => self.frozen.push(fp),
                    Err(err) if crate::ptrace::errno(&err) == Some(libc::ESRCH) => {
                        debug!("pid {pid} ({}) exited before the freeze", e.prog)
                    }
                    Err(err) => return Err(format!("freezing pid {} ({}): {err}", e.vpid, e.prog)),
                }
            }
            if !fresh {
                break;
            }
            procs = self.processes();
        }
        debug!(
            "froze {} process(es) in {:?}",
            self.frozen.len(),
            t.elapsed()
        );
        Ok(())
    }

    fn checkpoint(&mut self, opts: &CheckpointOptions) -> Result<(), String> {
        let dir = self
            .cfg
            .ckpt_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&opts.dir));
        dmtcp_image::create_private_dir(&dir)
            .map_err(|e| format!("checkpoint directory {}: {e}", dir.display()))?;
        let mut write = self.cfg.write.clone();
        if !opts.codec.is_empty() {
            (write.codec, write.level) =
                dmtcp_image::Codec::parse_spec(&opts.codec).map_err(|e| e.to_string())?;
        }
        let taken_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let info = ComputationInfo {
            id: self.computation.clone(),
            generation: opts.generation,
            host: hostname(),
            taken_at_unix_ns: taken_at,
            coord_host: self.cfg.addr.host.clone(),
            coord_port: self.cfg.addr.port,
        };
        let incremental = opts.incremental || self.cfg.incremental;
        if incremental {
            self.chains.activate();
        }
        let mut images = Vec::new();
        self.pending.clear();
        let result = self.capture_all(&dir, &write, &info, incremental, &mut images);
        self.pending = images;
        result
    }

    fn capture_all(
        &mut self,
        dir: &std::path::Path,
        write: &WriteOptions,
        info: &ComputationInfo,
        incremental: bool,
        images: &mut Vec<OpenCapture>,
    ) -> Result<(), String> {
        let pids: Vec<HostPid> = self.frozen.iter().map(|f| f.pid).collect();
        self.chains.retain(&pids);
        // With chains, a new image must not replace the one it builds on.
        let chained = self.chains.active();
        let computation = self.computation.clone();
        let file_name = |prog: &str, vpid: u32| {
            let name = image_file_name(prog, &computation, vpid);
            if chained {
                let stem = name.trim_end_matches(".dmtcp");
                format!("{stem}_g{}.dmtcp", info.generation)
            } else {
                name
            }
        };
        let mut fdctx = crate::fdshare::FdContext::build(&pids)
            .map_err(|e| format!("examining file descriptors: {e}"))?;
        // Computation-wide, so recorded once: in the lowest pid's image.
        let mut ipc = Some(self.ctrl.dump_ipc().map_err(|e| e.to_string())?);
        let lowest = self.frozen.iter().map(|f| f.vpid).min();
        for fp in self.frozen.iter_mut() {
            let t = Instant::now();
            // Images are named after the program (DMTCP's habit), not the
            // 15-character comm.
            let comm = procfs::link(fp.pid, "exe")
                .ok()
                .and_then(|e| {
                    e.rsplit('/')
                        .next()
                        .map(|b| b.trim_end_matches(" (deleted)").to_string())
                })
                .filter(|b| !b.is_empty())
                .or_else(|| procfs::comm(fp.pid, None).ok())
                .unwrap_or_else(|| "proc".into());
            let path = dir.join(file_name(&comm, fp.vpid as u32));
            let mut writer =
                ImageWriter::create(&path, write.clone()).map_err(|e| e.to_string())?;
            let dirty = self.chains.scan_for(fp.pid, incremental);
            let (mut meta, deferred) =
                capture::capture(fp, &mut writer, info.clone(), &mut fdctx, true, dirty)
                    .map_err(|e| e.to_string())?;
            if Some(fp.vpid) == lowest {
                if let Some((mut state, bytes)) = ipc.take() {
                    for (g, b) in state.shm.iter_mut().zip(&bytes) {
                        g.pages = crate::sysvipc::store_pages(&mut writer, b)
                            .map_err(|e| format!("saving SysV shared memory {}: {e}", g.perm.id))?;
                    }
                    meta.ipc = Some(state);
                }
            }
            let chain = self
                .chains
                .chain_of(Some(fp.pid), &path, meta.parent.as_ref());
            debug!("pid {} ({comm}): captured in {:?}", fp.vpid, t.elapsed());
            let entry = ImageEntry {
                path: path.to_string_lossy().into_owned(),
                vpid: fp.vpid as u32,
                prog: comm,
                host: hostname(),
                size: 0,
            };
            images.push(OpenCapture {
                writer,
                meta,
                deferred,
                entry,
                pid: Some(fp.pid),
                chain,
            });
        }
        for &pid in &self.zombies {
            let meta = crate::zombie::image(pid, info.clone())
                .map_err(|e| format!("zombie pid {pid}: {e}"))?;
            let vpid = meta.process.vpid;
            let comm = meta.process.comm.clone();
            let path = dir.join(file_name(&comm, vpid));
            let writer = ImageWriter::create(&path, write.clone()).map_err(|e| e.to_string())?;
            let chain = self.chains.chain_of(None, &path, None);
            images.push(OpenCapture {
                writer,
                meta,
                deferred: None,
                pid: None,
                chain,
                entry: ImageEntry {
                    path: path.to_string_lossy().into_owned(),
                    vpid,
                    prog: comm,
                    host: hostname(),
                    size: 0,
                },
            });
        }
        Ok(())
    }

    /// Reads the snapshots, writes the images, fsyncs and renames them, then
    /// reports them. The program is running all along.
    fn commit_images(&mut self, id: u64) {
        let t = Instant::now();
        let mut images = Vec::new();
        // All or nothing: every image is written and fsynced under its temp
        // name before any replaces the previous generation.
        let mut failure = None;
        let mut ready = Vec::new();
        for open in std::mem::take(&mut self.pending) {
            if failure.is_some() {
                continue; // dropping releases the snapshot and the temp file
            }
            let t0 = Instant::now();
            match open.finish().and_then(|(mut pending, entry)| {
                let t1 = Instant::now();
                pending.sync().map_err(|e| e.to_string())?;
                debug!(
                    "pid {:?}: image written in {:?}, fsync in {:?}",
                    entry.pid.map(|p| p.0),
                    t1 - t0,
                    t1.elapsed()
                );
                Ok((pending, entry))
            }) {
                Ok(x) => ready.push(x),
                Err(e) => failure = Some(e),
            }
        }
        let mut committed = Vec::new();
        // The images replaced: freed once the new ones are reported.
        let mut replaced = Vec::new();
        if failure.is_none() {
            for (pending, mut done) in ready {
                match pending.commit_keeping_old() {
                    Ok((size, old)) => {
                        replaced.extend(old);
                        done.entry.size = size;
                        images.push(done.entry.clone());
                        committed.push(done);
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        if let Some(reason) = failure {
            warn!("checkpoint {id} failed: {reason}");
            self.chains.abandon();
            self.send(ToCoordinator::CheckpointFailed { id, reason });
            return;
        }
        let chains: Vec<_> = committed
            .iter()
            .map(|c| (c.pid, c.generation, &c.chain))
            .collect();
        self.chains.committed(&chains);
        info!(
            "checkpoint {id}: {} image(s) durable in {:?}",
            images.len(),
            t.elapsed()
        );
        self.send(ToCoordinator::ImagesWritten { id, images });
        drop(replaced);
    }

    fn on_barrier(&mut self, phase: Phase, opts: CheckpointOptions) {
        let id = opts.id;
        debug!("checkpoint {id}: barrier {phase:?}");
        let result = match phase {
            Phase::Suspend => self.suspend(),
            Phase::Checkpoint => self.checkpoint(&opts),
            Phase::Resume => {
                // The program runs again first; then the images become durable.
                crate::agent::checkpoint_done(&self.frozen);
                self.thaw_all();
                self.send(ToCoordinator::Reached { id, phase });
                self.commit_images(id);
                return;
            }
            Phase::FdLeaderElection | Phase::Drain | Phase::Refill => Ok(()),
        };
        match result {
            Ok(()) => self.send(ToCoordinator::Reached { id, phase }),
            Err(reason) => self.fail(id, reason),
        }
    }

    fn on_lost(&mut self, why: String) {
        if !self.frozen.is_empty() {
            warn!("coordinator lost during a checkpoint ({why}); resuming");
            self.abandon();
        }
        if let Some(c) = self.conn.take() {
            c.shutdown();
        }
        self.conn_gen += 1;
        self.last_attempt = Instant::now();
        if !self.done.load(Ordering::Relaxed) {
            warn!("coordinator connection lost ({why}); the computation keeps running");
        }
    }

    /// One attempt to reach a coordinator again (a restarted one included:
    /// the secret is read anew).
    fn try_reconnect(&mut self) {
        self.last_attempt = Instant::now();
        let mut cfg = self.cfg.clone();
        cfg.computation = Some(self.computation.clone());
        if let Some(s) = read_secret(&cfg.addr) {
            cfg.secret = s;
        }
        if let Ok((conn, _, _)) = connect(&cfg) {
            info!("reconnected to the coordinator at {}", cfg.addr);
            let reader = conn
                .try_clone()
                .expect("cloning the coordinator connection");
            self.conn_gen += 1;
            spawn_reader(reader, self.tx.clone(), self.conn_gen);
            self.conn = Some(conn);
            self.cfg.secret = cfg.secret;
            self.last_list.clear();
            self.refresh_list();
        }
    }

    /// Application API: tells new processes where the coordinator is.
    fn publish_coordinator(&mut self) {
        let pids: Vec<HostPid> = self.processes().into_iter().map(|(p, _)| p).collect();
        let a = &self.cfg.addr;
        self.agent.publish(&pids, &a.host, a.port, &self.cfg.secret);
    }

    /// Serves the coordinator until the computation ends.
    pub fn run(mut self) {
        self.refresh_list();
        self.publish_coordinator();
        let mut last_refresh = Instant::now();
        while !self.done.load(Ordering::Relaxed) {
            let ev = self.rx.recv_timeout(Duration::from_millis(500));
            match ev {
                Ok(Event::Coord(g, _)) | Ok(Event::Lost(g, _)) if g != self.conn_gen => {}
                Ok(Event::Coord(_, FromCoordinator::Barrier { phase, options })) => {
                    self.on_barrier(phase, options)
                }
                Ok(Event::Coord(_, FromCoordinator::Abort { id, reason })) => {
                    warn!("checkpoint {id} abandoned: {reason}");
                    self.abandon();
                }
                Ok(Event::Coord(_, FromCoordinator::Kill)) => {
                    info!("kill requested by the coordinator");
                    self.thaw_all();
                    // SAFETY: kill with integer arguments; nsinit is our child.
                    unsafe { libc::kill(self.nsinit.0, libc::SIGKILL) };
                }
                Ok(Event::Coord(_, other)) => debug!("ignoring {other:?}"),
                Ok(Event::Lost(_, why)) => self.on_lost(why),
                Ok(Event::Ended) | Err(_) => {}
            }
            if self.conn.is_none()
                && !self.done.load(Ordering::Relaxed)
                && self.last_attempt.elapsed() > Duration::from_secs(1)
            {
                self.try_reconnect();
            }
            if self.lifeline && !crate::lazy::busy() {
                match self.ctrl.lifeline(false) {
                    Ok(()) => debug!("memory in place: the computation may outlive us again"),
                    Err(e) => warn!("{e}"),
                }
                self.lifeline = false;
            }
            let refresh = last_refresh.elapsed() > Duration::from_secs(1);
            if refresh && self.frozen.is_empty() {
                self.refresh_list();
                last_refresh = Instant::now();
            }
            if self.frozen.is_empty() && (refresh || self.agent.pending()) {
                self.publish_coordinator();
            }
        }
        self.thaw_all();
    }
}
