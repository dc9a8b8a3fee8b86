//! `dmtcp-attach` (issue 14): programs started outside dmtcp are attached,
//! checkpointed, killed and restarted twice (from the images, then from
//! the restart script) with their pids; errors leave the target untouched;
//! a detached or orphaned (attacher killed) program runs on natively.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use dmtcp_tests::env::read_lossy;
use dmtcp_tests::{e2e_tests, procs, Proc, ProcCheck, Running, Scenario, TestEnv, User};

e2e_tests! {
    attach_counter_pid_kept => counter;
    attach_pipe_tree_no_byte_lost => pipe_tree;
    attach_threads_blocked_no_eintr => threads_blocked;
    attach_tree_forks_and_execs_after_attach => fork_exec;
    attach_daemonized_tree_by_session => daemon_session;
    attach_errors_leave_the_target_untouched => errors;
    attach_detach_program_runs_on_natively => detach;
    attach_checkpoint_detach_one_shot => one_shot;
    attach_attacher_killed_program_runs_on => attacher_killed;
    attach_static_counter => static_counter;
    attach_stdout_pipe_to_outside_reader => stdout_pipe;
    attach_restart_no_pidns_host_pids => no_pidns_rounds;
    attach_restart_no_pidns_refused => no_pidns_refused;
    attach_checkpoint_through_gdb_stop => through_gdb_stop;
    attach_no_pidns_supervisor_killed_taken_back => no_pidns_taken_back;
}

/// Starts `dmtcp-attach --coord-port P EXTRA... PID` and waits until it
/// says it has attached.
fn attach(env: &TestEnv, pid: i32, extra: &[&str]) -> Proc {
    let mut cmd = env.command("dmtcp-attach");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(extra)
        .arg(pid.to_string());
    let mut p = env.spawn(cmd, "attach");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let err = read_lossy(&p.stderr);
        if err.contains("attached to pid") {
            eprintln!("[{}] {}", env.name, err.trim());
            return p;
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            env.fail(&format!(
                "dmtcp-attach exited with {st} before attaching: {err}"
            ));
        }
        if Instant::now() > deadline {
            env.fail("dmtcp-attach did not attach within 30 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `dmtcp-attach EXTRA... PID` that must fail: returns its stderr.
fn attach_fails(env: &TestEnv, cmd: Command, what: &str) -> String {
    let out = env.run(cmd, "attach-error", Duration::from_secs(30));
    if out.status.success() {
        env.fail(&format!(
            "dmtcp-attach succeeded for {what}: {}",
            out.describe()
        ));
    }
    let err = out.stderr.trim().to_string();
    if err.lines().count() != 1 {
        env.fail(&format!("{what}: the error is not one line: {err:?}"));
    }
    eprintln!("[{}] {what}: {err}", env.name);
    err
}

fn status_field(pid: i32, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// No thread of `pid` is stopped and none has a tracer.
fn untouched(env: &TestEnv, pid: i32, context: &str) {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        env.fail(&format!("{context}: pid {pid} is gone"));
    };
    for e in rd.flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        let st = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        for l in st.lines() {
            if let Some(t) = l.strip_prefix("TracerPid:") {
                if t.trim() != "0" {
                    env.fail(&format!(
                        "{context}: thread {tid} of pid {pid} is traced by {t}"
                    ));
                }
            }
            if let Some(s) = l.strip_prefix("State:") {
                if s.trim().starts_with('t') || s.trim().starts_with('T') {
                    env.fail(&format!(
                        "{context}: thread {tid} of pid {pid} is stopped ({s})"
                    ));
                }
            }
        }
    }
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The counter's file keeps growing (checked from the program's output).
fn keeps_counting(env: &TestEnv, out: &Path, context: &str) {
    let before = file_len(out);
    env.wait_for(
        &format!("the counter to count on ({context})"),
        Duration::from_secs(20),
        || file_len(out) > before,
    );
}

/// `dmtcp-command -l` lists `prog` with virtual pid `vpid`.
fn listed_with_vpid(env: &TestEnv, prog: &str, vpid: i32) {
    let out = env.dmtcp_command(&["-l"], Duration::from_secs(20));
    let found = out.stdout.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.len() > 2 && w[0] == vpid.to_string() && w[2] == prog
    });
    if !found {
        env.fail(&format!(
            "dmtcp-command -l does not list {prog} with pid {vpid}:\n{}",
            out.stdout
        ));
    }
}

