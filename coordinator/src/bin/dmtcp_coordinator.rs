//! `dmtcp_coordinator`: the checkpoint coordinator.
fn main() -> std::process::ExitCode {
    dmtcp_coordinator::cli::coordinator_main()
}
