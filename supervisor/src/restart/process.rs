//! Turning a parked shell process into the process an image describes,
//! driven from outside with ptrace, in the order the kernel accepts
//! (docs/architecture.md, Restart).
//!
//! The shell (made by `dmtcp-nsinit` with the original pid, fds, cwd, umask
//! and limits already in place) is seized in `pause()`. We then, all through
//! syscalls injected into it: drop its rseq registration, move execution to a
//! one-page trampoline, unmap everything else, map vdso/vvar at their saved
//! place, recreate every mapping and fill it with the saved pages, set the mm
//! fields, signal dispositions, timers and thread state, drop capabilities to
//! what the process had, unmap the trampoline, load the saved registers and
//! detach. Nothing of the restorer is left in the process.

use std::collections::HashMap;
use std::io;

use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs::{self, Mem};
use crate::kernel::ptrace::{self, Stop};
use crate::kernel::remote::{Injector, Shell};
use crate::resources::memory::restore::set_mm;
use crate::resources::memory::ParkedMemory;
use crate::resources::restore_err as err;
use crate::resources::signals::{requeue_signals, restore_posix_timers};
use crate::resources::threads::{
    bounding_to_drop, create_thread, load_registers, restore_caps, restore_thread_state,
};
use crate::restart::creds::{apply_ids, Granted};
use dmtcp_image::{ImageChain, ImageReader, ProcessImage, ThreadState, Vma, VmaKind, PAGE_SIZE};
use tracing::debug;

/// Highest user address + 1 on x86_64 with 4-level paging.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const RSEQ_FLAG_UNREGISTER: u64 = 1;
/// Every signal blocked (SIGKILL/SIGSTOP cannot be, the kernel ignores them).
const ALL_SIGNALS: u64 = u64::MAX;

/// Plans where nsinit maps each shared anonymous object before forking the
/// shells: big enough for every piece any process maps, at addresses free
/// in every image (so moving pieces into place never clobbers another).
pub fn park_shared_memory(images: &[&ImageReader]) -> Vec<ParkedMemory> {
    type Object = (u64, Option<String>, Option<String>);
    let mut sizes: std::collections::BTreeMap<u64, Object> = Default::default();
    let mut taken: Vec<(u64, u64)> = Vec::new();
    for r in images {
        for v in &r.meta().vmas {
            taken.push((v.start, v.end));
            let (id, offset, memfd, ghost) = match &v.kind {
                VmaKind::SharedAnon { id, offset } => (*id, *offset, None, None),
                VmaKind::Memfd { id, name, offset } if v.shared => {
                    (*id, *offset, Some(name.clone()), None)
                }
                VmaKind::Ghost { id, path, offset } => (*id, *offset, None, Some(path.clone())),
                _ => continue,
            };
            let s = sizes.entry(id).or_insert((0, memfd, ghost));
            s.0 = s.0.max(offset + v.len());
        }
    }
    taken.sort();
    let mut out = Vec::new();
    // Above 8 GiB: clear of PIE executables' low addresses and of nsinit.
    let mut next = 0x2_0000_0000u64;
    for (id, (size, memfd, ghost)) in sizes {
        loop {
            let end = next + size + PAGE_SIZE;
            match taken.iter().find(|(s, e)| *s < end && *e > next) {
                Some(&(_, e)) => next = (e + PAGE_SIZE) & !(PAGE_SIZE - 1),
                None => break,
            }
        }
        out.push(ParkedMemory {
            id,
            addr: next,
            size,
            memfd,
            ghost,
        });
        taken.push((next, next + size));
        next += size + PAGE_SIZE;
    }
    out
}

/// Picks a page-aligned address free in both the shell and the image.
fn trampoline_address(shell: &[procfs::MapEntry], image: &[Vma]) -> io::Result<u64> {
    let mut taken: Vec<(u64, u64)> = shell
        .iter()
        .map(|m| (m.start, m.end))
        .chain(image.iter().map(|v| (v.start, v.end)))
        .collect();
    taken.sort();
    let mut candidate = 0x10_0000u64; // above mmap_min_addr
    for (s, e) in taken {
        if candidate + PAGE_SIZE <= s {
            break;
        }
        candidate = candidate.max(e);
    }
    if candidate + PAGE_SIZE >= TASK_SIZE {
        return Err(io::Error::other("no free page for the trampoline"));
    }
    Ok(candidate)
}

