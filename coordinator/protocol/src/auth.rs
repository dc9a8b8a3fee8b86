//! Mutual authentication: the coordinator and each client prove to one
//! another that they know the computation's secret, without sending it.
//!
//! ```text
//! client                                         coordinator
//!   Hello { magic, version, nonce_c, role }  ->
//!                                            <-  Challenge { nonce_s, proof_s }
//!   (checks proof_s; on mismatch closes, having revealed nothing)
//!   Auth { proof_c }                         ->
//!                                            <-  [Version {..}] Welcome {..} | Error
//! ```
//!
//! `proof_s = HMAC-SHA256(secret, "dmtcp-rs/2 coordinator\0" || T)` and
//! `proof_c = HMAC-SHA256(secret, "dmtcp-rs/2 client\0" || T)`, where the
//! transcript `T` is the length-prefixed bincode encoding of the client's
//! `Hello` (its nonce and role included) followed by `nonce_s`. The labels
//! differ, so neither side's proof can be replayed as the other's; both nonces
//! are fresh, so no proof can be replayed on another connection. Comparisons
//! are constant-time ([`Mac::verify_slice`]).

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{read_frame, write_frame, FromCoordinator, Hello, ProtocolError, Role, ToCoordinator};

/// A random challenge.
pub type Nonce = [u8; 32];
/// An HMAC-SHA256 proof.
pub type Proof = [u8; 32];

/// Longest frame a client may send before it is authenticated (the Hello and
/// the Auth frame): a Hello with a 255-byte host name and a computation id
/// fits easily; anything longer is refused unread.
pub const MAX_PREAUTH_FRAME: u32 = 512;

/// Shortest secret accepted when the coordinator listens beyond loopback.
pub const MIN_SECRET_LEN: usize = 16;

const COORDINATOR_LABEL: &[u8] = b"dmtcp-rs/2 coordinator\0";
const CLIENT_LABEL: &[u8] = b"dmtcp-rs/2 client\0";

/// 32 bytes from the kernel's random generator.
pub fn fresh_nonce() -> Nonce {
    let mut n = [0u8; 32];
    // getrandom only fails when the kernel has no getrandom(2) and no
    // /dev/urandom; a nonce of zeros would still be refused by nobody, so
    // stop rather than authenticate with a predictable challenge.
    getrandom::fill(&mut n).expect("the kernel's random generator is unavailable");
    n
}

fn mac(secret: &str, label: &[u8], hello: &Hello, server_nonce: &Nonce) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    let encoded = bincode::serde::encode_to_vec(hello, bincode::config::standard())
        .expect("a Hello always encodes");
    m.update(label);
    m.update(&(encoded.len() as u64).to_le_bytes());
    m.update(&encoded);
    m.update(server_nonce);
    m
}

