//! From state to findings: who holds what, what it will do on this kernel,
//! and what to type to fix it. Also decides when a finding opens, changes
//! and resolves.

use std::collections::BTreeMap;

use crate::finding::{
    cap_holders, consequence, unit_from_cgroup, Consequence, ConsequenceKind, FailedCall, Finding,
    FindingKind, HoldKind, Holder, HolderProcess, MountRef, ProcessRef,
};
use crate::input::{Ktime, NsId, Pid, PinKind, SyscallEvent};
use crate::path::PathBytes;
use crate::state::{ContainerFs, FsId, SinceSource};
use crate::{flags, Model, ModelConfig, Output};

/// How many member processes a holder lists by name.
const LISTED_PROCESSES: usize = 5;

/// The finding open for one filesystem.
#[derive(Clone, Debug)]
pub(crate) struct Active {
    pub id: String,
    pub kind: FindingKind,
    /// Who holds it: a change here is news; other changes are not.
    pub key: HolderKey,
    pub last: Finding,
    /// When `last` (or an earlier version) was last put out.
    pub emitted_at: Ktime,
    /// `last` changed since it was put out; it goes out at the next tick
    /// after [`UPDATE_EVERY`].
    pub held_back: bool,
}

/// A finding whose holders keep changing (thousands of short-lived
/// namespaces copying one overlay) is re-announced at most this often; a
/// change of kind (risk → leak → resolved) goes out at once.
pub(crate) const UPDATE_EVERY: Ktime = 1_000_000_000;

/// What holds a filesystem right now, if anything worth reporting. Entries
/// are `(namespace, index into its entries)`, valid until the state changes.
pub(crate) enum Status {
    /// Copies the host's umounts will not reach, while the host still mounts it.
    Risk(Vec<(NsId, usize)>),
    /// Copies that outlived the host's umount.
    Leak(Vec<(NsId, usize)>),
    /// No copy left anywhere, but processes keep the filesystem alive.
    Pinned,
}

/// Who holds a filesystem, for deciding whether a change is news: the
/// namespace, how, and whether something inside keeps it busy.
pub(crate) type HolderKey = Vec<(NsId, HoldKind, bool)>;

/// `(namespace, index into its entries)`.
type EntryRef = (NsId, usize);

pub(crate) struct FailedOnUnknown<'a> {
    pub path: &'a PathBytes,
    pub ev: &'a SyscallEvent,
    pub syscall: &'static str,
}

impl Model {
    /// Classifies one filesystem from its entries (every namespace's mounts
    /// of it, found in one sweep by `evaluate`). Returns the status and,
    /// for copies still inside their grace period, when that ends.
    pub(crate) fn classify(
        &self,
        id: FsId,
        refs: &[(NsId, usize)],
    ) -> (Option<Status>, Option<Ktime>) {
        self.classify_with(id, refs, true)
    }

    /// [`Model::classify`] for "what if it were removed now": young copies
    /// count too.
    pub(crate) fn classify_now(
        &self,
        id: FsId,
        refs: &[(NsId, usize)],
    ) -> (Option<Status>, Option<Ktime>) {
        self.classify_with(id, refs, false)
    }

