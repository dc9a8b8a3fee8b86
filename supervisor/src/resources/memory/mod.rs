//! Memory: reading pages into the image ([`pageread`]), tracking written
//! pages for incremental checkpoints ([`dirty`], [`incremental`]) and
//! bringing pages in lazily at restart ([`lazy`], [`lazy_pages`]).

pub mod dirty;
pub mod incremental;
pub mod lazy;
pub mod lazy_pages;
pub mod pageread;