/// Seizes the parked shell and waits until it is stopped.
fn seize_shell(pid: HostPid) -> io::Result<()> {
    ptrace::seize(pid, libc::PTRACE_O_TRACECLONE)?;
    ptrace::interrupt(pid)?;
    loop {
        match ptrace::wait(pid)? {
            Stop::Event { event, .. } if event == ptrace::PTRACE_EVENT_STOP => {
                return ptrace::suspend_seccomp(pid, libc::PTRACE_O_TRACECLONE)
            }
            Stop::Exited(c) => return Err(io::Error::other(format!("shell exited ({c})"))),
            Stop::Killed(s) => return Err(io::Error::other(format!("shell killed by signal {s}"))),
            _ => ptrace::cont(pid, 0)?,
        }
    }
}

/// A restored process still held in ptrace stops: it runs once
/// [`release`](Restored::release)d, so a computation starts as a whole only
/// after every process of it is in place.
pub struct Restored {
    pid: HostPid,
    /// Every thread, leader last.
    threads: Vec<HostPid>,
    /// The tracer's own affinity, given to every thread on release.
    mask: libc::cpu_set_t,
    started: std::time::Instant,
}

impl Restored {
    /// The process's host pid.
    pub fn pid(&self) -> HostPid {
        self.pid
    }

    /// Lets one thread run (a plugin hook thread, before the others).
    pub fn release_thread(&mut self, tid: HostPid) -> io::Result<()> {
        let Some(i) = self.threads.iter().position(|&t| t == tid) else {
            return Ok(());
        };
        self.threads.remove(i);
        ptrace::set_affinity(tid, &self.mask)?;
        ptrace::detach(tid, 0).map_err(|e| err(tid, "detach", e))
    }

    /// Lets every thread run from its saved registers.
    pub fn release(self) -> io::Result<()> {
        for &tid in &self.threads {
            ptrace::set_affinity(tid, &self.mask)?;
            ptrace::detach(tid, 0).map_err(|e| err(tid, "detach", e))?;
        }
        debug!(
            "pid {} restored ({} threads) in {:?}",
            self.pid,
            self.threads.len(),
            self.started.elapsed()
        );
        Ok(())
    }
}

/// Restores one process into the shell `pid`, leaving it stopped. On error
/// the caller kills the namespace: a half-restored process must never run.
/// With `fg_pgrp`, the process makes that group (an id inside the
/// namespace) the foreground group of its controlling terminal.
/// `shm_sizes` gives the size of every SysV shared memory segment by id.
pub fn restore_process(
    pid: HostPid,
    image: &ImageChain,
    parked: &[ParkedMemory],
    fg_pgrp: Option<u32>,
    shm_sizes: &HashMap<i32, u64>,
    granted: &Granted,
) -> io::Result<Restored> {
    let started = std::time::Instant::now();
    // Tracer and tracee on one CPU: each injected syscall is then a cheap
    // local wake-up instead of a cross-CPU one (measured 4-7x faster).
    let cpu = ptrace::current_cpu();
    let my_mask = ptrace::pin_to_cpu(HostPid(0), cpu)?;
    let result = restore_pinned(
        pid,
        image,
        (cpu, &my_mask),
        parked,
        fg_pgrp,
        shm_sizes,
        granted,
    );
    ptrace::set_affinity(HostPid(0), &my_mask)?;
    Ok(Restored {
        pid,
        threads: result?,
        mask: my_mask,
        started,
    })
}

