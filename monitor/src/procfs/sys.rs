//! Thin, safe wrappers over the syscalls and ioctls the scanner needs and
//! `libc` does not name: the nsfs ioctls (Linux 4.9–6.12) and
//! `listmount(2)`/`statmount(2)` (Linux 6.8, namespace ids since 6.11).
//!
//! Numbers and layouts are copied from the uapi headers cited beside each.
//! Every caller feature-detects by errno: ENOSYS (no syscall), ENOTTY or
//! EINVAL (no ioctl / unknown struct size), EPERM; nothing here is required.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// ---------------------------------------------------------------------------
// ioctl numbers: include/uapi/asm-generic/ioctl.h. powerpc, mips and sparc
// use another encoding; the walk simply reports ENOTTY there.

const IOC_READ: u32 = 2;

const fn io(ty: u32, nr: u32) -> u32 {
    (ty << 8) | nr
}

const fn ior(ty: u32, nr: u32, size: usize) -> u32 {
    (IOC_READ << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

// include/uapi/linux/nsfs.h
const NSIO: u32 = 0xb7;
/// Returns an fd for the user namespace that owns a namespace (Linux 4.9).
const NS_GET_USERNS: u32 = io(NSIO, 0x1);
/// The 64-bit id of a mount namespace, the one listmount/statmount take.
/// First published as `_IO(NSIO, 0x5)`, then fixed to `_IOR` before
/// listmount learned namespace ids (6.11); only the `_IOR` form is useful.
const NS_GET_MNTNS_ID: u32 = ior(NSIO, 0x5, size_of::<u64>());
/// Next/previous mount namespace by id, as a new fd (Linux 6.12, commit
/// a1d220d9dafa "nsfs: iterate through mount namespaces").
const NS_MNT_GET_NEXT: u32 = ior(NSIO, 11, size_of::<MntNsInfo>());
const NS_MNT_GET_PREV: u32 = ior(NSIO, 12, size_of::<MntNsInfo>());

/// `struct mnt_ns_info` (include/uapi/linux/nsfs.h, MNT_NS_INFO_SIZE_VER0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MntNsInfo {
    pub size: u32,
    pub nr_mounts: u32,
    pub mnt_ns_id: u64,
}

// ---------------------------------------------------------------------------
// listmount/statmount: include/uapi/linux/mount.h. 457/458 on every
// architecture with the unified syscall table (all but alpha and mips).

#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const SYS_STATMOUNT: libc::c_long = 457;
#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const SYS_LISTMOUNT: libc::c_long = 458;
#[cfg(target_arch = "mips64")]
const SYS_STATMOUNT: libc::c_long = 5457;
#[cfg(target_arch = "mips64")]
const SYS_LISTMOUNT: libc::c_long = 5458;
#[cfg(target_arch = "mips")]
const SYS_STATMOUNT: libc::c_long = 4457;
#[cfg(target_arch = "mips")]
const SYS_LISTMOUNT: libc::c_long = 4458;

/// `struct mnt_id_req`, second published version (MNT_ID_REQ_SIZE_VER1 = 32,
/// Linux 6.11): `mnt_ns_id` selects a namespace other than the caller's.
/// Linux 6.18 renamed `spare` to `mnt_ns_fd`; 0 there means "use the id".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
    mnt_ns_id: u64,
}
const MNT_ID_REQ_SIZE_VER1: u32 = 32;

/// `LSMT_ROOT`: list from the namespace's root mount.
const LSMT_ROOT: u64 = u64::MAX;

// statmount(2) request/answer mask bits.
pub const STATMOUNT_SB_BASIC: u64 = 0x0001;
pub const STATMOUNT_MNT_BASIC: u64 = 0x0002;
pub const STATMOUNT_MNT_ROOT: u64 = 0x0008;
pub const STATMOUNT_MNT_POINT: u64 = 0x0010;
pub const STATMOUNT_FS_TYPE: u64 = 0x0020;
pub const STATMOUNT_FS_SUBTYPE: u64 = 0x0100;
pub const STATMOUNT_SB_SOURCE: u64 = 0x0200;

