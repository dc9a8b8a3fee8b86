//! Accepting connections and authenticating them; one reader thread per
//! authenticated connection.
//!
//! Until a client has proved it knows the secret ([`dmtcp_protocol::auth`])
//! it costs the coordinator no thread and little memory: one event loop
//! (`poll(2)`) accepts, reads the Hello and the Auth frame into a buffer of
//! at most [`MAX_PREAUTH_FRAME`] bytes, and drops a connection that takes
//! longer than [`HANDSHAKE_TIMEOUT`] in all. Connections being
//! authenticated are capped per peer address and in all: past a cap the
//! oldest one waiting is closed to make room (so a flood of idle
//! connections cannot lock out a client that authenticates at once).
//! Authenticated connections are capped in all; past that cap a new one is
//! refused.
//!
//! An authenticated connection gets a thread that turns each frame into an
//! [`Event`] on one channel. The [`State`] thread is the only owner of
//! coordinator state and the only writer after the handshake.

use std::collections::HashMap;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use dmtcp_protocol::auth::{self, Nonce, MAX_PREAUTH_FRAME};
use dmtcp_protocol::{
    check_hello, check_hello_prefix, decode_payload, encode_frame, read_frame, FromCoordinator,
    Hello, ProtocolError, ToCoordinator,
};

use crate::event::{kind, Config, ConnId, Event};
use crate::state::State;

/// How long a client may take to authenticate, from its connect.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections being authenticated, in all.
pub const MAX_PREAUTH: usize = 128;
/// Connections being authenticated from one peer address.
pub const MAX_PREAUTH_PER_PEER: usize = 16;
/// Authenticated connections (each has a thread), in all.
pub const MAX_CLIENTS: usize = 1024;
/// How long the coordinator waits for a peer to take a frame.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the coordinator on `listener` until a Quit request, or (with
/// `exit_on_last`) until the last supervisor has gone.
pub fn serve(listener: TcpListener, cfg: Config) {
    let (tx, rx) = mpsc::channel();
    let secret = cfg.secret.clone();
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || Gate::new(listener, secret, tx).run())
        .expect("spawning the accept thread");
    State::new(cfg).run(rx);
}

/// Where a connection being authenticated is.
enum Stage {
    /// Waiting for the Hello.
    Hello,
    /// Challenge sent; waiting for the client's proof.
    Auth { hello: Box<Hello>, nonce: Nonce },
}

/// A connection being authenticated.
struct Pending {
    conn: ConnId,
    stream: TcpStream,
    peer: IpAddr,
    /// The frame being read: its 4-byte length, then its payload; never
    /// more than `4 + MAX_PREAUTH_FRAME` bytes.
    buf: Vec<u8>,
    deadline: Instant,
    stage: Stage,
}

/// What to do with a pending connection after it was readable.
enum Step {
    Wait,
    Drop(Option<String>),
    Authenticated(Box<Hello>),
}

/// The accept and authentication loop.
struct Gate {
    listener: TcpListener,
    secret: String,
    tx: Sender<Event>,
    pending: Vec<Pending>,
    per_peer: HashMap<IpAddr, usize>,
    /// Authenticated connections whose reader thread still runs.
    clients: Arc<AtomicUsize>,
    next: ConnId,
}

impl Gate {
    fn new(listener: TcpListener, secret: String, tx: Sender<Event>) -> Gate {
        Gate {
            listener,
            secret,
            tx,
            pending: Vec::new(),
            per_peer: HashMap::new(),
            clients: Arc::new(AtomicUsize::new(0)),
            next: 1,
        }
    }

