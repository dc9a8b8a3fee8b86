//! Anonymous-inode fds: epoll instances (and what they watch), eventfds,
//! signalfds and timerfds, read from their fdinfo at checkpoint and made
//! anew at restart.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use dmtcp_image::{FdEntry, FdKind};

use crate::resources::fdshare::FdContext;
use crate::resources::{FdObjects, FdResource, OpenFd};

fn owned(fd: libc::c_int, what: &str) -> io::Result<OwnedFd> {
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    // SAFETY: fd was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers every saved epoll watch; call once all fds sit at their numbers.
pub fn add_epoll_watches(entries: &[FdEntry]) -> io::Result<()> {
    for e in entries {
        let FdKind::Epoll { watches, .. } = &e.kind else {
            continue;
        };
        for &(tfd, events, data) in watches {
            let mut ev = libc::epoll_event { events, u64: data };
            // SAFETY: ev is a live epoll_event; both fds are ours.
            if unsafe { libc::epoll_ctl(e.fd, libc::EPOLL_CTL_ADD, tfd, &mut ev) } < 0 {
                let err = io::Error::last_os_error();
                return Err(io::Error::new(
                    err.kind(),
                    format!("epoll fd {}: watching fd {tfd}: {err}", e.fd),
                ));
            }
        }
    }
    Ok(())
}

/// `key: value` from fdinfo text.
fn fdinfo_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// `(sec, nsec)` as fdinfo prints timer values -> ns.
fn parse_timespec(v: &str) -> Option<u64> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (s, n) = v.split_once(',')?;
    Some(s.trim().parse::<u64>().ok()? * 1_000_000_000 + n.trim().parse::<u64>().ok()?)
}

/// epoll, eventfd, signalfd and timerfd from their fdinfo.
fn anon_inode_kind(kind: &str, info: &str, flags: i32) -> Option<FdKind> {
    let status = flags & (libc::O_NONBLOCK | libc::O_CLOEXEC);
    match kind {
        "[eventpoll]" => {
            let watches = info
                .lines()
                .filter(|l| l.starts_with("tfd:"))
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let at = |k: &str| w.iter().position(|x| *x == k).and_then(|i| w.get(i + 1));
                    Some((
                        at("tfd:")?.parse().ok()?,
                        u32::from_str_radix(at("events:")?, 16).ok()?,
                        u64::from_str_radix(at("data:")?, 16).ok()?,
                    ))
                })
                .collect();
            Some(FdKind::Epoll {
                flags: status,
                watches,
            })
        }
        "[eventfd]" => Some(FdKind::EventFd {
            flags: status,
            // The kernel prints the counter in hex.
            count: u64::from_str_radix(fdinfo_value(info, "eventfd-count")?, 16).ok()?,
            semaphore: fdinfo_value(info, "eventfd-semaphore") == Some("1"),
        }),
        "[signalfd]" => Some(FdKind::SignalFd {
            flags: status,
            mask: u64::from_str_radix(fdinfo_value(info, "sigmask")?, 16).ok()?,
        }),
        "[timerfd]" => {
            let interval_ns = parse_timespec(fdinfo_value(info, "it_interval")?)?;
            let mut value_ns = parse_timespec(fdinfo_value(info, "it_value")?)?;
            let ticks: u64 = fdinfo_value(info, "ticks")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            // An expired timer nobody has read yet shows no remaining time
            // (periodic ones are re-armed lazily, on read): it must fire
            // again at once after restart, not be taken for disarmed.
            if value_ns == 0 && (interval_ns > 0 || ticks > 0) {
                value_ns = 1;
            }
            Some(FdKind::TimerFd {
                flags: status,
                clock: fdinfo_value(info, "clockid")?.parse().ok()?,
                value_ns,
                interval_ns,
            })
        }
        _ => None,
    }
}

/// epoll, eventfd, signalfd and timerfd (`anon_inode:[...]` targets).
pub struct AnonFd;

