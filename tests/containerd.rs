//! containerd for real (issue 3): the adapter against a standalone
//! containerd 1.6 started by the test (`support::containerd`), with
//! containers made by `ctr run` and by the CRI plugin driven the way kubelet
//! drives it; and `mountleak run --json` naming the container, and for a
//! CRI container its pod, in the warning it gives before a removal.
//!
//! The adapter runs on a tokio runtime of its own; a forwarder task hands
//! its events to the test thread, which drives containerd with `ctr` and
//! the CRI client. Every wait has a deadline, and a failure prints every
//! event received and the end of containerd's log.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use monitor_model::{ContainerEvent, ContainerInfo, ContainerState, Dev, Input, PathBytes};
use mountleak::procfs::clock::boottime_ns;
use mountleak::runtime::containerd::{self, ContainerdConfig};
use mountleak::runtime::RuntimeStatus;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::support;
use crate::support::containerd::{unique, Containerd, Holder, CRI_NS, DEFAULT_NS, IMAGE};
use crate::support::docker::{JsonLines, Line};

/// Generous bound for anything the adapter should report at once.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The budget from a task's exit to `Stopped`.
const STOPPED_BOUND: Duration = Duration::from_millis(100);

/// An event and when the forwarder received it.
#[derive(Clone, Debug)]
struct Got {
    at: Instant,
    ev: ContainerEvent,
}

/// The adapter running on a tokio runtime of its own; dropping it drops the
/// runtime, which stops the adapter.
struct Adapter {
    /// Declared (so dropped) before `rt`: a forwarder blocked handing an
    /// event to the test then fails and ends, which dropping the runtime
    /// waits for.
    rx: std_mpsc::Receiver<Got>,
    rt: tokio::runtime::Runtime,
    status: watch::Receiver<RuntimeStatus>,
    /// Everything received so far.
    seen: Vec<Got>,
}

impl Adapter {
    /// Starts the adapter on `ctrd`'s socket; `capacity` is its channel's
    /// (the daemon's is bounded too).
    fn start(ctrd: &Containerd, capacity: usize) -> Adapter {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (tx, mut adapter_rx) = mpsc::channel::<Input>(capacity);
        let (status_tx, status) = watch::channel(RuntimeStatus::default());
        // The state dir is left at its default on purpose: the adapter must
        // find the real one from containerd's own paths.
        let cfg = ContainerdConfig::with_socket(ctrd.socket());
        rt.spawn(containerd::run(cfg, tx, status_tx));
        let (fwd_tx, rx) = std_mpsc::sync_channel(0);
        rt.spawn(async move {
            while let Some(input) = adapter_rx.recv().await {
                let Input::Container(ev) = input else {
                    panic!("the containerd adapter sent a non-container input: {input:?}");
                };
                let got = Got {
                    at: Instant::now(),
                    ev,
                };
                // A rendezvous channel: the adapter's own bounded channel,
                // not this one, is where backpressure builds up.
                let fwd = fwd_tx.clone();
                if tokio::task::spawn_blocking(move || fwd.send(got))
                    .await
                    .map_or(true, |r| r.is_err())
                {
                    break;
                }
            }
        });
        Adapter {
            rx,
            rt,
            status,
            seen: Vec::new(),
        }
    }

    fn history(&self) -> String {
        self.seen
            .iter()
            .map(|g| format!("  {}\n", describe(&g.ev)))
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

    /// Reads events for `window`; returns those read.
    fn observe(&mut self, window: Duration) -> Vec<Got> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(g) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(g.clone());
            got.push(g);
        }
        got
    }

    fn seen(&mut self, id: &str, state: ContainerState) -> ContainerInfo {
        let got = self.wait_for(&format!("Seen {id} {state:?}"), |ev| {
            matches!(ev, ContainerEvent::Seen { info, .. } if info.id == id && info.state == state)
        });
        match got.ev {
            ContainerEvent::Seen { info, .. } => *info,
            _ => unreachable!("wait_for matched a Seen"),
        }
    }

    /// The two inventories of a (re)connection, as (containerd ids, cri ids).
    fn inventories(&mut self) -> (Vec<String>, Vec<String>) {
        let mut by_runtime = std::collections::BTreeMap::new();
        while by_runtime.len() < 2 {
            let got = self.wait_for("Inventory", |ev| {
                matches!(ev, ContainerEvent::Inventory { .. })
            });
            if let ContainerEvent::Inventory { runtime, ids, .. } = got.ev {
                by_runtime.insert(runtime, ids);
            }
        }
        (
            by_runtime
                .remove("containerd")
                .expect("a containerd inventory"),
            by_runtime.remove("cri").expect("a cri inventory"),
        )
    }

    /// Waits until the status satisfies `pred`; returns it.
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
        ContainerEvent::Seen { info, .. } => format!(
            "Seen {} {} {:?} name={:?} pid={:?}",
            info.runtime, info.id, info.state, info.name, info.pid
        ),
        ContainerEvent::Stopped { runtime, id, .. } => format!("Stopped {runtime} {id}"),
        ContainerEvent::Removed { runtime, id, .. } => format!("Removed {runtime} {id}"),
        ContainerEvent::RemovalFailed { id, message, .. } => {
            format!("RemovalFailed {id} {message}")
        }
        ContainerEvent::Inventory { runtime, ids, .. } => {
            format!("Inventory {runtime} [{}]", ids.join(", "))
        }
    }
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

