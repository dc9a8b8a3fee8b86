//! Multi-threaded targets: every thread survives checkpoint and restart with
//! its tid, TLS, registers and blocked system call, transparently.

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    threads => threads_mutex_condvar;
    idle512 => idle_512_threads;
}

/// 8 threads taking turns under a mutex and condvar; tids, TLS, join.
fn threads_mutex_condvar(env: &mut TestEnv) {
    Scenario::new("threads").run(env);
}

/// 512 threads blocked in a condvar wait, nanosleep or a pipe read.
fn idle_512_threads(env: &mut TestEnv) {
    Scenario::new("idle512").run(env);
}
