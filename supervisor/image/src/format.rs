//! On-disk layout of an image file, format 2.1 (see `docs/image-format.md`).
//!
//! ```text
//! offset 0      header (64 bytes)
//!               padding (zeros) up to `data_start`: 64 for compressed images,
//!               4096 for uncompressed ones
//! data_start    page blocks, back to back (block i+1 starts where block i ends)
//! meta_offset   metadata (bincode 2 `config::standard()` of `ProcessImage`,
//!               compressed with the image codec unless it is `none`)
//! table_offset  block table: 64 bytes per block
//! size - 96     trailer (96 bytes)
//! ```
//!
//! All integers are little-endian. Every byte of the file is covered by a
//! check: header, metadata, table and trailer by their crc32, each block by
//! the crc32 in its table entry, the padding by having to be zero; and by a
//! keyed BLAKE3 MAC: each block's in its table entry, the image MAC in the
//! trailer over the header, the trailer's fields, the metadata and the
//! table (see [`crate::key`]). Reserved bytes must be zero.
//!
//! Page data is one logical byte stream cut into blocks; a [`DataRef`]
//! `{block, offset}` names a position in it (`offset` counts from the start
//! of `block`'s uncompressed bytes) and a run's bytes may continue into the
//! following blocks.
//!
//! [`DataRef`]: crate::model::DataRef

use crate::codec::Codec;
use crate::error::ImageError;
use std::io::{Read, Write};
use std::path::Path;

/// File magic, at offset 0 and again at the end of the trailer.
pub const MAGIC: [u8; 8] = *b"DMTCPIMG";
/// ELF machine of x86_64 (`EM_X86_64`), the architecture tag.
pub const ARCH_X86_64: u16 = 62;
pub use crate::version::{FORMAT_MAJOR, FORMAT_MINOR};
/// Size of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Size of the fixed trailer.
pub const TRAILER_LEN: usize = 96;
/// Size of one block-table entry.
pub const BLOCK_ENTRY_LEN: usize = 64;
/// Length of a MAC (keyed BLAKE3).
pub const MAC_LEN: usize = 32;
/// Page size; uncompressed blocks start at multiples of it.
pub const PAGE: u64 = 4096;
/// Header flag: page data is stored raw, page-aligned and contiguous, so
/// runs can be mmap'd from the file. Set exactly when the codec is none.
pub const FLAG_MMAPABLE: u32 = 1;
/// Every flag this version knows; others must be zero.
pub const KNOWN_FLAGS: u32 = FLAG_MMAPABLE;
/// Decode limit for the metadata (uncompressed bytes).
pub const META_LIMIT: usize = 256 << 20;
/// Largest block accepted by the reader (uncompressed bytes).
pub const MAX_BLOCK: u64 = 1 << 30;

/// bincode configuration of the metadata section.
pub(crate) fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<META_LIMIT>,
> {
    bincode::config::standard().with_limit::<META_LIMIT>()
}

/// Codec numbers used in the header, the block table and the trailer.
pub(crate) fn codec_id(c: Codec) -> u8 {
    match c {
        Codec::None => 0,
        Codec::Gzip => 1,
        Codec::Zstd => 2,
        Codec::Lz4 => 3,
    }
}

pub(crate) fn codec_from_id(id: u8) -> Option<Codec> {
    match id {
        0 => Some(Codec::None),
        1 => Some(Codec::Gzip),
        2 => Some(Codec::Zstd),
        3 => Some(Codec::Lz4),
        _ => None,
    }
}

