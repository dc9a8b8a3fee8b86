//! One coordinator, one computation (issue 21, items 2, 4 and 11): separate
//! launches on one coordinator are one computation whose images never
//! overwrite each other and restart together; a restart is refused while
//! the computation still runs; `dmtcp-command` reports the generation the
//! images record; `--quit` racing a restart leaves no process.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use dmtcp_tests::env::{is_coordinator, read_lossy};
use dmtcp_tests::procs;
use dmtcp_tests::{e2e_tests, setup, Proc, Scenario, TestEnv};

e2e_tests! {
    two_launches_one_computation => two_launches_one_computation;
    restart_refused_while_running => restart_refused_while_running;
    checkpoint_reports_image_generation => checkpoint_reports_image_generation;
    quit_racing_restart_leaves_no_process => quit_racing_restart_leaves_no_process;
    restarted_computation_ends_without_coordinator => restarted_computation_ends_without_coordinator;
    newest_complete_set_restarted => newest_complete_set_restarted;
    kill_returns_when_processes_are_gone => kill_returns_when_processes_are_gone;
}

/// `dmtcp-run --coord-port P -- sleeper` in the background, READY awaited.
fn launch_sleeper(env: &TestEnv, label: &str) -> Proc {
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--")
        .arg(env.prog("sleeper"));
    let p = env.spawn(cmd, label);
    env.wait_for(&format!("{label} READY"), Duration::from_secs(30), || {
        read_lossy(&p.stdout).lines().any(|l| l.trim() == "READY")
    });
    p
}

/// `ckpt_sleeper_*.dmtcp` in `dir`, sorted.
fn sleeper_images(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = setup::file_name(p);
                    n.starts_with("ckpt_sleeper_") && n.ends_with(".dmtcp")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `dmtcp-command -l` lines that name the sleeper.
fn sleeper_lines(env: &TestEnv) -> Vec<String> {
    let out = env.dmtcp_command(&["-l"], Duration::from_secs(20));
    out.stdout
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "sleeper"))
        .map(str::to_string)
        .collect()
}

fn blocking_checkpoint(env: &TestEnv) -> dmtcp_tests::Output {
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(120));
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -bc: {}", out.describe()));
    }
    out
}

/// Two `dmtcp-run` on one coordinator: one computation, two launches. Both
/// processes have pid 2 in their own namespaces; `--list` shows them with
/// distinct launch ids, a checkpoint writes two images (none overwrites
/// the other), and restarting both images brings both back, each launch in
/// its own namespace, and they checkpoint again as two.
fn two_launches_one_computation(env: &mut TestEnv) {
    env.start_coordinator();
    let mut a = launch_sleeper(env, "run-a");
    let mut b = launch_sleeper(env, "run-b");
    env.wait_for("both sleepers listed", Duration::from_secs(20), || {
        sleeper_lines(env).len() == 2
    });
    let lines = sleeper_lines(env);
    let header = env.dmtcp_command(&["-l"], Duration::from_secs(20)).stdout;
    if !header.contains("LAUNCH") {
        env.fail(&format!("--list shows no launch column: {header:?}"));
    }
    // Columns: VPID HOST_PID PROGRAM LAUNCH SUPERVISOR HOST.
    let launches: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    if launches.len() != 2 || launches[0] == launches[1] {
        env.fail(&format!(
            "the two launches are not told apart in --list: {lines:?}"
        ));
    }
    let out = blocking_checkpoint(env);
    let images = sleeper_images(&env.ckpt);
    if images.len() != 2 {
        env.fail(&format!(
            "two launches gave {} sleeper image(s), expected 2: {images:?} (-bc said {:?})",
            images.len(),
            out.stdout
        ));
    }
    let out = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -k: {}", out.describe()));
    }
    env.wait(&mut a, Duration::from_secs(30));
    env.wait(&mut b, Duration::from_secs(30));
    env.assert_no_computation_left("after -k", Duration::from_secs(15));

    let mut cmd = env.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(&images);
    let mut r = env.spawn(cmd, "restart-both");
    env.wait_for(
        "both launches restarted and listed",
        Duration::from_secs(60),
        || sleeper_lines(env).len() == 2,
    );
    let err = read_lossy(&r.stderr);
    if err.contains("given twice") {
        env.fail(&format!("restart of two launches: {err}"));
    }
    thread::sleep(Duration::from_millis(500));
    blocking_checkpoint(env);
    let again = sleeper_images(&env.ckpt);
    if again != images {
        env.fail(&format!(
            "the checkpoint after the restart wrote {again:?}, expected the same two names {images:?}"
        ));
    }
    thread::sleep(Duration::from_millis(500));
    setup_stop(env);
    let st = env.wait(&mut r, Duration::from_secs(60));
    if !st.success() {
        env.fail(&format!(
            "dmtcp-restart of two launches exited with {st}: {}",
            read_lossy(&r.stderr)
        ));
    }
    let passes = env
        .all_stdout()
        .lines()
        .filter(|l| l.trim() == "PASS")
        .count();
    if passes < 2 {
        env.fail(&format!(
            "expected both sleepers to print PASS, saw {passes}"
        ));
    }
    env.assert_no_computation_left("after both sleepers ended", Duration::from_secs(15));
}

