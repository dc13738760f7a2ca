//! The store's writer: a dedicated thread fed by a bounded queue. It turns
//! inputs into records, writes them in batches (one transaction each), runs
//! retention between batches, and survives a store it cannot write: it
//! says so loudly (error level, once per change), counts what it could not
//! keep, retries, and marks the gap in the store when it can write again.
//!
//! The daemon never blocks on it: [`Writer::try_send`] drops (and counts)
//! when the queue is full. Tools that must keep everything (benchmarks, the
//! crash test's harness) use the blocking [`Writer::send`].
//!
//! May import: std, tracing, monitor_model, `super::{event, store}`,
//! `crate::output` (finding JSON) and `crate::procfs::clock`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monitor_model::{Finding, Input, Ktime, Patterns, Pid};
use serde_json::Value;
use tracing::{error, info, warn};

use super::event::{gap_record, unix_ns, Converter, Record};
use super::store::{Retention, RunInfo, Store, StoreError};
use crate::procfs::clock::{boottime_ns, boottime_to_wall};

/// What the writer is handed.
#[derive(Debug)]
pub enum Item {
    Input(Input),
    Finding(Box<Finding>),
    Notice {
        at: Ktime,
        kind: String,
        message: String,
        fields: Value,
    },
    /// Already a record (benchmarks, the crash harness).
    Record(Record),
}

/// How the writer runs.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub path: std::path::PathBuf,
    pub retention: Retention,
    pub patterns: Patterns,
    /// Items the queue holds before `try_send` drops.
    pub queue: usize,
    /// Items per transaction at most.
    pub batch: usize,
    /// How often retention runs (also after every `retention_every_rows`).
    pub retention_every: Duration,
    pub retention_every_rows: u64,
    /// Rows deleted per retention transaction (keeps batches flowing).
    pub retention_chunk: i64,
}

impl WriterConfig {
    pub fn new(path: impl Into<std::path::PathBuf>, patterns: Patterns) -> WriterConfig {
        WriterConfig {
            path: path.into(),
            retention: Retention {
                max_age: None,
                max_bytes: None,
            },
            patterns,
            queue: 65_536,
            batch: 8_192,
            retention_every: Duration::from_secs(60),
            retention_every_rows: 200_000,
            retention_chunk: 5_000,
        }
    }
}

/// Counters, shared with the writer thread; read them through [`Writer::stats`].
#[derive(Debug, Default)]
struct Shared {
    /// Items accepted into the queue.
    enqueued: AtomicU64,
    /// Items whose records are committed (in queue order: the first
    /// `committed` items sent are all in the store).
    committed: AtomicU64,
    /// Records committed.
    records: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_write_failed: AtomicU64,
    /// Items waiting in memory for a failing store to take them.
    held: AtomicU64,
    /// Rows removed by retention.
    retained_away: AtomicU64,
    /// The store is open and the last write succeeded.
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of the writer's counters (for metrics and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub enqueued: u64,
    pub committed: u64,
    pub records: u64,
    pub dropped_queue_full: u64,
    pub dropped_write_failed: u64,
    /// Items kept in memory while the store cannot take them (written when
    /// it can again; beyond [`BACKLOG`] records the oldest are dropped).
    pub held: u64,
    pub retained_away: u64,
    pub healthy: bool,
    pub last_error: Option<String>,
}

/// A cheap, cloneable view of the counters (for a metrics sink).
#[derive(Clone, Debug)]
pub struct WriterHandle(Arc<Shared>);

impl WriterHandle {
    pub fn stats(&self) -> WriterStats {
        let s = &self.0;
        WriterStats {
            enqueued: s.enqueued.load(Ordering::Relaxed),
            committed: s.committed.load(Ordering::Acquire),
            records: s.records.load(Ordering::Relaxed),
            dropped_queue_full: s.dropped_queue_full.load(Ordering::Relaxed),
            dropped_write_failed: s.dropped_write_failed.load(Ordering::Relaxed),
            held: s.held.load(Ordering::Relaxed),
            retained_away: s.retained_away.load(Ordering::Relaxed),
            healthy: s.healthy.load(Ordering::Relaxed),
            last_error: s.last_error.lock().map(|e| e.clone()).unwrap_or(None),
        }
    }
}

pub struct Writer {
    tx: Option<SyncSender<Item>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    done: Option<Receiver<()>>,
}

