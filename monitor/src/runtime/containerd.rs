//! containerd adapter: containerd's gRPC API (containers, tasks, snapshots,
//! events) on its socket, across its namespaces, turned into
//! `ContainerEvent`s. Containers the CRI plugin made for kubelet (namespace
//! `k8s.io`) carry their pod from the CRI labels.
//!
//! One connection ("session") goes: connect, subscribe to events (first,
//! so nothing that happens during the inventory is missed), read the server
//! version, list every container and task of each namespace (`Seen` each,
//! then `Inventory`), then follow the events. A task's exit becomes
//! `Stopped` before anything else is asked of containerd, since that is the
//! moment the model decides whether to warn. Any error ends the session;
//! [`run`] backs off and starts a new one, which resyncs the model through
//! the next inventory.
//!
//! What containerd sends, measured here (containerd 1.6.20, runc shim v2):
//! `ctr run -d` gives `/containers/create`, `/tasks/create` (with the
//! bundle path), `/tasks/start`; a kill gives `/tasks/exit` (init: `id` is
//! the container id), then `/tasks/delete` once the task is removed (the
//! CRI plugin removes it at once; `ctr` only on `ctr task rm`); removing the
//! container gives `/containers/delete`.
//!
//! Layout: [`map`] is the pure part (record + spec + task → `ContainerInfo`,
//! event payloads, lookup matching); this file does the talking.
//!
//! Owns: talking to containerd. May import containerd-client (tonic,
//! prost), tokio, tracing, the model's input types, `procfs` (the crate, for
//! a task's start time) and `procfs::clock`; never the probes or the
//! scanner.

pub mod map;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::{
    containers_client::ContainersClient, events_client::EventsClient,
    namespaces_client::NamespacesClient, tasks_client::TasksClient, version_client::VersionClient,
    Container, GetContainerRequest, GetRequest, ListContainersRequest, ListNamespacesRequest,
    ListTasksRequest, SubscribeRequest,
};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use containerd_client::types::v1::Process;
use containerd_client::types::Envelope;
use monitor_model::{ContainerEvent, ContainerInfo, Dev, Input, Ktime};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use self::map::{Change, Match};
use super::{Backoff, RuntimeStatus, Sink};
use crate::procfs::clock;

/// The name in `RuntimeStatus::runtime`. Containers are reported as
/// [`map::RUNTIME_CONTAINERD`] or [`map::RUNTIME_CRI`].
pub const RUNTIME: &str = "containerd";

/// Connecting to a local socket takes microseconds; a containerd that
/// accepts but does not answer (stopped, overloaded) is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per call. containerd answers local calls in milliseconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// All of one `mountleak check` lookup: it sits in pre-removal hooks.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the backoff: containerd was up,
/// so the next failure starts again from a short delay.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Events buffered between the subscription and the session: a burst
/// during the inventory waits here (and then in containerd).
const EVENT_BUFFER: usize = 1024;

/// containerd's namespace header (containerd `namespaces/grpc.go`).
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Where containerd listens, and which of its namespaces to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// The gRPC socket (containerd's `grpc.address`).
    pub socket: PathBuf,
    /// Namespaces to follow; empty: every namespace the server lists (and
    /// any created later: the event subscription spans all of them).
    pub namespaces: Vec<String>,
    /// Namespaces never followed, even when listed in `namespaces`.
    /// Default `moby`: Docker's containers come from the Docker adapter,
    /// with their names.
    pub skip_namespaces: Vec<String>,
    /// containerd's `state` directory, under which the runc shim mounts
    /// each task's rootfs (`<state>/io.containerd.runtime.v2.task/<ns>/<id>/rootfs`).
    /// Only a first guess: the adapter corrects it from the bundle paths
    /// containerd reports (`/tasks/create`) and from running shims' working
    /// directories, so a containerd with another state dir (k3s:
    /// `/run/k3s/containerd`) needs no setting.
    pub state_dir: PathBuf,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        ContainerdConfig {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespaces: Vec::new(),
            skip_namespaces: vec!["moby".to_string()],
            state_dir: PathBuf::from("/run/containerd"),
        }
    }
}

