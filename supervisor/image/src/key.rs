//! The per-user image key: 32 random bytes that only their user (and root)
//! can read, used to authenticate every image the user writes (keyed
//! BLAKE3, see `docs/image-format.md`).
//!
//! Where it lives, first match wins (`docs/security.md`, "Images"):
//!
//! 1. `$DMTCP_KEY_FILE` (an absolute path);
//! 2. `$XDG_DATA_HOME/dmtcp/image.key` when `XDG_DATA_HOME` is absolute;
//! 3. `$HOME/.local/share/dmtcp/image.key` when `HOME` is an existing
//!    directory owned by us (else the home directory of the passwd entry,
//!    under the same condition);
//! 4. `${DMTCP_TMPDIR:-/tmp}/dmtcp-<uid>-keys/image.key`, for users without
//!    a usable home (uid 65534's is `/nonexistent`). That directory does not
//!    survive a reboot on most systems: images written before it cannot be
//!    authenticated after it, and are refused.
//!
//! The directory holding the key (`dmtcp`, `dmtcp-<uid>-keys`, or the
//! parent of `DMTCP_KEY_FILE`) must be ours and not accessible to group or
//! others; the key file must be ours, mode 0600 or stricter, exactly 32
//! bytes. Anything else is refused with one line naming the path, as ssh
//! does for `~/.ssh`. A missing key is created (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//! mode 0600, written to a temporary name and linked into place, so that
//! two processes creating it at once end up with the same key).

use crate::error::ImageError;
use std::ffi::{CStr, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Length of a key.
pub const KEY_LEN: usize = 32;
/// Length of a key id (recorded in every image header).
pub const KEY_ID_LEN: usize = 16;
/// Name of the key file inside its directory.
pub const KEY_FILE_NAME: &str = "image.key";

/// A user's image key. Its bytes never leave this crate except to a file
/// mode 0600; `Debug` shows only the id.
#[derive(Clone)]
pub struct ImageKey {
    block: [u8; 32],
    image: [u8; 32],
    id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageKey({})", hex(&self.id))
    }
}

impl ImageKey {
    /// A key from its 32 bytes (tests and tools; a user's key comes from
    /// [`ImageKey::user`]).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> ImageKey {
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&blake3::derive_key("dmtcp image 2 key id", bytes)[..KEY_ID_LEN]);
        ImageKey {
            block: blake3::derive_key("dmtcp image 2 block mac", bytes),
            image: blake3::derive_key("dmtcp image 2 image mac", bytes),
            id,
        }
    }

    /// A public name of the key (derived one way from it), stored in the
    /// image header so that an image written with another key is named as
    /// such rather than as tampered.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// The MAC of a page block whose stored bytes are `stored`. (Its
    /// position needs no MAC of its own: the block table, which lists each
    /// block's MAC in order, is covered by the image MAC.)
    pub fn block_mac(&self, stored: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.block);
        // Large blocks are hashed on all SIMD lanes of one core.
        h.update(stored);
        *h.finalize().as_bytes()
    }

    /// An incremental block MAC (for bytes written through in pieces);
    /// finish with [`BlockMac::finish`].
    pub(crate) fn block_hasher(&self) -> BlockMac {
        BlockMac(blake3::Hasher::new_keyed(&self.block))
    }

    /// The MAC over the header, the trailer's fields, the stored metadata
    /// and the block table (which holds every block's MAC).
    pub fn image_mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.image);
        for p in parts {
            h.update(p);
        }
        *h.finalize().as_bytes()
    }

    /// The current user's (effective uid's) key, created if missing.
    /// Loaded once per process.
    pub fn user() -> Result<Arc<ImageKey>, ImageError> {
        static CACHE: Mutex<Option<(PathBuf, Arc<ImageKey>)>> = Mutex::new(None);
        let path = key_path(euid())?;
        let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, k)) = c.as_ref() {
            if *p == path {
                return Ok(Arc::clone(k));
            }
        }
        let k = Arc::new(load_or_create(&path)?);
        *c = Some((path, Arc::clone(&k)));
        Ok(k)
    }

    /// The key of `uid` where root finds it (never created): the home of
    /// its passwd entry, else the temp-dir fallback. For root restarting
    /// another user's image.
    pub fn of_uid(uid: u32) -> Result<ImageKey, ImageError> {
        let mut tried = Vec::new();
        if let Some(home) = passwd_home(uid) {
            let p = home.join(".local/share/dmtcp").join(KEY_FILE_NAME);
            if p.exists() {
                return load(&p, uid);
            }
            tried.push(p);
        }
        let p = fallback_dir(uid).join(KEY_FILE_NAME);
        if p.exists() {
            return load(&p, uid);
        }
        tried.push(p);
        Err(ImageError::Key {
            path: tried.pop().unwrap_or_default(),
            detail: format!("no image key of uid {uid} found"),
        })
    }

    /// Loads the key at `path`, owned by `uid`, without creating it.
    pub fn load(path: &Path, uid: u32) -> Result<ImageKey, ImageError> {
        load(path, uid)
    }

    /// Loads the key at `path` (ours), creating it (and its directory,
    /// 0700) if missing.
    pub fn load_or_create(path: &Path) -> Result<ImageKey, ImageError> {
        load_or_create(path)
    }

    /// Where the key of the current user lives (see the module doc).
    pub fn user_key_path() -> Result<PathBuf, ImageError> {
        key_path(euid())
    }
}

/// An incremental block MAC.
pub(crate) struct BlockMac(blake3::Hasher);

