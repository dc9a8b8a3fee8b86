//! Wire protocol between the coordinator, supervisors and `dmtcp-command`.
//!
//! A connection carries frames ([`frame`]): a little-endian `u32` length and a
//! bincode 2 payload. The client's first frame is a [`Hello`]; see
//! `docs/protocol.md` for the whole conversation.
pub mod frame;
pub mod messages;

pub use frame::{read_frame, read_local_frame, write_frame, write_local_frame, ProtocolError};
pub use messages::*;

/// Magic at the start of every [`Hello`].
pub const MAGIC: [u8; 8] = *b"DMTCPRS\0";
/// Protocol major version: bumped when a message changes incompatibly.
pub const MAJOR: u16 = 1;
/// Protocol minor version: bumped when variants are added at the end of an enum.
pub const MINOR: u16 = 0;
/// Largest frame payload either side accepts, in bytes.
pub const MAX_FRAME: u32 = 16 << 20;

/// The handshake a client sends first, speaking this protocol version.
pub fn hello(secret: &str, role: Role) -> Hello {
    Hello {
        magic: MAGIC,
        major: MAJOR,
        minor: MINOR,
        secret: secret.to_string(),
        role,
    }
}

/// Whether the coordinator accepts `h`: same magic, same major version (any
/// minor: peers ignore nothing, and new variants only appear at the end of an
/// enum, which the older side reports as a decode error), same secret.
pub fn check_hello(h: &Hello, secret: &str) -> Result<(), String> {
    if h.magic != MAGIC {
        return Err("bad magic: not a dmtcp client".to_string());
    }
    if h.major != MAJOR {
        return Err(format!(
            "protocol version {}.{} is not supported (coordinator speaks {}.{})",
            h.major, h.minor, MAJOR, MINOR
        ));
    }
    if !constant_time_eq(h.secret.as_bytes(), secret.as_bytes()) {
        return Err("wrong secret".to_string());
    }
    Ok(())
}

/// Compares without an early exit so the secret's prefix cannot be timed.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup() -> Role {
        Role::Supervisor(SupervisorHello {
            host: "h".into(),
            pid: 1,
            computation: None,
            generation: 0,
        })
    }

    #[test]
    fn hello_accepted() {
        assert_eq!(check_hello(&hello("s3cret", sup()), "s3cret"), Ok(()));
    }

    #[test]
    fn newer_minor_accepted() {
        let mut h = hello("s", Role::Command);
        h.minor = MINOR + 5;
        assert_eq!(check_hello(&h, "s"), Ok(()));
    }

    #[test]
    fn wrong_magic_refused() {
        let mut h = hello("s", Role::Command);
        h.magic = *b"DMTCP\0\0\0";
        assert!(check_hello(&h, "s").unwrap_err().contains("magic"));
    }

    #[test]
    fn wrong_major_refused() {
        let mut h = hello("s", Role::Command);
        h.major = MAJOR + 1;
        let e = check_hello(&h, "s").unwrap_err();
        assert!(e.contains("protocol version 2.0"), "{e}");
    }

    #[test]
    fn wrong_secret_refused() {
        let h = hello("a", Role::Command);
        assert_eq!(check_hello(&h, "b"), Err("wrong secret".to_string()));
        assert_eq!(check_hello(&h, "ab"), Err("wrong secret".to_string()));
    }
}
