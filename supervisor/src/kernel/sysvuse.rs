//! Which SysV IPC objects of the current IPC namespace processes have used
//! (`/proc/sysvipc`, and `semctl(GETPID)` for semaphores): a computation
//! without an IPC namespace of its own cannot keep them across a restart.

use std::collections::HashSet;

/// Columns of a `/proc/sysvipc/*` table by header name, one map per row.
fn rows(kind: &str) -> Vec<Vec<(String, i64)>> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let Some(head) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = head.split_whitespace().collect();
    lines
        .map(|l| {
            names
                .iter()
                .zip(l.split_whitespace())
                .filter_map(|(n, v)| v.parse().ok().map(|v| (n.to_string(), v)))
                .collect()
        })
        .collect()
}

fn col(row: &[(String, i64)], name: &str) -> i64 {
    row.iter().find(|(n, _)| n == name).map_or(-1, |(_, v)| *v)
}

/// The last process that operated on semaphore `num` of set `id`.
fn sem_pid(id: i32, num: i32) -> i32 {
    // SAFETY: semctl GETPID takes integers only and touches no memory.
    unsafe { libc::semctl(id, num, libc::GETPID) }
}

/// The first SysV object (named) that one of `pids` created or used last:
/// a shared memory segment (creator or last attach/detach), a message
/// queue (last sender or receiver), a semaphore set (last operation).
pub fn used_by(pids: &HashSet<i32>) -> Option<String> {
    let has = |v: i64| v > 0 && pids.contains(&(v as i32));
    for r in rows("shm") {
        if has(col(&r, "cpid")) || has(col(&r, "lpid")) {
            return Some(format!("SysV shared memory segment {}", col(&r, "shmid")));
        }
    }
    for r in rows("msg") {
        if has(col(&r, "lspid")) || has(col(&r, "lrpid")) {
            return Some(format!("SysV message queue {}", col(&r, "msqid")));
        }
    }
    for r in rows("sem") {
        let id = col(&r, "semid") as i32;
        if (0..col(&r, "nsems") as i32).any(|n| has(i64::from(sem_pid(id, n)))) {
            return Some(format!("SysV semaphore set {id}"));
        }
    }
    None
}
