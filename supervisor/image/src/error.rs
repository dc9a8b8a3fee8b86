//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while writing, opening or reading an image.
///
/// Messages are lowercase, name the file (and section, block or run) and say
/// what is wrong, e.g. `ckpt_a.dmtcp: truncated (trailer missing)`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A system call on the image file failed.
    #[error("{}: {op}: {error}", path.display())]
    Io {
        path: PathBuf,
        /// What we were doing (`"read block 3"`, `"fsync"`, ...).
        op: String,
        error: io::Error,
    },
    /// The temporary image file could not be created.
    #[error("cannot create a checkpoint image in {}: {error}", dir.display())]
    CreateTemp { dir: PathBuf, error: io::Error },
    /// The file does not start with the image magic.
    #[error("{}: not a dmtcp checkpoint image (bad magic)", path.display())]
    NotAnImage { path: PathBuf },
    /// The image was taken on another architecture.
    #[error("{}: image is for architecture {arch} (elf machine), this dmtcp-restart handles x86_64 (62)", path.display())]
    WrongArch { path: PathBuf, arch: u16 },
    /// The format version is not one this reader understands.
    #[error("{}: image format {major}.{minor} is {} than this dmtcp-restart ({}.{})",
        path.display(),
        if (*major, *minor) > (crate::version::FORMAT_MAJOR, crate::version::FORMAT_MINOR) { "newer" } else { "older" },
        crate::version::FORMAT_MAJOR, crate::version::FORMAT_MINOR)]
    Version {
        path: PathBuf,
        major: u16,
        minor: u16,
    },
    /// The file ends early.
    #[error("{}: truncated ({what})", path.display())]
    Truncated { path: PathBuf, what: String },
    /// A section's crc32 does not match its bytes.
    #[error("{}: {section} checksum mismatch", path.display())]
    Checksum { path: PathBuf, section: String },
    /// Structurally inconsistent image (offsets, lengths, codes).
    #[error("{}: corrupt image: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// The metadata section could not be decoded.
    #[error("{}: cannot decode metadata: {detail}", path.display())]
    Metadata { path: PathBuf, detail: String },
    /// The metadata could not be encoded.
    #[error("cannot encode metadata: {detail}")]
    Encode { detail: String },
    /// Compressing a block failed.
    #[error("cannot compress block {block} with {codec}: {detail}")]
    Compress {
        block: u32,
        codec: &'static str,
        detail: String,
    },
    /// A block's stored bytes did not decompress to its recorded size.
    #[error("{}: block {block}: cannot decompress ({codec}): {detail}", path.display())]
    Decompress {
        path: PathBuf,
        block: u32,
        codec: &'static str,
        detail: String,
    },
    /// A page run in the metadata points outside the page data.
    #[error("{}: page run at {addr:#x} ({npages} pages, block {block}, offset {offset}): {detail}", path.display())]
    BadRun {
        path: PathBuf,
        addr: u64,
        npages: u64,
        block: u32,
        offset: u64,
        detail: String,
    },
    /// An unknown codec name (from a flag or `DMTCP_COMPRESS`).
    #[error("unknown codec `{name}` (expected none, gzip or zstd)")]
    UnknownCodec { name: String },
    /// A caller passed something this API does not accept.
    #[error("{0}")]
    InvalidArgument(String),
    /// The image key could not be found, created or trusted.
    #[error("image key {}: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    /// The image's MAC does not match: edited after it was written, or
    /// written with another key.
    #[error("{}: not authentic: {detail}", path.display())]
    Auth { path: PathBuf, detail: String },
    /// The image file belongs to another user (only root may use it).
    #[error("{}: owned by uid {owner}, not by uid {uid}: refusing another user's image", path.display())]
    NotOwner { path: PathBuf, owner: u32, uid: u32 },
    /// A worker thread panicked (a bug).
    #[error("image worker thread panicked")]
    WorkerPanicked,
}

impl ImageError {
    pub(crate) fn io(path: &std::path::Path, op: impl Into<String>, error: io::Error) -> Self {
        ImageError::Io {
            path: path.to_path_buf(),
            op: op.into(),
            error,
        }
    }
}
