//! Reading a process's pages into its image on every core.
//!
//! The pages to save are cut into pieces of one image block each. Worker
//! threads (one per core) take the pieces in order: each reads its piece
//! (`/proc/PID/mem`, see [`PageSource`] for `Mem`), drops
//! all-zero pages of anonymous memory, and encodes what is left as one block
//! (compressed, or raw with its crc). The calling thread writes the blocks in
//! order. Reading, the zero-page scan and compression so run in parallel,
//! and the writer thread only copies into the page cache.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use dmtcp_image::{BlockEncoder, DataRef, EncodedBlock, ImageWriter, PageRun, PAGE_SIZE};

use crate::kernel::pid::RemoteAddr;
use crate::kernel::procfs::Mem;

const PAGE: usize = PAGE_SIZE as usize;

/// Where pages are read from: a process (`/proc/PID/mem`), or pages
/// copied aside while it was frozen ([`Buffered`]).
pub trait PageSource: Sync {
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// Pages are read through `/proc/PID/mem`, never `process_vm_readv`: that
/// one pins the pages it reads, and the kernel unshares (copies) a
/// copy-on-write page before it lets it be pinned. Reading the snapshot
/// child that way copied every page it read (all of them are shared with
/// the program it was forked from): a checkpoint of 4 GiB took 4 GiB more
/// memory while it was written, a 16 GiB program on a 24 GiB machine was
/// killed by the OOM killer, and the copying made the writer slower than
/// the disk. `/proc/PID/mem` takes page references without pinning.
impl PageSource for Mem {
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read(RemoteAddr(addr), buf)
    }
}

/// Pages copied out of a frozen process into our memory, to be encoded
/// into the image after the thaw: `ranges` (address order), their bytes
/// one after the other in `data`.
pub struct Buffered {
    /// (address, offset in `data`, length)
    at: Vec<(u64, usize, usize)>,
    data: Vec<u8>,
}

impl Buffered {
    /// Copies `ranges` out of the process behind `mem`.
    pub fn copy(mem: &Mem, ranges: &[Range]) -> io::Result<Buffered> {
        let total: usize = ranges.iter().map(|r| r.npages as usize * PAGE).sum();
        let mut data = vec![0u8; total];
        let mut at = Vec::with_capacity(ranges.len());
        let mut off = 0;
        for r in ranges {
            let len = r.npages as usize * PAGE;
            // Through /proc/PID/mem: see `impl PageSource for Mem` (the
            // program's pages may be shared copy-on-write with its children).
            mem.read(RemoteAddr(r.addr), &mut data[off..off + len])?;
            at.push((r.addr, off, len));
            off += len;
        }
        Ok(Buffered { at, data })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl PageSource for Buffered {
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut addr = addr;
        let mut done = 0;
        while done < buf.len() {
            let i = self.at.partition_point(|&(a, _, l)| a + l as u64 <= addr);
            let Some(&(a, off, l)) = self.at.get(i).filter(|(a, _, _)| *a <= addr) else {
                return Err(io::Error::other(format!(
                    "page {addr:#x} was not copied while frozen"
                )));
            };
            let skip = (addr - a) as usize;
            let n = (l - skip).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.data[off + skip..off + skip + n]);
            done += n;
            addr += n as u64;
        }
        Ok(())
    }
}

/// Pages to read: `npages` from `addr`, belonging to the caller's mapping
/// number `vma`. In `anon` memory an all-zero page is not stored (a fresh
/// mapping reads as zeros).
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub vma: usize,
    pub addr: u64,
    pub npages: u64,
    pub anon: bool,
}

/// One block's worth of ranges.
struct Piece {
    ranges: Vec<Range>,
    bytes: usize,
}

/// A run found in a piece: (mapping, address, pages, offset in the block).
type RunAt = (usize, u64, u64, u64);

/// A piece read and encoded: its runs and its block (None when every page
/// was zero).
struct Done {
    seq: usize,
    runs: Vec<RunAt>,
    block: Option<EncodedBlock>,
    /// The read buffer, for reuse (when not stored in the block).
    spare: Vec<u8>,
}

/// Cuts `ranges` into pieces of at most `block` bytes.
fn pieces(ranges: &[Range], block: usize) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut cur = Piece {
        ranges: Vec::new(),
        bytes: 0,
    };
    for r in ranges {
        let mut r = *r;
        while r.npages > 0 {
            let room = (block - cur.bytes) / PAGE;
            let take = (r.npages as usize).min(room);
            cur.ranges.push(Range {
                npages: take as u64,
                ..r
            });
            cur.bytes += take * PAGE;
            r.addr += (take * PAGE) as u64;
            r.npages -= take as u64;
            if cur.bytes + PAGE > block {
                out.push(std::mem::replace(
                    &mut cur,
                    Piece {
                        ranges: Vec::new(),
                        bytes: 0,
                    },
                ));
            }
        }
    }
    if cur.bytes > 0 {
        out.push(cur);
    }
    out
}

fn is_zero(b: &[u8]) -> bool {
    let (pre, mid, post) = {
        // SAFETY: u8 to u64 realignment of an initialized byte slice; every
        // bit pattern is a valid u64.
        unsafe { b.align_to::<u64>() }
    };
    pre.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0)
}

