//! A namespace's mount table through listmount(2)/statmount(2) (Linux
//! 6.11+: `mnt_id_req.mnt_ns_id`), for every namespace the kernel lets us
//! name by id: those no process is in, and, being far cheaper than
//! mountinfo, the others too.
//!
//! The answer is shaped like a mountinfo line: the ids are the reused
//! 32-bit ones mountinfo shows (`mnt_id_old`). Superblock options are not
//! asked for: formatting them (overlay's long `lowerdir=` lists) is most of
//! the cost of an overlay's mountinfo line (7.2 against 1.7 µs per mount
//! measured here), and nothing judges by them.
//!
//! Paths: for our own namespace, relative to our root, as mountinfo shows
//! them; for another namespace, relative to that namespace's root, which is
//! what mountinfo shows through a member that is not chrooted.

use std::io;

use monitor_model::{Dev, MountEntry, PathBytes};

use super::sys::{self, Statmount};

const WANT: u64 = sys::STATMOUNT_SB_BASIC
    | sys::STATMOUNT_MNT_BASIC
    | sys::STATMOUNT_MNT_ROOT
    | sys::STATMOUNT_MNT_POINT
    | sys::STATMOUNT_FS_TYPE
    | sys::STATMOUNT_FS_SUBTYPE
    | sys::STATMOUNT_SB_SOURCE;

// Propagation flags in `mnt_propagation` (include/uapi/linux/mount.h).
const MS_UNBINDABLE: u64 = 1 << 17;
const MS_SLAVE: u64 = 1 << 19;
const MS_SHARED: u64 = 1 << 20;

