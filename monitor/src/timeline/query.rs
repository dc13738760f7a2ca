//! From a target to the rows of its story. The target is parsed without
//! the store ([`Target::parse`]); [`collect`] then follows the links the
//! rows carry (a container's mounts, a finding's holders, a namespace's
//! findings) until nothing new turns up, through a [`Lookup`], so the
//! walk is tested on an in-memory fake as well as on SQLite.
//!
//! Links followed, and why no others: container → its mounts (runtime
//! inspect, findings); mount path → its findings' holder namespaces and
//! owner; namespace → the paths its findings name; pid → the namespaces
//! it made, exited from or held. A pid's mounts are not followed (dockerd's
//! pid would pull in every container), nor a namespace's own mount calls
//! (`/` would pull in everything).
//!
//! May import: `super::{store, event}`.

use std::collections::{BTreeMap, BTreeSet};

use super::event::Kind;
use super::store::{Key, Row, Store, StoreError};

/// What `mountleak timeline TARGET` asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A container id (or a prefix of one) or name.
    Container(String),
    /// `namespace/name`.
    Pod(String),
    Path(Vec<u8>),
    Ns(u64),
    Pid(u32),
}

/// Mount namespace inode numbers start here (`PROC_DYNAMIC_FIRST`,
/// include/linux/proc_ns.h: 0xF0000000); pids are far below (at most 2^22).
const FIRST_NS_INUM: u64 = 0xF000_0000;

impl Target {
    /// Reads TARGET: `/path`, `mnt:[N]`/`mnt:N`/a number from 4026531840 up
    /// (namespace), `pid:N` or a smaller number (pid), `ns/name` (pod), or
    /// anything else (container id, id prefix or name).
    pub fn parse(text: &str) -> Result<Target, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty TARGET: give a container id or name, a pod (NAMESPACE/NAME), a mount path, a mount namespace id or a pid".into());
        }
        if t.starts_with('/') {
            use std::os::unix::ffi::OsStrExt;
            return Ok(Target::Path(std::ffi::OsStr::new(t).as_bytes().to_vec()));
        }
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{text:?}: {s:?} is not a number"))
        };
        if let Some(rest) = t.strip_prefix("mnt:") {
            let inner = rest.trim_start_matches('[').trim_end_matches(']');
            return Ok(Target::Ns(number(inner)?));
        }
        if let Some(rest) = t.strip_prefix("pid:") {
            let n = number(rest)?;
            return u32::try_from(n)
                .map(Target::Pid)
                .map_err(|_| format!("{text:?}: no pid is that large"));
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            let n = number(t);
            match n {
                Ok(n) if n >= FIRST_NS_INUM => return Ok(Target::Ns(n)),
                // PID_MAX_LIMIT is 2^22: seven digits at most.
                Ok(n) if n > 0 && t.len() <= 7 => return Ok(Target::Pid(n as u32)),
                // Otherwise a container id (prefix) that is all digits.
                _ => return Ok(Target::Container(t.to_string())),
            }
        }
        if let Some((ns, name)) = t.split_once('/') {
            if ns.is_empty() || name.is_empty() || name.contains('/') {
                return Err(format!(
                    "{text:?}: a pod is NAMESPACE/NAME, a mount path starts with /"
                ));
            }
            return Ok(Target::Pod(t.to_string()));
        }
        Ok(Target::Container(t.to_string()))
    }

    /// `container`, `pod`, `path`, `mnt_ns`, `pid` (the JSON `target.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Container(_) => "container",
            Target::Pod(_) => "pod",
            Target::Path(_) => "path",
            Target::Ns(_) => "mnt_ns",
            Target::Pid(_) => "pid",
        }
    }
}

/// Where rows come from.
pub trait Lookup {
    /// Rows with `key`, oldest first, and whether the result was cut.
    fn rows(&mut self, key: &Key) -> Result<(Vec<Row>, bool), StoreError>;
    /// Container ids starting with `prefix`.
    fn container_ids(&mut self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Daemon notices and store gaps between two times.
    fn daemon_rows(&mut self, from_ns: i64, to_ns: i64) -> Result<Vec<Row>, StoreError>;
}

/// Rows per key at most (the newest are kept; the story says it was cut).
pub const ROWS_PER_KEY: usize = 20_000;
/// Keys of each kind followed at most.
const KEYS_CAP: usize = 64;

pub struct StoreLookup<'a>(pub &'a Store);

impl Lookup for StoreLookup<'_> {
    fn rows(&mut self, key: &Key) -> Result<(Vec<Row>, bool), StoreError> {
        self.0.rows_for(key, ROWS_PER_KEY)
    }
    fn container_ids(&mut self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.0.containers_with_prefix(prefix, 16)
    }
    fn daemon_rows(&mut self, from_ns: i64, to_ns: i64) -> Result<Vec<Row>, StoreError> {
        self.0.daemon_rows(from_ns, to_ns, 2_000)
    }
}

