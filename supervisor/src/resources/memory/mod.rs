//! Memory: reading pages into the image ([`pageread`]), tracking written
//! pages for incremental checkpoints ([`dirty`], [`incremental`]) and
//! bringing pages in lazily at restart ([`lazy`], [`lazy_pages`]).

pub mod capture;
pub mod dirty;
pub mod incremental;
pub mod lazy;
pub mod lazy_pages;
pub mod pageread;
pub mod precopy;
pub mod ranges;
pub mod restore;

use serde::{Deserialize, Serialize};

/// A shared memory object (shared anonymous memory, or the memfd named
/// `memfd`), mapped by nsinit at `addr` before the shells are forked; the
/// restorer moves pieces of it into place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParkedMemory {
    pub id: u64,
    pub addr: u64,
    pub size: u64,
    pub memfd: Option<String>,
    /// A file unlinked while mapped, last seen at this path.
    #[serde(default)]
    pub ghost: Option<String>,
}

/// The fd number a restart shell holds the unlinked file `id` at, until
/// the restorer has mapped it (private mappings need an fd): above every
/// fd of the process, one per parked unlinked file in the order of
/// `parked`. Both nsinit and the restorer compute it from the image.
pub fn ghost_shell_fd(
    fds: &[dmtcp_image::FdEntry],
    parked: &[ParkedMemory],
    id: u64,
) -> Option<i32> {
    let k = parked
        .iter()
        .filter(|o| o.ghost.is_some())
        .position(|o| o.id == id)?;
    Some(ghost_shell_base(fds) + k as i32)
}

/// The first fd number [`ghost_shell_fd`] uses.
pub fn ghost_shell_base(fds: &[dmtcp_image::FdEntry]) -> i32 {
    fds.iter().map(|e| e.fd).max().unwrap_or(2).max(2) + 1
}
