//! What containerd says about one container (its record with labels and
//! OCI spec, and its task) turned into the model's `ContainerInfo`; event
//! payloads decoded; `mountleak check` targets matched.
//!
//! Pure: no I/O and no clock. The session adds what needs the OS (the
//! upper dir's inode, the task's start time) on top of [`container_info`].
//!
//! May import: the containerd-client message types, prost, serde, the
//! model's input types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_client::events::{
    ContainerCreate, ContainerDelete, ContainerUpdate, TaskCreate, TaskDelete, TaskExit,
    TaskPaused, TaskResumed, TaskStart,
};
use containerd_client::services::v1::Container;
use containerd_client::types::v1::{Process, Status};
use monitor_model::{ContainerInfo, ContainerState, PathBytes, PodInfo};
use prost::Message;
use serde::Deserialize;

/// `ContainerInfo::runtime` for containers made through containerd's own API
/// (`ctr`, nerdctl, BuildKit, ...).
pub const RUNTIME_CONTAINERD: &str = "containerd";
/// `ContainerInfo::runtime` for containers the CRI plugin made for kubelet.
pub const RUNTIME_CRI: &str = "cri";
/// The namespace the CRI plugin keeps its containers and images in
/// (containerd's `pkg/cri/constants`: `K8sContainerdNamespace`).
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Where the runc v2 shim keeps a task's bundle, under containerd's `state`
/// directory: `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`, with
/// the rootfs mounted at `<bundle>/rootfs` (containerd `runtime/v2/bundle.go`).
pub const TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// Labels the CRI plugin puts on every container it makes: `sandbox` or
/// `container` (containerd `pkg/cri/server/helpers.go`, `containerKindLabel`).
pub const LABEL_CRI_KIND: &str = "io.cri-containerd.kind";
const KIND_SANDBOX: &str = "sandbox";
/// Labels kubelet sets on sandboxes and containers (kubelet
/// `pkg/kubelet/types/labels.go`); the CRI plugin copies them onto the
/// containerd containers.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// nerdctl names its containers with this label; containerd itself has no
/// names.
const LABEL_NERDCTL_NAME: &str = "nerdctl/name";

/// The bundle (and so the rootfs mount point) of a task.
pub fn bundle_dir(state_dir: &Path, namespace: &str, id: &str) -> PathBuf {
    state_dir.join(TASK_DIR).join(namespace).join(id)
}

/// containerd's `state` directory from a shim's bundle directory (the
/// shim's cwd): the part before `/io.containerd.runtime.v2.task/<ns>/<id>`.
pub fn state_dir_of_bundle(bundle: &Path) -> Option<PathBuf> {
    let ns_dir = bundle.parent()?;
    let task_dir = ns_dir.parent()?;
    if task_dir.file_name()? != TASK_DIR {
        return None;
    }
    task_dir.parent().map(Path::to_path_buf)
}

/// The model's view of one container, from its containerd record and its
/// task (`None` when it has none: never started, or its task was deleted
/// after it exited). A container without a task is `Stopped` if it ran
/// (`ran`: this adapter saw it with a started task) or belongs to the CRI,
/// which deletes a task as soon as it exits and starts a container right
/// after creating it; otherwise `Created` (`ctr` keeps a stopped task until
/// `ctr task rm`).
pub fn container_info(
    namespace: &str,
    state_dir: &Path,
    c: &Container,
    task: Option<&Process>,
    ran: bool,
) -> ContainerInfo {
    let labels = &c.labels;
    let runtime = runtime_of(namespace, labels);
    let pod = pod_of(labels);
    let name = labels
        .get(LABEL_CONTAINER_NAME)
        .or_else(|| labels.get(LABEL_NERDCTL_NAME))
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| c.id.clone());

    let rootfs = bundle_dir(state_dir, namespace, &c.id).join("rootfs");
    let mut mounts = vec![path_bytes(&rootfs)];
    for source in bind_sources(c) {
        let source = PathBytes::from(source);
        if !mounts.contains(&source) {
            mounts.push(source);
        }
    }

    let (state, pid) = match task {
        Some(t) => task_state(t),
        None if ran || runtime == RUNTIME_CRI => (ContainerState::Stopped, None),
        None => (ContainerState::Created, None),
    };

    ContainerInfo {
        runtime: runtime.to_string(),
        namespace: Some(namespace.to_string()),
        id: c.id.clone(),
        name,
        image: Some(c.image.clone()).filter(|i| !i.is_empty()),
        pod,
        mounts,
        upper_dir: None,
        pid,
        state,
        started_at: None,
    }
}

