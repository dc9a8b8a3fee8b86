//! Seccomp as the kernel sees it: a classic-BPF evaluator for filter
//! chains (so syscalls we inject into an unprivileged program's threads are
//! checked against the program's own filters before they run), the
//! per-thread mode from `/proc`, and installing filters into a stopped
//! thread.

use std::io;
use std::sync::Arc;

use crate::kernel::pid::HostPid;
use crate::kernel::procfs;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const SECCOMP_SET_MODE_STRICT: u64 = 0;
pub const SECCOMP_SET_MODE_FILTER: u64 = 1;
pub const FLAG_TSYNC: u32 = 1;
pub const FLAG_NEW_LISTENER: u32 = 1 << 3;
pub const FLAG_TSYNC_ESRCH: u32 = 1 << 4;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
const ACTION_FULL: u32 = 0xffff_0000;

/// Syscalls strict mode allows.
const STRICT_ALLOWED: [i64; 4] = [
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_exit,
    libc::SYS_rt_sigreturn,
];

/// The filters one thread runs (oldest first), or strict mode.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub progs: Vec<Arc<Vec<u8>>>,
    pub strict: bool,
}

/// Runs one classic-BPF seccomp program on `data` (struct seccomp_data).
/// Anything the kernel's checker would have refused evaluates to KILL.
pub fn run_bpf(prog: &[u8], data: &[u8; 64]) -> u32 {
    let insns: Vec<(u16, u8, u8, u32)> = prog
        .chunks_exact(8)
        .map(|c| {
            (
                u16::from_ne_bytes([c[0], c[1]]),
                c[2],
                c[3],
                u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0usize;
    let word = |k: u32| -> Option<u32> {
        let k = k as usize;
        (k.is_multiple_of(4) && k + 4 <= 64)
            .then(|| u32::from_ne_bytes(data[k..k + 4].try_into().unwrap()))
    };
    while let Some(&(code, jt, jf, k)) = insns.get(pc) {
        pc += 1;
        let src = if code & 0x08 != 0 { x } else { k };
        match code & 0x07 {
            0x00 => match code & 0xe0 {
                0x20 => match word(k) {
                    Some(v) => a = v,
                    None => return RET_KILL_PROCESS,
                },
                0x00 => a = k,
                0x60 => a = m[(k & 15) as usize],
                0x80 => a = 64,
                _ => return RET_KILL_PROCESS,
            },
            0x01 => match code & 0xe0 {
                0x00 => x = k,
                0x60 => x = m[(k & 15) as usize],
                0x80 => x = 64,
                _ => return RET_KILL_PROCESS,
            },
            0x02 => m[(k & 15) as usize] = a,
            0x03 => m[(k & 15) as usize] = x,
            0x04 => {
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a.checked_div(src).unwrap_or(0),
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(src).unwrap_or(0),
                    0xa0 => a ^ src,
                    _ => return RET_KILL_PROCESS,
                }
            }
            0x05 => {
                let taken = match code & 0xf0 {
                    0x00 => {
                        pc += k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return RET_KILL_PROCESS,
                };
                pc += if taken { jt } else { jf } as usize;
            }
            0x06 => return if code & 0x18 == 0x10 { a } else { k },
            _ => {
                if code & 0xf8 == 0x80 {
                    a = x
                } else {
                    x = a
                }
            }
        }
    }
    RET_KILL_PROCESS
}

/// `struct seccomp_data` for syscall `nr` at `ip` with `args`.
pub fn seccomp_data(nr: i64, ip: u64, args: [u64; 6]) -> [u8; 64] {
    let mut d = [0u8; 64];
    d[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
    d[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_ne_bytes());
    d[8..16].copy_from_slice(&ip.to_ne_bytes());
    for (i, v) in args.iter().enumerate() {
        d[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_ne_bytes());
    }
    d
}

/// Precedence of an action (lower wins), as the kernel orders them.
fn precedence(ret: u32) -> i32 {
    (ret & ACTION_FULL) as i32
}

impl Chain {
    /// What the kernel would do with syscall `nr` made at `ip` by a
    /// thread running this chain: the full return value of the filter
    /// whose action wins.
    pub fn eval(&self, nr: i64, ip: u64, args: [u64; 6]) -> u32 {
        if self.strict {
            return if STRICT_ALLOWED.contains(&nr) {
                RET_ALLOW
            } else {
                RET_KILL_THREAD
            };
        }
        let d = seccomp_data(nr, ip, args);
        let mut best = RET_ALLOW;
        for p in &self.progs {
            let r = run_bpf(p, &d);
            if precedence(r) < precedence(best) {
                best = r;
            }
        }
        best
    }

    /// `None` when the call may run; else why not ("kill", "trap", ...);
    /// `Some(Ok(errno))` when the filter makes it fail with that errno.
    pub fn verdict(&self, nr: i64, ip: u64, args: [u64; 6]) -> Result<(), Verdict> {
        let r = self.eval(nr, ip, args);
        match r & ACTION_FULL {
            RET_ALLOW | RET_LOG => Ok(()),
            RET_ERRNO => Err(Verdict::Errno((r & 0xfff) as i32)),
            a => Err(Verdict::Refused(action_name(a))),
        }
    }
}

/// Why an injected call must not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The filter returns this errno: the call would fail harmlessly.
    Errno(i32),
    /// The filter would kill, trap, trace or notify: it is not made.
    Refused(&'static str),
}

pub fn action_name(a: u32) -> &'static str {
    match a & ACTION_FULL {
        RET_KILL_PROCESS => "kill the process on",
        RET_KILL_THREAD => "kill the thread on",
        RET_TRAP => "send SIGSYS for",
        RET_USER_NOTIF => "hand to its notification listener",
        RET_TRACE => "stop for a tracer on",
        _ => "not allow",
    }
}

/// A thread's seccomp mode and filter count (`/proc/PID/task/TID/status`),
/// and its tid inside the innermost pid namespace.
#[derive(Debug, Clone, Copy)]
pub struct ThreadMode {
    pub mode: u32,
    pub filters: u32,
    pub vtid: Option<i32>,
}

pub fn thread_mode(pid: HostPid, tid: HostPid) -> io::Result<ThreadMode> {
    let st = procfs::status_of(pid, Some(tid))?;
    let num = |k: &str| {
        procfs::field(&st, k)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    Ok(ThreadMode {
        mode: num("Seccomp"),
        filters: num("Seccomp_filters"),
        vtid: procfs::field(&st, "NSpid")
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse().ok()),
    })
}

/// `PTRACE_SECCOMP_GET_FILTER`: filter `index` of the stopped tracee
/// `tid`, counted from the oldest (0: the kernel walks `count - index`
/// filters back from the newest; checked on 6.18 with two filters of
/// different lengths, whatever ptrace(2) says); needs `CAP_SYS_ADMIN` in
/// the initial user namespace.
pub fn get_filter(tid: HostPid, index: u64) -> io::Result<Vec<u8>> {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    // SAFETY: a null buffer asks only for the instruction count.
    let n = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid.0,
            index as usize as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("PTRACE_SECCOMP_GET_FILTER {index} of tid {tid}: {e}"),
        ));
    }
    let mut buf = vec![0u8; n as usize * 8];
    // SAFETY: `buf` holds the n instructions the kernel said it has.
    let m = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid.0,
            index as usize as *mut libc::c_void,
            buf.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    if m != n {
        return Err(io::Error::other(format!(
            "PTRACE_SECCOMP_GET_FILTER {index} of tid {tid}: the filter changed"
        )));
    }
    Ok(buf)
}

