//! Command line of `dmtcp-restart` (alias `dmtcp_restart`).

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Parser;
use dmtcp_coordinator::client::StartOptions;
use dmtcp_image::{Codec, ImageReader, WriteOptions};
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
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Checkpoint images (ckpt_*.dmtcp).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

/// Opens and fully verifies every image before anything is created.
fn open_images(paths: &[PathBuf]) -> anyhow::Result<Vec<ImageReader>> {
    let mut out: Vec<ImageReader> = Vec::new();
    let mut vpids = HashSet::new();
    for p in paths {
        let r = ImageReader::open(p).map_err(|e| anyhow!("{e}"))?;
        r.verify().map_err(|e| anyhow!("{e}"))?;
        let m = r.meta();
        if let Some(first) = out.first() {
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
        out.push(r);
    }
    // Parents before children, so shells can be created in order.
    out.sort_by_key(|r| r.meta().process.vpid);
    Ok(out)
}

fn shell_plan(r: &ImageReader) -> ShellPlan {
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
    }
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
    let images = open_images(&args.images)?;
    let first = images[0].meta().computation.clone();
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
                images[0].codec()
            },
            ..WriteOptions::default()
        },
        ckpt_dir: args.ckpt_dir.as_deref().map(supervise::absolute),
    };
    let (conn, computation, _) = session::connect(&cfg)?;

    supervise::block_signals()?;
    let shells = images.iter().map(shell_plan).collect();
    let shared_memory = restore::park_shared_memory(&images);
    let ipc = images
        .iter()
        .find_map(|r| r.meta().ipc.clone().map(|s| (r, s)))
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
    for r in images.iter().filter(|r| r.meta().process.zombie.is_none()) {
        let vpid = r.meta().process.vpid as i32;
        let res = host_pid_of(nsinit, vpid)
            .ok_or_else(|| anyhow!("shell for pid {vpid} not found"))
            .and_then(|pid| {
                restore::restore_process(pid, r, &shared_memory, &shm_sizes)
                    .map_err(|e| anyhow!("{e}"))
            });
        if let Err(e) = res {
            kill_ns();
            return Err(e.context(format!("{}", r.path().display())));
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
    let session = Session::new(cfg, nsinit, ctrl, conn, computation);
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
