//! Virtual pids, for computations run without namespaces
//! (`dmtcp-run --no-namespaces`): the libc calls that take or return a pid,
//! a tid, a process group or a session id, interposed by the preload.
//!
//! The processes keep the pids the kernel gives them. Until their first
//! restart, those are the pids the program sees, and the pid table in the
//! state page is empty: every wrapper then costs one load and one branch
//! besides the call it wraps. A restart gives every process and thread a
//! new kernel pid; the restorer writes the table of (virtual, real) pairs
//! into each restored process ([`crate::abi::PIDMAP_OFF`]) before it runs,
//! and the wrappers translate: real to virtual on the way out, virtual to
//! real on the way in. A pid not in the table is its own virtual pid
//! (processes born after the restart, processes outside the computation).
//! A program exec'd after a restart takes the table from the file the
//! restorer left for it ([`crate::abi::VPID_KEY_ENV`], [`init`]).
//!
//! `fork` makes sure a child's real pid is not a virtual pid the program
//! already knows (it would name two processes): such a child exits at
//! once, is reaped, and the fork is tried again. The children of
//! `vfork`, `posix_spawn`, `system` and `popen` cannot be made again (a
//! `vfork` wrapper cannot return twice from one stack frame; a spawned
//! child may already run its program): before them the pids that would
//! clash are used up ([`skip_known_pids`]).
//!
//! Calls through libc's `syscall()` function are translated too
//! ([`syscall`], from the library's `syscall` export), and so are
//! `si_pid` of `SA_SIGINFO` handlers ([`sigaction`] installs them behind
//! [`trampoline`]), fcntl's owners, the pid of the `sched_*`, `prlimit`,
//! `get/setpriority` and `pidfd_open` calls, the target of [`sigqueue`],
//! the pid requests of [`ioctl`], and `/proc/PID/...` paths given to the
//! open/stat/access/readlink/opendir family ([`proc_path`]). Not
//! translated (see docs/user-guide.md): the `syscall` instruction in
//! statically linked programs (Go; in the program's own code elsewhere it
//! is trapped, see `vpid_trap`), children made by `clone` are not
//! checked against virtual pids (those of `posix_spawn`, `system`,
//! `popen` and `vfork` are, [`skip_known_pids`], up to a race with other
//! processes), pids inside `/proc` files. `ssi_pid` read from a signalfd
//! is translated in `vpid_signalfd`.
//! A checkpoint that stops a thread in the middle of a wrapper is made up
//! for ([`stable`], [`again`], [`virt_since`]). The pid of
//! `SO_PEERCRED` and of `SCM_CREDENTIALS` messages ([`recvmsg`],
//! [`sendmsg`], [`recvmmsg`], [`sendmmsg`]) is translated.

use std::ffi::{c_int, c_ulong, c_void};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use libc::pid_t;

use crate::abi::{PIDMAP_MAX, PIDMAP_OFF, PIDMAP_PAIRS};
use crate::exec::next;

/// The pairs of the table, empty when there is none.
#[inline]
/// Whether a restart without namespaces gave this process a table of
/// virtual pids (one load before the first).
pub(crate) fn has_known_pids() -> bool {
    !table().is_empty()
}

pub(crate) fn table() -> &'static [[AtomicI32; 2]] {
    let page = crate::state::raw();
    if page.is_null() {
        return &[];
    }
    // SAFETY: a non-null page is the state mapping (STATE_MAP_LEN bytes,
    // page-aligned, never unmapped); PIDMAP_OFF is 4-aligned and inside it.
    let n = unsafe { &*page.add(PIDMAP_OFF).cast::<AtomicU32>() }.load(Ordering::Relaxed) as usize;
    if n == 0 {
        return &[];
    }
    // SAFETY: the pairs start at PIDMAP_PAIRS (8-aligned) and PIDMAP_MAX of
    // them fit in the mapping; all-bit patterns are valid i32 atomics.
    unsafe {
        std::slice::from_raw_parts(
            page.add(PIDMAP_PAIRS).cast::<[AtomicI32; 2]>(),
            n.min(PIDMAP_MAX),
        )
    }
}

/// Finds where glibc keeps the calling thread's kernel tid in its thread
/// descriptor (the thread pointer is the descriptor on x86-64) and tells
/// the restorer through the state page; called once by the constructor,
/// on the main thread, whose tid is the pid.
pub fn find_tid_offset() {
    let page = crate::state::raw();
    if page.is_null() {
        return;
    }
    let tid = crate::sys::raw_syscall(libc::SYS_gettid, [0; 6]) as i32;
    // SAFETY: pthread_self has no preconditions.
    let tp = unsafe { libc::pthread_self() } as usize;
    // glibc's `struct pthread` is larger than 0x400 bytes: the scanned
    // range is inside it. The tcbhead_t header (self pointers, guards)
    // comes first; the tid follows it.
    let found = (0x100..0x400).step_by(4).find(|&off| {
        // SAFETY: tp + off lies inside the calling thread's descriptor
        // (see above), 4-aligned, readable.
        unsafe { std::ptr::read_volatile((tp + off) as *const i32) == tid }
    });
    if let Some(off) = found {
        // SAFETY: TID_OFFSET_OFF is 4-aligned and inside the state mapping.
        unsafe { &*page.add(crate::abi::TID_OFFSET_OFF).cast::<AtomicU32>() }
            .store(off as u32, Ordering::Relaxed);
    }
}

/// The virtual id of a real one (ids <= 0 and ids not in the table are
/// unchanged).
#[inline]
pub fn to_virt(real: pid_t) -> pid_t {
    if real <= 0 {
        return real;
    }
    table()
        .iter()
        .find(|p| p[1].load(Ordering::Relaxed) == real)
        .map_or(real, |p| p[0].load(Ordering::Relaxed))
}

/// The real id of a virtual one.
#[inline]
pub fn to_real(virt: pid_t) -> pid_t {
    if virt <= 0 {
        return virt;
    }
    table()
        .iter()
        .find(|p| p[0].load(Ordering::Relaxed) == virt && p[1].load(Ordering::Relaxed) > 0)
        .map_or(virt, |p| p[1].load(Ordering::Relaxed))
}

/// A pid argument of kill/waitpid: > 0 a process, < -1 a process group.
#[inline]
fn target_to_real(pid: pid_t) -> pid_t {
    if pid < -1 {
        -to_real(-pid)
    } else {
        to_real(pid)
    }
}

/// Whether real pid `p` is the virtual pid of another process.
pub(crate) fn taken_as_virtual(p: pid_t) -> bool {
    table().iter().any(|e| {
        let real = e[1].load(Ordering::Relaxed);
        e[0].load(Ordering::Relaxed) == p && real != p && real > 0
    })
}

// ---------------------------------------------------------------------
// Restarts in the middle of a call. A checkpoint stops a thread wherever
// it is: between a system call and the translation of the id it returned,
// or between the translation of an id and the call. The thread then goes
// on after the restart with a real id of the run before. Each wrapper
// notes the restart count around its call (it changes only while every
// thread is stopped, with the table) and makes up for it.
// ---------------------------------------------------------------------

/// The state page's restart count (0 without a page).
#[inline]
pub(crate) fn epoch() -> u64 {
    let page = crate::state::raw();
    if page.is_null() {
        return 0;
    }
    // SAFETY: a non-null page is the state mapping; RESTARTS is an
    // 8-aligned u64 inside it.
    unsafe { &*page.add(crate::abi::off::RESTARTS).cast::<AtomicU64>() }.load(Ordering::Acquire)
}

/// `f` (a call with its translations) made again until no restart came in
/// the middle: for calls that may be made twice (reading ids, setting a
/// value to the same value again).
#[inline]
fn stable<T>(mut f: impl FnMut() -> T) -> T {
    loop {
        let e = epoch();
        let v = f();
        if epoch() == e {
            return v;
        }
    }
}

/// `f` (a call taking translated ids, raw result) made again when a
/// restart came in the middle and it found no such process or child: it
/// may have been made with a real id of the run before. One that
/// succeeded was made before the checkpoint and is not repeated.
#[inline]
fn again(mut f: impl FnMut() -> i64) -> i64 {
    loop {
        let e = epoch();
        let r = f();
        if epoch() == e || !(r == -i64::from(libc::ESRCH) || r == -i64::from(libc::ECHILD)) {
            return r;
        }
    }
}

/// [`again`] for a libc function (-1 and errno on failure).
#[inline]
fn again_libc<T: Copy + PartialEq + From<i8>>(mut f: impl FnMut() -> T) -> T {
    loop {
        let e = epoch();
        let r = f();
        if epoch() == e || r != T::from(-1) {
            return r;
        }
        let err = std::io::Error::last_os_error().raw_os_error();
        if err != Some(libc::ESRCH) && err != Some(libc::ECHILD) {
            return r;
        }
    }
}

/// The virtual id of a real one that a call made after restart count
/// `e` was read returned: when a restart came in the middle, the id is
/// one of this run (a current real id) or of the run before (a previous
/// real id, [`crate::abi::PIDMAP_PREV_OFF`]).
pub(crate) fn virt_since(e: u64, real: pid_t) -> pid_t {
    if real <= 0 {
        return real;
    }
    loop {
        let now = epoch();
        let v = if now == e {
            to_virt(real)
        } else {
            to_virt_either(real)
        };
        if epoch() == now {
            return v;
        }
    }
}

/// A current real id's virtual id, else a previous real id's.
fn to_virt_either(real: pid_t) -> pid_t {
    let t = table();
    if let Some(p) = t.iter().find(|p| p[1].load(Ordering::Relaxed) == real) {
        return p[0].load(Ordering::Relaxed);
    }
    let page = crate::state::raw();
    // SAFETY: a non-empty table comes from the state mapping; pid_prev is
    // a 4-aligned u32 inside it.
    let with_prev = !t.is_empty()
        && unsafe { &*page.add(crate::abi::PIDMAP_PREV_OFF).cast::<AtomicU32>() }
            .load(Ordering::Relaxed)
            == 1
        && t.len() <= crate::abi::PIDMAP_PREV_MAX;
    if !with_prev {
        return real;
    }
    // SAFETY: with pid_prev set, t.len() i32s follow the pairs, inside the
    // mapping (t.len() <= PIDMAP_PREV_MAX); 4-aligned.
    let prev = unsafe {
        std::slice::from_raw_parts(
            page.add(PIDMAP_PAIRS + 8 * t.len()).cast::<AtomicI32>(),
            t.len(),
        )
    };
    prev.iter()
        .position(|p| p.load(Ordering::Relaxed) == real)
        .map_or(real, |i| t[i][0].load(Ordering::Relaxed))
}

