//! The ssh relay pair: `dmtcp_ssh` (the local relay) and `dmtcp_sshd`
//! (the remote relay), which keep `ssh HOST CMD` run by the computation
//! working across a checkpoint, kill and restart.
//!
//! An ssh client of the computation holds a TCP connection to sshd, which
//! is outside the computation: after a restart it comes back reset and ssh
//! exits. So the inject library (`inject/src/ssh.rs`, `relay_rewrite`)
//! execs `dmtcp_ssh [-n] -- SSH ARGV0 ARGS...` instead, where the remote
//! command in `ARGS` starts `dmtcp_sshd -- $SHELL -c CMD` under
//! `dmtcp-run --daemon --join-coordinator` (so it joins the computation as
//! a launch of its own, as plain ssh contagion does). Then:
//!
//! 1. `dmtcp_ssh` (in the computation, with checkpoints held off by
//!    `dmtcp_disable_ckpt`) listens on a fresh TCP port of every address,
//!    runs the real ssh as a child, and writes
//!    `dmtcp-relay 1 TOKEN PORT ADDR...` to its stdin (`ADDR`: the
//!    addresses it reaches the coordinator from; `TOKEN`: 16 random bytes).
//! 2. `dmtcp_sshd` reads that line from its stdin (the ssh session),
//!    connects to the client address of `$SSH_CONNECTION` (else each
//!    `ADDR`) at `PORT`, sends `dmtcp-relay 1 TOKEN` and gets `ok`; it puts
//!    `/dev/null` on its own stdin, stdout and stderr (nothing of the
//!    computation holds the ssh session any more) and runs CMD with pipes.
//! 3. `dmtcp_ssh` checks the token, kills the real ssh (its session has
//!    done its work) and reaps it, closes the listener and lets checkpoints
//!    in again: from then on the computation holds no process or
//!    connection outside it, only the relays' TCP connection, which is a
//!    connection between two launches of one computation, rebuilt at
//!    restart like any other (`resources/inet/remote.rs`).
//! 4. Both relay frames over that connection: `kind stream len payload`
//!    (kind `D` data, `E` end of a stream, `X` exit status; stream 0
//!    stdin, 1 stdout, 2 stderr; len a big-endian u32, at most 64 KiB). The
//!    local relay sends its stdin (none with `-n`, as ssh), writes what
//!    comes for stdout and stderr to its own, and exits with the status of
//!    CMD once the remote relay sends it (after CMD's stdout and stderr
//!    ended): `X` carries CMD's exit code, 255 when a signal ended it (what
//!    ssh reports).
//!
//! When the real ssh ends before the remote relay connected, `dmtcp_ssh`
//! exits with ssh's status (its messages went to the relay's stderr): a
//! host without DMTCP, a failed login, a remote `dmtcp-run` that could not
//! join the coordinator. When the connection closes without an exit status,
//! each side gives up as ssh and sshd do: the local relay exits 255 saying
//! so, the remote relay exits and CMD sees its stdin end and its output
//! pipes broken.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kernel::sys::app_api;

/// First words of the setup line and of the hello on the connection
/// (protocol version 1).
pub const HELLO: &str = "dmtcp-relay 1";

/// Frame kinds.
const DATA: u8 = b'D';
const END: u8 = b'E';
const EXIT: u8 = b'X';
/// Streams.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Largest payload of a frame.
const CHUNK: usize = 64 * 1024;
/// How long the local relay still waits for the remote one after ssh
/// exited 0 (the remote relay may still be connecting).
const AFTER_SSH: Duration = Duration::from_secs(10);
/// Longest wait for a hello or its answer, and for one connect.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Why a relay could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RelayError {
    let what = what.into();
    move |source| RelayError::Io { what, source }
}

/// One frame of the relays' connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes of a stream.
    Data(u8, Vec<u8>),
    /// The stream ended.
    End(u8),
    /// The remote command's exit status (what the local relay exits with).
    Exit(i32),
}

