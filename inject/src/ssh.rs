//! ssh contagion: `ssh [OPTIONS] HOST CMD...` run by a process of the
//! computation starts `CMD` on `HOST` under `dmtcp-run --join-coordinator`,
//! joined to this computation's coordinator (DMTCP's ssh plugin does the
//! same with `dmtcp_ssh`/`dmtcp_sshd`).
//!
//! Only the remote command changes: the options, the destination and the
//! ssh client stay as the program gave them. ssh joins the command words
//! with spaces and the remote login shell parses the result, so the
//! rewritten command runs exactly that string with `$SHELL -c` under
//! `dmtcp-run`. The secret never travels: the remote `dmtcp-run` reads it
//! from the coordinator's secret file in the private runtime directory
//! (`DMTCP_TMPDIR`, which must be on the shared file system; the path is
//! passed, the secret is not). Pure functions here; the exec wrappers that
//! call them are in [`crate::exec`].
//!
//! With the relay (the default, [`relay_rewrite`]), the exec runs
//! `dmtcp_ssh` instead of ssh: a relay that belongs to the computation and
//! runs the real ssh only to start `dmtcp_sshd` (the remote relay, under
//! `dmtcp-run --daemon --join-coordinator`) on the other host; the two
//! relays then carry the remote command's stdin, stdout, stderr and exit
//! status over a TCP connection of their own, which a restart rebuilds like
//! any TCP connection between launches. The real ssh is killed once the
//! relays are connected, so no checkpoint holds it (see
//! `supervisor/src/roles/relay.rs`).

/// Marks a remote command this library already rewrote (a wrapper script
/// named `ssh` that execs the real one must not be wrapped twice).
pub const MARKER: &str = ": dmtcp-ssh;";

/// OpenSSH client options that take an argument (ssh.c's getopt string).
const WITH_ARG: &[u8] = b"BbcDEeFIiJLlmOoPpQRSWw";
/// Options after which ssh runs no remote command of ours: `-N` (no
/// command), `-s` (subsystem), `-W` (stdio forwarding), `-O` (control
/// command), `-G`/`-V`/`-Q` (print and exit).
const NO_COMMAND: &[u8] = b"NsWOGVQ";

/// Where the remote side finds the coordinator and the binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Directory holding `dmtcp-run` on the remote host.
    pub bin_dir: String,
    pub coord_host: String,
    pub coord_port: u16,
    /// `DMTCP_TMPDIR` (where the secret file is), passed on when set.
    pub tmpdir: Option<String>,
    /// The computation's plugins (`A.so:B.so`), loaded there too.
    pub plugins: Option<String>,
}

/// Whether an exec'd path names the ssh client (`ssh`, `/usr/bin/ssh`).
pub fn is_ssh(path: &[u8]) -> bool {
    let base = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    base == b"ssh"
}

/// Options with which the relay is not used (the remote command runs
/// under plain contagion, as without the relay): `-t` (a terminal: the
/// relay carries pipes, not a terminal) and `-f` (ssh goes to the
/// background itself).
const NO_RELAY: &[u8] = b"tf";

/// What an ssh command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct SshCall {
    /// Index of the destination (`[user@]host`).
    pub dest: usize,
    /// Index of the first word of the remote command (== argv.len(): none).
    pub command: usize,
    /// An option that means "no remote command of ours" was given.
    pub no_command: bool,
    /// An option of [`NO_RELAY`] was given.
    pub no_relay: bool,
    /// `-n` was given (stdin from /dev/null).
    pub null_stdin: bool,
    /// Indices of the option words (clusters such as `-nT`; not their
    /// arguments, not `--`).
    pub option_words: Vec<usize>,
}

