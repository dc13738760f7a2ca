//! Docker adapter: the Engine API over its unix socket (bollard), turned
//! into `ContainerEvent`s.
//!
//! One connection ("session") goes: learn the engine's API version (the
//! engine here speaks 1.41, bollard starts higher; from `/_ping`'s header,
//! else by bollard's negotiation), read the daemon's root dir,
//! list and inspect every container (`Seen` each, then `Inventory`), then
//! follow `/events` for containers, and poll for `dead` containers every
//! [`DEAD_POLL`] (Docker emits no event when a removal fails). Any engine
//! error ends the session; [`run`] backs off and starts a new one, which
//! resyncs the model through the next inventory.
//!
//! What Docker sends around a stop, measured on this engine (20.10):
//! `kill`, `die` (its processes are gone), the rootfs unmount and the rmdir
//! of `merged`, then `stop` about 80 ms after `die`; `docker kill` sends no
//! `stop`; `docker rm` sends `destroy` only. So `die` is the earliest word of
//! a stop: it becomes `Stopped` before anything else is asked of the engine,
//! and a following `stop` is deduplicated.
//!
//! Owns: talking to dockerd. May import bollard, tokio, tracing, the model's
//! input types and `procfs::clock`; never the probes or the scanner.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, EventMessage};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::{ClientVersion, Docker};
use futures_util::{FutureExt, StreamExt};
use monitor_model::{ContainerEvent, ContainerInfo, ContainerState, Dev, Input, Ktime, PathBytes};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Backoff, RuntimeStatus, Sink};
use crate::procfs::clock;

/// The runtime name in `ContainerInfo::runtime` and `RuntimeStatus`.
pub const RUNTIME: &str = "docker";

/// How often dead containers are listed. Docker says nothing when `docker
/// rm` fails (the container just turns `dead`), so this bounds how late a
/// failed removal is reported. It doubles as a liveness check of an engine
/// that stopped answering while its event stream stays open.
pub const DEAD_POLL: Duration = Duration::from_secs(2);

/// Per-request timeout (bollard applies it up to the response headers, so
/// the long-lived event stream is not cut by it). A local engine answers in
/// milliseconds; one that takes this long is treated as down.
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// A session that lasted this long resets the backoff: the engine was up,
/// so the next failure starts again from a short delay.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Inspects in flight while taking an inventory.
const INVENTORY_CONCURRENCY: usize = 8;

/// Events read in one go before their inspects run: a burst of stops gets
/// all its `Stopped`s out before the first inspect.
const MAX_BATCH: usize = 256;

/// Where dockerd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerConfig {
    pub socket: PathBuf,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket: PathBuf::from("/var/run/docker.sock"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// bollard takes the socket path as text.
    #[error("docker socket path {0:?} is not UTF-8")]
    SocketPath(PathBuf),
    #[error("docker engine at {socket}: {what}: {source}")]
    Engine {
        socket: PathBuf,
        what: &'static str,
        #[source]
        source: BollardError,
    },
    #[error("docker engine at {0}: the event stream ended")]
    StreamEnded(PathBuf),
}

impl DockerError {
    /// An engine error while doing `what`.
    fn engine(cfg: &DockerConfig, what: &'static str, source: BollardError) -> Self {
        DockerError::Engine {
            socket: cfg.socket.clone(),
            what,
            source,
        }
    }
}

/// Why a session ended.
enum End {
    /// The engine failed or went away: back off and reconnect.
    Engine(DockerError),
    /// The daemon dropped its receiver: shutting down.
    SinkClosed,
}

impl From<DockerError> for End {
    fn from(err: DockerError) -> Self {
        End::Engine(err)
    }
}

