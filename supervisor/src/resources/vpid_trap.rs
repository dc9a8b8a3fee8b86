//! Without namespaces, after a restart: the seccomp filter that sends the
//! program's raw pid system calls (a `syscall` instruction outside libc)
//! to the inject library's SIGSYS handler (`inject/src/vpid_trap.rs`).
//!
//! One filter per process, installed with TSYNC at the root of every
//! thread's chain before the program's own filters
//! (`resources::seccomp::restore`): for the calls of
//! `abi::vtrap::CALLS`, `SECCOMP_RET_TRAP | TRAP_DATA` when the
//! instruction pointer lies in one of the process's file-backed executable
//! mappings other than libc, the dynamic loader and the inject library
//! (their calls carry kernel pids already: the library's wrappers
//! translated them, and glibc's internal ones use kernel ids such as the
//! rewritten tid cache); `getppid(PROBE)` answers `-PROBE_ERRNO` so that
//! the library finds the filter after an exec; everything else is allowed.
//! The ranges are the restored process's, so after an exec the new image's
//! code is (barring an address collision) not trapped.
//!
//! A process gets the filter only when its restored SIGSYS action is the
//! library's handler (the address the library wrote into its state page).
//! The state page's `trap_filter` says it is there, for the capture
//! (`resources::seccomp::capture` leaves the root filter out of the image).

use std::io;

use dmtcp_image::{ProcessImage, SigAction};

use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs::{self, MapEntry, Mem};

use crate::agent::abi;
use abi::vtrap::{PROBE, PROBE_ERRNO, TRAP_DATA};

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JGT_K: u16 = 0x25;
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;
const ARG1_LO: u32 = 24;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `struct seccomp_data` offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
const IP_LO: u32 = 8;
const IP_HI: u32 = 12;
const ARG0_LO: u32 = 16;
const ARG0_HI: u32 = 20;
/// Longest BPF program the kernel takes.
const MAX_INSNS: usize = 4096;

/// Whether a mapping's file is one whose calls are not trapped: libc
/// (and an old glibc's libpthread), the loader, the inject library.
fn exempt(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    [
        "libc.so",
        "libc-",
        "libpthread",
        "ld-linux",
        "ld64.so",
        "libdmtcp_inject",
    ]
    .iter()
    .any(|p| base.starts_with(p))
}

/// The trapped ranges, `[first, last]` with one high word each, in order.
pub fn ranges(maps: &[MapEntry]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for m in maps
        .iter()
        .filter(|m| m.exec && m.name.starts_with('/') && !exempt(&m.name))
    {
        let (mut s, e) = (m.start, m.end);
        while s < e {
            let hi_end = ((s >> 32) + 1) << 32;
            let last = (e.min(hi_end)) - 1;
            match out.last_mut() {
                Some(prev) if prev.1 + 1 == s && prev.0 >> 32 == s >> 32 => prev.1 = last,
                _ => out.push((s, last)),
            }
            s = last + 1;
        }
    }
    out
}

/// `DMTCP_RAW_PID_TRAP=0` in the environment of `dmtcp-restart`: no trap
/// (raw calls see kernel pids, and the other system calls do not pay for a
/// filter).
pub const ENV: &str = "DMTCP_RAW_PID_TRAP";

fn enabled() -> bool {
    std::env::var_os(ENV).is_none_or(|v| v != "0")
}

