//! TCP connections, UDP sockets and connected named unix sockets: capture
//! ([`capture`]) and restore ([`restore`]).

pub mod capture;
pub mod restore;
