//! srun contagion: `srun [OPTIONS] CMD ARGS...` run by a process of the
//! computation starts `CMD` under `dmtcp-run --join-coordinator` on the
//! allocated node(s), so every task of the step joins this computation's
//! coordinator (as [`crate::ssh`] does for ssh; DMTCP's users otherwise
//! write `srun dmtcp_launch --join-coordinator CMD` themselves).
//!
//! Only the command changes: `srun OPTS CMD ARGS` becomes `srun OPTS
//! [/usr/bin/env DMTCP_TMPDIR=T] BIN/dmtcp-run --join-coordinator
//! --coord-host H --coord-port P -- CMD ARGS`. srun passes the words as
//! they are (no shell), and its own environment by default, so nothing is
//! quoted. The secret never travels: the task's `dmtcp-run` reads it from
//! the coordinator's secret file in the private runtime directory. Pure
//! functions here; the exec wrappers that call them are in
//! [`crate::exec`].

/// srun options that take an argument in the next word when not given
/// with `=` (or, for short ones, attached): Slurm 22.05's `srun --help`.
const SHORT_WITH_ARG: &[u8] = b"AbBcCdDeGiJLmMnNopqrStTwWx";
const LONG_WITH_ARG: &[&str] = &[
    "account",
    "acctg-freq",
    "bb",
    "bbf",
    "bcast",
    "bcast-exclude",
    "begin",
    "cpus-per-task",
    "comment",
    "container",
    "cpu-freq",
    "dependency",
    "deadline",
    "delay-boot",
    "chdir",
    "export",
    "error",
    "epilog",
    "gres",
    "gres-flags",
    "input",
    "jobid",
    "job-name",
    "licenses",
    "clusters",
    "distribution",
    "mail-type",
    "mail-user",
    "mcs-label",
    "mpi",
    "ntasks",
    "ntasks-per-node",
    "nodes",
    "output",
    "het-group",
    "partition",
    "power",
    "priority",
    "prolog",
    "profile",
    "qos",
    "relative",
    "core-spec",
    "signal",
    "slurmd-debug",
    "switches",
    "task-epilog",
    "task-prolog",
    "thread-spec",
    "threads",
    "time",
    "time-min",
    "wait",
    "wckey",
    "cluster-constraint",
    "constraint",
    "mem",
    "mincpus",
    "reservation",
    "tmp",
    "nodelist",
    "exclude",
    "mem-per-cpu",
    "sockets-per-node",
    "cores-per-socket",
    "threads-per-core",
    "extra-node-info",
    "ntasks-per-core",
    "ntasks-per-socket",
    "cpus-per-gpu",
    "gpus",
    "gpu-bind",
    "gpu-freq",
    "gpus-per-node",
    "gpus-per-socket",
    "gpus-per-task",
    "mem-per-gpu",
    "uid",
    "gid",
    "network",
    "nodefile",
    "cpu-bind",
    "mem-bind",
    "hint",
    "accel-bind",
    "ntasks-per-gpu",
    "tres-per-task",
    "kill-on-invalid-dep",
];
/// Options after which srun runs no command of ours (`--multi-prog`: the
/// "command" is a configuration file; help, usage, version and test-only).
const NO_COMMAND: &[&str] = &["multi-prog", "help", "usage", "version", "test-only"];
const SHORT_NO_COMMAND: &[u8] = b"hV";

/// Whether an exec'd path names srun (`srun`, `/usr/bin/srun`).
pub fn is_srun(path: &[u8]) -> bool {
    let base = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    base == b"srun"
}

/// Index of the command in an srun command line (== argv.len(): none), or
/// `None` when srun runs no command of ours.
pub fn command_index(argv: &[Vec<u8>]) -> Option<usize> {
    let mut i = 1;
    while i < argv.len() {
        let a = &argv[i];
        if a.as_slice() == b"--" {
            return Some(i + 1);
        }
        if let Some(long) = a.strip_prefix(b"--") {
            let (name, has_value) = match long.iter().position(|&c| c == b'=') {
                Some(p) => (&long[..p], true),
                None => (long, false),
            };
            let name = std::str::from_utf8(name).ok()?;
            if NO_COMMAND.contains(&name) {
                return None;
            }
            if !has_value && LONG_WITH_ARG.contains(&name) {
                i += 1;
            }
            i += 1;
            continue;
        }
        if a.len() > 1 && a[0] == b'-' {
            let mut j = 1;
            while j < a.len() {
                let c = a[j];
                if SHORT_NO_COMMAND.contains(&c) {
                    return None;
                }
                if SHORT_WITH_ARG.contains(&c) {
                    if j + 1 == a.len() {
                        i += 1;
                    }
                    break;
                }
                j += 1;
            }
            i += 1;
            continue;
        }
        return Some(i);
    }
    Some(i)
}

