//! Reads [`KernelFacts`]: the release from uname(2) and, on RHEL/CentOS 7,
//! the `fs.may_detach_mounts` sysctl.

use std::ffi::CStr;
use std::path::Path;

use monitor_model::KernelFacts;

/// Only RHEL/CentOS 7 kernels have it (a backport of the 3.18 detach-on-rmdir
/// behaviour, off by default); elsewhere the file does not exist.
const MAY_DETACH_MOUNTS: &str = "/proc/sys/fs/may_detach_mounts";

/// The running kernel's facts. Never fails: an unreadable release becomes
/// `"unknown"` (version 0.0.0) and an unreadable sysctl `None`.
pub fn read_kernel_facts() -> KernelFacts {
    let release = uname_release().unwrap_or_else(|| {
        tracing::warn!("uname(2) failed; kernel release unknown");
        "unknown".to_string()
    });
    KernelFacts::from_release(
        &release,
        read_may_detach_mounts(Path::new(MAY_DETACH_MOUNTS)),
    )
}

fn uname_release() -> Option<String> {
    // SAFETY: utsname is plain bytes; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is valid and writable for the duration of the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: uname fills `release` with a NUL-terminated string.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

fn read_may_detach_mounts(path: &Path) -> Option<bool> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_sysctl_bool(&text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read sysctl");
            None
        }
    }
}

fn parse_sysctl_bool(text: &str) -> Option<bool> {
    match text.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_kernel() {
        let facts = read_kernel_facts();
        assert!(facts.version.0 >= 3, "{facts:?}");
        assert!(!facts.release.is_empty());
    }

    #[test]
    fn sysctl_values() {
        assert_eq!(parse_sysctl_bool("1\n"), Some(true));
        assert_eq!(parse_sysctl_bool("0\n"), Some(false));
        assert_eq!(parse_sysctl_bool("2\n"), None);
        assert_eq!(
            read_may_detach_mounts(Path::new("/nonexistent/sysctl")),
            None
        );
    }
}
