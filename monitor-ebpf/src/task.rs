//! The record header, kernel-memory reads and user-string reads.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_task,
            bpf_ktime_get_boot_ns, bpf_probe_read_user_str,
        },
    },
    programs::TracePointContext,
};
use monitor_common::{counter, Header, PathArg, COMM_LEN};

use crate::maps::{count, Pending, OFFSETS, PENDING};

/// `CLOCK_BOOTTIME` in ns: it keeps counting across suspend, so userspace
/// can turn it into wall time at conversion (ebpf_exporter's `ktime.go`).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper with no arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read_kernel<T>(base: *const u8, offset: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .map_err(i64::from)
}

/// The mount namespace inode number of a task:
/// `task->nsproxy->mnt_ns->ns.inum` (what `readlink /proc/PID/ns/mnt` shows).
/// 0, counted as a kernel read error, when the offsets were not provided or
/// a pointer was unreadable.
#[inline(always)]
pub fn task_mnt_ns(task: *const u8) -> u32 {
    match try_task_mnt_ns(task) {
        Ok(inum) => inum,
        Err(_) => {
            count(counter::KERNEL_READ);
            0
        }
    }
}

#[inline(always)]
fn try_task_mnt_ns(task: *const u8) -> Result<u32, i64> {
    let o = OFFSETS.load();
    if o.task_nsproxy == 0 {
        return Err(0);
    }
    let nsproxy: *const u8 = read_kernel(task, o.task_nsproxy)?;
    // A task past exit_task_namespaces() has no nsproxy.
    if nsproxy.is_null() {
        return Err(0);
    }
    let mnt_ns: *const u8 = read_kernel(nsproxy, o.nsproxy_mnt_ns)?;
    read_kernel(mnt_ns, o.mnt_ns_inum)
}

/// A task's (tid, tgid): the kernel's `pid` and `tgid`. (0, 0), counted as a
/// kernel read error, without offsets or when unreadable.
#[inline(always)]
pub fn task_ids(task: *const u8) -> (u32, u32) {
    let o = OFFSETS.load();
    let ids = if o.task_pid == 0 {
        Err(0)
    } else {
        read_kernel::<u32>(task, o.task_pid)
            .and_then(|tid| Ok((tid, read_kernel::<u32>(task, o.task_tgid)?)))
    };
    ids.unwrap_or_else(|_: i64| {
        count(counter::KERNEL_READ);
        (0, 0)
    })
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: a helper with no arguments.
    unsafe { bpf_get_current_task() as *const u8 }
}

#[inline(always)]
pub fn current_mnt_ns() -> u32 {
    task_mnt_ns(current_task())
}

/// Fills a header in reserved ring-buffer memory for the current task.
///
/// # Safety
/// `h` must point into a reserved, writable record.
#[inline(always)]
pub unsafe fn fill_header(
    h: *mut Header,
    kind: u32,
    size: usize,
    start_ns: u64,
    mnt_ns: u32,
    mnt_ns_after: u32,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    unsafe {
        (*h).kind = kind;
        (*h).size = size as u32;
        (*h).start_ns = start_ns;
        (*h).end_ns = now();
        (*h).tid = pid_tgid as u32;
        (*h).tgid = (pid_tgid >> 32) as u32;
        (*h).uid = uid_gid as u32;
        (*h).gid = (uid_gid >> 32) as u32;
        (*h).cgroup_id = bpf_get_current_cgroup_id();
        (*h).mnt_ns = mnt_ns;
        (*h).mnt_ns_after = mnt_ns_after;
        let comm = &raw mut (*h).comm;
        if bpf_get_current_comm(comm.cast::<c_void>(), COMM_LEN as u32) != 0 {
            (*h).comm = [0; COMM_LEN];
        }
    }
}

/// Copies a NUL-terminated user string straight into the record (a path is
/// too big for the 512-byte BPF stack). NULL (an optional argument left
/// out, like mount's source on a remount) reads as empty.
///
/// # Safety
/// `dst` must point into a reserved, writable record.
#[inline(always)]
pub unsafe fn read_user_path<const N: usize>(dst: *mut PathArg<N>, src: u64) {
    unsafe {
        if src == 0 {
            (*dst).len = 0;
            (*dst).truncated = 0;
            return;
        }
        let bytes = &raw mut (*dst).bytes;
        let ret = bpf_probe_read_user_str(bytes.cast::<c_void>(), N as u32, src as *const c_void);
        if ret < 0 {
            // Bad pointer, or the page is not resident: this helper cannot
            // fault pages in. At sys_exit the kernel has just read the string,
            // so that is rare.
            (*dst).len = u32::MAX;
            (*dst).truncated = 0;
        } else {
            // ret counts the NUL. A string that filled the buffer may go on.
            let copied = ret as u32;
            (*dst).len = copied.saturating_sub(1);
            (*dst).truncated = u32::from(copied as usize >= N);
        }
    }
}

/// Reads syscall argument `i` of a `sys_enter_*` tracepoint. Their records
/// are the 8-byte common header, `int __syscall_nr`, then every argument as
/// 8 bytes from offset 16 (see `events/syscalls/sys_enter_*/format`).
#[inline(always)]
pub fn syscall_arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: read_at goes through bpf_probe_read_kernel.
    unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(0)
}

/// The return value of a `sys_exit_*` tracepoint (`long ret` at offset 16).
#[inline(always)]
pub fn syscall_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as above.
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(i64::MIN)
}

/// Saves the entry of a syscall: time, namespace and the first `N` raw
/// arguments, keyed by thread id.
#[inline(always)]
pub fn save<const N: usize>(ctx: &TracePointContext, kind: u32) {
    let mut pending = Pending {
        start_ns: now(),
        kind,
        mnt_ns: current_mnt_ns(),
        args: [0; 6],
    };
    let mut i = 0;
    while i < N && i < 6 {
        pending.args[i] = syscall_arg(ctx, i);
        i += 1;
    }
    // Failure (ENOMEM) shows up at exit as a missing entry.
    let _ = PENDING.insert(current_tid(), pending, 0);
}

/// Takes (and always deletes) this thread's saved entry for `kind`.
/// `expect_entry`: whether a missing entry is an error worth counting, false
/// for calls the entry filters out (unshare without CLONE_NEWNS, ...), and
/// for clone, whose child also passes through sys_exit with no entry.
#[inline(always)]
pub fn take(kind: u32, expect_entry: bool) -> Option<Pending> {
    let tid = current_tid();
    let found = PENDING.get_ptr(tid).map(|p| {
        // SAFETY: a successful lookup; copied out before the delete below
        // lets the kernel reuse the element.
        unsafe { *p }
    });
    if found.is_some() {
        let _ = PENDING.remove(tid);
    }
    match found {
        Some(p) if p.kind == kind => Some(p),
        // An entry of another kind is stale: its exit was never seen.
        Some(_) => {
            count(counter::MISSING_ENTRY);
            None
        }
        None => {
            if expect_entry {
                count(counter::MISSING_ENTRY);
            }
            None
        }
    }
}
