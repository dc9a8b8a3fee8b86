//! The restart role (`dmtcp-restart`): recreating a checkpointed
//! computation from its images.
//!
//! [`run`] is the whole restart as `dmtcp-restart` asks for it: the images
//! are validated first; then a fresh pid (and user) namespace gets one
//! parked shell per process with its original pid (`dmtcp-nsinit`), each
//! shell is turned into its process by
//! [`restore_process`](crate::restart::process::restore_process), and the
//! restarted computation is supervised exactly like a launched one.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use dmtcp_coordinator::client::StartOptions;
use dmtcp_image::{Codec, ImageChain, ImageReader, IpcState, Verify, WriteOptions};

use crate::coord_args::CoordArgs;
use crate::kernel::pid::{HostPid, VirtPid};
use crate::kernel::procfs;
use crate::resources::memory::lazy;
use crate::resources::memory::ParkedMemory;
use crate::resources::pty;
use crate::resources::sysv::{self as sysvipc, ShmBytes};
use crate::restart::creds::{self, Granted, Owner, Restarter};
use crate::restart::process as restore;
use crate::restart::stop;
use crate::roles::nsinit::{InitReply, InitRequest, ShellPlan};
use crate::roles::nsinit_ctrl::NsinitCtrl;
use crate::roles::session::{self, Session, SessionConfig};
use crate::roles::supervise;

/// What `dmtcp-restart` was asked to restart, and how.
#[derive(Debug)]
pub struct Plan {
    /// The coordinator to join (or start).
    pub coord: CoordArgs,
    /// Where later checkpoints go (default: the coordinator's directory).
    pub ckpt_dir: Option<PathBuf>,
    /// Later checkpoints are not compressed.
    pub no_gzip: bool,
    /// Later checkpoints are incremental.
    pub incremental: bool,
    /// Every page is copied before the program runs (no lazy restore).
    pub no_lazy: bool,
    /// One image (chain top) per process.
    pub images: Vec<PathBuf>,
    /// Leave every thread stopped at its checkpointed instruction, for a
    /// debugger (`--stop`, [`stop`](crate::restart::stop)).
    pub stop: bool,
    /// Restart even while processes of the images' computation still run:
    /// the restarted processes take fresh computation and launch ids
    /// (`--new-computation`).
    pub new_computation: bool,
    /// How long the restarted computation may be without a coordinator
    /// before it ends (`None`: `--keep-running-alone`).
    pub alone_timeout: Option<std::time::Duration>,
}

/// The images of one launch: each launch that joined the computation was
/// its own pid namespace, so it is restarted in one of its own. The launch
/// id comes from the image names (`None`: names without one, restarted
/// under a fresh id).
struct LaunchGroup {
    launch: Option<String>,
    paths: Vec<PathBuf>,
}

/// The launch an image belongs to: recorded in it (format 2.1), else
/// read from its name (2.0 images named with one); empty if neither says.
fn launch_of(c: &ImageChain) -> String {
    let m = c.top().meta();
    if !m.computation.launch.is_empty() {
        return m.computation.launch.clone();
    }
    c.top()
        .path()
        .file_name()
        .and_then(|n| dmtcp_image::parse_image_file_name(&n.to_string_lossy()))
        .filter(|(comp, _, vpid)| *comp == m.computation.id && *vpid == m.process.vpid)
        .map(|(_, launch, _)| launch)
        .unwrap_or_default()
}

fn group_by_launch(images: &[ImageChain]) -> Vec<LaunchGroup> {
    let mut groups: Vec<LaunchGroup> = Vec::new();
    for c in images {
        let path = c.top().path().to_path_buf();
        let launch = Some(launch_of(c)).filter(|l| !l.is_empty());
        match groups.iter_mut().find(|g| g.launch == launch) {
            Some(g) => g.paths.push(path),
            None => groups.push(LaunchGroup {
                launch,
                paths: vec![path],
            }),
        }
    }
    groups
}

