fn main() {
    dmtcp_supervisor::roles::launch::main()
}
