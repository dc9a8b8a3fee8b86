//! Credentials through a restart: a restored process gets the ids it had,
//! never those of whoever restarts it (issue 13, "No privilege through a
//! restart").

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use dmtcp_tests::{e2e_tests, procs, run_e2e, setup, Scenario, TestEnv, User, NOBODY};

e2e_tests! {
    dropped_process_restarts_with_its_own_ids => dropped_process;
}

/// uid 65534's image restarted by root runs as uid 65534.
#[test]
#[cfg_attr(
    dmtcp_tests_not_root,
    ignore = "skipped: switching to uid 65534 needs root (tests built as non-root)"
)]
fn root_restarts_uid_65534_image_as_uid_65534() {
    run_e2e(
        "root_restarts_uid_65534_image_as_uid_65534",
        User::Nobody,
        nobody_image_root_restart,
    );
}

/// A setuid-root program run by uid 65534 under `dmtcp-run` is warned
/// about in one line (it runs without euid 0 in the computation's user
/// namespace); run directly it does get euid 0.
#[test]
#[cfg_attr(
    dmtcp_tests_not_root,
    ignore = "skipped: making a setuid-root file and switching to uid 65534 need root"
)]
fn setuid_program_under_unprivileged_run_is_warned_about() {
    run_e2e(
        "setuid_program_under_unprivileged_run_is_warned_about",
        User::Nobody,
        setuid_warned,
    );
}

fn setuid_warned(env: &mut TestEnv) {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(env.user, User::Nobody);
    // A setuid-root copy made by root (this test process).
    let prog = env.work.join("ids_setuid");
    fs::copy(env.prog("ids"), &prog).expect("copy ids");
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o4755)).expect("chmod 4755");
    // The program prints its ids and ends at once (its stop file exists).
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    // Directly, uid 65534 gets euid 0 from it: the copy is really setuid.
    let out = env.run(env.command_path(&prog), "direct", Duration::from_secs(20));
    if !out.stdout.starts_with("euid 0 ") {
        env.fail(&format!("the setuid copy run directly: {}", out.describe()));
    }
    env.start_coordinator();
    let mut cmd = env.command("dmtcp-run");
    cmd.args(["--coord-port", &env.port().to_string(), "--"])
        .arg(&prog);
    let out = env.run(cmd, "run-setuid", Duration::from_secs(30));
    if !out.status.success() || !out.stdout.starts_with(&format!("euid {NOBODY} ")) {
        env.fail(&format!("dmtcp-run of the setuid copy: {}", out.describe()));
    }
    let want = format!(
        "dmtcp-run: warning: {} is setuid to a user outside the computation's user namespace; under dmtcp-run it runs without that privilege",
        prog.display()
    );
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    if warnings != [want.as_str()] {
        env.fail(&format!(
            "expected exactly the warning `{want}`; stderr: {}",
            out.stderr
        ));
    }
    // An ordinary program gets no such line.
    let mut cmd = env.command("dmtcp-run");
    cmd.args(["--coord-port", &env.port().to_string(), "--"])
        .arg(env.prog("ids"));
    let out = env.run(cmd, "run-plain", Duration::from_secs(30));
    if !out.status.success() || out.stderr.contains("warning") {
        env.fail(&format!("dmtcp-run of a plain program: {}", out.describe()));
    }
    let _ = fs::remove_file(env.stop_file());
}

/// What every line of the dropper must say: the ids of uid 65534, no
/// supplementary group, no capability, /etc/shadow not readable.
const DROPPED: &str =
    "uid 65534 65534 65534 65534 gid 65534 65534 65534 65534 groups 0 capeff 0 shadow no";

