//! The eBPF probes: load and attach them, read their ring buffer, turn
//! records into model inputs, and report what the kernel dropped.
//!
//! # Layout
//! - `btf`: reads struct member offsets from `/sys/kernel/btf/vmlinux` (the
//!   programs have no CO-RE; they get offsets as globals).
//! - `loader`: [`Probes::load`]: privileges, BTF, load, attach, degrade.
//! - `reader`: the tokio task draining the ring buffer into batches.
//! - `convert`: ring-buffer records → [`monitor_model::Input`].
//!
//! # Use
//! ```no_run
//! # async fn f() -> Result<(), mountleak::ebpf::EbpfError> {
//! use mountleak::ebpf::{ProbeMode, ProbeOptions, Probes};
//! let mut probes = Probes::load(ProbeOptions { mode: ProbeMode::Lean, ..Default::default() })?;
//! let mut batches = probes.events()?;
//! probes.watch(4026531841)?;
//! while let Some(batch) = batches.recv().await {
//!     // each batch is ordered by end time; feed it to the model
//! #   drop(batch);
//! }
//! # Ok(()) }
//! ```
//!
//! Imports aya, tokio, tracing, `monitor_common` and `monitor_model`.

pub mod btf;
mod convert;
mod loader;
mod reader;

use std::path::PathBuf;

pub use convert::{ProcResolver, Resolve};
pub use loader::{Probes, Skipped};

/// Which programs to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMode {
    /// Every program: syscall tracepoints (enter and exit of mount, umount,
    /// unshare, setns, clone, clone3, the new mount API, pivot_root, rmdir,
    /// unlinkat) plus the BTF tracepoints. Attaching any `syscalls/*`
    /// tracepoint routes every syscall on the machine through the tracing
    /// slow path (measured here: +23% on a getppid loop), and needs tracefs.
    Syscalls,
    /// Only `task_newtask`, `sched_process_fork` and `sched_process_exit`:
    /// no per-syscall cost, no tracefs. Sees namespaces made by clone, not by
    /// unshare or setns, and no mounts: the daemon pairs it with /proc scans.
    Lean,
}

/// How to load the probes. `Default` is what the daemon wants.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub mode: ProbeMode,
    /// Ring buffer size in bytes. The loader rounds it up to a power-of-two
    /// number of pages (a kernel requirement for BPF_MAP_TYPE_RINGBUF).
    pub ringbuf_bytes: u32,
    /// Where to read kernel BTF from.
    pub btf_path: PathBuf,
    /// Batches the channel holds before the reader waits. While it waits the
    /// ring buffer fills and the kernel counts what it drops.
    pub channel_batches: usize,
    /// Resolve relative path arguments against the caller's cwd or dfd.
    pub resolve_paths: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            mode: ProbeMode::Syscalls,
            // About 900 of the largest records (1.2 KiB).
            ringbuf_bytes: 1 << 20,
            btf_path: PathBuf::from(btf::VMLINUX_BTF),
            channel_batches: 64,
            resolve_paths: true,
        }
    }
}

/// Counters summed over CPUs. All only ever grow; compare two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records the kernel could not reserve: lost events. A rise should
    /// become `Input::Lost` (and a rescan).
    pub ringbuf_full: u64,
    /// Syscall exits with no saved entry (the pending map was full, or an
    /// entry was stale). The call was not reported.
    pub missing_entry: u64,
    /// Kernel reads that failed (task, nsproxy); the event carries ns 0.
    pub kernel_read: u64,
    /// Records userspace could not decode (skipped).
    pub decode_errors: u64,
}

/// Why the probes could not be loaded or used. Each says what is missing.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this binary was built without its eBPF programs (bpf-linker/nightly missing at build time): run `cargo xtask setup` and rebuild"
    )]
    NotBuilt,
    #[error("loading eBPF needs root, or CAP_BPF and CAP_PERFMON: this process lacks {missing}")]
    NotPrivileged { missing: &'static str },
    #[error("cannot read kernel BTF: {0}")]
    Btf(#[from] btf::BtfError),
    #[error("cannot read kernel BTF for tp_btf programs from /sys/kernel/btf/vmlinux: {0}")]
    AyaBtf(#[source] aya::BtfError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} `{name}` (stale build?)")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("the kernel refused program `{program}` ({kind}): {errno}{hint}")]
    ProgramRefused {
        program: &'static str,
        kind: &'static str,
        errno: std::io::Error,
        /// A hint where the errno has a known cause, else empty.
        hint: &'static str,
        /// The verifier's log, for debugging (not in the message).
        verifier_log: String,
    },
    #[error("attaching `{program}` to {target} failed: {source}")]
    Attach {
        program: &'static str,
        target: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("mount namespace {0} is not a 32-bit inode number")]
    NsOutOfRange(u64),
    #[error("events() was already called: the ring buffer has one reader")]
    EventsTaken,
    #[error("events() must be called inside a tokio runtime")]
    NoRuntime,
    #[error("watching the ring buffer fd: {0}")]
    Io(#[from] std::io::Error),
}