/// Two rounds (checkpoint, kill, restart from the images, then from the
/// restart script) of an attached scenario, checking that the program
/// keeps its pid `vpid`, then the program's own verdict.
fn rounds_and_finish(env: &TestEnv, r: &mut Running, attacher: &mut Proc, prog: &str, vpid: i32) {
    listed_with_vpid(env, prog, vpid);
    r.round();
    // The attacher ends with its tree.
    let st = env.wait(attacher, Duration::from_secs(30));
    if !st.success() {
        env.fail(&format!("dmtcp-attach exited with {st} after the kill"));
    }
    listed_with_vpid(env, prog, vpid);
    r.round();
    listed_with_vpid(env, prog, vpid);
    r.finish();
}

/// A counter started outside dmtcp keeps its pid and its file offset.
fn counter(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("counter pid");
    let mut a = attach(env, pid, &[]);
    rounds_and_finish(env, &mut r, &mut a, "counter", pid);
}

/// Parent, child (own group) and grandchild with numbers in flight in a
/// pipe and a shared file offset: no byte lost, ids kept.
fn pipe_tree(env: &mut TestEnv) {
    env.start_coordinator();
    let log = env.work.join("tree.log");
    let sc = Scenario::new("attach_tree").arg("tree").arg(&log);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("attach_tree pid");
    let mut a = attach(env, pid, &[]);
    rounds_and_finish(env, &mut r, &mut a, "attach_tree", pid);
}

/// A thread blocked in read() on a pipe and a main thread in epoll_wait
/// and select: no EINTR, no early return, the bytes arrive.
fn threads_blocked(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("epoll_pipe");
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("epoll_pipe pid");
    let mut a = attach(env, pid, &[]);
    rounds_and_finish(env, &mut r, &mut a, "epoll_pipe", pid);
}

/// popen() of seq and system() all the time: processes forked and exec'd
/// after the attach are members too (checkpointed with the pipe full).
fn fork_exec(env: &mut TestEnv) {
    env.start_coordinator();
    let mut sc = Scenario::new("popen");
    // The shells and seq come and go between two /proc snapshots.
    sc.proc_check = ProcCheck::Warn;
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("popen pid");
    let mut a = attach(env, pid, &[]);
    rounds_and_finish(env, &mut r, &mut a, "popen", pid);
}

/// A daemonized pair (setsid, the middle process gone, both reparented
/// away): `--session` brings the writer along with the worker.
fn daemon_session(env: &mut TestEnv) {
    env.start_coordinator();
    let log = env.work.join("daemon.log");
    let sc = Scenario::new("attach_tree").arg("daemon").arg(&log);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("daemon worker pid");
    let mut a = attach(env, pid, &["--session"]);
    let err = read_lossy(&a.stderr);
    if !err.contains("2 process(es)") {
        env.fail(&format!(
            "--session did not take the writer along: {}",
            err.trim()
        ));
    }
    rounds_and_finish(env, &mut r, &mut a, "attach_tree", pid);
}

