//! One module per process role: the launch (`dmtcp-run`, [`launch`]), the
//! restart (`dmtcp-restart`, [`restart`]), the supervisor's session with the
//! coordinator ([`session`]), pid 1 of the computation's namespace
//! ([`nsinit`], started by [`spawn`], talked to through [`nsinit_ctrl`]),
//! and the loop that supervises a running computation ([`supervise`]).

pub mod barrier;
pub mod launch;
pub mod nsinit;
pub mod nsinit_ctrl;
pub mod restart;
pub mod session;
pub mod spawn;
pub mod supervise;
