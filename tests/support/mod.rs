//! The lab: real mounts and mount namespaces for root integration tests,
//! without touching the machine's own mount table.
//!
//! A [`Lab`] is a long-lived process in a throwaway mount namespace (the
//! lab's "host": where the container runtime would have made its mounts).
//! Inside it, tmpfs hides `/var/lib/docker`, `/var/lib/kubelet` and
//! `/run/containerd`, so container-looking mounts can be made there and are
//! seen by nothing outside the lab. [`Lab::holder`] copies the lab namespace
//! into a new one, the way `unshare -m`, a container runtime or a daemon
//! with `PrivateMounts=` would, and that copy is what leaks.
//!
//! The lab drives everything through the same tools an operator would use
//! (`unshare`, `nsenter`, `mount`, `losetup`), so a failing test can be
//! replayed by hand from its error message. Dropping the lab kills its
//! processes (their namespaces, and every mount only they saw, go with
//! them), detaches its loop devices and removes its scratch directory.
//!
//! May import: std, libc. Needs root, util-linux, mount and e2fsprogs
//! (`cargo xtask setup` installs them).

// Helpers shared by several test modules; each module uses a subset.
#![allow(dead_code)]

/// A standalone containerd (ctr and CRI), its images and a kubelet-like
/// CRI client.
pub mod containerd;
/// A real dockerd, namespace holders made from the host, JSON-line readers.
pub mod docker;
/// A real OTLP collector (rotel) and a parser for what it received.
pub mod otlp;

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The container trees the lab hides under its own tmpfs. mountleak looks for
/// container mounts under these paths.
pub const TREES: [&str; 3] = ["/var/lib/docker", "/var/lib/kubelet", "/run/containerd"];

/// Labs in one test binary run one at a time: tests run in parallel threads,
/// but a scan sees every mount namespace on the machine, so one lab's holders
/// would show up in another lab's findings.
static LAB_LOCK: Mutex<()> = Mutex::new(());

/// The same exclusion across processes: other test binaries and the
/// benchmarks (`cargo xtask bench`) take this file lock too.
pub const LOCK_FILE: &str = "/run/mountleak-tests.lock";

/// Held while a test (or benchmark) owns the machine's namespaces.
pub struct Exclusive {
    _thread: MutexGuard<'static, ()>,
    _process: Option<std::fs::File>,
}

/// Holds [`LAB_LOCK`] and [`LOCK_FILE`]: for a test that makes namespaces
/// without a [`Lab`] but must not overlap one (or must not see another
/// test's namespaces).
pub fn exclusive() -> Exclusive {
    // A test that panicked while holding the lock poisons it; its lab was
    // still cleaned up by Drop during unwinding, so carry on.
    let thread = LAB_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // flock(2) is released when the file is closed, even if the process dies.
    let process = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .ok()
        .filter(|f| {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor we own.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) == 0 }
        });
    Exclusive {
        _thread: thread,
        _process: process,
    }
}

/// Makes lab ids unique within the process (the pid makes them unique
/// across processes).
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long a process gets to reach its sleeping state in its namespace.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of the sparse image behind each loop device; ext4 needs a few MiB.
const LOOP_IMAGE_BYTES: u64 = 32 << 20;

/// Panics with a clear message unless this process is root. The root tests
/// are `#[ignore = "needs root: …"]`; this catches `--include-ignored` run
/// by a user, which would otherwise fail with a confusing EPERM deep inside.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (it creates mounts, mount namespaces and loop devices); \
         run the suite as root with `cargo xtask test`, or leave out --include-ignored"
    );
}

/// Mount propagation of a holder's namespace towards the lab's, as set by
/// `unshare --propagation`. Only the lab's container trees are shared, so
/// this decides whether the lab's umounts reach the holder's copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Keeps its copies whatever the lab does (the leak on every kernel).
    Private,
    /// Receives the lab's mounts and umounts, never sends its own back.
    Slave,
    /// Peer of the lab: mounts and umounts go both ways.
    Shared,
}

impl Propagation {
    fn as_arg(self) -> &'static str {
        match self {
            Propagation::Private => "private",
            Propagation::Slave => "slave",
            Propagation::Shared => "shared",
        }
    }
}

/// A sleeping process in its own copy of the lab's mount namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Inode of its mount namespace (`/proc/PID/ns/mnt`).
    pub ns: u64,
}

