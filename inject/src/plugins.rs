//! Plugins: registration, the hook thread and event dispatch.
//!
//! Plugins are preloaded after this library (`LD_PRELOAD=libdmtcp_inject.so:
//! A.so:B.so`, set by dmtcp-run), so their wrappers nest in load order. The
//! constructor calls the first `dmtcp_initialize_plugin` (each
//! `DMTCP_DECL_PLUGIN` registers its descriptor and calls the next) and
//! looks up the first `dmtcp_process_event` (older generation). With no
//! plugin nothing else happens: no thread, no pipe, no handler.
//!
//! With plugins, a hook thread (all signals blocked) waits on a request
//! pipe whose ends, with the thread's tid, are written into the state page's
//! hook area. The supervisor steals the pipe ends (`pidfd_getfd`), asks for a
//! moment (PRESUSPEND while the program runs; PRECHECKPOINT, RESUME and
//! RESTART while every other thread is stopped) and reads the replies:
//! which plugin's hook starts, barriers, done. `docs/plugins.md` has the
//! guarantees, `docs/architecture.md` the supervisor's side.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

use crate::abi::hook;
use crate::state;
use crate::sys::{self, HookFn};

/// `DmtcpPluginDescriptor_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Descriptor {
    pub plugin_api_version: *const c_char,
    pub dmtcp_version: *const c_char,
    pub plugin_name: *const c_char,
    pub author_name: *const c_char,
    pub author_email: *const c_char,
    pub description: *const c_char,
    pub event_hook: Option<HookFn>,
}

/// `DmtcpEventData_t`: a 64-byte union; the members used here start with
/// an `int isRestart`.
#[repr(C, align(8))]
pub struct EventData([u8; 64]);

impl EventData {
    fn with_restart(is_restart: bool) -> EventData {
        let mut d = EventData([0; 64]);
        d.0[..4].copy_from_slice(&i32::from(is_restart).to_ne_bytes());
        d
    }
}

/// The plugin interface generation this library accepts.
pub const PLUGIN_API_VERSION: &str = "3";

/// Event numbers of `dmtcp.h` (`DmtcpEvent_t`).
pub mod ev {
    pub const INIT: u32 = 0;
    pub const EXIT: u32 = 1;
    pub const PRE_EXEC: u32 = 2;
    pub const POST_EXEC: u32 = 3;
    pub const ATFORK_PREPARE: u32 = 4;
    pub const ATFORK_PARENT: u32 = 5;
    pub const ATFORK_CHILD: u32 = 6;
    pub const PTHREAD_START: u32 = 12;
    pub const PTHREAD_EXIT: u32 = 13;
    pub const PTHREAD_RETURN: u32 = 14;
    pub const PRESUSPEND: u32 = 15;
    pub const PRECHECKPOINT: u32 = 16;
    pub const RESUME: u32 = 17;
    pub const RESTART: u32 = 18;
    pub const RUNNING: u32 = 19;
    pub const WAIT_FOR_SUSPEND_MSG: u32 = 64;
    pub const THREADS_SUSPEND: u32 = 65;
    pub const SUSPENDED: u32 = 66;
    pub const LEADER_ELECTION: u32 = 67;
    pub const DRAIN: u32 = 68;
    pub const WRITE_CKPT: u32 = 69;
    pub const REFILL: u32 = 70;
    pub const REGISTER_NAME_SERVICE_DATA: u32 = 71;
    pub const SEND_QUERIES: u32 = 72;
    pub const THREADS_RESUME: u32 = 73;

