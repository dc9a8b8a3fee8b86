//! Command line of `dmtcp-restart` (alias `dmtcp_restart`).

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Parser;
use dmtcp_image::{Codec, ImageChain, ImageReader, WriteOptions};
use dmtcp_supervisor::coord_args::CoordArgs;
use dmtcp_supervisor::roles::restart::{self, Plan};

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
    /// Write an ELF core file of the process in IMAGE to OUT (for
    /// `gdb PROG OUT`) and exit; nothing is run.
    #[arg(long = "core", value_name = "OUT", conflicts_with_all = ["merge", "inspect", "stop"])]
    core: Option<PathBuf>,
    /// Later checkpoints write only the pages written since the previous
    /// one (as `dmtcp-run --incremental`).
    #[arg(long = "incremental", env = "DMTCP_INCREMENTAL", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    incremental: bool,
    /// Pre-copy before each checkpoint's freeze: memory is copied into the
    /// images while the program runs, and only what it writes meanwhile is
    /// read while it is frozen (env DMTCP_PRECOPY; see the user guide).
    #[arg(long = "precopy", env = "DMTCP_PRECOPY", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    precopy: bool,
    /// Copy and check every page before the program runs, instead of
    /// bringing pages in while it runs (`DMTCP_RESTART_LAZY=0`).
    #[arg(long = "no-lazy")]
    no_lazy: bool,
    /// Restore the computation completely but leave every thread stopped
    /// at its checkpointed instruction, and print for each process the gdb
    /// command that attaches to it; a process goes on when gdb detaches or
    /// quits (or on `kill -CONT`). Also `DMTCP_RESTART_PAUSE` set to a
    /// value other than 0 (DMTCP's spelling).
    #[arg(long = "stop", alias = "debug-restart-pause")]
    stop: bool,
    /// Restart even while processes of the images' computation still run,
    /// as a new computation (fresh computation and launch ids; the running
    /// one is left alone).
    #[arg(long = "new-computation")]
    new_computation: bool,
    /// Keep the restarted computation running when its coordinator is gone
    /// (it keeps trying to reconnect). Without it, a restarted computation
    /// that has had no coordinator for --coord-timeout seconds ends.
    #[arg(long = "keep-running-alone")]
    keep_running_alone: bool,
    /// Seconds a restarted computation may be without a coordinator before
    /// it ends (env DMTCP_COORD_TIMEOUT; default 30).
    #[arg(
        long = "coord-timeout",
        env = "DMTCP_COORD_TIMEOUT",
        default_value_t = 30
    )]
    coord_timeout: u64,
    /// Leave files the computation had open for writing as they are. By
    /// default each one that only grew since the checkpoint, and that no
    /// process outside the computation has open, is cut back to its
    /// checkpoint-time size (also DMTCP_NO_TRUNCATE_FILES=1).
    #[arg(long = "no-truncate-files")]
    no_truncate_files: bool,
    /// Root only: restore the processes into the current pid namespace
    /// with the pids they had on the host (images of a tree attached with
    /// dmtcp-attach, or restarted with --no-pidns); refused, naming the
    /// process, when one of those pids is in use (also DMTCP_NO_PIDNS=1).
    #[arg(long = "no-pidns", env = "DMTCP_NO_PIDNS", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    no_pidns: bool,
    /// The number of processes of the whole image set these images belong
    /// to, when other dmtcp-restart commands (on other hosts) restart the
    /// rest of it: plugins' global barriers at RESTART then wait for all of
    /// them. The restart script passes it; without it the coordinator knows
    /// it only for the set its last checkpoint wrote.
    #[arg(long = "set-size", value_name = "N", default_value_t = 0)]
    set_size: u32,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Checkpoint images (ckpt_*.dmtcp).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
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
    if let Some(out) = &args.core {
        let [image] = args.images.as_slice() else {
            bail!("--core takes exactly one image (one process)");
        };
        let chain = ImageChain::open(image).map_err(|e| anyhow!("{e}"))?;
        let s = dmtcp_image::write_core(&chain, out).map_err(|e| anyhow!("{e}"))?;
        let p = &chain.top().meta().process;
        println!(
            "{}: core of pid {} ({}), {} thread(s), {} segment(s), {} bytes of saved memory; read it with: gdb {} {}",
            out.display(),
            p.vpid,
            p.comm,
            s.threads,
            s.segments,
            s.saved_bytes,
            p.exe,
            out.display()
        );
        return Ok(0);
    }
    if args.precopy {
        // Read by the supervisor at each checkpoint (one thread so far).
        std::env::set_var("DMTCP_PRECOPY", "1");
    }
    restart::run(Plan {
        coord: args.coord,
        ckpt_dir: args.ckpt_dir,
        no_gzip: args.no_gzip,
        incremental: args.incremental,
        no_lazy: args.no_lazy,
        images: args.images,
        stop: args.stop
            || std::env::var("DMTCP_RESTART_PAUSE").is_ok_and(|v| !v.is_empty() && v != "0"),
        new_computation: args.new_computation,
        alone_timeout: (!args.keep_running_alone)
            .then(|| std::time::Duration::from_secs(args.coord_timeout)),
        no_truncate_files: args.no_truncate_files,
        no_pidns: args.no_pidns,
        set_size: args.set_size,
    })
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