fn is_stopped(ev: &ContainerEvent, want: &str) -> bool {
    matches!(ev, ContainerEvent::Stopped { id, .. } if id == want)
}

fn is_removed(ev: &ContainerEvent, want: &str) -> bool {
    matches!(ev, ContainerEvent::Removed { id, .. } if id == want)
}

fn bytes(path: &Path) -> PathBytes {
    use std::os::unix::ffi::OsStrExt;
    PathBytes::from(path.as_os_str().as_bytes())
}

/// The mount at exactly `path` in this process's mount table (the host's):
/// its filesystem type and super options, from /proc/self/mountinfo.
fn mount_at(path: &Path) -> Option<(String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_str()?;
    text.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        // Field 5 is the mount point; after the separator come the type,
        // the source and the super options (proc_pid_mountinfo(5)).
        if left.split(' ').nth(4)? != want {
            return None;
        }
        let mut fields = right.split(' ');
        let fstype = fields.next()?.to_string();
        let options = fields.nth(1).unwrap_or_default().to_string();
        Some((fstype, options))
    })
}

/// (device, inode) of a directory, as the model compares them.
fn dev_ino(path: &Path) -> (Dev, u64) {
    let meta = fs::metadata(path).unwrap_or_else(|err| panic!("stat {}: {err}", path.display()));
    let dev = meta.dev();
    (
        Dev {
            major: libc::major(dev),
            minor: libc::minor(dev),
        },
        meta.ino(),
    )
}

/// Asserts `info` names a task rootfs that is a real overlay mount point on
/// the host, and that its `upper_dir` is that overlay's upper directory.
fn assert_overlay_rootfs(info: &ContainerInfo, rootfs: &Path) {
    assert_eq!(
        info.mounts.first(),
        Some(&bytes(rootfs)),
        "the rootfs mount point comes first: {:?}",
        info.mounts
    );
    let (fstype, options) = mount_at(rootfs)
        .unwrap_or_else(|| panic!("{} is not a mount point on the host", rootfs.display()));
    assert_eq!(fstype, "overlay", "{}", rootfs.display());
    let upper = options
        .split(',')
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap_or_else(|| panic!("no upperdir in {options}"));
    assert_eq!(info.upper_dir, Some(dev_ino(Path::new(upper))));
}

/// `ctr run` → `Seen` running with the real overlay rootfs mount point, the
/// bind source, image, pid and start time; the init's exit → `Stopped`
/// within 100 ms, then `Seen` stopped; `ctr task rm` + `ctr container rm`
/// → `Removed`.
#[test]
#[ignore = "needs root: runs containerd"]
fn ctr_run_is_seen_stopped_and_removed() {
    let ctrd = Containerd::start();
    let mut adapter = Adapter::start(&ctrd, 16);
    let status = adapter.status_until("connected", |s| s.connected);
    assert_eq!(status.runtime, "containerd");
    assert_eq!(status.version.as_deref(), Some("1.6.20~ds1"));
    assert_eq!(adapter.inventories(), (vec![], vec![]));

    let id = unique("ml-ctr");
    let data = ctrd.dir().join("data");
    fs::create_dir_all(&data).unwrap();
    let bind = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.display()
    );
    let before = boottime_ns();
    let pid = ctrd.ctr_run(DEFAULT_NS, &id, &["--mount", &bind]);
    let info = adapter.seen(&id, ContainerState::Running);
    assert_eq!(info.runtime, "containerd");
    assert_eq!(info.namespace.as_deref(), Some(DEFAULT_NS));
    assert_eq!(info.name, id, "containerd has no names: the id stands in");
    assert_eq!(info.image.as_deref(), Some(IMAGE));
    assert_eq!(info.pod, None);
    assert_eq!(info.pid, Some(pid));
    let started = info.started_at.expect("a start time for a running task");
    assert!(
        before.saturating_sub(1_000_000_000) <= started && started <= boottime_ns(),
        "started_at {started} outside [{before}, now]"
    );
    let rootfs = ctrd.rootfs(DEFAULT_NS, &id);
    assert_overlay_rootfs(&info, &rootfs);
    assert!(info.mounts.contains(&bytes(&data)), "{:?}", info.mounts);

    // The init's exit, by a kill the test times itself.
    let t0 = boottime_ns();
    let sent = Instant::now();
    // SAFETY: kill(2) on the container's init, which we started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    let got = adapter.wait_for("Stopped", |ev| is_stopped(ev, &id));
    let latency = Duration::from_nanos(got.ev.at().saturating_sub(t0));
    eprintln!(
        "Stopped {latency:?} after the kill (forwarded after {:?})",
        got.at - sent
    );
    assert!(latency < STOPPED_BOUND, "Stopped after {latency:?}");
    match got.ev {
        ContainerEvent::Stopped { runtime, .. } => assert_eq!(runtime, "containerd"),
        _ => unreachable!(),
    }
    let info = adapter.seen(&id, ContainerState::Stopped);
    assert_eq!(info.pid, None);

    ctrd.remove(DEFAULT_NS, &id);
    adapter.wait_for("Removed", |ev| is_removed(ev, &id));
}