    pub fn name(e: u32) -> &'static str {
        match e {
            INIT => "DMTCP_EVENT_INIT",
            EXIT => "DMTCP_EVENT_EXIT",
            PRE_EXEC => "DMTCP_EVENT_PRE_EXEC",
            POST_EXEC => "DMTCP_EVENT_POST_EXEC",
            PTHREAD_START => "DMTCP_EVENT_PTHREAD_START",
            PTHREAD_EXIT => "DMTCP_EVENT_PTHREAD_EXIT",
            PTHREAD_RETURN => "DMTCP_EVENT_PTHREAD_RETURN",
            ATFORK_PREPARE => "DMTCP_EVENT_ATFORK_PREPARE",
            ATFORK_PARENT => "DMTCP_EVENT_ATFORK_PARENT",
            ATFORK_CHILD => "DMTCP_EVENT_ATFORK_CHILD",
            PRESUSPEND => "DMTCP_EVENT_PRESUSPEND",
            PRECHECKPOINT => "DMTCP_EVENT_PRECHECKPOINT",
            RESUME => "DMTCP_EVENT_RESUME",
            RESTART => "DMTCP_EVENT_RESTART",
            RUNNING => "DMTCP_EVENT_RUNNING",
            WAIT_FOR_SUSPEND_MSG => "DMTCP_EVENT_WAIT_FOR_SUSPEND_MSG",
            THREADS_SUSPEND => "DMTCP_EVENT_THREADS_SUSPEND",
            SUSPENDED => "DMTCP_EVENT_SUSPENDED",
            LEADER_ELECTION => "DMTCP_EVENT_LEADER_ELECTION",
            DRAIN => "DMTCP_EVENT_DRAIN",
            WRITE_CKPT => "DMTCP_EVENT_WRITE_CKPT",
            REFILL => "DMTCP_EVENT_REFILL",
            REGISTER_NAME_SERVICE_DATA => "DMTCP_EVENT_REGISTER_NAME_SERVICE_DATA",
            SEND_QUERIES => "DMTCP_EVENT_SEND_QUERIES",
            THREADS_RESUME => "DMTCP_EVENT_THREADS_RESUME",
            _ => "DMTCP_EVENT_?",
        }
    }
}

/// One registered plugin of the current generation.
#[derive(Clone)]
struct Plugin {
    name: String,
    hook: Option<HookFn>,
    /// Events (bit n = event n < 64) the hook wants.
    mask: u64,
}

/// Everything known about this process's plugins.
#[derive(Clone, Default)]
struct Registry {
    plugins: Vec<Plugin>,
    /// Registrations refused (incompatible API version): messages.
    refused: Vec<String>,
    /// The first `dmtcp_process_event` and the object it is in.
    chain: Option<(HookFn, String)>,
}

impl Registry {
    fn is_empty(&self) -> bool {
        self.plugins.is_empty() && self.chain.is_none()
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    plugins: Vec::new(),
    refused: Vec::new(),
    chain: None,
});
/// The hook machinery runs and INIT was delivered: a plugin registering
/// later gets INIT at once.
static INITIALIZED: AtomicBool = AtomicBool::new(false);
/// The constructor has run (a registration after it comes from a plugin
/// loaded at run time).
static CONSTRUCTED: AtomicBool = AtomicBool::new(false);
/// The pipes' ends in this process (-1: no hook thread).
static REQ_RD: AtomicI32 = AtomicI32::new(-1);
static REQ_WR: AtomicI32 = AtomicI32::new(-1);
static REP_RD: AtomicI32 = AtomicI32::new(-1);
static REP_WR: AtomicI32 = AtomicI32::new(-1);

/// This process's pid, set when the machinery starts and in a forked
/// child: an exec wrapper called with another pid runs in a `vfork` child
/// (sharing our memory), where no hook may run.
static OUR_PID: AtomicI32 = AtomicI32::new(0);

