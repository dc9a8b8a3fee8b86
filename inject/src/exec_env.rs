//! The computation's environment kept across exec: a program that execs
//! another with an environment of its own (`env -i`, `execve(..., envp)`
//! with a short list, `clearenv()` then `execvp`) would start it without
//! this library and without the variables it reads (`LD_PRELOAD`, the
//! coordinator's address, `DMTCP_VIRTUAL_PIDS` and `DMTCP_VPID_KEY`
//! without namespaces), that is outside the computation's view of itself:
//! without namespaces it would see kernel pids after a restart. As DMTCP
//! does, the exec wrappers ([`crate::exec`]) give the new program each of
//! them that its environment lacks, with the value this program was
//! started with, and put this library first in an `LD_PRELOAD` that does
//! not name it. A variable the new environment sets is left as it is.
//!
//! Exec may run in a `vfork` child, which shares the parent's memory: the
//! patched environment is built on the stack, without allocation, from
//! strings made once when the library is loaded ([`init`]).

use std::ffi::{c_char, CStr, CString};
use std::sync::OnceLock;

/// The variables carried across exec, besides `LD_PRELOAD`: those
/// `dmtcp-run` and nsinit give the program, and `DMTCP_TMPDIR` (where the
/// runtime directory is, which holds the pid table after a restart).
const CARRIED: [&str; 7] = [
    "DMTCP_VIRTUAL_PIDS",
    "DMTCP_VPID_KEY",
    "DMTCP_TMPDIR",
    "DMTCP_COORD_HOST",
    "DMTCP_COORD_PORT",
    "DMTCP_PREFIX",
    "DMTCP_PLUGINS_LOADED",
];

/// The library's file name, as an `LD_PRELOAD` entry ends.
const LIB_NAME: &[u8] = b"libdmtcp_inject.so";

/// Room for the patched environment: entries, and the `LD_PRELOAD=` string
/// when this library goes in front of the program's own list. A larger
/// environment is passed on unpatched.
const MAX_ENTRIES: usize = 1024;
const MAX_PRELOAD: usize = 4096;

struct Carried {
    /// `NAME=value` of each variable of [`CARRIED`] set at load time,
    /// with the length of `NAME=`.
    vars: Vec<(usize, CString)>,
    /// `LD_PRELOAD=` and its value at load time (this library first, then
    /// the plugins).
    preload: CString,
}

static LOADED: OnceLock<Option<Carried>> = OnceLock::new();

/// Whether an `LD_PRELOAD` value names this library (entries are separated
/// by colons or spaces, as the loader reads them).
fn names_library(value: &[u8]) -> bool {
    value
        .split(|&c| c == b':' || c == b' ')
        .any(|e| e == LIB_NAME || e.ends_with(&[b"/", LIB_NAME].concat()))
}

/// Constructor: what to carry, from this program's environment at load
/// time; nothing when `LD_PRELOAD` does not name this library (it was
/// loaded some other way).
pub fn init() {
    LOADED.get_or_init(|| {
        let preload = std::env::var_os("LD_PRELOAD")?;
        let preload = std::os::unix::ffi::OsStrExt::as_bytes(preload.as_os_str()).to_vec();
        if !names_library(&preload) {
            return None;
        }
        let vars = CARRIED
            .iter()
            .filter_map(|name| {
                let v = std::env::var_os(name)?;
                let mut s = format!("{name}=").into_bytes();
                s.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
                Some((name.len() + 1, CString::new(s).ok()?))
            })
            .collect();
        let mut p = b"LD_PRELOAD=".to_vec();
        p.extend_from_slice(&preload);
        Some(Carried {
            vars,
            preload: CString::new(p).ok()?,
        })
    });
}

/// What an environment lacks: a bit per entry of [`Carried::vars`], and
/// the program's own `LD_PRELOAD` entry when it does not name this library
/// (`Some(null)` when there is none at all).
struct Need {
    vars: u32,
    preload: Option<*const c_char>,
    entries: usize,
}

/// # Safety
/// `envp` is a NULL-terminated array of NUL-terminated strings.
unsafe fn need(c: &Carried, envp: *const *const c_char) -> Option<Need> {
    let mut vars: u32 = (1u32 << c.vars.len()) - 1;
    let mut preload: Option<*const c_char> = Some(std::ptr::null());
    let mut entries = 0;
    loop {
        // SAFETY: NULL-terminated array (caller's contract); we stop at NULL.
        let p = unsafe { *envp.add(entries) };
        if p.is_null() {
            break;
        }
        entries += 1;
        // SAFETY: each entry is a NUL-terminated string.
        let e = unsafe { CStr::from_ptr(p) }.to_bytes();
        if let Some(v) = e.strip_prefix(b"LD_PRELOAD=") {
            // getenv takes the first definition; so does the loader.
            if preload.is_some_and(|q| q.is_null()) {
                preload = (!names_library(v)).then_some(p);
            }
            continue;
        }
        for (i, (name_len, s)) in c.vars.iter().enumerate() {
            if e.len() >= *name_len && e[..*name_len] == s.as_bytes()[..*name_len] {
                vars &= !(1 << i);
            }
        }
    }
    (vars != 0 || preload.is_some()).then_some(Need {
        vars,
        preload,
        entries,
    })
}

/// Calls `run` with the environment to give the new program: `envp`
/// itself when it lacks nothing ([`LOADED`]), else a copy on this stack
/// with what it lacks added. `envp` null is passed on as it is.
///
/// # Safety
/// `envp` is null or a NULL-terminated array of NUL-terminated strings.
pub(crate) unsafe fn with_env<R>(
    envp: *const *const c_char,
    run: impl FnOnce(*const *const c_char) -> R,
) -> R {
    let Some(Some(c)) = LOADED.get() else {
        return run(envp);
    };
    if envp.is_null() {
        return run(envp);
    }
    // SAFETY: forwarded contract.
    match unsafe { need(c, envp) } {
        // SAFETY: forwarded contract.
        Some(n) => unsafe { patched(c, envp, n, run) },
        None => run(envp),
    }
}

