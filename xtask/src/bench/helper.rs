//! The programs the benches run in processes of their own, started as
//! `xtask bench __<name> ARGS` (the xtask binary re-executing itself): the
//! loops whose CPU time is the measurement, the fixture that owns the scan
//! bench's namespaces, and the namespace churn of the memory bench.
//!
//! Each runs single-threaded, so fork(2) is safe anywhere in it, and talks
//! to the bench through one line of `key=value` fields on stdout. Children
//! get PR_SET_PDEATHSIG, so killing a helper ends everything it started.
//! std, anyhow and libc only.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// Runs helper `name` with its arguments.
pub fn main(name: &str, args: &[String]) -> Result<()> {
    match name {
        "__mount-loop" => mount_loop(args),
        "__getppid" => getppid_loop(args),
        "__fixture" => fixture(args),
        "__churn" => churn(args),
        other => bail!("unknown bench helper {other}"),
    }
}

/// `--key value` pairs; every key must be known to the caller.
struct Args<'a>(&'a [String]);

impl Args<'_> {
    fn get(&self, key: &str) -> Result<&str> {
        let flag = format!("--{key}");
        self.0
            .iter()
            .position(|a| *a == flag)
            .and_then(|at| self.0.get(at + 1))
            .map(String::as_str)
            .with_context(|| format!("missing {flag} VALUE"))
    }

    fn num(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.parse()
            .with_context(|| format!("--{key} {v:?} is not a number"))
    }
}

fn os_check(rc: libc::c_int, what: impl FnOnce() -> String) -> Result<()> {
    if rc == -1 {
        return Err(io::Error::last_os_error()).with_context(what);
    }
    Ok(())
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("bench paths hold no NUL byte")
}

/// mount(2) with an optional data string.
fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<()> {
    let s = CString::new(source)?;
    let t = c_path(target);
    let f = CString::new(fstype)?;
    let d = CString::new(data)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    os_check(rc, || {
        format!("mount -t {fstype} {source} {}", target.display())
    })
}

/// A new mount namespace for this process whose mounts are all private, so
/// nothing mounted from here on reaches the namespace we came from (what
/// `unshare --mount --propagation private` does).
fn private_namespace() -> Result<()> {
    // SAFETY: unshare has no memory preconditions; this process is single-threaded.
    os_check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, || {
        "unshare(CLONE_NEWNS)".into()
    })?;
    let root = CString::new("/")?;
    // SAFETY: NULL source/fstype/data are allowed for a propagation change.
    let rc = unsafe {
        libc::mount(
            ptr::null(),
            root.as_ptr(),
            ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            ptr::null(),
        )
    };
    os_check(rc, || "mount --make-rprivate /".into())
}

/// (user, system) CPU time in microseconds, of this process or of its
/// waited-for children.
fn rusage(who: libc::c_int) -> (u64, u64) {
    let ru = getrusage(who);
    let us = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

fn getrusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: getrusage fills the struct we pass; all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    ru
}

