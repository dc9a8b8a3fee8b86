//! The per-thread kernel state of restored threads, set by the threads
//! themselves, all at once.
//!
//! Each new thread (made by an injected `clone3` and stopped) runs a short
//! piece of code, [`THREAD_SETUP_CODE`], with `r12` pointing at its own slot
//! and `r13` at a block shared by all: `set_tid_address`, `set_robust_list`,
//! `sigaltstack`, `rseq`, `prctl(PR_SET_NAME)`, the bounding-set drops,
//! `PR_CAP_AMBIENT_CLEAR_ALL`, `capset`, the ambient raises, then `int3`.
//! One stop per thread instead of a dozen injected syscalls (each a full
//! ptrace round trip), and the threads run it together. Every result is
//! written back to the slot and checked here.

use std::io;

use crate::kernel::freeze::FrozenProcess;
use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs::{self, Mem};
use crate::kernel::ptrace::{self, Stop};
use crate::kernel::remote::{Injector, Shell, RESCUE_TAIL, SCRATCH_OFF};
use crate::resources::capture_ctx as ctx;
use crate::resources::restore_err as err;
use dmtcp_image::{Capabilities, Rseq, ThreadState, PAGE_SIZE};

/// Where things go in the mapping made for the setup.
const CODE_OFF: u64 = 0;
const CAPS_OFF: u64 = 512;
const SLOTS_OFF: u64 = 576;
/// One thread's slot: inputs in words 0..12, results from word 13.
const SLOT: u64 = 160;

/// x86-64 code run by every new thread; assembled from:
///
/// ```text
/// mov eax, SYS_set_tid_address; mov rdi, [r12]; syscall
/// mov rdi, [r12+8]; test rdi, rdi; jz 1f           # robust list head
/// mov eax, SYS_set_robust_list; mov rsi, [r12+16]; syscall; mov [r12+104], rax
/// 1: mov eax, SYS_sigaltstack; lea rdi, [r12+24]; xor esi, esi; syscall; mov [r12+112], rax
/// mov rdi, [r12+48]; test rdi, rdi; jz 2f          # rseq area
/// mov eax, SYS_rseq; mov esi, [r12+56]; xor edx, edx; mov r10d, [r12+64]; syscall; mov [r12+120], rax
/// 2: mov eax, SYS_prctl; mov edi, PR_SET_NAME; lea rsi, [r12+80]; syscall; mov [r12+128], rax
/// for each bit c of [r13+32]: prctl(PR_CAPBSET_DROP, c), result or'ed into [r12+136]
/// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), or'ed into [r12+136]
/// mov eax, SYS_capset; mov rdi, r13; lea rsi, [r13+8]; syscall; mov [r12+144], rax
/// for each bit c of [r13+40]: prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0), or'ed into [r12+136]
/// int3
/// ```
/// (Failed calls return -errno: or'ed together they stay negative.)
const THREAD_SETUP_CODE: [u8; 273] = [
    0xb8, 0xda, 0x00, 0x00, 0x00, // 0: mov eax,0xda
    0x49, 0x8b, 0x3c, 0x24, // 5: mov rdi,[r12]
    0x0f, 0x05, // 9: syscall
    0x49, 0x8b, 0x7c, 0x24, 0x08, // b: mov rdi,[r12+0x8]
    0x48, 0x85, 0xff, // 10: test rdi,rdi
    0x74, 0x11, // 13: je 26
    0xb8, 0x11, 0x01, 0x00, 0x00, // 15: mov eax,0x111
    0x49, 0x8b, 0x74, 0x24, 0x10, // 1a: mov rsi,[r12+0x10]
    0x0f, 0x05, // 1f: syscall
    0x49, 0x89, 0x44, 0x24, 0x68, // 21: mov [r12+0x68],rax
    0xb8, 0x83, 0x00, 0x00, 0x00, // 26: mov eax,0x83
    0x49, 0x8d, 0x7c, 0x24, 0x18, // 2b: lea rdi,[r12+0x18]
    0x31, 0xf6, // 30: xor esi,esi
    0x0f, 0x05, // 32: syscall
    0x49, 0x89, 0x44, 0x24, 0x70, // 34: mov [r12+0x70],rax
    0x49, 0x8b, 0x7c, 0x24, 0x30, // 39: mov rdi,[r12+0x30]
    0x48, 0x85, 0xff, // 3e: test rdi,rdi
    0x74, 0x18, // 41: je 5b
    0xb8, 0x4e, 0x01, 0x00, 0x00, // 43: mov eax,0x14e
    0x41, 0x8b, 0x74, 0x24, 0x38, // 48: mov esi,[r12+0x38]
    0x31, 0xd2, // 4d: xor edx,edx
    0x45, 0x8b, 0x54, 0x24, 0x40, // 4f: mov r10d,[r12+0x40]
    0x0f, 0x05, // 54: syscall
    0x49, 0x89, 0x44, 0x24, 0x78, // 56: mov [r12+0x78],rax
    0xb8, 0x9d, 0x00, 0x00, 0x00, // 5b: mov eax,0x9d
    0xbf, 0x0f, 0x00, 0x00, 0x00, // 60: mov edi,0xf
    0x49, 0x8d, 0x74, 0x24, 0x50, // 65: lea rsi,[r12+0x50]
    0x0f, 0x05, // 6a: syscall
    0x49, 0x89, 0x84, 0x24, 0x80, 0x00, 0x00, 0x00, // 6c: mov [r12+0x80],rax
    0x4d, 0x8b, 0x75, 0x20, // 74: mov r14,[r13+0x20]
    0x45, 0x31, 0xff, // 78: xor r15d,r15d
    0x4d, 0x0f, 0xa3, 0xfe, // 7b: bt r14,r15
    0x73, 0x17, // 7f: jae 98
    0xb8, 0x9d, 0x00, 0x00, 0x00, // 81: mov eax,0x9d
    0xbf, 0x18, 0x00, 0x00, 0x00, // 86: mov edi,0x18
    0x4c, 0x89, 0xfe, // 8b: mov rsi,r15
    0x0f, 0x05, // 8e: syscall
    0x49, 0x09, 0x84, 0x24, 0x88, 0x00, 0x00, 0x00, // 90: or [r12+0x88],rax
    0x49, 0xff, 0xc7, // 98: inc r15
    0x49, 0x83, 0xff, 0x40, // 9b: cmp r15,0x40
    0x72, 0xda, // 9f: jb 7b
    0xb8, 0x9d, 0x00, 0x00, 0x00, // a1: mov eax,0x9d
    0xbf, 0x2f, 0x00, 0x00, 0x00, // a6: mov edi,0x2f
    0xbe, 0x04, 0x00, 0x00, 0x00, // ab: mov esi,0x4
    0x31, 0xd2, // b0: xor edx,edx
    0x45, 0x31, 0xd2, // b2: xor r10d,r10d
    0x45, 0x31, 0xc0, // b5: xor r8d,r8d
    0x0f, 0x05, // b8: syscall
    0x49, 0x09, 0x84, 0x24, 0x88, 0x00, 0x00, 0x00, // ba: or [r12+0x88],rax
    0xb8, 0x7e, 0x00, 0x00, 0x00, // c2: mov eax,0x7e
    0x4c, 0x89, 0xef, // c7: mov rdi,r13
    0x49, 0x8d, 0x75, 0x08, // ca: lea rsi,[r13+0x8]
    0x0f, 0x05, // ce: syscall
    0x49, 0x89, 0x84, 0x24, 0x90, 0x00, 0x00, 0x00, // d0: mov [r12+0x90],rax
    0x4d, 0x8b, 0x75, 0x28, // d8: mov r14,[r13+0x28]
    0x45, 0x31, 0xff, // dc: xor r15d,r15d
    0x4d, 0x0f, 0xa3, 0xfe, // df: bt r14,r15
    0x73, 0x22, // e3: jae 107
    0xb8, 0x9d, 0x00, 0x00, 0x00, // e5: mov eax,0x9d
    0xbf, 0x2f, 0x00, 0x00, 0x00, // ea: mov edi,0x2f
    0xbe, 0x02, 0x00, 0x00, 0x00, // ef: mov esi,0x2
    0x4c, 0x89, 0xfa, // f4: mov rdx,r15
    0x45, 0x31, 0xd2, // f7: xor r10d,r10d
    0x45, 0x31, 0xc0, // fa: xor r8d,r8d
    0x0f, 0x05, // fd: syscall
    0x49, 0x09, 0x84, 0x24, 0x88, 0x00, 0x00, 0x00, // ff: or [r12+0x88],rax
    0x49, 0xff, 0xc7, // 107: inc r15
    0x49, 0x83, 0xff, 0x40, // 10a: cmp r15,0x40
    0x72, 0xcf, // 10e: jb df
    0xcc, // 110: int3
];

