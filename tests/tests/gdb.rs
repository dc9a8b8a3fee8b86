//! Debugging restarted computations with gdb.
//!
//! - A restarted process can be debugged like any other: `gdb -p HOSTPID`
//!   shows `main` in the backtrace, and the program still passes after gdb
//!   detaches.
//! - `dmtcp-restart --stop` leaves every thread stopped at its checkpointed
//!   instruction and prints the gdb command that attaches to each process;
//!   gdb sees the checkpointed stack, globals and registers, and the
//!   program goes on when gdb detaches.
//!
//! - `dmtcp-restart --core OUT IMAGE` writes an ELF core file that
//!   `gdb PROG OUT` reads: stack, globals, threads, registers.
//!
//! The computation has its own mount namespace (for its own /proc). gdb
//! reads the files of a process in another mount namespace by entering it,
//! which only a privileged user may do; unprivileged, gdb is told that the
//! files are its own (`set sysroot /`, as the user guide says).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use dmtcp_tests::env::read_lossy;
use dmtcp_tests::{e2e_tests, procs, Mode, Scenario, TestEnv, User};

e2e_tests! {
    gdb_attach_after_restart => gdb_backtrace_after_restart;
    gdb_restart_stopped => gdb_at_stopped_restart;
    gdb_core_of_image => gdb_reads_core_of_image;
    restart_stopped_tree => stopped_tree_goes_on_with_sigcont;
    gdb_checkpoint_through_debugger => checkpoint_through_gdb_stop;
}

fn require_gdb(env: &TestEnv) {
    if !Path::new("/usr/bin/gdb").exists() {
        env.fail("gdb not installed (apt-get install gdb)");
    }
}

/// `gdb -nx -batch` (with `set sysroot /` when unprivileged) and `args`.
fn gdb(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = env.command_path(Path::new("/usr/bin/gdb"));
    cmd.arg("-nx");
    if env.user == User::Nobody || !procs::is_root() {
        cmd.args(["-iex", "set sysroot /"]);
    }
    cmd.arg("-batch").args(args);
    cmd
}

fn gdb_backtrace_after_restart(env: &mut TestEnv) {
    require_gdb(env);
    env.start_coordinator();
    let mut sc = Scenario::new("counter").arg(env.work.join("counter.txt"));
    sc.mode = Mode::Rounds(1); // this test is about a restarted process
    let mut r = sc.launch(env);
    r.round();
    let pid = r.host_pid.expect("restored program has a host pid");
    let out = env.run(
        gdb(env, &["-p", &pid.to_string(), "-ex", "bt"]),
        "gdb",
        Duration::from_secs(120),
    );
    let frames: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('#')).collect();
    if !frames.iter().any(|l| l.contains(" main (")) {
        env.fail(&format!(
            "gdb backtrace of restored counter (pid {pid}) shows no main frame:\n{}",
            out.describe()
        ));
    }
    // gdb detached: the program must run on (not stopped, not dead).
    thread::sleep(Duration::from_millis(500));
    env.wait_for(
        "the program to run again after gdb detached",
        Duration::from_secs(10),
        || procs::stat(pid).is_some_and(|s| !matches!(s.state, 't' | 'T' | 'Z' | 'X')),
    );
    r.finish();
}

/// The state letter of every thread of `pid`.
fn thread_states(pid: i32) -> Vec<char> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|t| {
            let s = fs::read_to_string(format!("/proc/{pid}/task/{t}/stat")).ok()?;
            s.rsplit_once(") ")?.1.chars().next()
        })
        .collect()
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The leader's `rip` in an image, from `dmtcp-restart --inspect` (the
/// thread with the smallest tid).
fn image_leader_rip(env: &TestEnv, image: &Path) -> String {
    let mut cmd = env.command_path(&env.bin("dmtcp-restart"));
    cmd.arg("--inspect").arg(image);
    let out = env.run(cmd, "inspect", Duration::from_secs(60));
    let mut best: Option<(u32, String)> = None;
    for l in out.stdout.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() != Some(&"tid") {
            continue;
        }
        let (Some(tid), Some(i)) = (
            w.get(1).and_then(|t| t.parse::<u32>().ok()),
            w.iter().position(|x| *x == "rip"),
        ) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| tid < *b) {
            best = Some((tid, w.get(i + 1).unwrap_or(&"?").to_string()));
        }
    }
    best.map(|(_, r)| r)
        .unwrap_or_else(|| env.fail(&format!("no thread rip in --inspect:\n{}", out.describe())))
}

