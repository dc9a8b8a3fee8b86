//! Checkpoints of a process whose threads come and go all the time, with
//! thread-directed signals in flight (issue 21, DMTCP's pthread5/pthread6
//! flakes: "cannot stop pid N: it is traced by pid 0 ()" when a listed
//! thread was already exiting).

use std::time::Duration;

use dmtcp_tests::{e2e_tests, ProcCheck, Scenario, TestEnv};

e2e_tests! {
    thread_storm => thread_storm_checkpoints;
}

/// Eight checkpoints in a row while 4 spawners create detached threads that
/// exit at once (tens of thousands a second), then a kill and a restart:
/// every checkpoint succeeds and the program's counts agree at the end.
fn thread_storm_checkpoints(env: &mut TestEnv) {
    let mut sc = Scenario::new("thread_storm").settle(Duration::from_millis(200));
    // The thread set changes all the time: only the program's checks count.
    sc.proc_check = ProcCheck::Warn;
    env.start_coordinator();
    let mut r = sc.launch(env);
    let mut images = Vec::new();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(100));
        images = r.checkpoint();
    }
    r.kill();
    // The killed supervisor of a process with this many threads may take a
    // moment to leave the coordinator (the restart refuses while it is
    // listed).
    std::thread::sleep(Duration::from_secs(3));
    r.restart_from_images(&images);
    r.finish();
}