impl ContainerdConfig {
    /// The defaults, on another socket.
    pub fn with_socket(socket: impl Into<PathBuf>) -> Self {
        ContainerdConfig {
            socket: socket.into(),
            ..ContainerdConfig::default()
        }
    }

    /// Whether events and containers of `namespace` are followed.
    fn follows(&self, namespace: &str) -> bool {
        !self.skip_namespaces.iter().any(|n| n == namespace)
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("cannot connect to containerd at {socket}: {reason}")]
    Connect { socket: PathBuf, reason: String },
    #[error("containerd {call}{}: {code:?}: {message}", in_namespace(namespace))]
    Call {
        call: &'static str,
        namespace: Option<String>,
        code: Code,
        message: String,
    },
    #[error("containerd did not answer {call} within {timeout:?}")]
    Timeout {
        call: &'static str,
        timeout: Duration,
    },
    #[error("containerd closed the event stream")]
    StreamEnded,
    #[error("containerd namespace {0:?} cannot be sent as a gRPC header")]
    BadNamespace(String),
    #[error("{target:?} is a prefix of several containerd container ids: {}", ids.join(", "))]
    Ambiguous { target: String, ids: Vec<String> },
}

fn in_namespace(namespace: &Option<String>) -> String {
    match namespace {
        Some(ns) => format!(" in namespace {ns}"),
        None => String::new(),
    }
}

