//! Mapping flags kept exactly and a checkpoint whose cost follows touched
//! memory (issue 21, DMTCP's mmap-noreserve).

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    noreserve_2tib => noreserve_2tib_restores;
}

/// A 2 TiB MAP_NORESERVE mapping with 5 touched pages restores with
/// MAP_NORESERVE (VmFlags `nr`, no `ac`), its pages intact and the rest
/// zero, after two restarts. The harness prints each checkpoint's time
/// (it must not read 2 TiB of pagemap: well under a second).
fn noreserve_2tib_restores(env: &mut TestEnv) {
    Scenario::new("noreserve").run(env);
}
