//! Decoding ring-buffer records in userspace: check the kind and the size,
//! then copy the record out (ring-buffer memory has no alignment promise
//! beyond 8 bytes, and the record must outlive the ring-buffer slot).

use core::fmt;
use core::mem::size_of;

use crate::{
    kind, FsmountEvent, Header, MountEvent, MoveMountEvent, NewTaskEvent, NsEvent, PathArg,
    PathEvent, ProcessEvent, UmountEvent,
};

/// A record from the ring buffer, by kind.
#[derive(Clone, Copy)]
pub enum Record {
    Mount(MountEvent),
    Umount(UmountEvent),
    Ns(NsEvent),
    NewTask(NewTaskEvent),
    MoveMount(MoveMountEvent),
    Path(PathEvent),
    Fsmount(FsmountEvent),
    Process(ProcessEvent),
}

impl Record {
    pub fn header(&self) -> &Header {
        match self {
            Record::Mount(e) => &e.header,
            Record::Umount(e) => &e.header,
            Record::Ns(e) => &e.header,
            Record::NewTask(e) => &e.header,
            Record::MoveMount(e) => &e.header,
            Record::Path(e) => &e.header,
            Record::Fsmount(e) => &e.header,
            Record::Process(e) => &e.header,
        }
    }
}

/// Why a record was rejected. Small and `Copy`: this runs per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    Short { len: usize },
    /// A kind id this build does not know.
    UnknownKind { kind: u32 },
    /// The header's size, the buffer's length and the kind's struct disagree.
    SizeMismatch {
        kind: u32,
        declared: u32,
        expected: usize,
        available: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Short { len } => write!(f, "record of {len} bytes is shorter than a header"),
            DecodeError::UnknownKind { kind } => write!(f, "unknown event kind {kind}"),
            DecodeError::SizeMismatch { kind, declared, expected, available } => write!(
                f,
                "event kind {kind}: header says {declared} bytes, layout needs {expected}, buffer has {available}"
            ),
        }
    }
}

fn read<T: Copy>(bytes: &[u8], kind: u32, declared: u32) -> Result<T, DecodeError> {
    let expected = size_of::<T>();
    if declared as usize != expected || bytes.len() < expected {
        return Err(DecodeError::SizeMismatch {
            kind,
            declared,
            expected,
            available: bytes.len(),
        });
    }
    // SAFETY: the length was checked above, `T` is a `repr(C)` record made only
    // of integers and byte arrays (every bit pattern is valid), and the read is
    // unaligned-safe.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < size_of::<Header>() {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    // SAFETY: at least a header's worth of bytes; Header is plain integers.
    let header: Header = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Header>()) };
    let (k, n) = (header.kind, header.size);
    Ok(match k {
        kind::MOUNT => Record::Mount(read(bytes, k, n)?),
        kind::UMOUNT => Record::Umount(read(bytes, k, n)?),
        kind::UNSHARE | kind::SETNS | kind::CLONE => Record::Ns(read(bytes, k, n)?),
        kind::NEW_TASK => Record::NewTask(read(bytes, k, n)?),
        kind::MOVE_MOUNT => Record::MoveMount(read(bytes, k, n)?),
        kind::OPEN_TREE | kind::MOUNT_SETATTR | kind::PIVOT_ROOT | kind::RMDIR => {
            Record::Path(read(bytes, k, n)?)
        }
        kind::FSMOUNT => Record::Fsmount(read(bytes, k, n)?),
        kind::PROCESS_FORK | kind::PROCESS_EXIT => Record::Process(read(bytes, k, n)?),
        other => return Err(DecodeError::UnknownKind { kind: other }),
    })
}

impl<const N: usize> PathArg<N> {
    /// The bytes read, or `None` when the kernel could not read the argument.
    /// Paths are bytes, not text: Linux paths need not be UTF-8.
    pub fn bytes(&self) -> Option<&[u8]> {
        if self.len == u32::MAX {
            return None;
        }
        let len = (self.len as usize).min(N);
        Some(&self.bytes[..len])
    }

    pub fn is_truncated(&self) -> bool {
        self.truncated != 0
    }
}

impl Header {
    /// The command name up to its first NUL.
    pub fn comm(&self) -> &[u8] {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        &self.comm[..end]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{COMM_LEN, PATH_LEN};
    use std::vec::Vec;

    fn header(kind: u32, size: usize) -> Header {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"ntpd");
        Header {
            kind,
            size: size as u32,
            start_ns: 10,
            end_ns: 20,
            tid: 7,
            tgid: 7,
            uid: 0,
            gid: 0,
            cgroup_id: 99,
            mnt_ns: 4026531841,
            mnt_ns_after: 4026532000,
            comm,
        }
    }

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        let ptr = (value as *const T).cast::<u8>();
        // SAFETY: reading the object representation of a plain repr(C) value.
        unsafe { core::slice::from_raw_parts(ptr, size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_an_unshare_record() {
        let event = NsEvent {
            header: header(kind::UNSHARE, size_of::<NsEvent>()),
            ret: 0,
            flags: crate::CLONE_NEWNS,
            syscall: crate::syscall::UNSHARE,
            fd: -1,
        };
        let Record::Ns(decoded) = decode(&bytes_of(&event)).unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(decoded.header.comm(), b"ntpd");
        assert_eq!(decoded.header.mnt_ns_after, 4026532000);
        assert_eq!(decoded.flags, crate::CLONE_NEWNS);
    }

    #[test]
    fn rejects_short_unknown_and_mis_sized_records() {
        assert!(matches!(
            decode(&[0u8; 8]),
            Err(DecodeError::Short { len: 8 })
        ));
        let unknown = header(kind::MAX + 1, size_of::<Header>());
        assert!(matches!(
            decode(&bytes_of(&unknown)),
            Err(DecodeError::UnknownKind { .. })
        ));
        let zero = header(0, size_of::<Header>());
        assert!(matches!(
            decode(&bytes_of(&zero)),
            Err(DecodeError::UnknownKind { kind: 0 })
        ));
        // A header claiming to be a mount event but only a header long.
        let lying = header(kind::MOUNT, size_of::<MountEvent>());
        assert!(matches!(
            decode(&bytes_of(&lying)),
            Err(DecodeError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn path_arg_reports_unreadable_and_truncated() {
        let mut arg = PathArg::<PATH_LEN> {
            len: u32::MAX,
            truncated: 0,
            bytes: [0; PATH_LEN],
        };
        assert_eq!(arg.bytes(), None);
        arg.len = 3;
        arg.bytes[..3].copy_from_slice(b"a\nb");
        assert_eq!(arg.bytes(), Some(&b"a\nb"[..]));
        arg.truncated = 1;
        assert!(arg.is_truncated());
    }
}