fn exited_ok(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// `__mount-loop --iterations N --dir DIR`: in a private mount namespace of
/// its own, N times: mount a tmpfs on DIR, umount it, fork a child that
/// unshares a new mount namespace (a copy of ours) and exits. Prints the
/// CPU time of the loop: this process's and its children's, user and
/// system, from getrusage(2).
fn mount_loop(args: &[String]) -> Result<()> {
    let args = Args(args);
    let n = args.num("iterations")?;
    let dir = PathBuf::from(args.get("dir")?);
    private_namespace()?;
    let target = c_path(&dir);
    let (source, fstype) = (CString::new("mountleak-bench")?, CString::new("tmpfs")?);
    let (u0, s0) = rusage(libc::RUSAGE_SELF);
    let (cu0, cs0) = rusage(libc::RUSAGE_CHILDREN);
    let switches0 = getrusage(libc::RUSAGE_SELF);
    let started = Instant::now();
    for i in 0..n {
        // SAFETY: NUL-terminated strings that outlive the calls.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                ptr::null(),
            )
        };
        os_check(rc, || {
            format!("iteration {i}: mount tmpfs {}", dir.display())
        })?;
        // SAFETY: as above.
        let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
        os_check(rc, || format!("iteration {i}: umount {}", dir.display()))?;
        // SAFETY: single-threaded; the child only makes raw syscalls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child: unshare and _exit are async-signal-safe.
            unsafe {
                let rc = libc::unshare(libc::CLONE_NEWNS);
                libc::_exit(if rc == 0 { 0 } else { 1 });
            }
        }
        os_check(pid, || format!("iteration {i}: fork"))?;
        let mut status = 0;
        // SAFETY: waits for the child we just forked.
        os_check(unsafe { libc::waitpid(pid, &mut status, 0) }, || {
            format!("iteration {i}: waitpid")
        })?;
        ensure!(
            exited_ok(status),
            "iteration {i}: the child's unshare(CLONE_NEWNS) failed"
        );
    }
    let wall = started.elapsed();
    let (u1, s1) = rusage(libc::RUSAGE_SELF);
    let (cu1, cs1) = rusage(libc::RUSAGE_CHILDREN);
    let switches1 = getrusage(libc::RUSAGE_SELF);
    // Involuntary switches: the loop was preempted (by a tracer's reader
    // waking up on its CPU, for one). Voluntary: it blocked (waitpid, and
    // the RCU grace periods that umount and namespace teardown wait for).
    println!(
        "iterations={n} wall_us={} user_us={} sys_us={} child_user_us={} child_sys_us={} \
         nvcsw={} nivcsw={}",
        wall.as_micros(),
        u1 - u0,
        s1 - s0,
        cu1 - cu0,
        cs1 - cs0,
        switches1.ru_nvcsw - switches0.ru_nvcsw,
        switches1.ru_nivcsw - switches0.ru_nivcsw,
    );
    Ok(())
}

/// `__getppid --calls N --cpu C`: pinned to CPU C (what `taskset -c C`
/// does, done here so the helper stays a direct child), N getppid(2) system
/// calls, the cheapest one there is, so the fixed cost of the syscall path is
/// all that is measured. Prints wall time and CPU time.
fn getppid_loop(args: &[String]) -> Result<()> {
    let args = Args(args);
    let n = args.num("calls")?;
    let cpu = args.num("cpu")? as usize;
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity get a pointer to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        os_check(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            || format!("pin to CPU {cpu}"),
        )?;
    }
    let (u0, s0) = rusage(libc::RUSAGE_SELF);
    let started = Instant::now();
    for _ in 0..n {
        // The raw syscall: glibc does not cache getppid, but be explicit.
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let wall = started.elapsed();
    let (u1, s1) = rusage(libc::RUSAGE_SELF);
    println!(
        "calls={n} wall_ns={} user_us={} sys_us={}",
        wall.as_nanos(),
        u1 - u0,
        s1 - s0
    );
    Ok(())
}

/// Waits until `count` bytes arrive on `fd` (each settled process writes
/// one), for at most `timeout`.
fn await_bytes(fd: &OwnedFd, count: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    let mut buf = [0u8; 64];
    while got < count {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "only {got} of {count} processes settled in {timeout:?}"
        );
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if rc <= 0 {
            continue;
        }
        let want = (count - got).min(buf.len());
        // SAFETY: reads into our buffer, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
        os_check(n as libc::c_int, || "read the settle pipe".into())?;
        got += n as usize;
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    os_check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        || "pipe2".into(),
    )?;
    // SAFETY: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In a freshly forked child: die with the parent, and check the parent
/// did not die before the prctl took effect.
///
/// # Safety
/// Only in a child of a single-threaded process, right after fork.
unsafe fn child_dies_with_parent(parent: libc::pid_t) {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    if libc::getppid() != parent {
        libc::_exit(3);
    }
}

/// Sleeps until killed.
///
/// # Safety
/// As [`child_dies_with_parent`].
unsafe fn sleep_forever() -> ! {
    loop {
        libc::pause();
    }
}

