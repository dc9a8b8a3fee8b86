//! Lazy restore: a restarted process runs before its memory is in place.
//!
//! Page runs of private anonymous mappings are not copied at restart. Their
//! mappings are registered with a userfaultfd in missing mode instead, and
//! a server thread in `dmtcp-restart` fills them: a page the program touches
//! first is copied at once (`UFFDIO_COPY` from our read-only `mmap` of the
//! image, straight from the page cache for a raw block; from a decompressed
//! copy, the last few kept, for a compressed one), and in
//! the background every other page is copied in 1 MiB pieces until none is
//! left; then the userfaultfd is closed and the mappings are ordinary
//! anonymous memory again. The memory is anonymous and private from the
//! start (`MADV_DONTNEED` still gives zeros, `fork` still copies), unlike a
//! private file mapping of the image.
//!
//! What the program does meanwhile arrives as events: `fork` (the child's
//! mm gets its own userfaultfd with the pages still to come), `mremap`
//! (they move), `MADV_DONTNEED`/`MADV_REMOVE` and `munmap` (they are no
//! longer wanted: the program sees zeros or nothing, as it would have).
//! A page of a registered mapping that the image does not hold is answered
//! with the zero page.
//!
//! The image file must not change under us while pages are still to come:
//! a read lease (`F_SETLEASE`) is taken on it, so anyone opening it for
//! writing or truncating it waits until the server is done with it (the
//! kernel's `lease-break-time` bounds that wait, 45 s by default; copying
//! runs at memory speed). Without the lease (another owner, a file system
//! without leases) the restorer copies the pages eagerly.
//!
//! Faults from the kernel (a `read()` into a page still to come) need a
//! userfaultfd without `UFFD_USER_MODE_ONLY`, which an unprivileged process
//! may not create (`vm.unprivileged_userfaultfd=0`): the restorer then
//! copies eagerly as well. A checkpoint waits until every lazily restored
//! page is in place ([`wait_until_restored`]).
//!
//! Page data is checked here, not before the restart: the crc of each image
//! block is verified before the first byte of it is copied into a process.
//! A block that fails is never shown to the program; the restart is
//! abandoned through the hook set with [`on_fatal`] (`dmtcp-restart` stops
//! the computation and exits with a one-line error).
//!
//! Pages still to come exist only in this process: if `dmtcp-restart` died
//! before they are all in place, the program would read zeros where its
//! data was. `dmtcp-nsinit` is told to take the computation down with it
//! until [`busy`] turns false (`InitRequest::Lifeline`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use dmtcp_image::Codec;
use tracing::{debug, error};

use crate::kernel::pid::HostPid;
use crate::kernel::uffd::{
    self, ioctl, UffdMsg, UffdioCopy, UffdioRange, UffdioZeropage, UFFDIO_COPY,
    UFFDIO_REGISTER_MODE_MISSING, UFFDIO_WAKE, UFFDIO_ZEROPAGE, UFFD_EVENT_FORK,
    UFFD_EVENT_PAGEFAULT, UFFD_EVENT_REMAP, UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP,
    UFFD_FEATURE_EVENT_FORK, UFFD_FEATURE_EVENT_REMAP, UFFD_FEATURE_EVENT_REMOVE,
    UFFD_FEATURE_EVENT_UNMAP,
};

const PAGE: u64 = 4096;
/// Bytes copied per background step: big enough to run at memory speed,
/// small enough that a fault waits at most ~0.5 ms behind it.
const PREFETCH_CHUNK: u64 = 1 << 20;
/// Bytes copied for a fault: the faulting page and what follows it.
const FAULT_CHUNK: u64 = 64 << 10;

/// `fcntl` command: which signal announces a lease break.
const F_SETSIG: libc::c_int = 10;