impl ContainerdError {
    fn call(call: &'static str, namespace: Option<&str>, status: &Status) -> Self {
        ContainerdError::Call {
            call,
            namespace: namespace.map(str::to_string),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    fn is_not_found(&self) -> bool {
        matches!(
            self,
            ContainerdError::Call {
                code: Code::NotFound,
                ..
            }
        )
    }
}

/// Why a session ended.
enum End {
    /// containerd failed or went away: back off and reconnect.
    Containerd(ContainerdError),
    /// The daemon dropped its receiver: shutting down.
    SinkClosed,
}

impl From<ContainerdError> for End {
    fn from(err: ContainerdError) -> Self {
        End::Containerd(err)
    }
}

/// What the adapter remembers across sessions.
#[derive(Debug)]
struct Tracker {
    /// Best knowledge of containerd's state dir (see
    /// [`ContainerdConfig::state_dir`]).
    state_dir: PathBuf,
    /// Containers reported to the model, by (namespace, id).
    known: HashMap<(String, String), Known>,
}

#[derive(Clone, Copy, Debug)]
struct Known {
    /// `containerd` or `cri`: the model's key for `Stopped`/`Removed`.
    runtime: &'static str,
    /// Seen with a started task: without a task it is now stopped, not
    /// created.
    ran: bool,
}

/// Follows containerd at `cfg.socket` and sends what it learns to `sink`,
/// with the connection's state in `status`. Runs until the receiving end of
/// `sink` is dropped; a containerd that is down, restarting or failing is
/// retried with [`Backoff`], never fatal.
#[tracing::instrument(name = "containerd", skip_all, fields(socket = %cfg.socket.display()))]
pub async fn run(cfg: ContainerdConfig, sink: Sink, status: watch::Sender<RuntimeStatus>) {
    let mut state = RuntimeStatus {
        runtime: RUNTIME,
        ..RuntimeStatus::default()
    };
    status.send_replace(state.clone());
    let mut backoff = Backoff::new();
    let mut tracker = Tracker {
        state_dir: cfg.state_dir.clone(),
        known: HashMap::new(),
    };
    let mut sessions: u64 = 0;
    let mut last_logged: Option<String> = None;
    loop {
        if sink.is_closed() {
            break;
        }
        let started = Instant::now();
        let end = follow(
            &cfg,
            &sink,
            &mut tracker,
            &status,
            &mut state,
            &mut sessions,
        )
        .await;
        let err = match end {
            End::SinkClosed => break,
            End::Containerd(err) => err,
        };
        if started.elapsed() >= STABLE_SESSION {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let was_connected = state.connected;
        let text = err.to_string();
        state.connected = false;
        state.last_error = Some(text.clone());
        status.send_replace(state.clone());
        // Say it once per change, not once per retry of a containerd that
        // stays down.
        if was_connected {
            warn!(error = %text, "lost containerd; reconnecting");
        } else if last_logged.as_deref() != Some(text.as_str()) {
            warn!(error = %text, "cannot reach containerd; retrying with backoff");
        } else {
            debug!(error = %text, delay_ms = delay.as_millis() as u64, "containerd still unreachable");
        }
        last_logged = Some(text);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sink.closed() => break,
        }
    }
    debug!("receiver gone; containerd adapter stops");
}

/// Looks up a `mountleak check` target: a container id, an id prefix (one
/// container only), a CRI container name, or a pod as `namespace/name` (its
/// sandbox and all its containers). Matches by id beat names, and names beat
/// prefixes. An empty result means containerd knows no such container.
pub async fn lookup(
    cfg: &ContainerdConfig,
    target: &str,
) -> Result<Vec<ContainerInfo>, ContainerdError> {
    let work = async {
        let channel = connect(&cfg.socket).await?;
        let mut found: Vec<(Match, String, Container, Option<Process>)> = Vec::new();
        let mut state_dir = None;
        for ns in namespaces(cfg, &channel).await? {
            let matched: Vec<(Match, Container)> = list_containers(&channel, &ns)
                .await?
                .into_iter()
                .filter_map(|c| Some((map::matches(target, &c)?, c)))
                .collect();
            if matched.is_empty() {
                continue;
            }
            let tasks = list_tasks(&channel, &ns).await?;
            state_dir = state_dir.or_else(|| discover_state_dir(&tasks));
            for (how, c) in matched {
                let task = map::task_of(&tasks, &c.id).cloned();
                found.push((how, ns.clone(), c, task));
            }
        }
        let Some(best) = found.iter().map(|(how, ..)| *how).min() else {
            return Ok(Vec::new());
        };
        found.retain(|(how, ..)| *how == best);
        if best == Match::IdPrefix && found.len() > 1 {
            return Err(ContainerdError::Ambiguous {
                target: target.to_string(),
                ids: found.into_iter().map(|(_, _, c, _)| c.id).collect(),
            });
        }
        let state_dir = state_dir.unwrap_or_else(|| cfg.state_dir.clone());
        let mut infos = Vec::with_capacity(found.len());
        for (_, ns, c, task) in found {
            let info = map::container_info(&ns, &state_dir, &c, task.as_ref(), false);
            infos.push(enrich(&channel, &ns, &c, info).await);
        }
        Ok(infos)
    };
    tokio::time::timeout(LOOKUP_TIMEOUT, work)
        .await
        .unwrap_or(Err(ContainerdError::Timeout {
            call: "lookup",
            timeout: LOOKUP_TIMEOUT,
        }))
}

/// One connection: connects, takes the inventory and follows events until
/// something fails (so it only ever returns why it ended).
async fn follow(
    cfg: &ContainerdConfig,
    sink: &Sink,
    tracker: &mut Tracker,
    status: &watch::Sender<RuntimeStatus>,
    state: &mut RuntimeStatus,
    sessions: &mut u64,
) -> End {
    let channel = match connect(&cfg.socket).await {
        Ok(channel) => channel,
        Err(err) => return err.into(),
    };
    let mut session = Session {
        cfg,
        sink,
        tracker,
        channel,
    };
    match session.follow(status, state, sessions).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

/// One connection's state.
struct Session<'a> {
    cfg: &'a ContainerdConfig,
    sink: &'a Sink,
    tracker: &'a mut Tracker,
    channel: Channel,
}

impl Session<'_> {
    async fn follow(
        &mut self,
        status: &watch::Sender<RuntimeStatus>,
        state: &mut RuntimeStatus,
        sessions: &mut u64,
    ) -> Result<std::convert::Infallible, End> {
        // Subscribing first: events that happen while the inventory is read
        // wait in the stream and are applied after it. The subscription
        // runs in a task of its own because containerd sends no response
        // headers until the first event (its handler never calls
        // SendHeader), so awaiting the call itself would wait for one.
        let (events_tx, mut events) = mpsc::channel(EVENT_BUFFER);
        let _pump = AbortOnDrop(tokio::spawn(pump_events(self.channel.clone(), events_tx)));
        // The request is on the wire now; containerd registers the
        // subscription when it reads it, and reads the requests of one
        // connection in order, so the Version round trip that follows lets
        // the registration happen before the inventory's reads.
        let version = call(
            "Version",
            None,
            VersionClient::new(self.channel.clone()).version(()),
        )
        .await?;

        *sessions += 1;
        state.connected = true;
        state.reconnects = sessions.saturating_sub(1);
        state.last_error = None;
        state.version = Some(version.version.clone());
        status.send_replace(state.clone());

        let taken = Instant::now();
        let (namespaces, count) = self.inventory().await?;
        info!(
            version = %version.version,
            namespaces = ?namespaces,
            containers = count,
            ms = taken.elapsed().as_millis() as u64,
            "connected to containerd"
        );

        loop {
            let envelope = match events.recv().await {
                Some(Ok(envelope)) => envelope,
                Some(Err(err)) => return Err(err.into()),
                None => return Err(ContainerdError::StreamEnded.into()),
            };
            self.on_event(envelope).await?;
        }
    }

    /// `Seen` for every container of every followed namespace, then one
    /// `Inventory` per runtime name (`containerd`, `cri`), so the model
    /// forgets what went away while the connection was down.
    async fn inventory(&mut self) -> Result<(Vec<String>, usize), End> {
        let channel = self.channel.clone();
        let namespaces = namespaces(self.cfg, &channel).await?;
        let mut seen: HashMap<(String, String), Known> = HashMap::new();
        let mut ids: HashMap<&'static str, Vec<String>> = HashMap::from([
            (map::RUNTIME_CONTAINERD, Vec::new()),
            (map::RUNTIME_CRI, Vec::new()),
        ]);
        for ns in &namespaces {
            let containers = list_containers(&channel, ns).await?;
            let tasks = list_tasks(&channel, ns).await?;
            self.correct_state_dir(discover_state_dir(&tasks));
            for c in containers {
                let task = map::task_of(&tasks, &c.id);
                let key = (ns.clone(), c.id.clone());
                let ran = self.tracker.known.get(&key).is_some_and(|k| k.ran);
                let info = map::container_info(ns, &self.tracker.state_dir, &c, task, ran);
                let info = enrich(&channel, ns, &c, info).await;
                let runtime = map::runtime_of(ns, &c.labels);
                seen.insert(
                    key,
                    Known {
                        runtime,
                        ran: ran || started(task),
                    },
                );
                ids.entry(runtime).or_default().push(info.id.clone());
                self.send_seen(info).await?;
            }
        }
        let count = seen.len();
        self.tracker.known = seen;
        for (runtime, ids) in ids {
            self.send(ContainerEvent::Inventory {
                at: clock::boottime_ns(),
                runtime: runtime.to_string(),
                ids,
            })
            .await?;
        }
        Ok((namespaces, count))
    }

    async fn on_event(&mut self, envelope: Envelope) -> Result<(), End> {
        let ns = envelope.namespace;
        if !self.cfg.follows(&ns) {
            return Ok(());
        }
        let payload = envelope.event.map(|any| any.value).unwrap_or_default();
        let Some(change) = map::decode_event(&envelope.topic, &payload) else {
            debug!(topic = %envelope.topic, namespace = %ns, "event skipped");
            return Ok(());
        };
        debug!(topic = %envelope.topic, namespace = %ns, container = change.id(), "event");
        match change {
            Change::Refresh { id } => self.refresh(&ns, &id).await,
            Change::TaskCreated { id, bundle } => {
                self.correct_state_dir(map::state_dir_of_bundle(&bundle));
                self.refresh(&ns, &id).await
            }
            Change::Exited { id, pid } => {
                let key = (ns.clone(), id.clone());
                if let Some(known) = self.tracker.known.get_mut(&key) {
                    known.ran = true;
                    let runtime = known.runtime;
                    debug!(container = %id, pid, "init exited");
                    // Before any further call to containerd: the warning
                    // must not wait for it.
                    self.send(ContainerEvent::Stopped {
                        at: clock::boottime_ns(),
                        runtime: runtime.to_string(),
                        id: id.clone(),
                    })
                    .await?;
                }
                self.refresh(&ns, &id).await
            }
            Change::Deleted { id } => {
                if let Some(known) = self.tracker.known.remove(&(ns, id.clone())) {
                    self.send(ContainerEvent::Removed {
                        at: clock::boottime_ns(),
                        runtime: known.runtime.to_string(),
                        id,
                    })
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Asks containerd about one container and reports what it says. A
    /// container that is gone by now was removed between the event and this
    /// call: it is reported `Removed` (the `/containers/delete` event that
    /// follows then finds nothing to do).
    async fn refresh(&mut self, ns: &str, id: &str) -> Result<(), End> {
        let channel = self.channel.clone();
        let key = (ns.to_string(), id.to_string());
        let container = match get_container(&channel, ns, id).await {
            Ok(c) => c,
            Err(err) if err.is_not_found() => {
                if let Some(known) = self.tracker.known.remove(&key) {
                    debug!(container = %id, "gone before it could be read");
                    self.send(ContainerEvent::Removed {
                        at: clock::boottime_ns(),
                        runtime: known.runtime.to_string(),
                        id: id.to_string(),
                    })
                    .await?;
                }
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        let task = get_task(&channel, ns, id).await?;
        let ran = self.tracker.known.get(&key).is_some_and(|k| k.ran) || started(task.as_ref());
        let info = map::container_info(ns, &self.tracker.state_dir, &container, task.as_ref(), ran);
        let info = enrich(&channel, ns, &container, info).await;
        self.tracker.known.insert(
            key,
            Known {
                runtime: map::runtime_of(ns, &container.labels),
                ran,
            },
        );
        self.send_seen(info).await
    }

    /// Adopts the state dir containerd's own paths show, if it differs.
    fn correct_state_dir(&mut self, found: Option<PathBuf>) {
        if let Some(dir) = found {
            if dir != self.tracker.state_dir {
                info!(
                    was = %self.tracker.state_dir.display(),
                    now = %dir.display(),
                    "containerd keeps task rootfs mounts under another state dir"
                );
                self.tracker.state_dir = dir;
            }
        }
    }

    async fn send_seen(&self, info: ContainerInfo) -> Result<(), End> {
        self.send(ContainerEvent::Seen {
            at: clock::boottime_ns(),
            info: Box::new(info),
        })
        .await
    }

    async fn send(&self, ev: ContainerEvent) -> Result<(), End> {
        self.sink
            .send(Input::Container(ev))
            .await
            .map_err(|_| End::SinkClosed)
    }
}

/// Whether a task has been started (it has run, or runs).
fn started(task: Option<&Process>) -> bool {
    use containerd_client::types::v1::Status;
    task.is_some_and(|t| {
        !matches!(
            Status::try_from(t.status),
            Ok(Status::Created | Status::Unknown)
        )
    })
}

/// Subscribes to containerd's events (all namespaces: no namespace header,
/// events.proto) and forwards them, then the error that ended the stream.
async fn pump_events(channel: Channel, tx: mpsc::Sender<Result<Envelope, ContainerdError>>) {
    let request = SubscribeRequest {
        filters: map::TOPIC_FILTERS.iter().map(|f| f.to_string()).collect(),
    };
    let ended = async {
        // No timeout: the answer comes with the first event.
        let mut stream = EventsClient::new(channel)
            .subscribe(request)
            .await
            .map_err(|status| ContainerdError::call("Subscribe", None, &status))?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(envelope)) => {
                    if tx.send(Ok(envelope)).await.is_err() {
                        // The session is gone; nothing to report to.
                        return Ok(());
                    }
                }
                Ok(None) => return Err(ContainerdError::StreamEnded),
                Err(status) => return Err(ContainerdError::call("events", None, &status)),
            }
        }
    };
    if let Err(err) = ended.await {
        let _ = tx.send(Err(err)).await;
    }
}

/// Aborts a task when the session that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect(socket: &Path) -> Result<Channel, ContainerdError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, containerd_client::connect(socket)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(err)) => Err(ContainerdError::Connect {
            socket: socket.to_path_buf(),
            reason: error_chain(&err),
        }),
        Err(_) => Err(ContainerdError::Timeout {
            call: "connect",
            timeout: CONNECT_TIMEOUT,
        }),
    }
}

