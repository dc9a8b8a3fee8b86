//! The program's own seccomp filters and Landlock domain across restarts
//! (issue 15): each case is `tests/programs/seccomp_own.c` in one mode,
//! through two checkpoint/kill/restart rounds (images, then the restart
//! script); the program checks in every thread, every loop, that the
//! filtered call is still denied exactly where it was.

use std::time::Duration;

use dmtcp_tests::{e2e_tests, procs, Scenario, TestEnv, User};

e2e_tests! {
    own_tsync_filter => own_tsync_filter;
    own_filter_one_thread => own_filter_one_thread;
    own_many_filters => own_many_filters;
    own_filter_kills_on_a_query => own_filter_kills_on_a_query;
    own_strict_mode => own_strict_mode;
    own_raw_syscall_filter => own_raw_filter;
    own_notification_listener_refused => own_listener_refused;
    own_landlock_refused => own_landlock_refused;
}

/// Main installs a filter with TSYNC: it holds in all three threads.
fn own_tsync_filter(env: &mut TestEnv) {
    Scenario::new("seccomp_own").arg("tsync").run(env);
}

/// One thread installs a filter for itself (prctl): only it is filtered.
fn own_filter_one_thread(env: &mut TestEnv) {
    Scenario::new("seccomp_own").arg("one").run(env);
}

/// Ten stacked filters come back in order.
fn own_many_filters(env: &mut TestEnv) {
    Scenario::new("seccomp_own").arg("many").arg("10").run(env);
}

/// A filter that kills the process on `rt_sigaction` of signal 64, which
/// the program never caught: the checkpoint's process-wide queries, made
/// in one piece of code for all signals when the filter lets them, must
/// then be made one by one for the signals the program handles only
/// (unprivileged; as root the filters are suspended meanwhile).
fn own_filter_kills_on_a_query(env: &mut TestEnv) {
    Scenario::new("seccomp_own").arg("kill64").run(env);
}

/// Whether `dmtcp-run` runs as real root (the program's filters are then
/// suspended while the tool works in it).
fn privileged(env: &TestEnv) -> bool {
    env.user == User::Current && procs::is_root()
}

/// A checkpoint that must be refused with a message holding `want`; the
/// program goes on and passes.
fn refused(env: &mut TestEnv, mode: &str, want: &[&str]) {
    env.start_coordinator();
    let sc = Scenario::new("seccomp_own").arg(mode);
    let mut r = sc.launch(env);
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(120));
    let all = format!("{}{}", out.stderr, env.log_tails());
    if out.status.success() {
        env.fail(&format!(
            "seccomp_own {mode}: the checkpoint was not refused: {}",
            out.describe()
        ));
    }
    for w in want {
        if !all.contains(w) {
            env.fail(&format!(
                "seccomp_own {mode}: the refusal does not say {w:?}: {}",
                out.describe()
            ));
        }
    }
    r.finish();
}

/// A thread in strict mode stays there. Unprivileged, the checkpoint
/// cannot run anything in that thread and is refused clearly.
fn own_strict_mode(env: &mut TestEnv) {
    if privileged(env) {
        Scenario::new("seccomp_own").arg("strict").run(env);
    } else {
        refused(
            env,
            "strict",
            &["seccomp filter would", "checkpoint refused"],
        );
    }
}

/// A filter installed by a raw syscall instruction (not logged): read back
/// from the kernel as root; refused clearly otherwise.
fn own_raw_filter(env: &mut TestEnv) {
    if privileged(env) {
        Scenario::new("seccomp_own").arg("raw").run(env);
    } else {
        refused(
            env,
            "raw",
            &["raw syscall instruction", "checkpoint is refused"],
        );
    }
}

/// A filter with its own notification listener: refused, naming it.
fn own_listener_refused(env: &mut TestEnv) {
    refused(env, "listener", &["user-notification listener", "pid "]);
}

/// A Landlock-restricted process: refused, never restarted unconfined.
fn own_landlock_refused(env: &mut TestEnv) {
    refused(env, "landlock", &["Landlock", "pid "]);
}
