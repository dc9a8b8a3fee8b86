//! Readers for the `/proc` files a checkpoint needs.
//!
//! Small hand-written parsers: each returns exactly the fields we use, with
//! errors naming the file.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::kernel::pid::{HostPid, RemoteAddr, VirtPid};

fn proc_path(pid: HostPid, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{}/{rest}", pid.0))
}

/// The whole of an open `/proc` file. Its size always reads as 0, so the
/// size hint `fs::read` asks the kernel for first (a `statx` per file) is
/// skipped: a read through `take` has none.
fn read_open(f: &fs::File) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4096);
    f.take(u64::MAX).read_to_end(&mut out)?;
    Ok(out)
}

fn read_bytes(pid: HostPid, rest: &str) -> io::Result<Vec<u8>> {
    let p = proc_path(pid, rest);
    fs::File::open(&p)
        .and_then(|f| read_open(&f))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

fn read_string(pid: HostPid, rest: &str) -> io::Result<String> {
    let b = read_bytes(pid, rest)?;
    String::from_utf8(b).map_err(|_| bad(format!("/proc/{}/{rest}: not UTF-8", pid.0)))
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub dev: u64,
    pub inode: u64,
    /// Path or pseudo name (`[heap]`, `[stack]`, `[vdso]`, ...); empty for anonymous.
    pub name: String,
}

impl MapEntry {
    pub fn prot(&self) -> u32 {
        let mut p = 0;
        if self.read {
            p |= libc::PROT_READ as u32;
        }
        if self.write {
            p |= libc::PROT_WRITE as u32;
        }
        if self.exec {
            p |= libc::PROT_EXEC as u32;
        }
        p
    }
}

pub fn parse_maps(text: &str) -> io::Result<Vec<MapEntry>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let range = it.next().ok_or_else(|| bad(format!("maps line: {line}")))?;
        let perms = it.next().ok_or_else(|| bad(format!("maps line: {line}")))?;
        let offset = it.next().ok_or_else(|| bad(format!("maps line: {line}")))?;
        let dev = it.next().ok_or_else(|| bad(format!("maps line: {line}")))?;
        let inode = it.next().ok_or_else(|| bad(format!("maps line: {line}")))?;
        let name = it.next().unwrap_or("").trim_start().to_string();
        let (s, e) = range
            .split_once('-')
            .ok_or_else(|| bad(format!("maps range: {line}")))?;
        let (maj, min) = dev
            .split_once(':')
            .ok_or_else(|| bad(format!("maps dev: {line}")))?;
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad(format!("maps: {line}")));
        let pb = perms.as_bytes();
        if pb.len() < 4 {
            return Err(bad(format!("maps perms: {line}")));
        }
        let maj = hex(maj)?;
        let min = hex(min)?;
        out.push(MapEntry {
            start: hex(s)?,
            end: hex(e)?,
            read: pb[0] == b'r',
            write: pb[1] == b'w',
            exec: pb[2] == b'x',
            shared: pb[3] == b's',
            offset: hex(offset)?,
            dev: libc::makedev(maj as u32, min as u32),
            inode: inode
                .parse()
                .map_err(|_| bad(format!("maps inode: {line}")))?,
            name,
        });
    }
    Ok(out)
}

pub fn maps(pid: HostPid) -> io::Result<Vec<MapEntry>> {
    parse_maps(&read_string(pid, "maps")?)
}

/// VmFlags of each mapping from `/proc/PID/smaps`, keyed by start address.
pub fn vm_flags(pid: HostPid) -> io::Result<Vec<(u64, Vec<String>)>> {
    let text = read_string(pid, "smaps")?;
    let mut out = Vec::new();
    let mut cur: Option<u64> = None;
    for line in text.lines() {
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("VmFlags:") {
            if let Some(start) = cur.take() {
                out.push((start, rest.split_whitespace().map(String::from).collect()));
            }
        } else if !first.ends_with(':') {
            if let Some((s, _)) = first.split_once('-') {
                cur = u64::from_str_radix(s, 16).ok();
            }
        }
    }
    Ok(out)
}