/// A pod made through the CRI plugin as kubelet makes one: the sandbox and
/// the container are `cri`, carry the pod's name, namespace and uid from
/// kubelet's labels (the container its name too), and the container owns
/// its emptyDir volume. Stop and removal of both come through.
#[test]
#[ignore = "needs root: runs containerd"]
fn a_cri_pod_is_seen_with_its_pod_and_volume() {
    let mut ctrd = Containerd::start();
    let mut adapter = Adapter::start(&ctrd, 16);
    adapter.inventories();
    let uid = format!("6b1c2f3a-{}", unique("uid"));
    let volume = ctrd.empty_dir(&uid, "data");
    let rt = &adapter.rt;
    let mut cri = rt.block_on(ctrd.cri());

    let pod = rt.block_on(cri.run_pod("web-7f9c", "shop", &uid));
    let sandbox = adapter.seen(&pod.id, ContainerState::Running);
    assert_eq!(sandbox.runtime, "cri");
    assert_eq!(sandbox.namespace.as_deref(), Some(CRI_NS));
    let p = sandbox.pod.as_ref().expect("the sandbox's pod");
    assert_eq!(
        (p.name.as_str(), p.namespace.as_str(), p.uid.as_str()),
        ("web-7f9c", "shop", uid.as_str())
    );
    assert_eq!(p.container, None, "the sandbox is the pod itself");
    assert_overlay_rootfs(&sandbox, &ctrd.rootfs(CRI_NS, &pod.id));

    let rt = &adapter.rt;
    let id = rt.block_on(cri.create_container(&pod, "app", &volume));
    rt.block_on(cri.start_container(&id));
    let info = adapter.seen(&id, ContainerState::Running);
    assert_eq!(info.runtime, "cri");
    assert_eq!(info.name, "app");
    assert_eq!(info.image.as_deref(), Some(IMAGE));
    let p = info.pod.as_ref().expect("the container's pod");
    assert_eq!(
        (p.name.as_str(), p.namespace.as_str(), p.uid.as_str()),
        ("web-7f9c", "shop", uid.as_str())
    );
    assert_eq!(p.container.as_deref(), Some("app"));
    assert_overlay_rootfs(&info, &ctrd.rootfs(CRI_NS, &id));
    assert!(
        info.mounts.contains(&bytes(&volume)),
        "the emptyDir {} is among {:?}",
        volume.display(),
        info.mounts
    );

    let rt = &adapter.rt;
    rt.block_on(cri.stop_container(&id, 0));
    let got = adapter.wait_for("Stopped app", |ev| is_stopped(ev, &id));
    assert!(matches!(got.ev, ContainerEvent::Stopped { ref runtime, .. } if runtime == "cri"));
    // The CRI deletes the task at once: stopped, no pid.
    let info = adapter.seen(&id, ContainerState::Stopped);
    assert_eq!(info.pid, None);
    assert_eq!(info.name, "app");

    let rt = &adapter.rt;
    rt.block_on(cri.remove_container(&id));
    adapter.wait_for("Removed app", |ev| is_removed(ev, &id));
    let rt = &adapter.rt;
    rt.block_on(cri.stop_pod(&pod));
    adapter.wait_for("Stopped sandbox", |ev| is_stopped(ev, &pod.id));
    let rt = &adapter.rt;
    rt.block_on(cri.remove_pod(&pod));
    adapter.wait_for("Removed sandbox", |ev| is_removed(ev, &pod.id));
}

