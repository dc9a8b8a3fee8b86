//! Machines that forbid user namespaces to ordinary users (clusters with
//! `user.max_user_namespaces = 0`, Ubuntu's AppArmor restriction): asked
//! for namespaces (`--namespaces`, or a restart of an image that had them)
//! the tool says why in one line, before anything runs, and leaves nothing
//! behind; otherwise `dmtcp-run` runs the computation without namespaces
//! (virtual pids), saying so in one line, and its restarts keep the pids
//! the program sees.
//!
//! Such a machine is made without changing the real one by
//! `tests/programs/no_userns.c` (root only): a user namespace whose own
//! `max_user_namespaces` is 0, in which uid 65534 runs the command.

use std::process::Command;
use std::time::Duration;

use dmtcp_tests::lockdown::{check_ids_lines, check_notice, locked_down, locked_down_env};
use dmtcp_tests::{procs, Running, Scenario, TestEnv, User};

/// Runs `bin args...` as uid 65534 on the locked-down "machine".
fn run_locked_down(env: &TestEnv, bin: &str, args: &[&str]) -> dmtcp_tests::Output {
    let mut cmd = Command::new(env.prog("no_userns"));
    cmd.arg(env.bin(bin))
        .args(args)
        .env_remove("DMTCP_COORD_PORT")
        .env(procs::TAG_VAR, &env.tag)
        .env("DMTCP_TMPDIR", &env.tmp)
        .env("HOME", &env.work)
        .current_dir(&env.work);
    env.run(cmd, bin, Duration::from_secs(30))
}

fn check_refusal(env: &TestEnv, what: &str, out: &dmtcp_tests::Output) {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if out.status.success()
        || lines.len() != 1
        || !lines[0].contains("user.max_user_namespaces = 0")
    {
        env.fail(&format!(
            "{what}: expected one line naming user.max_user_namespaces = 0 and a non-zero exit, got {}",
            out.describe()
        ));
    }
}

