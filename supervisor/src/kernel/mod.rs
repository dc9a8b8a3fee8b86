//! The kernel-facing layer: typed wrappers over ptrace, `/proc`, system
//! calls run inside a stopped process, userfaultfd and raw socket calls.
//!
//! Nothing here knows about images or resource kinds: this layer imports no
//! other module of the crate, and everything else builds on it.

pub mod freeze;
pub mod netsys;
pub mod nsview;
pub mod pid;
pub mod procfs;
pub mod ptrace;
pub mod remote;
pub mod seccomp;
pub mod sockdiag;
pub mod sys;
pub mod sysvuse;
pub mod tcpdiag;
pub mod uffd;
pub mod userns;
