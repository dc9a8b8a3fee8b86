//! POSIX message queues (`mq_open`): read at checkpoint, recreated at
//! restart by name in the computation's IPC namespace.
//!
//! At checkpoint the supervisor opens the queue itself through
//! `/proc/PID/fd/N` (a description of its own, readable whatever the
//! program's access mode), takes every message out with a zero timeout (in
//! priority order, FIFO within a priority) and sends them straight back in
//! the same order, so the frozen computation finds its queue unchanged.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use dmtcp_image::{FdEntry, FdKind};

use crate::kernel::pid::HostPid;
use crate::resources::fdshare::FdContext;
use crate::resources::{FdObjects, FdResource, OpenFd};

/// `statfs` type of the mqueue filesystem.
const MQUEUE_MAGIC: i64 = 0x1980_0202;

/// What a queue holds, as [`dmtcp_image::FdKind::Mqueue`] records it.
pub struct Queue {
    pub mode: u32,
    pub maxmsg: i64,
    pub msgsize: i64,
    pub messages: Vec<(u32, Vec<u8>)>,
    pub inode: u64,
}

fn os_err(what: String) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Whether fd `fd` of `pid` is a POSIX message queue.
pub fn is_mqueue(pid: HostPid, fd: i32) -> bool {
    let Ok(path) = CString::new(format!("/proc/{}/fd/{fd}", pid.0)) else {
        return false;
    };
    // SAFETY: statfs is plain data; statfs writes into it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is a valid C string, st a live statfs.
    unsafe { libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == MQUEUE_MAGIC }
}

fn getattr(fd: &OwnedFd) -> io::Result<libc::mq_attr> {
    // SAFETY: mq_attr is plain data; the kernel fills it.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: mq_getsetattr with no new attributes writes the old ones to attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_getsetattr,
            fd.as_raw_fd(),
            std::ptr::null::<libc::mq_attr>(),
            &mut attr as *mut libc::mq_attr,
        )
    };
    if r < 0 {
        return Err(os_err("mq_getattr".into()));
    }
    Ok(attr)
}

fn send(fd: &OwnedFd, prio: u32, msg: &[u8]) -> io::Result<()> {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: msg is a live buffer of msg.len() bytes; zero a live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_timedsend,
            fd.as_raw_fd(),
            msg.as_ptr(),
            msg.len(),
            prio,
            &zero as *const libc::timespec,
        )
    };
    if r < 0 {
        return Err(os_err("mq_send".into()));
    }
    Ok(())
}

/// Attributes and (with `messages`) the messages of the queue behind fd
/// `fd` of the frozen process `pid`; the queue is left as it was.
pub fn capture(pid: HostPid, fd: i32, messages: bool) -> io::Result<Queue> {
    let path = format!("/proc/{}/fd/{fd}", pid.0);
    let c = CString::new(path.clone()).map_err(|_| io::Error::other("NUL in path"))?;
    let mode = if messages {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    // SAFETY: c is a valid C string; open returns a fresh fd or -1.
    let raw = unsafe { libc::open(c.as_ptr(), mode | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(os_err(format!("opening message queue {path}")));
    }
    // SAFETY: raw was just returned by open and nothing else owns it.
    let q = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: q is our fd, st a live stat.
    if unsafe { libc::fstat(q.as_raw_fd(), &mut st) } < 0 {
        return Err(os_err(format!("fstat {path}")));
    }
    let attr = getattr(&q)?;
    let mut out = Queue {
        mode: st.st_mode & 0o7777,
        maxmsg: attr.mq_maxmsg,
        msgsize: attr.mq_msgsize,
        messages: Vec::new(),
        inode: st.st_ino,
    };
    if !messages {
        return Ok(out);
    }
    let mut buf = vec![0u8; attr.mq_msgsize.max(1) as usize];
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let mut prio: u32 = 0;
        // SAFETY: buf holds msgsize bytes; prio and zero are live locals.
        let n = unsafe {
            libc::syscall(
                libc::SYS_mq_timedreceive,
                q.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut prio as *mut u32,
                &zero as *const libc::timespec,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ETIMEDOUT)) {
                break;
            }
            // Whatever was taken goes back before we give up.
            for (p, m) in &out.messages {
                send(&q, *p, m)?;
            }
            return Err(io::Error::new(e.kind(), format!("mq_receive {path}: {e}")));
        }
        out.messages.push((prio, buf[..n as usize].to_vec()));
    }
    for (p, m) in &out.messages {
        send(&q, *p, m).map_err(|e| {
            io::Error::new(e.kind(), format!("putting a message back into {path}: {e}"))
        })?;
    }
    Ok(out)
}

/// Marks the saved name of a queue that was unlinked while open.
pub const UNLINKED: &str = " (deleted ";

