//! The coordinator options `dmtcp-run` and `dmtcp-restart` share, and
//! finding (or starting) the coordinator they name.

use std::path::PathBuf;

use anyhow::anyhow;
use dmtcp_coordinator::client::{ensure_coordinator, load_secret, CoordAddr, StartOptions};

#[derive(clap::Args, Debug, Clone)]
pub struct CoordArgs {
    /// Coordinator host (env DMTCP_COORD_HOST; default 127.0.0.1).
    #[arg(short = 'h', long = "coord-host", alias = "host")]
    pub coord_host: Option<String>,
    /// Coordinator port (env DMTCP_COORD_PORT; default 7779; 0 = start a new
    /// coordinator on a free port and print it).
    #[arg(short = 'p', long = "coord-port", alias = "port")]
    pub coord_port: Option<u16>,
    /// Write the coordinator's port to this file.
    #[arg(long = "port-file")]
    pub port_file: Option<PathBuf>,
    /// Always start a new coordinator (fails if the port is taken).
    #[arg(long = "new-coordinator")]
    pub new_coordinator: bool,
    /// Only join an existing coordinator; never start one.
    #[arg(short = 'j', long = "join-coordinator", alias = "join")]
    pub join: bool,
}

impl CoordArgs {
    /// The coordinator to talk to and its secret: the one that answers at
    /// the address, or a new one started in the background (unless
    /// `--join-coordinator`). `tool` prefixes the "listening on port" line.
    pub fn coordinator(
        &self,
        tool: &str,
        start: StartOptions,
    ) -> anyhow::Result<(CoordAddr, String)> {
        let addr = CoordAddr::from_args(self.coord_host.clone(), self.coord_port);
        let (addr, secret) = if self.join {
            // No secret is an error at the handshake: never joined blindly.
            let secret = load_secret(&addr)?.unwrap_or_default();
            (addr, secret)
        } else {
            let (a, s) = ensure_coordinator(&addr, self.new_coordinator, &start)?;
            if self.coord_port == Some(0) {
                eprintln!("{tool}: coordinator listening on port {}", a.port);
            }
            (a, s)
        };
        if let Some(f) = &self.port_file {
            dmtcp_coordinator::write_private(f, format!("{}\n", addr.port).as_bytes(), 0o600)
                .map_err(|e| anyhow!("port file {}: {e}", f.display()))?;
        }
        Ok((addr, secret))
    }
}
