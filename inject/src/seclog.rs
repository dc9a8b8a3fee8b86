//! The seccomp/Landlock log (layout: [`crate::abi`], `SECLOG_*`).
//!
//! The kernel hands a thread's seccomp filters back only to a tracer with
//! `CAP_SYS_ADMIN` in the initial user namespace, and a Landlock domain's
//! rules to nobody, so the library records them as the program installs
//! them: `prctl(PR_SET_SECCOMP)` and `syscall(SYS_seccomp)` (libseccomp's
//! path) and `syscall(SYS_landlock_restrict_self)`. The log lives in the
//! process's memory, so it is checkpointed and restored with it, forked
//! with it, and lost at exec (the supervisor then sees more filters in
//! `/proc/PID/status` than logged and refuses the checkpoint). A raw
//! `syscall` instruction bypasses the log the same way.
//!
//! While a call is made and logged, the process counts as being in a
//! critical section (`disable_count`), so a checkpoint never sees a filter
//! installed but not yet logged.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::abi::{
    SECLOG_ENTRY_HDR, SECLOG_FILTER, SECLOG_HDR, SECLOG_LANDLOCK, SECLOG_MAGIC, SECLOG_MAP_LEN,
    SECLOG_OVERFLOW, SECLOG_STRICT,
};
use crate::sys;

const PR_SET_SECCOMP: i32 = 22;
const SECCOMP_MODE_STRICT: u64 = 1;
const SECCOMP_MODE_FILTER: u64 = 2;
const SECCOMP_SET_MODE_STRICT: u64 = 0;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 1 << 3;
/// Longest filter the kernel accepts (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// The log mapping's address (0: not made yet) and the bytes used.
struct Log {
    base: usize,
    used: usize,
}

static LOG: Mutex<Log> = Mutex::new(Log { base: 0, used: 0 });

/// What a call is about to do, to be logged if it succeeds.
enum Record {
    Filter { flags: u32, prog: Option<Vec<u8>> },
    Strict,
    Landlock,
}

/// The `sock_filter` array a `struct sock_fprog` at `addr` points to.
fn read_prog(addr: u64) -> Option<Vec<u8>> {
    let hdr = sys::read_own(addr, 16)?;
    let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
    let ptr = u64::from_ne_bytes(hdr[8..16].try_into().ok()?);
    if len == 0 || len > MAX_INSNS {
        return None;
    }
    sys::read_own(ptr, len * 8)
}

fn append(log: &mut Log, kind: u32, flags: u32, data: &[u8]) {
    if log.base == 0 {
        match sys::map_seclog() {
            Some(p) => {
                log.base = p as usize;
                sys::seclog_write(p, 0, &SECLOG_MAGIC.to_le_bytes());
            }
            None => return,
        }
    }
    let base = log.base as *mut u8;
    let size = SECLOG_ENTRY_HDR + data.len().next_multiple_of(8);
    if SECLOG_HDR + log.used + size > SECLOG_MAP_LEN {
        sys::seclog_write(base, 16, &SECLOG_OVERFLOW.to_le_bytes());
        return;
    }
    let (pid, tid) = sys::ids();
    let mut e = Vec::with_capacity(size);
    for w in [kind, flags, pid, tid, data.len() as u32, 0] {
        e.extend_from_slice(&w.to_le_bytes());
    }
    e.extend_from_slice(data);
    e.resize(size, 0);
    sys::seclog_write(base, SECLOG_HDR + log.used, &e);
    log.used += size;
    sys::seclog_write(base, 8, &(log.used as u64).to_le_bytes());
}

/// Makes the call with `rec` logged if it succeeds (`ok` says what success is).
fn logged(rec: Record, call: impl FnOnce() -> i64, ok: impl Fn(i64) -> bool) -> i64 {
    if matches!(rec, Record::Strict) {
        // After the call the thread may only read, write and exit: log
        // first (the kernel's mode, read at checkpoint, is the truth), and
        // let the lock go before the call.
        append(
            &mut LOG.lock().unwrap_or_else(|e| e.into_inner()),
            SECLOG_STRICT,
            0,
            &[],
        );
        return call();
    }
    let page = crate::state::page();
    if let Some(st) = page {
        st.disable_count.fetch_add(1, Ordering::AcqRel);
    }
    let r = {
        let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
        let r = call();
        if ok(r) {
            match rec {
                Record::Filter { flags, prog } => {
                    // An unreadable program made the call fail already (EFAULT).
                    if let Some(p) = prog {
                        append(&mut log, SECLOG_FILTER, flags, &p);
                    }
                }
                Record::Strict => append(&mut log, SECLOG_STRICT, 0, &[]),
                Record::Landlock => append(&mut log, SECLOG_LANDLOCK, 0, &[]),
            }
        }
        r
    };
    if let Some(st) = page {
        st.disable_count.fetch_sub(1, Ordering::AcqRel);
    }
    r
}

/// `prctl` (raw result: -errno on failure).
pub fn prctl(option: i32, a: [u64; 4]) -> i64 {
    let call = || sys::raw_syscall(libc::SYS_prctl, [option as u64, a[0], a[1], a[2], a[3], 0]);
    if option != PR_SET_SECCOMP {
        return call();
    }
    match a[0] {
        SECCOMP_MODE_STRICT => logged(Record::Strict, call, |r| r == 0),
        SECCOMP_MODE_FILTER => {
            let prog = read_prog(a[1]);
            logged(Record::Filter { flags: 0, prog }, call, |r| r == 0)
        }
        _ => call(),
    }
}

/// `syscall` (raw result: -errno on failure).
pub fn syscall(nr: i64, a: [u64; 6]) -> i64 {
    let call = || sys::raw_syscall(nr, a);
    if nr == libc::SYS_seccomp {
        match a[0] {
            SECCOMP_SET_MODE_STRICT => logged(Record::Strict, call, |r| r == 0),
            SECCOMP_SET_MODE_FILTER => {
                let flags = a[1];
                let prog = read_prog(a[2]);
                let listener = flags & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0;
                logged(
                    Record::Filter {
                        flags: flags as u32,
                        prog,
                    },
                    call,
                    move |r| r == 0 || (listener && r > 0),
                )
            }
            _ => call(),
        }
    } else if nr == libc::SYS_landlock_restrict_self {
        logged(Record::Landlock, call, |r| r == 0)
    } else {
        call()
    }
}
