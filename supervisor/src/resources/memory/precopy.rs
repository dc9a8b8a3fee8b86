//! Pre-copy (`DMTCP_PRECOPY=1`): a process's private memory is copied
//! into its image while it still runs, and only what it writes afterwards
//! is read while it is frozen.
//!
//! Before the freeze ([`precopy`]): the dirty tracker's asynchronous
//! write-protect userfaultfd ([`super::dirty`]) is armed on every private
//! mapping (its written bits reset), then every page worth saving is read
//! (`/proc/PID/mem`) into the image writer, the program running all
//! along. A page written after the arm, even while it was being read, has
//! its written bit set again.
//!
//! At the freeze ([`PreCopied::at_freeze`]): one `PAGEMAP_SCAN` lists the
//! pages written since the arm. A mapping found identical in
//! `/proc/PID/maps` keeps its pre-copied pages that were not written since
//! (their runs point into the blocks already in the image); everything else
//! (written pages, new, grown, moved or otherwise changed mappings) is read
//! at the freeze. When that residue is small, it is copied into our memory
//! while frozen and encoded after the thaw, with no snapshot fork; when it
//! is large, the copy-on-write snapshot child stands in for it as without
//! pre-copy. The image format is unchanged: a mapping's runs may simply
//! point into blocks written before the freeze, and a block may hold pages
//! no run points to any more (pre-copied, then written).

use std::io;
use std::os::fd::OwnedFd;

use dmtcp_image::{DataRef, ImageWriter, PageRun, PAGE_SIZE};

use crate::kernel::pid::HostPid;
use crate::kernel::procfs::{self, MapEntry, Mem, Pagemap};
use crate::resources::ghost::is_unlinked_mapping;
use crate::resources::memory::capture::{plan_vma, vm_flags_of, VmFlags};
use crate::resources::memory::dirty::DirtyTracker;
use crate::resources::memory::pageread;
use crate::resources::memory::ranges::{merge, subtract};

/// Largest residue (pages to read at the freeze) copied while frozen
/// without a snapshot fork. Copying runs at several GB/s: 32 MiB is a
/// few milliseconds, about what forking 128-256 MiB of 4 KiB pages costs.
pub const MAX_RESIDUE: u64 = 32 << 20;

/// [`MAX_RESIDUE`], or `DMTCP_PRECOPY_MAX_RESIDUE_MB` (0: always the
/// snapshot fork; tests use it to run both ways).
pub fn max_residue() -> u64 {
    std::env::var("DMTCP_PRECOPY_MAX_RESIDUE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(MAX_RESIDUE, |mb| mb << 20)
}

/// The largest mapping pre-copied (16 GiB of address space).
const LARGEST: u64 = 16 << 30;

/// One mapping copied while the program ran.
struct PreVma {
    m: MapEntry,
    /// The pages read (address, pages), address order.
    read: Vec<(u64, u64)>,
    /// Their non-zero pages as stored in the image.
    runs: Vec<PageRun>,
}

/// What the pre-copy pass left in the image writer.
pub struct PreCopied {
    /// Every mapping at the pass, with its VM flags.
    maps: Vec<MapEntry>,
    flags: VmFlags,
    vmas: Vec<PreVma>,
    /// Bytes read.
    pub bytes: u64,
}

/// The pre-copy pass over running `pid`, into `writer`. `uffd`: the
/// process's new userfaultfd when the tracker has none for it; `keep`:
/// incremental images are on (the tracker carries what it finds to the
/// freeze); `incremental`: this image will build on a parent, so pages
/// unchanged since it are not read.
pub fn precopy(
    pid: HostPid,
    tracker: &mut DirtyTracker,
    uffd: Option<OwnedFd>,
    keep: bool,
    incremental: bool,
    writer: &mut ImageWriter,
) -> io::Result<PreCopied> {
    let maps = procfs::maps(pid)?;
    let flags = procfs::vm_flags(pid)?;
    // Mappings of more than LARGEST (huge sparse `MAP_NORESERVE` ones) are
    // left out: arming the write-protect over terabytes of address space
    // costs far more than reading their few pages at the freeze.
    let pairs: Vec<(&MapEntry, &[String])> = maps
        .iter()
        .filter(|m| m.end - m.start <= LARGEST)
        .map(|m| (m, vm_flags_of(&flags, m)))
        .collect();
    let (tracked, since_freeze) = tracker.arm(pid, uffd, &pairs, keep)?;
    // An incremental image: pages unchanged since its parent so far are
    // not read (they stay the parent's unless written before the freeze).
    let since_freeze = since_freeze.filter(|_| incremental);
    let pagemap = Pagemap::open(pid)?;
    let mem = Mem::open(pid, false)?;
    let mut ranges = Vec::new();
    let mut chosen = Vec::new();
    for m in &maps {
        let inside = tracked.iter().any(|&(s, e)| s <= m.start && m.end <= e);
        if !inside || is_unlinked_mapping(&m.name, m.inode) {
            continue;
        }
        // The pages wanted now; a page populated later is read at the freeze.
        let unchanged = since_freeze.as_ref().map(|w| w.unchanged(m.start, m.end));
        let (r, _, _) = match plan_vma(
            chosen.len(),
            m,
            false,
            &pagemap,
            unchanged.as_deref(),
            None,
            None,
        ) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(
                    "pid {pid}: pre-copy skips {:#x}-{:#x} {}: {e}",
                    m.start,
                    m.end,
                    m.name
                );
                continue;
            }
        };
        chosen.push(PreVma {
            m: m.clone(),
            read: r.iter().map(|r| (r.addr, r.npages)).collect(),
            runs: Vec::new(),
        });
        ranges.extend(r);
    }
    let bytes = ranges.iter().map(|r| r.npages * PAGE_SIZE).sum();
    let src = Tolerant {
        mem: &mem,
        failed: std::sync::Mutex::new(Vec::new()),
    };
    let runs = pageread::read_into_image(&src, &ranges, chosen.len(), writer)?;
    let failed = src.failed.into_inner().unwrap_or_default();
    if !failed.is_empty() {
        tracing::debug!(
            "pid {pid}: pre-copy could not read {} range(s) (the program changed its mappings); read at the freeze",
            failed.len()
        );
    }
    for (v, r) in chosen.iter_mut().zip(runs) {
        v.runs = r;
        // Pages that could not be read count as not pre-copied.
        v.read = v
            .read
            .iter()
            .flat_map(|&(a, n)| cut(a, n, &failed))
            .collect();
    }
    Ok(PreCopied {
        maps,
        flags,
        vmas: chosen,
        bytes,
    })
}