    fn classify_with(
        &self,
        id: FsId,
        refs: &[(NsId, usize)],
        grace: bool,
    ) -> (Option<Status>, Option<Ktime>) {
        let Some(fs) = self.fs.get(&id) else {
            return (None, None);
        };
        let mut host_present = false;
        let mut host_groups = Vec::new();
        let mut holders: Vec<(NsId, usize)> = Vec::new();
        for &(ns_id, i) in refs {
            let Some(ns) = self.namespaces.get(&ns_id) else {
                continue;
            };
            let e = &ns.entries[i];
            if self.is_reference(ns_id) {
                host_present = true;
                host_groups.extend(e.prop.shared);
            } else if ns.root_fs == Some(id)
                || (fs.hint.pod_uid.is_some() && ns.pod_uid == fs.hint.pod_uid)
            {
                // The container's own namespace (its rootfs at `/`, its
                // pod's volumes): it dies with the container.
            } else {
                holders.push((ns_id, i));
            }
        }
        holders.sort_unstable();
        let entry = |&(ns, i): &(NsId, usize)| &self.namespaces[&ns].entries[i];
        if host_present {
            // A copy the host's umount does not reach is a risk; so is one it
            // does reach while something inside keeps it busy: then the
            // umount fails ("target is busy") or, if lazy, leaves it pinned.
            let risky: Vec<(NsId, usize)> = holders
                .into_iter()
                .filter(|r| {
                    let e = entry(r);
                    e.prop.known
                        && (!e.prop.receives_from(&host_groups) || self.copy_busy(fs, r.0, r.1))
                })
                .collect();
            let (grace, now) = (if grace { self.cfg.risk_grace_ns } else { 0 }, self.now);
            let (ripe, young): (Vec<EntryRef>, Vec<EntryRef>) = risky.iter().partition(|r| {
                entry(r)
                    .since
                    .is_none_or(|s| now.saturating_sub(s) >= grace)
            });
            let due = young
                .iter()
                .filter_map(|r| entry(r).since)
                .min()
                .map(|s| s + grace);
            return ((!ripe.is_empty()).then_some(Status::Risk(ripe)), due);
        }
        // A copy the host's umount reaches went with it (umount propagation
        // also covers lazy umounts); only the others outlive it.
        holders.retain(|r| {
            let e = entry(r);
            !(e.prop.known && e.prop.receives_from(&fs.host_groups))
        });
        let mut due = None;
        if grace && fs.unmounted_at.is_none() {
            // Never seen leaving a host: a runtime setting up a container's
            // own namespace looks like this for a few milliseconds (runc
            // binds the rootfs onto itself before pivot_root). A copy the
            // probes saw made gets the risk's grace period before it counts.
            let (ripe_after, now) = (self.cfg.risk_grace_ns, self.now);
            let young = |r: &(NsId, usize)| {
                let e = entry(r);
                e.since_source == SinceSource::Observed
                    && e.since.is_some_and(|s| now.saturating_sub(s) < ripe_after)
            };
            due = holders
                .iter()
                .filter(|r| young(r))
                .filter_map(|r| entry(r).since)
                .min()
                .map(|s| s + ripe_after);
            holders.retain(|r| !young(r));
        }
        let status = if !holders.is_empty() {
            Some(Status::Leak(holders))
        } else if !self.effective_pins(fs).is_empty() {
            Some(Status::Pinned)
        } else {
            None
        };
        (status, due)
    }

    /// Whether anything inside the copy keeps it busy: a member's cwd, root
    /// or open file on its device, or a mount on top of it.
    fn copy_busy(&self, fs: &ContainerFs, ns_id: NsId, i: usize) -> bool {
        let ns = &self.namespaces[&ns_id];
        if ns.entries[i].submounts {
            return true;
        }
        let Some(dev) = fs.dev else { return false };
        ns.members
            .iter()
            .filter_map(|p| self.processes.get(p))
            .any(|p| {
                p.info.cwd_dev == Some(dev)
                    || p.info.root_dev == Some(dev)
                    || p.info.fd_devs.contains(&dev)
            })
    }

    fn status_key(&self, id: FsId, status: &Status) -> HolderKey {
        let Some(fs) = self.fs.get(&id) else {
            return Vec::new();
        };
        match status {
            Status::Risk(refs) | Status::Leak(refs) => refs
                .iter()
                .map(|&(ns, i)| (ns, HoldKind::Copy, self.copy_busy(fs, ns, i)))
                .collect(),
            Status::Pinned => {
                let mut key: HolderKey = self
                    .effective_pins(fs)
                    .iter()
                    .map(|p| {
                        let how = match p.how {
                            PinKind::Cwd => HoldKind::Cwd,
                            PinKind::Root => HoldKind::Root,
                            PinKind::Fd(_) => HoldKind::Fd,
                        };
                        (p.ns, how, true)
                    })
                    .collect();
                key.sort_by_key(|k| (k.0, k.1 as u8));
                key.dedup();
                key
            }
        }
    }

    /// Puts out the updates held back by [`UPDATE_EVERY`] whose time came.
    pub(crate) fn release_held_back(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        for a in self.active.values_mut() {
            if a.held_back && now.saturating_sub(a.emitted_at) >= UPDATE_EVERY {
                a.held_back = false;
                a.emitted_at = now;
                out.push(Output::Finding(Box::new(a.last.clone())));
            }
        }
    }

