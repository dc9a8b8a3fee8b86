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

/// The no-namespace mode (`dmtcp-run --no-namespaces`): the computation
/// runs in our pid namespace with the pids the kernel gives it, and the
/// program sees virtual pids, translated by the inject library from the
/// table the restorer writes into its state page. Until the first restart
/// every virtual pid is the real one; after it, the table below (virtual,
/// real) holds every process and thread restored (a process born later
/// keeps its real pid as its virtual one).
pub mod virt {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    static ON: AtomicBool = AtomicBool::new(false);
    static MAP: Mutex<Vec<(i32, i32)>> = Mutex::new(Vec::new());

    /// From now on the computation runs without namespaces.
    pub fn enable() {
        ON.store(true, Ordering::Relaxed);
    }

    /// Whether the computation runs without namespaces (virtual pids).
    pub fn enabled() -> bool {
        ON.load(Ordering::Relaxed)
    }

    /// Records that virtual pid or tid `v` is real `r` now.
    pub fn insert(v: i32, r: i32) {
        let mut m = MAP.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|&(ov, _)| ov != v);
        if v != r {
            m.push((v, r));
        }
    }

    /// Every (virtual, real) pair that differs.
    pub fn pairs() -> Vec<(i32, i32)> {
        MAP.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The virtual id of real pid or tid `r` (itself when not restored
    /// under another one; ids <= 0 unchanged).
    pub fn of_real(r: i32) -> i32 {
        if r <= 0 {
            return r;
        }
        MAP.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|p| p.1 == r)
            .map_or(r, |p| p.0)
    }

    /// The real id of virtual pid or tid `v` (itself when not in the table).
    pub fn real_of(v: i32) -> i32 {
        MAP.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|p| p.0 == v)
            .map_or(v, |p| p.1)
    }

    /// [`of_real`] for an id as images record it.
    pub fn of_real_u32(r: u32) -> u32 {
        of_real(r as i32) as u32
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
