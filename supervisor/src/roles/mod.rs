//! One module per process role: the launch (`dmtcp-run`), the supervisor's
//! session with the coordinator, pid 1 of the computation's namespace, and
//! the code that supervises a running computation.

pub mod launch;
pub mod nsinit;
pub mod session;
pub mod spawn;
pub mod supervise;
