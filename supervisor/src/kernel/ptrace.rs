//! Thin, typed wrappers around `ptrace(2)` and `waitpid(2)` for the tracer.
//!
//! Every raw ptrace call of the project lives here. All requests for one tracee
//! must come from the thread that seized it (the kernel's rule), so callers keep
//! all work on a frozen process on one thread.

use std::io;

use crate::kernel::pid::HostPid;

pub const PTRACE_EVENT_STOP: i32 = 128;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const NT_PRSTATUS: libc::c_int = 1;
const NT_X86_XSTATE: libc::c_int = 0x202;
/// Largest XSAVE area we accept (AVX-512 needs 2696 bytes; AMX more).
const XSTATE_MAX: usize = 16384;

pub type Regs = libc::user_regs_struct;

/// Number of u64 words in `user_regs_struct` on x86_64.
pub const REGS_WORDS: usize = std::mem::size_of::<Regs>() / 8;
const _: () = assert!(std::mem::size_of::<Regs>() == 27 * 8);

/// A failed system call with its context; keeps the errno so callers can
/// still tell ESRCH (the thread is gone) from real failures ([`errno`]).
#[derive(Debug)]
pub struct SysError {
    pub errno: i32,
    pub what: String,
}

impl std::fmt::Display for SysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for SysError {}

/// The errno behind an error, whether raw or wrapped with context.
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<SysError>().map(|s| s.errno))
}

fn check(ret: libc::c_long, what: &str, tid: HostPid) -> io::Result<libc::c_long> {
    if ret == -1 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            e.kind(),
            SysError {
                errno: e.raw_os_error().unwrap_or(0),
                what: format!("{what} on tid {tid}"),
            },
        ))
    } else {
        Ok(ret)
    }
}

/// # Safety
/// `addr` and `data` must be valid for the given request (pointers to live
/// buffers of the size the request writes or reads, or plain integers).
unsafe fn raw(req: libc::c_uint, tid: HostPid, addr: usize, data: usize) -> libc::c_long {
    // SAFETY: forwarded contract: the caller guarantees addr/data fit `req`.
    unsafe { libc::ptrace(req, tid.0, addr, data) }
}

/// `PTRACE_O_SUSPEND_SECCOMP`: the tracee's seccomp filters do not apply
/// while we trace it (needs `CAP_SYS_ADMIN` in the initial user namespace).
const PTRACE_O_SUSPEND_SECCOMP: i32 = 1 << 21;
/// 0: not tried yet, 1: works (we are privileged), 2: not available.
static SUSPEND_SECCOMP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn suspend_bit() -> i32 {
    use std::sync::atomic::Ordering;
    if SUSPEND_SECCOMP.load(Ordering::Relaxed) == 2 || !nix::unistd::geteuid().is_root() {
        0
    } else {
        PTRACE_O_SUSPEND_SECCOMP
    }
}

/// Whether the threads we trace have their seccomp filters suspended (we
/// run as real root): injected calls then need no check against them.
pub fn seccomp_suspended() -> bool {
    SUSPEND_SECCOMP.load(std::sync::atomic::Ordering::Relaxed) == 1
}

/// `PTRACE_SEIZE` with `PTRACE_O_TRACESYSGOOD` (and `extra` options). The
/// program's seccomp filters stay in force: a seized thread runs its own
/// code until it stops, so they are suspended only once it has stopped
/// ([`suspend_seccomp`]).
pub fn seize(tid: HostPid, extra: i32) -> io::Result<()> {
    let opts = libc::PTRACE_O_TRACESYSGOOD | extra;
    // SAFETY: SEIZE takes no pointers; data is an option bit mask.
    let r = unsafe { raw(libc::PTRACE_SEIZE, tid, 0, opts as usize) };
    check(r, "PTRACE_SEIZE", tid).map(drop)
}

