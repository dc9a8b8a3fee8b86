//! Checkpoint image: data model, on-disk format, writer and reader.
//!
//! Format 1.0 is described byte by byte in `docs/image-format.md`; the
//! layout constants live in [`format`].
pub mod chain;
pub mod error;
pub mod format;
pub mod inspect;
pub mod model;
pub mod reader;
pub mod writer;

pub use chain::{ImageChain, Verify};
pub use error::ImageError;
pub use format::BlockEntry;
pub use inspect::describe;
pub use model::*;
pub use reader::{ImageReader, RunSink};
pub use writer::{
    image_file_name, BlockEncoder, Codec, EncodedBlock, ImageWriter, PendingImage, WriteOptions,
};
