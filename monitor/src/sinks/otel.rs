//! OpenTelemetry traces: one trace per container lifecycle, findings as
//! span events, sent over OTLP to Jaeger or any collector.
//!
//! ```text
//! container.lifecycle    container start ──────────────────────────── removal
//! ├─ mount.copy          holder's copy (holder.since) ────── released
//! ├─ mount.leak                 host umount (unmounted_at) ───────────── resolved
//! └─ container.remove                                  failed attempt │ removal
//! ```
//!
//! Every span starts and ends at the kernel's or the runtime's own times
//! (`CLOCK_BOOTTIME`), converted to wall time when the span is built, never
//! through a cached offset (`procfs::clock`). Spans are built as the SDK's
//! [`SpanData`] here rather than through a `Tracer`, because their times
//! are learned after the fact: a copy span opens at `holder.since`, which
//! the first finding reports seconds or days later.
//!
//! A mount that no runtime claims (no `mount.owner`) gets its own trace,
//! rooted at a `mount.lifecycle` span from when it was mounted (or first
//! seen held) to its resolution. A finding whose span already ended lands
//! on a short `mountleak.finding` span in the same trace.
//!
//! Attribute names follow the OpenTelemetry semantic conventions where one
//! exists (`container.*`, `k8s.*`, `process.*`, `host.name`); everything
//! else is under `mountleak.*` (README "Traces" lists them).
//!
//! Open spans live here until they end; a daemon that stops ends them at
//! that moment with `mountleak.incomplete = true`.
//!
//! Owns: the span state machine and handing finished spans to `exporter`.
//! May import: opentelemetry, opentelemetry_sdk, the model's types, the
//! clock conversion.

pub mod exporter;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use monitor_model::finding::{ContainerRef, Finding, FindingKind, HoldKind, Holder};
use monitor_model::{Call, ContainerEvent, ContainerInfo, Input, Ktime, NsId, Pid};
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use tracing::info;

use super::{DaemonStatus, Sink};
pub use exporter::{ExportError, ExportStats, Pipeline, Settings};

/// Span names: few and fixed, so a backend can group by them.
pub mod names {
    pub const CONTAINER: &str = "container.lifecycle";
    pub const MOUNT: &str = "mount.lifecycle";
    pub const COPY: &str = "mount.copy";
    /// A process keeping a detached filesystem (cwd, root or open file).
    pub const PIN: &str = "mount.pin";
    pub const LEAK: &str = "mount.leak";
    pub const REMOVE: &str = "container.remove";
    pub const FINDING: &str = "mountleak.finding";
}

/// Converts kernel time to wall time (the real clock in the daemon, a fixed
/// one in tests).
pub type WallClock = fn(Ktime) -> SystemTime;

/// A runtime's name for a container.
type ContainerKey = (String, String);

/// A span that has not ended yet.
#[derive(Debug)]
struct OpenSpan {
    ctx: SpanContext,
    parent: SpanId,
    name: &'static str,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    links: Vec<Link>,
    status: Status,
}

impl OpenSpan {
    /// Sets an attribute, replacing an earlier value of the same key.
    fn set(&mut self, kv: KeyValue) {
        match self.attributes.iter_mut().find(|a| a.key == kv.key) {
            Some(a) => *a = kv,
            None => self.attributes.push(kv),
        }
    }

