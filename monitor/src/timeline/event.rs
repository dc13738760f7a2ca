//! What the store keeps: the events that tell how a container mount ended up
//! held somewhere else, as [`Record`]s (indexed keys plus the raw event as
//! JSON). Which inputs are worth keeping ([`wanted`]) is decided on the
//! daemon's event path, so it is cheap and allocates nothing; turning them
//! into records ([`Converter`]) happens on the store's writer thread.
//!
//! The raw JSON of each kind is a stable schema (README "Timeline JSON",
//! `event`): fields are only ever added.
//!
//! May import: monitor_model, serde, serde_json, humantime, and
//! `crate::output` for the finding JSON. No I/O here: the wall clock and the
//! cgroup lookup are passed in.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use monitor_model::finding::unit_from_cgroup;
use monitor_model::flags::{CLONE_NEWNS, MS_PROPAGATION, MS_REC};
use monitor_model::{
    Call, ContainerEvent, ContainerInfo, Finding, Input, Ktime, NsId, Patterns, Pid,
    ProcessEventKind, SyscallEvent,
};
use serde::Serialize;
use serde_json::{json, Value};

/// The kinds of stored events. The numbers are what the store keeps: a
/// retired number is never reused (comment it out, as with monitor-common's
/// event ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// A new mount namespace: `unshare(CLONE_NEWNS)`, or a clone with
    /// `CLONE_NEWNS` (`task_newtask`, and the `clone`/`clone3` call itself).
    NsCreated = 1,
    /// A propagation change: `mount(MS_PRIVATE|MS_SLAVE|MS_SHARED|…)` or
    /// `mount_setattr` with a propagation.
    Propagation = 2,
    /// A container path mounted (`mount`, `move_mount`), or bind-mounted
    /// elsewhere.
    Mount = 3,
    /// An umount of a container path, in any namespace, failed or not.
    Umount = 4,
    /// An rmdir of a container mount point, failed or not.
    Rmdir = 5,
    /// A process exited in a namespace the model watches (holders).
    ProcessExit = 6,
    /// A fork in a watched namespace.
    ProcessFork = 7,
    ContainerSeen = 10,
    ContainerStopped = 11,
    ContainerRemoved = 12,
    ContainerRemovalFailed = 13,
    /// A remedy `mountleak fix --yes` carried out, with its outcome.
    Remedy = 14,
    /// A finding, as `mountleak run --json` prints it.
    Finding = 20,
    /// A daemon notice (`ready`, `stopped`, `lost`, `degraded`, `runtime`).
    Daemon = 30,
    /// The store itself could not keep some events (queue full, disk full).
    StoreGap = 31,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::NsCreated,
        Kind::Propagation,
        Kind::Mount,
        Kind::Umount,
        Kind::Rmdir,
        Kind::ProcessExit,
        Kind::ProcessFork,
        Kind::ContainerSeen,
        Kind::ContainerStopped,
        Kind::ContainerRemoved,
        Kind::ContainerRemovalFailed,
        Kind::Remedy,
        Kind::Finding,
        Kind::Daemon,
        Kind::StoreGap,
    ];

    /// The `type` of the raw event JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NsCreated => "ns_created",
            Kind::Propagation => "propagation",
            Kind::Mount => "mount",
            Kind::Umount => "umount",
            Kind::Rmdir => "rmdir",
            Kind::ProcessExit => "process_exit",
            Kind::ProcessFork => "process_fork",
            Kind::ContainerSeen => "container_seen",
            Kind::ContainerStopped => "container_stopped",
            Kind::ContainerRemoved => "container_removed",
            Kind::ContainerRemovalFailed => "container_removal_failed",
            Kind::Remedy => "remedy",
            Kind::Finding => "finding",
            Kind::Daemon => "daemon",
            Kind::StoreGap => "store_gap",
        }
    }

    pub fn from_code(code: i64) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as i64 == code)
    }

    /// Kinds at or above this are about mountleak itself (kept in a small
    /// index of their own, by time).
    pub const FIRST_DAEMON_CODE: i64 = 30;
}

/// An extra key of a record that has several (a finding's holders, a
/// container's mounts): kept in the `refs` table so each is indexed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    Ns(NsId),
    Pid(Pid),
    Path(Vec<u8>),
}