/// The fixed header at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub arch: u16,
    pub major: u16,
    pub minor: u16,
    pub flags: u32,
    /// Codec the writer was asked for (blocks record their own).
    pub codec: Codec,
    /// Nominal uncompressed block size.
    pub block_size: u32,
    /// File offset of the first block.
    pub data_start: u64,
    /// Id of the key the image is authenticated with.
    pub key_id: [u8; crate::key::KEY_ID_LEN],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.arch.to_le_bytes());
        b[10..12].copy_from_slice(&self.major.to_le_bytes());
        b[12..14].copy_from_slice(&self.minor.to_le_bytes());
        b[14..16].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[16..20].copy_from_slice(&self.flags.to_le_bytes());
        b[20] = codec_id(self.codec);
        // 21..24 reserved (zero)
        b[24..28].copy_from_slice(&self.block_size.to_le_bytes());
        // 28..32 reserved (zero)
        b[32..40].copy_from_slice(&self.data_start.to_le_bytes());
        b[40..56].copy_from_slice(&self.key_id);
        // 56..60 reserved (zero)
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Checks magic, then the version (before the crc: a newer major may
    /// lay the rest out differently), then the crc, arch and fields.
    pub fn decode(path: &Path, b: &[u8]) -> Result<Header, ImageError> {
        let p = || path.to_path_buf();
        if b.len() < 14 || b[0..8] != MAGIC {
            if b.len() < 8 && MAGIC.starts_with(b) {
                return Err(ImageError::Truncated {
                    path: p(),
                    what: "header missing".into(),
                });
            }
            return Err(ImageError::NotAnImage { path: p() });
        }
        let major = u16le(b, 10);
        let minor = u16le(b, 12);
        check_version(path, major, minor, FORMAT_MAJOR, FORMAT_MINOR)?;
        if b.len() < HEADER_LEN {
            return Err(ImageError::Truncated {
                path: p(),
                what: "header missing".into(),
            });
        }
        if crc32fast::hash(&b[0..60]) != u32le(b, 60) {
            return Err(ImageError::Checksum {
                path: p(),
                section: "header".into(),
            });
        }
        let arch = u16le(b, 8);
        if arch != ARCH_X86_64 {
            return Err(ImageError::WrongArch { path: p(), arch });
        }
        let corrupt = |d: String| ImageError::Corrupt {
            path: p(),
            detail: d,
        };
        let hlen = u16le(b, 14);
        if hlen as usize != HEADER_LEN {
            return Err(corrupt(format!(
                "header length {hlen}, expected {HEADER_LEN}"
            )));
        }
        let codec = codec_from_id(b[20])
            .ok_or_else(|| corrupt(format!("unknown codec {} in header", b[20])))?;
        if b[21..24] != [0; 3] || b[28..32] != [0; 4] || b[56..60] != [0; 4] {
            return Err(corrupt("header reserved bytes not zero".into()));
        }
        let flags = u32le(b, 16);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(corrupt(format!("unknown header flags {flags:#x}")));
        }
        if (flags & FLAG_MMAPABLE != 0) != (codec == Codec::None) {
            return Err(corrupt(format!(
                "header flags {flags:#x} do not match codec {}",
                codec.name()
            )));
        }
        let block_size = u32le(b, 24);
        if block_size == 0 || u64::from(block_size) % PAGE != 0 || u64::from(block_size) > MAX_BLOCK
        {
            return Err(corrupt(format!("block size {block_size} out of range")));
        }
        let data_start = u64le(b, 32);
        let want_start = if codec == Codec::None {
            PAGE
        } else {
            HEADER_LEN as u64
        };
        if data_start != want_start {
            return Err(corrupt(format!(
                "page data start {data_start}, expected {want_start} for codec {}",
                codec.name()
            )));
        }
        let mut key_id = [0u8; crate::key::KEY_ID_LEN];
        key_id.copy_from_slice(&b[40..56]);
        Ok(Header {
            arch,
            major,
            minor,
            flags,
            codec,
            block_size,
            data_start,
            key_id,
        })
    }
}

/// Accepts `major == ours && minor <= ours`.
pub fn check_version(
    path: &Path,
    major: u16,
    minor: u16,
    our_major: u16,
    our_minor: u16,
) -> Result<(), ImageError> {
    if major == our_major && minor <= our_minor {
        Ok(())
    } else {
        Err(ImageError::Version {
            path: path.to_path_buf(),
            major,
            minor,
        })
    }
}