/// The rows of a target's story.
#[derive(Debug, Default)]
pub struct Related {
    pub rows: Vec<Row>,
    /// What the target resolved to (container ids, the path, …).
    pub matched: Vec<String>,
    /// Caveats (a key with too many rows, too many keys).
    pub notes: Vec<String>,
}

#[derive(Default)]
struct Walk {
    rows: BTreeMap<i64, Row>,
    containers: BTreeSet<String>,
    paths: BTreeSet<Vec<u8>>,
    namespaces: BTreeSet<u64>,
    done: BTreeSet<Key>,
    notes: Vec<String>,
}

impl Walk {
    fn fetch(&mut self, src: &mut dyn Lookup, key: Key) -> Result<Vec<Row>, StoreError> {
        if !self.done.insert(key.clone()) {
            return Ok(Vec::new());
        }
        let (rows, cut) = src.rows(&key)?;
        if cut {
            self.notes.push(format!(
                "{} has more than {ROWS_PER_KEY} events; only the newest are shown",
                describe(&key)
            ));
        }
        for r in &rows {
            self.rows.entry(r.id).or_insert_with(|| r.clone());
        }
        Ok(rows)
    }

    fn add_container(&mut self, id: &str) {
        if self.containers.len() < KEYS_CAP {
            self.containers.insert(id.to_string());
        }
    }

    fn add_path(&mut self, p: &[u8]) {
        if self.paths.len() < KEYS_CAP {
            self.paths.insert(p.to_vec());
        }
    }

    fn add_ns(&mut self, n: u64) {
        if self.namespaces.len() < KEYS_CAP {
            self.namespaces.insert(n);
        }
    }