impl FdResource for AnonFd {
    fn capture(f: &OpenFd<'_>, _cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        Ok(f.target
            .strip_prefix("anon_inode:")
            .and_then(|k| anon_inode_kind(k, f.info, f.flags)))
    }

    fn restore(e: &FdEntry, _objects: &FdObjects) -> io::Result<OwnedFd> {
        match &e.kind {
            FdKind::Epoll { .. } => {
                // Watches are added once every fd sits at its number (`add_epoll_watches`).
                // SAFETY: epoll_create1 returns a fresh fd or -1.
                owned(
                    unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
                    "epoll_create1",
                )
            }
            FdKind::EventFd {
                flags,
                count,
                semaphore,
            } => {
                let mut f = libc::EFD_CLOEXEC | (flags & libc::O_NONBLOCK);
                if *semaphore {
                    f |= libc::EFD_SEMAPHORE;
                }
                let fd = owned(
                    // SAFETY: eventfd returns a fresh fd or -1.
                    unsafe { libc::eventfd(0, f) },
                    "eventfd",
                )?;
                if *count > 0 {
                    let mut w = std::fs::File::from(fd.try_clone()?);
                    w.write_all(&count.to_ne_bytes())?;
                }
                Ok(fd)
            }
            FdKind::SignalFd { flags, mask } => {
                // The kernel's sigset_t for signalfd is the 8-byte mask we saved.
                let set = *mask;
                owned(
                    // SAFETY: signalfd reads 8 bytes of mask from a live u64.
                    unsafe {
                        libc::syscall(
                            libc::SYS_signalfd4,
                            -1,
                            &set as *const u64,
                            8usize,
                            libc::SFD_CLOEXEC | (flags & libc::O_NONBLOCK),
                        ) as libc::c_int
                    },
                    "signalfd",
                )
            }
            FdKind::TimerFd {
                flags,
                clock,
                value_ns,
                interval_ns,
            } => {
                let fd = owned(
                    // SAFETY: timerfd_create returns a fresh fd or -1.
                    unsafe {
                        libc::timerfd_create(*clock, libc::TFD_CLOEXEC | (flags & libc::O_NONBLOCK))
                    },
                    "timerfd_create",
                )?;
                if *value_ns > 0 {
                    let ts = |ns: u64| libc::timespec {
                        tv_sec: (ns / 1_000_000_000) as libc::time_t,
                        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
                    };
                    let spec = libc::itimerspec {
                        it_interval: ts(*interval_ns),
                        it_value: ts(*value_ns),
                    };
                    // SAFETY: spec is a live itimerspec; old value not requested.
                    if unsafe {
                        libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())
                    } < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(fd)
            }
            _ => Err(super::wrong_kind(e, "anonymous-inode fd")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_each_anonymous_kind() {
        let epoll = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
                     tfd:        5 events:       19 data:     abcd00000005  pos:0 ino:3f sdev:f\n\
                     tfd:        7 events:        4 data:                7  pos:0 ino:40 sdev:f\n";
        assert_eq!(
            anon_inode_kind("[eventpoll]", epoll, libc::O_CLOEXEC | libc::O_RDWR),
            Some(FdKind::Epoll {
                flags: libc::O_CLOEXEC,
                watches: vec![(5, 0x19, 0xabcd_0000_0005), (7, 4, 7)],
            })
        );
        let eventfd = "pos:\t0\nflags:\t04002\neventfd-count:               1a\neventfd-id: 3\neventfd-semaphore: 1\n";
        assert_eq!(
            anon_inode_kind("[eventfd]", eventfd, libc::O_NONBLOCK | libc::O_RDWR),
            Some(FdKind::EventFd {
                flags: libc::O_NONBLOCK,
                count: 0x1a,
                semaphore: true,
            })
        );
        let signalfd = "pos:\t0\nflags:\t02\nsigmask:\t0000000000004002\n";
        assert_eq!(
            anon_inode_kind("[signalfd]", signalfd, 0),
            Some(FdKind::SignalFd {
                flags: 0,
                mask: 0x4002,
            })
        );
        let timerfd = "pos:\t0\nflags:\t02\nclockid: 1\nticks: 0\nsettime flags: 00\n\
                       it_value: (1, 500)\nit_interval: (0, 250000000)\n";
        assert_eq!(
            anon_inode_kind("[timerfd]", timerfd, 0),
            Some(FdKind::TimerFd {
                flags: 0,
                clock: 1,
                value_ns: 1_000_000_500,
                interval_ns: 250_000_000,
            })
        );
        // Expired and unread: fires again at once after restart.
        let expired = "clockid: 0\nticks: 2\nit_value: (0, 0)\nit_interval: (0, 0)\n";
        assert!(matches!(
            anon_inode_kind("[timerfd]", expired, 0),
            Some(FdKind::TimerFd { value_ns: 1, .. })
        ));
        assert_eq!(anon_inode_kind("[io_uring]", "", 0), None);
        assert_eq!(anon_inode_kind("[eventfd]", "pos:\t0\n", 0), None);
    }

    #[test]
    fn timespec_values() {
        assert_eq!(parse_timespec("(2, 7)"), Some(2_000_000_007));
        assert_eq!(parse_timespec(" (0, 0) "), Some(0));
        assert_eq!(parse_timespec("2, 7"), None);
    }
}
