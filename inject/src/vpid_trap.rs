//! Raw pid system calls without namespaces: the SIGSYS side of the trap
//! filter (`crate::abi::vtrap`).
//!
//! After a restart without namespaces, the restorer installs one seccomp
//! filter at the root of every thread's chain: the calls of
//! [`crate::abi::vtrap::CALLS`] made by a `syscall` instruction in the
//! program's own file-backed code (its executable and its libraries, not
//! libc, the loader or this library, whose calls are already translated)
//! return `SECCOMP_RET_TRAP` with [`TRAP_DATA`]. The kernel then sends
//! SIGSYS to the calling thread; [`on_sigsys`] reads the call from the
//! signal frame, translates it like [`crate::vpid::syscall`] (making the
//! call itself, from this library's text, which the filter lets through),
//! and puts the result in `rax`: the program resumes after its `syscall`
//! instruction with the virtual result.
//!
//! The handler is installed by the constructor when the computation runs
//! without namespaces (`DMTCP_VIRTUAL_PIDS=1`), so it is in the image and
//! comes back with the memory; its address goes into the state page
//! ([`SIGSYS_HANDLER_OFF`]) and the supervisor installs the filter only
//! in a process whose restored SIGSYS action is this handler. The
//! program's own SIGSYS action is kept here ([`sigaction`] and [`signal`]
//! read and write it; the kernel keeps ours) and receives every SIGSYS
//! that is not ours (its own filters' traps, kill).
//!
//! After an exec the filter stays (filters survive exec) but names the
//! old image's code: the new code lies elsewhere and is not trapped. The
//! constructor asks the filter whether it is there ([`PROBE`]) and says
//! so in the state page, so that a checkpoint leaves it out.
//!
//! The only module besides [`crate::sys`], [`crate::state`],
//! [`crate::exec`] and [`crate::vpid`] with `unsafe`: it handles a signal
//! frame.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::abi::vtrap::{PROBE, PROBE_ERRNO, TRAP_DATA};
use crate::abi::{SIGSYS_HANDLER_OFF, TRAP_FILTER_OFF};
use crate::sys::raw_syscall;

/// Whether [`on_sigsys`] is the kernel's SIGSYS action.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The program's SIGSYS action: handler, flags, first word of the mask.
static PROG_HANDLER: AtomicUsize = AtomicUsize::new(0);
static PROG_FLAGS: AtomicU64 = AtomicU64::new(0);
static PROG_MASK: AtomicU64 = AtomicU64::new(0);
static SIGACTION: OnceLock<usize> = OnceLock::new();
static SIGNAL: OnceLock<usize> = OnceLock::new();

/// `si_code` of a seccomp SIGSYS.
const SYS_SECCOMP: c_int = 1;
/// Offsets in a `siginfo_t` (x86-64): `si_errno`, `si_code`, and the
/// SIGSYS fields `_syscall` (after `_call_addr`).
const SI_ERRNO: usize = 4;
const SI_CODE: usize = 8;
const SI_SYSCALL: usize = 24;

type InfoHandler = unsafe extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);
type PlainHandler = unsafe extern "C" fn(c_int);
type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;

/// Constructor (after `vpid::init`), without namespaces only: installs
/// [`on_sigsys`], records it in the state page, and looks for the filter.
pub fn init(virtual_pids: bool) {
    let page = crate::state::raw();
    if !virtual_pids || page.is_null() {
        return;
    }
    let f = crate::exec::next(&SIGACTION, c"sigaction");
    if f == 0 {
        return;
    }
    // SAFETY: f is glibc's sigaction (dlsym); both structs are ours,
    // zero-initialised plain data, the handler has the SA_SIGINFO type.
    let ok = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigsys as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_RESTART;
        let r = std::mem::transmute::<usize, SigactionFn>(f)(libc::SIGSYS, &act, &mut old);
        if r == 0 {
            PROG_HANDLER.store(old.sa_sigaction, Ordering::Relaxed);
            PROG_FLAGS.store(old.sa_flags as u64, Ordering::Relaxed);
            PROG_MASK.store(first_word(&old.sa_mask), Ordering::Relaxed);
        }
        r == 0
    };
    if !ok {
        return;
    }
    ACTIVE.store(true, Ordering::Release);
    let probe = raw_syscall(libc::SYS_getppid, [PROBE, 0, 0, 0, 0, 0]);
    if probe == -i64::from(PROBE_ERRNO) {
        // SAFETY: TRAP_FILTER_OFF is 4-aligned and inside the state mapping.
        unsafe { &*page.add(TRAP_FILTER_OFF).cast::<AtomicU32>() }.store(1, Ordering::Relaxed);
    }
    // Last: a checkpoint that finds the handler's address knows the probe
    // is done (`trap_filter` is final), see the supervisor's
    // `agent::library_starting`.
    // SAFETY: SIGSYS_HANDLER_OFF is 8-aligned and inside the state mapping.
    unsafe { &*page.add(SIGSYS_HANDLER_OFF).cast::<AtomicU64>() }
        .store(on_sigsys as *const () as usize as u64, Ordering::Release);
}

