//! `dmtcp-nsinit`: pid 1 of a computation's pid namespace.
//!
//! It is not part of any checkpoint. It starts the target program (launch) or
//! creates "shell" processes with their original pids that the restorer then
//! turns into the saved processes (restart), reaps orphans, and exits with the
//! root process's status once the last process of the namespace has ended
//! (processes that outlive the root stay in the computation).
//! It talks to its supervisor over one control socket (`DMTCP_NSINIT_FD`),
//! with the same frames as the coordinator protocol.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use dmtcp_image::FdEntry;
use serde::{Deserialize, Serialize};

use crate::kernel::pid::VirtPid;
pub use crate::resources::memory::ParkedMemory;

/// What the supervisor asks of nsinit (one request per namespace).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum InitRequest {
    /// Run `argv` (PATH search) with `preload` added to `LD_PRELOAD`.
    Launch {
        argv: Vec<Vec<u8>>,
        preload: Option<String>,
        /// `--sandbox`: the BPF program installed (with `no_new_privs`)
        /// in the program's process just before the exec.
        seccomp: Option<Vec<u8>>,
        /// `--net=none`: a network namespace with only loopback.
        net_none: bool,
        /// `--allow-read`, `--allow-write`: a Landlock domain made in the
        /// program's process just before the exec.
        landlock: Option<(Vec<String>, Vec<String>)>,
    },
    /// Create one parked shell per plan, each with its original pid.
    /// Shared anonymous memory objects are mapped first (at the given
    /// parking addresses) so every shell inherits the same objects.
    ///
    /// With `ipc`, the SysV IPC objects to recreate (with their ids) follow
    /// the frame on the stream (`sysvipc::send`); they are created first.
    ///
    /// With `clocks`, CLOCK_MONOTONIC and CLOCK_BOOTTIME of the restored
    /// processes go on from these values (their time namespace's offsets).
    Restore {
        shells: Vec<ShellPlan>,
        shared_memory: Vec<ParkedMemory>,
        ipc: bool,
        clocks: Option<dmtcp_image::Clocks>,
        /// `--net=none` at launch: the same private network again.
        net_none: bool,
    },
    /// Later requests, once the computation runs: list the SysV IPC objects
    /// of the namespace with their contents (answered by `InitReply::Ipc`
    /// followed by the state on the stream).
    DumpIpc,
    /// Remove these shared memory segments (`IPC_RMID`): they had been
    /// removed while attached, and the restored processes hold them again.
    RemoveShm { ids: Vec<i32> },
    /// While on, the computation must not outlive the supervisor: if the
    /// control socket closes, nsinit exits and takes the namespace down.
    /// On while a lazy restore still holds pages only the supervisor can
    /// bring in.
    Lifeline(bool),
    /// Who the computation is, kept for a supervisor that adopts it after
    /// its own died (answered by `Done`).
    Identity(Identity),
    /// Asked by an adopting supervisor: answered by `InitReply::Identity`.
    WhoAreYou,
}

/// What an adopting supervisor needs to go on as the dead one's successor:
/// the computation it belongs to and its launch id (so images keep their
/// names and the restart sees one launch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub computation: String,
    pub launch: String,
    /// The computation runs without namespaces (virtual pids): the
    /// successor reads the pid table back from the processes.
    pub virtual_pids: bool,
}

/// The part of a process a shell sets up in ordinary code before the
/// restorer takes it over through ptrace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShellPlan {
    pub vpid: u32,
    /// Parent, process group and session as the process saw them (0: outside
    /// the namespace).
    pub vppid: u32,
    pub vpgid: u32,
    pub vsid: u32,
    /// A zombie: the shell dies at once with this wait status.
    pub zombie: Option<i32>,
    /// The process's name (a zombie keeps it: `ps` and the next
    /// checkpoint see it, not the shell's).
    #[serde(default)]
    pub comm: String,
    pub cwd: String,
    pub umask: u32,
    pub rlimits: Vec<(u32, u64, u64)>,
    pub fds: Vec<FdEntry>,
    /// A session leader whose controlling terminal was a pty of the
    /// computation: that pty's pts number at checkpoint.
    pub ctty_pty: Option<u32>,
    /// Root restarting another user's image: the files of this process
    /// (its fds, its cwd, the files it maps) are opened with that user's
    /// access, never root's (`restart::creds::Granted::open_as`).
    pub open_as: Option<crate::restart::creds::OpenAs>,
    /// Fds whose socket gets `SO_PASSCRED` again (image format 2.5).
    pub passcred_fds: Vec<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum InitReply {
    Launched {
        vpid: i32,
    },
    ShellsReady {
        vpids: Vec<i32>,
        /// Without namespaces: (pid in the image, kernel pid) of every
        /// shell; empty otherwise (each shell has its image's pid).
        real: Vec<(u32, i32)>,
    },
    Failed(String),
    /// The IPC state follows on the stream (`sysvipc::send`).
    Ipc,
    Done,
    /// Who the computation is (`None`: never told).
    Identity(Option<Identity>),
}

