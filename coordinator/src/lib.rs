//! The coordinator: drives checkpoint barriers across supervisors, answers
//! `dmtcp-command`, keeps the restart name service, writes the restart script.
//!
//! - [`client`][]: what supervisors and commands use to find, start and talk to a coordinator.
//! - [`server`][]: the coordinator itself (one event loop for unauthenticated
//!   connections, a reader thread per authenticated one).
//! - [`state`][]: the single thread that owns all coordinator state.
//! - [`script`][]: `dmtcp_restart_script.sh`.
pub mod cli;
pub mod client;
pub mod daemon;
pub mod event;
pub mod script;
pub mod server;
pub mod state;

pub use dmtcp_protocol as protocol;

/// Writes `data` to `path` atomically, created exclusively under a random
/// name and renamed into place (see [`dmtcp_protocol::runtime::write_private`]).
pub use dmtcp_protocol::runtime::write_private;

/// 64 random bits as 16 lowercase hex digits.
pub(crate) fn random_hex16() -> String {
    format!("{:016x}", rand::random::<u64>())
}
