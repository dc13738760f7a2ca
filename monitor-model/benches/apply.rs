//! Model throughput on a realistic event mix (issue 2 §7: at least 1,000,000
//! events per second on one core).
//!
//! The host has 200 running containers (overlay rootfs each) on a shared
//! tree; 20 long-lived holder namespaces (systemd units with private
//! copies) exist from the start. The stream repeats a cycle that looks like a
//! busy node: processes forking and exiting inside watched namespaces,
//! unrelated tmpfs mounts, a service unsharing and making its copies private,
//! containers being started and removed, and the short-lived namespace of a
//! runtime's init.
//!
//! Run: `cargo bench -p monitor-model --bench apply`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use monitor_model::flags::*;
use monitor_model::*;

const HOST: NsId = 4026531841;
const SEC: u64 = 1_000_000_000;
const CONTAINERS: u32 = 200;
const HOLDERS: u64 = 20;

fn task(pid: Pid, comm: &str) -> Task {
    Task {
        tid: pid,
        tgid: pid,
        uid: 0,
        comm: comm.into(),
        cgroup_id: 1,
    }
}

fn overlay_path(i: u32) -> String {
    format!("/var/lib/docker/overlay2/{i:064x}/merged")
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

fn setup() -> Model {
    let mut m = Model::new(ModelConfig::default());
    let mut host = vec![
        mount(1, 1, "/", "ext4", None),
        mount(2, 2, "/var/lib/docker", "tmpfs", Some(1)),
    ];
    for i in 0..CONTAINERS {
        host.push(mount(
            100 + i as u64,
            100 + i,
            &overlay_path(i),
            "overlay",
            Some(10 + i),
        ));
    }
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
        let private: Vec<MountEntry> = host
            .iter()
            .map(|m| MountEntry {
                shared: None,
                ..m.clone()
            })
            .collect();
        namespaces.push(NamespaceSnapshot {
            ns: HOST + 1000 + h,
            mounts: private,
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

/// One cycle of 100 events starting at time `t0`, numbered `cycle` so pids
/// and namespace ids stay unique. Returns the events.
fn cycle(cycle: u64, t0: u64) -> Vec<Input> {
    let mut v = Vec::with_capacity(100);
    let mut t = t0;
    let mut tick = || {
        t += 10_000;
        t
    };
    let holder = HOST + 1000 + (cycle % HOLDERS);
    // 70 forks and exits inside watched holder namespaces.
    for k in 0..35u32 {
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
    // 10 unrelated mounts/umounts (a service's tmpfs).
    let svc = task(2000 + (cycle % HOLDERS) as Pid, "svc");
    for _ in 0..5 {
        let call = Call::Mount {
            source: PathArg::new("tmpfs"),
            target: PathArg::new("/tmp/scratch"),
            fstype: "tmpfs".into(),
            flags: 0,
        };
        v.push(sys(tick(), &svc, holder, holder, 0, call));
        v.push(sys(
            tick(),
            &svc,
            holder,
            holder,
            0,
            Call::Umount {
                target: PathArg::new("/tmp/scratch"),
                flags: 0,
            },
        ));
    }
    // A service unshares, makes its copies private, runs, exits (8 events).
    let ns = HOST + 1_000_000 + cycle;
    let pid = 500_000 + (cycle % 100_000) as Pid;
    let unit = task(pid, "chronyd");
    v.push(sys(
        tick(),
        &unit,
        HOST,
        ns,
        0,
        Call::Unshare { flags: CLONE_NEWNS },
    ));
    let private = Call::Mount {
        source: PathArg::new("none"),
        target: PathArg::new("/"),
        fstype: String::new(),
        flags: MS_REC | MS_PRIVATE,
    };
    v.push(sys(tick(), &unit, ns, ns, 0, private));
    for k in 0..3 {
        v.push(Input::Process(ProcessEvent {
            at: tick(),
            ns,
            kind: ProcessEventKind::Fork {
                parent: pid,
                child: pid + 1 + k,
                comm: "chronyd".into(),
            },
        }));
    }
    for k in 0..3 {
        v.push(Input::Process(ProcessEvent {
            at: tick(),
            ns,
            kind: ProcessEventKind::Exit { pid: pid + 1 + k },
        }));
    }
    // A runtime's init: clone into a new namespace, pivot_root, gone (4).
    let runc = task(600_000 + (cycle % 100_000) as Pid, "runc:[1:CHILD]");
    let init_ns = HOST + 2_000_000 + cycle;
    v.push(sys(
        tick(),
        &runc,
        HOST,
        HOST,
        0,
        Call::NewTask {
            child: runc.tgid + 1,
            child_ns: init_ns,
            flags: CLONE_NEWNS,
        },
    ));
    v.push(sys(
        tick(),
        &runc,
        init_ns,
        init_ns,
        0,
        Call::PivotRoot {
            new_root: PathArg::new("."),
            put_old: PathArg::new("."),
        },
    ));
    v.push(Input::Process(ProcessEvent {
        at: tick(),
        ns: init_ns,
        kind: ProcessEventKind::Exit { pid: runc.tgid + 1 },
    }));
    v.push(Input::Process(ProcessEvent {
        at: tick(),
        ns,
        kind: ProcessEventKind::Exit { pid },
    }));
    // A container comes and goes (8): mount, a failed umount, umount, rmdir.
    let dockerd = task(900, "dockerd");
    let path = format!("/var/lib/docker/overlay2/c{cycle:063x}/merged");
    let mount = Call::Mount {
        source: PathArg::new("overlay"),
        target: PathArg::new(path.as_str()),
        fstype: "overlay".into(),
        flags: 0,
    };
    v.push(sys(tick(), &dockerd, HOST, HOST, 0, mount));
    v.push(sys(
        tick(),
        &dockerd,
        HOST,
        HOST,
        -16,
        Call::Umount {
            target: PathArg::new("/var/lib/docker/not-a-mount"),
            flags: 0,
        },
    ));
    v.push(sys(
        tick(),
        &dockerd,
        HOST,
        HOST,
        0,
        Call::Umount {
            target: PathArg::new(path.as_str()),
            flags: 0,
        },
    ));
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
    // The daemon's periodic tick (it sends one a second; here one per cycle
    // of about a millisecond, which overstates its cost a thousandfold).
    v.push(Input::Tick { now: tick() });
    // Fill to 100 with setns round trips (nsenter-style tools).
    while v.len() < 100 {
        let who = task(700_000 + v.len() as Pid, "nsenter");
        let to = holder;
        v.push(sys(
            tick(),
            &who,
            HOST,
            to,
            0,
            Call::Setns {
                nstype: CLONE_NEWNS,
            },
        ));
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.throughput(Throughput::Elements(100));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("apply/realistic_mix_100_events", |b| {
        let mut m = setup();
        let mut n = 0u64;
        let mut out = Vec::new();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let events = cycle(n, 20 * SEC + n * 10_000_000);
                let start = Instant::now();
                for e in &events {
                    out.clear();
                    m.apply_into(e, &mut out);
                }
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