/// Each refusal is one line with its reason, and the target runs on with
/// no tracer and no stopped thread.
fn errors(env: &mut TestEnv) {
    env.start_coordinator();
    let attach_cmd = |pid: &str| {
        let mut c = env.command("dmtcp-attach");
        c.arg("--coord-port").arg(env.port().to_string()).arg(pid);
        c
    };
    // No such pid: one that existed and was reaped.
    let mut gone = Command::new("true");
    let mut child = procs::spawn_tracked(&mut gone).expect("spawn true");
    let dead = child.id().to_string();
    let _ = child.wait();
    procs::untrack(child.id());
    let e = attach_fails(env, attach_cmd(&dead), "a pid that does not exist");
    if !e.contains("no such process") {
        env.fail(&format!("no such pid: unexpected message {e:?}"));
    }
    let e = attach_fails(env, attach_cmd("banana"), "a malformed pid");
    if !e.contains("not a process id") {
        env.fail(&format!("malformed pid: unexpected message {e:?}"));
    }

    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let r = sc.launch_bare(env);
    let pid = r.host_pid.expect("counter pid");

    // Already traced, by strace.
    if Path::new("/usr/bin/strace").exists() {
        let mut s = env.command_path(Path::new("/usr/bin/strace"));
        s.args(["-o", "/dev/null", "-p", &pid.to_string()]);
        let mut strace = env.spawn(s, "strace");
        env.wait_for("strace to attach", Duration::from_secs(20), || {
            status_field(pid, "TracerPid") == strace.pid().to_string()
        });
        let e = attach_fails(env, attach_cmd(&pid.to_string()), "a process under strace");
        if !e.contains("already traced by")
            || !e.contains(&format!("pid {}", strace.pid()))
            || !e.contains("strace")
        {
            env.fail(&format!(
                "traced: the message does not name strace's pid and name: {e:?}"
            ));
        }
        // SAFETY: kill with integer arguments (our strace child).
        unsafe { libc::kill(strace.pid(), libc::SIGINT) };
        env.wait(&mut strace, Duration::from_secs(20));
        env.wait_for("strace to let go", Duration::from_secs(10), || {
            status_field(pid, "TracerPid") == "0"
        });
        untouched(env, pid, "after the refused attach to a traced process");
    } else {
        eprintln!("[{}] strace not installed: traced case skipped", env.name);
    }

    // Another user's process: only root can make one and run as another.
    if procs::is_root() {
        // A process of root's that is no ancestor of the attacher.
        let mut sleep = Command::new("sleep");
        sleep
            .arg("60")
            .env(procs::TAG_VAR, &env.tag)
            .stdin(std::process::Stdio::null());
        let mut rootproc = env.spawn(sleep, "root-sleep");
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env.bin("dmtcp-attach"))
            .arg("--coord-port")
            .arg(env.port().to_string())
            .arg(rootproc.pid().to_string())
            .env("DMTCP_TMPDIR", &env.tmp)
            .env(procs::TAG_VAR, &env.tag)
            .current_dir(&env.work)
            .stdin(std::process::Stdio::null());
        let e = attach_fails(env, c, "a process of another user (root's, as uid 65534)");
        if !e.contains("belongs to uid 0") {
            env.fail(&format!("other user: unexpected message {e:?}"));
        }
        untouched(
            env,
            rootproc.pid(),
            "after the refused attach to root's process",
        );
        let _ = rootproc.child.kill();
        env.wait(&mut rootproc, Duration::from_secs(10));
    }
    keeps_counting(env, &out, "after the refused attaches");
    untouched(env, pid, "after the refused attaches");

    // Not dumpable.
    let nd = Scenario::new("nondumpable");
    let mut ndr = nd.launch_bare(env);
    let ndpid = ndr.host_pid.expect("nondumpable pid");
    let e = attach_fails(
        env,
        attach_cmd(&ndpid.to_string()),
        "a process that is not dumpable",
    );
    if !e.contains("not dumpable") {
        env.fail(&format!("not dumpable: unexpected message {e:?}"));
    }
    untouched(
        env,
        ndpid,
        "after the refused attach to a non-dumpable process",
    );
    drop(r);
    scenario_create_stop(env);
    let st = env.wait(&mut ndr.launcher, Duration::from_secs(30));
    if !st.success() || !read_lossy(&ndr.launcher.stdout).contains("PASS") {
        env.fail(&format!(
            "the non-dumpable program did not pass after the refusal ({st})"
        ));
    }
    env.assert_no_computation_left("after the error cases", Duration::from_secs(30));

    // A process in a pid namespace of its own (and a user namespace when
    // not root): one that dmtcp-run launched.
    let _ = fs::remove_file(env.stop_file());
    let out2 = env.work.join("counter2.txt");
    let sc2 = Scenario::new("counter").arg(&out2);
    let mut r2 = sc2.launch(env);
    let inner = r2.host_pid.expect("launched counter pid");
    let e = attach_fails(
        env,
        attach_cmd(&inner.to_string()),
        "a process in another pid namespace",
    );
    if !e.contains("another pid namespace") {
        env.fail(&format!("pid namespace: unexpected message {e:?}"));
    }
    untouched(
        env,
        inner,
        "after the refused attach into another pid namespace",
    );
    r2.kill();
}

fn scenario_create_stop(env: &TestEnv) {
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
}

