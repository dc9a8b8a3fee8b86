//! SysV IPC objects (shared memory, semaphores, message queues) of the
//! computation's IPC namespace: read at checkpoint and recreated with the
//! same ids at restart.
//!
//! Everything here runs inside `dmtcp-nsinit`, which lives in the
//! computation's IPC namespace and holds every capability of its user
//! namespace (or is root): `/proc/sysvipc/*` lists the objects of the
//! reader's own namespace, and `/proc/sys/kernel/{shm,sem,msg}_next_id`
//! choose the id the next object of a kind gets (writable with
//! CAP_CHECKPOINT_RESTORE over the namespace's user namespace).

pub mod attach;

use std::io::{self, Read, Write};

use dmtcp_image::{IpcPerm, IpcState, MsgQueue, SemSet, ShmSegment};

/// `msgrcv` flags not in every libc: copy the message at an index without
/// removing it, and truncate instead of failing.
const MSG_COPY: i32 = 0o40000;
const MSG_NOERROR: i32 = 0o10000;
/// Shared memory removed (`IPC_RMID`) while still attached.
pub const SHM_DEST: u32 = 0o1000;

fn os_err(what: String) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Rows of a `/proc/sysvipc/*` table as `column name -> value` lookups.
fn table(kind: &str) -> io::Result<Vec<Vec<(String, String)>>> {
    let path = format!("/proc/sysvipc/{kind}");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        // A kernel without SysV IPC has no objects to save.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
    };
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split_whitespace().map(str::to_string))
                .collect()
        })
        .collect())
}

fn col<T: std::str::FromStr>(row: &[(String, String)], name: &str) -> io::Result<T> {
    row.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("/proc/sysvipc: no usable column {name}")))
}

fn perm(row: &[(String, String)], id_col: &str) -> io::Result<IpcPerm> {
    let perms: String = col(row, "perms")?;
    Ok(IpcPerm {
        id: col(row, id_col)?,
        key: col(row, "key")?,
        mode: u32::from_str_radix(&perms, 8)
            .map_err(|_| io::Error::other(format!("/proc/sysvipc: perms {perms}")))?,
        uid: col(row, "uid")?,
        gid: col(row, "gid")?,
    })
}

/// The bytes of each shared memory segment of an [`IpcState`], in the
/// same order (trailing zeros dropped). They travel apart from the state:
/// in the image they are page data, on the control socket raw bytes.
pub type ShmBytes = Vec<Vec<u8>>;

/// Every SysV IPC object of our IPC namespace, with the segments' bytes.
pub fn dump() -> io::Result<(IpcState, ShmBytes)> {
    let mut state = IpcState::default();
    let mut bytes = Vec::new();
    for row in table("shm")? {
        let perm = perm(&row, "shmid")?;
        let size: u64 = col(&row, "size")?;
        bytes.push(shm_contents(perm.id, size)?);
        state.shm.push(ShmSegment {
            perm,
            size,
            pages: Vec::new(),
        });
    }
    for row in table("sem")? {
        let perm = perm(&row, "semid")?;
        let nsems: usize = col(&row, "nsems")?;
        let mut values = vec![0u16; nsems];
        // SAFETY: GETALL writes nsems unsigned shorts into `values`.
        let r = unsafe { libc::semctl(perm.id, 0, libc::GETALL, values.as_mut_ptr()) };
        if r < 0 {
            return Err(os_err(format!("semctl({}, GETALL)", perm.id)));
        }
        state.sem.push(SemSet { perm, values });
    }
    let msgmax = std::fs::read_to_string("/proc/sys/kernel/msgmax")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 16);
    for row in table("msg")? {
        let perm = perm(&row, "msqid")?;
        let qnum: usize = col(&row, "qnum")?;
        let qbytes = msg_qbytes(perm.id)?;
        let mut messages = Vec::with_capacity(qnum);
        let mut buf = vec![0u8; 8 + msgmax];
        for i in 0..qnum {
            // SAFETY: buf holds a long mtype followed by msgmax bytes.
            let n = unsafe {
                libc::msgrcv(
                    perm.id,
                    buf.as_mut_ptr().cast(),
                    msgmax,
                    i as libc::c_long,
                    libc::IPC_NOWAIT | MSG_COPY | MSG_NOERROR,
                )
            };
            if n < 0 {
                return Err(os_err(format!("msgrcv({}, MSG_COPY {i})", perm.id)));
            }
            let mtype = i64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
            messages.push((mtype, buf[8..8 + n as usize].to_vec()));
        }
        state.msg.push(MsgQueue {
            perm,
            qbytes,
            messages,
        });
    }
    Ok((state, bytes))
}

