//! File locks: read from `/proc/PID/fdinfo` at checkpoint, taken again at
//! restart.
//!
//! `flock` and OFD locks belong to an open file description, so nsinit
//! takes them on the description it opens, before any shell inherits it.
//! POSIX record locks belong to a process: each shell takes its own once
//! its fds are final. All are taken without waiting: a lock that cannot be
//! had (someone outside the computation holds it now) fails the restart.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use dmtcp_image::{FdEntry, FileLock, LockKind};

/// The `lock:` lines of fdinfo text, e.g.
/// `lock:\t1: POSIX  ADVISORY  WRITE 1234 00:2b:12 10 19`.
pub fn parse_fdinfo(text: &str) -> Vec<FileLock> {
    text.lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let kind = match *w.get(1)? {
                "FLOCK" => LockKind::Flock,
                "POSIX" => LockKind::Posix,
                "OFDLCK" => LockKind::Ofd,
                _ => return None, // leases, delegations
            };
            if *w.get(2)? != "ADVISORY" {
                return None;
            }
            let write = match *w.get(3)? {
                "WRITE" => true,
                "READ" => false,
                _ => return None,
            };
            let start = w.get(6)?.parse().ok()?;
            let end = match *w.get(7)? {
                "EOF" => None,
                e => Some(e.parse().ok()?),
            };
            Some(FileLock {
                kind,
                write,
                start,
                end,
            })
        })
        .collect()
}

fn os_err(what: String) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `fcntl` record lock `cmd` (F_SETLK or F_OFD_SETLK) for `l` on `fd`.
fn record_lock(fd: i32, cmd: i32, l: &FileLock) -> io::Result<()> {
    // SAFETY: flock is plain data.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if l.write {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = l.start as libc::off_t;
    fl.l_len = match l.end {
        Some(end) => (end - l.start + 1) as libc::off_t,
        None => 0,
    };
    fl.l_pid = 0;
    // SAFETY: fl is a live struct flock; fd is the caller's.
    if unsafe { libc::fcntl(fd, cmd, &fl) } < 0 {
        return Err(os_err(format!(
            "fd {fd}: re-taking a {} lock on bytes {}..{}",
            if l.write { "write" } else { "read" },
            l.start,
            l.end.map_or("EOF".to_string(), |e| e.to_string())
        )));
    }
    Ok(())
}

/// Takes the `flock` and OFD locks of a description on `fd`.
pub fn take_description_locks(fd: &OwnedFd, locks: &[FileLock]) -> io::Result<()> {
    for l in locks {
        match l.kind {
            LockKind::Flock => {
                let op = if l.write {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                };
                // SAFETY: flock takes integers only.
                if unsafe { libc::flock(fd.as_raw_fd(), op | libc::LOCK_NB) } < 0 {
                    return Err(os_err("re-taking a flock() lock".into()));
                }
            }
            LockKind::Ofd => record_lock(fd.as_raw_fd(), libc::F_OFD_SETLK, l)?,
            LockKind::Posix => {}
        }
    }
    Ok(())
}

/// Takes the calling process's POSIX record locks on its placed fds.
pub fn take_process_locks(fds: &[FdEntry]) -> io::Result<()> {
    for e in fds {
        for l in e.locks.iter().filter(|l| l.kind == LockKind::Posix) {
            record_lock(e.fd, libc::F_SETLK, l)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo_lock_lines() {
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t30\nino:\t12\n\
                    lock:\t1: FLOCK  ADVISORY  WRITE 77 00:2b:12 0 EOF\n\
                    lock:\t2: POSIX  ADVISORY  READ 77 00:2b:12 10 19\n\
                    lock:\t3: OFDLCK ADVISORY  WRITE -1 00:2b:12 100 EOF\n\
                    lock:\t4: LEASE  ACTIVE    READ 77 00:2b:12 0 EOF\n";
        let l = parse_fdinfo(text);
        assert_eq!(
            l,
            vec![
                FileLock {
                    kind: LockKind::Flock,
                    write: true,
                    start: 0,
                    end: None
                },
                FileLock {
                    kind: LockKind::Posix,
                    write: false,
                    start: 10,
                    end: Some(19)
                },
                FileLock {
                    kind: LockKind::Ofd,
                    write: true,
                    start: 100,
                    end: None
                },
            ]
        );
    }
}
