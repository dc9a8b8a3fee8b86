//! Why a user namespace could not be made, in words a user can act on.
//!
//! Unprivileged runs stand on user namespaces. Machines forbid them in
//! three common ways, each with its own errno and setting:
//! - `user.max_user_namespaces = 0` (clusters): clone fails with ENOSPC;
//!   the same errno when this user's count of namespaces is at the limit;
//! - AppArmor's `kernel.apparmor_restrict_unprivileged_userns = 1` (Ubuntu
//!   23.10 and later): EPERM, or EACCES from the profile's mediation;
//! - Debian's older `kernel.unprivileged_userns_clone = 0`: EPERM.
//!
//! A container's seccomp policy can also answer EPERM; and more than 32
//! nested user namespaces give EUSERS.

use std::io;
use std::path::Path;

/// Where the AppArmor profile that grants user namespaces is shipped
/// (relative to the source tree) and installed.
pub const APPARMOR_PROFILE: &str = "packaging/apparmor/dmtcp";

fn sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(Path::new("/proc/sys").join(path))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why user namespaces are unavailable, read from the error of the failed
/// clone and the system's settings (a clause, with what to do where there
/// is something); `None` for an error that is not about them.
pub fn userns_cause(err: &io::Error) -> Option<String> {
    let errno = err.raw_os_error().unwrap_or(0);
    Some(match errno {
        libc::ENOSPC => match sysctl("user/max_user_namespaces") {
            Some(0) => "user namespaces are disabled on this machine (sysctl user.max_user_namespaces = 0)".to_string(),
            Some(n) => format!(
                "the limit on user namespaces is reached (sysctl user.max_user_namespaces = {n}, for this user or an enclosing namespace)"
            ),
            None => "the limit on user namespaces is reached".to_string(),
        },
        libc::EPERM | libc::EACCES => {
            if sysctl("kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
                format!(
                    "AppArmor restricts unprivileged user namespaces (sysctl kernel.apparmor_restrict_unprivileged_userns = 1; the profile {APPARMOR_PROFILE} lifts it, see docs/user-guide.md)"
                )
            } else if sysctl("kernel/unprivileged_userns_clone") == Some(0) {
                "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone = 0)".to_string()
            } else {
                "the system denied a new user namespace (a container's seccomp policy or a security module)".to_string()
            }
        }
        libc::EUSERS => "too many nested user namespaces (the kernel allows 32)".to_string(),
        _ => return None,
    })
}

/// One sentence naming why user namespaces are unavailable, read from the
/// error of the failed clone and the system's settings, with what to do.
pub fn why_no_userns(err: &io::Error) -> String {
    match userns_cause(err) {
        Some(cause) => format!(
            "cannot create a user namespace: {cause}; a computation with namespaces needs one without root (dmtcp-run without --namespaces runs it without namespaces instead, with virtual pids)"
        ),
        None => format!("cannot create the user namespace: {err}"),
    }
}
