//! `dmtcp_sshd`: the remote ssh relay (see `roles/relay.rs`).
fn main() {
    dmtcp_supervisor::roles::relay::remote_main()
}
