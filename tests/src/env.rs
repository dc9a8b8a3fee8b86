//! One test's world: its temp dir, the user it runs as, its own coordinator
//! on a free port, and every process it starts (all carrying a tag so none is
//! left behind).

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::procs;
use crate::setup;

/// The unprivileged uid/gid every test also runs as.
pub const NOBODY: u32 = 65534;

/// Who the computation (coordinator, launcher, program, restorer) runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// The user running `cargo test` (root in CI).
    Current,
    /// uid/gid 65534 through `setpriv --reuid=65534 --regid=65534 --clear-groups`.
    Nobody,
}

impl User {
    pub fn label(self) -> &'static str {
        match self {
            User::Current => "current-user",
            User::Nobody => "uid65534",
        }
    }
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn describe(&self) -> String {
        format!(
            "{}\n  stdout: {}\n  stderr: {}",
            self.status,
            self.stdout.trim_end().replace('\n', "\n          "),
            self.stderr.trim_end().replace('\n', "\n          ")
        )
    }
}

/// A process started by the test, with its output in log files.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub label: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Proc {
    /// Never leaves an unwaited child behind (a zombie the reaper would not
    /// touch because it is tracked): kill it if still running, then reap it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        procs::untrack(self.child.id());
    }
}

/// Per-test environment. Create with [`TestEnv::new`], end with
/// [`TestEnv::finish`]; dropping it unfinished (a failed test) kills every
/// process of the test and keeps the directory for inspection.
pub struct TestEnv {
    pub name: String,
    pub user: User,
    pub tag: String,
    /// Test root, mode 0755, owned by the runner.
    pub root: PathBuf,
    /// Owned by the test user: cwd of every process, data files, stop file.
    pub work: PathBuf,
    /// Checkpoint dir (owned by the test user).
    pub ckpt: PathBuf,
    /// `DMTCP_TMPDIR` (coordinator secret), owned by the test user.
    pub tmp: PathBuf,
    /// Log files of every process started, owned by the test user.
    pub logs: PathBuf,
    /// Directory holding the compiled target programs.
    pub progs: PathBuf,
    pub port: Option<u16>,
    seq: AtomicUsize,
    finished: bool,
}

static TEST_SEQ: AtomicUsize = AtomicUsize::new(0);

impl TestEnv {
    /// Sets up the dirs of a test. For [`User::Nobody`] panics when not root
    /// (the caller marks that variant ignored instead, see `e2e_tests!`).
    pub fn new(name: &str, user: User) -> TestEnv {
        procs::init();
        if user == User::Nobody {
            assert!(
                procs::is_root(),
                "cannot run as uid {NOBODY}: this test process is not root. The variant is \
                 marked ignored only when the tests are *built* as non-root; rebuild as this \
                 user (cargo clean -p dmtcp-tests) or run as root"
            );
            assert!(
                Path::new("/usr/bin/setpriv").exists() || which("setpriv").is_some(),
                "setpriv not found (install util-linux)"
            );
        }
        let progs = setup::programs_dir().to_path_buf();
        let n = TEST_SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{}-{n}-{}", std::process::id(), name, user.label());
        let root = setup::base_dir().join(format!("{name}-{}", user.label()));
        let _ = fs::remove_dir_all(&root);
        setup::mkdir_0755(&root).expect("create test root");
        let work = root.join("work");
        let env = TestEnv {
            name: name.to_string(),
            user,
            tag,
            ckpt: work.join("ckpt"),
            tmp: work.join("tmp"),
            logs: work.join("logs"),
            work,
            root,
            progs,
            port: None,
            seq: AtomicUsize::new(0),
            finished: false,
        };
        for d in [&env.work, &env.ckpt, &env.tmp, &env.logs] {
            env.make_user_dir(d);
        }
        eprintln!(
            "[{}] {} as {}: dir {}",
            env.name,
            env.tag,
            user.label(),
            env.root.display()
        );
        env
    }

    /// Creates a 0755 dir owned by the test user.
    pub fn make_user_dir(&self, d: &Path) {
        setup::mkdir_0755(d).expect("create user dir");
        self.give_to_user(d);
    }

