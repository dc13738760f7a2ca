//! What every benchmark needs from the system: the machine-wide test lock,
//! bench-only Debian packages, child processes that cannot outlive the
//! bench, reading their output, and checking from the outside that a tracer
//! really attached its programs. std, anyhow and libc only.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::cmd;

/// The cross-process lock of the root integration tests
/// (tests/support/mod.rs `LOCK_FILE`): while a bench holds it, no test lab
/// exists, so no test sees the bench's namespaces and daemons, and no lab's
/// holders land in a bench's scans or timings.
const LOCK_FILE: &str = "/run/mountleak-tests.lock";

/// flock(2) on [`LOCK_FILE`]; released when dropped (or when the process
/// dies, whatever the cause).
pub struct Lock {
    _file: File,
}

/// Waits for the lock, saying so if someone else holds it.
pub fn lock() -> Result<Lock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("open {LOCK_FILE}"))?;
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        println!("bench: waiting for {LOCK_FILE} (a test lab or another bench holds it)");
        let started = Instant::now();
        // SAFETY: as above; blocks until the holder releases it.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error()).context(format!("flock {LOCK_FILE}"));
        }
        println!(
            "bench: got {LOCK_FILE} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Lock { _file: file })
}

fn dpkg_installed(package: &str) -> bool {
    cmd::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status == "install ok installed")
}

/// Installs the Debian packages that are missing; runs `apt-get update`
/// only when one is (a fresh image has empty package lists).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        if !packages.is_empty() {
            println!("bench: packages {}: installed", packages.join(", "));
        }
        return Ok(());
    }
    println!("bench: installing {}", missing.join(", "));
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The file a Debian package installed under a name ending in `/name`
/// (`dpkg -L`), e.g. mountsnoop from libbpf-tools.
pub fn package_file(package: &str, name: &str) -> Result<PathBuf> {
    let list = cmd::output(Command::new("dpkg").args(["-L", package]))?;
    let suffix = format!("/{name}");
    list.lines()
        .map(Path::new)
        .find(|p| p.to_string_lossy().ends_with(&suffix) && p.is_file())
        .map(Path::to_path_buf)
        .with_context(|| format!("package {package} installs no file named {name}"))
}

/// Makes the kernel kill the child when this thread dies, so a bench that
/// crashes or is killed leaves no tracer attached and no namespace behind.
/// Start children from the main thread: PDEATHSIG follows the forking
/// thread, not the process.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: runs between fork and exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// A child process that is killed and reaped when dropped, unless it was
/// stopped or waited for first.
pub struct Guard {
    child: Option<Child>,
    what: String,
}

impl Guard {
    /// Starts `cmd` (which dies with this process, see [`die_with_parent`]).
    pub fn spawn(cmd: &mut Command, what: impl Into<String>) -> Result<Guard> {
        let what = what.into();
        let line = cmd::show(cmd);
        let child = die_with_parent(cmd)
            .spawn()
            .with_context(|| format!("could not start {what}: `{line}`"))?;
        Ok(Guard {
            child: Some(child),
            what,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("a guard holds its child until it ends")
    }

    /// Exit status if it has exited (without waiting).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let what = self.what.clone();
        self.child()
            .try_wait()
            .with_context(|| format!("wait for {what}"))
    }

    /// Waits for it to exit by itself, for at most `timeout`; then kills it
    /// and says so.
    pub fn wait(mut self, timeout: Duration) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} (pid {}) still running after {:?}; killed",
                    self.what,
                    self.pid(),
                    timeout
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal`, then waits like [`Guard::wait`].
    pub fn stop(self, signal: libc::c_int, timeout: Duration) -> Result<ExitStatus> {
        // SAFETY: kill(2) on our own unreaped child: the pid cannot have been
        // reused while we have not waited for it.
        unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        self.wait(timeout)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if let Err(err) = child.wait() {
                eprintln!(
                    "bench: could not reap {} ({}): {err}",
                    self.what,
                    child.id()
                );
            }
        }
    }
}

/// A child's stdout, read line by line on a thread so the child never blocks
/// on a full pipe; the lines arrive here.
pub struct Lines {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    pub fn read(stdout: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line (already seen or still to come) that satisfies
    /// `wanted`, within `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Result<String> {
        if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
            return Ok(line.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => bail!("no such line within {timeout:?}"),
                Err(RecvTimeoutError::Disconnected) => bail!("the output ended first"),
            }
        }
    }

    /// Every line, once the writer has closed its end (or `timeout` passed).
    pub fn all(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return self.seen,
            }
        }
    }
}

