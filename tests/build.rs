//! Marks the uid-65534 test variants `#[ignore]` when the tests are built by a
//! user who cannot switch to uid 65534 (not root), so they are reported as
//! ignored (skipped) with a reason instead of passing silently.

use std::os::unix::fs::MetadataExt;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dmtcp_tests_not_root)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=programs");
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        println!("cargo::rustc-cfg=dmtcp_tests_not_root");
    }
}
