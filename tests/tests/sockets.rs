//! Unix socket pairs inside the computation: stream, datagram and seqpacket
//! pairs come back connected, with the data in flight and message boundaries.

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    sockets => socketpairs_keep_data_in_flight;
    listener => listeners_accept_after_restart;
}

/// Stream ping-pong between parent and child with numbers in flight both
/// ways; datagram and seqpacket pairs always holding 3 queued messages.
fn socketpairs_keep_data_in_flight(env: &mut TestEnv) {
    Scenario::new("sockets").run(env);
}

/// Threads blocked in accept() on a TCP and a unix listener carry on, and
/// the same addresses accept new connections after restart.
fn listeners_accept_after_restart(env: &mut TestEnv) {
    // Unix socket paths are limited to 108 bytes: the work dir is short.
    let path = env.work.join("l.sock");
    Scenario::new("listener").arg(&path).run(env);
    let _ = std::fs::remove_file(&path);
}