/// The environment of the last `dmtcp-restart` (`REQ_ENV`).
static RESTART_ENV: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// `NAME=value` entries of `dmtcp-restart`'s environment, if this process
/// was restarted with plugins.
pub fn restart_env() -> Option<Vec<u8>> {
    RESTART_ENV
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

thread_local! {
    /// This thread runs a supervisor-driven moment (barriers allowed).
    static IN_MOMENT: Cell<bool> = const { Cell::new(false) };
    /// This thread is creating the hook thread (no thread events for it).
    static MAKING_HOOK_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn registry() -> Registry {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether this process has plugins.
pub fn active() -> bool {
    !registry().is_empty()
}

/// Whether the calling thread is the hook thread inside a moment.
pub fn in_moment() -> bool {
    IN_MOMENT.with(Cell::get)
}

/// `dmtcp_register_plugin`: keeps the descriptor (refusing another API
/// generation, which the plugin check reports before the program starts).
#[no_mangle]
pub extern "C" fn dmtcp_register_plugin(d: Descriptor) {
    register(d, u64::MAX);
}

/// `dmtcp_register_plugin_events` (this project's extension): like
/// `dmtcp_register_plugin`, but the hook is called only for the events of
/// `mask` (bit n = event n). Language bindings use it to stay out of the
/// moments when user threads are stopped (a stopped thread may hold their
/// interpreter lock).
#[no_mangle]
pub extern "C" fn dmtcp_register_plugin_events(d: Descriptor, mask: u64) {
    register(d, mask);
}

fn register(d: Descriptor, mask: u64) {
    let name = sys::c_str_opt(d.plugin_name)
        .filter(|n| !n.is_empty())
        .or_else(|| {
            d.event_hook
                .and_then(|h| sys::object_of(h as *const c_void))
        })
        .unwrap_or_else(|| "unnamed plugin".into());
    let api = sys::c_str_opt(d.plugin_api_version).unwrap_or_default();
    let name = match d
        .event_hook
        .and_then(|h| sys::object_of(h as *const c_void))
    {
        Some(obj) if obj != name => format!("{name} ({obj})"),
        _ => name,
    };
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if api.split('.').next() != Some(PLUGIN_API_VERSION) {
        r.refused.push(format!(
            "plugin {name}: pluginApiVersion \"{api}\" is not supported (this DMTCP implements \"{PLUGIN_API_VERSION}\")"
        ));
        return;
    }
    let p = Plugin {
        name,
        hook: d.event_hook,
        mask,
    };
    r.plugins.push(p.clone());
    drop(r);
    if INITIALIZED.load(Ordering::Acquire) {
        call_one(&p, ev::INIT, &mut EventData::with_restart(false));
    } else if CONSTRUCTED.load(Ordering::Acquire) {
        // Registered at run time (the Python module, a dlopen'd plugin):
        // the first such plugin starts what the constructor skipped.
        start_machinery();
        call_one(&p, ev::INIT, &mut EventData::with_restart(false));
    }
}

/// The hook thread, the fork and exit handlers; once per process image.
fn start_machinery() {
    if INITIALIZED.swap(true, Ordering::AcqRel) {
        return;
    }
    OUR_PID.store(sys::getpid(), Ordering::Release);
    if let Err(e) = start_hook_thread() {
        eprintln!("libdmtcp_inject: plugins will not see checkpoints: {e}");
    }
    sys::at_fork(on_fork_prepare, on_fork_parent, on_fork_child);
    sys::at_exit(on_exit);
}

fn wants(p: &Plugin, e: u32) -> bool {
    p.hook.is_some() && (e >= 64 || p.mask & (1u64 << e) != 0)
}

fn call_one(p: &Plugin, e: u32, data: &mut EventData) {
    if !wants(p, e) {
        return;
    }
    if let Some(h) = p.hook {
        h(e, (data as *mut EventData).cast());
    }
}

/// Registers the plugins of the process (constructor).
fn register_all() {
    if let Some(init) = sys::plugin_init_chain() {
        init();
    }
    if let Some(f) = sys::process_event_chain() {
        let obj = sys::object_of(f as *const c_void).unwrap_or_else(|| "program".into());
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).chain = Some((f, obj));
    }
}

/// Plugin check (`dmtcp-run` runs its own binary with the plugins
/// preloaded, `LD_BIND_NOW=1` and `DMTCP_PLUGIN_CHECK=A.so:B.so` before
/// starting the program): checks each was loaded, registers them, prints one line per problem and exits 1, else exits 0.
pub fn check_mode() {
    let Ok(list) = std::env::var("DMTCP_PLUGIN_CHECK") else {
        return;
    };
    for path in list.split(':').filter(|p| !p.is_empty()) {
        // Preloaded (LD_PRELOAD) like in the real run; the loader only
        // warns about one it could not load: say why, from dlopen.
        if sys::is_loaded(path) {
            continue;
        }
        if let Err(e) = sys::dlopen_global(path) {
            eprintln!("plugin {path}: cannot be loaded: {e}");
            sys::exit_now(1);
        }
    }
    register_all();
    let r = registry();
    if let Some(first) = r.refused.first() {
        eprintln!("{first}");
        sys::exit_now(1);
    }
    sys::exit_now(0);
}

/// Constructor: registers the plugins; with some, starts the hook thread,
/// installs the fork and exit handlers and delivers INIT.
pub fn init() {
    register_all();
    let r = registry();
    for m in &r.refused {
        eprintln!("libdmtcp_inject: {m}; not loaded");
    }
    CONSTRUCTED.store(true, Ordering::Release);
    if r.is_empty() || is_tool_relay() {
        return;
    }
    start_machinery();
    dispatch(ev::INIT, false);
    post_exec();
}

/// The tool's own ssh relays (`dmtcp_ssh`, `dmtcp_sshd`) belong to the
/// computation but are not the program: the plugins the program's
/// processes load (inherited through `LD_PRELOAD`) get no events there, so
/// a plugin sees the same processes with and without the relay.
fn is_tool_relay() -> bool {
    std::fs::read_link("/proc/self/exe").is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|n| n == "dmtcp_ssh" || n == "dmtcp_sshd")
    })
}