/// Sets `no_new_privs` and installs `prog` in the calling thread (a
/// forked child about to exec the program).
pub fn install_self(prog: &[u8]) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let fprog = libc::sock_fprog {
        len: (prog.len() / 8) as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, alive across the call; the kernel
    // copies the program and keeps no pointer to our memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0u64,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Vec<u8> {
        let mut v = code.to_ne_bytes().to_vec();
        v.extend([jt, jf]);
        v.extend(k.to_ne_bytes());
        v
    }

    /// Index 0 of PTRACE_SECCOMP_GET_FILTER is the oldest filter (root
    /// only: the call needs CAP_SYS_ADMIN).
    #[test]
    fn get_filter_counts_from_the_oldest() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: PTRACE_SECCOMP_GET_FILTER needs root");
            return;
        }
        let older = insn(0x06, 0, 0, RET_ALLOW);
        let newer = [insn(0x20, 0, 0, 0), insn(0x06, 0, 0, RET_ALLOW)].concat();
        // SAFETY: the child only makes system calls (no allocation on the
        // success path) and ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = install_self(&older).is_ok() && install_self(&newer).is_ok();
            // SAFETY: stop ourselves, then leave without unwinding.
            unsafe {
                if ok {
                    libc::raise(libc::SIGSTOP);
                }
                libc::_exit(if ok { 0 } else { 1 })
            }
        }
        let tid = HostPid(pid);
        let mut st = 0;
        // SAFETY: our child; st is ours.
        unsafe { libc::waitpid(pid, &mut st, libc::WUNTRACED) };
        let got = libc::WIFSTOPPED(st)
            && crate::kernel::ptrace::seize(tid, 0).is_ok()
            && crate::kernel::ptrace::interrupt(tid).is_ok()
            && crate::kernel::ptrace::wait(tid).is_ok();
        let filters = (get_filter(tid, 0).ok(), get_filter(tid, 1).ok());
        // SAFETY: our child, killed and reaped.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut st, 0);
        }
        assert!(got, "the child did not stop under ptrace");
        assert_eq!(filters, (Some(older), Some(newer)));
    }

    /// ld nr; jeq 39 ? errno(1) : allow.
    #[test]
    fn evaluates_a_deny_filter() {
        let prog: Vec<u8> = [
            insn(0x20, 0, 0, 0),
            insn(0x15, 0, 1, 39),
            insn(0x06, 0, 0, RET_ERRNO | 1),
            insn(0x06, 0, 0, RET_ALLOW),
        ]
        .concat();
        let c = Chain {
            progs: vec![Arc::new(prog)],
            strict: false,
        };
        assert_eq!(c.verdict(39, 0, [0; 6]), Err(Verdict::Errno(1)));
        assert_eq!(c.verdict(9, 0, [0; 6]), Ok(()));
        let strict = Chain {
            progs: vec![],
            strict: true,
        };
        assert!(matches!(
            strict.verdict(9, 0, [0; 6]),
            Err(Verdict::Refused(_))
        ));
        assert_eq!(strict.verdict(libc::SYS_write, 0, [0; 6]), Ok(()));
    }
}
