//! The C side: symbols of `libdmtcp_inject.so` looked up at run time, the
//! descriptor, and the chain of `dmtcp_initialize_plugin`. Every `unsafe`
//! of the crate is here.

use std::ffi::{c_char, c_int, c_void, CString};

type HookFn = extern "C" fn(u32, *mut c_void);

/// `DmtcpPluginDescriptor_t`.
#[repr(C)]
struct Descriptor {
    api: *const c_char,
    version: *const c_char,
    name: *const c_char,
    author: *const c_char,
    email: *const c_char,
    description: *const c_char,
    hook: Option<HookFn>,
}

fn lookup(name: &str) -> Option<*mut c_void> {
    let c = CString::new(name).ok()?;
    // SAFETY: RTLD_DEFAULT with a NUL-terminated name only looks a symbol up.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// Calls the hook, never letting a panic unwind into C.
pub fn call_hook(f: fn(crate::Event), e: u32) {
    if std::panic::catch_unwind(|| f(crate::Event::from_raw(e))).is_err() {
        eprintln!("dmtcp-plugin: the hook panicked at event {e}");
    }
}

/// Registers the plugin `name` (NUL-terminated, 'static) with `hook`.
pub fn register(name: &'static str, hook: HookFn) {
    let Some(p) = lookup("dmtcp_register_plugin") else {
        return;
    };
    // SAFETY: dmtcp.h declares it as `void (DmtcpPluginDescriptor_t)`,
    // which Descriptor mirrors field for field.
    let f: extern "C" fn(Descriptor) = unsafe { std::mem::transmute(p) };
    f(Descriptor {
        api: c"3".as_ptr(),
        version: c"3.0.0".as_ptr(),
        name: name.as_ptr().cast(),
        author: c"".as_ptr(),
        email: c"".as_ptr(),
        description: c"Rust plugin".as_ptr(),
        hook: Some(hook),
    });
}

/// The next plugin's `dmtcp_initialize_plugin` (load order), if any.
/// Must be compiled into the plugin itself (RTLD_NEXT is relative to the
/// caller's object): this crate is linked into the plugin's cdylib.
pub fn call_next_initialize() {
    // SAFETY: RTLD_NEXT lookup of a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dmtcp_initialize_plugin".as_ptr()) };
    if p.is_null() {
        return;
    }
    // SAFETY: DMTCP_DECL_PLUGIN and declare_plugin! define it as `void (void)`.
    let f: extern "C" fn() = unsafe { std::mem::transmute(p) };
    f();
}

/// Calls an `int f(void)` of the API; 0 when absent.
pub fn int_call(name: &str) -> i32 {
    let Some(p) = lookup(name) else {
        return 0;
    };
    // SAFETY: only used with the `int (void)` functions of dmtcp.h.
    let f: extern "C" fn() -> c_int = unsafe { std::mem::transmute(p) };
    f()
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

pub fn barrier(name: &str) -> bool {
    let Some(p) = lookup("dmtcp_global_barrier") else {
        return false;
    };
    // SAFETY: `int dmtcp_global_barrier(const char *)`.
    let f: extern "C" fn(*const c_char) -> c_int = unsafe { std::mem::transmute(p) };
    let n = cstring(name);
    f(n.as_ptr()) == 0
}

type PublishFn = extern "C" fn(*const c_char, *const c_void, u32, *const c_void, u32) -> c_int;
type QueryFn = extern "C" fn(*const c_char, *const c_void, u32, *mut c_void, *mut u32) -> c_int;
type Request64Fn = extern "C" fn(c_int, *const c_char, *const c_char, i64, *mut i64) -> c_int;

pub fn publish(db: &str, key: &[u8], value: &[u8]) -> bool {
    let Some(p) = lookup("dmtcp_send_key_val_pair_to_coordinator") else {
        return false;
    };
    let (Ok(kl), Ok(vl)) = (u32::try_from(key.len()), u32::try_from(value.len())) else {
        return false;
    };
    // SAFETY: the signature of dmtcp.h's function.
    let f: PublishFn = unsafe { std::mem::transmute(p) };
    let db = cstring(db);
    f(
        db.as_ptr(),
        key.as_ptr().cast(),
        kl,
        value.as_ptr().cast(),
        vl,
    ) == 1
}

pub fn query(db: &str, key: &[u8]) -> Option<Vec<u8>> {
    let p = lookup("dmtcp_send_query_to_coordinator")?;
    let kl = u32::try_from(key.len()).ok()?;
    // SAFETY: the signature of dmtcp.h's function.
    let f: QueryFn = unsafe { std::mem::transmute(p) };
    let db = cstring(db);
    let mut cap = 1usize << 16;
    loop {
        let mut buf = vec![0u8; cap];
        let mut len = cap as u32;
        if f(
            db.as_ptr(),
            key.as_ptr().cast(),
            kl,
            buf.as_mut_ptr().cast(),
            &mut len,
        ) != 1
        {
            return None;
        }
        if len as usize <= cap {
            buf.truncate(len as usize);
            return Some(buf);
        }
        cap = len as usize;
    }
}

pub fn kv_request(op: c_int, db: &str, key: &str, operand: i64) -> Option<i64> {
    let p = lookup("dmtcp_kvdb_request64")?;
    // SAFETY: the signature of dmtcp.h's function.
    let f: Request64Fn = unsafe { std::mem::transmute(p) };
    let (db, key) = (cstring(db), cstring(key));
    let mut old = 0i64;
    (f(op, db.as_ptr(), key.as_ptr(), operand, &mut old) == 0).then_some(old)
}
