//! Throughput of the two page-block checks on one core: crc32 (the quick
//! corruption check) and the keyed BLAKE3 block MAC.
//!
//! ```text
//! cargo run --release -p dmtcp-image --example mac_speed -- [MiB]
//! ```
use dmtcp_image::ImageKey;
use std::time::Instant;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let mut data = vec![0u8; 4 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let key = ImageKey::from_bytes(&[3; 32]);
    let rounds = mib / 4;
    for _ in 0..3 {
        let t = Instant::now();
        let mut acc = 0u32;
        for _ in 0..rounds {
            acc ^= crc32fast::hash(std::hint::black_box(&data));
        }
        let crc = (rounds * 4) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut m = 0u8;
        for _ in 0..rounds {
            m ^= key.block_mac(std::hint::black_box(&data))[0];
        }
        let mac = (rounds * 4) as f64 / t.elapsed().as_secs_f64();
        println!("4 MiB blocks, one core: crc32 {crc:.0} MiB/s, keyed BLAKE3 {mac:.0} MiB/s ({acc:x} {m:x})");
    }
}
