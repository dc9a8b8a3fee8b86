//! Command line of `dmtcp-restart` (alias `dmtcp_restart`).

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Parser;
use dmtcp_coordinator::client::StartOptions;
use dmtcp_image::{Codec, ImageChain, ImageReader, Verify, WriteOptions};
use dmtcp_supervisor::coord_args::CoordArgs;
use dmtcp_supervisor::nsinit::{InitReply, InitRequest, ShellPlan};
use dmtcp_supervisor::pid::HostPid;
use dmtcp_supervisor::procfs;
use dmtcp_supervisor::session::{self, Session, SessionConfig};
use dmtcp_supervisor::supervise;

use crate::restore;

#[derive(Parser, Debug)]
#[command(
    name = "dmtcp-restart",
    version,
    disable_help_flag = true,
    about = "Restart a computation from checkpoint images (DMTCP's dmtcp_restart)"
)]
struct Args {
    #[command(flatten)]
    coord: CoordArgs,
    /// Where later checkpoints go (default: the coordinator's directory).
    #[arg(long = "ckpt-dir", alias = "ckptdir", env = "DMTCP_CHECKPOINT_DIR")]
    ckpt_dir: Option<PathBuf>,
    /// Do not compress later checkpoints.
    #[arg(long = "no-gzip")]
    no_gzip: bool,
    /// Print what the images hold and exit.
    #[arg(long = "inspect")]
    inspect: bool,
    /// Write the (incremental) IMAGE as one standalone image to OUT, with
    /// every page it restores from the images it builds on, and exit.
    #[arg(long = "merge", value_name = "OUT")]
    merge: Option<PathBuf>,
    /// Later checkpoints write only the pages written since the previous
    /// one (as `dmtcp-run --incremental`).
    #[arg(long = "incremental", env = "DMTCP_INCREMENTAL", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    incremental: bool,
    /// Copy and check every page before the program runs, instead of
    /// bringing pages in while it runs (`DMTCP_RESTART_LAZY=0`).
    #[arg(long = "no-lazy")]
    no_lazy: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Checkpoint images (ckpt_*.dmtcp).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

/// Opens every image and checks its structure and metadata before anything
/// is created.
fn open_images(paths: &[PathBuf]) -> anyhow::Result<Vec<ImageChain>> {
    let mut out: Vec<ImageChain> = Vec::new();
    let mut vpids = HashSet::new();
    for p in paths {
        // Copied restarts authenticate every page block before any process
        // is created; lazy ones check each block (crc and MAC) when it is
        // first brought in (docs/image-format.md, "Authentication").
        let verify = if dmtcp_supervisor::lazy::enabled() {
            Verify::Layout
        } else {
            Verify::Full
        };
        let chain = ImageChain::open_with(p, verify).map_err(|e| anyhow!("{e}"))?;
        let r = chain.top();
        let m = r.meta();
        if let Some(first) = out.first().map(|c| c.top()) {
            if first.meta().computation.generation != m.computation.generation {
                bail!(
                    "{}: taken at checkpoint {}, but {} at checkpoint {}: restart images of one checkpoint",
                    p.display(),
                    m.computation.generation,
                    first.path().display(),
                    first.meta().computation.generation
                );
            }
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
        if !vpids.insert(m.process.vpid) {
            bail!("{}: pid {} given twice", p.display(), m.process.vpid);
        }
        out.push(chain);
    }
    // Parents before children, so shells can be created in order.
    out.sort_by_key(|c| c.top().meta().process.vpid);
    Ok(out)
}

fn shell_plan(c: &ImageChain) -> ShellPlan {
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
    match dmtcp_supervisor::pty::apply_to_own_terminal(t) {
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
    let mut outside_done = !dmtcp_supervisor::pty::in_foreground();
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

fn host_pid_of(nsinit: HostPid, vpid: i32) -> Option<HostPid> {
    procfs::descendants(nsinit).into_iter().find(|p| {
        procfs::status(*p)
            .ok()
            .and_then(|kv| procfs::innermost_pid(&kv))
            == Some(vpid)
    })
}

fn run() -> anyhow::Result<i32> {
    let args = Args::parse();
    if args.inspect {
        for p in &args.images {
            let r = ImageReader::open(p).map_err(|e| anyhow!("{e}"))?;
            print!("{}", dmtcp_image::describe(&r));
            if let Err(e) = r.verify() {
                println!("VERIFY FAILED: {e}");
                return Ok(1);
            }
        }
        return Ok(0);
    }
    if let Some(out) = &args.merge {
        let [image] = args.images.as_slice() else {
            bail!("--merge takes exactly one image");
        };
        let chain = ImageChain::open(image).map_err(|e| anyhow!("{e}"))?;
        let codec = if args.no_gzip {
            Codec::None
        } else {
            chain.top().codec()
        };
        let opts = WriteOptions {
            codec,
            ..WriteOptions::default()
        };
        let size = chain.merge(out, opts).map_err(|e| anyhow!("{e}"))?;
        println!(
            "{}: standalone image of {} ({} image(s) merged, {size} bytes)",
            out.display(),
            image.display(),
            chain.readers().len()
        );
        return Ok(0);
    }
    if args.no_lazy {
        dmtcp_supervisor::lazy::disable();
    }
    let images = open_images(&args.images)?;
    let first = images[0].top().meta().computation.clone();
    let (addr, secret) = args.coord.coordinator(
        "dmtcp-restart",
        StartOptions {
            ckpt_dir: args.ckpt_dir.clone(),
            interval: None,
            exit_on_last: true,
        },
    )?;
    let cfg = SessionConfig {
        addr,
        secret,
        computation: Some(first.id.clone()),
        generation: first.generation,
        write: WriteOptions {
            codec: if args.no_gzip {
                Codec::None
            } else {
                images[0].top().codec()
            },
            ..WriteOptions::default()
        },
        ckpt_dir: args.ckpt_dir.as_deref().map(supervise::absolute),
        incremental: args.incremental,
    };
    let (conn, computation, _) = session::connect(&cfg)?;

    supervise::block_signals()?;
    // Its threads start here: after the signals the supervisor reads from
    // a signalfd are blocked (threads inherit the mask), before the restore
    // pins us to one CPU (threads inherit that too).
    if dmtcp_supervisor::lazy::enabled() {
        if let Err(e) = dmtcp_supervisor::lazy::prepare() {
            tracing::debug!("no lazy restore: {e}");
            dmtcp_supervisor::lazy::disable();
        }
    }
    if !dmtcp_supervisor::lazy::enabled() {
        // Copied restart: every page authenticated before any process exists.
        images
            .iter()
            .try_for_each(|c| c.verify_all().map_err(|e| anyhow!("{e}")))?;
    }
    let shells = images.iter().map(shell_plan).collect();
    let tops: Vec<&ImageReader> = images.iter().map(|c| c.top()).collect();
    let shared_memory = restore::park_shared_memory(&tops);
    let ipc = tops
        .iter()
        .find_map(|r| r.meta().ipc.clone().map(|s| (*r, s)))
        .map(|(r, s)| {
            s.shm
                .iter()
                .map(|g| dmtcp_supervisor::sysvipc::load_pages(r, g))
                .collect::<std::io::Result<Vec<_>>>()
                .map(|bytes| (s, bytes))
        })
        .transpose()?;
    let shm_sizes: std::collections::HashMap<i32, u64> = ipc
        .iter()
        .flat_map(|(s, _)| s.shm.iter().map(|g| (g.perm.id, g.size)))
        .collect();
    let (nsinit, reply, mut ctrl) = supervise::start_nsinit(
        &InitRequest::Restore {
            shells,
            shared_memory: shared_memory.clone(),
            ipc: ipc.is_some(),
        },
        ipc.as_ref().map(|(s, b)| (s, b)),
    )?;
    let kill_ns = || supervise::kill_and_reap(nsinit);
    // Corrupt page data found while a lazy restore brings pages in: the
    // program must not run on without them.
    dmtcp_supervisor::lazy::on_fatal(move |msg| {
        // SAFETY: kill with integer arguments; nsinit is our child, and its
        // death takes every process of the namespace with it.
        unsafe { libc::kill(nsinit.0, libc::SIGKILL) };
        eprintln!("dmtcp-restart: {msg}; restart abandoned, the computation was stopped");
        std::process::exit(1);
    });
    match reply {
        InitReply::ShellsReady { .. } => {}
        InitReply::Failed(msg) => {
            kill_ns();
            bail!("{msg}");
        }
        other => {
            kill_ns();
            bail!("unexpected answer from dmtcp-nsinit: {other:?}");
        }
    }
    let on_terminal = restore_terminal_settings(&tops);
    let foreground = foreground_groups(&tops);
    let mut restored = Vec::with_capacity(images.len());
    for r in images
        .iter()
        .filter(|c| c.top().meta().process.zombie.is_none())
    {
        let vpid = r.top().meta().process.vpid as i32;
        let fg = foreground.get(&r.top().meta().process.vpid).copied();
        let res = host_pid_of(nsinit, vpid)
            .ok_or_else(|| anyhow!("shell for pid {vpid} not found"))
            .and_then(|pid| {
                restore::restore_process(pid, r, &shared_memory, fg, &shm_sizes)
                    .map_err(|e| anyhow!("{e}"))
            });
        match res {
            Ok(p) => restored.push(p),
            Err(e) => {
                kill_ns();
                return Err(e.context(format!("{}", r.top().path().display())));
            }
        }
    }
    // Pages still to come exist only in this process from now on.
    let lifeline = dmtcp_supervisor::lazy::busy();
    if lifeline {
        if let Err(e) = ctrl.lifeline(true) {
            kill_ns();
            bail!("{e}");
        }
    }
    // Every process is in place: the computation starts as a whole.
    for p in restored {
        if let Err(e) = p.release() {
            kill_ns();
            bail!("{e}");
        }
    }
    dmtcp_supervisor::lazy::start_background();
    if on_terminal {
        // Another terminal, maybe of another size: full-screen programs
        // redraw on SIGWINCH.
        if let Err(e) = dmtcp_supervisor::pty::signal_foreground(libc::SIGWINCH) {
            tracing::warn!("SIGWINCH to the foreground group: {e}");
        }
    }
    // Segments removed while attached are removed again, now that the
    // restored processes hold them.
    let destroyed: Vec<i32> = ipc
        .iter()
        .flat_map(|(s, _)| s.shm.iter())
        .filter(|g| g.perm.mode & dmtcp_supervisor::sysvipc::SHM_DEST != 0)
        .map(|g| g.perm.id)
        .collect();
    if !destroyed.is_empty() {
        if let Err(e) = ctrl.remove_shm(destroyed) {
            kill_ns();
            bail!("removing restored shared memory marked for removal: {e}");
        }
    }
    let session = Session::new(cfg, nsinit, ctrl, conn, computation).with_lifeline(lifeline);
    Ok(supervise::supervise(session, nsinit))
}

/// Entry point of `dmtcp-restart` and `dmtcp_restart`.
pub fn main() -> ! {
    dmtcp_supervisor::init_logging();
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One line: the cause chain joined.
            eprintln!("dmtcp-restart: {}", format!("{e:#}").replace('\n', " "));
            std::process::exit(1)
        }
    }
}
