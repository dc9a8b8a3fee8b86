//! Golden images: one set per format version, under `tests/golden/`,
//! named `v<major>_<minor>-<codec>.dmtcp`. They are NEVER rewritten: a
//! format change adds a new version and new files beside the old ones
//! (see "Versions" in `docs/image-format.md`).
//!
//! - [`every_golden_image`] reads every file of every version this reader
//!   supports (`major == ours && minor <= ours`) and checks that every
//!   other version is refused with a one-line error naming both versions.
//! - [`encoding_unchanged_without_version_bump`] encodes a fixed model
//!   with a fixed key and compares it byte for byte with the uncompressed
//!   golden file of the current version: any change of the encoding
//!   (layout, metadata model, MAC) fails it until the version is bumped.
//!
//! Files for a new version are written once by
//! `DMTCP_WRITE_GOLDEN=1 cargo test -p dmtcp-image --test golden`, which
//! only creates files that do not exist yet and never overwrites one.
mod common;
use common::*;
use dmtcp_image::format::{FORMAT_MAJOR, FORMAT_MINOR};
use dmtcp_image::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The key golden images (format 2.0 on) are authenticated with.
fn golden_key() -> Arc<ImageKey> {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    Arc::new(ImageKey::from_bytes(&k))
}

fn golden_chunks() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x00d0_7c0d_e5ee_d001);
    vec![
        text_pages(&mut rng, 2),
        random_pages(&mut rng, 1),
        zero_pages(1),
        text_pages(&mut rng, 3),
    ]
}

fn golden_opts(codec: Codec) -> WriteOptions {
    WriteOptions {
        codec,
        level: Some(1),
        threads: 1,
        block_size: 2 * 4096,
        key: Some(golden_key()),
        adaptive: false,
    }
}

/// Writes the golden input with `codec` into `dir` and returns the bytes.
fn encode(dir: &Path, codec: Codec) -> (ProcessImage, Vec<u8>) {
    let p = dir.join("golden.dmtcp");
    let (meta, _) = write_image(&p, golden_opts(codec), &golden_chunks());
    (meta, std::fs::read(&p).unwrap())
}

/// `v2_0-zstd.dmtcp` -> (2, 0, "zstd").
fn parse_name(name: &str) -> Option<(u16, u16, String)> {
    let rest = name.strip_prefix('v')?.strip_suffix(".dmtcp")?;
    let (ver, codec) = rest.split_once('-')?;
    let (maj, min) = ver.split_once('_')?;
    Some((maj.parse().ok()?, min.parse().ok()?, codec.to_string()))
}

/// A private copy of a golden file (images must not be group- or
/// world-writable, whatever the checkout's umask made them).
fn private_copy(src: &Path, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dst = dir.join(src.file_name().unwrap());
    std::fs::copy(src, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    dst
}

/// Creates the current version's golden files when asked and missing;
/// never touches an existing one.
fn write_missing_golden() {
    if std::env::var_os("DMTCP_WRITE_GOLDEN").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for codec in [Codec::None, Codec::Gzip, Codec::Zstd, Codec::Lz4] {
        let name = format!("v{FORMAT_MAJOR}_{FORMAT_MINOR}-{}.dmtcp", codec.name());
        let path = golden_dir().join(&name);
        let (_, bytes) = encode(tmp.path(), codec);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                std::io::Write::write_all(&mut f, &bytes).unwrap();
                eprintln!("wrote {}", path.display());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                eprintln!("{} exists: left as it is", path.display());
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

#[test]
fn every_golden_image() {
    write_missing_golden();
    let tmp = tempfile::tempdir().unwrap();
    let mut supported = 0;
    let mut current = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        let (major, minor, codec) =
            parse_name(&name).unwrap_or_else(|| panic!("golden file with a bad name: {name}"));
        let path = private_copy(&golden_dir().join(&name), tmp.path());
        let r = ImageReader::open_with_key(&path, golden_key());
        if major != FORMAT_MAJOR || minor > FORMAT_MINOR {
            let msg = r.unwrap_err().to_string();
            let want = format!(
                "{name}: image format {major}.{minor} is {} than this dmtcp-restart ({FORMAT_MAJOR}.{FORMAT_MINOR})",
                if (major, minor) > (FORMAT_MAJOR, FORMAT_MINOR) { "newer" } else { "older" }
            );
            assert!(msg.ends_with(&want), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            continue;
        }
        supported += 1;
        let r = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.format_version(), (major, minor));
        assert_eq!(r.codec().name(), codec);
        r.verify_all().unwrap();
        // Page data means the same in every version.
        for (run, want) in runs(r.meta()).iter().zip(golden_chunks()) {
            let mut buf = vec![0u8; want.len()];
            r.read_run(run, &mut buf).unwrap();
            assert!(buf == want, "{name}: page data differs");
        }
        // The inspect path works on it.
        assert!(describe(&r).contains("counter"));
        if (major, minor) == (FORMAT_MAJOR, FORMAT_MINOR) {
            let (meta, _) = encode(tmp.path(), r.codec());
            assert_eq!(r.meta(), &meta, "{name}: metadata differs");
            current.push(codec);
        }
    }
    assert!(supported > 0, "no golden image of a supported version");
    current.sort();
    assert_eq!(
        current,
        ["gzip", "lz4", "none", "zstd"],
        "golden files of the current format {FORMAT_MAJOR}.{FORMAT_MINOR} are missing: \
         create them once with DMTCP_WRITE_GOLDEN=1 (see the top of tests/golden.rs)"
    );
}

/// Uncompressed: every byte is defined by this crate (compressed bytes may
/// differ between codec library versions without any format change), so
/// re-encoding must give the committed file exactly.
#[test]
fn encoding_unchanged_without_version_bump() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, bytes) = encode(tmp.path(), Codec::None);
    let name = format!("v{FORMAT_MAJOR}_{FORMAT_MINOR}-none.dmtcp");
    let committed = std::fs::read(golden_dir().join(&name)).unwrap_or_else(|e| {
        panic!("{name}: {e} (a new format version needs its golden files, see tests/golden.rs)")
    });
    assert!(
        committed == bytes,
        "the encoding changed while the format stayed {FORMAT_MAJOR}.{FORMAT_MINOR}: bump \
         format::FORMAT_MAJOR or FORMAT_MINOR (docs/image-format.md, \"Versions\") and add the \
         new version's golden files; never rewrite {name}"
    );
}

/// The golden key is not anyone's key: a golden image opened with another
/// key is refused as written with another key, not misread.
#[test]
fn golden_image_with_another_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("v{FORMAT_MAJOR}_{FORMAT_MINOR}-zstd.dmtcp");
    let path = private_copy(&golden_dir().join(name), tmp.path());
    let other = Arc::new(ImageKey::from_bytes(&[0xee; 32]));
    let msg = ImageReader::open_with_key(&path, other)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not authentic: written with image key"),
        "{msg}"
    );
}
