//! Seccomp filters and strict mode of the program's threads, and the
//! computation's `--sandbox` filter: capture and restore side by side.
//!
//! **Capture.** The kernel tells each thread's mode and filter count
//! (`/proc/PID/task/TID/status`), but hands the filters themselves only to
//! a tracer privileged in the initial user namespace. So the inject
//! library logs every filter the program installs through libc
//! (`inject/src/seclog.rs`, the `[anon:dmtcp_seclog]` mapping), with the
//! installing thread and the flags, and this module rebuilds the filter
//! tree from the log: a filter extends the installing thread's chain;
//! `SECCOMP_FILTER_FLAG_TSYNC` gives every thread the caller's chain; a
//! thread that never installed one inherited its chain at clone and is
//! matched by its kernel filter count (refused when two chains of that
//! length exist). The computation's sandbox filter, installed by
//! `dmtcp-nsinit` before the program's exec, is the root of every chain.
//! Every thread's count must match what was rebuilt: a filter installed by
//! a raw `syscall` instruction or inherited across an `exec` is not in the
//! log and the checkpoint is refused, naming the thread. So is a filter
//! with its own user-notification listener, and a process that restricted
//! itself with Landlock (its rules cannot be read back). As root the
//! kernel is asked instead (`PTRACE_SECCOMP_GET_FILTER`, [`kernel_chain`]):
//! those filters are the truth, the log only adds their flags.
//!
//! Unless the tracer suspends the program's filters (root:
//! `PTRACE_O_SUSPEND_SECCOMP`), each thread gets its chain
//! ([`crate::kernel::seccomp::Chain`]) so every call we inject is checked
//! against the filters first and one they would not allow is not made.
//!
//! **Restore** ([`restore`]): last, after every other injected call and
//! with the trampoline gone, each filter is installed in the threads whose
//! chain holds it, parents first (once with TSYNC when every thread shares
//! it and the program used TSYNC, so later TSYNC calls of the program keep
//! working), then strict mode. The filter programs are copied into a
//! scratch mapping made before the first filter is in place, unmapped
//! afterwards by a thread whose filters allow it (left, as inert data,
//! when none does); the instruction used is one in the vDSO.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, OnceLock};

use dmtcp_image::{SandboxInfo, SeccompFilter, Security, ThreadSeccomp, ThreadState};

use crate::agent::abi;
use crate::kernel::freeze::FrozenProcess;
use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs::{MapEntry, Mem};
use crate::kernel::ptrace;
use crate::kernel::remote::Injector;
use crate::kernel::seccomp::{self as kseccomp, Chain, ThreadMode, FLAG_NEW_LISTENER, FLAG_TSYNC};

/// The computation's sandbox: what `dmtcp-run --sandbox` asked for and its
/// BPF program (set once by the launch or restart role).
static SANDBOX: OnceLock<(SandboxInfo, Vec<u8>)> = OnceLock::new();

/// Records the computation's sandbox (launch, or restart from images that
/// have one): later checkpoints put it at the root of every chain.
pub fn set_sandbox(info: SandboxInfo, prog: Vec<u8>) {
    let _ = SANDBOX.set((info, prog));
}

/// The sandbox of a set of images: its description and filter program
/// (empty: `--net=none` without a seccomp policy).
pub fn sandbox_of(sec: &Security) -> Option<(SandboxInfo, Vec<u8>)> {
    let info = sec.sandbox.clone()?;
    let prog = sec
        .filters
        .iter()
        .find(|f| f.sandbox)
        .map(|f| f.prog.clone())
        .unwrap_or_default();
    Some((info, prog))
}

/// Whether the computation runs with `--net=none`.
pub fn net_none() -> bool {
    SANDBOX.get().is_some_and(|(i, _)| i.net_none)
}

