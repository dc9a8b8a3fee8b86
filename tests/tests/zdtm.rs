//! zdtm-style end-to-end tests: each target program is launched under
//! `dmtcp-run`, checkpointed, killed and restarted (2 rounds by default, the
//! second from the generated restart script), then told to stop and must
//! verify its own state and PASS. `ZDTM_MODE=norestart|bare`, `ZDTM_ROUNDS=N`.

use std::time::Duration;

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    counter => counter_offset_continues;
    counter_static => static_counter_offset_continues;
    heap256 => heap256_survives;
    mprotect_filemap => mprotect_and_private_file_map;
    sleeper => sleeper_sees_no_eintr;
}

/// File offset continues, no gap or duplicate line, pid unchanged.
fn counter_offset_continues(env: &mut TestEnv) {
    Scenario::new("counter")
        .arg(env.work.join("counter.txt"))
        .run(env);
}

/// The same, statically linked: the inject library cannot be preloaded, and
/// the process is checkpointed all the same (capture is from outside).
fn static_counter_offset_continues(env: &mut TestEnv) {
    Scenario::new("counter_static")
        .arg(env.work.join("counter.txt"))
        .run(env);
}

/// 256 MiB of patterned heap survives checkpoint/restart (uncompressed images).
fn heap256_survives(env: &mut TestEnv) {
    Scenario::new("heap256")
        .run_flag("--no-gzip")
        .env("DMTCP_GZIP", "0")
        .ckpt_timeout(Duration::from_secs(300))
        .run(env);
}

/// A PROT_READ page still faults on write; MAP_PRIVATE file pages keep both
/// their modified and their file-backed content; the file is unchanged.
fn mprotect_and_private_file_map(env: &mut TestEnv) {
    Scenario::new("mprotect_filemap")
        .arg(env.work.join("mapped.bin"))
        .run(env);
}

/// Checkpoints are transparent: no EINTR, no short nanosleep/poll.
fn sleeper_sees_no_eintr(env: &mut TestEnv) {
    Scenario::new("sleeper").run(env);
}
