//! Zombies: processes that have exited but whose parent has not collected
//! their status yet. They cannot be stopped or read, and need not be: their
//! image holds their place in the tree and the status `waitpid` will return.

use std::io;

use dmtcp_image::{Capabilities, ComputationInfo, MmFields, ProcessImage, ProcessInfo};

use crate::kernel::pid::{HostPid, VirtPid};
use crate::kernel::procfs;

/// Whether `pid` is a zombie (state Z in /proc/PID/stat).
pub fn is_zombie(pid: HostPid) -> bool {
    procfs::stat_fields(pid)
        .ok()
        .and_then(|f| f.first().cloned())
        .is_some_and(|s| s == "Z")
}

/// The image of a zombie: ids, name and the pending wait status.
pub fn image(pid: HostPid, computation: ComputationInfo) -> io::Result<ProcessImage> {
    let status = procfs::status(pid)?;
    let stat = procfs::stat_fields(pid)?;
    // Field 52: the exit status in the form waitpid reports it.
    let wait_status = procfs::stat_field(&stat, 52)? as i32;
    let innermost = |key: &str| -> u32 {
        procfs::field(&status, key)
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let process = ProcessInfo {
        vpid: innermost("NSpid"),
        vppid: parent_vpid(&status),
        vpgid: innermost("NSpgid"),
        vsid: innermost("NSsid"),
        host_pid: pid.0 as u32,
        comm: procfs::comm(pid, None).unwrap_or_default(),
        exe: String::new(),
        cmdline: Vec::new(),
        cwd: "/".into(),
        umask: 0o022,
        rlimits: Vec::new(),
        personality: 0,
        caps: Capabilities::default(),
        uid: 0,
        gid: 0,
        creds: Default::default(),
        no_new_privs: false,
        dumpable: 0,
        mm: MmFields::default(),
        auxv: Vec::new(),
        sigactions: Vec::new(),
        shared_pending: Vec::new(),
        itimers: [(0, 0); 3],
        child_subreaper: false,
        posix_timers: Vec::new(),
        zombie: Some(wait_status),
        ctty: None,
    };
    Ok(ProcessImage {
        computation,
        process,
        threads: Vec::new(),
        fds: Vec::new(),
        vmas: Vec::new(),
        parent: None,
        ipc: None,
        clocks: None,
        security: Default::default(),
        passcred_fds: Vec::new(),
    })
}

/// The parent's pid as the process sees it (1 for nsinit, 0 outside).
pub fn parent_vpid(status: &[(String, String)]) -> u32 {
    procfs::field(status, "PPid")
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(|p| procfs::status(HostPid(p)).ok())
        .and_then(|kv| {
            let levels = procfs::field(&kv, "NSpid")?.split_whitespace().count();
            // Only a parent inside our namespace has a second NSpid level.
            (levels > 1).then(|| procfs::innermost_pid(&kv)).flatten()
        })
        .map_or(0, VirtPid::to_image)
}
