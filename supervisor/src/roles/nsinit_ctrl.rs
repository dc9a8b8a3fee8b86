//! The supervisor's side of its conversation with `dmtcp-nsinit` while the
//! computation runs: typed requests ([`InitRequest`]) and answers
//! ([`InitReply`]) over the control socket.

use std::io;
use std::os::unix::net::UnixStream;

use dmtcp_image::IpcState;

use crate::roles::nsinit::{Identity, InitReply, InitRequest};

/// The supervisor's end of nsinit's control socket, for requests while the
/// computation runs.
pub struct NsinitCtrl(pub(super) UnixStream);

impl NsinitCtrl {
    fn ask(&mut self, req: &InitRequest) -> io::Result<InitReply> {
        dmtcp_protocol::write_frame(&mut self.0, req)
            .and_then(|()| dmtcp_protocol::read_frame(&mut self.0))
            .map_err(|e| io::Error::other(format!("talking to dmtcp-nsinit: {e}")))
    }

    /// The SysV IPC objects of the computation's IPC namespace, with the
    /// bytes of each shared memory segment.
    pub fn dump_ipc(&mut self) -> io::Result<(IpcState, crate::resources::sysv::ShmBytes)> {
        match self.ask(&InitRequest::DumpIpc)? {
            InitReply::Ipc => crate::resources::sysv::recv(&mut self.0),
            InitReply::Failed(m) => Err(io::Error::other(format!("reading SysV IPC: {m}"))),
            other => Err(io::Error::other(format!(
                "unexpected answer from dmtcp-nsinit: {other:?}"
            ))),
        }
    }

    /// Ties the computation's life to ours (`on`) or unties it
    /// (`InitRequest::Lifeline`).
    pub fn lifeline(&mut self, on: bool) -> io::Result<()> {
        match self.ask(&InitRequest::Lifeline(on))? {
            InitReply::Done => Ok(()),
            InitReply::Failed(m) => Err(io::Error::other(m)),
            other => Err(io::Error::other(format!(
                "unexpected answer from dmtcp-nsinit: {other:?}"
            ))),
        }
    }

    /// Removes shared memory segments in the computation's IPC namespace.
    pub fn remove_shm(&mut self, ids: Vec<i32>) -> io::Result<()> {
        match self.ask(&InitRequest::RemoveShm { ids })? {
            InitReply::Done => Ok(()),
            InitReply::Failed(m) => Err(io::Error::other(m)),
            other => Err(io::Error::other(format!(
                "unexpected answer from dmtcp-nsinit: {other:?}"
            ))),
        }
    }

    /// Tells nsinit who the computation is (kept for an adopter).
    pub fn set_identity(&mut self, id: Identity) -> io::Result<()> {
        match self.ask(&InitRequest::Identity(id))? {
            InitReply::Done => Ok(()),
            other => Err(io::Error::other(format!(
                "unexpected answer from dmtcp-nsinit: {other:?}"
            ))),
        }
    }

    /// Who the computation is, as the previous supervisor told nsinit.
    pub fn identity(&mut self) -> io::Result<Option<Identity>> {
        match self.ask(&InitRequest::WhoAreYou)? {
            InitReply::Identity(id) => Ok(id),
            other => Err(io::Error::other(format!(
                "unexpected answer from dmtcp-nsinit: {other:?}"
            ))),
        }
    }
}
