//! Records the eBPF programs write into the ring buffer and userspace decodes.
//!
//! Owns: the wire layout (`#[repr(C)]`, `Copy`, no pointers), the event kind
//! ids, the names of counters kept in the kernel, and the BTF offsets the
//! programs receive as globals. Imports nothing but `core`; `user` adds the
//! decoder, which validates kind and size before reading a record.
//!
//! Every record starts with [`Header`], so the decoder can read the kind at a
//! fixed offset. Kind ids are never reused: a retired id stays as a comment.
#![no_std]

#[cfg(feature = "user")]
pub mod user;

/// Task command name length (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes kept of a path argument. Longer paths are truncated and flagged: the
/// model then treats the path as a prefix (`PathArg::truncated`).
pub const PATH_LEN: usize = 512;
/// Bytes kept of a mount source (device, image, `overlay`, ...).
pub const SOURCE_LEN: usize = 256;
/// Bytes kept of a filesystem type name.
pub const FSTYPE_LEN: usize = 32;

/// `CLONE_NEWNS` from `<linux/sched.h>`.
pub const CLONE_NEWNS: u64 = 0x0002_0000;
/// `AT_REMOVEDIR` from `<linux/fcntl.h>`: `unlinkat` acting as `rmdir`.
pub const AT_REMOVEDIR: u64 = 0x200;

/// How long a record may wait in the ring buffer before the reader is woken
/// for it. The programs force a wake-up for a record when none was forced for
/// this long (or the ring is a quarter full, or the record is urgent: a
/// removal that failed with EBUSY), and submit the rest without one; the
/// reader, once woken, drains again this long after its last wake-up, which
/// catches every record submitted without one. So a burst costs one wake-up
/// per interval instead of one per record, an idle ring costs nothing, and a
/// record waits at most about this long (the first of a burst not at all).
pub const WAKEUP_INTERVAL_NS: u64 = 10_000_000;

/// Event kinds. 0 is never valid, so a zeroed record cannot pass as an event.
pub mod kind {
    pub const MOUNT: u32 = 1;
    pub const UMOUNT: u32 = 2;
    pub const UNSHARE: u32 = 3;
    pub const SETNS: u32 = 4;
    /// `clone`/`clone3` returning in the parent, only with `CLONE_NEWNS`.
    pub const CLONE: u32 = 5;
    /// `task/task_newtask` with `CLONE_NEWNS`: the child and its new namespace.
    pub const NEW_TASK: u32 = 6;
    pub const MOVE_MOUNT: u32 = 7;
    pub const OPEN_TREE: u32 = 8;
    pub const FSMOUNT: u32 = 9;
    pub const MOUNT_SETATTR: u32 = 10;
    pub const PIVOT_ROOT: u32 = 11;
    /// `rmdir`, or `unlinkat` with `AT_REMOVEDIR`.
    pub const RMDIR: u32 = 12;
    pub const PROCESS_FORK: u32 = 13;
    pub const PROCESS_EXIT: u32 = 14;
    /// Highest id in use; ids above it are rejected by the decoder.
    pub const MAX: u32 = 14;
}

/// Which syscall an [`NsEvent`] or a [`PathEvent`] came from.
pub mod syscall {
    pub const UNSHARE: u32 = 1;
    pub const SETNS: u32 = 2;
    pub const CLONE: u32 = 3;
    pub const CLONE3: u32 = 4;
    pub const RMDIR: u32 = 5;
    pub const UNLINKAT: u32 = 6;
    pub const OPEN_TREE: u32 = 7;
    pub const OPEN_TREE_ATTR: u32 = 8;
}

/// Indices into the per-CPU `COUNTERS` array kept by the programs.
pub mod counter {
    /// A record could not be reserved in the ring buffer: an event was lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// A `sys_exit` found no saved `sys_enter` state (map full or evicted).
    pub const MISSING_ENTRY: u32 = 1;
    /// Reading kernel memory (task, nsproxy) failed.
    pub const KERNEL_READ: u32 = 2;
    pub const LEN: u32 = 3;
}