/// Reads a running process: pages that cannot be read (a mapping
/// unmapped or moved meanwhile) are recorded and read as zeros; they are
/// not counted as pre-copied, so the freeze reads them.
struct Tolerant<'a> {
    mem: &'a Mem,
    failed: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl pageread::PageSource for Tolerant<'_> {
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.mem.read_pages(addr, buf).is_err() {
            buf.fill(0);
            if let Ok(mut f) = self.failed.lock() {
                f.push((addr, addr + buf.len() as u64));
            }
        }
        Ok(())
    }
}

/// The pages `(addr, npages)` less the byte ranges `failed`.
fn cut(addr: u64, npages: u64, failed: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let end = addr + npages * PAGE_SIZE;
    let mut from = addr;
    let mut hits: Vec<&(u64, u64)> = failed.iter().filter(|f| f.0 < end && f.1 > addr).collect();
    hits.sort_unstable();
    for &&(s, e) in &hits {
        let s = s.max(from) / PAGE_SIZE * PAGE_SIZE;
        if s > from {
            out.push((from, (s - from) / PAGE_SIZE));
        }
        from = from.max(e.next_multiple_of(PAGE_SIZE));
    }
    if from < end {
        out.push((from, (end - from) / PAGE_SIZE));
    }
    out
}

/// Pre-copied pages still good at the freeze, for one mapping.
#[derive(Debug, Clone)]
pub struct Reuse {
    /// The pages of the mapping read by the pre-copy and not written
    /// since: sorted, disjoint byte ranges `[start, end)`, page-aligned.
    pub clean: Vec<(u64, u64)>,
    /// The pre-copied runs (restricted to the pages kept by the caller).
    pub runs: Vec<PageRun>,
    /// The mapping's populated pages, found at the freeze by the walk
    /// that found the written ones (`None`: not walked then).
    pub populated: Option<Vec<(u64, u64)>>,
}

/// The pre-copy as seen at the freeze.
pub struct AtFreeze {
    pre: PreCopied,
    /// Pages written since the arm, sorted ranges.
    written: Vec<(u64, u64)>,
    /// What the freeze's walk found (the populated pages too).
    since: crate::resources::memory::dirty::SinceArm,
}

impl PreCopied {
    /// At the freeze of `pid`: which pre-copied pages were written since.
    pub fn at_freeze(self, pid: HostPid, tracker: &mut DirtyTracker) -> io::Result<AtFreeze> {
        let mut since = tracker.written_since_arm(pid)?;
        let written = std::mem::take(&mut since.written);
        Ok(AtFreeze {
            pre: self,
            written,
            since,
        })
    }
}

fn same(a: &MapEntry, b: &MapEntry) -> bool {
    a.start == b.start
        && a.end == b.end
        && a.prot() == b.prot()
        && a.shared == b.shared
        && a.offset == b.offset
        && a.dev == b.dev
        && a.inode == b.inode
        && a.name == b.name
}