/// tonic's transport error says "transport error"; the reason (ENOENT,
/// ECONNREFUSED) is in its sources.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// One unary call with [`CALL_TIMEOUT`].
async fn call<T>(
    what: &'static str,
    namespace: Option<&str>,
    fut: impl Future<Output = Result<containerd_client::tonic::Response<T>, Status>>,
) -> Result<T, ContainerdError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(ContainerdError::call(what, namespace, &status)),
        Err(_) => Err(ContainerdError::Timeout {
            call: what,
            timeout: CALL_TIMEOUT,
        }),
    }
}

/// A request in `namespace` (containerd scopes every call but events by
/// this header).
fn in_ns<T>(namespace: &str, message: T) -> Result<Request<T>, ContainerdError> {
    let value = MetadataValue::try_from(namespace)
        .map_err(|_| ContainerdError::BadNamespace(namespace.to_string()))?;
    let mut request = Request::new(message);
    request.metadata_mut().insert(NAMESPACE_HEADER, value);
    Ok(request)
}

/// The namespaces to read: the configured ones, or all the server has, less
/// the skipped ones; sorted.
async fn namespaces(
    cfg: &ContainerdConfig,
    channel: &Channel,
) -> Result<Vec<String>, ContainerdError> {
    let names: BTreeSet<String> = if cfg.namespaces.is_empty() {
        call(
            "ListNamespaces",
            None,
            NamespacesClient::new(channel.clone()).list(ListNamespacesRequest::default()),
        )
        .await?
        .namespaces
        .into_iter()
        .map(|n| n.name)
        .collect()
    } else {
        cfg.namespaces.iter().cloned().collect()
    };
    Ok(names.into_iter().filter(|n| cfg.follows(n)).collect())
}

