//! `dmtcp-run` (alias `dmtcp_launch`): run a program under checkpoint control.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use clap::Parser;
use dmtcp_coordinator::client::request;

use crate::coord_args::{CoordArgs, ImageArgs};
use dmtcp_protocol::Request;

use crate::roles::nsinit::{InitReply, InitRequest};
use crate::roles::session::{self, Session};
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
    #[command(flatten)]
    image: ImageArgs,
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
    /// Pre-copy before each checkpoint's freeze: memory is copied into the
    /// images while the program runs, and only what it writes meanwhile is
    /// read while it is frozen (env DMTCP_PRECOPY; see the user guide).
    #[arg(long = "precopy", env = "DMTCP_PRECOPY", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    precopy: bool,
    /// Plugins to load into every process, in this order (colon-separated
    /// paths, or names found in LD_LIBRARY_PATH; env DMTCP_PLUGIN). The
    /// first one's wrappers are outermost.
    #[arg(long = "with-plugin", value_name = "A.so:B.so", env = "DMTCP_PLUGIN")]
    with_plugin: Vec<String>,
    /// Load no plugin at all (overrides --with-plugin and DMTCP_PLUGIN).
    #[arg(long = "disable-all-plugins")]
    disable_all_plugins: bool,
    /// Where DMTCP is installed on the other hosts: a process of the
    /// computation that runs `ssh HOST CMD` gets `CMD` started under
    /// PREFIX/bin/dmtcp-run there (env DMTCP_PREFIX; default: the
    /// directory of these binaries, as on a shared file system).
    #[arg(long = "prefix", env = "DMTCP_PREFIX", value_name = "PREFIX")]
    prefix: Option<PathBuf>,
    /// Return as soon as the program runs, leaving it under checkpoint
    /// control in the background (its supervisor detaches; DMTCP's
    /// coordinator spells this --daemon). Prints the program's pid and the
    /// coordinator; end it with dmtcp-command --kill or --quit.
    #[arg(long = "daemon", alias = "background")]
    daemon: bool,
    /// Run the computation under a seccomp policy: the default one (what
    /// container runtimes deny fails with EPERM) or POLICY, a Docker/OCI
    /// seccomp profile (JSON). Kept across checkpoints and restarts.
    #[arg(
        long = "sandbox",
        value_name = "POLICY",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "default"
    )]
    sandbox: Option<String>,
    /// `none`: the computation gets a network namespace of its own with only
    /// loopback (kept across restarts).
    #[arg(long = "net", value_name = "none", value_parser = ["none"])]
    net: Option<String>,
    /// Landlock: the computation may read (and execute) only beneath the
    /// paths given with --allow-read and write only beneath --allow-write
    /// (repeatable; kept across restarts).
    #[arg(long = "allow-read", value_name = "PATH")]
    allow_read: Vec<PathBuf>,
    /// See --allow-read.
    #[arg(long = "allow-write", value_name = "PATH")]
    allow_write: Vec<PathBuf>,
    /// Run without namespaces of its own (env DMTCP_NO_NAMESPACES): the
    /// processes keep the pids the kernel gives them and the program sees
    /// virtual pids that stay the same across restarts (inject library).
    /// Picked by itself, with a notice, where user namespaces cannot be
    /// made (unless --namespaces is given).
    #[arg(long = "no-namespaces", env = "DMTCP_NO_NAMESPACES", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true", conflicts_with = "namespaces")]
    no_namespaces: bool,
    /// Insist on the computation's own pid and IPC namespaces: where user
    /// namespaces cannot be made, fail in one line saying why instead of
    /// running without namespaces.
    #[arg(long = "namespaces")]
    namespaces: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "PROG")]
    command: Vec<OsString>,
}

fn run() -> anyhow::Result<i32> {
    let args = Args::parse();
    if args.daemon {
        return detach(args);
    }
    launch(args, None)
}