/// Writes `f` in one `write_all` (frames from several threads interleave
/// whole when each holds the writer's lock).
pub fn write_frame(w: &mut impl Write, f: &Frame) -> io::Result<()> {
    let (kind, stream, payload): (u8, u8, &[u8]) = match f {
        Frame::Data(s, b) => (DATA, *s, b),
        Frame::End(s) => (END, *s, &[]),
        Frame::Exit(code) => (EXIT, 0, &code.to_be_bytes()),
    };
    debug_assert!(payload.len() <= CHUNK);
    let mut buf = Vec::with_capacity(6 + payload.len());
    buf.push(kind);
    buf.push(stream);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame; `None` at a clean end of the connection (between
/// frames).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 6];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    if len > CHUNK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("relay frame of {len} bytes (at most {CHUNK})"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    match head[0] {
        DATA => Ok(Some(Frame::Data(head[1], payload))),
        END => Ok(Some(Frame::End(head[1]))),
        EXIT if len == 4 => Ok(Some(Frame::Exit(i32::from_be_bytes([
            payload[0], payload[1], payload[2], payload[3],
        ])))),
        k => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown relay frame kind {k:#x} ({len} bytes)"),
        )),
    }
}

/// A `dmtcp_disable_ckpt` section, closed on drop (a no-op outside a
/// computation). Held while the real ssh runs, so no checkpoint sees it.
struct NoCheckpoint(bool);

impl NoCheckpoint {
    fn enter() -> NoCheckpoint {
        NoCheckpoint(app_api(c"dmtcp_disable_ckpt").is_some_and(|f| f() == 1))
    }
}

impl Drop for NoCheckpoint {
    fn drop(&mut self) {
        if self.0 {
            if let Some(f) = app_api(c"dmtcp_enable_ckpt") {
                f();
            }
        }
    }
}

/// The exit status ssh reports for a remote command that ended this way.
fn ssh_status(st: ExitStatus) -> i32 {
    st.code().unwrap_or(255)
}

/// A line of at most 512 bytes (without its newline), read a byte at a
/// time so nothing after it is consumed.
fn read_line(r: &mut impl Read, what: &str) -> Result<String, RelayError> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => {
                return Err(RelayError::Setup(format!(
                    "{what}: ended before a whole line"
                )))
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= 512 => {
                return Err(RelayError::Setup(format!("{what}: line too long")))
            }
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(what)(e)),
        }
    }
    String::from_utf8(line).map_err(|_| RelayError::Setup(format!("{what}: not UTF-8")))
}

