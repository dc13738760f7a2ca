//! The leak model: pure, synchronous, no I/O.
//!
//! A container's mounts get copied into the private mount namespace of an
//! unrelated process (a systemd unit with `PrivateTmp=`, anything calling
//! `unshare(CLONE_NEWNS)`); when the runtime later unmounts them, the copy
//! survives. The model follows mount namespaces and container filesystems
//! from two kinds of input and reports when a copy stops receiving the
//! host's umounts (**risk**), outlives the host's umount (**leak**), makes a
//! removal fail (**failed removal**), and when it is gone (**resolved**).
//!
//! # Layout
//! - [`input`]: what the shells feed in: probe events, /proc snapshots,
//!   losses, ticks. [`Model::apply`] takes one at a time.
//! - [`config`]: container mount patterns, which namespaces are the host,
//!   grace periods. [`kernel`]: facts that decide a leak's consequence.
//! - `state` (private): namespaces, container filesystems, processes.
//! - [`finding`]: the output, with holders, consequence and remedy.
//! - [`container`]: container identity read off mount paths.
//! - [`path`]: paths as exact bytes.
//!
//! Events give timeliness and provenance (who made a namespace, when, with
//! which syscall); snapshots give truth. The model applies events to its
//! own copy of the mount state so a leak is reported the moment the host
//! unmounts, and asks the shell (through [`Output::Rescan`]) to confirm by
//! reading /proc; a snapshot replaces whatever the events implied. Findings
//! are derived from state, not from events, so duplicates, reordering and
//! losses cannot leave a stale finding open once a snapshot has been taken.

pub mod config;
pub mod container;
mod containers;
pub mod finding;
pub mod input;
pub mod kernel;
pub mod path;
mod report;
#[cfg(test)]
mod scenarios;
mod state;
#[cfg(test)]
mod testutil;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

pub use config::{ModelConfig, Patterns, Reference};
pub use container::ContainerHint;
pub use containers::CheckReport;
pub use finding::{Finding, FindingKind};
pub use input::*;
pub use kernel::KernelFacts;
pub use path::PathBytes;

use state::{
    ContainerFs, Creation, Entry, FsId, Group, IdMap, IdSet, Namespace, Process, Prop, SinceSource,
    TreeMount, SYNTHETIC_GROUP_BASE,
};

/// Flag values the model names (from `<linux/mount.h>`, `<linux/sched.h>`,
/// `<linux/fcntl.h>`).
pub mod flags {
    pub const MS_REMOUNT: u64 = 32;
    pub const MS_BIND: u64 = 4096;
    pub const MS_MOVE: u64 = 8192;
    pub const MS_REC: u64 = 16384;
    pub const MS_UNBINDABLE: u64 = 1 << 17;
    pub const MS_PRIVATE: u64 = 1 << 18;
    pub const MS_SLAVE: u64 = 1 << 19;
    pub const MS_SHARED: u64 = 1 << 20;
    pub const MS_PROPAGATION: u64 = MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED;
    pub const CLONE_NEWNS: u64 = 0x0002_0000;
    pub const CLONE_NEWUSER: u64 = 0x1000_0000;
    /// `mount_setattr(2)`: apply to the whole subtree.
    pub const AT_RECURSIVE: u64 = 0x8000;
    /// `move_mount(2)`: the source is the fd itself (from `fsmount`/`open_tree`).
    pub const MOVE_MOUNT_F_EMPTY_PATH: u64 = 0x4;
    pub const EBUSY: i64 = 16;
}

/// A failed umount/rmdir, reported once its holders have been read.
#[derive(Clone, Debug)]
struct PendingFailure {
    fs: FsId,
    ev: SyscallEvent,
    syscall: &'static str,
    path: PathBytes,
}

/// Something to re-check when a grace period ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GraceItem {
    Fs(FsId),
    /// Every copy in a namespace (identified with its creation time, since
    /// namespace ids are reused).
    Namespace(NsId, Ktime),
}

/// What the model asks of its shell, besides reporting findings.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Finding(Box<Finding>),
    /// Re-read these namespaces (or everything) from /proc: the model's view
    /// may be off and a snapshot will settle it.
    Rescan {
        namespaces: Vec<NsId>,
        full: bool,
        reason: &'static str,
    },
    /// Report forks and exits in this namespace (it holds container mounts).
    Watch(NsId),
    /// Stop reporting forks and exits here.
    Unwatch(NsId),
}

/// Rescan reasons the shell or the model refer to by name (never by text).
pub mod reason {
    /// The read a stopped container's warning waits for. It gets the usual
    /// debounce: a read at the very moment of the stop races the runtime's
    /// own umount (measured: no faster warnings, and a flaky test).
    pub const READ_BEFORE_WARNING: &str = "a container stopped: reading its holders before warning";
    /// A namespace just made is still being set up: read it a moment later.
    pub const NEW_NAMESPACE: &str = "new namespace holds container mounts";
    /// Kernel events were lost: read everything again (pins need not be).
    pub const LOST_EVENTS: &str = "kernel events were lost";
}

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    pub inputs: u64,
    pub duplicates: u64,
    pub lost_events: u64,
    pub snapshots: u64,
    /// Events that arrived after a later event already settled their effect.
    pub late_events: u64,
    /// Namespace tables in snapshots that began before an event changed
    /// them (set aside and read again).
    pub stale_tables: u64,
}

/// Cap on remembered event keys and exited pids (reordering/duplicate
/// detection): enough for the depth of one ring-buffer batch.
const RECENT_CAP: usize = 4096;
/// Cap on events buffered for a namespace whose creation has not arrived.
const EARLY_CAP: usize = 64;
/// Cap on recently removed mounts kept per namespace.
const REMOVED_CAP: usize = 64;
/// How long removed mounts are remembered for late creation events.
const REORDER_HORIZON_NS: u64 = 5_000_000_000;

