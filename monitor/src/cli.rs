//! The command line. Every config key has a flag here; flags win over the
//! file, the file over the embedded defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Format, HostNamespaces, ProbeSetting};

#[derive(Debug, Parser)]
#[command(
    name = "mountleak",
    version,
    about = "Finds container mounts held by other mount namespaces before a removal fails",
    long_about = "mountleak finds container mounts (overlay rootfs, volumes, block devices) that were copied into \
the private mount namespace of an unrelated process, such as a systemd unit with PrivateTmp=true, and that \
the host's umounts no longer reach. It names the holder, its unit and namespace, says what will happen on \
this kernel, and how to fix it.\n\nExit codes: 0 nothing leaks; 1 a leak was found (scan) ; 2 error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML). Default: /etc/mountleak/mountleak.toml if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Extra container mount pattern (glob; `*` within a component, `**` across). Repeatable.
    #[arg(long = "pattern", global = true, value_name = "GLOB")]
    pub patterns: Vec<String>,
    /// Use only the patterns given, not the built-in runtime layouts.
    #[arg(long, global = true)]
    pub no_default_patterns: bool,
    /// A host mount namespace (inode number from `readlink /proc/PID/ns/mnt`). Repeatable; replaces "auto".
    #[arg(long = "host-ns", global = true, value_name = "INUM")]
    pub host_ns: Vec<u64>,
    /// Do not report namespaces younger than this as risks (e.g. "2s").
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub risk_grace: Option<Duration>,
    /// Output JSON (one document for scan, JSON lines for run).
    #[arg(long, global = true)]
    pub json: bool,
    /// Docker Engine API socket ("" to not ask Docker).
    #[arg(long, global = true, value_name = "PATH", value_parser = any_path)]
    pub docker_socket: Option<PathBuf>,
    /// containerd gRPC socket ("" to not ask containerd).
    #[arg(long, global = true, value_name = "PATH", value_parser = any_path)]
    pub containerd_socket: Option<PathBuf>,
    /// Ask no container runtime: identity from mount paths only (marked inferred).
    #[arg(long, global = true)]
    pub no_runtimes: bool,
    /// More logging on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One-shot scan from /proc (no eBPF needed; works on RHEL/CentOS 7). Exit 0: no leak; 1: leak; 2: error.
    Scan(ScanArgs),
    /// Run the daemon: probes + /proc reconciliation; print findings as they happen.
    Run(RunArgs),
    /// Will removing TARGET fail or leave something pinned? TARGET: a container id or name, a pod
    /// (NAMESPACE/NAME), or a mount path. Exit 0: safe; 1: held (holders listed); 2: error or unknown
    /// target. Needs no daemon: one targeted read.
    Check(CheckArgs),
    /// The story of a container, pod, mount path, mount namespace or pid, from the event store:
    /// text, JSON, or a self-contained HTML picture.
    Timeline(TimelineArgs),
    /// Audit this node's configuration for mount-leak risks (services with private mount
    /// namespaces, the runtime's propagation, the kernel). Exit 0 clean, 1 findings, 2 error.
    Doctor(DoctorArgs),
    /// Release what holds a container, pod or mount (dry run unless --yes).
    Fix(FixArgs),
    /// Print the default configuration file, with every key documented.
    Config,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// Container id or name, pod (NAMESPACE/NAME), mount path, mount namespace id, or pid.
    /// Not needed with --import.
    pub target: Option<String>,
    /// Only steps at or after this time (RFC3339, or a duration ago such as "2h").
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only steps at or before this time (RFC3339, or a duration ago).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Write a self-contained HTML picture of the timeline to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub html: Option<PathBuf>,
    /// Render a timeline saved with --json (from another machine) instead of reading the store.
    #[arg(long, value_name = "FILE")]
    pub import: Option<PathBuf>,
    /// The event store (default: the configured store path).
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Audit the system under this directory (unit files, sysctls read from it) instead of `/`.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FixArgs {
    /// Container id or name, pod (NAMESPACE/NAME), mount path, or a finding id (ML-N).
    pub target: String,
    /// Carry out the actions (default: print exactly what would be done, change nothing).
    #[arg(long)]
    pub yes: bool,
    /// Allow killing a holder process when nothing else releases the mount.
    #[arg(long)]
    pub kill: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Container id (or prefix) or name, pod as NAMESPACE/NAME, or an absolute mount path.
    pub target: String,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Exit 1 on risks too, not only on leaks.
    #[arg(long)]
    pub fail_on_risk: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run on periodic /proc reconciliation only (no eBPF). Same as --probes off.
    #[arg(long)]
    pub no_ebpf: bool,
    /// Probe set: auto, syscalls, lean (no syscall tracepoints), off.
    #[arg(long, value_enum)]
    pub probes: Option<ProbeSetting>,
    /// Full reconciliation interval while probes run (e.g. "30s").
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub rescan_interval: Option<Duration>,
    /// Reconciliation interval without probes (e.g. "2s").
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// How long to gather rescan requests before reading /proc (e.g. "20ms").
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub rescan_debounce: Option<Duration>,
    /// Kernel ring buffer size in KiB (power of two).
    #[arg(long, value_name = "KIB")]
    pub ring_buffer_kib: Option<u32>,
    /// Mount tracefs at /sys/kernel/tracing if missing (needed for syscall tracepoints).
    #[arg(long)]
    pub mount_tracefs: bool,
    /// The event store file (default /var/lib/mountleak/events.db).
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Keep no event history (no `mountleak timeline`).
    #[arg(long)]
    pub no_store: bool,
    /// Send OpenTelemetry traces over OTLP ([export] traces = true). Endpoint, protocol, headers
    /// and TLS from [export] or the standard OTEL_EXPORTER_OTLP_* variables.
    #[arg(long, visible_alias = "export-traces")]
    pub otlp: bool,
    /// OTLP collector URL (e.g. http://127.0.0.1:4317); implies --otlp.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc or http/protobuf; implies --otlp.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub otlp_protocol: Option<String>,
    /// Serve /metrics, /healthz and /readyz on this address (default 127.0.0.1:9633).
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "no_metrics")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve no metrics or health endpoints.
    #[arg(long)]
    pub no_metrics: bool,
    /// Stop after this long (for tests and benchmarks). Default: until SIGINT/SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub exit_after: Option<Duration>,
}

