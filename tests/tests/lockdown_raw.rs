//! Raw `syscall` instructions on a locked-down machine (no user
//! namespaces, uid 65534, `tests/src/lockdown.rs`): after each restart the
//! processes have new kernel pids, and `tests/programs/rawpid.c` checks
//! all the time that getpid/gettid/getppid made with the instruction
//! itself (inline asm) equal libc's and the ones it saw at start, that
//! kill(self, 0) and tgkill through the instruction reach it, and (with
//! `--own-filter`, `--raw-sigsys`, `--sigset-sigsys`) that its own seccomp filter and SIGSYS
//! handler still work over the library's trap (`resources/vpid_trap.rs`).

use std::time::Duration;

use dmtcp_tests::lockdown::{check_notice, locked_down, locked_down_env, release, take_pid};
use dmtcp_tests::{e2e_tests, procs, Scenario, TestEnv, User};

/// The `raw start|end PID TID PPID` lines: one each, equal.
fn check_raw_lines(env: &TestEnv) {
    let out = env.launcher_stdout();
    let of =
        |head: &str| -> Vec<&str> { out.lines().filter_map(|l| l.strip_prefix(head)).collect() };
    let (start, end) = (of("raw start "), of("raw end "));
    if start.len() != 1 || end.len() != 1 || start != end {
        env.fail(&format!(
            "rawpid: raw pids at start {start:?}, at the end {end:?}"
        ));
    }
}

/// Two checkpoint/kill/restart rounds, each restart while a process
/// outside the computation holds the program's last kernel pid (so the
/// restart cannot land on it), then the checks above.
fn raw_rounds(prog: &str, name: &str, args: &[&str]) {
    let Some(env) = locked_down_env(name) else {
        return;
    };
    let mut sc = locked_down(prog);
    for a in args {
        sc = sc.arg(a);
    }
    let mut r = sc.launch(&env);
    check_notice(&env, &r);
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        let old = r.host_pid.expect("the program's pid");
        let images = r.checkpoint();
        eprintln!("round {round}: {} image(s)", images.len());
        r.kill();
        let holder = take_pid(&env, old);
        r.restart_from_images(&images);
        if let Some(h) = holder {
            release(h);
        }
        if r.host_pid == Some(old) {
            env.fail(&format!(
                "round {round}: the restarted program has the pid another process holds"
            ));
        }
    }
    // Let it run its checks on the second restart's pids for a while.
    std::thread::sleep(Duration::from_millis(300));
    r.finish();
    check_raw_lines(&env);
    env.finish();
}

/// Dynamically linked, inline-asm calls: translated after each restart.
#[test]
fn no_namespaces_raw_syscalls_see_virtual_pids() {
    raw_rounds("rawpid", "lockdown-rawpid", &[]);
}

/// The same with the program's own seccomp filter (a trap of its own,
/// with its own SIGSYS handler) installed before the first checkpoint.
#[test]
fn no_namespaces_raw_syscalls_with_own_filter() {
    raw_rounds("rawpid", "lockdown-rawpid-own", &["--own-filter"]);
}

/// The same with the program's SIGSYS handler installed by a raw
/// `rt_sigaction` (inline asm) before the first checkpoint, read back and
/// set again the same way all the time: the restart gives the kernel's
/// action back to the library, which keeps the program's and hands it the
/// program's own traps; a raw `rt_sigaction(SIGSYS)` after a restart is
/// trapped and answered from the library's copy.
#[test]
fn no_namespaces_raw_syscalls_with_raw_sigsys_handler() {
    raw_rounds("rawpid", "lockdown-rawpid-rawsigsys", &["--raw-sigsys"]);
}

/// The same with a plain SIGSYS handler set by `sigset`, and set again
/// all the time by `bsd_signal` and `sigset` (glibc makes both through its
/// internal `sigaction`, which the preload does not see): each must keep
/// the library's handler in the kernel, give back the program's as the
/// previous one, and leave the program its own traps.
#[test]
fn no_namespaces_raw_syscalls_with_sigset_sigsys_handler() {
    raw_rounds("rawpid", "lockdown-rawpid-sigset", &["--sigset-sigsys"]);
}

/// With a child forked and exec'd again all the time: after a restart
/// the exec'd program runs under the inherited filter (its code is not
/// trapped, its raw and libc pids agree, it exits 0), and the checkpoints
/// that catch such a child leave the filter out (the library found it with
/// the probe after the exec).
#[test]
fn no_namespaces_raw_syscalls_with_exec() {
    raw_rounds("rawpid", "lockdown-rawpid-exec", &["--exec"]);
}

/// Statically linked: no inject library, so nothing handles a trap.
#[test]
#[ignore = "known failure: a statically linked program has no inject library, so its raw calls see the new kernel pids after a restart without namespaces (no trap is installed)"]
fn no_namespaces_raw_syscalls_static() {
    raw_rounds("rawpid_static", "lockdown-rawpid-static", &[]);
}

e2e_tests! {
    raw_syscalls_with_no_namespaces_flag => flag_rounds;
    raw_syscalls_own_filter_with_no_namespaces_flag => flag_rounds_own_filter;
}

/// `dmtcp-run --no-namespaces` where namespaces would work, as the current
/// user (root here: the capture reads the filters from the kernel and
/// must skip the trap at the root; no `no_new_privs` needed) and as uid
/// 65534: two rounds, then the same checks.
fn flag_rounds_with(env: &mut TestEnv, args: &[&str]) {
    env.start_coordinator();
    let mut sc = Scenario::new("rawpid")
        .run_flag("--no-namespaces")
        .kernel_pids_change();
    for a in args {
        sc = sc.arg(a);
    }
    let mut r = sc.launch(env);
    r.round();
    r.round();
    std::thread::sleep(Duration::from_millis(300));
    r.finish();
    check_raw_lines(env);
}

fn flag_rounds(env: &mut TestEnv) {
    flag_rounds_with(env, &["--exec"]);
}

fn flag_rounds_own_filter(env: &mut TestEnv) {
    flag_rounds_with(env, &["--own-filter"]);
}

/// A thread in seccomp strict mode (root only: unprivileged, the checkpoint
/// cannot run anything in that thread and is refused): without namespaces
/// its process gets no trap after a restart (strict mode cannot follow a
/// filter), and the restarts work.
#[test]
fn strict_mode_without_namespaces_gets_no_trap() {
    if !procs::is_root() {
        eprintln!("skipped: strict mode is checkpointed only as root");
        return;
    }
    let mut env = TestEnv::new("raw-strict", User::Current);
    Scenario::new("seccomp_own")
        .arg("strict")
        .run_flag("--no-namespaces")
        .kernel_pids_change()
        .run(&mut env);
    env.finish();
}