/// A system call with the libc convention (-1 and errno on failure).
fn sys(nr: libc::c_long, a: [u64; 6]) -> i64 {
    crate::sys::libc_result(crate::sys::raw_syscall(nr, a))
}

fn sys0(nr: libc::c_long) -> pid_t {
    sys(nr, [0; 6]) as pid_t
}

fn sys1(nr: libc::c_long, a: pid_t) -> pid_t {
    sys(nr, [a as u64, 0, 0, 0, 0, 0]) as pid_t
}

/// A child made by a raw `fork` or fork-like `clone` (`make` runs the
/// call): made after [`skip_known_pids`], its pid as the parent sees it.
fn child_pid_of(make: impl FnOnce() -> i64) -> i64 {
    skip_known_pids();
    let e = epoch();
    let r = make();
    if r > 0 {
        i64::from(virt_since(e, r as pid_t))
    } else {
        r
    }
}

/// An id argument as a raw syscall takes it (sign-extended).
fn arg(id: pid_t) -> u64 {
    id as i64 as u64
}

/// The pid-carrying system calls made through libc's `syscall()`: the
/// raw result (-errno on failure), or `None` for any other call.
pub fn syscall(nr: i64, a: [u64; 6]) -> Option<i64> {
    if nr == libc::SYS_rt_sigaction {
        return crate::vpid_trap::raw_sigaction(a);
    }
    let id = |i: usize| a[i] as i32;
    let raw = |nr: i64, b: [u64; 6]| crate::sys::raw_syscall(nr, b);
    let out = |r: i64| {
        if r > 0 {
            i64::from(to_virt(r as pid_t))
        } else {
            r
        }
    };
    // The arguments with some of them replaced.
    let with = |set: &[(usize, u64)]| {
        let mut b = a;
        for &(i, v) in set {
            b[i] = v;
        }
        b
    };
    Some(match nr {
        libc::SYS_getpid | libc::SYS_getppid | libc::SYS_gettid | libc::SYS_getpgrp => {
            stable(|| out(raw(nr, a)))
        }
        // A new process on the caller's stack (a copy of it): the child
        // returns here too, with 0. Only then: a new stack would leave
        // the child without this frame (glibc's `syscall` alike), and a
        // shared memory (CLONE_VM) makes it a vfork, whose child returns
        // first through a frame the parent still needs.
        libc::SYS_fork => child_pid_of(|| raw(nr, a)),
        libc::SYS_clone
            if a[1] == 0 && a[0] & (libc::CLONE_VM | libc::CLONE_THREAD) as u64 == 0 =>
        {
            child_pid_of(|| raw(nr, a))
        }
        libc::SYS_setsid => {
            let e = epoch();
            let r = raw(nr, a);
            if r > 0 {
                i64::from(virt_since(e, r as pid_t))
            } else {
                r
            }
        }
        libc::SYS_getpgid | libc::SYS_getsid => {
            stable(|| out(raw(nr, with(&[(0, arg(to_real(id(0))))]))))
        }
        libc::SYS_setpgid => again(|| {
            raw(
                nr,
                with(&[(0, arg(to_real(id(0)))), (1, arg(to_real(id(1))))]),
            )
        }),
        libc::SYS_kill => again(|| raw(nr, with(&[(0, arg(target_to_real(id(0))))]))),
        libc::SYS_tkill => again(|| raw(nr, with(&[(0, arg(to_real(id(0))))]))),
        libc::SYS_tgkill => again(|| {
            raw(
                nr,
                with(&[(0, arg(to_real(id(0)))), (1, arg(to_real(id(1))))]),
            )
        }),
        libc::SYS_wait4 => {
            let e = epoch();
            let r = in_wait(|| again(|| raw(nr, with(&[(0, arg(target_to_real(id(0))))]))));
            if r > 0 {
                i64::from(virt_since(e, r as pid_t))
            } else {
                r
            }
        }
        libc::SYS_sched_setaffinity
        | libc::SYS_sched_getaffinity
        | libc::SYS_sched_setscheduler
        | libc::SYS_sched_getscheduler
        | libc::SYS_sched_setparam
        | libc::SYS_sched_getparam
        | libc::SYS_sched_rr_get_interval
        | libc::SYS_sched_setattr
        | libc::SYS_sched_getattr
        | libc::SYS_prlimit64 => stable(|| raw(nr, with(&[(0, arg(to_real(id(0))))]))),
        libc::SYS_pidfd_open => again(|| raw(nr, with(&[(0, arg(to_real(id(0))))]))),
        libc::SYS_getpriority | libc::SYS_setpriority => {
            stable(|| raw(nr, with(&[(1, prio_who(id(0), a[1] as libc::id_t) as u64)])))
        }
        libc::SYS_rt_sigqueueinfo => again(|| {
            let mut info = [0u8; SIGINFO_LEN];
            let b = with(&[(0, arg(to_real(id(0)))), (2, sender_info(a[2], &mut info))]);
            raw(nr, b)
        }),
        libc::SYS_rt_tgsigqueueinfo => again(|| {
            let mut info = [0u8; SIGINFO_LEN];
            let b = with(&[
                (0, arg(to_real(id(0)))),
                (1, arg(to_real(id(1)))),
                (3, sender_info(a[3], &mut info)),
            ]);
            raw(nr, b)
        }),
        libc::SYS_waitid => {
            let e = epoch();
            let r = in_wait(|| {
                again(|| {
                    if matches!(a[0] as libc::idtype_t, libc::P_PID | libc::P_PGID) {
                        raw(nr, with(&[(1, arg(to_real(id(1))) & 0xffff_ffff)]))
                    } else {
                        raw(nr, a)
                    }
                })
            });
            if r == 0 && a[2] != 0 {
                // SAFETY: the call filled the caller's siginfo_t at a[2];
                // si_pid is an aligned int inside it.
                unsafe {
                    let p = (a[2] as *mut u8).add(SI_PID).cast::<pid_t>();
                    *p = virt_since(e, *p);
                }
            }
            r
        }
        _ => return None,
    })
}

/// Size of a `siginfo_t`.
const SIGINFO_LEN: usize = 128;

/// The siginfo a program queues with a signal (`rt_sigqueueinfo`,
/// `rt_tgsigqueueinfo`): its sender pid, a virtual one, becomes the real
/// one in a copy (`buf`), as the kernel fills it for `kill`; the receiver's
/// library turns it back. Returns the address to pass (the caller's when
/// null or unreadable).
fn sender_info(ptr: u64, buf: &mut [u8; SIGINFO_LEN]) -> u64 {
    if ptr == 0 {
        return ptr;
    }
    // SAFETY: the caller's `siginfo_t *` (the system call's contract),
    // SIGINFO_LEN bytes, copied.
    unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, buf.as_mut_ptr(), SIGINFO_LEN) };
    let at = |o: usize| i32::from_ne_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
    // Only where the field is a sender's pid (as the receiving side reads it).
    if carries_pid(at(0), at(SI_CODE)) {
        let pid = at(SI_PID);
        buf[SI_PID..SI_PID + 4].copy_from_slice(&to_real(pid).to_ne_bytes());
    }
    buf.as_ptr() as u64
}

#[no_mangle]
pub extern "C" fn getpid() -> pid_t {
    stable(|| to_virt(sys0(libc::SYS_getpid)))
}

#[no_mangle]
pub extern "C" fn getppid() -> pid_t {
    stable(|| to_virt(sys0(libc::SYS_getppid)))
}

#[no_mangle]
pub extern "C" fn gettid() -> pid_t {
    stable(|| to_virt(sys0(libc::SYS_gettid)))
}

#[no_mangle]
pub extern "C" fn getpgrp() -> pid_t {
    stable(|| to_virt(sys1(libc::SYS_getpgid, 0)))
}

#[no_mangle]
pub extern "C" fn getpgid(pid: pid_t) -> pid_t {
    stable(|| to_virt(sys1(libc::SYS_getpgid, to_real(pid))))
}

#[no_mangle]
pub extern "C" fn getsid(pid: pid_t) -> pid_t {
    stable(|| to_virt(sys1(libc::SYS_getsid, to_real(pid))))
}

#[no_mangle]
pub extern "C" fn setsid() -> pid_t {
    let e = epoch();
    virt_since(e, sys0(libc::SYS_setsid))
}

#[no_mangle]
pub extern "C" fn setpgid(pid: pid_t, pgid: pid_t) -> c_int {
    again_libc(|| {
        sys(
            libc::SYS_setpgid,
            [arg(to_real(pid)), arg(to_real(pgid)), 0, 0, 0, 0],
        ) as c_int
    })
}

#[no_mangle]
pub extern "C" fn kill(pid: pid_t, sig: c_int) -> c_int {
    again_libc(|| {
        sys(
            libc::SYS_kill,
            [arg(target_to_real(pid)), sig as u64, 0, 0, 0, 0],
        ) as c_int
    })
}

#[no_mangle]
pub extern "C" fn killpg(pgrp: pid_t, sig: c_int) -> c_int {
    if pgrp < 0 {
        crate::sys::set_errno(libc::EINVAL);
        return -1;
    }
    again_libc(|| {
        sys(
            libc::SYS_kill,
            [arg(-to_real(pgrp)), sig as u64, 0, 0, 0, 0],
        ) as c_int
    })
}

#[no_mangle]
pub extern "C" fn tgkill(tgid: pid_t, tid: pid_t, sig: c_int) -> c_int {
    again_libc(|| {
        sys(
            libc::SYS_tgkill,
            [arg(to_real(tgid)), arg(to_real(tid)), sig as u64, 0, 0, 0],
        ) as c_int
    })
}

static WAITPID: OnceLock<usize> = OnceLock::new();
static WAIT: OnceLock<usize> = OnceLock::new();
static WAIT3: OnceLock<usize> = OnceLock::new();
static WAIT4: OnceLock<usize> = OnceLock::new();
static WAITID: OnceLock<usize> = OnceLock::new();
static FORK: OnceLock<usize> = OnceLock::new();
static TCGETPGRP: OnceLock<usize> = OnceLock::new();
static TCSETPGRP: OnceLock<usize> = OnceLock::new();
static TCGETSID: OnceLock<usize> = OnceLock::new();