/// Follows dockerd at `cfg.socket` and sends what it learns to `sink`, with
/// the connection's state in `status`. Runs until the receiving end of
/// `sink` is dropped; an engine that is down, restarting or failing is
/// retried with [`Backoff`], never fatal.
#[tracing::instrument(name = "docker", skip_all, fields(socket = %cfg.socket.display()))]
pub async fn run(cfg: DockerConfig, sink: Sink, status: watch::Sender<RuntimeStatus>) {
    let mut state = RuntimeStatus {
        runtime: RUNTIME,
        ..RuntimeStatus::default()
    };
    status.send_replace(state.clone());
    let mut backoff = Backoff::new();
    // Whether the last failure was logged at warn level already: an engine
    // that stays down is said once, not at every retry.
    let mut failure_logged = false;
    let mut sessions: u64 = 0;
    loop {
        let started = Instant::now();
        let mut session = Session::new(&cfg, &sink);
        let end = session.run(&status, &mut state, &mut sessions).await;
        let err = match end {
            End::SinkClosed => {
                debug!("receiver gone; docker adapter stops");
                return;
            }
            End::Engine(err) => err,
        };
        let was_connected = state.connected;
        state.connected = false;
        state.last_error = Some(err.to_string());
        status.send_replace(state.clone());
        if was_connected {
            warn!(error = %err, "lost the docker engine; reconnecting");
            failure_logged = true;
        } else if !failure_logged {
            warn!(error = %err, "cannot reach the docker engine; retrying with backoff");
            failure_logged = true;
        } else {
            debug!(error = %err, "docker engine still unreachable");
        }
        if started.elapsed() >= STABLE_SESSION {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Answers one container (`target`: full id, unique id prefix, or name,
/// with or without Docker's leading `/`) for `mountleak check`: one
/// connection, no events. `Ok(None)` when the engine knows no such container.
pub async fn lookup(
    cfg: &DockerConfig,
    target: &str,
) -> Result<Option<ContainerInfo>, DockerError> {
    let target = target.strip_prefix('/').unwrap_or(target);
    if !is_docker_ref(target) {
        // Not something Docker could have named; asking would only put the
        // text into a URL path.
        return Ok(None);
    }
    let docker = negotiated(cfg).await?;
    let resp = match docker.inspect_container(target, None).await {
        Ok(resp) => resp,
        Err(err) if is_not_found(&err) => return Ok(None),
        Err(err) => return Err(DockerError::engine(cfg, "inspect", err)),
    };
    // The root dir from the container's own files spares a `GET /info`,
    // which an engine answers by counting every container and image.
    let root = match root_from_files(&resp) {
        Some(root) => root,
        None => root_dir(cfg, &docker).await?,
    };
    Ok(to_info(&resp, &root, Clocks::now()).map(|m| m.with_upper_dir()))
}

/// `DockerRootDir` as the container's hostname or resolv.conf path shows
/// it: `<root>/containers/<id>/<file>`.
fn root_from_files(resp: &ContainerInspectResponse) -> Option<PathBuf> {
    let id = resp.id.as_deref()?;
    [&resp.hostname_path, &resp.resolv_conf_path]
        .into_iter()
        .flatten()
        .find_map(|file| {
            let dir = Path::new(file).parent()?;
            (dir.file_name()? == id).then_some(())?;
            let containers = dir.parent()?;
            (containers.file_name()? == "containers").then_some(())?;
            containers.parent().map(Path::to_path_buf)
        })
}

/// Connects, negotiates the API version, and reads the daemon's root dir.
async fn connect(cfg: &DockerConfig) -> Result<(Docker, PathBuf, String), DockerError> {
    let docker = negotiated(cfg).await?;
    let version = docker.client_version().to_string();
    let root = root_dir(cfg, &docker).await?;
    Ok((docker, root, version))
}

/// A client at the engine's API version.
async fn negotiated(cfg: &DockerConfig) -> Result<Docker, DockerError> {
    let path = cfg
        .socket
        .to_str()
        .ok_or_else(|| DockerError::SocketPath(cfg.socket.clone()))?;
    // The version `/_ping` names in a header, when it can be had: bollard
    // asks `GET /version`, which an engine answers by running runc and
    // docker-init for their versions (7 ms against 0.4 ms here: most of a
    // `check`'s lookup).
    if let Some(engine) = pinged_api_version(&cfg.socket).await {
        let ours = *bollard::API_DEFAULT_VERSION;
        let version = if engine < ours { engine } else { ours };
        return Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, &version)
            .map_err(|e| DockerError::engine(cfg, "connect", e));
    }
    let docker =
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .map_err(|e| DockerError::engine(cfg, "connect", e))?;
    // bollard starts at its own (newer) API version; an engine older than
    // that rejects every call until the client steps down to the engine's.
    docker
        .negotiate_version()
        .await
        .map_err(|e| DockerError::engine(cfg, "negotiate the API version", e))
}

/// The engine's API version from the `Api-Version` header of
/// `HEAD /_ping`; `None` on any trouble (the caller negotiates instead).
async fn pinged_api_version(socket: &Path) -> Option<ClientVersion> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await.ok()?;
        stream
            .write_all(b"HEAD /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        // Up to the end of the headers (a HEAD answer has no body); more
        // than 8 KiB of them is not a ping answer.
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        api_version_header(&head)
    };
    // A ping is nothing to answer; an engine that takes longer will be
    // told off by the negotiation's own timeout and error.
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// `Api-Version: MAJOR.MINOR` from a 200 answer's headers.
fn api_version_header(head: &[u8]) -> Option<ClientVersion> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?;
    if status.split(' ').nth(1) != Some("200") {
        return None;
    }
    let value = lines.take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("api-version")
            .then(|| value.trim())
    })?;
    let (major, minor) = value.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// The daemon's root dir (`GET /info`).
async fn root_dir(cfg: &DockerConfig, docker: &Docker) -> Result<PathBuf, DockerError> {
    let info = docker
        .info()
        .await
        .map_err(|e| DockerError::engine(cfg, "info", e))?;
    // `--data-root` moves everything; /var/lib/docker is only the default.
    Ok(info
        .docker_root_dir
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from("/var/lib/docker"), PathBuf::from))
}

