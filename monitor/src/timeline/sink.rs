//! The daemon's sink into the event store. On the event path it only
//! decides whether an input is part of the story ([`super::event::wanted`]),
//! clones it and offers it to the writer's bounded queue; when the queue is
//! full the event is dropped and counted, and that is logged at error level
//! once per change (the daemon has no way to hear back from a sink).
//!
//! May import: `crate::sinks`, `crate::config`, `super::{event, writer}`.

use std::time::Duration;

use monitor_model::{Finding, Input, Patterns};
use serde_json::Value;
use tracing::{error, warn};

use super::event::wanted;
use super::store::Retention;
use super::writer::{Item, Writer, WriterConfig, WriterHandle, WriterStats};
use crate::config::Config;
use crate::procfs::clock::boottime_ns;
use crate::sinks::{DaemonStatus, Sink};

/// How long `shutdown` waits for the queue to reach the disk.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

pub struct StoreSink {
    writer: Writer,
    patterns: Patterns,
    /// Queue-full drops already reported.
    reported_drops: u64,
    dropping: bool,
}

impl StoreSink {
    /// The sink for `[store]`, or `None` when the store is disabled. Never
    /// fails on the store itself: an unwritable store is the writer's to
    /// report (loudly) while the daemon goes on detecting.
    pub fn from_config(cfg: &Config) -> Option<StoreSink> {
        if !cfg.store.enabled {
            return None;
        }
        let mut wc = WriterConfig::new(&cfg.store.path, cfg.patterns());
        wc.retention = Retention {
            max_age: Some(cfg.store.max_age).filter(|d| !d.is_zero()),
            max_bytes: (cfg.store.max_size_mib > 0)
                .then(|| cfg.store.max_size_mib.saturating_mul(1024 * 1024)),
        };
        match StoreSink::new(wc) {
            Ok(s) => Some(s),
            Err(e) => {
                error!(error = %e, path = %cfg.store.path.display(), "event store: cannot start its writer thread; history is NOT being kept");
                None
            }
        }
    }

    pub fn new(cfg: WriterConfig) -> std::io::Result<StoreSink> {
        let patterns = cfg.patterns.clone();
        Ok(StoreSink {
            writer: Writer::spawn(cfg)?,
            patterns,
            reported_drops: 0,
            dropping: false,
        })
    }

    /// The writer's counters (drops, commits, health), for metrics.
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// A handle a metrics sink can keep to read the counters.
    pub fn handle(&self) -> WriterHandle {
        self.writer.handle()
    }

    fn offer(&mut self, item: Item) {
        if self.writer.try_send(item) {
            if self.dropping {
                self.dropping = false;
                let total = self.writer.stats().dropped_queue_full;
                warn!(
                    dropped = total - self.reported_drops,
                    dropped_total = total,
                    "event store: queue has room again; the events dropped meanwhile are missing from the history (marked as a gap)"
                );
                self.reported_drops = total;
            }
        } else if !self.dropping {
            self.dropping = true;
            error!(
                "event store: queue full, dropping events: history will have a gap (detection is not affected)"
            );
        }
    }
}

impl Sink for StoreSink {
    fn name(&self) -> &'static str {
        "store"
    }

    fn finding(&mut self, f: &Finding) {
        self.offer(Item::Finding(Box::new(f.clone())));
    }

    fn input(&mut self, input: &Input) {
        if wanted(input, &self.patterns) {
            self.offer(Item::Input(input.clone()));
        }
    }

    fn notice(&mut self, kind: &str, message: &str, fields: &Value) {
        self.offer(Item::Notice {
            at: boottime_ns(),
            kind: kind.to_string(),
            message: message.to_string(),
            fields: fields.clone(),
        });
    }

    fn status(&mut self, _status: &DaemonStatus) {}

    fn shutdown(&mut self) {
        if !self.writer.shutdown(SHUTDOWN_FLUSH) {
            warn!("event store: the last events were still being written at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::tests::tempdir;
    use super::super::store::{Key, Store};
    use super::*;
    use monitor_model::{Call, PathArg, SyscallEvent, Task};

    #[test]
    fn the_sink_keeps_the_story_and_skips_the_rest() {
        let d = tempdir::Dir::new("sink");
        let mut cfg = Config::default();
        cfg.store.path = d.path().join("events.db");
        let mut sink = StoreSink::from_config(&cfg).unwrap();
        let umount = |path: &str| {
            Input::Syscall(SyscallEvent {
                start: 1,
                end: 2,
                task: Task {
                    tid: 5,
                    tgid: 5,
                    comm: "umount".into(),
                    ..Task::default()
                },
                ns: 1,
                ns_after: 1,
                ret: 0,
                call: Call::Umount {
                    target: PathArg::new(path),
                    flags: 0,
                },
            })
        };
        sink.input(&umount("/var/lib/docker/overlay2/x/merged"));
        sink.input(&umount("/mnt/usb"));
        sink.input(&Input::Tick { now: 3 });
        sink.notice("ready", "watching", &serde_json::json!({"probes": "off"}));
        sink.shutdown();
        let s = sink.stats();
        assert_eq!((s.enqueued, s.committed), (2, 2));
        let store = Store::open_existing(&cfg.store.path).unwrap();
        assert_eq!(store.stats().unwrap().events, 2);
        let (rows, _) = store
            .rows_for(
                &Key::Path(b"/var/lib/docker/overlay2/x/merged".to_vec()),
                10,
            )
            .unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn a_disabled_store_makes_no_sink() {
        let mut cfg = Config::default();
        cfg.store.enabled = false;
        assert!(StoreSink::from_config(&cfg).is_none());
    }
}
