//! Pins: processes whose cwd, root or open file lives on a filesystem that
//! no mount table shows any more.
//!
//! That is what a lazily unmounted (`umount -l`) or rmdir-detached copy
//! looks like on Linux >= 3.18: the mount is gone from every mountinfo,
//! `readlink /proc/PID/cwd` reads a harmless-looking path, but the
//! filesystem stays alive and keeps its disk space and its block device busy
//! (PLATFORM.md, "What actually fails"). Only device numbers tell.
//!
//! Kept to what can hold container storage: overlayfs (anonymous device,
//! so recognised by its statfs magic) and block-device filesystems
//! (major != 0). Pseudo filesystems, memfd, sockets and pipes are not pins.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use monitor_model::{Dev, NsId, PathBytes, Pin, PinKind, ProcessInfo};

use super::process::{DeviceUse, ProcHandle};
use super::sys;

/// statfs(2) magics (include/uapi/linux/magic.h) and the names mountinfo
/// uses for them.
const MAGICS: &[(u64, &str)] = &[
    (OVERLAYFS_SUPER_MAGIC, "overlay"),
    (0xEF53, "ext4"), // ext2/ext3/ext4 share it
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0xF2F5_2010, "f2fs"),
    (0x7371_7368, "squashfs"),
    (0xE0F5_E1E2, "erofs"),
    (0x4d44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x9660, "iso9660"),
    (0x3153_464a, "jfs"),
    (0x5265_4973, "reiserfs"),
    (0x2FC1_2FC1, "zfs"),
];
const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

/// One process whose devices were collected.
pub(crate) struct Candidate {
    pub ns: NsId,
    pub info: ProcessInfo,
    pub devices: DeviceUse,
}

/// What is known about a device no table shows.
#[derive(Clone)]
struct Verdict {
    fstype: Option<String>,
    backing_file: Option<PathBytes>,
}

/// The pins among `candidates`, given every device some mount table shows.
/// Processes that exited since their devices were read are skipped.
pub(crate) fn find(candidates: &[Candidate], shown: &BTreeSet<Dev>) -> Vec<Pin> {
    let mut verdicts: HashMap<Dev, Option<Verdict>> = HashMap::new();
    let mut pins = Vec::new();
    for cand in candidates {
        let uses = uses(&cand.devices);
        if uses.iter().all(|(_, dev)| shown.contains(dev)) {
            continue;
        }
        // Re-open and check it is still the same process before naming it.
        let Ok(handle) = ProcHandle::open(cand.info.pid) else {
            continue;
        };
        let mut process = cand.info.clone();
        let same = handle
            .basics(super::clock::ticks_per_second())
            .is_ok_and(|b| b.complete(&mut process));
        if !same {
            continue;
        }
        for (how, dev) in uses {
            if shown.contains(&dev) {
                continue;
            }
            let rel = rel_path(how);
            let verdict = verdicts
                .entry(dev)
                .or_insert_with(|| judge(dev, &handle.path(rel.as_bytes())))
                .clone();
            let Some(verdict) = verdict else { continue };
            let root_ino = match how {
                PinKind::Cwd | PinKind::Root => {
                    detached_root_ino(&handle.path(rel.as_bytes()), dev)
                }
                PinKind::Fd(_) => None,
            };
            pins.push(Pin {
                dev,
                process: process.clone(),
                ns: cand.ns,
                how,
                link: handle.link_of(&rel).unwrap_or_default(),
                fstype: verdict.fstype,
                backing_file: verdict.backing_file,
                root_ino,
            });
        }
    }
    pins
}

/// cwd, root, and the first fd on each device (one is enough to name the
/// holder; a process with 500 files open there is one pin per device).
fn uses(devices: &DeviceUse) -> Vec<(PinKind, Dev)> {
    let mut out = Vec::new();
    out.extend(devices.cwd.map(|d| (PinKind::Cwd, d)));
    out.extend(devices.root.map(|d| (PinKind::Root, d)));
    let mut seen = BTreeSet::new();
    for &(fd, dev) in &devices.fds {
        if seen.insert(dev) {
            out.push((PinKind::Fd(fd), dev));
        }
    }
    out
}

fn rel_path(how: PinKind) -> String {
    match how {
        PinKind::Cwd => "cwd".into(),
        PinKind::Root => "root".into(),
        PinKind::Fd(fd) => format!("fd/{fd}"),
    }
}

/// Whether a device no table shows is a pin, and what it is. `path` leads
/// to an object on it (statfs follows /proc's magic links).
fn judge(dev: Dev, path: &Path) -> Option<Verdict> {
    let magic = sys::statfs_magic(path).ok();
    if dev.major == 0 && magic != Some(OVERLAYFS_SUPER_MAGIC) {
        // Anonymous device that is not overlay: tmpfs, proc, memfd, ...
        return None;
    }
    let fstype = magic.map(|m| {
        MAGICS
            .iter()
            .find(|(known, _)| *known == m)
            .map(|(_, name)| (*name).to_string())
            .unwrap_or_else(|| format!("{m:#x}"))
    });
    Some(Verdict {
        fstype,
        backing_file: loop_backing_file(dev),
    })
}

/// The inode of the root of the detached mount a directory lives on.
/// `..` never leaves a detached mount (at its root it stays there), so
/// enough of them from the directory land on the root whatever the depth.
/// Checked to still be on `dev`.
fn detached_root_ino(dir: &Path, dev: Dev) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut up = dir.as_os_str().to_owned();
    for _ in 0..64 {
        up.push("/..");
    }
    let meta = std::fs::metadata(Path::new(&up)).ok()?;
    let at = sys::dev_of(meta.dev());
    (at == dev).then_some(meta.ino())
}

/// The file behind a loop device (sysfs-block(5): `loop/backing_file`).
fn loop_backing_file(dev: Dev) -> Option<PathBytes> {
    if dev.major == 0 {
        return None;
    }
    let path = format!(
        "/sys/dev/block/{}:{}/loop/backing_file",
        dev.major, dev.minor
    );
    let mut bytes = std::fs::read(path).ok()?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Some(PathBytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_use_per_device() {
        let a = Dev { major: 7, minor: 0 };
        let b = Dev {
            major: 0,
            minor: 60,
        };
        let d = DeviceUse {
            cwd: Some(a),
            root: Some(b),
            fds: vec![(3, a), (4, a), (5, b), (9, a)],
        };
        assert_eq!(
            uses(&d),
            vec![
                (PinKind::Cwd, a),
                (PinKind::Root, b),
                (PinKind::Fd(3), a),
                (PinKind::Fd(5), b)
            ]
        );
    }

    #[test]
    fn anonymous_devices_that_are_not_overlay_are_not_pins() {
        // /proc/self is on proc (major 0, not overlay).
        assert!(judge(
            Dev {
                major: 0,
                minor: 999_999
            },
            Path::new("/proc/self")
        )
        .is_none());
    }

    #[test]
    fn shown_devices_are_never_pins() {
        let me = ProcHandle::myself().unwrap();
        let devices = me.devices().unwrap();
        let basics = me.basics(super::super::clock::ticks_per_second()).unwrap();
        let info = ProcessInfo {
            pid: me.pid,
            start: basics.start,
            ..ProcessInfo::default()
        };
        let mut shown: BTreeSet<Dev> = devices.fds.iter().map(|&(_, d)| d).collect();
        shown.extend(devices.cwd);
        shown.extend(devices.root);
        let cand = Candidate {
            ns: 1,
            info,
            devices,
        };
        assert!(find(&[cand], &shown).is_empty());
    }
}
