//! Process trees: every process of the computation, the channels between
//! them, and their pids, parents, groups and sessions survive.

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    tree => tree_pipe_shared_fd;
    zombie => zombies_stay_zombies;
    shmem => shared_anonymous_memory;
}

/// Parent -> child pipe stream, a shared-offset log fd, a grandchild in the
/// child's process group; ids and exit statuses checked by the program.
fn tree_pipe_shared_fd(env: &mut TestEnv) {
    Scenario::new("tree")
        .arg(env.work.join("tree.log"))
        .run(env);
}

/// Zombies keep their place and status; a live child's exit after restart
/// raises SIGCHLD and is reaped with its status.
fn zombies_stay_zombies(env: &mut TestEnv) {
    Scenario::new("zombie").run(env);
}

/// MAP_SHARED|MAP_ANONYMOUS memory keeps its contents and stays shared
/// between parent and child.
fn shared_anonymous_memory(env: &mut TestEnv) {
    Scenario::new("shmem").run(env);
}
