//! The supervisor's side of a computation: its connection to the coordinator
//! and the checkpoint barriers run on its process tree.
//!
//! One thread owns every ptrace interaction (the kernel wants all requests
//! for a tracee from the thread that seized it); a reader thread turns
//! coordinator frames into channel messages so the owner can also wake up
//! periodically (process list refresh, end of the computation). If the
//! coordinator goes away the computation keeps running and the session
//! reconnects when a coordinator answers again.

use std::collections::HashMap;
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

use crate::checkpoint::capture;
use crate::kernel::freeze::{self, FrozenProcess};
use crate::kernel::pid::HostPid;
use crate::kernel::procfs;
use crate::resources::memory::incremental::{ChainFiles, Chains};
use crate::resources::memory::precopy::PreCopied;
use crate::roles::barrier::BarrierError;

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
    /// This launch's id inside the computation (hex): separate launches on
    /// one coordinator each have their own pid namespace, so it is part of
    /// every image name. Kept across restarts (read back from the image
    /// names).
    pub launch: String,
    /// A restarted computation that has had no coordinator for this long
    /// ends (None: it keeps running alone and keeps trying to reconnect).
    pub alone_timeout: Option<Duration>,
}

pub use crate::resources::checkpoint_warning;
use crate::resources::take_warnings;

/// The session settings of a new launch (`dmtcp-run`, `dmtcp-attach`):
/// the checkpoint directory made if given, the coordinator joined or
/// started (`tool` names us in its messages), the codec.
pub fn new_launch_config(
    coord: &crate::coord_args::CoordArgs,
    image: &crate::coord_args::ImageArgs,
    tool: &str,
    incremental: bool,
) -> anyhow::Result<SessionConfig> {
    let ckpt_dir = image
        .ckpt_dir
        .as_deref()
        .map(crate::roles::supervise::absolute);
    if let Some(d) = &ckpt_dir {
        dmtcp_protocol::runtime::create_ckpt_dir(d)
            .map_err(|e| anyhow::anyhow!("checkpoint directory {}: {e}", d.display()))?;
    }
    let (addr, secret) = coord.coordinator(
        tool,
        dmtcp_coordinator::client::StartOptions {
            ckpt_dir: ckpt_dir.clone(),
            interval: image.interval,
            exit_on_last: true,
        },
    )?;
    let (codec, level) = image.codec()?;
    Ok(SessionConfig {
        addr,
        secret,
        computation: None,
        generation: 0,
        write: dmtcp_image::WriteOptions {
            codec,
            level,
            adaptive: image.codec_is_default(),
            ..dmtcp_image::WriteOptions::default()
        },
        ckpt_dir,
        incremental,
        launch: new_launch_id(),
        // A launched computation outlives its coordinator and reconnects.
        alone_timeout: None,
    })
}

/// A fresh launch id: 8 random hex digits.
pub fn new_launch_id() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // No entropy source: time and pid still differ between launches.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (t ^ std::process::id().rotate_left(16)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Which processes are pre-copied before each freeze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Precopy {
    /// None (`DMTCP_PRECOPY=0`): every checkpoint takes the fork snapshot.
    Off,
    /// Enough of the largest processes that the others have less than
    /// [`PRECOPY_AUTO_MIN`] of private resident memory together
    /// (`DMTCP_PRECOPY` unset; [`precopy_selection`]): below it the fork
    /// snapshots freeze the computation for a few milliseconds at most,
    /// above it for longer the more memory they copy the page tables of,
    /// where pre-copy's freeze stays short.
    Auto,
    /// Every process (`DMTCP_PRECOPY=1`, `dmtcp-run --precopy`,
    /// `dmtcp-restart --precopy`, or `dmtcp-command --precopy` for one
    /// checkpoint).
    All,
}

/// 64 MiB: the fork snapshots of that much touched memory freeze for about
/// 1.5 ms here, the time the capture of one process takes (sessions 33
/// and 35 in docs/performance.md).
const PRECOPY_AUTO_MIN: u64 = 64 << 20;

/// The processes to pre-copy among `(pid, vpid, private resident bytes)`:
/// all when `min_bytes` is 0; else the largest, one after the other, until
/// what is left to the fork snapshots of one freeze (which are made one
/// after the other, each costing about its memory's page tables) is below
/// `min_bytes`. One process is pre-copied when it has `min_bytes` or more;
/// by default all of sixteen of 64 MiB are, and one of two of 40 MiB.
fn precopy_selection<P, V>(mut procs: Vec<(P, V, u64)>, min_bytes: u64) -> Vec<(P, V, u64)> {
    if min_bytes == 0 {
        return procs;
    }
    procs.sort_by_key(|p| std::cmp::Reverse(p.2));
    let mut left: u64 = procs.iter().map(|p| p.2).sum();
    let mut chosen = Vec::new();
    for p in procs {
        if left < min_bytes {
            break;
        }
        left -= p.2;
        chosen.push(p);
    }
    chosen
}

/// `DMTCP_PRECOPY`: `1`/`true`/`yes`/`on` all, `0`/`false`/`no`/`off`
/// none, unset (or anything else) automatic.
fn precopy_mode() -> Precopy {
    match std::env::var("DMTCP_PRECOPY")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        Ok("1" | "true" | "yes" | "on") => Precopy::All,
        Ok("0" | "false" | "no" | "off") => Precopy::Off,
        _ => Precopy::Auto,
    }
}