/// Forks one holder: a process in a new mount namespace (a copy of ours,
/// private since all our mounts are) plus `per - 1` more processes in the
/// same namespace, each writing one byte to `settled` when it is there. The
/// holder leads a process group of its own so that one kill ends all `per`.
fn fork_holder(per: u64, settled: &OwnedFd) -> Result<libc::pid_t> {
    // SAFETY: single-threaded; the child only makes raw syscalls.
    let me = unsafe { libc::getpid() };
    let pid = unsafe { libc::fork() };
    os_check(pid, || "fork a holder".into())?;
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: in the child of a single-threaded process; only raw syscalls.
    unsafe {
        child_dies_with_parent(me);
        libc::setpgid(0, 0);
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            libc::_exit(1);
        }
        let holder = libc::getpid();
        for _ in 1..per {
            if libc::fork() == 0 {
                child_dies_with_parent(holder);
                libc::write(settled.as_raw_fd(), b"x".as_ptr().cast(), 1);
                sleep_forever();
            }
        }
        libc::write(settled.as_raw_fd(), b"x".as_ptr().cast(), 1);
        sleep_forever();
    }
}

/// What the fixture does with its container overlay.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overlay {
    /// None at all.
    None,
    /// Mounted, and stays mounted in the fixture's host namespace.
    Keep,
    /// Mounted, copied into the first holder, then unmounted in the host:
    /// the first holder keeps the only copy (the leak a field report finds
    /// with grep).
    Leak,
}

/// `__fixture --scratch DIR --mounts M --holders H --per P --overlay
/// none|keep|leak --overlay-id ID`: becomes the fixture's host, a private
/// mount namespace with M tmpfs mounts under DIR (itself a tmpfs) and, unless
/// `none`, a tmpfs on /var/lib/docker holding a Docker-style overlay at
/// /var/lib/docker/overlay2/ID/merged; then H holder namespaces of P
/// sleeping processes each. Prints `ready ...`, then holds everything until
/// stdin closes, then kills and reaps every process it started and exits.
fn fixture(args: &[String]) -> Result<()> {
    let args = Args(args);
    let scratch = PathBuf::from(args.get("scratch")?);
    let mounts = args.num("mounts")?;
    let holders = args.num("holders")?;
    let per = args.num("per")?.max(1);
    let overlay = match args.get("overlay")? {
        "none" => Overlay::None,
        "keep" => Overlay::Keep,
        "leak" => Overlay::Leak,
        other => bail!("--overlay {other}: none, keep or leak"),
    };
    let id = args.get("overlay-id")?;
    ensure!(
        overlay != Overlay::Leak || holders > 0,
        "--overlay leak needs a holder to keep the copy"
    );
    let started = Instant::now();
    // Orphans of dying holders come back to us, and we reap them.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    private_namespace()?;

    mount("mountleak-bench", &scratch, "tmpfs", 0, "mode=0755")?;
    for i in 0..mounts {
        let dir = scratch.join(format!("m{i}"));
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        mount("mountleak-bench", &dir, "tmpfs", 0, "size=64k")?;
    }
    let merged = Path::new("/var/lib/docker/overlay2")
        .join(id)
        .join("merged");
    if overlay != Overlay::None {
        mount(
            "mountleak-bench",
            Path::new("/var/lib/docker"),
            "tmpfs",
            0,
            "mode=0711",
        )?;
        let base = merged.parent().expect("merged has a parent");
        for sub in ["lower", "upper", "work", "merged"] {
            fs::create_dir_all(base.join(sub))?;
        }
        fs::write(base.join("lower/hello"), "hello\n")?;
        let data = format!(
            "lowerdir={b}/lower,upperdir={b}/upper,workdir={b}/work",
            b = base.display()
        );
        mount("overlay", &merged, "overlay", 0, &data)?;
    }

    let (settled_r, settled_w) = pipe()?;
    let mut pids = Vec::new();
    for h in 0..holders {
        pids.push(fork_holder(per, &settled_w)?);
        await_bytes(&settled_r, per as usize, Duration::from_secs(20))
            .with_context(|| format!("holder {h}"))?;
        if h == 0 && overlay == Overlay::Leak {
            let target = c_path(&merged);
            // SAFETY: a NUL-terminated path.
            os_check(unsafe { libc::umount2(target.as_ptr(), 0) }, || {
                format!("umount {}", merged.display())
            })?;
        }
    }
    let own_ns = super::sys::mnt_ns(std::process::id())?;
    let mut listed = Vec::new();
    for &pid in &pids {
        let ns = super::sys::mnt_ns(pid as u32)?;
        ensure!(
            ns != own_ns,
            "holder {pid} did not get a namespace of its own"
        );
        listed.push(format!("{pid}:{ns}"));
    }
    println!(
        "ready host_pid={} host_ns={own_ns} overlay={} setup_ms={} holders={}",
        std::process::id(),
        if overlay == Overlay::None {
            "-".to_owned()
        } else {
            merged.display().to_string()
        },
        started.elapsed().as_millis(),
        if listed.is_empty() {
            "-".to_owned()
        } else {
            listed.join(",")
        }
    );
    io::stdout().flush()?;

    // Hold until the bench closes our stdin (or dies: then PDEATHSIG).
    let mut sink = Vec::new();
    let _ = io::stdin().read_to_end(&mut sink);
    for &pid in &pids {
        // SAFETY: kill(2) on the process group each holder leads.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    reap_all();
    Ok(())
}

/// Reaps every child (including orphans handed to us as subreaper) until
/// none is left.
fn reap_all() -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    loop {
        let mut status = 0;
        // SAFETY: waitpid fills status.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid > 0 {
            if exited_ok(status) {
                ok += 1;
            } else {
                failed += 1;
            }
            continue;
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return (ok, failed);
    }
}

