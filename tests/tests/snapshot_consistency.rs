//! A checkpoint taken while the program rewrites its whole heap in a loop
//! saves the memory of one instant (issue 20): `heap_rewrite` checks every
//! page against its restored cursor before it touches it again, and the
//! whole heap at stop (see tests/programs/heap_rewrite.c).

use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, Mode, ProcCheck, Scenario, TestEnv};

e2e_tests! {
    snapshot_consistency => heap_rewritten_during_checkpoints;
    snapshot_consistency_incremental => heap_rewritten_during_incremental_checkpoints;
    snapshot_consistency_lz4 => heap_rewritten_during_lz4_checkpoints;
    snapshot_consistency_precopy => heap_rewritten_during_precopy;
    snapshot_consistency_precopy_fork => heap_rewritten_during_precopy_then_fork;
    snapshot_consistency_precopy_incremental => heap_rewritten_during_incremental_precopy;
    snapshot_consistency_precopy_maps => maps_changed_during_precopy;
    snapshot_consistency_precopy_neighbour => heap_next_to_a_moving_mapping_precopied;
    snapshot_consistency_incremental_neighbour => heap_next_to_a_moving_mapping_incremental;
    snapshot_consistency_precopy_on_request => heap_rewritten_during_precopy_on_request;
    snapshot_consistency_precopy_auto => large_heap_precopied_by_default;
    snapshot_consistency_precopy_auto_two => two_heaps_one_precopied_by_default;
    snapshot_consistency_precopy_off => large_heap_not_precopied_when_off;
    past_eof => file_mapped_past_its_end;
    past_eof_precopy => file_mapped_past_its_end_precopied;
}

/// Pre-copy (`DMTCP_PRECOPY=1`) with any residue copied while frozen (no
/// snapshot fork): the heap is rewritten while it is pre-copied and while
/// the checkpoint runs; two rounds. The logs must show that pre-copy ran
/// and took the path asked for.
fn heap_rewritten_during_precopy(env: &mut TestEnv) {
    precopy_rounds(env, "100000", "no snapshot fork");
}

/// The same with the residue always left to the snapshot fork.
fn heap_rewritten_during_precopy_then_fork(env: &mut TestEnv) {
    precopy_rounds(env, "0", "the snapshot fork reads it");
}

/// Pre-copy while the program also changes its memory map at every pass
/// over its heap (`heap_rewrite 8 maps`, a small heap for many passes):
/// the heap moves back and forth with mremap, a side mapping is unmapped
/// and made again at the same address with new contents, and a third one
/// is alternately filled and dropped with `MADV_DONTNEED`, so mappings
/// identical in /proc/PID/maps at the freeze may hold other pages than at
/// the pre-copy.
fn maps_changed_during_precopy(env: &mut TestEnv) {
    precopy_program(env, &["8", "maps"], "100000", "no snapshot fork");
}

/// Pre-copy while a mapping right after the heap moves away and back
/// (`heap_rewrite 32 neighbour`): each time it comes back it merges with
/// the heap, and the kernel then drops the write-protect registration of
/// the merged mapping while the heap's pages keep their write-protect
/// bits, so the heap's later writes look unwritten to the walk at the
/// freeze unless it sees the lost registration (the pre-copied pages,
/// older than the program's cursor, would then be saved).
fn heap_next_to_a_moving_mapping_precopied(env: &mut TestEnv) {
    precopy_program(env, &["32", "neighbour"], "100000", "no snapshot fork");
}

/// The same for incremental images: the registration made at the first
/// checkpoint's freeze is lost when the neighbour comes back, and the
/// second image must not take the heap's rewritten pages from the first.
fn heap_next_to_a_moving_mapping_incremental(env: &mut TestEnv) {
    env.start_coordinator();
    let mut sc = Scenario::new("heap_rewrite")
        .arg("32")
        .arg("neighbour")
        .run_flag("--incremental")
        .run_flag("--compress")
        .run_flag("none");
    sc.proc_check = ProcCheck::Off;
    incremental_rounds(env, &sc, 4);
}

/// Launches `sc` (coordinator started), checkpoints it `n` times 300 ms
/// apart, kills it and restarts it from the last images (an incremental
/// chain when `sc` asks for one); the program checks its memory.
fn incremental_rounds(env: &TestEnv, sc: &Scenario, n: usize) {
    let mut r = sc.launch(env);
    let mut last = Vec::new();
    for _ in 0..n {
        thread::sleep(Duration::from_millis(300));
        last = r.checkpoint();
    }
    r.kill();
    r.restart_from_images(&last);
    r.finish();
}

