//! A real dockerd for root tests, started by hand the way PLATFORM.md
//! measured it (`--storage-driver=overlay2 --iptables=false --bridge=none
//! --ip-forward=false`), with its own socket, pidfile and exec-root under a
//! private directory in /run, and the default data root (/var/lib/docker,
//! where mountleak's built-in patterns look). Containers are made from a
//! busybox-static rootfs imported as [`IMAGE`]: no registry is reachable.
//!
//! Also: processes in mount namespaces of their own made from the host (the
//! holders of container rootfs copies), and a reader for the JSON lines of
//! `mountleak run --json`.
//!
//! Everything here acts on the machine's own mount namespace, so a test
//! using it must hold [`super::exclusive`]; [`Dockerd::start`] takes it.
//!
//! May import: std, libc, serde_json and `super`. Needs root, docker.io and
//! busybox-static (`cargo xtask setup` installs them).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{check, exclusive, mnt_ns, Exclusive, Failed, Propagation};

/// The image every test container runs: busybox-static's `/bin/busybox`
/// with `sh` and `sleep` linked to it.
pub const IMAGE: &str = "mountleak-busybox";

const DOCKERD: &str = "/usr/sbin/dockerd";
/// The CLI that comes with docker.io (speaks the engine's 1.41). Some
/// images carry a newer one in /usr/local/bin; either negotiates, but the
/// packaged one is what setup installs.
pub const DOCKER_CLI: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";

/// PLATFORM.md: dockerd is ready in under a second; a cold containerd and a
/// loaded CI machine get more.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// dockerd on SIGTERM stops its containers (ours are already removed) and
/// its containerd.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A dockerd of this test's own. Drop removes the containers it made,
/// stops dockerd and its containerd, and removes the private directory.
pub struct Dockerd {
    /// `/run/mountleak-dockerd-<pid>-<n>`: socket, pidfile, exec-root, log.
    dir: PathBuf,
    child: Option<Child>,
    /// Containers made through [`Dockerd::run`], removed on drop.
    containers: Vec<String>,
    /// Declared last: released after Drop has cleaned up.
    _exclusive: Exclusive,
}