/// Refuses, in one line naming them, to restart a computation whose
/// processes still run under this coordinator: two copies of one process
/// would share its pid and its image names.
fn refuse_if_running(cfg: &SessionConfig, computation: &str) -> anyhow::Result<()> {
    use dmtcp_protocol::{Reply, Request};
    let status = match dmtcp_coordinator::client::request(&cfg.addr, &cfg.secret, Request::Status) {
        Ok(Reply::Status(s)) => s,
        Ok(_) | Err(_) => return Ok(()),
    };
    if status.computation != computation || status.num_supervisors == 0 {
        return Ok(());
    }
    let procs = match dmtcp_coordinator::client::request(&cfg.addr, &cfg.secret, Request::List) {
        Ok(Reply::List(l)) => l,
        Ok(Reply::Launches(l)) => l.into_iter().map(|l| l.process).collect(),
        _ => Vec::new(),
    };
    let names: Vec<String> = procs
        .iter()
        .map(|p| {
            format!(
                "{} (pid {}, host pid {} on {})",
                p.prog, p.vpid, p.host_pid, p.host
            )
        })
        .collect();
    bail!(
        "computation {computation} is still running under the coordinator at {}: {}; end it first (dmtcp-command --kill) or restart it as a new computation (--new-computation)",
        cfg.addr,
        if names.is_empty() {
            format!("{} supervisor(s)", status.num_supervisors)
        } else {
            names.join(", ")
        }
    )
}

/// Opens every image and checks its structure and metadata before anything
/// is created. Images of older checkpoints of the computation than the
/// newest one given (a process that ended before the newest checkpoint
/// leaves its older image behind, and `ckpt_*.dmtcp` takes it) are skipped,
/// and said so on stderr.
fn open_images(paths: &[PathBuf]) -> anyhow::Result<Vec<ImageChain>> {
    let mut all: Vec<(&PathBuf, ImageChain)> = Vec::new();
    for p in paths {
        // Copied restarts authenticate every page block before any process
        // is created; lazy ones check each block (crc and MAC) when it is
        // first brought in (docs/image-format.md, "Authentication").
        let verify = if lazy::enabled() {
            Verify::Layout
        } else {
            Verify::Full
        };
        let chain = ImageChain::open_with(p, verify).map_err(|e| anyhow!("{e}"))?;
        let m = chain.top().meta();
        if let Some((_, first)) = all.first() {
            let first = first.top();
            if first.meta().computation.id != m.computation.id {
                bail!(
                    "{}: belongs to computation {}, not {} like {}",
                    p.display(),
                    m.computation.id,
                    first.meta().computation.id,
                    first.path().display()
                );
            }
        }
        all.push((p, chain));
    }
    // The newest complete set: a 2.1 image names every process of its
    // launch's checkpoint; a generation some of whose images are missing is
    // passed over for an older complete one (2.0 images name none: their
    // generation counts as complete).
    let mut gens: Vec<u64> = all
        .iter()
        .map(|(_, c)| c.top().meta().computation.generation)
        .collect();
    gens.sort_unstable_by(|a, b| b.cmp(a));
    gens.dedup();
    let mut chosen = None;
    let mut incomplete = Vec::new();
    for &g in &gens {
        let of_g: Vec<&ImageChain> = all
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c.top().meta().computation.generation == g)
            .collect();
        let present: HashSet<(String, u32)> = of_g
            .iter()
            .map(|c| (launch_of(c), c.top().meta().process.vpid))
            .collect();
        let mut missing: Vec<String> = of_g
            .iter()
            .flat_map(|c| c.top().meta().computation.set.iter())
            .filter(|m| !present.contains(&(m.launch.clone(), m.vpid)))
            .map(|m| format!("pid {} of launch {}", m.vpid, m.launch))
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            chosen = Some(g);
            break;
        }
        incomplete.push(format!(
            "checkpoint {g} is incomplete (no image of {})",
            missing.join(", ")
        ));
    }
    let Some(newest) = chosen else {
        bail!(
            "no complete checkpoint among the images: {}",
            incomplete.join("; ")
        );
    };
    for why in &incomplete {
        eprintln!("dmtcp-restart: {why}; restarting checkpoint {newest}");
    }
    let mut out: Vec<ImageChain> = Vec::new();
    let mut vpids = HashSet::new();
    for (p, chain) in all {
        let m = chain.top().meta();
        if m.computation.generation != newest {
            eprintln!(
                "dmtcp-restart: skipping {} (pid {}, checkpoint {}): restarting checkpoint {newest}, the newest complete one given",
                p.display(),
                m.process.vpid,
                m.computation.generation
            );
            continue;
        }
        if !vpids.insert((launch_of(&chain), m.process.vpid)) {
            bail!("{}: pid {} given twice", p.display(), m.process.vpid);
        }
        out.push(chain);
    }
    // Parents before children, so shells can be created in order.
    out.sort_by_key(|c| c.top().meta().process.vpid);
    Ok(out)
}

