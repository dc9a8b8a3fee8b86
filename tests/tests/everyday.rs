//! Everyday correctness (issue 21): options are checked before anything
//! runs, the computation lives while any of its processes lives, /proc is
//! the computation's own, and clocks do not jump across a restart.

use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, setup, Scenario, TestEnv};

e2e_tests! {
    checkpoints_in_one_sleep_then_restart => checkpoints_in_one_sleep;
    unknown_option_refused => unknown_option_refused;
    launched_shell_backgrounds_child => launched_shell_backgrounds_child;
    private_proc => private_proc;
    popen_reads_four_rounds => popen_reads_four_rounds;
    clocks_continue => clocks_continue;
    checkpoint_after_restart_keeps_directory => checkpoint_after_restart_keeps_directory;
    stale_image_skipped => stale_image_skipped;
}

/// Every binary refuses an option it does not know, naming it, before doing
/// anything: `dmtcp-run --frobnicate -- touch F` must not run `--frobnicate`
/// (nor `touch`).
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
                "--frobnicate".into(),
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
                "--frobnicate".into(),
                "touch".into(),
                mark.clone().into(),
            ],
        ),
        (
            "dmtcp-restart",
            vec![
                "--coord-port".into(),
                port.clone().into(),
                "--frobnicate".into(),
                image.into(),
            ],
        ),
        (
            "dmtcp-command",
            vec!["-p".into(), port.clone().into(), "--frobnicate".into()],
        ),
        ("dmtcp-coordinator", vec!["--frobnicate".into()]),
    ];
    for (bin, args) in cases {
        let mut cmd = env.command(bin);
        cmd.env_remove("DMTCP_LOG").args(&args);
        let out = env.run(cmd, &format!("{bin}-frobnicate"), Duration::from_secs(30));
        // Exit status 2 and the option named: the argument parser's usage
        // error, not a failure to run `--sandbox` as a program.
        if out.status.code() != Some(2) || !out.stderr.contains("'--frobnicate'") {
            env.fail(&format!(
                "{bin} {args:?}: expected a usage error (exit 2) naming '--frobnicate', got {}",
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

/// /proc/self, /proc/<getpid()>/..., /proc/self/status and /proc/1 agree
/// with the pids the program sees, before the checkpoint and after each
/// restart.
fn private_proc(env: &mut TestEnv) {
    Scenario::new("procself").arg("in-computation").run(env);
}

/// `popen("echo x")` read and closed without pause through four rounds:
/// a checkpoint that finds the child a zombie with its output unread
/// restores the reader with those bytes and then the end of the pipe.
fn popen_reads_four_rounds(env: &mut TestEnv) {
    let mut sc = Scenario::new("spawn_steady").arg("popen-reads");
    sc.proc_check = dmtcp_tests::scenario::ProcCheck::Off;
    if let dmtcp_tests::scenario::Mode::Rounds(n) = sc.mode {
        sc.mode = dmtcp_tests::scenario::Mode::Rounds(n.max(4));
    }
    sc.run(env);
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

/// A restarted computation keeps the directory its images came from: after
/// the images are moved elsewhere and restarted (from the test's work
/// directory, not theirs), the next checkpoint writes generation 2 there,
/// the restart script there lists that set, and restarting with it goes on.
fn checkpoint_after_restart_keeps_directory(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("sleeper");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let images = r.checkpoint();
    r.kill();
    let moved = env.work.join("moved");
    env.make_user_dir(&moved);
    let mut moved_images = Vec::new();
    for p in &images {
        let to = moved.join(setup::file_name(p));
        std::fs::rename(p, &to).expect("move an image");
        moved_images.push(to);
    }
    r.restart_from_images(&moved_images);
    thread::sleep(Duration::from_millis(500));
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(120));
    if !out.status.success() {
        env.fail(&format!(
            "dmtcp-command -bc after restart: {}",
            out.describe()
        ));
    }
    let stray: Vec<String> = std::fs::read_dir(&env.ckpt)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ckpt_") && n.ends_with(".dmtcp"))
                .collect()
        })
        .unwrap_or_default();
    if !stray.is_empty() {
        env.fail(&format!(
            "the checkpoint after restart went to the coordinator's directory {}: {stray:?}",
            env.ckpt.display()
        ));
    }
    for img in &moved_images {
        let mut cmd = env.command("dmtcp-restart");
        cmd.arg("--inspect").arg(img);
        let out = env.run(cmd, "inspect", Duration::from_secs(30));
        let generation = out
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("generation"))
            .map(|g| g.trim().to_string());
        if generation.as_deref() != Some("2") {
            env.fail(&format!(
                "{} after the second checkpoint: expected generation 2, got {}",
                img.display(),
                out.describe()
            ));
        }
    }
    let script = moved.join("dmtcp_restart_script.sh");
    let text = std::fs::read_to_string(&script).unwrap_or_default();
    if !text.contains("# Generation: 2")
        || !moved_images
            .iter()
            .all(|p| text.contains(&*p.to_string_lossy()))
    {
        env.fail(&format!(
            "{} does not restart generation 2 from {}: {text:?}",
            script.display(),
            moved.display()
        ));
    }
    r.kill();
    let cmd = env.command_path(&script);
    r.launcher = env.spawn(cmd, "restart-script-sleeper");
    r.wait_restored();
    r.finish();
}

/// The checkpoint that commits a new set removes the image of a process
/// that ended since the previous one (same computation and launch, in that
/// directory), so `dmtcp-restart ckpt_*.dmtcp` restarts the newest set; an
/// older image put back by hand is named as skipped.
fn stale_image_skipped(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("transient");
    let mut r = sc.launch(env);
    let first = r.checkpoint();
    let Some(sleep_image) = first
        .iter()
        .find(|p| setup::file_name(p).starts_with("ckpt_sleep_"))
        .cloned()
    else {
        env.fail(&format!(
            "the first checkpoint has no image of the transient sleep: {first:?}"
        ));
    };
    let aside = env.work.join(setup::file_name(&sleep_image));
    std::fs::copy(&sleep_image, &aside).expect("copy the sleep image aside");
    // `sleep 4` ends and is reaped by the computation's pid 1.
    thread::sleep(Duration::from_secs(5));
    r.checkpoint();
    r.kill();
    let images = |env: &TestEnv| -> Vec<std::path::PathBuf> {
        let mut all: Vec<std::path::PathBuf> = std::fs::read_dir(&env.ckpt)
            .expect("read the checkpoint directory")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = setup::file_name(p);
                n.starts_with("ckpt_") && n.ends_with(".dmtcp")
            })
            .collect();
        all.sort();
        all
    };
    if sleep_image.exists() {
        env.fail(&format!(
            "the second checkpoint left the image of the ended sleep: {:?}",
            images(env)
        ));
    }
    // Put back by hand (as from a backup): the restart skips it, naming it.
    std::fs::copy(&aside, &sleep_image).expect("put the sleep image back");
    env.give_to_user(&sleep_image);
    let stale = setup::file_name(&sleep_image);
    r.restart_from_images(&images(env));
    let err = std::fs::read_to_string(&r.launcher.stderr).unwrap_or_default();
    if !err
        .lines()
        .any(|l| l.contains("skipping") && l.contains(&stale))
    {
        env.fail(&format!(
            "dmtcp-restart did not say it skipped {stale}: stderr {err:?}"
        ));
    }
    r.finish();
}

/// Checkpoints in a row catch a thread in the same interrupted sleep: the
/// first thaw lets it go on through `restart_syscall`, and the next freeze
/// finds it there. A restart from that image re-issues the original sleep
/// (a restored thread has no restart block): the sleeper sees no EINTR
/// and no short sleep, after two such rounds.
fn checkpoints_in_one_sleep(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("sleeper");
    let mut r = sc.launch(env);
    for round in 0..2 {
        thread::sleep(Duration::from_millis(300));
        r.checkpoint();
        r.checkpoint();
        let images = r.checkpoint();
        r.kill();
        if round == 0 {
            r.restart_from_images(&images);
        } else {
            r.restart_from_script();
        }
    }
    r.finish();
}
