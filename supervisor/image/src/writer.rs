//! Streaming image writer: page data first (compressed in parallel blocks),
//! metadata, block table and trailer last, then fsync + atomic rename.

pub use crate::codec::Codec;
use crate::error::ImageError;
use crate::format::{self, BlockEntry, Header, Trailer, MAC_LEN, PAGE};
use crate::key::{self, BlockMac, ImageKey, KEY_ID_LEN};
use crate::model::{DataRef, ProcessImage};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Writer settings.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub codec: Codec,
    /// Codec level; `None` = [`Codec::default_level`] (gzip 0-9, zstd
    /// -7..22 without 0; negative zstd levels trade ratio for speed).
    pub level: Option<i32>,
    /// Compression threads; 0 = all cores.
    pub threads: usize,
    /// Uncompressed bytes per block (a multiple of 4096, at most 1 GiB).
    pub block_size: usize,
    /// Key the image is authenticated with; `None` = the user's key
    /// ([`ImageKey::user`], created if missing).
    pub key: Option<Arc<ImageKey>>,
    /// The codec is the default one, not asked for: a block encoded by a
    /// [`BlockEncoder`] may be stored raw without trying to compress it,
    /// when the caller says compressing would not pay (the writer is
    /// waiting for blocks, so the CPU and not the disk is what the
    /// checkpoint waits for) or when recent blocks did not compress.
    /// Blocks stored raw in a compressed image are part of the format.
    pub adaptive: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            codec: Codec::DEFAULT,
            level: None,
            threads: 0,
            block_size: 4 << 20,
            key: None,
            adaptive: false,
        }
    }
}

/// A block of page bytes made ready for [`ImageWriter::add_encoded`] by a
/// thread of the caller's (see [`BlockEncoder`]).
pub struct EncodedBlock {
    /// Page bytes in the block (a multiple of 4096).
    pub raw_len: u64,
    /// The bytes to store: compressed, or raw when that is no smaller.
    pub stored: Vec<u8>,
    pub codec: Codec,
    /// crc32 of `stored`.
    pub crc: u32,
    /// Id of the key and MAC of `stored` (None when the encoder had no key:
    /// the writer computes it).
    pub mac: Option<([u8; KEY_ID_LEN], [u8; MAC_LEN])>,
    /// The raw buffer handed in, for reuse (empty when `stored` is it).
    pub spare: Vec<u8>,
}

/// Encodes blocks of page bytes the way [`ImageWriter`] stores them, on
/// the caller's thread (one encoder per thread), so reading and
/// compressing can run on every core while one thread writes.
pub struct BlockEncoder {
    codec: Codec,
    compressor: format::BlockCompressor,
    key: Option<Arc<ImageKey>>,
    adaptive: bool,
    /// Adaptive: blocks still to store raw without trying, after one that
    /// did not compress, and how many the next such block makes it skip
    /// (doubling while blocks keep not compressing).
    skip: u32,
    backoff: u32,
}

/// Adaptive encoding: a block that compresses to more than this share of
/// its size (15/16) is taken as incompressible data...
const POOR_RATIO: (usize, usize) = (15, 16);
/// ...and the next blocks of the encoder are stored raw without trying
/// (random data, already compressed data): 2 after the first such block,
/// twice as many after each next one, this many at most.
const MAX_SKIP: u32 = 64;

impl BlockEncoder {
    pub fn new(opts: &WriteOptions) -> BlockEncoder {
        BlockEncoder {
            codec: opts.codec,
            compressor: format::BlockCompressor::new(opts.codec, opts.level),
            key: opts.key.clone().or_else(|| ImageKey::user().ok()),
            adaptive: opts.adaptive && opts.codec != Codec::None,
            skip: 0,
            backoff: 0,
        }
    }

    /// Whether this encoder chooses per block ([`WriteOptions::adaptive`]).
    pub fn adaptive(&self) -> bool {
        self.adaptive
    }

