//! Attacks on a computation through its coordinator connection: a fake
//! coordinator on the port (before launch, and after the real one died), a
//! coordinator that knows the secret but sends a crafted computation id.
//! The fake runs in the test process (root), the computation as the test
//! user: the supervisor must refuse it, with one line, having sent nothing
//! but a random hello, and obey none of its frames.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dmtcp_protocol::auth;
use dmtcp_protocol::{
    encode_frame, read_frame, CheckpointOptions, FromCoordinator, Phase, ToCoordinator,
};
use dmtcp_tests::{e2e_tests, env::is_coordinator, procs, Output, Scenario, TestEnv};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

e2e_tests! {
    fake_coordinator_is_refused => fake_coordinator;
    fake_coordinator_after_the_real_one_died_is_refused => fake_after_death;
    crafted_computation_id_from_coordinator_refused => crafted_id;
    coordinator_killed_mid_checkpoint_commits_nothing => killed_mid_checkpoint;
}

/// How a fake coordinator answers a hello.
#[derive(Clone)]
enum Fake {
    /// A challenge with a random "proof", then orders.
    Garbage,
    /// Protocol 1's answer: a Welcome at once (no proof at all), then orders.
    Welcome,
    /// Knows the secret: a valid proof, then a crafted Welcome.
    Knows(String),
}

/// A fake coordinator in this process; records the kinds of the frames
/// each connection sent.
struct FakeCoord {
    port: u16,
    seen: Arc<Mutex<Vec<Vec<&'static str>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

fn kind(m: &ToCoordinator) -> &'static str {
    m.kind()
}

fn orders(evil_dir: &Path) -> Vec<FromCoordinator> {
    let options = CheckpointOptions {
        id: 1,
        generation: 1,
        dir: evil_dir.display().to_string(),
        codec: String::new(),
        incremental: false,
    };
    let mut v = vec![FromCoordinator::Welcome {
        computation: "x/../../rootonly/pwn".into(),
        generation: 0,
        ckpt_dir: evil_dir.display().to_string(),
    }];
    for phase in Phase::ALL {
        v.push(FromCoordinator::Barrier {
            phase,
            options: options.clone(),
        });
    }
    v.push(FromCoordinator::Kill);
    v
}

fn serve(mut s: TcpStream, mode: Fake, evil_dir: &Path, seen: &Mutex<Vec<Vec<&'static str>>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let idx = {
        let mut g = seen.lock().unwrap();
        g.push(Vec::new());
        g.len() - 1
    };
    let record = |k| seen.lock().unwrap()[idx].push(k);
    let Ok(first) = read_frame::<_, ToCoordinator>(&mut s) else {
        return;
    };
    record(kind(&first));
    let ToCoordinator::Hello(hello) = first else {
        return;
    };
    let mut out = Vec::new();
    match &mode {
        Fake::Garbage => {
            out.push(FromCoordinator::Challenge {
                nonce: auth::fresh_nonce(),
                proof: auth::fresh_nonce(),
            });
            out.extend(orders(evil_dir));
        }
        Fake::Welcome => out.extend(orders(evil_dir)),
        Fake::Knows(secret) => {
            let nonce = auth::fresh_nonce();
            let proof = auth::coordinator_proof(secret, &hello, &nonce);
            let _ =
                s.write_all(&encode_frame(&FromCoordinator::Challenge { nonce, proof }).unwrap());
            match read_frame::<_, ToCoordinator>(&mut s) {
                Ok(m) => record(kind(&m)),
                Err(_) => return,
            }
            out.extend(orders(evil_dir));
        }
    }
    for m in out {
        if s.write_all(&encode_frame(&m).unwrap()).is_err() {
            break;
        }
    }
    while let Ok(m) = read_frame::<_, ToCoordinator>(&mut s) {
        record(kind(&m));
    }
}

