//! `dmtcp-restart`: recreates a checkpointed computation from its images.
//!
//! The images are fully validated first; then a fresh pid (and user)
//! namespace gets one parked shell per process with its original pid
//! (`dmtcp-nsinit`), each shell is turned into its process by [`restore`],
//! and the restarted computation is supervised exactly like a launched one.

pub mod cli;
pub mod lazy_pages;
pub mod restore;
pub mod sysv_attach;
pub mod thread_setup;
