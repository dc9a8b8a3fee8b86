//! The supervisor's side of the inject library's state page (the
//! application API: `dmtcp_checkpoint`, `dmtcp_disable_ckpt`, ...).
//!
//! The layout is `inject/src/abi.rs`, compiled here as a module of its own
//! (no dependency on the library crate: its rlib would bring the library's
//! constructor and C exports into our binaries). Every access goes through
//! `/proc/PID/mem`; the counters are written while the process is frozen.
//!
//! Wiring (session/restorer): the Suspend barrier freezes, asks
//! [`critical_section`], and thaws and retries while one is open (then
//! [`release_waiting`] if it gives up),
//! [`prepare_capture`] once frozen, [`checkpoint_done`] before the thaw of
//! a successful checkpoint, [`Publisher`] while running, [`on_restored`]
//! before a restored process first runs.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use crate::kernel::freeze::FrozenProcess;
use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs::{self, Mem};

#[path = "../../inject/src/abi.rs"]
pub mod abi;

use abi::off;

/// Decoded state page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    pub abi_version: u32,
    pub disable_count: i32,
    pub ckpt_waiting: bool,
    pub generation: u64,
    pub restarts: u64,
    pub coord_seq: u32,
    pub coord_port: u16,
    pub coord_host: String,
    pub secret: String,
}

fn bad(addr: u64, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("state page at {addr:#x}: {what}"),
    )
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Decodes the first [`abi::STATE_SIZE`] bytes of a state page.
pub fn decode(addr: u64, b: &[u8]) -> io::Result<AgentState> {
    if b.len() < abi::STATE_SIZE {
        return Err(bad(
            addr,
            format!("{} bytes, need {}", b.len(), abi::STATE_SIZE),
        ));
    }
    if u64_at(b, off::MAGIC) != abi::STATE_MAGIC {
        return Err(bad(addr, "bad magic".into()));
    }
    let abi_version = u32_at(b, off::ABI_VERSION);
    if abi_version != abi::ABI_VERSION {
        return Err(bad(
            addr,
            format!(
                "abi version {abi_version}, this supervisor speaks {}",
                abi::ABI_VERSION
            ),
        ));
    }
    let size = u32_at(b, off::SIZE) as usize;
    if size < abi::STATE_SIZE {
        return Err(bad(addr, format!("size {size} < {}", abi::STATE_SIZE)));
    }
    Ok(AgentState {
        abi_version,
        disable_count: u32_at(b, off::DISABLE_COUNT) as i32,
        ckpt_waiting: u32_at(b, off::CKPT_WAITING) != 0,
        generation: u64_at(b, off::GENERATION),
        restarts: u64_at(b, off::RESTARTS),
        coord_seq: u32_at(b, off::COORD_SEQ),
        coord_port: u16::from_le_bytes([b[off::COORD_PORT], b[off::COORD_PORT + 1]]),
        coord_host: c_str(&b[off::COORD_HOST..off::COORD_HOST + abi::COORD_HOST_LEN]),
        secret: c_str(&b[off::SECRET..off::SECRET + abi::SECRET_LEN]),
    })
}

fn has_magic(mem: &Mem, addr: RemoteAddr) -> bool {
    let mut b = [0u8; 16];
    mem.read(addr, &mut b).is_ok()
        && u64_at(&b, off::MAGIC) == abi::STATE_MAGIC
        && u32_at(&b, off::ABI_VERSION) == abi::ABI_VERSION
}

/// Address of the process's state page: the VMA named `[anon:dmtcp_state]`,
/// or (kernels without VMA names) the one-page private anonymous read-write
/// VMA that starts with the magic.
pub fn find_state(pid: HostPid) -> Option<RemoteAddr> {
    state_in(pid, &procfs::maps(pid).ok()?)
}

/// [`find_state`] with the process's memory map read already.
fn state_in(pid: HostPid, maps: &[procfs::MapEntry]) -> Option<RemoteAddr> {
    if let Some(m) = maps.iter().find(|m| m.name == abi::STATE_MAPS_NAME) {
        return Some(RemoteAddr(m.start));
    }
    let mem = Mem::open(pid, false).ok()?;
    maps.iter()
        .filter(|m| {
            m.end - m.start == abi::STATE_MAP_LEN as u64
                && m.read
                && m.write
                && !m.shared
                && m.inode == 0
                && m.name.is_empty()
        })
        .map(|m| RemoteAddr(m.start))
        .find(|&a| has_magic(&mem, a))
}

