//! Replays of synthetic input streams: the leak stories the model must tell,
//! and the ways real streams go wrong (duplicates, reordering, losses, pid
//! and namespace-id reuse).

use crate::finding::{ConsequenceKind, HoldKind};
use crate::flags::*;
use crate::input::*;
use crate::testutil::*;
use crate::{Finding, FindingKind, KernelFacts, Model, ModelConfig, Output};

fn model() -> Model {
    Model::new(ModelConfig {
        kernel: KernelFacts::from_release("6.18.44", None),
        ..ModelConfig::default()
    })
}

fn container_mount(shared: Option<u32>, master: Option<u32>) -> MountEntry {
    mount(40, OVERLAY_DEV, DOCKER_PATH, "overlay", shared, master)
}

fn host_with_container() -> NamespaceSnapshot {
    let mut mounts = host_base();
    mounts.push(container_mount(Some(7), None));
    ns(
        HOST,
        mounts,
        vec![process(900, "dockerd", SEC, "/system.slice/docker.service")],
    )
}

fn ntpd() -> ProcessInfo {
    process(1234, "ntpd", 2 * SEC, "/system.slice/ntpd.service")
}

/// ntpd (pid 1234) unshares its mount namespace (HOLDER) at `at` and a
/// millisecond later sets the propagation of its copies (`flags`).
fn ntpd_unshares(m: &mut Model, at: Ktime, flags: u64) {
    let ntpd_task = task(1234, "ntpd");
    m.apply(&unshare(at, &ntpd_task, HOST, HOLDER));
    m.apply(&make(at + MS, &ntpd_task, HOLDER, "/", flags));
}

fn holder_with(shared: Option<u32>, master: Option<u32>) -> NamespaceSnapshot {
    let mut mounts = host_base();
    mounts.push(container_mount(shared, master));
    ns(HOLDER, mounts, vec![ntpd()])
}

/// The seed's story from /proc alone: ntpd's private namespace holds a copy
/// of a container rootfs.
#[test]
fn scan_reports_a_private_copy_as_a_risk_naming_the_holder() {
    let mut m = model();
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    let f = findings(&out);
    assert_eq!(f.len(), 1, "{out:#?}");
    let f = f[0];
    assert_eq!(f.kind, FindingKind::Risk);
    assert_eq!(f.mount.path.as_bytes(), DOCKER_PATH.as_bytes());
    assert_eq!(f.mount.dev.as_deref(), Some("0:52"));
    assert_eq!(f.mount.fstype, "overlay");
    assert_eq!(f.mount.container.runtime, Some("docker"));
    let h = &f.holders[0];
    assert_eq!(
        (h.mnt_ns, h.pid, h.propagation),
        (HOLDER, Some(1234), "private")
    );
    assert_eq!(h.receives_host_umounts, Some(false));
    assert_eq!(h.processes[0].comm, "ntpd");
    assert_eq!(h.processes[0].unit.as_deref(), Some("ntpd.service"));
    assert_eq!(h.since, Some(2 * SEC));
    assert_eq!(h.since_source, "inferred");
    assert_eq!(f.consequence.kind, ConsequenceKind::DetachedOnRemoval);
    assert!(
        f.remedy[0].contains(&format!("nsenter -t 1234 -m umount {DOCKER_PATH}")),
        "{:?}",
        f.remedy
    );
    assert!(f.remedy[0].contains("systemctl restart ntpd.service"));
    assert!(f.remedy.iter().any(|r| r.contains("MountFlags=slave")));
    assert!(
        f.summary.contains("ntpd (pid 1234, ntpd.service)"),
        "{}",
        f.summary
    );
}

#[test]
fn slave_and_shared_copies_receive_umounts_and_are_not_reported() {
    for (shared, master) in [(None, Some(7)), (Some(7), None)] {
        let mut m = model();
        let out = m.apply(&snapshot(
            100 * SEC,
            vec![host_with_container(), holder_with(shared, master)],
        ));
        assert!(findings(&out).is_empty(), "{shared:?}/{master:?}: {out:#?}");
        // After the host's umount (snapshot shows it gone from the host, the
        // holder not yet re-read) the copy still does not count: the kernel
        // propagated the umount to it.
        let out = m.apply(&snapshot(
            101 * SEC,
            vec![ns(HOST, host_base(), vec![]), holder_with(shared, master)],
        ));
        assert!(
            findings(&out).is_empty(),
            "{shared:?}/{master:?} after umount: {out:#?}"
        );
    }
}

/// The story as the probes see it: ntpd unshares, makes its copies
/// private, the host unmounts, ntpd exits.
#[test]
fn event_stream_risk_then_leak_then_resolved() {
    let mut m = model();
    let dockerd = task(900, "dockerd");
    let ntpd_task = task(1234, "ntpd");
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    let out = m.apply(&unshare(20 * SEC, &ntpd_task, HOST, HOLDER));
    assert!(out.contains(&Output::Watch(HOLDER)), "{out:?}");
    assert!(findings(&out).is_empty(), "a peer copy is fine");
    let out = m.apply(&make(
        20 * SEC + MS,
        &ntpd_task,
        HOLDER,
        "/",
        MS_REC | MS_PRIVATE,
    ));
    assert!(
        findings(&out).is_empty(),
        "still inside the grace period: {out:?}"
    );
    let out = m.apply(&Input::Tick { now: 23 * SEC });
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Risk]);
    let risk_id = f[0].id.clone();
    let h = &f[0].holders[0];
    assert_eq!(
        (h.since, h.since_source, h.via),
        (Some(20 * SEC), "observed", Some("unshare"))
    );
    assert_eq!(h.created_by.as_ref().map(|c| c.comm.as_str()), Some("ntpd"));
    assert_eq!(h.parent_mnt_ns, Some(HOST));

    let out = m.apply(&umount(30 * SEC, &dockerd, HOST, DOCKER_PATH, 0));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Leak]);
    assert_eq!(f[0].id, risk_id, "the leak continues the risk's story");
    assert_eq!(f[0].mount.unmounted_at, Some(30 * SEC));
    assert_eq!(f[0].holders[0].pid, Some(1234));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Rescan { namespaces, .. } if namespaces == &vec![HOLDER])));

    let out = m.apply(&exit(40 * SEC, HOLDER, 1234));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Resolved]);
    assert_eq!(f[0].id, risk_id);
    assert_eq!(f[0].resolution.as_deref(), Some("the holder exited"));
    assert!(out.contains(&Output::Unwatch(HOLDER)));
    assert!(m.open_findings().is_empty());
}

