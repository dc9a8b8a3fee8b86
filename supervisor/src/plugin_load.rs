//! `dmtcp-run --with-plugin A.so:B.so`: finding the plugins, checking them
//! before the program starts, and the `LD_PRELOAD` that loads them into
//! every process (after `libdmtcp_inject.so`, in the order given; exec'd
//! programs inherit it, and a restarted process has them in its restored
//! memory and environment already).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The plugins named in `lists` (each colon-separated), as absolute paths:
/// a name with a `/` is a path; a bare name is looked up in
/// `LD_LIBRARY_PATH`, then the working directory.
pub fn resolve(lists: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for name in lists
        .iter()
        .flat_map(|l| l.split(':'))
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let found = if name.contains('/') {
            Some(PathBuf::from(name)).filter(|p| p.is_file())
        } else {
            std::env::var("LD_LIBRARY_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(name))
                .chain(std::iter::once(PathBuf::from(name)))
                .find(|p| p.is_file())
        };
        let Some(p) = found else {
            anyhow::bail!("plugin {name}: not found (give a path, or a name in LD_LIBRARY_PATH)");
        };
        let p = std::fs::canonicalize(&p)
            .map_err(|e| anyhow::anyhow!("plugin {}: {e}", p.display()))?;
        if p.to_string_lossy().contains([':', ' ']) {
            anyhow::bail!(
                "plugin {}: a path with ':' or a space cannot go into LD_PRELOAD",
                p.display()
            );
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Loads the plugins the way the program will (preloaded after the inject
/// library, every symbol bound at once) in a throw-away run of our own
/// binary whose inject constructor checks them and exits before `main`:
/// a plugin that cannot be loaded, or declares another plugin API version,
/// is one error line naming it.
pub fn check(lib: &Path, plugins: &[PathBuf]) -> anyhow::Result<()> {
    let list = join(plugins);
    let out = Command::new("/proc/self/exe")
        .env("LD_PRELOAD", preload(lib, plugins))
        .env("LD_BIND_NOW", "1")
        .env("DMTCP_PLUGIN_CHECK", &list)
        .env_remove("DMTCP_PLUGIN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| anyhow::anyhow!("checking the plugins: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // Our own line ("plugin ..."), else the loader's (undefined symbol).
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("plugin "))
        .or_else(|| err.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("the plugin check failed")
        .trim()
        .to_string();
    anyhow::bail!("{line}")
}

fn join(plugins: &[PathBuf]) -> String {
    plugins
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// What goes in front of `LD_PRELOAD`: the inject library, then the
/// plugins in order.
pub fn preload(lib: &Path, plugins: &[PathBuf]) -> String {
    let lib = lib.to_string_lossy().into_owned();
    if plugins.is_empty() {
        lib
    } else {
        format!("{lib}:{}", join(plugins))
    }
}