/// glibc's definition, or ENOSYS when there is none.
macro_rules! real {
    ($cell:expr, $name:expr, $ty:ty) => {{
        let f = next(&$cell, $name);
        if f == 0 {
            crate::sys::set_errno(libc::ENOSYS);
            return -1;
        }
        // SAFETY: f is glibc's definition of this name, found by dlsym,
        // whose C type is $ty.
        unsafe { std::mem::transmute::<usize, $ty>(f) }
    }};
}

/// `waitpid(2)`.
///
/// # Safety
/// `status` is null or points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
    let f = real!(
        WAITPID,
        c"waitpid",
        unsafe extern "C" fn(pid_t, *mut c_int, c_int) -> pid_t
    );
    let e = epoch();
    // SAFETY: the caller's pointer, passed on.
    let r = in_wait(|| again_libc(|| unsafe { f(target_to_real(pid), status, options) }));
    virt_since(e, r)
}

/// `wait(2)`.
///
/// # Safety
/// `status` is null or points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn wait(status: *mut c_int) -> pid_t {
    let f = real!(WAIT, c"wait", unsafe extern "C" fn(*mut c_int) -> pid_t);
    let e = epoch();
    // SAFETY: the caller's pointer, passed on.
    virt_since(e, in_wait(|| unsafe { f(status) }))
}

/// `wait3(2)`.
///
/// # Safety
/// `status` and `rusage` are null or writable.
#[no_mangle]
pub unsafe extern "C" fn wait3(status: *mut c_int, options: c_int, rusage: *mut c_void) -> pid_t {
    let f = real!(
        WAIT3,
        c"wait3",
        unsafe extern "C" fn(*mut c_int, c_int, *mut c_void) -> pid_t
    );
    let e = epoch();
    // SAFETY: the caller's pointers, passed on.
    virt_since(e, in_wait(|| unsafe { f(status, options, rusage) }))
}

/// `wait4(2)`.
///
/// # Safety
/// `status` and `rusage` are null or writable.
#[no_mangle]
pub unsafe extern "C" fn wait4(
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    rusage: *mut c_void,
) -> pid_t {
    let f = real!(
        WAIT4,
        c"wait4",
        unsafe extern "C" fn(pid_t, *mut c_int, c_int, *mut c_void) -> pid_t
    );
    let e = epoch();
    // SAFETY: the caller's pointers, passed on.
    let r = in_wait(|| again_libc(|| unsafe { f(target_to_real(pid), status, options, rusage) }));
    virt_since(e, r)
}

/// Byte offset of `si_pid` in a `siginfo_t` (x86_64).
const SI_PID: usize = 16;

thread_local! {
    /// How many of our wait wrappers this thread is inside (a signal
    /// handler may wait inside a wait): they translate what the call
    /// returns themselves.
    static IN_WAIT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this thread is inside one of our wait wrappers.
pub(crate) fn in_wait_wrapper() -> bool {
    IN_WAIT.with(|n| n.get()) > 0
}

/// Runs `f`, a wait whose result the caller translates, counted in
/// [`IN_WAIT`].
fn in_wait<T>(f: impl FnOnce() -> T) -> T {
    IN_WAIT.with(|n| n.set(n.get() + 1));
    let r = f();
    IN_WAIT.with(|n| n.set(n.get().saturating_sub(1)));
    r
}

// A wait blocked when the process was checkpointed is made again by the
// restored thread; the restorer (without namespaces) makes it go through
// here, so that what it returns is translated like a wrapper's result:
// glibc's own waits (`system`, `pclose`) compare it with the pid they
// kept, a virtual one. The restorer pushes, below the thread's red zone,
// the address after the original `syscall` instruction and the call's
// number, loads the call's registers (the awaited pid already the new
// kernel one) and points `rip` here. Every register but `rax` (and `rcx`,
// `r11`, which any system call changes) is as the call left it, SSE state
// included; `ret 136` goes back with `rsp` where it was.
std::arch::global_asm!(
    ".pushsection .text.dmtcp_wait_redo,\"ax\",@progbits",
    ".globl dmtcp_wait_redo",
    ".hidden dmtcp_wait_redo",
    "dmtcp_wait_redo:",
    "syscall",
    "push rdi",
    "push rsi",
    "push rdx",
    "push r8",
    "push r9",
    "push r10",
    "push rcx",
    "push r11",
    "push rbx",
    "mov rbx, rsp",
    "and rsp, -16",
    "sub rsp, 512",
    "fxsave64 [rsp]",
    "mov rdi, rax",
    "mov rsi, [rbx + 80]", // the call's number, above the return address
    "mov rdx, [rbx + 48]", // waitid's infop (the saved rdx)
    "call {fix}",
    "fxrstor64 [rsp]",
    "mov rsp, rbx",
    "pop rbx",
    "pop r11",
    "pop rcx",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "ret 136",
    ".popsection",
    fix = sym wait_redo_fix,
);

extern "C" {
    /// The trampoline above (never called from Rust: its address goes to
    /// the state page).
    fn dmtcp_wait_redo();
}

/// The trampoline's address, for the state page (`abi::WAIT_REDO_OFF`).
pub fn wait_redo_address() -> u64 {
    dmtcp_wait_redo as *const () as usize as u64
}

/// What a wait made again after a restart returns to its caller: left to
/// our wrapper when the thread is inside one ([`IN_WAIT`]), else made
/// virtual (`wait4`'s pid, `waitid`'s `si_pid`).
extern "C" fn wait_redo_fix(result: i64, nr: i64, infop: *mut u8) -> i64 {
    if in_wait_wrapper() {
        return result;
    }
    match nr {
        libc::SYS_wait4 if result > 0 && result <= i64::from(i32::MAX) => {
            i64::from(to_virt(result as pid_t))
        }
        libc::SYS_waitid if result == 0 && !infop.is_null() => {
            // SAFETY: the call's `siginfo_t *` (its contract), filled by the
            // kernel; si_pid is an aligned int inside it.
            unsafe {
                let p = infop.add(SI_PID).cast::<pid_t>();
                *p = to_virt(*p);
            }
            result
        }
        _ => result,
    }
}

/// `waitid(2)`: the id in, `si_pid` out.
///
/// # Safety
/// `infop` is null or points to a writable `siginfo_t`.
#[no_mangle]
pub unsafe extern "C" fn waitid(
    idtype: libc::idtype_t,
    id: libc::id_t,
    infop: *mut libc::siginfo_t,
    options: c_int,
) -> c_int {
    let f = real!(
        WAITID,
        c"waitid",
        unsafe extern "C" fn(libc::idtype_t, libc::id_t, *mut libc::siginfo_t, c_int) -> c_int
    );
    let real_id = || match idtype {
        libc::P_PID | libc::P_PGID => to_real(id as pid_t) as libc::id_t,
        _ => id,
    };
    let e = epoch();
    // SAFETY: the caller's pointer, passed on.
    let r = in_wait(|| again_libc(|| unsafe { f(idtype, real_id(), infop, options) }));
    if r == 0 && !infop.is_null() && !table().is_empty() {
        // SAFETY: infop points to a siginfo_t the call filled; si_pid is
        // an aligned int inside it.
        unsafe {
            let p = infop.cast::<u8>().add(SI_PID).cast::<pid_t>();
            *p = virt_since(e, *p);
        }
    }
    r
}

static SIGQUEUE: OnceLock<usize> = OnceLock::new();

/// `sigqueue(3)`: glibc fills the sender pid with the kernel's `getpid`
/// and queues to the pid as given; here the target is made real (the
/// sender pid is already real, and the receiver's library makes it
/// virtual).
#[no_mangle]
pub extern "C" fn sigqueue(pid: pid_t, sig: c_int, value: libc::sigval) -> c_int {
    let f = real!(
        SIGQUEUE,
        c"sigqueue",
        unsafe extern "C" fn(pid_t, c_int, libc::sigval) -> c_int
    );
    // SAFETY: integer arguments and a union passed by value.
    again_libc(|| unsafe { f(to_real(pid), sig, value) })
}

/// `fork(2)`, with a child whose pid is no virtual pid the program knows.
#[no_mangle]
pub extern "C" fn fork() -> pid_t {
    let f = real!(FORK, c"fork", unsafe extern "C" fn() -> pid_t);
    for _ in 0..1000 {
        let e = epoch();
        // SAFETY: glibc's fork, with its atfork handlers.
        let r = unsafe { f() };
        if r < 0 {
            return r;
        }
        if r == 0 {
            if taken_as_virtual(sys0(libc::SYS_getpid)) {
                // SAFETY: leave at once: the parent reaps us and forks again.
                unsafe { libc::_exit(0) };
            }
            return 0;
        }
        if !taken_as_virtual(r) {
            return virt_since(e, r);
        }
        // SAFETY: reaping the child just made (it exits at once).
        unsafe {
            libc::syscall(
                libc::SYS_wait4,
                r,
                std::ptr::null_mut::<c_int>(),
                libc::__WALL,
                0,
            )
        };
    }
    crate::sys::set_errno(libc::EAGAIN);
    -1
}

/// Before a child is made by a call that cannot make it again
/// (`posix_spawn`, `system`, `popen`, `vfork`: the child may have run by
/// the time its pid is known, or shares the parent's stack): while the pid the kernel gives next (the one after
/// `/proc/sys/kernel/ns_last_pid`) is a virtual pid the program knows, it
/// is used up by a child of our own that exits at once, so that the new
/// child does not get a pid that names another process. Another process
/// may take pids in between (then the child can still get such a pid; a
/// `fork` checks its child itself, see [`fork`]). Nothing before the
/// first restart (no table).
pub fn skip_known_pids() {
    if table().is_empty() {
        return;
    }
    for _ in 0..64 {
        let Some(last) = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()
            .and_then(|s| s.trim().parse::<pid_t>().ok())
        else {
            return;
        };
        if !taken_as_virtual(last + 1) {
            return;
        }
        // A child without exit signal (the program's waits without
        // __WALL never see it, no SIGCHLD), reaped at once.
        let c = crate::sys::raw_syscall(libc::SYS_clone, [0; 6]);
        if c == 0 {
            crate::sys::raw_syscall(libc::SYS_exit_group, [0; 6]);
        }
        if c < 0 {
            return;
        }
        crate::sys::raw_syscall(libc::SYS_wait4, [c as u64, 0, libc::__WALL as u64, 0, 0, 0]);
    }
}

static CLONE: OnceLock<usize> = OnceLock::new();

type CloneFn = unsafe extern "C" fn(
    extern "C" fn(*mut c_void) -> c_int,
    *mut c_void,
    c_int,
    *mut c_void,
    *mut pid_t,
    *mut c_void,
    *mut pid_t,
) -> c_int;

/// `clone(3)`, glibc's (variadic: the optional parent tid, tls and child
/// tid are taken as fixed arguments, which x86-64 passes in the same
/// registers and stack slot). A new process (not a thread) is made after
/// [`skip_known_pids`], as for `vfork`: the child runs `f` at once on its
/// own stack, so it cannot be made again.
///
/// # Safety
/// clone's contract.
#[no_mangle]
pub unsafe extern "C" fn clone(
    f: extern "C" fn(*mut c_void) -> c_int,
    stack: *mut c_void,
    flags: c_int,
    arg: *mut c_void,
    ptid: *mut pid_t,
    tls: *mut c_void,
    ctid: *mut pid_t,
) -> c_int {
    let real = real!(CLONE, c"clone", CloneFn);
    let process = flags & libc::CLONE_THREAD == 0;
    if process {
        skip_known_pids();
    }
    let e = epoch();
    // SAFETY: the caller's arguments, passed on (the optional ones are
    // read by glibc only when `flags` asks for them).
    let r = unsafe { real(f, stack, flags, arg, ptid, tls, ctid) };
    if r > 0 && process {
        virt_since(e, r)
    } else {
        r
    }
}

static VFORK: OnceLock<usize> = OnceLock::new();

/// The first half of [`vfork`]: uses up known pids ([`skip_known_pids`])
/// and returns glibc's `vfork` (0 when there is none).
extern "C" fn vfork_prepare() -> usize {
    skip_known_pids();
    next(&VFORK, c"vfork")
}

/// `vfork(2)`. A function cannot return twice from one stack frame, so
/// this one makes no frame: after [`vfork_prepare`] it jumps to glibc's
/// `vfork` with the stack as the caller left it (glibc keeps the return
/// address in a register, out of the child's reach). Without glibc's, it
/// jumps to [`fork`] (a valid `vfork`).
// SAFETY: the body keeps the System V ABI: the stack is aligned for the
// call (entry rsp is 8 mod 16), vfork_prepare takes no argument and
// returns in rax, and the jump leaves rsp and the callee-saved registers
// as the caller set them, so glibc's vfork (or fork) returns to it.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn vfork() -> pid_t {
    std::arch::naked_asm!(
        "sub rsp, 8",
        "call {prepare}",
        "add rsp, 8",
        "test rax, rax",
        "jz 2f",
        "jmp rax",
        "2:",
        "jmp {fork}",
        prepare = sym vfork_prepare,
        fork = sym fork,
    )
}