/// `--daemon`: the work goes on in a child in a session of its own, which
/// says on a pipe when the program runs (or why it could not start); we
/// print that and return.
fn detach(args: Args) -> anyhow::Result<i32> {
    use std::io::Read;
    let (rd, wr) = crate::kernel::sys::pipe_cloexec()?;
    // SAFETY: fork before any thread of ours exists (nothing has been
    // started yet); the child goes on with the launch and exits.
    match unsafe { libc::fork() } {
        -1 => anyhow::bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            drop(rd);
            // SAFETY: setsid takes no arguments.
            unsafe { libc::setsid() };
            // An error went to the pipe: the parent prints it.
            let code = launch(args, Some(wr)).unwrap_or(127);
            std::process::exit(code);
        }
        _ => {
            drop(wr);
            let mut msg = String::new();
            let mut rd = rd;
            let _ = rd.read_to_string(&mut msg);
            match msg.strip_prefix("ok ") {
                Some(what) => {
                    println!("dmtcp-run: {what}");
                    Ok(0)
                }
                None if msg.is_empty() => {
                    anyhow::bail!("the detached launch ended before the program ran")
                }
                None => anyhow::bail!("{msg}"),
            }
        }
    }
}

/// Launches and supervises; with `started` (`--daemon`), says there when
/// the program runs, or why it could not.
fn launch(args: Args, started: Option<std::os::fd::OwnedFd>) -> anyhow::Result<i32> {
    let mut started = started.map(std::fs::File::from);
    let result = launch_inner(&args, &mut started);
    if let (Err(e), Some(f)) = (&result, started.as_mut()) {
        use std::io::Write;
        let _ = write!(f, "{e:#}");
    }
    let (session, nsinit) = result?;
    Ok(supervise::supervise(session, nsinit))
}

