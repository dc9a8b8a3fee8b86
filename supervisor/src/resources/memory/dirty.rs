//! Which pages a process wrote since its previous checkpoint, for
//! incremental checkpoints.
//!
//! This kernel has no soft-dirty bits. Instead each tracked process gets a
//! userfaultfd in asynchronous write-protect mode (`UFFD_FEATURE_WP_ASYNC`):
//! the kernel resolves write faults on protected pages by itself, so the
//! program never waits, and only clears the page's write-protect bit.
//! At each freeze the `PAGEMAP_SCAN` ioctl on `/proc/PID/pagemap` lists the
//! pages whose bit is clear (`PAGE_IS_WRITTEN`) and protects them again in
//! the same walk (`PM_SCAN_WP_MATCHING`).
//!
//! The userfaultfd is created inside the process by an injected syscall
//! (it is bound to the caller's mm), copied here with `pidfd_getfd` and
//! closed in the process at once: the program never sees an extra fd. All
//! later ioctls (registering new mappings, scanning) work from here. A
//! mapping is only ever scanned if we registered it; pages outside ranges
//! registered before this freeze never count as unchanged.
//!
//! A registration can be lost while the program runs, and the kernel does
//! not say so: when a registered mapping is moved with `mremap` back next
//! to a registered neighbour it merges with (same flags, same
//! userfaultfd), the kernel drops the registration of the merged mapping,
//! since our userfaultfd does not take remap events, but leaves the
//! write-protect bits of the neighbour's pages. Writes there are then
//! ordinary write faults that keep the bit: the page looks unwritten. So
//! each freeze first asks which parts of the ranges it registered are no
//! longer registered (a `PAGEMAP_SCAN` for pages without
//! `PAGE_IS_WPALLOWED`, which skips registered mappings whole); those
//! count as written, and once registered again all their pages are
//! write-protected anew (`UFFDIO_WRITEPROTECT`).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::kernel::pid::HostPid;
use crate::kernel::procfs::MapEntry;
use crate::kernel::uffd::{self, UFFDIO_REGISTER_MODE_WP, UFFD_FEATURE_WP_ASYNC};
use crate::resources::memory::ranges::{intersect, merge};

/// `userfaultfd` flag: faults from user space only (what unprivileged
/// processes may ask for; asynchronous write-protect needs nothing more).
pub const UFFD_USER_MODE_ONLY: u64 = 1;
use crate::kernel::procfs::{
    PageRegion, PmScanArg, PAGEMAP_SCAN, PAGE_IS_PRESENT, PAGE_IS_SWAPPED,
};
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// The page's mapping is registered in asynchronous write-protect mode.
const PAGE_IS_WPALLOWED: u64 = 1 << 0;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

/// What one freeze learned about a process's memory.
#[derive(Debug, Default, Clone)]
pub struct Written {
    /// Ranges registered before this freeze: only pages inside them can
    /// have stayed unchanged. Sorted, disjoint.
    tracked: Vec<(u64, u64)>,
    /// Ranges written since the previous freeze. Sorted, disjoint.
    written: Vec<(u64, u64)>,
}

impl Written {
    /// Per page of `[start, end)`: whether it is unchanged since the
    /// previous checkpoint (tracked all along and not written).
    pub fn unchanged(&self, start: u64, end: u64) -> Vec<bool> {
        let n = ((end - start) / 4096) as usize;
        let mut out = vec![false; n];
        let mut mark = |ranges: &[(u64, u64)], v: bool| {
            let first = ranges.partition_point(|r| r.1 <= start);
            for &(s, e) in ranges[first..].iter().take_while(|r| r.0 < end) {
                let a = ((s.max(start) - start) / 4096) as usize;
                let b = ((e.min(end) - start) / 4096) as usize;
                out[a..b].fill(v);
            }
        };
        mark(&self.tracked, true);
        mark(&self.written, false);
        out
    }
}

/// What [`DirtyTracker::arm`] returns: the ranges now tracked, and what
/// is known since the last freeze so far (when kept).
pub type Armed = (Vec<(u64, u64)>, Option<Written>);

/// One tracked process.
struct Tracked {
    uffd: OwnedFd,
    /// Ranges registered with `uffd`, as the mappings were at the last freeze
    /// (or at the last pre-copy arm).
    registered: Vec<(u64, u64)>,
    /// What scans before the freeze (pre-copy, [`DirtyTracker::arm`]) found
    /// since the last freeze: the next [`DirtyTracker::scan`] adds it to its
    /// own, so that an incremental image still sees every page written
    /// since the previous checkpoint.
    carried: Option<Written>,
}

/// Dirty-page tracking for the processes of a computation.
#[derive(Default)]
pub struct DirtyTracker {
    procs: HashMap<HostPid, Tracked>,
}

