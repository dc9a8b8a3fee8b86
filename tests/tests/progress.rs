//! Checkpoint progress (issue 21): the supervisors report the bytes of
//! images written; `dmtcp-command -s` shows them for the checkpoint in
//! progress and the last one; `-bc` is quiet when not on a terminal.

use std::time::{Duration, Instant};

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    status_figures => status_shows_checkpoint_figures;
}

/// 256 MiB of heap, a checkpoint started with `-c`, then `-s` polled until
/// the checkpoint is done: its "Last checkpoint" line gives the processes
/// and exactly the bytes of the images on disk. `-bc` (not on a terminal)
/// prints no progress bar.
fn status_shows_checkpoint_figures(env: &mut TestEnv) {
    let sc = Scenario::new("heap256").settle(Duration::from_millis(500));
    env.start_coordinator();
    let mut r = sc.launch(env);
    let before = env.dmtcp_command(&["-s"], Duration::from_secs(30));
    if before.stdout.contains("Last checkpoint:") {
        env.fail(&format!(
            "-s before any checkpoint shows a last checkpoint: {}",
            before.describe()
        ));
    }
    let started = env.dmtcp_command(&["-c"], Duration::from_secs(30));
    if !started.status.success() {
        env.fail(&format!("dmtcp-command -c: {}", started.describe()));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut in_progress = Vec::new();
    let last = loop {
        let st = env.dmtcp_command(&["-s"], Duration::from_secs(30));
        if let Some(l) = st
            .stdout
            .lines()
            .find(|l| l.starts_with("Checkpoint in progress:"))
        {
            in_progress.push(l.to_string());
        }
        if let Some(l) = st
            .stdout
            .lines()
            .find(|l| l.starts_with("Last checkpoint:"))
        {
            break l.to_string();
        }
        if Instant::now() > deadline {
            env.fail(&format!("the checkpoint did not end: {}", st.describe()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let on_disk: u64 = std::fs::read_dir(&env.ckpt)
        .expect("checkpoint directory")
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("ckpt_") && n.ends_with(".dmtcp")
        })
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    let want = "1 of 1 process(es) done, ".to_string();
    let bytes = format!("({on_disk} bytes)");
    if !last.contains(&want) || !last.contains(&bytes) || on_disk == 0 {
        env.fail(&format!(
            "-s after the checkpoint: expected '{want}' and '{bytes}' (the images on disk), got {last:?}"
        ));
    }
    for l in &in_progress {
        if !l.contains("of 1 process(es) done") || !l.contains(" bytes) in ") {
            env.fail(&format!("-s during the checkpoint: {l:?}"));
        }
    }
    eprintln!(
        "[{}] {} status line(s) during the checkpoint, e.g. {:?}; then {last:?}",
        env.name,
        in_progress.len(),
        in_progress.last()
    );
    let bc = env.dmtcp_command(&["-bc"], Duration::from_secs(120));
    if !bc.status.success() || bc.stderr.contains("checkpoint [") {
        env.fail(&format!(
            "-bc not on a terminal: expected success and no progress bar, got {}",
            bc.describe()
        ));
    }
    r.finish();
}
