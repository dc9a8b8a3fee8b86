//! Who belongs to an attached computation (`dmtcp-attach`).
//!
//! A launched computation is every descendant of its nsinit. An attached
//! tree has no such root of ours: its members are the processes attached
//! (the target and its descendants at attach time), every descendant of a
//! member found since, and, with `--session`/`--pgid`, every process of
//! the target's session or process group (daemonized members that were
//! reparented to init). Membership is kept by looking at `/proc`, not by
//! staying the tree's tracer: between checkpoints the programs run with no
//! tracer and no stop at all, a debugger can attach to them, and nothing
//! changes for them if the attacher dies. Each member is known by its pid
//! and start time, so a pid reused by an unrelated process is not adopted.
//!
//! The one case this misses: a process created *and* reparented away
//! (a double fork whose middle process exits) between two looks, when it
//! is not in the session or group the options name. Looks happen every
//! second and, repeated until nothing new appears, at every freeze.

use std::collections::{BTreeMap, HashMap};
use std::fs;

use crate::kernel::pid::HostPid;

/// Which outside-the-tree processes belong too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The target and its descendants only.
    Tree,
    /// Also every process of this session.
    Session(i32),
    /// Also every process of this process group.
    Pgid(i32),
}

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub start: u64,
    /// State Z: exited, waiting for its parent.
    pub zombie: bool,
}

/// Reads `/proc/PID/stat`: parent, group, session, start time.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state).
    let n = |i: usize| f.get(i - 3).and_then(|s| s.parse::<i64>().ok());
    Some(ProcStat {
        zombie: f.first() == Some(&"Z"),
        ppid: n(4)? as i32,
        pgid: n(5)? as i32,
        sid: n(6)? as i32,
        start: n(22)? as u64,
    })
}

/// Every process of the pid namespace our `/proc` shows.
fn all_processes() -> HashMap<i32, ProcStat> {
    let mut out = HashMap::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(st) = proc_stat(pid) {
            out.insert(pid, st);
        }
    }
    out
}

/// The members of an attached computation.
#[derive(Debug)]
pub struct Members {
    scope: Scope,
    /// pid -> start time of every member seen alive at the last look.
    known: BTreeMap<i32, u64>,
    /// Never a member: the attacher itself.
    own: i32,
}

impl Members {
    /// The target and, per `scope`, what belongs with it (looked up now).
    pub fn new(target: HostPid, start: u64, scope: Scope) -> Members {
        let mut m = Members {
            scope,
            known: BTreeMap::from([(target.0, start)]),
            own: std::process::id() as i32,
        };
        m.refresh();
        m
    }

    /// The scope the members were chosen by.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Looks at `/proc` again: drops members that are gone (or whose pid
    /// now names another process), adds their descendants and the
    /// processes of the scope; returns the members, lowest pid first.
    pub fn refresh(&mut self) -> Vec<HostPid> {
        let all = all_processes();
        self.known
            .retain(|pid, start| all.get(pid).is_some_and(|s| s.start == *start));
        // A zombie whose parent is outside the tree is the parent's to
        // collect: it has left the computation. (One whose parent is a
        // member stays: it is captured as a zombie.)
        let outside_zombies: Vec<i32> = self
            .known
            .keys()
            .copied()
            .filter(|p| {
                all.get(p)
                    .is_some_and(|s| s.zombie && !self.known.contains_key(&s.ppid))
            })
            .collect();
        for p in outside_zombies {
            self.known.remove(&p);
        }
        loop {
            let mut added = false;
            for (&pid, st) in &all {
                if pid == self.own || self.known.contains_key(&pid) {
                    continue;
                }
                let child_of_member = self.known.contains_key(&st.ppid);
                let in_scope = match self.scope {
                    Scope::Tree => false,
                    Scope::Session(s) => st.sid == s,
                    Scope::Pgid(g) => st.pgid == g,
                };
                if child_of_member || in_scope {
                    self.known.insert(pid, st.start);
                    added = true;
                }
            }
            if !added {
                break;
            }
        }
        self.pids()
    }

    /// The members as of the last look.
    pub fn pids(&self) -> Vec<HostPid> {
        self.known.keys().map(|&p| HostPid(p)).collect()
    }

    /// Whether `pid` was a member at the last look.
    pub fn contains(&self, pid: i32) -> bool {
        self.known.contains_key(&pid)
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Parent, group and session of a captured member as a restart recreates
/// them: ids of members are kept (they are their pids in the restarted
/// namespace), ids of processes outside the tree become 0 ("outside", as
/// for a launched computation: the restart puts the process under nsinit,
/// in the restarting tool's session).
pub fn tree_ids_in(stat: &ProcStat, is_member: impl Fn(i32) -> bool) -> (u32, u32, u32) {
    let keep = |id: i32| {
        if id > 0 && is_member(id) {
            id as u32
        } else {
            0
        }
    };
    (keep(stat.ppid), keep(stat.pgid), keep(stat.sid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_comm() {
        let s = "4242 (a b) c) S 10 4242 9 34816 4242 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        let st = parse_stat(s).expect("parsed");
        assert_eq!(
            st,
            ProcStat {
                ppid: 10,
                pgid: 4242,
                sid: 9,
                start: 777,
                zombie: false,
            }
        );
    }

    #[test]
    fn outside_ids_become_zero() {
        let st = ProcStat {
            ppid: 10,
            pgid: 4242,
            sid: 9,
            start: 0,
            zombie: false,
        };
        assert_eq!(tree_ids_in(&st, |p| p == 4242), (0, 4242, 0));
        assert_eq!(tree_ids_in(&st, |p| p == 10 || p == 9), (10, 0, 9));
    }
}
