//! `dmtcp_restart_script.sh`: written into the checkpoint directory after
//! every completed checkpoint; restarts the computation from its images.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dmtcp_protocol::ImageEntry;

use crate::event::Config;

/// Name of the script in the checkpoint directory.
pub const SCRIPT_NAME: &str = "dmtcp_restart_script.sh";

/// Quotes `s` for bash (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `dmtcp-restart` next to the running executable (absolute), else the bare name.
pub fn default_restart_cmd() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("dmtcp-restart")))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "dmtcp-restart".to_string())
}

/// UTC "YYYY-MM-DD HH:MM:SS" of `t`.
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The script's text.
pub fn render(
    host: &str,
    port: u16,
    restart_cmd: &str,
    generation: u64,
    computation: &str,
    images: &[ImageEntry],
) -> String {
    let mut hosts: Vec<&str> = images.iter().map(|i| i.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str("# dmtcp_restart_script.sh: restart a computation from its latest checkpoint.\n");
    s.push_str(&format!("# Computation: {computation}\n"));
    s.push_str(&format!("# Generation: {generation}\n"));
    s.push_str(&format!("# Written: {}\n", utc(SystemTime::now())));
    s.push_str(&format!("# Hosts: {}\n", hosts.join(" ")));
    s.push_str(
        "#\n# Usage: dmtcp_restart_script.sh [-h|--coord-host HOST] [-p|--coord-port PORT]\n",
    );
    s.push_str("# (defaults: $DMTCP_COORD_HOST / $DMTCP_COORD_PORT, else the coordinator that wrote it)\n\n");
    s.push_str("set -e\n");
    s.push_str(&format!("host=\"${{DMTCP_COORD_HOST:-{host}}}\"\n"));
    s.push_str(&format!("port=\"${{DMTCP_COORD_PORT:-{port}}}\"\n\n"));
    s.push_str(
        r#"while [ $# -gt 0 ]; do
  case "$1" in
    -h|--coord-host) host="$2"; shift 2 ;;
    -p|--coord-port) port="$2"; shift 2 ;;
    --coord-host=*) host="${1#*=}"; shift ;;
    --coord-port=*) port="${1#*=}"; shift ;;
    --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "$0: unknown argument: $1" >&2; exit 2 ;;
  esac
done

"#,
    );
    s.push_str(&format!(
        "exec {} --coord-host \"$host\" --coord-port \"$port\"",
        shell_quote(restart_cmd)
    ));
    for img in images {
        s.push_str(" \\\n  ");
        s.push_str(&shell_quote(&img.path));
    }
    s.push('\n');
    s
}

/// Writes the script (mode 0700: its owner only; a new file under a random name, then renamed) into the checkpoint directory.
pub fn write_restart_script(
    cfg: &Config,
    generation: u64,
    computation: &Option<String>,
    images: &[ImageEntry],
) -> anyhow::Result<PathBuf> {
    let text = render(
        &cfg.script_host,
        cfg.port,
        &cfg.restart_cmd,
        generation,
        computation.as_deref().unwrap_or(""),
        images,
    );
    let path = cfg.ckpt_dir.join(SCRIPT_NAME);
    crate::write_private(&path, text.as_bytes(), 0o700)
        .with_context(|| format!("writing {}", path.display()))?;
    // Also beside the images when they all went to another directory (a
    // restarted computation keeps the directory its images came from): the
    // script there must restart this newest set, not an older one.
    let dirs: std::collections::BTreeSet<&std::path::Path> = images
        .iter()
        .filter_map(|i| std::path::Path::new(&i.path).parent())
        .collect();
    if let (1, Some(dir)) = (dirs.len(), dirs.first()) {
        if *dir != cfg.ckpt_dir.as_path() {
            let there = dir.join(SCRIPT_NAME);
            if let Err(e) = crate::write_private(&there, text.as_bytes(), 0o700) {
                tracing::warn!("writing {}: {e:#}", there.display());
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc(t), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn script_lists_images() {
        let img = ImageEntry {
            path: "/ck/ckpt 1.dmtcp".into(),
            vpid: 1,
            prog: "a".into(),
            host: "n1".into(),
            size: 1,
        };
        let s = render("127.0.0.1", 7780, "/bin/dmtcp-restart", 3, "abc", &[img]);
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("# Generation: 3"));
        assert!(s.contains("port=\"${DMTCP_COORD_PORT:-7780}\""));
        assert!(s.contains("exec '/bin/dmtcp-restart' --coord-host \"$host\" --coord-port \"$port\" \\\n  '/ck/ckpt 1.dmtcp'\n"));
    }
}