/// Restart, before the filters go in: the trap filter this restored
/// process gets (`None`: with namespaces, no library, or a SIGSYS action
/// that is not the library's), and its state page (whose `trap_filter`
/// the caller sets accordingly: the image may carry a 1 from the last run).
pub fn wanted(
    pid: HostPid,
    meta: &ProcessImage,
    mem: &Mem,
) -> (Option<Vec<u8>>, Option<RemoteAddr>) {
    if !crate::kernel::pid::virt::enabled() {
        return (None, None);
    }
    let Some(addr) = crate::agent::find_state(pid) else {
        return (None, None);
    };
    if !enabled() {
        return (None, Some(addr));
    }
    // Strict mode cannot follow a filter (the kernel keeps one mode).
    if meta.security.threads.iter().any(|t| t.strict) {
        tracing::debug!("pid {pid}: strict seccomp mode: no raw pid trap");
        return (None, Some(addr));
    }
    let handler = crate::agent::sigsys_handler(mem, addr);
    let action = sigsys_action(meta, mem, addr).handler;
    if handler == 0 || action != handler {
        tracing::debug!(
            "pid {pid}: no raw pid trap (SIGSYS action {action:#x}, the library's {handler:#x})"
        );
        return (None, Some(addr));
    }
    // Virtual pids whose process has another kernel pid now: glibc's own
    // waits for them (`pclose`, `system`: pids it kept) are trapped too.
    let stale: Vec<i32> = crate::kernel::pid::virt::pairs()
        .into_iter()
        .filter(|&(v, r)| r > 0 && v != r)
        .map(|(v, _)| v)
        .collect();
    let prog = procfs::maps(pid).and_then(|maps| filter(&maps, &stale));
    match prog {
        Ok(p) => (p, Some(addr)),
        Err(e) => {
            tracing::warn!("pid {pid}: raw pid calls stay untranslated: {e}");
            (None, Some(addr))
        }
    }
}

/// The image's SIGSYS action.
fn image_sigsys(meta: &ProcessImage) -> SigAction {
    meta.process
        .sigactions
        .get((libc::SIGSYS - 1) as usize)
        .copied()
        .unwrap_or_default()
}

/// The SIGSYS action a restored process gets without namespaces. When the
/// image's is not the library's handler but the library is there (the
/// program replaced the handler with a raw `rt_sigaction`, before any
/// restart when nothing traps that call), the library's handler goes back
/// into the kernel, with glibc's restorer, and the program's action into
/// the state page, where the library keeps it and hands it every SIGSYS
/// that is not a trap of ours (its `vpid_trap`). Otherwise the image's.
pub fn sigsys_action(meta: &ProcessImage, mem: &Mem, addr: RemoteAddr) -> SigAction {
    let image = image_sigsys(meta);
    if !crate::kernel::pid::virt::enabled() || !enabled() {
        return image;
    }
    let handler = crate::agent::sigsys_handler(mem, addr);
    let restorer = crate::agent::sigsys_lib_restorer(mem, addr);
    if handler == 0 || restorer == 0 || image.handler == handler {
        return image;
    }
    if meta.security.threads.iter().any(|t| t.strict) {
        return image;
    }
    SigAction {
        handler,
        flags: abi::SIGSYS_LIB_FLAGS | abi::SA_RESTORER,
        restorer,
        mask: 0,
    }
}

/// Restart, with the memory in place: when [`sigsys_action`] gives the
/// kernel's SIGSYS action to the library, the program's own action from
/// the image goes into the state page.
pub fn hand_sigsys_to_library(pid: HostPid, meta: &ProcessImage, mem: &Mem) -> io::Result<()> {
    let Some(addr) = crate::agent::find_state(pid) else {
        return Ok(());
    };
    let image = image_sigsys(meta);
    if sigsys_action(meta, mem, addr) == image {
        return Ok(());
    }
    tracing::debug!(
        "pid {pid}: SIGSYS handler {:#x} set by the program itself: the library's back in the kernel, the program's kept by the library",
        image.handler
    );
    crate::agent::set_sigsys_prog(
        mem,
        addr,
        [image.handler, image.flags, image.restorer, image.mask],
    )
}

/// Capture: whether the state page of `pid` says the trap filter is in.
pub fn present(pid: HostPid, maps: &[MapEntry], mem: &Mem) -> bool {
    let addr = maps
        .iter()
        .find(|m| m.name == abi::STATE_MAPS_NAME)
        .map(|m| RemoteAddr(m.start))
        .or_else(|| crate::agent::find_state(pid));
    addr.is_some_and(|a| crate::agent::trap_filter(mem, a).unwrap_or(false))
}

