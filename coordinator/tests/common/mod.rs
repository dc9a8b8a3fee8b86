//! Helpers: a real coordinator process on port 0, a fake supervisor speaking
//! the real protocol over TCP, and `dmtcp-command` runs with a watchdog.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dmtcp_coordinator::client::{read_secret, Connection, CoordAddr};
use dmtcp_coordinator::protocol::*;

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "dmtcp-coord-test-{tag}-{}-{:x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

pub struct Coord {
    pub child: Child,
    pub port: u16,
    pub tmp: TempDir,
    pub ckpt_dir: PathBuf,
}

impl Coord {
    pub fn start(extra_env: &[(&str, &str)], extra_args: &[&str]) -> Coord {
        let tmp = TempDir::new("coord");
        let ckpt_dir = tmp.0.join("ckpt");
        let port_file = tmp.0.join("port");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmtcp-coordinator"));
        cmd.args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--ckpt-dir")
            .arg(&ckpt_dir)
            .args(extra_args)
            .env("DMTCP_TMPDIR", &tmp.0)
            .env_remove("DMTCP_SECRET")
            .env_remove("DMTCP_COORD_PORT")
            .env_remove("DMTCP_COORD_HOST")
            .env_remove("DMTCP_CHECKPOINT_INTERVAL")
            .env_remove("DMTCP_CHECKPOINT_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn dmtcp-coordinator");
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                if let Ok(p) = s.trim().parse() {
                    break p;
                }
            }
            assert!(Instant::now() < deadline, "coordinator wrote no port file");
            std::thread::sleep(Duration::from_millis(10));
        };
        Coord {
            child,
            port,
            tmp,
            ckpt_dir,
        }
    }

    pub fn addr(&self) -> CoordAddr {
        CoordAddr {
            host: "127.0.0.1".into(),
            port: self.port,
        }
    }

    /// The secret, as a client finds it (the secret file under DMTCP_TMPDIR).
    pub fn secret(&self) -> String {
        let uid = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap();
        let f = self
            .tmp
            .0
            .join(format!("dmtcp-{uid}"))
            .join(format!("coord-127.0.0.1-{}.secret", self.port));
        std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
    }

    /// Runs dmtcp-command (or an alias) against this coordinator; killed after 30 s.
    pub fn command(&self, args: &[&str]) -> Output {
        run_command(&self.tmp.0, self.port, args)
    }

    /// Waits (at most `limit`) for the coordinator to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run_command(tmpdir: &Path, port: u16, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmtcp-command"))
        .args(["-p", &port.to_string()])
        .args(args)
        .env("DMTCP_TMPDIR", tmpdir)
        .env_remove("DMTCP_SECRET")
        .env_remove("DMTCP_COORD_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dmtcp-command");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "dmtcp-command {args:?} hung; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How a fake supervisor behaves in barriers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behavior {
    /// Reach every phase, write one image per process at CHECKPOINT.
    Good,
    /// Report CheckpointFailed at this phase.
    FailAt(Phase),
    /// Close the connection when this phase is announced.
    DisconnectAt(Phase),
    /// Never answer barriers.
    Silent,
    /// Reach every phase but never report the images durable.
    NoDurable,
}

/// What a fake supervisor saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Barrier(Phase),
    Abort(String),
    Kill,
    Halt,
    Commit,
    Done,
    Precopy(u64),
}

pub struct FakeSupervisor {
    pub pid: u32,
    pub events: Receiver<Seen>,
    pub thread: JoinHandle<()>,
    pub conn: Connection,
}

