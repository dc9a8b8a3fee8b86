//! End-to-end test harness for the dmtcp binaries (CRIU zdtm style).
//!
//! Each test gets its own temp dir, its own coordinator on a free port and a
//! tag in the environment of every process it starts; a [`Scenario`] drives
//! a small C target program from `tests/programs/` through checkpoint, kill
//! and restart rounds and compares /proc before and after. Every end-to-end
//! test runs twice, as the current user and as uid 65534 ([`e2e_tests!`]).

pub mod env;
pub mod hosts;
pub mod lockdown;
pub mod procfs;
pub mod procs;
pub mod scenario;
pub mod setup;
pub mod slurm;

pub use env::{Output, Proc, TestEnv, User, NOBODY};
pub use scenario::{Mode, ProcCheck, Running, Scenario};

/// Runs one end-to-end test body in a fresh [`TestEnv`], then checks that
/// nothing is left running and removes its directory.
pub fn run_e2e(name: &str, user: User, body: fn(&mut TestEnv)) {
    let mut env = TestEnv::new(name, user);
    body(&mut env);
    env.finish();
}

/// Declares each end-to-end test twice: `NAME::as_current_user` and
/// `NAME::as_uid_65534`. The second is `#[ignore]`d (reported as ignored,
/// with the reason) when the tests were built by a non-root user.
#[macro_export]
macro_rules! e2e_tests {
    ($($name:ident => $body:ident;)*) => {$(
        mod $name {
            #[test]
            fn as_current_user() {
                $crate::run_e2e(stringify!($name), $crate::User::Current, super::$body)
            }

            #[test]
            #[cfg_attr(
                dmtcp_tests_not_root,
                ignore = "skipped: switching to uid 65534 needs root (tests built as non-root)"
            )]
            fn as_uid_65534() {
                $crate::run_e2e(stringify!($name), $crate::User::Nobody, super::$body)
            }
        }
    )*};
}