    /// Follows the links out of `rows` (see the module doc).
    fn learn(&mut self, rows: &[Row]) {
        for r in rows {
            match r.kind {
                Kind::ContainerSeen => {
                    if let Some(id) = &r.container {
                        self.add_container(id);
                    }
                    for m in r.data["mounts"].as_array().into_iter().flatten() {
                        let bytes = m
                            .get("path_hex")
                            .and_then(|h| h.as_str())
                            .and_then(|h| {
                                (0..h.len())
                                    .step_by(2)
                                    .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                                    .collect::<Option<Vec<u8>>>()
                            })
                            .or_else(|| m["path"].as_str().map(|p| p.as_bytes().to_vec()));
                        if let Some(b) = bytes {
                            self.add_path(&b);
                        }
                    }
                }
                Kind::Finding => {
                    if let Some(p) = &r.path {
                        self.add_path(p);
                    }
                    if let Some(id) = &r.container {
                        self.add_container(id);
                    }
                    for h in r.data["finding"]["holders"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        if let Some(n) = h["mnt_ns"].as_u64() {
                            self.add_ns(n);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn describe(key: &Key) -> String {
    match key {
        Key::Container(c) => format!("container {c}"),
        Key::Name(n) => format!("container name {n}"),
        Key::Pod(p) => format!("pod {p}"),
        Key::Path(p) => format!("path {}", String::from_utf8_lossy(p)),
        Key::Ns(n) => format!("mount namespace {n}"),
        Key::Pid(p) => format!("pid {p}"),
    }
}

/// The rows of `target`'s story, or `None` when the store knows nothing of it.
pub fn collect(target: &Target, src: &mut dyn Lookup) -> Result<Option<Related>, StoreError> {
    let mut w = Walk::default();
    let matched: Vec<String> = match target {
        Target::Container(q) => {
            let mut ids: BTreeSet<String> = BTreeSet::new();
            let exact = w.fetch(src, Key::Container(q.clone()))?;
            if !exact.is_empty() {
                ids.insert(q.clone());
            } else if q.len() >= 4 && q.bytes().all(|b| b.is_ascii_hexdigit()) {
                ids.extend(src.container_ids(q)?);
            }
            let by_name = w.fetch(src, Key::Name(q.clone()))?;
            ids.extend(by_name.iter().filter_map(|r| r.container.clone()));
            if ids.is_empty() {
                return Ok(None);
            }
            if ids.len() > 1 {
                w.notes.push(format!(
                    "{q:?} matches {} containers: {}",
                    ids.len(),
                    ids.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            for id in &ids {
                w.add_container(id);
            }
            w.learn(&exact);
            w.learn(&by_name);
            ids.into_iter().collect()
        }
        Target::Pod(p) => {
            let rows = w.fetch(src, Key::Pod(p.clone()))?;
            let ids: BTreeSet<String> = rows.iter().filter_map(|r| r.container.clone()).collect();
            if ids.is_empty() {
                return Ok(None);
            }
            for id in &ids {
                w.add_container(id);
            }
            w.learn(&rows);
            ids.into_iter().collect()
        }
        Target::Path(p) => {
            let rows = w.fetch(src, Key::Path(p.clone()))?;
            if rows.is_empty() {
                return Ok(None);
            }
            w.add_path(p);
            // The containers whose mounts include it.
            for r in &rows {
                if let Some(id) = &r.container {
                    w.add_container(id);
                }
            }
            w.learn(&rows);
            vec![String::from_utf8_lossy(p).into_owned()]
        }
        Target::Ns(n) => {
            let rows = w.fetch(src, Key::Ns(*n))?;
            if rows.is_empty() {
                return Ok(None);
            }
            w.add_ns(*n);
            w.learn(&rows);
            vec![n.to_string()]
        }
        Target::Pid(p) => {
            let rows = w.fetch(src, Key::Pid(*p))?;
            if rows.is_empty() {
                return Ok(None);
            }
            for r in &rows {
                match r.kind {
                    Kind::NsCreated | Kind::ProcessExit | Kind::ProcessFork => {
                        if let Some(n) = r.mnt_ns {
                            w.add_ns(n);
                        }
                    }
                    Kind::Finding => {
                        for h in r.data["finding"]["holders"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            let mine = h["pid"].as_u64() == Some(u64::from(*p))
                                || h["processes"].as_array().is_some_and(|ps| {
                                    ps.iter().any(|x| x["pid"].as_u64() == Some(u64::from(*p)))
                                });
                            if let (true, Some(n)) = (mine, h["mnt_ns"].as_u64()) {
                                w.add_ns(n);
                            }
                        }
                    }
                    _ => {}
                }
            }
            vec![p.to_string()]
        }
    };
    // Follow links until nothing new turns up.
    for _ in 0..6 {
        let mut fresh = false;
        for id in w.containers.clone() {
            if !w.done.contains(&Key::Container(id.clone())) {
                fresh = true;
                let rows = w.fetch(src, Key::Container(id))?;
                w.learn(&rows);
            }
        }
        for p in w.paths.clone() {
            if !w.done.contains(&Key::Path(p.clone())) {
                fresh = true;
                let rows = w.fetch(src, Key::Path(p))?;
                for r in &rows {
                    if r.kind == Kind::ContainerSeen {
                        if let Some(id) = &r.container {
                            w.add_container(id);
                        }
                    }
                }
                w.learn(&rows);
            }
        }
        for n in w.namespaces.clone() {
            if !w.done.contains(&Key::Ns(n)) {
                fresh = true;
                let rows = w.fetch(src, Key::Ns(n))?;
                w.learn(&rows);
            }
        }
        if !fresh {
            break;
        }
    }
    if w.containers.len() >= KEYS_CAP || w.paths.len() >= KEYS_CAP || w.namespaces.len() >= KEYS_CAP
    {
        w.notes.push(format!(
            "the story reaches more than {KEYS_CAP} containers, paths or namespaces; only the first are followed"
        ));
    }
    // mountleak's own starts, stops and losses while the story went on.
    let from = w.rows.values().map(|r| r.wall_ns).min();
    let to = w.rows.values().map(|r| r.wall_ns).max();
    if let (Some(from), Some(to)) = (from, to) {
        for r in src.daemon_rows(from, to)? {
            w.rows.entry(r.id).or_insert(r);
        }
    }
    Ok(Some(Related {
        rows: w.rows.into_values().collect(),
        matched,
        notes: w.notes,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::story::tests::{leak_rows, HOST, MERGED, NS};
    use super::*;

    /// The rows in memory, looked up the way the store does.
    struct Fake(Vec<Row>);

    impl Lookup for Fake {
        fn rows(&mut self, key: &Key) -> Result<(Vec<Row>, bool), StoreError> {
            let hit = |r: &Row| match key {
                Key::Container(c) => r.container.as_deref() == Some(c),
                Key::Name(n) => r.name.as_deref() == Some(n) || r.data["name"] == n.as_str(),
                Key::Pod(p) => r.pod.as_deref() == Some(p),
                Key::Path(p) => {
                    r.path.as_deref() == Some(p.as_slice())
                        || (r.kind == Kind::ContainerSeen
                            && r.data["mounts"]
                                .to_string()
                                .contains(&*String::from_utf8_lossy(p)))
                }
                Key::Ns(n) => {
                    r.mnt_ns == Some(*n)
                        || r.data["finding"]["holders"]
                            .as_array()
                            .is_some_and(|hs| hs.iter().any(|h| h["mnt_ns"] == *n))
                }
                Key::Pid(p) => {
                    r.pid == Some(*p)
                        || r.data["finding"]["holders"]
                            .as_array()
                            .is_some_and(|hs| hs.iter().any(|h| h["pid"] == *p))
                }
            };
            Ok((self.0.iter().filter(|r| hit(r)).cloned().collect(), false))
        }
        fn container_ids(&mut self, prefix: &str) -> Result<Vec<String>, StoreError> {
            let mut ids: Vec<String> = self
                .0
                .iter()
                .filter_map(|r| r.container.clone())
                .filter(|c| c.starts_with(prefix))
                .collect();
            ids.dedup();
            Ok(ids)
        }
        fn daemon_rows(&mut self, from: i64, to: i64) -> Result<Vec<Row>, StoreError> {
            Ok(self
                .0
                .iter()
                .filter(|r| {
                    r.kind as i64 >= Kind::FIRST_DAEMON_CODE && r.wall_ns >= from && r.wall_ns <= to
                })
                .cloned()
                .collect())
        }
    }

    fn ids(r: &Related) -> Vec<i64> {
        r.rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse(MERGED),
            Ok(Target::Path(MERGED.as_bytes().to_vec()))
        );
        assert_eq!(Target::parse("4026532177"), Ok(Target::Ns(4026532177)));
        assert_eq!(
            Target::parse("mnt:[4026532177]"),
            Ok(Target::Ns(4026532177))
        );
        assert_eq!(Target::parse("mnt:12"), Ok(Target::Ns(12)));
        assert_eq!(Target::parse("1234"), Ok(Target::Pid(1234)));
        assert!(Target::parse("pid:9999999999")
            .unwrap_err()
            .contains("no pid"));
        assert_eq!(
            Target::parse("shop/web-7f9c"),
            Ok(Target::Pod("shop/web-7f9c".into()))
        );
        assert_eq!(Target::parse("web"), Ok(Target::Container("web".into())));
        assert_eq!(
            Target::parse("3f9a1c"),
            Ok(Target::Container("3f9a1c".into()))
        );
        assert!(Target::parse("").is_err());
        assert!(Target::parse("a/b/c")
            .unwrap_err()
            .contains("NAMESPACE/NAME"));
        assert!(Target::parse("mnt:x").is_err());
        // All digits but no pid: a container id (prefix).
        assert_eq!(
            Target::parse("000000000000"),
            Ok(Target::Container("000000000000".into()))
        );
        assert_eq!(
            Target::parse("12345678"),
            Ok(Target::Container("12345678".into()))
        );
        assert_eq!(Target::parse("0"), Ok(Target::Container("0".into())));
    }

    #[test]
    fn a_container_name_the_path_and_the_namespace_reach_the_same_story() {
        // Row 1 (the daemon starting) is before the story begins.
        let all: Vec<i64> = (2..=15).collect();
        for target in [
            Target::Container("web".into()),
            Target::Container("c0ffee".into()),
            Target::Container("c0ff".into()),
            Target::Path(MERGED.as_bytes().to_vec()),
            Target::Ns(NS),
            Target::Pid(1234),
        ] {
            let r = collect(&target, &mut Fake(leak_rows())).unwrap().unwrap();
            assert_eq!(ids(&r), all, "{target:?}");
        }
    }

    #[test]
    fn the_host_namespace_does_not_pull_in_the_world_through_a_pid() {
        // dockerd's pid made the mount: asking about it finds its calls,
        // not the container's whole story.
        let r = collect(&Target::Pid(812), &mut Fake(leak_rows()))
            .unwrap()
            .unwrap();
        assert!(ids(&r).len() < 15);
        assert!(r.rows.iter().all(|r| r.kind != Kind::ProcessExit));
        let _ = HOST;
    }

    #[test]
    fn a_pod_reaches_its_containers_stories() {
        let mut rows = leak_rows();
        for r in rows
            .iter_mut()
            .filter(|r| r.container.as_deref() == Some("c0ffee"))
        {
            r.pod = Some("shop/web-7f9c".into());
        }
        let r = collect(&Target::Pod("shop/web-7f9c".into()), &mut Fake(rows))
            .unwrap()
            .unwrap();
        assert_eq!(r.matched, ["c0ffee"]);
        assert_eq!(ids(&r), (2..=15).collect::<Vec<i64>>());
    }

    #[test]
    fn unknown_targets_are_none() {
        for t in [
            Target::Container("nope".into()),
            Target::Pod("a/b".into()),
            Target::Path(b"/x".to_vec()),
            Target::Ns(4026539999),
            Target::Pid(7),
        ] {
            assert!(
                collect(&t, &mut Fake(leak_rows())).unwrap().is_none(),
                "{t:?}"
            );
        }
    }
}
