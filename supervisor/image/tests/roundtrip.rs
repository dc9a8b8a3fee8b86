mod common;
use common::*;
use dmtcp_image::*;
use std::sync::Mutex;

const CODECS: [Codec; 4] = [Codec::None, Codec::Gzip, Codec::Zstd, Codec::Lz4];

fn opts(codec: Codec, block_pages: usize) -> WriteOptions {
    WriteOptions {
        codec,
        level: None,
        threads: 2,
        block_size: block_pages * 4096,
        key: None,
        adaptive: false,
    }
}

/// Mixed content: random, zero, text, a run bigger than a block, many small runs.
fn mixed_chunks() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut c = vec![
        random_pages(&mut rng, 3),
        zero_pages(5),
        text_pages(&mut rng, 7),
        text_pages(&mut rng, 41), // > block of 16 pages: spans 3-4 blocks
        random_pages(&mut rng, 16),
    ];
    for i in 0..150 {
        c.push(if i % 3 == 0 {
            random_pages(&mut rng, 1)
        } else {
            text_pages(&mut rng, 1 + i % 2)
        });
    }
    c
}

fn check_contents(r: &ImageReader, chunks: &[Vec<u8>]) {
    let rs = runs(r.meta());
    assert_eq!(rs.len(), chunks.len());
    for (run, want) in rs.iter().zip(chunks) {
        let mut buf = vec![0xeeu8; want.len()];
        r.read_run(run, &mut buf).unwrap();
        assert!(buf == *want, "read_run mismatch at {:#x}", run.addr);
    }
    let got: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; rs.len()]);
    r.read_runs_parallel(&rs, &|i, bytes| {
        let mut g = got.lock().unwrap();
        assert!(g[i].is_none(), "run {i} delivered twice");
        g[i] = Some(bytes.to_vec());
        Ok(())
    })
    .unwrap();
    for (i, (g, want)) in got
        .into_inner()
        .unwrap()
        .into_iter()
        .zip(chunks)
        .enumerate()
    {
        assert!(
            g.as_deref() == Some(&want[..]),
            "read_runs_parallel mismatch for run {i}"
        );
    }
}

#[test]
fn round_trip_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = mixed_chunks();
    for codec in CODECS {
        for block_pages in [16, 1024] {
            let path = dir
                .path()
                .join(format!("img-{}-{block_pages}.dmtcp", codec.name()));
            let (meta, size) = write_image(&path, opts(codec, block_pages), &chunks);
            let r = ImageReader::open(&path).unwrap();
            assert_eq!(r.file_size(), size);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
            assert_eq!(r.codec(), codec);
            assert_eq!(r.meta(), &meta);
            r.verify().unwrap();
            check_contents(&r, &chunks);
            if codec == Codec::None {
                for run in runs(&meta) {
                    assert!(r.run_file_offset(&run).is_some());
                }
            } else {
                assert!(r.run_file_offset(&runs(&meta)[0]).is_none());
            }
        }
    }
}

#[test]
fn single_call_bigger_than_block_and_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let chunks = vec![text_pages(&mut rng, 300), random_pages(&mut rng, 2)];
    for codec in CODECS {
        let path = dir.path().join(format!("big-{}.dmtcp", codec.name()));
        let mut o = opts(codec, 4);
        o.threads = 1;
        write_image(&path, o, &chunks);
        let r = ImageReader::open(&path).unwrap();
        assert!(r.block_count() >= 76);
        r.verify().unwrap();
        check_contents(&r, &chunks);
    }
}

#[test]
fn empty_image_and_default_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.dmtcp");
    let (meta, _) = write_image(&path, WriteOptions::default(), &[]);
    let r = ImageReader::open(&path).unwrap();
    assert_eq!(r.meta(), &meta);
    assert_eq!(r.block_count(), 0);
    r.verify().unwrap();
}

#[test]
fn add_pages_rejects_partial_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ImageWriter::create(&dir.path().join("x.dmtcp"), WriteOptions::default()).unwrap();
    let e = w.add_pages(&[0u8; 100]).unwrap_err();
    assert!(e.to_string().contains("multiple of 4096"), "{e}");
    assert!(ImageWriter::create(
        &dir.path().join("y.dmtcp"),
        WriteOptions {
            block_size: 1000,
            key: None,
            ..WriteOptions::default()
        }
    )
    .is_err());
}

