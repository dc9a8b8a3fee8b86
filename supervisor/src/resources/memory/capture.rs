//! Capture of memory: which mappings a process has and which of their
//! pages are saved (pagemap, dirty-page tracking for incremental images),
//! read now or after the thaw from a copy-on-write snapshot child.

use std::io;
use std::os::fd::OwnedFd;

use dmtcp_image::{ImageWriter, PageSpan, ParentRef, ProcessImage, Vma, VmaKind, PAGE_SIZE};

use crate::kernel::pid::HostPid;
use crate::kernel::procfs::{self, MapEntry, Mem, Pagemap};
use crate::kernel::ptrace;
use crate::resources::fdshare::FdContext;
use crate::resources::ghost::{ghost_id, is_unlinked_mapping};
use crate::resources::memfd::memfd_name;
use crate::resources::memory::dirty::{DirtyTracker, Written};
use crate::resources::memory::pageread;
use crate::resources::memory::precopy::{restrict_runs, AtFreeze, Reuse};
use crate::resources::memory::ranges::{intersect, merge, subtract};

/// Dirty-page tracking for one capture (incremental checkpoints).
pub struct DirtyScan<'a> {
    pub tracker: &'a mut DirtyTracker,
    /// The image to build on; `None` makes a full image (tracking still
    /// restarts from this checkpoint).
    pub base: Option<ParentRef>,
}

pub(crate) fn vma_kind(m: &MapEntry) -> VmaKind {
    match m.name.as_str() {
        "[vdso]" => VmaKind::Vdso,
        "[vvar]" => VmaKind::Vvar,
        "[vvar_vclock]" => VmaKind::VvarVclock,
        "[vsyscall]" => VmaKind::Vsyscall,
        "/dev/zero (deleted)" if m.shared => VmaKind::SharedAnon {
            id: m.inode,
            offset: m.offset,
        },
        n if n.starts_with("/memfd:") && n.ends_with(" (deleted)") => VmaKind::Memfd {
            id: m.inode,
            name: memfd_name(n).to_string(),
            offset: m.offset,
        },
        // SysV shared memory: the kernel uses the shmid as the inode number.
        n if m.shared && n.starts_with("/SYSV") && n.ends_with(" (deleted)") => VmaKind::SysvShm {
            id: m.inode as i32,
            offset: m.offset,
        },
        // A file unlinked while mapped: rebuilt at restart.
        n if is_unlinked_mapping(n, m.inode) => VmaKind::Ghost {
            id: ghost_id(m.inode),
            path: n.trim_end_matches(" (deleted)").to_string(),
            offset: m.offset,
        },
        n if m.inode != 0 && n.starts_with('/') => VmaKind::File {
            path: n.trim_end_matches(" (deleted)").to_string(),
            offset: m.offset,
            dev: m.dev,
            inode: m.inode,
        },
        "" => VmaKind::Anon { name: None },
        n => VmaKind::Anon {
            name: Some(n.to_string()),
        },
    }
}

/// A shared mapping of a POSIX shared memory file (`/dev/shm`, e.g. Open
/// MPI's vader segments): its pages are saved like shared memory (the file
/// outlives the killed computation, which kept writing it after the
/// checkpoint) and written back into the file at restart, zero pages
/// included.
pub(crate) fn shm_file(m: &MapEntry) -> bool {
    m.shared && m.inode != 0 && m.name.starts_with("/dev/shm/") && !m.name.ends_with(" (deleted)")
}

/// Which pages of a mapping must be saved, by pagemap.
/// `object`: a shared memory object whose pages are saved with the mapping
/// (shared anonymous memory, a memfd no fd holds).
pub(crate) fn wanted(m: &MapEntry, entry: u64, object: bool) -> bool {
    let populated = entry & (procfs::PM_PRESENT | procfs::PM_SWAPPED) != 0;
    if !populated {
        return false;
    }
    let file_backed = m.inode != 0 && !object;
    if file_backed {
        // Shared file pages live in the file; private ones only when COW'd
        // (an anonymous copy: present but not a file page).
        !m.shared && entry & procfs::PM_FILE_OR_SHARED == 0
    } else {
        true
    }
}

