//! Computations that span hosts (issue 16): test hosts made by
//! `tests/hosts/mkhosts.sh` (network namespaces with their own address,
//! hostname and sshd; one shared file system). Every test skips with a
//! message when hosts cannot be made (not root, no sshd).
//!
//! uid 65534 runs too: the test hosts' sshd sees a copy of /etc/passwd in
//! which uid 65534 has a shell, so it can log in with the test's key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dmtcp_tests::env::read_lossy;
use dmtcp_tests::hosts::TestHosts;
use dmtcp_tests::{e2e_tests, setup, Output, Proc, TestEnv};

e2e_tests! {
    ssh_contagion => ssh_contagion;
    ssh_remote_command_quoting_and_missing_tool => ssh_remote_command_quoting_and_missing_tool;
    restart_script_across_hosts => restart_script_across_hosts;
    tcp_between_hosts_checkpoint => tcp_between_hosts_checkpoint;
    tcp_between_hosts_restart => tcp_between_hosts_restart;
    mpi_two_hosts_checkpoint => mpi_two_hosts_checkpoint;
    mpi_two_hosts_restart => mpi_two_hosts_restart;
    ssh_relay_restart => ssh_relay_restart;
    ssh_relay_checkpoint_during_setup => ssh_relay_checkpoint_during_setup;
    pubsub_pair_across_hosts => pubsub_pair_across_hosts;
}

/// A computation launched on host `h` with its own coordinator listening
/// on that host's address.
struct Comp {
    launcher: Proc,
    co: Coord,
}

/// Where its coordinator listens.
#[derive(Clone)]
struct Coord {
    addr: String,
    port: u16,
}

/// `dmtcp-run --coord-host ADDR --coord-port 0 -- /bin/sh -c SCRIPT` on
/// host `h` (extra dmtcp-run options in `opts`); waits for the port file.
fn launch_on(env: &TestEnv, hosts: &TestHosts, h: usize, opts: &[&str], script: &str) -> Comp {
    let addr = hosts.hosts[h].addr.clone();
    let port_file = env.work.join(format!("port-{}", hosts.hosts[h].name));
    let mut cmd = env.command("dmtcp-run");
    cmd.args(["--coord-host", &addr, "--coord-port", "0", "--port-file"])
        .arg(&port_file)
        .arg("--ckpt-dir")
        .arg(&env.ckpt)
        .args(opts)
        .args(["--", "/bin/sh", "-c", script]);
    let launcher = env.spawn(hosts.on(h, &cmd), &format!("run-{}", hosts.hosts[h].name));
    let mut port = 0;
    env.wait_for(
        "the coordinator's port file",
        Duration::from_secs(30),
        || {
            port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            port != 0
        },
    );
    Comp {
        launcher,
        co: Coord { addr, port },
    }
}

/// `dmtcp-command -h ADDR -p PORT ARGS` run on host `h`.
fn command_on(env: &TestEnv, hosts: &TestHosts, h: usize, c: &Coord, args: &[&str]) -> Output {
    let mut cmd = env.command("dmtcp-command");
    cmd.args(["-h", &c.addr, "-p", &c.port.to_string()])
        .args(args);
    let label = format!("command{}", args.join("").replace('-', "_"));
    env.run(hosts.on(h, &cmd), &label, Duration::from_secs(120))
}

/// Lines of `--list` naming `prog`, as (program, host) pairs.
fn listed(env: &TestEnv, hosts: &TestHosts, c: &Coord, prog: &str) -> Vec<(String, String)> {
    // Polled: not more than a few times a second.
    std::thread::sleep(Duration::from_millis(250));
    let out = command_on(env, hosts, 0, c, &["-l"]);
    out.stdout
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == prog))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (prog.to_string(), w.last().unwrap_or(&"").to_string())
        })
        .collect()
}

/// The coordinator's secret, from its secret file in the test's runtime
/// directory.
fn secret(env: &TestEnv, port: u16) -> String {
    let mut found = None;
    visit(&env.tmp, &mut |p| {
        let n = setup::file_name(p);
        if n.ends_with(&format!("-{port}.secret")) {
            found = std::fs::read_to_string(p).ok();
        }
    });
    found
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| env.fail("no secret file for the coordinator"))
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            visit(&p, f);
        } else {
            f(&p);
        }
    }
}

fn images(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = setup::file_name(p);
            n.starts_with(prefix) && n.ends_with(".dmtcp")
        })
        .collect();
    v.sort();
    v
}

/// Processes left in the hosts other than sshd's.
fn left_in_hosts(hosts: &TestHosts) -> Vec<(i32, String)> {
    hosts
        .pids()
        .into_iter()
        .filter_map(|p| Some((p, dmtcp_tests::procs::stat(p)?.comm)))
        .filter(|(_, c)| c != "sshd")
        .collect()
}

