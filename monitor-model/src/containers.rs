//! Container lifecycles from the runtimes: which container (or pod) a
//! filesystem belongs to, and the warning when a stopped container's
//! removal would fail or leave something pinned.

use std::collections::BTreeMap;

use crate::finding::{
    consequence, ConsequenceKind, ContainerRef, FailedCall, Finding, FindingKind, HoldKind,
};
use crate::input::{ContainerEvent, ContainerInfo, ContainerState, Ktime, NsId};
use crate::state::{ContainerFs, FsId};
use crate::{Model, Output};

/// A runtime and a container id.
pub(crate) type ContainerKey = (String, String);

#[derive(Clone, Debug)]
pub(crate) struct Container {
    pub info: ContainerInfo,
    pub removed_at: Option<Ktime>,
    /// Stopped; the warning waits for a fresh read of its holders.
    pub warn_pending: bool,
    /// The model's clock when that read was asked for: a snapshot taken
    /// before it (a scan already running when the stop came, often of other
    /// namespaces, absorbed after the umount's events) must not decide the
    /// warning. Seen with 200 containers: such a scan settled a third to
    /// two thirds of the warnings as "nothing held" (BENCHMARKS.md,
    /// lifecycle).
    pub warn_requested_at: Ktime,
    /// A removal failure was reported already (Docker's `Dead` stays so).
    pub failure_reported: bool,
}

impl Model {
    pub(crate) fn on_container(&mut self, ev: &ContainerEvent, out: &mut Vec<Output>) {
        match ev {
            ContainerEvent::Seen { at, info } => {
                self.advance(*at);
                let key = (info.runtime.clone(), info.id.clone());
                let was = self.containers.get(&key).map(|c| c.info.state);
                let c = self
                    .containers
                    .entry(key.clone())
                    .or_insert_with(|| Container {
                        info: (**info).clone(),
                        removed_at: None,
                        warn_pending: false,
                        warn_requested_at: 0,
                        failure_reported: false,
                    });
                c.info = (**info).clone();
                c.removed_at = None;
                match info.state {
                    ContainerState::Stopped if was != Some(ContainerState::Stopped) => {
                        self.container_stopped(&key, out)
                    }
                    ContainerState::Dead => self.removal_failed(
                        &key,
                        *at,
                        "the runtime marks the container Dead: an earlier removal failed",
                        out,
                    ),
                    _ => {}
                }
                // Open findings on its filesystems now have a name.
                let known = self.container_fs(&key);
                for &id in &known {
                    if self.active.contains_key(&id) {
                        self.refresh_owner(id);
                    }
                }
                // A running container whose rootfs the model has not seen
                // mounted (the mount event was missed or could not be placed):
                // read the host's mount tables.
                let running =
                    matches!(info.state, ContainerState::Running | ContainerState::Paused);
                if running && known.is_empty() && !info.mounts.is_empty() {
                    out.push(Output::Rescan {
                        namespaces: self.reference_namespaces(),
                        full: false,
                        reason: "a container's mounts are not known yet",
                    });
                }
            }
            ContainerEvent::Stopped { at, runtime, id } => {
                self.advance(*at);
                let key = (runtime.clone(), id.clone());
                if let Some(c) = self.containers.get_mut(&key) {
                    c.info.state = ContainerState::Stopped;
                    c.info.pid = None;
                    self.container_stopped(&key, out);
                }
            }
            ContainerEvent::Removed { at, runtime, id } => {
                self.advance(*at);
                self.container_removed(&(runtime.clone(), id.clone()), *at);
            }
            ContainerEvent::RemovalFailed {
                at,
                runtime,
                id,
                message,
            } => {
                self.advance(*at);
                self.removal_failed(&(runtime.clone(), id.clone()), *at, message, out);
            }
            ContainerEvent::Inventory { at, runtime, ids } => {
                self.advance(*at);
                let gone: Vec<ContainerKey> = self
                    .containers
                    .keys()
                    .filter(|(r, id)| r == runtime && !ids.contains(id))
                    .cloned()
                    .collect();
                for key in gone {
                    self.container_removed(&key, *at);
                }
            }
        }
    }

    fn container_removed(&mut self, key: &ContainerKey, at: Ktime) {
        let held = self
            .container_fs(key)
            .iter()
            .any(|id| self.active.contains_key(id));
        if held {
            // Its filesystem outlived it: keep the name for the findings.
            if let Some(c) = self.containers.get_mut(key) {
                c.removed_at = Some(at);
                c.warn_pending = false;
            }
            for id in self.container_fs(key) {
                self.refresh_owner(id);
            }
        } else {
            self.containers.remove(key);
        }
    }

    /// The filesystems that belong to a container: its mount paths, and for
    /// a pod member, its pod's volumes.
    pub(crate) fn container_fs(&self, key: &ContainerKey) -> Vec<FsId> {
        let Some(c) = self.containers.get(key) else {
            return Vec::new();
        };
        self.fs
            .values()
            .filter(|f| owns(&c.info, f))
            .map(|f| f.id)
            .collect()
    }

