//! Checkpoint image: data model, on-disk format, writer and reader.
pub mod model;
pub use model::*;