/// Adds `PTRACE_O_SUSPEND_SECCOMP` to a thread seized with `extra` options,
/// when we may (real root), so the calls we inject are not checked against
/// the program's filters. Only for a thread in a ptrace stop: with the
/// option set at `PTRACE_SEIZE`, a thread still running between the seize
/// and its stop ran its own code with its filters lifted (a filtered call
/// was allowed in that window).
pub fn suspend_seccomp(tid: HostPid, extra: i32) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    let bit = suspend_bit();
    if bit == 0 {
        return Ok(());
    }
    let opts = libc::PTRACE_O_TRACESYSGOOD | extra | bit;
    // SAFETY: SETOPTIONS takes an option bit mask as data, no pointers.
    let r = unsafe { raw(libc::PTRACE_SETOPTIONS, tid, 0, opts as usize) };
    if r == 0 {
        SUSPEND_SECCOMP.store(1, Ordering::Relaxed);
        return Ok(());
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        tracing::debug!("PTRACE_O_SUSPEND_SECCOMP refused: the program's filters stay active");
        SUSPEND_SECCOMP.store(2, Ordering::Relaxed);
        return Ok(());
    }
    check(r, "PTRACE_SETOPTIONS", tid).map(drop)
}

pub fn interrupt(tid: HostPid) -> io::Result<()> {
    // SAFETY: INTERRUPT takes no pointers.
    let r = unsafe { raw(libc::PTRACE_INTERRUPT, tid, 0, 0) };
    check(r, "PTRACE_INTERRUPT", tid).map(drop)
}

/// Detach, delivering `sig` (0 for none).
pub fn detach(tid: HostPid, sig: i32) -> io::Result<()> {
    // SAFETY: DETACH takes a signal number as data, no pointers.
    let r = unsafe { raw(libc::PTRACE_DETACH, tid, 0, sig as usize) };
    check(r, "PTRACE_DETACH", tid).map(drop)
}

pub fn cont(tid: HostPid, sig: i32) -> io::Result<()> {
    // SAFETY: CONT takes a signal number as data, no pointers.
    let r = unsafe { raw(libc::PTRACE_CONT, tid, 0, sig as usize) };
    check(r, "PTRACE_CONT", tid).map(drop)
}

/// Resume until the next syscall entry or exit.
pub fn syscall(tid: HostPid, sig: i32) -> io::Result<()> {
    // SAFETY: SYSCALL takes a signal number as data, no pointers.
    let r = unsafe { raw(libc::PTRACE_SYSCALL, tid, 0, sig as usize) };
    check(r, "PTRACE_SYSCALL", tid).map(drop)
}

pub fn get_regs(tid: HostPid) -> io::Result<Regs> {
    // SAFETY: user_regs_struct is plain old data; all-zero is a valid value.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut Regs).cast(),
        iov_len: std::mem::size_of::<Regs>(),
    };
    // SAFETY: iov points at a live Regs of exactly iov_len bytes.
    let r = unsafe {
        raw(
            libc::PTRACE_GETREGSET,
            tid,
            NT_PRSTATUS as usize,
            &mut iov as *mut _ as usize,
        )
    };
    check(r, "PTRACE_GETREGSET(NT_PRSTATUS)", tid)?;
    Ok(regs)
}

pub fn set_regs(tid: HostPid, regs: &Regs) -> io::Result<()> {
    let mut copy = *regs;
    let mut iov = libc::iovec {
        iov_base: (&mut copy as *mut Regs).cast(),
        iov_len: std::mem::size_of::<Regs>(),
    };
    // SAFETY: iov points at a live Regs of exactly iov_len bytes; the kernel only reads it.
    let r = unsafe {
        raw(
            libc::PTRACE_SETREGSET,
            tid,
            NT_PRSTATUS as usize,
            &mut iov as *mut _ as usize,
        )
    };
    check(r, "PTRACE_SETREGSET(NT_PRSTATUS)", tid).map(drop)
}

/// The full XSAVE area (x87, SSE, AVX, AVX-512, ...).
pub fn get_xstate(tid: HostPid) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: iov points at a live buffer of iov_len bytes; the kernel shrinks iov_len.
    let r = unsafe {
        raw(
            libc::PTRACE_GETREGSET,
            tid,
            NT_X86_XSTATE as usize,
            &mut iov as *mut _ as usize,
        )
    };
    check(r, "PTRACE_GETREGSET(NT_X86_XSTATE)", tid)?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