fn first_word(set: &libc::sigset_t) -> u64 {
    // SAFETY: sigset_t is at least 8 bytes of plain data.
    unsafe { std::ptr::read_unaligned((set as *const libc::sigset_t).cast::<u64>()) }
}

/// Whether the trap filter sent this SIGSYS.
///
/// # Safety
/// `info` is null or the siginfo of the frame.
unsafe fn ours(info: *const libc::siginfo_t) -> bool {
    if info.is_null() {
        return false;
    }
    let b = info.cast::<u8>();
    // SAFETY: si_errno and si_code are aligned ints inside the siginfo.
    unsafe {
        *b.add(SI_CODE).cast::<c_int>() == SYS_SECCOMP
            && *b.add(SI_ERRNO).cast::<c_int>() as u32 == TRAP_DATA
    }
}

/// The kernel's SIGSYS action without namespaces: a trapped raw call is
/// made here, translated; any other SIGSYS goes to the program's action.
unsafe extern "C" fn on_sigsys(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel's siginfo of this frame.
    if !ctx.is_null() && unsafe { ours(info) } {
        // SAFETY: ctx is the frame's ucontext (SA_SIGINFO), writable; its
        // general registers are what the thread resumes with, rip already
        // past the `syscall` instruction; _syscall is an aligned int.
        unsafe {
            let nr = i64::from(*info.cast::<u8>().add(SI_SYSCALL).cast::<c_int>());
            let g = &mut (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs;
            let a = [
                g[libc::REG_RDI as usize] as u64,
                g[libc::REG_RSI as usize] as u64,
                g[libc::REG_RDX as usize] as u64,
                g[libc::REG_R10 as usize] as u64,
                g[libc::REG_R8 as usize] as u64,
                g[libc::REG_R9 as usize] as u64,
            ];
            // A wait trapped for its pid (a stale virtual one, see the
            // supervisor's `vpid_trap::stale_waits`) while one of our
            // wait wrappers runs carries the kernel pid the wrapper made.
            let wrapped =
                matches!(nr, libc::SYS_wait4 | libc::SYS_waitid) && crate::vpid::in_wait_wrapper();
            let r = if wrapped {
                raw_syscall(nr, a)
            } else {
                crate::vpid::syscall(nr, a).unwrap_or_else(|| raw_syscall(nr, a))
            };
            g[libc::REG_RAX as usize] = r;
        }
        return;
    }
    let h = PROG_HANDLER.load(Ordering::Relaxed);
    let flags = PROG_FLAGS.load(Ordering::Relaxed);
    if flags & libc::SA_RESETHAND as u64 != 0 {
        PROG_HANDLER.store(libc::SIG_DFL, Ordering::Relaxed);
        PROG_FLAGS.store(0, Ordering::Relaxed);
    }
    match h {
        libc::SIG_IGN => {}
        libc::SIG_DFL => {
            // The default action (core dump): the kernel's action back to
            // SIG_DFL and the signal again, delivered when we return.
            let dfl = [0u64; 4];
            raw_syscall(
                libc::SYS_rt_sigaction,
                [sig as u64, dfl.as_ptr() as u64, 0, 8, 0, 0],
            );
            let pid = raw_syscall(libc::SYS_getpid, [0; 6]);
            let tid = raw_syscall(libc::SYS_gettid, [0; 6]);
            raw_syscall(
                libc::SYS_tgkill,
                [pid as u64, tid as u64, sig as u64, 0, 0, 0],
            );
        }
        h if flags & libc::SA_SIGINFO as u64 != 0 => {
            // SAFETY: the program's SA_SIGINFO handler, called as the
            // kernel would have.
            unsafe { std::mem::transmute::<usize, InfoHandler>(h)(sig, info, ctx) }
        }
        // SAFETY: the program's plain handler, called as the kernel would.
        h => unsafe { std::mem::transmute::<usize, PlainHandler>(h)(sig) },
    }
}

/// `sigaction(SIGSYS, ...)` while [`on_sigsys`] is the kernel's action:
/// the program's action is read and written here. `None` when the call
/// is not ours to answer.
///
/// # Safety
/// `act` is null or a valid `struct sigaction`; `old` is null or writable.
pub unsafe fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> Option<c_int> {
    if sig != libc::SIGSYS || !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: the caller's pointers (see above).
    unsafe {
        if let Some(o) = old.as_mut() {
            *o = std::mem::zeroed();
            o.sa_sigaction = PROG_HANDLER.load(Ordering::Relaxed);
            o.sa_flags = PROG_FLAGS.load(Ordering::Relaxed) as c_int;
            std::ptr::write_unaligned(
                (&mut o.sa_mask as *mut libc::sigset_t).cast::<u64>(),
                PROG_MASK.load(Ordering::Relaxed),
            );
        }
        if let Some(a) = act.as_ref() {
            PROG_MASK.store(first_word(&a.sa_mask), Ordering::Relaxed);
            PROG_FLAGS.store(a.sa_flags as u64, Ordering::Relaxed);
            PROG_HANDLER.store(a.sa_sigaction, Ordering::Relaxed);
        }
    }
    Some(0)
}

/// `signal(3)`: glibc's calls its own `sigaction` inside, which the
/// preload does not see, so SIGSYS is answered here (BSD semantics, as
/// glibc's: `SA_RESTART`); every other signal goes to glibc.
#[no_mangle]
pub extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if sig == libc::SIGSYS && ACTIVE.load(Ordering::Acquire) {
        // SAFETY: a zeroed sigaction is valid; our own structs.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            let mut old: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = handler;
            act.sa_flags = libc::SA_RESTART;
            sigaction(sig, &act, &mut old);
            return old.sa_sigaction;
        }
    }
    let f = crate::exec::next(&SIGNAL, c"signal");
    if f == 0 {
        crate::sys::set_errno(libc::ENOSYS);
        return libc::SIG_ERR;
    }
    // SAFETY: glibc's signal, with the caller's arguments.
    unsafe {
        std::mem::transmute::<
            usize,
            unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t,
        >(f)(sig, handler)
    }
}