fn gdb_at_stopped_restart(env: &mut TestEnv) {
    require_gdb(env);
    env.start_coordinator();
    let ticks: PathBuf = env.work.join("ticks.txt");
    let mut sc = Scenario::new("gdbstack").arg(&ticks);
    sc.mode = Mode::Rounds(1);
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let images = r.checkpoint();
    r.kill();
    let image = images
        .iter()
        .find(|p| p.to_string_lossy().contains("ckpt_gdbstack_"))
        .cloned()
        .unwrap_or_else(|| env.fail("no gdbstack image"));
    let rip = image_leader_rip(env, &image);

    let mut cmd = env.command_path(&env.bin("dmtcp-restart"));
    cmd.arg("--coord-port").arg(env.port().to_string());
    // Both spellings: ours, and DMTCP's environment variable.
    if env.user == User::Nobody {
        cmd.env("DMTCP_RESTART_PAUSE", "3");
    } else {
        cmd.arg("--stop");
    }
    cmd.args(&images);
    r.launcher = env.spawn(cmd, "restart-stop-gdbstack");
    let stderr = r.launcher.stderr.clone();
    env.wait_for(
        "dmtcp-restart --stop to print the gdb command",
        Duration::from_secs(60),
        || {
            read_lossy(&stderr)
                .lines()
                .any(|l| l.trim_start().starts_with("gdb "))
        },
    );
    let printed = read_lossy(&stderr);
    let line = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("gdb "))
        .unwrap_or_default()
        .to_string();
    let pid: i32 = line
        .split_whitespace()
        .skip_while(|w| *w != "-p")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| env.fail(&format!("no -p PID in the printed command: {line}")));
    let prog = env.prog("gdbstack");
    let sysroot = if env.user != User::Nobody && procs::is_root() {
        ""
    } else {
        "-iex 'set sysroot /' "
    };
    let expected = format!("gdb {sysroot}-p {pid} {}", prog.display());
    if line != expected {
        env.fail(&format!(
            "dmtcp-restart --stop printed\n  {line}\nexpected\n  {expected}\nstderr:\n{printed}"
        ));
    }

    // Every thread stopped, and nothing runs while stopped.
    let states = thread_states(pid);
    if states.len() != 2 || states.iter().any(|&s| s != 'T') {
        env.fail(&format!(
            "restored gdbstack (pid {pid}) thread states {states:?}, expected two stopped (T)"
        ));
    }
    let len0 = file_len(&ticks);
    thread::sleep(Duration::from_millis(400));
    if file_len(&ticks) != len0 || thread_states(pid).iter().any(|&s| s != 'T') {
        env.fail("the program ran while dmtcp-restart --stop held it");
    }

    let pid_s = pid.to_string();
    let prog_s = prog.to_string_lossy().into_owned();
    let out = env.run(
        gdb(
            env,
            &[
                "-p",
                &pid_s,
                &prog_s,
                "-ex",
                "bt",
                "-ex",
                "p gdb_answer",
                "-ex",
                "info registers rip",
                "-ex",
                "info threads",
                "-ex",
                "p gdb_ticks",
                // Runs on from the checkpointed instruction to the next
                // turn of level2's loop (only the main thread runs there).
                // gdb queues a SIGSTOP on each thread of a process that
                // was stopped when it attached, and reports it on the
                // first `continue` (user guide, "Debugging with gdb").
                "-ex",
                "handle SIGSTOP nostop noprint nopass",
                "-ex",
                "break gdbstack.c:33",
                "-ex",
                "continue",
                "-ex",
                "p gdb_ticks",
                "-ex",
                "delete",
                "-ex",
                "detach",
            ],
        ),
        "gdb-stopped",
        Duration::from_secs(120),
    );
    let text = &out.stdout;
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let pos = |f: &str| frames.iter().position(|l| l.contains(&format!(" {f} (")));
    match (pos("level2"), pos("level1"), pos("main")) {
        (Some(a), Some(b), Some(c)) if a < b && b < c => {}
        _ => env.fail(&format!(
            "gdb backtrace at the stopped restart lacks level2 < level1 < main:\n{}",
            out.describe()
        )),
    }
    if !text.lines().any(|l| l.trim() == "$1 = 4242") {
        env.fail(&format!(
            "gdb did not print gdb_answer = 4242:\n{}",
            out.describe()
        ));
    }
    let gdb_rip = text
        .lines()
        .find(|l| l.starts_with("rip "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default();
    // A thread checkpointed inside a system call is restored in front of
    // its `syscall` instruction (2 bytes), which it issues again.
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let (g, i) = (hex(gdb_rip), hex(&rip));
    if g.is_none() || (g != i && g.map(|g| g + 2) != i) {
        env.fail(&format!(
            "gdb shows rip {gdb_rip:?}, the image holds {rip} for the leader:\n{}",
            out.describe()
        ));
    }
    let threads = text
        .lines()
        .filter(|l| {
            l.contains("LWP ")
                && l.trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| c == '*' || c.is_ascii_digit())
        })
        .count();
    if threads != 2 {
        env.fail(&format!(
            "gdb info threads shows {threads} threads, not 2:\n{}",
            out.describe()
        ));
    }

    let value = |n: u32| -> Option<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("${n} = ")))
            .and_then(|v| v.parse().ok())
    };
    match (value(2), value(3)) {
        (Some(a), Some(b)) if b == a + 1 => {}
        (a, b) => env.fail(&format!(
            "gdb_ticks {a:?} at the stop, {b:?} at the next turn of the loop (expected one more):\n{}",
            out.describe()
        )),
    }

    // gdb detached: the program goes on, and its output continues.
    env.wait_for(
        "the program to run again after gdb detached",
        Duration::from_secs(10),
        || {
            let s = thread_states(pid);
            !s.is_empty() && s.iter().all(|&c| !matches!(c, 't' | 'T' | 'Z' | 'X'))
        },
    );
    let len1 = file_len(&ticks);
    env.wait_for(
        "the program's output to go on after gdb detached",
        Duration::from_secs(10),
        || file_len(&ticks) > len1,
    );
    // And it is an ordinary restarted computation: checkpoint, kill and
    // restart it once more (from the restart script).
    r.host_pid = Some(pid);
    r.rounds_done = 1;
    r.round();
    r.finish();
}

