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

use std::collections::HashSet;
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

/// One mount as the first look (no strings) sees it.
struct Look {
    /// The 64-bit id statmount takes.
    id: u64,
    /// The 32-bit ids mountinfo shows, its own and its parent's.
    old: u32,
    parent: u32,
    /// The top of the tree: its parent is itself or outside the table.
    top: bool,
    picked: bool,
}

/// Part of namespace `mnt_ns_id`'s table: the mounts of the devices
/// `wanted` picks, nsfs mounts, whatever is mounted on those (so "something
/// is mounted on the copy" stays true), and the top of the tree (what the
/// namespace's `/` is). Returns them with the device of every mount,
/// picked or not.
///
/// The first look costs a third of a full statmount (measured here: 0.6–0.8
/// against 2.8 µs per mount), so a namespace of 300 copies of which one
/// matters costs about a third of reading it.
pub fn read_table_scoped(
    mnt_ns_id: u64,
    wanted: impl Fn(&Dev) -> bool,
) -> io::Result<(Vec<MountEntry>, Vec<Dev>)> {
    const FIRST: u64 = sys::STATMOUNT_SB_BASIC | sys::STATMOUNT_MNT_BASIC;
    let ids = sys::listmount(mnt_ns_id)?;
    let mut sm = Statmount::default();
    let mut looks: Vec<Look> = Vec::with_capacity(ids.len());
    let mut devs = Vec::with_capacity(ids.len());
    for id in ids {
        match sm.query(id, mnt_ns_id, FIRST) {
            Ok(()) => {
                let f = sm.fixed();
                let dev = Dev {
                    major: f.sb_dev_major,
                    minor: f.sb_dev_minor,
                };
                looks.push(Look {
                    id,
                    old: f.mnt_id_old,
                    parent: f.mnt_parent_id_old,
                    top: false,
                    picked: f.sb_magic == NSFS_MAGIC || wanted(&dev),
                });
                devs.push(dev);
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(err) => return Err(err),
        }
    }
    let present: HashSet<u32> = looks.iter().map(|m| m.old).collect();
    for m in looks.iter_mut() {
        m.top = m.parent == m.old || !present.contains(&m.parent);
    }
    // What is mounted on a picked mount, and on that, to the end. Not on
    // the top: everything is.
    let mut spreading: HashSet<u32> = looks
        .iter()
        .filter(|m| m.picked && !m.top)
        .map(|m| m.old)
        .collect();
    let mut grew = true;
    while grew {
        grew = false;
        for m in looks.iter_mut() {
            if !m.picked && spreading.contains(&m.parent) {
                m.picked = true;
                spreading.insert(m.old);
                grew = true;
            }
        }
    }
    let mut out = Vec::new();
    for m in looks.iter().filter(|m| m.picked || m.top) {
        match sm.query(m.id, mnt_ns_id, WANT) {
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