/// Names of the tracepoints that `pid` has BPF programs attached to, seen
/// from outside the process, the way `bpftool perf` does:
/// - a BPF link fd (libbpf, aya) names its tracepoint in fdinfo (`tp_name:`,
///   both for perf-event links and raw tracepoint links);
/// - a bare perf-event fd with a program set by ioctl (bpftrace) answers
///   BPF_TASK_FD_QUERY (bpf(2), kernel commit 41bdc4b40ed6).
pub fn attached_tracepoints(pid: u32) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return names;
    };
    for entry in fds.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if target == "anon_inode:bpf_link" {
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            if let Some(name) = info
                .lines()
                .find_map(|l| l.strip_prefix("tp_name:"))
                .map(str::trim)
            {
                names.insert(name.to_owned());
            }
        } else if target == "anon_inode:[perf_event]" {
            if let Some(name) = task_fd_query(pid, fd) {
                names.insert(name);
            }
        }
    }
    names
}

/// BPF_TASK_FD_QUERY: the tracepoint behind perf-event fd `fd` of `pid`, if
/// a BPF program is attached to it.
fn task_fd_query(pid: u32, fd: u32) -> Option<String> {
    const BPF_TASK_FD_QUERY: libc::c_long = 20;
    /// `union bpf_attr`'s `task_fd_query` member (include/uapi/linux/bpf.h).
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        pid: u32,
        fd: u32,
        flags: u32,
        buf_len: u32,
        buf: u64,
        prog_id: u32,
        fd_type: u32,
        probe_offset: u64,
        probe_addr: u64,
    }
    let mut buf = [0u8; 256];
    let mut attr = Attr {
        pid,
        fd,
        buf_len: buf.len() as u32,
        buf: buf.as_mut_ptr() as u64,
        ..Attr::default()
    };
    // SAFETY: the kernel writes at most buf_len bytes into buf and fills the
    // rest of attr, both of which live through the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_TASK_FD_QUERY,
            &mut attr as *mut Attr,
            std::mem::size_of::<Attr>() as u32,
        )
    };
    if rc != 0 || attr.prog_id == 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// Waits until `pid` has programs on every tracepoint in `required` and the