impl BlockMac {
    pub(crate) fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    pub(crate) fn finish(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Constant-time comparison of two MACs.
pub(crate) fn mac_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from_bytes(*a) == blake3::Hash::from_bytes(*b)
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

fn key_err(path: &Path, detail: impl Into<String>) -> ImageError {
    ImageError::Key {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// The key file of `uid` (the current user), per the module doc.
fn key_path(uid: u32) -> Result<PathBuf, ImageError> {
    if let Some(v) = std::env::var_os("DMTCP_KEY_FILE").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(&v);
        if !p.is_absolute() || p.file_name().is_none() {
            return Err(key_err(&p, "DMTCP_KEY_FILE must be an absolute file path"));
        }
        return Ok(p);
    }
    if let Some(v) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        if p.is_absolute() {
            return Ok(p.join("dmtcp").join(KEY_FILE_NAME));
        }
    }
    let usable = |h: &Path| {
        h.is_absolute()
            && std::fs::metadata(h)
                .map(|m| m.is_dir() && m.uid() == uid)
                .unwrap_or(false)
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| usable(h))
        .or_else(|| passwd_home(uid).filter(|h| usable(h)));
    if let Some(h) = home {
        return Ok(h.join(".local/share/dmtcp").join(KEY_FILE_NAME));
    }
    Ok(fallback_dir(uid).join(KEY_FILE_NAME))
}

/// `${DMTCP_TMPDIR:-/tmp}/dmtcp-<uid>-keys`.
fn fallback_dir(uid: u32) -> PathBuf {
    let tmp = std::env::var_os("DMTCP_TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    tmp.join(format!("dmtcp-{uid}-keys"))
}

fn passwd_home(uid: u32) -> Option<PathBuf> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: a zeroed passwd is a valid out-parameter (pointers null).
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pw, buf (with its true length) and out are valid for the
    // call; on success the strings in pw point into buf, which outlives
    // their use below.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_dir.is_null() {
        return None;
    }
    // SAFETY: pw_dir is a NUL-terminated string inside buf (see above).
    let dir = unsafe { CStr::from_ptr(pw.pw_dir) };
    Some(PathBuf::from(OsStr::from_bytes(dir.to_bytes())))
}

/// Checks that `dir` is a directory (not a symlink) owned by `uid` that
/// group and others cannot access.
fn check_dir(dir: &Path, uid: u32) -> Result<(), ImageError> {
    let m = std::fs::symlink_metadata(dir).map_err(|e| key_err(dir, e.to_string()))?;
    if !m.is_dir() {
        return Err(key_err(dir, "key directory is not a directory"));
    }
    if m.uid() != uid {
        return Err(key_err(
            dir,
            format!(
                "key directory owned by uid {}, not uid {uid}: refusing it",
                m.uid()
            ),
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(key_err(
            dir,
            format!(
                "key directory has mode {:04o}, must not be accessible to group or others (chmod 700)",
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Reads and checks the key file at `path`, owned by `uid`.
fn load(path: &Path, uid: u32) -> Result<ImageKey, ImageError> {
    if let Some(dir) = path.parent() {
        check_dir(dir, uid)?;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| key_err(path, e.to_string()))?;
    check_key_file(path, &f, uid)?;
    let mut bytes = Vec::with_capacity(KEY_LEN + 1);
    (&mut f)
        .take(KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| key_err(path, e.to_string()))?;
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        key_err(
            path,
            format!("key file holds {} bytes, expected {KEY_LEN}", bytes.len()),
        )
    })?;
    Ok(ImageKey::from_bytes(&key))
}

fn check_key_file(path: &Path, f: &File, uid: u32) -> Result<(), ImageError> {
    let m = f.metadata().map_err(|e| key_err(path, e.to_string()))?;
    if !m.is_file() {
        return Err(key_err(path, "key is not a regular file"));
    }
    if m.uid() != uid {
        return Err(key_err(
            path,
            format!(
                "key file owned by uid {}, not uid {uid}: refusing it",
                m.uid()
            ),
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(key_err(
            path,
            format!(
                "key file has mode {:04o}, must be 0600 or stricter",
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

fn load_or_create(path: &Path) -> Result<ImageKey, ImageError> {
    let uid = euid();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => return Err(key_err(path, "key file has no directory")),
    };
    if !dir.exists() {
        if let Some(up) = dir.parent() {
            std::fs::create_dir_all(up).map_err(|e| key_err(up, e.to_string()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // Whatever the umask: exactly 0700.
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .map_err(|e| key_err(&dir, e.to_string()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(key_err(&dir, e.to_string())),
        }
    }
    check_dir(&dir, uid)?;
    match load(path, uid) {
        Ok(k) => return Ok(k),
        Err(ImageError::Key { .. }) if !path_exists_nofollow(path) => {}
        // Another supervisor (several launches checkpoint at once) may
        // have created it between the failed open and the check: once
        // more, now that it exists.
        Err(_) => return load(path, uid),
    }
    let mut bytes = [0u8; KEY_LEN];
    getrandom(&mut bytes).map_err(|e| key_err(path, format!("getrandom: {e}")))?;
    let name = path.file_name().unwrap_or(OsStr::new(KEY_FILE_NAME));
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = create_exclusive(&tmp).map_err(|e| key_err(&tmp, e.to_string()))?;
    let written = f.write_all(&bytes).and_then(|_| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(key_err(&tmp, e.to_string()));
    }
    // link() fails if the key appeared meanwhile: then that key wins.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            let _ = File::open(&dir).and_then(|d| d.sync_all());
            tracing::info!("created image key {}", path.display());
            Ok(ImageKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path, uid),
        Err(e) => Err(key_err(path, e.to_string())),
    }
}

fn path_exists_nofollow(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Creates `path` with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode exactly 0600
/// (whatever the umask), write-only.
pub(crate) fn create_exclusive(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The umask may have removed bits we want, never added any: fchmod to
    // exactly 0600 (a no-op under the usual umasks).
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(f)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of buf.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}
