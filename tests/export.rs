//! `mountleak run --otlp` against a real OTLP collector (rotel, which
//! speaks the same OTLP as Jaeger), over gRPC and over HTTP/protobuf, and
//! the metrics and health endpoints scraped while a real leak appears and
//! resolves in a lab.
//!
//! What is asserted comes from what the collector received: one trace per
//! mount story, the span tree, timestamps that are the kernel's (they
//! match the times the daemon printed on stdout), semantic-convention
//! attributes, findings as events with their remedy. Taking the collector
//! away mid-run must not stop detection; the drops are counted, and export
//! resumes when it is back.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::otlp::{free_port, Collector, Span};
use crate::support::{Lab, Propagation};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const FINDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Spans end at the resolution; the exporter sends within its batch delay
/// (100 ms here) and the collector prints within its own (50 ms).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(15);
/// Two conversions of the same kernel time to wall time differ by the
/// clock reads' window (µs); the JSON's times are rounded to ms.
const SAME_INSTANT_NS: u64 = 2_000_000;

/// A `mountleak run --json` in a lab, killed on drop.
struct Daemon {
    child: Child,
    rx: mpsc::Receiver<Value>,
    lines: Vec<Value>,
    stderr: Arc<Mutex<String>>,
    config: PathBuf,
}

impl Daemon {
    /// `config`: the TOML given with `--config` (export batching tuned for
    /// tests); `args`: `run` flags.
    fn in_lab(lab: &Lab, config: &str, args: &[&str]) -> Daemon {
        let path = lab.scratch().join(format!("export-{}.toml", free_port()));
        fs::write(&path, config).expect("write the test config");
        let mut cmd = lab.mountleak();
        cmd.arg("--config")
            .arg(&path)
            .args(["run", "--json", "--no-runtimes", "--risk-grace", "1s"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: one async-signal-safe syscall between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start mountleak");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| Value::String(format!("not JSON: {line}")));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Daemon {
            child,
            rx,
            lines: Vec::new(),
            stderr,
            config: path,
        }
    }

    fn transcript(&self) -> String {
        let mut out = String::from("stdout:\n");
        for l in &self.lines {
            out.push_str(&l.to_string());
            out.push('\n');
        }
        out.push_str("stderr:\n");
        out.push_str(&self.stderr.lock().unwrap());
        out
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.lines.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.lines.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("timed out waiting for {what}\n{}", self.transcript())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "mountleak exited ({status:?}) waiting for {what}\n{}",
                        self.transcript()
                    )
                }
            }
        }
    }

    fn ready(&mut self) -> Value {
        self.wait_for("the ready notice", READY_TIMEOUT, |v| v["type"] == "ready")
    }

    fn finding(&mut self, kind: &str, path: &Path) -> Value {
        let p = path.to_str().expect("UTF-8 test path").to_string();
        self.wait_for(&format!("a {kind} finding for {p}"), FINDING_TIMEOUT, |v| {
            v["type"] == "finding" && v["kind"] == kind && v["mount"]["path"] == p.as_str()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.config);
    }
}

/// Export tuned for tests: batches leave after 100 ms, a dead collector
/// costs at most 1 s per attempt.
const EXPORT_CONFIG: &str = "[export]\nbatch_delay = \"100ms\"\ntimeout = \"1s\"\n";

/// RFC3339 (as the daemon prints it) to Unix ns.
fn unix_ns(rfc3339: &Value) -> u64 {
    let text = rfc3339
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {rfc3339}"));
    let t = parse_rfc3339_millis(text).unwrap_or_else(|| panic!("not RFC3339: {text}"));
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// `2026-11-27T14:43:42.187Z` (UTC, what humantime prints) to a time.
fn parse_rfc3339_millis(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>());
    let (h, min, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days as u64 * 86_400 + h * 3600 + min * 60 + sec;
    let nanos = format!("{frac:0<9}")[..9].parse::<u64>().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn spans_of<'a>(spans: &'a [Span], path: &Path) -> Vec<&'a Span> {
    let p = path.to_str().unwrap();
    spans
        .iter()
        .filter(|s| s.attr("mountleak.mount.path") == Some(p))
        .collect()
}

fn near(a: u64, b: u64, what: &str) {
    assert!(a.abs_diff(b) <= SAME_INSTANT_NS, "{what}: {a} vs {b} ns");
}