    /// [`encode`](Self::encode), compressing only when `compress` is true
    /// or the encoder is not adaptive; an adaptive encoder also skips a
    /// few blocks after one that did not compress.
    pub fn encode_choosing(
        &mut self,
        raw: Vec<u8>,
        out: Vec<u8>,
        compress: bool,
    ) -> Result<EncodedBlock, ImageError> {
        if !self.adaptive {
            return self.encode(raw, out);
        }
        if !compress || self.skip > 0 {
            self.skip = self.skip.saturating_sub(1);
            return self.store_raw(raw, out);
        }
        let b = self.encode(raw, out)?;
        if b.stored.len() * POOR_RATIO.1 > b.raw_len as usize * POOR_RATIO.0 {
            self.backoff = (self.backoff * 2).clamp(2, MAX_SKIP);
            self.skip = self.backoff;
        } else {
            self.backoff = 0;
        }
        Ok(b)
    }

    fn store_raw(&mut self, raw: Vec<u8>, out: Vec<u8>) -> Result<EncodedBlock, ImageError> {
        Self::check_len(&raw)?;
        Ok(EncodedBlock {
            raw_len: raw.len() as u64,
            crc: crc32fast::hash(&raw),
            mac: self.mac(&raw),
            stored: raw,
            codec: Codec::None,
            spare: out,
        })
    }

    fn check_len(raw: &[u8]) -> Result<(), ImageError> {
        if !raw.len().is_multiple_of(PAGE as usize) || raw.len() as u64 > format::MAX_BLOCK {
            return Err(ImageError::InvalidArgument(format!(
                "block of {} bytes is not a multiple of 4096 of at most 1 GiB",
                raw.len()
            )));
        }
        Ok(())
    }

    fn mac(&self, stored: &[u8]) -> Option<([u8; KEY_ID_LEN], [u8; MAC_LEN])> {
        self.key.as_ref().map(|k| (k.id(), k.block_mac(stored)))
    }

    /// Encodes `raw` (a multiple of 4096 bytes, at most 1 GiB); `out` is a
    /// buffer to compress into (reused).
    pub fn encode(&mut self, raw: Vec<u8>, mut out: Vec<u8>) -> Result<EncodedBlock, ImageError> {
        Self::check_len(&raw)?;
        let raw_len = raw.len() as u64;
        if self.codec != Codec::None {
            self.compressor
                .compress(&raw, &mut out)
                .map_err(|detail| ImageError::Compress {
                    block: 0,
                    codec: self.codec.name(),
                    detail,
                })?;
            if out.len() < raw.len() {
                return Ok(EncodedBlock {
                    raw_len,
                    crc: crc32fast::hash(&out),
                    mac: self.mac(&out),
                    stored: out,
                    codec: self.codec,
                    spare: raw,
                });
            }
        }
        self.store_raw(raw, out)
    }
}

/// A block handed to a compression worker.
struct Job {
    seq: u32,
    raw: Vec<u8>,
    out: Vec<u8>,
}

/// A compressed block coming back.
struct Done {
    seq: u32,
    raw: Vec<u8>,
    out: Vec<u8>,
    /// Codec the block is stored with (raw if compression did not help).
    codec: Codec,
    /// MAC of the stored bytes.
    mac: [u8; MAC_LEN],
    result: Result<(), String>,
}

struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    /// Max blocks submitted but not yet written.
    max_in_flight: usize,
}