/// The same object at the same place, maybe grown or shrunk (a heap, a
/// stack): its VM flags are those of the earlier one.
fn same_origin(a: &MapEntry, b: &MapEntry) -> bool {
    (a.start == b.start || a.end == b.end)
        && a.prot() == b.prot()
        && a.shared == b.shared
        && a.dev == b.dev
        && a.inode == b.inode
        && a.name == b.name
}

impl AtFreeze {
    /// The pre-copied pages of `m` still good, when `m` is unchanged.
    pub fn reuse(&self, m: &MapEntry) -> Option<Reuse> {
        let v = self.pre.vmas.iter().find(|v| same(&v.m, m))?;
        // Ranges, not a flag per page: a 4 GiB heap is a million pages,
        // and this runs while the program is frozen.
        let read: Vec<(u64, u64)> = v
            .read
            .iter()
            .map(|&(a, n)| (a.max(m.start), (a + n * PAGE_SIZE).min(m.end)))
            .filter(|(a, e)| a < e)
            .collect();
        let first = self.written.partition_point(|r| r.1 <= m.start);
        let written: Vec<(u64, u64)> = self.written[first..]
            .iter()
            .take_while(|r| r.0 < m.end)
            .map(|&(s, e)| (s.max(m.start), e.min(m.end)))
            .collect();
        Some(Reuse {
            clean: subtract(&merge(read), &written),
            runs: v.runs.clone(),
            populated: self.since.populated_in(m.start, m.end),
        })
    }

    /// An upper bound of the bytes a freeze must read: pages written since
    /// the arm inside unchanged pre-copied mappings, and every populated
    /// page of private mappings that are new or changed.
    pub fn residue(&self, maps: &[MapEntry], pagemap: &Pagemap) -> u64 {
        let mut bytes = 0;
        for m in maps {
            if m.shared {
                continue;
            }
            if self.pre.vmas.iter().any(|v| same(&v.m, m)) {
                let first = self.written.partition_point(|r| r.1 <= m.start);
                for &(s, e) in self.written[first..].iter().take_while(|r| r.0 < m.end) {
                    bytes += e.min(m.end) - s.max(m.start);
                }
            } else {
                bytes += match pagemap.populated(m.start, m.end) {
                    Ok(spans) => spans.iter().map(|(s, e)| e - s).sum(),
                    Err(_) => m.end - m.start,
                };
            }
        }
        bytes
    }

    /// The VM flags of `maps` from the pre-copy's smaps, when every
    /// mapping is one seen then (maybe grown or shrunk); `None`: a new
    /// mapping, whose flags must be read now.
    pub fn flags_for(&self, maps: &[MapEntry]) -> Option<VmFlags> {
        let mut out = Vec::with_capacity(maps.len());
        for m in maps {
            let old = self
                .pre
                .maps
                .iter()
                .find(|o| same(o, m))
                .or_else(|| self.pre.maps.iter().find(|o| same_origin(o, m)))?;
            out.push((m.start, vm_flags_of(&self.pre.flags, old).to_vec()));
        }
        Some(out)
    }
}

/// The runs of `runs` inside the page spans `keep` (address, pages), cut
/// where needed: a run's data reference moves with its first page.
pub fn restrict_runs(runs: &[PageRun], keep: &[(u64, u64)]) -> Vec<PageRun> {
    let mut out = Vec::new();
    for r in runs {
        let rend = r.addr + r.npages * PAGE_SIZE;
        let first = keep.partition_point(|&(a, n)| a + n * PAGE_SIZE <= r.addr);
        for &(a, n) in keep[first..].iter().take_while(|&&(a, _)| a < rend) {
            let s = a.max(r.addr);
            let e = (a + n * PAGE_SIZE).min(rend);
            if s >= e {
                continue;
            }
            out.push(PageRun {
                addr: s,
                npages: (e - s) / PAGE_SIZE,
                data: DataRef {
                    block: r.data.block,
                    offset: r.data.offset + (s - r.addr),
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cut_to_the_kept_pages() {
        let run = |addr, npages, block, offset| PageRun {
            addr,
            npages,
            data: DataRef { block, offset },
        };
        let runs = [run(0x1000, 4, 0, 0), run(0x8000, 2, 1, 0x2000)];
        let got = restrict_runs(&runs, &[(0x2000, 1), (0x4000, 5)]);
        let want = [
            run(0x2000, 1, 0, 0x1000),
            run(0x4000, 1, 0, 0x3000),
            run(0x8000, 1, 1, 0x2000),
        ];
        assert_eq!(
            cut(0x1000, 8, &[(0x3000, 0x4800), (0x8000, 0x9000)]),
            vec![(0x1000, 2), (0x5000, 3)]
        );
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.addr, g.npages, g.data.block, g.data.offset),
                (w.addr, w.npages, w.data.block, w.data.offset)
            );
        }
    }
}