static SYSTEM: OnceLock<usize> = OnceLock::new();
static POPEN: OnceLock<usize> = OnceLock::new();

/// `system(3)`: glibc spawns its shell without the `posix_spawn` symbol;
/// see [`skip_known_pids`].
///
/// # Safety
/// `command` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn system(command: *const std::ffi::c_char) -> c_int {
    let f = real!(
        SYSTEM,
        c"system",
        unsafe extern "C" fn(*const std::ffi::c_char) -> c_int
    );
    skip_known_pids();
    // SAFETY: the caller's string, passed on.
    unsafe { f(command) }
}

/// `popen(3)`, as [`system`].
///
/// # Safety
/// `command` and `mode` are NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn popen(
    command: *const std::ffi::c_char,
    mode: *const std::ffi::c_char,
) -> *mut libc::FILE {
    let f = next(&POPEN, c"popen");
    if f == 0 {
        crate::sys::set_errno(libc::ENOSYS);
        return std::ptr::null_mut();
    }
    // SAFETY: f is glibc's popen, of this type.
    let f = unsafe {
        std::mem::transmute::<
            usize,
            unsafe extern "C" fn(
                *const std::ffi::c_char,
                *const std::ffi::c_char,
            ) -> *mut libc::FILE,
        >(f)
    };
    skip_known_pids();
    // SAFETY: the caller's strings, passed on.
    unsafe { f(command, mode) }
}

#[no_mangle]
pub extern "C" fn tcgetpgrp(fd: c_int) -> pid_t {
    let f = real!(
        TCGETPGRP,
        c"tcgetpgrp",
        unsafe extern "C" fn(c_int) -> pid_t
    );
    // SAFETY: an integer argument.
    stable(|| to_virt(unsafe { f(fd) }))
}

#[no_mangle]
pub extern "C" fn tcsetpgrp(fd: c_int, pgrp: pid_t) -> c_int {
    let f = real!(
        TCSETPGRP,
        c"tcsetpgrp",
        unsafe extern "C" fn(c_int, pid_t) -> c_int
    );
    // SAFETY: integer arguments.
    stable(|| unsafe { f(fd, to_real(pgrp)) })
}

#[no_mangle]
pub extern "C" fn tcgetsid(fd: c_int) -> pid_t {
    let f = real!(TCGETSID, c"tcgetsid", unsafe extern "C" fn(c_int) -> pid_t);
    // SAFETY: an integer argument.
    stable(|| to_virt(unsafe { f(fd) }))
}

// ---------------------------------------------------------------------
// Signal handlers: `si_pid` seen by SA_SIGINFO handlers.
// ---------------------------------------------------------------------

/// The program's SA_SIGINFO handlers, by signal number; the kernel holds
/// [`trampoline`] in their place.
static HANDLERS: [std::sync::atomic::AtomicUsize; 65] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 65];
static SIGACTION: OnceLock<usize> = OnceLock::new();

/// Byte offset of `si_code` in a `siginfo_t`.
const SI_CODE: usize = 8;

/// Whether a siginfo of signal `sig` with code `code` carries a sender's
/// pid in `si_pid`: sent by kill/sigqueue/tgkill/mq_notify, or a child's
/// state change (SIGCHLD from the kernel). Not SI_TIMER, SI_SIGIO and the
/// kernel's fault codes (their field holds something else).
pub(crate) fn carries_pid(sig: c_int, code: c_int) -> bool {
    matches!(
        code,
        libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL | libc::SI_MESGQ
    ) || (sig == libc::SIGCHLD && code > 0)
}

type Handler = unsafe extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

/// The environment variable the supervisor of a computation without
/// namespaces gives the program (inherited across exec, kept in the
/// restored environment): only then are `SA_SIGINFO` handlers installed
/// behind [`trampoline`]; with namespaces the kernel's pids are the
/// program's and handlers are left exactly as the program gave them.
pub const VIRTUAL_PIDS_ENV: &str = "DMTCP_VIRTUAL_PIDS";

static TRAMPOLINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Constructor: whether this computation runs without namespaces; if so
/// and this program image has no pid table yet (it was exec'd), the one of
/// the last restart ([`load_exec_table`]).
pub fn init() {
    if std::env::var_os(VIRTUAL_PIDS_ENV).is_some_and(|v| v == "1") {
        TRAMPOLINES.store(true, Ordering::Relaxed);
        if table().is_empty() {
            load_exec_table();
        }
        let page = crate::state::raw();
        if !page.is_null() {
            // SAFETY: WAIT_REDO_OFF is 8-aligned and inside the state mapping.
            unsafe { &*page.add(crate::abi::WAIT_REDO_OFF).cast::<AtomicU64>() }
                .store(wait_redo_address(), Ordering::Relaxed);
        }
    }
}

/// A program exec'd after a restart maps a state page of its own, without
/// the table the restorer wrote into the processes it restored: it takes
/// the copy the restorer left in the private runtime directory
/// ([`crate::abi::VPID_KEY_ENV`]). None before the first restart. A file
/// that is not ours alone is refused, with one line on stderr.
fn load_exec_table() {
    use crate::abi::{vpid_file_rows, vpid_key_ok, VPID_FILE_PREFIX, VPID_KEY_ENV};
    use dmtcp_protocol::runtime;
    let page = crate::state::raw();
    let key = std::env::var(VPID_KEY_ENV).unwrap_or_default();
    if page.is_null() || !vpid_key_ok(&key) {
        return;
    }
    let dir = runtime::dir_path();
    let path = dir.join(format!("{VPID_FILE_PREFIX}{key}"));
    let read = runtime::check_private_dir(&dir)
        .and_then(|()| runtime::read_private_bytes(&path, crate::abi::STATE_MAP_LEN as u64));
    let bytes = match read {
        Ok(Some(b)) => b,
        Err(e @ runtime::RuntimeError::Unsafe { .. }) => {
            eprintln!("libdmtcp_inject: {e}; pids of before the restart are not translated");
            return;
        }
        Ok(None) | Err(_) => return,
    };
    let Some((prev, n, rows)) = vpid_file_rows(&bytes) else {
        eprintln!(
            "libdmtcp_inject: {}: not a pid table; pids of before the restart are not translated",
            path.display()
        );
        return;
    };
    // SAFETY: a non-null page is the state mapping (STATE_MAP_LEN bytes,
    // page-aligned, never unmapped), fresh and only ours: no other thread
    // reads the table before the count below is stored. `vpid_file_rows`
    // bounds the rows to what fits from PIDMAP_PAIRS to the mapping's end;
    // PIDMAP_PREV_OFF and PIDMAP_OFF are 4-aligned u32 fields inside it.
    unsafe {
        std::ptr::copy_nonoverlapping(rows.as_ptr(), page.add(PIDMAP_PAIRS).cast_mut(), rows.len());
        (*page.add(crate::abi::PIDMAP_PREV_OFF).cast::<AtomicU32>())
            .store(u32::from(prev), Ordering::Relaxed);
        (*page.add(PIDMAP_OFF).cast::<AtomicU32>()).store(n as u32, Ordering::Release);
    }
}

/// Whether this computation runs without namespaces (after [`init`]).
pub fn virtual_pids() -> bool {
    TRAMPOLINES.load(Ordering::Relaxed)
}

