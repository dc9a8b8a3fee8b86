//! DMTCP in Slurm jobs (issue 16): the job scripts of `examples/slurm/`
//! submitted to a one-node Slurm cluster made for the test
//! (`tests/slurm/mkslurm.sh`), running `steps`, a program with a result
//! (N numbered lines, then a hash of them). Each test skips with a message
//! when the cluster cannot be made (not root, or munge/slurmctld/slurmd/
//! slurm-client missing). As uid 65534 the jobs are submitted by, and run
//! as, uid 65534.
//!
//! - `slurm_interval_then_restart_job`: `interval.sbatch` checkpoints
//!   every second (`dmtcp-run -i`); the job is cancelled; `restart.sbatch`
//!   goes on from the last checkpoint to the end.
//! - `slurm_preemption_signal_twice`: `preemptible.sbatch`, SIGUSR1 to the
//!   batch shell (`scancel --signal=USR1 --batch`, what
//!   `--signal=B:USR1@60` sends before the time limit) makes it checkpoint
//!   and end; `restart.sbatch` goes on and is preempted the same way;
//!   `preemptible.sbatch` again finds the images and runs to the end.
//!
//! - `slurm_srun_step_joins`: srun contagion. `interval.sbatch` runs a
//!   job script whose `srun -n1 steps ...` starts the step's task under
//!   `dmtcp-run --join-coordinator`: it is listed, checkpointed with the
//!   rest, and after a cancel `restart.sbatch` brings it back.
//! - `slurm_two_nodes_srun`: a cluster of two nodes, one per test host
//!   (network namespaces of `tests/hosts/mkhosts.sh`); a 2-node job under
//!   `dmtcp-run --coord-host` whose `srun -N2 -n2` puts a task on each
//!   node: both join, are listed with their hosts and checkpointed; after
//!   a cancel `restart.sbatch` brings both back on its one node.
//! - `slurm_two_nodes_restart_two_nodes`: the same job on a 3-node
//!   cluster (on h0 and h1), restarted by `sbatch -N2 --nodelist=h0,h2
//!   restart.sbatch`: its host map keeps h0 and moves h1 onto h2, the
//!   restart script restarts h2's task over ssh, joined to a coordinator on
//!   h0's address; the tasks are listed on h0 and h2 and the next
//!   checkpoint has a task image from each.
//!
//! Either way the result file must equal the one of an uninterrupted run:
//! no step lost, none repeated.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dmtcp_tests::env::read_lossy;
use dmtcp_tests::hosts::TestHosts;
use dmtcp_tests::slurm::TestCluster;
use dmtcp_tests::{e2e_tests, procs, setup, TestEnv};

e2e_tests! {
    slurm_interval_then_restart_job => slurm_interval_then_restart_job;
    slurm_preemption_signal_twice => slurm_preemption_signal_twice;
    slurm_srun_step_joins => slurm_srun_step_joins;
    slurm_two_nodes_srun => slurm_two_nodes_srun;
    slurm_two_nodes_restart_two_nodes => slurm_two_nodes_restart_two_nodes;
}

/// Steps of the program and milliseconds per step: about 6 s of work.
const STEPS: usize = 600;
const STEP_MS: &str = "10";

/// The cluster, the job scripts copied into the test's work dir, and the
/// result file of an uninterrupted run.
struct Job {
    cluster: TestCluster,
    out: PathBuf,
    expected: String,
}

fn setup_job(env: &TestEnv) -> Option<Job> {
    let cluster = TestCluster::up(env)?;
    Some(setup_job_on(env, cluster))
}

