//! A Slurm cluster of one node made for one test by
//! `tests/slurm/mkslurm.sh` from Debian's packages (munge, slurmctld,
//! slurmd, slurm-client): its own munge key and munged, its own
//! `slurm.conf` with ports of its own, state, spool, pid and log files in
//! the test's directory, no cgroups. Torn down in `Drop` (jobs cancelled,
//! daemons killed, directory removed), also when the test fails. Needs
//! root: [`TestCluster::up`] returns `None` with a message otherwise, or
//! when the packages are missing, and the test skips.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::env::{Output, TestEnv};
use crate::hosts::{on_host, Host, TestHosts};
use crate::procs;
use crate::setup::output_tracked;

/// The cluster of one test.
pub struct TestCluster {
    /// Its directory (config, state, spool, logs; owned by root).
    pub dir: PathBuf,
    /// `slurm.conf`: clients find the cluster with `SLURM_CONF` set to it.
    pub conf: PathBuf,
    /// The (first) node's name: this host's short name, or `h0`.
    pub node: String,
    /// On test hosts: the host the controller runs on (every client runs
    /// there) and the hosts' ssh wrapper directory.
    ctl: Option<(Host, PathBuf)>,
}

fn script() -> PathBuf {
    crate::setup::crate_dir().join("slurm/mkslurm.sh")
}

/// Why a cluster cannot be made here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !procs::is_root() {
        return Some("making a Slurm test cluster (munged, slurmctld, slurmd) needs root".into());
    }
    for (p, pkg) in [
        ("/usr/sbin/munged", "munge"),
        ("/usr/sbin/slurmctld", "slurmctld"),
        ("/usr/sbin/slurmd", "slurmd"),
        ("/usr/bin/sbatch", "slurm-client"),
    ] {
        if !Path::new(p).exists() {
            return Some(format!("{p} not found (install {pkg})"));
        }
    }
    None
}

/// Ports handed out to clusters of this test process (never twice).
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Two ports nobody listens on, below the kernel's ephemeral range (32768
/// and up on Linux by default, where coordinators on port 0 and outgoing
/// connections get theirs), never handed out before by this process.
fn free_ports() -> Option<(u16, u16)> {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    // Start somewhere that depends on the pid, so that test processes
    // running at once (other test binaries) tend to differ.
    let start = 20_000 + (std::process::id() as usize * 7919) % 10_000;
    let mut got = Vec::new();
    for i in 0..10_000 {
        let p = (20_000 + (start - 20_000 + i) % 12_000) as u16;
        if used.contains(&p) {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            used.insert(p);
            got.push(p);
            if got.len() == 2 {
                return Some((got[0], got[1]));
            }
        }
    }
    None
}

impl TestCluster {
    /// Makes the cluster under the test's root and waits until its node is
    /// idle; `None` (after printing why) when this machine or user cannot.
    pub fn up(env: &TestEnv) -> Option<TestCluster> {
        Self::up_with(env, None)
    }

    /// One node per test host (each slurmd in its host's namespaces), the
    /// controller on the first; `None` (after printing why) when this
    /// machine or user cannot.
    pub fn up_on_hosts(env: &TestEnv, hosts: &TestHosts) -> Option<TestCluster> {
        Self::up_with(env, Some(hosts))
    }