    /// Counts the namespaces open findings name (see `Model::named`).
    fn name_holders(&mut self, key: &HolderKey, add: bool) {
        for (ns, ..) in key {
            let n = self.named.entry(*ns).or_default();
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.named.remove(ns);
                }
            }
        }
    }

    /// Opens, updates or resolves the finding for one filesystem. A finding
    /// is only rebuilt (and re-emitted) when its kind or holders changed.
    pub(crate) fn transition(
        &mut self,
        id: FsId,
        status: Option<Status>,
        reason: &'static str,
        out: &mut Vec<Output>,
    ) {
        let prev = self
            .active
            .get(&id)
            .map(|a| (a.id.clone(), a.kind, a.key.clone()));
        match (prev, status) {
            (None, None) => {}
            (prev, Some(status)) => {
                let key = self.status_key(id, &status);
                let kind = match status {
                    Status::Risk(_) => FindingKind::Risk,
                    _ => FindingKind::Leak,
                };
                if let Some((_, old_kind, old_key)) = &prev {
                    if *old_kind == kind && *old_key == key {
                        return;
                    }
                }
                let finding_id = match prev {
                    Some((fid, ..)) => fid,
                    None => self.take_finding_id(),
                };
                let Some(finding) = self.build(id, &status, finding_id.clone()) else {
                    return;
                };
                // Only churn among several holders waits: a change of what
                // will happen (the consequence) or of a single holder is news.
                let hold_back = self.active.get(&id).is_some_and(|a| {
                    a.kind == kind
                        && a.last.consequence.kind == finding.consequence.kind
                        && a.key.len().max(key.len()) > 1
                        && self.now.saturating_sub(a.emitted_at) < UPDATE_EVERY
                });
                let emitted_at = match self.active.get(&id) {
                    Some(a) if hold_back => a.emitted_at,
                    _ => self.now,
                };
                if !hold_back {
                    out.push(Output::Finding(Box::new(finding.clone())));
                }
                self.name_holders(&key, true);
                if let Some(old) = self.active.insert(
                    id,
                    Active {
                        id: finding_id,
                        kind,
                        key,
                        last: finding,
                        emitted_at,
                        held_back: hold_back,
                    },
                ) {
                    self.name_holders(&old.key, false);
                }
            }
            (Some((_, kind, key)), None) => {
                // A busy copy vanished (removing the mountpoint detached it):
                // the filesystem may live on, held by a cwd or an open file
                // that no mount table shows. Keep the finding open until a
                // scan that looks for such pins says.
                let busy = key.iter().any(|k| k.1 == HoldKind::Copy && k.2);
                if let Some(f) = self.fs.get_mut(&id) {
                    if f.awaiting_pin_scan {
                        return;
                    }
                    if busy && (kind == FindingKind::Leak || f.unmounted_at.is_some()) {
                        f.awaiting_pin_scan = true;
                        out.push(Output::Rescan {
                            namespaces: Vec::new(),
                            full: true,
                            reason: "a busy copy went away: looking for processes still inside",
                        });
                        return;
                    }
                }
                let Some(active) = self.active.remove(&id) else {
                    return;
                };
                self.name_holders(&active.key, false);
                let mut f = active.last;
                f.kind = FindingKind::Resolved;
                f.at = self.now;
                f.holders.clear();
                f.remedy.clear();
                f.consequence = Consequence {
                    kind: ConsequenceKind::None,
                    text: "nothing is held any more".into(),
                };
                f.resolution = Some(reason.to_string());
                f.summary = format!("{}: released ({reason})", describe(&f.mount));
                out.push(Output::Finding(Box::new(f)));
            }
        }
    }

    pub(crate) fn mount_ref(&self, fs: &ContainerFs) -> MountRef {
        MountRef {
            owner: self.owner_of(fs),
            path: fs.path.clone(),
            path_hex: fs.path.to_str().is_none().then(|| fs.path.hex()),
            dev: fs.dev.map(|d| d.to_string()),
            fstype: fs.fstype.clone(),
            source: fs.source.clone(),
            container: fs.hint.clone(),
            mounted_at: fs.mounted_at,
            unmounted_at: fs.unmounted_at,
        }
    }

    fn build(&self, id: FsId, status: &Status, finding_id: String) -> Option<Finding> {
        let fs = self.fs.get(&id)?;
        let (kind, holders) = match status {
            Status::Risk(entries) => (FindingKind::Risk, self.copy_holders(fs, entries)),
            Status::Leak(entries) => (FindingKind::Leak, self.copy_holders(fs, entries)),
            Status::Pinned => (FindingKind::Leak, self.pin_holders(fs)),
        };
        let (holders, more_holders) = cap_holders(holders);
        let pinned_later = holders.iter().any(|h| !h.busy.is_empty());
        let detached = matches!(status, Status::Pinned);
        let consequence = if busy_receiver(&holders) && kind == FindingKind::Risk {
            busy_receiver_consequence(&holders)
        } else {
            consequence(
                &self.cfg.kernel,
                kind,
                detached,
                pinned_later,
                &fs.fstype,
                fs.dev,
            )
        };
        let mount = self.mount_ref(fs);
        let remedy = remedies(&self.cfg, &mount, &holders, kind);
        let summary = summarize(kind, &mount, &holders);
        Some(Finding {
            id: finding_id,
            kind,
            at: self.now,
            summary,
            mount,
            holders,
            more_holders,
            consequence,
            remedy,
            failed_call: None,
            resolution: None,
        })
    }

    fn process_entry(&self, pid: Pid) -> Option<HolderProcess> {
        let p = self.processes.get(&pid)?;
        let unit = p.info.cgroup.as_deref().and_then(unit_from_cgroup);
        Some(HolderProcess {
            pid,
            comm: p.info.comm.clone(),
            exe: p.info.exe.clone(),
            cgroup: p.info.cgroup.clone(),
            unit,
            uid: p.info.uid,
        })
    }

    /// The user namespace of the host namespaces' processes.
    fn host_user_ns(&self) -> Option<u64> {
        self.namespaces
            .values()
            .filter(|n| self.is_reference(n.id))
            .find_map(|n| n.user_ns)
    }

    pub(crate) fn copy_holders(&self, fs: &ContainerFs, entries: &[(NsId, usize)]) -> Vec<Holder> {
        let host_user_ns = self.host_user_ns();
        let host_groups: Vec<u64> = self
            .namespaces
            .values()
            .filter(|n| self.is_reference(n.id))
            .flat_map(|n| {
                n.entries
                    .iter()
                    .filter(|e| e.fs == fs.id)
                    .filter_map(|e| e.prop.shared)
            })
            .collect();
        let host_present = self
            .namespaces
            .values()
            .any(|n| self.is_reference(n.id) && n.entries.iter().any(|e| e.fs == fs.id));
        entries
            .iter()
            .filter_map(|&(ns_id, i)| {
                let ns = self.namespaces.get(&ns_id)?;
                let e = ns.entries.get(i)?;
                // Oldest first: the namespace's first process is the one to name.
                let mut members: Vec<&crate::state::Process> = ns
                    .members
                    .iter()
                    .filter_map(|p| self.processes.get(p))
                    .collect();
                members.sort_by_key(|p| (p.info.start, p.info.pid));
                let creator_alive = ns
                    .creation
                    .as_ref()
                    .map(|c| c.first_member)
                    .filter(|p| ns.members.contains(p));
                let pid = creator_alive.or_else(|| members.first().map(|p| p.info.pid));
                let mut processes: Vec<HolderProcess> = Vec::new();
                if let Some(p) = pid.and_then(|p| self.process_entry(p)) {
                    processes.push(p);
                }
                for m in &members {
                    if processes.len() >= LISTED_PROCESSES {
                        break;
                    }
                    if Some(m.info.pid) != pid {
                        processes.extend(self.process_entry(m.info.pid));
                    }
                }
                let mut busy = Vec::new();
                if let Some(dev) = fs.dev {
                    for m in &members {
                        let i = &m.info;
                        if i.cwd_dev == Some(dev) {
                            busy.push(format!("cwd of pid {} ({}) is inside", i.pid, i.comm));
                        }
                        if i.root_dev == Some(dev) {
                            busy.push(format!("root of pid {} ({}) is inside", i.pid, i.comm));
                        }
                        if i.fd_devs.contains(&dev) {
                            busy.push(format!("pid {} ({}) has files open inside", i.pid, i.comm));
                        }
                    }
                }
                if e.submounts {
                    busy.push("other mounts sit on the copy".to_string());
                }
                let new_user = ns
                    .creation
                    .as_ref()
                    .is_some_and(|c| c.flags & flags::CLONE_NEWUSER != 0);
                let other_user_ns =
                    matches!((ns.user_ns, host_user_ns), (Some(a), Some(b)) if a != b);
                Some(Holder {
                    mnt_ns: ns_id,
                    hold: HoldKind::Copy,
                    mount_point: Some((*e.mount_point).clone()),
                    propagation: e.prop.name(),
                    receives_host_umounts: if !e.prop.known {
                        None
                    } else if host_present {
                        Some(e.prop.receives_from(&host_groups))
                    } else {
                        Some(false)
                    },
                    pid,
                    more_processes: members.len().saturating_sub(processes.len()),
                    processes,
                    nsfs_mounts: ns.nsfs.iter().map(|n| n.path.clone()).collect(),
                    user_ns_locked: new_user || other_user_ns,
                    since: e.since,
                    since_source: e.since_source.as_str(),
                    via: ns.creation.as_ref().map(|c| c.via),
                    created_by: ns.creation.as_ref().map(|c| ProcessRef {
                        pid: c.by.tgid,
                        comm: c.by.comm.clone(),
                    }),
                    parent_mnt_ns: ns.creation.as_ref().map(|c| c.parent),
                    busy,
                })
            })
            .collect()
    }

    /// Processes keeping a filesystem alive that no mount table shows: the
    /// pins a full scan found, plus processes whose device facts (read by
    /// the cheaper targeted scans) put their cwd, root or an open file on
    /// it.
    pub(crate) fn effective_pins(&self, fs: &ContainerFs) -> Vec<crate::input::Pin> {
        let mut pins = fs.pins.clone();
        let Some(dev) = fs.dev else { return pins };
        for p in self.processes.values() {
            let i = &p.info;
            let how = if i.cwd_dev == Some(dev) {
                PinKind::Cwd
            } else if i.root_dev == Some(dev) {
                PinKind::Root
            } else if i.fd_devs.contains(&dev) {
                PinKind::Fd(0)
            } else {
                continue;
            };
            if pins.iter().any(|q| q.process.pid == i.pid) {
                continue;
            }
            pins.push(crate::input::Pin {
                dev,
                process: i.clone(),
                ns: p.ns,
                how,
                link: PathBytes::default(),
                fstype: Some(fs.fstype.clone()),
                backing_file: None,
                root_ino: None,
            });
        }
        pins.sort_by_key(|p| p.process.pid);
        pins
    }

    /// Pins of processes in namespaces not already named as copy holders
    /// (a process in the host itself with its cwd inside, say).
    pub(crate) fn extra_pin_holders(&self, fs: &ContainerFs, copies: &[Holder]) -> Vec<Holder> {
        self.pin_holders(fs)
            .into_iter()
            .filter(|p| !copies.iter().any(|c| c.mnt_ns == p.mnt_ns))
            .collect()
    }

    pub(crate) fn pin_holders(&self, fs: &ContainerFs) -> Vec<Holder> {
        // Still mounted somewhere: the process uses a mounted filesystem.
        let mounted = self
            .namespaces
            .values()
            .any(|n| n.entries.iter().any(|e| e.fs == fs.id));
        let pins = self.effective_pins(fs);
        let mut by_pid: BTreeMap<Pid, Vec<&crate::input::Pin>> = BTreeMap::new();
        for p in &pins {
            by_pid.entry(p.process.pid).or_default().push(p);
        }
        by_pid
            .into_values()
            .map(|pins| {
                let first = pins[0];
                let info = &first.process;
                let hold = match first.how {
                    PinKind::Cwd => HoldKind::Cwd,
                    PinKind::Root => HoldKind::Root,
                    PinKind::Fd(_) => HoldKind::Fd,
                };
                let busy = pins
                    .iter()
                    .map(|p| match p.how {
                        PinKind::Cwd => {
                            format!("cwd of pid {} ({}) is inside", info.pid, info.comm)
                        }
                        PinKind::Root => {
                            format!("root of pid {} ({}) is inside", info.pid, info.comm)
                        }
                        PinKind::Fd(fd) => {
                            format!("pid {} ({}) has fd {fd} open inside", info.pid, info.comm)
                        }
                    })
                    .collect();
                Holder {
                    mnt_ns: first.ns,
                    hold,
                    mount_point: None,
                    propagation: if mounted { "n/a" } else { "detached" },
                    receives_host_umounts: None,
                    pid: Some(info.pid),
                    processes: vec![HolderProcess {
                        pid: info.pid,
                        comm: info.comm.clone(),
                        exe: info.exe.clone(),
                        cgroup: info.cgroup.clone(),
                        unit: info.cgroup.as_deref().and_then(unit_from_cgroup),
                        uid: info.uid,
                    }],
                    more_processes: 0,
                    nsfs_mounts: Vec::new(),
                    user_ns_locked: false,
                    since: None,
                    since_source: "unknown",
                    via: None,
                    created_by: None,
                    parent_mnt_ns: None,
                    busy,
                }
            })
            .collect()
    }

    pub(crate) fn build_failed_removal(
        &mut self,
        fs_id: FsId,
        ev: &SyscallEvent,
        syscall: &'static str,
        path: &PathBytes,
    ) -> Finding {
        let finding_id = match self.active.get(&fs_id) {
            Some(a) => a.id.clone(),
            None => self.take_finding_id(),
        };
        let mut entries: Vec<(NsId, usize)> = Vec::new();
        for ns in self.namespaces.values() {
            if self.is_reference(ns.id) || ns.root_fs == Some(fs_id) {
                continue;
            }
            for (i, e) in ns.entries.iter().enumerate() {
                if e.fs == fs_id {
                    entries.push((ns.id, i));
                }
            }
        }
        entries.sort_unstable();
        let Some(fs) = self.fs.get(&fs_id) else {
            return failed_unknown(&self.cfg, finding_id, FailedOnUnknown { path, ev, syscall });
        };
        let mut holders = self.copy_holders(fs, &entries);
        holders.extend(self.extra_pin_holders(fs, &holders));
        let mount = self.mount_ref(fs);
        let text = if syscall == "umount" {
            "The umount failed with EBUSY: something uses the mount (a process's cwd or open file, possibly through a slave copy that receives this umount), so the container cannot be torn down until it is released.".to_string()
        } else if !self.cfg.kernel.detaches_on_rmdir() {
            format!(
                "Kernel {}: removing the mountpoint fails with EBUSY while another namespace has a mount on it (\"device or resource busy\").",
                self.cfg.kernel.release
            )
        } else {
            "Removing the mountpoint failed with EBUSY.".to_string()
        };
        let (holders, more_holders) = cap_holders(holders);
        let mut remedy = remedies(&self.cfg, &mount, &holders, FindingKind::FailedRemoval);
        if holders.is_empty() {
            remedy.insert(
                0,
                format!(
                    "find what uses it: `fuser -vm {}` and `mountleak scan`",
                    mount.path
                ),
            );
        }
        let summary = format!(
            "{syscall} of {} failed with EBUSY (pid {} {}){}",
            path,
            ev.task.tgid,
            ev.task.comm,
            holders_phrase(&holders)
                .map(|h| format!("; held by {h}"))
                .unwrap_or_default()
        );
        Finding {
            more_holders,
            id: finding_id,
            kind: FindingKind::FailedRemoval,
            at: ev.end,
            summary,
            mount,
            holders,
            consequence: Consequence {
                kind: ConsequenceKind::RemovalFailsEbusy,
                text,
            },
            remedy,
            failed_call: Some(FailedCall {
                syscall,
                pid: ev.task.tgid,
                comm: ev.task.comm.clone(),
                errno: -ev.ret,
                path: path.clone(),
                message: None,
            }),
            resolution: None,
        }
    }
}