/// Docker's container names are `[a-zA-Z0-9][a-zA-Z0-9_.-]*` and ids are
/// hex, so anything else cannot name a container.
fn is_docker_ref(target: &str) -> bool {
    !target.is_empty()
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_not_found(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// One connection to the engine and what was sent during it.
struct Session<'a> {
    cfg: &'a DockerConfig,
    sink: &'a Sink,
    /// Containers last reported stopped (or dead): `die` and `stop` both mean
    /// "stopped", and only the first of them is sent.
    stopped: HashSet<String>,
    /// Containers last reported dead: the poll sends each only once.
    dead: HashSet<String>,
}

impl<'a> Session<'a> {
    fn new(cfg: &'a DockerConfig, sink: &'a Sink) -> Self {
        Session {
            cfg,
            sink,
            stopped: HashSet::new(),
            dead: HashSet::new(),
        }
    }

    async fn run(
        &mut self,
        status: &watch::Sender<RuntimeStatus>,
        state: &mut RuntimeStatus,
        sessions: &mut u64,
    ) -> End {
        let (docker, root, version) = match connect(self.cfg).await {
            Ok(c) => c,
            Err(err) => return End::Engine(err),
        };
        // Events are asked for from just before the listing, so nothing that
        // happens while the inventory is taken is missed (the engine replays
        // them; repeats are harmless: a second inspect, a deduplicated stop).
        let since = SystemTime::now();
        if let Err(end) = self.inventory(&docker, &root).await {
            return end;
        }
        *sessions += 1;
        state.connected = true;
        state.reconnects = sessions.saturating_sub(1);
        state.last_error = None;
        state.version = Some(version.clone());
        status.send_replace(state.clone());
        info!(api_version = %version, root = %root.display(), "connected to the docker engine");
        match self.follow(&docker, &root, since).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    /// Every container, inspected, then the list of ids.
    async fn inventory(&mut self, docker: &Docker, root: &Path) -> Result<(), End> {
        let listed = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..ListContainersOptions::default()
            }))
            .await
            .map_err(|e| DockerError::engine(self.cfg, "list containers", e))?;
        let ids: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
        let mut inspected = futures_util::stream::iter(ids.iter().cloned())
            .map(|id| async move { (id.clone(), docker.inspect_container(&id, None).await) })
            .buffered(INVENTORY_CONCURRENCY);
        let mut present = Vec::with_capacity(ids.len());
        while let Some((id, result)) = inspected.next().await {
            match result {
                Ok(resp) => {
                    if self.seen(&resp, root).await? {
                        present.push(id);
                    }
                }
                // Removed between the list and the inspect: not in the
                // inventory, so the model forgets it.
                Err(err) if is_not_found(&err) => debug!(id, "gone before its inspect"),
                Err(err) => return Err(DockerError::engine(self.cfg, "inspect", err).into()),
            }
        }
        self.send(ContainerEvent::Inventory {
            at: clock::boottime_ns(),
            runtime: RUNTIME.to_string(),
            ids: present,
        })
        .await
    }

    /// Follows the event stream and polls for dead containers until either
    /// fails.
    async fn follow(
        &mut self,
        docker: &Docker,
        root: &Path,
        since: SystemTime,
    ) -> Result<std::convert::Infallible, End> {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        let mut events = docker.events(Some(EventsOptions {
            since: Some(unix_seconds(since)),
            until: None,
            filters: Some(filters),
        }));
        let mut poll = tokio::time::interval(DEAD_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                next = events.next() => {
                    let first = next
                        .ok_or_else(|| DockerError::StreamEnded(self.cfg.socket.clone()))?
                        .map_err(|e| DockerError::engine(self.cfg, "events", e))?;
                    // Take whatever else has already arrived, so that the
                    // hot part of every event in a burst goes out first.
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match events.next().now_or_never() {
                            Some(Some(Ok(ev))) => batch.push(ev),
                            Some(Some(Err(err))) => {
                                // Handle what was read, then end the session.
                                self.handle(docker, root, batch).await?;
                                return Err(DockerError::engine(self.cfg, "events", err).into());
                            }
                            Some(None) => {
                                self.handle(docker, root, batch).await?;
                                return Err(DockerError::StreamEnded(self.cfg.socket.clone()).into());
                            }
                            None => break,
                        }
                    }
                    self.handle(docker, root, batch).await?;
                }
                _ = poll.tick() => self.poll_dead(docker, root).await?,
            }
        }
    }

    /// A batch of events: first what needs no engine call (`Stopped`,
    /// `Removed`), then one inspect per container that changed.
    async fn handle(
        &mut self,
        docker: &Docker,
        root: &Path,
        batch: Vec<EventMessage>,
    ) -> Result<(), End> {
        let mut to_inspect: Vec<String> = Vec::new();
        let mut removed: HashSet<String> = HashSet::new();
        for ev in batch {
            let Some(id) = ev.actor.as_ref().and_then(|a| a.id.clone()) else {
                continue;
            };
            let at = event_time(&ev);
            match classify(ev.action.as_deref().unwrap_or("")) {
                Action::Stop => {
                    if self.stopped.insert(id.clone()) {
                        self.send(ContainerEvent::Stopped {
                            at,
                            runtime: RUNTIME.to_string(),
                            id: id.clone(),
                        })
                        .await?;
                    }
                    push_once(&mut to_inspect, id);
                }
                Action::Destroy => {
                    self.forget(&id);
                    self.send(ContainerEvent::Removed {
                        at,
                        runtime: RUNTIME.to_string(),
                        id: id.clone(),
                    })
                    .await?;
                    removed.insert(id);
                }
                Action::Inspect => push_once(&mut to_inspect, id),
                Action::Ignore => {}
            }
        }
        for id in to_inspect {
            // Destroyed later in the same batch: an inspect would only 404,
            // or worse, bring it back after its `Removed`.
            if removed.contains(&id) {
                continue;
            }
            self.inspect(docker, root, &id).await?;
        }
        Ok(())
    }

    /// Inspects one container and sends `Seen`; a 404 means it was removed
    /// since the event, which is normal.
    async fn inspect(&mut self, docker: &Docker, root: &Path, id: &str) -> Result<(), End> {
        match docker.inspect_container(id, None).await {
            Ok(resp) => self.seen(&resp, root).await.map(drop),
            Err(err) if is_not_found(&err) => {
                debug!(id, "gone before its inspect");
                self.forget(id);
                self.send(ContainerEvent::Removed {
                    at: clock::boottime_ns(),
                    runtime: RUNTIME.to_string(),
                    id: id.to_string(),
                })
                .await
            }
            Err(err) => Err(DockerError::engine(self.cfg, "inspect", err).into()),
        }
    }

    /// Dead containers: a removal failed. Each is sent once per session.
    async fn poll_dead(&mut self, docker: &Docker, root: &Path) -> Result<(), End> {
        let mut filters = HashMap::new();
        filters.insert("status".to_string(), vec!["dead".to_string()]);
        let listed = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            }))
            .await
            .map_err(|e| DockerError::engine(self.cfg, "list dead containers", e))?;
        let now_dead: HashSet<String> = listed.into_iter().filter_map(|c| c.id).collect();
        self.dead.retain(|id| now_dead.contains(id));
        for id in now_dead {
            if !self.dead.contains(&id) {
                self.inspect(docker, root, &id).await?;
            }
        }
        Ok(())
    }

    /// Sends `Seen` for an inspect answer; false when it had no id.
    async fn seen(&mut self, resp: &ContainerInspectResponse, root: &Path) -> Result<bool, End> {
        let Some(mapped) = to_info(resp, root, Clocks::now()) else {
            return Ok(false);
        };
        let info = mapped.with_upper_dir();
        match info.state {
            ContainerState::Stopped => {
                self.stopped.insert(info.id.clone());
            }
            ContainerState::Dead => {
                self.stopped.insert(info.id.clone());
                self.dead.insert(info.id.clone());
            }
            ContainerState::Created | ContainerState::Running | ContainerState::Paused => {
                self.stopped.remove(&info.id);
                self.dead.remove(&info.id);
            }
        }
        self.send(ContainerEvent::Seen {
            at: clock::boottime_ns(),
            info: Box::new(info),
        })
        .await?;
        Ok(true)
    }

    fn forget(&mut self, id: &str) {
        self.stopped.remove(id);
        self.dead.remove(id);
    }

    /// Waits for room in the bounded channel (backpressure, never a drop);
    /// a closed channel means the daemon is shutting down.
    async fn send(&self, ev: ContainerEvent) -> Result<(), End> {
        self.sink
            .send(Input::Container(ev))
            .await
            .map_err(|_| End::SinkClosed)
    }
}

fn push_once(list: &mut Vec<String>, id: String) {
    if !list.contains(&id) {
        list.push(id);
    }
}

/// What an event asks of the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Its processes are gone: `Stopped` at once, then an inspect.
    Stop,
    /// Gone for good.
    Destroy,
    /// Its state, name or mounts may have changed.
    Inspect,
    /// Nothing the model needs (exec, attach, health, kill before die...).
    Ignore,
}

fn classify(action: &str) -> Action {
    // Health checks arrive as `health_status: healthy`, execs as
    // `exec_start: sh`: only the verb before the colon counts.
    let verb = action.split(':').next().unwrap_or("").trim();
    match verb {
        "die" | "stop" => Action::Stop,
        "destroy" => Action::Destroy,
        "create" | "start" | "restart" | "rename" | "pause" | "unpause" | "update" => {
            Action::Inspect
        }
        _ => Action::Ignore,
    }
}

