//! Files the image crate creates: images and temp files (O_EXCL,
//! O_NOFOLLOW, 0600 whatever the umask), the checkpoint directory (0700),
//! debris of interrupted checkpoints, and the image key.
//!
//! Every test here sets the umask to 0 (the umask is per process, and the
//! point is that modes do not depend on it).
mod common;
use common::*;
use dmtcp_image::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn no_umask() {
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0) };
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn opts() -> WriteOptions {
    WriteOptions {
        codec: Codec::Zstd,
        level: None,
        threads: 1,
        block_size: 2 * 4096,
        key: Some(test_key()),
        adaptive: false,
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn image_and_temp_file_are_0600_and_dir_0700() {
    no_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/ckpt");
    create_private_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("a")), 0o700);
    let path = dir.join("ckpt_x-1.dmtcp");
    let w = ImageWriter::create(&path, opts()).unwrap();
    assert_eq!(mode(w.temp_path()), 0o600, "temp file");
    let temp = w.temp_path().to_path_buf();
    drop(w);
    assert!(!temp.exists(), "an abandoned temp file is removed");
    write_image(&path, opts(), &[zero_pages(1)]);
    assert_eq!(mode(&path), 0o600, "image");
    // An existing directory is left as it is.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    create_private_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o750);
}

/// A symlink planted at the temp name is not followed: the writer refuses
/// it and the file it points to is untouched.
#[test]
fn planted_symlink_at_temp_name_is_refused() {
    no_umask();
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let path = tmp.path().join("ckpt_x-1.dmtcp");
    let temp = tmp
        .path()
        .join(format!("ckpt_x-1.dmtcp.tmp.{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &temp).unwrap();
    if is_root() {
        // Planted by someone else: lchown the link to uid 65534.
        let c = std::ffi::CString::new(temp.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
    }
    let e = match ImageWriter::create(&path, opts()) {
        Ok(_) => panic!("a planted symlink was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("not a file of ours"), "{e}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&temp)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A stale temp file of ours at our own temp name (a crashed writer whose
/// pid we now have) is replaced.
#[test]
fn stale_temp_file_of_ours_is_replaced() {
    no_umask();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ckpt_x-1.dmtcp");
    let temp = tmp
        .path()
        .join(format!("ckpt_x-1.dmtcp.tmp.{}", std::process::id()));
    std::fs::write(&temp, b"old").unwrap();
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o666)).unwrap();
    let w = ImageWriter::create(&path, opts()).unwrap();
    assert_eq!(mode(w.temp_path()), 0o600);
}

/// The next successful commit in a directory removes temp images of dead
/// writers owned by us, and nothing else.
#[test]
fn debris_removed_by_next_checkpoint() {
    no_umask();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A pid that is surely gone: a child we reaped.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let live = 1; // init
    let debris = d.join(format!("ckpt_a_b-7.dmtcp.tmp.{dead}"));
    let live_tmp = d.join(format!("ckpt_a_b-8.dmtcp.tmp.{live}"));
    let ours_now = d.join(format!("ckpt_a_b-9.dmtcp.tmp.{}", std::process::id()));
    let other_name = d.join(format!("notes.txt.tmp.{dead}"));
    let link = d.join(format!("ckpt_a_b-10.dmtcp.tmp.{dead}"));
    for p in [&debris, &live_tmp, &ours_now, &other_name] {
        std::fs::write(p, b"x").unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let foreign = d.join(format!("ckpt_a_b-11.dmtcp.tmp.{dead}"));
    if is_root() {
        std::fs::write(&foreign, b"x").unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    }
    write_image(&d.join("ckpt_a_b-1.dmtcp"), opts(), &[zero_pages(1)]);
    assert!(!debris.exists(), "debris of a dead writer is removed");
    assert!(live_tmp.exists(), "a live writer's temp file stays");
    assert!(ours_now.exists(), "our own temp files stay");
    assert!(other_name.exists(), "only our temp pattern");
    assert!(std::fs::symlink_metadata(&link).is_ok(), "not a symlink");
    if is_root() {
        assert!(foreign.exists(), "not another user's file");
    }
    assert_eq!(temp_image_pid_of("ckpt_a_b-7.dmtcp.tmp.12"), Some(12));
    assert_eq!(temp_image_pid_of("ckpt_a_b-7.dmtcp.tmp.x"), None);
    assert_eq!(temp_image_pid_of("ckpt_a_b-7.dmtcpx.tmp.12"), None);
}

fn temp_image_pid_of(name: &str) -> Option<i32> {
    dmtcp_image::writer::temp_image_pid(name)
}

#[test]
fn key_created_private_and_reloaded() {
    no_umask();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("home/.local/share/dmtcp/image.key");
    let k1 = ImageKey::load_or_create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 32);
    let k2 = ImageKey::load_or_create(&path).unwrap();
    assert_eq!(k1.id(), k2.id(), "the same key is loaded again");
    // A second user's key is another key.
    let other = tmp.path().join("other/dmtcp/image.key");
    let k3 = ImageKey::load_or_create(&other).unwrap();
    assert_ne!(k1.id(), k3.id());
    // Debug never shows the key bytes.
    assert!(format!("{k1:?}").starts_with("ImageKey("));
}

#[test]
fn untrustworthy_key_places_are_refused() {
    no_umask();
    let tmp = tempfile::tempdir().unwrap();
    // Directory open to others.
    let d = tmp.path().join("open");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = ImageKey::load_or_create(&d.join("image.key"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("mode 0755"), "{e}");
    assert!(!e.contains('\n'));
    // Key readable by others.
    let d = tmp.path().join("k");
    let p = d.join("image.key");
    ImageKey::load_or_create(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = ImageKey::load_or_create(&p).unwrap_err().to_string();
    assert!(e.contains("key file has mode 0644"), "{e}");
    // Wrong length.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&p, b"short").unwrap();
    let e = ImageKey::load_or_create(&p).unwrap_err().to_string();
    assert!(e.contains("holds 5 bytes"), "{e}");
    // A symlink as the key.
    std::fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
    assert!(ImageKey::load_or_create(&p).is_err());
    if is_root() {
        // A directory planted by another user.
        let d = tmp.path().join("planted");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        let e = ImageKey::load_or_create(&d.join("image.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("owned by uid 65534, not uid 0"), "{e}");
    }
}

/// Something planted at the final name (a FIFO, a symlink) is replaced by
/// the rename, never opened in a way that blocks or follows it.
#[test]
fn planted_fifo_or_symlink_at_final_name_is_replaced() {
    no_umask();
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let fifo = tmp.path().join("ckpt_f-1.dmtcp");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    write_image(&fifo, opts(), &[zero_pages(1)]);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().is_file());
    let link = tmp.path().join("ckpt_l-1.dmtcp");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    write_image(&link, opts(), &[zero_pages(1)]);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}