/// Reads one piece into `buf`, squeezes out zero pages of anonymous memory
/// and returns the runs of what is left, in `buf[..len]`.
fn read_piece<S: PageSource>(
    mem: &S,
    piece: &Piece,
    buf: &mut Vec<u8>,
) -> io::Result<(Vec<RunAt>, usize)> {
    buf.resize(piece.bytes, 0);
    let mut at = 0;
    for r in &piece.ranges {
        let len = r.npages as usize * PAGE;
        mem.read_pages(r.addr, &mut buf[at..at + len])?;
        at += len;
    }
    // Keep the non-zero pages, moved down over the zero ones.
    let mut runs: Vec<RunAt> = Vec::new();
    let mut kept = 0usize;
    let mut src = 0usize;
    for r in &piece.ranges {
        for p in 0..r.npages as usize {
            let page = src + p * PAGE;
            if r.anon && is_zero(&buf[page..page + PAGE]) {
                continue;
            }
            if page != kept {
                buf.copy_within(page..page + PAGE, kept);
            }
            let addr = r.addr + (p * PAGE) as u64;
            match runs.last_mut() {
                Some(last) if last.0 == r.vma && last.1 + last.2 * PAGE_SIZE == addr => last.2 += 1,
                _ => runs.push((r.vma, addr, 1, kept as u64)),
            }
            kept += PAGE;
        }
        src += r.npages as usize * PAGE;
    }
    Ok((runs, kept))
}

/// Reads `ranges` (address order) from the process behind `mem` into
/// `writer`, on every core, and returns the page runs of each mapping
/// (indexed by [`Range::vma`], `nvmas` of them).
pub fn read_into_image<S: PageSource>(
    mem: &S,
    ranges: &[Range],
    nvmas: usize,
    writer: &mut ImageWriter,
) -> io::Result<Vec<Vec<PageRun>>> {
    let mut out: Vec<Vec<PageRun>> = vec![Vec::new(); nvmas];
    if ranges.is_empty() {
        return Ok(out);
    }
    let opts = writer.options().clone();
    let work = pieces(ranges, opts.block_size);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(work.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // Encoded blocks the writer has not written yet. With the default
    // codec (adaptive), a worker compresses its block only while the
    // writer has one queued for every worker: then the disk is what the
    // checkpoint waits for, and smaller blocks save its time; otherwise
    // the writer waits for blocks, and a block is stored raw at once.
    let ready = AtomicUsize::new(0);
    // Buffers go round: workers read into them, the writer gives them back.
    let free: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let take = || {
        free.lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_default()
    };
    let (tx, rx) = mpsc::sync_channel::<io::Result<Done>>(threads * 2);
    std::thread::scope(|s| -> io::Result<()> {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, work, opts, ready) = (&next, &stop, &work, &opts, &ready);
            let take = &take;
            s.spawn(move || {
                let mut enc = BlockEncoder::new(opts);
                while !stop.load(Ordering::Relaxed) {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let Some(piece) = work.get(seq) else { break };
                    let mut buf = take();
                    let done = read_piece(mem, piece, &mut buf).and_then(|(runs, len)| {
                        if len == 0 {
                            return Ok(Done {
                                seq,
                                runs,
                                block: None,
                                spare: buf,
                            });
                        }
                        buf.truncate(len);
                        let compress = ready.load(Ordering::Relaxed) >= threads;
                        let block = enc
                            .encode_choosing(buf, take(), compress)
                            .map_err(|e| io::Error::other(e.to_string()))?;
                        ready.fetch_add(1, Ordering::Relaxed);
                        Ok(Done {
                            seq,
                            runs,
                            block: Some(block),
                            spare: Vec::new(),
                        })
                    });
                    let failed = done.is_err();
                    if tx.send(done).is_err() || failed {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Write in order; a failure stops the workers (they see `stop`, or
        // a closed channel once we return).
        let give = |v: Vec<u8>| {
            if v.capacity() > 0 {
                if let Ok(mut f) = free.lock() {
                    f.push(v);
                }
            }
        };
        let mut waiting: BTreeMap<usize, Done> = BTreeMap::new();
        let mut expect = 0usize;
        let result = (|| {
            for done in rx.iter() {
                let done = done?;
                waiting.insert(done.seq, done);
                while let Some(d) = waiting.remove(&expect) {
                    expect += 1;
                    give(d.spare);
                    let Some(block) = d.block else { continue };
                    let (index, a, b) = writer
                        .add_encoded(block)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    ready.fetch_sub(1, Ordering::Relaxed);
                    give(a);
                    give(b);
                    for (vma, addr, npages, offset) in d.runs {
                        out[vma].push(PageRun {
                            addr,
                            npages,
                            data: DataRef {
                                block: index,
                                offset,
                            },
                        });
                    }
                }
            }
            if expect == work.len() {
                Ok(())
            } else {
                Err(io::Error::other("page reading stopped early"))
            }
        })();
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
            // Let blocked workers finish their send and see `stop`.
            for _ in rx.iter() {}
        }
        result
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_fill_blocks_and_split_ranges() {
        let r = |vma, addr, npages| Range {
            vma,
            addr,
            npages,
            anon: true,
        };
        let p = pieces(
            &[r(0, 0x1000, 3), r(1, 0x10000, 6), r(2, 0x40000, 1)],
            4 * PAGE,
        );
        let got: Vec<Vec<(usize, u64, u64)>> = p
            .iter()
            .map(|p| p.ranges.iter().map(|r| (r.vma, r.addr, r.npages)).collect())
            .collect();
        assert_eq!(
            got,
            vec![
                vec![(0, 0x1000, 3), (1, 0x10000, 1)],
                vec![(1, 0x11000, 4)],
                vec![(1, 0x15000, 1), (2, 0x40000, 1)],
            ]
        );
        assert_eq!(p.iter().map(|p| p.bytes).sum::<usize>(), 10 * PAGE);
    }
}