/// Every container of a namespace, with labels and spec. `ListStream`
/// sends one message per container, so a node with many containers never
/// hits gRPC's 4 MiB message limit (each spec is several KiB).
async fn list_containers(channel: &Channel, ns: &str) -> Result<Vec<Container>, ContainerdError> {
    const WHAT: &str = "ListContainers";
    let mut client = ContainersClient::new(channel.clone());
    let mut stream = call(
        WHAT,
        Some(ns),
        client.list_stream(in_ns(ns, ListContainersRequest::default())?),
    )
    .await?;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(msg))) => out.extend(msg.container),
            Ok(Ok(None)) => return Ok(out),
            Ok(Err(status)) => return Err(ContainerdError::call(WHAT, Some(ns), &status)),
            Err(_) => {
                return Err(ContainerdError::Timeout {
                    call: WHAT,
                    timeout: CALL_TIMEOUT,
                })
            }
        }
    }
}

async fn list_tasks(channel: &Channel, ns: &str) -> Result<Vec<Process>, ContainerdError> {
    let mut client = TasksClient::new(channel.clone());
    Ok(call(
        "ListTasks",
        Some(ns),
        client.list(in_ns(ns, ListTasksRequest::default())?),
    )
    .await?
    .tasks)
}

async fn get_container(
    channel: &Channel,
    ns: &str,
    id: &str,
) -> Result<Container, ContainerdError> {
    let mut client = ContainersClient::new(channel.clone());
    let request = in_ns(ns, GetContainerRequest { id: id.to_string() })?;
    call("GetContainer", Some(ns), client.get(request))
        .await?
        .container
        .ok_or_else(|| ContainerdError::Call {
            call: "GetContainer",
            namespace: Some(ns.to_string()),
            code: Code::NotFound,
            message: format!("no container in the answer for {id}"),
        })
}