#[test]
fn slave_holder_receives_the_umount_so_no_leak() {
    let mut m = model();
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    ntpd_unshares(&mut m, 20 * SEC, MS_REC | MS_SLAVE);
    let out = m.apply(&Input::Tick { now: 25 * SEC });
    assert!(findings(&out).is_empty(), "{out:?}");
    let out = m.apply(&umount(
        30 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    assert!(findings(&out).is_empty(), "{out:?}");
    assert!(
        out.contains(&Output::Unwatch(HOLDER)),
        "the copy went with the umount: {out:?}"
    );
}

/// Docker's graph driver dir is private: a copy made by a plain unshare is
/// private from the start, and a host umount leaks it at once.
#[test]
fn private_host_mount_copies_leak_without_a_propagation_change() {
    let mut m = model();
    let mut host = host_with_container();
    host.mounts[2].shared = None;
    m.apply(&snapshot(10 * SEC, vec![host]));
    m.apply(&unshare(20 * SEC, &task(77, "unshare"), HOST, HOLDER));
    let out = m.apply(&umount(
        20 * SEC + 5 * MS,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    assert_eq!(
        kinds(&out),
        vec![FindingKind::Leak],
        "a leak needs no grace period"
    );
}

#[test]
fn duplicated_events_change_nothing() {
    let ntpd_task = task(1234, "ntpd");
    let stream = [
        snapshot(10 * SEC, vec![host_with_container()]),
        unshare(20 * SEC, &ntpd_task, HOST, HOLDER),
        make(20 * SEC + MS, &ntpd_task, HOLDER, "/", MS_REC | MS_PRIVATE),
        Input::Tick { now: 23 * SEC },
        umount(30 * SEC, &task(900, "dockerd"), HOST, DOCKER_PATH, 0),
        exit(40 * SEC, HOLDER, 1234),
    ];
    let once: Vec<FindingKind> = {
        let mut m = model();
        stream.iter().flat_map(|i| kinds(&m.apply(i))).collect()
    };
    let mut m = model();
    let twice: Vec<FindingKind> = stream
        .iter()
        .flat_map(|i| {
            let mut k = kinds(&m.apply(i));
            k.extend(kinds(&m.apply(i)));
            k
        })
        .collect();
    assert_eq!(
        once,
        vec![FindingKind::Risk, FindingKind::Leak, FindingKind::Resolved]
    );
    assert_eq!(twice, once);
    assert!(m.stats().duplicates >= 4);
}

/// The unshare happened before the host's umount but another CPU's record
/// was read first: the copy was still made.
#[test]
fn unshare_read_after_a_later_umount_still_leaks() {
    let mut m = model();
    let mut host = host_with_container();
    host.mounts[2].shared = None;
    m.apply(&snapshot(10 * SEC, vec![host]));
    let out = m.apply(&umount(
        30 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    assert!(findings(&out).is_empty());
    let out = m.apply(&unshare(29 * SEC, &task(77, "unshare"), HOST, HOLDER));
    assert_eq!(kinds(&out), vec![FindingKind::Leak], "{out:#?}");
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Rescan {
            reason: "events arrived out of order",
            ..
        }
    )));
}

/// Reordering the model cannot untangle alone: it asks for a rescan, and
/// the snapshot that follows settles the truth.
#[test]
fn reordered_stream_asks_for_a_rescan_and_the_snapshot_settles_it() {
    let mut m = model();
    let ntpd_task = task(1234, "ntpd");
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    // Order of arrival: umount (t=30), unshare (t=20), make-rprivate (t=20.001).
    m.apply(&umount(
        30 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    let out = m.apply(&unshare(20 * SEC, &ntpd_task, HOST, HOLDER));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Rescan { namespaces, .. } if namespaces.contains(&HOLDER))));
    m.apply(&make(
        20 * SEC + MS,
        &ntpd_task,
        HOLDER,
        "/",
        MS_REC | MS_PRIVATE,
    ));
    // The truth: the copy was private when the umount came, so it survived.
    let out = m.apply(&snapshot(
        31 * SEC,
        vec![ns(HOST, host_base(), vec![]), holder_with(None, None)],
    ));
    assert_eq!(kinds(&out), vec![FindingKind::Leak], "{out:#?}");
    assert_eq!(
        findings(&out)[0].holders[0].since,
        Some(20 * SEC),
        "the probe's time survives the snapshot"
    );
}

#[test]
fn lost_events_ask_for_a_full_rescan_which_repairs_state() {
    let mut m = model();
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    // The unshare and the umount were lost in the kernel.
    let out = m.apply(&Input::Lost {
        at: 30 * SEC,
        count: 12,
    });
    assert!(out.contains(&Output::Rescan {
        namespaces: vec![],
        full: true,
        reason: "kernel events were lost"
    }));
    assert_eq!(m.stats().lost_events, 12);
    let out = m.apply(&snapshot(
        31 * SEC,
        vec![ns(HOST, host_base(), vec![]), holder_with(None, None)],
    ));
    assert_eq!(kinds(&out), vec![FindingKind::Leak]);
    assert_eq!(findings(&out)[0].holders[0].since_source, "inferred");
}

#[test]
fn a_reused_pid_is_not_blamed_and_its_old_exit_is_ignored() {
    let mut m = model();
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    m.apply(&unshare(20 * SEC, &task(1234, "ntpd"), HOST, HOLDER));
    m.apply(&make(
        20 * SEC + MS,
        &task(1234, "ntpd"),
        HOLDER,
        "/",
        MS_REC | MS_PRIVATE,
    ));
    m.apply(&Input::Tick { now: 25 * SEC });
    // ntpd exits; the namespace dies; pid 1234 is reused by an unrelated
    // process in another namespace, seen by a snapshot.
    let out = m.apply(&exit(30 * SEC, HOLDER, 1234));
    assert_eq!(kinds(&out), vec![FindingKind::Resolved]);
    let other = ns(
        OTHER,
        host_base(),
        vec![process(
            1234,
            "bash",
            40 * SEC,
            "/user.slice/session-1.scope",
        )],
    );
    m.apply(&snapshot(41 * SEC, vec![host_with_container(), other]));
    // A stale exit for the old 1234 (read late) must not remove the new one.
    let out = m.apply(&exit(30 * SEC, OTHER, 1234));
    assert!(out.is_empty(), "{out:?}");
    assert!(m.stats().duplicates + m.stats().late_events >= 1);
}

#[test]
fn a_reused_namespace_id_starts_a_new_story() {
    let mut m = model();
    let mut host = host_with_container();
    host.mounts[2].shared = None;
    m.apply(&snapshot(10 * SEC, vec![host]));
    m.apply(&unshare(20 * SEC, &task(1234, "ntpd"), HOST, HOLDER));
    let out = m.apply(&Input::Tick { now: 25 * SEC });
    let first = findings(&out)[0].id.clone();
    // The namespace died unseen (its exit was lost) and the kernel handed the
    // same inode number to a namespace made by someone else: the old story
    // ends, a new one starts once the new copy is past its grace period.
    let out = m.apply(&unshare(50 * SEC, &task(4321, "nginx"), HOST, HOLDER));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Resolved], "{out:#?}");
    assert_eq!(f[0].id, first);
    assert_eq!(
        f[0].resolution.as_deref(),
        Some("namespace id reused: the old namespace is gone")
    );
    let out = m.apply(&Input::Tick { now: 53 * SEC });
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Risk]);
    assert_ne!(f[0].id, first);
    assert_eq!(
        f[0].holders[0].pid,
        Some(4321),
        "the new namespace's process, not the old one"
    );
    assert_eq!(f[0].holders[0].since, Some(50 * SEC));
}

