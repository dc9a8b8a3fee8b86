//! A restarted process can be debugged like any other: `gdb -p HOSTPID`
//! shows `main` in the backtrace, and the program still passes after gdb
//! detaches.
//!
//! The computation has its own mount namespace (for its own /proc). gdb
//! reads the files of a process in another mount namespace by entering it,
//! which only a privileged user may do; unprivileged, gdb is told that the
//! files are its own (`set sysroot /`, as the user guide says).

use std::path::Path;
use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, procs, Mode, Scenario, TestEnv, User};

e2e_tests! {
    gdb_attach_after_restart => gdb_backtrace_after_restart;
}

fn gdb_backtrace_after_restart(env: &mut TestEnv) {
    if !Path::new("/usr/bin/gdb").exists() {
        env.fail("gdb not installed (apt-get install gdb)");
    }
    env.start_coordinator();
    let mut sc = Scenario::new("counter").arg(env.work.join("counter.txt"));
    sc.mode = Mode::Rounds(1); // this test is about a restarted process
    let mut r = sc.launch(env);
    r.round();
    let pid = r.host_pid.expect("restored program has a host pid");
    let mut cmd = env.command_path(Path::new("/usr/bin/gdb"));
    cmd.arg("-nx");
    if env.user == User::Nobody {
        cmd.args(["-iex", "set sysroot /"]);
    }
    cmd.args(["-batch", "-p", &pid.to_string(), "-ex", "bt"]);
    let out = env.run(cmd, "gdb", Duration::from_secs(120));
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
