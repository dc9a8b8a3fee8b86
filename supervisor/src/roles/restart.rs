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
use crate::resources::files;
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
    /// Leave files the computation wrote after the checkpoint as they are
    /// (`--no-truncate-files`, `DMTCP_NO_TRUNCATE_FILES`).
    pub no_truncate_files: bool,
    /// Root only: restore into the current pid namespace with the host pids
    /// of the images (`--no-pidns`), nsinit a child subreaper instead of
    /// pid 1 of a namespace ([`check_host_pids`]).
    pub no_pidns: bool,
    /// Processes of the whole image set when other `dmtcp-restart`
    /// commands restart the rest of it (`--set-size`; 0: not said).
    pub set_size: u32,
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
/// would share its pid and its image names. When the coordinator names
/// the launches (protocol 2.1), only a running launch that is one of
/// `ours` conflicts: the restart script restarts the launches of several
/// hosts with one `dmtcp-restart` per host, and the later ones join the
/// computation the first one brought back (issue 16).
fn refuse_if_running(
    cfg: &SessionConfig,
    computation: &str,
    ours: &HashSet<String>,
) -> anyhow::Result<()> {
    use dmtcp_protocol::{Reply, Request};
    let status = match dmtcp_coordinator::client::request(&cfg.addr, &cfg.secret, Request::Status) {
        Ok(Reply::Status(s)) | Ok(Reply::StatusProgress { status: s, .. }) => s,
        Ok(_) | Err(_) => return Ok(()),
    };
    if status.computation != computation || status.num_supervisors == 0 {
        return Ok(());
    }
    let procs = match dmtcp_coordinator::client::request(&cfg.addr, &cfg.secret, Request::List) {
        Ok(Reply::List(l)) => l,
        Ok(Reply::Launches(l)) => {
            let clash: Vec<_> = l
                .iter()
                .filter(|l| !l.launch.is_empty() && ours.contains(&l.launch))
                .map(|l| l.process.clone())
                .collect();
            let named = l.iter().any(|l| !l.launch.is_empty());
            if named && clash.is_empty() {
                return Ok(());
            }
            if named {
                clash
            } else {
                l.into_iter().map(|l| l.process).collect()
            }
        }
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

/// Files carry no bytes from the lost future: each file the computation had
/// open for writing is cut back to its checkpoint-time size where that is
/// safe (`files::cut_back`), once every process is restored and before
/// any runs (`ours`: their host pids, nsinit's and ours, which may hold
/// the files), with the access of the image's owner. Says which files
/// were cut.
fn cut_back_files(images: &[ImageChain], grants: &[Granted], ours: &[i32]) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for (c, g) in images.iter().zip(grants) {
        for e in &c.top().meta().fds {
            let dmtcp_image::FdKind::WrittenFile {
                path,
                size,
                dev,
                ino,
                ..
            } = &e.kind
            else {
                continue;
            };
            if !seen.insert((*dev, *ino)) {
                continue;
            }
            if let Some(a) = &g.open_as {
                crate::kernel::sys::set_fs_ids(a.uid, a.gid, &a.groups)?;
            }
            let r = files::cut_back(e, ours);
            if g.open_as.is_some() {
                crate::kernel::sys::set_fs_ids(0, 0, &own_groups()?)?;
            }
            match r {
                Ok(files::Cut::Cut { from }) => eprintln!(
                    "dmtcp-restart: {path}: cut back from {from} to {size} bytes (written after the checkpoint; --no-truncate-files keeps them)"
                ),
                Ok(files::Cut::Kept(why)) => {
                    tracing::debug!("{path}: not cut back to {size} bytes: {why}")
                }
                Err(err) => tracing::warn!("{path}: not cut back to {size} bytes: {err}"),
            }
        }
    }
    Ok(())
}

/// Our supplementary groups.
fn own_groups() -> anyhow::Result<Vec<u32>> {
    Ok(nix::unistd::getgroups()
        .map_err(|e| anyhow!("getgroups: {e}"))?
        .iter()
        .map(|g| g.as_raw())
        .collect())
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
        comm: p.comm.clone(),
        cwd: p.cwd.clone(),
        umask: p.umask,
        rlimits: p.rlimits.clone(),
        fds: r.meta().fds.clone(),
        ctty_pty: p.ctty.as_ref().and_then(|c| c.pty),
        open_as: granted.open_as.clone(),
        passcred_fds: r.meta().passcred_fds.clone(),
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

/// `--no-pidns`: choosing pids in the current pid namespace (clone3 with
/// `set_tid`) takes CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE over it, i.e.
/// root; refused in one line otherwise.
fn may_choose_host_pids() -> anyhow::Result<()> {
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_CHECKPOINT_RESTORE: u64 = 1 << 40;
    let eff = procfs::status(HostPid(std::process::id() as i32))
        .map(|st| procfs::hex_field(&st, "CapEff"))
        .unwrap_or(0);
    if eff & (CAP_SYS_ADMIN | CAP_CHECKPOINT_RESTORE) == 0 {
        bail!(
            "--no-pidns needs root: restoring processes with their host pids in the current pid namespace takes CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, which uid {} does not have here; restart without --no-pidns (a pid namespace of the computation's own, same pids)",
            nix::unistd::geteuid()
        );
    }
    Ok(())
}

/// `--no-pidns`, before anything is created: every image must hold host
/// pids (its process ran in the namespace we are in: a tree attached with
/// `dmtcp-attach`, or restarted with `--no-pidns`; a launched computation's
/// pids are its own namespace's), and every pid and thread id they name
/// must be free here. Refused in one line naming each busy pid and the
/// process holding it.
fn check_host_pids(images: &[ImageChain]) -> anyhow::Result<()> {
    // A tree just killed (`dmtcp-command --kill`) leaves zombies until
    // their parent, often init, reaps them: give those a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match busy_host_pids(images)? {
            busy if busy.is_empty() => return Ok(()),
            busy if busy.iter().all(|(_, zombie)| *zombie)
                && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            busy => {
                let names: Vec<String> = busy.into_iter().map(|(b, _)| b).collect();
                bail!(
                    "--no-pidns: {}; end it or restart without --no-pidns",
                    names.join(", ")
                );
            }
        }
    }
}

