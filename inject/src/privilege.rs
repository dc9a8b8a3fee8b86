//! One line on stderr when the program was exec'd from a setuid, setgid or
//! file-capability file but did not get that privilege: under a non-root
//! `dmtcp-run` the computation runs in a user namespace that maps only the
//! user's own uid and gid, and the kernel ignores the set-id bits and file
//! capabilities of files it cannot map (docs/user-guide.md, "Privileged
//! programs"). Without this the program would silently run weakened.
//!
//! Run by the constructor, so it sees every exec of a dynamically linked
//! program in the computation (statically linked ones do not load the
//! library and are not seen).

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use crate::sys;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o0010;

/// Who owns the executable, as this process sees it: an id not mapped in
/// its user namespace (the kernel shows it as the overflow id) is `None`.
pub struct FileOwner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What privilege the executable asks for and the process does not have.
pub fn missing(
    mode: u32,
    owner: &FileOwner,
    (euid, egid): (u32, u32),
    file_caps: bool,
    permitted_caps: u64,
) -> Option<String> {
    if mode & S_ISUID != 0 {
        match owner.uid {
            None => {
                return Some(
                    "is setuid to a user outside the computation's user namespace".to_string(),
                )
            }
            Some(0) if euid != 0 => return Some("is setuid root".to_string()),
            Some(u) if u != euid => return Some(format!("is setuid uid {u}")),
            _ => {}
        }
    }
    // Set-group-ID without group execute is mandatory locking, not setgid.
    if mode & S_ISGID != 0 && mode & S_IXGRP != 0 {
        match owner.gid {
            None => {
                return Some(
                    "is setgid to a group outside the computation's user namespace".to_string(),
                )
            }
            Some(g) if g != egid => return Some(format!("is setgid gid {g}")),
            _ => {}
        }
    }
    if file_caps && permitted_caps == 0 {
        return Some("has file capabilities".to_string());
    }
    None
}

/// Whether `id` is mapped in this process's user namespace (`map` is
/// `/proc/self/uid_map` or `gid_map`: "inside outside count" lines).
fn mapped(map: &str, id: u32) -> bool {
    map.lines().any(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        f.len() == 3 && f[0] <= id as u64 && (id as u64) < f[0] + f[2]
    })
}

/// The file's owner as seen here. In a user namespace other than the
/// initial one, the kernel shows an unmapped owner as the overflow id
/// (65534): that id counts as unmapped too, since it cannot be told from
/// a real owner 65534 (a setuid-65534 file run by uid 65534 is then warned
/// about needlessly, the only false alarm).
fn map_owner(uid: u32, gid: u32) -> FileOwner {
    let check = |map_file: &str, overflow_file: &str, id: u32| {
        let Ok(m) = std::fs::read_to_string(map_file) else {
            return Some(id);
        };
        let initial = m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        let overflow = std::fs::read_to_string(overflow_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if !mapped(&m, id) || (!initial && overflow == Some(id)) {
            None
        } else {
            Some(id)
        }
    };
    FileOwner {
        uid: check("/proc/self/uid_map", "/proc/sys/kernel/overflowuid", uid),
        gid: check("/proc/self/gid_map", "/proc/sys/kernel/overflowgid", gid),
    }
}

/// The process's permitted capabilities (`CapPrm` of `/proc/self/status`).
fn permitted_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapPrm:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Checks the running executable and warns once on stderr.
pub fn warn_if_weakened() {
    if sys::at_secure() {
        return; // it got its privilege
    }
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(st) = std::fs::metadata(&exe) else {
        return;
    };
    let file_caps = std::ffi::CString::new(exe.as_os_str().as_bytes())
        .map(|p| sys::has_file_caps(&p))
        .unwrap_or(false);
    let caps = if file_caps { permitted_caps() } else { 0 };
    if let Some(what) = missing(
        st.mode(),
        &map_owner(st.uid(), st.gid()),
        sys::effective_ids(),
        file_caps,
        caps,
    ) {
        let _ = writeln!(
            std::io::stderr(),
            "dmtcp-run: warning: {} {what}; under dmtcp-run it runs without that privilege",
            exe.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{mapped, missing, FileOwner};

    #[test]
    fn setuid_setgid_and_file_caps() {
        let me = (1000, 1000);
        let own = |u, g| FileOwner {
            uid: Some(u),
            gid: Some(g),
        };
        assert_eq!(
            missing(0o104755, &own(0, 0), me, false, 0).as_deref(),
            Some("is setuid root")
        );
        let unmapped = FileOwner {
            uid: None,
            gid: None,
        };
        assert!(missing(0o104755, &unmapped, me, false, 0)
            .unwrap()
            .starts_with("is setuid to a user outside"));
        assert_eq!(missing(0o104755, &own(1000, 0), me, false, 0), None);
        assert_eq!(missing(0o100755, &own(0, 0), me, false, 0), None);
        assert_eq!(
            missing(0o102755, &own(0, 42), me, false, 0).as_deref(),
            Some("is setgid gid 42")
        );
        assert_eq!(missing(0o102745, &own(0, 42), me, false, 0), None);
        assert_eq!(
            missing(0o100755, &own(0, 0), me, true, 0).as_deref(),
            Some("has file capabilities")
        );
        assert_eq!(missing(0o100755, &own(0, 0), me, true, 1 << 13), None);
        assert!(mapped("0 0 4294967295\n", 65534));
        assert!(!mapped("      1000       1000          1\n", 65534));
    }
}