/// One logged call.
struct Entry {
    kind: u32,
    flags: u32,
    pid: u32,
    tid: u32,
    data: Vec<u8>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// The log's mapping: named, or (kernels without VMA names) the private
/// anonymous read-write VMA of the log's size that starts with its magic.
fn find_log<'m>(maps: &'m [MapEntry], mem: &Mem) -> Option<&'m MapEntry> {
    if let Some(m) = maps.iter().find(|m| m.name == abi::SECLOG_MAPS_NAME) {
        return Some(m);
    }
    maps.iter().find(|m| {
        let mut b = [0u8; 8];
        m.end - m.start == abi::SECLOG_MAP_LEN as u64
            && m.read
            && m.write
            && !m.shared
            && m.inode == 0
            && m.name.is_empty()
            && mem.read(RemoteAddr(m.start), &mut b).is_ok()
            && u64::from_le_bytes(b) == abi::SECLOG_MAGIC
    })
}

/// The library's log of the process, if it made one.
fn read_log(maps: &[MapEntry], mem: &Mem) -> io::Result<Vec<Entry>> {
    let Some(m) = find_log(maps, mem) else {
        return Ok(Vec::new());
    };
    let mut hdr = [0u8; abi::SECLOG_HDR];
    mem.read(RemoteAddr(m.start), &mut hdr)?;
    if u64_at(&hdr, 0) != abi::SECLOG_MAGIC {
        return Err(io::Error::other("the seccomp log has no magic"));
    }
    if u64_at(&hdr, 16) & abi::SECLOG_OVERFLOW != 0 {
        return Err(io::Error::other(
            "the program installed more seccomp filters than the log holds",
        ));
    }
    let used = u64_at(&hdr, 8) as usize;
    if used > abi::SECLOG_MAP_LEN - abi::SECLOG_HDR {
        return Err(io::Error::other("the seccomp log is corrupt"));
    }
    let mut b = vec![0u8; used];
    mem.read(RemoteAddr(m.start + abi::SECLOG_HDR as u64), &mut b)?;
    let mut out = Vec::new();
    let mut at = 0;
    while at + abi::SECLOG_ENTRY_HDR <= used {
        let len = u32_at(&b, at + 16) as usize;
        let data_at = at + abi::SECLOG_ENTRY_HDR;
        if data_at + len > used {
            return Err(io::Error::other("the seccomp log is corrupt"));
        }
        out.push(Entry {
            kind: u32_at(&b, at),
            flags: u32_at(&b, at + 4),
            pid: u32_at(&b, at + 8),
            tid: u32_at(&b, at + 12),
            data: b[data_at..data_at + len].to_vec(),
        });
        at = data_at + len.next_multiple_of(8);
    }
    Ok(out)
}