/// The pids and thread ids of `images` in use here, each described with
/// its holder, and whether that holder is a zombie.
fn busy_host_pids(images: &[ImageChain]) -> anyhow::Result<Vec<(String, bool)>> {
    let mut busy = Vec::new();
    for c in images {
        let meta = c.top().meta();
        let p = &meta.process;
        if p.vpid != p.host_pid {
            bail!(
                "{}: --no-pidns restores only images whose pids are host pids (a tree attached with dmtcp-attach, or restarted with --no-pidns); pid {} ({}) ran as host pid {} in a pid namespace of its computation: restart without --no-pidns",
                c.top().path().display(),
                p.vpid,
                p.comm,
                p.host_pid
            );
        }
        let mut ids = vec![p.vpid];
        ids.extend(meta.threads.iter().map(|t| t.vtid).filter(|&t| t != p.vpid));
        for id in ids {
            if let Some((holder, zombie)) = pid_holder(id) {
                busy.push((
                    format!("pid {id} (of {}) is in use by {holder}", p.comm),
                    zombie,
                ));
            }
        }
    }
    Ok(busy)
}

/// Who holds pid (or thread id) `id` in our pid namespace: "process P
/// (comm)", or "thread T of process P (comm)", and whether it is a zombie;
/// `None` when it is free.
fn pid_holder(id: u32) -> Option<(String, bool)> {
    let st = match procfs::status(HostPid(id as i32)) {
        Ok(st) => st,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(_) => return Some((format!("process {id}"), false)),
    };
    let zombie = procfs::field(&st, "State").is_some_and(|s| s.starts_with('Z'));
    let name = procfs::field(&st, "Name").unwrap_or_default().to_string();
    let tgid = procfs::field(&st, "Tgid").and_then(|t| t.parse::<u32>().ok());
    let holder = match tgid {
        Some(t) if t != id => {
            let leader = procfs::comm(HostPid(t as i32), None).unwrap_or(name);
            format!("thread {id} of process {t} ({leader})")
        }
        _ if zombie => format!(
            "process {id} ({name}, a zombie its parent {} has not reaped)",
            procfs::field(&st, "PPid").unwrap_or("?")
        ),
        _ => format!("process {id} ({name})"),
    };
    Some((holder, zombie))
}

