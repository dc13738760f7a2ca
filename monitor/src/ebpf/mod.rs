//! Probes: loading, attaching, reading the ring buffer.
pub mod btf;
