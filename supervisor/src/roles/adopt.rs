//! Taking back a computation whose supervisor died (`dmtcp-attach
//! NSINIT_PID`).
//!
//! When its supervisor dies (kill -9, OOM), the computation runs on:
//! `dmtcp-nsinit`, pid 1 of its pid namespace, keeps reaping, and opens
//! `adopt-<random>.sock` in the user's private runtime directory
//! (`roles/nsinit.rs`, `AdoptListener`). A new supervisor connects there,
//! proves by the peer pid which nsinit it reached (and nsinit takes only a
//! client of its own uid), asks who the computation is (its id and launch
//! id, which the first supervisor told nsinit), joins the coordinator as
//! that computation and launch, and goes on exactly as the dead one would
//! have: checkpoints, kill, images with the same names. It is not nsinit's
//! parent, so it waits for nsinit's end through a pidfd; if it dies in
//! turn, nsinit offers the computation again.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use anyhow::{anyhow, bail};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::kernel::pid::HostPid;
use crate::roles::nsinit_ctrl::NsinitCtrl;
use crate::roles::session::{self, Session, SessionConfig};

/// Whether `pid` is a computation's `dmtcp-nsinit`.
pub fn is_nsinit(pid: HostPid) -> bool {
    crate::kernel::procfs::comm(pid, None).is_ok_and(|c| c == "dmtcp-nsinit")
}

/// Connects to the adoption socket of nsinit `pid`.
fn connect(pid: HostPid) -> anyhow::Result<NsinitCtrl> {
    let dir = dmtcp_protocol::runtime::dir().map_err(|e| anyhow!("{e}"))?;
    let entries = std::fs::read_dir(&dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("adopt-") && name.ends_with(".sock")) {
            continue;
        }
        let Ok(stream) = crate::kernel::sys::short_path(&dir, &name)
            .and_then(|(_dirfd, short)| UnixStream::connect(short))
        else {
            continue;
        };
        let cred =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
        if cred.is_ok_and(|c| c.pid() == pid.0) {
            return Ok(NsinitCtrl(stream));
        }
    }
    bail!(
        "pid {pid} is the dmtcp-nsinit of a computation, but it offers no adoption: its supervisor still runs (use dmtcp-command), or it belongs to another user or runtime directory ({})",
        dir.display()
    )
}

/// Takes back the orphaned computation of nsinit `pid`, with `cfg` for the
/// coordinator and images (its computation and launch come from nsinit).
/// Returns when the computation has ended (0) or when we are told to leave
/// it (SIGINT/SIGTERM/SIGHUP: it runs on and can be adopted again).
pub fn adopt(pid: HostPid, mut cfg: SessionConfig) -> anyhow::Result<i32> {
    let mut ctrl = connect(pid)?;
    let id = ctrl
        .identity()?
        .ok_or_else(|| anyhow!("dmtcp-nsinit pid {pid} does not know its computation"))?;
    cfg.computation = Some(id.computation.clone());
    cfg.launch = id.launch.clone();
    // An nsinit in our own pid namespace (one NSpid level as we see it) is
    // a `dmtcp-restart --no-pidns` one: its computation has host pids.
    let levels = crate::kernel::procfs::status(pid)
        .ok()
        .and_then(|st| {
            crate::kernel::procfs::field(&st, "NSpid").map(|v| v.split_whitespace().count())
        })
        .unwrap_or(0);
    if levels == 1 {
        crate::roles::spawn::set_host_pids();
    }
    if id.virtual_pids {
        // Without namespaces: the pid table the restorer wrote into every
        // process (the same everywhere; a child forked since has its
        // parent's copy).
        crate::kernel::pid::virt::enable();
        for p in crate::kernel::procfs::descendants(pid) {
            let table = crate::agent::find_state(p).and_then(|addr| {
                let mem = crate::kernel::procfs::Mem::open(p, false).ok()?;
                crate::agent::pid_map(&mem, addr).ok()
            });
            // Rows of processes reaped before the last checkpoint have
            // real id 0.
            for (v, r) in table
                .unwrap_or_default()
                .into_iter()
                .filter(|&(_, r)| r > 0)
            {
                crate::kernel::pid::virt::insert(v, r);
            }
        }
    }
    let (conn, computation, _) = session::connect(&cfg)?;
    eprintln!(
        "dmtcp-attach: took back computation {computation} (launch {}) of dmtcp-nsinit pid {pid}",
        id.launch
    );
    let session = Session::new(cfg, pid, ctrl, conn, computation);
    let waker = session.waker();
    let worker = std::thread::Builder::new()
        .name("session".into())
        .spawn(move || session.run())?;
    let code = wait_for_end(pid);
    waker.wake();
    let _ = worker.join();
    code
}

/// Waits until nsinit `pid` (not our child) has exited, or a signal tells
/// us to leave.
fn wait_for_end(pid: HostPid) -> anyhow::Result<i32> {
    let pidfd = crate::kernel::sys::pidfd_open(pid.0)?;
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)?;
    let mut fds = [
        libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: sfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        if crate::kernel::sys::poll(&mut fds, -1)? == 0 {
            continue;
        }
        if fds[0].revents != 0 {
            return Ok(0);
        }
        if fds[1].revents != 0 {
            eprintln!("dmtcp-attach: leaving the computation of dmtcp-nsinit pid {pid}; it runs on and can be taken back again");
            return Ok(0);
        }
    }
}