/// The container's task, `None` when it has none.
async fn get_task(
    channel: &Channel,
    ns: &str,
    id: &str,
) -> Result<Option<Process>, ContainerdError> {
    let mut client = TasksClient::new(channel.clone());
    let request = in_ns(
        ns,
        GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        },
    )?;
    match call("GetTask", Some(ns), client.get(request)).await {
        Ok(response) => Ok(response.process),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}

/// Adds what needs the OS: the upper dir of the container's snapshot (ties
/// a detached overlay a holder still pins back to this container) and the
/// task's start time. Neither is essential, so failures only get logged.
async fn enrich(
    channel: &Channel,
    ns: &str,
    c: &Container,
    mut info: ContainerInfo,
) -> ContainerInfo {
    if !c.snapshot_key.is_empty() && !c.snapshotter.is_empty() {
        match snapshot_upper_dir(channel, ns, c).await {
            Ok(Some(dir)) => match std::fs::metadata(&dir) {
                Ok(meta) => info.upper_dir = Some((dev_of(meta.dev()), meta.ino())),
                Err(err) => debug!(container = %c.id, dir = %dir.display(), %err, "upper dir"),
            },
            Ok(None) => {}
            Err(err) => debug!(container = %c.id, %err, "snapshot mounts"),
        }
    }
    if let Some(pid) = info.pid {
        info.started_at = process_start(pid);
    }
    info
}

