//! deploy/ holds what it promises: the Kubernetes manifests parse and keep
//! the least privilege and the no-leak rules their comments claim, the
//! ConfigMap is a valid mountleak configuration, the systemd unit parses
//! (`systemd-analyze verify` where it exists) and creates no private mount
//! namespace, and the Containerfile builds the way `cargo xtask setup` does.
//! No root needed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a multi-document YAML file, as JSON values.
fn documents(file: &str) -> Vec<Value> {
    let path = deploy().join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The capabilities both the DaemonSet and the systemd unit grant, and why
/// (the manifest's comments say it at length).
const CAPABILITIES: [&str; 5] = [
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYS_ADMIN",
];

/// Host directories that hold container mounts: mounting one into the pod
/// would copy every container's mounts into the pod's namespace (the leak).
const CONTAINER_TREES: [&str; 5] = [
    "/var/lib/docker",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/lib/containers",
];

fn daemonset() -> (Vec<Value>, Value) {
    let docs = documents("kubernetes/mountleak.yaml");
    let ds = find(&docs, "DaemonSet", "mountleak").clone();
    (docs, ds)
}

#[test]
fn the_daemonset_has_the_least_privilege_that_works() {
    let (_, ds) = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "it reads the host's processes");
    assert_ne!(pod["hostNetwork"], true, "no host network needed");
    assert_ne!(pod["hostIPC"], true);
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "it never talks to the API server"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        BTreeSet::from(["ALL".to_string()])
    );
    let added = strings(&sc["capabilities"]["add"]);
    let expected: BTreeSet<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        added, expected,
        "exactly the capabilities the comments justify"
    );
}

#[test]
fn the_pod_mounts_nothing_that_would_make_it_a_holder() {
    let (_, ds) = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts");
    let mut host_paths = BTreeSet::new();
    for m in mounts {
        assert_ne!(
            m["mountPropagation"], "Bidirectional",
            "Bidirectional would send the pod's mounts to the host: {m}"
        );
        let name = &m["name"];
        let volume = volumes
            .iter()
            .find(|v| &v["name"] == name)
            .unwrap_or_else(|| panic!("no volume for {m}"));
        let Some(path) = volume["hostPath"]["path"].as_str() else {
            continue;
        };
        host_paths.insert(path.to_string());
        // Only the event store is written.
        if path == "/var/lib/mountleak" {
            assert_ne!(m["readOnly"], true, "the store is written: {m}");
        } else {
            assert_eq!(
                m["readOnly"], true,
                "host path {path} must be read-only: {m}"
            );
        }
        assert_eq!(
            m["mountPropagation"], "None",
            "host path {path}: private propagation, said explicitly: {m}"
        );
        let kind = volume["hostPath"]["type"].as_str().unwrap_or("");
        for tree in CONTAINER_TREES {
            let inside = Path::new(path).starts_with(tree) || Path::new(tree).starts_with(path);
            if inside {
                assert_eq!(
                    kind, "Socket",
                    "{path} overlaps {tree}, where container mounts live: only a socket file may be mounted from there"
                );
            }
        }
        assert!(
            !["/", "/proc", "/sys", "/var", "/run", "/var/run"].contains(&path),
            "{path} is a whole tree of the host"
        );
    }
    for needed in [
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/run/containerd/containerd.sock",
        "/var/lib/mountleak",
    ] {
        assert!(
            host_paths.contains(needed),
            "{needed} not mounted: {host_paths:?}"
        );
    }
}

#[test]
fn the_node_name_comes_from_the_downward_api_and_probes_use_the_health_endpoints() {
    let (_, ds) = daemonset();
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let env = c["env"].as_array().expect("env");
    let node = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME env");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let memory = c["resources"]["limits"]["memory"]
        .as_str()
        .expect("a memory limit");
    let mib: u64 = memory
        .trim_end_matches("Mi")
        .parse()
        .expect("a limit in Mi");
    // BENCHMARKS.md "Export": RSS with 1,000 containers tracked stays under
    // 64 MiB; the limit leaves room for scans of a busy host.
    assert!(
        mib >= 64,
        "memory limit {memory} is below the measured need"
    );
    assert!(c["resources"]["requests"]["cpu"].is_string());
}