/// The coordinator's proof for the connection that sent `hello`.
pub fn coordinator_proof(secret: &str, hello: &Hello, server_nonce: &Nonce) -> Proof {
    mac(secret, COORDINATOR_LABEL, hello, server_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// The client's proof for the connection on which it sent `hello`.
pub fn client_proof(secret: &str, hello: &Hello, server_nonce: &Nonce) -> Proof {
    mac(secret, CLIENT_LABEL, hello, server_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is the coordinator's proof (constant-time).
pub fn verify_coordinator(secret: &str, hello: &Hello, server_nonce: &Nonce, proof: &[u8]) -> bool {
    mac(secret, COORDINATOR_LABEL, hello, server_nonce)
        .verify_slice(proof)
        .is_ok()
}

/// Whether `proof` is the client's proof (constant-time).
pub fn verify_client(secret: &str, hello: &Hello, server_nonce: &Nonce, proof: &[u8]) -> bool {
    mac(secret, CLIENT_LABEL, hello, server_nonce)
        .verify_slice(proof)
        .is_ok()
}

/// Why a client's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "no secret for this coordinator: set DMTCP_SECRET or start the coordinator as this user"
    )]
    NoSecret,
    #[error("it did not prove it knows the computation's secret (not our coordinator, or another secret); nothing was sent to it")]
    NotProven,
    #[error("it refused the connection: {0}")]
    Refused(String),
    #[error("unexpected handshake answer: {0}")]
    Unexpected(String),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// What the coordinator said once both sides were authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Computation id, already checked by [`check_computation_id`] (empty
    /// when a command connects to a coordinator without supervisors).
    pub computation: String,
    pub generation: u64,
    /// The coordinator's checkpoint directory, as it says: for display and,
    /// after [`crate::runtime::checked_ckpt_dir`], as a default.
    pub ckpt_dir: String,
    /// The coordinator's protocol minor version: from the `Version` frame a
    /// 2.1 coordinator sends before `Welcome` to clients of minor 1 or
    /// more; 0 when `Welcome` came alone.
    pub minor: u16,
}

/// Runs the client side of the handshake on a fresh connection. Nothing but
/// the Hello (a random nonce, the version and the role) is sent before the
/// coordinator has proved it knows `secret`; an empty secret is refused
/// before anything is sent.
pub fn client_handshake<R: Read, W: Write>(
    r: &mut R,
    w: &mut W,
    secret: &str,
    role: Role,
) -> Result<Welcome, HandshakeError> {
    if secret.is_empty() {
        return Err(HandshakeError::NoSecret);
    }
    let hello = crate::hello(role, fresh_nonce());
    write_frame(w, &ToCoordinator::Hello(hello.clone()))?;
    let server_nonce = match read_preauth::<_, FromCoordinator>(r)? {
        FromCoordinator::Challenge { nonce, proof } => {
            if !verify_coordinator(secret, &hello, &nonce, &proof) {
                return Err(HandshakeError::NotProven);
            }
            nonce
        }
        FromCoordinator::Error(e) => return Err(HandshakeError::Refused(printable(&e))),
        other => return Err(HandshakeError::Unexpected(variant(&other).into())),
    };
    let proof = client_proof(secret, &hello, &server_nonce);
    write_frame(w, &ToCoordinator::Auth { proof })?;
    let mut minor = 0;
    let mut frame = read_frame::<_, FromCoordinator>(r)?;
    if let FromCoordinator::Version { minor: m } = frame {
        minor = m;
        frame = read_frame::<_, FromCoordinator>(r)?;
    }
    match frame {
        FromCoordinator::Welcome {
            computation,
            generation,
            ckpt_dir,
        } => {
            if !computation.is_empty() {
                check_computation_id(&computation).map_err(HandshakeError::Unexpected)?;
            }
            Ok(Welcome {
                computation,
                generation,
                ckpt_dir,
                minor,
            })
        }
        FromCoordinator::Error(e) => Err(HandshakeError::Refused(printable(&e))),
        other => Err(HandshakeError::Unexpected(variant(&other).into())),
    }
}

/// Reads a frame from an unauthenticated peer: at most
/// [`MAX_PREAUTH_FRAME`] bytes.
pub fn read_preauth<R: Read, T: serde::de::DeserializeOwned>(
    r: &mut R,
) -> Result<T, ProtocolError> {
    crate::frame::read_limited::<{ MAX_PREAUTH_FRAME as usize }, R, T>(r)
}

/// A string from an unauthenticated peer, made safe to print on one line.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn variant(m: &FromCoordinator) -> &'static str {
    match m {
        FromCoordinator::Welcome { .. } => "Welcome",
        FromCoordinator::Error(_) => "Error",
        FromCoordinator::Reply(_) => "Reply",
        FromCoordinator::Barrier { .. } => "Barrier",
        FromCoordinator::Abort { .. } => "Abort",
        FromCoordinator::Kill => "Kill",
        FromCoordinator::Published { .. } => "Published",
        FromCoordinator::Challenge { .. } => "Challenge",
        FromCoordinator::Commit { .. } => "Commit",
        FromCoordinator::Version { .. } => "Version",
        FromCoordinator::HookGo { .. } => "HookGo",
        FromCoordinator::RestartGo { .. } => "RestartGo",
        FromCoordinator::Halt => "Halt",
        FromCoordinator::Precopy { .. } => "Precopy",
    }
}

