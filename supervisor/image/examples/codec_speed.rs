//! Codec throughput through the real writer and reader.
//!
//! ```text
//! cargo run --release -p dmtcp-image --example codec_speed -- [MiB] [threads] [dir]
//! cargo run --release -p dmtcp-image --example codec_speed -- --file PATH
//! ```
//! (`--file`: only each codec alone, on one thread, over the file's bytes.)
//! Defaults: 1024 MiB, 2 threads, `/dev/shm` if present (so the disk does
//! not dominate), else the temp dir. Data mix per page (as in PLATFORM.md):
//! 40% zero, 25% text, 20% heap-like words, 15% random. Written as runs of
//! 1-64 pages, the way a checkpoint writes VMAs.
use dmtcp_image::*;
use std::path::PathBuf;
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn make_data(mib: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the ",
        "checkpoint ",
        "of ",
        "process ",
        "and ",
        "memory ",
        "restart ",
        "a ",
        "thread\n",
        "signal ",
        "in ",
        "to ",
        "is ",
        "file ",
        "page ",
        "for ",
        "0x7ffd1234 ",
        "error: ",
        "ok\n",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut v = vec![0u8; mib << 20];
    for page in v.chunks_mut(4096) {
        let kind = rng.next() % 100;
        if kind < 40 {
            // zero page
        } else if kind < 65 {
            let mut i = 0;
            while i < page.len() {
                let w = WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes();
                let n = w.len().min(page.len() - i);
                page[i..i + n].copy_from_slice(&w[..n]);
                i += n;
            }
        } else if kind < 85 {
            // heap-like: pointers, small ints, zeros
            let base = 0x5555_5555_0000u64 + (rng.next() % 4096) * 4096;
            for w in page.chunks_mut(8) {
                let r = rng.next();
                let x = match r % 4 {
                    0 => base + (r >> 40) % 65536,
                    1 => (r >> 32) % 1000,
                    2 => 0,
                    _ => r >> 48,
                };
                w.copy_from_slice(&x.to_le_bytes());
            }
        } else {
            for w in page.chunks_mut(8) {
                w.copy_from_slice(&rng.next().to_le_bytes());
            }
        }
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--file") {
        // The codecs alone over a file's bytes (an uncompressed image:
        // the memory a checkpoint compressed).
        let path = args.get(2).expect("--file PATH");
        let data = std::fs::read(path).expect("read the file");
        println!("{} MiB of {path}", data.len() >> 20);
        raw_speeds(&data);
        return;
    }
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let dir = args.get(3).map(PathBuf::from).unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    eprintln!("generating {mib} MiB ...");
    let data = make_data(mib);
    let mut rng = Rng(1);
    let mut cuts = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let n = ((1 + rng.next() % 64) as usize * 4096).min(data.len() - at);
        cuts.push((at, n));
        at += n;
    }
    println!(
        "{mib} MiB, {threads} threads, {} runs, dir {} (write includes fsync)",
        cuts.len(),
        dir.display()
    );
    let t = Instant::now();
    let crc = crc32fast::hash(&data);
    println!(
        "crc32 1 thread: {:.0} MB/s ({crc:08x})",
        data.len() as f64 / 1e6 / t.elapsed().as_secs_f64()
    );
    raw_speeds(&data);
    println!(
        "{:<8} {:>10} {:>7} {:>12} {:>12}",
        "codec", "size MiB", "ratio", "write MB/s", "read MB/s"
    );
    for (codec, level) in [
        (Codec::None, 0),
        (Codec::Zstd, 3),
        (Codec::Zstd, 1),
        (Codec::Gzip, 1),
        (Codec::Lz4, 0),
    ] {
        let path = dir.join(format!("codec_speed_{}.dmtcp", std::process::id()));
        let opts = WriteOptions {
            codec,
            level: (codec != Codec::Lz4).then_some(level),
            threads,
            block_size: 4 << 20,
            key: None,
            adaptive: false,
        };
        let t = Instant::now();
        let mut w = ImageWriter::create(&path, opts).expect("create");
        let mut runs = Vec::new();
        for &(off, n) in &cuts {
            let r = w.add_pages(&data[off..off + n]).expect("add_pages");
            runs.push(PageRun {
                addr: 0x1000_0000 + off as u64,
                npages: (n / 4096) as u64,
                data: r,
            });
        }
        let meta = ProcessImage {
            computation: ComputationInfo {
                id: "bench".into(),
                generation: 1,
                host: "h".into(),
                taken_at_unix_ns: 0,
                coord_host: "h".into(),
                coord_port: 0,
                launch: String::new(),
                set: Vec::new(),
                no_namespaces: false,
            },
            process: bench_process(),
            threads: vec![],
            fds: vec![],
            vmas: vec![Vma {
                start: 0x1000_0000,
                end: 0x1000_0000 + data.len() as u64,
                prot: 3,
                shared: false,
                kind: VmaKind::Anon { name: None },
                growsdown: false,
                account: false,
                pages: runs.clone(),
                from_parent: vec![],
            }],
            parent: None,
            ipc: None,
            clocks: None,
            security: Default::default(),
            passcred_fds: Vec::new(),
        };
        let size = w.finish(&meta).expect("finish");
        let wt = t.elapsed().as_secs_f64();

        let r = ImageReader::open(&path).expect("open");
        let t = Instant::now();
        r.read_runs_parallel(&runs, &|i, bytes| {
            let (off, n) = cuts[i];
            assert_eq!(bytes.len(), n);
            assert!(bytes[..64] == data[off..off + 64]);
            Ok(())
        })
        .expect("read");
        let rt = t.elapsed().as_secs_f64();
        let mb = data.len() as f64 / 1e6;
        let name = format!("{}-{}", codec.name(), level);
        println!(
            "{:<8} {:>10.1} {:>7.2} {:>12.0} {:>12.0}",
            if codec == Codec::None { "none" } else { &name },
            size as f64 / (1 << 20) as f64,
            data.len() as f64 / size as f64,
            mb / wt,
            mb / rt
        );
        drop(r);
        let _ = std::fs::remove_file(&path);
    }
}

