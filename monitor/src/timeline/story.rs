//! The story: stored rows in, a [`Timeline`] out. Pure: no store, no
//! clock (the generation time is passed in), so every sentence is unit
//! tested from rows.
//!
//! Rows are read in time order and each becomes at most one step, in plain
//! language. A few are merged: a namespace creation takes the propagation
//! change its creator made right after (`unshare --propagation private`
//! makes both), and `clone3` names the `task_newtask` it belongs to.
//! Lifelines are then drawn from the steps.
//!
//! May import: serde_json, humantime, monitor_model (path and unit
//! helpers), `super::{schema, store::Row, event}`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use monitor_model::finding::unit_from_cgroup;
use monitor_model::{ContainerHint, PathBytes};
use serde_json::Value;

use super::event::{errno_name, rfc3339_ns, unix_ns, Kind};
use super::schema::{Lifeline, Marker, Span, Step, TargetInfo, Timeline, SCHEMA};
use super::store::Row;

/// What the story is about and when it was asked.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub target: Option<TargetInfo>,
    pub generated_at_ns: i64,
    pub host: Option<String>,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    /// Caveats found while collecting (cut-off results).
    pub notes: Vec<String>,
}

/// Most lifelines drawn (the steps list everything).
const MAX_LIFELINES: usize = 60;
/// A propagation change by a namespace's creator within this long after the
/// creation is told as part of it.
const MERGE_WINDOW_NS: i64 = 2_000_000_000;

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn u(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn parse_time(v: &Value) -> Option<i64> {
    let text = v.as_str()?;
    humantime::parse_rfc3339_weak(text).ok().map(unix_ns)
}

fn path_text(bytes: &[u8]) -> String {
    PathBytes(bytes.to_vec()).to_string()
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// A process as the story names it.
#[derive(Clone, Debug, Default)]
struct Proc {
    comm: Option<String>,
    unit: Option<String>,
}

/// A namespace that held a copy of a container mount (from findings).
#[derive(Clone, Debug, Default)]
struct Holder {
    paths: BTreeSet<Vec<u8>>,
    propagation: Option<String>,
    pids: BTreeSet<u32>,
    /// From the finding: since when (unix ns) and how that is known.
    since_ns: Option<i64>,
    since_source: Option<String>,
    via: Option<String>,
    created_by: Option<u32>,
}

#[derive(Clone, Debug, Default)]
struct Container {
    name: String,
    image: Option<String>,
    /// `namespace/name` and the container's name in it.
    pod: Option<(String, Option<String>)>,
    mounts: BTreeSet<Vec<u8>>,
}

impl Container {
    fn label(&self, id: &str) -> String {
        let short = short_id(id);
        match &self.pod {
            Some((pod, Some(c))) => format!("container {c} of pod {pod} ({short})"),
            Some((pod, None)) => format!("pod {pod} sandbox ({short})"),
            None if self.name.is_empty() => format!("container {short}"),
            None => format!("container {} ({short})", self.name),
        }
    }
}

/// Everything the rows say about who is who, gathered before telling.
#[derive(Default)]
struct Registry {
    containers: BTreeMap<String, Container>,
    path_owner: HashMap<Vec<u8>, String>,
    holders: BTreeMap<u64, Holder>,
    procs: HashMap<u32, Proc>,
    /// Container mounts the story is about.
    paths: BTreeSet<Vec<u8>>,
    /// First mount / host unmount times a finding reported for each path.
    mounted_at: HashMap<Vec<u8>, i64>,
    unmounted_at: HashMap<Vec<u8>, i64>,
}

impl Registry {
    fn from_rows(rows: &[&Row]) -> Registry {
        let mut r = Registry::default();
        for row in rows {
            let d = &row.data;
            match row.kind {
                Kind::ContainerSeen => {
                    let Some(id) = row.container.clone() else {
                        continue;
                    };
                    let c = r.containers.entry(id.clone()).or_default();
                    if let Some(n) = s(d, "name").filter(|n| !n.is_empty()) {
                        c.name = n.to_string();
                    }
                    if let Some(i) = s(d, "image") {
                        c.image = Some(i.to_string());
                    }
                    if let Some(p) = d.get("pod").filter(|p| p.is_object()) {
                        let key = format!(
                            "{}/{}",
                            s(p, "namespace").unwrap_or("?"),
                            s(p, "name").unwrap_or("?")
                        );
                        c.pod = Some((key, s(p, "container").map(str::to_string)));
                    }
                    for m in d
                        .get("mounts")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(bytes) = json_path_bytes(m) {
                            r.path_owner.insert(bytes.clone(), id.clone());
                            r.paths.insert(bytes.clone());
                            c.mounts.insert(bytes);
                        }
                    }
                }
                Kind::ContainerStopped | Kind::ContainerRemoved | Kind::ContainerRemovalFailed => {
                    if let Some(id) = &row.container {
                        let c = r.containers.entry(id.clone()).or_default();
                        if c.name.is_empty() {
                            if let Some(n) = &row.name {
                                c.name = n.clone();
                            }
                        }
                    }
                }
                Kind::NsCreated => {
                    if let Some(pid) = row.pid {
                        let p = r.procs.entry(pid).or_default();
                        p.comm = p.comm.take().or(s(d, "comm").map(str::to_string));
                        p.unit = p.unit.take().or(s(d, "unit").map(str::to_string));
                    }
                    if let Some(child) = u(d, "child_pid").and_then(|c| u32::try_from(c).ok()) {
                        // A child starts as a copy of its parent.
                        let parent = row.pid.and_then(|p| r.procs.get(&p).cloned());
                        let p = r.procs.entry(child).or_default();
                        if p.comm.is_none() {
                            if let Some(parent) = parent {
                                *p = parent;
                            }
                        }
                    }
                }
                Kind::ProcessFork => {
                    if let Some(pid) = row.pid {
                        let p = r.procs.entry(pid).or_default();
                        if let Some(c) = s(d, "comm") {
                            p.comm = Some(c.to_string());
                        }
                    }
                }
                Kind::Finding => r.finding(row),
                _ => {}
            }
        }
        r
    }

    fn finding(&mut self, row: &Row) {
        let f = &row.data["finding"];
        let path = row.path.clone();
        if let Some(p) = &path {
            self.paths.insert(p.clone());
            if let Some(t) = f["mount"].get("mounted_at").and_then(parse_time) {
                self.mounted_at.entry(p.clone()).or_insert(t);
            }
            if let Some(t) = f["mount"].get("unmounted_at").and_then(parse_time) {
                self.unmounted_at.entry(p.clone()).or_insert(t);
            }
            if let Some(id) = f["container"].get("id").and_then(Value::as_str) {
                self.path_owner.insert(p.clone(), id.to_string());
                let c = self.containers.entry(id.to_string()).or_default();
                if let Some(n) = s(&f["container"], "name").filter(|n| !n.is_empty()) {
                    c.name = n.to_string();
                }
                c.mounts.insert(p.clone());
            }
        }
        for h in f["holders"].as_array().into_iter().flatten() {
            let Some(ns) = u(h, "mnt_ns") else { continue };
            let holder = self.holders.entry(ns).or_default();
            if let Some(p) = &path {
                holder.paths.insert(p.clone());
            }
            if let Some(prop) = s(h, "propagation") {
                holder.propagation = Some(prop.to_string());
            }
            if let Some(since) = h.get("since").and_then(parse_time) {
                if holder.since_ns.is_none_or(|t| since < t) {
                    holder.since_ns = Some(since);
                    holder.since_source = s(h, "since_source").map(str::to_string);
                }
            }
            if let Some(v) = s(h, "via") {
                holder.via = Some(v.to_string());
            }
            if let Some(c) = h.get("created_by").and_then(|c| u(c, "pid")) {
                holder.created_by = u32::try_from(c).ok();
            }
            let main = u(h, "pid").and_then(|p| u32::try_from(p).ok());
            if let Some(pid) = main {
                holder.pids.insert(pid);
                let p = self.procs.entry(pid).or_default();
                if let Some(c) = s(h, "comm") {
                    p.comm = Some(c.to_string());
                }
                if let Some(un) = s(h, "unit") {
                    p.unit = Some(un.to_string());
                }
            }
            for proc_ in h["processes"].as_array().into_iter().flatten() {
                let Some(pid) = u(proc_, "pid").and_then(|p| u32::try_from(p).ok()) else {
                    continue;
                };
                holder.pids.insert(pid);
                let p = self.procs.entry(pid).or_default();
                if let Some(c) = s(proc_, "comm") {
                    p.comm = Some(c.to_string());
                }
                let unit = s(proc_, "unit")
                    .map(str::to_string)
                    .or_else(|| s(proc_, "cgroup").and_then(unit_from_cgroup));
                if unit.is_some() {
                    p.unit = unit;
                }
            }
            if let Some(c) = h.get("created_by") {
                if let Some(pid) = u(c, "pid").and_then(|p| u32::try_from(p).ok()) {
                    let p = self.procs.entry(pid).or_default();
                    if p.comm.is_none() {
                        p.comm = s(c, "comm").map(str::to_string);
                    }
                }
            }
        }
    }

    /// `` `ntpd` (pid 1234, ntpd.service) ``
    fn who(&self, pid: Option<u32>, comm: Option<&str>) -> String {
        let known = pid.and_then(|p| self.procs.get(&p));
        let comm = comm
            .map(str::to_string)
            .or_else(|| known.and_then(|p| p.comm.clone()));
        let unit = known.and_then(|p| p.unit.clone());
        let mut inner = Vec::new();
        if let Some(p) = pid {
            inner.push(format!("pid {p}"));
        }
        if let Some(un) = unit {
            inner.push(un);
        }
        match comm {
            Some(c) if inner.is_empty() => format!("`{c}`"),
            Some(c) => format!("`{c}` ({})", inner.join(", ")),
            None if inner.is_empty() => "a process".into(),
            None => inner.join(", "),
        }
    }

    /// What a container mount is, for a person: "its rootfs", "the rootfs of
    /// container web (abc)", or "the docker rootfs (layer abc)".
    fn what(&self, path: &[u8], its: bool) -> String {
        let hint = ContainerHint::from_path(&PathBytes(path.to_vec()));
        let role = hint.role.unwrap_or("mount");
        match self
            .path_owner
            .get(path)
            .and_then(|id| self.containers.get(id).map(|c| (id, c)))
        {
            Some(_) if its => format!("its {role}"),
            Some((id, c)) => format!("the {role} of {}", c.label(id)),
            None => match hint.label() {
                Some(l) => format!("the {l}"),
                None => "the container mount".into(),
            },
        }
    }

    fn is_holder(&self, ns: Option<u64>) -> bool {
        ns.is_some_and(|n| self.holders.contains_key(&n))
    }
}

/// The exact bytes of a `{path, path_hex?}` JSON path (or a plain string).
fn json_path_bytes(v: &Value) -> Option<Vec<u8>> {
    if let Some(hex) = s(v, "path_hex") {
        return hex_bytes(hex);
    }
    s(v, "path")
        .or_else(|| v.as_str())
        .map(|p| p.as_bytes().to_vec())
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Builds the timeline from the related rows (any order).
pub fn build(ctx: Context, rows: &[Row]) -> Timeline {
    let mut rows: Vec<&Row> = rows.iter().collect();
    // Runs follow each other in time, and within a run the kernel's clock
    // orders exactly (wall times are converted one by one and may jitter by
    // a few ns); ids break ties in the order the daemon saw things.
    rows.sort_by_key(|r| (r.run, r.kt, r.id));
    rows.dedup_by_key(|r| r.id);
    let reg = Registry::from_rows(&rows);
    let mut steps = tell(&reg, &rows);
    steps.retain(|st| {
        ctx.since_ns.is_none_or(|t| st.time_ns >= t) && ctx.until_ns.is_none_or(|t| st.time_ns <= t)
    });
    let lifelines = draw(&reg, &steps);
    let (status, summary) = conclude(&reg, &steps);
    let mut notes = ctx.notes.clone();
    for st in &steps {
        if st.kind == "store_gap" || st.kind == "events_lost" {
            notes.push(format!("{}: {}", st.time, st.text));
        }
    }
    if lifelines.len() >= MAX_LIFELINES {
        notes.push(format!(
            "only the first {MAX_LIFELINES} lifelines are drawn; the steps list everything"
        ));
    }
    Timeline {
        schema: SCHEMA.into(),
        generated_at: rfc3339_ns(ctx.generated_at_ns),
        generator: format!("mountleak {}", env!("CARGO_PKG_VERSION")),
        host: ctx.host,
        target: ctx.target.unwrap_or(TargetInfo {
            query: String::new(),
            kind: String::new(),
            matched: Vec::new(),
        }),
        since: ctx.since_ns.map(rfc3339_ns),
        until: ctx.until_ns.map(rfc3339_ns),
        status,
        summary,
        steps,
        lifelines,
        notes,
    }
}

fn step(row: &Row, kind: &str, text: String) -> Step {
    Step {
        time: rfc3339_ns(row.wall_ns),
        time_ns: row.wall_ns,
        ktime_ns: row.kt,
        run: row.run,
        kind: kind.to_string(),
        text,
        container: row.container.clone(),
        mount: row
            .path
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        mnt_ns: row.mnt_ns,
        pid: row.pid,
        finding: None,
        events: vec![row.data.clone()],
    }
}

/// One step per row (some merged, some repeated facts left out).
fn tell(reg: &Registry, rows: &[&Row]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut consumed: HashSet<i64> = HashSet::new();
    let mut container_state: HashMap<String, String> = HashMap::new();
    let mut findings_seen: HashSet<String> = HashSet::new();
    let mut daemon_seen: HashSet<String> = HashSet::new();
    // clone/clone3 calls by child pid, so `task_newtask` can say which.
    let clone_calls: HashMap<u64, (i64, String)> = rows
        .iter()
        .filter(|r| r.kind == Kind::NsCreated && r.mnt_ns.is_none())
        .filter_map(|r| {
            Some((
                u(&r.data, "child_pid")?,
                (r.id, s(&r.data, "call")?.to_string()),
            ))
        })
        .collect();
    let newtask_children: HashSet<u64> = rows
        .iter()
        .filter(|r| r.kind == Kind::NsCreated && r.mnt_ns.is_some())
        .filter_map(|r| u(&r.data, "child_pid"))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        if consumed.contains(&row.id) {
            continue;
        }
        let d = &row.data;
        let who = || reg.who(row.pid, s(d, "comm"));
        let path = row.path.as_deref();
        let p = || path.map(path_text).unwrap_or_else(|| "?".into());
        let st = match row.kind {
            Kind::ContainerSeen => {
                let id = row.container.clone().unwrap_or_default();
                let state = s(d, "state").unwrap_or("running").to_string();
                if container_state.get(&id) == Some(&state) {
                    continue;
                }
                let first = !container_state.contains_key(&id);
                container_state.insert(id.clone(), state.clone());
                let label = reg
                    .containers
                    .get(&id)
                    .map(|c| c.label(&id))
                    .unwrap_or_else(|| format!("container {}", short_id(&id)));
                let image = s(d, "image")
                    .map(|i| format!(" from image {i}"))
                    .unwrap_or_default();
                let started = d.get("started_at").and_then(parse_time);
                let (kind, text) = match state.as_str() {
                    "running" | "created" | "paused" => {
                        let when = match started {
                            Some(t) if (row.wall_ns - t).abs() > 1_000_000_000 => {
                                format!(" (running since {})", rfc3339_ns(t))
                            }
                            _ => String::new(),
                        };
                        if first && when.is_empty() {
                            ("container_started", format!("{label} started{image}"))
                        } else {
                            ("container_seen", format!("{label} is running{image}{when}"))
                        }
                    }
                    "stopped" => ("container_seen", format!("{label} is stopped (exited, not removed)")),
                    "dead" => (
                        "container_seen",
                        format!("{label} is dead: the runtime's removal of it already failed"),
                    ),
                    other => ("container_seen", format!("{label} is {other}")),
                };
                step(row, kind, text)
            }
            Kind::ContainerStopped | Kind::ContainerRemoved | Kind::ContainerRemovalFailed => {
                let id = row.container.clone().unwrap_or_default();
                let label = reg
                    .containers
                    .get(&id)
                    .map(|c| c.label(&id))
                    .unwrap_or_else(|| format!("container {}", short_id(&id)));
                let (kind, text) = match row.kind {
                    Kind::ContainerStopped => {
                        container_state.insert(id, "stopped".into());
                        ("container_stopped", format!("{label} stopped"))
                    }
                    Kind::ContainerRemoved => {
                        container_state.insert(id, "removed".into());
                        ("container_removed", format!("{label} was removed by its runtime"))
                    }
                    _ => (
                        "container_removal_failed",
                        format!(
                            "removing {label} failed: {}",
                            s(d, "message").unwrap_or("(no message)")
                        ),
                    ),
                };
                step(row, kind, text)
            }
            Kind::Mount => {
                let ok = row_ok(d);
                let target = path.unwrap_or_default();
                let subject = reg.paths.contains(target);
                let fstype = s(d, "fstype").map(|f| format!(" ({f})")).unwrap_or_default();
                let call = s(d, "call").unwrap_or("mount");
                if !ok {
                    step(
                        row,
                        "mount_failed",
                        format!(
                            "{} could not mount {}: {}",
                            who(),
                            p(),
                            failure(d)
                        ),
                    )
                } else if subject || !reg.paths.iter().any(|x| s(d, "source").is_some_and(|src| src.as_bytes() == x.as_slice())) {
                    let what = reg.what(target, reg.path_owner.contains_key(target));
                    let how = if call == "move_mount" { " (move_mount)" } else { "" };
                    step(
                        row,
                        "mounted",
                        format!("{what}{fstype} was mounted at {} by {}{how}", p(), who()),
                    )
                } else {
                    step(
                        row,
                        "mounted",
                        format!(
                            "{} bind-mounted {} to {} (namespace {})",
                            who(),
                            s(d, "source").unwrap_or("?"),
                            p(),
                            row.mnt_ns.map(|n| n.to_string()).unwrap_or_default()
                        ),
                    )
                }
            }
            Kind::NsCreated => {
                if row.mnt_ns.is_none() {
                    // The clone call itself: told with its task_newtask.
                    let child = u(d, "child_pid");
                    if child.is_some_and(|c| newtask_children.contains(&c)) {
                        continue;
                    }
                    step(
                        row,
                        "ns_created",
                        format!(
                            "{} started pid {} in a new mount namespace with {}",
                            who(),
                            child.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                            s(d, "call").unwrap_or("clone")
                        ),
                    )
                } else {
                    let ns = row.mnt_ns.unwrap_or_default();
                    let mut via = s(d, "call").unwrap_or("unshare").to_string();
                    let child = u(d, "child_pid");
                    if let Some((id, call)) = child.and_then(|c| clone_calls.get(&c)) {
                        via = call.clone();
                        consumed.insert(*id);
                    }
                    // The creator (or, for clone, the child) setting the
                    // propagation right after.
                    let setter: BTreeSet<u64> = [row.pid.map(u64::from), child].into_iter().flatten().collect();
                    let prop = rows[i + 1..]
                        .iter()
                        .take_while(|r| r.wall_ns - row.wall_ns <= MERGE_WINDOW_NS)
                        .find(|r| {
                            r.kind == Kind::Propagation
                                && r.mnt_ns == Some(ns)
                                && r.pid.is_some_and(|p| setter.contains(&u64::from(p)))
                                && row_ok(&r.data)
                        });
                    let mut text = format!(
                        "{} created mount namespace {ns} with {via}",
                        who()
                    );
                    if let Some(parent) = u(d, "parent_mnt_ns") {
                        text.push_str(&format!(" (a copy of namespace {parent})"));
                    }
                    let mut events = vec![row.data.clone()];
                    if let Some(pr) = prop {
                        consumed.insert(pr.id);
                        events.push(pr.data.clone());
                        let name = s(&pr.data, "propagation").unwrap_or("?");
                        let target = pr.path.as_deref().map(path_text).unwrap_or_default();
                        if target == "/" {
                            text.push_str(&format!(", {name} propagation"));
                        } else {
                            text.push_str(&format!(", {name} propagation on {target}"));
                        }
                    } else if let Some(prop) = reg.holders.get(&ns).and_then(|h| h.propagation.clone()) {
                        text.push_str(&format!(", {prop} propagation (as later read from /proc)"));
                    }
                    if let Some(h) = reg.holders.get(&ns) {
                        let copied: Vec<String> = h
                            .paths
                            .iter()
                            .filter(|p| reg.mounted_at.get(*p).is_none_or(|t| *t <= row.wall_ns))
                            .map(|p| path_text(p))
                            .collect();
                        if !copied.is_empty() {
                            text.push_str(&format!(", copying {}", copied.join(", ")));
                        }
                    }
                    let mut st = step(row, "ns_created", text);
                    st.events = events;
                    st
                }
            }
            Kind::Propagation => {
                let name = s(d, "propagation").unwrap_or("?");
                let rec = if d.get("recursive").and_then(Value::as_bool) == Some(true) {
                    " (recursively)"
                } else {
                    ""
                };
                step(
                    row,
                    "propagation_changed",
                    format!(
                        "{} made {} {name}{rec} in namespace {}",
                        who(),
                        p(),
                        row.mnt_ns.map(|n| n.to_string()).unwrap_or_default()
                    ),
                )
            }
            Kind::Umount => {
                let lazy = u(d, "flags").is_some_and(|f| f & 2 != 0);
                let lazy = if lazy { " lazily (MNT_DETACH)" } else { "" };
                if !row_ok(d) {
                    step(
                        row,
                        "umount_failed",
                        format!("{} could not unmount {}: {}", who(), p(), failure(d)),
                    )
                } else if reg.is_holder(row.mnt_ns) {
                    step(
                        row,
                        "copy_unmounted",
                        format!(
                            "{} unmounted the copy of {} in namespace {}{lazy}",
                            who(),
                            p(),
                            row.mnt_ns.unwrap_or_default()
                        ),
                    )
                } else {
                    step(
                        row,
                        "host_unmounted",
                        format!(
                            "the host unmounted {}{lazy} ({}, namespace {})",
                            p(),
                            who(),
                            row.mnt_ns.map(|n| n.to_string()).unwrap_or_default()
                        ),
                    )
                }
            }
            Kind::Rmdir => {
                if row_ok(d) {
                    step(
                        row,
                        "rmdir",
                        format!("{} removed the mountpoint directory {}", who(), p()),
                    )
                } else {
                    step(
                        row,
                        "rmdir_failed",
                        format!(
                            "{} could not remove the mountpoint directory {}: {}",
                            who(),
                            p(),
                            failure(d)
                        ),
                    )
                }
            }
            Kind::ProcessExit => {
                let held: Vec<String> = row
                    .mnt_ns
                    .and_then(|n| reg.holders.get(&n))
                    .filter(|h| row.pid.is_some_and(|p| h.pids.contains(&p)))
                    .map(|h| h.paths.iter().map(|p| path_text(p)).collect())
                    .unwrap_or_default();
                let tail = if held.is_empty() {
                    String::new()
                } else {
                    format!("; it held the copy of {}", held.join(", "))
                };
                step(
                    row,
                    "process_exited",
                    format!(
                        "{} exited (mount namespace {}){tail}",
                        who(),
                        row.mnt_ns.unwrap_or_default()
                    ),
                )
            }
            Kind::ProcessFork => step(
                row,
                "process_forked",
                format!(
                    "{} was forked by pid {} in mount namespace {}",
                    who(),
                    u(d, "parent").unwrap_or_default(),
                    row.mnt_ns.unwrap_or_default()
                ),
            ),
            Kind::Finding => {
                let f = &d["finding"];
                let key = format!(
                    "{}|{}|{}|{}",
                    row.run,
                    s(f, "id").unwrap_or(""),
                    s(f, "kind").unwrap_or(""),
                    f["holders"]
                );
                if !findings_seen.insert(key) {
                    continue;
                }
                let mut st = finding_step(reg, row, f);
                st.finding = s(f, "id").map(str::to_string);
                st
            }
            Kind::Daemon => {
                let notice = s(d, "notice").unwrap_or("");
                let message = s(d, "message").unwrap_or("");
                let key = format!("{}|{notice}|{message}", row.run);
                if notice == "runtime" && !daemon_seen.insert(key) {
                    continue;
                }
                let (kind, text) = match notice {
                    "ready" => (
                        "daemon_started",
                        format!(
                            "mountleak started watching ({} probes)",
                            d["fields"].get("probes").and_then(Value::as_str).unwrap_or("?")
                        ),
                    ),
                    "stopped" => (
                        "daemon_stopped",
                        "mountleak stopped; nothing was recorded until it started again".to_string(),
                    ),
                    "lost" => (
                        "events_lost",
                        format!(
                            "{message}: steps around here may be missing (mountleak re-read /proc, so its findings stay right)"
                        ),
                    ),
                    "degraded" => ("daemon_degraded", format!("mountleak {message}")),
                    _ => ("daemon_notice", format!("mountleak: {message}")),
                };
                step(row, kind, text)
            }
            Kind::Remedy => {
                let st_ = &d["step"];
                let what = s(st_, "text").unwrap_or("a remedy");
                let status = s(st_, "status").unwrap_or("done");
                let detail = s(st_, "detail")
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default();
                let mut st = step(
                    row,
                    "remedy_applied",
                    format!(
                        "`mountleak fix` for {}: {what} → {status}{detail}",
                        s(d, "finding").unwrap_or("?")
                    ),
                );
                st.finding = s(d, "finding").map(str::to_string);
                st
            }
            Kind::StoreGap => step(
                row,
                "store_gap",
                format!(
                    "the event store could not keep {} events from {} on ({}): the history has a gap here",
                    u(d, "dropped").unwrap_or_default(),
                    s(d, "from").unwrap_or("?"),
                    s(d, "reason").unwrap_or("?")
                ),
            ),
        };
        steps.push(st);
    }
    steps
}

fn row_ok(d: &Value) -> bool {
    d.get("ret").and_then(Value::as_i64).unwrap_or(0) >= 0
}

/// `EBUSY (device or resource busy)`.
fn failure(d: &Value) -> String {
    let errno = d
        .get("ret")
        .and_then(Value::as_i64)
        .map(|r| -r)
        .unwrap_or_default();
    let name = errno_name(errno);
    let what = match errno {
        16 => " (device or resource busy)",
        22 => " (invalid argument: not a mount point, or a locked copy)",
        1 | 13 => " (not permitted)",
        _ => "",
    };
    format!("{name}{what}")
}

fn holder_text(reg: &Registry, h: &Value) -> String {
    let ns = u(h, "mnt_ns").unwrap_or_default();
    let pid = u(h, "pid").and_then(|p| u32::try_from(p).ok());
    let who = if pid.is_some() || h.get("comm").is_some_and(Value::is_string) {
        format!(" held by {}", reg.who(pid, s(h, "comm")))
    } else if let Some(n) = h["nsfs_mounts"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
    {
        format!(" kept alive by the nsfs mount {n} (no process)")
    } else {
        String::new()
    };
    let hold = match s(h, "hold") {
        Some("copy") | None => String::new(),
        Some(other) => format!(" (its {other} is inside)"),
    };
    let prop = s(h, "propagation")
        .filter(|p| *p != "unknown")
        .map(|p| format!(", {p} propagation"))
        .unwrap_or_default();
    format!("namespace {ns}{who}{hold}{prop}")
}

fn finding_step(reg: &Registry, row: &Row, f: &Value) -> Step {
    let id = s(f, "id").unwrap_or("ML-?");
    let kind = s(f, "kind").unwrap_or("finding");
    let path = row
        .path
        .as_deref()
        .map(path_text)
        .unwrap_or_else(|| "(a detached filesystem)".into());
    let holders: Vec<String> = f["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| holder_text(reg, h))
        .collect();
    let held = if holders.is_empty() {
        String::new()
    } else {
        holders.join("; ")
    };
    let consequence = s(&f["consequence"], "text").unwrap_or("");
    let text = match kind {
        "risk" => format!(
            "{id} risk: {path} was copied into {held}; the host's umount will not reach the copy"
        ),
        "leak" => format!(
            "{id} leak: the host no longer has {path}, but the copy survived in {held}. {consequence}"
        ),
        "failed_removal" => {
            let call = &f["failed_call"];
            let by = reg.who(
                u(call, "pid").and_then(|p| u32::try_from(p).ok()),
                s(call, "comm"),
            );
            let errno = call.get("errno").and_then(Value::as_i64).unwrap_or(16);
            let msg = s(call, "message")
                .map(|m| format!(" (\"{m}\")"))
                .unwrap_or_default();
            format!(
                "{id} removal failed: {} of {path} by {by} failed with {}{msg}; held by {held}",
                s(call, "syscall").unwrap_or("removal"),
                errno_name(errno)
            )
        }
        "removal_warning" => format!(
            "{id} removal warning: {}",
            s(f, "summary").unwrap_or("removing it would fail or leave something pinned")
        ),
        "resolved" => format!(
            "{id} resolved: {path} is no longer held ({})",
            s(f, "resolution").unwrap_or("released")
        ),
        other => format!("{id} {other}: {}", s(f, "summary").unwrap_or("")),
    };
    let mut st = step(row, kind, text.trim_end().to_string());
    if st.mnt_ns.is_none() {
        st.mnt_ns = f["holders"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|h| u(h, "mnt_ns"));
    }
    if st.pid.is_none() {
        st.pid = f["holders"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|h| u(h, "pid"))
            .and_then(|p| u32::try_from(p).ok());
    }
    st
}

fn finding_of(st: &Step) -> Option<&Value> {
    st.events
        .first()
        .map(|e| &e["finding"])
        .filter(|f| f.is_object())
}

fn holder_namespaces(st: &Step) -> Vec<u64> {
    finding_of(st)
        .and_then(|f| f["holders"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|h| u(h, "mnt_ns"))
        .collect()
}

const FINDING_KINDS: [&str; 5] = [
    "risk",
    "leak",
    "failed_removal",
    "removal_warning",
    "resolved",
];

fn marker(st: &Step, label: impl Into<String>) -> Marker {
    Marker {
        kind: st.kind.clone(),
        time_ns: st.time_ns,
        label: label.into(),
        finding: st.finding.clone(),
    }
}

fn marker_label(st: &Step) -> String {
    match &st.finding {
        Some(id) => format!("{id} {}", st.kind.replace('_', " ")),
        None => st.kind.replace('_', " "),
    }
}

/// Leak windows of a path: from the host's umount (or the leak finding) to
/// the resolution (`None`: still open at the last step).
fn leak_windows(steps: &[Step], path: &str) -> Vec<(i64, Option<i64>, BTreeSet<u64>)> {
    let mut out: Vec<(i64, Option<i64>, BTreeSet<u64>)> = Vec::new();
    let mut open: Option<(i64, BTreeSet<u64>)> = None;
    let mut last_host_umount: Option<i64> = None;
    for st in steps.iter().filter(|st| st.mount.as_deref() == Some(path)) {
        match st.kind.as_str() {
            "host_unmounted" => last_host_umount = Some(st.time_ns),
            "mounted" => last_host_umount = None,
            "leak" => {
                let ns: BTreeSet<u64> = holder_namespaces(st).into_iter().collect();
                match &mut open {
                    Some((_, set)) => set.extend(ns),
                    None => {
                        let start = last_host_umount
                            .filter(|t| *t <= st.time_ns)
                            .unwrap_or(st.time_ns);
                        open = Some((start, ns));
                    }
                }
            }
            "resolved" => {
                if let Some((start, ns)) = open.take() {
                    out.push((start, Some(st.time_ns), ns));
                }
            }
            _ => {}
        }
    }
    if let Some((start, ns)) = open {
        out.push((start, None, ns));
    }
    out
}

/// The lifelines: containers, their mounts, each namespace holding a copy
/// followed by its processes.
fn draw(reg: &Registry, steps: &[Step]) -> Vec<Lifeline> {
    let mut lines = Vec::new();
    let first = |pred: &dyn Fn(&Step) -> bool| steps.iter().find(|s| pred(s)).map(|s| s.time_ns);

    // Containers.
    let mut container_ids: BTreeSet<String> = steps
        .iter()
        .filter(|s| s.kind.starts_with("container_"))
        .filter_map(|s| s.container.clone())
        .collect();
    container_ids.extend(
        steps
            .iter()
            .filter_map(|s| s.mount.as_ref())
            .filter_map(|m| reg.path_owner.get(m.as_bytes()).cloned()),
    );
    for id in &container_ids {
        let mine: Vec<&Step> = steps
            .iter()
            .filter(|s| s.kind.starts_with("container_") && s.container.as_deref() == Some(id))
            .collect();
        let label = reg
            .containers
            .get(id)
            .map(|c| c.label(id))
            .unwrap_or_else(|| format!("container {}", short_id(id)));
        let start = mine
            .iter()
            .find(|s| s.kind == "container_started")
            .map(|s| s.time_ns);
        let stopped = mine
            .iter()
            .find(|s| s.kind == "container_stopped")
            .map(|s| s.time_ns);
        let removed = mine
            .iter()
            .find(|s| s.kind == "container_removed")
            .map(|s| s.time_ns);
        let mut spans = Vec::new();
        let seen_stopped = mine
            .iter()
            .any(|s| s.kind == "container_seen" && s.text.contains("is stopped"));
        if stopped.is_some() || !seen_stopped {
            spans.push(Span {
                kind: "running".into(),
                start_ns: start,
                end_ns: stopped.or(removed),
                label: "running".into(),
            });
        }
        let stop_start = stopped.or_else(|| {
            mine.iter()
                .find(|s| s.kind == "container_seen" && s.text.contains("is stopped"))
                .map(|s| s.time_ns)
        });
        if let Some(t) = stop_start {
            spans.push(Span {
                kind: "stopped".into(),
                start_ns: Some(t),
                end_ns: removed,
                label: "stopped, not removed".into(),
            });
        }
        let markers = mine.iter().map(|s| marker(s, marker_label(s))).collect();
        let detail = reg
            .containers
            .get(id)
            .and_then(|c| c.image.clone())
            .map(|i| format!("image {i}"));
        lines.push(Lifeline {
            id: format!("container:{id}"),
            kind: "container".into(),
            label,
            detail,
            start_ns: start,
            end_ns: removed,
            spans,
            markers,
        });
    }

    // Mounts.
    let paths: BTreeSet<String> = steps
        .iter()
        .filter(|s| {
            matches!(
                s.kind.as_str(),
                "mounted"
                    | "host_unmounted"
                    | "umount_failed"
                    | "rmdir"
                    | "rmdir_failed"
                    | "copy_unmounted"
            ) || FINDING_KINDS.contains(&s.kind.as_str())
        })
        .filter_map(|s| s.mount.clone())
        .filter(|m| reg.paths.contains(m.as_bytes()))
        .collect();
    let mut all_windows: BTreeMap<u64, Vec<(i64, Option<i64>, String)>> = BTreeMap::new();
    for path in &paths {
        let on = |s: &Step| s.mount.as_deref() == Some(path.as_str());
        let mounted = first(&|s| on(s) && s.kind == "mounted")
            .or_else(|| reg.mounted_at.get(path.as_bytes()).copied());
        let unmounted = steps
            .iter()
            .filter(|s| {
                on(s) && s.kind == "host_unmounted" && mounted.is_none_or(|m| s.time_ns >= m)
            })
            .map(|s| s.time_ns)
            .next()
            .or_else(|| reg.unmounted_at.get(path.as_bytes()).copied());
        let windows = leak_windows(steps, path);
        let mut spans = vec![Span {
            kind: "mounted".into(),
            start_ns: mounted,
            end_ns: unmounted.or_else(|| windows.first().map(|w| w.0)),
            label: "mounted in the host".into(),
        }];
        for (start, end, ns) in &windows {
            spans.push(Span {
                kind: "leak".into(),
                start_ns: Some(*start),
                end_ns: *end,
                label: format!(
                    "leak: gone from the host, alive in namespace {}",
                    ns.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
            });
            for n in ns {
                all_windows
                    .entry(*n)
                    .or_default()
                    .push((*start, *end, path.clone()));
            }
        }
        let end = match windows.last() {
            Some((_, end, _)) => *end,
            None => unmounted,
        };
        let markers = steps
            .iter()
            .filter(|s| on(s) && s.kind != "mounted")
            .map(|s| marker(s, marker_label(s)))
            .collect();
        let hint = ContainerHint::from_path(&PathBytes(path.as_bytes().to_vec()));
        lines.push(Lifeline {
            id: format!("mount:{path}"),
            kind: "mount".into(),
            label: format!("mount {}", path_text(path.as_bytes())),
            detail: hint.label(),
            start_ns: mounted,
            end_ns: end,
            spans,
            markers,
        });
    }

    // Namespaces holding copies, each followed by its processes.
    let mut namespaces: BTreeSet<u64> = steps
        .iter()
        .filter(|s| FINDING_KINDS.contains(&s.kind.as_str()))
        .flat_map(holder_namespaces)
        .collect();
    namespaces.extend(
        steps
            .iter()
            .filter(|s| s.kind == "ns_created")
            .filter_map(|s| s.mnt_ns),
    );
    for ns in namespaces {
        let holder = reg.holders.get(&ns);
        let in_ns = |s: &Step| s.mnt_ns == Some(ns);
        let created = first(&|s| s.kind == "ns_created" && in_ns(s));
        let start = created.or_else(|| holder.and_then(|h| h.since_ns));
        let procs: BTreeSet<u32> = holder
            .map(|h| h.pids.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(
                steps
                    .iter()
                    .filter(|s| {
                        in_ns(s)
                            && matches!(
                                s.kind.as_str(),
                                "ns_created" | "process_exited" | "process_forked"
                            )
                    })
                    .filter_map(|s| s.pid),
            )
            .collect();
        let exits: HashMap<u32, i64> = steps
            .iter()
            .filter(|s| s.kind == "process_exited" && in_ns(s))
            .filter_map(|s| Some((s.pid?, s.time_ns)))
            .collect();
        let all_exited = !procs.is_empty() && procs.iter().all(|p| exits.contains_key(p));
        let end = all_exited.then(|| exits.values().copied().max()).flatten();
        let held_paths: Vec<String> = holder
            .map(|h| {
                h.paths
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut spans = Vec::new();
        if !held_paths.is_empty() {
            let first_risk = first(&|s| {
                FINDING_KINDS.contains(&s.kind.as_str()) && holder_namespaces(s).contains(&ns)
            });
            let held_from = created.or(holder.and_then(|h| h.since_ns)).or(first_risk);
            let released = steps
                .iter()
                .filter(|s| {
                    (s.kind == "resolved"
                        && s.mount.as_ref().is_some_and(|m| held_paths.contains(m)))
                        || (s.kind == "copy_unmounted" && in_ns(s))
                })
                .map(|s| s.time_ns)
                .filter(|t| held_from.is_none_or(|h| *t >= h))
                .max();
            spans.push(Span {
                kind: "held".into(),
                start_ns: held_from,
                end_ns: released.or(end),
                label: format!("holds a copy of {}", held_paths.join(", ")),
            });
        }
        for (start, end, path) in all_windows.get(&ns).into_iter().flatten() {
            spans.push(Span {
                kind: "leak".into(),
                start_ns: Some(*start),
                end_ns: *end,
                label: format!("leak: only this copy of {path} is left"),
            });
        }
        let markers = steps
            .iter()
            .filter(|s| {
                (in_ns(s)
                    && matches!(
                        s.kind.as_str(),
                        "ns_created" | "propagation_changed" | "copy_unmounted"
                    ))
                    || (FINDING_KINDS.contains(&s.kind.as_str())
                        && (holder_namespaces(s).contains(&ns)
                            || (s.kind == "resolved"
                                && s.mount.as_ref().is_some_and(|m| held_paths.contains(m)))))
            })
            .map(|s| marker(s, marker_label(s)))
            .collect();
        let creator = steps
            .iter()
            .find(|s| s.kind == "ns_created" && in_ns(s))
            .and_then(|s| s.pid);
        let main = creator.or_else(|| holder.and_then(|h| h.pids.iter().next().copied()));
        let detail = {
            let mut parts = Vec::new();
            if let Some(p) = holder.and_then(|h| h.propagation.clone()) {
                parts.push(format!("{p} propagation"));
            }
            if let Some(pid) = main {
                parts.push(format!("made by {}", reg.who(Some(pid), None)));
            }
            if created.is_none() {
                if let Some(src) = holder.and_then(|h| h.since_source.clone()) {
                    parts.push(format!("start {src}"));
                }
            }
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        lines.push(Lifeline {
            id: format!("mnt_ns:{ns}"),
            kind: "namespace".into(),
            label: format!("mount namespace {ns}"),
            detail,
            start_ns: start,
            end_ns: end,
            spans,
            markers,
        });
        for pid in procs {
            let born = steps
                .iter()
                .find(|s| {
                    (s.kind == "ns_created" && in_ns(s) && s.pid == Some(pid))
                        || (s.kind == "process_forked" && s.pid == Some(pid))
                })
                .map(|s| s.time_ns);
            let exit = exits.get(&pid).copied();
            let markers = steps
                .iter()
                .filter(|s| {
                    s.pid == Some(pid)
                        && matches!(
                            s.kind.as_str(),
                            "ns_created" | "process_exited" | "process_forked"
                        )
                })
                .map(|s| marker(s, marker_label(s)))
                .collect();
            lines.push(Lifeline {
                id: format!("pid:{pid}"),
                kind: "process".into(),
                label: format!("process {}", reg.who(Some(pid), None)),
                detail: Some(format!("in mount namespace {ns}")),
                start_ns: born,
                end_ns: exit,
                spans: vec![Span {
                    kind: "alive".into(),
                    start_ns: born,
                    end_ns: exit,
                    label: if exit.is_some() {
                        "alive until it exited".into()
                    } else {
                        "alive".into()
                    },
                }],
                markers,
            });
        }
    }
    lines.truncate(MAX_LIFELINES);
    lines
}

/// How things stood at the last step, in one word and one line.
fn conclude(reg: &Registry, steps: &[Step]) -> (String, String) {
    let mut last: BTreeMap<String, &Step> = BTreeMap::new();
    for st in steps
        .iter()
        .filter(|s| FINDING_KINDS.contains(&s.kind.as_str()))
    {
        last.insert(st.mount.clone().unwrap_or_default(), st);
    }
    let end = steps.last().map(|s| s.time.clone()).unwrap_or_default();
    let pick = |kind: &str| last.values().find(|s| s.kind == kind).copied();
    if let Some(st) = pick("leak") {
        let held = finding_of(st)
            .and_then(|f| f["holders"].as_array())
            .map(|a| {
                a.iter()
                    .map(|h| holder_text(reg, h))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let path = st.mount.as_deref().unwrap_or("?");
        return (
            "leaking".into(),
            format!("{path} leaks: it survives in {held} (since {}, still so at the last record, {end})", st.time),
        );
    }
    if let Some(st) = pick("failed_removal") {
        return (
            "removal_failed".into(),
            format!(
                "the removal of {} failed at {}; not resolved at the last record ({end})",
                st.mount.as_deref().unwrap_or("?"),
                st.time
            ),
        );
    }
    if let Some(st) = pick("risk").or_else(|| pick("removal_warning")) {
        return (
            "at_risk".into(),
            format!("{} is copied where the host's umount will not reach it (since {}); no leak yet at the last record ({end})", st.mount.as_deref().unwrap_or("?"), st.time),
        );
    }
    if let Some(st) = pick("resolved") {
        let how = finding_of(st)
            .and_then(|f| s(f, "resolution"))
            .unwrap_or("released");
        return ("resolved".into(), format!("resolved at {}: {how}", st.time));
    }
    (
        "no_leak_seen".into(),
        "no risk, leak or failed removal was recorded for it".into(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub const T0: i64 = 1_795_000_000_000_000_000;
    pub const MERGED: &str = "/var/lib/docker/overlay2/3f9a1c0e7b2d/merged";
    pub const NS: u64 = 4026532177;
    pub const HOST: u64 = 4026531841;

    fn row(id: i64, secs: f64, kind: Kind, data: Value) -> Row {
        let wall = T0 + (secs * 1e9) as i64;
        Row {
            id,
            run: 1,
            wall_ns: wall,
            kt: (secs * 1e9) as i64,
            kind,
            pid: u(&data, "pid").map(|p| p as u32),
            mnt_ns: u(&data, "mnt_ns"),
            path: s(&data, "path").map(|p| p.as_bytes().to_vec()),
            container: s(&data, "id").map(str::to_string),
            name: s(&data, "name").map(str::to_string),
            pod: None,
            data,
        }
    }

    fn finding(id: i64, secs: f64, kind: &str, holders: Value, extra: Value) -> Row {
        let mut f = json!({
            "type": "finding", "id": "ML-1", "kind": kind, "summary": "s",
            "mount": {"path": MERGED, "fstype": "overlay",
                      "mounted_at": rfc3339_ns(T0 + 1_000_000_000)},
            "container": {"runtime": "docker", "id": "c0ffee", "name": "web"},
            "holders": holders,
            "consequence": {"kind": "detached_on_removal", "text": "Kernel 6.18: the copy is detached when the runtime removes the mountpoint directory."},
            "remedy": [],
        });
        if let (Some(o), Some(e)) = (f.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        let mut r = row(
            id,
            secs,
            Kind::Finding,
            json!({"type": "finding", "finding": f}),
        );
        r.path = Some(MERGED.as_bytes().to_vec());
        r.container = Some("c0ffee".into());
        r
    }

    fn holder() -> Value {
        json!([{"pid": 1234, "comm": "ntpd", "unit": "ntpd.service", "mnt_ns": NS, "hold": "copy",
                "propagation": "private", "since": rfc3339_ns(T0 + 3_000_000_000), "since_source": "observed",
                "via": "unshare", "processes": [{"pid": 1234, "comm": "ntpd", "unit": "ntpd.service", "uid": 0}]}])
    }

    /// The whole story of the README: a container, ntpd copying its rootfs,
    /// the host's umount, the leak, a failed removal, the holder's exit.
    pub fn leak_rows() -> Vec<Row> {
        vec![
            row(
                1,
                0.0,
                Kind::Daemon,
                json!({"type": "daemon", "notice": "ready", "message": "watching", "fields": {"probes": "syscalls"}}),
            ),
            row(
                2,
                1.0,
                Kind::ContainerSeen,
                json!({"type": "container_seen", "id": "c0ffee", "name": "web", "image": "nginx:1.25",
                "state": "running", "runtime": "docker", "mounts": [{"path": MERGED}]}),
            ),
            row(
                3,
                1.0,
                Kind::Mount,
                json!({"type": "mount", "call": "mount", "pid": 812, "comm": "dockerd", "mnt_ns": HOST,
                "path": MERGED, "fstype": "overlay", "source": "overlay", "ret": 0}),
            ),
            row(
                4,
                3.0,
                Kind::NsCreated,
                json!({"type": "ns_created", "call": "unshare", "pid": 1234, "comm": "ntpd",
                "unit": "ntpd.service", "mnt_ns": NS, "parent_mnt_ns": HOST, "ret": 0}),
            ),
            row(
                5,
                3.001,
                Kind::Propagation,
                json!({"type": "propagation", "call": "mount", "pid": 1234, "comm": "ntpd",
                "mnt_ns": NS, "path": "/", "propagation": "private", "recursive": true, "ret": 0}),
            ),
            finding(6, 5.0, "risk", holder(), json!({})),
            row(
                7,
                10.0,
                Kind::ContainerStopped,
                json!({"type": "container_stopped", "id": "c0ffee", "runtime": "docker"}),
            ),
            row(
                8,
                10.5,
                Kind::Umount,
                json!({"type": "umount", "call": "umount", "pid": 812, "comm": "dockerd", "mnt_ns": HOST,
                "path": MERGED, "flags": 0, "ret": 0}),
            ),
            finding(9, 10.5, "leak", holder(), json!({})),
            row(
                10,
                11.0,
                Kind::Rmdir,
                json!({"type": "rmdir", "call": "rmdir", "pid": 812, "comm": "dockerd", "mnt_ns": HOST,
                "path": MERGED, "ret": -16}),
            ),
            finding(
                11,
                11.0,
                "failed_removal",
                holder(),
                json!({"failed_call": {"syscall": "rmdir", "pid": 812, "comm": "dockerd", "errno": 16, "path": MERGED}}),
            ),
            row(
                12,
                12.0,
                Kind::ContainerRemovalFailed,
                json!({"type": "container_removal_failed", "id": "c0ffee", "runtime": "docker",
                "message": "device or resource busy"}),
            ),
            row(
                13,
                20.0,
                Kind::ProcessExit,
                json!({"type": "process_exit", "pid": 1234, "mnt_ns": NS}),
            ),
            finding(
                14,
                20.0,
                "resolved",
                json!([]),
                json!({"resolution": "the holder exited"}),
            ),
            row(
                15,
                21.0,
                Kind::ContainerRemoved,
                json!({"type": "container_removed", "id": "c0ffee", "runtime": "docker"}),
            ),
        ]
    }

    pub fn ctx() -> Context {
        Context {
            target: Some(TargetInfo {
                query: "web".into(),
                kind: "container".into(),
                matched: vec!["c0ffee".into()],
            }),
            generated_at_ns: T0 + 30_000_000_000,
            ..Context::default()
        }
    }

    pub fn leak_timeline() -> Timeline {
        build(ctx(), &leak_rows())
    }

    fn texts(t: &Timeline) -> Vec<String> {
        t.steps
            .iter()
            .map(|s| format!("{}: {}", s.kind, s.text))
            .collect()
    }

    #[test]
    fn the_story_is_told_in_order_in_plain_language() {
        let t = leak_timeline();
        let lines = texts(&t);
        let expected = [
            "daemon_started: mountleak started watching (syscalls probes)",
            "container_started: container web (c0ffee) started from image nginx:1.25",
            "mounted: its rootfs (overlay) was mounted at /var/lib/docker/overlay2/3f9a1c0e7b2d/merged by `dockerd` (pid 812)",
            "ns_created: `ntpd` (pid 1234, ntpd.service) created mount namespace 4026532177 with unshare (a copy of namespace 4026531841), private propagation, copying /var/lib/docker/overlay2/3f9a1c0e7b2d/merged",
            "risk: ML-1 risk: /var/lib/docker/overlay2/3f9a1c0e7b2d/merged was copied into namespace 4026532177 held by `ntpd` (pid 1234, ntpd.service), private propagation; the host's umount will not reach the copy",
            "container_stopped: container web (c0ffee) stopped",
            "host_unmounted: the host unmounted /var/lib/docker/overlay2/3f9a1c0e7b2d/merged (`dockerd` (pid 812), namespace 4026531841)",
            "leak: ML-1 leak: the host no longer has /var/lib/docker/overlay2/3f9a1c0e7b2d/merged, but the copy survived in namespace 4026532177 held by `ntpd` (pid 1234, ntpd.service), private propagation. Kernel 6.18: the copy is detached when the runtime removes the mountpoint directory.",
            "rmdir_failed: `dockerd` (pid 812) could not remove the mountpoint directory /var/lib/docker/overlay2/3f9a1c0e7b2d/merged: EBUSY (device or resource busy)",
            "failed_removal: ML-1 removal failed: rmdir of /var/lib/docker/overlay2/3f9a1c0e7b2d/merged by `dockerd` (pid 812) failed with EBUSY; held by namespace 4026532177 held by `ntpd` (pid 1234, ntpd.service), private propagation",
            "container_removal_failed: removing container web (c0ffee) failed: device or resource busy",
            "process_exited: `ntpd` (pid 1234, ntpd.service) exited (mount namespace 4026532177); it held the copy of /var/lib/docker/overlay2/3f9a1c0e7b2d/merged",
            "resolved: ML-1 resolved: /var/lib/docker/overlay2/3f9a1c0e7b2d/merged is no longer held (the holder exited)",
            "container_removed: container web (c0ffee) was removed by its runtime",
        ];
        assert_eq!(lines, expected);
        assert_eq!(t.status, "resolved");
        assert!(t.summary.contains("the holder exited"), "{}", t.summary);
        // The propagation change was told with the creation.
        assert_eq!(t.steps[3].events.len(), 2);
    }

    #[test]
    fn lifelines_show_the_container_its_mount_the_namespace_and_the_holder() {
        let t = leak_timeline();
        let ids: Vec<&str> = t.lifelines.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "container:c0ffee",
                &format!("mount:{MERGED}"),
                &format!("mnt_ns:{NS}"),
                "pid:1234"
            ]
        );
        let mount = &t.lifelines[1];
        let leak = mount.spans.iter().find(|s| s.kind == "leak").unwrap();
        assert_eq!(leak.start_ns, Some(T0 + 10_500_000_000));
        assert_eq!(leak.end_ns, Some(T0 + 20_000_000_000));
        let kinds: Vec<&str> = mount.markers.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "risk",
                "host_unmounted",
                "leak",
                "rmdir_failed",
                "failed_removal",
                "resolved"
            ]
        );
        let ns = &t.lifelines[2];
        assert_eq!(ns.start_ns, Some(T0 + 3_000_000_000));
        assert_eq!(
            ns.end_ns,
            Some(T0 + 20_000_000_000),
            "its only process exited"
        );
        assert!(ns.spans.iter().any(|s| s.kind == "leak"));
        let container = &t.lifelines[0];
        assert_eq!(
            container
                .spans
                .iter()
                .map(|s| s.kind.as_str())
                .collect::<Vec<_>>(),
            ["running", "stopped"]
        );
        assert_eq!(container.end_ns, Some(T0 + 21_000_000_000));
        let pid = &t.lifelines[3];
        assert_eq!(pid.end_ns, Some(T0 + 20_000_000_000));
        assert_eq!(pid.label, "process `ntpd` (pid 1234, ntpd.service)");
    }

    #[test]
    fn an_open_leak_is_the_conclusion() {
        let rows: Vec<Row> = leak_rows().into_iter().filter(|r| r.id <= 9).collect();
        let t = build(ctx(), &rows);
        assert_eq!(t.status, "leaking");
        assert!(t.summary.contains("namespace 4026532177"), "{}", t.summary);
        let mount = &t.lifelines[1];
        let leak = mount.spans.iter().find(|s| s.kind == "leak").unwrap();
        assert_eq!(leak.end_ns, None, "still open");
    }

    #[test]
    fn the_window_keeps_only_its_steps() {
        let mut c = ctx();
        c.since_ns = Some(T0 + 10_000_000_000);
        c.until_ns = Some(T0 + 11_000_000_000);
        let t = build(c, &leak_rows());
        assert!(t
            .steps
            .iter()
            .all(|s| s.time_ns >= T0 + 10_000_000_000 && s.time_ns <= T0 + 11_000_000_000));
        assert_eq!(t.steps.len(), 5);
        assert!(t.since.is_some() && t.until.is_some());
    }

    #[test]
    fn without_probes_the_findings_still_tell_it() {
        // Only findings (polling mode, no runtime): namespace start inferred.
        let rows: Vec<Row> = leak_rows()
            .into_iter()
            .filter(|r| r.kind == Kind::Finding)
            .collect();
        let t = build(ctx(), &rows);
        assert_eq!(t.steps.len(), 4);
        let ns = t.lifelines.iter().find(|l| l.kind == "namespace").unwrap();
        assert_eq!(
            ns.start_ns,
            Some(T0 + 3_000_000_000),
            "from the holder's since"
        );
        assert!(ns.detail.as_deref().unwrap().contains("private"));
    }

    #[test]
    fn repeated_facts_are_told_once() {
        let mut rows = leak_rows();
        // The daemon restarted: the container is seen running again, the
        // same risk comes again in the new run.
        let mut seen = rows[1].clone();
        seen.id = 100;
        seen.wall_ns += 4_000_000_000;
        rows.push(seen);
        let mut again = rows[5].clone();
        again.id = 101;
        again.wall_ns += 1;
        rows.push(again);
        let t = build(ctx(), &rows);
        assert_eq!(t.steps.iter().filter(|s| s.kind == "risk").count(), 1);
        assert_eq!(
            t.steps
                .iter()
                .filter(|s| s.kind.starts_with("container_s"))
                .count(),
            2
        );
    }

    #[test]
    fn clone3_is_told_with_its_new_task() {
        let rows = vec![
            row(
                1,
                1.0,
                Kind::NsCreated,
                json!({"type": "ns_created", "call": "clone3", "pid": 50, "comm": "runc", "child_pid": 51, "ret": 51}),
            ),
            row(
                2,
                1.0,
                Kind::NsCreated,
                json!({"type": "ns_created", "call": "clone", "pid": 50, "comm": "runc", "child_pid": 51,
                "mnt_ns": 4026532300u64, "parent_mnt_ns": HOST}),
            ),
        ];
        let t = build(ctx(), &rows);
        assert_eq!(t.steps.len(), 1);
        assert!(
            t.steps[0].text.contains("with clone3"),
            "{}",
            t.steps[0].text
        );
    }

    #[test]
    fn odd_paths_are_quoted_for_the_shell() {
        let mut r = row(
            1,
            1.0,
            Kind::Umount,
            json!({"type": "umount", "pid": 1, "comm": "umount", "mnt_ns": HOST, "ret": 0}),
        );
        r.path = Some(b"/var/lib/docker/overlay2/a b\n/merged".to_vec());
        let t = build(ctx(), &[r]);
        assert!(
            t.steps[0]
                .text
                .contains(r"$'/var/lib/docker/overlay2/a b\n/merged'"),
            "{}",
            t.steps[0].text
        );
    }

    #[test]
    fn a_remedy_is_told_and_marked_on_the_mount() {
        let mut rows = leak_rows();
        rows.truncate(9);
        let mut r = row(
            50,
            15.0,
            Kind::Remedy,
            json!({"type": "remedy", "finding": "ML-1", "path": MERGED,
                   "step": {"n": 1, "text": "nsenter -t 1234 -m umount /x", "status": "done", "detail": "released"}}),
        );
        r.path = Some(MERGED.as_bytes().to_vec());
        rows.push(r);
        let t = build(ctx(), &rows);
        let last = t.steps.last().unwrap();
        assert_eq!(last.kind, "remedy_applied");
        assert_eq!(
            last.text,
            "`mountleak fix` for ML-1: nsenter -t 1234 -m umount /x → done (released)"
        );
        let mount = t.lifelines.iter().find(|l| l.kind == "mount").unwrap();
        assert!(mount.markers.iter().any(|m| m.kind == "remedy_applied"));
    }

    #[test]
    fn hex_paths_decode() {
        assert_eq!(
            json_path_bytes(&json!({"path": "x", "path_hex": "2fff"})),
            Some(vec![0x2f, 0xff])
        );
        assert_eq!(
            json_path_bytes(&json!({"path": "/a"})),
            Some(b"/a".to_vec())
        );
        assert_eq!(hex_bytes("2"), None);
        assert_eq!(hex_bytes("zz"), None);
    }
}