fn restore_pinned(
    pid: HostPid,
    image: &ImageChain,
    // The tracer's CPU, and its own affinity while no ptrace work is done.
    (cpu, free): (usize, &libc::cpu_set_t),
    parked: &[ParkedMemory],
    fg_pgrp: Option<u32>,
    shm_sizes: &HashMap<i32, u64>,
    granted: &Granted,
) -> io::Result<Vec<HostPid>> {
    let meta = image.top().meta();
    let leader_idx = meta
        .threads
        .iter()
        .position(|t| t.vtid == meta.process.vpid)
        .ok_or_else(|| err(pid, "threads", "no thread has the process id"))?;
    let mut sh = take_shell(pid, meta, cpu)?;
    // 0. Without namespaces and privileges, the program's executable for
    //    /proc/PID/exe: the shell execs it.
    if exec_wanted(pid, meta, parked) {
        sh = exec_program(sh, meta)?;
    }
    // 1. The shell's rseq area is about to disappear.
    unregister_rseq(&mut sh)?;
    // 2. Trampoline: one page holding `syscall` and our scratch data.
    map_trampoline(&mut sh)?;
    // 3. Wipe the shell but the trampoline and the parked objects.
    wipe_shell(&mut sh, parked)?;
    // 4. vdso and vvar at their saved place; 5. every mapping, then its
    //    pages (resources::memory::restore).
    crate::resources::memory::restore::restore_memory(
        &mut sh,
        image,
        parked,
        shm_sizes,
        (cpu, free),
    )?;
    // 6. Process-wide state, then the other threads with their tids.
    let mut threads = process_and_threads(&mut sh, meta, leader_idx, fg_pgrp)?;
    // 7. Per-thread kernel state, credentials and capabilities.
    thread_kernel_state(&mut sh, meta, leader_idx, &mut threads, granted)?;
    // 8. Pending signals, the state page; 9. registers, last.
    finish(sh, meta, leader_idx, parked, &mut threads)?;
    Ok(threads.iter().map(|(_, inj)| inj.tid).collect())
}

/// Seizes the shell `pid` with all its signals blocked and prepares to
/// inject syscalls into it (the tracer and the shell on CPU `cpu`).
fn take_shell(pid: HostPid, meta: &ProcessImage, cpu: usize) -> io::Result<Shell> {
    ptrace::pin_to_cpu(pid, cpu)?;
    seize_shell(pid).map_err(|e| err(pid, "seizing the shell", e))?;
    // No signal may reach the process while it is half built (timers start
    // firing as soon as they exist): they pend until the saved masks are
    // loaded last. New threads inherit this mask.
    ptrace::set_sigmask(pid, ALL_SIGNALS)?;
    let mem = Mem::open(pid, true)?;
    let shell_maps = procfs::maps(pid)?;
    let insn = crate::kernel::remote::syscall_insn(pid, &shell_maps, &mem)?;
    let inj = Injector::new(pid, insn)?;
    let tramp = trampoline_address(&shell_maps, &meta.vmas)?;
    Ok(Shell {
        pid,
        inj,
        mem,
        tramp,
    })
}

/// Whether the shell should exec the program's executable before it is
/// restored: only where `PR_SET_MM_MAP` cannot set the executable link
/// (it takes CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the process's
/// user namespace, i.e. an unprivileged restart without namespaces), where
/// nothing parked in the shell's memory for the restore would be lost with
/// it (shared memory objects), and where the executable is still there to
/// be read (a deleted one keeps the shell's link).
fn exec_wanted(pid: HostPid, meta: &ProcessImage, parked: &[ParkedMemory]) -> bool {
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_CHECKPOINT_RESTORE: u64 = 1 << 40;
    if !crate::kernel::pid::virt::enabled() || !parked.is_empty() {
        return false;
    }
    let caps = procfs::status(pid)
        .map(|st| procfs::hex_field(&st, "CapEff"))
        .unwrap_or(0);
    if caps & (CAP_SYS_ADMIN | CAP_CHECKPOINT_RESTORE) != 0 {
        return false;
    }
    let exe = &meta.process.exe;
    !exe.is_empty() && !exe.ends_with(" (deleted)") && std::fs::File::open(exe).is_ok()
}

