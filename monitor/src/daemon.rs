//! `mountleak run`: probes and /proc scans feed one model task; findings go
//! to stdout as they happen.
//!
//! One task owns the model (no locks). Around it: the probes' reader task
//! (batches of decoded events), /proc scans on the blocking pool (one at a
//! time; requests gathered for `rescan_debounce`; the read a removal
//! warning waits for goes first and may cancel a routine scan once), a
//! one-second tick (grace periods, kernel loss counters) and the periodic
//! full reconciliation.
//! Shutdown is an argument, so tests and signals stop it the same way.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use monitor_model::{Input, Model, NsId, Output};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{self, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::config::{Config, ProbeSetting};
use crate::ebpf::{Counters, EbpfError, ProbeMode, ProbeOptions, Probes};
use crate::fanotify::{Changes, MountWatch};
use crate::procfs::clock::boottime_ns;
use crate::procfs::read_kernel_facts;
use crate::procfs::scan::{ScanError, ScanOptions, ScanOutput, Scanner};
use crate::runtime::RuntimeStatus;
use crate::sinks::{stdout::StdoutSink, DaemonStatus, Sink};

const TRACEFS: &str = "/sys/kernel/tracing";
/// How long a new namespace gets to settle before its first read.
const NEW_NAMESPACE_SETTLE: Duration = Duration::from_millis(250);

/// Reads asked for and not yet started. Routine ones are gathered into one
/// scan; the read a removal warning waits for goes first, on its own, and
/// may cancel a routine scan already running (once: the cancelled request
/// runs next and is not cancelled again).
#[derive(Default)]
struct Pending {
    routine: Request,
    urgent: Request,
}

#[derive(Default)]
struct Request {
    full: bool,
    pins: bool,
    namespaces: BTreeSet<NsId>,
    due: Option<Instant>,
    reasons: BTreeSet<&'static str>,
    /// Cancelled once already to let an urgent read go first.
    preempted: bool,
}

impl Request {
    fn add(
        &mut self,
        full: bool,
        pins: bool,
        namespaces: &[NsId],
        reason: &'static str,
        after: Duration,
    ) {
        self.full |= full;
        self.pins |= pins;
        self.namespaces.extend(namespaces.iter().copied());
        self.reasons.insert(reason);
        self.due_by(Instant::now() + after);
    }

    fn due_by(&mut self, due: Instant) {
        self.due = Some(self.due.map_or(due, |d| d.min(due)));
    }

    fn merge(&mut self, other: Request) {
        self.full |= other.full;
        self.pins |= other.pins;
        self.preempted |= other.preempted;
        self.namespaces.extend(other.namespaces);
        self.reasons.extend(other.reasons);
        if let Some(due) = other.due {
            self.due_by(due);
        }
    }

    fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|d| d <= now)
    }
}

impl Pending {
    fn request(
        &mut self,
        full: bool,
        pins: bool,
        namespaces: &[NsId],
        reason: &'static str,
        after: Duration,
    ) {
        let urgent = reason == monitor_model::reason::READ_BEFORE_WARNING && !full && !pins;
        let to = if urgent {
            &mut self.urgent
        } else {
            &mut self.routine
        };
        to.add(full, pins, namespaces, reason, after);
    }

    fn next_due(&self) -> Option<Instant> {
        self.urgent.due.into_iter().chain(self.routine.due).min()
    }

    /// The read to start now, if one is due: an urgent one first.
    fn take_due(&mut self, now: Instant) -> Option<(Request, bool)> {
        if self.urgent.is_due(now) {
            Some((std::mem::take(&mut self.urgent), true))
        } else if self.routine.is_due(now) {
            Some((std::mem::take(&mut self.routine), false))
        } else {
            None
        }
    }
}

/// The scan running on the blocking pool and what it was asked for.
struct InFlight {
    job: ScanJob,
    request: Request,
    urgent: bool,
    cancel: Arc<AtomicBool>,
}

