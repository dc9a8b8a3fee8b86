//! Things shared by every test of one test process: the per-process temp base
//! dir, the located (and, for uid 65534, copied) binaries, and the compiled
//! target programs.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The binaries the workspace builds, checked for before any test runs.
pub const REQUIRED_BINS: &[&str] = &[
    "dmtcp-run",
    "dmtcp-command",
    "dmtcp-restart",
    "dmtcp-coordinator",
];

/// The target programs under `tests/programs/` (each `NAME.c` + `zdtm.c`).
pub const PROGRAMS: &[&str] = &[
    "no_userns",
    "thread_storm",
    "raise_sync",
    "sigfd_child",
    "past_eof",
    "timer_thread",
    "noreserve",
    "forkflags",
    "ghost",
    "inotify_watch",
    "fd_refused",
    "tw_server",
    "dropped_unix",
    "peer_server",
    "counter",
    "attach_tree",
    "nondumpable",
    "dropper",
    "ids",
    "heap256",
    "lazy_mem",
    "mprotect_filemap",
    "sleeper",
    "threads",
    "idle512",
    "api",
    "presuspend_kill",
    "kill_in_section",
    "signals",
    "avx512",
    "epoll_pipe",
    "tree",
    "posix_timers",
    "zombie",
    "sockets",
    "shmem",
    "fdkinds",
    "churn",
    "listener",
    "counter_static",
    "incremental",
    "heap_rewrite",
    "popen",
    "tcp_stream",
    "tcp_full",
    "udp",
    "unix_named",
    "pty_pair",
    "sysv_shm",
    "posix_mq",
    "memfd",
    "locks",
    "procself",
    "clocks",
    "transient",
    "gdbstack",
    "tcp_hosts",
    "tcp_ring",
    "seccomp_own",
    "sandboxed",
    "steps",
    "vpids",
    "vpid_spin",
    "spawn_pids",
    "spawn_steady",
    "ucred",
    "rawpid",
    "rawpid_static",
];

/// Target programs that are scripts (copied, not compiled).
pub const SCRIPTS: &[&str] = &[
    "append_log",
    "redis_peer",
    "py_threads",
    "pipeline",
    "exec_ids",
    "py_subprocess",
    "tty_raw",
    "on_pty",
    "bg_shell",
];

/// Source directory of the test crate.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Top of the workspace.
pub fn workspace_dir() -> PathBuf {
    crate_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(crate_dir)
}

/// Mode 0755 directory created fresh.
pub fn mkdir_0755(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", path.display()))
}

/// Per-test-process base dir `$TMPDIR/dmtcp-tests-<pid>` (mode 0755). Stale
/// bases of dead test processes lose their `bin`/`progs` copies; the
/// directories of failed tests are kept for inspection.
pub fn base_dir() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let tmp = std::env::var_os("DMTCP_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        clean_stale_bases(&tmp);
        let base = tmp.join(format!("dmtcp-tests-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        mkdir_0755(&base).expect("create the test base dir");
        base
    })
}

fn clean_stale_bases(tmp: &Path) {
    let Ok(rd) = fs::read_dir(tmp) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("dmtcp-tests-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = fs::remove_dir_all(e.path().join("bin"));
        let _ = fs::remove_dir_all(e.path().join("progs"));
        let _ = fs::remove_dir(e.path()); // only if empty
    }
}

/// Where the built binaries are: `$DMTCP_BIN_DIR`, else the profile dir of the
/// running test executable (`target/<profile>/deps/..`).
pub fn bin_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("DMTCP_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().context("current_exe")?;
            let deps = exe.parent().context("test executable has no parent dir")?;
            deps.parent().unwrap_or(deps).to_path_buf()
        }
    };
    let missing: Vec<&str> = REQUIRED_BINS
        .iter()
        .copied()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "binaries {missing:?} not found in {} (build first: cargo build --release, \
             or point DMTCP_BIN_DIR at the directory holding them)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The binaries for the current user: [`bin_dir`] itself.
pub fn bins_for_current_user() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| bin_dir().unwrap_or_else(|e| panic!("{e:#}")))
}

/// A world-readable copy (mode 0755 dir) of the binaries and the inject
/// library, for runs as uid 65534 (the checkout may not be readable by it).
pub fn bins_world_readable() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = bins_for_current_user();
        let dst = base_dir().join("bin");
        copy_bins(src, &dst).unwrap_or_else(|e| panic!("copy binaries for uid 65534: {e:#}"));
        dst
    })
}

