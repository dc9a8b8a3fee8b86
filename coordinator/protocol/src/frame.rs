//! Length-prefixed frames: `u32` little-endian payload length, then a bincode 2
//! (serde, standard config) payload of exactly that length.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Serialize};

use crate::MAX_FRAME;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("cannot encode frame: {0}")]
    Encode(String),
    #[error("connection closed")]
    Closed,
}

/// Limit of [`write_local_frame`]/[`read_local_frame`]: the private socket
/// between a supervisor and its nsinit carries whole restart plans, with
/// the saved queues of pipes and sockets (a TCP connection alone may hold
/// several MiB).
pub const LOCAL_FRAME_LIMIT: u32 = 1 << 30;

fn config<const L: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<L>()
}

/// Encodes `msg` as one frame and writes it (one `write_all`, then flush).
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    write_limited::<{ MAX_FRAME as usize }, W, T>(w, msg)
}

/// [`write_frame`] with [`LOCAL_FRAME_LIMIT`], for a trusted local peer.
pub fn write_local_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    write_limited::<{ LOCAL_FRAME_LIMIT as usize }, W, T>(w, msg)
}

/// [`read_frame`] with [`LOCAL_FRAME_LIMIT`], for a trusted local peer.
pub fn read_local_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, ProtocolError> {
    read_limited::<{ LOCAL_FRAME_LIMIT as usize }, R, T>(r)
}

fn write_limited<const L: usize, W: Write, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), ProtocolError> {
    let payload = bincode::serde::encode_to_vec(msg, config::<L>())
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    let len = payload.len() as u64;
    if len > L as u64 {
        return Err(ProtocolError::TooLarge {
            len,
            limit: L as u64,
        });
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&payload);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame and decodes it.
///
/// A clean end of stream before the first byte is [`ProtocolError::Closed`];
/// an end of stream inside a frame is an `UnexpectedEof` [`ProtocolError::Io`].
/// A length above [`MAX_FRAME`] is refused before anything is allocated, and a
/// payload with bytes left over after the message is [`ProtocolError::Decode`].
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, ProtocolError> {
    read_limited::<{ MAX_FRAME as usize }, R, T>(r)
}

pub(crate) fn read_limited<const L: usize, R: Read, T: DeserializeOwned>(
    r: &mut R,
) -> Result<T, ProtocolError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < len_buf.len() {
        match r.read(&mut len_buf[got..]) {
            Ok(0) if got == 0 => return Err(ProtocolError::Closed),
            Ok(0) => {
                return Err(ProtocolError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("truncated frame header ({got} of 4 bytes)"),
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len_buf);
    if len as usize > L {
        return Err(ProtocolError::TooLarge {
            len: len.into(),
            limit: L as u64,
        });
    }
    // Grow as bytes arrive, so a lying length costs at most what was sent.
    let mut payload = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut payload)?;
    if payload.len() != len as usize {
        return Err(ProtocolError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("truncated frame ({} of {len} bytes)", payload.len()),
        )));
    }
    decode_payload::<L, T>(&payload)
}