fn insn(code: u16, jt: u8, jf: u8, k: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&code.to_ne_bytes());
    out.push(jt);
    out.push(jf);
    out.extend_from_slice(&k.to_ne_bytes());
}

/// The inject library's code, `[first, last]` ranges as [`ranges`] makes
/// them: its own system calls are never trapped by [`stale_waits`].
fn library_ranges(maps: &[MapEntry]) -> Vec<(u64, u64)> {
    let lib: Vec<MapEntry> = maps
        .iter()
        .filter(|m| {
            m.exec
                && m.name
                    .rsplit('/')
                    .next()
                    .is_some_and(|b| b.starts_with("libdmtcp_inject"))
        })
        .map(|m| MapEntry {
            name: "/library".into(),
            ..m.clone()
        })
        .collect();
    ranges(&lib)
}

/// The end of the filter, reached by every call that no trapped range
/// claimed: `wait4(PID)` and `waitid(P_PID, PID)` for a `PID` of `stale`
/// (a virtual pid whose process has another kernel pid now), made from
/// anywhere but the inject library, are trapped; glibc's own waits
/// (`pclose`, `system`) use the pid the child had at its birth, its
/// virtual pid. Everything else is allowed. (A wrapper's call whose
/// kernel pid happens to equal such a virtual pid is trapped too; the
/// library's handler makes it untranslated.)
fn stale_waits(stale: &[i32], lib: &[(u64, u64)], p: &mut Vec<u8>) {
    if stale.is_empty() {
        insn(RET_K, 0, 0, RET_ALLOW, p);
        return;
    }
    let block = |arg_lo: u32, p: &mut Vec<u8>| {
        for &(first, last) in lib {
            insn(LD_W_ABS, 0, 0, IP_HI, p);
            insn(JEQ_K, 0, 4, (first >> 32) as u32, p);
            insn(LD_W_ABS, 0, 0, IP_LO, p);
            insn(JGE_K, 0, 2, first as u32, p);
            insn(JGT_K, 1, 0, last as u32, p);
            insn(RET_K, 0, 0, RET_ALLOW, p);
        }
        insn(LD_W_ABS, 0, 0, arg_lo, p);
        for &v in stale {
            insn(JEQ_K, 0, 1, v as u32, p);
            insn(RET_K, 0, 0, RET_TRAP | TRAP_DATA, p);
        }
        insn(RET_K, 0, 0, RET_ALLOW, p);
    };
    let mut w4 = Vec::new();
    block(ARG0_LO, &mut w4);
    let mut wid = Vec::new();
    insn(LD_W_ABS, 0, 0, ARG0_LO, &mut wid);
    insn(JEQ_K, 1, 0, libc::P_PID, &mut wid);
    insn(RET_K, 0, 0, RET_ALLOW, &mut wid);
    block(ARG1_LO, &mut wid);
    insn(LD_W_ABS, 0, 0, NR, p);
    insn(JEQ_K, 0, 1, libc::SYS_wait4 as u32, p);
    insn(JA, 0, 0, 3, p);
    insn(JEQ_K, 0, 1, libc::SYS_waitid as u32, p);
    insn(JA, 0, 0, 1 + (w4.len() / 8) as u32, p);
    insn(RET_K, 0, 0, RET_ALLOW, p);
    p.extend_from_slice(&w4);
    p.extend_from_slice(&wid);
}

/// Instructions [`stale_waits`] makes.
fn stale_waits_len(stale: usize, lib: usize) -> usize {
    if stale == 0 {
        1
    } else {
        6 + (6 * lib + 1 + 2 * stale + 1) * 2 + 3
    }
}

