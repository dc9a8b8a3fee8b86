//! Shared pieces of the locked-down-machine tests (`tests/tests/lockdown*.rs`):
//! a machine where user namespaces are forbidden is made by
//! `tests/programs/no_userns.c` (root only), in which uid 65534 runs the
//! computation, without namespaces.

use std::process::{Child, Command};

use crate::{procs, Running, Scenario, TestEnv, User};

/// The opening of a test on the locked-down machine: `None` (skipped, said
/// on stderr) unless root, else a test env of uid 65534 with its
/// coordinator started.
pub fn locked_down_env(name: &str) -> Option<TestEnv> {
    if !procs::is_root() {
        eprintln!("skipped: making a machine without user namespaces needs root");
        return None;
    }
    let mut env = TestEnv::new(name, User::Nobody);
    env.start_coordinator();
    Some(env)
}

/// `prog` run on the locked-down machine: its kernel pids change at each
/// restart.
pub fn locked_down(prog: &str) -> Scenario {
    Scenario::new(prog)
        .wrapper("no_userns")
        .kernel_pids_change()
}

/// The launcher's stderr holds exactly one line, the notice that the
/// computation runs without namespaces, naming the cause.
pub fn check_notice(env: &TestEnv, r: &Running) {
    let err = crate::env::read_lossy(&r.launcher.stderr);
    // (Log lines, with DMTCP_LOG set, are not the notice.)
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !is_log_line(l))
        .collect();
    if lines.len() != 1
        || !lines[0].contains("user.max_user_namespaces = 0")
        || !lines[0].contains("running without namespaces")
    {
        env.fail(&format!(
            "dmtcp-run on the locked-down machine: expected one notice line, got {lines:?}"
        ));
    }
}

/// A `tracing` line (`2026-12-07T10:02:38.695918Z DEBUG ...`).
fn is_log_line(l: &str) -> bool {
    let mut words = l.split_whitespace();
    let stamp = words.next().unwrap_or("");
    stamp.len() > 20
        && stamp.ends_with('Z')
        && stamp.as_bytes()[10] == b'T'
        && matches!(
            words.next(),
            Some("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
        )
}

/// Makes the next pid the kernel gives be `pid` (root: ns_last_pid), and
/// starts a process there that is not part of the computation; `None` when
/// another process took it first every time.
pub fn hold_pid(pid: i32) -> Option<Child> {
    for _ in 0..20 {
        if procs::alive(pid) {
            return None;
        }
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).ok()?;
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let child = procs::spawn_tracked(&mut cmd).ok()?;
        if child.id() as i32 == pid {
            return Some(child);
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        procs::untrack(child.id());
    }
    None
}

/// Makes `pid` taken before a restart: [`hold_pid`] tried for up to 10 s,
/// one test of this binary at a time (tests that run beside each other
/// move `ns_last_pid` too, and a pid just freed may be taken for a moment
/// by another test's process). Our holder (give it to [`release`]), or
/// `None` when another process held the pid all along (taken all the
/// same); fails the test when the pid stayed free and could not be held.
pub fn take_pid(env: &TestEnv, pid: i32) -> Option<Child> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        {
            let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = hold_pid(pid) {
                return Some(c);
            }
        }
        if std::time::Instant::now() > deadline {
            if procs::alive(pid) {
                eprintln!("pid {pid} is held by another process");
                return None;
            }
            env.fail(&format!("could not start a process with pid {pid}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Ends a process [`hold_pid`] started.
pub fn release(mut holder: Child) {
    let _ = holder.kill();
    let _ = holder.wait();
    procs::untrack(holder.id());
}

/// The `ids start|end NAME ...` lines `vpids` printed: every process's end
/// line must repeat its start line (the program checks the same all the
/// time; this shows it in its own output).
pub fn check_ids_lines(env: &TestEnv) {
    let out = env.launcher_stdout();
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("ids ")).collect();
    for name in ["parent", "child", "grandkid"] {
        let of = |when: &str| -> Vec<&str> {
            let head = format!("ids {when} {name} ");
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(head.as_str()))
                .collect()
        };
        let (start, end) = (of("start"), of("end"));
        if start.len() != 1 || end.len() != 1 || start != end {
            env.fail(&format!(
                "vpids {name}: ids at start {start:?}, at the end {end:?}"
            ));
        }
    }
}
