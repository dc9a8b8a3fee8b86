//! kill -9 of the supervisor (`dmtcp-run`): the computation keeps running,
//! nothing is left stopped, and `dmtcp-nsinit` (found with `ps`) is what
//! ends it (issue 13, "Faults lose nothing").

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use dmtcp_tests::{e2e_tests, procs, Running, Scenario, TestEnv};

e2e_tests! {
    supervisor_killed_while_idle_program_runs_on => killed_idle;
    restart_supervisor_killed_program_runs_on => killed_after_restart;
    supervisor_killed_mid_checkpoint_program_runs_on => killed_mid_checkpoint;
    supervisor_killed_inside_injected_code_program_runs_on => killed_in_injected_code;
    computation_taken_back_after_supervisor_death => taken_back;
}

fn sigkill(pid: i32) {
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// States of every thread of `pid` (`/proc/PID/task/*/stat`).
fn thread_states(pid: i32) -> Vec<(i32, char)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(|tid| {
            let s = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            let state = s[s.rfind(')')? + 1..]
                .split_whitespace()
                .next()?
                .chars()
                .next()?;
            Some((tid, state))
        })
        .collect()
}

/// The supervisor is killed: waits for it to be gone, then checks that no
/// thread of the computation is stopped (ptrace stops are undone by the
/// kernel when the tracer dies) and returns nsinit's host pid.
fn kill_supervisor(env: &TestEnv, r: &mut Running) -> i32 {
    let sup = r.launcher.pid();
    sigkill(sup);
    env.wait(&mut r.launcher, Duration::from_secs(10));
    // Give the kernel a moment to undo the tracer's stops.
    thread::sleep(Duration::from_millis(300));
    for pid in procs::tagged(&env.tag) {
        for (tid, state) in thread_states(pid) {
            if state == 't' || state == 'T' {
                env.fail(&format!(
                    "thread {tid} of pid {pid} ({}) is left stopped ({state}) after the supervisor died",
                    procs::describe(pid)
                ));
            }
        }
    }
    procs::tagged(&env.tag)
        .into_iter()
        .find(|&p| procs::stat(p).is_some_and(|s| s.comm == "dmtcp-nsinit"))
        .unwrap_or_else(|| env.fail("dmtcp-nsinit is gone after the supervisor died"))
}

/// The documented way to end an orphaned computation: kill -9 its nsinit.
fn end_with_nsinit(env: &TestEnv, nsinit: i32) {
    sigkill(nsinit);
    env.assert_no_computation_left("after kill -9 of dmtcp-nsinit", Duration::from_secs(15));
}

/// A counter's supervisor is killed: the counter keeps counting.
fn killed_idle(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let mut r = sc.launch(env);
    let target = r.host_pid.expect("counter pid");
    thread::sleep(Duration::from_millis(300));
    let nsinit = kill_supervisor(env, &mut r);
    let len = |p: &std::path::Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let before = len(&out);
    thread::sleep(Duration::from_secs(1));
    let after = len(&out);
    if !procs::alive(target) || after <= before {
        env.fail(&format!(
            "the counter (pid {target}, alive: {}) stopped counting after the supervisor died: {before} -> {after} bytes",
            procs::alive(target)
        ));
    }
    end_with_nsinit(env, nsinit);
}

/// The same after a restart: `dmtcp-restart` (a copied restart: a lazy one
/// ties the computation to itself until every page is in, by design) is
/// killed, the restored counter counts on.
fn killed_after_restart(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter")
        .arg(&out)
        .restart_env("DMTCP_RESTART_LAZY", "0");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let images = r.checkpoint();
    r.kill();
    r.restart_from_images(&images);
    let target = r.host_pid.expect("restored counter pid");
    let nsinit = kill_supervisor(env, &mut r);
    let len = |p: &std::path::Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let before = len(&out);
    thread::sleep(Duration::from_secs(1));
    let after = len(&out);
    if !procs::alive(target) || after <= before {
        env.fail(&format!(
            "the restored counter (pid {target}) stopped counting after dmtcp-restart died: {before} -> {after} bytes"
        ));
    }
    end_with_nsinit(env, nsinit);
}

