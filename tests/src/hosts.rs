//! Test hosts: network namespaces with their own address, hostname and
//! sshd, made by `tests/hosts/mkhosts.sh` for one test and torn down when
//! the [`TestHosts`] is dropped (also when the test fails). Needs root:
//! [`TestHosts::up`] returns `None` with a message otherwise, and the test
//! skips.

use std::ffi::OsStr;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::env::{TestEnv, User, NOBODY};
use crate::procs;
use crate::setup::output_tracked;

/// One test host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its name (`h0`, `h1`, ...): hostname inside, ssh host name outside.
    pub name: String,
    /// Its network namespace (`ip netns`).
    pub netns: String,
    /// Its address (198.18.0.0/15).
    pub addr: String,
    /// Its sshd: every command run "on" the host enters this process's
    /// network, UTS and mount namespaces.
    pub sshd: i32,
}

/// The hosts of one test.
pub struct TestHosts {
    pub dir: PathBuf,
    pub hosts: Vec<Host>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn script() -> PathBuf {
    crate::setup::crate_dir().join("hosts/mkhosts.sh")
}

/// Why hosts cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !procs::is_root() {
        return Some("making test hosts (network namespaces, sshd) needs root".into());
    }
    for (p, pkg) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh", "openssh-client"),
    ] {
        if !Path::new(p).exists() {
            return Some(format!("{p} not found (install {pkg})"));
        }
    }
    if output_tracked(Command::new("ip").arg("-V")).is_err() {
        return Some("ip not found (install iproute2)".into());
    }
    None
}

impl TestHosts {
    /// Makes `n` hosts under the test's root; `None` (after printing why)
    /// when this machine or user cannot.
    pub fn up(env: &TestEnv, n: usize) -> Option<TestHosts> {
        if let Some(why) = unavailable() {
            eprintln!("[{}] skipped: {why}", env.name);
            return None;
        }
        let dir = env.root.join("hosts");
        let id = format!(
            "{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        // From here on Drop tears down whatever was made (`down` on a
        // directory mkhosts.sh never filled does nothing).
        let mut hosts = TestHosts {
            dir: dir.clone(),
            hosts: Vec::new(),
        };
        let out = output_tracked(
            Command::new(script())
                .arg("up")
                .arg(&dir)
                .arg(&id)
                .arg(n.to_string())
                .arg(&env.work),
        )
        .unwrap_or_else(|e| env.fail(&format!("running mkhosts.sh: {e}")));
        if !out.status.success() {
            env.fail(&format!(
                "mkhosts.sh up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = std::fs::read_to_string(dir.join("hosts.env")).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("HOST_") else {
                continue;
            };
            let Some((_, v)) = rest.split_once('=') else {
                continue;
            };
            let f: Vec<&str> = v.split_whitespace().collect();
            if f.len() == 4 {
                hosts.hosts.push(Host {
                    name: f[0].into(),
                    netns: f[1].into(),
                    addr: f[2].into(),
                    sshd: f[3].parse().unwrap_or(0),
                });
            }
        }
        if hosts.hosts.len() != n {
            env.fail(&format!("mkhosts.sh made {:?}", hosts.hosts));
        }
        if env.user == User::Nobody {
            // ssh uses a private key only if it belongs to the user.
            let key = dir.join("id_ed25519");
            chown(&key, Some(NOBODY), Some(NOBODY))
                .unwrap_or_else(|e| env.fail(&format!("chown {}: {e}", key.display())));
        }
        Some(hosts)
    }

    /// Directory with the test's `ssh` wrapper (put it first on PATH).
    pub fn ssh_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// `cmd` (from [`TestEnv::command`], so as the test user with the
    /// test's environment) run on host `i`: in its network, UTS and mount
    /// namespaces, with the test's ssh wrapper first on PATH.
    pub fn on(&self, i: usize, cmd: &Command) -> Command {
        on_host(&self.hosts[i], &self.ssh_dir(), cmd)
    }

    /// Live processes inside the hosts (their network namespaces), the
    /// sshd servers excepted.
    pub fn pids(&self) -> Vec<i32> {
        let inodes: Vec<u64> = self
            .hosts
            .iter()
            .filter_map(|h| net_inode(h.sshd))
            .collect();
        let sshds: Vec<i32> = self.hosts.iter().map(|h| h.sshd).collect();
        procs::all_pids()
            .into_iter()
            .filter(|p| !sshds.contains(p))
            .filter(|&p| net_inode(p).is_some_and(|i| inodes.contains(&i)))
            .filter(|&p| procs::stat(p).is_some_and(|s| s.state != 'Z'))
            .collect()
    }

    /// Host index of a process inside the hosts.
    pub fn host_of(&self, pid: i32) -> Option<usize> {
        let i = net_inode(pid)?;
        self.hosts.iter().position(|h| net_inode(h.sshd) == Some(i))
    }
}

/// `cmd` run on host `h` (see [`TestHosts::on`]), with `ssh_dir` first on
/// PATH.
pub fn on_host(h: &Host, ssh_dir: &Path, cmd: &Command) -> Command {
    let mut c = Command::new("nsenter");
    c.arg("-t").arg(h.sshd.to_string()).args([
        "-n",
        "-u",
        "-m",
        "--",
        "/bin/sh",
        "-c",
        "cd \"$0\" && exec \"$@\"",
    ]);
    c.arg(cmd.get_current_dir().unwrap_or(Path::new("/")));
    c.arg(cmd.get_program()).args(cmd.get_args());
    let mut path = None;
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => {
                if k == OsStr::new("PATH") {
                    path = Some(v.to_os_string());
                }
                c.env(k, v);
            }
            None => {
                c.env_remove(k);
            }
        }
    }
    let base = path
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/bin:/bin".into());
    let mut p = ssh_dir.as_os_str().to_os_string();
    p.push(":");
    p.push(base);
    c.env("PATH", p);
    c.stdin(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c
}

fn net_inode(pid: i32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        let _ = output_tracked(Command::new(script()).arg("down").arg(&self.dir));
    }
}
