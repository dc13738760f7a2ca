//! mountleak: the imperative shell around `monitor_model`.
//!
//! # Layout
//! - [`procfs`]: reads mount tables, processes and namespaces from /proc and
//!   (where the kernel has them) listmount/statmount; builds `Snapshot`s.
//! - [`ebpf`]: loads and attaches the probes, reads the ring buffer, decodes
//!   records into model inputs, reports kernel-side losses.
//! - [`config`] and [`cli`]: the TOML file and the flags over it.
//! - [`scan`]: the one-shot scan; [`check`]: "will removing this fail?";
//!   [`daemon`]: the long-running monitor; [`runtime`]: container engines.
//! - [`timeline`]: the event store and postmortem timelines; [`doctor`]:
//!   the node audit; [`fix`]: guarded remediation.
//! - [`output`]: findings as text or JSON (wall-clock times made here);
//!   [`sinks`]: where the daemon's news goes (stdout, and as configured
//!   traces, metrics, the event store).
//!
//! The leak logic itself lives in `monitor_model`, which does no I/O.

pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod ebpf;
pub mod fanotify;
pub mod fix;
pub mod output;
pub mod procfs;
pub mod runtime;
pub mod scan;
pub mod sinks;
pub mod timeline;

use monitor_model::{KernelFacts, ModelConfig};

/// The model's configuration from the file/flags and the kernel's facts.
pub fn model_config(cfg: &config::Config, kernel: KernelFacts) -> ModelConfig {
    ModelConfig {
        patterns: cfg.patterns(),
        reference: cfg.reference(),
        kernel,
        risk_grace_ns: u64::try_from(cfg.detect.risk_grace.as_nanos()).unwrap_or(u64::MAX),
    }
}