    fn run(mut self) {
        if let Err(e) = self.listener.set_nonblocking(true) {
            tracing::error!("cannot make the listening socket non-blocking: {e}");
            return;
        }
        loop {
            let now = Instant::now();
            let wait = self
                .pending
                .iter()
                .map(|p| p.deadline.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            let ms = wait.as_millis().clamp(1, 60_000) as u16;
            let ready: Vec<bool> = {
                let mut fds = Vec::with_capacity(1 + self.pending.len());
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                for p in &self.pending {
                    fds.push(PollFd::new(p.stream.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!("poll: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
                fds.iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            };
            // Walk the pending connections from the end so removal keeps
            // the indices of those not yet seen.
            for i in (0..self.pending.len()).rev() {
                let step = if ready[i + 1] {
                    self.readable(i)
                } else if Instant::now() >= self.pending[i].deadline {
                    Step::Drop(Some(format!(
                        "no authentication within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    )))
                } else {
                    Step::Wait
                };
                match step {
                    Step::Wait => {}
                    Step::Drop(why) => {
                        let p = self.remove(i);
                        if let Some(why) = why {
                            refuse(&p.stream, p.conn, &why);
                        }
                    }
                    Step::Authenticated(hello) => {
                        let p = self.remove(i);
                        self.admit(p, *hello);
                    }
                }
            }
            if ready[0] {
                self.accept_all();
            }
        }
    }

    fn remove(&mut self, i: usize) -> Pending {
        let p = self.pending.swap_remove(i);
        if let Some(n) = self.per_peer.get_mut(&p.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&p.peer);
            }
        }
        p
    }

    fn accept_all(&mut self) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: let the backlog wait a little.
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    return;
                }
            };
            let conn = self.next;
            self.next += 1;
            let ip = peer.ip();
            let from_peer = self.per_peer.get(&ip).copied().unwrap_or(0);
            // Past a cap, the oldest connection waiting (from this peer,
            // else from anyone) makes room: a flood of idle connections
            // cannot lock out a client that authenticates at once (every
            // local client shares the peer address 127.0.0.1).
            let peer_full = from_peer >= MAX_PREAUTH_PER_PEER;
            if peer_full || self.pending.len() >= MAX_PREAUTH {
                let oldest = self
                    .pending
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !peer_full || p.peer == ip)
                    .min_by_key(|(_, p)| p.deadline)
                    .map(|(i, _)| i);
                if let Some(i) = oldest {
                    let old = self.remove(i);
                    tracing::info!(
                        "connection {}: closed unauthenticated to make room (too many connections waiting)",
                        old.conn
                    );
                    let _ = old.stream.shutdown(Shutdown::Both);
                }
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            tracing::debug!("connection {conn} from {peer}");
            *self.per_peer.entry(ip).or_insert(0) += 1;
            self.pending.push(Pending {
                conn,
                stream,
                peer: ip,
                buf: Vec::with_capacity(64),
                deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                stage: Stage::Hello,
            });
        }
    }

    /// Reads what the connection has (never past the current frame) and
    /// advances its handshake.
    fn readable(&mut self, i: usize) -> Step {
        let p = &mut self.pending[i];
        loop {
            let want = if p.buf.len() < 4 {
                4
            } else {
                let len = u32::from_le_bytes(p.buf[..4].try_into().expect("4 bytes"));
                if len > MAX_PREAUTH_FRAME {
                    return Step::Drop(Some(format!(
                        "frame of {len} bytes before authentication (at most {MAX_PREAUTH_FRAME})"
                    )));
                }
                4 + len as usize
            };
            if p.buf.len() >= 4 && p.buf.len() == want {
                break;
            }
            let mut chunk = [0u8; 256];
            let room = (want - p.buf.len()).min(chunk.len());
            match p.stream.read(&mut chunk[..room]) {
                Ok(0) => return Step::Drop(None),
                Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Step::Drop(None),
            }
        }
        let payload = std::mem::take(&mut p.buf);
        let payload = &payload[4..];
        match &p.stage {
            Stage::Hello => {
                if let Err(why) = check_hello_prefix(payload) {
                    return Step::Drop(Some(why));
                }
                let hello = match decode_payload::<{ MAX_PREAUTH_FRAME as usize }, ToCoordinator>(
                    payload,
                ) {
                    Ok(ToCoordinator::Hello(h)) => h,
                    Ok(other) => {
                        return Step::Drop(Some(format!("expected hello, got {}", kind(&other))))
                    }
                    Err(e) => return Step::Drop(Some(format!("bad hello: {e}"))),
                };
                if let Err(why) = check_hello(&hello) {
                    return Step::Drop(Some(why));
                }
                let nonce = auth::fresh_nonce();
                let proof = auth::coordinator_proof(&self.secret, &hello, &nonce);
                if !send_small(&p.stream, &FromCoordinator::Challenge { nonce, proof }) {
                    return Step::Drop(None);
                }
                p.stage = Stage::Auth {
                    hello: Box::new(hello),
                    nonce,
                };
                Step::Wait
            }
            Stage::Auth { hello, nonce } => {
                let proof = match decode_payload::<{ MAX_PREAUTH_FRAME as usize }, ToCoordinator>(
                    payload,
                ) {
                    Ok(ToCoordinator::Auth { proof }) => proof,
                    Ok(other) => {
                        return Step::Drop(Some(format!(
                            "expected the client's proof, got {}",
                            kind(&other)
                        )))
                    }
                    Err(e) => return Step::Drop(Some(format!("bad proof: {e}"))),
                };
                if !auth::verify_client(&self.secret, hello, nonce, &proof) {
                    return Step::Drop(Some("wrong secret".into()));
                }
                let Stage::Auth { hello, .. } = std::mem::replace(&mut p.stage, Stage::Hello)
                else {
                    unreachable!("matched above")
                };
                Step::Authenticated(hello)
            }
        }
    }

    /// Hands an authenticated connection to its own reader thread.
    fn admit(&mut self, p: Pending, hello: Hello) {
        let Pending { conn, stream, .. } = p;
        if self.clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
            return refuse(
                &stream,
                conn,
                &format!("too many clients (at most {MAX_CLIENTS})"),
            );
        }
        if stream.set_nonblocking(false).is_err() {
            return;
        }
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let tx = self.tx.clone();
        let clients = self.clients.clone();
        clients.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{conn}"))
            .spawn(move || {
                connection(conn, stream, hello, tx);
                clients.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            self.clients.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("cannot start a thread for connection {conn}: {e}");
        }
    }
}

/// Writes a small frame to a non-blocking socket in one call; false if it
/// did not go out whole (a fresh socket's buffer always takes it).
fn send_small(stream: &TcpStream, msg: &FromCoordinator) -> bool {
    let Ok(bytes) = encode_frame(msg) else {
        return false;
    };
    let mut w = stream;
    matches!(w.write(&bytes), Ok(n) if n == bytes.len())
}

fn refuse(stream: &TcpStream, conn: ConnId, why: &str) {
    // Not a warning: anyone who can connect can make these.
    tracing::info!("connection {conn}: refused: {why}");
    let _ = send_small(stream, &FromCoordinator::Error(why.to_string()));
    let _ = stream.shutdown(Shutdown::Both);
}

/// The reader thread of an authenticated connection.
fn connection(conn: ConnId, stream: TcpStream, hello: Hello, tx: Sender<Event>) {
    let read_side = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return tracing::warn!("connection {conn}: cannot clone socket: {e}"),
    };
    let mut reader = BufReader::new(read_side);
    if tx
        .send(Event::Hello {
            conn,
            hello,
            stream,
        })
        .is_err()
    {
        return;
    }
    loop {
        let ev = match read_frame::<_, ToCoordinator>(&mut reader) {
            Ok(msg) => Event::Frame { conn, msg },
            Err(e @ (ProtocolError::Decode(_) | ProtocolError::TooLarge { .. })) => Event::Bad {
                conn,
                reason: e.to_string(),
            },
            Err(ProtocolError::Closed) => Event::Closed { conn },
            Err(e) => {
                tracing::debug!("connection {conn}: {e}");
                Event::Closed { conn }
            }
        };
        let last = !matches!(ev, Event::Frame { .. });
        if tx.send(ev).is_err() || last {
            return;
        }
    }
}