/// `kill -9` containerd and start it again while the adapter runs: the
/// status goes disconnected then connected (one reconnect), the resync
/// reports what changed meanwhile (a task that died while containerd was
/// down comes back `Stopped`), and later events still carry names and pods.
#[test]
#[ignore = "needs root: runs containerd"]
fn the_adapter_reconnects_after_containerd_is_killed() {
    let mut ctrd = Containerd::start();
    let mut adapter = Adapter::start(&ctrd, 16);
    adapter.inventories();
    let keep = unique("ml-keep");
    let dies = unique("ml-dies");
    ctrd.ctr_run(DEFAULT_NS, &keep, &[]);
    adapter.seen(&keep, ContainerState::Running);
    let dies_pid = ctrd.ctr_run(DEFAULT_NS, &dies, &[]);
    adapter.seen(&dies, ContainerState::Running);

    ctrd.kill9();
    let down = adapter.status_until("disconnected", |s| !s.connected);
    assert!(down.last_error.is_some(), "{down:?}");
    // The shim outlives containerd and sees this exit; containerd learns
    // of it when it comes back.
    // SAFETY: kill(2) on a container init we started.
    assert_eq!(
        unsafe { libc::kill(dies_pid as libc::pid_t, libc::SIGKILL) },
        0
    );
    let restarted = Instant::now();
    ctrd.restart();
    let up = adapter.status_until("connected again", |s| s.connected);
    eprintln!(
        "reconnected {:?} after containerd was started again",
        restarted.elapsed()
    );
    assert_eq!(up.reconnects, 1, "{up:?}");
    assert_eq!(up.last_error, None);
    let (ids, cri_ids) = adapter.inventories();
    let mut ids = ids;
    ids.sort();
    let mut want = vec![keep.clone(), dies.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(cri_ids.is_empty());
    // What the resync said about each, before its inventory.
    let last_seen = |id: &str| {
        adapter
            .seen
            .iter()
            .rev()
            .find_map(|g| match &g.ev {
                ContainerEvent::Seen { info, .. } if info.id == id => Some(info.state),
                _ => None,
            })
            .expect("a Seen")
    };
    assert_eq!(last_seen(&keep), ContainerState::Running);
    assert_eq!(last_seen(&dies), ContainerState::Stopped);

    // Later events: a kill of the survivor, and a CRI pod.
    let pid = ctrd.task_pid(DEFAULT_NS, &keep).expect("keep still runs");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    adapter.wait_for("Stopped keep", |ev| is_stopped(ev, &keep));
    let rt = &adapter.rt;
    let mut cri = rt.block_on(ctrd.cri());
    let uid = unique("uid");
    let volume = ctrd.empty_dir(&uid, "cache");
    let rt = &adapter.rt;
    let pod = rt.block_on(cri.run_pod("api-1", "prod", &uid));
    let id = rt.block_on(cri.create_container(&pod, "server", &volume));
    rt.block_on(cri.start_container(&id));
    let info = adapter.seen(&id, ContainerState::Running);
    assert_eq!(info.name, "server");
    let p = info.pod.expect("pod labels after a reconnect");
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("prod", "api-1"));
    let rt = &adapter.rt;
    rt.block_on(cri.stop_container(&id, 0));
    adapter.wait_for("Stopped server", |ev| is_stopped(ev, &id));
    let status = adapter.status.borrow().clone();
    assert!(status.connected && status.reconnects == 1, "{status:?}");
}

/// A container removed while the adapter was busy (its channel full, as
/// when the daemon is slow): the reads for the events it then handles find
/// nothing. It must report `Removed` once, nothing after, and keep its
/// connection (a NotFound is an answer, not a failure).
#[test]
#[ignore = "needs root: runs containerd"]
fn a_container_removed_between_event_and_lookup() {
    let ctrd = Containerd::start();
    // Capacity 1 and nobody reading: the adapter blocks on its second send.
    let mut adapter = Adapter::start(&ctrd, 1);
    adapter.inventories();
    let id = unique("ml-brief");
    let pid = ctrd.ctr_run(DEFAULT_NS, &id, &[]);
    // The adapter has read /containers/create and blocks on a later send;
    // remove everything behind its back.
    // SAFETY: kill(2) on the container init we started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_millis(100));
    ctrd.remove(DEFAULT_NS, &id);

    adapter.wait_for("Removed", |ev| is_removed(ev, &id));
    let after = adapter.observe(Duration::from_millis(500));
    let mine: Vec<&Got> = after
        .iter()
        .filter(|g| event_id(&g.ev) == Some(id.as_str()))
        .collect();
    assert!(
        mine.is_empty(),
        "events after Removed:\n{}",
        adapter.history()
    );
    let removed = adapter
        .seen
        .iter()
        .filter(|g| is_removed(&g.ev, &id))
        .count();
    assert_eq!(removed, 1, "{}", adapter.history());
    let status = adapter.status.borrow().clone();
    assert!(status.connected && status.reconnects == 0, "{status:?}");
}

