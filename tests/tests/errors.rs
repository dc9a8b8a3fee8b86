//! Failure paths: bad images are refused with a one-line error and leave no
//! process behind; bad invocations fail cleanly; a checkpoint that cannot be
//! written fails without harming the program.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, procs, setup, Output, Scenario, TestEnv};

e2e_tests! {
    corrupt_image_refused => corrupt_image;
    corrupt_page_data_of_uncompressed_image_refused => corrupt_uncompressed;
    truncated_image_refused => truncated_image;
    missing_image_refused => missing_image;
    run_nonexistent_program_fails => run_nonexistent;
    command_without_coordinator_fails => command_without_coordinator;
    unwritable_ckpt_dir_keeps_program_running => unwritable_ckpt_dir;
}

/// Requires exactly one non-empty stderr line, naming `image`.
fn assert_one_line_error(env: &TestEnv, what: &str, out: &Output, image: &Path) {
    if out.status.success() {
        env.fail(&format!(
            "{what}: expected a non-zero exit, got {}",
            out.describe()
        ));
    }
    let name = setup::file_name(image);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.len() != 1 || !lines[0].contains(&name) {
        env.fail(&format!(
            "{what}: expected a one-line error on stderr mentioning {name}, got {}",
            out.describe()
        ));
    }
}

fn restart_refused(env: &mut TestEnv, what: &str, mutate: fn(&Path)) {
    let sc = Scenario::new("counter").arg(env.work.join("counter.txt"));
    restart_refused_with(env, sc, what, mutate);
}

fn restart_refused_with(env: &mut TestEnv, sc: Scenario, what: &str, mutate: fn(&Path)) {
    env.start_coordinator();
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let images = r.checkpoint();
    r.kill();
    let good: PathBuf = images
        .iter()
        .find(|p| setup::file_name(p).starts_with(&format!("ckpt_{}_", sc.prog)))
        .cloned()
        .expect("checkpoint() checked a counter image exists");
    let bad_dir = env.work.join("bad");
    env.make_user_dir(&bad_dir);
    let bad = bad_dir.join(setup::file_name(&good));
    fs::copy(&good, &bad).expect("copy image");
    env.give_to_user(&bad);
    mutate(&bad);

    let mut cmd = env.command("dmtcp-restart");
    cmd.env_remove("DMTCP_LOG")
        .arg("--coord-port")
        .arg(env.port().to_string())
        .arg(&bad);
    let out = env.run(cmd, &format!("restart-{what}"), Duration::from_secs(60));
    assert_one_line_error(env, &format!("dmtcp-restart of a {what} image"), &out, &bad);
    env.assert_no_computation_left(
        &format!("after dmtcp-restart refused a {what} image"),
        Duration::from_secs(10),
    );
    // The intact image still restarts: the refusal was about the damage.
    r.restart_from_images(&[good]);
    r.finish();
}

fn flip_middle_byte(p: &Path) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .expect("open image");
    let len = f.metadata().expect("stat image").len();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(len / 2)).expect("seek");
    f.read_exact(&mut b).expect("read");
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(len / 2)).expect("seek");
    f.write_all(&b).expect("write");
    f.sync_all().expect("fsync");
}

fn cut_in_half(p: &Path) {
    let f = OpenOptions::new().write(true).open(p).expect("open image");
    let len = f.metadata().expect("stat image").len();
    f.set_len(len / 2).expect("truncate");
}

/// A byte flipped in the middle of the image.
fn corrupt_image(env: &mut TestEnv) {
    restart_refused(env, "corrupt", flip_middle_byte);
}

/// A byte flipped in the middle of an uncompressed image of 256 MiB of
/// heap: page data no structural check reads. As root the memory is
/// restored lazily, the program may start before the bad block is reached,
/// and the restart must still end in a one-line error with nothing left
/// running; unprivileged, pages are copied and checked first.
fn corrupt_uncompressed(env: &mut TestEnv) {
    let sc = Scenario::new("heap256")
        .run_flag("--no-gzip")
        .env("DMTCP_GZIP", "0");
    restart_refused_with(env, sc, "corrupt uncompressed", flip_middle_byte);
}