/// The addresses this host reaches the coordinator from
/// (`DMTCP_COORD_HOST`/`DMTCP_COORD_PORT`), loopback left out: where the
/// remote relay may connect back to when `$SSH_CONNECTION` does not do.
fn own_addresses() -> Vec<IpAddr> {
    let host = std::env::var("DMTCP_COORD_HOST").unwrap_or_default();
    let port: u16 = std::env::var("DMTCP_COORD_PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    if host.is_empty() || port == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for a in (host.as_str(), port)
        .to_socket_addrs()
        .into_iter()
        .flatten()
    {
        let local: SocketAddr = match a {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => continue,
        };
        // A connected UDP socket sends nothing: it only asks the routing
        // table for the source address.
        let Ok(u) = UdpSocket::bind(local) else {
            continue;
        };
        if u.connect(a).is_err() {
            continue;
        }
        if let Ok(l) = u.local_addr() {
            let ip = l.ip();
            if !ip.is_loopback() && !ip.is_unspecified() && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Arguments of `dmtcp_ssh`: `[-n] -- SSH ARGV0 ARGS...`.
#[derive(Debug, PartialEq, Eq)]
pub struct LocalArgs {
    pub null_stdin: bool,
    pub ssh: OsString,
    pub argv0: OsString,
    pub args: Vec<OsString>,
}

const LOCAL_USAGE: &str = "dmtcp_ssh [-n] -- SSH ARGV0 ARGS... (run by the inject library in place of `ssh HOST CMD`; see docs/user-guide.md, Several hosts)";
const REMOTE_USAGE: &str = "dmtcp_sshd -- PROG [ARGS...] (started over ssh by dmtcp_ssh under dmtcp-run; see docs/user-guide.md, Several hosts)";

pub fn parse_local(args: &[OsString]) -> Result<LocalArgs, RelayError> {
    let mut i = 0;
    let mut null_stdin = false;
    while i < args.len() && args[i] != "--" {
        if args[i] == "-n" {
            null_stdin = true;
        } else {
            return Err(RelayError::Usage(LOCAL_USAGE));
        }
        i += 1;
    }
    let rest = args.get(i + 1..).unwrap_or_default();
    if rest.len() < 2 {
        return Err(RelayError::Usage(LOCAL_USAGE));
    }
    Ok(LocalArgs {
        null_stdin,
        ssh: rest[0].clone(),
        argv0: rest[1].clone(),
        args: rest[2..].to_vec(),
    })
}

/// `dmtcp_ssh`.
pub fn local_main() -> ! {
    crate::init_logging();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = match parse_local(&args).and_then(local) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dmtcp_ssh: {e}");
            255
        }
    };
    std::process::exit(code)
}

fn local(a: LocalArgs) -> Result<i32, RelayError> {
    let token = hex(&rand::random::<[u8; 16]>());
    let no_ckpt = NoCheckpoint::enter();
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(io_err("listening for the remote relay"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("the relay's listening port"))?
        .port();
    let addrs: Vec<String> = own_addresses().iter().map(IpAddr::to_string).collect();
    let mut ssh = Command::new(&a.ssh)
        .arg0(&a.argv0)
        .args(&a.args)
        .stdin(Stdio::piped())
        // What the remote `dmtcp-run --daemon` prints is not the command's.
        .stdout(Stdio::null())
        .spawn()
        .map_err(io_err(format!("running {}", a.ssh.to_string_lossy())))?;
    if let Some(mut stdin) = ssh.stdin.take() {
        let line = format!("{HELLO} {token} {port} {}\n", addrs.join(" "));
        // ssh may be gone already: its status says why.
        let _ = stdin.write_all(line.as_bytes());
    }
    let stream = match await_remote(&listener, &token, &mut ssh)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    // The session did its work; the relays' own connection replaces it.
    let _ = ssh.kill();
    let _ = ssh.wait();
    drop(listener);
    drop(no_ckpt);
    tracing::debug!("relay connected to {:?}", stream.peer_addr());
    relay_local(stream, a.null_stdin)
}

/// Waits for the remote relay (a connection that says the token); `Err`
/// with ssh's status when ssh ended first.
fn await_remote(
    listener: &TcpListener,
    token: &str,
    ssh: &mut Child,
) -> Result<Result<TcpStream, i32>, RelayError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    listener
        .set_nonblocking(true)
        .map_err(io_err("the relay's listener"))?;
    let want = format!("{HELLO} {token}");
    let mut ssh_ended: Option<Instant> = None;
    loop {
        match listener.accept() {
            Ok((s, peer)) => match hello(s, &want) {
                Ok(s) => return Ok(Ok(s)),
                Err(e) => tracing::warn!("relay: connection from {peer} refused: {e}"),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("accepting the remote relay")(e)),
        }
        match ssh_ended {
            None => {
                if let Some(st) = ssh.try_wait().map_err(io_err("waiting for ssh"))? {
                    if !st.success() {
                        return Ok(Err(ssh_status(st)));
                    }
                    ssh_ended = Some(Instant::now());
                }
            }
            Some(t) if t.elapsed() > AFTER_SSH => {
                return Err(RelayError::Setup(
                    "ssh ended and the remote relay (dmtcp_sshd) did not connect back".into(),
                ))
            }
            Some(_) => {}
        }
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(50u16));
    }
}

/// The listener's side of the hello: `want` in, `ok` out.
fn hello(s: TcpStream, want: &str) -> Result<TcpStream, RelayError> {
    s.set_nonblocking(false)
        .map_err(io_err("the relay connection"))?;
    s.set_read_timeout(Some(HANDSHAKE))
        .map_err(io_err("the relay connection"))?;
    let mut r = &s;
    let line = read_line(&mut r, "the remote relay's hello")?;
    if !same(line.as_bytes(), want.as_bytes()) {
        return Err(RelayError::Setup("wrong hello".into()));
    }
    (&s).write_all(b"ok\n")
        .map_err(io_err("answering the remote relay"))?;
    s.set_read_timeout(None)
        .map_err(io_err("the relay connection"))?;
    Ok(s)
}

/// `a == b` in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

type Writer = Arc<Mutex<TcpStream>>;

fn send(w: &Writer, f: &Frame) -> io::Result<()> {
    let mut s = w.lock().unwrap_or_else(|e| e.into_inner());
    write_frame(&mut *s, f)
}

/// Sends what `from` gives as stream `stream` until it ends, then `E`.
fn pump(mut from: impl Read, stream: u8, w: &Writer) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if send(w, &Frame::Data(stream, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = send(w, &Frame::End(stream));
}

fn relay_local(stream: TcpStream, null_stdin: bool) -> Result<i32, RelayError> {
    let _ = stream.set_nodelay(true);
    let w: Writer = Arc::new(Mutex::new(
        stream.try_clone().map_err(io_err("the relay connection"))?,
    ));
    if null_stdin {
        send(&w, &Frame::End(STDIN)).map_err(io_err("the relay connection"))?;
    } else {
        let w = w.clone();
        std::thread::spawn(move || pump(io::stdin(), STDIN, &w));
    }
    let mut r = io::BufReader::with_capacity(CHUNK + 6, stream);
    let (mut out_ok, mut err_ok) = (true, true);
    loop {
        match read_frame(&mut r).map_err(io_err("reading from the remote relay"))? {
            Some(Frame::Data(STDOUT, b)) if out_ok => {
                let mut o = io::stdout().lock();
                out_ok = o.write_all(&b).and_then(|()| o.flush()).is_ok();
            }
            Some(Frame::Data(STDERR, b)) if err_ok => {
                let mut e = io::stderr().lock();
                err_ok = e.write_all(&b).and_then(|()| e.flush()).is_ok();
            }
            Some(Frame::Exit(code)) => return Ok(code),
            Some(_) => {}
            None => {
                return Err(RelayError::Setup(
                    "the connection to the remote relay closed before the remote command ended"
                        .into(),
                ))
            }
        }
    }
}

/// Arguments of `dmtcp_sshd`: `-- PROG ARGS...`.
pub fn parse_remote(args: &[OsString]) -> Result<Vec<OsString>, RelayError> {
    match args.split_first() {
        Some((dd, rest)) if dd == "--" && !rest.is_empty() => Ok(rest.to_vec()),
        _ => Err(RelayError::Usage(REMOTE_USAGE)),
    }
}

/// The setup line: (token, port, addresses).
pub fn parse_setup(line: &str) -> Result<(String, u16, Vec<IpAddr>), RelayError> {
    let bad = || {
        RelayError::Setup(format!("the local relay's setup line {line:?} is not `{HELLO} TOKEN PORT ADDR...` (DMTCP versions differ between the hosts?)"))
    };
    let rest = line.strip_prefix(HELLO).ok_or_else(bad)?;
    let mut w = rest.split_whitespace();
    let token = w.next().ok_or_else(bad)?;
    if token.len() != 32 || !token.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let port: u16 = w.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let addrs = w
        .map(|a| a.parse::<IpAddr>().map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((token.to_string(), port, addrs))
}

/// Where the local relay may be: the client address of `$SSH_CONNECTION`
/// (the address its ssh came from), then the ones it named.
pub fn candidates(ssh_connection: Option<&str>, named: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = ssh_connection
        .and_then(|s| s.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .into_iter()
        .collect();
    for a in named {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    out
}

/// `dmtcp_sshd`.
pub fn remote_main() -> ! {
    crate::init_logging();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = match parse_remote(&args).and_then(remote) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dmtcp_sshd: host {}: {e}", host_name());
            255
        }
    };
    std::process::exit(code)
}

fn host_name() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into())
}

fn remote(cmd: Vec<OsString>) -> Result<i32, RelayError> {
    let no_ckpt = NoCheckpoint::enter();
    let line = read_line(&mut io::stdin().lock(), "the local relay's setup line")?;
    let (token, port, named) = parse_setup(&line)?;
    let ssh_conn = std::env::var("SSH_CONNECTION").ok();
    let cands = candidates(ssh_conn.as_deref(), &named);
    if cands.is_empty() {
        return Err(RelayError::Setup(
            "no address of the local relay ($SSH_CONNECTION unset and none named)".into(),
        ));
    }
    let mut stream = None;
    let mut why = Vec::new();
    for ip in &cands {
        let to = SocketAddr::new(*ip, port);
        match TcpStream::connect_timeout(&to, HANDSHAKE) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => why.push(format!("{to}: {e}")),
        }
    }
    let stream = stream.ok_or_else(|| {
        RelayError::Setup(format!("cannot reach the local relay: {}", why.join("; ")))
    })?;
    (&stream)
        .write_all(format!("{HELLO} {token}\n").as_bytes())
        .map_err(io_err("greeting the local relay"))?;
    stream
        .set_read_timeout(Some(HANDSHAKE))
        .map_err(io_err("the relay connection"))?;
    let ok = read_line(&mut &stream, "the local relay's answer")?;
    if ok != "ok" {
        return Err(RelayError::Setup(format!(
            "the local relay answered {ok:?}"
        )));
    }
    stream
        .set_read_timeout(None)
        .map_err(io_err("the relay connection"))?;
    // Let go of the ssh session: nothing of the computation keeps it.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("/dev/null"))?;
    nix::unistd::dup2_stdin(&null)
        .and_then(|()| nix::unistd::dup2_stdout(&null))
        .and_then(|()| nix::unistd::dup2_stderr(&null))
        .map_err(|e| io_err("putting /dev/null on stdio")(e.into()))?;
    let child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    drop(no_ckpt);
    match child {
        Ok(child) => relay_remote(stream, child),
        Err(e) => {
            // Said on the connection: our stderr is /dev/null now.
            let w: Writer = Arc::new(Mutex::new(stream));
            let msg = format!(
                "dmtcp_sshd: host {}: running {}: {e}\n",
                host_name(),
                cmd[0].to_string_lossy()
            );
            let _ = send(&w, &Frame::Data(STDERR, msg.into_bytes()));
            let _ = send(&w, &Frame::Exit(127));
            Ok(127)
        }
    }
}