/// Mappings at least this large are walked with `PAGEMAP_SCAN` for their
/// populated ranges before pagemap is read (16 MiB: 32 KiB of pagemap).
const SCAN_ABOVE: u64 = 16 << 20;

/// Which pages of one mapping are saved (`vma` is its index in the
/// image), from pagemap: the ranges to read, and with `unchanged` (per
/// page, incremental images) the spans left to the parent image.
/// With `clean` (pre-copy), the wanted pages it marks are not read: they
/// are returned as spans (address, pages) kept from the pre-copy.
pub(crate) fn plan_vma(
    vma: usize,
    m: &MapEntry,
    object: bool,
    pagemap: &Pagemap,
    unchanged: Option<&[bool]>,
    clean: Option<&[(u64, u64)]>,
    populated_known: Option<&[(u64, u64)]>,
) -> io::Result<PlannedVma> {
    let mut kept: Vec<(u64, u64)> = Vec::new();
    let mut from_parent: Vec<PageSpan> = Vec::new();
    let mut ranges: Vec<pageread::Range> = Vec::new();
    // A fresh anonymous (or shared anonymous) mapping is zero: zero pages
    // need not be stored.
    let anon = m.inode == 0 || (object && !shm_file(m));
    // An unlinked file's mapping saved as an object: every page, present
    // or not (the file is gone; reading faults its pages in).
    let whole = object && is_unlinked_mapping(&m.name, m.inode);
    // Pre-copied private anonymous memory: a page is wanted exactly when
    // it is populated, which the `PAGEMAP_SCAN` walk says without reading
    // pagemap (the pagemap read of a large mapping is the bulk of the
    // frozen time otherwise).
    let scan_only = clean.is_some() && m.inode == 0 && !object && !m.shared && !whole;
    let mut populated = None;
    // Only what was touched is looked at: a 2 TiB MAP_NORESERVE mapping
    // with 5 pages costs 5 pages, not 4 GiB of pagemap.
    // Pre-copied memory whose populated pages the freeze's walk of the
    // written ones found already: not walked again.
    let walked = || match populated_known {
        Some(p) if scan_only => Ok(p.to_vec()),
        _ => pagemap.populated(m.start, m.end),
    };
    let spans = if whole || (m.end - m.start < SCAN_ABOVE && !scan_only) {
        vec![(m.start, m.end)]
    } else {
        match walked() {
            Ok(p) if scan_only => {
                populated = Some(p);
                Vec::new()
            }
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(
                    "{e}; reading the whole pagemap of {:#x}-{:#x}",
                    m.start,
                    m.end
                );
                vec![(m.start, m.end)]
            }
        }
    };
    // Pre-copied memory, not incremental: the populated ranges split into
    // those kept (clean) and those to read, range by range (no per-page
    // work while the program is frozen).
    if let (Some(p), Some(c), None) = (populated.as_ref(), clean, unchanged) {
        let p = merge(p.clone());
        let kept = intersect(&p, c)
            .into_iter()
            .map(|(s, e)| (s, (e - s) / PAGE_SIZE))
            .collect();
        let ranges = subtract(&p, c)
            .into_iter()
            .map(|(s, e)| pageread::Range {
                vma,
                addr: s,
                npages: (e - s) / PAGE_SIZE,
                anon,
            })
            .collect();
        return Ok((ranges, from_parent, kept));
    }
    let mut pages: Vec<usize> = Vec::new();
    match populated {
        Some(p) => {
            for (s, e) in p {
                let first = ((s - m.start) / PAGE_SIZE) as usize;
                pages.extend(first..first + ((e - s) / PAGE_SIZE) as usize);
            }
        }
        None => {
            // A private file mapping may reach past the end of its file
            // (a library's text and data mapped as one span): there, the
            // write-protect of the dirty tracker leaves markers that
            // pagemap shows as swapped pages, which cannot be read. A
            // swapped page there is only looked at if it lies within the
            // file (one stat of the file, only then).
            let file_backed = m.inode != 0 && !object && !whole;
            let mut within: Option<Option<u64>> = None;
            for (s, end) in spans {
                let first = ((s - m.start) / PAGE_SIZE) as usize;
                for (k, e) in pagemap.entries(s, end)?.into_iter().enumerate() {
                    if whole || wanted(m, e, object) {
                        let i = first + k;
                        if file_backed && e & procfs::PM_PRESENT == 0 {
                            let limit = *within.get_or_insert_with(|| pagemap.pages_within_file(m));
                            if limit.is_some_and(|l| i as u64 >= l) {
                                continue;
                            }
                        }
                        pages.push(i);
                    }
                }
            }
        }
    }
    // The clean ranges, walked alongside the pages (both in address order).
    let mut clean_at = 0;
    for i in pages {
        let addr = m.start + i as u64 * PAGE_SIZE;
        let is_clean = clean.is_some_and(|c| {
            while clean_at < c.len() && c[clean_at].1 <= addr {
                clean_at += 1;
            }
            clean_at < c.len() && c[clean_at].0 <= addr
        });
        if unchanged.is_some_and(|u| u[i]) {
            match from_parent.last_mut() {
                Some(s) if s.end() == addr => s.npages += 1,
                _ => from_parent.push(PageSpan { addr, npages: 1 }),
            }
            continue;
        }
        if is_clean {
            match kept.last_mut() {
                Some(k) if k.0 + k.1 * PAGE_SIZE == addr => k.1 += 1,
                _ => kept.push((addr, 1)),
            }
            continue;
        }
        match ranges.last_mut() {
            Some(r) if r.addr + r.npages * PAGE_SIZE == addr => r.npages += 1,
            _ => ranges.push(pageread::Range {
                vma,
                addr,
                npages: 1,
                anon,
            }),
        }
    }
    Ok((ranges, from_parent, kept))
}