/// The virtual pid of a signal's sender as a handler sees it: a current
/// real id's, else, for a signal sent before a restart that stopped this
/// thread on its way to the handler, the previous real id's, but only
/// while no process has that kernel pid now (a sender born after the
/// restart may have been given a pid of the run before, after a wrap).
fn sender_virt(real: pid_t) -> pid_t {
    let v = to_virt(real);
    if v != real {
        return v;
    }
    let before = to_virt_either(real);
    let gone = || {
        crate::sys::raw_syscall(libc::SYS_kill, [real as u64, 0, 0, 0, 0, 0])
            == -i64::from(libc::ESRCH)
    };
    if before != real && gone() {
        before
    } else {
        real
    }
}

/// Runs the program's handler with `si_pid` translated to a virtual pid
/// (the siginfo on the signal frame is the handler's own copy).
unsafe extern "C" fn trampoline(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let h = HANDLERS
        .get(sig as usize)
        .map_or(0, |h| h.load(Ordering::Relaxed));
    if !info.is_null() && !table().is_empty() {
        // SAFETY: the kernel's siginfo on this frame, writable; si_code
        // and si_pid are aligned ints inside it.
        unsafe {
            let base = info.cast::<u8>();
            if carries_pid(sig, *base.add(SI_CODE).cast::<c_int>()) {
                let p = base.add(SI_PID).cast::<pid_t>();
                *p = stable(|| sender_virt(*p));
            }
        }
    }
    if h > 1 {
        // SAFETY: h is the SA_SIGINFO handler the program installed for
        // this signal, called as the kernel would have.
        unsafe { std::mem::transmute::<usize, Handler>(h)(sig, info, ctx) }
    }
}

/// `sigaction(2)`: an SA_SIGINFO handler is installed behind
/// [`trampoline`]; the old action reads back as the program's handler.
///
/// # Safety
/// `act` is null or a valid `struct sigaction`; `old` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let f = real!(
        SIGACTION,
        c"sigaction",
        unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int
    );
    // SAFETY: the caller's pointers, passed on.
    if let Some(r) = unsafe { crate::vpid_trap::sigaction(sig, act, old) } {
        return r;
    }
    let slot = usize::try_from(sig)
        .ok()
        .filter(|_| TRAMPOLINES.load(Ordering::Relaxed))
        .and_then(|s| HANDLERS.get(s));
    let prev = slot.map_or(0, |s| s.load(Ordering::Relaxed));
    let mut mine: libc::sigaction;
    let mut act2 = act;
    if let Some(slot) = slot {
        // SAFETY: the caller's valid sigaction, read only.
        if let Some(a) = unsafe { act.as_ref() } {
            if a.sa_flags & libc::SA_SIGINFO != 0
                && a.sa_sigaction != libc::SIG_DFL
                && a.sa_sigaction != libc::SIG_IGN
            {
                slot.store(a.sa_sigaction, Ordering::Relaxed);
                mine = *a;
                mine.sa_sigaction = trampoline as *const () as usize;
                act2 = &mine;
            }
        }
    }
    // SAFETY: valid pointers (ours or the caller's), passed on.
    let r = unsafe { f(sig, act2, old) };
    if r == 0 {
        // SAFETY: the call filled *old when it is not null.
        if let Some(o) = unsafe { old.as_mut() } {
            if o.sa_sigaction == trampoline as *const () as usize {
                o.sa_sigaction = prev;
            }
        }
    }
    r
}

static SIGWAITINFO: OnceLock<usize> = OnceLock::new();
static SIGTIMEDWAIT: OnceLock<usize> = OnceLock::new();

/// `si_pid` of a signal taken by sigwaitinfo/sigtimedwait (`sig` > 0).
///
/// # Safety
/// `info` is null or a siginfo the call filled.
unsafe fn taken_siginfo(e: u64, sig: c_int, info: *mut libc::siginfo_t) {
    if sig <= 0 || info.is_null() || table().is_empty() {
        return;
    }
    // SAFETY: a filled siginfo; si_code and si_pid are aligned ints in it.
    unsafe {
        let base = info.cast::<u8>();
        if carries_pid(sig, *base.add(SI_CODE).cast::<c_int>()) {
            let p = base.add(SI_PID).cast::<pid_t>();
            *p = virt_since(e, *p);
        }
    }
}

/// `sigwaitinfo(2)`.
///
/// # Safety
/// `set` is a valid signal set; `info` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn sigwaitinfo(
    set: *const libc::sigset_t,
    info: *mut libc::siginfo_t,
) -> c_int {
    let f = real!(
        SIGWAITINFO,
        c"sigwaitinfo",
        unsafe extern "C" fn(*const libc::sigset_t, *mut libc::siginfo_t) -> c_int
    );
    let e = epoch();
    // SAFETY: the caller's pointers, passed on.
    let r = unsafe { f(set, info) };
    // SAFETY: filled when r > 0.
    unsafe { taken_siginfo(e, r, info) };
    r
}

/// `sigtimedwait(2)`.
///
/// # Safety
/// `set` is a valid signal set; `info` null or writable; `timeout` null
/// or readable.
#[no_mangle]
pub unsafe extern "C" fn sigtimedwait(
    set: *const libc::sigset_t,
    info: *mut libc::siginfo_t,
    timeout: *const libc::timespec,
) -> c_int {
    let f = real!(
        SIGTIMEDWAIT,
        c"sigtimedwait",
        unsafe extern "C" fn(
            *const libc::sigset_t,
            *mut libc::siginfo_t,
            *const libc::timespec,
        ) -> c_int
    );
    let e = epoch();
    // SAFETY: the caller's pointers, passed on.
    let r = unsafe { f(set, info, timeout) };
    // SAFETY: filled when r > 0.
    unsafe { taken_siginfo(e, r, info) };
    r
}

// ---------------------------------------------------------------------
// Calls that take a pid: scheduling, limits, priorities, pidfds, fcntl.
// ---------------------------------------------------------------------

static SCHED_SETAFFINITY: OnceLock<usize> = OnceLock::new();
static SCHED_GETAFFINITY: OnceLock<usize> = OnceLock::new();
static SCHED_SETSCHEDULER: OnceLock<usize> = OnceLock::new();
static SCHED_GETSCHEDULER: OnceLock<usize> = OnceLock::new();
static SCHED_SETPARAM: OnceLock<usize> = OnceLock::new();
static SCHED_GETPARAM: OnceLock<usize> = OnceLock::new();
static SCHED_RR_GET_INTERVAL: OnceLock<usize> = OnceLock::new();
static PRLIMIT: OnceLock<usize> = OnceLock::new();
static PRLIMIT64: OnceLock<usize> = OnceLock::new();
static GETPRIORITY: OnceLock<usize> = OnceLock::new();
static SETPRIORITY: OnceLock<usize> = OnceLock::new();
static PIDFD_OPEN: OnceLock<usize> = OnceLock::new();
static FCNTL: OnceLock<usize> = OnceLock::new();
static FCNTL64: OnceLock<usize> = OnceLock::new();

/// `sched_setaffinity(2)`.
///
/// # Safety
/// `mask` points to `size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn sched_setaffinity(pid: pid_t, size: usize, mask: *const c_void) -> c_int {
    let f = real!(
        SCHED_SETAFFINITY,
        c"sched_setaffinity",
        unsafe extern "C" fn(pid_t, usize, *const c_void) -> c_int
    );
    // SAFETY: the caller's pointer, passed on.
    stable(|| unsafe { f(to_real(pid), size, mask) })
}

/// `sched_getaffinity(2)`.
///
/// # Safety
/// `mask` points to `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn sched_getaffinity(pid: pid_t, size: usize, mask: *mut c_void) -> c_int {
    let f = real!(
        SCHED_GETAFFINITY,
        c"sched_getaffinity",
        unsafe extern "C" fn(pid_t, usize, *mut c_void) -> c_int
    );
    // SAFETY: the caller's pointer, passed on.
    stable(|| unsafe { f(to_real(pid), size, mask) })
}

/// `sched_setscheduler(2)`.
///
/// # Safety
/// `param` points to a readable `struct sched_param`.
#[no_mangle]
pub unsafe extern "C" fn sched_setscheduler(
    pid: pid_t,
    policy: c_int,
    param: *const c_void,
) -> c_int {
    let f = real!(
        SCHED_SETSCHEDULER,
        c"sched_setscheduler",
        unsafe extern "C" fn(pid_t, c_int, *const c_void) -> c_int
    );
    // SAFETY: the caller's pointer, passed on.
    stable(|| unsafe { f(to_real(pid), policy, param) })
}

#[no_mangle]
pub extern "C" fn sched_getscheduler(pid: pid_t) -> c_int {
    let f = real!(
        SCHED_GETSCHEDULER,
        c"sched_getscheduler",
        unsafe extern "C" fn(pid_t) -> c_int
    );
    // SAFETY: an integer argument.
    stable(|| unsafe { f(to_real(pid)) })
}

/// `sched_setparam(2)`.
///
/// # Safety
/// `param` points to a readable `struct sched_param`.
#[no_mangle]
pub unsafe extern "C" fn sched_setparam(pid: pid_t, param: *const c_void) -> c_int {
    let f = real!(
        SCHED_SETPARAM,
        c"sched_setparam",
        unsafe extern "C" fn(pid_t, *const c_void) -> c_int
    );
    // SAFETY: the caller's pointer, passed on.
    stable(|| unsafe { f(to_real(pid), param) })
}

/// `sched_getparam(2)`.
///
/// # Safety
/// `param` points to a writable `struct sched_param`.
#[no_mangle]
pub unsafe extern "C" fn sched_getparam(pid: pid_t, param: *mut c_void) -> c_int {
    let f = real!(
        SCHED_GETPARAM,
        c"sched_getparam",
        unsafe extern "C" fn(pid_t, *mut c_void) -> c_int
    );
    // SAFETY: the caller's pointer, passed on.
    stable(|| unsafe { f(to_real(pid), param) })
}

/// `sched_rr_get_interval(2)`.
///
/// # Safety
/// `tp` points to a writable `struct timespec`.
#[no_mangle]
pub unsafe extern "C" fn sched_rr_get_interval(pid: pid_t, tp: *mut c_void) -> c_int {
    let f = real!(
        SCHED_RR_GET_INTERVAL,
        c"sched_rr_get_interval",
        unsafe extern "C" fn(pid_t, *mut c_void) -> c_int
    );
    // SAFETY: the caller's pointer, passed on.
    stable(|| unsafe { f(to_real(pid), tp) })
}

