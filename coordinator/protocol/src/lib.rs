//! Wire protocol between the coordinator, supervisors and `dmtcp-command`.
//!
//! A connection carries frames ([`frame`]): a little-endian `u32` length and a
//! bincode 2 payload. The client's first frame is a [`Hello`]; see
//! `docs/protocol.md` for the whole conversation.
pub mod auth;
pub mod frame;
pub mod messages;
pub mod runtime;

pub use frame::{
    decode_payload, encode_frame, read_frame, read_local_frame, write_frame, write_local_frame,
    ProtocolError,
};
pub use messages::*;

/// Magic at the start of every [`Hello`].
pub const MAGIC: [u8; 8] = *b"DMTCPRS\0";
/// Protocol major version: bumped when a message changes incompatibly.
/// 2: mutual authentication (the secret never crosses the wire).
pub const MAJOR: u16 = 2;
/// Protocol minor version: bumped when variants are added at the end of an enum.
/// 1: launch ids, checkpoint warnings, generations in checkpoint replies
/// (`Version`, `Launch`, `Warnings`, `Launches`, `Committed`, `Started`).
/// 2: checkpoint progress (`ToCoordinator::Progress`, `Reply::StatusProgress`);
/// atomic integer operations of the name service (`KvOp`).
/// 3: plugin global barriers across supervisors (`HookBarrier`, `HookGo`,
/// `RestartBarrier`, `RestartGo`).
/// 4: RESTART barriers across separate `dmtcp-restart` commands
/// (`RestartSetBarrier`).
/// 5: kill in two steps: every launch stopped before any is killed
/// (`Halt`, `Halted`).
/// 6: a checkpoint with pre-copy on request (`Request::CheckpointWith`,
/// `FromCoordinator::Precopy`).
pub const MINOR: u16 = 6;
/// Name service bounds (the coordinator ignores a publication beyond
/// them): longest key, longest value, total bytes and number of keys.
pub const NAME_MAX_KEY: usize = 64 << 10;
pub const NAME_MAX_VALUE: usize = 4 << 20;
pub const NAME_MAX_TOTAL: usize = 256 << 20;
pub const NAME_MAX_KEYS: usize = 1 << 20;
/// Largest frame payload either side accepts, in bytes.
pub const MAX_FRAME: u32 = 16 << 20;

/// The handshake a client sends first, speaking this protocol version.
pub fn hello(role: Role, nonce: auth::Nonce) -> Hello {
    Hello {
        magic: MAGIC,
        major: MAJOR,
        minor: MINOR,
        nonce,
        role,
    }
}

/// Checks the magic and version at the start of a first frame's payload
/// (the `Hello` variant index, magic, major, minor), before the rest is
/// decoded: a client of another major version gets a version error, not
/// a decode error.
pub fn check_hello_prefix(payload: &[u8]) -> Result<(), String> {
    let cfg = bincode::config::standard();
    let ((variant, magic, major, minor), _): ((u32, [u8; 8], u16, u16), usize) =
        bincode::serde::decode_from_slice(payload, cfg)
            .map_err(|_| "bad hello: not a dmtcp client".to_string())?;
    if variant != 0 || magic != MAGIC {
        return Err("bad magic: not a dmtcp client".to_string());
    }
    if major != MAJOR {
        return Err(format!(
            "protocol version {major}.{minor} is not supported (coordinator speaks {MAJOR}.{MINOR})"
        ));
    }
    Ok(())
}

/// Whether the coordinator accepts `h` before authentication: same magic,
/// same major version (any minor: peers ignore nothing, and new variants
/// only appear at the end of an enum, which the older side reports as a
/// decode error), and well-formed names in a supervisor's role.
pub fn check_hello(h: &Hello) -> Result<(), String> {
    if h.magic != MAGIC {
        return Err("bad magic: not a dmtcp client".to_string());
    }
    if h.major != MAJOR {
        return Err(format!(
            "protocol version {}.{} is not supported (coordinator speaks {}.{})",
            h.major, h.minor, MAJOR, MINOR
        ));
    }
    if let Role::Supervisor(s) = &h.role {
        if let Some(c) = &s.computation {
            auth::check_computation_id(c)?;
        }
        auth::check_file_name("host name", &s.host)?;
    }
    Ok(())
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
        assert_eq!(check_hello(&hello(sup(), [0; 32])), Ok(()));
    }

    #[test]
    fn newer_minor_accepted() {
        let mut h = hello(Role::Command, [0; 32]);
        h.minor = MINOR + 5;
        assert_eq!(check_hello(&h), Ok(()));
    }

    #[test]
    fn wrong_magic_refused() {
        let mut h = hello(Role::Command, [0; 32]);
        h.magic = *b"DMTCP\0\0\0";
        assert!(check_hello(&h).unwrap_err().contains("magic"));
    }

    #[test]
    fn wrong_major_refused() {
        let mut h = hello(Role::Command, [0; 32]);
        h.major = MAJOR + 1;
        h.minor = 0;
        let e = check_hello(&h).unwrap_err();
        assert!(e.contains("protocol version 3.0"), "{e}");
    }

    #[test]
    fn bad_computation_id_refused() {
        let h = hello(
            Role::Supervisor(SupervisorHello {
                host: "h".into(),
                pid: 1,
                computation: Some("x/../../rootonly/pwn".into()),
                generation: 0,
            }),
            [0; 32],
        );
        assert!(check_hello(&h).unwrap_err().contains("computation id"));
    }

    /// A version 1 client's hello (magic, 1, 0, secret string, role) gets a
    /// version error from its prefix.
    #[test]
    fn version_1_hello_gets_a_version_error() {
        #[derive(serde::Serialize)]
        struct V1 {
            magic: [u8; 8],
            major: u16,
            minor: u16,
            secret: String,
        }
        #[derive(serde::Serialize)]
        enum To {
            Hello(V1),
        }
        let payload = bincode::serde::encode_to_vec(
            To::Hello(V1 {
                magic: MAGIC,
                major: 1,
                minor: 0,
                secret: "s".into(),
            }),
            bincode::config::standard(),
        )
        .unwrap();
        let e = check_hello_prefix(&payload).unwrap_err();
        assert!(e.contains("protocol version 1.0 is not supported"), "{e}");
        let ok = bincode::serde::encode_to_vec(
            ToCoordinator::Hello(hello(Role::Command, [0; 32])),
            bincode::config::standard(),
        )
        .unwrap();
        assert_eq!(check_hello_prefix(&ok), Ok(()));
        assert!(check_hello_prefix(b"GET / HTTP/1.0").is_err());
    }
}