    fn finish(self, end: SystemTime, scope: &InstrumentationScope) -> SpanData {
        // Both are `non_exhaustive` with public fields.
        let mut events = SpanEvents::default();
        events.events = self.events;
        let mut links = SpanLinks::default();
        links.links = self.links;
        SpanData {
            span_context: self.ctx,
            parent_span_id: self.parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(self.name),
            start_time: self.start,
            // A span cannot end before it starts; clock conversion of two
            // kernel times read microseconds apart can cross by a hair.
            end_time: end.max(self.start),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events,
            links,
            status: self.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// Which trace a filesystem's story is told in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TraceOf {
    Container(ContainerKey),
    /// Its own trace, keyed by the finding id.
    Mount(String),
}

/// A container's trace.
#[derive(Debug)]
struct ContainerTrace {
    trace_id: TraceId,
    root_id: SpanId,
    root_start: SystemTime,
    /// `None` once the container is removed (the root span ended).
    root: Option<OpenSpan>,
    /// Open stories (finding ids) told in this trace.
    stories: usize,
    started_at: Option<Ktime>,
}

/// A mount's own trace (no runtime claims it).
#[derive(Debug)]
struct MountTrace {
    root: OpenSpan,
}

/// The spans of one filesystem's story: a risk, the leak it becomes and
/// its resolution share a finding id.
#[derive(Debug)]
struct Story {
    trace: TraceOf,
    holders: HashMap<HolderKey, OpenSpan>,
    leak: Option<OpenSpan>,
}

/// A holder: its namespace, how it holds, and the process for pins.
type HolderKey = (NsId, &'static str, Pid);

/// A failed umount/rmdir the probes saw, for the exact times of a failed
/// removal's span.
#[derive(Clone, Copy, Debug)]
struct FailedSyscall {
    pid: Pid,
    start: Ktime,
    end: Ktime,
}

/// How many failed calls are remembered (they are matched with the
/// finding the same input produces, so a few suffice).
const RECENT_FAILURES: usize = 64;

/// The span state machine. Pure apart from id generation and the clock:
/// unit tests drive it with a fixed clock and read the spans it finishes.
pub struct Traces {
    wall: WallClock,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    containers: HashMap<ContainerKey, ContainerTrace>,
    mounts: HashMap<String, MountTrace>,
    stories: HashMap<String, Story>,
    /// Removal attempts a runtime reported, waiting for the findings of
    /// the same input (their events) before they end.
    pending_removals: Vec<(ContainerKey, Ktime, OpenSpan)>,
    recent_failures: VecDeque<FailedSyscall>,
    /// Spans finished and not yet taken.
    finished: Vec<SpanData>,
}

impl Traces {
    pub fn new(wall: WallClock) -> Traces {
        Traces {
            wall,
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("mountleak")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            containers: HashMap::new(),
            mounts: HashMap::new(),
            stories: HashMap::new(),
            pending_removals: Vec::new(),
            recent_failures: VecDeque::new(),
            finished: Vec::new(),
        }
    }

    /// Spans that ended since the last call.
    pub fn take_finished(&mut self) -> std::vec::Drain<'_, SpanData> {
        self.finished.drain(..)
    }

    /// Containers with a trace open (for tests and the memory benchmark).
    pub fn open_containers(&self) -> usize {
        self.containers.len()
    }

    fn span(
        &self,
        trace_id: TraceId,
        parent: SpanId,
        name: &'static str,
        start: SystemTime,
    ) -> OpenSpan {
        OpenSpan {
            ctx: SpanContext::new(
                trace_id,
                self.ids.new_span_id(),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent,
            name,
            start,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::Unset,
        }
    }

    fn end(&mut self, span: OpenSpan, at: SystemTime) {
        let data = span.finish(at, &self.scope);
        self.finished.push(data);
    }

    /// Every model input, after the model applied it.
    pub fn input(&mut self, input: &Input) {
        // The findings of the previous input have all been delivered.
        self.end_pending_removals();
        match input {
            Input::Container(ev) => self.container_event(ev),
            Input::Syscall(ev) => {
                let failed_removal = matches!(ev.call, Call::Umount { .. } | Call::Rmdir { .. });
                if failed_removal && ev.ret < 0 {
                    if self.recent_failures.len() == RECENT_FAILURES {
                        self.recent_failures.pop_front();
                    }
                    self.recent_failures.push_back(FailedSyscall {
                        pid: ev.task.tgid,
                        start: ev.start,
                        end: ev.end,
                    });
                }
            }
            _ => {}
        }
    }

    /// The status tick: nothing waits longer than a second.
    pub fn tick(&mut self) {
        self.end_pending_removals();
    }

    fn end_pending_removals(&mut self) {
        for (_, at, span) in std::mem::take(&mut self.pending_removals) {
            let end = (self.wall)(at);
            self.end(span, end);
        }
    }

    fn container_event(&mut self, ev: &ContainerEvent) {
        match ev {
            ContainerEvent::Seen { at, info } => self.container_seen(*at, info),
            ContainerEvent::Stopped { at, runtime, id } => {
                let t = (self.wall)(*at);
                if let Some(root) = self.root_mut(runtime, id) {
                    root.events.push(Event::new("stopped", t, Vec::new(), 0));
                    root.set(KeyValue::new("mountleak.container.state", "stopped"));
                }
            }
            ContainerEvent::Removed { at, runtime, id } => {
                self.container_removed(*at, (runtime.clone(), id.clone()), "runtime");
            }
            ContainerEvent::RemovalFailed {
                at,
                runtime,
                id,
                message,
            } => {
                let key = (runtime.clone(), id.clone());
                let Some(c) = self.containers.get(&key) else {
                    return;
                };
                let t = (self.wall)(*at);
                let mut span = self.span(c.trace_id, c.root_id, names::REMOVE, t);
                span.set(KeyValue::new("mountleak.removal.result", "failed"));
                span.set(KeyValue::new("mountleak.removal.message", message.clone()));
                span.status = Status::error(message.clone());
                self.pending_removals.push((key, *at, span));
            }
            ContainerEvent::Inventory { at, runtime, ids } => {
                let gone: Vec<ContainerKey> = self
                    .containers
                    .iter()
                    .filter(|((r, id), c)| r == runtime && c.root.is_some() && !ids.contains(id))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in gone {
                    self.container_removed(*at, key, "inventory");
                }
            }
        }
    }

    fn root_mut(&mut self, runtime: &str, id: &str) -> Option<&mut OpenSpan> {
        self.containers
            .get_mut(&(runtime.to_string(), id.to_string()))
            .and_then(|c| c.root.as_mut())
    }

    fn container_seen(&mut self, at: Ktime, info: &ContainerInfo) {
        let key = (info.runtime.clone(), info.id.clone());
        if let Some(c) = self.containers.get_mut(&key) {
            // A resync or a restart: refresh what may have changed.
            let restarted = info.started_at.is_some() && info.started_at != c.started_at;
            // Seen at create, started later: until a story hangs under the
            // root, the runtime's own start is the better beginning.
            let first_start = c.started_at.is_none() && c.stories == 0;
            if let Some(root) = c.root.as_mut() {
                if let (true, Some(s)) = (first_start, info.started_at) {
                    let start = (self.wall)(s);
                    root.start = start;
                    root.set(KeyValue::new("mountleak.start_source", "runtime"));
                    c.root_start = start;
                    c.started_at = info.started_at;
                    for kv in container_attributes(info) {
                        root.set(kv);
                    }
                    return;
                }
                for kv in container_attributes(info) {
                    root.set(kv);
                }
                if restarted {
                    if let Some(s) = info.started_at {
                        root.events
                            .push(Event::new("started", (self.wall)(s), Vec::new(), 0));
                    }
                }
            }
            if restarted {
                c.started_at = info.started_at;
            }
            return;
        }
        let (start_k, source) = match info.started_at {
            Some(s) => (s, "runtime"),
            None => (at, "first_seen"),
        };
        let start = (self.wall)(start_k);
        let mut root = self.span(
            self.ids.new_trace_id(),
            SpanId::INVALID,
            names::CONTAINER,
            start,
        );
        root.attributes = container_attributes(info);
        root.set(KeyValue::new("mountleak.start_source", source));
        self.containers.insert(
            key,
            ContainerTrace {
                trace_id: root.ctx.trace_id(),
                root_id: root.ctx.span_id(),
                root_start: start,
                root: Some(root),
                stories: 0,
                started_at: info.started_at,
            },
        );
    }

    fn container_removed(&mut self, at: Ktime, key: ContainerKey, source: &'static str) {
        let t = (self.wall)(at);
        let Some(c) = self.containers.get_mut(&key) else {
            return;
        };
        let Some(mut root) = c.root.take() else {
            return;
        };
        let (trace_id, root_id) = (c.trace_id, c.root_id);
        let forget = c.stories == 0;
        let mut remove = self.span(trace_id, root_id, names::REMOVE, t);
        remove.set(KeyValue::new("mountleak.removal.result", "removed"));
        remove.set(KeyValue::new("mountleak.removal.source", source));
        root.set(KeyValue::new("mountleak.container.state", "removed"));
        root.set(KeyValue::new("mountleak.removal.source", source));
        self.end(remove, t);
        self.end(root, t);
        if forget {
            self.containers.remove(&key);
        }
    }

    /// A finding, as it happens.
    pub fn finding(&mut self, f: &Finding) {
        let at = (self.wall)(f.at);
        let trace = self.story_trace(f, at);
        let Some((trace_id, root_id, root_start)) = self.trace_ids(&trace) else {
            return;
        };
        let mut story = self.stories.remove(&f.id).unwrap_or_else(|| Story {
            trace: trace.clone(),
            holders: HashMap::new(),
            leak: None,
        });

        // Holders: a span per namespace copy (or process pin) from when it
        // began holding; the ones no longer listed have released it.
        let current: Vec<(HolderKey, &Holder)> =
            f.holders.iter().map(|h| (holder_key(h), h)).collect();
        if f.kind != FindingKind::Resolved {
            for (key, h) in &current {
                if story.holders.contains_key(key) {
                    continue;
                }
                // A copy cannot predate its mount or its container.
                let since = h.since.map(self.wall).unwrap_or(at).max(root_start);
                let name = if h.hold == HoldKind::Copy {
                    names::COPY
                } else {
                    names::PIN
                };
                let mut span = self.span(trace_id, root_id, name, since);
                span.attributes = holder_attributes(f, h);
                story.holders.insert(*key, span);
            }
        }
        let released: Vec<HolderKey> = story
            .holders
            .keys()
            .filter(|k| f.kind == FindingKind::Resolved || !current.iter().any(|(c, _)| c == *k))
            .copied()
            .collect();
        for key in released {
            if let Some(mut span) = story.holders.remove(&key) {
                span.set(KeyValue::new("mountleak.released", true));
                self.end(span, at);
            }
        }

        // The leak window: from the host's umount to the resolution.
        if story.leak.is_none() && f.kind != FindingKind::Resolved {
            if let Some(unmounted) = f.mount.unmounted_at {
                let start = (self.wall)(unmounted).max(root_start);
                let mut span = self.span(trace_id, root_id, names::LEAK, start);
                span.attributes = mount_attributes(f);
                span.set(KeyValue::new(
                    "mountleak.consequence.kind",
                    consequence_kind(f),
                ));
                story.leak = Some(span);
            }
        }

        let event = finding_event(f, at);
        match f.kind {
            FindingKind::FailedRemoval => self.failed_removal(f, &trace, trace_id, root_id, event),
            FindingKind::Leak if story.leak.is_some() => {
                if let Some(l) = story.leak.as_mut() {
                    l.events.push(event);
                }
            }
            FindingKind::Resolved => {
                if let Some(mut l) = story.leak.take() {
                    l.events.push(event);
                    if let Some(r) = &f.resolution {
                        l.set(KeyValue::new("mountleak.resolution", r.clone()));
                    }
                    self.end(l, at);
                } else {
                    self.event_on_root(&trace, trace_id, root_id, event, at);
                }
            }
            _ => self.event_on_root(&trace, trace_id, root_id, event, at),
        }

        if f.kind == FindingKind::Resolved {
            self.story_ended(&story.trace, at, f.resolution.as_deref());
        } else {
            self.stories.insert(f.id.clone(), story);
        }
    }

    /// The trace a finding's story is told in; creates it when new. A story
    /// that began without an owner and now has one moves to the
    /// container's trace, linked to where it began.
    fn story_trace(&mut self, f: &Finding, at: SystemTime) -> TraceOf {
        let owner_key = f
            .mount
            .owner
            .as_ref()
            .map(|o| (o.runtime.clone(), o.id.clone()));
        let existing = self.stories.get(&f.id).map(|s| s.trace.clone());
        match (existing, owner_key) {
            (Some(TraceOf::Mount(id)), Some(key)) => {
                // Adopted: end the mount trace here and go on in the container's.
                let link = self.mounts.get(&id).map(|m| m.root.ctx.clone());
                if let Some(mut story) = self.stories.remove(&f.id) {
                    for (_, span) in story.holders.drain() {
                        self.end(span, at);
                    }
                    if let Some(l) = story.leak.take() {
                        self.end(l, at);
                    }
                }
                self.ensure_container(f, f.mount.owner.as_ref(), &key);
                if let Some(mut m) = self.mounts.remove(&id) {
                    if let Some(c) = self.containers.get(&key) {
                        m.root.set(KeyValue::new(
                            "mountleak.continued_in_trace",
                            c.trace_id.to_string(),
                        ));
                    }
                    self.end(m.root, at);
                }
                if let (Some(link), Some(c)) = (link, self.containers.get_mut(&key)) {
                    c.stories += 1;
                    if let Some(root) = c.root.as_mut() {
                        root.links.push(Link::with_context(link));
                    }
                }
                TraceOf::Container(key)
            }
            (Some(t), _) => t,
            (None, Some(key)) => {
                self.ensure_container(f, f.mount.owner.as_ref(), &key);
                if let Some(c) = self.containers.get_mut(&key) {
                    c.stories += 1;
                }
                TraceOf::Container(key)
            }
            (None, None) => {
                let start = [
                    f.mount.mounted_at,
                    f.holders.iter().filter_map(|h| h.since).min(),
                    Some(f.at),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(f.at);
                let source = if f.mount.mounted_at == Some(start) {
                    "mounted"
                } else {
                    "first_seen"
                };
                let mut root = self.span(
                    self.ids.new_trace_id(),
                    SpanId::INVALID,
                    names::MOUNT,
                    (self.wall)(start),
                );
                root.attributes = mount_attributes(f);
                root.set(KeyValue::new("mountleak.start_source", source));
                self.mounts.insert(f.id.clone(), MountTrace { root });
                TraceOf::Mount(f.id.clone())
            }
        }
    }

    /// A container named by a finding but not (yet) by its runtime's events.
    fn ensure_container(&mut self, f: &Finding, owner: Option<&ContainerRef>, key: &ContainerKey) {
        if self.containers.contains_key(key) {
            return;
        }
        let Some(owner) = owner else { return };
        let start_k = f.mount.mounted_at.unwrap_or(f.at).min(f.at);
        let start = (self.wall)(start_k);
        let mut root = self.span(
            self.ids.new_trace_id(),
            SpanId::INVALID,
            names::CONTAINER,
            start,
        );
        root.attributes = owner_attributes(owner);
        root.set(KeyValue::new("mountleak.start_source", "first_seen"));
        self.containers.insert(
            key.clone(),
            ContainerTrace {
                trace_id: root.ctx.trace_id(),
                root_id: root.ctx.span_id(),
                root_start: start,
                root: Some(root),
                stories: 0,
                started_at: None,
            },
        );
    }

    fn trace_ids(&self, trace: &TraceOf) -> Option<(TraceId, SpanId, SystemTime)> {
        match trace {
            TraceOf::Container(key) => self
                .containers
                .get(key)
                .map(|c| (c.trace_id, c.root_id, c.root_start)),
            TraceOf::Mount(id) => self
                .mounts
                .get(id)
                .map(|m| (m.root.ctx.trace_id(), m.root.ctx.span_id(), m.root.start)),
        }
    }

    /// Puts an event on the trace's root span while it is open, else on a
    /// short span of its own.
    fn event_on_root(
        &mut self,
        trace: &TraceOf,
        trace_id: TraceId,
        root_id: SpanId,
        event: Event,
        at: SystemTime,
    ) {
        let root = match trace {
            TraceOf::Container(key) => self.containers.get_mut(key).and_then(|c| c.root.as_mut()),
            TraceOf::Mount(id) => self.mounts.get_mut(id).map(|m| &mut m.root),
        };
        match root {
            Some(root) => root.events.push(event),
            None => {
                let mut span = self.span(trace_id, root_id, names::FINDING, at);
                span.events.push(event);
                self.end(span, at);
            }
        }
    }

    /// A failed removal: the runtime's attempt (opened by its event), or a
    /// failed umount/rmdir at the times the probe saw.
    fn failed_removal(
        &mut self,
        f: &Finding,
        trace: &TraceOf,
        trace_id: TraceId,
        root_id: SpanId,
        event: Event,
    ) {
        if let TraceOf::Container(key) = trace {
            if let Some((_, _, span)) = self
                .pending_removals
                .iter_mut()
                .find(|(k, at, _)| k == key && *at == f.at)
            {
                span.events.push(event);
                return;
            }
        }
        let call = f.failed_call.as_ref();
        let seen = call.and_then(|c| {
            self.recent_failures
                .iter()
                .rev()
                .find(|s| s.pid == c.pid && s.end == f.at)
                .copied()
        });
        let (start, end) = match seen {
            Some(s) => ((self.wall)(s.start), (self.wall)(s.end)),
            None => {
                let t = (self.wall)(f.at);
                (t, t)
            }
        };
        let mut span = self.span(trace_id, root_id, names::REMOVE, start);
        span.set(KeyValue::new("mountleak.removal.result", "failed"));
        span.set(KeyValue::new("mountleak.mount.path", f.mount.path.lossy()));
        if let Some(c) = call {
            span.set(KeyValue::new("mountleak.syscall", c.syscall));
            span.set(KeyValue::new("mountleak.errno", c.errno));
            if c.pid != 0 {
                span.set(KeyValue::new("process.pid", i64::from(c.pid)));
                span.set(KeyValue::new("process.command", c.comm.clone()));
            }
            if let Some(m) = &c.message {
                span.set(KeyValue::new("mountleak.removal.message", m.clone()));
            }
        }
        span.set(KeyValue::new(
            "mountleak.time_source",
            if seen.is_some() { "probe" } else { "finding" },
        ));
        span.status = Status::error(f.summary.clone());
        span.events.push(event);
        self.end(span, end);
    }

    /// A story resolved: its trace may end too.
    fn story_ended(&mut self, trace: &TraceOf, at: SystemTime, resolution: Option<&str>) {
        match trace {
            TraceOf::Mount(id) => {
                if let Some(mut m) = self.mounts.remove(id) {
                    if let Some(r) = resolution {
                        m.root
                            .set(KeyValue::new("mountleak.resolution", r.to_string()));
                    }
                    self.end(m.root, at);
                }
            }
            TraceOf::Container(key) => {
                if let Some(c) = self.containers.get_mut(key) {
                    c.stories = c.stories.saturating_sub(1);
                    if c.stories == 0 && c.root.is_none() {
                        self.containers.remove(key);
                    }
                }
            }
        }
    }

    /// The daemon stops: ends every open span now, marked incomplete.
    pub fn end_all(&mut self, at: SystemTime) {
        self.end_pending_removals();
        let incomplete = KeyValue::new("mountleak.incomplete", true);
        let mut open: Vec<OpenSpan> = Vec::new();
        for (_, mut s) in self.stories.drain() {
            open.extend(s.holders.drain().map(|(_, span)| span));
            open.extend(s.leak.take());
        }
        open.extend(self.mounts.drain().map(|(_, m)| m.root));
        open.extend(self.containers.drain().filter_map(|(_, c)| c.root));
        for mut span in open {
            span.set(incomplete.clone());
            self.end(span, at);
        }
    }
}

fn holder_key(h: &Holder) -> HolderKey {
    let hold = match h.hold {
        HoldKind::Copy => "copy",
        HoldKind::Cwd => "cwd",
        HoldKind::Root => "root",
        HoldKind::Fd => "fd",
    };
    // A copy is the namespace's; a pin is a process's.
    let pid = if h.hold == HoldKind::Copy {
        0
    } else {
        h.pid.unwrap_or(0)
    };
    (h.mnt_ns, hold, pid)
}

fn consequence_kind(f: &Finding) -> &'static str {
    use monitor_model::finding::ConsequenceKind as K;
    match f.consequence.kind {
        K::RemovalFailsEbusy => "removal_fails_ebusy",
        K::DetachedOnRemoval => "detached_on_removal",
        K::FilesystemPinned => "filesystem_pinned",
        K::None => "none",
    }
}

/// `nginx:1.25` -> (`nginx`, Some(`1.25`)); `reg:5000/a/b@sha256:…` -> (`reg:5000/a/b`, None).
fn split_image(image: &str) -> (&str, Option<&str>) {
    if let Some((name, _digest)) = image.split_once('@') {
        return (name, None);
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (image, None),
    }
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(Array::String(
        items.into_iter().map(StringValue::from).collect(),
    ))
}

fn image_attributes(image: &str, out: &mut Vec<KeyValue>) {
    let (name, tag) = split_image(image);
    out.push(KeyValue::new("container.image.name", name.to_string()));
    if let Some(tag) = tag {
        out.push(KeyValue::new(
            "container.image.tags",
            strings([tag.to_string()]),
        ));
    }
}

fn pod_attributes(pod: &monitor_model::PodInfo, out: &mut Vec<KeyValue>) {
    out.push(KeyValue::new("k8s.pod.name", pod.name.clone()));
    out.push(KeyValue::new("k8s.pod.uid", pod.uid.clone()));
    out.push(KeyValue::new("k8s.namespace.name", pod.namespace.clone()));
    if let Some(c) = &pod.container {
        out.push(KeyValue::new("k8s.container.name", c.clone()));
    }
}

/// Semantic-convention attributes of a container, from its runtime.
fn container_attributes(info: &ContainerInfo) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new("container.id", info.id.clone()),
        KeyValue::new("container.name", info.name.clone()),
        KeyValue::new("container.runtime", info.runtime.clone()),
    ];
    if let Some(image) = &info.image {
        image_attributes(image, &mut out);
    }
    if let Some(pod) = &info.pod {
        pod_attributes(pod, &mut out);
    }
    if let Some(ns) = &info.namespace {
        out.push(KeyValue::new("mountleak.containerd.namespace", ns.clone()));
    }
    if let Some(pid) = info.pid {
        out.push(KeyValue::new("process.pid", i64::from(pid)));
    }
    if !info.mounts.is_empty() {
        out.push(KeyValue::new(
            "mountleak.container.mounts",
            strings(info.mounts.iter().map(|m| m.lossy())),
        ));
    }
    out
}

/// The same, from a finding's owner (when the runtime's own event was missed).
fn owner_attributes(owner: &ContainerRef) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new("container.id", owner.id.clone()),
        KeyValue::new("container.name", owner.name.clone()),
        KeyValue::new("container.runtime", owner.runtime.clone()),
    ];
    if let Some(image) = &owner.image {
        image_attributes(image, &mut out);
    }
    if let Some(pod) = &owner.pod {
        pod_attributes(pod, &mut out);
    }
    if let Some(ns) = &owner.namespace {
        out.push(KeyValue::new("mountleak.containerd.namespace", ns.clone()));
    }
    out
}