/// The credentials of each image's process: what it recorded, never more
/// than we have and than the image file's owner had
/// ([`creds::grant`]); the first that cannot be given is refused in one
/// line.
fn grant_credentials(images: &[ImageChain]) -> anyhow::Result<Vec<Granted>> {
    let me = Restarter::current();
    images
        .iter()
        .map(|c| {
            let r = c.top();
            let st = r
                .file()
                .metadata()
                .map_err(|e| anyhow!("{}: {e}", r.path().display()))?;
            let owner = Owner::of_file(st.uid(), st.gid());
            creds::grant(
                &r.meta().process,
                &owner,
                &me,
                &r.path().display().to_string(),
            )
            .map_err(|e| anyhow!("{e}"))
        })
        .collect()
}

fn shell_plan(c: &ImageChain, granted: &Granted) -> ShellPlan {
    let r = c.top();
    let p = &r.meta().process;
    ShellPlan {
        vpid: p.vpid,
        vppid: p.vppid,
        vpgid: p.vpgid,
        vsid: p.vsid,
        zombie: p.zombie,
        cwd: p.cwd.clone(),
        umask: p.umask,
        rlimits: p.rlimits.clone(),
        fds: r.meta().fds.clone(),
        ctty_pty: p.ctty.as_ref().and_then(|c| c.pty),
        open_as: granted.open_as.clone(),
    }
}

/// The settings the computation's terminal had (saved from the first
/// process on a terminal outside the computation), applied to the terminal
/// dmtcp-restart runs on when it runs there in the foreground. Returns
/// whether they were.
fn restore_terminal_settings(images: &[&ImageReader]) -> bool {
    let Some(t) = images.iter().find_map(|r| {
        let c = r.meta().process.ctty.as_ref()?;
        c.pty.is_none().then_some(c.termios.as_ref()).flatten()
    }) else {
        return false;
    };
    match pty::apply_to_own_terminal(t) {
        Ok(true) => {
            tracing::debug!("terminal settings restored");
            true
        }
        Ok(false) => {
            tracing::info!(
                "terminal settings not restored: no controlling terminal, or not in its foreground"
            );
            false
        }
        Err(e) => {
            tracing::warn!("terminal settings not restored: {e}");
            false
        }
    }
}

/// Which process sets the foreground group of which terminal: for a pty of
/// the computation its session leader; for the terminal outside, the first
/// process that saw a group of the computation in the foreground, and only
/// when dmtcp-restart itself runs in its terminal's foreground (a restart
/// in the background must not take the terminal from the shell).
fn foreground_groups(images: &[&ImageReader]) -> std::collections::HashMap<u32, u32> {
    let mut out = std::collections::HashMap::new();
    let mut outside_done = !pty::in_foreground();
    for r in images {
        let p = &r.meta().process;
        let Some(c) = p.ctty.as_ref().filter(|c| c.fg_vpgid != 0) else {
            continue;
        };
        if c.pty.is_some() && p.vsid == p.vpid {
            out.insert(p.vpid, c.fg_vpgid);
        } else if c.pty.is_none() && !outside_done && p.zombie.is_none() {
            out.insert(p.vpid, c.fg_vpgid);
            outside_done = true;
        }
    }
    out
}

/// The host pid of the shell that has pid `vpid` in the namespace.
fn host_pid_of(nsinit: HostPid, vpid: VirtPid) -> Option<HostPid> {
    procfs::descendants(nsinit).into_iter().find(|p| {
        procfs::status(*p)
            .ok()
            .and_then(|kv| procfs::innermost_pid(&kv))
            == Some(vpid)
    })
}

