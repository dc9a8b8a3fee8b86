//! `dmtcp-run` (alias `dmtcp_launch`): run a program under checkpoint control.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use clap::Parser;
use dmtcp_coordinator::client::{request, StartOptions};

use crate::coord_args::CoordArgs;
use dmtcp_image::{Codec, WriteOptions};
use dmtcp_protocol::Request;

use crate::roles::nsinit::{InitReply, InitRequest};
use crate::roles::session::{self, Session, SessionConfig};
use crate::roles::supervise;

#[derive(Parser, Debug)]
#[command(
    name = "dmtcp-run",
    version,
    disable_help_flag = true,
    about = "Run PROG under checkpoint control (DMTCP's dmtcp_launch)"
)]
struct Args {
    #[command(flatten)]
    coord: CoordArgs,
    /// Directory for checkpoint images (env DMTCP_CHECKPOINT_DIR).
    #[arg(long = "ckpt-dir", alias = "ckptdir", env = "DMTCP_CHECKPOINT_DIR")]
    ckpt_dir: Option<PathBuf>,
    /// Do not compress images (same as DMTCP_GZIP=0).
    #[arg(long = "no-gzip")]
    no_gzip: bool,
    /// Compress images with gzip (DMTCP's format; the default is zstd).
    #[arg(long = "gzip")]
    gzip: bool,
    /// Image codec: gzip, zstd or none, optionally with a level
    /// (`zstd:-3`, `gzip:6`; env DMTCP_COMPRESS).
    #[arg(long = "compress")]
    compress: Option<String>,
    /// Checkpoint every N seconds (env DMTCP_CHECKPOINT_INTERVAL).
    #[arg(short = 'i', long = "interval", env = "DMTCP_CHECKPOINT_INTERVAL")]
    interval: Option<u32>,
    /// Accepted for DMTCP job scripts (also env DMTCP_SIGCKPT). No signal is
    /// used to checkpoint: threads are stopped with ptrace, so the program
    /// keeps every signal for itself, whatever number is given here.
    #[arg(
        long = "ckpt-signal",
        alias = "mtcp-checkpoint-signal",
        env = "DMTCP_SIGCKPT",
        value_name = "SIGNUM"
    )]
    ckpt_signal: Option<i32>,
    /// After the first checkpoint, write only the pages written since the
    /// previous one (dirty pages tracked with userfaultfd write-protect).
    #[arg(long = "incremental", env = "DMTCP_INCREMENTAL", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    incremental: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "PROG")]
    command: Vec<OsString>,
}

/// The codec and level: `--no-gzip`, `--compress NAME[:LEVEL]`, `--gzip`,
/// then the environment.
fn codec(args: &Args) -> anyhow::Result<(Codec, Option<i32>)> {
    if args.no_gzip {
        return Ok((Codec::None, None));
    }
    if let Some(c) = &args.compress {
        return Ok(Codec::parse_spec(c)?);
    }
    if args.gzip {
        return Ok((Codec::Gzip, None));
    }
    Ok(Codec::from_env())
}

fn run() -> anyhow::Result<i32> {
    let args = Args::parse();
    if let Some(sig) = args.ckpt_signal {
        tracing::debug!("--ckpt-signal {sig}: no checkpoint signal is used (ptrace stops threads)");
    }
    let ckpt_dir = args.ckpt_dir.as_deref().map(supervise::absolute);
    if let Some(d) = &ckpt_dir {
        dmtcp_protocol::runtime::create_ckpt_dir(d)
            .map_err(|e| anyhow::anyhow!("checkpoint directory {}: {e}", d.display()))?;
    }
    let (addr, secret) = args.coord.coordinator(
        "dmtcp-run",
        StartOptions {
            ckpt_dir: ckpt_dir.clone(),
            interval: args.interval,
            exit_on_last: true,
        },
    )?;
    let (codec, level) = codec(&args)?;
    let cfg = SessionConfig {
        addr: addr.clone(),
        secret: secret.clone(),
        computation: None,
        generation: 0,
        write: WriteOptions {
            codec,
            level,
            ..WriteOptions::default()
        },
        ckpt_dir,
        incremental: args.incremental,
        launch: session::new_launch_id(),
        // A launched computation outlives its coordinator and reconnects.
        alone_timeout: None,
    };
    let (conn, computation, _) = session::connect(&cfg)?;
    if let Some(n) = args.interval {
        request(&addr, &secret, Request::SetInterval(n))?;
    }
    let preload = match supervise::inject_library() {
        Ok(p) => Some(p.to_string_lossy().into_owned()),
        Err(e) => {
            tracing::warn!("{e}; running without the application API library");
            None
        }
    };
    supervise::block_signals()?;
    let argv: Vec<Vec<u8>> = args
        .command
        .iter()
        .cloned()
        .map(OsStringExt::into_vec)
        .collect();
    let (nsinit, reply, ctrl) =
        supervise::start_nsinit(&InitRequest::Launch { argv, preload }, None)?;
    match reply {
        InitReply::Launched { vpid } => tracing::debug!("launched as pid {vpid}"),
        InitReply::Failed(msg) => {
            supervise::wait_nsinit(nsinit);
            anyhow::bail!("{msg}");
        }
        other => anyhow::bail!("unexpected answer from dmtcp-nsinit: {other:?}"),
    }
    let session = Session::new(cfg, nsinit, ctrl, conn, computation);
    Ok(supervise::supervise(session, nsinit))
}

/// Entry point of `dmtcp-run` and `dmtcp_launch`.
pub fn main() -> ! {
    crate::init_logging();
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("dmtcp-run: {e:#}");
            std::process::exit(127)
        }
    }
}
