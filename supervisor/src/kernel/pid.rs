//! Distinct types for the two pid spaces and for addresses in a target.
//!
//! A [`HostPid`] is what the supervisor's own pid namespace sees (ptrace,
//! `/proc`, `kill`); a [`VirtPid`] is what the target sees from inside its pid
//! namespace (`getpid()`), and what images record. Mixing them up is the
//! classic checkpointer bug, so the compiler keeps them apart.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPid(pub i32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VirtPid(pub i32);

impl VirtPid {
    /// The pid an image records (`ProcessInfo::vpid`, always positive).
    pub fn from_image(vpid: u32) -> VirtPid {
        VirtPid(vpid as i32)
    }

    /// The pid as an image records it.
    pub fn to_image(self) -> u32 {
        self.0 as u32
    }
}

/// An address in a target's address space; never dereferenced locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteAddr(pub u64);

impl fmt::Display for HostPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for VirtPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An offset from an address in the target.
impl std::ops::Add<u64> for RemoteAddr {
    type Output = RemoteAddr;

    fn add(self, off: u64) -> RemoteAddr {
        RemoteAddr(self.0 + off)
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_pids_cross_the_image_edge_unchanged() {
        for v in [1u32, 2, 300, 4_194_304] {
            assert_eq!(VirtPid::from_image(v).to_image(), v);
        }
        assert_eq!(VirtPid::from_image(42), VirtPid(42));
        assert_eq!(VirtPid(7).to_string(), "7");
        assert_eq!(HostPid(9).to_string(), "9");
        assert_eq!(RemoteAddr(0x7fff_0000).to_string(), "0x7fff0000");
    }
}