/// Exit status nsinit uses when the root process was killed by a signal.
pub fn exit_code_for(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Entry point of the `dmtcp-nsinit` binary.
pub fn main() -> ! {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dmtcp-nsinit: {e}");
            125
        }
    };
    std::process::exit(code)
}

fn run() -> io::Result<i32> {
    let fd: RawFd = std::env::var(crate::roles::spawn::NSINIT_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            io::Error::other("DMTCP_NSINIT_FD not set: run through dmtcp-run or dmtcp-restart")
        })?;
    std::env::remove_var(crate::roles::spawn::NSINIT_FD_ENV);
    let host_pids = std::env::var_os(crate::roles::spawn::NSINIT_HOST_PIDS_ENV).is_some();
    std::env::remove_var(crate::roles::spawn::NSINIT_HOST_PIDS_ENV);
    if std::env::var_os(crate::roles::spawn::NSINIT_VIRTUAL_ENV).is_some() {
        crate::kernel::pid::virt::enable();
    }
    std::env::remove_var(crate::roles::spawn::NSINIT_VIRTUAL_ENV);
    if host_pids {
        // `dmtcp-restart --no-pidns`: no namespace of our own, so not pid 1;
        // orphans of the computation come to us all the same.
        crate::kernel::sys::set_child_subreaper()?;
    } else if let Err(e) = crate::kernel::nsview::mount_private_proc() {
        // Our own mount namespace: a /proc of the computation's pid namespace.
        eprintln!("dmtcp-nsinit: warning: /proc stays the host's: {e}");
    }
    // SAFETY: the supervisor passed us this fd as our control socket and
    // nothing else in this process owns it.
    let mut ctrl = unsafe { UnixStream::from_raw_fd(fd) };
    crate::kernel::sys::set_cloexec(fd)?;
    let req: InitRequest = dmtcp_protocol::read_local_frame(&mut ctrl)
        .map_err(|e| io::Error::other(format!("control socket: {e}")))?;
    // A time namespace of the computation's own, entered by our children:
    // at restart, its clocks go on from the checkpoint's.
    let clocks = match &req {
        InitRequest::Restore { clocks, .. } => *clocks,
        _ => None,
    };
    let net_none = match &req {
        InitRequest::Restore { net_none, .. } | InitRequest::Launch { net_none, .. } => *net_none,
        _ => false,
    };
    if net_none {
        if let Err(e) = crate::kernel::sys::private_network_with_loopback() {
            let msg = format!("--net=none: {e}");
            let _ = dmtcp_protocol::write_local_frame(&mut ctrl, &InitReply::Failed(msg));
            return Err(io::Error::other("--net=none failed"));
        }
    }
    // Without namespaces, none: unprivileged, it could not be made (the
    // clocks jump at restart).
    if crate::kernel::pid::virt::enabled() {
    } else if let Err(e) = crate::kernel::nsview::enter_new_time_namespace(clocks) {
        eprintln!("dmtcp-nsinit: warning: no time namespace, clocks will jump at restart: {e}");
    }
    let (reply, root) = match req {
        InitRequest::Launch {
            argv,
            preload,
            seccomp,
            landlock,
            ..
        } => match launch(
            &argv,
            preload.as_deref(),
            seccomp.as_deref(),
            landlock.as_ref(),
        ) {
            Ok(pid) => (InitReply::Launched { vpid: pid }, Some(pid)),
            Err(e) => (InitReply::Failed(e.to_string()), None),
        },
        InitRequest::Restore {
            shells,
            shared_memory,
            ipc,
            ..
        } => match recreate_ipc(&mut ctrl, ipc).and_then(|()| make_shells(&shells, &shared_memory))
        {
            Ok((pids, real)) => {
                let root = pids.first().copied();
                (InitReply::ShellsReady { vpids: pids, real }, root)
            }
            Err(e) => (InitReply::Failed(e.to_string()), None),
        },
        other => (
            InitReply::Failed(format!("unexpected first request {other:?}")),
            None,
        ),
    };
    dmtcp_protocol::write_local_frame(&mut ctrl, &reply)
        .map_err(|e| io::Error::other(format!("control socket: {e}")))?;
    let Some(root) = root else { return Ok(127) };
    Ok(serve_and_reap(root, ctrl))
}

