//! The exec wrappers of ssh and srun contagion ([`crate::ssh`],
//! [`crate::srun`]) and of the plugins' `DMTCP_EVENT_PRE_EXEC`
//! ([`crate::plugins::pre_exec`]): `execve`, `execv`,
//! `execvp`, `execvpe`, `posix_spawn` and `posix_spawnp`, interposed by the
//! preload. A call whose file is not `ssh` or `srun` goes to the next definition
//! (glibc's) untouched, with no allocation (it may run in a vfork child);
//! an ssh call with a remote command, or an srun call with a command, gets
//! that command rewritten first; an ssh call execs the relay `dmtcp_ssh`
//! (next to this library) instead, unless `DMTCP_SSH_RELAY=0`.
//! glibc's own `execl*` and `system` call its internal execve and are not
//! seen; shells, Python's subprocess, Open MPI's rsh launcher and `execvp`
//! callers are.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use crate::exec_env::with_env;
use crate::srun;
use crate::ssh::{self, Remote};

type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
type ExecvFn = unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int;
type SpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const c_void,
    *const c_void,
    *const *const c_char,
    *const *const c_char,
) -> c_int;

/// The next definition of `name` (glibc's), looked up once.
pub(crate) fn next(cell: &'static OnceLock<usize>, name: &CStr) -> usize {
    *cell.get_or_init(|| {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only reads
        // the loader's symbol tables.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
    })
}

/// The words of a NULL-terminated C argv.
///
/// # Safety
/// `argv` is null or points to a NULL-terminated array of NUL-terminated
/// strings (exec's contract).
pub(crate) unsafe fn words(argv: *const *const c_char) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if argv.is_null() {
        return out;
    }
    let mut i = 0;
    loop {
        // SAFETY: the array is NULL-terminated (caller's contract), and we
        // stop at the NULL.
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            return out;
        }
        // SAFETY: each entry is a NUL-terminated string.
        out.push(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec());
        i += 1;
    }
}

/// Whether `file` (exec's path or file argument) is the ssh client.
///
/// # Safety
/// `file` is null or a NUL-terminated string.
unsafe fn names_ssh(file: *const c_char) -> bool {
    if file.is_null() {
        return false;
    }
    // SAFETY: NUL-terminated (caller's contract); no allocation.
    ssh::is_ssh(unsafe { CStr::from_ptr(file) }.to_bytes())
}

/// Whether `file` (exec's path or file argument) is srun.
///
/// # Safety
/// `file` is null or a NUL-terminated string.
unsafe fn names_srun(file: *const c_char) -> bool {
    if file.is_null() {
        return false;
    }
    // SAFETY: NUL-terminated (caller's contract); no allocation.
    srun::is_srun(unsafe { CStr::from_ptr(file) }.to_bytes())
}