fn setup_job_on(env: &TestEnv, cluster: TestCluster) -> Job {
    for s in ["interval.sbatch", "preemptible.sbatch", "restart.sbatch"] {
        let to = env.work.join(s);
        std::fs::copy(setup::workspace_dir().join("examples/slurm").join(s), &to)
            .unwrap_or_else(|e| env.fail(&format!("copy {s}: {e}")));
        env.give_to_user(&to);
    }
    let reference = env.root.join("uninterrupted.txt");
    let r = setup::output_tracked(
        std::process::Command::new(env.prog("steps"))
            .arg(&reference)
            .arg(STEPS.to_string())
            .arg("0"),
    )
    .unwrap_or_else(|e| env.fail(&format!("run steps: {e}")));
    if !r.status.success() {
        env.fail(&format!("uninterrupted steps run failed: {r:?}"));
    }
    Job {
        cluster,
        out: env.work.join("out.txt"),
        expected: read_lossy(&reference),
    }
}

fn lines(p: &Path) -> usize {
    read_lossy(p).lines().count()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Waits for the result file to hold at least `n` lines.
fn wait_lines(env: &TestEnv, p: &Path, n: usize) {
    env.wait_for(
        &format!("{n} lines in {}", p.display()),
        Duration::from_secs(60),
        || lines(p) >= n,
    );
}

/// Waits until nothing the test started (jobs included: they carry its
/// tag through sbatch's environment) runs any more.
fn wait_nothing_left(env: &TestEnv, what: &str) {
    env.wait_for(
        &format!("every process of the job to end ({what})"),
        Duration::from_secs(30),
        || procs::tagged(&env.tag).is_empty(),
    );
}

/// The job's output file (`%x-%j.out` in the submit dir).
fn job_output(env: &TestEnv, name: &str, id: u32) -> String {
    read_lossy(&env.work.join(format!("{name}-{id}.out")))
}

fn expect_state(env: &TestEnv, job: &Job, id: u32, want: &str, code: &str) {
    let (state, exit) = job.cluster.wait_job_end(env, id, Duration::from_secs(90));
    if state != want || (!code.is_empty() && exit != code) {
        env.fail(&format!(
            "job {id} ended {state} {exit}, expected {want} {code}\n{}",
            job.cluster.log_tails()
        ));
    }
}

fn check_result(env: &TestEnv, job: &Job) {
    check_file(env, job, &job.out);
}

fn check_file(env: &TestEnv, job: &Job, out: &Path) {
    let got = read_lossy(out);
    if got != job.expected {
        let first_bad = got
            .lines()
            .zip(job.expected.lines())
            .position(|(a, b)| a != b);
        env.fail(&format!(
            "{} differs from the uninterrupted run's: {} lines vs {}, first \
             difference at line {first_bad:?}; last lines {:?}",
            out.display(),
            got.lines().count(),
            job.expected.lines().count(),
            got.lines().rev().take(3).collect::<Vec<_>>()
        ));
    }
}

/// The generation of the newest checkpoint in the job's image directory.
fn generation(env: &TestEnv) -> u64 {
    read_lossy(&env.work.join("ckpt/dmtcp_restart_script.sh"))
        .lines()
        .find_map(|l| l.strip_prefix("# Generation: "))
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or(0)
}

fn slurm_interval_then_restart_job(env: &mut TestEnv) {
    let Some(job) = setup_job(env) else { return };
    let steps = env.prog("steps");
    let id = job.cluster.sbatch(
        env,
        &[
            os("--export=ALL,CKPT_INTERVAL=1"),
            os("interval.sbatch"),
            steps.as_os_str(),
            job.out.as_os_str(),
            os(&STEPS.to_string()),
            os(STEP_MS),
        ],
    );
    env.wait_for("two interval checkpoints", Duration::from_secs(60), || {
        generation(env) >= 2
    });
    let at_cancel = lines(&job.out);
    if at_cancel >= STEPS {
        env.fail("the program ended before the job was cancelled");
    }
    let out = job.cluster.run(env, "scancel", &[os(&id.to_string())]);
    if !out.status.success() {
        env.fail(&format!("scancel: {}", out.describe()));
    }
    expect_state(env, &job, id, "CANCELLED", "");
    wait_nothing_left(env, "after scancel");
    let gen = generation(env);
    eprintln!(
        "[{}] job {id} cancelled at line {at_cancel}, checkpoint {gen}",
        env.name
    );

    let id2 = job.cluster.sbatch(env, &[os("restart.sbatch")]);
    expect_state(env, &job, id2, "COMPLETED", "0:0");
    let log = job_output(env, "dmtcp-restart", id2);
    if !log.contains(&format!("restarting checkpoint {gen} from")) {
        env.fail(&format!("restart job {id2} output: {log}"));
    }
    check_result(env, &job);
    wait_nothing_left(env, "after the restart job");
}

/// `scancel --signal=USR1 --batch ID`: Slurm's warning, to the batch shell.
fn preempt(env: &TestEnv, job: &Job, id: u32, name: &str) {
    let out = job.cluster.run(
        env,
        "scancel",
        &[os("--signal=USR1"), os("--batch"), os(&id.to_string())],
    );
    if !out.status.success() {
        env.fail(&format!("scancel --signal=USR1: {}", out.describe()));
    }
    expect_state(env, job, id, "COMPLETED", "0:0");
    let log = job_output(env, name, id);
    if !log.contains("checkpoint written to") {
        env.fail(&format!("job {id} did not say it checkpointed: {log}"));
    }
    wait_nothing_left(env, &format!("after job {id} was preempted"));
}

fn slurm_preemption_signal_twice(env: &mut TestEnv) {
    let Some(job) = setup_job(env) else { return };
    let steps = env.prog("steps");
    let id = job.cluster.sbatch(
        env,
        &[
            os("preemptible.sbatch"),
            steps.as_os_str(),
            job.out.as_os_str(),
            os(&STEPS.to_string()),
            os(STEP_MS),
        ],
    );
    wait_lines(env, &job.out, 100);
    preempt(env, &job, id, "dmtcp-preemptible");
    let first = lines(&job.out);
    eprintln!("[{}] job {id} preempted at line {first}", env.name);
    if first >= STEPS {
        env.fail("the program ended before the first preemption");
    }

    let id2 = job.cluster.sbatch(env, &[os("restart.sbatch")]);
    wait_lines(env, &job.out, first + 150);
    preempt(env, &job, id2, "dmtcp-restart");
    let second = lines(&job.out);
    eprintln!("[{}] job {id2} preempted at line {second}", env.name);
    if second >= STEPS {
        env.fail("the program ended before the second preemption");
    }

    // The preemptible script again (as after `scontrol requeue`): it finds
    // the images and restarts them.
    let id3 = job.cluster.sbatch(env, &[os("preemptible.sbatch")]);
    expect_state(env, &job, id3, "COMPLETED", "0:0");
    let log = job_output(env, "dmtcp-preemptible", id3);
    if !log.contains("restarting from") {
        env.fail(&format!("job {id3} did not restart: {log}"));
    }
    check_result(env, &job);
    wait_nothing_left(env, "after the last job");
}

/// The coordinator port a job script printed ("coordinator on port P").
fn job_port(env: &TestEnv, name: &str, id: u32) -> u16 {
    let mut port = 0;
    env.wait_for(
        "the job's coordinator port",
        Duration::from_secs(30),
        || {
            port = job_output(env, name, id)
                .lines()
                .find_map(|l| l.split("coordinator on port ").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.trim_end_matches(',').parse().ok())
                .unwrap_or(0);
            port != 0
        },
    );
    port
}

fn slurm_srun_step_joins(env: &mut TestEnv) {
    let Some(job) = setup_job(env) else { return };
    let steps = env.prog("steps");
    let script = env.work.join("run.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# The job's work: one step, started by srun.\nsrun -n1 {} {} {STEPS} {STEP_MS}\n",
            steps.display(),
            job.out.display()
        ),
    )
    .unwrap_or_else(|e| env.fail(&format!("write run.sh: {e}")));
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap_or_else(|e| env.fail(&format!("chmod run.sh: {e}")));
    env.give_to_user(&script);
    let id = job.cluster.sbatch(
        env,
        &[
            os("--export=ALL,CKPT_INTERVAL=1"),
            os("interval.sbatch"),
            script.as_os_str(),
        ],
    );
    let port = job_port(env, "dmtcp-interval", id);
    wait_lines(env, &job.out, 50);
    // The step's task is a process of the computation, on its own launch.
    let mut cmd = env.command("dmtcp-command");
    cmd.args(["-p", &port.to_string(), "-l"]);
    let list = env.run(cmd, "command-l", Duration::from_secs(20));
    if !list
        .stdout
        .lines()
        .any(|l| l.split_whitespace().any(|w| w == "steps"))
    {
        env.fail(&format!(
            "the srun step's task is not listed: {}",
            list.describe()
        ));
    }
    env.wait_for("two interval checkpoints", Duration::from_secs(60), || {
        generation(env) >= 2
    });
    let script_text = read_lossy(&env.work.join("ckpt/dmtcp_restart_script.sh"));
    if !script_text.contains("ckpt_steps_") || !script_text.contains("ckpt_srun_") {
        env.fail(&format!(
            "the checkpoint lacks the step's task or srun: {script_text}"
        ));
    }
    let out = job.cluster.run(env, "scancel", &[os(&id.to_string())]);
    if !out.status.success() {
        env.fail(&format!("scancel: {}", out.describe()));
    }
    expect_state(env, &job, id, "CANCELLED", "");
    wait_nothing_left(env, "after scancel");

    // The restart brings back the job script, srun (whose connections to
    // Slurm come back reset) and the step's task, which finishes the work.
    let id2 = job.cluster.sbatch(env, &[os("restart.sbatch")]);
    let (state, code) = job.cluster.wait_job_end(env, id2, Duration::from_secs(90));
    eprintln!("[{}] restart job {id2}: {state} {code}", env.name);
    check_result(env, &job);
    wait_nothing_left(env, "after the restart job");
}