/// The engine's time for an event as boottime, or now when it gave none.
fn event_time(ev: &EventMessage) -> Ktime {
    let clocks = Clocks::now();
    let wall_ns = ev
        .time_nano
        .and_then(|ns| u64::try_from(ns).ok())
        .or_else(|| {
            ev.time
                .and_then(|s| u64::try_from(s).ok())
                .map(|s| s * 1_000_000_000)
        });
    match wall_ns {
        Some(ns) => clocks.wall_ns_to_boottime(ns),
        None => clocks.boottime,
    }
}

/// `since=` for the events endpoint: Unix seconds with nanoseconds.
fn unix_seconds(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// A reading of both clocks, taken together: Docker speaks wall time, the
/// model boottime, and the offset between them moves (suspend,
/// settimeofday), so it is never cached (see `procfs::clock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clocks {
    /// `CLOCK_BOOTTIME` ns.
    pub boottime: Ktime,
    /// `CLOCK_REALTIME` ns since the Unix epoch.
    pub realtime: u64,
}

impl Clocks {
    pub fn now() -> Self {
        let before = clock::boottime_ns();
        let realtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let after = clock::boottime_ns();
        Clocks {
            boottime: before + after.saturating_sub(before) / 2,
            realtime,
        }
    }

    /// `boottime_now - (realtime_now - t)`, clamped to [0, boottime_now]:
    /// the engine's past is never in the model's future.
    pub fn wall_ns_to_boottime(&self, wall_ns: u64) -> Ktime {
        let ago = self.realtime.saturating_sub(wall_ns);
        self.boottime.saturating_sub(ago)
    }
}

/// An inspect answer mapped to the model's terms, before the one step that
/// touches the filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub info: ContainerInfo,
    /// `GraphDriver.Data.UpperDir`, to be `stat`ed for `info.upper_dir`.
    pub upper_dir_path: Option<PathBuf>,
}

impl Mapped {
    /// Fills `upper_dir` from a `stat` of the upper dir, when readable (it is
    /// gone once the container is removed, and unreadable without root).
    pub fn with_upper_dir(self) -> ContainerInfo {
        let mut info = self.info;
        if let Some(path) = &self.upper_dir_path {
            if let Ok(meta) = std::fs::metadata(path) {
                info.upper_dir = Some((dev_of(meta.dev()), meta.ino()));
            }
        }
        info
    }
}

fn dev_of(dev: u64) -> Dev {
    Dev {
        major: libc::major(dev),
        minor: libc::minor(dev),
    }
}

/// Maps `docker inspect` to a `ContainerInfo` (everything but the upper
/// dir's device and inode). `root` is the daemon's `DockerRootDir`. `None`
/// when the answer has no id.
pub fn to_info(resp: &ContainerInspectResponse, root: &Path, clocks: Clocks) -> Option<Mapped> {
    let id = resp.id.clone().filter(|id| !id.is_empty())?;
    let name = resp
        .name
        .as_deref()
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .unwrap_or_default();
    // The name the user ran it with (`Config.Image`), not the image id.
    let image = resp
        .config
        .as_ref()
        .and_then(|c| c.image.clone())
        .or_else(|| resp.image.clone())
        .filter(|i| !i.is_empty());
    let st = resp.state.as_ref();
    let state = map_state(st);
    let pid = match state {
        ContainerState::Running | ContainerState::Paused => st
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0),
        _ => None,
    };
    let started_at = st
        .and_then(|s| s.started_at.as_deref())
        .and_then(parse_wall_ns)
        .map(|ns| clocks.wall_ns_to_boottime(ns));

    let graph = resp.graph_driver.as_ref().map(|g| &g.data);
    let graph_path = |key: &str| {
        graph
            .and_then(|d| d.get(key))
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    let mut mounts: Vec<PathBytes> = Vec::new();
    let mut add = |path: &Path| {
        let p = path_bytes(path);
        if !p.is_empty() && !mounts.contains(&p) {
            mounts.push(p);
        }
    };
    // The rootfs mount point (overlay2, overlay, fuse-overlayfs all name it
    // MergedDir).
    if let Some(merged) = graph_path("MergedDir") {
        add(&merged);
    }
    // /dev/shm is a tmpfs on the host at containers/<id>/mounts/shm only for
    // `--ipc=shareable` (the default before 20.10); `private` mounts it
    // inside the container only, `host`/`container:`/`none` not at all. An
    // engine that does not say gets the old default.
    let ipc = resp
        .host_config
        .as_ref()
        .and_then(|h| h.ipc_mode.as_deref())
        .unwrap_or("");
    if ipc.is_empty() || ipc == "shareable" {
        add(&root.join("containers").join(&id).join("mounts/shm"));
    }
    for m in resp.mounts.iter().flatten() {
        let kind = m.typ.as_deref().unwrap_or("");
        if matches!(kind, "bind" | "volume") {
            if let Some(source) = m.source.as_deref().filter(|s| !s.is_empty()) {
                add(Path::new(source));
            }
        }
    }

    Some(Mapped {
        info: ContainerInfo {
            runtime: RUNTIME.to_string(),
            namespace: None,
            id,
            name,
            image,
            pod: None,
            mounts,
            upper_dir: None,
            pid,
            state,
            started_at,
        },
        upper_dir_path: graph_path("UpperDir"),
    })
}

/// Docker's state in the model's terms.
fn map_state(st: Option<&bollard::models::ContainerState>) -> ContainerState {
    let Some(st) = st else {
        return ContainerState::Created;
    };
    match st.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        // `restarting`: between runs of a restart policy; Docker itself says
        // Running=true, and no removal follows. `stopping` (newer engines):
        // its processes still run.
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::STOPPING,
        ) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Stopped,
        // A removal failed: Docker sets Dead and clears RemovalInProgress
        // (moby container/state.go, SetRemovalError), and stays so.
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        // `removing` is every removal while it runs, including the ones that
        // succeed a moment later (then `destroy`); a failed one ends `dead`.
        // Until then it is a stopped container on its way out.
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Stopped,
        Some(ContainerStateStatusEnum::EMPTY) | None => {
            if st.dead == Some(true) {
                ContainerState::Dead
            } else if st.paused == Some(true) {
                ContainerState::Paused
            } else if st.running == Some(true) {
                ContainerState::Running
            } else if st.started_at.as_deref().and_then(parse_wall_ns).is_some() {
                ContainerState::Stopped
            } else {
                ContainerState::Created
            }
        }
    }
}

