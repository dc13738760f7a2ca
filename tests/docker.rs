//! Docker, for real: a dockerd started by hand ([`support::docker`]),
//! containers from an imported busybox image, and
//! - the Docker adapter (`mountleak::runtime::docker::run`) driven directly:
//!   the event sequence of run → stop → rm with the mounts it names checked
//!   against /proc; a kill -9 and restart of dockerd while it runs; a name
//!   with unusual characters; containers gone before their inspect;
//! - `mountleak run --json` end to end (issue 3): the pre-removal warning
//!   for a rootfs pinned by a holder's cwd, before `docker rm`; the pinned
//!   filesystem in `scan` after the removal; no lasting warning for an idle
//!   private copy or a slave copy.
//!
//! Every test starts its own dockerd, which takes the cross-process test
//! lock: they act on the machine's own mount namespace.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use monitor_model::{ContainerEvent, ContainerInfo, ContainerState, Input, PathBytes};
use mountleak::runtime::docker::{self, DockerConfig};
use mountleak::runtime::RuntimeStatus;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::support::docker::{mount_at, Dockerd, JsonLines, Line, NsHolder, DOCKER_CLI};
use crate::support::{self, Propagation};

/// Generous bound for something the adapter should send at once.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound from `docker stop` returning to `Stopped`.
const STOP_LATENCY_BOUND: Duration = Duration::from_millis(100);

/// One event from the adapter, with when the test's forwarder received it.
#[derive(Clone, Debug)]
struct Got {
    at: Instant,
    ev: ContainerEvent,
}

/// The adapter running on a tokio runtime of its own. A forwarder task
/// stamps each event as it arrives, so latencies do not depend on when the
/// test thread looks.
struct Adapter {
    rt: tokio::runtime::Runtime,
    rx: std_mpsc::Receiver<Got>,
    status: watch::Receiver<RuntimeStatus>,
    /// Everything received so far.
    seen: Vec<Got>,
}

