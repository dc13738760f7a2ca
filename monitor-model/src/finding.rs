//! What the model reports: findings, with the holders, the consequence on
//! the running kernel and a remedy that works for each holder's case.

use serde::Serialize;

use crate::container::ContainerHint;
use crate::input::{Dev, Ktime, NsId, Pid};
use crate::kernel::KernelFacts;
use crate::path::PathBytes;

/// Holders listed per finding; the rest are counted in `more_holders`, so a
/// filesystem held by thousands of short-lived namespaces stays readable.
pub const MAX_HOLDERS: usize = 32;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Keeps the first [`MAX_HOLDERS`] holders; returns them and how many more.
pub fn cap_holders(mut holders: Vec<Holder>) -> (Vec<Holder>, usize) {
    let more = holders.len().saturating_sub(MAX_HOLDERS);
    holders.truncate(MAX_HOLDERS);
    (holders, more)
}

/// The four things worth telling a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A namespace holds copies of container mounts that will not receive the
    /// host's umounts.
    Risk,
    /// The host unmounted a container mount and a copy (or a process inside
    /// the detached filesystem) keeps it alive.
    Leak,
    /// An umount or removal of a container mount failed with EBUSY, or the
    /// runtime reported a failed removal.
    FailedRemoval,
    /// A container stopped and removing it would fail or leave something
    /// pinned: said before the removal is attempted.
    RemovalWarning,
    /// The last copy is gone.
    Resolved,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Risk => "risk",
            FindingKind::Leak => "leak",
            FindingKind::FailedRemoval => "failed_removal",
            FindingKind::RemovalWarning => "removal_warning",
            FindingKind::Resolved => "resolved",
        }
    }
}

/// One finding. Stable JSON schema: see README "JSON output".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// `ML-<n>`: the same id for a risk, the leak it becomes and its
    /// resolution, so they can be followed as one story.
    pub id: String,
    pub kind: FindingKind,
    /// When it was established (`CLOCK_BOOTTIME` ns; the shell adds wall time).
    pub at: Ktime,
    /// One line for a person.
    pub summary: String,
    pub mount: MountRef,
    pub holders: Vec<Holder>,
    /// Holders not listed (a finding lists at most [`MAX_HOLDERS`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub more_holders: usize,
    pub consequence: Consequence,
    /// Commands and advice, most direct first.
    pub remedy: Vec<String>,
    /// For `failed_removal`: the call that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_call: Option<FailedCall>,
    /// For `resolved`: how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

/// The container filesystem a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MountRef {
    /// Mount point in the host (reference) namespace.
    pub path: PathBytes,
    /// The exact bytes, hex, when `path` is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// `major:minor` of the filesystem, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    pub fstype: String,
    pub source: PathBytes,
    /// What the path says (inferred).
    #[serde(skip_serializing_if = "ContainerHint::is_empty")]
    pub container: ContainerHint,
    /// The container (or pod) a runtime says it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<ContainerRef>,
    /// When a probe saw it mounted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounted_at: Option<Ktime>,
    /// When it left every host namespace: the umount a probe saw, else
    /// the start of the first read that found it gone (the umount came
    /// before; for `check` and `scan`, that is their own read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmounted_at: Option<Ktime>,
}

/// How a holder keeps the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// A copy of the mount in its mount table.
    Copy,
    /// Its working directory is inside the detached filesystem.
    Cwd,
    /// Its root directory is inside the detached filesystem.
    Root,
    /// It has a file open on the detached filesystem.
    Fd,
}

/// A namespace (or a process) keeping a container filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub mnt_ns: NsId,
    pub hold: HoldKind,
    /// Where the copy is mounted, as the holder sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<PathBytes>,
    /// `private`, `slave`, `shared`, `shared+slave` or `unknown`.
    pub propagation: &'static str,
    /// Whether the host's umounts reach this copy (`None`: not known yet).
    pub receives_host_umounts: Option<bool>,
    /// The process to act on (`nsenter -t PID`): the namespace's creator if
    /// still there, else its oldest member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<Pid>,
    pub processes: Vec<HolderProcess>,
    /// Members not listed in `processes`.
    pub more_processes: usize,
    /// nsfs bind mounts keeping a process-less namespace alive.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nsfs_mounts: Vec<PathBytes>,
    /// The copy was inherited into a less privileged user namespace: its
    /// mounts are locked and `umount` inside fails with EINVAL.
    pub user_ns_locked: bool,
    /// Since when it holds the copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Ktime>,
    /// `observed` (a probe saw it), `inferred` (oldest member's start time)
    /// or `unknown`.
    pub since_source: &'static str,
    /// The syscall that made the copy (`unshare`, `clone`, `clone3`), when seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<ProcessRef>,
    /// The namespace it was copied from, when a probe saw the copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_mnt_ns: Option<NsId>,
    /// What keeps the filesystem busy beyond the copy itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<String>,
}

/// A process as the probe saw it (it may have exited since).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessRef {
    pub pid: Pid,
    pub comm: String,
}

/// A member process of a holder namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HolderProcess {
    pub pid: Pid,
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The systemd unit, when the cgroup path names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub uid: u32,
}