/// The supervisor of a 256 MiB program is killed while it writes its image:
/// the program runs on to its end, verifying all its memory; nsinit reaps
/// it and exits by itself; the temp image left behind is removed by the
/// next checkpoint in the directory.
fn killed_mid_checkpoint(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("heap256");
    let mut r = sc.launch(env);
    let target = r.host_pid.expect("heap256 pid");
    let mut ckpt = env.command("dmtcp-command");
    ckpt.args(["-p", &env.port().to_string(), "-bc"]);
    let mut ckpt = env.spawn(ckpt, "checkpoint");
    // Wait until its image is being written (the checkpoint under way,
    // the program frozen or its snapshot being saved).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut frozen = false;
    while debris(env).is_empty() {
        frozen |= thread_states(target).iter().any(|(_, s)| *s == 't');
        if Instant::now() > deadline {
            env.fail("no image of heap256 was ever seen being written");
        }
        thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "[{}] killing the supervisor mid-write (frozen seen: {frozen})",
        env.name
    );
    let nsinit = kill_supervisor(env, &mut r);
    let _ = env.wait(&mut ckpt, Duration::from_secs(30));
    if !procs::alive(target) {
        env.fail("heap256 died with its supervisor");
    }
    // It runs on: asked to stop, it checks its whole memory and passes.
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let deadline = Instant::now() + Duration::from_secs(60);
    while procs::alive(target) {
        if Instant::now() > deadline {
            env.fail("heap256 did not end within 60 s of its stop file");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let result = fs::read_to_string(env.work.join("zdtm.result")).unwrap_or_default();
    if !result.lines().any(|l| l.trim() == "heap256: PASS") {
        env.fail(&format!("heap256 did not pass: {result:?}"));
    }
    // nsinit keeps reaping and exits with its last process.
    let deadline = Instant::now() + Duration::from_secs(15);
    while procs::alive(nsinit) {
        if Instant::now() > deadline {
            env.fail("dmtcp-nsinit did not exit after the last process ended");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = fs::remove_file(env.stop_file());
    env.assert_no_computation_left("after heap256 ended", Duration::from_secs(15));
    // The interrupted image's temp file is left; the next checkpoint
    // committed in the directory removes it.
    let left = debris(env);
    if left.is_empty() {
        env.fail("expected the interrupted image's temp file in the checkpoint dir");
    }
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let mut r = sc.launch(env);
    r.checkpoint();
    let now = debris(env);
    if !now.is_empty() {
        env.fail(&format!(
            "debris {now:?} still there after the next checkpoint (was {left:?})"
        ));
    }
    r.kill();
}

/// `*.tmp.*` files in the checkpoint dir.
fn debris(env: &TestEnv) -> Vec<String> {
    fs::read_dir(&env.ckpt)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp."))
                .collect()
        })
        .unwrap_or_default()
}

/// `SigBlk` of every thread of `pid`.
fn blocked_masks(pid: i32) -> Vec<(i32, u64)> {
    thread_states(pid)
        .into_iter()
        .filter_map(|(tid, _)| {
            let st = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
            let hex = st.lines().find_map(|l| l.strip_prefix("SigBlk:"))?.trim();
            Some((tid, u64::from_str_radix(hex, 16).ok()?))
        })
        .collect()
}

/// The supervisor is killed while threads of the program have their
/// registers pointed at injected code (the supervisor is made to pause
/// there, `DMTCP_FAULT_INJECTED_PAUSE_MS`), at several points of the
/// capture: the program's threads go back to where they were, with their
/// own signal masks, and the program passes its own checks.
fn killed_in_injected_code(env: &mut TestEnv) {
    env.start_coordinator();
    let result = env.work.join("zdtm.result");
    // Each injected call pauses 300 ms (4 of them for this program: the
    // scratch mapping, the query code run by every thread, the process-wide
    // queries included, the snapshot's clone, the unmapping): the kills
    // land in each of them, the first and last made from the library's stub.
    for delay_ms in [150u64, 450, 750, 1050] {
        let _ = fs::remove_file(&result);
        let _ = fs::remove_file(env.stop_file());
        let sc = Scenario::new("threads").env("DMTCP_FAULT_INJECTED_PAUSE_MS", "300");
        let mut r = sc.launch(env);
        let target = r.host_pid.expect("threads pid");
        thread::sleep(Duration::from_millis(300));
        let before = blocked_masks(target);
        let mut ckpt = env.command("dmtcp-command");
        ckpt.args(["-p", &env.port().to_string(), "-bc"]);
        let mut ckpt = env.spawn(ckpt, "checkpoint");
        thread::sleep(Duration::from_millis(delay_ms));
        let nsinit = kill_supervisor(env, &mut r);
        if env.wait(&mut ckpt, Duration::from_secs(30)).success() {
            env.fail(&format!(
                "the checkpoint was done before the supervisor was killed {delay_ms} ms into it"
            ));
        }
        thread::sleep(Duration::from_millis(300));
        if !procs::alive(target) {
            env.fail(&format!(
                "threads died when its supervisor was killed {delay_ms} ms into a checkpoint"
            ));
        }
        let after = blocked_masks(target);
        if after != before {
            env.fail(&format!(
                "signal masks changed after the supervisor died {delay_ms} ms into a checkpoint: {before:x?} -> {after:x?}"
            ));
        }
        dmtcp_tests::scenario::create_stop_file(&env.stop_file());
        let deadline = Instant::now() + Duration::from_secs(30);
        while procs::alive(target) {
            if Instant::now() > deadline {
                env.fail("threads did not end within 30 s of its stop file");
            }
            thread::sleep(Duration::from_millis(50));
        }
        let text = fs::read_to_string(&result).unwrap_or_default();
        if !text.lines().any(|l| l.trim() == "threads: PASS") {
            env.fail(&format!(
                "threads did not pass after its supervisor died {delay_ms} ms into a checkpoint: {text:?}"
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while procs::alive(nsinit) {
            if Instant::now() > deadline {
                env.fail("dmtcp-nsinit did not exit after the last process ended");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = fs::remove_file(env.stop_file());
    // A static program has no library: after the first call, calls run
    // from stubs written into the scratch mapping; the kill lands in the
    // third, the snapshot's clone (the last, the unmapping, runs from the
    // vdso without a rescue: the stubs go with the mapping).
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter_static")
        .arg(&out)
        .env("DMTCP_FAULT_INJECTED_PAUSE_MS", "300");
    let mut r = sc.launch(env);
    let target = r.host_pid.expect("counter_static pid");
    thread::sleep(Duration::from_millis(300));
    let mut ckpt = env.command("dmtcp-command");
    ckpt.args(["-p", &env.port().to_string(), "-bc"]);
    let mut ckpt = env.spawn(ckpt, "checkpoint");
    thread::sleep(Duration::from_millis(750));
    let nsinit = kill_supervisor(env, &mut r);
    if env.wait(&mut ckpt, Duration::from_secs(30)).success() {
        env.fail("the static counter's checkpoint was done before its supervisor was killed");
    }
    let len = |p: &std::path::Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let before = len(&out);
    thread::sleep(Duration::from_secs(1));
    let after = len(&out);
    if !procs::alive(target) || after <= before {
        env.fail(&format!(
            "the static counter (alive: {}) stopped counting after its supervisor died inside injected code: {before} -> {after} bytes",
            procs::alive(target)
        ));
    }
    end_with_nsinit(env, nsinit);
}

fn counter_len(p: &std::path::Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The supervisor dies; `dmtcp-attach NSINIT_PID` takes the computation
/// back: checkpoints go on under the same launch (the same image names),
/// `--kill` works, and the images restart into a counter that counts on.
fn taken_back(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let mut first = r.checkpoint();
    let nsinit = kill_supervisor(env, &mut r);
    let mut cmd = env.command("dmtcp-attach");
    cmd.args(["-p", &env.port().to_string(), &nsinit.to_string()]);
    r.launcher = env.spawn(cmd, "take-back");
    env.wait_for(
        "the computation to be listed again",
        Duration::from_secs(20),
        || {
            let listed = env
                .dmtcp_command(&["-l"], Duration::from_secs(10))
                .stdout
                .contains("counter");
            if !listed {
                thread::sleep(Duration::from_millis(300));
            }
            listed
        },
    );
    let mut again = r.checkpoint();
    first.sort();
    again.sort();
    if first != again {
        env.fail(&format!(
            "the taken-back computation wrote other images ({again:?}) than its first supervisor ({first:?})"
        ));
    }
    r.kill();
    let before = counter_len(&out);
    r.restart_from_images(&again);
    thread::sleep(Duration::from_secs(1));
    if counter_len(&out) <= before {
        env.fail("the counter restarted from the taken-back computation's images does not count");
    }
    r.kill();
}
