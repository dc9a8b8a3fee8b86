//! An ELF core file of the process in an image (`dmtcp-restart --core`),
//! for `gdb PROG CORE` to inspect a checkpoint without running it.
//!
//! What the core holds (x86_64, the layout Linux writes):
//! - one `NT_PRSTATUS` per thread (leader first) with its registers exactly
//!   as captured, each followed by `NT_FPREGSET` (the legacy 512 bytes of
//!   its XSAVE area) and `NT_X86_XSTATE` (the whole XSAVE area);
//! - `NT_PRPSINFO` (state, ids, name, arguments), `NT_AUXV`, and `NT_FILE`
//!   (every file mapping's path and offset, so gdb finds the shared
//!   libraries);
//! - one `PT_LOAD` per mapping. Anonymous and shared memory: the saved
//!   pages, and zero where nothing was saved (the page was never touched).
//!   File mappings with no saved page are left out of the file (size 0 in
//!   the core, as the kernel does for program text): gdb reads them from
//!   the files. File mappings with saved pages: those pages, and the rest
//!   read from the file as it is now (zero past its end or when it cannot be
//!   read). `[vdso]`: images do not save it; the core gets the running
//!   kernel's when it has the same size (gdb reads its symbols and unwind
//!   tables), else none. `[vvar]` and `[vsyscall]` hold no bytes.
//!
//! Pids and tids are those inside the computation.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::chain::ImageChain;
use crate::error::ImageError;
use crate::model::{Vma, VmaKind, PAGE_SIZE};

const NT_PRSTATUS: u32 = 1;
const NT_FPREGSET: u32 = 2;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_FILE: u32 = 0x4649_4c45;
const NT_X86_XSTATE: u32 = 0x202;
/// `struct user_regs_struct`: 27 words.
const NREGS: usize = 27;
/// Size of `struct elf_prstatus` on x86_64.
const PRSTATUS_SIZE: usize = 336;
/// Offset of `pr_reg` in it.
const PR_REG: usize = 112;
/// Size of `struct elf_prpsinfo` on x86_64.
const PRPSINFO_SIZE: usize = 136;
const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;

/// What [`write_core`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreSummary {
    pub threads: usize,
    /// `PT_LOAD` segments.
    pub segments: usize,
    /// Bytes of memory saved in the image and written to the core.
    pub saved_bytes: u64,
    /// Size of the core file (holes included).
    pub file_size: u64,
}

fn note(out: &mut Vec<u8>, name: &str, ty: u32, desc: &[u8]) {
    let name = format!("{name}\0");
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// `PF_*` bits from `PROT_*` bits.
fn pflags(prot: u32) -> u32 {
    let mut f = 0;
    if prot & 1 != 0 {
        f |= 4; // PF_R
    }
    if prot & 2 != 0 {
        f |= 2; // PF_W
    }
    if prot & 4 != 0 {
        f |= 1; // PF_X
    }
    f
}

/// How many bytes of `v` the core file holds; `vdso` is the running
/// kernel's vdso.
fn file_bytes(v: &Vma, vdso: Option<&[u8]>) -> u64 {
    match &v.kind {
        VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall => 0,
        VmaKind::File { .. } if v.pages.is_empty() && v.from_parent.is_empty() => 0,
        VmaKind::Vdso if v.pages.is_empty() && vdso.is_none_or(|b| b.len() as u64 != v.len()) => 0,
        _ => v.len(),
    }
}

/// The vdso of this process (the running kernel's), from `/proc/self`.
/// Images do not save the vdso (a restart maps the running kernel's); a
/// core of an image taken on this kernel gets this one, which gdb needs to
/// unwind through it.
fn own_vdso() -> Option<Vec<u8>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (a, b) = line.split_whitespace().next()?.split_once('-')?;
    let (a, b) = (
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    );
    let mut buf = vec![0u8; usize::try_from(b.checked_sub(a)?).ok()?];
    File::open("/proc/self/mem")
        .ok()?
        .read_exact_at(&mut buf, a)
        .ok()?;
    Some(buf)
}

fn io_err(out: &Path, op: &str, error: io::Error) -> ImageError {
    ImageError::Io {
        path: out.to_path_buf(),
        op: op.to_string(),
        error,
    }
}

