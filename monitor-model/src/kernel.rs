//! Facts about the running kernel that decide what a leak will do. The shell
//! reads them (uname, sysctl); the model never guesses them.

/// What the kernel does when the runtime removes a mountpoint directory that
/// other namespaces still have mounts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFacts {
    /// `uname -r`, for messages.
    pub release: String,
    /// `(major, minor, patch)` parsed from the release.
    pub version: (u32, u32, u32),
    /// `fs.may_detach_mounts`, which only RHEL/CentOS 7 kernels have. `None`
    /// when the sysctl does not exist.
    pub may_detach_mounts: Option<bool>,
}

impl KernelFacts {
    /// Parses `uname -r` style strings such as `3.10.0-1160.el7.x86_64` or
    /// `6.18.44-fc-v657`. Missing parts count as 0.
    pub fn from_release(release: &str, may_detach_mounts: Option<bool>) -> Self {
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        KernelFacts {
            release: release.to_string(),
            version,
            may_detach_mounts,
        }
    }

    /// Since Linux 3.18 (commit 8ed936b5671b, "vfs: Lazily remove mounts on
    /// unlinked files and directories"), removing a mountpoint directory
    /// detaches the mounts on it in every namespace. RHEL/CentOS 7 backported
    /// it behind `fs.may_detach_mounts`, off by default: there the removal
    /// fails with EBUSY instead.
    pub fn detaches_on_rmdir(&self) -> bool {
        match self.may_detach_mounts {
            Some(enabled) => enabled,
            None => self.version >= (3, 18, 0),
        }
    }
}

impl Default for KernelFacts {
    /// A modern kernel: the behaviour of every kernel since 3.18.
    fn default() -> Self {
        KernelFacts::from_release("0.0.0-unknown", None).with_version((6, 0, 0))
    }
}

impl KernelFacts {
    fn with_version(mut self, version: (u32, u32, u32)) -> Self {
        self.version = version;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_releases() {
        let el7 = KernelFacts::from_release("3.10.0-1160.el7.x86_64", Some(false));
        assert_eq!(el7.version, (3, 10, 0));
        assert!(!el7.detaches_on_rmdir());
        assert!(
            KernelFacts::from_release("3.10.0-1160.el7.x86_64", Some(true)).detaches_on_rmdir()
        );
        assert!(!KernelFacts::from_release("3.16.7", None).detaches_on_rmdir());
        let modern = KernelFacts::from_release("6.18.44-fc-v657", None);
        assert_eq!(modern.version, (6, 18, 44));
        assert!(modern.detaches_on_rmdir());
        assert_eq!(
            KernelFacts::from_release("garbage", None).version,
            (0, 0, 0)
        );
    }
}