/// Fields of `/proc/PID/stat` after the comm (index 0 = state, field 3).
pub fn stat_fields(pid: HostPid) -> io::Result<Vec<String>> {
    let text = read_string(pid, "stat")?;
    let close = text
        .rfind(')')
        .ok_or_else(|| bad(format!("/proc/{pid}/stat: no comm")))?;
    Ok(text[close + 1..]
        .split_whitespace()
        .map(String::from)
        .collect())
}

/// A field of stat by its man-page number (1-based, field 1 = pid).
pub fn stat_field(fields: &[String], n: usize) -> io::Result<u64> {
    // fields[0] is field 3 (state)
    fields
        .get(n - 3)
        .and_then(|s| s.parse::<i64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| bad(format!("/proc stat field {n} missing")))
}

/// `/proc/PID/status` as key/value pairs.
pub fn status(pid: HostPid) -> io::Result<Vec<(String, String)>> {
    Ok(read_string(pid, "status")?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

pub fn status_of(pid: HostPid, tid: Option<HostPid>) -> io::Result<Vec<(String, String)>> {
    match tid {
        None => status(pid),
        Some(t) => Ok(read_string(pid, &format!("task/{}/status", t.0))?
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()),
    }
}

pub fn field<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub fn hex_field(kv: &[(String, String)], key: &str) -> u64 {
    field(kv, key)
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(0)
}

/// The innermost pid from an `NSpid:` value (the pid the process sees).
pub fn innermost_pid(kv: &[(String, String)]) -> Option<VirtPid> {
    field(kv, "NSpid")?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
        .map(VirtPid)
}

/// Host tids of all threads of a process.
pub fn tasks(pid: HostPid) -> io::Result<Vec<HostPid>> {
    let p = proc_path(pid, "task");
    let mut out = Vec::new();
    for e in
        fs::read_dir(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?
    {
        let e = e?;
        if let Some(t) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(HostPid(t));
        }
    }
    out.sort();
    Ok(out)
}

/// Direct children of a process (all threads' children lists).
///
/// One file per thread, opened relative to the process's `task` directory;
/// a process of many threads has its files read by two threads at once
/// (512 threads: 3.5 ms read one after the other, within the freeze when
/// the tree is checked again).
pub fn children(pid: HostPid) -> io::Result<Vec<HostPid>> {
    let dir = fs::File::open(proc_path(pid, "task"))?;
    let tids = tasks(pid)?;
    let read = |tids: &[HostPid]| -> Vec<HostPid> {
        let mut out = Vec::new();
        for t in tids {
            let f = nix::fcntl::openat(
                &dir,
                format!("{}/children", t.0).as_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            );
            // A thread that exited meanwhile has no children left.
            let Ok(b) = f
                .map_err(io::Error::from)
                .and_then(|f| read_open(&fs::File::from(f)))
            else {
                continue;
            };
            out.extend(
                String::from_utf8_lossy(&b)
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .map(HostPid),
            );
        }
        out
    };
    let mut out = if tids.len() >= 128 {
        let (a, b) = tids.split_at(tids.len() / 2);
        std::thread::scope(|s| {
            let other = s.spawn(|| read(b));
            let mut v = read(a);
            v.extend(other.join().unwrap_or_default());
            v
        })
    } else {
        read(&tids)
    };
    out.sort();
    out.dedup();
    Ok(out)
}

/// All descendants of `root` (not including it), parents before children.
pub fn descendants(root: HostPid) -> Vec<HostPid> {
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        if let Ok(kids) = children(p) {
            for k in kids {
                out.push(k);
                queue.push(k);
            }
        }
    }
    out
}

pub fn comm(pid: HostPid, tid: Option<HostPid>) -> io::Result<String> {
    let rest = match tid {
        Some(t) => format!("task/{}/comm", t.0),
        None => "comm".into(),
    };
    Ok(read_string(pid, &rest)?.trim_end_matches('\n').to_string())
}

/// The value of `name` in the environment `pid` started its program with.
pub fn env_var(pid: HostPid, name: &str) -> io::Result<Option<String>> {
    let b = read_bytes(pid, "environ")?;
    let prefix = format!("{name}=");
    Ok(b.split(|&c| c == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned()))
}

pub fn cmdline(pid: HostPid) -> io::Result<Vec<Vec<u8>>> {
    let b = read_bytes(pid, "cmdline")?;
    let mut v: Vec<Vec<u8>> = b.split(|&c| c == 0).map(|s| s.to_vec()).collect();
    if v.last().is_some_and(|s| s.is_empty()) {
        v.pop();
    }
    Ok(v)
}

pub fn auxv(pid: HostPid) -> io::Result<Vec<u64>> {
    let b = read_bytes(pid, "auxv")?;
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

pub fn link(pid: HostPid, rest: &str) -> io::Result<String> {
    let p = proc_path(pid, rest);
    fs::read_link(&p)
        .map(|t| t.to_string_lossy().into_owned())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

pub fn personality(pid: HostPid) -> io::Result<u32> {
    let s = read_string(pid, "personality")?;
    u32::from_str_radix(s.trim(), 16).map_err(|_| bad(format!("/proc/{pid}/personality: {s}")))
}

/// Open fds of a process, ascending.
pub fn fds(pid: HostPid) -> io::Result<Vec<i32>> {
    let p = proc_path(pid, "fd");
    let mut out = Vec::new();
    for e in
        fs::read_dir(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?
    {
        if let Some(n) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

/// The whole text of `/proc/PID/fdinfo/FD`.
pub fn fdinfo_text(pid: HostPid, fd: i32) -> io::Result<String> {
    read_string(pid, &format!("fdinfo/{fd}"))
}

/// `pos` and `flags` of `/proc/PID/fdinfo/FD`.
pub fn fdinfo(pid: HostPid, fd: i32) -> io::Result<(u64, i32)> {
    Ok(fdinfo_pos_flags(&fdinfo_text(pid, fd)?))
}

/// `pos` and `flags` from fdinfo text.
pub fn fdinfo_pos_flags(s: &str) -> (u64, i32) {
    let mut pos = 0;
    let mut flags = 0;
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("pos:") {
            pos = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("flags:") {
            flags = i32::from_str_radix(v.trim(), 8).unwrap_or(0);
        }
    }
    (pos, flags)
}

/// The ELF class of the file at `path`: `Some(1)` for a 32-bit ELF file,
/// `Some(2)` for a 64-bit one, `None` for anything else (a script, an
/// unreadable file).
pub fn elf_class(path: &std::path::Path) -> Option<u8> {
    let mut head = [0u8; 5];
    fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    (head[..4] == *b"\x7fELF").then_some(head[4])
}

/// Whether process `pid` runs a 32-bit program (its executable is a
/// 32-bit ELF file).
pub fn is_32bit(pid: HostPid) -> bool {
    elf_class(&proc_path(pid, "exe")) == Some(1)
}

/// The file `execvp` would run for `prog`: itself when it has a `/`, else
/// the first executable regular file of that name in `$PATH`.
pub fn resolve_program(prog: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if prog.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Pagemap bits.
pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAPPED: u64 = 1 << 62;
pub const PM_FILE_OR_SHARED: u64 = 1 << 61;

/// `_IOWR('f', 16, struct pm_scan_arg)`.
pub const PAGEMAP_SCAN: u64 = 0xc060_6610;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}
const _: () = assert!(std::mem::size_of::<PmScanArg>() == 96);

/// Reads pagemap entries for `[start, end)`.
pub struct Pagemap {
    file: fs::File,
    pid: HostPid,
}

impl Pagemap {
    pub fn open(pid: HostPid) -> io::Result<Pagemap> {
        let p = proc_path(pid, "pagemap");
        let file = fs::File::open(&p)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        Ok(Pagemap { file, pid })
    }

    pub fn file(&self) -> &fs::File {
        &self.file
    }

    /// For the file mapping `m`: the index (in pages from `m.start`) of
    /// its first page past the end of the file, where nothing can be read
    /// (`SIGBUS` for the program, `EIO` through `/proc/PID/mem`). `None`
    /// when the file cannot be looked at (through the process's root,
    /// the same inode as mapped) or the mapping lies within it.
    pub fn pages_within_file(&self, m: &MapEntry) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        if !m.name.starts_with('/') || m.name.ends_with(" (deleted)") {
            return None;
        }
        let path = format!("/proc/{}/root{}", self.pid.0, m.name);
        let md = fs::metadata(path).ok()?;
        if md.ino() != m.inode || md.dev() != m.dev {
            return None;
        }
        const PAGE: u64 = 4096;
        let file_pages = md.size().div_ceil(PAGE);
        let first = m.offset / PAGE;
        let pages = (m.end - m.start) / PAGE;
        let within = file_pages.saturating_sub(first);
        (within < pages).then_some(within)
    }

    /// The ranges of `[start, end)` with pages present or swapped, by the
    /// `PAGEMAP_SCAN` ioctl (Linux 6.7+): a walk of the page tables that
    /// skips what was never touched, so a huge sparse mapping costs what
    /// it holds, not its size. Errors on kernels without it.
    pub fn populated(&self, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
        use std::os::fd::AsRawFd;
        let mut regions = vec![PageRegion::default(); 256];
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut from = start;
        while from < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                start: from,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                ..Default::default()
            };
            // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len`
            // page_region structs to `vec`, which points into `regions`,
            // alive and unaliased for the call.
            let n = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("PAGEMAP_SCAN {from:#x}-{end:#x}: {e}"),
                ));
            }
            for r in &regions[..n as usize] {
                match out.last_mut() {
                    Some(last) if last.1 == r.start => last.1 = r.end,
                    _ => out.push((r.start, r.end)),
                }
            }
            if arg.walk_end <= from {
                return Err(io::Error::other("PAGEMAP_SCAN made no progress"));
            }
            from = arg.walk_end;
        }
        Ok(out)
    }

    /// Whether `[start, end)` has any page present or swapped: a
    /// `PAGEMAP_SCAN` that stops at the first one (Linux 6.7+).
    pub fn any_populated(&self, start: u64, end: u64) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let mut region = [PageRegion::default()];
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start,
            end,
            vec: region.as_mut_ptr() as u64,
            vec_len: 1,
            max_pages: 1,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..Default::default()
        };
        // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most one
        // page_region struct to `vec`, which points into `region`, alive
        // and unaliased for the call.
        let n = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("PAGEMAP_SCAN {start:#x}-{end:#x}: {e}"),
            ));
        }
        Ok(n > 0)
    }

    pub fn entries(&self, start: u64, end: u64) -> io::Result<Vec<u64>> {
        let n = ((end - start) / 4096) as usize;
        let mut buf = vec![0u8; n * 8];
        self.file.read_exact_at(&mut buf, (start / 4096) * 8)?;
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}

