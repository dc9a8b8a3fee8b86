//! The coordinator and its clients against hostile peers and a hostile
//! filesystem: pre-authentication floods, arbitrary bytes, crafted names,
//! planted runtime directories and secret files, non-loopback listening.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dmtcp_coordinator::client::Connection;
use dmtcp_coordinator::protocol::*;

fn uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

fn is_root() -> bool {
    uid() == 0
}

/// A field of /proc/PID/status, in its unit (kB for VmRSS).
fn status_field(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    encode_frame(msg).unwrap()
}

/// Hundreds of connections that never authenticate (idle, slow, lying
/// about their length): the coordinator keeps a flat memory and thread
/// count, closes them after the handshake deadline, and a real client is
/// served all along.
#[test]
fn preauth_flood_keeps_memory_and_threads_flat() {
    let coord = Coord::start(&[], &[]);
    let pid = coord.child.id();
    let rss0 = status_field(pid, "VmRSS");
    let threads0 = status_field(pid, "Threads");
    let mut conns = Vec::new();
    for i in 0..600 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", coord.port)) else {
            continue;
        };
        match i % 3 {
            0 => {}                                               // idle
            1 => drop(s.write_all(&(16u32 << 20).to_le_bytes())), // 16 MiB promised
            _ => {
                // A plausible hello length, then a trickle.
                let _ = s.write_all(&500u32.to_le_bytes());
                let _ = s.write_all(&[0u8; 10]);
            }
        }
        conns.push(s);
        if i == 300 {
            let out = coord.command(&["-s"]);
            assert!(
                out.status.success(),
                "status during the flood: {}",
                text(&out.stderr)
            );
        }
    }
    let rss = status_field(pid, "VmRSS");
    let threads = status_field(pid, "Threads");
    eprintln!(
        "flood of {}: RSS {rss0} -> {rss} kB, threads {threads0} -> {threads}",
        conns.len()
    );
    assert!(rss < 64 * 1024, "RSS {rss} kB after the flood");
    assert!(threads <= threads0 + 2, "threads {threads0} -> {threads}");
    let out = coord.command(&["-s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Every flood connection is closed by the deadline (5 s) at the latest.
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in &mut conns {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // the refusal frame
            }
        }
    }
    assert!(
        Instant::now() < deadline,
        "flood connections still open after 10 s"
    );
    assert_eq!(
        status_field(pid, "Threads"),
        threads0,
        "threads after the flood"
    );
}

/// Mutated real frames and random bytes, before and after authentication:
/// the coordinator answers or closes, and keeps serving its computation.
#[test]
fn coordinator_survives_any_bytes() {
    let coord = Coord::start(&[], &[]);
    let sup = FakeSupervisor::start(&coord, 5, 1, Behavior::Good);
    let seeds = [
        frame(&ToCoordinator::Hello(hello(Role::Command, [3; 32]))),
        frame(&ToCoordinator::Hello(hello(
            Role::Supervisor(SupervisorHello {
                host: "h".into(),
                pid: 1,
                computation: Some("0123456789abcdef".into()),
                generation: 2,
            }),
            [4; 32],
        ))),
        frame(&ToCoordinator::Auth { proof: [5; 32] }),
        frame(&ToCoordinator::Request(Request::Status)),
        frame(&ToCoordinator::Processes(vec![ProcEntry {
            vpid: 1,
            host_pid: 2,
            prog: "p".into(),
            host: "h".into(),
        }])),
    ];
    let mut rng = Rng(0x5eed_dead_beef_0001);
    for round in 0..240 {
        let mut bytes = seeds[rng.below(seeds.len())].clone();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            1 => bytes.truncate(rng.below(bytes.len())),
            2 => {
                let n = rng.below(64);
                bytes = (0..n).map(|_| rng.next() as u8).collect();
            }
            _ => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
        }
        let post_auth = round % 3 == 0;
        let mut s = if post_auth {
            raw_authenticated(&coord, Role::Command)
        } else {
            raw(&coord)
        };
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    assert!(coord.child.id() > 0);
    let out = coord.command(&["-bc"]);
    assert!(
        out.status.success(),
        "checkpoint after the noise: {}",
        text(&out.stderr)
    );
    sup.expect("resume", |e| *e == Seen::Barrier(Phase::Resume));
}