/// set has stopped changing for a moment (a tracer attaches one program
/// after another). Returns the set.
pub fn wait_attached(pid: u32, required: &[&str], timeout: Duration) -> Result<BTreeSet<String>> {
    let started = Instant::now();
    let mut last = BTreeSet::new();
    let mut stable_since = Instant::now();
    loop {
        let now = attached_tracepoints(pid);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        let complete = required.iter().all(|r| last.contains(*r));
        if complete && stable_since.elapsed() >= Duration::from_millis(300) {
            return Ok(last);
        }
        if started.elapsed() > timeout {
            bail!(
                "pid {pid}: tracepoints {required:?} not all attached after {timeout:?} \
                 (attached: {last:?})"
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A `Key:   123 kB` line of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User + system CPU time of every thread of `pid` so far (/proc/PID/stat
/// fields 14 and 15, proc_pid_stat(5)).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields restart
    // after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / hz))
}

/// Inode of the mount namespace of `pid` (`readlink /proc/PID/ns/mnt`).
pub fn mnt_ns(pid: u32) -> io::Result<u64> {
    Ok(fs::metadata(format!("/proc/{pid}/ns/mnt"))?.ino())
}

/// Whether `pid` exists and is not a zombie (state after the comm in
/// `/proc/PID/stat`).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Pids of the processes whose mount namespace is one of `namespaces`.
pub fn processes_in(namespaces: &BTreeSet<u64>) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| mnt_ns(pid).is_ok_and(|ns| namespaces.contains(&ns)))
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The first number after `"key":` in a JSON text, for the few figures we
/// read from hyperfine's and criterion's files (xtask carries no JSON
/// parser).
pub fn json_number(text: &str, key: &str) -> Option<f64> {
    let needle = format!("\"{key}\":");
    let at = text.find(&needle)? + needle.len();
    let rest = text[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The string after `"key":` in a JSON text (no escapes expected).
pub fn json_string(text: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":");
    let at = text.find(&needle)? + needle.len();
    let rest = text[at..].trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// Reads a whole small file, for messages.
pub fn read_text(path: &Path) -> Result<String> {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .with_context(|| format!("read {}", path.display()))?;
    Ok(s)
}

/// Starts `cmd` with stdin and stdout piped, stderr passed through, as a
/// [`Guard`] plus its [`Lines`].
pub fn spawn_piped(cmd: &mut Command, what: &str) -> Result<(Guard, Lines)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut guard = Guard::spawn(cmd, what)?;
    let stdout = guard.child().stdout.take().expect("stdout is piped");
    Ok((guard, Lines::read(stdout)))
}

/// Our own executable, to run a helper in a process of its own. The magic
/// link, not its target: the link still execs this very binary if cargo
/// replaces target/debug/xtask meanwhile (another `cargo xtask` on this
/// machine), where the path would name the new file or nothing at all.
/// It resolves in the child, which is still this program when it execs.
pub fn self_exe() -> Result<PathBuf> {
    let exe = PathBuf::from("/proc/self/exe");
    ensure!(exe.exists(), "{} is missing (no /proc?)", exe.display());
    Ok(exe)
}

/// The loop helpers print one line of `key=value` fields; this reads one.
pub fn field(line: &str, key: &str) -> Result<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key}= in {line:?}"))
}

/// (busy, total) jiffies of all CPUs so far, from the `cpu` line of
/// /proc/stat (proc_stat(5)); idle and iowait are not busy.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Share of all CPUs that was busy during `window`.
pub fn busy_fraction(window: Duration) -> f64 {
    let Some((b0, t0)) = cpu_jiffies() else {
        return f64::NAN;
    };
    thread::sleep(window);
    let Some((b1, t1)) = cpu_jiffies() else {
        return f64::NAN;
    };
    (b1 - b0) as f64 / (t1 - t0).max(1) as f64
}

/// The machine is shared (other sessions build and test on it; the lock
/// only keeps test labs away), and a busy machine makes every figure here
/// meaningless. Waits until the CPUs have been mostly idle for a few
/// seconds, up to `max_wait`; returns the last busy share seen and whether
/// it got quiet.
pub fn wait_quiet(max_wait: Duration) -> (f64, bool) {
    const QUIET: f64 = 0.10;
    let started = Instant::now();
    let mut said = false;
    loop {
        let busy = busy_fraction(Duration::from_secs(3));
        if busy < QUIET {
            return (busy, true);
        }
        if started.elapsed() >= max_wait {
            println!(
                "bench: WARNING: the machine is still {:.0}% busy with other work after {:?}; \
                 measuring anyway, treat these figures as noisy",
                busy * 100.0,
                max_wait
            );
            return (busy, false);
        }
        if !said {
            println!(
                "bench: the machine is {:.0}% busy with other work; waiting for it to quiet \
                 down (up to {max_wait:?})",
                busy * 100.0
            );
            said = true;
        }
    }
}