/// Thread events are delivered: plugins run here (one atomic load: a
/// process without plugins pays nothing more in its `pthread_create`).
pub fn wants_thread_events() -> bool {
    INITIALIZED.load(Ordering::Acquire) && !MAKING_HOOK_THREAD.with(Cell::get)
}

/// `DMTCP_EVENT_PTHREAD_*` in the calling thread.
pub fn thread_event(e: u32) {
    dispatch(e, false);
}

/// Name of the exec lifeboat of process `pid` (a memfd that survives
/// exec: plugins write to it at PRE_EXEC and read it at POST_EXEC).
fn lifeboat_name(pid: i32) -> String {
    format!("dmtcp_lifeboat:{pid}")
}

/// `DMTCP_EVENT_PRE_EXEC`, from the exec wrappers, before the C library's
/// exec: with plugins and outside a vfork child, makes the lifeboat and
/// calls the hooks with `preExec` (its fd, the file, argv and envp).
/// Returns the lifeboat, for [`exec_failed`]. Nothing without plugins.
pub fn pre_exec(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Option<i32> {
    if !INITIALIZED.load(Ordering::Acquire) || OUR_PID.load(Ordering::Acquire) != sys::getpid() {
        return None;
    }
    let name = std::ffi::CString::new(lifeboat_name(sys::getpid())).ok()?;
    let fd = match sys::memfd_keep_on_exec(&name) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("libdmtcp_inject: exec: no lifeboat for plugins: {e}");
            return None;
        }
    };
    let envp = if envp.is_null() { sys::environ() } else { envp };
    let count = |v: *const *const c_char| -> usize {
        let mut n = 0;
        while !v.is_null() && sys::array_entry(v, n).is_some() {
            n += 1;
        }
        n
    };
    let mut d = EventData([0; 64]);
    d.0[..4].copy_from_slice(&fd.to_ne_bytes());
    d.0[8..16].copy_from_slice(&(file as usize).to_ne_bytes());
    d.0[16..24].copy_from_slice(&count(argv).to_ne_bytes());
    d.0[24..32].copy_from_slice(&(argv as usize).to_ne_bytes());
    d.0[32..40].copy_from_slice(&count(envp).to_ne_bytes());
    d.0[40..48].copy_from_slice(&(envp as usize).to_ne_bytes());
    dispatch_data(ev::PRE_EXEC, &mut d);
    sys::rewind(fd);
    Some(fd)
}

/// The exec did not happen: the lifeboat goes.
pub fn exec_failed(lifeboat: Option<i32>) {
    if let Some(fd) = lifeboat {
        sys::close(fd);
    }
}

/// `DMTCP_EVENT_POST_EXEC` in a new image whose previous one (this pid)
/// left a lifeboat: after INIT, with `postExec.serializationFd`; then the
/// lifeboat is closed.
fn post_exec() {
    let want = lifeboat_name(sys::getpid());
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if t.strip_prefix("/memfd:")
            .is_some_and(|r| r.strip_suffix(" (deleted)").unwrap_or(r) == want)
        {
            sys::rewind(fd);
            let mut d = EventData([0; 64]);
            d.0[..4].copy_from_slice(&fd.to_ne_bytes());
            dispatch_data(ev::POST_EXEC, &mut d);
            sys::close(fd);
            return;
        }
    }
}

/// One event with its data, to every plugin (load order) and the older
/// generation's chain.
fn dispatch_data(e: u32, d: &mut EventData) {
    let r = registry();
    for p in &r.plugins {
        call_one(p, e, d);
    }
    if let Some((f, _)) = r.chain {
        f(e, (d as *mut EventData).cast());
    }
}

/// Delivers one event in the calling thread: to every plugin of the current
/// generation (load order; reverse order for RESUME, RESTART and RUNNING,
/// so the first loaded is the last to resume), then to the older
/// generation's chain. `report`: say to the supervisor which hook runs.
fn dispatch_with(e: u32, is_restart: bool, report: bool) {
    let r = registry();
    let mut order: Vec<&Plugin> = r.plugins.iter().collect();
    if matches!(e, ev::RESUME | ev::RESTART | ev::RUNNING) {
        order.reverse();
    }
    for p in order {
        if !wants(p, e) {
            continue;
        }
        if report {
            reply(hook::REP_START, &format!("{} {}", p.name, ev::name(e)));
        }
        call_one(p, e, &mut EventData::with_restart(is_restart));
    }
}