/// What [`plan_vma`] found: pages to read, pages left to the parent
/// image, pages kept from the pre-copy.
pub(crate) type PlannedVma = (Vec<pageread::Range>, Vec<PageSpan>, Vec<(u64, u64)>);

/// One mapping to capture: its index in the image's VMAs, the mapping,
/// whether it is a shared memory object, its unchanged pages (incremental
/// image), its pre-copied pages still good.
pub(crate) type Todo = (usize, MapEntry, bool, Option<Vec<bool>>, Option<Reuse>);

/// Plans the pages of `todo`: fills in each mapping's pages left to the
/// parent and kept from the pre-copy, and returns the ranges to read.
pub(crate) fn plan_vmas(
    todo: &[Todo],
    pagemap: &Pagemap,
    vmas: &mut [Vma],
    what: &str,
) -> io::Result<Vec<pageread::Range>> {
    let mut ranges = Vec::new();
    for (i, m, object, unchanged, reuse) in todo {
        let (r, from_parent, kept) = plan_vma(
            *i,
            m,
            *object,
            pagemap,
            unchanged.as_deref(),
            reuse.as_ref().map(|r| r.clean.as_slice()),
            reuse.as_ref().and_then(|r| r.populated.as_deref()),
        )
        .map_err(|e| vma_error(e, what, m))?;
        ranges.extend(r);
        vmas[*i].from_parent = from_parent;
        if let Some(reuse) = reuse {
            vmas[*i].pages.extend(restrict_runs(&reuse.runs, &kept));
            vmas[*i].pages.sort_by_key(|r| r.addr);
        }
    }
    Ok(ranges)
}

