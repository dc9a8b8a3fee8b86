//! Image reader: validates structure on open, reads page runs (in parallel).

use crate::error::ImageError;
use crate::format::{self, BlockEntry, Header, Trailer, PAGE};
use crate::key::{self, ImageKey};
use crate::model::{DataRef, PageRun, ProcessImage};
use crate::writer::Codec;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// An open, structurally validated image.
pub struct ImageReader {
    file: File,
    path: PathBuf,
    header: Header,
    file_size: u64,
    blocks: Vec<BlockEntry>,
    /// Logical (uncompressed) start of each block; one extra entry = total.
    starts: Vec<u64>,
    meta: ProcessImage,
    /// Checks page blocks (crc and MAC).
    check: BlockCheck,
    /// Last block decompressed by `read_run`.
    cache: Mutex<Option<(u32, Arc<Vec<u8>>)>>,
}

impl std::fmt::Debug for ImageReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageReader")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("file_size", &self.file_size)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

/// A run's logical byte range.
#[derive(Clone, Copy)]
struct Span {
    start: u64,
    len: u64,
}

impl ImageReader {
    /// Opens an image of ours (or, as root, anyone's), authenticated with
    /// its owner's key (see [`open_with_key`](Self::open_with_key)).
    pub fn open(path: &Path) -> Result<ImageReader, ImageError> {
        Self::open_inner(path, None)
    }

    /// Validates header, trailer, block table (layout and crc), the image
    /// MAC (over header, metadata and block table, which lists every
    /// block's MAC) with `key`, then the metadata (decoding) and that every
    /// page run lies inside the page data. Block payloads are checked
    /// (crc and MAC) by [`verify`](Self::verify) and whenever read.
    ///
    /// The file must be owned by us unless we are root, and writable by
    /// its owner only.
    pub fn open_with_key(path: &Path, key: Arc<ImageKey>) -> Result<ImageReader, ImageError> {
        Self::open_inner(path, Some(key))
    }