/// The adaptive default codec stores a block raw without trying when told
/// compressing would not pay, and backs off after a block that did not
/// compress: raw and compressed blocks mix in one image, and every page
/// reads back.
#[test]
fn adaptive_encoder_mixes_raw_and_compressed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let mut o = opts(Codec::Zstd, 8);
    o.adaptive = true;
    let mut enc = BlockEncoder::new(&o);
    assert!(enc.adaptive());
    // text, text (told not to compress), random, text, text, text
    let chunks: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            if i == 2 {
                random_pages(&mut rng, 8)
            } else {
                text_pages(&mut rng, 8)
            }
        })
        .collect();
    let path = dir.path().join("mixed.dmtcp");
    write_image_with(&path, o, &chunks, |w, i, c| {
        let b = enc.encode_choosing(c.to_vec(), Vec::new(), i != 1).unwrap();
        let (block, _, _) = w.add_encoded(b).unwrap();
        DataRef { block, offset: 0 }
    });
    let r = ImageReader::open(&path).unwrap();
    let codecs: Vec<Codec> = r.blocks().iter().map(|b| b.codec).collect();
    // Block 2 did not compress: the next two are stored raw untried.
    assert_eq!(
        codecs,
        [
            Codec::Zstd,
            Codec::None,
            Codec::None,
            Codec::None,
            Codec::None,
            Codec::Zstd
        ]
    );
    check_contents(&r, &chunks);
    // Not adaptive: every block is tried, whatever the caller says.
    let mut plain = BlockEncoder::new(&opts(Codec::Zstd, 8));
    let b = plain
        .encode_choosing(chunks[0].clone(), Vec::new(), false)
        .unwrap();
    assert_eq!(b.codec, Codec::Zstd);
}

#[test]
fn incompressible_blocks_stored_raw_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(99);
    let chunks = vec![random_pages(&mut rng, 40)];
    let path = dir.path().join("rand.dmtcp");
    write_image(&path, opts(Codec::Gzip, 8), &chunks);
    let r = ImageReader::open(&path).unwrap();
    // Random data does not compress: stored raw, so the file is about the raw size.
    assert!(r.file_size() < 40 * 4096 + 4096);
    check_contents(&r, &chunks);
}

#[test]
fn drop_without_finish_removes_temp_and_keeps_existing_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.dmtcp");
    let chunks = vec![zero_pages(2)];
    write_image(&path, opts(Codec::Gzip, 16), &chunks);
    let before = std::fs::read(&path).unwrap();
    for codec in CODECS {
        let mut w = ImageWriter::create(&path, opts(codec, 1)).unwrap();
        let tmp = w.temp_path().to_path_buf();
        assert!(tmp.exists());
        assert!(tmp
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("ckpt.dmtcp.tmp."));
        w.add_pages(&text_pages(&mut Rng(1), 20)).unwrap();
        drop(w);
        assert!(!tmp.exists(), "temp file left behind");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn finish_replaces_existing_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.dmtcp");
    write_image(&path, opts(Codec::Gzip, 16), &[zero_pages(2)]);
    let chunks = vec![text_pages(&mut Rng(5), 3)];
    write_image(&path, opts(Codec::Zstd, 16), &chunks);
    let r = ImageReader::open(&path).unwrap();
    assert_eq!(r.codec(), Codec::Zstd);
    check_contents(&r, &chunks);
}

#[test]
fn unwritable_dir_is_named() {
    let e = ImageWriter::create(
        std::path::Path::new("/nonexistent-dir-xyz/ckpt.dmtcp"),
        WriteOptions::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("/nonexistent-dir-xyz"), "{e}");
}

#[test]
fn mmap_uncompressed_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.dmtcp");
    let chunks = mixed_chunks();
    let (meta, _) = write_image(&path, opts(Codec::None, 16), &chunks);
    let r = ImageReader::open(&path).unwrap();
    use std::os::fd::AsRawFd;
    for (run, want) in runs(&meta).iter().zip(&chunks) {
        let off = r
            .run_file_offset(run)
            .expect("uncompressed run has a file offset");
        assert_eq!(off % 4096, 0);
        let len = want.len();
        // SAFETY: a fresh private read-only mapping of `len` bytes of a file we
        // keep open; the kernel picks the address, so nothing else is aliased,
        // and it is unmapped below before the slice goes out of scope.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                r.file().as_raw_fd(),
                off as libc::off_t,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: p points to `len` readable bytes mapped above and not yet unmapped.
        let got = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
        assert!(got == &want[..], "mmap'd bytes differ at {:#x}", run.addr);
        // SAFETY: unmapping exactly the mapping created above; `got` is not used after.
        assert_eq!(unsafe { libc::munmap(p, len) }, 0);
    }
}