pub fn set_xstate(tid: HostPid, xstate: &[u8]) -> io::Result<()> {
    let mut copy = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr().cast(),
        iov_len: copy.len(),
    };
    // SAFETY: iov points at a live buffer of iov_len bytes; the kernel only reads it.
    let r = unsafe {
        raw(
            libc::PTRACE_SETREGSET,
            tid,
            NT_X86_XSTATE as usize,
            &mut iov as *mut _ as usize,
        )
    };
    check(r, "PTRACE_SETREGSET(NT_X86_XSTATE)", tid).map(drop)
}

pub fn get_sigmask(tid: HostPid) -> io::Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: addr is the size of the set (8), data points at a live u64.
    let r = unsafe {
        raw(
            libc::PTRACE_GETSIGMASK,
            tid,
            8,
            &mut mask as *mut u64 as usize,
        )
    };
    check(r, "PTRACE_GETSIGMASK", tid)?;
    Ok(mask)
}

pub fn set_sigmask(tid: HostPid, mask: u64) -> io::Result<()> {
    let m = mask;
    // SAFETY: addr is the size of the set (8), data points at a live u64 the kernel reads.
    let r = unsafe { raw(PTRACE_SETSIGMASK, tid, 8, &m as *const u64 as usize) };
    check(r, "PTRACE_SETSIGMASK", tid).map(drop)
}

/// `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RseqConfig {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

pub fn get_rseq(tid: HostPid) -> io::Result<RseqConfig> {
    let mut c = RseqConfig::default();
    // SAFETY: addr is the struct size, data points at a live RseqConfig.
    let r = unsafe {
        raw(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<RseqConfig>(),
            &mut c as *mut RseqConfig as usize,
        )
    };
    check(r, "PTRACE_GET_RSEQ_CONFIGURATION", tid)?;
    Ok(c)
}

/// `siginfo_t` of the signal that caused the current signal-delivery stop.
pub fn get_siginfo(tid: HostPid) -> io::Result<[u8; 128]> {
    let mut buf = [0u8; 128];
    // SAFETY: data points at a live 128-byte buffer, the size of siginfo_t.
    let r = unsafe { raw(libc::PTRACE_GETSIGINFO, tid, 0, buf.as_mut_ptr() as usize) };
    check(r, "PTRACE_GETSIGINFO", tid)?;
    Ok(buf)
}

/// What `waitpid` reported for a tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Exited(i32),
    Killed(i32),
    /// `PTRACE_EVENT_*` stop; `sig` is the stop signal (SIGTRAP for an interrupt).
    Event {
        event: i32,
        sig: i32,
    },
    /// Syscall entry or exit (with `PTRACE_O_TRACESYSGOOD`).
    Syscall,
    /// Signal-delivery stop for `sig`.
    Signal(i32),
}

impl Stop {
    pub fn from_status(status: i32) -> Stop {
        if libc::WIFEXITED(status) {
            Stop::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Stop::Killed(libc::WTERMSIG(status))
        } else {
            let sig = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xff;
            if event != 0 {
                Stop::Event { event, sig }
            } else if sig == (libc::SIGTRAP | 0x80) {
                Stop::Syscall
            } else {
                Stop::Signal(sig)
            }
        }
    }
}

/// Waits for the next state change of one tracee (any kind of child, `__WALL`).
pub fn wait(tid: HostPid) -> io::Result<Stop> {
    loop {
        let mut status = 0;
        // SAFETY: status is a live c_int the kernel writes.
        let r = unsafe { libc::waitpid(tid.0, &mut status, libc::__WALL) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io::Error::new(e.kind(), format!("waitpid({tid}): {e}")));
        }
        return Ok(Stop::from_status(status));
    }
}

