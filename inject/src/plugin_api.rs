//! The plugin API's C functions (`inject/include/dmtcp.h`, second half):
//! barriers, utility calls and publish/subscribe.
//!
//! Pointers from C are turned into slices and strings in [`crate::sys`]'s
//! helpers only ([`cbytes`], [`cstr`], [`out_bytes`]).

use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use dmtcp_protocol::ToCoordinator;

use crate::coord;
use crate::plugins;
use crate::state;
use crate::sys::{self, cbytes, cstr, out_bytes};

/// Strings handed to C, one slot per function (valid until the next call of
/// that function, as dmtcp.h says).
static STRINGS: Mutex<Vec<(&'static str, CString)>> = Mutex::new(Vec::new());

fn keep(slot: &'static str, s: String) -> *const c_char {
    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
    let mut v = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    v.retain(|(k, _)| *k != slot);
    v.push((slot, c));
    v.last().map_or(std::ptr::null(), |(_, c)| c.as_ptr())
}

/// `dmtcp_global_barrier`: every process with plugins reaches it.
#[no_mangle]
pub extern "C" fn dmtcp_global_barrier(name: *const c_char) -> i32 {
    plugins::barrier(&cstr(name).unwrap_or_default())
}

/// `dmtcp_local_barrier`: the processes of this host (one supervisor per
/// host: the same set as the global one).
#[no_mangle]
pub extern "C" fn dmtcp_local_barrier(name: *const c_char) -> i32 {
    plugins::barrier(&format!("local:{}", cstr(name).unwrap_or_default()))
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn ckpt_dir() -> String {
    env("DMTCP_CHECKPOINT_DIR")
        .or_else(|| {
            let st = state::page()?;
            coord::with_kv(st, |c| Ok(c.welcome.ckpt_dir.clone()))
                .ok()
                .filter(|d| !d.is_empty())
        })
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .map(|d| d.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| ".".into())
}

#[no_mangle]
pub extern "C" fn dmtcp_get_ckpt_dir() -> *const c_char {
    keep("ckpt_dir", ckpt_dir())
}

#[no_mangle]
pub extern "C" fn dmtcp_get_ckpt_filename() -> *const c_char {
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let name = format!("{}/ckpt_{}_{}.dmtcp", ckpt_dir(), comm.trim(), uniquepid());
    keep("ckpt_filename", name)
}

#[no_mangle]
pub extern "C" fn dmtcp_get_tmpdir() -> *const c_char {
    let d = env("DMTCP_TMPDIR")
        .or_else(|| env("TMPDIR"))
        .unwrap_or_else(|| "/tmp".into());
    keep("tmpdir", d)
}

fn uniquepid() -> String {
    // Start time (field 22 of /proc/self/stat) tells apart processes that
    // reuse a pid; a restored process keeps its pid, but not its start
    // time, so the value of the first call in the process is kept.
    static FIRST: Mutex<Option<(i32, String)>> = Mutex::new(None);
    let pid = sys::getpid();
    let mut g = FIRST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((p, s)) = g.as_ref() {
        if *p == pid {
            return s.clone();
        }
    }
    let start = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            rest.split_whitespace().nth(19).map(str::to_string)
        })
        .unwrap_or_default();
    let s = format!("{:x}-{pid}-{start}", sys::hostid() as u32);
    *g = Some((pid, s.clone()));
    s
}

#[no_mangle]
pub extern "C" fn dmtcp_get_uniquepid_str() -> *const c_char {
    keep("uniquepid", uniquepid())
}

#[no_mangle]
pub extern "C" fn dmtcp_get_computation_id_str() -> *const c_char {
    let id = state::page()
        .and_then(|st| coord::with_kv(st, |c| Ok(c.welcome.computation.clone())).ok())
        .unwrap_or_default();
    keep("computation_id", id)
}

#[no_mangle]
pub extern "C" fn dmtcp_get_computation_generation() -> u32 {
    state::page().map_or(0, |st| st.generation.load(Ordering::Acquire) as u32)
}

#[no_mangle]
pub extern "C" fn dmtcp_is_running_state() -> i32 {
    i32::from(plugins::running_state())
}

