//! The TOML configuration file and its defaults. Every key has a command-line
//! flag too (`cli.rs` applies them on top). Unknown keys and bad values are
//! errors that name the key and the line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use monitor_model::config::{Patterns, Reference, DEFAULT_PATTERNS, DEFAULT_RUNTIME_COMMS};
use serde::Deserialize;

/// Where `mountleak` looks when `--config` is not given. Missing is fine:
/// the embedded defaults apply.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mountleak/mountleak.toml";

/// The documented default configuration, also printed by
/// `mountleak config --default`. Kept in sync with [`Config::default`] by a
/// test.
pub const DEFAULT_TOML: &str = r#"# mountleak configuration. Every key is optional; these are the defaults.

[detect]
# Extra glob patterns for container mount points (`*` stays inside one path
# component, `**` crosses components). Added to the built-in list unless
# default_patterns = false.
patterns = []
default_patterns = true
# Which mount namespaces are "the host" (the ones whose umounts every copy
# should receive): "auto" = mountleak's own namespace and the namespaces of
# container runtime processes (runtime_comms). Or a list of namespace inode numbers
# (`readlink /proc/PID/ns/mnt`) such as [4026531841].
host_namespaces = "auto"
runtime_comms = ["dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "containerd-shim-runc-v1", "kubelet", "crio", "conmon", "podman", "k3s-server", "k3s-agent"]
# A namespace younger than this is not yet reported as a risk: runtimes make
# short-lived namespaces that copy every mount and drop them at once.
risk_grace = "2s"

[daemon]
# "syscalls": tracepoints on mount/umount/unshare/setns/clone/... (full
# detail; attaching any syscall tracepoint slows every syscall on the host a
# little, see BENCHMARKS.md). "lean": only task_newtask and process
# fork/exit, with /proc reconciliation for the rest. "off": /proc polling
# only (also --no-ebpf). "auto": syscalls, falling back to lean, then off.
probes = "auto"
# Full reconciliation from /proc even when probes run (repairs anything missed).
rescan_interval = "30s"
# Reconciliation period when running without probes.
poll_interval = "2s"
# How long to gather rescan requests before reading /proc once for all.
rescan_debounce = "20ms"
# Kernel ring buffer size, KiB (a power of two, at least 4 pages).
ring_buffer_kib = 1024
# Mount tracefs at /sys/kernel/tracing if it is not mounted (needed for
# syscall tracepoints). Off: mountleak changes nothing on the system unless
# asked.
mount_tracefs = false

[runtimes]
# Docker Engine API socket. Empty: do not ask Docker. A socket that is
# missing or refusing is retried with backoff (logged once per change).
docker_socket = "/var/run/docker.sock"
# containerd's gRPC socket (also the CRI runtime Kubernetes uses). Empty: off.
containerd_socket = "/run/containerd/containerd.sock"
# containerd namespaces to follow; empty: every namespace the server has.
containerd_namespaces = []
# Namespaces left to other adapters ("moby" is Docker's, named by the Docker
# adapter already).
containerd_skip_namespaces = ["moby"]

[store]
# The event store behind `mountleak timeline`: an SQLite file the daemon
# writes in batches, off the event path. Created on first run.
enabled = true
path = "/var/lib/mountleak/events.db"
# Retention: events older than this, or beyond this size, are deleted.
max_age = "30d"
max_size_mib = 1024

[export]
# OpenTelemetry traces over OTLP (also --otlp): one trace per container
# lifecycle, findings as span events. Off by default.
traces = false
# "grpc" (port 4317) or "http/protobuf" (port 4318). Empty: the standard
# OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL, else grpc.
protocol = ""
# Collector URL, e.g. "http://jaeger:4317"; https:// turns TLS on. Empty:
# OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else
# http://localhost:4317 (grpc) or http://localhost:4318/v1/traces (http).
endpoint = ""
# Extra request headers (e.g. { authorization = "Bearer ..." }), added to
# OTEL_EXPORTER_OTLP_TRACES_HEADERS / OTEL_EXPORTER_OTLP_HEADERS.
headers = {}
# Per-export timeout. Empty: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT /
# OTEL_EXPORTER_OTLP_TIMEOUT (ms), else 10s.
timeout = ""
# TLS (PEM files). Empty: OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE /
# OTEL_EXPORTER_OTLP_CERTIFICATE (CA), ..._CLIENT_CERTIFICATE and
# ..._CLIENT_KEY (mutual TLS); else the system's roots.
ca_file = ""
client_cert = ""
client_key = ""
# Finished spans waiting for the exporter. A down or slow collector never
# blocks detection: beyond this many, spans are dropped and counted
# (mountleak_export_dropped_spans_total).
queue_size = 2048
# Spans per export request, and how long to gather them.
max_batch = 512
batch_delay = "1s"

[metrics]
# Prometheus text at /metrics, liveness at /healthz, readiness (the startup
# scan is done) at /readyz. Loopback only unless you say otherwise, e.g.
# "0.0.0.0:9633" inside a pod (also --metrics-listen, --no-metrics).
enabled = true
listen = "127.0.0.1:9633"
# GET /check?target=TARGET answers what `mountleak check TARGET --json`
# does (200 safe, 409 held, 404 unknown target; &format=text for the text,
# &status=200 to get 200 either way), one at a time: for a preStop hook,
# which runs inside the pod and cannot run mountleak itself. Each answer
# reads every process's mount table (tens of milliseconds).
check = true

[output]
# "human" or "json" (JSON lines for `run`, one document for `scan`).
format = "human"
"#;

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub detect: Detect,
    pub daemon: Daemon,
    pub runtimes: Runtimes,
    pub store: Store,
    pub export: Export,
    pub metrics: Metrics,
    pub output: Output,
}

