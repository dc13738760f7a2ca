//! A real dockerd for the lifecycle bench, started by hand with the flags
//! PLATFORM.md measured (`--storage-driver=overlay2 --iptables=false
//! --bridge=none --ip-forward=false`), its own socket, pidfile and
//! exec-root under /run, and the default data root (/var/lib/docker, where
//! mountleak's built-in patterns look). No registry is reachable: the image
//! is busybox-static's binary in an otherwise empty rootfs, imported once
//! (the data root keeps it).
//!
//! Drop removes every container the bench made, stops dockerd and its
//! containerd, and removes the directory, on success and on error alike.
//! Runs under the tests' lock (the root tests use the same data root).
//!
//! May import: std, anyhow, libc and `super::sys`.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::sys::{self, Guard};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// The CLI Debian's docker.io installs (speaks the engine's API 1.41); a
/// newer one elsewhere on PATH would have to negotiate.
const DOCKER_CLI: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";
/// Our own image name (the tests' image is theirs to manage).
pub const IMAGE: &str = "mountleak-bench-busybox";
/// Every container the bench makes is named with this prefix, so a crashed
/// earlier run's leftovers can be found and removed.
pub const PREFIX: &str = "mlbench-";

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// `docker run`/`docker rm` in parallel: dockerd and containerd serialise
/// much of the work anyway, and this VM has 2 cores.
const WORKERS: usize = 4;

pub struct Dockerd {
    dir: PathBuf,
    guard: Option<Guard>,
}

impl Dockerd {
    /// Starts dockerd, waits for `/_ping`, removes leftovers of an earlier
    /// bench and makes sure [`IMAGE`] exists.
    pub fn start() -> Result<Dockerd> {
        for tool in [DOCKERD, DOCKER_CLI, BUSYBOX] {
            ensure!(
                Path::new(tool).exists(),
                "{tool} is missing: install docker.io and busybox-static (`cargo xtask setup`)"
            );
        }
        let dir = PathBuf::from("/run/mountleak-bench-dockerd");
        kill_orphans(&dir);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let log = fs::File::create(dir.join("dockerd.log"))?;
        let mut cmd = Command::new(DOCKERD);
        cmd.args([
            "--storage-driver=overlay2",
            "--iptables=false",
            "--bridge=none",
            "--ip-forward=false",
        ])
        .arg(format!(
            "--host=unix://{}",
            dir.join("docker.sock").display()
        ))
        .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
        .arg(format!("--exec-root={}", dir.join("exec").display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        let guard = Guard::spawn(&mut cmd, "dockerd")?;
        let mut d = Dockerd {
            dir,
            guard: Some(guard),
        };
        let started = Instant::now();
        while !d.ping() {
            if let Some(status) = d.guard.as_mut().map(Guard::try_wait).transpose()?.flatten() {
                d.guard = None;
                bail!("dockerd exited ({status}):\n{}", d.log_tail());
            }
            ensure!(
                started.elapsed() < READY_TIMEOUT,
                "dockerd did not answer /_ping within {READY_TIMEOUT:?}:\n{}",
                d.log_tail()
            );
            thread::sleep(Duration::from_millis(50));
        }
        println!(
            "bench: dockerd ready in {:.1} s (pid {})",
            started.elapsed().as_secs_f64(),
            d.pid()
        );
        d.remove_all()?;
        d.ensure_image()?;
        Ok(d)
    }

    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map_or(0, Guard::pid)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn ping(&self) -> bool {
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
        answer.starts_with("HTTP/1.") && answer.contains(" 200 ")
    }

    /// The docker CLI against this engine.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.arg(format!("--host=unix://{}", self.socket().display()));
        cmd
    }

    /// `docker ARGS`: its stdout, trimmed; an error with its stderr.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        docker_at(&self.socket(), args)
    }