/// How long after a process is handed over background copying starts
/// (`DMTCP_LAZY_PREFETCH_DELAY_MS`, default 0): until then only the pages
/// the program touches are copied. Tests use it to make the program work
/// on memory that is still to come.
fn prefetch_delay() -> std::time::Duration {
    std::time::Duration::from_millis(
        std::env::var("DMTCP_LAZY_PREFETCH_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    )
}

static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns lazy restore off for this process (`dmtcp-restart --no-lazy`).
pub fn disable() {
    DISABLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether lazy restore is wanted: on unless disabled or
/// `DMTCP_RESTART_LAZY=0`.
pub fn enabled() -> bool {
    !DISABLED.load(std::sync::atomic::Ordering::Relaxed)
        && !matches!(
            std::env::var("DMTCP_RESTART_LAZY")
                .as_deref()
                .map(str::trim),
            Ok("0" | "no" | "false" | "off")
        )
}

/// A block of page data as the block table lists it.
struct Block {
    /// File offset and length of the stored bytes.
    off: u64,
    stored: u64,
    /// Uncompressed length, and where the block starts in the image's
    /// page data (the concatenation of every block's raw bytes).
    raw: u64,
    start: u64,
    crc: u32,
    codec: Codec,
}

/// Decompressed blocks kept at once: a program touching a few blocks in
/// turn does not decompress them again and again, and the blocks the
/// background fill will need next are decompressed ahead on other cores.
const CACHED_BLOCKS: usize = 8;
/// Blocks decompressed ahead of the background fill.
const AHEAD: usize = 3;

#[derive(Default)]
struct Cache {
    blocks: Vec<(usize, Vec<u8>)>,
    busy: Vec<usize>,
}

/// A read-only mapping of a whole image file, with a read lease on it.
pub struct ImageSource {
    path: PathBuf,
    base: *const u8,
    len: usize,
    blocks: Vec<Block>,
    /// Which blocks' crc has been checked.
    verified: Vec<std::sync::atomic::AtomicBool>,
    /// Checks each block's MAC (from the image's authenticated block table).
    check: dmtcp_image::BlockCheck,
    /// Recently decompressed blocks (index, bytes), most recent last, and
    /// the blocks being decompressed ahead (see [`ImageSource::ahead`]).
    cache: Mutex<Cache>,
    decompressed: Condvar,
    /// Holds the lease; closed (lease released) when the last user is done.
    _file: File,
}

// SAFETY: the mapping is read-only and lives until drop; the pointer is only
// read from (crc, decompression) and handed to the kernel as a copy source.
unsafe impl Send for ImageSource {}
// SAFETY: as above, nothing writes through it; the cache is behind a lock.
unsafe impl Sync for ImageSource {}

impl ImageSource {
    /// Maps `path` and takes a read lease on it; an error says why the
    /// pages of this image must be copied eagerly instead. `blocks` is the
    /// image's block table with its MACs: each block is checked against its
    /// crc and MAC before any byte of it is used, and decompressed when it
    /// is not raw.
    pub fn open(path: &Path, check: &dmtcp_image::BlockCheck) -> io::Result<Arc<ImageSource>> {
        let blocks = check.blocks();
        let file = File::open(path)?;
        let fd = file.as_raw_fd();
        // Lease breaks are signalled; SIGURG's default action is to ignore
        // it. The writer simply waits until we release the lease.
        // SAFETY: fcntl with integer arguments on our own fd.
        if unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGURG) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("read lease: {e}")));
        }
        let len = file.metadata()?.len() as usize;
        if len == 0 {
            return Err(io::Error::other("empty file"));
        }
        // SAFETY: a fresh read-only shared mapping of our fd; the kernel
        // picks the address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut start = 0;
        let blocks: Vec<Block> = blocks
            .iter()
            .map(|b| {
                let x = Block {
                    off: b.offset,
                    stored: b.stored_len,
                    raw: b.raw_len,
                    start,
                    crc: b.crc,
                    codec: b.codec,
                };
                start += b.raw_len;
                x
            })
            .collect();
        Ok(Arc::new(ImageSource {
            path: path.to_path_buf(),
            base: base as *const u8,
            len,
            verified: blocks.iter().map(|_| Default::default()).collect(),
            blocks,
            check: check.clone(),
            cache: Mutex::new(Cache::default()),
            decompressed: Condvar::new(),
            _file: file,
        }))
    }

    /// Block `i` decompressed (its crc checked first).
    fn decompress(&self, i: usize) -> Result<Vec<u8>, String> {
        let b = &self.blocks[i];
        let stored = self.stored(i)?;
        let mut raw = vec![0u8; b.raw as usize];
        dmtcp_image::format::decompress(b.codec, stored, &mut raw).map_err(|e| {
            format!(
                "{}: page block {i} does not decompress ({}): {e}",
                self.path.display(),
                b.codec.name()
            )
        })?;
        Ok(raw)
    }

    /// Has the compressed blocks after the one holding `pos` decompressed
    /// on other threads, so the background fill finds them ready.
    fn ahead(self: &Arc<Self>, pos: u64) {
        let i = self.blocks.partition_point(|b| b.start + b.raw <= pos);
        for j in i + 1..(i + 1 + AHEAD).min(self.blocks.len()) {
            if self.blocks[j].codec == Codec::None {
                continue;
            }
            {
                let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if c.busy.contains(&j) || c.blocks.iter().any(|(k, _)| *k == j) {
                    continue;
                }
                c.busy.push(j);
            }
            let me = Arc::clone(self);
            let job = move || {
                let raw = me.decompress(j);
                let mut c = me.cache.lock().unwrap_or_else(|e| e.into_inner());
                c.busy.retain(|k| *k != j);
                // A failure is found again (and reported) when the block
                // is needed.
                if let Ok(raw) = raw {
                    c.insert(j, raw);
                }
                me.decompressed.notify_all();
            };
            if !decompressors().send(Box::new(job)) {
                let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                c.busy.retain(|k| *k != j);
            }
        }
    }

    /// Block `i`'s stored bytes, their crc checked (once).
    fn stored(&self, i: usize) -> Result<&[u8], String> {
        use std::sync::atomic::Ordering;
        let b = &self.blocks[i];
        if b.off + b.stored > self.len as u64 {
            return Err(format!(
                "{}: page block {i} runs past the end of the file",
                self.path.display()
            ));
        }
        // SAFETY: [off, off+stored) lies inside our read-only mapping
        // (checked above), which lives as long as self.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.base.add(b.off as usize), b.stored as usize) };
        if !self.verified[i].load(Ordering::Relaxed) {
            if crc32fast::hash(bytes) != b.crc {
                return Err(format!(
                    "{}: checksum mismatch in page block {i} (at offset {})",
                    self.path.display(),
                    b.off
                ));
            }
            self.check.check_mac(i, bytes).map_err(|e| e.to_string())?;
            self.verified[i].store(true, Ordering::Relaxed);
        }
        Ok(bytes)
    }

    /// Calls `f(bytes)` with page data from position `pos` (in the image's
    /// page data) on, at most `len` bytes and no further than the end of
    /// the block holding `pos`: straight from the file for a raw block, from
    /// a decompressed copy otherwise.
    fn with_bytes<R>(&self, pos: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R, String> {
        let i = self.blocks.partition_point(|b| b.start + b.raw <= pos);
        let Some(b) = self.blocks.get(i) else {
            return Err(format!(
                "{}: page data position {pos} past the end of the page data",
                self.path.display()
            ));
        };
        let at = (pos - b.start) as usize;
        let n = len.min(b.start + b.raw - pos) as usize;
        if b.codec == Codec::None {
            let stored = self.stored(i)?;
            return Ok(f(&stored[at..at + n]));
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Being decompressed ahead: wait for it rather than do it twice.
        while cache.busy.contains(&i) {
            cache = self
                .decompressed
                .wait(cache)
                .unwrap_or_else(|e| e.into_inner());
        }
        let k = match cache.blocks.iter().position(|(j, _)| *j == i) {
            Some(k) => k,
            None => {
                drop(cache);
                let raw = self.decompress(i)?;
                cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                cache.insert(i, raw)
            }
        };
        Ok(f(&cache.blocks[k].1[at..at + n]))
    }
}

impl Cache {
    /// Keeps block `i`'s bytes (dropping the oldest beyond
    /// [`CACHED_BLOCKS`]) and returns where they are.
    fn insert(&mut self, i: usize, raw: Vec<u8>) -> usize {
        if let Some(k) = self.blocks.iter().position(|(j, _)| *j == i) {
            return k;
        }
        if self.blocks.len() >= CACHED_BLOCKS {
            self.blocks.remove(0);
        }
        self.blocks.push((i, raw));
        self.blocks.len() - 1
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that decompress blocks ahead, one per core (the server thread
/// itself mostly waits for faults and copies).
struct Decompressors(Mutex<Option<Sender<Job>>>);

impl Decompressors {
    /// Queues `job`; false if no thread can take it.
    fn send(&self, job: Job) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|tx| tx.send(job).is_ok())
    }
}

fn decompressors() -> &'static Decompressors {
    static POOL: OnceLock<Decompressors> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut any = false;
        for k in 0..n {
            let rx = Arc::clone(&rx);
            any |= std::thread::Builder::new()
                .name(format!("lazy-unzip-{k}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .is_ok();
        }
        Decompressors(Mutex::new(any.then_some(tx)))
    })
}

impl Drop for ImageSource {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
        debug!(
            "{}: lazy restore done with it (lease released)",
            self.path.display()
        );
    }
}

