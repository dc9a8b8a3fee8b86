//! Incremental checkpoints: after a full image, the next one holds only the
//! pages written since (plus what it takes from its parent), a restart from
//! the chain brings the program back intact, and `dmtcp-restart --merge`
//! turns the chain into one standalone image that restarts on its own.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    incremental => incremental_chain_restarts_and_merges;
}

fn total_size(env: &TestEnv, files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .unwrap_or_else(|e| env.fail(&format!("{}: {e}", f.display())))
                .len()
        })
        .sum()
}

fn incremental_chain_restarts_and_merges(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("incremental").run_flag("--incremental");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let full = r.checkpoint();
    thread::sleep(Duration::from_millis(300));
    let incr = r.checkpoint();

    // 64 MiB of random pages, a few hundred KiB rewritten in between.
    let (full_size, incr_size) = (total_size(env, &full), total_size(env, &incr));
    if full_size < 60 << 20 || incr_size * 10 > full_size {
        env.fail(&format!(
            "full image {full_size} bytes, incremental one {incr_size} bytes: expected over 60 MiB and under a tenth of it"
        ));
    }
    let mut inspect = env.command("dmtcp-restart");
    inspect.arg("--inspect").args(&incr);
    let out = env.run(inspect, "inspect", Duration::from_secs(60));
    if !out.status.success() || !out.stdout.contains("incremental image") {
        env.fail(&format!(
            "--inspect of {incr:?} does not show an incremental image: {}",
            out.describe()
        ));
    }

    // Restart from the chain (the image names its parent).
    r.kill();
    r.restart_from_images(&incr);
    thread::sleep(Duration::from_millis(700));

    // One standalone image from the chain; the chain itself is then removed.
    let merged = env.ckpt.join("merged.dmtcp");
    let mut merge = env.command("dmtcp-restart");
    merge.arg("--merge").arg(&merged).args(&incr);
    let out = env.run(merge, "merge", Duration::from_secs(120));
    if !out.status.success() {
        env.fail(&format!("dmtcp-restart --merge failed: {}", out.describe()));
    }
    r.kill();
    for f in full.iter().chain(&incr) {
        std::fs::remove_file(f).unwrap_or_else(|e| env.fail(&format!("{}: {e}", f.display())));
    }
    r.restart_from_images(&[merged]);
    r.finish();
}