fn setup_stop(env: &TestEnv) {
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
}

/// A restart of the images of a computation that still runs is refused in
/// one line naming the running process (two copies would share its pid
/// and its image names); `--new-computation` restarts it anyway, with its
/// own launch id, so the next checkpoint has two distinct images.
fn restart_refused_while_running(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("sleeper");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let images = r.checkpoint();
    let mut cmd = env.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(&images);
    let out = env.run(cmd, "restart-while-running", Duration::from_secs(60));
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.is_empty()).collect();
    if out.status.success()
        || lines.len() != 1
        || !lines[0].contains("still running")
        || !lines[0].contains("sleeper")
    {
        env.fail(&format!(
            "restart while the computation runs: expected one line refusing it and naming the sleeper, got {}",
            out.describe()
        ));
    }
    if sleeper_lines(env).len() != 1 {
        env.fail("the refused restart left a second sleeper");
    }
    let mut cmd = env.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--new-computation")
        .args(&images);
    let mut second = env.spawn(cmd, "restart-new-computation");
    env.wait_for("the second copy listed", Duration::from_secs(60), || {
        sleeper_lines(env).len() == 2
    });
    thread::sleep(Duration::from_millis(500));
    blocking_checkpoint(env);
    let all = sleeper_images(&env.ckpt);
    if all.len() != 2 {
        env.fail(&format!(
            "two copies (two launches) should give two images, got {all:?}"
        ));
    }
    // Both copies poll the same stop file every 200 ms; `finish` removes it
    // as soon as the original has ended, which the copy could miss: stop
    // both here and wait for both, then read both verdicts.
    thread::sleep(Duration::from_millis(500));
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let st = env.wait(&mut second, Duration::from_secs(60));
    if !st.success() {
        env.fail(&format!("the --new-computation restart exited with {st}"));
    }
    let st = env.wait(&mut r.launcher, Duration::from_secs(60));
    if !st.success() {
        env.fail(&format!("the original dmtcp-run exited with {st}"));
    }
    let result = read_lossy(&env.work.join("zdtm.result"));
    let passes = result.lines().filter(|l| *l == "sleeper: PASS").count();
    if passes != 2 || result.contains("FAIL") {
        env.fail(&format!("expected two sleeper: PASS, got {result:?}"));
    }
    let _ = std::fs::remove_file(env.stop_file());
    env.assert_no_computation_left("after both copies passed", Duration::from_secs(15));
}