type PrlimitFn = unsafe extern "C" fn(pid_t, c_int, *const c_void, *mut c_void) -> c_int;

/// `prlimit(2)`.
///
/// # Safety
/// `new` is null or readable, `old` null or writable `struct rlimit`s.
#[no_mangle]
pub unsafe extern "C" fn prlimit(
    pid: pid_t,
    resource: c_int,
    new: *const c_void,
    old: *mut c_void,
) -> c_int {
    let f = real!(PRLIMIT, c"prlimit", PrlimitFn);
    // SAFETY: the caller's pointers, passed on.
    stable(|| unsafe { f(to_real(pid), resource, new, old) })
}

/// `prlimit64(2)`.
///
/// # Safety
/// `new` is null or readable, `old` null or writable `struct rlimit64`s.
#[no_mangle]
pub unsafe extern "C" fn prlimit64(
    pid: pid_t,
    resource: c_int,
    new: *const c_void,
    old: *mut c_void,
) -> c_int {
    let f = real!(PRLIMIT64, c"prlimit64", PrlimitFn);
    // SAFETY: the caller's pointers, passed on.
    stable(|| unsafe { f(to_real(pid), resource, new, old) })
}

/// The `who` of get/setpriority: a process or a process group is a pid.
fn prio_who(which: c_int, who: libc::id_t) -> libc::id_t {
    if which == libc::PRIO_PROCESS as c_int || which == libc::PRIO_PGRP as c_int {
        to_real(who as pid_t) as libc::id_t
    } else {
        who
    }
}

#[no_mangle]
pub extern "C" fn getpriority(which: c_int, who: libc::id_t) -> c_int {
    let f = real!(
        GETPRIORITY,
        c"getpriority",
        unsafe extern "C" fn(c_int, libc::id_t) -> c_int
    );
    // SAFETY: integer arguments.
    stable(|| unsafe { f(which, prio_who(which, who)) })
}

#[no_mangle]
pub extern "C" fn setpriority(which: c_int, who: libc::id_t, prio: c_int) -> c_int {
    let f = real!(
        SETPRIORITY,
        c"setpriority",
        unsafe extern "C" fn(c_int, libc::id_t, c_int) -> c_int
    );
    // SAFETY: integer arguments.
    stable(|| unsafe { f(which, prio_who(which, who), prio) })
}

#[no_mangle]
pub extern "C" fn pidfd_open(pid: pid_t, flags: libc::c_uint) -> c_int {
    let f = real!(
        PIDFD_OPEN,
        c"pidfd_open",
        unsafe extern "C" fn(pid_t, libc::c_uint) -> c_int
    );
    // SAFETY: integer arguments.
    again_libc(|| unsafe { f(to_real(pid), flags) })
}

/// An owner of F_SETOWN/F_GETOWN: > 0 a process, < 0 a process group.
fn owner(id: pid_t, conv: fn(pid_t) -> pid_t) -> pid_t {
    if id < 0 {
        -conv(-id)
    } else {
        conv(id)
    }
}

/// `F_SETOWN_EX` and `F_GETOWN_EX` (linux/fcntl.h), and their struct.
const F_SETOWN_EX: c_int = 15;
const F_GETOWN_EX: c_int = 16;
#[repr(C)]
#[derive(Clone, Copy)]
struct FOwnerEx {
    kind: c_int,
    pid: pid_t,
}

type FcntlFn = unsafe extern "C" fn(c_int, c_int, usize) -> c_int;

/// fcntl's owner commands translated, every other command passed on.
/// fcntl is variadic; on x86-64 a variadic caller passes its one extra
/// argument (an int or a pointer) in the register a third fixed argument
/// uses.
///
/// # Safety
/// fcntl's contract for `cmd` and `a`.
unsafe fn fcntl_like(
    cell: &'static OnceLock<usize>,
    name: &std::ffi::CStr,
    fd: c_int,
    cmd: c_int,
    a: usize,
) -> c_int {
    let f = real!(*cell, name, FcntlFn);
    if matches!(cmd, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) {
        // SAFETY: the caller's arguments, unchanged.
        let r = unsafe { f(fd, cmd, a) };
        crate::vpid_signalfd::copied(fd, r);
        return r;
    }
    if !matches!(
        cmd,
        libc::F_SETOWN | libc::F_GETOWN | F_SETOWN_EX | F_GETOWN_EX
    ) {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { f(fd, cmd, a) };
    }
    // Setting an owner twice sets it once: made again after a restart in
    // the middle.
    stable(|| {
        if table().is_empty() {
            // SAFETY: the caller's arguments, unchanged.
            return unsafe { f(fd, cmd, a) };
        }
        match cmd {
            libc::F_SETOWN => {
                let id = owner(a as c_int, to_real);
                // SAFETY: an integer argument.
                unsafe { f(fd, cmd, id as usize) }
            }
            libc::F_GETOWN => {
                // SAFETY: no argument.
                let r = unsafe { f(fd, cmd, a) };
                if r == -1 {
                    r
                } else {
                    owner(r, to_virt)
                }
            }
            F_SETOWN_EX => {
                // SAFETY: a valid struct f_owner_ex (caller's contract), copied.
                let Some(o) = (unsafe { (a as *const FOwnerEx).as_ref() }) else {
                    // SAFETY: passed on for the kernel's EFAULT.
                    return unsafe { f(fd, cmd, a) };
                };
                let mut o2 = *o;
                o2.pid = to_real(o2.pid);
                // SAFETY: a valid struct of ours.
                unsafe { f(fd, cmd, &o2 as *const FOwnerEx as usize) }
            }
            F_GETOWN_EX => {
                // SAFETY: the caller's pointer, passed on.
                let r = unsafe { f(fd, cmd, a) };
                if r == 0 {
                    // SAFETY: the call filled the caller's struct.
                    if let Some(o) = unsafe { (a as *mut FOwnerEx).as_mut() } {
                        o.pid = to_virt(o.pid);
                    }
                }
                r
            }
            // SAFETY: the caller's arguments, unchanged.
            _ => unsafe { f(fd, cmd, a) },
        }
    })
}

/// `fcntl(2)`.
///
/// # Safety
/// fcntl's contract.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, a: usize) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { fcntl_like(&FCNTL, c"fcntl", fd, cmd, a) }
}

/// `fcntl64(2)` (glibc's name for the same call on x86-64).
///
/// # Safety
/// fcntl's contract.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, a: usize) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { fcntl_like(&FCNTL64, c"fcntl64", fd, cmd, a) }
}

// ---------------------------------------------------------------------
// ioctl: the terminal's process group and session, a socket's owner.
// ---------------------------------------------------------------------

static IOCTL: OnceLock<usize> = OnceLock::new();

/// ioctl requests that carry a pid through an `int *` (asm-generic
/// ioctls.h and sockios.h): the terminal's foreground group (get, set), its
/// session (get), a socket's owner (set and get, a process or, negative, a
/// group).
const TIOCGPGRP: c_ulong = 0x540F;
const TIOCSPGRP: c_ulong = 0x5410;
const TIOCGSID: c_ulong = 0x5429;
const FIOSETOWN: c_ulong = 0x8901;
const SIOCSPGRP: c_ulong = 0x8902;
const FIOGETOWN: c_ulong = 0x8903;
const SIOCGPGRP: c_ulong = 0x8904;

/// `ioctl(2)`, variadic in C like fcntl (see [`fcntl_like`]): the pid
/// requests above translated, every other request passed on unchanged.
/// glibc's own `tcgetpgrp` and friends call the kernel directly, not
/// through this symbol (they are wrapped themselves).
///
/// # Safety
/// ioctl's contract for `req` and `a`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, a: usize) -> c_int {
    type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, usize) -> c_int;
    let f = real!(IOCTL, c"ioctl", IoctlFn);
    if !matches!(
        req,
        TIOCSPGRP | FIOSETOWN | SIOCSPGRP | TIOCGPGRP | TIOCGSID | FIOGETOWN | SIOCGPGRP
    ) {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { f(fd, req, a) };
    }
    // Made again after a restart in the middle (see [`fcntl_like`]).
    stable(|| {
        if table().is_empty() {
            // SAFETY: the caller's arguments, unchanged.
            return unsafe { f(fd, req, a) };
        }
        match req {
            TIOCSPGRP | FIOSETOWN | SIOCSPGRP => {
                // SAFETY: the caller's `const int *` (ioctl's contract), read once.
                let Some(&v) = (unsafe { (a as *const pid_t).as_ref() }) else {
                    // SAFETY: passed on for the kernel's EFAULT.
                    return unsafe { f(fd, req, a) };
                };
                let conv = if req == TIOCSPGRP {
                    to_real(v)
                } else {
                    owner(v, to_real)
                };
                // SAFETY: a pointer to our own int, live for the call.
                unsafe { f(fd, req, &conv as *const pid_t as usize) }
            }
            TIOCGPGRP | TIOCGSID | FIOGETOWN | SIOCGPGRP => {
                // SAFETY: the caller's `int *`, passed on.
                let r = unsafe { f(fd, req, a) };
                if r == 0 {
                    // SAFETY: the call filled the caller's int.
                    if let Some(v) = unsafe { (a as *mut pid_t).as_mut() } {
                        *v = if matches!(req, TIOCGPGRP | TIOCGSID) {
                            to_virt(*v)
                        } else {
                            owner(*v, to_virt)
                        };
                    }
                }
                r
            }
            // SAFETY: the caller's arguments, unchanged.
            _ => unsafe { f(fd, req, a) },
        }
    })
}

// ---------------------------------------------------------------------
// Credentials on unix sockets: `SO_PEERCRED`, `SCM_CREDENTIALS`.
// ---------------------------------------------------------------------

static GETSOCKOPT: OnceLock<usize> = OnceLock::new();
static RECVMSG: OnceLock<usize> = OnceLock::new();
static SENDMSG: OnceLock<usize> = OnceLock::new();

/// Rewrites the pid of every `SCM_CREDENTIALS` message in `msg`'s control
/// data with `map`.
///
/// # Safety
/// `msg` points to a valid `msghdr` whose control buffer (if any) holds
/// `msg_controllen` readable and writable bytes.
unsafe fn map_cred_pids(msg: *mut libc::msghdr, map: fn(pid_t) -> pid_t) {
    // SAFETY: the caller's valid msghdr; CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // inside its control buffer and return null at its end.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SCM_CREDENTIALS
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::ucred>() as u32) as usize
            {
                let u = libc::CMSG_DATA(c).cast::<libc::ucred>();
                let mut cr = std::ptr::read_unaligned(u);
                cr.pid = map(cr.pid);
                std::ptr::write_unaligned(u, cr);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
}