/// A computation id goes into image file names: 1 to 64 ASCII letters,
/// digits, `-` or `_` (ours are 16 hex digits).
pub fn check_computation_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "computation id {:?} is not 1-64 letters, digits, '-' or '_'",
            printable(id)
        ))
    }
}

/// A name that becomes one path component (a program name, a host name):
/// 1 to 255 bytes, printable, no `/`, not `.` or `..`.
pub fn check_file_name(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} is not a file name (1-255 printable bytes, no '/', not '.' or '..')",
            printable(s)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sup() -> Role {
        Role::Supervisor(crate::SupervisorHello {
            host: "h".into(),
            pid: 1,
            computation: None,
            generation: 0,
        })
    }

    #[test]
    fn proofs_differ_by_side_secret_and_nonce() {
        let h = crate::hello(sup(), [1; 32]);
        let n = [2; 32];
        let c = coordinator_proof("s3cret", &h, &n);
        assert!(verify_coordinator("s3cret", &h, &n, &c));
        assert!(!verify_client("s3cret", &h, &n, &c), "labels must differ");
        assert!(!verify_coordinator("s3cre", &h, &n, &c));
        assert!(!verify_coordinator("s3cret", &h, &[3; 32], &c));
        let mut h2 = h.clone();
        h2.role = Role::Command;
        assert!(!verify_coordinator("s3cret", &h2, &n, &c), "role is bound");
        assert!(!verify_coordinator("s3cret", &h, &n, &c[..31]));
        let p = client_proof("s3cret", &h, &n);
        assert!(verify_client("s3cret", &h, &n, &p));
    }

    /// A fake coordinator that does not know the secret gets the Hello and
    /// nothing else.
    #[test]
    fn unproven_coordinator_gets_nothing() {
        for answer in [
            FromCoordinator::Challenge {
                nonce: [0; 32],
                proof: [0; 32],
            },
            FromCoordinator::Welcome {
                computation: "x".into(),
                generation: 0,
                ckpt_dir: "/".into(),
            },
            FromCoordinator::Kill,
        ] {
            let mut input = Vec::new();
            write_frame(&mut input, &answer).unwrap();
            let mut out = Vec::new();
            let err = client_handshake(&mut Cursor::new(input), &mut out, "s", sup()).unwrap_err();
            assert!(
                matches!(
                    err,
                    HandshakeError::NotProven | HandshakeError::Unexpected(_)
                ),
                "{err}"
            );
            let mut cur = Cursor::new(out);
            let first: ToCoordinator = read_frame(&mut cur).unwrap();
            assert!(matches!(first, ToCoordinator::Hello(_)));
            assert!(
                matches!(
                    read_frame::<_, ToCoordinator>(&mut cur),
                    Err(ProtocolError::Closed)
                ),
                "nothing after the hello"
            );
        }
    }

    #[test]
    fn empty_secret_sends_nothing() {
        let mut out = Vec::new();
        let err = client_handshake(&mut Cursor::new(Vec::new()), &mut out, "", sup()).unwrap_err();
        assert!(matches!(err, HandshakeError::NoSecret));
        assert!(out.is_empty());
    }

    #[test]
    fn names() {
        assert!(check_computation_id("0123456789abcdef").is_ok());
        for bad in [
            "",
            "x/../../rootonly/pwn",
            "..",
            "a b",
            "a\0b",
            &"a".repeat(65),
        ] {
            assert!(check_computation_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_file_name("program", "a.out").is_ok());
        for bad in ["", ".", "..", "a/b", "a\nb", &"a".repeat(256)] {
            assert!(check_file_name("program", bad).is_err(), "{bad:?}");
        }
    }
}
