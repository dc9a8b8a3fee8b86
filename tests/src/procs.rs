//! Process bookkeeping: child subreaper, zombie reaper, finding every process a
//! test started (by an environment tag), killing them and dumping their state
//! when a test hangs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

/// Environment variable carrying a per-test tag into every process a test
/// starts (and, through them, into the checkpointed and restored programs).
pub const TAG_VAR: &str = "DMTCP_TEST_TAG";

/// Host pids of children we wait for ourselves (the reaper leaves them alone).
static TRACKED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);
static INIT: Once = Once::new();

/// Makes this test process a child subreaper and starts a thread that reaps
/// zombies reparented to us (daemonized coordinators, orphaned restorers) that
/// are not children we wait for ourselves. Idempotent.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and only
        // changes how orphaned descendants are reparented; no memory is shared.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "warning: prctl(PR_SET_CHILD_SUBREAPER) failed: {}",
                io::Error::last_os_error()
            );
        }
        thread::Builder::new()
            .name("zombie-reaper".into())
            .spawn(|| loop {
                reap_untracked();
                thread::sleep(Duration::from_millis(200));
            })
            .expect("spawn reaper thread");
    });
}

/// Spawns `cmd` and registers the child so the reaper does not steal its exit
/// status.
pub fn spawn_tracked(cmd: &mut Command) -> io::Result<Child> {
    init();
    let mut guard = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    guard
        .get_or_insert_with(HashSet::new)
        .insert(child.id() as i32);
    Ok(child)
}

/// Forgets a tracked child once its status was collected.
pub fn untrack(pid: u32) {
    let mut guard = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = guard.as_mut() {
        set.remove(&(pid as i32));
    }
}

/// Untracked zombie children and when [`reap_untracked`] first saw them.
static SEEN: Mutex<Option<HashMap<i32, Instant>>> = Mutex::new(None);

/// How long an untracked zombie child is left to whoever may wait for it.
const ZOMBIE_GRACE: Duration = Duration::from_secs(1);

/// Reaps zombie children of this process that nobody waits for. A zombie is
/// reaped only once it has stayed a zombie for [`ZOMBIE_GRACE`], so a child
/// some code spawned without [`spawn_tracked`] and is about to wait for is
/// not stolen from it (its `wait` would fail with ECHILD).
pub fn reap_untracked() {
    let me = std::process::id() as i32;
    let guard = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let before = seen.take().unwrap_or_default();
    let mut now = HashMap::new();
    for pid in all_pids() {
        let Some(st) = stat(pid) else { continue };
        if st.ppid != me || st.state != 'Z' {
            continue;
        }
        if guard.as_ref().is_some_and(|s| s.contains(&pid)) {
            continue;
        }
        let first = before.get(&pid).copied().unwrap_or_else(Instant::now);
        if first.elapsed() < ZOMBIE_GRACE {
            now.insert(pid, first);
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on a specific zombie child we do not track; status
        // points to a live local integer.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
    *seen = Some(now);
}

/// Every numeric entry of /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The fields of /proc/PID/stat the harness uses.
#[derive(Debug, Clone)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// True if `pid` is a process (a thread group's leader), not the tid of
/// one of its other threads: /proc/TID answers for those too.
pub fn is_leader(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
            == Some(pid)
    })
}

/// True if the process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Live (non-zombie) processes whose environment carries `TAG_VAR=tag`.
pub fn tagged(tag: &str) -> Vec<i32> {
    let needle = format!("{TAG_VAR}={tag}");
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me && alive(pid))
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Live descendants of `root` (not including it).
pub fn descendants(root: i32) -> Vec<i32> {
    let table: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| stat(p).filter(|s| s.state != 'Z').map(|s| (p, s.ppid)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &table {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// SIGKILLs the given pids (and the process groups they lead).
pub fn kill_all(pids: &[i32]) {
    for &pid in pids {
        if pid <= 1 {
            continue;
        }
        // SAFETY: kill(2) has no memory effects; pid > 1 so we never signal init
        // or "every process" (-1).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Sends `sig` to process `pid` (> 1).
pub fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory effects; pid > 1 so we never signal
        // init, a group or "every process".
        unsafe { libc::kill(pid, sig) };
    }
}

/// Kills every process carrying the tag until none is left (or 10 s pass).
/// Returns the pids that were still alive when this was called.
pub fn kill_tagged(tag: &str) -> Vec<i32> {
    let first = tagged(tag);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = tagged(tag);
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        kill_all(&left);
        thread::sleep(Duration::from_millis(50));
        reap_untracked();
    }
    first
}

/// Human-readable state of one process: cmdline, status, wchan, kernel stack.
pub fn describe(pid: i32) -> String {
    let read = |what: &str| fs::read_to_string(format!("/proc/{pid}/{what}"));
    let mut out = String::new();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    out.push_str(&format!("--- pid {pid}: {}\n", cmdline.trim()));
    match read("status") {
        Ok(s) => {
            for line in s.lines() {
                let key = line.split(':').next().unwrap_or("");
                if matches!(
                    key,
                    "Name"
                        | "State"
                        | "Tgid"
                        | "Pid"
                        | "PPid"
                        | "TracerPid"
                        | "Uid"
                        | "NSpid"
                        | "Threads"
                        | "SigPnd"
                        | "ShdPnd"
                        | "SigBlk"
                        | "SigIgn"
                        | "SigCgt"
                        | "VmRSS"
                ) {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
        Err(e) => out.push_str(&format!("    status: {e}\n")),
    }
    if let Ok(w) = read("wchan") {
        out.push_str(&format!("    wchan: {w}\n"));
    }
    match read("stack") {
        Ok(s) => {
            out.push_str("    stack:\n");
            for l in s.lines() {
                out.push_str(&format!("      {l}\n"));
            }
        }
        Err(e) => out.push_str(&format!("    stack: unreadable ({e})\n")),
    }
    out
}

/// Waits for `child` until `deadline`; `None` on timeout (child left running).
pub fn wait_child_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(st) = child.try_wait()? {
            untrack(child.id());
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether we run as root (can switch to uid 65534).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Owner uid of a path.
pub fn owner(path: &Path) -> io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(path)?.uid())
}
