//! `dmtcp-plugin`: write a DMTCP plugin in Rust.
//!
//! A plugin is a `cdylib` loaded with `dmtcp-run --with-plugin
//! libmine.so`. It declares itself with [`declare_plugin!`] and a plain
//! `fn(Event)`; the calls of this crate ([`publish`], [`query`],
//! [`kv_add`], [`global_barrier`], [`generation`], ...) are safe wrappers of
//! the C API of `inject/include/dmtcp.h`, looked up at run time in the
//! preloaded `libdmtcp_inject.so` (no link-time dependency: without DMTCP
//! they do nothing and return `None`/`false`/0).
//!
//! ```ignore
//! use dmtcp_plugin::{declare_plugin, Event};
//!
//! fn hook(e: Event) {
//!     if e == Event::Restart {
//!         dmtcp_plugin::publish("mine", b"addr", b"10.0.0.7:4000");
//!         dmtcp_plugin::global_barrier("mine:published");
//!         let peer = dmtcp_plugin::query("mine", b"peer-addr");
//!     }
//! }
//! declare_plugin!("mine", hook);
//! ```
//!
//! The hook runs in the library's hook thread; at `PreCheckpoint`, `Resume`
//! and `Restart` every other thread of the program is stopped (see
//! docs/plugins.md for what must not be done then). A panic in the hook is
//! caught and printed; it never unwinds into C.

#[doc(hidden)]
pub mod sys;

/// A plugin event (`DmtcpEvent_t` of dmtcp.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The library is set up in this process (before `main`).
    Init,
    /// The process exits normally.
    Exit,
    /// Before an exec (`execve`, `execv`, `execvp`, `execvpe`).
    PreExec,
    /// In the new program after an exec, after `Init`.
    PostExec,
    AtforkPrepare,
    AtforkParent,
    AtforkChild,
    /// A checkpoint begins; the program still runs.
    PreSuspend,
    /// Every other thread is stopped; the image is taken next.
    PreCheckpoint,
    /// The image is taken; other threads still stopped.
    Resume,
    /// Restored from an image; other threads still stopped.
    Restart,
    /// The program's threads run again.
    Running,
    /// In a new thread, before its start routine.
    PthreadStart,
    /// In a thread calling `pthread_exit`.
    PthreadExit,
    /// In a thread whose start routine returned.
    PthreadReturn,
    /// Any other event number.
    Other(u32),
}

impl Event {
    pub fn from_raw(e: u32) -> Event {
        match e {
            0 => Event::Init,
            1 => Event::Exit,
            2 => Event::PreExec,
            3 => Event::PostExec,
            4 => Event::AtforkPrepare,
            5 => Event::AtforkParent,
            6 => Event::AtforkChild,
            12 => Event::PthreadStart,
            13 => Event::PthreadExit,
            14 => Event::PthreadReturn,
            15 => Event::PreSuspend,
            16 => Event::PreCheckpoint,
            17 => Event::Resume,
            18 => Event::Restart,
            19 => Event::Running,
            n => Event::Other(n),
        }
    }

    /// DMTCP's name of the event (`DMTCP_EVENT_RESTART`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Event::Init => "DMTCP_EVENT_INIT",
            Event::Exit => "DMTCP_EVENT_EXIT",
            Event::PreExec => "DMTCP_EVENT_PRE_EXEC",
            Event::PostExec => "DMTCP_EVENT_POST_EXEC",
            Event::PthreadStart => "DMTCP_EVENT_PTHREAD_START",
            Event::PthreadExit => "DMTCP_EVENT_PTHREAD_EXIT",
            Event::PthreadReturn => "DMTCP_EVENT_PTHREAD_RETURN",
            Event::AtforkPrepare => "DMTCP_EVENT_ATFORK_PREPARE",
            Event::AtforkParent => "DMTCP_EVENT_ATFORK_PARENT",
            Event::AtforkChild => "DMTCP_EVENT_ATFORK_CHILD",
            Event::PreSuspend => "DMTCP_EVENT_PRESUSPEND",
            Event::PreCheckpoint => "DMTCP_EVENT_PRECHECKPOINT",
            Event::Resume => "DMTCP_EVENT_RESUME",
            Event::Restart => "DMTCP_EVENT_RESTART",
            Event::Running => "DMTCP_EVENT_RUNNING",
            Event::Other(_) => "DMTCP_EVENT_OTHER",
        }
    }
}

/// Declares the plugin: `declare_plugin!("name", hook_fn)` with
/// `fn hook_fn(Event)`. Defines `dmtcp_initialize_plugin`, which registers
/// it and calls the next plugin's, like C's `DMTCP_DECL_PLUGIN`.
#[macro_export]
macro_rules! declare_plugin {
    ($name:literal, $hook:path) => {
        #[no_mangle]
        pub extern "C" fn dmtcp_initialize_plugin() {
            extern "C" fn dmtcp_plugin_hook(e: u32, _data: *mut ::core::ffi::c_void) {
                let f: fn($crate::Event) = $hook;
                $crate::sys::call_hook(f, e);
            }
            $crate::sys::register(concat!($name, "\0"), dmtcp_plugin_hook);
            $crate::sys::call_next_initialize();
        }
    };
}

/// Stores `value` under `key` in database `db` of the coordinator
/// (current generation). True when the coordinator kept it.
pub fn publish(db: &str, key: &[u8], value: &[u8]) -> bool {
    sys::publish(db, key, value)
}

/// The value under `key` in `db`, if published.
pub fn query(db: &str, key: &[u8]) -> Option<Vec<u8>> {
    sys::query(db, key)
}

/// Adds `delta` to the integer under `key` in `db` atomically; returns the
/// value before (a missing key is 0).
pub fn kv_add(db: &str, key: &str, delta: i64) -> Option<i64> {
    sys::kv_request(2, db, key, delta)
}

/// Waits until every process with plugins reached a barrier of this name
/// (only inside PreSuspend, PreCheckpoint, Resume and Restart hooks).
pub fn global_barrier(name: &str) -> bool {
    sys::barrier(name)
}

/// Checkpoints this process went through.
pub fn generation() -> u32 {
    sys::int_call("dmtcp_get_generation").max(0) as u32
}

/// Times this process was restarted.
pub fn restart_count() -> u32 {
    sys::int_call("dmtcp_get_restart_count").max(0) as u32
}

/// Whether the process runs under DMTCP.
pub fn is_enabled() -> bool {
    sys::int_call("dmtcp_is_enabled") == 1
}

/// What [`checkpoint`] returns when it worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpointed {
    /// The checkpoint is done; this is the running program.
    Done,
    /// This process was restarted from that checkpoint.
    Restarted,
}

/// Checkpoints the whole computation (not from a hook). `Err(errno)` on
/// failure; `Err(0)` without DMTCP.
pub fn checkpoint() -> Result<Checkpointed, i32> {
    match sys::int_call("dmtcp_checkpoint") {
        1 => Ok(Checkpointed::Done),
        2 => Ok(Checkpointed::Restarted),
        0 => Err(0),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
    }
}