/// A process of the computation on h0 runs `ssh -n h1 CMD`: CMD runs on h1
/// under dmtcp-run joined to the same coordinator. `--list` shows the
/// sleepers on h0 and h1, a checkpoint writes an image of each, the secret
/// is in no argv or environment on either host, and `--kill` ends every
/// process on both hosts. The computation's plugin is loaded on h1 too.
fn ssh_contagion(env: &mut TestEnv) {
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let sleeper = env.prog("sleeper");
    let stop = env.stop_file();
    let script = format!(
        "ssh -n h1 ZDTM_STOP={stop} exec {sleeper} & exec {sleeper}",
        stop = stop.display(),
        sleeper = sleeper.display()
    );
    // A plugin of the computation is loaded on the other host too.
    let plugin = env.work.join("event_logger.so");
    let built = dmtcp_tests::setup::output_tracked(
        std::process::Command::new("gcc")
            .args(["-shared", "-fPIC", "-I"])
            .arg(setup::workspace_dir().join("inject/include"))
            .arg("-o")
            .arg(&plugin)
            .arg(setup::workspace_dir().join("examples/plugins/event_logger.c")),
    );
    if !built.as_ref().is_ok_and(|o| o.status.success()) {
        env.fail(&format!("building event_logger.so: {built:?}"));
    }
    let plugin_arg = plugin.display().to_string();
    let mut c = launch_on(env, &hosts, 0, &["--with-plugin", &plugin_arg], &script);
    env.wait_for("both sleepers READY", Duration::from_secs(60), || {
        read_lossy(&c.launcher.stdout)
            .lines()
            .filter(|l| l.trim() == "READY")
            .count()
            == 2
    });
    env.wait_for(
        "sleepers listed on h0 and h1",
        Duration::from_secs(30),
        || {
            let l = listed(env, &hosts, &c.co, "sleeper");
            l.iter().any(|(_, h)| h == "h0") && l.iter().any(|(_, h)| h == "h1")
        },
    );
    // The remote sleeper really runs on h1, under a dmtcp-run there.
    let on_h1: Vec<String> = hosts
        .pids()
        .into_iter()
        .filter(|&p| hosts.host_of(p) == Some(1))
        .filter_map(|p| dmtcp_tests::procs::stat(p).map(|s| s.comm))
        .collect();
    if !on_h1.iter().any(|c| c == "sleeper") || !on_h1.iter().any(|c| c == "dmtcp-run") {
        env.fail(&format!(
            "h1 runs {on_h1:?}: expected dmtcp-run and sleeper"
        ));
    }
    let remote_sleepers: Vec<i32> = hosts
        .pids()
        .into_iter()
        .filter(|&p| hosts.host_of(p) == Some(1))
        .filter(|&p| dmtcp_tests::procs::stat(p).is_some_and(|s| s.comm == "sleeper"))
        .collect();
    for p in &remote_sleepers {
        let maps = std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap_or_default();
        if !maps.contains("event_logger.so") {
            env.fail(&format!(
                "the sleeper on h1 (pid {p}) does not have the computation's plugin loaded"
            ));
        }
    }
    let secret = secret(env, c.co.port);
    let mut pids = hosts.pids();
    pids.extend(dmtcp_tests::procs::tagged(&env.tag));
    for p in pids {
        for what in ["cmdline", "environ"] {
            let b = std::fs::read(format!("/proc/{p}/{what}")).unwrap_or_default();
            if String::from_utf8_lossy(&b).contains(&secret) {
                env.fail(&format!(
                    "the secret appears in /proc/{p}/{what} ({:?})",
                    dmtcp_tests::procs::stat(p).map(|s| s.comm)
                ));
            }
        }
    }
    let out = command_on(env, &hosts, 0, &c.co, &["-bc"]);
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -bc: {}", out.describe()));
    }
    let imgs = images(&env.ckpt, "ckpt_sleeper_");
    if imgs.len() != 2 {
        env.fail(&format!(
            "a checkpoint of sleepers on two hosts wrote {imgs:?} ({})",
            out.stdout
        ));
    }
    let out = command_on(env, &hosts, 0, &c.co, &["-k"]);
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -k: {}", out.describe()));
    }
    env.wait(&mut c.launcher, Duration::from_secs(30));
    env.wait_for(
        "every process on both hosts gone after --kill",
        Duration::from_secs(30),
        || left_in_hosts(&hosts).is_empty(),
    );
}