fn dispatch(e: u32, is_restart: bool) {
    dispatch_with(e, is_restart, false);
    dispatch_old(e, is_restart, false);
}

/// The older generation's chain for one event.
fn dispatch_old(e: u32, is_restart: bool, report: bool) {
    let Some((f, obj)) = registry().chain else {
        return;
    };
    if report {
        reply(hook::REP_START, &format!("{obj} {}", ev::name(e)));
    }
    f(
        e,
        (&mut EventData::with_restart(is_restart) as *mut EventData).cast(),
    );
}

/// Runs one supervisor-driven moment in the hook thread.
fn run_moment(m: u32) {
    let restart = m == hook::MOMENT_RESTART;
    let (now, old): (u32, &[u32]) = match m {
        hook::MOMENT_PRESUSPEND => (ev::PRESUSPEND, &[ev::WAIT_FOR_SUSPEND_MSG]),
        hook::MOMENT_PRECHECKPOINT => (
            ev::PRECHECKPOINT,
            &[
                ev::THREADS_SUSPEND,
                ev::SUSPENDED,
                ev::LEADER_ELECTION,
                ev::DRAIN,
                ev::WRITE_CKPT,
            ],
        ),
        hook::MOMENT_RESUME => (ev::RESUME, &[ev::REFILL, ev::THREADS_RESUME]),
        hook::MOMENT_RESTART => (
            ev::RESTART,
            &[
                ev::REFILL,
                ev::REGISTER_NAME_SERVICE_DATA,
                ev::SEND_QUERIES,
                ev::THREADS_RESUME,
            ],
        ),
        other => {
            reply(hook::REP_ERROR, &format!("unknown moment {other}"));
            return;
        }
    };
    if let Some(st) = state::page() {
        st.hook_busy.store(1, Ordering::Release);
    }
    IN_MOMENT.with(|c| c.set(true));
    dispatch_with(now, restart, true);
    let has_old = registry().chain.is_some();
    if has_old {
        if matches!(m, hook::MOMENT_RESUME | hook::MOMENT_RESTART) {
            dispatch_old(now, restart, true);
        }
        for &e in old {
            if e == ev::SEND_QUERIES {
                // Publishing and querying are separated by a barrier.
                barrier("dmtcp:name-service");
            }
            dispatch_old(e, restart, true);
        }
    }
    IN_MOMENT.with(|c| c.set(false));
    match m {
        hook::MOMENT_PRESUSPEND => crate::coord::drop_kv(true),
        hook::MOMENT_PRECHECKPOINT => crate::coord::drop_kv(false),
        _ => {}
    }
    if let Some(st) = state::page() {
        st.hook_busy.store(0, Ordering::Release);
    }
    reply(hook::REP_DONE, "");
}

fn reply(kind: u32, text: &str) {
    let fd = REP_WR.load(Ordering::Acquire);
    if fd < 0 || !sys::is_pipe_end(fd, true) {
        return;
    }
    let t = text.as_bytes();
    let t = &t[..t.len().min(hook::MAX_TEXT)];
    let mut msg = Vec::with_capacity(8 + t.len());
    msg.extend_from_slice(&kind.to_le_bytes());
    msg.extend_from_slice(&(t.len() as u32).to_le_bytes());
    msg.extend_from_slice(t);
    let _ = sys::write_all(fd, &msg);
}

fn read_request() -> std::io::Result<(u32, u32)> {
    let mut b = [0u8; 8];
    let fd = REQ_RD.load(Ordering::Acquire);
    // The program may have closed our pipe and got its number for a file
    // or socket of its own (ssh closes every fd above 2 at start): never
    // read its data.
    if !sys::is_pipe_end(fd, false) {
        return Err(std::io::ErrorKind::NotConnected.into());
    }
    sys::read_exact(fd, &mut b)?;
    let kind = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let arg = u32::from_le_bytes(b[4..].try_into().expect("4 bytes"));
    Ok((kind, arg))
}

/// A barrier inside a moment: tells the supervisor and waits for its go
/// (every process with plugins reached it). -1 outside a moment.
pub fn barrier(name: &str) -> i32 {
    if !in_moment() {
        return -1;
    }
    reply(hook::REP_BARRIER, name);
    loop {
        match read_request() {
            Ok((hook::REQ_GO, _)) => return 0,
            Ok((hook::REQ_RUNNING, _)) => continue,
            Ok(_) => continue,
            Err(_) => return -1,
        }
    }
}