fn precopy_rounds(env: &mut TestEnv, max_residue_mb: &str, path: &str) {
    precopy_program(env, &["32"], max_residue_mb, path);
}

fn precopy_program(env: &mut TestEnv, args: &[&str], max_residue_mb: &str, path: &str) {
    let mut sc = Scenario::new("heap_rewrite");
    for a in args {
        sc = sc.arg(*a);
    }
    let mut sc = sc
        .env("DMTCP_PRECOPY", "1")
        .env("DMTCP_PRECOPY_MAX_RESIDUE_MB", max_residue_mb)
        .env("DMTCP_LOG", "info")
        .restart_env("DMTCP_LOG", "info")
        .restart_env("DMTCP_PRECOPY", "1")
        .restart_env("DMTCP_PRECOPY_MAX_RESIDUE_MB", max_residue_mb)
        .settle(Duration::from_millis(400));
    sc.mode = Mode::Rounds(2);
    if args.contains(&"maps") || args.contains(&"neighbour") {
        // The program swaps its heap between two addresses all the time
        // (mremap): its maps alternate, so /proc before the checkpoint and
        // after the restart may show either order. Its own check of every
        // page is the test.
        sc.proc_check = ProcCheck::Off;
    }
    sc.run(env);
    expect_in_logs(env, &["pre-copy of", path]);
}

/// `heap_rewrite ARGS` through two rounds with info logs and no
/// `DMTCP_PRECOPY`; the logs must hold each of `want`.
fn default_precopy_rounds(env: &mut TestEnv, args: &[&str], want: &[&str]) {
    let mut sc = Scenario::new("heap_rewrite")
        .env("DMTCP_LOG", "info")
        .restart_env("DMTCP_LOG", "info")
        .settle(Duration::from_millis(400));
    for a in args {
        sc = sc.arg(*a);
    }
    sc.mode = Mode::Rounds(2);
    sc.run(env);
    expect_in_logs(env, want);
}

/// Without `DMTCP_PRECOPY`, a process with 64 MiB or more of private
/// memory (here 96 MiB, rewritten all the time) is pre-copied.
fn large_heap_precopied_by_default(env: &mut TestEnv) {
    default_precopy_rounds(env, &["96"], &["pre-copy of"]);
}

/// Two processes of 40 MiB each, both rewriting their heap, no variable:
/// each is under 64 MiB, together over it, so by default the one taken
/// first is pre-copied and the other takes the snapshot fork (what is left
/// to the forks of one freeze stays under 64 MiB). Both check every page
/// after two rounds.
fn two_heaps_one_precopied_by_default(env: &mut TestEnv) {
    default_precopy_rounds(env, &["40", "fork"], &["pre-copy of", "snapshot fork"]);
}

/// `DMTCP_PRECOPY=0`: the same process takes the snapshot fork only.
fn large_heap_not_precopied_when_off(env: &mut TestEnv) {
    let mut sc = Scenario::new("heap_rewrite")
        .arg("288")
        .env("DMTCP_PRECOPY", "0")
        .env("DMTCP_LOG", "info")
        .restart_env("DMTCP_PRECOPY", "0")
        .restart_env("DMTCP_LOG", "info")
        .settle(Duration::from_millis(400));
    sc.mode = Mode::Rounds(2);
    sc.run(env);
    if logs_text(env).contains("pre-copy of") {
        env.fail("DMTCP_PRECOPY=0, but a checkpoint pre-copied");
    }
}

/// Private mappings of a file that reach past its end (read-only with a
/// PROT_NONE gap, as the loader maps libraries, and read-write with a
/// modified page), checkpointed and restarted twice.
fn file_mapped_past_its_end(env: &mut TestEnv) {
    let mut sc = Scenario::new("past_eof");
    sc.mode = Mode::Rounds(2);
    sc.run(env);
}

/// The same with pre-copy: the write-protect of the pre-copy left markers
/// past the end of the file that pagemap shows as swapped pages, and the
/// freeze tried to read them (`reading 2080768 bytes at ...: Input/output
/// error`; mpirun maps such a library).
fn file_mapped_past_its_end_precopied(env: &mut TestEnv) {
    let mut sc = Scenario::new("past_eof")
        .env("DMTCP_PRECOPY", "1")
        .restart_env("DMTCP_PRECOPY", "1");
    sc.mode = Mode::Rounds(2);
    sc.run(env);
}