#[test]
fn image_file_names() {
    assert_eq!(
        image_file_name("a.out", "c0ffee", "0a1b", 40),
        "ckpt_a.out_c0ffee-0a1b-40.dmtcp"
    );
    assert_eq!(
        image_file_name("/usr/bin/my prog", "x", "1", 1),
        "ckpt__usr_bin_my_prog_x-1-1.dmtcp"
    );
    assert_eq!(
        parse_image_file_name("ckpt_my-prog_c0ffee-0a1b-40.dmtcp"),
        Some(("c0ffee".into(), "0a1b".into(), 40))
    );
    assert_eq!(
        parse_image_file_name("ckpt_a_g_c0ffee-0a1b-7_g12.dmtcp"),
        Some(("c0ffee".into(), "0a1b".into(), 7))
    );
    assert_eq!(parse_image_file_name("ckpt_a.out_c0ffee-40.dmtcp"), None);
    assert_eq!(parse_image_file_name("mine.dmtcp"), None);
}

#[test]
fn codec_names() {
    for c in CODECS {
        assert_eq!(Codec::parse(c.name()).unwrap(), c);
    }
    assert_eq!(Codec::parse("GZIP").unwrap(), Codec::Gzip);
    let e = Codec::parse("lzma").unwrap_err();
    assert!(e.to_string().contains("lzma"));
}

#[test]
fn codec_levels() {
    assert_eq!(Codec::parse_spec("zstd").unwrap(), (Codec::Zstd, None));
    assert_eq!(
        Codec::parse_spec("zstd:-5").unwrap(),
        (Codec::Zstd, Some(-5))
    );
    assert_eq!(Codec::parse_spec("gzip:6").unwrap(), (Codec::Gzip, Some(6)));
    for bad in ["gzip:10", "zstd:0", "zstd:23", "none:1", "zstd:fast"] {
        let e = Codec::parse_spec(bad).unwrap_err().to_string();
        assert!(e.contains("level"), "{bad}: {e}");
    }
    // Every accepted level really writes a readable image.
    let dir = tempfile::tempdir().unwrap();
    for (codec, level) in [(Codec::Zstd, -7), (Codec::Zstd, 3), (Codec::Gzip, 9)] {
        let path = dir.path().join(format!("l{level}.dmtcp"));
        let mut o = opts(codec, 16);
        o.level = Some(level);
        let pages = text_pages(&mut Rng((level + 10) as u64), 20);
        write_image(&path, o, std::slice::from_ref(&pages));
        let r = ImageReader::open(&path).unwrap();
        assert_eq!(r.codec(), codec);
    }
}

#[test]
fn describe_shows_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.dmtcp");
    write_image(
        &path,
        opts(Codec::Gzip, 16),
        &[text_pages(&mut Rng(3), 3), zero_pages(2)],
    );
    let r = ImageReader::open(&path).unwrap();
    let s = describe(&r);
    for want in [
        "format      2.5",
        "pids        virtual (run without namespaces)",
        "sandbox     policy \"default\" (uid 1000), net none",
        "seccomp     2 filter(s); per thread 42:[0, 1]",
        "launch      0a1b2c3d",
        "set         2 process(es): 0a1b2c3d/42 0a1b2c3d/43",
        "authenticated",
        "groups []",
        "codec       gzip",
        "a1b2c3d4",
        "generation  2",
        "node1",
        "2023-11-14",
        "comm    counter",
        "/usr/bin/counter",
        "cmdline counter --n 5",
        "rip 0x401000 rsp 0x7ffd00001000",
        "dmtcp-ckpt",
        "/tmp/log",
        "socket:[1234]",
        "[heap]",
        "rw-p",
        "total pages saved 5",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
}

/// The clocks of the computation round-trip, and an image without them reads
/// back as one with none.
#[test]
fn clocks_record() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = vec![zero_pages(2)];
    let plain = dir.path().join("plain.dmtcp");
    let (mut meta, _) = write_image(&plain, opts(Codec::Gzip, 4), &chunks);
    let r = ImageReader::open(&plain).unwrap();
    assert_eq!(r.meta(), &meta);

    meta.clocks = None;
    let untimed = dir.path().join("untimed.dmtcp");
    let mut w = ImageWriter::create(&untimed, opts(Codec::Gzip, 4)).unwrap();
    for (vma, c) in meta.vmas.iter_mut().zip(&chunks) {
        vma.pages[0].data = w.add_pages(c).unwrap();
    }
    w.finish(&meta).unwrap();
    assert_eq!(ImageReader::open(&untimed).unwrap().meta().clocks, None);

    let timed = dir.path().join("timed.dmtcp");
    let mut w = ImageWriter::create(&timed, opts(Codec::Gzip, 4)).unwrap();
    let mut meta = meta.clone();
    for (vma, c) in meta.vmas.iter_mut().zip(&chunks) {
        vma.pages[0].data = w.add_pages(c).unwrap();
    }
    meta.clocks = Some(Clocks {
        monotonic_ns: 123_456_789_012,
        boottime_ns: 223_456_789_012,
    });
    w.finish(&meta).unwrap();
    let r = ImageReader::open(&timed).unwrap();
    assert_eq!(r.meta(), &meta);
    check_contents(&r, &chunks);
}