fn copy_bins(src: &Path, dst: &Path) -> Result<()> {
    mkdir_0755(dst)?;
    for e in fs::read_dir(src).with_context(|| format!("read {}", src.display()))? {
        let e = e?;
        let name = e.file_name();
        let n = name.to_string_lossy();
        let wanted = (n.starts_with("dmtcp") || n.starts_with("libdmtcp"))
            && !n.ends_with(".d")
            && !n.ends_with(".rlib");
        if !wanted {
            continue;
        }
        let ft = e.file_type()?;
        let to = dst.join(&name);
        if ft.is_symlink() {
            let target = fs::read_link(e.path())?;
            symlink(&target, &to)?;
        } else if ft.is_file() {
            fs::copy(e.path(), &to)
                .with_context(|| format!("copy {} to {}", e.path().display(), to.display()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// Compiles every target program once per test process with the system C
/// compiler (`gcc -O1 -g`, override with `CC`) into a 0755 dir; returns it.
pub fn programs_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| compile_programs().unwrap_or_else(|e| panic!("{e:#}")))
}

fn compile_programs() -> Result<PathBuf> {
    let src = crate_dir().join("programs");
    let dst = base_dir().join("progs");
    mkdir_0755(&dst)?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    for prog in PROGRAMS {
        let out = dst.join(prog);
        // NAME_static: NAME.c linked statically (no LD_PRELOAD possible).
        let (source, extra): (&str, &[&str]) = match prog.strip_suffix("_static") {
            Some(base) => (base, &["-static"]),
            None => (prog, &[]),
        };
        let mut cmd = Command::new(&cc);
        cmd.args(extra)
            .args(["-O1", "-g", "-Wall", "-Wextra", "-pthread", "-I"])
            .arg(workspace_dir().join("inject/include"))
            .arg("-o")
            .arg(&out)
            .arg(src.join(format!("{source}.c")))
            .arg(src.join("zdtm.c"));
        let result = output_tracked(&mut cmd).with_context(|| format!("run {cc} (install gcc)"))?;
        if !result.status.success() {
            bail!(
                "compiling {prog}.c failed:\n{}",
                String::from_utf8_lossy(&result.stderr)
            );
        }
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755))?;
    }
    for script in SCRIPTS {
        let out = dst.join(script);
        fs::copy(src.join(script), &out).with_context(|| format!("copy {script}"))?;
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755))?;
    }
    Ok(dst)
}

/// `cmd.output()` for a child the harness's reaper leaves alone (an
/// untracked child may be reaped before `output` waits for it: ECHILD).
pub fn output_tracked(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = crate::procs::spawn_tracked(cmd)?;
    let pid = child.id();
    let out = child.wait_with_output();
    crate::procs::untrack(pid);
    out
}

/// Path of a compiled program.
pub fn program(name: &str) -> PathBuf {
    assert!(
        PROGRAMS.contains(&name) || SCRIPTS.contains(&name),
        "unknown program {name}; add it to setup::PROGRAMS"
    );
    programs_dir().join(name)
}

/// File name component as a str (for messages).
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or(OsStr::new("?"))
        .to_string_lossy()
        .into_owned()
}

/// `tests/programs/mpi_ring.c` compiled with `mpicc` (once per test
/// process), or why it cannot be (the MPI tests then skip).
pub fn mpi_ring() -> std::result::Result<PathBuf, String> {
    static RING: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    RING.get_or_init(|| {
        if output_tracked(Command::new("mpirun").arg("--version")).is_err() {
            return Err("mpirun not found (install openmpi-bin)".into());
        }
        let out = base_dir().join("mpi_ring");
        let src = crate_dir().join("programs/mpi_ring.c");
        let r = output_tracked(
            Command::new("mpicc")
                .args(["-O1", "-g", "-o"])
                .arg(&out)
                .arg(&src),
        )
        .map_err(|e| format!("mpicc not found (install libopenmpi-dev): {e}"))?;
        if !r.status.success() {
            return Err(format!(
                "mpicc failed: {}",
                String::from_utf8_lossy(&r.stderr)
            ));
        }
        Ok(out)
    })
    .clone()
}