    fn ensure_image(&self) -> Result<()> {
        if self
            .docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE])
            .is_ok()
        {
            return Ok(());
        }
        let rootfs = self.dir.join("rootfs");
        for sub in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
            fs::create_dir_all(rootfs.join(sub))?;
        }
        fs::copy(BUSYBOX, rootfs.join("bin/busybox"))?;
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .context("run tar")?;
        let stream = tar.stdout.take().context("tar's stdout")?;
        let import = self
            .cli()
            .args(["import", "-", IMAGE])
            .stdin(stream)
            .output()
            .context("run docker import")?;
        let tar_status = tar.wait()?;
        ensure!(
            tar_status.success() && import.status.success(),
            "importing {IMAGE} failed (tar {tar_status}, import {}): {}",
            import.status,
            String::from_utf8_lossy(&import.stderr)
        );
        let _ = fs::remove_dir_all(&rootfs);
        Ok(())
    }

    /// `docker run -d --name NAME IMAGE sleep 100000` for every name, a few
    /// at a time; returns the ids in the order of `names`.
    pub fn run_many(&self, names: &[String]) -> Result<Vec<String>> {
        let socket = self.socket();
        let ids = parallel(names, |name| {
            let id = docker_at(
                &socket,
                &["run", "-d", "--name", name, IMAGE, "sleep", "100000"],
            )?;
            ensure!(id.len() == 64, "docker run printed {id:?}, not an id");
            Ok(id)
        })?;
        Ok(ids)
    }

    /// Every container named with [`PREFIX`] (this run's and a crashed
    /// earlier run's), removed with its volumes.
    pub fn remove_all(&self) -> Result<()> {
        let list = self.docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("name=^{PREFIX}"),
        ])?;
        let ids: Vec<String> = list.lines().map(str::to_owned).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let socket = self.socket();
        let chunks: Vec<Vec<String>> = ids.chunks(16).map(<[String]>::to_vec).collect();
        parallel(&chunks, |chunk| {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(chunk.iter().map(String::as_str));
            docker_at(&socket, &args).map(drop)
        })?;
        println!(
            "bench: removed {} containers in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn containerd_pid(&self) -> Option<libc::pid_t> {
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        let pid = fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "containerd").then_some(pid)
    }

    /// Removes the containers, stops dockerd (SIGTERM, then SIGKILL) and
    /// its containerd, removes the directory. Errors are the first problem
    /// met; every step is tried.
    pub fn teardown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let Some(guard) = self.guard.take() else {
            return Ok(());
        };
        let mut first = self.remove_all().err();
        let containerd = self.containerd_pid();
        if let Err(err) = guard.stop(libc::SIGTERM, SHUTDOWN_TIMEOUT) {
            first.get_or_insert(err);
        }
        if let Some(pid) = containerd {
            let started = Instant::now();
            while sys::alive(pid as u32) && started.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(20));
            }
            if sys::alive(pid as u32) {
                // SAFETY: a signal to the containerd our dockerd started
                // (named by its pidfile, comm checked).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            first.get_or_insert(anyhow::anyhow!("remove {}: {err}", self.dir.display()));
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("bench: dockerd teardown: {err:#}");
        }
    }
}

/// A bench killed before its teardown (SIGKILL, Ctrl-C) takes dockerd and
/// containerd with it (PDEATHSIG), but not the containers' shims and
/// processes; a dockerd started later does not stop them either. Kills
/// the shims that were started for a dockerd at `dir`, and their children
/// (the containers' init processes).
fn kill_orphans(dir: &Path) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    let address = format!("-address {}/", dir.display());
    let shims: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains("containerd-shim") && cmdline.contains(&address)
        })
        .collect();
    if shims.is_empty() {
        return;
    }
    println!(
        "bench: killing {} containers left running by an earlier bench",
        shims.len()
    );
    for &shim in &shims {
        let children =
            fs::read_to_string(format!("/proc/{shim}/task/{shim}/children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            // SAFETY: a signal to a container init whose parent is a shim of
            // the bench's own dockerd (matched by its socket address).
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
    }
    thread::sleep(Duration::from_millis(500));
    for &shim in &shims {
        // SAFETY: as above, the shim itself.
        unsafe { libc::kill(shim as libc::pid_t, libc::SIGKILL) };
    }
}

fn docker_at(socket: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(DOCKER_CLI)
        .arg(format!("--host=unix://{}", socket.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run docker")?;
    ensure!(
        out.status.success(),
        "`docker {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `f` over `items` on [`WORKERS`] threads; results in order, or the first
/// error. Only short-lived CLI processes are started from these threads
/// (PDEATHSIG would follow the thread, see `sys::die_with_parent`).
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let per = items.len().div_ceil(WORKERS).max(1);
    let results: Vec<Result<Vec<R>>> = thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| s.spawn(|| chunk.iter().map(&f).collect::<Result<Vec<R>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a worker panicked")))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}