/// The remote command keeps its quoting (ssh joins the words, the remote
/// shell parses them) and runs under checkpoint control, through the relay
/// and without it (`DMTCP_SSH_RELAY=0`, `ssh -t`); with `--prefix`
/// naming a directory without dmtcp-run, ssh fails with one line naming
/// the host.
fn ssh_remote_command_quoting_and_missing_tool(env: &mut TestEnv) {
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    // The same without the relay: DMTCP_SSH_RELAY=0, and -t (a terminal
    // is not relayed; ssh warns that stdin is no terminal and goes on).
    // The parent of the remote shell tells which way it ran.
    let script = r#"ssh -o ConnectTimeout=20 -p 22 h1 'printf "<%s>" "a  b" "$(hostname)"' "'c  d'"; echo; ssh h1 'test -n "$LD_PRELOAD" && echo "CONTROLLED under $(cat /proc/$PPID/comm)"'; DMTCP_SSH_RELAY=0 ssh h1 'test -n "$LD_PRELOAD" && echo "plain on $(hostname) under $(cat /proc/$PPID/comm)"'; export DMTCP_SSH_RELAY=1; ssh -t h1 'test -n "$LD_PRELOAD" && echo "tty on $(hostname) under $(cat /proc/$PPID/comm)"'"#;
    let mut c = launch_on(env, &hosts, 0, &[], script);
    let st = env.wait(&mut c.launcher, Duration::from_secs(60));
    let out = read_lossy(&c.launcher.stdout);
    let line = |start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_default()
    };
    if !st.success()
        || !out.contains("<a  b><h1><c  d>")
        || line("CONTROLLED") != "CONTROLLED under dmtcp_sshd"
        || !line("plain on h1 under ").contains("nsinit")
        || !line("tty on h1 under ").contains("nsinit")
    {
        env.fail(&format!(
            "remote commands with quotes: exit {st}, stdout {out:?}, stderr {:?}",
            read_lossy(&c.launcher.stderr)
        ));
    }
    let mut c = launch_on(
        env,
        &hosts,
        0,
        &["--prefix", "/nonexistent-dmtcp"],
        "ssh h1 echo hi; echo \"ssh exit $?\"",
    );
    env.wait(&mut c.launcher, Duration::from_secs(60));
    let out = read_lossy(&c.launcher.stdout);
    let err = read_lossy(&c.launcher.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("not found")).collect();
    if !out.contains("ssh exit 127")
        || lines.len() != 1
        || !lines[0].contains("h1")
        || !lines[0].contains("/nonexistent-dmtcp/bin/dmtcp-run not found")
    {
        env.fail(&format!(
            "missing dmtcp-run on h1: stdout {out:?}, stderr {err:?}"
        ));
    }
}

/// The hosts of the sleepers `--list` shows, sorted.
fn sleeper_hosts(env: &TestEnv, hosts: &TestHosts, c: &Coord) -> Vec<String> {
    let mut v: Vec<String> = listed(env, hosts, c, "sleeper")
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    v.sort();
    v
}

/// `dmtcp_restart_script.sh ARGS` run on h0 in the background.
fn run_script(env: &TestEnv, hosts: &TestHosts, args: &[&str], label: &str) -> Proc {
    let script = env.ckpt.join("dmtcp_restart_script.sh");
    let mut cmd = env.command_path(Path::new("/bin/bash"));
    cmd.arg(&script).args(args);
    env.spawn(hosts.on(0, &cmd), label)
}

fn checkpoint_and_kill(env: &TestEnv, hosts: &TestHosts, c: &Coord, running: Option<&mut Proc>) {
    let out = command_on(env, hosts, 0, c, &["-bc"]);
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -bc: {}", out.describe()));
    }
    let out = command_on(env, hosts, 0, c, &["-k"]);
    if !out.status.success() {
        env.fail(&format!("dmtcp-command -k: {}", out.describe()));
    }
    if let Some(p) = running {
        env.wait(p, Duration::from_secs(60));
    }
    env.wait_for(
        "every process on both hosts gone after --kill",
        Duration::from_secs(30),
        || left_in_hosts(hosts).is_empty(),
    );
}

/// A computation on h0 and h1 (a sleeper on each, the second started with
/// ssh) is checkpointed, killed and restarted with the restart script,
/// which brings each image back on its host (h1's over ssh, joined to the
/// coordinator the local restart started); twice; then a host file
/// mapping h1 to h0 migrates h1's images to h0; then the sleepers end and both print PASS (no EINTR,
/// no short sleep across any of it).
fn restart_script_across_hosts(env: &mut TestEnv) {
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let sleeper = env.prog("sleeper");
    let script = format!(
        "ssh -n h1 ZDTM_STOP={stop} exec {sleeper} & exec {sleeper}",
        stop = env.stop_file().display(),
        sleeper = sleeper.display()
    );
    let mut c = launch_on(env, &hosts, 0, &[], &script);
    env.wait_for("both sleepers READY", Duration::from_secs(60), || {
        read_lossy(&c.launcher.stdout)
            .lines()
            .filter(|l| l.trim() == "READY")
            .count()
            == 2
    });
    env.wait_for("sleepers on h0 and h1", Duration::from_secs(30), || {
        sleeper_hosts(env, &hosts, &c.co) == ["h0", "h1"]
    });
    checkpoint_and_kill(env, &hosts, &c.co, Some(&mut c.launcher));
    let mut running: Option<Proc> = None;
    for round in 1..=2 {
        if let Some(p) = running.as_mut() {
            checkpoint_and_kill(env, &hosts, &c.co, Some(p));
        }
        running = Some(run_script(env, &hosts, &[], &format!("restart-{round}")));
        env.wait_for(
            &format!("round {round}: sleepers back on h0 and h1"),
            Duration::from_secs(60),
            || sleeper_hosts(env, &hosts, &c.co) == ["h0", "h1"],
        );
        let on_h1 = hosts
            .pids()
            .into_iter()
            .filter(|&p| hosts.host_of(p) == Some(1))
            .filter_map(|p| dmtcp_tests::procs::stat(p).map(|s| s.comm))
            .any(|c| c == "sleeper");
        if !on_h1 {
            env.fail(&format!("round {round}: no sleeper process runs on h1"));
        }
    }
    // Migration: h1's images restart on h0.
    let mut last = running.unwrap_or_else(|| env.fail("no restart ran"));
    checkpoint_and_kill(env, &hosts, &c.co, Some(&mut last));
    // A host file (with a comment) moves h1's images; an OLD=NEW argument
    // (h0 to itself) is taken too.
    let hostfile = env.work.join("hostfile");
    std::fs::write(&hostfile, "# old new\nh1 h0\n").expect("write the host file");
    env.give_to_user(&hostfile);
    let hf = hostfile.display().to_string();
    let mut running = run_script(
        env,
        &hosts,
        &["--hostfile", &hf, "h0=h0"],
        "restart-migrate",
    );
    env.wait_for(
        "both sleepers restarted on h0",
        Duration::from_secs(60),
        || sleeper_hosts(env, &hosts, &c.co) == ["h0", "h0"],
    );
    let out = command_on(env, &hosts, 0, &c.co, &["-bc"]);
    if !out.status.success() {
        env.fail(&format!("-bc after the migration: {}", out.describe()));
    }
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let st = env.wait(&mut running, Duration::from_secs(60));
    let passes = env
        .all_stdout()
        .lines()
        .filter(|l| l.trim() == "PASS")
        .count();
    if !st.success() || passes != 2 {
        env.fail(&format!(
            "after the migration: restart exited {st}, {passes} PASS line(s), expected 2"
        ));
    }
}