/// Captures the seccomp state of the frozen process and, unless the
/// program's filters are suspended for us, arms each thread's check.
pub fn capture(fp: &mut FrozenProcess, maps: &[MapEntry], mem: &Mem) -> io::Result<Security> {
    let pid = fp.pid;
    let vpid = fp.vpid.0 as u32;
    let sandbox = SANDBOX.get();
    // Fast path (one /proc read, not one per thread): no sandbox, no log
    // and the leader without filters. A filter installed without libc by
    // another thread alone, without TSYNC, is then not seen.
    if sandbox.is_none() && find_log(maps, mem).is_none() {
        if let Some(leader) = fp.threads.first() {
            if kseccomp::thread_mode(pid, leader.tid)?.mode == 0 {
                return Ok(Security::default());
            }
        }
    }
    let mut modes: Vec<ThreadMode> = fp
        .threads
        .iter()
        .map(|t| kseccomp::thread_mode(pid, t.tid))
        .collect::<io::Result<_>>()?;
    // Without namespaces after a restart, the root filter of every chain
    // is ours (`resources::vpid_trap`): not the program's, not imaged.
    let trap_skip = u32::from(crate::resources::vpid_trap::present(pid, maps, mem));
    if trap_skip == 1 {
        for (t, m) in fp.threads.iter().zip(modes.iter_mut()) {
            if m.mode != 2 || m.filters == 0 {
                return Err(io::Error::other(format!(
                    "thread {}: the raw pid trap filter is missing (seccomp mode {}, {} filters)",
                    m.vtid.unwrap_or(0),
                    m.mode,
                    m.filters
                )));
            }
            if ptrace::seccomp_suspended() {
                let root = kseccomp::get_filter(t.tid, 0)?;
                if !crate::resources::vpid_trap::is_trap_filter(&root) {
                    return Err(io::Error::other(format!(
                        "thread {}: the root seccomp filter is not the raw pid trap",
                        m.vtid.unwrap_or(0)
                    )));
                }
            }
            m.filters -= 1;
            if m.filters == 0 {
                m.mode = 0;
            }
        }
    }
    if modes.iter().all(|m| m.mode == 0) && find_log(maps, mem).is_none() {
        return Ok(Security {
            sandbox: sandbox.map(|s| s.0.clone()),
            ..Default::default()
        });
    }
    let log = read_log(maps, mem)?;
    if let Some(e) = log.iter().find(|e| e.kind == abi::SECLOG_LANDLOCK) {
        return Err(io::Error::other(format!(
            "thread {} restricted itself with Landlock (landlock_restrict_self): its rules \
             cannot be restored, so the checkpoint is refused rather than restart it unconfined",
            e.tid
        )));
    }
    // The filter tree: nodes in installation order, chains as node lists.
    let mut filters: Vec<SeccompFilter> = Vec::new();
    let mut base: Vec<u32> = Vec::new();
    if let Some((_, prog)) = sandbox.filter(|(_, p)| !p.is_empty()) {
        filters.push(SeccompFilter {
            prog: prog.clone(),
            flags: FLAG_TSYNC,
            sandbox: true,
        });
        base.push(0);
    }
    let mut known: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    let mut inherited = base.clone();
    let mut all_chains: Vec<Vec<u32>> = vec![base.clone()];
    let mut strict_logged: Vec<(u32, u32)> = Vec::new();
    for e in &log {
        match e.kind {
            abi::SECLOG_FILTER => {
                let parent = known
                    .get(&(e.pid, e.tid))
                    .cloned()
                    .unwrap_or_else(|| inherited.clone());
                let mut chain = parent;
                chain.push(filters.len() as u32);
                filters.push(SeccompFilter {
                    prog: e.data.clone(),
                    flags: e.flags,
                    sandbox: false,
                });
                if e.flags & FLAG_TSYNC != 0 {
                    for c in known.values_mut() {
                        *c = chain.clone();
                    }
                    inherited = chain.clone();
                }
                known.insert((e.pid, e.tid), chain.clone());
                all_chains.push(chain);
            }
            abi::SECLOG_STRICT => strict_logged.push((e.pid, e.tid)),
            _ => {}
        }
    }
    all_chains.sort();
    all_chains.dedup();
    // Privileged, the kernel hands every thread's filters over: they are
    // the truth (also those installed by a raw syscall or before an exec);
    // the log only adds the flags (TSYNC, listener) of the filters it saw.
    let from_kernel = ptrace::seccomp_suspended();
    let mut kfilters: Vec<SeccompFilter> = Vec::new();
    let mut knodes: KernelNodes = HashMap::new();
    let mut threads = Vec::new();
    for (t, m) in fp.threads.iter().zip(&modes) {
        let vtid = m.vtid.unwrap_or(0) as u32;
        let strict = m.mode == 1;
        let chain = if m.mode == 2 && from_kernel {
            kernel_chain(
                t.tid,
                u64::from(trap_skip),
                m.filters,
                (&mut kfilters, &mut knodes),
                &filters,
                sandbox,
            )?
        } else if m.mode == 2 {
            match known.get(&(vpid, vtid)) {
                Some(c) if c.len() == m.filters as usize => c.clone(),
                _ => {
                    let fits: Vec<&Vec<u32>> = all_chains
                        .iter()
                        .filter(|c| c.len() == m.filters as usize)
                        .collect();
                    match fits.as_slice() {
                        [one] => (*one).clone(),
                        [] => {
                            return Err(io::Error::other(format!(
                                "thread {vtid} runs {} seccomp filters and {} were recorded: some \
                                 were installed by a raw syscall instruction or before an exec, \
                                 so they cannot be restored and the checkpoint is refused",
                                m.filters,
                                all_chains.iter().map(Vec::len).max().unwrap_or(0)
                            )))
                        }
                        _ => {
                            return Err(io::Error::other(format!(
                                "thread {vtid}: cannot tell which of {} chains of {} seccomp \
                                 filters it runs; checkpoint refused",
                                fits.len(),
                                m.filters
                            )))
                        }
                    }
                }
            }
        } else {
            Vec::new()
        };
        if m.mode == 0 && m.filters != 0 {
            return Err(io::Error::other(format!(
                "thread {vtid}: unexpected seccomp state"
            )));
        }
        let nodes = if from_kernel { &kfilters } else { &filters };
        if let Some(&i) = chain
            .iter()
            .find(|&&i| nodes[i as usize].flags & FLAG_NEW_LISTENER != 0)
        {
            return Err(io::Error::other(format!(
                "thread {vtid} runs a seccomp filter (number {} of its {}) with its own \
                 user-notification listener; a listener cannot be restored yet, so the \
                 checkpoint is refused",
                chain.iter().position(|&x| x == i).unwrap_or(0) + 1,
                chain.len()
            )));
        }
        threads.push(ThreadSeccomp {
            vtid,
            chain,
            strict,
        });
    }
    if from_kernel {
        filters = kfilters;
    }
    // Keep only the filters some thread runs, renumbered in order.
    let mut used: Vec<u32> = threads.iter().flat_map(|t| t.chain.clone()).collect();
    used.sort();
    used.dedup();
    let renumber: HashMap<u32, u32> = used
        .iter()
        .enumerate()
        .map(|(n, &o)| (o, n as u32))
        .collect();
    for t in &mut threads {
        for i in &mut t.chain {
            *i = renumber[i];
        }
    }
    let filters: Vec<SeccompFilter> = used.iter().map(|&o| filters[o as usize].clone()).collect();
    // Our injected calls go through the program's filters unless suspended.
    if !ptrace::seccomp_suspended() {
        let progs: Vec<Arc<Vec<u8>>> = filters.iter().map(|f| Arc::new(f.prog.clone())).collect();
        for (ft, ts) in fp.threads.iter_mut().zip(&threads) {
            if ts.strict || !ts.chain.is_empty() {
                ft.seccomp = Some(Arc::new(Chain {
                    progs: ts
                        .chain
                        .iter()
                        .map(|&i| progs[i as usize].clone())
                        .collect(),
                    strict: ts.strict,
                }));
            }
        }
    }
    Ok(Security {
        filters,
        threads,
        sandbox: sandbox.map(|s| s.0.clone()),
    })
}

