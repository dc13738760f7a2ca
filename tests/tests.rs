//! mountleak's integration tests: real mounts, real namespaces, real probes.
//!
//! Most need root and carry `#[ignore = "needs root: …"]`, so a plain
//! `cargo test` as a user passes and says why they did not run;
//! `cargo xtask test` (what CI runs, as root) runs them all.

/// containerd for real: the adapter against a standalone containerd (ctr
/// and its CRI plugin driven like kubelet), and `mountleak run` naming the
/// container and pod in its warnings (issue 3).
mod containerd;
/// `mountleak run --json` on real leaks: the daemon's story with and
/// without probes, failed removals, lost events, no privileges.
mod daemon;
/// deploy/: the manifests, the ConfigMap and the systemd unit parse and
/// hold the promised settings.
mod deploy;
/// Docker for real: the adapter against a dockerd started by hand, and
/// `mountleak run`, `check` and `scan` around `docker stop`/`rm` (issue 3).
mod docker;
/// `mountleak doctor --json`: fixture trees of real-world unit files
/// (`--root`) and, as root, this machine's mounts and namespaces in a lab.
mod doctor;
/// Traces to a real OTLP collector (gRPC and HTTP), its outage, and the
/// metrics and health endpoints, with a real leak in a lab.
mod export;
/// `mountleak fix` on real leaks: each holder's case released and verified
/// by the resource itself; dry runs change nothing; bad input.
mod fix;
/// Self-tests of `support`: the lab does what the other tests assume.
mod lab;
/// `mountleak scan --json` on real leaks: findings, exit codes, remedies
/// run as printed.
mod leaks;
/// The eBPF probes against the running kernel.
mod probes;
/// /proc and listmount/statmount scanning of real namespaces.
mod procfs_scan;
/// Throwaway mount namespaces, overlay and loop mounts, holder processes.
mod support;
/// `mountleak timeline` and its event store: a real leak's story after the
/// holder exited and the daemon restarted, the HTML picture in headless
/// Chromium, kill -9 under heavy writing, a full or read-only store (issue 5).
mod timeline;
