//! `--allow-read PATH` / `--allow-write PATH`: a Landlock domain for the
//! computation. At launch the `landlock` crate builds it in the program's
//! process just before the exec (best effort: what the running kernel's
//! Landlock ABI supports, said on stderr when less than asked); at restart
//! the same rules are rebuilt in every restored thread by injected
//! `landlock_*` calls, after the restore's own file work and before the
//! seccomp filters. The rules handle every file-system right up to ABI 5;
//! read paths get execute, read-file and read-dir, write paths all.

use std::io;

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};

use dmtcp_image::{SandboxInfo, ThreadState};

use crate::kernel::pid::{HostPid, RemoteAddr};
use crate::kernel::procfs::Mem;
use crate::kernel::remote::Injector;

const FS_ABI: ABI = ABI::V5;
const LANDLOCK_CREATE_RULESET_VERSION: u64 = 1;
const LANDLOCK_RULE_PATH_BENEATH: u64 = 1;
/// Rights that apply to files (not only directories).
const FILE_RIGHTS: u64 = 1 | 2 | 4 | (1 << 14) | (1 << 15);
const READ_RIGHTS: u64 = 1 | 4 | 8;

/// Restricts the calling process (a forked child about to exec).
/// Returns a warning when the kernel enforces less than asked.
pub fn restrict_self(read: &[String], write: &[String]) -> Result<Option<String>, String> {
    let all = AccessFs::from_all(FS_ABI);
    let status = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(read, AccessFs::from_read(FS_ABI))))
        .and_then(|r| r.add_rules(path_beneath_rules(write, all)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("Landlock: {e}"))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => None,
        RulesetStatus::PartiallyEnforced => Some(
            "warning: this kernel's Landlock enforces only part of --allow-read/--allow-write"
                .into(),
        ),
        RulesetStatus::NotEnforced => Some(
            "warning: this kernel has no Landlock: --allow-read/--allow-write are not enforced"
                .into(),
        ),
    })
}

/// Every right the running kernel handles (as the crate's best effort did).
fn handled(abi: i64) -> u64 {
    let mut m = (1u64 << 13) - 1;
    if abi >= 2 {
        m |= 1 << 13;
    }
    if abi >= 3 {
        m |= 1 << 14;
    }
    if abi >= 5 {
        m |= 1 << 15;
    }
    m
}

/// Builds the domain again in every thread of a restored process.
/// `threads` are stopped; `insn` a `syscall` instruction of the process.
pub fn restore(
    pid: HostPid,
    info: &SandboxInfo,
    threads: &mut [(&ThreadState, Injector)],
    mem: &Mem,
    insn: RemoteAddr,
) -> io::Result<()> {
    if info.allow_read.is_empty() && info.allow_write.is_empty() {
        return Ok(());
    }
    let err = |what: &str, e: io::Error| crate::resources::restore_err(pid, what, e);
    for (_, inj) in threads.iter_mut() {
        inj.insn = insn;
    }
    let last = threads.len() - 1;
    let leader = &mut threads[last].1;
    let abi = leader.raw_syscall(
        libc::SYS_landlock_create_ruleset,
        [0, 0, LANDLOCK_CREATE_RULESET_VERSION, 0, 0, 0],
    )?;
    if abi <= 0 {
        tracing::warn!("pid {pid}: this kernel has no Landlock: --allow-read/--allow-write are not enforced after the restart");
        return Ok(());
    }
    let handled = handled(abi);
    let area = leader
        .syscall(
            libc::SYS_mmap,
            [
                0,
                dmtcp_image::PAGE_SIZE,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .map_err(|e| err("Landlock scratch", e))?;
    let result = (|| -> io::Result<()> {
        let leader = &mut threads[last].1;
        // struct landlock_ruleset_attr { u64 handled_access_fs; } (the
        // network and scope fields stay unhandled: size 8).
        mem.write(RemoteAddr(area), &handled.to_ne_bytes())?;
        let rs = leader
            .syscall(libc::SYS_landlock_create_ruleset, [area, 8, 0, 0, 0, 0])
            .map_err(|e| err("landlock_create_ruleset", e))?;
        let rules = info
            .allow_read
            .iter()
            .map(|p| (p, READ_RIGHTS))
            .chain(info.allow_write.iter().map(|p| (p, handled)));
        for (path, rights) in rules {
            let mut b = path.as_bytes().to_vec();
            b.push(0);
            if b.len() > 3000 {
                return Err(err(
                    "Landlock",
                    io::Error::other(format!("path too long: {path}")),
                ));
            }
            mem.write(RemoteAddr(area + 64), &b)?;
            let fd = leader.raw_syscall(
                libc::SYS_openat,
                [
                    libc::AT_FDCWD as u64,
                    area + 64,
                    (libc::O_PATH | libc::O_CLOEXEC) as u64,
                    0,
                    0,
                    0,
                ],
            )?;
            if fd < 0 {
                // Gone since the launch (or on this machine): no access
                // through it, as the crate does for a missing path.
                tracing::warn!(
                    "pid {pid}: Landlock path {path}: {}",
                    io::Error::from_raw_os_error(-fd as i32)
                );
                continue;
            }
            let st = std::fs::metadata(path).ok();
            let mut allowed = rights & handled;
            if st.is_some_and(|m| !m.is_dir()) {
                allowed &= FILE_RIGHTS;
            }
            // struct landlock_path_beneath_attr { u64 allowed_access; s32 parent_fd; } packed.
            let mut a = allowed.to_ne_bytes().to_vec();
            a.extend_from_slice(&(fd as i32).to_ne_bytes());
            mem.write(RemoteAddr(area + 16), &a)?;
            let r = leader.raw_syscall(
                libc::SYS_landlock_add_rule,
                [rs, LANDLOCK_RULE_PATH_BENEATH, area + 16, 0, 0, 0],
            );
            leader.syscall(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])?;
            let r = r?;
            if r < 0 {
                return Err(err(
                    &format!("landlock_add_rule {path}"),
                    io::Error::from_raw_os_error(-r as i32),
                ));
            }
        }
        for (t, inj) in threads.iter_mut() {
            inj.syscall(libc::SYS_landlock_restrict_self, [rs, 0, 0, 0, 0, 0])
                .map_err(|e| err(&format!("landlock_restrict_self in thread {}", t.vtid), e))?;
        }
        threads[last]
            .1
            .syscall(libc::SYS_close, [rs, 0, 0, 0, 0, 0])?;
        Ok(())
    })();
    let unmap = threads[last]
        .1
        .syscall(libc::SYS_munmap, [area, dmtcp_image::PAGE_SIZE, 0, 0, 0, 0]);
    result?;
    unmap.map(drop)
}
