//! Plugins (issue 17) end to end: the examples of `examples/plugins/` are
//! built the way a DMTCP user would build a third-party plugin (from a copy
//! that holds only `dmtcp.h`, with `-DDMTCP_PACKAGE_VERSION=...`), loaded
//! with `dmtcp-run --with-plugin` / `DMTCP_PLUGIN`, and checked from what
//! they log: events in order across launch, checkpoint, resume, kill,
//! restart and a second checkpoint, in a process tree and after exec;
//! wrappers nesting in load order; the older generation's chain; peers
//! finding each other at restart through publish/subscribe; hooks that hang
//! or crash; plugins refused before the program starts.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, setup, Proc, TestEnv};

e2e_tests! {
    events_in_order => events_in_order;
    wrappers_nest => wrappers_nest;
    old_style_chain => old_style_chain;
    pubsub_pair => pubsub_pair;
    hook_hangs_or_crashes => hook_hangs_or_crashes;
    bad_plugins_refused => bad_plugins_refused;
    app_checkpoint_and_safe_point => app_checkpoint_and_safe_point;
    python_module => python_module;
    rust_plugin => rust_plugin;
    no_plugin_no_thread => no_plugin_no_thread;
    pubsub_bounds => pubsub_bounds;
    global_barrier_across_launches => global_barrier_across_launches;
    global_barrier_across_restarts => global_barrier_across_restarts;
    kill_while_at_restart_barrier => kill_while_at_restart_barrier;
    thread_events => thread_events;
    program_closes_library_fds => program_closes_library_fds;
}

/// Watchdog of every wait (not a timed assertion): generous, the test machine
/// is shared.
const T: Duration = Duration::from_secs(120);