impl Adapter {
    fn start(socket: &Path) -> Adapter {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // Small, so backpressure is part of what is exercised.
        let (tx, mut adapter_rx) = mpsc::channel::<Input>(16);
        let (status_tx, status) = watch::channel(RuntimeStatus::default());
        let cfg = DockerConfig {
            socket: socket.to_path_buf(),
        };
        rt.spawn(docker::run(cfg, tx, status_tx));
        let (fwd_tx, rx) = std_mpsc::channel();
        rt.spawn(async move {
            while let Some(input) = adapter_rx.recv().await {
                let Input::Container(ev) = input else {
                    panic!("the Docker adapter sent a non-container input: {input:?}");
                };
                if fwd_tx
                    .send(Got {
                        at: Instant::now(),
                        ev,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Adapter {
            rt,
            rx,
            status,
            seen: Vec::new(),
        }
    }

    fn history(&self) -> String {
        self.seen
            .iter()
            .map(|g| format!("{}\n", describe(&g.ev)))
            .collect()
    }

    /// The next event (from now on) that `pred` accepts.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&ContainerEvent) -> bool) -> Got {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(got) => {
                    self.seen.push(got.clone());
                    if pred(&got.ev) {
                        return got;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {EVENT_TIMEOUT:?}; status {:?}; got:\n{}",
                    *self.status.borrow(),
                    self.history()
                ),
            }
        }
    }

    /// Reads events for `window`.
    fn observe(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while let Ok(got) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(got);
        }
    }

    fn seen_info(&mut self, id: &str, state: ContainerState) -> (Instant, ContainerInfo) {
        let got = self.wait_for(&format!("Seen {id} {state:?}"), |ev| {
            matches!(ev, ContainerEvent::Seen { info, .. } if info.id == id && info.state == state)
        });
        match got.ev {
            ContainerEvent::Seen { info, .. } => (got.at, *info),
            _ => unreachable!("wait_for matched a Seen"),
        }
    }

    fn inventory(&mut self) -> Vec<String> {
        match self
            .wait_for("Inventory", |ev| {
                matches!(ev, ContainerEvent::Inventory { .. })
            })
            .ev
        {
            ContainerEvent::Inventory { runtime, ids, .. } => {
                assert_eq!(runtime, "docker");
                ids
            }
            _ => unreachable!("wait_for matched an Inventory"),
        }
    }

    /// Waits until `status` satisfies `pred`; returns it.
    fn status_until(&mut self, what: &str, pred: impl Fn(&RuntimeStatus) -> bool) -> RuntimeStatus {
        let mut status = self.status.clone();
        let waited = self.rt.block_on(async {
            tokio::time::timeout(EVENT_TIMEOUT, status.wait_for(|s| pred(s)))
                .await
                .map(|r| r.map(|s| s.clone()))
        });
        match waited {
            Ok(Ok(s)) => s,
            _ => panic!("status never became {what}: {:?}", *self.status.borrow()),
        }
    }
}

fn describe(ev: &ContainerEvent) -> String {
    match ev {
        ContainerEvent::Seen { info, .. } => {
            format!(
                "Seen {} {:?} name={:?}",
                short(&info.id),
                info.state,
                info.name
            )
        }
        ContainerEvent::Stopped { id, .. } => format!("Stopped {}", short(id)),
        ContainerEvent::Removed { id, .. } => format!("Removed {}", short(id)),
        ContainerEvent::RemovalFailed { id, message, .. } => {
            format!("RemovalFailed {} {message}", short(id))
        }
        ContainerEvent::Inventory { ids, .. } => format!(
            "Inventory [{}]",
            ids.iter().map(|i| short(i)).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn event_id(ev: &ContainerEvent) -> Option<&str> {
    match ev {
        ContainerEvent::Seen { info, .. } => Some(&info.id),
        ContainerEvent::Stopped { id, .. }
        | ContainerEvent::Removed { id, .. }
        | ContainerEvent::RemovalFailed { id, .. } => Some(id),
        ContainerEvent::Inventory { .. } => None,
    }
}

fn bytes(path: &Path) -> PathBytes {
    use std::os::unix::ffi::OsStrExt;
    PathBytes(path.as_os_str().as_bytes().to_vec())
}

/// A name unique to this test process, so a leftover of a crashed run
/// (removed first) never collides with a live one.
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// run → stop → rm as the adapter reports it: `Seen` running with the real
/// overlay mount point, shm mount, bind source, image and name; `Stopped`
/// within 100 ms of `docker stop` returning (once, though Docker says `die`
/// and `stop`); `Removed` after `docker rm`.
#[test]
#[ignore = "needs root: runs dockerd"]
fn adapter_reports_run_stop_rm() {
    let mut d = Dockerd::start();
    let mut a = Adapter::start(&d.socket());
    a.inventory();
    let status = a.status_until("connected", |s| s.connected);
    assert_eq!(status.runtime, "docker");
    assert_eq!(status.version.as_deref(), Some("1.41"), "{status:?}");

    let name = unique("mlk-run");
    let bind = PathBuf::from(format!("/run/mountleak-bind-{}", std::process::id()));
    fs::create_dir_all(&bind).unwrap();
    let volume_arg = format!("{}:/data", bind.display());
    let id = d.run_with(&name, &["--ipc=shareable", "-v", &volume_arg]);
    let (_, info) = a.seen_info(&id, ContainerState::Running);

    assert_eq!(info.runtime, "docker");
    assert_eq!(info.name, name);
    assert_eq!(info.image.as_deref(), Some(support::docker::IMAGE));
    assert_eq!(info.pid, Some(d.container_pid(&name)));
    let merged = d.merged_dir(&name);
    let root = d.root_dir();
    let shm = root.join("containers").join(&id).join("mounts/shm");
    assert_eq!(
        info.mounts,
        vec![bytes(&merged), bytes(&shm), bytes(&bind)],
        "rootfs, shm, bind source in that order"
    );
    let me = std::process::id();
    let (fstype, _) = mount_at(me, &merged)
        .unwrap_or_else(|| panic!("{} is not a mount point here", merged.display()));
    assert_eq!(fstype, "overlay", "MergedDir is the overlay rootfs");
    let (fstype, _) =
        mount_at(me, &shm).unwrap_or_else(|| panic!("{} is not a mount point", shm.display()));
    assert_eq!(fstype, "tmpfs", "shareable IPC: shm is a tmpfs on the host");
    let upper = PathBuf::from(d.inspect(&name, "{{.GraphDriver.Data.UpperDir}}"));
    let meta = fs::metadata(&upper).unwrap();
    let (dev, ino) = info.upper_dir.expect("the upper dir is readable as root");
    assert_eq!(
        (dev.major, dev.minor, ino),
        (libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino())
    );
    let started = info
        .started_at
        .expect("a running container has a start time");
    let now = mountleak::procfs::clock::boottime_ns();
    assert!(
        started <= now && now - started < 30_000_000_000,
        "started_at {started} vs now {now}"
    );

    d.stop(&name);
    let returned = Instant::now();
    let stopped = a.wait_for(
        "Stopped",
        |ev| matches!(ev, ContainerEvent::Stopped { id: i, .. } if *i == id),
    );
    // The die event usually arrives before the CLI returns (Docker still
    // unmounts the rootfs and sends `stop` after it).
    let latency = stopped.at.saturating_duration_since(returned);
    let early = returned.saturating_duration_since(stopped.at);
    eprintln!("Stopped {latency:?} after `docker stop` returned ({early:?} before it)");
    assert!(
        latency <= STOP_LATENCY_BOUND,
        "Stopped {latency:?} after docker stop returned"
    );
    let (_, after) = a.seen_info(&id, ContainerState::Stopped);
    assert_eq!(after.pid, None);
    assert_eq!(after.name, name);
    a.observe(Duration::from_millis(500));
    let stops = a
        .seen
        .iter()
        .filter(|g| matches!(&g.ev, ContainerEvent::Stopped { id: i, .. } if *i == id))
        .count();
    assert_eq!(stops, 1, "die and stop make one Stopped:\n{}", a.history());
    assert!(
        mount_at(me, &merged).is_none(),
        "premise (PLATFORM.md): overlay2 unmounts merged at stop"
    );

    d.rm(&name);
    a.wait_for(
        "Removed",
        |ev| matches!(ev, ContainerEvent::Removed { id: i, .. } if *i == id),
    );

    // Private IPC (the 20.10 default): no shm on the host, none reported.
    let name2 = unique("mlk-private-ipc");
    let id2 = d.run(&name2);
    let (_, info2) = a.seen_info(&id2, ContainerState::Running);
    assert_eq!(info2.mounts, vec![bytes(&d.merged_dir(&name2))]);
    let _ = fs::remove_dir(&bind);
}

/// kill -9 of dockerd while the adapter runs: `connected` goes false with
/// the error, then true again after the restart, with an inventory; later
/// events still carry names, including one with unusual characters.
#[test]
#[ignore = "needs root: runs dockerd"]
fn adapter_reconnects_after_dockerd_is_killed() {
    let mut d = Dockerd::start();
    // Docker's own name rules allow [a-zA-Z0-9][a-zA-Z0-9_.-]*.
    let odd = "a.b_c-1";
    let _ = d.docker(["rm", "-f", odd]);
    let mut a = Adapter::start(&d.socket());
    a.inventory();
    a.status_until("connected", |s| s.connected);
    let odd_id = d.run(odd);
    let (_, info) = a.seen_info(&odd_id, ContainerState::Running);
    assert_eq!(info.name, odd);

    d.kill9();
    let down = a.status_until("disconnected", |s| !s.connected);
    assert!(down.last_error.is_some(), "{down:?}");
    eprintln!("while dockerd is down: {:?}", down.last_error);

    let restarting = Instant::now();
    d.launch();
    eprintln!(
        "dockerd answered {:?} after its restart",
        restarting.elapsed()
    );
    let up = a.status_until("connected again", |s| s.connected && s.reconnects == 1);
    eprintln!(
        "reconnected {:?} after dockerd was started again",
        restarting.elapsed()
    );
    assert_eq!(up.last_error, None);
    // Without live-restore the new dockerd kills what the old one ran: the
    // resync says so (Seen stopped), then the inventory.
    let (_, after) = a.seen_info(&odd_id, ContainerState::Stopped);
    assert_eq!(after.name, odd);
    let ids = a.inventory();
    assert!(ids.contains(&odd_id), "{ids:?}");

    let later = unique("mlk-later");
    let later_id = d.run(&later);
    let (_, info) = a.seen_info(&later_id, ContainerState::Running);
    assert_eq!(info.name, later);
    d.stop(&later);
    a.wait_for(
        "Stopped after the reconnect",
        |ev| matches!(ev, ContainerEvent::Stopped { id, .. } if *id == later_id),
    );
    d.rm(odd);
    a.wait_for(
        "Removed a.b_c-1",
        |ev| matches!(ev, ContainerEvent::Removed { id, .. } if *id == odd_id),
    );
}

/// Containers that live for milliseconds (`docker run --rm … sleep 0`):
/// the adapter stays connected, never reports one after its removal, ends
/// every one with `Removed`, and names what it saw of them.
#[test]
#[ignore = "needs root: runs dockerd"]
fn adapter_copes_with_short_lived_containers() {
    let d = Dockerd::start();
    let mut a = Adapter::start(&d.socket());
    a.inventory();
    a.status_until("connected", |s| s.connected);
    // Only what follows counts (the inventory may list leftovers).
    a.seen.clear();
    let mut names = Vec::new();
    for i in 0..10 {
        let name = unique(&format!("mlk-brief-{i}"));
        // Without -d, `docker run --rm` waits for the exit and the removal.
        d.must([
            "run",
            "--rm",
            "--name",
            &name,
            support::docker::IMAGE,
            "sleep",
            "0",
        ]);
        names.push(name);
    }
    a.observe(Duration::from_secs(3));
    let status = a.status.borrow().clone();
    assert!(status.connected && status.reconnects == 0, "{status:?}");
    assert_eq!(status.last_error, None);
    let removed: Vec<&str> = a
        .seen
        .iter()
        .filter_map(|g| match &g.ev {
            ContainerEvent::Removed { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        removed.len() >= names.len(),
        "every short-lived container ends Removed:\n{}",
        a.history()
    );
    assert_nothing_after_removal(&a.seen, &removed);
    for g in &a.seen {
        if let ContainerEvent::Seen { info, .. } = &g.ev {
            assert!(names.contains(&info.name), "unexpected {:?}", info.name);
        }
    }
}

/// A container removed while the adapter is busy with an earlier event:
/// the adapter is held up by a full channel (capacity 1, the test reads one
/// item at a time) while `create A`, `create V` arrive; it then inspects A,
/// and blocks again on sending A; `docker rm V` happens now, so V's inspect
/// answers 404. V is reported `Removed`, never `Seen`, and the connection
/// stays up.
#[test]
#[ignore = "needs root: runs dockerd"]
fn adapter_reports_a_container_removed_before_its_inspect() {
    let d = Dockerd::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (tx, mut rx) = mpsc::channel::<Input>(1);
    let (status_tx, status) = watch::channel(RuntimeStatus::default());
    rt.spawn(docker::run(
        DockerConfig { socket: d.socket() },
        tx,
        status_tx,
    ));
    let mut got: Vec<ContainerEvent> = Vec::new();
    let mut take = |got: &mut Vec<ContainerEvent>| {
        let item = rt
            .block_on(async { tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await })
            .expect("an event in time")
            .expect("the adapter runs");
        let Input::Container(ev) = item else {
            panic!("not a container event: {item:?}");
        };
        got.push(ev);
    };
    while !matches!(got.last(), Some(ContainerEvent::Inventory { .. })) {
        take(&mut got);
    }
    // Long enough for the adapter to reach its next blocking point.
    let settle = || std::thread::sleep(Duration::from_millis(300));
    let create = |name: &str| {
        d.must([
            "create",
            "--name",
            name,
            support::docker::IMAGE,
            "sleep",
            "1",
        ])
    };
    let (b1, b2, a_name, v_name) = (
        unique("mlk-b1"),
        unique("mlk-b2"),
        unique("mlk-a"),
        unique("mlk-v"),
    );
    let b1_id = create(&b1); // its Seen fills the channel
    settle();
    let b2_id = create(&b2); // its Seen blocks the adapter
    settle();
    let a_id = create(&a_name);
    let v_id = create(&v_name);
    settle();
    take(&mut got); // room for B2; the adapter reads A and V, blocks on A
    settle();
    d.must(["rm", &v_name]);
    settle();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        let removed_v = got
            .iter()
            .any(|e| matches!(e, ContainerEvent::Removed { id, .. } if *id == v_id));
        if removed_v {
            break;
        }
        take(&mut got);
    }
    let history: String = got.iter().map(|e| format!("{}\n", describe(e))).collect();
    for id in [&b1_id, &b2_id, &a_id] {
        assert!(
            got.iter()
                .any(|e| matches!(e, ContainerEvent::Seen { info, .. } if info.id == *id)),
            "{} seen:\n{history}",
            short(id)
        );
    }
    assert!(
        !got.iter()
            .any(|e| matches!(e, ContainerEvent::Seen { info, .. } if info.id == v_id)),
        "V was removed before its inspect:\n{history}"
    );
    assert!(
        got.iter()
            .any(|e| matches!(e, ContainerEvent::Removed { id, .. } if *id == v_id)),
        "V removed:\n{history}"
    );
    let s = status.borrow().clone();
    assert!(
        s.connected && s.reconnects == 0 && s.last_error.is_none(),
        "{s:?}"
    );
    for name in [&b1, &b2, &a_name] {
        let _ = d.docker(["rm", "-f", name.as_str()]);
    }
}

/// No event about a container follows its `Removed`.
fn assert_nothing_after_removal(seen: &[Got], removed: &[&str]) {
    for id in removed {
        let last = seen
            .iter()
            .rfind(|g| event_id(&g.ev) == Some(*id))
            .expect("its Removed at least");
        assert!(
            matches!(last.ev, ContainerEvent::Removed { .. }),
            "{} after its removal",
            describe(&last.ev)
        );
    }
}

/// `lookup` (for `mountleak check`) by name, by id prefix, with Docker's
/// leading slash; unknown names and impossible ones are `None`.
#[test]
#[ignore = "needs root: runs dockerd"]
fn lookup_finds_by_name_and_id_prefix() {
    let mut d = Dockerd::start();
    let name = unique("mlk-lookup");
    let id = d.run(&name);
    let cfg = DockerConfig { socket: d.socket() };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for target in [
        name.clone(),
        format!("/{name}"),
        id[..12].to_string(),
        id.clone(),
    ] {
        let info = rt
            .block_on(docker::lookup(&cfg, &target))
            .unwrap_or_else(|err| panic!("lookup {target}: {err}"))
            .unwrap_or_else(|| panic!("lookup {target}: not found"));
        assert_eq!(
            (info.id.as_str(), info.name.as_str()),
            (id.as_str(), name.as_str())
        );
        assert_eq!(info.state, ContainerState::Running);
        assert!(info.upper_dir.is_some());
    }
    for target in ["mlk-no-such-container", "../etc", "a b", ""] {
        let found = rt.block_on(docker::lookup(&cfg, target)).unwrap();
        assert!(found.is_none(), "{target:?} found {found:?}");
    }
    let gone = DockerConfig {
        socket: PathBuf::from("/run/mountleak-no-such-dockerd.sock"),
    };
    let err = rt.block_on(docker::lookup(&gone, &name)).unwrap_err();
    assert!(
        err.to_string().contains("mountleak-no-such-dockerd"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// End to end: `mountleak run --json` with the adapter wired in (issue 3).

/// How long the daemon gets to load its probes and take its first scan.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const FINDING_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the daemon off any containerd on the machine (another test's).
/// `--containerd-socket ""` would say "off", but clap refuses an empty
/// path; a socket that does not exist is only retried in the background.
const NO_CONTAINERD: &str = "--containerd-socket=/run/mountleak-tests-no-containerd.sock";

/// `mountleak run --json` following this dockerd (and no containerd).
fn daemon(d: &Dockerd) -> JsonLines {
    let mut cmd = Command::new(support::mountleak_bin());
    cmd.args(["run", "--json", "--risk-grace", "1s", NO_CONTAINERD])
        .arg("--docker-socket")
        .arg(d.socket());
    let mut daemon = JsonLines::spawn(cmd);
    daemon.wait_for("the ready notice", READY_TIMEOUT, |v| v["type"] == "ready");
    daemon
}

/// `mountleak ARGS --json --docker-socket SOCK`: exit code and stdout.
fn mountleak(d: &Dockerd, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(support::mountleak_bin())
        .args(args)
        .args(["--json", NO_CONTAINERD])
        .arg("--docker-socket")
        .arg(d.socket())
        .output()
        .expect("run mountleak");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let doc = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        code,
        doc,
        format!("{stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The container a finding names (`container` beside `mount` in the JSON).
fn owner_id(v: &Value) -> &Value {
    &v["container"]["id"]
}

fn is_warning_for(v: &Value, id: &str) -> bool {
    v["type"] == "finding" && v["kind"] == "removal_warning" && owner_id(v) == id
}

/// `major:minor` of the filesystem mounted at `path`.
fn dev_of(path: &Path) -> String {
    let meta = fs::metadata(path).unwrap_or_else(|err| panic!("stat {}: {err}", path.display()));
    format!("{}:{}", libc::major(meta.dev()), libc::minor(meta.dev()))
}

/// The findings of a `scan --json` document about device `dev`.
fn findings_on<'a>(doc: &'a Value, dev: &str) -> Vec<&'a Value> {
    doc["findings"]
        .as_array()
        .map(|f| f.iter().filter(|f| f["mount"]["dev"] == dev).collect())
        .unwrap_or_default()
}

/// A rootfs pinned by a holder's cwd, from `docker run` to the holder's
/// exit. With `daemon`, `docker stop` must bring a removal warning naming
/// the container and the holder before the test goes on to `docker rm`;
/// returns the stop → warning latency. Without, `check` and `scan` alone.
fn pinned_rootfs_story(
    d: &mut Dockerd,
    daemon: Option<&mut JsonLines>,
    name: &str,
) -> Option<Duration> {
    let id = d.run(name);
    let merged = d.merged_dir(name);
    let dev = dev_of(&merged);
    // From the host, not `nsenter -t <container>`: a private copy of the
    // host's mounts whose cwd is inside the container's rootfs.
    let holder = NsHolder::start(Propagation::Private, &merged);

    d.stop(name);
    let stop_returned = Instant::now();
    let latency = daemon.map(|daemon| {
        let warning: Line = daemon.wait_for("the removal warning", FINDING_TIMEOUT, |v| {
            is_warning_for(v, &id)
        });
        let latency = warning.at.saturating_duration_since(stop_returned);
        eprintln!("removal_warning {latency:?} after `docker stop` returned");
        let w = &warning.json;
        assert_eq!(w["container"]["name"], name, "{w:#}");
        assert_eq!(w["container"]["runtime"], "docker", "{w:#}");
        let holders = w["holders"].as_array().expect("holders");
        assert!(
            holders.iter().any(|h| h["pid"] == json!(holder.pid)),
            "the holder is named: {w:#}"
        );
        latency
    });

    // Asked with the container still there: removing it would leave the
    // filesystem pinned.
    let (code, doc, out) = mountleak(d, &["check", name]);
    assert_eq!(code, 1, "check {name} while held:\n{out}");
    assert_eq!(doc["verdict"], "held", "{out}");
    assert_eq!(doc["containers"][0]["id"], id.as_str(), "{out}");

    // The pre-removal hook README shows refuses, and says why.
    let (code, out) = docker_rm_checked(d, name);
    assert_eq!(code, 1, "docker-rm-checked {name} while held:\n{out}");
    assert!(
        out.contains("HELD") && out.contains("not removing"),
        "{out}"
    );
    assert_eq!(
        d.inspect(name, "{{.Id}}"),
        id,
        "the container is still there"
    );

    // On 6.18 the removal succeeds; the filesystem stays pinned, with no
    // mount table left that shows it.
    d.rm(name);
    let (code, doc, out) = mountleak(d, &["scan"]);
    assert_eq!(code, 1, "{out}");
    let [f] = findings_on(&doc, &dev)[..] else {
        panic!("one finding on {dev} expected after docker rm:\n{out}");
    };
    assert_eq!(f["kind"], "leak", "{f:#}");
    let h = &f["holders"][0];
    assert_eq!(h["pid"], json!(holder.pid), "{f:#}");
    assert_eq!(h["hold"], "cwd", "{f:#}");

    drop(holder);
    let (_, doc, out) = mountleak(d, &["scan"]);
    assert!(
        findings_on(&doc, &dev).is_empty(),
        "nothing pinned once the holder exits:\n{out}"
    );
    latency
}

/// Issue 3 without the daemon: a holder's cwd inside a container's rootfs;
/// after `docker stop`, `check NAME` says held (exit 1); `docker rm`
/// succeeds; `scan` then reports the pinned filesystem (leak, hold cwd)
/// until the holder exits.
#[test]
#[ignore = "needs root: runs dockerd"]
fn check_and_scan_follow_a_cwd_pinned_rootfs_through_docker_rm() {
    let mut d = Dockerd::start();
    pinned_rootfs_story(&mut d, None, &unique("mlk-pinned-scan"));
    // And a container nothing holds: the hook removes it.
    let name = unique("mlk-hook-safe");
    d.run(&name);
    d.stop(&name);
    let (code, out) = docker_rm_checked(&d, &name);
    assert_eq!(code, 0, "docker-rm-checked {name}, nothing held:\n{out}");
    assert!(
        d.docker(["inspect", name.as_str()]).is_err(),
        "removed by the hook:\n{out}"
    );
}

/// deploy/hooks/docker-rm-checked NAME against this engine: exit code and
/// everything it printed.
fn docker_rm_checked(d: &Dockerd, name: &str) -> (i32, String) {
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hooks/docker-rm-checked");
    let docker_dir = Path::new(DOCKER_CLI)
        .parent()
        .expect("docker in a directory");
    let path = format!(
        "{}:{}",
        docker_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(&hook)
        .arg(name)
        .env("MOUNTLEAK", support::mountleak_bin())
        .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .env("PATH", path)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", hook.display()));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 3, the 6.18 shape, with the daemon: `docker stop` → a removal
/// warning naming the container (name, id) and the holder, before
/// `docker rm`. Then as above. (The adapter's `Stopped` arrives at `die`,
/// when overlay2 may already have detached the holder's copy: the targeted
/// read that follows looks for device pins of the holders, which is what
/// finds the cwd.)
#[test]
#[ignore = "needs root: runs dockerd and the mountleak daemon"]
fn docker_stop_warns_before_rm_when_a_cwd_pins_the_rootfs() {
    let mut d = Dockerd::start();
    let mut daemon = daemon(&d);
    let latency = pinned_rootfs_story(&mut d, Some(&mut daemon), &unique("mlk-pinned"));
    eprintln!("stop → warning: {latency:?}");
}

/// An idle private copy of a rootfs is detached by overlay2's rmdir at
/// stop: no lasting finding (one resolved within a second is fine), and
/// `check` says safe.
#[test]
#[ignore = "needs root: runs dockerd and the mountleak daemon"]
fn an_idle_private_copy_gets_no_lasting_warning() {
    let mut d = Dockerd::start();
    let mut daemon = daemon(&d);
    let name = unique("mlk-idle");
    let id = d.run(&name);
    let merged = d.merged_dir(&name);
    let holder = NsHolder::start(Propagation::Private, Path::new("/"));
    assert!(
        mount_at(holder.pid, &merged).is_some(),
        "premise: the holder has a copy"
    );
    d.stop(&name);
    daemon.observe(Duration::from_secs(3));
    assert_no_lasting_finding(&daemon, &id, &merged);
    let (code, _, out) = mountleak(&d, &["check", &name]);
    assert_eq!(code, 0, "check {name} with an idle copy:\n{out}");
}

/// A slave copy receives the host's umount: no warning.
#[test]
#[ignore = "needs root: runs dockerd and the mountleak daemon"]
fn a_slave_holder_gets_no_warning() {
    let mut d = Dockerd::start();
    let mut daemon = daemon(&d);
    let name = unique("mlk-slave");
    let id = d.run(&name);
    let merged = d.merged_dir(&name);
    let holder = NsHolder::start(Propagation::Slave, Path::new("/"));
    let (_, optional) = mount_at(holder.pid, &merged).expect("the holder has a copy");
    assert!(
        optional.iter().any(|f| f.starts_with("master:")),
        "premise: dockerd makes its root shared, so the copy is a slave: {optional:?}"
    );
    d.stop(&name);
    daemon.observe(Duration::from_secs(3));
    assert!(
        !daemon.lines.iter().any(|l| is_warning_for(&l.json, &id)),
        "{}",
        daemon.transcript()
    );
    assert_no_lasting_finding(&daemon, &id, &merged);
}

/// The engine killed and restarted while the daemon runs: the daemon says
/// so (`runtime` notices: docker lost, then connected again) and stays up.
#[test]
#[ignore = "needs root: runs dockerd and the mountleak daemon"]
fn the_daemon_follows_a_dockerd_restart() {
    let mut d = Dockerd::start();
    let mut daemon = daemon(&d);
    let is_docker = |v: &Value| v["type"] == "runtime" && v["runtime"] == "docker";
    daemon.wait_for("docker connected", FINDING_TIMEOUT, |v| {
        is_docker(v) && v["connected"] == true
    });
    d.kill9();
    let lost = daemon.wait_for("docker lost", FINDING_TIMEOUT, |v| {
        is_docker(v) && v["connected"] == false
    });
    assert!(lost.json["error"].is_string(), "{:#}", lost.json);
    d.launch();
    // dockerd's restart itself takes ~10 s here (it kills what the old one
    // left running), then the adapter's backoff.
    daemon.wait_for("docker connected again", Duration::from_secs(60), |v| {
        is_docker(v) && v["connected"] == true && v["reconnects"] == 1
    });
}

/// The engine killed and restarted while the daemon runs: later warnings
/// still carry the container's name.
#[test]
#[ignore = "needs root: runs dockerd and the mountleak daemon"]
fn warnings_after_a_dockerd_restart_carry_names() {
    let mut d = Dockerd::start();
    let mut daemon = daemon(&d);
    // The restart must come after the adapter's first connection, or it
    // simply connects to the new engine and never reconnects.
    daemon.wait_for("docker connected", FINDING_TIMEOUT, |v| {
        v["type"] == "runtime" && v["runtime"] == "docker" && v["connected"] == true
    });
    d.restart_hard();
    daemon.wait_for("docker connected again", Duration::from_secs(60), |v| {
        v["type"] == "runtime" && v["runtime"] == "docker" && v["reconnects"] == 1
    });
    pinned_rootfs_story(&mut d, Some(&mut daemon), &unique("mlk-after-restart"));
}

/// Every finding about the container (by owner id) or its rootfs path is
/// resolved within a second of being raised, and none is a removal warning.
fn assert_no_lasting_finding(daemon: &JsonLines, id: &str, merged: &Path) {
    let path = merged.to_str().expect("docker paths are UTF-8");
    let mine =
        |v: &Value| v["type"] == "finding" && (owner_id(v) == id || v["mount"]["path"] == path);
    for raised in daemon.lines.iter().filter(|l| mine(&l.json)) {
        if raised.json["kind"] == "resolved" {
            continue;
        }
        assert_ne!(
            raised.json["kind"],
            "removal_warning",
            "{}",
            daemon.transcript()
        );
        let fid = &raised.json["id"];
        let resolved = daemon
            .lines
            .iter()
            .find(|l| l.json["id"] == *fid && l.json["kind"] == "resolved");
        let ok = resolved.is_some_and(|r| r.at.duration_since(raised.at) <= Duration::from_secs(1));
        assert!(
            ok,
            "finding {fid} was not resolved within a second:\n{}",
            daemon.transcript()
        );
    }
}