/// `[export]`: OpenTelemetry traces (see `sinks::otel`). Empty strings and
/// `None` leave the choice to the standard `OTEL_EXPORTER_OTLP_*` variables.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Export {
    pub traces: bool,
    pub protocol: String,
    pub endpoint: String,
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(with = "humantime_serde_compat::optional")]
    pub timeout: Option<Duration>,
    pub ca_file: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub queue_size: usize,
    pub max_batch: usize,
    #[serde(with = "humantime_serde_compat")]
    pub batch_delay: Duration,
}

impl Default for Export {
    fn default() -> Self {
        Export {
            traces: false,
            protocol: String::new(),
            endpoint: String::new(),
            headers: Default::default(),
            timeout: None,
            ca_file: PathBuf::new(),
            client_cert: PathBuf::new(),
            client_key: PathBuf::new(),
            queue_size: 2048,
            max_batch: 512,
            batch_delay: Duration::from_secs(1),
        }
    }
}

/// `[metrics]`: the Prometheus and health endpoints (see `sinks::metrics`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub enabled: bool,
    pub listen: String,
    /// Serve `/check` beside the metrics.
    pub check: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: true,
            listen: "127.0.0.1:9633".into(),
            check: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    pub enabled: bool,
    pub path: PathBuf,
    #[serde(with = "humantime_serde_compat")]
    pub max_age: Duration,
    pub max_size_mib: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            enabled: true,
            path: PathBuf::from("/var/lib/mountleak/events.db"),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_size_mib: 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtimes {
    pub docker_socket: PathBuf,
    pub containerd_socket: PathBuf,
    pub containerd_namespaces: Vec<String>,
    pub containerd_skip_namespaces: Vec<String>,
}

