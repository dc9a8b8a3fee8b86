//! Restart: turning parked shells back into the checkpointed processes.

pub mod process;
