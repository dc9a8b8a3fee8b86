//! Terminals: a pty pair made inside the computation comes back connected,
//! with its settings, window size, bytes in flight both ways and the
//! child's controlling terminal.

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    pty_pair => pty_pair_keeps_data_settings_and_ctty;
}

/// A `script`-like relay: the parent holds the master, a child in its own
/// session has the slave as stdio and controlling terminal and answers
/// numbered requests; nothing is lost or repeated across the restarts.
fn pty_pair_keeps_data_settings_and_ctty(env: &mut TestEnv) {
    Scenario::new("pty_pair").run(env);
}
