//! Running system calls inside a ptrace-stopped thread of another process.
//!
//! The thread's registers are saved, pointed at a `syscall` instruction with
//! the call's number and arguments, run to the syscall-exit stop, and read
//! back. `orig_rax = -1` keeps the kernel's restart logic off our injected
//! registers. Each call costs two ptrace stops (~15-20 µs with
//! tracer and tracee on one CPU).
//!
//! **Rescue.** If the supervisor dies while a thread's registers point at
//! injected code, the kernel detaches the thread and it runs on from there.
//! Without help it would run into whatever follows the `syscall`
//! instruction with our registers and crash. So, where a process has our
//! scratch mapping, injected calls run from a stub there that is followed
//! by a rescue tail (never reached while the supervisor lives: it stops the
//! thread at the syscall's exit): the tail puts the thread's signal mask
//! and registers back from a rescue block written below the red zone of the
//! thread's own stack (where the kernel would put a signal frame) and jumps
//! to where the freeze found it, re-issuing an interrupted syscall as the
//! kernel would. The FPU/vector state is never touched by injected code, so
//! it needs no saving. See [`write_rescue_block`].

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
    /// Where calls run from when the thread can be rescued.
    rescue: Option<Rescue>,
    /// The thread's own seccomp filters, when they apply to our injected
    /// calls (not suspended by a privileged tracer): every call is checked
    /// against them first and one they would not allow is not made.
    pub seccomp: Option<std::sync::Arc<crate::kernel::seccomp::Chain>>,
}

/// The rescue stubs of a process and one thread's rescue block.
#[derive(Clone, Copy, Debug)]
pub struct Rescue {
    /// `syscall` followed by [`RESCUE_TAIL`].
    pub stub: RemoteAddr,
    /// `syscall`, then `exit(0)` in a child, then [`RESCUE_TAIL`].
    pub clone_stub: RemoteAddr,
    /// The thread's rescue block ([`write_rescue_block`]).
    pub block: u64,
}

/// The bytes below a thread's stack pointer that the ABI lets leaf code
/// use without moving it: left alone.
pub const RED_ZONE: u64 = 128;

/// Size of a rescue block: signal mask, 15 general registers, rflags, rip.
pub const RESCUE_BLOCK_LEN: u64 = 18 * 8;

/// Puts a thread back from its rescue block, with `rsp` pointing at it:
/// `rt_sigprocmask(SIG_SETMASK, block.mask)`, pops every general register
/// but rsp, `popfq`, then `ret 128` jumps to the saved rip with rsp back at
/// its saved value (the block ends where the red zone starts).
pub const RESCUE_TAIL: [u8; 54] = [
    0xb8, 0x0e, 0x00, 0x00, 0x00, // mov eax, SYS_rt_sigprocmask (14)
    0xbf, 0x02, 0x00, 0x00, 0x00, // mov edi, SIG_SETMASK
    0x48, 0x89, 0xe6, // mov rsi, rsp
    0x31, 0xd2, // xor edx, edx
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8
    0x0f, 0x05, // syscall
    0x48, 0x83, 0xc4, 0x08, // add rsp, 8
    0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, // pop r15, r14, r13, r12
    0x5d, 0x5b, // pop rbp, rbx
    0x41, 0x5b, 0x41, 0x5a, 0x41, 0x59, 0x41, 0x58, // pop r11, r10, r9, r8
    0x58, 0x59, 0x5a, 0x5e, 0x5f, // pop rax, rcx, rdx, rsi, rdi
    0x9d, // popfq
    0xc2, 0x80, 0x00, // ret 128
];

/// The stub for `clone`: a child that ever runs without us (the snapshot
/// child, if the supervisor died) exits at once instead of running the
/// program's code a second time with its fds.
const CLONE_PREFIX: [u8; 16] = [
    0x0f, 0x05, // syscall
    0x48, 0x85, 0xc0, // test rax, rax
    0x75, 0x09, // jnz RESCUE_TAIL
    0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, SYS_exit (60)
    0x31, 0xff, // xor edi, edi
    0x0f, 0x05, // syscall
];

/// What `libdmtcp_inject.so` puts in front of its copy of the stubs
/// (`inject/src/rescue.rs`): the stub, then the clone stub.
const LIBRARY_MARKER: &[u8; 16] = b"DMTCP_RESCUE_V1\0";

