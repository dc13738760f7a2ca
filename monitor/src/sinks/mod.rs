//! Where the daemon's news goes: stdout, and (as configured) traces,
//! metrics and the event store. Each sink sees every finding, every model
//! input (the raw story, for stores and counters), notices, and a status
//! tick once a second.
//!
//! A sink must never block the event path: one that does I/O hands work to
//! its own task or thread through a bounded queue, and counts what it had
//! to drop.

use monitor_model::{Finding, Input};
use serde_json::Value;

use crate::ebpf::Counters;
use crate::runtime::RuntimeStatus;

pub mod metrics;
pub mod otel;
pub mod stdout;

/// The sinks the configuration asks for, besides stdout.
pub fn from_config(cfg: &crate::config::Config) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    use anyhow::Context;
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    // The event store behind `mountleak timeline` (`[store]`).
    let store = crate::timeline::StoreSink::from_config(cfg);
    // Its write counters, for the metrics endpoint.
    let store_stats = store.as_ref().map(|s| s.handle());
    sinks.extend(store.map(|s| Box::new(s) as Box<dyn Sink>));
    // Traces first: the metrics endpoint shows the exporter's drop counts.
    let export_stats = cfg.export.traces.then(otel::ExportStats::new);
    if let Some(stats) = &export_stats {
        let sink = otel::OtelSink::start(cfg, std::sync::Arc::clone(stats))
            .context("setting up OTLP trace export ([export], OTEL_EXPORTER_OTLP_*)")?;
        sinks.push(Box::new(sink));
    }
    if cfg.metrics.enabled {
        // Validated with the config; a taken port must not stop detection:
        // say so and run without the endpoints.
        if let Ok(addr) = cfg.metrics.listen.parse() {
            let check = cfg.metrics.check.then(|| std::sync::Arc::new(cfg.clone()));
            match metrics::MetricsSink::start(addr, export_stats, store_stats, check) {
                Ok(sink) => sinks.push(Box::new(sink)),
                Err(e) => {
                    tracing::warn!(error = %e, "running without the metrics and health endpoints")
                }
            }
        }
    }
    Ok(sinks)
}

/// What the daemon knows about itself, once a second.
#[derive(Clone, Debug, Default)]
pub struct DaemonStatus {
    /// `syscalls`, `lean` or `off`.
    pub probes: &'static str,
    pub namespaces: usize,
    pub container_filesystems: usize,
    /// Open findings by kind.
    pub open_risks: usize,
    pub open_leaks: usize,
    pub kernel: Counters,
    pub model: monitor_model::ModelStats,
    pub runtimes: Vec<RuntimeStatus>,
    /// The startup scan is done and the probes (if any) are attached.
    pub ready: bool,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
}

/// A destination for the daemon's news. Every method has a default that
/// ignores it, so a sink implements what it cares about.
pub trait Sink: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// A finding, as it happens.
    fn finding(&mut self, _f: &Finding) {}

    /// Every input the model receives, after it was applied.
    fn input(&mut self, _input: &Input) {}

    /// A notice (`ready`, `lost`, `degraded`, `runtime`, `stopped`).
    fn notice(&mut self, _kind: &str, _message: &str, _fields: &Value) {}

    /// Once a second.
    fn status(&mut self, _status: &DaemonStatus) {}

    /// The daemon is stopping: flush what can be flushed quickly.
    fn shutdown(&mut self) {}
}