    /// The container a filesystem belongs to, as its runtime describes it.
    pub(crate) fn owner_of(&self, fs: &ContainerFs) -> Option<ContainerRef> {
        let by_path = self
            .containers
            .values()
            .find(|c| c.info.mounts.contains(&fs.path));
        let by_pod = || {
            let uid = fs.hint.pod_uid.as_ref()?;
            self.containers
                .values()
                .find(|c| c.info.pod.as_ref().is_some_and(|p| &p.uid == uid))
        };
        let c = by_path.or_else(by_pod)?;
        let mut pod = c.info.pod.clone();
        if by_path.is_none() {
            // A pod's volume belongs to the pod, not to one of its containers.
            if let Some(p) = pod.as_mut() {
                p.container = None;
            }
        }
        Some(ContainerRef {
            runtime: c.info.runtime.clone(),
            namespace: c.info.namespace.clone(),
            id: c.info.id.clone(),
            name: c.info.name.clone(),
            image: c.info.image.clone(),
            pod,
            state: c.info.state,
            removed: c.removed_at.is_some(),
        })
    }

    /// Puts the (new) owner into the open finding without announcing it.
    fn refresh_owner(&mut self, id: FsId) {
        let Some(fs) = self.fs.get(&id) else { return };
        let owner = self.owner_of(fs);
        if let Some(a) = self.active.get_mut(&id) {
            a.last.mount.owner = owner;
        }
    }

    /// A container stopped: its holders get a fresh read (targeted, device
    /// facts included) before the warning is decided, since a cwd inside is
    /// what turns "detached on removal" into "pinned".
    fn container_stopped(&mut self, key: &ContainerKey, out: &mut Vec<Output>) {
        let fs_ids = self.container_fs(key);
        let mut namespaces: Vec<NsId> = Vec::new();
        let mut pinned = false;
        for &id in &fs_ids {
            for ns in self.namespaces.values() {
                if !self.is_reference(ns.id)
                    && ns.root_fs != Some(id)
                    && ns.entries.iter().any(|e| e.fs == id)
                {
                    namespaces.push(ns.id);
                }
            }
            if let Some(fs) = self.fs.get(&id) {
                for p in self.effective_pins(fs) {
                    namespaces.push(p.ns);
                    pinned = true;
                }
            }
        }
        namespaces.sort_unstable();
        namespaces.dedup();
        if namespaces.is_empty() && !pinned {
            return;
        }
        let now = self.now;
        if let Some(c) = self.containers.get_mut(key) {
            c.warn_pending = true;
            c.warn_requested_at = now;
        }
        out.push(Output::Rescan {
            namespaces,
            full: false,
            reason: crate::reason::READ_BEFORE_WARNING,
        });
    }