/// Whether `msg` carries an `SCM_CREDENTIALS` message.
///
/// # Safety
/// As [`map_cred_pids`], the buffer only read.
unsafe fn has_creds(msg: *const libc::msghdr) -> bool {
    // SAFETY: as in map_cred_pids.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                return true;
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    false
}

/// `getsockopt(2)`: the pid of `SO_PEERCRED` is a virtual one.
///
/// # Safety
/// getsockopt's contract.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut libc::socklen_t,
) -> c_int {
    let f = real!(
        GETSOCKOPT,
        c"getsockopt",
        unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut libc::socklen_t) -> c_int
    );
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(fd, level, name, val, len) };
    if r == 0
        && level == libc::SOL_SOCKET
        && name == libc::SO_PEERCRED
        && !val.is_null()
        && !len.is_null()
        && !table().is_empty()
    {
        // SAFETY: the call wrote *len bytes of a ucred to val.
        unsafe {
            if *len as usize >= std::mem::size_of::<libc::ucred>() {
                let u = val.cast::<libc::ucred>();
                let mut cr = std::ptr::read_unaligned(u);
                cr.pid = to_virt(cr.pid);
                std::ptr::write_unaligned(u, cr);
            }
        }
    }
    r
}

/// `recvmsg(2)`: the pid of `SCM_CREDENTIALS` is a virtual one.
///
/// # Safety
/// recvmsg's contract.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> isize {
    let f = real!(
        RECVMSG,
        c"recvmsg",
        unsafe extern "C" fn(c_int, *mut libc::msghdr, c_int) -> isize
    );
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(fd, msg, flags) };
    if r >= 0 && !msg.is_null() && !table().is_empty() {
        // SAFETY: the call filled the caller's msghdr and its control
        // buffer (msg_controllen now says how much of it).
        unsafe { map_cred_pids(msg, to_virt) };
    }
    r
}

/// `sendmsg(2)`: a pid given in `SCM_CREDENTIALS` is a virtual one (the
/// kernel wants the sender's own kernel pid): sent with the real one,
/// from a copy of the control data.
///
/// # Safety
/// sendmsg's contract.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    let f = real!(
        SENDMSG,
        c"sendmsg",
        unsafe extern "C" fn(c_int, *const libc::msghdr, c_int) -> isize
    );
    // SAFETY: read only; a null or control-less msghdr is passed on.
    let creds = !msg.is_null()
        && !table().is_empty()
        && unsafe { !(*msg).msg_control.is_null() && has_creds(msg) };
    if !creds {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(fd, msg, flags) };
    }
    // SAFETY: msg is the caller's valid msghdr; its control buffer holds
    // msg_controllen bytes, copied into an 8-aligned buffer of ours.
    unsafe {
        let mut m = *msg;
        let len = m.msg_controllen;
        let mut control = vec![0u64; len.div_ceil(8)];
        std::ptr::copy_nonoverlapping(m.msg_control.cast::<u8>(), control.as_mut_ptr().cast(), len);
        m.msg_control = control.as_mut_ptr().cast();
        map_cred_pids(&mut m, to_real);
        f(fd, &m, flags)
    }
}

static RECVMMSG: OnceLock<usize> = OnceLock::new();
static SENDMMSG: OnceLock<usize> = OnceLock::new();

/// `recvmmsg(2)`: as [`recvmsg`] for every message received.
///
/// # Safety
/// recvmmsg's contract.
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    vec: *mut libc::mmsghdr,
    vlen: std::ffi::c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    let f = real!(
        RECVMMSG,
        c"recvmmsg",
        unsafe extern "C" fn(
            c_int,
            *mut libc::mmsghdr,
            std::ffi::c_uint,
            c_int,
            *mut libc::timespec,
        ) -> c_int
    );
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(fd, vec, vlen, flags, timeout) };
    if r > 0 && !vec.is_null() && !table().is_empty() {
        for i in 0..r.min(vlen as c_int) as usize {
            // SAFETY: the call filled the first r entries of the caller's
            // array and their control buffers.
            unsafe { map_cred_pids(&mut (*vec.add(i)).msg_hdr, to_virt) };
        }
    }
    r
}

/// `sendmmsg(2)`: as [`sendmsg`] for every message; the kernel's
/// `msg_len` of each message sent is written back to the caller's array.
///
/// # Safety
/// sendmmsg's contract.
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    vec: *mut libc::mmsghdr,
    vlen: std::ffi::c_uint,
    flags: c_int,
) -> c_int {
    let f = real!(
        SENDMMSG,
        c"sendmmsg",
        unsafe extern "C" fn(c_int, *mut libc::mmsghdr, std::ffi::c_uint, c_int) -> c_int
    );
    let n = vlen.min(1024) as usize;
    // SAFETY: read only: the caller's array of vlen valid mmsghdrs.
    let creds = !vec.is_null()
        && !table().is_empty()
        && (0..n).any(|i| unsafe {
            let m = &(*vec.add(i)).msg_hdr;
            !m.msg_control.is_null() && has_creds(m)
        });
    if !creds {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(fd, vec, vlen, flags) };
    }
    // SAFETY: as in sendmsg, for each of the first n entries: headers and
    // control buffers copied into buffers of ours, pids made real there.
    unsafe {
        let mut controls: Vec<Vec<u64>> = Vec::with_capacity(n);
        let mut copy: Vec<libc::mmsghdr> = Vec::with_capacity(n);
        for i in 0..n {
            let mut e = *vec.add(i);
            let len = e.msg_hdr.msg_controllen;
            if !e.msg_hdr.msg_control.is_null() && len > 0 {
                let mut control = vec![0u64; len.div_ceil(8)];
                std::ptr::copy_nonoverlapping(
                    e.msg_hdr.msg_control.cast::<u8>(),
                    control.as_mut_ptr().cast(),
                    len,
                );
                e.msg_hdr.msg_control = control.as_mut_ptr().cast();
                map_cred_pids(&mut e.msg_hdr, to_real);
                controls.push(control);
            }
            copy.push(e);
        }
        let r = f(fd, copy.as_mut_ptr(), n as std::ffi::c_uint, flags);
        for (i, e) in copy.iter().take(r.max(0) as usize).enumerate() {
            (*vec.add(i)).msg_len = e.msg_len;
        }
        drop(controls);
        r
    }
}

// ---------------------------------------------------------------------
// `/proc/PID/...` and `/proc/self/task/TID/...` paths.
// ---------------------------------------------------------------------

/// Longest path rewritten (longer ones are passed on unchanged).
const PATH_BUF: usize = 512;

/// A path being rewritten, on the stack (no allocation: open may be
/// called from a signal handler).
struct PathBuf {
    b: [u8; PATH_BUF],
    n: usize,
}

impl PathBuf {
    fn new() -> PathBuf {
        PathBuf {
            b: [0; PATH_BUF],
            n: 0,
        }
    }

    /// Appends `s`; false when it does not fit with the final NUL.
    fn push(&mut self, s: &[u8]) -> bool {
        if self.n + s.len() >= PATH_BUF {
            return false;
        }
        self.b[self.n..self.n + s.len()].copy_from_slice(s);
        self.n += s.len();
        true
    }

    fn push_id(&mut self, mut id: pid_t) -> bool {
        let mut d = [0u8; 12];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (id % 10) as u8;
            id /= 10;
            if id == 0 {
                break;
            }
        }
        self.push(&d[i..])
    }
}

/// Copies the decimal id at the start of `rest` into `out` as the real
/// id of the virtual one; returns the bytes of `rest` consumed, or `None`
/// when `rest` does not start with an id ended by `/` or the end.
fn rewrite_id(rest: &[u8], out: &mut PathBuf) -> Option<usize> {
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 9 || rest.get(n).is_some_and(|&b| b != b'/') {
        return None;
    }
    let v = rest[..n]
        .iter()
        .fold(0i32, |v, &d| v * 10 + i32::from(d - b'0'));
    let r = to_real(v);
    if r <= 0 || !out.push_id(r) {
        return None;
    }
    Some(n)
}

/// The path with its pids real, NUL-terminated in `out`, when it is
/// `/proc/VPID[/...]` (and `/proc/VPID/task/VTID[/...]`) or
/// `/proc/self/task/VTID[/...]`; false for every other path.
fn proc_path(path: &[u8], out: &mut PathBuf) -> bool {
    let Some(rest) = path.strip_prefix(b"/proc/") else {
        return false;
    };
    out.push(b"/proc/");
    let mut at = 0;
    let mut changed = false;
    if let Some(rel) = rest.strip_prefix(b"self") {
        if !rel.is_empty() && rel[0] != b'/' {
            return false;
        }
        out.push(b"self");
        at += 4;
    } else {
        let Some(n) = rewrite_id(rest, out) else {
            return false;
        };
        at += n;
        changed = true;
    }
    if let Some(t) = rest[at..].strip_prefix(b"/task/") {
        let keep = out.n;
        out.push(b"/task/");
        match rewrite_id(t, out) {
            Some(n) => {
                at += 6 + n;
                changed = true;
            }
            None => out.n = keep,
        }
    }
    changed && out.push(&rest[at..]) && out.push(b"\0")
}

/// What directory `dirfd` (the working directory for `AT_FDCWD`) is, as
/// its link in `/proc/self/fd` (or `/proc/self/cwd`) says, into `out`
/// (not NUL-terminated); false when it cannot be read.
fn dir_of(dirfd: c_int, out: &mut PathBuf) -> bool {
    let mut link = PathBuf::new();
    let named = if dirfd == libc::AT_FDCWD {
        link.push(b"/proc/self/cwd\0")
    } else {
        dirfd >= 0 && link.push(b"/proc/self/fd/") && link.push_id(dirfd) && link.push(b"\0")
    };
    if !named {
        return false;
    }
    // The raw call: libc's readlink is this library's wrapper.
    let n = crate::sys::raw_syscall(
        libc::SYS_readlinkat,
        [
            libc::AT_FDCWD as u64,
            link.b.as_ptr() as u64,
            out.b.as_mut_ptr() as u64,
            PATH_BUF as u64,
            0,
            0,
        ],
    );
    if n <= 0 || n as usize >= PATH_BUF {
        return false;
    }
    out.n = n as usize;
    true
}

