//! Incremental images: an image, its parent, the parent's parent, ...
//!
//! An incremental image saves only the pages written since its parent was
//! taken; the pages left unchanged are listed as `from_parent` spans, whose
//! content is whatever the parent restores at the same addresses. Reading
//! the memory of the top image means resolving each span down the chain:
//! to a page run of some ancestor, or to nothing (zero, or the mapped
//! file's page) when no ancestor saved it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::model::{PageRun, PageSpan, ProcessImage, PAGE_SIZE};
use crate::reader::ImageReader;
use crate::writer::{ImageWriter, WriteOptions};

/// The callback of [`ImageChain::read_pages`]: `sink(address, bytes)`.
pub type AddrSink<'a> = dyn Fn(u64, &[u8]) -> Result<(), ImageError> + Sync + 'a;

/// Longest chain accepted (a loop or a runaway chain is refused).
pub const MAX_CHAIN: usize = 64;

/// How much of an image [`ImageChain::open_with`] checks before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Structure, metadata and the crc of every page block.
    Full,
    /// Structure and metadata; page blocks are checked as they are read.
    Layout,
}

/// An image and the images it builds on, top first; every one verified.
pub struct ImageChain {
    readers: Vec<ImageReader>,
}

impl ImageChain {
    /// Opens and verifies `path` and, for an incremental image, every image
    /// it builds on (named in `parent`, looked up in the same directory).
    /// Each parent must belong to the same computation and process and be
    /// of the generation the child names.
    pub fn open(path: &Path) -> Result<ImageChain, ImageError> {
        Self::open_with(path, Verify::Full)
    }

