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

// ---------------------------------------------------------------------
// Plugins: the dynamic loader, pipes, thread set-up.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicI32, Ordering};

/// A plugin's event hook (`DmtcpPluginDescriptor_t::event_hook`) and the
/// older generation's `dmtcp_process_event`: same C signature.
pub type HookFn = extern "C" fn(u32, *mut c_void);

fn dlerror_string() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string owned by the
    // loader, valid until the next dl call of this thread; copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (see above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// `dlopen(path, RTLD_NOW | RTLD_GLOBAL)`; the loader's message on failure.
/// The handle is kept (the object stays loaded for the process's life).
pub fn dlopen_global(path: &str) -> Result<(), String> {
    let c = CString::new(path).map_err(|_| "path contains a NUL byte".to_string())?;
    // SAFETY: c is NUL-terminated; loading runs the object's constructors,
    // which is what loading a plugin means.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        Err(dlerror_string())
    } else {
        Ok(())
    }
}

/// The first definition of `name` in the global scope (program, preloaded
/// libraries in order, ...).
fn dlsym_default(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: RTLD_DEFAULT with a NUL-terminated name only looks up.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// The first `dmtcp_initialize_plugin` (DMTCP_DECL_PLUGIN), which registers
/// its plugin and calls the next one.
pub fn plugin_init_chain() -> Option<extern "C" fn()> {
    let p = dlsym_default(c"dmtcp_initialize_plugin")?;
    // SAFETY: DMTCP_DECL_PLUGIN defines this symbol as `void (void)`.
    Some(unsafe { std::mem::transmute::<*mut c_void, extern "C" fn()>(p) })
}

/// The first `dmtcp_process_event` (older plugin generation); this library
/// defines none, so it is a plugin's or the program's.
pub fn process_event_chain() -> Option<HookFn> {
    let p = dlsym_default(c"dmtcp_process_event")?;
    // SAFETY: dmtcp.h declares dmtcp_process_event as
    // `void (DmtcpEvent_t, DmtcpEventData_t *)`; the enum is an int.
    Some(unsafe { std::mem::transmute::<*mut c_void, HookFn>(p) })
}

/// File name of the object that contains `addr` (for messages).
pub fn object_of(addr: *const c_void) -> Option<String> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr fills info (zeroed, so valid to read on failure).
    let r = unsafe { libc::dladdr(addr, info.as_mut_ptr()) };
    if r == 0 {
        return None;
    }
    // SAFETY: initialised by zeroing and by dladdr.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is the loader's NUL-terminated copy of the name.
    let s = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy();
    Some(s.rsplit('/').next().unwrap_or_default().to_string())
}

/// A C string given by a plugin (descriptor fields), copied.
pub fn c_str_opt(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the plugin API requires NUL-terminated strings (or null) that
    // live as long as the plugin.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe_cloexec() -> io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

/// The lowest fd number this library's own fds move to: high, so that a
/// program that closes every fd (OpenSSH's `closefrom(3)`) and opens new
/// ones does not get our numbers back at once (the kernel gives the lowest
/// free one). Just below the soft `RLIMIT_NOFILE` (at most 900, as DMTCP's
/// protected fds), never below 3.
fn high_fd_base() -> i32 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into r.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur.min(i32::MAX as u64) as i32
    } else {
        1024
    };
    (soft - 64).clamp(3, 900)
}

/// `pipe2(O_CLOEXEC)` with both ends moved to high fd numbers (see
/// [`high_fd_base`]); where no high number is free, an end stays where
/// the kernel put it.
pub fn pipe_cloexec_high() -> io::Result<(i32, i32)> {
    let (rd, wr) = pipe_cloexec()?;
    let base = high_fd_base();
    let high = |fd: i32| {
        // SAFETY: F_DUPFD_CLOEXEC on an fd we own; no pointer involved.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base) };
        if h < 0 {
            fd
        } else {
            close(fd);
            h
        }
    };
    Ok((high(rd), high(wr)))
}

/// Whether `fd` is still a pipe end open for reading (`write` false) or
/// writing: the program may have closed our fd and opened something else
/// that got its number, which we must then never read or write.
pub fn is_pipe_end(fd: i32, write: bool) -> bool {
    // SAFETY: zeroed stat is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat into st.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return false;
    }
    // SAFETY: F_GETFL on an fd number; no pointer involved.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0
        && (fl & libc::O_ACCMODE)
            == if write {
                libc::O_WRONLY
            } else {
                libc::O_RDONLY
            }
}

