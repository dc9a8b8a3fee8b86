//! The coordinator: drives checkpoint barriers across supervisors, answers
//! `dmtcp-command`, keeps the restart name service, writes the restart script.
//!
//! - [`client`][]: what supervisors and commands use to find, start and talk to a coordinator.
//! - [`server`][]: the coordinator itself (accept loop and per-connection reader threads).
//! - [`state`][]: the single thread that owns all coordinator state.
//! - [`script`][]: `dmtcp_restart_script.sh`.
pub mod cli;
pub mod client;
pub mod daemon;
pub mod script;
pub mod server;
pub mod state;

pub use dmtcp_protocol as protocol;

/// Writes `data` to `path` atomically (temp file in the same directory, then rename).
pub(crate) fn write_atomic(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// 64 random bits as 16 lowercase hex digits.
pub(crate) fn random_hex16() -> String {
    format!("{:016x}", rand::random::<u64>())
}
