//! Connections to peers outside the computation: they cannot be restored,
//! so after a restart the program sees them dropped (reset), in the same
//! epoll sets, serves new clients, and the checkpoint said which were
//! dropped; `DMTCP_OUTSIDE_PEERS=refuse` refuses the checkpoint instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, ProcCheck, Scenario, TestEnv};

e2e_tests! {
    outside_clients => outside_clients_see_a_reset;
    outside_refused => outside_peers_refused_on_request;
    redis_outside_client => redis_with_an_outside_client;
    dropped_unix => unix_socket_with_closed_peer;
    listener_time_wait => listener_back_despite_time_wait;
    fd_refused => unsupported_fd_refuses_checkpoint;
    fd_refused_children => unsupported_fd_refuses_checkpoint_of_many;
    inotify => inotify_watches_restored;
}

/// An inotify watch on a directory (wd 2, after a removed watch) reports a
/// file created after two restarts, with the same watch descriptor.
fn inotify_watches_restored(env: &mut TestEnv) {
    Scenario::new("inotify_watch").run(env);
}

/// An fd of a kind that cannot be restored (a pidfd) refuses the
/// checkpoint with one line naming the process, the fd and its kind,
/// instead of becoming /dev/null at restart; the program goes on.
fn unsupported_fd_refuses_checkpoint(env: &mut TestEnv) {
    refused(env, Scenario::new("fd_refused"));
}

/// The same in a parent with six children: the refusal comes while other
/// processes' captures are under way (and copy-on-write snapshots of them
/// made); each snapshot is released, and no process is left with a child
/// it did not make (the program checks with `waitpid(-1)`).
fn unsupported_fd_refuses_checkpoint_of_many(env: &mut TestEnv) {
    refused(env, Scenario::new("fd_refused").arg("children").arg("6"));
}

fn refused(env: &mut TestEnv, sc: Scenario) {
    env.start_coordinator();
    let mut r = sc.launch(env);
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(60));
    let said = out.describe();
    if out.status.success() || !said.contains("fd 3: anon_inode:[pidfd] cannot be checkpointed") {
        env.fail(&format!(
            "checkpoint with a pidfd open: expected a refusal naming fd 3 and the pidfd, got {said}"
        ));
    }
    r.finish();
}

/// A listener without SO_REUSEADDR whose server side closed a connection
/// just before the checkpoint (it lingers in TIME_WAIT on the port): the
/// restart waits for the port instead of failing with "Address already in
/// use", says so, and the listener accepts on its port again.
fn listener_back_despite_time_wait(env: &mut TestEnv) {
    let sc = Scenario::new("tw_server").settle(Duration::from_millis(200));
    env.start_coordinator();
    let mut r = sc.launch(env);
    let images = r.checkpoint();
    r.kill();
    // TIME_WAIT lasts 60 s: restart half-way through it, so the restart
    // has to wait but the harness's 60 s for the restored program suffice.
    thread::sleep(Duration::from_secs(30));
    r.restart_from_images(&images);
    r.rounds_done = 1;
    r.round();
    r.finish();
    if !logs(env).contains("TIME_WAIT") {
        eprintln!(
            "[{}] note: the restart did not have to wait for TIME_WAIT",
            env.name
        );
    }
}

/// A unix socket whose peer was closed with 256 bytes queued comes back as
/// one: the bytes, then end of file, EPIPE on write, POLLHUP.
fn unix_socket_with_closed_peer(env: &mut TestEnv) {
    Scenario::new("dropped_unix").run(env);
}

/// A client of the test process on `port`: sends `ping`, expects `pong`.
fn ping(env: &TestEnv, port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| env.fail(&format!("connecting to 127.0.0.1:{port}: {e}")));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(b"ping\n").unwrap();
    let mut line = String::new();
    if let Err(e) = BufReader::new(&s).read_line(&mut line) {
        env.fail(&format!("no answer from 127.0.0.1:{port}: {e}"));
    }
    if line.trim() != "pong" {
        env.fail(&format!("127.0.0.1:{port} answered {line:?}, not pong"));
    }
    s
}

fn port_of(env: &TestEnv) -> u16 {
    env.launcher_stdout()
        .lines()
        .find_map(|l| l.strip_prefix("PORT ")?.trim().parse().ok())
        .unwrap_or_else(|| env.fail("the server printed no PORT line"))
}

/// Every log of the test (stderr of the launchers and the coordinator).
fn logs(env: &TestEnv) -> String {
    let mut files: Vec<_> = std::fs::read_dir(&env.logs)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|p| dmtcp_tests::env::read_lossy(p))
        .collect()
}