    /// chowns a path to the test user (no-op for the current user).
    pub fn give_to_user(&self, p: &Path) {
        if self.user == User::Nobody {
            chown(p, Some(NOBODY), Some(NOBODY))
                .unwrap_or_else(|e| panic!("chown {} to {NOBODY}: {e}", p.display()));
        }
    }

    /// Directory holding the dmtcp binaries this test uses (a world-readable
    /// copy for uid 65534). Fails the test if they were not built.
    pub fn bins(&self) -> &'static Path {
        if let Err(e) = setup::bin_dir() {
            self.fail(&format!("{e:#}"));
        }
        self.try_bins()
            .unwrap_or_else(|| self.fail("binaries not found"))
    }

    fn try_bins(&self) -> Option<&'static Path> {
        setup::bin_dir().ok()?;
        Some(match self.user {
            User::Current => setup::bins_for_current_user(),
            User::Nobody => setup::bins_world_readable(),
        })
    }

    /// Path of a dmtcp binary.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins().join(name)
    }

    /// Path of a compiled target program.
    pub fn prog(&self, name: &str) -> PathBuf {
        let p = self.progs.join(name);
        if !p.exists() {
            // Compiles on first use.
            return setup::program(name);
        }
        p
    }

    /// The stop file the zdtm programs wait for.
    pub fn stop_file(&self) -> PathBuf {
        self.work.join("stop")
    }

    /// A command running `path` as the test user, in `work`, with the test's
    /// environment (tag, `DMTCP_TMPDIR`, `ZDTM_STOP`, PATH with the binaries)
    /// and no inherited `DMTCP_*` settings, in its own process group.
    pub fn command_path(&self, path: &Path) -> Command {
        let cmd = match self.user {
            User::Current => Command::new(path),
            User::Nobody => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={NOBODY}"),
                    format!("--regid={NOBODY}"),
                    "--clear-groups".into(),
                    "--".into(),
                ]);
                c.arg(path);
                c
            }
        };
        self.with_test_env(cmd)
    }

    /// [`TestEnv::command_path`] on a machine that forbids user namespaces
    /// (`tests/programs/no_userns.c`, run as root, which drops to uid
    /// 65534 itself; the test must be root and use [`User::Nobody`]).
    pub fn command_locked_down(&self, path: &Path) -> Command {
        let mut cmd = Command::new(self.prog("no_userns"));
        cmd.arg(path);
        self.with_test_env(cmd)
    }

    /// [`TestEnv::command_path`] run as uid 65534 inside the user namespace
    /// of process `pid` (root only): a tool that must trace the processes
    /// of a computation [`TestEnv::command_locked_down`] started has to be
    /// in their user namespace.
    pub fn command_in_userns_of(&self, pid: i32, path: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--user", "--target", &pid.to_string(), "--"])
            .args([
                "setpriv",
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
            ])
            .args(["--clear-groups", "--"])
            .arg(path);
        self.with_test_env(cmd)
    }

    fn with_test_env(&self, mut cmd: Command) -> Command {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("DMTCP_") && k != "DMTCP_LOG" {
                cmd.env_remove(&k);
            }
        }
        let path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        if let Some(bins) = self.try_bins() {
            cmd.env("PATH", format!("{}:{path_var}", bins.display()));
        }
        cmd.env(procs::TAG_VAR, &self.tag)
            .env("DMTCP_TMPDIR", &self.tmp)
            .env("ZDTM_STOP", self.stop_file())
            .env("HOME", &self.work)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .process_group(0);
        cmd
    }

    /// [`TestEnv::command_path`] for a dmtcp binary by name.
    pub fn command(&self, bin: &str) -> Command {
        self.command_path(&self.bin(bin))
    }

    /// Adds `--coord-port P` style flags for the test's coordinator.
    pub fn port(&self) -> u16 {
        self.port
            .unwrap_or_else(|| self.fail("no coordinator started for this test"))
    }

    fn log_pair(&self, label: &str) -> (PathBuf, PathBuf, File, File) {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let out = self.logs.join(format!("{n:02}-{label}.out"));
        let err = self.logs.join(format!("{n:02}-{label}.err"));
        let open = |p: &Path| {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open log {}: {e}", p.display()));
            // Restored processes may reopen their stdout by path as the test user.
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o644));
            self.give_to_user(p);
            f
        };
        let fo = open(&out);
        let fe = open(&err);
        (out, err, fo, fe)
    }

    /// Starts `cmd` in the background, stdout/stderr appended to log files.
    pub fn spawn(&self, mut cmd: Command, label: &str) -> Proc {
        let (stdout, stderr, fo, fe) = self.log_pair(label);
        cmd.stdout(fo).stderr(fe);
        let child = procs::spawn_tracked(&mut cmd)
            .unwrap_or_else(|e| self.fail(&format!("spawn {label} ({cmd:?}): {e}")));
        Proc {
            child,
            label: label.to_string(),
            stdout,
            stderr,
        }
    }

    /// Waits for a background process; fails the test (with a dump of every
    /// process of the test) if it does not exit within `timeout`.
    pub fn wait(&self, p: &mut Proc, timeout: Duration) -> ExitStatus {
        match procs::wait_child_until(&mut p.child, Instant::now() + timeout) {
            Ok(Some(st)) => st,
            Ok(None) => self.fail(&format!(
                "{} (pid {}) did not exit within {timeout:?}",
                p.label,
                p.pid()
            )),
            Err(e) => self.fail(&format!("wait for {}: {e}", p.label)),
        }
    }

    /// Runs a command to completion with a watchdog.
    pub fn run(&self, cmd: Command, label: &str, timeout: Duration) -> Output {
        let mut p = self.spawn(cmd, label);
        let status = self.wait(&mut p, timeout);
        Output {
            status,
            stdout: fs::read_to_string(&p.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&p.stderr).unwrap_or_default(),
        }
    }

    /// `dmtcp-command -p PORT ARGS...` with a watchdog.
    pub fn dmtcp_command(&self, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = self.command("dmtcp-command");
        cmd.arg("-p").arg(self.port().to_string()).args(args);
        let label = format!("command{}", args.join("").replace('-', "_"));
        self.run(cmd, &label, timeout)
    }

    /// Starts this test's own coordinator on a free port:
    /// `dmtcp-coordinator --daemon --port 0 --port-file work/port --ckpt-dir work/ckpt`.
    pub fn start_coordinator(&mut self) -> u16 {
        let port_file = self.work.join("port");
        // A previous coordinator's port must not be taken for this one's.
        let _ = fs::remove_file(&port_file);
        let mut cmd = self.command("dmtcp-coordinator");
        cmd.args(["--daemon", "--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--ckpt-dir")
            .arg(&self.ckpt);
        let mut p = self.spawn(cmd, "coordinator");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
                .filter(|p| *p != 0)
            {
                break port;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                procs::untrack(p.child.id());
                if !st.success() {
                    self.fail(&format!(
                        "dmtcp-coordinator --daemon exited with {st} before writing {}:\n{}",
                        port_file.display(),
                        read_lossy(&p.stderr)
                    ));
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "dmtcp-coordinator did not write a port to {} within 20 s",
                    port_file.display()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        };
        let st = self.wait(&mut p, Duration::from_secs(10));
        if !st.success() {
            self.fail(&format!("dmtcp-coordinator --daemon returned {st}"));
        }
        self.port = Some(port);
        port
    }

    /// Stops the coordinator with `dmtcp-command -q` (errors are reported, not fatal).
    pub fn stop_coordinator(&mut self) -> Option<Output> {
        self.port?;
        let out = self.dmtcp_command(&["-q"], Duration::from_secs(15));
        if !out.status.success() {
            eprintln!("[{}] dmtcp-command -q: {}", self.name, out.describe());
        }
        self.port = None;
        Some(out)
    }

    /// Live processes of this test that are not the coordinator.
    pub fn computation_pids(&self) -> Vec<i32> {
        procs::tagged(&self.tag)
            .into_iter()
            .filter(|&p| !is_coordinator(p))
            .collect()
    }

    /// Waits until no process of the test except the coordinator is alive;
    /// fails naming the leftovers otherwise.
    pub fn assert_no_computation_left(&self, context: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.computation_pids();
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!("{context}: processes left running: {left:?}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `cond` until it holds; fails with `what` after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            if Instant::now() > deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Concatenated stdout logs of the launchers (`run-*`, `restart-*`,
    /// `bare-*`): where the target program's stdout goes.
    pub fn launcher_stdout(&self) -> String {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.logs)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "out"))
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                let label = name.as_deref().and_then(|n| n.split_once('-')).map(|x| x.1);
                label.is_some_and(|l| {
                    l.starts_with("run-") || l.starts_with("restart-") || l.starts_with("bare-")
                })
            })
            .map(|p| read_lossy(p))
            .collect()
    }

    /// Concatenated stdout logs of every process started so far.
    pub fn all_stdout(&self) -> String {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.logs)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "out"))
            .map(|p| read_lossy(p))
            .collect()
    }

    /// Fails the test: dumps /proc status and stack of every process of the
    /// test and the tails of all logs, then panics (Drop kills the processes).
    pub fn fail(&self, msg: &str) -> ! {
        let mut report = format!("[{}] FAILED: {msg}\n", self.name);
        let pids = procs::tagged(&self.tag);
        if !pids.is_empty() {
            report.push_str("processes of this test at the time of failure:\n");
            for p in &pids {
                report.push_str(&procs::describe(*p));
            }
        }
        report.push_str(&self.log_tails());
        let _ = writeln!(report, "test dir kept: {}", self.root.display());
        panic!("{report}");
    }

    /// The last lines of every log of the test.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = fs::read_dir(&self.logs)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let text = read_lossy(&f);
            if text.trim().is_empty() {
                continue;
            }
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(25);
            let _ = writeln!(out, "==> {} <==", f.display());
            for l in &lines[from..] {
                let _ = writeln!(out, "  {l}");
            }
        }
        out
    }

    /// Ends a successful test: stops the coordinator, checks nothing of the
    /// test is left running, removes the directory.
    pub fn finish(mut self) {
        self.stop_coordinator();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = procs::tagged(&self.tag);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "processes left running after dmtcp-command -q: {left:?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        procs::reap_untracked();
        self.finished = true;
        if std::env::var_os("DMTCP_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.port.is_some() {
            // Best effort, short: the computation may be wedged.
            let mut cmd = self.command("dmtcp-command");
            cmd.arg("-p")
                .arg(self.port.unwrap_or(0).to_string())
                .arg("-q");
            let (_, _, fo, fe) = self.log_pair("cleanup-quit");
            cmd.stdout(fo).stderr(fe);
            if let Ok(mut c) = procs::spawn_tracked(&mut cmd) {
                let _ = procs::wait_child_until(&mut c, Instant::now() + Duration::from_secs(5));
                let _ = c.kill();
                let _ = c.wait();
                procs::untrack(c.id());
            }
        }
        let killed = procs::kill_tagged(&self.tag);
        if !killed.is_empty() {
            eprintln!("[{}] killed leftover processes {killed:?}", self.name);
        }
        eprintln!(
            "[{}] test dir kept for inspection: {}",
            self.name,
            self.root.display()
        );
    }
}

/// Whether `pid` is a dmtcp coordinator (by comm or argv[0]).
pub fn is_coordinator(pid: i32) -> bool {
    let comm = procs::stat(pid).map(|s| s.comm).unwrap_or_default();
    if comm.starts_with("dmtcp-coordinat") || comm.starts_with("dmtcp_coordinat") {
        return true;
    }
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|b| {
            b.split(|c| *c == 0)
                .next()
                .map(|a| String::from_utf8_lossy(a).into_owned())
        })
        .is_some_and(|argv0| {
            argv0.contains("dmtcp-coordinator") || argv0.contains("dmtcp_coordinator")
        })
}

pub fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}