/// The fixed part of `struct statmount` as of Linux 6.18 (512 bytes; the
/// strings follow at `str`, i.e. at offset 512). New kernels carve fields out
/// of `__spare2`, so the size and the string base do not move.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StatmountFixed {
    pub size: u32,
    pub mnt_opts: u32,
    pub mask: u64,
    pub sb_dev_major: u32,
    pub sb_dev_minor: u32,
    pub sb_magic: u64,
    pub sb_flags: u32,
    pub fs_type: u32,
    pub mnt_id: u64,
    pub mnt_parent_id: u64,
    pub mnt_id_old: u32,
    pub mnt_parent_id_old: u32,
    pub mnt_attr: u64,
    pub mnt_propagation: u64,
    pub mnt_peer_group: u64,
    pub mnt_master: u64,
    pub propagate_from: u64,
    pub mnt_root: u32,
    pub mnt_point: u32,
    pub mnt_ns_id: u64,
    pub fs_subtype: u32,
    pub sb_source: u32,
    pub opt_num: u32,
    pub opt_array: u32,
    pub opt_sec_num: u32,
    pub opt_sec_array: u32,
    pub supported_mask: u64,
    pub mnt_uidmap_num: u32,
    pub mnt_uidmap: u32,
    pub mnt_gidmap_num: u32,
    pub mnt_gidmap: u32,
    spare2: [u64; 43],
}
const _: () = assert!(size_of::<StatmountFixed>() == 512);
const _: () = assert!(std::mem::align_of::<StatmountFixed>() <= std::mem::align_of::<u64>());

/// A reusable statmount(2) answer buffer: the fixed part, then the strings.
/// One per table read, so a namespace of 300 mounts costs one allocation,
/// not 300 zeroed 4 KiB ones.
pub struct Statmount {
    /// u64 words keep the buffer aligned for [`StatmountFixed`].
    buf: Vec<u64>,
}

impl Default for Statmount {
    fn default() -> Self {
        Statmount {
            buf: vec![0u64; 512], // 4 KiB; grows on EOVERFLOW (long paths)
        }
    }
}

