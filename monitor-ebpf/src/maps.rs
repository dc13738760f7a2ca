//! Maps and globals shared by all programs. Userspace finds them by name.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    Global,
};
use monitor_common::{counter, KernelOffsets};

/// Records for userspace. 256 KiB holds about 220 of the largest records
/// (1.2 KiB); userspace usually loads it larger (`EbpfLoader::map_max_entries`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// When (`bpf_ktime_get_boot_ns`) a program last forced a wake-up of the
/// ring buffer's reader: `probes::submit` wakes it at most once per
/// `monitor_common::WAKEUP_INTERVAL_NS` for ordinary records.
#[map]
pub static LAST_WAKEUP: Array<u64> = Array::with_max_entries(1, 0);

/// What a `sys_enter_*` saw, kept for its `sys_exit_*`, by thread id. LRU so
/// that an entry whose exit never came (a thread killed mid-call) ages out
/// instead of filling the map.
#[map]
pub static PENDING: LruHashMap<u32, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU event counters, indexed by `monitor_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

/// Mount namespaces (inode numbers) whose forks and exits userspace wants.
/// The value is unused.
#[map]
pub static WATCHED_NS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Struct member offsets from the running kernel's BTF, patched in by the
/// loader. All zero means "not provided".
#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    task_tgid: 0,
    task_pid: 0,
    task_exit_code: 0,
    task_signal: 0,
    signal_live: 0,
});

/// 1 when `sched_process_exit` passes `group_dead` as its second argument
/// (the loader reads the arity from BTF). The value is a frozen read-only
/// constant, so the verifier prunes the branch that is not taken, and never
/// sees an access to an argument the tracepoint lacks.
#[unsafe(no_mangle)]
pub static EXIT_HAS_GROUP_DEAD: Global<u8> = Global::new(0);

/// A syscall's entry, waiting for its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub start_ns: u64,
    /// `monitor_common::kind` of the syscall; an exit of another kind means
    /// the entry is stale.
    pub kind: u32,
    /// Mount namespace at entry.
    pub mnt_ns: u32,
    /// Raw syscall arguments (pointers stay user pointers until exit).
    pub args: [u64; 6],
}

/// Adds one to a counter. Per-CPU, so a plain add is race-free: a tracepoint
/// program runs to completion on its CPU.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful lookup in this CPU's slot.
        unsafe { *slot += 1 }
    }
}

/// Whether userspace asked for forks and exits in this namespace.
#[inline(always)]
pub fn watched(mnt_ns: u32) -> bool {
    mnt_ns != 0 && WATCHED_NS.get_ptr(mnt_ns).is_some()
}