/// `/proc/PID/task` with PID decimal (the form a task directory's link
/// takes, with its real pid).
fn is_task_dir(dir: &[u8]) -> bool {
    dir.strip_prefix(b"/proc/")
        .and_then(|r| r.strip_suffix(b"/task"))
        .is_some_and(|id| !id.is_empty() && id.iter().all(u8::is_ascii_digit))
}

/// A path relative to `dirfd` (or to the working directory) with its
/// pids real, NUL-terminated in `out`, when the directory is `/proc`
/// (`VPID[/...]`, `self/task/VTID[/...]`) or a task directory
/// (`VTID[/...]`); false for every other path. Only a relative path whose
/// first component is an id, or that starts with `self/task/ID`, costs a
/// look at the directory.
fn relative_proc_path(dirfd: c_int, path: &[u8], out: &mut PathBuf) -> bool {
    let leading_id = |p: &[u8]| {
        let n = p.iter().take_while(|b| b.is_ascii_digit()).count();
        n > 0 && p.get(n).is_none_or(|&b| b == b'/')
    };
    let starts_id = leading_id(path);
    if !starts_id && !path.strip_prefix(b"self/task/").is_some_and(leading_id) {
        return false;
    }
    let mut dir = PathBuf::new();
    if !dir_of(dirfd, &mut dir) {
        return false;
    }
    let dir = &dir.b[..dir.n];
    if dir == b"/proc" {
        let mut full = PathBuf::new();
        let mut real = PathBuf::new();
        let prefix = b"/proc/".len();
        return full.push(b"/proc/")
            && full.push(path)
            && proc_path(&full.b[..full.n], &mut real)
            && out.push(&real.b[prefix..real.n]);
    }
    if starts_id && is_task_dir(dir) {
        if let Some(n) = rewrite_id(path, out) {
            return out.push(&path[n..]) && out.push(b"\0");
        }
    }
    false
}

/// The path to pass on: the rewritten one in `buf`, or the caller's.
/// `dirfd` is the directory a relative path is relative to (`AT_FDCWD`
/// for the calls without one).
///
/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn real_path(
    dirfd: c_int,
    path: *const libc::c_char,
    buf: &mut PathBuf,
) -> *const libc::c_char {
    if path.is_null() {
        return path;
    }
    // SAFETY: a NUL-terminated string (caller's contract).
    let bytes = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    let rewritten = if bytes.first() == Some(&b'/') {
        proc_path(bytes, buf)
    } else {
        relative_proc_path(dirfd, bytes, buf)
    };
    if rewritten {
        buf.b.as_ptr().cast()
    } else {
        path
    }
}

/// Wrappers of path calls: the path argument rewritten, the rest passed
/// on. `$name` is the symbol, `$ty` glibc's type.
macro_rules! path_wrapper {
    ($cell:ident, $name:ident, $sym:expr, ($($pre:ident: $pret:ty,)*) path ($($a:ident: $t:ty),*) -> $ret:ty, $fail:expr) => {
        static $cell: OnceLock<usize> = OnceLock::new();
        /// The libc call of the same name with `/proc/PID` paths translated.
        ///
        /// # Safety
        /// The libc call's contract.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($pre: $pret,)* path: *const libc::c_char $(, $a: $t)*) -> $ret {
            let f = next(&$cell, $sym);
            if f == 0 {
                crate::sys::set_errno(libc::ENOSYS);
                return $fail;
            }
            // SAFETY: f is glibc's definition of this name, of this type.
            let f = unsafe {
                std::mem::transmute::<usize, unsafe extern "C" fn($($pret,)* *const libc::c_char $(, $t)*) -> $ret>(f)
            };
            let mut buf;
            let p = if table().is_empty() {
                path
            } else {
                buf = PathBuf::new();
                // The directory argument when the call has one.
                let dirfd = [$($pre as c_int,)* libc::AT_FDCWD][0];
                // SAFETY: the caller's string (its contract).
                unsafe { real_path(dirfd, path, &mut buf) }
            };
            // SAFETY: the caller's arguments, the path maybe ours.
            unsafe { f($($pre,)* p $(, $a)*) }
        }
    };
}

// open and openat are variadic: on x86-64 the mode a variadic caller
// passes is in the register a fixed third (fourth) argument uses.
path_wrapper!(OPEN, open, c"open", () path (flags: c_int, mode: libc::c_uint) -> c_int, -1);
path_wrapper!(OPEN64, open64, c"open64", () path (flags: c_int, mode: libc::c_uint) -> c_int, -1);
path_wrapper!(OPENAT, openat, c"openat", (dirfd: c_int,) path (flags: c_int, mode: libc::c_uint) -> c_int, -1);
path_wrapper!(OPENAT64, openat64, c"openat64", (dirfd: c_int,) path (flags: c_int, mode: libc::c_uint) -> c_int, -1);
path_wrapper!(FOPEN, fopen, c"fopen", () path (mode: *const libc::c_char) -> *mut libc::FILE, std::ptr::null_mut());
path_wrapper!(FOPEN64, fopen64, c"fopen64", () path (mode: *const libc::c_char) -> *mut libc::FILE, std::ptr::null_mut());
path_wrapper!(STAT, stat, c"stat", () path (buf: *mut c_void) -> c_int, -1);
path_wrapper!(STAT64, stat64, c"stat64", () path (buf: *mut c_void) -> c_int, -1);
path_wrapper!(LSTAT, lstat, c"lstat", () path (buf: *mut c_void) -> c_int, -1);
path_wrapper!(LSTAT64, lstat64, c"lstat64", () path (buf: *mut c_void) -> c_int, -1);
path_wrapper!(FSTATAT, fstatat, c"fstatat", (dirfd: c_int,) path (buf: *mut c_void, flags: c_int) -> c_int, -1);
path_wrapper!(FSTATAT64, fstatat64, c"fstatat64", (dirfd: c_int,) path (buf: *mut c_void, flags: c_int) -> c_int, -1);
path_wrapper!(STATX, statx, c"statx", (dirfd: c_int,) path (flags: c_int, mask: libc::c_uint, buf: *mut c_void) -> c_int, -1);
path_wrapper!(ACCESS, access, c"access", () path (mode: c_int) -> c_int, -1);
path_wrapper!(FACCESSAT, faccessat, c"faccessat", (dirfd: c_int,) path (mode: c_int, flags: c_int) -> c_int, -1);
path_wrapper!(READLINK, readlink, c"readlink", () path (buf: *mut libc::c_char, len: usize) -> isize, -1);
path_wrapper!(READLINKAT, readlinkat, c"readlinkat", (dirfd: c_int,) path (buf: *mut libc::c_char, len: usize) -> isize, -1);
path_wrapper!(OPENDIR, opendir, c"opendir", () path () -> *mut libc::DIR, std::ptr::null_mut());

#[cfg(test)]
mod tests {
    use super::{is_task_dir, proc_path, relative_proc_path, PathBuf, PATH_BUF};
    use std::os::fd::AsRawFd;

    /// The rewritten path (ids map to themselves without a table), or
    /// `None` when the path is passed on as it is.
    fn rewrite(p: &str) -> Option<String> {
        let mut b = PathBuf::new();
        proc_path(p.as_bytes(), &mut b).then(|| {
            assert_eq!(b.b[b.n - 1], 0, "NUL-terminated");
            String::from_utf8(b.b[..b.n - 1].to_vec()).unwrap()
        })
    }

    #[test]
    fn proc_paths_with_pids_are_rewritten_and_others_left() {
        for p in [
            "/proc/123",
            "/proc/123/",
            "/proc/123/comm",
            "/proc/123/task/456/stat",
            "/proc/self/task/456",
            "/proc/self/task/456/comm",
            "/proc/1/task",
        ] {
            assert_eq!(rewrite(p).as_deref(), Some(p), "{p}");
        }
        for p in [
            "/proc",
            "/proc/",
            "/proc/self",
            "/proc/self/status",
            "/proc/selfish/task/1",
            "/proc/thread-self/comm",
            "/proc/12a/comm",
            "/proc/self/task/",
            "/proc/self/task/x",
            "/proc/1234567890/comm",
            "/sys/123",
            "proc/123",
        ] {
            assert_eq!(rewrite(p), None, "{p}");
        }
        let long = format!("/proc/1/{}", "a".repeat(PATH_BUF));
        assert_eq!(rewrite(&long), None, "too long for the buffer");
    }

    /// `relative_proc_path` of `p` relative to the directory `dir`.
    fn rewrite_at(dir: &str, p: &str) -> Option<String> {
        let d = std::fs::File::open(dir).unwrap();
        let mut b = PathBuf::new();
        relative_proc_path(d.as_raw_fd(), p.as_bytes(), &mut b).then(|| {
            assert_eq!(b.b[b.n - 1], 0, "NUL-terminated");
            String::from_utf8(b.b[..b.n - 1].to_vec()).unwrap()
        })
    }

    #[test]
    fn paths_relative_to_proc_and_task_directories_are_rewritten() {
        for p in ["123", "123/comm", "123/task/456/stat", "self/task/456/comm"] {
            assert_eq!(rewrite_at("/proc", p).as_deref(), Some(p), "{p}");
        }
        for p in [
            "self/status",
            "self/task",
            "sys/kernel",
            "12a/comm",
            "1.txt",
            "self/task/4x",
            "/proc/1",
        ] {
            assert_eq!(rewrite_at("/proc", p), None, "{p}");
        }
        assert_eq!(
            rewrite_at("/proc/self/task", "456/stat").as_deref(),
            Some("456/stat")
        );
        assert_eq!(rewrite_at("/proc/self/task", "x"), None);
        assert_eq!(rewrite_at("/tmp", "123/comm"), None, "not under /proc");
        assert_eq!(
            rewrite_at("/proc/self", "123"),
            None,
            "not a task directory"
        );
        assert!(is_task_dir(b"/proc/42/task"));
        assert!(!is_task_dir(b"/proc/self/task"));
        assert!(!is_task_dir(b"/proc//task"));
        assert!(!is_task_dir(b"/proc/42/task/1"));
    }
}
