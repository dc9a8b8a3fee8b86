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
    s.push_str("#          [--hostfile FILE] [--no-pidns] [OLD=NEW ...]\n");
    s.push_str(
        "# (defaults: $DMTCP_COORD_HOST / $DMTCP_COORD_PORT, else the coordinator that wrote it)\n",
    );
    s.push_str("# Each image restarts on the host it was checkpointed on, over ssh\n");
    s.push_str("# ($DMTCP_REMOTE_SHELL) for the other hosts; OLD=NEW or a hostfile of\n");
    s.push_str("# 'OLD NEW' lines places OLD's images on NEW instead.\n\n");
    s.push_str("set -e\n");
    s.push_str(&format!("host=\"${{DMTCP_COORD_HOST:-{host}}}\"\n"));
    s.push_str(&format!("port=\"${{DMTCP_COORD_PORT:-{port}}}\"\n"));
    s.push_str("hostfile=\nmaps=()\n\n");
    s.push_str(
        r#"while [ $# -gt 0 ]; do
  case "$1" in
    -h|--coord-host) host="$2"; shift 2 ;;
    -p|--coord-port) port="$2"; shift 2 ;;
    --coord-host=*) host="${1#*=}"; shift ;;
    --coord-port=*) port="${1#*=}"; shift ;;
    --hostfile) hostfile="$2"; shift 2 ;;
    --hostfile=*) hostfile="${1#*=}"; shift ;;
    --no-pidns) export DMTCP_NO_PIDNS=1; shift ;;
    --help) sed -n '2,14p' "$0"; exit 0 ;;
    ?*=*) maps+=("$1"); shift ;;
    *) echo "$0: unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -n "$hostfile" ] && [ ! -r "$hostfile" ]; then
  echo "$0: cannot read host file $hostfile" >&2; exit 2
fi

"#,
    );
    s.push_str(&format!("restart={}\n", shell_quote(restart_cmd)));
    s.push_str("images=(");
    for img in images {
        s.push_str(" \\\n  ");
        s.push_str(&shell_quote(&img.path));
    }
    s.push_str("\n)\nimage_hosts=(");
    for img in images {
        s.push(' ');
        s.push_str(&shell_quote(&img.host));
    }
    s.push_str(")\n");
    s.push_str(MULTI_HOST);
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

/// The part of the script that places images on hosts: when every image
/// restarts here it falls through to the plain `exec dmtcp-restart`;
/// otherwise this host's images restart first (starting the coordinator
/// if none runs), then each other host's over ssh joined to it.
const MULTI_HOST: &str = r#"
# Where each host's images go: OLD=NEW arguments, then the host file.
map_host() {
  local m
  for m in "${maps[@]}"; do
    if [ "${m%%=*}" = "$1" ]; then echo "${m#*=}"; return; fi
  done
  if [ -n "$hostfile" ]; then
    m=$(awk -v h="$1" '!/^[[:space:]]*#/ { sub(/=/, " "); if ($1 == h && $2 != "") { print $2; exit } }' "$hostfile")
    if [ -n "$m" ]; then echo "$m"; return; fi
  fi
  echo "$1"
}
me=$(uname -n)
declare -A group=()
order=()
for i in "${!images[@]}"; do
  t=$(map_host "${image_hosts[$i]}")
  case "$t" in localhost|127.0.0.1|"$me") t=$me ;; esac
  if [ -z "${group[$t]+x}" ]; then order+=("$t"); group[$t]=; fi
  group[$t]+=" $(printf '%q' "${images[$i]}")"
done
if [ "${#order[@]}" -gt 1 ] || [ "${order[0]}" != "$me" ]; then
  rsh=${DMTCP_REMOTE_SHELL:-ssh}
  rbin=${restart%/*}
  [ "$rbin" = "$restart" ] && rbin=
  if [ -n "$DMTCP_PREFIX" ]; then rbin=$DMTCP_PREFIX/bin; fi
  remote_restart=${rbin:+$rbin/}dmtcp-restart
  envs=
  if [ -n "$DMTCP_TMPDIR" ]; then envs="env DMTCP_TMPDIR=$(printf '%q' "$DMTCP_TMPDIR") "; fi
  pids=()
  # Each dmtcp-restart is told the size of the whole set: plugins' global
  # barriers at RESTART wait for every host's processes.
  if [ -n "${group[$me]+x}" ]; then
    eval "\"\$restart\" --coord-host \"\$host\" --coord-port \"\$port\" --set-size ${#images[@]} ${group[$me]}" &
    pids+=($!)
    # The other hosts join the coordinator this restart finds or starts.
    command=${restart%/*}/dmtcp-command
    [ -x "$command" ] || command=dmtcp-command
    for _ in $(seq 300); do
      "$command" -h "$host" -p "$port" -s >/dev/null 2>&1 && break
      kill -0 "${pids[0]}" 2>/dev/null || break
      sleep 0.1
    done
  fi
  for t in "${order[@]}"; do
    [ "$t" = "$me" ] && continue
    $rsh "$t" "${envs}$(printf '%q' "$remote_restart") --join-coordinator --coord-host $(printf '%q' "$host") --coord-port $(printf '%q' "$port") --set-size ${#images[@]}${group[$t]}" </dev/null &
    pids+=($!)
  done
  rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  exit "$rc"
fi

"#;

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