/// Restarts the computation of `plan.images` and supervises it until it
/// ends; returns the exit code for `dmtcp-restart`.
///
/// Images of several launches (separate `dmtcp-run`s that joined one
/// coordinator) are restarted each launch in a pid namespace of its own,
/// by a supervisor of its own: one process per launch, forked here before
/// any thread exists, each joining the coordinator like the launch did.
pub fn run(plan: Plan) -> anyhow::Result<i32> {
    if plan.no_lazy {
        lazy::disable();
    }
    let images = open_images(&plan.images)?;
    // Who each process will be, decided (or refused) for every image before
    // anything runs (each launch decides again for its own).
    grant_credentials(&images)?;
    let mut cfg = session_config(&plan, &images)?;
    let computation = images[0].top().meta().computation.id.clone();
    if plan.new_computation {
        cfg.computation = None;
    } else {
        refuse_if_running(&cfg, &computation)?;
    }
    let groups = group_by_launch(&images);
    drop(images);
    let launch_of = |g: &LaunchGroup| match &g.launch {
        Some(l) if !plan.new_computation => l.clone(),
        _ => session::new_launch_id(),
    };
    let mut children = Vec::new();
    for g in &groups[1..] {
        let mut cfg = cfg.clone();
        cfg.launch = launch_of(g);
        // SAFETY: fork with no other thread in this process (none is started
        // before the restore); the child only runs the restart of its group
        // and exits.
        match unsafe { libc::fork() } {
            -1 => bail!(
                "fork for launch {}: {}",
                cfg.launch,
                std::io::Error::last_os_error()
            ),
            0 => {
                let code = match restart_launch(cfg, &g.paths, plan.stop) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("dmtcp-restart: {e:#}");
                        1
                    }
                };
                std::process::exit(code);
            }
            pid => children.push(pid),
        }
    }
    cfg.launch = launch_of(&groups[0]);
    let first = restart_launch(cfg, &groups[0].paths, plan.stop);
    // The other launches' supervisors: the restart ends with the last one.
    let mut code = 0;
    for pid in children {
        let mut st = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        if unsafe { libc::waitpid(pid, &mut st, 0) } == pid {
            let c = if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            };
            if code == 0 {
                code = c;
            }
        }
    }
    match first {
        Ok(c) if c != 0 => Ok(c),
        Ok(_) => Ok(code),
        Err(e) => Err(e),
    }
}

/// Restarts the processes of one launch and supervises them until they end.
fn restart_launch(cfg: SessionConfig, paths: &[PathBuf], stop: bool) -> anyhow::Result<i32> {
    let images = open_images(paths)?;
    let grants = grant_credentials(&images)?;
    let (conn, computation, _) = session::connect(&cfg)?;

    supervise::block_signals()?;
    // Its threads start here: after the signals the supervisor reads from
    // a signalfd are blocked (threads inherit the mask), before the restore
    // pins us to one CPU (threads inherit that too).
    if lazy::enabled() {
        if let Err(e) = lazy::prepare() {
            tracing::debug!("no lazy restore: {e}");
            lazy::disable();
        }
    }
    if !lazy::enabled() {
        // Copied restart: every page authenticated before any process exists.
        images
            .iter()
            .try_for_each(|c| c.verify_all().map_err(|e| anyhow!("{e}")))?;
    }
    let tops: Vec<&ImageReader> = images.iter().map(|c| c.top()).collect();
    let shared_memory = restore::park_shared_memory(&tops);
    let ipc = load_ipc(&tops)?;
    let (nsinit, mut ctrl) = start_shells(&images, &grants, &shared_memory, ipc.as_ref())?;
    let kill_ns = || supervise::kill_and_reap(nsinit);
    let on_terminal = restore_terminal_settings(&tops);
    let restored = match restore_all(&images, &grants, nsinit, &shared_memory, ipc.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            kill_ns();
            return Err(e);
        }
    };
    let held = if stop {
        held_processes(&images, &restored)
    } else {
        Vec::new()
    };
    let started =
        start_computation(restored, &mut ctrl, ipc.as_ref(), on_terminal, stop).and_then(|l| {
            if stop {
                stop::wait_stopped(&held)?;
                stop::announce(&held);
                stop::watch(held)?;
            }
            Ok(l)
        });
    let lifeline = match started {
        Ok(l) => l,
        Err(e) => {
            kill_ns();
            return Err(e);
        }
    };
    let session = Session::new(cfg, nsinit, ctrl, conn, computation).with_lifeline(lifeline);
    Ok(supervise::supervise(session, nsinit))
}