/// Writes an ELF core file of the process in `chain` (its top image, with
/// the pages of the images it builds on) to `out` (created mode 0600;
/// replaced if it exists).
pub fn write_core(chain: &ImageChain, out: &Path) -> Result<CoreSummary, ImageError> {
    let meta = chain.top().meta();
    let p = &meta.process;
    let mut vmas: Vec<&Vma> = meta.vmas.iter().collect();
    vmas.sort_by_key(|v| v.start);
    let vdso = own_vdso();
    let sizes: Vec<u64> = vmas
        .iter()
        .map(|v| file_bytes(v, vdso.as_deref()))
        .collect();

    // Notes.
    let mut threads: Vec<_> = meta.threads.iter().collect();
    threads.sort_by_key(|t| (t.vtid != p.vpid, t.vtid));
    let mut notes = Vec::new();
    for (i, t) in threads.iter().enumerate() {
        let mut st = vec![0u8; PRSTATUS_SIZE];
        put(&mut st, 24, &t.sigmask.to_le_bytes()); // pr_sighold
        put(&mut st, 32, &t.vtid.to_le_bytes()); // pr_pid
        put(&mut st, 36, &p.vppid.to_le_bytes());
        put(&mut st, 40, &p.vpgid.to_le_bytes());
        put(&mut st, 44, &p.vsid.to_le_bytes());
        for (k, w) in t.regs.iter().take(NREGS).enumerate() {
            put(&mut st, PR_REG + 8 * k, &w.to_le_bytes());
        }
        let fpvalid = u32::from(t.xstate.len() >= 512);
        put(&mut st, PR_REG + 8 * NREGS, &fpvalid.to_le_bytes());
        note(&mut notes, "CORE", NT_PRSTATUS, &st);
        if i == 0 {
            process_notes(&mut notes, chain, &vmas);
        }
        if t.xstate.len() >= 512 {
            note(&mut notes, "CORE", NT_FPREGSET, &t.xstate[..512]);
            note(&mut notes, "LINUX", NT_X86_XSTATE, &t.xstate);
        }
    }

    // Layout: headers, notes, then the segments from a page boundary.
    let phnum = 1 + vmas.len();
    let notes_off = EHDR_SIZE + PHDR_SIZE * phnum as u64;
    let mut off = (notes_off + notes.len() as u64).next_multiple_of(PAGE_SIZE);
    let mut seg_off: Vec<u64> = Vec::with_capacity(vmas.len());
    let mut phdrs = Vec::with_capacity(PHDR_SIZE as usize * phnum);
    let phdr = |ty: u32, flags: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64, align: u64| {
        let mut h = Vec::with_capacity(PHDR_SIZE as usize);
        h.extend_from_slice(&ty.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        for w in [off, vaddr, 0, filesz, memsz, align] {
            h.extend_from_slice(&w.to_le_bytes());
        }
        h
    };
    phdrs.extend(phdr(4, 0, notes_off, 0, notes.len() as u64, 0, 4)); // PT_NOTE
    for (v, &n) in vmas.iter().zip(&sizes) {
        seg_off.push(off);
        phdrs.extend(phdr(1, pflags(v.prot), off, v.start, n, v.len(), PAGE_SIZE));
        off += n;
    }
    let file_size = off;

    let mut ehdr = vec![0u8; EHDR_SIZE as usize];
    put(&mut ehdr, 0, b"\x7fELF");
    ehdr[4] = 2; // ELFCLASS64
    ehdr[5] = 1; // little endian
    ehdr[6] = 1; // EV_CURRENT
    put(&mut ehdr, 16, &4u16.to_le_bytes()); // ET_CORE
    put(&mut ehdr, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut ehdr, 20, &1u32.to_le_bytes());
    put(&mut ehdr, 32, &EHDR_SIZE.to_le_bytes()); // e_phoff
    put(&mut ehdr, 52, &(EHDR_SIZE as u16).to_le_bytes());
    put(&mut ehdr, 54, &(PHDR_SIZE as u16).to_le_bytes());
    put(&mut ehdr, 56, &(phnum as u16).to_le_bytes());

    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| io_err(out, "create", e))?;
    let mut head = ehdr;
    head.extend_from_slice(&phdrs);
    head.extend_from_slice(&notes);
    (&f).write_all(&head)
        .map_err(|e| io_err(out, "write headers", e))?;
    f.set_len(file_size)
        .map_err(|e| io_err(out, "set length", e))?;

    // File mappings with saved pages: the rest from the file. The vdso.
    for ((v, &o), &n) in vmas.iter().zip(&seg_off).zip(&sizes) {
        match &v.kind {
            VmaKind::File { path, offset, .. } if n > 0 => {
                fill_from_file(&f, o, v, path, *offset).map_err(|e| io_err(out, path, e))?;
            }
            VmaKind::Vdso if n > 0 => {
                if let Some(b) = vdso.as_deref().filter(|b| b.len() as u64 == n) {
                    f.write_all_at(b, o)
                        .map_err(|e| io_err(out, "write the vdso", e))?;
                }
            }
            _ => {}
        }
    }
    // Saved pages, where their mapping is in the core.
    let starts: Vec<u64> = vmas.iter().map(|v| v.start).collect();
    let saved = std::sync::atomic::AtomicU64::new(0);
    chain.read_pages(&|addr, bytes| {
        let i = starts.partition_point(|&s| s <= addr).saturating_sub(1);
        let (v, n) = (vmas[i], sizes[i]);
        if addr < v.start || addr + bytes.len() as u64 > v.start + n {
            return Ok(()); // a mapping left out of the core
        }
        f.write_all_at(bytes, seg_off[i] + (addr - v.start))
            .map_err(|e| io_err(out, &format!("write pages at {addr:#x}"), e))?;
        saved.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })?;
    f.sync_all().map_err(|e| io_err(out, "fsync", e))?;
    Ok(CoreSummary {
        threads: threads.len(),
        segments: vmas.len(),
        saved_bytes: saved.into_inner(),
        file_size,
    })
}

