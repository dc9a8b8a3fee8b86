//! `dmtcp-run --sandbox[=POLICY]` (issue 15): `tests/programs/sandboxed.c`
//! checks in every loop, before and after each of two restarts (images,
//! then the restart script), that the policy's denied calls fail as the
//! policy says, also when made from the `syscall` instruction the
//! supervisor injects through (the escape attempt), and that allowed work
//! (fork + wait) goes on.

use std::time::Duration;

use dmtcp_tests::{e2e_tests, procs, Scenario, TestEnv, User};

e2e_tests! {
    default_policy_and_escape => default_policy;
    docker_profile => docker_profile;
    invalid_profile_refused => invalid_profile;
    net_none => net_none;
    landlock_paths => landlock_paths;
    other_user_restart_refused => other_user_restart_refused;
}

/// A sandboxed computation's images restarted by another user (root's by
/// uid 65534, uid 65534's by root) are refused with one clear line, and
/// nothing runs. Needs root (two users).
fn other_user_restart_refused(env: &mut TestEnv) {
    if !procs::is_root() {
        eprintln!("[{}] skipped: needs root for a second user", env.name);
        return;
    }
    env.start_coordinator();
    let sc = Scenario::new("sandboxed")
        .run_flag("--sandbox")
        .arg("default");
    let mut r = sc.launch(env);
    let images = r.checkpoint();
    r.kill();
    let other_user = match env.user {
        User::Current => User::Nobody,
        User::Nobody => User::Current,
    };
    let other = TestEnv::new("sandbox_other_user", other_user);
    let mut copies = Vec::new();
    for i in &images {
        let to = other.work.join(i.file_name().unwrap());
        std::fs::copy(i, &to).unwrap();
        other.give_to_user(&to);
        copies.push(to);
    }
    let mut cmd = other.command("dmtcp-restart");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .args(&copies);
    let out = other.run(cmd, "restart-as-other-user", Duration::from_secs(60));
    let err = out.stderr.trim();
    if out.status.success()
        || err.lines().count() != 1
        || !(err.contains("another user") || err.contains("sandbox set up by uid"))
    {
        env.fail(&format!(
            "restart of a sandboxed computation by another user: expected one line refusing it, got {}",
            out.describe()
        ));
    }
    other.finish();
}

/// `--allow-read`/`--allow-write`: Landlock, before and after restarts.
fn landlock_paths(env: &mut TestEnv) {
    let ro = env.root.join("ro");
    env.make_user_dir(&ro);
    std::fs::write(ro.join("data"), "data").unwrap();
    env.give_to_user(&ro.join("data"));
    let lib = env.bin("libdmtcp_inject.so");
    let mut sc = Scenario::new("sandboxed")
        .arg("landlock")
        .arg(&ro)
        .arg(&env.work);
    let mut read: Vec<std::path::PathBuf> = vec![
        "/usr".into(),
        "/etc/ld.so.cache".into(),
        env.progs.clone(),
        lib.parent().unwrap().to_path_buf(),
        ro.clone(),
    ];
    for p in ["/lib", "/lib64", "/bin"] {
        if std::path::Path::new(p).exists() {
            read.push(p.into());
        }
    }
    for p in &read {
        sc = sc.run_flag(&format!("--allow-read={}", p.display()));
    }
    sc = sc.run_flag(&format!("--allow-write={}", env.work.display()));
    sc.run(env);
}

/// `--net=none`: only loopback, before and after restarts.
fn net_none(env: &mut TestEnv) {
    Scenario::new("sandboxed")
        .run_flag("--net=none")
        .arg("netnone")
        .run(env);
}

/// What container runtimes deny fails with EPERM, before and after restarts.
fn default_policy(env: &mut TestEnv) {
    Scenario::new("sandboxed")
        .run_flag("--sandbox")
        .arg("default")
        .run(env);
}

/// A Docker-format profile: default allow, getppid fails with EXDEV.
const PROFILE: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  "syscalls": [
    { "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18 },
    { "names": ["personality"], "action": "SCMP_ACT_ERRNO",
      "args": [{ "index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ" }] }
  ]
}"#;

fn docker_profile(env: &mut TestEnv) {
    let path = env.work.join("profile.json");
    std::fs::write(&path, PROFILE).unwrap();
    env.give_to_user(&path);
    let flag = format!("--sandbox={}", path.display());
    Scenario::new("sandboxed")
        .run_flag(&flag)
        .arg("profile")
        .run(env);
}

/// A bad profile: one line naming the JSON path, exit non-zero, nothing runs.
fn invalid_profile(env: &mut TestEnv) {
    env.start_coordinator();
    let path = env.work.join("bad.json");
    std::fs::write(
        &path,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_EXPLODE"}]}"#,
    )
    .unwrap();
    env.give_to_user(&path);
    let mark = env.work.join("ran");
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg(format!("--sandbox={}", path.display()))
        .arg("--")
        .arg("touch")
        .arg(&mark);
    let out = env.run(cmd, "bad-profile", Duration::from_secs(30));
    let err = out.stderr.trim();
    if out.status.success()
        || err.lines().count() != 1
        || !err.contains("$.syscalls[0].action: unknown action")
        || mark.exists()
    {
        env.fail(&format!(
            "a bad profile must give one line naming $.syscalls[0].action: {}",
            out.describe()
        ));
    }
}
