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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::abi::vtrap::{PROBE, PROBE_ERRNO, TRAP_DATA};
use crate::abi::{
    SIGSYS_HANDLER_OFF, SIGSYS_LIB_FLAGS, SIGSYS_LIB_RESTORER_OFF, SIGSYS_PROG_OFF, TRAP_FILTER_OFF,
};
use crate::sys::raw_syscall;

/// Whether [`on_sigsys`] is the kernel's SIGSYS action.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The program's SIGSYS action, in the state page (where the restorer
/// can write it too): handler, flags, restorer, first word of the mask,
/// as the kernel's `struct sigaction` has them.
#[derive(Clone, Copy)]
struct ProgAction([u64; 4]);

/// The state page's four words of the program's action (null without a
/// page: then [`ACTIVE`] is never set and nothing reads them).
fn prog_words() -> Option<&'static [AtomicU64; 4]> {
    let page = crate::state::raw();
    if page.is_null() {
        return None;
    }
    // SAFETY: SIGSYS_PROG_OFF is 8-aligned, its 32 bytes are inside the
    // state mapping (never unmapped); any bits are a valid AtomicU64.
    Some(unsafe { &*page.add(SIGSYS_PROG_OFF).cast::<[AtomicU64; 4]>() })
}

/// The state page's `sigsys_lib_restorer` (None without a page).
fn lib_restorer() -> Option<&'static AtomicU64> {
    let page = crate::state::raw();
    if page.is_null() {
        return None;
    }
    // SAFETY: SIGSYS_LIB_RESTORER_OFF is 8-aligned and inside the state
    // mapping (never unmapped); any bits are a valid AtomicU64.
    Some(unsafe { &*page.add(SIGSYS_LIB_RESTORER_OFF).cast::<AtomicU64>() })
}

fn prog() -> ProgAction {
    let mut a = [0u64; 4];
    if let Some(w) = prog_words() {
        for (o, w) in a.iter_mut().zip(w) {
            *o = w.load(Ordering::Relaxed);
        }
    }
    ProgAction(a)
}

