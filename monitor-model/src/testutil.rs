//! Builders for synthetic input streams (tests only).

use crate::input::*;
use crate::{Finding, FindingKind, Output};

pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

pub const HOST: NsId = 4026531841;
pub const HOLDER: NsId = 4026532500;
pub const OTHER: NsId = 4026532600;

pub const DOCKER_PATH: &str = "/var/lib/docker/overlay2/0f1e2d3c/merged";
pub const OVERLAY_DEV: Dev = Dev {
    major: 0,
    minor: 52,
};

pub fn task(pid: Pid, comm: &str) -> Task {
    Task {
        tid: pid,
        tgid: pid,
        uid: 0,
        comm: comm.into(),
        cgroup_id: 1,
    }
}

pub fn process(pid: Pid, comm: &str, start: Ktime, cgroup: &str) -> ProcessInfo {
    ProcessInfo {
        pid,
        start,
        comm: comm.into(),
        exe: Some(format!("/usr/sbin/{comm}").into()),
        cgroup: Some(cgroup.into()),
        uid: 0,
        user_ns: Some(4026531837),
        ..ProcessInfo::default()
    }
}

/// A mount line: `shared`/`master` as in mountinfo's optional fields.
pub fn mount(
    id: u64,
    dev: Dev,
    mount_point: &str,
    fstype: &str,
    shared: Option<u32>,
    master: Option<u32>,
) -> MountEntry {
    MountEntry {
        mount_id: id,
        parent_id: 1,
        dev,
        root: "/".into(),
        mount_point: mount_point.into(),
        fstype: fstype.into(),
        source: fstype.into(),
        shared,
        master,
        unbindable: false,
    }
}

/// The host's root plus a shared `/var/lib/docker` tree.
pub fn host_base() -> Vec<MountEntry> {
    vec![
        mount(
            1,
            Dev {
                major: 254,
                minor: 0,
            },
            "/",
            "ext4",
            None,
            None,
        ),
        mount(
            2,
            Dev {
                major: 0,
                minor: 30,
            },
            "/var/lib/docker",
            "tmpfs",
            Some(1),
            None,
        ),
    ]
}

pub fn ns(id: NsId, mounts: Vec<MountEntry>, members: Vec<ProcessInfo>) -> NamespaceSnapshot {
    NamespaceSnapshot {
        ns: id,
        mounts,
        members,
        ..NamespaceSnapshot::default()
    }
}

pub fn snapshot(at: Ktime, namespaces: Vec<NamespaceSnapshot>) -> Input {
    let alive = namespaces.iter().map(|n| n.ns).collect();
    Input::Snapshot(Snapshot {
        taken_at: at,
        alive: Some(alive),
        namespaces,
        pins: Vec::new(),
        pins_scanned: true,
        self_ns: Some(HOST),
    })
}

pub fn syscall(at: Ktime, who: &Task, ns: NsId, ns_after: NsId, ret: i64, call: Call) -> Input {
    Input::Syscall(SyscallEvent {
        start: at - 1000,
        end: at,
        task: who.clone(),
        ns,
        ns_after,
        ret,
        call,
    })
}

pub fn unshare(at: Ktime, who: &Task, from: NsId, to: NsId) -> Input {
    syscall(
        at,
        who,
        from,
        to,
        0,
        Call::Unshare {
            flags: crate::flags::CLONE_NEWNS,
        },
    )
}

pub fn make(at: Ktime, who: &Task, ns: NsId, path: &str, prop_flags: u64) -> Input {
    let call = Call::Mount {
        source: PathArg::new("none"),
        target: PathArg::new(path),
        fstype: String::new(),
        flags: prop_flags,
    };
    syscall(at, who, ns, ns, 0, call)
}

pub fn mount_call(at: Ktime, who: &Task, ns: NsId, path: &str, fstype: &str) -> Input {
    let call = Call::Mount {
        source: PathArg::new(fstype),
        target: PathArg::new(path),
        fstype: fstype.into(),
        flags: 0,
    };
    syscall(at, who, ns, ns, 0, call)
}

pub fn umount(at: Ktime, who: &Task, ns: NsId, path: &str, ret: i64) -> Input {
    syscall(
        at,
        who,
        ns,
        ns,
        ret,
        Call::Umount {
            target: PathArg::new(path),
            flags: 0,
        },
    )
}

pub fn exit(at: Ktime, ns: NsId, pid: Pid) -> Input {
    Input::Process(ProcessEvent {
        at,
        ns,
        kind: ProcessEventKind::Exit { pid },
    })
}

pub fn findings(outputs: &[Output]) -> Vec<&Finding> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Finding(f) => Some(&**f),
            _ => None,
        })
        .collect()
}

pub fn kinds(outputs: &[Output]) -> Vec<FindingKind> {
    findings(outputs).iter().map(|f| f.kind).collect()
}
