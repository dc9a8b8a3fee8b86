//! The codecs page blocks and metadata are stored with, and how the user
//! names them (`--compress`, `DMTCP_COMPRESS`, `DMTCP_GZIP`).

use crate::error::ImageError;

/// How page blocks (and the metadata) are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Stored raw, page-aligned: runs can be mmap'd from the file.
    None,
    /// gzip (deflate), one gzip member per block.
    Gzip,
    /// zstd, one frame per block.
    Zstd,
    /// LZ4 block format (lz4_flex), one block per block, no frame (the
    /// block table has both lengths). The fastest codec here, at a lower
    /// ratio than zstd; format 2.3.
    Lz4,
}

impl Codec {
    /// `none`, `gzip`, `zstd` or `lz4` (case-insensitive; `off`/`raw` mean none, `gz` gzip).
    pub fn parse(s: &str) -> Result<Codec, ImageError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" | "raw" => Ok(Codec::None),
            "gzip" | "gz" => Ok(Codec::Gzip),
            "zstd" | "zst" => Ok(Codec::Zstd),
            "lz4" => Ok(Codec::Lz4),
            _ => Err(ImageError::UnknownCodec {
                name: s.to_string(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
        }
    }

    /// `NAME` or `NAME:LEVEL` (`zstd:-3`, `gzip:6`): a codec and, when
    /// given, its level (gzip 0-9; zstd -7..22, negative = faster).
    pub fn parse_spec(s: &str) -> Result<(Codec, Option<i32>), ImageError> {
        let Some((name, level)) = s.split_once(':') else {
            return Ok((Codec::parse(s)?, None));
        };
        let codec = Codec::parse(name)?;
        let bad = || {
            ImageError::InvalidArgument(format!(
                "codec level `{level}` for {}: expected {}",
                codec.name(),
                match codec {
                    Codec::None | Codec::Lz4 => "no level",
                    Codec::Gzip => "0..=9",
                    Codec::Zstd => "-7..=22",
                }
            ))
        };
        let n: i32 = level.trim().parse().map_err(|_| bad())?;
        let ok = match codec {
            Codec::None | Codec::Lz4 => false,
            Codec::Gzip => (0..=9).contains(&n),
            Codec::Zstd => (-7..=22).contains(&n) && n != 0,
        };
        if !ok {
            return Err(bad());
        }
        Ok((codec, Some(n)))
    }

    /// The codec the environment asks for: `DMTCP_GZIP=0` none,
    /// `DMTCP_GZIP=1` gzip (DMTCP's habit), `DMTCP_COMPRESS=<name>[:level]`,
    /// else [`Codec::DEFAULT`]. An unknown `DMTCP_COMPRESS` value is warned
    /// about and ignored. The level is `None` when not given.
    pub fn from_env() -> (Codec, Option<i32>) {
        match std::env::var("DMTCP_GZIP").map(|v| v.trim().to_string()) {
            Ok(v) if v == "0" => return (Codec::None, None),
            Ok(v) if v == "1" => return (Codec::Gzip, None),
            _ => {}
        }
        match std::env::var("DMTCP_COMPRESS") {
            Ok(v) if !v.trim().is_empty() => match Codec::parse_spec(&v) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("DMTCP_COMPRESS: {e}; using {}", Codec::DEFAULT.name());
                    (Codec::DEFAULT, None)
                }
            },
            _ => (Codec::DEFAULT, None),
        }
    }

    /// Whether the environment leaves the codec to us (neither
    /// `DMTCP_GZIP` nor `DMTCP_COMPRESS` set): the default codec is then
    /// adaptive (see [`crate::WriteOptions::adaptive`]).
    pub fn env_is_default() -> bool {
        let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
        !set("DMTCP_GZIP") && !set("DMTCP_COMPRESS")
    }

    /// The level used when none is given: the fastest setting whose ratio
    /// is still no worse than gzip -1 (docs/performance.md).
    pub fn default_level(self) -> Option<i32> {
        match self {
            Codec::None | Codec::Lz4 => None,
            Codec::Gzip => Some(1),
            Codec::Zstd => Some(1),
        }
    }

    /// The default codec, chosen by the benchmark (docs/performance.md):
    /// zstd level 1 compresses ~1.5x faster than gzip level 1 on these
    /// machines, decompresses ~2x faster, and makes smaller images.
    pub const DEFAULT: Codec = Codec::Zstd;
}