/// Adds the runs read to each mapping's runs (kept in address order).
pub(crate) fn add_runs(vmas: &mut [Vma], runs: Vec<Vec<dmtcp_image::PageRun>>) {
    for (v, r) in vmas.iter_mut().zip(runs) {
        if !r.is_empty() {
            v.pages.extend(r);
            v.pages.sort_by_key(|r| r.addr);
        }
    }
}

/// Reads the pages worth saving of `todo` (mapping index in `vmas`, the
/// mapping, whether it is a shared memory object, its unchanged pages)
/// into the writer on every core, and fills in each mapping's runs and
/// pages left to the parent image.
pub(crate) fn capture_vmas<S: pageread::PageSource>(
    todo: &[Todo],
    pagemap: &Pagemap,
    mem: &S,
    writer: &mut ImageWriter,
    vmas: &mut [Vma],
    what: &str,
) -> io::Result<()> {
    let ranges = plan_vmas(todo, pagemap, vmas, what)?;
    let runs = pageread::read_into_image(mem, &ranges, vmas.len(), writer)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    add_runs(vmas, runs);
    Ok(())
}

/// An error while reading one mapping, naming it.
pub(crate) fn vma_error(e: io::Error, what: &str, m: &MapEntry) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{what} {:#x}-{:#x} {}: {e}", m.start, m.end, m.name),
    )
}

/// A mapping read from the snapshot: (index into the image's VMAs, the
/// mapping, its unchanged pages, its pre-copied pages still good).
type SnapshotVma = (usize, MapEntry, Option<Vec<bool>>, Option<Reuse>);

/// Memory whose pages are read after the program runs again: from the
/// copy-on-write snapshot child, and (pre-copy without a snapshot) pages
/// copied into our memory while the process was frozen.
pub struct Deferred {
    /// The snapshot child (host pid; stopped and traced by us) and its pid
    /// inside the namespace.
    child: Option<(HostPid, i32)>,
    /// The process (the snapshot's parent, which must reap it).
    parent: HostPid,
    /// (index into the image's VMAs, the mapping, its unchanged pages for
    /// an incremental image, its pre-copied pages still good) for each VMA
    /// read from the snapshot.
    vmas: Vec<SnapshotVma>,
    /// The VM flags were not read while frozen ([`flags_from_snapshot`]):
    /// [`Deferred::capture`] reads them from the snapshot's smaps.
    flags_pending: bool,
    /// Pages copied while frozen, and where they go.
    copied: Option<(pageread::Buffered, Vec<pageread::Range>)>,
    released: bool,
}

/// Pages of mappings that a snapshot child cannot stand in for are read at
/// once: shared memory (the program keeps writing it), and mappings a fork
/// does not copy (`MADV_DONTFORK`, `MADV_WIPEONFORK`).
pub(crate) fn needs_reading_now(m: &MapEntry, vf: &[String]) -> bool {
    m.shared || vf.iter().any(|f| f == "dc" || f == "wf") || is_unlinked_mapping(&m.name, m.inode)
}

/// Dirty-page scan at the freeze: which pages are unchanged since the
/// image `dirty.base` (None: a full image). Tracking problems never fail the
/// checkpoint; they make it a full one.
pub(crate) fn scan_written(
    pid: HostPid,
    maps: &[MapEntry],
    flags: &[(u64, Vec<String>)],
    dirty: Option<DirtyScan<'_>>,
    uffd: Option<OwnedFd>,
) -> Option<(Written, ParentRef)> {
    let dirty = dirty?;
    let t = std::time::Instant::now();
    let pairs: Vec<(&MapEntry, &[String])> =
        maps.iter().map(|m| (m, vm_flags_of(flags, m))).collect();
    match dirty.tracker.scan(pid, uffd, &pairs) {
        Ok(w) => {
            tracing::debug!("pid {pid}: dirty-page scan in {:?}", t.elapsed());
            dirty.base.map(|b| (w, b))
        }
        Err(e) => {
            tracing::warn!("pid {pid}: dirty-page tracking lost ({e}); this image is a full one");
            dirty.tracker.forget(pid);
            None
        }
    }
}

