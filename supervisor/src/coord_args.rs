//! The coordinator options `dmtcp-run`, `dmtcp-attach` and `dmtcp-restart`
//! share, and finding (or starting) the coordinator they name; the image
//! options of a new launch (`dmtcp-run`, `dmtcp-attach`).

use std::path::PathBuf;

use anyhow::anyhow;
use dmtcp_coordinator::client::{ensure_coordinator, load_secret, CoordAddr, StartOptions};

/// Where, how and how often a new launch writes its images.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageArgs {
    /// Directory for checkpoint images (env DMTCP_CHECKPOINT_DIR).
    #[arg(long = "ckpt-dir", alias = "ckptdir", env = "DMTCP_CHECKPOINT_DIR")]
    pub ckpt_dir: Option<PathBuf>,
    /// Do not compress images (same as DMTCP_GZIP=0).
    #[arg(long = "no-gzip")]
    pub no_gzip: bool,
    /// Compress images with gzip (DMTCP's format; the default is zstd).
    #[arg(long = "gzip")]
    pub gzip: bool,
    /// Image codec: gzip, zstd, lz4 or none, zstd and gzip optionally with a level
    /// (`zstd:-3`, `gzip:6`; env DMTCP_COMPRESS).
    #[arg(long = "compress")]
    pub compress: Option<String>,
    /// Checkpoint every N seconds (env DMTCP_CHECKPOINT_INTERVAL).
    #[arg(short = 'i', long = "interval", env = "DMTCP_CHECKPOINT_INTERVAL")]
    pub interval: Option<u32>,
}

impl ImageArgs {
    /// The codec and level: `--no-gzip`, `--compress NAME[:LEVEL]`, `--gzip`,
    /// then the environment.
    pub fn codec(&self) -> anyhow::Result<(dmtcp_image::Codec, Option<i32>)> {
        use dmtcp_image::Codec;
        if self.no_gzip {
            return Ok((Codec::None, None));
        }
        if let Some(c) = &self.compress {
            return Ok(Codec::parse_spec(c)?);
        }
        if self.gzip {
            return Ok((Codec::Gzip, None));
        }
        Ok(Codec::from_env())
    }

    /// Whether the codec is the default one, chosen by nobody: it is then
    /// adaptive (`dmtcp_image::WriteOptions::adaptive`).
    pub fn codec_is_default(&self) -> bool {
        !self.no_gzip
            && self.compress.is_none()
            && !self.gzip
            && dmtcp_image::Codec::env_is_default()
    }
}

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
