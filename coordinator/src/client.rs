//! Finding, starting and talking to a coordinator (used by `dmtcp-run`,
//! `dmtcp-restart`, `dmtcp-attach` and `dmtcp-command`).

use std::io::{BufReader, BufWriter, Read};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use dmtcp_protocol::auth::{self, HandshakeError};
use dmtcp_protocol::runtime::{self, RuntimeError};
use dmtcp_protocol::{
    read_frame, write_frame, FromCoordinator, ProtocolError, Reply, Request, Role, ToCoordinator,
};

/// Default coordinator port (DMTCP's).
pub const DEFAULT_PORT: u16 = 7779;
/// Default coordinator host.
pub const DEFAULT_HOST: &str = "127.0.0.1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a coordinator may take to answer each handshake frame.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a coordinator listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordAddr {
    pub host: String,
    pub port: u16,
}

impl CoordAddr {
    /// Explicit values first, then `DMTCP_COORD_HOST` / `DMTCP_COORD_PORT`,
    /// then `127.0.0.1:7779`. An unparsable port in the environment is ignored.
    pub fn from_args(host: Option<String>, port: Option<u16>) -> CoordAddr {
        let host = host
            .or_else(|| {
                std::env::var("DMTCP_COORD_HOST")
                    .ok()
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let port = port
            .or_else(|| {
                std::env::var("DMTCP_COORD_PORT")
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
            })
            .unwrap_or(DEFAULT_PORT);
        CoordAddr { host, port }
    }
}

impl std::fmt::Display for CoordAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The private runtime directory (see [`dmtcp_protocol::runtime`]):
/// `$DMTCP_TMPDIR/dmtcp-<uid>`, else `$XDG_RUNTIME_DIR/dmtcp`, else
/// `/tmp/dmtcp-<uid>`; created 0700, and refused unless it is a directory
/// owned by us that nobody else may enter.
pub fn tmpdir() -> Result<PathBuf, RuntimeError> {
    runtime::dir()
}

/// File holding the secret of the coordinator at `addr` (in [`tmpdir`]).
pub fn secret_file(addr: &CoordAddr) -> Result<PathBuf, RuntimeError> {
    runtime::secret_file(&addr.host, addr.port)
}

/// `$DMTCP_SECRET`, else the contents of [`secret_file`] (trimmed), read
/// only if the file is ours and private; `Ok(None)` when there is none.
pub fn load_secret(addr: &CoordAddr) -> Result<Option<String>, RuntimeError> {
    if let Ok(s) = std::env::var("DMTCP_SECRET") {
        if !s.is_empty() {
            return Ok(Some(s));
        }
    }
    runtime::read_private(&secret_file(addr)?)
}

/// [`load_secret`], with an unusable runtime directory or secret file
/// logged (a warning) and treated as no secret.
pub fn read_secret(addr: &CoordAddr) -> Option<String> {
    match load_secret(addr) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

/// How [`ensure_coordinator`] starts a new coordinator.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub ckpt_dir: Option<PathBuf>,
    pub interval: Option<u32>,
    pub exit_on_last: bool,
}

/// What answered at an address.
enum Probe {
    Nothing(std::io::Error),
    /// Our coordinator: it proved the secret, and we proved it too.
    Coordinator(String),
    /// A DMTCP coordinator that refused us (wrong or unknown secret).
    Refused(String),
    /// Something that speaks the protocol but did not prove the secret (or
    /// we have no secret to check it with): never used.
    Unproven(String),
    NotCoordinator(String),
}

fn probe(addr: &CoordAddr, secret: Option<String>) -> Probe {
    let stream = match connect_tcp(addr) {
        Ok(s) => s,
        Err(e) => return Probe::Nothing(e),
    };
    // Something that accepts but never speaks must not hang us.
    let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
    let mut conn = match Connection::from_stream(stream) {
        Ok(c) => c,
        Err(e) => return Probe::Nothing(e),
    };
    let Some(secret) = secret else {
        // Say who is there without saying anything about us: a hello holds
        // a random nonce, the version and the role only.
        let hello = dmtcp_protocol::hello(Role::Command, auth::fresh_nonce());
        if let Err(e) = conn.send(&ToCoordinator::Hello(hello)) {
            return Probe::NotCoordinator(e.to_string());
        }
        return match auth::read_preauth::<_, FromCoordinator>(&mut conn.reader) {
            Ok(FromCoordinator::Challenge { .. }) => {
                Probe::Unproven("we have no secret for it".into())
            }
            Ok(FromCoordinator::Error(e)) => Probe::Refused(auth::printable(&e)),
            Ok(_) => Probe::NotCoordinator("unexpected answer to a hello".into()),
            Err(e) => Probe::NotCoordinator(e.to_string()),
        };
    };
    match auth::client_handshake(&mut conn.reader, &mut conn.writer, &secret, Role::Command) {
        Ok(_) => {}
        Err(HandshakeError::Refused(e)) => return Probe::Refused(e),
        Err(e @ HandshakeError::NotProven) => return Probe::Unproven(e.to_string()),
        Err(e) => return Probe::NotCoordinator(e.to_string()),
    }
    if let Err(e) = conn.send(&ToCoordinator::Request(Request::Status)) {
        return Probe::NotCoordinator(e.to_string());
    }
    match conn.recv() {
        Ok(FromCoordinator::Reply(Reply::Status(_) | Reply::StatusProgress { .. })) => {
            Probe::Coordinator(secret)
        }
        Ok(_) => Probe::NotCoordinator("unexpected answer to a status request".into()),
        Err(e) => Probe::NotCoordinator(e.to_string()),
    }
}

/// Returns a running coordinator at `addr` (unless `force_new`), or starts one
/// in the background and returns its address (the picked port when `addr.port`
/// is 0) and secret. A coordinator that does not prove it knows our secret
/// is never used: that is a one-line error.
pub fn ensure_coordinator(
    addr: &CoordAddr,
    force_new: bool,
    opts: &StartOptions,
) -> anyhow::Result<(CoordAddr, String)> {
    // An unsafe runtime directory is refused before anything else.
    let secret_path = secret_file(addr)?;
    if !force_new && addr.port != 0 {
        let secret = load_secret(addr)?;
        match probe(addr, secret) {
            Probe::Coordinator(secret) => return Ok((addr.clone(), secret)),
            Probe::Refused(e) => bail!(
                "a coordinator at {addr} refused us ({e}); set DMTCP_SECRET or check {}",
                secret_path.display()
            ),
            Probe::Unproven(e) => bail!(
                "refusing the coordinator at {addr}: it did not prove it knows this user's secret ({e}); another user's or a fake coordinator holds port {}",
                addr.port
            ),
            Probe::NotCoordinator(e) => bail!(
                "coordinator port {} is in use by something that is not a DMTCP coordinator ({e})",
                addr.port
            ),
            Probe::Nothing(e) => tracing::debug!("no coordinator at {addr} ({e}); starting one"),
        }
    }
    start_coordinator(addr, opts)
}

fn coordinator_binary() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // Test binaries live in target/debug/deps; the coordinator one level up.
            for d in [Some(dir), dir.parent()].into_iter().flatten() {
                let cand = d.join("dmtcp-coordinator");
                if cand.is_file() {
                    return cand;
                }
            }
        }
    }
    PathBuf::from("dmtcp-coordinator")
}