/// RFC 3339 as Docker writes it (`2026-11-27T14:12:00.734557574Z`) to ns
/// since the epoch. Docker's "never" (`0001-01-01T00:00:00Z`) and anything
/// unparsable are `None`.
fn parse_wall_ns(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(d.as_nanos()).ok().filter(|&ns| ns > 0)
}

fn path_bytes(path: &Path) -> PathBytes {
    use std::os::unix::ffi::OsStrExt;
    PathBytes(path.as_os_str().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {

    #[test]
    fn api_version_from_a_ping_answer() {
        let answer = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 0\r\n\r\n";
        let v = api_version_header(answer).expect("a version");
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        let lower = b"HTTP/1.0 200 OK\r\napi-version:1.53\r\n\r\n";
        assert!(api_version_header(lower).is_some_and(|v| v.minor_version == 53));
        // Not a ping answer, an error, or a garbled version: negotiate.
        for bad in [
            &b"HTTP/1.1 404 Not Found\r\nApi-Version: 1.41\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nApi-Version: one.41\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nApi-Version: 1.41\r\n",
            b"",
            b"\xff\xfe",
        ] {
            assert!(api_version_header(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn root_dir_from_the_containers_files() {
        let at = |path: &str| ContainerInspectResponse {
            id: Some("abc".into()),
            hostname_path: Some(path.into()),
            ..Default::default()
        };
        assert_eq!(
            root_from_files(&at("/srv/docker/containers/abc/hostname")),
            Some(PathBuf::from("/srv/docker"))
        );
        // Not the layout we know: ask the engine instead.
        assert_eq!(root_from_files(&at("/elsewhere/abc/hostname")), None);
        assert_eq!(
            root_from_files(&at("/srv/docker/containers/xyz/hostname")),
            None
        );
        assert_eq!(root_from_files(&ContainerInspectResponse::default()), None);
    }

    use super::*;

    /// An inspect answer recorded from dockerd 20.10 (API 1.41) on this
    /// machine kind, trimmed to the fields the mapping reads plus a few it
    /// must ignore, with a bind mount, a named volume and a tmpfs added.
    const INSPECT_RUNNING: &str = r#"{
      "Id": "5222e4865676591e451001c317b01e7b4d8c4a5dee4b72132b9731a15af9c2ab",
      "Created": "2026-11-27T14:12:00.561093481Z",
      "Path": "sleep",
      "Args": ["1000"],
      "State": {
        "Status": "running", "Running": true, "Paused": false,
        "Restarting": false, "OOMKilled": false, "Dead": false,
        "Pid": 29115, "ExitCode": 0, "Error": "",
        "StartedAt": "2026-11-27T14:12:00.734557574Z",
        "FinishedAt": "0001-01-01T00:00:00Z"
      },
      "Image": "sha256:008d991a6fab43c09e94ff062c08cdaf34341066076b279eb18edaafbc56f011",
      "Name": "/a.b_c-1",
      "RestartCount": 0,
      "Driver": "overlay2",
      "HostConfig": { "IpcMode": "shareable", "NetworkMode": "default" },
      "GraphDriver": {
        "Data": {
          "LowerDir": "/srv/docker/overlay2/d69c-init/diff:/srv/docker/overlay2/57e6/diff",
          "MergedDir": "/srv/docker/overlay2/d69c/merged",
          "UpperDir": "/srv/docker/overlay2/d69c/diff",
          "WorkDir": "/srv/docker/overlay2/d69c/work"
        },
        "Name": "overlay2"
      },
      "Mounts": [
        { "Type": "bind", "Source": "/tmp/vol 1", "Destination": "/data",
          "Mode": "", "RW": true, "Propagation": "rprivate" },
        { "Type": "volume", "Name": "named1",
          "Source": "/srv/docker/volumes/named1/_data", "Destination": "/named",
          "Driver": "local", "Mode": "z", "RW": true, "Propagation": "" },
        { "Type": "tmpfs", "Source": "", "Destination": "/scratch",
          "Mode": "", "RW": true, "Propagation": "" }
      ],
      "Config": { "Hostname": "5222e4865676", "Image": "mountleak-busybox",
                  "Cmd": ["sleep", "1000"], "Labels": {} }
    }"#;

    fn inspect(json: &str) -> ContainerInspectResponse {
        serde_json::from_str(json).expect("fixture parses as an inspect answer")
    }

    /// 2026-11-27T14:12:00.734557574Z in ns since the epoch.
    const STARTED_NS: u64 = 1_795_788_720_734_557_574;

    fn clocks() -> Clocks {
        // Boot was 1000 s of boottime before the container started, and the
        // reading is taken 5 s after it started.
        Clocks {
            boottime: 1_005_000_000_000,
            realtime: STARTED_NS + 5_000_000_000,
        }
    }

    #[test]
    fn running_container_maps_to_its_mounts_and_identity() {
        let m = to_info(
            &inspect(INSPECT_RUNNING),
            Path::new("/srv/docker"),
            clocks(),
        )
        .unwrap();
        let info = &m.info;
        assert_eq!(info.runtime, "docker");
        assert_eq!(info.namespace, None);
        assert_eq!(
            info.id,
            "5222e4865676591e451001c317b01e7b4d8c4a5dee4b72132b9731a15af9c2ab"
        );
        assert_eq!(info.name, "a.b_c-1");
        assert_eq!(info.image.as_deref(), Some("mountleak-busybox"));
        assert_eq!(info.state, ContainerState::Running);
        assert_eq!(info.pid, Some(29115));
        assert_eq!(info.started_at, Some(1_000_000_000_000));
        let mounts: Vec<String> = info.mounts.iter().map(PathBytes::lossy).collect();
        assert_eq!(
            mounts,
            [
                "/srv/docker/overlay2/d69c/merged",
                "/srv/docker/containers/5222e4865676591e451001c317b01e7b4d8c4a5dee4b72132b9731a15af9c2ab/mounts/shm",
                "/tmp/vol 1",
                "/srv/docker/volumes/named1/_data",
            ]
        );
        assert_eq!(info.upper_dir, None);
        assert_eq!(
            m.upper_dir_path.as_deref(),
            Some(Path::new("/srv/docker/overlay2/d69c/diff"))
        );
    }

    fn with_state(status: &str, extra: &str) -> ContainerInspectResponse {
        let json = INSPECT_RUNNING.replace(
            r#""Status": "running", "Running": true, "Paused": false,"#,
            &format!(r#""Status": "{status}", {extra}"#),
        );
        assert_ne!(json, INSPECT_RUNNING, "the fixture's state line moved");
        inspect(&json)
    }

    #[test]
    fn states_map_to_the_model() {
        let root = Path::new("/srv/docker");
        let cases = [
            (
                "created",
                r#""Running": false, "Paused": false,"#,
                ContainerState::Created,
            ),
            (
                "exited",
                r#""Running": false, "Paused": false,"#,
                ContainerState::Stopped,
            ),
            (
                "paused",
                r#""Running": true, "Paused": true,"#,
                ContainerState::Paused,
            ),
            (
                "restarting",
                r#""Running": true, "Paused": false,"#,
                ContainerState::Running,
            ),
            (
                "dead",
                r#""Running": false, "Paused": false,"#,
                ContainerState::Dead,
            ),
            (
                "removing",
                r#""Running": false, "Paused": false,"#,
                ContainerState::Stopped,
            ),
        ];
        for (status, extra, want) in cases {
            let info = to_info(&with_state(status, extra), root, clocks())
                .unwrap()
                .info;
            assert_eq!(info.state, want, "{status}");
            // Only a live container has a pid worth following.
            let has_pid = matches!(want, ContainerState::Running | ContainerState::Paused);
            assert_eq!(info.pid.is_some(), has_pid, "{status}");
        }
    }

    #[test]
    fn private_ipc_has_no_host_shm_mount() {
        let json = INSPECT_RUNNING.replace(r#""IpcMode": "shareable""#, r#""IpcMode": "private""#);
        let info = to_info(&inspect(&json), Path::new("/srv/docker"), clocks())
            .unwrap()
            .info;
        assert!(!info
            .mounts
            .iter()
            .any(|m| m.lossy().ends_with("/mounts/shm")));
        assert_eq!(info.mounts.len(), 3);
    }

    #[test]
    fn sparse_answers_do_not_fail() {
        // Only an id: a container whose inspect lost everything else.
        let info = to_info(&inspect(r#"{"Id": "abc"}"#), Path::new("/r"), clocks())
            .unwrap()
            .info;
        assert_eq!(info.name, "");
        assert_eq!(info.image, None);
        assert_eq!(info.state, ContainerState::Created);
        assert_eq!(info.started_at, None);
        // No IpcMode: the pre-20.10 default (shareable).
        assert_eq!(
            info.mounts,
            vec![PathBytes::from("/r/containers/abc/mounts/shm")]
        );
        assert!(to_info(&inspect(r#"{"Name": "/x"}"#), Path::new("/r"), clocks()).is_none());
        assert!(to_info(&inspect("{}"), Path::new("/r"), clocks()).is_none());
    }

    #[test]
    fn never_started_has_no_start_time() {
        let json =
            INSPECT_RUNNING.replace("2026-11-27T14:12:00.734557574Z", "0001-01-01T00:00:00Z");
        let info = to_info(&inspect(&json), Path::new("/r"), clocks())
            .unwrap()
            .info;
        assert_eq!(info.started_at, None);
    }

    #[test]
    fn wall_times_convert_to_boottime() {
        let c = clocks();
        assert_eq!(c.wall_ns_to_boottime(c.realtime), c.boottime);
        assert_eq!(c.wall_ns_to_boottime(c.realtime - 7), c.boottime - 7);
        // The engine's clock a little ahead of ours is "now", not the future.
        assert_eq!(c.wall_ns_to_boottime(c.realtime + 1_000), c.boottime);
        // Before boot clamps to 0.
        assert_eq!(c.wall_ns_to_boottime(0), 0);
        assert_eq!(
            parse_wall_ns("2026-11-27T14:12:00.734557574Z"),
            Some(STARTED_NS)
        );
        assert_eq!(parse_wall_ns("yesterday"), None);
    }

    #[test]
    fn event_actions_classify() {
        for a in ["die", "stop"] {
            assert_eq!(classify(a), Action::Stop, "{a}");
        }
        assert_eq!(classify("destroy"), Action::Destroy);
        for a in [
            "create", "start", "rename", "pause", "unpause", "restart", "update",
        ] {
            assert_eq!(classify(a), Action::Inspect, "{a}");
        }
        for a in [
            "kill",
            "oom",
            "exec_start: sh -c true",
            "health_status: healthy",
            "attach",
            "",
        ] {
            assert_eq!(classify(a), Action::Ignore, "{a}");
        }
    }

    #[test]
    fn only_docker_names_and_ids_are_looked_up() {
        assert!(is_docker_ref("a.b_c-1"));
        assert!(is_docker_ref("5222e486"));
        for bad in ["", "a/b", "a b", "../x", "x?y", "é"] {
            assert!(!is_docker_ref(bad), "{bad:?}");
        }
    }

    #[test]
    fn since_is_seconds_and_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_795_788_736, 482_306_353);
        assert_eq!(unix_seconds(t), "1795788736.482306353");
        assert_eq!(
            unix_seconds(UNIX_EPOCH + Duration::new(5, 7)),
            "5.000000007"
        );
    }

    /// A stand-in engine on a unix socket: enough HTTP/1.1 for bollard,
    /// with canned answers, to drive the session logic through paths a real
    /// dockerd cannot be made to take on cue (an inspect that 404s after its
    /// event, an engine that fails every listing).
    mod fake {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{UnixListener, UnixStream};

        /// What the engine answers for a path (version prefix removed).
        pub enum Reply {
            Json(u16, String),
            /// A body of JSON lines that stays open, like `/events`.
            Stream(Vec<String>),
            /// `/_ping`'s answer: no body, the API version in a header.
            Ping(&'static str),
        }

        pub struct Engine {
            pub socket: PathBuf,
            dir: PathBuf,
            /// Requests served, per path prefix asked about by the test.
            pub requests: Arc<AtomicUsize>,
        }

        impl Drop for Engine {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }

        static N: AtomicUsize = AtomicUsize::new(0);

        /// Serves `route` on a fresh socket; `counted` names the path
        /// prefix whose requests are counted.
        pub fn start(
            route: impl Fn(&str) -> Reply + Send + Sync + 'static,
            counted: &'static str,
        ) -> Engine {
            let dir = std::env::temp_dir().join(format!(
                "mountleak-fake-docker-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let socket = dir.join("docker.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let route = Arc::new(route);
            let requests = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&requests);
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let route = Arc::clone(&route);
                    let count = Arc::clone(&count);
                    tokio::spawn(async move {
                        let _ = serve(conn, &*route, &count, counted).await;
                    });
                }
            });
            Engine {
                socket,
                dir,
                requests,
            }
        }

        async fn serve(
            mut conn: UnixStream,
            route: &(dyn Fn(&str) -> Reply + Send + Sync),
            count: &AtomicUsize,
            counted: &str,
        ) -> std::io::Result<()> {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte).await? == 0 {
                    return Ok(());
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            let target = head.split(' ').nth(1).unwrap_or("/");
            // bollard puts the API version first: /v1.41/containers/json.
            let path = match target.strip_prefix("/v") {
                Some(rest) => rest.find('/').map_or(target, |i| &rest[i..]),
                None => target,
            };
            if path.starts_with(counted) {
                count.fetch_add(1, Ordering::SeqCst);
            }
            match route(path) {
                Reply::Json(code, body) => {
                    let text = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    conn.write_all(text.as_bytes()).await?;
                }
                Reply::Stream(lines) => {
                    // No length: the body runs until the connection closes.
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                          Connection: close\r\n\r\n",
                    )
                    .await?;
                    for line in lines {
                        conn.write_all(line.as_bytes()).await?;
                        conn.write_all(b"\n").await?;
                        conn.flush().await?;
                    }
                    // Hold the stream open, as dockerd does.
                    std::future::pending::<()>().await;
                }
                Reply::Ping(version) => {
                    let text = format!(
                        "HTTP/1.1 200 OK\r\nApi-Version: {version}\r\n\
                         Content-Length: 0\r\n\r\n"
                    );
                    conn.write_all(text.as_bytes()).await?;
                    // Keep-alive, as dockerd answers HTTP/1.1.
                    std::future::pending::<()>().await;
                }
            }
            Ok(())
        }
    }

    const VERSION: &str = r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}"#;
    const INFO: &str = r#"{"DockerRootDir":"/srv/docker","Driver":"overlay2"}"#;

    fn inspect_json(id: &str, status: &str) -> String {
        format!(
            r#"{{"Id":"{id}","Name":"/n-{id}","State":{{"Status":"{status}","Pid":0}},
               "Config":{{"Image":"img"}},"HostConfig":{{"IpcMode":"private"}},
               "GraphDriver":{{"Name":"overlay2","Data":{{"MergedDir":"/srv/docker/overlay2/{id}/merged"}}}}}}"#
        )
    }

    fn event(action: &str, id: &str) -> String {
        format!(
            r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"{id}","Attributes":{{"name":"n-{id}"}}}},"time":1795788736,"timeNano":1795788736482306353}}"#
        )
    }

    fn not_found(id: &str) -> Reply {
        fake::Reply::Json(404, format!(r#"{{"message":"No such container: {id}"}}"#))
    }

    /// What the adapter sends, with a deadline per item.
    async fn next(rx: &mut tokio::sync::mpsc::Receiver<Input>) -> ContainerEvent {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Input::Container(ev))) => ev,
            other => panic!("expected a container event, got {other:?}"),
        }
    }

    use fake::Reply;

    #[tokio::test]
    async fn vanished_containers_are_removed_not_errors() {
        let engine = fake::start(
            |path| match path {
                "/version" => Reply::Json(200, VERSION.into()),
                "/info" => Reply::Json(200, INFO.into()),
                p if p.starts_with("/containers/json?") && p.contains("dead") => {
                    Reply::Json(200, "[]".into())
                }
                p if p.starts_with("/containers/json") => {
                    Reply::Json(200, r#"[{"Id":"live"},{"Id":"vanished"}]"#.into())
                }
                "/containers/live/json" => Reply::Json(200, inspect_json("live", "running")),
                "/containers/vanished/json" => not_found("vanished"),
                "/containers/gone2/json" => not_found("gone2"),
                p if p.starts_with("/events") => Reply::Stream(vec![
                    event("start", "gone2"),
                    event("exec_start: sh", "live"),
                ]),
                _ => Reply::Json(404, r#"{"message":"page not found"}"#.into()),
            },
            "/containers/gone2/json",
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let (status_tx, mut status_rx) = watch::channel(RuntimeStatus::default());
        let cfg = DockerConfig {
            socket: engine.socket.clone(),
        };
        let task = tokio::spawn(run(cfg, tx, status_tx));

        let ContainerEvent::Seen { info, .. } = next(&mut rx).await else {
            panic!("the inventory starts with what an inspect saw");
        };
        assert_eq!((info.id.as_str(), info.name.as_str()), ("live", "n-live"));
        assert_eq!(info.state, ContainerState::Running);
        // `vanished` 404ed between the list and its inspect: left out.
        match next(&mut rx).await {
            ContainerEvent::Inventory { runtime, ids, .. } => {
                assert_eq!(runtime, "docker");
                assert_eq!(ids, ["live"]);
            }
            other => panic!("expected the inventory, got {other:?}"),
        }
        // `gone2` started and was gone by its inspect: removed, no error.
        match next(&mut rx).await {
            ContainerEvent::Removed { id, .. } => assert_eq!(id, "gone2"),
            other => panic!("expected gone2 removed, got {other:?}"),
        }
        status_rx
            .wait_for(|s| s.connected)
            .await
            .expect("status sender alive");
        let s = status_rx.borrow().clone();
        assert_eq!(s.runtime, "docker");
        assert_eq!(
            s.version.as_deref(),
            Some("1.41"),
            "negotiated down to the engine's"
        );
        assert_eq!(s.reconnects, 0);
        assert_eq!(s.last_error, None);
        assert_eq!(engine.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        task.abort();
    }

    #[tokio::test]
    async fn die_is_sent_at_once_and_stop_deduplicated() {
        let engine = fake::start(
            |path| match path {
                // Like dockerd: the version from `/_ping`; no `/version` needed.
                "/_ping" => Reply::Ping("1.41"),
                "/info" => Reply::Json(200, INFO.into()),
                p if p.starts_with("/containers/json?") && p.contains("dead") => {
                    Reply::Json(200, "[]".into())
                }
                p if p.starts_with("/containers/json") => Reply::Json(200, "[]".into()),
                "/containers/c1/json" => Reply::Json(200, inspect_json("c1", "exited")),
                p if p.starts_with("/events") => Reply::Stream(vec![
                    event("kill", "c1"),
                    event("die", "c1"),
                    event("stop", "c1"),
                    event("destroy", "c1"),
                ]),
                _ => Reply::Json(404, r#"{"message":"page not found"}"#.into()),
            },
            "/containers/c1/json",
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let (status_tx, _status_rx) = watch::channel(RuntimeStatus::default());
        let cfg = DockerConfig {
            socket: engine.socket.clone(),
        };
        let task = tokio::spawn(run(cfg, tx, status_tx));
        assert!(matches!(
            next(&mut rx).await,
            ContainerEvent::Inventory { .. }
        ));
        let mut got = Vec::new();
        // Whether the four events come in one read or several, c1 is
        // stopped once and then removed; a Seen may sit between (when the
        // destroy came in a later read than the die).
        loop {
            let ev = next(&mut rx).await;
            let removed = matches!(ev, ContainerEvent::Removed { .. });
            got.push(ev);
            if removed {
                break;
            }
        }
        let kinds: Vec<&str> = got
            .iter()
            .map(|e| match e {
                ContainerEvent::Stopped { .. } => "stopped",
                ContainerEvent::Removed { .. } => "removed",
                ContainerEvent::Seen { .. } => "seen",
                _ => "other",
            })
            .filter(|k| *k != "seen")
            .collect();
        assert_eq!(kinds, ["stopped", "removed"], "{got:?}");
        let ContainerEvent::Stopped { at, runtime, id } = &got[0] else {
            panic!("Stopped first: {got:?}");
        };
        assert_eq!((runtime.as_str(), id.as_str()), ("docker", "c1"));
        assert!(*at <= clock::boottime_ns());
        task.abort();
    }

    /// Docker says nothing when `docker rm` fails: the container turns
    /// `dead`. The poll finds it and sends `Seen` with `Dead` once, not at
    /// every poll.
    #[tokio::test]
    async fn dead_containers_are_found_by_polling_and_sent_once() {
        let engine = fake::start(
            |path| match path {
                // Like dockerd: the version from `/_ping`; no `/version` needed.
                "/_ping" => Reply::Ping("1.41"),
                "/info" => Reply::Json(200, INFO.into()),
                // The dead filter arrives URL-encoded inside `filters=`.
                p if p.starts_with("/containers/json?") && p.contains("dead") => {
                    Reply::Json(200, r#"[{"Id":"d1"}]"#.into())
                }
                p if p.starts_with("/containers/json") => Reply::Json(200, "[]".into()),
                "/containers/d1/json" => Reply::Json(200, inspect_json("d1", "dead")),
                p if p.starts_with("/events") => Reply::Stream(Vec::new()),
                _ => Reply::Json(404, r#"{"message":"page not found"}"#.into()),
            },
            "/containers/json?",
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let (status_tx, _status_rx) = watch::channel(RuntimeStatus::default());
        let cfg = DockerConfig {
            socket: engine.socket.clone(),
        };
        let task = tokio::spawn(run(cfg, tx, status_tx));
        assert!(matches!(
            next(&mut rx).await,
            ContainerEvent::Inventory { .. }
        ));
        match next(&mut rx).await {
            ContainerEvent::Seen { info, .. } => {
                assert_eq!(info.id, "d1");
                assert_eq!(info.state, ContainerState::Dead);
            }
            other => panic!("expected d1 seen dead, got {other:?}"),
        }
        // Two more polls: still dead, nothing new to say.
        tokio::time::sleep(DEAD_POLL * 2 + Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "a dead container is reported once");
        let lists = engine.requests.load(std::sync::atomic::Ordering::SeqCst);
        assert!(lists >= 3, "the inventory and at least two polls: {lists}");
        task.abort();
    }

    #[tokio::test]
    async fn a_failing_engine_is_retried_with_backoff_and_reported() {
        let engine = fake::start(
            |path| match path {
                "/version" => Reply::Json(200, VERSION.into()),
                "/info" => Reply::Json(200, INFO.into()),
                p if p.starts_with("/containers/json") => {
                    Reply::Json(500, r#"{"message":"engine on fire"}"#.into())
                }
                _ => Reply::Json(404, r#"{"message":"page not found"}"#.into()),
            },
            "/containers/json",
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let (status_tx, mut status_rx) = watch::channel(RuntimeStatus::default());
        let cfg = DockerConfig {
            socket: engine.socket.clone(),
        };
        let task = tokio::spawn(run(cfg, tx, status_tx));
        status_rx
            .wait_for(|s| s.last_error.is_some())
            .await
            .expect("status sender alive");
        let s = status_rx.borrow().clone();
        assert!(!s.connected);
        let err = s.last_error.unwrap_or_default();
        assert!(
            err.contains("engine on fire") && err.contains("list containers"),
            "{err}"
        );
        // 100 + 200 + 400 ms of backoff: a few attempts in a second, not a storm.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let attempts = engine.requests.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (2..=6).contains(&attempts),
            "{attempts} attempts in a second"
        );
        assert!(rx.try_recv().is_err(), "nothing sent without an inventory");
        task.abort();
    }

    #[tokio::test]
    async fn a_missing_socket_is_retried_and_a_closed_sink_ends_the_adapter() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (status_tx, mut status_rx) = watch::channel(RuntimeStatus::default());
        let cfg = DockerConfig {
            socket: PathBuf::from("/nonexistent/mountleak/docker.sock"),
        };
        let task = tokio::spawn(run(cfg, tx, status_tx));
        status_rx
            .wait_for(|s| s.last_error.is_some())
            .await
            .expect("status sender alive");
        let err = status_rx.borrow().last_error.clone().unwrap_or_default();
        assert!(err.contains("/nonexistent/mountleak/docker.sock"), "{err}");
        assert!(!task.is_finished(), "an absent engine is waited for");
        task.abort();

        // A healthy engine, but nobody listens any more: the adapter returns.
        let engine = fake::start(
            |path| match path {
                "/version" => Reply::Json(200, VERSION.into()),
                "/info" => Reply::Json(200, INFO.into()),
                p if p.starts_with("/containers/json") => Reply::Json(200, "[]".into()),
                _ => Reply::Stream(Vec::new()),
            },
            "/events",
        );
        drop(rx);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let (status_tx, _status_rx) = watch::channel(RuntimeStatus::default());
        let cfg = DockerConfig {
            socket: engine.socket.clone(),
        };
        tokio::time::timeout(Duration::from_secs(5), run(cfg, tx, status_tx))
            .await
            .expect("run returns once its receiver is gone");
    }
}