/// Reaps every child (orphans included) until none is left, answering the
/// supervisor's requests meanwhile; returns the root's exit code.
///
/// One thread only: a thread of ours would take a pid in the namespace
/// that a restored process or thread may need. SIGCHLD is blocked and read
/// from a signalfd, polled together with the control socket.
fn serve_and_reap(root: i32, ctrl: UnixStream) -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsRawFd;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let sfd = mask.thread_block().ok().and_then(|()| {
        SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok()
    });
    let Some(sfd) = sfd else {
        // Without a signalfd: no more requests, just reap.
        drop(ctrl);
        return reap_until(root);
    };
    let mut ctrl = Some(ctrl);
    let mut lifeline = false;
    let mut identity: Option<Identity> = None;
    // After the supervisor died: where a new one can adopt the computation.
    let mut adopt: Option<AdoptListener> = None;
    // The computation lives while any of its processes lives: the root's
    // status is kept until the last process (orphans reparented to us
    // included) is gone.
    let mut ended = Ended::default();
    loop {
        loop {
            let mut status = 0;
            // SAFETY: status is a live c_int.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
            if r > 0 {
                ended.record(r, root, status);
                continue;
            }
            if r == 0 {
                break;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return ended.code(), // no process left
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: ctrl.as_ref().map_or(-1, |c| c.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: adopt.as_ref().map_or(-1, |a| a.listener.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a live array of three pollfds (a negative fd is ignored).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
        if n < 0 {
            continue; // EINTR
        }
        if fds[0].revents != 0 {
            while let Ok(Some(_)) = sfd.read_signal() {}
        }
        if fds[1].revents != 0 {
            let keep = ctrl
                .as_mut()
                .is_some_and(|c| serve_one(c, &mut lifeline, &mut identity));
            if !keep {
                ctrl = None;
                if lifeline {
                    // Exiting as pid 1 kills every process of the namespace.
                    return 128 + libc::SIGKILL;
                }
                adopt = AdoptListener::open();
            }
        }
        if fds[2].revents != 0 {
            if let Some(stream) = adopt.as_ref().and_then(AdoptListener::accept) {
                ctrl = Some(stream);
                adopt = None;
            }
        }
    }
}

/// The socket a supervisor that adopts an orphaned computation connects to
/// (`dmtcp-attach NSINIT_PID`): `adopt-<random>.sock` in the user's private
/// runtime directory (owner and mode checked), removed when dropped. Only a
/// client of our own uid is taken; it proves which nsinit it reached by the
/// peer pid it sees.
struct AdoptListener {
    listener: std::os::unix::net::UnixListener,
    path: std::path::PathBuf,
}

impl AdoptListener {
    fn open() -> Option<AdoptListener> {
        let dir = dmtcp_protocol::runtime::dir()
            .map_err(|e| eprintln!("dmtcp-nsinit: no socket to adopt the computation: {e}"))
            .ok()?;
        let name = format!("adopt-{}.sock", crate::roles::session::new_launch_id());
        let path = dir.join(&name);
        // Bound through the directory's fd: the full path may be longer
        // than a socket address holds (108 bytes).
        let listener = crate::kernel::sys::short_path(&dir, &name)
            .and_then(|(_dirfd, short)| std::os::unix::net::UnixListener::bind(short))
            .map_err(|e| eprintln!("dmtcp-nsinit: {}: {e}", path.display()))
            .ok()?;
        let _ = listener.set_nonblocking(true);
        Some(AdoptListener { listener, path })
    }

    fn accept(&self) -> Option<UnixStream> {
        let (stream, _) = self.listener.accept().ok()?;
        let cred =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .ok()?;
        if cred.uid() != nix::unistd::getuid().as_raw() {
            return None;
        }
        stream.set_nonblocking(false).ok()?;
        Some(stream)
    }
}

impl Drop for AdoptListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn recreate_ipc(ctrl: &mut UnixStream, ipc: bool) -> io::Result<()> {
    if !ipc {
        return Ok(());
    }
    let (state, bytes) = crate::resources::sysv::recv(ctrl)?;
    crate::resources::sysv::recreate(&state, &bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("recreating SysV IPC: {e}")))
}

/// Answers one request on the control socket; false once it is closed.
fn serve_one(ctrl: &mut UnixStream, lifeline: &mut bool, identity: &mut Option<Identity>) -> bool {
    let Ok(req) = dmtcp_protocol::read_frame::<_, InitRequest>(ctrl) else {
        return false;
    };
    let sent = match req {
        InitRequest::Lifeline(on) => {
            *lifeline = on;
            reply(ctrl, InitReply::Done)
        }
        InitRequest::Identity(id) => {
            *identity = Some(id);
            reply(ctrl, InitReply::Done)
        }
        InitRequest::WhoAreYou => reply(ctrl, InitReply::Identity(identity.clone())),
        InitRequest::DumpIpc => match crate::resources::sysv::dump() {
            Ok((state, bytes)) => reply(ctrl, InitReply::Ipc)
                .and_then(|()| crate::resources::sysv::send(ctrl, &state, &bytes)),
            Err(e) => reply(ctrl, InitReply::Failed(e.to_string())),
        },
        InitRequest::RemoveShm { ids } => match crate::resources::sysv::remove_destroyed(&ids) {
            Ok(()) => reply(ctrl, InitReply::Done),
            Err(e) => reply(ctrl, InitReply::Failed(e.to_string())),
        },
        other => reply(
            ctrl,
            InitReply::Failed(format!("unexpected request {other:?}")),
        ),
    };
    sent.is_ok()
}

fn reply(ctrl: &mut UnixStream, r: InitReply) -> io::Result<()> {
    dmtcp_protocol::write_frame(ctrl, &r).map_err(|e| io::Error::other(e.to_string()))
}

/// Reaps every child (orphans included) until none is left; returns the
/// root's exit code.
fn reap_until(root: i32) -> i32 {
    let mut ended = Ended::default();
    loop {
        let mut status = 0;
        // SAFETY: status is a live c_int.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if r == -1 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return ended.code();
        }
        ended.record(r, root, status);
    }
}

/// Wait statuses seen while reaping: the root's, else the last one's.
#[derive(Default)]
struct Ended {
    root: Option<i32>,
    last: Option<i32>,
}

impl Ended {
    fn record(&mut self, pid: i32, root: i32, status: i32) {
        if pid == root {
            self.root = Some(status);
        } else {
            self.last = Some(status);
        }
    }

    /// The exit code nsinit (and so `dmtcp-run`) ends with.
    fn code(&self) -> i32 {
        self.root.or(self.last).map_or(1, exit_code_for)
    }
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::other("NUL byte in argument"))
}