#[cfg(test)]
mod tests {
    /// The numbers in `abi::vtrap::CALLS` (no libc in abi.rs) are the
    /// calls `vpid::syscall` translates.
    #[test]
    fn trapped_calls_are_the_translated_ones() {
        let want = [
            libc::SYS_getpid,
            libc::SYS_getppid,
            libc::SYS_gettid,
            libc::SYS_getpgrp,
            libc::SYS_setsid,
            libc::SYS_getpgid,
            libc::SYS_getsid,
            libc::SYS_setpgid,
            libc::SYS_kill,
            libc::SYS_tkill,
            libc::SYS_tgkill,
            libc::SYS_wait4,
            libc::SYS_sched_setaffinity,
            libc::SYS_sched_getaffinity,
            libc::SYS_sched_setscheduler,
            libc::SYS_sched_getscheduler,
            libc::SYS_sched_setparam,
            libc::SYS_sched_getparam,
            libc::SYS_sched_rr_get_interval,
            libc::SYS_sched_setattr,
            libc::SYS_sched_getattr,
            libc::SYS_prlimit64,
            libc::SYS_pidfd_open,
            libc::SYS_getpriority,
            libc::SYS_setpriority,
            libc::SYS_rt_sigqueueinfo,
            libc::SYS_rt_tgsigqueueinfo,
            libc::SYS_waitid,
        ];
        assert_eq!(crate::abi::vtrap::CALLS, &want[..]);
    }
}
