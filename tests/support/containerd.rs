//! A real, standalone containerd for root tests: its own config file, root,
//! state dir and socket under a private directory in /run (never the
//! host's /run/containerd, never Docker's), runc as the runtime, and the CRI
//! plugin on, configured the way PLATFORM.md found it works here
//! (`restrict_oom_score_adj = true`, host network, a local sandbox image).
//!
//! No registry is reachable, so [`Containerd::start`] builds an OCI image
//! layout from busybox-static (one layer: `/bin/busybox` and a few links)
//! holding two images, [`IMAGE`] and the sandbox image [`PAUSE_IMAGE`]
//! (busybox `sleep infinity` as its entrypoint), and imports it into the
//! `default` and `k8s.io` namespaces with `ctr images import`.
//!
//! [`Cri`] is a minimal CRI client (tonic, the `k8s-cri` protos) that does
//! what kubelet does for a pod: RunPodSandbox with the pod labels, a log
//! directory and host networking; CreateContainer with a bind mount from a
//! kubelet-like emptyDir path (a real tmpfs: [`Containerd::empty_dir`]);
//! Start, Stop, Remove; StopPodSandbox, RemovePodSandbox.
//!
//! Dropping a [`Containerd`] kills and deletes its tasks and containers,
//! stops it and any shim it left, unmounts everything under its directory
//! and the emptyDirs, and removes what it created. It holds
//! [`super::exclusive`] for its whole life.
//!
//! May import: std, libc, tokio, containerd-client (for its socket
//! connector), k8s-cri and `super`. Needs root, containerd, runc,
//! busybox-static, tar and coreutils (`cargo xtask setup`).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};

use super::{check, exclusive, Exclusive};

/// The image test containers run: busybox-static with `sh` and `sleep`.
pub const IMAGE: &str = "mountleak.local/busybox:1";
/// The CRI sandbox ("pause") image, set as `sandbox_image` in the config:
/// the same layer with `sleep infinity` as its entrypoint.
pub const PAUSE_IMAGE: &str = "mountleak.local/pause:1";
/// The namespace `ctr` uses by default, and the CRI's.
pub const DEFAULT_NS: &str = "default";
pub const CRI_NS: &str = "k8s.io";

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const BUSYBOX: &str = "/bin/busybox";
/// Applets linked into the image's /bin.
const APPLETS: &[&str] = &["sh", "sleep", "cat", "ls", "echo", "true", "mkdir", "touch"];

/// containerd 1.6 is ready in well under a second here; a loaded CI
/// machine gets more.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// SIGTERM to exit, before SIGKILL.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for a container or pod: containers share the host's
/// cgroup tree (runc makes `/<namespace>/<id>`), so ids must not repeat
/// across test runs that overlap or leak.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A containerd of this test's own. See the module docs.
pub struct Containerd {
    /// `/run/mountleak-containerd-<pid>-<n>`: config, socket, root, state,
    /// log, image and pod log directories.
    dir: PathBuf,
    child: Option<Child>,
    /// `/var/lib/kubelet/pods/<uid>` directories made by [`Self::empty_dir`].
    pod_dirs: Vec<PathBuf>,
    /// Declared last: released after Drop has cleaned up.
    _exclusive: Exclusive,
}