/// One stored event: its times, its indexed keys and the raw JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// `CLOCK_BOOTTIME` ns of the event (meaningful within one boot: see the
    /// run's `boot_id`).
    pub kt: Ktime,
    /// Unix ns, converted when the record was made (a few ms after the event).
    pub wall_ns: i64,
    pub kind: Kind,
    pub pid: Option<Pid>,
    pub mnt_ns: Option<NsId>,
    pub path: Option<Vec<u8>>,
    /// Container id.
    pub container: Option<String>,
    /// Container name.
    pub name: Option<String>,
    /// Pod as `namespace/name`.
    pub pod: Option<String>,
    pub refs: Vec<Ref>,
    /// The raw event (stable schema).
    pub data: String,
}

/// Whether `input` is part of the story. Runs on the daemon's event path:
/// no allocation, a glob match at most.
pub fn wanted(input: &Input, patterns: &Patterns) -> bool {
    match input {
        Input::Syscall(ev) => syscall_kind(ev, patterns).is_some(),
        Input::Process(_) => true,
        Input::Container(c) => !matches!(c, ContainerEvent::Inventory { .. }),
        // Snapshots are the model's business (findings carry what they
        // established); losses arrive as the daemon's `lost` notice.
        Input::Snapshot(_) | Input::Lost { .. } | Input::Tick { .. } => false,
    }
}

/// Which kind a syscall is stored as, if at all.
fn syscall_kind(ev: &SyscallEvent, patterns: &Patterns) -> Option<Kind> {
    let ok = ev.ret >= 0;
    match &ev.call {
        Call::Unshare { flags } if ok && flags & CLONE_NEWNS != 0 && ev.ns_after != ev.ns => {
            Some(Kind::NsCreated)
        }
        Call::NewTask {
            child_ns, flags, ..
        } if *child_ns != 0 && *child_ns != ev.ns && flags & CLONE_NEWNS != 0 => {
            Some(Kind::NsCreated)
        }
        Call::Clone { flags, .. } if ev.ret > 0 && flags & CLONE_NEWNS != 0 => {
            Some(Kind::NsCreated)
        }
        Call::Mount { flags, .. } if flags & MS_PROPAGATION != 0 => Some(Kind::Propagation),
        Call::Mount { source, target, .. }
            if patterns.matches(&target.path) || patterns.matches(&source.path) =>
        {
            Some(Kind::Mount)
        }
        Call::MoveMount { from, to, .. }
            if patterns.matches(&to.path) || patterns.matches(&from.path) =>
        {
            Some(Kind::Mount)
        }
        Call::MountSetattr { propagation, .. } if *propagation != 0 => Some(Kind::Propagation),
        Call::Umount { target, .. } if patterns.matches(&target.path) => Some(Kind::Umount),
        Call::Rmdir { path } if patterns.matches(&path.path) => Some(Kind::Rmdir),
        _ => None,
    }
}

