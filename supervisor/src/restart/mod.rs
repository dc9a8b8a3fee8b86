//! Restart of one process: turning a parked shell back into the
//! checkpointed process ([`process::restore_process`]), kind by kind.

pub mod creds;
pub mod process;
pub mod stop;