#[test]
fn failed_umount_with_ebusy_names_the_holders() {
    let mut m = model();
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(Some(7), None)],
    ));
    let out = m.apply(&umount(
        101 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        -EBUSY,
    ));
    // Said after the fresh read it asks for, so the holders are current.
    assert!(findings(&out).is_empty(), "{out:#?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Rescan { full: true, .. })));
    let mut busy = holder_with(Some(7), None);
    busy.members[0].cwd_dev = Some(OVERLAY_DEV);
    let out = m.apply(&snapshot(
        101 * SEC + 30 * MS,
        vec![host_with_container(), busy],
    ));
    let f: Vec<&Finding> = findings(&out)
        .into_iter()
        .filter(|f| f.kind == FindingKind::FailedRemoval)
        .collect();
    assert_eq!(f.len(), 1, "{out:#?}");
    assert_eq!(
        f[0].holders.len(),
        1,
        "one holder, not a copy and a pin: {:#?}",
        f[0].holders
    );
    assert!(
        f[0].remedy[0].contains("umount -l"),
        "busy copy: {:?}",
        f[0].remedy
    );
    let call = f[0].failed_call.as_ref().unwrap();
    assert_eq!((call.syscall, call.pid, call.errno), ("umount", 900, 16));
    assert_eq!(f[0].holders[0].pid, Some(1234));
}

#[test]
fn on_el7_the_consequence_is_ebusy_and_rmdir_fails() {
    let el7 = KernelFacts::from_release("3.10.0-1160.el7.x86_64", Some(false));
    let mut m = Model::new(ModelConfig {
        kernel: el7,
        ..ModelConfig::default()
    });
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    let f = findings(&out);
    assert_eq!(f[0].consequence.kind, ConsequenceKind::RemovalFailsEbusy);
    assert!(f[0].consequence.text.contains("device or resource busy"));
    m.apply(&umount(
        101 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    let rmdir = Call::Rmdir {
        path: PathArg::new(DOCKER_PATH),
    };
    let out = m.apply(&syscall(
        102 * SEC,
        &task(900, "dockerd"),
        HOST,
        HOST,
        -EBUSY,
        rmdir.clone(),
    ));
    assert!(findings(&out).is_empty());
    let out = m.apply(&snapshot(
        102 * SEC + 30 * MS,
        vec![ns(HOST, host_base(), vec![]), holder_with(None, None)],
    ));
    assert_eq!(kinds(&out), vec![FindingKind::FailedRemoval]);
    // On 3.10 a successful rmdir cannot happen while the copy exists; and on
    // a modern kernel it detaches the copy:
    let mut m = model();
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    m.apply(&umount(
        101 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    let out = m.apply(&syscall(
        102 * SEC,
        &task(900, "dockerd"),
        HOST,
        HOST,
        0,
        rmdir,
    ));
    assert_eq!(kinds(&out), vec![FindingKind::Resolved]);
    assert_eq!(
        findings(&out)[0].resolution.as_deref(),
        Some("mountpoint removed")
    );
}

#[test]
fn a_container_namespace_holding_its_own_rootfs_is_not_a_holder() {
    let mut m = model();
    let mut own = mount(90, OVERLAY_DEV, "/", "overlay", None, None);
    own.parent_id = 90;
    let container_ns = ns(
        OTHER,
        vec![own],
        vec![process(
            3000,
            "nginx",
            5 * SEC,
            "/system.slice/docker-abc.scope",
        )],
    );
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), container_ns],
    ));
    assert!(findings(&out).is_empty(), "{out:#?}");
}

#[test]
fn a_process_less_namespace_gets_the_nsfs_remedy() {
    let mut m = model();
    let mut pinned = holder_with(None, None);
    pinned.members.clear();
    pinned.source = TableSource::Statmount;
    pinned.nsfs_mounts = vec![NsfsMount {
        in_ns: HOST,
        path: "/run/netns-like/mnt".into(),
    }];
    let out = m.apply(&snapshot(100 * SEC, vec![host_with_container(), pinned]));
    let f = findings(&out);
    assert_eq!(f[0].holders[0].pid, None);
    assert_eq!(f[0].holders[0].since_source, "unknown");
    assert!(
        f[0].remedy[0].contains("nsenter --mount=/run/netns-like/mnt umount"),
        "{:?}",
        f[0].remedy
    );
    assert!(
        f[0].summary
            .contains("no process (kept by nsfs mount /run/netns-like/mnt)"),
        "{}",
        f[0].summary
    );
}

#[test]
fn a_user_namespace_holder_is_told_that_nsenter_umount_fails() {
    let mut m = model();
    let mut userns = holder_with(None, None);
    userns.members[0].user_ns = Some(4026532999);
    let out = m.apply(&snapshot(100 * SEC, vec![host_with_container(), userns]));
    let f = findings(&out);
    assert!(f[0].holders[0].user_ns_locked);
    assert!(
        f[0].remedy[0].contains("fails with EINVAL"),
        "{:?}",
        f[0].remedy
    );
    assert!(f[0].remedy[0].contains("systemctl restart ntpd.service"));
}