/// `mountleak check`'s lookup: by id, id prefix, CRI container name and pod.
#[test]
#[ignore = "needs root: runs containerd"]
fn lookup_finds_by_id_prefix_name_and_pod() {
    let mut ctrd = Containerd::start();
    let cfg = ContainerdConfig::with_socket(ctrd.socket());
    let id = unique("ml-look");
    ctrd.ctr_run(DEFAULT_NS, &id, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uid = unique("uid");
    let volume = ctrd.empty_dir(&uid, "data");
    let mut cri = rt.block_on(ctrd.cri());
    let pod = rt.block_on(cri.run_pod("db-0", "shop", &uid));
    let app = rt.block_on(cri.create_container(&pod, "postgres", &volume));
    rt.block_on(cri.start_container(&app));

    let ids = |target: &str| -> Vec<String> {
        let started = Instant::now();
        let found = rt
            .block_on(containerd::lookup(&cfg, target))
            .unwrap_or_else(|err| panic!("lookup {target}: {err}"));
        eprintln!("lookup {target:?}: {:?}", started.elapsed());
        let mut ids: Vec<String> = found.into_iter().map(|i| i.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&id), std::slice::from_ref(&id));
    assert_eq!(ids(&id[..id.len() - 1]), std::slice::from_ref(&id));
    assert_eq!(ids("postgres"), std::slice::from_ref(&app));
    let mut pod_ids = vec![pod.id.clone(), app.clone()];
    pod_ids.sort();
    assert_eq!(ids("shop/db-0"), pod_ids);
    assert!(ids("shop/nothing").is_empty());
    assert!(ids("no-such-container").is_empty());

    let found = rt.block_on(containerd::lookup(&cfg, "postgres")).unwrap();
    let info = &found[0];
    assert_eq!(info.runtime, "cri");
    assert_eq!(info.state, ContainerState::Running);
    assert_eq!(info.mounts[0], bytes(&ctrd.rootfs(CRI_NS, &app)));
    assert!(info.mounts.contains(&bytes(&volume)));
    assert!(info.upper_dir.is_some() && info.started_at.is_some());

    // "ml-" prefixes nothing else here; "" matches nothing.
    assert!(ids("").is_empty());
    let err = rt
        .block_on(containerd::lookup(
            &ContainerdConfig::with_socket(ctrd.dir().join("absent.sock")),
            &id,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("absent.sock"), "{err}");
}

/// Scale (issue 3 asks `check` to answer in under 100 ms on a node with
/// 200 containers): 200 containers (10 of them running) in one namespace.
/// The adapter's inventory covers them all; a lookup, which `check` makes
/// with a fresh connection, answers within the budget.
#[test]
#[ignore = "needs root: runs containerd"]
fn inventory_and_lookup_with_200_containers() {
    const CONTAINERS: usize = 200;
    const RUNNING: usize = 10;
    let ctrd = Containerd::start();
    let base = unique("ml-many");
    let ids: Vec<String> = (0..CONTAINERS).map(|i| format!("{base}-{i:03}")).collect();
    let setup = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        if i < RUNNING {
            ctrd.ctr_run(DEFAULT_NS, id, &[]);
        } else {
            ctrd.ctr_create(DEFAULT_NS, id);
        }
    }

    eprintln!(
        "{CONTAINERS} containers made with ctr in {:?}",
        setup.elapsed()
    );
    let started = Instant::now();
    let mut adapter = Adapter::start(&ctrd, 1024);
    let (mut seen, _) = adapter.inventories();
    let inventory = started.elapsed();
    seen.sort();
    assert_eq!(seen, ids);
    let running = adapter
        .seen
        .iter()
        .filter(|g| matches!(&g.ev, ContainerEvent::Seen { info, .. } if info.state == ContainerState::Running))
        .count();
    assert_eq!(running, RUNNING);
    eprintln!("inventory of {CONTAINERS} containers (connect included): {inventory:?}");

    let cfg = ContainerdConfig::with_socket(ctrd.socket());
    let mut times: Vec<Duration> = Vec::new();
    for i in 0..20 {
        let target = &ids[i * 7 % CONTAINERS];
        let t = Instant::now();
        let found = adapter
            .rt
            .block_on(containerd::lookup(&cfg, target))
            .unwrap_or_else(|err| panic!("lookup {target}: {err}"));
        times.push(t.elapsed());
        assert_eq!(found.len(), 1);
        assert_eq!(&found[0].id, target);
    }
    times.sort();
    let (median, worst) = (times[times.len() / 2], times[times.len() - 1]);
    eprintln!("lookup among {CONTAINERS}: median {median:?}, worst {worst:?}");
    assert!(
        median < Duration::from_millis(100),
        "lookup median {median:?}"
    );
    // A prefix of every id is ambiguous: an error naming them, not a guess.
    let err = adapter
        .rt
        .block_on(containerd::lookup(&cfg, &base))
        .expect_err("an ambiguous prefix");
    assert!(err.to_string().contains("several"), "{err}");
}

// End to end: `mountleak run --json` following this containerd (issue 3).

/// How long the daemon gets to load its probes and take its first scan.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous bound for a finding the daemon should report at once.
const FINDING_TIMEOUT: Duration = Duration::from_secs(10);

/// `mountleak run --json` on this containerd only (no Docker), with the
/// private state dir's rootfs mount points as container mounts; killed on
/// drop.
struct Daemon {
    out: JsonLines,
    /// Its metrics listener (with /check), on loopback.
    port: u16,
}

impl Daemon {
    fn start(ctrd: &Containerd) -> Daemon {
        let port = support::otlp::free_port();
        let mut cmd = Command::new(support::mountleak_bin());
        cmd.args(["run", "--json", "--no-store", "--risk-grace", "1s"])
            .arg(format!("--metrics-listen=127.0.0.1:{port}"))
            .arg("--config")
            .arg(mountleak_config(ctrd));
        let mut out = JsonLines::spawn(cmd);
        out.wait_for("the ready notice", READY_TIMEOUT, |v| v["type"] == "ready");
        Daemon { out, port }
    }

    fn transcript(&self) -> String {
        self.out.transcript()
    }

    /// The first line (already read or still to come) that `pred` accepts.
    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Line {
        self.out.wait_for(what, timeout, pred)
    }
}

/// A mountleak config for this containerd only: Docker off (an empty
/// socket; the flag does not take an empty value), and the private state
/// dir's task rootfs mount points as container mounts (the built-in
/// patterns know containerd's default, /run/containerd).
fn mountleak_config(ctrd: &Containerd) -> std::path::PathBuf {
    let path = ctrd.dir().join("mountleak.toml");
    let text = format!(
        "[detect]\npatterns = [\"{}/io.containerd.runtime.v2.task/*/*/rootfs\"]\n\n\
         [runtimes]\ndocker_socket = \"\"\ncontainerd_socket = \"{}\"\n",
        ctrd.state_dir().display(),
        ctrd.socket().display()
    );
    fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    path
}

/// `mountleak check TARGET --json` on this containerd: exit code and the
/// document (with the raw output for messages).
fn check_target(ctrd: &Containerd, target: &str) -> (i32, Value, String) {
    let out = Command::new(support::mountleak_bin())
        .args(["check", target, "--json", "--config"])
        .arg(mountleak_config(ctrd))
        .output()
        .expect("run mountleak check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let doc = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        doc,
        format!("{stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The container a finding names, as its runtime described it.
fn owner(v: &Value) -> &Value {
    &v["container"]
}

fn is_warning_for(v: &Value, id: &str) -> bool {
    v["type"] == "finding" && v["kind"] == "removal_warning" && owner(v)["id"] == id
}

fn is_finding_for(v: &Value, id: &str) -> bool {
    v["type"] == "finding" && owner(v)["id"] == id
}

/// A `ctr run` container whose rootfs a holder (a private copy of the
/// host's mounts) has its cwd inside. The daemon's first finding about it
/// (a risk, after the grace period) names it; `check` by id says held.
fn ctr_container_held(ctrd: &Containerd, daemon: &mut Daemon) -> (String, Holder) {
    let id = unique("ml-e2e");
    ctrd.ctr_run(DEFAULT_NS, &id, &[]);
    let holder = Holder::with_cwd(&ctrd.rootfs(DEFAULT_NS, &id));
    let risk = daemon.wait_for("a finding naming the container", FINDING_TIMEOUT, |v| {
        is_finding_for(v, &id)
    });
    let f = &risk.json;
    assert_eq!(f["kind"], "risk", "{f:#}\n{}", daemon.transcript());
    let o = owner(f);
    assert_eq!(o["runtime"], "containerd", "{f:#}");
    assert_eq!(o["namespace"], DEFAULT_NS, "{f:#}");
    assert_eq!(o["name"], id.as_str(), "{f:#}");
    assert_eq!(o["image"], IMAGE, "{f:#}");
    assert!(
        f["holders"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["pid"] == json!(holder.pid()))),
        "the holder is named: {f:#}"
    );
    let (code, doc, out) = check_target(ctrd, &id);
    assert_eq!(code, 1, "check {id} while held:\n{out}");
    assert_eq!(doc["verdict"], "held", "{out}");
    (id, holder)
}

/// After the task was killed: the removal warning, naming the container
/// and the holder. Returns how long after `kill_task` returned it came.
fn ctr_warning(daemon: &mut Daemon, id: &str, holder: &Holder, killed: Instant) -> Duration {
    let warning = daemon.wait_for("the removal warning", FINDING_TIMEOUT, |v| {
        is_warning_for(v, id)
    });
    let w = &warning.json;
    assert_eq!(owner(w)["runtime"], "containerd", "{w:#}");
    assert_eq!(owner(w)["name"], id, "{w:#}");
    assert!(
        w["holders"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["pid"] == json!(holder.pid()))),
        "the holder is named: {w:#}"
    );
    warning.at.saturating_duration_since(killed)
}

/// `ctr run` with a holder's cwd inside the task's rootfs: the daemon's
/// findings name the container (id, name, image, namespace) and `check`
/// says held until the holder is gone, then safe.
#[test]
#[ignore = "needs root: runs containerd and the mountleak daemon"]
fn findings_name_a_ctr_container_and_check_says_held() {
    let ctrd = Containerd::start();
    let mut daemon = Daemon::start(&ctrd);
    let (id, holder) = ctr_container_held(&ctrd, &mut daemon);
    drop(holder);
    let (code, doc, out) = check_target(&ctrd, &id);
    assert_eq!(code, 0, "check {id} once the holder is gone:\n{out}");
    assert_eq!(doc["verdict"], "safe", "{out}");
    let (code, _, out) = check_target(&ctrd, "no-such-container");
    assert_eq!(code, 2, "an unknown target:\n{out}");
}

/// Issue 3 through `ctr`: the task killed while a holder's cwd is inside
/// its rootfs → a removal warning naming the container and the holder,
/// before `ctr task rm`.
///
/// Known bug: no warning comes. The adapter's `Stopped` arrives (1-2 ms
/// after the kill) and the model asks for a rescan of the holder's
/// namespace ("a container stopped: reading its holders before warning"),
/// but the daemon's targeted scans read no device facts
/// (`ScanOptions::default()`, `pins=false`), so the holder's cwd on the
/// overlay is not seen, the copy looks idle and "detached on removal", and
/// no warning follows. containerd keeps the rootfs mounted until the task
/// is deleted, so the copy is still in the holder's table at that point.
/// `check` (a full read with devices) does say held.
#[test]
#[ignore = "needs root: runs containerd and the mountleak daemon"]
fn a_killed_ctr_task_with_a_pinned_rootfs_is_warned_about() {
    let ctrd = Containerd::start();
    let mut daemon = Daemon::start(&ctrd);
    let (id, holder) = ctr_container_held(&ctrd, &mut daemon);
    ctrd.kill_task(DEFAULT_NS, &id);
    let latency = ctr_warning(&mut daemon, &id, &holder, Instant::now());
    eprintln!("task killed → removal_warning: {latency:?}");
}

/// A pod made through the CRI, with a holder's cwd inside its container's
/// rootfs: the findings name the container by its Kubernetes name, and its
/// pod and the pod's namespace; `check NAMESPACE/POD` says held.
fn cri_container_held(
    ctrd: &mut Containerd,
    daemon: &mut Daemon,
    rt: &tokio::runtime::Runtime,
) -> (String, String, Holder) {
    let uid = unique("uid");
    let volume = ctrd.empty_dir(&uid, "data");
    let mut cri = rt.block_on(ctrd.cri());
    let pod = rt.block_on(cri.run_pod("web-7f9c", "shop", &uid));
    let id = rt.block_on(cri.create_container(&pod, "nginx", &volume));
    rt.block_on(cri.start_container(&id));
    let holder = Holder::with_cwd(&ctrd.rootfs(CRI_NS, &id));
    let risk = daemon.wait_for("a finding naming the container", FINDING_TIMEOUT, |v| {
        is_finding_for(v, &id)
    });
    let f = &risk.json;
    let o = owner(f);
    assert_eq!(o["runtime"], "cri", "{f:#}");
    assert_eq!(o["namespace"], CRI_NS, "{f:#}");
    assert_eq!(o["name"], "nginx", "{f:#}");
    assert_eq!(o["pod"]["name"], "web-7f9c", "{f:#}");
    assert_eq!(o["pod"]["namespace"], "shop", "{f:#}");
    assert_eq!(o["pod"]["uid"], uid.as_str(), "{f:#}");
    assert_eq!(o["pod"]["container"], "nginx", "{f:#}");
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("web-7f9c") && summary.contains("shop"),
        "the summary names the pod and its namespace: {summary}"
    );
    let (code, doc, out) = check_target(ctrd, "shop/web-7f9c");
    assert_eq!(code, 1, "check shop/web-7f9c while held:\n{out}");
    assert_eq!(doc["verdict"], "held", "{out}");
    (id, pod.id, holder)
}

/// Issue 3 through the CRI: findings about a container kubelet made name
/// its pod and the pod's namespace.
#[test]
#[ignore = "needs root: runs containerd and the mountleak daemon"]
fn findings_name_a_cri_container_and_its_pod() {
    let mut ctrd = Containerd::start();
    let mut daemon = Daemon::start(&ctrd);
    let rt = current_thread();
    let (_, _, holder) = cri_container_held(&mut ctrd, &mut daemon, &rt);
    // The preStop hook of deploy/kubernetes/prestop-example.yaml, as the
    // pod would run it, asks this daemon: it fails with mountleak's text.
    let (code, out) = prestop_hook(daemon.port, "shop", "web-7f9c");
    assert_eq!(code, 1, "the preStop hook while held:\n{out}");
    assert!(
        out.starts_with("mountleak: HELD") && out.contains(&holder.pid().to_string()),
        "{out}"
    );
    drop(holder);
    let (code, _, out) = check_target(&ctrd, "shop/web-7f9c");
    assert_eq!(
        code, 0,
        "check shop/web-7f9c once the holder is gone:\n{out}"
    );
    let (code, out) = prestop_hook(daemon.port, "shop", "web-7f9c");
    assert_eq!(code, 0, "the preStop hook once free:\n{out}");
    // mountleak unreachable: the hook lets the pod go quietly.
    let (code, out) = prestop_hook(support::otlp::free_port(), "shop", "web-7f9c");
    assert_eq!(code, 0, "the preStop hook without mountleak:\n{out}");
}

/// Runs the preStop command of deploy/kubernetes/prestop-example.yaml with
/// the pod's downward-API variables, busybox's wget (what a busybox image
/// has), and the Service's address swapped for a daemon on `port`. Exit
/// code and stderr.
fn prestop_hook(port: u16, namespace: &str, pod: &str) -> (i32, String) {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/prestop-example.yaml");
    let text = fs::read_to_string(&file).expect("read the preStop example");
    let doc: Value = serde_norway::from_str(&text).expect("the example is YAML");
    let command: Vec<String> = doc["spec"]["template"]["spec"]["containers"][0]["lifecycle"]
        ["preStop"]["exec"]["command"]
        .as_array()
        .expect("a preStop exec command")
        .iter()
        .map(|v| v.as_str().expect("strings").to_string())
        .collect();
    let [sh, dash_c, script] = &command[..] else {
        panic!("sh -c SCRIPT expected: {command:?}");
    };
    assert_eq!((sh.as_str(), dash_c.as_str()), ("sh", "-c"));
    let service = "mountleak.mountleak.svc:9633";
    assert!(script.contains(service), "{script}");
    let script = script.replace(service, &format!("127.0.0.1:{port}"));
    let bin = std::env::temp_dir().join(format!("mountleak-prestop-{}", std::process::id()));
    fs::create_dir_all(&bin).unwrap();
    let wget = bin.join("wget");
    if !wget.exists() {
        std::os::unix::fs::symlink("/bin/busybox", &wget).expect("link busybox as wget");
    }
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("POD_NAMESPACE", namespace)
        .env("POD_NAME", pod)
        .output()
        .expect("run the preStop script");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 3 through the CRI: StopContainer with a holder's cwd inside the
/// container's rootfs → a removal warning naming the pod and its
/// namespace. Known bug: as for `ctr` above (the post-stop rescan reads no
/// device facts).
#[test]
#[ignore = "needs root: runs containerd and the mountleak daemon"]
fn a_stopped_cri_container_is_warned_about_with_its_pod() {
    let mut ctrd = Containerd::start();
    let mut daemon = Daemon::start(&ctrd);
    let rt = current_thread();
    let (id, _, holder) = cri_container_held(&mut ctrd, &mut daemon, &rt);
    let mut cri = rt.block_on(ctrd.cri());
    rt.block_on(cri.stop_container(&id, 0));
    let stopped = Instant::now();
    let warning = daemon.wait_for("the removal warning", FINDING_TIMEOUT, |v| {
        is_warning_for(v, &id)
    });
    eprintln!(
        "StopContainer → removal_warning: {:?}",
        warning.at.saturating_duration_since(stopped)
    );
    let w = &warning.json;
    assert_eq!(owner(w)["pod"]["name"], "web-7f9c", "{w:#}");
    assert_eq!(owner(w)["pod"]["namespace"], "shop", "{w:#}");
    assert!(
        w["holders"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["pid"] == json!(holder.pid()))),
        "the holder is named: {w:#}"
    );
}

/// containerd killed with SIGKILL and started again while the daemon runs:
/// the daemon says it went away and came back (one reconnect), and later
/// findings still name containers and pods.
#[test]
#[ignore = "needs root: runs containerd and the mountleak daemon"]
fn findings_after_a_containerd_restart_carry_names() {
    let mut ctrd = Containerd::start();
    let mut daemon = Daemon::start(&ctrd);
    let runtime_notice = |connected: bool| {
        move |v: &Value| {
            v["type"] == "runtime" && v["runtime"] == "containerd" && v["connected"] == connected
        }
    };
    daemon.wait_for(
        "containerd connected",
        FINDING_TIMEOUT,
        runtime_notice(true),
    );
    ctrd.kill9();
    daemon.wait_for(
        "a notice that containerd went away",
        FINDING_TIMEOUT,
        runtime_notice(false),
    );
    ctrd.restart();
    daemon.wait_for("a notice that containerd is back", FINDING_TIMEOUT, |v| {
        runtime_notice(true)(v) && v["reconnects"] == 1
    });
    let (_, holder) = ctr_container_held(&ctrd, &mut daemon);
    drop(holder);
    let rt = current_thread();
    let (_, _, holder) = cri_container_held(&mut ctrd, &mut daemon, &rt);
    drop(holder);
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
