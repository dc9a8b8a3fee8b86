//! Why a checkpoint barrier failed on the supervisor's side. The text of a
//! [`BarrierError`] is the reason the coordinator is sent
//! (`CheckpointFailed`) and logs.

use std::io;
use std::path::PathBuf;

use dmtcp_image::ImageError;

use crate::kernel::pid::HostPid;

/// A failed suspend or checkpoint phase, or images that could not be made
/// durable.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("no live process in the computation")]
    NoProcess,
    #[error("pid {pid} kept checkpoints disabled ({sections} open dmtcp_disable_ckpt sections)")]
    CkptDisabled { pid: HostPid, sections: i32 },
    #[error("pid {vpid} ({prog}) runs a 32-bit program (exec'd inside the computation); only 64-bit (x86_64) programs can be checkpointed")]
    ThirtyTwoBit { vpid: u32, prog: String },
    #[error("freezing pid {vpid} ({prog}): {source}")]
    Freeze {
        vpid: u32,
        prog: String,
        source: io::Error,
    },
    /// The coordinator named a checkpoint directory we will not use.
    #[error("{0}")]
    CoordinatorDir(String),
    #[error("checkpoint directory {}: {source}", dir.display())]
    CkptDir { dir: PathBuf, source: io::Error },
    #[error("examining file descriptors: {0}")]
    Fds(#[source] io::Error),
    #[error("saving SysV shared memory {id}: {source}")]
    SysvShm { id: i32, source: io::Error },
    #[error("zombie pid {pid}: {source}")]
    Zombie { pid: HostPid, source: io::Error },
    /// Capture of a process, or reading SysV IPC from nsinit (the error
    /// names the pid and step).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A plugin hook failed, hung or crashed (names the pid, plugin, hook).
    #[error("{0}")]
    Plugin(String),
    /// Writing an image, or a bad codec in the checkpoint request.
    #[error(transparent)]
    Image(#[from] ImageError),
}