/// A container's task among those `ListTasks` returned. containerd 1.6
/// fills only `id` there (the init process's id, which is the container
/// id) and leaves `container_id` empty; later versions may fill both.
pub fn task_of<'a>(tasks: &'a [Process], container_id: &str) -> Option<&'a Process> {
    tasks.iter().find(|t| {
        if t.container_id.is_empty() {
            t.id == container_id
        } else {
            t.container_id == container_id
        }
    })
}

/// `cri` for what the CRI plugin made (its kind label, in its namespace),
/// `containerd` for everything else.
pub fn runtime_of(namespace: &str, labels: &HashMap<String, String>) -> &'static str {
    if namespace == CRI_NAMESPACE && labels.contains_key(LABEL_CRI_KIND) {
        RUNTIME_CRI
    } else {
        RUNTIME_CONTAINERD
    }
}

/// The pod, when kubelet's three pod labels are all there. The sandbox
/// stands for the pod itself and gets no container name.
fn pod_of(labels: &HashMap<String, String>) -> Option<PodInfo> {
    let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    let sandbox = labels.get(LABEL_CRI_KIND).map(String::as_str) == Some(KIND_SANDBOX);
    Some(PodInfo {
        name: get(LABEL_POD_NAME)?,
        namespace: get(LABEL_POD_NAMESPACE)?,
        uid: get(LABEL_POD_UID)?,
        container: if sandbox {
            None
        } else {
            get(LABEL_CONTAINER_NAME)
        },
    })
}

/// The task's status as the model's state, and its pid while it has one.
/// containerd's `Status` (api/types/task/task.proto): a created task has a
/// pid already (runc's init waits to exec); a stopped one's pid is gone.
fn task_state(t: &Process) -> (ContainerState, Option<u32>) {
    let pid = Some(t.pid).filter(|&p| p > 0);
    match Status::try_from(t.status).unwrap_or(Status::Unknown) {
        Status::Running => (ContainerState::Running, pid),
        Status::Paused | Status::Pausing => (ContainerState::Paused, pid),
        Status::Created => (ContainerState::Created, pid),
        Status::Stopped => (ContainerState::Stopped, None),
        // The shim could not say (it is busy or gone): the pid, if any, is
        // the best evidence of a live task.
        Status::Unknown => match pid {
            Some(_) => (ContainerState::Running, pid),
            None => (ContainerState::Created, None),
        },
    }
}

/// The parts of an OCI runtime spec (config.json) this adapter reads.
#[derive(Debug, Default, Deserialize)]
struct Spec {
    #[serde(default)]
    mounts: Vec<SpecMount>,
}

