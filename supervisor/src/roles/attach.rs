//! `dmtcp-attach PID`: brings a running process tree that was not started
//! by `dmtcp-run` under checkpoint control.
//!
//! The tree is not traced between checkpoints: [`Members`] keeps who
//! belongs to it by looking at `/proc` (descendants of members, and with
//! `--session`/`--pgid` the target's session or process group), and each
//! checkpoint freezes the members with ptrace exactly as for a launched
//! computation (`kernel/freeze.rs`). Nothing is loaded into the programs:
//! the capture reads everything from outside (registers by ptrace, kernel
//! state by injected syscalls and `/proc`), so an attached program only
//! lacks the application API (`dmtcp.h`), which needs the preloaded
//! library. The attach itself seizes and interrupts every thread once, to
//! prove it can (permissions, tracers) and to time the stop, then lets go.
//!
//! `dmtcp-attach` stays in the foreground as the tree's supervisor until
//! every member has ended, or until it gets SIGTERM/SIGINT/SIGHUP (what
//! `dmtcp-attach --detach PID` sends it): then it lets the tree run on
//! untouched. If it is killed, the tree runs on too: between checkpoints
//! there is nothing to undo, and during one the kernel ends the ptrace
//! stops of a dead tracer.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use dmtcp_coordinator::client::request;
use dmtcp_protocol::{Reply, Request};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::coord_args::{CoordArgs, ImageArgs};
use crate::kernel::freeze::{self, FrozenProcess};
use crate::kernel::pid::HostPid;
use crate::kernel::procfs::{self, Mem};
use crate::kernel::ptrace;
use crate::kernel::remote::{syscall_insn, Injector};
use crate::roles::members::{proc_stat, Members, Scope};
use crate::roles::session::{self, Session, SessionConfig};

#[derive(Parser, Debug)]
#[command(
    name = "dmtcp-attach",
    version,
    disable_help_flag = true,
    about = "Bring a running process tree under checkpoint control (its pids are kept)"
)]
struct Args {
    #[command(flatten)]
    coord: CoordArgs,
    #[command(flatten)]
    image: ImageArgs,
    /// After the first checkpoint, write only the pages written since.
    #[arg(long = "incremental")]
    incremental: bool,
    /// Also every process of PID's session (daemonized members that were
    /// reparented away from the tree).
    #[arg(long = "session", conflicts_with = "pgid")]
    session: bool,
    /// Also every process of PID's process group.
    #[arg(long = "pgid")]
    pgid: bool,
    /// Checkpoint once (waiting until the images are durable), then let
    /// the tree run on untouched (CRIU's dump --leave-running).
    #[arg(long = "checkpoint-detach", alias = "leave-running")]
    checkpoint_detach: bool,
    /// Tell the dmtcp-attach that supervises PID to let it go (the tree
    /// runs on untouched), and wait until it has.
    #[arg(long = "detach", conflicts_with = "checkpoint_detach")]
    detach: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The process to attach to (its threads and descendants come along).
    #[arg(value_name = "PID")]
    pid: String,
}

fn parse_pid(s: &str) -> anyhow::Result<HostPid> {
    match s.trim().parse::<i32>() {
        Ok(p) if p > 0 => Ok(HostPid(p)),
        _ => bail!("{s:?} is not a process id"),
    }
}

