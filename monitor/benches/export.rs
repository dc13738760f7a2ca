//! What traces cost the daemon (issue 4 §5), two measurements:
//!
//! 1. `cpu`: the event path (model + sinks, as `daemon.rs` calls them) on a
//!    synthetic stream, with export off (stdout JSON + metrics, the default)
//!    and on (the same plus the OTLP sink exporting to a real collector).
//!    Reported: CPU of the whole process per event (user + system, the
//!    exporter's thread included) and the event path's own time per event.
//!    Target: under 10% more CPU per event with export on.
//! 2. `rss`: the process's resident memory with 1,000 containers tracked
//!    (each with a root span open and its model record), export on.
//!    Target: under 64 MiB.
//!
//! The stream (per cycle of 100 inputs) is the model bench's busy node
//! (forks and exits in watched namespaces, unrelated mounts, setns
//! round-trips, a runtime's init namespace) plus a whole container story:
//! the runtime reports it (`Input::Container` Seen), its overlay is
//! mounted, a service unshares and keeps a private copy (risk), the
//! container stops, the runtime unmounts (leak), removes it, the service
//! exits (resolved). Every cycle therefore ends a trace of five spans.
//!
//! The collector: rotel (`pip install rotel`, as `cargo xtask setup` does)
//! started on a free loopback port; without it the OTLP sink exports to a
//! closed port and the result says so.
//!
//! Run: `cargo bench -p monitor --bench export` (both), or
//! `cargo bench -p monitor --bench export -- cpu|rss`.

use std::io;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monitor_model::flags::*;
use monitor_model::*;
use mountleak::config::Config;
use mountleak::sinks::metrics::MetricsSink;
use mountleak::sinks::otel::{ExportStats, OtelSink};
use mountleak::sinks::stdout::StdoutSink;
use mountleak::sinks::{DaemonStatus, Sink};

const HOST: NsId = 4026531841;
const SEC: u64 = 1_000_000_000;
const HOLDERS: u64 = 20;
const CYCLES: u64 = 20_000;

fn task(pid: Pid, comm: &str) -> Task {
    Task {
        tid: pid,
        tgid: pid,
        uid: 0,
        comm: comm.into(),
        cgroup_id: 1,
    }
}

fn mount(id: u64, minor: u32, path: &str, fstype: &str, shared: Option<u32>) -> MountEntry {
    MountEntry {
        mount_id: id,
        parent_id: 1,
        dev: Dev { major: 0, minor },
        root: "/".into(),
        mount_point: path.into(),
        fstype: fstype.into(),
        source: fstype.into(),
        shared,
        master: None,
        unbindable: false,
    }
}

fn model() -> Model {
    let cfg = ModelConfig {
        risk_grace_ns: 0,
        ..ModelConfig::default()
    };
    let mut m = Model::new(cfg);
    let host = vec![
        mount(1, 1, "/", "ext4", None),
        mount(2, 2, "/var/lib/docker", "tmpfs", Some(1)),
    ];
    let member = |pid: Pid, comm: &str| ProcessInfo {
        pid,
        start: SEC,
        comm: comm.into(),
        cgroup: Some(format!("/system.slice/{comm}.service")),
        ..Default::default()
    };
    let mut namespaces = vec![NamespaceSnapshot {
        ns: HOST,
        mounts: host.clone(),
        members: vec![member(900, "dockerd")],
        ..Default::default()
    }];
    for h in 0..HOLDERS {
        namespaces.push(NamespaceSnapshot {
            ns: HOST + 1000 + h,
            mounts: host.clone(),
            members: vec![member(2000 + h as Pid, "svc")],
            ..Default::default()
        });
    }
    let alive = namespaces.iter().map(|n| n.ns).collect();
    m.apply(&Input::Snapshot(Snapshot {
        taken_at: 10 * SEC,
        alive: Some(alive),
        namespaces,
        pins: vec![],
        pins_scanned: true,
        self_ns: Some(HOST),
    }));
    m
}

fn sys(at: u64, who: &Task, ns: NsId, ns_after: NsId, ret: i64, call: Call) -> Input {
    Input::Syscall(SyscallEvent {
        start: at - 500,
        end: at,
        task: who.clone(),
        ns,
        ns_after,
        ret,
        call,
    })
}