async fn snapshot_upper_dir(
    channel: &Channel,
    ns: &str,
    c: &Container,
) -> Result<Option<PathBuf>, ContainerdError> {
    let mut client = SnapshotsClient::new(channel.clone());
    let request = in_ns(
        ns,
        MountsRequest {
            snapshotter: c.snapshotter.clone(),
            key: c.snapshot_key.clone(),
        },
    )?;
    let mounts = call("SnapshotMounts", Some(ns), client.mounts(request)).await?;
    Ok(mounts
        .mounts
        .iter()
        .find_map(|m| map::upper_dir_option(&m.options)))
}

/// A process's start time in boottime ns, from /proc/PID/stat.
fn process_start(pid: u32) -> Option<Ktime> {
    let pid = i32::try_from(pid).ok()?;
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some(clock::ticks_to_boottime_ns(
        stat.starttime,
        clock::ticks_per_second(),
    ))
}

/// containerd's state dir, from the working directory of a running task's
/// shim: the runc v2 shim runs in the bundle directory (for a CRI pod, its
/// sandbox's), which lies under `<state>/io.containerd.runtime.v2.task/`.
fn discover_state_dir(tasks: &[Process]) -> Option<PathBuf> {
    tasks.iter().filter(|t| t.pid > 0).find_map(|t| {
        let stat = procfs::process::Process::new(i32::try_from(t.pid).ok()?)
            .ok()?
            .stat()
            .ok()?;
        let shim_cwd = std::fs::read_link(format!("/proc/{}/cwd", stat.ppid)).ok()?;
        map::state_dir_of_bundle(&shim_cwd)
    })
}