#[no_mangle]
pub extern "C" fn dmtcp_is_restarted() -> i32 {
    i32::from(state::page().is_some_and(|st| st.restarts.load(Ordering::Acquire) > 0))
}

#[no_mangle]
pub extern "C" fn dmtcp_real_to_virtual_pid(pid: libc::pid_t) -> libc::pid_t {
    pid
}

#[no_mangle]
pub extern "C" fn dmtcp_virtual_to_real_pid(pid: libc::pid_t) -> libc::pid_t {
    pid
}

#[no_mangle]
pub extern "C" fn dmtcp_get_coordinator_status(peers: *mut i32, running: *mut i32) -> i32 {
    let Some(st) = state::page() else {
        return crate::abi::DMTCP_NOT_PRESENT;
    };
    let status = coord::with_kv(st, |c| c.ask_status().map_err(|e| format!("status: {e}")));
    let (n, r) = match status {
        Ok(s) => (s.num_processes as i32, i32::from(s.state == "RUNNING")),
        Err(_) => return crate::abi::DMTCP_NOT_PRESENT,
    };
    sys::store_i32(peers, n);
    sys::store_i32(running, r);
    crate::abi::DMTCP_IS_PRESENT
}

/// `dmtcp_get_restart_env`: the environment of `dmtcp-restart`.
#[no_mangle]
pub extern "C" fn dmtcp_get_restart_env(
    name: *const c_char,
    value: *mut c_char,
    max: usize,
) -> i32 {
    const NOTFOUND: i32 = -1;
    const TOOLONG: i32 = -2;
    const INTERNAL: i32 = -4;
    const NULL_PTR: i32 = -5;
    let Some(name) = cstr(name) else {
        return NULL_PTR;
    };
    if value.is_null() {
        return NULL_PTR;
    }
    // Sent by dmtcp-restart before the RESTART hooks; else (a process
    // without plugins, or before any restart) nsinit's, which is
    // dmtcp-run's or dmtcp-restart's environment when readable.
    let Some(envb) = plugins::restart_env().or_else(|| std::fs::read("/proc/1/environ").ok())
    else {
        return INTERNAL;
    };
    let prefix = format!("{name}=");
    let Some(v) = envb
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
    else {
        return NOTFOUND;
    };
    if v.len() + 1 > max {
        return TOOLONG;
    }
    let mut out = v.to_vec();
    out.push(0);
    sys::copy_out(value.cast(), &out);
    0
}

/// Key of a database entry: namespaced per generation and database id, so
/// restarted processes see what the computation published at this
/// generation only.
fn db_key(id: &str, key: &[u8]) -> Vec<u8> {
    let generation = state::page().map_or(0, |st| st.generation.load(Ordering::Acquire));
    let mut k = format!("dmtcp.kvdb/{generation}/{id}/").into_bytes();
    k.extend_from_slice(key);
    k
}

fn publish(id: &str, key: &[u8], val: &[u8], sync: bool) -> bool {
    let Some(st) = state::page() else {
        return false;
    };
    let k = db_key(id, key);
    let r = coord::with_kv(st, |c| {
        c.tell(&ToCoordinator::Publish {
            key: k.clone(),
            value: val.to_vec(),
        })?;
        if sync {
            // A query after the publication: the coordinator handles a
            // connection's frames in order, so it has stored it (or
            // refused it: then the value differs).
            let got = c.ask(&ToCoordinator::Query { key: k.clone() })?;
            if got.as_deref() != Some(val) {
                return Err("the coordinator did not keep the value (too large?)".into());
            }
        }
        Ok(())
    });
    match r {
        Ok(()) => true,
        Err(e) => {
            eprintln!("dmtcp: publishing to the coordinator: {e}");
            false
        }
    }
}

fn query(id: &str, key: &[u8]) -> Option<Vec<u8>> {
    let st = state::page()?;
    let k = db_key(id, key);
    coord::with_kv(st, |c| c.ask(&ToCoordinator::Query { key: k.clone() }))
        .ok()
        .flatten()
}