/// A TCP connection between a client on h0 and a server on h1 (started
/// with ssh), both of the computation, with numbers in flight both ways:
/// two checkpoints leave it working (both ends check the sequence and their
/// addresses and print PASS). Restarts: `tcp_between_hosts_restart`.
fn tcp_between_hosts_checkpoint(env: &mut TestEnv) {
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let prog = env.prog("tcp_hosts");
    let port_file = env.work.join("tcp-port");
    let script = format!(
        "ssh -n h1 ZDTM_STOP={stop} exec {prog} server {pf} & exec {prog} client {addr} {pf}",
        stop = env.stop_file().display(),
        prog = prog.display(),
        pf = port_file.display(),
        addr = hosts.hosts[1].addr,
    );
    let mut c = launch_on(env, &hosts, 0, &[], &script);
    env.wait_for("client and server READY", Duration::from_secs(60), || {
        read_lossy(&c.launcher.stdout)
            .lines()
            .filter(|l| l.trim() == "READY")
            .count()
            == 2
    });
    env.wait_for("both ends listed", Duration::from_secs(30), || {
        listed(env, &hosts, &c.co, "tcp_hosts").len() == 2
    });
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        let out = command_on(env, &hosts, 0, &c.co, &["-bc"]);
        if !out.status.success() {
            env.fail(&format!("dmtcp-command -bc: {}", out.describe()));
        }
        if images(&env.ckpt, "ckpt_tcp_hosts_").len() != 2 {
            env.fail(&format!("expected images of both ends: {}", out.stdout));
        }
    }
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let st = env.wait(&mut c.launcher, Duration::from_secs(60));
    let out = read_lossy(&c.launcher.stdout);
    let passes = out.lines().filter(|l| l.trim() == "PASS").count();
    if !st.success() || passes != 2 {
        env.fail(&format!(
            "TCP between hosts after two checkpoints: exit {st}, stdout {out:?}"
        ));
    }
}

/// One Open MPI job over test hosts at a time in this test binary. Run at
/// once, the jobs of these tests are alike in every name Open MPI derives
/// from host name and pid (each `mpirun` is pid 2 on a host called `h0`,
/// so both get jobid 3192061952): in one CI run the two uid 65534 jobs
/// started together and neither ring got past its start (not understood
/// further; each passes alone and with the root ones).
fn one_mpi_job() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// `mpirun --host h0,h1` under dmtcp-run on h0, Open MPI's ssh launcher
/// pointed at the test's ssh (`plm_rsh_agent`): the orted it starts on h1
/// joins the computation; `--list` shows mpirun and a rank on h0, orted and
/// a rank on h1; two checkpoints write images of all of them while the ring
/// runs on, and the ring ends with correct sums. (Restarting it needs TCP
/// between hosts, not built yet.)
fn mpi_two_hosts_checkpoint(env: &mut TestEnv) {
    let _one = one_mpi_job();
    let ring = match setup::mpi_ring() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("[{}] skipped: {why}", env.name);
            return;
        }
    };
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let root = dmtcp_tests::procs::is_root() && env.user == dmtcp_tests::User::Current;
    // Open MPI's session directories go under the test's own directory:
    // in /tmp they are named by host name, user and pid only
    // (`ompi.h0.65534/pid.2`), the same for a test of another run on test
    // hosts, which removes them when its job ends.
    let script = format!(
        "mkdir -p {tmp} && exec mpirun {allow} -np 2 --host h0,h1 --mca plm_rsh_agent {ssh} --mca btl self,tcp \
         --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 --mca orte_tmpdir_base {tmp} {ring} {stop}",
        allow = if root { "--allow-run-as-root" } else { "" },
        ssh = hosts.ssh_dir().join("ssh").display(),
        ring = ring.display(),
        stop = env.stop_file().display(),
        tmp = env.work.join("ompi-tmp").display(),
    );
    let mut c = launch_on(env, &hosts, 0, &[], &script);
    env.wait_for("the ring READY", Duration::from_secs(60), || {
        read_lossy(&c.launcher.stdout)
            .lines()
            .any(|l| l.trim() == "READY")
    });
    env.wait_for(
        "mpirun, orted and 2 ranks listed",
        Duration::from_secs(30),
        || {
            let mut l: Vec<(String, String)> = ["mpirun", "orted", "mpi_ring"]
                .iter()
                .flat_map(|p| listed(env, &hosts, &c.co, p))
                .collect();
            l.sort();
            l == [
                ("mpi_ring".to_string(), "h0".to_string()),
                ("mpi_ring".to_string(), "h1".to_string()),
                ("mpirun".to_string(), "h0".to_string()),
                ("orted".to_string(), "h1".to_string()),
            ]
        },
    );
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        let out = command_on(env, &hosts, 0, &c.co, &["-bc"]);
        if !out.status.success() {
            env.fail(&format!("dmtcp-command -bc: {}", out.describe()));
        }
        for prog in ["mpirun", "orted"] {
            if images(&env.ckpt, &format!("ckpt_{prog}_")).is_empty() {
                env.fail(&format!("no image of {prog}: {}", out.stdout));
            }
        }
        if images(&env.ckpt, "ckpt_mpi_ring_").len() != 2 {
            env.fail(&format!("expected 2 rank images: {}", out.stdout));
        }
    }
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let st = env.wait(&mut c.launcher, Duration::from_secs(60));
    let out = read_lossy(&c.launcher.stdout);
    let ranks = out.lines().filter(|l| l.contains(": PASS after")).count();
    if !st.success() || ranks != 2 {
        env.fail(&format!("mpirun over two hosts: exit {st}, stdout {out:?}"));
    }
    env.wait_for(
        "every process on both hosts gone",
        Duration::from_secs(30),
        || left_in_hosts(&hosts).is_empty(),
    );
}