impl FakeSupervisor {
    /// Connects as a supervisor of `procs` processes and serves barriers in a thread.
    pub fn start(coord: &Coord, pid: u32, procs: u32, behavior: Behavior) -> FakeSupervisor {
        let role = Role::Supervisor(SupervisorHello {
            host: "fakehost".into(),
            pid,
            computation: None,
            generation: 0,
        });
        let secret = read_secret_for(coord);
        let (mut conn, welcome) =
            Connection::connect(&coord.addr(), &secret, role).expect("supervisor connect");
        assert!(
            matches!(welcome, FromCoordinator::Welcome { .. }),
            "{welcome:?}"
        );
        let list: Vec<ProcEntry> = (0..procs)
            .map(|i| ProcEntry {
                vpid: i + 1,
                host_pid: pid * 100 + i,
                prog: format!("prog{i}"),
                host: "fakehost".into(),
            })
            .collect();
        conn.send(&ToCoordinator::Processes(list.clone())).unwrap();
        // The coordinator reads each connection on its own: a command sent
        // right after this could be served before our list. Wait until
        // the list is in, as a real supervisor's processes are before
        // anyone can ask for them.
        if procs > 0 {
            let want = list[0].host_pid;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let listed =
                    match dmtcp_coordinator::client::request(&coord.addr(), &secret, Request::List)
                    {
                        Ok(Reply::List(l)) => l.iter().any(|p| p.host_pid == want),
                        Ok(Reply::Launches(l)) => l.iter().any(|p| p.process.host_pid == want),
                        _ => false,
                    };
                if listed {
                    break;
                }
                assert!(Instant::now() < deadline, "supervisor {pid}: never listed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let keep = conn.try_clone().unwrap();
        let (tx, events) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut images = Vec::new();
            loop {
                let msg = match conn.recv() {
                    Ok(m) => m,
                    Err(_) => {
                        let _ = tx.send(Seen::Done);
                        return;
                    }
                };
                match msg {
                    FromCoordinator::Barrier { phase, options } => {
                        let _ = tx.send(Seen::Barrier(phase));
                        match behavior {
                            Behavior::Silent => continue,
                            Behavior::DisconnectAt(p) if p == phase => {
                                conn.shutdown();
                                let _ = tx.send(Seen::Done);
                                return;
                            }
                            Behavior::FailAt(p) if p == phase => {
                                conn.send(&ToCoordinator::CheckpointFailed {
                                    id: options.id,
                                    reason: "disk full".into(),
                                })
                                .unwrap();
                                continue;
                            }
                            _ => {}
                        }
                        if phase == Phase::Checkpoint {
                            images.clear();
                            for p in &list {
                                let path = Path::new(&options.dir)
                                    .join(format!("ckpt_{}_{pid}_{}.dmtcp", p.prog, p.vpid));
                                std::fs::write(&path, b"image").unwrap();
                                images.push(ImageEntry {
                                    path: path.display().to_string(),
                                    vpid: p.vpid,
                                    prog: p.prog.clone(),
                                    host: p.host.clone(),
                                    size: 5,
                                });
                            }
                        }
                        conn.send(&ToCoordinator::Reached {
                            id: options.id,
                            phase,
                        })
                        .unwrap();
                        if phase == Phase::Resume && behavior != Behavior::NoDurable {
                            conn.send(&ToCoordinator::ImagesDurable {
                                id: options.id,
                                images: images.clone(),
                            })
                            .unwrap();
                        }
                    }
                    FromCoordinator::Commit { id } => {
                        let _ = tx.send(Seen::Commit);
                        conn.send(&ToCoordinator::ImagesWritten {
                            id,
                            images: images.clone(),
                        })
                        .unwrap();
                    }
                    FromCoordinator::Abort { reason, .. } => {
                        let _ = tx.send(Seen::Abort(reason));
                    }
                    FromCoordinator::Precopy { id } => {
                        let _ = tx.send(Seen::Precopy(id));
                    }
                    FromCoordinator::Halt => {
                        let _ = tx.send(Seen::Halt);
                        // A real supervisor stops its processes, then says so.
                        if behavior != Behavior::Silent {
                            conn.send(&ToCoordinator::Halted).unwrap();
                        }
                    }
                    FromCoordinator::Kill => {
                        let _ = tx.send(Seen::Kill);
                        // A real supervisor kills its processes, then leaves.
                        if behavior != Behavior::Silent {
                            conn.shutdown();
                            let _ = tx.send(Seen::Done);
                            return;
                        }
                    }
                    other => panic!("supervisor got {other:?}"),
                }
            }
        });
        FakeSupervisor {
            pid,
            events,
            thread,
            conn: keep,
        }
    }

    /// Waits up to 10 s for an event matching `pred`.
    pub fn expect(&self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(s) if pred(&s) => return s,
                Ok(_) => {}
                Err(e) => panic!("supervisor {}: no {what}: {e}", self.pid),
            }
        }
    }
}

pub fn read_secret_for(coord: &Coord) -> String {
    let _ = read_secret; // the lib reads it the same way, through DMTCP_TMPDIR
    coord.secret()
}

/// A raw TCP connection past the handshake (both sides authenticated).
pub fn raw_authenticated(coord: &Coord, role: Role) -> TcpStream {
    let s = raw(coord);
    let mut r = s.try_clone().unwrap();
    let mut w = s.try_clone().unwrap();
    let welcome = auth::client_handshake(&mut r, &mut w, &coord.secret(), role).unwrap();
    let _ = welcome;
    s
}

/// A raw TCP connection, for malformed-input tests.
pub fn raw(coord: &Coord) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", coord.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}
