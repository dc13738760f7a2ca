//! Directory removal: since Linux 3.18, removing a mountpoint detaches the
//! copies of that mount in other namespaces (commit 8ed936b5671b, "vfs:
//! Lazily remove mounts on unlinked files and directories"), so the model
//! needs to see rmdir and unlinkat(AT_REMOVEDIR).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use monitor_common::{kind, syscall, AT_REMOVEDIR};

use super::{
    mount::{submit_path_event, PathCall},
    AT_FDCWD,
};
use crate::task::{save, syscall_arg, take};

// rmdir(pathname)
#[tracepoint(category = "syscalls", name = "sys_enter_rmdir")]
pub fn sys_enter_rmdir(ctx: TracePointContext) -> u32 {
    save::<1>(&ctx, kind::RMDIR);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_rmdir")]
pub fn sys_exit_rmdir(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::RMDIR, true) else {
        return 0;
    };
    let call = PathCall {
        kind: kind::RMDIR,
        syscall: syscall::RMDIR,
        flags: 0,
        dfd: AT_FDCWD,
        path: p.args[0],
        path2: 0,
        mount_attr: 0,
    };
    submit_path_event(&ctx, &p, call);
    0
}

// unlinkat(dfd, pathname, flag): only directory removals are kept; file
// unlinks are far more frequent and never detach mounts of other namespaces
// unless the file is a bind-mount target, which the model does not track.
#[tracepoint(category = "syscalls", name = "sys_enter_unlinkat")]
pub fn sys_enter_unlinkat(ctx: TracePointContext) -> u32 {
    if syscall_arg(&ctx, 2) & AT_REMOVEDIR != 0 {
        save::<3>(&ctx, kind::RMDIR);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlinkat")]
pub fn sys_exit_unlinkat(ctx: TracePointContext) -> u32 {
    let Some(p) = take(kind::RMDIR, false) else {
        return 0;
    };
    let call = PathCall {
        kind: kind::RMDIR,
        syscall: syscall::UNLINKAT,
        flags: p.args[2],
        dfd: p.args[0] as i32,
        path: p.args[1],
        path2: 0,
        mount_attr: 0,
    };
    submit_path_event(&ctx, &p, call);
    0
}