fn container(i: u64, at: u64, path: &str) -> ContainerInfo {
    ContainerInfo {
        runtime: "docker".into(),
        namespace: None,
        id: format!("{i:064x}"),
        name: format!("web-{i}"),
        image: Some("registry.example:5000/shop/nginx:1.25".into()),
        pod: Some(PodInfo {
            name: format!("web-{i}-7f9c"),
            namespace: "shop".into(),
            uid: format!("uid-{i}"),
            container: Some("nginx".into()),
        }),
        mounts: vec![path.into()],
        upper_dir: None,
        pid: Some(300_000 + (i % 100_000) as Pid),
        state: ContainerState::Running,
        started_at: Some(at),
    }
}

/// One cycle of 100 inputs at `t0`; with `story`, a whole container
/// lifecycle (and its trace) is part of it.
fn cycle(cycle: u64, t0: u64, story: bool) -> Vec<Input> {
    let mut v = Vec::with_capacity(100);
    let mut t = t0;
    let mut tick = || {
        t += 10_000;
        t
    };
    let holder = HOST + 1000 + (cycle % HOLDERS);
    for k in 0..30u32 {
        let pid = 100_000 + (cycle as u32 % 1000) * 64 + k;
        v.push(Input::Process(ProcessEvent {
            at: tick(),
            ns: holder,
            kind: ProcessEventKind::Fork {
                parent: 2000,
                child: pid,
                comm: "worker".into(),
            },
        }));
        v.push(Input::Process(ProcessEvent {
            at: tick(),
            ns: holder,
            kind: ProcessEventKind::Exit { pid },
        }));
    }
    let svc = task(2000 + (cycle % HOLDERS) as Pid, "svc");
    for _ in 0..5 {
        let call = Call::Mount {
            source: PathArg::new("tmpfs"),
            target: PathArg::new("/tmp/scratch"),
            fstype: "tmpfs".into(),
            flags: 0,
        };
        v.push(sys(tick(), &svc, holder, holder, 0, call));
        let call = Call::Umount {
            target: PathArg::new("/tmp/scratch"),
            flags: 0,
        };
        v.push(sys(tick(), &svc, holder, holder, 0, call));
    }
    if story {
        // The container story.
        let dockerd = task(900, "dockerd");
        let path = format!("/var/lib/docker/overlay2/c{cycle:063x}/merged");
        let started = tick();
        v.push(Input::Container(ContainerEvent::Seen {
            at: started,
            info: Box::new(container(cycle, started, &path)),
        }));
        let call = Call::Mount {
            source: PathArg::new("overlay"),
            target: PathArg::new(path.as_str()),
            fstype: "overlay".into(),
            flags: 0,
        };
        v.push(sys(tick(), &dockerd, HOST, HOST, 0, call));
        let ns = HOST + 1_000_000 + cycle;
        let pid = 500_000 + (cycle % 100_000) as Pid;
        let unit = task(pid, "chronyd");
        let call = Call::Unshare { flags: CLONE_NEWNS };
        v.push(sys(tick(), &unit, HOST, ns, 0, call));
        let private = Call::Mount {
            source: PathArg::new("none"),
            target: PathArg::new("/"),
            fstype: String::new(),
            flags: MS_REC | MS_PRIVATE,
        };
        v.push(sys(tick(), &unit, ns, ns, 0, private));
        v.push(Input::Tick { now: tick() });
        let id = format!("{cycle:064x}");
        v.push(Input::Container(ContainerEvent::Stopped {
            at: tick(),
            runtime: "docker".into(),
            id: id.clone(),
        }));
        let call = Call::Umount {
            target: PathArg::new(path.as_str()),
            flags: 0,
        };
        v.push(sys(tick(), &dockerd, HOST, HOST, 0, call));
        v.push(sys(
            tick(),
            &dockerd,
            HOST,
            HOST,
            0,
            Call::Rmdir {
                path: PathArg::new(path.as_str()),
            },
        ));
        v.push(Input::Container(ContainerEvent::Removed {
            at: tick(),
            runtime: "docker".into(),
            id,
        }));
        v.push(Input::Process(ProcessEvent {
            at: tick(),
            ns,
            kind: ProcessEventKind::Exit { pid },
        }));
    }
    // A runtime's init namespace.
    let runc = task(600_000 + (cycle % 100_000) as Pid, "runc:[1:CHILD]");
    let init_ns = HOST + 2_000_000 + cycle;
    let call = Call::NewTask {
        child: runc.tgid + 1,
        child_ns: init_ns,
        flags: CLONE_NEWNS,
    };
    v.push(sys(tick(), &runc, HOST, HOST, 0, call));
    v.push(Input::Process(ProcessEvent {
        at: tick(),
        ns: init_ns,
        kind: ProcessEventKind::Exit { pid: runc.tgid + 1 },
    }));
    v.push(Input::Tick { now: tick() });
    while v.len() < 100 {
        let who = task(700_000 + v.len() as Pid, "nsenter");
        let call = Call::Setns {
            nstype: CLONE_NEWNS,
        };
        v.push(sys(tick(), &who, HOST, holder, 0, call));
    }
    v
}