/// The stubs as the library holds them, marker first.
fn library_stub_bytes() -> Vec<u8> {
    let mut b = LIBRARY_MARKER.to_vec();
    b.extend_from_slice(&[0x0f, 0x05]);
    b.extend_from_slice(&RESCUE_TAIL);
    b.extend_from_slice(&CLONE_PREFIX);
    b.extend_from_slice(&RESCUE_TAIL);
    b
}

/// File offset of the marker in the library at `path`, found once per path.
fn library_marker_offset(path: &str) -> Option<u64> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<u64>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    *cache.entry(path.to_string()).or_insert_with(|| {
        let data = std::fs::read(path).ok()?;
        memchr::memmem::find(&data, LIBRARY_MARKER).map(|p| p as u64)
    })
}

/// Finds the marker in the library at `path` now, so that the first
/// checkpoint does not read the library file (several MiB) while the
/// program is frozen; keyed by the path the kernel shows in the maps.
pub fn warm_library_marker(path: &std::path::Path) {
    if let Ok(p) = std::fs::canonicalize(path) {
        let _ = library_marker_offset(&p.to_string_lossy());
    }
}

/// The rescue stubs in the process's own `libdmtcp_inject.so`, if it has
/// the library mapped and its bytes there are exactly the stubs (checked
/// each time): (stub, clone stub). They need no scratch mapping, so even
/// the calls that make and unmap it can be rescued.
pub fn library_stubs(maps: &[MapEntry], mem: &Mem) -> Option<(RemoteAddr, RemoteAddr)> {
    let m = maps
        .iter()
        .find(|m| m.exec && m.name.ends_with("/libdmtcp_inject.so"))?;
    let off = library_marker_offset(&m.name)?;
    if off < m.offset || off - m.offset >= m.end - m.start {
        return None;
    }
    let at = m.start + (off - m.offset);
    let want = library_stub_bytes();
    let mut got = vec![0u8; want.len()];
    mem.read(RemoteAddr(at), &mut got).ok()?;
    if got != want {
        return None;
    }
    let stub = at + LIBRARY_MARKER.len() as u64;
    Some((
        RemoteAddr(stub),
        RemoteAddr(stub + 2 + RESCUE_TAIL.len() as u64),
    ))
}