impl Dockerd {
    /// Takes the test lock, starts dockerd, waits until `/_ping` answers and
    /// makes sure [`IMAGE`] exists (imported once; the data root keeps it
    /// for later tests).
    pub fn start() -> Dockerd {
        super::require_root();
        let exclusive = exclusive();
        for tool in [DOCKERD, DOCKER_CLI, BUSYBOX] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install docker.io and busybox-static (`cargo xtask setup`)"
            );
        }
        let dir = PathBuf::from(format!(
            "/run/mountleak-dockerd-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory of a crashed earlier run with the same pid: start clean.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        let mut d = Dockerd {
            dir,
            child: None,
            containers: Vec::new(),
            _exclusive: exclusive,
        };
        d.launch();
        d.ensure_image();
        d
    }

    /// The engine's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn exec_root(&self) -> PathBuf {
        self.dir.join("exec")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// dockerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines dockerd logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(30).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Starts dockerd (the first time, or again after [`Dockerd::kill9`])
    /// and waits for `/_ping`.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "dockerd is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|err| panic!("open {}: {err}", self.log_path().display()));
        let log2 = log.try_clone().expect("dup the log file");
        let mut cmd = Command::new(DOCKERD);
        cmd.args([
            "--storage-driver=overlay2",
            "--iptables=false",
            "--bridge=none",
            "--ip-forward=false",
        ])
        .arg(format!("--host=unix://{}", self.socket().display()))
        .arg(format!(
            "--pidfile={}",
            self.dir.join("docker.pid").display()
        ))
        .arg(format!("--exec-root={}", self.exec_root().display()))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
        // SAFETY: one async-signal-safe syscall between fork and exec. A test
        // binary that dies without Drop takes dockerd with it (and dockerd
        // takes its containerd: it starts it with the same setting).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {DOCKERD}: {err}"));
        self.child = Some(child);
        let started = Instant::now();
        while !self.ping() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "dockerd exited ({status}) before answering:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "dockerd did not answer /_ping within {READY_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the engine answers `GET /_ping` with `OK`.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("OK")
    }

    /// `kill -9` dockerd (its containerd dies with it; the shims and the
    /// containers keep running until the next dockerd, which without
    /// live-restore kills them on start).
    pub fn kill9(&mut self) {
        let containerd = self.containerd_pid();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The next dockerd trusts a pidfile whose process still exists and
        // then waits on its dead socket ("timeout waiting for containerd to
        // start"). The old containerd gets SIGKILL with its parent but may
        // not be gone yet, and PID 1 here is no init that reaps promptly:
        // wait for it to die, then drop the pidfile.
        if let Some(pid) = containerd {
            let started = Instant::now();
            while process_alive(pid) && started.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = fs::remove_file(self.containerd_pidfile());
    }

    fn containerd_pidfile(&self) -> PathBuf {
        self.exec_root().join("containerd/containerd.pid")
    }

    /// The containerd this dockerd started, from its pidfile.
    fn containerd_pid(&self) -> Option<libc::pid_t> {
        let pid = fs::read_to_string(self.containerd_pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "containerd").then_some(pid)
    }

    /// `kill -9` and start again.
    pub fn restart_hard(&mut self) {
        self.kill9();
        self.launch();
    }

    /// The docker CLI against this engine.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.arg(format!("--host=unix://{}", self.socket().display()));
        cmd
    }

    /// Runs `docker ARGS`; its stdout, trimmed, or what failed.
    pub fn docker<I, S>(&self, args: I) -> Result<String, Failed>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        check(self.cli().args(args)).map(|out| out.trim().to_string())
    }

    /// Like [`Dockerd::docker`], panicking (with dockerd's log) on failure.
    pub fn must<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.docker(args)
            .unwrap_or_else(|failed| panic!("{failed}\ndockerd log:\n{}", self.log_tail()))
    }

    fn ensure_image(&self) {
        if self
            .docker(["image", "inspect", "--format", "{{.Id}}", IMAGE])
            .is_ok()
        {
            return;
        }
        let rootfs = self.dir.join("rootfs");
        for sub in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
            fs::create_dir_all(rootfs.join(sub)).expect("make the image rootfs");
        }
        fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox into the rootfs");
        for applet in ["sh", "sleep", "ls", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("link a busybox applet");
        }
        // `tar -C rootfs -c . | docker import - IMAGE`, without a shell.
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tar");
        let tar_out = tar.stdout.take().expect("piped tar stdout");
        let import = self
            .cli()
            .args(["import", "-", IMAGE])
            .stdin(tar_out)
            .output()
            .expect("run docker import");
        let tar_status = tar.wait().expect("wait for tar");
        assert!(
            tar_status.success() && import.status.success(),
            "importing {IMAGE} failed (tar {tar_status}, import {}): {}",
            import.status,
            String::from_utf8_lossy(&import.stderr)
        );
        let _ = fs::remove_dir_all(&rootfs);
    }

    /// `docker run -d --name NAME IMAGE sleep 1000`; returns the id.
    pub fn run(&mut self, name: &str) -> String {
        self.run_with(name, &[])
    }

    /// Like [`Dockerd::run`] with extra `docker run` options (`--ipc`, `-v`).
    pub fn run_with(&mut self, name: &str, options: &[&str]) -> String {
        let id = self.must(
            ["run", "-d", "--name", name]
                .iter()
                .chain(options)
                .chain(&[IMAGE, "sleep", "1000"]),
        );
        assert_eq!(id.len(), 64, "docker run printed {id:?}, not an id");
        self.containers.push(id.clone());
        id
    }

    /// `docker stop -t 0` (busybox `sleep` as pid 1 ignores SIGTERM, so any
    /// grace period is only waited out).
    pub fn stop(&self, name: &str) {
        self.must(["stop", "-t", "0", name]);
    }

    pub fn rm(&self, name: &str) {
        self.must(["rm", name]);
    }

    /// `docker inspect --format FORMAT NAME`.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.must(["inspect", "--format", format, name])
    }

    /// The container's `GraphDriver.Data.MergedDir`.
    pub fn merged_dir(&self, name: &str) -> PathBuf {
        PathBuf::from(self.inspect(name, "{{.GraphDriver.Data.MergedDir}}"))
    }

    /// The container's init pid (0 when not running).
    pub fn container_pid(&self, name: &str) -> u32 {
        self.inspect(name, "{{.State.Pid}}")
            .parse()
            .expect("State.Pid is a number")
    }

    /// The daemon's root dir (`/var/lib/docker` here).
    pub fn root_dir(&self) -> PathBuf {
        PathBuf::from(self.must(["info", "--format", "{{.DockerRootDir}}"]))
    }

    /// Stops dockerd gracefully, then by force; its containerd too.
    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: sending a signal to our own child, which is not reaped yet
        // (so its pid is still ours).
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < SHUTDOWN_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("dockerd did not stop within {SHUTDOWN_TIMEOUT:?}; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Dockerd {
    /// Best effort and never panics (a panic while unwinding aborts the
    /// test binary); problems are printed.
    fn drop(&mut self) {
        if self.child.is_some() && !self.containers.is_empty() {
            let mut rm = self.cli();
            rm.args(["rm", "-f", "-v"]).args(&self.containers);
            // Containers the test removed itself are "No such container".
            let _ = check(&mut rm);
        }
        self.shutdown();
        // dockerd stops its containerd on a graceful exit, and PDEATHSIG
        // kills it otherwise; one still alive is killed here.
        if let Some(pid) = self.containerd_pid().filter(|&pid| process_alive(pid)) {
            // SAFETY: a signal to the containerd our dockerd started (its
            // pidfile names it and its comm matches).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("dockerd: remove {}: {err}", self.dir.display());
        }
    }
}