/// The program's name as the user typed it: the base name of its argv[0]
/// (`redis-server`, `vim`), not of the binary it resolved to
/// (`redis-check-rdb`, `vim.nox`); else the binary's, else comm.
fn program_name(pid: HostPid) -> String {
    let from_argv0 = std::fs::read(format!("/proc/{}/cmdline", pid.0))
        .ok()
        .and_then(|c| {
            let argv0 = c.split(|b| *b == 0).next()?.to_vec();
            let argv0 = String::from_utf8_lossy(&argv0).into_owned();
            // A program that rewrote its title ("redis-server *:6379").
            let argv0 = argv0.split_whitespace().next()?.to_string();
            let base = argv0
                .rsplit('/')
                .next()?
                .trim_start_matches('-')
                .to_string();
            (!base.is_empty()).then_some(base)
        });
    from_argv0
        .or_else(|| {
            procfs::link(pid, "exe").ok().and_then(|e| {
                e.rsplit('/')
                    .next()
                    .map(|b| b.trim_end_matches(" (deleted)").to_string())
                    .filter(|b| !b.is_empty())
            })
        })
        .or_else(|| procfs::comm(pid, None).ok())
        .unwrap_or_else(|| "proc".into())
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
    // The handshake proves the coordinator knows the secret and checks the
    // computation id it sends (it names image files).
    let (conn, welcome) = Connection::connect(&cfg.addr, &cfg.secret, role)?;
    match welcome {
        FromCoordinator::Welcome {
            computation,
            generation,
            ..
        } if !computation.is_empty() => Ok((conn, computation, generation)),
        _ => anyhow::bail!("coordinator at {} gave no computation id", cfg.addr),
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

/// The image path and program name of a frozen process, and the writer
/// and pre-copy state of its pre-copy when one was made for this very path
/// (else the writer is still to be created).
fn image_of(
    pid: HostPid,
    vpid: crate::kernel::pid::VirtPid,
    dir: &std::path::Path,
    file_name: &dyn Fn(&str, u32) -> String,
    precopies: &mut HashMap<HostPid, (PathBuf, ImageWriter, PreCopied)>,
    tracker: &mut crate::resources::memory::dirty::DirtyTracker,
) -> (
    PathBuf,
    String,
    Option<ImageWriter>,
    Option<capture::AtFreeze>,
) {
    // Images are named after the program (DMTCP's habit), not the
    // 15-character comm.
    let comm = program_name(pid);
    let path = dir.join(file_name(&comm, vpid.to_image()));
    let (writer, precopied) = match precopies.remove(&pid) {
        Some((p, w, pre)) if p == path => match pre.at_freeze(pid, tracker) {
            Ok(a) => (Some(w), Some(a)),
            Err(e) => {
                warn!("pid {pid}: pre-copy lost at the freeze ({e})");
                tracker.forget(pid);
                (None, None)
            }
        },
        _ => (None, None),
    };
    (path, comm, writer, precopied)
}

/// A process's tracer part, on its way to the thread that finishes it.
struct RestOf {
    traced: capture::Traced,
    /// None: created by that thread.
    writer: Option<ImageWriter>,
    path: PathBuf,
    comm: String,
    started: Instant,
}

/// A process captured while frozen: writer, metadata, snapshot, pid and
/// its entry in the list of images.
type Captured = (
    ImageWriter,
    dmtcp_image::ProcessImage,
    Option<capture::Deferred>,
    HostPid,
    ImageEntry,
);

fn image_entry(
    path: &std::path::Path,
    vpid: crate::kernel::pid::VirtPid,
    comm: String,
) -> ImageEntry {
    ImageEntry {
        path: path.to_string_lossy().into_owned(),
        vpid: vpid.to_image(),
        prog: comm,
        host: hostname(),
        size: 0,
    }
}

/// What every captured process's image gets from the computation: the
/// ids of an attached tree, and the SysV IPC objects in the lowest pid's.
struct FinishCx<'a> {
    attached: Option<&'a std::collections::HashSet<i32>>,
    lowest: Option<crate::kernel::pid::VirtPid>,
    ipc: Option<(dmtcp_image::IpcState, crate::resources::sysv::ShmBytes)>,
}

impl FinishCx<'_> {
    fn process(
        &mut self,
        pid: HostPid,
        meta: &mut dmtcp_image::ProcessImage,
        writer: &mut ImageWriter,
        vpid: crate::kernel::pid::VirtPid,
    ) -> Result<(), BarrierError> {
        if let Some(set) = self.attached {
            attached_tree_ids(&mut meta.process, set);
            if crate::kernel::pid::virt::enabled() {
                virtual_ids(meta);
            }
            // The host's SysV segments are not the tree's to save.
            if let Some(id) = meta.vmas.iter().find_map(|v| match v.kind {
                dmtcp_image::VmaKind::SysvShm { id, .. } => Some(id),
                _ => None,
            }) {
                return Err(BarrierError::Io(std::io::Error::other(format!(
                    "pid {pid} has SysV shared memory segment {id} attached: not saved for an attached tree (it belongs to the host's IPC namespace)"
                ))));
            }
        }
        if Some(vpid) == self.lowest {
            if let Some((mut state, bytes)) = self.ipc.take() {
                for (g, b) in state.shm.iter_mut().zip(&bytes) {
                    g.pages = crate::resources::sysv::store_pages(writer, b).map_err(|source| {
                        BarrierError::SysvShm {
                            id: g.perm.id,
                            source,
                        }
                    })?;
                }
                meta.ipc = Some(state);
            }
        }
        Ok(())
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
    fn finish(mut self) -> Result<(PendingImage, Committed), BarrierError> {
        if let Some(d) = self.deferred.take() {
            let read = d.capture(&mut self.meta, &mut self.writer);
            let released = d.release();
            read?;
            if let Err(e) = released {
                warn!("{e}");
            }
        }
        let pending = self.writer.finish_unsynced(&self.meta)?;
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

/// Where the processes of a computation are found.
pub enum Tree {
    /// Launched or restarted: every descendant of nsinit; its control
    /// socket reads the SysV IPC objects for us.
    Nsinit {
        pid: HostPid,
        ctrl: crate::roles::nsinit_ctrl::NsinitCtrl,
    },
    /// Attached by `dmtcp-attach`: the members it tracks (no SysV IPC of
    /// ours: the tree shares the host's IPC namespace).
    Attached(crate::roles::members::Members),
}

/// Parent, group, session and terminal foreground group of a process of an
/// attached tree, from its host ids (its pids are its host pids): ids of
/// processes outside the tree become 0, as in a launched computation.
fn attached_tree_ids(p: &mut dmtcp_image::ProcessInfo, members: &std::collections::HashSet<i32>) {
    let Some(st) = crate::roles::members::proc_stat(p.host_pid as i32) else {
        return;
    };
    let is_member = |id: i32| members.contains(&id);
    (p.vppid, p.vpgid, p.vsid) = crate::roles::members::tree_ids_in(&st, is_member);
    if let Some(c) = p.ctty.as_mut() {
        if !is_member(c.fg_vpgid as i32) {
            c.fg_vpgid = 0;
        }
    }
}

/// Without namespaces: the ids an image records are the virtual ones the
/// program sees, not the kernel's (`kernel::pid::virt`), and a parent,
/// group or session outside the computation (nsinit, the shell dmtcp-run
/// ran in) is kept too: the restart maps it to its counterpart then
/// (nsinit, the group and session dmtcp-restart runs in), so that the
/// program sees the same ids there as well.
fn virtual_ids(meta: &mut dmtcp_image::ProcessImage) {
    use crate::kernel::pid::virt::of_real_u32 as v;
    let p = &mut meta.process;
    if let Some(st) = crate::roles::members::proc_stat(p.host_pid as i32) {
        (p.vppid, p.vpgid, p.vsid) = (st.ppid as u32, st.pgid as u32, st.sid as u32);
    }
    // From the kernel's pid, translated once: `vpid` may be virtual
    // already (a frozen process's), and translating a virtual id again
    // turns it into another process's wherever a restart gave that one a
    // kernel pid equal to it (pids reused after a wrap).
    p.vpid = v(p.host_pid);
    (p.vppid, p.vpgid, p.vsid) = (v(p.vppid), v(p.vpgid), v(p.vsid));
    if let Some(c) = p.ctty.as_mut() {
        c.fg_vpgid = v(c.fg_vpgid);
    }
    for t in &mut meta.threads {
        t.vtid = v(t.vtid);
    }
    for t in &mut meta.security.threads {
        t.vtid = v(t.vtid);
    }
}

/// A running session; `run` returns when `done` is set (the computation ended).
pub struct Session {
    cfg: SessionConfig,
    tree: Tree,
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
    /// Images of checkpoint `.0` durable under temp names, waiting for the
    /// coordinator's `Commit`.
    prepared: Option<(u64, Vec<(PendingImage, Committed)>)>,
    last_list: Vec<ProcEntry>,
    /// Application API: coordinator publication to new processes.
    agent: crate::agent::Publisher,
    /// Incremental checkpoints: dirty-page tracking and image chains.
    chains: Chains,
    /// Pre-copy (`DMTCP_PRECOPY`): per process, the image path, its writer
    /// holding the pages copied while the program ran, and what was copied.
    precopies: HashMap<HostPid, (PathBuf, ImageWriter, PreCopied)>,
    /// Warnings of the checkpoint in progress, sent with its images.
    warnings: Vec<String>,
    /// Processes with plugin hooks in the checkpoint in progress.
    hooks: Vec<crate::hooks::HookProc>,
    /// TCP ends whose peer may be in another launch, during a checkpoint.
    tcpx: Tcpx,
    /// Events read while waiting for a plugin global barrier, handled next.
    stash: std::collections::VecDeque<Event>,
    /// The checkpoint whose barrier runs (for plugin global barriers).
    cur_id: u64,
    /// PRESUSPEND hooks ran and RUNNING has not followed yet: a checkpoint
    /// abandoned now still owes the plugins their RUNNING.
    owes_running: bool,
    /// The checkpoint whose pre-copy the coordinator asked for (2.6
    /// `Precopy`, from `dmtcp-command --precopy`).
    precopy_for: Option<u64>,
    /// The coordinator killed the computation: losing it is no news.
    killed: bool,
    /// The coordinator halted the computation (a kill's first step): if it
    /// is lost before the kill, the kill is done here.
    halted: bool,
    /// Since when no coordinator has been connected.
    lost_since: Option<Instant>,
    pub done: Arc<AtomicBool>,
}

/// A supervisor's side of plugin global barriers: says where its hook
/// threads are (`HookBarrier`) and waits for the coordinator's `HookGo`;
/// other events read meanwhile are kept for the session loop.
struct CoordBarrier<'a> {
    conn: &'a mut Option<Connection>,
    rx: &'a Receiver<Event>,
    stash: &'a mut std::collections::VecDeque<Event>,
    gen: u64,
    id: u64,
}

impl CoordBarrier<'_> {
    fn tell(&mut self, moment: u32, barrier: Option<String>) -> Result<(), String> {
        let Some(c) = self.conn.as_mut() else {
            return Err("no coordinator connection".into());
        };
        let id = self.id;
        c.send(&ToCoordinator::HookBarrier {
            id,
            moment,
            barrier,
        })
        .map_err(|e| format!("telling the coordinator: {e}"))
    }
}

impl crate::hooks::Global for CoordBarrier<'_> {
    fn wait(&mut self, moment: u32, name: &str, deadline: Instant) -> Result<(), String> {
        self.tell(moment, Some(name.to_string()))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(
                    "not every launch of the computation reached it in time (DMTCP_PLUGIN_TIMEOUT)"
                        .into(),
                );
            }
            match self.rx.recv_timeout(left) {
                Ok(Event::Coord(g, FromCoordinator::HookGo { id, moment: m }))
                    if g == self.gen && id == self.id && m == moment =>
                {
                    return Ok(())
                }
                Ok(ev @ Event::Coord(g, FromCoordinator::Abort { .. }))
                | Ok(ev @ Event::Lost(g, _))
                    if g == self.gen =>
                {
                    self.stash.push_back(ev);
                    return Err("the checkpoint was abandoned".into());
                }
                Ok(ev) => self.stash.push_back(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("the coordinator reader is gone".into())
                }
            }
        }
    }

    fn done(&mut self, moment: u32) {
        if let Err(e) = self.tell(moment, None) {
            debug!("plugin moment {moment}: {e}");
        }
    }
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

