//! The image format's version, apart from the layout (`format`) so that
//! the error type can name it without a cycle.

/// Format version written by this crate. Readers accept
/// `major == FORMAT_MAJOR && minor <= FORMAT_MINOR`.
pub const FORMAT_MAJOR: u16 = 2;
/// 2.1: an [`ImageExt`](crate::ImageExt) record after the metadata
/// (launch id and the checkpoint's set), and the fd kinds `OutsidePeer`
/// and `Inotify`.
pub const FORMAT_MINOR: u16 = 1;