#[test]
fn launch_and_restart_say_why_user_namespaces_are_missing() {
    if !procs::is_root() {
        eprintln!("skipped: making a machine without user namespaces needs root");
        return;
    }
    let mut env = TestEnv::new("lockdown", User::Nobody);
    let marker = env.work.join("ran");
    let sh = format!("echo yes > {}", marker.display());
    let out = run_locked_down(
        &env,
        "dmtcp-run",
        &["--namespaces", "-p", "0", "--", "sh", "-c", &sh],
    );
    check_refusal(&env, "dmtcp-run", &out);
    if marker.exists() {
        env.fail("dmtcp-run ran the program although it refused");
    }
    // An image of uid 65534 made where user namespaces work, restarted
    // where they do not.
    env.start_coordinator();
    let sc = Scenario::new("counter").arg(env.work.join("counter.txt"));
    let mut r = sc.launch(&env);
    let images = r.checkpoint();
    r.kill();
    env.stop_coordinator();
    let mut args = vec!["-p".to_string(), "0".to_string()];
    args.extend(images.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_locked_down(&env, "dmtcp-restart", &args);
    check_refusal(&env, "dmtcp-restart", &out);
    env.assert_no_computation_left("after the refused restart", Duration::from_secs(10));
    env.finish();
}

fn locked_down_rounds(prog: &str, name: &str, args: &[std::ffi::OsString]) {
    let mut sc = Scenario::new(prog);
    for a in args {
        sc = sc.arg(a.clone());
    }
    locked_down_scenario(sc, name);
}

/// `sc` launched on the locked-down machine (without namespaces, uid
/// 65534) through two checkpoint/kill/restart rounds, the second from the
/// restart script; the program's own PASS decides, and every restart must
/// have given it a new kernel pid.
fn locked_down_scenario(sc: Scenario, name: &str) {
    locked_down_scenario_rounds(sc, name, 2);
}

/// [`locked_down_scenario`] with `rounds` rounds (at least 2).
fn locked_down_scenario_rounds(sc: Scenario, name: &str, rounds: usize) {
    let Some(env) = locked_down_env(name) else {
        return;
    };
    let sc = sc.wrapper("no_userns").kernel_pids_change();
    let prog = sc.prog.clone();
    let mut r = sc.launch(&env);
    check_notice(&env, &r);
    let first = r.host_pid;
    // From the images, then from the restart script.
    r.round();
    if r.host_pid == first {
        env.fail("the restarted program kept its kernel pid: restarted with set_tid?");
    }
    for _ in 1..rounds {
        r.round();
    }
    check_exe(&env, &r, prog != "shmem");
    r.finish();
    if prog == "vpids" {
        check_ids_lines(&env);
    }
    env.finish();
}

/// After an unprivileged restart without namespaces `/proc/PID/exe` names
/// the program's executable (the restart shell execs it), not
/// `dmtcp-nsinit`: the compiled program itself, or a script's interpreter.
/// Not with shared memory objects (`program` false): the restart shell
/// holds them for the restore and cannot exec, and `dmtcp-nsinit` stays.
fn check_exe(env: &TestEnv, r: &Running, program: bool) {
    let pid = r.host_pid.expect("the restored program");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let prog = env.prog(&r.sc.prog);
    let compiled = !std::fs::read(&prog).is_ok_and(|b| b.starts_with(b"#!"));
    let name = exe.file_name().map(|n| n.to_string_lossy().into_owned());
    let ok = if !program {
        name.as_deref() == Some("dmtcp-nsinit")
    } else if compiled {
        exe == prog
    } else {
        name.is_some_and(|n| n.starts_with("bash") || n.starts_with("python3"))
    };
    if !ok {
        env.fail(&format!(
            "/proc/{pid}/exe of the restored {} is {}, not its executable",
            r.sc.prog,
            exe.display()
        ));
    }
}

/// A tree (parent with a second thread, child in its own group,
/// grandchild) run without namespaces as uid 65534, through two
/// checkpoint/kill/restart rounds: new kernel pids each time, the same
/// pids, parents, groups and sessions as the program sees them (kill,
/// killpg, waitpid, getpgid, getsid of each other, pthread_kill of the
/// restored thread included).
#[test]
fn no_namespaces_tree_keeps_its_pids() {
    locked_down_rounds("vpids", "lockdown-vpids", &[]);
}

/// Threads and a child that read and use their ids without pause (getpid,
/// gettid, getppid through libc and `syscall()`, kill and tgkill of 0,
/// getpgid, waitpid with WNOHANG) through four rounds: a checkpoint that
/// stops a thread between a call and the translation of its result, or
/// between a translation and the call, must not leave it an id of the run
/// before (seen in CI: a thread's `syscall(SYS_gettid)` answered its kernel
/// tid of the first restart after the second).
#[test]
fn no_namespaces_ids_read_while_frozen() {
    let sc = Scenario::new("vpid_spin").settle(Duration::from_millis(300));
    locked_down_scenario_rounds(sc, "lockdown-vpid-spin", 4);
}

/// The counter (one process, a file offset) the same way.
#[test]
fn no_namespaces_counter_two_rounds() {
    // Relative to its working directory, the test's work dir.
    locked_down_rounds("counter", "lockdown-counter", &["counter.txt".into()]);
}

/// Eight threads (tids through `syscall(SYS_gettid)`, TLS, a condvar,
/// joins) the same way: every thread gets a new kernel tid and sees its
/// old one.
#[test]
fn no_namespaces_threads_two_rounds() {
    locked_down_rounds("threads", "lockdown-threads", &[]);
}

/// `seq | while read` in bash (a pipe between two processes, bash's
/// job control and waits) the same way: no number lost or repeated.
#[test]
fn no_namespaces_pipeline_two_rounds() {
    locked_down_scenario(
        Scenario::new("pipeline").image_name(&interpreter("/bin/bash")),
        "lockdown-pipeline",
    );
}

/// Programs exec'd after each restart (`sh -c`, python3) see their
/// parent's virtual pid and their own pid as fork gave it, the same way:
/// a new program image takes the pid table from the runtime directory.
#[test]
fn no_namespaces_exec_after_restart_two_rounds() {
    locked_down_scenario(
        Scenario::new("exec_ids").image_name(&interpreter("/bin/bash")),
        "lockdown-exec-ids",
    );
}

/// Children made without pause by vfork, posix_spawn, system and popen
/// through four rounds: checkpoints catch children in the middle of their
/// exec and the parent in glibc's own clone and waits. (Its /proc view
/// is never the same twice: `system` blocks SIGCHLD and ignores SIGINT and
/// SIGQUIT while it waits, `popen` holds a pipe; the program checks
/// itself.)
#[test]
fn no_namespaces_steady_spawns_four_rounds() {
    let mut sc = Scenario::new("spawn_steady");
    sc.proc_check = dmtcp_tests::scenario::ProcCheck::Off;
    locked_down_scenario_rounds(sc, "lockdown-spawn-steady", 4);
}

/// An fd of `/proc/self/status` held open across restarts reads the
/// process's own status after each, though its kernel pid changed (the
/// image keeps the path with the virtual pid; the restart opens the new
/// pid's file).
#[test]
fn no_namespaces_held_proc_file_two_rounds() {
    locked_down_scenario(
        Scenario::new("procself").arg("no-namespaces"),
        "lockdown-procself",
    );
}

/// `popen("echo x")` read and closed without pause through four rounds.
#[test]
fn no_namespaces_popen_reads_four_rounds() {
    let mut sc = Scenario::new("spawn_steady").arg("popen-reads");
    sc.proc_check = dmtcp_tests::scenario::ProcCheck::Off;
    locked_down_scenario_rounds(sc, "lockdown-popen-reads", 4);
}

/// SIGCHLD read through a signalfd names a child restored with a new
/// kernel pid by the pid its parent knows (four rounds).
#[test]
fn no_namespaces_signalfd_child_pids_four_rounds() {
    let mut sc = Scenario::new("sigfd_child");
    sc.proc_check = dmtcp_tests::scenario::ProcCheck::Off;
    locked_down_scenario_rounds(sc, "lockdown-sigfd", 4);
}

/// Threads sending themselves signals in a tight loop (each checks that
/// its handler ran before the call returned) through four rounds.
#[test]
fn no_namespaces_raise_sync_four_rounds() {
    let mut sc = Scenario::new("raise_sync");
    sc.proc_check = dmtcp_tests::scenario::ProcCheck::Off;
    locked_down_scenario_rounds(sc, "lockdown-raise-sync", 4);
}

/// Blocked and pending signals, handlers with flags and masks, ignored
/// signals and a running ITIMER_REAL the same way.
#[test]
fn no_namespaces_signals_two_rounds() {
    locked_down_scenario(Scenario::new("signals"), "lockdown-signals");
}

/// Unix socket pairs (stream, datagram, seqpacket) with messages in
/// flight between a parent and its child the same way.
#[test]
fn no_namespaces_sockets_two_rounds() {
    locked_down_scenario(Scenario::new("sockets"), "lockdown-sockets");
}

/// TCP connections inside the computation (IPv4 and IPv6 loopback, bytes
/// in flight both ways, a half-closed connection) the same way: without a
/// network namespace the addresses are the host's.
#[test]
fn no_namespaces_tcp_two_rounds() {
    locked_down_scenario(Scenario::new("tcp_stream"), "lockdown-tcp");
}

/// A pty pair made inside the computation (the child's controlling
/// terminal, in its own session) the same way.
#[test]
fn no_namespaces_pty_two_rounds() {
    locked_down_scenario(Scenario::new("pty_pair"), "lockdown-pty");
}

/// CPython (the system's python3) with threads, a lock and a
/// `queue.Queue` the same way.
#[test]
fn no_namespaces_python_two_rounds() {
    locked_down_scenario(
        Scenario::new("py_threads").image_name("python3"),
        "lockdown-python",
    );
}

/// CPython's subprocess (a `cat` child over two pipes, an exec chain) the
/// same way.
#[test]
fn no_namespaces_python_subprocess_two_rounds() {
    locked_down_scenario(
        Scenario::new("py_subprocess").image_name("python3"),
        "lockdown-py-subprocess",
    );
}

/// A POSIX message queue with messages in flight the same way. Without an
/// IPC namespace the queue lives in the host's and outlives the killed
/// computation, holding the messages sent after the checkpoint: the
/// restart must bring back the checkpoint's queue, not add to that one.
#[test]
fn no_namespaces_posix_mq_two_rounds() {
    locked_down_scenario(Scenario::new("posix_mq"), "lockdown-mq");
}

/// A queue of the same name that a process outside the computation has
/// open is not shared with the restart: refused in one line naming the
/// holder, before anything runs; once the holder is gone, the restart
/// brings back the checkpoint's queue and the program checks every message.
#[test]
fn no_namespaces_queue_held_outside_refused() {
    if !procs::is_root() {
        eprintln!("skipped: making a machine without user namespaces needs root");
        return;
    }
    let mut env = TestEnv::new("lockdown-mq-held", User::Nobody);
    let port = env.start_coordinator().to_string();
    let sc = Scenario::new("posix_mq")
        .wrapper("no_userns")
        .kernel_pids_change();
    let mut r = sc.launch(&env);
    std::thread::sleep(Duration::from_millis(500));
    // posix_mq names its queue after its pid (the kernel's, before the
    // first restart).
    let name = format!("/dmtcp-test-mq-{}", r.host_pid.expect("the program's pid"));
    let images = r.checkpoint();
    r.kill();
    // The holder runs in the restart's own user namespace (the one the
    // locked-down wrapper makes), where the restart can see its fds, as on
    // a real machine without user namespaces.
    let held = env.work.join("held");
    let holder = format!(
        "/usr/bin/python3 -c 'import ctypes, os, sys, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         fd = libc.mq_open(sys.argv[1].encode(), 0)\n\
         assert fd >= 0, ctypes.get_errno()\n\
         open(sys.argv[2] + \".tmp\", \"w\").write(str(os.getpid()))\n\
         os.rename(sys.argv[2] + \".tmp\", sys.argv[2])\n\
         time.sleep(600)' {name} {held} &\n\
         while [ ! -e {held} ]; do sleep 0.1; done\n\
         exec \"$0\" \"$@\"",
        held = held.display()
    );
    let mut cmd = Command::new(env.prog("no_userns"));
    cmd.args(["/bin/bash", "-c", &holder])
        .arg(env.bin("dmtcp-restart"))
        .args(["--coord-port", &port])
        .args(&images)
        .env(procs::TAG_VAR, &env.tag)
        .env("DMTCP_TMPDIR", &env.tmp)
        .env("HOME", &env.work)
        .current_dir(&env.work);
    let out = env.run(cmd, "restart-held", Duration::from_secs(30));
    let pid: i32 = std::fs::read_to_string(&held)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| env.fail("the outside process did not say its pid"));
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let want = format!("{name} is open in pid {pid} python3");
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    if out.status.success() || lines.len() != 1 || !lines[0].contains(&want) {
        env.fail(&format!(
            "restart while an outside process holds the queue: expected one line with '{want}', got {}",
            out.describe()
        ));
    }
    env.wait_for(
        "the outside process to end",
        Duration::from_secs(10),
        || !procs::alive(pid),
    );
    r.restart_from_images(&images);
    r.finish();
    env.finish();
}

