//! Mount attach/detach notifications through fanotify (Linux 6.15+:
//! `FAN_REPORT_MNT`, marks on a mount namespace with `FAN_MARK_MNTNS`).
//!
//! Why: the syscall tracepoints that see mount and umount calls slow every
//! syscall of every process on the host. In `lean` probe mode the daemon
//! uses these notifications instead: they cost nothing outside mount
//! changes, and they tell the daemon *when* to re-read a namespace (the
//! re-read says what changed). Detach events on the host's namespace are
//! the moment a leak is born; on a holder's namespace, the moment it may end.
//!
//! One fanotify group per role ("host" namespaces, "holder" namespaces):
//! events carry a mount id but not the namespace, so the group says where.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use monitor_model::{NsId, Pid};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `<linux/fanotify.h>`.
const FAN_CLOEXEC: libc::c_uint = 0x1;
const FAN_NONBLOCK: libc::c_uint = 0x2;
const FAN_CLASS_NOTIF: libc::c_uint = 0x0;
const FAN_REPORT_MNT: libc::c_uint = 0x4000;
const FAN_MARK_ADD: libc::c_uint = 0x1;
const FAN_MARK_MNTNS: libc::c_uint = 0x110;
const FAN_MNT_ATTACH: u64 = 0x0100_0000;
const FAN_MNT_DETACH: u64 = 0x0200_0000;
const FAN_Q_OVERFLOW: u64 = 0x4000;
/// `struct fanotify_event_metadata`: event_len u32, vers u8, reserved u8,
/// metadata_len u16, mask u64, fd s32, pid s32.
const METADATA_LEN: usize = 24;

/// What a batch of notifications said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub attached: usize,
    pub detached: usize,
    /// The kernel's queue overflowed: anything may have changed.
    pub overflow: bool,
}

impl Changes {
    pub fn any(&self) -> bool {
        self.attached + self.detached > 0 || self.overflow
    }
}

/// One fanotify group watching mount changes in some namespaces.
pub struct MountWatch {
    fd: AsyncFd<OwnedFd>,
    marked: BTreeSet<NsId>,
}

impl MountWatch {
    /// Fails with `Unsupported` on kernels without mount notifications.
    pub fn new() -> io::Result<MountWatch> {
        let flags = FAN_CLASS_NOTIF | FAN_REPORT_MNT | FAN_CLOEXEC | FAN_NONBLOCK;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint)
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOSYS) => io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this kernel has no fanotify mount notifications (Linux 6.15+)",
                ),
                _ => e,
            });
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the descriptor, so it stays open (and is
        // the same file) for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(MountWatch {
            fd,
            marked: BTreeSet::new(),
        })
    }

    pub fn is_marked(&self, ns: NsId) -> bool {
        self.marked.contains(&ns)
    }

    /// Watches mount namespace `ns`, reached through a process in it (`None`:
    /// our own). The mark goes away with the namespace.
    pub fn mark(&mut self, ns: NsId, via: Option<Pid>) -> io::Result<()> {
        if self.marked.contains(&ns) {
            return Ok(());
        }
        let path = match via {
            Some(pid) => format!("/proc/{pid}/ns/mnt\0"),
            None => "/proc/self/ns/mnt\0".to_string(),
        };
        let mask = FAN_MNT_ATTACH | FAN_MNT_DETACH;
        // SAFETY: NUL-terminated path; the group fd is ours.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.get_ref().as_raw_fd(),
                FAN_MARK_ADD | FAN_MARK_MNTNS,
                mask,
                libc::AT_FDCWD,
                path.as_ptr().cast(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.marked.insert(ns);
        Ok(())
    }

    /// Forgets a namespace (it died, or stopped mattering). The kernel drops
    /// the mark when the namespace is freed; one still alive keeps reporting,
    /// which only costs a spare rescan.
    pub fn forget(&mut self, ns: NsId) {
        self.marked.remove(&ns);
    }

    /// Waits for notifications and drains them.
    pub async fn changed(&self) -> io::Result<Changes> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut changes = Changes::default();
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a buffer we own, within its length.
                let n = unsafe {
                    libc::read(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        break;
                    }
                    return Err(e);
                }
                if n == 0 {
                    guard.clear_ready();
                    break;
                }
                parse(&buf[..n as usize], &mut changes);
            }
            if changes.any() {
                return Ok(changes);
            }
        }
    }
}

/// Counts the events in one read. Records are length-prefixed; a short or
/// malformed record ends the parse (the next rescan covers it).
fn parse(mut buf: &[u8], changes: &mut Changes) {
    while buf.len() >= METADATA_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < METADATA_LEN || len > buf.len() {
            changes.overflow = true;
            return;
        }
        let mut mask = [0u8; 8];
        mask.copy_from_slice(&buf[8..16]);
        let mask = u64::from_ne_bytes(mask);
        if mask & FAN_Q_OVERFLOW != 0 {
            changes.overflow = true;
        }
        if mask & FAN_MNT_ATTACH != 0 {
            changes.attached += 1;
        }
        if mask & FAN_MNT_DETACH != 0 {
            changes.detached += 1;
        }
        // With FAN_REPORT_MNT no event carries an fd (it is FAN_NOFD), so
        // there is nothing to close.
        buf = &buf[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mask: u64) -> Vec<u8> {
        // metadata (24) + mnt info record (4 header + 8 id).
        let len: u32 = 36;
        let mut r = Vec::new();
        r.extend_from_slice(&len.to_ne_bytes());
        r.extend_from_slice(&[3, 0]);
        r.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        r.extend_from_slice(&mask.to_ne_bytes());
        r.extend_from_slice(&(-1i32).to_ne_bytes());
        r.extend_from_slice(&0i32.to_ne_bytes());
        r.extend_from_slice(&[7, 0]);
        r.extend_from_slice(&12u16.to_ne_bytes());
        r.extend_from_slice(&42u64.to_ne_bytes());
        r
    }

    #[test]
    fn counts_attach_detach_and_moves() {
        let mut buf = record(FAN_MNT_ATTACH);
        buf.extend(record(FAN_MNT_DETACH));
        buf.extend(record(FAN_MNT_ATTACH | FAN_MNT_DETACH));
        let mut c = Changes::default();
        parse(&buf, &mut c);
        assert_eq!(
            c,
            Changes {
                attached: 2,
                detached: 2,
                overflow: false
            }
        );
    }

    #[test]
    fn garbage_reads_as_overflow_not_a_panic() {
        let mut c = Changes::default();
        parse(&[0xff; 30], &mut c);
        assert!(c.overflow);
        let mut c = Changes::default();
        parse(&[1, 2, 3], &mut c);
        assert!(!c.any());
    }
}
