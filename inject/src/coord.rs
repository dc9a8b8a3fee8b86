//! The application API's one-shot connection to the coordinator (the same
//! conversation as `dmtcp-command -bc`: hello as a command, one blocking
//! checkpoint request, one final reply).

use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use dmtcp_protocol::auth::{client_handshake, HandshakeError};
use dmtcp_protocol::{read_frame, write_frame, FromCoordinator, Reply, Request, Role};

use crate::state::{Published, StatePage};

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 7779;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the supervisor to publish the coordinator (right
/// after launch or restart) when the environment does not name one.
const PUBLISH_WAIT: Duration = Duration::from_secs(3);
/// The same for the name service calls of plugins.
const KV_PUBLISH_WAIT: Duration = Duration::from_secs(20);

/// Where the coordinator is and how to prove we belong to the computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub secret: String,
}

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// `$DMTCP_SECRET`, else the coordinator's secret file in the private
/// runtime directory (the coordinator client's `load_secret`: a directory
/// or file that is not ours and private is not used).
fn secret_for(host: &str, port: u16) -> String {
    env_nonempty("DMTCP_SECRET")
        .or_else(|| {
            let f = dmtcp_protocol::runtime::secret_file(host, port).ok()?;
            dmtcp_protocol::runtime::read_private(&f).ok().flatten()
        })
        .unwrap_or_default()
}

fn from_env() -> Option<Target> {
    let port = env_nonempty("DMTCP_COORD_PORT")?.trim().parse().ok()?;
    let host = env_nonempty("DMTCP_COORD_HOST").unwrap_or_else(|| DEFAULT_HOST.into());
    let secret = secret_for(&host, port);
    Some(Target { host, port, secret })
}

fn from_published(p: Published) -> Target {
    let secret = if p.secret.is_empty() {
        secret_for(&p.host, p.port)
    } else {
        p.secret
    };
    Target {
        host: p.host,
        port: p.port,
        secret,
    }
}

/// The coordinator to talk to: the one the supervisor published in the
/// state page; else (first run only: after a restart the environment is the
/// old one) `DMTCP_COORD_HOST`/`DMTCP_COORD_PORT`; else wait briefly for the
/// supervisor's publication; else the environment or DMTCP's default.
pub fn find(st: &StatePage) -> Target {
    find_waiting(st, PUBLISH_WAIT)
}

/// [`find`], waiting up to `wait` for the supervisor's publication.
pub fn find_waiting(st: &StatePage, wait: Duration) -> Target {
    if let Some(p) = st.published() {
        return from_published(p);
    }
    let restarted = st.restarts.load(std::sync::atomic::Ordering::Acquire) > 0;
    if !restarted {
        if let Some(t) = from_env() {
            return t;
        }
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        if let Some(p) = st.published() {
            return from_published(p);
        }
    }
    from_env().unwrap_or_else(|| Target {
        host: DEFAULT_HOST.into(),
        port: DEFAULT_PORT,
        secret: secret_for(DEFAULT_HOST, DEFAULT_PORT),
    })
}

/// How a blocking checkpoint request ended.
#[derive(Debug)]
pub enum Outcome {
    /// The coordinator says the images are durable.
    Done,
    /// The coordinator refused or the checkpoint failed (reason).
    Failed(String),
    /// The connection broke while waiting: either the coordinator died, or
    /// this is a restarted process (its socket was not restored).
    Lost(String),
}

fn connect(t: &Target) -> Result<TcpStream, String> {
    let addrs = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("coordinator address {}:{}: {e}", t.host, t.port))?;
    let mut last = format!("no address for {}", t.host);
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("no coordinator at {}:{} ({last})", t.host, t.port))
}

/// Asks for a blocking checkpoint of the whole computation and waits for
/// the final reply. The socket is closed before returning.
pub fn checkpoint(t: &Target) -> Outcome {
    let stream = match connect(t) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e),
    };
    let mut w = match stream.try_clone() {
        Ok(s) => BufWriter::new(s),
        Err(e) => return Outcome::Failed(format!("socket: {e}")),
    };
    let mut r = BufReader::new(stream);
    // Mutual authentication: nothing but a random hello reaches a
    // coordinator that has not proved it knows the secret.
    let _ = r.get_ref().set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    match client_handshake(&mut r, &mut w, &t.secret, Role::Command) {
        Ok(_) => {}
        Err(HandshakeError::Refused(e)) => return Outcome::Failed(format!("refused: {e}")),
        Err(e) => return Outcome::Failed(format!("handshake: {e}")),
    }
    let _ = r.get_ref().set_read_timeout(None);
    let req = dmtcp_protocol::ToCoordinator::Request(Request::Checkpoint {
        blocking: true,
        incremental: false,
    });
    if let Err(e) = write_frame(&mut w, &req).and_then(|()| w.flush().map_err(Into::into)) {
        return Outcome::Failed(format!("sending the request: {e}"));
    }
    // The checkpoint happens here: this thread is frozen in the read below
    // (the kernel restarts the read after the ptrace stop).
    loop {
        match read_frame::<_, FromCoordinator>(&mut r) {
            Ok(FromCoordinator::Reply(Reply::CheckpointDone { .. } | Reply::Committed { .. })) => {
                return Outcome::Done
            }
            Ok(FromCoordinator::Reply(Reply::CheckpointFailed { reason, .. })) => {
                return Outcome::Failed(reason)
            }
            Ok(FromCoordinator::Reply(Reply::Error(e))) | Ok(FromCoordinator::Error(e)) => {
                return Outcome::Failed(e)
            }
            Ok(_) => continue,
            Err(e) => return Outcome::Lost(e.to_string()),
        }
    }
}