/// Like [`wait`], but gives up with an error when the thread's process is
/// dying: a dead thread-group leader is not reported while other threads
/// are unreaped, so a plain wait on it can block forever.
pub fn wait_alive(tid: HostPid) -> io::Result<Stop> {
    let mut spins = 0u32;
    loop {
        if let Some(s) = try_wait(tid)? {
            return Ok(s);
        }
        spins += 1;
        if spins.is_multiple_of(256) {
            let state = std::fs::read_to_string(format!("/proc/{}/stat", tid.0))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
                .flatten();
            if matches!(state, None | Some('Z') | Some('X')) {
                // Its death may have been reported in the meantime.
                if let Some(s) = try_wait(tid)? {
                    return Ok(s);
                }
                return Err(io::Error::other(format!(
                    "tid {tid} died while traced (a fatal signal?)"
                )));
            }
        }
        if spins < 4096 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// Like [`wait`] but returns `None` if nothing is reported yet.
pub fn try_wait(tid: HostPid) -> io::Result<Option<Stop>> {
    let mut status = 0;
    // SAFETY: status is a live c_int the kernel writes.
    let r = unsafe { libc::waitpid(tid.0, &mut status, libc::__WALL | libc::WNOHANG) };
    match r {
        -1 => {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("waitpid({tid}): {e}")))
        }
        0 => Ok(None),
        _ => Ok(Some(Stop::from_status(status))),
    }
}

/// Registers as words, in `user_regs_struct` order, for the image.
pub fn regs_to_words(r: &Regs) -> Vec<u64> {
    // SAFETY: Regs is 27 plain u64 fields (asserted above); reading it as
    // [u64; 27] is a same-size, same-alignment reinterpretation.
    let words: [u64; REGS_WORDS] = unsafe { std::mem::transmute(*r) };
    words.to_vec()
}

/// Inverse of [`regs_to_words`].
pub fn regs_from_words(w: &[u64]) -> Option<Regs> {
    let arr: [u64; REGS_WORDS] = w.try_into().ok()?;
    // SAFETY: every bit pattern is a valid user_regs_struct (27 u64 fields).
    Some(unsafe { std::mem::transmute::<[u64; REGS_WORDS], Regs>(arr) })
}

/// Syscalls that return `-EINTR` after *any* stop, ptrace stops included,
/// instead of being restarted by the kernel (signal(7)).
const EINTR_AFTER_STOP: &[u64] = &[
    libc::SYS_epoll_wait as u64,
    libc::SYS_epoll_pwait as u64,
    441, // epoll_pwait2
    libc::SYS_semop as u64,
    libc::SYS_semtimedop as u64,
    libc::SYS_rt_sigtimedwait as u64,
    libc::SYS_io_getevents as u64,
    libc::SYS_msgrcv as u64,
    libc::SYS_msgsnd as u64,
    libc::SYS_mq_timedreceive as u64,
    libc::SYS_mq_timedsend as u64,
];

const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;

/// Syscalls a thaw continued through `restart_syscall` (a sleep interrupted
/// by our freeze goes on with its remaining time): tid, the call's
/// arguments and its number. A later freeze that finds the thread inside
/// `restart_syscall` needs the number for the image: a restored thread has
/// no restart block, so it must re-issue the original call.
static CONTINUED: std::sync::Mutex<Vec<(i32, [u64; 4], u64)>> = std::sync::Mutex::new(Vec::new());

/// Size of [`CONTINUED`] at which notes of threads that are gone are dropped.
const CONTINUED_PRUNE_AT: usize = 256;

fn call_args(r: &Regs) -> [u64; 4] {
    [r.rdi, r.rsi, r.rdx, r.r10]
}

/// Notes, before a live thaw, that `tid` (stopped with `r`) will go on
/// through `restart_syscall`.
pub fn note_continued_call(tid: HostPid, r: &Regs) {
    if r.orig_rax as i64 >= 0
        && r.orig_rax != libc::SYS_restart_syscall as u64
        && r.rax as i64 == ERESTART_RESTARTBLOCK
    {
        let mut v = CONTINUED.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|(t, _, _)| *t != tid.0);
        if v.len() >= CONTINUED_PRUNE_AT {
            // Threads that exited since they were noted are never asked
            // about again: forget them.
            v.retain(|(t, _, _)| std::path::Path::new(&format!("/proc/{t}")).exists());
        }
        v.push((tid.0, call_args(r), r.orig_rax));
    }
}

