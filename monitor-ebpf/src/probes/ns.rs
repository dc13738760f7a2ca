//! Calls that put a task in another mount namespace: unshare, setns, and
//! clone/clone3 seen from the parent. Filtered in the kernel, because clone
//! and setns are frequent and almost never about mount namespaces.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use monitor_common::{counter, kind, syscall, NsEvent, CLONE_NEWNS};

use super::{reserve, submit};
use crate::maps::{count, Pending};
use crate::task::{current_mnt_ns, fill_header, save, syscall_arg, syscall_ret, take};

/// Fills and submits an [`NsEvent`].
#[inline(always)]
fn submit_ns_event(
    kind: u32,
    p: &Pending,
    mnt_ns_after: u32,
    ret: i64,
    flags: u64,
    syscall: u32,
    fd: i32,
) {
    let Some(mut entry) = reserve::<NsEvent>() else {
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is a reserved record; every field is written below.
    unsafe {
        fill_header(
            &raw mut (*e).header,
            kind,
            size_of::<NsEvent>(),
            p.start_ns,
            p.mnt_ns,
            mnt_ns_after,
        );
        (*e).ret = ret;
        (*e).flags = flags;
        (*e).syscall = syscall;
        (*e).fd = fd;
    }
    submit(entry, false);
}

// unshare(unshare_flags)
#[tracepoint(category = "syscalls", name = "sys_enter_unshare")]
pub fn sys_enter_unshare(ctx: TracePointContext) -> u32 {
    if syscall_arg(&ctx, 0) & CLONE_NEWNS != 0 {
        save::<1>(&ctx, kind::UNSHARE);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_unshare")]
pub fn sys_exit_unshare(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::UNSHARE, false) else {
        return 0;
    };
    submit_ns_event(
        kind::UNSHARE,
        &p,
        current_mnt_ns(),
        syscall_ret(&ctx),
        p.args[0],
        syscall::UNSHARE,
        -1,
    );
    0
}

// setns(fd, nstype): nstype may be 0 (any type), so the filter runs at
// exit: keep the call if the mount namespace changed, or if it failed (a
// failed attempt to join a namespace is worth seeing).
#[tracepoint(category = "syscalls", name = "sys_enter_setns")]
pub fn sys_enter_setns(ctx: TracePointContext) -> u32 {
    save::<2>(&ctx, kind::SETNS);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_setns")]
pub fn sys_exit_setns(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::SETNS, true) else {
        return 0;
    };
    let ret = syscall_ret(&ctx);
    let after = current_mnt_ns();
    if ret >= 0 && after == p.mnt_ns {
        return 0;
    }
    submit_ns_event(
        kind::SETNS,
        &p,
        after,
        ret,
        p.args[1],
        syscall::SETNS,
        p.args[0] as i32,
    );
    0
}

// clone(clone_flags, newsp, parent_tidptr, child_tidptr, tls): the argument
// order of x86_64 and most architectures (the tracepoint's own order).
#[tracepoint(category = "syscalls", name = "sys_enter_clone")]
pub fn sys_enter_clone(ctx: TracePointContext) -> u32 {
    if syscall_arg(&ctx, 0) & CLONE_NEWNS != 0 {
        save::<1>(&ctx, kind::CLONE);
    }
    0
}

// The child returns through sys_exit too (ret 0, another tid, no entry):
// `take(.., false)` keeps that from counting as a missing entry.
#[tracepoint(category = "syscalls", name = "sys_exit_clone")]
pub fn sys_exit_clone(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::CLONE, false) else {
        return 0;
    };
    submit_ns_event(
        kind::CLONE,
        &p,
        current_mnt_ns(),
        syscall_ret(&ctx),
        p.args[0],
        syscall::CLONE,
        -1,
    );
    0
}

/// `clone_args.flags`: the first u64 of the user struct (linux/sched.h).
#[inline(always)]
fn clone3_flags(uargs: u64) -> Result<u64, i32> {
    // SAFETY: bpf_probe_read_user checks the address.
    unsafe { bpf_probe_read_user(uargs as *const u64) }
}

// clone3(uargs, size)
#[tracepoint(category = "syscalls", name = "sys_enter_clone3")]
pub fn sys_enter_clone3(ctx: TracePointContext) -> u32 {
    // An unreadable struct (page not yet resident) is kept and decided at
    // exit, when the kernel has copied it in.
    match clone3_flags(syscall_arg(&ctx, 0)) {
        Ok(flags) if flags & CLONE_NEWNS == 0 => {}
        _ => save::<2>(&ctx, kind::CLONE),
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone3")]
pub fn sys_exit_clone3(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::CLONE, false) else {
        return 0;
    };
    let flags = match clone3_flags(p.args[0]) {
        Ok(flags) => flags,
        Err(_) => {
            // task_newtask still reports the child with its flags.
            count(counter::KERNEL_READ);
            return 0;
        }
    };
    if flags & CLONE_NEWNS == 0 {
        return 0;
    }
    submit_ns_event(
        kind::CLONE,
        &p,
        current_mnt_ns(),
        syscall_ret(&ctx),
        flags,
        syscall::CLONE3,
        -1,
    );
    0
}
