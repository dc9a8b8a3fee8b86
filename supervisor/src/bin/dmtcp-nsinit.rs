fn main() {
    dmtcp_supervisor::nsinit::main()
}