/// After a restart, generations go on from the images' (2, 3, ...), while
/// a new coordinator counts its checkpoints from 1: `dmtcp-command -bc`
/// and `-c` name the generation that the images and the restart script
/// record.
fn checkpoint_reports_image_generation(env: &mut TestEnv) {
    env.start_coordinator();
    let mut a = launch_sleeper(env, "run");
    blocking_checkpoint(env);
    let images = sleeper_images(&env.ckpt);
    // --quit kills the computation and stops the coordinator; a fresh one
    // counts its own checkpoints from 1 again.
    env.stop_coordinator();
    env.wait(&mut a, Duration::from_secs(30));
    env.assert_no_computation_left("after --quit", Duration::from_secs(15));
    env.start_coordinator();
    let mut cmd = env.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(&images);
    let mut r = env.spawn(cmd, "restart");
    env.wait_for(
        "the restarted sleeper listed",
        Duration::from_secs(60),
        || sleeper_lines(env).len() == 1,
    );
    thread::sleep(Duration::from_millis(300));
    let out = blocking_checkpoint(env);
    if !out.stdout.contains("checkpoint 2 done") {
        env.fail(&format!(
            "-bc after a restart from generation 1 should report checkpoint 2: {:?}",
            out.stdout
        ));
    }
    let script =
        std::fs::read_to_string(env.ckpt.join("dmtcp_restart_script.sh")).unwrap_or_default();
    if !script.contains("# Generation: 2") {
        env.fail(&format!(
            "the restart script is not at generation 2: {script:?}"
        ));
    }
    let out = env.dmtcp_command(&["-c"], Duration::from_secs(30));
    if !out.stdout.contains("checkpoint 3 started") {
        env.fail(&format!("-c should start checkpoint 3: {}", out.describe()));
    }
    env.wait_for("checkpoint 3 committed", Duration::from_secs(60), || {
        std::fs::read_to_string(env.ckpt.join("dmtcp_restart_script.sh"))
            .unwrap_or_default()
            .contains("# Generation: 3")
    });
    setup_stop(env);
    let st = env.wait(&mut r, Duration::from_secs(60));
    if !st.success() {
        env.fail(&format!("dmtcp-restart exited with {st}"));
    }
}

/// `dmtcp-command --quit` at several moments of a restart (before it
/// joins, while it restores, just after): whatever the moment, no process
/// of the computation is left.
fn quit_racing_restart_leaves_no_process(env: &mut TestEnv) {
    env.start_coordinator();
    let mut a = launch_sleeper(env, "run");
    blocking_checkpoint(env);
    let images = sleeper_images(&env.ckpt);
    let out = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -k: {}", out.describe()));
    }
    env.wait(&mut a, Duration::from_secs(30));
    env.assert_no_computation_left("after -k", Duration::from_secs(15));
    for delay_ms in [0u64, 50, 150, 400, 1000] {
        if env.port.is_none() {
            env.start_coordinator();
        }
        // -j: a restart that finds the coordinator gone must not start one.
        let mut cmd = env.command("dmtcp-restart");
        cmd.arg("-j")
            .arg("--coord-port")
            .arg(env.port().to_string())
            .args(&images);
        let mut p = env.spawn(cmd, &format!("restart-quit-{delay_ms}"));
        thread::sleep(Duration::from_millis(delay_ms));
        env.stop_coordinator();
        env.wait(&mut p, Duration::from_secs(60));
        env.assert_no_computation_left(
            &format!("--quit {delay_ms} ms into a restart"),
            Duration::from_secs(20),
        );
    }
}