/// The bytes of a segment (trailing zeros dropped), read through a
/// read-only attach of our own.
fn shm_contents(id: i32, size: u64) -> io::Result<Vec<u8>> {
    // SAFETY: a fresh read-only attach at an address the kernel picks.
    let p = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
    if p as isize == -1 {
        return Err(os_err(format!("shmat({id})")));
    }
    // SAFETY: the attach maps `size` readable bytes at p until shmdt.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size as usize) };
    let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let out = bytes[..used].to_vec();
    // SAFETY: detaching our own attach; `bytes` is not used any more.
    unsafe { libc::shmdt(p) };
    Ok(out)
}

fn msg_qbytes(id: i32) -> io::Result<u64> {
    // SAFETY: msqid_ds is plain data; IPC_STAT fills it.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a live msqid_ds.
    if unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(os_err(format!("msgctl({id}, IPC_STAT)")));
    }
    Ok(ds.msg_qbytes as u64)
}

/// Makes the next object of `kind` (shm, sem, msg) get id `id`.
fn set_next_id(kind: &str, id: i32) -> io::Result<()> {
    let path = format!("/proc/sys/kernel/{kind}_next_id");
    std::fs::write(&path, id.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

fn check_id(kind: &str, got: i32, want: &IpcPerm) -> io::Result<()> {
    if got < 0 {
        return Err(os_err(format!("{kind}get(key {:#x})", want.key)));
    }
    if got != want.id {
        return Err(io::Error::other(format!(
            "{kind}: got id {got}, wanted {} (is the IPC namespace fresh?)",
            want.id
        )));
    }
    Ok(())
}

/// Recreates every object of `state` with its id, key, mode, owner and
/// contents (`bytes`: each segment's), in our (fresh) IPC namespace.
pub fn recreate(state: &IpcState, bytes: &ShmBytes) -> io::Result<()> {
    if bytes.len() != state.shm.len() {
        return Err(io::Error::other("SysV IPC: segment bytes missing"));
    }
    for (g, contents) in state.shm.iter().zip(bytes) {
        let p = &g.perm;
        set_next_id("shm", p.id)?;
        let flags = (p.mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL;
        // SAFETY: shmget takes integers only.
        let id = unsafe { libc::shmget(p.key, g.size as usize, flags) };
        check_id("shm", id, p)?;
        // SAFETY: a fresh writable attach at an address the kernel picks.
        let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if at as isize == -1 {
            return Err(os_err(format!("shmat({id})")));
        }
        let n = contents.len().min(g.size as usize);
        // SAFETY: the attach maps g.size writable bytes at `at`; n <= size.
        unsafe {
            std::ptr::copy_nonoverlapping(contents.as_ptr(), at as *mut u8, n);
            libc::shmdt(at);
        }
        // SAFETY: shmid_ds is plain data; IPC_STAT fills it, IPC_SET reads it.
        unsafe {
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 {
                ds.shm_perm.uid = p.uid;
                ds.shm_perm.gid = p.gid;
                if libc::shmctl(id, libc::IPC_SET, &mut ds) != 0 {
                    tracing::warn!(
                        "shm {id}: owner {}:{}: {}",
                        p.uid,
                        p.gid,
                        io::Error::last_os_error()
                    );
                }
            }
        }
    }
    for s in &state.sem {
        let p = &s.perm;
        set_next_id("sem", p.id)?;
        let flags = (p.mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL;
        // SAFETY: semget takes integers only.
        let id = unsafe { libc::semget(p.key, s.values.len() as i32, flags) };
        check_id("sem", id, p)?;
        let mut values = s.values.clone();
        // SAFETY: SETALL reads nsems unsigned shorts from `values`.
        if unsafe { libc::semctl(id, 0, libc::SETALL, values.as_mut_ptr()) } < 0 {
            return Err(os_err(format!("semctl({id}, SETALL)")));
        }
        // SAFETY: semid_ds is plain data; IPC_STAT fills it, IPC_SET reads it.
        unsafe {
            let mut ds: libc::semid_ds = std::mem::zeroed();
            if libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) == 0 {
                ds.sem_perm.uid = p.uid;
                ds.sem_perm.gid = p.gid;
                if libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) != 0 {
                    tracing::warn!("sem {id}: owner: {}", io::Error::last_os_error());
                }
            }
        }
    }
    for q in &state.msg {
        let p = &q.perm;
        set_next_id("msg", p.id)?;
        let flags = (p.mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL;
        // SAFETY: msgget takes integers only.
        let id = unsafe { libc::msgget(p.key, flags) };
        check_id("msg", id, p)?;
        // SAFETY: msqid_ds is plain data; IPC_STAT fills it, IPC_SET reads it.
        unsafe {
            let mut ds: libc::msqid_ds = std::mem::zeroed();
            if libc::msgctl(id, libc::IPC_STAT, &mut ds) == 0 {
                ds.msg_perm.uid = p.uid;
                ds.msg_perm.gid = p.gid;
                ds.msg_qbytes = q.qbytes as _;
                if libc::msgctl(id, libc::IPC_SET, &mut ds) != 0 {
                    tracing::warn!("msg {id}: owner and size: {}", io::Error::last_os_error());
                }
            }
        }
        for (mtype, text) in &q.messages {
            let mut buf = mtype.to_ne_bytes().to_vec();
            buf.extend_from_slice(text);
            // SAFETY: buf holds a long mtype followed by text.len() bytes.
            let r = unsafe { libc::msgsnd(id, buf.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) };
            if r < 0 {
                return Err(os_err(format!("msgsnd({id})")));
            }
        }
    }
    Ok(())
}

/// Removes the segments that were removed while attached (`SHM_DEST`),
/// once the restored processes have attached them again.
pub fn remove_destroyed(ids: &[i32]) -> io::Result<()> {
    for &id in ids {
        // SAFETY: IPC_RMID takes no buffer.
        if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
            return Err(os_err(format!("shmctl({id}, IPC_RMID)")));
        }
    }
    Ok(())
}

/// Sends `state` and the segments' bytes over a control stream: one frame
/// (frames are limited in size), then the bytes raw.
pub fn send<W: Write>(w: &mut W, state: &IpcState, bytes: &ShmBytes) -> io::Result<()> {
    let lens: Vec<u64> = bytes.iter().map(|b| b.len() as u64).collect();
    dmtcp_protocol::write_frame(w, &(state, lens))
        .map_err(|e| io::Error::other(format!("sending IPC state: {e}")))?;
    for b in bytes {
        w.write_all(b)?;
    }
    w.flush()
}

/// Receives what [`send`] sent.
pub fn recv<R: Read>(r: &mut R) -> io::Result<(IpcState, ShmBytes)> {
    let (state, lens): (IpcState, Vec<u64>) = dmtcp_protocol::read_frame(r)
        .map_err(|e| io::Error::other(format!("receiving IPC state: {e}")))?;
    if lens.len() != state.shm.len() {
        return Err(io::Error::other("IPC state: segment count mismatch"));
    }
    let mut bytes = Vec::with_capacity(lens.len());
    for (g, len) in state.shm.iter().zip(lens) {
        if len > g.size {
            return Err(io::Error::other("IPC state: segment bytes exceed its size"));
        }
        let mut b = vec![0u8; len as usize];
        r.read_exact(&mut b)?;
        bytes.push(b);
    }
    Ok((state, bytes))
}

/// Stores a segment's bytes as page runs of an image (zero pages skipped);
/// each run's `addr` is its byte offset in the segment.
pub fn store_pages(
    writer: &mut dmtcp_image::ImageWriter,
    bytes: &[u8],
) -> io::Result<Vec<dmtcp_image::PageRun>> {
    const PAGE: usize = dmtcp_image::PAGE_SIZE as usize;
    const MAX_RUN: usize = 1024;
    let npages = bytes.len().div_ceil(PAGE);
    let page = |i: usize| &bytes[i * PAGE..((i + 1) * PAGE).min(bytes.len())];
    let zero = |i: usize| page(i).iter().all(|&b| b == 0);
    let mut runs = Vec::new();
    let mut i = 0;
    while i < npages {
        if zero(i) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < npages && j - i < MAX_RUN && !zero(j) {
            j += 1;
        }
        let mut buf = bytes[i * PAGE..(j * PAGE).min(bytes.len())].to_vec();
        buf.resize((j - i) * PAGE, 0);
        let data = writer
            .add_pages(&buf)
            .map_err(|e| io::Error::other(e.to_string()))?;
        runs.push(dmtcp_image::PageRun {
            addr: (i * PAGE) as u64,
            npages: (j - i) as u64,
            data,
        });
        i = j;
    }
    Ok(runs)
}

/// Reads back what [`store_pages`] stored: the segment's bytes.
pub fn load_pages(reader: &dmtcp_image::ImageReader, g: &ShmSegment) -> io::Result<Vec<u8>> {
    let len = g.size.next_multiple_of(dmtcp_image::PAGE_SIZE) as usize;
    let mut out = vec![0u8; len];
    for r in &g.pages {
        let start = r.addr as usize;
        let end = start + (r.npages * dmtcp_image::PAGE_SIZE) as usize;
        if end > len {
            return Err(io::Error::other(format!(
                "shm {}: saved pages beyond its size",
                g.perm.id
            )));
        }
        reader
            .read_run(r, &mut out[start..end])
            .map_err(|e| io::Error::other(format!("shm {}: {e}", g.perm.id)))?;
    }
    out.truncate(g.size as usize);
    let used = out.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    out.truncate(used);
    Ok(out)
}
