//! The private runtime directory (coordinator secrets, port files) and
//! files created without trusting anything already on the path.
//!
//! The directory is, in order:
//! - `$DMTCP_TMPDIR/dmtcp-<euid>` when `DMTCP_TMPDIR` is set (an explicit
//!   choice, also what the tests use to stay apart);
//! - `$XDG_RUNTIME_DIR/dmtcp` when `XDG_RUNTIME_DIR` is set (a per-user
//!   tmpfs the system made for us);
//! - `/tmp/dmtcp-<euid>`.
//!
//! Before any use it must be a real directory (not a symbolic link: `lstat`),
//! owned by our effective uid, with no permission for group or others (the
//! tool creates it 0700). Otherwise it is refused with one line naming the
//! path, as ssh and tmux do: in a shared `/tmp` another user may have made it
//! first.
//!
//! Files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600 under a
//! random name, then renamed into place ([`write_private`]): a planted file
//! or symbolic link at the final name is replaced, never followed or
//! written through. Secret files are read with `O_NOFOLLOW` and used only if
//! they are regular files owned by us with mode 0600 or stricter
//! ([`read_private`]).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why the runtime directory or a private file may not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "{path}: {why}; refusing to use it (remove it, or set DMTCP_TMPDIR to a private directory)"
    )]
    Unsafe { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl RuntimeError {
    fn io(path: &Path, source: io::Error) -> RuntimeError {
        RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    fn unsafe_(path: &Path, why: impl Into<String>) -> RuntimeError {
        RuntimeError::Unsafe {
            path: path.to_path_buf(),
            why: why.into(),
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn env_nonempty(k: &str) -> Option<OsString> {
    std::env::var_os(k).filter(|v| !v.is_empty())
}

/// Where the runtime directory is (see the module docs); not yet checked.
pub fn dir_path() -> PathBuf {
    let uid = euid();
    if let Some(base) = env_nonempty("DMTCP_TMPDIR") {
        return PathBuf::from(base).join(format!("dmtcp-{uid}"));
    }
    if let Some(xdg) = env_nonempty("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if xdg.is_absolute() {
            return xdg.join("dmtcp");
        }
    }
    PathBuf::from("/tmp").join(format!("dmtcp-{uid}"))
}

/// Checks that `path` is a directory (not a link) owned by us with no
/// permission for group or others.
pub fn check_private_dir(path: &Path) -> Result<(), RuntimeError> {
    let m = std::fs::symlink_metadata(path).map_err(|e| RuntimeError::io(path, e))?;
    if m.file_type().is_symlink() {
        return Err(RuntimeError::unsafe_(path, "is a symbolic link"));
    }
    if !m.is_dir() {
        return Err(RuntimeError::unsafe_(path, "is not a directory"));
    }
    if m.uid() != euid() {
        return Err(RuntimeError::unsafe_(
            path,
            format!("is owned by uid {}, not by us (uid {})", m.uid(), euid()),
        ));
    }
    let mode = m.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(RuntimeError::unsafe_(
            path,
            format!("has mode {mode:04o}; it must be accessible to its owner only (0700)"),
        ));
    }
    Ok(())
}

/// The runtime directory, created 0700 if missing, and checked.
pub fn dir() -> Result<PathBuf, RuntimeError> {
    let path = dir_path();
    if let Some(parent) = path.parent() {
        // The parent is the user's business ($DMTCP_TMPDIR, /tmp, the XDG
        // dir); create it when missing, as before, but never chmod it.
        if !parent.exists() {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent);
        }
    }
    // mkdir does not follow a symbolic link at the last component: a
    // planted one makes it fail with EEXIST, and the check below refuses it.
    match std::fs::DirBuilder::new().mode(0o700).create(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RuntimeError::io(&path, e)),
    }
    check_private_dir(&path)?;
    Ok(path)
}

/// `[A-Za-z0-9.-]` of a host name for a file name (a host name has no '/',
/// but the user may type anything).
fn host_component(host: &str) -> String {
    host.chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// File holding the secret of the coordinator at `host:port`, in the
/// checked runtime directory.
pub fn secret_file(host: &str, port: u16) -> Result<PathBuf, RuntimeError> {
    Ok(dir()?.join(format!("coord-{}-{port}.secret", host_component(host))))
}

fn random_suffix() -> String {
    let n = crate::auth::fresh_nonce();
    n[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `path` exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode `mode`
/// before the umask): fails if anything, a link included, is there.
pub fn create_exclusive(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `data` to `path` atomically with mode 0600 (`mode` for the
/// restart script): a new file under a random name in the same directory,
/// created exclusively, fsynced, then renamed over `path`. Whatever was at
/// `path` (a planted link or file) is replaced, not followed.
pub fn write_private(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", random_suffix()));
    let mut f = create_exclusive(&tmp, mode)?;
    let done = (|| {
        // The umask may have removed bits the caller wants (never added any).
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Reads a small private file (a secret): opened with `O_NOFOLLOW`, and
/// used only if it is a regular file owned by us that group and others
/// cannot access. `Ok(None)` when it does not exist.
pub fn read_private(path: &Path) -> Result<Option<String>, RuntimeError> {
    let b = read_private_bytes(path, 4096)?;
    Ok(b.map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// [`read_private`] for any bytes, at most `limit` of them.
pub fn read_private_bytes(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, RuntimeError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(RuntimeError::unsafe_(path, "is a symbolic link"))
        }
        Err(e) => return Err(RuntimeError::io(path, e)),
    };
    let m = f.metadata().map_err(|e| RuntimeError::io(path, e))?;
    if !m.is_file() {
        return Err(RuntimeError::unsafe_(path, "is not a regular file"));
    }
    if m.uid() != euid() {
        return Err(RuntimeError::unsafe_(
            path,
            format!("is owned by uid {}, not by us (uid {})", m.uid(), euid()),
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(RuntimeError::unsafe_(
            path,
            format!(
                "has mode {:04o}; a secret must be readable by its owner only",
                m.mode() & 0o7777
            ),
        ));
    }
    let mut b = Vec::new();
    f.take(limit)
        .read_to_end(&mut b)
        .map_err(|e| RuntimeError::io(path, e))?;
    Ok(Some(b))
}

/// Creates a checkpoint directory (and missing parents) with mode 0700:
/// images hold the whole memory of the owner's processes. An existing
/// directory is left as it is.
pub fn create_ckpt_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Whether a checkpoint directory announced by a coordinator may be used as
/// this supervisor's default: an absolute, normalized path (no `.` or `..`,
/// no NUL) to an existing directory owned by our effective uid. The
/// coordinator has proved the secret by then; this keeps even an
/// authenticated coordinator from steering images into a directory that is
/// not ours.
pub fn checked_ckpt_dir(dir: &str) -> Result<PathBuf, String> {
    let p = Path::new(dir);
    let clean = p.is_absolute()
        && dir.len() <= 4096
        && !dir.contains('\0')
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean {
        return Err(format!(
            "the coordinator's checkpoint directory {:?} is not a clean absolute path",
            crate::auth::printable(dir)
        ));
    }
    let m = std::fs::metadata(p).map_err(|e| format!("checkpoint directory {dir}: {e}"))?;
    if !m.is_dir() {
        return Err(format!("checkpoint directory {dir} is not a directory"));
    }
    if m.uid() != euid() {
        return Err(format!(
            "the coordinator's checkpoint directory {dir} is owned by uid {}, not by us (uid {}); pass --ckpt-dir",
            m.uid(),
            euid()
        ));
    }
    Ok(p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dmtcp-runtime-test-{tag}-{}-{}",
            std::process::id(),
            random_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn private_dir_checks() {
        let base = scratch("dir");
        let d = base.join("d");
        std::fs::DirBuilder::new().mode(0o700).create(&d).unwrap();
        check_private_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_private_dir(&d).unwrap_err().to_string();
        assert!(
            e.contains("mode 0777") && e.contains(&d.display().to_string()),
            "{e}"
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let l = base.join("l");
        std::os::unix::fs::symlink(&d, &l).unwrap();
        let e = check_private_dir(&l).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn write_private_replaces_a_planted_link_without_following_it() {
        let base = scratch("write");
        let victim = base.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let target = base.join("secret");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_private(&target, b"s3cret", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let m = std::fs::symlink_metadata(&target).unwrap();
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(read_private(&target).unwrap().as_deref(), Some("s3cret"));
        // Nothing but the two files is left.
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 2);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn read_private_refuses_links_and_open_files() {
        let base = scratch("read");
        let f = base.join("f");
        std::fs::write(&f, b"s").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&f).unwrap_err().to_string();
        assert!(e.contains("mode 0644"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&f).unwrap().as_deref(), Some("s"));
        let l = base.join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let e = read_private(&l).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(read_private(&base.join("none")).unwrap().is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn ckpt_dir_checks() {
        let base = scratch("ckpt");
        let s = base.display().to_string();
        assert_eq!(checked_ckpt_dir(&s).unwrap(), base);
        assert!(checked_ckpt_dir("relative/dir").is_err());
        assert!(checked_ckpt_dir(&format!("{s}/../x")).is_err());
        assert!(checked_ckpt_dir(&format!("{s}/missing")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
