//! The span state machine on made-up stories, with a fixed clock: which
//! spans, in which trace, under which parent, at which times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use monitor_model::finding::{
    Consequence, ConsequenceKind, ContainerRef, Finding, FindingKind, HoldKind, Holder,
    HolderProcess, MountRef,
};
use monitor_model::{ContainerEvent, ContainerHint, ContainerInfo, ContainerState, Input, PodInfo};
use opentelemetry::trace::{SpanId, Status};
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;

use super::{names, Traces};

const S: u64 = 1_000_000_000;

/// Boottime 0 is 2026-01-01T00:00:00Z.
fn wall(k: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600) + Duration::from_nanos(k)
}

fn at(k: u64) -> SystemTime {
    wall(k)
}

fn info(id: &str) -> ContainerInfo {
    ContainerInfo {
        runtime: "cri".into(),
        namespace: Some("k8s.io".into()),
        id: id.into(),
        name: "web".into(),
        image: Some("registry:5000/shop/nginx:1.25".into()),
        pod: Some(PodInfo {
            name: "web-7f9c".into(),
            namespace: "shop".into(),
            uid: "uid-1".into(),
            container: Some("nginx".into()),
        }),
        mounts: vec!["/run/containerd/x/rootfs".into()],
        upper_dir: None,
        pid: Some(4242),
        state: ContainerState::Running,
        started_at: Some(10 * S),
    }
}

fn owner(id: &str) -> ContainerRef {
    let i = info(id);
    ContainerRef {
        runtime: i.runtime,
        namespace: i.namespace,
        id: i.id,
        name: i.name,
        image: i.image,
        pod: i.pod,
        state: ContainerState::Running,
        removed: false,
    }
}

fn holder(ns: u64, since: u64) -> Holder {
    Holder {
        mnt_ns: ns,
        hold: HoldKind::Copy,
        mount_point: Some("/run/containerd/x/rootfs".into()),
        propagation: "private",
        receives_host_umounts: Some(false),
        pid: Some(777),
        processes: vec![HolderProcess {
            pid: 777,
            comm: "ntpd".into(),
            exe: Some("/usr/sbin/ntpd".into()),
            cgroup: Some("/system.slice/ntpd.service".into()),
            unit: Some("ntpd.service".into()),
            uid: 0,
        }],
        more_processes: 0,
        nsfs_mounts: vec![],
        user_ns_locked: false,
        since: Some(since),
        since_source: "observed",
        via: Some("unshare"),
        created_by: None,
        parent_mnt_ns: Some(1),
        busy: vec![],
    }
}

fn finding(kind: FindingKind, at: u64, owner: Option<ContainerRef>) -> Finding {
    Finding {
        id: "ML-1".into(),
        kind,
        at,
        summary: format!("{} summary", kind.as_str()),
        mount: MountRef {
            path: "/run/containerd/x/rootfs".into(),
            path_hex: None,
            dev: Some("0:55".into()),
            fstype: "overlay".into(),
            source: "overlay".into(),
            container: ContainerHint::default(),
            owner,
            mounted_at: Some(10 * S),
            unmounted_at: None,
        },
        holders: vec![holder(4026532000, 12 * S)],
        consequence: Consequence {
            kind: ConsequenceKind::DetachedOnRemoval,
            text: "detached on removal".into(),
        },
        remedy: vec!["nsenter -t 777 -m umount /run/containerd/x/rootfs".into()],
        more_holders: 0,
        failed_call: None,
        resolution: None,
    }
}

fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {spans:#?}");
    found[0]
}

