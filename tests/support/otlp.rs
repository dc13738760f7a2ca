//! A real OTLP collector for the export tests: rotel (PyPI `rotel`, which
//! ships the `rotel-agent` binary inside the package; `cargo xtask setup`
//! installs it), listening for gRPC and HTTP on free loopback ports and
//! printing every span it receives (`--debug-log traces
//! --debug-log-verbosity detailed`) to a file this module parses.
//!
//! The collector can be stopped and started again on the same ports, which
//! is how the tests take it away from a running daemon and bring it back.
//!
//! May import: std, libc. Jaeger speaks the same OTLP, so what rotel
//! receives is what Jaeger would store.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long rotel gets to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A free loopback port (bound and released: another process could take it
/// in between, which on a test machine does not happen).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Where `pip install rotel` put the agent binary.
pub fn rotel_agent() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("python3 runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "the rotel collector is not installed: `pip install rotel` (`cargo xtask setup` does it)"
    );
    path
}

/// A running rotel, killed on drop.
pub struct Collector {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    /// Output of earlier runs (a restart starts a new file).
    earlier: String,
}

impl Collector {
    pub fn start() -> Collector {
        let dir = std::env::temp_dir().join(format!(
            "mountleak-otlp-{}-{}",
            std::process::id(),
            free_port()
        ));
        fs::create_dir_all(&dir).expect("collector scratch dir");
        let mut c = Collector {
            grpc: SocketAddr::from(([127, 0, 0, 1], free_port())),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            child: None,
            earlier: String::new(),
        };
        c.restart();
        c
    }

    /// `http://127.0.0.1:PORT` of the gRPC receiver.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:PORT` of the HTTP receiver (the base URL, as in
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    fn out_file(&self) -> PathBuf {
        self.dir.join("spans.txt")
    }

