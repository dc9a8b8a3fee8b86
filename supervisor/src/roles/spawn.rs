//! Starting `dmtcp-nsinit` as pid 1 of a fresh pid, mount and IPC namespace (and,
//! when we are not root, a fresh user namespace with an identity uid/gid map).
//!
//! `clone3(CLONE_NEWPID | CLONE_NEWIPC [| CLONE_NEWUSER])` makes the child pid 1 directly.
//! The child runs only async-signal-safe code (the parent may have threads):
//! it writes its own id maps, makes its capabilities ambient so that they
//! survive the exec of `dmtcp-nsinit` (it needs CAP_CHECKPOINT_RESTORE in its
//! namespace for `clone3` with `set_tid` at restart), and execs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::kernel::pid::HostPid;
use crate::kernel::userns::why_no_userns;

/// Everything the child needs, prepared before clone (no allocation after).
struct ChildPlan {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    uid_map: Option<CString>,
    gid_map: Option<CString>,
    ctrl_fd: i32,
}

/// Environment variable naming the control socket fd of `dmtcp-nsinit`.
pub const NSINIT_FD_ENV: &str = "DMTCP_NSINIT_FD";

/// Set (to 1) for a `dmtcp-nsinit` started without namespaces
/// (`dmtcp-restart --no-pidns`): it is then a child subreaper, not pid 1.
pub const NSINIT_HOST_PIDS_ENV: &str = "DMTCP_NSINIT_HOST_PIDS";

/// Set (to 1) for a `dmtcp-nsinit` of a computation without namespaces
/// (`dmtcp-run --no-namespaces`, and restarts of its images): restart
/// shells take the pids the kernel gives (no `set_tid`), and there is no
/// time namespace.
pub const NSINIT_VIRTUAL_ENV: &str = "DMTCP_NSINIT_VIRTUAL_PIDS";

/// `dmtcp-restart --no-pidns`: the computation lives in our own pid, mount
/// and IPC namespaces with its host pids; nsinit is a child subreaper.
static HOST_PIDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, nsinit is started without namespaces (`--no-pidns`).
pub fn set_host_pids() {
    HOST_PIDS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the computation runs with its host pids in our namespaces.
pub fn host_pids() -> bool {
    HOST_PIDS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Spawns `nsinit` in new namespaces with `ctrl` as its control socket.
/// Returns the host pid of the new pid 1.
pub fn spawn_nsinit(nsinit: &Path, ctrl: &OwnedFd) -> io::Result<HostPid> {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let host_pids = host_pids();
    let userns = uid != 0 && !host_pids;
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| io::Error::other("NUL byte in an argument or environment"))
    };
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k.as_bytes() == NSINIT_FD_ENV.as_bytes()
            || k.as_bytes() == NSINIT_HOST_PIDS_ENV.as_bytes()
            || k.as_bytes() == NSINIT_VIRTUAL_ENV.as_bytes()
        {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstr(&kv)?);
    }
    envp.push(cstr(
        format!("{NSINIT_FD_ENV}={}", ctrl.as_raw_fd()).as_bytes(),
    )?);
    if host_pids {
        envp.push(cstr(format!("{NSINIT_HOST_PIDS_ENV}=1").as_bytes())?);
    }
    if crate::kernel::pid::virt::enabled() {
        envp.push(cstr(format!("{NSINIT_VIRTUAL_ENV}=1").as_bytes())?);
    }
    let plan = ChildPlan {
        path: cstr(nsinit.as_os_str().as_bytes())?,
        argv: vec![cstr(b"dmtcp-nsinit")?],
        envp,
        uid_map: userns
            .then(|| cstr(format!("{uid} {uid} 1").as_bytes()))
            .transpose()?,
        gid_map: userns
            .then(|| cstr(format!("{gid} {gid} 1").as_bytes()))
            .transpose()?,
        ctrl_fd: ctrl.as_raw_fd(),
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = plan.argv.iter().map(|s| s.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = plan.envp.iter().map(|s| s.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    // Its own IPC namespace: SysV IPC ids and POSIX message queue names
    // belong to the computation, so a restart can recreate them unchanged.
    // Its own mount namespace, for a /proc of its pid namespace
    // (`kernel::nsview::mount_private_proc`, done by nsinit).
    // With --no-pidns, none: the processes come back into the namespaces
    // they were attached in, the caller's.
    let mut flags = if host_pids {
        0
    } else {
        (libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWNS) as u64
    };
    if userns {
        flags |= libc::CLONE_NEWUSER as u64;
    }
    // SAFETY: clone_args is plain old data; all-zero is its documented default.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork:
    // the child gets a copy of our address space and continues here.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if r == -1 {
        let e = io::Error::last_os_error();
        if userns && userns_refused(&e) {
            return Err(io::Error::new(e.kind(), why_no_userns(&e)));
        }
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot create the pid{}, mount and IPC namespaces: {e}",
                if userns { ", user" } else { "" }
            ),
        ));
    }
    if r == 0 {
        // SAFETY: we are the freshly cloned child; child_main only makes
        // async-signal-safe calls on data prepared above and never returns.
        unsafe { child_main(&plan, &argv_ptrs, &envp_ptrs) }
    }
    Ok(HostPid(r as i32))
}

/// Whether a failed clone3 with CLONE_NEWUSER failed because of the user
/// namespace: a user namespace alone is tried to tell (ENOSPC and EPERM
/// also come from the pid or mount namespace limits).
fn userns_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EPERM | libc::EACCES | libc::EUSERS)
    ) && crate::kernel::sys::try_new_userns().is_err()
}

/// Writes `data` to a /proc file; async-signal-safe.
///
/// # Safety
/// Must only be given NUL-terminated paths; called in the clone child.
unsafe fn write_proc(path: &[u8], data: &[u8]) -> bool {
    // SAFETY: path is NUL-terminated (caller contract); open/write/close are
    // async-signal-safe and use only these buffers.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// # Safety
/// Only in the clone3 child: it makes async-signal-safe calls only.
unsafe fn child_main(
    plan: &ChildPlan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: every call below is async-signal-safe and uses buffers prepared
    // before the clone; on any failure we _exit without unwinding.
    unsafe {
        if let (Some(u), Some(g)) = (&plan.uid_map, &plan.gid_map) {
            if !write_proc(b"/proc/self/setgroups\0", b"deny")
                || !write_proc(b"/proc/self/uid_map\0", u.as_bytes())
                || !write_proc(b"/proc/self/gid_map\0", g.as_bytes())
            {
                libc::_exit(126);
            }
            // Keep our namespace capabilities across exec: inheritable =
            // permitted, then raise every one as ambient.
            let mut hdr = CapHeader {
                version: 0x2008_0522,
                pid: 0,
            };
            let mut data = [CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            if libc::syscall(
                libc::SYS_capget,
                &mut hdr as *mut CapHeader,
                data.as_mut_ptr(),
            ) != 0
            {
                libc::_exit(126);
            }
            for d in data.iter_mut() {
                d.inheritable = d.permitted;
            }
            if libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) != 0 {
                libc::_exit(126);
            }
            for cap in 0..64 {
                let word = data[(cap / 32) as usize].permitted;
                if word & (1 << (cap % 32)) != 0 {
                    libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0);
                }
            }
        }
        // The supervisor blocks the signals it forwards; the computation
        // must start with a clean mask.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let fl = libc::fcntl(plan.ctrl_fd, libc::F_GETFD);
        libc::fcntl(plan.ctrl_fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
        libc::execve(plan.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(127);
    }
}
