//! The OTLP exporter and its queue: finished spans go from the event path
//! into a bounded queue (a push, never a wait) and a thread of its own
//! batches them and sends them with opentelemetry-otlp over gRPC or
//! HTTP/protobuf.
//!
//! The exporter runs on its own thread with its own single-threaded tokio
//! runtime, so a collector that is down, slow or retrying cannot take a
//! worker from the daemon's runtime, and shutdown can wait for the last
//! batch with a plain timeout. When the queue is full or an export fails,
//! the spans are dropped and counted ([`ExportStats`], shared with the
//! metrics sink); the first failure is logged, and so is the recovery.
//!
//! Configuration: the `[export]` section and flags first, then the standard
//! `OTEL_EXPORTER_OTLP_*` variables, then the OTLP defaults. That is the
//! OpenTelemetry SDKs' rule (programmatic configuration wins over the
//! environment); opentelemetry-otlp applies it itself for endpoint, headers,
//! timeout and compression, and this module for protocol and TLS files,
//! which it does not read.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing::{info, warn};

use crate::config::Export;

/// How long shutdown waits for the last batch to leave.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    fn parse(s: &str) -> Option<Protocol> {
        match s.trim() {
            "grpc" => Some(Protocol::Grpc),
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{var}={value:?}: expected grpc or http/protobuf (http/json is not supported)")]
    Protocol { var: String, value: String },
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a client certificate needs a client key too (and the other way round)")]
    HalfIdentity,
    #[error("bad OTLP header {0:?}")]
    Header(String),
    #[error("building the HTTP client: {0}")]
    HttpClient(String),
    #[error("building the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("starting the exporter thread: {0}")]
    Thread(std::io::Error),
    #[error("the exporter thread ended before it was ready")]
    ThreadGone,
}

/// Counts shared between the exporter and the metrics endpoint.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans accepted into the queue.
    pub queued: AtomicU64,
    /// Spans the collector acknowledged.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full (the collector is down or
    /// slower than the event rate).
    pub dropped_queue_full: AtomicU64,
    /// Spans dropped because their export failed or timed out.
    pub dropped_export_failed: AtomicU64,
    /// Export requests that failed.
    pub failed_exports: AtomicU64,
    /// The last export succeeded (or none was tried yet).
    pub up: AtomicBool,
}

impl ExportStats {
    pub fn new() -> Arc<ExportStats> {
        Arc::new(ExportStats {
            up: AtomicBool::new(true),
            ..ExportStats::default()
        })
    }

    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed)
            + self.dropped_export_failed.load(Ordering::Relaxed)
    }

    /// Spans in the queue or in flight.
    pub fn pending(&self) -> u64 {
        self.queued.load(Ordering::Relaxed).saturating_sub(
            self.exported.load(Ordering::Relaxed)
                + self.dropped_export_failed.load(Ordering::Relaxed),
        )
    }
}

/// The exporter settings after flags, file and environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub protocol: Protocol,
    /// `None`: opentelemetry-otlp reads the endpoint variables or uses the
    /// OTLP default for the protocol.
    pub endpoint: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub queue_size: usize,
    pub max_batch: usize,
    pub batch_delay: Duration,
}