    /// Starts it (again) on the same ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let out = fs::File::create(self.out_file()).expect("collector output file");
        let mut cmd = Command::new(rotel_agent());
        cmd.arg("start")
            .arg("--otlp-grpc-endpoint")
            .arg(self.grpc.to_string())
            .arg("--otlp-http-endpoint")
            .arg(self.http.to_string())
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "traces", "--debug-log-verbosity", "detailed"])
            // Print as soon as spans arrive.
            .args(["--batch-timeout", "50ms"])
            .arg("--pid-file")
            .arg(self.dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(self.dir.join("rotel.log"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        // SAFETY: one async-signal-safe syscall between fork and exec: the
        // collector dies with the test binary even if Drop never runs.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("start rotel-agent"));
        let started = Instant::now();
        while TcpStream::connect(self.grpc).is_err() || TcpStream::connect(self.http).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("rotel exited ({status}):\n{}", self.output());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "rotel did not open {} and {}:\n{}",
                self.grpc,
                self.http,
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes the collector away (SIGKILL: a crash, not a goodbye).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.earlier.push_str(&read(&self.out_file()));
    }

    /// Everything it printed, all runs.
    pub fn output(&self) -> String {
        let mut all = self.earlier.clone();
        if self.child.is_some() {
            all.push_str(&read(&self.out_file()));
        }
        all
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        parse(&self.output())
    }

    /// Waits until `pred` holds for the spans received, and returns them.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; the collector received:\n{}",
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn read(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A span as the collector printed it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Span {
    pub trace_id: String,
    /// Empty for a root.
    pub parent_id: String,
    pub id: String,
    pub name: String,
    /// Unix ns.
    pub start: u64,
    pub end: u64,
    pub status: String,
    /// Values as printed: `Str(x)` becomes `x`, `Int(5)` becomes `5`.
    pub attributes: BTreeMap<String, String>,
    pub events: Vec<SpanEvent>,
    /// The resource of the batch it came in.
    pub resource: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub time: u64,
    pub attributes: BTreeMap<String, String>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// `Str(abc)` -> `abc`, `Int(5)` -> `5`; anything else as it is.
fn value(raw: &str) -> String {
    match raw.split_once('(') {
        Some((kind, rest)) if kind.chars().all(|c| c.is_ascii_alphabetic()) => {
            rest.strip_suffix(')').unwrap_or(rest).to_string()
        }
        _ => raw.to_string(),
    }
}

/// Where the next `-> key: value` line goes.
#[derive(Clone, Copy, PartialEq)]
enum Section {
    Resource,
    Span,
    Event,
    Other,
}

/// Parses rotel's detailed debug output (the collector's `debug` exporter
/// format): `ResourceSpans`, `Span #n` blocks with `Trace ID`, `Parent ID`,
/// `ID`, `Name`, `Start time`, `End time`, `Attributes:` (`-> key: Type(v)`)
/// and `SpanEvent #n` blocks. A string value with newlines continues on the
/// following lines, which start with no `->`.
pub fn parse(text: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut resource = BTreeMap::new();
    let mut section = Section::Other;
    let mut last_key: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with("ResourceSpans #") {
            resource = BTreeMap::new();
            section = Section::Other;
        } else if line.starts_with("Resource attributes:") {
            section = Section::Resource;
        } else if line.starts_with("Span #") {
            spans.push(Span {
                resource: resource.clone(),
                ..Span::default()
            });
            section = Section::Other;
        } else if line.starts_with("Attributes:") && !spans.is_empty() {
            section = Section::Span;
        } else if line.starts_with("SpanEvent #") {
            if let Some(s) = spans.last_mut() {
                s.events.push(SpanEvent::default());
            }
            section = Section::Event;
        } else if line.starts_with("ScopeSpans")
            || line.starts_with("Events:")
            || line.starts_with("Links:")
        {
            if !line.starts_with("Events:") {
                section = Section::Other;
            }
        } else if let Some(kv) = line.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_string(), v.trim());
            match section {
                Section::Resource => {
                    resource.insert(k.clone(), value(v));
                }
                Section::Span => {
                    if let Some(s) = spans.last_mut() {
                        s.attributes.insert(k.clone(), value(v));
                    }
                }
                Section::Event => {
                    if let Some(e) = spans.last_mut().and_then(|s| s.events.last_mut()) {
                        match k.as_str() {
                            "Name" => e.name = v.to_string(),
                            "Timestamp" => e.time = v.parse().unwrap_or(0),
                            "DroppedAttributesCount" | "Attributes" => {}
                            _ => {
                                e.attributes.insert(k.clone(), value(v));
                            }
                        }
                    }
                }
                Section::Other => {}
            }
            last_key = Some(k);
        } else if let Some((k, v)) = line.split_once(':') {
            let field = k.trim();
            let v = v.trim();
            let Some(s) = spans.last_mut() else { continue };
            match field {
                "Trace ID" => s.trace_id = v.to_string(),
                "Parent ID" => s.parent_id = v.to_string(),
                "ID" => s.id = v.to_string(),
                "Name" => s.name = v.to_string(),
                "Start time" => s.start = v.parse().unwrap_or(0),
                "End time" => s.end = v.parse().unwrap_or(0),
                "Status code" => s.status = v.to_string(),
                _ => continue_value(&mut spans, section, &last_key, raw),
            }
        } else if !line.is_empty() {
            continue_value(&mut spans, section, &last_key, raw);
        }
    }
    spans
}

/// A line of a multi-line string value: appended to the last attribute.
fn continue_value(spans: &mut [Span], section: Section, key: &Option<String>, raw: &str) {
    let (Some(key), Some(span)) = (key, spans.last_mut()) else {
        return;
    };
    let map = match section {
        Section::Span => &mut span.attributes,
        Section::Event => match span.events.last_mut() {
            Some(e) => &mut e.attributes,
            None => return,
        },
        _ => return,
    };
    if let Some(v) = map.get_mut(key) {
        v.push('\n');
        v.push_str(raw.strip_suffix(')').unwrap_or(raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_detailed_debug_format() {
        let text = "ResourceSpans #0\nResource attributes:\n     -> service.name: Str(mountleak)\nScopeSpans #0\nSpan #0\n    Trace ID       : aa\n    Parent ID      : \n    ID             : bb\n    Name           : mount.lifecycle\nStart time: 10\nEnd time: 20\n    Status code    : STATUS_CODE_UNSET\nAttributes:\n     -> mountleak.mnt_ns: Int(4026532251)\nEvents:\nSpanEvent #0\n     -> Name: risk\n     -> Timestamp: 15\n     -> DroppedAttributesCount: 0\n     -> Attributes::\n          -> mountleak.remedy: Str(first line\nsecond line)\n";
        let spans = parse(text);
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(
            (s.trace_id.as_str(), s.parent_id.as_str(), s.id.as_str()),
            ("aa", "", "bb")
        );
        assert_eq!((s.start, s.end), (10, 20));
        assert_eq!(s.attr("mountleak.mnt_ns"), Some("4026532251"));
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("mountleak")
        );
        assert_eq!(s.events[0].name, "risk");
        assert_eq!(s.events[0].time, 15);
        assert_eq!(
            s.events[0]
                .attributes
                .get("mountleak.remedy")
                .map(String::as_str),
            Some("first line\nsecond line")
        );
    }
}
