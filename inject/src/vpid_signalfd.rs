//! Virtual pids in what a signalfd reports (computations without
//! namespaces, see [`crate::vpid`]): `ssi_pid` of each record read, for the
//! signals whose siginfo carries a pid (a `SIGCHLD` names the child, a
//! `kill` its sender).
//!
//! The program's signalfds are remembered by fd when it makes one
//! ([`signalfd`]) or copies one (`dup`, `dup2`, `dup3`, `fcntl`'s
//! `F_DUPFD`), and the constructor looks for the ones a program inherits
//! across exec ([`init`]). The marks live in the program's memory, so a
//! restart keeps them with the fds. A mark is checked against the kernel
//! (`/proc/self/fd/N` reads `anon_inode:[signalfd]`) before a read is
//! changed, so a stale one (the fd closed behind our back and reused) costs
//! one `readlink` and is dropped. Until the first restart nothing is
//! translated and a read costs one load and a branch more.
//!
//! Not covered: `readv` of a signalfd, a signalfd made by a raw system
//! call.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libc::pid_t;

use crate::exec::next;
use crate::vpid::{carries_pid, epoch, table, virt_since, virtual_pids};

/// `sizeof(struct signalfd_siginfo)`; `ssi_signo` (u32) at 0, `ssi_code`
/// (i32) at 8, `ssi_pid` (u32) at 12.
const RECORD: usize = 128;
const SSI_CODE: usize = 8;
const SSI_PID: usize = 12;

/// fds below this are marked in [`MARKS`]; above, every read whose length
/// is a whole number of records is checked against the kernel.
const MARKED_FDS: usize = 4096;
static MARKS: [AtomicU64; MARKED_FDS / 64] = [const { AtomicU64::new(0) }; MARKED_FDS / 64];

fn mark(fd: c_int, on: bool) {
    let Ok(i) = usize::try_from(fd) else { return };
    if i >= MARKED_FDS {
        return;
    }
    let bit = 1u64 << (i % 64);
    if on {
        MARKS[i / 64].fetch_or(bit, Ordering::Relaxed);
    } else {
        MARKS[i / 64].fetch_and(!bit, Ordering::Relaxed);
    }
}

fn marked(fd: c_int) -> bool {
    match usize::try_from(fd) {
        Ok(i) if i < MARKED_FDS => MARKS[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0,
        Ok(_) => true,
        Err(_) => false,
    }
}

/// Whether the kernel says `fd` is a signalfd (one `readlink`, no
/// allocation: also called from the `read` of a signal handler).
fn is_signalfd(fd: c_int) -> bool {
    const WANT: &[u8] = b"anon_inode:[signalfd]";
    let mut path = *b"/proc/self/fd/0000000000\0";
    let mut n = fd as u32;
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (k, d) in digits[..len].iter().rev().enumerate() {
        path[14 + k] = *d;
    }
    path[14 + len] = 0;
    let mut buf = [0u8; 32];
    // Raw: the libc `readlink` is wrapped by this library for /proc paths.
    let r = crate::sys::raw_syscall(
        libc::SYS_readlinkat,
        [
            libc::AT_FDCWD as u64,
            path.as_ptr() as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            0,
            0,
        ],
    );
    usize::try_from(r).is_ok_and(|l| &buf[..l] == WANT)
}

/// Constructor (without namespaces): marks the signalfds this program
/// inherited across exec.
pub fn init() {
    if !virtual_pids() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for e in dir.flatten() {
        if let Some(fd) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            if is_signalfd(fd) {
                mark(fd, true);
            }
        }
    }
    // Resolved now, not first in a signal handler.
    let _ = next(&READ, c"read");
}

/// `n` bytes of records read from a signalfd at `buf`: each sender or
/// child pid made virtual (`e`: the restart epoch before the read).
///
/// # Safety
/// `buf` holds `n` bytes the read just wrote.
unsafe fn translate(e: u64, buf: *mut u8, n: usize) {
    for k in 0..n / RECORD {
        // SAFETY: record k lies inside the n bytes; unaligned accesses,
        // the caller's buffer may have any alignment.
        unsafe {
            let rec = buf.add(k * RECORD);
            let signo = std::ptr::read_unaligned(rec.cast::<u32>()) as c_int;
            let code = std::ptr::read_unaligned(rec.add(SSI_CODE).cast::<c_int>());
            if carries_pid(signo, code) {
                let p = rec.add(SSI_PID).cast::<pid_t>();
                std::ptr::write_unaligned(p, virt_since(e, std::ptr::read_unaligned(p)));
            }
        }
    }
}

static READ: OnceLock<usize> = OnceLock::new();
static SIGNALFD: OnceLock<usize> = OnceLock::new();
static DUP: OnceLock<usize> = OnceLock::new();
static DUP2: OnceLock<usize> = OnceLock::new();
static DUP3: OnceLock<usize> = OnceLock::new();

/// glibc's definition of `name`, as a function of type `T`; `None` when
/// dlsym finds none.
fn real<T: Copy>(cell: &'static OnceLock<usize>, name: &std::ffi::CStr) -> Option<T> {
    let f = next(cell, name);
    if f == 0 {
        crate::sys::set_errno(libc::ENOSYS);
        return None;
    }
    debug_assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<usize>());
    // SAFETY: f is glibc's definition of `name`, a function whose C type
    // is T (every caller names the type of the symbol it looks up).
    Some(unsafe { std::mem::transmute_copy::<usize, T>(&f) })
}

