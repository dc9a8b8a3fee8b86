//! IPC objects of the computation's IPC namespace: SysV shared memory,
//! semaphores and message queues keep their ids and contents; POSIX
//! message queues keep their name, attributes and messages; memfds stay
//! memfds, shared with their mappings; file locks are held again.

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    sysv_shm => sysv_ipc_keeps_ids_and_sharing;
    posix_mq => posix_mqueue_keeps_messages;
    memfd => memfds_stay_memfds;
    locks => file_locks_held_again;
}

/// Parent and child take turns on a counter in one SysV segment (sharing
/// and the shmid checked after each restart); an unattached segment, one
/// removed while attached, a semaphore set and a message queue come back.
fn sysv_ipc_keeps_ids_and_sharing(env: &mut TestEnv) {
    Scenario::new("sysv_shm").run(env);
}

/// Messages of several priorities always in flight, checked one by one
/// against the program's own model, with the queue's attributes.
fn posix_mqueue_keeps_messages(env: &mut TestEnv) {
    Scenario::new("posix_mq").run(env);
}

/// A memfd with seals, size, offset and a shared mapping checked for
/// coherence with the fd; a write-sealed memfd; a memfd only a mapping
/// holds, shared with a child.
fn memfds_stay_memfds(env: &mut TestEnv) {
    Scenario::new("memfd").run(env);
}

/// flock(), POSIX record and OFD locks of the parent still conflict with a
/// child's own descriptions after each restart.
fn file_locks_held_again(env: &mut TestEnv) {
    let prefix = env.work.join("lock");
    Scenario::new("locks").arg(&prefix).run(env);
}
