//! The event store: one SQLite file (bundled SQLite, WAL), written by one
//! thread ([`super::writer`]) and read by `mountleak timeline`.
//!
//! Schema (version [`SCHEMA_VERSION`], in `meta`):
//!
//! ```sql
//! meta(key TEXT PRIMARY KEY, value TEXT)            -- schema, created
//! runs(id INTEGER PRIMARY KEY, started_ns, boot_id, hostname, kernel, version, pid)
//! events(id INTEGER PRIMARY KEY,                    -- insertion order
//!        run, wall_ns, kt, kind,                     -- run: runs.id; kt: CLOCK_BOOTTIME of that boot
//!        pid, mnt_ns, path_id, container_id, name, pod,  -- keys (NULL when none)
//!        data TEXT)                                  -- the event's own fields, JSON
//! paths(id INTEGER PRIMARY KEY, path BLOB UNIQUE)   -- each path stored once
//! containers(id INTEGER PRIMARY KEY, cid TEXT UNIQUE)  -- each container id stored once
//! refs(event, mnt_ns, pid, path_id)                 -- extra keys of events that have several
//! ```
//!
//! `data` plus `type`/`time`/`ktime_ns` from `kind`/`wall_ns`/`kt` (and,
//! for syscall and process events, `pid`/`mnt_ns`/`path` from their
//! columns) is the raw event ([`super::event::expand`]; README "Timeline
//! JSON"): nothing is stored twice. Each key has a partial index (`WHERE
//! … IS NOT NULL`), so a row pays only for the keys it has. Paths and
//! container ids (long, repeated, and random if hashed) are interned: a
//! new one gets the next id, so their indexes grow at the end like the
//! table (measured: random-key index inserts were what a large store's
//! writer waited on). Names and pods are looked up on
//! the runtime's `container_seen` rows and findings only. Retention deletes the oldest rows by id
//! (ids follow time closely enough), in chunks; `auto_vacuum = INCREMENTAL`
//! gives the freed pages back to the file system.
//!
//! Crash safety: every batch is one transaction; in WAL mode a committed
//! transaction survives the process being killed at any point (it is in
//! the WAL, in the kernel's page cache), and the next open replays it.
//! `synchronous = NORMAL` means an OS crash or power loss can lose the last
//! commits, never the file's integrity (sqlite.org/wal.html, "Durability").
//!
//! May import: rusqlite, serde_json, `super::event`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde_json::Value;

use super::event::{Kind, Record, Ref};

/// Bumped on an incompatible change of the tables; a store with a newer
/// version is refused with a clear message.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_ns INTEGER NOT NULL,
    boot_id TEXT,
    hostname TEXT,
    kernel TEXT,
    version TEXT,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS paths (id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS containers (id INTEGER PRIMARY KEY, cid TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    wall_ns INTEGER NOT NULL,
    kt INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    pid INTEGER,
    mnt_ns INTEGER,
    path_id INTEGER,
    container_id INTEGER,
    name TEXT,
    pod TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_pid ON events(pid) WHERE kind IN (1, 6, 7) AND pid IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_mnt_ns ON events(mnt_ns) WHERE mnt_ns IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_path ON events(path_id) WHERE path_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_container ON events(container_id) WHERE container_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_name ON events(name) WHERE kind IN (10, 20) AND name IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_pod ON events(pod) WHERE kind IN (10, 20) AND pod IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_daemon ON events(wall_ns) WHERE kind >= 30;
CREATE TABLE IF NOT EXISTS refs (
    event INTEGER NOT NULL,
    mnt_ns INTEGER,
    pid INTEGER,
    path_id INTEGER
);
CREATE INDEX IF NOT EXISTS refs_event ON refs(event);
CREATE INDEX IF NOT EXISTS refs_mnt_ns ON refs(mnt_ns) WHERE mnt_ns IS NOT NULL;
CREATE INDEX IF NOT EXISTS refs_pid ON refs(pid) WHERE pid IS NOT NULL;
CREATE INDEX IF NOT EXISTS refs_path ON refs(path_id) WHERE path_id IS NOT NULL;
";

/// Events with their interned keys resolved; the column order is what
/// [`read_row`] reads.
const SELECT_EVENTS: &str = "SELECT e.id, e.run, e.wall_ns, e.kt, e.kind, e.pid, e.mnt_ns, p.path, c.cid, e.name, e.pod, e.data \
     FROM events e LEFT JOIN paths p ON p.id = e.path_id LEFT JOIN containers c ON c.id = e.container_id";

/// Interned keys remembered by the writer (cleared when full, after a
/// failed batch and after retention forgot some).
const INTERN_CACHE: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no event store at {path} (the daemon creates it on its first run with the store enabled: `mountleak run`, `[store] enabled = true`)")]
    Missing { path: PathBuf },
    #[error("{path} is not a mountleak event store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("event store {path} has schema version {found}; this mountleak reads version {SCHEMA_VERSION} (upgrade mountleak)")]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("event store {path} has tables this mountleak does not know ({detail}): it was written by a pre-release build")]
    Incompatible { path: PathBuf, detail: String },
    #[error("event store {path}: the disk is full")]
    Full { path: PathBuf },
    #[error("event store {path} is read-only: {reason}")]
    ReadOnly { path: PathBuf, reason: String },
    #[error("event store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("event store {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl StoreError {
    fn sql(path: &Path, e: rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full { path },
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
                path,
                reason: e.to_string(),
            },
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                StoreError::NotAStore {
                    path,
                    reason: e.to_string(),
                }
            }
            _ => StoreError::Sql { path, source: e },
        }
    }

    /// A short reason for logs and gap markers.
    pub fn short(&self) -> String {
        match self {
            StoreError::Full { .. } => "disk full".into(),
            StoreError::ReadOnly { .. } => "read-only".into(),
            StoreError::Missing { .. } => "missing".into(),
            StoreError::NotAStore { reason, .. } => format!("not a store: {reason}"),
            StoreError::NewerSchema { found, .. } => format!("schema version {found}"),
            StoreError::Incompatible { detail, .. } => format!("unknown layout: {detail}"),
            StoreError::Io { source, .. } => source.to_string(),
            StoreError::Sql { source, .. } => source.to_string(),
        }
    }
}

