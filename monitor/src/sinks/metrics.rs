//! Prometheus metrics and health endpoints: `/metrics` (text format 0.0.4),
//! `/healthz` (liveness: the daemon's loop is turning) and `/readyz`
//! (readiness: the startup scan is done and the probes are attached).
//!
//! The sink updates atomics on the event path (no locks on the hot path
//! but the label families' maps, which are read-mostly) and the server
//! task encodes them when scraped. Gauges that are the daemon's state
//! (open findings, namespaces, runtimes) are set from the once-a-second
//! status; counters of what happened (findings, events) count as it
//! happens. Export counters are read from the OTLP sink's shared
//! [`ExportStats`] at scrape time.
//!
//! Owns: the metric names (README "Metrics" lists them) and the listener.
//! May import: prometheus-client, hyper (through `server`), the model's
//! types, the daemon's status.

mod server;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use monitor_model::{Call, ContainerEvent, Finding, Input, ProcessEventKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::otel::ExportStats;
use super::{DaemonStatus, Sink};
use crate::timeline::writer::WriterHandle;

pub use server::ServeError;

/// Liveness fails when the daemon's loop has not called in for this long
/// (it ticks every second; a scan of a huge host takes a few).
const STALL_AFTER_SECS: i64 = 30;

type Labels = Vec<(&'static str, String)>;

/// What the HTTP side reads.
#[derive(Debug)]
pub struct Shared {
    registry: Registry,
    ready: AtomicBool,
    /// Seconds since `born` of the last call from the daemon's loop; -1
    /// before the first.
    heartbeat: AtomicI64,
    born: Instant,
}

impl Shared {
    fn beat(&self) {
        let now = self.born.elapsed().as_secs() as i64;
        self.heartbeat.store(now, Ordering::Relaxed);
    }

    /// Live: the loop called in recently, or has not started yet (the
    /// startup scan is readiness's business).
    pub fn live(&self) -> Result<(), String> {
        let last = self.heartbeat.load(Ordering::Relaxed);
        if last < 0 {
            return Ok(());
        }
        let idle = self.born.elapsed().as_secs() as i64 - last;
        if idle > STALL_AFTER_SECS {
            return Err(format!("the daemon's loop has not run for {idle} s"));
        }
        Ok(())
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The metrics the sink writes.
struct Metrics {
    findings: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    open: Family<Labels, Gauge>,
    namespaces: Gauge,
    container_filesystems: Gauge,
    kernel_lost: Family<Labels, Counter>,
    runtime_connected: Family<Labels, Gauge>,
    runtime_reconnects: Family<Labels, Gauge>,
    model: Family<Labels, Gauge>,
    probes: Family<Labels, Gauge>,
    ready: Gauge,
    uptime: Gauge,
}

pub struct MetricsSink {
    m: Metrics,
    /// The events counters by (source, type), so the event path does not
    /// build a label set per input (the family's map is the slow path).
    events: std::collections::HashMap<(&'static str, &'static str), Counter>,
    shared: Arc<Shared>,
    /// The kernel's totals at the last status, to count the rise.
    last_kernel: crate::ebpf::Counters,
    _server: server::Handle,
}

impl MetricsSink {
    /// Registers the metrics and starts the listener on the daemon's
    /// runtime. `export`: the OTLP sink's counts, when traces are on.
    pub fn start(
        listen: std::net::SocketAddr,
        export: Option<Arc<ExportStats>>,
        store: Option<WriterHandle>,
        check: Option<Arc<crate::config::Config>>,
    ) -> Result<MetricsSink, ServeError> {
        let (m, shared) = Self::registry(export, store);
        let handle = server::serve(listen, Arc::clone(&shared), check)?;
        Ok(MetricsSink {
            m,
            events: Default::default(),
            shared,
            last_kernel: Default::default(),
            _server: handle,
        })
    }

    /// Where it listens (the port when 0 was asked).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self._server.addr
    }

    fn registry(
        export: Option<Arc<ExportStats>>,
        store: Option<WriterHandle>,
    ) -> (Metrics, Arc<Shared>) {
        let mut r = Registry::with_prefix("mountleak");
        let m = Metrics {
            findings: Family::default(),
            events: Family::default(),
            open: Family::default(),
            namespaces: Gauge::default(),
            container_filesystems: Gauge::default(),
            kernel_lost: Family::default(),
            runtime_connected: Family::default(),
            runtime_reconnects: Family::default(),
            model: Family::default(),
            probes: Family::default(),
            ready: Gauge::default(),
            uptime: Gauge::default(),
        };
        r.register(
            "findings",
            "Findings reported, by kind (risk, leak, failed_removal, removal_warning, resolved)",
            m.findings.clone(),
        );
        r.register(
            "events",
            "Inputs the model received, by source (probe, procfs, runtime, kernel) and type",
            m.events.clone(),
        );
        r.register(
            "open_findings",
            "Findings open now, by kind (risk, leak): the mounts held right now",
            m.open.clone(),
        );
        r.register(
            "namespaces",
            "Mount namespaces tracked",
            m.namespaces.clone(),
        );
        r.register(
            "container_filesystems",
            "Container filesystems (mounts matching the container patterns) tracked",
            m.container_filesystems.clone(),
        );
        r.register(
            "kernel_lost_events",
            "Kernel events lost, by reason (ring_buffer_full, missing_entry, decode_error); each loss triggers a full rescan",
            m.kernel_lost.clone(),
        );
        r.register(
            "runtime_connected",
            "1 when the container runtime's API answers, by runtime",
            m.runtime_connected.clone(),
        );
        r.register(
            "runtime_reconnects",
            "Times the runtime connection was lost and made again, by runtime",
            m.runtime_reconnects.clone(),
        );
        r.register(
            "model",
            "The model's own counts (inputs, duplicates, late_events, stale_tables, snapshots, lost_events)",
            m.model.clone(),
        );
        r.register(
            "probes",
            "1 for the probe mode in use (syscalls, lean, off)",
            m.probes.clone(),
        );
        r.register(
            "ready",
            "1 once the startup scan is done and the probes are attached",
            m.ready.clone(),
        );
        r.register(
            "uptime_seconds",
            "Seconds since the daemon started",
            m.uptime.clone(),
        );
        if let Some(stats) = export {
            r.register_collector(Box::new(ExportCollector(stats)));
        }
        if let Some(store) = store {
            r.register_collector(Box::new(StoreCollector(store)));
        }
        let shared = Arc::new(Shared {
            registry: r,
            ready: AtomicBool::new(false),
            heartbeat: AtomicI64::new(-1),
            born: Instant::now(),
        });
        (m, shared)
    }

    fn event(&mut self, source: &'static str, kind: &'static str) {
        let family = &self.m.events;
        self.events
            .entry((source, kind))
            .or_insert_with(|| {
                family
                    .get_or_create(&vec![("source", source.into()), ("type", kind.into())])
                    .clone()
            })
            .inc();
    }
}

/// The probe's name for a call.
fn call_name(call: &Call) -> &'static str {
    match call {
        Call::Mount { .. } => "mount",
        Call::Umount { .. } => "umount",
        Call::Unshare { .. } => "unshare",
        Call::Setns { .. } => "setns",
        Call::Clone { .. } => "clone",
        Call::NewTask { .. } => "newtask",
        Call::MoveMount { .. } => "move_mount",
        Call::OpenTree { .. } => "open_tree",
        Call::Fsmount { .. } => "fsmount",
        Call::MountSetattr { .. } => "mount_setattr",
        Call::PivotRoot { .. } => "pivot_root",
        Call::Rmdir { .. } => "rmdir",
    }
}

impl Sink for MetricsSink {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn finding(&mut self, f: &Finding) {
        self.m
            .findings
            .get_or_create(&vec![("kind", f.kind.as_str().into())])
            .inc();
    }

    fn input(&mut self, input: &Input) {
        match input {
            Input::Syscall(ev) => self.event("probe", call_name(&ev.call)),
            Input::Process(p) => self.event(
                "probe",
                match p.kind {
                    ProcessEventKind::Fork { .. } => "fork",
                    ProcessEventKind::Exit { .. } => "exit",
                },
            ),
            Input::Snapshot(_) => self.event("procfs", "snapshot"),
            Input::Lost { .. } => self.event("kernel", "lost"),
            // Time passing is not an event.
            Input::Tick { .. } => {}
            Input::Container(c) => self.event(
                "runtime",
                match c {
                    ContainerEvent::Seen { .. } => "container_seen",
                    ContainerEvent::Stopped { .. } => "container_stopped",
                    ContainerEvent::Removed { .. } => "container_removed",
                    ContainerEvent::RemovalFailed { .. } => "container_removal_failed",
                    ContainerEvent::Inventory { .. } => "inventory",
                },
            ),
        }
    }

    fn notice(&mut self, kind: &str, _message: &str, _fields: &Value) {
        if kind == "ready" {
            self.m.ready.set(1);
            self.shared.ready.store(true, Ordering::Relaxed);
        }
        self.shared.beat();
    }

    fn status(&mut self, s: &DaemonStatus) {
        let m = &self.m;
        m.open
            .get_or_create(&vec![("kind", "risk".into())])
            .set(s.open_risks as i64);
        m.open
            .get_or_create(&vec![("kind", "leak".into())])
            .set(s.open_leaks as i64);
        m.namespaces.set(s.namespaces as i64);
        m.container_filesystems.set(s.container_filesystems as i64);
        let k = &s.kernel;
        let before = &self.last_kernel;
        for (reason, now, was) in [
            ("ring_buffer_full", k.ringbuf_full, before.ringbuf_full),
            ("missing_entry", k.missing_entry, before.missing_entry),
            ("decode_error", k.decode_errors, before.decode_errors),
            ("kernel_read", k.kernel_read, before.kernel_read),
        ] {
            m.kernel_lost
                .get_or_create(&vec![("reason", reason.into())])
                .inc_by(now.saturating_sub(was));
        }
        self.last_kernel = s.kernel;
        for r in &s.runtimes {
            let l = vec![("runtime", r.runtime.to_string())];
            m.runtime_connected
                .get_or_create(&l)
                .set(i64::from(r.connected));
            m.runtime_reconnects
                .get_or_create(&l)
                .set(r.reconnects as i64);
        }
        let ms = &s.model;
        for (name, v) in [
            ("inputs", ms.inputs),
            ("duplicates", ms.duplicates),
            ("late_events", ms.late_events),
            ("stale_tables", ms.stale_tables),
            ("snapshots", ms.snapshots),
            ("lost_events", ms.lost_events),
        ] {
            m.model
                .get_or_create(&vec![("count", name.into())])
                .set(v as i64);
        }
        for mode in ["syscalls", "lean", "off"] {
            m.probes
                .get_or_create(&vec![("mode", mode.into())])
                .set(i64::from(s.probes == mode));
        }
        m.ready.set(i64::from(s.ready));
        self.shared.ready.store(s.ready, Ordering::Relaxed);
        m.uptime.set(s.uptime_secs as i64);
        self.shared.beat();
    }
}

/// The OTLP exporter's counts, read at scrape time.
#[derive(Debug)]
struct ExportCollector(Arc<ExportStats>);

impl Collector for ExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let exported = ConstCounter::new(load(&s.exported));
        exported.encode(encoder.encode_descriptor(
            "export_spans",
            "Spans the OTLP collector accepted",
            None,
            exported.metric_type(),
        )?)?;
        let dropped = encoder.encode_descriptor(
            "export_dropped_spans",
            "Spans dropped by the OTLP exporter, by reason (queue_full: the collector is down or slow; export_failed)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let mut family = dropped;
        for (reason, v) in [
            ("queue_full", load(&s.dropped_queue_full)),
            ("export_failed", load(&s.dropped_export_failed)),
        ] {
            let labels = [("reason", reason)];
            ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
        }
        let failed = ConstCounter::new(load(&s.failed_exports));
        failed.encode(encoder.encode_descriptor(
            "export_failed_requests",
            "OTLP export requests that failed or timed out",
            None,
            failed.metric_type(),
        )?)?;
        let queued = ConstGauge::new(s.pending() as i64);
        queued.encode(encoder.encode_descriptor(
            "export_queue_spans",
            "Spans waiting for the OTLP exporter",
            None,
            queued.metric_type(),
        )?)?;
        let up = ConstGauge::new(i64::from(s.up.load(Ordering::Relaxed)));
        up.encode(encoder.encode_descriptor(
            "export_up",
            "1 when the last OTLP export succeeded (or none was tried yet)",
            None,
            up.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The event store's writer counts, read at scrape time.
#[derive(Debug)]
struct StoreCollector(WriterHandle);

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let mut family = encoder.encode_descriptor(
            "store_dropped_events",
            "Events the event store did not keep, by reason (queue_full, write_failed): gaps in `mountleak timeline`",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, v) in [
            ("queue_full", s.dropped_queue_full),
            ("write_failed", s.dropped_write_failed),
        ] {
            ConstCounter::new(v).encode(family.encode_family(&[("reason", reason)])?)?;
        }
        let committed = ConstCounter::new(s.committed);
        committed.encode(encoder.encode_descriptor(
            "store_committed_events",
            "Events written to the event store",
            None,
            committed.metric_type(),
        )?)?;
        let healthy = ConstGauge::new(i64::from(s.healthy));
        healthy.encode(encoder.encode_descriptor(
            "store_healthy",
            "1 when the event store's last write succeeded",
            None,
            healthy.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeStatus;

    #[test]
    fn the_text_holds_what_the_daemon_said() {
        let stats = ExportStats::new();
        stats.dropped_queue_full.store(3, Ordering::Relaxed);
        let (m, shared) = MetricsSink::registry(Some(Arc::clone(&stats)), None);
        let mut sink = MetricsSink {
            m,
            events: Default::default(),
            shared: Arc::clone(&shared),
            last_kernel: Default::default(),
            _server: server::Handle::none(),
        };
        assert!(!shared.ready());
        let status = DaemonStatus {
            probes: "lean",
            namespaces: 7,
            container_filesystems: 2,
            open_risks: 1,
            open_leaks: 0,
            kernel: crate::ebpf::Counters {
                ringbuf_full: 5,
                ..Default::default()
            },
            runtimes: vec![RuntimeStatus {
                runtime: "docker",
                connected: true,
                ..Default::default()
            }],
            ready: true,
            ..Default::default()
        };
        sink.status(&status);
        sink.status(&status);
        sink.input(&Input::Lost { at: 1, count: 5 });
        sink.input(&Input::Tick { now: 2 });
        let text = shared.encode().unwrap();
        for line in [
            "mountleak_open_findings{kind=\"risk\"} 1",
            "mountleak_open_findings{kind=\"leak\"} 0",
            "mountleak_namespaces 7",
            "mountleak_container_filesystems 2",
            // Counted once although two statuses carried the same total.
            "mountleak_kernel_lost_events_total{reason=\"ring_buffer_full\"} 5",
            "mountleak_runtime_connected{runtime=\"docker\"} 1",
            "mountleak_probes{mode=\"lean\"} 1",
            "mountleak_events_total{source=\"kernel\",type=\"lost\"} 1",
            "mountleak_export_dropped_spans_total{reason=\"queue_full\"} 3",
            "mountleak_ready 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(shared.ready());
        assert!(shared.live().is_ok());
    }
}