/// One block-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    /// File offset of the stored bytes.
    pub offset: u64,
    /// Stored (possibly compressed) length.
    pub stored_len: u64,
    /// Uncompressed length (a multiple of 4096).
    pub raw_len: u64,
    /// crc32 of the stored bytes.
    pub crc: u32,
    /// How this block is stored.
    pub codec: Codec,
    /// Keyed MAC of the stored bytes and the block's index.
    pub mac: [u8; MAC_LEN],
}

impl BlockEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.push(codec_id(self.codec));
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.mac);
    }

    pub fn decode(path: &Path, index: usize, b: &[u8]) -> Result<BlockEntry, ImageError> {
        let codec = codec_from_id(b[28]).ok_or_else(|| ImageError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("block {index}: unknown codec {}", b[28]),
        })?;
        if b[29..32] != [0, 0, 0] {
            return Err(ImageError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("block {index}: reserved bytes not zero"),
            });
        }
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&b[32..64]);
        Ok(BlockEntry {
            offset: u64le(b, 0),
            stored_len: u64le(b, 8),
            raw_len: u64le(b, 16),
            crc: u32le(b, 24),
            codec,
            mac,
        })
    }
}

/// The fixed trailer at the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub meta_offset: u64,
    pub meta_stored_len: u64,
    pub meta_raw_len: u64,
    pub table_offset: u64,
    pub block_count: u64,
    pub meta_crc: u32,
    pub table_crc: u32,
    pub meta_codec: Codec,
    /// Keyed MAC over the header, bytes 0..52 of the trailer, the stored
    /// metadata and the block table.
    pub mac: [u8; MAC_LEN],
}