#[test]
fn clone_into_a_new_user_namespace_makes_shared_copies_slaves() {
    let mut m = model();
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    let call = Call::NewTask {
        child: 555,
        child_ns: HOLDER,
        flags: CLONE_NEWNS | CLONE_NEWUSER,
    };
    m.apply(&syscall(
        20 * SEC,
        &task(554, "podman"),
        HOST,
        HOST,
        0,
        call,
    ));
    let out = m.apply(&Input::Tick { now: 30 * SEC });
    assert!(
        findings(&out).is_empty(),
        "slaves receive the umount: {out:?}"
    );
    let out = m.apply(&umount(
        31 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    assert!(findings(&out).is_empty(), "{out:?}");
}

#[test]
fn a_busy_copy_predicts_a_pinned_filesystem() {
    let mut m = model();
    let mut holder = holder_with(None, None);
    holder.members[0].cwd_dev = Some(OVERLAY_DEV);
    let out = m.apply(&snapshot(100 * SEC, vec![host_with_container(), holder]));
    let f = findings(&out);
    assert_eq!(f[0].consequence.kind, ConsequenceKind::FilesystemPinned);
    assert_eq!(
        f[0].holders[0].busy,
        vec!["cwd of pid 1234 (ntpd) is inside".to_string()]
    );
}

/// After the runtime removed the mountpoint, the copy is detached too, but
/// the holder's cwd keeps the overlay alive: no mount table shows it.
#[test]
fn a_detached_filesystem_kept_by_a_cwd_is_a_leak_until_the_process_leaves() {
    let mut m = model();
    let mut holder = holder_with(None, None);
    holder.members[0].cwd_dev = Some(OVERLAY_DEV);
    m.apply(&snapshot(100 * SEC, vec![host_with_container(), holder]));
    let pin = Pin {
        dev: OVERLAY_DEV,
        process: ntpd(),
        ns: HOLDER,
        how: PinKind::Cwd,
        link: "/".into(),
        fstype: Some("overlay".into()),
        backing_file: None,
        root_ino: None,
    };
    let mut s = match snapshot(
        110 * SEC,
        vec![
            ns(HOST, host_base(), vec![]),
            ns(HOLDER, host_base(), vec![ntpd()]),
        ],
    ) {
        Input::Snapshot(s) => s,
        _ => unreachable!(),
    };
    s.pins = vec![pin];
    let out = m.apply(&Input::Snapshot(s.clone()));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Leak], "{out:#?}");
    assert_eq!(f[0].holders[0].hold, HoldKind::Cwd);
    assert_eq!(f[0].consequence.kind, ConsequenceKind::FilesystemPinned);
    assert!(f[0].consequence.text.contains("already detached"));
    assert!(f[0].remedy[0].contains("/proc/1234/cwd"));
    // The process left: a full scan (devices read) finds no pin.
    s.pins.clear();
    s.taken_at = 120 * SEC;
    s.namespaces[1].members[0].cwd_dev = Some(Dev {
        major: 254,
        minor: 0,
    });
    let out = m.apply(&Input::Snapshot(s));
    assert_eq!(kinds(&out), vec![FindingKind::Resolved]);
}

/// A scan with no history still finds an overlay that only a cwd keeps.
#[test]
fn a_pin_of_an_unknown_filesystem_is_reported() {
    let mut m = model();
    let pin = Pin {
        dev: Dev { major: 7, minor: 3 },
        process: ntpd(),
        ns: HOLDER,
        how: PinKind::Fd(9),
        link: "/data/file".into(),
        fstype: Some("ext4".into()),
        backing_file: Some("/var/lib/images/vol.img".into()),
        root_ino: None,
    };
    let Input::Snapshot(mut s) = snapshot(100 * SEC, vec![ns(HOST, host_base(), vec![])]) else {
        unreachable!()
    };
    s.pins = vec![pin];
    let out = m.apply(&Input::Snapshot(s));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Leak]);
    assert_eq!(f[0].mount.dev.as_deref(), Some("7:3"));
    assert!(f[0].consequence.text.contains("block device"));
}

#[test]
fn odd_paths_reach_the_remedy_exactly() {
    let mut m = model();
    let odd = "/var/lib/docker/overlay2/a b\n\u{e9}/merged";
    let mut host = host_base();
    host.push(mount(40, OVERLAY_DEV, odd, "overlay", Some(7), None));
    let mut holder = host_base();
    holder.push(mount(41, OVERLAY_DEV, odd, "overlay", None, None));
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![ns(HOST, host, vec![]), ns(HOLDER, holder, vec![ntpd()])],
    ));
    let f = findings(&out);
    assert_eq!(f[0].mount.path.as_bytes(), odd.as_bytes());
    assert!(
        f[0].remedy[0].contains(r"$'/var/lib/docker/overlay2/a b\n"),
        "{:?}",
        f[0].remedy
    );
}

