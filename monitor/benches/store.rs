//! Event store benchmarks (BENCHMARKS.md, "Event store"):
//!
//! 1. sustained insert rate through the daemon's path: model inputs and
//!    findings into the writer's queue (blocking send, so nothing is
//!    dropped), converted and written in batches by its thread — the whole
//!    store is built this way;
//! 2. `timeline` for one container in that store (10 million events by
//!    default): open, collect, tell, render, by name, id, path and namespace;
//! 3. the store's size per million events;
//! 4. retention: cutting the store to half its size, and inserting with a
//!    size cap (retention running alongside).
//!
//! ```sh
//! cargo bench -p monitor --bench store                       # 10M events
//! cargo bench -p monitor --bench store -- --events 1000000   # quicker
//! cargo bench -p monitor --bench store -- --dir /var/tmp/x --keep
//! ```
//!
//! The workload is a node running containers: each container is seen by
//! its runtime, gets its rootfs and shm mounted, its runtime clones into a
//! new namespace and sets propagation, forks and exits happen, it stops,
//! is unmounted (rmdir) and removed; one container in 40 is copied by a
//! private holder (`ntpd`) and goes risk → leak → resolved.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use monitor_model::finding::{
    Consequence, ConsequenceKind, ContainerRef, Finding, FindingKind, HoldKind, Holder,
    HolderProcess, MountRef, ProcessRef,
};
use monitor_model::flags::{CLONE_NEWNS, MS_PRIVATE, MS_REC, MS_SLAVE};
use monitor_model::{
    Call, ContainerEvent, ContainerHint, ContainerInfo, ContainerState, Input, PathArg, PathBytes,
    Patterns, ProcessEvent, ProcessEventKind, SyscallEvent, Task,
};
use mountleak::procfs::clock::boottime_ns;
use mountleak::timeline::query::{collect, StoreLookup, Target};
use mountleak::timeline::store::{Retention, Store};
use mountleak::timeline::writer::{Item, Writer, WriterConfig};
use mountleak::timeline::{story, text};

const HOST_NS: u64 = 4_026_531_840;

struct Opts {
    events: u64,
    dir: PathBuf,
    keep: bool,
    /// Only the insert phase (for profiling).
    insert_only: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        events: 10_000_000,
        dir: PathBuf::from("/var/tmp/mountleak-bench-store"),
        keep: false,
        insert_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => {
                o.events = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--events N")
            }
            "--dir" => o.dir = PathBuf::from(args.next().expect("--dir DIR")),
            "--keep" => o.keep = true,
            "--insert-only" => o.insert_only = true,
            // `cargo bench` passes --bench; criterion-style filters are ignored.
            _ => {}
        }
    }
    o
}

/// A 64-hex container id, as random-looking as Docker's.
fn id_of(n: u64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        mix(n),
        mix(n.wrapping_add(1 << 20)),
        mix(n.wrapping_add(1 << 40)),
        mix(!n)
    )
}

fn rootfs(n: u64) -> String {
    format!("/var/lib/docker/overlay2/{:064x}/merged", n * 2_654_435_761)
}

fn shm(n: u64) -> String {
    format!("/var/lib/docker/containers/{}/mounts/shm", id_of(n))
}

/// Generates the workload as inputs and findings, in time order.
struct Workload {
    container: u64,
    kt: u64,
    queue: std::collections::VecDeque<Item>,
}