fn write_script(env: &TestEnv, name: &str, text: &str) -> PathBuf {
    let p = env.work.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| env.fail(&format!("write {name}: {e}")));
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap_or_else(|e| env.fail(&format!("chmod {name}: {e}")));
    env.give_to_user(&p);
    p
}

/// A 2-node job checkpointed with a task on each node, then cancelled.
/// Fields drop in order: the cluster before the hosts it runs on.
struct TwoNodes {
    job: Job,
    hosts: TestHosts,
    /// Each task's result file.
    outs: Vec<PathBuf>,
    /// The restart script the cancel left.
    script: String,
}

/// The 2-node job of [`slurm_two_nodes_srun`] and
/// [`slurm_two_nodes_restart_two_nodes`], on a cluster of `n_hosts` nodes
/// (the job on h0 and h1): under `dmtcp-run --coord-host` (the first
/// node's address), `srun -N2 -n2` puts a task (`steps`, `ms` per step) on
/// each node; both are listed with their hosts, checkpointed
/// at an interval, and the job is cancelled. `None`: skipped.
fn two_nodes_checkpointed(env: &TestEnv, n_hosts: usize, ms: &str) -> Option<TwoNodes> {
    let hosts = TestHosts::up(env, n_hosts)?;
    let cluster = TestCluster::up_on_hosts(env, &hosts)?;
    let job = setup_job_on(env, cluster);
    let addr = hosts.hosts[0].addr.clone();
    let port_file = env.work.join("port");
    let outs: Vec<PathBuf> = (0..2)
        .map(|i| env.work.join(format!("out-{i}.txt")))
        .collect();
    let run = write_script(
        env,
        "run2.sh",
        &format!(
            "#!/bin/sh\n# One task on each node.\nsrun -N2 -n2 /bin/sh -c 'exec {} {}/out-$SLURM_PROCID.txt {STEPS} {ms}'\n",
            env.prog("steps").display(),
            env.work.display()
        ),
    );
    // The coordinator must be reachable from the other node: dmtcp-run
    // starts it on the first node's address (the secret goes through the
    // shared DMTCP_TMPDIR, never through the environment).
    write_script(
        env,
        "two-nodes.sbatch",
        &format!(
            "#!/bin/bash\n#SBATCH --job-name=two-nodes\n#SBATCH -N2 -n2 -w h0,h1\n#SBATCH --output=%x-%j.out\n\
             dmtcp-run --coord-host {addr} --coord-port 0 --port-file {} --ckpt-dir {} -i 1 -- {}\n",
            port_file.display(),
            env.work.join("ckpt").display(),
            run.display()
        ),
    );
    let id = job.cluster.sbatch(env, &[os("two-nodes.sbatch")]);
    let mut port = 0u16;
    env.wait_for(
        "the coordinator's port file",
        Duration::from_secs(60),
        || {
            port = read_lossy(&port_file).trim().parse().unwrap_or(0);
            port != 0
        },
    );
    for o in &outs {
        wait_lines(env, o, 50);
    }
    let mut cmd = env.command("dmtcp-command");
    cmd.args(["-h", &addr, "-p", &port.to_string(), "-l"]);
    let list = env.run(hosts.on(0, &cmd), "command-l", Duration::from_secs(20));
    // Rows: VPID HOST_PID PROGRAM LAUNCH SUPERVISOR HOST. The tasks are
    // launches of their own (the job script's is run2.sh's); a task may
    // still show as `sh`, the name it joined with before its exec.
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 6 && w[0] != "VPID")
        .collect();
    let script_launch = rows.iter().find(|w| w[2] == "run2.sh").map(|w| w[3]);
    let on: Vec<&str> = rows
        .iter()
        .filter(|w| Some(w[3]) != script_launch)
        .map(|w| w[5])
        .collect();
    if script_launch.is_none() || on.len() != 2 || !on.contains(&"h0") || !on.contains(&"h1") {
        env.fail(&format!(
            "expected the job script's launch and a task's on h0 and on h1, got tasks on {on:?}: {}",
            list.describe()
        ));
    }
    env.wait_for("two interval checkpoints", Duration::from_secs(60), || {
        generation(env) >= 2
    });
    let script_text = read_lossy(&env.work.join("ckpt/dmtcp_restart_script.sh"));
    if !script_text.contains("# Hosts: h0 h1") || script_text.matches("ckpt_steps_").count() < 2 {
        env.fail(&format!(
            "the checkpoint lacks a node's task: {script_text}"
        ));
    }
    let out = job.cluster.run(env, "scancel", &[os(&id.to_string())]);
    if !out.status.success() {
        env.fail(&format!("scancel: {}", out.describe()));
    }
    expect_state(env, &job, id, "CANCELLED", "");
    wait_nothing_left(env, "after scancel");

    eprintln!(
        "[{}] job {id} cancelled at checkpoint {}",
        env.name,
        generation(env)
    );
    Some(TwoNodes {
        job,
        hosts,
        outs,
        script: read_lossy(&env.work.join("ckpt/dmtcp_restart_script.sh")),
    })
}

