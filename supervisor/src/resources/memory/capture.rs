//! Capture of memory: which mappings a process has and which of their
//! pages are saved (pagemap, dirty-page tracking for incremental images),
//! read now or after the thaw from a copy-on-write snapshot child.

use std::io;
use std::os::fd::OwnedFd;

use dmtcp_image::{ImageWriter, PageSpan, ParentRef, ProcessImage, Vma, VmaKind, PAGE_SIZE};

use crate::kernel::pid::HostPid;
use crate::kernel::procfs::{self, MapEntry, Mem, Pagemap};
use crate::kernel::ptrace;
use crate::kernel::remote::{syscall_insn, Injector};
use crate::resources::fdshare::FdContext;
use crate::resources::memfd::memfd_name;
use crate::resources::memory::dirty::{DirtyTracker, Written};
use crate::resources::memory::pageread;

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

/// Which pages of one mapping are saved (`vma` is its index in the
/// image), from pagemap: the ranges to read, and with `unchanged` (per
/// page, incremental images) the spans left to the parent image.
pub(crate) fn plan_vma(
    vma: usize,
    m: &MapEntry,
    object: bool,
    pagemap: &Pagemap,
    unchanged: Option<&[bool]>,
) -> io::Result<(Vec<pageread::Range>, Vec<PageSpan>)> {
    let entries = pagemap.entries(m.start, m.end)?;
    let mut from_parent: Vec<PageSpan> = Vec::new();
    let mut ranges: Vec<pageread::Range> = Vec::new();
    // A fresh anonymous (or shared anonymous) mapping is zero: zero pages
    // need not be stored.
    let anon = m.inode == 0 || object;
    for (i, &e) in entries.iter().enumerate() {
        if !wanted(m, e, object) {
            continue;
        }
        let addr = m.start + i as u64 * PAGE_SIZE;
        if unchanged.is_some_and(|u| u[i]) {
            match from_parent.last_mut() {
                Some(s) if s.end() == addr => s.npages += 1,
                _ => from_parent.push(PageSpan { addr, npages: 1 }),
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
    Ok((ranges, from_parent))
}

/// Reads the pages worth saving of `todo` (mapping index in `vmas`, the
/// mapping, whether it is a shared memory object, its unchanged pages)
/// into the writer on every core, and fills in each mapping's runs and
/// pages left to the parent image.
pub(crate) fn capture_vmas(
    todo: &[(usize, MapEntry, bool, Option<Vec<bool>>)],
    pagemap: &Pagemap,
    mem: &Mem,
    writer: &mut ImageWriter,
    vmas: &mut [Vma],
    what: &str,
) -> io::Result<()> {
    let mut ranges = Vec::new();
    for (i, m, object, unchanged) in todo {
        let (r, from_parent) = plan_vma(*i, m, *object, pagemap, unchanged.as_deref())
            .map_err(|e| vma_error(e, what, m))?;
        ranges.extend(r);
        vmas[*i].from_parent = from_parent;
    }
    let runs = pageread::read_into_image(mem, &ranges, vmas.len(), writer)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    for (v, r) in vmas.iter_mut().zip(runs) {
        if !r.is_empty() {
            v.pages = r;
        }
    }
    Ok(())
}

/// An error while reading one mapping, naming it.
pub(crate) fn vma_error(e: io::Error, what: &str, m: &MapEntry) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{what} {:#x}-{:#x} {}: {e}", m.start, m.end, m.name),
    )
}

/// Memory whose pages are read after the program runs again, from the
/// copy-on-write snapshot child.
pub struct Deferred {
    /// The snapshot child (host pid; stopped and traced by us) and its pid
    /// inside the namespace.
    pub child: HostPid,
    child_vpid: i32,
    /// The process it was cloned from, which must reap it.
    pub parent: HostPid,
    /// (index into the image's VMAs, the mapping, its unchanged pages for
    /// an incremental image) for each deferred VMA.
    vmas: Vec<(usize, MapEntry, Option<Vec<bool>>)>,
    released: bool,
}

/// Pages of mappings that a snapshot child cannot stand in for are read at
/// once: shared memory (the program keeps writing it), and mappings a fork
/// does not copy (`MADV_DONTFORK`, `MADV_WIPEONFORK`).
pub(crate) fn needs_reading_now(m: &MapEntry, vf: &[String]) -> bool {
    m.shared || vf.iter().any(|f| f == "dc" || f == "wf")
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

/// The memory map and VM flags of a frozen process, read on a thread of
/// its own while syscalls are injected (`smaps` costs ~9 us per mapping:
/// 9 ms for a process with 512 threads' stacks). The only mapping that
/// changes meanwhile is our scratch mapping, which is left out.
pub(crate) struct MapReader(std::thread::JoinHandle<io::Result<MemoryMap>>);

/// A process's mappings and each mapping's VM flags (by start address).
type MemoryMap = (Vec<MapEntry>, Vec<(u64, Vec<String>)>);

impl MapReader {
    pub(crate) fn start(pid: HostPid) -> io::Result<MapReader> {
        std::thread::Builder::new()
            .name("maps".into())
            .spawn(move || {
                Ok((
                    procfs::maps(pid)?,
                    procfs::vm_flags(pid).unwrap_or_default(),
                ))
            })
            .map(MapReader)
    }

    /// The map without `[scratch.0, scratch.1)`.
    pub(crate) fn finish(self, scratch: (u64, u64)) -> io::Result<MemoryMap> {
        let (mut maps, mut flags) = self
            .0
            .join()
            .map_err(|_| io::Error::other("the memory map reader panicked"))??;
        maps.retain(|m| (m.start, m.end) != scratch);
        flags.retain(|(start, _)| *start != scratch.0);
        Ok((maps, flags))
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn capture_memory(
    pid: HostPid,
    (maps, flags): MemoryMap,
    mem: &Mem,
    writer: &mut ImageWriter,
    snapshot: Option<(HostPid, i32)>,
    dirty: Option<DirtyScan<'_>>,
    uffd: Option<OwnedFd>,
    fdctx: &FdContext,
) -> io::Result<(Vec<Vma>, Option<Deferred>, Option<ParentRef>)> {
    let written = scan_written(pid, &maps, &flags, dirty, uffd);
    let pagemap = Pagemap::open(pid)?;
    let mut vmas = Vec::with_capacity(maps.len());
    let mut now = Vec::new();
    let mut deferred = snapshot.map(|(child, child_vpid)| Deferred {
        child,
        child_vpid,
        parent: pid,
        vmas: Vec::new(),
        released: false,
    });
    for m in &maps {
        let kind = vma_kind(m);
        let object = match &kind {
            VmaKind::SharedAnon { .. } => true,
            VmaKind::Memfd { id, .. } => m.shared && !fdctx.memfd_has_fd(*id),
            _ => false,
        };
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
        match deferred.as_mut() {
            _ if special => {}
            Some(d) if !needs_reading_now(m, vf) => {
                d.vmas.push((vmas.len(), m.clone(), unchanged));
            }
            _ => now.push((vmas.len(), m.clone(), object, unchanged)),
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
    capture_vmas(&now, &pagemap, mem, writer, &mut vmas, "memory")?;
    Ok((vmas, deferred, written.map(|(_, base)| base)))
}

impl Deferred {
    /// Reads the deferred pages from the snapshot into the writer and the
    /// image's VMAs. The program runs meanwhile.
    pub fn capture(&self, meta: &mut ProcessImage, writer: &mut ImageWriter) -> io::Result<()> {
        let mem = Mem::open(self.child, false)?;
        let pagemap = Pagemap::open(self.child)?;
        let todo: Vec<_> = self
            .vmas
            .iter()
            .map(|(i, m, unchanged)| (*i, m.clone(), false, unchanged.clone()))
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
        // SAFETY: kill with integer arguments; the child is ours to end.
        unsafe { libc::kill(self.child.0, libc::SIGKILL) };
        // As its tracer we collect its death first (a blocking wait is safe:
        // it has a single thread); only then can its parent reap it.
        loop {
            match ptrace::wait(self.child) {
                Ok(ptrace::Stop::Exited(_)) | Ok(ptrace::Stop::Killed(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        reap_in(self.parent, self.child_vpid)
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
    let result = (|| {
        let maps = procfs::maps(parent)?;
        let mem = Mem::open(parent, false)?;
        let insn = syscall_insn(parent, &maps, &mem)?;
        let t = &mut fp.threads[0];
        let mask = ptrace::get_sigmask(t.tid)?;
        ptrace::set_sigmask(t.tid, u64::MAX)?;
        t.touched = true;
        let mut inj = Injector::new(t.tid, insn)?;
        // WNOHANG: the program must never block here, whatever happened.
        let flags = (libc::__WALL | libc::WNOHANG) as u64;
        let r = inj.syscall(libc::SYS_wait4, [vpid as u64, 0, flags, 0, 0, 0]);
        ptrace::set_sigmask(t.tid, mask)?;
        r.map(drop)
    })();
    fp.thaw()?;
    result.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reaping the snapshot of pid {parent}: {e}"),
        )
    })
}
