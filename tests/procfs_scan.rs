//! The /proc scanner against real namespaces made with util-linux.
//!
//! Everything happens inside throwaway mount namespaces held by `sleep`
//! processes we spawn, under a unique directory in /tmp, so the host's own
//! mount table is never touched. Killing the holders drops their namespaces
//! (and any process-less namespace pinned by an nsfs mount inside them);
//! [`Lab`]'s Drop does that, detaches loop devices and removes the
//! directory, also when an assertion fails.
//!
//! Smaller than `support::Lab` (which stages container trees in a lab
//! "host" namespace): these tests need odd paths and namespaces with no
//! process, and nothing else. They still hold `support::exclusive()` so
//! their namespaces never show up in a lab test's findings; and every
//! assertion looks only at our own pids, namespaces and paths.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monitor_model::{Dev, NamespaceSnapshot, NsId, PathBytes, PinKind, Snapshot, TableSource};
use mountleak::procfs::{ScanOptions, Scanner, Support, TableRead, TableScope};

/// A throwaway directory, the holder processes and loop devices made in it.
struct Lab {
    dir: PathBuf,
    holders: Vec<Child>,
    loops: Vec<String>,
    /// Declared last: released after Drop has cleaned up.
    _exclusive: crate::support::Exclusive,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let exclusive = crate::support::exclusive();
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!(
            "/tmp/mountleak-procfs-{}-{n}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create lab dir");
        Lab {
            dir,
            holders: Vec::new(),
            loops: Vec::new(),
            _exclusive: exclusive,
        }
    }

    /// `dir/<rel>` as bytes (rel may hold any byte but NUL).
    fn path(&self, rel: &[u8]) -> PathBuf {
        let mut bytes = self.dir.as_os_str().as_bytes().to_vec();
        bytes.push(b'/');
        bytes.extend_from_slice(rel);
        PathBuf::from(OsString::from_vec(bytes))
    }

    fn mkdir(&self, rel: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    /// Runs `script` with `sh -c` in a new private mount namespace; it ends
    /// with `exec sleep` and becomes the holder. `args` are `$1…`. Returns
    /// the holder's pid once it is sleeping.
    fn holder(&mut self, script: &str, args: &[&OsStr]) -> u32 {
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("{script}\nexec sleep 1000"))
            .arg("sh")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while comm(pid).as_deref() != Some("sleep") {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                panic!("holder script failed ({status}): {err}\n{script}");
            }
            assert!(Instant::now() < deadline, "holder {pid} never slept");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.holders.push(child);
        pid
    }

    /// One more process in the holder's namespace.
    fn join(&mut self, holder: u32) -> u32 {
        let child = Command::new("nsenter")
            .args(["-t", &holder.to_string(), "-m", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn nsenter");
        let pid = child.id();
        self.holders.push(child);
        wait_for(&format!("{pid} to join"), || {
            comm(pid).as_deref() == Some("sleep") && mnt_ns(pid) == mnt_ns(holder)
        });
        pid
    }

    fn losetup(&mut self, image: &Path) -> String {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.loops.push(dev.clone());
        dev
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.holders {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dev in &self.loops {
            // With the holders gone nothing uses it; if something still
            // does, -d marks it autoclear and the kernel detaches it later.
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end().to_string())
}

fn mnt_ns(pid: u32) -> Option<NsId> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn namespace(snap: &Snapshot, ns: NsId) -> &NamespaceSnapshot {
    snap.namespaces
        .iter()
        .find(|n| n.ns == ns)
        .unwrap_or_else(|| panic!("namespace {ns} not in snapshot"))
}

fn table_reads(reads: &[TableRead], ns: NsId) -> usize {
    reads
        .iter()
        .filter(|r| match r {
            TableRead::Mountinfo { ns: n, .. } | TableRead::Statmount { ns: n } => *n == ns,
            TableRead::Nsenter { ns: n, .. } => *n == ns,
        })
        .count()
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn groups_processes_by_namespace_and_reads_each_table_once() {
    let mut lab = Lab::new("group");
    let a = lab.mkdir(b"a");
    let holder = lab.holder(r#"mount -t tmpfs lab-group "$1""#, &[a.as_os_str()]);
    let second = lab.join(holder);
    let third = lab.join(holder);
    let ns = mnt_ns(holder).expect("holder ns");

    let out = Scanner::new().scan(&ScanOptions::default()).expect("scan");
    let snap = &out.snapshot;
    let mine = namespace(snap, ns);
    let pids: Vec<u32> = mine.members.iter().map(|p| p.pid).collect();
    for pid in [holder, second, third] {
        assert!(pids.contains(&pid), "{pid} not among {pids:?}");
    }
    let member = mine
        .members
        .iter()
        .find(|p| p.pid == holder)
        .expect("holder");
    assert_eq!(member.comm, "sleep");
    assert!(member.start > 0 && member.start <= snap.taken_at);
    assert!(member
        .exe
        .as_ref()
        .is_some_and(|e| e.as_bytes().ends_with(b"/sleep")));
    // An unscoped scan reads member namespaces from mountinfo.
    assert_eq!(mine.source, TableSource::Mountinfo);
    let tmpfs = mine
        .mounts
        .iter()
        .find(|m| m.mount_point.as_bytes() == bytes(&a))
        .expect("lab tmpfs in table");
    assert_eq!(
        (tmpfs.fstype.as_str(), tmpfs.source.as_bytes()),
        ("tmpfs", &b"lab-group"[..])
    );
    // Not in any other namespace: it was mounted in a private one.
    assert!(snap.namespaces.iter().filter(|n| n.ns != ns).all(|n| n
        .mounts
        .iter()
        .all(|m| m.mount_point.as_bytes() != bytes(&a))));

    // Three members, one read; and no namespace read twice.
    assert_eq!(table_reads(&out.stats.tables, ns), 1);
    for n in &snap.namespaces {
        assert!(
            table_reads(&out.stats.tables, n.ns) <= 1,
            "{} read twice",
            n.ns
        );
    }
    assert!(snap.alive.as_ref().expect("alive").contains(&ns));
    assert!(snap.self_ns.is_some());

    // The targeted scan reads just that table, yet still lists every
    // namespace alive.
    let targeted = Scanner::new()
        .scan_namespaces(&[ns], &ScanOptions::default())
        .expect("scan");
    assert_eq!(targeted.snapshot.namespaces.len(), 1);
    assert_eq!(targeted.stats.tables.len(), 1);
    assert!(targeted
        .snapshot
        .alive
        .as_ref()
        .expect("alive")
        .contains(&ns));
}

/// `mountleak check`'s scan: the host table whole; of a holder's table only
/// the target's copy and the copy of what the host already unmounted, not
/// the copy of an unrelated mount; the left-out device still counts as
/// shown, so it is no pin. Skips where the kernel has no statmount or walk
/// (the scope then reads everything whole, which the last line checks).
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn a_scoped_scan_reads_only_what_concerns_the_target() {
    let mut lab = Lab::new("scoped");
    let (a, b, gone) = (lab.mkdir(b"a"), lab.mkdir(b"b"), lab.mkdir(b"gone"));
    let own = lab.mkdir(b"own");
    // The "host" mounts three tmpfs, a private copy of its namespace is
    // made, then the host unmounts one. A second private namespace drops
    // its copies of the target and the unmounted one and mounts a tmpfs
    // of its own: nothing in it concerns the target.
    let host = lab.holder(
        r#"for d in "$1" "$2" "$3"; do mount -t tmpfs lab-scoped "$d"; done
unshare --mount --propagation private sleep 1000 &
while [ "$(readlink /proc/$!/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ]; do sleep 0.01; done
unshare --mount --propagation private sh -c 'umount "$1" "$3" && mount -t tmpfs lab-own "$4" && exec sleep 1000' sh "$@" &
while ! grep -q lab-own /proc/$!/mountinfo 2>/dev/null; do sleep 0.01; done
umount "$3""#,
        &[a.as_os_str(), b.as_os_str(), gone.as_os_str(), own.as_os_str()],
    );
    let host_ns = mnt_ns(host).expect("host ns");
    let copy = std::fs::read_to_string(format!("/proc/{host}/task/{host}/children"))
        .expect("children")
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|&p| mnt_ns(p).is_some_and(|n| n != host_ns))
        .expect("the copy's process");
    let copy_ns = mnt_ns(copy).expect("copy ns");
    let unrelated = std::fs::read_to_string(format!("/proc/{host}/task/{host}/children"))
        .expect("children")
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|&p| mnt_ns(p).is_some_and(|n| n != host_ns && n != copy_ns))
        .expect("the unrelated namespace's process");
    let unrelated_ns = mnt_ns(unrelated).expect("unrelated ns");
    let dev_of = |p: &Path| {
        let st = std::fs::metadata(format!("/proc/{copy}/root{}", p.display())).expect("stat copy");
        Dev {
            major: libc::major(st.dev()),
            minor: libc::minor(st.dev()),
        }
    };
    let (dev_a, dev_b, dev_gone) = (dev_of(&a), dev_of(&b), dev_of(&gone));

    let target = PathBytes::from(bytes(&a).to_vec());
    let scope = TableScope {
        full: [host_ns].into_iter().collect(),
        target: Box::new(move |m| *m == target),
    };
    let out = Scanner::new()
        .scan(&ScanOptions::default().with_all_devices().scoped(scope))
        .expect("scan");
    let snap = &out.snapshot;
    let devs =
        |ns: NsId| -> Vec<Dev> { namespace(snap, ns).mounts.iter().map(|m| m.dev).collect() };
    let (host_devs, copy_devs) = (devs(host_ns), devs(copy_ns));
    assert!(host_devs.contains(&dev_a) && host_devs.contains(&dev_b));
    assert!(!host_devs.contains(&dev_gone));
    assert!(copy_devs.contains(&dev_a), "the target's copy is read");
    assert!(
        copy_devs.contains(&dev_gone),
        "the copy of an unmounted fs is read"
    );
    assert!(
        !snap.pins.iter().any(|p| p.dev == dev_b),
        "a left-out mount is still shown: {:?}",
        snap.pins
    );
    let by_id =
        out.stats.support.statmount == Some(true) && out.stats.support.ns_walk == Some(true);
    if by_id {
        assert!(!copy_devs.contains(&dev_b), "an unrelated copy is left out");
        assert!(out.stats.partial_tables > 0);
        // The copy's `/` is there: what the namespace is rooted on.
        assert!(namespace(snap, copy_ns)
            .mounts
            .iter()
            .any(|m| m.mount_point.as_bytes() == b"/"));
        // Details (exe, cgroup) only for who a finding may name: the
        // holder of the target's copy, not a namespace with mounts of its
        // own that are not the target's.
        let member = |ns: NsId, pid: u32| {
            namespace(snap, ns)
                .members
                .iter()
                .find(|p| p.pid == pid)
                .cloned()
                .expect("member listed")
        };
        assert!(member(copy_ns, copy).exe.is_some(), "the holder is named");
        assert!(
            member(unrelated_ns, unrelated).exe.is_none(),
            "an unrelated namespace's members are listed without details"
        );
    } else {
        eprintln!("no statmount or namespace walk here: every table read whole");
        assert!(copy_devs.contains(&dev_b));
    }
}

/// A mount point with a space, a newline and a byte that is not UTF-8.
const WEIRD: &[u8] = b"we ird\nname\xff\ttab\\slash";

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn odd_mount_points_round_trip_exactly() {
    let mut lab = Lab::new("weird");
    let weird = lab.mkdir(WEIRD);
    let holder = lab.holder(r#"mount -t tmpfs lab-weird "$1""#, &[weird.as_os_str()]);
    let ns = mnt_ns(holder).expect("ns");

    let out = Scanner::new()
        .scan_namespaces(&[ns], &ScanOptions::default())
        .expect("scan");
    let table = &namespace(&out.snapshot, ns).mounts;
    let found: Vec<&PathBytes> = table
        .iter()
        .filter(|m| m.source.as_bytes() == b"lab-weird")
        .map(|m| &m.mount_point)
        .collect();
    assert_eq!(found, vec![&PathBytes(bytes(&weird).to_vec())]);
    assert_eq!(out.stats.malformed_lines, 0);
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn processless_namespace_is_read_through_statmount() {
    let mut lab = Lab::new("nsfs");
    let run_dir = lab.mkdir(b"run");
    let inner = lab.mkdir(b"inner");
    let weird = lab.mkdir(WEIRD);
    let ready = lab.path(b"ready");
    // The outer namespace gets a private tmpfs to hold the nsfs bind mount
    // (unshare --mount=FILE refuses a shared parent), then makes a
    // namespace with no process in it. Binding the new namespace's file
    // fails with EINVAL about half the time on this kernel (measured: 99 of
    // 200; PLATFORM.md): retry up to 50 times.
    let script = r#"
set -e
mount -t tmpfs lab-run "$1"
mount --make-private "$1"
touch "$1/ns"
ok=
for i in $(seq 1 50); do
  if unshare --mount="$1/ns" --propagation private \
       sh -c 'mount -t tmpfs lab-inner "$1" && mount -t tmpfs lab-weird "$2"' sh "$2" "$3"; then
    ok=1; break
  fi
  sleep 0.02
done
[ -n "$ok" ]
: > "$4""#;
    let outer = lab.holder(
        script,
        &[
            run_dir.as_os_str(),
            inner.as_os_str(),
            weird.as_os_str(),
            ready.as_os_str(),
        ],
    );
    assert!(ready.exists(), "unshare --mount=FILE kept failing");
    let outer_ns = mnt_ns(outer).expect("outer ns");
    // The nsfs file's inode is the namespace's id.
    let mut through = format!("/proc/{outer}/root").into_bytes();
    through.extend_from_slice(bytes(&run_dir));
    through.extend_from_slice(b"/ns");
    let inner_ns = std::fs::metadata(OsStr::from_bytes(&through))
        .expect("stat nsfs")
        .ino();
    assert_ne!(inner_ns, outer_ns);

    let mut scanner = Scanner::new();
    let out = scanner.scan(&ScanOptions::default()).expect("scan");
    let snap = &out.snapshot;
    assert!(snap.alive.as_ref().expect("alive").contains(&inner_ns));
    let found = namespace(snap, inner_ns);
    assert!(found.members.is_empty());
    assert_eq!(
        found.source,
        TableSource::Statmount,
        "{:?}",
        out.stats.unread
    );
    assert_eq!(table_reads(&out.stats.tables, inner_ns), 1);
    assert!(out
        .stats
        .tables
        .iter()
        .any(|r| matches!(r, TableRead::Statmount { ns } if *ns == inner_ns)));
    let points: Vec<&[u8]> = found
        .mounts
        .iter()
        .filter(|m| m.fstype == "tmpfs" && m.source.as_bytes().starts_with(b"lab-"))
        .map(|m| m.mount_point.as_bytes())
        .collect();
    assert!(points.contains(&bytes(&inner)), "{points:?}");
    // statmount strings are raw bytes, no escaping to undo.
    assert!(points.contains(&bytes(&weird)), "{points:?}");
    // Its nsfs mount is attached to it, as seen from the outer namespace.
    let mut ns_file = bytes(&run_dir).to_vec();
    ns_file.extend_from_slice(b"/ns");
    assert!(
        found
            .nsfs_mounts
            .iter()
            .any(|m| m.in_ns == outer_ns && m.path.as_bytes() == ns_file),
        "{:?}",
        found.nsfs_mounts
    );
    assert_eq!(scanner.support().statmount, Some(true));

    // Through the fallback order the same namespace is found without the
    // walk (as on 6.11), by its nsfs mount alone.
    let opts = ScanOptions {
        walk_namespaces: false,
        ..ScanOptions::default()
    };
    let out = Scanner::new()
        .scan_namespaces(&[inner_ns], &opts)
        .expect("scan");
    let found = namespace(&out.snapshot, inner_ns);
    assert!(found
        .mounts
        .iter()
        .any(|m| m.mount_point.as_bytes() == bytes(&inner)));
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn processless_namespace_is_read_through_nsenter_without_statmount() {
    // The RHEL/CentOS 7 path: no walk, no statmount. The statmount result
    // of the same namespace is the reference.
    let mut lab = Lab::new("nsenter");
    let run_dir = lab.mkdir(b"run");
    let inner = lab.mkdir(b"inner");
    let ready = lab.path(b"ready");
    let script = r#"
set -e
mount -t tmpfs lab-run "$1"
mount --make-private "$1"
touch "$1/ns"
ok=
for i in $(seq 1 50); do
  if unshare --mount="$1/ns" --propagation private mount -t tmpfs lab-inner "$2"; then ok=1; break; fi
  sleep 0.02
done
[ -n "$ok" ]
: > "$3""#;
    let outer = lab.holder(
        script,
        &[run_dir.as_os_str(), inner.as_os_str(), ready.as_os_str()],
    );
    assert!(ready.exists(), "unshare --mount=FILE kept failing");
    let mut through = format!("/proc/{outer}/root").into_bytes();
    through.extend_from_slice(bytes(&run_dir));
    through.extend_from_slice(b"/ns");
    let inner_ns = std::fs::metadata(OsStr::from_bytes(&through))
        .expect("stat nsfs")
        .ino();

    let reference = Scanner::new()
        .scan_namespaces(&[inner_ns], &ScanOptions::default())
        .expect("scan");
    let mut scanner = Scanner::with_support(Support {
        ns_walk: Some(false),
        statmount: Some(false),
    });
    let opts = ScanOptions {
        walk_namespaces: false,
        ..ScanOptions::default()
    };
    let out = scanner.scan_namespaces(&[inner_ns], &opts).expect("scan");
    assert!(
        out.stats
            .tables
            .iter()
            .any(|r| matches!(r, TableRead::Nsenter { ns, .. } if *ns == inner_ns)),
        "{:?} {:?}",
        out.stats.tables,
        out.stats.unread
    );
    let found = namespace(&out.snapshot, inner_ns);
    assert_eq!(found.source, TableSource::Mountinfo);
    assert_eq!(
        found.mounts,
        namespace(&reference.snapshot, inner_ns).mounts
    );
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn cwd_in_lazily_unmounted_overlay_is_a_pin() {
    let mut lab = Lab::new("pin");
    for d in [&b"lower"[..], b"upper", b"work", b"merged", b"tmp"] {
        lab.mkdir(d);
    }
    std::fs::write(lab.path(b"lower/file"), b"x").expect("write");
    // One holder sits in an overlay, another in a tmpfs; then both mounts
    // are lazily unmounted. Only the overlay counts (tmpfs is excluded).
    let lab_dir = lab.dir.clone();
    let overlay = lab.holder(
        r#"mount -t overlay lab-overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/work" "$1/merged"
mount -t tmpfs lab-tmp "$1/tmp"
cd "$1/merged""#,
        &[lab_dir.as_os_str()],
    );
    let tmp_dir = lab.path(b"tmp");
    let tmp_holder = Command::new("nsenter")
        .args([
            "-t",
            &overlay.to_string(),
            "-m",
            "sh",
            "-c",
            r#"cd "$1" && exec sleep 1000"#,
            "sh",
        ])
        .arg(&tmp_dir)
        .spawn()
        .expect("spawn");
    let tmp_pid = tmp_holder.id();
    lab.holders.push(tmp_holder);
    wait_for("tmp holder", || comm(tmp_pid).as_deref() == Some("sleep"));
    let ns = mnt_ns(overlay).expect("ns");

    let both = move |_: NsId, p: &monitor_model::ProcessInfo| p.pid == overlay || p.pid == tmp_pid;
    let opts = ScanOptions::default().with_devices(both);
    let before = Scanner::new().scan_namespaces(&[ns], &opts).expect("scan");
    let table = &namespace(&before.snapshot, ns).mounts;
    let ovl = table
        .iter()
        .find(|m| m.source.as_bytes() == b"lab-overlay")
        .expect("overlay mounted");
    let ovl_dev = ovl.dev;
    let member = namespace(&before.snapshot, ns)
        .members
        .iter()
        .find(|p| p.pid == overlay)
        .expect("member");
    assert_eq!(member.cwd_dev, Some(ovl_dev));
    assert!(before
        .snapshot
        .pins
        .iter()
        .all(|p| p.process.pid != overlay && p.process.pid != tmp_pid));

    for target in [&b"merged"[..], b"tmp"] {
        run(Command::new("nsenter")
            .args(["-t", &overlay.to_string(), "-m", "umount", "-l"])
            .arg(lab.path(target)));
    }

    let out = Scanner::new().scan(&opts).expect("scan");
    let pins: Vec<_> = out
        .snapshot
        .pins
        .iter()
        .filter(|p| p.process.pid == overlay)
        .collect();
    assert_eq!(pins.len(), 1, "{:?}", out.snapshot.pins);
    let pin = pins[0];
    assert_eq!(pin.dev, ovl_dev);
    assert_eq!(pin.how, PinKind::Cwd);
    assert_eq!(pin.ns, ns);
    assert_eq!(pin.fstype.as_deref(), Some("overlay"));
    assert_eq!(pin.backing_file, None);
    assert!(!pin.link.is_empty());
    assert!(
        out.snapshot.pins.iter().all(|p| p.process.pid != tmp_pid),
        "tmpfs is not a pin"
    );
    assert!(out.snapshot.pins_scanned, "{:?}", out.stats.unread);
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn open_file_on_lazily_unmounted_loop_device_is_a_pin() {
    let mut lab = Lab::new("loop");
    let image = lab.path(b"disk.img");
    let file = std::fs::File::create(&image).expect("image");
    file.set_len(16 << 20).expect("size");
    drop(file);
    let dev = lab.losetup(&image);
    run(Command::new("mkfs.ext4").args(["-q", "-F", &dev]));
    let mnt = lab.mkdir(b"mnt");
    let holder = lab.holder(
        r#"mount "$1" "$2"
echo data > "$2/held"
exec 7< "$2/held""#,
        &[OsStr::new(&dev), mnt.as_os_str()],
    );
    let ns = mnt_ns(holder).expect("ns");
    run(Command::new("nsenter")
        .args(["-t", &holder.to_string(), "-m", "umount", "-l"])
        .arg(&mnt));

    let opts = ScanOptions::default().with_devices(move |_, p| p.pid == holder);
    let out = Scanner::new().scan(&opts).expect("scan");
    let pin = out
        .snapshot
        .pins
        .iter()
        .find(|p| p.process.pid == holder)
        .expect("pin");
    assert_eq!(pin.how, PinKind::Fd(7));
    assert_eq!(pin.ns, ns);
    assert_eq!(pin.dev.major, 7, "loop major");
    assert_eq!(pin.fstype.as_deref(), Some("ext4"));
    assert_eq!(
        pin.backing_file.as_ref().map(PathBytes::as_bytes),
        Some(bytes(&image))
    );
    assert!(pin.link.as_bytes().ends_with(b"/held"), "{:?}", pin.link);
    let member = namespace(&out.snapshot, ns)
        .members
        .iter()
        .find(|p| p.pid == holder)
        .expect("member");
    assert!(member.fd_devs.contains(&Dev {
        major: 7,
        minor: pin.dev.minor
    }));
}

#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn processes_exiting_mid_scan_are_not_errors() {
    let _exclusive = crate::support::exclusive();
    let stop = Arc::new(AtomicBool::new(false));
    // Churn: short-lived processes, each in a new namespace of its own.
    let churners: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut spawned = 0;
                while !stop.load(Ordering::Relaxed) {
                    let kids: Vec<Child> = (0..8)
                        .filter_map(|_| {
                            Command::new("unshare")
                                .args(["--mount", "sh", "-c", "sleep 0.0$$"])
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .spawn()
                                .ok()
                        })
                        .collect();
                    spawned += kids.len();
                    for mut k in kids {
                        let _ = k.wait();
                    }
                }
                spawned
            })
        })
        .collect();

    let mut scanner = Scanner::new();
    let opts = ScanOptions::default().with_all_devices();
    let mut vanished = 0;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut scans = 0;
    while Instant::now() < deadline {
        let out = scanner
            .scan(&opts)
            .expect("a scan never fails because processes exit");
        vanished += out.stats.vanished;
        scans += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let spawned: usize = churners.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    eprintln!(
        "{scans} scans while {spawned} processes came and went; {vanished} vanished mid-scan"
    );
    assert!(scans > 3 && spawned > 0);
}