impl Settings {
    /// Resolves `[export]` against the environment (`env` is
    /// `std::env::var` in production, a map in tests).
    pub fn resolve(
        cfg: &Export,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ExportError> {
        // Signal-specific variables win over the general ones (OTLP exporter spec).
        let var = |suffix: &str| -> Option<(String, String)> {
            [
                format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"),
                format!("OTEL_EXPORTER_OTLP_{suffix}"),
            ]
            .into_iter()
            .find_map(|name| {
                let v = env(&name).filter(|v| !v.trim().is_empty())?;
                Some((name, v))
            })
        };
        let protocol = if !cfg.protocol.is_empty() {
            Protocol::parse(&cfg.protocol).ok_or_else(|| ExportError::Protocol {
                var: "export.protocol".into(),
                value: cfg.protocol.clone(),
            })?
        } else if let Some((name, value)) = var("PROTOCOL") {
            Protocol::parse(&value).ok_or(ExportError::Protocol { var: name, value })?
        } else {
            Protocol::Grpc
        };
        let endpoint = (!cfg.endpoint.is_empty()).then(|| match protocol {
            Protocol::Grpc => cfg.endpoint.clone(),
            Protocol::HttpProtobuf => http_traces_url(&cfg.endpoint),
        });
        let path = |p: &Path, suffix: &str| -> Option<PathBuf> {
            if p.as_os_str().is_empty() {
                var(suffix).map(|(_, v)| PathBuf::from(v))
            } else {
                Some(p.to_path_buf())
            }
        };
        Ok(Settings {
            protocol,
            endpoint,
            headers: cfg.headers.clone(),
            timeout: cfg.timeout,
            ca_file: path(&cfg.ca_file, "CERTIFICATE"),
            client_cert: path(&cfg.client_cert, "CLIENT_CERTIFICATE"),
            client_key: path(&cfg.client_key, "CLIENT_KEY"),
            queue_size: cfg.queue_size,
            max_batch: cfg.max_batch,
            batch_delay: cfg.batch_delay,
        })
    }

    /// What the logs say about where spans go.
    pub fn describe(&self) -> String {
        format!(
            "{} to {}",
            self.protocol.as_str(),
            self.endpoint
                .as_deref()
                .unwrap_or("the OTEL_EXPORTER_OTLP_* endpoint (or the OTLP default)")
        )
    }

    fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ExportError> {
        std::fs::read(path).map_err(|source| ExportError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    }

    /// (CA PEM, client certificate + key PEM) when configured.
    #[allow(clippy::type_complexity)]
    fn tls_files(&self) -> Result<(Option<Vec<u8>>, Option<(Vec<u8>, Vec<u8>)>), ExportError> {
        let ca = match &self.ca_file {
            Some(p) => Some(Self::read("the OTLP CA file", p)?),
            None => None,
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((
                Self::read("the OTLP client certificate", c)?,
                Self::read("the OTLP client key", k)?,
            )),
            (None, None) => None,
            _ => return Err(ExportError::HalfIdentity),
        };
        Ok((ca, identity))
    }

    /// Builds the exporter. Must run inside a tokio runtime: tonic's
    /// channel spawns its connection task there.
    fn build(&self, resource: &Resource) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
        let (ca, identity) = self.tls_files()?;
        let mut exporter = match self.protocol {
            Protocol::Grpc => {
                let mut metadata = MetadataMap::new();
                for (k, v) in &self.headers {
                    let key = k
                        .parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>()
                        .map_err(|_| ExportError::Header(k.clone()))?;
                    let value = v.parse().map_err(|_| ExportError::Header(k.clone()))?;
                    metadata.insert(key, value);
                }
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                    .with_metadata(metadata);
                if let Some(e) = &self.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(t) = self.timeout {
                    b = b.with_timeout(t);
                }
                if ca.is_some() || identity.is_some() {
                    let mut tls = ClientTlsConfig::new().with_enabled_roots();
                    if let Some(ca) = &ca {
                        tls = tls.ca_certificate(Certificate::from_pem(ca));
                    }
                    if let Some((cert, key)) = &identity {
                        tls = tls.identity(Identity::from_pem(cert, key));
                    }
                    b = b.with_tls_config(tls);
                }
                b.build()?
            }
            Protocol::HttpProtobuf => {
                // reqwest is built without a crypto provider of its own; rustls
                // uses the process default, which is ring (the same as tonic's
                // `tls-ring`). Installing twice is harmless.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut client = reqwest::Client::builder();
                if let Some(t) = self.timeout {
                    client = client.timeout(t);
                }
                if let Some(ca) = &ca {
                    let cert = reqwest::Certificate::from_pem(ca)
                        .map_err(|e| ExportError::HttpClient(e.to_string()))?;
                    client = client.add_root_certificate(cert);
                }
                if let Some((cert, key)) = &identity {
                    let mut pem = cert.clone();
                    pem.push(b'\n');
                    pem.extend_from_slice(key);
                    let id = reqwest::Identity::from_pem(&pem)
                        .map_err(|e| ExportError::HttpClient(e.to_string()))?;
                    client = client.identity(id);
                }
                let client = client
                    .build()
                    .map_err(|e| ExportError::HttpClient(e.to_string()))?;
                let headers = self
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_http_client(client)
                    .with_headers(headers);
                if let Some(e) = &self.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(t) = self.timeout {
                    b = b.with_timeout(t);
                }
                b.build()?
            }
        };
        exporter.set_resource(resource);
        Ok(exporter)
    }
}

/// A configured endpoint as the URL traces are posted to: like
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, a bare base URL gets `/v1/traces`.
fn http_traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        endpoint.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// The resource every span carries: `service.name=mountleak`, `host.name`,
/// `k8s.node.name` from `NODE_NAME` (the downward API), and whatever
/// `OTEL_RESOURCE_ATTRIBUTES` / `OTEL_SERVICE_NAME` say (those win).
pub fn resource(env: impl Fn(&str) -> Option<String>) -> Resource {
    let given = env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let has = |key: &str| {
        given
            .split(',')
            .any(|kv| kv.split('=').next().map(str::trim) == Some(key))
    };
    let mut attrs = Vec::new();
    if env("OTEL_SERVICE_NAME").is_none() && !has("service.name") {
        attrs.push(KeyValue::new("service.name", "mountleak"));
    }
    if !has("host.name") {
        if let Some(h) = hostname() {
            attrs.push(KeyValue::new("host.name", h));
        }
    }
    if !has("k8s.node.name") {
        if let Some(node) = env("NODE_NAME").filter(|n| !n.is_empty()) {
            attrs.push(KeyValue::new("k8s.node.name", node));
        }
    }
    attrs.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    // `builder()` applies the SDK's detectors (OTEL_RESOURCE_ATTRIBUTES,
    // OTEL_SERVICE_NAME, telemetry.sdk.*); ours only fill what they left.
    Resource::builder().with_attributes(attrs).build()
}

/// The UTS hostname. In a pod without hostNetwork this is the pod's name,
/// which is why the DaemonSet sets `host.name` from the node name through
/// OTEL_RESOURCE_ATTRIBUTES.
fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

/// The queue between the event path and the exporter thread: a bounded
/// buffer under a lock the exporter holds only to take a batch. The
/// exporter sleeps until the batch delay passes or a batch's worth is
/// waiting, so a span costs the event path a push, not a thread wakeup
/// (a wakeup per span, as a channel gives, cost more than building it).
struct Queue {
    spans: Mutex<VecDeque<SpanData>>,
    capacity: usize,
    /// Spans that make a full batch: the exporter is woken early.
    batch: usize,
    wake: tokio::sync::Notify,
    closed: AtomicBool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SpanData>> {
        // A panic while holding it cannot leave the deque inconsistent.
        self.spans.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The event path's end of the queue.
pub struct Pipeline {
    queue: Arc<Queue>,
    stats: Arc<ExportStats>,
    done: Option<std::sync::mpsc::Receiver<()>>,
}

impl Pipeline {
    /// Builds the exporter on a new thread and starts the batch loop there.
    /// Returns once the exporter is built (or failed to build).
    pub fn start(
        settings: Settings,
        resource: Resource,
        stats: Arc<ExportStats>,
    ) -> Result<Pipeline, ExportError> {
        let queue = Arc::new(Queue {
            spans: Mutex::new(VecDeque::with_capacity(settings.max_batch)),
            capacity: settings.queue_size,
            batch: settings.max_batch,
            wake: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), ExportError>>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread_stats = Arc::clone(&stats);
        let thread_queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ExportError::Thread(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let exporter = match settings.build(&resource) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    batch_loop(exporter, &thread_queue, &settings, &thread_stats).await;
                });
                let _ = done_tx.send(());
            })
            .map_err(ExportError::Thread)?;
        ready_rx.recv().map_err(|_| ExportError::ThreadGone)??;
        Ok(Pipeline {
            queue,
            stats,
            done: Some(done_rx),
        })
    }