/// Unix ns of a `SystemTime` (negative before 1970, saturating).
pub fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// RFC3339 with milliseconds, UTC, of unix ns.
pub fn rfc3339_ns(ns: i64) -> String {
    let t = if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_nanos(ns.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// The name of an errno the story mentions (`EBUSY`), or its number.
pub fn errno_name(errno: i64) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        13 => "EACCES",
        16 => "EBUSY",
        20 => "ENOTDIR",
        22 => "EINVAL",
        28 => "ENOSPC",
        30 => "EROFS",
        39 => "ENOTEMPTY",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// The propagation a `MS_*` propagation flag (or `mount_setattr`'s
/// `propagation`) sets.
pub fn propagation_name(flags: u64) -> &'static str {
    use monitor_model::flags::{MS_PRIVATE, MS_SHARED, MS_SLAVE, MS_UNBINDABLE};
    if flags & MS_PRIVATE != 0 {
        "private"
    } else if flags & MS_SLAVE != 0 {
        "slave"
    } else if flags & MS_SHARED != 0 {
        "shared"
    } else if flags & MS_UNBINDABLE != 0 {
        "unbindable"
    } else {
        "unknown"
    }
}

/// Names of the `CLONE_NEW*` flags set in `flags`.
fn clone_flag_names(flags: u64) -> Vec<&'static str> {
    const NAMES: [(u64, &str); 8] = [
        (0x0002_0000, "CLONE_NEWNS"),
        (0x0200_0000, "CLONE_NEWCGROUP"),
        (0x0400_0000, "CLONE_NEWUTS"),
        (0x0800_0000, "CLONE_NEWIPC"),
        (0x1000_0000, "CLONE_NEWUSER"),
        (0x2000_0000, "CLONE_NEWPID"),
        (0x4000_0000, "CLONE_NEWNET"),
        (0x0000_0080, "CLONE_NEWTIME"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// A path for JSON: text (lossy) plus the exact bytes in hex when they are
/// not UTF-8.
#[derive(Serialize)]
struct JsonPath<'a> {
    #[serde(rename = "path")]
    text: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
}

fn json_path(bytes: &[u8]) -> JsonPath<'_> {
    JsonPath {
        text: String::from_utf8_lossy(bytes),
        path_hex: std::str::from_utf8(bytes)
            .is_err()
            .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// What the store keeps of a syscall besides its columns (`type`, `time`,
/// `ktime_ns`, `pid`, `mnt_ns`, `path` are columns; [`expand`] puts them
/// back). One struct for every call keeps the schema flat; fields that do
/// not apply are left out.
#[derive(Serialize)]
struct SyscallJson<'a> {
    call: &'static str,
    /// Only when it is not the process (a thread made the call).
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<Pid>,
    uid: u32,
    comm: &'a str,
    cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    /// The caller's namespace, for a creation (the event's `mnt_ns` is the
    /// new one).
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_mnt_ns: Option<NsId>,
    ret: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<String>,
    /// From entry to exit.
    duration_ns: Ktime,
    flags: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    flag_names: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    child_pid: Option<Pid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fstype: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    propagation: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recursive: Option<bool>,
}

/// Whether a kind's `pid`, `mnt_ns` and `path` live only in the columns
/// (the frequent kinds, to keep the store small).
fn keys_in_columns(kind: Kind) -> bool {
    (kind as u8) <= Kind::ProcessFork as u8
}

/// The full raw event of a stored row: `type`, `time` and `ktime_ns` from
/// the columns, then (for syscall and process events) `pid`, `mnt_ns` and
/// `path` (+ `path_hex`), then the stored fields.
pub fn expand(
    kind: Kind,
    wall_ns: i64,
    kt: i64,
    pid: Option<Pid>,
    mnt_ns: Option<NsId>,
    path: Option<&[u8]>,
    data: Value,
) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("type".into(), Value::from(kind.as_str()));
    o.insert("time".into(), Value::from(rfc3339_ns(wall_ns)));
    o.insert("ktime_ns".into(), Value::from(kt));
    if keys_in_columns(kind) {
        if let Some(p) = pid {
            o.insert("pid".into(), Value::from(p));
        }
        if let Some(n) = mnt_ns {
            o.insert("mnt_ns".into(), Value::from(n));
        }
        if let Some(p) = path {
            if let Ok(Value::Object(jp)) = serde_json::to_value(json_path(p)) {
                o.extend(jp);
            }
        }
    }
    if let Value::Object(rest) = data {
        o.extend(rest);
    }
    Value::Object(o)
}

/// Turns inputs, findings and notices into records. Keeps the container
/// names it has seen, so a `Stopped` (which carries only the id) is still
/// found by name.
pub struct Converter {
    patterns: Patterns,
    /// Container id → (name, pod as `ns/name`).
    names: HashMap<String, (String, Option<String>)>,
}

/// Bound on remembered container names (a resync re-teaches them).
const NAMES_CAP: usize = 16_384;

impl Converter {
    pub fn new(patterns: Patterns) -> Self {
        Converter {
            patterns,
            names: HashMap::new(),
        }
    }

    /// The record for one input, if it is part of the story. `wall` converts
    /// boottime to unix ns; `cgroup_of` reads a live process's cgroup path
    /// (for the creators of namespaces; `None` once it has exited).
    pub fn input(
        &mut self,
        input: &Input,
        wall: &dyn Fn(Ktime) -> i64,
        cgroup_of: &dyn Fn(Pid) -> Option<String>,
    ) -> Option<Record> {
        match input {
            Input::Syscall(ev) => self.syscall(ev, wall, cgroup_of),
            Input::Process(p) => {
                let (kind, pid, data) = match &p.kind {
                    ProcessEventKind::Exit { pid } => (Kind::ProcessExit, *pid, json!({})),
                    ProcessEventKind::Fork {
                        parent,
                        child,
                        comm,
                    } => (
                        Kind::ProcessFork,
                        *child,
                        json!({"parent": parent, "comm": comm}),
                    ),
                };
                Some(Record {
                    kt: p.at,
                    wall_ns: wall(p.at),
                    kind,
                    pid: Some(pid),
                    mnt_ns: Some(p.ns),
                    path: None,
                    container: None,
                    name: None,
                    pod: None,
                    refs: Vec::new(),
                    data: data.to_string(),
                })
            }
            Input::Container(c) => self.container(c, wall),
            Input::Snapshot(_) | Input::Lost { .. } | Input::Tick { .. } => None,
        }
    }

    fn syscall(
        &mut self,
        ev: &SyscallEvent,
        wall: &dyn Fn(Ktime) -> i64,
        cgroup_of: &dyn Fn(Pid) -> Option<String>,
    ) -> Option<Record> {
        let kind = syscall_kind(ev, &self.patterns)?;
        let at = ev.end;
        let wall_ns = wall(at);
        let mut j = SyscallJson {
            call: "",
            tid: (ev.task.tid != ev.task.tgid).then_some(ev.task.tid),
            uid: ev.task.uid,
            comm: &ev.task.comm,
            cgroup_id: ev.task.cgroup_id,
            cgroup: None,
            unit: None,
            parent_mnt_ns: None,
            ret: ev.ret,
            errno: (ev.ret < 0).then(|| errno_name(-ev.ret)),
            duration_ns: ev.end.saturating_sub(ev.start),
            flags: 0,
            flag_names: Vec::new(),
            child_pid: None,
            path_truncated: None,
            source: None,
            fstype: None,
            propagation: None,
            recursive: None,
        };
        let mut mnt_ns = Some(ev.ns);
        let mut path: Option<&[u8]> = None;
        let cgroup;
        match &ev.call {
            Call::Unshare { flags } => {
                j.call = "unshare";
                j.flags = *flags;
                j.flag_names = clone_flag_names(*flags);
                mnt_ns = Some(ev.ns_after);
                j.parent_mnt_ns = Some(ev.ns);
            }
            Call::NewTask {
                child,
                child_ns,
                flags,
            } => {
                j.call = "clone";
                j.flags = *flags;
                j.flag_names = clone_flag_names(*flags);
                mnt_ns = Some(*child_ns);
                j.parent_mnt_ns = Some(ev.ns);
                j.child_pid = Some(*child);
            }
            Call::Clone { flags, clone3 } => {
                // The call in the parent; `task_newtask` names the new
                // namespace. This one only says clone from clone3.
                j.call = if *clone3 { "clone3" } else { "clone" };
                j.flags = *flags;
                j.flag_names = clone_flag_names(*flags);
                mnt_ns = None;
                j.parent_mnt_ns = Some(ev.ns);
                j.child_pid = Pid::try_from(ev.ret).ok();
            }
            Call::Mount {
                source,
                target,
                fstype,
                flags,
            } => {
                j.call = "mount";
                j.flags = *flags;
                path = Some(target.path.as_bytes());
                j.path_truncated = target.truncated.then_some(true);
                j.source = Some(lossy(source.path.as_bytes()));
                j.fstype = (!fstype.is_empty()).then_some(fstype.as_str());
                if kind == Kind::Propagation {
                    j.propagation = Some(propagation_name(*flags));
                    j.recursive = Some(flags & MS_REC != 0);
                }
            }
            Call::MoveMount { from, to, flags } => {
                j.call = "move_mount";
                j.flags = *flags;
                path = Some(to.path.as_bytes());
                j.source = Some(lossy(from.path.as_bytes()));
            }
            Call::MountSetattr {
                path: p,
                flags,
                propagation,
                ..
            } => {
                j.call = "mount_setattr";
                j.flags = *flags;
                path = Some(p.path.as_bytes());
                j.propagation = Some(propagation_name(*propagation));
                j.recursive = Some(flags & monitor_model::flags::AT_RECURSIVE != 0);
            }
            Call::Umount { target, flags } => {
                j.call = "umount";
                j.flags = *flags;
                path = Some(target.path.as_bytes());
                j.path_truncated = target.truncated.then_some(true);
            }
            Call::Rmdir { path: p } => {
                j.call = "rmdir";
                path = Some(p.path.as_bytes());
                j.path_truncated = p.truncated.then_some(true);
            }
            Call::Setns { .. }
            | Call::OpenTree { .. }
            | Call::Fsmount { .. }
            | Call::PivotRoot { .. } => return None,
        }
        if kind == Kind::NsCreated {
            // The creator's cgroup names its service (ntpd.service); read now,
            // while it most likely still runs.
            cgroup = cgroup_of(ev.task.tgid);
            j.cgroup = cgroup.as_deref();
            j.unit = cgroup.as_deref().and_then(unit_from_cgroup);
        }
        let data = serde_json::to_string(&j).unwrap_or_default();
        Some(Record {
            kt: at,
            wall_ns,
            kind,
            pid: Some(ev.task.tgid),
            mnt_ns,
            path: path.map(<[u8]>::to_vec),
            container: None,
            name: None,
            pod: None,
            refs: Vec::new(),
            data,
        })
    }

    fn container(&mut self, c: &ContainerEvent, wall: &dyn Fn(Ktime) -> i64) -> Option<Record> {
        let at = c.at();
        let wall_ns = wall(at);
        let mut rec = Record {
            kt: at,
            wall_ns,
            kind: Kind::ContainerSeen,
            pid: None,
            mnt_ns: None,
            path: None,
            container: None,
            name: None,
            pod: None,
            refs: Vec::new(),
            data: String::new(),
        };
        let base = |_: Kind| json!({});
        let mut data = match c {
            ContainerEvent::Seen { info, .. } => {
                rec.kind = Kind::ContainerSeen;
                let pod = pod_key(info);
                if self.names.len() >= NAMES_CAP {
                    self.names.clear();
                }
                self.names
                    .insert(info.id.clone(), (info.name.clone(), pod.clone()));
                rec.container = Some(info.id.clone());
                rec.name = Some(info.name.clone()).filter(|n| !n.is_empty());
                rec.pod = pod;
                rec.pid = info.pid;
                rec.refs = info
                    .mounts
                    .iter()
                    .map(|m| Ref::Path(m.as_bytes().to_vec()))
                    .collect();
                let mut d = base(rec.kind);
                let o = d.as_object_mut()?;
                o.insert("runtime".into(), json!(info.runtime));
                o.insert("namespace".into(), json!(info.namespace));
                o.insert("id".into(), json!(info.id));
                o.insert("name".into(), json!(info.name));
                o.insert("image".into(), json!(info.image));
                o.insert("pod".into(), json!(info.pod));
                o.insert("state".into(), json!(info.state));
                o.insert("pid".into(), json!(info.pid));
                o.insert("started_ktime_ns".into(), json!(info.started_at));
                o.insert(
                    "started_at".into(),
                    json!(info.started_at.map(|t| rfc3339_ns(wall(t)))),
                );
                o.insert(
                    "mounts".into(),
                    Value::Array(
                        info.mounts
                            .iter()
                            .map(|m| json!(json_path(m.as_bytes())))
                            .collect(),
                    ),
                );
                d
            }
            ContainerEvent::Stopped { runtime, id, .. } => {
                rec.kind = Kind::ContainerStopped;
                rec.container = Some(id.clone());
                let mut d = base(rec.kind);
                d["runtime"] = json!(runtime);
                d["id"] = json!(id);
                d
            }
            ContainerEvent::Removed { runtime, id, .. } => {
                rec.kind = Kind::ContainerRemoved;
                rec.container = Some(id.clone());
                let mut d = base(rec.kind);
                d["runtime"] = json!(runtime);
                d["id"] = json!(id);
                d
            }
            ContainerEvent::RemovalFailed {
                runtime,
                id,
                message,
                ..
            } => {
                rec.kind = Kind::ContainerRemovalFailed;
                rec.container = Some(id.clone());
                let mut d = base(rec.kind);
                d["runtime"] = json!(runtime);
                d["id"] = json!(id);
                d["message"] = json!(message);
                d
            }
            ContainerEvent::Inventory { .. } => return None,
        };
        if rec.kind != Kind::ContainerSeen {
            if let Some(id) = &rec.container {
                if let Some((name, pod)) = self.names.get(id) {
                    rec.name = Some(name.clone()).filter(|n| !n.is_empty());
                    rec.pod = pod.clone();
                    data["name"] = json!(name);
                    data["pod_key"] = json!(pod);
                }
            }
        }
        rec.data = data.to_string();
        Some(rec)
    }

    /// A finding: the full JSON `mountleak run --json` prints, under
    /// `finding`. `finding_json` converts its times itself.
    pub fn finding(
        &mut self,
        f: &Finding,
        finding_json: Value,
        wall: &dyn Fn(Ktime) -> i64,
    ) -> Record {
        let wall_ns = wall(f.at);
        let owner = f.mount.owner.as_ref();
        let mut refs = Vec::new();
        for h in &f.holders {
            refs.push(Ref::Ns(h.mnt_ns));
            if let Some(pid) = h.pid {
                refs.push(Ref::Pid(pid));
            }
            for p in &h.processes {
                refs.push(Ref::Pid(p.pid));
            }
            if let Some(c) = &h.created_by {
                refs.push(Ref::Pid(c.pid));
            }
        }
        if let Some(call) = &f.failed_call {
            if call.path != f.mount.path && !call.path.is_empty() {
                refs.push(Ref::Path(call.path.as_bytes().to_vec()));
            }
        }
        refs.sort_by_key(|r| format!("{r:?}"));
        refs.dedup();
        let data = json!({ "finding": finding_json });
        Record {
            kt: f.at,
            wall_ns,
            kind: Kind::Finding,
            pid: None,
            mnt_ns: None,
            path: (!f.mount.path.is_empty()).then(|| f.mount.path.as_bytes().to_vec()),
            container: owner.map(|o| o.id.clone()),
            name: owner.map(|o| o.name.clone()).filter(|n| !n.is_empty()),
            pod: owner
                .and_then(|o| o.pod.as_ref())
                .map(|p| format!("{}/{}", p.namespace, p.name)),
            refs,
            data: data.to_string(),
        }
    }

    /// A daemon notice.
    pub fn notice(
        &mut self,
        at: Ktime,
        kind: &str,
        message: &str,
        fields: &Value,
        wall: &dyn Fn(Ktime) -> i64,
    ) -> Record {
        let wall_ns = wall(at);
        let data = json!({
            "notice": kind,
            "message": message,
            "fields": fields,
        });
        daemon_record(Kind::Daemon, at, wall_ns, data)
    }
}

/// A remedy `mountleak fix --yes` carried out for finding `finding` on the
/// mount at `path`: `step` is fix's record of it (step number, command,
/// action, status, detail, errno), kept as given.
pub fn remedy_record(
    at: Ktime,
    wall_ns: i64,
    finding: &str,
    path: Option<&[u8]>,
    container: Option<&str>,
    step: Value,
) -> Record {
    let mut data = json!({ "finding": finding, "step": step });
    if let Some(p) = path {
        if let (Some(o), Ok(Value::Object(jp))) =
            (data.as_object_mut(), serde_json::to_value(json_path(p)))
        {
            o.extend(jp);
        }
    }
    Record {
        kt: at,
        wall_ns,
        kind: Kind::Remedy,
        pid: None,
        mnt_ns: None,
        path: path.map(<[u8]>::to_vec),
        container: container.map(str::to_string),
        name: None,
        pod: None,
        refs: Vec::new(),
        data: data.to_string(),
    }
}

/// The store's own gap marker: `dropped` events were not kept between
/// `from_ns` and `to_ns` (unix ns), and why.
pub fn gap_record(at: Ktime, wall_ns: i64, dropped: u64, reason: &str, from_ns: i64) -> Record {
    let data = json!({
        "dropped": dropped,
        "reason": reason,
        "from": rfc3339_ns(from_ns),
        "to": rfc3339_ns(wall_ns),
    });
    daemon_record(Kind::StoreGap, at, wall_ns, data)
}

fn daemon_record(kind: Kind, at: Ktime, wall_ns: i64, data: Value) -> Record {
    Record {
        kt: at,
        wall_ns,
        kind,
        pid: None,
        mnt_ns: None,
        path: None,
        container: None,
        name: None,
        pod: None,
        refs: Vec::new(),
        data: data.to_string(),
    }
}

fn pod_key(info: &ContainerInfo) -> Option<String> {
    info.pod
        .as_ref()
        .map(|p| format!("{}/{}", p.namespace, p.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_model::{PathArg, PodInfo, ProcessEvent, Task};

    fn wall(kt: Ktime) -> i64 {
        1_800_000_000_000_000_000 + kt as i64
    }

    fn no_cgroup(_: Pid) -> Option<String> {
        None
    }

    fn sys(call: Call, ns: NsId, ns_after: NsId, ret: i64) -> Input {
        Input::Syscall(SyscallEvent {
            start: 10,
            end: 20,
            task: Task {
                tid: 7,
                tgid: 7,
                uid: 0,
                comm: "ntpd".into(),
                cgroup_id: 99,
            },
            ns,
            ns_after,
            ret,
            call,
        })
    }

    /// The raw event as `timeline --json` shows it.
    fn full(r: &Record) -> Value {
        expand(
            r.kind,
            r.wall_ns,
            r.kt as i64,
            r.pid,
            r.mnt_ns,
            r.path.as_deref(),
            serde_json::from_str(&r.data).unwrap(),
        )
    }

    fn conv() -> Converter {
        Converter::new(Patterns::default())
    }

    #[test]
    fn unshare_of_a_mount_namespace_is_a_creation_with_its_service() {
        let input = sys(Call::Unshare { flags: CLONE_NEWNS }, 1, 2, 0);
        assert!(wanted(&input, &Patterns::default()));
        let r = conv()
            .input(&input, &wall, &|_| {
                Some("0::/system.slice/ntpd.service".into())
            })
            .unwrap();
        assert_eq!(r.kind, Kind::NsCreated);
        assert_eq!((r.pid, r.mnt_ns), (Some(7), Some(2)));
        let v = full(&r);
        assert_eq!(v["type"], "ns_created");
        assert_eq!(v["mnt_ns"], 2);
        assert_eq!(v["call"], "unshare");
        assert_eq!(v["parent_mnt_ns"], 1);
        assert_eq!(v["unit"], "ntpd.service");
        assert_eq!(v["flag_names"], json!(["CLONE_NEWNS"]));
    }

    #[test]
    fn uninteresting_calls_are_not_kept() {
        let p = Patterns::default();
        // A failed unshare, an unshare of another namespace type, a mount
        // outside the container trees, a setns.
        assert!(!wanted(
            &sys(Call::Unshare { flags: CLONE_NEWNS }, 1, 1, -1),
            &p
        ));
        assert!(!wanted(
            &sys(Call::Unshare { flags: 0x4000_0000 }, 1, 1, 0),
            &p
        ));
        let tmp = Call::Mount {
            source: PathArg::new("tmpfs"),
            target: PathArg::new("/tmp/x"),
            fstype: "tmpfs".into(),
            flags: 0,
        };
        assert!(!wanted(&sys(tmp, 1, 1, 0), &p));
        assert!(!wanted(
            &sys(
                Call::Setns {
                    nstype: CLONE_NEWNS
                },
                1,
                2,
                0
            ),
            &p
        ));
        assert!(!wanted(&Input::Tick { now: 5 }, &p));
    }

    #[test]
    fn container_paths_and_propagation_are_kept_with_their_outcome() {
        let p = Patterns::default();
        let merged = "/var/lib/docker/overlay2/abc/merged";
        let umount = sys(
            Call::Umount {
                target: PathArg::new(merged),
                flags: 0,
            },
            1,
            1,
            -16,
        );
        assert!(wanted(&umount, &p));
        let r = conv().input(&umount, &wall, &no_cgroup).unwrap();
        assert_eq!(r.kind, Kind::Umount);
        assert_eq!(r.path.as_deref(), Some(merged.as_bytes()));
        let v = full(&r);
        assert_eq!(v["errno"], "EBUSY");
        assert_eq!(v["path"], merged);

        let private = Call::Mount {
            source: PathArg::new("none"),
            target: PathArg::new("/"),
            fstype: String::new(),
            flags: monitor_model::flags::MS_PRIVATE | MS_REC,
        };
        let r = conv()
            .input(&sys(private, 2, 2, 0), &wall, &no_cgroup)
            .unwrap();
        assert_eq!(r.kind, Kind::Propagation);
        let v = full(&r);
        assert_eq!(v["propagation"], "private");
        assert_eq!(v["recursive"], true);
    }

    #[test]
    fn paths_that_are_not_utf8_keep_their_bytes() {
        let odd = b"/var/lib/docker/overlay2/a\xffb/merged".to_vec();
        let input = sys(
            Call::Rmdir {
                path: PathArg::new(odd.clone()),
            },
            1,
            1,
            0,
        );
        let r = conv().input(&input, &wall, &no_cgroup).unwrap();
        assert_eq!(r.path.as_deref(), Some(odd.as_slice()));
        let v = full(&r);
        assert_eq!(
            v["path_hex"],
            "2f7661722f6c69622f646f636b65722f6f7665726c6179322f61ff622f6d6572676564"
        );
    }

    #[test]
    fn a_stopped_container_is_found_by_the_name_it_was_seen_with() {
        let mut c = conv();
        let info = ContainerInfo {
            runtime: "cri".into(),
            id: "3f9a1c0e7b2d".into(),
            name: "web".into(),
            pod: Some(PodInfo {
                name: "web-7f9c".into(),
                namespace: "shop".into(),
                uid: "u1".into(),
                container: Some("nginx".into()),
            }),
            mounts: vec![
                "/run/containerd/io.containerd.runtime.v2.task/k8s.io/3f9a1c0e7b2d/rootfs".into(),
            ],
            ..ContainerInfo::default()
        };
        let seen = Input::Container(ContainerEvent::Seen {
            at: 1,
            info: Box::new(info),
        });
        let r = c.input(&seen, &wall, &no_cgroup).unwrap();
        assert_eq!(r.pod.as_deref(), Some("shop/web-7f9c"));
        assert_eq!(r.refs.len(), 1);
        let stopped = Input::Container(ContainerEvent::Stopped {
            at: 2,
            runtime: "cri".into(),
            id: "3f9a1c0e7b2d".into(),
        });
        let r = c.input(&stopped, &wall, &no_cgroup).unwrap();
        assert_eq!(r.kind, Kind::ContainerStopped);
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.pod.as_deref(), Some("shop/web-7f9c"));
    }

    #[test]
    fn exits_keep_pid_and_namespace() {
        let exit = Input::Process(ProcessEvent {
            at: 5,
            ns: 4026532177,
            kind: ProcessEventKind::Exit { pid: 42 },
        });
        let r = conv().input(&exit, &wall, &no_cgroup).unwrap();
        assert_eq!(
            (r.kind, r.pid, r.mnt_ns),
            (Kind::ProcessExit, Some(42), Some(4026532177))
        );
    }

    #[test]
    fn the_store_keeps_no_field_twice() {
        let input = sys(
            Call::Umount {
                target: PathArg::new("/var/lib/docker/overlay2/abc/merged"),
                flags: 0,
            },
            1,
            1,
            0,
        );
        let r = conv().input(&input, &wall, &no_cgroup).unwrap();
        for key in ["type", "time", "ktime_ns", "pid", "mnt_ns", "path"] {
            assert!(
                !r.data.contains(&format!("\"{key}\"")),
                "{key} in {}",
                r.data
            );
        }
        let v = full(&r);
        assert_eq!(v["time"], "2027-01-15T08:00:00.000Z");
        assert_eq!(v["pid"], 7);
        assert_eq!(v["path"], "/var/lib/docker/overlay2/abc/merged");
    }

    #[test]
    fn kind_codes_round_trip_and_never_collide() {
        let mut codes: Vec<i64> = Kind::ALL.iter().map(|k| *k as i64).collect();
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k as i64), Some(k));
        }
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Kind::ALL.len());
        assert_eq!(Kind::from_code(99), None);
    }

    #[test]
    fn times_format_in_utc() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ns(1_500_000_000), "1970-01-01T00:00:01.500Z");
    }
}