#[test]
fn a_mount_made_by_an_event_under_a_shared_tree_is_shared() {
    let mut m = model();
    m.apply(&snapshot(
        10 * SEC,
        vec![ns(
            HOST,
            host_base(),
            vec![process(900, "dockerd", SEC, "/")],
        )],
    ));
    let out = m.apply(&mount_call(
        11 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        "overlay",
    ));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Rescan {
            reason: "container filesystem mounted",
            ..
        }
    )));
    m.apply(&unshare(20 * SEC, &task(1234, "ntpd"), HOST, HOLDER));
    m.apply(&make(
        20 * SEC + MS,
        &task(1234, "ntpd"),
        HOLDER,
        "/",
        MS_REC | MS_SLAVE,
    ));
    let out = m.apply(&Input::Tick { now: 30 * SEC });
    assert!(
        findings(&out).is_empty(),
        "slave of a shared mount: {out:?}"
    );
    let out = m.apply(&umount(
        31 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    assert!(findings(&out).is_empty(), "{out:?}");
}

/// The unshare was read after a snapshot that already saw its namespace.
#[test]
fn a_creation_read_after_the_snapshot_only_adds_provenance() {
    let mut m = model();
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    assert_eq!(findings(&out)[0].holders[0].since_source, "inferred");
    let out = m.apply(&unshare(99 * SEC, &task(1234, "ntpd"), HOST, HOLDER));
    assert!(findings(&out).is_empty(), "same holders, no news: {out:?}");
    let f = m.open_findings();
    assert_eq!(f.len(), 1);
    assert_eq!(m.stats().late_events, 1);
}

/// The runtime removed the mountpoint, detaching the busy copy: what the
/// last scan read of the holder's cwd keeps the leak open, now as a pin; a
/// scan that did not read devices does not undo it; the full scan confirms.
#[test]
fn a_busy_copy_that_vanishes_becomes_a_pin() {
    let mut m = model();
    let mut holder = holder_with(None, None);
    holder.members[0].cwd_dev = Some(OVERLAY_DEV);
    m.apply(&snapshot(100 * SEC, vec![host_with_container(), holder]));
    m.apply(&umount(
        101 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    let rmdir = Call::Rmdir {
        path: PathArg::new(DOCKER_PATH),
    };
    let out = m.apply(&syscall(
        102 * SEC,
        &task(900, "dockerd"),
        HOST,
        HOST,
        0,
        rmdir,
    ));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Leak], "{out:#?}");
    assert_eq!(f[0].holders[0].hold, HoldKind::Cwd);
    assert_eq!(f[0].consequence.kind, ConsequenceKind::FilesystemPinned);
    assert!(f[0].consequence.text.contains("already detached"));
    // A targeted snapshot that did not read devices changes nothing.
    let Input::Snapshot(mut s) = snapshot(103 * SEC, vec![ns(HOLDER, host_base(), vec![ntpd()])])
    else {
        unreachable!()
    };
    s.pins_scanned = false;
    s.alive = None;
    assert!(findings(&m.apply(&Input::Snapshot(s))).is_empty());
    // The full scan finds ntpd's cwd inside the detached overlay: same story.
    let pin = Pin {
        dev: OVERLAY_DEV,
        process: ntpd(),
        ns: HOLDER,
        how: PinKind::Cwd,
        link: "/".into(),
        fstype: Some("overlay".into()),
        backing_file: None,
        root_ino: None,
    };
    let Input::Snapshot(mut s) = snapshot(
        104 * SEC,
        vec![
            ns(HOST, host_base(), vec![]),
            ns(HOLDER, host_base(), vec![ntpd()]),
        ],
    ) else {
        unreachable!()
    };
    s.pins = vec![pin];
    assert!(findings(&m.apply(&Input::Snapshot(s))).is_empty());
    // ntpd leaves (a scan reads its cwd elsewhere): resolved.
    let mut moved = ntpd();
    moved.cwd_dev = Some(Dev {
        major: 254,
        minor: 0,
    });
    let Input::Snapshot(s) = snapshot(
        105 * SEC,
        vec![
            ns(HOST, host_base(), vec![]),
            ns(HOLDER, host_base(), vec![moved]),
        ],
    ) else {
        unreachable!()
    };
    let out = m.apply(&Input::Snapshot(s));
    assert_eq!(kinds(&out), vec![FindingKind::Resolved], "{out:#?}");
}

#[test]
fn an_idle_copy_that_vanishes_resolves_at_once() {
    let mut m = model();
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    m.apply(&umount(
        101 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    let rmdir = Call::Rmdir {
        path: PathArg::new(DOCKER_PATH),
    };
    let out = m.apply(&syscall(
        102 * SEC,
        &task(900, "dockerd"),
        HOST,
        HOST,
        0,
        rmdir,
    ));
    assert_eq!(kinds(&out), vec![FindingKind::Resolved]);
}

/// Device facts from a targeted scan (no pin search) are enough to find a
/// pin: the holder's cwd is on the device after its copy went away.
#[test]
fn device_facts_from_a_targeted_scan_reveal_the_pin() {
    let mut m = model();
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    // ntpd cds into its copy; a targeted scan reads that.
    let mut inside = ntpd();
    inside.cwd_dev = Some(OVERLAY_DEV);
    let Input::Snapshot(mut s) = snapshot(
        100 * SEC + MS,
        vec![ns(HOLDER, holder_with(None, None).mounts, vec![inside])],
    ) else {
        unreachable!()
    };
    s.pins_scanned = false;
    s.alive = None;
    let out = m.apply(&Input::Snapshot(s));
    assert_eq!(
        findings(&out)[0].consequence.kind,
        ConsequenceKind::FilesystemPinned,
        "busy copy: {out:#?}"
    );
    m.apply(&umount(
        101 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    let rmdir = Call::Rmdir {
        path: PathArg::new(DOCKER_PATH),
    };
    let out = m.apply(&syscall(
        102 * SEC,
        &task(900, "dockerd"),
        HOST,
        HOST,
        0,
        rmdir,
    ));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Leak], "{out:#?}");
    assert_eq!(f[0].holders[0].hold, HoldKind::Cwd);
    assert_eq!(f[0].holders[0].pid, Some(1234));
}

// ----- containers (issue: warn before removal fails) ---------------------

fn web(state: ContainerState) -> Input {
    Input::Container(ContainerEvent::Seen {
        at: 50 * SEC,
        info: Box::new(ContainerInfo {
            runtime: "docker".into(),
            id: "3f9a1c0e7b2d5a6b".into(),
            name: "web".into(),
            image: Some("nginx:1.25".into()),
            mounts: vec![DOCKER_PATH.into()],
            state,
            ..ContainerInfo::default()
        }),
    })
}

fn stopped(at: Ktime) -> Input {
    Input::Container(ContainerEvent::Stopped {
        at,
        runtime: "docker".into(),
        id: "3f9a1c0e7b2d5a6b".into(),
    })
}

#[test]
fn findings_name_the_container_the_runtime_reported() {
    let mut m = model();
    m.apply(&web(ContainerState::Running));
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    let f = findings(&out);
    let owner = f[0].mount.owner.as_ref().expect("owner");
    assert_eq!(
        (owner.name.as_str(), owner.runtime.as_str()),
        ("web", "docker")
    );
    assert!(
        f[0].summary
            .starts_with("container web (3f9a1c0e7b2d, nginx:1.25) rootfs at"),
        "{}",
        f[0].summary
    );
}

/// Modern kernel, idle private copy: Docker's stop detaches it (it removes
/// `merged`), so no warning, and the risk resolves.
#[test]
fn an_idle_copy_gets_no_removal_warning() {
    let mut m = model();
    m.apply(&web(ContainerState::Running));
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    let out = m.apply(&stopped(101 * SEC));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Rescan { namespaces, .. } if namespaces == &vec![HOLDER])));
    let out = m.apply(&snapshot(
        101 * SEC + 20 * MS,
        vec![host_with_container(), holder_with(None, None)],
    ));
    assert!(
        findings(&out).is_empty(),
        "no warning for an idle copy: {out:#?}"
    );
    m.apply(&umount(
        102 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    let rmdir = Call::Rmdir {
        path: PathArg::new(DOCKER_PATH),
    };
    let out = m.apply(&syscall(
        102 * SEC + MS,
        &task(900, "dockerd"),
        HOST,
        HOST,
        0,
        rmdir,
    ));
    assert_eq!(kinds(&out), vec![FindingKind::Resolved]);
}

/// The holder's cwd is inside: the warning names the container and the
/// holder before `docker rm`, and predicts the pinned filesystem.
#[test]
fn a_busy_copy_gets_a_removal_warning_naming_container_and_holder() {
    let mut m = model();
    m.apply(&web(ContainerState::Running));
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    m.apply(&stopped(101 * SEC));
    let mut inside = holder_with(None, None);
    inside.members[0].cwd_dev = Some(OVERLAY_DEV);
    let Input::Snapshot(mut s) = snapshot(101 * SEC + 20 * MS, vec![inside]) else {
        unreachable!()
    };
    s.alive = None;
    s.pins_scanned = false;
    let out = m.apply(&Input::Snapshot(s));
    let warning = findings(&out)
        .into_iter()
        .find(|f| f.kind == FindingKind::RemovalWarning)
        .expect("warning");
    assert_eq!(warning.consequence.kind, ConsequenceKind::FilesystemPinned);
    assert_eq!(
        warning.mount.owner.as_ref().map(|o| o.name.as_str()),
        Some("web")
    );
    assert_eq!(warning.holders[0].pid, Some(1234));
    assert!(
        warning.summary.contains("container web"),
        "{}",
        warning.summary
    );
    // docker rm then fails? On 6.18 it succeeds; the runtime says Removed and
    // the leak stays open with the container's name.
    m.apply(&umount(
        102 * SEC,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    let rmdir = Call::Rmdir {
        path: PathArg::new(DOCKER_PATH),
    };
    m.apply(&syscall(
        102 * SEC + MS,
        &task(900, "dockerd"),
        HOST,
        HOST,
        0,
        rmdir,
    ));
    m.apply(&Input::Container(ContainerEvent::Removed {
        at: 103 * SEC,
        runtime: "docker".into(),
        id: "3f9a1c0e7b2d5a6b".into(),
    }));
    let open = m.open_findings();
    assert_eq!(open.len(), 1);
    let owner = open[0]
        .mount
        .owner
        .as_ref()
        .expect("owner kept after removal");
    assert!(owner.removed);
}

/// A scan that started before the stop (of the host only, say) and is
/// absorbed after it does not decide the warning; the read asked for at the
/// stop does. Seen with 200 containers on a real dockerd: the stale scan
/// settled the warning as "nothing held" and none ever came.
#[test]
fn a_snapshot_taken_before_the_stop_does_not_decide_the_warning() {
    let mut m = model();
    m.apply(&web(ContainerState::Running));
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    m.apply(&stopped(101 * SEC));
    let Input::Snapshot(mut stale) = snapshot(100 * SEC + 900 * MS, vec![host_with_container()])
    else {
        unreachable!()
    };
    stale.alive = None;
    stale.pins_scanned = false;
    let out = m.apply(&Input::Snapshot(stale));
    assert!(
        !kinds(&out).contains(&FindingKind::RemovalWarning),
        "{:?}",
        kinds(&out)
    );
    let mut inside = holder_with(None, None);
    inside.members[0].cwd_dev = Some(OVERLAY_DEV);
    let Input::Snapshot(mut s) = snapshot(101 * SEC + 20 * MS, vec![inside]) else {
        unreachable!()
    };
    s.alive = None;
    s.pins_scanned = false;
    let out = m.apply(&Input::Snapshot(s));
    assert!(
        kinds(&out).contains(&FindingKind::RemovalWarning),
        "the read asked for at the stop decides: {:?}",
        kinds(&out)
    );
}

#[test]
fn on_el7_an_idle_copy_gets_a_warning_and_a_failed_removal() {
    let el7 = KernelFacts::from_release("3.10.0-1160.el7.x86_64", Some(false));
    let mut m = Model::new(ModelConfig {
        kernel: el7,
        ..ModelConfig::default()
    });
    m.apply(&web(ContainerState::Running));
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    m.apply(&stopped(101 * SEC));
    let out = m.apply(&snapshot(
        101 * SEC + 20 * MS,
        vec![host_with_container(), holder_with(None, None)],
    ));
    let warning = findings(&out)
        .into_iter()
        .find(|f| f.kind == FindingKind::RemovalWarning)
        .expect("warning");
    assert_eq!(warning.consequence.kind, ConsequenceKind::RemovalFailsEbusy);
    let out = m.apply(&Input::Container(ContainerEvent::RemovalFailed {
        at: 102 * SEC,
        runtime: "docker".into(),
        id: "3f9a1c0e7b2d5a6b".into(),
        message: "driver \"overlay2\" failed to remove root filesystem: device or resource busy"
            .into(),
    }));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::FailedRemoval]);
    assert_eq!(f[0].id, warning.id, "linked to the warning");
    assert!(f[0]
        .failed_call
        .as_ref()
        .unwrap()
        .message
        .as_deref()
        .unwrap()
        .contains("device or resource busy"));
}

#[test]
fn a_slave_holder_gets_no_warning() {
    let mut m = model();
    m.apply(&web(ContainerState::Running));
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, Some(7))],
    ));
    let out = m.apply(&stopped(101 * SEC));
    let mut out2 = m.apply(&snapshot(
        101 * SEC + 20 * MS,
        vec![host_with_container(), holder_with(None, Some(7))],
    ));
    out2.extend(out);
    assert!(findings(&out2).is_empty(), "{out2:#?}");
}