fn set_prog(p: ProgAction) {
    if let Some(w) = prog_words() {
        for (w, v) in w.iter().zip(p.0) {
            w.store(v, Ordering::Relaxed);
        }
    }
}
static SIGACTION: OnceLock<usize> = OnceLock::new();
static SIGNAL: OnceLock<usize> = OnceLock::new();
static BSD_SIGNAL: OnceLock<usize> = OnceLock::new();
static SYSV_SIGNAL: OnceLock<usize> = OnceLock::new();
static SIGSET: OnceLock<usize> = OnceLock::new();

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
        act.sa_flags = SIGSYS_LIB_FLAGS as c_int;
        let r = std::mem::transmute::<usize, SigactionFn>(f)(libc::SIGSYS, &act, &mut old);
        if r == 0 {
            set_prog(ProgAction([
                old.sa_sigaction as u64,
                old.sa_flags as u32 as u64,
                old.sa_restorer.map_or(0, |f| f as usize as u64),
                first_word(&old.sa_mask),
            ]));
        }
        r == 0
    };
    if !ok {
        return;
    }
    // The restorer glibc gave our handler: for [`take_back`], and for the
    // restorer when it gives the kernel's action back to us.
    let mut k = [0u64; 4];
    if raw_syscall(
        libc::SYS_rt_sigaction,
        [libc::SIGSYS as u64, 0, k.as_mut_ptr() as u64, 8, 0, 0],
    ) == 0
        && k[1] & crate::abi::SA_RESTORER != 0
    {
        if let Some(w) = lib_restorer() {
            w.store(k[2], Ordering::Relaxed);
        }
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
    let ProgAction([h, flags, _, _]) = prog();
    let h = h as usize;
    if flags & libc::SA_RESETHAND as u64 != 0 {
        set_prog(ProgAction([libc::SIG_DFL as u64, 0, 0, 0]));
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

/// Whether the kernel's SIGSYS action is still [`on_sigsys`]; if a raw
/// `rt_sigaction` of the program's replaced it (before a restart, when
/// nothing traps the call), the program's action it put there becomes the
/// recorded one and ours goes back into the kernel.
fn take_back() {
    let mut k = [0u64; 4];
    let r = raw_syscall(
        libc::SYS_rt_sigaction,
        [libc::SIGSYS as u64, 0, k.as_mut_ptr() as u64, 8, 0, 0],
    );
    let ours = on_sigsys as *const () as usize as u64;
    if r != 0 || k[0] == ours {
        return;
    }
    // Ours again, with glibc's restorer (x86-64 signal frames need one).
    let restorer = lib_restorer().map_or(0, |w| w.load(Ordering::Relaxed));
    if restorer == 0 {
        return;
    }
    set_prog(ProgAction(k));
    let act = [
        ours,
        SIGSYS_LIB_FLAGS | crate::abi::SA_RESTORER,
        restorer,
        0u64,
    ];
    raw_syscall(
        libc::SYS_rt_sigaction,
        [libc::SIGSYS as u64, act.as_ptr() as u64, 0, 8, 0, 0],
    );
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
    take_back();
    let ProgAction([h, flags, restorer, mask]) = prog();
    // SAFETY: the caller's pointers (see above); a non-zero restorer is
    // one a `sigaction` gave us as an `extern "C" fn()` (or the kernel
    // took as one), handed back unchanged.
    unsafe {
        if let Some(o) = old.as_mut() {
            *o = std::mem::zeroed();
            o.sa_sigaction = h as usize;
            o.sa_flags = flags as c_int;
            o.sa_restorer =
                (restorer != 0).then(|| std::mem::transmute::<u64, extern "C" fn()>(restorer));
            std::ptr::write_unaligned((&mut o.sa_mask as *mut libc::sigset_t).cast::<u64>(), mask);
        }
        if let Some(a) = act.as_ref() {
            set_prog(ProgAction([
                a.sa_sigaction as u64,
                a.sa_flags as u32 as u64,
                a.sa_restorer.map_or(0, |f| f as usize as u64),
                first_word(&a.sa_mask),
            ]));
        }
    }
    Some(0)
}

/// A raw `rt_sigaction(SIGSYS, act, old, size)` (trapped by the filter,
/// or made through libc's `syscall()`) while [`on_sigsys`] is the kernel's
/// action: as [`sigaction`], on the kernel's `struct sigaction` (handler,
/// flags, restorer, mask). The structures are copied with
/// `process_vm_readv`/`writev` on ourselves, so that a bad pointer gives
/// `-EFAULT` as the kernel would. `None` when the call is not ours.
pub fn raw_sigaction(a: [u64; 6]) -> Option<i64> {
    if a[0] as u32 != libc::SIGSYS as u32 || !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    if a[3] != 8 {
        return Some(-i64::from(libc::EINVAL));
    }
    take_back();
    let me = raw_syscall(libc::SYS_getpid, [0; 6]) as u64;
    let copy = |local: *mut u64, remote: u64, write: bool| -> bool {
        let l = libc::iovec {
            iov_base: local.cast(),
            iov_len: 32,
        };
        let r = libc::iovec {
            iov_base: remote as *mut c_void,
            iov_len: 32,
        };
        let nr = if write {
            libc::SYS_process_vm_writev
        } else {
            libc::SYS_process_vm_readv
        };
        let lp = &l as *const libc::iovec as u64;
        let rp = &r as *const libc::iovec as u64;
        raw_syscall(nr, [me, lp, 1, rp, 1, 0]) == 32
    };
    let mut new = [0u64; 4];
    if a[1] != 0 && !copy(new.as_mut_ptr(), a[1], false) {
        return Some(-i64::from(libc::EFAULT));
    }
    if a[2] != 0 {
        let mut cur = prog().0;
        if !copy(cur.as_mut_ptr(), a[2], true) {
            return Some(-i64::from(libc::EFAULT));
        }
    }
    if a[1] != 0 {
        set_prog(ProgAction(new));
    }
    Some(0)
}

/// The program's SIGSYS action set to `handler` with `flags` and an empty
/// mask through [`sigaction`] (kept as the program's, the kernel's
/// action staying the library's); the previous handler.
fn set_sigsys(handler: libc::sighandler_t, flags: c_int) -> libc::sighandler_t {
    // SAFETY: zeroed sigactions are valid; both are ours, passed by
    // pointer for the call only.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = flags;
        if sigaction(libc::SIGSYS, &act, &mut old) != Some(0) {
            return libc::SIG_ERR;
        }
        old.sa_sigaction
    }
}

/// glibc's function `name` of the `signal` family (`sig`, `handler`), for
/// every signal but SIGSYS.
fn next_signal_fn(
    slot: &'static OnceLock<usize>,
    name: &'static std::ffi::CStr,
    sig: c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    let f = crate::exec::next(slot, name);
    if f == 0 {
        crate::sys::set_errno(libc::ENOSYS);
        return libc::SIG_ERR;
    }
    // SAFETY: glibc's function of that name, with the caller's arguments
    // (every one of the family has this type).
    unsafe {
        std::mem::transmute::<
            usize,
            unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t,
        >(f)(sig, handler)
    }
}

/// Whether a `signal`-family call for `sig` is the library's to answer.
fn sigsys_ours(sig: c_int) -> bool {
    sig == libc::SIGSYS && ACTIVE.load(Ordering::Acquire)
}

/// `signal(3)`: glibc's calls its own `sigaction` inside, which the
/// preload does not see, so SIGSYS is answered here (BSD semantics, as
/// glibc's: `SA_RESTART`); every other signal goes to glibc.
#[no_mangle]
pub extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if sigsys_ours(sig) {
        return set_sigsys(handler, libc::SA_RESTART);
    }
    next_signal_fn(&SIGNAL, c"signal", sig, handler)
}

