//! Accept loop and per-connection reader threads.
//!
//! Every connection gets a thread that reads and checks the handshake, then
//! turns each frame into an [`Event`] on one channel. The [`State`] thread is
//! the only owner of coordinator state and the only writer after the handshake.

use std::io::BufReader;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use dmtcp_protocol::{
    check_hello, read_frame, write_frame, FromCoordinator, Hello, ProtocolError, ToCoordinator,
};

use crate::state::State;

/// A connection's number, unique for the coordinator's lifetime.
pub type ConnId = u64;

/// How long a client may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the coordinator waits for a peer to take a frame.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the coordinator runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Port actually bound (written into the restart script).
    pub port: u16,
    /// Host the restart script connects to by default.
    pub script_host: String,
    /// Absolute checkpoint directory.
    pub ckpt_dir: PathBuf,
    /// Periodic checkpoint interval in seconds (0 = off).
    pub interval: u32,
    pub exit_on_last: bool,
    pub secret: String,
    /// Longest a single barrier may take before the checkpoint is abandoned.
    pub barrier_timeout: Duration,
    /// `dmtcp-restart` as the restart script should call it.
    pub restart_cmd: String,
}

/// What reader threads tell the state thread.
#[derive(Debug)]
pub enum Event {
    /// Handshake checked; `stream` is the connection's write side.
    Hello {
        conn: ConnId,
        hello: Hello,
        stream: TcpStream,
    },
    Frame {
        conn: ConnId,
        msg: ToCoordinator,
    },
    /// A frame that does not decode: answer with an error and close.
    Bad {
        conn: ConnId,
        reason: String,
    },
    Closed {
        conn: ConnId,
    },
}

/// Runs the coordinator on `listener` until a Quit request, or (with
/// `exit_on_last`) until the last supervisor has gone.
pub fn serve(listener: TcpListener, cfg: Config) {
    let (tx, rx) = mpsc::channel();
    let secret = cfg.secret.clone();
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(listener, secret, tx))
        .expect("spawning the accept thread");
    State::new(cfg).run(rx);
}

fn accept_loop(listener: TcpListener, secret: String, tx: Sender<Event>) {
    let mut next: ConnId = 1;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let conn = next;
        next += 1;
        let tx = tx.clone();
        let secret = secret.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{conn}"))
            .spawn(move || connection(conn, stream, &secret, tx));
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread for connection {conn}: {e}");
        }
    }
}

fn refuse(stream: &TcpStream, conn: ConnId, why: String) {
    tracing::warn!("connection {conn}: refused: {why}");
    let mut w = stream;
    let _ = write_frame(&mut w, &FromCoordinator::Error(why));
    let _ = stream.shutdown(Shutdown::Both);
}

fn connection(conn: ConnId, stream: TcpStream, secret: &str, tx: Sender<Event>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::debug!("connection {conn} from {peer}");
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
    let read_side = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return tracing::warn!("connection {conn}: cannot clone socket: {e}"),
    };
    let mut reader = BufReader::new(read_side);
    let hello = match read_frame::<_, ToCoordinator>(&mut reader) {
        Ok(ToCoordinator::Hello(h)) => h,
        Ok(other) => {
            return refuse(
                &stream,
                conn,
                format!("expected hello, got {}", kind(&other)),
            )
        }
        Err(ProtocolError::Closed) => return,
        Err(e) => return refuse(&stream, conn, format!("bad hello: {e}")),
    };
    if let Err(why) = check_hello(&hello, secret) {
        return refuse(&stream, conn, why);
    }
    let _ = stream.set_read_timeout(None);
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

/// Variant name of a message, for logs and errors.
pub(crate) fn kind(msg: &ToCoordinator) -> &'static str {
    match msg {
        ToCoordinator::Hello(_) => "Hello",
        ToCoordinator::Request(_) => "Request",
        ToCoordinator::Processes(_) => "Processes",
        ToCoordinator::Reached { .. } => "Reached",
        ToCoordinator::ImagesWritten { .. } => "ImagesWritten",
        ToCoordinator::CheckpointFailed { .. } => "CheckpointFailed",
        ToCoordinator::Publish { .. } => "Publish",
        ToCoordinator::Query { .. } => "Query",
        ToCoordinator::Exited { .. } => "Exited",
    }
}
