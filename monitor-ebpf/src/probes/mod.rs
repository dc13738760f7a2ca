//! The programs, one module per concern. Syscall pairs follow one shape
//! (libbpf-tools' mountsnoop): the entry saves time, namespace and raw
//! arguments by thread id; the exit takes and deletes that entry, reads the
//! user strings (resident now: the kernel has just copied them), and fills a
//! record reserved in the ring buffer, and [`submit`] commits it, waking the
//! reader only when it must (see `monitor_common::WAKEUP_INTERVAL_NS`).

pub mod dirs;
pub mod mount;
pub mod ns;
pub mod process;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    maps::ring_buf::RingBufEntry,
};
use monitor_common::{counter, WAKEUP_INTERVAL_NS};

use crate::maps::{count, EVENTS, LAST_WAKEUP};
use crate::task::now;

/// Reserves a record, counting a full ring buffer as a lost event.
#[inline(always)]
fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(counter::RINGBUF_FULL);
    }
    entry
}

/// `-EBUSY`: a removal (umount, rmdir) that failed because something still
/// uses the mount. The daemon must explain it while the operator looks.
const EBUSY: i64 = -16;

/// Commits a record. The reader is woken only when no wake-up was forced in
/// the last `WAKEUP_INTERVAL_NS` (the reader drains again that long after a
/// wake-up, so every record submitted without one is read in time), when the
/// ring is a quarter full (so a burst cannot fill it while the reader waits),
/// or when the record is `urgent`. Adaptive wake-up (`submit(0)`) woke the
/// reader for nearly every record, and each wake-up preempted the traced
/// process on a small machine.
#[inline(always)]
fn submit<T: 'static>(entry: RingBufEntry<T>, urgent: bool) {
    let t = now();
    let slot = LAST_WAKEUP.get_ptr_mut(0);
    // SAFETY: the pointer comes from a successful lookup; CPUs race on it,
    // which at worst forces a wake-up too many (never one too few: a record
    // goes without one only if a wake-up was forced less than an interval
    // before it, and the reader drains an interval after each).
    let last = slot.map_or(0, |p| unsafe { *p });
    let wake = urgent
        || t.wrapping_sub(last) >= WAKEUP_INTERVAL_NS
        || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= EVENTS.query(BPF_RB_RING_SIZE as u64) / 4;
    if wake {
        if let Some(p) = slot {
            // SAFETY: as above.
            unsafe { *p = t }
        }
        entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    } else {
        entry.submit(BPF_RB_NO_WAKEUP as u64);
    }
}

/// `AT_FDCWD` from `<linux/fcntl.h>`: for calls that take no dfd.
const AT_FDCWD: i32 = -100;