/// Risk, leak, resolved in a lab, exported over `protocol`; asserts the
/// trace the collector received.
fn leak_story_is_one_trace(protocol: &str) {
    let collector = Collector::start();
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("otlp-{}-{}", protocol.replace('/', "-"), lab.id()));
    let endpoint = match protocol {
        "grpc" => collector.grpc_url(),
        _ => collector.http_url(),
    };
    let began = now_ns();
    let mut daemon = Daemon::in_lab(
        &lab,
        EXPORT_CONFIG,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--no-metrics",
        ],
    );
    daemon.ready();
    let holder = lab.holder(Propagation::Private, None);
    let risk = daemon.finding("risk", &merged);
    lab.umount(&merged).expect("the lab's umount");
    let leak = daemon.finding("leak", &merged);
    lab.stop(holder);
    let resolved = daemon.finding("resolved", &merged);
    let ended = now_ns();

    let spans = collector.wait_for("the story's root span", EXPORT_TIMEOUT, |s| {
        spans_of(s, &merged)
            .iter()
            .any(|s| s.name == "mount.lifecycle")
    });
    let mine = spans_of(&spans, &merged);
    let roots: Vec<&&Span> = mine.iter().filter(|s| s.parent_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {mine:#?}");
    let root = roots[0];
    assert_eq!(root.name, "mount.lifecycle");
    for s in &mine {
        assert_eq!(s.trace_id, root.trace_id, "one trace: {s:#?}");
        if s.id != root.id {
            assert_eq!(s.parent_id, root.id, "children of the root: {s:#?}");
        }
        assert!(s.start <= s.end, "{s:#?}");
        assert!(
            s.start + 1_000_000_000 >= began && s.end <= ended + 1_000_000_000,
            "times are real wall times of this test: {s:#?}"
        );
    }
    assert_eq!(
        root.resource.get("service.name").map(String::as_str),
        Some("mountleak")
    );
    assert!(
        root.resource.contains_key("host.name"),
        "{:?}",
        root.resource
    );
    assert_eq!(root.attr("mountleak.finding.id"), risk["id"].as_str());

    let copy = mine
        .iter()
        .find(|s| s.name == "mount.copy")
        .unwrap_or_else(|| panic!("a mount.copy span: {mine:#?}"));
    assert_eq!(
        copy.attr("process.pid"),
        Some(holder.pid.to_string().as_str())
    );
    assert_eq!(copy.attr("process.command"), Some("sleep"));
    assert_eq!(
        copy.attr("mountleak.mnt_ns"),
        Some(holder.ns.to_string().as_str())
    );
    assert_eq!(copy.attr("mountleak.propagation"), Some("private"));
    assert!(copy.attr("process.linux.cgroup").is_some(), "{copy:#?}");

    let window = mine
        .iter()
        .find(|s| s.name == "mount.leak")
        .unwrap_or_else(|| panic!("a mount.leak span: {mine:#?}"));
    // The leak window is the host's umount to the resolution, at the
    // kernel's times the daemon also printed.
    near(
        window.start,
        unix_ns(&leak["mount"]["unmounted_at"]),
        "leak start = unmounted_at",
    );
    near(
        window.end,
        unix_ns(&resolved["time"]),
        "leak end = resolution",
    );
    near(
        root.end,
        unix_ns(&resolved["time"]),
        "root end = resolution",
    );
    assert!(
        root.start <= copy.start && copy.start <= window.start,
        "{mine:#?}"
    );
    assert!(copy.end <= root.end && window.end <= root.end);

    let risk_event = root
        .events
        .iter()
        .find(|e| e.name == "risk")
        .unwrap_or_else(|| panic!("a risk event on the root: {root:#?}"));
    near(risk_event.time, unix_ns(&risk["time"]), "risk event time");
    let remedy = risk_event
        .attributes
        .get("mountleak.remedy")
        .cloned()
        .unwrap_or_default();
    assert!(
        remedy.contains(&format!("nsenter -t {} -m umount", holder.pid)),
        "the remedy travels with the event: {remedy}"
    );
    let kinds: Vec<&str> = window.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(kinds, ["leak", "resolved"], "{window:#?}");
}

#[test]
#[ignore = "needs root: creates mounts and namespaces, runs the daemon and a collector"]
fn traces_over_grpc_tell_the_leak_story() {
    leak_story_is_one_trace("grpc");
}

#[test]
#[ignore = "needs root: creates mounts and namespaces, runs the daemon and a collector"]
fn traces_over_http_tell_the_leak_story() {
    leak_story_is_one_trace("http/protobuf");
}

/// A minimal HTTP/1.1 GET on loopback: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample (`name{labels}` exactly as printed), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Scrapes until `series` satisfies `pred`.
fn wait_metric(port: u16, series: &str, pred: impl Fn(f64) -> bool) -> String {
    let deadline = Instant::now() + FINDING_TIMEOUT;
    loop {
        let (status, body) = get(port, "/metrics");
        assert_eq!(status, 200, "{body}");
        if pred(sample(&body, series)) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached the expected value; last scrape:\n{body}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root: creates mounts and namespaces, runs the daemon"]
fn metrics_move_as_a_leak_appears_and_resolves() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("metrics-{}", lab.id()));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = Daemon::in_lab(&lab, "", &["--metrics-listen", &listen]);
    daemon.ready();
    assert_eq!(get(port, "/healthz").0, 200);
    // The metrics sink hears the ready notice just after stdout does.
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never turned 200");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(port, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(get(port, "/nothing").0, 404);
    wait_metric(port, "mountleak_ready", |v| v == 1.0);
    // The counts come with the daemon's status, once a second.
    let base = wait_metric(port, "mountleak_container_filesystems", |v| v >= 1.0);
    // Other namespaces on the machine may hold things: count from here.
    let risks = sample(&base, "mountleak_open_findings{kind=\"risk\"}");
    let leaks = sample(&base, "mountleak_open_findings{kind=\"leak\"}");
    let resolved = sample(&base, "mountleak_findings_total{kind=\"resolved\"}");
    assert!(
        sample(&base, "mountleak_container_filesystems") >= 1.0,
        "{base}"
    );
    assert!(sample(&base, "mountleak_namespaces") >= 1.0, "{base}");
    assert!(
        sample(
            &base,
            "mountleak_events_total{source=\"procfs\",type=\"snapshot\"}"
        ) >= 1.0,
        "{base}"
    );

    // The holder copies every container mount of the lab's namespace (one
    // is ours); each copy is a risk until the host unmounts it.
    let holder = lab.holder(Propagation::Private, None);
    daemon.finding("risk", &merged);
    let held = wait_metric(port, "mountleak_open_findings{kind=\"risk\"}", |v| {
        v > risks
    });
    let held = sample(&held, "mountleak_open_findings{kind=\"risk\"}");
    // /check (for preStop hooks) answers like `mountleak check`. An idle
    // copy is detached by removal on this kernel: safe (200), the risk shown.
    let target = merged.display().to_string().replace('/', "%2F");
    let (status, body) = get(port, &format!("/check?target={target}"));
    assert_eq!(status, 200, "/check with an idle copy: {body}");
    let doc: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(doc["verdict"], "safe", "{body}");
    assert_eq!(doc["findings"][0]["kind"], "risk", "{body}");
    assert_eq!(
        doc["findings"][0]["holders"][0]["pid"],
        serde_json::json!(holder.pid),
        "{body}"
    );
    // A second holder with its cwd inside: removal would leave it pinned (409).
    let inside = lab.holder(Propagation::Private, Some(&merged));
    let (status, body) = get(port, &format!("/check?target={target}&format=text"));
    assert!(
        status == 409 && body.starts_with("HELD") && body.contains(&inside.pid.to_string()),
        "{status} {body}"
    );
    let (status, body) = get(
        port,
        &format!("/check?target={target}&format=text&status=200"),
    );
    assert!(status == 200 && body.starts_with("HELD"), "{status} {body}");
    lab.stop(inside);
    let (status, body) = get(port, "/check");
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(port, "/check?target=%2Fnot%2Fa%2Fcontainer%2Fmount");
    assert!(
        status == 404 && body.contains("unknown target"),
        "{status} {body}"
    );
    lab.umount(&merged).expect("the lab's umount");
    daemon.finding("leak", &merged);
    let during = wait_metric(port, "mountleak_open_findings{kind=\"leak\"}", |v| {
        v == leaks + 1.0
    });
    assert_eq!(
        sample(&during, "mountleak_open_findings{kind=\"risk\"}"),
        held - 1.0,
        "our risk became the leak: {during}"
    );
    assert!(
        sample(&during, "mountleak_findings_total{kind=\"leak\"}") >= 1.0,
        "{during}"
    );
    lab.stop(holder);
    daemon.finding("resolved", &merged);
    let (status, body) = get(port, &format!("/check?target={target}"));
    assert_eq!(status, 200, "/check once released: {body}");
    wait_metric(port, "mountleak_open_findings{kind=\"leak\"}", |v| {
        v == leaks
    });
    wait_metric(port, "mountleak_open_findings{kind=\"risk\"}", |v| {
        v == risks
    });
    wait_metric(port, "mountleak_findings_total{kind=\"resolved\"}", |v| {
        v > resolved
    });
}

/// One story in the lab: holder, risk, holder exits, resolved; then the
/// overlay goes, so later holders do not copy it. Returns the finding id.
fn quick_story(lab: &mut Lab, daemon: &mut Daemon, name: &str) -> String {
    let merged = lab.overlay(&format!("{name}-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    let risk = daemon.finding("risk", &merged);
    lab.stop(holder);
    daemon.finding("resolved", &merged);
    lab.umount(&merged).expect("the lab's umount");
    risk["id"].as_str().expect("a finding id").to_string()
}

fn spans_of_story<'a>(spans: &'a [Span], id: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.attr("mountleak.finding.id") == Some(id))
        .collect()
}

#[test]
#[ignore = "needs root: creates mounts and namespaces, runs the daemon and a collector"]
fn a_collector_outage_costs_spans_not_detection_and_export_resumes() {
    let mut collector = Collector::start();
    let mut lab = Lab::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let endpoint = collector.grpc_url();
    let mut daemon = Daemon::in_lab(
        &lab,
        EXPORT_CONFIG,
        &["--otlp-endpoint", &endpoint, "--metrics-listen", &listen],
    );
    daemon.ready();
    let first = quick_story(&mut lab, &mut daemon, "before");
    // All of it: the root span is the last to end.
    collector.wait_for("the first story", EXPORT_TIMEOUT, |s| {
        spans_of_story(s, &first)
            .iter()
            .any(|s| s.name == "mount.lifecycle")
    });
    let delivered = sample(&get(port, "/metrics").1, "mountleak_export_spans_total");

    collector.stop();
    // Detection goes on: the findings still reach stdout.
    let lost = quick_story(&mut lab, &mut daemon, "outage");
    // Its two spans (root and copy) end at the resolution (the ready notice
    // and the other stories make no spans here); the exporter's
    // bounded retries give up while the collector is away.
    let body = wait_metric(
        port,
        "mountleak_export_dropped_spans_total{reason=\"export_failed\"}",
        |v| v >= 2.0,
    );
    assert_eq!(sample(&body, "mountleak_export_up"), 0.0, "{body}");
    assert_eq!(
        sample(&body, "mountleak_export_spans_total"),
        delivered,
        "{body}"
    );
    assert!(
        daemon.stderr.lock().unwrap().contains("OTLP export failed"),
        "the first failure is logged\n{}",
        daemon.transcript()
    );

    collector.restart();
    let after = quick_story(&mut lab, &mut daemon, "after");
    let spans = collector.wait_for("the story after the outage", EXPORT_TIMEOUT, |s| {
        spans_of_story(s, &after)
            .iter()
            .any(|s| s.name == "mount.lifecycle")
    });
    let late = spans_of_story(&spans, &lost);
    assert!(
        late.is_empty(),
        "spans made while the collector was down were dropped, not delayed: {late:#?}\n{}",
        daemon.transcript()
    );
    let body = wait_metric(port, "mountleak_export_up", |v| v == 1.0);
    assert!(
        sample(&body, "mountleak_export_spans_total") >= delivered + 2.0,
        "{body}"
    );
    assert!(
        daemon
            .stderr
            .lock()
            .unwrap()
            .contains("OTLP export resumed"),
        "{}",
        daemon.transcript()
    );
}

/// A real container's lifecycle (dockerd started by the test): `docker run`,
/// a host process that copies the host's mounts privately (a risk on the
/// container's rootfs), `docker stop` (overlay2 unmounts and removes the
/// rootfs: the copy is detached, resolved), `docker rm`. The collector
/// receives one trace for the container: a `container.lifecycle` root from
/// Docker's own start time to the removal, with the container's attributes,
/// the risk and `stopped` as events, the copy's span and a
/// `container.remove` span under it.
#[test]
#[ignore = "needs root: runs dockerd, the daemon and a collector"]
fn a_container_lifecycle_is_one_trace() {
    use crate::support::docker::{Dockerd, JsonLines, NsHolder, IMAGE};

    let collector = Collector::start();
    // Takes the lab lock: no Lab in this test.
    let mut d = Dockerd::start();
    let config = std::env::temp_dir().join(format!("mountleak-export-{}.toml", free_port()));
    fs::write(&config, EXPORT_CONFIG).unwrap();
    let mut cmd = std::process::Command::new(crate::support::mountleak_bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["run", "--json", "--risk-grace", "1s", "--no-metrics"])
        .arg("--containerd-socket=/run/mountleak-tests-no-containerd.sock")
        .arg("--docker-socket")
        .arg(d.socket())
        .args(["--otlp-endpoint", &collector.grpc_url()]);
    let mut daemon = JsonLines::spawn(cmd);
    daemon.wait_for("the ready notice", READY_TIMEOUT, |v| v["type"] == "ready");

    let name = format!("otlp-{}", std::process::id());
    let id = d.run(&name);
    let started = d.inspect(&name, "{{.State.StartedAt}}");
    let holder = NsHolder::start(Propagation::Private, Path::new("/"));
    let risk = daemon.wait_for("a risk naming the container", FINDING_TIMEOUT, |v| {
        v["type"] == "finding" && v["kind"] == "risk" && v["container"]["id"] == id.as_str()
    });
    let story = risk.json["id"].as_str().unwrap().to_string();
    d.stop(&name);
    daemon.wait_for("the resolution at stop", FINDING_TIMEOUT, |v| {
        v["type"] == "finding" && v["kind"] == "resolved" && v["id"] == story.as_str()
    });
    d.rm(&name);
    let removed_at = now_ns();
    drop(holder);
    let _ = fs::remove_file(&config);

    let spans = collector.wait_for("the container's trace", EXPORT_TIMEOUT, |s| {
        s.iter()
            .any(|s| s.name == "container.lifecycle" && s.attr("container.id") == Some(id.as_str()))
    });
    let root = spans
        .iter()
        .find(|s| s.name == "container.lifecycle" && s.attr("container.id") == Some(id.as_str()))
        .unwrap();
    assert!(root.parent_id.is_empty());
    assert_eq!(root.attr("container.name"), Some(name.as_str()));
    assert_eq!(root.attr("container.runtime"), Some("docker"));
    assert_eq!(root.attr("container.image.name"), Some(IMAGE));
    assert_eq!(root.attr("mountleak.start_source"), Some("runtime"));
    // Docker's own start time (RFC3339 with ns), not when the daemon heard.
    let docker_start = unix_ns(&Value::String(started.trim().to_string()));
    assert!(
        root.start.abs_diff(docker_start) < 50_000_000,
        "root start {} vs Docker's StartedAt {started}",
        root.start
    );
    assert!(
        root.end <= removed_at + 1_000_000_000 && root.end > root.start,
        "{root:#?}"
    );
    let events: Vec<&str> = root.events.iter().map(|e| e.name.as_str()).collect();
    assert!(
        events.contains(&"risk") && events.contains(&"stopped"),
        "{events:?}"
    );
    let risk_event = root.events.iter().find(|e| e.name == "risk").unwrap();
    assert!(
        risk_event
            .attributes
            .get("mountleak.remedy")
            .is_some_and(|r| r.contains(&format!("nsenter -t {}", holder_pid(&risk.json)))),
        "{risk_event:#?}"
    );
    let mine: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    for s in &mine {
        if s.id != root.id {
            assert_eq!(s.parent_id, root.id, "{s:#?}");
            assert!(
                s.start >= root.start && s.end <= root.end + 1_000_000,
                "{s:#?}"
            );
        }
    }
    let copy = mine
        .iter()
        .find(|s| s.name == "mount.copy" && s.attr("mountleak.finding.id") == Some(story.as_str()))
        .unwrap_or_else(|| panic!("the rootfs copy in the container's trace: {mine:#?}"));
    assert_eq!(copy.attr("mountleak.propagation"), Some("private"));
    assert!(
        mine.iter().any(|s| s.name == "container.remove"
            && s.attr("mountleak.removal.result") == Some("removed")),
        "{mine:#?}"
    );
}

/// The pid a finding tells to `nsenter -t`.
fn holder_pid(finding: &Value) -> u64 {
    finding["holders"][0]["pid"].as_u64().unwrap_or_default()
}