    /// After a snapshot: decide the warnings that were waiting for it (a
    /// snapshot taken after they were asked for).
    pub(crate) fn settle_warnings(&mut self, taken_at: Ktime, out: &mut Vec<Output>) {
        let waiting: Vec<ContainerKey> = self
            .containers
            .iter()
            .filter(|(_, c)| c.warn_pending && c.warn_requested_at <= taken_at)
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            if let Some(c) = self.containers.get_mut(&key) {
                c.warn_pending = false;
            }
            for id in self.container_fs(&key) {
                if let Some(f) = self.removal_warning(id) {
                    out.push(Output::Finding(Box::new(f)));
                }
            }
        }
    }

    /// The warning for one filesystem of a stopped container, if removing
    /// it would fail (EBUSY kernels) or leave the filesystem pinned. An idle
    /// copy on a kernel that detaches it at removal gets none.
    fn removal_warning(&mut self, id: FsId) -> Option<Finding> {
        self.removal_assessment(id)
            .filter(|f| f.kind == FindingKind::RemovalWarning)
    }

    /// What removing one filesystem's container now would do, if anything
    /// holds it: a `removal_warning` when it would fail or leave the
    /// filesystem pinned, else a `risk` whose consequence says the holders'
    /// copies will simply be detached.
    fn removal_assessment(&mut self, id: FsId) -> Option<Finding> {
        let mut refs: Vec<(NsId, usize)> = Vec::new();
        for ns in self.namespaces.values() {
            for (i, e) in ns.entries.iter().enumerate() {
                if e.fs == id {
                    refs.push((ns.id, i));
                }
            }
        }
        let (status, _) = self.classify_now(id, &refs);
        let fs = self.fs.get(&id)?;
        let holders = match &status {
            Some(crate::report::Status::Risk(r)) | Some(crate::report::Status::Leak(r)) => {
                self.copy_holders(fs, r)
            }
            Some(crate::report::Status::Pinned) => self.pin_holders(fs),
            None => return None,
        };
        let detached = matches!(status, Some(crate::report::Status::Pinned));
        let busy = holders
            .iter()
            .any(|h| !h.busy.is_empty() || h.hold != HoldKind::Copy);
        let c = consequence(
            &self.cfg.kernel,
            FindingKind::RemovalWarning,
            detached,
            busy,
            &fs.fstype,
            fs.dev,
        );
        let kind = if c.kind == ConsequenceKind::DetachedOnRemoval {
            FindingKind::Risk
        } else {
            FindingKind::RemovalWarning
        };
        let mount = self.mount_ref(fs);
        let finding_id = match self.active.get(&id) {
            Some(a) => a.id.clone(),
            None => self.take_finding_id(),
        };
        let (holders, more_holders) = crate::finding::cap_holders(holders);
        let remedy = crate::report::remedies(&self.cfg, &mount, &holders, kind);
        let summary = crate::report::summarize(kind, &mount, &holders);
        Some(Finding {
            id: finding_id,
            kind,
            at: self.now,
            summary,
            more_holders,
            mount,
            holders,
            consequence: c,
            remedy,
            failed_call: None,
            resolution: None,
        })
    }

    /// `mountleak check`: what removing a container (everything it mounts)
    /// would do now. `None` when the model does not know the container.
    pub fn check_container(&mut self, runtime: &str, id: &str) -> Option<CheckReport> {
        let key = (runtime.to_string(), id.to_string());
        if !self.containers.contains_key(&key) {
            return None;
        }
        let ids = self.container_fs(&key);
        Some(self.check_fs(&ids))
    }

    /// `mountleak check PATH`: what removing the mount at `path` (or the
    /// detached filesystem that was there) would do now. `None` when no
    /// container mount is known at that path.
    pub fn check_path(&mut self, path: &crate::PathBytes) -> Option<CheckReport> {
        let ids: Vec<FsId> = self
            .fs
            .values()
            .filter(|f| f.path == *path)
            .map(|f| f.id)
            .collect();
        (!ids.is_empty()).then(|| self.check_fs(&ids))
    }

    fn check_fs(&mut self, ids: &[FsId]) -> CheckReport {
        let findings: Vec<Finding> = ids
            .iter()
            .filter_map(|&id| self.removal_assessment(id))
            .collect();
        let held = findings
            .iter()
            .any(|f| f.kind == FindingKind::RemovalWarning);
        CheckReport {
            filesystems: ids.len(),
            held,
            findings,
        }
    }

    fn removal_failed(
        &mut self,
        key: &ContainerKey,
        at: Ktime,
        message: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.containers.get_mut(key) else {
            return;
        };
        if c.failure_reported {
            return;
        }
        c.failure_reported = true;
        let (runtime, name) = (c.info.runtime.clone(), c.info.name.clone());
        let fs_ids = self.container_fs(key);
        for id in fs_ids {
            let mut refs: Vec<(NsId, usize)> = Vec::new();
            for ns in self.namespaces.values() {
                for (i, e) in ns.entries.iter().enumerate() {
                    if e.fs == id && !self.is_reference(ns.id) && ns.root_fs != Some(id) {
                        refs.push((ns.id, i));
                    }
                }
            }
            let Some(fs) = self.fs.get(&id) else { continue };
            let mut holders = self.copy_holders(fs, &refs);
            holders.extend(self.extra_pin_holders(fs, &holders));
            let mount = self.mount_ref(fs);
            let finding_id = match self.active.get(&id) {
                Some(a) => a.id.clone(),
                None => self.take_finding_id(),
            };
            let (holders, more_holders) = crate::finding::cap_holders(holders);
            let remedy =
                crate::report::remedies(&self.cfg, &mount, &holders, FindingKind::FailedRemoval);
            let summary = crate::report::summarize(FindingKind::FailedRemoval, &mount, &holders);
            out.push(Output::Finding(Box::new(Finding {
                id: finding_id,
                kind: FindingKind::FailedRemoval,
                at,
                summary,
                more_holders,
                consequence: crate::finding::Consequence {
                    kind: ConsequenceKind::RemovalFailsEbusy,
                    text: format!("{runtime} could not remove {name}: {message}"),
                },
                remedy,
                failed_call: Some(FailedCall {
                    syscall: "remove",
                    pid: 0,
                    comm: runtime.clone(),
                    errno: 16,
                    path: mount.path.clone(),
                    message: Some(message.to_string()),
                }),
                mount,
                holders,
                resolution: None,
            })));
        }
    }
}

/// Whether a filesystem belongs to a container: one of its mount paths, or
/// a volume of its pod.
fn owns(info: &ContainerInfo, fs: &ContainerFs) -> bool {
    info.mounts.contains(&fs.path)
        || fs
            .hint
            .pod_uid
            .as_ref()
            .is_some_and(|uid| info.pod.as_ref().is_some_and(|p| &p.uid == uid))
}

/// The answer to "will removing this fail or leave something pinned?".
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// Container filesystems the target has.
    pub filesystems: usize,
    /// Removing it would fail or leave a filesystem pinned.
    pub held: bool,
    /// One per held filesystem: `removal_warning` (held) or `risk` (copies
    /// that removal will detach).
    pub findings: Vec<Finding>,
}

/// Containers, keyed for stable iteration.
pub(crate) type Containers = BTreeMap<ContainerKey, Container>;
