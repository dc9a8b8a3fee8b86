//! The supervisor: launches a computation in its own pid (and user)
//! namespace, freezes and captures its processes for checkpoints, restores
//! them at restart, and keeps the computation's link to the coordinator.
//!
//! Layers, each depending only on the ones above it in this list:
//! - [`kernel`]: the one kernel-facing layer (ptrace, `/proc`, remote
//!   syscalls, userfaultfd, raw socket calls, pid and address types). It
//!   holds most of the `unsafe` code and imports nothing else of this crate.
//! - [`resources`]: one module per kind of process state, capture and
//!   restore side by side.
//! - [`checkpoint`] and [`restart`]: the orchestrators that walk the kinds
//!   for one process (capture of a frozen process, restore of a shell).
//! - [`agent`]: the supervisor's side of the inject library's state page.
//! - [`roles`]: one module per process role (`dmtcp-run`, `dmtcp-restart`,
//!   the supervisor's session, `dmtcp-nsinit` as pid 1 of the namespace).
//!
//! docs/architecture.md has the map of every module.

pub mod agent;
pub mod checkpoint;
pub mod coord_args;
pub mod hooks;
pub mod kernel;
pub mod plugin_load;
pub mod resources;
pub mod restart;
pub mod roles;

/// Sets up `tracing` from `DMTCP_LOG` (default: warnings), to stderr.
pub fn init_logging() {
    dmtcp_coordinator::cli::init_logging()
}