/// A checkpoint's search for TCP connections between launches
/// (`resources::inet::remote`).
#[derive(Default)]
struct Tcpx {
    /// This launch's ends whose peer is not in the launch.
    ends: Vec<crate::resources::inet::remote::Candidate>,
    /// Queries not answered yet: key -> index in `ends`, and the checkpoint.
    asked: std::collections::HashMap<Vec<u8>, usize>,
    waiting: Option<u64>,
    generation: u64,
    /// Ends whose peer is an end of another launch, by socket inode.
    found: std::collections::HashMap<u64, crate::resources::inet::remote::RemoteEnd>,
}

impl Session {
    pub fn new(
        cfg: SessionConfig,
        nsinit: HostPid,
        ctrl: crate::roles::nsinit_ctrl::NsinitCtrl,
        conn: Connection,
        computation: String,
    ) -> Session {
        Session::new_after(cfg, nsinit, ctrl, conn, computation, Vec::new())
    }

    /// [`Session::new`] on a connection from which `early` frames were
    /// already read (a restart's plugin barrier kept them): they are
    /// handled first, in order.
    pub fn new_after(
        cfg: SessionConfig,
        nsinit: HostPid,
        ctrl: crate::roles::nsinit_ctrl::NsinitCtrl,
        conn: Connection,
        computation: String,
        early: Vec<FromCoordinator>,
    ) -> Session {
        let mut ctrl = ctrl;
        // Kept by nsinit for a supervisor that takes the computation back
        // if we die (`roles/adopt.rs`).
        let id = crate::roles::nsinit::Identity {
            computation: computation.clone(),
            launch: cfg.launch.clone(),
            virtual_pids: crate::kernel::pid::virt::enabled(),
        };
        if let Err(e) = ctrl.set_identity(id) {
            tracing::debug!("{e}");
        }
        Session::with_tree(
            cfg,
            Tree::Nsinit { pid: nsinit, ctrl },
            conn,
            computation,
            early,
        )
    }

    /// Says our launch id to a coordinator that knows the word (2.1).
    fn announce_launch(&mut self) {
        let minor = self.conn.as_ref().map_or(0, |c| c.coordinator_minor());
        if minor >= 1 {
            let id = self.cfg.launch.clone();
            self.send(ToCoordinator::Launch { id });
        }
    }

    /// The restorer tied the computation's life to ours
    /// ([`NsinitCtrl::lifeline`](crate::roles::nsinit_ctrl::NsinitCtrl::lifeline)):
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

    /// An attached computation (`dmtcp-attach`): the same session on the
    /// members `members` tracks.
    pub fn attached(
        cfg: SessionConfig,
        members: crate::roles::members::Members,
        conn: Connection,
        computation: String,
    ) -> Session {
        Session::with_tree(cfg, Tree::Attached(members), conn, computation, Vec::new())
    }

