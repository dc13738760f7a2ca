//! What `mountleak fix` will do, decided from the model's findings alone.
//! Pure: findings and the kernel's facts in, an ordered list of actions
//! (with the condition each one runs under) out.
//!
//! Per holder (the model's [`Holder`]):
//! - a copy held by a process: `umount2` inside its mount namespace
//!   (what `nsenter -t PID -m umount` does); if something inside keeps the
//!   copy busy (EBUSY), a lazy unmount (`MNT_DETACH`), which frees the
//!   mount at once but leaves the filesystem alive while it is in use;
//! - a copy locked into a user namespace (`user_ns_locked`): `umount2`
//!   fails with EINVAL there whatever the privileges (MNT_LOCKED), so it
//!   is not tried; instead, once the host has unmounted it, the now-empty
//!   mountpoint directory is removed on the host, which detaches every copy
//!   in every namespace since Linux 3.18 (commit 8ed936b5671b), and made
//!   again as it was;
//! - a copy in a namespace with no process, kept by an nsfs bind mount:
//!   `setns` through the nsfs file, then as above;
//! - a process whose cwd, root or open file keeps a detached filesystem
//!   alive: nothing but stopping it releases that, so only with `--kill`.
//!
//! Removing the directory is also the fallback for any copy that is still
//! there after its unmount (EINVAL from a lock the scan did not see). It is
//! never done while the host still has the mount (that would detach the
//! runtime's own mount), nor on kernels that refuse it (EBUSY: 3.10, or
//! RHEL/CentOS 7 with `fs.may_detach_mounts=0`). Killing is the last step,
//! and only with `--kill`. Nothing outside the container mount patterns is
//! ever touched.

use monitor_model::finding::{Finding, FindingKind, HoldKind, Holder};
use monitor_model::{Dev, KernelFacts, NsId, PathBytes, Patterns, Pid};
use serde::Serialize;

/// How a mount namespace is entered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum Enter {
    /// `/proc/PID/ns/mnt` (and `/proc/PID/root`, for a chrooted holder).
    Process { pid: Pid, comm: String },
    /// An nsfs bind mount of a namespace no process is in.
    Nsfs { file: PathBytes },
}

/// One action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// `umount2(path, 0)` inside the namespace; on EBUSY `MNT_DETACH`.
    Umount {
        mnt_ns: NsId,
        enter: Enter,
        /// The copy's mount point as the holder sees it.
        path: PathBytes,
        /// The filesystem the copy must be (checked with stat before acting).
        dev: Option<Dev>,
    },
    /// `rmdir` the mountpoint on the host (unmounted there and empty), then
    /// `mkdir` it again with the same mode and owner.
    RemoveMountpoint { path: PathBytes },
    /// SIGTERM, then SIGKILL after a grace period. `mnt_ns`: every process
    /// in that namespace; else just `pids`.
    Kill {
        pids: Vec<Pid>,
        mnt_ns: Option<NsId>,
        why: String,
        /// The copy that must still be there (in the first pid's table)
        /// for the kill to run; `None` for a pin.
        copy_at: Option<PathBytes>,
        /// The filesystem of the copy or the pin.
        dev: Option<Dev>,
    },
    /// `umount2(nsfs file, MNT_DETACH)` on the host: the namespace it kept
    /// alive dies, with every copy in it.
    UmountNsfs {
        file: PathBytes,
        mnt_ns: NsId,
        /// The copy inside that must still be there for this to run.
        copy_at: PathBytes,
        dev: Option<Dev>,
    },
}

/// When a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Always,
    /// Only if a copy (or the pin) this step targets is still there after
    /// the steps before it.
    IfStillHeld,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub action: Action,
    pub when: When,
    /// What it does and why this way, for people.
    pub text: String,
}

/// A holder fix will not act on, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotDone {
    pub mnt_ns: NsId,
    pub holder: String,
    pub why: String,
}

/// Everything planned for one finding (one container filesystem).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    pub id: String,
    pub kind: FindingKind,
    pub summary: String,
    pub path: PathBytes,
    pub dev: Option<String>,
    pub fstype: String,
    pub steps: Vec<Step>,
    pub not_done: Vec<NotDone>,
}

/// Options that change the plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub kill: bool,
}

/// `major:minor` → [`Dev`].
pub fn parse_dev(s: &str) -> Option<Dev> {
    let (a, b) = s.split_once(':')?;
    Some(Dev {
        major: a.parse().ok()?,
        minor: b.parse().ok()?,
    })
}

