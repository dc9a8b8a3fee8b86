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
            key: None,
            adaptive: false,
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
    for codec in [Codec::None, Codec::Gzip, Codec::Zstd, Codec::Lz4] {
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
    for codec in [Codec::None, Codec::Gzip, Codec::Zstd, Codec::Lz4] {
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
    assert_eq!((FORMAT_MAJOR, FORMAT_MINOR), (2, 5));
    let dir = tempfile::tempdir().unwrap();
    let (path, chunks) = small_image(dir.path(), Codec::Gzip);
    // Re-crafting the current version is accepted (the crc recomputation is right).
    set_version(&path, 2, 5);
    open_and_read(&path, &chunks).unwrap();

    set_version(&path, 3, 0);
    let msg = ImageReader::open(&path).unwrap_err().to_string();
    assert!(
        msg.ends_with("image format 3.0 is newer than this dmtcp-restart (2.5)"),
        "{msg}"
    );

    // A newer minor may carry metadata this reader cannot decode: refused.
    set_version(&path, 2, 6);
    let msg = ImageReader::open(&path).unwrap_err().to_string();
    assert!(
        msg.ends_with("image format 2.6 is newer than this dmtcp-restart (2.5)"),
        "{msg}"
    );

    // 1.x images have no MAC: refused by this reader.
    set_version(&path, 1, 0);
    let msg = ImageReader::open(&path).unwrap_err().to_string();
    assert!(
        msg.ends_with("image format 1.0 is older than this dmtcp-restart (2.5)"),
        "{msg}"
    );

    // The rule itself: a 1.3 reader takes 1.0..=1.3, not 1.4 or 2.x.
    let p = Path::new("x");
    assert!(check_version(p, 1, 0, 1, 3).is_ok());
    assert!(check_version(p, 1, 3, 1, 3).is_ok());
    assert!(check_version(p, 1, 4, 1, 3).is_err());
    assert!(check_version(p, 2, 0, 1, 3).is_err());
    assert!(check_version(p, 0, 3, 1, 3).is_err());
}

/// An image written with the fixed test key.
fn keyed_image(dir: &Path, codec: Codec) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let mut rng = Rng(7);
    let chunks = vec![
        text_pages(&mut rng, 3),
        random_pages(&mut rng, 2),
        zero_pages(1),
    ];
    let path = dir.join(format!("keyed-{}.dmtcp", codec.name()));
    write_image(
        &path,
        WriteOptions {
            codec,
            level: None,
            threads: 2,
            block_size: 2 * 4096,
            key: Some(test_key()),
            adaptive: false,
        },
        &chunks,
    );
    (path, chunks)
}

fn open_keyed(path: &Path) -> Result<ImageReader, ImageError> {
    ImageReader::open_with_key(path, test_key())
}

/// Edits `bytes` with `f`, recomputes every crc (not the MACs: no key)
/// and writes the result to `path`.
fn tamper(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    reseal(&mut b, None);
    std::fs::write(path, &b).unwrap();
}

/// A page block edited with its crc recomputed: the crc is in the block
/// table, which the image MAC covers, so the image is refused at open.
#[test]
fn edited_page_block_with_crc_recomputed_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keyed_image(dir.path(), Codec::None);
    tamper(&path, |b| b[4096 + 100] ^= 0x20);
    let msg = open_keyed(&path).unwrap_err().to_string();
    assert!(msg.contains("not authentic: image MAC mismatch"), "{msg}");
}

/// A page block edited so that its crc stays the same passes every crc
/// check, and is refused by its MAC: by `verify_all` up front, by every
/// read, and by the check the lazy restore uses.
#[test]
fn edited_page_block_with_same_crc_is_refused() {
    for codec in [Codec::None, Codec::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let (path, chunks) = keyed_image(dir.path(), codec);
        let data_start = if codec == Codec::None { 4096 } else { 64 };
        let mut b = std::fs::read(&path).unwrap();
        let stored_len = {
            let r = open_keyed(&path).unwrap();
            r.blocks()[0].stored_len as usize
        };
        flip_keeping_crc(
            &mut b[data_start..data_start + stored_len],
            100 * 8 + 5,
            200,
        );
        std::fs::write(&path, &b).unwrap();
        let r = open_keyed(&path).expect("header, metadata and table are intact");
        let msg = r.verify_all().unwrap_err().to_string();
        assert!(
            msg.ends_with("not authentic: page block 0 MAC mismatch (page data edited)"),
            "{codec:?}: {msg}"
        );
        let r = open_keyed(&path).unwrap();
        let run = runs(r.meta())[0];
        let mut buf = vec![0u8; chunks[0].len()];
        let msg = r.read_run(&run, &mut buf).unwrap_err().to_string();
        assert!(msg.contains("MAC mismatch"), "{msg}");
        assert!(r.read_runs_parallel(&[run], &|_, _| Ok(())).is_err());
        // The check the lazy restore uses says the same.
        let b = r.blocks()[0];
        let stored = {
            let all = std::fs::read(&path).unwrap();
            all[b.offset as usize..(b.offset + b.stored_len) as usize].to_vec()
        };
        assert!(r.block_check().check(0, &stored).is_err());
        // Untouched blocks still pass.
        let b1 = r.blocks()[1];
        let all = std::fs::read(&path).unwrap();
        r.block_check()
            .check(
                1,
                &all[b1.offset as usize..(b1.offset + b1.stored_len) as usize],
            )
            .unwrap();
    }
}

