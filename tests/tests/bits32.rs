//! 32-bit programs (issue 21, DMTCP's `dmtcp1 -m32`): refused at launch
//! with one line, and a 32-bit program exec'd inside the computation
//! refuses the checkpoint with one line naming it (the computation goes on),
//! instead of failing inside the checkpoint with a ptrace error. The 32-bit
//! programs are hand-made ELF32 i386 files (no multilib needed).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dmtcp_tests::{e2e_tests, TestEnv};

e2e_tests! {
    launch_refused => launch_refused;
    exec_inside_refuses_checkpoint => exec_inside_refuses_checkpoint;
}

/// A static ELF32 i386 executable whose whole program is `code`.
fn elf32(dir: &Path, name: &str, code: &[u8]) -> PathBuf {
    let base: u32 = 0x0804_8000;
    let (eh, ph) = (52u32, 32u32);
    let entry = base + eh + ph;
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x01\x01\x01\0");
    f.extend_from_slice(&[0; 8]);
    for v in [2u16, 3] {
        f.extend_from_slice(&v.to_le_bytes()); // ET_EXEC, EM_386
    }
    for v in [1u32, entry, eh, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // version, entry, phoff, shoff, flags
    }
    for v in [eh as u16, ph as u16, 1, 0, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let size = eh + ph + code.len() as u32;
    for v in [1u32, 0, base, base, size, size, 5, 0x1000] {
        f.extend_from_slice(&v.to_le_bytes()); // PT_LOAD r-x
    }
    f.extend_from_slice(code);
    let p = dir.join(name);
    std::fs::write(&p, f).expect("write the ELF32 file");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `exit(7)`.
const EXIT7: &[u8] = &[0xb8, 1, 0, 0, 0, 0xbb, 7, 0, 0, 0, 0xcd, 0x80];
/// `for (;;) pause();`
const PAUSE: &[u8] = &[0xb8, 29, 0, 0, 0, 0xcd, 0x80, 0xeb, 0xf7];

fn launch_refused(env: &mut TestEnv) {
    env.start_coordinator();
    let prog = elf32(&env.work, "prog32", EXIT7);
    env.give_to_user(&prog);
    let mut cmd = env.command("dmtcp-run");
    cmd.args(["--coord-port", &env.port().to_string(), "--"])
        .arg(&prog);
    let out = env.run(cmd, "run-prog32", Duration::from_secs(30));
    let err = out.stderr.trim();
    if out.status.success()
        || out.status.code() == Some(7)
        || err.lines().count() != 1
        || !err.contains("32-bit")
        || !err.contains("prog32")
    {
        env.fail(&format!(
            "dmtcp-run of a 32-bit program: expected one line naming it as 32-bit, got {}",
            out.describe()
        ));
    }
    env.assert_no_computation_left("after the refused launch", Duration::from_secs(10));
}

fn exec_inside_refuses_checkpoint(env: &mut TestEnv) {
    env.start_coordinator();
    let prog = elf32(&env.work, "pause32", PAUSE);
    env.give_to_user(&prog);
    let mut cmd = env.command("dmtcp-run");
    cmd.args([
        "--coord-port",
        &env.port().to_string(),
        "--",
        "/bin/sh",
        "-c",
    ])
    .arg(format!("exec {}", prog.display()));
    let mut run = env.spawn(cmd, "run-sh-exec-pause32");
    // The shell has exec'd the 32-bit program once `-l` lists it.
    env.wait_for("the 32-bit program to run", Duration::from_secs(30), || {
        env.dmtcp_command(&["-l"], Duration::from_secs(10))
            .stdout
            .contains("pause32")
    });
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(60));
    let said = out.describe();
    if out.status.success() || !said.contains("32-bit") || !said.contains("pause32") {
        env.fail(&format!(
            "checkpoint with a 32-bit program inside: expected a refusal naming it, got {said}"
        ));
    }
    // Refused, not broken: the computation is still there to be killed.
    let l = env.dmtcp_command(&["-l"], Duration::from_secs(10));
    if !l.stdout.contains("pause32") {
        env.fail(&format!(
            "the 32-bit program is gone after the refusal: {}",
            l.describe()
        ));
    }
    let k = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    if !k.status.success() {
        env.fail(&format!("dmtcp-command -k: {}", k.describe()));
    }
    env.wait(&mut run, Duration::from_secs(30));
    env.assert_no_computation_left("after -k", Duration::from_secs(15));
}