impl InFlight {
    /// A routine scan not cancelled before may make way for an urgent read.
    fn preemptible(&self) -> bool {
        !self.urgent && !self.request.preempted && !self.cancel.load(Ordering::Relaxed)
    }
}

type ScanJob = JoinHandle<(Scanner, Result<ScanOutput, ScanError>)>;

struct Daemon {
    cfg: Config,
    model: Model,
    sinks: Vec<Box<dyn Sink>>,
    probes: Option<Probes>,
    probe_mode: &'static str,
    runtimes: Vec<tokio::sync::watch::Receiver<RuntimeStatus>>,
    /// Mount change notifications for host and holder namespaces, when the
    /// syscall probes are not there to see mounts (lean/off modes).
    host_watch: Option<MountWatch>,
    holder_watch: Option<MountWatch>,
    runtime_seen: Vec<RuntimeStatus>,
    ready: bool,
    started: Instant,
    counters: Counters,
    scanner: Option<Scanner>,
    in_flight: Option<InFlight>,
    pending: Pending,
    outputs: Vec<Output>,
}

/// Runs until `shutdown` completes. Errors only for what makes running
/// impossible (probes explicitly requested but refused, no /proc).
pub async fn run<W: Write + Send + 'static>(
    cfg: Config,
    out: W,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let kernel = read_kernel_facts();
    info!(kernel = %kernel.release, detaches_on_rmdir = kernel.detaches_on_rmdir(), "starting");
    let model = Model::new(crate::model_config(&cfg, kernel.clone()));
    let json = cfg.output.format == crate::config::Format::Json;
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(StdoutSink::new(out, json))];
    sinks.extend(crate::sinks::from_config(&cfg).context("setting up outputs")?);

    if cfg.daemon.mount_tracefs && cfg.daemon.probes != ProbeSetting::Off {
        mount_tracefs_if_missing();
    }
    let (probes, degraded) = load_probes(&cfg)?;
    // Loading parsed the kernel's 5 MB BTF twice; give that heap back (the
    // allocator keeps ~18 MiB otherwise: BENCHMARKS.md, memory).
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    if let Some(reason) = &degraded {
        warn!(%reason, "running without eBPF: periodic /proc reconciliation only");
        let message = format!(
            "running without eBPF ({reason}); /proc reconciliation every {}",
            humantime::format_duration(cfg.daemon.poll_interval)
        );
        for s in sinks.iter_mut() {
            s.notice("degraded", &message, &json!({"reason": reason}));
        }
    }
    let probe_mode = match probes.as_ref().map(|p| p.mode()) {
        Some(ProbeMode::Syscalls) => "syscalls",
        Some(ProbeMode::Lean) => "lean",
        None => "off",
    };
    // Container runtimes feed the model through their own bounded channel.
    let (runtime_tx, runtime_rx) = mpsc::channel(1024);
    let runtimes = crate::runtime::spawn(&cfg, runtime_tx);
    let mut runtime_rx = Some(runtime_rx);

    let mut d = Daemon {
        cfg,
        model,
        sinks,
        probes,
        probe_mode,
        runtime_seen: runtimes.iter().map(|r| r.borrow().clone()).collect(),
        runtimes,
        ready: false,
        started: Instant::now(),
        host_watch: None,
        holder_watch: None,
        counters: Counters::default(),
        scanner: Some(Scanner::new()),
        in_flight: None,
        pending: Pending::default(),
        outputs: Vec::new(),
    };
    let mut events = match d.probes.as_mut() {
        Some(p) => Some(p.events().context("starting the ring-buffer reader")?),
        None => None,
    };
    if let Some(p) = &d.probes {
        d.counters = p.counters().unwrap_or_default();
    }

    // The first picture, with every process's devices (pins).
    d.pending
        .request(true, true, &[], "startup", Duration::ZERO);
    d.start_scan();
    if let Some(f) = d.in_flight.take() {
        let (scanner, result) = f.job.await.context("startup scan task")?;
        d.scanner = Some(scanner);
        let scan = result.context("startup scan of /proc")?;
        d.absorb_scan(scan)?;
    }
    if d.probe_mode != "syscalls" {
        match (MountWatch::new(), MountWatch::new()) {
            (Ok(host), Ok(holders)) => {
                info!("following mount changes through fanotify (no syscall tracepoints needed)");
                d.host_watch = Some(host);
                d.holder_watch = Some(holders);
                d.update_marks();
            }
            (Err(e), _) | (_, Err(e)) => {
                info!(error = %e, "no fanotify mount notifications: mount changes are seen at the next reconciliation");
            }
        }
    }
    let ready = json!({
        "fanotify": d.host_watch.is_some(),
        "probes": d.probe_mode,
        "attached": d.probes.as_ref().map(|p| p.attached().to_vec()).unwrap_or_default(),
        "skipped": d.probes.as_ref().map(|p| p.skipped().iter().map(|s| json!({"program": s.program, "reason": s.reason})).collect::<Vec<_>>()).unwrap_or_default(),
        "namespaces": d.model.namespace_count(),
        "container_filesystems": d.model.container_fs_count(),
        "runtimes": d.runtime_seen.iter().map(|r| r.runtime).collect::<Vec<_>>(),
        "kernel": kernel.release,
    });
    let message = format!(
        "watching ({} probes, {} namespaces, {} container filesystems)",
        d.probe_mode,
        d.model.namespace_count(),
        d.model.container_fs_count()
    );
    d.ready = true;
    d.notice("ready", &message, &ready);

    let reconcile_every = if d.probes.is_some() {
        d.cfg.daemon.rescan_interval
    } else {
        d.cfg.daemon.poll_interval
    };
    let mut reconcile = time::interval_at(Instant::now() + reconcile_every, reconcile_every);
    reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tick = time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_pin_scan = Instant::now();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            input = recv_one(&mut runtime_rx) => match input {
                Some(input) => {
                    if let Input::Container(c) = &input {
                        debug!(event = ?c, "runtime event");
                    }
                    d.apply(&input)?
                }
                None => runtime_rx = None,
            },
            batch = recv(&mut events) => match batch {
                Some(batch) => {
                    for input in &batch {
                        d.apply(input)?;
                    }
                }
                None => {
                    warn!("the probe reader stopped; continuing on /proc reconciliation");
                    events = None;
                }
            },
            done = wait(&mut d.in_flight) => {
                let finished = d.in_flight.take();
                let (scanner, result) = done.context("scan task")?;
                d.scanner = Some(scanner);
                match result {
                    Ok(scan) => d.absorb_scan(scan)?,
                    Err(ScanError::Cancelled) => {
                        // Made way for an urgent read: runs right after it.
                        if let Some(mut f) = finished {
                            debug!(reasons = ?f.request.reasons, "routine scan cancelled for a warning's read; queued again");
                            f.request.preempted = true;
                            f.request.due = Some(Instant::now());
                            d.pending.routine.merge(f.request);
                        }
                    }
                    Err(e) => warn!(error = %e, "scan failed; will retry at the next reconciliation"),
                }
            },
            changes = watch_changes(&d.host_watch) => {
                let changes = changes.unwrap_or(Changes { overflow: true, ..Changes::default() });
                debug!(?changes, "mount change in a host namespace");
                // A detach is when a leak is born, and its holders may be in
                // any namespace (an unshare the lean probes cannot see): read
                // every table. An attach only needs the host's.
                let full = changes.overflow || changes.detached > 0;
                let mut namespaces = d.model.reference_namespaces();
                namespaces.extend(d.model.watched());
                d.pending.request(full, false, &namespaces, "mount change in a host namespace", d.cfg.daemon.rescan_debounce);
            },
            changes = watch_changes(&d.holder_watch) => {
                let changes = changes.unwrap_or(Changes { overflow: true, ..Changes::default() });
                debug!(?changes, "mount change in a holder namespace");
                let namespaces = d.model.watched();
                d.pending.request(changes.overflow, false, &namespaces, "mount change in a holder namespace", d.cfg.daemon.rescan_debounce);
            },
            () = sleep_until(d.pending.next_due()), if d.in_flight.is_none() => d.start_scan(),
            () = sleep_until(d.pending.urgent.due), if d.in_flight.as_ref().is_some_and(InFlight::preemptible) => {
                if let Some(f) = &d.in_flight {
                    debug!("a warning's read is due: cancelling the routine scan in flight");
                    f.cancel.store(true, Ordering::Relaxed);
                }
            },
            _ = tick.tick() => {
                d.apply(&Input::Tick { now: boottime_ns() })?;
                d.check_counters()?;
                d.check_runtimes();
                d.publish_status();
            },
            _ = reconcile.tick() => {
                // Pins need every process's devices: at most every rescan_interval.
                let pins = last_pin_scan.elapsed() >= d.cfg.daemon.rescan_interval;
                if pins {
                    last_pin_scan = Instant::now();
                }
                d.pending.request(true, pins, &[], "periodic reconciliation", Duration::ZERO);
            },
        }
    }
    if let Some(f) = d.in_flight.take() {
        f.job.abort();
    }
    // What the probes saw before the stop is told and kept too: the reader
    // reads a record at most one wake-up interval after it was made.
    if let Some(rx) = events.as_mut() {
        let until = Instant::now() + 2 * Duration::from_nanos(monitor_common::WAKEUP_INTERVAL_NS);
        while let Ok(Some(batch)) = time::timeout_at(until, rx.recv()).await {
            for input in &batch {
                d.apply(input)?;
            }
        }
    }
    d.notice("stopped", "stopped", &json!({}));
    for s in d.sinks.iter_mut() {
        s.shutdown();
    }
    info!("stopped");
    Ok(())
}