/// A kept connection for the name service (publish, query, integer
/// operations), made again when the coordinator changed or the connection
/// broke (after a restart it is `/dev/null`).
pub struct KvConn {
    target: Target,
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    /// The coordinator's protocol minor version.
    pub minor: u16,
    pub welcome: dmtcp_protocol::auth::Welcome,
}

static KV: std::sync::Mutex<Option<KvConn>> = std::sync::Mutex::new(None);

fn kv_connect(t: &Target) -> Result<KvConn, String> {
    let stream = connect(t)?;
    let w = BufWriter::new(stream.try_clone().map_err(|e| format!("socket: {e}"))?);
    let mut c = KvConn {
        target: t.clone(),
        r: BufReader::new(stream),
        w,
        minor: 0,
        welcome: dmtcp_protocol::auth::Welcome {
            computation: String::new(),
            generation: 0,
            ckpt_dir: String::new(),
            minor: 0,
        },
    };
    let _ = c.r.get_ref().set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let welcome = client_handshake(&mut c.r, &mut c.w, &t.secret, Role::Command)
        .map_err(|e| format!("coordinator {}:{}: {e}", t.host, t.port))?;
    let _ =
        c.r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(60)));
    c.minor = welcome.minor;
    c.welcome = welcome;
    Ok(c)
}

impl KvConn {
    fn send(&mut self, m: &dmtcp_protocol::ToCoordinator) -> Result<(), String> {
        write_frame(&mut self.w, m)
            .map_err(|e| e.to_string())
            .and_then(|()| self.w.flush().map_err(|e| e.to_string()))
    }

    /// Sends `m` and waits for the name service answer.
    pub fn ask(&mut self, m: &dmtcp_protocol::ToCoordinator) -> Result<Option<Vec<u8>>, String> {
        self.send(m)?;
        loop {
            match read_frame::<_, FromCoordinator>(&mut self.r).map_err(|e| e.to_string())? {
                FromCoordinator::Published { value, .. } => return Ok(value),
                FromCoordinator::Error(e) => return Err(e),
                _ => continue,
            }
        }
    }

    /// Sends `m` with no answer expected.
    pub fn tell(&mut self, m: &dmtcp_protocol::ToCoordinator) -> Result<(), String> {
        self.send(m)
    }
}

/// Runs `f` on the name service connection (made or made again as needed;
/// one retry on a fresh connection).
pub fn with_kv<T>(
    st: &StatePage,
    mut f: impl FnMut(&mut KvConn) -> Result<T, String>,
) -> Result<T, String> {
    // A plugin's first call may come right at start-up, before the
    // supervisor (busy: it publishes at most every 500 ms) has said where
    // the coordinator is: wait longer than dmtcp_checkpoint() does.
    let target = find_waiting(st, KV_PUBLISH_WAIT);
    let mut guard = KV.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_some_and(|c| c.target != target) {
        *guard = None;
    }
    if let Some(c) = guard.as_mut() {
        match f(c) {
            Ok(v) => return Ok(v),
            Err(_) => *guard = None,
        }
    }
    let mut c = kv_connect(&target)?;
    let r = f(&mut c);
    if r.is_ok() {
        *guard = Some(c);
    }
    r
}

impl KvConn {
    /// `Request::Status` on this connection.
    pub fn ask_status(&mut self) -> Result<dmtcp_protocol::Status, String> {
        self.send(&dmtcp_protocol::ToCoordinator::Request(Request::Status))?;
        loop {
            match read_frame::<_, FromCoordinator>(&mut self.r).map_err(|e| e.to_string())? {
                FromCoordinator::Reply(Reply::Status(s)) => return Ok(s),
                FromCoordinator::Reply(Reply::Error(e)) | FromCoordinator::Error(e) => {
                    return Err(e)
                }
                _ => continue,
            }
        }
    }
}

/// Closes the kept name service connection before a checkpoint captures
/// the process (a connection to the coordinator, outside the computation,
/// would be saved as a reset socket). `wait`: take the lock even if a
/// thread is using it (only while the program runs).
pub fn drop_kv(wait: bool) {
    let guard = if wait {
        Some(KV.lock().unwrap_or_else(|e| e.into_inner()))
    } else {
        KV.try_lock().ok()
    };
    if let Some(mut g) = guard {
        *g = None;
    }
}
