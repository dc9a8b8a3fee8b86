fn main() {
    dmtcp_supervisor::roles::nsinit::main()
}
