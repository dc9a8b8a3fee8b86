//! `dmtcp-run --daemon` (issue 21): returns as soon as the program runs,
//! leaving the computation running under control in the background.

use std::time::{Duration, Instant};

use dmtcp_tests::{e2e_tests, TestEnv};

e2e_tests! {
    run_daemon => run_daemon_returns_at_once;
}

/// `dmtcp-run --daemon -- sleeper` exits 0 at once saying the program's pid
/// and coordinator; the program is listed, checkpoints, and `--kill` ends
/// it and its detached supervisor.
fn run_daemon_returns_at_once(env: &mut TestEnv) {
    env.start_coordinator();
    let mut cmd = env.command("dmtcp-run");
    cmd.args(["--coord-port", &env.port().to_string(), "--daemon", "--"])
        .arg(env.prog("sleeper"))
        .env("ZDTM_STOP", env.stop_file());
    let t = Instant::now();
    let out = env.run(cmd, "run-daemon", Duration::from_secs(60));
    if !out.status.success() || !out.stdout.contains("runs as pid 2") {
        env.fail(&format!(
            "dmtcp-run --daemon: expected success and 'runs as pid 2', got {}",
            out.describe()
        ));
    }
    eprintln!(
        "[{}] dmtcp-run --daemon returned in {:?}",
        env.name,
        t.elapsed()
    );
    let l = env.dmtcp_command(&["-l"], Duration::from_secs(10));
    if !l.stdout.contains("sleeper") {
        env.fail(&format!("the program is not listed: {}", l.describe()));
    }
    let c = env.dmtcp_command(&["-bc"], Duration::from_secs(60));
    if !c.status.success() {
        env.fail(&format!(
            "checkpoint of the detached computation: {}",
            c.describe()
        ));
    }
    let k = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    if !k.status.success() {
        env.fail(&format!("dmtcp-command -k: {}", k.describe()));
    }
    env.assert_no_computation_left("after -k", Duration::from_secs(20));
}