/// Whether the command is already a DMTCP launcher (the user wrote `srun
/// dmtcp-run -j ...`, or this library rewrote it before: a wrapper script
/// named srun execs the real one).
fn is_launcher(cmd: &[Vec<u8>]) -> bool {
    let base = |w: &[u8]| w.rsplit(|&c| c == b'/').next().unwrap_or(w).to_vec();
    match cmd {
        [first, ..] if matches!(base(first).as_slice(), b"dmtcp-run" | b"dmtcp_launch") => true,
        [env, var, ..] => env.as_slice() == b"/usr/bin/env" && var.starts_with(b"DMTCP_TMPDIR="),
        _ => false,
    }
}

/// The argv to exec instead of `argv` (an srun command line), or `None` to
/// exec it unchanged.
pub fn rewrite(argv: &[Vec<u8>], t: &crate::ssh::Remote) -> Option<Vec<Vec<u8>>> {
    let at = command_index(argv)?;
    if at >= argv.len() || is_launcher(&argv[at..]) {
        return None;
    }
    let mut out: Vec<Vec<u8>> = argv[..at].to_vec();
    if let Some(tmp) = &t.tmpdir {
        out.push(b"/usr/bin/env".to_vec());
        out.push(format!("DMTCP_TMPDIR={tmp}").into_bytes());
    }
    out.push(format!("{}/dmtcp-run", t.bin_dir.trim_end_matches('/')).into_bytes());
    for w in [
        "--join-coordinator",
        "--coord-host",
        &t.coord_host,
        "--coord-port",
        &t.coord_port.to_string(),
    ] {
        out.push(w.as_bytes().to_vec());
    }
    if let Some(p) = &t.plugins {
        out.push(b"--with-plugin".to_vec());
        out.push(p.as_bytes().to_vec());
    }
    out.push(b"--".to_vec());
    out.extend_from_slice(&argv[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn target() -> crate::ssh::Remote {
        crate::ssh::Remote {
            bin_dir: "/opt/dmtcp/bin".into(),
            coord_host: "10.0.0.1".into(),
            coord_port: 7779,
            tmpdir: Some("/shared/tmp".into()),
            plugins: None,
        }
    }

    #[test]
    fn finds_the_command() {
        assert_eq!(
            command_index(&v(&["srun", "-n1", "prog", "-n", "2"])),
            Some(2)
        );
        assert_eq!(command_index(&v(&["srun", "-n", "1", "prog"])), Some(3));
        assert_eq!(
            command_index(&v(&["srun", "--ntasks", "2", "--overlap", "-l", "prog"])),
            Some(5)
        );
        assert_eq!(command_index(&v(&["srun", "--ntasks=2", "prog"])), Some(2));
        assert_eq!(command_index(&v(&["srun", "-lN", "2", "prog"])), Some(3));
        assert_eq!(command_index(&v(&["srun", "--", "-x"])), Some(2));
        assert_eq!(command_index(&v(&["srun", "--multi-prog", "f.conf"])), None);
        assert_eq!(command_index(&v(&["srun", "--version"])), None);
        assert_eq!(command_index(&v(&["srun", "-n1"])), Some(2));
    }

    #[test]
    fn rewrites_the_command_only() {
        let t = target();
        let out = rewrite(&v(&["srun", "-n", "2", "prog", "a b", "-c"]), &t).unwrap();
        let got: Vec<String> = out
            .iter()
            .map(|w| String::from_utf8(w.clone()).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "srun",
                "-n",
                "2",
                "/usr/bin/env",
                "DMTCP_TMPDIR=/shared/tmp",
                "/opt/dmtcp/bin/dmtcp-run",
                "--join-coordinator",
                "--coord-host",
                "10.0.0.1",
                "--coord-port",
                "7779",
                "--",
                "prog",
                "a b",
                "-c"
            ]
        );
        // No command, or already under a launcher: unchanged.
        assert!(rewrite(&v(&["srun", "-n1"]), &t).is_none());
        assert!(rewrite(&v(&["srun", "dmtcp-run", "-j", "--", "p"]), &t).is_none());
        assert!(rewrite(&out, &t).is_none());
        assert!(rewrite(&v(&["srun", "env", "A=1", "p"]), &t).is_some());
    }

    #[test]
    fn passes_the_plugins_on() {
        let t = crate::ssh::Remote {
            plugins: Some("/p/a.so:/p/b.so".into()),
            ..target()
        };
        let out = rewrite(&v(&["srun", "prog"]), &t).unwrap();
        let got: Vec<String> = out
            .iter()
            .map(|w| String::from_utf8(w.clone()).unwrap())
            .collect();
        let at = got
            .iter()
            .position(|w| w == "--with-plugin")
            .expect("--with-plugin");
        assert_eq!(got[at + 1], "/p/a.so:/p/b.so");
        assert_eq!(got[at + 2], "--");
        assert_eq!(got[at + 3], "prog");
    }

    #[test]
    fn srun_paths() {
        assert!(is_srun(b"srun"));
        assert!(is_srun(b"/usr/bin/srun"));
        assert!(!is_srun(b"sruns"));
    }
}
