//! Plugin hooks: the supervisor's side of the inject library's hook thread.
//!
//! A process with plugins has a hook thread waiting on a request pipe; the
//! state page's hook area (`inject/src/abi.rs`) gives its tid and the pipe
//! ends, which we duplicate with `pidfd_getfd`. [`run`] asks every such
//! process for one moment at once and reads the replies: which hook starts
//! (for messages), barriers (released when every process is at one or
//! done), done. A hook that does not finish within [`timeout`] or a process
//! that dies in one fails the moment with the plugin and hook named, except
//! that a process may end during PRESUSPEND (it is then not checkpointed).
//! A process without plugins has no hook area: nothing is done for it.
//!
//! Wiring: the session's Suspend barrier runs PRESUSPEND before freezing,
//! and PRECHECKPOINT with only the hook threads thawed; the Resume barrier
//! runs RESUME the same way before the thaw; the restorer runs RESTART
//! before releasing the restored processes. After each thaw, [`running`].

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::agent::abi::{self, hook, off};
use crate::agent::find_state;
use crate::kernel::pid::HostPid;
use crate::kernel::procfs::{self, Mem};

/// One process with a hook thread.
pub struct HookProc {
    pub pid: HostPid,
    /// The state page.
    page: crate::kernel::pid::RemoteAddr,
    /// The hook thread (host tid).
    pub tid: HostPid,
    req: File,
    rep: File,
    buf: Vec<u8>,
    state: St,
    /// The last hook that started (`plugin DMTCP_EVENT_...`).
    last: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum St {
    Running,
    Barrier(String),
    Done,
    /// The reply pipe closed: the process ended (or exec'd) in the moment.
    Ended,
    Failed(String),
}

/// How long one moment may take: `DMTCP_PLUGIN_TIMEOUT` seconds (default
/// 60).
pub fn timeout() -> Duration {
    let secs = std::env::var("DMTCP_PLUGIN_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs.max(1))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

/// The host tid of the thread whose tid in the namespace is `vtid`.
fn host_tid(pid: HostPid, vtid: i32) -> Option<HostPid> {
    procfs::tasks(pid).ok()?.into_iter().find(|&t| {
        procfs::status_of(pid, Some(t))
            .ok()
            .and_then(|kv| procfs::innermost_pid(&kv))
            .is_some_and(|v| v.0 == vtid)
    })
}

/// The hook thread of `pid`, if it has plugins.
fn find_one(pid: HostPid) -> Option<HookProc> {
    let addr = find_state(pid)?;
    let mem = Mem::open(pid, false).ok()?;
    let mut b = [0u8; abi::HOOKS_SIZE];
    mem.read(addr, &mut b).ok()?;
    crate::agent::decode(addr.0, &b).ok()?;
    if (u32_at(&b, off::SIZE) as usize) < abi::HOOKS_SIZE
        || u32_at(&b, off::HOOK_VERSION) != abi::HOOK_VERSION
    {
        return None;
    }
    let vtid = u32_at(&b, off::HOOK_TID) as i32;
    let req_fd = u32_at(&b, off::HOOK_REQ_FD) as i32;
    let rep_fd = u32_at(&b, off::HOOK_REPLY_FD) as i32;
    let tid = host_tid(pid, vtid)?;
    // Only pipes: the program may have closed the library's fds and got
    // their numbers for files or sockets of its own, whose data we must
    // never read or write.
    let steal = |fd| match crate::kernel::sys::steal_fd(pid.0, fd) {
        Ok(f) => {
            let f = File::from(f);
            let pipe = f
                .metadata()
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
            if !pipe {
                tracing::debug!("pid {pid}: fd {fd} is no longer the plugin hook pipe");
            }
            pipe.then_some(f)
        }
        Err(e) => {
            tracing::warn!("pid {pid}: plugin hook pipe (fd {fd}): {e}");
            None
        }
    };
    Some(HookProc {
        pid,
        page: addr,
        tid,
        req: steal(req_fd)?,
        rep: steal(rep_fd)?,
        buf: Vec::new(),
        state: St::Done,
        last: String::new(),
    })
}

/// The processes among `pids` that have plugins.
pub fn find(pids: &[HostPid]) -> Vec<HookProc> {
    pids.iter().filter_map(|&p| find_one(p)).collect()
}

fn request(h: &mut HookProc, kind: u32, arg: u32) -> std::io::Result<()> {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&kind.to_le_bytes());
    b[4..].copy_from_slice(&arg.to_le_bytes());
    h.req.write_all(&b)
}

/// Reads what is there and updates the state from complete replies.
fn pump(h: &mut HookProc) {
    let mut chunk = [0u8; 8192];
    match h.rep.read(&mut chunk) {
        Ok(0) => {
            h.state = St::Ended;
            return;
        }
        Ok(n) => h.buf.extend_from_slice(&chunk[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
        Err(e) => {
            h.state = St::Failed(format!("reading the hook thread's replies: {e}"));
            return;
        }
    }
    while h.buf.len() >= 8 {
        let kind = u32_at(&h.buf, 0);
        let len = u32_at(&h.buf, 4) as usize;
        if len > hook::MAX_TEXT {
            h.state = St::Failed(format!("bad reply from the hook thread ({len} bytes)"));
            return;
        }
        if h.buf.len() < 8 + len {
            break;
        }
        let text = String::from_utf8_lossy(&h.buf[8..8 + len]).into_owned();
        h.buf.drain(..8 + len);
        match kind {
            hook::REP_START => h.last = text,
            hook::REP_BARRIER => h.state = St::Barrier(text),
            hook::REP_DONE => h.state = St::Done,
            hook::REP_ERROR => h.state = St::Failed(text),
            other => h.state = St::Failed(format!("unknown reply {other} from the hook thread")),
        }
    }
}

/// Drops replies left over from an earlier moment that timed out.
fn drain(h: &mut HookProc) {
    while let Ok(r) = crate::kernel::sys::poll_readable(&[h.rep.as_raw_fd()], 0) {
        if !r[0] {
            break;
        }
        let mut chunk = [0u8; 8192];
        match h.rep.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    h.buf.clear();
}

/// Global barriers across the supervisors of a computation (through the
/// coordinator, protocol 2.3).
pub trait Global {
    /// Every hook thread here is at global barrier `name` (or done): wait
    /// until the coordinator says every supervisor is, or `deadline`.
    fn wait(&mut self, moment: u32, name: &str, deadline: Instant) -> Result<(), String>;
    /// Every hook thread here is done with `moment`.
    fn done(&mut self, moment: u32);
}

/// Runs `moment` (`abi::hook::MOMENT_*`) in every process of `procs` at
/// once. Barriers: when every process is at a barrier or done, those at a
/// barrier go on. Err names the process, plugin and hook that failed.
pub fn run(procs: &mut [HookProc], moment: u32) -> Result<(), String> {
    run_with(procs, moment, None)
}

/// [`run`], with global barriers (names not starting with `local:`)
/// released only when `global` says every supervisor reached them.
pub fn run_with(
    procs: &mut [HookProc],
    moment: u32,
    mut global: Option<&mut dyn Global>,
) -> Result<(), String> {
    let t0 = Instant::now();
    let limit = timeout();
    let deadline = t0 + limit;
    let name = hook::moment_name(moment);
    for h in procs.iter_mut() {
        drain(h);
        h.last.clear();
        h.state = match request(h, hook::REQ_RUN, moment) {
            Ok(()) => St::Running,
            // Ended already (a hook of a process asked before it may have
            // killed it).
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => St::Ended,
            Err(e) => St::Failed(format!("cannot reach the hook thread: {e}")),
        };
    }
    loop {
        let open: Vec<usize> = (0..procs.len())
            .filter(|&i| procs[i].state == St::Running)
            .collect();
        let at_barrier: Vec<usize> = (0..procs.len())
            .filter(|&i| matches!(procs[i].state, St::Barrier(_)))
            .collect();
        if open.is_empty() {
            if at_barrier.is_empty() {
                break;
            }
            // Local barriers first; a global one waits for the others.
            let local: Vec<usize> = at_barrier
                .iter()
                .copied()
                .filter(|&i| matches!(&procs[i].state, St::Barrier(b) if b.starts_with("local:")))
                .collect();
            let at_barrier = if !local.is_empty() {
                local
            } else if let Some(g) = global.as_deref_mut() {
                let bname = match &procs[at_barrier[0]].state {
                    St::Barrier(b) => b.clone(),
                    _ => String::new(),
                };
                if let Err(e) = g.wait(moment, &bname, deadline) {
                    for i in at_barrier {
                        let h = &mut procs[i];
                        let _ = request(h, hook::REQ_GO, 0);
                        h.state = St::Failed(format!("global barrier {bname:?}: {e}"));
                    }
                    break;
                }
                at_barrier
            } else {
                at_barrier
            };
            for i in at_barrier {
                let h = &mut procs[i];
                h.state = match request(h, hook::REQ_GO, 0) {
                    Ok(()) => St::Running,
                    Err(e) => St::Failed(format!("cannot release the barrier: {e}")),
                };
            }
            continue;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(200));
        let fds: Vec<i32> = open.iter().map(|&i| procs[i].rep.as_raw_fd()).collect();
        let ready = crate::kernel::sys::poll_readable(&fds, wait.as_millis() as i32)
            .map_err(|e| format!("waiting for plugin hooks: {e}"))?;
        for (k, &i) in open.iter().enumerate() {
            if ready[k] {
                pump(&mut procs[i]);
            }
        }
    }
    if let Some(g) = global {
        g.done(moment);
    }
    let mut failures = Vec::new();
    for h in procs.iter_mut() {
        let what = if h.last.is_empty() {
            format!("{name} hooks")
        } else {
            format!("hook {}", h.last)
        };
        match &h.state {
            St::Done => {}
            // As in DMTCP, a process may end during PRESUSPEND (another
            // process's hook killed it, say): it is simply not checkpointed.
            // But a hook that crashed its process (a fault signal) fails
            // the checkpoint, naming it.
            St::Ended if moment == hook::MOMENT_PRESUSPEND => match fault_signal(h.pid) {
                Some(sig) => failures.push(format!(
                    "pid {}: plugin {what}: the process died in it (signal {sig})",
                    h.pid
                )),
                None => tracing::info!("pid {}: ended during {name}", h.pid),
            },
            St::Ended => failures.push(format!(
                "pid {}: plugin {what}: the process died in it",
                h.pid
            )),
            St::Failed(why) => failures.push(format!("pid {}: plugin {what}: {why}", h.pid)),
            St::Running => {
                let mut msg = format!(
                    "pid {}: plugin {what} did not return within {} s (DMTCP_PLUGIN_TIMEOUT)",
                    h.pid,
                    limit.as_secs()
                );
                match disable(h) {
                    Ok(()) => {
                        msg.push_str("; the plugins of this process are disabled from now on");
                        tracing::warn!("pid {}: plugin {what} hangs: the plugins of this process get no more events; later checkpoints go on without them", h.pid);
                    }
                    Err(e) => tracing::warn!("pid {}: disabling its hung plugins: {e}", h.pid),
                }
                failures.push(msg)
            }
            St::Barrier(_) => failures.push(format!(
                "pid {}: plugin {what} did not return within {} s (DMTCP_PLUGIN_TIMEOUT)",
                h.pid,
                limit.as_secs()
            )),
        }
        // A thread left at a barrier by a failure elsewhere goes on.
        if matches!(h.state, St::Barrier(_)) {
            let _ = request(h, hook::REQ_GO, 0);
        }
    }
    tracing::debug!(
        "{name} hooks of {} process(es) in {:?}",
        procs.len(),
        t0.elapsed()
    );
    match failures.is_empty() {
        true => Ok(()),
        false => Err(failures.join("; ")),
    }
}

/// The fault signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS,
/// SIGTRAP) that ended `pid`, read from its zombie's `/proc/PID/stat`
/// exit code (waited for up to 200 ms: the reply pipe closes before the
/// process is a zombie). None when it ended otherwise (killed, exited) or
/// is already reaped.
fn fault_signal(pid: HostPid) -> Option<i32> {
    let faults = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGABRT,
        libc::SIGSYS,
        libc::SIGTRAP,
    ];
    for _ in 0..20 {
        let f = procfs::stat_fields(pid).ok()?;
        if f.first().is_some_and(|s| s == "Z" || s == "X") {
            let code = procfs::stat_field(&f, 52).ok()? as i32;
            let sig = code & 0x7f;
            return faults.contains(&sig).then_some(sig);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The hook thread of `h` is stuck in a plugin: marks its hook area
/// ([`abi::HOOK_HUNG`]) so that [`find`] skips the process from now on
/// (in this supervisor, a later one, and after a restart: the mark is in
/// the image).
fn disable(h: &HookProc) -> std::io::Result<()> {
    let mem = Mem::open(h.pid, true)?;
    mem.write(
        crate::kernel::pid::RemoteAddr(h.page.0 + off::HOOK_VERSION as u64),
        &abi::HOOK_HUNG.to_le_bytes(),
    )
}

/// Gives each process this program's environment (`dmtcp-restart`'s, for
/// `dmtcp_get_restart_env`), cut to [`hook::MAX_ENV`] bytes at an entry
/// boundary, so the write never blocks on an empty pipe.
pub fn send_restart_env(procs: &mut [HookProc]) {
    use std::os::unix::ffi::OsStrExt;
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        let n = k.len() + v.len() + 2;
        if env.len() + n > hook::MAX_ENV {
            break;
        }
        env.extend_from_slice(k.as_bytes());
        env.push(b'=');
        env.extend_from_slice(v.as_bytes());
        env.push(0);
    }
    for h in procs.iter_mut() {
        drain(h);
        let mut msg = Vec::with_capacity(8 + env.len());
        msg.extend_from_slice(&hook::REQ_ENV.to_le_bytes());
        msg.extend_from_slice(&(env.len() as u32).to_le_bytes());
        msg.extend_from_slice(&env);
        if let Err(e) = h.req.write_all(&msg) {
            tracing::warn!("pid {}: restart environment for plugins: {e}", h.pid);
        }
    }
}

/// User threads run again: `DMTCP_EVENT_RUNNING` (no answer awaited).
pub fn running(procs: &mut [HookProc]) {
    for h in procs.iter_mut() {
        if h.state == St::Done {
            let _ = request(h, hook::REQ_RUNNING, 0);
        }
    }
}