/// Splits a `dev_t` (glibc's encoding, makedev(3)).
fn dev_of(dev: u64) -> Dev {
    Dev {
        major: libc::major(dev),
        minor: libc::minor(dev),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_the_config() {
        let cfg = ContainerdConfig::default();
        assert!(cfg.follows("k8s.io") && cfg.follows("default"));
        assert!(!cfg.follows("moby"));
        let cfg = ContainerdConfig {
            namespaces: vec!["k8s.io".into(), "moby".into()],
            ..ContainerdConfig::default()
        };
        assert!(cfg.follows("k8s.io"));
        assert!(!cfg.follows("default"));
        // Skipping wins over listing.
        assert!(!cfg.follows("moby"));
    }

    #[test]
    fn errors_read_well() {
        let err = ContainerdError::call(
            "GetContainer",
            Some("k8s.io"),
            &Status::not_found("container \"x\" in namespace \"k8s.io\": not found"),
        );
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            "containerd GetContainer in namespace k8s.io: NotFound: container \"x\" in namespace \"k8s.io\": not found"
        );
        let err = ContainerdError::Ambiguous {
            target: "ab".into(),
            ids: vec!["abc".into(), "abd".into()],
        };
        assert_eq!(
            err.to_string(),
            "\"ab\" is a prefix of several containerd container ids: abc, abd"
        );
    }

    #[test]
    fn a_bad_namespace_is_an_error_not_a_panic() {
        assert!(matches!(
            in_ns("bad\nname", ()),
            Err(ContainerdError::BadNamespace(_))
        ));
        let req = in_ns("k8s.io", ()).unwrap();
        assert_eq!(req.metadata().get(NAMESPACE_HEADER).unwrap(), "k8s.io");
    }

    #[test]
    fn started_tasks() {
        use containerd_client::types::v1::Status as S;
        let t = |s: S| Process {
            status: s as i32,
            ..Default::default()
        };
        assert!(!started(None));
        assert!(!started(Some(&t(S::Created))));
        assert!(started(Some(&t(S::Running))));
        assert!(started(Some(&t(S::Stopped))));
        assert!(started(Some(&t(S::Paused))));
    }

    /// The adapter on a socket nobody listens on: reports the error, stays
    /// disconnected, and stops when the receiver goes.
    #[tokio::test]
    async fn an_absent_containerd_is_retried_until_the_daemon_stops() {
        let dir = std::env::temp_dir().join(format!("mountleak-ctrd-unit-{}", std::process::id()));
        let cfg = ContainerdConfig::with_socket(dir.join("nothing.sock"));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (status_tx, mut status_rx) = watch::channel(RuntimeStatus::default());
        let task = tokio::spawn(run(cfg, tx, status_tx));
        let st = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                status_rx.changed().await.unwrap();
                let st = status_rx.borrow().clone();
                if st.last_error.is_some() {
                    return st;
                }
            }
        })
        .await
        .expect("an error is reported");
        assert_eq!(st.runtime, RUNTIME);
        assert!(!st.connected);
        assert!(
            st.last_error.as_deref().unwrap().contains("nothing.sock"),
            "{st:?}"
        );
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the adapter stops once its receiver is gone")
            .unwrap();
    }

    #[tokio::test]
    async fn lookup_on_an_absent_containerd_is_an_error() {
        let cfg = ContainerdConfig::with_socket("/nonexistent/containerd.sock");
        let err = lookup(&cfg, "x").await.unwrap_err();
        assert!(matches!(err, ContainerdError::Connect { .. }), "{err}");
    }
}