/// The leak model. Feed it [`Input`]s with [`Model::apply`]; it returns
/// [`Output`]s.
pub struct Model {
    cfg: ModelConfig,
    namespaces: IdMap<NsId, Namespace>,
    processes: IdMap<Pid, Process>,
    fs: BTreeMap<FsId, ContainerFs>,
    fs_by_key: IdMap<(Dev, PathBytes), FsId>,
    /// The finding open for each filesystem.
    active: BTreeMap<FsId, report::Active>,
    /// How many open findings name each namespace as a holder.
    named: IdMap<NsId, u32>,
    /// Containers the runtimes told us about.
    containers: containers::Containers,
    /// EBUSY failures waiting for the snapshot that names their holders.
    pending_failures: Vec<PendingFailure>,
    /// Filesystems whose status may have changed, with the last reason.
    dirty: BTreeMap<FsId, &'static str>,
    /// When copies still inside their grace period may become risks: what to
    /// re-evaluate then.
    grace_due: BTreeMap<Ktime, Vec<GraceItem>>,
    self_ns: Option<NsId>,
    now: Ktime,
    next_fs: FsId,
    next_group: Group,
    next_finding: u64,
    recent_keys: IdSet<(Ktime, Pid, u8)>,
    recent_order: VecDeque<(Ktime, Pid, u8)>,
    exited: IdMap<Pid, Ktime>,
    exited_order: VecDeque<Pid>,
    stats: ModelStats,
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Self {
        Model {
            cfg,
            namespaces: IdMap::default(),
            processes: IdMap::default(),
            fs: BTreeMap::new(),
            fs_by_key: IdMap::default(),
            active: BTreeMap::new(),
            named: IdMap::default(),
            containers: Default::default(),
            pending_failures: Vec::new(),
            dirty: BTreeMap::new(),
            grace_due: BTreeMap::new(),
            self_ns: None,
            now: 0,
            next_fs: 1,
            next_group: SYNTHETIC_GROUP_BASE,
            next_finding: 1,
            recent_keys: IdSet::default(),
            recent_order: VecDeque::new(),
            exited: IdMap::default(),
            exited_order: VecDeque::new(),
            stats: ModelStats::default(),
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// The latest time any input carried.
    pub fn now(&self) -> Ktime {
        self.now
    }

    /// Findings open right now (risks and leaks), oldest first.
    pub fn open_findings(&self) -> Vec<Finding> {
        self.active.values().map(|a| a.last.clone()).collect()
    }

    /// Namespaces the model tracks.
    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// Container filesystems the model tracks.
    pub fn container_fs_count(&self) -> usize {
        self.fs.len()
    }

    /// Namespaces currently holding container mounts outside the host.
    pub fn watched(&self) -> Vec<NsId> {
        let mut v: Vec<NsId> = self
            .namespaces
            .values()
            .filter(|n| n.watched)
            .map(|n| n.id)
            .collect();
        v.sort_unstable();
        v
    }

    /// The namespaces that count as the host right now.
    pub fn reference_namespaces(&self) -> Vec<NsId> {
        let mut v: Vec<NsId> = self
            .namespaces
            .keys()
            .copied()
            .filter(|&id| self.is_reference(id))
            .collect();
        v.sort_unstable();
        v
    }

    /// A process in namespace `ns` (its oldest known member), to reach the
    /// namespace through `/proc/PID/ns/mnt`.
    pub fn member_of(&self, ns: NsId) -> Option<Pid> {
        let n = self.namespaces.get(&ns)?;
        n.members
            .iter()
            .filter_map(|p| self.processes.get(p))
            .min_by_key(|p| (p.info.start, p.info.pid))
            .map(|p| p.info.pid)
            .or_else(|| n.members.iter().next().copied())
    }

    /// Applies one input and returns what the shell should do or say.
    pub fn apply(&mut self, input: &Input) -> Vec<Output> {
        let mut out = Vec::new();
        self.apply_into(input, &mut out);
        out
    }

    /// [`Model::apply`] into a caller's buffer (no allocation per event).
    pub fn apply_into(&mut self, input: &Input, out: &mut Vec<Output>) {
        self.stats.inputs += 1;
        match input {
            Input::Syscall(ev) => self.on_syscall(ev, out),
            Input::Process(ev) => self.on_process(ev, out),
            Input::Snapshot(s) => {
                self.on_snapshot(s, out);
                // Findings first (the snapshot's news), then the warnings
                // that were waiting for a fresh read.
                self.evaluate(out);
                self.settle_warnings(s.taken_at, out);
                self.settle_failures(out);
            }
            Input::Container(ev) => self.on_container(ev, out),
            Input::Lost { at, count } => {
                self.advance(*at);
                self.stats.lost_events += count;
                out.push(Output::Rescan {
                    namespaces: Vec::new(),
                    full: true,
                    reason: reason::LOST_EVENTS,
                });
            }
            Input::Tick { now } => {
                self.advance(*now);
                let later = self.grace_due.split_off(&(self.now + 1));
                let due = std::mem::replace(&mut self.grace_due, later);
                let mut reread: Vec<NsId> = Vec::new();
                for item in due.into_values().flatten() {
                    match item {
                        GraceItem::Fs(id) => {
                            self.mark(id, "grace period over");
                            reread.extend(
                                self.namespaces
                                    .values()
                                    .filter(|n| {
                                        !self.is_reference(n.id)
                                            && n.entries.iter().any(|e| e.fs == id)
                                    })
                                    .map(|n| n.id),
                            );
                        }
                        GraceItem::Namespace(ns, created) => {
                            // Gone already (a runtime's short-lived init, a
                            // quick command): nothing to check.
                            let Some(n) = self.namespaces.get(&ns) else {
                                continue;
                            };
                            if n.creation.as_ref().map(|c| c.at) != Some(created) {
                                continue;
                            }
                            let ids: Vec<FsId> = n.entries.iter().map(|e| e.fs).collect();
                            reread.push(ns);
                            for id in ids {
                                self.mark(id, "grace period over");
                            }
                        }
                    }
                }
                if !reread.is_empty() {
                    // Report with what is known now, and read the holders
                    // again: a cwd that moved into the copy since its first
                    // read changes what removal will do (an update follows).
                    reread.sort_unstable();
                    reread.dedup();
                    out.push(Output::Rescan {
                        namespaces: reread,
                        full: false,
                        reason: "grace period over: reading the holders again",
                    });
                }
                self.collect_garbage();
                self.evaluate(out);
                self.release_held_back(out);
            }
        }
        self.evaluate(out);
    }

    /// Marks the filesystems whose copies in `ns_id` changed. While the
    /// namespace is inside its grace period its copies cannot make a risk
    /// yet, so unless the host already unmounted the filesystem (a leak needs
    /// no grace) the evaluation waits for the grace period to end. This
    /// keeps a node's stream of short-lived namespaces cheap.
    fn mark_copies(&mut self, ns_id: NsId, reason: &'static str) {
        let Some(ns) = self.namespaces.get(&ns_id) else {
            return;
        };
        let created = ns.creation.as_ref().map(|c| c.at);
        let young_until = created
            .map(|at| at + self.cfg.risk_grace_ns)
            .filter(|&t| t > self.now);
        let ids: Vec<FsId> = ns.entries.iter().map(|e| e.fs).collect();
        let mut scheduled = false;
        for id in ids {
            let unmounted = self.fs.get(&id).is_some_and(|f| f.unmounted_at.is_some());
            match (young_until, created) {
                (Some(due), Some(at)) if !unmounted => {
                    if !scheduled {
                        self.grace_due
                            .entry(due)
                            .or_default()
                            .push(GraceItem::Namespace(ns_id, at));
                        scheduled = true;
                    }
                }
                _ => self.mark(id, reason),
            }
        }
    }

    /// Notes that an event added or removed a mount of `fs` at `at`.
    fn changed(&mut self, fs: FsId, at: Ktime) {
        if let Some(f) = self.fs.get_mut(&fs) {
            f.changed_at = f.changed_at.max(at);
        }
    }

    fn advance(&mut self, t: Ktime) {
        self.now = self.now.max(t);
    }

    /// Notes that a filesystem's status may have changed. The reason ends up
    /// in a resolution, so a specific cause is not overwritten by a generic
    /// one from the same input.
    fn mark(&mut self, fs: FsId, reason: &'static str) {
        const GENERIC: &[&str] = &[
            "mount table read",
            "namespace created",
            "pins changed",
            "grace period over",
        ];
        match self.dirty.get(&fs) {
            Some(old) if !GENERIC.contains(old) => {}
            _ => {
                self.dirty.insert(fs, reason);
            }
        }
    }

    fn is_reference(&self, ns: NsId) -> bool {
        match &self.cfg.reference {
            Reference::Namespaces(list) => list.contains(&ns),
            Reference::Auto { include_self, .. } => {
                (*include_self && self.self_ns == Some(ns))
                    || self.namespaces.get(&ns).is_some_and(|n| n.runtime_here)
            }
        }
    }

    fn is_runtime_comm(&self, comm: &str) -> bool {
        match &self.cfg.reference {
            Reference::Auto { runtime_comms, .. } => runtime_comms.iter().any(|c| c == comm),
            Reference::Namespaces(_) => false,
        }
    }

    fn ns_mut(&mut self, id: NsId, seen: Ktime) -> &mut Namespace {
        self.namespaces
            .entry(id)
            .or_insert_with(|| Namespace::new(id, seen))
    }

    // ----- events -------------------------------------------------------

    /// Drops an exact duplicate (same exit time, thread and call).
    fn is_duplicate(&mut self, key: (Ktime, Pid, u8)) -> bool {
        if !self.recent_keys.insert(key) {
            self.stats.duplicates += 1;
            return true;
        }
        self.recent_order.push_back(key);
        if self.recent_order.len() > RECENT_CAP {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent_keys.remove(&old);
            }
        }
        false
    }

    fn on_syscall(&mut self, ev: &SyscallEvent, out: &mut Vec<Output>) {
        if self.is_duplicate((ev.end, ev.task.tid, call_tag(&ev.call))) {
            return;
        }
        self.advance(ev.end);
        let known = self.namespaces.contains_key(&ev.ns);
        let creates = matches!(ev.call, Call::Unshare { .. } | Call::NewTask { .. });
        if !known && !creates && changes_mounts(&ev.call) {
            // Its creation has not arrived (reordered) or was lost: keep the
            // event for when it does, and ask for the truth.
            let ns = self.ns_mut(ev.ns, ev.end);
            if ns.early.len() < EARLY_CAP {
                ns.early.push(ev.clone());
            }
            out.push(Output::Rescan {
                namespaces: vec![ev.ns],
                full: false,
                reason: "event from an unknown namespace",
            });
            return;
        }
        let stale = changes_mounts(&ev.call)
            && self
                .namespaces
                .get(&ev.ns)
                .and_then(|n| n.snapshot_at)
                .is_some_and(|t| ev.end <= t);
        if stale {
            // The mount table read since already shows this call's effect.
            self.stats.late_events += 1;
            return;
        }
        if ev.end < self.now && (creates || changes_mounts(&ev.call)) {
            // Another CPU's later event was read first. Apply it as well as
            // we can and let a snapshot settle the rest.
            self.stats.late_events += 1;
            let mut namespaces = vec![ev.ns];
            if ev.ns_after != ev.ns {
                namespaces.push(ev.ns_after);
            }
            if let Call::NewTask { child_ns, .. } = ev.call {
                namespaces.push(child_ns);
            }
            out.push(Output::Rescan {
                namespaces,
                full: false,
                reason: "events arrived out of order",
            });
        }
        self.apply_call(ev, out);
    }

    fn apply_call(&mut self, ev: &SyscallEvent, out: &mut Vec<Output>) {
        use flags::*;
        let ok = ev.ret >= 0;
        if ok && self.unplaceable(ev) {
            // A path the model cannot place (relative to a cwd the shell could
            // not read, e.g. Docker's overlay2 mounting through a short-lived
            // helper that chdirs first; or truncated): it may be a container
            // mount, so let the mount table say.
            out.push(Output::Rescan {
                namespaces: vec![ev.ns],
                full: false,
                reason: "a mount change with a path that cannot be placed",
            });
        }
        match &ev.call {
            Call::Unshare { flags } if ok && flags & CLONE_NEWNS != 0 && ev.ns_after != ev.ns => {
                self.create_namespace(ev.ns_after, ev.ns, ev, "unshare", *flags, ev.task.tgid, out);
            }
            Call::NewTask {
                child,
                child_ns,
                flags,
            } if *child_ns != 0 && *child_ns != ev.ns => {
                self.create_namespace(*child_ns, ev.ns, ev, "clone", *flags, *child, out);
            }
            Call::Clone { clone3: true, .. } if ok => {
                // task_newtask cannot tell clone from clone3; the syscall can.
                let child = ev.ret as Pid;
                if let Some(ns) = self.namespaces.values_mut().find(|n| {
                    n.creation
                        .as_ref()
                        .is_some_and(|c| c.first_member == child && c.via == "clone")
                }) {
                    if let Some(c) = ns.creation.as_mut() {
                        c.via = "clone3";
                    }
                }
            }
            Call::Setns { .. } if ok && ev.ns_after != ev.ns => {
                self.move_member(ev.task.tgid, &ev.task.comm, ev.ns, ev.ns_after, ev.end, out);
            }
            Call::Mount {
                source,
                target,
                fstype,
                flags,
            } if ok => {
                let flags = *flags;
                if flags & MS_PROPAGATION != 0 {
                    self.set_propagation(
                        ev.ns,
                        &target.path,
                        flags & MS_PROPAGATION,
                        flags & MS_REC != 0,
                    );
                } else if flags & MS_REMOUNT != 0 {
                    // Options only; propagation and placement are unchanged.
                } else if flags & MS_MOVE != 0 {
                    self.move_mounts(ev.ns, &source.path, &target.path);
                } else {
                    let bind_of = if flags & MS_BIND != 0 {
                        Some(&source.path)
                    } else {
                        None
                    };
                    self.add_mount(ev, &target.path, fstype, &source.path, bind_of, out);
                }
            }
            Call::MoveMount { from, to, flags } if ok => {
                if flags & MOVE_MOUNT_F_EMPTY_PATH != 0 || from.path.is_empty() {
                    self.add_mount(ev, &to.path, "", &PathBytes::default(), None, out);
                } else {
                    self.move_mounts(ev.ns, &from.path, &to.path);
                }
            }
            Call::MountSetattr {
                path,
                flags,
                propagation,
                ..
            } if ok && *propagation != 0 => {
                self.set_propagation(ev.ns, &path.path, *propagation, flags & AT_RECURSIVE != 0);
            }
            Call::Umount { target, .. } => {
                if ok {
                    self.umount(ev.ns, &target.path, ev.end, out);
                } else if ev.ret == -EBUSY {
                    self.failed_removal(ev, "umount", &target.path, out);
                }
            }
            Call::Rmdir { path } => {
                if ok {
                    self.rmdir(&path.path, ev.end, out);
                } else if ev.ret == -EBUSY {
                    self.failed_removal(ev, "rmdir", &path.path, out);
                }
            }
            Call::PivotRoot { .. } if ok => {
                // Mount points in this namespace now read relative to a new
                // root; only a snapshot can say where things are.
                out.push(Output::Rescan {
                    namespaces: vec![ev.ns],
                    full: false,
                    reason: "pivot_root",
                });
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_namespace(
        &mut self,
        child: NsId,
        parent: NsId,
        ev: &SyscallEvent,
        via: &'static str,
        clone_flags: u64,
        first_member: Pid,
        out: &mut Vec<Output>,
    ) {
        let at = ev.end;
        let mut early = Vec::new();
        if let Some(existing) = self.namespaces.get(&child) {
            match &existing.creation {
                Some(c) if c.by.tid == ev.task.tid && c.at == at => return, // duplicate
                Some(c) if c.at < at => {
                    // Namespace inode numbers are reused once a namespace is
                    // freed: this is a new namespace, the old one died unseen.
                    self.drop_namespace(
                        child,
                        "namespace id reused: the old namespace is gone",
                        out,
                    );
                }
                None if existing.snapshot_at.is_some_and(|t| t >= at) => {
                    // A snapshot taken after this creation already read the
                    // namespace: it is newer truth; just record how the
                    // namespace was made.
                    let ns = self.ns_mut(child, at);
                    ns.creation = Some(Creation {
                        at,
                        by: ev.task.clone(),
                        via,
                        parent,
                        flags: clone_flags,
                        first_member,
                    });
                    for e in ns.entries.iter_mut() {
                        if e.since_source != SinceSource::Observed {
                            e.since = Some(at);
                            e.since_source = SinceSource::Observed;
                        }
                    }
                    return;
                }
                None if existing.snapshot_at.is_some() => {
                    // Read by a snapshot before this creation: an older
                    // namespace that had the same inode number.
                    self.drop_namespace(
                        child,
                        "namespace id reused: the old namespace is gone",
                        out,
                    );
                }
                _ => {}
            }
            if let Some(ns) = self.namespaces.get_mut(&child) {
                early = std::mem::take(&mut ns.early);
            }
        }

        // Copy the parent's container mounts (fs/namespace.c, copy_mnt_ns →
        // copy_tree): a copy of a shared mount joins its peer group, a copy
        // of a slave is a slave of the same master, a private copy is
        // private. Into a new user namespace shared mounts become slaves
        // (CL_SHARED_TO_SLAVE) and every copy is locked.
        let new_user = clone_flags & flags::CLONE_NEWUSER != 0;
        let copy_prop = |p: Prop| {
            if new_user && p.shared.is_some() {
                Prop {
                    shared: None,
                    master: p.shared,
                    known: p.known,
                }
            } else {
                p
            }
        };
        let mut copies: Vec<Entry> = Vec::new();
        if let Some(p) = self.namespaces.get(&parent) {
            for e in &p.entries {
                copies.push(Entry {
                    prop: copy_prop(e.prop),
                    since: Some(at),
                    since_source: SinceSource::Observed,
                    mount_id: None,
                    submounts: false,
                    ..e.clone()
                });
            }
            // Mounts the parent lost after this creation happened, reported
            // before it (ring-buffer reordering): they were copied; keep the
            // copies their umount would not have reached.
            for (e, _) in p.removed.iter().filter(|(_, t)| *t > at) {
                let prop = copy_prop(e.prop);
                let reached = e.prop.shared.is_some_and(|g| prop.receives_from(&[g]));
                if !reached {
                    copies.push(Entry {
                        prop,
                        since: Some(at),
                        since_source: SinceSource::Observed,
                        mount_id: None,
                        submounts: false,
                        ..e.clone()
                    });
                }
            }
        }

        let mover = if via == "unshare" {
            Some(ev.task.tgid)
        } else {
            None
        };
        let ns = self.ns_mut(child, at);
        ns.creation = Some(Creation {
            at,
            by: ev.task.clone(),
            via,
            parent,
            flags: clone_flags,
            first_member,
        });
        ns.first_seen = ns.first_seen.min(at);
        ns.entries = copies;
        self.mark_copies(child, "namespace created");
        match mover {
            Some(pid) => self.move_member(pid, &ev.task.comm, parent, child, at, out),
            None => self.add_member(child, first_member, &ev.task.comm, at),
        }
        self.update_watch(child, out);
        if self
            .namespaces
            .get(&child)
            .is_some_and(|n| !n.entries.is_empty())
        {
            out.push(Output::Rescan {
                namespaces: vec![child],
                full: false,
                reason: reason::NEW_NAMESPACE,
            });
        }
        for later in early.into_iter().filter(|e| e.end >= at) {
            self.apply_call(&later, out);
        }
    }

    fn add_member(&mut self, ns: NsId, pid: Pid, comm: &str, at: Ktime) {
        if self.exited.get(&pid).is_some_and(|&t| t >= at) {
            self.stats.late_events += 1;
            return;
        }
        let n = self.ns_mut(ns, at);
        n.members.insert(pid);
        let info = ProcessInfo {
            pid,
            start: at,
            comm: comm.to_string(),
            ..ProcessInfo::default()
        };
        match self.processes.get_mut(&pid) {
            // Same process seen again (e.g. from a snapshot): keep what /proc said.
            Some(p) if p.info.start <= at && p.ns == ns => {}
            _ => {
                self.processes.insert(pid, Process { info, ns });
            }
        }
    }

    fn move_member(
        &mut self,
        pid: Pid,
        comm: &str,
        from: NsId,
        to: NsId,
        at: Ktime,
        out: &mut Vec<Output>,
    ) {
        if let Some(n) = self.namespaces.get_mut(&from) {
            n.members.remove(&pid);
        }
        let comm = self
            .processes
            .get(&pid)
            .map(|p| p.info.comm.clone())
            .unwrap_or_else(|| comm.to_string());
        self.ns_mut(to, at).members.insert(pid);
        match self.processes.get_mut(&pid) {
            Some(p) => p.ns = to,
            None => {
                let info = ProcessInfo {
                    pid,
                    start: at,
                    comm,
                    ..ProcessInfo::default()
                };
                self.processes.insert(pid, Process { info, ns: to });
            }
        }
        self.after_member_left(from, out);
    }

    /// A mount change in a host namespace whose path is relative or
    /// truncated.
    fn unplaceable(&self, ev: &SyscallEvent) -> bool {
        let path = match &ev.call {
            Call::Mount { target, .. } | Call::Umount { target, .. } => target,
            Call::MoveMount { to, .. } => to,
            Call::Rmdir { path } => path,
            _ => return false,
        };
        (path.truncated || !path.path.is_absolute()) && self.is_reference(ev.ns)
    }

    /// Adds a mount made by an event: a container filesystem when the target
    /// is a container path, or a bind of one; else only the host's tree.
    fn add_mount(
        &mut self,
        ev: &SyscallEvent,
        target: &PathBytes,
        fstype: &str,
        source: &PathBytes,
        bind_of: Option<&PathBytes>,
        out: &mut Vec<Output>,
    ) {
        let ns_id = ev.ns;
        let at = ev.end;
        let mut group = None;
        let prop = {
            let next = &mut self.next_group;
            let ns = self
                .namespaces
                .entry(ns_id)
                .or_insert_with(|| Namespace::new(ns_id, at));
            ns.inherited_prop(target, || {
                *next += 1;
                group = Some(*next);
                *next
            })
        };
        let bound_fs = bind_of.and_then(|src| {
            self.namespaces
                .get(&ns_id)?
                .entries
                .iter()
                .rev()
                .find(|e| *e.mount_point == *src)
                .map(|e| e.fs)
        });
        let is_container_path = self.cfg.patterns.matches(target);
        let fs_id = match bound_fs {
            Some(id) => Some(id),
            None if is_container_path => {
                let id = self.next_fs;
                self.next_fs += 1;
                let hint = ContainerHint::from_path(target);
                self.fs.insert(
                    id,
                    ContainerFs {
                        id,
                        dev: None,
                        root: PathBytes::from("/"),
                        path: target.clone(),
                        fstype: fstype.to_string(),
                        source: source.clone(),
                        hint,
                        mounted_at: Some(at),
                        unmounted_at: None,
                        pins: Vec::new(),
                        awaiting_pin_scan: false,
                        host_groups: Vec::new(),
                        changed_at: 0,
                    },
                );
                Some(id)
            }
            None => None,
        };
        let ns = self
            .namespaces
            .entry(ns_id)
            .or_insert_with(|| Namespace::new(ns_id, at));
        if !ns.tree.is_empty() {
            ns.tree.push(TreeMount {
                mount_point: Arc::new(target.clone()),
                prop,
            });
        }
        if let Some(id) = fs_id {
            if let (Some(g), Some(f)) = (prop.shared, self.fs.get_mut(&id)) {
                if is_container_path {
                    f.host_groups = vec![g];
                }
            }
            ns.entries.push(Entry {
                fs: id,
                mount_id: None,
                mount_point: Arc::new(target.clone()),
                prop,
                since: Some(at),
                since_source: SinceSource::Observed,
                submounts: false,
            });
            if let Some(f) = self.fs.get_mut(&id) {
                if is_container_path && f.unmounted_at.is_some() {
                    f.unmounted_at = None;
                }
            }
            self.mark(id, "mounted");
            self.changed(id, at);
            // The kernel knows the device and the propagation; ask.
            out.push(Output::Rescan {
                namespaces: vec![ns_id],
                full: false,
                reason: "container filesystem mounted",
            });
            self.update_watch(ns_id, out);
        }
    }

    fn move_mounts(&mut self, ns_id: NsId, from: &PathBytes, to: &PathBytes) {
        let Some(ns) = self.namespaces.get_mut(&ns_id) else {
            return;
        };
        let mut touched = Vec::new();
        let repath = |mp: &PathBytes| -> Option<PathBytes> {
            mp.is_under(from).then(|| {
                let rest = &mp.as_bytes()[from.as_bytes().len().min(mp.as_bytes().len())..];
                if rest.is_empty() {
                    to.clone()
                } else {
                    to.join(rest)
                }
            })
        };
        for e in ns.entries.iter_mut() {
            if let Some(p) = repath(&e.mount_point) {
                e.mount_point = Arc::new(p);
                touched.push(e.fs);
            }
        }
        for m in ns.tree.iter_mut() {
            if let Some(p) = repath(&m.mount_point) {
                m.mount_point = Arc::new(p);
            }
        }
        for id in touched {
            self.mark(id, "moved");
        }
    }

    /// `mount --make-{private,slave,shared,unbindable}` and
    /// `mount_setattr(propagation)`, semantics of fs/pnode.c `change_mnt_propagation`.
    fn set_propagation(&mut self, ns_id: NsId, path: &PathBytes, kind: u64, recursive: bool) {
        let mut next = self.next_group;
        let Some(ns) = self.namespaces.get_mut(&ns_id) else {
            return;
        };
        let applies = |mp: &PathBytes| {
            if recursive {
                mp.is_under(path)
            } else {
                mp == path
            }
        };
        let change = |p: &mut Prop, next: &mut Group| {
            if kind & flags::MS_SHARED != 0 {
                if p.shared.is_none() {
                    *next += 1;
                    p.shared = Some(*next);
                }
            } else if kind & flags::MS_SLAVE != 0 {
                if let Some(g) = p.shared.take() {
                    p.master = Some(g);
                }
            } else if kind & (flags::MS_PRIVATE | flags::MS_UNBINDABLE) != 0 {
                p.shared = None;
                p.master = None;
                p.known = true;
            }
        };
        let mut changed = false;
        for e in ns.entries.iter_mut().filter(|e| applies(&e.mount_point)) {
            change(&mut e.prop, &mut next);
            changed = true;
        }
        for m in ns.tree.iter_mut().filter(|m| applies(&m.mount_point)) {
            change(&mut m.prop, &mut next);
        }
        self.next_group = next;
        if changed {
            self.mark_copies(ns_id, "propagation changed");
        }
    }

    /// A successful umount in `ns_id`: the topmost mount at `path` goes, and
    /// so do its peers and slaves elsewhere (fs/pnode.c `propagate_umount`).
    fn umount(&mut self, ns_id: NsId, path: &PathBytes, at: Ktime, out: &mut Vec<Output>) {
        let Some(ns) = self.namespaces.get_mut(&ns_id) else {
            return;
        };
        if let Some(i) = ns.tree.iter().rposition(|m| *m.mount_point == *path) {
            ns.tree.remove(i);
        }
        let Some(i) = ns.entries.iter().rposition(|e| *e.mount_point == *path) else {
            return;
        };
        let removed = ns.entries.remove(i);
        ns.removed.push_back((removed.clone(), at));
        if ns.removed.len() > REMOVED_CAP {
            ns.removed.pop_front();
        }
        let fs_id = removed.fs;
        // Walk the propagation graph: peers of the group, slaves of it, and
        // recursively slaves of any shared slave.
        let mut groups: Vec<Group> = removed.prop.shared.into_iter().collect();
        let mut seen: HashSet<Group> = groups.iter().copied().collect();
        let mut affected: Vec<NsId> = Vec::new();
        while let Some(g) = groups.pop() {
            for (id, other) in self.namespaces.iter_mut() {
                if *id == ns_id && other.entries.iter().all(|e| e.prop.shared != Some(g)) {
                    continue;
                }
                let before = other.entries.len();
                other.entries.retain(|e| {
                    let hit = e.fs == fs_id
                        && *e.mount_point == *path
                        && (e.prop.shared == Some(g) || e.prop.master == Some(g));
                    if hit {
                        if let Some(s) = e.prop.shared {
                            if seen.insert(s) {
                                groups.push(s);
                            }
                        }
                    }
                    !hit
                });
                if other.entries.len() != before {
                    affected.push(*id);
                }
            }
        }
        self.mark(fs_id, "unmounted by the host");
        self.changed(fs_id, at);
        self.settle_unmounted(fs_id, at);
        for id in affected {
            self.update_watch(id, out);
        }
        self.update_watch(ns_id, out);
        // Confirm which copies really survived.
        let holders: Vec<NsId> = self
            .namespaces
            .values()
            .filter(|n| n.entries.iter().any(|e| e.fs == fs_id))
            .map(|n| n.id)
            .collect();
        if !holders.is_empty() {
            out.push(Output::Rescan {
                namespaces: holders,
                full: false,
                reason: "container filesystem unmounted",
            });
        }
    }

    /// Sets or clears `unmounted_at` from whether any host namespace still
    /// mounts the filesystem.
    fn settle_unmounted(&mut self, fs_id: FsId, at: Ktime) {
        let in_host = self
            .namespaces
            .values()
            .any(|n| self.is_reference(n.id) && n.entries.iter().any(|e| e.fs == fs_id));
        if let Some(f) = self.fs.get_mut(&fs_id) {
            if in_host {
                f.unmounted_at = None;
            } else if f.unmounted_at.is_none() {
                f.unmounted_at = Some(at);
            }
        }
    }

    /// [`Model::settle_unmounted`] for every filesystem, in one sweep.
    fn settle_all_unmounted(&mut self, at: Ktime) {
        let mut in_host: HashSet<FsId> = HashSet::new();
        for n in self.namespaces.values().filter(|n| self.is_reference(n.id)) {
            in_host.extend(n.entries.iter().map(|e| e.fs));
        }
        for f in self.fs.values_mut() {
            if in_host.contains(&f.id) {
                f.unmounted_at = None;
            } else if f.unmounted_at.is_none() {
                f.unmounted_at = Some(at);
            }
        }
    }

    /// Since 3.18, removing a directory detaches every mount on it in every
    /// namespace (fs/namespace.c `__detach_mounts`).
    fn rmdir(&mut self, path: &PathBytes, at: Ktime, out: &mut Vec<Output>) {
        if !self.cfg.kernel.detaches_on_rmdir() {
            return;
        }
        let mut touched = Vec::new();
        let mut emptied = Vec::new();
        for ns in self.namespaces.values_mut() {
            let before = ns.entries.len();
            ns.entries.retain(|e| {
                let hit = *e.mount_point == *path;
                if hit {
                    touched.push(e.fs);
                }
                !hit
            });
            ns.tree.retain(|m| *m.mount_point != *path);
            if ns.entries.len() != before {
                emptied.push(ns.id);
            }
        }
        for id in touched {
            self.mark(id, "mountpoint removed");
            self.changed(id, at);
            self.settle_unmounted(id, at);
        }
        for id in emptied {
            self.update_watch(id, out);
        }
    }

    fn failed_removal(
        &mut self,
        ev: &SyscallEvent,
        syscall: &'static str,
        path: &PathBytes,
        out: &mut Vec<Output>,
    ) {
        let fs_id = self
            .namespaces
            .get(&ev.ns)
            .and_then(|n| {
                n.entries
                    .iter()
                    .rev()
                    .find(|e| *e.mount_point == *path)
                    .map(|e| e.fs)
            })
            .or_else(|| self.fs.values().find(|f| f.path == *path).map(|f| f.id));
        let Some(fs_id) = fs_id else {
            if !self.cfg.patterns.matches(path) {
                return;
            }
            // A container path the model never saw mounted: still worth saying.
            let f = report::FailedOnUnknown { path, ev, syscall };
            let id = self.take_finding_id();
            out.push(Output::Finding(Box::new(report::failed_unknown(
                &self.cfg, id, f,
            ))));
            return;
        };
        // Say it after a fresh read: a holder that appeared moments ago is
        // not fully known yet (its comm, whether its cwd is inside), and the
        // remedy depends on it (`umount -l` for a busy copy).
        self.pending_failures.push(PendingFailure {
            fs: fs_id,
            ev: ev.clone(),
            syscall,
            path: path.clone(),
        });
        out.push(Output::Rescan {
            namespaces: Vec::new(),
            full: true,
            reason: "removal failed with EBUSY",
        });
    }

    /// After a snapshot: the failed removals that were waiting for it.
    fn settle_failures(&mut self, out: &mut Vec<Output>) {
        for p in std::mem::take(&mut self.pending_failures) {
            let finding = self.build_failed_removal(p.fs, &p.ev, p.syscall, &p.path);
            out.push(Output::Finding(Box::new(finding)));
        }
    }

    fn take_finding_id(&mut self) -> String {
        let id = format!("ML-{}", self.next_finding);
        self.next_finding += 1;
        id
    }

    fn on_process(&mut self, ev: &ProcessEvent, out: &mut Vec<Output>) {
        self.advance(ev.at);
        match &ev.kind {
            ProcessEventKind::Fork { child, comm, .. } => {
                if self.is_duplicate((ev.at, *child, 200)) {
                    return;
                }
                self.add_member(ev.ns, *child, comm, ev.at);
            }
            ProcessEventKind::Exit { pid } => {
                if self.is_duplicate((ev.at, *pid, 201)) {
                    return;
                }
                self.exited.insert(*pid, ev.at);
                self.exited_order.push_back(*pid);
                if self.exited_order.len() > RECENT_CAP {
                    if let Some(old) = self.exited_order.pop_front() {
                        self.exited.remove(&old);
                    }
                }
                let ns = self.processes.get(pid).map(|p| p.ns).unwrap_or(ev.ns);
                if self
                    .processes
                    .get(pid)
                    .is_some_and(|p| p.info.start > ev.at)
                {
                    // A newer process already has this pid: the exit is old news.
                    self.stats.late_events += 1;
                    return;
                }
                self.processes.remove(pid);
                if let Some(n) = self.namespaces.get_mut(&ns) {
                    n.members.remove(pid);
                }
                if self.after_member_left(ns, out) {
                    out.push(Output::Rescan {
                        namespaces: vec![ns],
                        full: false,
                        reason: "last process of a holder namespace exited",
                    });
                }
                self.update_watch(ns, out);
            }
        }
    }

    /// When the last process leaves a namespace that nothing else is known
    /// to pin, the kernel frees it and its mounts. Returns whether it went.
    /// When the last process leaves a namespace that nothing else is known
    /// to pin, the kernel frees it and its mounts: forget it. Returns whether
    /// it held container mounts (worth confirming with a rescan).
    fn after_member_left(&mut self, ns_id: NsId, out: &mut Vec<Output>) -> bool {
        let Some(ns) = self.namespaces.get(&ns_id) else {
            return false;
        };
        if !ns.members.is_empty()
            || !ns.nsfs.is_empty()
            || self.is_reference(ns_id)
            || self.self_ns == Some(ns_id)
        {
            return false;
        }
        let held = !ns.entries.is_empty();
        self.drop_namespace(ns_id, "the holder exited", out);
        held
    }

    fn drop_namespace(&mut self, id: NsId, reason: &'static str, out: &mut Vec<Output>) {
        let Some(ns) = self.namespaces.remove(&id) else {
            return;
        };
        // Losing a holder only matters to an open finding that names it (a
        // copy inside its grace period is re-checked when that ends).
        if self.named.contains_key(&id) {
            for e in &ns.entries {
                if self
                    .active
                    .get(&e.fs)
                    .is_some_and(|a| a.key.iter().any(|k| k.0 == id))
                {
                    self.mark(e.fs, reason);
                }
            }
        }
        for pid in &ns.members {
            if self.processes.get(pid).is_some_and(|p| p.ns == id) {
                self.processes.remove(pid);
            }
        }
        if ns.watched {
            out.push(Output::Unwatch(id));
        }
    }

    /// Watch forks/exits exactly in the non-host namespaces holding copies.
    fn update_watch(&mut self, id: NsId, out: &mut Vec<Output>) {
        let reference = self.is_reference(id);
        let Some(ns) = self.namespaces.get_mut(&id) else {
            return;
        };
        let want = !reference && !ns.entries.is_empty();
        if want != ns.watched {
            ns.watched = want;
            out.push(if want {
                Output::Watch(id)
            } else {
                Output::Unwatch(id)
            });
        }
    }

    // ----- snapshots ----------------------------------------------------

    fn on_snapshot(&mut self, s: &Snapshot, out: &mut Vec<Output>) {
        self.stats.snapshots += 1;
        self.advance(s.taken_at);
        if s.self_ns.is_some() {
            self.self_ns = s.self_ns;
        }
        for nss in &s.namespaces {
            self.absorb_members(nss, s.taken_at);
        }
        // A read that began before an event added or removed a mount of a
        // container filesystem (a scan still running when a container
        // stopped) would undo what the event told: for those filesystems
        // keep the events' picture, and read again.
        let recent: IdSet<FsId> = self
            .fs
            .values()
            .filter(|f| f.changed_at > s.taken_at)
            .map(|f| f.id)
            .collect();
        // Container filesystems: every mount at a container path, wherever
        // it is; then every mount of one of those filesystems is an entry.
        for nss in &s.namespaces {
            let host = self.is_reference(nss.ns);
            for m in &nss.mounts {
                if !self.cfg.patterns.matches(&m.mount_point) {
                    continue;
                }
                let known_recent = !recent.is_empty()
                    && self
                        .fs_by_key
                        .get(&(m.dev, m.root.clone()))
                        .is_some_and(|id| recent.contains(id));
                if !known_recent {
                    self.fs_for_mount(m, nss.ns, host, s.taken_at);
                }
            }
        }
        let mut reread = Vec::new();
        for nss in &s.namespaces {
            if self.absorb_mounts(nss, s.taken_at, &recent, out) {
                reread.push(nss.ns);
            }
        }
        if !reread.is_empty() {
            self.stats.stale_tables += reread.len() as u64;
            out.push(Output::Rescan {
                namespaces: reread,
                full: false,
                reason: "a mount table read before the latest change",
            });
        }
        if let Some(alive) = &s.alive {
            let alive: HashSet<NsId> = alive.iter().copied().collect();
            // A namespace the probes saw made after the read began is not in
            // it, and not gone.
            let gone: Vec<NsId> = self
                .namespaces
                .values()
                .filter(|n| !alive.contains(&n.id))
                .filter(|n| n.creation.as_ref().is_none_or(|c| c.at <= s.taken_at))
                .map(|n| n.id)
                .collect();
            for id in gone {
                self.drop_namespace(id, "the holder namespace is gone", out);
            }
        }
        self.settle_all_unmounted(s.taken_at);
        if s.pins_scanned {
            self.absorb_pins(&s.pins, s.taken_at);
        }
        self.collect_garbage();
    }

    fn absorb_members(&mut self, nss: &NamespaceSnapshot, at: Ktime) {
        let runtime_here = nss.members.iter().any(|p| self.is_runtime_comm(&p.comm));
        let pod_uid = nss
            .members
            .iter()
            .filter_map(|p| p.cgroup.as_deref())
            .find_map(container::pod_uid_from_cgroup);
        let ns = self.ns_mut(nss.ns, at);
        let old: Vec<Pid> = std::mem::take(&mut ns.members).into_iter().collect();
        ns.members = nss.members.iter().map(|p| p.pid).collect();
        ns.oldest_member_start = nss.members.iter().map(|p| p.start).min();
        if let Some(start) = ns.oldest_member_start {
            ns.first_seen = ns.first_seen.min(start);
        }
        ns.nsfs = nss.nsfs_mounts.clone();
        ns.user_ns = nss
            .user_ns
            .or_else(|| nss.members.iter().find_map(|p| p.user_ns));
        ns.runtime_here = runtime_here;
        ns.pod_uid = pod_uid;
        ns.early.clear();
        // A scan that did not read a process's devices says nothing about
        // them: keep what an earlier scan of the same process found (no cwd
        // at all means "not read"; every process has one).
        let mut known_devices: IdMap<Pid, ProcessInfo> = IdMap::default();
        for pid in old {
            if self.processes.get(&pid).is_some_and(|p| p.ns == nss.ns) {
                if let Some(p) = self.processes.remove(&pid) {
                    known_devices.insert(pid, p.info);
                }
            }
        }
        // Devices the members use: a detached container filesystem among them
        // is pinned (see `effective_pins`), so its status may change.
        let used: BTreeSet<Dev> = nss
            .members
            .iter()
            .flat_map(|p| {
                p.cwd_dev
                    .into_iter()
                    .chain(p.root_dev)
                    .chain(p.fd_devs.iter().copied())
            })
            .collect();
        if !used.is_empty() {
            let touched: Vec<FsId> = self
                .fs
                .values()
                .filter(|f| f.unmounted_at.is_some() && f.dev.is_some_and(|d| used.contains(&d)))
                .map(|f| f.id)
                .collect();
            for id in touched {
                self.mark(id, "a process is inside");
            }
        }
        for p in &nss.members {
            let mut info = p.clone();
            if info.cwd_dev.is_none() && info.root_dev.is_none() {
                if let Some(old) = known_devices.get(&p.pid).filter(|o| o.start == p.start) {
                    info.cwd_dev = old.cwd_dev;
                    info.root_dev = old.root_dev;
                    info.fd_devs = old.fd_devs.clone();
                }
            }
            self.processes.insert(p.pid, Process { info, ns: nss.ns });
        }
    }

    fn fs_for_mount(&mut self, m: &MountEntry, ns: NsId, host: bool, at: Ktime) -> FsId {
        let key = (m.dev, m.root.clone());
        if let Some(&id) = self.fs_by_key.get(&key) {
            if let Some(f) = self.fs.get_mut(&id) {
                if host && f.path != m.mount_point && f.unmounted_at.is_some() {
                    f.path = m.mount_point.clone();
                }
            }
            return id;
        }
        // A filesystem an event announced without a device: adopt it.
        let pending = self.fs.values().find(|f| {
            f.dev.is_none()
                && f.path == m.mount_point
                && self
                    .namespaces
                    .get(&ns)
                    .is_some_and(|n| n.entries.iter().any(|e| e.fs == f.id))
        });
        let id = match pending {
            Some(f) => f.id,
            None => {
                let id = self.next_fs;
                self.next_fs += 1;
                self.fs.insert(
                    id,
                    ContainerFs {
                        id,
                        dev: None,
                        root: m.root.clone(),
                        path: m.mount_point.clone(),
                        fstype: String::new(),
                        source: PathBytes::default(),
                        hint: ContainerHint::from_path(&m.mount_point),
                        mounted_at: None,
                        unmounted_at: if host { None } else { Some(at) },
                        pins: Vec::new(),
                        awaiting_pin_scan: false,
                        host_groups: Vec::new(),
                        changed_at: 0,
                    },
                );
                id
            }
        };
        if let Some(f) = self.fs.get_mut(&id) {
            f.dev = Some(m.dev);
            f.root = m.root.clone();
            f.fstype = m.fstype.clone();
            f.source = m.source.clone();
        }
        self.fs_by_key.insert(key, id);
        id
    }

    /// Replaces a namespace's container mounts with what its table shows,
    /// except for the `recent` filesystems (changed by events since the read
    /// began), whose entries stay as the events left them. Returns whether
    /// any was kept so.
    fn absorb_mounts(
        &mut self,
        nss: &NamespaceSnapshot,
        at: Ktime,
        recent: &IdSet<FsId>,
        out: &mut Vec<Output>,
    ) -> bool {
        let host = self.is_reference(nss.ns);
        let parents: HashSet<u64> = nss.mounts.iter().map(|m| m.parent_id).collect();
        let lookup = |m: &MountEntry| self.fs_by_key.get(&(m.dev, m.root.clone())).copied();
        let root_fs = nss
            .mounts
            .iter()
            .rev()
            .find(|m| m.mount_point.as_bytes() == b"/")
            .and_then(lookup);
        let mut entries: Vec<Entry> = Vec::new();
        let mut kept_recent = false;
        for m in &nss.mounts {
            if let Some(fs) = lookup(m) {
                if recent.contains(&fs) {
                    kept_recent = true;
                    continue;
                }
                entries.push(Entry {
                    fs,
                    mount_id: Some(m.mount_id),
                    mount_point: Arc::new(m.mount_point.clone()),
                    prop: Prop::kernel(m.shared, m.master),
                    since: None,
                    since_source: SinceSource::Unknown,
                    submounts: parents.contains(&m.mount_id),
                });
            }
        }
        let tree: Vec<TreeMount> = if host {
            nss.mounts
                .iter()
                .map(|m| TreeMount {
                    mount_point: Arc::new(m.mount_point.clone()),
                    prop: Prop::kernel(m.shared, m.master),
                })
                .collect()
        } else {
            Vec::new()
        };
        if host {
            let mut groups: BTreeMap<FsId, Vec<Group>> = BTreeMap::new();
            for e in &entries {
                groups.entry(e.fs).or_default().extend(e.prop.shared);
            }
            for (id, g) in groups {
                if let Some(f) = self.fs.get_mut(&id) {
                    f.host_groups = g;
                }
            }
        }
        let ns = self.ns_mut(nss.ns, at);
        ns.snapshot_at = Some(at);
        // The events' entries of the recent filesystems stay.
        for e in ns.entries.iter().filter(|e| recent.contains(&e.fs)) {
            kept_recent = true;
            entries.push(e.clone());
        }
        // Keep what events told about when each copy began.
        for e in entries.iter_mut() {
            let old = ns.entries.iter().find(|o| {
                o.fs == e.fs && (o.mount_id == e.mount_id || o.mount_point == e.mount_point)
            });
            match (old, &ns.creation, ns.oldest_member_start) {
                (Some(o), ..) if o.since.is_some() => {
                    e.since = o.since;
                    e.since_source = o.since_source;
                }
                (_, Some(c), _) => {
                    e.since = Some(c.at);
                    e.since_source = SinceSource::Observed;
                }
                (_, None, Some(start)) => {
                    e.since = Some(start);
                    e.since_source = SinceSource::Inferred;
                }
                _ => {}
            }
        }
        let mut touched: BTreeSet<FsId> = ns.entries.iter().map(|e| e.fs).collect();
        touched.extend(entries.iter().map(|e| e.fs));
        ns.entries = entries;
        ns.tree = tree;
        ns.root_fs = root_fs;
        for id in touched {
            self.mark(id, "mount table read");
        }
        self.update_watch(nss.ns, out);
        kept_recent
    }

    fn absorb_pins(&mut self, pins: &[Pin], at: Ktime) {
        let mut by_dev: BTreeMap<Dev, Vec<Pin>> = BTreeMap::new();
        for p in pins {
            by_dev.entry(p.dev).or_default().push(p.clone());
        }
        let ids: Vec<FsId> = self.fs.keys().copied().collect();
        for id in ids {
            let Some(f) = self.fs.get_mut(&id) else {
                continue;
            };
            if f.unmounted_at.is_some_and(|u| u > at) {
                // Still mounted when this read began: it could not see
                // who keeps it now.
                if let Some(d) = f.dev {
                    by_dev.remove(&d);
                }
                continue;
            }
            let new = f.dev.and_then(|d| by_dev.remove(&d)).unwrap_or_default();
            let awaited = std::mem::take(&mut f.awaiting_pin_scan);
            if new != f.pins {
                f.pins = new;
                self.mark(id, "pins changed");
            } else if awaited {
                self.mark(id, "no process is inside any more");
            }
        }
        // Filesystems no mount table ever showed us (a scan with no history).
        for (dev, pins) in by_dev {
            let id = self.next_fs;
            self.next_fs += 1;
            let first = &pins[0];
            // An overlay's root reports its upper directory's inode: the
            // container whose upper directory that is owned it.
            let owner_path = pins.iter().find_map(|p| {
                let ino = p.root_ino?;
                self.containers
                    .values()
                    .find(|c| c.info.upper_dir.is_some_and(|(_, i)| i == ino))
                    .and_then(|c| c.info.mounts.first().cloned())
            });
            let path = owner_path
                .or_else(|| first.backing_file.clone())
                .unwrap_or_default();
            let hint = ContainerHint::from_path(&path);
            self.fs.insert(
                id,
                ContainerFs {
                    id,
                    dev: Some(dev),
                    root: PathBytes::from("/"),
                    path,
                    fstype: first.fstype.clone().unwrap_or_default(),
                    source: first.backing_file.clone().unwrap_or_default(),
                    hint,
                    mounted_at: None,
                    unmounted_at: Some(at),
                    pins,
                    awaiting_pin_scan: false,
                    host_groups: Vec::new(),
                    changed_at: 0,
                },
            );
            self.mark(id, "pinned filesystem found");
        }
    }

    /// Forgets filesystems nothing holds and nothing reports on, so memory
    /// stays flat however many containers come and go.
    fn collect_garbage(&mut self) {
        // Reordering never spans more than a few ring-buffer batches.
        let horizon = self.now.saturating_sub(REORDER_HORIZON_NS);
        for ns in self.namespaces.values_mut() {
            ns.removed.retain(|(_, at)| *at >= horizon);
        }
        // Candidates: gone from the host, nothing open, nothing pinned. A
        // filesystem the host still mounts is never collected, so the sweep
        // below is usually skipped.
        let mut candidates: IdSet<FsId> = self
            .fs
            .values()
            .filter(|f| {
                f.unmounted_at.is_some()
                    && f.pins.is_empty()
                    && !self.active.contains_key(&f.id)
                    && !self.dirty.contains_key(&f.id)
                    && !self
                        .containers
                        .values()
                        .any(|c| c.warn_pending && c.info.mounts.contains(&f.path))
            })
            .map(|f| f.id)
            .collect();
        if !candidates.is_empty() {
            for ns in self.namespaces.values() {
                for e in ns.entries.iter().chain(ns.removed.iter().map(|(e, _)| e)) {
                    candidates.remove(&e.fs);
                }
            }
        }
        let drop: Vec<FsId> = candidates.into_iter().collect();
        for id in drop {
            if let Some(f) = self.fs.remove(&id) {
                if let Some(dev) = f.dev {
                    if self.fs_by_key.get(&(dev, f.root.clone())) == Some(&id) {
                        self.fs_by_key.remove(&(dev, f.root));
                    }
                }
            }
        }
        // Namespaces with nothing in them and nothing to say.
        let empty: Vec<NsId> = self
            .namespaces
            .values()
            .filter(|n| {
                n.members.is_empty()
                    && n.entries.is_empty()
                    && n.nsfs.is_empty()
                    && n.early.is_empty()
                    && !n.watched
                    && self.self_ns != Some(n.id)
            })
            .map(|n| n.id)
            .collect();
        for id in empty {
            self.namespaces.remove(&id);
        }
    }

    // ----- findings -----------------------------------------------------

    /// Re-derives the status of every filesystem marked dirty, finding their
    /// mounts in one sweep over all namespaces.
    fn evaluate(&mut self, out: &mut Vec<Output>) {
        if self.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let mut refs: IdMap<FsId, Vec<(NsId, usize)>> =
            dirty.keys().map(|&id| (id, Vec::new())).collect();
        for ns in self.namespaces.values() {
            for (i, e) in ns.entries.iter().enumerate() {
                if let Some(v) = refs.get_mut(&e.fs) {
                    v.push((ns.id, i));
                }
            }
        }
        for (id, reason) in dirty {
            let (status, due) =
                self.classify(id, refs.get(&id).map(Vec::as_slice).unwrap_or_default());
            if let Some(due) = due {
                self.grace_due
                    .entry(due)
                    .or_default()
                    .push(GraceItem::Fs(id));
            }
            self.transition(id, status, reason, out);
        }
    }
}

/// A small tag per call kind, for duplicate detection.
fn call_tag(call: &Call) -> u8 {
    match call {
        Call::Mount { .. } => 1,
        Call::Umount { .. } => 2,
        Call::Unshare { .. } => 3,
        Call::Setns { .. } => 4,
        Call::Clone { .. } => 5,
        Call::NewTask { .. } => 6,
        Call::MoveMount { .. } => 7,
        Call::OpenTree { .. } => 8,
        Call::Fsmount { .. } => 9,
        Call::MountSetattr { .. } => 10,
        Call::PivotRoot { .. } => 11,
        Call::Rmdir { .. } => 12,
    }
}

fn changes_mounts(call: &Call) -> bool {
    matches!(
        call,
        Call::Mount { .. }
            | Call::Umount { .. }
            | Call::MoveMount { .. }
            | Call::MountSetattr { .. }
    )
}