/// An ext4 filesystem on a loop device, mounted where kubelet mounts a CSI
/// volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopVolume {
    /// `/dev/loopN`.
    pub device: PathBuf,
    /// The backing file, in the lab's scratch directory.
    pub image: PathBuf,
    /// `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~csi/<name>/mount`.
    pub mountpoint: PathBuf,
}

/// A command that exited unsuccessfully, with what it said. `Debug` prints
/// the same readable text, so `.unwrap()` on a lab result explains itself.
pub struct Failed {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed ({})", self.command, self.status)?;
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !text.trim().is_empty() {
                write!(f, "\n{name}: {}", text.trim_end())?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs `cmd` to completion with stdin closed and returns its stdout, or
/// [`Failed`] if it exits unsuccessfully. Panics if it cannot start at all
/// (a missing tool is a broken setup, not a test result).
pub fn check(cmd: &mut Command) -> Result<String, Failed> {
    let command = show(cmd);
    let output = cmd.stdin(Stdio::null()).output().unwrap_or_else(|err| {
        panic!("could not start `{command}`: {err} (try `cargo xtask setup`)")
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    Err(Failed {
        command,
        status: output.status,
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The command line of `cmd`, for messages.
fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Inode of the mount namespace of `pid`: what `readlink /proc/PID/ns/mnt`
/// shows between the brackets, and what mountleak reports as `mnt_ns`.
pub fn mnt_ns(pid: u32) -> u64 {
    let link = format!("/proc/{pid}/ns/mnt");
    fs::metadata(&link)
        .unwrap_or_else(|err| panic!("stat {link}: {err}"))
        .ino()
}

/// Mount points in the mount namespace of `pid`, from its mountinfo.
pub fn mount_points(pid: u32) -> Vec<PathBuf> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    // Field 5 is the mount point (proc_pid_mountinfo(5)).
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect()
}

/// Whether something is mounted at `path` in the mount namespace of `pid`.
pub fn has_mount(pid: u32, path: &Path) -> bool {
    mount_points(pid).iter().any(|point| point == path)
}

/// The kernel writes space, tab, newline and backslash in mountinfo paths as
/// `\ooo` octal escapes (fs/proc_namespace.c, `mangle`).
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|oct| u8::from_str_radix(oct, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `mountleak` binary that `cargo build` made beside this test binary.
///
/// `env!("CARGO_BIN_EXE_mountleak")` exists only in the monitor package's own
/// tests, and `cargo test` builds a package's binaries only for its own
/// integration tests; `cargo xtask test` therefore runs `cargo build` first.
/// If you run `cargo test` by hand, run `cargo build` before it, or this
/// runs a stale binary.
pub fn mountleak_bin() -> PathBuf {
    let test_exe = std::env::current_exe().expect("path of the running test binary");
    // The test binary is target/<profile>/deps/tests-<hash>.
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("mountleak");
    assert!(
        bin.is_file(),
        "{} is missing: these tests run the real mountleak binary, which `cargo test` \
         does not build for another package; run `cargo build` first \
         (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// Polls `ready` until it holds, panicking with `what` after
/// [`SETTLE_TIMEOUT`].
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Names used in paths and shell scripts: keep them to what needs no quoting.
fn assert_plain_name(kind: &str, name: &str) {
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && name != "."
            && name != "..",
        "{kind} {name:?}: use letters, digits, '-', '_' and '.' only"
    );
}

/// A sleeping process in a namespace of its own, and how to tell it is ready.
struct Sleeper {
    child: Child,
    ns: u64,
}

/// Starts `cmd`, whose last exec must be `sleep infinity` in a new mount
/// namespace, and waits until it is there. The pid is the one that sleeps
/// in the new namespace, because none of the tools in between fork:
/// `nsenter` without `--fork` or `--pid`, and `unshare` without `--fork`,
/// exec the next program in the same process.
fn spawn_sleeper(mut cmd: Command, not_in_ns: u64) -> Sleeper {
    let line = show(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only makes one
    // async-signal-safe syscall. If the test binary dies without running the
    // lab's Drop (a crash, a kill on timeout), the kernel kills the sleeper
    // and its namespace does not outlive the run to show up in later scans.
    // PDEATHSIG follows the thread that forked, which is the test's thread
    // and so lives as long as the lab.
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
        .unwrap_or_else(|err| panic!("could not start `{line}`: {err} (try `cargo xtask setup`)"));
    let pid = child.id();
    // Reaching `sleep` means unshare has also set the propagation (it does
    // that after unshare(2), before exec); a new namespace alone does not.
    wait_until(
        &format!("`{line}` to sleep in a new mount namespace"),
        || {
            if let Some(status) = child.try_wait().expect("wait for a lab process") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!(
                    "`{line}` exited ({status}) instead of sleeping: {}",
                    stderr.trim()
                );
            }
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim_end() == "sleep"
        },
    );
    let ns = mnt_ns(pid);
    assert_ne!(
        ns, not_in_ns,
        "`{line}` sleeps, but in the namespace it should have left"
    );
    Sleeper { child, ns }
}

/// Kills and reaps a lab process; with it go its namespace and every mount
/// only that namespace held.
fn kill(child: &mut Child) {
    // An error here means it already exited; reaping it is all that is left.
    let _ = child.kill();
    if let Err(err) = child.wait() {
        eprintln!("lab: could not reap pid {}: {err}", child.id());
    }
}

/// A throwaway mount namespace with container-like trees, and the processes
/// that copy it. See the module docs.
///
/// Start holders from the thread that runs the test: each lab process dies
/// with the thread that started it (PR_SET_PDEATHSIG, so that a killed test
/// binary leaves no namespaces behind).
pub struct Lab {
    id: String,
    /// On the real filesystem, visible from the lab and from the test.
    scratch: PathBuf,
    host: Child,
    host_ns: u64,
    holders: Vec<Child>,
    loop_devices: Vec<PathBuf>,
    /// Declared last so it is released last, after Drop has cleaned up:
    /// the next lab must not see this one's namespaces.
    _exclusive: Exclusive,
}

impl Lab {
    /// Waits for any other lab in this process to finish, then builds a new
    /// one: the lab's host namespace with tmpfs over [`TREES`], each made
    /// shared so that `Slave` and `Shared` holders receive the lab's
    /// umounts. (PLATFORM.md: this VM's `/` is private, so without that a
    /// slave holder receives nothing.)
    pub fn new() -> Lab {
        require_root();
        let exclusive = exclusive();
        let id = format!(
            "{}-{}",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let scratch = std::env::temp_dir().join(format!("mountleak-lab-{id}"));

        // --propagation private: nothing the lab mounts may reach the real
        // host's mount table.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sleep", "infinity"]);
        let host = spawn_sleeper(cmd, mnt_ns(std::process::id()));
        let lab = Lab {
            id,
            scratch,
            host: host.child,
            host_ns: host.ns,
            holders: Vec::new(),
            loop_devices: Vec::new(),
            _exclusive: exclusive,
        };
        // From here on a panic drops `lab`, which kills the host process and
        // removes the scratch directory.
        fs::create_dir_all(&lab.scratch)
            .unwrap_or_else(|err| panic!("create {}: {err}", lab.scratch.display()));
        for tree in TREES {
            // The directory is created on the real filesystem if missing (it
            // is the mount point); the tmpfs on it exists only in the lab.
            lab.run_in_host(&format!(
                "mkdir -p {tree} && mount -t tmpfs -o mode=0755 mountleak-lab {tree} \
                 && mount --make-shared {tree}"
            ));
        }
        lab
    }

    /// Unique per lab: `<pid>-<counter>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A directory for this lab's files (loop images, configs, outputs). It
    /// is on the real filesystem, so the lab namespace, holders and the test
    /// all see it at the same path. Removed on drop.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// Pid of the lab's host process.
    pub fn host_pid(&self) -> u32 {
        self.host.id()
    }

    /// Inode of the lab's host mount namespace.
    pub fn host_ns(&self) -> u64 {
        self.host_ns
    }

    /// A command that runs `program` inside the lab's host namespace (via
    /// `nsenter`, with cwd `/`). Add arguments, then run it with [`check`]
    /// or `.output()`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.host_pid()))
            .args(["--mount", "--"])
            .arg(program);
        cmd
    }

    /// The `mountleak` binary as a command inside the lab's host namespace.
    pub fn mountleak(&self) -> Command {
        self.command(mountleak_bin())
    }

    /// Runs a shell script inside the lab's host namespace; returns its
    /// stdout and panics (with its stderr) if it fails.
    pub fn run_in_host(&self, script: &str) -> String {
        check(self.command("sh").args(["-c", script])).unwrap_or_else(|failed| panic!("{failed}"))
    }

    /// `umount PATH` in the lab's host namespace. An error, not a panic:
    /// "target is busy" is an outcome tests assert on.
    pub fn umount(&self, path: &Path) -> Result<(), Failed> {
        check(self.command("umount").arg(path)).map(drop)
    }

    /// `umount --lazy PATH` (MNT_DETACH) in the lab's host namespace.
    pub fn umount_lazy(&self, path: &Path) -> Result<(), Failed> {
        check(self.command("umount").arg("--lazy").arg(path)).map(drop)
    }

    /// `rmdir PATH` in the lab's host namespace. Since Linux 3.18 this also
    /// detaches copies of a mount on PATH in other namespaces.
    pub fn rmdir(&self, path: &Path) -> Result<(), Failed> {
        check(self.command("rmdir").arg(path)).map(drop)
    }

    /// An overlay mount laid out like Docker's overlay2 driver does it:
    /// `lower`, `upper`, `work` and `merged` under
    /// `/var/lib/docker/overlay2/<id>/`, with one file (`hello`) in the lower
    /// layer. Returns the `merged` path.
    pub fn overlay(&self, id: &str) -> PathBuf {
        assert_plain_name("overlay id", id);
        let base = format!("/var/lib/docker/overlay2/{id}");
        self.run_in_host(&format!(
            "mkdir -p {base}/lower {base}/upper {base}/work {base}/merged \
             && echo hello > {base}/lower/hello \
             && mount -t overlay overlay \
                -o lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work \
                {base}/merged"
        ));
        PathBuf::from(base).join("merged")
    }

    /// An ext4 filesystem on a fresh loop device, mounted in the lab where
    /// kubelet mounts CSI volumes. Drop detaches the device.
    pub fn loop_ext4(&mut self, pod_uid: &str, name: &str) -> LoopVolume {
        assert_plain_name("pod uid", pod_uid);
        assert_plain_name("volume name", name);
        let image = self.scratch.join(format!("{pod_uid}-{name}.img"));
        fs::File::create(&image)
            .and_then(|file| file.set_len(LOOP_IMAGE_BYTES))
            .unwrap_or_else(|err| panic!("create {}: {err}", image.display()));
        // Loop devices are global, so losetup and mkfs need not run in the lab.
        let device = check(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&image),
        )
        .unwrap_or_else(|failed| panic!("{failed}"));
        let device = PathBuf::from(device.trim());
        self.loop_devices.push(device.clone());
        check(Command::new("mkfs.ext4").arg("-q").arg(&device))
            .unwrap_or_else(|failed| panic!("{failed}"));
        let mountpoint = PathBuf::from(format!(
            "/var/lib/kubelet/pods/{pod_uid}/volumes/kubernetes.io~csi/{name}/mount"
        ));
        self.run_in_host(&format!(
            "mkdir -p '{mount}' && mount '{device}' '{mount}'",
            mount = mountpoint.display(),
            device = device.display(),
        ));
        LoopVolume {
            device,
            image,
            mountpoint,
        }
    }

    /// A process started from the lab's host namespace with `unshare -m
    /// --propagation <propagation>`, sleeping, optionally with its cwd at
    /// `cwd` (a path in the lab, resolved in the holder's new namespace, so
    /// the cwd pins the holder's copy of whatever is mounted there).
    pub fn holder(&mut self, propagation: Propagation, cwd: Option<&Path>) -> Holder {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.host_pid()))
            .arg("--mount");
        if let Some(cwd) = cwd {
            // Entering a mount namespace resets cwd to its root; --wdns
            // changes directory after entering, and unshare(2) then moves the
            // cwd to the same place in the copy.
            // util-linux 2.38 takes the directory only as `--wdns=DIR`; with
            // a space, nsenter tries to execute DIR as the program.
            let mut wdns = std::ffi::OsString::from("--wdns=");
            wdns.push(cwd);
            cmd.arg(wdns);
        }
        cmd.args([
            "--",
            "unshare",
            "--mount",
            "--propagation",
            propagation.as_arg(),
        ])
        .args(["sleep", "infinity"]);
        let sleeper = spawn_sleeper(cmd, self.host_ns);
        let holder = Holder {
            pid: sleeper.child.id(),
            ns: sleeper.ns,
        };
        self.holders.push(sleeper.child);
        holder
    }

    /// Kills a holder now (the way a leak ends when its holder exits).
    pub fn stop(&mut self, holder: Holder) {
        let at = self
            .holders
            .iter()
            .position(|child| child.id() == holder.pid)
            .unwrap_or_else(|| panic!("{holder:?} is not a running holder of this lab"));
        kill(&mut self.holders.swap_remove(at));
    }
}

impl Drop for Lab {
    /// Best effort and never panics (a panic while unwinding from a failed
    /// test would abort the whole test binary); problems are printed.
    fn drop(&mut self) {
        for child in self.holders.iter_mut().chain([&mut self.host]) {
            kill(child);
        }
        // With every namespace gone the filesystems on the devices are
        // released, or are about to be; `losetup -d` on a device still in use
        // marks it to detach on last close, which is just as good.
        for device in &self.loop_devices {
            if loop_backing_file(device).is_none() {
                continue; // the test detached it itself
            }
            if let Err(failed) = check(Command::new("losetup").arg("--detach").arg(device)) {
                eprintln!("lab {}: {failed}", self.id);
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.scratch) {
            eprintln!("lab {}: remove {}: {err}", self.id, self.scratch.display());
        }
    }
}

/// The backing file of `/dev/loopN` as the kernel names it (with
/// " (deleted)" appended once the file is unlinked), or `None` when the
/// device is detached: sysfs shows `loop/backing_file` only while attached.
pub fn loop_backing_file(device: &Path) -> Option<String> {
    let name = device.file_name().expect("a /dev/loopN path");
    let path = Path::new("/sys/block").join(name).join("loop/backing_file");
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim_end().to_owned())
}

/// Set to `1` to run the tests of known bugs (they fail until the bug is
/// fixed).
pub const RUN_KNOWN_BUGS: &str = "MOUNTLEAK_RUN_KNOWN_BUGS";

/// For a test marked `#[ignore = "known bug: …"]`: CI runs every ignored
/// test (`--include-ignored`, for the root tests), which would run this one
/// too; it returns early unless [`RUN_KNOWN_BUGS`] is `1`. Returns whether
/// to skip, after saying so.
pub fn skip_known_bug(test: &str) -> bool {
    let run = std::env::var(RUN_KNOWN_BUGS).is_ok_and(|v| v == "1");
    if !run {
        eprintln!("{test}: skipped, a known bug (set {RUN_KNOWN_BUGS}=1 to run it)");
    }
    !run
}

/// Bytes a name passed to [`Lab::overlay_named`] may not hold: `/` and NUL
/// cannot be in a file name; `,` `:` `\` and `=` have a meaning in overlay's
/// mount options (lowerdir=A:B,upperdir=…).
const OVERLAY_OPTION_BYTES: &[u8] = b"/\0,:\\=";

impl Lab {
    /// Like [`Lab::overlay`], for an id holding any other bytes (spaces,
    /// tabs, newlines, bytes that are not UTF-8): the directories are made
    /// and mounted by running `mkdir` and `mount` with the path as one
    /// argument, so no shell ever reads it. Returns the `merged` path.
    pub fn overlay_named(&self, id: &OsStr) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        assert!(
            !id.is_empty()
                && id != "."
                && id != ".."
                && !id
                    .as_bytes()
                    .iter()
                    .any(|b| OVERLAY_OPTION_BYTES.contains(b)),
            "overlay id {id:?} may not hold any of {OVERLAY_OPTION_BYTES:?}"
        );
        let base = Path::new("/var/lib/docker/overlay2").join(id);
        let [lower, upper, work, merged] =
            ["lower", "upper", "work", "merged"].map(|dir| base.join(dir));
        check(
            self.command("mkdir")
                .arg("-p")
                .args([&lower, &upper, &work, &merged]),
        )
        .unwrap_or_else(|failed| panic!("{failed}"));
        let mut options = std::ffi::OsString::from("lowerdir=");
        options.push(&lower);
        options.push(",upperdir=");
        options.push(&upper);
        options.push(",workdir=");
        options.push(&work);
        check(
            self.command("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(options)
                .arg(&merged),
        )
        .unwrap_or_else(|failed| panic!("{failed}"));
        merged
    }

    /// A holder started from the lab's host namespace with `unshare ARGS
    /// sleep infinity`, for holders [`Lab::holder`] cannot make (e.g. in a
    /// new user namespace: `--user --map-root-user --mount`). `unshare_args`
    /// must include a new mount namespace.
    pub fn holder_unshare(&mut self, unshare_args: &[&str]) -> Holder {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.host_pid()))
            .args(["--mount", "--", "unshare"])
            .args(unshare_args)
            .args(["sleep", "infinity"]);
        let sleeper = spawn_sleeper(cmd, self.host_ns);
        let holder = Holder {
            pid: sleeper.child.id(),
            ns: sleeper.ns,
        };
        self.holders.push(sleeper.child);
        holder
    }
}

/// Mount points in the mount namespace of `pid`, byte for byte: unlike
/// [`mount_points`], this copes with mount points that are not UTF-8 (the
/// kernel escapes only space, tab, newline and backslash).
pub fn mount_points_exact(pid: u32) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let path = format!("/proc/{pid}/mountinfo");
    let text = fs::read(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| {
            PathBuf::from(std::ffi::OsString::from_vec(unescape_mountinfo_bytes(
                field,
            )))
        })
        .collect()
}

/// Whether something is mounted at exactly `path` in the mount namespace of
/// `pid` (any bytes; see [`mount_points_exact`]).
pub fn has_mount_exact(pid: u32, path: &Path) -> bool {
    mount_points_exact(pid).iter().any(|point| point == path)
}

/// [`unescape_mountinfo`] on bytes.
fn unescape_mountinfo_bytes(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let code = (field[i] == b'\\')
            .then(|| field.get(i + 1..i + 4))
            .flatten()
            .and_then(|oct| std::str::from_utf8(oct).ok())
            .and_then(|oct| u8::from_str_radix(oct, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// What [`in_mount_ns`] exits with when `setns` fails.
pub const SETNS_FAILED: i32 = 255;

/// Runs `body` in a child process forked from this one, inside the mount
/// namespace of `pid`, and returns the child's exit code: what `body`
/// returned, or [`SETNS_FAILED`]. For raw syscalls whose errno matters
/// (util-linux's `umount` prints EINVAL as "not mounted") or that must run
/// faster than a shell can fork (a burst of mounts).
///
/// A child, because a threaded process cannot `setns` into a mount
/// namespace (EINVAL: the test harness runs threads). `body` runs between
/// fork and exec, so it may only make async-signal-safe calls: raw syscalls
/// through `libc`, on data prepared before (no allocation, no locks, no
/// printing). It never returns to exec: the child `_exit`s with its code.
pub fn in_mount_ns(pid: u32, body: impl Fn() -> i32 + Send + Sync + 'static) -> i32 {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/{pid}/ns/mnt");
    let ns = fs::File::open(&link).unwrap_or_else(|err| panic!("open {link}: {err}"));
    let fd = ns.as_raw_fd();
    // The program is never executed: the child exits from pre_exec.
    let mut cmd = Command::new("/bin/true");
    cmd.stdin(Stdio::null());
    // SAFETY: the closure makes only raw syscalls (setns, prctl, _exit and
    // whatever `body` makes, which the caller promises are
    // async-signal-safe). `fd` stays open in the parent until the child has
    // been reaped, and the child has its own copy of the descriptor table.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                libc::_exit(SETNS_FAILED);
            }
            libc::_exit(body())
        });
    }
    let status = cmd
        .status()
        .unwrap_or_else(|err| panic!("fork a child into {link}: {err}"));
    drop(ns);
    status
        .code()
        .unwrap_or_else(|| panic!("the child in {link} was killed: {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/odd\04"), r"/odd\04");
    }

    #[test]
    fn mountinfo_escapes_are_decoded_byte_for_byte() {
        assert_eq!(
            unescape_mountinfo_bytes(b"/a\\040b\\011c\\012\xe9\\134d"),
            b"/a b\tc\n\xe9\\d"
        );
        assert_eq!(unescape_mountinfo_bytes(b"/odd\\04"), b"/odd\\04");
        assert_eq!(unescape_mountinfo_bytes(b"/end\\"), b"/end\\");
    }
}
