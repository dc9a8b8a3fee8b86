//! inotify instances: the watches are read from `/proc/PID/fdinfo`
//! (`inotify wd:N ino:I sdev:D mask:M ...`), each watched inode is found
//! again by path, and at restart a new instance gets the same watches with
//! the same watch descriptors.
//!
//! The path of a watched inode: the fdinfo gives its inode and device only.
//! It is searched under the process's working directory and root (at most
//! [`SEARCH_DEPTH`] levels, [`SEARCH_LIMIT`] entries); a watch whose inode
//! cannot be found refuses the checkpoint. Watch descriptors are allocated
//! by the kernel in increasing order, so gaps (removed watches) are
//! reproduced by adding and removing a watch on `/`. Events waiting to be
//! read at checkpoint time are lost.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use dmtcp_image::{FdEntry, FdKind};

use crate::kernel::pid::HostPid;
use crate::kernel::procfs;
use crate::resources::fdshare::FdContext;
use crate::resources::{FdObjects, FdResource, OpenFd};

const SEARCH_DEPTH: usize = 6;
const SEARCH_LIMIT: usize = 200_000;

/// One `inotify` line of fdinfo: (wd, inode, kernel dev, mask).
fn parse_watches(info: &str) -> Vec<(i32, u64, u64, u32)> {
    let mut out = Vec::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("inotify ") else {
            continue;
        };
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix(':'))
        };
        let hex = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
        if let (Some(wd), Some(ino), Some(dev), Some(mask)) = (
            field("wd").and_then(|v| v.parse().ok()),
            hex("ino"),
            hex("sdev"),
            hex("mask"),
        ) {
            out.push((wd, ino, dev, mask as u32));
        }
    }
    out.sort();
    out
}

/// The kernel's dev_t (`MAJOR << 20 | MINOR`) of a userspace `st_dev`.
fn kernel_dev(st_dev: u64) -> u64 {
    let (major, minor) = (libc::major(st_dev) as u64, libc::minor(st_dev) as u64);
    major << 20 | minor
}

/// Paths of the (inode, kernel dev) pairs in `want`, searched breadth
/// first under `roots`.
fn find_paths(roots: &[PathBuf], want: &[(u64, u64)]) -> HashMap<(u64, u64), String> {
    let mut found = HashMap::new();
    let mut seen = 0usize;
    let mut level: Vec<PathBuf> = roots.to_vec();
    for depth in 0..=SEARCH_DEPTH {
        let mut next = Vec::new();
        for p in &level {
            if found.len() == want.len() || seen > SEARCH_LIMIT {
                return found;
            }
            seen += 1;
            let Ok(m) = std::fs::symlink_metadata(p) else {
                continue;
            };
            let key = (m.ino(), kernel_dev(m.dev()));
            if want.contains(&key) {
                found
                    .entry(key)
                    .or_insert_with(|| p.to_string_lossy().into_owned());
            }
            if m.is_dir() && depth < SEARCH_DEPTH {
                if let Ok(rd) = std::fs::read_dir(p) {
                    next.extend(rd.flatten().map(|e| e.path()));
                }
            }
        }
        level = next;
    }
    found
}

/// inotify instances.
pub struct Inotify;

impl FdResource for Inotify {
    fn capture(f: &OpenFd<'_>, _cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        if f.target != "anon_inode:inotify" {
            return Ok(None);
        }
        let raw = parse_watches(f.info);
        let want: Vec<(u64, u64)> = raw.iter().map(|&(_, i, d, _)| (i, d)).collect();
        let roots = roots_of(f.pid);
        let paths = find_paths(&roots, &want);
        let mut watches = Vec::new();
        for (wd, ino, dev, mask) in raw {
            let Some(path) = paths.get(&(ino, dev)) else {
                return Err(io::Error::other(format!(
                    "pid {} fd {}: inotify watch {wd} is on inode {ino} (device {:#x}), which is not under {}: its path cannot be found, so the watch cannot be restored",
                    f.pid.0,
                    f.fd,
                    dev,
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )));
            };
            watches.push((wd, mask, path.clone()));
        }
        Ok(Some(FdKind::Inotify {
            flags: f.flags,
            watches,
        }))
    }

    fn restore(e: &FdEntry, _objects: &FdObjects) -> io::Result<OwnedFd> {
        let FdKind::Inotify { flags, watches } = &e.kind else {
            return Err(super::wrong_kind(e, "inotify"));
        };
        // SAFETY: inotify_init1 takes flags and returns a fresh fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | (flags & libc::O_NONBLOCK)) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let add = |path: &str, mask: u32| -> io::Result<i32> {
            let c = CString::new(path).map_err(|_| io::Error::other("NUL in path"))?;
            // SAFETY: c is a valid C string; fd is our inotify instance.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
            if wd < 0 {
                let err = io::Error::last_os_error();
                return Err(io::Error::new(
                    err.kind(),
                    format!("fd {}: inotify watch on {path}: {err}", e.fd),
                ));
            }
            Ok(wd)
        };
        let rm = |wd: i32| {
            // SAFETY: removing a watch of our own instance.
            unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
        };
        let mut burnt = false;
        for (wd, mask, path) in watches {
            // Watch descriptors are given out in increasing order: a gap
            // (removed watches) is burnt by adding and removing again.
            let mut got = add(path, *mask)?;
            while got < *wd {
                rm(got);
                burnt = true;
                got = add(path, *mask)?;
            }
            if got != *wd {
                tracing::warn!(
                    "fd {}: inotify watch on {path} is wd {got} now, was {wd}",
                    e.fd
                );
            }
        }
        if burnt {
            drain(&fd);
        }
        Ok(fd)
    }
}

/// Reads away the `IN_IGNORED` events that removing watches queued.
fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 4096];
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: p is one live pollfd.
        if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
            return;
        }
        // SAFETY: buf is a live buffer of the length given.
        if unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } <= 0 {
            return;
        }
    }
}

/// Where watched paths are searched: the process's working directory and
/// its root.
fn roots_of(pid: HostPid) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for link in ["cwd", "root"] {
        if let Ok(p) = procfs::link(pid, link) {
            let p = Path::new(&p).to_path_buf();
            if !roots.contains(&p) {
                roots.push(p);
            }
        }
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_watch_lines() {
        let info = "pos:\t0\nflags:\t02004000\nmnt_id:\t30\ninotify wd:2 ino:1a sdev:800001 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:1a00000000000000\ninotify wd:1 ino:ff sdev:fd00001 mask:fff ignored_mask:0\n";
        assert_eq!(
            parse_watches(info),
            vec![(1, 0xff, 0xfd00001, 0xfff), (2, 0x1a, 0x800001, 0x100)]
        );
    }
}
