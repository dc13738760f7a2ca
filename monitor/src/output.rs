//! How findings are shown: a compact block a person can act on, or JSON with
//! a stable schema (documented in README "JSON output"). Kernel times become
//! wall-clock times here, at output, never earlier.

use std::io::{self, Write};
use std::time::SystemTime;

use monitor_model::finding::{Finding, FindingKind, Holder};
use monitor_model::input::Ktime;
use monitor_model::PathBytes;
use serde_json::{json, Map, Value};

use crate::procfs::clock;

/// Version of the JSON schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

pub fn wall(at: Ktime) -> SystemTime {
    clock::boottime_to_wall(at)
}

pub fn rfc3339(at: Ktime) -> String {
    humantime::format_rfc3339_millis(wall(at)).to_string()
}

fn rfc3339_secs(at: Ktime) -> String {
    humantime::format_rfc3339_seconds(wall(at)).to_string()
}

fn path_value(p: &PathBytes) -> Value {
    Value::String(p.lossy())
}

/// Inserts `key` (lossy text) and, when the bytes are not UTF-8, `key_hex`.
fn put_path(obj: &mut Map<String, Value>, key: &str, p: &PathBytes) {
    obj.insert(key.into(), path_value(p));
    if p.to_str().is_none() {
        obj.insert(format!("{key}_hex"), Value::String(p.hex()));
    }
}

fn holder_json(h: &Holder) -> Value {
    let mut o = Map::new();
    let main = h.processes.first();
    o.insert("pid".into(), json!(h.pid));
    o.insert("comm".into(), json!(main.map(|p| p.comm.clone())));
    if let Some(exe) = main.and_then(|p| p.exe.as_ref()) {
        put_path(&mut o, "exe", exe);
    }
    o.insert("cgroup".into(), json!(main.and_then(|p| p.cgroup.clone())));
    o.insert("unit".into(), json!(main.and_then(|p| p.unit.clone())));
    o.insert("mnt_ns".into(), json!(h.mnt_ns));
    o.insert("hold".into(), json!(h.hold));
    if let Some(mp) = &h.mount_point {
        put_path(&mut o, "mount_point", mp);
    }
    o.insert("propagation".into(), json!(h.propagation));
    o.insert(
        "receives_host_umounts".into(),
        json!(h.receives_host_umounts),
    );
    o.insert("user_ns_locked".into(), json!(h.user_ns_locked));
    o.insert("since".into(), json!(h.since.map(rfc3339)));
    o.insert("since_source".into(), json!(h.since_source));
    o.insert("via".into(), json!(h.via));
    o.insert("created_by".into(), json!(h.created_by));
    o.insert("parent_mnt_ns".into(), json!(h.parent_mnt_ns));
    o.insert("busy".into(), json!(h.busy));
    o.insert(
        "nsfs_mounts".into(),
        Value::Array(h.nsfs_mounts.iter().map(path_value).collect()),
    );
    let processes: Vec<Value> = h
        .processes
        .iter()
        .map(|p| json!({"pid": p.pid, "comm": p.comm, "unit": p.unit, "uid": p.uid, "cgroup": p.cgroup}))
        .collect();
    o.insert("processes".into(), Value::Array(processes));
    o.insert("more_processes".into(), json!(h.more_processes));
    Value::Object(o)
}

/// A finding as the documented JSON object.
pub fn finding_json(f: &Finding) -> Value {
    let mut mount = Map::new();
    put_path(&mut mount, "path", &f.mount.path);
    mount.insert("dev".into(), json!(f.mount.dev));
    mount.insert("fstype".into(), json!(f.mount.fstype));
    put_path(&mut mount, "source", &f.mount.source);
    mount.insert("container".into(), json!(f.mount.container));
    mount.insert("mounted_at".into(), json!(f.mount.mounted_at.map(rfc3339)));
    mount.insert(
        "unmounted_at".into(),
        json!(f.mount.unmounted_at.map(rfc3339)),
    );
    let mut o = Map::new();
    o.insert("type".into(), json!("finding"));
    o.insert("id".into(), json!(f.id));
    o.insert("kind".into(), json!(f.kind));
    o.insert("time".into(), json!(rfc3339(f.at)));
    o.insert("summary".into(), json!(f.summary));
    o.insert("mount".into(), Value::Object(mount));
    // The container (or pod) as its runtime describes it; null when no
    // runtime said (then only `mount.container`, inferred from the path).
    o.insert("container".into(), json!(f.mount.owner));
    o.insert(
        "holders".into(),
        Value::Array(f.holders.iter().map(holder_json).collect()),
    );
    o.insert("more_holders".into(), json!(f.more_holders));
    o.insert("consequence".into(), json!(f.consequence));
    o.insert("remedy".into(), json!(f.remedy));
    if let Some(call) = &f.failed_call {
        o.insert("failed_call".into(), json!(call));
    }
    if let Some(r) = &f.resolution {
        o.insert("resolution".into(), json!(r));
    }
    Value::Object(o)
}

