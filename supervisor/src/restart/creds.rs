//! The credentials a restored process gets: what its image recorded, never
//! more than the restarting user has and than the image file's owner had
//! (docs/security.md, "Credentials at restart").
//!
//! [`grant`] decides (before any process exists) and refuses in one line
//! what cannot be given; [`apply_ids`] sets the ids in one thread by
//! injected syscalls. Capabilities are set after the ids, by
//! `resources::threads` (per thread too).

use std::io;

use crate::kernel::procfs::Mem;
use crate::kernel::remote::Injector;
use crate::resources::restore_err as err;
use crate::resources::threads::put_scratch;
use dmtcp_image::{Capabilities, ProcessInfo};

/// `SECBIT_NO_SETUID_FIXUP`: uid changes leave the capability sets alone,
/// so the thread keeps CAP_SETUID/CAP_SETPCAP until `capset` sets the
/// recorded sets.
const SECBIT_NO_SETUID_FIXUP: u64 = 1 << 2;

/// What the restarting user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarter {
    /// Effective uid and gid of `dmtcp-restart`.
    pub uid: u32,
    pub gid: u32,
}

impl Restarter {
    pub fn current() -> Restarter {
        Restarter {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    /// Root restarts in the host's user namespace; anyone else in a user
    /// namespace mapping only their own uid and gid (`roles/spawn.rs`).
    fn in_userns(&self) -> bool {
        self.uid != 0
    }
}

/// The image file's owner: its uid and the groups that user belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    /// The owner's primary gid, its supplementary groups (from the user
    /// database) and the image file's group.
    pub gids: Vec<u32>,
}

impl Owner {
    /// The owner of an image file with owner `uid` and group `file_gid`.
    pub fn of_file(uid: u32, file_gid: u32) -> Owner {
        let mut gids = vec![file_gid];
        if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            gids.push(u.gid.as_raw());
            if let Ok(name) = std::ffi::CString::new(u.name.as_bytes()) {
                if let Ok(groups) = nix::unistd::getgrouplist(&name, u.gid) {
                    gids.extend(groups.iter().map(|g| g.as_raw()));
                }
            }
        }
        gids.sort_unstable();
        gids.dedup();
        Owner { uid, gids }
    }
}

/// The filesystem uid, gid and groups a process's files are opened with
/// at restart (by nsinit and in the shell).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The credentials given to every thread of one restored process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Real, effective, saved, filesystem.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    /// Supplementary groups; None: left as the shell has them (in a user
    /// namespace `setgroups` is denied, and the restarting user's own
    /// groups stay).
    pub groups: Option<Vec<u32>>,
    pub securebits: u32,
    pub caps: Capabilities,
    /// Root restarting another user's image: open the process's files
    /// (fds, cwd, mapped files) with that user's access, not root's.
    pub open_as: Option<OpenAs>,
}

/// The ids recorded in `p` (images without `creds` give their real ids).
fn recorded(p: &ProcessInfo) -> ([u32; 4], [u32; 4], Vec<u32>) {
    let c = &p.creds;
    if c.uids == [0; 4] && c.gids == [0; 4] && (p.uid, p.gid) != (0, 0) {
        return ([p.uid; 4], [p.gid; 4], Vec::new());
    }
    (c.uids, c.gids, c.groups.clone())
}