fn start_coordinator(addr: &CoordAddr, opts: &StartOptions) -> anyhow::Result<(CoordAddr, String)> {
    let secret = format!("{}{}", crate::random_hex16(), crate::random_hex16());
    let dir = tmpdir()?;
    let port_file = dir.join(format!(
        "coord-start-{}-{}.port",
        std::process::id(),
        crate::random_hex16()
    ));
    // The secret goes to the daemon in a file of the private runtime
    // directory (removed by the daemon once read), not in its environment:
    // no process's argv or environment holds it (ssh contagion shares the
    // runtime directory with other hosts, issue 16).
    let secret_handoff = dir.join(format!(
        "coord-start-{}-{}.secret",
        std::process::id(),
        crate::random_hex16()
    ));
    runtime::write_private(&secret_handoff, secret.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", secret_handoff.display()))?;
    let bin = coordinator_binary();
    let mut cmd = Command::new(&bin);
    cmd.arg("--daemon")
        .arg("--port")
        .arg(addr.port.to_string())
        .arg("--port-file")
        .arg(&port_file)
        .arg("--listen-host")
        .arg(&addr.host)
        .env_remove("DMTCP_SECRET")
        .env("DMTCP_SECRET_FILE", &secret_handoff)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if opts.exit_on_last {
        cmd.arg("--exit-on-last");
    }
    if let Some(d) = &opts.ckpt_dir {
        cmd.arg("--ckpt-dir").arg(d);
    }
    if let Some(i) = opts.interval {
        cmd.arg("--interval").arg(i.to_string());
    }
    // With logging on, the daemon keeps stderr: do not give it a pipe nobody reads.
    let logging = std::env::var_os("DMTCP_LOG").is_some();
    cmd.stderr(if logging {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    let child = cmd.spawn();
    if child.is_err() {
        let _ = std::fs::remove_file(&secret_handoff);
    }
    let mut child = child.with_context(|| format!("cannot start coordinator {}", bin.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .context("waiting for the coordinator to start")?
        {
            // The daemon removed it after reading; a failed one may not have.
            let _ = std::fs::remove_file(&secret_handoff);
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&port_file);
            bail!(
                "coordinator did not start within {} s",
                START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = std::fs::remove_file(&port_file);
        let line = err
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        if line.is_empty() {
            bail!("coordinator failed to start ({status})");
        }
        bail!("{line}");
    }
    let port = wait_port_file(&port_file, deadline)?;
    // The coordinator made the port file in our private directory; it is
    // read only if still ours and private.
    let _ = std::fs::remove_file(&port_file);
    Ok((
        CoordAddr {
            host: addr.host.clone(),
            port,
        },
        secret,
    ))
}

fn wait_port_file(path: &Path, deadline: Instant) -> anyhow::Result<u16> {
    loop {
        if let Some(s) = runtime::read_private(path)? {
            if let Ok(p) = s.trim().parse::<u16>() {
                return Ok(p);
            }
        }
        if Instant::now() > deadline {
            bail!("coordinator did not write its port file {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn connect_tcp(addr: &CoordAddr) -> std::io::Result<TcpStream> {
    let mut last = None;
    for sa in (addr.host.as_str(), addr.port).to_socket_addrs()? {
        match connect_reusable(&sa, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))
}

/// A TCP connection to `sa` from a socket that has `SO_REUSEADDR` before
/// it connects. The kernel gives one ephemeral port to several connections
/// with different peers, so a tool's connection to the coordinator may
/// share its local port with a connection of the program; when the tool's
/// end closes first, its TIME_WAIT would keep the restarted program's
/// connection from binding that port again (the program's own sockets get
/// `SO_REUSEADDR` at checkpoint for the same reason). With the option on
/// both, the port is free for the restart at once.
pub fn connect_reusable(
    sa: &std::net::SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use nix::errno::Errno;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{
        self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    };
    use std::os::fd::{AsFd, AsRawFd};

    let family = if sa.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let r = match sa {
        std::net::SocketAddr::V4(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn::from(*a)),
        std::net::SocketAddr::V6(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn6::from(*a)),
    };
    match r {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {sa} timed out"),
                    ));
                }
                let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) | Err(Errno::EINTR) => continue,
                    Ok(_) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let err = socket::getsockopt(&fd, sockopt::SocketError)?;
            if err != 0 {
                return Err(std::io::Error::from_raw_os_error(err));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Short cause of a connect failure ("connection refused", "timed out").
fn io_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => {
            let s = e.to_string();
            // "Connection reset by peer (os error 104)" -> "connection reset by peer"
            let s = s.split(" (os error").next().unwrap_or(&s).to_string();
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_lowercase().chain(c).collect())
                .unwrap_or(s)
        }
    }
}

/// One connection to a coordinator.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// The coordinator's protocol minor version (from the handshake).
    minor: u16,
}

impl Connection {
    fn from_stream(stream: TcpStream) -> std::io::Result<Connection> {
        let w = stream.try_clone()?;
        Ok(Connection {
            reader: BufReader::new(stream),
            writer: BufWriter::new(w),
            minor: 0,
        })
    }

    /// Connects and runs the mutual authentication ([`auth`]) as `role`;
    /// returns the Welcome frame (its computation id checked). Nothing but a
    /// random hello reaches a coordinator that has not proved `secret`.
    pub fn connect(
        addr: &CoordAddr,
        secret: &str,
        role: Role,
    ) -> anyhow::Result<(Connection, FromCoordinator)> {
        if secret.is_empty() {
            let file = secret_file(addr)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| e.to_string());
            bail!("no secret for the coordinator at {addr}: set DMTCP_SECRET or create {file}");
        }
        let stream = connect_tcp(addr)
            .map_err(|e| anyhow!("no coordinator at {addr} ({})", io_cause(&e)))?;
        let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let mut conn = Connection::from_stream(stream)
            .with_context(|| format!("cannot use connection to {addr}"))?;
        let w = match auth::client_handshake(&mut conn.reader, &mut conn.writer, secret, role) {
            Ok(w) => w,
            Err(HandshakeError::Refused(e)) => {
                bail!("coordinator at {addr} refused the connection: {e}")
            }
            Err(e @ HandshakeError::NotProven) => {
                bail!("refusing the coordinator at {addr}: {e}")
            }
            Err(e) => bail!("handshake with coordinator at {addr} failed: {e}"),
        };
        let _ = conn.stream().set_read_timeout(None);
        conn.minor = w.minor;
        Ok((
            conn,
            FromCoordinator::Welcome {
                computation: w.computation,
                generation: w.generation,
                ckpt_dir: w.ckpt_dir,
            },
        ))
    }

    pub fn send(&mut self, msg: &ToCoordinator) -> Result<(), ProtocolError> {
        write_frame(&mut self.writer, msg)
    }

    pub fn recv(&mut self) -> Result<FromCoordinator, ProtocolError> {
        read_frame(&mut self.reader)
    }

    /// A second handle on the same socket (read in one thread, write in another).
    /// Only the handle that reads may have buffered input; clone before reading.
    pub fn try_clone(&self) -> std::io::Result<Connection> {
        let mut c = Connection::from_stream(self.reader.get_ref().try_clone()?)?;
        c.minor = self.minor;
        Ok(c)
    }

    /// The coordinator's protocol minor version: 2.1 frames
    /// (`ToCoordinator::Launch`, `Warnings`) only go to 1 or more.
    pub fn coordinator_minor(&self) -> u16 {
        self.minor
    }

    /// The underlying socket (for timeouts, shutdown, polling).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Closes both directions; a thread blocked in [`Connection::recv`] wakes up.
    pub fn shutdown(&self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }
}

/// Connects as a command, sends `req`, and returns the (final) reply.
/// A blocking checkpoint waits as long as the checkpoint takes.
pub fn request(addr: &CoordAddr, secret: &str, req: Request) -> anyhow::Result<Reply> {
    let (mut conn, _) = Connection::connect(addr, secret, Role::Command)?;
    if matches!(req, Request::CheckpointWith { .. }) && conn.minor < 6 {
        bail!(
            "the coordinator at {addr} speaks protocol {}.{}; --precopy needs 2.6 (a newer dmtcp-coordinator)",
            dmtcp_protocol::MAJOR,
            conn.minor
        );
    }
    conn.send(&ToCoordinator::Request(req.clone()))
        .with_context(|| format!("sending {req:?} to coordinator at {addr}"))?;
    loop {
        match conn.recv() {
            Ok(FromCoordinator::Reply(r)) => return Ok(r),
            Ok(FromCoordinator::Error(e)) => bail!("coordinator at {addr}: {e}"),
            Ok(other) => tracing::debug!("ignoring {other:?} while waiting for a reply"),
            Err(ProtocolError::Closed) => {
                bail!("coordinator at {addr} closed the connection before replying")
            }
            Err(e) => bail!("no reply from coordinator at {addr}: {e}"),
        }
    }
}