/// The mount a finding is about, and what its path says.
fn mount_attributes(f: &Finding) -> Vec<KeyValue> {
    let m = &f.mount;
    let mut out = vec![
        KeyValue::new("mountleak.finding.id", f.id.clone()),
        KeyValue::new("mountleak.mount.path", m.path.lossy()),
        KeyValue::new("mountleak.mount.fstype", m.fstype.clone()),
        KeyValue::new("mountleak.mount.source", m.source.lossy()),
    ];
    if let Some(d) = &m.dev {
        out.push(KeyValue::new("mountleak.mount.dev", d.clone()));
    }
    let hint = &m.container;
    let inferred = [
        ("mountleak.path.runtime", hint.runtime.map(str::to_string)),
        ("mountleak.path.role", hint.role.map(str::to_string)),
        ("mountleak.path.id", hint.id.clone()),
        ("mountleak.path.namespace", hint.namespace.clone()),
        ("mountleak.path.pod_uid", hint.pod_uid.clone()),
        ("mountleak.path.volume", hint.volume.clone()),
    ];
    for (k, v) in inferred {
        if let Some(v) = v {
            out.push(KeyValue::new(k, v));
        }
    }
    out
}

/// A holder: its namespace, how it holds, its process.
fn holder_attributes(f: &Finding, h: &Holder) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new("mountleak.finding.id", f.id.clone()),
        KeyValue::new("mountleak.mount.path", f.mount.path.lossy()),
        KeyValue::new("mountleak.mnt_ns", h.mnt_ns as i64),
        KeyValue::new("mountleak.hold", holder_key(h).1),
        KeyValue::new("mountleak.propagation", h.propagation),
        KeyValue::new("mountleak.user_ns_locked", h.user_ns_locked),
        KeyValue::new("mountleak.since_source", h.since_source),
    ];
    if let Some(mp) = &h.mount_point {
        out.push(KeyValue::new("mountleak.holder.mount_point", mp.lossy()));
    }
    if let Some(r) = h.receives_host_umounts {
        out.push(KeyValue::new("mountleak.receives_host_umounts", r));
    }
    if let Some(via) = h.via {
        out.push(KeyValue::new("mountleak.copy.via", via));
    }
    if let Some(p) = h.parent_mnt_ns {
        out.push(KeyValue::new("mountleak.parent_mnt_ns", p as i64));
    }
    if let Some(pid) = h.pid {
        out.push(KeyValue::new("process.pid", i64::from(pid)));
    }
    if let Some(p) = h.processes.first() {
        out.push(KeyValue::new("process.command", p.comm.clone()));
        out.push(KeyValue::new("process.user.id", i64::from(p.uid)));
        if let Some(exe) = &p.exe {
            out.push(KeyValue::new("process.executable.path", exe.lossy()));
        }
        if let Some(cg) = &p.cgroup {
            out.push(KeyValue::new("process.linux.cgroup", cg.clone()));
        }
        if let Some(unit) = &p.unit {
            out.push(KeyValue::new("mountleak.systemd.unit", unit.clone()));
        }
    }
    if !h.nsfs_mounts.is_empty() {
        out.push(KeyValue::new(
            "mountleak.nsfs_mounts",
            strings(h.nsfs_mounts.iter().map(|p| p.lossy())),
        ));
    }
    out
}