/// Pre-copy (`dmtcp-run --precopy`) with incremental images: the second
/// image builds on the first; every page written since the first (before the pre-copy and
/// during it) must be in it. Restarted from the chain.
fn heap_rewritten_during_incremental_precopy(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("heap_rewrite")
        .arg("32")
        .env("DMTCP_PRECOPY_MAX_RESIDUE_MB", "100000")
        .env("DMTCP_LOG", "info")
        .run_flag("--precopy")
        .run_flag("--incremental")
        .run_flag("--compress")
        .run_flag("none");
    incremental_rounds(env, &sc, 2);
    expect_in_logs(env, &["pre-copy of", "no snapshot fork"]);
}

/// Pre-copy asked for by one checkpoint (`dmtcp-command -bc --precopy`,
/// protocol 2.6), not by the launch: that checkpoint pre-copies, the next
/// plain one does not; the heap is rewritten all the while and the
/// restart from the pre-copied image checks every page.
fn heap_rewritten_during_precopy_on_request(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("heap_rewrite")
        .arg("32")
        .env("DMTCP_PRECOPY_MAX_RESIDUE_MB", "100000")
        .env("DMTCP_LOG", "info");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let pre = r.checkpoint_with(&["--precopy"]);
    expect_in_logs(env, &["pre-copy of", "no snapshot fork"]);
    let count = |env: &TestEnv| count_in_logs(env, "pre-copy of");
    let after_first = count(env);
    thread::sleep(Duration::from_millis(300));
    r.checkpoint();
    if count(env) != after_first {
        env.fail("a plain checkpoint after `-bc --precopy` pre-copied too");
    }
    r.kill();
    r.restart_from_images(&pre);
    r.finish();
}

/// How many times `what` appears in the test's logs.
fn count_in_logs(env: &TestEnv, what: &str) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(&env.logs) {
        for e in rd.flatten() {
            n += String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default())
                .matches(what)
                .count();
        }
    }
    n
}

/// Every `want` appears in the test's logs.
/// Every log of the test, one after the other.
fn logs_text(env: &TestEnv) -> String {
    let mut text = String::new();
    if let Ok(rd) = std::fs::read_dir(&env.logs) {
        for e in rd.flatten() {
            text.push_str(&String::from_utf8_lossy(
                &std::fs::read(e.path()).unwrap_or_default(),
            ));
        }
    }
    text
}

fn expect_in_logs(env: &TestEnv, want: &[&str]) {
    let text = logs_text(env);
    for w in want {
        if !text.contains(w) {
            env.fail(&format!("no \"{w}\" in the logs"));
        }
    }
}

/// Two rounds (restart from the images, then from the script), default codec.
fn heap_rewritten_during_checkpoints(env: &mut TestEnv) {
    let mut sc = Scenario::new("heap_rewrite")
        .arg("32")
        .settle(Duration::from_millis(400));
    sc.mode = Mode::Rounds(2);
    sc.run(env);
}

/// Uncompressed (a lazy restart where the user may have one), and the second
/// image incremental on the first while every page keeps changing; restarted
/// from the chain.
fn heap_rewritten_during_incremental_checkpoints(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("heap_rewrite")
        .arg("32")
        .run_flag("--incremental")
        .run_flag("--compress")
        .run_flag("none");
    incremental_rounds(env, &sc, 2);
}

/// The same with LZ4 images (`--compress lz4`; `--inspect` shows the codec).
fn heap_rewritten_during_lz4_checkpoints(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("heap_rewrite")
        .arg("32")
        .run_flag("--compress")
        .run_flag("lz4");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(300));
    let images = r.checkpoint();
    let mut inspect = env.command("dmtcp-restart");
    inspect.arg("--inspect").args(&images);
    let out = env.run(inspect, "inspect", Duration::from_secs(60));
    if !out.status.success() || !out.stdout.contains("lz4") {
        env.fail(&format!(
            "--inspect of {images:?} does not show an lz4 image: {}",
            out.describe()
        ));
    }
    r.kill();
    r.restart_from_images(&images);
    r.finish();
}