/// A failed removal of a container path the model has no record of.
pub(crate) fn failed_unknown(cfg: &ModelConfig, id: String, f: FailedOnUnknown<'_>) -> Finding {
    let mount = MountRef {
        path: f.path.clone(),
        path_hex: f.path.to_str().is_none().then(|| f.path.hex()),
        dev: None,
        fstype: String::new(),
        source: PathBytes::default(),
        container: crate::container::ContainerHint::from_path(f.path),
        owner: None,
        mounted_at: None,
        unmounted_at: None,
    };
    Finding {
        more_holders: 0,
        id,
        kind: FindingKind::FailedRemoval,
        at: f.ev.end,
        summary: format!(
            "{} of {} failed with EBUSY (pid {} {})",
            f.syscall, f.path, f.ev.task.tgid, f.ev.task.comm
        ),
        consequence: Consequence {
            kind: ConsequenceKind::RemovalFailsEbusy,
            text: format!(
                "Kernel {}: the removal failed with EBUSY; no holder is known yet.",
                cfg.kernel.release
            ),
        },
        remedy: vec![format!(
            "find the holder: `mountleak scan`, or `grep -l {} /proc/*/mountinfo`",
            f.path
        )],
        mount,
        holders: Vec::new(),
        failed_call: Some(FailedCall {
            syscall: f.syscall,
            pid: f.ev.task.tgid,
            comm: f.ev.task.comm.clone(),
            errno: -f.ev.ret,
            path: f.path.clone(),
            message: None,
        }),
        resolution: None,
    }
}