/// The TCP connection of `tcp_between_hosts_checkpoint` (client on h0,
/// server on h1 started with ssh, numbers in flight both ways) through
/// restarts: twice checkpoint, kill and restart in place by the restart
/// script (the ends meet again through the coordinator; addresses
/// unchanged, which both ends check), then a migration of h1's image to h0
/// (the server's end connects from h0's address: the ends no longer check
/// their addresses), a checkpoint after it, and both end with PASS.
fn tcp_between_hosts_restart(env: &mut TestEnv) {
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let prog = env.prog("tcp_hosts");
    let port_file = env.work.join("tcp-port");
    let script = format!(
        "ssh -n h1 ZDTM_STOP={stop} exec {prog} server {pf} & exec {prog} client {addr} {pf}",
        stop = env.stop_file().display(),
        prog = prog.display(),
        pf = port_file.display(),
        addr = hosts.hosts[1].addr,
    );
    let mut c = launch_on(env, &hosts, 0, &[], &script);
    env.wait_for("client and server READY", Duration::from_secs(60), || {
        read_lossy(&c.launcher.stdout)
            .lines()
            .filter(|l| l.trim() == "READY")
            .count()
            == 2
    });
    let ends_on = |env: &TestEnv, want: [&str; 2]| {
        let mut v: Vec<String> = listed(env, &hosts, &c.co, "tcp_hosts")
            .into_iter()
            .map(|(_, h)| h)
            .collect();
        v.sort();
        v == want
    };
    env.wait_for("both ends listed", Duration::from_secs(30), || {
        ends_on(env, ["h0", "h1"])
    });
    let mut running: Option<Proc> = None;
    for round in 1..=2 {
        std::thread::sleep(Duration::from_millis(300));
        match running.as_mut() {
            Some(p) => checkpoint_and_kill(env, &hosts, &c.co, Some(p)),
            None => checkpoint_and_kill(env, &hosts, &c.co, Some(&mut c.launcher)),
        }
        running = Some(run_script(env, &hosts, &[], &format!("restart-{round}")));
        env.wait_for(
            &format!("round {round}: ends back on h0 and h1"),
            Duration::from_secs(90),
            || ends_on(env, ["h0", "h1"]),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let moved = env.work.join("tcp-port.moved");
    std::fs::write(&moved, "").expect("write the moved flag");
    env.give_to_user(&moved);
    let mut last = running.unwrap_or_else(|| env.fail("no restart ran"));
    checkpoint_and_kill(env, &hosts, &c.co, Some(&mut last));
    let mut running = run_script(env, &hosts, &["h1=h0"], "restart-migrate");
    env.wait_for("both ends restarted on h0", Duration::from_secs(90), || {
        ends_on(env, ["h0", "h0"])
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = command_on(env, &hosts, 0, &c.co, &["-bc"]);
    if !out.status.success() {
        env.fail(&format!("-bc after the migration: {}", out.describe()));
    }
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let st = env.wait(&mut running, Duration::from_secs(60));
    let all = env.all_stdout();
    let passes = all.lines().filter(|l| l.trim() == "PASS").count();
    if !st.success() || passes != 2 {
        env.fail(&format!(
            "TCP between hosts after restarts and a migration: restart exited {st}, {passes} PASS line(s), expected 2; stdout {all:?}"
        ));
    }
}

/// mpirun over two hosts (as `mpi_two_hosts_checkpoint`), checkpointed,
/// killed and restarted by the script; the ring then ends with correct
/// sums. mpirun reaches orted through an ssh of the computation: the relay
/// (`dmtcp_ssh` in place of the ssh client, `dmtcp_sshd` on h1) carries
/// that session over a TCP connection between the launches, which the
/// restart rebuilds; the real ssh client and its connection to sshd ended
/// once the relays were connected, so nothing of them is checkpointed.
fn mpi_two_hosts_restart(env: &mut TestEnv) {
    let _one = one_mpi_job();
    let ring = match setup::mpi_ring() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("[{}] skipped: {why}", env.name);
            return;
        }
    };
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let root = dmtcp_tests::procs::is_root() && env.user == dmtcp_tests::User::Current;
    // Open MPI's session directories go under the test's own directory:
    // in /tmp they are named by host name, user and pid only
    // (`ompi.h0.65534/pid.2`), the same for a test of another run on test
    // hosts, which removes them when its job ends.
    let script = format!(
        "mkdir -p {tmp} && exec mpirun {allow} -np 2 --host h0,h1 --mca plm_rsh_agent {ssh} --mca btl self,tcp \
         --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 --mca orte_tmpdir_base {tmp} {ring} {stop}",
        allow = if root { "--allow-run-as-root" } else { "" },
        ssh = hosts.ssh_dir().join("ssh").display(),
        ring = ring.display(),
        stop = env.stop_file().display(),
        tmp = env.work.join("ompi-tmp").display(),
    );
    let mut c = launch_on(env, &hosts, 0, &[], &script);
    env.wait_for("the ring READY", Duration::from_secs(60), || {
        read_lossy(&c.launcher.stdout)
            .lines()
            .any(|l| l.trim() == "READY")
    });
    let ranks = |env: &TestEnv| listed(env, &hosts, &c.co, "mpi_ring").len();
    env.wait_for("2 ranks listed", Duration::from_secs(30), || {
        ranks(env) == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    checkpoint_and_kill(env, &hosts, &c.co, Some(&mut c.launcher));
    let mut running = run_script(env, &hosts, &[], "restart-1");
    env.wait_for("ranks back", Duration::from_secs(90), || ranks(env) == 2);
    // mpirun's ssh is the local relay on h0, orted's parent the remote
    // relay on h1; no ssh client was checkpointed, none runs.
    let relays: Vec<(String, String)> = ["dmtcp_ssh", "dmtcp_sshd", "ssh"]
        .iter()
        .flat_map(|p| listed(env, &hosts, &c.co, p))
        .collect();
    if relays
        != [
            ("dmtcp_ssh".to_string(), "h0".to_string()),
            ("dmtcp_sshd".to_string(), "h1".to_string()),
        ]
    {
        env.fail(&format!(
            "after the restart, ssh processes listed: {relays:?}"
        ));
    }
    std::thread::sleep(Duration::from_secs(2));
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let st = env.wait(&mut running, Duration::from_secs(60));
    let all = env.all_stdout();
    let passed = all.lines().filter(|l| l.contains(": PASS after")).count();
    if !st.success() || passed != 2 {
        env.fail(&format!(
            "mpirun over two hosts after a restart: exit {st}, stdout {all:?}"
        ));
    }
}

/// Numbers of the `count N` lines of `text`.
fn counts(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("count "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// Whether `v` counts up by one.
fn consecutive(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[1] == w[0] + 1)
}

/// Plain `ssh h1 CMD` under dmtcp-run on h0, CMD a shell loop on h1 that
/// prints `count N` every 0.2 s: its output reaches the launcher's stdout
/// (a file) through the ssh relay (`dmtcp_ssh`/`dmtcp_sshd`), and the line
/// piped into ssh reaches CMD's stdin. The computation is checkpointed,
/// killed and restarted by the restart script, twice: the file is cut back
/// to its checkpoint-time size and the count goes on in it past what was
/// printed before the kill, with no number missing or repeated; then CMD
/// ends, and its `DONE` and exit status 3 come through the relay. Once the
/// relays are connected no ssh client runs on h0 (the real ssh ended).
fn ssh_relay_restart(env: &mut TestEnv) {
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let stop = env.stop_file();
    let script = format!(
        "printf 'from-h0\\n' | ssh h1 'read x; echo \"got $x\"; i=0; \
         while test ! -e {stop}; do i=$((i+1)); echo \"count $i\"; sleep 0.2; done; echo DONE; exit 3'; \
         echo \"ssh exit $?\"",
        stop = stop.display()
    );
    let mut c = launch_on(env, &hosts, 0, &[], &script);
    let out_file = c.launcher.stdout.clone();
    let mut seen = String::new();
    env.wait_for("count 5 from h1", Duration::from_secs(60), || {
        seen = read_lossy(&out_file);
        counts(&seen).contains(&5)
    });
    if !seen.starts_with("got from-h0\n") {
        env.fail(&format!("stdin did not reach h1: {seen:?}"));
    }
    // Once connected, the real ssh is gone: nothing outside the computation
    // is held by it.
    let ssh_on_h0 = hosts
        .pids()
        .into_iter()
        .filter(|&p| hosts.host_of(p) == Some(0))
        .filter_map(|p| dmtcp_tests::procs::stat(p).map(|s| s.comm))
        .any(|c| c == "ssh");
    if ssh_on_h0 {
        env.fail("an ssh client still runs on h0 after the relays connected");
    }
    checkpoint_and_kill(env, &hosts, &c.co, Some(&mut c.launcher));
    let mut running: Option<Proc> = None;
    for round in 1..=2 {
        if let Some(p) = running.as_mut() {
            std::thread::sleep(Duration::from_millis(300));
            checkpoint_and_kill(env, &hosts, &c.co, Some(p));
        }
        let last = counts(&read_lossy(&out_file))
            .into_iter()
            .max()
            .unwrap_or(0);
        running = Some(run_script(env, &hosts, &[], &format!("restart-{round}")));
        let mut now = Vec::new();
        env.wait_for(
            &format!("round {round}: the count going on past {last}"),
            Duration::from_secs(90),
            || {
                now = counts(&read_lossy(&out_file));
                now.last().is_some_and(|&n| n > last + 3)
            },
        );
        if now.first() != Some(&1) || !consecutive(&now) {
            env.fail(&format!(
                "round {round}: the count in the launcher's stdout is {now:?} (printed before the kill: up to {last})"
            ));
        }
    }
    dmtcp_tests::scenario::create_stop_file(&stop);
    let mut last = running.unwrap_or_else(|| env.fail("no restart ran"));
    let st = env.wait(&mut last, Duration::from_secs(60));
    let out = read_lossy(&out_file);
    if !st.success() || !out.contains("\nDONE\n") || !out.ends_with("ssh exit 3\n") {
        env.fail(&format!(
            "after two restarts: restart exited {st}, stdout {out:?}, restart's stderr {:?}",
            read_lossy(&last.stderr)
        ));
    }
    env.wait_for(
        "every process on both hosts gone",
        Duration::from_secs(30),
        || left_in_hosts(&hosts).is_empty(),
    );
}

/// A checkpoint requested while the relay sets up (the program's `ssh` is
/// a wrapper that sleeps 2 s before it execs the test's ssh) waits for the
/// relays to be connected and writes no image of an ssh client (the real
/// ssh was killed before the checkpoint went on); the relayed output goes
/// on. A later checkpoint, kill and restart by the script keeps it going
/// (that first checkpoint does not hold the other host's launch, which
/// joined during it: see the user guide).
fn ssh_relay_checkpoint_during_setup(env: &mut TestEnv) {
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let slow = env.work.join("slow-ssh");
    let marker = env.work.join("ssh-started");
    std::fs::create_dir_all(&slow).expect("mkdir slow-ssh");
    std::fs::write(
        slow.join("ssh"),
        format!(
            "#!/bin/sh\ntouch {marker}\nsleep 2\nexec {real} \"$@\"\n",
            marker = marker.display(),
            real = hosts.ssh_dir().join("ssh").display()
        ),
    )
    .expect("write the slow ssh");
    std::fs::set_permissions(
        slow.join("ssh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the slow ssh");
    env.give_to_user(&env.work.join("slow-ssh"));
    let stop = env.stop_file();
    let script = format!(
        "exec {slow}/ssh -n h1 'i=0; while test ! -e {stop}; do i=$((i+1)); echo \"count $i\"; sleep 0.2; done; echo DONE'",
        slow = slow.display(),
        stop = stop.display()
    );
    let mut c = launch_on(env, &hosts, 0, &[], &script);
    let out_file = c.launcher.stdout.clone();
    env.wait_for("the slow ssh started", Duration::from_secs(60), || {
        marker.exists()
    });
    let out = command_on(env, &hosts, 0, &c.co, &["-bc"]);
    if !out.status.success() {
        env.fail(&format!("-bc during the relay's setup: {}", out.describe()));
    }
    let ssh_images: Vec<PathBuf> = images(&env.ckpt, "ckpt_ssh_");
    if !ssh_images.is_empty() || images(&env.ckpt, "ckpt_dmtcp_ssh_").len() != 1 {
        env.fail(&format!(
            "a checkpoint during the relay's setup wrote {:?}",
            images(&env.ckpt, "ckpt_")
        ));
    }
    env.wait_for("count 5 from h1", Duration::from_secs(60), || {
        counts(&read_lossy(&out_file)).contains(&5)
    });
    std::thread::sleep(Duration::from_millis(300));
    checkpoint_and_kill(env, &hosts, &c.co, Some(&mut c.launcher));
    let last = counts(&read_lossy(&out_file))
        .into_iter()
        .max()
        .unwrap_or(0);
    let mut running = run_script(env, &hosts, &[], "restart");
    let mut now = Vec::new();
    env.wait_for(
        &format!("the count going on past {last}"),
        Duration::from_secs(90),
        || {
            now = counts(&read_lossy(&out_file));
            now.last().is_some_and(|&n| n > last + 3)
        },
    );
    if now.first() != Some(&1) || !consecutive(&now) {
        env.fail(&format!("the count after the restart: {now:?}"));
    }
    dmtcp_tests::scenario::create_stop_file(&stop);
    let st = env.wait(&mut running, Duration::from_secs(60));
    if !st.success() || !read_lossy(&out_file).ends_with("DONE\n") {
        env.fail(&format!(
            "the relayed command did not end: restart exited {st}, stdout {:?}",
            read_lossy(&out_file)
        ));
    }
}

/// `gcc [-shared -fPIC] -I inject/include -o OUT SRC` (SRC relative to the
/// workspace), into the test's work directory.
fn gcc(env: &TestEnv, src: &str, out: &str, shared: bool) -> PathBuf {
    let dst = env.work.join(out);
    let mut cmd = std::process::Command::new("gcc");
    if shared {
        cmd.args(["-shared", "-fPIC"]);
    }
    cmd.args(["-O1", "-Wall", "-Werror", "-I"])
        .arg(setup::workspace_dir().join("inject/include"))
        .arg("-o")
        .arg(&dst)
        .arg(setup::workspace_dir().join(src));
    let built = dmtcp_tests::setup::output_tracked(&mut cmd);
    if !built.as_ref().is_ok_and(|o| o.status.success()) {
        env.fail(&format!("building {out}: {built:?}"));
    }
    dst
}

/// The `pubsub_pair` lines of `log` (after the pid) as maps.
fn pair_lines(log: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" slot="))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Publish/subscribe across hosts: the `pubsub_pair` plugin in a process
/// on h0 and in its peer started on h1 with ssh, one computation. After a
/// checkpoint, kill and restart by the restart script (one `dmtcp-restart`
/// per host, h1's over ssh), each publishes its new address at RESTART,
/// waits at a global barrier that spans both hosts' restarts, and finds
/// the other's; then, checkpointed and killed again, the script migrates
/// h1's image to h0 (`h1=h0`) and they find each other again (restart 2).
fn pubsub_pair_across_hosts(env: &mut TestEnv) {
    let Some(hosts) = TestHosts::up(env, 2) else {
        return;
    };
    let plugin = gcc(
        env,
        "examples/plugins/pubsub_pair.c",
        "pubsub_pair.so",
        true,
    );
    let prog = gcc(
        env,
        "tests/programs/plugins/plugin_host.c",
        "plugin_host",
        false,
    );
    let log = env.work.join("events.log");
    let script = format!(
        "ssh -n h1 'cd {work} && ZDTM_STOP={stop} EVENT_LOG={log} exec {prog} leaf' & \
         EVENT_LOG={log} exec {prog} leaf",
        work = env.work.display(),
        stop = env.stop_file().display(),
        log = log.display(),
        prog = prog.display(),
    );
    let plugin_arg = plugin.display().to_string();
    let mut c = launch_on(env, &hosts, 0, &["--with-plugin", &plugin_arg], &script);
    let on = |env: &TestEnv, want: [&str; 2]| {
        let mut v: Vec<String> = listed(env, &hosts, &c.co, "plugin_host")
            .into_iter()
            .map(|(_, h)| h)
            .collect();
        v.sort();
        v == want
    };
    env.wait_for("the pair on h0 and h1", Duration::from_secs(60), || {
        on(env, ["h0", "h1"])
    });
    checkpoint_and_kill(env, &hosts, &c.co, Some(&mut c.launcher));
    let check = |env: &TestEnv, round: u32| {
        env.wait_for(
            &format!("restart {round}: both peers' lines"),
            Duration::from_secs(120),
            || pair_lines(&log).len() >= 2,
        );
        let l = pair_lines(&log);
        let found = l.len() == 2
            && l[0].get("me") == l[1].get("peer")
            && l[1].get("me") == l[0].get("peer")
            && l.iter()
                .all(|m| m.get("blob").map(String::as_str) == Some("ok"))
            && l.iter().all(|m| {
                m.get("me")
                    .is_some_and(|v| v.contains(&format!("restart:{round}/")))
            });
        if !found {
            env.fail(&format!(
                "restart {round}: the peers did not find each other's new address:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
    };
    let _ = std::fs::remove_file(&log);
    let mut running = run_script(env, &hosts, &[], "restart-1");
    check(env, 1);
    env.wait_for(
        "the pair back on h0 and h1",
        Duration::from_secs(60),
        || on(env, ["h0", "h1"]),
    );
    let on_h1 = hosts
        .pids()
        .into_iter()
        .filter(|&p| hosts.host_of(p) == Some(1))
        .filter_map(|p| dmtcp_tests::procs::stat(p).map(|s| s.comm))
        .any(|c| c == "plugin_host");
    if !on_h1 {
        env.fail("restart 1: no plugin_host process runs on h1");
    }
    checkpoint_and_kill(env, &hosts, &c.co, Some(&mut running));
    let _ = std::fs::remove_file(&log);
    let mut running = run_script(env, &hosts, &["h1=h0"], "restart-migrate");
    check(env, 2);
    env.wait_for("the pair on h0", Duration::from_secs(60), || {
        on(env, ["h0", "h0"])
    });
    dmtcp_tests::scenario::create_stop_file(&env.stop_file());
    let st = env.wait(&mut running, Duration::from_secs(60));
    if !st.success() {
        env.fail(&format!("after the migration: the restart exited {st}"));
    }
    env.wait_for(
        "every process on both hosts gone",
        Duration::from_secs(30),
        || left_in_hosts(&hosts).is_empty(),
    );
}