/// The image cut in half.
fn truncated_image(env: &mut TestEnv) {
    restart_refused(env, "truncated", cut_in_half);
}

/// An image path that does not exist.
fn missing_image(env: &mut TestEnv) {
    env.start_coordinator();
    let missing = env.work.join("nowhere").join("ckpt_counter_missing.dmtcp");
    let mut cmd = env.command("dmtcp-restart");
    cmd.env_remove("DMTCP_LOG")
        .arg("--coord-port")
        .arg(env.port().to_string())
        .arg(&missing);
    let out = env.run(cmd, "restart-missing", Duration::from_secs(30));
    assert_one_line_error(env, "dmtcp-restart of a missing image", &out, &missing);
    env.assert_no_computation_left(
        "after dmtcp-restart of a missing image",
        Duration::from_secs(10),
    );
}

/// `dmtcp-run -- /nonexistent` fails with an error naming the program.
fn run_nonexistent(env: &mut TestEnv) {
    env.start_coordinator();
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(["--", "/nonexistent"]);
    let out = env.run(cmd, "run-nonexistent", Duration::from_secs(30));
    if out.status.success() || !out.stderr.contains("/nonexistent") {
        env.fail(&format!(
            "dmtcp-run -- /nonexistent: expected a non-zero exit and an error naming \
             /nonexistent, got {}",
            out.describe()
        ));
    }
    env.assert_no_computation_left("after dmtcp-run -- /nonexistent", Duration::from_secs(10));
}

/// `dmtcp-command` against a port where nothing listens fails (and does not hang).
fn command_without_coordinator(env: &mut TestEnv) {
    // A free port below the ephemeral range: the coordinators other tests
    // start on port 0 get ephemeral ports, so none can take this one.
    let port = (20000 + (std::process::id() % 5000) as u16..30000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below the ephemeral range");
    for args in [&["-s"][..], &["-bc"][..]] {
        let mut cmd = env.command("dmtcp-command");
        cmd.arg("-p").arg(port.to_string()).args(args);
        let out = env.run(cmd, "command-nocoord", Duration::from_secs(30));
        if out.status.success() || out.stderr.trim().is_empty() {
            env.fail(&format!(
                "dmtcp-command -p {port} {args:?} with no coordinator: expected a non-zero \
                 exit and an error, got {}",
                out.describe()
            ));
        }
    }
    env.assert_no_computation_left(
        "after dmtcp-command without coordinator",
        Duration::from_secs(5),
    );
}

/// The ckpt dir is replaced by a regular file (unwritable even for root):
/// `-bc` fails, the program keeps running; once the dir is back a checkpoint
/// succeeds and the program passes.
fn unwritable_ckpt_dir(env: &mut TestEnv) {
    env.start_coordinator();
    let data = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&data);
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let pid = r.host_pid.expect("launched program has a host pid");

    let moved = env.work.join("ckpt.moved");
    fs::rename(&env.ckpt, &moved).expect("move ckpt dir away");
    fs::set_permissions(&moved, fs::Permissions::from_mode(0o555)).expect("chmod");
    fs::write(&env.ckpt, b"not a directory\n").expect("create blocker file");

    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(120));
    if out.status.success() {
        env.fail(&format!(
            "dmtcp-command -bc succeeded although the ckpt dir {} is a regular file \
             (are images written through a directory fd opened earlier?): {}",
            env.ckpt.display(),
            out.describe()
        ));
    }
    let size = || fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
    let s0 = size();
    env.wait_for(
        "the program to keep running (writing lines) after the failed checkpoint",
        Duration::from_secs(15),
        || {
            procs::stat(pid).is_some_and(|s| !matches!(s.state, 't' | 'T' | 'Z' | 'X'))
                && size() > s0
        },
    );

    fs::remove_file(&env.ckpt).expect("remove blocker file");
    fs::set_permissions(&moved, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::rename(&moved, &env.ckpt).expect("move ckpt dir back");
    r.checkpoint();
    r.finish();
}