/// Forks and execs the target; returns its pid (in our namespace).
fn launch(
    argv: &[Vec<u8>],
    preload: Option<&str>,
    seccomp: Option<&[u8]>,
    landlock: Option<&(Vec<String>, Vec<String>)>,
) -> io::Result<i32> {
    if argv.is_empty() {
        return Err(io::Error::other("no program given"));
    }
    let prog = String::from_utf8_lossy(&argv[0]).into_owned();
    let c_argv: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<io::Result<_>>()?;
    if let Some(lib) = preload {
        let v = match std::env::var("LD_PRELOAD") {
            Ok(old) if !old.is_empty() => format!("{lib}:{old}"),
            _ => lib.to_string(),
        };
        std::env::set_var("LD_PRELOAD", v);
        // `preload` is the inject library then the plugins, in order: the
        // plugins are named for launches the computation starts on other
        // hosts (ssh and srun contagion pass them on to `dmtcp-run`).
        match lib.split_once(':') {
            Some((_, plugins)) if !plugins.is_empty() => std::env::set_var(PLUGINS_ENV, plugins),
            _ => std::env::remove_var(PLUGINS_ENV),
        }
    }
    // A CLOEXEC pipe tells us whether exec worked: EOF means yes.
    let (mut rd, wr) = crate::kernel::sys::pipe_cloexec()?;
    // SAFETY: nsinit is single-threaded, so the child may run ordinary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(rd);
        let confined = match landlock {
            Some((read, write)) => crate::resources::sandbox::landlock::restrict_self(read, write),
            None => Ok(None),
        };
        let confined = match confined {
            Ok(Some(warning)) => {
                eprintln!("dmtcp-run: {warning}");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(io::Error::other(e)),
        };
        let err = match confined.and_then(|()| match seccomp {
            Some(p) => crate::kernel::seccomp::install_self(p),
            None => Ok(()),
        }) {
            Err(e) => io::Error::other(format!("installing the sandbox: {e}")),
            Ok(()) => exec_target(&c_argv),
        };
        let mut wr = std::fs::File::from(wr);
        let _ = wr.write_all(err.to_string().as_bytes());
        // SAFETY: _exit in the forked child, no destructors must run.
        unsafe { libc::_exit(127) }
    }
    drop(wr);
    let mut msg = String::new();
    let _ = rd.read_to_string(&mut msg);
    if !msg.is_empty() {
        let mut st = 0;
        // SAFETY: reaping our own failed child; status is a live c_int.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        return Err(io::Error::other(format!("{prog}: {msg}")));
    }
    Ok(pid)
}

fn exec_target(argv: &[CString]) -> io::Error {
    // The target must not inherit our namespace capabilities.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: ptrs is a NULL-terminated array of valid C strings that outlive the call.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => io::Error::other("command not found"),
        Some(libc::EACCES) => io::Error::other("permission denied"),
        _ => e,
    }
}

