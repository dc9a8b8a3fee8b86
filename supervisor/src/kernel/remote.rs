//! Running system calls inside a ptrace-stopped thread of another process.
//!
//! The thread's registers are saved, pointed at a `syscall` instruction with
//! the call's number and arguments, run to the syscall-exit stop, and read
//! back. `orig_rax = -1` keeps the kernel's restart logic off our injected
//! registers. Each call costs two ptrace stops (~15-20 µs with
//! tracer and tracee on one CPU).

use std::io;

use dmtcp_image::PAGE_SIZE;

use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs::{MapEntry, Mem};
use crate::kernel::ptrace::{self, Regs, Stop};

/// A stopped thread we can run syscalls in.
pub struct Injector {
    pub tid: HostPid,
    /// Address of a `syscall` (0f 05) instruction in the target.
    pub insn: RemoteAddr,
    /// Registers to put back after each call.
    pub saved: Regs,
    /// Host tid of the thread the last injected clone created.
    pub cloned: Option<HostPid>,
}

fn syscall_name(nr: i64) -> String {
    let known: &[(i64, &str)] = &[
        (libc::SYS_mmap, "mmap"),
        (libc::SYS_munmap, "munmap"),
        (libc::SYS_mprotect, "mprotect"),
        (libc::SYS_brk, "brk"),
        (libc::SYS_prctl, "prctl"),
        (libc::SYS_rt_sigaction, "rt_sigaction"),
        (libc::SYS_sigaltstack, "sigaltstack"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_close, "close"),
        (libc::SYS_arch_prctl, "arch_prctl"),
        (libc::SYS_rseq, "rseq"),
        (libc::SYS_getitimer, "getitimer"),
        (libc::SYS_setitimer, "setitimer"),
        (libc::SYS_capset, "capset"),
        (libc::SYS_set_tid_address, "set_tid_address"),
        (libc::SYS_set_robust_list, "set_robust_list"),
        (libc::SYS_mremap, "mremap"),
        (libc::SYS_personality, "personality"),
        (libc::SYS_lseek, "lseek"),
        (libc::SYS_dup2, "dup2"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == nr)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("syscall {nr}"))
}

impl Injector {
    /// `tid` must be in a ptrace stop (interrupt, signal-delivery or syscall stop).
    pub fn new(tid: HostPid, insn: RemoteAddr) -> io::Result<Injector> {
        let saved = ptrace::get_regs(tid)?;
        Ok(Injector {
            tid,
            insn,
            saved,
            cloned: None,
        })
    }

    /// Resumes with PTRACE_SYSCALL until the next syscall stop.
    fn run_to_syscall_stop(&mut self) -> io::Result<()> {
        ptrace::syscall(self.tid, 0)?;
        loop {
            match ptrace::wait_alive(self.tid)? {
                Stop::Syscall => return Ok(()),
                Stop::Signal(sig) => {
                    // Callers block every signal while injecting, so none
                    // should be delivered here; if one is, it cannot go to
                    // our injected code: say so rather than lose it quietly.
                    tracing::warn!(
                        "tid {}: signal {sig} during an injected syscall was dropped",
                        self.tid
                    );
                    ptrace::syscall(self.tid, 0)?;
                }
                Stop::Event { event, .. } => {
                    if event == libc::PTRACE_EVENT_CLONE {
                        self.cloned = Some(HostPid(ptrace::event_msg(self.tid)? as i32));
                    }
                    ptrace::syscall(self.tid, 0)?
                }
                Stop::Exited(c) => {
                    return Err(io::Error::other(format!(
                        "tid {} exited (status {c}) during an injected syscall",
                        self.tid
                    )))
                }
                Stop::Killed(s) => {
                    return Err(io::Error::other(format!(
                        "tid {} was killed by signal {s} during an injected syscall",
                        self.tid
                    )))
                }
            }
        }
    }

    /// Runs `nr(args...)` in the thread and returns the raw result
    /// (negative errno on failure). The thread's registers are restored.
    pub fn raw_syscall(&mut self, nr: i64, args: [u64; 6]) -> io::Result<i64> {
        let mut r = self.saved;
        r.rip = self.insn.0;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        r.eflags &= !(0x100 | 0x400); // TF, DF
        ptrace::set_regs(self.tid, &r)?;
        self.run_to_syscall_stop()?; // entry
        self.run_to_syscall_stop()?; // exit
        let out = ptrace::get_regs(self.tid)?;
        ptrace::set_regs(self.tid, &self.saved)?;
        Ok(out.rax as i64)
    }

    /// Like [`raw_syscall`](Self::raw_syscall) but turns a negative result into an error
    /// naming the call, the thread and the errno.
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> io::Result<u64> {
        let r = self.raw_syscall(nr, args)?;
        if (-4095..0).contains(&r) {
            let e = io::Error::from_raw_os_error((-r) as i32);
            return Err(io::Error::new(
                e.kind(),
                format!("injected {} in tid {}: {e}", syscall_name(nr), self.tid),
            ));
        }
        Ok(r as u64)
    }
}

/// Locates a `syscall` instruction usable for injection: the vdso has some.
pub fn syscall_insn(pid: HostPid, maps: &[MapEntry], mem: &Mem) -> io::Result<RemoteAddr> {
    let vdso = maps
        .iter()
        .find(|m| m.name == "[vdso]")
        .ok_or_else(|| io::Error::other(format!("pid {pid} has no [vdso]")))?;
    find_syscall_insn(mem, vdso.start, vdso.end)
}

/// Finds a `syscall` instruction inside `[start, end)` of the target.
pub fn find_syscall_insn(
    mem: &crate::kernel::procfs::Mem,
    start: u64,
    end: u64,
) -> io::Result<RemoteAddr> {
    let mut buf = vec![0u8; (end - start) as usize];
    mem.read(RemoteAddr(start), &mut buf)?;
    buf.windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|i| RemoteAddr(start + i as u64))
        .ok_or_else(|| io::Error::other(format!("no syscall instruction in {start:#x}-{end:#x}")))
}

/// Where in the trampoline page scratch data goes.
pub const SCRATCH_OFF: u64 = 256;

/// A process under our control through injected syscalls (a restart
/// shell while it becomes its process).
pub struct Shell {
    pub pid: HostPid,
    pub inj: Injector,
    pub mem: Mem,
    /// The one-page trampoline: a `syscall` instruction, then scratch data.
    pub tramp: u64,
}

impl Shell {
    pub fn scratch(&self) -> u64 {
        self.tramp + SCRATCH_OFF
    }

    pub fn call(&mut self, nr: i64, args: [u64; 6]) -> io::Result<u64> {
        self.inj.syscall(nr, args)
    }

    /// Writes `bytes` to scratch and returns its address.
    pub fn put(&self, bytes: &[u8]) -> io::Result<u64> {
        if bytes.len() as u64 > PAGE_SIZE - SCRATCH_OFF {
            return Err(io::Error::other("scratch data too large"));
        }
        self.mem.write(RemoteAddr(self.scratch()), bytes)?;
        Ok(self.scratch())
    }

    pub fn put_cstr(&self, s: &str) -> io::Result<u64> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(&b)
    }
}