fn who(h: &Holder) -> String {
    match h.processes.first() {
        Some(p) => {
            let unit = p
                .unit
                .as_deref()
                .map(|u| format!(", {u}"))
                .unwrap_or_default();
            format!("pid {} ({}{unit})", p.pid, p.comm)
        }
        None if !h.nsfs_mounts.is_empty() => format!("no process, nsfs mount {}", h.nsfs_mounts[0]),
        None => "no process".into(),
    }
}

/// Plans the actions for one finding.
pub fn plan_finding(f: &Finding, kernel: &KernelFacts, patterns: &Patterns, opts: Options) -> Item {
    let mut steps: Vec<Step> = Vec::new();
    let mut not_done: Vec<NotDone> = Vec::new();
    let dev = f.mount.dev.as_deref().and_then(parse_dev);
    // The host no longer has it (a leak), so removing the directory takes
    // nothing from the runtime.
    let host_unmounted = f.kind == FindingKind::Leak && !f.mount.path.is_empty();
    let rmdir_ok = host_unmounted && kernel.detaches_on_rmdir() && patterns.matches(&f.mount.path);
    let mut want_rmdir = false;
    let mut rmdir_reasons: Vec<String> = Vec::new();
    let mut kills: Vec<Step> = Vec::new();

    for h in &f.holders {
        let mp = h
            .mount_point
            .clone()
            .unwrap_or_else(|| f.mount.path.clone());
        match h.hold {
            HoldKind::Copy => {
                if !patterns.matches(&mp) && !patterns.matches(&f.mount.path) {
                    not_done.push(NotDone {
                        mnt_ns: h.mnt_ns,
                        holder: who(h),
                        why: format!("{mp} is not a container mount (patterns); not touched"),
                    });
                    continue;
                }
                let enter = match (h.processes.first(), h.nsfs_mounts.first()) {
                    (Some(p), _) => Some(Enter::Process {
                        pid: h.pid.unwrap_or(p.pid),
                        comm: p.comm.clone(),
                    }),
                    (None, Some(file)) => Some(Enter::Nsfs { file: file.clone() }),
                    (None, None) => None,
                };
                let Some(enter) = enter else {
                    not_done.push(NotDone {
                        mnt_ns: h.mnt_ns,
                        holder: who(h),
                        why: "no process is in this namespace and no nsfs mount names it (an open file descriptor keeps it): there is no way in; find the fd with `ls -l /proc/*/fd | grep mnt:`".into(),
                    });
                    if rmdir_ok {
                        want_rmdir = true;
                        rmdir_reasons.push(format!("mnt ns {} cannot be entered", h.mnt_ns));
                    }
                    continue;
                };
                if h.user_ns_locked {
                    // umount2 would fail with EINVAL (MNT_LOCKED).
                    if rmdir_ok {
                        want_rmdir = true;
                        rmdir_reasons.push(format!(
                            "{}'s copy is locked in a user namespace (umount inside fails with EINVAL)",
                            who(h)
                        ));
                    } else {
                        not_done.push(NotDone {
                            mnt_ns: h.mnt_ns,
                            holder: who(h),
                            why: if host_unmounted {
                                format!("its copy is locked in a user namespace (umount inside fails with EINVAL), and on kernel {} removing the mountpoint fails with EBUSY instead of detaching it: only stopping the holder releases it", kernel.release)
                            } else {
                                "its copy is locked in a user namespace (umount inside fails with EINVAL); the host still has the mount, so the directory cannot be removed: it is detached when the runtime removes the mountpoint (Linux 3.18+), or stop the holder".to_string()
                            },
                        });
                    }
                } else {
                    let how = match &enter {
                        Enter::Process { pid, .. } => format!("setns(2) via /proc/{pid}/ns/mnt"),
                        Enter::Nsfs { file } => format!("setns(2) via the nsfs mount {file}"),
                    };
                    let busy = if h.busy.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", h.busy.join("; "))
                    };
                    steps.push(Step {
                        text: format!(
                            "umount {mp} in mnt ns {} of {} [{how}]; if busy (EBUSY{busy}): lazily (MNT_DETACH), which releases the mount now and the filesystem once nothing uses it",
                            h.mnt_ns,
                            who(h)
                        ),
                        action: Action::Umount {
                            mnt_ns: h.mnt_ns,
                            enter: enter.clone(),
                            path: mp.clone(),
                            dev,
                        },
                        when: When::Always,
                    });
                    if rmdir_ok {
                        want_rmdir = true;
                    }
                }
                if opts.kill {
                    kills.push(match &enter {
                        Enter::Process { .. } => Step {
                            text: format!(
                                "kill every process in mnt ns {} ({}{}) if it still holds the copy: SIGTERM, SIGKILL after 5 s",
                                h.mnt_ns,
                                who(h),
                                if h.more_processes + h.processes.len() > 1 {
                                    format!(" and {} more", h.more_processes + h.processes.len() - 1)
                                } else {
                                    String::new()
                                }
                            ),
                            action: Action::Kill {
                                pids: h.processes.iter().map(|p| p.pid).collect(),
                                mnt_ns: Some(h.mnt_ns),
                                why: "holds a copy".into(),
                                copy_at: Some(mp.clone()),
                                dev,
                            },
                            when: When::IfStillHeld,
                        },
                        Enter::Nsfs { file } => Step {
                            text: format!(
                                "unmount the nsfs mount {file} on the host if the copy is still there: mnt ns {} has no process, so it dies with every copy in it",
                                h.mnt_ns
                            ),
                            action: Action::UmountNsfs {
                                file: file.clone(),
                                mnt_ns: h.mnt_ns,
                                copy_at: mp.clone(),
                                dev,
                            },
                            when: When::IfStillHeld,
                        },
                    });
                }
            }
            HoldKind::Cwd | HoldKind::Root | HoldKind::Fd => {
                let how = match h.hold {
                    HoldKind::Cwd => "its working directory is",
                    HoldKind::Root => "its root directory is",
                    _ => "it has a file open",
                };
                let pid = h.pid.or_else(|| h.processes.first().map(|p| p.pid));
                match (pid, opts.kill) {
                    (Some(pid), true) => kills.push(Step {
                        text: format!(
                            "kill {} if {how} still inside the detached filesystem: SIGTERM, SIGKILL after 5 s",
                            who(h)
                        ),
                        action: Action::Kill {
                            pids: vec![pid],
                            mnt_ns: None,
                            why: format!("{how} inside the detached filesystem"),
                            copy_at: None,
                            dev,
                        },
                        when: When::IfStillHeld,
                    }),
                    (Some(_), false) => not_done.push(NotDone {
                        mnt_ns: h.mnt_ns,
                        holder: who(h),
                        why: format!("{how} inside the detached filesystem: nothing but the process letting go releases it; `--kill` would stop it"),
                    }),
                    (None, _) => not_done.push(NotDone {
                        mnt_ns: h.mnt_ns,
                        holder: who(h),
                        why: format!("{how} inside the detached filesystem, and the process is gone"),
                    }),
                }
            }
        }
    }
    if want_rmdir {
        let always = !rmdir_reasons.is_empty();
        steps.push(Step {
            text: format!(
                "{}remove the empty mountpoint directory {} on the host and make it again (same mode and owner): the host has unmounted it, and removing a mountpoint detaches every copy in every namespace (Linux 3.18+){}",
                if always { "" } else { "if a copy is still there: " },
                f.mount.path,
                if always {
                    format!("; needed because {}", rmdir_reasons.join("; "))
                } else {
                    String::new()
                }
            ),
            action: Action::RemoveMountpoint {
                path: f.mount.path.clone(),
            },
            when: if always { When::Always } else { When::IfStillHeld },
        });
    }
    steps.extend(kills);
    Item {
        id: f.id.clone(),
        kind: f.kind,
        summary: f.summary.clone(),
        path: f.mount.path.clone(),
        dev: f.mount.dev.clone(),
        fstype: f.mount.fstype.clone(),
        steps,
        not_done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_model::finding::{Consequence, ConsequenceKind, HolderProcess, MountRef};
    use monitor_model::ContainerHint;

    const PATH: &str = "/var/lib/docker/overlay2/abc/merged";

    fn holder(pid: Option<Pid>) -> Holder {
        Holder {
            mnt_ns: 4026532177,
            hold: HoldKind::Copy,
            mount_point: Some(PATH.into()),
            propagation: "private",
            receives_host_umounts: Some(false),
            pid,
            processes: pid
                .map(|pid| HolderProcess {
                    pid,
                    comm: "sleep".into(),
                    exe: None,
                    cgroup: None,
                    unit: None,
                    uid: 0,
                })
                .into_iter()
                .collect(),
            more_processes: 0,
            nsfs_mounts: Vec::new(),
            user_ns_locked: false,
            since: None,
            since_source: "unknown",
            via: None,
            created_by: None,
            parent_mnt_ns: None,
            busy: Vec::new(),
        }
    }

    fn finding(kind: FindingKind, holders: Vec<Holder>) -> Finding {
        Finding {
            more_holders: 0,
            id: "ML-1".into(),
            kind,
            at: 0,
            summary: "s".into(),
            mount: MountRef {
                path: PATH.into(),
                path_hex: None,
                dev: Some("0:52".into()),
                fstype: "overlay".into(),
                source: "overlay".into(),
                container: ContainerHint::default(),
                owner: None,
                mounted_at: None,
                unmounted_at: None,
            },
            holders,
            consequence: Consequence {
                kind: ConsequenceKind::DetachedOnRemoval,
                text: String::new(),
            },
            remedy: Vec::new(),
            failed_call: None,
            resolution: None,
        }
    }

    fn modern() -> KernelFacts {
        KernelFacts::from_release("6.18.44", None)
    }

    fn el7() -> KernelFacts {
        KernelFacts::from_release("3.10.0-693.el7.x86_64", Some(false))
    }

    fn actions(i: &Item) -> Vec<(&'static str, When)> {
        i.steps
            .iter()
            .map(|s| {
                (
                    match s.action {
                        Action::Umount { .. } => "umount",
                        Action::RemoveMountpoint { .. } => "rmdir",
                        Action::Kill { .. } => "kill",
                        Action::UmountNsfs { .. } => "umount_nsfs",
                    },
                    s.when,
                )
            })
            .collect()
    }

    #[test]
    fn a_private_copy_is_unmounted_in_its_namespace_with_rmdir_as_the_fallback() {
        let i = plan_finding(
            &finding(FindingKind::Leak, vec![holder(Some(11828))]),
            &modern(),
            &Patterns::default(),
            Options::default(),
        );
        assert_eq!(
            actions(&i),
            vec![("umount", When::Always), ("rmdir", When::IfStillHeld)]
        );
        let Action::Umount { enter, dev, .. } = &i.steps[0].action else {
            panic!()
        };
        assert_eq!(
            enter,
            &Enter::Process {
                pid: 11828,
                comm: "sleep".into()
            }
        );
        assert_eq!(
            *dev,
            Some(Dev {
                major: 0,
                minor: 52
            })
        );
        assert!(i.not_done.is_empty());
    }

    #[test]
    fn a_risk_is_unmounted_but_the_directory_is_never_removed() {
        let i = plan_finding(
            &finding(FindingKind::Risk, vec![holder(Some(7))]),
            &modern(),
            &Patterns::default(),
            Options { kill: true },
        );
        assert_eq!(
            actions(&i),
            vec![("umount", When::Always), ("kill", When::IfStillHeld)]
        );
    }

    #[test]
    fn a_locked_copy_goes_by_rmdir_on_new_kernels_and_is_refused_on_el7() {
        let mut h = holder(Some(9));
        h.user_ns_locked = true;
        let f = finding(FindingKind::Leak, vec![h]);
        let i = plan_finding(&f, &modern(), &Patterns::default(), Options::default());
        assert_eq!(actions(&i), vec![("rmdir", When::Always)]);
        assert!(i.steps[0].text.contains("locked in a user namespace"));
        let i = plan_finding(&f, &el7(), &Patterns::default(), Options::default());
        assert!(i.steps.is_empty());
        assert!(i.not_done[0].why.contains("EBUSY"), "{:?}", i.not_done);
        let i = plan_finding(&f, &el7(), &Patterns::default(), Options { kill: true });
        assert_eq!(actions(&i), vec![("kill", When::IfStillHeld)]);
    }

    #[test]
    fn a_processless_namespace_is_entered_by_its_nsfs_mount() {
        let mut h = holder(None);
        h.nsfs_mounts = vec!["/run/ns/x".into()];
        let f = finding(FindingKind::Leak, vec![h]);
        let i = plan_finding(&f, &modern(), &Patterns::default(), Options { kill: true });
        assert_eq!(
            actions(&i),
            vec![
                ("umount", When::Always),
                ("rmdir", When::IfStillHeld),
                ("umount_nsfs", When::IfStillHeld)
            ]
        );
        let Action::Umount { enter, .. } = &i.steps[0].action else {
            panic!()
        };
        assert_eq!(
            enter,
            &Enter::Nsfs {
                file: "/run/ns/x".into()
            }
        );
    }

    #[test]
    fn pins_need_kill_and_foreign_paths_are_never_touched() {
        let mut h = holder(Some(5));
        h.hold = HoldKind::Cwd;
        h.mount_point = None;
        let f = finding(FindingKind::Leak, vec![h]);
        let i = plan_finding(&f, &modern(), &Patterns::default(), Options::default());
        assert!(i.steps.is_empty());
        assert!(i.not_done[0].why.contains("--kill"));
        let i = plan_finding(&f, &modern(), &Patterns::default(), Options { kill: true });
        assert_eq!(actions(&i), vec![("kill", When::IfStillHeld)]);

        let mut f = finding(FindingKind::Leak, vec![holder(Some(5))]);
        f.mount.path = "/srv/data".into();
        f.holders[0].mount_point = Some("/srv/data".into());
        let i = plan_finding(&f, &modern(), &Patterns::default(), Options { kill: true });
        assert!(i.steps.is_empty(), "{:?}", i.steps);
        assert!(i.not_done[0].why.contains("not a container mount"));
    }
}