/// Filter nodes read from the kernel, by (parent, program).
type KernelNodes = HashMap<(Option<u32>, Vec<u8>), u32>;

/// Thread `tid`'s `n` filters after its `skip` oldest (the raw pid trap,
/// `resources::vpid_trap`) through `PTRACE_SECCOMP_GET_FILTER`, oldest
/// first, as nodes of `kfilters` (a filter with the same parent and the same
/// program is the same node); flags from the `logged` filter with the same
/// program, the sandbox recognised at the root.
fn kernel_chain(
    tid: HostPid,
    skip: u64,
    n: u32,
    (kfilters, knodes): (&mut Vec<SeccompFilter>, &mut KernelNodes),
    logged: &[SeccompFilter],
    sandbox: Option<&(SandboxInfo, Vec<u8>)>,
) -> io::Result<Vec<u32>> {
    let mut chain = Vec::new();
    let mut parent = None;
    for i in skip..skip + u64::from(n) {
        let prog = kseccomp::get_filter(tid, i)?;
        let key = (parent, prog);
        let node = match knodes.get(&key) {
            Some(&node) => node,
            None => {
                let sandbox_root =
                    parent.is_none() && sandbox.is_some_and(|(_, p)| !p.is_empty() && *p == key.1);
                let flags = if sandbox_root {
                    FLAG_TSYNC
                } else {
                    logged
                        .iter()
                        .find(|f| !f.sandbox && f.prog == key.1)
                        .map_or(0, |f| f.flags)
                };
                kfilters.push(SeccompFilter {
                    prog: key.1.clone(),
                    flags,
                    sandbox: sandbox_root,
                });
                let node = kfilters.len() as u32 - 1;
                knodes.insert(key, node);
                node
            }
        };
        chain.push(node);
        parent = Some(node);
    }
    Ok(chain)
}

