//! Image authentication and ownership end to end: an image edited by
//! someone without its writer's key is refused before any process is
//! created, even with every crc recomputed; another user can neither read
//! nor restart a root image.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use dmtcp_tests::{e2e_tests, run_e2e, setup, Output, Scenario, TestEnv, User};

e2e_tests! {
    image_with_edited_page_and_crcs_recomputed_refused => edited_page_crc_recomputed;
    image_with_edited_metadata_and_crcs_recomputed_refused => edited_metadata_crc_recomputed;
    image_with_crc_preserving_page_edit_refused_before_restore => crc_preserving_page_edit;
    lazy_restart_stops_at_crc_preserving_page_edit => lazy_crc_preserving_page_edit;
}

/// Root's image: uid 65534 can neither read it nor restart it, and a
/// world-readable copy is refused as another user's image.
#[test]
#[cfg_attr(
    dmtcp_tests_not_root,
    ignore = "skipped: switching to uid 65534 needs root (tests built as non-root)"
)]
fn uid_65534_cannot_read_or_restart_root_image() {
    run_e2e(
        "uid_65534_cannot_read_or_restart_root_image",
        User::Current,
        nobody_vs_root_image,
    );
}

const TRAILER: usize = 96;
const ENTRY: usize = 64;

fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn u64_at(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize
}

