//! What the model is told, not what it finds out: which mounts belong to
//! containers, which namespaces are "the host", the kernel's behaviour, and
//! how long a new namespace may hold copies before that counts as a risk.

use crate::input::NsId;
use crate::kernel::KernelFacts;
use crate::path::PathBytes;

/// Mount points that belong to containers, as globs over path bytes:
/// `*` matches within one path component, `**` across components, `?` one
/// byte of a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patterns {
    globs: Vec<Vec<u8>>,
}

/// The runtimes' own mount layouts. Sources: moby's overlay2/overlay drivers
/// and its per-container shm mount; containerd's v2 task bundles and CRI
/// sandbox shm mounts (and k3s's copies of them); containers/storage (CRI-O, podman); kubelet's pod volumes,
/// subPath bind mounts and CSI staging (`globalmount`).
pub const DEFAULT_PATTERNS: &[&str] = &[
    "/var/lib/docker/overlay2/*/merged",
    "/var/lib/docker/overlay/*/merged",
    "/var/lib/docker/containers/*/mounts/shm",
    "/run/containerd/io.containerd.runtime.v2.task/*/*/rootfs",
    "/run/k3s/containerd/io.containerd.runtime.v2.task/*/*/rootfs",
    "/var/lib/containers/storage/overlay/*/merged",
    "/run/containers/storage/overlay-containers/*/userdata/shm",
    "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/*/shm",
    "/run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/*/shm",
    "/var/lib/kubelet/pods/*/volumes/*/*",
    "/var/lib/kubelet/pods/*/volumes/*/*/mount",
    "/var/lib/kubelet/pods/*/volume-subpaths/**",
    "/var/lib/kubelet/plugins/kubernetes.io/csi/**/globalmount",
];

impl Default for Patterns {
    fn default() -> Self {
        Patterns::new(DEFAULT_PATTERNS.iter().map(|p| p.as_bytes().to_vec()))
    }
}

impl Patterns {
    pub fn new(globs: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Patterns {
            globs: globs.into_iter().collect(),
        }
    }

    pub fn empty() -> Self {
        Patterns { globs: Vec::new() }
    }

    pub fn push(&mut self, glob: impl Into<Vec<u8>>) {
        self.globs.push(glob.into());
    }

    pub fn globs(&self) -> impl Iterator<Item = &[u8]> {
        self.globs.iter().map(Vec::as_slice)
    }

    /// True when `path` is a container mount point.
    pub fn matches(&self, path: &PathBytes) -> bool {
        self.globs.iter().any(|g| glob_match(g, path.as_bytes()))
    }
}

/// Glob matching on bytes with `*`, `**` and `?` (see [`Patterns`]).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            // `**` may swallow any bytes, slashes included.
            let rest = &pattern[2..];
            (0..=text.len()).any(|i| glob_match(rest, &text[i..]))
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            for i in 0..=text.len() {
                if glob_match(rest, &text[i..]) {
                    return true;
                }
                if text.get(i) == Some(&b'/') {
                    break;
                }
            }
            false
        }
        Some(b'?') => match text.first() {
            Some(&c) if c != b'/' => glob_match(&pattern[1..], &text[1..]),
            _ => false,
        },
        Some(&c) => text.first() == Some(&c) && glob_match(&pattern[1..], &text[1..]),
    }
}

/// Which namespaces count as "the host": the ones whose umounts of container
/// mounts every copy should receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// Exactly these namespaces.
    Namespaces(Vec<NsId>),
    /// The scanner's own namespace and every namespace a container runtime
    /// process lives in (by comm). PLATFORM note: PID 1's namespace is not
    /// necessarily the host's, so it is not assumed. (Where a container
    /// filesystem gets mounted is no guide: runc bind-mounts the rootfs
    /// inside the container's own namespace too.)
    Auto {
        runtime_comms: Vec<String>,
        include_self: bool,
    },
}

/// Processes that mount container filesystems: their namespace is a host.
/// (`comm` is at most 15 bytes, hence the truncated shim names.)
pub const DEFAULT_RUNTIME_COMMS: &[&str] = &[
    "dockerd",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "containerd-shim-runc-v1",
    "kubelet",
    "crio",
    "conmon",
    "podman",
    "k3s-server",
    "k3s-agent",
];

impl Default for Reference {
    fn default() -> Self {
        Reference::Auto {
            runtime_comms: DEFAULT_RUNTIME_COMMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            include_self: true,
        }
    }
}

/// Everything the model is configured with.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub patterns: Patterns,
    pub reference: Reference,
    pub kernel: KernelFacts,
    /// A namespace younger than this is not yet a risk: runtimes create
    /// short-lived namespaces (runc's init copies every mount, then
    /// pivot_root drops them within milliseconds).
    pub risk_grace_ns: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            patterns: Patterns::default(),
            reference: Reference::default(),
            kernel: KernelFacts::default(),
            risk_grace_ns: 2_000_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        glob_match(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn star_stays_in_one_component() {
        assert!(m(
            "/var/lib/docker/overlay2/*/merged",
            "/var/lib/docker/overlay2/abc/merged"
        ));
        assert!(!m(
            "/var/lib/docker/overlay2/*/merged",
            "/var/lib/docker/overlay2/a/b/merged"
        ));
        assert!(!m(
            "/var/lib/docker/overlay2/*/merged",
            "/var/lib/docker/overlay2/abc/merged/x"
        ));
        assert!(m("/a/*", "/a/"));
    }

    #[test]
    fn double_star_crosses_components() {
        let p = "/var/lib/kubelet/plugins/kubernetes.io/csi/**/globalmount";
        assert!(m(
            p,
            "/var/lib/kubelet/plugins/kubernetes.io/csi/ebs.csi.aws.com/abc123/globalmount"
        ));
        assert!(m(
            p,
            "/var/lib/kubelet/plugins/kubernetes.io/csi/pv/pvc-1/globalmount"
        ));
        assert!(!m(p, "/var/lib/kubelet/plugins/other/x/globalmount"));
        assert!(m(
            "/var/lib/kubelet/pods/*/volume-subpaths/**",
            "/var/lib/kubelet/pods/u/volume-subpaths/v/c/0"
        ));
    }

    #[test]
    fn question_mark_and_odd_bytes() {
        assert!(m("/x/?", "/x/\n"));
        assert!(!m("/x/?", "/x//"));
        assert!(glob_match(b"/v/*/merged", b"/v/\xff a\tb/merged"));
    }

    #[test]
    fn defaults_cover_the_runtimes() {
        let p = Patterns::default();
        for path in [
            "/var/lib/docker/overlay2/0f1e/merged",
            "/var/lib/docker/overlay/0f1e/merged",
            "/var/lib/docker/containers/cid/mounts/shm",
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/cid/rootfs",
            "/var/lib/containers/storage/overlay/layer/merged",
            "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~secret/token",
            "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pvc-1/mount",
        ] {
            assert!(p.matches(&path.into()), "{path}");
        }
        for path in [
            "/var/lib/docker",
            "/var/lib/docker/overlay2/x/diff",
            "/run/containerd",
            "/",
        ] {
            assert!(!p.matches(&path.into()), "{path}");
        }
    }
}