/// A holder whose copy receives the host's umounts but is busy.
pub(crate) fn busy_receiver(holders: &[Holder]) -> bool {
    holders
        .iter()
        .any(|h| h.receives_host_umounts == Some(true) && !h.busy.is_empty())
}

pub(crate) fn busy_receiver_consequence(holders: &[Holder]) -> Consequence {
    let why = holders
        .iter()
        .filter(|h| h.receives_host_umounts == Some(true))
        .flat_map(|h| h.busy.iter().cloned())
        .collect::<Vec<_>>()
        .join("; ");
    Consequence {
        kind: ConsequenceKind::RemovalFailsEbusy,
        text: format!(
            "The copy receives the host's umounts but is busy ({why}): a plain umount of the container mount fails with EBUSY (\"target is busy\"), as kubelet's and containerd's do; a lazy one (Docker's overlay2) detaches it but leaves the filesystem alive."
        ),
    }
}

/// `docker rootfs (layer 0f1e…) at /var/…/merged`, or just the path.
pub(crate) fn describe(mount: &MountRef) -> String {
    if let Some(owner) = &mount.owner {
        let role = mount.container.role.unwrap_or("mount");
        return format!("{} {role} at {}", owner.label(), mount.path);
    }
    match mount.container.label() {
        Some(label) => format!("{label} at {}", mount.path),
        None if mount.path.is_empty() => format!(
            "detached {} filesystem {}",
            mount.fstype,
            mount.dev.as_deref().unwrap_or("?")
        ),
        None => mount.path.to_string(),
    }
}