fn put_crc(b: &mut [u8], at: usize, crc: u32) {
    b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// (offset, stored length) of page block `i`, and its table entry.
fn block(b: &[u8], i: usize) -> (usize, usize, usize) {
    let t0 = b.len() - TRAILER;
    let e = u64_at(b, t0 + 24) + i * ENTRY;
    (u64_at(b, e), u64_at(b, e + 8), e)
}

/// Recomputes the crcs of the block table and the trailer (format 2.0).
fn reseal_table_and_trailer(b: &mut [u8]) {
    let t0 = b.len() - TRAILER;
    let (table, count) = (u64_at(b, t0 + 24), u64_at(b, t0 + 32));
    let crc = crc32(&b[table..table + count * ENTRY]);
    put_crc(b, t0 + 44, crc);
    let crc = crc32(&b[t0..t0 + 84]);
    put_crc(b, t0 + 84, crc);
}

/// A byte of page block 0 changed, its crc and every crc after it
/// recomputed: all an attacker without the key can do.
fn edit_page_recompute_crcs(p: &Path) {
    let mut b = fs::read(p).expect("read image");
    let (off, len, e) = block(&b, 0);
    b[off + len / 2] ^= 0x01;
    let crc = crc32(&b[off..off + len]);
    put_crc(&mut b, e + 24, crc);
    reseal_table_and_trailer(&mut b);
    fs::write(p, &b).expect("write image");
}

/// A byte of the metadata changed, its crc recomputed.
fn edit_metadata_recompute_crcs(p: &Path) {
    let mut b = fs::read(p).expect("read image");
    let t0 = b.len() - TRAILER;
    let (off, len) = (u64_at(&b, t0), u64_at(&b, t0 + 8));
    b[off + len / 2] ^= 0x01;
    let crc = crc32(&b[off..off + len]);
    put_crc(&mut b, t0 + 40, crc);
    reseal_table_and_trailer(&mut b);
    fs::write(p, &b).expect("write image");
}

/// A bit of page block 0 flipped together with the bits among 32 others
/// that keep the block's crc32 unchanged (crc32 is linear): the block
/// table, and so the image MAC, still match; only the block MAC does not.
fn edit_page_keep_crc(p: &Path) {
    let mut b = fs::read(p).expect("read image");
    let (off, len, _) = block(&b, 0);
    edit_keep_crc(&mut b[off..off + len], 8 * (len / 2));
    fs::write(p, &b).expect("write image");
}

/// Flips `bit` of `data` and 32 bits 8 bytes further on so that the
/// crc32 of `data` stays the same.
fn edit_keep_crc(data: &mut [u8], bit: usize) {
    let before = crc32(data);
    let zero = vec![0u8; data.len()];
    let c0 = crc32(&zero);
    let f = |pos: usize| {
        let mut v = zero.clone();
        v[pos / 8] ^= 1 << (pos % 8);
        crc32(&v) ^ c0
    };
    let fix = (bit / 8 + 8) * 8;
    let mut basis: Vec<(u32, u32)> = Vec::new();
    for j in 0..32 {
        let (mut v, mut m) = (f(fix + j), 1u32 << j);
        for &(bv, bm) in &basis {
            if v ^ bv < v {
                v ^= bv;
                m ^= bm;
            }
        }
        if v != 0 {
            basis.push((v, m));
            basis.sort_by_key(|x| std::cmp::Reverse(x.0));
        }
    }
    let (mut t, mut s) = (f(bit), 0u32);
    for &(bv, bm) in &basis {
        if t ^ bv < t {
            t ^= bv;
            s ^= bm;
        }
    }
    assert_eq!(t, 0);
    data[bit / 8] ^= 1 << (bit % 8);
    for j in 0..32 {
        if s & (1 << j) != 0 {
            data[(fix + j) / 8] ^= 1 << ((fix + j) % 8);
        }
    }
    assert_eq!(crc32(data), before, "crc unchanged");
}

/// Requires a failure with exactly one stderr line naming `image` and
/// containing `want`.
fn assert_refused(env: &TestEnv, what: &str, out: &Output, image: &Path, want: &str) {
    let name = setup::file_name(image);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if out.status.success()
        || lines.len() != 1
        || !lines[0].contains(&name)
        || !lines[0].contains(want)
    {
        env.fail(&format!(
            "{what}: expected a non-zero exit and one stderr line naming {name} with `{want}`, got {}",
            out.describe()
        ));
    }
}

/// Checkpoints a counter, kills it, edits a copy of its image with
/// `mutate` and requires dmtcp-restart (with `extra` flags) to refuse it
/// with `want` before anything runs: no process left, and the counter's
/// output file untouched (a restored counter writes it at once).
fn refused_before_anything_runs(
    env: &mut TestEnv,
    what: &str,
    mutate: fn(&Path),
    extra: &[&str],
    want: &str,
) {
    env.start_coordinator();
    let out_file = env.work.join("counter.txt");
    let sc = Scenario::new("counter").arg(&out_file);
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let images = r.checkpoint();
    r.kill();
    let good: PathBuf = images
        .iter()
        .find(|p| setup::file_name(p).starts_with("ckpt_counter_"))
        .cloned()
        .expect("checkpoint() checked a counter image exists");
    let mode = fs::metadata(&good).expect("stat image").mode() & 0o777;
    if mode != 0o600 {
        env.fail(&format!("{}: mode {mode:o}, expected 600", good.display()));
    }
    let bad_dir = env.work.join("bad");
    env.make_user_dir(&bad_dir);
    let bad = bad_dir.join(setup::file_name(&good));
    fs::copy(&good, &bad).expect("copy image");
    env.give_to_user(&bad);
    mutate(&bad);
    thread::sleep(Duration::from_millis(300));
    let before = fs::read(&out_file).unwrap_or_default();

    let mut cmd = env.command("dmtcp-restart");
    cmd.env_remove("DMTCP_LOG")
        .arg("--coord-port")
        .arg(env.port().to_string())
        .args(extra)
        .arg(&bad);
    let out = env.run(cmd, &format!("restart-{what}"), Duration::from_secs(60));
    assert_refused(env, &format!("dmtcp-restart of {what}"), &out, &bad, want);
    env.assert_no_computation_left(
        &format!("after dmtcp-restart refused {what}"),
        Duration::from_secs(10),
    );
    thread::sleep(Duration::from_millis(300));
    if fs::read(&out_file).unwrap_or_default() != before {
        env.fail(&format!(
            "{what}: the counter ran (its output changed) although the image was refused"
        ));
    }
    // The intact image still restarts.
    r.restart_from_images(&[good]);
    r.finish();
}

fn edited_page_crc_recomputed(env: &mut TestEnv) {
    refused_before_anything_runs(
        env,
        "an image with an edited page and its crcs recomputed",
        edit_page_recompute_crcs,
        &[],
        "not authentic: image MAC mismatch",
    );
}

fn edited_metadata_crc_recomputed(env: &mut TestEnv) {
    refused_before_anything_runs(
        env,
        "an image with edited metadata and its crcs recomputed",
        edit_metadata_recompute_crcs,
        &[],
        "not authentic: image MAC mismatch",
    );
}

/// A crc-preserving edit in the middle block of a 256 MiB uncompressed
/// heap. A lazy restart (as root) checks each block's MAC when the block
/// is first brought in: the restart must end in a one-line error naming
/// the image, with nothing left running; unprivileged (copied restart) it
/// is refused before any process is created.
fn lazy_crc_preserving_page_edit(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("heap256")
        .run_flag("--no-gzip")
        .env("DMTCP_GZIP", "0");
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let images = r.checkpoint();
    r.kill();
    let good: PathBuf = images
        .iter()
        .find(|p| setup::file_name(p).starts_with("ckpt_heap256_"))
        .cloned()
        .expect("a heap256 image");
    let bad_dir = env.work.join("bad");
    env.make_user_dir(&bad_dir);
    let bad = bad_dir.join(setup::file_name(&good));
    fs::copy(&good, &bad).expect("copy image");
    env.give_to_user(&bad);
    {
        let mut b = fs::read(&bad).expect("read image");
        let t0 = b.len() - TRAILER;
        let count = u64_at(&b, t0 + 32);
        let (off, len, _) = block(&b, count / 2);
        let bit = 8 * (off + len / 2);
        edit_keep_crc(&mut b[off..off + len], bit - 8 * off);
        fs::write(&bad, &b).expect("write image");
    }
    let mut cmd = env.command("dmtcp-restart");
    cmd.env_remove("DMTCP_LOG")
        .arg("--coord-port")
        .arg(env.port().to_string())
        .arg(&bad);
    let out = env.run(cmd, "restart-lazy-mac", Duration::from_secs(120));
    assert_refused(
        env,
        "lazy restart of an edited image",
        &out,
        &bad,
        "MAC mismatch",
    );
    env.assert_no_computation_left(
        "after a lazy restart met an edited block",
        Duration::from_secs(10),
    );
    r.restart_from_images(&[good]);
    r.finish();
}

/// A page edit that keeps every crc: a copied restart checks every
/// block's MAC before creating any process.
fn crc_preserving_page_edit(env: &mut TestEnv) {
    refused_before_anything_runs(
        env,
        "an image with a crc-preserving page edit",
        edit_page_keep_crc,
        &["--no-lazy"],
        "not authentic: page block 0 MAC mismatch",
    );
}

/// `setpriv` running `bin ARGS` as uid/gid 65534 without groups.
fn as_nobody(env: &TestEnv, bin: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    c.arg(setup::bins_world_readable().join(bin));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DMTCP_") {
            c.env_remove(&k);
        }
    }
    c.env("HOME", "/nonexistent").current_dir("/");
    let _ = env;
    c
}