fn hook_thread_main(rd: i32) {
    sys::block_all_signals();
    if let Some(st) = state::page() {
        st.hook_tid.store(sys::gettid(), Ordering::Release);
    }
    loop {
        if REQ_RD.load(Ordering::Acquire) != rd {
            return; // replaced (after fork)
        }
        match read_request() {
            Ok((hook::REQ_RUN, m)) => run_moment(m),
            Ok((hook::REQ_ENV, len)) => {
                let mut b = vec![0u8; (len as usize).min(hook::MAX_ENV)];
                if sys::read_exact(rd, &mut b).is_err() {
                    return;
                }
                *RESTART_ENV.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
            }
            Ok((hook::REQ_RUNNING, _)) => dispatch(ev::RUNNING, false),
            Ok(_) => {}
            Err(_) => {
                // The pipe is gone (closed by the program, or EOF): the
                // supervisor must not use its fd numbers any more.
                if REQ_RD.load(Ordering::Acquire) == rd {
                    if let Some(st) = state::page() {
                        st.hook_version.store(0, Ordering::Release);
                    }
                }
                return;
            }
        }
    }
}

/// Creates the pipes, publishes them in the state page and starts the
/// thread.
fn start_hook_thread() -> std::io::Result<()> {
    let (req_rd, req_wr) = sys::pipe_cloexec_high()?;
    let (rep_rd, rep_wr) = match sys::pipe_cloexec_high() {
        Ok(p) => p,
        Err(e) => {
            sys::close(req_rd);
            sys::close(req_wr);
            return Err(e);
        }
    };
    REQ_RD.store(req_rd, Ordering::Release);
    REQ_WR.store(req_wr, Ordering::Release);
    REP_RD.store(rep_rd, Ordering::Release);
    REP_WR.store(rep_wr, Ordering::Release);
    if let Some(st) = state::page() {
        st.hook_tid.store(0, Ordering::Release);
        st.hook_req_fd.store(req_wr, Ordering::Release);
        st.hook_reply_fd.store(rep_rd, Ordering::Release);
        st.hook_plugins.store(
            {
                let r = registry();
                (r.plugins.len() + usize::from(r.chain.is_some())) as u32
            },
            Ordering::Release,
        );
    }
    MAKING_HOOK_THREAD.with(|c| c.set(true));
    let spawned = std::thread::Builder::new()
        .name("dmtcp_hooks".into())
        .spawn(move || hook_thread_main(req_rd));
    MAKING_HOOK_THREAD.with(|c| c.set(false));
    spawned?;
    // The supervisor uses the area once the thread has said its tid.
    if let Some(st) = state::page() {
        for _ in 0..1000 {
            if st.hook_tid.load(Ordering::Acquire) != 0 {
                break;
            }
            std::thread::yield_now();
        }
        st.hook_version
            .store(crate::abi::HOOK_VERSION, Ordering::Release);
    }
    Ok(())
}

extern "C" fn on_fork_prepare() {
    dispatch(ev::ATFORK_PREPARE, false);
}

extern "C" fn on_fork_parent() {
    dispatch(ev::ATFORK_PARENT, false);
}

/// In the child: the hook thread did not survive the fork; a new one with
/// pipes of its own (the parent's stay the parent's).
extern "C" fn on_fork_child() {
    for fd in [&REQ_RD, &REQ_WR, &REP_RD, &REP_WR] {
        let old = fd.swap(-1, Ordering::AcqRel);
        if old >= 0 {
            sys::close(old);
        }
    }
    OUR_PID.store(sys::getpid(), Ordering::Release);
    if let Some(st) = state::page() {
        st.hook_version.store(0, Ordering::Release);
        // Forked while the parent's hooks ran: none runs here.
        st.hook_busy.store(0, Ordering::Release);
    }
    if let Err(e) = start_hook_thread() {
        eprintln!("libdmtcp_inject: forked child: plugins will not see checkpoints: {e}");
    }
    dispatch(ev::ATFORK_CHILD, false);
}

extern "C" fn on_exit() {
    dispatch(ev::EXIT, false);
}

/// `dmtcp_is_running_state`: no moment runs in this process.
pub fn running_state() -> bool {
    state::page().is_none_or(|st| st.hook_busy.load(Ordering::Acquire) == 0)
}
