//! What the shells feed the model: kernel events, /proc snapshots, losses and
//! the passage of time. Plain data; the shells fill it, the model reads it.

use crate::path::PathBytes;

/// Nanoseconds of `CLOCK_BOOTTIME`: the probes' clock, and the clock the
/// shells convert /proc times to. Wall time is derived only at output.
pub type Ktime = u64;
/// A mount namespace, by the inode number `readlink /proc/PID/ns/mnt` shows.
/// Inode numbers are reused after a namespace dies; the model copes.
pub type NsId = u64;
/// A process id (the kernel's tgid).
pub type Pid = u32;

/// A device number as `major:minor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One input to [`crate::Model::apply`].
#[derive(Clone, Debug)]
pub enum Input {
    /// A syscall (or `task_newtask`) the probes saw.
    Syscall(SyscallEvent),
    /// A fork or exit in a namespace the model asked the kernel to watch.
    Process(ProcessEvent),
    /// State read from /proc (and listmount/statmount).
    Snapshot(Snapshot),
    /// The kernel dropped events (ring buffer full). The model's state may be
    /// stale; it asks for a full rescan.
    Lost { at: Ktime, count: u64 },
    /// Time passes; lets grace periods expire without new events.
    Tick { now: Ktime },
    /// What a container runtime (Docker, containerd, CRI) said.
    Container(ContainerEvent),
}

/// A container runtime's view of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// `docker`, `containerd` (or `cri` for containerd's `k8s.io` namespace
    /// driven by kubelet), `inferred` when no engine said so.
    pub runtime: String,
    /// containerd namespace (`moby`, `k8s.io`, `default`); `None` for Docker.
    pub namespace: Option<String>,
    pub id: String,
    pub name: String,
    pub image: Option<String>,
    pub pod: Option<PodInfo>,
    /// Host paths that belong to it: its rootfs mount point (overlay
    /// `merged`, containerd's task `rootfs`), its shm mount, and the host
    /// side of its bind mounts and volumes.
    pub mounts: Vec<PathBytes>,
    /// Its rootfs's upper directory (device and inode): recognises its
    /// overlay after the mount is gone from every table, when a process's
    /// cwd still keeps it alive (overlay reports the upper dir's inode for
    /// its root on a single-filesystem setup).
    pub upper_dir: Option<(Dev, u64)>,
    /// The init process, while it runs.
    pub pid: Option<Pid>,
    pub state: ContainerState,
    pub started_at: Option<Ktime>,
}

/// Kubernetes identity, from CRI labels (`io.kubernetes.pod.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `io.kubernetes.container.name`; `None` for the sandbox.
    pub container: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    #[default]
    Running,
    Paused,
    /// Exited, not yet removed: the moment to warn.
    Stopped,
    /// Docker's "Dead" / "Removal In Progress": a removal already failed.
    Dead,
}

impl ContainerEvent {
    pub fn at(&self) -> Ktime {
        match self {
            ContainerEvent::Seen { at, .. }
            | ContainerEvent::Stopped { at, .. }
            | ContainerEvent::Removed { at, .. }
            | ContainerEvent::RemovalFailed { at, .. }
            | ContainerEvent::Inventory { at, .. } => *at,
        }
    }
}

/// A lifecycle step from a runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerEvent {
    /// What an inspect said (at start, after a restart, at resync).
    Seen { at: Ktime, info: Box<ContainerInfo> },
    /// Its processes are gone (Docker `die`, containerd `TaskExit`): a
    /// removal may follow. The model warns if removing it would fail or
    /// leave something pinned.
    Stopped {
        at: Ktime,
        runtime: String,
        id: String,
    },
    Removed {
        at: Ktime,
        runtime: String,
        id: String,
    },
    /// The runtime reported a failed removal (an error, or the `Dead` state).
    RemovalFailed {
        at: Ktime,
        runtime: String,
        id: String,
        message: String,
    },
    /// Every container this runtime has now (after a reconnect): the model
    /// forgets the others.
    Inventory {
        at: Ktime,
        runtime: String,
        ids: Vec<String>,
    },
}

/// The task that made a call, as the probe saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Task {
    pub tid: Pid,
    pub tgid: Pid,
    pub uid: u32,
    pub comm: String,
    pub cgroup_id: u64,
}

/// A syscall with its outcome.
#[derive(Clone, Debug)]
pub struct SyscallEvent {
    /// Entry time.
    pub start: Ktime,
    /// Exit time; state changes are ordered by this.
    pub end: Ktime,
    pub task: Task,
    /// The caller's mount namespace at entry.
    pub ns: NsId,
    /// The caller's mount namespace at exit (differs after unshare/setns).
    pub ns_after: NsId,
    /// Return value: >= 0 success, negative errno on failure.
    pub ret: i64,
    pub call: Call,
}

/// A path argument as the probe read it. The shells resolve relative paths
/// against the caller's cwd where they can and say so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathArg {
    pub path: PathBytes,
    /// The probe's buffer was full: the real path may be longer.
    pub truncated: bool,
}

impl PathArg {
    pub fn new(path: impl Into<PathBytes>) -> Self {
        PathArg {
            path: path.into(),
            truncated: false,
        }
    }
}