    /// A session of `tree` on the coordinator connection `conn`, whose
    /// frames a reader thread turns into events (after `early`, frames
    /// read from it before).
    fn with_tree(
        cfg: SessionConfig,
        tree: Tree,
        conn: Connection,
        computation: String,
        early: Vec<FromCoordinator>,
    ) -> Session {
        let (tx, rx) = mpsc::channel();
        for m in early {
            let _ = tx.send(Event::Coord(1, m));
        }
        // The rescue stubs' place in the inject library, found before the
        // first checkpoint rather than inside its frozen window.
        let _ = std::thread::Builder::new()
            .name("warm-library".into())
            .spawn(|| {
                if let Ok(lib) = crate::roles::supervise::inject_library() {
                    crate::kernel::remote::warm_library_marker(&lib);
                }
            });
        let reader = conn
            .try_clone()
            .expect("cloning the coordinator connection");
        spawn_reader(reader, tx.clone(), 1);
        Session {
            cfg,
            tree,
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
            prepared: None,
            last_list: Vec::new(),
            agent: Default::default(),
            chains: Default::default(),
            precopies: HashMap::new(),
            warnings: Vec::new(),
            hooks: Vec::new(),
            tcpx: Tcpx::default(),
            stash: Default::default(),
            cur_id: 0,
            owes_running: false,
            precopy_for: None,
            killed: false,
            halted: false,
            lost_since: None,
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Looks for new members of an attached computation (a no-op for a
    /// launched one, whose processes are found anew each time).
    fn refresh_members(&mut self) {
        if let Tree::Attached(m) = &mut self.tree {
            m.refresh();
        }
    }

    /// Ends the computation: SIGKILL to nsinit, or to every member of an
    /// attached tree.
    /// Stops every process with `SIGSTOP` (the first step of a kill, see
    /// `FromCoordinator::Halt`): until the kill, none runs, so none reacts
    /// to another launch of the computation dying first.
    fn halt_computation(&mut self) {
        let n = match &self.tree {
            Tree::Nsinit { pid, .. } => {
                let nsinit = *pid;
                crate::roles::supervise::stop_all(|| procfs::descendants(nsinit))
            }
            // Not an attached tree: its parent outside the computation (a
            // shell) would see its child stop; it is killed as before.
            Tree::Attached(_) => 0,
        };
        debug!("halted {n} process(es)");
    }

    fn kill_computation(&mut self) {
        match &mut self.tree {
            Tree::Nsinit { pid, .. } => crate::roles::supervise::kill_computation(*pid),
            Tree::Attached(m) => {
                // Until none is left: a member may fork meanwhile.
                for _ in 0..400 {
                    let pids = m.refresh();
                    if pids.is_empty() {
                        break;
                    }
                    for p in pids {
                        // SAFETY: kill with integer arguments.
                        unsafe { libc::kill(p.0, libc::SIGKILL) };
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                // Nothing is left to supervise: end now, so a restart can
                // follow at once.
                if m.is_empty() {
                    self.done.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// The processes of the computation: every descendant of nsinit, or
    /// the members of an attached tree.
    pub fn processes(&self) -> Vec<(HostPid, ProcEntry)> {
        let host = hostname();
        let pids = match &self.tree {
            Tree::Nsinit { pid, .. } => procfs::descendants(*pid),
            Tree::Attached(m) => m.pids(),
        };
        pids.into_iter()
            .filter_map(|p| {
                let st = procfs::status(p).ok()?;
                let vpid = procfs::innermost_pid(&st)?;
                Some((
                    p,
                    ProcEntry {
                        vpid: vpid.to_image(),
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
        self.refresh_members();
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
        // Snapshots released while their parents were frozen (a failed
        // capture) are reaped by them now.
        crate::resources::memory::capture::reap_after_thaw();
    }

    /// Drops a checkpoint in progress: its images, and (as tracking was
    /// reset at its freeze) the bases of incremental images.
    fn abandon(&mut self) {
        self.tcpx = Tcpx::default();
        self.hooks.clear();
        self.warnings.clear();
        take_warnings();
        // Prepared but uncommitted images: their temp files go.
        self.prepared = None;
        self.precopies.clear();
        self.chains.abandon();
        self.thaw_all();
        // After the thaw: a snapshot child is reaped by its parent, which
        // must not be frozen (`Deferred`'s drop; those released while it
        // was are reaped at the end of the thaw).
        self.pending.clear();
        if std::mem::take(&mut self.owes_running) {
            // The program runs again: plugins (a Python one holds its
            // interpreter lock from PRESUSPEND) hear it.
            let pids: Vec<HostPid> = self.processes().into_iter().map(|(p, _)| p).collect();
            crate::hooks::running(&mut crate::hooks::find(&pids));
        }
    }

    fn fail(&mut self, id: u64, reason: String) {
        warn!("checkpoint {id} failed: {reason}");
        self.abandon();
        self.send(ToCoordinator::CheckpointFailed { id, reason });
    }

    /// Freezes everything; while a process is inside `dmtcp_disable_ckpt()`
    /// thaws, waits 10 ms and tries again (application API, `agent`).
    fn suspend(&mut self, opts: &CheckpointOptions) -> Result<(), BarrierError> {
        // Lazily restored memory must be in place before it is read.
        crate::resources::memory::lazy::wait_until_restored();
        self.precopies.clear();
        // Plugins: PRESUSPEND while the program still runs.
        let pids: Vec<HostPid> = self.processes().into_iter().map(|(p, _)| p).collect();
        let mut hooks = crate::hooks::find(&pids);
        if !hooks.is_empty() {
            self.owes_running = true;
            let moment = crate::agent::abi::hook::MOMENT_PRESUSPEND;
            let mut g = self.coord_barrier();
            crate::hooks::run_with(&mut hooks, moment, g.as_mut().map(|g| g as _))
                .map_err(BarrierError::Plugin)?;
        }
        let asked = self.precopy_for.take();
        match precopy_mode() {
            _ if asked == Some(opts.id) => self.precopy_all(opts, 0)?,
            Precopy::All => self.precopy_all(opts, 0)?,
            Precopy::Auto => self.precopy_all(opts, PRECOPY_AUTO_MIN)?,
            Precopy::Off => {}
        }
        let deadline = Instant::now() + crate::agent::critical_section_wait();
        // A process caught starting its inject library (no namespaces) is
        // waited for this long at most; then the capture says what it finds.
        let starting_until = Instant::now() + Duration::from_secs(2);
        loop {
            self.freeze_all()?;
            if let Some(pid) = crate::agent::library_starting(&self.frozen) {
                if Instant::now() < starting_until {
                    debug!(
                        "pid {pid} is starting its inject library: thawed, frozen again shortly"
                    );
                    self.thaw_all();
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            }
            let Some((pid, n)) = crate::agent::critical_section(&self.frozen) else {
                break;
            };
            self.thaw_all();
            if Instant::now() > deadline {
                let pids: Vec<HostPid> = self.processes().into_iter().map(|(p, _)| p).collect();
                crate::agent::release_waiting(&pids);
                return Err(BarrierError::CkptDisabled { pid, sections: n });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let a = &self.cfg.addr;
        crate::agent::prepare_capture(&self.frozen, &a.host, a.port, &self.cfg.secret);
        // Plugins: PRECHECKPOINT with only the hook threads running.
        let pids: Vec<HostPid> = self.frozen.iter().map(|f| f.pid).collect();
        self.hooks = crate::hooks::find(&pids);
        self.run_hooks_alone(crate::agent::abi::hook::MOMENT_PRECHECKPOINT, true)
            .map_err(BarrierError::Plugin)
    }

    /// Runs a moment in the hook threads of `self.hooks` while every other
    /// thread stays frozen; with `refreeze`, the hook threads are frozen
    /// again afterwards (they are captured like any thread).
    fn run_hooks_alone(&mut self, moment: u32, refreeze: bool) -> Result<(), String> {
        if self.hooks.is_empty() {
            return Ok(());
        }
        for h in &self.hooks {
            if let Some(fp) = self.frozen.iter_mut().find(|f| f.pid == h.pid) {
                fp.thaw_thread(h.tid)
                    .map_err(|e| format!("pid {}: resuming the plugin hook thread: {e}", h.pid))?;
            }
        }
        let mut hooks = std::mem::take(&mut self.hooks);
        let result = {
            let mut g = self.coord_barrier();
            crate::hooks::run_with(&mut hooks, moment, g.as_mut().map(|g| g as _))
        };
        self.hooks = hooks;
        if refreeze {
            for h in &self.hooks {
                if let Some(fp) = self.frozen.iter_mut().find(|f| f.pid == h.pid) {
                    if let Err(e) = fp.refreeze_thread(h.tid) {
                        if result.is_ok() {
                            return Err(format!(
                                "pid {}: stopping the plugin hook thread again: {e}",
                                h.pid
                            ));
                        }
                    }
                }
            }
        }
        result
    }

    /// Plugin global barriers through a coordinator that knows them (2.3).
    fn coord_barrier(&mut self) -> Option<CoordBarrier<'_>> {
        let minor = self.conn.as_ref().map_or(0, |c| c.coordinator_minor());
        (minor >= 3).then_some(CoordBarrier {
            conn: &mut self.conn,
            rx: &self.rx,
            stash: &mut self.stash,
            gen: self.conn_gen,
            id: self.cur_id,
        })
    }

    fn freeze_all(&mut self) -> Result<(), BarrierError> {
        self.refresh_members();
        let procs = self.processes();
        if procs.is_empty() {
            return Err(BarrierError::NoProcess);
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
                if crate::resources::tree::is_zombie(pid) {
                    self.zombies.push(pid);
                    continue;
                }
                if procfs::is_32bit(pid) {
                    return Err(BarrierError::ThirtyTwoBit {
                        vpid: e.vpid,
                        prog: e.prog.clone(),
                    });
                }
                match freeze::freeze(pid) {
                    Ok(fp) => self.frozen.push(fp),
                    Err(err) if crate::kernel::ptrace::errno(&err) == Some(libc::ESRCH) => {
                        debug!("pid {pid} ({}) exited before the freeze", e.prog)
                    }
                    Err(err) => {
                        return Err(BarrierError::Freeze {
                            vpid: e.vpid,
                            prog: e.prog.clone(),
                            source: err,
                        })
                    }
                }
            }
            if !fresh {
                break;
            }
            self.refresh_members();
            procs = self.processes();
        }
        debug!(
            "froze {} process(es) in {:?}",
            self.frozen.len(),
            t.elapsed()
        );
        Ok(())
    }

    /// The directory the images go to (created) and how they are written.
    fn image_target(
        &self,
        opts: &CheckpointOptions,
    ) -> Result<(PathBuf, WriteOptions), BarrierError> {
        // Our own --ckpt-dir first; the (authenticated) coordinator's only
        // if it is a clean absolute path to a directory of ours.
        let dir = match self.cfg.ckpt_dir.clone() {
            Some(d) => d,
            None => dmtcp_protocol::runtime::checked_ckpt_dir(&opts.dir)
                .map_err(BarrierError::CoordinatorDir)?,
        };
        dmtcp_protocol::runtime::create_ckpt_dir(&dir).map_err(|source| BarrierError::CkptDir {
            dir: dir.clone(),
            source,
        })?;
        let mut write = self.cfg.write.clone();
        if !opts.codec.is_empty() {
            (write.codec, write.level) = dmtcp_image::Codec::parse_spec(&opts.codec)?;
            write.adaptive = false;
        }
        Ok((dir, write))
    }

    /// The image file of `pid` (image vpid `vpid`) in this checkpoint.
    fn image_path(
        &self,
        dir: &std::path::Path,
        generation: u64,
        pid: HostPid,
        vpid: u32,
    ) -> PathBuf {
        let name = image_file_name(
            &program_name(pid),
            &self.computation,
            &self.cfg.launch,
            vpid,
        );
        // With chains, a new image must not replace the one it builds on.
        if self.chains.active() {
            let stem = name.trim_end_matches(".dmtcp");
            dir.join(format!("{stem}_g{generation}.dmtcp"))
        } else {
            dir.join(name)
        }
    }

    /// Pre-copy, while the program runs: each process's private memory
    /// goes into its image writer, with the dirty tracker armed
    /// (`resources/memory/precopy.rs`). With `min_bytes`, only as many
    /// processes as [`precopy_selection`] picks; a process it fails for is
    /// checkpointed without (logged).
    fn precopy_all(
        &mut self,
        opts: &CheckpointOptions,
        min_bytes: u64,
    ) -> Result<(), BarrierError> {
        let t = Instant::now();
        let (dir, write) = self.image_target(opts)?;
        if opts.incremental || self.cfg.incremental {
            self.chains.activate();
        }
        let keep = self.chains.active();
        let incremental = opts.incremental || self.cfg.incremental;
        let mut total = 0u64;
        let mut candidates = Vec::new();
        for (pid, _) in self.processes() {
            if crate::resources::tree::is_zombie(pid) || procfs::is_32bit(pid) {
                continue;
            }
            let Ok(st) = procfs::status(pid) else {
                continue;
            };
            let Some(vpid) = procfs::innermost_pid(&st) else {
                continue;
            };
            let anon = procfs::field(&st, "RssAnon")
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb << 10);
            candidates.push((pid, vpid, anon));
        }
        for (pid, vpid, _) in precopy_selection(candidates, min_bytes) {
            let vpid = crate::kernel::pid::virt::of_real(vpid.0) as u32;
            let path = self.image_path(&dir, opts.generation, pid, vpid);
            let t0 = Instant::now();
            let result = (|| -> Result<_, BarrierError> {
                let mut writer = ImageWriter::create(&path, write.clone())?;
                let with_base = self.chains.has_base(pid, incremental);
                let tracker = self.chains.tracker();
                let uffd = if tracker.needs_uffd(pid) {
                    Some(capture::make_uffd_running(pid)?)
                } else {
                    None
                };
                let pre = crate::resources::memory::precopy::precopy(
                    pid,
                    tracker,
                    uffd,
                    keep,
                    with_base,
                    &mut writer,
                )?;
                Ok((writer, pre))
            })();
            match result {
                Ok((writer, pre)) => {
                    info!(
                        "pid {pid}: pre-copy of {} KiB while running in {:?}",
                        pre.bytes >> 10,
                        t0.elapsed()
                    );
                    total += pre.bytes;
                    self.precopies.insert(pid, (path, writer, pre));
                }
                Err(e) => {
                    self.chains.tracker().forget(pid);
                    warn!("pid {pid}: no pre-copy ({e}); checkpointed without it");
                }
            }
        }
        debug!("pre-copy of {} MiB in {:?}", total >> 20, t.elapsed());
        Ok(())
    }

    fn checkpoint(&mut self, opts: &CheckpointOptions) -> Result<(), BarrierError> {
        let (dir, write) = self.image_target(opts)?;
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
            launch: self.cfg.launch.clone(),
            no_namespaces: crate::kernel::pid::virt::enabled(),
            // Every process this launch saves (zombies included): a restart
            // of this generation needs each one's image.
            set: {
                let mut set: Vec<dmtcp_image::SetMember> = self
                    .frozen
                    .iter()
                    .map(|f| f.vpid.to_image())
                    .chain(
                        self.zombies
                            .iter()
                            .filter_map(|&z| procfs::status(z).ok())
                            .filter_map(|st| procfs::innermost_pid(&st))
                            .map(|v| crate::kernel::pid::virt::of_real_u32(v.to_image())),
                    )
                    .map(|vpid| dmtcp_image::SetMember {
                        launch: self.cfg.launch.clone(),
                        vpid,
                    })
                    .collect();
                set.sort();
                set.dedup();
                set
            },
        };
        let incremental = opts.incremental || self.cfg.incremental;
        if incremental {
            self.chains.activate();
        }
        let mut images = Vec::new();
        self.pending.clear();
        take_warnings();
        let result = self.capture_all(&dir, &write, &info, incremental, &mut images);
        // Our duplicates of the program's sockets must not outlive the
        // checkpoint (a socket the program closes would stay open).
        self.tcpx = Tcpx::default();
        self.pending = images;
        self.warnings = take_warnings();
        result
    }

    /// The image path, program name and writer for the `i`th frozen
    /// process, and its pre-copy (kept when made for this very path).
    fn open_writer(
        &mut self,
        i: usize,
        dir: &std::path::Path,
        write: &WriteOptions,
        file_name: &dyn Fn(&str, u32) -> String,
    ) -> Result<(PathBuf, String, ImageWriter, Option<capture::AtFreeze>), BarrierError> {
        let (pid, vpid) = (self.frozen[i].pid, self.frozen[i].vpid);
        let (path, comm, writer, precopied) = image_of(
            pid,
            vpid,
            dir,
            file_name,
            &mut self.precopies,
            self.chains.tracker(),
        );
        let writer = match writer {
            Some(w) => w,
            None => ImageWriter::create(&path, write.clone())?,
        };
        Ok((path, comm, writer, precopied))
    }

    fn capture_all(
        &mut self,
        dir: &std::path::Path,
        write: &WriteOptions,
        info: &ComputationInfo,
        incremental: bool,
        images: &mut Vec<OpenCapture>,
    ) -> Result<(), BarrierError> {
        let pids: Vec<HostPid> = self.frozen.iter().map(|f| f.pid).collect();
        self.chains.retain(&pids);
        // With chains, a new image must not replace the one it builds on.
        let chained = self.chains.active();
        let computation = self.computation.clone();
        let launch = self.cfg.launch.clone();
        let file_name = |prog: &str, vpid: u32| {
            let name = image_file_name(prog, &computation, &launch, vpid);
            if chained {
                let stem = name.trim_end_matches(".dmtcp");
                format!("{stem}_g{}.dmtcp", info.generation)
            } else {
                name
            }
        };
        let mut fdctx = crate::resources::fdshare::FdContext::build_with(&pids, &self.tcpx.found)
            .map_err(BarrierError::Fds)?;
        // Computation-wide, so recorded once: in the lowest pid's image.
        // With host pids (`--no-pidns`), nsinit is in the host's IPC
        // namespace: not the computation's to save, like an attached tree's.
        let host_pids = crate::roles::spawn::host_pids();
        let ipc = match &mut self.tree {
            Tree::Nsinit { ctrl, .. } if !host_pids => Some(ctrl.dump_ipc()?),
            Tree::Nsinit { .. } | Tree::Attached(_) => None,
        };
        let lowest = self.frozen.iter().map(|f| f.vpid).min();
        // An attached tree: which pids its images may name as parent,
        // group or session.
        let attached: Option<std::collections::HashSet<i32>> = match &self.tree {
            Tree::Nsinit { .. } if !host_pids => None,
            Tree::Attached(_) | Tree::Nsinit { .. } => Some(
                self.frozen
                    .iter()
                    .map(|f| f.pid.0)
                    .chain(self.zombies.iter().map(|z| z.0))
                    .collect(),
            ),
        };
        // Without namespaces, SysV objects live in the host's IPC namespace
        // with host ids: a restart could not give them back.
        if crate::kernel::pid::virt::enabled() {
            if let Some(set) = &attached {
                if let Some(what) = crate::kernel::sysvuse::used_by(set) {
                    return Err(BarrierError::Io(std::io::Error::other(format!(
                        "{what} was used by the computation, which runs without namespaces: SysV IPC objects cannot be kept across a restart without an IPC namespace of its own (run it with namespaces)"
                    ))));
                }
            }
        }
        let mut finish = FinishCx {
            attached: attached.as_ref(),
            lowest,
            ipc,
        };
        let t_all = Instant::now();
        // The tracer's part of each process runs here (every ptrace request
        // must come from the thread that froze it); the rest of each one
        // (memory, fds, process fields, all read from outside) runs on a
        // second thread beside the tracer's work on the next process. Not
        // with incremental chains: their dirty-page tracking is used by
        // both parts.
        if self.chains.active() || self.frozen.len() < 2 {
            for i in 0..self.frozen.len() {
                let t = Instant::now();
                let (path, comm, mut writer, precopied) =
                    self.open_writer(i, dir, write, &file_name)?;
                let fp = &mut self.frozen[i];
                let dirty = self.chains.scan_for(fp.pid, incremental);
                let (mut meta, deferred) = capture::capture(
                    fp,
                    &mut writer,
                    info.clone(),
                    &mut fdctx,
                    true,
                    dirty,
                    precopied,
                )?;
                let (pid, vpid) = (fp.pid, fp.vpid);
                finish.process(pid, &mut meta, &mut writer, vpid)?;
                debug!("pid {vpid} ({comm}): captured in {:?}", t.elapsed());
                let chain = self.chains.chain_of(Some(pid), &path, meta.parent.as_ref());
                images.push(OpenCapture {
                    writer,
                    meta,
                    deferred,
                    entry: image_entry(&path, vpid, comm),
                    pid: Some(pid),
                    chain,
                });
            }
        } else {
            let n = self.frozen.len();
            let (tx, rx) = std::sync::mpsc::sync_channel::<RestOf>(n);
            let stop = std::sync::atomic::AtomicBool::new(false);
            let (fdctx, finish, stop_ref) = (&mut fdctx, &mut finish, &stop);
            let mut traced_failed = None;
            let (done, rest_failed, rx) = std::thread::scope(|s| {
                let rest = s.spawn(move || {
                    let mut done: Vec<Captured> = Vec::with_capacity(n);
                    let mut failed = None;
                    for r in rx.iter() {
                        let RestOf {
                            traced,
                            writer,
                            path,
                            comm,
                            started,
                        } = r;
                        let (pid, vpid) = (traced.pid(), traced.vpid());
                        let mut writer = match writer {
                            Some(w) => w,
                            None => match ImageWriter::create(&path, write.clone()) {
                                Ok(w) => w,
                                Err(e) => {
                                    // Its snapshot child is reaped after the thaw.
                                    drop(traced.into_snapshot());
                                    failed = Some(BarrierError::from(e));
                                    stop_ref.store(true, Ordering::Relaxed);
                                    break;
                                }
                            },
                        };
                        let captured =
                            capture::capture_rest(traced, &mut writer, info.clone(), fdctx, None)
                                .map_err(BarrierError::from)
                                .and_then(|(mut meta, deferred)| {
                                    let r = finish.process(pid, &mut meta, &mut writer, vpid);
                                    // Kept even on an error: released after the thaw.
                                    let entry = image_entry(&path, vpid, comm.clone());
                                    done.push((writer, meta, deferred, pid, entry));
                                    r
                                });
                        if let Err(e) = captured {
                            failed = Some(e);
                            stop_ref.store(true, Ordering::Relaxed);
                            break;
                        }
                        debug!("pid {vpid} ({comm}): captured in {:?}", started.elapsed());
                    }
                    // The tracer drains what is left once it is done.
                    (done, failed, rx)
                });
                // Names and pre-copy states (the walk of each pre-copied
                // process's pages) on a third thread, ahead of the tracer.
                let ids: Vec<_> = self.frozen.iter().map(|f| (f.pid, f.vpid)).collect();
                let (precopies, tracker) = (&mut self.precopies, self.chains.tracker());
                let (itx, irx) = std::sync::mpsc::sync_channel(n);
                s.spawn(move || {
                    for (pid, vpid) in ids {
                        if stop_ref.load(Ordering::Relaxed) {
                            break;
                        }
                        let image = image_of(pid, vpid, dir, &file_name, precopies, tracker);
                        if itx.send(image).is_err() {
                            break;
                        }
                    }
                });
                for (fp, image) in self.frozen.iter_mut().zip(irx.iter()) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let started = Instant::now();
                    let (path, comm, writer, precopied) = image;
                    match capture::capture_traced(fp, true, false, precopied) {
                        // The other side never hangs up before it returns
                        // the receiver: a send does not fail.
                        Ok(traced) => drop(tx.send(RestOf {
                            traced,
                            writer,
                            path,
                            comm,
                            started,
                        })),
                        Err(e) => {
                            traced_failed = Some(BarrierError::from(e));
                            break;
                        }
                    }
                }
                drop(irx);
                drop(tx);
                rest.join().unwrap_or_else(|_| {
                    let (_tx, rx) = std::sync::mpsc::sync_channel(0);
                    let e = std::io::Error::other("the capture thread panicked");
                    (Vec::new(), Some(BarrierError::Io(e)), rx)
                })
            });
            // Processes traced but not finished: their snapshot children
            // are killed now and reaped after the thaw.
            for r in rx.try_iter() {
                drop(r.traced.into_snapshot());
            }
            for (writer, meta, deferred, pid, entry) in done {
                let path = std::path::Path::new(&entry.path);
                let chain = self.chains.chain_of(Some(pid), path, meta.parent.as_ref());
                images.push(OpenCapture {
                    writer,
                    meta,
                    deferred,
                    entry,
                    pid: Some(pid),
                    chain,
                });
            }
            if let Some(e) = traced_failed.or(rest_failed) {
                return Err(e);
            }
        }
        debug!(
            "captured {} process(es) in {:?}",
            self.frozen.len(),
            t_all.elapsed()
        );
        for &pid in &self.zombies {
            let mut meta = crate::resources::tree::image(pid, info.clone())
                .map_err(|source| BarrierError::Zombie { pid, source })?;
            if let Some(set) = &attached {
                attached_tree_ids(&mut meta.process, set);
                if crate::kernel::pid::virt::enabled() {
                    virtual_ids(&mut meta);
                }
            }
            let vpid = meta.process.vpid;
            let comm = meta.process.comm.clone();
            let path = dir.join(file_name(&comm, vpid));
            let writer = ImageWriter::create(&path, write.clone())?;
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

    /// First phase of the commit: reads the snapshots, writes the images
    /// and fsyncs them under their temp names, then reports them durable.
    /// The program is running all along. They replace the previous images
    /// only on the coordinator's `Commit` ([`Self::commit_prepared`]), once
    /// every supervisor's are durable; an abort or a lost coordinator
    /// drops them (the temp files are removed) and leaves the previous set.
    fn prepare_images(&mut self, id: u64) {
        let t = Instant::now();
        // All or nothing: every image is written and fsynced under its temp
        // name before any replaces the previous generation.
        let mut failure = None;
        let mut ready = Vec::new();
        // 2.2 coordinators hear how far the images got (dmtcp-command -s).
        let reporter = self
            .conn
            .as_ref()
            .filter(|c| c.coordinator_minor() >= 2)
            .and_then(|c| c.try_clone().ok())
            .map(|c| {
                let paths = self.pending.iter().map(|o| PathBuf::from(&o.entry.path));
                crate::roles::progress::Reporter::start(c, id, paths.collect())
            });
        for open in std::mem::take(&mut self.pending) {
            if failure.is_some() {
                continue; // dropping releases the snapshot and the temp file
            }
            let t0 = Instant::now();
            match open.finish().and_then(|(mut pending, entry)| {
                let t1 = Instant::now();
                pending.sync()?;
                debug!(
                    "pid {:?}: image written in {:?}, fsync in {:?}",
                    entry.pid.map(|p| p.0),
                    t1 - t0,
                    t1.elapsed()
                );
                Ok((pending, entry))
            }) {
                Ok(x) => {
                    if let Some(r) = &reporter {
                        r.image_done();
                    }
                    ready.push(x)
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(r) = reporter {
            r.stop();
        }
        if let Some(reason) = failure {
            let reason = reason.to_string();
            warn!("checkpoint {id} failed: {reason}");
            self.chains.abandon();
            self.send(ToCoordinator::CheckpointFailed { id, reason });
            return;
        }
        let images: Vec<ImageEntry> = ready.iter().map(|(_, c)| c.entry.clone()).collect();
        info!(
            "checkpoint {id}: {} image(s) durable in {:?}; waiting for the commit",
            images.len(),
            t.elapsed()
        );
        self.prepared = Some((id, ready));
        // Warnings found while the images were written (after the thaw)
        // join those of the capture.
        self.warnings.extend(take_warnings());
        let warnings = std::mem::take(&mut self.warnings);
        let minor = self.conn.as_ref().map_or(0, |c| c.coordinator_minor());
        if !warnings.is_empty() && minor >= 1 {
            self.send(ToCoordinator::Warnings { id, warnings });
        }
        self.send(ToCoordinator::ImagesDurable { id, images });
    }

    /// Second phase: every supervisor's images are durable; rename ours
    /// over the previous ones and report them.
    fn commit_prepared(&mut self, id: u64) {
        let ready = match self.prepared.take() {
            Some((pid, ready)) if pid == id => ready,
            other => {
                self.prepared = other;
                return debug!("commit of checkpoint {id}: nothing prepared for it");
            }
        };
        let mut images = Vec::new();
        let mut failure = None;
        let mut committed = Vec::new();
        // The images replaced: freed once the new ones are reported.
        let mut replaced = Vec::new();
        for (pending, mut done) in ready {
            match pending.commit_keeping_old() {
                Ok((size, old)) => {
                    replaced.extend(old);
                    done.entry.size = size;
                    images.push(done.entry.clone());
                    committed.push(done);
                }
                Err(e) => {
                    failure = Some(BarrierError::from(e));
                    break;
                }
            }
        }
        if let Some(reason) = failure {
            let reason = reason.to_string();
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
        if let Some(g) = committed.iter().map(|c| c.generation).max() {
            self.cfg.generation = self.cfg.generation.max(g);
        }
        info!("checkpoint {id}: {} image(s) committed", images.len());
        self.remove_gone_images(&images);
        self.send(ToCoordinator::ImagesWritten { id, images });
        drop(replaced);
    }

    /// Once a new set is committed, the images of this launch's processes
    /// that are gone (an earlier checkpoint's, of a process that has ended
    /// since) would only be restarted by mistake (`ckpt_*.dmtcp`): they are
    /// removed. Only files named by [`image_file_name`] for this
    /// computation and launch, regular files owned by us, in the directory
    /// the set went to; other launches' images are theirs.
    fn remove_gone_images(&self, images: &[ImageEntry]) {
        let Some(dir) = images.first().and_then(|e| {
            std::path::Path::new(&e.path)
                .parent()
                .map(|d| d.to_path_buf())
        }) else {
            return;
        };
        // pid -> the name of its new image.
        let kept: std::collections::HashMap<u32, String> = images
            .iter()
            .map(|e| {
                let name = std::path::Path::new(&e.path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (e.vpid, name)
            })
            .collect();
        // Incremental chains name images `..._g<generation>.dmtcp` and
        // remove what they no longer need themselves.
        let chained = |n: &str| {
            n.trim_end_matches(".dmtcp")
                .rsplit_once("_g")
                .is_some_and(|(_, g)| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        // SAFETY: geteuid has no arguments and cannot fail.
        let uid = unsafe { libc::geteuid() };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((comp, launch, vpid)) = dmtcp_image::parse_image_file_name(&name) else {
                continue;
            };
            if comp != self.computation || launch != self.cfg.launch {
                continue;
            }
            // A live pid keeps its image; an image of the same pid under
            // another program name is of a process that is gone (its pid
            // was reused).
            let gone = match kept.get(&vpid) {
                None => true,
                Some(new) => *new != name && !chained(new) && !chained(&name),
            };
            if !gone {
                continue;
            }
            let path = e.path();
            use std::os::unix::fs::MetadataExt;
            let ours = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_file() && m.uid() == uid);
            if !ours {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => info!(
                    "removed {} (pid {vpid} is gone from the computation)",
                    path.display()
                ),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => warn!(
                    "removing {} of a process that is gone: {err}",
                    path.display()
                ),
            }
        }
    }

    fn on_barrier(&mut self, phase: Phase, opts: CheckpointOptions) {
        let id = opts.id;
        self.cur_id = id;
        debug!("checkpoint {id}: barrier {phase:?}");
        let result = match phase {
            Phase::Suspend => self.suspend(&opts),
            Phase::Checkpoint => self.checkpoint(&opts),
            Phase::Resume => {
                // The program runs again first; then the images become durable.
                crate::agent::checkpoint_done(&self.frozen);
                // Plugins: RESUME before the user threads run. The images
                // are taken already: a failure is only reported.
                let moment = crate::agent::abi::hook::MOMENT_RESUME;
                if let Err(e) = self.run_hooks_alone(moment, false) {
                    warn!("checkpoint {id}: {e}");
                    self.warnings.push(e);
                }
                self.thaw_all();
                crate::hooks::running(&mut self.hooks);
                self.owes_running = false;
                self.hooks.clear();
                self.send(ToCoordinator::Reached { id, phase });
                self.prepare_images(id);
                return;
            }
            Phase::FdLeaderElection => {
                self.tcpx_publish(&opts);
                Ok(())
            }
            Phase::Drain => {
                if self.tcpx_ask(&opts) {
                    // Reached once every answer is in (`tcpx_answer`).
                    return;
                }
                self.tcpx_drain()
            }
            Phase::Refill => Ok(()),
        };
        match result {
            Ok(()) => self.send(ToCoordinator::Reached { id, phase }),
            Err(reason) => self.fail(id, reason.to_string()),
        }
    }

    /// `FdLeaderElection` (every launch frozen): publishes this launch's
    /// TCP ends whose peer is not in it.
    fn tcpx_publish(&mut self, opts: &CheckpointOptions) {
        use crate::resources::inet::remote;
        let pids: Vec<HostPid> = self.frozen.iter().map(|f| f.pid).collect();
        self.tcpx = Tcpx {
            ends: remote::scan(&pids, &hostname()),
            generation: opts.generation,
            ..Tcpx::default()
        };
        let launch = self.cfg.launch.clone().into_bytes();
        let keys: Vec<Vec<u8>> = self
            .tcpx
            .ends
            .iter()
            .map(|e| remote::ckpt_key(opts.id, &e.lname, &e.pname))
            .collect();
        for key in keys {
            self.send(ToCoordinator::Publish {
                key,
                value: launch.clone(),
            });
        }
    }

    /// `Drain`: asks, for each end, whether its peer was published by
    /// another launch; true while answers are awaited.
    fn tcpx_ask(&mut self, opts: &CheckpointOptions) -> bool {
        use crate::resources::inet::remote;
        let asks: Vec<(Vec<u8>, usize)> = self
            .tcpx
            .ends
            .iter()
            .enumerate()
            .map(|(i, e)| (remote::ckpt_key(opts.id, &e.pname, &e.lname), i))
            .collect();
        if asks.is_empty() {
            return false;
        }
        for (key, i) in asks {
            self.tcpx.asked.insert(key.clone(), i);
            self.send(ToCoordinator::Query { key });
        }
        self.tcpx.waiting = Some(opts.id);
        true
    }

    /// A name service answer during `Drain`.
    fn tcpx_answer(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        use crate::resources::inet::remote;
        let Some(i) = self.tcpx.asked.remove(&key) else {
            return;
        };
        if let Some(peer_launch) = value.filter(|v| !v.is_empty()) {
            let e = &self.tcpx.ends[i];
            let peer_launch = String::from_utf8_lossy(&peer_launch).into_owned();
            if peer_launch != self.cfg.launch {
                debug!(
                    "pid {} fd {}: TCP {} -> {} is a connection to launch {peer_launch}",
                    e.pid, e.fd, e.lname, e.pname
                );
                let end = remote::RemoteEnd {
                    key: remote::conn_key(self.tcpx.generation, &e.lname, &e.pname),
                    listen: e.lname < e.pname,
                    peer_launch,
                    unsent: Vec::new(),
                };
                self.tcpx.found.insert(e.ino, end);
            }
        }
        if self.tcpx.asked.is_empty() {
            if let Some(id) = self.tcpx.waiting.take() {
                match self.tcpx_drain() {
                    Ok(()) => self.send(ToCoordinator::Reached {
                        id,
                        phase: Phase::Drain,
                    }),
                    Err(reason) => self.fail(id, reason.to_string()),
                }
            }
        }
    }

    /// Waits until the ends to other launches have no bytes in flight.
    fn tcpx_drain(&mut self) -> Result<(), BarrierError> {
        use crate::resources::inet::remote;
        let ends: Vec<&remote::Candidate> = self
            .tcpx
            .ends
            .iter()
            .filter(|e| self.tcpx.found.contains_key(&e.ino))
            .collect();
        if ends.is_empty() {
            return Ok(());
        }
        let held = remote::drain(&ends).map_err(BarrierError::Fds)?;
        for (ino, bytes) in held {
            if let Some(r) = self.tcpx.found.get_mut(&ino) {
                r.unsent = bytes;
            }
        }
        Ok(())
    }

    fn on_lost(&mut self, why: String) {
        if !self.frozen.is_empty() {
            warn!("coordinator lost during a checkpoint ({why}); resuming");
            self.abandon();
        }
        if let Some((id, _)) = &self.prepared {
            warn!(
                "coordinator lost before checkpoint {id} was committed ({why}); its images are dropped, the previous ones stay"
            );
            self.abandon();
        }
        if let Some(c) = self.conn.take() {
            c.shutdown();
        }
        self.conn_gen += 1;
        self.last_attempt = Instant::now();
        self.lost_since.get_or_insert_with(Instant::now);
        if self.halted && !self.killed {
            warn!("coordinator lost between halt and kill ({why}); killing the halted computation");
            self.killed = true;
            self.thaw_all();
            self.kill_computation();
        } else if self.killed {
            debug!("coordinator connection closed after the kill ({why})");
        } else if !self.done.load(Ordering::Relaxed) {
            warn!("coordinator connection lost ({why}); the computation keeps running");
        }
    }

    /// One attempt to reach a coordinator again (a restarted one included:
    /// the secret is read anew).
    fn try_reconnect(&mut self) {
        self.last_attempt = Instant::now();
        let mut cfg = self.cfg.clone();
        // cfg.generation is the last generation we committed: a new
        // coordinator continues from it.
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
            self.lost_since = None;
            self.announce_launch();
            self.last_list.clear();
            self.refresh_list();
        }
    }

    /// A restarted computation with no coordinator for its whole timeout
    /// ends, saying so: nothing could checkpoint or stop it any more.
    fn end_if_alone_too_long(&mut self) {
        let (Some(limit), Some(since)) = (self.cfg.alone_timeout, self.lost_since) else {
            return;
        };
        if self.conn.is_some() || self.killed || self.done.load(Ordering::Relaxed) {
            return;
        }
        if since.elapsed() < limit {
            return;
        }
        tracing::error!(
            "no coordinator at {} for {} s: ending the restarted computation (dmtcp-restart --keep-running-alone keeps it running without one)",
            self.cfg.addr,
            limit.as_secs()
        );
        self.killed = true;
        self.thaw_all();
        self.kill_computation();
    }

    /// Application API: tells new processes where the coordinator is.
    fn publish_coordinator(&mut self) {
        let pids: Vec<HostPid> = self.processes().into_iter().map(|(p, _)| p).collect();
        let a = &self.cfg.addr;
        self.agent.publish(&pids, &a.host, a.port, &self.cfg.secret);
    }

    /// Serves the coordinator until the computation ends.
    pub fn run(mut self) {
        self.announce_launch();
        self.refresh_list();
        self.publish_coordinator();
        let mut last_refresh = Instant::now();
        while !self.done.load(Ordering::Relaxed) {
            let ev = match self.stash.pop_front() {
                Some(e) => Ok(e),
                None => self.rx.recv_timeout(Duration::from_millis(500)),
            };
            match ev {
                Ok(Event::Coord(g, _)) | Ok(Event::Lost(g, _)) if g != self.conn_gen => {}
                Ok(Event::Coord(_, FromCoordinator::Barrier { phase, options })) => {
                    self.on_barrier(phase, options)
                }
                Ok(Event::Coord(_, FromCoordinator::Abort { id, reason })) => {
                    warn!("checkpoint {id} abandoned: {reason}");
                    self.abandon();
                }
                Ok(Event::Coord(_, FromCoordinator::Commit { id })) => self.commit_prepared(id),
                Ok(Event::Coord(_, FromCoordinator::Precopy { id })) => {
                    debug!("checkpoint {id}: pre-copy asked for");
                    self.precopy_for = Some(id);
                }
                Ok(Event::Coord(_, FromCoordinator::Published { key, value })) => {
                    self.tcpx_answer(key, value)
                }
                Ok(Event::Coord(_, FromCoordinator::Halt)) => {
                    info!(
                        "halt requested by the coordinator: every process stopped before the kill"
                    );
                    self.halted = true;
                    self.halt_computation();
                    self.send(ToCoordinator::Halted);
                }
                Ok(Event::Coord(_, FromCoordinator::Kill)) => {
                    info!("kill requested by the coordinator");
                    self.killed = true;
                    self.thaw_all();
                    self.kill_computation();
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
            self.end_if_alone_too_long();
            if self.lifeline && !crate::resources::memory::lazy::busy() {
                if let Tree::Nsinit { ctrl, .. } = &mut self.tree {
                    match ctrl.lifeline(false) {
                        Ok(()) => debug!("memory in place: the computation may outlive us again"),
                        Err(e) => warn!("{e}"),
                    }
                }
                self.lifeline = false;
            }
            let refresh = last_refresh.elapsed() > Duration::from_secs(1);
            if refresh && self.frozen.is_empty() {
                self.refresh_list();
                last_refresh = Instant::now();
                // An attached tree ends when its last member is gone.
                if matches!(&self.tree, Tree::Attached(m) if m.is_empty()) {
                    info!("every attached process has ended");
                    self.done.store(true, Ordering::Relaxed);
                }
            }
            if self.frozen.is_empty() && (refresh || self.agent.pending()) {
                self.publish_coordinator();
            }
        }
        self.thaw_all();
    }
}

#[cfg(test)]
mod tests {
    use super::precopy_selection;

    const MIB: u64 = 1 << 20;

    fn picked(sizes: &[u64], min: u64) -> Vec<u32> {
        let procs = sizes
            .iter()
            .enumerate()
            .map(|(i, &m)| (i as u32, i as u32, m * MIB))
            .collect();
        let mut p: Vec<u32> = precopy_selection(procs, min * MIB)
            .into_iter()
            .map(|p| p.0)
            .collect();
        p.sort();
        p
    }

    #[test]
    fn one_process_against_the_threshold() {
        assert_eq!(picked(&[1024], 256), vec![0]);
        assert_eq!(picked(&[256], 256), vec![0]);
        assert!(picked(&[255], 256).is_empty());
    }

    #[test]
    fn many_small_processes_until_the_rest_is_below() {
        // 16 x 64 MiB: 13 pre-copied, 192 MiB left to the forks.
        assert_eq!(picked(&[64; 16], 256).len(), 13);
        // The largest first; small ones left.
        assert_eq!(picked(&[2, 1024, 3, 100], 256), vec![1]);
        assert_eq!(picked(&[200, 100, 50], 256), vec![0]);
        assert!(picked(&[100, 100, 50], 256).is_empty());
    }

    #[test]
    fn all_when_asked() {
        assert_eq!(picked(&[1, 2], 0), vec![0, 1]);
    }
}
