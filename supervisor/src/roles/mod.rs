//! One module per process role: the launch (`dmtcp-run`, [`launch`]), the
//! restart (`dmtcp-restart`, [`restart`]), the supervisor's session with the
//! coordinator ([`session`]), pid 1 of the computation's namespace
//! ([`nsinit`], started by [`spawn`], talked to through [`nsinit_ctrl`]),
//! the loop that supervises a running computation ([`supervise`]), and the
//! taking back of a computation whose supervisor died ([`adopt`]).

pub mod adopt;
pub mod attach;
pub mod barrier;
pub mod launch;
pub mod members;
pub mod nsinit;
pub mod nsinit_ctrl;
pub mod progress;
pub mod relay;
pub mod restart;
pub mod session;
pub mod spawn;
pub mod supervise;