#[test]
fn the_configmap_is_a_valid_configuration_matching_the_pod() {
    let (docs, ds) = daemonset();
    let cm = find(&docs, "ConfigMap", "mountleak");
    let text = cm["data"]["mountleak.toml"]
        .as_str()
        .expect("mountleak.toml");
    let cfg = mountleak::config::Config::parse(text, Path::new("configmap"))
        .unwrap_or_else(|e| panic!("the ConfigMap's config does not load: {e}"));
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    // The port the probes and Prometheus use is the one the daemon listens on.
    let port = c["ports"][0]["containerPort"]
        .as_u64()
        .expect("a container port");
    let listen: std::net::SocketAddr = cfg.metrics.listen.parse().expect("an address");
    assert_eq!(u64::from(listen.port()), port);
    assert!(cfg.metrics.enabled);
    assert!(cfg.export.traces);
    // The store lives on the writable hostPath.
    assert!(cfg.store.path.starts_with("/var/lib/mountleak"));
    // The pod's config is mounted where the args point.
    let args = strings(&c["args"]);
    assert!(args.contains("/etc/mountleak/mountleak.toml"), "{args:?}");
}

#[test]
fn metrics_stay_on_loopback_unless_configured() {
    let cfg = mountleak::config::Config::default();
    assert!(cfg.metrics.enabled);
    let addr: std::net::SocketAddr = cfg.metrics.listen.parse().unwrap();
    assert!(addr.ip().is_loopback(), "default {addr}");
    assert!(!cfg.export.traces, "traces are off by default");
}

