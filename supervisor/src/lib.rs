//! The supervisor: launches a computation in its own pid (and user)
//! namespace, freezes and captures its processes for checkpoints, and keeps
//! the computation's link to the coordinator.
//!
//! Kernel-facing modules (`dirty`, `nsview`, `ptrace`, `pty`, `remote`, `spawn`, `sys`) hold the
//! `unsafe` code; the rest is ordinary Rust on top of them.

pub mod agent;
pub mod capture;
pub mod coord_args;
pub mod dirty;
pub mod fdrestore;
pub mod fdshare;
pub mod freeze;
pub mod incremental;
pub mod lazy;
pub mod locks;
pub mod mqueue;
pub mod netcapture;
pub mod netsys;
pub mod nsinit;
pub mod nsview;
pub mod pageread;
pub mod pid;
pub mod procfs;
pub mod ptrace;
pub mod pty;
pub mod remote;
pub mod run_cli;
pub mod session;
pub mod sockets;
pub mod sockrestore;
pub mod spawn;
pub mod supervise;
pub mod sys;
pub mod sysvipc;
pub mod uffd;
pub mod zombie;

/// Sets up `tracing` from `DMTCP_LOG` (default: warnings), to stderr.
pub fn init_logging() {
    dmtcp_coordinator::cli::init_logging()
}