    fn up_with(env: &TestEnv, hosts: Option<&TestHosts>) -> Option<TestCluster> {
        if let Some(why) = unavailable() {
            eprintln!("[{}] skipped: {why}", env.name);
            return None;
        }
        let dir = env.root.join("slurm");
        let mut last = String::new();
        // A port taken between the check and the daemon's bind (another
        // program) makes `up` fail: try again with other ports.
        for _ in 0..3 {
            let (cport, dport) =
                free_ports().unwrap_or_else(|| env.fail("no two free ports in 20000..32000"));
            // From here on Drop tears down whatever was made.
            let mut cluster = TestCluster {
                dir: dir.clone(),
                conf: dir.join("slurm.conf"),
                node: String::new(),
                ctl: hosts.map(|h| (h.hosts[0].clone(), h.ssh_dir())),
            };
            let mut cmd = Command::new(script());
            cmd.arg("up")
                .arg(&dir)
                .arg(cport.to_string())
                .arg(dport.to_string());
            for h in hosts.map(|h| h.hosts.as_slice()).unwrap_or_default() {
                cmd.arg(format!("{}:{}:{}", h.name, h.sshd, h.addr));
            }
            let out = output_tracked(&mut cmd)
                .unwrap_or_else(|e| env.fail(&format!("running mkslurm.sh: {e}")));
            if out.status.success() {
                let text = std::fs::read_to_string(dir.join("slurm.env")).unwrap_or_default();
                cluster.node = text
                    .lines()
                    .find_map(|l| l.strip_prefix("NODE="))
                    .unwrap_or_default()
                    .to_string();
                eprintln!(
                    "[{}] slurm cluster up: node {}, ports {cport}/{dport}, {}",
                    env.name,
                    cluster.node,
                    cluster.conf.display()
                );
                return Some(cluster);
            }
            last = format!(
                "mkslurm.sh up (ports {cport}/{dport}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("[{}] {last}", env.name);
            drop(cluster);
        }
        env.fail(&last)
    }

    /// A Slurm client (`sbatch`, `squeue`, `scancel`, ...) run as the test
    /// user with the test's environment and `SLURM_CONF` set.
    pub fn command(&self, env: &TestEnv, prog: &str) -> Command {
        let path = Path::new("/usr/bin").join(prog);
        let mut cmd = env.command_path(&path);
        cmd.env("SLURM_CONF", &self.conf);
        self.on_ctl(cmd)
    }

    /// `cmd` run where the Slurm clients must run: here, or on the
    /// controller's test host.
    pub fn on_ctl(&self, cmd: Command) -> Command {
        match &self.ctl {
            Some((h, ssh_dir)) => on_host(h, ssh_dir, &cmd),
            None => cmd,
        }
    }

    /// Runs a Slurm client to completion (fails the test if it does not
    /// end within 30 s).
    pub fn run(&self, env: &TestEnv, prog: &str, args: &[&OsStr]) -> Output {
        let mut cmd = self.command(env, prog);
        cmd.args(args);
        env.run(cmd, prog, Duration::from_secs(30))
    }

    /// `sbatch --parsable ARGS...` from the test's work dir (the job's
    /// directory: its output file goes there); returns the job id.
    pub fn sbatch(&self, env: &TestEnv, args: &[&OsStr]) -> u32 {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--parsable")];
        all.extend_from_slice(args);
        let out = self.run(env, "sbatch", &all);
        let id = out
            .stdout
            .trim()
            .split(';')
            .next()
            .and_then(|s| s.parse().ok());
        match (out.status.success(), id) {
            (true, Some(id)) => id,
            _ => env.fail(&format!("sbatch {args:?}: {}", out.describe())),
        }
    }

    /// `JobState` and `ExitCode` of a job, as `scontrol show job` says.
    pub fn job_state(&self, env: &TestEnv, id: u32) -> (String, String) {
        let out = self.run(
            env,
            "scontrol",
            &[
                OsStr::new("show"),
                OsStr::new("job"),
                OsStr::new("-o"),
                OsStr::new(&id.to_string()),
            ],
        );
        let field = |k: &str| {
            out.stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_default()
                .to_string()
        };
        (field("JobState="), field("ExitCode="))
    }

    /// Waits until the job has ended; returns its state and exit code.
    pub fn wait_job_end(&self, env: &TestEnv, id: u32, timeout: Duration) -> (String, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let (state, code) = self.job_state(env, id);
            if !matches!(
                state.as_str(),
                "" | "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED"
            ) {
                return (state, code);
            }
            if Instant::now() > deadline {
                env.fail(&format!(
                    "job {id} still {state} after {timeout:?}\n{}",
                    self.log_tails()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the job runs.
    pub fn wait_job_running(&self, env: &TestEnv, id: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (state, _) = self.job_state(env, id);
            match state.as_str() {
                "RUNNING" => return,
                "" | "PENDING" | "CONFIGURING" => {}
                _ => env.fail(&format!("job {id} is {state}, not running")),
            }
            if Instant::now() > deadline {
                env.fail(&format!(
                    "job {id} still {state} after {timeout:?}\n{}",
                    self.log_tails()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the daemons' logs (for failure messages).
    pub fn log_tails(&self) -> String {
        let mut s = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("log"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
        {
            let text = crate::env::read_lossy(f);
            let f = f.display();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("==> {f} <==\n"));
            for l in &lines[lines.len().saturating_sub(15)..] {
                s.push_str(&format!("  {l}\n"));
            }
        }
        s
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = output_tracked(Command::new(script()).arg("down").arg(&self.dir));
    }
}
