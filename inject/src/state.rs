//! The state page shared with the supervisor: its Rust view and the one
//! mapping per process.
//!
//! The layout is defined in [`crate::abi`] (documented there and in
//! `docs/architecture-inject.md`); [`StatePage`] mirrors it with atomics
//! (the supervisor writes some fields from outside, through
//! `/proc/PID/mem`), and compile-time asserts tie the two together.

use std::sync::atomic::{
    AtomicI32, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering,
};
use std::sync::Once;

use crate::abi::{self, off};

/// `repr(C)` view of the state page (layout: [`crate::abi`]).
#[repr(C)]
pub struct StatePage {
    pub magic: AtomicU64,
    pub abi_version: AtomicU32,
    pub size: AtomicU32,
    pub disable_count: AtomicI32,
    pub ckpt_waiting: AtomicU32,
    pub generation: AtomicU64,
    pub restarts: AtomicU64,
    pub coord_seq: AtomicU32,
    pub coord_port: AtomicU16,
    pub reserved: AtomicU16,
    pub coord_host: [AtomicU8; abi::COORD_HOST_LEN],
    pub secret: [AtomicU8; abi::SECRET_LEN],
    pub hook_version: AtomicU32,
    pub hook_tid: AtomicI32,
    pub hook_req_fd: AtomicI32,
    pub hook_reply_fd: AtomicI32,
    pub hook_plugins: AtomicU32,
    pub hook_busy: AtomicU32,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<StatePage>() == abi::HOOKS_SIZE);
    assert!(offset_of!(StatePage, magic) == off::MAGIC);
    assert!(offset_of!(StatePage, abi_version) == off::ABI_VERSION);
    assert!(offset_of!(StatePage, size) == off::SIZE);
    assert!(offset_of!(StatePage, disable_count) == off::DISABLE_COUNT);
    assert!(offset_of!(StatePage, ckpt_waiting) == off::CKPT_WAITING);
    assert!(offset_of!(StatePage, generation) == off::GENERATION);
    assert!(offset_of!(StatePage, restarts) == off::RESTARTS);
    assert!(offset_of!(StatePage, coord_seq) == off::COORD_SEQ);
    assert!(offset_of!(StatePage, coord_port) == off::COORD_PORT);
    assert!(offset_of!(StatePage, coord_host) == off::COORD_HOST);
    assert!(offset_of!(StatePage, secret) == off::SECRET);
    assert!(offset_of!(StatePage, hook_version) == off::HOOK_VERSION);
    assert!(offset_of!(StatePage, hook_tid) == off::HOOK_TID);
    assert!(offset_of!(StatePage, hook_req_fd) == off::HOOK_REQ_FD);
    assert!(offset_of!(StatePage, hook_reply_fd) == off::HOOK_REPLY_FD);
    assert!(offset_of!(StatePage, hook_plugins) == off::HOOK_PLUGINS);
    assert!(offset_of!(StatePage, hook_busy) == off::HOOK_BUSY);
};

/// A coordinator published by the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub host: String,
    pub port: u16,
    pub secret: String,
}

fn c_string(bytes: &[AtomicU8]) -> String {
    let v: Vec<u8> = bytes
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&v).into_owned()
}

impl StatePage {
    /// The coordinator the supervisor wrote, if any (seqlock read).
    pub fn published(&self) -> Option<Published> {
        for _ in 0..100 {
            let s1 = self.coord_seq.load(Ordering::Acquire);
            if s1 == 0 {
                return None;
            }
            if s1 & 1 == 1 {
                std::thread::yield_now();
                continue;
            }
            let p = Published {
                host: c_string(&self.coord_host),
                port: self.coord_port.load(Ordering::Relaxed),
                secret: c_string(&self.secret),
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if self.coord_seq.load(Ordering::Relaxed) == s1 {
                return (p.port != 0 && !p.host.is_empty()).then_some(p);
            }
        }
        None
    }
}

static PAGE: AtomicPtr<StatePage> = AtomicPtr::new(std::ptr::null_mut());
static INIT: Once = Once::new();

/// Maps and fills the page (once per process image; a forked child shares
/// the parent's copy-on-write copy, counters included).
pub fn init() {
    INIT.call_once(|| match crate::sys::map_named_page() {
        Ok(p) => {
            let page = p.cast::<StatePage>();
            // SAFETY: `page` is a fresh, zeroed, page-aligned, read-write
            // mapping of STATE_MAP_LEN >= size_of::<StatePage>() bytes that is
            // never unmapped; StatePage is all atomics, for which all-zero
            // bytes are valid values, so a shared 'static reference is sound
            // (the supervisor's outside writes are to atomics too).
            let st: &'static StatePage = unsafe { &*page };
            st.abi_version.store(abi::ABI_VERSION, Ordering::Relaxed);
            st.size.store(abi::HOOKS_SIZE as u32, Ordering::Relaxed);
            st.magic.store(abi::STATE_MAGIC, Ordering::Release);
            PAGE.store(page, Ordering::Release);
        }
        Err(e) => eprintln!("libdmtcp_inject: cannot map the state page: {e}"),
    });
}

/// The page's address, null before the constructor mapped it (no
/// mapping on this path: the pid wrappers call it on every call).
#[inline]
pub fn raw() -> *const u8 {
    PAGE.load(Ordering::Acquire).cast_const().cast()
}

/// The page, mapping it on first use if the constructor did not run yet.
pub fn page() -> Option<&'static StatePage> {
    init();
    let p = PAGE.load(Ordering::Acquire);
    // SAFETY: non-null only after `init` stored a pointer to the mapping it
    // made, which lives (and is never unmapped) for the whole process; see
    // the SAFETY note in `init` for the validity of the contents.
    (!p.is_null()).then(|| unsafe { &*p })
}