pub fn close(fd: i32) {
    // SAFETY: closes an fd this library created; errors are irrelevant.
    unsafe { libc::close(fd) };
}

/// Reads exactly `buf.len()` bytes (EINTR retried).
pub fn read_exact(fd: i32, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reads into the unfilled tail of buf.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n as usize;
    }
    Ok(())
}

/// Writes all of `buf` (EINTR retried).
pub fn write_all(fd: i32, buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes from the unsent tail of buf.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// The calling thread's id (inside the computation's pid namespace).
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Blocks every signal in the calling thread (the hook thread: the
/// program's signals go to its own threads).
pub fn block_all_signals() {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigfillset initialises the set; pthread_sigmask reads it and
    // changes only this thread's mask.
    unsafe {
        libc::sigfillset(set.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
    }
}

/// `pthread_atfork` with three handlers.
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: registers handlers that live as long as this library (never
    // unloaded: it is preloaded).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// `atexit`.
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: registers a handler that lives as long as the library.
    unsafe { libc::atexit(f) };
}

/// `_exit`: leaves at once (plugin check mode, before `main`).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory.
    unsafe { libc::_exit(code) }
}

/// `getppid`, `getpid` and the process's start time (clock ticks since
/// boot): DMTCP's unique process id is made of such parts.
pub fn getpid() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { libc::getpid() }
}

/// `gethostid()`.
pub fn hostid() -> i64 {
    // SAFETY: gethostid has no arguments.
    unsafe { libc::gethostid() as i64 }
}

/// A C string argument (None for null).
pub fn cstr(p: *const c_char) -> Option<String> {
    c_str_opt(p)
}

/// `len` bytes at `p` from C, copied (None for a null pointer with len > 0).
pub fn cbytes(p: *const c_void, len: u32) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller (C API contract) passes `len` readable bytes at p.
    Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }.to_vec())
}

/// Copies `v` to C's buffer `p` of `*len` bytes (at most that many), then
/// sets `*len` to `v.len()`. Null pointers are skipped.
pub fn out_bytes(p: *mut u8, len: *mut u32, v: &[u8]) {
    if len.is_null() {
        return;
    }
    // SAFETY: len is non-null and points to a u32 (C API contract).
    let cap = unsafe { *len } as usize;
    if !p.is_null() {
        let n = cap.min(v.len());
        // SAFETY: p has `cap` >= n writable bytes (C API contract); v is
        // ours, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, n) };
    }
    // SAFETY: as above.
    unsafe { *len = v.len().min(u32::MAX as usize) as u32 };
}

/// Copies all of `v` to `p` (the caller checked the room).
pub fn copy_out(p: *mut u8, v: &[u8]) {
    if p.is_null() {
        return;
    }
    // SAFETY: p has room for v.len() bytes (checked by the caller against
    // the size the C caller gave).
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len()) };
}

pub fn store_i32(p: *mut i32, v: i32) {
    if !p.is_null() {
        // SAFETY: non-null int pointer from C (API contract).
        unsafe { *p = v };
    }
}

pub fn store_i64(p: *mut i64, v: i64) {
    if !p.is_null() {
        // SAFETY: non-null int64_t pointer from C (API contract).
        unsafe { *p = v };
    }
}

/// Whether the object at `path` is loaded in this process.
pub fn is_loaded(path: &str) -> bool {
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: RTLD_NOLOAD only looks the object up (and takes a reference
    // that is never dropped: it is loaded for good anyway).
    !unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) }.is_null()
}