impl Daemon {
    fn apply(&mut self, input: &Input) -> anyhow::Result<()> {
        let mut outputs = std::mem::take(&mut self.outputs);
        outputs.clear();
        self.model.apply_into(input, &mut outputs);
        for s in self.sinks.iter_mut() {
            s.input(input);
        }
        for o in outputs.drain(..) {
            self.handle(o)?;
        }
        self.outputs = outputs;
        Ok(())
    }

    fn notice(&mut self, kind: &str, message: &str, fields: &serde_json::Value) {
        for s in self.sinks.iter_mut() {
            s.notice(kind, message, fields);
        }
    }

    /// Says when a runtime connects or goes away (once per change).
    fn check_runtimes(&mut self) {
        let now: Vec<RuntimeStatus> = self.runtimes.iter().map(|r| r.borrow().clone()).collect();
        for (i, status) in now.iter().enumerate() {
            let before = self
                .runtime_seen
                .get(i)
                .map(|r| (r.connected, r.reconnects));
            // A reconnect counts even when it was lost and back between two
            // looks (the engine restarted quickly): containers were resynced.
            if before != Some((status.connected, status.reconnects)) {
                let message = if status.connected && before.is_some_and(|(was, _)| was) {
                    format!(
                        "{} reconnected ({} reconnects); its containers were read again",
                        status.runtime, status.reconnects
                    )
                } else if status.connected {
                    format!(
                        "{} connected ({})",
                        status.runtime,
                        status.version.as_deref().unwrap_or("version unknown")
                    )
                } else {
                    format!(
                        "{} unreachable: {}; container names come from mount paths until it is back",
                        status.runtime,
                        status.last_error.as_deref().unwrap_or("not connected")
                    )
                };
                let fields = json!({"runtime": status.runtime, "connected": status.connected, "error": status.last_error, "reconnects": status.reconnects});
                self.notice("runtime", &message, &fields);
            }
        }
        self.runtime_seen = now;
    }