/// Builds the example plugins and the host program into a directory the
/// test user can read; the plugins see only a copy of `dmtcp.h`.
fn build(env: &TestEnv) -> PathBuf {
    let ws = setup::workspace_dir();
    let out = env.root.join("plugins");
    setup::mkdir_0755(&out).expect("plugins dir");
    let inc = env.root.join("include");
    setup::mkdir_0755(&inc).expect("include dir");
    fs::copy(ws.join("inject/include/dmtcp.h"), inc.join("dmtcp.h")).expect("copy dmtcp.h");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let mut jobs: Vec<(PathBuf, PathBuf, bool)> = [
        "event_logger",
        "sleep_outer",
        "sleep_inner",
        "pubsub_pair",
        "old_style_a",
        "old_style_b",
        "ckpt_on_sync",
        "safe_point",
    ]
    .iter()
    .map(|n| {
        (
            ws.join(format!("examples/plugins/{n}.c")),
            out.join(format!("{n}.so")),
            true,
        )
    })
    .collect();
    jobs.push((
        ws.join("tests/programs/plugins/fault.c"),
        out.join("fault.so"),
        true,
    ));
    jobs.push((
        ws.join("tests/programs/plugins/old_pubsub.c"),
        out.join("old_pubsub.so"),
        true,
    ));
    jobs.push((
        ws.join("tests/programs/plugins/gbarrier.c"),
        out.join("gbarrier.so"),
        true,
    ));
    jobs.push((
        ws.join("tests/programs/plugins/plugin_host.c"),
        out.join("plugin_host"),
        false,
    ));
    for (src, dst, shared) in jobs {
        let mut cmd = Command::new(&cc);
        if shared {
            cmd.args(["-shared", "-fPIC"]);
        }
        cmd.args(["-O1", "-Wall", "-Wextra", "-Werror"])
            .arg("-DDMTCP_PACKAGE_VERSION=\"3.0.0\"")
            .arg("-I")
            .arg(&inc)
            .arg("-o")
            .arg(&dst)
            .arg(&src);
        let o = dmtcp_tests::setup::output_tracked(&mut cmd)
            .unwrap_or_else(|e| env.fail(&format!("{cc}: {e}")));
        if !o.status.success() {
            env.fail(&format!(
                "building {}: {}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    out
}

fn so(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| dir.join(format!("{n}.so")).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn launch(env: &TestEnv, dir: &Path, plugins: &str, mode: &str, extra: &[(&str, &str)]) -> Proc {
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--with-plugin")
        .arg(plugins)
        .arg("--")
        .arg(dir.join("plugin_host"))
        .arg(mode)
        .env("EVENT_LOG", env.work.join("events.log"));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    env.spawn(cmd, &format!("run-{mode}"))
}

fn images(env: &TestEnv) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(&env.ckpt)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "dmtcp"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn restart(env: &TestEnv, extra: &[(&str, &str)]) -> Proc {
    let mut cmd = env.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(images(env))
        .env("EVENT_LOG", env.work.join("events.log"));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    env.spawn(cmd, "restart-plugins")
}

fn checkpoint(env: &TestEnv) {
    let out = env.dmtcp_command(&["-bc"], T);
    if !out.status.success() {
        env.fail(&format!("checkpoint failed: {}", out.describe()));
    }
}

fn kill(env: &TestEnv, p: &mut Proc) {
    let out = env.dmtcp_command(&["-k"], T);
    if !out.status.success() {
        env.fail(&format!("kill failed: {}", out.describe()));
    }
    env.wait(p, T);
}

fn log(env: &TestEnv) -> String {
    fs::read_to_string(env.work.join("events.log")).unwrap_or_default()
}

fn count(env: &TestEnv, word: &str) -> usize {
    log(env)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(word))
        .count()
}

fn wait_count(env: &TestEnv, word: &str, n: usize) {
    env.wait_for(&format!("{n} {word} events in the log"), T, || {
        count(env, word) >= n
    });
}

fn stop(env: &TestEnv, p: &mut Proc) {
    setup_stop(env);
    let st = env.wait(p, T);
    if !st.success() {
        env.fail(&format!("the computation ended with {st}:\n{}", log(env)));
    }
}

fn setup_stop(env: &TestEnv) {
    fs::write(env.stop_file(), b"").expect("stop file");
}

/// Every event, in order, per process: a parent, and a child that forked
/// and exec'd; launch, checkpoint, kill, restart, second checkpoint, exit.
fn events_in_order(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let mut run = launch(env, &dir, &so(&dir, &["event_logger"]), "tree", &[]);
    wait_count(env, "INIT", 2);
    checkpoint(env);
    wait_count(env, "RUNNING", 2);
    kill(env, &mut run);
    let mut rs = restart(env, &[("EVENT_LOG_MARK", "restart-env-seen")]);
    wait_count(env, "RUNNING", 4);
    checkpoint(env);
    wait_count(env, "RUNNING", 6);
    stop(env, &mut rs);
    wait_count(env, "EXIT", 2);

    let mut per_pid: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for l in log(env).lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 5 {
            per_pid
                .entry(w[0].to_string())
                .or_default()
                .push((w[1].to_string(), w[2..].join(" ")));
        }
    }
    let round = |gen_before: u32, restarted: u32| {
        vec![
            (
                "PRESUSPEND".to_string(),
                format!("gen={gen_before} restarted={restarted} running=0"),
            ),
            (
                "PRECHECKPOINT".to_string(),
                format!("gen={gen_before} restarted={restarted} running=0"),
            ),
            (
                "RESUME".to_string(),
                format!("gen={} restarted={restarted} running=0", gen_before + 1),
            ),
            (
                "RUNNING".to_string(),
                format!("gen={} restarted={restarted} running=1", gen_before + 1),
            ),
        ]
    };
    let tail = |v: &mut Vec<(String, String)>| {
        v.extend(round(0, 0));
        v.push((
            "RESTART".into(),
            "gen=1 restarted=1 running=0 mark=restart-env-seen".into(),
        ));
        v.push(("RUNNING".into(), "gen=1 restarted=1 running=1".into()));
        v.extend(round(1, 1));
        v.push(("EXIT".into(), "gen=2 restarted=1 running=1".into()));
    };
    let mut parent = vec![
        (
            "INIT".to_string(),
            "gen=0 restarted=0 running=1".to_string(),
        ),
        (
            "ATFORK_PREPARE".into(),
            "gen=0 restarted=0 running=1".into(),
        ),
        ("ATFORK_PARENT".into(), "gen=0 restarted=0 running=1".into()),
    ];
    tail(&mut parent);
    let mut child = vec![
        (
            "ATFORK_CHILD".to_string(),
            "gen=0 restarted=0 running=1".to_string(),
        ),
        ("PRE_EXEC".into(), "gen=0 restarted=0 running=1".into()),
        ("INIT".into(), "gen=0 restarted=0 running=1".into()),
        (
            "POST_EXEC".into(),
            "gen=0 restarted=0 running=1 boat=lifeboat-ok".into(),
        ),
    ];
    tail(&mut child);
    let mut seen: Vec<Vec<(String, String)>> = per_pid.into_values().collect();
    seen.sort_by_key(|v| v.first().map(|e| e.0 != "INIT"));
    if seen != vec![parent.clone(), child.clone()] {
        env.fail(&format!(
            "events per process:\n{seen:#?}\nexpected parent:\n{parent:#?}\nchild:\n{child:#?}\nlog:\n{}",
            log(env)
        ));
    }
}

/// `--with-plugin outer:inner`: outer's wrapper is called first and calls
/// inner's through NEXT_FNC; the other order nests the other way.
fn wrappers_nest(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    for (order, expect) in [
        (
            ["sleep_outer", "sleep_inner"],
            [
                "sleep_outer: enter",
                "sleep_inner: enter",
                "sleep_inner: leave",
                "sleep_outer: leave",
            ],
        ),
        (
            ["sleep_inner", "sleep_outer"],
            [
                "sleep_inner: enter",
                "sleep_outer: enter",
                "sleep_outer: leave",
                "sleep_inner: leave",
            ],
        ),
    ] {
        let mut run = launch(env, &dir, &so(&dir, &order), "sleep", &[]);
        let st = env.wait(&mut run, T);
        let err = fs::read_to_string(&run.stderr).unwrap_or_default();
        let out = fs::read_to_string(&run.stdout).unwrap_or_default();
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("sleep_")).collect();
        if !st.success() || lines != expect || out.trim() != "slept" {
            env.fail(&format!(
                "{order:?}: status {st}, wrapper lines {lines:?} (expected {expect:?}), stdout {out:?}"
            ));
        }
    }
}

/// The older generation: both plugins see the checkpoint events in load
/// order; one that does not call NEXT_DMTCP_PROCESS_EVENT hides them from
/// the next.
fn old_style_chain(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let plugins = so(&dir, &["old_style_a", "old_style_b"]);
    for swallow in [false, true] {
        let _ = fs::remove_file(env.work.join("events.log"));
        let _ = fs::remove_file(env.stop_file());
        let vars: &[(&str, &str)] = if swallow {
            &[("OLD_STYLE_A_SWALLOW", "1")]
        } else {
            &[]
        };
        let mut run = launch(env, &dir, &plugins, "single", vars);
        env.wait_for("INIT of both plugins", T, || {
            log(env).lines().filter(|l| l.contains(" INIT ")).count() >= 2
        });
        checkpoint(env);
        let mut want_a = vec![
            "WAIT_FOR_SUSPEND_MSG isRestart=0",
            "THREADS_SUSPEND isRestart=0",
            "SUSPENDED isRestart=0",
            "LEADER_ELECTION isRestart=0",
            "DRAIN isRestart=0",
            "WRITE_CKPT isRestart=0",
            "RESUME isRestart=0",
            "REFILL isRestart=0",
            "THREADS_RESUME isRestart=0",
        ];
        env.wait_for("THREADS_RESUME", T, || {
            log(env)
                .lines()
                .filter(|l| l.contains("THREADS_RESUME"))
                .count()
                >= if swallow { 1 } else { 2 }
        });
        if !swallow {
            // Restart: the name service events with a barrier between.
            kill(env, &mut run);
            run = restart(env, &[]);
            env.wait_for("THREADS_RESUME after the restart", T, || {
                log(env)
                    .lines()
                    .filter(|l| l.contains("THREADS_RESUME isRestart=1"))
                    .count()
                    >= 2
            });
            want_a.extend([
                "RESTART isRestart=1",
                "REFILL isRestart=1",
                "REGISTER_NAME_SERVICE_DATA isRestart=1",
                "SEND_QUERIES isRestart=1",
                "THREADS_RESUME isRestart=1",
            ]);
        }
        stop(env, &mut run);
        let of = |tag: &str| -> Vec<String> {
            log(env)
                .lines()
                .filter(|l| l.starts_with(&format!("{tag} ")) && !l.contains(" INIT "))
                .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
                .collect()
        };
        let a = of("a");
        let b = of("b");
        let want_b: Vec<String> = if swallow {
            Vec::new()
        } else {
            want_a.iter().map(|s| s.to_string()).collect()
        };
        if a != want_a || b != want_b {
            env.fail(&format!(
                "swallow={swallow}: a saw {a:?}, b saw {b:?} (expected a {want_a:?}, b {want_b:?})"
            ));
        }
        // Load order: each event reaches a, then b.
        if !swallow {
            let tags: Vec<String> = log(env)
                .lines()
                .filter(|l| !l.contains(" INIT "))
                .map(|l| l[..1].to_string())
                .collect();
            let alternating = tags.chunks(2).all(|c| c == ["a", "b"]);
            if !alternating {
                env.fail(&format!("events did not reach a before b:\n{}", log(env)));
            }
        }
    }
}

/// Two processes publish new addresses at restart and each finds the
/// other's (with a 1 MiB value), after a global barrier. Plugins given by
/// `DMTCP_PLUGIN`.
fn pubsub_pair(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--")
        .arg(dir.join("plugin_host"))
        .arg("pair")
        .env("DMTCP_PLUGIN", so(&dir, &["pubsub_pair"]))
        .env("EVENT_LOG", env.work.join("events.log"));
    let mut run = env.spawn(cmd, "run-pair");
    env.wait_for("both processes", T, || env.computation_pids().len() >= 4);
    checkpoint(env);
    kill(env, &mut run);
    for round in 1..=2 {
        let _ = fs::remove_file(env.work.join("events.log"));
        let mut rs = restart(env, &[]);
        env.wait_for("both peers' lines", T, || {
            log(env).lines().filter(|l| l.contains(" slot=")).count() >= 2
        });
        let lines: Vec<BTreeMap<String, String>> = log(env)
            .lines()
            .filter(|l| l.contains(" slot="))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        let ok = lines.len() == 2
            && lines[0].get("me") == lines[1].get("peer")
            && lines[1].get("me") == lines[0].get("peer")
            && lines
                .iter()
                .all(|m| m.get("blob").map(String::as_str) == Some("ok"))
            && lines.iter().all(|m| {
                m.get("me")
                    .is_some_and(|v| v.contains(&format!("restart:{round}/")))
            });
        if !ok {
            env.fail(&format!(
                "restart {round}: peers did not find each other:\n{}",
                log(env)
            ));
        }
        if round == 1 {
            // A second restart, from the images of the restarted computation.
            checkpoint(env);
            kill(env, &mut rs);
        } else {
            stop(env, &mut rs);
        }
    }
}

/// The `pubsub_pair` lines of the log (after its pid), as maps.
fn pair_lines(env: &TestEnv) -> Vec<BTreeMap<String, String>> {
    log(env)
        .lines()
        .filter(|l| l.contains(" slot="))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Two `pubsub_pair` lines of restart number `round` in which each peer
/// found the other's new address and blob.
fn pair_found(lines: &[BTreeMap<String, String>], round: u32) -> bool {
    lines.len() == 2
        && lines[0].get("me") == lines[1].get("peer")
        && lines[1].get("me") == lines[0].get("peer")
        && lines
            .iter()
            .all(|m| m.get("blob").map(String::as_str) == Some("ok"))
        && lines.iter().all(|m| {
            m.get("me")
                .is_some_and(|v| v.contains(&format!("restart:{round}/")))
        })
}

/// The launch id in an image's name (`ckpt_<prog>_<computation>-<launch>-<vpid>.dmtcp`).
fn launch_of_image(p: &Path) -> String {
    let n = setup::file_name(p);
    let parts: Vec<&str> = n.rsplitn(3, '-').collect();
    parts.get(1).map(|s| s.to_string()).unwrap_or_default()
}

/// RESTART global barriers across separate `dmtcp-restart` commands: two
/// `dmtcp-run` launches of one process each on one coordinator, with
/// `pubsub_pair` (publish at RESTART, global barrier, query the peer) and
/// `old_pubsub` (the older generation: publish at
/// REGISTER_NAME_SERVICE_DATA, query at SEND_QUERIES), are checkpointed,
/// killed, and restarted by two `dmtcp-restart` commands, one per launch,
/// the second started 2 s after the first: the first launch's barriers wait
/// for the second (the coordinator knows the image set it wrote has two
/// processes), and each finds the other's new address, with both
/// generations' plugins.
fn global_barrier_across_restarts(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let plugin = so(&dir, &["pubsub_pair", "old_pubsub"]);
    let mut a = launch(
        env,
        &dir,
        &plugin,
        "leaf",
        &[("OLD_TAG", "a"), ("OLD_PEER", "b")],
    );
    let mut b = launch(
        env,
        &dir,
        &plugin,
        "leaf",
        &[("OLD_TAG", "b"), ("OLD_PEER", "a")],
    );
    env.wait_for("both launches listed", T, || {
        std::thread::sleep(Duration::from_millis(200));
        let out = env.dmtcp_command(&["-l"], T);
        out.stdout
            .lines()
            .filter(|l| l.contains("plugin_host"))
            .count()
            == 2
    });
    checkpoint(env);
    kill(env, &mut a);
    env.wait(&mut b, T);
    let mut by_launch: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for i in images(env) {
        by_launch.entry(launch_of_image(&i)).or_default().push(i);
    }
    if by_launch.len() != 2 || by_launch.values().any(|v| v.len() != 1) {
        env.fail(&format!("expected one image of each launch: {by_launch:?}"));
    }
    let mut restarts = Vec::new();
    for (n, imgs) in by_launch.values().enumerate() {
        if n > 0 {
            // The second restart starts well after the first one's
            // processes are at their barrier.
            std::thread::sleep(Duration::from_secs(2));
        }
        let mut cmd = env.command("dmtcp-restart");
        cmd.arg("--coord-port")
            .arg(env.port().to_string())
            .args(imgs)
            .env("EVENT_LOG", env.work.join("events.log"));
        restarts.push(env.spawn(cmd, &format!("restart-launch-{n}")));
    }
    let old_lines = || -> Vec<(String, String)> {
        log(env)
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("old"))
            .map(|l| {
                let kv: BTreeMap<&str, &str> = l
                    .split_whitespace()
                    .filter_map(|w| w.split_once('='))
                    .collect();
                (
                    kv.get("me").unwrap_or(&"").to_string(),
                    kv.get("peer").unwrap_or(&"").to_string(),
                )
            })
            .collect()
    };
    env.wait_for("both peers' lines", T, || {
        pair_lines(env).len() >= 2 && old_lines().len() >= 2
    });
    let old = old_lines();
    let old_found = old.len() == 2
        && old[0].0 == old[1].1
        && old[1].0 == old[0].1
        && old.iter().all(|(me, _)| me.contains("restart:1/"));
    if !pair_found(&pair_lines(env), 1) || !old_found {
        env.fail(&format!(
            "launches restarted by separate commands did not find each other:\n{}",
            log(env)
        ));
    }
    setup_stop(env);
    for mut r in restarts {
        let st = env.wait(&mut r, T);
        if !st.success() {
            env.fail(&format!("a restart ended with {st}:\n{}", log(env)));
        }
    }
}

/// A launch restarted alone waits at its RESTART global barrier for the
/// other launch of its image set, which is never restarted; `--kill` then
/// ends it at once (the wait does not swallow the coordinator's `Kill`),
/// long before `DMTCP_PLUGIN_TIMEOUT` (set to 300 s here).
fn kill_while_at_restart_barrier(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let plugin = so(&dir, &["pubsub_pair"]);
    let mut a = launch(env, &dir, &plugin, "leaf", &[]);
    let mut b = launch(env, &dir, &plugin, "leaf", &[]);
    env.wait_for("both launches listed", T, || {
        std::thread::sleep(Duration::from_millis(200));
        let out = env.dmtcp_command(&["-l"], T);
        out.stdout
            .lines()
            .filter(|l| l.contains("plugin_host"))
            .count()
            == 2
    });
    checkpoint(env);
    kill(env, &mut a);
    env.wait(&mut b, T);
    let mut by_launch: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for i in images(env) {
        by_launch.entry(launch_of_image(&i)).or_default().push(i);
    }
    let Some(first) = by_launch.values().next().cloned() else {
        env.fail("no images");
    };
    let mut cmd = env.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(&first)
        .env("DMTCP_PLUGIN_TIMEOUT", "300")
        .env("EVENT_LOG", env.work.join("events.log"));
    let mut r = env.spawn(cmd, "restart-alone");
    env.wait_for("the restarted launch listed", T, || {
        std::thread::sleep(Duration::from_millis(200));
        let out = env.dmtcp_command(&["-l"], T);
        out.stdout.lines().any(|l| l.contains("plugin_host"))
    });
    // Most likely at the barrier by now; either way the kill must work.
    std::thread::sleep(Duration::from_secs(1));
    let out = env.dmtcp_command(&["-k"], T);
    if !out.status.success() {
        env.fail(&format!(
            "--kill of a launch at its RESTART barrier: {}",
            out.describe()
        ));
    }
    env.wait(&mut r, T);
}

fn ticks(env: &TestEnv) -> u64 {
    fs::read_to_string(env.work.join("ticks"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A hook that hangs: the checkpoint fails naming plugin and hook after
/// DMTCP_PLUGIN_TIMEOUT, the program keeps running, the previous images
/// stay. A hook that crashes its process: the checkpoint fails naming
/// them, the rest of the computation runs on and checkpoints again.
fn hook_hangs_or_crashes(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let fault = so(&dir, &["fault"]);
    let mut run = launch(
        env,
        &dir,
        &fault,
        "single",
        &[
            ("PLUGIN_FAULT", "hang:PRECHECKPOINT"),
            ("PLUGIN_FAULT_FROM", "2"),
            ("DMTCP_PLUGIN_TIMEOUT", "2"),
        ],
    );
    env.wait_for("the program to run", T, || ticks(env) > 0);
    checkpoint(env);
    let before: Vec<(PathBuf, Vec<u8>)> = images(env)
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect();
    let out = env.dmtcp_command(&["-bc"], T);
    if out.status.success()
        || !out.stderr.contains("fault")
        || !out.stderr.contains("DMTCP_EVENT_PRECHECKPOINT")
    {
        env.fail(&format!(
            "a hanging PRECHECKPOINT hook: expected a failure naming the plugin and hook, got {}",
            out.describe()
        ));
    }
    let t = ticks(env);
    env.wait_for("the program to keep running", T, || ticks(env) > t + 5);
    let after: Vec<(PathBuf, Vec<u8>)> = images(env)
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect();
    if before != after {
        env.fail("the failed checkpoint changed the previous images");
    }
    // The hook thread stays stuck: its process's plugins are disabled,
    // said in one line, and the next checkpoints succeed without them.
    if !out.stderr.contains("disabled from now on") {
        env.fail(&format!(
            "the hang did not say the plugins are disabled: {}",
            out.describe()
        ));
    }
    for _ in 0..2 {
        checkpoint(env);
    }
    let t = ticks(env);
    env.wait_for("the program to run after the checkpoints", T, || {
        ticks(env) > t + 5
    });
    let newer: Vec<(PathBuf, Vec<u8>)> = images(env)
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect();
    if newer == after {
        env.fail("the checkpoints after the hang wrote no new images");
    }
    stop(env, &mut run);
    let err = fs::read_to_string(&run.stderr).unwrap_or_default();
    let said = err
        .lines()
        .filter(|l| l.contains("get no more events"))
        .count();
    if said != 1 {
        env.fail(&format!(
            "dmtcp-run should say once that the hung plugins are disabled, said it {said} times:\n{err}"
        ));
    }

    let _ = fs::remove_file(env.stop_file());
    let mut run = launch(
        env,
        &dir,
        &fault,
        "pair",
        &[
            ("PLUGIN_FAULT", "crash:PRESUSPEND"),
            ("PLUGIN_FAULT_CHILD_ONLY", "1"),
            ("DMTCP_PLUGIN_TIMEOUT", "10"),
        ],
    );
    env.wait_for("both processes", T, || env.computation_pids().len() >= 4);
    let out = env.dmtcp_command(&["-bc"], T);
    if out.status.success()
        || !out.stderr.contains("fault")
        || !out.stderr.contains("DMTCP_EVENT_PRESUSPEND")
    {
        env.fail(&format!(
            "a crashing PRESUSPEND hook: expected a failure naming the plugin and hook, got {}",
            out.describe()
        ));
    }
    // The parent runs on (its dead child is a zombie it has not reaped):
    // the next checkpoint works.
    checkpoint(env);
    setup_stop(env);
    env.wait(&mut run, T);
}

/// Plugins that cannot work are refused before the program runs, with one
/// line naming them; --disable-all-plugins loads none.
fn bad_plugins_refused(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let inc = env.root.join("include");
    let bad_version = dir.join("bad_version.so");
    let src = env.root.join("bad_version.c");
    fs::write(
        &src,
        "#include \"dmtcp.h\"\nstatic DmtcpPluginDescriptor_t d = {\"2\", DMTCP_PACKAGE_VERSION, \"oldapi\", \"\", \"\", \"\", 0};\nDMTCP_DECL_PLUGIN(d);\n",
    )
    .expect("write source");
    let o = dmtcp_tests::setup::output_tracked(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-I"])
            .arg(&inc)
            .arg("-o")
            .arg(&bad_version)
            .arg(&src),
    )
    .expect("gcc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let junk = dir.join("junk.so");
    fs::write(&junk, "not a shared object\n").expect("junk");
    let undefined = dir.join("undefined.so");
    let usrc = env.root.join("undefined.c");
    fs::write(
        &usrc,
        "extern int no_such_function(void);\nint f(void) { return no_such_function(); }\n",
    )
    .expect("write");
    let o = dmtcp_tests::setup::output_tracked(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&undefined)
            .arg(&usrc),
    )
    .expect("gcc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mark = env.work.join("ran");
    for (plugin, name) in [
        ("no_such_plugin.so".to_string(), "no_such_plugin.so"),
        (bad_version.display().to_string(), "oldapi"),
        (junk.display().to_string(), "junk.so"),
        (undefined.display().to_string(), "no_such_function"),
    ] {
        let mut cmd = env.command("dmtcp-run");
        cmd.arg("--coord-port")
            .arg(env.port().to_string())
            .arg("--with-plugin")
            .arg(&plugin)
            .arg("--")
            .arg("touch")
            .arg(&mark);
        let out = env.run(cmd, "run-bad", T);
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        if out.status.success() || lines.len() != 1 || !lines[0].contains(name) || mark.exists() {
            env.fail(&format!(
                "--with-plugin {plugin}: expected one error line naming {name} and no run, got {}",
                out.describe()
            ));
        }
    }
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--with-plugin")
        .arg("no_such_plugin.so")
        .arg("--disable-all-plugins")
        .arg("--")
        .arg("touch")
        .arg(&mark);
    let out = env.run(cmd, "run-disabled", T);
    if !out.status.success() || !mark.exists() {
        env.fail(&format!(
            "--disable-all-plugins should run the program without plugins: {}",
            out.describe()
        ));
    }
}

/// The application-initiated checkpoint plugin (every sync() checkpoints:
/// 1 in the program, 2 after a restart from that checkpoint) and the
/// PRESUSPEND plugin that waits for a safe point (never inside a region).
fn app_checkpoint_and_safe_point(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let mut run = launch(env, &dir, &so(&dir, &["ckpt_on_sync"]), "sync", &[]);
    env.wait_for("the checkpoint of sync()", T, || {
        log(env).contains("dmtcp_checkpoint returned 1")
    });
    if images(env).is_empty() {
        env.fail("sync() made no images");
    }
    env.wait_for("\"synced\"", T, || {
        env.launcher_stdout().matches("synced").count() == 1
    });
    kill(env, &mut run);
    let mut rs = restart(env, &[]);
    env.wait_for("the restart inside sync()", T, || {
        log(env).contains("dmtcp_checkpoint returned 2")
    });
    // The "synced" printed after the checkpoint is a line from the lost
    // future: the restart cuts the program's stdout file back to its
    // checkpoint-time size, and the restored program prints it again.
    env.wait_for("\"synced\" again after the restart", T, || {
        env.launcher_stdout().matches("synced").count() == 1
            && fs::read_to_string(&rs.stderr).is_ok_and(|e| e.contains("cut back"))
    });
    kill(env, &mut rs);

    let _ = fs::remove_file(env.work.join("events.log"));
    let _ = fs::remove_file(env.work.join("ticks"));
    let mut run = launch(env, &dir, &so(&dir, &["safe_point"]), "txn", &[]);
    env.wait_for("the program to run", T, || ticks(env) > 0);
    for _ in 0..5 {
        checkpoint(env);
    }
    let l = log(env);
    let lines: Vec<&str> = l.lines().filter(|x| x.contains("PRECHECKPOINT")).collect();
    if lines.len() != 5 || !lines.iter().all(|x| x.ends_with("inside=0")) {
        env.fail(&format!("checkpoints inside a region:\n{l}"));
    }
    stop(env, &mut run);
}

/// `import dmtcp` (python/dmtcp.py): is_enabled, checkpoint() returning 1
/// then 2 after a restart, publish/query, and the checkpoint and resume
/// callbacks (examples/plugins/python_events.py).
fn python_module(env: &mut TestEnv) {
    let ws = setup::workspace_dir();
    let py = env.root.join("python");
    setup::mkdir_0755(&py).expect("python dir");
    for (from, to) in [
        ("python/dmtcp.py", "dmtcp.py"),
        ("examples/plugins/python_events.py", "python_events.py"),
    ] {
        fs::copy(ws.join(from), py.join(to)).expect("copy python files");
    }
    env.start_coordinator();
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--")
        .arg("python3")
        .arg(py.join("python_events.py"))
        .env("PYTHONPATH", &py)
        .env("PY_BUSY", "1")
        .env("DMTCP_PLUGIN_TIMEOUT", "20");
    let mut run = env.spawn(cmd, "run-python");
    let has = |s: &str| env.launcher_stdout().contains(s);
    env.wait_for("the self-checkpoint", T, || {
        has("checkpoint returned 1") && has("event resume restarted=False gen=1")
    });
    for want in [
        "enabled=True",
        "query ok=True",
        "event checkpoint gen=0",
        "PRECHECKPOINT refused: PRECHECKPOINT: Python code cannot run",
        "event RESUME gen=1 restarts=0",
    ] {
        if !has(want) {
            env.fail(&format!("no {want:?} in {:?}", env.launcher_stdout()));
        }
    }
    kill(env, &mut run);
    let mut rs = restart(env, &[]);
    env.wait_for("the restart inside checkpoint()", T, || {
        has("checkpoint returned 2") && has("event resume restarted=True gen=1")
    });
    if !has("event RESTART gen=1 restarts=1") {
        env.fail(&format!("no RESTART event in {:?}", env.launcher_stdout()));
    }
    checkpoint(env);
    env.wait_for("the second checkpoint's events", T, || {
        has("event checkpoint gen=1")
            && has("event RESUME gen=2 restarts=1")
            && has("event resume restarted=False gen=2")
    });
    stop(env, &mut rs);
    if !has("done") {
        env.fail(&format!("no \"done\" in {:?}", env.launcher_stdout()));
    }
}

/// The Rust example plugin (dmtcp-plugin crate): events and, at restart,
/// slots from the coordinator's integer operations after a barrier.
fn rust_plugin(env: &mut TestEnv) {
    let dir = build(env);
    let lib = env.bin("libdmtcp_example_rust_plugin.so");
    if !lib.is_file() {
        env.fail(&format!(
            "{} not built (cargo build --release)",
            lib.display()
        ));
    }
    env.start_coordinator();
    let mut run = launch(env, &dir, &lib.display().to_string(), "pair", &[]);
    env.wait_for("INIT in both processes", T, || {
        log(env).matches(" rust DMTCP_EVENT_INIT").count() == 1
            && log(env).matches(" rust DMTCP_EVENT_ATFORK_CHILD").count() == 1
    });
    checkpoint(env);
    kill(env, &mut run);
    let _ = fs::remove_file(env.work.join("events.log"));
    let mut rs = restart(env, &[]);
    env.wait_for("the slots of both processes", T, || {
        log(env).matches(" rust slot=").count() == 2
    });
    let l = log(env);
    let mut slots: Vec<&str> = l
        .lines()
        .filter_map(|x| x.split_once(" rust slot=").map(|(_, s)| s))
        .collect();
    slots.sort();
    if slots != ["0 of=2", "1 of=2"] || !l.contains(" rust DMTCP_EVENT_RESTART gen=1") {
        env.fail(&format!("restart of the Rust plugin:\n{l}"));
    }
    stop(env, &mut rs);
}

/// A process without plugins has no hook thread (one task); with a plugin,
/// one more.
fn no_plugin_no_thread(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    for (plugins, want) in [(None, 1usize), (Some(so(&dir, &["event_logger"])), 2)] {
        let _ = fs::remove_file(env.stop_file());
        let _ = fs::remove_file(env.work.join("ticks"));
        let mut cmd = env.command("dmtcp-run");
        cmd.arg("--coord-port").arg(env.port().to_string());
        if let Some(p) = &plugins {
            cmd.arg("--with-plugin").arg(p);
        }
        cmd.arg("--")
            .arg(dir.join("plugin_host"))
            .arg("single")
            .env("EVENT_LOG", env.work.join("events.log"));
        let mut run = env.spawn(cmd, "run-threads");
        env.wait_for("the program to run", T, || ticks(env) > 0);
        let target = env
            .computation_pids()
            .into_iter()
            .find(|p| {
                fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "plugin_host")
            })
            .unwrap_or_else(|| env.fail("plugin_host not found"));
        let tasks = fs::read_dir(format!("/proc/{target}/task"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        if tasks != want {
            env.fail(&format!(
                "plugins {plugins:?}: {tasks} thread(s) in plugin_host, expected {want}"
            ));
        }
        checkpoint(env);
        stop(env, &mut run);
    }
}

/// The coordinator's database takes any bytes within its bounds and
/// refuses the rest without harm: values of 1 MiB and binary keys work, a
/// 5 MiB value, a 70 KiB key and a 17 MiB value (over the frame limit) are
/// refused, and the database works on afterwards.
fn pubsub_bounds(env: &mut TestEnv) {
    let ws = setup::workspace_dir();
    let py = env.root.join("python");
    setup::mkdir_0755(&py).expect("python dir");
    fs::copy(ws.join("python/dmtcp.py"), py.join("dmtcp.py")).expect("copy dmtcp.py");
    let script = py.join("bounds.py");
    fs::write(
        &script,
        r#"import dmtcp
b = bytes(range(256))
print("big", dmtcp.publish("t", b"k", b"x" * (5 << 20)))
print("huge", dmtcp.publish("t", b"k", b"x" * (17 << 20)))
print("longkey", dmtcp.publish("t", b"k" * (70 << 10), b"v"))
print("mib", dmtcp.publish("t", b"k", b"y" * (1 << 20)))
print("query", dmtcp.query("t", b"k") == b"y" * (1 << 20))
print("binary", dmtcp.publish("t", b, b * 10), dmtcp.query("t", b) == b * 10)
print("missing", dmtcp.query("t", b"nothing"))
"#,
    )
    .expect("write script");
    env.start_coordinator();
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--")
        .arg("python3")
        .arg(&script)
        .env("PYTHONPATH", &py);
    // Megabytes through the loopback and Python: generous on a busy machine.
    let out = env.run(cmd, "run-bounds", Duration::from_secs(300));
    let want = "big False\nhuge False\nlongkey False\nmib True\nquery True\nbinary True True\nmissing None\n";
    if !out.status.success() || out.stdout != want {
        env.fail(&format!("name service bounds: {}", out.describe()));
    }
    let st = env.dmtcp_command(&["-s"], T);
    if !st.status.success() {
        env.fail(&format!(
            "the coordinator after the refusals: {}",
            st.describe()
        ));
    }
}

/// `dmtcp_global_barrier` spans every launch joined to the coordinator:
/// two `dmtcp-run` on one coordinator, one of them slow to reach the
/// barrier (its hook sleeps first); at PRECHECKPOINT and at RESUME, every
/// process's "after" line follows every process's "before" line, over two
/// checkpoints; then at RESTART, both launches restarted by one
/// dmtcp-restart (two launch groups).
fn global_barrier_across_launches(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let gb_log = env.work.join("gbarrier.log");
    let gb = gb_log.display().to_string();
    let plugin = so(&dir, &["gbarrier"]);
    let mut fast = launch(
        env,
        &dir,
        &plugin,
        "pair",
        &[("GB_LOG", &gb), ("GB_TAG", "fast")],
    );
    let mut slow = launch(
        env,
        &dir,
        &plugin,
        "single",
        &[("GB_LOG", &gb), ("GB_TAG", "slow"), ("GB_DELAY_MS", "700")],
    );
    env.wait_for("both launches' processes", T, || {
        env.computation_pids().len() >= 7 && ticks(env) > 0
    });
    let lines = || -> Vec<String> {
        fs::read_to_string(&gb_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    for round in 1..=2usize {
        checkpoint(env);
        env.wait_for("every RESUME after line", T, || {
            lines()
                .iter()
                .filter(|l| l.contains(" after RESUME"))
                .count()
                >= 3 * round
        });
    }
    // Both launches restarted by one dmtcp-restart (two launch groups):
    // the RESTART barrier spans both.
    kill(env, &mut fast);
    env.wait(&mut slow, T);
    let mut rs = restart(env, &[]);
    env.wait_for("every RESTART after line", T, || {
        lines()
            .iter()
            .filter(|l| l.contains(" after RESTART"))
            .count()
            >= 3
    });
    stop(env, &mut rs);
    let all = lines();
    // Split into rounds: 3 processes each.
    for (event, rounds) in [("PRECHECKPOINT", 2), ("RESUME", 2), ("RESTART", 1)] {
        let of: Vec<(usize, &String)> = all
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(&format!(" {event} ")))
            .collect();
        if of.len() != 6 * rounds || of.iter().any(|(_, l)| !l.ends_with("rc=0")) {
            env.fail(&format!(
                "{event}: expected {} lines with rc=0, log:\n{}",
                6 * rounds,
                all.join("\n")
            ));
        }
        for chunk in of.chunks(6) {
            let last_before = chunk
                .iter()
                .filter(|(_, l)| l.contains(" before "))
                .map(|(i, _)| *i)
                .max();
            let first_after = chunk
                .iter()
                .filter(|(_, l)| l.contains(" after "))
                .map(|(i, _)| *i)
                .min();
            let tags: std::collections::BTreeSet<&str> = chunk
                .iter()
                .map(|(_, l)| l.split(':').next().unwrap_or(""))
                .collect();
            if last_before.is_none()
                || first_after.is_none()
                || last_before >= first_after
                || tags.len() != 2
            {
                env.fail(&format!(
                    "{event}: an \"after\" came before a \"before\" (or a launch is missing), log:\n{}",
                    all.join("\n")
                ));
            }
        }
    }
}

/// `pthread_create`/`pthread_exit` in a process with plugins: PTHREAD_START
/// then PTHREAD_RETURN for a thread that returns, PTHREAD_START then
/// PTHREAD_EXIT for one that calls pthread_exit, each in the new thread
/// (the program sees its threads' results); the hook thread has none; a
/// checkpoint afterwards works.
fn thread_events(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let mut run = launch(env, &dir, &so(&dir, &["event_logger"]), "threads", &[]);
    env.wait_for("the program to run", T, || ticks(env) > 0);
    checkpoint(env);
    wait_count(env, "RUNNING", 1);
    stop(env, &mut run);
    let out = fs::read_to_string(&run.stdout).unwrap_or_default();
    let events: Vec<String> = log(env)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    let want = [
        "INIT",
        "PTHREAD_START",
        "PTHREAD_RETURN",
        "PTHREAD_START",
        "PTHREAD_EXIT",
        "PRESUSPEND",
        "PRECHECKPOINT",
        "RESUME",
        "RUNNING",
        "EXIT",
    ];
    if out.trim() != "threads 42 43" || events != want {
        env.fail(&format!(
            "stdout {out:?}, events {events:?} (expected {want:?}), log:\n{}",
            log(env)
        ));
    }
}

/// A program that closes every fd above 2 at start, as OpenSSH's client
/// does, and gets the plugin hook pipes' numbers for sockets of its own:
/// neither the hook thread nor the supervisor may read or write them (an
/// ssh started by a computation with plugins once lost bytes of sshd's
/// banner that way). Checkpoint, restart, checkpoint: every byte the
/// program sends through its sockets comes back intact.
fn program_closes_library_fds(env: &mut TestEnv) {
    let dir = build(env);
    env.start_coordinator();
    let mut run = launch(env, &dir, &so(&dir, &["event_logger"]), "closefrom", &[]);
    env.wait_for("the program to run", T, || ticks(env) > 2);
    checkpoint(env);
    kill(env, &mut run);
    let before = ticks(env);
    let mut r = restart(env, &[]);
    env.wait_for("the restarted program to run on", T, || {
        ticks(env) > before + 2
    });
    checkpoint(env);
    stop(env, &mut r);
    // The restored program writes to its stdout of before: the launch's.
    let out = fs::read_to_string(&run.stdout).unwrap_or_default();
    if !out.contains("closefrom ok") {
        env.fail(&format!(
            "the program's sockets lost or gained bytes: {out}"
        ));
    }
}
