//! Checkpoint: capturing frozen processes into images.

pub mod capture;