/// Mappings worth tracking: private memory whose pages the image saves.
/// Shared memory is always saved whole; special mappings, hugetlb and
/// `MADV_DONTFORK`/`WIPEONFORK` ones are left alone.
fn trackable(m: &MapEntry, flags: &[String]) -> bool {
    // Not readable (`---p`: the gap between a library's text and data, a
    // guard, a reservation): nothing to pre-copy, and the write-protect
    // leaves markers in its empty page table entries that pagemap shows as
    // swapped pages, which the capture would then try to read (EIO).
    m.read
        && !m.shared
        && !matches!(
            m.name.as_str(),
            "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
        )
        && !flags
            .iter()
            .any(|f| matches!(f.as_str(), "io" | "pf" | "ht" | "dc" | "wf"))
}

impl DirtyTracker {
    /// Whether `pid` needs a new userfaultfd made at this freeze.
    pub fn needs_uffd(&self, pid: HostPid) -> bool {
        !self.procs.contains_key(&pid)
    }

    /// Forgets processes that are gone.
    pub fn retain(&mut self, alive: &[HostPid]) {
        self.procs.retain(|p, _| alive.contains(p));
    }

    /// Forgets `pid`: its next checkpoint is a full one.
    pub fn forget(&mut self, pid: HostPid) {
        self.procs.remove(&pid);
    }

    /// At a freeze of `pid`: registers mappings not yet tracked, and reads
    /// and resets the written pages of every tracked one. `uffd` is the
    /// process's new userfaultfd when [`needs_uffd`](Self::needs_uffd) said so.
    /// `maps` pairs each mapping with its `VmFlags`.
    pub fn scan(
        &mut self,
        pid: HostPid,
        uffd: Option<OwnedFd>,
        maps: &[(&MapEntry, &[String])],
    ) -> io::Result<Written> {
        if let Some(fd) = uffd {
            enable_wp_async(&fd)
                .map_err(|e| io::Error::new(e.kind(), format!("userfaultfd API: {e}")))?;
            self.procs.insert(
                pid,
                Tracked {
                    uffd: fd,
                    registered: Vec::new(),
                    carried: None,
                },
            );
        }
        let t = self
            .procs
            .get_mut(&pid)
            .ok_or_else(|| io::Error::other("process not tracked"))?;
        let before = std::mem::take(&mut t.registered);
        let pagemap = crate::kernel::procfs::Pagemap::open(pid)?;
        // Parts of the ranges registered at the last freeze that lost their
        // registration since (module docs): written, whatever their bits say.
        let mut lost = Vec::new();
        for &(s, e) in &before {
            unregistered(pagemap.file(), s, e, &mut lost).map_err(|err| scan_error(s, e, err))?;
        }
        let lost = merge(lost);
        let mut now = Vec::new();
        for (m, flags) in maps {
            if !trackable(m, flags) {
                continue;
            }
            // "uw": registered for write-protect. Ours only if inside a range
            // we registered; a program's own userfaultfd is left alone.
            // Without "uw" (flags not read from smaps at this freeze, see
            // `flags_from_snapshot`) the range is registered again: a no-op
            // for a range our userfaultfd holds, EBUSY for the program's own.
            let ours = flags.iter().any(|f| f == "uw")
                && before.iter().any(|&(s, e)| s <= m.start && m.end <= e);
            if !ours {
                if let Err(e) = register(&t.uffd, m.start, m.end - m.start) {
                    if e.raw_os_error() == Some(libc::ESRCH) {
                        // The mm the userfaultfd was made for is gone (exec).
                        self.procs.remove(&pid);
                        return Err(io::Error::new(
                            e.kind(),
                            "the process exec'd since it was tracked".to_string(),
                        ));
                    }
                    tracing::debug!(
                        "pid {pid}: not tracking {:#x}-{:#x} {}: {e}",
                        m.start,
                        m.end,
                        m.name
                    );
                    continue;
                }
            }
            now.push((m.start, m.end));
        }
        let now = merge(now);
        let mut written = Vec::new();
        if !lost.is_empty() {
            tracing::debug!(
                "pid {pid}: {} range(s) lost their write-protect registration since the last freeze",
                lost.len()
            );
            protect_again(&t.uffd, &intersect(&lost, &now))?;
            written.extend(lost);
        }
        for &(s, e) in &now {
            scan_and_protect(pagemap.file(), s, e, &mut written)
                .map_err(|err| scan_error(s, e, err))?;
        }
        let t = self.procs.get_mut(&pid).expect("tracked above");
        t.registered = now;
        let mut w = Written {
            tracked: merge(before),
            written: merge(written),
        };
        if let Some(c) = t.carried.take() {
            // Tracked since the previous freeze: what the earliest scan
            // since then called tracked; written: anything any scan saw.
            w.tracked = c.tracked;
            w.written.extend(c.written);
            w.written = merge(std::mem::take(&mut w.written));
        }
        Ok(w)
    }

