//! The few raw libc calls the library makes (the only `unsafe` besides
//! turning the state page into a reference in [`crate::state`]).

use std::io;

use crate::abi::{STATE_MAP_LEN, STATE_VMA_NAME};

const PR_SET_VMA: libc::c_int = 0x5356_4d41;
const PR_SET_VMA_ANON_NAME: libc::c_ulong = 0;

/// Maps one zeroed read-write anonymous page named [`STATE_VMA_NAME`],
/// between two `PROT_NONE` guard pages so that it is always a VMA of its own
/// (never merged with a neighbour): the supervisor can then find it by its
/// size and magic when the kernel cannot name it (no `CONFIG_ANON_VMA_NAME`).
pub fn map_named_page() -> io::Result<*mut u8> {
    // SAFETY: anonymous private mapping with no fd and no fixed address: it
    // cannot alias any existing memory; the result is checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * STATE_MAP_LEN,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the middle page of the 3-page mapping made above, which
    // nothing else knows about yet.
    let page = unsafe { p.cast::<u8>().add(STATE_MAP_LEN) };
    // SAFETY: changes the protection of our own fresh page only.
    let r = unsafe {
        libc::mprotect(
            page.cast(),
            STATE_MAP_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let name = b"dmtcp_state\0";
    debug_assert_eq!(&name[..name.len() - 1], STATE_VMA_NAME.as_bytes());
    // SAFETY: prctl only reads the NUL-terminated name (copied by the
    // kernel) and names the page we just mapped; failure (EINVAL without
    // CONFIG_ANON_VMA_NAME) is harmless.
    unsafe {
        libc::prctl(
            PR_SET_VMA,
            PR_SET_VMA_ANON_NAME,
            page as libc::c_ulong,
            STATE_MAP_LEN as libc::c_ulong,
            name.as_ptr() as libc::c_ulong,
        )
    };
    Ok(page)
}

/// Sets the calling thread's `errno` (for the C API's -1 returns).
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot,
    // valid for the thread's lifetime.
    unsafe { *libc::__errno_location() = e };
}

/// Effective uid and gid of the process.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// `getauxval(AT_SECURE)`: whether the kernel ran this program in secure
/// mode (it gained privilege at exec).
pub fn at_secure() -> bool {
    // SAFETY: getauxval reads the process's auxiliary vector; no pointers.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Whether the file at `path` has a `security.capability` attribute (file
/// capabilities).
pub fn has_file_caps(path: &std::ffi::CStr) -> bool {
    // SAFETY: path is NUL-terminated; a null buffer of size 0 asks only for
    // the attribute's size.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}