fn gdb_reads_core_of_image(env: &mut TestEnv) {
    require_gdb(env);
    env.start_coordinator();
    let ticks: PathBuf = env.work.join("ticks.txt");
    // Incremental: the core of the second image takes the pages it did
    // not save again from the first.
    let mut sc = Scenario::new("gdbstack")
        .arg(&ticks)
        .run_flag("--incremental");
    sc.mode = Mode::NoRestart;
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    r.checkpoint();
    thread::sleep(Duration::from_millis(300));
    let images = r.checkpoint();
    let image = images
        .iter()
        .find(|p| p.to_string_lossy().contains("ckpt_gdbstack_"))
        .cloned()
        .unwrap_or_else(|| env.fail("no gdbstack image"));
    let rip = image_leader_rip(env, &image);

    let core = env.work.join("gdbstack.core");
    let mut cmd = env.command_path(&env.bin("dmtcp-restart"));
    cmd.arg("--core").arg(&core).arg(&image);
    let out = env.run(cmd, "core", Duration::from_secs(60));
    if !out.status.success() || !core.is_file() {
        env.fail(&format!("dmtcp-restart --core failed:\n{}", out.describe()));
    }

    let prog = env.prog("gdbstack").to_string_lossy().into_owned();
    let core_s = core.to_string_lossy().into_owned();
    let out = env.run(
        gdb(
            env,
            &[
                &prog,
                &core_s,
                "-ex",
                "bt",
                "-ex",
                "p gdb_answer",
                "-ex",
                "info registers rip",
                "-ex",
                "info threads",
                "-ex",
                "thread apply all bt",
            ],
        ),
        "gdb-core",
        Duration::from_secs(120),
    );
    let text = &out.stdout;
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let pos = |f: &str| frames.iter().position(|l| l.contains(&format!(" {f} (")));
    match (pos("level2"), pos("level1"), pos("main")) {
        (Some(a), Some(b), Some(c)) if a < b && b < c => {}
        _ => env.fail(&format!(
            "gdb backtrace of the core lacks level2 < level1 < main:\n{}",
            out.describe()
        )),
    }
    if !frames.iter().any(|l| l.contains(" helper_loop (")) {
        env.fail(&format!(
            "gdb shows no helper_loop frame in the second thread of the core:\n{}",
            out.describe()
        ));
    }
    if !text.lines().any(|l| l.trim() == "$1 = 4242") {
        env.fail(&format!(
            "gdb did not print gdb_answer = 4242 from the core:\n{}",
            out.describe()
        ));
    }
    let gdb_rip = text
        .lines()
        .find(|l| l.starts_with("rip "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default();
    if gdb_rip != rip {
        env.fail(&format!(
            "gdb shows rip {gdb_rip:?} in the core, the image holds {rip} for the leader:\n{}",
            out.describe()
        ));
    }
    r.finish();
}

/// `--stop` on a tree of three processes: one gdb command per process,
/// every process stopped and not running; `kill -CONT` (no debugger) lets
/// each go on, and the tree passes its own checks (no byte of its pipe
/// lost, ids kept).
fn stopped_tree_goes_on_with_sigcont(env: &mut TestEnv) {
    env.start_coordinator();
    let mut sc = Scenario::new("tree").arg(env.work.join("tree.log"));
    sc.mode = Mode::Rounds(1);
    sc.proc_check = dmtcp_tests::ProcCheck::Off;
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let images = r.checkpoint();
    r.kill();
    let mut cmd = env.command_path(&env.bin("dmtcp-restart"));
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--debug-restart-pause")
        .args(&images);
    r.launcher = env.spawn(cmd, "restart-stop-tree");
    let stderr = r.launcher.stderr.clone();
    let gdb_pids = || -> Vec<i32> {
        read_lossy(&stderr)
            .lines()
            .filter(|l| l.trim_start().starts_with("gdb "))
            .filter_map(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "-p")
                    .nth(1)
                    .and_then(|p| p.parse().ok())
            })
            .collect()
    };
    env.wait_for(
        "a gdb command for each of the three processes",
        Duration::from_secs(60),
        || gdb_pids().len() == 3 && read_lossy(&stderr).contains("kill -CONT"),
    );
    let pids = gdb_pids();
    thread::sleep(Duration::from_millis(300));
    for &p in &pids {
        let s = thread_states(p);
        if s.is_empty() || s.iter().any(|&c| c != 'T') {
            env.fail(&format!(
                "process {p} of the restarted tree: thread states {s:?}, expected all stopped (T)\n{}",
                read_lossy(&stderr)
            ));
        }
    }
    let mut kill = env.command_path(Path::new("/bin/kill"));
    kill.arg("-CONT").args(pids.iter().map(|p| p.to_string()));
    let out = env.run(kill, "kill-cont", Duration::from_secs(10));
    if !out.status.success() {
        env.fail(&format!("kill -CONT failed:\n{}", out.describe()));
    }
    env.wait_for(
        "every process of the tree to run after SIGCONT",
        Duration::from_secs(10),
        || {
            pids.iter().all(|&p| {
                let s = thread_states(p);
                !s.is_empty() && s.iter().all(|&c| !matches!(c, 't' | 'T'))
            })
        },
    );
    r.host_pid = Some(r.find_target(Duration::from_secs(10)));
    r.finish();
}