pub(crate) fn vm_flags_of<'a>(flags: &'a [(u64, Vec<String>)], m: &MapEntry) -> &'a [String] {
    flags
        .iter()
        .find(|(s, _)| *s == m.start)
        .map(|(_, f)| f.as_slice())
        .unwrap_or(&[])
}

/// The memory map of a frozen process, and with `flags` its VM flags,
/// read on a thread of its own while syscalls are injected. The only
/// mapping that changes meanwhile is our scratch mapping, which is left
/// out. `smaps`, the only source of the flags, walks every page table of
/// the process (20-40 ms per GiB of 4 KiB pages) under the mmap lock the
/// snapshot fork needs: with a snapshot child the flags are not read here
/// but from the child after the thaw ([`flags_from_snapshot`]).
pub(crate) struct MapReader(std::thread::JoinHandle<io::Result<PartialMap>>);

/// Each mapping's VM flags (by start address).
pub(crate) type VmFlags = Vec<(u64, Vec<String>)>;
/// A process's mappings and each mapping's VM flags.
pub(crate) type MemoryMap = (Vec<MapEntry>, VmFlags);
/// The mappings, and the VM flags when they were read.
pub(crate) type PartialMap = (Vec<MapEntry>, Option<VmFlags>);

impl MapReader {
    pub(crate) fn start(pid: HostPid, flags: bool) -> io::Result<MapReader> {
        std::thread::Builder::new()
            .name("maps".into())
            .spawn(move || {
                let maps = procfs::maps(pid)?;
                let flags = flags.then(|| procfs::vm_flags(pid).unwrap_or_default());
                Ok((maps, flags))
            })
            .map(MapReader)
    }

    /// The map without `[scratch.0, scratch.1)`.
    pub(crate) fn finish(self, scratch: (u64, u64)) -> io::Result<PartialMap> {
        let (mut maps, mut flags) = self
            .0
            .join()
            .map_err(|_| io::Error::other("the memory map reader panicked"))??;
        maps.retain(|m| (m.start, m.end) != scratch);
        if let Some(f) = flags.as_mut() {
            f.retain(|(start, _)| *start != scratch.0);
        }
        Ok((maps, flags))
    }
}

/// A mapping whose flags may make it special (`io`/`pf`: device memory,
/// not readable through `/proc/PID/mem`) or hugetlb (`ht`) when it is
/// read while frozen: a device file, an anonymous inode, hugetlb memory.
/// Their processes have their smaps read while frozen, as without a
/// snapshot.
fn flags_needed_at_freeze(m: &MapEntry) -> bool {
    let n = m.name.as_str();
    (n.starts_with("/dev/") && !n.starts_with("/dev/shm/") && n != "/dev/zero (deleted)")
        || (m.inode != 0 && !n.starts_with('/'))
        || n.starts_with("/anon_hugepage")
}