fn nobody_vs_root_image(env: &mut TestEnv) {
    env.start_coordinator();
    let sc = Scenario::new("counter").arg(env.work.join("counter.txt"));
    let mut r = sc.launch(env);
    thread::sleep(Duration::from_millis(500));
    let images = r.checkpoint();
    r.kill();
    let image: PathBuf = images
        .iter()
        .find(|p| setup::file_name(p).starts_with("ckpt_counter_"))
        .cloned()
        .expect("a counter image");
    let meta = fs::metadata(&image).expect("stat image");
    if meta.uid() != 0 || meta.mode() & 0o777 != 0o600 {
        env.fail(&format!(
            "{}: owner {} mode {:o}, expected root's and 600",
            image.display(),
            meta.uid(),
            meta.mode() & 0o777
        ));
    }
    // Reading it: refused by the kernel.
    let mut cat = Command::new("setpriv");
    cat.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "cat",
    ])
    .arg(&image);
    let out = env.run(cat, "nobody-cat", Duration::from_secs(20));
    if out.status.success() || !out.stdout.is_empty() {
        env.fail(&format!("uid 65534 read root's image: {}", out.describe()));
    }
    // Inspecting and restarting it: refused with one line naming it.
    for (label, args) in [
        ("nobody-inspect", vec!["--inspect".to_string()]),
        (
            "nobody-restart",
            vec!["--coord-port".to_string(), env.port().to_string()],
        ),
    ] {
        let mut cmd = as_nobody(env, "dmtcp-restart");
        cmd.args(&args).arg(&image);
        let out = env.run(cmd, label, Duration::from_secs(30));
        assert_refused(env, label, &out, &image, "Permission denied");
    }
    // A world-readable copy in a world-readable directory, still root's:
    // refused as another user's image.
    let open_dir = env.work.join("open");
    setup::mkdir_0755(&open_dir).expect("mkdir");
    fs::set_permissions(&env.work, fs::Permissions::from_mode(0o755)).expect("chmod work");
    let copy = open_dir.join(setup::file_name(&image));
    fs::copy(&image, &copy).expect("copy");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut cmd = as_nobody(env, "dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg(&copy);
    let out = env.run(cmd, "nobody-restart-copy", Duration::from_secs(30));
    assert_refused(
        env,
        "restart of root's world-readable image by uid 65534",
        &out,
        &copy,
        "owned by uid 0, not by uid 65534: refusing another user's image",
    );
    env.assert_no_computation_left("after uid 65534 was refused", Duration::from_secs(10));
}