    /// Like [`open`](Self::open); with [`Verify::Layout`] the page blocks'
    /// crcs are left to be checked when the blocks are read.
    pub fn open_with(path: &Path, verify: Verify) -> Result<ImageChain, ImageError> {
        let check = |r: &ImageReader| match verify {
            Verify::Full => r.verify(),
            Verify::Layout => r.verify_layout(),
        };
        let top = ImageReader::open(path)?;
        check(&top)?;
        check_spans(&top)?;
        let mut readers = vec![top];
        let mut seen: HashSet<PathBuf> = HashSet::new();
        seen.insert(path.to_path_buf());
        loop {
            let child = readers.last().expect("chain is never empty");
            let Some(parent) = child.meta().parent.clone() else {
                break;
            };
            let bad = |detail: String| ImageError::Corrupt {
                path: child.path().to_path_buf(),
                detail,
            };
            if parent.file.contains('/') || parent.file.is_empty() {
                return Err(bad(format!("parent image name `{}`", parent.file)));
            }
            let ppath = child
                .path()
                .parent()
                .unwrap_or(Path::new("."))
                .join(&parent.file);
            if readers.len() >= MAX_CHAIN || !seen.insert(ppath.clone()) {
                return Err(bad(format!(
                    "chain of parent images longer than {MAX_CHAIN} or looping at {}",
                    parent.file
                )));
            }
            let r = ImageReader::open(&ppath).map_err(|e| match e {
                ImageError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                    bad(format!(
                        "its parent image {} is missing (an incremental image needs every image it builds on; `dmtcp-restart --merge` makes a standalone one)",
                        ppath.display()
                    ))
                }
                other => other,
            })?;
            check(&r)?;
            check_spans(&r)?;
            let (c, p) = (child.meta(), r.meta());
            if p.computation.id != c.computation.id
                || p.process.vpid != c.process.vpid
                || p.computation.generation != parent.generation
            {
                return Err(bad(format!(
                    "parent image {} is computation {} pid {} generation {}, expected computation {} pid {} generation {}",
                    ppath.display(),
                    p.computation.id,
                    p.process.vpid,
                    p.computation.generation,
                    c.computation.id,
                    c.process.vpid,
                    parent.generation
                )));
            }
            readers.push(r);
        }
        Ok(ImageChain { readers })
    }

    /// The image that was asked for.
    pub fn top(&self) -> &ImageReader {
        &self.readers[0]
    }

    /// All images, top first.
    pub fn readers(&self) -> &[ImageReader] {
        &self.readers
    }

    /// Checks every page block (crc and MAC) of every image of the chain
    /// (blocks checked before are not read again).
    pub fn verify_all(&self) -> Result<(), ImageError> {
        self.readers.iter().try_for_each(ImageReader::verify_blocks)
    }

    /// The page runs to read from each image (index as in
    /// [`readers`](Self::readers)) to rebuild the top image's memory.
    /// Together they cover every saved page once.
    pub fn page_runs(&self) -> Vec<Vec<PageRun>> {
        let mut out = Vec::with_capacity(self.readers.len());
        let top = self.readers[0].meta();
        out.push(
            top.vmas
                .iter()
                .flat_map(|v| v.pages.iter().copied())
                .collect(),
        );
        let mut wanted: Vec<PageSpan> = top
            .vmas
            .iter()
            .flat_map(|v| v.from_parent.iter().copied())
            .collect();
        for r in &self.readers[1..] {
            if wanted.is_empty() {
                break;
            }
            let meta = r.meta();
            let mut runs: Vec<PageRun> = meta
                .vmas
                .iter()
                .flat_map(|v| v.pages.iter().copied())
                .collect();
            runs.sort_by_key(|x| x.addr);
            let mut spans: Vec<PageSpan> = meta
                .vmas
                .iter()
                .flat_map(|v| v.from_parent.iter().copied())
                .collect();
            spans.sort_by_key(|x| x.addr);
            let mut here = Vec::new();
            let mut deeper = Vec::new();
            for w in &wanted {
                for run in overlapping(&runs, w.addr, w.end(), |x| (x.addr, run_end(x))) {
                    let a = run.addr.max(w.addr);
                    let e = run_end(run).min(w.end());
                    here.push(r.sub_run(run, a, (e - a) / PAGE_SIZE));
                }
                for s in overlapping(&spans, w.addr, w.end(), |x| (x.addr, x.end())) {
                    let a = s.addr.max(w.addr);
                    let e = s.end().min(w.end());
                    deeper.push(PageSpan {
                        addr: a,
                        npages: (e - a) / PAGE_SIZE,
                    });
                }
            }
            out.push(here);
            wanted = deeper;
        }
        out.resize_with(self.readers.len(), Vec::new);
        out
    }

    /// Reads every page of the top image's memory, decompressing in
    /// parallel, and calls `sink(addr, bytes)` for each piece (from worker
    /// threads, in no particular order).
    pub fn read_pages(&self, sink: &AddrSink<'_>) -> Result<(), ImageError> {
        self.read_runs(&self.page_runs(), sink)
    }

    /// Like [`read_pages`](Self::read_pages), for a subset of
    /// [`page_runs`](Self::page_runs) (index as in `readers`).
    pub fn read_runs(&self, runs: &[Vec<PageRun>], sink: &AddrSink<'_>) -> Result<(), ImageError> {
        for (r, runs) in self.readers.iter().zip(runs.iter()) {
            if runs.is_empty() {
                continue;
            }
            r.read_runs_parallel(runs, &|i, bytes| sink(runs[i].addr, bytes))?;
        }
        Ok(())
    }

    /// Writes the top image as a standalone (full) image to `out`: same
    /// metadata, every page it restores saved in it, no parent. Returns the
    /// size of the new file.
    pub fn merge(&self, out: &Path, opts: WriteOptions) -> Result<u64, ImageError> {
        let mut meta: ProcessImage = self.top().meta().clone();
        // Address order, each run read through its image's block cache.
        let mut runs: Vec<(usize, PageRun)> = self
            .page_runs()
            .into_iter()
            .enumerate()
            .flat_map(|(d, rs)| rs.into_iter().map(move |r| (d, r)))
            .collect();
        runs.sort_by_key(|(_, r)| r.addr);
        for v in meta.vmas.iter_mut() {
            v.pages.clear();
            v.from_parent.clear();
        }
        let mut w = ImageWriter::create(out, opts)?;
        let mut buf = Vec::new();
        let mut vi = 0;
        for (d, run) in runs {
            buf.resize((run.npages * PAGE_SIZE) as usize, 0);
            self.readers[d].read_run(&run, &mut buf)?;
            let data = w.add_pages(&buf)?;
            while vi < meta.vmas.len() && meta.vmas[vi].end <= run.addr {
                vi += 1;
            }
            let v = meta
                .vmas
                .get_mut(vi)
                .filter(|v| v.start <= run.addr)
                .ok_or_else(|| ImageError::Corrupt {
                    path: self.top().path().to_path_buf(),
                    detail: format!("page {:#x} outside every mapping", run.addr),
                })?;
            v.pages.push(PageRun { data, ..run });
        }
        meta.parent = None;
        w.finish(&meta)
    }
}

fn run_end(r: &PageRun) -> u64 {
    r.addr + r.npages * PAGE_SIZE
}

/// The items of `sorted` (by start, disjoint) overlapping `[start, end)`.
fn overlapping<T>(
    sorted: &[T],
    start: u64,
    end: u64,
    range: impl Fn(&T) -> (u64, u64),
) -> impl Iterator<Item = &T> {
    let first = sorted.partition_point(|x| range(x).1 <= start);
    sorted[first..].iter().take_while(move |x| range(x).0 < end)
}

/// `from_parent` spans must be page-aligned, inside their VMA, and only in
/// an image that has a parent.
fn check_spans(r: &ImageReader) -> Result<(), ImageError> {
    let meta = r.meta();
    for v in &meta.vmas {
        for s in &v.from_parent {
            let bad = |detail: &str| ImageError::Corrupt {
                path: r.path().to_path_buf(),
                detail: format!(
                    "pages from parent at {:#x} ({} pages): {detail}",
                    s.addr, s.npages
                ),
            };
            if meta.parent.is_none() {
                return Err(bad("the image has no parent"));
            }
            let end = s
                .npages
                .checked_mul(PAGE_SIZE)
                .and_then(|l| s.addr.checked_add(l));
            if s.addr % PAGE_SIZE != 0 || s.addr < v.start || end.is_none_or(|e| e > v.end) {
                return Err(bad(&format!(
                    "not inside its vma {:#x}-{:#x}",
                    v.start, v.end
                )));
            }
        }
    }
    Ok(())
}