/// Waits until `file` has grown past `from` by lines of both threads;
/// returns the new complete lines.
fn new_lines(env: &TestEnv, file: &Path, from: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = setup_read(file);
        let tail = text.get(from..).unwrap_or("");
        let lines: Vec<String> = tail
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let done = tail.ends_with('\n');
        if done
            && lines.iter().any(|l| l.starts_with("main "))
            && lines.iter().any(|l| l.starts_with("thread "))
        {
            return lines;
        }
        if Instant::now() > deadline {
            env.fail(&format!(
                "{}: no new lines of both threads within 20 s: {tail:?}",
                file.display()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn setup_read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

fn assert_dropped(env: &TestEnv, what: &str, lines: &[String]) {
    for l in lines {
        let rest = l.split_once(' ').map(|(_, r)| r).unwrap_or("");
        if rest != DROPPED {
            env.fail(&format!(
                "{what}: a thread reports `{l}`, expected `{DROPPED}`"
            ));
        }
    }
}

/// The host's view of a process's ids (`/proc/PID/status`).
fn status_ids(pid: i32) -> (String, String, String) {
    let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("CapEff:"))
}

fn assert_host_view(env: &TestEnv, pid: i32) {
    let (uid, gid, capeff) = status_ids(pid);
    let want = "65534 65534 65534 65534";
    if uid != want || gid != want || !capeff.trim_start_matches('0').is_empty() {
        env.fail(&format!(
            "restored pid {pid}: Uid {uid:?} Gid {gid:?} CapEff {capeff:?}, expected uid/gid 65534 and no capability"
        ));
    }
}

/// As root the program drops to uid 65534 itself (as uid 65534 it already
/// is): after checkpoint, kill and restart (by the same user), both of its
/// threads are still uid 65534 with no capability and cannot read
/// /etc/shadow. Before the fix a root restart brought it back as uid 0.
fn dropped_process(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("ids.txt");
    let sc = Scenario::new("dropper").arg(&out);
    let mut r = sc.launch(env);
    let before = new_lines(env, &out, 0);
    assert_dropped(env, "before the checkpoint", &before);
    let images = r.checkpoint();
    r.kill();
    let len = setup_read(&out).len();
    r.restart_from_images(&images);
    let after = new_lines(env, &out, len);
    assert_dropped(env, "after the restart", &after);
    if let Some(pid) = r.host_pid {
        assert_host_view(env, pid);
    }
    r.kill();
}

/// A free port on loopback for root's own coordinator.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A command run as root (this test process) with the test's tag and
/// temp dir, so the harness finds and cleans up what it starts.
fn as_root(env: &TestEnv, bin: &str) -> Command {
    let mut c = Command::new(setup::bins_world_readable().join(bin));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("DMTCP_") && k != "DMTCP_LOG" {
            c.env_remove(&k);
        }
    }
    c.env(procs::TAG_VAR, &env.tag)
        .env("DMTCP_TMPDIR", &env.tmp)
        .env("HOME", "/root")
        .current_dir(&env.work)
        .stdin(std::process::Stdio::null())
        .process_group(0);
    c
}

/// uid 65534 runs the dropper and checkpoints it (its key in the temp-dir
/// place root looks for it, as for a user without a home); root restarts
/// the image: the process runs as uid 65534, never as root.
fn nobody_image_root_restart(env: &mut TestEnv) {
    assert_eq!(env.user, User::Nobody);
    env.start_coordinator();
    let out = env.work.join("ids.txt");
    let sc = Scenario::new("dropper")
        .arg(&out)
        .env("HOME", "/nonexistent");
    let mut r = sc.launch(env);
    let before = new_lines(env, &out, 0);
    assert_dropped(env, "before the checkpoint", &before);
    let images = r.checkpoint();
    r.kill();
    let image: PathBuf = images
        .iter()
        .find(|p| setup::file_name(p).starts_with("ckpt_dropper_"))
        .cloned()
        .expect("a dropper image");
    let len = setup_read(&out).len();

    // Its files are opened with its owner's access, not root's: the output
    // file made root-only in between, root's restart of the image is
    // refused instead of handing uid 65534 an fd of a root-only file.
    {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(&out, Some(0), Some(0)).expect("chown to root");
        fs::set_permissions(&out, fs::Permissions::from_mode(0o600)).expect("chmod 600");
        let port = free_port().to_string();
        let mut cmd = as_root(env, "dmtcp-restart");
        cmd.args(["--coord-port", &port]).arg(&image);
        let o = env.run(cmd, "root-restart-denied", Duration::from_secs(60));
        if o.status.success() || !o.stderr.contains("Permission denied") {
            env.fail(&format!(
                "root restarted uid 65534's image holding an fd of a root-only file: {}",
                o.describe()
            ));
        }
        env.assert_no_computation_left("after the refused restart", Duration::from_secs(15));
        std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).expect("chown back");
        fs::set_permissions(&out, fs::Permissions::from_mode(0o644)).expect("chmod 644");
        let mut quit = as_root(env, "dmtcp-command");
        quit.args(["-p", &port, "--quit"]);
        let _ = env.run(quit, "root-quit", Duration::from_secs(20));
    }

    let port = free_port().to_string();
    let mut cmd = as_root(env, "dmtcp-restart");
    cmd.args(["--coord-port", &port]).arg(&image);
    let mut restart = env.spawn(cmd, "root-restart");
    let after = new_lines(env, &out, len);
    assert_dropped(env, "after root's restart", &after);
    let pid = procs::tagged(&env.tag)
        .into_iter()
        .find(|&p| procs::stat(p).is_some_and(|s| s.comm == "dropper"))
        .unwrap_or_else(|| env.fail("restored dropper not found"));
    assert_host_view(env, pid);
    let uid_line = status_ids(pid).0;
    assert!(uid_line.starts_with(&NOBODY.to_string()));

    let mut kill = as_root(env, "dmtcp-command");
    kill.args(["-p", &port, "-k"]);
    let o = env.run(kill, "root-kill", Duration::from_secs(30));
    if !o.status.success() {
        env.fail(&format!("root's dmtcp-command -k failed: {}", o.describe()));
    }
    env.wait(&mut restart, Duration::from_secs(30));
    env.assert_no_computation_left("after root's kill", Duration::from_secs(15));
}
