//! Restore of memory into a restart shell: vdso and vvar at their saved
//! place, SysV segments attached, every mapping made again (files reopened,
//! shared objects moved into place from where nsinit parked them), pages
//! brought in lazily or written, and the mm fields (`PR_SET_MM_MAP`).

use std::collections::HashMap;
use std::io;

use dmtcp_image::{FdKind, ImageChain, ProcessImage, VmaKind};

use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs;
use crate::kernel::ptrace;
use crate::kernel::remote::Shell;
use crate::resources::memory::ParkedMemory;
use crate::resources::restore_err as err;

const ARCH_MAP_VDSO_64: u64 = 0x2003;
/// Leave the source mapping in place (Linux 5.13+ for shared mappings).
const MREMAP_DONTUNMAP: i32 = 4;
const PR_SET_VMA: u64 = 0x5356_4d41;
const PR_SET_VMA_ANON_NAME: u64 = 0;

/// Maps every VMA of `image` into the shell and puts its pages in place
/// (lazily where the lazy restore can serve them). Page writes run
/// unpinned (`free` is the tracer's own affinity), then the tracer is
/// pinned to `cpu` again.
pub fn restore_memory(
    sh: &mut Shell,
    image: &ImageChain,
    parked: &[ParkedMemory],
    shm_sizes: &HashMap<i32, u64>,
    (cpu, free): (usize, &libc::cpu_set_t),
) -> io::Result<()> {
    let pid = sh.pid;
    let meta = image.top().meta();
    // vdso and vvar at their saved place.
    map_vdso(sh, meta)?;

    // Every mapping, then its pages (from the images it builds on too,
    // for an incremental image).
    // SysV shared memory first: a segment is attached whole, and the parts the process had unmapped
    //    are unmapped again before anything else takes their place.
    crate::resources::sysv::attach::attach_segments(&mut sh.inj, pid, &meta.vmas, shm_sizes)?;
    let reprotect = map_all(sh, meta, parked)?;
    // Pages that can come in on demand start coming now; the rest is
    // copied before the process runs.
    let runs =
        crate::resources::memory::lazy_pages::start(pid, &mut sh.inj, image, image.page_runs())
            .map_err(|e| err(pid, "lazy restore", e))?;
    let mem_ref = &sh.mem;
    // Pages are written with process_vm_writev, not ptrace: unpinned, so
    // the reading threads (which inherit our affinity) use every core.
    ptrace::set_affinity(HostPid(0), free)?;
    let written = image.read_runs(&runs, &|addr, bytes| {
        mem_ref
            .write_fast(RemoteAddr(addr), bytes)
            .map_err(|e| dmtcp_image::ImageError::Io {
                path: format!("/proc/{pid}/mem").into(),
                op: "write restored pages".into(),
                error: e,
            })
    });
    ptrace::pin_to_cpu(HostPid(0), cpu)?;
    written.map_err(|e| err(pid, "writing memory", e))?;
    for (start, len, prot) in reprotect {
        sh.call(libc::SYS_mprotect, [start, len, prot as u64, 0, 0, 0])
            .map_err(|e| err(pid, "mprotect", e))?;
    }

    Ok(())
}

fn map_vdso(sh: &mut Shell, meta: &ProcessImage) -> io::Result<()> {
    let pid = sh.pid;
    let find = |k: &VmaKind| meta.vmas.iter().find(|v| &v.kind == k).map(|v| v.start);
    let Some(vdso) = find(&VmaKind::Vdso) else {
        return Ok(());
    };
    let base = find(&VmaKind::Vvar).unwrap_or(vdso);
    sh.call(libc::SYS_arch_prctl, [ARCH_MAP_VDSO_64, base, 0, 0, 0, 0])
        .map_err(|e| err(pid, "mapping the vdso", e))?;
    let now = procfs::maps(pid)?;
    let got = now.iter().find(|m| m.name == "[vdso]").map(|m| m.start);
    if got != Some(vdso) {
        return Err(err(
            pid,
            "vdso",
            format!("landed at {got:x?}, the image needs {vdso:#x} (different kernel?)"),
        ));
    }
    Ok(())
}

/// An fd in the shell on `path` for mmap (opened once per path and mode,
/// kept in `fds` until every mapping is made).
fn open_for_mapping(
    sh: &mut Shell,
    fds: &mut HashMap<(String, bool), u64>,
    path: &str,
    rw: bool,
) -> io::Result<u64> {
    let key = (path.to_string(), rw);
    if let Some(fd) = fds.get(&key) {
        return Ok(*fd);
    }
    let p = sh.put_cstr(path)?;
    let mode = if rw { libc::O_RDWR } else { libc::O_RDONLY };
    let fd = sh
        .call(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                p,
                (mode | libc::O_CLOEXEC) as u64,
                0,
                0,
                0,
            ],
        )
        .map_err(|e| err(sh.pid, &format!("opening mapped file {path}"), e))?;
    fds.insert(key, fd);
    Ok(fd)
}