/// Directory of this library (`dladdr` on one of its functions): the
/// binaries are its siblings.
fn own_dir() -> Option<String> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr fills `info` for an address inside this library and
    // returns 0 on failure; the address is one of our functions.
    let r = unsafe { libc::dladdr(own_dir as *const c_void, info.as_mut_ptr()) };
    if r == 0 {
        return None;
    }
    // SAFETY: dladdr succeeded, so `info` is initialized.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy();
    let dir = std::path::Path::new(path.as_ref()).parent()?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Some(dir.to_string_lossy().into_owned())
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// The coordinator the supervisor published (else `DMTCP_COORD_HOST`/
/// `_PORT`), the directory of `dmtcp-run` on the other side
/// (`$DMTCP_PREFIX/bin`, else this library's directory) and `DMTCP_TMPDIR`.
fn coordinator() -> Option<(String, u16, String, Option<String>)> {
    let (host, port) = match crate::state::page().and_then(|p| p.published()) {
        Some(p) => (p.host, p.port),
        None => (
            env("DMTCP_COORD_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            env("DMTCP_COORD_PORT")?.trim().parse().ok()?,
        ),
    };
    let bin_dir = match env("DMTCP_PREFIX") {
        Some(p) => format!("{}/bin", p.trim_end_matches('/')),
        None => own_dir()?,
    };
    Some((host, port, bin_dir, env("DMTCP_TMPDIR")))
}

/// Where the remote side finds the coordinator and `dmtcp-run`.
fn remote() -> Option<Remote> {
    let (host, port, bin_dir, tmpdir) = coordinator()?;
    if host.starts_with("127.") || host == "localhost" || host == "::1" {
        eprintln!(
            "dmtcp: ssh: the coordinator listens on {host} (this host only): a remote command cannot join it; start the computation with --coord-host ADDRESS"
        );
    }
    Some(Remote {
        bin_dir,
        coord_host: host,
        coord_port: port,
        tmpdir,
        plugins: plugins(),
    })
}

/// The computation's plugins, for launches started on other hosts or
/// nodes: `DMTCP_PLUGINS_LOADED`, which nsinit sets to the plugins it put
/// into `LD_PRELOAD` after this library.
fn plugins() -> Option<String> {
    env("DMTCP_PLUGINS_LOADED")
}

/// Whether `name` is `0` in the environment the exec'd program gets:
/// `envp` when the call has one (a shell's `VAR=0 ssh ...` or `export`
/// is there, not in the shell's own `environ`), else this process's.
///
/// # Safety
/// `envp` is null or a NULL-terminated array of NUL-terminated strings.
unsafe fn says_zero(envp: *const *const c_char, name: &str) -> bool {
    if envp.is_null() {
        return std::env::var_os(name).is_some_and(|v| v == "0");
    }
    let want = format!("{name}=0");
    // SAFETY: forwarded contract (an environment has the shape of an argv).
    let vars = unsafe { words(envp) };
    let prefix = format!("{name}=");
    // getenv takes the first definition; so do we.
    vars.iter()
        .find(|v| v.starts_with(prefix.as_bytes()))
        .is_some_and(|v| v.as_slice() == want.as_bytes())
}

/// The rewritten argv of an srun call (see [`crate::srun`]), or `None`.
fn srun_rewritten(old: &[Vec<u8>], off: bool) -> Option<Vec<Vec<u8>>> {
    // `DMTCP_SRUN_CONTAGION=0`: the step runs outside the computation.
    if off {
        return None;
    }
    let Some((host, port, bin_dir, tmpdir)) = coordinator() else {
        eprintln!("dmtcp: srun: no coordinator known to this process; the step runs outside the computation");
        return None;
    };
    let t = Remote {
        bin_dir,
        coord_host: host,
        coord_port: port,
        tmpdir,
        plugins: plugins(),
    };
    srun::rewrite(old, &t)
}

/// The rewritten argv of an ssh call (owned strings and the pointer array
/// into them), or `None` to exec the original; with the relay, the program
/// to exec instead of the one asked for.
struct NewArgv {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
    path: Option<CString>,
}

impl NewArgv {
    /// The program to exec: the relay, else the caller's `file`.
    fn file(&self, file: *const c_char) -> *const c_char {
        self.path.as_ref().map_or(file, |p| p.as_ptr())
    }
}

/// The ssh relay of this host (`dmtcp_ssh` next to this library), unless
/// `DMTCP_SSH_RELAY=0` asks for plain contagion or it is not there.
fn relay_binary(off: bool) -> Option<String> {
    if off {
        return None;
    }
    let p = format!("{}/dmtcp_ssh", own_dir()?);
    std::fs::metadata(&p)
        .is_ok_and(|m| m.is_file())
        .then_some(p)
}

/// `search`: the call searches PATH for `file` (execvp, execvpe,
/// posix_spawnp); otherwise a name without a slash is a file in the
/// current directory, and the relay is told so.
///
/// `envp`: the new program's environment, or null for this process's
/// (execv, execvp).
///
/// # Safety
/// `file`, `argv` and `envp` follow exec's contract (see [`words`]).
unsafe fn rewritten(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    search: bool,
) -> Option<NewArgv> {
    // SAFETY: forwarded contract (both names_* only read `file`).
    let (is_ssh, is_srun) = unsafe { (names_ssh(file), names_srun(file)) };
    let mut path = None;
    let new = if is_ssh {
        // `DMTCP_SSH_CONTAGION=0`: ssh runs its remote command as given (git
        // over ssh, say, on hosts without DMTCP).
        // SAFETY: forwarded contract.
        if unsafe { says_zero(envp, "DMTCP_SSH_CONTAGION") } {
            return None;
        }
        // SAFETY: forwarded contract.
        let old = unsafe { words(argv) };
        let r = match remote() {
            Some(r) => r,
            None => {
                eprintln!("dmtcp: ssh: no coordinator known to this process; the remote command runs outside the computation");
                return None;
            }
        };
        // SAFETY: forwarded contract.
        match relay_binary(unsafe { says_zero(envp, "DMTCP_SSH_RELAY") }) {
            Some(relay) => {
                // SAFETY: `file` is non-null (names_ssh said so) and
                // NUL-terminated.
                let mut f = unsafe { CStr::from_ptr(file) }.to_bytes().to_vec();
                if !search && !f.contains(&b'/') {
                    f.splice(0..0, *b"./");
                }
                match ssh::relay_rewrite(&f, &old, &r)? {
                    ssh::Relayed::Relay(v) => {
                        path = Some(CString::new(relay).ok()?);
                        v
                    }
                    ssh::Relayed::Plain(v) => v,
                }
            }
            None => ssh::rewrite(&old, &r)?,
        }
    } else if is_srun {
        // SAFETY: forwarded contract.
        let (old, off) = unsafe { (words(argv), says_zero(envp, "DMTCP_SRUN_CONTAGION")) };
        srun_rewritten(&old, off)?
    } else {
        return None;
    };
    let strings: Vec<CString> = new
        .into_iter()
        .map(|w| CString::new(w).ok())
        .collect::<Option<_>>()?;
    let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    Some(NewArgv {
        _strings: strings,
        ptrs,
        path,
    })
}

static EXECVE: OnceLock<usize> = OnceLock::new();
static EXECV: OnceLock<usize> = OnceLock::new();
static EXECVP: OnceLock<usize> = OnceLock::new();
static EXECVPE: OnceLock<usize> = OnceLock::new();
static SPAWN: OnceLock<usize> = OnceLock::new();
static SPAWNP: OnceLock<usize> = OnceLock::new();

fn no_next() -> c_int {
    crate::sys::set_errno(libc::ENOSYS);
    -1
}

/// Shared body of `execve` and `execvpe`: the next definition of `name`
/// (in `cell`) with plugins' PRE_EXEC and ssh contagion (`search`: `file`
/// is looked up in PATH).
///
/// # Safety
/// exec's contract; `cell`/`name` name a function of type [`ExecveFn`].
unsafe fn execve_like(
    cell: &'static OnceLock<usize>,
    name: &CStr,
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    search: bool,
) -> c_int {
    let f = next(cell, name);
    if f == 0 {
        return no_next();
    }
    // SAFETY: f is glibc's `name`, found by dlsym, of this exact type.
    let real: ExecveFn = unsafe { std::mem::transmute::<usize, ExecveFn>(f) };
    let lifeboat = crate::plugins::pre_exec(file, argv, envp);
    // SAFETY: the caller's pointers follow exec's contract.
    let new = unsafe { rewritten(file, argv, envp, search) };
    // SAFETY: envp follows exec's contract; `env` is it or a patched copy
    // alive for the call.
    let r = unsafe {
        with_env(envp, |env| match &new {
            // SAFETY: new.ptrs is a NULL-terminated array of live strings.
            Some(new) => real(new.file(file), new.ptrs.as_ptr(), env),
            // SAFETY: the caller's arguments, unchanged.
            None => real(file, argv, env),
        })
    };
    crate::plugins::exec_failed(lifeboat);
    r
}

/// `execve(2)` with ssh contagion.
///
/// # Safety
/// exec's contract: NUL-terminated path, NULL-terminated argv and envp.
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: exec's contract, passed on; EXECVE holds glibc's execve.
    unsafe { execve_like(&EXECVE, c"execve", path, argv, envp, false) }
}