/// The calls every thread makes in the capture's per-thread query code
/// (`resources::threads`), checked before it runs.
pub fn check_query_code(fp: &FrozenProcess) -> io::Result<()> {
    let calls: [(i64, u64); 5] = [
        (libc::SYS_prctl, libc::PR_GET_TID_ADDRESS as u64),
        (libc::SYS_sigaltstack, 0),
        (libc::SYS_gettid, 0),
        (libc::SYS_prctl, libc::PR_GET_NAME as u64),
        (libc::SYS_get_robust_list, 0),
    ];
    for t in &fp.threads {
        let Some(chain) = &t.seccomp else { continue };
        for (nr, a0) in calls {
            if let Err(kseccomp::Verdict::Refused(what)) = chain.verdict(nr, 0, [a0, 0, 0, 0, 0, 0])
            {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "tid {}: the program's own seccomp filter would {what} syscall {nr}, \
                         which the checkpoint must run in every thread: checkpoint refused \
                         (a root dmtcp-run suspends the program's filters while it works)",
                        t.tid
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether the leader's own filters let every call of the process-wide
/// query code (`resources/threads.rs`, `LEADER_QUERY_CODE`) through
/// unchanged from `ip`; if not, the capture injects them one by one, each
/// checked on its own.
pub fn leader_query_allowed(fp: &FrozenProcess, ip: u64) -> bool {
    fp.threads[0].seccomp.as_ref().is_none_or(|chain| {
        crate::resources::threads::leader_query_calls()
            .into_iter()
            .all(|(nr, args)| chain.verdict(nr, ip, args).is_ok())
    })
}

/// Whether every thread's own filters let through, unchanged, the calls
/// the rescue ending of the per-thread queries makes (see
/// `resources/threads.rs`, `QUERY_END_RESCUE`): without that the queries
/// end with `int3` as before (no rescue if the supervisor dies there).
pub fn rescue_calls_allowed(fp: &FrozenProcess) -> bool {
    let calls: [(i64, u64); 5] = [
        (libc::SYS_rt_sigprocmask, libc::SIG_UNBLOCK as u64),
        (libc::SYS_rt_sigprocmask, libc::SIG_SETMASK as u64),
        (libc::SYS_getpid, 0),
        (libc::SYS_gettid, 0),
        (libc::SYS_tgkill, 0),
    ];
    fp.threads.iter().all(|t| {
        t.seccomp.as_ref().is_none_or(|chain| {
            calls
                .iter()
                .all(|&(nr, a0)| chain.verdict(nr, 0, [a0, 0, 0, 0, 0, 0]).is_ok())
        })
    })
}

/// Installs the filter whose `struct sock_fprog` is at `at` in one thread
/// (with `tsync`: in all that share its current chain) through an injected
/// `seccomp()` call.
fn install(
    inj: &mut Injector,
    t: &ThreadState,
    f: &SeccompFilter,
    at: u64,
    tsync: bool,
) -> io::Result<()> {
    let mut flags = f.flags & !(FLAG_TSYNC | FLAG_NEW_LISTENER | kseccomp::FLAG_TSYNC_ESRCH);
    if tsync {
        flags |= FLAG_TSYNC;
    }
    match inj.raw_syscall(
        libc::SYS_seccomp,
        [kseccomp::SECCOMP_SET_MODE_FILTER, flags as u64, at, 0, 0, 0],
    )? {
        0 => Ok(()),
        e if e < 0 => Err(io::Error::other(format!(
            "thread {}: seccomp filter: {}",
            t.vtid,
            io::Error::from_raw_os_error(-e as i32)
        ))),
        tid => Err(io::Error::other(format!(
            "thread {}: seccomp TSYNC failed on thread {tid}",
            t.vtid
        ))),
    }
}

/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`.
const FLAG_SPEC_ALLOW: u32 = 4;

/// Installs the trap filter for raw pid calls (`resources::vpid_trap`)
/// through `t` with TSYNC; without the privilege to filter (EACCES) after
/// setting `no_new_privs`, which TSYNC gives every thread.
fn install_trap(pid: HostPid, (t, inj): &mut (&ThreadState, Injector), at: u64) -> io::Result<()> {
    // SPEC_ALLOW: the trap is no sandbox; it must not turn on the
    // speculative store bypass mitigation for the program (kernels booted
    // with spec_store_bypass_disable=seccomp).
    let mut args = [
        kseccomp::SECCOMP_SET_MODE_FILTER,
        (FLAG_TSYNC | FLAG_SPEC_ALLOW) as u64,
        at,
        0,
        0,
        0,
    ];
    let mut r = inj.raw_syscall(libc::SYS_seccomp, args)?;
    if r == -i64::from(libc::EINVAL) {
        args[1] = FLAG_TSYNC as u64;
        r = inj.raw_syscall(libc::SYS_seccomp, args)?;
    }
    if r == -i64::from(libc::EACCES) {
        tracing::debug!("pid {pid}: no_new_privs set for the raw pid trap");
        inj.syscall(
            libc::SYS_prctl,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        )?;
        r = inj.raw_syscall(libc::SYS_seccomp, args)?;
    }
    match r {
        0 => Ok(()),
        e if e < 0 => Err(io::Error::other(format!(
            "thread {}: the raw pid trap filter: {}",
            t.vtid,
            io::Error::from_raw_os_error(-e as i32)
        ))),
        tid => Err(io::Error::other(format!(
            "thread {}: the raw pid trap filter: TSYNC failed on thread {tid}",
            t.vtid
        ))),
    }
}

/// Puts back every thread's filters and strict mode. `threads` are all
/// the process's threads, stopped, with nothing more to inject after this;
/// `insn` is a `syscall` instruction of the restored process (the vDSO's).
/// `trap` (without namespaces, `resources::vpid_trap`) goes in first, with
/// TSYNC, at the root of every thread's chain.
pub fn restore(
    pid: HostPid,
    sec: &Security,
    trap: Option<&[u8]>,
    threads: &mut [(&ThreadState, Injector)],
    mem: &Mem,
    insn: RemoteAddr,
) -> io::Result<()> {
    if trap.is_none() && sec.threads.iter().all(|t| t.chain.is_empty() && !t.strict) {
        return Ok(());
    }
    let err = |e: io::Error| crate::resources::restore_err(pid, "seccomp", e);
    let want: HashMap<u32, &ThreadSeccomp> = sec.threads.iter().map(|t| (t.vtid, t)).collect();
    for (_, inj) in threads.iter_mut() {
        inj.insn = insn;
        inj.seccomp = None;
    }
    // Every filter's `struct sock_fprog` and program, in one scratch
    // mapping made before any filter is in place.
    let mut blob = Vec::new();
    let mut offsets = Vec::new();
    let trap = trap.map(|prog| SeccompFilter {
        prog: prog.to_vec(),
        flags: FLAG_TSYNC,
        sandbox: false,
    });
    for f in trap.iter().chain(&sec.filters) {
        offsets.push(blob.len() as u64);
        blob.extend_from_slice(&((f.prog.len() / 8) as u64).to_ne_bytes());
        blob.extend_from_slice(&0u64.to_ne_bytes());
        blob.extend_from_slice(&f.prog);
        blob.resize(blob.len().next_multiple_of(16), 0);
    }
    let len = (blob.len() as u64).next_multiple_of(dmtcp_image::PAGE_SIZE);
    let last = threads.len() - 1;
    let area = if len == 0 {
        0
    } else {
        threads[last]
            .1
            .syscall(
                libc::SYS_mmap,
                [
                    0,
                    len,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                    u64::MAX,
                    0,
                ],
            )
            .map_err(err)?
    };
    for &o in &offsets {
        blob[o as usize + 8..o as usize + 16].copy_from_slice(&(area + o + 16).to_ne_bytes());
    }
    if len != 0 {
        mem.write(RemoteAddr(area), &blob).map_err(err)?;
    }
    let offsets = match &trap {
        Some(_) => {
            install_trap(pid, &mut threads[0], area + offsets[0]).map_err(err)?;
            offsets[1..].to_vec()
        }
        None => offsets,
    };
    // What each thread has so far (indices into sec.filters).
    let mut have: Vec<Vec<u32>> = vec![Vec::new(); threads.len()];
    let chain_of = |t: &ThreadState| {
        want.get(&t.vtid)
            .map(|w| w.chain.clone())
            .unwrap_or_default()
    };
    for (n, f) in sec.filters.iter().enumerate() {
        let at = area + offsets[n];
        let n = n as u32;
        let holders: Vec<usize> = (0..threads.len())
            .filter(|&i| chain_of(threads[i].0).contains(&n))
            .collect();
        if holders.is_empty() {
            continue;
        }
        let shared = holders.len() == threads.len() && have.iter().all(|h| *h == have[0]);
        if f.flags & FLAG_TSYNC != 0 && shared {
            let (t, inj) = &mut threads[holders[0]];
            install(inj, t, f, at, true).map_err(err)?;
            for h in have.iter_mut() {
                h.push(n);
            }
        } else {
            for &i in &holders {
                let (t, inj) = &mut threads[i];
                install(inj, t, f, at, false).map_err(err)?;
                have[i].push(n);
            }
        }
    }
    // The scratch goes again, through a thread whose filters allow it (all
    // do while they are suspended for us); else it stays, harmless data.
    let progs: Vec<Arc<Vec<u8>>> = sec
        .filters
        .iter()
        .map(|f| Arc::new(f.prog.clone()))
        .collect();
    let unmapper = (0..threads.len()).filter(|_| len != 0).find(|&i| {
        ptrace::seccomp_suspended()
            || Chain {
                progs: have[i].iter().map(|&n| progs[n as usize].clone()).collect(),
                strict: false,
            }
            .verdict(libc::SYS_munmap, insn.0 + 2, [area, len, 0, 0, 0, 0])
            .is_ok()
    });
    match unmapper {
        Some(i) => {
            threads[i]
                .1
                .syscall(libc::SYS_munmap, [area, len, 0, 0, 0, 0])
                .map_err(err)?;
        }
        None if len == 0 => {}
        None => tracing::debug!(
            "pid {pid}: the program's filters deny munmap: {len} bytes of filter copies stay at {area:#x}"
        ),
    }
    for (i, (t, inj)) in threads.iter_mut().enumerate() {
        if want.get(&t.vtid).is_some_and(|w| w.strict) {
            inj.syscall(
                libc::SYS_seccomp,
                [kseccomp::SECCOMP_SET_MODE_STRICT, 0, 0, 0, 0, 0],
            )
            .map_err(err)?;
        } else if have[i] != chain_of(t) {
            return Err(err(io::Error::other(format!(
                "thread {}: seccomp filters restored out of order",
                t.vtid
            ))));
        }
    }
    Ok(())
}