    fn open_inner(path: &Path, key: Option<Arc<ImageKey>>) -> Result<ImageReader, ImageError> {
        let file = File::open(path).map_err(|e| ImageError::io(path, "open", e))?;
        let p = || path.to_path_buf();
        let st = file
            .metadata()
            .map_err(|e| ImageError::io(path, "stat", e))?;
        let owner = std::os::unix::fs::MetadataExt::uid(&st);
        let me = key::euid();
        if owner != me && me != 0 {
            return Err(ImageError::NotOwner {
                path: p(),
                owner,
                uid: me,
            });
        }
        let mode = std::os::unix::fs::MetadataExt::mode(&st);
        if mode & 0o022 != 0 {
            return Err(ImageError::Auth {
                path: p(),
                detail: format!(
                    "writable by group or others (mode {:04o}): refusing it",
                    mode & 0o7777
                ),
            });
        }
        let corrupt = |d: String| ImageError::Corrupt {
            path: p(),
            detail: d,
        };
        let truncated = |w: &str| ImageError::Truncated {
            path: p(),
            what: w.to_string(),
        };
        let file_size = st.len();
        let head_len = file_size.min(PAGE) as usize;
        let mut head = vec![0u8; head_len];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| ImageError::io(path, "read header", e))?;
        let header = Header::decode(path, &head)?;
        if file_size < header.data_start + format::TRAILER_LEN as u64 {
            return Err(truncated("trailer missing"));
        }
        if head[format::HEADER_LEN..header.data_start as usize]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(corrupt("padding after the header is not zero".into()));
        }

        let mut tb = [0u8; format::TRAILER_LEN];
        file.read_exact_at(&mut tb, file_size - format::TRAILER_LEN as u64)
            .map_err(|e| ImageError::io(path, "read trailer", e))?;
        let t = Trailer::decode(path, &tb)?;
        if t.meta_codec != header.codec {
            return Err(corrupt(format!(
                "metadata codec {} differs from the image codec {}",
                t.meta_codec.name(),
                header.codec.name()
            )));
        }
        // Sections must tile the file exactly: data | meta | table | trailer.
        let table_len = t
            .block_count
            .checked_mul(format::BLOCK_ENTRY_LEN as u64)
            .ok_or_else(|| corrupt("block count overflows".into()))?;
        let end = t
            .table_offset
            .checked_add(table_len)
            .and_then(|x| x.checked_add(format::TRAILER_LEN as u64));
        if end != Some(file_size) {
            return Err(corrupt(format!(
                "trailer says block table at {} with {} entries, file is {file_size} bytes",
                t.table_offset, t.block_count
            )));
        }
        if t.meta_offset < header.data_start
            || t.meta_offset.checked_add(t.meta_stored_len) != Some(t.table_offset)
        {
            return Err(corrupt(format!(
                "metadata at {} ({} bytes) does not end at the block table ({})",
                t.meta_offset, t.meta_stored_len, t.table_offset
            )));
        }

        let mut table = vec![0u8; table_len as usize];
        file.read_exact_at(&mut table, t.table_offset)
            .map_err(|e| ImageError::io(path, "read block table", e))?;
        if crc32fast::hash(&table) != t.table_crc {
            return Err(ImageError::Checksum {
                path: p(),
                section: "block table".into(),
            });
        }
        let mut blocks = Vec::with_capacity(t.block_count as usize);
        let mut starts = Vec::with_capacity(t.block_count as usize + 1);
        let mut next = header.data_start;
        let mut logical = 0u64;
        for (i, chunk) in table.chunks_exact(format::BLOCK_ENTRY_LEN).enumerate() {
            let b = BlockEntry::decode(path, i, chunk)?;
            if b.offset != next {
                return Err(corrupt(format!(
                    "block {i} at {}, expected {next}",
                    b.offset
                )));
            }
            if b.raw_len == 0 || b.raw_len % PAGE != 0 || b.raw_len > u64::from(header.block_size) {
                return Err(corrupt(format!("block {i}: bad length {}", b.raw_len)));
            }
            if b.codec == Codec::None && b.stored_len != b.raw_len {
                return Err(corrupt(format!(
                    "block {i}: raw block stored in {} bytes",
                    b.stored_len
                )));
            }
            if header.codec == Codec::None && (b.codec != Codec::None || b.offset % PAGE != 0) {
                return Err(corrupt(format!(
                    "block {i}: not raw and page-aligned in an uncompressed image"
                )));
            }
            next = b
                .offset
                .checked_add(b.stored_len)
                .ok_or_else(|| corrupt(format!("block {i}: length overflows")))?;
            starts.push(logical);
            logical += b.raw_len;
            blocks.push(b);
        }
        starts.push(logical);
        if next != t.meta_offset {
            return Err(corrupt(format!(
                "page blocks end at {next}, metadata starts at {}",
                t.meta_offset
            )));
        }

        if t.meta_raw_len > format::META_LIMIT as u64 {
            return Err(corrupt(format!(
                "metadata of {} bytes exceeds the limit",
                t.meta_raw_len
            )));
        }
        let mut stored = vec![0u8; t.meta_stored_len as usize];
        file.read_exact_at(&mut stored, t.meta_offset)
            .map_err(|e| ImageError::io(path, "read metadata", e))?;
        if crc32fast::hash(&stored) != t.meta_crc {
            return Err(ImageError::Checksum {
                path: p(),
                section: "metadata".into(),
            });
        }
        // Authenticate before decoding anything the metadata says.
        let key = match key {
            Some(k) => k,
            None if owner == me => ImageKey::user()?,
            None => Arc::new(ImageKey::of_uid(owner)?),
        };
        if header.key_id != key.id() {
            return Err(ImageError::Auth {
                path: p(),
                detail: format!(
                    "written with image key {}, not with {} (the key of uid {owner}): \
                     another user's image, or a key since replaced",
                    key::hex(&header.key_id),
                    key::hex(&key.id())
                ),
            });
        }
        let want = key.image_mac(&[
            &head[..format::HEADER_LEN],
            &tb[..Trailer::MAC_COVERED],
            &stored,
            &table,
        ]);
        if !key::mac_eq(&want, &t.mac) {
            return Err(ImageError::Auth {
                path: p(),
                detail: "image MAC mismatch (header, metadata or block table edited)".into(),
            });
        }
        let mut raw = vec![0u8; t.meta_raw_len as usize];
        format::decompress(t.meta_codec, &stored, &mut raw).map_err(|d| ImageError::Metadata {
            path: p(),
            detail: d,
        })?;
        let (mut meta, mut used): (ProcessImage, usize) =
            bincode::serde::decode_from_slice(&raw, format::bincode_config()).map_err(|e| {
                ImageError::Metadata {
                    path: p(),
                    detail: e.to_string(),
                }
            })?;
        // One record after the metadata per minor version that added one,
        // decoded by version (bincode, in the same compressed and
        // authenticated bytes).
        if header.minor >= 1 {
            let (ext, n): (crate::ImageExt, usize) = decode_record(&raw[used..], "2.1", path)?;
            used += n;
            meta.computation.launch = ext.launch;
            meta.computation.set = ext.set;
        }
        if header.minor >= 2 {
            let (ext2, n): (crate::ImageExt2, usize) = decode_record(&raw[used..], "2.2", path)?;
            used += n;
            meta.security = ext2.security;
        }
        if header.minor >= 4 {
            let (ext3, n): (crate::ImageExt3, usize) = decode_record(&raw[used..], "2.4", path)?;
            used += n;
            meta.computation.no_namespaces = ext3.no_namespaces;
        }
        if header.minor >= 5 {
            let (ext4, n): (crate::ImageExt4, usize) = decode_record(&raw[used..], "2.5", path)?;
            used += n;
            meta.passcred_fds = ext4.passcred_fds;
        }
        if used != raw.len() {
            return Err(ImageError::Metadata {
                path: p(),
                detail: format!("{} trailing bytes", raw.len() - used),
            });
        }

        let check = BlockCheck {
            path: p(),
            key,
            verified: blocks.iter().map(|_| AtomicBool::new(false)).collect(),
            blocks: blocks.clone().into(),
        };
        let r = ImageReader {
            file,
            path: p(),
            header,
            file_size,
            blocks,
            starts,
            meta,
            check: check.clone(),
            cache: Mutex::new(None),
        };
        r.check_runs()?;
        Ok(r)
    }

    pub fn meta(&self) -> &ProcessImage {
        &self.meta
    }

    /// The codec the image was written with (an incompressible block of a
    /// compressed image may still be stored raw).
    pub fn codec(&self) -> Codec {
        self.header.codec
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(major, minor)` of the file's format.
    pub fn format_version(&self) -> (u16, u16) {
        (self.header.major, self.header.minor)
    }

    /// Number of page blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// Total uncompressed page bytes stored.
    pub fn page_bytes(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    fn span(&self, run: &PageRun) -> Result<Span, ImageError> {
        let bad = |detail: &str| ImageError::BadRun {
            path: self.path.clone(),
            addr: run.addr,
            npages: run.npages,
            block: run.data.block,
            offset: run.data.offset,
            detail: detail.to_string(),
        };
        let len = run
            .npages
            .checked_mul(PAGE)
            .ok_or_else(|| bad("length overflows"))?;
        let b = run.data.block as usize;
        if len == 0 {
            return Ok(Span { start: 0, len: 0 });
        }
        if b >= self.blocks.len() {
            return Err(bad("no such block"));
        }
        if !run.data.offset.is_multiple_of(PAGE) || run.data.offset >= self.blocks[b].raw_len {
            return Err(bad("offset not a page inside the block"));
        }
        let start = self.starts[b] + run.data.offset;
        match start.checked_add(len) {
            Some(end) if end <= self.page_bytes() => Ok(Span { start, len }),
            _ => Err(bad("runs past the end of the page data")),
        }
    }

    fn check_runs(&self) -> Result<(), ImageError> {
        for v in &self.meta.vmas {
            for run in &v.pages {
                self.span(run)?;
            }
        }
        Ok(())
    }

    /// Index of the block holding logical byte `pos`.
    fn block_of(&self, pos: u64) -> usize {
        self.starts.partition_point(|&s| s <= pos) - 1
    }

    /// Reads block `i`'s stored bytes and checks their crc and MAC.
    fn read_stored(&self, i: usize) -> Result<Vec<u8>, ImageError> {
        let b = &self.blocks[i];
        let mut stored = vec![0u8; b.stored_len as usize];
        self.file
            .read_exact_at(&mut stored, b.offset)
            .map_err(|e| ImageError::io(&self.path, format!("read block {i}"), e))?;
        self.check.check(i, &stored)?;
        Ok(stored)
    }

    /// What checks this image's page blocks (crc and MAC), for readers of
    /// the file that do not go through this type (the lazy restore maps
    /// the file).
    pub fn block_check(&self) -> &BlockCheck {
        &self.check
    }

    /// Id of the key the image is authenticated with.
    pub fn key_id(&self) -> [u8; crate::key::KEY_ID_LEN] {
        self.header.key_id
    }

    /// Block `i`'s uncompressed bytes, checked.
    fn load_block(&self, i: usize) -> Result<Vec<u8>, ImageError> {
        let b = &self.blocks[i];
        let stored = self.read_stored(i)?;
        if b.codec == Codec::None {
            return Ok(stored);
        }
        let mut raw = vec![0u8; b.raw_len as usize];
        format::decompress(b.codec, &stored, &mut raw).map_err(|detail| {
            ImageError::Decompress {
                path: self.path.clone(),
                block: i as u32,
                codec: b.codec.name(),
                detail,
            }
        })?;
        Ok(raw)
    }

    fn cached_block(&self, i: usize) -> Result<Arc<Vec<u8>>, ImageError> {
        if let Ok(c) = self.cache.lock() {
            if let Some((ci, data)) = c.as_ref() {
                if *ci as usize == i {
                    return Ok(Arc::clone(data));
                }
            }
        }
        let data = Arc::new(self.load_block(i)?);
        if let Ok(mut c) = self.cache.lock() {
            *c = Some((i as u32, Arc::clone(&data)));
        }
        Ok(data)
    }

    /// Checks every block's crc (in parallel over all cores) and that every
    /// page run lies inside the page data and inside its VMA. Does not
    /// decompress (a corrupt payload with a matching crc cannot happen by
    /// accident; decompression errors are still caught when reading).
    pub fn verify(&self) -> Result<(), ImageError> {
        self.verify_layout()?;
        self.verify_blocks()
    }

    /// The cheap part of [`verify`](Self::verify): every page run lies
    /// inside the page data and inside its VMA. Page bytes are not read;
    /// their crc is checked whenever a block is read (or, for a lazy
    /// restore, before any byte of it reaches the process).
    pub fn verify_layout(&self) -> Result<(), ImageError> {
        self.check_runs()?;
        for v in &self.meta.vmas {
            for run in &v.pages {
                let end = run
                    .npages
                    .checked_mul(PAGE)
                    .and_then(|l| run.addr.checked_add(l));
                if run.addr % PAGE != 0 || run.addr < v.start || end.is_none_or(|e| e > v.end) {
                    return Err(ImageError::BadRun {
                        path: self.path.clone(),
                        addr: run.addr,
                        npages: run.npages,
                        block: run.data.block,
                        offset: run.data.offset,
                        detail: format!("not inside its vma {:#x}-{:#x}", v.start, v.end),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks every block's crc and MAC, in parallel over all cores: after
    /// it, every byte of the image has been authenticated.
    pub fn verify_all(&self) -> Result<(), ImageError> {
        self.verify()
    }

    /// Checks every block's crc and MAC, in parallel over all cores
    /// (blocks checked before are skipped).
    pub fn verify_blocks(&self) -> Result<(), ImageError> {
        let all: Vec<usize> = (0..self.blocks.len())
            .filter(|&i| !self.check.is_verified(i))
            .collect();
        parallel_for(&all, |_, &i| self.read_stored(i).map(|_| ()))
    }

    /// The page blocks as the block table lists them (file offset, stored
    /// length, crc of the stored bytes, codec).
    pub fn blocks(&self) -> &[BlockEntry] {
        &self.blocks
    }

    /// The part of `run` (a verified run of this image) holding the
    /// `npages` pages from `addr`, which lie inside it.
    pub fn sub_run(&self, run: &PageRun, addr: u64, npages: u64) -> PageRun {
        let pos = self.starts[run.data.block as usize] + run.data.offset + (addr - run.addr);
        let b = self.block_of(pos);
        PageRun {
            addr,
            npages,
            data: DataRef {
                block: b as u32,
                offset: pos - self.starts[b],
            },
        }
    }

    /// Fills `buf` (len == run.npages*4096) with the run's bytes.
    pub fn read_run(&self, run: &PageRun, buf: &mut [u8]) -> Result<(), ImageError> {
        let sp = self.span(run)?;
        if buf.len() as u64 != sp.len {
            return Err(ImageError::InvalidArgument(format!(
                "read_run: buffer of {} bytes for {} pages",
                buf.len(),
                run.npages
            )));
        }
        let mut pos = sp.start;
        let mut out = 0usize;
        while out < buf.len() {
            let i = self.block_of(pos);
            let in_block = (pos - self.starts[i]) as usize;
            let n = ((self.starts[i + 1] - pos) as usize).min(buf.len() - out);
            let data = self.cached_block(i)?;
            buf[out..out + n].copy_from_slice(&data[in_block..in_block + n]);
            out += n;
            pos += n as u64;
        }
        Ok(())
    }

    /// Reads many runs, decompressing the blocks they touch in parallel
    /// (one block per task, all cores) and calls `sink(run_index, bytes)`
    /// once per run with a non-zero length.
    ///
    /// Order: `sink` is called from worker threads in no particular order,
    /// possibly concurrently. A run inside one block is passed straight from
    /// the decompressed block; a run spanning blocks is assembled in its own
    /// buffer and passed when its last piece arrives. The first error (from
    /// reading or from `sink`) stops the work and is returned.
    pub fn read_runs_parallel(
        &self,
        runs: &[PageRun],
        sink: &RunSink<'_>,
    ) -> Result<(), ImageError> {
        // Pieces per block: (run index, offset in block, offset in run, len).
        let mut per_block: Vec<Vec<(usize, usize, usize, usize)>> =
            vec![Vec::new(); self.blocks.len()];
        let mut spanning: Vec<Option<Mutex<Assembly>>> = Vec::with_capacity(runs.len());
        for (ri, run) in runs.iter().enumerate() {
            let sp = self.span(run)?;
            let mut pos = sp.start;
            let end = sp.start + sp.len;
            let mut pieces = 0;
            while pos < end {
                let i = self.block_of(pos);
                let n = (self.starts[i + 1].min(end) - pos) as usize;
                per_block[i].push((
                    ri,
                    (pos - self.starts[i]) as usize,
                    (pos - sp.start) as usize,
                    n,
                ));
                pos += n as u64;
                pieces += 1;
            }
            spanning.push((pieces > 1).then(|| {
                Mutex::new(Assembly {
                    buf: Vec::new(),
                    len: sp.len as usize,
                    missing: sp.len as usize,
                })
            }));
        }
        let needed: Vec<usize> = (0..self.blocks.len())
            .filter(|&i| !per_block[i].is_empty())
            .collect();
        parallel_for(&needed, |_, &i| {
            let data = self.load_block(i)?;
            for &(ri, in_block, in_run, n) in &per_block[i] {
                let piece = &data[in_block..in_block + n];
                match &spanning[ri] {
                    None => sink(ri, piece)?,
                    Some(m) => {
                        let done = {
                            let mut a = m.lock().map_err(|_| ImageError::WorkerPanicked)?;
                            if a.buf.is_empty() {
                                a.buf = vec![0u8; a.len];
                            }
                            a.buf[in_run..in_run + n].copy_from_slice(piece);
                            a.missing -= n;
                            if a.missing == 0 {
                                Some(std::mem::take(&mut a.buf))
                            } else {
                                None
                            }
                        };
                        if let Some(full) = done {
                            sink(ri, &full)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Where the run's bytes start in the image's page data (the
    /// concatenation of every block's raw bytes); None for an empty or
    /// invalid run.
    pub fn run_position(&self, run: &PageRun) -> Option<u64> {
        self.span(run)
            .ok()
            .filter(|sp| sp.len > 0)
            .map(|sp| sp.start)
    }

    /// For codec None: the 4096-aligned file offset where the run's bytes lie contiguously, so they can be mmap'd; None otherwise.
    pub fn run_file_offset(&self, run: &PageRun) -> Option<u64> {
        let sp = self.span(run).ok()?;
        if sp.len == 0 {
            return None;
        }
        let first = self.block_of(sp.start);
        let last = self.block_of(sp.start + sp.len - 1);
        for i in first..=last {
            let b = &self.blocks[i];
            if b.codec != Codec::None
                || (i > first
                    && b.offset != self.blocks[i - 1].offset + self.blocks[i - 1].stored_len)
            {
                return None;
            }
        }
        let off = self.blocks[first].offset + (sp.start - self.starts[first]);
        off.is_multiple_of(PAGE).then_some(off)
    }
}

/// Checks page blocks read from an image's file: crc32 (quick corruption
/// check), then the keyed MAC listed in the (authenticated) block table.
/// A block is MAC-checked once; the image file is writable by its owner
/// only (checked at open), so a block checked stays checked.
#[derive(Clone)]
pub struct BlockCheck {
    path: PathBuf,
    key: Arc<ImageKey>,
    blocks: Arc<[BlockEntry]>,
    verified: Arc<[AtomicBool]>,
}

impl std::fmt::Debug for BlockCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCheck")
            .field("path", &self.path)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl BlockCheck {
    /// A check of `blocks` (entries of an authenticated block table) of
    /// the image at `path` with `key`.
    pub fn new(path: &Path, key: Arc<ImageKey>, blocks: &[BlockEntry]) -> BlockCheck {
        BlockCheck {
            path: path.to_path_buf(),
            key,
            verified: blocks.iter().map(|_| AtomicBool::new(false)).collect(),
            blocks: blocks.into(),
        }
    }

    /// The block table.
    pub fn blocks(&self) -> &[BlockEntry] {
        &self.blocks
    }

    /// Checks `stored`, the stored bytes of block `i`: crc, then MAC.
    pub fn check(&self, i: usize, stored: &[u8]) -> Result<(), ImageError> {
        let Some(b) = self.blocks.get(i) else {
            return Err(ImageError::Corrupt {
                path: self.path.clone(),
                detail: format!("no block {i}"),
            });
        };
        if stored.len() as u64 != b.stored_len || crc32fast::hash(stored) != b.crc {
            return Err(ImageError::Checksum {
                path: self.path.clone(),
                section: format!("block {i}"),
            });
        }
        self.check_mac(i, stored)
    }

    /// Whether block `i` was checked already.
    pub fn is_verified(&self, i: usize) -> bool {
        self.verified
            .get(i)
            .is_some_and(|v| v.load(Ordering::Acquire))
    }

    /// Checks the MAC of block `i` only (the caller checked its crc).
    pub fn check_mac(&self, i: usize, stored: &[u8]) -> Result<(), ImageError> {
        let (Some(b), Some(done)) = (self.blocks.get(i), self.verified.get(i)) else {
            return Err(ImageError::Corrupt {
                path: self.path.clone(),
                detail: format!("no block {i}"),
            });
        };
        if done.load(Ordering::Acquire) {
            return Ok(());
        }
        if !key::mac_eq(&self.key.block_mac(stored), &b.mac) {
            return Err(ImageError::Auth {
                path: self.path.clone(),
                detail: format!("page block {i} MAC mismatch (page data edited)"),
            });
        }
        done.store(true, Ordering::Release);
        Ok(())
    }
}

/// The callback of [`ImageReader::read_runs_parallel`]:
/// `sink(run_index, bytes)`, called from worker threads.
pub type RunSink<'a> = dyn Fn(usize, &[u8]) -> Result<(), ImageError> + Sync + 'a;

/// A run spanning blocks, filled piece by piece.
struct Assembly {
    buf: Vec<u8>,
    len: usize,
    missing: usize,
}

/// Runs `f` over `items` on all cores; stops at and returns the first error.
fn parallel_for<T: Sync>(
    items: &[T],
    f: impl Fn(usize, &T) -> Result<(), ImageError> + Sync,
) -> Result<(), ImageError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len());
    if threads <= 1 {
        for (i, it) in items.iter().enumerate() {
            f(i, it)?;
        }
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<(usize, ImageError)>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(it) = items.get(i) else { break };
                    if let Err(e) = f(i, it) {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut fe) = first_err.lock() {
                            // Report the lowest-index failure for a stable message.
                            if fe.as_ref().is_none_or(|(j, _)| i < *j) {
                                *fe = Some((i, e));
                            }
                        }
                        break;
                    }
                }
            });
        }
    });
    match first_err.into_inner() {
        Ok(Some((_, e))) => Err(e),
        Ok(None) => Ok(()),
        Err(_) => Err(ImageError::WorkerPanicked),
    }
}

/// Decodes one record that follows the metadata (added by format
/// `version`): the record and the bytes it took.
fn decode_record<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    version: &str,
    path: &Path,
) -> Result<(T, usize), ImageError> {
    bincode::serde::decode_from_slice(bytes, format::bincode_config()).map_err(|e| {
        ImageError::Metadata {
            path: path.to_path_buf(),
            detail: format!("format {version} record: {e}"),
        }
    })
}
