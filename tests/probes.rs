//! The eBPF probes against the running kernel: load and attach them, make
//! real namespaces and mounts (util-linux's `unshare`, `mount`, `umount`, and
//! raw `clone`/`fork`), then check what the probes report: pids, comm, mount
//! namespaces before and after (against `readlink /proc/PID/ns/mnt`), path
//! bytes, return values, and the kernel-side filters.
//!
//! Every test loads eBPF, so needs root (or CAP_BPF+CAP_PERFMON). Each one
//! picks its own events out by pid: other tests (and other programs) run at
//! the same time.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use monitor_model::{Call, Input, ProcessEventKind, SyscallEvent};
use mountleak::ebpf::{ProbeMode, ProbeOptions, Probes};

const CLONE_NEWNS: u64 = libc::CLONE_NEWNS as u64;
const EBUSY: i64 = libc::EBUSY as i64;

fn load(mode: ProbeMode) -> Probes {
    Probes::load(ProbeOptions {
        mode,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("loading the probes ({mode:?}): {e}"))
}

/// The mount namespace of `pid` (`self` works) as `readlink` shows it.
fn mnt_ns(pid: &str) -> u64 {
    let link = fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("readlink ns/mnt");
    parse_ns(&link.to_string_lossy())
}

/// `mnt:[4026531841]` → 4026531841.
fn parse_ns(link: &str) -> u64 {
    link.trim()
        .strip_prefix("mnt:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a mount namespace link: {link:?}"))
}