/// Attach, checkpoint, `dmtcp-attach --detach PID`: the program runs on
/// with no tracer and no stopped thread, and passes its own check.
fn detach(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("counter pid");
    let mut a = attach(env, pid, &[]);
    // A second attacher is refused.
    let mut again = env.command("dmtcp-attach");
    again
        .arg("--coord-port")
        .arg(env.port().to_string())
        .arg(pid.to_string());
    let e = attach_fails(env, again, "a process attached already");
    if !e.contains("already attached") {
        env.fail(&format!("attached twice: unexpected message {e:?}"));
    }
    thread::sleep(Duration::from_millis(300));
    r.checkpoint();
    let mut d = env.command("dmtcp-attach");
    d.arg("--detach").arg(pid.to_string());
    let o = env.run(d, "detach", Duration::from_secs(60));
    if !o.status.success() {
        env.fail(&format!("dmtcp-attach --detach failed: {}", o.describe()));
    }
    let st = env.wait(&mut a, Duration::from_secs(30));
    if !st.success() {
        env.fail(&format!("the attacher exited with {st} on --detach"));
    }
    untouched(env, pid, "after --detach");
    keeps_counting(env, &out, "after --detach");
    let out = env.dmtcp_command(&["-l"], Duration::from_secs(20));
    if out.stdout.contains("counter") {
        env.fail(&format!(
            "the coordinator still lists the detached counter:\n{}",
            out.stdout
        ));
    }
    r.finish();
}

/// `--checkpoint-detach`: one image, the program runs on untouched; then
/// it is killed and restarted from that image with its pid (a sleeper:
/// no EINTR, no short sleep, before or after).
fn one_shot(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("sleeper");
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("sleeper pid");
    thread::sleep(Duration::from_millis(300));
    let mut c = env.command("dmtcp-attach");
    c.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--checkpoint-detach")
        .arg(pid.to_string());
    let o = env.run(c, "attach-once", Duration::from_secs(120));
    if !o.status.success() {
        env.fail(&format!(
            "dmtcp-attach --checkpoint-detach failed: {}",
            o.describe()
        ));
    }
    let images: Vec<std::path::PathBuf> = o
        .stdout
        .lines()
        .map(|l| std::path::PathBuf::from(l.trim()))
        .filter(|p| p.is_file())
        .collect();
    if images.len() != 1 {
        env.fail(&format!(
            "--checkpoint-detach printed no image: {}",
            o.describe()
        ));
    }
    untouched(env, pid, "after --checkpoint-detach");
    let out = env.dmtcp_command(&["-l"], Duration::from_secs(20));
    if out.stdout.contains("sleeper") {
        env.fail(&format!(
            "the coordinator still lists the detached sleeper:\n{}",
            out.stdout
        ));
    }
    thread::sleep(Duration::from_millis(500));
    untouched(env, pid, "a while after --checkpoint-detach");
    // The original goes; the image brings it back.
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    env.wait(&mut r.launcher, Duration::from_secs(20));
    r.restart_from_images(&images);
    listed_with_vpid(env, "sleeper", pid);
    r.finish();
}

/// kill -9 of the attacher: the program runs on (no stop, no tracer).
fn attacher_killed(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("counter pid");
    let mut a = attach(env, pid, &[]);
    thread::sleep(Duration::from_millis(300));
    r.checkpoint();
    // SAFETY: kill with integer arguments (our dmtcp-attach child).
    unsafe { libc::kill(a.pid(), libc::SIGKILL) };
    env.wait(&mut a, Duration::from_secs(20));
    untouched(env, pid, "after kill -9 of dmtcp-attach");
    keeps_counting(env, &out, "after kill -9 of dmtcp-attach");
    r.finish();
}

/// A statically linked counter (nothing could be preloaded into it).
fn static_counter(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let mut sc = Scenario::new("counter_static").arg(&out);
    sc.image_name = Some("counter_static".into());
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("counter_static pid");
    let mut a = attach(env, pid, &[]);
    rounds_and_finish(env, &mut r, &mut a, "counter_static", pid);
}

