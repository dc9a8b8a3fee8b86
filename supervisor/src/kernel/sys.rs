//! Small safe wrappers over libc calls used by several modules
//! (fd juggling, clone3 with a chosen pid).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::kernel::pid::VirtPid;

fn cvt(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd; no memory is passed.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) }, "fcntl(F_GETFD)")?;
    // SAFETY: as above.
    cvt(
        unsafe { libc::fcntl(fd, libc::F_SETFD, fl | libc::FD_CLOEXEC) },
        "fcntl(F_SETFD)",
    )
    .map(drop)
}

/// A pipe with both ends close-on-exec: (read, write).
pub fn pipe_cloexec() -> io::Result<(std::fs::File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a live [c_int; 2] the kernel fills.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    cvt(r, "pipe2")?;
    // SAFETY: pipe2 just returned two fresh fds that nothing else owns.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// `dup` to the lowest free number >= `min`, close-on-exec.
pub fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on integer fds.
    let n = cvt(
        unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) },
        "fcntl(F_DUPFD)",
    )?;
    // SAFETY: n is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// `dup3(old, new)`; the new fd is deliberately not owned (it is a target slot).
pub fn dup3(old: RawFd, new: RawFd, cloexec: bool) -> io::Result<()> {
    if old == new {
        return Ok(());
    }
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 on integer fds.
    cvt(unsafe { libc::dup3(old, new, flags) }, "dup3").map(drop)
}

/// Closes every fd not in `keep`.
pub fn close_all_except(keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort();
    let mut next = 0u32;
    for &k in &keep {
        if k as u32 > next {
            // SAFETY: close_range on a numeric range; we own this process's fd table.
            unsafe { libc::syscall(libc::SYS_close_range, next, k as u32 - 1, 0) };
        }
        next = k as u32 + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

/// `clone3` a child with pid `pid` in our pid namespace (fork semantics;
/// the caller runs inside the computation's namespace, so the pid is a
/// virtual one). Returns 0 in the child and the child's pid in the parent.
pub fn clone_with_pid(pid: VirtPid) -> io::Result<i32> {
    let tid: libc::pid_t = pid.0;
    // SAFETY: clone_args is plain old data; all-zero is its default.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    args.set_tid = &tid as *const libc::pid_t as u64;
    args.set_tid_size = 1;
    // SAFETY: fork-like clone3 (no CLONE_VM, no stack): the child continues
    // with a copy of our memory; set_tid points at a live pid_t.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

/// A duplicate of another process's fd (`pidfd_open` + `pidfd_getfd`); it
/// shares the open file description with the target's fd.
pub fn steal_fd(pid: i32, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a fresh fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("pidfd_open({pid}): {e}")));
    }
    // SAFETY: pidfd was just returned and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes integers and returns a fresh fd or -1.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("pidfd_getfd({pid}, {fd}): {e}"),
        ));
    }
    // SAFETY: r is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// The bytes buffered in a pipe, read without consuming them (`tee` into a
/// private pipe), so the pipe is left exactly as it was.
pub fn peek_pipe(read_end: &OwnedFd) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int into n.
    if unsafe { libc::ioctl(read_end.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if n <= 0 {
        return Ok(Vec::new());
    }
    let (mut rd, wr) = pipe_cloexec()?;
    let want = (n as usize).max(4096);
    // SAFETY: fcntl on our own fd; a failure only leaves the default size.
    unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, want as libc::c_int) };
    // SAFETY: tee between two pipe fds we hold; no memory is passed.
    let t = unsafe {
        libc::tee(
            read_end.as_raw_fd(),
            wr.as_raw_fd(),
            n as usize,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if t < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(wr);
    let mut buf = Vec::with_capacity(t as usize);
    std::io::Read::read_to_end(&mut rd, &mut buf)?;
    Ok(buf)
}

/// `process_vm_readv` of `buf.len()` bytes at `addr` in `pid`: faster than
/// `/proc/PID/mem` for big runs. Returns how many bytes were read before
/// the first page that could not be (protection, hole); the caller reads
/// the rest through `/proc/PID/mem`, which ignores protections.
pub fn vm_read(pid: i32, addr: u64, buf: &mut [u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which we own mutably for the call;
    // `remote` is only dereferenced by the kernel in the other process.
    let r = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    r.max(0) as usize
}

/// `process_vm_writev` counterpart of [`vm_read`]: returns how many bytes
/// were written before the first page that could not be (read-only
/// mappings need `/proc/PID/mem`).
pub fn vm_write(pid: i32, addr: u64, buf: &[u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which the kernel only reads;
    // `remote` is only dereferenced by the kernel in the other process.
    let r = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    r.max(0) as usize
}

/// `F_GET_SEALS` of a memfd; `None` when the fd is not a memfd (or any
/// other file that supports sealing).
pub fn memfd_seals(fd: &OwnedFd) -> Option<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl with an integer command on an fd we own.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    (r >= 0).then_some(r)
}

/// A new memfd named `name` that allows sealing.
pub fn memfd_create(name: &str) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::other("NUL in memfd name"))?;
    // SAFETY: c is a valid C string; memfd_create returns a fresh fd or -1.
    let r = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("memfd_create({name}): {e}"),
        ));
    }
    // SAFETY: r is a fresh fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Who the calling thread is for file access: supplementary groups, then
/// filesystem gid and uid (raw syscalls: this thread only). Moving the
/// filesystem uid away from 0 drops the file capabilities (DAC override
/// and friends) from the effective set; back to 0 raises them again.
pub fn set_fs_ids(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: groups is a live slice of gid_t-sized integers for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            groups.len() as libc::c_long,
            groups.as_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::other(format!(
            "setgroups: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: setfsgid/setfsuid take integers only; an id they refuse
    // leaves the current one, which the read-back below catches.
    let (g, u) = unsafe {
        libc::syscall(libc::SYS_setfsgid, gid as libc::c_long);
        libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);
        (
            libc::syscall(libc::SYS_setfsgid, -1 as libc::c_long) as u32,
            libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long) as u32,
        )
    };
    if (u, g) != (uid, gid) {
        return Err(io::Error::other(format!(
            "filesystem ids: got uid {u} gid {g}, wanted uid {uid} gid {gid}"
        )));
    }
    Ok(())
}