fn kind_label(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::Risk => "RISK",
        FindingKind::Leak => "LEAK",
        FindingKind::FailedRemoval => "FAILED REMOVAL",
        FindingKind::RemovalWarning => "REMOVAL WARNING",
        FindingKind::Resolved => "RESOLVED",
    }
}

/// The human block for one finding.
pub fn finding_text(f: &Finding) -> String {
    let mut s = String::new();
    let mut what = vec![];
    if !f.mount.fstype.is_empty() {
        what.push(f.mount.fstype.clone());
    }
    if let Some(d) = &f.mount.dev {
        what.push(d.clone());
    }
    if let Some(label) = f.mount.container.label() {
        what.push(label);
    }
    let path = if f.mount.path.is_empty() {
        "(no path: detached)".to_string()
    } else {
        f.mount.path.to_string()
    };
    s.push_str(&format!(
        "{} {}  {}  ({})\n",
        kind_label(f.kind),
        f.id,
        path,
        what.join(", ")
    ));
    for h in &f.holders {
        let who = match h.processes.first() {
            Some(p) => {
                let unit = p
                    .unit
                    .as_deref()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default();
                format!("{} pid {}{unit}", p.comm, p.pid)
            }
            None if !h.nsfs_mounts.is_empty() => {
                format!("no process; nsfs mount {}", h.nsfs_mounts[0])
            }
            None => "no process found".to_string(),
        };
        let since = match h.since {
            Some(t) => format!(
                "  since {} ({}{})",
                rfc3339_secs(t),
                h.since_source,
                h.via.map(|v| format!(", {v}")).unwrap_or_default()
            ),
            None => String::new(),
        };
        let hold = match h.hold {
            monitor_model::finding::HoldKind::Copy => h.propagation.to_string(),
            other => format!("{other:?} inside").to_lowercase(),
        };
        s.push_str(&format!(
            "  held by  {who}  mnt ns {}  {hold}{since}\n",
            h.mnt_ns
        ));
        if let Some(mp) = &h.mount_point {
            if *mp != f.mount.path {
                s.push_str(&format!("           mounted there at {mp}\n"));
            }
        }
        for b in &h.busy {
            s.push_str(&format!("           busy: {b}\n"));
        }
        if h.more_processes > 0 || h.processes.len() > 1 {
            let others: Vec<String> = h
                .processes
                .iter()
                .skip(1)
                .map(|p| format!("{} {}", p.comm, p.pid))
                .collect();
            s.push_str(&format!(
                "           also in it: {}{}\n",
                others.join(", "),
                if h.more_processes > 0 {
                    format!(" and {} more", h.more_processes)
                } else {
                    String::new()
                }
            ));
        }
    }
    if f.more_holders > 0 {
        s.push_str(&format!(
            "  and {} more holders (see --json)\n",
            f.more_holders
        ));
    }
    if let Some(call) = &f.failed_call {
        s.push_str(&format!(
            "  failed   {} by {} pid {}: errno {}\n",
            call.syscall, call.comm, call.pid, call.errno
        ));
    }
    if let Some(r) = &f.resolution {
        s.push_str(&format!("  how      {r}\n"));
    } else {
        s.push_str(&format!("  effect   {}\n", f.consequence.text));
    }
    for (i, r) in f.remedy.iter().enumerate() {
        s.push_str(&format!(
            "  {}  {r}\n",
            if i == 0 { "fix    " } else { "       " }
        ));
    }
    s
}

/// Where findings and notices go.
pub struct Printer<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, json: bool) -> Self {
        Printer { out, json }
    }

    /// One finding: a block of text, or one JSON line.
    pub fn finding(&mut self, f: &Finding) -> io::Result<()> {
        if self.json {
            writeln!(self.out, "{}", finding_json(f))?;
        } else {
            writeln!(
                self.out,
                "{} {}",
                humantime::format_rfc3339_seconds(wall(f.at)),
                f.summary
            )?;
            write!(self.out, "{}", finding_text(f))?;
            writeln!(self.out)?;
        }
        self.out.flush()
    }

    /// A daemon notice (`ready`, `lost`, `degraded`, ...): a JSON line with
    /// `type` = kind, or one line of text.
    pub fn notice(&mut self, kind: &str, message: &str, fields: Value) -> io::Result<()> {
        if self.json {
            let mut o = Map::new();
            o.insert("type".into(), json!(kind));
            o.insert(
                "time".into(),
                json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
            );
            o.insert("message".into(), json!(message));
            if let Value::Object(extra) = fields {
                o.extend(extra);
            }
            writeln!(self.out, "{}", Value::Object(o))?;
        } else {
            writeln!(self.out, "mountleak: {message}")?;
        }
        self.out.flush()
    }

    pub fn inner(&mut self) -> &mut W {
        &mut self.out
    }
}