/// Decodes one whole frame payload (without its length prefix); bytes left
/// over after the message are an error.
pub fn decode_payload<const L: usize, T: DeserializeOwned>(
    payload: &[u8],
) -> Result<T, ProtocolError> {
    let (msg, used) = bincode::serde::decode_from_slice(payload, config::<L>())
        .map_err(|e| ProtocolError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(ProtocolError::Decode(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(msg)
}

/// One whole frame (length prefix and payload) as bytes, for writers that
/// cannot block.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = Vec::new();
    write_frame(&mut buf, msg)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use std::fmt::Debug;
    use std::io::Cursor;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(msg: T) {
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).unwrap();
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        let mut cur = Cursor::new(buf);
        let back: T = read_frame(&mut cur).unwrap();
        assert_eq!(back, msg);
        assert!(matches!(
            read_frame::<_, T>(&mut cur),
            Err(ProtocolError::Closed)
        ));
    }

    fn options() -> CheckpointOptions {
        CheckpointOptions {
            id: 7,
            generation: 3,
            dir: "/tmp/ck".into(),
            codec: "gzip".into(),
            incremental: true,
        }
    }

    fn image() -> ImageEntry {
        ImageEntry {
            path: "/tmp/ck/ckpt_a.dmtcp".into(),
            vpid: 1,
            prog: "a.out".into(),
            host: "node1".into(),
            size: 4096,
        }
    }

    fn proc_entry() -> ProcEntry {
        ProcEntry {
            vpid: 1,
            host_pid: 4242,
            prog: "a.out".into(),
            host: "node1".into(),
        }
    }

    #[test]
    fn round_trip_to_coordinator() {
        let sup = SupervisorHello {
            host: "node1".into(),
            pid: 99,
            computation: Some("0123456789abcdef".into()),
            generation: 4,
        };
        let reqs = [
            Request::Checkpoint {
                blocking: true,
                incremental: false,
            },
            Request::Checkpoint {
                blocking: false,
                incremental: false,
            },
            Request::Status,
            Request::List,
            Request::Kill,
            Request::Quit,
            Request::SetInterval(60),
        ];
        round_trip(ToCoordinator::Hello(hello(Role::Supervisor(sup), [7; 32])));
        round_trip(ToCoordinator::Hello(hello(Role::Command, [0; 32])));
        round_trip(ToCoordinator::Auth { proof: [9; 32] });
        round_trip(ToCoordinator::ImagesDurable {
            id: 2,
            images: vec![image()],
        });
        for r in reqs {
            round_trip(ToCoordinator::Request(r));
        }
        round_trip(ToCoordinator::Processes(vec![proc_entry(), proc_entry()]));
        for phase in Phase::ALL {
            round_trip(ToCoordinator::Reached { id: 1, phase });
        }
        round_trip(ToCoordinator::ImagesWritten {
            id: 1,
            images: vec![image()],
        });
        round_trip(ToCoordinator::CheckpointFailed {
            id: 1,
            reason: "disk full".into(),
        });
        round_trip(ToCoordinator::Publish {
            key: b"k".to_vec(),
            value: vec![0, 1, 255],
        });
        round_trip(ToCoordinator::Query { key: b"k".to_vec() });
        round_trip(ToCoordinator::Exited { status: -9 });
    }

    #[test]
    fn round_trip_from_coordinator() {
        let status = Status {
            computation: "c".into(),
            num_processes: 2,
            num_supervisors: 1,
            state: "RUNNING".into(),
            generation: 1,
            interval: 0,
            ckpt_dir: "/d".into(),
            last_images: vec![image()],
        };
        round_trip(FromCoordinator::Welcome {
            computation: "c".into(),
            generation: 2,
            ckpt_dir: "/d".into(),
        });
        round_trip(FromCoordinator::Error("wrong secret".into()));
        round_trip(FromCoordinator::Challenge {
            nonce: [1; 32],
            proof: [2; 32],
        });
        round_trip(FromCoordinator::Commit { id: 3 });
        for r in [
            Reply::Ok,
            Reply::Status(status),
            Reply::List(vec![proc_entry()]),
            Reply::CheckpointDone {
                id: 1,
                images: vec![image()],
                millis: 12,
            },
            Reply::CheckpointStarted { id: 1 },
            Reply::CheckpointFailed {
                id: 1,
                reason: "x".into(),
            },
            Reply::Error("e".into()),
        ] {
            round_trip(FromCoordinator::Reply(r));
        }
        round_trip(FromCoordinator::Barrier {
            phase: Phase::Drain,
            options: options(),
        });
        round_trip(FromCoordinator::Abort {
            id: 1,
            reason: "r".into(),
        });
        round_trip(FromCoordinator::Kill);
        round_trip(FromCoordinator::Published {
            key: b"k".to_vec(),
            value: None,
        });
        round_trip(FromCoordinator::Published {
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
        });
    }

    #[test]
    fn phases_walk_in_order() {
        let mut p = Phase::Suspend;
        let mut seen = vec![p];
        while let Some(n) = p.next() {
            seen.push(n);
            p = n;
        }
        assert_eq!(seen, Phase::ALL);
    }

    #[test]
    fn oversized_frame_refused_without_reading_payload() {
        let mut buf = (MAX_FRAME + 1).to_le_bytes().to_vec();
        buf.extend_from_slice(&[0; 16]);
        let mut cur = Cursor::new(buf);
        let err = read_frame::<_, ToCoordinator>(&mut cur).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLarge { len, .. } if len == u64::from(MAX_FRAME) + 1)
        );
        assert_eq!(cur.position(), 4, "payload must not be read");
        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_frame::<_, ToCoordinator>(&mut Cursor::new(huge)),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn oversized_message_not_written() {
        let msg = ToCoordinator::Publish {
            key: vec![],
            value: vec![0; MAX_FRAME as usize + 1],
        };
        let mut buf = Vec::new();
        assert!(write_frame(&mut buf, &msg).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn truncated_frames() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToCoordinator::Query { key: vec![1; 32] }).unwrap();
        for cut in [1, 3, 4, 10, buf.len() - 1] {
            let err = read_frame::<_, ToCoordinator>(&mut Cursor::new(&buf[..cut])).unwrap_err();
            match err {
                ProtocolError::Io(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut {cut}")
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        assert!(matches!(
            read_frame::<_, ToCoordinator>(&mut Cursor::new(Vec::new())),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn garbage_refused() {
        let garbage = [0xffu8, 0xfe, 0x13, 0x37, 0x99, 0x00, 0x42];
        let mut buf = (garbage.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&garbage);
        assert!(matches!(
            read_frame::<_, ToCoordinator>(&mut Cursor::new(buf)),
            Err(ProtocolError::Decode(_))
        ));
        // An HTTP request is not a frame either (its "length" is far too big).
        assert!(
            read_frame::<_, ToCoordinator>(&mut Cursor::new(b"GET / HTTP/1.0\r\n\r\n")).is_err()
        );
    }

    #[test]
    fn trailing_bytes_refused() {
        let mut payload = bincode::serde::encode_to_vec(
            ToCoordinator::Exited { status: 0 },
            config::<{ MAX_FRAME as usize }>(),
        )
        .unwrap();
        payload.push(0);
        let mut buf = (payload.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&payload);
        let err = read_frame::<_, ToCoordinator>(&mut Cursor::new(buf)).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }
}

/// A fuzz test that runs in CI in bounded time: a seeded mutation loop over
/// real frames of every message, fed to every decoder a peer's bytes reach
/// (frames in both directions, the pre-authentication limit, the hello
/// prefix check). Nothing may panic; an error is the only other outcome.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::*;
    use std::io::Cursor;

    /// xorshift64*: deterministic, so a failing case reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn corpus() -> Vec<Vec<u8>> {
        let img = ImageEntry {
            path: "/ck/ckpt_a_0123456789abcdef-1.dmtcp".into(),
            vpid: 1,
            prog: "a".into(),
            host: "h".into(),
            size: 4096,
        };
        let proc_ = ProcEntry {
            vpid: 1,
            host_pid: 2,
            prog: "a".into(),
            host: "h".into(),
        };
        let sup = Role::Supervisor(SupervisorHello {
            host: "node1".into(),
            pid: 7,
            computation: Some("0123456789abcdef".into()),
            generation: 3,
        });
        let to = [
            ToCoordinator::Hello(hello(sup, [1; 32])),
            ToCoordinator::Hello(hello(Role::Command, [2; 32])),
            ToCoordinator::Auth { proof: [3; 32] },
            ToCoordinator::Request(Request::Checkpoint {
                blocking: true,
                incremental: true,
            }),
            ToCoordinator::Request(Request::SetInterval(5)),
            ToCoordinator::Processes(vec![proc_.clone(), proc_.clone()]),
            ToCoordinator::Reached {
                id: 1,
                phase: Phase::Drain,
            },
            ToCoordinator::ImagesWritten {
                id: 1,
                images: vec![img.clone()],
            },
            ToCoordinator::Publish {
                key: b"k".to_vec(),
                value: vec![1; 40],
            },
            ToCoordinator::Exited { status: -9 },
            ToCoordinator::ImagesDurable {
                id: 1,
                images: vec![],
            },
        ];
        let from = [
            FromCoordinator::Challenge {
                nonce: [4; 32],
                proof: [5; 32],
            },
            FromCoordinator::Welcome {
                computation: "0123456789abcdef".into(),
                generation: 2,
                ckpt_dir: "/ck".into(),
            },
            FromCoordinator::Barrier {
                phase: Phase::Checkpoint,
                options: CheckpointOptions {
                    id: 1,
                    generation: 2,
                    dir: "/ck".into(),
                    codec: "zstd".into(),
                    incremental: false,
                },
            },
            FromCoordinator::Reply(Reply::CheckpointDone {
                id: 1,
                images: vec![img],
                millis: 3,
            }),
            FromCoordinator::Reply(Reply::List(vec![proc_])),
            FromCoordinator::Kill,
            FromCoordinator::Commit { id: 1 },
            FromCoordinator::Error("e".into()),
        ];
        let mut v: Vec<Vec<u8>> = to.iter().map(|m| encode_frame(m).unwrap()).collect();
        v.extend(from.iter().map(|m| encode_frame(m).unwrap()));
        v
    }

    fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut b = corpus[rng.below(corpus.len())].clone();
        for _ in 0..1 + rng.below(3) {
            match rng.below(7) {
                0 if !b.is_empty() => {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                1 if !b.is_empty() => {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                2 => b.truncate(rng.below(b.len() + 1)),
                3 => {
                    let i = rng.below(b.len() + 1);
                    let extra: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                    b.splice(i..i, extra);
                }
                4 if b.len() >= 4 => {
                    // Lie about the length.
                    let len = match rng.below(4) {
                        0 => 0,
                        1 => u32::MAX,
                        2 => MAX_FRAME,
                        _ => rng.next() as u32 % 1024,
                    };
                    b[..4].copy_from_slice(&len.to_le_bytes());
                }
                5 => {
                    // Splice in a chunk of another frame.
                    let o = &corpus[rng.below(corpus.len())];
                    let s = rng.below(o.len());
                    let e = s + rng.below(o.len() - s + 1);
                    let i = rng.below(b.len() + 1);
                    b.splice(i..i, o[s..e].iter().copied());
                }
                _ => {
                    // Fix the length prefix to the (mutated) payload.
                    if b.len() >= 4 {
                        let len = (b.len() - 4) as u32;
                        b[..4].copy_from_slice(&len.to_le_bytes());
                    }
                }
            }
        }
        b
    }

    #[test]
    fn frame_decoders_survive_mutated_frames() {
        let corpus = corpus();
        // DMTCP_FUZZ_ITERATIONS / DMTCP_FUZZ_SEED for a long run
        // (docs/security.md); CI runs the default 20,000 with the fixed seed.
        let n: u64 = std::env::var("DMTCP_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let seed: u64 = std::env::var("DMTCP_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x00d1_7c90_5eed_0013);
        let mut rng = Rng(seed.max(1));
        let mut decoded = 0u32;
        for _ in 0..n {
            let b = mutate(&mut rng, &corpus);
            decoded += u32::from(read_frame::<_, ToCoordinator>(&mut Cursor::new(&b)).is_ok());
            decoded += u32::from(read_frame::<_, FromCoordinator>(&mut Cursor::new(&b)).is_ok());
            let _ = read_limited::<{ crate::auth::MAX_PREAUTH_FRAME as usize }, _, ToCoordinator>(
                &mut Cursor::new(&b),
            );
            if b.len() > 4 {
                let _ = check_hello_prefix(&b[4..]);
                if let Ok(ToCoordinator::Hello(h)) = decode_payload::<
                    { crate::auth::MAX_PREAUTH_FRAME as usize },
                    ToCoordinator,
                >(&b[4..])
                {
                    let _ = check_hello(&h);
                }
            }
            // Several frames back to back: the reader stays in step or stops.
            let mut cur = Cursor::new([b.as_slice(), &b].concat());
            for _ in 0..3 {
                if read_frame::<_, ToCoordinator>(&mut cur).is_err() {
                    break;
                }
            }
        }
        // The mutations keep some frames valid: the loop reaches past the
        // decoders' first checks.
        assert!(
            decoded > 100 || n < 20_000,
            "only {decoded} mutated frames decoded"
        );
    }
}