/// Registers for an image: a thread found inside `restart_syscall` that a
/// thaw of ours put there gets its original call back in `orig_rax` (same
/// arguments: the registers still hold them), so the restore re-issues it.
pub fn original_call(tid: HostPid, r: &Regs) -> Regs {
    let mut out = *r;
    if r.orig_rax != libc::SYS_restart_syscall as u64 {
        // The continued call has ended: its note is of no more use.
        CONTINUED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _, _)| *t != tid.0);
    } else {
        let v = CONTINUED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, nr)) = v
            .iter()
            .find(|(t, args, _)| *t == tid.0 && *args == call_args(r))
        {
            out.orig_rax = *nr;
        }
    }
    out
}

/// Fix up the registers of a thread that was stopped inside a syscall so
/// that, when it runs again from these registers, the call is re-issued
/// instead of leaking a kernel-internal restart code or an EINTR that the
/// program never asked for. Returns whether anything changed.
///
/// `live`: the thread resumes in the same kernel task (after a checkpoint),
/// so a `restart_syscall` can continue a sleep with its remaining time; a
/// restored thread has no restart block and re-issues the original call.
pub fn fix_interrupted_syscall(r: &mut Regs, live: bool) -> bool {
    if !reissued(r) {
        return false;
    }
    let rax = r.rax as i64;
    r.rax = if rax == ERESTART_RESTARTBLOCK && live {
        libc::SYS_restart_syscall as u64
    } else {
        r.orig_rax
    };
    r.rip -= 2;
    r.orig_rax = u64::MAX; // -1: no further restart processing on resume
    true
}

/// Whether a thread stopped with `r` is inside a call that
/// [`fix_interrupted_syscall`] makes it issue again.
pub fn reissued(r: &Regs) -> bool {
    if (r.orig_rax as i64) < 0 {
        return false;
    }
    match r.rax as i64 {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK => true,
        x if x == -(libc::EINTR as i64) => EINTR_AFTER_STOP.contains(&r.orig_rax),
        _ => false,
    }
}

/// Without namespaces, a thread blocked in `wait4` or `waitid` (libc's
/// `waitpid`, `system`'s own wait, ...) when its process was checkpointed
/// holds the kernel pid of the awaited process (or group) in an argument
/// register, and issues the call again with those registers when
/// restored, where that process has another kernel pid: the call would
/// fail with ECHILD. Translates those arguments with `conv` (kernel to
/// virtual for the image, virtual to the new kernel pid at restore) when
/// the call is one that will be issued again; returns whether anything
/// changed. `wait4(-PGID)` keeps its sign; 0, -1 and `P_ALL`/`P_PIDFD`
/// are left alone.
///
/// A thread stopped on its way out of `clone`, `clone3`, `fork` or
/// `vfork` holds the new child's kernel pid in `rax`: glibc's own
/// `posix_spawn` inside `system` and `popen` is stopped there when the
/// checkpoint catches its child just after the exec. That result is
/// recorded virtual, and stays virtual at a restore (`to_kernel`): it is
/// what the child's pid was at its birth, what every other copy of it the
/// program and glibc keep holds; the library's wrappers translate it, and
/// glibc's own waits for it are trapped (`resources::vpid_trap`).
pub fn convert_pid_args(r: &mut Regs, conv: impl Fn(i32) -> i32, to_kernel: bool) -> bool {
    if !reissued(r) {
        if to_kernel {
            return false;
        }
        let cloned = matches!(
            r.orig_rax as i64,
            libc::SYS_clone | libc::SYS_clone3 | libc::SYS_fork | libc::SYS_vfork
        );
        let child = r.rax as i64;
        if !cloned || child <= 0 || child > i64::from(i32::MAX) {
            return false;
        }
        let new = conv(child as i32);
        if new == child as i32 {
            return false;
        }
        r.rax = new as i64 as u64;
        return true;
    }
    let reg = match r.orig_rax as i64 {
        libc::SYS_wait4 => &mut r.rdi,
        libc::SYS_waitid if r.rdi as u32 == libc::P_PID || r.rdi as u32 == libc::P_PGID => {
            &mut r.rsi
        }
        _ => return false,
    };
    let id = *reg as i32;
    let new = match id {
        id if id > 0 => conv(id),
        id if id < -1 => -conv(-id),
        id => id,
    };
    if new == id {
        return false;
    }
    // An int argument: the kernel reads the low 32 bits.
    *reg = new as i64 as u64;
    true
}