impl Default for Runtimes {
    fn default() -> Self {
        Runtimes {
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            containerd_socket: PathBuf::from("/run/containerd/containerd.sock"),
            containerd_namespaces: Vec::new(),
            containerd_skip_namespaces: vec!["moby".into()],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detect {
    pub patterns: Vec<String>,
    pub default_patterns: bool,
    pub host_namespaces: HostNamespaces,
    pub runtime_comms: Vec<String>,
    #[serde(with = "humantime_serde_compat")]
    pub risk_grace: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HostNamespaces {
    /// Only the string "auto" is accepted (checked in `validate`).
    Auto(String),
    List(Vec<u64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProbeSetting {
    Auto,
    Syscalls,
    Lean,
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    pub probes: ProbeSetting,
    #[serde(with = "humantime_serde_compat")]
    pub rescan_interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub rescan_debounce: Duration,
    pub ring_buffer_kib: u32,
    pub mount_tracefs: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Human,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    pub format: Format,
}

impl Default for Detect {
    fn default() -> Self {
        Detect {
            patterns: Vec::new(),
            default_patterns: true,
            host_namespaces: HostNamespaces::Auto("auto".into()),
            runtime_comms: DEFAULT_RUNTIME_COMMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            risk_grace: Duration::from_secs(2),
        }
    }
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            probes: ProbeSetting::Auto,
            rescan_interval: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
            rescan_debounce: Duration::from_millis(20),
            ring_buffer_kib: 1024,
            mount_tracefs: false,
        }
    }
}

impl Default for Output {
    fn default() -> Self {
        Output {
            format: Format::Human,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not a `source`: the message already says it, and anyhow's chain
    // would say it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

impl Config {
    /// Reads `path`, or the default path when `None` (missing is fine then).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default())
            }
            Err(error) => return Err(ConfigError::Read { path, error }),
        };
        Config::parse(&text, &path)
    }

    /// Parses TOML text. Errors carry the line, column and key (toml's
    /// messages), e.g. `TOML parse error at line 3, column 10 … unknown field`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks values the types do not (also after flags were applied, with
    /// `path` naming where they came from).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        if let HostNamespaces::Auto(s) = &self.detect.host_namespaces {
            if s != "auto" {
                return Err(invalid(
                    "detect.host_namespaces",
                    format!("expected \"auto\" or a list of namespace inode numbers, got {s:?}"),
                ));
            }
        }
        for p in &self.detect.patterns {
            if !p.starts_with('/') {
                return Err(invalid(
                    "detect.patterns",
                    format!("pattern {p:?} must be an absolute path glob"),
                ));
            }
        }
        let kib = self.daemon.ring_buffer_kib;
        if kib < 16 || !kib.is_power_of_two() {
            return Err(invalid(
                "daemon.ring_buffer_kib",
                format!("{kib} must be a power of two, at least 16"),
            ));
        }
        if !matches!(self.export.protocol.as_str(), "" | "grpc" | "http/protobuf") {
            return Err(invalid(
                "export.protocol",
                format!(
                    "{:?}: expected \"grpc\" or \"http/protobuf\" (http/json is not supported)",
                    self.export.protocol
                ),
            ));
        }
        if self.export.queue_size == 0 || self.export.max_batch == 0 {
            return Err(invalid(
                "export.queue_size/max_batch",
                "must be greater than zero".into(),
            ));
        }
        if self.metrics.enabled && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.listen",
                format!(
                    "{:?} is not an address:port such as \"127.0.0.1:9633\"",
                    self.metrics.listen
                ),
            ));
        }
        if self.daemon.poll_interval.is_zero() || self.daemon.rescan_interval.is_zero() {
            return Err(invalid(
                "daemon.poll_interval/rescan_interval",
                "must be greater than zero".into(),
            ));
        }
        Ok(())
    }

    /// The model's view of the detection settings.
    pub fn patterns(&self) -> Patterns {
        let mut p = if self.detect.default_patterns {
            Patterns::new(DEFAULT_PATTERNS.iter().map(|s| s.as_bytes().to_vec()))
        } else {
            Patterns::empty()
        };
        for extra in &self.detect.patterns {
            p.push(extra.as_bytes().to_vec());
        }
        p
    }

    pub fn reference(&self) -> Reference {
        match &self.detect.host_namespaces {
            HostNamespaces::List(ids) => Reference::Namespaces(ids.clone()),
            HostNamespaces::Auto(_) => Reference::Auto {
                runtime_comms: self.detect.runtime_comms.clone(),
                include_self: true,
            },
        }
    }
}

/// Durations as humantime strings ("2s", "500ms", "1m 30s").
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. \"2s\" or \"500ms\""
            ))
        })
    }

    /// An empty string is "not set" (`None`).
    pub mod optional {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s = String::deserialize(d)?;
            if s.trim().is_empty() {
                return Ok(None);
            }
            humantime::parse_duration(&s).map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); write e.g. \"10s\", or \"\" for the default"
                ))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let parsed = Config::parse(DEFAULT_TOML, Path::new("default.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert_eq!(
            Config::parse("", Path::new("x")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let err = Config::parse(
            "[detect]\npatterns = []\nrisk_gracee = \"1s\"\n",
            Path::new("/etc/m.toml"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("risk_gracee"), "{msg}");
        assert!(msg.contains("/etc/m.toml"), "{msg}");
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let err = Config::parse(
            "[daemon]\n\nrescan_interval = \"soon\"\n",
            Path::new("m.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3") && err.contains("soon"), "{err}");
        let err = Config::parse("[daemon]\nprobes = \"kprobes\"\n", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("kprobes"), "{err}");
        let err = Config::parse("[daemon]\nring_buffer_kib = 1000\n", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("daemon.ring_buffer_kib"), "{err}");
        let err = Config::parse(
            "[detect]\nhost_namespaces = \"host\"\n",
            Path::new("m.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("detect.host_namespaces"), "{err}");
        let err = Config::parse(
            "[detect]\npatterns = [\"relative/*\"]\n",
            Path::new("m.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("absolute"), "{err}");
        let err = Config::parse("[detect\n", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn host_namespaces_take_a_list() {
        let cfg = Config::parse(
            "[detect]\nhost_namespaces = [4026531841]\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(cfg.reference(), Reference::Namespaces(vec![4026531841]));
    }

    #[test]
    fn extra_patterns_add_to_the_defaults() {
        let cfg = Config::parse(
            "[detect]\npatterns = [\"/data/docker/overlay2/*/merged\"]\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let p = cfg.patterns();
        assert!(p.matches(&"/data/docker/overlay2/x/merged".into()));
        assert!(p.matches(&"/var/lib/docker/overlay2/x/merged".into()));
    }

    #[test]
    fn a_missing_default_file_is_fine_but_a_missing_named_one_is_not() {
        assert!(Config::load(Some(Path::new("/nonexistent/mountleak.toml"))).is_err());
    }
}
