//! Sockets inside the computation: unix socket pairs (stream, datagram and
//! seqpacket), listeners, TCP connections (IPv4 and IPv6 loopback), UDP
//! sockets and connected named unix sockets come back connected, with the
//! data in flight, message boundaries and addresses.

use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, Scenario, TestEnv, User};

e2e_tests! {
    sockets => socketpairs_keep_data_in_flight;
    listener => listeners_accept_after_restart;
    tcp_stream => tcp_connections_keep_stream_and_addresses;
    tcp_full => tcp_bytes_held_by_a_blocked_sender;
    udp => udp_sockets_keep_addresses_and_queues;
    unix_named => named_unix_connections_keep_names;
    ucred => unix_credentials_kept;
}

/// A socket with `SO_PASSCRED` keeps it: messages sent with and without
/// `SCM_CREDENTIALS` still arrive with the sender's credentials, naming
/// the pid `fork` gave the parent.
fn unix_credentials_kept(env: &mut TestEnv) {
    Scenario::new("ucred").run(env);
}

/// A client and a forked server exchange numbered streams over IPv4 and
/// IPv6 loopback with bytes in flight both ways, plus a half-closed
/// connection; addresses and socket options must be unchanged.
fn tcp_connections_keep_stream_and_addresses(env: &mut TestEnv) {
    Scenario::new("tcp_stream").run(env);
    addresses_kept_or_explained(env);
}

/// The programs print "ADDRESSES CHANGED" when a socket's address differs
/// after restart. That is allowed only when a restart warned that the old
/// port had been taken meanwhile (other tests running in parallel open
/// connections all the time, and a freed ephemeral port may go to one).
fn addresses_kept_or_explained(env: &mut TestEnv) {
    let out = env.launcher_stdout();
    let Some(line) = out.lines().find(|l| l.starts_with("ADDRESSES CHANGED")) else {
        return;
    };
    let logs = env.work.join("logs");
    let warned = std::fs::read_dir(&logs)
        .map(|rd| {
            rd.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.contains("restart")
                    && name.ends_with(".err")
                    && std::fs::read_to_string(e.path())
                        .is_ok_and(|t| t.contains("a fresh port is used instead"))
            })
        })
        .unwrap_or(false);
    if !warned {
        env.fail(&format!(
            "{line}, but no restart warned that the old port was taken"
        ));
    }
    eprintln!(
        "[{}] note: {line} (restart used a fresh port, as it warned)",
        env.name
    );
}

/// A producer blocked in write() on a connection whose receiver's buffer is
/// full holds bytes in its own send queue. With CAP_NET_ADMIN (root) they
/// are read in TCP repair mode and the stream survives; without it (uid
/// 65534, whose user namespace does not own the network namespace) the
/// checkpoint must fail, saying why, and the program keep running intact.
fn tcp_bytes_held_by_a_blocked_sender(env: &mut TestEnv) {
    let sc = Scenario::new("tcp_full");
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = env.user == User::Current && unsafe { libc::geteuid() } == 0;
    if root {
        sc.run(env);
        return;
    }
    env.start_coordinator();
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(120));
    if out.status.success() || !out.describe().contains("CAP_NET_ADMIN") {
        env.fail(&format!(
            "checkpointing a sender blocked on a full receiver without CAP_NET_ADMIN: \
             expected a failure naming CAP_NET_ADMIN, got {}",
            out.describe()
        ));
    }
    r.finish();
}

/// Datagrams in flight between a bound socket and a connected one (in two
/// processes) are put back: none lost, none duplicated.
fn udp_sockets_keep_addresses_and_queues(env: &mut TestEnv) {
    Scenario::new("udp").run(env);
    addresses_kept_or_explained(env);
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
