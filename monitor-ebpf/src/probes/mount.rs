//! Calls that make, copy, move, change or remove mounts: mount, umount2,
//! the new mount API (open_tree, open_tree_attr, fsmount, move_mount,
//! mount_setattr) and pivot_root.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use monitor_common::{
    kind, syscall, FsmountEvent, MountEvent, MoveMountEvent, PathEvent, UmountEvent,
};

use super::{reserve, submit, AT_FDCWD, EBUSY};
use crate::maps::Pending;
use crate::task::{current_mnt_ns, fill_header, read_user_path, save, syscall_ret, take};

// mount(dev_name, dir_name, type, flags, data)
#[tracepoint(category = "syscalls", name = "sys_enter_mount")]
pub fn sys_enter_mount(ctx: TracePointContext) -> u32 {
    save::<4>(&ctx, kind::MOUNT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mount")]
pub fn sys_exit_mount(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::MOUNT, true) else {
        return 0;
    };
    let Some(mut entry) = reserve::<MountEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is a reserved record; every field is written below.
    unsafe {
        fill_header(
            &raw mut (*e).header,
            kind::MOUNT,
            size_of::<MountEvent>(),
            p.start_ns,
            p.mnt_ns,
            current_mnt_ns(),
        );
        (*e).ret = syscall_ret(&ctx);
        (*e).flags = p.args[3];
        read_user_path(&raw mut (*e).source, p.args[0]);
        read_user_path(&raw mut (*e).target, p.args[1]);
        read_user_path(&raw mut (*e).fstype, p.args[2]);
    }
    submit(entry, false);
    0
}

// umount2(name, flags): its tracepoint is named after the syscall's kernel
// name, `umount` (SYSCALL_DEFINE2(umount, ...) in fs/namespace.c).
#[tracepoint(category = "syscalls", name = "sys_enter_umount")]
pub fn sys_enter_umount(ctx: TracePointContext) -> u32 {
    save::<2>(&ctx, kind::UMOUNT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_umount")]
pub fn sys_exit_umount(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::UMOUNT, true) else {
        return 0;
    };
    let Some(mut entry) = reserve::<UmountEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    let ret = syscall_ret(&ctx);
    // SAFETY: as in sys_exit_mount.
    unsafe {
        fill_header(
            &raw mut (*e).header,
            kind::UMOUNT,
            size_of::<UmountEvent>(),
            p.start_ns,
            p.mnt_ns,
            current_mnt_ns(),
        );
        (*e).ret = ret;
        (*e).flags = p.args[1];
        read_user_path(&raw mut (*e).target, p.args[0]);
    }
    // "target is busy": the daemon explains who holds it right away.
    submit(entry, ret == EBUSY);
    0
}

// move_mount(from_dfd, from_pathname, to_dfd, to_pathname, flags)
#[tracepoint(category = "syscalls", name = "sys_enter_move_mount")]
pub fn sys_enter_move_mount(ctx: TracePointContext) -> u32 {
    save::<5>(&ctx, kind::MOVE_MOUNT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_move_mount")]
pub fn sys_exit_move_mount(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::MOVE_MOUNT, true) else {
        return 0;
    };
    let Some(mut entry) = reserve::<MoveMountEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: as in sys_exit_mount.
    unsafe {
        fill_header(
            &raw mut (*e).header,
            kind::MOVE_MOUNT,
            size_of::<MoveMountEvent>(),
            p.start_ns,
            p.mnt_ns,
            current_mnt_ns(),
        );
        (*e).ret = syscall_ret(&ctx);
        (*e).flags = p.args[4];
        (*e).from_dfd = p.args[0] as i32;
        (*e).to_dfd = p.args[2] as i32;
        read_user_path(&raw mut (*e).from_path, p.args[1]);
        read_user_path(&raw mut (*e).to_path, p.args[3]);
    }
    submit(entry, false);
    0
}

// fsmount(fs_fd, flags, attr_flags)
#[tracepoint(category = "syscalls", name = "sys_enter_fsmount")]
pub fn sys_enter_fsmount(ctx: TracePointContext) -> u32 {
    save::<3>(&ctx, kind::FSMOUNT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_fsmount")]
pub fn sys_exit_fsmount(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::FSMOUNT, true) else {
        return 0;
    };
    let Some(mut entry) = reserve::<FsmountEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: as in sys_exit_mount.
    unsafe {
        fill_header(
            &raw mut (*e).header,
            kind::FSMOUNT,
            size_of::<FsmountEvent>(),
            p.start_ns,
            p.mnt_ns,
            current_mnt_ns(),
        );
        (*e).ret = syscall_ret(&ctx);
        (*e).flags = p.args[1];
        (*e).attr_flags = p.args[2];
        (*e).fs_fd = p.args[0] as i32;
        (*e)._pad = 0;
    }
    submit(entry, false);
    0
}

/// What a [`PathEvent`] carries besides the header and the saved entry.
pub(super) struct PathCall {
    pub(super) kind: u32,
    pub(super) syscall: u32,
    pub(super) flags: u64,
    pub(super) dfd: i32,
    pub(super) path: u64,
    pub(super) path2: u64,
    /// User pointer to a `struct mount_attr` (attr_set, attr_clr,
    /// propagation, userns_fd: all u64), or 0.
    pub(super) mount_attr: u64,
}

/// Fills and submits a [`PathEvent`]. Shared by open_tree, mount_setattr,
/// pivot_root and the rmdir family.
#[inline(always)]
pub(super) fn submit_path_event(ctx: &TracePointContext, p: &Pending, call: PathCall) {
    let Some(mut entry) = reserve::<PathEvent>() else {
        return;
    };
    let e = entry.as_mut_ptr();
    // The kernel copied the struct in (copy_struct_from_user) before exit.
    let attr = if call.mount_attr == 0 {
        [0u64; 3]
    } else {
        // SAFETY: bpf_probe_read_user checks the address.
        unsafe { bpf_probe_read_user(call.mount_attr as *const [u64; 3]) }.unwrap_or([0; 3])
    };
    let ret = syscall_ret(ctx);
    // SAFETY: as in sys_exit_mount.
    unsafe {
        fill_header(
            &raw mut (*e).header,
            call.kind,
            size_of::<PathEvent>(),
            p.start_ns,
            p.mnt_ns,
            current_mnt_ns(),
        );
        (*e).ret = ret;
        (*e).flags = call.flags;
        (*e).attr_set = attr[0];
        (*e).attr_clr = attr[1];
        (*e).propagation = attr[2];
        (*e).dfd = call.dfd;
        (*e).syscall = call.syscall;
        read_user_path(&raw mut (*e).path, call.path);
        read_user_path(&raw mut (*e).path2, call.path2);
    }
    // A directory removal that failed with EBUSY: a mountpoint in use.
    submit(entry, call.kind == kind::RMDIR && ret == EBUSY);
}

// open_tree(dfd, filename, flags): with OPEN_TREE_CLONE, a detached copy.
#[tracepoint(category = "syscalls", name = "sys_enter_open_tree")]
pub fn sys_enter_open_tree(ctx: TracePointContext) -> u32 {
    save::<3>(&ctx, kind::OPEN_TREE);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_open_tree")]
pub fn sys_exit_open_tree(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::OPEN_TREE, true) else {
        return 0;
    };
    let call = PathCall {
        kind: kind::OPEN_TREE,
        syscall: syscall::OPEN_TREE,
        flags: p.args[2],
        dfd: p.args[0] as i32,
        path: p.args[1],
        path2: 0,
        mount_attr: 0,
    };
    submit_path_event(&ctx, &p, call);
    0
}

// open_tree_attr(dfd, filename, flags, uattr, usize): Linux 6.15+; the
// loader skips it where the tracepoint does not exist.
#[tracepoint(category = "syscalls", name = "sys_enter_open_tree_attr")]
pub fn sys_enter_open_tree_attr(ctx: TracePointContext) -> u32 {
    save::<4>(&ctx, kind::OPEN_TREE);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_open_tree_attr")]
pub fn sys_exit_open_tree_attr(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::OPEN_TREE, true) else {
        return 0;
    };
    let call = PathCall {
        kind: kind::OPEN_TREE,
        syscall: syscall::OPEN_TREE_ATTR,
        flags: p.args[2],
        dfd: p.args[0] as i32,
        path: p.args[1],
        path2: 0,
        mount_attr: p.args[3],
    };
    submit_path_event(&ctx, &p, call);
    0
}

// mount_setattr(dfd, path, flags, uattr, usize)
#[tracepoint(category = "syscalls", name = "sys_enter_mount_setattr")]
pub fn sys_enter_mount_setattr(ctx: TracePointContext) -> u32 {
    save::<4>(&ctx, kind::MOUNT_SETATTR);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mount_setattr")]
pub fn sys_exit_mount_setattr(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::MOUNT_SETATTR, true) else {
        return 0;
    };
    let call = PathCall {
        kind: kind::MOUNT_SETATTR,
        syscall: 0,
        flags: p.args[2],
        dfd: p.args[0] as i32,
        path: p.args[1],
        path2: 0,
        mount_attr: p.args[3],
    };
    submit_path_event(&ctx, &p, call);
    0
}

// pivot_root(new_root, put_old)
#[tracepoint(category = "syscalls", name = "sys_enter_pivot_root")]
pub fn sys_enter_pivot_root(ctx: TracePointContext) -> u32 {
    save::<2>(&ctx, kind::PIVOT_ROOT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_pivot_root")]
pub fn sys_exit_pivot_root(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::PIVOT_ROOT, true) else {
        return 0;
    };
    let call = PathCall {
        kind: kind::PIVOT_ROOT,
        syscall: 0,
        flags: 0,
        dfd: AT_FDCWD,
        path: p.args[0],
        path2: p.args[1],
        mount_attr: 0,
    };
    submit_path_event(&ctx, &p, call);
    0
}