fn slurm_two_nodes_srun(env: &mut TestEnv) {
    let Some(t) = two_nodes_checkpointed(env, 2, STEP_MS) else {
        return;
    };
    // One node restarts both tasks (the script maps h0 and h1 onto it).
    let id2 = t.job.cluster.sbatch(env, &[os("restart.sbatch")]);
    expect_state(env, &t.job, id2, "COMPLETED", "0:0");
    for o in &t.outs {
        check_file(env, &t.job, o);
    }
    wait_nothing_left(env, "after the restart job");
}

/// The hosts the images of `steps` of the newest checkpoint were taken on
/// (the restart script's `images` and `image_hosts` arrays, in order).
fn steps_image_hosts(env: &TestEnv) -> Vec<String> {
    let text = read_lossy(&env.work.join("ckpt/dmtcp_restart_script.sh"));
    let array = |name: &str| -> Vec<String> {
        let Some(rest) = text.split(&format!("\n{name}=(")).nth(1) else {
            return Vec::new();
        };
        let body = rest.split(')').next().unwrap_or("");
        body.split_whitespace()
            .filter(|w| *w != "\\")
            .map(|w| w.trim_matches('\'').to_string())
            .collect()
    };
    let images = array("images");
    let hosts = array("image_hosts");
    images
        .iter()
        .zip(hosts)
        .filter(|(i, _)| i.contains("ckpt_steps_"))
        .map(|(_, h)| h)
        .collect()
}