/// Fault injection for the tests (as CRIU's `CRIU_FAULT`):
/// `DMTCP_FAULT_INJECTED_PAUSE_MS=N` makes the supervisor wait N ms each
/// time a thread's registers point at injected code and before it runs, so
/// a test can kill the supervisor exactly then. Read once; unset: no pause.
pub fn fault_pause() {
    use std::sync::OnceLock;
    static MS: OnceLock<u64> = OnceLock::new();
    let ms = *MS.get_or_init(|| {
        std::env::var("DMTCP_FAULT_INJECTED_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Bytes [`install_stubs`] writes.
pub const STUBS_LEN: u64 = 128;

/// Writes both stubs at `at` (within [`STUBS_LEN`] bytes) in memory of
/// ours inside the process (the scratch mapping) and returns (stub, clone
/// stub).
pub fn install_stubs(mem: &Mem, at: u64) -> io::Result<(RemoteAddr, RemoteAddr)> {
    let mut code = vec![0x0f, 0x05]; // syscall
    code.extend_from_slice(&RESCUE_TAIL);
    let clone_at = code.len() as u64;
    code.extend_from_slice(&CLONE_PREFIX);
    code.extend_from_slice(&RESCUE_TAIL);
    debug_assert!(code.len() as u64 <= STUBS_LEN);
    mem.write(RemoteAddr(at), &code)?;
    Ok((RemoteAddr(at), RemoteAddr(at + clone_at)))
}

/// Writes the rescue block of a thread frozen with `regs` and signal mask
/// `mask` just below its red zone, and returns its address. The saved rip
/// and rax re-issue a syscall the freeze interrupted, as the kernel does
/// when a thread resumes ([`ptrace::fix_interrupted_syscall`]). Fails when
/// that stack memory is not mapped (a stack at its very limit).
pub fn write_rescue_block(mem: &Mem, regs: &Regs, mask: u64) -> io::Result<u64> {
    let (base, bytes) = rescue_block(regs, mask)?;
    mem.write(RemoteAddr(base), &bytes)?;
    Ok(base)
}

/// [`write_rescue_block`] for every thread of `pid` (`(regs, mask)` each),
/// in one system call when it can.
pub fn write_rescue_blocks(pid: HostPid, threads: &[(Regs, u64)]) -> io::Result<Vec<u64>> {
    let blocks = threads
        .iter()
        .map(|(r, m)| rescue_block(r, *m))
        .collect::<io::Result<Vec<_>>>()?;
    let data: Vec<u8> = blocks.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    let ranges: Vec<(u64, usize)> = blocks.iter().map(|(base, b)| (*base, b.len())).collect();
    if !crate::kernel::sys::vm_write_scatter(pid.0, &data, &ranges) {
        let mem = Mem::open(pid, true)?;
        for (base, b) in &blocks {
            mem.write(RemoteAddr(*base), b)?;
        }
    }
    Ok(blocks.into_iter().map(|(base, _)| base).collect())
}

/// Address and bytes of a thread's rescue block.
fn rescue_block(regs: &Regs, mask: u64) -> io::Result<(u64, Vec<u8>)> {
    let mut r = *regs;
    ptrace::fix_interrupted_syscall(&mut r, true);
    let base = regs
        .rsp
        .checked_sub(RED_ZONE + RESCUE_BLOCK_LEN)
        .ok_or_else(|| io::Error::other("stack pointer too low for a rescue block"))?;
    let words = [
        mask, r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx,
        r.rdx, r.rsi, r.rdi, r.eflags, r.rip,
    ];
    Ok((base, words.iter().flat_map(|w| w.to_ne_bytes()).collect()))
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
            rescue: None,
            seccomp: None,
        })
    }

    /// From now on calls run from the rescue stubs (`Some`), or from
    /// [`Injector::insn`] without a rescue (`None`: before the stubs exist
    /// and for unmapping them).
    pub fn set_rescue(&mut self, rescue: Option<Rescue>) {
        self.rescue = rescue;
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
        // Where the `syscall` instruction runs: a rescue stub, or the vdso's.
        let (rip, rsp) = match self.rescue {
            Some(rs) if nr == libc::SYS_clone => (rs.clone_stub.0, rs.block),
            Some(rs) => (rs.stub.0, rs.block),
            None => (self.insn.0, self.saved.rsp),
        };
        if let Some(chain) = &self.seccomp {
            use crate::kernel::seccomp::Verdict;
            match chain.verdict(nr, rip + 2, args) {
                Ok(()) => {}
                Err(Verdict::Errno(e)) => return Ok(-(e as i64)),
                Err(Verdict::Refused(what)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "tid {}: the program's own seccomp filter would {what} the injected {}: \
                             not made (a root dmtcp-run suspends the program's filters while it works)",
                            self.tid,
                            syscall_name(nr)
                        ),
                    ))
                }
            }
        }
        let mut r = self.saved;
        r.rip = rip;
        r.rsp = rsp;
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
        fault_pause();
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

/// Runs `f` with an [`Injector`] in the leader thread of `pid`, which `fp`
/// holds stopped (`freeze::freeze_threads(pid, &[pid])`: the other threads
/// run on), with every signal blocked meanwhile. If we die during it, the
/// process is rescued where it has the library's stubs (see
/// [`write_rescue_block`]).
pub fn in_stopped_leader<T>(
    fp: &mut crate::kernel::freeze::FrozenProcess,
    pid: HostPid,
    f: impl FnOnce(&mut Injector) -> io::Result<T>,
) -> io::Result<T> {
    let maps = crate::kernel::procfs::maps(pid)?;
    let mem = crate::kernel::procfs::Mem::open(pid, false)?;
    let insn = syscall_insn(pid, &maps, &mem)?;
    let t = &mut fp.threads[0];
    let mask = crate::kernel::ptrace::get_sigmask(t.tid)?;
    let rescue = library_stubs(&maps, &mem).and_then(|(stub, clone_stub)| {
        let wmem = crate::kernel::procfs::Mem::open(pid, true).ok()?;
        let block = write_rescue_block(&wmem, &t.regs, mask).ok()?;
        Some(Rescue {
            stub,
            clone_stub,
            block,
        })
    });
    crate::kernel::ptrace::set_sigmask(t.tid, u64::MAX)?;
    t.touched = true;
    let r = Injector::new(t.tid, insn).and_then(|mut inj| {
        inj.set_rescue(rescue);
        f(&mut inj)
    });
    crate::kernel::ptrace::set_sigmask(t.tid, mask)?;
    r
}
