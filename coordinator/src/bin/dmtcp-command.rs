//! `dmtcp-command`: send a command to the coordinator.
fn main() -> std::process::ExitCode {
    dmtcp_coordinator::cli::command_main()
}
