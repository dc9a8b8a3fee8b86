//! A DMTCP plugin in Rust (`dmtcp-run --with-plugin
//! target/release/libdmtcp_example_rust_plugin.so -- PROG`): logs every
//! event to `$EVENT_LOG` (else stderr) as `<pid> rust <EVENT> gen=<n>`, and
//! at restart takes a slot number from the coordinator's database
//! (`<pid> rust slot=<n>` after a global barrier).

use std::io::Write;

use dmtcp_plugin::{declare_plugin, Event};

fn log(line: &str) {
    let line = format!("{} rust {line}\n", std::process::id());
    match std::env::var_os("EVENT_LOG") {
        Some(p) => {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

fn hook(e: Event) {
    log(&format!("{} gen={}", e.name(), dmtcp_plugin::generation()));
    if e == Event::Restart {
        let slot = dmtcp_plugin::kv_add("rust_example", "slots", 1);
        dmtcp_plugin::global_barrier("rust_example:slots");
        let total = dmtcp_plugin::kv_add("rust_example", "slots", 0);
        log(&format!(
            "slot={} of={}",
            slot.unwrap_or(-1),
            total.unwrap_or(-1)
        ));
    }
}

declare_plugin!("rust_example", hook);
