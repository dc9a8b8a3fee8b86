//! Sockets inside the computation: unix socket pairs (stream, datagram and
//! seqpacket), listeners, TCP connections (IPv4 and IPv6 loopback), UDP
//! sockets and connected named unix sockets come back connected, with the
//! data in flight, message boundaries and addresses.

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    sockets => socketpairs_keep_data_in_flight;
    listener => listeners_accept_after_restart;
    tcp_stream => tcp_connections_keep_stream_and_addresses;
    udp => udp_sockets_keep_addresses_and_queues;
    unix_named => named_unix_connections_keep_names;
}

/// A client and a forked server exchange numbered streams over IPv4 and
/// IPv6 loopback with bytes in flight both ways, plus a half-closed
/// connection; addresses and socket options must be unchanged.
fn tcp_connections_keep_stream_and_addresses(env: &mut TestEnv) {
    Scenario::new("tcp_stream").run(env);
}

/// Datagrams in flight between a bound socket and a connected one (in two
/// processes) are put back: none lost, none duplicated.
fn udp_sockets_keep_addresses_and_queues(env: &mut TestEnv) {
    Scenario::new("udp").run(env);
}

/// A stream connection to a path listener and a seqpacket connection to an
/// abstract one keep their data and names.
fn named_unix_connections_keep_names(env: &mut TestEnv) {
    let path = env.work.join("n.sock");
    Scenario::new("unix_named").arg(&path).run(env);
    let _ = std::fs::remove_file(&path);
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