/// Drains the probes until `done` holds for what arrived, or 5 s pass.
fn collect(probes: &mut Probes, done: impl Fn(&[Input]) -> bool) -> Vec<Input> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all = Vec::new();
    loop {
        all.extend(probes.drain().expect("drain"));
        if done(&all) || Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn syscalls(inputs: &[Input]) -> impl Iterator<Item = &SyscallEvent> {
    inputs.iter().filter_map(|i| match i {
        Input::Syscall(e) => Some(e),
        _ => None,
    })
}

/// A scratch directory removed on drop (after lazily unmounting anything a
/// failed test left on it).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mountleak-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.0.join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A raw `clone(flags | SIGCHLD)` with no new stack: fork semantics, but
/// without libc's fork handlers, so the child of this multi-threaded test
/// process may only make raw syscalls before it exits.
fn raw_clone(flags: u64) -> libc::pid_t {
    // SAFETY: x86_64 clone(flags, newsp = 0, parent_tid, child_tid, tls):
    // the child runs on a copy of this stack, as after fork().
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0) };
    assert!(pid >= 0, "clone: {}", std::io::Error::last_os_error());
    pid as libc::pid_t
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child.
    let got = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(got, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

fn pipe() -> [libc::c_int; 2] {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    fds
}

/// `unshare -m` then a tmpfs mount on a path with a space, a umount that
/// fails with EBUSY (the shell's cwd is inside), and one that succeeds.
#[test]
#[ignore = "needs root: loads eBPF"]
fn syscall_probes_report_unshare_mount_and_umount() {
    // Its namespaces must not show up in another test's scan.
    let _exclusive = crate::support::exclusive();
    let mut probes = load(ProbeMode::Syscalls);
    assert_eq!(
        probes.mode(),
        ProbeMode::Syscalls,
        "tracefs is mounted here"
    );
    let before = probes.counters().expect("counters");
    let scratch = Scratch::new("probes-unshare");
    let target = scratch.0.join("a dir");
    fs::create_dir(&target).unwrap();
    // `unshare` execs the shell, so `$$` is the pid that called unshare(2).
    // `& ... $!` records each command's pid before waiting for it.
    let script = r#"
        echo $$ > "$OUT/sh.pid"
        readlink /proc/self/ns/mnt > "$OUT/ns"
        mount -t tmpfs probe-src "$T" & echo $! > "$OUT/mount.pid"; wait $!
        cd "$T"
        umount "$T" 2>/dev/null & echo $! > "$OUT/busy.pid"; wait $!
        cd /
        umount "$T" & echo $! > "$OUT/umount.pid"; wait $!
    "#;
    let status = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("OUT", &scratch.0)
        .env("T", &target)
        .status()
        .expect("running unshare");
    assert!(status.success(), "the unshare script failed: {status}");

    let host_ns = mnt_ns("self");
    let child_ns = parse_ns(&scratch.read("ns"));
    let pid = |file: &str| -> u32 { scratch.read(file).trim().parse().unwrap() };
    let (sh, mount, busy, umount) = (
        pid("sh.pid"),
        pid("mount.pid"),
        pid("busy.pid"),
        pid("umount.pid"),
    );
    assert_ne!(host_ns, child_ns);

    let inputs = collect(&mut probes, |all| {
        syscalls(all).any(|e| e.task.tgid == umount)
    });
    let ours: Vec<&SyscallEvent> = syscalls(&inputs)
        .filter(|e| [sh, mount, busy, umount].contains(&e.task.tgid))
        .collect();

    let unshare = ours
        .iter()
        .find(|e| matches!(e.call, Call::Unshare { .. }))
        .unwrap_or_else(|| panic!("no unshare event among {ours:#?}"));
    let Call::Unshare { flags } = unshare.call else {
        unreachable!()
    };
    assert_eq!(
        (unshare.task.tgid, unshare.task.comm.as_str()),
        (sh, "unshare")
    );
    assert_eq!(
        (unshare.ns, unshare.ns_after, unshare.ret),
        (host_ns, child_ns, 0)
    );
    assert_ne!(flags & CLONE_NEWNS, 0);
    assert!(unshare.start <= unshare.end);

    let mounted = ours
        .iter()
        .find(|e| e.task.tgid == mount)
        .expect("no mount event");
    let Call::Mount {
        source,
        target: to,
        fstype,
        ..
    } = &mounted.call
    else {
        panic!("not a mount: {mounted:?}")
    };
    assert_eq!(mounted.task.comm, "mount");
    assert_eq!(
        (mounted.ns, mounted.ns_after, mounted.ret),
        (child_ns, child_ns, 0)
    );
    assert_eq!(to.path.as_bytes(), target.as_os_str().as_encoded_bytes());
    assert!(!to.truncated);
    assert_eq!(
        (source.path.as_bytes(), fstype.as_str()),
        (&b"probe-src"[..], "tmpfs")
    );

    let umount_of = |pid: u32| {
        let e = ours
            .iter()
            .find(|e| e.task.tgid == pid)
            .expect("no umount event");
        let Call::Umount { target: t, .. } = &e.call else {
            panic!("not a umount: {e:?}")
        };
        assert_eq!(t.path.as_bytes(), target.as_os_str().as_encoded_bytes());
        assert_eq!((e.task.comm.as_str(), e.ns), ("umount", child_ns));
        (e.ret, e.end)
    };
    let (busy_ret, busy_end) = umount_of(busy);
    let (ok_ret, ok_end) = umount_of(umount);
    assert_eq!(
        busy_ret, -EBUSY,
        "umount with the cwd inside must fail with EBUSY"
    );
    assert_eq!(ok_ret, 0);
    // Ordered by end time, as the model needs.
    assert!(unshare.end < mounted.end && mounted.end < busy_end && busy_end < ok_end);

    let after = probes.counters().expect("counters");
    assert_eq!(after.decode_errors, before.decode_errors);
}

/// clone(CLONE_NEWNS) shows up twice (the parent's clone exit and
/// task_newtask with the child's new namespace); a plain fork not at all.
#[test]
#[ignore = "needs root: loads eBPF"]
fn clone_newns_is_reported_and_plain_fork_is_filtered() {
    // Its namespaces must not show up in another test's scan.
    let _exclusive = crate::support::exclusive();
    let mut probes = load(ProbeMode::Syscalls);
    let me = std::process::id();
    let host_ns = mnt_ns("self");

    let child = raw_clone(CLONE_NEWNS);
    if child == 0 {
        // SAFETY: raw syscalls only (see raw_clone): wait for SIGKILL.
        unsafe {
            libc::pause();
            libc::_exit(0)
        }
    }
    let child_ns = mnt_ns(&child.to_string());
    // SAFETY: our own child.
    unsafe { libc::kill(child, libc::SIGKILL) };
    wait(child);

    let plain = raw_clone(0);
    if plain == 0 {
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    }
    wait(plain);
    let (child, plain) = (child as u32, plain as u32);
    assert_ne!(child_ns, host_ns);

    let inputs = collect(&mut probes, |all| {
        syscalls(all).any(|e| matches!(e.call, Call::NewTask { child: c, .. } if c == child))
            && syscalls(all)
                .any(|e| matches!(e.call, Call::Clone { .. }) && e.ret == i64::from(child))
    });
    let ours: Vec<&SyscallEvent> = syscalls(&inputs).filter(|e| e.task.tgid == me).collect();

    let new_task = ours
        .iter()
        .find(|e| matches!(e.call, Call::NewTask { child: c, .. } if c == child))
        .unwrap_or_else(|| panic!("no task_newtask for {child} among {ours:#?}"));
    let Call::NewTask {
        child_ns: reported,
        flags,
        ..
    } = new_task.call
    else {
        unreachable!()
    };
    assert_eq!(
        reported, child_ns,
        "task_newtask's child namespace vs readlink"
    );
    assert_ne!(flags & CLONE_NEWNS, 0);
    assert_eq!(new_task.ns, host_ns);

    let clone = ours
        .iter()
        .find(|e| matches!(e.call, Call::Clone { .. }) && e.ret == i64::from(child))
        .expect("no clone exit for the CLONE_NEWNS child");
    let Call::Clone { flags, clone3 } = clone.call else {
        unreachable!()
    };
    assert!(!clone3);
    assert_ne!(flags & CLONE_NEWNS, 0);
    assert_eq!(
        (clone.ns, clone.ns_after),
        (host_ns, host_ns),
        "the parent stays put"
    );

    let leaked = ours.iter().find(|e| match e.call {
        Call::NewTask { child: c, .. } => c == plain,
        Call::Clone { .. } => e.ret == i64::from(plain),
        _ => false,
    });
    assert!(
        leaked.is_none(),
        "a fork without CLONE_NEWNS got through: {leaked:?}"
    );
}

/// unlinkat(AT_REMOVEDIR) relative to a dfd is reported with the path
/// resolved through the fd; a file unlink is filtered out in the kernel.
#[test]
#[ignore = "needs root: loads eBPF"]
fn rmdir_through_a_dfd_is_resolved_and_file_unlinks_are_filtered() {
    // Its namespaces must not show up in another test's scan.
    let _exclusive = crate::support::exclusive();
    let mut probes = load(ProbeMode::Syscalls);
    let me = std::process::id();
    let scratch = Scratch::new("probes-rmdir");
    fs::create_dir(scratch.0.join("gone dir")).unwrap();
    fs::write(scratch.0.join("file"), b"").unwrap();
    // Kept open while draining: resolution reads /proc/self/fd/<fd>.
    let dir = fs::File::open(&scratch.0).unwrap();
    let (sub, file) = (
        CString::new("gone dir").unwrap(),
        CString::new("file").unwrap(),
    );
    // SAFETY: valid fd and C strings.
    unsafe {
        assert_eq!(libc::unlinkat(dir.as_raw_fd(), file.as_ptr(), 0), 0);
        assert_eq!(
            libc::unlinkat(dir.as_raw_fd(), sub.as_ptr(), libc::AT_REMOVEDIR),
            0
        );
    }
    let inputs = collect(&mut probes, |all| {
        syscalls(all).any(|e| e.task.tgid == me && matches!(e.call, Call::Rmdir { .. }))
    });
    let removed: Vec<&SyscallEvent> = syscalls(&inputs)
        .filter(|e| e.task.tgid == me && matches!(e.call, Call::Rmdir { .. }))
        .collect();
    assert_eq!(
        removed.len(),
        1,
        "one directory removal, no file unlink: {removed:#?}"
    );
    let Call::Rmdir { path } = &removed[0].call else {
        unreachable!()
    };
    let expected = scratch.0.join("gone dir");
    assert_eq!(
        path.path.as_bytes(),
        expected.as_os_str().as_encoded_bytes()
    );
    assert_eq!(removed[0].ret, 0);
}

/// Lean mode: only the three BTF tracepoints, and forks and exits reported
/// for a watched namespace only.
#[test]
#[ignore = "needs root: loads eBPF"]
fn lean_mode_attaches_btf_programs_only_and_reports_watched_forks() {
    // Its namespaces must not show up in another test's scan.
    let _exclusive = crate::support::exclusive();
    let mut probes = load(ProbeMode::Lean);
    assert_eq!(probes.mode(), ProbeMode::Lean);
    let mut attached = probes.attached().to_vec();
    attached.sort();
    assert_eq!(
        attached,
        ["sched_process_exit", "sched_process_fork", "task_newtask"]
    );

    // A child in its own namespace waits for a byte, forks a grandchild that
    // exits with 7, reports the grandchild's pid, and exits.
    let (go, report) = (pipe(), pipe());
    let child = raw_clone(CLONE_NEWNS);
    if child == 0 {
        // SAFETY: raw syscalls only (see raw_clone).
        unsafe {
            let mut byte = 0u8;
            libc::read(go[0], (&raw mut byte).cast(), 1);
            let grandchild =
                libc::syscall(libc::SYS_clone, libc::SIGCHLD as u64, 0, 0, 0, 0) as i32;
            if grandchild == 0 {
                libc::_exit(7);
            }
            libc::write(report[1], (&raw const grandchild).cast(), 4);
            let mut status = 0;
            libc::waitpid(grandchild, &mut status, 0);
            libc::_exit(0)
        }
    }
    let ns = mnt_ns(&child.to_string());
    probes.watch(ns).expect("watch");
    // SAFETY: writing one byte to our pipe, then reading four.
    let grandchild = unsafe {
        libc::write(go[1], [1u8].as_ptr().cast(), 1);
        let mut pid = 0i32;
        assert_eq!(libc::read(report[0], (&raw mut pid).cast(), 4), 4);
        pid as u32
    };
    wait(child);
    let child = child as u32;

    let exited = |all: &[Input], pid: u32| {
        all.iter().any(|i| {
            matches!(i, Input::Process(p) if matches!(p.kind, ProcessEventKind::Exit { pid: x } if x == pid))
        })
    };
    let inputs = collect(&mut probes, |all| {
        exited(all, child) && exited(all, grandchild)
    });
    let process: Vec<_> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Process(p) if p.ns == ns => Some(p),
            _ => None,
        })
        .collect();
    let forked = process
        .iter()
        .find(|p| matches!(p.kind, ProcessEventKind::Fork { child: c, .. } if c == grandchild))
        .unwrap_or_else(|| panic!("no fork of {grandchild} among {process:#?}"));
    let ProcessEventKind::Fork { parent, .. } = &forked.kind else {
        unreachable!()
    };
    assert_eq!(*parent, child);
    assert!(
        exited(&inputs, grandchild) && exited(&inputs, child),
        "exits: {process:#?}"
    );
    // The namespace was born by clone: task_newtask saw it even in Lean mode.
    assert!(syscalls(&inputs)
        .any(|e| matches!(e.call, Call::NewTask { child: c, child_ns, .. } if c == child && child_ns == ns)));
    assert!(
        syscalls(&inputs).all(|e| matches!(e.call, Call::NewTask { .. })),
        "Lean mode must not report syscalls"
    );
    probes.unwatch(ns).expect("unwatch");
    probes.unwatch(ns).expect("unwatching twice is fine");
}