/// The filter (`struct sock_filter` array) for a process with `maps`, or
/// `None` when it has no code to trap and no stale pid to wait for.
pub fn filter(maps: &[MapEntry], stale: &[i32]) -> io::Result<Option<Vec<u8>>> {
    let ranges = ranges(maps);
    if ranges.is_empty() && stale.is_empty() {
        return Ok(None);
    }
    let lib = library_ranges(maps);
    let calls = abi::vtrap::CALLS;
    let n = 10 + 5 + calls.len() + 2 + 6 * ranges.len() + stale_waits_len(stale.len(), lib.len());
    if n > MAX_INSNS {
        return Err(io::Error::other(format!(
            "{} executable ranges: too many for one seccomp filter",
            ranges.len()
        )));
    }
    let mut p = Vec::with_capacity(n * 8);
    // 0-2: other architectures pass.
    insn(LD_W_ABS, 0, 0, ARCH, &mut p);
    insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64, &mut p);
    insn(RET_K, 0, 0, RET_ALLOW, &mut p);
    // 3-9: the probe.
    insn(LD_W_ABS, 0, 0, NR, &mut p);
    insn(JEQ_K, 0, 5, libc::SYS_getppid as u32, &mut p);
    insn(LD_W_ABS, 0, 0, ARG0_LO, &mut p);
    insn(JEQ_K, 0, 3, PROBE as u32, &mut p);
    insn(LD_W_ABS, 0, 0, ARG0_HI, &mut p);
    insn(JEQ_K, 0, 1, (PROBE >> 32) as u32, &mut p);
    insn(RET_K, 0, 0, RET_ERRNO | PROBE_ERRNO, &mut p);
    // 10-14: rt_sigaction of SIGSYS goes to the ranges (the library keeps
    // the program's action: the kernel's must stay its handler); of any
    // other signal, allowed.
    insn(LD_W_ABS, 0, 0, NR, &mut p);
    insn(JEQ_K, 0, 3, abi::vtrap::SIGACTION as u32, &mut p);
    insn(LD_W_ABS, 0, 0, ARG0_LO, &mut p);
    insn(
        JEQ_K,
        (calls.len() + 3) as u8,
        0,
        abi::vtrap::SIGSYS,
        &mut p,
    );
    insn(RET_K, 0, 0, RET_ALLOW, &mut p);
    // 15..: the calls (x32 numbers have bit 30 set: never equal).
    insn(LD_W_ABS, 0, 0, NR, &mut p);
    for (i, &nr) in calls.iter().enumerate() {
        let to_ranges = (calls.len() - 1 - i) + 1;
        insn(JEQ_K, to_ranges as u8, 0, nr as u32, &mut p);
    }
    insn(RET_K, 0, 0, RET_ALLOW, &mut p);
    // The ranges: each block falls through to the next when the
    // instruction pointer is outside it.
    for &(first, last) in &ranges {
        insn(LD_W_ABS, 0, 0, IP_HI, &mut p);
        insn(JEQ_K, 0, 4, (first >> 32) as u32, &mut p);
        insn(LD_W_ABS, 0, 0, IP_LO, &mut p);
        insn(JGE_K, 0, 2, first as u32, &mut p);
        insn(JGT_K, 1, 0, last as u32, &mut p);
        insn(RET_K, 0, 0, RET_TRAP | TRAP_DATA, &mut p);
    }
    stale_waits(stale, &lib, &mut p);
    debug_assert_eq!(p.len(), n * 8);
    Ok(Some(p))
}