/// Makes the shell exec the program's executable (stopped by us at the
/// exit of `execve`, before the program runs one instruction), so that
/// `/proc/PID/exe` names the program after the restore, as it does with
/// namespaces. Everything exec drops is restored afterwards anyway
/// (memory, signal handlers, timers, the name) except the shell's
/// close-on-exec fds, which are already the program's: their flag is
/// cleared before and set again after. Returns the shell, now in the
/// program's executable (a failed `execve` leaves it as it was).
fn exec_program(mut sh: Shell, meta: &ProcessImage) -> io::Result<Shell> {
    let pid = sh.pid;
    let exe = &meta.process.exe;
    let mut cloexec = Vec::new();
    for fd in procfs::fds(pid)? {
        let (_, flags) = procfs::fdinfo(pid, fd)?;
        if flags & libc::O_CLOEXEC != 0 {
            sh.call(
                libc::SYS_fcntl,
                [fd as u64, libc::F_SETFD as u64, 0, 0, 0, 0],
            )
            .map_err(|e| err(pid, "clearing FD_CLOEXEC before exec", e))?;
            cloexec.push(fd);
        }
    }
    let page = scratch_page(&mut sh, "mapping the exec arguments")?;
    // argv = { exe, NULL } at the page's start, envp = { NULL }, then the path.
    let path = page + 32;
    let mut block = Vec::with_capacity(32 + exe.len() + 1);
    for w in [path, 0, 0, 0] {
        block.extend_from_slice(&w.to_ne_bytes());
    }
    block.extend_from_slice(exe.as_bytes());
    block.push(0);
    if block.len() as u64 > PAGE_SIZE {
        return Err(err(pid, "exec", "executable path too long"));
    }
    sh.mem.write(RemoteAddr(page), &block)?;
    let r = sh
        .inj
        .raw_syscall(libc::SYS_execve, [path, page, page + 16, 0, 0, 0])?;
    if r < 0 {
        let e = io::Error::from_raw_os_error((-r) as i32);
        debug!("pid {pid}: exec of {exe} for /proc/PID/exe failed: {e}");
        sh.call(libc::SYS_munmap, [page, PAGE_SIZE, 0, 0, 0, 0])?;
        set_cloexec(
            &mut sh,
            &cloexec,
            "setting FD_CLOEXEC again after a failed exec",
        )?;
        return Ok(sh);
    }
    // A new address space: a new /proc/PID/mem, a new vdso, a new place
    // for the trampoline.
    let mem = Mem::open(pid, true)?;
    let maps = procfs::maps(pid)?;
    let insn = crate::kernel::remote::syscall_insn(pid, &maps, &mem)?;
    let inj = Injector::new(pid, insn)?;
    let tramp = trampoline_address(&maps, &meta.vmas)?;
    let mut sh = Shell {
        pid,
        inj,
        mem,
        tramp,
    };
    set_cloexec(&mut sh, &cloexec, "setting FD_CLOEXEC again after exec")?;
    // exec named the process after the file: its own name at once (a
    // process mid-restore is not taken for another one of the program).
    if let Some(t) = meta.threads.iter().find(|t| t.vtid == meta.process.vpid) {
        let mut name = t.name.as_bytes().to_vec();
        name.truncate(15);
        name.push(0);
        // A page of the new address space (wiped with the rest of it).
        let page = scratch_page(&mut sh, "a page after exec")?;
        sh.mem.write(RemoteAddr(page), &name)?;
        sh.call(
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, page, 0, 0, 0, 0],
        )
        .map_err(|e| err(pid, "process name after exec", e))?;
    }
    debug!("pid {pid}: the shell execs {exe} (/proc/PID/exe)");
    Ok(sh)
}

/// Unregisters the shell's rseq area (its memory is about to go).
fn unregister_rseq(sh: &mut Shell) -> io::Result<()> {
    let pid = sh.pid;
    let rs = ptrace::get_rseq(pid)?;
    if rs.rseq_abi_pointer != 0 {
        sh.call(
            libc::SYS_rseq,
            [
                rs.rseq_abi_pointer,
                rs.rseq_abi_size as u64,
                RSEQ_FLAG_UNREGISTER,
                rs.signature as u64,
                0,
                0,
            ],
        )
        .map_err(|e| err(pid, "unregistering the shell's rseq", e))?;
    }
    Ok(())
}

/// Puts `FD_CLOEXEC` back on `fds` (cleared for the exec).
fn set_cloexec(sh: &mut Shell, fds: &[i32], what: &str) -> io::Result<()> {
    let pid = sh.pid;
    for &fd in fds {
        sh.call(
            libc::SYS_fcntl,
            [
                fd as u64,
                libc::F_SETFD as u64,
                libc::FD_CLOEXEC as u64,
                0,
                0,
                0,
            ],
        )
        .map_err(|e| err(pid, what, e))?;
    }
    Ok(())
}

