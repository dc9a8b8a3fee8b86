//! Unix socket pairs inside the computation: stream, datagram and seqpacket
//! pairs come back connected, with the data in flight and message boundaries.

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    sockets => socketpairs_keep_data_in_flight;
}

/// Stream ping-pong between parent and child with numbers in flight both
/// ways; datagram and seqpacket pairs always holding 3 queued messages.
fn socketpairs_keep_data_in_flight(env: &mut TestEnv) {
    Scenario::new("sockets").run(env);
}