/// Whether `prog` is a trap filter (its `ret TRAP|TRAP_DATA` is there).
pub fn is_trap_filter(prog: &[u8]) -> bool {
    let mut want = Vec::new();
    insn(RET_K, 0, 0, RET_TRAP | TRAP_DATA, &mut want);
    prog.chunks_exact(8).any(|c| c == want.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::seccomp::Chain;
    use std::sync::Arc;

    fn map(start: u64, end: u64, name: &str) -> MapEntry {
        MapEntry {
            start,
            end,
            read: true,
            write: false,
            exec: true,
            shared: false,
            offset: 0,
            dev: 0,
            inode: 1,
            name: name.into(),
        }
    }

    #[test]
    fn ranges_skip_libc_loader_library_and_anonymous_code() {
        let maps = vec![
            map(0x5555_0000_1000, 0x5555_0000_3000, "/usr/bin/prog"),
            map(0x5555_0000_3000, 0x5555_0000_4000, "/usr/bin/prog"),
            map(
                0x7f00_0000_0000,
                0x7f00_0001_0000,
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            map(0x7f00_0002_0000, 0x7f00_0003_0000, "/t/libdmtcp_inject.so"),
            map(
                0x7f00_0004_0000,
                0x7f00_0005_0000,
                "/lib64/ld-linux-x86-64.so.2",
            ),
            map(0x7f00_0006_0000, 0x7f00_0007_0000, "[vdso]"),
            map(0x7f00_0008_0000, 0x7f00_0009_0000, ""),
            map(0x7f00_ffff_f000, 0x7f01_0000_1000, "/usr/lib/libm.so.6"),
        ];
        assert_eq!(
            ranges(&maps),
            vec![
                (0x5555_0000_1000, 0x5555_0000_3fff),
                (0x7f00_ffff_f000, 0x7f00_ffff_ffff),
                (0x7f01_0000_0000, 0x7f01_0000_0fff),
            ]
        );
    }

    /// glibc's own waits for a virtual pid whose process has another
    /// kernel pid now are trapped, from anywhere but the library.
    #[test]
    fn waits_for_stale_pids_are_trapped_outside_the_library() {
        let maps = vec![
            map(0x5555_0000_1000, 0x5555_0000_3000, "/usr/bin/prog"),
            map(0x7f00_0000_0000, 0x7f00_0001_0000, "/usr/lib/libc.so.6"),
            map(0x7f00_0002_0000, 0x7f00_0003_0000, "/t/libdmtcp_inject.so"),
        ];
        let prog = filter(&maps, &[1234, 777]).unwrap().unwrap();
        let chain = Chain {
            progs: vec![Arc::new(prog)],
            strict: false,
        };
        let trapped = |nr: i64, ip: u64, a: [u64; 6]| chain.verdict(nr, ip, a).is_err();
        let libc_ip = 0x7f00_0000_1000;
        let lib_ip = 0x7f00_0002_1000;
        assert!(trapped(libc::SYS_wait4, libc_ip, [1234, 0, 0, 0, 0, 0]));
        assert!(trapped(libc::SYS_wait4, libc_ip, [777, 0, 0, 0, 0, 0]));
        assert!(!trapped(libc::SYS_wait4, libc_ip, [1235, 0, 0, 0, 0, 0]));
        assert!(!trapped(
            libc::SYS_wait4,
            libc_ip,
            [u64::MAX, 0, 0, 0, 0, 0]
        ));
        assert!(!trapped(libc::SYS_wait4, lib_ip, [1234, 0, 0, 0, 0, 0]));
        let p_pid = libc::P_PID as u64;
        assert!(trapped(libc::SYS_waitid, libc_ip, [p_pid, 777, 0, 0, 0, 0]));
        assert!(!trapped(
            libc::SYS_waitid,
            libc_ip,
            [p_pid, 778, 0, 0, 0, 0]
        ));
        assert!(!trapped(
            libc::SYS_waitid,
            libc_ip,
            [libc::P_ALL as u64, 777, 0, 0, 0, 0]
        ));
        assert!(!trapped(libc::SYS_waitid, lib_ip, [p_pid, 777, 0, 0, 0, 0]));
        assert!(!trapped(libc::SYS_kill, libc_ip, [1234, 0, 0, 0, 0, 0]));
        assert!(!trapped(libc::SYS_read, libc_ip, [1234, 0, 0, 0, 0, 0]));
        // The program's own raw calls are trapped as before.
        assert!(trapped(libc::SYS_getpid, 0x5555_0000_1000, [0; 6]));
        // With no code to trap, the stale waits alone make a filter.
        let only_libc = vec![map(
            0x7f00_0000_0000,
            0x7f00_0001_0000,
            "/usr/lib/libc.so.6",
        )];
        assert!(filter(&only_libc, &[]).unwrap().is_none());
        assert!(filter(&only_libc, &[1234]).unwrap().is_some());
    }

    /// `rt_sigaction(SIGSYS)` from the program's code is trapped (the
    /// library keeps the program's action); of other signals, or from
    /// libc, it is not.
    #[test]
    fn sigaction_of_sigsys_is_trapped_from_trapped_code() {
        let maps = vec![
            map(0x5555_0000_1000, 0x5555_0000_3000, "/usr/bin/prog"),
            map(0x7f00_0000_0000, 0x7f00_0001_0000, "/usr/lib/libc.so.6"),
        ];
        let prog = filter(&maps, &[]).unwrap().unwrap();
        let chain = Chain {
            progs: vec![Arc::new(prog)],
            strict: false,
        };
        let trapped = |ip: u64, sig: u64| {
            chain
                .verdict(libc::SYS_rt_sigaction, ip, [sig, 0, 0, 8, 0, 0])
                .is_err()
        };
        assert!(trapped(0x5555_0000_2000, libc::SIGSYS as u64));
        assert!(!trapped(0x5555_0000_2000, libc::SIGUSR1 as u64));
        assert!(!trapped(0x7f00_0000_1000, libc::SIGSYS as u64));
        // The calls after the new rule are still trapped.
        assert!(chain
            .verdict(libc::SYS_tgkill, 0x5555_0000_2000, [0; 6])
            .is_err());
        assert!(chain
            .verdict(libc::SYS_waitid, 0x5555_0000_2000, [0; 6])
            .is_err());
    }

    /// The program, run by the same BPF interpreter the capture uses.
    #[test]
    fn filter_traps_only_listed_calls_from_trapped_code() {
        let maps = vec![
            map(0x5555_0000_1000, 0x5555_0000_3000, "/usr/bin/prog"),
            map(0x7f00_0000_0000, 0x7f00_0001_0000, "/usr/lib/libc.so.6"),
            map(0x7f00_ffff_f000, 0x7f01_0000_1000, "/usr/lib/libm.so.6"),
        ];
        let prog = filter(&maps, &[]).unwrap().unwrap();
        assert!(is_trap_filter(&prog));
        let chain = Chain {
            progs: vec![Arc::new(prog)],
            strict: false,
        };
        let trapped = |nr: i64, ip: u64| chain.verdict(nr, ip, [0; 6]).is_err();
        for ip in [
            0x5555_0000_1000,
            0x5555_0000_2fff,
            0x7f00_ffff_f004,
            0x7f01_0000_0ffe,
        ] {
            assert!(trapped(libc::SYS_getpid, ip), "{ip:#x}");
            assert!(trapped(libc::SYS_tgkill, ip), "{ip:#x}");
            assert!(trapped(libc::SYS_setpriority, ip), "{ip:#x}");
            assert!(!trapped(libc::SYS_read, ip), "{ip:#x}");
        }
        for ip in [
            0x5555_0000_0fff,
            0x5555_0000_3000,
            0x7f00_0000_1000,
            0x7f01_0000_1000,
            0x1_0000_1000,
        ] {
            assert!(!trapped(libc::SYS_getpid, ip), "{ip:#x}");
        }
        assert!(chain
            .verdict(libc::SYS_getppid, 0x7f00_0000_1000, [PROBE, 0, 0, 0, 0, 0])
            .is_err());
        assert!(chain
            .verdict(
                libc::SYS_getppid,
                0x7f00_0000_1000,
                [PROBE + 1, 0, 0, 0, 0, 0]
            )
            .is_ok());
    }
}
