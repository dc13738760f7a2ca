//! BTF tracepoints (`tp_btf`): attached by name through
//! BPF_RAW_TRACEPOINT_OPEN, so they need no tracefs, and they fire only on
//! task creation and exit rather than on every syscall. These are all that
//! runs in `Lean` mode.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use monitor_common::{kind, NewTaskEvent, ProcessEvent, CLONE_NEWNS};

use super::{reserve, submit};
use crate::maps::{watched, EXIT_HAS_GROUP_DEAD, OFFSETS};
use crate::task::{
    current_mnt_ns, current_task, current_tgid, fill_header, now, read_kernel, task_ids,
    task_mnt_ns,
};

// task_newtask(struct task_struct *task, u64 clone_flags), fired in the
// parent by copy_process() after copy_namespaces(): the child's nsproxy is
// already its own. It does not fire for unshare(2).
#[btf_tracepoint(function = "task_newtask")]
pub fn task_newtask(ctx: BtfTracePointContext) -> i32 {
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_NEWNS == 0 {
        return 0;
    }
    let child: *const u8 = ctx.arg(0);
    let (child_tid, child_tgid) = task_ids(child);
    let child_ns = task_mnt_ns(child);
    let parent_ns = current_mnt_ns();
    let Some(mut entry) = reserve::<NewTaskEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    let at = now();
    // SAFETY: `e` is a reserved record; every field is written below.
    unsafe {
        fill_header(
            &raw mut (*e).header,
            kind::NEW_TASK,
            size_of::<NewTaskEvent>(),
            at,
            parent_ns,
            parent_ns,
        );
        (*e).clone_flags = flags;
        (*e).child_tid = child_tid;
        (*e).child_tgid = child_tgid;
        (*e).child_mnt_ns = child_ns;
        (*e)._pad = 0;
    }
    submit(entry, false);
    0
}

// sched_process_fork(struct task_struct *parent, struct task_struct *child),
// fired in the parent. Threads (same tgid) are not new processes: skipped.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let parent_ns = current_mnt_ns();
    if !watched(parent_ns) {
        return 0;
    }
    let child: *const u8 = ctx.arg(1);
    let (child_tid, child_tgid) = task_ids(child);
    if child_tgid == 0 || child_tgid == current_tgid() {
        return 0;
    }
    let child_ns = task_mnt_ns(child);
    let Some(mut entry) = reserve::<ProcessEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    let at = now();
    // SAFETY: as above. mnt_ns_after carries the child's namespace (not the
    // parent's under CLONE_NEWNS).
    unsafe {
        fill_header(
            &raw mut (*e).header,
            kind::PROCESS_FORK,
            size_of::<ProcessEvent>(),
            at,
            parent_ns,
            child_ns,
        );
        (*e).other_tid = child_tid;
        (*e).other_tgid = child_tgid;
        (*e).exit_code = 0;
        (*e).group_dead = 0;
    }
    submit(entry, false);
    0
}

// sched_process_exit(struct task_struct *p[, bool group_dead]), fired by
// do_exit() in the exiting task after it decremented signal->live and
// before exit_task_namespaces(): its nsproxy is still there.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let ns = current_mnt_ns();
    if !watched(ns) {
        return 0;
    }
    let task = current_task();
    let o = OFFSETS.load();
    let group_dead = if EXIT_HAS_GROUP_DEAD.load() != 0 {
        ctx.arg::<u64>(1) != 0
    } else {
        // Older kernels: the last thread out sees live == 0. Two threads
        // exiting at once may both see 0; userspace tolerates a repeat.
        match read_kernel::<*const u8>(task, o.task_signal) {
            Ok(signal) => read_kernel::<i32>(signal, o.signal_live)
                .map(|live| live == 0)
                .unwrap_or(false),
            Err(_) => false,
        }
    };
    if !group_dead {
        return 0;
    }
    let exit_code: i32 = read_kernel(task, o.task_exit_code).unwrap_or(0);
    let Some(mut entry) = reserve::<ProcessEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    let at = now();
    // SAFETY: as above.
    unsafe {
        fill_header(
            &raw mut (*e).header,
            kind::PROCESS_EXIT,
            size_of::<ProcessEvent>(),
            at,
            ns,
            ns,
        );
        (*e).other_tid = (*e).header.tid;
        (*e).other_tgid = (*e).header.tgid;
        (*e).exit_code = exit_code;
        (*e).group_dead = 1;
    }
    submit(entry, false);
    0
}
