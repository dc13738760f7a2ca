//! A namespace's mount table through listmount(2)/statmount(2), for mount
//! namespaces no process is in (Linux 6.11+: `mnt_id_req.mnt_ns_id`).
//!
//! The answer is shaped like a mountinfo line: the ids are the reused
//! 32-bit ones mountinfo shows (`mnt_id_old`), the super options are built
//! the way `show_mountinfo()` prints them (fs/proc_namespace.c).

use std::io;

use monitor_model::{Dev, MountEntry, PathBytes};

use super::sys::{self, Statmount};

const WANT: u64 = sys::STATMOUNT_SB_BASIC
    | sys::STATMOUNT_MNT_BASIC
    | sys::STATMOUNT_MNT_ROOT
    | sys::STATMOUNT_MNT_POINT
    | sys::STATMOUNT_FS_TYPE
    | sys::STATMOUNT_MNT_OPTS
    | sys::STATMOUNT_FS_SUBTYPE
    | sys::STATMOUNT_SB_SOURCE;

// Propagation flags in `mnt_propagation` (include/uapi/linux/mount.h).
const MS_UNBINDABLE: u64 = 1 << 17;
const MS_SLAVE: u64 = 1 << 19;
const MS_SHARED: u64 = 1 << 20;

// Superblock flags in `sb_flags`, and how show_sb_opts() prints them.
const SB_FLAG_NAMES: &[(u32, &str)] = &[
    (16, ",sync"),
    (128, ",dirsync"),
    (64, ",mand"),
    (1 << 25, ",lazytime"),
];
const SB_RDONLY: u32 = 1;

/// Every mount of namespace `mnt_ns_id`. Mounts unmounted between the list
/// and the stat (ENOENT) are skipped.
pub fn read_table(mnt_ns_id: u64) -> io::Result<Vec<MountEntry>> {
    let ids = sys::listmount(mnt_ns_id)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match sys::statmount(id, mnt_ns_id, WANT) {
            Ok(sm) => out.push(to_entry(&sm)),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

fn to_entry(sm: &Statmount) -> MountEntry {
    let f = &sm.fixed;
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

    let mut super_options = if f.sb_flags & SB_RDONLY != 0 {
        "ro"
    } else {
        "rw"
    }
    .to_string();
    for &(flag, name) in SB_FLAG_NAMES {
        if f.sb_flags & flag != 0 {
            super_options.push_str(name);
        }
    }
    let mut super_options = super_options.into_bytes();
    let opts = text(sys::STATMOUNT_MNT_OPTS, f.mnt_opts);
    if !opts.is_empty() {
        super_options.push(b',');
        super_options.extend_from_slice(&opts);
    }

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
        super_options: PathBytes(super_options),
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