/// Maps every shared object at its parking address: shared anonymous
/// memory, or the memfd `pipes` made for it.
fn park_memory(
    objects: &[ParkedMemory],
    pipes: &crate::resources::fds::FdObjects,
) -> io::Result<()> {
    for o in objects {
        let (fd, prot, anon) = match &o.memfd {
            None if o.ghost.is_some() => {
                (pipes.ghost(o.id)?, libc::PROT_READ | libc::PROT_WRITE, 0)
            }
            Some(_) => {
                let (fd, writable) = pipes.memfd(o.id)?;
                let prot = if writable {
                    libc::PROT_READ | libc::PROT_WRITE
                } else {
                    libc::PROT_READ
                };
                (fd, prot, 0)
            }
            None => (-1, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_ANONYMOUS),
        };
        // SAFETY: a fresh shared mapping at an address the restorer chose
        // free (MAP_FIXED_NOREPLACE refuses to clobber).
        let p = unsafe {
            libc::mmap(
                o.addr as *mut libc::c_void,
                o.size as usize,
                prot,
                libc::MAP_SHARED | anon | libc::MAP_FIXED_NOREPLACE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED || p as u64 != o.addr {
            return Err(io::Error::other(format!(
                "parking shared memory {} at {:#x}: {}",
                o.id,
                o.addr,
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Key of the open file description an fd entry uses (entries without an
/// id get one of their own).
fn desc_key(e: &FdEntry, unique: usize) -> u64 {
    if e.desc != 0 {
        e.desc
    } else {
        u64::MAX - unique as u64
    }
}

/// Everything shells inherit from nsinit: one fd per open file description
/// and one report pipe per shell.
struct Universe<'a> {
    plans: &'a [ShellPlan],
    /// (plan index, fd index) -> fd of its description in nsinit.
    descs: std::collections::HashMap<u64, OwnedFd>,
    keys: Vec<Vec<u64>>,
    ready: Vec<OwnedFd>,
    /// The parked unlinked files, in the order of `parked`: every shell
    /// holds them at `ghost_shell_fd` until the restorer has mapped them.
    ghosts: Vec<OwnedFd>,
    /// Where each shell puts them: the parked objects.
    parked: &'a [ParkedMemory],
    /// Without namespaces: each shell's kernel pid, by plan index (its
    /// parent writes it after the fork, the shell itself too).
    slots: Option<crate::kernel::sys::SharedSlots>,
}

/// Lets nsinit hold many fds: soft RLIMIT_NOFILE up to the hard limit.
/// The computation's plugins (`A.so:B.so`) in its processes' environment
/// (the inject library reads it for ssh and srun contagion).
pub const PLUGINS_ENV: &str = "DMTCP_PLUGINS_LOADED";

fn raise_nofile() {
    let mut lim = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a live rlimit64; prlimit64 on ourselves.
    unsafe {
        if libc::prlimit64(0, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::prlimit64(0, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut());
        }
    }
}

/// Creates the shells with their original pids (without namespaces: the
/// kernel's), parents, sessions and groups; returns the pids of the ones
/// nsinit itself is parent of, once every shell has set itself up and
/// parked in `pause()`, and without namespaces each shell's kernel pid.
type Shells = (Vec<i32>, Vec<(u32, i32)>);

fn make_shells(plans: &[ShellPlan], parked: &[ParkedMemory]) -> io::Result<Shells> {
    raise_nofile();
    let all: Vec<FdEntry> = plans.iter().flat_map(|p| p.fds.iter().cloned()).collect();
    let base = all.iter().map(|e| e.fd).max().unwrap_or(2) + 1;
    let mut pipes = crate::resources::fds::FdObjects::create(&all)?;
    for o in parked {
        if let Some(name) = &o.memfd {
            pipes.ensure_memfd(o.id, name, o.size)?;
        }
        if let Some(path) = &o.ghost {
            pipes.ensure_ghost(o.id, path, o.size)?;
        }
    }
    park_memory(parked, &pipes)?;
    // Seals last: a write seal forbids the filling and writable mappings.
    pipes.seal_memfds()?;
    if crate::kernel::pid::virt::enabled() {
        crate::resources::mqueue::reclaim_host_queues(&all, &pipes)?;
    }
    crate::resources::mqueue::refill(&all, &pipes)?;
    let mut u = Universe {
        plans,
        descs: Default::default(),
        keys: Vec::new(),
        ready: Vec::new(),
        ghosts: Vec::new(),
        parked,
        slots: if crate::kernel::pid::virt::enabled() {
            Some(crate::kernel::sys::SharedSlots::new(plans.len())?)
        } else {
            None
        },
    };
    let mut unique = 0;
    let all_keys: Vec<Vec<u64>> = plans
        .iter()
        .map(|p| {
            p.fds
                .iter()
                .map(|e| {
                    unique += 1;
                    desc_key(e, unique)
                })
                .collect()
        })
        .collect();
    // IPv4 listeners first: an IPv6 listener that shared its port with one
    // (IPv6-only, as Open MPI's are) is then bound IPv6-only (see
    // `unix::listen_again`) instead of taking the port for both families
    // before the IPv4 one is back.
    for (p, keys) in plans.iter().zip(&all_keys) {
        for (e, &key) in p.fds.iter().zip(keys) {
            let dmtcp_image::FdKind::Listener { family, .. } = e.kind else {
                continue;
            };
            if family != libc::AF_INET || u.descs.contains_key(&key) {
                continue;
            }
            let fd = crate::resources::fds::open_fd(e, &pipes).map_err(|err| {
                io::Error::new(err.kind(), format!("pid {} fd {}: {err}", p.vpid, e.fd))
            })?;
            u.descs
                .insert(key, crate::kernel::sys::dup_above(fd.as_raw_fd(), base)?);
        }
    }
    let own_groups = nix::unistd::getgroups()
        .map_err(|e| io::Error::other(format!("getgroups: {e}")))?
        .iter()
        .map(|g| g.as_raw())
        .collect::<Vec<u32>>();
    for (p, plan_keys) in plans.iter().zip(&all_keys) {
        let mut keys = Vec::new();
        // Another user's process: its files are opened with its access.
        if let Some(a) = &p.open_as {
            crate::kernel::sys::set_fs_ids(a.uid, a.gid, &a.groups)
                .map_err(|e| io::Error::new(e.kind(), format!("pid {}: {e}", p.vpid)))?;
        }
        for (e, &key) in p.fds.iter().zip(plan_keys) {
            if let std::collections::hash_map::Entry::Vacant(slot) = u.descs.entry(key) {
                // A place held for a /proc/PID file the shell opens itself.
                let opened = match crate::resources::files::proc_pid_file(e) {
                    Some(_) => crate::resources::files::open_dev_null(),
                    None => crate::resources::fds::open_fd(e, &pipes),
                };
                let fd = opened
                    .and_then(|fd| {
                        crate::resources::locks::take_description_locks(&fd, &e.locks).map(|()| fd)
                    })
                    .map_err(|err| {
                        io::Error::new(err.kind(), format!("pid {} fd {}: {err}", p.vpid, e.fd))
                    })?;
                slot.insert(crate::kernel::sys::dup_above(fd.as_raw_fd(), base)?);
            }
            keys.push(key);
        }
        if p.open_as.is_some() {
            crate::kernel::sys::set_fs_ids(0, 0, &own_groups)?;
        }
        u.keys.push(keys);
    }
    for o in parked.iter().filter(|o| o.ghost.is_some()) {
        u.ghosts
            .push(crate::kernel::sys::dup_above(pipes.ghost(o.id)?, base)?);
    }
    crate::resources::mqueue::unlink_restored(&all, &pipes)?;
    drop(pipes);
    let mut readers = Vec::new();
    for _ in plans {
        let (rd, wr) = crate::kernel::sys::pipe_cloexec()?;
        u.ready
            .push(crate::kernel::sys::dup_above(wr.as_raw_fd(), base)?);
        readers.push(rd);
    }
    let vpids: std::collections::HashSet<u32> = plans.iter().map(|p| p.vpid).collect();
    let mut roots = Vec::new();
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| plans[i].vpid);
    for i in order {
        if !vpids.contains(&plans[i].vppid) {
            roots.push(spawn_shell(&u, i)?);
        }
    }
    let slots = u.slots.take();
    drop(u);
    for (i, (p, mut rd)) in plans.iter().zip(readers).enumerate() {
        let mut msg = String::new();
        let _ = rd.read_to_string(&mut msg);
        if msg != "ok" {
            if msg.is_empty() {
                let pid = slots.as_ref().map_or(p.vpid as i32, |s| s.get(i));
                msg = shell_death(pid);
            }
            return Err(io::Error::other(format!(
                "setting up pid {}: {msg}",
                p.vpid
            )));
        }
    }
    let real = match slots {
        Some(s) => plans
            .iter()
            .enumerate()
            .map(|(i, p)| (p.vpid, s.get(i)))
            .collect(),
        None => Vec::new(),
    };
    Ok((roots, real))
}

/// What became of a shell that closed its report pipe without a word: its
/// parent (another shell, paused) has not reaped it, so `/proc` still
/// holds its wait status.
fn shell_death(pid: i32) -> String {
    let fields = crate::kernel::procfs::stat_fields(crate::kernel::pid::HostPid(pid));
    match fields.as_ref().map(|f| (f.first(), f.last())) {
        Ok((Some(state), Some(code))) if state == "Z" => {
            let status: i32 = code.parse().unwrap_or(-1);
            if libc::WIFSIGNALED(status) {
                format!(
                    "shell (pid {pid}) killed by signal {}",
                    libc::WTERMSIG(status)
                )
            } else {
                format!(
                    "shell (pid {pid}) exited with {}",
                    libc::WEXITSTATUS(status)
                )
            }
        }
        Ok((Some(state), _)) => format!("shell (pid {pid}) closed its report pipe (state {state})"),
        _ => format!("shell (pid {pid}) died"),
    }
}

fn spawn_shell(u: &Universe, i: usize) -> io::Result<i32> {
    let plan = &u.plans[i];
    let want = u.slots.is_none().then(|| VirtPid::from_image(plan.vpid));
    let pid = crate::kernel::sys::clone_shell(want).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create process with pid {}: {e}", plan.vpid),
        )
    })?;
    if pid == 0 {
        if let Some(s) = &u.slots {
            s.set(i, std::process::id() as i32);
        }
        shell_main(u, i);
    }
    if let Some(s) = &u.slots {
        s.set(i, pid);
    }
    Ok(pid)
}

/// The shell: session and group, its own children, cwd, umask, fds and
/// limits; then it reports on its pipe and parks. "ok" is written only once
/// the fd table is final; closing the pipe is the last thing before pause().
fn shell_main(u: &Universe, i: usize) -> ! {
    let plan = &u.plans[i];
    let ready_fd = u.ready[i].as_raw_fd();
    // Where a failure is reported: the report pipe moves when the fds are
    // placed (its old number may then be one of the process's own fds).
    let report = std::cell::Cell::new(ready_fd);
    let result = (|| -> io::Result<RawFd> {
        reset_signals();
        // SAFETY: setsid/setpgid/getpgid take integers only.
        unsafe {
            if plan.vsid == plan.vpid && libc::setsid() < 0 {
                return Err(io::Error::other(format!(
                    "setsid: {}",
                    io::Error::last_os_error()
                )));
            }
            if plan.vpgid == plan.vpid && plan.vsid != plan.vpid {
                libc::setpgid(0, 0);
            }
        }
        // Before any child is made: a process gets its controlling
        // terminal from its parent at fork.
        if let (Some(index), true) = (plan.ctty_pty, plan.vsid == plan.vpid) {
            take_controlling_pty(u, index)?;
        }
        if let Some(status) = plan.zombie {
            // In place in the tree, with its group and session: now die
            // the way it died, and stay a zombie until the parent waits.
            crate::kernel::sys::set_own_name(&plan.comm);
            let _ = place_fds(Vec::new(), ready_fd).map(|fd| {
                // SAFETY: fd is our report pipe's write end.
                unsafe { libc::write(fd, b"ok".as_ptr().cast(), 2) };
            });
            die_with(status);
        }
        let mut kids: Vec<usize> = (0..u.plans.len())
            .filter(|&k| u.plans[k].vppid == plan.vpid)
            .collect();
        kids.sort_by_key(|&k| u.plans[k].vpid);
        for k in kids {
            spawn_shell(u, k)?;
        }
        // Without namespaces, the group's leader has another pid now.
        let pgid = match &u.slots {
            Some(s) => u
                .plans
                .iter()
                .position(|p| p.vpid == plan.vpgid)
                .map_or(0, |k| s.get(k)),
            None => plan.vpgid as i32,
        };
        // SAFETY: getpgid/setpgid take integers only.
        unsafe {
            if plan.vpgid != 0 && plan.vpgid != plan.vpid && pgid > 0 && libc::getpgid(0) != pgid {
                // The group's leader may be gone; keep going in our parent's group.
                libc::setpgid(0, pgid);
            }
        }
        // From here on (cwd, /dev/tty, and the files the supervisor maps
        // into it by injected syscalls) with the process's owner's access.
        if let Some(a) = &plan.open_as {
            crate::kernel::sys::set_fs_ids(a.uid, a.gid, &a.groups)?;
        }
        shell_setup(plan)?;
        let mut placed = Vec::new();
        for (e, key) in plan.fds.iter().zip(&u.keys[i]) {
            let fd = crate::kernel::sys::dup_above(u.descs[key].as_raw_fd(), 0)?;
            placed.push((e.fd, fd, e.cloexec));
        }
        for (o, fd) in u.parked.iter().filter(|o| o.ghost.is_some()).zip(&u.ghosts) {
            let at = crate::resources::memory::ghost_shell_fd(&plan.fds, u.parked, o.id)
                .expect("a parked unlinked file");
            placed.push((at, crate::kernel::sys::dup_above(fd.as_raw_fd(), 0)?, true));
        }
        let ready = place_fds(placed, ready_fd)?;
        report.set(ready);
        reopen_dev_tty(&plan.fds)?;
        crate::resources::files::reopen_proc_files(&plan.fds, |v| kernel_pid(u, v))?;
        // After the last close of any fd (a close drops the process's
        // record locks on that file).
        crate::resources::locks::take_process_locks(&plan.fds)?;
        set_rlimits(&plan.rlimits);
        crate::resources::anonfd::add_epoll_watches(&plan.fds)?;
        crate::resources::unix::set_passcred(&plan.passcred_fds)?;
        Ok(ready)
    })();
    match result {
        Ok(fd) => {
            // SAFETY: fd is our report pipe's write end; nothing else uses it.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let _ = f.write_all(b"ok");
            drop(f);
        }
        Err(e) => {
            let text = e.to_string();
            // SAFETY: `report` holds our report pipe's write end, wherever
            // the placing of the fds left it.
            let _ = unsafe { libc::write(report.get(), text.as_ptr().cast(), text.len()) };
            // SAFETY: _exit in the forked child.
            unsafe { libc::_exit(126) };
        }
    }
    loop {
        // SAFETY: pause has no arguments; the restorer interrupts us here.
        unsafe { libc::pause() };
    }
}

/// The pid virtual pid `v` of the image has now: itself in the restart's
/// pid namespace; without namespaces the kernel pid of the process restored
/// as `v` when it already exists (it is made before any process that could
/// hold its /proc files open here: itself, its ancestors, its elder
/// children), else `v` (a process outside the computation).
fn kernel_pid(u: &Universe, v: i32) -> i32 {
    let Some(s) = &u.slots else {
        return v;
    };
    u.plans
        .iter()
        .position(|p| p.vpid as i32 == v)
        .map(|k| s.get(k))
        .filter(|&pid| pid > 0)
        .unwrap_or(v)
}

/// Makes pty `index` (restored by nsinit) the controlling terminal of the
/// calling session leader, through any description of its slave or, when
/// no process holds the slave, a slave opened from its master.
fn take_controlling_pty(u: &Universe, index: u32) -> io::Result<()> {
    let mut master = None;
    for (plan, keys) in u.plans.iter().zip(&u.keys) {
        for (e, key) in plan.fds.iter().zip(keys) {
            match e.kind {
                dmtcp_image::FdKind::PtySlave { index: i, .. } if i == index => {
                    return crate::resources::pty::set_controlling(u.descs[key].as_raw_fd());
                }
                dmtcp_image::FdKind::PtyMaster { index: i, .. } if i == index => {
                    master = Some(u.descs[key].as_raw_fd());
                }
                _ => {}
            }
        }
    }
    let master = master
        .ok_or_else(|| io::Error::other(format!("controlling terminal: no fd of pty {index}")))?;
    let slave = crate::resources::pty::open_slave(master, libc::O_RDWR)?;
    crate::resources::pty::set_controlling(slave.as_raw_fd())
}

/// Fds that were `/dev/tty` on a pty of the computation were placed as
/// descriptions of its slave; now that the process has its controlling
/// terminal they become `/dev/tty` again (each its own description). If
/// the process has no controlling terminal, the slave fd stays.
fn reopen_dev_tty(fds: &[FdEntry]) -> io::Result<()> {
    for e in fds {
        let dmtcp_image::FdKind::PtySlave {
            flags,
            dev_tty: true,
            ..
        } = e.kind
        else {
            continue;
        };
        if let Some(fd) = crate::resources::pty::open_controlling(flags) {
            crate::kernel::sys::dup3(fd.as_raw_fd(), e.fd, e.cloexec)?;
        }
    }
    Ok(())
}

/// Ends the calling process with wait status `status`.
fn die_with(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: plain syscalls on ourselves; raw kill/getpid because glibc's
        // cached tid in a clone3 child is nsinit's.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::syscall(libc::SYS_kill, libc::syscall(libc::SYS_getpid), sig);
        }
    }
    // SAFETY: _exit in a forked child.
    unsafe { libc::_exit(libc::WEXITSTATUS(status)) }
}

/// Default dispositions: our own handlers (Rust's SIGSEGV/SIGBUS guard)
/// must not leak into restored processes.
fn reset_signals() {
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: resetting a disposition to SIG_DFL; no handler involved.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// cwd and umask (fds and limits come later).
fn shell_setup(plan: &ShellPlan) -> io::Result<()> {
    std::env::set_current_dir(&plan.cwd)
        .map_err(|e| io::Error::new(e.kind(), format!("chdir {}: {e}", plan.cwd)))?;
    // SAFETY: umask only sets the mask.
    unsafe { libc::umask(plan.umask as libc::mode_t) };
    Ok(())
}

fn set_rlimits(rlimits: &[(u32, u64, u64)]) {
    for &(res, cur, max) in rlimits {
        let lim = libc::rlimit64 {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: lim is a live rlimit64; a null old pointer is allowed.
        let r = unsafe { libc::prlimit64(0, res as _, &lim, std::ptr::null_mut()) };
        if r != 0 {
            // Raising a hard limit needs privilege we may not have: keep
            // going with what we got rather than refusing the restart.
            let lim2 = libc::rlimit64 {
                rlim_cur: cur.min(max),
                rlim_max: max,
            };
            // SAFETY: as above.
            unsafe { libc::prlimit64(0, res as _, &lim2, std::ptr::null_mut()) };
        }
    }
}

/// Puts every opened fd at its number and closes all others except the
/// report pipe, which is moved above them; returns the pipe's new number.
fn place_fds(placed: Vec<(i32, OwnedFd, bool)>, ready_fd: RawFd) -> io::Result<RawFd> {
    let mut keep: Vec<i32> = placed.iter().map(|(t, _, _)| *t).collect();
    let base = placed
        .iter()
        .map(|(t, fd, _)| (*t).max(fd.as_raw_fd()))
        .max()
        .unwrap_or(0)
        .max(ready_fd)
        + 1;
    // Move temporaries out of the way of every target number first.
    let ready_high = crate::kernel::sys::dup_above(ready_fd, base)?;
    let mut high = Vec::new();
    for (target, fd, cloexec) in placed {
        let h = crate::kernel::sys::dup_above(fd.as_raw_fd(), base)?;
        drop(fd);
        high.push((target, h, cloexec));
    }
    for (target, h, cloexec) in &high {
        crate::kernel::sys::dup3(h.as_raw_fd(), *target, *cloexec)?;
    }
    drop(high);
    let ready_raw = ready_high.as_raw_fd();
    std::mem::forget(ready_high);
    keep.push(ready_raw);
    crate::kernel::sys::close_all_except(&keep);
    Ok(ready_raw)
}