/// Decides the credentials of the process `p` of image `path` owned by
/// `owner`, restarted by `me`; refuses in one line what would give more
/// than either has.
pub fn grant(
    p: &ProcessInfo,
    owner: &Owner,
    me: &Restarter,
    path: &str,
) -> Result<Granted, String> {
    if p.zombie.is_some() {
        // A zombie's image records no ids and its shell only dies again:
        // nothing to give.
        return Ok(Granted {
            uids: [me.uid; 4],
            gids: [me.gid; 4],
            groups: None,
            securebits: 0,
            caps: Capabilities::default(),
            open_as: None,
        });
    }
    let (uids, gids, groups) = recorded(p);
    let who = format!("{path}: pid {}", p.vpid);
    if me.in_userns() {
        // The user namespace maps one uid and one gid: nothing else can be
        // given, and a different id in the image (only a hand-made image
        // has one) is refused rather than silently changed.
        if let Some(u) = uids.iter().find(|&&u| u != me.uid) {
            return Err(format!(
                "{who} ran as uid {u}, but an unprivileged restart can only give its own uid {}: restart it as root",
                me.uid
            ));
        }
        if let Some(g) = gids.iter().find(|&&g| g != me.gid) {
            return Err(format!(
                "{who} ran with gid {g}, but an unprivileged restart can only give its own gid {}: restart it as root",
                me.gid
            ));
        }
        return Ok(Granted {
            uids,
            gids,
            groups: None,
            securebits: p.creds.securebits.unwrap_or(0),
            // Capabilities of our own user namespace only.
            caps: p.caps,
            // Files are opened as ourselves anyway.
            open_as: None,
        });
    }
    if owner.uid != 0 {
        // Root restarting another user's image: that user, never more.
        if let Some(u) = uids.iter().find(|&&u| u != owner.uid) {
            return Err(format!(
                "{who} ran as uid {u}, but the image belongs to uid {}: refusing to give another user's image uid {u}",
                owner.uid
            ));
        }
        if let Some(g) = gids
            .iter()
            .chain(groups.iter())
            .find(|g| !owner.gids.contains(g))
        {
            return Err(format!(
                "{who} ran with group {g}, which uid {} (the image's owner) is not a member of: refusing",
                owner.uid
            ));
        }
        return Ok(Granted {
            uids,
            gids,
            groups: Some(groups.clone()),
            securebits: p.creds.securebits.unwrap_or(0),
            // An ordinary user has no capabilities to give: none, whatever
            // the image says (only the bounding set, a limit, is kept).
            caps: Capabilities {
                bounding: p.caps.bounding,
                ..Capabilities::default()
            },
            open_as: Some(OpenAs {
                uid: uids[3],
                gid: gids[3],
                groups: groups.clone(),
            }),
        });
    }
    // Root's own image restarted by root: exactly what it recorded.
    Ok(Granted {
        uids,
        gids,
        groups: Some(groups),
        securebits: p.creds.securebits.unwrap_or(0),
        caps: p.caps,
        // Root's own image: its fds were open, whatever ids it dropped to
        // afterwards (a file opened before dropping privileges included).
        open_as: None,
    })
}