#[derive(Debug, Deserialize)]
struct SpecMount {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

/// Host paths bind-mounted into the container: kubelet volumes
/// (`/var/lib/kubelet/pods/<uid>/volumes/...`), `ctr run --mount`, the
/// CRI's hosts/resolv.conf/shm files. The OCI spec marks a bind by type
/// `bind` or, as runc also accepts, by a `bind`/`rbind` option with the type
/// left out (runtime-spec config.md, "Mounts"; runc `libcontainer/specconv`).
fn bind_sources(c: &Container) -> Vec<String> {
    let Some(spec) = c.spec.as_ref() else {
        return Vec::new();
    };
    // containerd stores the spec as JSON in an Any
    // (`types.containerd.io/opencontainers/runtime-spec/1/Spec`). A spec that
    // does not parse leaves the container with its rootfs only.
    let spec: Spec = serde_json::from_slice(&spec.value).unwrap_or_default();
    spec.mounts
        .into_iter()
        .filter(|m| {
            matches!(m.kind.as_deref(), Some("bind" | "rbind"))
                || m.options.iter().any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| m.source)
        .filter(|s| s.starts_with('/'))
        .collect()
}

fn path_bytes(p: &Path) -> PathBytes {
    use std::os::unix::ffi::OsStrExt;
    PathBytes::from(p.as_os_str().as_bytes())
}

/// The upper directory in a snapshot's mount options (overlayfs snapshotter:
/// `upperdir=<root>/snapshots/<n>/fs`). Bind-mounted snapshots (the native
/// snapshotter, a read-only view) have none.
pub fn upper_dir_option<'a>(options: impl IntoIterator<Item = &'a String>) -> Option<PathBuf> {
    options
        .into_iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .map(PathBuf::from)
}

/// The topics this adapter subscribes to. containerd ORs the filters
/// (`filters` package syntax; api/services/events/v1/events.proto).
pub const TOPIC_FILTERS: &[&str] = &[
    r#"topic=="/tasks/create""#,
    r#"topic=="/tasks/start""#,
    r#"topic=="/tasks/exit""#,
    r#"topic=="/tasks/delete""#,
    r#"topic=="/tasks/paused""#,
    r#"topic=="/tasks/resumed""#,
    r#"topic=="/containers/create""#,
    r#"topic=="/containers/update""#,
    r#"topic=="/containers/delete""#,
];

/// What one event means for the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Ask containerd again and report what it says (create, start, pause,
    /// an exec's exit, a task deleted, labels updated).
    Refresh { id: String },
    /// A task was created in this bundle directory: it tells where the
    /// shims keep their state, then the same as `Refresh`.
    TaskCreated { id: String, bundle: PathBuf },
    /// The task's init process exited: `Stopped` now, then a refresh. `pid`
    /// is the init pid the event names.
    Exited { id: String, pid: u32 },
    /// The container record is gone.
    Deleted { id: String },
}

impl Change {
    pub fn id(&self) -> &str {
        match self {
            Change::Refresh { id }
            | Change::TaskCreated { id, .. }
            | Change::Exited { id, .. }
            | Change::Deleted { id } => id,
        }
    }
}

/// Decodes an event's payload by its topic: the `containerd.events.*`
/// messages (api/events/task.proto, container.proto). `None` for topics
/// this adapter does not follow, a payload that does not decode, or one
/// that names no container.
pub fn decode_event(topic: &str, payload: &[u8]) -> Option<Change> {
    let refresh = |id: String| Some(Change::Refresh { id });
    let change = match topic {
        "/tasks/exit" => {
            let ev = TaskExit::decode(payload).ok()?;
            // `id` is the process: the container id for the task's init
            // process, an exec id for `ctr task exec` / `kubectl exec`
            // processes, whose exit stops nothing but is worth a refresh.
            if ev.id == ev.container_id || ev.id.is_empty() {
                Some(Change::Exited {
                    id: ev.container_id,
                    pid: ev.pid,
                })
            } else {
                refresh(ev.container_id)
            }
        }
        "/tasks/create" => {
            let ev = TaskCreate::decode(payload).ok()?;
            Some(Change::TaskCreated {
                id: ev.container_id,
                bundle: PathBuf::from(ev.bundle),
            })
        }
        "/tasks/start" => refresh(TaskStart::decode(payload).ok()?.container_id),
        "/tasks/delete" => refresh(TaskDelete::decode(payload).ok()?.container_id),
        "/tasks/paused" => refresh(TaskPaused::decode(payload).ok()?.container_id),
        "/tasks/resumed" => refresh(TaskResumed::decode(payload).ok()?.container_id),
        "/containers/create" => refresh(ContainerCreate::decode(payload).ok()?.id),
        "/containers/update" => refresh(ContainerUpdate::decode(payload).ok()?.id),
        "/containers/delete" => Some(Change::Deleted {
            id: ContainerDelete::decode(payload).ok()?.id,
        }),
        _ => None,
    };
    change.filter(|c| !c.id().is_empty())
}

/// How a `mountleak check` target matched, best first: a target that names
/// a container exactly never also picks up containers that merely share a
/// prefix with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// The container id.
    Id,
    /// The CRI container name (or nerdctl's), or `namespace/name` of its pod.
    Name,
    /// A prefix of the id.
    IdPrefix,
}

