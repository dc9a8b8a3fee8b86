//! What the connection side of the coordinator (`server`) and its state
//! machine (`state`) share: its configuration, connection numbers and the
//! events reader threads send. Both import this module; it imports neither.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use dmtcp_protocol::{Hello, ToCoordinator};

/// A connection's number, unique for the coordinator's lifetime.
pub type ConnId = u64;

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
    /// Handshake done (both sides proved the secret); `stream` is the
    /// connection's write side.
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

/// Variant name of a message, for logs and errors.
pub(crate) fn kind(msg: &ToCoordinator) -> &'static str {
    msg.kind()
}