/// `NT_PRPSINFO`, `NT_AUXV` and `NT_FILE`.
fn process_notes(notes: &mut Vec<u8>, chain: &ImageChain, vmas: &[&Vma]) {
    let p = &chain.top().meta().process;
    let mut ps = vec![0u8; PRPSINFO_SIZE];
    ps[0] = 1; // pr_state: sleeping
    ps[1] = b'S';
    put(&mut ps, 16, &p.uid.to_le_bytes());
    put(&mut ps, 20, &p.gid.to_le_bytes());
    put(&mut ps, 24, &p.vpid.to_le_bytes());
    put(&mut ps, 28, &p.vppid.to_le_bytes());
    put(&mut ps, 32, &p.vpgid.to_le_bytes());
    put(&mut ps, 36, &p.vsid.to_le_bytes());
    let fname = p.comm.as_bytes();
    put(&mut ps, 40, &fname[..fname.len().min(15)]);
    let args = p.cmdline.join(&b' ');
    put(&mut ps, 56, &args[..args.len().min(79)]);
    note(notes, "CORE", NT_PRPSINFO, &ps);

    let auxv: Vec<u8> = p.auxv.iter().flat_map(|w| w.to_le_bytes()).collect();
    note(notes, "CORE", NT_AUXV, &auxv);

    let files: Vec<(&Vma, &str, u64)> = vmas
        .iter()
        .filter_map(|v| match &v.kind {
            VmaKind::File { path, offset, .. } => Some((*v, path.as_str(), *offset)),
            _ => None,
        })
        .collect();
    let mut nt = Vec::new();
    nt.extend_from_slice(&(files.len() as u64).to_le_bytes());
    nt.extend_from_slice(&PAGE_SIZE.to_le_bytes());
    for (v, _, off) in &files {
        for w in [v.start, v.end, off / PAGE_SIZE] {
            nt.extend_from_slice(&w.to_le_bytes());
        }
    }
    for (_, path, _) in &files {
        nt.extend_from_slice(path.as_bytes());
        nt.push(0);
    }
    note(notes, "CORE", NT_FILE, &nt);
}

/// Copies the mapped part of `path` (from `offset`) into the segment of `v`
/// at `seg` in the core; a file that cannot be opened leaves zeros.
fn fill_from_file(core: &File, seg: u64, v: &Vma, path: &str, offset: u64) -> io::Result<()> {
    let Ok(src) = File::open(path) else {
        return Ok(());
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < v.len() {
        let want = (v.len() - done).min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            break;
        }
        core.write_all_at(&buf[..n], seg + done)?;
        done += n as u64;
    }
    Ok(())
}