/// Edited metadata, block table or header with the crcs recomputed is
/// refused at open, before the metadata is decoded.
#[test]
fn edited_sections_with_crc_recomputed_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keyed_image(dir.path(), Codec::None);
    let orig = std::fs::read(&path).unwrap();
    let n = orig.len();
    let meta_off = u64::from_le_bytes(orig[n - 96..n - 88].try_into().unwrap()) as usize;
    let table_off = u64::from_le_bytes(orig[n - 72..n - 64].try_into().unwrap()) as usize;
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("metadata", Box::new(move |b| b[meta_off + 3] ^= 1)),
        // A block's raw length is in the table only.
        (
            "block table",
            Box::new(move |b| b[table_off + 16 + 1] ^= 0x10),
        ),
        ("block table MAC", Box::new(move |b| b[table_off + 40] ^= 1)),
        ("trailer MAC", Box::new(move |b| b[n - 40] ^= 1)),
    ];
    for (what, f) in cases {
        std::fs::write(&path, &orig).unwrap();
        tamper(&path, f);
        let msg = open_keyed(&path).unwrap_err().to_string();
        assert!(
            msg.contains("not authentic") || msg.contains("corrupt image"),
            "{what}: {msg}"
        );
    }
    // The crc recomputation itself leaves a good image good.
    std::fs::write(&path, &orig).unwrap();
    tamper(&path, |_| {});
    open_keyed(&path).unwrap().verify_all().unwrap();
}

/// Header fields readers used to ignore are checked (crc recomputed each
/// time, so only the field check can refuse).
#[test]
fn header_fields_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keyed_image(dir.path(), Codec::Zstd);
    let orig = std::fs::read(&path).unwrap();
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|b| b[21] = 1), "header reserved bytes not zero"),
        (Box::new(|b| b[30] = 1), "header reserved bytes not zero"),
        (Box::new(|b| b[57] = 1), "header reserved bytes not zero"),
        (Box::new(|b| b[16] = 2), "unknown header flags"),
        (Box::new(|b| b[16] = 1), "do not match codec"),
        (
            Box::new(|b| b[24..28].copy_from_slice(&0u32.to_le_bytes())),
            "block size 0",
        ),
        (
            Box::new(|b| b[24..28].copy_from_slice(&4097u32.to_le_bytes())),
            "block size 4097",
        ),
        // Smaller than the blocks the table lists.
        (
            Box::new(|b| b[24..28].copy_from_slice(&4096u32.to_le_bytes())),
            "bad length",
        ),
        (Box::new(|b| b[32] = 65), "page data start 65"),
        // The key id is covered by the image MAC too.
        (Box::new(|b| b[45] ^= 1), "written with image key"),
        // Trailer and block-table reserved bytes.
        (
            Box::new(|b| {
                let n = b.len();
                b[n - 96 + 50] = 1
            }),
            "trailer reserved bytes not zero",
        ),
    ];
    for (edit, want) in cases {
        std::fs::write(&path, &orig).unwrap();
        tamper(&path, edit);
        let msg = open_keyed(&path).unwrap_err().to_string();
        assert!(msg.contains(want), "want `{want}`: {msg}");
        assert!(!msg.contains('\n'));
    }
}

#[test]
fn image_of_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keyed_image(dir.path(), Codec::Gzip);
    let other = std::sync::Arc::new(ImageKey::from_bytes(&[1; 32]));
    let msg = ImageReader::open_with_key(&path, other)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not authentic: written with image key"),
        "{msg}"
    );
    // Forged with the wrong key but claiming ours: the MAC says no.
    let mut b = std::fs::read(&path).unwrap();
    b[40..56].copy_from_slice(&test_key().id());
    reseal(&mut b, Some(&ImageKey::from_bytes(&[1; 32])));
    std::fs::write(&path, &b).unwrap();
    let msg = open_keyed(&path).unwrap_err().to_string();
    assert!(msg.contains("image MAC mismatch"), "{msg}");
}

#[test]
fn group_writable_image_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keyed_image(dir.path(), Codec::Zstd);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
    let msg = open_keyed(&path).unwrap_err().to_string();
    assert!(
        msg.contains("writable by group or others (mode 0620)"),
        "{msg}"
    );
}

