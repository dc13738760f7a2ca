//! mountleak: the imperative shell around `monitor_model`.
//!
//! # Layout
//! - `procfs`: reads mount tables, processes and namespaces from /proc and
//!   (where the kernel has them) listmount/statmount; builds `Snapshot`s.
//! - `ebpf`: loads and attaches the probes, reads the ring buffer, decodes
//!   records into model inputs, reports kernel-side losses.
//! - `config`, `cli`, `scan`, `daemon`, `output`: the command line, the
//!   one-shot scan, the long-running daemon, and how findings are printed.
//!
//! The leak logic itself lives in `monitor_model`, which does no I/O.

pub mod ebpf;
pub mod procfs;