/// Whether `pid` exists and is not a zombie.
fn process_alive(pid: libc::pid_t) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the parenthesised comm.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// The mountinfo line (fields split) of the mount at exactly `path` in the
/// namespace of `pid`, as `(fstype, propagation fields)`.
pub fn mount_at(pid: u32, path: &Path) -> Option<(String, Vec<String>)> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let want = path.to_str()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        // Docker's paths need no mountinfo escapes (no spaces, tabs, newlines).
        if fields.get(4) != Some(&want) {
            return None;
        }
        let fstype = right.split(' ').next()?.to_string();
        let optional = fields[6..].iter().map(|s| s.to_string()).collect();
        Some((fstype, optional))
    })
}

/// A sleeping process in a mount namespace of its own, copied from the
/// test's (the host's) namespace with `unshare --mount --propagation P`,
/// with its cwd at `cwd` (unshare(2) moves a cwd inside a mount to the same
/// place in the copy). Killed on drop, and with the test's thread.
pub struct NsHolder {
    child: Child,
    pub pid: u32,
    pub ns: u64,
}

impl NsHolder {
    pub fn start(propagation: Propagation, cwd: &Path) -> NsHolder {
        let prop = match propagation {
            Propagation::Private => "private",
            Propagation::Slave => "slave",
            Propagation::Shared => "shared",
        };
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", prop, "sleep", "infinity"])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: one async-signal-safe syscall between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("could not start unshare: {err}"));
        let pid = child.id();
        let own_ns = mnt_ns(std::process::id());
        // unshare execs sleep in the same process once the namespace and its
        // propagation are set.
        super::wait_until("the holder to sleep in its own namespace", || {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("unshare exited ({status}): {err}");
            }
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim_end() == "sleep"
        });
        let ns = mnt_ns(pid);
        assert_ne!(ns, own_ns, "the holder stayed in the test's namespace");
        NsHolder { child, pid, ns }
    }
}

impl Drop for NsHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One JSON line a process printed, with when the test read it.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub json: Value,
}

/// A process printing JSON lines (`mountleak run --json`), read on a
/// thread; killed on drop.
pub struct JsonLines {
    child: Child,
    rx: mpsc::Receiver<Result<Line, String>>,
    pub lines: Vec<Line>,
    stderr: Arc<Mutex<String>>,
}

impl JsonLines {
    pub fn spawn(mut cmd: Command) -> JsonLines {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: one async-signal-safe syscall between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let item = match line {
                    Ok(text) => serde_json::from_str(&text)
                        .map(|json| Line {
                            at: Instant::now(),
                            json,
                        })
                        .map_err(|err| format!("not a JSON line ({err}): {text}")),
                    Err(err) => Err(format!("reading stdout: {err}")),
                };
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        JsonLines {
            child,
            rx,
            lines: Vec::new(),
            stderr,
        }
    }

    /// Everything it said, for failure messages.
    pub fn transcript(&self) -> String {
        let mut out = String::from("stdout:\n");
        for line in &self.lines {
            out.push_str(&line.json.to_string());
            out.push('\n');
        }
        let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        out.push_str("stderr (last lines):\n");
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    fn next_line(&mut self, deadline: Instant, what: &str) -> Option<Line> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Ok(line)) => {
                self.lines.push(line.clone());
                Some(line)
            }
            Ok(Err(bad)) => panic!("{bad}\n{}", self.transcript()),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!(
                    "the process exited ({status:?}) while waiting for {what}\n{}",
                    self.transcript()
                )
            }
        }
    }

    /// The first line, read already or still to come, that `pred` accepts;
    /// panics with the transcript after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Line {
        if let Some(line) = self.lines.iter().find(|l| pred(&l.json)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        while let Some(line) = self.next_line(deadline, what) {
            if pred(&line.json) {
                return line;
            }
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            self.transcript()
        )
    }

    /// Reads whatever comes for `window`.
    pub fn observe(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while self
            .next_line(deadline, "the end of an observation window")
            .is_some()
        {}
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