/// The coordinator to join (started if need be) and how later checkpoints
/// are written.
fn session_config(plan: &Plan, images: &[ImageChain]) -> anyhow::Result<SessionConfig> {
    let first = images[0].top().meta().computation.clone();
    // The computation keeps its directory: unless one is given, its next
    // checkpoints (and the restart script of a coordinator we start) go
    // where its images came from, not to our current directory.
    let ckpt_dir = plan
        .ckpt_dir
        .as_deref()
        .map(supervise::absolute)
        .or_else(|| {
            plan.images
                .first()
                .and_then(|p| supervise::absolute(p).parent().map(|d| d.to_path_buf()))
        });
    let (addr, secret) = plan.coord.coordinator(
        "dmtcp-restart",
        StartOptions {
            ckpt_dir: ckpt_dir.clone(),
            interval: None,
            exit_on_last: true,
        },
    )?;
    Ok(SessionConfig {
        addr,
        secret,
        computation: Some(first.id.clone()),
        generation: first.generation,
        write: WriteOptions {
            codec: if plan.no_gzip {
                Codec::None
            } else {
                images[0].top().codec()
            },
            ..WriteOptions::default()
        },
        ckpt_dir,
        incremental: plan.incremental,
        launch: String::new(),
        alone_timeout: plan.alone_timeout,
    })
}

/// The SysV IPC objects (recorded in one image) with every segment's bytes.
fn load_ipc(tops: &[&ImageReader]) -> std::io::Result<Option<(IpcState, ShmBytes)>> {
    tops.iter()
        .find_map(|r| r.meta().ipc.clone().map(|s| (*r, s)))
        .map(|(r, s)| {
            s.shm
                .iter()
                .map(|g| sysvipc::load_pages(r, g))
                .collect::<std::io::Result<Vec<_>>>()
                .map(|bytes| (s, bytes))
        })
        .transpose()
}

/// Starts nsinit in fresh namespaces with one parked shell per image;
/// returns once every shell is ready.
fn start_shells(
    images: &[ImageChain],
    grants: &[Granted],
    shared_memory: &[ParkedMemory],
    ipc: Option<&(IpcState, ShmBytes)>,
) -> anyhow::Result<(HostPid, NsinitCtrl)> {
    let shells = images
        .iter()
        .zip(grants)
        .map(|(c, g)| shell_plan(c, g))
        .collect();
    let (nsinit, reply, ctrl) = supervise::start_nsinit(
        &InitRequest::Restore {
            shells,
            shared_memory: shared_memory.to_vec(),
            ipc: ipc.is_some(),
            // The latest clocks any process was captured with: no process
            // sees its clock go back.
            clocks: images
                .iter()
                .filter_map(|c| c.top().meta().clocks)
                .reduce(|a, b| dmtcp_image::Clocks {
                    monotonic_ns: a.monotonic_ns.max(b.monotonic_ns),
                    boottime_ns: a.boottime_ns.max(b.boottime_ns),
                }),
        },
        ipc.map(|(s, b)| (s, b)),
    )?;
    let kill_ns = || supervise::kill_and_reap(nsinit);
    // Corrupt page data found while a lazy restore brings pages in: the
    // program must not run on without them.
    lazy::on_fatal(move |msg| {
        // SAFETY: kill with integer arguments; nsinit is our child, and its
        // death takes every process of the namespace with it.
        unsafe { libc::kill(nsinit.0, libc::SIGKILL) };
        eprintln!("dmtcp-restart: {msg}; restart abandoned, the computation was stopped");
        std::process::exit(1);
    });
    match reply {
        InitReply::ShellsReady { .. } => Ok((nsinit, ctrl)),
        InitReply::Failed(msg) => {
            kill_ns();
            bail!("{msg}");
        }
        other => {
            kill_ns();
            bail!("unexpected answer from dmtcp-nsinit: {other:?}");
        }
    }
}

