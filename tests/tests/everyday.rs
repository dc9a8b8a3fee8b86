//! Everyday correctness (issue 21): options are checked before anything
//! runs, the computation lives while any of its processes lives, /proc is
//! the computation's own, and clocks do not jump across a restart.

use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    unknown_option_refused => unknown_option_refused;
    launched_shell_backgrounds_child => launched_shell_backgrounds_child;
    daemonized_child_outlives_launched => daemonized_child_outlives_launched;
    private_proc => private_proc;
    clocks_continue => clocks_continue;
}

/// Every binary refuses an option it does not know, naming it, before doing
/// anything: `dmtcp-run --sandbox -- touch F` must not run `--sandbox` (nor
/// `touch`).
fn unknown_option_refused(env: &mut TestEnv) {
    env.start_coordinator();
    let port = env.port().to_string();
    let mark = env.work.join("ran");
    let image = env.work.join("ckpt_none.dmtcp");
    let cases: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        (
            "dmtcp-run",
            vec![
                "--coord-port".into(),
                port.clone().into(),
                "--sandbox".into(),
                "--".into(),
                "touch".into(),
                mark.clone().into(),
            ],
        ),
        (
            "dmtcp_launch",
            vec![
                "--coord-port".into(),
                port.clone().into(),
                "--sandbox".into(),
                "touch".into(),
                mark.clone().into(),
            ],
        ),
        (
            "dmtcp-restart",
            vec![
                "--coord-port".into(),
                port.clone().into(),
                "--sandbox".into(),
                image.into(),
            ],
        ),
        (
            "dmtcp-command",
            vec!["-p".into(), port.clone().into(), "--sandbox".into()],
        ),
        ("dmtcp-coordinator", vec!["--sandbox".into()]),
    ];
    for (bin, args) in cases {
        let mut cmd = env.command(bin);
        cmd.env_remove("DMTCP_LOG").args(&args);
        let out = env.run(cmd, &format!("{bin}-sandbox"), Duration::from_secs(30));
        // Exit status 2 and the option named: the argument parser's usage
        // error, not a failure to run `--sandbox` as a program.
        if out.status.code() != Some(2) || !out.stderr.contains("'--sandbox'") {
            env.fail(&format!(
                "{bin} {args:?}: expected a usage error (exit 2) naming '--sandbox', got {}",
                out.describe()
            ));
        }
        if mark.exists() {
            env.fail(&format!("{bin} {args:?} ran the program"));
        }
    }
    // Options after the program are the program's own.
    let mut cmd = env.command("dmtcp-run");
    cmd.args(["--coord-port", &port, "--", "touch", "--no-create"])
        .arg(&mark);
    let out = env.run(cmd, "run-program-option", Duration::from_secs(30));
    if !out.status.success() {
        env.fail(&format!(
            "dmtcp-run -- touch --no-create F: expected success, got {}",
            out.describe()
        ));
    }
    env.assert_no_computation_left("after the refused options", Duration::from_secs(10));
}

fn interpreter(path: &str) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `bash -c 'child & exit 0'`: the launched shell exits at once, its
/// backgrounded child stays in the computation, is checkpointed, killed,
/// restarted (twice) and goes on; `dmtcp-run` and `dmtcp-restart` return
/// (status 0) only when the child ends.
fn launched_shell_backgrounds_child(env: &mut TestEnv) {
    Scenario::new("bg_shell")
        .image_name(&interpreter("/bin/bash"))
        .run(env);
    let out = env.launcher_stdout();
    let ticks: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    if ticks.len() < 2 || ticks.windows(2).any(|w| w[1] < w[0]) {
        env.fail(&format!(
            "the backgrounded child's ticks do not go on across the restarts: {ticks:?}"
        ));
    }
}

/// A C program that forks and lets the launched process exit (daemonizing):
/// the child, reparented to the computation's pid 1, lives on across two
/// checkpoint/kill/restart rounds.
fn daemonized_child_outlives_launched(env: &mut TestEnv) {
    Scenario::new("orphan").run(env);
}

/// /proc/self, /proc/<getpid()>/..., /proc/self/status and /proc/1 agree
/// with the pids the program sees, before the checkpoint and after each
/// restart.
fn private_proc(env: &mut TestEnv) {
    Scenario::new("procself").run(env);
}

/// CLOCK_MONOTONIC and CLOCK_BOOTTIME continue from their checkpointed
/// values: with 6 s between kill and restart (twice), neither clock jumps by
/// more than the program's 50 ms sleep plus 3 s (a checkpoint's own freeze is
/// seen), and CLOCK_REALTIME shows the 12 s of downtime.
fn clocks_continue(env: &mut TestEnv) {
    let downtime = Duration::from_secs(6);
    let sc = Scenario::new("clocks").arg("3000").arg("10");
    env.start_coordinator();
    let mut r = sc.launch(env);
    for round in 0..2 {
        thread::sleep(sc.settle);
        let images = r.checkpoint();
        r.kill();
        thread::sleep(downtime);
        if round == 0 {
            r.restart_from_images(&images);
        } else {
            r.restart_from_script();
        }
    }
    r.finish();
}
