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
        // api takes its mode as argument; the others a data file.
        let arg = match *prog {
            "api" => "bare".into(),
            _ => env.work.join(format!("{prog}.data")).into_os_string(),
        };
        let mut sc = Scenario::new(prog)
            .arg(arg)
            .settle(Duration::from_millis(300));
        sc.mode = Mode::Bare;
        sc.run(env);
    }
}