/// `execvpe(3)` with ssh contagion.
///
/// # Safety
/// exec's contract.
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: exec's contract, passed on; EXECVPE holds glibc's execvpe.
    unsafe { execve_like(&EXECVPE, c"execvpe", file, argv, envp, true) }
}

/// Shared body of `execv` and `execvp`.
///
/// # Safety
/// exec's contract; `cell`/`name` name a function of type [`ExecvFn`].
unsafe fn execv_like(
    cell: &'static OnceLock<usize>,
    name: &CStr,
    file: *const c_char,
    argv: *const *const c_char,
    search: bool,
) -> c_int {
    let f = next(cell, name);
    if f == 0 {
        return no_next();
    }
    // SAFETY: f is glibc's execv or execvp, of this exact type.
    let real: ExecvFn = unsafe { std::mem::transmute::<usize, ExecvFn>(f) };
    let lifeboat = crate::plugins::pre_exec(file, argv, std::ptr::null());
    // SAFETY: exec's contract.
    let new = unsafe { rewritten(file, argv, std::ptr::null(), search) };
    let (file, argv) = match &new {
        Some(new) => (new.file(file), new.ptrs.as_ptr()),
        None => (file, argv),
    };
    let own = crate::sys::environ();
    // SAFETY: exec's contract for every pointer; the environment is
    // `environ` itself or a patched copy alive for the call.
    let r = unsafe {
        with_env(own, |env| {
            if env == own {
                return real(file, argv);
            }
            // The same call with the patched environment: execve for
            // execv, execvpe for execvp.
            let (cell, name) = if search {
                (&EXECVPE, c"execvpe")
            } else {
                (&EXECVE, c"execve")
            };
            match next(cell, name) {
                0 => real(file, argv),
                // SAFETY: glibc's execve or execvpe, of this exact type.
                f => std::mem::transmute::<usize, ExecveFn>(f)(file, argv, env),
            }
        })
    };
    crate::plugins::exec_failed(lifeboat);
    r
}