/// A raw system call, bypassing libc (the library's own `syscall` and
/// `prctl` wrappers must not call themselves).
pub fn raw_syscall(nr: i64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the `syscall` instruction with the x86-64 Linux convention;
    // rcx and r11 are clobbered by the kernel and declared so. The calls
    // passed here (seccomp, prctl, landlock_*) are the caller's own, with the
    // caller's arguments, exactly as libc would have made them.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// libc's convention for a raw result: -1 and errno on failure.
pub fn libc_result(r: i64) -> i64 {
    if (-4095..0).contains(&r) {
        set_errno((-r) as i32);
        -1
    } else {
        r
    }
}

/// Reads `len` bytes at `addr` of our own memory without trusting the
/// pointer (a bad one gives an error, as the kernel would say EFAULT).
pub fn read_own(addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: process_vm_readv writes only into `buf` (len bytes, owned
    // here) and reads the remote range through the kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == len as isize {
        return Some(buf);
    }
    let e = std::io::Error::last_os_error().raw_os_error();
    if n < 0 && matches!(e, Some(libc::EPERM) | Some(libc::ENOSYS)) && addr != 0 {
        // A seccomp policy (Docker's default one) denies process_vm_readv:
        // read directly what the kernel is about to read anyway.
        // SAFETY: `addr..addr+len` is the argument of the seccomp or prctl
        // call being made: the program asserts it is readable; a bad
        // pointer faults here rather than failing with EFAULT.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), len) };
        return Some(buf);
    }
    None
}

/// Maps the zeroed log area named [`crate::abi::SECLOG_VMA_NAME`], between
/// two `PROT_NONE` guard pages like the state page (a VMA of its own, found
/// by size and magic where the kernel cannot name it).
pub fn map_seclog() -> Option<*mut u8> {
    use crate::abi::SECLOG_MAP_LEN;
    let guard = STATE_MAP_LEN;
    // SAFETY: fresh private anonymous mapping at no fixed address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SECLOG_MAP_LEN + 2 * guard,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: inside the mapping just made, which nothing else knows about.
    let area = unsafe { p.cast::<u8>().add(guard) };
    // SAFETY: changes the protection of our own fresh mapping only.
    let r = unsafe {
        libc::mprotect(
            area.cast(),
            SECLOG_MAP_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    if r != 0 {
        return None;
    }
    let name = b"dmtcp_seclog\0";
    debug_assert_eq!(
        &name[..name.len() - 1],
        crate::abi::SECLOG_VMA_NAME.as_bytes()
    );
    raw_syscall(
        libc::SYS_prctl,
        [
            PR_SET_VMA as u64,
            PR_SET_VMA_ANON_NAME,
            area as u64,
            SECLOG_MAP_LEN as u64,
            name.as_ptr() as u64,
            0,
        ],
    );
    Some(area)
}

/// Writes `bytes` at `offset` of the log mapping `base`.
pub fn seclog_write(base: *mut u8, offset: usize, bytes: &[u8]) {
    assert!(offset + bytes.len() <= crate::abi::SECLOG_MAP_LEN);
    // SAFETY: `base` is the SECLOG_MAP_LEN-byte mapping from `map_seclog`
    // (never unmapped) and the range is inside it (asserted); writers hold
    // the log's lock.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(offset), bytes.len()) };
}

/// `prctl(2)` as libc exports it: `PR_SET_SECCOMP` is recorded.
#[no_mangle]
pub extern "C" fn prctl(option: libc::c_int, a2: u64, a3: u64, a4: u64, a5: u64) -> libc::c_int {
    libc_result(crate::seclog::prctl(option, [a2, a3, a4, a5])) as libc::c_int
}

/// `syscall(2)` as libc exports it: `seccomp` and `landlock_restrict_self`
/// are recorded, the calls that carry pids translated ([`crate::vpid`]),
/// everything else is passed through unchanged. (x86-64:
/// variadic integer arguments travel in the same registers and stack slot
/// as these fixed ones.)
#[no_mangle]
pub extern "C" fn syscall(nr: i64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64) -> i64 {
    let a = [a1, a2, a3, a4, a5, a6];
    match crate::vpid::syscall(nr, a) {
        Some(r) => libc_result(r),
        None => libc_result(crate::seclog::syscall(nr, a)),
    }
}

/// The calling thread's id and its process's id.
pub fn ids() -> (u32, u32) {
    (
        raw_syscall(libc::SYS_getpid, [0; 6]) as u32,
        raw_syscall(libc::SYS_gettid, [0; 6]) as u32,
    )
}

/// A memory file, not closed on exec (the exec "lifeboat" of plugins).
pub fn memfd_keep_on_exec(name: &CStr) -> io::Result<i32> {
    // SAFETY: memfd_create reads the NUL-terminated name; no flags.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// `lseek(fd, 0, SEEK_SET)`.
pub fn rewind(fd: i32) {
    // SAFETY: lseek on a descriptor we own; no memory is touched.
    unsafe { libc::lseek(fd, 0, libc::SEEK_SET) };
}

/// The process's `environ` (for the exec calls that take none).
pub fn environ() -> *const *const c_char {
    extern "C" {
        static environ: *const *const c_char;
    }
    // SAFETY: reading the pointer value of libc's environ; it is only
    // passed on to plugins as exec's envp would be.
    unsafe { environ }
}

/// Where the thread wrappers find the C library's functions.
static PTHREAD_CREATE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
static PTHREAD_EXIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn next_fn(cell: &'static std::sync::OnceLock<usize>, name: &CStr) -> usize {
    *cell.get_or_init(|| {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only reads
        // the loader's symbol tables.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
    })
}

type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;
type CreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    StartFn,
    *mut c_void,
) -> c_int;

/// A thread start routine and its argument, boxed for [`trampoline`].
struct Start {
    f: StartFn,
    arg: *mut c_void,
}

/// The start routine of a thread created while plugins are active:
/// `DMTCP_EVENT_PTHREAD_START`, the program's routine, then
/// `DMTCP_EVENT_PTHREAD_RETURN`.
extern "C" fn trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: p is the Box<Start> leaked by pthread_create below, handed to
    // exactly this thread.
    let s = unsafe { Box::from_raw(p.cast::<Start>()) };
    crate::plugins::thread_event(crate::plugins::ev::PTHREAD_START);
    let r = (s.f)(s.arg);
    crate::plugins::thread_event(crate::plugins::ev::PTHREAD_RETURN);
    r
}

/// `pthread_create(3)`: with plugins active (and not for the library's own
/// hook thread), the new thread starts in [`trampoline`]. Without
/// namespaces after a restart, the new thread's id is checked against the
/// program's virtual pids ([`create_checked`]). Otherwise it is the C
/// library's call after two atomic loads.
///
/// # Safety
/// pthread_create's contract.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartFn,
    arg: *mut c_void,
) -> c_int {
    let f = next_fn(&PTHREAD_CREATE, c"pthread_create");
    if f == 0 {
        return libc::ENOSYS;
    }
    // SAFETY: f is the C library's pthread_create, of this exact type.
    let real: CreateFn = unsafe { std::mem::transmute::<usize, CreateFn>(f) };
    let plugins = crate::plugins::wants_thread_events();
    if crate::vpid::has_known_pids() {
        // SAFETY: the caller's arguments.
        return unsafe { create_checked(real, thread, attr, start, arg, plugins) };
    }
    if !plugins {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real(thread, attr, start, arg) };
    }
    let b = Box::into_raw(Box::new(Start { f: start, arg })).cast::<c_void>();
    // SAFETY: the caller's thread and attr; b is freed by the new thread,
    // or below when none was created.
    let r = unsafe { real(thread, attr, trampoline, b) };
    if r != 0 {
        // SAFETY: no thread took b.
        drop(unsafe { Box::from_raw(b.cast::<Start>()) });
    }
    r
}

