//! Human-readable dump of an image (like CRIU's `crit show`).

use crate::model::{FdKind, VmaKind, PAGE_SIZE};
use crate::reader::ImageReader;
use std::fmt::Write;

/// Index of `rip` and `rsp` in `user_regs_struct` order.
const RIP: usize = 16;
const RSP: usize = 19;

/// Describes header, process, threads, fds and memory map of an image.
pub fn describe(r: &ImageReader) -> String {
    let m = r.meta();
    let mut s = String::new();
    let (major, minor) = r.format_version();
    let c = &m.computation;
    let _ = writeln!(s, "image {}", r.path().display());
    let _ = writeln!(s, "  format      {major}.{minor}");
    let _ = writeln!(s, "  codec       {}", r.codec().name());
    let _ = writeln!(
        s,
        "  key         {} (header, metadata and block table authenticated)",
        crate::key::hex(&r.key_id())
    );
    let _ = writeln!(
        s,
        "  size        {} bytes ({} blocks, {} page bytes)",
        r.file_size(),
        r.block_count(),
        r.page_bytes()
    );
    let _ = writeln!(s, "  computation {}", c.id);
    let _ = writeln!(s, "  generation  {}", c.generation);
    if !c.launch.is_empty() {
        let _ = writeln!(s, "  launch      {}", c.launch);
    }
    if c.no_namespaces {
        let _ = writeln!(s, "  pids        virtual (run without namespaces)");
    }
    if !c.set.is_empty() {
        let set: Vec<String> = c
            .set
            .iter()
            .map(|m| format!("{}/{}", m.launch, m.vpid))
            .collect();
        let _ = writeln!(
            s,
            "  set         {} process(es): {}",
            set.len(),
            set.join(" ")
        );
    }
    let _ = writeln!(s, "  host        {}", c.host);
    let _ = writeln!(s, "  taken at    {}", fmt_time(c.taken_at_unix_ns));
    let _ = writeln!(s, "  coordinator {}:{}", c.coord_host, c.coord_port);
    if let Some(parent) = &m.parent {
        let _ = writeln!(
            s,
            "  parent      {} (generation {}): incremental image",
            parent.file, parent.generation
        );
    }
    if let Some(sb) = &m.security.sandbox {
        let _ = writeln!(
            s,
            "  sandbox     policy {:?} (uid {}), net {}, read {:?}, write {:?}",
            sb.policy,
            sb.owner_uid,
            if sb.net_none { "none" } else { "shared" },
            sb.allow_read,
            sb.allow_write
        );
    }
    if !m.security.filters.is_empty() || m.security.threads.iter().any(|t| t.strict) {
        let chains: Vec<String> = m
            .security
            .threads
            .iter()
            .map(|t| {
                if t.strict {
                    format!("{}:strict", t.vtid)
                } else {
                    format!("{}:{:?}", t.vtid, t.chain)
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "  seccomp     {} filter(s); per thread {}",
            m.security.filters.len(),
            chains.join(" ")
        );
    }

    let p = &m.process;
    let _ = writeln!(s, "process");
    let _ = writeln!(
        s,
        "  pid {} ppid {} pgid {} sid {} (host pid {})",
        p.vpid, p.vppid, p.vpgid, p.vsid, p.host_pid
    );
    let _ = writeln!(s, "  comm    {}", p.comm);
    let _ = writeln!(s, "  exe     {}", p.exe);
    let _ = writeln!(s, "  cwd     {}", p.cwd);
    let cmd: Vec<String> = p
        .cmdline
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let _ = writeln!(s, "  cmdline {}", cmd.join(" "));
    let _ = writeln!(s, "  uid {} gid {} umask {:04o}", p.uid, p.gid, p.umask);
    let c = &p.creds;
    let _ = writeln!(
        s,
        "  uids {:?} gids {:?} groups {:?} securebits {} no_new_privs {}",
        c.uids,
        c.gids,
        c.groups,
        c.securebits
            .map_or("unknown".to_string(), |b| format!("{b:#x}")),
        p.no_new_privs
    );
    if let Some(c) = &p.ctty {
        let which = match c.pty {
            Some(i) => format!("pty {i} of the computation"),
            None if c.termios.is_some() => "outside terminal (settings saved)".into(),
            None => "outside terminal".into(),
        };
        let _ = writeln!(
            s,
            "  ctty    {which}, foreground group {}",
            if c.fg_vpgid == 0 {
                "outside".to_string()
            } else {
                c.fg_vpgid.to_string()
            }
        );
    }

    let _ = writeln!(s, "threads ({})", m.threads.len());
    for t in &m.threads {
        let reg = |i: usize| t.regs.get(i).map_or("?".to_string(), |v| format!("{v:#x}"));
        let _ = writeln!(
            s,
            "  tid {:<7} {:<16} rip {} rsp {}",
            t.vtid,
            t.name,
            reg(RIP),
            reg(RSP)
        );
    }

    if let Some(ipc) = &m.ipc {
        let _ = writeln!(s, "SysV IPC of the computation");
        for g in &ipc.shm {
            let _ = writeln!(
                s,
                "  shm id {} key {:#x} mode {:o} size {} ({} pages saved)",
                g.perm.id,
                g.perm.key,
                g.perm.mode,
                g.size,
                g.pages.iter().map(|r| r.npages).sum::<u64>()
            );
        }
        for g in &ipc.sem {
            let _ = writeln!(
                s,
                "  sem id {} key {:#x} mode {:o} values {:?}",
                g.perm.id, g.perm.key, g.perm.mode, g.values
            );
        }
        for g in &ipc.msg {
            let _ = writeln!(
                s,
                "  msg id {} key {:#x} mode {:o} {} message(s)",
                g.perm.id,
                g.perm.key,
                g.perm.mode,
                g.messages.len()
            );
        }
    }
    let _ = writeln!(s, "fds ({})", m.fds.len());
    for f in &m.fds {
        let cloexec = if f.cloexec { " cloexec" } else { "" };
        let what = match &f.kind {
            FdKind::File {
                path,
                flags,
                offset,
                deleted,
                contents,
            } => {
                let del = if *deleted {
                    format!(
                        " (deleted, {} bytes saved)",
                        contents.as_ref().map_or(0, |c| c.len())
                    )
                } else {
                    String::new()
                };
                format!("file {path} flags {flags:#o} offset {offset}{del}")
            }
            FdKind::Ghost {
                path,
                flags,
                offset,
                size,
                contents,
                ..
            } => format!(
                "unlinked file {path} flags {flags:#o} offset {offset} size {size}{}",
                if contents.is_some() { " (contents saved here)" } else { "" }
            ),
            FdKind::WrittenFile {
                path,
                flags,
                offset,
                size,
                ..
            } => format!("file {path} flags {flags:#o} offset {offset} (size {size} at checkpoint)"),
            FdKind::Device { path, flags } => format!("device {path} flags {flags:#o}"),
            FdKind::Inherit { from, what } => format!("inherit from fd {from} ({what})"),
            FdKind::Unsupported { what } => format!("unsupported {what}"),
            FdKind::Inotify { watches, .. } => format!(
                "inotify watching {}",
                watches
                    .iter()
                    .map(|(_, _, p)| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            FdKind::TcpRemote {
                key,
                peer_launch,
                queued,
                unsent,
                ..
            } => format!(
                "tcp connection {key} to launch {peer_launch} ({} bytes queued, {} unsent)",
                queued.len(),
                unsent.len()
            ),
            FdKind::OutsidePeer {
                family, sotype, peer, ..
            } => format!(
                "socket (family {family}, type {sotype}) to {} outside the computation, reset at restart",
                peer.as_deref().map_or_else(|| "a peer already gone".to_string(), |p| format!("{} address bytes", p.len()))
            ),
            FdKind::Listener { family, addr, .. } => {
                format!(
                    "listening socket (family {family}, {} address bytes)",
                    addr.len()
                )
            }
            FdKind::Memfd {
                name,
                size,
                seals,
                contents,
                ..
            } => format!(
                "memfd:{name} size {size} seals {seals:#x}{}",
                contents
                    .as_ref()
                    .map_or(String::new(), |c| format!(" ({} bytes saved)", c.len()))
            ),
            FdKind::Mqueue { name, messages, .. } => {
                format!("POSIX message queue /{name} ({} queued)", messages.len())
            }
            FdKind::Epoll { watches, .. } => format!("epoll watching {} fd(s)", watches.len()),
            FdKind::EventFd { count, .. } => format!("eventfd (count {count})"),
            FdKind::SignalFd { mask, .. } => format!("signalfd (mask {mask:#x})"),
            FdKind::TimerFd {
                value_ns,
                interval_ns,
                ..
            } => format!("timerfd (in {value_ns} ns, every {interval_ns} ns)"),
            FdKind::Pipe {
                id,
                write,
                buffered,
                ..
            } => format!(
                "pipe {id} ({} end{})",
                if *write { "write" } else { "read" },
                if buffered.is_empty() {
                    String::new()
                } else {
                    format!(", {} bytes buffered", buffered.len())
                }
            ),
            FdKind::UnixPair {
                id,
                end,
                sotype,
                queued,
                ..
            } => format!(
                "unix {} pair {id} end {end}{}",
                match *sotype {
                    libc::SOCK_STREAM => "stream",
                    libc::SOCK_DGRAM => "dgram",
                    libc::SOCK_SEQPACKET => "seqpacket",
                    _ => "socket",
                },
                if queued.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", {} message(s) / {} bytes queued",
                        queued.len(),
                        queued.iter().map(Vec::len).sum::<usize>()
                    )
                }
            ),
            FdKind::TcpConn {
                id,
                end,
                queued,
                shut_wr,
                ..
            } => format!(
                "tcp connection {id} end {end}, {} bytes queued{}",
                queued.len(),
                if *shut_wr {
                    ", shut down for writing"
                } else {
                    ""
                }
            ),
            FdKind::Udp { peer, queued, .. } => format!(
                "udp socket{}, {} datagram(s) queued",
                if peer.is_some() { " (connected)" } else { "" },
                queued.len()
            ),
            FdKind::UnixNamedPair {
                id,
                end,
                queued,
                name,
                ..
            } => format!(
                "named unix connection {id} end {end} ({} name bytes), {} message(s) queued",
                name.len().saturating_sub(2),
                queued.len()
            ),
            FdKind::PtyMaster { index, state, .. } => match state {
                Some(st) => format!(
                    "pty master (pts {index}; {}x{}, {} output and {} input bytes in flight)",
                    st.winsize[1],
                    st.winsize[0],
                    st.output.len(),
                    st.input.len()
                ),
                None => format!("pty master (pts {index})"),
            },
            FdKind::PtySlave {
                index,
                flags,
                dev_tty,
            } => format!(
                "pty slave /dev/pts/{index}{} flags {flags:#o}",
                if *dev_tty { " (as /dev/tty)" } else { "" }
            ),
        };
        let _ = writeln!(s, "  {:>4}{cloexec} {what}", f.fd);
        for l in &f.locks {
            let _ = writeln!(
                s,
                "         lock {:?} {} {}..{}",
                l.kind,
                if l.write { "write" } else { "read" },
                l.start,
                l.end.map_or("EOF".to_string(), |e| e.to_string())
            );
        }
    }

    let _ = writeln!(s, "memory ({} vmas)", m.vmas.len());
    let mut total = 0u64;
    let mut inherited = 0u64;
    for v in &m.vmas {
        let pages: u64 = v.pages.iter().map(|r| r.npages).sum();
        total += pages;
        let from_parent: u64 = v.from_parent.iter().map(|r| r.npages).sum();
        inherited += from_parent;
        let from_parent = if from_parent > 0 {
            format!(" (+{from_parent} from parent)")
        } else {
            String::new()
        };
        let perms = format!(
            "{}{}{}{}",
            if v.prot & 1 != 0 { 'r' } else { '-' },
            if v.prot & 2 != 0 { 'w' } else { '-' },
            if v.prot & 4 != 0 { 'x' } else { '-' },
            if v.shared { 's' } else { 'p' }
        );
        let (off, name) = match &v.kind {
            VmaKind::Anon { name } => (0, name.clone().unwrap_or_default()),
            VmaKind::File { path, offset, .. } => (*offset, path.clone()),
            VmaKind::Vdso => (0, "[vdso]".into()),
            VmaKind::Vvar => (0, "[vvar]".into()),
            VmaKind::VvarVclock => (0, "[vvar_vclock]".into()),
            VmaKind::Vsyscall => (0, "[vsyscall]".into()),
            VmaKind::SharedAnon { id, offset } => {
                (*offset, format!("/dev/zero (deleted) shm {id}"))
            }
            VmaKind::SysvShm { id, offset } => (*offset, format!("SysV shm id {id}")),
            VmaKind::Memfd { id, name, offset } => (*offset, format!("memfd:{name} (object {id})")),
            VmaKind::Ghost { id, path, offset } => {
                (*offset, format!("{path} (unlinked, object {id:#x})"))
            }
        };
        let gd = if v.growsdown { " growsdown" } else { "" };
        let _ = writeln!(
            s,
            "  {:012x}-{:012x} {perms} {off:08x} {:<40} {pages:>8} of {:>8} pages saved{from_parent}{gd}",
            v.start,
            v.end,
            name,
            v.len() / PAGE_SIZE
        );
    }
    let _ = writeln!(s, "total pages saved {total} ({} bytes)", total * PAGE_SIZE);
    if m.parent.is_some() {
        let _ = writeln!(s, "total pages from parent {inherited}");
    }
    s
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC` from ns since the epoch (no tz database).
fn fmt_time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let ms = (ns / 1_000_000) % 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}.{ms:03} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_format() {
        assert_eq!(super::fmt_time(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(
            super::fmt_time(1_700_000_000_123_000_000),
            "2023-11-14 22:13:20.123 UTC"
        );
    }
}