/// Pages still to be copied: `[addr, end)` comes from `src`'s page data
/// at position `pos`.
#[derive(Clone)]
struct Piece {
    end: u64,
    src: Arc<ImageSource>,
    pos: u64,
}

/// The pages of one mm still to come, by address.
#[derive(Clone, Default)]
struct Pending {
    map: BTreeMap<u64, Piece>,
}

impl Pending {
    fn bytes(&self) -> u64 {
        self.map.iter().map(|(a, p)| p.end - a).sum()
    }

    /// Splits the piece holding `at` (if any) so a piece starts at `at`.
    fn split_at(&mut self, at: u64) {
        let Some((&a, p)) = self.map.range(..at).next_back() else {
            return;
        };
        if p.end > at {
            let right = Piece {
                end: p.end,
                src: Arc::clone(&p.src),
                pos: p.pos + (at - a),
            };
            if let Some(left) = self.map.get_mut(&a) {
                left.end = at;
            }
            self.map.insert(at, right);
        }
    }

    /// Takes `[start, end)` out, returning the pieces that were inside.
    fn cut(&mut self, start: u64, end: u64) -> Vec<(u64, Piece)> {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(start..end).map(|(&a, _)| a).collect();
        keys.into_iter()
            .filter_map(|a| self.map.remove(&a).map(|p| (a, p)))
            .collect()
    }