fn holder_phrase(h: &Holder) -> String {
    let who = match h.processes.first() {
        Some(p) => match &p.unit {
            Some(unit) => format!("{} (pid {}, {unit})", p.comm, p.pid),
            None => format!("{} (pid {})", p.comm, p.pid),
        },
        None if !h.nsfs_mounts.is_empty() => {
            format!("no process (kept by nsfs mount {})", h.nsfs_mounts[0])
        }
        None => "no process".to_string(),
    };
    format!("{who} in mnt ns {}", h.mnt_ns)
}

fn holders_phrase(holders: &[Holder]) -> Option<String> {
    let first = holders.first()?;
    let more = holders.len() - 1;
    Some(if more == 0 {
        holder_phrase(first)
    } else {
        format!("{} and {more} more", holder_phrase(first))
    })
}

pub(crate) fn summarize(kind: FindingKind, mount: &MountRef, holders: &[Holder]) -> String {
    let what = describe(mount);
    let who = holders_phrase(holders).unwrap_or_else(|| "an unknown holder".into());
    match kind {
        FindingKind::Risk if busy_receiver(holders) => {
            format!("{what}: the copy in {who} receives the host's umounts but is busy; the umount will fail with EBUSY")
        }
        FindingKind::Risk => {
            let prop = holders.first().map(|h| h.propagation).unwrap_or("private");
            format!("{what}: copied into {who} with {prop} propagation; the host's umount will not reach it")
        }
        FindingKind::Leak if holders.iter().all(|h| h.hold != HoldKind::Copy) => {
            format!("{what}: unmounted and gone from every mount table, but kept alive by {who}")
        }
        FindingKind::Leak => format!("{what}: unmounted by the host but still mounted in {who}"),
        FindingKind::FailedRemoval => format!("{what}: removal failed; held by {who}"),
        FindingKind::RemovalWarning => format!("{what}: the container stopped and this is still held by {who}; removing it will not release it"),
        FindingKind::Resolved => format!("{what}: released"),
    }
}