impl Workload {
    fn new(start_kt: u64) -> Workload {
        Workload {
            container: 0,
            kt: start_kt,
            queue: Default::default(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.kt += 50_000;
        self.kt
    }

    fn sys(&mut self, comm: &str, pid: u32, ns: u64, ns_after: u64, ret: i64, call: Call) -> Item {
        let at = self.tick();
        Item::Input(Input::Syscall(SyscallEvent {
            start: at - 10_000,
            end: at,
            task: Task {
                tid: pid,
                tgid: pid,
                uid: 0,
                comm: comm.into(),
                cgroup_id: 1234,
            },
            ns,
            ns_after,
            ret,
            call,
        }))
    }

    fn finding(&mut self, n: u64, kind: FindingKind, holder_pid: u32, ns: u64) -> Item {
        let at = self.tick();
        let path = PathBytes::from(rootfs(n));
        let holders = if kind == FindingKind::Resolved {
            vec![]
        } else {
            vec![Holder {
                mnt_ns: ns,
                hold: HoldKind::Copy,
                mount_point: Some(path.clone()),
                propagation: "private",
                receives_host_umounts: Some(false),
                pid: Some(holder_pid),
                processes: vec![HolderProcess {
                    pid: holder_pid,
                    comm: "ntpd".into(),
                    exe: Some("/usr/sbin/ntpd".into()),
                    cgroup: Some("/system.slice/ntpd.service".into()),
                    unit: Some("ntpd.service".into()),
                    uid: 0,
                }],
                more_processes: 0,
                nsfs_mounts: vec![],
                user_ns_locked: false,
                since: Some(at - 1_000_000),
                since_source: "observed",
                via: Some("unshare"),
                created_by: Some(ProcessRef {
                    pid: holder_pid,
                    comm: "ntpd".into(),
                }),
                parent_mnt_ns: Some(HOST_NS),
                busy: vec![],
            }]
        };
        Item::Finding(Box::new(Finding {
            id: format!("ML-{n}"),
            kind,
            at,
            summary: format!("docker rootfs of web-{n}: {}", kind.as_str()),
            mount: MountRef {
                path_hex: None,
                dev: Some("0:44".into()),
                fstype: "overlay".into(),
                source: "overlay".into(),
                container: ContainerHint::from_path(&path),
                owner: Some(ContainerRef {
                    runtime: "docker".into(),
                    namespace: None,
                    id: id_of(n),
                    name: format!("web-{n}"),
                    image: Some("nginx:1.25".into()),
                    pod: None,
                    state: ContainerState::Stopped,
                    removed: false,
                }),
                mounted_at: Some(at - 5_000_000),
                unmounted_at: None,
                path,
            },
            holders,
            more_holders: 0,
            consequence: Consequence {
                kind: ConsequenceKind::DetachedOnRemoval,
                text: "Kernel 6.18: the copy is detached when the runtime removes the mountpoint directory.".into(),
            },
            remedy: vec![format!("`nsenter -t {holder_pid} -m umount {}` releases the copy", rootfs(n))],
            failed_call: None,
            resolution: (kind == FindingKind::Resolved).then(|| "the holder exited".to_string()),
        }))
    }

    /// One container's life (about 15 events; 24 for a leaking one).
    fn container(&mut self) {
        let n = self.container;
        self.container += 1;
        let pid = 10_000 + (n % 50_000) as u32;
        let ns = HOST_NS + 1_000 + n;
        let at = self.tick();
        let info = ContainerInfo {
            runtime: "docker".into(),
            namespace: None,
            id: id_of(n),
            name: format!("web-{n}"),
            image: Some("nginx:1.25".into()),
            pod: None,
            mounts: vec![rootfs(n).into(), shm(n).into()],
            upper_dir: None,
            pid: Some(pid + 1),
            state: ContainerState::Running,
            started_at: Some(at),
        };
        let mut q = Vec::new();
        q.push(Item::Input(Input::Container(ContainerEvent::Seen {
            at,
            info: Box::new(info),
        })));
        let mount = |t: String| Call::Mount {
            source: PathArg::new("overlay"),
            target: PathArg::new(t),
            fstype: "overlay".into(),
            flags: 0,
        };
        q.push(self.sys("dockerd", 812, HOST_NS, HOST_NS, 0, mount(rootfs(n))));
        q.push(self.sys("dockerd", 812, HOST_NS, HOST_NS, 0, mount(shm(n))));
        q.push(self.sys(
            "runc",
            pid,
            HOST_NS,
            HOST_NS,
            0,
            Call::NewTask {
                child: pid + 1,
                child_ns: ns,
                flags: CLONE_NEWNS,
            },
        ));
        q.push(self.sys(
            "runc:[1:CHILD]",
            pid + 1,
            ns,
            ns,
            0,
            Call::Mount {
                source: PathArg::new(""),
                target: PathArg::new("/"),
                fstype: String::new(),
                flags: MS_SLAVE | MS_REC,
            },
        ));
        for k in 0..3u32 {
            let at = self.tick();
            q.push(Item::Input(Input::Process(ProcessEvent {
                at,
                ns,
                kind: ProcessEventKind::Fork {
                    parent: pid + 1,
                    child: pid + 2 + k,
                    comm: "nginx".into(),
                },
            })));
        }
        let leaking = n % 40 == 7;
        let holder = 900_000 + (n % 1000) as u32;
        let hns = HOST_NS + 50_000_000 + n;
        if leaking {
            q.push(self.sys(
                "ntpd",
                holder,
                HOST_NS,
                hns,
                0,
                Call::Unshare { flags: CLONE_NEWNS },
            ));
            q.push(self.sys(
                "ntpd",
                holder,
                hns,
                hns,
                0,
                Call::Mount {
                    source: PathArg::new("none"),
                    target: PathArg::new("/"),
                    fstype: String::new(),
                    flags: MS_PRIVATE | MS_REC,
                },
            ));
            q.push(self.finding(n, FindingKind::Risk, holder, hns));
        }
        for k in 0..3u32 {
            let at = self.tick();
            q.push(Item::Input(Input::Process(ProcessEvent {
                at,
                ns,
                kind: ProcessEventKind::Exit { pid: pid + 2 + k },
            })));
        }
        let at = self.tick();
        q.push(Item::Input(Input::Container(ContainerEvent::Stopped {
            at,
            runtime: "docker".into(),
            id: id_of(n),
        })));
        let umount = |t: String| Call::Umount {
            target: PathArg::new(t),
            flags: 0,
        };
        q.push(self.sys("dockerd", 812, HOST_NS, HOST_NS, 0, umount(shm(n))));
        q.push(self.sys("dockerd", 812, HOST_NS, HOST_NS, 0, umount(rootfs(n))));
        if leaking {
            q.push(self.finding(n, FindingKind::Leak, holder, hns));
        }
        q.push(self.sys(
            "dockerd",
            812,
            HOST_NS,
            HOST_NS,
            0,
            Call::Rmdir {
                path: PathArg::new(rootfs(n)),
            },
        ));
        if leaking {
            let at = self.tick();
            q.push(Item::Input(Input::Process(ProcessEvent {
                at,
                ns: hns,
                kind: ProcessEventKind::Exit { pid: holder },
            })));
            q.push(self.finding(n, FindingKind::Resolved, holder, hns));
        }
        let at = self.tick();
        q.push(Item::Input(Input::Container(ContainerEvent::Removed {
            at,
            runtime: "docker".into(),
            id: id_of(n),
        })));
        self.queue.extend(q);
    }
}

impl Iterator for Workload {
    type Item = Item;
    fn next(&mut self) -> Option<Item> {
        if self.queue.is_empty() {
            self.container();
        }
        self.queue.pop_front()
    }
}

fn writer(path: &Path, retention: Retention) -> Writer {
    let mut cfg = WriterConfig::new(path, Patterns::default());
    cfg.retention = retention;
    cfg.retention_every = Duration::from_secs(5);
    Writer::spawn(cfg).expect("writer thread")
}

const NO_RETENTION: Retention = Retention {
    max_age: None,
    max_bytes: None,
};

/// CPU seconds (user + system) of this process's thread named `name`, from
/// /proc (`utime`, `stime` in clock ticks).
fn thread_cpu(name: &str) -> Option<f64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        return Some(ticks / 100.0);
    }
    None
}