    /// Hands a finished span to the exporter; never waits (the lock is only
    /// ever held for a push or to take a batch). Returns false, and counts
    /// it, when the queue is full or closed.
    pub fn send(&self, span: SpanData) -> bool {
        let q = &self.queue;
        let mut spans = q.lock();
        if spans.len() >= q.capacity || q.closed.load(Ordering::Relaxed) {
            drop(spans);
            // Logged by the exporter thread (once per rise), not here.
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        spans.push_back(span);
        let waiting = spans.len();
        drop(spans);
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if waiting == q.batch {
            q.wake.notify_one();
        }
        true
    }

    /// Closes the queue and waits up to `timeout` for the last batches.
    pub fn shutdown(&mut self, timeout: Duration) {
        self.close();
        if let Some(done) = self.done.take() {
            if done.recv_timeout(timeout).is_err() {
                warn!(
                    pending = self.stats.pending(),
                    "the OTLP collector did not take the last spans in time; dropping them"
                );
            }
        }
    }

    fn close(&self) {
        self.queue.closed.store(true, Ordering::Relaxed);
        self.queue.wake.notify_one();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // The thread exports what is left and ends; nobody waits for it.
        self.close();
    }
}

/// Takes batches of at most `max_batch`: when that many wait, or
/// `batch_delay` after the last batch, or at shutdown; exports each with a
/// deadline.
async fn batch_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    queue: &Queue,
    settings: &Settings,
    stats: &ExportStats,
) {
    // The whole export, retries included, must end: opentelemetry-otlp
    // retries a refused connection a few times with backoff.
    let deadline = settings.timeout.unwrap_or(Duration::from_secs(10)) + Duration::from_secs(5);
    let mut queue_drops_logged = 0;
    let mut failing_since_drops: Option<u64> = None;
    loop {
        let closed = queue.closed.load(Ordering::Relaxed);
        if !closed && queue.lock().len() < settings.max_batch {
            tokio::select! {
                () = queue.wake.notified() => {}
                () = tokio::time::sleep(settings.batch_delay) => {}
            }
        }
        let batch: Vec<SpanData> = {
            let mut spans = queue.lock();
            let n = spans.len().min(settings.max_batch);
            spans.drain(..n).collect()
        };
        if batch.is_empty() {
            if queue.closed.load(Ordering::Relaxed) {
                break;
            }
            continue;
        }
        let n = batch.len() as u64;
        let result = tokio::time::timeout(deadline, exporter.export(batch))
            .await
            .map_err(|_| format!("no answer within {deadline:?}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
                stats.up.store(true, Ordering::Relaxed);
                if let Some(before) = failing_since_drops.take() {
                    info!(
                        dropped = stats.dropped().saturating_sub(before),
                        "OTLP export resumed"
                    );
                }
            }
            Err(error) => {
                stats.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
                stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                stats.up.store(false, Ordering::Relaxed);
                if failing_since_drops.is_none() {
                    warn!(%error, spans = n, "OTLP export failed; dropping spans (counted in mountleak_export_dropped_spans_total) until the collector answers");
                    failing_since_drops = Some(stats.dropped() - n);
                }
            }
        }
        let full = stats.dropped_queue_full.load(Ordering::Relaxed);
        if full > queue_drops_logged {
            warn!(
                dropped = full - queue_drops_logged,
                total = full,
                "OTLP queue full: spans dropped (the collector is slower than the events)"
            );
            queue_drops_logged = full;
        }
    }
    let _ = exporter.shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_file_wins_over_the_environment_and_signal_variables_over_general_ones() {
        let cfg = Export::default();
        let s = Settings::resolve(&cfg, env(&[])).unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.endpoint, None);
        let s = Settings::resolve(
            &cfg,
            env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        let file = Export {
            protocol: "grpc".into(),
            endpoint: "https://collector:4317".into(),
            ca_file: "/etc/mine.pem".into(),
            ..Export::default()
        };
        let s = Settings::resolve(
            &file,
            env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.endpoint.as_deref(), Some("https://collector:4317"));
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/mine.pem")));
    }

    #[test]
    fn json_over_http_is_refused_with_the_variable_named() {
        let err = Settings::resolve(
            &Export::default(),
            env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
    }

    #[test]
    fn http_endpoints_get_the_traces_path_like_the_base_variable() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            http_traces_url("https://c/otlp/v1/traces"),
            "https://c/otlp/v1/traces"
        );
    }

    #[test]
    fn the_resource_names_the_service_and_node_unless_the_environment_does() {
        let r = resource(env(&[("NODE_NAME", "node-7")]));
        let get = |r: &Resource, k: &'static str| {
            r.get(&opentelemetry::Key::new(k)).map(|v| v.to_string())
        };
        assert_eq!(get(&r, "service.name").as_deref(), Some("mountleak"));
        assert_eq!(get(&r, "k8s.node.name").as_deref(), Some("node-7"));
    }

    #[test]
    fn a_client_certificate_without_a_key_is_an_error() {
        let s = Settings {
            client_cert: Some("/x".into()),
            ..Settings::resolve(&Export::default(), env(&[])).unwrap()
        };
        assert!(matches!(s.tls_files(), Err(ExportError::HalfIdentity)));
    }
}