/// Maps every saved VMA; returns the mappings that were made writable only
/// to be filled, with their final protection.
fn map_all(
    sh: &mut Shell,
    meta: &ProcessImage,
    parked: &[ParkedMemory],
) -> io::Result<Vec<(u64, u64, u32)>> {
    let pid = sh.pid;
    let mut fds: HashMap<(String, bool), u64> = HashMap::new();
    let mut reprotect = Vec::new();
    // VM_ACCOUNT was read for this image (every process has accounted
    // writable private memory): a writable private mapping without it was
    // made with MAP_NORESERVE.
    let flags_known = meta.vmas.iter().any(|v| v.account);
    for v in &meta.vmas {
        let mut flags = libc::MAP_FIXED_NOREPLACE;
        flags |= if v.shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        if v.growsdown {
            flags |= libc::MAP_GROWSDOWN;
        }
        if flags_known
            && !v.shared
            && !v.account
            && v.prot & libc::PROT_WRITE as u32 != 0
            && matches!(v.kind, VmaKind::Anon { .. } | VmaKind::File { .. })
        {
            flags |= libc::MAP_NORESERVE;
        }
        // /proc/PID/mem writes into private mappings whatever their protection
        // (copy-on-write); shared ones must be writable while we fill them.
        let mut prot = v.prot;
        let write = libc::PROT_WRITE as u32;
        if !v.shared && v.account && prot & write == 0 {
            prot |= write;
            reprotect.push((v.start, v.len(), v.prot));
        } else if v.shared && !v.pages.is_empty() && prot & write == 0 {
            prot |= libc::PROT_WRITE as u32;
            reprotect.push((v.start, v.len(), v.prot));
        }
        let (fd, offset) = match &v.kind {
            VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall => continue,
            VmaKind::SysvShm { .. } => {
                // Attached already (attach_segments): only its protection.
                sh.call(
                    libc::SYS_mprotect,
                    [v.start, v.len(), v.prot as u64, 0, 0, 0],
                )
                .map_err(|e| err(pid, "mprotect SysV shared memory", e))?;
                continue;
            }
            VmaKind::Memfd { id, name, offset } if !v.shared => {
                // A private mapping comes from the memfd itself, reached
                // through an fd this process holds on it.
                let held = meta
                    .fds
                    .iter()
                    .find(|e| matches!(e.kind, FdKind::Memfd { id: m, .. } if m == *id))
                    .ok_or_else(|| {
                        err(
                            pid,
                            &format!("private mapping of memfd:{name} at {:#x}", v.start),
                            "the process holds no fd on that memfd (not supported)",
                        )
                    })?;
                let path = format!("/proc/self/fd/{}", held.fd);
                (open_for_mapping(sh, &mut fds, &path, false)?, *offset)
            }
            VmaKind::Ghost { id, path, offset } if !v.shared => {
                // Mapped from the recreated file, which the shell holds at
                // a number of its own (closed below).
                let fd = super::ghost_shell_fd(&meta.fds, parked, *id)
                    .ok_or_else(|| err(pid, &format!("unlinked file {path}"), "not recreated"))?;
                (fd as u64, *offset)
            }
            VmaKind::SharedAnon { id, offset }
            | VmaKind::Memfd { id, offset, .. }
            | VmaKind::Ghost { id, offset, .. } => {
                // The object was mapped by nsinit before the fork: take this
                // piece of it (the parked copy stays for other pieces).
                let o = parked
                    .iter()
                    .find(|o| o.id == *id)
                    .ok_or_else(|| err(pid, "shared memory", format!("object {id} not parked")))?;
                sh.call(
                    libc::SYS_mremap,
                    [
                        o.addr + offset,
                        v.len(),
                        v.len(),
                        (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | MREMAP_DONTUNMAP) as u64,
                        v.start,
                        0,
                    ],
                )
                .map_err(|e| err(pid, &format!("moving shared memory to {:#x}", v.start), e))?;
                sh.call(libc::SYS_mprotect, [v.start, v.len(), prot as u64, 0, 0, 0])
                    .map_err(|e| err(pid, "mprotect shared memory", e))?;
                continue;
            }
            VmaKind::Anon { .. } => {
                flags |= libc::MAP_ANONYMOUS;
                (u64::MAX, 0)
            }
            VmaKind::File { path, offset, .. } => {
                let rw = v.shared && v.prot & libc::PROT_WRITE as u32 != 0;
                let fd = open_for_mapping(sh, &mut fds, path, rw)?;
                (fd, *offset)
            }
        };
        sh.call(
            libc::SYS_mmap,
            [v.start, v.len(), prot as u64, flags as u64, fd, offset],
        )
        .map_err(|e| err(pid, &format!("mapping {:#x}-{:#x}", v.start, v.end), e))?;
        if let VmaKind::Anon { name: Some(n) } = &v.kind {
            let inner = n
                .strip_prefix("[anon:")
                .or_else(|| n.strip_prefix("[anon_shmem:"))
                .and_then(|x| x.strip_suffix(']'));
            if let Some(inner) = inner {
                let a = sh.put_cstr(inner)?;
                sh.call(
                    libc::SYS_prctl,
                    [PR_SET_VMA, PR_SET_VMA_ANON_NAME, v.start, v.len(), a, 0],
                )
                .map_err(|e| err(pid, &format!("naming mapping {n}"), e))?;
            }
        }
    }
    for fd in fds.into_values() {
        sh.call(libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    }
    let ghosts = parked.iter().filter(|o| o.ghost.is_some()).count() as u64;
    if ghosts > 0 {
        let base = super::ghost_shell_base(&meta.fds) as u64;
        for fd in base..base + ghosts {
            sh.call(libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
        }
    }
    Ok(reprotect)
}

/// `struct prctl_mm_map`.
#[repr(C)]
#[derive(Clone, Copy)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}
const _: () = assert!(std::mem::size_of::<PrctlMmMap>() == 104);

fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: used only with repr(C) structs of plain integers without padding
    // (sizes asserted); reading their bytes is always valid.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

pub fn set_mm(sh: &mut Shell, meta: &ProcessImage) -> io::Result<()> {
    let pid = sh.pid;
    let p = &meta.process;
    // Already the program's (the shell exec'd it, `restart::process`):
    // left as it is, which needs no privilege.
    let exe_set = crate::kernel::pid::virt::enabled()
        && crate::kernel::procfs::link(pid, "exe").is_ok_and(|l| l == p.exe);
    let exe_fd = if exe_set {
        u64::from(u32::MAX)
    } else {
        let exe = sh.put_cstr(&p.exe)?;
        sh.call(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                exe,
                (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                0,
                0,
                0,
            ],
        )
        .map_err(|e| err(pid, &format!("opening executable {}", p.exe), e))?
    };
    let auxv: Vec<u8> = p.auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let auxv_addr = sh.scratch() + 128;
    sh.mem.write(RemoteAddr(auxv_addr), &auxv)?;
    let m = &p.mm;
    let map = PrctlMmMap {
        start_code: m.start_code,
        end_code: m.end_code,
        start_data: m.start_data,
        end_data: m.end_data,
        start_brk: m.start_brk,
        brk: m.brk,
        start_stack: m.start_stack,
        arg_start: m.arg_start,
        arg_end: m.arg_end,
        env_start: m.env_start,
        env_end: m.env_end,
        auxv: auxv_addr,
        auxv_size: auxv.len() as u32,
        exe_fd: exe_fd as u32,
    };
    let map_addr = sh.scratch();
    sh.mem.write(RemoteAddr(map_addr), as_bytes(&map))?;
    let set = |sh: &mut Shell| {
        sh.call(
            libc::SYS_prctl,
            [
                libc::PR_SET_MM as u64,
                libc::PR_SET_MM_MAP as u64,
                map_addr,
                std::mem::size_of::<PrctlMmMap>() as u64,
                0,
                0,
            ],
        )
    };
    let mut r = set(sh);
    if !exe_set
        && crate::kernel::pid::virt::enabled()
        && matches!(&r, Err(e) if e.kind() == io::ErrorKind::PermissionDenied)
    {
        // Without namespaces and without privileges, the executable link
        // cannot be changed (it takes CAP_CHECKPOINT_RESTORE): the rest of
        // the mm fields can; /proc/PID/exe stays the restart shell's.
        tracing::debug!("pid {pid}: /proc/PID/exe not restored (no CAP_CHECKPOINT_RESTORE)");
        let no_exe = PrctlMmMap {
            exe_fd: u32::MAX,
            ..map
        };
        sh.mem.write(RemoteAddr(map_addr), as_bytes(&no_exe))?;
        r = set(sh);
    }
    if !exe_set {
        sh.call(libc::SYS_close, [exe_fd, 0, 0, 0, 0, 0])?;
    }
    r.map_err(|e| err(pid, "prctl(PR_SET_MM_MAP)", e))?;
    Ok(())
}