/// The names unlinked queues are recreated under, by saved name: their old
/// name when no other queue of the restart has it, else the saved name.
#[derive(Default)]
pub struct UnlinkedNames(std::collections::HashMap<String, String>);

impl UnlinkedNames {
    pub fn new(entries: &[dmtcp_image::FdEntry]) -> UnlinkedNames {
        let mut saved: Vec<&String> = entries
            .iter()
            .filter_map(|e| match &e.kind {
                dmtcp_image::FdKind::Mqueue { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        saved.sort();
        saved.dedup();
        let mut taken: std::collections::HashSet<String> = saved
            .iter()
            .filter(|n| !n.contains(UNLINKED))
            .map(|n| n.to_string())
            .collect();
        let mut out = std::collections::HashMap::new();
        for n in saved {
            if let Some((old, _)) = n.split_once(UNLINKED) {
                let to = if taken.insert(old.to_string()) {
                    old.to_string()
                } else {
                    n.clone()
                };
                out.insert(n.clone(), to);
            }
        }
        UnlinkedNames(out)
    }

    /// The name to open the queue saved as `name` by.
    pub fn get<'a>(&'a self, name: &'a str) -> &'a str {
        self.0.get(name).map_or(name, String::as_str)
    }
}

/// Unlinks again the queues that were unlinked at checkpoint time, once
/// every fd on them is open.
pub fn unlink_restored(entries: &[dmtcp_image::FdEntry], objects: &FdObjects) -> io::Result<()> {
    let mut done = std::collections::HashSet::new();
    for e in entries {
        if let dmtcp_image::FdKind::Mqueue { name, .. } = &e.kind {
            if name.contains(UNLINKED) && done.insert(name.clone()) {
                let name = objects.mq_names.get(name);
                let c = CString::new(name).map_err(|_| io::Error::other("NUL in queue name"))?;
                // SAFETY: c is a valid C string.
                if unsafe { libc::syscall(libc::SYS_mq_unlink, c.as_ptr()) } < 0 {
                    return Err(os_err(format!("mq_unlink /{name}")));
                }
            }
        }
    }
    Ok(())
}

/// Without an IPC namespace (a computation run without namespaces) the
/// queues live in the host's, where a queue outlives its processes: the
/// killed computation's is still there, holding what was sent after the
/// checkpoint. Before anything is recreated, each queue the images name
/// that exists already is removed, so that the restart brings back the
/// checkpoint's queue (attributes, mode, messages) and not a mix; a queue
/// that another user owns, or that a live process outside the restart has
/// open, is refused in one line naming its owner or holders, and left alone.
pub fn reclaim_host_queues(
    entries: &[dmtcp_image::FdEntry],
    objects: &FdObjects,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut done = std::collections::HashSet::new();
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    for e in entries {
        let dmtcp_image::FdKind::Mqueue { name, .. } = &e.kind else {
            continue;
        };
        let name = objects.mq_names.get(name);
        if !done.insert(name.to_string()) {
            continue;
        }
        let c = CString::new(name).map_err(|_| io::Error::other("NUL in queue name"))?;
        // SAFETY: c is a valid C string and the attributes pointer null
        // (the kernel reads it when it is not, O_CREAT or not); returns a
        // fresh fd or -1.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mq_open,
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                0,
                std::ptr::null::<libc::mq_attr>(),
            )
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOENT) => continue,
                _ => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!(
                            "POSIX message queue /{name} exists already on this machine and cannot be opened ({err}); the computation runs without an IPC namespace of its own, so it would share it: remove it (mq_unlink) or restart elsewhere"
                        ),
                    ))
                }
            }
        }
        // SAFETY: r is a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(r as i32) };
        let meta = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        if meta.uid() != me {
            return Err(io::Error::other(format!(
                "POSIX message queue /{name} exists already on this machine and belongs to uid {}; the computation runs without an IPC namespace of its own, so it would share it: restart where the name is free",
                meta.uid()
            )));
        }
        let holders =
            crate::kernel::procfs::file_holders(meta.dev(), meta.ino(), std::process::id() as i32);
        if !holders.is_empty() {
            let who: Vec<String> = holders
                .iter()
                .map(|(pid, comm)| format!("pid {pid} {comm}"))
                .collect();
            return Err(io::Error::other(format!(
                "POSIX message queue /{name} is open in {} outside the restart; the computation runs without an IPC namespace of its own, so it would share it: end them (or restart elsewhere)",
                who.join(", ")
            )));
        }
        drop(fd);
        // SAFETY: c is a valid C string.
        if unsafe { libc::syscall(libc::SYS_mq_unlink, c.as_ptr()) } < 0 {
            return Err(os_err(format!(
                "mq_unlink /{name} (left by the killed computation)"
            )));
        }
        tracing::info!("removed the queue /{name} left in the host IPC namespace");
    }
    Ok(())
}