impl Pool {
    fn new(
        threads: usize,
        codec: Codec,
        level: Option<i32>,
        key: &Arc<ImageKey>,
    ) -> std::io::Result<Pool> {
        let (jtx, jrx) = mpsc::sync_channel::<Job>(threads * 2);
        let jrx = Arc::new(Mutex::new(jrx));
        let (dtx, drx) = mpsc::channel::<Done>();
        let workers = (0..threads)
            .map(|i| {
                let jrx = Arc::clone(&jrx);
                let dtx = dtx.clone();
                let key = Arc::clone(key);
                std::thread::Builder::new()
                    .name(format!("img-compress-{i}"))
                    .spawn(move || {
                        let mut compressor = format::BlockCompressor::new(codec, level);
                        loop {
                            let job = match jrx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok(Job { seq, raw, mut out }) = job else {
                                return;
                            };
                            // A panic in a codec becomes an error, so the writer never waits forever.
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    compressor.compress(&raw, &mut out)
                                }))
                                .unwrap_or_else(|_| Err("codec panicked".to_string()));
                            // Incompressible block: store it raw (no decompression on restart).
                            let stored_codec = if result.is_ok() && out.len() >= raw.len() {
                                Codec::None
                            } else {
                                codec
                            };
                            let mac = match (&result, stored_codec) {
                                (Err(_), _) => [0; MAC_LEN],
                                (Ok(()), Codec::None) => key.block_mac(&raw),
                                (Ok(()), _) => key.block_mac(&out),
                            };
                            if dtx
                                .send(Done {
                                    seq,
                                    raw,
                                    out,
                                    codec: stored_codec,
                                    mac,
                                    result,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Pool {
            jobs: Some(jtx),
            done: drx,
            workers,
            max_in_flight: threads * 2,
        })
    }

    fn shutdown(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Streams one process image to `<final>.tmp.<pid>` (created with
/// `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600), renamed on [`finish`].
///
/// Page bytes come either through [`add_pages`](Self::add_pages) (cut into
/// blocks and compressed by the writer's own pool) or as whole blocks
/// encoded elsewhere ([`add_encoded`](Self::add_encoded)); blocks of both
/// kinds may follow each other.
///
/// [`finish`]: ImageWriter::finish
pub struct ImageWriter {
    file: File,
    tmp_path: PathBuf,
    final_path: PathBuf,
    opts: WriteOptions,
    /// Current (not yet sealed) block's raw bytes (compressed codecs).
    cur: Vec<u8>,
    /// Length and crc of the current block (codec none, written through).
    cur_raw_len: u64,
    cur_crc: crc32fast::Hasher,
    cur_mac: Option<BlockMac>,
    key: Arc<ImageKey>,
    /// The encoded header (covered by the image MAC).
    header: [u8; format::HEADER_LEN],
    /// File offset where the next stored bytes go.
    pos: u64,
    /// Bytes before this offset have been handed to writeback.
    writeback_from: u64,
    table: Vec<BlockEntry>,
    pool: Option<Pool>,
    in_flight: u32,
    /// Finished blocks waiting for their predecessors.
    pending: BTreeMap<u32, Done>,
    free_raw: Vec<Vec<u8>>,
    free_out: Vec<Vec<u8>>,
    finished: bool,
}

impl ImageWriter {
    /// Creates `<final_path>.tmp.<pid>` next to final_path (error naming the dir if not writable).
    pub fn create(final_path: &Path, opts: WriteOptions) -> Result<ImageWriter, ImageError> {
        if opts.block_size == 0
            || !opts.block_size.is_multiple_of(PAGE as usize)
            || opts.block_size as u64 > format::MAX_BLOCK
        {
            return Err(ImageError::InvalidArgument(format!(
                "block size {} is not a positive multiple of 4096 of at most 1 GiB",
                opts.block_size
            )));
        }
        let name = final_path.file_name().ok_or_else(|| {
            ImageError::InvalidArgument(format!("{}: not a file name", final_path.display()))
        })?;
        let dir = match final_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp_path = dir.join(tmp_name);
        let key = match &opts.key {
            Some(k) => Arc::clone(k),
            None => ImageKey::user()?,
        };
        let mut file = create_temp(&tmp_path).map_err(|error| ImageError::CreateTemp {
            dir: dir.clone(),
            error,
        })?;
        let data_start = if opts.codec == Codec::None {
            PAGE
        } else {
            format::HEADER_LEN as u64
        };
        let header = Header {
            arch: format::ARCH_X86_64,
            major: format::FORMAT_MAJOR,
            minor: format::FORMAT_MINOR,
            flags: if opts.codec == Codec::None {
                format::FLAG_MMAPABLE
            } else {
                0
            },
            codec: opts.codec,
            block_size: opts.block_size as u32,
            data_start,
            key_id: key.id(),
        };
        let header = header.encode();
        let mut head = vec![0u8; data_start as usize];
        head[..format::HEADER_LEN].copy_from_slice(&header);
        if let Err(e) = file.write_all(&head) {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(ImageError::io(&tmp_path, "write header", e));
        }
        let threads = match opts.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let pool = if opts.codec == Codec::None {
            None
        } else {
            match Pool::new(threads, opts.codec, opts.level, &key) {
                Ok(p) => Some(p),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp_path);
                    return Err(ImageError::io(&tmp_path, "spawn compression threads", e));
                }
            }
        };
        Ok(ImageWriter {
            file,
            tmp_path,
            final_path: final_path.to_path_buf(),
            cur: Vec::new(),
            cur_raw_len: 0,
            cur_crc: crc32fast::Hasher::new(),
            cur_mac: None,
            key,
            header,
            pos: data_start,
            writeback_from: 0,
            table: Vec::new(),
            pool,
            in_flight: 0,
            pending: BTreeMap::new(),
            free_raw: Vec::new(),
            free_out: Vec::new(),
            finished: false,
            opts,
        })
    }

    /// Path of the temporary file being written.
    pub fn temp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Appends page bytes (len a multiple of 4096) and returns where they start.
    ///
    /// Blocks are exactly `block_size` raw bytes (the last may be shorter);
    /// a call's bytes continue into as many following blocks as needed, so a
    /// run may span blocks. Memory stays bounded: at most `2 * threads`
    /// blocks are being compressed at once; beyond that this call waits.
    pub fn add_pages(&mut self, data: &[u8]) -> Result<DataRef, ImageError> {
        if !data.len().is_multiple_of(PAGE as usize) {
            return Err(ImageError::InvalidArgument(format!(
                "add_pages: length {} is not a multiple of 4096",
                data.len()
            )));
        }
        let bs = self.opts.block_size;
        let at = DataRef {
            block: self.table.len() as u32 + self.in_flight + self.pending.len() as u32,
            offset: if self.pool.is_some() {
                self.cur.len() as u64
            } else {
                self.cur_raw_len
            },
        };
        let mut rest = data;
        if self.pool.is_none() {
            // Codec none: write through, no copy.
            while !rest.is_empty() {
                let take = rest.len().min(bs - self.cur_raw_len as usize);
                let (now, later) = rest.split_at(take);
                self.file
                    .write_all(now)
                    .map_err(|e| ImageError::io(&self.tmp_path, "write page data", e))?;
                self.cur_crc.update(now);
                self.cur_mac
                    .get_or_insert_with(|| self.key.block_hasher())
                    .update(now);
                self.cur_raw_len += take as u64;
                rest = later;
                if self.cur_raw_len as usize == bs {
                    self.seal_raw_block();
                }
            }
            return Ok(at);
        }
        while !rest.is_empty() {
            if self.cur.capacity() == 0 {
                self.cur = self
                    .free_raw
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(bs));
                self.cur.clear();
            }
            let take = rest.len().min(bs - self.cur.len());
            let (now, later) = rest.split_at(take);
            self.cur.extend_from_slice(now);
            rest = later;
            if self.cur.len() == bs {
                self.submit()?;
            }
        }
        Ok(at)
    }

    /// Appends a block encoded by a [`BlockEncoder`] (after any bytes
    /// [`add_pages`](Self::add_pages) still holds) and returns its index;
    /// its pages start at offset 0 in it. Gives the buffers back.
    pub fn add_encoded(&mut self, b: EncodedBlock) -> Result<(u32, Vec<u8>, Vec<u8>), ImageError> {
        if b.raw_len == 0
            || !b.raw_len.is_multiple_of(PAGE)
            || (self.opts.codec == Codec::None && b.codec != Codec::None)
        {
            return Err(ImageError::InvalidArgument(format!(
                "encoded block of {} bytes ({}) for a {} image",
                b.raw_len,
                b.codec.name(),
                self.opts.codec.name()
            )));
        }
        self.flush_pages()?;
        let index = self.table.len() as u32;
        let mac = match b.mac {
            Some((id, mac)) if id == self.key.id() => mac,
            _ => self.key.block_mac(&b.stored),
        };
        self.file
            .write_all(&b.stored)
            .map_err(|e| ImageError::io(&self.tmp_path, format!("write block {index}"), e))?;
        self.table.push(BlockEntry {
            offset: self.pos,
            stored_len: b.stored.len() as u64,
            raw_len: b.raw_len,
            crc: b.crc,
            codec: b.codec,
            mac,
        });
        self.pos += b.stored.len() as u64;
        self.start_writeback();
        Ok((index, b.stored, b.spare))
    }

    /// Seals the block [`add_pages`](Self::add_pages) is filling and waits
    /// until every block handed to the pool is written.
    fn flush_pages(&mut self) -> Result<(), ImageError> {
        if self.pool.is_some() {
            if !self.cur.is_empty() {
                self.submit()?;
            }
            while self.in_flight > 0 || !self.pending.is_empty() {
                self.collect(true)?;
            }
        } else if self.cur_raw_len > 0 {
            self.seal_raw_block();
        }
        Ok(())
    }

    /// The writer's settings.
    pub fn options(&self) -> &WriteOptions {
        &self.opts
    }

    fn seal_raw_block(&mut self) {
        let crc = std::mem::take(&mut self.cur_crc).finalize();
        let mac = self
            .cur_mac
            .take()
            .unwrap_or_else(|| self.key.block_hasher())
            .finish();
        let len = self.cur_raw_len;
        self.table.push(BlockEntry {
            offset: self.pos,
            stored_len: len,
            raw_len: len,
            crc,
            codec: Codec::None,
            mac,
        });
        self.pos += len;
        self.cur_raw_len = 0;
        self.start_writeback();
    }

    /// Starts writing the bytes written so far to disk, without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), every 32 MiB: the disk
    /// works while later blocks are read and compressed, and the final
    /// fsync has little left to do.
    fn start_writeback(&mut self) {
        const STEP: u64 = 32 << 20;
        if self.pos - self.writeback_from < STEP {
            return;
        }
        // SAFETY: sync_file_range takes an fd we own and integers; it only
        // schedules I/O. A failure is harmless: fsync still follows.
        unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                self.writeback_from as libc::off64_t,
                (self.pos - self.writeback_from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.writeback_from = self.pos;
    }

    /// Hands the current block to the pool; writes finished blocks in order.
    fn submit(&mut self) -> Result<(), ImageError> {
        let seq = self.table.len() as u32 + self.in_flight + self.pending.len() as u32;
        let raw = std::mem::take(&mut self.cur);
        let out = self.free_out.pop().unwrap_or_default();
        let pool = self.pool.as_mut().expect("pool for compressed codec");
        let max = pool.max_in_flight;
        pool.jobs
            .as_ref()
            .expect("pool open")
            .send(Job { seq, raw, out })
            .map_err(|_| ImageError::WorkerPanicked)?;
        self.in_flight += 1;
        // Write whatever is already done, then wait while too much is in flight.
        self.collect(false)?;
        while self.in_flight + self.pending.len() as u32 >= max as u32 {
            self.collect(true)?;
        }
        Ok(())
    }

    /// Receives finished blocks (waiting for one if `block`) and writes every
    /// block whose predecessors are written.
    fn collect(&mut self, block: bool) -> Result<(), ImageError> {
        let pool = self.pool.as_ref().expect("pool");
        let mut got = Vec::new();
        if block && self.in_flight > 0 {
            got.push(pool.done.recv().map_err(|_| ImageError::WorkerPanicked)?);
        }
        while let Ok(d) = pool.done.try_recv() {
            got.push(d);
        }
        for d in got {
            self.in_flight -= 1;
            self.pending.insert(d.seq, d);
        }
        while let Some(d) = self.pending.remove(&(self.table.len() as u32)) {
            let seq = d.seq;
            if let Err(detail) = d.result {
                return Err(ImageError::Compress {
                    block: seq,
                    codec: self.opts.codec.name(),
                    detail,
                });
            }
            let stored: &[u8] = if d.codec == Codec::None {
                &d.raw
            } else {
                &d.out
            };
            self.file
                .write_all(stored)
                .map_err(|e| ImageError::io(&self.tmp_path, format!("write block {seq}"), e))?;
            self.table.push(BlockEntry {
                offset: self.pos,
                stored_len: stored.len() as u64,
                raw_len: d.raw.len() as u64,
                crc: crc32fast::hash(stored),
                codec: d.codec,
                mac: d.mac,
            });
            self.pos += stored.len() as u64;
            self.free_raw.push(d.raw);
            self.free_out.push(d.out);
            self.start_writeback();
        }
        Ok(())
    }

    /// Writes metadata + block table + trailer, fsyncs the file, renames it to final_path, fsyncs the directory. Returns the file size.
    pub fn finish(self, meta: &ProcessImage) -> Result<u64, ImageError> {
        self.finish_unsynced(meta)?.commit()
    }

    /// Writes metadata, block table and trailer but neither fsyncs nor
    /// renames: the image is complete in the temp file. A checkpoint calls
    /// this while the program is frozen and [`PendingImage::commit`] after it
    /// runs again, so the program never waits for the disk.
    pub fn finish_unsynced(mut self, meta: &ProcessImage) -> Result<PendingImage, ImageError> {
        // Seal the last block and drain the pool.
        if self.pool.is_some() {
            if !self.cur.is_empty() {
                self.submit()?;
            }
            while self.in_flight > 0 {
                self.collect(true)?;
            }
            if let Some(mut p) = self.pool.take() {
                p.shutdown();
            }
        } else if self.cur_raw_len > 0 {
            self.seal_raw_block();
        }
        self.free_raw.clear();
        self.free_out.clear();

        let mut raw_meta =
            bincode::serde::encode_to_vec(meta, format::bincode_config()).map_err(|e| {
                ImageError::Encode {
                    detail: e.to_string(),
                }
            })?;
        // The records format versions added after the metadata, in order:
        // 2.1 ImageExt, 2.2 ImageExt2, 2.4 ImageExt3, 2.5 ImageExt4.
        encode_record(
            &mut raw_meta,
            &crate::ImageExt {
                launch: meta.computation.launch.clone(),
                set: meta.computation.set.clone(),
            },
        )?;
        encode_record(
            &mut raw_meta,
            &crate::ImageExt2 {
                security: meta.security.clone(),
            },
        )?;
        encode_record(
            &mut raw_meta,
            &crate::ImageExt3 {
                no_namespaces: meta.computation.no_namespaces,
            },
        )?;
        encode_record(
            &mut raw_meta,
            &crate::ImageExt4 {
                passcred_fds: meta.passcred_fds.clone(),
            },
        )?;
        let mut stored_meta = Vec::new();
        format::compress(
            self.opts.codec,
            self.opts.level,
            &raw_meta,
            &mut stored_meta,
        )
        .map_err(|detail| ImageError::Encode {
            detail: format!("compress: {detail}"),
        })?;
        let meta_offset = self.pos;
        let mut table = Vec::with_capacity(self.table.len() * format::BLOCK_ENTRY_LEN);
        for b in &self.table {
            b.encode(&mut table);
        }
        let mut trailer = Trailer {
            mac: [0; MAC_LEN],
            meta_offset,
            meta_stored_len: stored_meta.len() as u64,
            meta_raw_len: raw_meta.len() as u64,
            table_offset: meta_offset + stored_meta.len() as u64,
            block_count: self.table.len() as u64,
            meta_crc: crc32fast::hash(&stored_meta),
            table_crc: crc32fast::hash(&table),
            meta_codec: self.opts.codec,
        };
        let fields = trailer.encode();
        trailer.mac = self.key.image_mac(&[
            &self.header,
            &fields[..Trailer::MAC_COVERED],
            &stored_meta,
            &table,
        ]);
        let io = |op: &str, e| ImageError::io(&self.tmp_path, op, e);
        self.file
            .write_all(&stored_meta)
            .map_err(|e| io("write metadata", e))?;
        self.file
            .write_all(&table)
            .map_err(|e| io("write block table", e))?;
        self.file
            .write_all(&trailer.encode())
            .map_err(|e| io("write trailer", e))?;
        let size = trailer.table_offset + table.len() as u64 + format::TRAILER_LEN as u64;
        self.finished = true;
        Ok(PendingImage {
            file: self.file.try_clone().map_err(|e| io("dup", e))?,
            tmp_path: self.tmp_path.clone(),
            final_path: self.final_path.clone(),
            size,
            synced: false,
            committed: false,
        })
    }
}

/// A complete image still under its temp name, not yet durable.
/// Dropping it without [`commit`](Self::commit) removes the temp file and
/// leaves any previous image untouched.
pub struct PendingImage {
    file: File,
    tmp_path: PathBuf,
    final_path: PathBuf,
    size: u64,
    synced: bool,
    committed: bool,
}

impl PendingImage {
    /// Fsyncs the file, renames it over the final name and fsyncs the
    /// directory. Returns the image size.
    /// Fsyncs the temp file (idempotent). Commit a set of images by syncing
    /// them all first: if one fails, none replaces its previous image.
    pub fn sync(&mut self) -> Result<(), ImageError> {
        if !self.synced {
            self.file
                .sync_all()
                .map_err(|e| ImageError::io(&self.tmp_path, "fsync", e))?;
            self.synced = true;
        }
        Ok(())
    }

    pub fn commit(self) -> Result<u64, ImageError> {
        self.commit_keeping_old().map(|(size, _)| size)
    }

    /// Like [`commit`](Self::commit), and also returns the image this one
    /// replaced, still open: freeing a large file's blocks takes a while
    /// (0.6 s for 1 GiB on ext4 here), and happens when the caller drops
    /// it, after the new image is reported durable. Its name is gone
    /// already; a crash frees it all the same.
    pub fn commit_keeping_old(mut self) -> Result<(u64, Option<File>), ImageError> {
        self.sync()?;
        // The image being replaced, if it is a regular file (never follow
        // or block on whatever else may sit at that name).
        let old = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&self.final_path)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
        };
        std::fs::rename(&self.tmp_path, &self.final_path).map_err(|e| {
            ImageError::io(
                &self.final_path,
                format!("rename from {}", self.tmp_path.display()),
                e,
            )
        })?;
        self.committed = true;
        let dir = match self.final_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ImageError::io(&dir, "fsync directory", e))?;
        remove_debris(&dir);
        Ok((self.size, old))
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }
}

impl Drop for PendingImage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if let Some(mut p) = self.pool.take() {
            p.shutdown();
        }
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// `ckpt_<prog>_<computation>-<launch>-<vpid>.dmtcp`, with `/` and
/// whitespace in `prog` replaced by `_`. `launch` tells apart the processes
/// of separate launches that joined one computation (each launch is its own
/// pid namespace, so their pids repeat).
pub fn image_file_name(prog: &str, computation: &str, launch: &str, vpid: u32) -> String {
    let prog: String = prog
        .chars()
        .map(|c| {
            if c == '/' || c.is_whitespace() || c == '\0' {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("ckpt_{prog}_{computation}-{launch}-{vpid}.dmtcp")
}

/// What an image file name made by [`image_file_name`] (possibly with the
/// `_g<generation>` suffix of incremental chains) says: `(computation,
/// launch, vpid)`. `None` for any other name (an image renamed by the
/// user, or one of format 2.0 named without a launch id).
pub fn parse_image_file_name(name: &str) -> Option<(String, String, u32)> {
    let stem = name.strip_prefix("ckpt_")?.strip_suffix(".dmtcp")?;
    let stem = match stem.rsplit_once("_g") {
        Some((s, g)) if !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()) => s,
        _ => stem,
    };
    let (rest, vpid) = stem.rsplit_once('-')?;
    let (rest, launch) = rest.rsplit_once('-')?;
    let (_, computation) = rest.rsplit_once('_')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(computation) || !hex(launch) {
        return None;
    }
    Some((
        computation.to_string(),
        launch.to_string(),
        vpid.parse().ok()?,
    ))
}

/// Creates a temp image file with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600.
/// A file of ours left at that name (a crashed writer whose pid we now
/// have) is replaced; anything else there (a symlink, another user's
/// file) is an error.
fn create_temp(path: &Path) -> std::io::Result<File> {
    match key::create_exclusive(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(path)?;
            if !m.file_type().is_file() || m.uid() != key::euid() {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} exists and is not a file of ours: refusing it",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
            key::create_exclusive(path)
        }
        r => r,
    }
}

/// Creates `dir` and any missing parent with mode 0700 (whatever the
/// umask); an existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Whether `name` is a temp image name, `<...>.dmtcp.tmp.<pid>`; its pid.
pub fn temp_image_pid(name: &str) -> Option<i32> {
    let (head, pid) = name.rsplit_once(".tmp.")?;
    if !head.ends_with(".dmtcp") || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the debris of interrupted checkpoints from `dir`: temp images
/// (`*.dmtcp.tmp.<pid>`) that are regular files owned by us and whose
/// writer (`<pid>`) is gone. Our own temp files and those of live writers
/// (other processes checkpointing into the same directory) are left.
pub fn remove_debris(dir: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let me = std::process::id() as i32;
    let uid = key::euid();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(temp_image_pid) else {
            continue;
        };
        if pid == me || pid <= 0 || pid_alive(pid) {
            continue;
        }
        let path = e.path();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() && m.uid() == uid => {}
            _ => continue,
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::info!(
                "removed {} (left by an interrupted checkpoint)",
                path.display()
            );
            removed += 1;
        }
    }
    removed
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Appends one record that follows the metadata (bincode).
fn encode_record<T: serde::Serialize>(out: &mut Vec<u8>, record: &T) -> Result<(), ImageError> {
    out.extend(
        bincode::serde::encode_to_vec(record, format::bincode_config()).map_err(|e| {
            ImageError::Encode {
                detail: e.to_string(),
            }
        })?,
    );
    Ok(())
}