pub fn read_state(mem: &Mem, addr: RemoteAddr) -> io::Result<AgentState> {
    let mut b = [0u8; abi::STATE_SIZE];
    mem.read(addr, &mut b)?;
    decode(addr.0, &b)
}

/// Whether a thread is inside `dmtcp_disable_ckpt()` (read while frozen).
pub fn ckpt_disabled(mem: &Mem, addr: RemoteAddr) -> io::Result<bool> {
    Ok(read_state(mem, addr)?.disable_count > 0)
}

/// Tells `dmtcp_disable_ckpt()` that a checkpoint waits (it then lets the
/// checkpoint go first instead of opening a new section).
pub fn set_waiting(mem: &Mem, addr: RemoteAddr, waiting: bool) -> io::Result<()> {
    read_state(mem, addr)?;
    mem.write(
        addr + off::CKPT_WAITING as u64,
        &u32::from(waiting).to_le_bytes(),
    )
}

/// One more completed checkpoint for this process (while frozen).
pub fn bump_generation(mem: &Mem, addr: RemoteAddr) -> io::Result<()> {
    let st = read_state(mem, addr)?;
    mem.write(
        addr + off::GENERATION as u64,
        &(st.generation + 1).to_le_bytes(),
    )
}

/// The process was restarted from an image (before it runs again): the
/// restart count goes up, the generation counts the checkpoint it was
/// restored from (its image was taken just before the bump), no checkpoint
/// waits, and the coordinator of the old run is forgotten until the new
/// supervisor publishes its own.
pub fn note_restart(mem: &Mem, addr: RemoteAddr) -> io::Result<()> {
    let st = read_state(mem, addr)?;
    mem.write(
        addr + off::RESTARTS as u64,
        &(st.restarts + 1).to_le_bytes(),
    )?;
    mem.write(
        addr + off::GENERATION as u64,
        &(st.generation + 1).to_le_bytes(),
    )?;
    mem.write(addr + off::CKPT_WAITING as u64, &0u32.to_le_bytes())?;
    mem.write(addr + off::COORD_SEQ as u64, &0u32.to_le_bytes())
}

/// Publishes the coordinator (seqlock: odd while writing, then even).
/// Host and secret are truncated to their fields (63 and 127 bytes).
pub fn set_coordinator(
    mem: &Mem,
    addr: RemoteAddr,
    host: &str,
    port: u16,
    secret: &str,
) -> io::Result<()> {
    let st = read_state(mem, addr)?;
    let seq = st.coord_seq | 1;
    let seq_at = addr + off::COORD_SEQ as u64;
    mem.write(seq_at, &seq.to_le_bytes())?;
    let mut h = [0u8; abi::COORD_HOST_LEN];
    let hb = host.as_bytes();
    let n = hb.len().min(abi::COORD_HOST_LEN - 1);
    h[..n].copy_from_slice(&hb[..n]);
    let mut s = [0u8; abi::SECRET_LEN];
    let sb = secret.as_bytes();
    let n = sb.len().min(abi::SECRET_LEN - 1);
    s[..n].copy_from_slice(&sb[..n]);
    mem.write(addr + off::COORD_PORT as u64, &port.to_le_bytes())?;
    mem.write(addr + off::COORD_HOST as u64, &h)?;
    mem.write(addr + off::SECRET as u64, &s)?;
    mem.write(seq_at, &seq.wrapping_add(1).max(2).to_le_bytes())
}

