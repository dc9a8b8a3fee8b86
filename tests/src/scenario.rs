//! The zdtm-style driver: launch -> READY -> checkpoint -> kill -> restart ->
//! checkpoint again -> restart (from the generated script) -> stop -> PASS,
//! comparing /proc before each checkpoint and after each restart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::env::{read_lossy, Proc, TestEnv};
use crate::procfs;
use crate::procs;

/// How scenarios run, from `ZDTM_MODE` / `ZDTM_ROUNDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ZDTM_MODE=bare`: the program alone, no dmtcp at all.
    Bare,
    /// `ZDTM_MODE=norestart`: under `dmtcp-run`, never checkpointed.
    NoRestart,
    /// Default: N checkpoint/kill/restart rounds (`ZDTM_ROUNDS`, default 2).
    Rounds(usize),
}

impl Mode {
    pub fn from_env() -> Mode {
        match std::env::var("ZDTM_MODE").as_deref() {
            Ok("bare") => Mode::Bare,
            Ok("norestart") => Mode::NoRestart,
            Ok("") | Ok("restart") | Err(_) => Mode::Rounds(
                std::env::var("ZDTM_ROUNDS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(2),
            ),
            Ok(other) => panic!("unknown ZDTM_MODE={other} (bare, norestart, restart)"),
        }
    }
}

/// What to do when /proc differs between before checkpoint and after
/// restart (`ZDTM_PROC_CHECK=strict|warn|off`, default strict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcCheck {
    Strict,
    Warn,
    Off,
}

impl ProcCheck {
    pub fn from_env() -> ProcCheck {
        match std::env::var("ZDTM_PROC_CHECK").as_deref() {
            Ok("warn") => ProcCheck::Warn,
            Ok("off") => ProcCheck::Off,
            _ => ProcCheck::Strict,
        }
    }
}

/// One target program and how to run it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub prog: String,
    pub args: Vec<OsString>,
    /// Extra flags for `dmtcp-run` (before `--`).
    pub run_flags: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Environment of `dmtcp-restart` (and the restart script).
    pub restart_env: Vec<(String, String)>,
    /// How long the program works between steps.
    pub settle: Duration,
    /// Watchdog for one blocking checkpoint.
    pub ckpt_timeout: Duration,
    pub mode: Mode,
    pub proc_check: ProcCheck,
    /// Program name in image file names, when not `prog` (scripts).
    pub image_name: Option<String>,
    /// A script from `setup::SCRIPTS` that runs the launchers (`dmtcp-run`,
    /// `dmtcp-restart`, the restart script), e.g. `on_pty`.
    pub wrapper: Option<String>,
    /// Run without namespaces and unprivileged: a restart gives the
    /// processes new kernel pids (the program sees its old ones) and, for
    /// a computation with shared memory objects, leaves /proc/PID/exe on
    /// the restart shell; the /proc comparison after a restart leaves
    /// those two out.
    pub kernel_pids_change: bool,
}