/// The epoll server with a client of the test process connected at each
/// checkpoint, restarted twice: after each restart the old client is seen
/// dropped (EPOLLHUP/EPOLLERR with the data it was registered with, a
/// write fails with ECONNRESET/EPIPE, a read with ECONNRESET or EOF), and a
/// new client is served; the checkpoint's log names the dropped peer.
fn outside_clients_see_a_reset(env: &mut TestEnv) {
    let mut sc = Scenario::new("peer_server");
    // The dropped client's fd is closed by the server as soon as it runs.
    sc.proc_check = ProcCheck::Warn;
    env.start_coordinator();
    let mut r = sc.launch(env);
    let port = port_of(env);
    let mut client = ping(env, port);
    for round in 0..2 {
        let images = r.checkpoint();
        let log = logs(env);
        if !log.contains("peer outside the computation") {
            env.fail("the checkpoint did not say that a connection to outside will be dropped");
        }
        // And the user who asked for the checkpoint is told too.
        if !r.ckpt_stderr.contains("warning:")
            || !r.ckpt_stderr.contains("peer outside the computation")
        {
            let said = r.ckpt_stderr.clone();
            env.fail(&format!(
                "dmtcp-command -bc did not warn about the dropped connection: {said}"
            ));
        }
        r.kill();
        drop(client);
        if round == 0 {
            r.restart_from_images(&images);
        } else {
            r.restart_from_script();
        }
        env.wait_for(
            "the server to see the old client dropped",
            Duration::from_secs(20),
            || env.launcher_stdout().matches("GONE fd").count() > round,
        );
        client = ping(env, port);
    }
    drop(client);
    r.finish();
    // The first two are the clients dropped by the restarts (the last one
    // is the client the test closed in the end).
    let out = env.launcher_stdout();
    for l in out.lines().filter(|l| l.starts_with("GONE")).take(2) {
        eprintln!("[{}] {l}", env.name);
        if !l.contains("(hangup)") {
            env.fail(&format!(
                "a dropped client was not reported as a hangup: {l}"
            ));
        }
    }
}

/// `DMTCP_OUTSIDE_PEERS=refuse`: the checkpoint fails naming the
/// connection, the program keeps running, and once the client is gone the
/// checkpoint succeeds.
fn outside_peers_refused_on_request(env: &mut TestEnv) {
    let mut sc = Scenario::new("peer_server").env("DMTCP_OUTSIDE_PEERS", "refuse");
    sc.proc_check = ProcCheck::Warn;
    env.start_coordinator();
    let mut r = sc.launch(env);
    let port = port_of(env);
    let client = ping(env, port);
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(60));
    let said = out.describe() + &logs(env);
    if out.status.success() || !said.contains("DMTCP_OUTSIDE_PEERS=refuse") {
        env.fail(&format!(
            "checkpoint with a client outside and DMTCP_OUTSIDE_PEERS=refuse: expected a refusal naming it, got {}",
            out.describe()
        ));
    }
    drop(client);
    env.wait_for(
        "the server to see the client leave",
        Duration::from_secs(10),
        || env.launcher_stdout().contains("GONE fd"),
    );
    r.round();
    drop(ping(env, port));
    r.finish();
}

/// redis-server (when installed) with a client of the test process
/// connected at checkpoint: restarted twice, it answers new clients, and
/// the old client's connection is gone.
fn redis_with_an_outside_client(env: &mut TestEnv) {
    let have = dmtcp_tests::setup::output_tracked(
        std::process::Command::new("sh")
            .args(["-c", "command -v redis-server && command -v redis-cli"]),
    )
    .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!(
            "[{}] skipped: redis-server or redis-cli is not installed",
            env.name
        );
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redis_ping = |env: &TestEnv| -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| env.fail(&format!("connecting to redis: {e}")));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 7];
        if s.read_exact(&mut buf).is_err() || &buf != b"+PONG\r\n" {
            env.fail(&format!("redis did not answer PING: {buf:?}"));
        }
        s
    };
    let mut sc = Scenario::new("redis_peer")
        .arg(port.to_string())
        .image_name("bash")
        .settle(Duration::from_millis(500));
    sc.proc_check = ProcCheck::Off;
    env.start_coordinator();
    let mut r = sc.launch(env);
    let mut client = redis_ping(env);
    for round in 0..2 {
        let images = r.checkpoint();
        r.kill();
        if round == 0 {
            r.restart_from_images(&images);
        } else {
            r.restart_from_script();
        }
        // The old connection is reset: a request gets no answer.
        let _ = client.write_all(b"PING\r\n");
        let mut b = [0u8; 1];
        if client.read(&mut b).is_ok_and(|n| n > 0) {
            env.fail("the connection of before the checkpoint still answers");
        }
        thread::sleep(Duration::from_millis(300));
        client = redis_ping(env);
    }
    drop(client);
    r.finish();
}