fn relay_remote(stream: TcpStream, mut child: Child) -> Result<i32, RelayError> {
    let _ = stream.set_nodelay(true);
    let w: Writer = Arc::new(Mutex::new(
        stream.try_clone().map_err(io_err("the relay connection"))?,
    ));
    let stdin = child.stdin.take();
    let mut r = io::BufReader::with_capacity(CHUNK + 6, stream);
    std::thread::spawn(move || {
        let mut stdin = stdin;
        loop {
            match read_frame(&mut r) {
                Ok(Some(Frame::Data(STDIN, b))) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&b).is_err() {
                            stdin = None;
                        }
                    }
                }
                Ok(Some(Frame::End(STDIN))) => stdin = None,
                Ok(Some(_)) => {}
                // The local relay closed (it got the exit status, or it
                // is gone as an ssh client would be): so do we.
                Ok(None) | Err(_) => std::process::exit(0),
            }
        }
    });
    let pumps: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| (Box::new(o) as Box<dyn Read + Send>, STDOUT)),
        child
            .stderr
            .take()
            .map(|e| (Box::new(e) as Box<dyn Read + Send>, STDERR)),
    ]
    .into_iter()
    .flatten()
    .map(|(from, stream)| {
        let w = w.clone();
        std::thread::spawn(move || pump(from, stream, &w))
    })
    .collect();
    for p in pumps {
        let _ = p.join();
    }
    let code = ssh_status(child.wait().map_err(io_err("waiting for the command"))?);
    let _ = send(&w, &Frame::Exit(code));
    // The local relay exits once it has the status; the reader thread
    // sees the connection close and ends this process.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Data(STDOUT, b"hello".to_vec()),
            Frame::Data(STDIN, vec![7; CHUNK]),
            Frame::End(STDERR),
            Frame::Exit(-3),
            Frame::Exit(255),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            write_frame(&mut buf, f).unwrap();
        }
        let mut r = &buf[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r).unwrap(), None);
        // Cut in the middle of a frame, too long, unknown kind.
        assert!(read_frame(&mut &buf[..3]).is_err());
        assert!(read_frame(&mut &buf[..8]).is_err());
        let mut big = vec![DATA, 1];
        big.extend_from_slice(&((CHUNK + 1) as u32).to_be_bytes());
        assert!(read_frame(&mut &big[..]).is_err());
        assert!(read_frame(&mut &[b'Q', 0, 0, 0, 0, 0][..]).is_err());
    }

    #[test]
    fn arguments() {
        let v = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
        let a = parse_local(&v(&["-n", "--", "/usr/bin/ssh", "ssh", "h", "cmd"])).unwrap();
        assert!(a.null_stdin);
        assert_eq!(a.ssh, "/usr/bin/ssh");
        assert_eq!(a.argv0, "ssh");
        assert_eq!(a.args, v(&["h", "cmd"]));
        assert!(!parse_local(&v(&["--", "ssh", "ssh"])).unwrap().null_stdin);
        assert!(parse_local(&v(&["-x", "--", "ssh", "ssh"])).is_err());
        assert!(parse_local(&v(&["--", "ssh"])).is_err());
        assert!(parse_local(&v(&[])).is_err());
        assert_eq!(
            parse_remote(&v(&["--", "sh", "-c", "x"])).unwrap(),
            v(&["sh", "-c", "x"])
        );
        assert!(parse_remote(&v(&["--"])).is_err());
        assert!(parse_remote(&v(&["sh"])).is_err());
    }

    #[test]
    fn setup_line_and_candidates() {
        let t = "00112233445566778899aabbccddeeff";
        let (tok, port, addrs) = parse_setup(&format!("{HELLO} {t} 4242 198.18.0.1 ::1")).unwrap();
        assert_eq!((tok.as_str(), port), (t, 4242));
        assert_eq!(addrs.len(), 2);
        let (_, _, none) = parse_setup(&format!("{HELLO} {t} 1 ")).unwrap();
        assert!(none.is_empty());
        assert!(parse_setup(&format!("{HELLO} short 1")).is_err());
        assert!(parse_setup(&format!("{HELLO} {t} x")).is_err());
        assert!(parse_setup(&format!("{HELLO} {t} 1 not-an-ip")).is_err());
        assert!(parse_setup(&format!("dmtcp-relay 2 {t} 1")).is_err());
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        assert_eq!(
            candidates(Some("198.18.0.2 40000 198.18.0.3 22"), &[a, b]),
            vec![b, a]
        );
        assert_eq!(candidates(None, &[a]), vec![a]);
        assert_eq!(candidates(Some("garbage"), &[]), Vec::<IpAddr>::new());
    }
}