/// The calls the model understands. Flags are the raw kernel values; the
/// model names them.
#[derive(Clone, Debug)]
pub enum Call {
    Mount {
        source: PathArg,
        target: PathArg,
        fstype: String,
        flags: u64,
    },
    Umount {
        target: PathArg,
        flags: u64,
    },
    Unshare {
        flags: u64,
    },
    Setns {
        nstype: u64,
    },
    /// `clone`/`clone3` in the parent. `ret` is the child's pid.
    Clone {
        flags: u64,
        clone3: bool,
    },
    /// `task_newtask` with `CLONE_NEWNS`: a child born in a new namespace.
    NewTask {
        child: Pid,
        child_ns: NsId,
        flags: u64,
    },
    MoveMount {
        from: PathArg,
        to: PathArg,
        flags: u64,
    },
    OpenTree {
        path: PathArg,
        flags: u64,
    },
    Fsmount {
        flags: u64,
    },
    MountSetattr {
        path: PathArg,
        flags: u64,
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
    },
    PivotRoot {
        new_root: PathArg,
        put_old: PathArg,
    },
    /// `rmdir`, or `unlinkat(AT_REMOVEDIR)`.
    Rmdir {
        path: PathArg,
    },
}

/// Fork and exit, from `sched_process_fork`/`sched_process_exit`.
#[derive(Clone, Debug)]
pub struct ProcessEvent {
    pub at: Ktime,
    pub ns: NsId,
    pub kind: ProcessEventKind,
}

#[derive(Clone, Debug)]
pub enum ProcessEventKind {
    Fork {
        parent: Pid,
        child: Pid,
        comm: String,
    },
    /// The whole thread group exited.
    Exit { pid: Pid },
}

/// What a scan of /proc (and listmount/statmount) found.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// When the scan started (`CLOCK_BOOTTIME` ns).
    pub taken_at: Ktime,
    /// Every mount namespace alive at scan time, whether or not its mounts
    /// were read. `None` when the scan did not enumerate them.
    pub alive: Option<Vec<NsId>>,
    /// The namespaces whose mounts and members were read.
    pub namespaces: Vec<NamespaceSnapshot>,
    /// Processes whose cwd, root or open file is on a filesystem that no mount
    /// table shows any more (a removed mount kept alive).
    pub pins: Vec<Pin>,
    /// Whether `pins` was looked for (it needs every mount table). When
    /// false, the model keeps the pins it knew.
    pub pins_scanned: bool,
    /// The scanner's own mount namespace.
    pub self_ns: Option<NsId>,
}

/// One namespace: its mount table, its processes, and what else keeps it alive.
#[derive(Clone, Debug, Default)]
pub struct NamespaceSnapshot {
    pub ns: NsId,
    pub mounts: Vec<MountEntry>,
    /// Processes in this namespace; empty for a namespace kept alive only by
    /// an nsfs bind mount or an open fd.
    pub members: Vec<ProcessInfo>,
    /// nsfs bind mounts of this namespace (`mnt:[ID]` in some mount table).
    pub nsfs_mounts: Vec<NsfsMount>,
    /// The user namespace that owns it (inode number), when known.
    pub user_ns: Option<u64>,
    /// How the mounts were read: `/proc/PID/mountinfo` or `statmount(2)`.
    pub source: TableSource,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableSource {
    #[default]
    Mountinfo,
    Statmount,
}

/// Where a namespace is bind-mounted (which keeps it alive with no process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsfsMount {
    /// The namespace whose mount table shows the nsfs mount.
    pub in_ns: NsId,
    pub path: PathBytes,
}

/// One mount, as a line of `/proc/PID/mountinfo` (paths unescaped to bytes)
/// or a `statmount(2)` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u64,
    pub parent_id: u64,
    pub dev: Dev,
    /// The path inside the filesystem that is mounted (`/` for a whole fs).
    pub root: PathBytes,
    /// Where it is mounted, relative to the reading process's root.
    pub mount_point: PathBytes,
    pub fstype: String,
    pub source: PathBytes,
    /// `shared:N`: peer group this mount belongs to.
    pub shared: Option<u32>,
    /// `master:N`: peer group this mount is a slave of.
    pub master: Option<u32>,
    pub unbindable: bool,
}

/// A process, as /proc shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: Pid,
    /// Start time (`CLOCK_BOOTTIME` ns): tells a reused pid from the old one.
    pub start: Ktime,
    pub comm: String,
    pub exe: Option<PathBytes>,
    /// The cgroup path (v2 or the systemd v1 hierarchy).
    pub cgroup: Option<String>,
    pub uid: u32,
    /// User namespace inode number.
    pub user_ns: Option<u64>,
    /// Devices of the cwd and root directory, and of open files
    /// (deduplicated). Filled for processes in namespaces that matter.
    pub cwd_dev: Option<Dev>,
    pub root_dev: Option<Dev>,
    pub fd_devs: Vec<Dev>,
}

/// A process keeping a filesystem alive that no mount table shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub dev: Dev,
    pub process: ProcessInfo,
    pub ns: NsId,
    pub how: PinKind,
    /// What `readlink` shows for it (relative to the detached mount).
    pub link: PathBytes,
    /// Filesystem type by `statfs` magic (`overlay`, `ext4`, ...).
    pub fstype: Option<String>,
    /// For a loop device: its backing file.
    pub backing_file: Option<PathBytes>,
    /// Inode number of the detached filesystem's root directory, reached
    /// from a cwd or root pin. For an overlay on one filesystem it is the
    /// upper directory's inode, which names the container it belonged to.
    pub root_ino: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "fd")]
pub enum PinKind {
    Cwd,
    Root,
    Fd(u32),
}