/// Creates every queue the entries name that has saved messages, and puts
/// the messages back in order. Call once, before the fds are opened.
pub fn refill(entries: &[dmtcp_image::FdEntry], objects: &FdObjects) -> io::Result<()> {
    for e in entries {
        if let dmtcp_image::FdKind::Mqueue {
            name,
            mode,
            maxmsg,
            msgsize,
            messages,
            ..
        } = &e.kind
        {
            if !messages.is_empty() {
                let name = objects.mq_names.get(name);
                open_queue(name, libc::O_WRONLY, *mode, *maxmsg, *msgsize, messages)?;
            }
        }
    }
    Ok(())
}

/// Opens (creating it if needed) the queue `name` in our IPC namespace.
pub fn open(name: &str, flags: i32, mode: u32, maxmsg: i64, msgsize: i64) -> io::Result<OwnedFd> {
    open_queue(name, flags, mode, maxmsg, msgsize, &[])
}

fn open_queue(
    name: &str,
    flags: i32,
    mode: u32,
    maxmsg: i64,
    msgsize: i64,
    messages: &[(u32, Vec<u8>)],
) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::other("NUL in queue name"))?;
    // SAFETY: mq_attr is plain data.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = maxmsg;
    attr.mq_msgsize = msgsize;
    let open_with = |oflag: i32| -> io::Result<OwnedFd> {
        // SAFETY: c is a valid C string, attr a live mq_attr; mq_open returns
        // a fresh fd or -1.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mq_open,
                c.as_ptr(),
                oflag | libc::O_CREAT | libc::O_CLOEXEC,
                mode,
                &attr as *const libc::mq_attr,
            )
        };
        if r < 0 {
            return Err(os_err(format!("mq_open /{name}")));
        }
        // SAFETY: r is a fresh fd nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    };
    let fd = open_with(flags & (libc::O_ACCMODE | libc::O_NONBLOCK))?;
    // Our umask must not change the saved permissions.
    // SAFETY: fchmod on our own fd.
    unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) };
    if !messages.is_empty() {
        let w = open_with(libc::O_WRONLY | libc::O_NONBLOCK)?;
        for (p, m) in messages {
            send(&w, *p, m)
                .map_err(|e| io::Error::new(e.kind(), format!("refilling /{name}: {e}")))?;
        }
    }
    Ok(fd)
}

/// A POSIX message queue; its messages are saved with the first fd seen.
fn mqueue_kind(
    pid: HostPid,
    fd: i32,
    target: &str,
    flags: i32,
    fdctx: &mut FdContext,
) -> io::Result<FdKind> {
    let err = |e: io::Error| io::Error::new(e.kind(), format!("message queue fd {fd}: {e}"));
    let ino = capture(pid, fd, false).map_err(err)?.inode;
    // An unlinked queue is saved under a name no program gives (its old
    // name, " (deleted", its inode, ")"): recreated under that name at
    // restart, opened by every fd, then unlinked again.
    let name = match target.strip_suffix(" (deleted)") {
        Some(old) => {
            // A queue restored unlinked keeps its first name.
            let old = old.trim_start_matches('/');
            let old = old.split_once(UNLINKED).map_or(old, |(n, _)| n);
            format!("{old}{UNLINKED}{ino})")
        }
        None => target.trim_start_matches('/').to_string(),
    };
    let take = fdctx.mqueue_unclaimed(ino);
    let q = capture(pid, fd, take).map_err(err)?;
    if take {
        fdctx.claim_mqueue(ino);
    }
    Ok(FdKind::Mqueue {
        name,
        flags: flags & (libc::O_ACCMODE | libc::O_NONBLOCK),
        mode: q.mode,
        maxmsg: q.maxmsg,
        msgsize: q.msgsize,
        messages: q.messages,
    })
}

/// POSIX message queues (a path on the mqueue filesystem).
pub struct Mqueue;

impl FdResource for Mqueue {
    fn capture(f: &OpenFd<'_>, cx: &mut FdContext) -> io::Result<Option<FdKind>> {
        if !(f.target.starts_with('/') && is_mqueue(f.pid, f.fd)) {
            return Ok(None);
        }
        mqueue_kind(f.pid, f.fd, f.target, f.flags, cx).map(Some)
    }

    fn restore(e: &FdEntry, objects: &FdObjects) -> io::Result<OwnedFd> {
        let FdKind::Mqueue {
            name,
            flags,
            mode,
            maxmsg,
            msgsize,
            ..
        } = &e.kind
        else {
            return Err(super::wrong_kind(e, "message queue"));
        };
        open(objects.mq_names.get(name), *flags, *mode, *maxmsg, *msgsize)
    }
}
