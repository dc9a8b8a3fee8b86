//! What a computation sees of the system beyond its pid namespace: a
//! private `/proc` (in its own mount namespace) and its own clocks (in its
//! own time namespace).
//!
//! Kernel-facing: mount(2), clock_gettime(2).

use std::ffi::CString;
use std::io;

/// Mounts a `/proc` of the caller's pid namespace on `/proc`, in the
/// caller's (new) mount namespace: `/proc/self`, `/proc/<pid>` and `ps`
/// then agree with the pids the computation sees. The mount tree is made
/// private first so that nothing propagates back to the host; every other
/// mount stays as it was. Works as root and as the owner of a user
/// namespace that owns the pid and mount namespaces.
pub fn mount_private_proc() -> io::Result<()> {
    let root = CString::new("/").expect("no NUL");
    let proc_ = CString::new("/proc").expect("no NUL");
    let fstype = CString::new("proc").expect("no NUL");
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call and
    // a null data pointer; it changes only our own mount namespace.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("making the mount tree private: {e}"),
        ));
    }
    // SAFETY: as above.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            proc_.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mounting /proc: {e}")));
    }
    Ok(())
}

/// A clock's value now, in ns, in the caller's time namespace.
fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec; clock_gettime only writes it.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Offsets (monotonic, boottime) in ns of the time namespace `who`
/// (`self` or a pid) gives its children, which is its own unless it
/// unshared one, from `/proc/<who>/timens_offsets`. Without time namespace
/// support: zero.
fn timens_offsets(who: &str) -> io::Result<(i64, i64)> {
    let path = format!("/proc/{who}/timens_offsets");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
    };
    parse_offsets(&text).ok_or_else(|| io::Error::other(format!("{path}: cannot parse {text:?}")))
}

fn parse_offsets(text: &str) -> Option<(i64, i64)> {
    let (mut mono, mut boot) = (0, 0);
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(clock), Some(sec), Some(nsec)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let ns = sec.parse::<i64>().ok()? * 1_000_000_000 + nsec.parse::<i64>().ok()?;
        match clock {
            "monotonic" | "1" => mono = ns,
            "boottime" | "7" => boot = ns,
            _ => {}
        }
    }
    Some((mono, boot))
}

/// The clocks of process `pid` (a host pid, read from the host's /proc)
/// now, as it sees them in its time namespace.
pub fn clocks_of(pid: crate::kernel::pid::HostPid) -> io::Result<dmtcp_image::Clocks> {
    let ours = timens_offsets("self")?;
    let theirs = timens_offsets(&pid.0.to_string())?;
    let mono = clock_ns(libc::CLOCK_MONOTONIC) - ours.0 + theirs.0;
    let boot = clock_ns(libc::CLOCK_BOOTTIME) - ours.1 + theirs.1;
    Ok(dmtcp_image::Clocks {
        monotonic_ns: mono.max(0) as u64,
        boottime_ns: boot.max(0) as u64,
    })
}

/// Puts our future children in a new time namespace (we stay in ours).
/// With `target`, its offsets are set so that their CLOCK_MONOTONIC and
/// CLOCK_BOOTTIME read `target` now and go on from there: a restarted
/// computation sees no jump over the time it was not running. Without, they
/// read the same as ours. Must run before we have any child: offsets can be
/// set only until the first process enters the namespace.
pub fn enter_new_time_namespace(target: Option<dmtcp_image::Clocks>) -> io::Result<()> {
    let ours = timens_offsets("self")?;
    // SAFETY: unshare takes a flag word; CLONE_NEWTIME changes only the
    // namespace our future children get.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("unshare(CLONE_NEWTIME): {e}"),
        ));
    }
    let Some(t) = target else { return Ok(()) };
    // Offsets are relative to the kernel's clocks, ours include our own.
    let mono = t.monotonic_ns as i64 - (clock_ns(libc::CLOCK_MONOTONIC) - ours.0);
    let boot = t.boottime_ns as i64 - (clock_ns(libc::CLOCK_BOOTTIME) - ours.1);
    let text = format!(
        "monotonic {} {}\nboottime {} {}\n",
        mono.div_euclid(1_000_000_000),
        mono.rem_euclid(1_000_000_000),
        boot.div_euclid(1_000_000_000),
        boot.rem_euclid(1_000_000_000)
    );
    std::fs::write("/proc/self/timens_offsets", text.as_bytes()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setting the clocks of the time namespace ({text:?}): {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::parse_offsets;

    #[test]
    fn offsets_parse() {
        let t = "monotonic           -5         100\nboottime            2         0\n";
        assert_eq!(
            parse_offsets(t),
            Some((-5_000_000_000 + 100, 2_000_000_000))
        );
        assert_eq!(parse_offsets(""), Some((0, 0)));
    }
}