#[test]
fn a_pod_volume_names_the_pod() {
    let mut m = model();
    let vol = "/var/lib/kubelet/pods/6b1c2f3a-1111-2222-3333-444455556666/volumes/kubernetes.io~csi/pvc-1/mount";
    m.apply(&Input::Container(ContainerEvent::Seen {
        at: 50 * SEC,
        info: Box::new(ContainerInfo {
            runtime: "cri".into(),
            namespace: Some("k8s.io".into()),
            id: "c0ffee".into(),
            name: "nginx".into(),
            pod: Some(PodInfo {
                name: "web-7f9c".into(),
                namespace: "shop".into(),
                uid: "6b1c2f3a-1111-2222-3333-444455556666".into(),
                container: Some("nginx".into()),
            }),
            ..ContainerInfo::default()
        }),
    }));
    let vdev = Dev { major: 7, minor: 0 };
    let mut host = host_base();
    host.push(mount(60, vdev, vol, "ext4", Some(9), None));
    let mut holder = host_base();
    holder.push(mount(61, vdev, vol, "ext4", None, None));
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![ns(HOST, host, vec![]), ns(HOLDER, holder, vec![ntpd()])],
    ));
    let f = findings(&out);
    let owner = f[0].mount.owner.as_ref().expect("owner");
    let pod = owner.pod.as_ref().unwrap();
    assert_eq!(
        (
            pod.namespace.as_str(),
            pod.name.as_str(),
            pod.container.as_deref()
        ),
        ("shop", "web-7f9c", None)
    );
    assert!(
        f[0].summary.starts_with("pod shop/web-7f9c volume at"),
        "{}",
        f[0].summary
    );
}

#[test]
fn an_inventory_forgets_containers_that_are_gone() {
    let mut m = model();
    m.apply(&web(ContainerState::Running));
    m.apply(&Input::Container(ContainerEvent::Inventory {
        at: 60 * SEC,
        runtime: "docker".into(),
        ids: vec![],
    }));
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    assert!(findings(&out)[0].mount.owner.is_none());
}

#[test]
fn check_says_held_only_when_removal_would_fail_or_pin() {
    let mut m = model();
    m.apply(&web(ContainerState::Running));
    m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder_with(None, None)],
    ));
    let idle = m
        .check_container("docker", "3f9a1c0e7b2d5a6b")
        .expect("known");
    assert_eq!((idle.filesystems, idle.held), (1, false));
    assert_eq!(
        idle.findings[0].consequence.kind,
        ConsequenceKind::DetachedOnRemoval
    );
    let mut busy = holder_with(None, None);
    busy.members[0].cwd_dev = Some(OVERLAY_DEV);
    m.apply(&snapshot(101 * SEC, vec![host_with_container(), busy]));
    let held = m.check_path(&DOCKER_PATH.into()).expect("known path");
    assert!(held.held);
    assert_eq!(held.findings[0].kind, FindingKind::RemovalWarning);
    assert!(m.check_container("docker", "nope").is_none());
    assert!(m
        .check_path(&"/var/lib/docker/overlay2/nope/merged".into())
        .is_none());
}