/// A thread start checked by [`create_checked`], on its caller's stack.
struct Checked {
    f: StartFn,
    arg: *mut c_void,
    plugins: bool,
    /// 0 until the new thread has looked at its id; then -1 (kept) or the
    /// id (a virtual pid of the program: the thread ends at once).
    verdict: AtomicI32,
}

/// The start routine of a thread made by [`create_checked`].
extern "C" fn checked_start(p: *mut c_void) -> *mut c_void {
    // SAFETY: p is the Checked of create_checked, which waits on its
    // stack until `verdict` is set; nothing here reads it after that.
    let c = unsafe { &*p.cast::<Checked>() };
    let (f, arg, plugins) = (c.f, c.arg, c.plugins);
    let tid = raw_syscall(libc::SYS_gettid, [0; 6]) as i32;
    let clash = crate::vpid::taken_as_virtual(tid);
    c.verdict
        .store(if clash { tid } else { -1 }, Ordering::Release);
    if clash {
        return std::ptr::null_mut();
    }
    if plugins {
        crate::plugins::thread_event(crate::plugins::ev::PTHREAD_START);
    }
    let r = f(arg);
    if plugins {
        crate::plugins::thread_event(crate::plugins::ev::PTHREAD_RETURN);
    }
    r
}

/// `pthread_create` without namespaces after a restart, when the kernel
/// may give a new thread an id that is a virtual pid of the program (an
/// old kernel pid another process now answers to: `gettid()`, `tgkill`
/// and `/proc` would name that process). The kernel's next ids that are
/// known are used up first ([`crate::vpid::skip_known_pids`]); then the
/// new thread looks at its own id before it runs the program's routine,
/// and one that got a known id anyway (another process took ids in
/// between) ends at once and is made again, up to 64 times. The caller
/// waits for that look (one wake-up of the new thread).
///
/// # Safety
/// pthread_create's contract.
unsafe fn create_checked(
    real: CreateFn,
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartFn,
    arg: *mut c_void,
    plugins: bool,
) -> c_int {
    extern "C" {
        fn pthread_attr_getdetachstate(
            attr: *const libc::pthread_attr_t,
            state: *mut c_int,
        ) -> c_int;
    }
    let mut detached = libc::PTHREAD_CREATE_JOINABLE;
    if !attr.is_null() {
        // SAFETY: the caller's initialized attr; an int out-parameter.
        unsafe { pthread_attr_getdetachstate(attr, &mut detached) };
    }
    for _ in 0..64 {
        crate::vpid::skip_known_pids();
        let c = Checked {
            f: start,
            arg,
            plugins,
            verdict: AtomicI32::new(0),
        };
        // SAFETY: the caller's thread and attr; c outlives the new
        // thread's use of it (we wait for its verdict below).
        let r = unsafe {
            real(
                thread,
                attr,
                checked_start,
                (&c as *const Checked).cast_mut().cast(),
            )
        };
        if r != 0 {
            return r;
        }
        let verdict = loop {
            match c.verdict.load(Ordering::Acquire) {
                0 => {
                    // SAFETY: no arguments.
                    unsafe { libc::sched_yield() };
                }
                v => break v,
            }
        };
        if verdict == -1 {
            return 0;
        }
        if detached == libc::PTHREAD_CREATE_DETACHED {
            // Its stack (maybe the caller's own, `pthread_attr_setstack`)
            // is free once the thread is gone.
            while raw_syscall(
                libc::SYS_tgkill,
                [getpid_raw() as u64, verdict as u64, 0, 0, 0, 0],
            ) == 0
            {
                // SAFETY: no arguments.
                unsafe { libc::sched_yield() };
            }
        } else {
            // SAFETY: the thread just made, joinable, ending at once.
            unsafe { libc::pthread_join(*thread, std::ptr::null_mut()) };
        }
    }
    libc::EAGAIN
}

