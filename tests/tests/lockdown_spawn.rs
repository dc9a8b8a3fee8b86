//! Children made by `posix_spawn`, `system` and `popen` on a locked-down
//! machine (no user namespaces, uid 65534, `tests/src/lockdown.rs`) after
//! restarts must not get a pid the program already knows
//! (`inject/src/vpid.rs`, `skip_known_pids`).
//!
//! A test binary of its own: it moves the host's pid counter back
//! (`/proc/sys/kernel/ns_last_pid`), which would hand pids just freed by
//! other tests running at the same time back to them (cargo runs test
//! binaries one after another).

use std::time::Duration;

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