/// The host pid of the shell that has pid `vpid` in the namespace
/// (without namespaces: the kernel pid nsinit reported for it).
fn host_pid_of(nsinit: HostPid, vpid: VirtPid) -> Option<HostPid> {
    if crate::kernel::pid::virt::enabled() {
        return Some(HostPid(crate::kernel::pid::virt::real_of(vpid.0)));
    }
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
/// The computation's `--sandbox`, from its images: it is reinstalled in
/// every process and recorded again at later checkpoints. Only the user who
/// ran the sandboxed `dmtcp-run` may restart it.
fn sandbox_of_images(images: &[ImageChain]) -> anyhow::Result<()> {
    for c in images {
        let meta = c.top().meta();
        if let Some((info, prog)) = crate::resources::seccomp::sandbox_of(&meta.security) {
            let uid = nix::unistd::getuid().as_raw();
            if info.owner_uid != uid {
                bail!(
                    "{}: the computation runs in a sandbox set up by uid {}; restarting it as \
                     uid {uid} is refused",
                    c.top().path().display(),
                    info.owner_uid
                );
            }
            crate::resources::seccomp::set_sandbox(info, prog);
        }
    }
    Ok(())
}

pub fn run(plan: Plan) -> anyhow::Result<i32> {
    crate::resources::files::hold_closed_stdio();
    if plan.no_pidns {
        may_choose_host_pids()?;
    }
    if plan.no_lazy {
        lazy::disable();
    }
    let images = open_images(&plan.images)?;
    let no_namespaces = images
        .iter()
        .any(|c| c.top().meta().computation.no_namespaces);
    if no_namespaces {
        if plan.no_pidns {
            bail!(
                "--no-pidns: {} was checkpointed without namespaces (virtual pids): restart it without --no-pidns",
                images[0].top().path().display()
            );
        }
        // The processes take the pids the kernel gives them; the program
        // keeps seeing its old ones (the inject library's pid table).
        crate::roles::spawn::set_host_pids();
        crate::kernel::pid::virt::enable();
        lazy::disable();
    }
    if plan.no_pidns {
        check_host_pids(&images)?;
        crate::roles::spawn::set_host_pids();
        // A lazy restore ties the computation's life to ours through nsinit
        // as pid 1 (its death ends the namespace): not without one.
        lazy::disable();
    }
    if !no_namespaces {
        supervise::check_namespaces()?;
    }
    sandbox_of_images(&images)?;
    // Who each process will be, decided (or refused) for every image before
    // anything runs (each launch decides again for its own).
    grant_credentials(&images)?;
    let mut cfg = session_config(&plan, &images)?;
    let computation = images[0].top().meta().computation.id.clone();
    if plan.new_computation {
        cfg.computation = None;
    } else {
        let ours: HashSet<String> = images.iter().map(launch_of).collect();
        refuse_if_running(&cfg, &computation, &ours)?;
    }
    let groups = group_by_launch(&images);
    drop(images);
    let launch_of = |g: &LaunchGroup| match &g.launch {
        Some(l) if !plan.new_computation => l.clone(),
        _ => session::new_launch_id(),
    };
    let _ = RESTART_GROUPS.set(RestartGroups {
        token: session::new_launch_id(),
        groups: groups.len() as u32,
        set_size: plan.set_size,
    });
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
                let r = restart_launch(cfg, &g.paths, plan.stop, plan.no_truncate_files);
                lazy::hold_if_fatal();
                let code = match r {
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
    let first = restart_launch(cfg, &groups[0].paths, plan.stop, plan.no_truncate_files);
    lazy::hold_if_fatal();
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
fn restart_launch(
    cfg: SessionConfig,
    paths: &[PathBuf],
    stop: bool,
    no_truncate_files: bool,
) -> anyhow::Result<i32> {
    let images = open_images(paths)?;
    let grants = grant_credentials(&images)?;
    let (mut conn, computation, _) = session::connect(&cfg)?;
    if conn.coordinator_minor() >= 1 {
        // The rendezvous of TCP connections between launches, and plugins'
        // RESTART barriers, wait for other launches, whose restarts (other
        // dmtcp-restart commands) ask the coordinator whether their own
        // launch still runs: say at once which launch and processes we are
        // bringing back (host pid 0 until they run).
        conn.send(&dmtcp_protocol::ToCoordinator::Launch {
            id: cfg.launch.clone(),
        })?;
        let host = session::hostname();
        conn.send(&dmtcp_protocol::ToCoordinator::Processes(
            images
                .iter()
                .map(|c| {
                    let p = &c.top().meta().process;
                    dmtcp_protocol::ProcEntry {
                        vpid: p.vpid,
                        host_pid: 0,
                        prog: p.comm.clone(),
                        host: host.clone(),
                    }
                })
                .collect(),
        ))?;
    }
    // TCP connections to other launches of the computation: rebuilt with
    // them through the coordinator before nsinit opens any fd; nsinit
    // inherits the sockets (`inherited` in their fd entries).
    let rebuilt = crate::resources::inet::remote::rendezvous(
        &mut conn,
        images
            .iter()
            .flat_map(|c| c.top().meta().fds.iter().map(|e| &e.kind)),
    )?;
    let mut inherited = std::collections::HashMap::new();
    let mut held_for_nsinit = Vec::new();
    for (id, sock) in rebuilt {
        let fd = crate::kernel::sys::dup_inheritable(&sock, 600)?;
        inherited.insert(id, std::os::fd::AsRawFd::as_raw_fd(&fd));
        held_for_nsinit.push(fd);
    }

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
    let started = start_shells(&images, &grants, &shared_memory, ipc.as_ref(), &inherited);
    // nsinit holds them now (or failed).
    drop(held_for_nsinit);
    let (nsinit, mut ctrl) = started?;
    let kill_ns = || supervise::kill_and_reap(nsinit);
    let on_terminal = restore_terminal_settings(&tops);
    let restored = match restore_all(&images, &grants, nsinit, &shared_memory, ipc.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            kill_ns();
            return Err(e);
        }
    };
    if crate::kernel::pid::virt::enabled() {
        if let Err(e) = write_pid_tables(&images, &restored) {
            kill_ns();
            return Err(e);
        }
    }
    // Every process is in place (none runs yet): only now, so that a
    // restart that fails changes no file, cut back what was written after
    // the checkpoint. The computation's own processes hold those files.
    if !no_truncate_files && !files::truncation_disabled() {
        let mut ours: Vec<i32> = restored.iter().map(|r| r.pid().0).collect();
        ours.extend([nsinit.0, std::process::id() as i32]);
        if let Err(e) = cut_back_files(&images, &grants, &ours) {
            kill_ns();
            return Err(e);
        }
    }
    let held = if stop {
        held_processes(&images, &restored)
    } else {
        Vec::new()
    };
    let mut restored = restored;
    let (mut hooks, early) = restart_hooks(&mut restored, &cfg, &mut conn);
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
    crate::hooks::running(&mut hooks);
    let session =
        Session::new_after(cfg, nsinit, ctrl, conn, computation, early).with_lifeline(lifeline);
    Ok(supervise::supervise(session, nsinit))
}

/// Without namespaces: every restored process gets the table of the
/// computation's (virtual, real) pids and tids in its state page before
/// it runs. A process without the inject library cannot translate: it
/// sees its new pids (said on stderr).
fn write_pid_tables(images: &[ImageChain], restored: &[restore::Restored]) -> anyhow::Result<()> {
    let pairs = crate::kernel::pid::virt::pairs();
    tracing::debug!("pid table (virtual, real): {pairs:?}");
    let live = images
        .iter()
        .map(|c| &c.top().meta().process)
        .filter(|p| p.zombie.is_none());
    let mut first = None;
    for (p, r) in live.zip(restored) {
        let pid = r.pid();
        let Some(addr) = crate::agent::find_state(pid) else {
            // Caught just after an exec, before its library started: that
            // library reads the table from the file written below.
            let coming = procfs::maps(pid).is_ok_and(|m| crate::agent::library_coming(pid, &m));
            if !coming && pairs.iter().any(|&(v, _)| v == p.vpid as i32) {
                eprintln!(
                    "dmtcp-restart: pid {} ({}) runs without the inject library: it sees its new pid {pid}",
                    p.vpid, p.comm
                );
            }
            continue;
        };
        let mem = procfs::Mem::open(pid, true).map_err(|e| anyhow!("pid {}: {e}", p.vpid))?;
        crate::agent::set_pid_map(&mem, addr, &pairs)
            .map_err(|e| anyhow!("pid {} ({}): the pid table: {e}", p.vpid, p.comm))?;
        first.get_or_insert((pid, addr));
        // glibc's own copy of each thread's tid (pthread_kill, raise).
        if let Some(off) = crate::agent::tid_offset(&mem, addr) {
            for t in &meta_of(images, p.vpid).threads {
                let Some(&fs_base) = t.regs.get(FS_BASE) else {
                    continue;
                };
                let real = crate::kernel::pid::virt::real_of(t.vtid as i32);
                if fs_base == 0 || real == t.vtid as i32 {
                    continue;
                }
                mem.write(
                    crate::kernel::pid::RemoteAddr(fs_base + off),
                    &real.to_le_bytes(),
                )
                .map_err(|e| anyhow!("pid {} thread {}: its tid in glibc: {e}", p.vpid, t.vtid))?;
            }
        }
    }
    if let Some((pid, addr)) = first {
        write_exec_table(pid, addr);
    }
    Ok(())
}

/// Programs exec'd from now on map a state page of their own: they take
/// the table from a file in the private runtime directory, named after the
/// key the computation's environment holds (`abi::VPID_KEY_ENV`, given at
/// launch). A failure is logged: those programs would see kernel pids.
fn write_exec_table(pid: HostPid, addr: crate::kernel::pid::RemoteAddr) {
    use crate::agent::abi;
    let result = (|| -> anyhow::Result<Option<PathBuf>> {
        let Some(key) = procfs::env_var(pid, abi::VPID_KEY_ENV)? else {
            return Ok(None);
        };
        if !abi::vpid_key_ok(&key) {
            return Ok(None);
        }
        let mem = procfs::Mem::open(pid, false)?;
        let bytes = crate::agent::exec_table_file(&mem, addr)?;
        let path = dmtcp_protocol::runtime::dir()?.join(format!("{}{key}", abi::VPID_FILE_PREFIX));
        dmtcp_protocol::runtime::write_private(&path, &bytes, 0o600)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(Some(path))
    })();
    match result {
        Ok(Some(path)) => tracing::debug!("pid table for exec'd programs: {}", path.display()),
        Ok(None) => tracing::debug!(
            "no {} in the computation's environment: programs exec'd after the restart see kernel pids",
            abi::VPID_KEY_ENV
        ),
        Err(e) => tracing::warn!(
            "the pid table for programs exec'd after the restart: {e}; they will see kernel pids"
        ),
    }
}

/// `fs_base` in `struct user_regs_struct` (27 words), x86-64.
const FS_BASE: usize = 21;

fn meta_of(images: &[ImageChain], vpid: u32) -> &dmtcp_image::ProcessImage {
    images
        .iter()
        .map(|c| c.top().meta())
        .find(|m| m.process.vpid == vpid)
        .expect("an image of every restored process")
}

/// Plugins: the hook threads of the restored processes run RESTART (with
/// the new coordinator published, for publish/subscribe) before any other
/// thread runs. A failure is reported; the computation starts anyway.
/// Also returns the coordinator's frames read while at a RESTART barrier,
/// for the session.
fn restart_hooks(
    restored: &mut [restore::Restored],
    cfg: &SessionConfig,
    conn: &mut dmtcp_coordinator::client::Connection,
) -> (
    Vec<crate::hooks::HookProc>,
    Vec<dmtcp_protocol::FromCoordinator>,
) {
    let pids: Vec<HostPid> = restored.iter().map(|r| r.pid()).collect();
    let mut hooks = crate::hooks::find(&pids);
    let minor = conn.coordinator_minor();
    let mut global = RESTART_GROUPS
        .get()
        .filter(|_| minor >= 3)
        .map(|g| RestartBarrier {
            conn,
            token: g.token.clone(),
            groups: g.groups,
            // 2.4: the barrier spans the whole image set.
            set: (minor >= 4).then_some((pids.len() as u32, g.set_size)),
            kept: Vec::new(),
        });
    if hooks.is_empty() {
        // Other launch groups (of this dmtcp-restart or, 2.4, of the image
        // set) may wait at a RESTART barrier: we are done.
        if let Some(g) = global.as_mut() {
            if g.groups > 1 || g.set.is_some() {
                use crate::hooks::Global;
                g.done(crate::agent::abi::hook::MOMENT_RESTART);
            }
        }
        return (hooks, Vec::new());
    }
    for h in &hooks {
        if let (Some(addr), Ok(mem)) = (
            crate::agent::find_state(h.pid),
            crate::kernel::procfs::Mem::open(h.pid, true),
        ) {
            let a = &cfg.addr;
            if let Err(e) = crate::agent::set_coordinator(&mem, addr, &a.host, a.port, &cfg.secret)
            {
                tracing::warn!("pid {}: publishing the coordinator: {e}", h.pid);
            }
        }
        if let Some(r) = restored.iter_mut().find(|r| r.pid() == h.pid) {
            if let Err(e) = r.release_thread(h.tid) {
                tracing::warn!("pid {}: starting the plugin hook thread: {e}", h.pid);
            }
        }
    }
    crate::hooks::send_restart_env(&mut hooks);
    // Global barriers meet the other launch groups of this dmtcp-restart
    // (2.3), or of the whole image set (2.4), at the coordinator.
    let result = crate::hooks::run_with(
        &mut hooks,
        crate::agent::abi::hook::MOMENT_RESTART,
        global.as_mut().map(|g| g as _),
    );
    if let Err(e) = result {
        tracing::error!("restart: {e}");
        eprintln!("dmtcp-restart: {e}");
    }
    (hooks, global.map(|g| g.kept).unwrap_or_default())
}

/// The launch groups of this `dmtcp-restart` (set before the groups are
/// forked, so each has it), for RESTART global barriers.
static RESTART_GROUPS: std::sync::OnceLock<RestartGroups> = std::sync::OnceLock::new();

struct RestartGroups {
    /// A random token of this `dmtcp-restart`.
    token: String,
    /// Its launch groups.
    groups: u32,
    /// `--set-size` (0: not said).
    set_size: u32,
}

/// RESTART global barriers through the coordinator (`RestartBarrier`,
/// `RestartGo`). No session reads the connection yet: frames other than
/// our `RestartGo` are kept for the session (a checkpoint asked meanwhile
/// goes on once it runs); a `Kill` also ends the wait (the barrier fails,
/// the session then kills the computation).
struct RestartBarrier<'a> {
    conn: &'a mut dmtcp_coordinator::client::Connection,
    token: String,
    groups: u32,
    /// 2.4 (`RestartSetBarrier`): the processes this group restored and
    /// the image set's size (0: not said).
    set: Option<(u32, u32)>,
    /// Other frames read while waiting, in order.
    kept: Vec<dmtcp_protocol::FromCoordinator>,
}

impl RestartBarrier<'_> {
    fn tell(&mut self, barrier: Option<String>) -> Result<(), String> {
        let msg = match self.set {
            Some((procs, set_size)) => dmtcp_protocol::ToCoordinator::RestartSetBarrier {
                restart: self.token.clone(),
                groups: self.groups,
                procs,
                set_size,
                barrier,
            },
            None => dmtcp_protocol::ToCoordinator::RestartBarrier {
                restart: self.token.clone(),
                groups: self.groups,
                barrier,
            },
        };
        self.conn
            .send(&msg)
            .map_err(|e| format!("telling the coordinator: {e}"))
    }
}