impl Statmount {
    /// statmount(2) of one mount (a 64-bit unique id from [`listmount`]) in
    /// namespace `mnt_ns_id`, into this buffer.
    pub fn query(&mut self, mnt_id: u64, mnt_ns_id: u64, mask: u64) -> io::Result<()> {
        loop {
            let req = MntIdReq {
                size: MNT_ID_REQ_SIZE_VER1,
                mnt_id,
                param: mask,
                mnt_ns_id,
                ..MntIdReq::default()
            };
            let bytes = self.buf.len() * size_of::<u64>();
            // SAFETY: `buf` is writable for `bytes` bytes; `req` is valid.
            let rc = unsafe {
                libc::syscall(
                    SYS_STATMOUNT,
                    &req as *const MntIdReq,
                    self.buf.as_mut_ptr(),
                    bytes,
                    0u32,
                )
            };
            match errno_result(rc) {
                // The kernel wrote the whole fixed part (the buffer is
                // larger) and `size` bounds the strings after it, so nothing
                // of an earlier answer is ever read.
                Ok(_) => return Ok(()),
                Err(err)
                    if err.raw_os_error() == Some(libc::EOVERFLOW)
                        && self.buf.len() < (1 << 17) =>
                {
                    let grown = self.buf.len() * 4;
                    self.buf.resize(grown, 0);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The fixed part of the last answer.
    pub fn fixed(&self) -> &StatmountFixed {
        // SAFETY: `buf` is at least 512 bytes and aligned for u64, which is
        // StatmountFixed's alignment; it is plain integers (any bit pattern
        // is valid), and the borrow keeps `buf` alive and unchanged.
        unsafe { &*self.buf.as_ptr().cast::<StatmountFixed>() }
    }

    fn strings(&self) -> &[u8] {
        const FIXED: usize = size_of::<StatmountFixed>();
        let bytes = self.buf.len() * size_of::<u64>();
        // SAFETY: reinterpreting initialised u64s as bytes.
        let all = unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), bytes) };
        let used = (self.fixed().size as usize).clamp(FIXED, bytes);
        &all[FIXED..used]
    }

    /// The NUL-terminated string at `offset` of the last answer, if `bit` is
    /// in its mask.
    pub fn string(&self, bit: u64, offset: u32) -> Option<&[u8]> {
        if self.fixed().mask & bit == 0 {
            return None;
        }
        let tail = self.strings().get(offset as usize..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        Some(&tail[..end])
    }
}

fn errno_result(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The mount ids in namespace `mnt_ns_id` (0: the caller's), all of them,
/// paging through the kernel's answer.
pub fn listmount(mnt_ns_id: u64) -> io::Result<Vec<u64>> {
    const BATCH: usize = 512;
    let mut ids = Vec::new();
    let mut last = 0u64;
    loop {
        let req = MntIdReq {
            size: MNT_ID_REQ_SIZE_VER1,
            mnt_id: LSMT_ROOT,
            param: last,
            mnt_ns_id,
            ..MntIdReq::default()
        };
        let mut batch = vec![0u64; BATCH];
        // SAFETY: `req` is a valid mnt_id_req of the size it claims and
        // `batch` has room for BATCH ids.
        let n = errno_result(unsafe {
            libc::syscall(
                SYS_LISTMOUNT,
                &req as *const MntIdReq,
                batch.as_mut_ptr(),
                BATCH,
                0u32,
            )
        })?;
        let n = usize::try_from(n).unwrap_or(0).min(BATCH);
        ids.extend_from_slice(&batch[..n]);
        match batch[..n].last() {
            Some(&id) if n == BATCH => last = id,
            _ => return Ok(ids),
        }
    }
}

// ---------------------------------------------------------------------------
// nsfs

fn ioctl_fd(fd: BorrowedFd<'_>, request: u32) -> io::Result<OwnedFd> {
    // SAFETY: an _IO ioctl with no argument; the kernel returns a new fd.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a fresh fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(rc) })
}

/// The 64-bit id of the mount namespace behind `ns` (an nsfs fd).
pub fn mntns_id(ns: BorrowedFd<'_>) -> io::Result<u64> {
    let mut id = 0u64;
    // SAFETY: NS_GET_MNTNS_ID writes one u64 to the pointer.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_MNTNS_ID as _, &mut id as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(id)
}

/// The user namespace owning `ns`, as an fd.
pub fn owning_userns(ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    ioctl_fd(ns, NS_GET_USERNS)
}

/// The mount namespace after (or before) `ns` in id order, with its info.
/// ENOENT at either end. The kernel skips namespaces the caller has no
/// CAP_SYS_ADMIN over, and later stable kernels restrict the walk further
/// (`may_see_all_namespaces()`), so EPERM is possible.
pub fn mntns_step(ns: BorrowedFd<'_>, previous: bool) -> io::Result<(OwnedFd, MntNsInfo)> {
    let request = if previous {
        NS_MNT_GET_PREV
    } else {
        NS_MNT_GET_NEXT
    };
    let mut info = MntNsInfo {
        size: size_of::<MntNsInfo>() as u32,
        ..MntNsInfo::default()
    };
    // SAFETY: the ioctl writes at most sizeof(mnt_ns_info) bytes to `info`.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), request as _, &mut info as *mut MntNsInfo) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a fresh fd that we now own.
    Ok((unsafe { OwnedFd::from_raw_fd(rc) }, info))
}

// ---------------------------------------------------------------------------
// files

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// open(2) with O_CLOEXEC.
pub fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    owned(fd)
}

/// openat(2) with O_CLOEXEC.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; `dir` is a live fd.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    owned(fd)
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from open/openat that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// readlinkat(2), as bytes, whatever the length.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is writable for its length; `name` is NUL-terminated.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // Possibly truncated: PATH_MAX is 4096 but magic links can exceed it.
        if buf.len() >= 1 << 16 {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// The entry names of the directory open at `dir`, without `.` and `..`.
/// Lists it through `/proc/self/fd/N`, which reopens that same directory.
pub fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        // An entry vanishing while listed is normal in /proc.
        let Ok(entry) = entry else { continue };
        if let Ok(name) = CString::new(entry.file_name().as_bytes()) {
            names.push(name);
        }
    }
    Ok(names)
}

/// fstatat(2), following the final link (so `/proc/PID/cwd` gives the
/// directory the process is in, not the link).
pub fn statat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable; `name` is NUL-terminated.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// fstat(2).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: as in `statat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and `fd` is live.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// statfs(2) `f_type` (the filesystem magic) of what `path` leads to.
pub fn statfs_magic(path: &Path) -> io::Result<u64> {
    let path = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` writable.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is signed on some ABIs; magics are 32-bit patterns.
    Ok(st.f_type as u64 & 0xffff_ffff)
}

/// Splits a `dev_t` (glibc's encoding, makedev(3)).
pub fn dev_of(dev: libc::dev_t) -> monitor_model::Dev {
    monitor_model::Dev {
        major: libc::major(dev),
        minor: libc::minor(dev),
    }
}

/// True for errors that mean "the process (or fd) went away meanwhile".
pub fn is_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// True for errors that mean "this kernel does not have it".
pub fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSYS | libc::ENOTTY | libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        // Values as printed by a C program including <linux/nsfs.h> (6.18).
        assert_eq!(NS_GET_USERNS, 0xb701);
        assert_eq!(NS_GET_MNTNS_ID, 0x8008_b705);
        assert_eq!(NS_MNT_GET_NEXT, 0x8010_b70b);
        assert_eq!(NS_MNT_GET_PREV, 0x8010_b70c);
        assert_eq!(size_of::<MntIdReq>() as u32, MNT_ID_REQ_SIZE_VER1);
    }

    #[test]
    fn readlink_of_own_namespace() {
        let proc_self = open(Path::new("/proc/self"), libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let link = readlinkat(proc_self.as_fd(), c"ns/mnt").unwrap();
        assert!(
            link.starts_with(b"mnt:["),
            "{}",
            String::from_utf8_lossy(&link)
        );
    }

    #[test]
    fn statfs_of_proc() {
        assert_eq!(statfs_magic(Path::new("/proc/self")).unwrap(), 0x9fa0);
    }

    use std::os::fd::AsFd;
}