/// Sets the ids of `g` in the stopped thread of `inj` (the thread still
/// has every capability of its shell): securebits with no setuid fixup
/// first, so that the uid change keeps the capabilities `capset` needs
/// afterwards, then groups, gids, uids and the recorded securebits. Each
/// id is read back.
pub fn apply_ids(inj: &mut Injector, mem: &Mem, tramp: u64, g: &Granted) -> io::Result<()> {
    let tid = inj.tid;
    let prctl = |inj: &mut Injector, bits: u64| {
        inj.syscall(
            libc::SYS_prctl,
            [libc::PR_SET_SECUREBITS as u64, bits, 0, 0, 0, 0],
        )
    };
    // Without namespaces and without root, the shell has no capability:
    // the ids are ours already (checked by `grant`), and securebits take
    // CAP_SETPCAP even to be set to what they are.
    let unprivileged = crate::kernel::pid::virt::enabled() && !nix::unistd::geteuid().is_root();
    if unprivileged && g.securebits != 0 {
        return Err(err(
            tid,
            "securebits",
            format!(
                "{:#x} cannot be set again without privileges (restarted without namespaces)",
                g.securebits
            ),
        ));
    }
    if !unprivileged {
        prctl(inj, SECBIT_NO_SETUID_FIXUP).map_err(|e| err(tid, "securebits", e))?;
    }
    if let Some(groups) = &g.groups {
        let bytes: Vec<u8> = groups.iter().flat_map(|x| x.to_ne_bytes()).collect();
        let a = put_scratch(mem, tramp, &bytes)?;
        inj.syscall(libc::SYS_setgroups, [groups.len() as u64, a, 0, 0, 0, 0])
            .map_err(|e| err(tid, "setgroups", e))?;
    }
    let [r, e, s, fs] = g.gids;
    inj.syscall(libc::SYS_setresgid, [r as u64, e as u64, s as u64, 0, 0, 0])
        .map_err(|x| err(tid, "setresgid", x))?;
    inj.syscall(libc::SYS_setfsgid, [fs as u64, 0, 0, 0, 0, 0])?;
    let [r, e, s, fs] = g.uids;
    inj.syscall(libc::SYS_setresuid, [r as u64, e as u64, s as u64, 0, 0, 0])
        .map_err(|x| err(tid, "setresuid", x))?;
    inj.syscall(libc::SYS_setfsuid, [fs as u64, 0, 0, 0, 0, 0])?;
    // setfs[ug]id return the previous id and never fail: read them back
    // (an invalid id changes nothing and returns the current one).
    let fsgid = inj.syscall(libc::SYS_setfsgid, [u32::MAX as u64, 0, 0, 0, 0, 0])? as u32;
    let fsuid = inj.syscall(libc::SYS_setfsuid, [u32::MAX as u64, 0, 0, 0, 0, 0])? as u32;
    if (fsuid, fsgid) != (g.uids[3], g.gids[3]) {
        return Err(err(
            tid,
            "filesystem ids",
            format!(
                "got uid {fsuid} gid {fsgid}, wanted uid {} gid {}",
                g.uids[3], g.gids[3]
            ),
        ));
    }
    if !unprivileged {
        prctl(inj, g.securebits as u64).map_err(|e| err(tid, "securebits", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(uids: [u32; 4], gids: [u32; 4], groups: Vec<u32>, caps: u64) -> ProcessInfo {
        ProcessInfo {
            vpid: 2,
            vppid: 1,
            vpgid: 2,
            vsid: 2,
            host_pid: 0,
            comm: String::new(),
            exe: String::new(),
            cmdline: Vec::new(),
            cwd: "/".into(),
            umask: 0o022,
            rlimits: Vec::new(),
            personality: 0,
            caps: Capabilities {
                permitted: caps,
                effective: caps,
                bounding: u64::MAX,
                ..Capabilities::default()
            },
            uid: uids[0],
            gid: gids[0],
            creds: dmtcp_image::Credentials {
                uids,
                gids,
                groups,
                securebits: Some(0),
            },
            no_new_privs: false,
            dumpable: 1,
            mm: Default::default(),
            auxv: Vec::new(),
            sigactions: Vec::new(),
            shared_pending: Vec::new(),
            itimers: [(0, 0); 3],
            child_subreaper: false,
            posix_timers: Vec::new(),
            zombie: None,
            ctty: None,
        }
    }

    const ROOT: Restarter = Restarter { uid: 0, gid: 0 };

    #[test]
    fn root_image_of_dropped_process_keeps_its_ids_and_no_caps() {
        let p = process([65534; 4], [65534; 4], vec![], 0);
        let owner = Owner {
            uid: 0,
            gids: vec![0],
        };
        let g = grant(&p, &owner, &ROOT, "x").unwrap();
        assert_eq!(g.uids, [65534; 4]);
        assert_eq!(g.groups, Some(vec![]));
        assert_eq!(g.caps.effective, 0);
    }

    #[test]
    fn root_restarting_another_users_image_gives_that_user_only() {
        let owner = Owner {
            uid: 65534,
            gids: vec![65534],
        };
        let p = process([65534; 4], [65534; 4], vec![], u64::MAX);
        let g = grant(&p, &owner, &ROOT, "x").unwrap();
        assert_eq!(g.uids, [65534; 4]);
        assert_eq!((g.caps.permitted, g.caps.effective), (0, 0));
        assert_eq!(g.open_as.as_ref().map(|a| a.uid), Some(65534));
        let p = process([65534, 0, 65534, 0], [65534; 4], vec![], 0);
        let e = grant(&p, &owner, &ROOT, "img").unwrap_err();
        assert!(e.contains("ran as uid 0"), "{e}");
        let p = process([65534; 4], [65534; 4], vec![0], 0);
        assert!(grant(&p, &owner, &ROOT, "img").is_err());
    }

    #[test]
    fn unprivileged_restart_gives_only_its_own_ids() {
        let me = Restarter {
            uid: 1000,
            gid: 1000,
        };
        let owner = Owner {
            uid: 1000,
            gids: vec![1000],
        };
        let p = process([1000; 4], [1000; 4], vec![4, 1000], 0);
        let g = grant(&p, &owner, &me, "x").unwrap();
        assert_eq!(g.groups, None);
        let p = process([0; 4], [0; 4], vec![], 0);
        let mut p2 = p.clone();
        p2.uid = 0;
        let e = grant(&p2, &owner, &me, "img").unwrap_err();
        assert!(e.contains("only give its own uid 1000"), "{e}");
    }
}