/// User + system CPU of this process so far.
fn cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(4317)
}

/// rotel on a free port, if installed. Killed on drop.
struct Collector(Option<Child>, u16);

impl Collector {
    fn start() -> Collector {
        let port = free_port();
        let agent = Command::new("python3")
            .args(["-c", "import rotel,os;print(os.path.join(os.path.dirname(rotel.__file__),'rotel-agent'))"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let child = agent.and_then(|a| {
            let dir = std::env::temp_dir();
            Command::new(a)
                .arg("start")
                .arg("--otlp-grpc-endpoint")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--otlp-http-endpoint")
                .arg(format!("127.0.0.1:{}", free_port()))
                .args(["--exporter", "blackhole"])
                .arg("--pid-file")
                .arg(dir.join(format!("bench-rotel-{port}.pid")))
                .arg("--log-file")
                .arg(dir.join(format!("bench-rotel-{port}.log")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        });
        if child.is_some() {
            let t = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
                && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Collector(child, port)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sinks the daemon would run: stdout (JSON to nowhere), metrics, and
/// the OTLP sink when `otlp` is given.
fn sinks(otlp: Option<u16>) -> (Vec<Box<dyn Sink>>, Option<Arc<ExportStats>>) {
    let mut s: Vec<Box<dyn Sink>> = vec![Box::new(StdoutSink::new(io::sink(), true))];
    let stats = otlp.map(|port| {
        let mut cfg = Config::default();
        cfg.export.traces = true;
        cfg.export.endpoint = format!("http://127.0.0.1:{port}");
        // Room for every span of a run, so the CPU measured includes
        // exporting all of them (the default 2,048 drops most of the
        // worst case's spans, which would flatter it).
        cfg.export.queue_size = 1 << 20;
        let stats = ExportStats::new();
        let otel = OtelSink::start(&cfg, Arc::clone(&stats)).expect("the OTLP sink starts");
        s.push(Box::new(otel));
        stats
    });
    let metrics = MetricsSink::start("127.0.0.1:0".parse().unwrap(), stats.clone(), None, None)
        .expect("metrics listen");
    s.push(Box::new(metrics));
    (s, stats)
}

/// Feeds `cycles` cycles through the model and the sinks the way
/// `daemon.rs` does. Returns (event-path time, findings).
fn drive(
    m: &mut Model,
    sinks: &mut [Box<dyn Sink>],
    from: u64,
    cycles: u64,
    story_every: u64,
) -> (Duration, u64) {
    let mut out = Vec::new();
    let mut path = Duration::ZERO;
    let mut findings = 0;
    for n in from..from + cycles {
        let events = cycle(n, 20 * SEC + n * 10_000_000, n % story_every == 0);
        let start = Instant::now();
        for e in &events {
            out.clear();
            m.apply_into(e, &mut out);
            for s in sinks.iter_mut() {
                s.input(e);
            }
            for o in out.drain(..) {
                if let Output::Finding(f) = o {
                    findings += 1;
                    for s in sinks.iter_mut() {
                        s.finding(&f);
                    }
                }
            }
        }
        if n % 10 == 0 {
            // The status tick (once a second in the daemon).
            let status = DaemonStatus {
                probes: "syscalls",
                namespaces: m.namespace_count(),
                ..Default::default()
            };
            for s in sinks.iter_mut() {
                s.status(&status);
            }
        }
        path += start.elapsed();
    }
    (path, findings)
}

fn bench_cpu(rt: &tokio::runtime::Runtime) {
    let collector = Collector::start();
    let to = if collector.0.is_some() {
        "rotel (a real OTLP collector)"
    } else {
        "a closed port (rotel not installed: exports fail)"
    };
    println!("export/cpu: {CYCLES} cycles of 100 inputs; OTLP to {to}");
    let _guard = rt.enter();
    // 1: a container lifecycle (5 spans, 3 findings) in every 100 inputs,
    // far beyond any real node: the cost per span shows. 100: one in
    // 10,000 inputs, still a busy node (a container started and removed
    // every few seconds at a few thousand mount-related events a second).
    for story_every in [1u64, 100] {
        let mut rows: Vec<(bool, f64, f64, u64, u64)> = Vec::new();
        for round in 0..6 {
            let on = round % 2 == 1;
            let mut m = model();
            let (mut s, stats) = sinks(on.then_some(collector.1));
            // Warm up (allocations, the connection).
            drive(&mut m, &mut s, 1, 500, story_every);
            let cpu0 = cpu();
            let (path, _findings) = drive(&mut m, &mut s, 501, CYCLES, story_every);
            // Let the exporter send what the run produced: its CPU counts.
            if let Some(st) = &stats {
                let t = Instant::now();
                while st.pending() > 0 && t.elapsed() < Duration::from_secs(20) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let used = cpu() - cpu0;
            let events = (CYCLES * 100) as f64;
            let (exported, dropped) = stats
                .as_ref()
                .map(|s| {
                    (
                        s.exported.load(std::sync::atomic::Ordering::Relaxed),
                        s.dropped(),
                    )
                })
                .unwrap_or_default();
            for x in s.iter_mut() {
                x.shutdown();
            }
            rows.push((
                on,
                used.as_nanos() as f64 / events,
                path.as_nanos() as f64 / events,
                exported,
                dropped,
            ));
        }
        let median = |on: bool, col: usize| {
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|r| r.0 == on)
                .map(|r| if col == 1 { r.1 } else { r.2 })
                .collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (off, on) = (median(false, 1), median(true, 1));
        let (path_off, path_on) = (median(false, 2), median(true, 2));
        let spans: u64 = rows.iter().filter(|r| r.0).map(|r| r.3 + r.4).sum::<u64>() / 3;
        println!(
            "  a container lifecycle every {} inputs: CPU/event off {off:.0} ns, on {on:.0} ns ({:+.1}%, target < +10%); event path/event off {path_off:.0} ns, on {path_on:.0} ns; {spans} spans/run, {:.1} µs CPU per span; runs (on, cpu ns, path ns, exported, dropped): {rows:.0?}",
            story_every * 100,
            (on / off - 1.0) * 100.0,
            (on - off) * (CYCLES * 100) as f64 / spans.max(1) as f64 / 1000.0,
        );
    }
}

fn bench_rss(rt: &tokio::runtime::Runtime) {
    let collector = Collector::start();
    let _guard = rt.enter();
    let before = status_kib("VmRSS:");
    let mut m = model();
    let (mut s, _stats) = sinks(Some(collector.1));
    let mut out = Vec::new();
    for i in 0..1000u64 {
        let path = format!("/var/lib/docker/overlay2/{i:064x}/merged");
        let at = 20 * SEC + i * 1000;
        let e = Input::Container(ContainerEvent::Seen {
            at,
            info: Box::new(container(i, at, &path)),
        });
        out.clear();
        m.apply_into(&e, &mut out);
        for x in s.iter_mut() {
            x.input(&e);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = status_kib("VmRSS:");
    let hwm = status_kib("VmHWM:");
    println!(
        "export/rss: 1,000 containers tracked, export on: VmRSS {:.1} MiB (was {:.1} MiB before the model and sinks), peak {:.1} MiB (target < 64 MiB)",
        after as f64 / 1024.0,
        before as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    for x in s.iter_mut() {
        x.shutdown();
    }
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |w: &str| which.is_empty() || which.iter().any(|a| a == w);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if want("rss") {
        bench_rss(&rt);
    }
    if want("cpu") {
        bench_cpu(&rt);
    }
}