/// How long a checkpoint waits for critical sections:
/// `DMTCP_BARRIER_TIMEOUT` (the coordinator's, default 120 s) minus a margin.
pub fn critical_section_wait() -> Duration {
    let secs = std::env::var("DMTCP_BARRIER_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(120);
    Duration::from_secs(secs.saturating_sub(5).max(1))
}

/// With every process frozen: the first one inside `dmtcp_disable_ckpt()`
/// (pid, open sections), after marking it as having a checkpoint waiting.
/// The caller thaws, sleeps ~10 ms and freezes again.
pub fn critical_section(frozen: &[FrozenProcess]) -> Option<(HostPid, i32)> {
    for fp in frozen {
        let Some(addr) = find_state(fp.pid) else {
            continue;
        };
        let Ok(mem) = Mem::open(fp.pid, true) else {
            continue;
        };
        if let Ok(st) = read_state(&mem, addr) {
            if st.disable_count > 0 {
                let _ = set_waiting(&mem, addr, true);
                return Some((fp.pid, st.disable_count));
            }
        }
    }
    None
}

/// Without namespaces: the first frozen process that runs under seccomp
/// filters while its inject library has not finished starting (between an
/// exec and the end of the library's constructor: no state page yet, or no
/// SIGSYS handler recorded in it, which the library writes last). Until
/// then the raw pid trap filter it inherited cannot be told from a filter
/// of the program's own (unprivileged, the filters cannot be read), and
/// the capture would refuse it; the caller thaws and tries again shortly,
/// as for a critical section. A program without the library (static,
/// or exec'd without `LD_PRELOAD`) is never waited for.
pub fn library_starting(frozen: &[FrozenProcess]) -> Option<HostPid> {
    if !crate::kernel::pid::virt::enabled() {
        return None;
    }
    frozen.iter().map(|fp| fp.pid).find(|&pid| {
        let filtered = crate::kernel::seccomp::thread_mode(pid, pid)
            .is_ok_and(|m| m.mode == 2 && m.filters > 0);
        if !filtered {
            return false;
        }
        let Ok(maps) = procfs::maps(pid) else {
            return false;
        };
        if let Some(addr) = state_in(pid, &maps) {
            return Mem::open(pid, false).is_ok_and(|mem| sigsys_handler(&mem, addr) == 0);
        }
        // No state page yet: only if the library is coming.
        library_coming(pid, &maps)
    })
}

/// Whether `pid`, without a state page, is a program whose inject library
/// is still to come: the dynamic loader is mapped (a program just exec'd)
/// and the environment it started with preloads the library.
pub fn library_coming(pid: HostPid, maps: &[procfs::MapEntry]) -> bool {
    maps.iter().any(|m| m.name.contains("/ld-linux"))
        && procfs::env_var(pid, "LD_PRELOAD")
            .ok()
            .flatten()
            .is_some_and(|v| v.contains("libdmtcp_inject"))
}

/// After giving up on a checkpoint: no checkpoint waits any more.
pub fn release_waiting(pids: &[HostPid]) {
    for &pid in pids {
        if let (Some(addr), Ok(mem)) = (find_state(pid), Mem::open(pid, true)) {
            let _ = set_waiting(&mem, addr, false);
        }
    }
}

/// Once frozen for a checkpoint: clears the waiting flag (so it is not in
/// the image) and publishes the coordinator (covers processes that exec'd
/// since the last publication).
pub fn prepare_capture(frozen: &[FrozenProcess], host: &str, port: u16, secret: &str) {
    for fp in frozen {
        if let (Some(addr), Ok(mem)) = (find_state(fp.pid), Mem::open(fp.pid, true)) {
            let _ = set_waiting(&mem, addr, false);
            if let Err(e) = set_coordinator(&mem, addr, host, port, secret) {
                tracing::debug!("pid {}: publishing the coordinator: {e}", fp.pid);
            }
        }
    }
}

/// Every image of the checkpoint is written: bump each process's generation
/// (still frozen, so the program sees the new value when it resumes).
pub fn checkpoint_done(frozen: &[FrozenProcess]) {
    for fp in frozen {
        if let (Some(addr), Ok(mem)) = (find_state(fp.pid), Mem::open(fp.pid, true)) {
            if let Err(e) = bump_generation(&mem, addr) {
                tracing::debug!("pid {}: generation: {e}", fp.pid);
            }
        }
    }
}

/// Without namespaces: writes the (virtual, real) pid table the library
/// translates with (while the process is stopped, before it runs).
///
/// The table it replaces (the one of the run the image was taken from)
/// gives each row its previous real id, in a column after the pairs: a
/// thread stopped between a system call and the translation of the id it
/// returned holds an id of that run ([`abi::PIDMAP_PREV_OFF`]). Ids of
/// that run no process has now (processes reaped before the checkpoint)
/// get rows of their own, with real id 0. The column is left out when it
/// does not fit.
pub fn set_pid_map(mem: &Mem, addr: RemoteAddr, pairs: &[(i32, i32)]) -> io::Result<()> {
    read_state(mem, addr)?;
    if pairs.len() > abi::PIDMAP_MAX {
        return Err(io::Error::other(format!(
            "{} processes and threads restored under new pids: the pid table holds {}",
            pairs.len(),
            abi::PIDMAP_MAX
        )));
    }
    let old = pid_map(mem, addr)?;
    let rows = with_previous(pairs, &old);
    let (rows, prev) = if rows.len() <= abi::PIDMAP_PREV_MAX {
        (rows, true)
    } else {
        (pairs.iter().map(|&(v, r)| (v, r, v)).collect(), false)
    };
    let mut b = Vec::with_capacity(rows.len() * 12);
    for (v, r, _) in &rows {
        b.extend_from_slice(&v.to_le_bytes());
        b.extend_from_slice(&r.to_le_bytes());
    }
    if prev {
        for (_, _, p) in &rows {
            b.extend_from_slice(&p.to_le_bytes());
        }
    }
    mem.write(addr + abi::PIDMAP_PAIRS as u64, &b)?;
    mem.write(
        addr + abi::PIDMAP_PREV_OFF as u64,
        &u32::from(prev).to_le_bytes(),
    )?;
    mem.write(
        addr + abi::PIDMAP_OFF as u64,
        &(rows.len() as u32).to_le_bytes(),
    )
}

/// The exec pid table file (`abi::VPID_KEY_ENV`) of the table in the state
/// page at `addr`, as [`set_pid_map`] wrote it.
pub fn exec_table_file(mem: &Mem, addr: RemoteAddr) -> io::Result<Vec<u8>> {
    read_state(mem, addr)?;
    let mut w = [0u8; 4];
    mem.read(addr + abi::PIDMAP_OFF as u64, &mut w)?;
    let n = u32::from_le_bytes(w) as usize;
    mem.read(addr + abi::PIDMAP_PREV_OFF as u64, &mut w)?;
    let prev = u32::from_le_bytes(w) == 1;
    let len = n * if prev { 12 } else { 8 };
    if abi::PIDMAP_PAIRS + len > abi::STATE_MAP_LEN {
        return Err(io::Error::other(format!("a pid table of {n} rows")));
    }
    let mut b = Vec::with_capacity(abi::VPID_FILE_HDR + len);
    b.extend_from_slice(abi::VPID_FILE_MAGIC);
    b.extend_from_slice(&u32::from(prev).to_le_bytes());
    b.extend_from_slice(&(n as u32).to_le_bytes());
    b.resize(abi::VPID_FILE_HDR + len, 0);
    mem.read(
        addr + abi::PIDMAP_PAIRS as u64,
        &mut b[abi::VPID_FILE_HDR..],
    )?;
    Ok(b)
}

/// Rows (virtual, real, previous real) of a new table `pairs` replacing
/// `old`: an id not in the old table was its own real id; the old table's
/// ids that are not in the new one follow with real id 0.
fn with_previous(pairs: &[(i32, i32)], old: &[(i32, i32)]) -> Vec<(i32, i32, i32)> {
    let before = |v: i32| {
        old.iter()
            .find(|&&(ov, or)| ov == v && or > 0)
            .map_or(v, |&(_, or)| or)
    };
    let mut rows: Vec<(i32, i32, i32)> = pairs.iter().map(|&(v, r)| (v, r, before(v))).collect();
    for &(ov, or) in old {
        if or > 0 && or != ov && !pairs.iter().any(|&(v, _)| v == ov) {
            rows.push((ov, 0, or));
        }
    }
    rows
}

/// The (virtual, real) pid table of a process (empty before a restart).
pub fn pid_map(mem: &Mem, addr: RemoteAddr) -> io::Result<Vec<(i32, i32)>> {
    read_state(mem, addr)?;
    let mut n = [0u8; 4];
    mem.read(addr + abi::PIDMAP_OFF as u64, &mut n)?;
    let n = (u32::from_le_bytes(n) as usize).min(abi::PIDMAP_MAX);
    let mut b = vec![0u8; n * 8];
    mem.read(addr + abi::PIDMAP_PAIRS as u64, &mut b)?;
    Ok(b.chunks_exact(8)
        .map(|c| {
            let v = i32::from_le_bytes(c[0..4].try_into().expect("4 bytes"));
            let r = i32::from_le_bytes(c[4..8].try_into().expect("4 bytes"));
            (v, r)
        })
        .collect())
}

/// Where glibc keeps a thread's kernel tid, from its thread pointer, as
/// the library found it (`None`: not found, or an older library).
pub fn tid_offset(mem: &Mem, addr: RemoteAddr) -> Option<u64> {
    let mut b = [0u8; 4];
    mem.read(addr + abi::TID_OFFSET_OFF as u64, &mut b).ok()?;
    Some(u64::from(u32::from_le_bytes(b))).filter(|&o| o != 0)
}

/// The address of the library's SIGSYS handler for raw pid calls, as it
/// wrote it (0: none, or an older library).
pub fn sigsys_handler(mem: &Mem, addr: RemoteAddr) -> u64 {
    let mut b = [0u8; 8];
    match mem.read(addr + abi::SIGSYS_HANDLER_OFF as u64, &mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0,
    }
}

/// The restorer glibc gave the library's SIGSYS handler (0: none, or an
/// older library).
pub fn sigsys_lib_restorer(mem: &Mem, addr: RemoteAddr) -> u64 {
    let mut b = [0u8; 8];
    match mem.read(addr + abi::SIGSYS_LIB_RESTORER_OFF as u64, &mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0,
    }
}

/// Records the program's own SIGSYS action (handler, flags, restorer,
/// mask) in the state page, where the library keeps it while the kernel's
/// action is the library's handler.
pub fn set_sigsys_prog(mem: &Mem, addr: RemoteAddr, action: [u64; 4]) -> io::Result<()> {
    let b: Vec<u8> = action.iter().flat_map(|w| w.to_le_bytes()).collect();
    mem.write(addr + abi::SIGSYS_PROG_OFF as u64, &b)
}

/// The address of the library's trampoline for waits made again after a
/// restart (0: none, or an older library; see `inject::vpid`).
pub fn wait_redo(mem: &Mem, addr: RemoteAddr) -> u64 {
    let mut b = [0u8; 8];
    match mem.read(addr + abi::WAIT_REDO_OFF as u64, &mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0,
    }
}

/// Whether the state page says the trap filter for raw pid calls is the
/// root of the process's seccomp chains (`resources::vpid_trap`).
pub fn trap_filter(mem: &Mem, addr: RemoteAddr) -> io::Result<bool> {
    let mut b = [0u8; 4];
    mem.read(addr + abi::TRAP_FILTER_OFF as u64, &mut b)?;
    Ok(u32::from_le_bytes(b) == 1)
}

pub fn set_trap_filter(mem: &Mem, addr: RemoteAddr, on: bool) -> io::Result<()> {
    mem.write(
        addr + abi::TRAP_FILTER_OFF as u64,
        &u32::from(on).to_le_bytes(),
    )
}

/// A restored process, before it runs: count the restart (no state page:
/// the library was not loaded, nothing to do).
pub fn on_restored(pid: HostPid, mem: &Mem) {
    if let Some(addr) = find_state(pid) {
        if let Err(e) = note_restart(mem, addr) {
            tracing::warn!("pid {pid}: application API state: {e}");
        }
    }
}

/// Publishes the coordinator to running processes as soon as their library
/// has mapped its page (the API needs it before the first checkpoint, and
/// after a restart, possibly on another port).
#[derive(Debug, Default)]
pub struct Publisher {
    /// Attempts per process; `u32::MAX` = published.
    tries: HashMap<HostPid, u32>,
    published: Option<(String, u16, String)>,
}

/// Give up on a process without a state page after this many attempts
/// (it gets the coordinator at the next checkpoint anyway).
const MAX_TRIES: u32 = 50;

impl Publisher {
    /// Tries the processes not yet served; call from the idle loop.
    pub fn publish(&mut self, pids: &[HostPid], host: &str, port: u16, secret: &str) {
        let coord = (host.to_string(), port, secret.to_string());
        if self.published.as_ref() != Some(&coord) {
            self.tries.clear();
            self.published = Some(coord);
        }
        self.tries.retain(|p, _| pids.contains(p));
        for &pid in pids {
            let tries = self.tries.entry(pid).or_insert(0);
            if *tries >= MAX_TRIES {
                continue;
            }
            *tries += 1;
            let Some(addr) = find_state(pid) else {
                continue;
            };
            let Ok(mem) = Mem::open(pid, true) else {
                continue;
            };
            match set_coordinator(&mem, addr, host, port, secret) {
                Ok(()) => *tries = u32::MAX,
                Err(e) => tracing::debug!("pid {pid}: publishing the coordinator: {e}"),
            }
        }
    }

    /// Whether some process still waits for its publication.
    pub fn pending(&self) -> bool {
        self.tries.values().any(|&t| t < MAX_TRIES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exec pid table file: what the library accepts.
    #[test]
    fn exec_table_file_rows() {
        let file = |prev: u32, n: u32, rows: usize| {
            let mut b = abi::VPID_FILE_MAGIC.to_vec();
            b.extend_from_slice(&prev.to_le_bytes());
            b.extend_from_slice(&n.to_le_bytes());
            b.resize(abi::VPID_FILE_HDR + rows, 7);
            b
        };
        assert_eq!(
            abi::vpid_file_rows(&file(0, 2, 16)).map(|r| (r.0, r.1, r.2.len())),
            Some((false, 2, 16))
        );
        assert_eq!(
            abi::vpid_file_rows(&file(1, 2, 24)).map(|r| (r.0, r.1, r.2.len())),
            Some((true, 2, 24))
        );
        assert_eq!(abi::vpid_file_rows(&file(0, 0, 0)).map(|r| r.1), Some(0));
        // Sizes that do not match the count, a bad flag, too many rows.
        assert!(abi::vpid_file_rows(&file(1, 2, 16)).is_none());
        assert!(abi::vpid_file_rows(&file(0, 2, 17)).is_none());
        assert!(abi::vpid_file_rows(&file(2, 0, 0)).is_none());
        let n = abi::PIDMAP_MAX as u32 + 1;
        assert!(abi::vpid_file_rows(&file(0, n, n as usize * 8)).is_none());
        let mut bad = file(0, 0, 0);
        bad[0] ^= 1;
        assert!(abi::vpid_file_rows(&bad).is_none());
        assert!(abi::vpid_key_ok("0123456789abcdef"));
        assert!(!abi::vpid_key_ok("0123456789abcde"));
        assert!(!abi::vpid_key_ok("../../etc/passwd0000"));
        assert!(!abi::vpid_key_ok("0123456789ABCDEF"));
    }

    fn page() -> Vec<u8> {
        let mut b = vec![0u8; abi::STATE_SIZE];
        b[0..8].copy_from_slice(b"DMTCPST1");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&(abi::STATE_SIZE as u32).to_le_bytes());
        b
    }

    #[test]
    fn layout_is_the_documented_one() {
        assert_eq!(abi::STATE_MAGIC.to_le_bytes(), *b"DMTCPST1");
        assert_eq!(
            abi::ABI_VERSION,
            1,
            "layout changed: bump ABI_VERSION and the docs"
        );
        let offs = [
            off::MAGIC,
            off::ABI_VERSION,
            off::SIZE,
            off::DISABLE_COUNT,
            off::CKPT_WAITING,
            off::GENERATION,
            off::RESTARTS,
            off::COORD_SEQ,
            off::COORD_PORT,
            off::COORD_HOST,
            off::SECRET,
        ];
        assert_eq!(offs, [0, 8, 12, 16, 20, 24, 32, 40, 44, 48, 112]);
        assert_eq!(abi::STATE_SIZE, 240);
        assert_eq!(
            abi::STATE_MAPS_NAME,
            format!("[anon:{}]", abi::STATE_VMA_NAME)
        );
    }

    #[test]
    fn decodes_fields() {
        let mut b = page();
        b[16..20].copy_from_slice(&2i32.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&7u64.to_le_bytes());
        b[32..40].copy_from_slice(&3u64.to_le_bytes());
        b[40..44].copy_from_slice(&4u32.to_le_bytes());
        b[44..46].copy_from_slice(&7779u16.to_le_bytes());
        b[48..57].copy_from_slice(b"127.0.0.1");
        b[112..118].copy_from_slice(b"s3cret");
        let st = decode(0x1000, &b).unwrap();
        assert_eq!(
            st,
            AgentState {
                abi_version: 1,
                disable_count: 2,
                ckpt_waiting: true,
                generation: 7,
                restarts: 3,
                coord_seq: 4,
                coord_port: 7779,
                coord_host: "127.0.0.1".into(),
                secret: "s3cret".into(),
            }
        );
    }

    #[test]
    fn rejects_foreign_pages() {
        let mut b = page();
        b[0] = b'X';
        assert!(decode(0, &b).is_err());
        let mut b = page();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(decode(0, &b).is_err());
        assert!(decode(0, &page()[..100]).is_err());
    }

    /// The pid table and the tid offset through /proc/self/mem.
    #[test]
    fn pid_table_round_trips_through_proc_mem() {
        let mut b = page();
        b.resize(abi::STATE_MAP_LEN, 0);
        // The library's tid offset, as it would write it.
        b[abi::TID_OFFSET_OFF..abi::TID_OFFSET_OFF + 4].copy_from_slice(&0x2d0u32.to_le_bytes());
        let addr = RemoteAddr(b.as_mut_ptr() as u64);
        let me = HostPid(std::process::id() as i32);
        let mem = Mem::open(me, true).unwrap();
        assert_eq!(pid_map(&mem, addr).unwrap(), vec![]);
        let pairs = vec![(100, 4242), (101, 4243), (7, 9)];
        set_pid_map(&mem, addr, &pairs).unwrap();
        assert_eq!(pid_map(&mem, addr).unwrap(), pairs);
        assert_eq!(tid_offset(&mem, addr), Some(0x2d0));
        let i32_at = |b: &[u8], o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let prev_of = |b: &[u8], n: usize| -> Vec<i32> {
            (0..n)
                .map(|i| i32_at(b, abi::PIDMAP_PAIRS + 8 * n + 4 * i))
                .collect()
        };
        // First restart: the previous real ids are the virtual ones.
        assert_eq!(i32_at(&b, abi::PIDMAP_PREV_OFF), 1);
        assert_eq!(prev_of(&b, 3), vec![100, 101, 7]);
        // Second restart: 101 was reaped before the checkpoint, 102 was
        // born after the first restart (its own real id then).
        let next = vec![(100, 5000), (7, 5001), (102, 5002)];
        set_pid_map(&mem, addr, &next).unwrap();
        assert_eq!(
            pid_map(&mem, addr).unwrap(),
            vec![(100, 5000), (7, 5001), (102, 5002), (101, 0)]
        );
        assert_eq!(prev_of(&b, 4), vec![4242, 9, 102, 4243]);
        let too_many = vec![(1, 2); abi::PIDMAP_MAX + 1];
        assert!(set_pid_map(&mem, addr, &too_many).is_err());
        // A table too long for the column is written without it.
        let long: Vec<(i32, i32)> = (0..abi::PIDMAP_PREV_MAX as i32 + 1)
            .map(|i| (i + 1, i + 10_000))
            .collect();
        set_pid_map(&mem, addr, &long).unwrap();
        assert_eq!(pid_map(&mem, addr).unwrap(), long);
        assert_eq!(i32_at(&b, abi::PIDMAP_PREV_OFF), 0);
        std::hint::black_box(&mut b);
    }

    /// Round trip through a real process's memory: our own, via
    /// /proc/self/mem (the encoding the library reads).
    #[test]
    fn writes_through_proc_mem() {
        let mut b = page();
        let addr = RemoteAddr(b.as_mut_ptr() as u64);
        let me = HostPid(std::process::id() as i32);
        let mem = Mem::open(me, true).unwrap();
        set_coordinator(&mem, addr, "example.org", 4242, "abc").unwrap();
        bump_generation(&mem, addr).unwrap();
        note_restart(&mem, addr).unwrap();
        set_coordinator(&mem, addr, "h", 1, "s").unwrap();
        let st = read_state(&mem, addr).unwrap();
        assert_eq!(st.generation, 2);
        assert_eq!(st.restarts, 1);
        assert_eq!(
            (st.coord_host.as_str(), st.coord_port, st.secret.as_str()),
            ("h", 1, "s")
        );
        assert_eq!(st.coord_seq % 2, 0);
        assert!(st.coord_seq >= 2);
        std::hint::black_box(&mut b);
    }
}
