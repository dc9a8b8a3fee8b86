//! Wire protocol between the coordinator, supervisors and `dmtcp-command`.
pub mod messages;
pub use messages::*;
