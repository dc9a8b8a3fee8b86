//! Incremental checkpoints on the supervisor's side: which image each
//! process's next image builds on, and which image files a restart of the
//! latest checkpoint still needs.
//!
//! Once incremental checkpoints are asked for (`--incremental` at launch or
//! restart, or on one `dmtcp-command --checkpoint`), every process is
//! tracked ([`DirtyTracker`]) and images are named with their generation,
//! so a new image never replaces the one it builds on. A chain is cut
//! (the image is a full one) every [`MAX_DEPTH`] images, when a process is
//! new or exec'd, and after any failed checkpoint: tracking restarts at
//! each freeze, so after a failure nothing vouches for the pages written
//! since the last durable image. Image files no longer needed by the
//! latest checkpoint are deleted once it is durable.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use dmtcp_image::ParentRef;

use crate::kernel::pid::HostPid;
use crate::resources::memory::capture::DirtyScan;
use crate::resources::memory::dirty::DirtyTracker;

/// Longest chain of images: the next one is full.
pub const MAX_DEPTH: usize = 8;

/// The last durable image of a process.
struct Base {
    parent: ParentRef,
    /// Its file and the files it builds on.
    chain: Vec<PathBuf>,
}

#[derive(Default)]
pub struct Chains {
    tracker: DirtyTracker,
    active: bool,
    bases: HashMap<HostPid, Base>,
    /// Files of the latest durable checkpoint and their ancestors.
    files: HashSet<PathBuf>,
}

/// What a capture decided about one image's chain.
#[derive(Debug, Clone, Default)]
pub struct ChainFiles {
    /// The image's own file and the files it builds on (empty when
    /// incremental checkpoints are off).
    pub files: Vec<PathBuf>,
}

impl Chains {
    /// Turns tracking on (for good) from this checkpoint on.
    pub fn activate(&mut self) {
        self.active = true;
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// The dirty tracker, for pre-copy (whether or not chains are on).
    pub fn tracker(&mut self) -> &mut DirtyTracker {
        &mut self.tracker
    }

    /// Forgets processes that are gone.
    pub fn retain(&mut self, alive: &[HostPid]) {
        self.tracker.retain(alive);
        self.bases.retain(|p, _| alive.contains(p));
    }

    /// The tracking handed to the capture of `pid`: with a parent image
    /// when `incremental` and the process has a short enough chain.
    pub fn scan_for(&mut self, pid: HostPid, incremental: bool) -> Option<DirtyScan<'_>> {
        if !self.active {
            return None;
        }
        let base = self
            .bases
            .get(&pid)
            .filter(|b| incremental && b.chain.len() < MAX_DEPTH)
            .map(|b| b.parent.clone());
        Some(DirtyScan {
            tracker: &mut self.tracker,
            base,
        })
    }

    /// Whether the next image of `pid` builds on a parent (what
    /// [`scan_for`](Self::scan_for) will decide).
    pub fn has_base(&self, pid: HostPid, incremental: bool) -> bool {
        self.active
            && incremental
            && self
                .bases
                .get(&pid)
                .is_some_and(|b| b.chain.len() < MAX_DEPTH)
    }

    /// The files of a new image at `path`, given the parent it names.
    pub fn chain_of(
        &self,
        pid: Option<HostPid>,
        path: &Path,
        parent: Option<&ParentRef>,
    ) -> ChainFiles {
        if !self.active {
            return ChainFiles::default();
        }
        let mut files = vec![path.to_path_buf()];
        if let (Some(parent), Some(base)) = (parent, pid.and_then(|p| self.bases.get(&p))) {
            debug_assert_eq!(&base.parent, parent);
            files.extend(base.chain.iter().cloned());
        }
        ChainFiles { files }
    }

    /// A checkpoint is durable: its images are the new bases, and files
    /// no image of it needs any more are deleted.
    pub fn committed(&mut self, images: &[(Option<HostPid>, u64, &ChainFiles)]) {
        if !self.active {
            return;
        }
        self.bases.clear();
        let mut files = HashSet::new();
        for (pid, generation, chain) in images {
            files.extend(chain.files.iter().cloned());
            let (Some(pid), Some(first)) = (pid, chain.files.first()) else {
                continue;
            };
            let Some(name) = first.file_name() else {
                continue;
            };
            self.bases.insert(
                *pid,
                Base {
                    parent: ParentRef {
                        file: name.to_string_lossy().into_owned(),
                        generation: *generation,
                    },
                    chain: chain.files.clone(),
                },
            );
        }
        for old in self.files.difference(&files) {
            if let Err(e) = std::fs::remove_file(old) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing the old image {}: {e}", old.display());
                }
            }
        }
        self.files = files;
    }

    /// A checkpoint failed after its freeze: the next images are full.
    pub fn abandon(&mut self) {
        self.bases.clear();
    }
}
