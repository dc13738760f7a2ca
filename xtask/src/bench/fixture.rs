//! The bench's side of the namespace fixture (helper `__fixture`): start it,
//! read what it made, and tear it down completely, on success and on error
//! alike (Drop).
//!
//! Everything the fixture mounts exists only in its private namespace and
//! the holders' copies: the scratch directory and /var/lib/docker are
//! covered by tmpfs there and stay empty on the real filesystem. Closing the
//! helper's stdin makes it kill and reap its holders; once it has exited, no
//! process is left in any of its namespaces, so the kernel frees every
//! mount. Teardown checks that.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::sys::{self, Guard, Lines};

/// Where Docker keeps its overlays; the fixture covers it with a tmpfs in its
/// own namespace, so the directory must exist as a mount point.
const DOCKER_DIR: &str = "/var/lib/docker";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Spec {
    /// tmpfs mounts in the fixture's host namespace.
    pub mounts: u32,
    /// Holder namespaces, each a copy of the host namespace.
    pub holders: u32,
    /// Sleeping processes per holder namespace.
    pub per: u32,
    /// "none", "keep" or "leak" (see helper.rs `Overlay`).
    pub overlay: &'static str,
}

pub struct Fixture {
    guard: Option<Guard>,
    stdin: Option<ChildStdin>,
    pub host_pid: u32,
    pub host_ns: u64,
    /// The container overlay's mount point, if the spec asked for one.
    pub overlay: Option<PathBuf>,
    /// Host namespace first, then the holders'.
    pub namespaces: BTreeSet<u64>,
    pub holder_pids: Vec<u32>,
    pub setup: Duration,
    scratch: PathBuf,
    made_docker_dir: bool,
    torn_down: bool,
}

impl Fixture {
    pub fn start(spec: &Spec) -> Result<Fixture> {
        let id = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let scratch = std::env::temp_dir().join(format!("mountleak-bench-{id}"));
        fs::create_dir_all(&scratch).with_context(|| format!("mkdir {}", scratch.display()))?;
        let made_docker_dir = spec.overlay != "none" && !Path::new(DOCKER_DIR).exists();
        if made_docker_dir {
            fs::create_dir_all(DOCKER_DIR).with_context(|| format!("mkdir {DOCKER_DIR}"))?;
        }
        let mut fixture = Fixture {
            guard: None,
            stdin: None,
            host_pid: 0,
            host_ns: 0,
            overlay: None,
            namespaces: BTreeSet::new(),
            holder_pids: Vec::new(),
            setup: Duration::ZERO,
            scratch,
            made_docker_dir,
            torn_down: false,
        };
        // From here on, an error drops `fixture`, which tears down whatever
        // was made.
        let mut cmd = Command::new(sys::self_exe()?);
        cmd.args(["bench", "__fixture", "--scratch"])
            .arg(&fixture.scratch)
            .args(["--mounts", &spec.mounts.to_string()])
            .args(["--holders", &spec.holders.to_string()])
            .args(["--per", &spec.per.to_string()])
            .args(["--overlay", spec.overlay])
            .args(["--overlay-id", &format!("{:064x}", 0xbe_4c_u64)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        println!(
            "bench: fixture: {} mounts, {} namespaces x {} processes, overlay {}",
            spec.mounts, spec.holders, spec.per, spec.overlay
        );
        let mut guard = Guard::spawn(&mut cmd, "the namespace fixture")?;
        fixture.stdin = guard.child().stdin.take();
        let mut lines = Lines::read(guard.child().stdout.take().expect("piped"));
        fixture.guard = Some(guard);
        let ready = lines
            .wait_for(Duration::from_secs(300), |l| l.starts_with("ready "))
            .context("the fixture did not get ready")?;
        let field = |key: &str| -> Option<String> {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        fixture.host_pid = sys::field(&ready, "host_pid")? as u32;
        fixture.host_ns = sys::field(&ready, "host_ns")? as u64;
        fixture.setup = Duration::from_millis(sys::field(&ready, "setup_ms")? as u64);
        fixture.namespaces.insert(fixture.host_ns);
        fixture.overlay = field("overlay").filter(|o| o != "-").map(PathBuf::from);
        for pair in field("holders").unwrap_or_default().split(',') {
            if let Some((pid, ns)) = pair.split_once(':') {
                fixture.holder_pids.push(pid.parse()?);
                fixture.namespaces.insert(ns.parse()?);
            }
        }
        println!(
            "bench: fixture ready in {:.1} s: host pid {} (mnt ns {}), {} namespaces",
            fixture.setup.as_secs_f64(),
            fixture.host_pid,
            fixture.host_ns,
            fixture.namespaces.len()
        );
        Ok(fixture)
    }

    /// A command that runs `program` in the fixture's host namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.host_pid))
            .args(["--mount", "--"])
            .arg(program);
        cmd
    }

    /// The `nsenter …` prefix as text, for hyperfine and for the report.
    pub fn nsenter_prefix(&self) -> String {
        format!("nsenter --target={} --mount --", self.host_pid)
    }

    /// Ends every fixture process, waits until none of its namespaces has a
    /// process left, and removes the (empty) directories it made.
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let started = Instant::now();
        // EOF on the helper's stdin: it kills and reaps its holders.
        drop(self.stdin.take());
        let mut result = Ok(());
        if let Some(guard) = self.guard.take() {
            match guard.wait(Duration::from_secs(120)) {
                Ok(status) if status.success() => {}
                Ok(status) => result = Err(anyhow::anyhow!("the fixture exited with {status}")),
                Err(err) => result = Err(err),
            }
        }
        // Anything still in our namespaces is a bug; wait a little, then say so.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = sys::processes_in(&self.namespaces);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                result = result.and(Err(anyhow::anyhow!(
                    "processes {left:?} are still in the fixture's namespaces"
                )));
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if let Err(err) = fs::remove_dir(&self.scratch) {
            result =
                result.and(Err(err).with_context(|| format!("remove {}", self.scratch.display())));
        }
        if self.made_docker_dir {
            if let Err(err) = fs::remove_dir(DOCKER_DIR) {
                eprintln!("bench: could not remove {DOCKER_DIR} (made for the fixture): {err}");
            }
        }
        println!(
            "bench: fixture torn down in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        result
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(err) = self.teardown_inner() {
            eprintln!("bench: fixture teardown: {err:#}");
        }
    }
}
