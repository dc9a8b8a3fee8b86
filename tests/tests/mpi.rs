//! Open MPI under checkpoint control (issue 16): `dmtcp-run -- mpirun -np 4
//! mpi_ring` on one host, with Open MPI's shared-memory transport (vader)
//! and with its TCP transport: checkpointed while the token is in flight,
//! killed, restarted with the restart script, twice; the ring then checks
//! its sums and every rank prints PASS. Skips with a message when mpicc or
//! mpirun is missing (install openmpi-bin and libopenmpi-dev).

use std::path::Path;
use std::time::Duration;

use dmtcp_tests::env::read_lossy;
use dmtcp_tests::{e2e_tests, setup, Proc, TestEnv};

e2e_tests! {
    mpi_ring_vader => mpi_ring_vader;
    mpi_ring_tcp => mpi_ring_tcp;
}

fn ranks_listed(env: &TestEnv) -> usize {
    std::thread::sleep(Duration::from_millis(200));
    env.dmtcp_command(&["-l"], Duration::from_secs(20))
        .stdout
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "mpi_ring"))
        .count()
}

fn checkpoint_kill(env: &TestEnv, running: &mut Proc) {
    // Let the token go round between checkpoints.
    std::thread::sleep(Duration::from_millis(500));
    let out = env.dmtcp_command(&["-bc"], Duration::from_secs(120));
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -bc: {}", out.describe()));
    }
    let out = env.dmtcp_command(&["-k"], Duration::from_secs(30));
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -k: {}", out.describe()));
    }
    env.wait(running, Duration::from_secs(60));
    env.assert_no_computation_left("after -k", Duration::from_secs(30));
}

fn ring_case(env: &mut TestEnv, btl: &str) {
    let ring = match setup::mpi_ring() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("[{}] skipped: {why}", env.name);
            return;
        }
    };
    env.start_coordinator();
    // Open MPI's session directory goes under the test's own directory: in
    // /tmp it is named by host, uid and mpirun's pid only
    // (`ompi.HOST.0/pid.2`), and mpirun is pid 2 of every computation's
    // namespace, so two tests of one user running at once shared it and the
    // first to end removed the other's files.
    let session = env.work.join("ompi");
    std::fs::create_dir_all(&session).expect("make the Open MPI session dir");
    env.give_to_user(&session);
    let mut cmd = env.command("dmtcp-run");
    cmd.arg("--coord-port")
        .arg(env.port().to_string())
        .arg("--")
        .args(["mpirun", "--oversubscribe", "-np", "4", "--mca", "btl", btl])
        .arg("--mca")
        .arg("orte_tmpdir_base")
        .arg(&session);
    if dmtcp_tests::procs::is_root() && env.user == dmtcp_tests::User::Current {
        cmd.arg("--allow-run-as-root");
    }
    cmd.arg(&ring).arg(env.stop_file());
    let mut running = env.spawn(cmd, "run-mpirun");
    let out_log = running.stdout.clone();
    env.wait_for("the ring READY", Duration::from_secs(60), || {
        read_lossy(&out_log).lines().any(|l| l.trim() == "READY")
    });
    env.wait_for("4 ranks listed", Duration::from_secs(30), || {
        ranks_listed(env) == 4
    });
    let script: &Path = &env.ckpt.join("dmtcp_restart_script.sh");
    for round in 1..=2 {
        checkpoint_kill(env, &mut running);
        let mut cmd = env.command_path(Path::new("/bin/bash"));
        cmd.arg(script);
        running = env.spawn(cmd, &format!("restart-{round}"));
        env.wait_for(
            &format!("round {round}: 4 ranks back"),
            Duration::from_secs(90),
            || ranks_listed(env) == 4,
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let st = env.wait(&mut running, Duration::from_secs(90));
    let out = read_lossy(&out_log);
    let ranks = out
        .lines()
        .filter(|l| l.starts_with("rank ") && l.contains(": PASS after"))
        .count();
    if !st.success() || ranks != 4 || !out.lines().any(|l| l.trim() == "PASS") {
        env.fail(&format!(
            "btl {btl}: restart exited {st}; {ranks} rank(s) passed; stdout {out:?}"
        ));
    }
}

/// `--mca btl self,vader`: shared memory (files in /dev/shm mapped by every
/// rank; their pages are saved and written back at restart).
fn mpi_ring_vader(env: &mut TestEnv) {
    ring_case(env, "self,vader");
}

/// `--mca btl self,tcp`: TCP between the ranks (IPv4 and IPv6 listeners on
/// one port, connections accepted on them).
fn mpi_ring_tcp(env: &mut TestEnv) {
    ring_case(env, "self,tcp");
}
