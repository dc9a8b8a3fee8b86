//! `main` of `dmtcp-coordinator` and `dmtcp-command` (and their DMTCP aliases).

use std::io::{BufRead, IsTerminal, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use dmtcp_protocol::auth::MIN_SECRET_LEN;
use dmtcp_protocol::{CheckpointProgress, Reply, Request, Status};

use crate::client::{self, CoordAddr};
use crate::event::Config;
use crate::server;

/// `println!` that does not panic when stdout is closed (`dmtcp-command -l |
/// head -1`): the output is simply dropped, as other command-line tools do.
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Logging to stderr, filtered by `DMTCP_LOG` (default "warn").
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DMTCP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only on a terminal: logs that go to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Checkpoint coordinator: drives checkpoints of every process of a computation.
#[derive(Parser, Debug)]
#[command(name = "dmtcp-coordinator", version)]
struct CoordArgs {
    /// Port to listen on (0: pick a free port and print it).
    #[arg(short, long, env = "DMTCP_COORD_PORT", default_value_t = client::DEFAULT_PORT)]
    port: u16,
    /// Write the port actually bound to this file.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1: this machine only). Any
    /// other address (a host name, 0.0.0.0) needs DMTCP_SECRET set, of at
    /// least 16 characters, for clients on other hosts to authenticate with.
    #[arg(
        long,
        alias = "coord-host",
        value_name = "HOST",
        default_value = "127.0.0.1"
    )]
    listen_host: String,
    /// Run in the background.
    #[arg(long)]
    daemon: bool,
    /// Exit when the last supervisor disconnects.
    #[arg(long)]
    exit_on_last: bool,
    /// Directory for checkpoint images and the restart script (default: current directory).
    #[arg(long, alias = "ckptdir", env = "DMTCP_CHECKPOINT_DIR")]
    ckpt_dir: Option<PathBuf>,
    /// Checkpoint every N seconds (0: off).
    #[arg(short, long, env = "DMTCP_CHECKPOINT_INTERVAL", default_value_t = 0)]
    interval: u32,
}