/// A path that may be empty (clap's own path parser refuses "", which here
/// means "off").
fn any_path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); e.g. 2s, 500ms"))
}

impl GlobalArgs {
    /// Applies the global flags on top of the file's settings.
    pub fn apply(&self, cfg: &mut Config) {
        cfg.detect.patterns.extend(self.patterns.iter().cloned());
        if self.no_default_patterns {
            cfg.detect.default_patterns = false;
        }
        if !self.host_ns.is_empty() {
            cfg.detect.host_namespaces = HostNamespaces::List(self.host_ns.clone());
        }
        if let Some(g) = self.risk_grace {
            cfg.detect.risk_grace = g;
        }
        if self.json {
            cfg.output.format = Format::Json;
        }
        if let Some(p) = &self.docker_socket {
            cfg.runtimes.docker_socket = p.clone();
        }
        if let Some(p) = &self.containerd_socket {
            cfg.runtimes.containerd_socket = p.clone();
        }
        if self.no_runtimes {
            cfg.runtimes.docker_socket = PathBuf::new();
            cfg.runtimes.containerd_socket = PathBuf::new();
        }
    }
}

impl RunArgs {
    pub fn apply(&self, cfg: &mut Config) {
        if self.no_ebpf {
            cfg.daemon.probes = ProbeSetting::Off;
        } else if let Some(p) = self.probes {
            cfg.daemon.probes = p;
        }
        if let Some(d) = self.rescan_interval {
            cfg.daemon.rescan_interval = d;
        }
        if let Some(d) = self.poll_interval {
            cfg.daemon.poll_interval = d;
        }
        if let Some(d) = self.rescan_debounce {
            cfg.daemon.rescan_debounce = d;
        }
        if let Some(k) = self.ring_buffer_kib {
            cfg.daemon.ring_buffer_kib = k;
        }
        if self.mount_tracefs {
            cfg.daemon.mount_tracefs = true;
        }
        if let Some(p) = &self.store {
            cfg.store.path = p.clone();
        }
        if self.no_store {
            cfg.store.enabled = false;
        }
        if self.otlp || self.otlp_endpoint.is_some() || self.otlp_protocol.is_some() {
            cfg.export.traces = true;
        }
        if let Some(e) = &self.otlp_endpoint {
            cfg.export.endpoint = e.clone();
        }
        if let Some(p) = &self.otlp_protocol {
            cfg.export.protocol = p.clone();
        }
        if let Some(a) = self.metrics_listen {
            cfg.metrics.listen = a.to_string();
        }
        if self.no_metrics {
            cfg.metrics.enabled = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::parse_from([
            "mountleak",
            "--pattern",
            "/data/*/merged",
            "--host-ns",
            "7",
            "run",
            "--no-ebpf",
            "--poll-interval",
            "250ms",
        ]);
        let mut cfg = Config::default();
        cli.global.apply(&mut cfg);
        let Command::Run(run) = &cli.command else {
            panic!()
        };
        run.apply(&mut cfg);
        assert_eq!(cfg.daemon.probes, ProbeSetting::Off);
        assert_eq!(cfg.daemon.poll_interval, Duration::from_millis(250));
        assert_eq!(cfg.detect.host_namespaces, HostNamespaces::List(vec![7]));
        assert!(cfg.patterns().matches(&"/data/x/merged".into()));
    }

    #[test]
    fn an_empty_socket_turns_a_runtime_off() {
        let cli = Cli::parse_from([
            "mountleak",
            "--containerd-socket",
            "",
            "--docker-socket=",
            "scan",
        ]);
        let mut cfg = Config::default();
        cli.global.apply(&mut cfg);
        assert!(cfg.runtimes.containerd_socket.as_os_str().is_empty());
        assert!(cfg.runtimes.docker_socket.as_os_str().is_empty());
    }

    #[test]
    fn flags_are_validated_like_the_file() {
        let cli = Cli::parse_from(["mountleak", "run", "--ring-buffer-kib", "1000"]);
        let mut cfg = Config::default();
        cli.global.apply(&mut cfg);
        let Command::Run(run) = &cli.command else {
            panic!()
        };
        run.apply(&mut cfg);
        let err = cfg
            .validate(std::path::Path::new("the command line"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ring_buffer_kib") && err.contains("the command line"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_duration_is_a_clear_error() {
        let err = Cli::try_parse_from(["mountleak", "run", "--poll-interval", "often"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("often") && err.contains("not a duration"),
            "{err}"
        );
    }
}
