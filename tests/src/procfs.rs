//! What /proc shows about a process, captured before a checkpoint and after a
//! restart and compared (zdtm-style): fds and their targets and flags, cwd,
//! memory map, signal mask/dispositions, namespace pid, name, threads.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context, Result};

/// One line of /proc/PID/maps without the volatile device and inode columns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub path: String,
}

impl std::fmt::Display for MapEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:x}-{:x} {} {:08x} {}",
            self.start, self.end, self.perms, self.offset, self.path
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdEntry {
    /// Normalized link target (inode numbers of pipes/sockets dropped).
    pub target: String,
    /// `flags:` of /proc/PID/fdinfo/N (octal), if readable.
    pub flags: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ProcSnapshot {
    pub host_pid: i32,
    pub name: String,
    pub cmdline: String,
    pub exe: String,
    pub cwd: String,
    /// Innermost NSpid (what the program's getpid() returns).
    pub vpid: Option<i32>,
    pub threads: String,
    pub uid: String,
    pub sig_blk: String,
    pub sig_ign: String,
    pub sig_cgt: String,
    pub fds: BTreeMap<i32, FdEntry>,
    pub maps: Vec<MapEntry>,
}

/// Replaces host-pid specific parts of a path.
fn normalize(s: &str, host_pid: i32) -> String {
    let mut t = s.replace(&format!("/proc/{host_pid}/"), "/proc/PID/");
    for kind in ["pipe:[", "socket:["] {
        if t.starts_with(kind) {
            t = format!("{}…]", kind);
        }
    }
    if let Some(rest) = t.strip_prefix("/dev/pts/") {
        if rest.chars().all(|c| c.is_ascii_digit()) {
            t = "/dev/pts/N".into();
        }
    }
    t
}

pub fn parse_maps(text: &str, host_pid: i32) -> Vec<MapEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(range), Some(perms), Some(off), Some(_dev), Some(_inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let path = it.collect::<Vec<_>>().join(" ");
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(s, 16),
            u64::from_str_radix(e, 16),
            u64::from_str_radix(off, 16),
        ) else {
            continue;
        };
        out.push(MapEntry {
            start,
            end,
            perms: perms.to_string(),
            offset,
            path: normalize(&path, host_pid),
        });
    }
    out
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Reads everything the comparison needs from /proc/PID.
pub fn snapshot(host_pid: i32) -> Result<ProcSnapshot> {
    let base = format!("/proc/{host_pid}");
    let status = fs::read_to_string(format!("{base}/status"))
        .with_context(|| format!("read {base}/status"))?;
    let maps_text =
        fs::read_to_string(format!("{base}/maps")).with_context(|| format!("read {base}/maps"))?;
    let link = |what: &str| {
        fs::read_link(format!("{base}/{what}"))
            .map(|p| normalize(&p.to_string_lossy(), host_pid))
            .unwrap_or_else(|e| format!("<{e}>"))
    };
    let mut fds = BTreeMap::new();
    for e in fs::read_dir(format!("{base}/fd")).with_context(|| format!("read {base}/fd"))? {
        let e = e?;
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let target = match fs::read_link(e.path()) {
            Ok(p) => normalize(&p.to_string_lossy(), host_pid),
            // Closed by the program while we listed its fds: it was not
            // open at any one instant of this snapshot worth comparing.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => format!("<{err}>"),
        };
        let flags = fs::read_to_string(format!("{base}/fdinfo/{fd}"))
            .ok()
            .map(|info| status_field(&info, "flags"));
        fds.insert(fd, FdEntry { target, flags });
    }
    let vpid = status_field(&status, "NSpid")
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok());
    Ok(ProcSnapshot {
        host_pid,
        name: status_field(&status, "Name"),
        cmdline: fs::read(format!("{base}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default(),
        exe: link("exe"),
        cwd: link("cwd"),
        vpid,
        threads: status_field(&status, "Threads"),
        uid: status_field(&status, "Uid"),
        sig_blk: status_field(&status, "SigBlk"),
        sig_ign: status_field(&status, "SigIgn"),
        sig_cgt: status_field(&status, "SigCgt"),
        fds,
        maps: parse_maps(&maps_text, host_pid),
    })
}

/// Differences between a snapshot before the checkpoint and one after the
/// restart. Volatile things are ignored: host pid, device/inode columns,
/// pipe/socket inode numbers, pty numbers, the low end of `[stack]`.
pub fn compare(before: &ProcSnapshot, after: &ProcSnapshot) -> Vec<String> {
    let mut d = Vec::new();
    let mut field = |what: &str, a: &str, b: &str| {
        if a != b {
            d.push(format!("{what}: before {a:?}, after {b:?}"));
        }
    };
    field("name", &before.name, &after.name);
    field("cmdline", &before.cmdline, &after.cmdline);
    field("exe", &before.exe, &after.exe);
    field("cwd", &before.cwd, &after.cwd);
    field("threads", &before.threads, &after.threads);
    field("uid", &before.uid, &after.uid);
    field("signal mask (SigBlk)", &before.sig_blk, &after.sig_blk);
    field("ignored signals (SigIgn)", &before.sig_ign, &after.sig_ign);
    field("caught signals (SigCgt)", &before.sig_cgt, &after.sig_cgt);
    if before.vpid != after.vpid {
        d.push(format!(
            "pid seen by the program (NSpid): before {:?}, after {:?}",
            before.vpid, after.vpid
        ));
    }
    for (fd, b) in &before.fds {
        match after.fds.get(fd) {
            None => d.push(format!("fd {fd} ({}) missing after restart", b.target)),
            Some(a) if a.target != b.target => d.push(format!(
                "fd {fd}: before {:?}, after {:?}",
                b.target, a.target
            )),
            Some(a) if a.flags != b.flags => d.push(format!(
                "fd {fd} ({}) flags: before {:?}, after {:?}",
                b.target, b.flags, a.flags
            )),
            Some(_) => {}
        }
    }
    for (fd, a) in &after.fds {
        if !before.fds.contains_key(fd) {
            d.push(format!("fd {fd} ({}) appeared after restart", a.target));
        }
    }
    let key = |m: &MapEntry| {
        let mut m = m.clone();
        if m.path == "[stack]" {
            m.start = 0; // the stack may grow down between the two snapshots
        }
        m
    };
    let b: Vec<MapEntry> = coalesce(&before.maps).iter().map(key).collect();
    let a: Vec<MapEntry> = coalesce(&after.maps).iter().map(key).collect();
    for m in &b {
        if !a.contains(m) {
            d.push(format!("mapping only before checkpoint: {m}"));
        }
    }
    for m in &a {
        if !b.contains(m) {
            d.push(format!("mapping only after restart:     {m}"));
        }
    }
    d
}

/// Joins adjacent mappings that only the kernel's bookkeeping keeps apart
/// (same permissions and path, contiguous file offsets): whether two such
/// VMAs merge depends on anon_vma history that no program can observe.
pub fn coalesce(maps: &[MapEntry]) -> Vec<MapEntry> {
    let mut out: Vec<MapEntry> = Vec::with_capacity(maps.len());
    for m in maps {
        if let Some(last) = out.last_mut() {
            let contiguous_offset =
                last.path.is_empty() || last.offset + (last.end - last.start) == m.offset;
            if last.end == m.start
                && last.perms == m.perms
                && last.path == m.path
                && !m.path.starts_with('[')
                && contiguous_offset
            {
                last.end = m.end;
                continue;
            }
        }
        out.push(m.clone());
    }
    out
}

/// Full text of a snapshot, for failure reports.
pub fn render(s: &ProcSnapshot) -> String {
    let mut out = format!(
        "host pid {} vpid {:?} name {} cwd {} exe {}\n",
        s.host_pid, s.vpid, s.name, s.cwd, s.exe
    );
    for (fd, e) in &s.fds {
        out.push_str(&format!("  fd {fd} -> {} flags {:?}\n", e.target, e.flags));
    }
    for m in &s.maps {
        out.push_str(&format!("  {m}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234 /tmp/x/counter
7ffd1a000000-7ffd1a021000 rw-p 00000000 00:00 0 [stack]
7f00aa000000-7f00aa001000 rw-p 00000000 00:00 0 
7ffd1a1f0000-7ffd1a1f2000 r-xp 00000000 00:00 0 [vdso]
";

    #[test]
    fn maps_parse_and_ignore_inode_and_stack_growth() {
        let m = parse_maps(MAPS, 42);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].path, "/tmp/x/counter");
        assert_eq!(m[2].path, "");
        let mut before = ProcSnapshot {
            host_pid: 42,
            name: "counter".into(),
            cmdline: "counter f".into(),
            exe: "/tmp/x/counter".into(),
            cwd: "/tmp".into(),
            vpid: Some(1),
            threads: "1".into(),
            uid: "0 0 0 0".into(),
            sig_blk: "0".into(),
            sig_ign: "0".into(),
            sig_cgt: "0".into(),
            fds: BTreeMap::new(),
            maps: m.clone(),
        };
        before.fds.insert(
            3,
            FdEntry {
                target: normalize("pipe:[1234]", 42),
                flags: Some("02".into()),
            },
        );
        let mut after = before.clone();
        after.host_pid = 77;
        after.maps = parse_maps(
            &MAPS
                .replace("1234", "999")
                .replace("7ffd1a000000", "7ffd19fff000"),
            77,
        );
        after.fds.insert(
            3,
            FdEntry {
                target: normalize("pipe:[5678]", 77),
                flags: Some("02".into()),
            },
        );
        assert!(
            compare(&before, &after).is_empty(),
            "{:?}",
            compare(&before, &after)
        );
        after.vpid = Some(2);
        after.maps.pop();
        let d = compare(&before, &after);
        assert_eq!(d.len(), 2, "{d:?}");
    }
}