/// Last `hello_counter: N` number in `text`.
fn last_count(text: &str) -> u64 {
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("hello_counter: "))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// stdout a pipe to a reader outside the tree (`cat`), which is gone at
/// restart: restarted with no fd 1, the restart says so in one line and
/// the program gets a closed peer (it dies of SIGPIPE), never /dev/null;
/// restarted with a stdout, it writes on into it from where it was.
fn stdout_pipe(env: &mut TestEnv) {
    env.start_coordinator();
    let cat_out = env.work.join("cat.txt");
    // hello_counter prints a line a second and never ends (no READY/PASS):
    // not one of the harness's programs, so built here.
    let hello = env.work.join("hello_counter");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let built = dmtcp_tests::setup::output_tracked(
        Command::new(&cc)
            .args(["-O1", "-o"])
            .arg(&hello)
            .arg(dmtcp_tests::setup::crate_dir().join("programs/hello_counter.c")),
    )
    .map(|o| o.status);
    if !built.as_ref().is_ok_and(|s| s.success()) {
        env.fail(&format!("{cc} could not build hello_counter: {built:?}"));
    }
    let sh = Path::new("/bin/sh");
    let mut c = env.command_path(sh);
    c.arg("-c").arg(format!(
        "exec {} | cat > {}",
        hello.display(),
        cat_out.display()
    ));
    let mut pipeline = env.spawn(c, "pipeline");
    let mut pid = 0;
    env.wait_for("hello_counter to start", Duration::from_secs(20), || {
        pid = procs::tagged(&env.tag)
            .into_iter()
            .find(|&p| procs::stat(p).is_some_and(|s| s.comm == "hello_counter"))
            .unwrap_or(0);
        pid != 0
    });
    env.wait_for(
        "two lines through the pipe",
        Duration::from_secs(20),
        || last_count(&read_lossy(&cat_out)) >= 2,
    );
    let mut a = attach(env, pid, &[]);
    let ck = env.dmtcp_command(&["-bc"], Duration::from_secs(60));
    if !ck.status.success() {
        env.fail(&format!("checkpoint: {}", ck.describe()));
    }
    let at_ckpt = last_count(&read_lossy(&cat_out));
    let k = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    if !k.status.success() {
        env.fail(&format!("kill: {}", k.describe()));
    }
    env.wait(&mut a, Duration::from_secs(30));
    // cat sees end of file and the pipeline ends.
    env.wait(&mut pipeline, Duration::from_secs(30));
    let images: Vec<std::path::PathBuf> = fs::read_dir(&env.ckpt)
        .expect("ckpt dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dmtcp"))
        .collect();
    // 1. A restart with no fd 1: one line, and a closed peer.
    let mut c = env.command_path(sh);
    c.arg("-c")
        .arg("exec 1>&-; exec dmtcp-restart \"$@\"")
        .arg("sh")
        .arg("-p")
        .arg(env.port().to_string())
        .args(&images);
    let o = env.run(c, "restart-noout", Duration::from_secs(60));
    let said: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains("its peer is closed now"))
        .collect();
    if said.len() != 1 || !said[0].contains("fd 1") {
        env.fail(&format!(
            "the restart with no stdout did not say once that fd 1 lost its peer: {}",
            o.describe()
        ));
    }
    use std::os::unix::process::ExitStatusExt;
    let sigpipe =
        o.status.code() == Some(128 + libc::SIGPIPE) || o.status.signal() == Some(libc::SIGPIPE);
    if !sigpipe {
        env.fail(&format!(
            "the program did not die of SIGPIPE writing to its closed stdout: {}",
            o.describe()
        ));
    }
    env.assert_no_computation_left("after the restart with no stdout", Duration::from_secs(15));
    // 2. From the same images, the restart's stdout takes the pipe's place.
    let mut rs = env.command("dmtcp-restart");
    rs.arg("-p").arg(env.port().to_string()).args(&images);
    let mut restart = env.spawn(rs, "restart-hello");
    env.wait_for(
        "lines on the restart's stdout",
        Duration::from_secs(30),
        || last_count(&read_lossy(&restart.stdout)) >= 1,
    );
    let first = read_lossy(&restart.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("hello_counter: "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next()
        .unwrap_or(0);
    // The checkpoint was taken between two lines: the first line after it
    // is the one after the last the pipe carried before it (or that one,
    // if the checkpoint caught it written but not yet read by cat).
    if first == 0 || first > at_ckpt + 2 || first + 1 < at_ckpt {
        env.fail(&format!(
            "after restart the counter printed {first} first; the pipe carried up to {at_ckpt} at the checkpoint"
        ));
    }
    let k = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    if !k.status.success() {
        env.fail(&format!("second kill: {}", k.describe()));
    }
    env.wait(&mut restart, Duration::from_secs(30));
    env.assert_no_computation_left("after the second kill", Duration::from_secs(15));
}

/// Whether this run may restore with host pids (`--no-pidns` is root's).
fn may_use_host_pids(env: &TestEnv) -> bool {
    env.user == User::Current && procs::is_root()
}

/// `root` and its descendants, sorted.
fn tree_pids(root: i32) -> Vec<i32> {
    let mut v = procs::descendants(root);
    v.push(root);
    v.sort_unstable();
    v.dedup();
    v
}

/// One round by hand: checkpoint, kill, restart from the images or from
/// the restart script, with or without `--no-pidns` (then it waits first
/// until `pids`, the tree's, are free).
fn round_with(env: &TestEnv, r: &mut Running, from_script: bool, no_pidns: bool, pids: &[i32]) {
    thread::sleep(r.sc.settle);
    let images = r.checkpoint();
    r.kill();
    if no_pidns {
        // A killed process keeps its pid until its parent (or the reaper
        // it was reparented to) has waited for it.
        env.wait_for(
            "the killed tree's pids to be free",
            Duration::from_secs(20),
            || {
                pids.iter()
                    .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            },
        );
    }
    let mut cmd = if from_script {
        env.command_path(&env.ckpt.join("dmtcp_restart_script.sh"))
    } else {
        let mut c = env.command_path(&env.bin("dmtcp-restart"));
        c.arg("--coord-port")
            .arg(env.port().to_string())
            .args(&images);
        c
    };
    if no_pidns {
        cmd.arg("--no-pidns");
    }
    let label = format!(
        "restart{}{}",
        if from_script { "-script" } else { "" },
        if no_pidns { "-no-pidns" } else { "" }
    );
    r.launcher = env.spawn(cmd, &label);
    r.wait_restored();
    r.rounds_done += 1;
}

/// `dmtcp-restart --no-pidns` (root): an attached parent/child/grandchild
/// tree comes back in the current pid namespace with its host pids (the
/// program checks its own pids, parents and groups; we check the host
/// pids), from the images and then from the restart script; a third round
/// restarts that image normally, in a pid namespace of its own.
fn no_pidns_rounds(env: &mut TestEnv) {
    if !may_use_host_pids(env) {
        eprintln!(
            "[{}] skipped: --no-pidns needs root (the refusal is tested by attach_restart_no_pidns_refused)",
            env.name
        );
        return;
    }
    env.start_coordinator();
    let log = env.work.join("tree.log");
    let sc = Scenario::new("attach_tree").arg("tree").arg(&log);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("attach_tree pid");
    env.wait_for(
        "the tree's child and grandchild",
        Duration::from_secs(20),
        || tree_pids(pid).len() == 3,
    );
    let pids = tree_pids(pid);
    let mut a = attach(env, pid, &[]);
    for (from_script, no_pidns) in [(false, true), (true, true), (true, false)] {
        round_with(env, &mut r, from_script, no_pidns, &pids);
        if r.rounds_done == 1 {
            let st = env.wait(&mut a, Duration::from_secs(30));
            if !st.success() {
                env.fail(&format!("dmtcp-attach exited with {st} after the kill"));
            }
        }
        let host = r.host_pid.expect("restored pid");
        listed_with_vpid(env, "attach_tree", pid);
        if no_pidns {
            let now = tree_pids(host);
            if host != pid || now != pids {
                env.fail(&format!(
                    "--no-pidns round {}: host pids {now:?}, the original tree had {pids:?}",
                    r.rounds_done
                ));
            }
            eprintln!(
                "[{}] round {}: host pids {now:?} as at the attach",
                env.name, r.rounds_done
            );
        } else if host == pid {
            env.fail("a restart without --no-pidns kept the host pid (no pid namespace?)");
        }
    }
    r.finish();
}

/// `dmtcp-restart` run that must fail with one line; returns it.
fn restart_fails(env: &TestEnv, args: &[&std::ffi::OsStr], what: &str) -> String {
    let mut cmd = env.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(args);
    let out = env.run(cmd, "restart-refused", Duration::from_secs(60));
    if out.status.success() {
        env.fail(&format!(
            "dmtcp-restart succeeded {what}: {}",
            out.describe()
        ));
    }
    let err = out.stderr.trim().to_string();
    if err.lines().count() != 1 {
        env.fail(&format!("{what}: the error is not one line: {err:?}"));
    }
    eprintln!("[{}] {what}: {err}", env.name);
    err
}

/// `--no-pidns` refusals, each one line with nothing started: as root, a
/// pid still in use (the original counter runs on) names the pid and the
/// program holding it, and an image taken in a pid namespace (after a
/// normal restart) is refused; unprivileged, `--no-pidns` needs root.
fn no_pidns_refused(env: &mut TestEnv) {
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("counter pid");
    let mut a = attach(env, pid, &[]);
    thread::sleep(Duration::from_millis(200));
    let images = r.checkpoint();
    let mut args: Vec<&std::ffi::OsStr> = vec!["--no-pidns".as_ref(), "--new-computation".as_ref()];
    args.extend(images.iter().map(|p| p.as_os_str()));
    if !may_use_host_pids(env) {
        let e = restart_fails(env, &args, "with --no-pidns unprivileged");
        if !e.contains("--no-pidns needs root") {
            env.fail(&format!(
                "unexpected message for --no-pidns unprivileged: {e:?}"
            ));
        }
    } else {
        let e = restart_fails(env, &args, "with --no-pidns while the pid is in use");
        if !e.contains(&format!("pid {pid} ")) || !e.contains(&format!("process {pid} (counter)")) {
            env.fail(&format!(
                "the busy-pid refusal does not name pid {pid} and counter: {e:?}"
            ));
        }
    }
    // Nothing was started: one counter, the original, still counting.
    if r.find_target(Duration::from_secs(5)) != pid {
        env.fail("the counter found is not the original");
    }
    keeps_counting(env, &out, "after the refused restart");
    let l = env.dmtcp_command(&["-l"], Duration::from_secs(20));
    if l.stdout.matches("counter").count() != 1 {
        env.fail(&format!(
            "the refused restart left processes:\n{}",
            l.stdout
        ));
    }
    if may_use_host_pids(env) {
        // Restarted in a pid namespace, the counter's next image holds
        // pids that are not host pids: refused.
        r.round();
        let st = env.wait(&mut a, Duration::from_secs(30));
        if !st.success() {
            env.fail(&format!("dmtcp-attach exited with {st} after the kill"));
        }
        let images = r.checkpoint();
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["--no-pidns".as_ref(), "--new-computation".as_ref()];
        args.extend(images.iter().map(|p| p.as_os_str()));
        let e = restart_fails(
            env,
            &args,
            "with --no-pidns for an image of a pid namespace",
        );
        if !e.contains("only images whose pids are host pids") {
            env.fail(&format!(
                "unexpected message for a pid namespace image: {e:?}"
            ));
        }
        r.finish();
    } else {
        r.finish();
        env.wait(&mut a, Duration::from_secs(30));
    }
}

/// An attached program that gdb holds at a breakpoint is checkpointed
/// through gdb's stop (`examples/gdb-checkpoint.py`): gdb keeps its
/// session and breakpoint, the program stays stopped (also after gdb
/// detaches, until SIGCONT), the image holds it at the breakpoint; killed
/// and restarted from that image, it counts on without a gap and passes.
fn through_gdb_stop(env: &mut TestEnv) {
    if !Path::new("/usr/bin/gdb").exists() {
        env.fail("gdb not installed (apt-get install gdb)");
    }
    env.start_coordinator();
    let ticks = env.work.join("ticks.txt");
    let sc = Scenario::new("gdbstack").arg(&ticks);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("gdbstack pid");
    let mut a = attach(env, pid, &[]);
    let script = dmtcp_tests::setup::workspace_dir().join("examples/gdb-checkpoint.py");
    let prog = env.prog("gdbstack").to_string_lossy().into_owned();
    let ckpt = format!("dmtcp-checkpoint -p {}", env.port());
    let mut cmd = env.command_path(Path::new("/usr/bin/gdb"));
    cmd.arg("-nx");
    if env.user == User::Nobody || !procs::is_root() {
        cmd.args(["-iex", "set sysroot /"]);
    }
    cmd.arg("-batch")
        .arg("-x")
        .arg(&script)
        .args(["-p", &pid.to_string(), &prog])
        .args(["-ex", "handle SIGSTOP nostop noprint nopass"])
        .args(["-ex", "break gdbstack.c:33", "-ex", "continue"])
        .args(["-ex", "p gdb_ticks", "-ex", &ckpt, "-ex", "p gdb_ticks"])
        .args(["-ex", "info breakpoints", "-ex", "p $pc"])
        .args(["-ex", "delete", "-ex", "detach"])
        .env("DMTCP_COMMAND", env.bin("dmtcp-command"));
    let out = env.run(cmd, "gdb-checkpoint", Duration::from_secs(120));
    let text = &out.stdout;
    let value = |n: u32| -> Option<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("${n} = ")))
            .and_then(|v| v.parse().ok())
    };
    if value(1).is_none() || value(1) != value(2) {
        env.fail(&format!(
            "gdb_ticks before and after dmtcp-checkpoint in gdb differ or are missing (the program ran on):\n{}",
            out.describe()
        ));
    }
    if !text.contains("breakpoint already hit 1 time") || !text.contains("checkpoint 1 done") {
        env.fail(&format!(
            "no checkpoint, or gdb lost its breakpoint across it:\n{}",
            out.describe()
        ));
    }
    let held = value(1).expect("gdb_ticks");
    // gdb is gone: the program stays in the job-control stop gdb left.
    let state = procs::stat(pid).map(|s| s.state);
    if state != Some('T') {
        env.fail(&format!(
            "after gdb detached, the program is in state {state:?}, not stopped"
        ));
    }
    let images: Vec<std::path::PathBuf> = fs::read_dir(&env.ckpt)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    n.starts_with("ckpt_gdbstack_") && n.ends_with(".dmtcp")
                })
                .collect()
        })
        .unwrap_or_default();
    if images.len() != 1 {
        env.fail(&format!("expected one gdbstack image, found {images:?}"));
    }
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    keeps_counting(env, &ticks, "after SIGCONT");
    r.kill();
    let st = env.wait(&mut a, Duration::from_secs(30));
    if !st.success() {
        env.fail(&format!("dmtcp-attach exited with {st} after the kill"));
    }
    // The ticks written after the checkpoint are cut back at restart: the
    // restored program goes on from the value gdb held.
    r.restart_from_images(&images);
    listed_with_vpid(env, "gdbstack", pid);
    let first = fs::read_to_string(&ticks)
        .unwrap_or_default()
        .lines()
        .count() as u64;
    if first < held {
        env.fail(&format!(
            "the restored ticks file holds {first} lines, gdb held gdb_ticks = {held}"
        ));
    }
    r.finish();
}

