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
