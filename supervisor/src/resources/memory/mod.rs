//! Memory: reading pages into the image ([`pageread`]), tracking written
//! pages for incremental checkpoints ([`dirty`], [`incremental`]) and
//! bringing pages in lazily at restart ([`lazy`], [`lazy_pages`]).

pub mod capture;
pub mod dirty;
pub mod incremental;
pub mod lazy;
pub mod lazy_pages;
pub mod pageread;
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
}