/// A finding as a span event: its kind, summary, consequence and remedy.
fn finding_event(f: &Finding, at: SystemTime) -> Event {
    let mut attrs = vec![
        KeyValue::new("mountleak.finding.id", f.id.clone()),
        KeyValue::new("mountleak.finding.kind", f.kind.as_str()),
        KeyValue::new("mountleak.finding.summary", f.summary.clone()),
        KeyValue::new("mountleak.mount.path", f.mount.path.lossy()),
        KeyValue::new("mountleak.consequence.kind", consequence_kind(f)),
        KeyValue::new("mountleak.consequence", f.consequence.text.clone()),
        // Findings list at most 32 holders; the count covers them all.
        KeyValue::new(
            "mountleak.holders",
            (f.holders.len() + f.more_holders) as i64,
        ),
        // One string, commands first: what a person pastes from Jaeger.
        KeyValue::new("mountleak.remedy", f.remedy.join("\n")),
    ];
    if let Some(r) = &f.resolution {
        attrs.push(KeyValue::new("mountleak.resolution", r.clone()));
    }
    Event::new(f.kind.as_str(), at, attrs, 0)
}

/// The sink: the state machine plus the exporter's queue.
pub struct OtelSink {
    traces: Traces,
    pipeline: Pipeline,
}

