//! The application API (`inject/include/dmtcp.h`): exported C functions.
//!
//! Every function works from any thread. Nothing here runs in a signal
//! handler; `dmtcp_checkpoint` allocates and blocks, the others only touch
//! atomics in the state page (and `dmtcp_disable_ckpt` may sleep briefly
//! while a pending checkpoint finishes).

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::abi::{
    DMTCP_AFTER_CHECKPOINT, DMTCP_AFTER_RESTART, DMTCP_IS_PRESENT, DMTCP_NOT_PRESENT,
};
use crate::coord::{self, Outcome};
use crate::state::{self, StatePage};
use crate::sys::set_errno;

/// Longest a `dmtcp_disable_ckpt` waits for a checkpoint that is already
/// waiting for the process (the supervisor gives up sooner or later).
const DISABLE_WAIT: Duration = Duration::from_secs(30);

thread_local! {
    /// Critical sections this thread has open (nesting depth).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// 1: the library is loaded in this process (checkpoints are possible).
#[no_mangle]
pub extern "C" fn dmtcp_is_enabled() -> i32 {
    i32::from(state::page().is_some())
}

/// Checkpoints the whole computation and returns once it is done:
/// `DMTCP_AFTER_CHECKPOINT` in the original process, `DMTCP_AFTER_RESTART`
/// in a process restarted from that checkpoint, -1 (errno set) on failure.
/// Inside this thread's own `dmtcp_disable_ckpt` section it fails with
/// `EDEADLK` (the checkpoint would wait for the section to end).
#[no_mangle]
pub extern "C" fn dmtcp_checkpoint() -> i32 {
    std::panic::catch_unwind(checkpoint).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        -1
    })
}

fn checkpoint() -> i32 {
    let Some(st) = state::page() else {
        set_errno(libc::ENOMEM);
        return -1;
    };
    if crate::plugins::in_moment() {
        eprintln!("dmtcp_checkpoint: called inside a plugin hook; not checkpointing");
        set_errno(libc::EDEADLK);
        return -1;
    }
    if DEPTH.with(Cell::get) > 0 {
        eprintln!("dmtcp_checkpoint: called inside dmtcp_disable_ckpt(); not checkpointing");
        set_errno(libc::EDEADLK);
        return -1;
    }
    let restarts = st.restarts.load(Ordering::Acquire);
    let target = coord::find(st);
    let outcome = coord::checkpoint(&target);
    let restarted = st.restarts.load(Ordering::Acquire) != restarts;
    match outcome {
        Outcome::Done if restarted => DMTCP_AFTER_RESTART,
        Outcome::Done => DMTCP_AFTER_CHECKPOINT,
        Outcome::Lost(_) if restarted => DMTCP_AFTER_RESTART,
        Outcome::Lost(why) => {
            eprintln!(
                "dmtcp_checkpoint: coordinator {}:{} went away: {why}",
                target.host, target.port
            );
            set_errno(libc::ECONNRESET);
            -1
        }
        Outcome::Failed(why) => {
            eprintln!(
                "dmtcp_checkpoint: checkpoint via {}:{} failed: {why}",
                target.host, target.port
            );
            set_errno(libc::EIO);
            -1
        }
    }
}

/// Opens a critical section: until the matching `dmtcp_enable_ckpt`, a
/// checkpoint waits. Nestable. Returns 1.
#[no_mangle]
pub extern "C" fn dmtcp_disable_ckpt() -> i32 {
    let Some(st) = state::page() else {
        return DMTCP_NOT_PRESENT;
    };
    if DEPTH.with(Cell::get) == 0 {
        wait_pending_checkpoint(st);
    }
    st.disable_count.fetch_add(1, Ordering::AcqRel);
    DEPTH.with(|d| d.set(d.get() + 1));
    1
}

/// No starvation: a checkpoint already waiting goes first, but only when no
/// thread holds a section (otherwise waiting could deadlock with a section
/// that waits for this thread).
fn wait_pending_checkpoint(st: &StatePage) {
    let deadline = Instant::now() + DISABLE_WAIT;
    while st.ckpt_waiting.load(Ordering::Acquire) != 0
        && st.disable_count.load(Ordering::Acquire) == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Closes the innermost critical section of this thread. Returns 1, or -1
/// (errno `EPERM`) when this thread has none open.
#[no_mangle]
pub extern "C" fn dmtcp_enable_ckpt() -> i32 {
    let Some(st) = state::page() else {
        return DMTCP_NOT_PRESENT;
    };
    if DEPTH.with(Cell::get) == 0 {
        set_errno(libc::EPERM);
        return -1;
    }
    DEPTH.with(|d| d.set(d.get() - 1));
    st.disable_count.fetch_sub(1, Ordering::AcqRel);
    1
}

/// Checkpoints this process has gone through (restarts included: a process
/// restarted from checkpoint N sees N).
#[no_mangle]
pub extern "C" fn dmtcp_get_generation() -> i32 {
    state::page().map_or(0, |st| st.generation.load(Ordering::Acquire) as i32)
}

/// How many times this process was restarted.
#[no_mangle]
pub extern "C" fn dmtcp_get_restart_count() -> i32 {
    state::page().map_or(0, |st| st.restarts.load(Ordering::Acquire) as i32)
}

/// DMTCP's `dmtcp_get_local_status`: this process's checkpoints and
/// restarts, through the (possibly null) pointers.
#[no_mangle]
pub extern "C" fn dmtcp_get_local_status(checkpoints: *mut i32, restarts: *mut i32) -> i32 {
    if state::page().is_none() {
        return DMTCP_NOT_PRESENT;
    }
    crate::sys::store_i32(checkpoints, dmtcp_get_generation());
    crate::sys::store_i32(restarts, dmtcp_get_restart_count());
    DMTCP_IS_PRESENT
}