/// Who wrote a stretch of events: one row per daemon start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunInfo {
    pub started_ns: i64,
    /// `/proc/sys/kernel/random/boot_id`: kernel times compare only within one boot.
    pub boot_id: Option<String>,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    pub version: String,
    pub pid: u32,
}

impl RunInfo {
    /// This process, now.
    pub fn current() -> RunInfo {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        RunInfo {
            started_ns: super::event::unix_ns(std::time::SystemTime::now()),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            version: format!("mountleak {}", env!("CARGO_PKG_VERSION")),
            pid: std::process::id(),
        }
    }
}

/// A stored event as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: i64,
    pub run: i64,
    pub wall_ns: i64,
    pub kt: i64,
    pub kind: Kind,
    pub pid: Option<u32>,
    pub mnt_ns: Option<u64>,
    pub path: Option<Vec<u8>>,
    pub container: Option<String>,
    pub name: Option<String>,
    pub pod: Option<String>,
    pub data: Value,
}

/// A key to look events up by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Container(String),
    Name(String),
    /// `namespace/name`.
    Pod(String),
    Path(Vec<u8>),
    Ns(u64),
    Pid(u32),
}

/// What retention keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// Sizes and extent, for `timeline`'s messages and the benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub events: u64,
    pub first_wall_ns: Option<i64>,
    pub last_wall_ns: Option<i64>,
    /// Pages in use × page size (the file may be larger by its free pages).
    pub used_bytes: u64,
    pub file_bytes: u64,
    pub runs: u64,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Interned path and container ids known to be in the file.
    path_ids: HashMap<Vec<u8>, i64>,
    container_ids: HashMap<String, i64>,
}

/// Renames a store (with its WAL and shared-memory files) to
/// `<name>.incompatible-<unix seconds>`; returns the new name.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let renamed = |suffix: &str| {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = path.as_os_str().to_owned();
        to.push(format!(".incompatible-{secs}{suffix}"));
        (PathBuf::from(from), PathBuf::from(to))
    };
    for suffix in ["-wal", "-shm", ""] {
        let (from, to) = renamed(suffix);
        match std::fs::rename(&from, &to) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {}
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Ok(()) => {}
        }
    }
    Ok(renamed("").1)
}