/// A computation id that is not a plain name is refused by the coordinator
/// (it would name image files).
#[test]
fn crafted_computation_id_refused() {
    let coord = Coord::start(&[], &[]);
    let role = Role::Supervisor(SupervisorHello {
        host: "h".into(),
        pid: 9,
        computation: Some("x/../../rootonly/pwn".into()),
        generation: 0,
    });
    let err = Connection::connect(&coord.addr(), &coord.secret(), role).unwrap_err();
    assert!(err.to_string().contains("computation id"), "{err}");
}

/// The secret file is 0600 in a 0700 directory; the port file is 0600.
#[test]
fn runtime_files_are_private() {
    let coord = Coord::start(&[], &[]);
    let dir = coord.tmp.0.join(format!("dmtcp-{}", uid()));
    let m = std::fs::symlink_metadata(&dir).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o777, 0o700);
    for e in std::fs::read_dir(&dir).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
    }
    let pm = std::fs::metadata(coord.tmp.0.join("port")).unwrap();
    assert_eq!(pm.mode() & 0o777, 0o600);
    // The checkpoint dir it created: the owner's only.
    let cm = std::fs::metadata(&coord.ckpt_dir).unwrap();
    assert_eq!(cm.mode() & 0o777, 0o700);
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn coordinator(tmpdir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmtcp-coordinator"));
    cmd.args(args)
        .env("DMTCP_TMPDIR", tmpdir)
        .env_remove("DMTCP_SECRET")
        .env_remove("DMTCP_COORD_PORT")
        .env_remove("DMTCP_COORD_HOST")
        .env_remove("DMTCP_CHECKPOINT_DIR")
        .env_remove("DMTCP_CHECKPOINT_INTERVAL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// One stderr line naming `path`, non-zero exit.
fn assert_refused(what: &str, out: &std::process::Output, path: &Path) {
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!out.status.success(), "{what}: succeeded: {err}");
    assert_eq!(lines.len(), 1, "{what}: not one line: {err}");
    assert!(
        lines[0].contains(&path.display().to_string()),
        "{what}: does not name {}: {err}",
        path.display()
    );
}

/// A runtime directory that is not ours and private (mode 0777, a
/// symbolic link, owned by another user) is refused by the coordinator and
/// by dmtcp-command, with one line naming it.
#[test]
fn planted_runtime_dir_refused() {
    let tmp = TempDir::new("planted");
    let dir = tmp.0.join(format!("dmtcp-{}", uid()));
    let elsewhere = tmp.0.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    type Plant<'a> = Box<dyn Fn() + 'a>;
    let mut cases: Vec<(&str, Plant)> = vec![
        (
            "mode 0777",
            Box::new(|| {
                std::fs::create_dir(&dir).unwrap();
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            }),
        ),
        (
            "symbolic link",
            Box::new(|| std::os::unix::fs::symlink(&elsewhere, &dir).unwrap()),
        ),
    ];
    if is_root() {
        cases.push((
            "owned by uid 65534",
            Box::new(|| {
                std::fs::create_dir(&dir).unwrap();
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
                std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            }),
        ));
    }
    for (what, plant) in cases {
        plant();
        let out = coordinator(&tmp.0, &["--port", "0"]).output().unwrap();
        assert_refused(&format!("coordinator, {what}"), &out, &dir);
        assert!(
            text(&out.stderr).contains("refusing"),
            "{}",
            text(&out.stderr)
        );
        let out = run_command(&tmp.0, free_port(), &["-s"]);
        assert_refused(&format!("dmtcp-command, {what}"), &out, &dir);
        // Nothing was written into it.
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "{what}");
        let _ = std::fs::remove_file(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A symbolic link planted at the secret file's name is replaced, not
/// written through; a secret file that is not ours and private is not used.
#[test]
fn planted_secret_link_and_file() {
    let tmp = TempDir::new("secret");
    let dir = tmp.0.join(format!("dmtcp-{}", uid()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = tmp.0.join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let port = free_port();
    let secret = dir.join(format!("coord-127.0.0.1-{port}.secret"));
    std::os::unix::fs::symlink(&victim, &secret).unwrap();
    let mut child = coordinator(&tmp.0, &["--port", &port.to_string(), "--ckpt-dir", "/tmp"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::symlink_metadata(&secret).is_ok_and(|m| m.is_file()) {
        assert!(Instant::now() < deadline, "no secret file written");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    let m = std::fs::symlink_metadata(&secret).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    let out = run_command(&tmp.0, port, &["-s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = child.kill();
    let _ = child.wait();

    // A readable secret file (0644) is refused, whoever made it.
    let port2 = free_port();
    let planted = dir.join(format!("coord-127.0.0.1-{port2}.secret"));
    std::fs::write(&planted, b"guessable\n").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_command(&tmp.0, port2, &["-s"]);
    assert_refused("0644 secret file", &out, &planted);
    if is_root() {
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        let out = run_command(&tmp.0, port2, &["-s"]);
        assert_refused("secret file of uid 65534", &out, &planted);
        assert!(text(&out.stderr).contains("uid 65534"));
    }
}

/// Local address (hex "IP:PORT") of the socket listening on `port`, from
/// /proc/net/tcp.
fn listen_address(port: u16) -> Option<String> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (addr, p) = f.get(1)?.split_once(':')?;
        (u16::from_str_radix(p, 16).ok()? == port && f.get(3) == Some(&"0A"))
            .then(|| addr.to_string())
    })
}

/// Loopback unless told otherwise; any other address needs a secret.
#[test]
fn listens_on_loopback_unless_told() {
    let coord = Coord::start(&[], &[]);
    assert_eq!(listen_address(coord.port).as_deref(), Some("0100007F"));

    let tmp = TempDir::new("listen");
    let out = coordinator(&tmp.0, &["--port", "0", "--listen-host", "0.0.0.0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs DMTCP_SECRET"),
        "{}",
        text(&out.stderr)
    );
    let out = coordinator(&tmp.0, &["--port", "0", "--listen-host", "0.0.0.0"])
        .env("DMTCP_SECRET", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at least 16"),
        "{}",
        text(&out.stderr)
    );
    let port = free_port();
    let mut child = coordinator(
        &tmp.0,
        &["--port", &port.to_string(), "--listen-host", "0.0.0.0"],
    )
    .env("DMTCP_SECRET", "0123456789abcdef0123")
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        if let Some(a) = listen_address(port) {
            break a;
        }
        assert!(Instant::now() < deadline, "not listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(addr, "00000000");
}

/// Two-phase commit: no supervisor is told to commit until every one has
/// its images durable; one that never gets there fails the checkpoint and
/// the others drop theirs (Abort, never Commit).
#[test]
fn no_commit_until_every_image_is_durable() {
    let coord = Coord::start(&[("DMTCP_BARRIER_TIMEOUT", "1")], &[]);
    let good = FakeSupervisor::start(&coord, 21, 1, Behavior::Good);
    let slow = FakeSupervisor::start(&coord, 22, 1, Behavior::NoDurable);
    let out = coord.command(&["-bc"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("writing images timed out") && err.contains("pid 22"),
        "{err}"
    );
    good.expect("abort", |e| matches!(e, Seen::Abort(_)));
    slow.expect("abort", |e| matches!(e, Seen::Abort(_)));
    while let Ok(e) = good.events.try_recv() {
        assert_ne!(
            e,
            Seen::Commit,
            "commit sent although an image was not durable"
        );
    }
    // With both good, both commit and the checkpoint completes.
    drop(slow);
    let coord = Coord::start(&[], &[]);
    let a = FakeSupervisor::start(&coord, 31, 1, Behavior::Good);
    let b = FakeSupervisor::start(&coord, 32, 1, Behavior::Good);
    let out = coord.command(&["-bc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    a.expect("commit", |e| *e == Seen::Commit);
    b.expect("commit", |e| *e == Seen::Commit);
}
