//! Reading state from /proc (and, where the kernel has them, the nsfs
//! ioctls and listmount/statmount): the shell that fills
//! `monitor_model::Snapshot`.
//!
//! Owns: parsing mountinfo, clocks, kernel facts, process and namespace
//! enumeration, pins. May import std, libc, procfs, tracing and the model
//! types; never the eBPF side.
//!
//! - [`mountinfo`]: the exact `/proc/PID/mountinfo` parser.
//! - [`clock`]: CLOCK_BOOTTIME, /proc start times, wall-time conversion.
//! - [`kernel`]: [`KernelFacts`](monitor_model::KernelFacts) of this kernel.
//! - [`scan`]: the [`Scanner`] that builds snapshots.
//! - private: `process` (one /proc/PID), `statmount` and `nsenter` (tables
//!   of namespaces no process is in), `pins`, `sys` (raw syscalls/ioctls).

pub mod clock;
pub mod kernel;
pub mod mountinfo;
mod nsenter;
mod pins;
mod process;
pub mod scan;
mod statmount;
mod sys;

pub use kernel::read_kernel_facts;
pub use scan::{
    DeviceFilter, ScanError, ScanOptions, ScanOutput, ScanStats, Scanner, Support, TableRead,
    TableScope,
};