/// `capset`'s arguments for the calling thread: the v3 header {version,
/// pid 0} at 0, then two {effective, permitted, inheritable} at 8.
pub(crate) fn capset_args(caps: &Capabilities) -> Vec<u8> {
    let lo = |x: u64| (x & 0xffff_ffff) as u32;
    let hi = |x: u64| (x >> 32) as u32;
    let words: [u32; 8] = [
        0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        0,           // this thread
        lo(caps.effective),
        lo(caps.permitted),
        lo(caps.inheritable),
        hi(caps.effective),
        hi(caps.permitted),
        hi(caps.inheritable),
    ];
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// The shared block at `r13`: capset header and data, the bounding
/// capabilities to drop, the ambient ones to raise.
fn caps_block(caps: &Capabilities, drop_bounding: u64) -> Vec<u8> {
    let mut b = capset_args(caps);
    b.extend_from_slice(&drop_bounding.to_ne_bytes());
    b.extend_from_slice(&caps.ambient.to_ne_bytes());
    b
}

/// One thread's slot (inputs; results start zeroed).
fn slot(t: &ThreadState) -> Vec<u8> {
    let (sp, flags, size) = t.sigaltstack;
    // Without a saved alternate stack it is disabled explicitly (the thread
    // would otherwise keep whatever it inherited).
    let (sp, flags, size) = if flags & libc::SS_DISABLE == 0 && sp != 0 {
        (sp, flags & !libc::SS_ONSTACK, size)
    } else {
        (0, libc::SS_DISABLE, 0)
    };
    let (rseq_addr, rseq_len, rseq_sig) = t
        .rseq
        .map_or((0, 0, 0), |r| (r.addr, r.len as u64, r.signature as u64));
    let mut name = [0u8; 16];
    let n = t.name.len().min(15);
    name[..n].copy_from_slice(&t.name.as_bytes()[..n]);
    let words: [u64; 10] = [
        t.clear_child_tid,
        t.robust_list.0,
        t.robust_list.1,
        sp,
        flags as u32 as u64,
        size,
        rseq_addr,
        rseq_len,
        rseq_sig,
        0,
    ];
    let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    b.extend_from_slice(&name);
    b.resize(SLOT as usize, 0);
    b
}

/// A result word of a slot read back.
fn word(b: &[u8], off: usize) -> i64 {
    i64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Runs the setup code in every thread of `threads` (new, stopped, traced
/// by us; not the leader), through a scratch mapping made and removed by
/// `leader`. `drop_bounding` are the bounding capabilities each thread
/// must give up.
pub fn setup_threads(
    leader: &mut Injector,
    mem: &Mem,
    threads: &[(&ThreadState, HostPid)],
    caps: &Capabilities,
    drop_bounding: u64,
) -> io::Result<()> {
    if threads.is_empty() {
        return Ok(());
    }
    let len = (SLOTS_OFF + threads.len() as u64 * SLOT).next_multiple_of(PAGE_SIZE);
    let area = leader.syscall(
        libc::SYS_mmap,
        [
            0,
            len,
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )?;
    let result = run(area, mem, threads, caps, drop_bounding);
    let unmap = leader.syscall(libc::SYS_munmap, [area, len, 0, 0, 0, 0]);
    result?;
    unmap.map(|_| ())
}

fn run(
    area: u64,
    mem: &Mem,
    threads: &[(&ThreadState, HostPid)],
    caps: &Capabilities,
    drop_bounding: u64,
) -> io::Result<()> {
    let mut bytes = vec![0u8; (SLOTS_OFF + threads.len() as u64 * SLOT) as usize];
    bytes[CODE_OFF as usize..CODE_OFF as usize + THREAD_SETUP_CODE.len()]
        .copy_from_slice(&THREAD_SETUP_CODE);
    let cb = caps_block(caps, drop_bounding);
    bytes[CAPS_OFF as usize..CAPS_OFF as usize + cb.len()].copy_from_slice(&cb);
    for (i, (t, _)) in threads.iter().enumerate() {
        let at = (SLOTS_OFF + i as u64 * SLOT) as usize;
        bytes[at..at + SLOT as usize].copy_from_slice(&slot(t));
    }
    mem.write(RemoteAddr(area), &bytes)?;
    // Start them all, then collect them all.
    for (i, (_, tid)) in threads.iter().enumerate() {
        let mut r = ptrace::get_regs(*tid)?;
        r.rip = area + CODE_OFF;
        r.r12 = area + SLOTS_OFF + i as u64 * SLOT;
        r.r13 = area + CAPS_OFF;
        r.orig_rax = u64::MAX; // no syscall restart on the way out
        r.eflags &= !(0x100 | 0x400);
        ptrace::set_regs(*tid, &r)?;
        ptrace::cont(*tid, 0)?;
    }
    for (t, tid) in threads {
        loop {
            match ptrace::wait_alive(*tid)? {
                Stop::Signal(libc::SIGTRAP) => break,
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(io::Error::other(format!(
                        "thread {} died while setting itself up",
                        t.vtid
                    )))
                }
                // Signals are blocked; anything else lets it go on.
                _ => ptrace::cont(*tid, 0)?,
            }
        }
    }
    let mut back = vec![0u8; threads.len() * SLOT as usize];
    mem.read(RemoteAddr(area + SLOTS_OFF), &mut back)?;
    for ((t, _), b) in threads.iter().zip(back.chunks_exact(SLOT as usize)) {
        let fail = |what: &str, r: i64| {
            io::Error::other(format!(
                "thread {}: {what}: {}",
                t.vtid,
                io::Error::from_raw_os_error((-r) as i32)
            ))
        };
        for (off, what) in [
            (104, "set_robust_list"),
            (112, "sigaltstack"),
            (120, "rseq"),
            (128, "thread name"),
            (136, "bounding or ambient capabilities"),
            (144, "capset"),
        ] {
            let r = word(b, off);
            if r < 0 {
                return Err(fail(what, r));
            }
        }
    }
    Ok(())
}

/// What each thread reports about itself (the query code below).
pub(crate) struct ThreadQuery {
    pub(crate) clear_child_tid: u64,
    /// sigaltstack: (ss_sp, ss_flags, ss_size).
    pub(crate) altstack: (u64, i32, u64),
    /// PR_GET_NAME.
    pub(crate) name: String,
    /// get_robust_list: (head, len).
    pub(crate) robust: (u64, u64),
}

/// Where per-thread results start in the scratch area, and their size.
/// Below the slots: the query code at 0 (also a data buffer for the
/// leader's injected calls once the code has run) and the rescue stubs at
/// [`STUBS_OFF`].
pub(crate) const SCRATCH_SLOTS: u64 = 512;
pub(crate) const QUERY_SLOT: u64 = 104;
/// Where [`crate::kernel::remote::install_stubs`] puts the rescue stubs.
pub(crate) const STUBS_OFF: u64 = 384;

/// Slot words the code reads when it ends with a rescue (see
/// [`QUERY_END_RESCUE`]): the thread's rescue block, the signal set of the
/// mark signal, the mark signal's number.
const SLOT_RESCUE_BLOCK: usize = 80;
const SLOT_MARK_SET: usize = 88;
const SLOT_MARK_SIG: usize = 96;

/// x86-64 code run by every thread at once, writing to its slot at r12:
/// `prctl(PR_GET_TID_ADDRESS, r12)`, `sigaltstack(NULL, r12+8)`,
/// `gettid()` to r12+32, `prctl(PR_GET_NAME, r12+40)`,
/// `get_robust_list(0, r12+56, r12+64)`; then it stops for us, with
/// [`QUERY_END_RESCUE`] or `int3`. One ptrace stop per thread instead of
/// four per injected syscall, and the threads run it in parallel.
const THREAD_QUERY_CODE: [u8; 77] = [
    0xb8, 0x9d, 0x00, 0x00, 0x00, // mov eax, SYS_prctl (157)
    0xbf, 0x28, 0x00, 0x00, 0x00, // mov edi, PR_GET_TID_ADDRESS (40)
    0x4c, 0x89, 0xe6, // mov rsi, r12
    0x0f, 0x05, // syscall
    0xb8, 0x83, 0x00, 0x00, 0x00, // mov eax, SYS_sigaltstack (131)
    0x31, 0xff, // xor edi, edi
    0x49, 0x8d, 0x74, 0x24, 0x08, // lea rsi, [r12+8]
    0x0f, 0x05, // syscall
    0xb8, 0xba, 0x00, 0x00, 0x00, // mov eax, SYS_gettid (186)
    0x0f, 0x05, // syscall
    0x49, 0x89, 0x44, 0x24, 0x20, // mov [r12+32], rax
    0xb8, 0x9d, 0x00, 0x00, 0x00, // mov eax, SYS_prctl (157)
    0xbf, 0x10, 0x00, 0x00, 0x00, // mov edi, PR_GET_NAME (16)
    0x49, 0x8d, 0x74, 0x24, 0x28, // lea rsi, [r12+40]
    0x0f, 0x05, // syscall
    0xb8, 0x12, 0x01, 0x00, 0x00, // mov eax, SYS_get_robust_list (274)
    0x31, 0xff, // xor edi, edi
    0x49, 0x8d, 0x74, 0x24, 0x38, // lea rsi, [r12+56]
    0x49, 0x8d, 0x54, 0x24, 0x40, // lea rdx, [r12+64]
    0x0f, 0x05, // syscall
];

/// x86-64 code the leader runs before [`THREAD_QUERY_CODE`] (into which
/// it falls through), writing to the process block at r13 (layout
/// [`ProcessQuery::read`]); assembled from:
///
/// ```text
/// brk(0) -> [r13]; prctl(PR_GET_DUMPABLE) -> [r13+8]
/// prctl(PR_GET_SECUREBITS) -> [r13+16]
/// prctl(PR_GET_CHILD_SUBREAPER, r13+24), result -> [r13+32]
/// getitimer(0, r13+40); getitimer(1, r13+72); getitimer(2, r13+104)
/// for ebx in 1..=64: rt_sigaction(ebx, NULL, r14 = r13+136+(ebx-1)*32, 8)
/// ```
/// The process-wide queries in the leader's one stop of the per-thread
/// queries, instead of an injected call each (two ptrace stops apiece).
const LEADER_QUERY_CODE: [u8; 153] = [
    0xb8, 0x0c, 0x00, 0x00, 0x00, // 0: mov eax, SYS_brk (12)
    0x31, 0xff, // 5: xor edi, edi
    0x0f, 0x05, // 7: syscall
    0x49, 0x89, 0x45, 0x00, // 9: mov [r13], rax
    0xb8, 0x9d, 0x00, 0x00, 0x00, // d: mov eax, SYS_prctl (157)
    0xbf, 0x03, 0x00, 0x00, 0x00, // 12: mov edi, PR_GET_DUMPABLE (3)
    0x0f, 0x05, // 17: syscall
    0x49, 0x89, 0x45, 0x08, // 19: mov [r13+8], rax
    0xb8, 0x9d, 0x00, 0x00, 0x00, // 1d: mov eax, SYS_prctl
    0xbf, 0x1b, 0x00, 0x00, 0x00, // 22: mov edi, PR_GET_SECUREBITS (27)
    0x0f, 0x05, // 27: syscall
    0x49, 0x89, 0x45, 0x10, // 29: mov [r13+16], rax
    0xb8, 0x9d, 0x00, 0x00, 0x00, // 2d: mov eax, SYS_prctl
    0xbf, 0x25, 0x00, 0x00, 0x00, // 32: mov edi, PR_GET_CHILD_SUBREAPER (37)
    0x49, 0x8d, 0x75, 0x18, // 37: lea rsi, [r13+24]
    0x0f, 0x05, // 3b: syscall
    0x49, 0x89, 0x45, 0x20, // 3d: mov [r13+32], rax
    0xb8, 0x24, 0x00, 0x00, 0x00, // 41: mov eax, SYS_getitimer (36)
    0x31, 0xff, // 46: xor edi, edi (ITIMER_REAL)
    0x49, 0x8d, 0x75, 0x28, // 48: lea rsi, [r13+40]
    0x0f, 0x05, // 4c: syscall
    0xb8, 0x24, 0x00, 0x00, 0x00, // 4e: mov eax, SYS_getitimer
    0xbf, 0x01, 0x00, 0x00, 0x00, // 53: mov edi, ITIMER_VIRTUAL
    0x49, 0x8d, 0x75, 0x48, // 58: lea rsi, [r13+72]
    0x0f, 0x05, // 5c: syscall
    0xb8, 0x24, 0x00, 0x00, 0x00, // 5e: mov eax, SYS_getitimer
    0xbf, 0x02, 0x00, 0x00, 0x00, // 63: mov edi, ITIMER_PROF
    0x49, 0x8d, 0x75, 0x68, // 68: lea rsi, [r13+104]
    0x0f, 0x05, // 6c: syscall
    0xbb, 0x01, 0x00, 0x00, 0x00, // 6e: mov ebx, 1
    0x4d, 0x8d, 0xb5, 0x88, 0x00, 0x00, 0x00, // 73: lea r14, [r13+136]
    0xb8, 0x0d, 0x00, 0x00, 0x00, // 7a: mov eax, SYS_rt_sigaction (13)
    0x89, 0xdf, // 7f: mov edi, ebx
    0x31, 0xf6, // 81: xor esi, esi
    0x4c, 0x89, 0xf2, // 83: mov rdx, r14
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // 86: mov r10d, 8
    0x0f, 0x05, // 8c: syscall
    0x49, 0x83, 0xc6, 0x20, // 8e: add r14, 32
    0xff, 0xc3, // 92: inc ebx
    0x83, 0xfb, 0x41, // 94: cmp ebx, 65
    0x75, 0xe1, // 97: jne 7a
];

/// Size of the process block [`LEADER_QUERY_CODE`] writes.
pub(crate) const PROCESS_QUERY_LEN: u64 = 136 + 64 * 32;

/// The calls [`LEADER_QUERY_CODE`] makes, with their non-pointer
/// arguments (pointers as 0), for a check against the leader's own
/// seccomp filters.
pub(crate) fn leader_query_calls() -> Vec<(i64, [u64; 6])> {
    let mut calls = vec![
        (libc::SYS_brk, [0; 6]),
        (
            libc::SYS_prctl,
            [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
        ),
        (
            libc::SYS_prctl,
            [libc::PR_GET_SECUREBITS as u64, 0, 0, 0, 0, 0],
        ),
        (
            libc::SYS_prctl,
            [libc::PR_GET_CHILD_SUBREAPER as u64, 0, 0, 0, 0, 0],
        ),
    ];
    calls.extend((0..3).map(|which| (libc::SYS_getitimer, [which, 0, 0, 0, 0, 0])));
    calls.extend((1..=64).map(|sig| (libc::SYS_rt_sigaction, [sig, 0, 0, 8, 0, 0])));
    calls
}

/// What [`LEADER_QUERY_CODE`] found (raw kernel results).
pub(crate) struct ProcessQuery {
    pub(crate) brk: i64,
    pub(crate) dumpable: i64,
    pub(crate) securebits: i64,
    /// `PR_GET_CHILD_SUBREAPER`'s result, and the flag it wrote.
    pub(crate) subreaper: (i64, u32),
    /// `struct itimerval` of ITIMER_REAL, _VIRTUAL, _PROF (4 words each).
    pub(crate) itimers: [[u64; 4]; 3],
    /// The kernel's `struct sigaction` of signals 1..=64 (4 words each:
    /// handler, flags, restorer, mask).
    pub(crate) sigactions: Vec<[u64; 4]>,
}

impl ProcessQuery {
    /// Reads the block at `at`.
    pub(crate) fn read(mem: &Mem, at: u64) -> io::Result<ProcessQuery> {
        let mut b = vec![0u8; PROCESS_QUERY_LEN as usize];
        mem.read(RemoteAddr(at), &mut b)?;
        let w = |k: usize| u64::from_ne_bytes(b[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
        let four = |k: usize| [w(k), w(k + 1), w(k + 2), w(k + 3)];
        Ok(ProcessQuery {
            brk: w(0) as i64,
            dumpable: w(1) as i64,
            securebits: w(2) as i64,
            subreaper: (w(4) as i64, w(3) as u32),
            itimers: [four(5), four(9), four(13)],
            sigactions: (0..64).map(|s| four(17 + 4 * s)).collect(),
        })
    }
}

/// The end of the query code when the supervisor's death must not crash
/// the thread: unblock the mark signal (a signal whose default action is
/// to ignore it, and which the program does not catch) and send it to the
/// thread itself. Traced, the thread stops in signal-delivery-stop there,
/// which is our "done" (the signal is discarded when it runs again).
/// Untraced (the supervisor is gone), the kernel ignores it and the thread
/// runs on into the rescue tail, from its rescue block.
const QUERY_END_RESCUE: [u8; 60] = [
    0xb8, 0x0e, 0x00, 0x00, 0x00, // mov eax, SYS_rt_sigprocmask (14)
    0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, SIG_UNBLOCK
    0x49, 0x8d, 0x74, 0x24, 0x58, // lea rsi, [r12+88] (SLOT_MARK_SET)
    0x31, 0xd2, // xor edx, edx
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8
    0x0f, 0x05, // syscall
    0xb8, 0x27, 0x00, 0x00, 0x00, // mov eax, SYS_getpid (39)
    0x0f, 0x05, // syscall
    0x89, 0xc7, // mov edi, eax
    0xb8, 0xba, 0x00, 0x00, 0x00, // mov eax, SYS_gettid (186)
    0x0f, 0x05, // syscall
    0x89, 0xc6, // mov esi, eax
    0x41, 0x8b, 0x54, 0x24, 0x60, // mov edx, [r12+96] (SLOT_MARK_SIG)
    0xb8, 0xea, 0x00, 0x00, 0x00, // mov eax, SYS_tgkill (234)
    0x0f, 0x05, // syscall: the stop
    0x49, 0x8b, 0x64, 0x24, 0x50, // mov rsp, [r12+80] (SLOT_RESCUE_BLOCK)
];

/// Signals whose default action is to ignore them, tried in order as the
/// mark signal.
const MARK_SIGNALS: [i32; 2] = [libc::SIGURG, libc::SIGWINCH];

/// The rescue of per-thread queries: the mark signal and each thread's
/// rescue block (in `FrozenProcess::threads` order).
pub(crate) struct QueryRescue {
    pub(crate) mark: i32,
    pub(crate) blocks: Vec<u64>,
}

/// The mark signal for a process whose caught or ignored signals are
/// `caught_or_ignored`, if one is free.
pub(crate) fn mark_signal(caught_or_ignored: u64) -> Option<i32> {
    MARK_SIGNALS
        .into_iter()
        .find(|&s| caught_or_ignored & (1 << (s - 1)) == 0)
}

/// [`LEADER_QUERY_CODE`], then the code every thread runs (from
/// [`LEADER_QUERY_CODE`]`.len()`).
fn query_code(rescue: bool) -> Vec<u8> {
    let mut code = LEADER_QUERY_CODE.to_vec();
    code.extend_from_slice(&THREAD_QUERY_CODE);
    if rescue {
        code.extend_from_slice(&QUERY_END_RESCUE);
        code.extend_from_slice(&RESCUE_TAIL);
    } else {
        code.push(0xcc); // int3
    }
    code
}

/// Runs [`THREAD_QUERY_CODE`] in every thread concurrently, each writing
/// its own slot, and fills in each thread's `vtid`. With `process`, the
/// leader runs [`LEADER_QUERY_CODE`] first, writing the process block at
/// that address (read it with [`ProcessQuery::read`]).
pub(crate) fn per_thread_queries(
    fp: &mut FrozenProcess,
    mem: &Mem,
    scratch: u64,
    masks: &[u64],
    rescue: Option<&QueryRescue>,
    process: Option<u64>,
) -> io::Result<Vec<ThreadQuery>> {
    // The code goes in through /proc/PID/mem: the scratch mapping is ours.
    let wmem = Mem::open(fp.pid, true)?;
    let code = query_code(rescue.is_some());
    debug_assert!(code.len() as u64 <= STUBS_OFF);
    wmem.write(RemoteAddr(scratch), &code)?;
    let slot = |i: usize| scratch + SCRATCH_SLOTS + i as u64 * QUERY_SLOT;
    let entry = scratch + LEADER_QUERY_CODE.len() as u64;
    if let Some(rs) = rescue {
        // Every slot's rescue words in one write (the rest of a slot is
        // the fresh mapping's zeros).
        let mut slots = vec![0u8; rs.blocks.len() * QUERY_SLOT as usize];
        for (block, s) in rs
            .blocks
            .iter()
            .zip(slots.chunks_exact_mut(QUERY_SLOT as usize))
        {
            s[SLOT_RESCUE_BLOCK..SLOT_RESCUE_BLOCK + 8].copy_from_slice(&block.to_ne_bytes());
            s[SLOT_MARK_SET..SLOT_MARK_SET + 8]
                .copy_from_slice(&(1u64 << (rs.mark - 1)).to_ne_bytes());
            s[SLOT_MARK_SIG..SLOT_MARK_SIG + 8].copy_from_slice(&(rs.mark as u64).to_ne_bytes());
        }
        wmem.write(RemoteAddr(slot(0)), &slots)?;
    }
    // Signals pend while a thread runs our code (the leader's are blocked
    // already, for all of the injected queries).
    for (i, t) in fp.threads.iter_mut().enumerate() {
        if i > 0 {
            ptrace::set_sigmask(t.tid, u64::MAX)?;
        }
        let mut r = t.regs;
        r.rip = entry;
        r.r12 = slot(i);
        if let (0, Some(block)) = (i, process) {
            r.rip = scratch;
            r.r13 = block;
        }
        r.orig_rax = u64::MAX; // no syscall restart on the way out
        r.eflags &= !(0x100 | 0x400);
        ptrace::set_regs(t.tid, &r)?;
        t.touched = true;
    }
    crate::kernel::remote::fault_pause();
    for t in &fp.threads {
        ptrace::cont(t.tid, 0)?;
    }
    for (i, t) in fp.threads.iter().enumerate() {
        loop {
            match ptrace::wait_alive(t.tid)? {
                Stop::Signal(libc::SIGTRAP) if rescue.is_none() => break,
                // The mark signal stays blocked in the thread from the
                // moment it runs our code until the code unblocks it after
                // writing its last result: any stop for it (ours, or one
                // sent from outside, which the program ignores and which
                // is dropped) comes after the results are complete, so its
                // place in the code is not read back (one request less per
                // thread).
                Stop::Signal(sig) if rescue.is_some_and(|rs| rs.mark == sig) => break,
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(io::Error::other(format!(
                        "tid {} died during the queries",
                        t.tid
                    )))
                }
                // Signals are blocked (a mark signal from outside, which the
                // program ignores anyway, is dropped); anything else just
                // lets it go on.
                _ => ptrace::cont(t.tid, 0)?,
            }
        }
        // Back to where the freeze found it (the stop's signal is discarded
        // when it runs again), with its own mask unless it is the leader,
        // which runs more of our calls. The others get the registers the
        // thaw would give them (an interrupted call set to restart), so the
        // thaw does not write them again.
        if i == 0 {
            ptrace::set_regs(t.tid, &t.regs)?;
        } else {
            ptrace::set_regs(t.tid, &crate::kernel::freeze::thaw_regs(&t.regs).0)?;
            ptrace::set_sigmask(t.tid, masks[i])?;
        }
    }
    for t in fp.threads.iter_mut().skip(1) {
        t.regs_written = true;
    }
    let n = fp.threads.len();
    let mut all = vec![0u8; n * QUERY_SLOT as usize];
    mem.read(RemoteAddr(slot(0)), &mut all)?;
    let mut out = Vec::with_capacity(n);
    for (t, b) in fp
        .threads
        .iter_mut()
        .zip(all.chunks_exact(QUERY_SLOT as usize))
    {
        let w = |k: usize| u64::from_ne_bytes(b[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
        let name = &b[40..56];
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(16)];
        t.vtid = w(4) as i32;
        out.push(ThreadQuery {
            clear_child_tid: w(0),
            altstack: (w(1), w(2) as u32 as i32, w(3)),
            name: String::from_utf8_lossy(name).into_owned(),
            robust: (w(7), w(8)),
        });
    }
    Ok(out)
}

/// Writes `bytes` into the trampoline's scratch area.
pub(crate) fn put_scratch(mem: &Mem, tramp: u64, bytes: &[u8]) -> io::Result<u64> {
    if bytes.len() as u64 > PAGE_SIZE - SCRATCH_OFF {
        return Err(io::Error::other("scratch data too large"));
    }
    mem.write(RemoteAddr(tramp + SCRATCH_OFF), bytes)?;
    Ok(tramp + SCRATCH_OFF)
}

/// Creates thread `t` with its original tid through an injected `clone3`
/// and returns an injector for the new, stopped thread.
pub(crate) fn create_thread(sh: &mut Shell, t: &ThreadState) -> io::Result<Injector> {
    let pid = sh.pid;
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    // struct clone_args (11 words) followed by the one-entry set_tid array.
    let args_addr = sh.scratch();
    let set_tid_addr = args_addr + 11 * 8;
    // Without namespaces: the tid the kernel gives (the program keeps
    // seeing the old one through the pid table).
    let virtual_pids = crate::kernel::pid::virt::enabled();
    let words: [u64; 12] = [
        flags,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        if virtual_pids { 0 } else { set_tid_addr },
        u64::from(!virtual_pids),
        0,
        t.vtid as u64,
    ];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    sh.mem.write(RemoteAddr(args_addr), &bytes)?;
    let vtid = sh
        .call(libc::SYS_clone3, [args_addr, 88, 0, 0, 0, 0])
        .map_err(|e| err(pid, &format!("creating thread {}", t.vtid), e))?;
    if virtual_pids {
        crate::kernel::pid::virt::insert(t.vtid as i32, vtid as i32);
    } else if vtid != t.vtid as u64 {
        return Err(err(
            pid,
            "thread",
            format!("got tid {vtid}, wanted {}", t.vtid),
        ));
    }
    let host_tid = sh
        .inj
        .cloned
        .take()
        .ok_or_else(|| err(pid, "thread", format!("no clone event for tid {}", t.vtid)))?;
    // The auto-attached thread reports its first stop.
    match ptrace::wait_alive(host_tid)? {
        Stop::Exited(c) => return Err(err(pid, "new thread", format!("exited ({c})"))),
        Stop::Killed(s) => return Err(err(pid, "new thread", format!("killed ({s})"))),
        Stop::Event { .. } | Stop::Signal(_) | Stop::Syscall => {}
    }
    Injector::new(host_tid, RemoteAddr(sh.tramp))
}

pub(crate) fn restore_thread_state(
    inj: &mut Injector,
    mem: &Mem,
    tramp: u64,
    t: &ThreadState,
) -> io::Result<()> {
    let tid = inj.tid;
    inj.syscall(
        libc::SYS_set_tid_address,
        [t.clear_child_tid, 0, 0, 0, 0, 0],
    )?;
    if t.robust_list.0 != 0 {
        inj.syscall(
            libc::SYS_set_robust_list,
            [t.robust_list.0, t.robust_list.1, 0, 0, 0, 0],
        )
        .map_err(|e| err(tid, "set_robust_list", e))?;
    }
    let (sp, flags, size) = t.sigaltstack;
    // Without a saved alternate stack it is disabled explicitly: the
    // shell's leader inherited nsinit's (the Rust runtime's guard stack,
    // unmapped by now), and a handler with SA_ONSTACK would run on it.
    let (sp, flags, size) = if flags & libc::SS_DISABLE == 0 && sp != 0 {
        (sp, flags & !libc::SS_ONSTACK, size)
    } else {
        (0, libc::SS_DISABLE, 0)
    };
    let mut b = Vec::new();
    b.extend_from_slice(&sp.to_ne_bytes());
    b.extend_from_slice(&(flags as u64).to_ne_bytes());
    b.extend_from_slice(&size.to_ne_bytes());
    let a = put_scratch(mem, tramp, &b)?;
    inj.syscall(libc::SYS_sigaltstack, [a, 0, 0, 0, 0, 0])
        .map_err(|e| err(tid, "sigaltstack", e))?;
    if let Some(r) = t.rseq {
        inj.syscall(
            libc::SYS_rseq,
            [r.addr, r.len as u64, 0, r.signature as u64, 0, 0],
        )
        .map_err(|e| err(tid, "rseq", e))?;
    }
    let mut name = t.name.as_bytes().to_vec();
    name.truncate(15);
    name.push(0);
    let a = put_scratch(mem, tramp, &name)?;
    inj.syscall(libc::SYS_prctl, [libc::PR_SET_NAME as u64, a, 0, 0, 0, 0])
        .map_err(|e| err(tid, "thread name", e))?;
    Ok(())
}

/// Loads a thread's saved xstate, registers and signal mask.
///
/// `wait_redo`: without namespaces, the library's trampoline for a wait
/// made again (`inject::vpid`, found in the state page) and the process's
/// memory: a thread blocked in `wait4` or `waitid` makes the call again
/// from there, so that the pid it returns is translated (glibc's own waits,
/// in `system` and `pclose`, compare it with the virtual pid they kept).
/// Below the red zone go the address after the `syscall` instruction and
/// the call's number, which the trampoline returns to and reads.
pub(crate) fn load_registers(
    tid: HostPid,
    t: &ThreadState,
    wait_redo: Option<(u64, &Mem)>,
) -> io::Result<()> {
    let mut regs = ptrace::regs_from_words(&t.regs)
        .ok_or_else(|| err(tid, "registers", "wrong size in image"))?;
    // Without namespaces: a wait for a process by its pid waits for its
    // new kernel pid (the image has the virtual one).
    ptrace::convert_pid_args(&mut regs, crate::kernel::pid::virt::real_of, true);
    let wait = ptrace::reissued(&regs)
        && matches!(regs.orig_rax as i64, libc::SYS_wait4 | libc::SYS_waitid);
    ptrace::fix_interrupted_syscall(&mut regs, false);
    if let (true, Some((tramp, mem))) = (wait, wait_redo) {
        let frame = regs
            .rsp
            .checked_sub(crate::kernel::remote::RED_ZONE + 16)
            .ok_or_else(|| {
                err(
                    tid,
                    "registers",
                    "stack pointer too low for a wait made again",
                )
            })?;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(regs.rip + 2).to_ne_bytes());
        b[8..].copy_from_slice(&regs.rax.to_ne_bytes());
        mem.write(RemoteAddr(frame), &b)
            .map_err(|e| err(tid, "a wait made again", e))?;
        regs.rsp = frame;
        regs.rip = tramp;
    }
    ptrace::set_xstate(tid, &t.xstate).map_err(|e| err(tid, "xstate", e))?;
    ptrace::set_regs(tid, &regs).map_err(|e| err(tid, "registers", e))?;
    ptrace::set_sigmask(tid, t.sigmask).map_err(|e| err(tid, "signal mask", e))?;
    Ok(())
}

/// The bounding capabilities thread `tid` has and the process had not.
pub(crate) fn bounding_to_drop(tid: HostPid, caps: &dmtcp_image::Capabilities) -> io::Result<u64> {
    let st = procfs::status_of(tid, Some(tid)).or_else(|_| procfs::status(tid))?;
    let have_bnd = procfs::hex_field(&st, "CapBnd");
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(40)
        .min(63);
    let known = if last_cap == 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    };
    Ok(have_bnd & !caps.bounding & known)
}

pub(crate) fn restore_caps(
    inj: &mut Injector,
    mem: &Mem,
    tramp: u64,
    caps: &Capabilities,
) -> io::Result<()> {
    let pid = inj.tid;
    let caps = *caps;
    let drop_bounding = bounding_to_drop(pid, &caps)?;
    for cap in 0..64 {
        let bit = 1u64 << cap;
        if drop_bounding & bit != 0 {
            inj.syscall(
                libc::SYS_prctl,
                [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
            )
            .map_err(|e| err(pid, "dropping bounding capability", e))?;
        }
    }
    inj.syscall(
        libc::SYS_prctl,
        [
            libc::PR_CAP_AMBIENT as u64,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    let a = put_scratch(mem, tramp, &crate::resources::threads::capset_args(&caps))?;
    inj.syscall(libc::SYS_capset, [a, a + 8, 0, 0, 0, 0])
        .map_err(|e| err(pid, "capset", e))?;
    for cap in 0..64u64 {
        if caps.ambient & (1 << cap) != 0 {
            inj.syscall(
                libc::SYS_prctl,
                [
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0,
                    0,
                    0,
                ],
            )?;
        }
    }
    Ok(())
}
/// Each thread's registers, xstate, rseq, pending signals and what it
/// reported about itself (`queries`), with its signal mask as found.
pub(crate) fn capture_threads(
    fp: &FrozenProcess,
    queries: &[ThreadQuery],
    sigmasks: &[u64],
) -> io::Result<Vec<ThreadState>> {
    let pid = fp.pid;
    let mut threads = Vec::with_capacity(fp.threads.len());
    for ((t, q), sigmask) in fp.threads.iter().zip(queries).zip(sigmasks) {
        let tid = t.tid;
        let xstate = ctx(ptrace::get_xstate(tid), pid, "xstate")?;
        let rseq = ctx(ptrace::get_rseq(tid), pid, "rseq")?;
        let mut pending = ctx(ptrace::pending_signals(tid, false), pid, "pending signals")?;
        if let Some((_, info)) = t.pending_signal {
            pending.push(info.to_vec());
        }
        crate::resources::signals::convert_senders(&mut pending, crate::kernel::pid::virt::of_real);
        threads.push(ThreadState {
            vtid: t.vtid as u32,
            name: q.name.clone(),
            regs: ptrace::regs_to_words(&{
                let mut r = ptrace::original_call(t.tid, &t.regs);
                // Without namespaces, images record the virtual pid a
                // blocked wait awaits.
                ptrace::convert_pid_args(&mut r, crate::kernel::pid::virt::of_real, false);
                r
            }),
            xstate,
            sigmask: *sigmask,
            pending,
            clear_child_tid: q.clear_child_tid,
            robust_list: q.robust,
            rseq: (rseq.rseq_abi_pointer != 0).then_some(Rseq {
                addr: rseq.rseq_abi_pointer,
                len: rseq.rseq_abi_size,
                flags: rseq.flags,
                signature: rseq.signature,
            }),
            sigaltstack: q.altstack,
        });
    }

    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot layout the code reads: name at 80, results from 104.
    #[test]
    fn slot_layout() {
        let t = ThreadState {
            vtid: 7,
            name: "a-very-long-thread-name".into(),
            regs: Vec::new(),
            xstate: Vec::new(),
            sigmask: 0,
            pending: Vec::new(),
            clear_child_tid: 0x1000,
            robust_list: (0x2000, 24),
            rseq: None,
            sigaltstack: (0, libc::SS_DISABLE, 0),
        };
        let b = slot(&t);
        assert_eq!(b.len(), SLOT as usize);
        assert_eq!(word(&b, 0), 0x1000);
        assert_eq!(word(&b, 8), 0x2000);
        assert_eq!(word(&b, 16), 24);
        assert_eq!(word(&b, 32), libc::SS_DISABLE as i64);
        assert_eq!(word(&b, 48), 0, "no rseq");
        assert_eq!(&b[80..96], b"a-very-long-thr\0");
        assert!(b[96..].iter().all(|&x| x == 0));
        assert_eq!(THREAD_SETUP_CODE[THREAD_SETUP_CODE.len() - 1], 0xcc);
        assert!(SLOTS_OFF >= CAPS_OFF + 48 && CAPS_OFF >= THREAD_SETUP_CODE.len() as u64);
    }
}