/// Turns every shell (but zombies') into its process, each left stopped.
fn restore_all(
    images: &[ImageChain],
    grants: &[Granted],
    nsinit: HostPid,
    shared_memory: &[ParkedMemory],
    ipc: Option<&(IpcState, ShmBytes)>,
) -> anyhow::Result<Vec<restore::Restored>> {
    let tops: Vec<&ImageReader> = images.iter().map(|c| c.top()).collect();
    let shm_sizes: std::collections::HashMap<i32, u64> = ipc
        .iter()
        .flat_map(|(s, _)| s.shm.iter().map(|g| (g.perm.id, g.size)))
        .collect();
    let foreground = foreground_groups(&tops);
    let mut restored = Vec::with_capacity(images.len());
    for (r, granted) in images
        .iter()
        .zip(grants)
        .filter(|(c, _)| c.top().meta().process.zombie.is_none())
    {
        let vpid = VirtPid::from_image(r.top().meta().process.vpid);
        let fg = foreground.get(&r.top().meta().process.vpid).copied();
        let res = host_pid_of(nsinit, vpid)
            .ok_or_else(|| anyhow!("shell for pid {vpid} not found"))
            .and_then(|pid| {
                restore::restore_process(pid, r, shared_memory, fg, &shm_sizes, granted)
                    .map_err(|e| anyhow!("{e}"))
            });
        match res {
            Ok(p) => restored.push(p),
            Err(e) => return Err(e.context(format!("{}", r.top().path().display()))),
        }
    }
    Ok(restored)
}

/// The processes `restored` (restored from the images that are not
/// zombies', in order) as `--stop` leaves them.
fn held_processes(images: &[ImageChain], restored: &[restore::Restored]) -> Vec<stop::Held> {
    images
        .iter()
        .map(|c| &c.top().meta().process)
        .filter(|p| p.zombie.is_none())
        .zip(restored)
        .map(|(p, r)| stop::Held {
            pid: r.pid(),
            vpid: VirtPid::from_image(p.vpid),
            exe: p.exe.clone(),
        })
        .collect()
}

/// Lets every restored process run at once (with `stop`, each enters a
/// group stop instead, before it runs any instruction), then finishes what needs them
/// running (background page fill, SIGWINCH, removal of SysV segments
/// marked for it). Returns whether the computation's life is tied to ours
/// until the lazy restore is done.
fn start_computation(
    restored: Vec<restore::Restored>,
    ctrl: &mut NsinitCtrl,
    ipc: Option<&(IpcState, ShmBytes)>,
    on_terminal: bool,
    stop: bool,
) -> anyhow::Result<bool> {
    // Pages still to come exist only in this process from now on.
    let lifeline = lazy::busy();
    if lifeline {
        if let Err(e) = ctrl.lifeline(true) {
            bail!("{e}");
        }
    }
    if stop {
        for p in &restored {
            if let Err(e) = stop::queue_stop(p.pid()) {
                bail!("{e}");
            }
        }
    }
    // Every process is in place: the computation starts as a whole.
    for p in restored {
        if let Err(e) = p.release() {
            bail!("{e}");
        }
    }
    lazy::start_background();
    if on_terminal {
        // Another terminal, maybe of another size: full-screen programs
        // redraw on SIGWINCH.
        if let Err(e) = pty::signal_foreground(libc::SIGWINCH) {
            tracing::warn!("SIGWINCH to the foreground group: {e}");
        }
    }
    // Segments removed while attached are removed again, now that the
    // restored processes hold them.
    let destroyed: Vec<i32> = ipc
        .iter()
        .flat_map(|(s, _)| s.shm.iter())
        .filter(|g| g.perm.mode & sysvipc::SHM_DEST != 0)
        .map(|g| g.perm.id)
        .collect();
    if !destroyed.is_empty() {
        if let Err(e) = ctrl.remove_shm(destroyed) {
            bail!("removing restored shared memory marked for removal: {e}");
        }
    }
    Ok(lifeline)
}
