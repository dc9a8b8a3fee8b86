//! Which pages of a process are restored lazily (by the server in
//! `crate::resources::memory::lazy`) and which are copied before it runs.
//!
//! A private anonymous mapping goes lazy when every page the images hold
//! for it lies in an image file we could lease (raw or in compressed
//! blocks, decompressed by the server when needed), and the process can
//! make a userfaultfd that also catches faults from the kernel (root, or
//! `vm.unprivileged_userfaultfd=1`).
//! Everything else is copied now, as before. So is everything when the
//! pages to serve are more than [`lazy::max_lazy_bytes`].

use std::io;
use std::sync::Arc;

use crate::kernel::pid::HostPid;
use crate::kernel::remote::Injector;
use crate::resources::memory::lazy::{self, ImageSource, LazyBuilder};
use dmtcp_image::{ImageChain, PageRun, VmaKind, PAGE_SIZE};
use tracing::debug;

/// Mappings smaller than this are copied: serving them lazily gains
/// nothing. It also keeps in place what the restorer itself reads and
/// writes through `/proc/PID/mem` before the process runs, such as the
/// application API's one-page state (`agent::on_restored`): a remote access
/// to a page still to come fails (it cannot wait for the server).
const LAZY_MIN: u64 = 256 << 10;

/// A mapping that may go lazy: start, end, and its runs as (reader, index).
type Candidate = (u64, u64, Vec<(usize, usize)>);

/// Starts the lazy restore of what can go lazy; returns the runs (per
/// reader, as `runs`) that must still be copied now.
pub fn start(
    pid: HostPid,
    inj: &mut Injector,
    image: &ImageChain,
    runs: Vec<Vec<PageRun>>,
) -> io::Result<Vec<Vec<PageRun>>> {
    if !lazy::enabled() {
        return Ok(runs);
    }
    let readers = image.readers();
    // Each run's position in its image's page data.
    let offsets: Vec<Vec<Option<u64>>> = readers
        .iter()
        .zip(&runs)
        .map(|(r, rs)| rs.iter().map(|x| r.run_position(x)).collect())
        .collect();
    let sources: Vec<Option<Arc<ImageSource>>> = readers
        .iter()
        .zip(&offsets)
        .map(|(r, offs)| {
            if !offs.iter().any(Option::is_some) {
                return None;
            }
            match ImageSource::open(r.path(), r.block_check()) {
                Ok(s) => Some(s),
                Err(e) => {
                    debug!("{}: pages copied, not lazy: {e}", r.path().display());
                    None
                }
            }
        })
        .collect();
    if sources.iter().all(Option::is_none) {
        return Ok(runs);
    }
    // Every run by address: (address, reader, index in that reader's runs).
    let mut all: Vec<(u64, usize, usize)> = runs
        .iter()
        .enumerate()
        .flat_map(|(ri, rs)| rs.iter().enumerate().map(move |(i, r)| (r.addr, ri, i)))
        .collect();
    all.sort_unstable();
    // Candidate mappings and the runs inside each.
    let mut candidates: Vec<Candidate> = Vec::new();
    for v in &image.top().meta().vmas {
        if v.shared || !matches!(v.kind, VmaKind::Anon { .. }) || v.end - v.start < LAZY_MIN {
            continue;
        }
        let first = all.partition_point(|x| x.0 < v.start);
        let inside: Vec<(usize, usize)> = all[first..]
            .iter()
            .take_while(|x| x.0 < v.end)
            .map(|x| (x.1, x.2))
            .collect();
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&(ri, i)| sources[ri].is_some() && offsets[ri][i].is_some())
        {
            continue;
        }
        candidates.push((v.start, v.end, inside));
    }
    if candidates.is_empty() {
        return Ok(runs);
    }
    // The server must be done with the images well within the lease-break
    // time: beyond that a writer would get at them.
    let lazy_bytes: u64 = candidates
        .iter()
        .flat_map(|(_, _, inside)| inside.iter())
        .map(|&(ri, i)| runs[ri][i].npages * PAGE_SIZE)
        .sum();
    let compressed = readers
        .iter()
        .any(|r| r.codec() != dmtcp_image::Codec::None);
    if lazy_bytes > lazy::max_lazy_bytes(compressed) {
        debug!(
            "pid {pid}: pages copied, not lazy ({} MiB is more than can be served within the lease-break time)",
            lazy_bytes >> 20
        );
        return Ok(runs);
    }
    // The userfaultfd belongs to the process's mm: made there, copied here
    // and closed there again (the program never sees it).
    let fd = match inj.syscall(
        libc::SYS_userfaultfd,
        [(libc::O_CLOEXEC | libc::O_NONBLOCK) as u64, 0, 0, 0, 0, 0],
    ) {
        Ok(fd) => fd,
        Err(e) => {
            debug!("pid {pid}: pages copied, not lazy (userfaultfd: {e})");
            return Ok(runs);
        }
    };
    let uffd = crate::kernel::sys::steal_fd(pid.0, fd as i32);
    inj.syscall(libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    let mut b = LazyBuilder::new(pid, uffd?)?;
    let mut lazy_run = vec![Vec::<bool>::new(); runs.len()];
    for (l, rs) in lazy_run.iter_mut().zip(&runs) {
        l.resize(rs.len(), false);
    }
    let mut any = false;
    for (start, end, inside) in candidates {
        if let Err(e) = b.register(start, end) {
            debug!("pid {pid}: {start:#x}-{end:#x} copied, not lazy (register: {e})");
            continue;
        }
        for (ri, i) in inside {
            let (Some(src), Some(off)) = (&sources[ri], offsets[ri][i]) else {
                continue;
            };
            let r = &runs[ri][i];
            b.add(r.addr, r.npages, src, off);
            lazy_run[ri][i] = true;
            any = true;
        }
    }
    if any {
        b.start()?;
    }
    Ok(runs
        .into_iter()
        .zip(lazy_run)
        .map(|(rs, l)| {
            rs.into_iter()
                .zip(l)
                .filter(|(_, lazy)| !lazy)
                .map(|(r, _)| r)
                .collect()
        })
        .collect())
}