impl Scenario {
    pub fn new(prog: &str) -> Scenario {
        Scenario {
            prog: prog.to_string(),
            args: Vec::new(),
            run_flags: Vec::new(),
            env: Vec::new(),
            restart_env: Vec::new(),
            settle: Duration::from_millis(1000),
            ckpt_timeout: Duration::from_secs(120),
            mode: Mode::from_env(),
            proc_check: ProcCheck::from_env(),
            image_name: None,
            wrapper: None,
            kernel_pids_change: false,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn run_flag(mut self, f: &str) -> Self {
        self.run_flags.push(f.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Sets an environment variable of `dmtcp-restart` only.
    pub fn restart_env(mut self, k: &str, v: &str) -> Self {
        self.restart_env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn settle(mut self, d: Duration) -> Self {
        self.settle = d;
        self
    }

    /// Runs every launcher through `script` (one of `setup::SCRIPTS`, given
    /// the launcher's path and arguments), or through `no_userns` (a
    /// machine that forbids user namespaces; root tests as uid 65534 only).
    pub fn wrapper(mut self, script: &str) -> Self {
        self.wrapper = Some(script.into());
        self
    }

    /// A launcher command (`dmtcp-run`, `dmtcp-restart`, a restart
    /// script), through the wrapper if there is one.
    fn launcher_command(&self, env: &TestEnv, path: &Path) -> Command {
        match &self.wrapper {
            // Root runs it; it drops to uid 65534 itself.
            Some(w) if w == "no_userns" => env.command_locked_down(path),
            Some(w) => {
                let mut cmd = env.command_path(&env.prog(w));
                cmd.arg(path);
                cmd
            }
            None => env.command_path(path),
        }
    }

    /// See [`Scenario::kernel_pids_change`].
    pub fn kernel_pids_change(mut self) -> Self {
        self.kernel_pids_change = true;
        self
    }

    /// The program name images carry, when it is not `prog`.
    pub fn image_name(mut self, name: &str) -> Self {
        self.image_name = Some(name.into());
        self
    }

    pub fn ckpt_timeout(mut self, d: Duration) -> Self {
        self.ckpt_timeout = d;
        self
    }

    /// The whole scenario in the mode from the environment.
    pub fn run(&self, env: &mut TestEnv) {
        match self.mode {
            Mode::Bare => {
                let mut r = self.launch_bare(env);
                r.finish();
            }
            Mode::NoRestart => {
                env.start_coordinator();
                let mut r = self.launch(env);
                r.finish();
            }
            Mode::Rounds(n) => {
                env.start_coordinator();
                let mut r = self.launch(env);
                for _ in 0..n {
                    r.round();
                }
                r.finish();
            }
        }
    }

    fn program_command(&self, env: &TestEnv, cmd: &mut Command) {
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env("ZDTM_OUT", env.work.join("zdtm.result"));
    }

    /// The program alone (no dmtcp): does the test itself work?
    pub fn launch_bare<'a>(&'a self, env: &'a TestEnv) -> Running<'a> {
        let mut cmd = env.command_path(&env.prog(&self.prog));
        cmd.args(&self.args);
        self.program_command(env, &mut cmd);
        let launcher = env.spawn(cmd, &format!("bare-{}", self.prog));
        let mut r = Running::new(self, env, launcher);
        r.wait_ready();
        r
    }

    /// `dmtcp-run --coord-port P FLAGS -- prog args`, waiting for READY.
    pub fn launch<'a>(&'a self, env: &'a TestEnv) -> Running<'a> {
        let mut cmd = self.launcher_command(env, &env.bin("dmtcp-run"));
        cmd.arg("--coord-port")
            .arg(env.port().to_string())
            .args(&self.run_flags)
            .arg("--")
            .arg(env.prog(&self.prog))
            .args(&self.args);
        self.program_command(env, &mut cmd);
        let launcher = env.spawn(cmd, &format!("run-{}", self.prog));
        let mut r = Running::new(self, env, launcher);
        r.wait_ready();
        r
    }
}

/// Identity of an image file, to tell which ones a checkpoint (re)wrote.
type ImageId = (u64, u64, SystemTime, u64);

/// A launched scenario: the foreground launcher (`dmtcp-run`, then
/// `dmtcp-restart` or the restart script) and the program's host pid.
pub struct Running<'a> {
    pub sc: &'a Scenario,
    pub env: &'a TestEnv,
    pub launcher: Proc,
    pub host_pid: Option<i32>,
    /// Images of the last checkpoint.
    pub images: Vec<PathBuf>,
    pub rounds_done: usize,
    before: Option<procfs::ProcSnapshot>,
    /// A second look just after the checkpoint: a program that moves
    /// between two states all the time (a shell script installs a SIGINT
    /// handler while it waits for each child) may be caught in either.
    before_alt: Option<procfs::ProcSnapshot>,
    /// What the last `dmtcp-command -bc` printed on stderr (its warnings).
    pub ckpt_stderr: String,
}

impl<'a> Running<'a> {
    fn new(sc: &'a Scenario, env: &'a TestEnv, launcher: Proc) -> Running<'a> {
        Running {
            sc,
            env,
            launcher,
            host_pid: None,
            images: Vec::new(),
            rounds_done: 0,
            before: None,
            before_alt: None,
            ckpt_stderr: String::new(),
        }
    }

    fn launcher_exited(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.launcher.child.try_wait().ok().flatten();
        if st.is_some() {
            procs::untrack(self.launcher.child.id());
        }
        st
    }

    /// Waits for "READY" on the launcher's stdout.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if read_lossy(&self.launcher.stdout)
                .lines()
                .any(|l| l.trim() == "READY")
            {
                break;
            }
            if let Some(st) = self.launcher_exited() {
                self.env.fail(&format!(
                    "{} exited with {st} before the program printed READY",
                    self.launcher.label
                ));
            }
            if Instant::now() > deadline {
                self.env
                    .fail(&format!("{} never printed READY (30 s)", self.sc.prog));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.host_pid = Some(self.find_target(Duration::from_secs(10)));
    }

    /// Host pid of the target program: a live process of this test whose
    /// name is the program's, preferably a descendant of the launcher; falls
    /// back to `dmtcp-command -l` (columns: vpid, host pid, program, host).
    pub fn find_target(&self, timeout: Duration) -> i32 {
        let comm: String = self.sc.prog.chars().take(15).collect();
        let deadline = Instant::now() + timeout;
        loop {
            // Not a zombie: the killed computation's processes linger a
            // moment until the harness reaps them, and a restart without
            // namespaces lists their (virtual) pids.
            let named = |pids: Vec<i32>| -> Vec<i32> {
                pids.into_iter()
                    .filter(|&p| {
                        procs::stat(p)
                            .is_some_and(|s| s.comm == comm && !matches!(s.state, 'Z' | 'X'))
                            && procs::is_leader(p)
                    })
                    .collect()
            };
            // The launcher itself too: run bare, it is the program.
            let root = self.launcher.pid();
            let mut c = named(
                std::iter::once(root)
                    .chain(procs::descendants(root))
                    .collect(),
            );
            if c.is_empty() {
                c = named(procs::tagged(&self.env.tag));
            }
            if c.is_empty() && self.env.port.is_some() && self.sc.mode != Mode::Bare {
                c = named(self.list_host_pids());
            }
            c.sort();
            c.dedup();
            if c.len() == 1 {
                return c[0];
            }
            if c.len() > 1 {
                // A shell's subshells share its name: take the topmost one
                // if exactly one has no same-named parent.
                let top: Vec<i32> = c
                    .iter()
                    .copied()
                    .filter(|&p| procs::stat(p).is_none_or(|s| !c.contains(&s.ppid)))
                    .collect();
                if top.len() == 1 {
                    return top[0];
                }
                // A restart in progress renames its processes one by one
                // (without namespaces each restart shell even execs the
                // program first): wait for it to settle.
                if Instant::now() > deadline {
                    self.env.fail(&format!(
                        "several processes named {comm} in this test: {c:?}"
                    ));
                }
            }
            if Instant::now() > deadline {
                self.env.fail(&format!(
                    "no live process named {comm} found within {timeout:?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Integers on the `dmtcp-command -l` lines that mention the program.
    /// Waits (at most `timeout`, then goes on) until `dmtcp-command -l`
    /// lists a process with its host pid: a restart lists its processes
    /// with host pid 0 until every one is restored and runs, and looking
    /// for the program before that can find a process half restored (with
    /// the restart shell's name, or without namespaces the program's name
    /// of a shell that exec'd it for the restore).
    fn wait_listed_running(&mut self, timeout: Duration) {
        if self.env.port.is_none() || self.sc.mode == Mode::Bare {
            return;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.launcher_exited() {
                self.env.fail(&format!(
                    "{} exited with {st} while restoring",
                    self.launcher.label
                ));
            }
            let out = self.env.dmtcp_command(&["-l"], Duration::from_secs(20));
            if out.status.success() && !all_list_pids(&out.stdout).is_empty() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn list_host_pids(&self) -> Vec<i32> {
        let out = self.env.dmtcp_command(&["-l"], Duration::from_secs(20));
        if !out.status.success() {
            return Vec::new();
        }
        parse_list_pids(&out.stdout, &self.sc.prog)
    }

    /// The image files in the checkpoint dir and their identities.
    fn image_ids(&self) -> BTreeMap<PathBuf, ImageId> {
        let mut out = BTreeMap::new();
        let Ok(rd) = fs::read_dir(&self.env.ckpt) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("ckpt_") && name.ends_with(".dmtcp")) {
                continue;
            }
            if let Ok(m) = e.metadata() {
                let id = (
                    m.dev(),
                    m.ino(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.size(),
                );
                out.insert(e.path(), id);
            }
        }
        out
    }

    /// Snapshot of the target's /proc state (for the comparison after restart).
    fn snapshot(&self) -> Option<procfs::ProcSnapshot> {
        if self.sc.proc_check == ProcCheck::Off {
            return None;
        }
        let pid = self.host_pid?;
        match procfs::snapshot(pid) {
            Ok(s) => Some(s),
            Err(e) => self.env.fail(&format!(
                "cannot read /proc of {} (pid {pid}): {e:#}",
                self.sc.prog
            )),
        }
    }

    /// `dmtcp-command -bc`: must succeed and (re)write at least one
    /// `ckpt_<prog>_*.dmtcp`; the program keeps running.
    pub fn checkpoint(&mut self) -> Vec<PathBuf> {
        self.checkpoint_with(&[])
    }

    /// [`checkpoint`](Self::checkpoint) with more `dmtcp-command -bc`
    /// options (`--precopy`, `--incremental`).
    pub fn checkpoint_with(&mut self, extra: &[&str]) -> Vec<PathBuf> {
        self.before = self.snapshot();
        let old = self.image_ids();
        let t0 = Instant::now();
        let mut args = vec!["-bc"];
        args.extend_from_slice(extra);
        let out = self.env.dmtcp_command(&args, self.sc.ckpt_timeout);
        self.ckpt_stderr = out.stderr.clone();
        if !out.status.success() {
            self.env.fail(&format!(
                "dmtcp-command {args:?} failed: {}",
                out.describe()
            ));
        }
        // An fd the program opens and closes all the time (to re-read a
        // file, say) may be open in one snapshot and not at checkpoint
        // time: compare only fds open both just before and just after it.
        let now = self.snapshot();
        self.before_alt = None;
        if let (Some(before), Some(mut now)) = (self.before.as_mut(), now) {
            before.fds.retain(|fd, e| now.fds.get(fd) == Some(e));
            now.fds.retain(|fd, _| before.fds.contains_key(fd));
            self.before_alt = Some(now);
        }
        let new = self.image_ids();
        let images: Vec<PathBuf> = new
            .iter()
            .filter(|(p, id)| old.get(*p) != Some(*id))
            .map(|(p, _)| p.clone())
            .collect();
        if images.is_empty() {
            self.env.fail(&format!(
                "dmtcp-command -bc succeeded but no ckpt_*.dmtcp was written in {} (existing: {:?})",
                self.env.ckpt.display(),
                new.keys().collect::<Vec<_>>()
            ));
        }
        // Images are named after the executable: a script's is its
        // interpreter's.
        let prefix = format!(
            "ckpt_{}_",
            self.sc.image_name.as_deref().unwrap_or(&self.sc.prog)
        );
        if !images.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        }) {
            self.env
                .fail(&format!("no image named {prefix}*.dmtcp among {images:?}"));
        }
        if let Some(pid) = self.host_pid {
            if !procs::alive(pid) {
                self.env.fail(&format!(
                    "{} (pid {pid}) died during the checkpoint",
                    self.sc.prog
                ));
            }
        }
        eprintln!(
            "[{}] checkpoint took {:?}: {:?}",
            self.env.name,
            t0.elapsed(),
            images
        );
        self.images = images.clone();
        images
    }

    /// `dmtcp-command -k`, then waits for the launcher to exit and for every
    /// process of the computation to be gone.
    pub fn kill(&mut self) {
        let out = self.env.dmtcp_command(&["-k"], Duration::from_secs(30));
        if !out.status.success() {
            self.env
                .fail(&format!("dmtcp-command -k failed: {}", out.describe()));
        }
        self.env.wait(&mut self.launcher, Duration::from_secs(30));
        self.env
            .assert_no_computation_left("after dmtcp-command -k", Duration::from_secs(15));
        self.host_pid = None;
    }

    /// `dmtcp-restart --coord-port P IMAGES...` in the background.
    pub fn restart_from_images(&mut self, images: &[PathBuf]) {
        let mut cmd = self
            .sc
            .launcher_command(self.env, &self.env.bin("dmtcp-restart"));
        cmd.arg("--coord-port")
            .arg(self.env.port().to_string())
            .args(images)
            .envs(self.sc.restart_env.iter().map(|(k, v)| (k, v)));
        self.launcher = self.env.spawn(cmd, &format!("restart-{}", self.sc.prog));
        self.wait_restored();
    }

    /// Restart with the `dmtcp_restart_script.sh` the coordinator wrote.
    pub fn restart_from_script(&mut self) {
        let script = self.env.ckpt.join("dmtcp_restart_script.sh");
        if !script.is_file() {
            self.env.fail(&format!(
                "the coordinator did not write {}",
                script.display()
            ));
        }
        let mut cmd = self.sc.launcher_command(self.env, &script);
        cmd.envs(self.sc.restart_env.iter().map(|(k, v)| (k, v)));
        self.launcher = self
            .env
            .spawn(cmd, &format!("restart-script-{}", self.sc.prog));
        self.wait_restored();
    }

    /// Waits until the restored program runs (found, not stopped), then
    /// compares its /proc with the snapshot taken before the checkpoint.
    pub fn wait_restored(&mut self) {
        self.wait_listed_running(Duration::from_secs(60));
        let pid = self.find_target(Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.launcher_exited() {
                self.env.fail(&format!(
                    "{} exited with {st} right after restoring",
                    self.launcher.label
                ));
            }
            let state = procs::stat(pid).map(|s| s.state);
            match state {
                None | Some('Z') | Some('X') => self
                    .env
                    .fail(&format!("restored {} (pid {pid}) died", self.sc.prog)),
                Some('t') | Some('T') => {}
                Some(_) => break,
            }
            if Instant::now() > deadline {
                self.env.fail(&format!(
                    "restored {} (pid {pid}) stayed stopped for 30 s",
                    self.sc.prog
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(300));
        self.host_pid = Some(pid);
        let alt = self.before_alt.take();
        if let (Some(before), Some(mut after)) = (self.before.take(), self.snapshot()) {
            // The restored state must match the program as seen just before
            // or just after the checkpoint.
            let expected = |d: &String| {
                self.sc.kernel_pids_change
                    && (d.starts_with("exe: ") || d.starts_with("pid seen by the program"))
            };
            let compare = |a: &procfs::ProcSnapshot, b: &procfs::ProcSnapshot| {
                let mut d = procfs::compare(a, b);
                d.retain(|d| !expected(d));
                d
            };
            let differ = |after: &procfs::ProcSnapshot| {
                let diffs = compare(&before, after);
                match &alt {
                    Some(alt) if !diffs.is_empty() => {
                        let other = compare(alt, after);
                        if other.is_empty() {
                            other
                        } else {
                            diffs
                        }
                    }
                    _ => diffs,
                }
            };
            let mut diffs = differ(&after);
            // A program that opens and closes fds all the time (a client
            // connecting every 100 ms) can be caught with one open: only a
            // difference that is still there a moment later counts.
            for _ in 0..3 {
                if diffs.is_empty() {
                    break;
                }
                thread::sleep(Duration::from_millis(150));
                match self.snapshot() {
                    Some(again) => {
                        after = again;
                        diffs = differ(&after);
                    }
                    None => break,
                }
            }
            if !diffs.is_empty() {
                let msg = format!(
                    "/proc of {} differs between before checkpoint and after restart:\n  {}\n\
                     before:\n{}after:\n{}",
                    self.sc.prog,
                    diffs.join("\n  "),
                    procfs::render(&before),
                    procfs::render(&after)
                );
                match self.sc.proc_check {
                    ProcCheck::Strict => self.env.fail(&format!(
                        "{msg}(set ZDTM_PROC_CHECK=warn to only report this)"
                    )),
                    _ => eprintln!("[{}] warning: {msg}", self.env.name),
                }
            }
        }
    }

    /// One round: work, checkpoint, kill, restart (first round from the
    /// image files, later rounds from the generated restart script).
    pub fn round(&mut self) {
        thread::sleep(self.sc.settle);
        let images = self.checkpoint();
        self.kill();
        if self.rounds_done == 0 {
            self.restart_from_images(&images);
        } else {
            self.restart_from_script();
        }
        self.rounds_done += 1;
    }

    /// Lets the program work, creates the stop file and requires PASS and
    /// exit status 0 from the launcher.
    pub fn finish(&mut self) {
        thread::sleep(self.sc.settle + Duration::from_millis(500));
        if let Some(st) = self.launcher_exited() {
            self.env.fail(&format!(
                "{} exited with {st} before the stop file was created",
                self.launcher.label
            ));
        }
        create_stop_file(&self.env.stop_file());
        let st = self.env.wait(&mut self.launcher, Duration::from_secs(120));
        // The verdict: the program's stdout (wherever the launchers logged it)
        // and the ZDTM_OUT file it appends "<prog>: PASS|FAIL: ..." to by path.
        let out = self.env.launcher_stdout();
        let result = read_lossy(&self.env.work.join("zdtm.result"));
        let mine = format!("{}: ", self.sc.prog);
        let result: Vec<&str> = result
            .lines()
            .filter_map(|l| l.strip_prefix(mine.as_str()))
            .collect();
        if let Some(line) = out
            .lines()
            .chain(result.iter().copied())
            .find(|l| l.starts_with("FAIL: "))
        {
            self.env.fail(&format!("{} reported {line}", self.sc.prog));
        }
        if !out
            .lines()
            .chain(result.iter().copied())
            .any(|l| l.trim() == "PASS")
        {
            self.env.fail(&format!(
                "{} never printed PASS ({} exited with {st})",
                self.sc.prog, self.launcher.label
            ));
        }
        if !st.success() {
            self.env.fail(&format!(
                "{} printed PASS but {} exited with {st}",
                self.sc.prog, self.launcher.label
            ));
        }
        let _ = fs::remove_file(self.env.stop_file());
        self.env
            .assert_no_computation_left("after the program passed", Duration::from_secs(15));
    }
}

pub fn create_stop_file(path: &Path) {
    fs::write(path, b"stop\n").unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
}

/// The (host pid, program) rows of a `dmtcp-command -l` output with a
/// host pid (not 0: a restart lists its processes with 0 until they run).
/// Only the HOST_PID column and the PROGRAM one after it: other columns
/// hold numbers too (the vpid, the supervisor's pid, digit runs of the hex
/// launch id), and one of them can be the tid of a thread of the program.
fn list_rows(out: &str) -> Vec<(i32, &str)> {
    let mut lines = out.lines();
    let Some(col) = lines
        .next()
        .and_then(|h| h.split_whitespace().position(|w| w == "HOST_PID"))
    else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let pid = w.get(col)?.parse::<i32>().ok().filter(|&n| n > 1)?;
            Some((pid, w.get(col + 1).copied().unwrap_or("")))
        })
        .collect()
}

/// The non-zero host pids `dmtcp-command -l` lists, whatever the program.
fn all_list_pids(out: &str) -> Vec<i32> {
    list_rows(out).into_iter().map(|(p, _)| p).collect()
}

/// The host pids `dmtcp-command -l` lists for program `prog`.
pub fn parse_list_pids(out: &str, prog: &str) -> Vec<i32> {
    list_rows(out)
        .into_iter()
        .filter(|&(_, name)| name == prog)
        .map(|(p, _)| p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_list_pids;

    #[test]
    fn list_parsing_is_defensive() {
        let out = "VPID  HOST_PID  PROGRAM  HOST\n1  4242  counter  box\n2 4343 other box\n";
        assert_eq!(parse_list_pids(out, "counter"), vec![4242]);
        assert!(parse_list_pids(out, "heap256").is_empty());
        // The launch id's digits and the supervisor's pid are not pids of
        // the program; a restart not finished yet lists host pid 0.
        let out = "  VPID  HOST_PID  PROGRAM  LAUNCH  SUPERVISOR  HOST\n     2       0  idle512  c512b4b2  32764  vm\n     3    4444  idle512  8a311dd0  32764  vm\n";
        assert_eq!(parse_list_pids(out, "idle512"), vec![4444]);
    }
}
