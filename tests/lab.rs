//! Self-tests of the lab in `support`: when these fail, the leak tests'
//! results mean nothing. They check the lab's claims against the kernel
//! (/proc/PID/mountinfo, sysfs), not against the lab's own bookkeeping.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{self, Lab, Propagation};

/// The same path as seen from inside the mount namespace of `pid`.
fn inside(pid: u32, path: &Path) -> PathBuf {
    Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap())
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn lab_has_its_own_namespace_with_shared_tmpfs_trees() {
    let lab = Lab::new();
    assert_ne!(lab.host_ns(), support::mnt_ns(std::process::id()));
    let mountinfo = fs::read_to_string(format!("/proc/{}/mountinfo", lab.host_pid())).unwrap();
    for tree in support::TREES {
        // mountinfo: id parent dev root POINT options [optional...] - fstype ...
        let line = mountinfo
            .lines()
            .rfind(|line| line.split(' ').nth(4) == Some(tree))
            .unwrap_or_else(|| panic!("{tree} is not a mount point in the lab:\n{mountinfo}"));
        let (fields, fs_fields) = line.split_once(" - ").unwrap();
        assert!(fs_fields.starts_with("tmpfs "), "{tree}: {line}");
        assert!(fields.contains(" shared:"), "{tree} is not shared: {line}");
    }
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn overlay_is_mounted_in_the_lab_only() {
    let lab = Lab::new();
    let merged = lab.overlay("c1");
    assert_eq!(merged, Path::new("/var/lib/docker/overlay2/c1/merged"));
    assert!(support::has_mount(lab.host_pid(), &merged));
    assert!(!support::has_mount(std::process::id(), &merged));
    let hello = fs::read_to_string(inside(lab.host_pid(), &merged.join("hello"))).unwrap();
    assert_eq!(
        hello, "hello\n",
        "the lower layer shows through the overlay"
    );
}

/// Mounts an overlay, starts a holder with `propagation`, umounts the
/// overlay in the lab and says whether the holder's copy went too.
fn umount_reaches_holder(propagation: Propagation) -> bool {
    let mut lab = Lab::new();
    let merged = lab.overlay("c1");
    let holder = lab.holder(propagation, None);
    assert_ne!(holder.ns, lab.host_ns());
    assert_eq!(holder.ns, support::mnt_ns(holder.pid));
    assert!(
        support::has_mount(holder.pid, &merged),
        "a new holder starts with a copy"
    );
    lab.umount(&merged).unwrap();
    assert!(!support::has_mount(lab.host_pid(), &merged));
    !support::has_mount(holder.pid, &merged)
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn private_holder_keeps_its_copy_after_the_lab_umounts() {
    assert!(!umount_reaches_holder(Propagation::Private));
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn slave_holder_loses_its_copy_when_the_lab_umounts() {
    assert!(umount_reaches_holder(Propagation::Slave));
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn shared_holder_loses_its_copy_when_the_lab_umounts() {
    assert!(umount_reaches_holder(Propagation::Shared));
}

/// PLATFORM.md: a slave holder whose cwd is inside the mount makes the host
/// umount fail with "target is busy"; the lab's `cwd` option must produce
/// exactly that, and stopping the holder must end it.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn holder_cwd_inside_a_mount_makes_the_umount_busy() {
    let mut lab = Lab::new();
    let merged = lab.overlay("c1");
    let holder = lab.holder(Propagation::Slave, Some(&merged));
    assert_eq!(
        fs::read_link(format!("/proc/{}/cwd", holder.pid)).unwrap(),
        merged
    );
    let busy = lab.umount(&merged).unwrap_err();
    assert!(busy.stderr.contains("target is busy"), "{busy}");
    lab.stop(holder);
    lab.umount(&merged).unwrap();
}

#[test]
#[ignore = "needs root: creates mounts, namespaces and loop devices"]
fn loop_volume_is_mounted_in_the_lab_and_detached_on_cleanup() {
    let mut lab = Lab::new();
    let volume = lab.loop_ext4("pod-0001", "pvc-1");
    assert_eq!(
        volume.mountpoint,
        Path::new("/var/lib/kubelet/pods/pod-0001/volumes/kubernetes.io~csi/pvc-1/mount")
    );
    assert!(support::has_mount(lab.host_pid(), &volume.mountpoint));
    assert!(!support::has_mount(std::process::id(), &volume.mountpoint));
    // A private holder keeps the filesystem in use after the lab lets go:
    // cleanup has to cope with exactly the state the leak tests create.
    let holder = lab.holder(Propagation::Private, None);
    lab.umount(&volume.mountpoint).unwrap();
    assert!(support::has_mount(holder.pid, &volume.mountpoint));
    let image = volume.image.to_string_lossy().into_owned();
    assert_eq!(
        support::loop_backing_file(&volume.device).as_deref(),
        Some(&*image)
    );

    drop(lab);
    // Another test's lab may take the same /dev/loopN as soon as this one is
    // dropped, so what must be gone is this image behind it.
    support::wait_until("the lab's loop device to detach", || {
        support::loop_backing_file(&volume.device).is_none_or(|file| !file.starts_with(&image))
    });
    assert!(!volume.image.exists());
}

/// The leak tests run the real binary inside the lab; `cargo xtask test`
/// builds it before the tests.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn mountleak_binary_runs_inside_the_lab() {
    let lab = Lab::new();
    support::check(lab.mountleak().arg("--help")).unwrap();
}
