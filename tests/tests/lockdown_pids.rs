//! Kernel pids taken on purpose on a locked-down machine (no user
//! namespaces, uid 65534, `tests/src/lockdown.rs`): a restart while
//! another process holds the old pid, restarts whose own processes get
//! the program's old pids, and children made by
//! `posix_spawn`, `vfork`, `system` and `popen` after restarts, which must
//! not get a pid the program already knows (`inject/src/vpid.rs`,
//! `skip_known_pids`).
//!
//! One at a time ([`PID_COUNTER`]), in a test binary of its own: both move
//! the host's pid counter back (`/proc/sys/kernel/ns_last_pid`), which
//! would hand pids just freed by other tests running at the same time back
//! to them (cargo runs test binaries one after another).

use std::sync::Mutex;
use std::time::Duration;

use dmtcp_tests::lockdown::{check_ids_lines, locked_down, locked_down_env, release, take_pid};
use dmtcp_tests::procs;

/// Held by each test while it moves the pid counter: one at a time.
static PID_COUNTER: Mutex<()> = Mutex::new(());

/// Children made by `posix_spawn`, `vfork`, `system`, `popen`, glibc's
/// `clone` and a raw `clone` or `fork` through `syscall()`, and threads
/// made by `pthread_create`, after restarts without namespaces must not get
/// a pid (a thread: an id) the program already knows (five rounds: the
/// burst's first child, the one made on the colliding pid, is made by each
/// of posix_spawn, clone, raw clone, raw fork and pthread_create in turn). After
/// each restart the program's child has another kernel pid, and its
/// virtual pid is free in the kernel: the test makes it the kernel's next
/// pid (`ns_last_pid`), as a pid wrap would, and asks the program for a
/// burst of children (SIGUSR1), each checked against its own pid, its
/// parent's and its child's.
#[test]
fn no_namespaces_spawned_children_get_unknown_pids() {
    let _counter = PID_COUNTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = locked_down_env("lockdown-spawn") else {
        return;
    };
    let sc = locked_down("spawn_pids");
    let mut r = sc.launch(&env);
    let out = env.launcher_stdout();
    let Some(child) = out
        .lines()
        .find_map(|l| l.strip_prefix("ids child "))
        .and_then(|v| v.trim().parse::<i32>().ok())
    else {
        env.fail("spawn_pids did not print its child's pid");
    };
    for round in 1..=5 {
        r.round();
        if !procs::alive(child) {
            let _ = std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", child - 1));
        }
        // A burst of children, none of them alive at the next checkpoint.
        let pid = r.host_pid.expect("the restored program");
        procs::signal(pid, libc::SIGUSR1);
        let done = format!("burst {round} done");
        let t = std::time::Instant::now();
        loop {
            let out = env.launcher_stdout();
            if out.lines().any(|l| l == done) {
                break;
            }
            if let Some(l) = out.lines().find(|l| l.starts_with("FAIL: ")) {
                env.fail(&format!("spawn_pids reported {l}"));
            }
            if t.elapsed() > Duration::from_secs(60) {
                env.fail(&format!("spawn_pids did not print '{done}'"));
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
    let _counter = PID_COUNTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = locked_down_env("lockdown-taken") else {
        return;
    };
    let sc = locked_down("vpids");
    let mut r = sc.launch(&env);
    std::thread::sleep(Duration::from_millis(500));
    let old = r.host_pid.expect("the program's pid");
    let images = r.checkpoint();
    r.kill();
    let holder = take_pid(&env, old);
    r.restart_from_images(&images);
    if r.host_pid == Some(old) {
        env.fail("the restarted program has the pid another process holds");
    }
    r.finish();
    if let Some(h) = holder {
        release(h);
    }
    check_ids_lines(&env);
    env.finish();
}

/// Restarts whose own processes (the wrapper, `dmtcp-restart`, nsinit,
/// the restart shells) get the program's old kernel pids, as after a pid
/// wrap: before each restart the pid counter is moved to just below the
/// program's virtual pid. Its kernel pid then names one of those
/// processes while the program still sees it as its own, and the next
/// checkpoint must still record the program under its virtual pid (an
/// image recorded under another one made the restart from the script
/// refuse the set as incomplete).
#[test]
fn no_namespaces_restart_takes_old_pids() {
    let _counter = PID_COUNTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = locked_down_env("lockdown-reuse") else {
        return;
    };
    let sc = locked_down("vpids");
    let mut r = sc.launch(&env);
    let first = r.host_pid.expect("the program's pid");
    // How far below: which of the restart's processes lands on which of
    // the program's pids (each of these failed before the fix).
    for (round, back) in [1, 4, 6].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(300));
        let images = r.checkpoint();
        r.kill();
        let _ = std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", first - back));
        if round == 0 {
            r.restart_from_images(&images);
        } else {
            r.restart_from_script();
        }
    }
    r.finish();
    check_ids_lines(&env);
    env.finish();
}