/// Member offsets into kernel structs, read from `/sys/kernel/btf/vmlinux` in
/// userspace and handed to the programs as globals (aya has no CO-RE for Rust
/// programs). All zero means "not provided": the programs then report
/// `mnt_ns == 0` and count a `KERNEL_READ` error instead of guessing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `nsproxy.mnt_ns`
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns` + `ns_common.inum`
    pub mnt_ns_inum: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `task_struct.signal`
    pub task_signal: u32,
    /// `signal_struct.live`: the thread count `do_exit` decrements before
    /// `sched_process_exit` fires; 0 means the whole group is gone. Only
    /// read where that tracepoint lacks its `group_dead` argument (older
    /// kernels; 6.18 has it).
    pub signal_live: u32,
}

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u32,
    /// Size of the whole record in bytes, checked by the decoder.
    pub size: u32,
    /// `CLOCK_BOOTTIME` ns at syscall entry (or when the tracepoint fired).
    pub start_ns: u64,
    /// `CLOCK_BOOTTIME` ns at syscall exit; equals `start_ns` for one-shot events.
    pub end_ns: u64,
    /// Thread id (the kernel's `pid`).
    pub tid: u32,
    /// Process id (the kernel's `tgid`).
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Mount namespace inode number of the task at entry.
    pub mnt_ns: u32,
    /// Mount namespace inode number at exit (differs after unshare/setns).
    pub mnt_ns_after: u32,
    pub comm: [u8; COMM_LEN],
}

/// A NUL-padded path copied from user memory.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathArg<const N: usize> {
    /// Bytes copied, without the NUL. `u32::MAX` when the read failed
    /// (bad pointer, or the page was not resident at syscall exit).
    pub len: u32,
    /// Non-zero when the string filled the buffer and may continue.
    pub truncated: u32,
    pub bytes: [u8; N],
}

/// `mount(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MountEvent {
    pub header: Header,
    pub ret: i64,
    pub flags: u64,
    pub source: PathArg<SOURCE_LEN>,
    pub target: PathArg<PATH_LEN>,
    pub fstype: PathArg<FSTYPE_LEN>,
}

/// `umount2(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UmountEvent {
    pub header: Header,
    pub ret: i64,
    pub flags: u64,
    pub target: PathArg<PATH_LEN>,
}

/// `unshare(2)`, `setns(2)`, `clone(2)`/`clone3(2)` (parent side).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NsEvent {
    pub header: Header,
    pub ret: i64,
    /// unshare/clone flags, or setns `nstype`.
    pub flags: u64,
    /// One of [`syscall`].
    pub syscall: u32,
    /// setns: the fd argument. Otherwise -1.
    pub fd: i32,
}

/// `task/task_newtask` with `CLONE_NEWNS`, fired in the parent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NewTaskEvent {
    pub header: Header,
    pub clone_flags: u64,
    pub child_tid: u32,
    pub child_tgid: u32,
    /// The child's (new) mount namespace.
    pub child_mnt_ns: u32,
    pub _pad: u32,
}

/// `move_mount(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MoveMountEvent {
    pub header: Header,
    pub ret: i64,
    pub flags: u64,
    pub from_dfd: i32,
    pub to_dfd: i32,
    pub from_path: PathArg<PATH_LEN>,
    pub to_path: PathArg<PATH_LEN>,
}

/// One path and a dfd: `open_tree(2)`, `mount_setattr(2)`, `rmdir(2)`,
/// `unlinkat(AT_REMOVEDIR)`, and `pivot_root(2)` (whose second path is
/// `path2`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathEvent {
    pub header: Header,
    pub ret: i64,
    pub flags: u64,
    /// mount_setattr: `attr_set`; otherwise 0.
    pub attr_set: u64,
    /// mount_setattr: `attr_clr`; otherwise 0.
    pub attr_clr: u64,
    /// mount_setattr: `propagation` (MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE).
    pub propagation: u64,
    pub dfd: i32,
    /// One of [`syscall`] where the kind alone does not say.
    pub syscall: u32,
    pub path: PathArg<PATH_LEN>,
    pub path2: PathArg<PATH_LEN>,
}

/// `fsmount(2)`: creates a detached mount; it becomes visible at the
/// `move_mount` that follows.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FsmountEvent {
    pub header: Header,
    pub ret: i64,
    pub flags: u64,
    pub attr_flags: u64,
    pub fs_fd: i32,
    pub _pad: u32,
}

/// `sched_process_fork` / `sched_process_exit`, only for tasks whose mount
/// namespace userspace put in the `WATCHED_NS` map.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessEvent {
    pub header: Header,
    /// Fork: the child's tid/tgid. Exit: same as the header.
    pub other_tid: u32,
    pub other_tgid: u32,
    /// Exit: `task_struct.exit_code`. Fork: 0.
    pub exit_code: i32,
    /// Exit: 1 when the whole thread group is gone.
    pub group_dead: u32,
}