/// Sends `sig` to one thread.
pub fn tgkill(pid: HostPid, tid: HostPid, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes plain integers.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid.0, tid.0, sig) };
    check(r, "tgkill", tid).map(drop)
}

/// Queues `sig` for thread `tid` of `pid` with the siginfo `info` it had
/// (the bytes of a `siginfo_t`) when the kernel lets another process send
/// that siginfo (a negative `si_code` other than `SI_TKILL`: sigqueue,
/// timers, mq, aio), else as a plain `tgkill` (the handler then sees the
/// sender as this process).
pub fn queue_signal(pid: HostPid, tid: HostPid, sig: i32, info: &[u8; 128]) -> io::Result<()> {
    let code = i32::from_ne_bytes([info[8], info[9], info[10], info[11]]);
    if code < 0 && code != libc::SI_TKILL {
        // SAFETY: `info` is 128 readable bytes, the size of a siginfo_t;
        // the kernel only reads them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                pid.0,
                tid.0,
                sig,
                info.as_ptr(),
            )
        };
        if r == 0 {
            return Ok(());
        }
    }
    tgkill(pid, tid, sig)
}

/// Sends `sig` to a whole process (queued for the thread group, not for
/// one thread).
pub fn kill(pid: HostPid, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    let r = unsafe { libc::kill(pid.0, sig) };
    check(r as libc::c_long, "kill", pid).map(drop)
}

/// `get_robust_list(tid)`: (head, len).
pub fn robust_list(tid: HostPid) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers point at live locals of the kernel's types.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid.0,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    check(r, "get_robust_list", tid)?;
    Ok((head, len as u64))
}

/// `PTRACE_GETEVENTMSG`: for a clone event, the new thread's host tid.
pub fn event_msg(tid: HostPid) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: data points at a live c_ulong the kernel writes.
    let r = unsafe {
        raw(
            libc::PTRACE_GETEVENTMSG,
            tid,
            0,
            &mut msg as *mut _ as usize,
        )
    };
    check(r, "PTRACE_GETEVENTMSG", tid)?;
    Ok(msg as u64)
}

/// Pins a thread (0 = the caller) to one CPU; returns its previous mask.
pub fn pin_to_cpu(tid: HostPid, cpu: usize) -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: old is a live cpu_set_t of the size we pass.
    let r =
        unsafe { libc::sched_getaffinity(tid.0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) };
    check(r as libc::c_long, "sched_getaffinity", tid)?;
    // SAFETY: as above, all-zero is the empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of a live cpu_set_t; cpu is bounds-checked by libc.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    set_affinity(tid, &one)?;
    Ok(old)
}

pub fn set_affinity(tid: HostPid, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: set points at a live cpu_set_t of the size we pass.
    let r = unsafe { libc::sched_setaffinity(tid.0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    check(r as libc::c_long, "sched_setaffinity", tid).map(drop)
}

/// The CPU the caller runs on now.
pub fn current_cpu() -> usize {
    // SAFETY: sched_getcpu takes no arguments.
    let c = unsafe { libc::sched_getcpu() };
    c.max(0) as usize
}

/// Pending signals of a thread (or of its whole process with `shared`),
/// as raw 128-byte `siginfo_t`s, read without dequeuing them.
pub fn pending_signals(tid: HostPid, shared: bool) -> io::Result<Vec<Vec<u8>>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 128 * 32];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: 32,
        };
        // SAFETY: addr points at a live PeekArgs, data at a buffer for 32 siginfos.
        let n = unsafe {
            raw(
                libc::PTRACE_PEEKSIGINFO,
                tid,
                &args as *const PeekArgs as usize,
                buf.as_mut_ptr() as usize,
            )
        };
        let n = check(n, "PTRACE_PEEKSIGINFO", tid)? as usize;
        out.extend(buf[..n * 128].chunks_exact(128).map(|c| c.to_vec()));
        if n < 32 {
            return Ok(out);
        }
    }
}