/// `bsd_signal(3)`: `signal` under its old name.
#[no_mangle]
pub extern "C" fn bsd_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if sigsys_ours(sig) {
        return set_sigsys(handler, libc::SA_RESTART);
    }
    next_signal_fn(&BSD_SIGNAL, c"bsd_signal", sig, handler)
}

/// `sysv_signal(3)`: System V semantics, a handler that runs once and
/// does not block its signal.
#[no_mangle]
pub extern "C" fn sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if sigsys_ours(sig) {
        return set_sigsys(handler, libc::SA_RESETHAND | libc::SA_NODEFER);
    }
    next_signal_fn(&SYSV_SIGNAL, c"sysv_signal", sig, handler)
}

/// glibc's `SIG_HOLD`.
const SIG_HOLD: libc::sighandler_t = 2;

/// `sigset(3)`: a handler (empty mask, no flags), after which the signal
/// is unblocked; the previous handler, or `SIG_HOLD` when the signal was
/// blocked. `SIG_HOLD` itself (block the signal) goes to glibc, which
/// does not change the action.
#[no_mangle]
pub extern "C" fn sigset(sig: c_int, disp: libc::sighandler_t) -> libc::sighandler_t {
    if !sigsys_ours(sig) || disp == SIG_HOLD {
        return next_signal_fn(&SIGSET, c"sigset", sig, disp);
    }
    let prev = set_sigsys(disp, 0);
    if prev == libc::SIG_ERR {
        return prev;
    }
    // SAFETY: sigsets of ours, initialised by sigemptyset; pointers for the
    // call only.
    let was_blocked = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, &mut old) == 0
            && libc::sigismember(&old, sig) == 1
    };
    if was_blocked {
        SIG_HOLD
    } else {
        prev
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
