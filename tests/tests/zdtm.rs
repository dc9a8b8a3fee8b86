//! zdtm-style end-to-end tests: each target program is launched under
//! `dmtcp-run`, checkpointed, killed and restarted (2 rounds by default, the
//! second from the generated restart script), then told to stop and must
//! verify its own state and PASS. `ZDTM_MODE=norestart|bare`, `ZDTM_ROUNDS=N`.

use std::time::Duration;

use dmtcp_tests::{e2e_tests, Scenario, TestEnv};

e2e_tests! {
    counter => counter_offset_continues;
    counter_static => static_counter_offset_continues;
    heap256 => heap256_survives;
    lazy_mem => lazy_restore_under_fork_mremap_madvise;
    lazy_mem_zstd => lazy_restore_of_compressed_image;
    mprotect_filemap => mprotect_and_private_file_map;
    sleeper => sleeper_sees_no_eintr;
}

/// File offset continues, no gap or duplicate line, pid unchanged.
fn counter_offset_continues(env: &mut TestEnv) {
    Scenario::new("counter")
        .arg(env.work.join("counter.txt"))
        .run(env);
}

/// The same, statically linked: the inject library cannot be preloaded, and
/// the process is checkpointed all the same (capture is from outside).
fn static_counter_offset_continues(env: &mut TestEnv) {
    Scenario::new("counter_static")
        .arg(env.work.join("counter.txt"))
        .run(env);
}

/// 256 MiB of patterned heap survives checkpoint/restart (uncompressed images).
fn heap256_survives(env: &mut TestEnv) {
    Scenario::new("heap256")
        .run_flag("--no-gzip")
        .env("DMTCP_GZIP", "0")
        .ckpt_timeout(Duration::from_secs(300))
        .run(env);
}

/// Uncompressed images are restored lazily (userfaultfd, when the process
/// may make one that also serves the kernel's faults): the program runs
/// while its pages arrive and forks, mremaps, drops pages, maps over them and
/// has the kernel read and write them meanwhile. Unprivileged, pages are
/// copied before it runs (the same program must pass either way).
/// Right after the first restart the images are overwritten in place with
/// garbage, while pages are still to come: the program must not notice
/// (the restorer holds a read lease, so the writer waits).
fn lazy_restore_under_fork_mremap_madvise(env: &mut TestEnv) {
    lazy_restore(env, "none");
}

/// The same from zstd images: blocks are decompressed as pages are needed.
fn lazy_restore_of_compressed_image(env: &mut TestEnv) {
    lazy_restore(env, "zstd");
}

fn lazy_restore(env: &mut TestEnv, codec: &str) {
    let mut sc = Scenario::new("lazy_mem")
        .run_flag("--compress")
        .run_flag(codec)
        .env("DMTCP_COMPRESS", codec)
        .restart_env("DMTCP_LOG", "debug")
        // Background copying starts late, so the program's first
        // iterations work on pages still to come.
        .restart_env("DMTCP_LAZY_PREFETCH_DELAY_MS", "1500")
        .settle(Duration::from_millis(300));
    // Its mappings split and merge all the time (mremap, MAP_FIXED): the
    // maps seen before the checkpoint are not the ones it was checkpointed with.
    sc.proc_check = dmtcp_tests::ProcCheck::Warn;
    env.start_coordinator();
    let mut r = sc.launch(env);
    std::thread::sleep(sc.settle);
    let images = r.checkpoint();
    r.kill();
    r.restart_from_images(&images);
    let t = std::time::Instant::now();
    for img in &images {
        overwrite_in_place(img);
    }
    eprintln!(
        "[{}] images overwritten in place {:?} after the restart",
        env.name,
        t.elapsed()
    );
    r.round();
    let logs: String = std::fs::read_dir(&env.logs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("restart"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    r.finish();
    let lazy = logs.matches("memory restored lazily").count();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0 && env.user == dmtcp_tests::User::Current;
    if root {
        assert!(
            lazy >= 2,
            "root: expected a lazy restore in each round, saw {lazy}"
        );
        assert!(
            logs.contains("lazily restored memory in place"),
            "root: lazy restore never finished"
        );
    }
    eprintln!("[{}] lazy restores: {lazy}", env.name);
}

/// Truncates `path` and fills it with as many bytes of garbage, through
/// the same inode (as `cp other path` would).
fn overwrite_in_place(path: &std::path::Path) {
    use std::io::Write;
    let len = std::fs::metadata(path).expect("stat image").len();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open image for writing");
    let junk = vec![0xa5u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(junk.len() as u64) as usize;
        f.write_all(&junk[..n]).expect("overwrite image");
        left -= n as u64;
    }
    f.sync_all().expect("fsync overwritten image");
}

/// A PROT_READ page still faults on write; MAP_PRIVATE file pages keep both
/// their modified and their file-backed content; the file is unchanged.
fn mprotect_and_private_file_map(env: &mut TestEnv) {
    Scenario::new("mprotect_filemap")
        .arg(env.work.join("mapped.bin"))
        .run(env);
}

/// Checkpoints are transparent: no EINTR, no short nanosleep/poll.
fn sleeper_sees_no_eintr(env: &mut TestEnv) {
    Scenario::new("sleeper").run(env);
}
