//! Truncated, bit-flipped and version-crafted images are refused, never
//! misread and never panic.
mod common;
use common::*;
use dmtcp_image::format::{check_version, FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN};
use dmtcp_image::*;
use std::path::Path;

fn small_image(dir: &Path, codec: Codec) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let mut rng = Rng(42);
    let chunks = vec![
        text_pages(&mut rng, 3),
        random_pages(&mut rng, 2),
        zero_pages(1),
    ];
    let path = dir.join(format!("small-{}.dmtcp", codec.name()));
    write_image(
        &path,
        WriteOptions {
            codec,
            level: None,
            threads: 2,
            block_size: 2 * 4096,
        },
        &chunks,
    );
    (path, chunks)
}

/// open + verify + read everything; Ok only if all data is exactly right.
fn open_and_read(path: &Path, chunks: &[Vec<u8>]) -> Result<(), ImageError> {
    let r = ImageReader::open(path)?;
    r.verify()?;
    for (run, want) in runs(r.meta()).iter().zip(chunks) {
        let mut buf = vec![0u8; want.len()];
        r.read_run(run, &mut buf)?;
        assert!(buf == *want, "wrong data returned without error");
    }
    Ok(())
}

#[test]
fn truncated_anywhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for codec in [Codec::None, Codec::Gzip, Codec::Zstd] {
        let (path, chunks) = small_image(dir.path(), codec);
        let full = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.dmtcp");
        let mut lens: Vec<usize> = (0..full.len()).step_by(97).collect();
        lens.extend(full.len().saturating_sub(200)..full.len());
        lens.extend(0..80);
        for len in lens {
            std::fs::write(&cut, &full[..len]).unwrap();
            let e = open_and_read(&cut, &chunks)
                .expect_err(&format!("{codec:?}: truncated to {len} accepted"));
            let msg = e.to_string();
            assert!(
                msg.contains("cut.dmtcp"),
                "message does not name the file: {msg}"
            );
        }
        std::fs::write(&cut, &full[..full.len() - 1]).unwrap();
        let msg = ImageReader::open(&cut).unwrap_err().to_string();
        assert!(msg.contains("truncated (trailer missing)"), "{msg}");
    }
}

#[test]
fn any_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    for codec in [Codec::None, Codec::Gzip, Codec::Zstd] {
        let (path, chunks) = small_image(dir.path(), codec);
        let full = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad.dmtcp");
        // Every byte, except inside big raw page areas where every 7th will do.
        let data_end = full.len() - 2000;
        let positions: Vec<usize> = (0..full.len())
            .filter(|&i| i < HEADER_LEN + 64 || i >= data_end || i % 7 == 0)
            .collect();
        let mut copy = full.clone();
        for i in positions {
            copy[i] ^= 0x5a;
            std::fs::write(&bad, &copy).unwrap();
            let r = open_and_read(&bad, &chunks);
            assert!(
                r.is_err(),
                "{codec:?}: flip at {i} of {} not detected",
                full.len()
            );
            copy[i] ^= 0x5a;
        }
    }
}

#[test]
fn flipped_metadata_names_the_section() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_image(dir.path(), Codec::None);
    let mut full = std::fs::read(&path).unwrap();
    // The metadata starts right after the page data (4096 + 6 pages here).
    full[4096 + 6 * 4096 + 10] ^= 1;
    std::fs::write(&path, &full).unwrap();
    let msg = ImageReader::open(&path).unwrap_err().to_string();
    assert!(msg.ends_with("metadata checksum mismatch"), "{msg}");
}

#[test]
fn flipped_block_found_by_verify_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let (path, chunks) = small_image(dir.path(), Codec::None);
    let mut full = std::fs::read(&path).unwrap();
    full[4096 + 4096 + 100] ^= 1; // block 0, second page
    std::fs::write(&path, &full).unwrap();
    let r = ImageReader::open(&path).unwrap();
    let msg = r.verify().unwrap_err().to_string();
    assert!(msg.ends_with("block 0 checksum mismatch"), "{msg}");
    let run = runs(r.meta())[0];
    let mut buf = vec![0u8; chunks[0].len()];
    assert!(r.read_run(&run, &mut buf).is_err());
    assert!(r.read_runs_parallel(&[run], &|_, _| Ok(())).is_err());
}

fn set_version(path: &Path, major: u16, minor: u16) {
    let mut full = std::fs::read(path).unwrap();
    full[10..12].copy_from_slice(&major.to_le_bytes());
    full[12..14].copy_from_slice(&minor.to_le_bytes());
    let crc = crc32(&full[0..60]);
    full[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, &full).unwrap();
}

fn crc32(b: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the crate under test.
    let mut c = !0u32;
    for &x in b {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn versions() {
    assert_eq!((FORMAT_MAJOR, FORMAT_MINOR), (1, 1));
    let dir = tempfile::tempdir().unwrap();
    let (path, chunks) = small_image(dir.path(), Codec::Gzip);
    // Re-crafting the current versions is accepted (the crc recomputation is
    // right); a 1.1 file without the clocks record reads as one with none.
    set_version(&path, 1, 0);
    open_and_read(&path, &chunks).unwrap();
    set_version(&path, 1, 1);
    open_and_read(&path, &chunks).unwrap();

    set_version(&path, 2, 0);
    let msg = ImageReader::open(&path).unwrap_err().to_string();
    assert!(
        msg.ends_with("image format 2.0 is newer than this dmtcp-restart (1.1)"),
        "{msg}"
    );

    // A newer minor may carry metadata this reader cannot decode: refused.
    set_version(&path, 1, 2);
    let msg = ImageReader::open(&path).unwrap_err().to_string();
    assert!(
        msg.ends_with("image format 1.2 is newer than this dmtcp-restart (1.1)"),
        "{msg}"
    );

    set_version(&path, 0, 9);
    let msg = ImageReader::open(&path).unwrap_err().to_string();
    assert!(msg.contains("image format 0.9 is older"), "{msg}");

    // The rule itself: a 1.3 reader takes 1.0..=1.3, not 1.4 or 2.x.
    let p = Path::new("x");
    assert!(check_version(p, 1, 0, 1, 3).is_ok());
    assert!(check_version(p, 1, 3, 1, 3).is_ok());
    assert!(check_version(p, 1, 4, 1, 3).is_err());
    assert!(check_version(p, 2, 0, 1, 3).is_err());
}

#[test]
fn not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.dmtcp");
    std::fs::write(&p, vec![7u8; 10000]).unwrap();
    assert!(ImageReader::open(&p)
        .unwrap_err()
        .to_string()
        .contains("not a dmtcp checkpoint image"));
    std::fs::write(&p, b"").unwrap();
    assert!(ImageReader::open(&p).is_err());
    assert!(ImageReader::open(&dir.path().join("missing.dmtcp"))
        .unwrap_err()
        .to_string()
        .contains("missing.dmtcp: open"));
}

#[test]
fn wrong_arch_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_image(dir.path(), Codec::Zstd);
    let mut full = std::fs::read(&path).unwrap();
    full[8..10].copy_from_slice(&183u16.to_le_bytes()); // aarch64
    let crc = crc32(&full[0..60]);
    full[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &full).unwrap();
    assert!(ImageReader::open(&path)
        .unwrap_err()
        .to_string()
        .contains("architecture 183"));
}