/// `PTRACE_SETOPTIONS`.
pub fn set_options(tid: HostPid, opts: i32) -> io::Result<()> {
    let opts = if seccomp_suspended() {
        opts | PTRACE_O_SUSPEND_SECCOMP
    } else {
        opts
    };
    // SAFETY: SETOPTIONS takes an option bit mask as data, no pointers.
    let r = unsafe { raw(libc::PTRACE_SETOPTIONS, tid, 0, opts as usize) };
    check(r, "PTRACE_SETOPTIONS", tid).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(nr: i64, rdi: u64, rsi: u64) -> Regs {
        // SAFETY: user_regs_struct is plain integers; zero is valid.
        let mut r: Regs = unsafe { std::mem::zeroed() };
        r.orig_rax = nr as u64;
        r.rax = ERESTARTSYS as u64;
        r.rdi = rdi;
        r.rsi = rsi;
        r
    }

    fn conv(p: i32) -> i32 {
        match p {
            100 => 200,
            300 => 400,
            p => p,
        }
    }

    #[test]
    fn awaited_pids_of_a_reissued_wait_are_translated() {
        let mut r = blocked(libc::SYS_wait4, 100, 0);
        assert!(convert_pid_args(&mut r, conv, false));
        assert_eq!(r.rdi, 200);
        // A process group: wait4(-PGID).
        let mut r = blocked(libc::SYS_wait4, (-300i64) as u64, 0);
        assert!(convert_pid_args(&mut r, conv, false));
        assert_eq!(r.rdi as i64, -400);
        for any in [0i64, -1] {
            let mut r = blocked(libc::SYS_wait4, any as u64, 0);
            assert!(!convert_pid_args(&mut r, conv, false));
            assert_eq!(r.rdi as i64, any);
        }
        let mut r = blocked(libc::SYS_waitid, libc::P_PID as u64, 300);
        assert!(convert_pid_args(&mut r, conv, false));
        assert_eq!((r.rdi, r.rsi), (libc::P_PID as u64, 400));
        let mut r = blocked(libc::SYS_waitid, libc::P_PGID as u64, 100);
        assert!(convert_pid_args(&mut r, conv, false));
        assert_eq!(r.rsi, 200);
        let mut r = blocked(libc::SYS_waitid, libc::P_ALL as u64, 100);
        assert!(!convert_pid_args(&mut r, conv, false));
        assert_eq!(r.rsi, 100);
    }

    #[test]
    fn finished_calls_and_other_calls_keep_their_registers() {
        // Returned: rdi is the program's again, not an argument to redo.
        let mut r = blocked(libc::SYS_wait4, 100, 0);
        r.rax = 100;
        assert!(!convert_pid_args(&mut r, conv, false));
        assert_eq!(r.rdi, 100);
        // Not stopped in a call.
        let mut r = blocked(libc::SYS_wait4, 100, 0);
        r.orig_rax = u64::MAX;
        assert!(!convert_pid_args(&mut r, conv, false));
        let mut r = blocked(libc::SYS_read, 100, 0);
        assert!(!convert_pid_args(&mut r, conv, false));
        assert_eq!(r.rdi, 100);
    }

    #[test]
    fn the_child_pid_a_clone_returned_is_translated() {
        for nr in [
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_fork,
            libc::SYS_vfork,
        ] {
            let mut r = blocked(nr, 0, 0);
            r.rax = 300;
            assert!(convert_pid_args(&mut r, conv, false));
            assert_eq!(r.rax, 400);
            // At a restore, the result stays virtual.
            let mut r = blocked(nr, 0, 0);
            r.rax = 300;
            assert!(!convert_pid_args(&mut r, conv, true));
            assert_eq!(r.rax, 300);
        }
        // The child's side (0), a failure, another call's result.
        for (nr, rax) in [
            (libc::SYS_clone, 0u64),
            (libc::SYS_clone, (-libc::EAGAIN as i64) as u64),
            (libc::SYS_getpid, 300),
        ] {
            let mut r = blocked(nr, 0, 0);
            r.rax = rax;
            assert!(!convert_pid_args(&mut r, conv, false));
            assert_eq!(r.rax, rax);
        }
    }
}