/// Credentials over a unix socket (`SCM_CREDENTIALS` filled by the
/// program and by the kernel) name the pid `fork` gave the parent, through
/// two rounds onto new kernel pids.
#[test]
fn no_namespaces_unix_credentials_two_rounds() {
    locked_down_scenario(Scenario::new("ucred"), "lockdown-ucred");
}

/// Shared anonymous memory between a parent and its child, kept shared
/// through two rounds (the one case where `/proc/PID/exe` still names
/// `dmtcp-nsinit` after the restart, see `check_exe`).
#[test]
fn no_namespaces_shared_memory_two_rounds() {
    locked_down_scenario(Scenario::new("shmem"), "lockdown-shmem");
}

/// The name of the binary `path` resolves to (images of a script are
/// named after its interpreter).
fn interpreter(path: &str) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Without namespaces, SysV objects belong to the host's IPC namespace: a
/// checkpoint of a computation that uses them is refused in one line
/// naming the object, and the computation runs on.
#[test]
fn no_namespaces_refuses_sysv_objects() {
    let Some(env) = locked_down_env("lockdown-sysv") else {
        return;
    };
    let sc = locked_down("sysv_shm");
    let mut r = sc.launch(&env);
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(60));
    let said = out
        .stderr
        .lines()
        .filter(|l| l.contains("which runs without namespaces: SysV IPC objects cannot be kept"))
        .count();
    if out.status.success() || said != 1 || !out.stderr.contains("SysV ") {
        env.fail(&format!(
            "checkpoint of SysV objects without namespaces: expected a refusal naming the object, got {}",
            out.describe()
        ));
    }
    r.finish();
    env.finish();
}

