//! mountleak's eBPF programs: syscall tracepoints around every call that
//! creates, copies, moves or removes mounts or mount namespaces, plus the
//! `task_newtask`/`sched_process_*` BTF tracepoints that work without tracefs
//! and without taxing every syscall.
//!
//! Layout:
//! - `maps`: the ring buffer, enter→exit state, counters, the watched set and
//!   the globals userspace patches in before load.
//! - `task`: the record header and kernel reads (mount namespace, task ids).
//! - `probes::{mount, ns, dirs}`: `sys_enter_*`/`sys_exit_*` pairs.
//! - `probes::process`: `task_newtask`, `sched_process_fork`/`_exit`.
//!
//! Imports only `aya-ebpf` and `monitor-common` (the record layout).
#![no_std]
#![no_main]

mod maps;
mod probes;
mod task;

/// The kernel only lets GPL-compatible programs call `bpf_probe_read_kernel`,
/// `bpf_probe_read_user_str` and `bpf_get_current_task` (their helper protos
/// have `gpl_only = true`), so the programs are dual-licensed.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No panic can survive the verifier (it rejects the unbounded loop this
    // would need), so reaching here is impossible in a loaded program.
    loop {}
}
