fn main() {
    dmtcp_supervisor::roles::attach::main()
}
