//! The target programs themselves work without dmtcp (zdtm's "does the test
//! itself work?"): each runs bare, is stopped, and must PASS. Needs no dmtcp
//! binary, so it also checks the harness on a machine where they do not build.

use std::time::Duration;

use dmtcp_tests::{e2e_tests, setup, Mode, Scenario, TestEnv};

e2e_tests! {
    programs_work_without_dmtcp => all_programs_bare;
}

fn all_programs_bare(env: &mut TestEnv) {
    for prog in setup::PROGRAMS {
        // no_userns is a harness tool (it makes a machine without user
        // namespaces, tests/tests/lockdown.rs), not a program under test.
        if *prog == "no_userns" {
            continue;
        }
        // steps is a job with a result, not a zdtm program (no READY, no
        // stop file): the Slurm tests run it bare as their reference.
        if *prog == "steps" {
            continue;
        }
        // api, seccomp_own, sandboxed and rawpid take a mode as argument,
        // heap_rewrite a size in MiB; the others a data file.
        let arg = match *prog {
            "api" => "bare".into(),
            "heap_rewrite" => "8".into(),
            "seccomp_own" => "tsync".into(),
            "sandboxed" => "none".into(),
            "rawpid" | "rawpid_static" => "--own-filter".into(),
            _ => env.work.join(format!("{prog}.data")).into_os_string(),
        };
        let mut sc = Scenario::new(prog).arg(arg);
        // tcp_ring DIR INDEX N: a ring of one node (it connects to itself).
        if *prog == "tcp_ring" {
            sc = Scenario::new(prog).arg(&env.work).arg("0").arg("1");
        }
        let mut sc = sc.settle(Duration::from_millis(300));
        sc.mode = Mode::Bare;
        sc.run(env);
    }
}
