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

/// Makes the caller a child subreaper: orphaned descendants are reparented
/// to it (`PR_SET_CHILD_SUBREAPER`).
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        "prctl(PR_SET_CHILD_SUBREAPER)",
    )
    .map(drop)
}

/// No `SIGCHLD` for children and tracees that stop or continue
/// (`SA_NOCLDSTOP`), only for those that end. A tracer is sent one for
/// every ptrace stop: freezing 512 threads and running their queries made
/// about 900 of them per checkpoint, each waking the thread that reads our
/// signals. The disposition stays the default one.
pub fn no_sigchld_for_stops() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "default action, empty mask";
    // it is only read by the kernel, and no handler runs.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        sa.sa_flags = libc::SA_NOCLDSTOP;
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// Bit N set: fd N (0-2) was closed when the process started, before the
/// Rust runtime put `/dev/null` there ([`note_closed_stdio`]).
pub static CLOSED_AT_START: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Notes which of fds 0-2 are closed. Meant for a binary's `.init_array`,
/// which runs before the Rust runtime reopens closed standard fds on
/// `/dev/null` (so a closed stdout can be told from `>/dev/null`).
pub extern "C" fn note_closed_stdio() {
    let mut bits = 0u8;
    for fd in 0..=2 {
        if !fd_is_open(fd) {
            bits |= 1 << fd;
        }
    }
    CLOSED_AT_START.store(bits, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `fd` is open in this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on an integer fd reads its flags and changes nothing.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
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
    clone_shell(Some(pid))
}

/// A fork-like `clone3` with `set_tid` when `pid` is given, else whatever
/// pid the kernel gives (computations without namespaces).
pub fn clone_shell(pid: Option<VirtPid>) -> io::Result<i32> {
    let tid: libc::pid_t = pid.map_or(0, |p| p.0);
    // SAFETY: clone_args is plain old data; all-zero is its default.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    if pid.is_some() {
        args.set_tid = &tid as *const libc::pid_t as u64;
        args.set_tid_size = 1;
    }
    // SAFETY: fork-like clone3 (no CLONE_VM, no stack): the child continues
    // with a copy of our memory; set_tid, when set, points at a live pid_t.
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

/// `n` i32 slots in memory shared with every process forked after it is
/// made (restart shells tell each other their kernel pids through it).
pub struct SharedSlots {
    ptr: *mut std::sync::atomic::AtomicI32,
    n: usize,
}

impl SharedSlots {
    pub fn new(n: usize) -> io::Result<SharedSlots> {
        let len = (n.max(1) * 4).next_multiple_of(4096);
        // SAFETY: a fresh anonymous shared mapping; no existing memory is
        // touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedSlots { ptr: p.cast(), n })
    }

    fn slot(&self, i: usize) -> &std::sync::atomic::AtomicI32 {
        assert!(i < self.n, "slot {i} of {}", self.n);
        // SAFETY: i < n slots of the zero-filled, page-aligned mapping,
        // which lives as long as self (never unmapped: forked children
        // keep using it; it goes with the process).
        unsafe { &*self.ptr.add(i) }
    }

    pub fn set(&self, i: usize, v: i32) {
        self.slot(i).store(v, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn get(&self, i: usize) -> i32 {
        self.slot(i).load(std::sync::atomic::Ordering::SeqCst)
    }
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

/// `process_vm_writev` of `buf` at `addr` in `pid`: returns how many bytes
/// were written before the first page that could not be (read-only
/// mappings need `/proc/PID/mem`). There is no reading counterpart on
/// purpose: `process_vm_readv` pins pages, which copies copy-on-write ones
/// (see `resources/memory/pageread.rs`).
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

/// One `process_vm_writev` per 1024 pieces: `data` (concatenated pieces)
/// goes to the remote ranges `(addr, len)` in order. Returns whether every
/// byte was written (else the caller writes through `/proc/PID/mem`).
pub fn vm_write_scatter(pid: i32, data: &[u8], ranges: &[(u64, usize)]) -> bool {
    let mut done = 0usize;
    for chunk in ranges.chunks(1024) {
        let len: usize = chunk.iter().map(|r| r.1).sum();
        let Some(piece) = data.get(done..done + len) else {
            return false;
        };
        let local = libc::iovec {
            iov_base: piece.as_ptr() as *mut libc::c_void,
            iov_len: len,
        };
        let remote: Vec<libc::iovec> = chunk
            .iter()
            .map(|&(addr, n)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: n,
            })
            .collect();
        // SAFETY: `local` describes `piece`, which the kernel only reads;
        // the remote iovecs are only dereferenced by the kernel in the other
        // process; both arrays outlive the call.
        let r = unsafe {
            libc::process_vm_writev(pid, &local, 1, remote.as_ptr(), remote.len() as _, 0)
        };
        if r != len as isize {
            return false;
        }
        done += len;
    }
    true
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

/// Tries to make a user namespace alone (a child that exits at once in
/// it), to tell whether the user namespace is what a failed clone lacked.
pub fn try_new_userns() -> io::Result<()> {
    // SAFETY: clone_args is plain old data; all-zero is its documented default.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = libc::CLONE_NEWUSER as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 without CLONE_VM behaves like fork; the child makes one
    // async-signal-safe call (_exit) and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    if r == 0 {
        // SAFETY: in the child: leave at once without running any destructor.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just made; status is a valid out pointer.
    unsafe { libc::waitpid(r as libc::pid_t, &mut status, libc::__WALL) };
    Ok(())
}

/// `poll` for readability on `fds`, up to `timeout_ms`: for each fd,
/// whether it is readable or at end of file (or in error).
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    poll(&mut p, timeout_ms)?;
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

/// Names the calling thread `name` (`PR_SET_NAME`: at most 15 bytes are
/// kept; an empty name or one with a NUL leaves the name as it is).
pub fn set_own_name(name: &str) {
    let Ok(c) = std::ffi::CString::new(name) else {
        return;
    };
    if name.is_empty() {
        return;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string (at most 16 bytes
    // of it) from a live CString.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// Whether the other side of pipe end `end` is closed everywhere: no
/// process (inside the computation or out) holds a write end of the pipe
/// of read end `end`, or a read end of the pipe of write end `end` (the
/// kernel's `POLLHUP` and `POLLERR` of a pipe).
pub fn pipe_peer_closed(end: &OwnedFd, write: bool) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = [libc::pollfd {
        fd: end.as_raw_fd(),
        events: 0,
        revents: 0,
    }];
    if poll(&mut p, 0).is_err() {
        return false;
    }
    let gone = if write { libc::POLLERR } else { libc::POLLHUP };
    p[0].revents & gone != 0
}

/// A pidfd of `pid` (readable once the process has exited).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a fresh fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("pidfd_open({pid}): {e}")));
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `poll(2)` over `fds`; EINTR counts as nothing ready.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: fds is a live, mutable array of fds.len() pollfds.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// A short path to `name` in `dir` for a unix socket address (at most 108
/// bytes): `/proc/self/fd/N/name` through an `O_PATH` fd of the directory,
/// which the caller keeps open while it uses the path.
pub fn short_path(dir: &std::path::Path, name: &str) -> io::Result<(OwnedFd, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let fd = OwnedFd::from(f);
    let path = format!(
        "/proc/self/fd/{}/{name}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    );
    Ok((fd, path))
}

/// Moves the calling process into a new network namespace that has only
/// the loopback interface, up (`--net=none`).
pub fn private_network_with_loopback() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: unshare takes only flags.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    cvt(r, "unshare(CLONE_NEWNET)")?;
    // SAFETY: a fresh datagram socket for the interface ioctls.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let s = cvt(s, "socket")?;
    // SAFETY: `s` was just created and is owned here.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: an all-zero ifreq is valid (a name and a union of integers).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS writes into `ifr`, a live ifreq.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    cvt(r, "SIOCGIFFLAGS lo")?;
    // SAFETY: the flags member of the union, set by the call above.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `ifr`, a live ifreq.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    cvt(r, "SIOCSIFFLAGS lo")?;
    Ok(())
}

/// Takes ownership of `fd`, an fd inherited across exec that nothing else
/// in this process owns (nsinit: a socket `dmtcp-restart` rebuilt for it);
/// it is closed when the returned value drops.
pub fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on an integer fd.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("inherited fd {fd}: {e}")));
    }
    // SAFETY: fd is open (checked above) and, per the caller's contract, an
    // inherited fd no other object of this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A duplicate of `fd` at `min` or above that a child keeps across exec
/// (no `FD_CLOEXEC`).
pub fn dup_inheritable(fd: &impl std::os::fd::AsRawFd, min: RawFd) -> io::Result<OwnedFd> {
    let d = dup_above(fd.as_raw_fd(), min)?;
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&d), libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(d)
}

/// A function of the application API (`dmtcp.h`, `int f(void)`) as the
/// preloaded inject library exports it, or `None` when this process runs
/// without it (not under checkpoint control).
pub fn app_api(name: &std::ffi::CStr) -> Option<extern "C" fn() -> libc::c_int> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads
    // the loader's symbol tables.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: the names passed here (dmtcp_disable_ckpt,
    // dmtcp_enable_ckpt) are `int f(void)` in the inject library.
    Some(unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> libc::c_int>(p) })
}
