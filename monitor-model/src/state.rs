//! The model's memory: namespaces with the container mounts they hold, the
//! container filesystems themselves, and the processes that matter. Only
//! [`crate::Model`] mutates it.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::container::ContainerHint;
use crate::input::{Dev, Ktime, NsId, NsfsMount, Pid, Pin, SyscallEvent, Task};
use crate::path::PathBytes;

/// Internal id of a container filesystem (stable while the model knows it).
pub type FsId = u64;

/// A propagation peer group. Ids below 2^32 are the kernel's (`shared:N`);
/// the model invents ids above that for groups it sees created by events
/// before a snapshot can name them.
pub type Group = u64;
pub const SYNTHETIC_GROUP_BASE: Group = 1 << 32;

/// Mount propagation of one mount, as far as the model knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prop {
    pub shared: Option<Group>,
    pub master: Option<Group>,
    /// False for a mount made by an event whose parent's propagation the
    /// model did not know; a snapshot will settle it.
    pub known: bool,
}

impl Prop {
    pub fn kernel(shared: Option<u32>, master: Option<u32>) -> Self {
        Prop {
            shared: shared.map(Group::from),
            master: master.map(Group::from),
            known: true,
        }
    }

    pub const PRIVATE: Prop = Prop {
        shared: None,
        master: None,
        known: true,
    };
    pub const UNKNOWN: Prop = Prop {
        shared: None,
        master: None,
        known: false,
    };

    pub fn name(&self) -> &'static str {
        match (self.known, self.shared, self.master) {
            (false, ..) => "unknown",
            (true, None, None) => "private",
            (true, Some(_), None) => "shared",
            (true, None, Some(_)) => "slave",
            (true, Some(_), Some(_)) => "shared+slave",
        }
    }

    /// Whether an umount in any of `origin_groups` propagates to this mount:
    /// it is a peer in one of them, or a slave of one.
    pub fn receives_from(&self, origin_groups: &[Group]) -> bool {
        self.shared.is_some_and(|g| origin_groups.contains(&g))
            || self.master.is_some_and(|g| origin_groups.contains(&g))
    }
}

/// How the model learned when a copy began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinceSource {
    /// A probe saw the copy being made.
    Observed,
    /// The namespace's oldest member started then; the copy is at least as old.
    Inferred,
    Unknown,
}

impl SinceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SinceSource::Observed => "observed",
            SinceSource::Inferred => "inferred",
            SinceSource::Unknown => "unknown",
        }
    }
}

/// A mount of a container filesystem in one namespace.
#[derive(Clone, Debug)]
pub struct Entry {
    pub fs: FsId,
    pub mount_id: Option<u64>,
    /// Shared: copies of a namespace's mounts repeat the same paths.
    pub mount_point: Arc<PathBytes>,
    pub prop: Prop,
    pub since: Option<Ktime>,
    pub since_source: SinceSource,
    /// Other mounts sit on top of this one (they keep it busy).
    pub submounts: bool,
}

/// A mount of any kind in a host namespace: enough to tell the propagation
/// a new mount under it inherits.
#[derive(Clone, Debug)]
pub struct TreeMount {
    /// Shared: copies of a namespace's mounts repeat the same paths.
    pub mount_point: Arc<PathBytes>,
    pub prop: Prop,
}

/// How a namespace came to be, when a probe saw it.
#[derive(Clone, Debug)]
pub struct Creation {
    pub at: Ktime,
    pub by: Task,
    pub via: &'static str,
    pub parent: NsId,
    pub flags: u64,
    /// The process that lives in it first (the caller for unshare, the child
    /// for clone).
    pub first_member: Pid,
}