/// `/proc/PID/mem` for reading or writing a stopped target's memory.
pub struct Mem {
    file: fs::File,
    pid: HostPid,
}

impl Mem {
    pub fn open(pid: HostPid, write: bool) -> io::Result<Mem> {
        let p = proc_path(pid, "mem");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&p)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        Ok(Mem { file, pid })
    }

    pub fn read(&self, addr: RemoteAddr, buf: &mut [u8]) -> io::Result<()> {
        let addr = addr.0;
        self.file.read_exact_at(buf, addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "reading {} bytes at {addr:#x} of pid {}: {e}",
                    buf.len(),
                    self.pid
                ),
            )
        })
    }

    pub fn write(&self, addr: RemoteAddr, buf: &[u8]) -> io::Result<()> {
        let addr = addr.0;
        self.file.write_all_at(buf, addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "writing {} bytes at {addr:#x} of pid {}: {e}",
                    buf.len(),
                    self.pid
                ),
            )
        })
    }

    /// Writes a big run: `process_vm_writev` (faster), then `/proc/PID/mem`
    /// for whatever it could not write (read-only pages).
    pub fn write_fast(&self, addr: RemoteAddr, buf: &[u8]) -> io::Result<()> {
        let done = crate::kernel::sys::vm_write(self.pid.0, addr.0, buf);
        if done < buf.len() {
            self.write(addr + done as u64, &buf[done..])?;
        }
        Ok(())
    }

    /// Reads a NUL-terminated string of at most `max` bytes.
    pub fn read_cstr(&mut self, addr: RemoteAddr, max: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; max];
        self.file.seek(SeekFrom::Start(addr.0))?;
        let n = self.file.read(&mut buf)?;
        buf.truncate(n);
        if let Some(z) = buf.iter().position(|&c| c == 0) {
            buf.truncate(z);
        }
        Ok(buf)
    }
}