/// Whether `target` names this container: by id, id prefix, CRI container
/// name (`io.kubernetes.container.name`; every attempt and every pod with a
/// container of that name), nerdctl name, or `namespace/name` of its pod
/// (its sandbox and every container in it).
pub fn matches(target: &str, c: &Container) -> Option<Match> {
    if target.is_empty() {
        return None;
    }
    if c.id == target {
        return Some(Match::Id);
    }
    let label = |k: &str| c.labels.get(k).map(String::as_str);
    if label(LABEL_CONTAINER_NAME) == Some(target) || label(LABEL_NERDCTL_NAME) == Some(target) {
        return Some(Match::Name);
    }
    if let Some((ns, name)) = target.split_once('/') {
        if label(LABEL_POD_NAMESPACE) == Some(ns) && label(LABEL_POD_NAME) == Some(name) {
            return Some(Match::Name);
        }
    }
    if c.id.starts_with(target) {
        return Some(Match::IdPrefix);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "/run/containerd";

    /// An OCI spec as the CRI plugin writes it for a container with one
    /// emptyDir volume (trimmed to the mounts; the fields this adapter does
    /// not read are there to show they are ignored).
    const CRI_SPEC: &str = r#"{
        "ociVersion": "1.0.2-dev",
        "process": {"args": ["/bin/sleep", "infinity"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/data", "type": "bind",
             "source": "/var/lib/kubelet/pods/6b1c2f3a-1111-2222-3333-444455556666/volumes/kubernetes.io~empty-dir/data",
             "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/etc/hosts", "type": "bind",
             "source": "/var/lib/kubelet/pods/6b1c2f3a-1111-2222-3333-444455556666/etc-hosts",
             "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/dev/shm", "type": "bind",
             "source": "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/5a5a/shm",
             "options": ["rbind", "ro"]}
        ],
        "linux": {"namespaces": [{"type": "mount"}]}
    }"#;

    /// `ctr run --mount type=bind,src=/srv/data,dst=/data,options=rbind:rw`
    /// as containerd 1.6 stores it, and a bind marked by its options only.
    const CTR_SPEC: &str = r#"{
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "rw"]},
            {"destination": "/cache", "source": "/srv/cache", "options": ["rbind", "ro"]},
            {"destination": "/rel", "type": "bind", "source": "relative/ignored"}
        ]
    }"#;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod_labels(kind: &str) -> HashMap<String, String> {
        let mut l = labels(&[
            (LABEL_CRI_KIND, kind),
            (LABEL_POD_NAME, "web-7f9c"),
            (LABEL_POD_NAMESPACE, "shop"),
            (LABEL_POD_UID, "6b1c2f3a-1111-2222-3333-444455556666"),
        ]);
        if kind == "container" {
            l.insert(LABEL_CONTAINER_NAME.into(), "nginx".into());
        }
        l
    }

    fn container(id: &str, labels: HashMap<String, String>, spec_json: &str) -> Container {
        let mut c = Container {
            id: id.into(),
            labels,
            image: "mountleak.local/busybox:1".into(),
            spec: Some(Default::default()),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            ..Default::default()
        };
        // The spec is an `Any` holding JSON, as containerd stores it.
        if let Some(spec) = c.spec.as_mut() {
            spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Spec".into();
            spec.value = spec_json.as_bytes().to_vec();
        }
        c
    }

    fn task(id: &str, status: Status, pid: u32) -> Process {
        Process {
            container_id: id.into(),
            id: id.into(),
            pid,
            status: status as i32,
            ..Default::default()
        }
    }

    fn paths(info: &ContainerInfo) -> Vec<String> {
        info.mounts.iter().map(PathBytes::lossy).collect()
    }

    #[test]
    fn a_cri_container_is_named_by_its_labels_and_owns_its_volume() {
        let c = container("c0ffee", pod_labels("container"), CRI_SPEC);
        let t = task("c0ffee", Status::Running, 4242);
        let info = container_info("k8s.io", Path::new(STATE), &c, Some(&t), false);
        assert_eq!(info.runtime, "cri");
        assert_eq!(info.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(info.id, "c0ffee");
        assert_eq!(info.name, "nginx");
        assert_eq!(info.image.as_deref(), Some("mountleak.local/busybox:1"));
        assert_eq!(
            info.pod,
            Some(PodInfo {
                name: "web-7f9c".into(),
                namespace: "shop".into(),
                uid: "6b1c2f3a-1111-2222-3333-444455556666".into(),
                container: Some("nginx".into()),
            })
        );
        assert_eq!(info.state, ContainerState::Running);
        assert_eq!(info.pid, Some(4242));
        assert_eq!(
            paths(&info),
            [
                "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c0ffee/rootfs",
                "/var/lib/kubelet/pods/6b1c2f3a-1111-2222-3333-444455556666/volumes/kubernetes.io~empty-dir/data",
                "/var/lib/kubelet/pods/6b1c2f3a-1111-2222-3333-444455556666/etc-hosts",
                "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/5a5a/shm",
            ]
        );
    }

    #[test]
    fn a_sandbox_stands_for_the_pod_and_has_no_container_name() {
        let c = container("5a5a", pod_labels("sandbox"), r#"{"mounts": []}"#);
        let t = task("5a5a", Status::Running, 4000);
        let info = container_info("k8s.io", Path::new(STATE), &c, Some(&t), false);
        assert_eq!(info.runtime, "cri");
        // containerd has no names; the sandbox has no container name label.
        assert_eq!(info.name, "5a5a");
        let pod = info.pod.expect("pod labels");
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("shop", "web-7f9c")
        );
        assert_eq!(pod.container, None);
    }

    #[test]
    fn a_ctr_container_is_named_by_its_id_and_owns_its_binds() {
        let c = container("web1", labels(&[]), CTR_SPEC);
        let t = task("web1", Status::Running, 99);
        let info = container_info("default", Path::new("/x/state"), &c, Some(&t), false);
        assert_eq!(info.runtime, "containerd");
        assert_eq!(info.name, "web1");
        assert_eq!(info.pod, None);
        assert_eq!(
            paths(&info),
            [
                "/x/state/io.containerd.runtime.v2.task/default/web1/rootfs",
                "/srv/data",
                "/srv/cache",
            ]
        );
    }

    #[test]
    fn cri_labels_outside_k8s_io_are_not_the_cri() {
        // Someone's copy of a CRI container in another namespace: still
        // named and placed in its pod, but not claimed to be kubelet's.
        let c = container("c1", pod_labels("container"), CRI_SPEC);
        let info = container_info("default", Path::new(STATE), &c, None, false);
        assert_eq!(info.runtime, "containerd");
        assert_eq!(info.name, "nginx");
        assert!(info.pod.is_some());
        // And a k8s.io container without the CRI's kind label (ctr -n k8s.io).
        let c = container("c2", labels(&[]), CTR_SPEC);
        let info = container_info("k8s.io", Path::new(STATE), &c, None, false);
        assert_eq!(info.runtime, "containerd");
    }

    #[test]
    fn incomplete_pod_labels_give_no_pod() {
        let mut l = pod_labels("container");
        l.remove(LABEL_POD_UID);
        let c = container("c1", l, CRI_SPEC);
        let info = container_info("k8s.io", Path::new(STATE), &c, None, false);
        assert_eq!(info.pod, None);
        assert_eq!(info.name, "nginx");
    }

    #[test]
    fn nerdctl_names_are_used() {
        let c = container("abc", labels(&[("nerdctl/name", "db")]), CTR_SPEC);
        let info = container_info("default", Path::new(STATE), &c, None, false);
        assert_eq!(info.name, "db");
    }

    #[test]
    fn task_states_map_to_the_model() {
        let c = container("a", labels(&[]), CTR_SPEC);
        let at = |status, pid| {
            let t = task("a", status, pid);
            let i = container_info("default", Path::new(STATE), &c, Some(&t), false);
            (i.state, i.pid)
        };
        assert_eq!(at(Status::Created, 7), (ContainerState::Created, Some(7)));
        assert_eq!(at(Status::Running, 7), (ContainerState::Running, Some(7)));
        assert_eq!(at(Status::Paused, 7), (ContainerState::Paused, Some(7)));
        assert_eq!(at(Status::Pausing, 7), (ContainerState::Paused, Some(7)));
        assert_eq!(at(Status::Stopped, 7), (ContainerState::Stopped, None));
        assert_eq!(at(Status::Unknown, 7), (ContainerState::Running, Some(7)));
        assert_eq!(at(Status::Unknown, 0), (ContainerState::Created, None));
        // A status this build does not know (a newer containerd).
        let mut t = task("a", Status::Running, 7);
        t.status = 42;
        let i = container_info("default", Path::new(STATE), &c, Some(&t), false);
        assert_eq!((i.state, i.pid), (ContainerState::Running, Some(7)));

        // No task: stopped if it ran, created if it never did (ctr); a CRI
        // container without a task has exited (CRI deletes the task then).
        let i = container_info("default", Path::new(STATE), &c, None, true);
        assert_eq!((i.state, i.pid), (ContainerState::Stopped, None));
        let i = container_info("default", Path::new(STATE), &c, None, false);
        assert_eq!((i.state, i.pid), (ContainerState::Created, None));
        let cri = container("b", pod_labels("container"), CRI_SPEC);
        let i = container_info("k8s.io", Path::new(STATE), &cri, None, false);
        assert_eq!((i.state, i.pid), (ContainerState::Stopped, None));
    }

    #[test]
    fn tasks_are_found_with_or_without_container_id() {
        // containerd 1.6's ListTasks: `id` only.
        let old = Process {
            id: "a".into(),
            pid: 1,
            ..Default::default()
        };
        let new = task("b", Status::Running, 2);
        let exec = Process {
            container_id: "c".into(),
            id: "exec-1".into(),
            ..Default::default()
        };
        let tasks = [old, new, exec];
        assert_eq!(task_of(&tasks, "a").map(|t| t.pid), Some(1));
        assert_eq!(task_of(&tasks, "b").map(|t| t.pid), Some(2));
        assert_eq!(task_of(&tasks, "exec-1"), None);
        assert_eq!(task_of(&tasks, "c").map(|t| t.id.as_str()), Some("exec-1"));
        assert_eq!(task_of(&tasks, "z"), None);
    }

    #[test]
    fn a_bad_or_missing_spec_leaves_the_rootfs() {
        for spec_json in ["not json", "{\"mounts\": 3}", "", "{}"] {
            let c = container("a", labels(&[]), spec_json);
            let info = container_info("default", Path::new(STATE), &c, None, false);
            assert_eq!(
                paths(&info),
                ["/run/containerd/io.containerd.runtime.v2.task/default/a/rootfs"],
                "{spec_json:?}"
            );
        }
        let mut c = container("a", labels(&[]), "{}");
        c.spec = None;
        c.image = String::new();
        let info = container_info("default", Path::new(STATE), &c, None, false);
        assert_eq!(info.mounts.len(), 1);
        assert_eq!(info.image, None);
    }

    #[test]
    fn the_same_source_twice_is_listed_once() {
        let json = r#"{"mounts": [
            {"type": "bind", "source": "/srv/a", "destination": "/a"},
            {"type": "bind", "source": "/srv/a", "destination": "/b"}]}"#;
        let c = container("a", labels(&[]), json);
        let info = container_info("default", Path::new(STATE), &c, None, false);
        assert_eq!(info.mounts.len(), 2);
    }

    #[test]
    fn the_state_dir_comes_back_from_a_bundle() {
        assert_eq!(
            state_dir_of_bundle(Path::new(
                "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/abc"
            )),
            Some(PathBuf::from("/run/k3s/containerd"))
        );
        assert_eq!(
            bundle_dir(Path::new("/s"), "default", "x"),
            PathBuf::from("/s/io.containerd.runtime.v2.task/default/x")
        );
        assert_eq!(
            state_dir_of_bundle(Path::new("/run/containerd/x/y/z")),
            None
        );
        assert_eq!(state_dir_of_bundle(Path::new("/")), None);
    }

    #[test]
    fn the_upper_dir_is_found_in_the_snapshot_options() {
        let opts: Vec<String> = [
            "index=off",
            "workdir=/r/snapshots/3/work",
            "upperdir=/r/snapshots/3/fs",
            "lowerdir=/r/snapshots/1/fs",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            upper_dir_option(&opts),
            Some(PathBuf::from("/r/snapshots/3/fs"))
        );
        assert_eq!(upper_dir_option(&["rbind".to_string()]), None);
    }

    #[test]
    fn events_decode_by_topic() {
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 77,
            exit_status: 137,
            exited_at: None,
        };
        assert_eq!(
            decode_event("/tasks/exit", &exit.encode_to_vec()),
            Some(Change::Exited {
                id: "c1".into(),
                pid: 77
            })
        );
        // An exec'd process exiting is not the container stopping.
        let exec_exit = TaskExit {
            id: "exec-1".into(),
            ..exit.clone()
        };
        assert_eq!(
            decode_event("/tasks/exit", &exec_exit.encode_to_vec()),
            Some(Change::Refresh { id: "c1".into() })
        );
        let start = TaskStart {
            container_id: "c2".into(),
            pid: 5,
        };
        assert_eq!(
            decode_event("/tasks/start", &start.encode_to_vec()),
            Some(Change::Refresh { id: "c2".into() })
        );
        let delete = TaskDelete {
            container_id: "c3".into(),
            pid: 5,
            exit_status: 0,
            exited_at: None,
            id: "c3".into(),
        };
        assert_eq!(
            decode_event("/tasks/delete", &delete.encode_to_vec()),
            Some(Change::Refresh { id: "c3".into() })
        );
        let gone = ContainerDelete { id: "c4".into() };
        assert_eq!(
            decode_event("/containers/delete", &gone.encode_to_vec()),
            Some(Change::Deleted { id: "c4".into() })
        );
        let created = ContainerCreate {
            id: "c5".into(),
            image: "busybox".into(),
            runtime: None,
        };
        assert_eq!(
            decode_event("/containers/create", &created.encode_to_vec()),
            Some(Change::Refresh { id: "c5".into() })
        );
        let task = TaskCreate {
            container_id: "c6".into(),
            bundle: "/run/containerd/io.containerd.runtime.v2.task/default/c6".into(),
            pid: 9,
            ..Default::default()
        };
        assert_eq!(
            decode_event("/tasks/create", &task.encode_to_vec()),
            Some(Change::TaskCreated {
                id: "c6".into(),
                bundle: "/run/containerd/io.containerd.runtime.v2.task/default/c6".into(),
            })
        );
    }

    #[test]
    fn odd_events_are_skipped() {
        let gone = ContainerDelete { id: "c4".into() };
        assert_eq!(decode_event("/images/delete", &gone.encode_to_vec()), None);
        // Garbage, and a payload with no id.
        assert_eq!(decode_event("/tasks/exit", &[0xff, 0xff, 0xff]), None);
        assert_eq!(decode_event("/containers/delete", &[]), None);
        // A payload of another type: TaskStart's field 2 is a number where
        // TaskExit has a string.
        let start = TaskStart {
            container_id: "c2".into(),
            pid: 5,
        };
        assert_eq!(decode_event("/tasks/exit", &start.encode_to_vec()), None);
    }

    #[test]
    fn targets_match_ids_names_and_pods() {
        let cri = container("c0ffee11", pod_labels("container"), CRI_SPEC);
        let sandbox = container("5a5a", pod_labels("sandbox"), "{}");
        let plain = container("web1", labels(&[]), CTR_SPEC);
        assert_eq!(matches("c0ffee11", &cri), Some(Match::Id));
        assert_eq!(matches("c0ff", &cri), Some(Match::IdPrefix));
        assert_eq!(matches("nginx", &cri), Some(Match::Name));
        assert_eq!(matches("shop/web-7f9c", &cri), Some(Match::Name));
        assert_eq!(matches("shop/web-7f9c", &sandbox), Some(Match::Name));
        assert_eq!(matches("nginx", &sandbox), None);
        assert_eq!(matches("other/web-7f9c", &cri), None);
        assert_eq!(matches("web1", &plain), Some(Match::Id));
        assert_eq!(matches("web", &plain), Some(Match::IdPrefix));
        assert_eq!(matches("", &plain), None);
        assert!(Match::Id < Match::Name && Match::Name < Match::IdPrefix);
    }
}
