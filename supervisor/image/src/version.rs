//! The image format's version, apart from the layout (`format`) so that
//! the error type can name it without a cycle.

/// Format version written by this crate. Readers accept
/// `major == FORMAT_MAJOR && minor <= FORMAT_MINOR`.
pub const FORMAT_MAJOR: u16 = 2;
/// 2.1: an [`ImageExt`](crate::ImageExt) record after the metadata
/// (launch id and the checkpoint's set), and the fd kinds `OutsidePeer`
/// and `Inotify`.
///
/// 2.2: the fd kinds `Ghost` and `WrittenFile` and the mapping kind
/// `Ghost` (files unlinked while open or mapped; files open for writing,
/// with their checkpoint-time size), and an [`ImageExt2`](crate::ImageExt2)
/// record after the 2.1 one (seccomp filters per thread, the computation's
/// sandbox).
///
/// 2.3: the block codec 3, LZ4 (block format), for page blocks and the
/// metadata; the fd kind `TcpRemote` (a TCP connection whose other end is
/// in another launch of the computation).
///
/// 2.4: an [`ImageExt3`](crate::ImageExt3) record after the 2.2 one:
/// whether the computation ran without namespaces (virtual pids).
///
/// 2.5: an [`ImageExt4`](crate::ImageExt4) record after the 2.4 one: the
/// fds whose socket had `SO_PASSCRED` set.
pub const FORMAT_MINOR: u16 = 5;
