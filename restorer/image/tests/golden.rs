//! Golden files: images written by format 1.0 and committed under
//! `tests/golden/`. The test fails if the encoding changes.
//!
//! If it fails because you changed the format on purpose: bump
//! `format::FORMAT_MAJOR`/`FORMAT_MINOR` (see `docs/image-format.md`),
//! add new golden files for the new version beside the old ones (old
//! versions that are still readable must keep decoding), then regenerate:
//!
//! ```text
//! DMTCP_REGEN_GOLDEN=1 cargo test -p dmtcp-image --test golden
//! ```
mod common;
use common::*;
use dmtcp_image::*;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
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
    }
}

/// Writes the golden input with `codec` into `dir` and returns the bytes.
fn encode(dir: &Path, codec: Codec) -> (ProcessImage, Vec<u8>) {
    let p = dir.join("golden.dmtcp");
    let (meta, _) = write_image(&p, golden_opts(codec), &golden_chunks());
    (meta, std::fs::read(&p).unwrap())
}

fn check(name: &str, codec: Codec, byte_identical: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (meta, bytes) = encode(tmp.path(), codec);
    let golden = golden_dir().join(name);
    if std::env::var_os("DMTCP_REGEN_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&golden, &bytes).unwrap();
        eprintln!("regenerated {}", golden.display());
    }
    // Decoding the committed file gives the input back.
    let r = ImageReader::open(&golden).unwrap();
    assert_eq!(r.format_version(), (1, 0));
    assert_eq!(r.codec(), codec);
    assert_eq!(r.meta(), &meta);
    r.verify().unwrap();
    for (run, want) in runs(r.meta()).iter().zip(golden_chunks()) {
        let mut buf = vec![0u8; want.len()];
        r.read_run(run, &mut buf).unwrap();
        assert!(buf == want);
    }
    if byte_identical {
        let committed = std::fs::read(&golden).unwrap();
        assert!(
            committed == bytes,
            "the encoding of {name} changed: bump the format version (see the comment at the top of tests/golden.rs)"
        );
    }
}

/// Uncompressed: every byte is defined by this crate, so re-encoding must
/// give the committed file exactly.
#[test]
fn golden_v1_none() {
    check("v1_0-none.dmtcp", Codec::None, true);
}

/// gzip: decoded only (compressed bytes may differ between zlib versions
/// without any format change).
#[test]
fn golden_v1_gzip() {
    check("v1_0-gzip.dmtcp", Codec::Gzip, false);
}

/// zstd: decoded only, as for gzip.
#[test]
fn golden_v1_zstd() {
    check("v1_0-zstd.dmtcp", Codec::Zstd, false);
}