/// A restart onto several nodes: on a 3-node cluster, the job on h0 and
/// h1 is checkpointed and cancelled, and its checkpoint restarted by
/// `sbatch -N2 --nodelist=h0,h2 restart.sbatch`, whose host map keeps h0
/// (a node of the new job) and moves h1 onto h2 (the node left): the
/// restart script restarts h0's images there and h1's on h2 over ssh,
/// joined to a coordinator on h0's address. Each task comes back on its
/// node: `dmtcp-command --list` shows a `steps` on h0 and one on h2, the
/// restarted computation's next checkpoint (`CKPT_INTERVAL=1`) has a
/// `steps` image from each, and both results equal an uninterrupted
/// run's.
fn slurm_two_nodes_restart_two_nodes(env: &mut TestEnv) {
    // Slower steps: the restarted tasks run long enough (about 10 s) for
    // a checkpoint of theirs.
    let Some(t) = two_nodes_checkpointed(env, 3, "25") else {
        return;
    };
    let id2 = t.job.cluster.sbatch(
        env,
        &[
            os("-N2"),
            os("--nodelist=h0,h2"),
            os("--export=ALL,CKPT_INTERVAL=1"),
            os("restart.sbatch"),
        ],
    );
    let port = job_port(env, "dmtcp-restart", id2);
    let log = job_output(env, "dmtcp-restart", id2);
    if !log.contains("hosts h0=h0 h1=h2;") {
        env.fail(&format!("restart job {id2}: unexpected host map: {log}"));
    }
    let script = || read_lossy(&env.work.join("ckpt/dmtcp_restart_script.sh"));
    let done = || t.outs.iter().all(|o| lines(o) >= STEPS);
    // The coordinator lists a `steps` on h0 and one on h2 once h2's
    // restart (over ssh, after h0's) has joined. Rows: VPID HOST_PID
    // PROGRAM LAUNCH SUPERVISOR HOST.
    let mut listed = String::new();
    env.wait_for(
        "the restarted tasks listed on h0 and h2",
        Duration::from_secs(60),
        || {
            let mut cmd = env.command("dmtcp-command");
            cmd.args(["-h", &t.hosts.hosts[0].addr, "-p", &port.to_string(), "-l"]);
            listed = env
                .run(t.hosts.on(0, &cmd), "command-l", Duration::from_secs(20))
                .stdout;
            let on: Vec<&str> = listed
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .filter(|w| w.len() == 6 && w[2] == "steps")
                .map(|w| w[5])
                .collect();
            (on.contains(&"h0") && on.contains(&"h2") && !on.contains(&"h1")) || done()
        },
    );
    eprintln!("[{}] restarted computation:\n{listed}", env.name);
    if done() {
        env.fail(&format!(
            "the restarted tasks ended before both were listed: {listed}"
        ));
    }
    env.wait_for(
        "a checkpoint of the restarted computation",
        Duration::from_secs(60),
        || script() != t.script || done(),
    );
    let hosts = steps_image_hosts(env);
    if script() == t.script {
        env.fail("the restarted tasks ended before a checkpoint of theirs");
    }
    let mut sorted = hosts.clone();
    sorted.sort();
    if sorted != ["h0", "h2"] {
        env.fail(&format!(
            "expected the restarted tasks' images from h0 and h2, got {hosts:?}: {}",
            read_lossy(&env.work.join("ckpt/dmtcp_restart_script.sh"))
        ));
    }
    expect_state(env, &t.job, id2, "COMPLETED", "0:0");
    for o in &t.outs {
        check_file(env, &t.job, o);
    }
    wait_nothing_left(env, "after the restart job");
}
