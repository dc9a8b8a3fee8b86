//! Signals and POSIX timers: timers read from `/proc/PID/timers` at
//! checkpoint (times from an injected `timer_gettime`) and created again
//! with their ids at restart; pending signals re-queued with
//! `rt_sigqueueinfo`/`rt_tgsigqueueinfo` under the fully blocked mask.
//! (Dispositions and per-thread masks travel with the process and thread
//! state.)

use std::io;

use dmtcp_image::{PosixTimer, ProcessImage};

use crate::kernel::freeze::FrozenProcess;
use crate::kernel::pid::virt;
use crate::kernel::remote::Shell;
use crate::resources::restore_err as err;

/// `/proc/PID/timers`: id, clock, notification and signal of each timer
/// (times come from an injected `timer_gettime`).
pub(crate) fn parse_timers(fp: &FrozenProcess) -> io::Result<Vec<PosixTimer>> {
    let text = match std::fs::read_to_string(format!("/proc/{}/timers", fp.pid.0)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let (k, v) = match line.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => continue,
        };
        match k {
            "ID" => out.push(PosixTimer {
                id: v
                    .parse()
                    .map_err(|_| io::Error::other(format!("timers: {line}")))?,
                clock: 0,
                notify: libc::SIGEV_SIGNAL,
                signo: 0,
                value: 0,
                thread: 0,
                value_ns: 0,
                interval_ns: 0,
            }),
            "signal" => {
                if let (Some(t), Some((sig, val))) = (out.last_mut(), v.split_once('/')) {
                    t.signo = sig.parse().unwrap_or(0);
                    t.value = u64::from_str_radix(val, 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let Some(t) = out.last_mut() {
                    // "signal/pid.N", "none/pid.N", or for SIGEV_THREAD_ID
                    // (glibc's SIGEV_THREAD helper threads among others)
                    // "signal/tid.N": the kind is printed without the
                    // THREAD_ID bit, the target says it.
                    let (kind, target) = v.split_once('/').unwrap_or((v, ""));
                    t.notify = match kind {
                        "none" => libc::SIGEV_NONE,
                        _ if target.starts_with("tid.") => libc::SIGEV_THREAD_ID,
                        "thread" => libc::SIGEV_THREAD_ID,
                        _ => libc::SIGEV_SIGNAL,
                    };
                    if t.notify == libc::SIGEV_THREAD_ID {
                        let host: i32 = target
                            .rsplit('.')
                            .next()
                            .and_then(|x| x.parse().ok())
                            .unwrap_or(0);
                        t.thread = fp
                            .threads
                            .iter()
                            .find(|th| th.tid.0 == host)
                            .map(|th| th.vtid as u32)
                            .unwrap_or(0);
                    }
                }
            }
            "ClockID" => {
                if let Some(t) = out.last_mut() {
                    t.clock = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `prctl(PR_TIMER_CREATE_RESTORE_IDS)` (Linux 6.15+): `timer_create`
/// then takes the id it is given.
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;

pub(crate) fn restore_posix_timers(sh: &mut Shell, p: &dmtcp_image::ProcessInfo) -> io::Result<()> {
    if p.posix_timers.is_empty() {
        return Ok(());
    }
    let pid = sh.pid;
    sh.call(
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
    )
    .map_err(|e| {
        err(
            pid,
            "prctl(PR_TIMER_CREATE_RESTORE_IDS) (kernel 6.15+ needed for POSIX timers)",
            e,
        )
    })?;
    let mut timers = p.posix_timers.clone();
    timers.sort_by_key(|t| t.id);
    for t in &timers {
        // timer id (int) at +0, struct sigevent (64 bytes) at +8:
        // sigev_value, sigev_signo, sigev_notify, then the thread id.
        let mut b = vec![0u8; 8 + 64];
        b[0..4].copy_from_slice(&t.id.to_ne_bytes());
        b[8..16].copy_from_slice(&t.value.to_ne_bytes());
        b[16..20].copy_from_slice(&t.signo.to_ne_bytes());
        b[20..24].copy_from_slice(&t.notify.to_ne_bytes());
        b[24..28].copy_from_slice(&(t.thread as i32).to_ne_bytes());
        let a = sh.put(&b)?;
        sh.call(libc::SYS_timer_create, [t.clock as u64, a + 8, a, 0, 0, 0])
            .map_err(|e| err(pid, &format!("timer_create (id {})", t.id), e))?;
        // An expired periodic timer whose signal is still pending reads as
        // 0 remaining: it is armed all the same.
        let value_ns = if t.value_ns == 0 && t.interval_ns > 0 {
            t.interval_ns
        } else {
            t.value_ns
        };
        if value_ns > 0 {
            let w = [
                t.interval_ns / 1_000_000_000,
                t.interval_ns % 1_000_000_000,
                value_ns / 1_000_000_000,
                value_ns % 1_000_000_000,
            ];
            let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
            let a = sh.put(&bytes)?;
            sh.call(libc::SYS_timer_settime, [t.id as u64, 0, a, 0, 0, 0])
                .map_err(|e| err(pid, &format!("timer_settime (id {})", t.id), e))?;
        }
    }
    sh.call(
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// Whether a siginfo (raw bytes) of its signal carries a sender's pid in
/// `si_pid` (offset 16): sent by kill, sigqueue, tgkill, mq_notify, or a
/// child's state change.
fn carries_pid(info: &[u8]) -> bool {
    if info.len() < 20 {
        return false;
    }
    let int = |o: usize| i32::from_ne_bytes(info[o..o + 4].try_into().expect("4 bytes"));
    let (signo, code) = (int(0), int(8));
    matches!(code, 0 | -1 | -3 | -6) || (signo == libc::SIGCHLD && code > 0)
}

/// Without namespaces, the senders' pids in saved siginfos as the program
/// sees them (`conv`: [`virt::of_real`] at capture, [`virt::real_of`]
/// at restore); nothing in the namespace mode.
pub(crate) fn convert_senders(infos: &mut [Vec<u8>], conv: fn(i32) -> i32) {
    if !virt::enabled() {
        return;
    }
    for info in infos.iter_mut().filter(|i| carries_pid(i)) {
        let p = i32::from_ne_bytes(info[16..20].try_into().expect("4 bytes"));
        info[16..20].copy_from_slice(&conv(p).to_ne_bytes());
    }
}

/// Puts the saved pending signals back: process-wide ones from the leader,
/// each thread's own from that thread (`threads`: the threads other than
/// the leader with their injectors).
pub(crate) fn requeue_signals(
    sh: &mut Shell,
    meta: &ProcessImage,
    threads: &mut [(&dmtcp_image::ThreadState, crate::kernel::remote::Injector)],
) -> io::Result<()> {
    // The kernel's ids of the targets (without namespaces, not the
    // virtual ones the image records) and of the senders.
    let real = virt::enabled();
    let vpid = if real {
        sh.pid.0 as u64
    } else {
        meta.process.vpid as u64
    };
    let any = !meta.process.shared_pending.is_empty()
        || meta.threads.iter().any(|t| !t.pending.is_empty());
    if !any {
        return Ok(());
    }
    let signo = |info: &[u8]| i32::from_ne_bytes(info[0..4].try_into().expect("4 bytes")) as u64;
    let mut shared = meta.process.shared_pending.clone();
    convert_senders(&mut shared, virt::real_of);
    for info in &shared {
        let a = sh.put(info)?;
        sh.call(libc::SYS_rt_sigqueueinfo, [vpid, signo(info), a, 0, 0, 0])
            .map_err(|e| err(sh.pid, "re-queueing a process signal", e))?;
    }
    // Each from its own thread: the kernel lets a thread queue a signal
    // with a user si_code (SI_USER, SI_TKILL from pthread_kill, ...) only
    // to itself, judged by the caller's tid == the target tid (from the
    // leader, a signal another thread had pending failed with EPERM).
    for t in &meta.threads {
        let mut pending = t.pending.clone();
        convert_senders(&mut pending, virt::real_of);
        for info in &pending {
            let a = sh.put(info)?;
            let r = match threads.iter_mut().find(|(s, _)| s.vtid == t.vtid) {
                Some((_, inj)) => {
                    let tid = if real {
                        inj.tid.0 as u64
                    } else {
                        t.vtid as u64
                    };
                    let args = [vpid, tid, signo(info), a, 0, 0];
                    inj.syscall(libc::SYS_rt_tgsigqueueinfo, args)
                }
                // The leader: its tid is the pid.
                None => sh.call(
                    libc::SYS_rt_tgsigqueueinfo,
                    [vpid, vpid, signo(info), a, 0, 0],
                ),
            };
            r.map_err(|e| {
                err(
                    sh.pid,
                    &format!("re-queueing signal {} of thread {}", signo(info), t.vtid),
                    e,
                )
            })?;
        }
    }
    Ok(())
}
