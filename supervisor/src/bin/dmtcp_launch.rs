fn main() {
    dmtcp_supervisor::run_cli::main()
}
