//! Attaching SysV shared memory segments at restart.
//!
//! nsinit has recreated every segment with its id and contents before the
//! shells were forked; here each process attaches the segments it had
//! attached, at the same address, by an injected `shmat`. A segment is
//! always attached whole: the parts the process had unmapped (a mapping
//! that starts at an offset or ends early) are unmapped again at once.

use std::collections::{BTreeMap, HashMap};
use std::io;

use crate::kernel::pid::HostPid;
use crate::kernel::remote::Injector;
use dmtcp_image::{Vma, VmaKind, PAGE_SIZE};

const SHM_RDONLY: u64 = 0o10000;
const SHM_EXEC: u64 = 0o100000;

fn err(pid: HostPid, what: String, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("restoring pid {pid}: {what}: {e}"))
}

/// Attaches every SysV segment `vmas` show, at its saved address.
/// `sizes` gives each segment's size by id.
pub fn attach_segments(
    inj: &mut Injector,
    pid: HostPid,
    vmas: &[Vma],
    sizes: &HashMap<i32, u64>,
) -> io::Result<()> {
    // One attach per (segment, address of its start): several VMAs when
    // mprotect split it.
    let mut attaches: BTreeMap<(u64, i32), Vec<&Vma>> = BTreeMap::new();
    for v in vmas {
        if let VmaKind::SysvShm { id, offset } = v.kind {
            attaches.entry((v.start - offset, id)).or_default().push(v);
        }
    }
    for ((base, id), pieces) in attaches {
        let size = *sizes.get(&id).ok_or_else(|| {
            err(
                pid,
                format!("SysV shared memory {id}"),
                "segment missing from the images",
            )
        })?;
        let len = size.next_multiple_of(PAGE_SIZE);
        let write = pieces.iter().any(|v| v.prot & libc::PROT_WRITE as u32 != 0);
        let exec = pieces.iter().any(|v| v.prot & libc::PROT_EXEC as u32 != 0);
        let mut flags = 0;
        if !write {
            flags |= SHM_RDONLY;
        }
        if exec {
            flags |= SHM_EXEC;
        }
        let got = inj
            .syscall(libc::SYS_shmat, [id as u64, base, flags, 0, 0, 0])
            .map_err(|e| err(pid, format!("shmat({id}) at {base:#x}"), e))?;
        if got != base {
            return Err(err(
                pid,
                format!("shmat({id})"),
                format!("attached at {got:#x}, wanted {base:#x}"),
            ));
        }
        let mut covered: Vec<(u64, u64)> = pieces.iter().map(|v| (v.start, v.end)).collect();
        covered.sort();
        let mut from = base;
        for (start, end) in covered
            .into_iter()
            .chain(std::iter::once((base + len, base + len)))
        {
            if start > from {
                inj.syscall(libc::SYS_munmap, [from, start - from, 0, 0, 0, 0])
                    .map_err(|e| err(pid, format!("unmapping part of shm {id}"), e))?;
            }
            from = from.max(end);
        }
    }
    Ok(())
}