#[no_mangle]
pub extern "C" fn dmtcp_send_key_val_pair_to_coordinator(
    id: *const c_char,
    key: *const c_void,
    key_len: u32,
    val: *const c_void,
    val_len: u32,
) -> i32 {
    let id = cstr(id).unwrap_or_default();
    let (Some(k), Some(v)) = (cbytes(key, key_len), cbytes(val, val_len)) else {
        return 0;
    };
    i32::from(publish(&id, &k, &v, true))
}

#[no_mangle]
pub extern "C" fn dmtcp_send_key_val_pair_to_coordinator_sync(
    id: *const c_char,
    key: *const c_void,
    key_len: u32,
    val: *const c_void,
    val_len: u32,
) -> i32 {
    dmtcp_send_key_val_pair_to_coordinator(id, key, key_len, val, val_len)
}

#[no_mangle]
pub extern "C" fn dmtcp_send_query_to_coordinator(
    id: *const c_char,
    key: *const c_void,
    key_len: u32,
    val: *mut c_void,
    val_len: *mut u32,
) -> i32 {
    let id = cstr(id).unwrap_or_default();
    let Some(k) = cbytes(key, key_len) else {
        return 0;
    };
    let Some(v) = query(&id, &k) else {
        return 0;
    };
    out_bytes(val.cast(), val_len, &v);
    1
}

const KVDB_SUCCESS: i32 = 0;
const KVDB_INVALID: i32 = -1;
const KVDB_KEY_NOT_FOUND: i32 = -3;
const KVDB_ERROR: i32 = -4;

#[no_mangle]
pub extern "C" fn dmtcp_kvdb_set(id: *const c_char, key: *const c_char, val: *const c_char) -> i32 {
    let (Some(id), Some(k), Some(v)) = (cstr(id), cstr(key), cstr(val)) else {
        return KVDB_INVALID;
    };
    if publish(&id, k.as_bytes(), v.as_bytes(), true) {
        KVDB_SUCCESS
    } else {
        KVDB_ERROR
    }
}

#[no_mangle]
pub extern "C" fn dmtcp_kvdb_get(
    id: *const c_char,
    key: *const c_char,
    val: *mut c_char,
    maxlen: usize,
) -> i32 {
    let (Some(id), Some(k)) = (cstr(id), cstr(key)) else {
        return KVDB_INVALID;
    };
    if val.is_null() || maxlen == 0 {
        return KVDB_INVALID;
    }
    let Some(mut v) = query(&id, k.as_bytes()) else {
        return KVDB_KEY_NOT_FOUND;
    };
    v.truncate(maxlen - 1);
    v.push(0);
    sys::copy_out(val.cast(), &v);
    KVDB_SUCCESS
}

#[no_mangle]
pub extern "C" fn dmtcp_kvdb_request64(
    op: i32,
    id: *const c_char,
    key: *const c_char,
    operand: i64,
    oldval: *mut i64,
) -> i32 {
    let (Some(id), Some(k)) = (cstr(id), cstr(key)) else {
        return KVDB_INVALID;
    };
    if !(1..=8).contains(&op) {
        return KVDB_INVALID;
    }
    let Some(st) = state::page() else {
        return KVDB_ERROR;
    };
    let key = db_key(&id, k.as_bytes());
    let r = coord::with_kv(st, |c| {
        if c.minor < 2 {
            return Err("the coordinator is too old for integer operations (protocol 2.2)".into());
        }
        c.ask(&ToCoordinator::KvOp {
            key: key.clone(),
            op: op as u8,
            operand,
        })
    });
    match r {
        Ok(Some(old)) if old.len() == 8 => {
            let v = i64::from_le_bytes(old.try_into().expect("8 bytes"));
            sys::store_i64(oldval, v);
            KVDB_SUCCESS
        }
        Ok(_) => KVDB_ERROR,
        Err(e) => {
            eprintln!("dmtcp_kvdb_request64: {e}");
            KVDB_ERROR
        }
    }
}

#[no_mangle]
pub extern "C" fn dmtcp_kvdb_get64(id: *const c_char, key: *const c_char, val: *mut i64) -> i32 {
    dmtcp_kvdb_request64(8, id, key, 0, val)
}
