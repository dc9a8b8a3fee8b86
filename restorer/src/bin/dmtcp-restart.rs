fn main() {
    dmtcp_restorer::cli::main()
}
