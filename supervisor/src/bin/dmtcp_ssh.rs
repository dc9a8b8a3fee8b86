//! `dmtcp_ssh`: the local ssh relay (see `roles/relay.rs`).
fn main() {
    dmtcp_supervisor::roles::relay::local_main()
}