    /// Pre-copy, while `pid` runs: registers and write-protects its
    /// trackable mappings (as [`scan`](Self::scan) does at a freeze) and
    /// returns the ranges now tracked (from here on every write into them
    /// is seen by [`written_since_arm`](Self::written_since_arm)) and, with
    /// `keep`, what is known since the last freeze so far. With
    /// `keep`, what this scan found is kept for the next `scan` (incremental
    /// images: the pages written before the arm are still new to the next
    /// image).
    pub fn arm(
        &mut self,
        pid: HostPid,
        uffd: Option<OwnedFd>,
        maps: &[(&MapEntry, &[String])],
        keep: bool,
    ) -> io::Result<Armed> {
        let earlier = self.procs.get_mut(&pid).and_then(|t| t.carried.take());
        let w = self.scan(pid, uffd, maps)?;
        let t = self.procs.get_mut(&pid).expect("tracked by scan");
        t.carried = keep.then(|| match earlier {
            Some(mut e) => {
                e.written.extend(w.written);
                e.written = merge(std::mem::take(&mut e.written));
                e
            }
            None => w,
        });
        Ok((t.registered.clone(), t.carried.clone()))
    }

    /// At the freeze after [`arm`](Self::arm): the pages written since,
    /// inside the ranges it returned, write-protected again. They are also
    /// carried to the next [`scan`](Self::scan) when the arm kept its own.
    /// The same walk finds the populated pages of those ranges
    /// ([`SinceArm::populated`]), which the capture would otherwise walk
    /// again while the program is frozen.
    pub fn written_since_arm(&mut self, pid: HostPid) -> io::Result<SinceArm> {
        let t = self
            .procs
            .get_mut(&pid)
            .ok_or_else(|| io::Error::other("process not tracked"))?;
        let pagemap = crate::kernel::procfs::Pagemap::open(pid)?;
        let mut written = Vec::new();
        let mut populated = Vec::new();
        let mut scanned = Vec::new();
        for &(s, e) in &t.registered {
            // What lost its registration since the arm (module docs), asked
            // before registering again: written, and protected anew.
            let mut lost = Vec::new();
            unregistered(pagemap.file(), s, e, &mut lost).map_err(|err| scan_error(s, e, err))?;
            // Registered again first: a no-op for the mappings the arm
            // registered; a mapping made since in their place is not ours
            // yet (the walk would skip it) and its pages become written.
            // A range no longer fully mapped counts as written whole.
            if let Err(err) = register(&t.uffd, s, e - s) {
                tracing::debug!("pid {pid}: {s:#x}-{e:#x} changed since the arm: {err}");
                written.push((s, e));
                continue;
            }
            if !lost.is_empty() {
                tracing::debug!(
                    "pid {pid}: {} range(s) in {s:#x}-{e:#x} lost their write-protect registration since the arm",
                    lost.len()
                );
                protect_again(&t.uffd, &lost)?;
                written.extend(lost);
            }
            walk(pagemap.file(), s, e, &mut written, Some(&mut populated))
                .map_err(|err| scan_error(s, e, err))?;
            scanned.push((s, e));
        }
        let written = merge(written);
        if let Some(c) = t.carried.as_mut() {
            c.written.extend(written.iter().copied());
            c.written = merge(std::mem::take(&mut c.written));
        }
        Ok(SinceArm {
            written,
            populated: merge(populated),
            scanned: merge(scanned),
        })
    }
}

/// What the freeze after a pre-copy's arm found.
#[derive(Debug, Default, Clone)]
pub struct SinceArm {
    /// Pages written since the arm (sorted, disjoint ranges).
    pub written: Vec<(u64, u64)>,
    /// Populated (present or swapped) pages inside `scanned`.
    pub populated: Vec<(u64, u64)>,
    /// The ranges walked (sorted, disjoint).
    pub scanned: Vec<(u64, u64)>,
}

impl SinceArm {
    /// The populated pages of `[start, end)` when the walk covered all of
    /// it.
    pub fn populated_in(&self, start: u64, end: u64) -> Option<Vec<(u64, u64)>> {
        let i = self.scanned.partition_point(|r| r.1 <= start);
        let covered = self
            .scanned
            .get(i)
            .is_some_and(|&(s, e)| s <= start && end <= e);
        if !covered {
            return None;
        }
        let first = self.populated.partition_point(|r| r.1 <= start);
        Some(
            self.populated[first..]
                .iter()
                .take_while(|r| r.0 < end)
                .map(|&(s, e)| (s.max(start), e.min(end)))
                .collect(),
        )
    }
}

fn enable_wp_async(uffd: &OwnedFd) -> io::Result<()> {
    uffd::api(uffd.as_raw_fd(), UFFD_FEATURE_WP_ASYNC)
}

