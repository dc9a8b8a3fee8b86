//! Terminals: a pty pair made inside the computation comes back connected,
//! with its settings, window size, bytes in flight both ways and the
//! child's controlling terminal; the settings of the user's terminal follow
//! the computation to the terminal it is restarted on.

use dmtcp_tests::{e2e_tests, Mode, Scenario, TestEnv};

e2e_tests! {
    pty_pair => pty_pair_keeps_data_settings_and_ctty;
    tty_raw => terminal_settings_follow_the_restart;
    tty_own_group => terminal_foreground_group_follows_the_restart;
}

/// A `script`-like relay: the parent holds the master, a child in its own
/// session has the slave as stdio and controlling terminal and answers
/// numbered requests; nothing is lost or repeated across the restarts.
fn pty_pair_keeps_data_settings_and_ctty(env: &mut TestEnv) {
    Scenario::new("pty_pair").run(env);
}

/// A program that put the user's terminal in raw mode (no echo, custom
/// VMIN/VTIME and interrupt character) finds the same settings on the
/// terminal dmtcp-restart runs on, and stays in its foreground group. Every
/// launcher runs on a fresh pty of its own (`on_pty`), like in a terminal
/// emulator. Every restart also sends the program a SIGWINCH.
fn terminal_settings_follow_the_restart(env: &mut TestEnv) {
    tty_raw_scenario().run(env);
}

/// The same program in a process group of its own that it made the
/// terminal's foreground group (as a job-control shell under dmtcp-run
/// does for a job): that group is the foreground group after restart.
fn terminal_foreground_group_follows_the_restart(env: &mut TestEnv) {
    tty_raw_scenario().env("TTY_RAW_OWN_GROUP", "1").run(env);
}

fn tty_raw_scenario() -> Scenario {
    let sc = Scenario::new("tty_raw");
    let restarts = match sc.mode {
        Mode::Rounds(n) => n,
        Mode::Bare | Mode::NoRestart => 0,
    };
    sc.image_name(&python_exe())
        .wrapper("on_pty")
        .env("TTY_RAW_MIN_WINCH", &restarts.to_string())
}

/// A script's images are named after its interpreter as its `#!` line
/// names it (argv[0]), not the binary that resolves to.
fn python_exe() -> String {
    "python3".into()
}