/// `--no-pidns` without pid 1: the restarting supervisor is killed, the
/// counter keeps counting under nsinit (a subreaper, not stopped);
/// `dmtcp-attach NSINIT_PID` takes the computation back, whose next
/// checkpoint, kill (nothing left behind) and `--no-pidns` restart give
/// the counter its host pid again; it passes its own check.
fn no_pidns_taken_back(env: &mut TestEnv) {
    if !may_use_host_pids(env) {
        eprintln!("[{}] skipped: --no-pidns needs root", env.name);
        return;
    }
    env.start_coordinator();
    let out = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out);
    let mut r = sc.launch_bare(env);
    let pid = r.host_pid.expect("counter pid");
    let mut a = attach(env, pid, &[]);
    let pids = vec![pid];
    round_with(env, &mut r, false, true, &pids);
    env.wait(&mut a, Duration::from_secs(30));
    let nsinit = procs::stat(pid)
        .map(|s| s.ppid)
        .unwrap_or_else(|| env.fail("the restored counter is gone"));
    if procs::stat(nsinit).is_none_or(|s| s.comm != "dmtcp-nsinit") {
        env.fail(&format!(
            "the restored counter's parent {nsinit} is not dmtcp-nsinit"
        ));
    }
    // SAFETY: kill with integer arguments; the restart we spawned.
    unsafe { libc::kill(r.launcher.pid(), libc::SIGKILL) };
    env.wait(&mut r.launcher, Duration::from_secs(10));
    untouched(env, pid, "after the supervisor was killed");
    keeps_counting(env, &out, "after the supervisor was killed");
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
    round_with(env, &mut r, false, true, &pids);
    if r.host_pid != Some(pid) {
        env.fail(&format!(
            "restarted with --no-pidns after the take-back: host pid {:?}, not {pid}",
            r.host_pid
        ));
    }
    listed_with_vpid(env, "counter", pid);
    r.finish();
}
