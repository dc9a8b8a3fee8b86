//! The real coordinator binary on port 0, driven by fake supervisors and the
//! real `dmtcp-command` over TCP.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use dmtcp_coordinator::client::{request, Connection};
use dmtcp_coordinator::protocol::*;

#[test]
fn blocking_checkpoint_writes_images_and_restart_script() {
    let coord = Coord::start(&[], &[]);
    let a = FakeSupervisor::start(&coord, 11, 2, Behavior::Good);
    let b = FakeSupervisor::start(&coord, 12, 1, Behavior::Good);

    let out = coord.command(&["-bc"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout} stderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("checkpoint 1 done in "), "{stdout}");
    assert!(stdout.contains(": 3 image(s)"), "{stdout}");
    assert!(stdout.contains("ckpt_prog1_11_2.dmtcp"), "{stdout}");

    // Every phase was announced to both, in order.
    for s in [&a, &b] {
        for phase in Phase::ALL {
            s.expect("barrier", |e| *e == Seen::Barrier(phase));
        }
    }

    let script = coord.ckpt_dir.join("dmtcp_restart_script.sh");
    let meta = std::fs::metadata(&script).expect("restart script");
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let body = std::fs::read_to_string(&script).unwrap();
    assert!(body.starts_with("#!/bin/bash\n"));
    assert!(
        body.contains(&format!("DMTCP_COORD_PORT:-{}", coord.port)),
        "{body}"
    );
    assert!(body.contains("# Generation: 1"), "{body}");
    for img in ["ckpt_prog0_11_1", "ckpt_prog1_11_2", "ckpt_prog0_12_1"] {
        assert!(body.contains(&format!(
            "{}/{img}.dmtcp",
            coord.ckpt_dir.canonicalize().unwrap().display()
        )));
    }
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "restart script is not valid bash");

    let st = text(&coord.command(&["-s"]).stdout);
    assert!(st.contains("Generation: 1"), "{st}");
    assert!(st.contains("State: RUNNING"), "{st}");
    assert!(st.contains("Processes: 3"), "{st}");
    assert!(st.contains("Last images: 3"), "{st}");

    // A second checkpoint works too, and the non-blocking form answers at once.
    let out = coord.command(&["--checkpoint"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("checkpoint 2 started"),
        "{}",
        text(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(&coord.command(&["-s"]).stdout).contains("Generation: 2") {
        assert!(Instant::now() < deadline, "checkpoint 2 never completed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn list_and_status_output() {
    let coord = Coord::start(&[], &[]);
    let st = coord.command(&["--status"]);
    assert!(st.status.success());
    let s = text(&st.stdout);
    assert!(
        s.contains("Supervisors: 0") && s.contains("Computation: (none)"),
        "{s}"
    );

    let _a = FakeSupervisor::start(&coord, 21, 2, Behavior::Good);
    let out = coord.command(&["-l"]);
    assert!(out.status.success());
    let l = text(&out.stdout);
    let lines: Vec<&str> = l.lines().collect();
    assert_eq!(lines.len(), 3, "{l}");
    assert!(
        lines[0].contains("VPID") && lines[0].contains("HOST_PID") && lines[0].contains("PROGRAM")
    );
    assert!(
        lines[1].contains("2100") && lines[1].contains("prog0") && lines[1].contains("fakehost"),
        "{l}"
    );

    let s = text(&coord.command(&["-s"]).stdout);
    assert!(
        s.contains("Supervisors: 1") && s.contains("Processes: 2"),
        "{s}"
    );
    let comp = s.lines().find(|l| l.starts_with("Computation: ")).unwrap();
    assert_eq!(comp.len(), "Computation: ".len() + 16, "{comp}");

    let out = run_command(&coord.tmp.0, coord.port, &["-i", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The DMTCP-style alias binary answers too.
    let alias = std::process::Command::new(env!("CARGO_BIN_EXE_dmtcp_command"))
        .args(["-p", &coord.port.to_string(), "-s"])
        .env("DMTCP_TMPDIR", &coord.tmp.0)
        .env_remove("DMTCP_SECRET")
        .output()
        .unwrap();
    assert!(alias.status.success());
}

#[test]
fn supervisor_failure_fails_blocking_checkpoint() {
    let coord = Coord::start(&[], &[]);
    let good = FakeSupervisor::start(&coord, 31, 1, Behavior::Good);
    let _bad = FakeSupervisor::start(&coord, 32, 1, Behavior::FailAt(Phase::Drain));
    let out = coord.command(&["-bc"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("checkpoint 1 failed"), "{err}");
    assert!(
        err.contains("fakehost pid 32") && err.contains("disk full"),
        "{err}"
    );
    let abort = good.expect("abort", |e| matches!(e, Seen::Abort(_)));
    assert!(matches!(abort, Seen::Abort(r) if r.contains("disk full")));
    assert!(!coord.ckpt_dir.join("dmtcp_restart_script.sh").exists());
    let s = text(&coord.command(&["-s"]).stdout);
    assert!(
        s.contains("State: RUNNING") && s.contains("Generation: 0"),
        "{s}"
    );
}

#[test]
fn supervisor_disconnect_mid_barrier_fails_without_hanging() {
    let coord = Coord::start(&[], &[]);
    let good = FakeSupervisor::start(&coord, 41, 1, Behavior::Good);
    let _gone = FakeSupervisor::start(
        &coord,
        42,
        1,
        Behavior::DisconnectAt(Phase::FdLeaderElection),
    );
    let t = Instant::now();
    let out = coord.command(&["-bc"]);
    assert!(t.elapsed() < Duration::from_secs(10));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("fakehost pid 42 disconnected during barrier FD_LEADER_ELECTION"),
        "{err}"
    );
    good.expect("abort", |e| matches!(e, Seen::Abort(_)));
    // The remaining supervisor can still be checkpointed.
    let out = coord.command(&["-bc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 image(s)"));
}

#[test]
fn barrier_timeout_fails_checkpoint() {
    let coord = Coord::start(&[("DMTCP_BARRIER_TIMEOUT", "1")], &[]);
    let _silent = FakeSupervisor::start(&coord, 51, 1, Behavior::Silent);
    let out = coord.command(&["-bc"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "barrier SUSPEND timed out after 1 s waiting for supervisor on fakehost pid 51"
        ),
        "{err}"
    );
}

#[test]
fn checkpoint_without_processes_fails() {
    let coord = Coord::start(&[], &[]);
    let out = coord.command(&["-bc"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no processes to checkpoint"));
}

#[test]
fn second_checkpoint_while_running_is_refused() {
    let coord = Coord::start(&[], &[]);
    let s = FakeSupervisor::start(&coord, 55, 1, Behavior::Silent);
    let r = request(
        &coord.addr(),
        &coord.secret(),
        Request::Checkpoint {
            blocking: false,
            incremental: false,
        },
    )
    .unwrap();
    assert_eq!(
        r,
        Reply::Started {
            id: 1,
            generation: 1
        }
    );
    s.expect("suspend", |e| *e == Seen::Barrier(Phase::Suspend));
    let r = request(
        &coord.addr(),
        &coord.secret(),
        Request::Checkpoint {
            blocking: true,
            incremental: false,
        },
    )
    .unwrap();
    assert_eq!(
        r,
        Reply::Error("checkpoint 1 is already in progress".into())
    );
    let s2 = text(&coord.command(&["-s"]).stdout);
    assert!(s2.contains("State: SUSPEND"), "{s2}");
}

#[test]
fn malformed_frames_get_an_error_and_others_are_served() {
    let coord = Coord::start(&[], &[]);
    let sup = FakeSupervisor::start(&coord, 61, 1, Behavior::Good);

    // Garbage instead of a hello.
    let mut s = raw(&coord);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    match read_frame::<_, FromCoordinator>(&mut s) {
        Ok(FromCoordinator::Error(e)) => assert!(e.contains("before authentication"), "{e}"),
        other => panic!("{other:?}"),
    }

    // A good hello, then a frame that does not decode.
    let mut s = raw_authenticated(&coord, Role::Command);
    s.write_all(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    match read_frame::<_, FromCoordinator>(&mut s) {
        Ok(FromCoordinator::Error(e)) => assert!(e.contains("malformed frame"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        read_frame::<_, FromCoordinator>(&mut s),
        Err(ProtocolError::Closed) | Err(ProtocolError::Io(_))
    ));

    // An oversized length.
    let mut s = raw_authenticated(&coord, Role::Command);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    match read_frame::<_, FromCoordinator>(&mut s) {
        Ok(FromCoordinator::Error(e)) => assert!(e.contains("exceeds the limit"), "{e}"),
        other => panic!("{other:?}"),
    }

    // A command may not pretend to be a supervisor.
    let mut s = raw_authenticated(&coord, Role::Command);
    write_frame(
        &mut s,
        &ToCoordinator::Reached {
            id: 1,
            phase: Phase::Suspend,
        },
    )
    .unwrap();
    assert!(matches!(
        read_frame::<_, FromCoordinator>(&mut s),
        Ok(FromCoordinator::Error(_))
    ));

    // Wrong secret: the client sees the coordinator does not prove ours
    // and sends nothing more; a client proof made with a wrong secret is
    // refused by the coordinator.
    let err = Connection::connect(&coord.addr(), "nope", Role::Command).unwrap_err();
    assert!(err.to_string().contains("did not prove"), "{err}");
    let mut s = raw(&coord);
    let h = hello(Role::Command, auth::fresh_nonce());
    write_frame(&mut s, &ToCoordinator::Hello(h.clone())).unwrap();
    let Ok(FromCoordinator::Challenge { nonce, .. }) = read_frame::<_, FromCoordinator>(&mut s)
    else {
        panic!("no challenge")
    };
    let proof = auth::client_proof("nope", &h, &nonce);
    write_frame(&mut s, &ToCoordinator::Auth { proof }).unwrap();
    match read_frame::<_, FromCoordinator>(&mut s) {
        Ok(FromCoordinator::Error(e)) => assert!(e.contains("wrong secret"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Wrong version.
    let mut s = raw(&coord);
    let mut h = hello(Role::Command, auth::fresh_nonce());
    h.major = 9;
    h.minor = 0;
    write_frame(&mut s, &ToCoordinator::Hello(h)).unwrap();
    match read_frame::<_, FromCoordinator>(&mut s) {
        Ok(FromCoordinator::Error(e)) => assert!(e.contains("protocol version 9.0"), "{e}"),
        other => panic!("{other:?}"),
    }

    // Everyone else is still served.
    let out = coord.command(&["-bc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    sup.expect("resume", |e| *e == Seen::Barrier(Phase::Resume));
}

#[test]
fn port_in_use_is_one_line_error() {
    let coord = Coord::start(&[], &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dmtcp-coordinator"))
        .args(["--port", &coord.port.to_string()])
        .env("DMTCP_TMPDIR", &coord.tmp.0)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("dmtcp-coordinator: port {} is already in use\n", coord.port)
    );
    // The running coordinator is unharmed (its secret file too).
    assert!(coord.command(&["-s"]).status.success());
}

#[test]
fn no_coordinator_is_one_line_error() {
    let tmp = TempDir::new("nocoord");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run_command(&tmp.0, port, &["-s"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!("dmtcp-command: no coordinator at 127.0.0.1:{port} (connection refused)\n")
    );
}

#[test]
fn name_service_publish_and_query() {
    let coord = Coord::start(&[], &[]);
    let role = |pid| {
        Role::Supervisor(SupervisorHello {
            host: "h".into(),
            pid,
            computation: None,
            generation: 0,
        })
    };
    let (mut a, _) = Connection::connect(&coord.addr(), &coord.secret(), role(71)).unwrap();
    let (mut b, _) = Connection::connect(&coord.addr(), &coord.secret(), role(72)).unwrap();
    a.send(&ToCoordinator::Publish {
        key: b"tcp:1".to_vec(),
        value: b"10.0.0.1:5000".to_vec(),
    })
    .unwrap();
    // Queries on `a` are ordered after its publish; ask there first.
    a.send(&ToCoordinator::Query {
        key: b"tcp:1".to_vec(),
    })
    .unwrap();
    let _ = a.recv().unwrap();
    b.send(&ToCoordinator::Query {
        key: b"tcp:1".to_vec(),
    })
    .unwrap();
    assert_eq!(
        b.recv().unwrap(),
        FromCoordinator::Published {
            key: b"tcp:1".to_vec(),
            value: Some(b"10.0.0.1:5000".to_vec())
        }
    );
    b.send(&ToCoordinator::Query {
        key: b"nope".to_vec(),
    })
    .unwrap();
    assert_eq!(
        b.recv().unwrap(),
        FromCoordinator::Published {
            key: b"nope".to_vec(),
            value: None
        }
    );
}

#[test]
fn restarting_supervisor_brings_computation_and_generation() {
    let coord = Coord::start(&[], &[]);
    let role = Role::Supervisor(SupervisorHello {
        host: "h".into(),
        pid: 81,
        computation: Some("00112233aabbccdd".into()),
        generation: 7,
    });
    let (_c, welcome) = Connection::connect(&coord.addr(), &coord.secret(), role).unwrap();
    match welcome {
        FromCoordinator::Welcome {
            computation,
            generation,
            ckpt_dir,
        } => {
            assert_eq!(computation, "00112233aabbccdd");
            assert_eq!(generation, 7);
            assert_eq!(
                std::path::PathBuf::from(ckpt_dir),
                coord.ckpt_dir.canonicalize().unwrap()
            );
        }
        other => panic!("{other:?}"),
    }
    // Another computation is refused while this one is running.
    let other = Role::Supervisor(SupervisorHello {
        host: "h".into(),
        pid: 82,
        computation: Some("ffffffffffffffff".into()),
        generation: 1,
    });
    let err = Connection::connect(&coord.addr(), &coord.secret(), other).unwrap_err();
    assert!(
        err.to_string()
            .contains("runs computation 00112233aabbccdd"),
        "{err}"
    );
}

#[test]
fn kill_and_quit() {
    let mut coord = Coord::start(&[], &[]);
    let a = FakeSupervisor::start(&coord, 91, 1, Behavior::Good);
    // `-k` returns once the supervisor has left (its processes are gone).
    let out = coord.command(&["-k"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("has ended"),
        "{out:?}"
    );
    a.expect("halt", |e| *e == Seen::Halt);
    a.expect("kill", |e| *e == Seen::Kill);
    a.expect("left", |e| *e == Seen::Done);
    let b = FakeSupervisor::start(&coord, 92, 1, Behavior::Good);
    let out = coord.command(&["--quit"]);
    assert!(out.status.success());
    b.expect("kill", |e| *e == Seen::Kill);
    let st = coord
        .wait_exit(Duration::from_secs(5))
        .expect("coordinator did not quit");
    assert!(st.success());
    let secrets: Vec<_> = std::fs::read_dir(coord.tmp.0.join(format!("dmtcp-{}", nix_uid())))
        .unwrap()
        .collect();
    assert!(secrets.is_empty(), "secret files left behind: {secrets:?}");
}

/// 2.5: a kill stops every launch before it kills any. Each supervisor gets
/// `Halt`; `Kill` goes out only once every one has answered `Halted`, or,
/// when one does not answer, after a few seconds.
#[test]
fn kill_halts_every_supervisor_first() {
    let coord = Coord::start(&[], &[]);
    let a = FakeSupervisor::start(&coord, 93, 1, Behavior::Good);
    let b = FakeSupervisor::start(&coord, 94, 1, Behavior::Good);
    let out = coord.command(&["-k"]);
    assert!(out.status.success(), "{out:?}");
    for s in [&a, &b] {
        s.expect("halt", |e| *e == Seen::Halt);
        s.expect("kill", |e| *e == Seen::Kill);
    }
    // One that never answers the halt: the others wait for it, then all
    // are killed anyway.
    let c = FakeSupervisor::start(&coord, 95, 1, Behavior::Good);
    let d = FakeSupervisor::start(&coord, 96, 1, Behavior::Silent);
    let started = std::time::Instant::now();
    let port = coord.port;
    let tmp = coord.tmp.0.clone();
    let k = std::thread::spawn(move || common::run_command(&tmp, port, &["-k"]));
    c.expect("halt", |e| *e == Seen::Halt);
    d.expect("halt", |e| *e == Seen::Halt);
    c.expect("kill", |e| *e == Seen::Kill);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "killed before the silent supervisor's halt was waited for"
    );
    d.expect("kill", |e| *e == Seen::Kill);
    d.conn.shutdown();
    let out = k.join().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// 2.6: `dmtcp-command -bc --precopy` makes each supervisor hear
/// `Precopy` with the checkpoint's id before that checkpoint's Suspend
/// barrier; a plain `-bc` sends none.
#[test]
fn precopy_on_request() {
    let coord = Coord::start(&[], &[]);
    let a = FakeSupervisor::start(&coord, 97, 1, Behavior::Good);
    let out = coord.command(&["-bc", "--precopy"]);
    assert!(out.status.success(), "{out:?}");
    let first = a
        .events
        .recv_timeout(Duration::from_secs(10))
        .expect("an event");
    assert!(matches!(first, Seen::Precopy(_)), "{first:?}");
    a.expect("suspend", |e| *e == Seen::Barrier(Phase::Suspend));
    a.expect("commit", |e| *e == Seen::Commit);
    let out = coord.command(&["-bc"]);
    assert!(out.status.success(), "{out:?}");
    let next = a
        .events
        .recv_timeout(Duration::from_secs(10))
        .expect("an event");
    assert_eq!(next, Seen::Barrier(Phase::Suspend));
    let out = coord.command(&["-s", "--precopy"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--precopy goes with a checkpoint"),
        "{out:?}"
    );
}

#[test]
fn exit_on_last_supervisor() {
    let mut coord = Coord::start(&[], &["--exit-on-last"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        coord.child.try_wait().unwrap().is_none(),
        "exited before any supervisor"
    );
    let a = FakeSupervisor::start(&coord, 95, 1, Behavior::Good);
    a.conn.shutdown();
    assert!(
        coord.wait_exit(Duration::from_secs(5)).is_some(),
        "coordinator did not exit"
    );
}

#[test]
fn periodic_checkpoints() {
    let coord = Coord::start(&[], &["--interval", "1"]);
    let _a = FakeSupervisor::start(&coord, 97, 1, Behavior::Good);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !coord.ckpt_dir.join("dmtcp_restart_script.sh").exists() {
        assert!(Instant::now() < deadline, "no periodic checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(coord.command(&["-i", "0"]).status.success());
}

fn nix_uid() -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
}

/// 2.4 `RestartSetBarrier`: launch groups of one image set restarted by
/// separate `dmtcp-restart` commands (separate tokens) meet once their
/// processes add up to the set's size; a group that is done stays
/// counted; without a size each token's groups meet among themselves.
#[test]
fn restart_set_barrier_spans_separate_restarts() {
    let coord = Coord::start(&[], &[]);
    let join = |pid: u32| {
        let role = Role::Supervisor(SupervisorHello {
            host: "h".into(),
            pid,
            computation: Some("0123456789abcdef".into()),
            generation: 3,
        });
        let (c, _) = Connection::connect(&coord.addr(), &coord.secret(), role).unwrap();
        c.stream()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c
    };
    let at = |c: &mut Connection, token: &str, procs: u32, set: u32, b: Option<&str>| {
        c.send(&ToCoordinator::RestartSetBarrier {
            restart: token.into(),
            groups: 1,
            procs,
            set_size: set,
            barrier: b.map(str::to_string),
        })
        .unwrap();
    };
    let go = |c: &mut Connection, token: &str| match c.recv() {
        Ok(FromCoordinator::RestartGo { restart }) => assert_eq!(restart, token),
        other => panic!("expected RestartGo {token}: {other:?}"),
    };
    let nothing = |c: &mut Connection| {
        if let Ok(m) = c.recv() {
            panic!("unexpected {m:?}");
        }
    };
    // A set of 3 processes: a group of 1 (set size said), then one of 2
    // from another dmtcp-restart, and one of none (no plugins) done.
    let mut a = join(1);
    let mut b = join(2);
    let mut n = join(3);
    at(&mut a, "aaaa", 1, 3, Some("x"));
    at(&mut n, "nnnn", 0, 3, None);
    nothing(&mut a);
    at(&mut b, "bbbb", 2, 0, Some("x"));
    go(&mut a, "aaaa");
    go(&mut b, "bbbb");
    // The second barrier: b is done, a waits until then.
    at(&mut a, "aaaa", 1, 3, Some("y"));
    nothing(&mut a);
    at(&mut b, "bbbb", 2, 0, None);
    go(&mut a, "aaaa");
    at(&mut a, "aaaa", 1, 3, None);
    drop((a, b, n));
    // No size known: a token of 2 groups meets alone.
    let mut c = join(4);
    let mut d = join(5);
    let mut e = join(6);
    let two = |c: &mut Connection, token: &str, b: Option<&str>| {
        c.send(&ToCoordinator::RestartSetBarrier {
            restart: token.into(),
            groups: 2,
            procs: 1,
            set_size: 0,
            barrier: b.map(str::to_string),
        })
        .unwrap();
    };
    two(&mut c, "cccc", Some("x"));
    two(&mut e, "eeee", Some("x"));
    nothing(&mut c);
    two(&mut d, "cccc", Some("x"));
    go(&mut c, "cccc");
    go(&mut d, "cccc");
    nothing(&mut e);
}