fn register(fd: &OwnedFd, start: u64, len: u64) -> io::Result<()> {
    // The range is in the tracked process's mm (the userfaultfd's), not ours.
    uffd::register(fd.as_raw_fd(), start, len, UFFDIO_REGISTER_MODE_WP)
}

/// A failed `PAGEMAP_SCAN` of `[s, e)`, naming the range.
fn scan_error(s: u64, e: u64, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("PAGEMAP_SCAN {s:#x}-{e:#x}: {err}"))
}

/// Write-protects every page of `ranges` (registered just now after
/// losing their registration): pages written while unregistered may be
/// writable with their write-protect bit still set.
fn protect_again(uffd: &OwnedFd, ranges: &[(u64, u64)]) -> io::Result<()> {
    for &(s, e) in ranges {
        uffd::write_protect(uffd.as_raw_fd(), s, e - s).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("UFFDIO_WRITEPROTECT {s:#x}-{e:#x}: {err}"),
            )
        })?;
    }
    Ok(())
}

/// Appends the written ranges of `[start, end)` to `out` and write-protects
/// them again, in one walk (resumed when the result buffer fills up).
fn scan_and_protect(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    out: &mut Vec<(u64, u64)>,
) -> io::Result<()> {
    walk(pagemap, start, end, out, None)
}

/// Appends the parts of `[start, end)` whose mapping is not registered
/// with a write-protect userfaultfd (pages and holes alike) to `out`. A
/// registered mapping is skipped whole, without a look at its page
/// tables (a few microseconds per GiB).
fn unregistered(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    out: &mut Vec<(u64, u64)>,
) -> io::Result<()> {
    let q = Query {
        flags: 0,
        inverted: PAGE_IS_WPALLOWED,
        mask: PAGE_IS_WPALLOWED,
        anyof: 0,
        ret: PAGE_IS_WPALLOWED,
    };
    pm_scan(pagemap, start, end, q, |r| out.push((r.start, r.end)))
}

/// [`scan_and_protect`], and with `populated` the populated (present or
/// swapped) ranges too, from the same walk: every page written or
/// populated matches, and is write-protected (a page not written since it
/// was last protected is protected already).
fn walk(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    out: &mut Vec<(u64, u64)>,
    mut populated: Option<&mut Vec<(u64, u64)>>,
) -> io::Result<()> {
    let q = if populated.is_some() {
        let all = PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
        Query {
            flags: PM_SCAN_WP_MATCHING,
            inverted: 0,
            mask: 0,
            anyof: all,
            ret: all,
        }
    } else {
        Query {
            flags: PM_SCAN_WP_MATCHING,
            inverted: 0,
            mask: PAGE_IS_WRITTEN,
            anyof: 0,
            ret: PAGE_IS_WRITTEN,
        }
    };
    pm_scan(pagemap, start, end, q, |r| {
        if r.categories & PAGE_IS_WRITTEN != 0 {
            out.push((r.start, r.end));
        }
        if let Some(p) = populated.as_deref_mut() {
            if r.categories & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) != 0 {
                p.push((r.start, r.end));
            }
        }
    })
}

/// What one `PAGEMAP_SCAN` walk asks for (`struct pm_scan_arg`'s flags and
/// category masks).
#[derive(Clone, Copy)]
struct Query {
    flags: u64,
    inverted: u64,
    mask: u64,
    anyof: u64,
    ret: u64,
}

/// Walks `[start, end)` with `q`, handing each matching region to `each`
/// (resumed when the result buffer fills up).
fn pm_scan(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    q: Query,
    mut each: impl FnMut(&PageRegion),
) -> io::Result<()> {
    let mut regions = vec![PageRegion::default(); 1024];
    let mut from = start;
    while from < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: q.flags,
            start: from,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_inverted: q.inverted,
            category_mask: q.mask,
            category_anyof_mask: q.anyof,
            return_mask: q.ret,
            ..Default::default()
        };
        // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len`
        // page_region structs to `vec`, which points into `regions`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        regions[..n as usize].iter().for_each(&mut each);
        if arg.walk_end <= from {
            return Err(io::Error::other("the walk made no progress"));
        }
        from = arg.walk_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_means_tracked_and_not_written() {
        let w = Written {
            tracked: vec![(0x1000, 0x5000)],
            written: vec![(0x2000, 0x3000), (0x6000, 0x7000)],
        };
        assert_eq!(
            w.unchanged(0x0, 0x7000),
            vec![false, true, false, true, true, false, false]
        );
        assert_eq!(w.unchanged(0x3000, 0x4000), vec![true]);
        assert_eq!(merge(vec![(5, 6), (1, 2), (2, 4)]), vec![(1, 4), (5, 6)]);
    }
}