type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;

/// `read(2)`: records read from a marked signalfd, after a restart, name
/// virtual pids.
///
/// # Safety
/// read's contract.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize {
    let Some(f) = real::<ReadFn>(&READ, c"read") else {
        return -1;
    };
    if !virtual_pids() || count < RECORD || !marked(fd) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(fd, buf, count) };
    }
    let e = epoch();
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(fd, buf, count) };
    if let Ok(n) = usize::try_from(r) {
        if n > 0 && n % RECORD == 0 && !table().is_empty() {
            if is_signalfd(fd) {
                // SAFETY: the read wrote n bytes at buf.
                unsafe { translate(e, buf.cast(), n) };
            } else {
                mark(fd, false);
            }
        }
    }
    r
}

/// Reads (`out` None) or writes 4 bytes at logical offset `off` of the
/// buffers `iov` (the bytes may straddle two of them).
///
/// # Safety
/// `iov` describes writable buffers the read filled up to `off + 4`.
unsafe fn iov_word(iov: &[libc::iovec], off: usize, out: Option<[u8; 4]>) -> [u8; 4] {
    let mut word = out.unwrap_or([0; 4]);
    let mut base = 0;
    for v in iov {
        for (j, b) in word.iter_mut().enumerate() {
            let at = off + j;
            if at >= base && at < base + v.iov_len {
                // SAFETY: `at - base` is inside this buffer (caller's contract).
                let p = unsafe { v.iov_base.cast::<u8>().add(at - base) };
                // SAFETY: as above; one byte, no alignment needed.
                unsafe {
                    match out {
                        Some(_) => *p = *b,
                        None => *b = *p,
                    }
                }
            }
        }
        base += v.iov_len;
        if base >= off + 4 {
            break;
        }
    }
    word
}

type ReadvFn = unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> isize;

static READV: OnceLock<usize> = OnceLock::new();

/// `readv(2)`: as [`read`], the records spread over the buffers.
///
/// # Safety
/// readv's contract.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> isize {
    let Some(f) = real::<ReadvFn>(&READV, c"readv") else {
        return -1;
    };
    if !virtual_pids() || iov.is_null() || cnt <= 0 || !marked(fd) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { f(fd, iov, cnt) };
    }
    let e = epoch();
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(fd, iov, cnt) };
    let Ok(n) = usize::try_from(r) else {
        return r;
    };
    if n == 0 || n % RECORD != 0 || table().is_empty() {
        return r;
    }
    if !is_signalfd(fd) {
        mark(fd, false);
        return r;
    }
    // SAFETY: readv succeeded, so iov points to cnt iovecs.
    let iov = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
    for k in 0..n / RECORD {
        let rec = k * RECORD;
        // SAFETY: the read filled n bytes of the buffers, record k within.
        unsafe {
            let signo = u32::from_ne_bytes(iov_word(iov, rec, None)) as c_int;
            let code = c_int::from_ne_bytes(iov_word(iov, rec + SSI_CODE, None));
            if carries_pid(signo, code) {
                let pid = pid_t::from_ne_bytes(iov_word(iov, rec + SSI_PID, None));
                iov_word(iov, rec + SSI_PID, Some(virt_since(e, pid).to_ne_bytes()));
            }
        }
    }
    r
}

/// `signalfd(2)`: the fd is marked.
///
/// # Safety
/// signalfd's contract.
#[no_mangle]
pub unsafe extern "C" fn signalfd(fd: c_int, mask: *const libc::sigset_t, flags: c_int) -> c_int {
    type F = unsafe extern "C" fn(c_int, *const libc::sigset_t, c_int) -> c_int;
    let Some(f) = real::<F>(&SIGNALFD, c"signalfd") else {
        return -1;
    };
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(fd, mask, flags) };
    if r >= 0 {
        mark(r, true);
    }
    r
}

/// A copy `to` of `from` was made (dup, dup2, dup3, F_DUPFD): it is a
/// signalfd when `from` is marked one.
pub(crate) fn copied(from: c_int, to: c_int) {
    if to < 0 || from < 0 {
        return;
    }
    let on = if (from as usize) < MARKED_FDS {
        marked(from)
    } else {
        virtual_pids() && is_signalfd(to)
    };
    mark(to, on);
}

/// `dup(2)`.
///
/// # Safety
/// dup's contract.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    type F = unsafe extern "C" fn(c_int) -> c_int;
    let Some(f) = real::<F>(&DUP, c"dup") else {
        return -1;
    };
    // SAFETY: an integer argument.
    let r = unsafe { f(fd) };
    copied(fd, r);
    r
}

/// `dup2(2)`.
///
/// # Safety
/// dup2's contract.
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    type F = unsafe extern "C" fn(c_int, c_int) -> c_int;
    let Some(f) = real::<F>(&DUP2, c"dup2") else {
        return -1;
    };
    // SAFETY: integer arguments.
    let r = unsafe { f(fd, to) };
    copied(fd, r);
    r
}

/// `dup3(2)`.
///
/// # Safety
/// dup3's contract.
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    type F = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
    let Some(f) = real::<F>(&DUP3, c"dup3") else {
        return -1;
    };
    // SAFETY: integer arguments.
    let r = unsafe { f(fd, to, flags) };
    copied(fd, r);
    r
}