/// `main` of `dmtcp-coordinator`.
pub fn coordinator_main() -> ExitCode {
    let args = CoordArgs::parse();
    match run_coordinator(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmtcp-coordinator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Host names a client may use to reach this coordinator (one secret file each).
fn local_names() -> Vec<String> {
    let mut v = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    if let Ok(h) = std::env::var("DMTCP_COORD_HOST") {
        v.push(h);
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        v.push(h.trim().to_string());
    }
    v.retain(|h| !h.is_empty());
    v.sort();
    v.dedup();
    v
}

fn run_coordinator(args: CoordArgs) -> anyhow::Result<()> {
    let ckpt_dir = match args.ckpt_dir {
        Some(d) => d,
        None => std::env::current_dir().context("current directory")?,
    };
    dmtcp_protocol::runtime::create_ckpt_dir(&ckpt_dir)
        .with_context(|| format!("cannot create checkpoint directory {}", ckpt_dir.display()))?;
    let ckpt_dir = std::fs::canonicalize(&ckpt_dir)
        .with_context(|| format!("checkpoint directory {}", ckpt_dir.display()))?;
    let given_secret = match std::env::var_os("DMTCP_SECRET_FILE") {
        // From a client that started us: a private file, read once and removed.
        Some(f) => {
            let f = PathBuf::from(f);
            let s = dmtcp_protocol::runtime::read_private(&f)?;
            let _ = std::fs::remove_file(&f);
            Some(s.with_context(|| format!("DMTCP_SECRET_FILE {} is empty", f.display()))?)
        }
        None => std::env::var("DMTCP_SECRET").ok().filter(|s| !s.is_empty()),
    };
    // The runtime directory is checked before anything is listened on.
    let runtime_dir = client::tmpdir()?;
    let barrier_timeout = std::env::var("DMTCP_BARRIER_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(120);

    let bind_addrs: Vec<std::net::SocketAddr> = (args.listen_host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --listen-host {}", args.listen_host))?
        .collect();
    let Some(bind_addr) = bind_addrs.first().copied() else {
        bail!("--listen-host {} has no address", args.listen_host);
    };
    let loopback = bind_addr.ip().is_loopback();
    if !loopback {
        match &given_secret {
            Some(s) if s.len() >= MIN_SECRET_LEN => {}
            Some(_) => bail!(
                "listening on {} (not loopback) needs a DMTCP_SECRET of at least {MIN_SECRET_LEN} characters",
                bind_addr.ip()
            ),
            None => bail!(
                "listening on {} (not loopback) needs DMTCP_SECRET set: clients on other hosts authenticate with it",
                bind_addr.ip()
            ),
        }
    }
    let secret = given_secret
        .unwrap_or_else(|| format!("{}{}", crate::random_hex16(), crate::random_hex16()));
    let listener = match TcpListener::bind(bind_addr) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("port {} is already in use", args.port)
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot listen on {bind_addr}"));
        }
    };
    let port = listener.local_addr().context("local address")?.port();

    let mut names = local_names();
    if !names.contains(&args.listen_host) {
        names.push(args.listen_host.clone());
    }
    let secret_files: Vec<PathBuf> = names
        .into_iter()
        .map(|host| client::secret_file(&CoordAddr { host, port }))
        .collect::<Result<_, _>>()?;
    tracing::debug!("runtime directory {}", runtime_dir.display());
    for f in &secret_files {
        crate::write_private(f, secret.as_bytes(), 0o600)
            .with_context(|| format!("cannot write secret file {}", f.display()))?;
    }
    if let Some(pf) = &args.port_file {
        crate::write_private(pf, format!("{port}\n").as_bytes(), 0o600)
            .with_context(|| format!("cannot write port file {}", pf.display()))?;
    }
    if args.port == 0 {
        println!("dmtcp-coordinator: listening on port {port}");
        let _ = std::io::stdout().flush();
    }
    if args.daemon {
        crate::daemon::daemonize(std::env::var_os("DMTCP_LOG").is_some())?;
    }
    init_logging();
    tracing::info!(
        "listening on port {port}, checkpoint directory {}",
        ckpt_dir.display()
    );

    let script_host = if loopback {
        client::DEFAULT_HOST.to_string()
    } else {
        std::env::var("DMTCP_COORD_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| args.listen_host.clone())
    };
    let cfg = Config {
        port,
        script_host,
        ckpt_dir,
        interval: args.interval,
        exit_on_last: args.exit_on_last,
        secret: secret.clone(),
        barrier_timeout: Duration::from_secs(barrier_timeout),
        restart_cmd: crate::script::default_restart_cmd(),
    };
    if !args.daemon && std::io::stdin().is_terminal() {
        let ip = bind_addr.ip();
        let addr = CoordAddr {
            host: if ip.is_unspecified() {
                client::DEFAULT_HOST.to_string()
            } else {
                ip.to_string()
            },
            port,
        };
        std::thread::Builder::new()
            .name("keys".into())
            .spawn(move || interactive(addr, secret))
            .context("starting the interactive thread")?;
    }
    server::serve(listener, cfg);
    for f in &secret_files {
        let _ = std::fs::remove_file(f);
    }
    Ok(())
}

const KEYS_HELP: &str = "Commands:
  h  this help
  c  checkpoint (waits until the images are written)
  l  list processes
  s  status
  k  kill the computation
  q  kill the computation and quit
  i N  checkpoint every N seconds (0: off)";

/// Reads commands from the terminal and runs them through the ordinary protocol.
fn interactive(addr: CoordAddr, secret: String) {
    println!("dmtcp-coordinator: type h for help");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let mut words = line.split_whitespace();
        let req = match (words.next(), words.next()) {
            (None, _) => continue,
            (Some("h" | "?"), _) => {
                println!("{KEYS_HELP}");
                continue;
            }
            (Some("c"), _) => Request::Checkpoint {
                blocking: true,
                incremental: false,
            },
            (Some("l"), _) => Request::List,
            (Some("s"), _) => Request::Status,
            (Some("k"), _) => Request::Kill,
            (Some("q"), _) => Request::Quit,
            (Some("i"), Some(n)) => match n.parse() {
                Ok(n) => Request::SetInterval(n),
                Err(_) => {
                    println!("i: not a number of seconds: {n}");
                    continue;
                }
            },
            (Some(other), _) => {
                println!("unknown command {other:?}; type h for help");
                continue;
            }
        };
        let quit = req == Request::Quit;
        match client::request(&addr, &secret, req.clone()) {
            Ok(r) => {
                print_reply(&req, &r, &addr);
            }
            Err(e) => println!("error: {e:#}"),
        }
        let _ = std::io::stdout().flush();
        if quit {
            return;
        }
    }
}

/// Prints a reply the way `dmtcp-command` does; returns false for failures.
fn print_reply(req: &Request, reply: &Reply, addr: &CoordAddr) -> bool {
    match reply {
        Reply::Ok => {
            match req {
                Request::Kill => println!("every process of the computation has ended"),
                Request::Quit => println!("every process has ended; the coordinator is quitting"),
                Request::SetInterval(0) => println!("periodic checkpoints off"),
                Request::SetInterval(n) => println!("checkpoint interval set to {n} s"),
                _ => println!("ok"),
            }
            true
        }
        Reply::Status(st) => {
            print_status(st, addr);
            true
        }
        Reply::StatusProgress {
            status,
            current,
            last,
        } => {
            print_status(status, addr);
            if let Some(p) = current {
                println!("Checkpoint in progress: {}", describe_progress(p));
            }
            if let Some(p) = last {
                println!("Last checkpoint: {}", describe_progress(p));
            }
            true
        }
        Reply::List(list) => {
            println!("{:>6}  {:>8}  {:<16}  HOST", "VPID", "HOST_PID", "PROGRAM");
            for p in list {
                println!(
                    "{:>6}  {:>8}  {:<16}  {}",
                    p.vpid, p.host_pid, p.prog, p.host
                );
            }
            true
        }
        Reply::CheckpointDone { id, images, millis } => {
            println!(
                "checkpoint {id} done in {millis} ms: {} image(s)",
                images.len()
            );
            for i in images {
                println!("  {}", i.path);
            }
            true
        }
        Reply::CheckpointStarted { id } => {
            println!("checkpoint {id} started");
            true
        }
        Reply::CheckpointFailed { id: 0, reason } => {
            eprintln!("dmtcp-command: checkpoint failed: {reason}");
            false
        }
        Reply::CheckpointFailed { id, reason } => {
            eprintln!("dmtcp-command: checkpoint {id} failed: {reason}");
            false
        }
        Reply::Error(e) => {
            eprintln!("dmtcp-command: {e}");
            false
        }
        Reply::Launches(list) => {
            println!(
                "{:>6}  {:>8}  {:<16}  {:<8}  {:>10}  HOST",
                "VPID", "HOST_PID", "PROGRAM", "LAUNCH", "SUPERVISOR"
            );
            for l in list {
                let p = &l.process;
                let launch = if l.launch.is_empty() { "-" } else { &l.launch };
                println!(
                    "{:>6}  {:>8}  {:<16}  {:<8}  {:>10}  {}",
                    p.vpid, p.host_pid, p.prog, launch, l.supervisor_pid, p.host
                );
            }
            true
        }
        Reply::Committed {
            generation,
            images,
            millis,
            warnings,
            ..
        } => {
            // The generation is what the images and the restart script
            // record (the coordinator's request counter restarts at 1 with
            // each coordinator; generations go on across restarts).
            println!(
                "checkpoint {generation} done in {millis} ms: {} image(s)",
                images.len()
            );
            for i in images {
                println!("  {}", i.path);
            }
            for w in warnings {
                eprintln!("dmtcp-command: warning: {w}");
            }
            true
        }
        Reply::Started { generation, .. } => {
            println!("checkpoint {generation} started");
            true
        }
    }
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// One line of checkpoint figures: bytes written, processes done, time,
/// rate and (in progress, with a previous checkpoint's size to go by)
/// time left.
pub fn describe_progress(p: &CheckpointProgress) -> String {
    let secs = p.millis as f64 / 1000.0;
    let rate = if p.millis > 0 {
        p.bytes as f64 / secs
    } else {
        0.0
    };
    let mut s = format!(
        "{} of {} process(es) done, {} written ({} bytes) in {secs:.1} s, {}/s",
        p.processes_done,
        p.processes,
        mib(p.bytes),
        p.bytes,
        mib(rate as u64)
    );
    if p.processes_done < p.processes && p.expected_bytes > p.bytes && rate > 0.0 {
        let left = (p.expected_bytes - p.bytes) as f64 / rate;
        s.push_str(&format!(
            ", about {left:.0} s left (the last checkpoint wrote {})",
            mib(p.expected_bytes)
        ));
    }
    s
}

/// While a blocking checkpoint runs on a terminal: a progress bar on
/// stderr from the coordinator's status, every 250 ms, until `done`.
fn progress_bar(
    addr: CoordAddr,
    secret: String,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::sync::atomic::Ordering;
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} checkpoint [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        while !done.load(Ordering::Relaxed) {
            if let Ok(Reply::StatusProgress {
                current: Some(p), ..
            }) = client::request(&addr, &secret, Request::Status)
            {
                bar.set_length(p.expected_bytes.max(p.bytes));
                bar.set_position(p.bytes);
                bar.set_message(format!("{}/{} processes", p.processes_done, p.processes));
            }
            bar.tick();
            std::thread::sleep(Duration::from_millis(250));
        }
        bar.finish_and_clear();
    })
}

fn print_status(st: &Status, addr: &CoordAddr) {
    let or_none = |s: &str| {
        if s.is_empty() {
            "(none)".to_string()
        } else {
            s.to_string()
        }
    };
    println!("Coordinator: {addr}");
    println!("Computation: {}", or_none(&st.computation));
    println!("State: {}", st.state);
    println!("Generation: {}", st.generation);
    println!("Supervisors: {}", st.num_supervisors);
    println!("Processes: {}", st.num_processes);
    if st.interval == 0 {
        println!("Checkpoint interval: off");
    } else {
        println!("Checkpoint interval: {} s", st.interval);
    }
    println!("Checkpoint directory: {}", st.ckpt_dir);
    println!("Last images: {}", st.last_images.len());
    for i in &st.last_images {
        println!("  {}", i.path);
    }
}

/// Send a command to a running coordinator.
#[derive(Parser, Debug)]
#[command(name = "dmtcp-command", version, disable_help_flag = true)]
#[command(group(clap::ArgGroup::new("action").required(true).multiple(false)))]
struct CommandArgs {
    /// Coordinator host [env: DMTCP_COORD_HOST, default 127.0.0.1].
    #[arg(short = 'h', long)]
    coord_host: Option<String>,
    /// Coordinator port [env: DMTCP_COORD_PORT, default 7779].
    #[arg(short = 'p', long)]
    coord_port: Option<u16>,
    /// Start a checkpoint and return at once.
    #[arg(short = 'c', long, group = "action")]
    checkpoint: bool,
    /// Checkpoint and wait until the images are written (also -bc, --bc).
    #[arg(long, group = "action")]
    bcheckpoint: bool,
    /// With a checkpoint: write only the pages written since the previous
    /// one (the first such checkpoint is full and starts tracking).
    #[arg(long)]
    incremental: bool,
    /// With a checkpoint: copy the program's memory into the images while
    /// it runs, then freeze it only for what changed meanwhile (shorter
    /// frozen time for large memory; needs a coordinator and supervisors
    /// of protocol 2.6; `DMTCP_PRECOPY=1` does it for every checkpoint of a
    /// launch).
    #[arg(long)]
    precopy: bool,
    /// Show the coordinator's status.
    #[arg(short = 's', long, group = "action")]
    status: bool,
    /// List the processes of the computation, with the launch (dmtcp-run
    /// or dmtcp-restart) each belongs to. A computation whose coordinator
    /// is gone: `pgrep -a 'dmtcp-(run|restart|nsinit)'`, then `kill` its
    /// dmtcp-run or dmtcp-restart.
    #[arg(short = 'l', long, group = "action")]
    list: bool,
    /// Kill every process of the computation.
    #[arg(short = 'k', long, group = "action")]
    kill: bool,
    /// Kill the computation and stop the coordinator.
    #[arg(short = 'q', long, group = "action")]
    quit: bool,
    /// Checkpoint every N seconds (0: off).
    #[arg(short = 'i', long, value_name = "N", group = "action")]
    interval: Option<u32>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// How to find a computation whose coordinator is gone (docs/user-guide.md).
const ORPHAN_HINT: &str = "a computation whose coordinator is gone is listed by `pgrep -a 'dmtcp-(run|restart|nsinit)'`; end it with `kill PID` of its dmtcp-run or dmtcp-restart (or of its dmtcp-nsinit)";

/// DMTCP spells the blocking checkpoint `-bc`, which clap cannot parse as one short flag.
fn dmtcp_argv(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| match a.as_str() {
        "-bc" | "--bc" | "--bcheckpoint" => "--bcheckpoint".to_string(),
        _ => a,
    })
    .collect()
}

/// `main` of `dmtcp-command`.
pub fn command_main() -> ExitCode {
    let args = CommandArgs::parse_from(dmtcp_argv(std::env::args()));
    match run_command(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dmtcp-command: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(args: CommandArgs) -> anyhow::Result<bool> {
    init_logging();
    let addr = CoordAddr::from_args(args.coord_host.clone(), args.coord_port);
    let incremental = args.incremental;
    let checkpoint = |blocking: bool| {
        if args.precopy {
            Request::CheckpointWith {
                blocking,
                incremental,
                precopy: true,
            }
        } else {
            Request::Checkpoint {
                blocking,
                incremental,
            }
        }
    };
    if args.precopy && !(args.checkpoint || args.bcheckpoint) {
        bail!("--precopy goes with a checkpoint (-c or -bc)");
    }
    let req = if args.checkpoint {
        checkpoint(false)
    } else if args.bcheckpoint {
        checkpoint(true)
    } else if args.status {
        Request::Status
    } else if args.list {
        Request::List
    } else if args.kill {
        Request::Kill
    } else if args.quit {
        Request::Quit
    } else if let Some(n) = args.interval {
        Request::SetInterval(n)
    } else {
        bail!("no command given (try --help)");
    };
    let Some(secret) = client::load_secret(&addr)? else {
        // Say "no coordinator" when nothing listens; a missing secret otherwise.
        let probe = client::connect_reusable(
            &std::net::ToSocketAddrs::to_socket_addrs(&(addr.host.as_str(), addr.port))
                .with_context(|| format!("cannot resolve {}", addr.host))?
                .next()
                .with_context(|| format!("no address for {}", addr.host))?,
            Duration::from_secs(5),
        );
        if let Err(e) = probe {
            let cause = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "connection refused".to_string()
            } else {
                e.to_string()
            };
            if args.list || args.kill || args.quit {
                bail!("no coordinator at {addr} ({cause}); {ORPHAN_HINT}");
            }
            bail!("no coordinator at {addr} ({cause})");
        }
        bail!(
            "no secret for the coordinator at {addr}: set DMTCP_SECRET or create {}",
            client::secret_file(&addr)?.display()
        );
    };
    // A progress bar only on a terminal (quiet otherwise).
    let bar = (args.bcheckpoint && std::io::stderr().is_terminal()).then(|| {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = progress_bar(addr.clone(), secret.clone(), done.clone());
        (done, h)
    });
    let reply = client::request(&addr, &secret, req.clone());
    if let Some((done, h)) = bar {
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = h.join();
    }
    Ok(print_reply(&req, &reply?, &addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bc_is_mapped() {
        let argv = ["dmtcp_command", "-bc", "-p", "7"].map(String::from);
        let a = CommandArgs::parse_from(dmtcp_argv(argv.into_iter()));
        assert!(a.bcheckpoint);
        assert_eq!(a.coord_port, Some(7));
        let argv = ["dmtcp_command", "--bc"].map(String::from);
        assert!(CommandArgs::parse_from(dmtcp_argv(argv.into_iter())).bcheckpoint);
        let argv = ["dmtcp_command", "-i", "30", "-h", "node2"].map(String::from);
        let a = CommandArgs::parse_from(dmtcp_argv(argv.into_iter()));
        assert_eq!(a.interval, Some(30));
        assert_eq!(a.coord_host.as_deref(), Some("node2"));
    }

    #[test]
    fn precopy_parsed() {
        let argv = ["dmtcp_command", "-bc", "--precopy"].map(String::from);
        let a = CommandArgs::parse_from(dmtcp_argv(argv.into_iter()));
        assert!(a.bcheckpoint && a.precopy);
    }

    #[test]
    fn one_action_only() {
        let argv = ["dmtcp_command", "-s", "-l"].map(String::from);
        assert!(CommandArgs::try_parse_from(dmtcp_argv(argv.into_iter())).is_err());
    }
}