/// `execv(3)` with ssh contagion.
///
/// # Safety
/// exec's contract.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: forwarded contract; execv has the ExecvFn type.
    unsafe { execv_like(&EXECV, c"execv", path, argv, false) }
}

/// `execvp(3)` with ssh contagion.
///
/// # Safety
/// exec's contract.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: forwarded contract; execvp has the ExecvFn type.
    unsafe { execv_like(&EXECVP, c"execvp", file, argv, true) }
}

/// Shared body of `posix_spawn` and `posix_spawnp` (the C signature's
/// arguments, hence their number).
///
/// # Safety
/// posix_spawn's contract; `cell`/`name` name a function of type [`SpawnFn`].
#[allow(clippy::too_many_arguments)]
unsafe fn spawn_like(
    cell: &'static OnceLock<usize>,
    name: &CStr,
    pid: *mut libc::pid_t,
    file: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
    search: bool,
) -> c_int {
    let f = next(cell, name);
    if f == 0 {
        return libc::ENOSYS;
    }
    // SAFETY: f is glibc's posix_spawn or posix_spawnp, of this type (the
    // action and attribute pointers are passed through opaque).
    let real: SpawnFn = unsafe { std::mem::transmute::<usize, SpawnFn>(f) };
    crate::vpid::skip_known_pids();
    let e = crate::vpid::epoch();
    // SAFETY: argv and file follow exec's contract.
    let new = unsafe { rewritten(file, argv, envp, search) };
    // SAFETY: envp follows exec's contract; `env` is it or a patched copy
    // alive for the call.
    let r = unsafe {
        with_env(envp, |env| match &new {
            // SAFETY: NULL-terminated array of live strings; the rest unchanged.
            Some(new) => real(pid, new.file(file), actions, attr, new.ptrs.as_ptr(), env),
            // SAFETY: the caller's arguments, unchanged.
            None => real(pid, file, actions, attr, argv, env),
        })
    };
    if r == 0 && !pid.is_null() {
        // SAFETY: the call wrote the child's pid to the caller's pointer.
        unsafe { *pid = crate::vpid::virt_since(e, *pid) };
    }
    r
}

/// `posix_spawn(3)` with ssh contagion.
///
/// # Safety
/// posix_spawn's contract.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        spawn_like(
            &SPAWN,
            c"posix_spawn",
            pid,
            path,
            actions,
            attr,
            argv,
            envp,
            false,
        )
    }
}

/// `posix_spawnp(3)` with ssh contagion.
///
/// # Safety
/// posix_spawn's contract.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        spawn_like(
            &SPAWNP,
            c"posix_spawnp",
            pid,
            file,
            actions,
            attr,
            argv,
            envp,
            true,
        )
    }
}