#[test]
fn a_container_lifecycle_is_one_trace_with_real_times() {
    let mut t = Traces::new(wall);
    t.input(&Input::Container(ContainerEvent::Seen {
        at: 11 * S,
        info: Box::new(info("c1")),
    }));
    t.finding(&finding(FindingKind::Risk, 15 * S, Some(owner("c1"))));
    let mut leak = finding(FindingKind::Leak, 30 * S, Some(owner("c1")));
    leak.mount.unmounted_at = Some(29 * S);
    t.finding(&leak);
    t.input(&Input::Container(ContainerEvent::Stopped {
        at: 28 * S,
        runtime: "cri".into(),
        id: "c1".into(),
    }));
    t.input(&Input::Container(ContainerEvent::Removed {
        at: 31 * S,
        runtime: "cri".into(),
        id: "c1".into(),
    }));
    // Removed, but the leak goes on: the container's root has ended, the
    // leak and the copy have not.
    let so_far: Vec<SpanData> = t.take_finished().collect();
    assert_eq!(so_far.len(), 2, "{so_far:#?}");
    let mut resolved = finding(FindingKind::Resolved, 40 * S, Some(owner("c1")));
    resolved.holders.clear();
    resolved.resolution = Some("the holder exited".into());
    t.finding(&resolved);
    let mut spans = so_far;
    spans.extend(t.take_finished());
    assert_eq!(t.open_containers(), 0, "forgotten once nothing is open");

    let root = one(&spans, names::CONTAINER);
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    assert_eq!(root.start_time, at(10 * S), "container started_at");
    assert_eq!(root.end_time, at(31 * S), "removal");
    assert_eq!(attr(root, "container.id"), Some(&"c1".into()));
    assert_eq!(attr(root, "k8s.pod.name"), Some(&"web-7f9c".into()));
    assert_eq!(attr(root, "k8s.namespace.name"), Some(&"shop".into()));
    assert_eq!(attr(root, "k8s.container.name"), Some(&"nginx".into()));
    assert_eq!(
        attr(root, "container.image.name"),
        Some(&"registry:5000/shop/nginx".into())
    );
    assert_eq!(attr(root, "process.pid"), Some(&4242i64.into()));
    let events: Vec<&str> = root.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(events, ["risk", "stopped"]);
    let risk = &root.events[0];
    assert!(risk
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "mountleak.remedy"
            && kv.value.as_str().contains("nsenter -t 777")));

    for s in &spans {
        assert_eq!(s.span_context.trace_id(), root.span_context.trace_id());
        assert!(s.start_time <= s.end_time, "{s:#?}");
        if s.name != names::CONTAINER {
            assert_eq!(s.parent_span_id, root.span_context.span_id());
        }
    }
    let copy = one(&spans, names::COPY);
    assert_eq!(copy.start_time, at(12 * S), "holder.since");
    assert_eq!(copy.end_time, at(40 * S), "released at the resolution");
    assert_eq!(attr(copy, "mountleak.mnt_ns"), Some(&4026532000i64.into()));
    assert_eq!(attr(copy, "process.command"), Some(&"ntpd".into()));
    assert_eq!(
        attr(copy, "process.linux.cgroup"),
        Some(&"/system.slice/ntpd.service".into())
    );
    assert_eq!(attr(copy, "mountleak.propagation"), Some(&"private".into()));
    let leak = one(&spans, names::LEAK);
    assert_eq!(leak.start_time, at(29 * S), "the host's umount");
    assert_eq!(leak.end_time, at(40 * S));
    let kinds: Vec<&str> = leak.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(kinds, ["leak", "resolved"]);
    let remove = one(&spans, names::REMOVE);
    assert_eq!(remove.start_time, at(31 * S));
    assert_eq!(
        attr(remove, "mountleak.removal.result"),
        Some(&"removed".into())
    );
}

#[test]
fn a_failed_removal_is_an_error_span_with_the_finding_on_it() {
    let mut t = Traces::new(wall);
    t.input(&Input::Container(ContainerEvent::Seen {
        at: 11 * S,
        info: Box::new(info("c2")),
    }));
    t.input(&Input::Container(ContainerEvent::RemovalFailed {
        at: 20 * S,
        runtime: "cri".into(),
        id: "c2".into(),
        message: "device or resource busy".into(),
    }));
    let mut f = finding(FindingKind::FailedRemoval, 20 * S, Some(owner("c2")));
    f.id = "ML-2".into();
    t.finding(&f);
    t.tick();
    let spans: Vec<SpanData> = t.take_finished().collect();
    let remove = one(&spans, names::REMOVE);
    assert!(matches!(remove.status, Status::Error { .. }));
    assert_eq!(remove.events.len(), 1);
    assert_eq!(remove.events[0].name, "failed_removal");
    assert_eq!(remove.start_time, at(20 * S));
}