/// The VM flags the frozen capture needs, without `smaps`, for a process
/// whose copy-on-write snapshot `child` was just made (both stopped):
/// `wf` (`MADV_WIPEONFORK`) for a private anonymous mapping with pages in
/// the process and none in the child. Every other flag comes from the
/// child's smaps after the thaw ([`Deferred::capture`]); the child never
/// runs, so they are the process's flags at the freeze, less what a fork
/// drops (our userfaultfd registration `uw`, which the dirty tracker does
/// without: registering a range again is a no-op). `None` when the
/// flags must be read now: a mapping absent from the child
/// (`MADV_DONTFORK`: its flags could only be read from the process, which
/// runs after the thaw), one [`flags_needed_at_freeze`], or an error.
pub(crate) fn flags_from_snapshot(
    pid: HostPid,
    maps: &[MapEntry],
    child: HostPid,
) -> Option<VmFlags> {
    if let Some(m) = maps.iter().find(|m| flags_needed_at_freeze(m)) {
        tracing::debug!(
            "pid {pid}: VM flags read while frozen for {:#x}-{:#x} {}",
            m.start,
            m.end,
            m.name
        );
        return None;
    }
    let result = (|| -> io::Result<Option<VmFlags>> {
        let in_child = procfs::maps(child)?;
        let in_child: std::collections::HashSet<(u64, u64)> =
            in_child.iter().map(|m| (m.start, m.end)).collect();
        if let Some(m) = maps.iter().find(|m| !in_child.contains(&(m.start, m.end))) {
            tracing::debug!(
                "pid {pid}: {:#x}-{:#x} {} not in the snapshot (MADV_DONTFORK): VM flags read while frozen",
                m.start,
                m.end,
                m.name
            );
            return Ok(None);
        }
        let ours = Pagemap::open(pid)?;
        let theirs = Pagemap::open(child)?;
        let mut flags = Vec::new();
        for m in maps {
            // MADV_WIPEONFORK applies to private anonymous memory only.
            if m.shared || m.inode != 0 || !matches!(vma_kind(m), VmaKind::Anon { .. }) {
                continue;
            }
            if !theirs.any_populated(m.start, m.end)? && ours.any_populated(m.start, m.end)? {
                flags.push((m.start, vec!["wf".to_string()]));
            }
        }
        Ok(Some(flags))
    })();
    result.unwrap_or_else(|e| {
        tracing::debug!("pid {pid}: {e}; VM flags read while frozen");
        None
    })
}

