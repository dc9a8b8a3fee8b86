//! `libdmtcp_inject.so`: the library preloaded into every checkpointed
//! process.
//!
//! The supervisor checkpoints from outside (ptrace), so the library is
//! small: its constructor maps the state page ([`abi`], [`state`]) that the
//! supervisor finds by name, and it exports the application API
//! (`inject/include/dmtcp.h`, [`api`]). `unsafe` lives in [`sys`] and
//! [`state`] only.

pub mod abi;
pub mod api;
mod coord;
mod privilege;
pub mod state;
mod sys;

extern "C" fn constructor() {
    state::init();
    privilege::warn_if_weakened();
}

/// Runs [`constructor`] when the library is loaded (before `main`).
#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;