impl Trailer {
    /// The bytes of the trailer the image MAC covers (everything before the MAC).
    pub const MAC_COVERED: usize = 52;

    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(&self.meta_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.meta_stored_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.meta_raw_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.table_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.block_count.to_le_bytes());
        b[40..44].copy_from_slice(&self.meta_crc.to_le_bytes());
        b[44..48].copy_from_slice(&self.table_crc.to_le_bytes());
        b[48] = codec_id(self.meta_codec);
        // 49..52 reserved (zero)
        b[52..84].copy_from_slice(&self.mac);
        let crc = crc32fast::hash(&b[0..84]);
        b[84..88].copy_from_slice(&crc.to_le_bytes());
        b[88..96].copy_from_slice(&MAGIC);
        b
    }

    pub fn decode(path: &Path, b: &[u8]) -> Result<Trailer, ImageError> {
        let p = || path.to_path_buf();
        if b[88..96] != MAGIC {
            return Err(ImageError::Truncated {
                path: p(),
                what: "trailer missing".into(),
            });
        }
        if crc32fast::hash(&b[0..84]) != u32le(b, 84) {
            return Err(ImageError::Checksum {
                path: p(),
                section: "trailer".into(),
            });
        }
        let corrupt = |d: String| ImageError::Corrupt {
            path: p(),
            detail: d,
        };
        let meta_codec = codec_from_id(b[48])
            .ok_or_else(|| corrupt(format!("unknown metadata codec {}", b[48])))?;
        if b[49..52] != [0, 0, 0] {
            return Err(corrupt("trailer reserved bytes not zero".into()));
        }
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&b[52..84]);
        Ok(Trailer {
            mac,
            meta_offset: u64le(b, 0),
            meta_stored_len: u64le(b, 8),
            meta_raw_len: u64le(b, 16),
            table_offset: u64le(b, 24),
            block_count: u64le(b, 32),
            meta_crc: u32le(b, 40),
            table_crc: u32le(b, 44),
            meta_codec,
        })
    }
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32le(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Compresses `raw` with `codec` into `out` (cleared first).
pub(crate) fn compress(
    codec: Codec,
    level: Option<i32>,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    BlockCompressor::new(codec, level).compress(raw, out)
}

/// Compresses block after block with one codec context (a zstd context
/// costs more to set up than a small block takes to compress).
pub(crate) struct BlockCompressor {
    codec: Codec,
    level: Option<i32>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl BlockCompressor {
    pub(crate) fn new(codec: Codec, level: Option<i32>) -> BlockCompressor {
        BlockCompressor {
            codec,
            level,
            zstd: None,
        }
    }

    /// Replaces `out` with `raw` compressed.
    pub(crate) fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let (codec, level) = (self.codec, self.level);
        if codec == Codec::Zstd {
            out.clear();
            let bound = zstd::zstd_safe::compress_bound(raw.len());
            out.reserve(bound);
            if self.zstd.is_none() {
                let lvl = level.or(codec.default_level()).unwrap_or(1);
                self.zstd = Some(zstd::bulk::Compressor::new(lvl).map_err(|e| e.to_string())?);
            }
            let c = self.zstd.as_mut().expect("set above");
            c.compress_to_buffer(raw, out).map_err(|e| e.to_string())?;
            return Ok(());
        }
        compress_once(codec, level, raw, out)
    }
}

fn compress_once(
    codec: Codec,
    level: Option<i32>,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    match codec {
        Codec::None => out.extend_from_slice(raw),
        Codec::Gzip => {
            let lvl = level.or(codec.default_level()).unwrap_or(1).clamp(0, 9) as u32;
            // Fixed header (mtime 0, no name): identical input gives identical bytes.
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(std::mem::take(out), flate2::Compression::new(lvl));
            enc.write_all(raw).map_err(|e| e.to_string())?;
            *out = enc.finish().map_err(|e| e.to_string())?;
        }
        Codec::Zstd => {
            let lvl = level.or(codec.default_level()).unwrap_or(1);
            let bound = zstd::zstd_safe::compress_bound(raw.len());
            out.reserve(bound);
            let mut c = zstd::bulk::Compressor::new(lvl).map_err(|e| e.to_string())?;
            c.compress_to_buffer(raw, out).map_err(|e| e.to_string())?;
        }
        Codec::Lz4 => {
            out.resize(lz4_flex::block::get_maximum_output_size(raw.len()), 0);
            let n = lz4_flex::block::compress_into(raw, out).map_err(|e| e.to_string())?;
            out.truncate(n);
        }
    }
    Ok(())
}

/// Decompresses `stored` into `out`, which must come out exactly `out.len()` bytes.
pub fn decompress(codec: Codec, stored: &[u8], out: &mut [u8]) -> Result<(), String> {
    match codec {
        Codec::None => {
            if stored.len() != out.len() {
                return Err(format!(
                    "stored {} bytes, expected {}",
                    stored.len(),
                    out.len()
                ));
            }
            out.copy_from_slice(stored);
        }
        Codec::Gzip => {
            let mut dec = flate2::read::GzDecoder::new(stored);
            dec.read_exact(out)
                .map_err(|e| format!("{e} (want {} bytes)", out.len()))?;
            let mut extra = [0u8; 1];
            match dec.read(&mut extra) {
                Ok(0) => {}
                Ok(_) => return Err(format!("more than the recorded {} bytes", out.len())),
                Err(e) => return Err(e.to_string()),
            }
        }
        Codec::Zstd => {
            let mut d = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
            let n = d
                .decompress_to_buffer(stored, out)
                .map_err(|e| e.to_string())?;
            if n != out.len() {
                return Err(format!("got {n} bytes, expected {}", out.len()));
            }
        }
        Codec::Lz4 => {
            let n = lz4_flex::block::decompress_into(stored, out).map_err(|e| e.to_string())?;
            if n != out.len() {
                return Err(format!("got {n} bytes, expected {}", out.len()));
            }
        }
    }
    Ok(())
}