impl FakeCoord {
    fn start(port: u16, mode: Fake, evil_dir: &Path) -> FakeCoord {
        let deadline = Instant::now() + Duration::from_secs(20);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => panic!("fake on port {port}: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (seen.clone(), stop.clone());
        let evil = evil_dir.to_path_buf();
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let (mode, evil, seen) = (mode.clone(), evil.clone(), s2.clone());
                        thread::spawn(move || serve(s, mode, &evil, &seen));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FakeCoord {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Vec<&'static str>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeCoord {
    /// Stops listening (the port is free again once this returns).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Non-zero exit and exactly one line on stderr containing `needle`.
fn assert_one_line(env: &TestEnv, what: &str, out: &Output, needle: &str) {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if out.status.success() || lines.len() != 1 || !lines[0].contains(needle) {
        env.fail(&format!(
            "{what}: expected a non-zero exit and one stderr line containing {needle:?}, got {}",
            out.describe()
        ));
    }
}

fn assert_empty(env: &TestEnv, dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if !left.is_empty() {
        env.fail(&format!(
            "{} should be empty, holds {left:?}",
            dir.display()
        ));
    }
}

/// `dmtcp-run` against a fake coordinator (one that answers with a bogus
/// proof, one that answers as protocol 1 did): refused with one line, the
/// program never started, nothing written, nothing but a hello sent; the
/// same for `dmtcp-command -k` even with a secret at hand.
fn fake_coordinator(env: &mut TestEnv) {
    let evil = env.work.join("evil");
    env.make_user_dir(&evil);
    for (label, mode) in [("garbage", Fake::Garbage), ("welcome", Fake::Welcome)] {
        let fake = FakeCoord::start(0, mode, &evil);
        let data = env.work.join(format!("counter-{label}.txt"));
        let mut cmd = env.command("dmtcp-run");
        cmd.env_remove("DMTCP_LOG")
            .arg("--coord-port")
            .arg(fake.port.to_string())
            .arg("--")
            .arg(env.prog("counter"))
            .arg(&data);
        let out = env.run(cmd, &format!("run-fake-{label}"), Duration::from_secs(30));
        assert_one_line(
            env,
            &format!("dmtcp-run against a fake coordinator ({label})"),
            &out,
            &fake.port.to_string(),
        );
        if data.exists() {
            env.fail(&format!(
                "the program ran under a fake coordinator ({label}): {} exists",
                data.display()
            ));
        }
        let mut cmd = env.command("dmtcp-command");
        cmd.env_remove("DMTCP_LOG")
            .env("DMTCP_SECRET", "some secret of ours")
            .arg("-p")
            .arg(fake.port.to_string())
            .arg("-k");
        let out = env.run(
            cmd,
            &format!("command-fake-{label}"),
            Duration::from_secs(30),
        );
        let needle = match label {
            "garbage" => "did not prove",
            _ => "handshake",
        };
        assert_one_line(env, &format!("dmtcp-command -k ({label})"), &out, needle);
        let seen = fake.seen();
        if seen.is_empty() || seen.iter().any(|c| c.as_slice() != ["Hello"]) {
            env.fail(&format!(
                "the fake coordinator ({label}) got more than a hello: {seen:?}"
            ));
        }
        assert_empty(env, &evil);
        assert_empty(env, &env.ckpt);
    }
    env.assert_no_computation_left("after the fake coordinators", Duration::from_secs(10));
}

fn generation(env: &TestEnv) -> Option<u64> {
    // Before the first checkpoint and while the supervisor rejoins the
    // status may not have the computation yet; the caller waits.
    let out = env.dmtcp_command(&["-s"], Duration::from_secs(15));
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Generation: "))
        .and_then(|g| g.trim().parse().ok())
}

/// The coordinator dies (kill -9) and a fake takes its port: the
/// supervisor's reconnects send it only hellos, the program keeps running
/// (no kill obeyed, no checkpoint written); a real coordinator started on
/// the port later gets the computation back, at the generation it had
/// (generations stay monotonic across coordinator restarts).
fn fake_after_death(env: &mut TestEnv) {
    let port = env.start_coordinator();
    let data = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&data);
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    r.checkpoint();
    let pid = r.host_pid.expect("launched program has a host pid");
    let coords: Vec<i32> = procs::tagged(&env.tag)
        .into_iter()
        .filter(|&p| is_coordinator(p))
        .collect();
    if coords.len() != 1 {
        env.fail(&format!("expected one coordinator, found {coords:?}"));
    }
    procs::kill_all(&coords);

    let evil = env.work.join("evil");
    env.make_user_dir(&evil);
    let fake = FakeCoord::start(port, Fake::Garbage, &evil);
    let size = || fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
    let s0 = size();
    thread::sleep(Duration::from_secs(4));
    let seen = fake.seen();
    if seen.is_empty() {
        env.fail("the supervisor never tried the fake coordinator");
    }
    if seen.iter().any(|c| c.as_slice() != ["Hello"]) {
        env.fail(&format!(
            "the fake coordinator got more than hellos: {seen:?}"
        ));
    }
    if !procs::alive(pid) || size() <= s0 {
        env.fail("the program stopped while a fake coordinator held the port");
    }
    assert_empty(env, &evil);
    drop(fake);

    // A real coordinator on the same port: the supervisor reconnects and
    // the computation goes on at the generation it had.
    let mut cmd = env.command("dmtcp-coordinator");
    cmd.args(["--daemon", "--port", &port.to_string(), "--ckpt-dir"])
        .arg(&env.ckpt);
    let out = env.run(cmd, "coordinator-again", Duration::from_secs(20));
    if !out.status.success() {
        env.fail(&format!("second coordinator: {}", out.describe()));
    }
    env.wait_for(
        "the supervisor to rejoin the new coordinator at generation 1",
        Duration::from_secs(15),
        || generation(env) == Some(1) && list_has(env, pid),
    );
    r.checkpoint();
    if generation(env) != Some(2) {
        env.fail(&format!(
            "generation after the next checkpoint: {:?}, expected 2",
            generation(env)
        ));
    }
    r.kill();
}

fn list_has(env: &TestEnv, pid: i32) -> bool {
    let out = env.dmtcp_command(&["-l"], Duration::from_secs(15));
    out.stdout
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()))
}

/// A coordinator that knows the secret still cannot steer file names: a
/// computation id with `../` is refused by the supervisor.
fn crafted_id(env: &mut TestEnv) {
    let evil = env.work.join("evil");
    env.make_user_dir(&evil);
    let secret = "0123456789abcdef0123456789abcdef";
    let fake = FakeCoord::start(0, Fake::Knows(secret.into()), &evil);
    let data = env.work.join("counter.txt");
    let mut cmd = env.command("dmtcp-run");
    cmd.env_remove("DMTCP_LOG")
        .env("DMTCP_SECRET", secret)
        .arg("--join-coordinator")
        .arg("--coord-port")
        .arg(fake.port.to_string())
        .arg("--")
        .arg(env.prog("counter"))
        .arg(&data);
    let out = env.run(cmd, "run-crafted", Duration::from_secs(30));
    assert_one_line(
        env,
        "dmtcp-run, crafted computation id",
        &out,
        "computation id",
    );
    if data.exists() {
        env.fail("the program ran with a crafted computation id");
    }
    let seen = fake.seen();
    if seen
        .iter()
        .any(|c| c.iter().any(|k| *k != "Hello" && *k != "Auth"))
    {
        env.fail(&format!("the supervisor went past the handshake: {seen:?}"));
    }
    assert_empty(env, &evil);
    env.assert_no_computation_left("after the crafted id", Duration::from_secs(10));
}

/// Every file in the checkpoint dir with its (inode, size, mtime).
fn ckpt_files(env: &TestEnv) -> BTreeMap<PathBuf, (u64, u64, i64, i64)> {
    fs::read_dir(&env.ckpt)
        .map(|r| {
            r.flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((e.path(), (m.ino(), m.size(), m.mtime(), m.mtime_nsec())))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn state(env: &TestEnv) -> String {
    let out = env.dmtcp_command(&["-s"], Duration::from_secs(15));
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("State: "))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// kill -9 of the coordinator in the middle of a checkpoint of a 256 MiB
/// program: nothing of that checkpoint is committed (two-phase commit),
/// the previous images are untouched, no debris is left, the program runs
/// on; a new coordinator gets it back and the previous set restarts.
fn killed_mid_checkpoint(env: &mut TestEnv) {
    let port = env.start_coordinator();
    // The snapshot fork, not pre-copy (the default from 64 MiB): pre-copy
    // writes the heap before the freeze and leaves the writing phase too
    // short to be caught before the commit.
    let sc = Scenario::new("heap256").env("DMTCP_PRECOPY", "0");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let first = r.checkpoint();
    let pid = r.host_pid.expect("launched program has a host pid");
    let before = ckpt_files(env);

    let mut bc = env.command("dmtcp-command");
    bc.arg("-p").arg(port.to_string()).arg("-bc");
    let mut bc = env.spawn(bc, "command-bc-killed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    loop {
        let st = state(env);
        if matches!(
            st.as_str(),
            "CHECKPOINT" | "REFILL" | "RESUME" | "WRITING_IMAGES"
        ) {
            seen = st;
            break;
        }
        if st == "COMMITTING" || Instant::now() > deadline {
            env.fail(&format!(
                "never caught the checkpoint before its commit (state {st:?}, last {seen:?})"
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
    let coords: Vec<i32> = procs::tagged(&env.tag)
        .into_iter()
        .filter(|&p| is_coordinator(p))
        .collect();
    procs::kill_all(&coords);
    eprintln!("[{}] coordinator killed at state {seen}", env.name);
    let st = env.wait(&mut bc, Duration::from_secs(60));
    if st.success() {
        env.fail("dmtcp-command -bc succeeded although the coordinator was killed");
    }
    // The supervisor notices, drops the uncommitted images (and their temp
    // files); the previous set stays as it was.
    env.wait_for(
        "the checkpoint dir to hold exactly the previous images again",
        Duration::from_secs(60),
        || ckpt_files(env) == before,
    );
    if !procs::alive(pid) {
        env.fail("the program died with the coordinator");
    }
    thread::sleep(Duration::from_millis(500));
    if ckpt_files(env) != before {
        env.fail(&format!(
            "the checkpoint dir changed: before {before:?}, now {:?}",
            ckpt_files(env)
        ));
    }

    // A new coordinator on the port gets the computation back; then the
    // previous set restarts.
    let mut cmd = env.command("dmtcp-coordinator");
    cmd.args(["--daemon", "--port", &port.to_string(), "--ckpt-dir"])
        .arg(&env.ckpt);
    let out = env.run(cmd, "coordinator-again", Duration::from_secs(20));
    if !out.status.success() {
        env.fail(&format!("second coordinator: {}", out.describe()));
    }
    env.wait_for(
        "the supervisor to rejoin the new coordinator",
        Duration::from_secs(15),
        || list_has(env, pid),
    );
    r.kill();
    r.restart_from_images(&first);
    r.wait_restored();
    r.finish();
}
