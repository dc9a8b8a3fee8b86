//! Checkpoints of a process whose threads come and go all the time, with
//! thread-directed signals in flight (issue 21, DMTCP's pthread5/pthread6
//! flakes: "cannot stop pid N: it is traced by pid 0 ()" when a listed
//! thread was already exiting).

use std::time::Duration;

use dmtcp_tests::{e2e_tests, ProcCheck, Scenario, TestEnv};

e2e_tests! {
    thread_storm => thread_storm_checkpoints;
    raise_sync => signals_raised_through_checkpoints;
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

/// Threads that send themselves a signal in a tight loop, each checking that
/// its handler ran before the call returned: twelve checkpoints, a kill and
/// a restart, twelve more. A checkpoint that stops a thread in its
/// signal-delivery stop and runs code in it must hand the signal back before
/// the thread runs on (it was queued again only after the thread had been
/// let go, and the program saw its handler had not run: 1 checkpoint in
/// about 100).
fn signals_raised_through_checkpoints(env: &mut TestEnv) {
    let mut sc = Scenario::new("raise_sync").settle(Duration::from_millis(100));
    sc.proc_check = ProcCheck::Warn;
    env.start_coordinator();
    let mut r = sc.launch(env);
    let mut images = Vec::new();
    for _ in 0..12 {
        images = r.checkpoint();
    }
    r.kill();
    r.restart_from_images(&images);
    for _ in 0..12 {
        r.checkpoint();
    }
    r.finish();
}