impl Writer {
    /// Starts the writer thread. Opening the store happens there: a store
    /// that cannot be opened is logged and retried, never fatal.
    pub fn spawn(cfg: WriterConfig) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let shared = Arc::new(Shared::default());
        let (done_tx, done_rx) = mpsc::channel();
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("mountleak-store".into())
            .spawn(move || {
                let mut w = Worker::new(cfg, inner);
                w.run(rx);
                let _ = done_tx.send(());
            })?;
        Ok(Writer {
            tx: Some(tx),
            shared,
            thread: Some(thread),
            done: Some(done_rx),
        })
    }

    /// Queues `item` without blocking; `false` (and a count) when the queue
    /// is full or the writer is gone.
    pub fn try_send(&self, item: Item) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(item) {
            Ok(()) => {
                self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues `item`, waiting for room. `false` if the writer is gone.
    pub fn send(&self, item: Item) -> bool {
        let Some(tx) = &self.tx else { return false };
        let ok = tx.send(item).is_ok();
        if ok {
            self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    pub fn stats(&self) -> WriterStats {
        self.handle().stats()
    }

    pub fn handle(&self) -> WriterHandle {
        WriterHandle(Arc::clone(&self.shared))
    }

    /// Waits until everything queued so far is committed (or dropped, or
    /// held in memory for a store that cannot take it now), up to
    /// `timeout`. For tests and tools.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if s.committed + s.dropped_write_failed + s.held >= s.enqueued {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closes the queue and lets the thread write what is queued, for at
    /// most `timeout`. Returns whether it finished in time (if not, the
    /// thread goes on in the background until the process exits).
    pub fn shutdown(&mut self, timeout: Duration) -> bool {
        self.tx = None;
        let finished = match self.done.take() {
            Some(done) => done.recv_timeout(timeout).is_ok() || done.try_recv().is_ok(),
            None => true,
        };
        if finished {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        finished
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.shutdown(Duration::from_secs(2));
        }
    }
}

/// Whether history is being kept, as last logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Unknown,
    Keeping,
    NotKeeping,
}

struct Worker {
    cfg: WriterConfig,
    shared: Arc<Shared>,
    conv: Converter,
    store: Option<Store>,
    run: i64,
    health: Health,
    next_open: Instant,
    open_backoff: Duration,
    /// After a failed write, batches are dropped without trying until then.
    next_write: Instant,
    /// Drops already marked in the store (queue full + write failed).
    dropped_marked: u64,
    /// When history stopped being complete (unix ns), for the gap marker.
    gap_since: Option<i64>,
    gap_reason: String,
    last_retention: Instant,
    rows_since_retention: u64,
    /// Retention in progress: delete up to this id.
    retention_upto: Option<i64>,
    /// Free pages still to give back after a retention round.
    vacuum_left: bool,
    /// Records the store could not take yet, oldest first, and how many
    /// queue items they came from.
    backlog: Vec<Record>,
    backlog_items: u64,
}

/// Pages given back to the file system per step after retention (8 MiB).
const VACUUM_PAGES: u32 = 2048;

/// Longest wait between attempts to open or write a failing store.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Records kept in memory while the store cannot take them (a full disk
/// that gets space again, a store being reopened): about 10 MiB at most.
pub const BACKLOG: usize = 20_000;

impl Worker {
    fn new(cfg: WriterConfig, shared: Arc<Shared>) -> Worker {
        let now = Instant::now();
        Worker {
            conv: Converter::new(cfg.patterns.clone()),
            cfg,
            shared,
            store: None,
            run: 0,
            health: Health::Unknown,
            next_open: now,
            open_backoff: Duration::from_secs(1),
            next_write: now,
            dropped_marked: 0,
            gap_since: None,
            gap_reason: String::new(),
            last_retention: now,
            rows_since_retention: 0,
            retention_upto: None,
            vacuum_left: false,
            backlog: Vec::new(),
            backlog_items: 0,
        }
    }

    fn run(&mut self, rx: Receiver<Item>) {
        let mut batch: Vec<Item> = Vec::with_capacity(self.cfg.batch);
        let mut open = true;
        while open || !batch.is_empty() {
            if open {
                // Idle: wake up now and then for retention and reopening.
                let wait = if self.retention_upto.is_some() || self.vacuum_left {
                    Duration::ZERO
                } else {
                    Duration::from_millis(500)
                };
                match rx.recv_timeout(wait) {
                    Ok(item) => batch.push(item),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
                while batch.len() < self.cfg.batch {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            }
            self.ensure_open();
            let backlog_due = !self.backlog.is_empty()
                && self.store.is_some()
                && Instant::now() >= self.next_write;
            if !batch.is_empty() || backlog_due {
                self.write(&mut batch);
            }
            self.retention();
        }
        if self.backlog_items > 0 {
            // Closing: one last try for what waited, then say what is lost.
            self.next_open = Instant::now();
            self.next_write = Instant::now();
            self.ensure_open();
            self.write(&mut batch);
            let left = std::mem::take(&mut self.backlog_items);
            self.backlog.clear();
            self.shared.held.store(0, Ordering::Relaxed);
            self.lost(left);
        }
    }

    fn ensure_open(&mut self) {
        if self.store.is_some() || Instant::now() < self.next_open {
            return;
        }
        let opened = Store::create(&self.cfg.path).and_then(|mut s| {
            let run = s.begin_run(&RunInfo::current())?;
            Ok((s, run))
        });
        match opened {
            Ok((s, run)) => {
                info!(path = %self.cfg.path.display(), run, "event store open");
                self.store = Some(s);
                self.run = run;
                self.open_backoff = Duration::from_secs(1);
                self.next_write = Instant::now();
            }
            Err(e) => {
                self.failing(&e);
                self.next_open = Instant::now() + self.open_backoff;
                self.open_backoff = (self.open_backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    fn write(&mut self, batch: &mut Vec<Item>) {
        let n = batch.len() as u64;
        let wall = |kt: Ktime| unix_ns(boottime_to_wall(kt));
        let mut records = Vec::with_capacity(batch.len() + 1);
        for item in batch.drain(..) {
            match item {
                Item::Input(input) => {
                    if let Some(r) = self.conv.input(&input, &wall, &read_cgroup) {
                        records.push(r);
                    }
                }
                Item::Finding(f) => {
                    let j = crate::output::finding_json(&f);
                    records.push(self.conv.finding(&f, j, &wall));
                }
                Item::Notice {
                    at,
                    kind,
                    message,
                    fields,
                } => records.push(self.conv.notice(at, &kind, &message, &fields, &wall)),
                Item::Record(r) => records.push(r),
            }
        }
        let writable = self.store.is_some() && Instant::now() >= self.next_write;
        if !writable {
            self.hold(records, n);
            return;
        }
        // What waited goes first, in order.
        let held = std::mem::take(&mut self.backlog_items);
        let mut all = std::mem::take(&mut self.backlog);
        all.append(&mut records);
        let items = held + n;
        // Say in the store itself that history has a hole here.
        let dropped = self.shared.dropped_queue_full.load(Ordering::Relaxed)
            + self.shared.dropped_write_failed.load(Ordering::Relaxed);
        let gap = dropped - self.dropped_marked.min(dropped);
        let with_gap = gap > 0;
        if with_gap {
            let now = boottime_ns();
            let reason = if self.gap_reason.is_empty() {
                "the store's queue was full (events arrived faster than the disk took them)"
                    .to_string()
            } else {
                self.gap_reason.clone()
            };
            let wall_now = wall(now);
            all.push(gap_record(
                now,
                wall_now,
                gap,
                &reason,
                self.gap_since.unwrap_or(wall_now),
            ));
        }
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.insert_batch(self.run, &all) {
            Ok(()) => {
                self.dropped_marked = dropped;
                self.gap_since = None;
                self.gap_reason.clear();
                self.shared.held.store(0, Ordering::Relaxed);
                self.shared
                    .records
                    .fetch_add(all.len() as u64, Ordering::Relaxed);
                self.shared.committed.fetch_add(items, Ordering::Release);
                self.rows_since_retention += all.len() as u64;
                self.keeping();
            }
            Err(e) => {
                if with_gap {
                    all.pop();
                }
                self.failing(&e);
                self.hold(all, items);
                // Try again soon, but not on every batch while it fails.
                self.next_write = Instant::now() + Duration::from_secs(1);
                if !matches!(e, StoreError::Full { .. }) {
                    // A store gone read-only or bad: reopen it later.
                    self.store = None;
                    self.next_open = Instant::now() + self.open_backoff;
                    self.open_backoff = (self.open_backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Keeps records the store cannot take now, up to [`BACKLOG`]: beyond
    /// that the oldest are dropped, counted and marked as a gap.
    fn hold(&mut self, mut records: Vec<Record>, items: u64) {
        self.backlog.append(&mut records);
        self.backlog_items += items;
        if self.backlog.len() > BACKLOG {
            let excess = self.backlog.len() - BACKLOG;
            self.backlog.drain(..excess);
            let lost = (excess as u64).min(self.backlog_items);
            self.backlog_items -= lost;
            self.lost(lost);
        }
        self.shared
            .held
            .store(self.backlog_items, Ordering::Relaxed);
    }

    fn lost(&mut self, n: u64) {
        self.shared
            .dropped_write_failed
            .fetch_add(n, Ordering::Relaxed);
        if self.gap_since.is_none() {
            self.gap_since = Some(unix_ns(std::time::SystemTime::now()));
        }
    }

    fn failing(&mut self, e: &StoreError) {
        self.shared.healthy.store(false, Ordering::Relaxed);
        if let Ok(mut last) = self.shared.last_error.lock() {
            *last = Some(e.to_string());
        }
        if self.gap_since.is_none() {
            self.gap_since = Some(unix_ns(std::time::SystemTime::now()));
        }
        self.gap_reason = format!("the store could not be written ({})", e.short());
        if self.health != Health::NotKeeping {
            error!(
                path = %self.cfg.path.display(),
                error = %e,
                "event store: history is NOT being kept (detection goes on; `mountleak timeline` will have a gap from now until the store is writable again)"
            );
            self.health = Health::NotKeeping;
        }
    }

    fn keeping(&mut self) {
        self.shared.healthy.store(true, Ordering::Relaxed);
        if self.health == Health::NotKeeping {
            warn!(
                path = %self.cfg.path.display(),
                not_kept = self.shared.dropped_write_failed.load(Ordering::Relaxed),
                "event store: writable again, history is being kept (the gap is marked in the store)"
            );
        }
        self.health = Health::Keeping;
    }

    /// One step of retention: plans when due, then deletes one chunk per
    /// call so batches keep flowing in between.
    fn retention(&mut self) {
        let r = self.cfg.retention;
        if r.max_age.is_none() && r.max_bytes.is_none() {
            return;
        }
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if self.vacuum_left {
            // A few MiB at a time, so batches keep flowing in between.
            match store.vacuum_step(VACUUM_PAGES) {
                Ok(left) => self.vacuum_left = left > 0,
                Err(e) => {
                    self.vacuum_left = false;
                    warn!(error = %e, "event store: could not give free pages back");
                }
            }
            return;
        }
        if self.retention_upto.is_none() {
            let due = self.last_retention.elapsed() >= self.cfg.retention_every
                || self.rows_since_retention >= self.cfg.retention_every_rows;
            if !due {
                return;
            }
            self.last_retention = Instant::now();
            self.rows_since_retention = 0;
            match store.retention_boundary(&r, unix_ns(std::time::SystemTime::now())) {
                Ok(upto) => self.retention_upto = upto,
                Err(e) => warn!(error = %e, "event store: retention could not run"),
            }
            return;
        }
        let Some(upto) = self.retention_upto else {
            return;
        };
        match store.delete_oldest(upto, self.cfg.retention_chunk) {
            Ok((n, more)) => {
                self.shared.retained_away.fetch_add(n, Ordering::Relaxed);
                if !more {
                    self.retention_upto = None;
                    match store.forget_orphans() {
                        Ok(()) => self.vacuum_left = true,
                        Err(e) => warn!(error = %e, "event store: could not forget unused paths"),
                    }
                }
            }
            Err(e) => {
                self.retention_upto = None;
                warn!(error = %e, "event store: retention could not delete");
            }
        }
    }
}

/// A live process's cgroup path, from `/proc/PID/cgroup` (the v2 line, or
/// the systemd v1 hierarchy). `None` once it has exited.
fn read_cgroup(pid: Pid) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if id == "0" && controllers.is_empty() {
            return Some(path.to_string());
        }
        if controllers == "name=systemd" {
            v1 = Some(path.to_string());
        }
    }
    v1
}

#[cfg(test)]
mod tests {
    use super::super::event::Kind;
    use super::super::store::tests::tempdir;
    use super::*;

    fn record(i: u64) -> Record {
        Record {
            kt: i,
            wall_ns: i as i64,
            kind: Kind::ProcessExit,
            pid: Some(i as u32),
            mnt_ns: Some(1),
            path: None,
            container: None,
            name: None,
            pod: None,
            refs: vec![],
            data: format!("{{\"i\":{i}}}"),
        }
    }

    #[test]
    fn everything_sent_is_committed_in_order() {
        let d = tempdir::Dir::new("writer");
        let path = d.path().join("events.db");
        let mut w = Writer::spawn(WriterConfig::new(&path, Patterns::default())).unwrap();
        for i in 1..=5000 {
            assert!(w.send(Item::Record(record(i))));
        }
        assert!(w.wait_idle(Duration::from_secs(20)));
        assert!(w.shutdown(Duration::from_secs(5)));
        let s = w.stats();
        assert_eq!((s.enqueued, s.committed, s.records), (5000, 5000, 5000));
        assert!(s.healthy);
        let store = Store::open_existing(&path).unwrap();
        assert_eq!(store.stats().unwrap().events, 5000);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_the_gap_is_marked() {
        let d = tempdir::Dir::new("writer-full");
        let path = d.path().join("events.db");
        let mut cfg = WriterConfig::new(&path, Patterns::default());
        cfg.queue = 4;
        let mut w = Writer::spawn(cfg).unwrap();
        let mut dropped = 0;
        for i in 1..=2000 {
            if !w.try_send(Item::Record(record(i))) {
                dropped += 1;
            }
        }
        assert!(dropped > 0, "a 4-slot queue should overflow");
        assert_eq!(w.stats().dropped_queue_full, dropped);
        // One more item after the burst carries the gap marker with it.
        std::thread::sleep(Duration::from_millis(100));
        assert!(w.send(Item::Record(record(99_999))));
        assert!(w.wait_idle(Duration::from_secs(10)));
        w.shutdown(Duration::from_secs(5));
        let store = Store::open_existing(&path).unwrap();
        let gaps: i64 = store
            .connection()
            .query_row(
                "SELECT count(*) FROM events WHERE kind = ?1",
                [Kind::StoreGap as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert!(gaps >= 1);
    }

    #[test]
    fn an_unwritable_store_is_survived_and_counted() {
        // A path under a regular file can never be created.
        let d = tempdir::Dir::new("writer-bad");
        let file = d.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let mut w = Writer::spawn(WriterConfig::new(
            file.join("events.db"),
            Patterns::default(),
        ))
        .unwrap();
        for i in 1..=10 {
            assert!(w.send(Item::Record(record(i))));
        }
        assert!(w.wait_idle(Duration::from_secs(10)));
        let s = w.stats();
        assert_eq!(s.committed, 0);
        assert_eq!((s.held, s.dropped_write_failed), (10, 0), "held for later");
        assert!(!s.healthy);
        assert!(s.last_error.is_some());
        assert!(w.shutdown(Duration::from_secs(5)));
        // Still unwritable when closing: now they are lost, and counted.
        let s = w.stats();
        assert_eq!((s.held, s.dropped_write_failed), (0, 10));
    }

    /// A store that cannot be written for a while (a full disk that gets
    /// space again): what came meanwhile waits in memory and is written,
    /// in order and without a gap, once it can be.
    #[test]
    fn what_waited_is_written_once_the_store_can_take_it() {
        let d = tempdir::Dir::new("writer-later");
        let dir = d.path().join("state");
        std::fs::write(&dir, b"a file where the directory will be").unwrap();
        let path = dir.join("events.db");
        let mut w = Writer::spawn(WriterConfig::new(&path, Patterns::default())).unwrap();
        for i in 1..=10 {
            assert!(w.send(Item::Record(record(i))));
        }
        assert!(w.wait_idle(Duration::from_secs(10)));
        assert_eq!(w.stats().held, 10);
        std::fs::remove_file(&dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while w.stats().committed < 10 {
            assert!(Instant::now() < deadline, "never written: {:?}", w.stats());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(w.send(Item::Record(record(11))));
        assert!(w.wait_idle(Duration::from_secs(10)));
        assert!(w.shutdown(Duration::from_secs(5)));
        let s = w.stats();
        assert_eq!((s.committed, s.held, s.dropped_write_failed), (11, 0, 0));
        assert!(s.healthy);
        let store = Store::open_existing(&path).unwrap();
        assert_eq!(store.stats().unwrap().events, 11, "no gap record either");
    }

    #[test]
    fn cgroup_of_this_process_is_read() {
        assert!(read_cgroup(std::process::id()).is_some());
        assert_eq!(read_cgroup(u32::MAX), None);
    }
}
