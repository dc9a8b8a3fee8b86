//! Kernel pids taken on purpose on a locked-down machine (no user
//! namespaces, uid 65534, `tests/src/lockdown.rs`): a restart while
//! another process holds the old pid, and children made by
//! `posix_spawn`, `system` and `popen` after restarts, which must not get
//! a pid the program already knows (`inject/src/vpid.rs`,
//! `skip_known_pids`).
//!
//! A test binary of its own: both move the host's pid counter back
//! (`/proc/sys/kernel/ns_last_pid`), which would hand pids just freed by
//! other tests running at the same time back to them (cargo runs test
//! binaries one after another).

use std::time::Duration;

use dmtcp_tests::lockdown::{check_ids_lines, hold_pid};
use dmtcp_tests::{procs, Scenario, TestEnv, User};

/// Children made by `posix_spawn`, `system` and `popen` after restarts
/// without namespaces must not get a pid the program already knows. After
/// each restart the program's child has another kernel pid, and its
/// virtual pid is free in the kernel: the test makes it the kernel's next
/// pid (`ns_last_pid`), as a pid wrap would, while the program spawns
/// every few milliseconds and checks each spawned pid against its own,
/// its parent's and its child's.
#[test]
fn no_namespaces_spawned_children_get_unknown_pids() {
    if !procs::is_root() {
        eprintln!("skipped: making a machine without user namespaces needs root");
        return;
    }
    let mut env = TestEnv::new("lockdown-spawn", User::Nobody);
    env.start_coordinator();
    let sc = Scenario::new("spawn_pids")
        .wrapper("no_userns")
        .kernel_pids_change();
    let mut r = sc.launch(&env);
    let out = env.launcher_stdout();
    let Some(child) = out
        .lines()
        .find_map(|l| l.strip_prefix("ids child "))
        .and_then(|v| v.trim().parse::<i32>().ok())
    else {
        env.fail("spawn_pids did not print its child's pid");
    };
    for _ in 0..2 {
        r.round();
        for _ in 0..5 {
            if !procs::alive(child) {
                let _ = std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", child - 1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    r.finish();
    env.finish();
}

/// A restart while a process outside the computation holds the old pid
/// of its root: the program comes back under another kernel pid and
/// still sees its own.
#[test]
fn no_namespaces_restart_while_old_pid_is_taken() {
    if !procs::is_root() {
        eprintln!("skipped: making a machine without user namespaces needs root");
        return;
    }
    let mut env = TestEnv::new("lockdown-taken", User::Nobody);
    env.start_coordinator();
    let sc = Scenario::new("vpids")
        .wrapper("no_userns")
        .kernel_pids_change();
    let mut r = sc.launch(&env);
    std::thread::sleep(Duration::from_millis(500));
    let old = r.host_pid.expect("the program's pid");
    let images = r.checkpoint();
    r.kill();
    let Some(mut holder) = hold_pid(old) else {
        env.fail(&format!("could not start a process with pid {old}"));
    };
    r.restart_from_images(&images);
    if r.host_pid == Some(old) {
        env.fail("the restarted program has the pid another process holds");
    }
    r.finish();
    let _ = holder.kill();
    let _ = holder.wait();
    procs::untrack(holder.id());
    check_ids_lines(&env);
    env.finish();
}
