//! The application API (`inject/include/dmtcp.h`) end to end: the program
//! checkpoints itself, is restarted from that very checkpoint (the call then
//! returns DMTCP_AFTER_RESTART), goes through the usual checkpoint/restart
//! rounds while a thread keeps opening 300 ms `dmtcp_disable_ckpt()`
//! sections (no checkpoint may land inside one), and checkpoints itself
//! once more at the end (the coordinator is found after restarts). Also a
//! program whose own plugin ends a process in PRESUSPEND.

use std::fs;
use std::path::PathBuf;

use dmtcp_tests::{e2e_tests, Mode, Scenario, TestEnv};

e2e_tests! {
    api => api_checkpoint_restart;
    presuspend_kill => presuspend_kill;
    kill_in_section => kill_in_section;
}

/// A parent that kills and reaps children inside `dmtcp_disable_ckpt()`
/// sections (as the ssh relay does with its ssh): a checkpoint waiting for
/// the section freezes and thaws it many times, and a child the parent
/// kills while the child is still stopped must be reapable (the program's
/// watchdog fails when a `waitpid` blocks for 10 s).
fn kill_in_section(env: &mut TestEnv) {
    Scenario::new("kill_in_section").run(env);
}

/// A process may end during PRESUSPEND (DMTCP's `presuspend` test): the
/// program's own plugin kills and reaps its child there; each checkpoint
/// goes on without it and the parent forks a new one after RESUME or
/// RESTART (the program checks).
fn presuspend_kill(env: &mut TestEnv) {
    Scenario::new("presuspend_kill").run(env);
}

fn api_checkpoint_restart(env: &mut TestEnv) {
    match Mode::from_env() {
        Mode::Bare => Scenario::new("api").arg("bare").run(env),
        Mode::NoRestart => Scenario::new("api").arg("launch").run(env),
        Mode::Rounds(n) => {
            let sc = Scenario::new("api").arg("self-restart");
            env.start_coordinator();
            let mut r = sc.launch(env);
            // READY comes after the program's own checkpoint: its images
            // hold the thread blocked inside dmtcp_checkpoint().
            let images: Vec<PathBuf> = fs::read_dir(&env.ckpt)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name().is_some_and(|n| {
                                let n = n.to_string_lossy();
                                n.starts_with("ckpt_api_") && n.ends_with(".dmtcp")
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            if images.is_empty() {
                env.fail(&format!(
                    "the program's own dmtcp_checkpoint() wrote no ckpt_api_*.dmtcp in {}",
                    env.ckpt.display()
                ));
            }
            r.kill();
            r.restart_from_images(&images);
            for _ in 0..n {
                r.round();
            }
            r.finish();
        }
    }
}