/// Every mount of namespace `mnt_ns_id`. Mounts unmounted between the list
/// and the stat (ENOENT) are skipped.
pub fn read_table(mnt_ns_id: u64) -> io::Result<Vec<MountEntry>> {
    let ids = sys::listmount(mnt_ns_id)?;
    let mut out = Vec::with_capacity(ids.len());
    let mut sm = Statmount::default();
    for id in ids {
        match sm.query(id, mnt_ns_id, WANT) {
            Ok(()) => out.push(to_entry(&sm)),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// `NSFS_MAGIC` (include/uapi/linux/magic.h): an nsfs mount names a
/// namespace, possibly one no process is in.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// What the cheap first look (no strings) tells of a mount.
#[derive(Clone, Copy, Debug)]
pub struct Basics {
    pub dev: Dev,
}

/// Part of namespace `mnt_ns_id`'s table: the mounts `wanted` picks by
/// their [`Basics`], plus the top of the tree, nsfs mounts, and whatever
/// is mounted on a picked mount (so "something is mounted on the copy"
/// stays true). Returns them with the device of every mount, picked or not.
///
/// The first look costs a third of a full statmount (measured here: 0.6–0.8
/// against 2.8 µs per mount), so a namespace of 300 copies of which one
/// matters costs about a third of reading it.
pub fn read_table_scoped(
    mnt_ns_id: u64,
    wanted: impl Fn(&Basics) -> bool,
) -> io::Result<(Vec<MountEntry>, Vec<Dev>)> {
    const FIRST: u64 = sys::STATMOUNT_SB_BASIC | sys::STATMOUNT_MNT_BASIC;
    let ids = sys::listmount(mnt_ns_id)?;
    let mut sm = Statmount::default();
    // (unique id, old id, old parent id, picked)
    let mut seen: Vec<(u64, u32, u32, bool)> = Vec::with_capacity(ids.len());
    let mut devs = Vec::with_capacity(ids.len());
    for id in ids {
        match sm.query(id, mnt_ns_id, FIRST) {
            Ok(()) => {
                let f = sm.fixed();
                let dev = Dev {
                    major: f.sb_dev_major,
                    minor: f.sb_dev_minor,
                };
                devs.push(dev);
                let picked = f.sb_magic == NSFS_MAGIC || wanted(&Basics { dev });
                seen.push((id, f.mnt_id_old, f.mnt_parent_id_old, picked));
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(err) => return Err(err),
        }
    }
    // The top of the tree (its parent is itself or outside the table) is
    // what the namespace's `/` is: read, but not a reason to read what is
    // mounted on it (everything is).
    let present: std::collections::HashSet<u32> = seen.iter().map(|m| m.1).collect();
    let top: Vec<bool> = seen
        .iter()
        .map(|m| m.2 == m.1 || !present.contains(&m.2))
        .collect();
    // What is mounted on a picked mount, and on that, to the end.
    loop {
        let picked: std::collections::HashSet<u32> = seen
            .iter()
            .zip(&top)
            .filter(|(m, &top)| m.3 && !top)
            .map(|(m, _)| m.1)
            .collect();
        let mut grew = false;
        for m in seen.iter_mut().filter(|m| !m.3) {
            if picked.contains(&m.2) {
                m.3 = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    for (m, top) in seen.iter_mut().zip(top) {
        m.3 |= top;
    }
    let mut out = Vec::new();
    for &(id, ..) in seen.iter().filter(|m| m.3) {
        match sm.query(id, mnt_ns_id, WANT) {
            Ok(()) => out.push(to_entry(&sm)),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(err) => return Err(err),
        }
    }
    Ok((out, devs))
}

fn to_entry(sm: &Statmount) -> MountEntry {
    let f = sm.fixed();
    let text = |bit, off| sm.string(bit, off).map(<[u8]>::to_vec).unwrap_or_default();

    let mut fstype = String::from_utf8_lossy(&text(sys::STATMOUNT_FS_TYPE, f.fs_type)).into_owned();
    let subtype = text(sys::STATMOUNT_FS_SUBTYPE, f.fs_subtype);
    if !subtype.is_empty() {
        fstype.push('.');
        fstype.push_str(&String::from_utf8_lossy(&subtype));
    }
    // mountinfo prints "none" when a mount has no source (mangle(...) of
    // r->mnt_devname ?: "none").
    let source = match sm.string(sys::STATMOUNT_SB_SOURCE, f.sb_source) {
        Some(s) if !s.is_empty() => s.to_vec(),
        _ => b"none".to_vec(),
    };

    let prop = f.mnt_propagation;
    MountEntry {
        mount_id: u64::from(f.mnt_id_old),
        parent_id: u64::from(f.mnt_parent_id_old),
        dev: Dev {
            major: f.sb_dev_major,
            minor: f.sb_dev_minor,
        },
        root: PathBytes(text(sys::STATMOUNT_MNT_ROOT, f.mnt_root)),
        mount_point: PathBytes(text(sys::STATMOUNT_MNT_POINT, f.mnt_point)),
        fstype,
        source: PathBytes(source),
        shared: (prop & MS_SHARED != 0).then_some(f.mnt_peer_group as u32),
        master: (prop & MS_SLAVE != 0).then_some(f.mnt_master as u32),
        unbindable: prop & MS_UNBINDABLE != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::mountinfo;
    use std::os::fd::AsFd;

    /// For our own namespace both sources must tell the same story. Skips
    /// (passes) where the kernel has no statmount with namespace ids or we
    /// lack the privilege.
    #[test]
    fn agrees_with_mountinfo_on_own_namespace() {
        let ns = sys::open(std::path::Path::new("/proc/self/ns/mnt"), libc::O_RDONLY).unwrap();
        let id = match sys::mntns_id(ns.as_fd()) {
            Ok(id) => id,
            Err(err) => return eprintln!("skipped: NS_GET_MNTNS_ID: {err}"),
        };
        let table = match read_table(id) {
            Ok(t) => t,
            Err(err) => return eprintln!("skipped: statmount: {err}"),
        };
        let text = std::fs::read("/proc/self/mountinfo").unwrap();
        let info = mountinfo::parse(&text).into_entries();
        assert_eq!(table.len(), info.len(), "{table:#?}\n{info:#?}");
        for m in &info {
            let s = table.iter().find(|s| s.mount_id == m.mount_id).unwrap();
            assert_eq!(s, m);
        }
    }
}
