//! `libdmtcp_inject.so`: the library preloaded into every checkpointed
//! process.
//!
//! The supervisor checkpoints from outside (ptrace), so the library is
//! small: its constructor maps the state page ([`abi`], [`state`]) that the
//! supervisor finds by name, and it exports the application API
//! (`inject/include/dmtcp.h`, [`api`]) and the plugin API ([`plugins`]:
//! registration, the hook thread, events; [`plugin_api`]: barriers,
//! utility calls, publish/subscribe), and wraps the exec calls for ssh
//! contagion ([`ssh`], [`exec`]), and the libc calls that carry pids for
//! computations run without namespaces ([`vpid`], [`vpid_signalfd`] for
//! what signalfds report, and [`vpid_trap`] for raw `syscall` instructions
//! after a restart). `unsafe` lives in [`sys`], [`state`], [`exec`],
//! [`vpid`], [`vpid_signalfd`] and [`vpid_trap`] (the libc-facing
//! wrappers, the SIGSYS frame) only.

pub mod abi;
pub mod api;
mod coord;
pub mod exec;
mod exec_env;
pub mod plugin_api;
pub mod plugins;
mod privilege;
mod rescue;
mod seclog;
pub mod srun;
pub mod ssh;
pub mod state;
mod sys;
pub mod vpid;
mod vpid_signalfd;
mod vpid_trap;

extern "C" fn constructor() {
    exec_env::init();
    plugins::check_mode();
    state::init();
    vpid::find_tid_offset();
    vpid::init();
    vpid_signalfd::init();
    vpid_trap::init(vpid::virtual_pids());
    privilege::warn_if_weakened();
    plugins::init();
}

/// Runs [`constructor`] when the library is loaded (before `main`).
#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;