#[test]
fn a_mount_without_a_runtime_has_its_own_trace() {
    let mut t = Traces::new(wall);
    let mut risk = finding(FindingKind::Risk, 15 * S, None);
    risk.mount.mounted_at = Some(5 * S);
    t.finding(&risk);
    let mut resolved = finding(FindingKind::Resolved, 20 * S, None);
    resolved.holders.clear();
    t.finding(&resolved);
    let spans: Vec<SpanData> = t.take_finished().collect();
    let root = one(&spans, names::MOUNT);
    assert_eq!(root.start_time, at(5 * S), "when it was mounted");
    assert_eq!(root.end_time, at(20 * S));
    assert_eq!(
        attr(root, "mountleak.mount.path"),
        Some(&"/run/containerd/x/rootfs".into())
    );
    let copy = one(&spans, names::COPY);
    assert_eq!(copy.parent_span_id, root.span_context.span_id());
    let kinds: Vec<&str> = root.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(kinds, ["risk", "resolved"]);
}

#[test]
fn a_holder_that_lets_go_ends_its_span_while_others_hold() {
    let mut t = Traces::new(wall);
    let mut two = finding(FindingKind::Risk, 15 * S, None);
    two.holders.push(holder(4026532001, 13 * S));
    t.finding(&two);
    t.finding(&finding(FindingKind::Risk, 18 * S, None));
    let spans: Vec<SpanData> = t.take_finished().collect();
    let copy = one(&spans, names::COPY);
    assert_eq!(attr(copy, "mountleak.mnt_ns"), Some(&4026532001i64.into()));
    assert_eq!(copy.end_time, at(18 * S));
}

#[test]
fn stopping_ends_every_open_span_marked_incomplete() {
    let mut t = Traces::new(wall);
    t.input(&Input::Container(ContainerEvent::Seen {
        at: 11 * S,
        info: Box::new(info("c3")),
    }));
    t.finding(&finding(FindingKind::Risk, 15 * S, Some(owner("c3"))));
    t.end_all(at(50 * S));
    let spans: Vec<SpanData> = t.take_finished().collect();
    assert_eq!(spans.len(), 2);
    for s in &spans {
        assert_eq!(attr(s, "mountleak.incomplete"), Some(&true.into()));
        assert_eq!(s.end_time, at(50 * S));
    }
}

#[test]
fn an_inventory_without_the_container_removes_it() {
    let mut t = Traces::new(wall);
    t.input(&Input::Container(ContainerEvent::Seen {
        at: 11 * S,
        info: Box::new(info("c4")),
    }));
    t.input(&Input::Container(ContainerEvent::Inventory {
        at: 60 * S,
        runtime: "cri".into(),
        ids: vec![],
    }));
    let spans: Vec<SpanData> = t.take_finished().collect();
    let root = one(&spans, names::CONTAINER);
    assert_eq!(root.end_time, at(60 * S));
    assert_eq!(
        attr(root, "mountleak.removal.source"),
        Some(&"inventory".into())
    );
    assert_eq!(t.open_containers(), 0);
}

#[test]
fn image_names_split_off_the_tag_not_the_registry_port() {
    assert_eq!(super::split_image("nginx:1.25"), ("nginx", Some("1.25")));
    assert_eq!(super::split_image("reg:5000/a/b"), ("reg:5000/a/b", None));
    assert_eq!(
        super::split_image("reg:5000/a/b@sha256:abc"),
        ("reg:5000/a/b", None)
    );
}