impl crate::hooks::Global for RestartBarrier<'_> {
    fn wait(
        &mut self,
        _moment: u32,
        name: &str,
        deadline: std::time::Instant,
    ) -> Result<(), String> {
        self.tell(Some(name.to_string()))?;
        let result = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break Err(if self.set.is_some() {
                    "the processes of the image set were not all at it in time (DMTCP_PLUGIN_TIMEOUT; is every host's dmtcp-restart running, with --set-size if the coordinator is new?)"
                } else {
                    "not every launch group of the restart reached it in time (DMTCP_PLUGIN_TIMEOUT)"
                }
                .to_string());
            }
            if let Err(e) = self.conn.stream().set_read_timeout(Some(left)) {
                break Err(format!("coordinator connection: {e}"));
            }
            match self.conn.recv() {
                Ok(dmtcp_protocol::FromCoordinator::RestartGo { restart })
                    if restart == self.token =>
                {
                    break Ok(())
                }
                Ok(dmtcp_protocol::FromCoordinator::Halt) => {
                    // The group's processes wait at this barrier: halted
                    // as they are; the kill follows.
                    if let Err(e) = self.conn.send(&dmtcp_protocol::ToCoordinator::Halted) {
                        break Err(format!("telling the coordinator: {e}"));
                    }
                }
                Ok(dmtcp_protocol::FromCoordinator::Kill) => {
                    self.kept.push(dmtcp_protocol::FromCoordinator::Kill);
                    break Err("the computation is being killed".to_string());
                }
                Ok(other) => {
                    tracing::debug!("restart: {other:?} kept for later: at a plugin barrier");
                    self.kept.push(other);
                }
                Err(e) => break Err(format!("waiting for the coordinator: {e}")),
            }
        };
        let _ = self.conn.stream().set_read_timeout(None);
        result
    }

    fn done(&mut self, _moment: u32) {
        if let Err(e) = self.tell(None) {
            tracing::debug!("restart plugin barrier: {e}");
        }
    }
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
        write: {
            let codec = if plan.no_gzip {
                Codec::None
            } else {
                images[0].top().codec()
            };
            WriteOptions {
                codec,
                // The image does not say whether its codec was asked for:
                // the default codec stays adaptive unless this restart's
                // environment names one.
                adaptive: codec == Codec::DEFAULT && Codec::env_is_default(),
                ..WriteOptions::default()
            }
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
    inherited: &std::collections::HashMap<u64, i32>,
) -> anyhow::Result<(HostPid, NsinitCtrl)> {
    let shells = images
        .iter()
        .zip(grants)
        .map(|(c, g)| {
            let mut plan = shell_plan(c, g);
            for e in &mut plan.fds {
                if let dmtcp_image::FdKind::TcpRemote {
                    id, inherited: at, ..
                } = &mut e.kind
                {
                    *at = inherited.get(id).copied().unwrap_or(-1);
                }
            }
            plan
        })
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
            net_none: crate::resources::seccomp::net_none(),
        },
        ipc.map(|(s, b)| (s, b)),
    )?;
    let kill_ns = || supervise::kill_and_reap(nsinit);
    // Corrupt page data found while a lazy restore brings pages in: the
    // program must not run on without them.
    lazy::on_fatal(move |msg| {
        // Every process is killed and gone (nsinit reaped: a pid
        // namespace's init ends only after all its processes) before we
        // exit: our exit closes the userfaultfds, and a thread waiting for
        // a page still to come would then get a page of zeros and run on
        // with it for a moment (seen: the program wrote a FAIL line).
        // The main thread may reap nsinit first (it then waits in
        // `lazy::hold_if_fatal` for this hook to end the process): wait
        // for nsinit alone, never for any child, which could block.
        supervise::kill_computation(nsinit);
        supervise::reap(nsinit);
        eprintln!("dmtcp-restart: {msg}; restart abandoned, the computation was stopped");
        std::process::exit(1);
    });
    match reply {
        InitReply::ShellsReady { real, .. } => {
            outside_ids(images, nsinit, &real);
            Ok((nsinit, ctrl))
        }
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

/// Without namespaces: the pid table gets every shell's kernel pid, and
/// the ids outside the computation the processes saw (their parent
/// nsinit, the group and session of the shell dmtcp-run ran in) are
/// mapped to their counterparts now: this nsinit, the group and session
/// each shell is in.
fn outside_ids(images: &[ImageChain], nsinit: HostPid, real: &[(u32, i32)]) {
    use crate::kernel::pid::virt;
    let vpids: HashSet<u32> = real.iter().map(|&(v, _)| v).collect();
    for &(v, r) in real {
        virt::insert(v as i32, r);
    }
    for c in images {
        let p = &c.top().meta().process;
        let Some(&(_, r)) = real.iter().find(|(v, _)| *v == p.vpid) else {
            continue;
        };
        let Some(st) = crate::roles::members::proc_stat(r) else {
            continue;
        };
        let outside = |id: u32| id != 0 && !vpids.contains(&id);
        if outside(p.vppid) {
            virt::insert(p.vppid as i32, nsinit.0);
        }
        if outside(p.vpgid) {
            virt::insert(p.vpgid as i32, st.pgid);
        }
        if outside(p.vsid) {
            virt::insert(p.vsid as i32, st.sid);
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
    let size = |c: &ImageChain| -> u64 {
        c.readers()
            .iter()
            .map(|r| r.file().metadata().map_or(0, |m| m.len()))
            .sum()
    };
    let live: Vec<(&ImageChain, &Granted)> = images
        .iter()
        .zip(grants)
        .filter(|(c, _)| c.top().meta().process.zombie.is_none())
        .collect();
    let n = live.len();
    let bar = crate::roles::progress::RestartBar::new(live.iter().map(|(c, _)| size(c)).sum(), n);
    for (r, granted) in live {
        let vpid = VirtPid::from_image(r.top().meta().process.vpid);
        // Without namespaces, the group's kernel id now.
        let fg = foreground
            .get(&r.top().meta().process.vpid)
            .map(|&g| crate::kernel::pid::virt::real_of(g as i32) as u32);
        let res = host_pid_of(nsinit, vpid)
            .ok_or_else(|| anyhow!("shell for pid {vpid} not found"))
            .and_then(|pid| {
                restore::restore_process(pid, r, shared_memory, fg, &shm_sizes, granted)
                    .map_err(|e| anyhow!("{e}"))
            });
        match res {
            Ok(p) => restored.push(p),
            Err(e) => {
                bar.finish();
                return Err(e.context(format!("{}", r.top().path().display())));
            }
        }
        bar.process_done(restored.len(), n, size(r));
    }
    bar.finish();
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
