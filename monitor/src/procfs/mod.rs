//! Reading state from /proc: the shell that fills `monitor_model::Snapshot`.
//!
//! - [`mountinfo`]: the exact `/proc/PID/mountinfo` parser.
//! - [`clock`]: CLOCK_BOOTTIME, /proc start times, wall-time conversion.
//! - [`kernel`]: [`KernelFacts`](monitor_model::KernelFacts) of this kernel.

pub mod clock;
pub mod kernel;
pub mod mountinfo;

pub use kernel::read_kernel_facts;