fn launch_inner(
    args: &Args,
    started: &mut Option<std::fs::File>,
) -> anyhow::Result<(Session, crate::kernel::pid::HostPid)> {
    // Plugins are checked before anything starts.
    let plugins = if args.disable_all_plugins {
        Vec::new()
    } else {
        crate::plugin_load::resolve(&args.with_plugin)?
    };
    if !plugins.is_empty() {
        let lib = supervise::inject_library()
            .map_err(|e| anyhow::anyhow!("plugins need the inject library: {e}"))?;
        crate::plugin_load::check(&lib, &plugins)?;
    }
    if args.precopy {
        // Read by the session at each checkpoint (one thread so far).
        std::env::set_var("DMTCP_PRECOPY", "1");
    }
    if let Some(sig) = args.ckpt_signal {
        tracing::debug!("--ckpt-signal {sig}: no checkpoint signal is used (ptrace stops threads)");
    }
    let no_namespaces = args.no_namespaces
        || match supervise::check_namespaces() {
            Ok(()) => false,
            Err(e) if args.namespaces => return Err(e),
            Err(e) => match supervise::userns_cause() {
                Some(cause) => {
                    eprintln!(
                        "dmtcp-run: {cause}: running without namespaces (virtual pids; --namespaces refuses instead)"
                    );
                    true
                }
                None => return Err(e),
            },
        };
    if no_namespaces {
        if args.net.is_some() {
            anyhow::bail!("--net=none needs a network namespace: not with --no-namespaces");
        }
        crate::roles::spawn::set_host_pids();
        crate::kernel::pid::virt::enable();
        // The program's libdmtcp_inject translates si_pid for SA_SIGINFO
        // handlers only in this mode (`inject::vpid::VIRTUAL_PIDS_ENV`).
        std::env::set_var("DMTCP_VIRTUAL_PIDS", "1");
        // Where programs exec'd after a restart find the pid table
        // (`inject::abi::VPID_KEY_ENV`): a key of this launch's own, kept in
        // the restored environment.
        let key: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::env::set_var(crate::agent::abi::VPID_KEY_ENV, key);
    }
    // A 32-bit program is refused before anything starts (it could not be
    // checkpointed: the restorer handles x86_64 processes only).
    if let Some(exe) = crate::kernel::procfs::resolve_program(&args.command[0]) {
        if crate::kernel::procfs::elf_class(&exe) == Some(1) {
            anyhow::bail!(
                "{}: a 32-bit program; only 64-bit (x86_64) programs can be checkpointed",
                exe.display()
            );
        }
    }
    let cfg = session::new_launch_config(&args.coord, &args.image, "dmtcp-run", args.incremental)?;
    let (addr, secret) = (cfg.addr.clone(), cfg.secret.clone());
    let net_none = args.net.is_some();
    let paths = |v: &[PathBuf]| -> Vec<String> {
        v.iter()
            .map(|p| supervise::absolute(p).to_string_lossy().into_owned())
            .collect()
    };
    let (allow_read, allow_write) = (paths(&args.allow_read), paths(&args.allow_write));
    let landlock = (!allow_read.is_empty() || !allow_write.is_empty())
        .then(|| (allow_read.clone(), allow_write.clone()));
    let seccomp = match &args.sandbox {
        Some(spec) => Some(crate::resources::sandbox::load(spec).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if seccomp.is_some() || net_none || landlock.is_some() {
        crate::resources::seccomp::set_sandbox(
            dmtcp_image::SandboxInfo {
                policy: seccomp.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                owner_uid: nix::unistd::getuid().as_raw(),
                net_none,
                allow_read,
                allow_write,
            },
            seccomp.as_ref().map(|p| p.prog.clone()).unwrap_or_default(),
        );
    }
    let seccomp = seccomp.map(|p| p.prog);
    let (conn, computation, _) = session::connect(&cfg)?;
    if let Some(n) = args.image.interval {
        request(&addr, &secret, Request::SetInterval(n))?;
    }
    let preload = match supervise::inject_library() {
        Ok(p) => Some(crate::plugin_load::preload(&p, &plugins)),
        Err(e) => {
            tracing::warn!("{e}; running without the application API library");
            None
        }
    };
    // The computation's processes learn where the coordinator is (ssh
    // contagion, nested launches; the inject library prefers what the
    // supervisor publishes in the state page) and where the binaries are
    // on other hosts. Addresses and paths only: the secret stays in the
    // private runtime directory.
    std::env::set_var("DMTCP_COORD_HOST", &addr.host);
    std::env::set_var("DMTCP_COORD_PORT", addr.port.to_string());
    if let Some(p) = &args.prefix {
        std::env::set_var("DMTCP_PREFIX", supervise::absolute(p));
    }
    supervise::block_signals()?;
    let argv: Vec<Vec<u8>> = args
        .command
        .iter()
        .cloned()
        .map(OsStringExt::into_vec)
        .collect();
    let (nsinit, reply, ctrl) = supervise::start_nsinit(
        &InitRequest::Launch {
            argv,
            preload,
            seccomp,
            net_none,
            landlock,
        },
        None,
    )?;
    match reply {
        InitReply::Launched { vpid } => {
            tracing::debug!("launched as pid {vpid}");
            if let Some(mut f) = started.take() {
                use std::io::Write;
                let _ = write!(
                    f,
                    "ok {} runs as pid {vpid} under the coordinator at {addr} (supervisor pid {}); dmtcp-command -p {} --kill ends it",
                    args.command[0].to_string_lossy(),
                    std::process::id(),
                    addr.port
                );
            }
        }
        InitReply::Failed(msg) => {
            supervise::wait_nsinit(nsinit);
            anyhow::bail!("{msg}");
        }
        other => anyhow::bail!("unexpected answer from dmtcp-nsinit: {other:?}"),
    }
    let session = Session::new(cfg, nsinit, ctrl, conn, computation);
    Ok((session, nsinit))
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