/// `examples/gdb-checkpoint.py`: a program held by gdb at a breakpoint is
/// checkpointed through gdb's stop (`dmtcp-checkpoint` in gdb); gdb keeps
/// its session and breakpoint; the image holds the program at the
/// breakpoint; the restart goes on from there and passes.
fn checkpoint_through_gdb_stop(env: &mut TestEnv) {
    require_gdb(env);
    env.start_coordinator();
    let ticks: PathBuf = env.work.join("ticks.txt");
    let mut sc = Scenario::new("gdbstack").arg(&ticks);
    sc.mode = Mode::Rounds(1);
    let mut r = sc.launch(env);
    let pid = r.host_pid.expect("launched program has a host pid");
    let script = dmtcp_tests::setup::workspace_dir().join("examples/gdb-checkpoint.py");
    let prog = env.prog("gdbstack").to_string_lossy().into_owned();
    let ckpt = format!("dmtcp-checkpoint -p {}", env.port());
    let mut cmd = gdb(
        env,
        &[
            "-x",
            &script.to_string_lossy(),
            "-p",
            &pid.to_string(),
            &prog,
            "-ex",
            "handle SIGSTOP nostop noprint nopass",
            "-ex",
            "break gdbstack.c:33",
            "-ex",
            "continue",
            "-ex",
            "p gdb_ticks",
            "-ex",
            &ckpt,
            "-ex",
            "p gdb_ticks",
            "-ex",
            "info breakpoints",
            "-ex",
            "delete",
            "-ex",
            "detach",
        ],
    );
    cmd.env("DMTCP_COMMAND", env.bin("dmtcp-command"));
    let out = env.run(cmd, "gdb-checkpoint", Duration::from_secs(120));
    let text = &out.stdout;
    let value = |n: u32| -> Option<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("${n} = ")))
            .and_then(|v| v.parse().ok())
    };
    if value(1).is_none() || value(1) != value(2) {
        env.fail(&format!(
            "gdb_ticks before and after dmtcp-checkpoint in gdb differ or are missing:\n{}",
            out.describe()
        ));
    }
    if !text.contains("breakpoint already hit 1 time") {
        env.fail(&format!(
            "gdb lost its breakpoint across the checkpoint:\n{}",
            out.describe()
        ));
    }
    let bp = text
        .lines()
        .find_map(|l| l.strip_prefix("Breakpoint 1 at "))
        .and_then(|l| l.split(':').next())
        .map(|a| a.trim().to_string())
        .unwrap_or_else(|| env.fail(&format!("no breakpoint address:\n{}", out.describe())));
    let images: Vec<PathBuf> = fs::read_dir(&env.ckpt)
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
    let [image] = images.as_slice() else {
        env.fail(&format!(
            "expected one gdbstack image, found {images:?}\n{}",
            out.describe()
        ));
    };
    let rip = image_leader_rip(env, image);
    if rip != bp {
        env.fail(&format!(
            "the image holds rip {rip} for the main thread, gdb held it at the breakpoint {bp}"
        ));
    }
    // gdb is gone; the process stays in its job-control stop until resumed.
    let mut kill = env.command_path(Path::new("/bin/kill"));
    kill.arg("-CONT").arg(pid.to_string());
    env.run(kill, "kill-cont", Duration::from_secs(10));
    let len0 = file_len(&ticks);
    env.wait_for(
        "the program to go on after kill -CONT",
        Duration::from_secs(10),
        || file_len(&ticks) > len0,
    );
    r.kill();
    r.restart_from_images(&images);
    r.finish();
}