const NO_TRACEFS: &str = "MOUNTLEAK_PROBES_TEST_NO_TRACEFS";

/// Without tracefs, `Syscalls` degrades to `Lean` instead of failing. Runs
/// this test binary again in a private mount namespace with tracefs
/// unmounted (aya caches where tracefs is per process).
#[test]
#[ignore = "needs root: loads eBPF"]
fn syscalls_mode_degrades_to_lean_without_tracefs() {
    const NAME: &str = "probes::syscalls_mode_degrades_to_lean_without_tracefs";
    if std::env::var_os(NO_TRACEFS).is_some() {
        assert!(
            !Path::new("/sys/kernel/tracing/events").exists(),
            "tracefs still mounted"
        );
        let probes = load(ProbeMode::Syscalls);
        assert_eq!(probes.mode(), ProbeMode::Lean);
        assert!(
            probes.attached().iter().all(|p| !p.starts_with("sys_")),
            "{:?}",
            probes.attached()
        );
        return;
    }
    // Its namespaces must not show up in another test's scan. (Only the
    // outer run locks: the inner one runs while it holds the lock.)
    let _exclusive = crate::support::exclusive();
    let exe = std::env::current_exe().unwrap();
    let unmount = "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; exec \"$0\" \"$@\"";
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", unmount])
        .arg(exe)
        .args([NAME, "--exact", "--include-ignored", "--test-threads=1"])
        .env(NO_TRACEFS, "1")
        .output()
        .expect("re-running the test without tracefs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "inner run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A ring buffer nobody reads fills up, and the kernel counts every record
/// it could not reserve: what the daemon turns into `Input::Lost`. One page
/// (the smallest size) holds about 39 `task_newtask` records.
#[test]
#[ignore = "needs root: loads eBPF"]
fn a_full_ring_buffer_is_counted() {
    // Its namespaces must not show up in another test's scan.
    let _exclusive = crate::support::exclusive();
    let options = ProbeOptions {
        mode: ProbeMode::Lean,
        ringbuf_bytes: 4096,
        ..Default::default()
    };
    let mut probes = Probes::load(options).expect("loading with a one-page ring buffer");
    let before = probes.counters().expect("counters");
    const CLONES: usize = 100;
    for _ in 0..CLONES {
        let child = raw_clone(CLONE_NEWNS);
        if child == 0 {
            // SAFETY: raw syscalls only (see raw_clone).
            unsafe { libc::_exit(0) }
        }
        wait(child);
    }
    let after = probes.counters().expect("counters");
    let kept = syscalls(&probes.drain().expect("drain"))
        .filter(|e| matches!(e.call, Call::NewTask { .. }))
        .count();
    let lost = after.ringbuf_full - before.ringbuf_full;
    assert!(kept < CLONES && lost > 0, "kept {kept}, lost {lost}");
    assert!(
        kept as u64 + lost >= CLONES as u64,
        "kept {kept} + lost {lost} < {CLONES}"
    );
}

/// `CLOCK_BOOTTIME` in ns: the clock of the records' `start` and `end`.
fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into `ts`.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The reader task (`Probes::events`) with batched wake-ups: the programs
/// wake it at most about once per `WAKEUP_INTERVAL_NS` for ordinary records
/// and it drains again an interval after each wake-up, so a record submitted
/// without a wake-up is still read, also when nothing follows it (the last
/// umount here comes right after a forced wake-up and is the last event of
/// the test). Prints how long records waited (run with --nocapture to see):
/// BENCHMARKS.md quotes it.
#[test]
#[ignore = "needs root: loads eBPF"]
fn the_reader_reads_every_record_soon_with_few_wake_ups() {
    let _exclusive = crate::support::exclusive();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut probes = load(ProbeMode::Syscalls);
    let mut batches = runtime.block_on(async { probes.events().expect("events") });
    let scratch = Scratch::new("probes-batch");
    let target = scratch.0.join("m");
    fs::create_dir(&target).unwrap();
    const ROUNDS: usize = 100;
    // ROUNDS mount/umount pairs back to back (a fork and exec each, about a
    // millisecond apart), a pause, then a mount, a umount failing with
    // EBUSY (urgent) and a last umount right after it.
    let script = r#"
        i=0
        while [ $i -lt "$N" ]; do
            mount -t tmpfs batch-src "$T"; umount "$T"; i=$((i+1))
        done
        sleep 0.1
        mount -t tmpfs batch-src "$T"
        cd "$T"
        umount "$T" 2>/dev/null
        cd /
        umount "$T"
    "#;
    // Runs while the batches are read, so a record's wait ends on arrival.
    let mut script = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("T", &target)
        .env("N", ROUNDS.to_string())
        .spawn()
        .expect("running unshare");
    let wanted = 2 * ROUNDS + 3;

    let ours = |e: &SyscallEvent| match &e.call {
        Call::Mount { target: t, .. } | Call::Umount { target: t, .. } => {
            t.path.as_bytes() == target.as_os_str().as_encoded_bytes()
        }
        _ => false,
    };
    // (end, waited ns, ret) of each of ours, and how many batches held one.
    let mut seen: Vec<(u64, u64, i64)> = Vec::new();
    let mut with_ours = 0;
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < wanted {
            let Ok(Some(batch)) = tokio::time::timeout_at(deadline, batches.recv()).await else {
                break;
            };
            let now = boottime_ns();
            let before = seen.len();
            seen.extend(
                syscalls(&batch)
                    .filter(|e| ours(e))
                    .map(|e| (e.end, now.saturating_sub(e.end), e.ret)),
            );
            with_ours += usize::from(seen.len() > before);
        }
    });
    let status = script.wait().expect("waiting for unshare");
    assert!(status.success(), "the unshare script failed: {status}");
    assert_eq!(
        seen.len(),
        wanted,
        "records read within 10 s (the last ones follow a forced wake-up and nothing follows them)"
    );
    seen.sort_unstable();
    let busy = seen
        .iter()
        .find(|s| s.2 == -EBUSY)
        .expect("the umount that failed with EBUSY");
    let mut waited: Vec<u64> = seen.iter().map(|s| s.1).collect();
    waited.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    let span = seen[2 * ROUNDS - 1].0 - seen[0].0;
    println!(
        "batched wake-ups: {} records ({} in a {:.0} ms burst) in {with_ours} batches; \
         waited median {:.2} ms, p90 {:.2} ms, max {:.2} ms; the EBUSY umount {:.2} ms, \
         the last umount {:.2} ms",
        seen.len(),
        2 * ROUNDS,
        ms(span),
        ms(waited[waited.len() / 2]),
        ms(waited[waited.len() * 9 / 10]),
        ms(waited[waited.len() - 1]),
        ms(busy.1),
        ms(seen[seen.len() - 1].1),
    );
    // Loose: a busy machine delays the reader, but not by a second.
    assert!(
        waited[waited.len() - 1] < 1_000_000_000,
        "a record waited {:.1} ms",
        ms(waited[waited.len() - 1])
    );
}
