//! Multi-threaded targets: every thread survives checkpoint and restart with
//! its tid, TLS, registers and blocked system call, transparently.

use dmtcp_tests::{e2e_tests, ProcCheck, Scenario, TestEnv};

e2e_tests! {
    threads => threads_mutex_condvar;
    idle512 => idle_512_threads;
    signals => signal_state;
    sigfd_child => signalfd_names_children;
    avx512 => avx512_registers;
    epoll_pipe => epoll_and_blocked_read;
    posix_timers => posix_timers_keep_ids_and_fire;
    timer_thread => sigev_thread_timer_keeps_firing;
    py_threads => cpython_threads;
    fdkinds => eventfd_timerfd_signalfd;
    churn => threads_created_and_exiting;
}

/// 8 threads taking turns under a mutex and condvar; tids, TLS, join.
fn threads_mutex_condvar(env: &mut TestEnv) {
    Scenario::new("threads").run(env);
}

/// 512 threads blocked in a condvar wait, nanosleep or a pipe read.
fn idle_512_threads(env: &mut TestEnv) {
    Scenario::new("idle512").run(env);
}

/// Blocked and pending signals, handlers with flags and masks, ignored
/// signals, and a running ITIMER_REAL.
fn signal_state(env: &mut TestEnv) {
    Scenario::new("signals").run(env);
}

/// SIGCHLD read through a signalfd (a child made before the checkpoint,
/// reaped after the restart, and children made all the time) names each
/// child by the pid fork returned.
fn signalfd_names_children(env: &mut TestEnv) {
    let mut sc = Scenario::new("sigfd_child");
    sc.proc_check = ProcCheck::Warn;
    sc.run(env);
}

/// Values live in zmm16/zmm17/zmm31 and k2 across the checkpoint.
fn avx512_registers(env: &mut TestEnv) {
    Scenario::new("avx512").run(env);
}

/// epoll_wait/select see no EINTR; a thread blocked in read() gets the bytes
/// written after the last restart.
fn epoll_and_blocked_read(env: &mut TestEnv) {
    Scenario::new("epoll_pipe").run(env);
}

/// POSIX timers (process- and thread-directed, SIGEV_NONE) keep their ids,
/// signal values and remaining times, and keep firing.
/// A SIGEV_THREAD timer (glibc's helper thread, signalled with SIGEV_THREAD_ID
/// and signal 32) keeps calling back after restarts instead of the process
/// being killed by signal 32; a SIGEV_THREAD_ID timer keeps its thread.
fn sigev_thread_timer_keeps_firing(env: &mut TestEnv) {
    let mut sc = Scenario::new("timer_thread");
    // glibc starts a thread for each expiry: the thread count before and
    // after cannot match; the program's own checks decide.
    sc.proc_check = ProcCheck::Warn;
    sc.run(env);
}

fn posix_timers_keep_ids_and_fire(env: &mut TestEnv) {
    Scenario::new("posix_timers").run(env);
}

/// A real multi-threaded program: CPython with worker threads under a lock,
/// a queue.Queue producer/consumer and a sleeping thread.
fn cpython_threads(env: &mut TestEnv) {
    // Images are named after the interpreter as the `#!` line names it
    // (argv[0]), not the binary it resolves to (python3.X).
    Scenario::new("py_threads").image_name("python3").run(env);
}

/// eventfd counters (plain and semaphore), a periodic timerfd watched by
/// epoll, and a signalfd with a pending signal.
fn eventfd_timerfd_signalfd(env: &mut TestEnv) {
    Scenario::new("fdkinds").run(env);
}

/// Threads are created and exit continuously while checkpoints happen.
fn threads_created_and_exiting(env: &mut TestEnv) {
    let mut sc = Scenario::new("churn");
    // Its thread set (and glibc's signal mask inside pthread_create) changes
    // all the time, so a /proc snapshot before and one after cannot match:
    // report the differences, let the program's own checks decide.
    sc.proc_check = ProcCheck::Warn;
    sc.run(env);
}