/// Parses an OpenSSH command line as ssh does: options (clusters such as
/// `-nT`, arguments attached or separate), the destination, options again
/// (OpenSSH parses options after the destination too) unless `--` came,
/// then the command. `None` when there is no destination.
pub fn parse(argv: &[Vec<u8>]) -> Option<SshCall> {
    let mut i = 1;
    let mut dest = None;
    let mut opts_done = false;
    let mut no_command = false;
    let mut no_relay = false;
    let mut null_stdin = false;
    let mut option_words = Vec::new();
    while i < argv.len() {
        let a = &argv[i];
        if !opts_done && a.as_slice() == b"--" {
            opts_done = true;
            i += 1;
            continue;
        }
        if !opts_done && a.len() > 1 && a[0] == b'-' {
            option_words.push(i);
            let mut j = 1;
            while j < a.len() {
                let c = a[j];
                if NO_COMMAND.contains(&c) {
                    no_command = true;
                }
                if NO_RELAY.contains(&c) {
                    no_relay = true;
                }
                if c == b'n' {
                    null_stdin = true;
                }
                if WITH_ARG.contains(&c) {
                    if j + 1 == a.len() {
                        // The argument is the next word.
                        i += 1;
                        if i >= argv.len() {
                            return None;
                        }
                    }
                    break;
                }
                j += 1;
            }
            i += 1;
            continue;
        }
        if dest.is_none() {
            dest = Some(i);
            i += 1;
            continue;
        }
        break;
    }
    Some(SshCall {
        dest: dest?,
        command: i,
        no_command,
        no_relay,
        null_stdin,
        option_words,
    })
}

/// `word` (an option cluster) without its `n` options: those before the
/// first option that takes an argument (the rest of the word is that
/// argument). `None` when nothing is left.
fn without_n(word: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![b'-'];
    let mut j = 1;
    while j < word.len() {
        let c = word[j];
        if WITH_ARG.contains(&c) {
            out.extend_from_slice(&word[j..]);
            break;
        }
        if c != b'n' {
            out.push(c);
        }
        j += 1;
    }
    (out.len() > 1).then_some(out)
}

/// `s` as one word for a POSIX shell.
pub fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&c));
    if safe {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The remote command that runs `command` (the string ssh would have sent)
/// under `dmtcp-run` joined to the coordinator; a host without
/// `dmtcp-run` says so in one line naming the host and exits 127.
pub fn remote_command(command: &str, r: &Remote) -> String {
    let env = match &r.tmpdir {
        Some(t) => format!("env DMTCP_TMPDIR={} ", quote(t)),
        None => String::new(),
    };
    let plugins = match &r.plugins {
        Some(p) => format!("--with-plugin {} ", quote(p)),
        None => String::new(),
    };
    format!(
        "{MARKER} d={bin}; if test -x \"$d/dmtcp-run\"; then exec {env}\"$d/dmtcp-run\" \
         --join-coordinator --coord-host {host} --coord-port {port} {plugins}-- \"${{SHELL:-/bin/sh}}\" -c {cmd}; \
         else echo \"dmtcp: host $(uname -n): $d/dmtcp-run not found (set DMTCP_PREFIX or dmtcp-run --prefix)\" >&2; exit 127; fi",
        bin = quote(&r.bin_dir),
        host = quote(&r.coord_host),
        port = r.coord_port,
        cmd = quote(command),
    )
}

/// The remote command that starts the remote relay: `dmtcp-run --daemon
/// --join-coordinator ... -- BIN/dmtcp_sshd -- $SHELL -c COMMAND`. The
/// daemon returns as soon as the relay runs (printing one line, which the
/// local relay discards); the relay reads where to connect from its stdin
/// (the ssh session). A host without `dmtcp-run` or `dmtcp_sshd` says so in
/// one line naming the host and exits 127.
pub fn remote_relay_command(command: &str, r: &Remote) -> String {
    let env = match &r.tmpdir {
        Some(t) => format!("env DMTCP_TMPDIR={} ", quote(t)),
        None => String::new(),
    };
    let plugins = match &r.plugins {
        Some(p) => format!("--with-plugin {} ", quote(p)),
        None => String::new(),
    };
    format!(
        "{MARKER} d={bin}; if ! test -x \"$d/dmtcp-run\"; then \
         echo \"dmtcp: host $(uname -n): $d/dmtcp-run not found (set DMTCP_PREFIX or dmtcp-run --prefix)\" >&2; exit 127; \
         elif ! test -x \"$d/dmtcp_sshd\"; then \
         echo \"dmtcp: host $(uname -n): $d/dmtcp_sshd not found (an older DMTCP there? set DMTCP_SSH_RELAY=0)\" >&2; exit 127; \
         else exec {env}\"$d/dmtcp-run\" --daemon --join-coordinator --coord-host {host} --coord-port {port} {plugins}\
         -- \"$d/dmtcp_sshd\" -- \"${{SHELL:-/bin/sh}}\" -c {cmd}; fi",
        bin = quote(&r.bin_dir),
        host = quote(&r.coord_host),
        port = r.coord_port,
        cmd = quote(command),
    )
}

/// The remote command of an ssh call (its words joined as ssh joins them),
/// or `None`: no remote command, an option that runs none, or a command
/// already rewritten.
fn command_of(argv: &[Vec<u8>], call: &SshCall) -> Option<String> {
    if call.no_command || call.command >= argv.len() {
        return None;
    }
    let words: Vec<String> = argv[call.command..]
        .iter()
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let command = words.join(" ");
    if command.trim_start().starts_with(MARKER) {
        return None;
    }
    Some(command)
}

/// The argv to exec instead of `argv` (an ssh command line), or `None` to
/// exec it unchanged: no remote command, an option that runs none, or a
/// command already rewritten.
pub fn rewrite(argv: &[Vec<u8>], r: &Remote) -> Option<Vec<Vec<u8>>> {
    let call = parse(argv)?;
    let command = command_of(argv, &call)?;
    let mut out: Vec<Vec<u8>> = argv[..call.command].to_vec();
    out.push(remote_command(&command, r).into_bytes());
    Some(out)
}

/// What to exec instead of an ssh call, with the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// Exec `relay` (the path of `dmtcp_ssh`) with this argv:
    /// `dmtcp_ssh [-n] -- SSH ARGV0 ARGS...`, where `ARGS` are ssh's
    /// options without `-n` (the relay writes to ssh's stdin) and the
    /// remote command is [`remote_relay_command`].
    Relay(Vec<Vec<u8>>),
    /// No relay for this call (`-t`, `-f`): exec ssh with this argv
    /// (plain contagion, [`rewrite`]).
    Plain(Vec<Vec<u8>>),
}

