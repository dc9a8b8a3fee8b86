//! Files unlinked while open or mapped (ghost files) and unlinked POSIX
//! message queues are saved in the image and come back unlinked (issue 21,
//! DMTCP's shared-memory1/2, file3, posix-mq1).

use std::time::Duration;

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    ghost_files => ghost_files_come_back_unlinked;
    ghost_limit => ghost_above_limit_refused;
}

/// An unlinked file held by an fd and a shared mapping (shared with a
/// child), one held only by shared mappings, a private mapping with a
/// private copy, a write-only appending fd, and an unlinked message queue:
/// contents, size, mode, offsets and sharing checked while running and at
/// the end, after two restarts.
fn ghost_files_come_back_unlinked(env: &mut TestEnv) {
    Scenario::new("ghost").run(env);
}

/// Above `DMTCP_GHOST_LIMIT` the checkpoint is refused with one line naming
/// the file and the setting; the program goes on.
fn ghost_above_limit_refused(env: &mut TestEnv) {
    let sc = Scenario::new("ghost").env("DMTCP_GHOST_LIMIT", "4k");
    env.start_coordinator();
    let mut r = sc.launch(env);
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(60));
    let said = out.describe();
    if out.status.success()
        || !said.contains("unlinked file")
        || !said.contains("DMTCP_GHOST_LIMIT")
    {
        env.fail(&format!(
            "checkpoint with a 12 KiB unlinked file and a 4k limit: expected a refusal naming the file and DMTCP_GHOST_LIMIT, got {said}"
        ));
    }
    r.finish();
}