    fn publish_status(&mut self) {
        let open = self.model.open_findings();
        let status = DaemonStatus {
            probes: self.probe_mode,
            namespaces: self.model.namespace_count(),
            container_filesystems: self.model.container_fs_count(),
            open_risks: open
                .iter()
                .filter(|f| f.kind == monitor_model::FindingKind::Risk)
                .count(),
            open_leaks: open
                .iter()
                .filter(|f| f.kind == monitor_model::FindingKind::Leak)
                .count(),
            kernel: self.counters,
            model: self.model.stats().clone(),
            runtimes: self.runtime_seen.clone(),
            ready: self.ready,
            uptime_secs: self.started.elapsed().as_secs(),
        };
        for s in self.sinks.iter_mut() {
            s.status(&status);
        }
    }

    fn handle(&mut self, output: Output) -> anyhow::Result<()> {
        match output {
            Output::Finding(f) => {
                info!(id = %f.id, kind = f.kind.as_str(), path = %f.mount.path.lossy(), holders = f.holders.len(), "{}", f.summary);
                for s in self.sinks.iter_mut() {
                    s.finding(&f);
                }
            }
            Output::Rescan {
                namespaces,
                full,
                reason,
            } => {
                debug!(?namespaces, full, reason, "rescan requested");
                let pins = full && reason != monitor_model::reason::LOST_EVENTS;
                // A namespace just made is still being set up (its creator
                // chdirs, execs, changes propagation): read it a moment later
                // so its first picture is the settled one.
                let after = match reason {
                    monitor_model::reason::NEW_NAMESPACE => {
                        self.cfg.daemon.rescan_debounce.max(NEW_NAMESPACE_SETTLE)
                    }
                    _ => self.cfg.daemon.rescan_debounce,
                };
                self.pending.request(full, pins, &namespaces, reason, after);
            }
            Output::Watch(ns) => {
                if let Some(p) = self.probes.as_mut() {
                    if let Err(e) = p.watch(ns) {
                        warn!(ns, error = %e, "cannot watch namespace for forks and exits");
                    }
                }
            }
            Output::Unwatch(ns) => {
                if let Some(p) = self.probes.as_mut() {
                    if let Err(e) = p.unwatch(ns) {
                        debug!(ns, error = %e, "cannot unwatch namespace");
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts the due scan on the blocking pool, if any: an urgent read
    /// first, on its own.
    fn start_scan(&mut self) {
        // Without the scanner a scan is running; the requests wait for it.
        let Some(mut scanner) = self.scanner.take() else {
            return;
        };
        let Some((request, urgent)) = self.pending.take_due(Instant::now()) else {
            self.scanner = Some(scanner);
            return;
        };
        debug!(urgent, full = request.full, pins = request.pins, namespaces = ?request.namespaces, reasons = ?request.reasons, "scanning");
        let targets: Vec<NsId> = request.namespaces.iter().copied().collect();
        let full = request.full || targets.is_empty();
        // Device facts (is a holder's cwd inside its copy?) for the
        // namespaces that matter; every process's devices only with pins.
        let opts = if request.pins {
            ScanOptions::default().with_all_devices()
        } else {
            let mut wanted: std::collections::HashSet<NsId> =
                self.model.watched().into_iter().collect();
            wanted.extend(targets.iter().copied());
            ScanOptions::default().with_device_facts(move |ns, _| wanted.contains(&ns))
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let opts = opts.cancelled_by(cancel.clone());
        let job = tokio::task::spawn_blocking(move || {
            let result = if full {
                scanner.scan(&opts)
            } else {
                scanner.scan_namespaces(&targets, &opts)
            };
            (scanner, result)
        });
        self.in_flight = Some(InFlight {
            job,
            request,
            urgent,
            cancel,
        });
    }

    fn absorb_scan(&mut self, scan: ScanOutput) -> anyhow::Result<()> {
        let stats = &scan.stats;
        debug!(
            processes = stats.processes,
            namespaces = scan.snapshot.namespaces.len(),
            vanished = stats.vanished,
            took_ms = stats.duration.as_millis() as u64,
            "scan absorbed"
        );
        if stats.malformed_lines > 0 {
            warn!(count = stats.malformed_lines, first = ?stats.line_errors.first(), "skipped malformed mountinfo lines");
        }
        for (ns, why) in &stats.unread {
            warn!(ns, why, "could not read a mount namespace's table");
        }
        self.apply(&Input::Snapshot(scan.snapshot))?;
        self.update_marks();
        Ok(())
    }

    /// Keeps the fanotify marks on the host namespaces and on the holders.
    fn update_marks(&mut self) {
        let hosts = self.model.reference_namespaces();
        let holders = self.model.watched();
        let self_ns = crate::procfs::scan::own_mnt_ns();
        let via = |model: &Model, ns: NsId| {
            if Some(ns) == self_ns {
                None
            } else {
                model.member_of(ns)
            }
        };
        if let Some(w) = self.host_watch.as_mut() {
            for ns in hosts {
                if w.is_marked(ns) {
                    continue;
                }
                let pid = via(&self.model, ns);
                if pid.is_none() && Some(ns) != self_ns {
                    continue;
                }
                if let Err(e) = w.mark(ns, pid) {
                    debug!(ns, error = %e, "cannot watch a host namespace's mounts");
                }
            }
        }
        if let Some(w) = self.holder_watch.as_mut() {
            for ns in holders {
                if w.is_marked(ns) {
                    continue;
                }
                let Some(pid) = self.model.member_of(ns) else {
                    continue;
                };
                if let Err(e) = w.mark(ns, Some(pid)) {
                    debug!(ns, error = %e, "cannot watch a holder namespace's mounts");
                }
            }
        }
    }

    /// Turns a rise in the kernel's loss counters into `Input::Lost` (the
    /// model asks for a full rescan) and says so.
    fn check_counters(&mut self) -> anyhow::Result<()> {
        let Some(p) = &self.probes else { return Ok(()) };
        let now = match p.counters() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read the probes' counters");
                return Ok(());
            }
        };
        let before = self.counters;
        self.counters = now;
        let lost = now.ringbuf_full.saturating_sub(before.ringbuf_full)
            + now.missing_entry.saturating_sub(before.missing_entry)
            + now.decode_errors.saturating_sub(before.decode_errors);
        if lost > 0 {
            warn!(
                ring_buffer_full = now.ringbuf_full - before.ringbuf_full,
                missing_entry = now.missing_entry - before.missing_entry,
                decode_errors = now.decode_errors - before.decode_errors,
                "kernel events were lost; repairing state from /proc"
            );
            self.notice(
                "lost",
                &format!("{lost} kernel events lost; repairing state from /proc"),
                &json!({"count": lost, "ring_buffer_full_total": now.ringbuf_full, "missing_entry_total": now.missing_entry, "decode_errors_total": now.decode_errors}),
            );
            self.apply(&Input::Lost {
                at: boottime_ns(),
                count: lost,
            })?;
        }
        Ok(())
    }
}

/// Loads the probes the configuration asks for. `auto` falls back to no
/// probes with a reason; an explicit choice that fails is an error.
fn load_probes(cfg: &Config) -> anyhow::Result<(Option<Probes>, Option<String>)> {
    let mode = match cfg.daemon.probes {
        ProbeSetting::Off => return Ok((None, Some("--no-ebpf / probes = \"off\"".into()))),
        ProbeSetting::Lean => ProbeMode::Lean,
        ProbeSetting::Syscalls | ProbeSetting::Auto => ProbeMode::Syscalls,
    };
    let opts = ProbeOptions {
        mode,
        ringbuf_bytes: cfg.daemon.ring_buffer_kib * 1024,
        ..ProbeOptions::default()
    };
    match Probes::load(opts) {
        Ok(p) => {
            info!(mode = ?p.mode(), attached = p.attached().len(), skipped = ?p.skipped(), "probes attached");
            Ok((Some(p), None))
        }
        Err(e) if cfg.daemon.probes == ProbeSetting::Auto => Ok((None, Some(describe(&e)))),
        Err(e) => Err(anyhow::anyhow!(describe(&e)))
            .context("loading the eBPF probes (use --no-ebpf to run on /proc alone)"),
    }
}

fn describe(e: &EbpfError) -> String {
    e.to_string()
}

/// Mounts tracefs when asked to (`mount_tracefs`): syscall tracepoints need it.
fn mount_tracefs_if_missing() {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| t.lines().any(|l| l.contains(" - tracefs ")))
        .unwrap_or(false);
    if mounted {
        return;
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: constant NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        info!(path = TRACEFS, "mounted tracefs (mount_tracefs = true)");
    } else {
        warn!(path = TRACEFS, error = %std::io::Error::last_os_error(), "could not mount tracefs");
    }
}

async fn watch_changes(w: &Option<MountWatch>) -> std::io::Result<Changes> {
    match w {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

async fn recv_one(rx: &mut Option<mpsc::Receiver<Input>>) -> Option<Input> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv(events: &mut Option<mpsc::Receiver<Vec<Input>>>) -> Option<Vec<Input>> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn wait(
    in_flight: &mut Option<InFlight>,
) -> Result<(Scanner, Result<ScanOutput, ScanError>), tokio::task::JoinError> {
    match in_flight {
        Some(f) => (&mut f.job).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_model::reason::READ_BEFORE_WARNING;

    #[test]
    fn a_warnings_read_goes_first_and_alone() {
        let mut p = Pending::default();
        p.request(
            false,
            false,
            &[1],
            "mount change in a host namespace",
            Duration::ZERO,
        );
        p.request(false, false, &[7], READ_BEFORE_WARNING, Duration::ZERO);
        let now = Instant::now();
        let (first, urgent) = p.take_due(now).expect("a read is due");
        assert!(urgent);
        assert_eq!(first.namespaces, BTreeSet::from([7]));
        let (second, urgent) = p.take_due(now).expect("the routine read is still due");
        assert!(!urgent);
        assert_eq!(second.namespaces, BTreeSet::from([1]));
        assert!(p.take_due(now).is_none());
    }

    #[test]
    fn a_full_or_pin_read_is_never_urgent() {
        let mut p = Pending::default();
        p.request(true, false, &[], READ_BEFORE_WARNING, Duration::ZERO);
        assert!(p.urgent.due.is_none());
        assert!(p.routine.full);
    }

    #[test]
    fn reads_wait_for_their_debounce() {
        let mut p = Pending::default();
        let now = Instant::now();
        p.request(
            false,
            false,
            &[7],
            READ_BEFORE_WARNING,
            Duration::from_secs(60),
        );
        assert!(p.take_due(now).is_none());
        assert!(p.next_due().is_some_and(|d| d > now));
    }

    #[test]
    fn a_cancelled_read_keeps_what_it_was_asked_for_and_is_not_cancelled_again() {
        let mut routine = Request::default();
        routine.add(true, true, &[], "periodic reconciliation", Duration::ZERO);
        routine.preempted = true;
        let mut p = Pending::default();
        p.request(false, false, &[3], "new namespace", Duration::from_secs(60));
        p.routine.merge(routine);
        let (r, urgent) = p.take_due(Instant::now()).expect("due at once");
        assert!(!urgent && r.full && r.pins && r.preempted);
        assert!(r.namespaces.contains(&3));
        assert!(r.reasons.contains("periodic reconciliation"));
    }
}