/// Sends `count` items; returns the per-million rates and the total rate
/// (counted when committed).
fn fill(w: &Writer, work: &mut Workload, count: u64) -> (Vec<f64>, f64) {
    let started = Instant::now();
    let mut lap = Instant::now();
    let mut rates = Vec::new();
    let step = 1_000_000.min(count);
    for i in 1..=count {
        w.send(work.next().expect("endless workload"));
        if i % step == 0 {
            assert!(w.wait_idle(Duration::from_secs(600)));
            rates.push(step as f64 / lap.elapsed().as_secs_f64());
            lap = Instant::now();
        }
    }
    assert!(w.wait_idle(Duration::from_secs(600)));
    (rates, count as f64 / started.elapsed().as_secs_f64())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// `mountleak timeline TARGET` minus process start: open, collect, tell,
/// render. Returns (ms, steps).
fn timeline(path: &Path, target: &str) -> (f64, usize) {
    let started = Instant::now();
    let store = Store::open_existing(path).expect("open store");
    let t = Target::parse(target).expect("target");
    let related = collect(&t, &mut StoreLookup(&store))
        .expect("query")
        .unwrap_or_else(|| panic!("{target} not found"));
    let ctx = story::Context {
        generated_at_ns: 0,
        ..story::Context::default()
    };
    let tl = story::build(ctx, &related.rows);
    let out = text::render(&tl);
    std::hint::black_box(out);
    (started.elapsed().as_secs_f64() * 1e3, tl.steps.len())
}

fn main() {
    let o = opts();
    std::fs::create_dir_all(&o.dir).expect("bench dir");
    let db = o.dir.join("events.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let per_container = {
        let mut w = Workload::new(0);
        w.container();
        w.queue.len() as f64
    };
    // Times end about now.
    let start_kt = boottime_ns().saturating_sub(o.events * 50_000 + 60_000_000_000);
    let mut work = Workload::new(start_kt);
    println!(
        "# event store benchmark: {} events into {}",
        o.events,
        db.display()
    );
    println!(
        "# workload: {:.1} events per container on average (1 in 40 leaks)",
        per_container
    );

    // 1. Sustained insert rate, building the store.
    let mut w = writer(&db, NO_RETENTION);
    let cpu0 = thread_cpu("mountleak-store").unwrap_or(0.0);
    let (rates, total) = fill(&w, &mut work, o.events);
    let cpu = thread_cpu("mountleak-store").unwrap_or(0.0) - cpu0;
    w.shutdown(Duration::from_secs(60));
    let s = w.stats();
    println!(
        "insert: the writer thread used {cpu:.1} s of CPU: {:.1} µs per event, {:.0} events per CPU-second",
        cpu * 1e6 / o.events as f64,
        o.events as f64 / cpu.max(0.001)
    );
    println!(
        "insert: {} items ({} records) in batches: {:.0} events/s overall; per million: min {:.0}, median {:.0}, max {:.0}",
        s.committed,
        s.records,
        total,
        percentile(rates.clone(), 0.0),
        percentile(rates.clone(), 0.5),
        percentile(rates, 1.0)
    );

    if o.insert_only {
        return;
    }

    // 3. Size.
    let store = Store::open_existing(&db).expect("open");
    let st = store.stats().expect("stats");
    let wal = std::fs::metadata(format!("{}-wal", db.display()))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "size: {} events, file {:.1} MiB (+ WAL {:.1} MiB), pages in use {:.1} MiB: {:.1} MiB per million events, {:.0} bytes per event",
        st.events,
        mib(st.file_bytes),
        mib(wal),
        mib(st.used_bytes),
        mib(st.used_bytes) / (st.events as f64 / 1e6),
        st.used_bytes as f64 / st.events as f64
    );
    drop(store);

    // 2. timeline for one container, cold open each time.
    let containers = work.container;
    for (label, n) in [
        ("early", containers / 10 * 7 / 7),
        ("middle", containers / 2),
        ("late", containers - 2),
    ] {
        // A leaking one near there: the longest story.
        let n = n - n % 40 + 7;
        let n = n.min(containers - 1);
        for (how, target) in [
            ("name", format!("web-{n}")),
            ("id", id_of(n)),
            ("id prefix", id_of(n)[..12].to_string()),
            ("path", rootfs(n)),
            ("mnt ns", (HOST_NS + 50_000_000 + n).to_string()),
        ] {
            let mut times = Vec::new();
            let mut steps = 0;
            for _ in 0..15 {
                let (ms, s) = timeline(&db, &target);
                times.push(ms);
                steps = s;
            }
            println!(
                "timeline ({label} container, by {how}): {steps} steps; median {:.2} ms, max {:.2} ms (15 runs)",
                percentile(times.clone(), 0.5),
                percentile(times, 1.0)
            );
        }
    }

    // 4a. Retention to half the size, as the writer runs it (chunks of 5k).
    let mut store = Store::create(&db).expect("reopen");
    let used = store.used_bytes().expect("size");
    let r = Retention {
        max_age: None,
        max_bytes: Some(used / 2),
    };
    let started = Instant::now();
    let mut deleted = 0;
    let mut worst = Duration::ZERO;
    if let Some(upto) = store.retention_boundary(&r, 0).expect("plan") {
        loop {
            let chunk = Instant::now();
            let (n, more) = store.delete_oldest(upto, 5_000).expect("delete");
            worst = worst.max(chunk.elapsed());
            deleted += n;
            if !more {
                break;
            }
        }
    }
    let deleting = started.elapsed();
    let vac = Instant::now();
    store.forget_orphans().expect("forget");
    while store.vacuum_step(2048).expect("vacuum") > 0 {}
    let vacuuming = vac.elapsed();
    let st = store.stats().expect("stats");
    println!(
        "retention to {:.0} MiB: deleted {deleted} events in {:.1} s ({:.0} events/s; longest 5k-row transaction {:.0} ms), gave pages back in {:.1} s; now {} events, pages in use {:.1} MiB, file {:.1} MiB",
        mib(used / 2),
        deleting.as_secs_f64(),
        deleted as f64 / deleting.as_secs_f64(),
        worst.as_secs_f64() * 1e3,
        vacuuming.as_secs_f64(),
        st.events,
        mib(st.used_bytes),
        mib(st.file_bytes)
    );
    drop(store);

    // 4b. Inserting into a capped store: retention runs alongside.
    let cap_db = o.dir.join("capped.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", cap_db.display()));
    }
    let cap = 64 * 1024 * 1024;
    let n = (o.events / 5).max(500_000);
    let mut w = writer(
        &cap_db,
        Retention {
            max_age: None,
            max_bytes: Some(cap),
        },
    );
    let (_, rate) = fill(&w, &mut work, n);
    std::thread::sleep(Duration::from_secs(6));
    w.shutdown(Duration::from_secs(60));
    let s = w.stats();
    let store = Store::open_existing(&cap_db).expect("open capped");
    let st = store.stats().expect("stats");
    println!(
        "capped at {:.0} MiB: {n} events inserted at {:.0} events/s with retention running; retention removed {}; kept {} events, pages in use {:.1} MiB, file {:.1} MiB; integrity {}",
        mib(cap),
        rate,
        s.retained_away,
        st.events,
        mib(st.used_bytes),
        mib(st.file_bytes),
        store.integrity_check().expect("integrity")
    );
    drop(store);
    if !o.keep {
        let _ = std::fs::remove_dir_all(&o.dir);
    }
}