/// The ids of `/proc/PID/status` `Uid:` or `Gid:` (real, effective, saved, fs).
fn ids(status: &[(String, String)], key: &str) -> Vec<u32> {
    procfs::field(status, key)
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether we hold CAP_SYS_PTRACE (bit 19, effective) in our user namespace.
fn can_ptrace_anyone() -> bool {
    procfs::status(HostPid(std::process::id() as i32))
        .map(|st| procfs::hex_field(&st, "CapEff") & (1u64 << 19) != 0)
        .unwrap_or(false)
}

fn yama_scope() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The Yama restriction that forbids us to trace `pid`, as one sentence.
fn yama_refusal(pid: HostPid, privileged: bool) -> Option<String> {
    let scope = yama_scope()?;
    let what = match scope {
        1 if !privileged => "ptrace is restricted to a process's ancestors (kernel.yama.ptrace_scope = 1): run `sysctl kernel.yama.ptrace_scope=0` as root, or run dmtcp-attach as root",
        2 if !privileged => "ptrace is restricted to administrators (kernel.yama.ptrace_scope = 2): run dmtcp-attach as root (CAP_SYS_PTRACE)",
        3 => "ptrace is disabled on this system (kernel.yama.ptrace_scope = 3, fixed until reboot)",
        _ => return None,
    };
    Some(format!("cannot attach to pid {pid}: {what}"))
}

/// `pid`'s tracer, as "pid T (comm)", if it has one.
fn tracer(pid: HostPid) -> Option<String> {
    let st = procfs::status(pid).ok()?;
    let t: i32 = procfs::field(&st, "TracerPid")?.parse().ok()?;
    (t != 0).then(|| {
        let comm = procfs::comm(HostPid(t), None).unwrap_or_else(|_| "?".into());
        format!("pid {t} ({comm})")
    })
}

fn ns_link(pid: &str, ns: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether `pid` is one of our ancestors (attaching to it would make the
/// attacher and the coordinator members of the tree).
fn is_our_ancestor(pid: HostPid) -> bool {
    let mut p = std::process::id() as i32;
    for _ in 0..4096 {
        let Some(st) = proc_stat(p) else {
            return false;
        };
        if st.ppid == pid.0 {
            return true;
        }
        if st.ppid <= 1 {
            return false;
        }
        p = st.ppid;
    }
    false
}

/// Everything that can be told before touching the process: one sentence
/// naming the reason, nothing changed.
fn preflight(pid: HostPid) -> anyhow::Result<u64> {
    if pid.0 == 1 {
        bail!("cannot attach to pid 1 (the init of this pid namespace)");
    }
    if pid.0 == std::process::id() as i32 {
        bail!("cannot attach to dmtcp-attach itself");
    }
    let status = match procfs::status(pid) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!("no such process: pid {pid}"),
        Err(e) => bail!("cannot read /proc/{pid}/status: {e}"),
    };
    if procfs::field(&status, "Tgid") != Some(&pid.0.to_string()) {
        bail!(
            "pid {pid} is a thread of process {}: attach to the process",
            procfs::field(&status, "Tgid").unwrap_or("?")
        );
    }
    let stat = proc_stat(pid.0).ok_or_else(|| anyhow!("no such process: pid {pid}"))?;
    if procfs::stat_fields(pid)
        .ok()
        .and_then(|f| f.first().cloned())
        .is_some_and(|s| s == "Z")
    {
        bail!("pid {pid} is a zombie (it has exited; its parent has not collected it)");
    }
    if is_our_ancestor(pid) {
        bail!("pid {pid} is an ancestor of dmtcp-attach: run dmtcp-attach from outside its tree");
    }
    let privileged = can_ptrace_anyone();
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let uids = ids(&status, "Uid");
    let comm = procfs::comm(pid, None).unwrap_or_default();
    if !privileged && uids.iter().any(|&u| u != euid) {
        bail!(
            "pid {pid} ({comm}) belongs to uid {} and you are uid {euid}: attach as its user or as root",
            uids.first().copied().unwrap_or(0)
        );
    }
    // A process that is not dumpable has /proc/PID/* owned by root (the
    // directory itself keeps its owner's uid); its own unprivileged user
    // could not trace it anyway.
    let proc_owner = std::fs::metadata(format!("/proc/{pid}/fd"))
        .map(|m| m.uid())
        .unwrap_or(0);
    if proc_owner == 0 && uids.first().is_some_and(|&u| u != 0) {
        bail!(
            "pid {pid} ({comm}) is not dumpable (prctl(PR_SET_DUMPABLE, 0) or a set-id program): it refuses to be inspected"
        );
    }
    // Our view of pids must be the tree's: its pids are what the images keep.
    let me = std::process::id().to_string();
    let (theirs, ours) = (ns_link(&pid.0.to_string(), "pid"), ns_link(&me, "pid"));
    if let (Some(t), Some(o)) = (&theirs, &ours) {
        if t != o {
            bail!(
                "pid {pid} ({comm}) is in another pid namespace ({t}, yours is {o}): run dmtcp-attach inside that namespace"
            );
        }
    }
    let (theirs, ours) = (ns_link(&pid.0.to_string(), "user"), ns_link(&me, "user"));
    match (&theirs, &ours) {
        (Some(t), Some(o)) if t != o => bail!(
            "pid {pid} ({comm}) is in another user namespace ({t}, yours is {o}): run dmtcp-attach inside that namespace"
        ),
        (None, Some(_)) if !privileged => bail!(
            "pid {pid} ({comm}) cannot be inspected by you (its namespaces are not readable: another user's, or not dumpable)"
        ),
        _ => {}
    }
    if let Some(t) = tracer(pid) {
        bail!("pid {pid} ({comm}) is already traced by {t}: detach the debugger or tracer first");
    }
    if !privileged {
        if let Some(why) = yama_refusal(pid, privileged) {
            bail!("{why}");
        }
    }
    Ok(stat.start)
}

/// Turns a ptrace failure on member `pid` into the reason, in one line.
fn seize_refusal(pid: HostPid, err: &io::Error) -> String {
    let comm = procfs::comm(pid, None).unwrap_or_default();
    if let Some(t) = tracer(pid) {
        return format!(
            "pid {pid} ({comm}) is already traced by {t}: detach the debugger or tracer first"
        );
    }
    if ptrace::errno(err) == Some(libc::EPERM) {
        if let Some(why) = yama_refusal(pid, can_ptrace_anyone()) {
            return why;
        }
        return format!("cannot attach to pid {pid} ({comm}): not permitted ({err})");
    }
    format!("cannot attach to pid {pid} ({comm}): {err}")
}

/// `PR_GET_DUMPABLE` of a frozen process, asked inside it (root's own
/// processes: their /proc owner does not tell).
fn dumpable(fp: &mut FrozenProcess) -> io::Result<bool> {
    let leader = fp.threads[0].tid;
    let maps = procfs::maps(fp.pid)?;
    let mem = Mem::open(fp.pid, false)?;
    let insn = syscall_insn(fp.pid, &maps, &mem)?;
    let mask = ptrace::get_sigmask(leader)?;
    ptrace::set_sigmask(leader, u64::MAX)?;
    fp.threads[0].touched = true;
    let r = Injector::new(leader, insn).and_then(|mut inj| {
        inj.syscall(
            libc::SYS_prctl,
            [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
        )
    });
    ptrace::set_sigmask(leader, mask)?;
    Ok(r? == 1)
}

/// Lets a process of the trial freeze go. A sleep we interrupted is
/// issued again whole, not continued through restart_syscall: a
/// checkpoint right after the attach could otherwise catch the thread
/// inside restart_syscall, which a restored process (no restart block)
/// cannot continue. The cost: that one sleep starts over (it may
/// oversleep).
fn release(mut fp: FrozenProcess) {
    for t in fp.threads.iter_mut() {
        if ptrace::fix_interrupted_syscall(&mut t.regs, false) {
            t.touched = true;
        }
    }
    let pid = fp.pid;
    if let Err(e) = fp.thaw() {
        tracing::warn!("letting pid {pid} go after the attach check: {e}");
    }
}

/// Seizes and stops every thread of each member in turn, checks what only
/// a stopped process tells, and lets it go at once: nothing stays
/// attached, whatever happens, and each process is stopped only for its
/// own check. Returns the longest time one process was stopped and the
/// number of threads.
fn trial_freeze(members: &mut Members) -> anyhow::Result<(Duration, usize)> {
    let mut done: std::collections::HashSet<HostPid> = Default::default();
    let mut longest = Duration::ZERO;
    let mut threads = 0;
    // Repeat until a pass finds nothing new: a member may fork meanwhile.
    loop {
        let mut fresh = false;
        for pid in members.refresh() {
            if done.contains(&pid) || crate::resources::tree::is_zombie(pid) {
                continue;
            }
            fresh = true;
            done.insert(pid);
            let t0 = Instant::now();
            match freeze::freeze(pid) {
                Ok(mut fp) => {
                    let root_owned = procfs::status(pid)
                        .map(|st| ids(&st, "Uid").first() == Some(&0))
                        .unwrap_or(false);
                    let nondumpable = root_owned && matches!(dumpable(&mut fp), Ok(false));
                    threads += fp.threads.len();
                    release(fp);
                    longest = longest.max(t0.elapsed());
                    if nondumpable {
                        let comm = procfs::comm(pid, None).unwrap_or_default();
                        bail!(
                            "pid {pid} ({comm}) is not dumpable (prctl(PR_SET_DUMPABLE, 0) or a set-id program): it refuses to be inspected"
                        );
                    }
                }
                Err(e) if ptrace::errno(&e) == Some(libc::ESRCH) => {}
                Err(e) => bail!("{}", seize_refusal(pid, &e)),
            }
        }
        if !fresh {
            break;
        }
    }
    Ok((longest, threads))
}

/// Where the attacher of `pid` says who it is (for `--detach`).
fn registry_file(pid: HostPid) -> anyhow::Result<PathBuf> {
    let dir = dmtcp_protocol::runtime::dir().map_err(|e| anyhow!("{e}"))?;
    Ok(dir.join(format!("attach-{}", pid.0)))
}

/// The live attacher of `pid` that registered itself, if any.
fn attacher_of(pid: HostPid) -> Option<i32> {
    let text = std::fs::read_to_string(registry_file(pid).ok()?).ok()?;
    let mut words = text.split_whitespace();
    let a: i32 = words.next()?.parse().ok()?;
    let start: u64 = words.next()?.parse().ok()?;
    proc_stat(a)
        .is_some_and(|s| s.start == start && !s.zombie)
        .then_some(a)
}

/// `dmtcp-attach --detach PID`: signals the attacher of PID and waits.
fn detach(pid: HostPid) -> anyhow::Result<()> {
    let file = registry_file(pid)?;
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("pid {pid} is not attached (no dmtcp-attach of yours supervises it)")
        }
        Err(e) => bail!("{}: {e}", file.display()),
    };
    let mut words = text.split_whitespace();
    let attacher: i32 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| anyhow!("{}: malformed", file.display()))?;
    let start: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    // Exited counts as gone even before its parent collects it.
    let alive = || proc_stat(attacher).is_some_and(|s| s.start == start && !s.zombie);
    if !alive() {
        let _ = std::fs::remove_file(&file);
        bail!("pid {pid} is not attached (its dmtcp-attach, pid {attacher}, is gone)");
    }
    // SAFETY: kill with integer arguments; the start time proved it is
    // the attacher that wrote the file (in our private runtime dir).
    if unsafe { libc::kill(attacher, libc::SIGTERM) } != 0 {
        bail!(
            "signalling dmtcp-attach (pid {attacher}): {}",
            io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive() {
        if Instant::now() > deadline {
            bail!("dmtcp-attach (pid {attacher}) did not let pid {pid} go within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("dmtcp-attach: pid {pid} detached");
    Ok(())
}

/// Removes the registry file when the attacher ends.
struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn handled_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        s.add(sig);
    }
    s
}

/// The session settings from the command line (a new launch).
fn session_config(args: &Args) -> anyhow::Result<SessionConfig> {
    session::new_launch_config(&args.coord, &args.image, "dmtcp-attach", args.incremental)
}

/// `dmtcp-attach NSINIT_PID`: takes back the computation of a
/// `dmtcp-nsinit` whose supervisor died ([`crate::roles::adopt`]).
fn take_back(args: &Args, pid: HostPid) -> anyhow::Result<i32> {
    crate::roles::adopt::adopt(pid, session_config(args)?)
}

fn run() -> anyhow::Result<i32> {
    let args = Args::parse();
    let pid = parse_pid(&args.pid)?;
    if args.detach {
        detach(pid)?;
        return Ok(0);
    }
    if crate::roles::adopt::is_nsinit(pid) {
        return take_back(&args, pid);
    }
    let start = preflight(pid)?;
    if let Some(a) = attacher_of(pid) {
        bail!("pid {pid} is already attached (dmtcp-attach pid {a}; dmtcp-attach --detach {pid} lets it go)");
    }
    let scope = if args.session {
        Scope::Session(proc_stat(pid.0).map(|s| s.sid).unwrap_or(0))
    } else if args.pgid {
        Scope::Pgid(proc_stat(pid.0).map(|s| s.pgid).unwrap_or(0))
    } else {
        Scope::Tree
    };
    if let Scope::Session(s) | Scope::Pgid(s) = scope {
        // A session or group we are in ourselves would take us along.
        let me = proc_stat(std::process::id() as i32);
        let ours = me.is_some_and(|m| match scope {
            Scope::Session(_) => m.sid == s,
            _ => m.pgid == s,
        });
        if ours || s <= 1 {
            bail!(
                "pid {pid}'s {} {s} is dmtcp-attach's own (or init's): start dmtcp-attach from another session (e.g. with setsid)",
                if matches!(scope, Scope::Session(_)) { "session" } else { "process group" }
            );
        }
    }
    let mut members = Members::new(pid, start, scope);
    let (held, threads) = trial_freeze(&mut members)?;
    let n = members.pids().len();
    tracing::info!("attach: {n} process(es), {threads} thread(s) stopped for {held:?}");

    let cfg = session_config(&args)?;
    let (addr, secret) = (cfg.addr.clone(), cfg.secret.clone());
    let (conn, computation, _) = session::connect(&cfg)?;
    if let Some(n) = args.image.interval {
        request(&addr, &secret, Request::SetInterval(n))?;
    }
    crate::kernel::sys::no_sigchld_for_stops().map_err(|e| anyhow!("sigaction(SIGCHLD): {e}"))?;
    handled_signals()
        .thread_block()
        .map_err(|e| anyhow!("sigprocmask: {e}"))?;
    let own = std::process::id() as i32;
    let own_start = proc_stat(own).map(|s| s.start).unwrap_or(0);
    let reg = registry_file(pid)?;
    dmtcp_coordinator::write_private(&reg, format!("{own} {own_start}\n").as_bytes(), 0o600)
        .map_err(|e| anyhow!("{}: {e}", reg.display()))?;
    let _registered = Registered(reg);
    let session = Session::attached(cfg, members, conn, computation.clone());
    let waker = session.waker();
    let worker = std::thread::Builder::new()
        .name("session".into())
        .spawn(move || session.run())
        .context("spawning the session thread")?;
    // "attached" once the coordinator lists the tree (dmtcp-command works
    // from then on).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !worker.is_finished() {
        // Clients of protocol 2.1 and later get `Launches`, older ones `List`.
        let listed = match request(&addr, &secret, Request::List) {
            Ok(Reply::List(l)) => l.iter().any(|e| e.host_pid == pid.0 as u32),
            Ok(Reply::Launches(l)) => l.iter().any(|e| e.process.host_pid == pid.0 as u32),
            _ => false,
        };
        if listed {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "dmtcp-attach: attached to pid {pid}: {n} process(es), {threads} thread(s), stopped {:.1} ms (the longest of one process); computation {computation}",
        held.as_secs_f64() * 1e3
    );
    if args.checkpoint_detach {
        let reply = request(
            &addr,
            &secret,
            Request::Checkpoint {
                blocking: true,
                incremental: false,
            },
        );
        waker.wake();
        let _ = worker.join();
        return match reply? {
            Reply::CheckpointDone { images, .. } => {
                for i in images {
                    println!("{}", i.path);
                }
                eprintln!("dmtcp-attach: checkpoint written; pid {pid} detached");
                Ok(0)
            }
            Reply::Committed {
                images, warnings, ..
            } => {
                for w in warnings {
                    eprintln!("dmtcp-attach: warning: {w}");
                }
                for i in images {
                    println!("{}", i.path);
                }
                eprintln!("dmtcp-attach: checkpoint written; pid {pid} detached");
                Ok(0)
            }
            Reply::CheckpointFailed { reason, .. } => {
                bail!("checkpoint failed: {reason} (pid {pid} detached, running on)")
            }
            other => bail!("unexpected answer to the checkpoint: {other:?}"),
        };
    }
    let sfd = SignalFd::with_flags(&handled_signals(), SfdFlags::SFD_CLOEXEC)
        .map_err(|e| anyhow!("signalfd: {e}"))?;
    loop {
        if worker.is_finished() {
            let _ = worker.join();
            eprintln!("dmtcp-attach: every process of pid {pid}'s tree has ended");
            return Ok(0);
        }
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&sfd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 200) };
        if r > 0 {
            if let Ok(Some(info)) = sfd.read_signal() {
                tracing::info!("signal {}: detaching", info.ssi_signo);
                waker.wake();
                let _ = worker.join();
                eprintln!("dmtcp-attach: pid {pid} detached, running on");
                return Ok(0);
            }
        }
    }
}

/// Entry point of `dmtcp-attach`.
pub fn main() -> ! {
    crate::init_logging();
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("dmtcp-attach: {e:#}");
            std::process::exit(1)
        }
    }
}