#[derive(Clone, Debug)]
pub struct Namespace {
    pub id: NsId,
    pub creation: Option<Creation>,
    pub first_seen: Ktime,
    pub members: BTreeSet<Pid>,
    pub nsfs: Vec<NsfsMount>,
    pub user_ns: Option<u64>,
    /// Container filesystems mounted here.
    pub entries: Vec<Entry>,
    /// Every mount, for host namespaces only (see [`TreeMount`]).
    pub tree: Vec<TreeMount>,
    /// The container filesystem mounted at `/`: this is that container's own
    /// namespace, which holds its rootfs (and its pod's volumes) by design.
    pub root_fs: Option<FsId>,
    pub pod_uid: Option<String>,
    /// A container runtime process lives here.
    pub runtime_here: bool,
    pub oldest_member_start: Option<Ktime>,
    /// Asked the kernel to report forks and exits here.
    pub watched: bool,
    /// When its mount table was last read: events that happened before are
    /// already reflected in it.
    pub snapshot_at: Option<Ktime>,
    /// Events that arrived before the event that created this namespace.
    pub early: Vec<SyscallEvent>,
    /// Container mounts removed lately, for a creation event that arrives
    /// after an umount that happened later (ring-buffer reordering).
    pub removed: VecDeque<(Entry, Ktime)>,
}

impl Namespace {
    pub fn new(id: NsId, first_seen: Ktime) -> Self {
        Namespace {
            id,
            creation: None,
            first_seen,
            members: BTreeSet::new(),
            nsfs: Vec::new(),
            user_ns: None,
            entries: Vec::new(),
            tree: Vec::new(),
            root_fs: None,
            pod_uid: None,
            runtime_here: false,
            oldest_member_start: None,
            watched: false,
            snapshot_at: None,
            early: Vec::new(),
            removed: VecDeque::new(),
        }
    }

    /// The propagation a new mount at `target` gets: a mount under a shared
    /// mount becomes shared in a new peer group; otherwise it is private
    /// (fs/pnode.c, `invent_group_ids`). Unknown without the tree.
    pub fn inherited_prop(&self, target: &PathBytes, new_group: impl FnOnce() -> Group) -> Prop {
        let parent = self
            .tree
            .iter()
            .filter(|m| target.is_under(&m.mount_point) && *m.mount_point != *target)
            .max_by_key(|m| m.mount_point.as_bytes().len());
        match parent {
            None => Prop::UNKNOWN,
            Some(p) if !p.prop.known => Prop::UNKNOWN,
            Some(p) if p.prop.shared.is_some() => Prop {
                shared: Some(new_group()),
                master: None,
                known: true,
            },
            Some(_) => Prop::PRIVATE,
        }
    }
}

/// A container filesystem: one superblock (and root) mounted at a container
/// path somewhere.
#[derive(Clone, Debug)]
pub struct ContainerFs {
    pub id: FsId,
    pub dev: Option<Dev>,
    pub root: PathBytes,
    /// Mount point in the host namespace.
    pub path: PathBytes,
    pub fstype: String,
    pub source: PathBytes,
    pub hint: ContainerHint,
    pub mounted_at: Option<Ktime>,
    /// When it left every host namespace.
    pub unmounted_at: Option<Ktime>,
    /// Processes keeping it alive after it left every mount table.
    pub pins: Vec<Pin>,
    /// Its last copy went away while something inside kept it busy: it may
    /// live on, detached, held by a cwd or an open file. The finding stays
    /// open until a snapshot that looked for pins says.
    pub awaiting_pin_scan: bool,
    /// The peer groups of its mounts in host namespaces, last seen. A copy
    /// in one of them (or a slave of one) receives the host's umount, so it
    /// cannot outlive it, even before a snapshot confirms it is gone.
    pub host_groups: Vec<Group>,
    /// When an event last added or removed one of its mounts: a mount table
    /// read that began before then is out of date about it.
    pub changed_at: Ktime,
}

/// What the model remembers of a process.
#[derive(Clone, Debug)]
pub struct Process {
    pub info: crate::input::ProcessInfo,
    pub ns: NsId,
}

/// Hashing for ids the kernel or the model hands out (pids, namespace
/// inodes, filesystem ids): SipHash's flood resistance buys nothing for
/// them, and lookups are the model's hot path. Mixing is splitmix64's
/// finalizer.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mut z = (self.0 ^ n).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;
pub type IdSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<IdHasher>>;