/// What will happen on this kernel, in the user's terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Consequence {
    pub kind: ConsequenceKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsequenceKind {
    /// 3.10-style kernels: removing the mountpoint fails with EBUSY
    /// ("device or resource busy" from `docker rm`), the seed's case.
    RemovalFailsEbusy,
    /// 3.18+: the copy is detached when the runtime removes the mountpoint
    /// directory; until then the filesystem stays mounted.
    DetachedOnRemoval,
    /// The filesystem outlives its removal: disk space is not freed and a
    /// block device stays busy.
    FilesystemPinned,
    /// Nothing is held any more.
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedCall {
    /// `umount`, `rmdir`, or `remove` for a runtime's own report.
    pub syscall: &'static str,
    pub pid: Pid,
    pub comm: String,
    pub errno: i64,
    pub path: PathBytes,
    /// The runtime's error message, when it reported the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A container as its runtime describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerRef {
    pub runtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<crate::input::PodInfo>,
    pub state: crate::input::ContainerState,
    /// Removed by the runtime already (its filesystem outlived it).
    pub removed: bool,
}

impl ContainerRef {
    /// `container web (3f9a1c0e7b2d, nginx:1.25)` or
    /// `pod shop/web-7f9c container nginx (3f9a1c0e7b2d)`.
    pub fn label(&self) -> String {
        let short: String = self.id.chars().take(12).collect();
        match &self.pod {
            Some(p) => match &p.container {
                Some(c) => format!("pod {}/{} container {c} ({short})", p.namespace, p.name),
                None => format!("pod {}/{}", p.namespace, p.name),
            },
            None => match &self.image {
                Some(image) => format!("container {} ({short}, {image})", self.name),
                None => format!("container {} ({short})", self.name),
            },
        }
    }
}

/// The systemd unit a cgroup path belongs to: the last `.service` component,
/// else the last `.scope`. Escapes such as `\x2d` are left as systemd
/// spells them, which is what `systemctl` accepts.
pub fn unit_from_cgroup(cgroup: &str) -> Option<String> {
    let parts = cgroup.split('/').filter(|p| !p.is_empty());
    let mut scope = None;
    let mut service = None;
    for part in parts {
        if part.ends_with(".service") {
            service = Some(part);
        } else if part.ends_with(".scope") {
            scope = Some(part);
        }
    }
    service.or(scope).map(str::to_string)
}

/// Chooses the consequence for a finding, from the kernel facts and what
/// keeps the filesystem busy. `pinned_after_removal`: some holder has its
/// cwd, root or an open file inside, or a submount on the copy.
pub fn consequence(
    kernel: &KernelFacts,
    kind: FindingKind,
    detached_already: bool,
    pinned_after_removal: bool,
    fstype: &str,
    dev: Option<Dev>,
) -> Consequence {
    let block = dev.is_some_and(|d| d.major != 0);
    let what_stays = if block {
        "the block device stays in use (`losetup -d` only defers, mkfs/e2fsck refuse, the volume cannot detach)"
    } else if fstype == "overlay" {
        "the overlay stays alive: deleted files in its upper dir keep their disk space and a new overlay on the same upperdir with index=on fails with EBUSY"
    } else {
        "the filesystem stays alive and keeps its resources"
    };
    if kind == FindingKind::Resolved {
        return Consequence {
            kind: ConsequenceKind::None,
            text: "nothing is held any more".into(),
        };
    }
    if detached_already || pinned_after_removal && kernel.detaches_on_rmdir() {
        let when = if detached_already {
            "is already detached from every mount table, yet"
        } else {
            "will be detached when the runtime removes the mountpoint, yet"
        };
        return Consequence {
            kind: ConsequenceKind::FilesystemPinned,
            text: format!(
                "The filesystem {when} a process still uses it, so {what_stays}. Removal succeeds and nothing in any mountinfo shows why."
            ),
        };
    }
    if !kernel.detaches_on_rmdir() {
        let why = match kernel.may_detach_mounts {
            Some(false) => "fs.may_detach_mounts=0",
            _ => "kernel older than 3.18",
        };
        return Consequence {
            kind: ConsequenceKind::RemovalFailsEbusy,
            text: format!(
                "Kernel {} ({why}): removing the mountpoint fails with EBUSY while the copy exists: `docker rm` reports \"device or resource busy\", pods hang in Terminating.",
                kernel.release
            ),
        };
    }
    Consequence {
        kind: ConsequenceKind::DetachedOnRemoval,
        text: format!(
            "Kernel {}: the copy is detached when the runtime removes the mountpoint directory; until then {what_stays}.",
            kernel.release
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_from_cgroup_paths() {
        assert_eq!(
            unit_from_cgroup("/system.slice/ntpd.service").as_deref(),
            Some("ntpd.service")
        );
        assert_eq!(
            unit_from_cgroup("/system.slice/system-ceph\\x2dosd.slice/ceph-osd@0.service")
                .as_deref(),
            Some("ceph-osd@0.service")
        );
        assert_eq!(
            unit_from_cgroup("/user.slice/user-0.slice/session-4.scope").as_deref(),
            Some("session-4.scope")
        );
        assert_eq!(unit_from_cgroup("/"), None);
    }

    #[test]
    fn consequence_follows_the_kernel() {
        let el7 = KernelFacts::from_release("3.10.0-1160.el7.x86_64", Some(false));
        let new = KernelFacts::from_release("6.18.44", None);
        let c = consequence(&el7, FindingKind::Leak, false, false, "overlay", None);
        assert_eq!(c.kind, ConsequenceKind::RemovalFailsEbusy);
        assert!(c.text.contains("fs.may_detach_mounts=0"));
        let c = consequence(&new, FindingKind::Leak, false, false, "overlay", None);
        assert_eq!(c.kind, ConsequenceKind::DetachedOnRemoval);
        let c = consequence(
            &new,
            FindingKind::Risk,
            false,
            true,
            "ext4",
            Some(Dev { major: 7, minor: 0 }),
        );
        assert_eq!(c.kind, ConsequenceKind::FilesystemPinned);
        assert!(c.text.contains("block device"));
        let c = consequence(&new, FindingKind::Leak, true, true, "overlay", None);
        assert!(c.text.contains("already detached"));
    }
}