impl Store {
    /// Opens the store for writing, creating the file (and its directory)
    /// and the tables on first use.
    pub fn create(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::sql(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            path_ids: HashMap::new(),
            container_ids: HashMap::new(),
        };
        match store.setup() {
            Err(StoreError::Incompatible { detail, .. }) => {
                // Same version number, other tables (a development build's
                // store): keep it for whoever wants it, start a new one.
                drop(store);
                let aside = move_aside(path)?;
                tracing::warn!(
                    path = %path.display(),
                    kept_as = %aside.display(),
                    detail,
                    "event store has an unknown layout; moved aside, starting a new one"
                );
                Store::create(path)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(store),
        }
    }

    /// Every table's columns match [`SCHEMA`] (as a fresh store has them).
    fn check_shape(&self) -> Result<(), StoreError> {
        let err = |e| StoreError::sql(&self.path, e);
        let fresh = Connection::open_in_memory().map_err(err)?;
        fresh.execute_batch(SCHEMA).map_err(err)?;
        let columns = |conn: &Connection| -> rusqlite::Result<Vec<(String, String)>> {
            let mut stmt = conn.prepare(
                "SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c \
                 WHERE m.type = 'table' ORDER BY m.name, c.cid",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        let want = columns(&fresh).map_err(err)?;
        let have = columns(&self.conn).map_err(err)?;
        let missing: Vec<String> = want
            .iter()
            .filter(|c| !have.contains(c))
            .map(|(t, c)| format!("{t}.{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::Incompatible {
            path: self.path.clone(),
            detail: format!("missing {}", missing.join(", ")),
        })
    }

    fn setup(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::sql(&path, e);
        self.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(err)?;
        // Only takes effect on a database with no tables yet; must come
        // before the first CREATE TABLE.
        self.conn
            .pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(err)?;
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::ReadOnly {
                path: path.clone(),
                reason: format!("cannot switch to WAL (journal mode stays {mode})"),
            });
        }
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // Keep the WAL from staying large after a burst.
        self.conn
            .pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(err)?;
        // Checkpoint every 32 MiB of WAL rather than 4: a checkpoint is
        // where WAL mode syncs, and syncs are what sustained writing waits on.
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 8192)
            .map_err(err)?;
        // 32 MiB of page cache: index pages of random keys stay in memory.
        self.conn
            .pragma_update(None, "cache_size", -32768)
            .map_err(err)?;
        // Read pages through a mapping rather than pread: a fifth of the
        // writer's CPU went to copying pages in (perf, BENCHMARKS.md).
        self.conn
            .pragma_update(None, "mmap_size", 256 * 1024 * 1024)
            .map_err(err)?;
        let existing = self.schema_version()?;
        match existing {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: path.clone(),
                    found: v,
                })
            }
            _ => {}
        }
        if existing.is_some() {
            self.check_shape()?;
        }
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch(SCHEMA).map_err(err)?;
        tx.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?1)",
            params![SCHEMA_VERSION.to_string()],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('created', ?1)",
            params![super::event::rfc3339_ns(super::event::unix_ns(
                std::time::SystemTime::now()
            ))],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// The schema version of an existing store; `None` for an empty file.
    fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        let has_meta: bool = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| StoreError::sql(&self.path, e))?;
        if !has_meta {
            return Ok(None);
        }
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| StoreError::sql(&self.path, e))?;
        Ok(v.and_then(|s| s.parse().ok()))
    }

    /// Opens an existing store to read it (`mountleak timeline`). Never
    /// creates anything; a missing file, a file that is not a store, or a
    /// store from a newer mountleak is a clear error.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Ok(m) if m.is_dir() => {
                return Err(StoreError::NotAStore {
                    path: path.to_path_buf(),
                    reason: "it is a directory".into(),
                })
            }
            Ok(_) => {}
        }
        // Read-write (without CREATE) lets the reader use the WAL index like
        // the writer does; read-only is for a user who may not write the
        // directory; `immutable` for a store on a read-only file system, where
        // SQLite cannot make the WAL index (a store closed cleanly has its
        // WAL folded in; one that was not may miss its last batches there).
        let uri = format!("file:{}?immutable=1", uri_path(path));
        let attempts: [(&str, OpenFlags); 3] = [
            ("", OpenFlags::SQLITE_OPEN_READ_WRITE),
            ("", OpenFlags::SQLITE_OPEN_READ_ONLY),
            (
                &uri,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
            ),
        ];
        let mut last = None;
        for (name, flags) in attempts {
            let target: &Path = if name.is_empty() {
                path
            } else {
                Path::new(name)
            };
            let conn = match Connection::open_with_flags(
                target,
                flags | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(c) => c,
                Err(e) => {
                    last = Some(StoreError::sql(path, e));
                    continue;
                }
            };
            let store = Store {
                conn,
                path: path.to_path_buf(),
                path_ids: HashMap::new(),
                container_ids: HashMap::new(),
            };
            if let Err(e) = store.conn.busy_timeout(Duration::from_secs(5)) {
                last = Some(StoreError::sql(path, e));
                continue;
            }
            match store.schema_version() {
                Ok(None) => {
                    return Err(StoreError::NotAStore {
                        path: path.to_path_buf(),
                        reason: "it has no mountleak tables".into(),
                    })
                }
                Ok(Some(v)) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: path.to_path_buf(),
                        found: v,
                    })
                }
                Ok(Some(_)) => return Ok(store),
                // Not a database: no other way of opening changes that.
                Err(e @ StoreError::NotAStore { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Missing {
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::sql(&self.path, e)
    }

    /// Records a daemon start; its id goes into every event it writes.
    pub fn begin_run(&mut self, info: &RunInfo) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO runs(started_ns, boot_id, hostname, kernel, version, pid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![info.started_ns, info.boot_id, info.hostname, info.kernel, info.version, info.pid],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Writes `records` as one transaction: all or nothing.
    pub fn insert_batch(&mut self, run: i64, records: &[Record]) -> Result<(), StoreError> {
        let result = self.insert_inner(run, records);
        if result.is_err() {
            // Ids interned in the rolled-back transaction are not in the file.
            self.path_ids.clear();
            self.container_ids.clear();
        }
        result
    }

    fn insert_inner(&mut self, run: i64, records: &[Record]) -> Result<(), StoreError> {
        let Store {
            conn,
            path,
            path_ids,
            container_ids,
        } = self;
        let err = |e| StoreError::sql(path, e);
        if path_ids.len() > INTERN_CACHE {
            path_ids.clear();
        }
        if container_ids.len() > INTERN_CACHE {
            container_ids.clear();
        }
        let tx = conn.transaction().map_err(err)?;
        {
            let mut ev = tx
                .prepare_cached(
                    "INSERT INTO events(run, wall_ns, kt, kind, pid, mnt_ns, path_id, container_id, name, pod, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(err)?;
            let mut rf = tx
                .prepare_cached(
                    "INSERT INTO refs(event, mnt_ns, pid, path_id) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            let mut find_path = tx
                .prepare_cached("SELECT id FROM paths WHERE path = ?1")
                .map_err(err)?;
            let mut add_path = tx
                .prepare_cached("INSERT INTO paths(path) VALUES (?1)")
                .map_err(err)?;
            let mut find_container = tx
                .prepare_cached("SELECT id FROM containers WHERE cid = ?1")
                .map_err(err)?;
            let mut add_container = tx
                .prepare_cached("INSERT INTO containers(cid) VALUES (?1)")
                .map_err(err)?;
            let mut path_id = |p: &[u8]| -> Result<i64, StoreError> {
                if let Some(id) = path_ids.get(p) {
                    return Ok(*id);
                }
                let id = match find_path
                    .query_row([p], |r| r.get(0))
                    .optional()
                    .map_err(err)?
                {
                    Some(id) => id,
                    None => {
                        add_path.execute([p]).map_err(err)?;
                        tx.last_insert_rowid()
                    }
                };
                path_ids.insert(p.to_vec(), id);
                Ok(id)
            };
            for r in records {
                let pid_ = match &r.path {
                    Some(p) => Some(path_id(p)?),
                    None => None,
                };
                let cid = match &r.container {
                    Some(c) => Some(match container_ids.get(c) {
                        Some(id) => *id,
                        None => {
                            let id = match find_container
                                .query_row([c], |r| r.get(0))
                                .optional()
                                .map_err(err)?
                            {
                                Some(id) => id,
                                None => {
                                    add_container.execute([c]).map_err(err)?;
                                    tx.last_insert_rowid()
                                }
                            };
                            container_ids.insert(c.clone(), id);
                            id
                        }
                    }),
                    None => None,
                };
                ev.execute(params![
                    run,
                    r.wall_ns,
                    i64::try_from(r.kt).unwrap_or(i64::MAX),
                    r.kind as i64,
                    r.pid,
                    r.mnt_ns.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                    pid_,
                    cid,
                    r.name,
                    r.pod,
                    r.data,
                ])
                .map_err(err)?;
                if !r.refs.is_empty() {
                    let id = tx.last_insert_rowid();
                    for x in &r.refs {
                        let (ns, pid, p) = match x {
                            Ref::Ns(n) => (Some(i64::try_from(*n).unwrap_or(i64::MAX)), None, None),
                            Ref::Pid(p) => (None, Some(*p), None),
                            Ref::Path(p) => (None, None, Some(path_id(p)?)),
                        };
                        rf.execute(params![id, ns, pid, p]).map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)
    }

    /// Adds `records` from another process than the daemon (`mountleak
    /// fix`): to an existing store only (nothing is created), under the
    /// latest run, as one transaction beside the daemon's writer (SQLite
    /// serialises the two; a busy store is waited for up to 5 s).
    pub fn append(path: &Path, records: &[Record]) -> Result<(), StoreError> {
        let mut store = Store::open_existing(path)?;
        let run: Option<i64> = store
            .conn
            .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
            .map_err(|e| store.err(e))?;
        let run = match run {
            Some(r) => r,
            None => store.begin_run(&RunInfo::current())?,
        };
        store.insert_batch(run, records)
    }

    /// `PRAGMA integrity_check`: `"ok"` or the problems found.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.err(e))?;
        let lines: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(lines.join("\n"))
    }

    fn pragma_u64(&self, name: &str) -> Result<u64, StoreError> {
        self.conn
            .pragma_query_value(None, name, |r| r.get::<_, i64>(0))
            .map(|v| u64::try_from(v).unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    /// Bytes of pages in use (what retention by size measures).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let pages = self.pragma_u64("page_count")?;
        let free = self.pragma_u64("freelist_count")?;
        Ok(pages.saturating_sub(free) * self.pragma_u64("page_size")?)
    }

    /// The lowest and highest event id. Two queries: SQLite answers a lone
    /// `min(id)` or `max(id)` from the b-tree's ends, but both in one
    /// statement scan the whole table (a profile of retention found it).
    fn id_range(&self) -> Result<Option<(i64, i64)>, StoreError> {
        let end = |order: &str| -> Result<Option<i64>, StoreError> {
            self.conn
                .query_row(
                    &format!("SELECT id FROM events ORDER BY id {order} LIMIT 1"),
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))
        };
        Ok(match (end("ASC")?, end("DESC")?) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        })
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let range = self.id_range()?;
        let events: u64 = self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.err(e))?;
        let wall_of = |id: i64| -> Result<Option<i64>, StoreError> {
            self.conn
                .query_row("SELECT wall_ns FROM events WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| self.err(e))
        };
        let (first_wall_ns, last_wall_ns) = match range {
            Some((a, b)) => (wall_of(a)?, wall_of(b)?),
            None => (None, None),
        };
        let runs: u64 = self
            .conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.err(e))?;
        let file_bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(StoreStats {
            events,
            first_wall_ns,
            last_wall_ns,
            used_bytes: self.used_bytes()?,
            file_bytes,
            runs,
        })
    }

    /// The highest event id with `wall_ns < cutoff`, by bisection over ids
    /// (wall times grow with ids, up to the small reordering of one batch).
    fn last_id_before(&self, cutoff: i64, lo: i64, hi: i64) -> Result<Option<i64>, StoreError> {
        let wall_at_or_after = |id: i64| -> Result<Option<(i64, i64)>, StoreError> {
            self.conn
                .query_row(
                    "SELECT id, wall_ns FROM events WHERE id >= ?1 ORDER BY id LIMIT 1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| self.err(e))
        };
        match wall_at_or_after(lo)? {
            Some((_, w)) if w < cutoff => {}
            _ => return Ok(None),
        }
        let (mut good, mut bad) = (lo, hi + 1);
        while bad - good > 1 {
            let mid = good + (bad - good) / 2;
            match wall_at_or_after(mid)? {
                Some((id, w)) if w < cutoff => good = id.max(mid),
                _ => bad = mid,
            }
        }
        Ok(Some(good))
    }

    /// The id up to which retention should delete now (`None`: nothing).
    pub fn retention_boundary(
        &self,
        r: &Retention,
        now_wall_ns: i64,
    ) -> Result<Option<i64>, StoreError> {
        let Some((lo, hi)) = self.id_range()? else {
            return Ok(None);
        };
        let mut upto: Option<i64> = None;
        if let Some(age) = r.max_age {
            let cutoff =
                now_wall_ns.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX));
            upto = self.last_id_before(cutoff, lo, hi)?;
        }
        if let Some(max) = r.max_bytes {
            let used = self.used_bytes()?;
            if used > max {
                // Delete enough of the oldest rows to get to 90% of the
                // limit, at the store's average bytes per row.
                let rows = u64::try_from(hi - lo + 1).unwrap_or(1).max(1);
                let per_row = (used / rows).max(1);
                let excess = used - max / 10 * 9;
                let n = i64::try_from(excess.div_ceil(per_row)).unwrap_or(i64::MAX);
                let by_size = lo.saturating_add(n).saturating_sub(1).min(hi);
                upto = Some(upto.map_or(by_size, |u| u.max(by_size)));
            }
        }
        Ok(upto)
    }

    /// Deletes the oldest events, at most `chunk` of them and none above id
    /// `upto`, in one transaction. Returns how many went and whether more
    /// remain below `upto`.
    pub fn delete_oldest(&mut self, upto: i64, chunk: i64) -> Result<(u64, bool), StoreError> {
        let Some((lo, _)) = self.id_range()? else {
            return Ok((0, false));
        };
        let end = upto.min(lo.saturating_add(chunk.max(1)).saturating_sub(1));
        let path = self.path.clone();
        let err = |e| StoreError::sql(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM refs WHERE event <= ?1", [end])
            .map_err(err)?;
        let n = tx
            .execute("DELETE FROM events WHERE id <= ?1", [end])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((n as u64, end < upto))
    }

    /// After retention: forgets interned paths and container ids below the
    /// lowest one still referenced (ids grow with time, so that is what
    /// retention left behind).
    pub fn forget_orphans(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::sql(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch(
            "DELETE FROM paths WHERE id < min(
               coalesce((SELECT path_id FROM events WHERE path_id IS NOT NULL ORDER BY path_id LIMIT 1),
                        (SELECT max(id) + 1 FROM paths), 0),
               coalesce((SELECT path_id FROM refs WHERE path_id IS NOT NULL ORDER BY path_id LIMIT 1),
                        (SELECT max(id) + 1 FROM paths), 0));
             DELETE FROM containers WHERE id < coalesce(
               (SELECT container_id FROM events WHERE container_id IS NOT NULL ORDER BY container_id LIMIT 1),
               (SELECT max(id) + 1 FROM containers), 0);",
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        self.path_ids.clear();
        self.container_ids.clear();
        Ok(())
    }

    /// Gives up to `pages` free pages back to the file system (the file
    /// shrinks at the checkpoint done here). Returns the free pages left.
    pub fn vacuum_step(&mut self, pages: u32) -> Result<u64, StoreError> {
        // Each step of `incremental_vacuum` frees one page: step it to the
        // end (a single `execute` would free just one).
        let mut vacuum = self
            .conn
            .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
            .map_err(|e| self.err(e))?;
        let mut rows = vacuum.query([]).map_err(|e| self.err(e))?;
        while rows.next().map_err(|e| self.err(e))?.is_some() {}
        drop(rows);
        drop(vacuum);
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))?;
        self.pragma_u64("freelist_count")
    }

    /// The id a path or container id was interned under, if any.
    fn interned(
        &self,
        table: &str,
        column: &str,
        value: rusqlite::types::Value,
    ) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT id FROM {table} WHERE {column} = ?1"))
            .and_then(|mut st| st.query_row([value], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Every event with `key` (in a key column or in `refs`), oldest first;
    /// at most `limit` (the newest are kept then) and whether it was cut.
    pub fn rows_for(&self, key: &Key, limit: usize) -> Result<(Vec<Row>, bool), StoreError> {
        use rusqlite::types::Value as V;
        let (cond, refcond, value): (&str, Option<&str>, V) = match key {
            Key::Container(c) => match self.interned("containers", "cid", c.clone().into())? {
                Some(id) => ("e.container_id = ?1", None, id.into()),
                None => return Ok((Vec::new(), false)),
            },
            Key::Name(n) => (
                "e.kind IN (10, 20) AND e.name IS NOT NULL AND e.name = ?1",
                None,
                n.clone().into(),
            ),
            Key::Pod(p) => (
                "e.kind IN (10, 20) AND e.pod IS NOT NULL AND e.pod = ?1",
                None,
                p.clone().into(),
            ),
            Key::Path(p) => match self.interned("paths", "path", p.clone().into())? {
                Some(id) => ("e.path_id = ?1", Some("path_id = ?1"), id.into()),
                None => return Ok((Vec::new(), false)),
            },
            Key::Ns(n) => (
                "e.mnt_ns = ?1",
                Some("mnt_ns = ?1"),
                i64::try_from(*n).unwrap_or(i64::MAX).into(),
            ),
            // What a process did that matters: namespaces it made, its
            // fork and exit (its mounts are found through their paths).
            Key::Pid(p) => (
                "e.kind IN (1, 6, 7) AND e.pid IS NOT NULL AND e.pid = ?1",
                Some("pid = ?1"),
                i64::from(*p).into(),
            ),
        };
        let mut sql = format!("{SELECT_EVENTS} WHERE {cond}");
        if let Some(rc) = refcond {
            sql.push_str(&format!(
                " UNION {SELECT_EVENTS} WHERE e.id IN (SELECT event FROM refs WHERE {rc})"
            ));
        }
        sql.push_str(" ORDER BY 1 DESC LIMIT ?2");
        let lim = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows: Vec<Row> = stmt
            .query_map(params![value, lim], read_row)
            .map_err(|e| self.err(e))?
            .filter_map(|r| r.ok().flatten())
            .collect();
        let cut = rows.len() > limit;
        rows.truncate(limit);
        rows.reverse();
        Ok((rows, cut))
    }

    /// Container ids starting with `prefix` (at most `limit`).
    pub fn containers_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT cid FROM containers WHERE cid >= ?1 AND cid < ?2 LIMIT ?3")
            .map_err(|e| self.err(e))?;
        let upper = format!("{prefix}\u{10FFFF}");
        let ids = stmt
            .query_map(params![prefix, upper, limit as i64], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .filter_map(Result::ok)
            .collect();
        Ok(ids)
    }

    /// Daemon notices and store gaps between two times (inclusive).
    pub fn daemon_rows(
        &self,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let sql = format!(
            "{SELECT_EVENTS} WHERE e.kind >= {} AND e.wall_ns BETWEEN ?1 AND ?2 ORDER BY e.wall_ns LIMIT ?3",
            Kind::FIRST_DAEMON_CODE
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![from_ns, to_ns, limit as i64], read_row)
            .map_err(|e| self.err(e))?
            .filter_map(|r| r.ok().flatten())
            .collect();
        Ok(rows)
    }

    /// The run rows, by id (for the story's "mountleak restarted" lines).
    pub fn runs(&self) -> Result<Vec<(i64, RunInfo)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, started_ns, boot_id, hostname, kernel, version, pid FROM runs ORDER BY id")
            .map_err(|e| self.err(e))?;
        let runs = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    RunInfo {
                        started_ns: r.get(1)?,
                        boot_id: r.get(2)?,
                        hostname: r.get(3)?,
                        kernel: r.get(4)?,
                        version: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        pid: r.get::<_, Option<u32>>(6)?.unwrap_or(0),
                    },
                ))
            })
            .map_err(|e| self.err(e))?
            .filter_map(Result::ok)
            .collect();
        Ok(runs)
    }

    /// The raw connection, for tests and benchmarks that check what is stored.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// A path for an SQLite `file:` URI (RFC 3986 escapes for what a URI
/// would read otherwise).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A row; `None` for one this version cannot read (an unknown kind from a
/// newer writer, or data that is not JSON): skipped, never fatal.
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Row>> {
    let Some(kind) = Kind::from_code(r.get(4)?) else {
        return Ok(None);
    };
    let data: String = r.get(11)?;
    let Ok(data) = serde_json::from_str::<Value>(&data) else {
        return Ok(None);
    };
    Ok(Some(Row {
        id: r.get(0)?,
        run: r.get(1)?,
        wall_ns: r.get(2)?,
        kt: r.get(3)?,
        kind,
        pid: r
            .get::<_, Option<i64>>(5)?
            .and_then(|p| u32::try_from(p).ok()),
        mnt_ns: r
            .get::<_, Option<i64>>(6)?
            .and_then(|n| u64::try_from(n).ok()),
        path: r.get(7)?,
        container: r.get(8)?,
        name: r.get(9)?,
        pod: r.get(10)?,
        data,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rec(i: i64, kind: Kind) -> Record {
        Record {
            kt: i as u64,
            wall_ns: 1_000 + i,
            kind,
            pid: Some(100 + (i % 3) as u32),
            mnt_ns: Some(4026532000 + (i % 2) as u64),
            path: (i % 4 == 0).then(|| b"/var/lib/docker/overlay2/a/merged".to_vec()),
            container: None,
            name: None,
            pod: None,
            refs: if i == 5 {
                vec![Ref::Ns(7), Ref::Pid(9)]
            } else {
                vec![]
            },
            data: format!("{{\"type\":\"{}\",\"i\":{i}}}", kind.as_str()),
        }
    }

    fn temp_store() -> (tempdir::Dir, Store) {
        let dir = tempdir::Dir::new("store");
        let s = Store::create(&dir.path().join("sub/events.db")).unwrap();
        (dir, s)
    }

    /// A throwaway directory for unit tests (no extra dependency).
    pub(crate) mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new(tag: &str) -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "mountleak-unit-{tag}-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn a_batch_is_stored_and_found_by_each_key() {
        let (_d, mut s) = temp_store();
        let run = s.begin_run(&RunInfo::current()).unwrap();
        // Exits: the kind a pid is looked up on.
        let recs: Vec<Record> = (0..12).map(|i| rec(i, Kind::ProcessExit)).collect();
        s.insert_batch(run, &recs).unwrap();
        let (rows, cut) = s
            .rows_for(
                &Key::Path(b"/var/lib/docker/overlay2/a/merged".to_vec()),
                100,
            )
            .unwrap();
        assert!(!cut);
        assert_eq!(rows.iter().map(|r| r.kt).collect::<Vec<_>>(), [0, 4, 8]);
        // ns 7 only through refs.
        let (rows, _) = s.rows_for(&Key::Ns(7), 100).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].data["i"], 5);
        let (rows, cut) = s.rows_for(&Key::Pid(100), 2).unwrap();
        assert!(cut);
        // The newest are kept, oldest first.
        assert_eq!(rows.iter().map(|r| r.kt).collect::<Vec<_>>(), [6, 9]);
        assert_eq!(s.integrity_check().unwrap(), "ok");
        let st = s.stats().unwrap();
        assert_eq!((st.events, st.runs), (12, 1));
        assert_eq!(
            (st.first_wall_ns, st.last_wall_ns),
            (Some(1000), Some(1011))
        );
    }

    #[test]
    fn retention_by_age_deletes_the_oldest_in_chunks() {
        let (_d, mut s) = temp_store();
        let run = s.begin_run(&RunInfo::default()).unwrap();
        let recs: Vec<Record> = (0..100).map(|i| rec(i, Kind::Mount)).collect();
        s.insert_batch(run, &recs).unwrap();
        let r = Retention {
            max_age: Some(Duration::from_nanos(30)),
            max_bytes: None,
        };
        // now = 1100: keep wall >= 1070, i.e. i >= 70.
        let upto = s.retention_boundary(&r, 1_100).unwrap().unwrap();
        let mut more = true;
        let mut deleted = 0;
        while more {
            let (n, m) = s.delete_oldest(upto, 16).unwrap();
            deleted += n;
            more = m;
        }
        assert_eq!(deleted, 70);
        let (rows, _) = s.rows_for(&Key::Ns(7), 10).unwrap();
        assert!(rows.is_empty(), "refs of deleted events go too");
        assert_eq!(s.stats().unwrap().first_wall_ns, Some(1070));
        assert_eq!(s.retention_boundary(&r, 1_100).unwrap(), None);
        // Forgetting interned keys keeps the ones still in use.
        s.forget_orphans().unwrap();
        s.vacuum_step(1000).unwrap();
        let (rows, _) = s
            .rows_for(
                &Key::Path(b"/var/lib/docker/overlay2/a/merged".to_vec()),
                100,
            )
            .unwrap();
        assert_eq!(rows.len(), 7, "i = 72, 76, … 96");
        s.insert_batch(run, &[rec(100, Kind::Mount)]).unwrap();
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn retention_by_size_gets_under_the_limit() {
        let (_d, mut s) = temp_store();
        let run = s.begin_run(&RunInfo::default()).unwrap();
        let big = "x".repeat(400);
        let recs: Vec<Record> = (0..5000)
            .map(|i| Record {
                data: format!("{{\"pad\":\"{big}\",\"i\":{i}}}"),
                ..rec(i, Kind::Mount)
            })
            .collect();
        s.insert_batch(run, &recs).unwrap();
        let used = s.used_bytes().unwrap();
        let max = used / 2;
        let r = Retention {
            max_age: None,
            max_bytes: Some(max),
        };
        let upto = s.retention_boundary(&r, 0).unwrap().unwrap();
        while s.delete_oldest(upto, 1000).unwrap().1 {}
        s.forget_orphans().unwrap();
        while s.vacuum_step(64).unwrap() > 0 {}
        let after = s.used_bytes().unwrap();
        assert!(after <= max, "{after} > {max}");
        // Every free page went back: the file is the pages in use.
        assert_eq!(s.pragma_u64("freelist_count").unwrap(), 0);
        assert_eq!(std::fs::metadata(s.path()).unwrap().len(), after);
        assert!(s.stats().unwrap().events > 1000);
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn opening_what_is_not_a_store_says_so() {
        let d = tempdir::Dir::new("bad");
        let missing = d.path().join("nope.db");
        let e = Store::open_existing(&missing).err().unwrap();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("no event store"), "{e}");
        let junk = d.path().join("junk.db");
        std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
        let e = Store::open_existing(&junk).err().unwrap();
        assert!(e.to_string().contains("not a mountleak event store"), "{e}");
        let e = Store::open_existing(d.path()).err().unwrap();
        assert!(e.to_string().contains("directory"), "{e}");
        // An SQLite file of someone else's.
        let other = d.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        let e = Store::open_existing(&other).err().unwrap();
        assert!(e.to_string().contains("no mountleak tables"), "{e}");
    }

    /// A development build's store: version 1, other columns. The daemon
    /// keeps it under another name and starts afresh rather than failing
    /// every batch.
    #[test]
    fn a_store_of_an_unknown_layout_is_moved_aside() {
        let d = tempdir::Dir::new("layout");
        let db = d.path().join("events.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema', '1');
                 CREATE TABLE events (id INTEGER PRIMARY KEY, path_key BLOB);
                 INSERT INTO events(path_key) VALUES (x'2f');",
            )
            .unwrap();
        let mut s = Store::create(&db).unwrap();
        let run = s.begin_run(&RunInfo::default()).unwrap();
        s.insert_batch(run, &[rec(1, Kind::Finding)]).unwrap();
        assert_eq!(s.stats().unwrap().events, 1);
        let kept: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with("events.db.incompatible-")
                    && !n.ends_with("-wal")
                    && !n.ends_with("-shm")
            })
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        let old = Connection::open(d.path().join(&kept[0])).unwrap();
        let n: i64 = old
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "the old store is kept as it was");
        // A store of the right layout is opened as it is.
        drop(s);
        let s = Store::create(&db).unwrap();
        assert_eq!(s.stats().unwrap().events, 1);
    }

    #[test]
    fn another_process_appends_under_the_latest_run() {
        let (d, mut s) = temp_store();
        let run = s.begin_run(&RunInfo::default()).unwrap();
        s.insert_batch(run, &[rec(0, Kind::Umount)]).unwrap();
        let path = d.path().join("sub/events.db");
        let remedy = super::super::event::remedy_record(
            9,
            2_000,
            "ML-1",
            Some(b"/var/lib/docker/overlay2/a/merged"),
            None,
            serde_json::json!({"n": 1, "status": "done"}),
        );
        Store::append(&path, &[remedy]).unwrap();
        let (rows, _) = s
            .rows_for(
                &Key::Path(b"/var/lib/docker/overlay2/a/merged".to_vec()),
                10,
            )
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].run, run);
        assert_eq!(rows[1].data["finding"], "ML-1");
        assert_eq!(rows[1].data["path"], "/var/lib/docker/overlay2/a/merged");
        let missing = d.path().join("none.db");
        assert!(matches!(
            Store::append(&missing, &[]),
            Err(StoreError::Missing { .. })
        ));
    }

    #[test]
    fn uri_paths_escape_what_a_uri_would_read() {
        assert_eq!(
            uri_path(Path::new("/var/lib/mountleak/events.db")),
            "/var/lib/mountleak/events.db"
        );
        assert_eq!(uri_path(Path::new("/a b/x?y#z%")), "/a%20b/x%3Fy%23z%25");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (d, s) = temp_store();
        s.connection()
            .execute("UPDATE meta SET value = '99' WHERE key = 'schema'", [])
            .unwrap();
        drop(s);
        let e = Store::open_existing(&d.path().join("sub/events.db"))
            .err()
            .unwrap();
        assert!(
            matches!(e, StoreError::NewerSchema { found: 99, .. }),
            "{e}"
        );
    }

    #[test]
    fn unknown_kinds_and_bad_json_are_skipped_not_fatal() {
        let (_d, mut s) = temp_store();
        let run = s.begin_run(&RunInfo::default()).unwrap();
        s.insert_batch(run, &[rec(0, Kind::Umount)]).unwrap();
        s.connection()
            .execute(
                "INSERT INTO events(run, wall_ns, kt, kind, path_id, data) VALUES (1, 5, 5, 250, 1, '{}'), (1, 6, 6, 4, 1, 'not json')",
                [],
            )
            .unwrap();
        let (rows, _) = s
            .rows_for(
                &Key::Path(b"/var/lib/docker/overlay2/a/merged".to_vec()),
                10,
            )
            .unwrap();
        assert_eq!(rows.len(), 1);
    }
}
