//! Checkpoint image: data model, on-disk format, writer and reader.
//!
//! Format 2.1 is described byte by byte in `docs/image-format.md`; the
//! layout constants live in [`format`].
pub mod chain;
pub mod codec;
pub mod core;
pub mod error;
pub mod format;
pub mod inspect;
pub mod key;
pub mod model;
pub mod reader;
pub mod version;
pub mod writer;

pub use chain::{ImageChain, Verify};
pub use core::{write_core, CoreSummary};
pub use error::ImageError;
pub use format::BlockEntry;
pub use inspect::describe;
pub use key::ImageKey;
pub use model::*;
pub use reader::{BlockCheck, ImageReader, RunSink};
pub use writer::{
    create_private_dir, image_file_name, parse_image_file_name, remove_debris, BlockEncoder, Codec,
    EncodedBlock, ImageWriter, PendingImage, WriteOptions,
};