impl Containerd {
    /// Takes the test lock, writes the config, starts containerd, waits
    /// until it answers, and imports [`IMAGE`] and [`PAUSE_IMAGE`] into
    /// `default` and `k8s.io`.
    pub fn start() -> Containerd {
        super::require_root();
        let exclusive = exclusive();
        for tool in [CONTAINERD, CTR, SHIM, BUSYBOX, "/usr/sbin/runc"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install containerd, runc and busybox-static \
                 (`cargo xtask setup`)"
            );
        }
        let dir = PathBuf::from(format!("/run/{}", unique("mountleak-containerd")));
        let mut ctrd = Containerd {
            dir,
            child: None,
            pod_dirs: Vec::new(),
            _exclusive: exclusive,
        };
        for sub in [
            "root", "state", "opt", "logs", "cni/bin", "cni/conf", "image",
        ] {
            fs::create_dir_all(ctrd.dir.join(sub))
                .unwrap_or_else(|err| panic!("create {}: {err}", ctrd.dir.display()));
        }
        fs::write(ctrd.config_path(), ctrd.config())
            .unwrap_or_else(|err| panic!("write {}: {err}", ctrd.config_path().display()));
        ctrd.spawn().unwrap_or_else(|err| panic!("{err}"));
        let tarball = ctrd.build_images();
        for ns in [DEFAULT_NS, CRI_NS] {
            check(
                ctrd.ctr(ns)
                    .args(["images", "import", "--all-platforms"])
                    .arg(&tarball),
            )
            .unwrap_or_else(|failed| panic!("{failed}\n{}", ctrd.log_tail()));
        }
        ctrd
    }

    /// The gRPC socket (also the CRI endpoint).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's `state` directory: task bundles live under
    /// `<state>/io.containerd.runtime.v2.task/<ns>/<id>`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where runc's shim mounts a task's rootfs.
    pub fn rootfs(&self, ns: &str, id: &str) -> PathBuf {
        self.state_dir()
            .join("io.containerd.runtime.v2.task")
            .join(ns)
            .join(id)
            .join("rootfs")
    }

    /// The containerd process (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// containerd 1.6's config (version 2). Every path is private; the CRI
    /// plugin gets the local sandbox image, runc through the v2 shim with
    /// cgroupfs, and an empty CNI directory (pods use the host network, so
    /// CNI is never called; containerd logs once that it found no config).
    fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # PLATFORM.md: without it the CRI plugin fails to create containers here
  # (it would set an oom_score_adj below the test's own).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#
        )
    }

    /// Starts containerd on the config and waits until it answers. An
    /// error, not a panic: Drop uses it too.
    fn spawn(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .map_err(|err| format!("open the containerd log: {err}"))?;
        let err_log = log
            .try_clone()
            .map_err(|err| format!("dup the containerd log: {err}"))?;
        let mut cmd = Command::new(CONTAINERD);
        cmd.arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        // SAFETY: one async-signal-safe syscall between fork and exec. If
        // the test binary dies without running Drop, containerd goes with
        // it (its shims and containers stay; the next run's ids differ).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|err| format!("start {CONTAINERD}: {err}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "containerd exited ({status}):\n{}",
                        self.log_tail()
                    ));
                }
            }
            let answered = self
                .ctr(DEFAULT_NS)
                .arg("version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "containerd did not answer within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kill -9` containerd (its shims and containers live on, as they do
    /// when containerd crashes).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts containerd again after [`Self::kill9`], on the same config,
    /// root and state: it reconnects to the running shims.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "containerd still runs");
        self.spawn().unwrap_or_else(|err| panic!("{err}"));
    }

    /// `ctr --address <socket> --namespace <ns>`; add arguments.
    pub fn ctr(&self, ns: &str) -> Command {
        let mut cmd = Command::new(CTR);
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", ns]);
        cmd
    }

    /// `ctr run -d` of [`IMAGE`] running `sleep infinity`, with `extra`
    /// options before the image (`--mount ...`, `--label ...`). Returns
    /// the init pid.
    pub fn ctr_run(&self, ns: &str, id: &str, extra: &[&str]) -> u32 {
        check(self.ctr(ns).args(["run", "-d"]).args(extra).args([
            IMAGE,
            id,
            "/bin/sleep",
            "infinity",
        ]))
        .unwrap_or_else(|failed| panic!("{failed}\n{}", self.log_tail()));
        self.task_pid(ns, id)
            .unwrap_or_else(|| panic!("ctr run {id}: no running task"))
    }

    /// `ctr container create` of [`IMAGE`]: a container with its snapshot
    /// prepared and no task.
    pub fn ctr_create(&self, ns: &str, id: &str) {
        check(
            self.ctr(ns)
                .args(["containers", "create", IMAGE, id, "/bin/sleep", "infinity"]),
        )
        .unwrap_or_else(|failed| panic!("{failed}\n{}", self.log_tail()));
    }

    /// The pid of a container's task, as `ctr task ls` shows it.
    pub fn task_pid(&self, ns: &str, id: &str) -> Option<u32> {
        let out = check(self.ctr(ns).args(["tasks", "ls"])).ok()?;
        out.lines().skip(1).find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(id))
                .then(|| fields.next()?.parse().ok())
                .flatten()
        })
    }

    /// `ctr task kill -s SIGKILL`, waiting until the task is stopped.
    pub fn kill_task(&self, ns: &str, id: &str) {
        check(
            self.ctr(ns)
                .args(["tasks", "kill", "-a", "-s", "SIGKILL", id]),
        )
        .unwrap_or_else(|failed| panic!("{failed}"));
        super::wait_until(&format!("task {id} to stop"), || {
            check(self.ctr(ns).args(["tasks", "ls"]))
                .map(|out| {
                    out.lines()
                        .any(|l| l.starts_with(&format!("{id} ")) && l.contains("STOPPED"))
                })
                .unwrap_or(false)
        });
    }

    /// Deletes a stopped container's task and then the container
    /// (`ctr task rm`, `ctr container rm`): what `ctr run --rm` does.
    pub fn remove(&self, ns: &str, id: &str) {
        check(self.ctr(ns).args(["tasks", "rm", "-f", id]))
            .unwrap_or_else(|failed| panic!("{failed}"));
        check(self.ctr(ns).args(["containers", "rm", id]))
            .unwrap_or_else(|failed| panic!("{failed}"));
    }

    /// A kubelet-like emptyDir volume for pod `uid`: a real tmpfs mounted at
    /// `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`
    /// on the host, unmounted and removed on drop.
    pub fn empty_dir(&mut self, uid: &str, name: &str) -> PathBuf {
        let pod_dir = PathBuf::from("/var/lib/kubelet/pods").join(uid);
        let path = pod_dir.join("volumes/kubernetes.io~empty-dir").join(name);
        fs::create_dir_all(&path).unwrap_or_else(|err| panic!("create {}: {err}", path.display()));
        if !self.pod_dirs.contains(&pod_dir) {
            self.pod_dirs.push(pod_dir);
        }
        check(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=16m", "mountleak-emptydir"])
                .arg(&path),
        )
        .unwrap_or_else(|failed| panic!("{failed}"));
        path
    }

    /// A CRI client on this containerd's socket.
    pub async fn cri(&self) -> Cri {
        Cri::connect(&self.socket(), &self.dir.join("logs")).await
    }

    /// Writes the OCI image layout (one busybox layer, two images) and
    /// tars it up for `ctr images import`. Digests come from `sha256sum`;
    /// the layer is tarred with fixed owners and times.
    fn build_images(&self) -> PathBuf {
        let work = self.dir.join("image");
        let rootfs = work.join("rootfs");
        let layout = work.join("layout");
        let blobs = layout.join("blobs/sha256");
        for d in [rootfs.join("bin"), blobs.clone()] {
            fs::create_dir_all(&d).unwrap_or_else(|err| panic!("create {}: {err}", d.display()));
        }
        for d in ["proc", "sys", "dev", "etc", "tmp", "run", "data"] {
            fs::create_dir_all(rootfs.join(d)).unwrap_or_else(|err| panic!("mkdir {d}: {err}"));
        }
        fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
            .unwrap_or_else(|err| panic!("copy {BUSYBOX}: {err}"));
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .unwrap_or_else(|err| panic!("link {applet}: {err}"));
        }
        let layer = work.join("layer.tar");
        check(
            Command::new("tar")
                .args([
                    "--sort=name",
                    "--mtime=@0",
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "-C",
                ])
                .arg(&rootfs)
                .arg("-cf")
                .arg(&layer)
                .arg("."),
        )
        .unwrap_or_else(|failed| panic!("{failed}"));
        let layer_desc = add_blob(&blobs, "application/vnd.oci.image.layer.v1.tar", &layer);

        let mut manifests = Vec::new();
        for (name, process) in [
            (IMAGE, r#""Cmd": ["/bin/sh"]"#),
            (PAUSE_IMAGE, r#""Entrypoint": ["/bin/sleep", "infinity"]"#),
        ] {
            let config = format!(
                r#"{{"architecture": "amd64", "os": "linux", "config": {{{process}}}, "rootfs": {{"type": "layers", "diff_ids": ["{}"]}}}}"#,
                layer_desc.digest
            );
            let config = write_blob(
                &blobs,
                &work,
                "application/vnd.oci.image.config.v1+json",
                &config,
            );
            let manifest = format!(
                r#"{{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": [{}]}}"#,
                config.json(),
                layer_desc.json()
            );
            let manifest = write_blob(
                &blobs,
                &work,
                "application/vnd.oci.image.manifest.v1+json",
                &manifest,
            );
            // ctr names an imported image after this annotation.
            manifests.push(format!(
                r#"{{"mediaType": "{}", "digest": "{}", "size": {}, "annotations": {{"io.containerd.image.name": "{name}"}}}}"#,
                manifest.media_type, manifest.digest, manifest.size
            ));
        }
        let index = format!(
            r#"{{"schemaVersion": 2, "manifests": [{}]}}"#,
            manifests.join(", ")
        );
        fs::write(layout.join("index.json"), index).unwrap_or_else(|err| panic!("index: {err}"));
        fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion": "1.0.0"}"#,
        )
        .unwrap_or_else(|err| panic!("oci-layout: {err}"));
        let tarball = work.join("images.tar");
        check(
            Command::new("tar")
                .arg("-C")
                .arg(&layout)
                .arg("-cf")
                .arg(&tarball)
                .arg("."),
        )
        .unwrap_or_else(|failed| panic!("{failed}"));
        tarball
    }

    /// Kills and deletes every task and container, namespace by namespace.
    fn remove_everything(&self) {
        let namespaces = check(self.ctr(DEFAULT_NS).args(["namespaces", "ls", "-q"]))
            .map(|out| out.lines().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default();
        for ns in &namespaces {
            let tasks = check(self.ctr(ns).args(["tasks", "ls", "-q"])).unwrap_or_default();
            for id in tasks.lines() {
                let _ = check(
                    self.ctr(ns)
                        .args(["tasks", "kill", "-a", "-s", "SIGKILL", id]),
                );
            }
            for id in tasks.lines() {
                match check(self.ctr(ns).args(["tasks", "rm", "-f", id])) {
                    // The CRI plugin deletes a task itself once it exits.
                    Err(failed) if failed.stderr.contains("not found") => {}
                    Err(failed) => eprintln!("containerd cleanup: {failed}"),
                    Ok(_) => {}
                }
            }
            let containers =
                check(self.ctr(ns).args(["containers", "ls", "-q"])).unwrap_or_default();
            for id in containers.lines() {
                if let Err(failed) = check(self.ctr(ns).args(["containers", "rm", id])) {
                    eprintln!("containerd cleanup: {failed}");
                }
            }
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
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
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Shims started by this containerd that outlived it (after a test
    /// killed it, or a cleanup that failed): their command line names our
    /// socket.
    fn kill_own_shims(&self) {
        let socket = self.socket();
        let needle = socket.as_os_str().as_encoded_bytes();
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let mut cmdline = Vec::new();
            if fs::File::open(entry.path().join("cmdline"))
                .and_then(|mut f| f.read_to_end(&mut cmdline))
                .is_err()
            {
                continue;
            }
            let is_shim =
                cmdline.starts_with(SHIM.as_bytes()) || cmdline.starts_with(b"containerd-shim");
            if is_shim && cmdline.windows(needle.len()).any(|w| w == needle) {
                // SAFETY: kill(2) on a pid we just read; at worst it is gone.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Containerd {
    /// Best effort and never panics (a panic while unwinding would abort
    /// the test binary); problems are printed.
    fn drop(&mut self) {
        if self.child.is_none() {
            // A test killed it: bring it back to delete what it knows.
            if let Err(err) = self.spawn() {
                eprintln!("containerd cleanup: could not restart it: {err}");
            }
        }
        if self.child.is_some() {
            self.remove_everything();
        }
        self.stop();
        self.kill_own_shims();
        let mut points: Vec<PathBuf> = super::mount_points(std::process::id())
            .into_iter()
            .filter(|p| p.starts_with(&self.dir) || self.pod_dirs.iter().any(|d| p.starts_with(d)))
            .collect();
        // Deepest first, and lazily: a holder may still keep one busy.
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        points.dedup();
        for point in points {
            if let Err(failed) = check(Command::new("umount").arg("--lazy").arg(&point)) {
                eprintln!("containerd cleanup: {failed}");
            }
        }
        for dir in self.pod_dirs.iter().chain([&self.dir]) {
            if let Err(err) = fs::remove_dir_all(dir) {
                eprintln!("containerd cleanup: remove {}: {err}", dir.display());
            }
        }
    }
}

/// A blob in the image layout.
struct Blob {
    media_type: &'static str,
    digest: String,
    size: u64,
}

impl Blob {
    fn json(&self) -> String {
        format!(
            r#"{{"mediaType": "{}", "digest": "{}", "size": {}}}"#,
            self.media_type, self.digest, self.size
        )
    }
}

/// Moves `file` into the layout's blobs under its sha256.
fn add_blob(blobs: &Path, media_type: &'static str, file: &Path) -> Blob {
    let out =
        check(Command::new("sha256sum").arg(file)).unwrap_or_else(|failed| panic!("{failed}"));
    let hex = out
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("sha256sum printed nothing for {}", file.display()))
        .to_string();
    let size = fs::metadata(file)
        .unwrap_or_else(|err| panic!("stat {}: {err}", file.display()))
        .len();
    fs::rename(file, blobs.join(&hex)).unwrap_or_else(|err| panic!("move a blob: {err}"));
    Blob {
        media_type,
        digest: format!("sha256:{hex}"),
        size,
    }
}

fn write_blob(blobs: &Path, work: &Path, media_type: &'static str, text: &str) -> Blob {
    let tmp = work.join("blob.tmp");
    fs::write(&tmp, text).unwrap_or_else(|err| panic!("write {}: {err}", tmp.display()));
    add_blob(blobs, media_type, &tmp)
}

/// A pod as kubelet describes it to the runtime.
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    config: PodSandboxConfig,
}

/// The CRI runtime service, the way kubelet drives it.
pub struct Cri {
    client: RuntimeServiceClient<containerd_client::tonic::transport::Channel>,
    logs: PathBuf,
}

impl Cri {
    async fn connect(socket: &Path, logs: &Path) -> Cri {
        let channel = containerd_client::connect(socket)
            .await
            .unwrap_or_else(|err| panic!("connect to {}: {err:?}", socket.display()));
        Cri {
            client: RuntimeServiceClient::new(channel),
            logs: logs.to_path_buf(),
        }
    }

    /// RunPodSandbox with host networking and kubelet's pod labels.
    pub async fn run_pod(&mut self, name: &str, namespace: &str, uid: &str) -> Pod {
        let log_directory = self.logs.join(format!("{namespace}_{name}_{uid}"));
        fs::create_dir_all(&log_directory)
            .unwrap_or_else(|err| panic!("create {}: {err}", log_directory.display()));
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            // No hostname: kubelet sets none for a host-network pod (its
            // UTS namespace is the host's; runc refuses to set one).
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels: pod_labels(name, namespace, uid),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("RunPodSandbox {namespace}/{name}: {status:?}"))
            .into_inner()
            .pod_sandbox_id;
        Pod {
            id,
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.into(),
            config,
        }
    }

    /// CreateContainer of [`IMAGE`] running `sleep infinity`, with
    /// `volume` (a host path) bind-mounted at `/data`, labelled as kubelet
    /// labels containers. Returns the container id.
    pub async fn create_container(&mut self, pod: &Pod, name: &str, volume: &Path) -> String {
        let mut labels = pod_labels(&pod.name, &pod.namespace, &pod.uid);
        labels.insert("io.kubernetes.container.name".into(), name.into());
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["/bin/sleep".into(), "infinity".into()],
            mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: volume.to_string_lossy().into_owned(),
                ..Default::default()
            }],
            labels,
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            })
            .await
            .unwrap_or_else(|status| panic!("CreateContainer {name}: {status:?}"))
            .into_inner()
            .container_id
    }

    pub async fn start_container(&mut self, id: &str) {
        self.client
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("StartContainer {id}: {status:?}"));
    }

    /// StopContainer with `timeout` seconds between SIGTERM and SIGKILL
    /// (busybox `sleep` as pid 1 ignores SIGTERM, so 0 means kill now).
    pub async fn stop_container(&mut self, id: &str, timeout: i64) {
        self.client
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .unwrap_or_else(|status| panic!("StopContainer {id}: {status:?}"));
    }

    pub async fn remove_container(&mut self, id: &str) {
        self.client
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("RemoveContainer {id}: {status:?}"));
    }

    pub async fn stop_pod(&mut self, pod: &Pod) {
        self.client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("StopPodSandbox {}: {status:?}", pod.name));
    }

    pub async fn remove_pod(&mut self, pod: &Pod) {
        self.client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("RemovePodSandbox {}: {status:?}", pod.name));
    }
}

/// The labels kubelet puts on a pod sandbox (kubelet
/// `pkg/kubelet/types/labels.go`); containers get these plus
/// `io.kubernetes.container.name`.
fn pod_labels(name: &str, namespace: &str, uid: &str) -> HashMap<String, String> {
    HashMap::from([
        ("io.kubernetes.pod.name".to_string(), name.to_string()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            namespace.to_string(),
        ),
        ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
    ])
}

/// A process in a mount namespace of its own, copied from the host's with
/// private propagation, sleeping with its cwd at `cwd` (inside the copy, so
/// it pins whatever is mounted there). Killed on drop.
pub struct Holder {
    child: Child,
}

impl Holder {
    pub fn with_cwd(cwd: &Path) -> Holder {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"cd "$1" && exec sleep infinity"#)
            .arg("sh")
            .arg(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: one async-signal-safe syscall between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("start a holder: {err}"));
        let pid = child.id();
        super::wait_until(&format!("the holder in {} to sleep", cwd.display()), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the holder exited ({status}): could it cd to {}?",
                    cwd.display()
                );
            }
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "sleep")
        });
        Holder { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