/// Seeded random mutation of real and golden images (bit flips,
/// truncations, extensions, length and offset fields set to edge values,
/// random bytes), fed to the reader and the inspect path: never a panic,
/// always a clean one-line error naming the file. Half the mutants get
/// their crcs and MACs recomputed with the key, so the parser behind the
/// checks is exercised too; a mutant without that must always be refused.
#[test]
fn fuzz_reader_and_inspect() {
    let iterations: usize = std::env::var("DMTCP_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("DMTCP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d);
    let dir = tempfile::tempdir().unwrap();
    let mut bases: Vec<Vec<u8>> = [Codec::None, Codec::Gzip, Codec::Zstd]
        .iter()
        .map(|&c| std::fs::read(keyed_image(dir.path(), c).0).unwrap())
        .collect();
    // Golden images (another key): refused unless resealed with the test key.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for e in std::fs::read_dir(&golden).unwrap() {
        bases.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    let path = dir.path().join("mutant.dmtcp");
    let mut rng = Rng(seed);
    let (mut accepted, mut refused) = (0usize, 0usize);
    for it in 0..iterations {
        let base = &bases[(rng.next() % bases.len() as u64) as usize];
        let mut b = base.clone();
        let what = mutate(&mut rng, &mut b);
        let resealed = rng.next().is_multiple_of(2);
        if resealed {
            reseal(&mut b, Some(&test_key()));
        }
        std::fs::write(&path, &b).unwrap();
        let outcome = std::panic::catch_unwind(|| -> Result<String, ImageError> {
            let r = open_keyed(&path)?;
            let text = describe(&r);
            r.verify_all()?;
            for run in runs(r.meta()) {
                if run.npages <= 4096 {
                    let mut buf = vec![0u8; (run.npages * 4096) as usize];
                    r.read_run(&run, &mut buf)?;
                }
            }
            Ok(text)
        });
        let outcome = outcome.unwrap_or_else(|_| {
            panic!("iteration {it} (seed {seed:#x}, {what}, resealed {resealed}): panic")
        });
        match outcome {
            Ok(_) => {
                accepted += 1;
                assert!(
                    resealed || b == *base,
                    "iteration {it} ({what}): an edited image without recomputed MACs was accepted"
                );
            }
            Err(e) => {
                refused += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains("mutant.dmtcp") && !msg.contains('\n') && msg.len() < 400,
                    "iteration {it} ({what}): unclean error: {msg}"
                );
            }
        }
    }
    eprintln!("{iterations} mutants: {accepted} accepted, {refused} refused");
    assert!(refused > iterations / 4);
}

/// One random mutation; returns what it did.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) -> String {
    let n = b.len().max(1);
    let pick = |rng: &mut Rng, n: usize| (rng.next() % n as u64) as usize;
    match rng.next() % 6 {
        0 => {
            let k = 1 + pick(rng, 8);
            for _ in 0..k {
                let i = pick(rng, n);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << (rng.next() % 8);
                }
            }
            format!("{k} bit flips")
        }
        1 => {
            let len = pick(rng, n);
            b.truncate(len);
            format!("truncated to {len}")
        }
        2 => {
            let k = 1 + pick(rng, 5000);
            for _ in 0..k {
                b.push(rng.next() as u8);
            }
            format!("{k} bytes appended")
        }
        3 | 4 => {
            // A length, offset or count field set to an edge value.
            let len = b.len();
            if len < 160 {
                return "too short for fields".into();
            }
            let t0 = len - 96;
            let table = u64::from_le_bytes(b[t0 + 24..t0 + 32].try_into().unwrap()) as usize;
            let count = u64::from_le_bytes(b[t0 + 32..t0 + 40].try_into().unwrap()) as usize;
            let mut fields: Vec<(usize, usize)> = vec![
                (14, 2),
                (24, 4),
                (32, 8),
                (t0, 8),
                (t0 + 8, 8),
                (t0 + 16, 8),
                (t0 + 24, 8),
                (t0 + 32, 8),
            ];
            if count > 0 && count < 1000 && table + count * 64 <= t0 {
                let e = table + 64 * pick(rng, count);
                fields.extend([(e, 8), (e + 8, 8), (e + 16, 8)]);
            }
            let (at, w) = fields[pick(rng, fields.len())];
            let old = {
                let mut a = [0u8; 8];
                a[..w].copy_from_slice(&b[at..at + w]);
                u64::from_le_bytes(a)
            };
            let values = [
                0,
                1,
                4095,
                4096,
                4097,
                old.wrapping_add(1),
                old.wrapping_sub(1),
                old.wrapping_add(4096),
                old.wrapping_mul(2),
                len as u64,
                u32::MAX as u64,
                u64::MAX,
                1 << 30,
                (1 << 30) + 4096,
                rng.next(),
            ];
            let v = values[pick(rng, values.len())];
            b[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
            format!("field at {at} ({w} bytes): {old} -> {v}")
        }
        _ => {
            let at = pick(rng, n);
            let k = 1 + pick(rng, 64);
            for i in at..(at + k).min(b.len()) {
                b[i] = rng.next() as u8;
            }
            format!("{k} random bytes at {at}")
        }
    }
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
