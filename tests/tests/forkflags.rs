//! Mappings a fork does not copy (issue 20): the snapshot child stands in
//! for private memory after the thaw, except for these, read while frozen.

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    dontfork_and_wipeonfork => dontfork_and_wipeonfork_restore;
    wipeonfork_alone => wipeonfork_alone_restores;
}

/// A MADV_DONTFORK and a MADV_WIPEONFORK mapping (absent from and emptied
/// in the snapshot child) keep every page's contents across checkpoints
/// and restarts.
fn dontfork_and_wipeonfork_restore(env: &mut TestEnv) {
    Scenario::new("forkflags").run(env);
}

/// A MADV_WIPEONFORK mapping without a MADV_DONTFORK one: the VM flags
/// come from the snapshot child after the thaw, and the wiped mapping is
/// found while frozen by having pages in the process and none in the child.
fn wipeonfork_alone_restores(env: &mut TestEnv) {
    Scenario::new("forkflags").env("FORKFLAGS", "wipe").run(env);
}