#[test]
fn the_collector_example_forwards_otlp_to_jaeger() {
    let docs = documents("kubernetes/otel-collector-jaeger.yaml");
    let cm = find(&docs, "ConfigMap", "otel-collector");
    let config: Value = serde_norway::from_str(cm["data"]["config.yaml"].as_str().unwrap())
        .expect("the collector's config parses");
    assert!(config["receivers"]["otlp"]["protocols"]["grpc"].is_object());
    assert!(config["receivers"]["otlp"]["protocols"]["http"].is_object());
    let exporter = &config["exporters"]["otlp/jaeger"];
    assert!(exporter["endpoint"]
        .as_str()
        .unwrap()
        .starts_with("jaeger."));
    assert_eq!(
        strings(&config["service"]["pipelines"]["traces"]["exporters"]),
        BTreeSet::from(["otlp/jaeger".to_string()])
    );
    find(&docs, "Service", "otel-collector");
    find(&docs, "Deployment", "jaeger");
    // mountleak's DaemonSet points at this collector's service.
    let (_, ds) = daemonset();
    let env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let endpoint = env
        .iter()
        .find(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .and_then(|e| e["value"].as_str())
        .expect("OTEL_EXPORTER_OTLP_ENDPOINT");
    assert!(
        endpoint.contains("otel-collector.observability"),
        "{endpoint}"
    );
}

#[test]
fn the_containerfile_builds_from_this_repository_like_xtask_setup() {
    let text = fs::read_to_string(deploy().join("Containerfile")).expect("deploy/Containerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains("AS build"), "{}", froms[0]);
    assert!(
        froms[1].contains("debian:") && froms[1].contains("-slim"),
        "{}",
        froms[1]
    );
    for needed in [
        "rust-src",
        "bpf-linker",
        "LLVM_PREFIX",
        "protobuf-compiler",
        "COPY . .",
        "--bin mountleak",
        "COPY --from=build",
    ] {
        assert!(text.contains(needed), "the Containerfile lacks {needed:?}");
    }
}

/// The unit's `[Service]` keys, as `(key, value)` in order.
fn unit_keys(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        out.push((format!("{section}.{}", k.trim()), v.trim().to_string()));
    }
    out
}

#[test]
fn the_systemd_unit_runs_in_the_host_mount_namespace() {
    let path = deploy().join("systemd/mountleak.service");
    let text = fs::read_to_string(&path).expect("the unit");
    let keys = unit_keys(&text);
    // Each of these gives the service a private copy of every mount,
    // container rootfs included: the unit would cause the leak it reports.
    for (key, value) in &keys {
        let name = key.split('.').nth(1).unwrap_or_default();
        let private = matches!(
            name,
            "PrivateTmp"
                | "PrivateMounts"
                | "PrivateDevices"
                | "MountFlags"
                | "ReadOnlyPaths"
                | "ReadWritePaths"
                | "InaccessiblePaths"
                | "TemporaryFileSystem"
                | "BindPaths"
                | "BindReadOnlyPaths"
                | "RootDirectory"
                | "RootImage"
                | "PrivateUsers"
        ) || name.starts_with("Protect");
        assert!(!private, "{key}={value} makes a private mount namespace");
    }
    let get = |k: &str| {
        keys.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let exec = get("Service.ExecStart").expect("ExecStart");
    assert!(exec.ends_with("mountleak run"), "{exec}");
    let caps: BTreeSet<String> = get("Service.CapabilityBoundingSet")
        .expect("a bounding set")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    let expected: BTreeSet<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
    assert_eq!(caps, expected, "the same capabilities as the DaemonSet");
    assert_eq!(get("Service.NoNewPrivileges"), Some("yes"));
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit was checked by parsing only");
        return;
    };
    assert!(out.status.success());
    // verify checks that ExecStart's program exists: point it at the binary
    // cargo built (the unit's own path is where an install puts it).
    let dir = std::env::temp_dir().join(format!("mountleak-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let text = fs::read_to_string(deploy().join("systemd/mountleak.service")).unwrap();
    let unit = dir.join("mountleak.service");
    let bin = std::env::current_exe().unwrap();
    fs::write(
        &unit,
        text.replace("/usr/local/bin/mountleak", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let _ = fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys but warns: any word from it is a failure.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// The preStop example reaches the mountleak of its own node: the URL is the
/// Service's name, namespace and port; the Service is node-local and selects
/// the DaemonSet's pods on the port the daemon listens on, where /check is
/// on; the pod's name and namespace come from the downward API. (That the
/// script works is tested against a real daemon and CRI pod in
/// tests/containerd.rs.)
#[test]
fn the_prestop_example_asks_the_mountleak_of_its_node() {
    let (docs, ds) = daemonset();
    let svc = find(&docs, "Service", "mountleak");
    assert_eq!(svc["spec"]["internalTrafficPolicy"], "Local", "{svc:#}");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let selector = svc["spec"]["selector"].as_object().expect("a selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            &pod_labels[k], v,
            "the Service selects the DaemonSet's pods"
        );
    }
    let port = &svc["spec"]["ports"][0];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let container_port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("the Service's targetPort names a container port");
    assert_eq!(port["port"], container_port["containerPort"]);
    let cm = find(&docs, "ConfigMap", "mountleak");
    let cfg = mountleak::config::Config::parse(
        cm["data"]["mountleak.toml"].as_str().unwrap(),
        Path::new("configmap"),
    )
    .unwrap();
    assert!(cfg.metrics.enabled && cfg.metrics.check);

    let example = documents("kubernetes/prestop-example.yaml");
    let workload = &example[0]["spec"]["template"]["spec"]["containers"][0];
    let script = workload["lifecycle"]["preStop"]["exec"]["command"][2]
        .as_str()
        .expect("sh -c SCRIPT");
    let url = format!(
        "http://{}.{}.svc:{}/check?target=$POD_NAMESPACE/$POD_NAME",
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap(),
        port["port"]
    );
    assert!(script.contains(&url), "{url} in {script}");
    let env = workload["env"].as_array().expect("env");
    let field = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(field("POD_NAME"), Some(Value::from("metadata.name")));
    assert_eq!(
        field("POD_NAMESPACE"),
        Some(Value::from("metadata.namespace"))
    );
}