/// The relayed form of an ssh call whose program is `file` (exec's path,
/// or the name execvp searches; the relay runs it the same way), or `None`
/// to exec it unchanged (as [`rewrite`]).
pub fn relay_rewrite(file: &[u8], argv: &[Vec<u8>], r: &Remote) -> Option<Relayed> {
    let call = parse(argv)?;
    let command = command_of(argv, &call)?;
    if call.no_relay {
        return rewrite(argv, r).map(Relayed::Plain);
    }
    let mut out: Vec<Vec<u8>> = vec![b"dmtcp_ssh".to_vec()];
    if call.null_stdin {
        out.push(b"-n".to_vec());
    }
    out.push(b"--".to_vec());
    out.push(file.to_vec());
    out.push(argv.first().cloned().unwrap_or_else(|| file.to_vec()));
    for (i, w) in argv.iter().enumerate().take(call.command).skip(1) {
        if call.option_words.contains(&i) {
            if let Some(w) = without_n(w) {
                out.push(w);
            }
        } else {
            out.push(w.clone());
        }
    }
    out.push(remote_relay_command(&command, r).into_bytes());
    Some(Relayed::Relay(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn remote() -> Remote {
        Remote {
            bin_dir: "/opt/dmtcp bin".into(),
            coord_host: "198.18.0.1".into(),
            coord_port: 7779,
            tmpdir: Some("/shared/tmp".into()),
            plugins: None,
        }
    }

    #[test]
    fn parses_options_destination_and_command() {
        let p = parse(&v(&[
            "ssh", "-n", "-o", "A=b", "-p22", "-l", "u", "h", "ls", "-l",
        ]))
        .unwrap();
        assert_eq!((p.dest, p.command, p.no_command), (7, 8, false));
        let p = parse(&v(&["ssh", "-nTl", "u", "h", "-v", "echo", "hi"])).unwrap();
        assert_eq!((p.dest, p.command), (3, 5));
        let p = parse(&v(&["ssh", "h", "--", "-x"])).unwrap();
        assert_eq!((p.dest, p.command), (1, 3));
        let p = parse(&v(&["ssh", "-N", "-L", "1:h:2", "h"])).unwrap();
        assert!(p.no_command);
        assert!(parse(&v(&["ssh", "-p"])).is_none());
        assert!(parse(&v(&["ssh", "-v"])).is_none());
    }

    #[test]
    fn rewrites_only_remote_commands() {
        let r = remote();
        assert!(rewrite(&v(&["ssh", "h"]), &r).is_none());
        assert!(rewrite(&v(&["ssh", "-s", "h", "sftp"]), &r).is_none());
        let out = rewrite(&v(&["ssh", "-n", "h", "echo", "'a b'", "$X"]), &r).unwrap();
        assert_eq!(out.len(), 4);
        let cmd = String::from_utf8(out[3].clone()).unwrap();
        assert!(cmd.starts_with(MARKER));
        assert!(cmd.contains("--coord-host 198.18.0.1 --coord-port 7779"));
        assert!(cmd.contains("d='/opt/dmtcp bin';"));
        assert!(cmd.contains("env DMTCP_TMPDIR=/shared/tmp "));
        assert!(cmd.ends_with("fi"));
        assert!(cmd.contains(r#"-c 'echo '\''a b'\'' $X'"#), "{cmd}");
        assert!(!cmd.contains("--with-plugin"));
        // The computation's plugins are loaded on the other host too.
        let with = Remote {
            plugins: Some("/p/a.so:/p/b c.so".into()),
            ..remote()
        };
        let out = rewrite(&v(&["ssh", "h", "prog"]), &with).unwrap();
        let pcmd = String::from_utf8(out[2].clone()).unwrap();
        assert!(
            pcmd.contains("--coord-port 7779 --with-plugin '/p/a.so:/p/b c.so' -- "),
            "{pcmd}"
        );
        // Already rewritten (a wrapper named ssh execs the real one).
        let again = v(&["ssh", "-n", "h", &cmd]);
        assert!(rewrite(&again, &r).is_none());
    }

    #[test]
    fn relays_remote_commands() {
        let r = remote();
        assert!(relay_rewrite(b"ssh", &v(&["ssh", "h"]), &r).is_none());
        let Some(Relayed::Relay(out)) = relay_rewrite(
            b"/usr/bin/ssh",
            &v(&[
                "ssh", "-nx", "-p", "22", "-vn", "-n", "h", "-np2", "echo", "hi",
            ]),
            &r,
        ) else {
            panic!("not relayed")
        };
        let words: Vec<String> = out
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        assert_eq!(
            &words[..9],
            [
                "dmtcp_ssh",
                "-n",
                "--",
                "/usr/bin/ssh",
                "ssh",
                "-x",
                "-p",
                "22",
                "-v"
            ]
        );
        assert_eq!(&words[9..11], ["h", "-p2"]);
        let cmd = &words[11];
        assert_eq!(words.len(), 12);
        assert!(cmd.starts_with(MARKER));
        assert!(cmd.contains("\"$d/dmtcp-run\" --daemon --join-coordinator --coord-host 198.18.0.1 --coord-port 7779 -- \"$d/dmtcp_sshd\" -- "), "{cmd}");
        assert!(cmd.ends_with("-c 'echo hi'; fi"), "{cmd}");
        // The relayed command is not relayed again (a wrapper named ssh).
        assert!(relay_rewrite(b"ssh", &v(&["ssh", "h", cmd]), &r).is_none());
        // Without -n the relay forwards stdin.
        let Some(Relayed::Relay(out)) = relay_rewrite(b"ssh", &v(&["ssh", "h", "cat"]), &r) else {
            panic!("not relayed")
        };
        assert_eq!(out[1], b"--");
        // A terminal (-t) or -f: plain contagion.
        let Some(Relayed::Plain(out)) = relay_rewrite(b"ssh", &v(&["ssh", "-t", "h", "top"]), &r)
        else {
            panic!("relayed with -t")
        };
        assert_eq!(out[0], b"ssh");
        assert!(String::from_utf8_lossy(&out[3]).contains("--join-coordinator"));
    }

    #[test]
    fn strips_n_before_arguments() {
        assert_eq!(without_n(b"-n"), None);
        assert_eq!(without_n(b"-nT").unwrap(), b"-T");
        assert_eq!(without_n(b"-np22").unwrap(), b"-p22");
        assert_eq!(without_n(b"-lnu").unwrap(), b"-lnu");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn ssh_paths() {
        assert!(is_ssh(b"ssh"));
        assert!(is_ssh(b"/usr/bin/ssh"));
        assert!(!is_ssh(b"/usr/bin/sshd"));
        assert!(!is_ssh(b"xssh"));
    }
}
