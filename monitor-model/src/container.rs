//! What a mount path says about the container it belongs to. Paths are the
//! only identity the model has without a runtime connection, so every field
//! here is inferred and marked so in the output.

use serde::Serialize;

use crate::path::PathBytes;

/// Container identity read off a mount path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ContainerHint {
    /// `docker`, `containerd`, `containers-storage` (CRI-O/podman) or `kubelet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
    /// `rootfs`, `shm`, `volume`, `subpath` or `csi-staging`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// Container id (containerd, docker shm) or storage layer id (overlay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// containerd namespace (`moby`, `k8s.io`, `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}

impl ContainerHint {
    pub fn from_path(path: &PathBytes) -> Self {
        let text = path.lossy();
        let parts: Vec<&str> = text.split('/').filter(|p| !p.is_empty()).collect();
        let get = |i: usize| parts.get(i).map(|s| s.to_string());
        let mut hint = ContainerHint::default();
        match parts.as_slice() {
            ["var", "lib", "docker", "overlay2" | "overlay", _, "merged"] => {
                hint.runtime = Some("docker");
                hint.role = Some("rootfs");
                hint.id = get(4);
            }
            ["var", "lib", "docker", "containers", _, "mounts", "shm"] => {
                hint.runtime = Some("docker");
                hint.role = Some("shm");
                hint.id = get(4);
            }
            [.., "io.containerd.runtime.v2.task", _, _, "rootfs"] => {
                let n = parts.len();
                hint.runtime = Some("containerd");
                hint.role = Some("rootfs");
                hint.namespace = get(n - 3);
                hint.id = get(n - 2);
            }
            ["var", "lib", "containers", "storage", "overlay", _, "merged"] => {
                hint.runtime = Some("containers-storage");
                hint.role = Some("rootfs");
                hint.id = get(5);
            }
            ["run", "containers", "storage", "overlay-containers", _, "userdata", "shm"] => {
                hint.runtime = Some("containers-storage");
                hint.role = Some("shm");
                hint.id = get(4);
            }
            ["var", "lib", "kubelet", "pods", _, "volumes", _, volume, ..] => {
                hint.runtime = Some("kubelet");
                hint.role = Some("volume");
                hint.pod_uid = get(4);
                hint.volume = Some(volume.to_string());
            }
            ["var", "lib", "kubelet", "pods", _, "volume-subpaths", volume, ..] => {
                hint.runtime = Some("kubelet");
                hint.role = Some("subpath");
                hint.pod_uid = get(4);
                hint.volume = Some(volume.to_string());
            }
            ["var", "lib", "kubelet", "plugins", ..] if parts.last() == Some(&"globalmount") => {
                hint.runtime = Some("kubelet");
                hint.role = Some("csi-staging");
                hint.volume = parts.len().checked_sub(2).and_then(get);
            }
            _ => {}
        }
        hint
    }

    pub fn is_empty(&self) -> bool {
        *self == ContainerHint::default()
    }

    /// A short human label: `docker rootfs layer 0f1e…`, `pod 1234-… volume data`.
    pub fn label(&self) -> Option<String> {
        let short = |s: &String| s.chars().take(12).collect::<String>();
        match (self.runtime?, self.role?) {
            ("kubelet", "csi-staging") => Some(format!(
                "CSI staging for {}",
                self.volume.as_deref().unwrap_or("?")
            )),
            ("kubelet", role) => Some(format!(
                "pod {} {role} {}",
                self.pod_uid.as_deref().unwrap_or("?"),
                self.volume.as_deref().unwrap_or("?")
            )),
            ("docker", "rootfs") | ("containers-storage", "rootfs") => Some(format!(
                "{} rootfs (layer {})",
                self.runtime?,
                self.id.as_ref().map(short).unwrap_or_default()
            )),
            (runtime, role) => Some(format!(
                "{runtime} {role} of {}",
                self.id.as_ref().map(short).unwrap_or_else(|| "?".into())
            )),
        }
    }
}

/// Normalises a pod uid as cgroup paths spell it (`pod1234_5678` with
/// underscores under the systemd driver) to the API's dashed form.
pub fn pod_uid_from_cgroup(cgroup: &str) -> Option<String> {
    // "kubepods" contains "pod" too: try every occurrence.
    cgroup.match_indices("pod").find_map(|(i, _)| {
        let uid: String = cgroup[i + 3..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-' || *c == '_')
            .map(|c| if c == '_' { '-' } else { c })
            .collect();
        (uid.len() >= 32).then_some(uid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runtime_layouts() {
        let h = ContainerHint::from_path(&"/var/lib/docker/overlay2/abc/merged".into());
        assert_eq!(
            (h.runtime, h.role, h.id.as_deref()),
            (Some("docker"), Some("rootfs"), Some("abc"))
        );
        let h = ContainerHint::from_path(
            &"/run/containerd/io.containerd.runtime.v2.task/k8s.io/c0ffee/rootfs".into(),
        );
        assert_eq!(h.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(h.id.as_deref(), Some("c0ffee"));
        let h = ContainerHint::from_path(
            &"/var/lib/kubelet/pods/1-2/volumes/kubernetes.io~csi/pvc-9/mount".into(),
        );
        assert_eq!(
            (h.pod_uid.as_deref(), h.volume.as_deref()),
            (Some("1-2"), Some("pvc-9"))
        );
        assert!(ContainerHint::from_path(&"/mnt/data".into()).is_empty());
    }

    #[test]
    fn pod_uid_from_both_cgroup_drivers() {
        let systemd = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b1c2f3a_1111_2222_3333_444455556666.slice/cri-containerd-abc.scope";
        assert_eq!(
            pod_uid_from_cgroup(systemd).as_deref(),
            Some("6b1c2f3a-1111-2222-3333-444455556666")
        );
        let cgroupfs = "/kubepods/besteffort/pod6b1c2f3a-1111-2222-3333-444455556666/abc";
        assert_eq!(
            pod_uid_from_cgroup(cgroupfs).as_deref(),
            Some("6b1c2f3a-1111-2222-3333-444455556666")
        );
        assert_eq!(pod_uid_from_cgroup("/system.slice/ntpd.service"), None);
    }
}