/// The restarted computation's supervisor is killed; `dmtcp-attach
/// NSINIT_PID` takes it back, reads the pid table back from the
/// processes, and its checkpoint records the virtual pids: the next
/// restart gives the program the same pids again.
#[test]
fn no_namespaces_taken_back_after_supervisor_death() {
    let Some(env) = locked_down_env("lockdown-adopt") else {
        return;
    };
    let sc = locked_down("vpids");
    let mut r = sc.launch(&env);
    r.round();
    let pid = r.host_pid.expect("the restored program");
    let nsinit = procs::stat(pid).map(|s| s.ppid).unwrap_or(0);
    if procs::stat(nsinit).is_none_or(|s| s.comm != "dmtcp-nsinit") {
        env.fail(&format!(
            "the restored program's parent {nsinit} is not dmtcp-nsinit"
        ));
    }
    let supervisor = procs::stat(nsinit).map(|s| s.ppid).unwrap_or(0);
    // SAFETY: kill with integer arguments; the dmtcp-restart the test ran.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    env.wait(&mut r.launcher, Duration::from_secs(10));
    // In the computation's user namespace: ptrace from another one is
    // refused.
    let mut cmd = env.command_in_userns_of(nsinit, &env.bin("dmtcp-attach"));
    cmd.args(["-p", &env.port().to_string(), &nsinit.to_string()]);
    r.launcher = env.spawn(cmd, "take-back");
    env.wait_for(
        "the computation to be listed again",
        Duration::from_secs(20),
        || {
            let listed = env
                .dmtcp_command(&["-l"], Duration::from_secs(10))
                .stdout
                .contains("vpids");
            if !listed {
                std::thread::sleep(Duration::from_millis(300));
            }
            listed
        },
    );
    let images = r.checkpoint();
    r.kill();
    r.restart_from_images(&images);
    r.finish();
    check_ids_lines(&env);
    env.finish();
}