    /// Moves whatever lies in `[from, from+len)` to `to`.
    fn remap(&mut self, from: u64, to: u64, len: u64) {
        let moved = self.cut(from, from + len);
        self.cut(to, to + len);
        for (a, mut p) in moved {
            p.end = p.end - from + to;
            self.map.insert(a - from + to, p);
        }
    }

    /// The piece holding `addr`, as (start, piece) clipped to start at `addr`.
    fn holding(&self, addr: u64) -> Option<(u64, Piece)> {
        let (&a, p) = self.map.range(..=addr).next_back()?;
        (p.end > addr).then(|| {
            (
                addr,
                Piece {
                    end: p.end,
                    src: Arc::clone(&p.src),
                    pos: p.pos + (addr - a),
                },
            )
        })
    }
}

/// A lazily restored process, handed to the server.
pub struct LazyProcess {
    pid: HostPid,
    uffd: OwnedFd,
    pending: Pending,
}

/// Builds the userfaultfd side of one process's lazy restore.
pub struct LazyBuilder {
    pid: HostPid,
    uffd: OwnedFd,
    pending: Pending,
}

impl LazyBuilder {
    /// `uffd` is a userfaultfd made by the process (bound to its mm),
    /// without `UFFD_USER_MODE_ONLY`.
    pub fn new(pid: HostPid, uffd: OwnedFd) -> io::Result<LazyBuilder> {
        uffd::api(
            uffd.as_raw_fd(),
            UFFD_FEATURE_EVENT_FORK
                | UFFD_FEATURE_EVENT_REMAP
                | UFFD_FEATURE_EVENT_REMOVE
                | UFFD_FEATURE_EVENT_UNMAP,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("userfaultfd API: {e}")))?;
        Ok(LazyBuilder {
            pid,
            uffd,
            pending: Pending::default(),
        })
    }

    /// Registers the mapping `[start, end)` (private anonymous) for missing
    /// pages. Every page of it the image holds must then be added with
    /// [`add`](Self::add): the others read as zeros.
    pub fn register(&mut self, start: u64, end: u64) -> io::Result<()> {
        uffd::register(
            self.uffd.as_raw_fd(),
            start,
            end - start,
            UFFDIO_REGISTER_MODE_MISSING,
        )
    }

    /// `npages` pages at `addr` come from `src`'s page data at `pos`.
    pub fn add(&mut self, addr: u64, npages: u64, src: &Arc<ImageSource>, pos: u64) {
        self.pending.map.insert(
            addr,
            Piece {
                end: addr + npages * PAGE,
                src: Arc::clone(src),
                pos,
            },
        );
    }

    /// Hands the process to the server thread, which starts at once.
    pub fn start(self) -> io::Result<()> {
        let total = self.pending.bytes();
        debug!(
            "pid {}: {} MiB of memory restored lazily",
            self.pid,
            total >> 20
        );
        server()?.send(LazyProcess {
            pid: self.pid,
            uffd: self.uffd,
            pending: self.pending,
        })
    }
}

/// The server: one thread for every lazily restored process.
struct Server {
    tx: Mutex<Sender<LazyProcess>>,
    /// Processes with pages still to come.
    busy: Arc<(Mutex<usize>, Condvar)>,
}