/// `__churn --target PID --count N --hold-every K --hold-ms MS --pace-us US`:
/// N short-lived mount namespaces, one forked child each that unshares and
/// exits. Every K-th child first enters the mount namespace of PID (the
/// fixture's host, with a container overlay mounted), so its copy holds the
/// overlay, and lives MS milliseconds, long enough to be seen and tracked.
/// Forks one child every US microseconds. Prints counts and wall time.
fn churn(args: &[String]) -> Result<()> {
    let args = Args(args);
    let target = args.num("target")?;
    let count = args.num("count")?;
    let every = args.num("hold-every")?.max(1);
    let hold = Duration::from_millis(args.num("hold-ms")?);
    let pace = Duration::from_micros(args.num("pace-us")?);
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let ns_file = fs::File::open(format!("/proc/{target}/ns/mnt"))
        .with_context(|| format!("open the mount namespace of pid {target}"))?;
    let ns_fd = ns_file.as_raw_fd();
    let hold_ts = libc::timespec {
        tv_sec: hold.as_secs() as libc::time_t,
        tv_nsec: hold.subsec_nanos() as libc::c_long,
    };
    let started = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    for i in 0..count {
        // SAFETY: single-threaded; the child only makes raw syscalls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child; raw syscalls only.
            unsafe {
                child_dies_with_parent(me);
                if i % every == 0 {
                    if libc::setns(ns_fd, libc::CLONE_NEWNS) != 0 {
                        libc::_exit(2);
                    }
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        libc::_exit(1);
                    }
                    libc::nanosleep(&hold_ts, ptr::null_mut());
                    libc::_exit(0);
                }
                libc::_exit(if libc::unshare(libc::CLONE_NEWNS) == 0 {
                    0
                } else {
                    1
                });
            }
        }
        os_check(pid, || format!("fork {i}"))?;
        loop {
            let mut status = 0;
            // SAFETY: waitpid fills status.
            let done = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if done <= 0 {
                break;
            }
            if exited_ok(status) {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        std::thread::sleep(pace);
    }
    let (rest_ok, rest_failed) = reap_all();
    ok += rest_ok;
    failed += rest_failed;
    println!(
        "namespaces={count} holders={} ok={ok} failed={failed} wall_us={}",
        count.div_ceil(every),
        started.elapsed().as_micros()
    );
    ensure!(
        failed == 0,
        "{failed} of {count} children failed to make their namespace"
    );
    Ok(())
}
