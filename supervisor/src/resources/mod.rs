//! One module per kind of process state, each holding its capture (at
//! checkpoint) and its restore (at restart) side by side.

pub mod fds;
pub mod fdshare;
pub mod inet;
pub mod locks;
pub mod memory;
pub mod mqueue;
pub mod pty;
pub mod sysv;
pub mod threads;
pub mod tree;
pub mod unix;