/// `mountleak check web` after `docker stop`: the overlay is gone from every
/// table, a holder's cwd keeps it, and the upper directory's inode says it
/// was web's.
#[test]
fn a_detached_overlay_is_tied_to_its_container_by_the_upper_dir() {
    let mut m = model();
    let Input::Container(ContainerEvent::Seen { at, mut info }) = web(ContainerState::Stopped)
    else {
        unreachable!()
    };
    info.upper_dir = Some((
        Dev {
            major: 254,
            minor: 0,
        },
        777,
    ));
    m.apply(&Input::Container(ContainerEvent::Seen { at, info }));
    let pin = Pin {
        dev: OVERLAY_DEV,
        process: ntpd(),
        ns: HOLDER,
        how: PinKind::Cwd,
        link: "/".into(),
        fstype: Some("overlay".into()),
        backing_file: None,
        root_ino: Some(777),
    };
    let Input::Snapshot(mut s) = snapshot(
        100 * SEC,
        vec![
            ns(HOST, host_base(), vec![]),
            ns(HOLDER, host_base(), vec![ntpd()]),
        ],
    ) else {
        unreachable!()
    };
    s.pins = vec![pin];
    m.apply(&Input::Snapshot(s));
    let report = m
        .check_container("docker", "3f9a1c0e7b2d5a6b")
        .expect("known");
    assert!(report.held);
    let f = &report.findings[0];
    assert_eq!(f.mount.path.as_bytes(), DOCKER_PATH.as_bytes());
    assert_eq!(f.mount.owner.as_ref().map(|o| o.name.as_str()), Some("web"));
    assert_eq!(f.holders[0].hold, HoldKind::Cwd);
}

/// A slave copy receives the host's umount, but a cwd inside makes that
/// umount fail with "target is busy": a risk before it happens.
#[test]
fn a_busy_slave_copy_is_a_risk_because_the_umount_will_fail() {
    let mut m = model();
    let mut holder = holder_with(None, Some(7));
    holder.members[0].cwd_dev = Some(OVERLAY_DEV);
    let out = m.apply(&snapshot(100 * SEC, vec![host_with_container(), holder]));
    let f = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Risk], "{out:#?}");
    let h = &f[0].holders[0];
    assert_eq!(
        (h.propagation, h.receives_host_umounts),
        ("slave", Some(true))
    );
    assert_eq!(h.busy, vec!["cwd of pid 1234 (ntpd) is inside".to_string()]);
    assert_eq!(f[0].consequence.kind, ConsequenceKind::RemovalFailsEbusy);
    assert!(
        f[0].consequence.text.contains("target is busy"),
        "{}",
        f[0].consequence.text
    );
    assert!(
        f[0].summary
            .contains("receives the host's umounts but is busy"),
        "{}",
        f[0].summary
    );
}

/// Thousands of short-lived namespaces copying one overlay: the finding is
/// re-announced at most once a second, and lists at most MAX_HOLDERS.
#[test]
fn holder_churn_is_coalesced_and_capped() {
    let mut m = model();
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    let mut emitted = 0;
    for i in 0..200u64 {
        let t = 20 * SEC + i * 10 * MS;
        let pid = 5000 + i as u32;
        let mut out = m.apply(&unshare(t, &task(pid, "job"), HOST, 4026540000 + i));
        out.extend(m.apply(&make(
            t + 1000,
            &task(pid, "job"),
            4026540000 + i,
            "/",
            MS_REC | MS_PRIVATE,
        )));
        out.extend(m.apply(&Input::Tick { now: t + 5 * MS }));
        emitted += findings(&out).len();
    }
    let out = m.apply(&Input::Tick { now: 30 * SEC });
    emitted += findings(&out).len();
    // 200 new holders over 2 s (each ripe 2 s after its unshare): a handful of
    // announcements, not 200.
    assert!(emitted <= 6, "{emitted} announcements");
    let f = m.open_findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].holders.len(), crate::finding::MAX_HOLDERS);
    assert_eq!(f[0].holders.len() + f[0].more_holders, 200);
}

/// Docker's overlay2 mounts through a helper that chdirs into its home and
/// passes a relative target; the shell cannot resolve it once the helper is
/// gone. The model asks for the host's table instead of guessing.
#[test]
fn a_relative_mount_target_in_the_host_asks_for_a_rescan() {
    let mut m = model();
    m.apply(&snapshot(
        10 * SEC,
        vec![ns(
            HOST,
            host_base(),
            vec![process(900, "dockerd", SEC, "/")],
        )],
    ));
    let out = m.apply(&mount_call(
        11 * SEC,
        &task(950, "dockerd"),
        HOST,
        "0f1e2d3c/merged",
        "overlay",
    ));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Rescan { namespaces, .. } if namespaces == &vec![HOST])),
        "{out:?}"
    );
    // A running container the model has no mount for: same.
    let out = m.apply(&web(ContainerState::Running));
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Rescan {
                reason: "a container's mounts are not known yet",
                ..
            }
        )),
        "{out:?}"
    );
    // Once the table shows it, the container's Seen asks nothing.
    m.apply(&snapshot(12 * SEC, vec![host_with_container()]));
    let out = m.apply(&web(ContainerState::Running));
    assert!(out.is_empty(), "{out:?}");
}