/// The copy (kept out of [`with_env`] so that its stack space is taken
/// only when needed).
///
/// # Safety
/// As [`with_env`]; `n` is what [`need`] found in `envp`.
#[inline(never)]
unsafe fn patched<R>(
    c: &Carried,
    envp: *const *const c_char,
    n: Need,
    run: impl FnOnce(*const *const c_char) -> R,
) -> R {
    let added = n.vars.count_ones() as usize + usize::from(n.preload == Some(std::ptr::null()));
    if n.entries + added + 1 > MAX_ENTRIES {
        return run(envp);
    }
    let mut ptrs = [std::ptr::null::<c_char>(); MAX_ENTRIES];
    let mut joined = [0u8; MAX_PRELOAD];
    // The program's own LD_PRELOAD with this library's list in front.
    let theirs = match n.preload {
        Some(p) if !p.is_null() => {
            // SAFETY: an entry of envp: a NUL-terminated string.
            let own = unsafe { CStr::from_ptr(p) }.to_bytes();
            let ours = c.preload.as_bytes();
            let rest = &own[b"LD_PRELOAD=".len()..];
            let len = ours.len() + 1 + rest.len();
            if len + 1 > MAX_PRELOAD {
                return run(envp);
            }
            joined[..ours.len()].copy_from_slice(ours);
            joined[ours.len()] = b':';
            joined[ours.len() + 1..len].copy_from_slice(rest);
            Some(p)
        }
        _ => None,
    };
    let mut k = 0;
    for i in 0..n.entries {
        // SAFETY: i is below the count `need` found before the NULL.
        let p = unsafe { *envp.add(i) };
        ptrs[k] = if Some(p) == theirs {
            joined.as_ptr().cast()
        } else {
            p
        };
        k += 1;
    }
    if n.preload == Some(std::ptr::null()) {
        ptrs[k] = c.preload.as_ptr();
        k += 1;
    }
    for (i, (_, s)) in c.vars.iter().enumerate() {
        if n.vars & (1 << i) != 0 {
            ptrs[k] = s.as_ptr();
            k += 1;
        }
    }
    run(ptrs.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried() -> Carried {
        Carried {
            vars: vec![
                (15, CString::new("DMTCP_VPID_KEY=ab").unwrap()),
                (17, CString::new("DMTCP_COORD_PORT=7").unwrap()),
            ],
            preload: CString::new("LD_PRELOAD=/x/libdmtcp_inject.so:/p.so").unwrap(),
        }
    }

    fn env_after(c: &Carried, env: &[&str]) -> Vec<String> {
        let strings: Vec<CString> = env.iter().map(|s| CString::new(*s).unwrap()).collect();
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let run = |e: *const *const c_char| -> Vec<String> {
            // SAFETY: a NULL-terminated array of live strings.
            let words = unsafe { crate::exec::words(e) };
            words
                .iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect()
        };
        // SAFETY: ptrs is NULL-terminated, its strings live.
        match unsafe { need(c, ptrs.as_ptr()) } {
            // SAFETY: as above.
            Some(n) => unsafe { patched(c, ptrs.as_ptr(), n, run) },
            None => run(ptrs.as_ptr()),
        }
    }

    #[test]
    fn an_empty_environment_gets_everything() {
        let c = carried();
        assert_eq!(
            env_after(&c, &[]),
            vec![
                "LD_PRELOAD=/x/libdmtcp_inject.so:/p.so",
                "DMTCP_VPID_KEY=ab",
                "DMTCP_COORD_PORT=7"
            ]
        );
    }

    #[test]
    fn what_the_program_sets_stays() {
        let c = carried();
        let env = [
            "A=1",
            "DMTCP_VPID_KEY=zz",
            "LD_PRELOAD=/y/libdmtcp_inject.so",
        ];
        assert_eq!(
            env_after(&c, &env),
            vec![
                "A=1",
                "DMTCP_VPID_KEY=zz",
                "LD_PRELOAD=/y/libdmtcp_inject.so",
                "DMTCP_COORD_PORT=7"
            ]
        );
        let full = [
            "DMTCP_COORD_PORT=1",
            "DMTCP_VPID_KEY=",
            "LD_PRELOAD=libdmtcp_inject.so",
        ];
        assert_eq!(env_after(&c, &full), full.to_vec());
    }

    #[test]
    fn the_library_goes_first_in_a_list_without_it() {
        let c = carried();
        let env = [
            "LD_PRELOAD=/lib/other.so",
            "DMTCP_COORD_PORT=7",
            "DMTCP_VPID_KEY=ab",
        ];
        assert_eq!(
            env_after(&c, &env),
            vec![
                "LD_PRELOAD=/x/libdmtcp_inject.so:/p.so:/lib/other.so",
                "DMTCP_COORD_PORT=7",
                "DMTCP_VPID_KEY=ab"
            ]
        );
    }

    #[test]
    fn a_name_is_matched_whole() {
        let c = carried();
        let env = ["DMTCP_VPID_KEYX=1", "LD_PRELOAD=/x/libdmtcp_inject.so"];
        let out = env_after(&c, &env);
        assert!(out.contains(&"DMTCP_VPID_KEY=ab".to_string()), "{out:?}");
        assert!(!names_library(b"/x/notlibdmtcp_inject.so"));
        assert!(names_library(b"a.so libdmtcp_inject.so"));
    }
}