/// A fresh private read-write page in the process `sh` drives.
fn scratch_page(sh: &mut Shell, what: &str) -> io::Result<u64> {
    let pid = sh.pid;
    sh.call(
        libc::SYS_mmap,
        [
            0,
            PAGE_SIZE,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )
    .map_err(|e| err(pid, what, e))
}

/// Maps the one-page trampoline (`syscall` plus scratch data) and moves
/// the injection there.
fn map_trampoline(sh: &mut Shell) -> io::Result<()> {
    let (pid, tramp) = (sh.pid, sh.tramp);
    let got = sh
        .call(
            libc::SYS_mmap,
            [
                tramp,
                PAGE_SIZE,
                // Writable too: some injected calls write results back
                // into the scratch area (timer_create's id).
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
        )
        .map_err(|e| err(pid, "mapping the trampoline", e))?;
    if got != tramp {
        return Err(err(
            pid,
            "trampoline",
            format!("mapped at {got:#x}, wanted {tramp:#x}"),
        ));
    }
    sh.mem.write(RemoteAddr(tramp), &[0x0f, 0x05, 0xcc, 0xcc])?;
    sh.inj.insn = RemoteAddr(tramp);
    Ok(())
}

/// Unmaps everything but the trampoline and the parked shared memory
/// objects ([vsyscall] cannot go and stays).
fn wipe_shell(sh: &mut Shell, parked: &[ParkedMemory]) -> io::Result<()> {
    let (pid, tramp) = (sh.pid, sh.tramp);
    let mut keep: Vec<(u64, u64)> = parked
        .iter()
        .map(|o| (o.addr, o.addr + o.size))
        .chain(std::iter::once((tramp, tramp + PAGE_SIZE)))
        .collect();
    keep.sort();
    let mut from = 0u64;
    for (start, end) in keep
        .iter()
        .copied()
        .chain(std::iter::once((TASK_SIZE, TASK_SIZE)))
    {
        if start > from {
            sh.call(libc::SYS_munmap, [from, start - from, 0, 0, 0, 0])
                .map_err(|e| err(pid, &format!("unmapping the shell at {from:#x}"), e))?;
        }
        from = from.max(end);
    }
    Ok(())
}

/// Process-wide state (mm fields, sigactions, timers, foreground group) and
/// the threads other than the leader, created with their tids.
fn process_and_threads<'m>(
    sh: &mut Shell,
    meta: &'m ProcessImage,
    leader_idx: usize,
    fg_pgrp: Option<u32>,
) -> io::Result<Vec<(&'m ThreadState, Injector)>> {
    let pid = sh.pid;
    set_mm(sh, meta)?;
    restore_process_state(sh, meta)?;
    if let Some(pgrp) = fg_pgrp {
        // Every group exists by now (all shells were made first); with all
        // signals blocked the call is allowed from a background group.
        if let Err(e) = set_foreground(sh, pgrp) {
            tracing::warn!("pid {pid}: foreground process group {pgrp} not set: {e}");
        }
    }
    let mut threads: Vec<(&ThreadState, Injector)> = Vec::with_capacity(meta.threads.len());
    for (i, t) in meta.threads.iter().enumerate() {
        if i != leader_idx {
            let inj = create_thread(sh, t)?;
            threads.push((t, inj));
        }
    }
    // Timers may signal a particular thread: create them once all exist.
    restore_posix_timers(sh, &meta.process)?;

    Ok(threads)
}

/// Per-thread kernel state, credentials and capabilities (all are per
/// thread). The ids go first, in every thread, while each still has the
/// shell's capabilities; then the capabilities are lowered to the granted
/// sets. The leader goes last: its name (the process's comm) is what tools
/// look for, so it appears only once the process is whole.
fn thread_kernel_state(
    sh: &mut Shell,
    meta: &ProcessImage,
    leader_idx: usize,
    threads: &mut [(&ThreadState, Injector)],
    granted: &Granted,
) -> io::Result<()> {
    let pid = sh.pid;
    for (_, inj) in threads.iter_mut() {
        apply_ids(inj, &sh.mem, sh.tramp, granted)?;
    }
    apply_ids(&mut sh.inj, &sh.mem, sh.tramp, granted)?;
    // A change of effective or filesystem id resets the mm's dumpable flag
    // to the system default: put back the recorded one (0 or 1; 2 cannot
    // be set by prctl and is what the reset gives anyway).
    if meta.process.dumpable <= 1 {
        sh.call(
            libc::SYS_prctl,
            [
                libc::PR_SET_DUMPABLE as u64,
                meta.process.dumpable as u64,
                0,
                0,
                0,
                0,
            ],
        )
        .map_err(|e| err(pid, "dumpable", e))?;
    }
    let others: Vec<(&ThreadState, HostPid)> =
        threads.iter().map(|(t, inj)| (*t, inj.tid)).collect();
    crate::resources::threads::setup_threads(
        &mut sh.inj,
        &sh.mem,
        &others,
        &granted.caps,
        bounding_to_drop(pid, &granted.caps)?,
    )
    .map_err(|e| err(pid, "thread state", e))?;
    // The setup code ends in `int3`, a forced SIGTRAP that (all signals
    // blocked) resets the disposition to SIG_DFL: set the saved one again.
    let trap = &meta.process.sigactions.get((libc::SIGTRAP - 1) as usize);
    if let Some(sa) = trap.filter(|sa| sa.handler != 0 || sa.flags != 0) {
        let bytes: Vec<u8> = [sa.handler, sa.flags, sa.restorer, sa.mask]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let a = sh.put(&bytes)?;
        sh.call(
            libc::SYS_rt_sigaction,
            [libc::SIGTRAP as u64, a, 0, 8, 0, 0],
        )
        .map_err(|e| err(pid, "sigaction SIGTRAP", e))?;
    }
    restore_caps(&mut sh.inj, &sh.mem, sh.tramp, &granted.caps)?;
    restore_thread_state(&mut sh.inj, &sh.mem, sh.tramp, &meta.threads[leader_idx])?;

    Ok(())
}

/// Pending signals, the application API's restart count, the parked
/// objects and the trampoline dropped, then every thread's registers.
fn finish<'m>(
    mut sh: Shell,
    meta: &'m ProcessImage,
    leader_idx: usize,
    parked: &[ParkedMemory],
    threads: &mut Vec<(&'m ThreadState, Injector)>,
) -> io::Result<()> {
    let (pid, tramp) = (sh.pid, sh.tramp);
    // 8. Pending signals go back into the queues with every signal blocked
    //    (so none is delivered to our injected code); the saved masks are
    //    loaded at the end and whatever they allow is delivered on detach.
    requeue_signals(&mut sh, meta, threads)?;

    // Application API state page (inject): count the restart.
    crate::agent::on_restored(pid, &sh.mem);

    // The parked objects live on in the mappings moved into place.
    for o in parked {
        sh.call(libc::SYS_munmap, [o.addr, o.size, 0, 0, 0, 0])
            .map_err(|e| err(pid, "unmapping parked shared memory", e))?;
    }

    // 9. Registers, last: drop the trampoline and load the saved state.
    sh.call(libc::SYS_munmap, [tramp, PAGE_SIZE, 0, 0, 0, 0])
        .map_err(|e| err(pid, "unmapping the trampoline", e))?;
    threads.push((&meta.threads[leader_idx], sh.inj));
    // 10. Seccomp filters and strict mode, after every other injected call
    //     (through the vDSO's `syscall`: the trampoline is gone).
    let landlock = meta
        .security
        .sandbox
        .as_ref()
        .filter(|s| !s.allow_read.is_empty() || !s.allow_write.is_empty());
    //     Without namespaces, the trap filter for raw pid calls first.
    let (trap, state) = crate::resources::vpid_trap::wanted(pid, meta, &sh.mem);
    if !meta.security.threads.is_empty() || landlock.is_some() || trap.is_some() {
        let maps = procfs::maps(pid)?;
        let insn = crate::kernel::remote::syscall_insn(pid, &maps, &sh.mem)
            .map_err(|e| err(pid, "seccomp", e))?;
        if let Some(info) = landlock {
            crate::resources::sandbox::landlock::restore(pid, info, threads, &sh.mem, insn)?;
        }
        crate::resources::seccomp::restore(
            pid,
            &meta.security,
            trap.as_deref(),
            threads,
            &sh.mem,
            insn,
        )?;
    }
    if let Some(addr) = state {
        crate::agent::set_trap_filter(&sh.mem, addr, trap.is_some())
            .map_err(|e| err(pid, "the state page's trap flag", e))?;
    }
    // Without namespaces, a wait blocked at the checkpoint is made again
    // through the library's trampoline, which translates its result.
    let redo = state
        .map(|a| crate::agent::wait_redo(&sh.mem, a))
        .filter(|&a| a != 0);
    for (t, inj) in threads.iter() {
        load_registers(inj.tid, t, redo.map(|a| (a, &sh.mem)))?;
    }
    Ok(())
}

fn restore_process_state(sh: &mut Shell, meta: &ProcessImage) -> io::Result<()> {
    let pid = sh.pid;
    let p = &meta.process;
    // Without namespaces, the library may take SIGSYS back from the program.
    let sigsys = if crate::kernel::pid::virt::enabled() {
        crate::resources::vpid_trap::hand_sigsys_to_library(pid, meta, &sh.mem)
            .map_err(|e| err(pid, "the state page's SIGSYS action", e))?;
        crate::agent::find_state(pid)
            .map(|addr| crate::resources::vpid_trap::sigsys_action(meta, &sh.mem, addr))
    } else {
        None
    };
    for (i, sa) in p.sigactions.iter().enumerate() {
        let sig = i as u64 + 1;
        if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
            continue;
        }
        let sa = match &sigsys {
            Some(own) if sig == libc::SIGSYS as u64 => own,
            _ => sa,
        };
        if sa.handler == 0 && sa.flags == 0 && sa.mask == 0 {
            continue;
        }
        let bytes: Vec<u8> = [sa.handler, sa.flags, sa.restorer, sa.mask]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let a = sh.put(&bytes)?;
        sh.call(libc::SYS_rt_sigaction, [sig, a, 0, 8, 0, 0])
            .map_err(|e| err(pid, &format!("sigaction {sig}"), e))?;
    }
    for (which, &(interval, value)) in p.itimers.iter().enumerate() {
        if value == 0 && interval == 0 {
            continue;
        }
        // While its signal is pending, an expired periodic timer is not
        // re-armed yet and reads as 0 remaining: arm it for one period.
        let value = if value == 0 { interval } else { value };
        let w = [
            interval / 1_000_000,
            interval % 1_000_000,
            value / 1_000_000,
            value % 1_000_000,
        ];
        let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        let a = sh.put(&bytes)?;
        sh.call(libc::SYS_setitimer, [which as u64, a, 0, 0, 0, 0])
            .map_err(|e| err(pid, "setitimer", e))?;
    }
    if p.personality != 0 {
        sh.call(libc::SYS_personality, [p.personality as u64, 0, 0, 0, 0, 0])
            .map_err(|e| err(pid, "personality", e))?;
    }
    if p.child_subreaper {
        sh.call(
            libc::SYS_prctl,
            [libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0, 0],
        )
        .map_err(|e| err(pid, "child subreaper", e))?;
    }
    if p.dumpable != 1 {
        sh.call(
            libc::SYS_prctl,
            [libc::PR_SET_DUMPABLE as u64, p.dumpable as u64, 0, 0, 0, 0],
        )
        .map_err(|e| err(pid, "dumpable", e))?;
    }
    if p.no_new_privs {
        sh.call(
            libc::SYS_prctl,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        )
        .map_err(|e| err(pid, "no_new_privs", e))?;
    }
    Ok(())
}

/// `tcsetpgrp` on the process's controlling terminal (`/dev/tty`), by
/// syscalls injected into it.
fn set_foreground(sh: &mut Shell, pgrp: u32) -> io::Result<()> {
    let path = sh.put_cstr("/dev/tty")?;
    let fd = sh.call(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path,
            (libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    )?;
    let arg = sh.put(&(pgrp as i32).to_ne_bytes())?;
    let r = sh.call(libc::SYS_ioctl, [fd, libc::TIOCSPGRP, arg, 0, 0, 0]);
    sh.call(libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    r.map(drop)
}
