//! Process trees: every process of the computation, the channels between
//! them, and their pids, parents, groups and sessions survive.

use dmtcp_tests::{e2e_tests, ProcCheck, Scenario, TestEnv};

e2e_tests! {
    tree => tree_pipe_shared_fd;
    zombie => zombies_stay_zombies;
    shmem => shared_anonymous_memory;
    pipeline => bash_pipeline;
    py_subprocess => python_subprocess_pipes;
    popen => popen_and_system;
}

/// popen() of `seq` with the pipe full at checkpoint time: every number
/// arrives once, in order; system() keeps returning its command's status.
/// The program spawns children all the time, and posix_spawn blocks every
/// signal around its clone: the harness's /proc snapshot, read just before
/// the checkpoint, can catch a mask the checkpoint itself does not, so /proc
/// differences are reported, not fatal; the program checks its own state.
fn popen_and_system(env: &mut TestEnv) {
    let mut sc = Scenario::new("popen");
    sc.proc_check = ProcCheck::Warn;
    sc.run(env);
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

fn interpreter(path: &str) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `seq | while read` in bash continues with no number lost or repeated.
fn bash_pipeline(env: &mut TestEnv) {
    Scenario::new("pipeline")
        .image_name(&interpreter("/bin/bash"))
        .run(env);
}

/// Python's subprocess: a `cat` child over two pipes, and an exec chain
/// (`sh -c 'exec sleep ...'`).
fn python_subprocess_pipes(env: &mut TestEnv) {
    Scenario::new("py_subprocess")
        .image_name("python3")
        .run(env);
}