/// How private memory is captured at the freeze.
pub(crate) enum MemoryPlan<'a> {
    /// Read now (no snapshot).
    Now,
    /// From the copy-on-write snapshot child (host pid, pid in the
    /// namespace), after the thaw.
    Snapshot(HostPid, i32),
    /// Pre-copy: pages not pre-copied or written since are copied into
    /// our memory now and encoded after the thaw.
    Copy(&'a AtFreeze),
    /// Pre-copy, the residue read from the snapshot child after the thaw.
    SnapshotAfterCopy(HostPid, i32, &'a AtFreeze),
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn capture_memory(
    pid: HostPid,
    (maps, flags): MemoryMap,
    mem: &Mem,
    writer: &mut ImageWriter,
    plan: MemoryPlan<'_>,
    flags_pending: bool,
    dirty: Option<DirtyScan<'_>>,
    uffd: Option<OwnedFd>,
    fdctx: &FdContext,
) -> io::Result<(Vec<Vma>, Option<Deferred>, Option<ParentRef>)> {
    let written = scan_written(pid, &maps, &flags, dirty, uffd);
    let pagemap = Pagemap::open(pid)?;
    let mut vmas = Vec::with_capacity(maps.len());
    let mut now = Vec::new();
    let (child, pre, copy) = match plan {
        MemoryPlan::Now => (None, None, false),
        MemoryPlan::Snapshot(c, v) => (Some((c, v)), None, false),
        MemoryPlan::Copy(a) => (None, Some(a), true),
        MemoryPlan::SnapshotAfterCopy(c, v, a) => (Some((c, v)), Some(a), false),
    };
    let mut deferred = (child.is_some() || copy).then(|| Deferred {
        child,
        parent: pid,
        vmas: Vec::new(),
        flags_pending,
        copied: None,
        released: false,
    });
    for m in &maps {
        let kind = vma_kind(m);
        let object = match &kind {
            VmaKind::SharedAnon { .. } => true,
            VmaKind::Memfd { id, .. } => m.shared && !fdctx.memfd_has_fd(*id),
            VmaKind::File { .. } => shm_file(m),
            VmaKind::Ghost { id, .. } => !fdctx.ghost_has_fd(*id),
            _ => false,
        };
        if object && is_unlinked_mapping(&m.name, m.inode) {
            crate::resources::ghost::check_size(
                &format!(
                    "pid {pid}: mapping {:#x}-{:#x} of unlinked file {}",
                    m.start, m.end, m.name
                ),
                m.end - m.start,
            )?;
        }
        let vf = vm_flags_of(&flags, m);
        let growsdown = vf.iter().any(|f| f == "gd");
        let account = vf.iter().any(|f| f == "ac");
        let special = matches!(
            kind,
            VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall
        ) || vf.iter().any(|f| f == "io" || f == "pf");
        // Shared memory and mappings read now are always saved whole.
        let unchanged = written
            .as_ref()
            .filter(|_| !needs_reading_now(m, vf))
            .map(|(w, _)| w.unchanged(m.start, m.end));
        // Pre-copied pages are only ever private memory the tracker saw.
        let reuse = pre
            .filter(|_| !special && !object && !needs_reading_now(m, vf))
            .and_then(|a| a.reuse(m));
        match deferred.as_mut() {
            _ if special => {}
            Some(d) if child.is_some() && !needs_reading_now(m, vf) => {
                d.vmas.push((vmas.len(), m.clone(), unchanged, reuse));
            }
            _ => now.push((vmas.len(), m.clone(), object, unchanged, reuse)),
        }
        vmas.push(Vma {
            start: m.start,
            end: m.end,
            prot: m.prot(),
            shared: m.shared,
            kind,
            growsdown,
            account,
            pages: Vec::new(),
            from_parent: Vec::new(),
        });
    }
    match deferred.as_mut() {
        Some(d) if copy => {
            // Copied raw now (several GB/s), encoded after the thaw.
            let t = std::time::Instant::now();
            let ranges = plan_vmas(&now, &pagemap, &mut vmas, "memory")?;
            let planned = t.elapsed();
            let buf = pageread::Buffered::copy(mem, &ranges)
                .map_err(|e| io::Error::new(e.kind(), format!("memory: {e}")))?;
            tracing::debug!(
                "pid {pid}: residue planned in {planned:?}, {} KiB copied in {:?}",
                buf.len() >> 10,
                t.elapsed() - planned
            );
            d.copied = Some((buf, ranges));
        }
        _ => capture_vmas(&now, &pagemap, mem, writer, &mut vmas, "memory")?,
    }
    Ok((vmas, deferred, written.map(|(_, base)| base)))
}

impl Deferred {
    /// Only the snapshot child `child` of `parent`, to release.
    pub fn snapshot_only(parent: HostPid, child: (HostPid, i32)) -> Deferred {
        Deferred {
            child: Some(child),
            parent,
            vmas: Vec::new(),
            flags_pending: false,
            copied: None,
            released: false,
        }
    }

    /// Bytes copied while frozen.
    pub fn copied_bytes(&self) -> usize {
        self.copied.as_ref().map_or(0, |(b, _)| b.len())
    }

    /// Reads the deferred pages (from the snapshot, or copied while
    /// frozen) into the writer and the image's VMAs. The program runs
    /// meanwhile.
    /// The mappings' flag-derived fields are filled in here when they were
    /// not read while frozen; the caller writes the metadata afterwards.
    pub fn capture(&self, meta: &mut ProcessImage, writer: &mut ImageWriter) -> io::Result<()> {
        if let Some((buf, ranges)) = &self.copied {
            let runs =
                pageread::read_into_image(buf, ranges, meta.vmas.len(), writer).map_err(|e| {
                    io::Error::new(e.kind(), format!("memory copied while frozen: {e}"))
                })?;
            add_runs(&mut meta.vmas, runs);
        }
        let Some((child, _)) = self.child else {
            return Ok(());
        };
        let mem = Mem::open(child, false)?;
        let pagemap = Pagemap::open(child)?;
        let flags = if self.flags_pending {
            let t = std::time::Instant::now();
            let flags = procfs::vm_flags(child)
                .map_err(|e| io::Error::new(e.kind(), format!("VM flags of the snapshot: {e}")))?;
            for v in meta.vmas.iter_mut() {
                let vf = flags
                    .iter()
                    .find(|(s, _)| *s == v.start)
                    .map(|(_, f)| f.as_slice())
                    .unwrap_or(&[]);
                v.growsdown = vf.iter().any(|f| f == "gd");
                v.account = vf.iter().any(|f| f == "ac");
            }
            tracing::debug!(
                "pid {}: VM flags from the snapshot's smaps in {:?}",
                self.parent,
                t.elapsed()
            );
            flags
        } else {
            Vec::new()
        };
        let todo: Vec<Todo> = self
            .vmas
            .iter()
            // Special mappings (device memory) keep no pages.
            .filter(|(_, m, _, _)| {
                !vm_flags_of(&flags, m)
                    .iter()
                    .any(|f| f == "io" || f == "pf")
            })
            .map(|(i, m, unchanged, reuse)| {
                (*i, m.clone(), false, unchanged.clone(), reuse.clone())
            })
            .collect();
        capture_vmas(
            &todo,
            &pagemap,
            &mem,
            writer,
            &mut meta.vmas,
            "snapshot memory",
        )
    }

    /// Kills the snapshot and has its parent reap it (one thread of the
    /// parent is stopped for an injected `wait4`, ~0.1 ms).
    pub fn release(mut self) -> io::Result<()> {
        self.released = true;
        self.kill_and_reap()
    }

    fn kill_and_reap(&self) -> io::Result<()> {
        let Some((child, child_vpid)) = self.child else {
            return Ok(());
        };
        // SAFETY: kill with integer arguments; the child is ours to end.
        unsafe { libc::kill(child.0, libc::SIGKILL) };
        // As its tracer we collect its death first (a blocking wait is safe:
        // it has a single thread; any thread of ours may wait for it);
        // only then can its parent reap it.
        loop {
            match ptrace::wait(child) {
                Ok(ptrace::Stop::Exited(_)) | Ok(ptrace::Stop::Killed(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if crate::kernel::freeze::is_traced_by_us(self.parent) {
            // Dropped while its parent is still frozen (a failed capture):
            // the parent reaps it once it runs again ([`reap_after_thaw`]).
            if let Ok(mut later) = REAP_LATER.lock() {
                later.push((self.parent, child_vpid));
                return Ok(());
            }
        }
        reap_in(self.parent, child_vpid)
    }
}

/// Snapshot children killed while their parents were frozen: reaped by
/// [`reap_after_thaw`].
static REAP_LATER: std::sync::Mutex<Vec<(HostPid, i32)>> = std::sync::Mutex::new(Vec::new());

/// Has the parents of snapshots released while they were frozen reap them
/// (call after the thaw), so that no program finds a child it never made.
pub fn reap_after_thaw() {
    let later = REAP_LATER
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    for (parent, vpid) in later {
        if let Err(e) = reap_in(parent, vpid) {
            tracing::warn!("{e}");
        }
    }
}

/// A snapshot is never left behind, whatever path drops it.
impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.kill_and_reap() {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Runs `wait4(vpid, NULL, __WALL, NULL)` inside `parent`, in its leader
/// thread stopped just for that.
pub(crate) fn reap_in(parent: HostPid, vpid: i32) -> io::Result<()> {
    let mut fp = match crate::kernel::freeze::freeze_threads(parent, &[parent]) {
        Ok(fp) => fp,
        // The parent exited: the snapshot went to the namespace's init,
        // which reaps it.
        Err(e) if ptrace::errno(&e) == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e),
    };
    let result = crate::kernel::remote::in_stopped_leader(&mut fp, parent, |inj| {
        // WNOHANG: the program must never block here, whatever happened.
        let flags = (libc::__WALL | libc::WNOHANG) as u64;
        inj.syscall(libc::SYS_wait4, [vpid as u64, 0, flags, 0, 0, 0])
            .map(drop)
    });
    fp.thaw()?;
    result.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reaping the snapshot of pid {parent}: {e}"),
        )
    })
}