/// What to type, per holder, most direct first; then how to prevent it.
pub(crate) fn remedies(
    cfg: &ModelConfig,
    mount: &MountRef,
    holders: &[Holder],
    kind: FindingKind,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut units: Vec<String> = Vec::new();
    for h in holders {
        let unit = h
            .processes
            .first()
            .and_then(|p| p.unit.clone())
            .filter(|u| u.ends_with(".service"));
        if let Some(u) = &unit {
            if !units.contains(u) {
                units.push(u.clone());
            }
        }
        let restart = unit.as_ref().map(|u| format!("`systemctl restart {u}`"));
        let mp = h.mount_point.clone().unwrap_or_else(|| mount.path.clone());
        match (h.hold, h.pid) {
            (HoldKind::Copy, _) if h.pid.is_none() && !h.nsfs_mounts.is_empty() => {
                let nsfs = &h.nsfs_mounts[0];
                out.push(format!(
                    "namespace {} has no process; the nsfs mount {nsfs} keeps it alive: `nsenter --mount={nsfs} umount {mp}` releases the copy, `umount {nsfs}` releases the whole namespace",
                    h.mnt_ns
                ));
            }
            (HoldKind::Copy, Some(pid)) if h.user_ns_locked => {
                let rmdir_note = if cfg.kernel.detaches_on_rmdir() {
                    "; on this kernel removing the mountpoint directory on the host also detaches the copy"
                } else {
                    ""
                };
                out.push(format!(
                    "pid {pid}'s copy is locked (it was inherited into a user namespace): `nsenter -t {pid} -m umount {mp}` fails with EINVAL (umount(8) says \"not mounted\"); stop or restart the holder instead ({}){rmdir_note}",
                    restart.clone().unwrap_or_else(|| format!("`kill {pid}`"))
                ));
            }
            (HoldKind::Copy, Some(pid)) => {
                let busy = if h.busy.is_empty() { "" } else { " -l" };
                let mut line = format!(
                    "`nsenter -t {pid} -m umount{busy} {mp}` releases the copy held by pid {pid}"
                );
                if let Some(r) = &restart {
                    line.push_str(&format!(", or restart its unit: {r}"));
                }
                out.push(line);
            }
            (HoldKind::Copy, None) => {
                out.push(format!("namespace {} holds a copy but no process was found: run `mountleak scan` again", h.mnt_ns));
            }
            (_, Some(pid)) => {
                let how = match h.hold {
                    HoldKind::Cwd => "its working directory",
                    HoldKind::Root => "its root directory",
                    _ => "open files",
                };
                out.push(format!(
                    "pid {pid} keeps the detached filesystem alive through {how} (`ls -l /proc/{pid}/cwd /proc/{pid}/fd`): make it let go, or restart it ({})",
                    restart.clone().unwrap_or_else(|| format!("`kill {pid}` only if that is safe"))
                ));
            }
            (_, None) => {}
        }
    }
    let copies = holders.iter().any(|h| h.hold == HoldKind::Copy);
    if copies && kind != FindingKind::Resolved {
        let who = if units.is_empty() {
            "the holder".to_string()
        } else {
            units.join(", ")
        };
        out.push(format!(
            "prevent it: give the container runtime its own mount namespace (`MountFlags=slave` in its unit, e.g. docker.service, as in the field report), or make the runtime's data directory a shared mount so slave copies receive its umounts; {who} must not use private propagation (`MountFlags=private`, `unshare --propagation private`)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_prefers_the_container_label() {
        let m = MountRef {
            path: "/var/lib/docker/overlay2/0123456789abcdef/merged".into(),
            path_hex: None,
            dev: Some("0:52".into()),
            fstype: "overlay".into(),
            source: "overlay".into(),
            container: crate::container::ContainerHint::from_path(
                &"/var/lib/docker/overlay2/0123456789abcdef/merged".into(),
            ),
            owner: None,
            mounted_at: None,
            unmounted_at: None,
        };
        assert_eq!(describe(&m), "docker rootfs (layer 0123456789ab) at /var/lib/docker/overlay2/0123456789abcdef/merged");
    }
}
