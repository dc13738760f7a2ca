//! The programs, one module per concern. Syscall pairs follow one shape
//! (libbpf-tools' mountsnoop): the entry saves time, namespace and raw
//! arguments by thread id; the exit takes and deletes that entry, reads the
//! user strings (resident now: the kernel has just copied them), and fills a
//! record reserved in the ring buffer.

pub mod dirs;
pub mod mount;
pub mod ns;
pub mod process;

use aya_ebpf::maps::ring_buf::RingBufEntry;
use monitor_common::counter;

use crate::maps::{count, EVENTS};

/// Reserves a record, counting a full ring buffer as a lost event.
#[inline(always)]
fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(counter::RINGBUF_FULL);
    }
    entry
}

/// `AT_FDCWD` from `<linux/fcntl.h>`: for calls that take no dfd.
const AT_FDCWD: i32 = -100;