fn getpid_raw() -> i64 {
    raw_syscall(libc::SYS_getpid, [0; 6])
}

/// `pthread_exit(3)`: `DMTCP_EVENT_PTHREAD_EXIT` first when plugins are
/// active.
///
/// # Safety
/// pthread_exit's contract.
#[no_mangle]
pub unsafe extern "C" fn pthread_exit(retval: *mut c_void) -> ! {
    if crate::plugins::wants_thread_events() {
        crate::plugins::thread_event(crate::plugins::ev::PTHREAD_EXIT);
    }
    let f = next_fn(&PTHREAD_EXIT, c"pthread_exit");
    if f == 0 {
        // SAFETY: no C library pthread_exit: ending the thread directly.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
        unreachable!("exit returned");
    }
    type ExitFn = unsafe extern "C" fn(*mut c_void) -> !;
    // SAFETY: f is the C library's pthread_exit, of this exact type.
    let real: ExitFn = unsafe { std::mem::transmute::<usize, ExitFn>(f) };
    // SAFETY: the caller's argument.
    unsafe { real(retval) }
}

/// Entry `i` of a NULL-terminated C array (None at the terminator).
pub fn array_entry(v: *const *const c_char, i: usize) -> Option<*const c_char> {
    // SAFETY: callers pass exec's argv/envp (NULL-terminated) and stop at
    // the first None, so index i is within the array.
    let p = unsafe { *v.add(i) };
    (!p.is_null()).then_some(p)
}