/// A restarted computation whose coordinator dies (kill -9) and does not
/// come back within its timeout (`DMTCP_COORD_TIMEOUT=3`) says so and ends,
/// instead of running on with nothing able to checkpoint or stop it.
fn restarted_computation_ends_without_coordinator(env: &mut TestEnv) {
    env.start_coordinator();
    let mut a = launch_sleeper(env, "run");
    blocking_checkpoint(env);
    let images = sleeper_images(&env.ckpt);
    let out = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -k: {}", out.describe()));
    }
    env.wait(&mut a, Duration::from_secs(30));
    let mut cmd = env.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(&images)
        .env("DMTCP_COORD_TIMEOUT", "3");
    let mut r = env.spawn(cmd, "restart");
    env.wait_for(
        "the restarted sleeper listed",
        Duration::from_secs(60),
        || sleeper_lines(env).len() == 1,
    );
    let coords: Vec<i32> = procs::tagged(&env.tag)
        .into_iter()
        .filter(|&p| is_coordinator(p))
        .collect();
    if coords.len() != 1 {
        env.fail(&format!("expected one coordinator, found {coords:?}"));
    }
    procs::kill_all(&coords);
    env.port = None;
    let st = env.wait(&mut r, Duration::from_secs(30));
    let err = read_lossy(&r.stderr);
    if st.success() || !err.contains("no coordinator") {
        env.fail(&format!(
            "dmtcp-restart without a coordinator: expected it to end saying so, got {st}: {err:?}"
        ));
    }
    env.assert_no_computation_left(
        "a restarted computation without a coordinator",
        Duration::from_secs(15),
    );
}

/// Images record the set of their checkpoint (format 2.1): given a complete
/// older set and an incomplete newer one (an image of the three-process
/// tree missing), `dmtcp-restart` says the newer one is incomplete, skips
/// its image and restarts the older set, all three processes.
fn newest_complete_set_restarted(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("tree").arg(env.work.join("tree.log"));
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let set = env.work.join("set");
    env.make_user_dir(&set);
    let first = r.checkpoint();
    if first.len() < 3 {
        env.fail(&format!("expected three images of the tree: {first:?}"));
    }
    for p in &first {
        let to = set.join(format!("g1_{}", setup::file_name(p)));
        std::fs::copy(p, &to).expect("copy a generation 1 image");
        env.give_to_user(&to);
    }
    thread::sleep(Duration::from_millis(300));
    let second = r.checkpoint();
    let mut second = second.clone();
    second.sort();
    let newer = set.join(setup::file_name(&second[0]));
    std::fs::copy(&second[0], &newer).expect("copy one generation 2 image");
    env.give_to_user(&newer);
    r.kill();
    let mut given: Vec<PathBuf> = std::fs::read_dir(&set)
        .expect("read the set directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    given.sort();
    r.restart_from_images(&given);
    let err = read_lossy(&r.launcher.stderr);
    if !err.contains("checkpoint 2 is incomplete") || !err.contains("restarting checkpoint 1") {
        env.fail(&format!(
            "dmtcp-restart did not say it passed over the incomplete checkpoint 2: {err:?}"
        ));
    }
    let skipped = setup::file_name(&newer);
    if !err
        .lines()
        .any(|l| l.contains("skipping") && l.contains(&skipped))
    {
        env.fail(&format!(
            "dmtcp-restart did not name {skipped} as skipped: {err:?}"
        ));
    }
    let tree_lines = env.dmtcp_command(&["-l"], Duration::from_secs(20)).stdout;
    let n = tree_lines
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w.starts_with("tree")))
        .count();
    if n != 3 {
        env.fail(&format!(
            "the restarted generation 1 should have three processes: {tree_lines:?}"
        ));
    }
    r.kill();
}

/// `dmtcp-command -k` returns only once every process of the computation
/// has ended, so the usual `dmtcp-command -k; dmtcp-restart ckpt_*` never
/// meets the old processes (a restart refused as "still running", or the
/// killed program still writing to a file the restart has just cut back:
/// the stray line of issue 21, item 10).
fn kill_returns_when_processes_are_gone(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("sleeper");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let images = r.checkpoint();
    let out = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    let left: Vec<i32> = procs::tagged(&env.tag)
        .into_iter()
        .filter(|&p| procs::stat(p).is_some_and(|s| s.comm == "sleeper"))
        .collect();
    if !out.status.success() || !left.is_empty() {
        env.fail(&format!(
            "dmtcp-command -k returned ({}) while {left:?} still ran",
            out.describe()
        ));
    }
    env.wait(&mut r.launcher, Duration::from_secs(30));
    r.host_pid = None;
    r.restart_from_images(&images);
    r.wait_restored();
    r.finish();
}