/// Each codec alone on one thread over `data` in 4 MiB blocks, at the
/// levels a checkpoint uses (zstd 1 and 3, gzip 1, lz4): no writer, no
/// file.
fn raw_speeds(data: &[u8]) {
    // Codec alone, one thread, 4 MiB blocks (no writer, no file).
    for level in [1u32] {
        let t = Instant::now();
        let mut out = 0usize;
        for b in data.chunks(4 << 20) {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(b.len()),
                flate2::Compression::new(level),
            );
            std::io::Write::write_all(&mut e, b).unwrap();
            out += e.finish().unwrap().len();
        }
        println!(
            "raw gzip-{level} 1 thread: {:.0} MB/s ratio {:.2}",
            data.len() as f64 / 1e6 / t.elapsed().as_secs_f64(),
            data.len() as f64 / out as f64
        );
    }
    for level in [1i32, 3] {
        let t = Instant::now();
        let mut out = 0usize;
        let mut c = zstd::bulk::Compressor::new(level).unwrap();
        for b in data.chunks(4 << 20) {
            out += c.compress(b).unwrap().len();
        }
        println!(
            "raw zstd-{level} 1 thread: {:.0} MB/s ratio {:.2}",
            data.len() as f64 / 1e6 / t.elapsed().as_secs_f64(),
            data.len() as f64 / out as f64
        );
    }
    {
        let t = Instant::now();
        let mut out = 0usize;
        let mut buf = vec![0u8; lz4_flex::block::get_maximum_output_size(4 << 20)];
        for b in data.chunks(4 << 20) {
            out += lz4_flex::block::compress_into(b, &mut buf).unwrap();
        }
        println!(
            "raw lz4-0 1 thread: {:.0} MB/s ratio {:.2}",
            data.len() as f64 / 1e6 / t.elapsed().as_secs_f64(),
            data.len() as f64 / out as f64
        );
    }
}

fn bench_process() -> ProcessInfo {
    ProcessInfo {
        vpid: 1,
        vppid: 0,
        vpgid: 1,
        vsid: 1,
        host_pid: 1,
        comm: "bench".into(),
        exe: "/bin/true".into(),
        cmdline: vec![],
        cwd: "/".into(),
        umask: 0o22,
        rlimits: vec![],
        personality: 0,
        caps: Capabilities::default(),
        uid: 0,
        gid: 0,
        creds: Default::default(),
        no_new_privs: false,
        dumpable: 1,
        mm: MmFields::default(),
        auxv: vec![],
        sigactions: vec![],
        shared_pending: vec![],
        itimers: [(0, 0); 3],
        child_subreaper: false,
        posix_timers: Vec::new(),
        zombie: None,
        ctty: None,
    }
}
