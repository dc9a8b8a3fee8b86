//! Files carry no lines from the lost future (issue 21): at restart a file
//! the computation had open for writing is cut back to its checkpoint-time
//! size when it only grew since, unless told not to.

use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    appended_log_lines_once => appended_log_lines_once;
    no_truncate_files_keeps_lines => no_truncate_files_keeps_lines;
    rotated_log_created_again => rotated_log_created_again;
}

fn interpreter(path: &str) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checkpoint, let the program append for a second, kill, restart; twice
/// (from the images, then from the restart script). `restart_env` goes to
/// the restarts.
fn rounds(env: &mut TestEnv, sc: &Scenario, n: usize) -> Vec<String> {
    env.start_coordinator();
    let mut r = sc.launch(env);
    let mut said = Vec::new();
    for round in 0..n {
        thread::sleep(Duration::from_millis(500));
        let images = r.checkpoint();
        // Lines written now are the lost future.
        thread::sleep(Duration::from_secs(1));
        r.kill();
        if round == 0 {
            r.restart_from_images(&images);
        } else {
            r.restart_from_script();
        }
        said.push(std::fs::read_to_string(&r.launcher.stderr).unwrap_or_default());
    }
    r.finish();
    said
}

/// A bash loop appending `line N` through one `>>` redirection: after each
/// restart the log holds every line once, in order (the program checks),
/// and dmtcp-restart said it cut the log.
fn appended_log_lines_once(env: &mut TestEnv) {
    let sc = Scenario::new("append_log").image_name(&interpreter("/bin/bash"));
    for (i, err) in rounds(env, &sc, 2).iter().enumerate() {
        if !err.lines().any(|l| l.contains("append.log: cut back from")) {
            env.fail(&format!(
                "restart {} did not say it cut append.log back: stderr {err:?}",
                i + 1
            ));
        }
    }
}

/// With DMTCP_NO_TRUNCATE_FILES=1 the lines written between checkpoint and
/// kill stay, so the restarted loop writes some of them again.
fn no_truncate_files_keeps_lines(env: &mut TestEnv) {
    let sc = Scenario::new("append_log")
        .image_name(&interpreter("/bin/bash"))
        .arg("dups")
        .restart_env("DMTCP_NO_TRUNCATE_FILES", "1");
    for err in rounds(env, &sc, 1) {
        if err.contains("cut back") {
            env.fail(&format!(
                "DMTCP_NO_TRUNCATE_FILES=1, yet the restart cut a file: {err:?}"
            ));
        }
    }
}

/// The log a program only writes to is renamed after the checkpoint (as
/// logrotate does): the restart creates it again (mode 0600, zeros up to
/// the checkpoint-time size, said in one line) instead of refusing, and
/// the program writes on from where it was: the renamed file holds lines
/// 1..k in order, the new one zeros then lines k+1, k+2, ... in order.
fn rotated_log_created_again(env: &mut TestEnv) {
    use std::os::unix::fs::PermissionsExt;
    let sc = Scenario::new("append_log")
        .image_name(&interpreter("/bin/bash"))
        .arg("rotated");
    env.start_coordinator();
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let images = r.checkpoint();
    thread::sleep(Duration::from_millis(500));
    r.kill();
    let log = env.work.join("append.log");
    let old = env.work.join("append.log.0");
    std::fs::rename(&log, &old).unwrap_or_else(|e| env.fail(&format!("rename: {e}")));
    r.restart_from_images(&images);
    let err = std::fs::read_to_string(&r.launcher.stderr).unwrap_or_default();
    thread::sleep(Duration::from_millis(500));
    r.finish();
    if !err.contains("append.log was gone") {
        env.fail(&format!(
            "the restart did not say it created append.log again: {err:?}"
        ));
    }
    let numbers = |bytes: &[u8], what: &str| -> Vec<u64> {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| {
                l.strip_prefix("line ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| env.fail(&format!("{what}: stray line {l:?}")))
            })
            .collect()
    };
    let first = numbers(&std::fs::read(&old).unwrap_or_default(), "append.log.0");
    let again = std::fs::read(&log).unwrap_or_else(|e| env.fail(&format!("append.log: {e}")));
    let zeros = again.iter().take_while(|b| **b == 0).count();
    let second = numbers(&again[zeros..], "append.log");
    let mode = std::fs::metadata(&log)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    let consecutive = |v: &[u64]| v.windows(2).all(|w| w[1] == w[0] + 1);
    let k = second.first().copied().unwrap_or(0);
    if zeros == 0
        || mode != 0o600
        || first.first() != Some(&1)
        || !consecutive(&first)
        || !consecutive(&second)
        || k < 2
        || first.len() < k as usize - 1
    {
        env.fail(&format!(
            "after the restart: append.log.0 lines {:?}..{:?} ({}), append.log mode {mode:o}, {zeros} zero bytes then lines {:?}..{:?}",
            first.first(),
            first.last(),
            first.len(),
            second.first(),
            second.last()
        ));
    }
}