impl OtelSink {
    /// Builds the exporter (its own thread) from the configuration.
    pub fn start(
        cfg: &crate::config::Config,
        stats: Arc<ExportStats>,
    ) -> Result<OtelSink, ExportError> {
        let env = |k: &str| std::env::var(k).ok();
        let settings = Settings::resolve(&cfg.export, env)?;
        info!(destination = %settings.describe(), queue = settings.queue_size, "exporting traces over OTLP");
        let resource = exporter::resource(env);
        let pipeline = Pipeline::start(settings, resource, stats)?;
        Ok(OtelSink::with_pipeline(
            Traces::new(crate::procfs::clock::boottime_to_wall),
            pipeline,
        ))
    }

    pub fn with_pipeline(traces: Traces, pipeline: Pipeline) -> OtelSink {
        OtelSink { traces, pipeline }
    }

    fn flush(&mut self) {
        for span in self.traces.take_finished() {
            self.pipeline.send(span);
        }
    }
}

impl Sink for OtelSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn finding(&mut self, f: &Finding) {
        self.traces.finding(f);
        self.flush();
    }

    fn input(&mut self, input: &Input) {
        self.traces.input(input);
        self.flush();
    }

    fn status(&mut self, _status: &DaemonStatus) {
        self.traces.tick();
        self.flush();
    }

    fn shutdown(&mut self) {
        self.traces.end_all(SystemTime::now());
        self.flush();
        self.pipeline.shutdown(exporter::SHUTDOWN_TIMEOUT);
    }
}

#[cfg(test)]
mod tests;