impl Server {
    fn send(&self, p: LazyProcess) -> io::Result<()> {
        let (n, _) = &*self.busy;
        *n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(p)
            .map_err(|_| io::Error::other("lazy restore server is gone"))
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> io::Result<&'static Server> {
    if let Some(s) = SERVER.get() {
        return Ok(s);
    }
    let (tx, rx) = mpsc::channel();
    let busy = Arc::new((Mutex::new(0usize), Condvar::new()));
    let b = Arc::clone(&busy);
    std::thread::Builder::new()
        .name("lazy-restore".into())
        .spawn(move || serve(rx, b))?;
    let _ = SERVER.set(Server {
        tx: Mutex::new(tx),
        busy,
    });
    SERVER
        .get()
        .ok_or_else(|| io::Error::other("lazy restore server"))
}

type FatalHook = Box<dyn Fn(&str) + Send + Sync>;
static ON_FATAL: OnceLock<FatalHook> = OnceLock::new();

/// Sets what happens when page data turns out to be corrupt while pages
/// are still to come: `hook(message)` must stop the computation (the
/// program must not run on with pages it can no longer get). Without a
/// hook the affected process is killed.
pub fn on_fatal(hook: impl Fn(&str) + Send + Sync + 'static) {
    let _ = ON_FATAL.set(Box::new(hook));
}

/// Set once a fatal error is being handled by the hook.
static FATAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn fatal(msg: &str) {
    FATAL.store(true, std::sync::atomic::Ordering::SeqCst);
    match ON_FATAL.get() {
        Some(h) => h(msg),
        None => error!("lazy restore: {msg}"),
    }
}

/// Called by a thread about to end the process: if the server thread is
/// handling corrupt page data, its hook stops the computation, says why
/// and ends the process; this thread must not end it first (with the
/// status of the computation the hook killed, and no message), so it
/// waits for that.
pub fn hold_if_fatal() {
    if FATAL.load(std::sync::atomic::Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// Starts the server thread and the decompression threads now, while the
/// caller is not pinned to a CPU (the restore pins itself next to the
/// process it restores, and threads inherit that).
pub fn prepare() -> io::Result<()> {
    server()?;
    decompressors();
    Ok(())
}

static RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Every process is restored and running: pages not asked for yet may now
/// be copied in the background (until then only faults are served).
pub fn start_background() {
    RELEASED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether pages of some process are still to come.
pub fn busy() -> bool {
    SERVER.get().is_some_and(|s| {
        let (n, _) = &*s.busy;
        *n.lock().unwrap_or_else(|e| e.into_inner()) > 0
    })
}

/// How many bytes may go lazy at most: the server must be done with an
/// image within the kernel's lease-break time (a writer waits that long at
/// most before the kernel takes the lease away), assuming a slow 256 MiB/s
/// (128 MiB/s when blocks must be decompressed).
pub fn max_lazy_bytes(compressed: bool) -> u64 {
    let secs: u64 = std::fs::read_to_string("/proc/sys/fs/lease-break-time")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(45);
    (secs / 2).max(1) * if compressed { 128 << 20 } else { 256 << 20 }
}

/// Blocks until every lazily restored page is in place (a checkpoint must
/// see the memory, and must not race the server).
pub fn wait_until_restored() {
    let Some(s) = SERVER.get() else { return };
    let (n, cv) = &*s.busy;
    let mut g = n.lock().unwrap_or_else(|e| e.into_inner());
    if *g > 0 {
        debug!("checkpoint waits for lazily restored memory");
    }
    while *g > 0 {
        g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
    }
}

/// One userfaultfd being served.
struct Served {
    pid: HostPid,
    uffd: OwnedFd,
    pending: Pending,
    started: Instant,
    total: u64,
    /// A child the process forked while pages were still to come.
    child: bool,
    /// Background copying starts then.
    prefetch_at: Instant,
    /// Faults answered with image pages, with zeros; events seen.
    faults: u64,
    zero_faults: u64,
    events: u64,
}

enum Copied {
    /// The piece (or a first part of it) is in place: that many bytes.
    Done(u64),
    /// The mm is changing (an event is queued): read events first.
    Again,
    /// The range is no longer registered (unmapped, exec'd, exited).
    Gone,
}

/// Copies `[addr, addr+len)` from `p` into the mm. Pages already present
/// are skipped (and their waiters woken).
fn copy(uffd: RawFd, addr: u64, len: u64, p: &Piece) -> io::Result<Copied> {
    p.src
        .with_bytes(p.pos, len, |bytes| copy_bytes(uffd, addr, bytes))
        .map_err(io::Error::other)?
}

/// `UFFDIO_COPY` of `bytes` to `addr`.
fn copy_bytes(uffd: RawFd, addr: u64, bytes: &[u8]) -> io::Result<Copied> {
    let len = bytes.len() as u64;
    let mut c = UffdioCopy {
        dst: addr,
        src: bytes.as_ptr() as u64,
        len,
        mode: 0,
        copy: 0,
    };
    match ioctl(uffd, UFFDIO_COPY, &mut c) {
        // A page already there stops the copy short (and is skipped next
        // time round, by the EEXIST case below).
        Ok(()) if c.copy > 0 => Ok(Copied::Done((c.copy as u64).min(len))),
        Ok(()) => Ok(Copied::Done(len)),
        Err(e) => {
            let done = c.copy.max(0) as u64;
            match e.raw_os_error() {
                Some(libc::EEXIST) => {
                    // The page at addr+done is there already (copied for a
                    // fault, or written by the kernel): skip it.
                    let mut w = UffdioRange {
                        start: addr + done,
                        len: PAGE,
                    };
                    let _ = ioctl(uffd, UFFDIO_WAKE, &mut w);
                    Ok(Copied::Done(done + PAGE))
                }
                Some(libc::EAGAIN) if done > 0 => Ok(Copied::Done(done)),
                Some(libc::EAGAIN) => Ok(Copied::Again),
                Some(libc::ENOENT | libc::ESRCH | libc::EINVAL) => Ok(Copied::Gone),
                _ => Err(e),
            }
        }
    }
}

impl Served {
    /// Pages can no longer be brought in: the process must not run on
    /// (it would find zeros where its data was).
    fn failed(&mut self, addr: u64, e: &io::Error) {
        self.pending = Pending::default();
        let msg = format!(
            "pid {}{}: bringing in memory at {addr:#x}: {e}",
            self.pid,
            if self.child {
                " (a child it forked)"
            } else {
                ""
            }
        );
        if ON_FATAL.get().is_some() {
            fatal(&msg);
        } else if !self.child {
            error!("{msg}; killing it");
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(self.pid.0, libc::SIGKILL) };
        } else {
            error!("{msg}");
        }
    }

    /// Copies up to `max` bytes from `addr` (a pending page).
    fn fill(&mut self, addr: u64, max: u64) -> io::Result<bool> {
        let Some((a, piece)) = self.pending.holding(addr) else {
            return Ok(true);
        };
        let len = (piece.end - a).min(max);
        match copy(self.uffd.as_raw_fd(), a, len, &piece)? {
            Copied::Done(n) => {
                self.pending.cut(a, a + n);
                Ok(true)
            }
            Copied::Again => Ok(false),
            Copied::Gone => {
                // Nothing there to fill any more.
                self.pending.cut(a, a + len);
                Ok(true)
            }
        }
    }

    fn zero(&self, addr: u64) {
        let mut z = UffdioZeropage {
            range: UffdioRange {
                start: addr,
                len: PAGE,
            },
            mode: 0,
            zeropage: 0,
        };
        if ioctl(self.uffd.as_raw_fd(), UFFDIO_ZEROPAGE, &mut z).is_err() {
            let mut w = UffdioRange {
                start: addr,
                len: PAGE,
            };
            let _ = ioctl(self.uffd.as_raw_fd(), UFFDIO_WAKE, &mut w);
        }
    }

    /// Reads and handles every queued event; returns children from forks.
    fn events(&mut self) -> io::Result<Vec<Served>> {
        let mut children = Vec::new();
        let mut msgs = [UffdMsg::default(); 16];
        loop {
            // SAFETY: reads whole uffd_msg records into the array.
            let n = unsafe {
                libc::read(
                    self.uffd.as_raw_fd(),
                    msgs.as_mut_ptr() as *mut libc::c_void,
                    std::mem::size_of_val(&msgs),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(children),
                    Some(libc::EINTR) => continue,
                    _ => Err(e),
                };
            }
            if n == 0 {
                return Ok(children);
            }
            for m in &msgs[..n as usize / std::mem::size_of::<UffdMsg>()] {
                match m.event {
                    UFFD_EVENT_PAGEFAULT => {
                        let addr = m.arg[1] & !(PAGE - 1);
                        if self.pending.holding(addr).is_some() {
                            self.faults += 1;
                            // Retried by the loop if the mm is changing.
                            while !self.fill(addr, FAULT_CHUNK)? {
                                let more = self.events()?;
                                children.extend(more);
                                std::thread::yield_now();
                            }
                        } else {
                            self.zero_faults += 1;
                            self.zero(addr);
                        }
                    }
                    UFFD_EVENT_FORK => {
                        self.events += 1;
                        // SAFETY: the kernel installed this fd in our table
                        // for us; nothing else owns it.
                        let fd = unsafe { OwnedFd::from_raw_fd(m.arg[0] as u32 as RawFd) };
                        let pending = self.pending.clone();
                        children.push(Served {
                            pid: self.pid,
                            uffd: fd,
                            total: pending.bytes(),
                            pending,
                            started: Instant::now(),
                            child: true,
                            prefetch_at: self.prefetch_at,
                            faults: 0,
                            zero_faults: 0,
                            events: 0,
                        });
                    }
                    UFFD_EVENT_REMAP => {
                        self.events += 1;
                        self.pending.remap(m.arg[0], m.arg[1], m.arg[2]);
                    }
                    UFFD_EVENT_REMOVE | UFFD_EVENT_UNMAP => {
                        self.events += 1;
                        self.pending.cut(m.arg[0], m.arg[1]);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn serve(rx: Receiver<LazyProcess>, busy: Arc<(Mutex<usize>, Condvar)>) {
    let mut served: Vec<Served> = Vec::new();
    let delay = prefetch_delay();
    let done = |s: &Served| {
        debug!(
            "pid {}{}: lazily restored memory in place ({} MiB in {:?}; faults: {} served, {} zero; {} other events)",
            s.pid,
            if s.child { " (a child it forked)" } else { "" },
            s.total >> 20,
            s.started.elapsed(),
            s.faults,
            s.zero_faults,
            s.events,
        );
        let (n, cv) = &*busy;
        let mut g = n.lock().unwrap_or_else(|e| e.into_inner());
        *g = g.saturating_sub(1);
        cv.notify_all();
    };
    loop {
        // New processes (block only when there is nothing else to do).
        loop {
            let next = if served.is_empty() {
                rx.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                rx.try_recv()
            };
            match next {
                Ok(p) => served.push(Served {
                    pid: p.pid,
                    total: p.pending.bytes(),
                    uffd: p.uffd,
                    pending: p.pending,
                    started: Instant::now(),
                    child: false,
                    prefetch_at: Instant::now() + delay,
                    faults: 0,
                    zero_faults: 0,
                    events: 0,
                }),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        // Faults and events first, then one background step per process.
        let mut pfds: Vec<libc::pollfd> = served
            .iter()
            .map(|s| libc::pollfd {
                fd: s.uffd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Wait for faults only while no background copying is due. It
        // waits until every process is restored (the restore needs the
        // CPU more).
        let now = Instant::now();
        let go = RELEASED.load(std::sync::atomic::Ordering::Relaxed);
        let timeout = served
            .iter()
            .map(|s| s.prefetch_at.saturating_duration_since(now).as_millis() as i32 + 1)
            .min()
            .map_or(0, |t| {
                if !go {
                    5
                } else if served.iter().any(|s| s.prefetch_at <= now) {
                    0
                } else {
                    t
                }
            });
        // SAFETY: pfds is a valid array of pollfd for the call.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        let mut born = Vec::new();
        for (s, p) in served.iter_mut().zip(&pfds) {
            if p.revents & libc::POLLIN != 0 {
                match s.events() {
                    Ok(c) => born.extend(c),
                    Err(e) => s.failed(0, &e),
                }
            }
        }
        if !born.is_empty() {
            let (n, _) = &*busy;
            *n.lock().unwrap_or_else(|e| e.into_inner()) += born.len();
            served.extend(born);
        }
        let now = Instant::now();
        for s in served.iter_mut().filter(|s| go && s.prefetch_at <= now) {
            let Some((&a, p)) = s.pending.map.iter().next() else {
                continue;
            };
            p.src.ahead(p.pos);
            if let Err(e) = s.fill(a, PREFETCH_CHUNK) {
                s.failed(a, &e);
            }
        }
        // Finished: closing the userfaultfd makes the mappings ordinary.
        served.retain(|s| {
            if s.pending.map.is_empty() {
                done(s);
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmtcp_image::BlockEntry;

    fn src() -> Arc<ImageSource> {
        let f = File::open("/proc/self/exe").unwrap();
        Arc::new(ImageSource {
            path: PathBuf::from("x"),
            base: std::ptr::null(),
            len: 1 << 30,
            blocks: Vec::new(),
            verified: Vec::new(),
            check: dmtcp_image::BlockCheck::new(
                Path::new("x"),
                Arc::new(dmtcp_image::ImageKey::from_bytes(&[0; 32])),
                &[],
            ),
            cache: Mutex::new(Cache::default()),
            decompressed: Condvar::new(),
            _file: f,
        })
    }

    /// Blocks are checked against their crc before use and decompressed
    /// when not raw; bytes are served up to the end of their block.
    #[test]
    fn blocks_are_checked_and_decompressed() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("dmtcp-lazy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img");
        let raw: Vec<u8> = (0..2 * PAGE as usize).map(|i| (i * 7) as u8).collect();
        let text: Vec<u8> = b"page data "
            .iter()
            .copied()
            .cycle()
            .take(2 * PAGE as usize)
            .collect();
        let zstd = zstd::bulk::compress(&text, 1).unwrap();
        let mut file = raw.clone();
        file.extend_from_slice(&zstd);
        file.extend_from_slice(&raw);
        file.extend_from_slice(&raw);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&file)
            .unwrap();
        let n = 2 * PAGE;
        let z = zstd.len() as u64;
        let key = std::sync::Arc::new(dmtcp_image::ImageKey::from_bytes(&[7; 32]));
        let entry = |offset: u64, stored: &[u8], crc: u32, codec: Codec| BlockEntry {
            offset,
            stored_len: stored.len() as u64,
            raw_len: n,
            crc,
            codec,
            mac: key.block_mac(stored),
        };
        let mut forged = raw.clone();
        forged[5] ^= 1;
        let blocks = [
            entry(0, &raw, crc32fast::hash(&raw), Codec::None),
            entry(n, &zstd, crc32fast::hash(&zstd), Codec::Zstd),
            entry(n + z, &raw, 0xdead, Codec::None),
            // Right crc, MAC of other bytes: an edited block.
            entry(2 * n + z, &forged, crc32fast::hash(&raw), Codec::None),
        ];
        let check = dmtcp_image::BlockCheck::new(&path, key.clone(), &blocks);
        let src = ImageSource::open(&path, &check).expect("lease and map");
        let got = |pos: u64, len: u64| src.with_bytes(pos, len, |b| b.to_vec());
        assert_eq!(
            got(PAGE, 3 * PAGE).unwrap(),
            &raw[PAGE as usize..],
            "stops at the block end"
        );
        assert_eq!(got(n + PAGE, PAGE).unwrap(), &text[PAGE as usize..]);
        assert_eq!(
            got(n, 4 * PAGE).unwrap(),
            text,
            "from the decompressed copy"
        );
        let e = got(2 * n, PAGE).unwrap_err();
        assert!(e.contains("checksum mismatch in page block 2"), "{e}");
        let e = got(3 * n, PAGE).unwrap_err();
        assert!(e.contains("page block 3 MAC mismatch"), "{e}");
        assert!(got(4 * n, PAGE).is_err(), "past the page data");
        drop(src);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn ranges(p: &Pending) -> Vec<(u64, u64, u64)> {
        p.map.iter().map(|(a, x)| (*a, x.end, x.pos)).collect()
    }

    #[test]
    fn cut_and_remap_keep_offsets() {
        let s = src();
        let mut p = Pending::default();
        p.map.insert(
            0x1000,
            Piece {
                end: 0x9000,
                src: Arc::clone(&s),
                pos: 0x10000,
            },
        );
        p.cut(0x3000, 0x4000);
        assert_eq!(
            ranges(&p),
            vec![(0x1000, 0x3000, 0x10000), (0x4000, 0x9000, 0x13000)]
        );
        p.remap(0x4000, 0x100000, 0x2000);
        assert_eq!(
            ranges(&p),
            vec![
                (0x1000, 0x3000, 0x10000),
                (0x6000, 0x9000, 0x15000),
                (0x100000, 0x102000, 0x13000)
            ]
        );
        let (a, h) = p.holding(0x7000).unwrap();
        assert_eq!((a, h.end, h.pos), (0x7000, 0x9000, 0x16000));
        assert!(p.holding(0x3000).is_none());
        assert_eq!(p.bytes(), 0x2000 + 0x3000 + 0x2000);
        // Drop without unmapping a null pointer.
        p.map.clear();
        std::mem::forget(s);
    }
}