/// runc's init, seen by the probes: a new namespace (a copy of the host's),
/// the rootfs bound onto itself inside it, pivot_root, and the mount table
/// read that follows. None of it is a leak, not even for the few
/// milliseconds before pivot_root (CI once caught a leak reported then
/// resolved 16 ms later: the copy had been seen before the host's mount).
#[test]
fn a_runtime_binding_the_rootfs_in_its_new_namespace_is_not_a_leak() {
    let mut m = model();
    let runc = task(3000, "runc:[2:INIT]");
    // The host's own mount of the rootfs is not known yet (made through a
    // call the model could not place, its mount table not read again yet).
    m.apply(&snapshot(10 * SEC, vec![ns(HOST, host_base(), vec![])]));
    let t = 20 * SEC;
    let new_ns = Input::Syscall(SyscallEvent {
        start: t,
        end: t,
        task: task(2999, "runc:[1:CHILD]"),
        ns: HOST,
        ns_after: HOST,
        ret: 0,
        call: Call::NewTask {
            child: 3000,
            child_ns: OTHER,
            flags: CLONE_NEWNS,
        },
    });
    assert!(findings(&m.apply(&new_ns)).is_empty());
    let bind = Call::Mount {
        source: PathArg::new(DOCKER_PATH),
        target: PathArg::new(DOCKER_PATH),
        fstype: String::new(),
        flags: MS_BIND | MS_REC,
    };
    let out = m.apply(&syscall(t + MS, &runc, OTHER, OTHER, 0, bind));
    assert!(findings(&out).is_empty(), "the bind: {out:#?}");
    let pivot = Call::PivotRoot {
        new_root: PathArg::new("."),
        put_old: PathArg::new("."),
    };
    let out = m.apply(&syscall(t + 16 * MS, &runc, OTHER, OTHER, 0, pivot));
    assert!(findings(&out).is_empty(), "pivot_root: {out:#?}");
    let mut own = mount(90, OVERLAY_DEV, "/", "overlay", None, None);
    own.parent_id = 90;
    let container_ns = ns(
        OTHER,
        vec![own],
        vec![process(3000, "sh", t, "/system.slice/docker-abc.scope")],
    );
    let out = m.apply(&snapshot(
        t + 40 * MS,
        vec![host_with_container(), container_ns],
    ));
    assert!(findings(&out).is_empty(), "after the read: {out:#?}");
    let out = m.apply(&Input::Tick { now: t + 5 * SEC });
    assert!(findings(&out).is_empty(), "after the grace: {out:#?}");
}

/// The grace period above is for copies the probes saw being made; a copy
/// of a filesystem the host unmounted is a leak at once.
#[test]
fn a_young_copy_outliving_the_host_umount_is_a_leak_at_once() {
    let mut m = model();
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    ntpd_unshares(&mut m, 20 * SEC, MS_REC | MS_PRIVATE);
    let out = m.apply(&umount(
        20 * SEC + 100 * MS,
        &task(900, "dockerd"),
        HOST,
        DOCKER_PATH,
        0,
    ));
    assert_eq!(kinds(&out), vec![FindingKind::Leak], "{out:#?}");
}

/// The daemon reads /proc while events keep coming: a namespace made after
/// a full read began is missing from that read's list of live namespaces.
/// It must not be dropped as gone (its creation, by whom and when, would be
/// lost, and its risk found late or never).
#[test]
fn a_namespace_made_during_a_read_is_not_taken_for_gone() {
    let mut m = model();
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    ntpd_unshares(&mut m, 20 * SEC, MS_REC | MS_PRIVATE);
    // Began at 19.9 s, before the unshare; absorbed after it.
    let out = m.apply(&snapshot(20 * SEC - 100 * MS, vec![host_with_container()]));
    assert!(findings(&out).is_empty(), "{out:#?}");
    let out = m.apply(&Input::Tick { now: 23 * SEC });
    assert_eq!(kinds(&out), vec![FindingKind::Risk], "{out:#?}");
    let h = &findings(&out)[0].holders[0];
    assert_eq!((h.via, h.since_source), (Some("unshare"), "observed"));
}

/// A scan still running when the container stopped: it began before the
/// host's umount and the rmdir that detached the holder's copy, and arrives
/// after them. Its tables are older than what the events told, so they must
/// not undo it (on a real dockerd with 200 containers this printed a wrong
/// `resolved`, then a new finding for the same mount, for a quarter of the
/// stops). The namespaces are read again; a fresh read changes nothing.
#[test]
fn a_read_that_began_before_the_umount_does_not_undo_it() {
    let mut m = model();
    let mut holder = holder_with(None, None);
    let mut inside = process(1300, "sleep", 3 * SEC, "/system.slice/ntpd.service");
    inside.cwd_dev = Some(OVERLAY_DEV);
    holder.members.push(inside.clone());
    let out = m.apply(&snapshot(
        100 * SEC,
        vec![host_with_container(), holder.clone()],
    ));
    assert_eq!(kinds(&out), vec![FindingKind::Risk]);
    let id = findings(&out)[0].id.clone();

    let dockerd = task(900, "dockerd");
    let out = m.apply(&umount(101 * SEC, &dockerd, HOST, DOCKER_PATH, 0));
    assert_eq!(kinds(&out), vec![FindingKind::Leak]);
    let rmdir = Call::Rmdir {
        path: PathArg::new(DOCKER_PATH),
    };
    let out = m.apply(&syscall(101 * SEC + MS, &dockerd, HOST, HOST, 0, rmdir));
    let pinned = findings(&out);
    assert_eq!(kinds(&out), vec![FindingKind::Leak], "{out:#?}");
    assert_eq!(pinned[0].holders[0].pid, Some(1300));

    // Began at 100.5 s: the host still had the mount, the holder its copy.
    let out = m.apply(&snapshot(
        100 * SEC + 500 * MS,
        vec![host_with_container(), holder.clone()],
    ));
    assert!(
        findings(&out).is_empty(),
        "the old read changes nothing: {out:#?}"
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Rescan { namespaces, .. }
            if namespaces.contains(&HOST) && namespaces.contains(&HOLDER))),
        "and both tables are read again: {out:#?}"
    );
    assert_eq!(m.stats().stale_tables, 2);

    // The fresh read: no mount anywhere, the process still inside.
    let mut after = ns(HOLDER, host_base(), vec![ntpd(), inside]);
    after.members[1].cwd_dev = Some(OVERLAY_DEV);
    let out = m.apply(&snapshot(
        102 * SEC,
        vec![ns(HOST, host_base(), vec![]), after],
    ));
    assert!(findings(&out).is_empty(), "{out:#?}");
    assert_eq!(m.open_findings()[0].id, id, "one story, one id");
}

/// Only the filesystems an event changed since a read began are held back
/// from that read: on a busy node (containers mounted all the time) the
/// host's table must still teach the model the others.
#[test]
fn a_read_older_than_one_mount_still_teaches_the_rest() {
    let mut m = model();
    m.apply(&snapshot(10 * SEC, vec![host_with_container()]));
    assert_eq!(m.container_fs_count(), 1);
    let other = "/var/lib/docker/overlay2/5e6f7a8b/merged";
    m.apply(&mount_call(
        20 * SEC,
        &task(900, "dockerd"),
        HOST,
        other,
        "overlay",
    ));
    // Began before that mount; shows a third container the model never saw.
    let third = "/var/lib/docker/overlay2/9c0d1e2f/merged";
    let mut mounts = host_base();
    mounts.push(container_mount(Some(7), None));
    mounts.push(mount(
        41,
        Dev {
            major: 0,
            minor: 60,
        },
        third,
        "overlay",
        Some(8),
        None,
    ));
    m.apply(&snapshot(20 * SEC - MS, vec![ns(HOST, mounts, vec![])]));
    assert_eq!(
        m.container_fs_count(),
        3,
        "the third is learned, the mounted one kept"
    );
}