/// The pts number of a master fd from its fdinfo (`tty-index:`).
pub fn fdinfo_tty_index(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The processes (pid, name) with an fd open on the file `(dev, ino)`,
/// but `except`; those of other users cannot be seen and are not listed.
pub fn file_holders(dev: u64, ino: u64, except: i32) -> Vec<(i32, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == except {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino));
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_string()));
        }
    }
    out
}

/// For each socket inode of `inodes`, a process that has it open (pid and
/// comm), from `/proc/*/fd` (the processes this /proc shows and we may
/// look into).
pub fn socket_owners(
    inodes: impl IntoIterator<Item = u64>,
) -> std::collections::HashMap<u64, (i32, String)> {
    let wanted: std::collections::HashSet<u64> = inodes.into_iter().collect();
    let mut out = std::collections::HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(crate::kernel::sockdiag::socket_inode)
            else {
                continue;
            };
            if wanted.contains(&inode) && !out.contains_key(&inode) {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                out.insert(inode, (pid, comm.trim().to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn innermost_pid_is_the_last_nspid_level() {
        // A process of the computation: host pid, then its pid inside.
        let inside = kv(&[("Pid", "51234"), ("NSpid", "51234\t7")]);
        assert_eq!(innermost_pid(&inside), Some(VirtPid(7)));
        // Nested once more: still the innermost.
        let nested = kv(&[("NSpid", "900 31 2")]);
        assert_eq!(innermost_pid(&nested), Some(VirtPid(2)));
        // Not namespaced: the only level.
        assert_eq!(innermost_pid(&kv(&[("NSpid", "1")])), Some(VirtPid(1)));
        assert_eq!(innermost_pid(&kv(&[("Pid", "1")])), None);
        assert_eq!(innermost_pid(&kv(&[("NSpid", "x")])), None);
    }

    #[test]
    fn status_fields() {
        let st = kv(&[("SigBlk", "0000000000010002"), ("Name", "a b")]);
        assert_eq!(field(&st, "Name"), Some("a b"));
        assert_eq!(field(&st, "Nope"), None);
        assert_eq!(hex_field(&st, "SigBlk"), 0x10002);
        assert_eq!(hex_field(&st, "Nope"), 0);
    }

    #[test]
    fn pty_index_from_fdinfo() {
        let info = "pos:\t0\nflags:\t0100002\nmnt_id:\t30\nino:\t5\ntty-index:\t3\n";
        assert_eq!(fdinfo_tty_index(info), Some(3));
        assert_eq!(fdinfo_tty_index("pos:\t0\n"), None);
    }
}
