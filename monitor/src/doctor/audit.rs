//! The audit itself: from unit files, mount tables, kernel facts and (when
//! auditing this node) what runs now, to findings with evidence and an
//! exact fix. Pure: the shell in `doctor.rs` gathers [`Input`].
//!
//! The reasoning, in the order the checks run:
//! - **Kernel**: before 3.18 (or RHEL/CentOS 7 with `fs.may_detach_mounts=0`)
//!   removing a mountpoint that another namespace has a copy of fails with
//!   EBUSY: the seed's `docker rm` failure.
//! - **Runtimes**: a runtime whose unit gives it no mount namespace makes
//!   container mounts in the host's namespace, where every later mount
//!   namespace copies them. Whether those copies hear the runtime's umount
//!   depends on the data directory: under a shared mount the container
//!   mounts are shared too and slave copies receive the umount; under a
//!   private (or slave-only) mount they are private and nothing reaches the
//!   copies. `MountFlags=slave` on the runtime (the field report's fix)
//!   keeps container mounts out of the host's namespace altogether.
//! - **Services** with a mount namespace copy container mounts when they
//!   start after the runtime (or restart while containers run). Their copies
//!   receive the host's umounts only with systemd's default propagation (or
//!   `slave`/`shared`) *and* shared container mounts; `MountFlags=private`
//!   never does.
//! - **Now**: namespaces holding copies (the model's risks and leaks),
//!   and namespaces that are peers of kubelet's mounts (Bidirectional).

use std::collections::BTreeMap;

use monitor_model::finding::{FindingKind, HoldKind};
use monitor_model::{KernelFacts, NsId, Patterns, Pid};
use serde::Serialize;

use super::exec::{self, MountNs};
use super::mounts::{self, Bidirectional, DataDir, Line, NsTable, Table, DATA_DIRS};
use super::units::{FileError, Setting, Unit, UnitSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// Why we say so: a unit file line, a mountinfo line, or a fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The unit file, drop-in or mount table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub text: String,
}

impl Evidence {
    fn setting(s: &Setting) -> Self {
        Evidence {
            file: Some(s.file.clone()),
            line: Some(s.line),
            text: s.text.clone(),
        }
    }

    fn mount(source: &str, l: &Line) -> Self {
        Evidence {
            file: Some(source.to_string()),
            line: None,
            text: l.raw.clone(),
        }
    }

    fn fact(text: impl Into<String>) -> Self {
        Evidence {
            file: None,
            line: None,
            text: text.into(),
        }
    }

    fn in_file(file: &str, text: impl Into<String>) -> Self {
        Evidence {
            file: Some(file.to_string()),
            line: None,
            text: text.into(),
        }
    }

    /// `file:line: text`, `file: text` or `text`.
    pub fn cite(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{f}:{l}: {}", self.text),
            (Some(f), None) => format!("{f}: {}", self.text),
            _ => self.text.clone(),
        }
    }
}

/// A file to write, with its whole content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FixFile {
    pub path: String,
    pub content: String,
}

/// What to do about a finding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fix {
    pub text: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FixFile>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `kernel`, `runtime`, `data_dir`, `service`, `holder`,
    /// `bidirectional`, `unit_file`.
    pub check: &'static str,
    pub severity: Severity,
    /// The unit, directory, namespace or file it is about.
    pub subject: String,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    pub fix: Fix,
}

/// The kernel, and where its facts came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInput {
    pub facts: KernelFacts,
    /// `uname(2)` or the osrelease file under `--root`.
    pub release_source: String,
    /// Where `fs.may_detach_mounts` was looked for.
    pub sysctl_path: String,
}

/// A container runtime process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeProc {
    pub comm: String,
    pub pid: Pid,
    pub mnt_ns: NsId,
}

/// A unit's live state (`systemctl show`), when systemd is PID 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveUnit {
    pub active: bool,
    pub main_pid: Option<Pid>,
    /// `ActiveEnterTimestampMonotonic` (µs).
    pub active_enter_us: Option<u64>,
}

/// This node now (absent with `--root`).
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub self_ns: Option<NsId>,
    pub systemd: Option<BTreeMap<String, LiveUnit>>,
    /// The model's open findings (risks and leaks) from one scan.
    pub findings: Vec<monitor_model::Finding>,
    pub runtime_procs: Vec<RuntimeProc>,
    /// Other namespaces' tables (first member), for evidence and peers.
    pub tables: Vec<NsTable>,
    /// Units with processes now (from their cgroups): pid and namespace.
    pub running_units: BTreeMap<String, Vec<(Pid, NsId)>>,
    /// Namespaces the scan could not read.
    pub unread: usize,
    pub uid: u32,
}

pub struct Input {
    /// `/` or the `--root` directory, for messages.
    pub root: String,
    pub units: UnitSet,
    pub kernel: KernelInput,
    /// The host's mount table (`None`: not available under `--root`).
    pub host: Option<Table>,
    /// Data directories that exist under the root.
    pub existing_dirs: Vec<String>,
    pub live: Option<Live>,
    pub patterns: Patterns,
}

/// A service with a mount namespace, as judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    pub unit: String,
    pub fragment: String,
    pub dropins: Vec<String>,
    /// The settings that give it a mount namespace (`file:line: text`).
    pub namespace_from: Vec<String>,
    pub propagation: &'static str,
    pub enabled: bool,
    /// `None`: not known (no live state).
    pub running: Option<bool>,
    pub ordered_after: Vec<String>,
    pub copies_container_mounts: bool,
    pub receives_host_umounts: Option<bool>,
    /// Container mounts it holds right now (risks and leaks).
    pub holds_now: usize,
    pub status: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeView {
    pub name: &'static str,
    /// Its unit file, if any.
    pub unit_file: Option<String>,
    /// Container mounts stay in its own namespace (and why).
    pub own_namespace: bool,
    pub own_namespace_from: Vec<String>,
    pub processes: Vec<Pid>,
    pub data_dirs: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DataDirView {
    pub dir: String,
    pub runtime: &'static str,
    pub exists: bool,
    pub propagation: &'static str,
    /// Container mounts made here are shared (`None`: no mount table).
    pub shared: Option<bool>,
    pub container_mounts: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub root: String,
    pub kernel: String,
    pub detaches_on_rmdir: bool,
    pub may_detach_mounts: Option<bool>,
    pub mount_table: Option<String>,
    pub live: bool,
    pub systemd_live: bool,
    pub units_read: usize,
    pub findings: Vec<Finding>,
    pub services: Vec<ServiceView>,
    pub runtimes: Vec<RuntimeView>,
    pub data_dirs: Vec<DataDirView>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }
}

/// A container runtime: its unit, processes and data directories.
struct RuntimeDef {
    name: &'static str,
    unit: &'static str,
    comms: &'static [&'static str],
    dirs: &'static [&'static str],
}

const RUNTIMES: &[RuntimeDef] = &[
    RuntimeDef {
        name: "docker",
        unit: "docker.service",
        comms: &["dockerd"],
        dirs: &["/var/lib/docker"],
    },
    RuntimeDef {
        name: "containerd",
        unit: "containerd.service",
        comms: &["containerd"],
        dirs: &["/var/lib/containerd", "/run/containerd"],
    },
    RuntimeDef {
        name: "cri-o",
        unit: "crio.service",
        comms: &["crio"],
        dirs: &["/var/lib/containers"],
    },
    RuntimeDef {
        name: "kubelet",
        unit: "kubelet.service",
        comms: &["kubelet"],
        dirs: &["/var/lib/kubelet"],
    },
];

/// The runtime units, so services named like them are not judged as
/// services that copy.
fn is_runtime_unit(name: &str) -> bool {
    RUNTIMES.iter().any(|r| r.unit == name) || name == "podman.service"
}

/// State of one runtime, as the audit sees it.
struct RuntimeState<'a> {
    def: &'a RuntimeDef,
    unit: Option<&'a Unit>,
    ns: Option<MountNs>,
    procs: Vec<&'a RuntimeProc>,
    own_namespace: bool,
    own_namespace_from: Vec<String>,
    present: bool,
}

/// A drop-in file name that sorts after every drop-in the unit has (a later
/// drop-in overrides an earlier one, by file name).
pub fn dropin_name(existing: &[String]) -> String {
    let names: Vec<&str> = existing
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .collect();
    for candidate in ["50-mountleak.conf", "zz-mountleak.conf"] {
        if names.iter().all(|n| *n < candidate) {
            return candidate.to_string();
        }
    }
    let max = names.iter().max().copied().unwrap_or("zz");
    format!("{}.mountleak.conf", max.trim_end_matches(".conf"))
}

/// Where a drop-in for `unit` goes: under /etc, for the template when it is
/// an instance (so every instance gets it).
fn dropin_dir(unit: &Unit) -> String {
    let name = unit.template.as_deref().unwrap_or(&unit.name);
    format!("/etc/systemd/system/{name}.d")
}

fn mountflags_dropin(unit: &Unit, value: &str, why: &str) -> FixFile {
    FixFile {
        path: format!("{}/{}", dropin_dir(unit), dropin_name(&unit.dropins)),
        content: format!("# mountleak doctor: {why}\n[Service]\nMountFlags={value}\n"),
    }
}

/// Why the runtime gets `MountFlags=slave`.
const RUNTIME_SLAVE: &str = "container mounts stay in the runtime's own mount namespace, so no other namespace copies them (the field report's fix)";
/// Why a service gets `MountFlags=slave`.
const SERVICE_SLAVE: &str = "this service's copies of host mounts receive the host's umounts";

fn restart(unit: &str) -> String {
    format!("systemctl restart {unit}")
}

fn name_of_holder(h: &monitor_model::finding::Holder) -> String {
    match h.processes.first() {
        Some(p) => format!("pid {} ({})", p.pid, p.comm),
        None if !h.nsfs_mounts.is_empty() => {
            format!("no process (nsfs mount {})", h.nsfs_mounts[0])
        }
        None => "no process".to_string(),
    }
}

/// Runs every check.
pub fn audit(input: &Input) -> Report {
    let mut findings: Vec<Finding> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let live = input.live.as_ref();

    // ----- kernel ---------------------------------------------------------
    let k = &input.kernel.facts;
    if !k.detaches_on_rmdir() {
        let mut evidence = vec![Evidence::in_file(
            &input.kernel.release_source,
            format!("kernel {}", k.release),
        )];
        let fix = match k.may_detach_mounts {
            Some(v) => {
                evidence.push(Evidence::in_file(
                    &input.kernel.sysctl_path,
                    format!("fs.may_detach_mounts = {}", u8::from(v)),
                ));
                Fix {
                    text: "turn on the backport of detach-on-removal (Linux 3.18, commit 8ed936b5671b): removing a mountpoint then detaches other namespaces' copies instead of failing; docker's own packages set it for this reason".into(),
                    files: vec![FixFile {
                        path: "/etc/sysctl.d/99-mountleak.conf".into(),
                        content: "# mountleak doctor: removing a mountpoint detaches copies in other mount namespaces\nfs.may_detach_mounts = 1\n".into(),
                    }],
                    commands: vec!["sysctl -w fs.may_detach_mounts=1".into()],
                }
            }
            None => {
                evidence.push(Evidence::fact(format!(
                    "no fs.may_detach_mounts ({}) and older than 3.18",
                    input.kernel.sysctl_path
                )));
                Fix {
                    text: "upgrade the kernel to 3.18 or later (or a RHEL/CentOS 7 kernel with fs.may_detach_mounts, 3.10.0-693 and later, and set it to 1)".into(),
                    ..Fix::default()
                }
            }
        };
        findings.push(Finding {
            check: "kernel",
            severity: Severity::High,
            subject: format!("kernel {}", k.release),
            summary: "removing a container's mountpoint fails with EBUSY while any other mount namespace has a copy: `docker rm` reports \"device or resource busy\" and pods hang in Terminating (the field report's failure)".into(),
            evidence,
            fix,
        });
    }

    // ----- runtimes and their data directories ----------------------------
    let units = &input.units;
    let mut runtimes: Vec<RuntimeState> = Vec::new();
    for def in RUNTIMES {
        let unit = units.unit(def.unit);
        let ns = unit.map(exec::mount_ns);
        let procs: Vec<&RuntimeProc> = live
            .map(|l| {
                l.runtime_procs
                    .iter()
                    .filter(|p| def.comms.contains(&p.comm.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let mut own = false;
        let mut from = Vec::new();
        if let Some(ns) = &ns {
            if ns.has_namespace() {
                own = true;
                from.extend(ns.implied_by.iter().map(Setting::cite));
            }
        }
        // What runs beats what the files say (a daemon-reload may be pending).
        if let (Some(l), Some(p)) = (live, procs.first()) {
            if let Some(self_ns) = l.self_ns {
                own = p.mnt_ns != self_ns;
                from.push(format!(
                    "{} pid {} runs in mnt ns {}{}",
                    p.comm,
                    p.pid,
                    p.mnt_ns,
                    if own {
                        ", not the host's"
                    } else {
                        " (the host's)"
                    }
                ));
            }
        }
        let dirs_used = def.dirs.iter().any(|d| {
            input.existing_dirs.iter().any(|e| e == d)
                || input
                    .host
                    .as_ref()
                    .is_some_and(|t| mounts::data_dir(t, d, &input.patterns).has_mounts)
        });
        let present = unit.is_some() || !procs.is_empty() || dirs_used;
        runtimes.push(RuntimeState {
            def,
            unit,
            ns,
            procs,
            own_namespace: own,
            own_namespace_from: from,
            present,
        });
    }

    // A data directory matters when a runtime that uses it makes its mounts
    // in the host's namespace.
    let mut data_dirs: Vec<DataDirView> = Vec::new();
    let mut dir_state: BTreeMap<&str, Option<DataDir>> = BTreeMap::new();
    let mut host_dirs: Vec<&str> = Vec::new();
    for &(dir, who) in DATA_DIRS {
        let exists = input.existing_dirs.iter().any(|e| e == dir);
        let state = input
            .host
            .as_ref()
            .map(|t| mounts::data_dir(t, dir, &input.patterns));
        let users: Vec<&RuntimeState> = runtimes
            .iter()
            .filter(|r| r.def.dirs.contains(&dir))
            .collect();
        let used = exists
            || state.as_ref().is_some_and(|s| s.has_mounts)
            || users.iter().any(|r| r.present);
        if !used {
            continue;
        }
        // Every runtime of this directory that is present keeps its mounts
        // to itself: nothing of it is in the host's namespace.
        let isolated = !users.is_empty()
            && users.iter().filter(|r| r.present).all(|r| r.own_namespace)
            && users.iter().any(|r| r.present)
            && state.as_ref().is_none_or(|s| s.container_mounts == 0);
        if !isolated {
            host_dirs.push(dir);
        }
        data_dirs.push(DataDirView {
            dir: dir.to_string(),
            runtime: who,
            exists,
            propagation: state
                .as_ref()
                .map_or("unknown", DataDir::containing_propagation),
            shared: state.as_ref().map(DataDir::shared),
            container_mounts: state.as_ref().map_or(0, |s| s.container_mounts),
        });
        dir_state.insert(dir, state);
    }
    // Copies made now receive the host's umounts (for a propagation that
    // can receive): every host data directory is shared.
    let dirs_shared: Option<bool> = if host_dirs.is_empty() {
        Some(true)
    } else if host_dirs.iter().any(|d| {
        dir_state
            .get(d)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| !s.shared())
    }) {
        Some(false)
    } else if host_dirs
        .iter()
        .all(|d| dir_state.get(d).and_then(|s| s.as_ref()).is_some())
    {
        Some(true)
    } else {
        None
    };
    let not_shared_dirs: Vec<&str> = host_dirs
        .iter()
        .copied()
        .filter(|d| {
            dir_state
                .get(d)
                .and_then(|s| s.as_ref())
                .is_some_and(|s| !s.shared())
        })
        .collect();
    let host_runtime_units: Vec<&RuntimeState> = runtimes
        .iter()
        .filter(|r| r.present && !r.own_namespace && r.unit.is_some())
        .collect();

    // ----- what holds copies now -----------------------------------------
    // Live holders by unit; the rest by namespace.
    let mut held_by_unit: BTreeMap<
        String,
        Vec<(&monitor_model::Finding, &monitor_model::finding::Holder)>,
    > = BTreeMap::new();
    let mut held_by_ns: BTreeMap<
        NsId,
        Vec<(&monitor_model::Finding, &monitor_model::finding::Holder)>,
    > = BTreeMap::new();
    if let Some(l) = live {
        for f in &l.findings {
            if !matches!(f.kind, FindingKind::Risk | FindingKind::Leak) {
                continue;
            }
            for h in &f.holders {
                let unit = h
                    .processes
                    .first()
                    .and_then(|p| p.unit.clone())
                    .filter(|u| units.unit(u).is_some());
                match unit {
                    Some(u) => held_by_unit.entry(u).or_default().push((f, h)),
                    None => held_by_ns.entry(h.mnt_ns).or_default().push((f, h)),
                }
            }
        }
    }
    let copy_line = |h: &monitor_model::finding::Holder| -> Option<Evidence> {
        let l = live?;
        let mp = h.mount_point.as_ref()?;
        let t = l.tables.iter().find(|t| t.ns == h.mnt_ns)?;
        let line = t
            .lines
            .iter()
            .rev()
            .find(|x| &x.entry().mount_point == mp)?;
        Some(Evidence::mount(&format!("/proc/{}/mountinfo", t.pid), line))
    };

    // ----- services -------------------------------------------------------
    let mut services: Vec<ServiceView> = Vec::new();
    let mut service_findings = 0usize;
    let mut worst_service = None::<Severity>;
    for unit in &units.units {
        if is_runtime_unit(&unit.name) {
            continue;
        }
        let ns = exec::mount_ns(unit);
        let held = held_by_unit.get(&unit.name).map_or(&[][..], Vec::as_slice);
        if !ns.has_namespace() && held.is_empty() {
            continue;
        }
        let prop = ns.propagation();
        let copies = !host_dirs.is_empty();
        let receives = if !prop.can_receive() {
            Some(false)
        } else {
            dirs_shared
        };
        let live_unit = live
            .and_then(|l| l.systemd.as_ref())
            .and_then(|s| s.get(&unit.name));
        let running = match (live, live_unit) {
            (_, Some(lu)) => Some(lu.active),
            (Some(l), None) => Some(l.running_units.contains_key(&unit.name)),
            (None, None) => None,
        };
        let enabled = !unit.enabled_by.is_empty();
        let mut ordered_after: Vec<&Setting> = Vec::new();
        for r in &host_runtime_units {
            if let Some(s) = ns.after_unit(r.def.unit) {
                ordered_after.push(s);
            }
        }
        let started_after_runtime: Vec<String> =
            match (live.and_then(|l| l.systemd.as_ref()), live_unit) {
                (Some(sd), Some(lu)) if lu.active => host_runtime_units
                    .iter()
                    .filter_map(|r| {
                        let rt = sd.get(r.def.unit)?;
                        (rt.active && rt.active_enter_us? < lu.active_enter_us?).then(|| {
                            format!(
                                "started after {} (systemctl show: ActiveEnterTimestampMonotonic)",
                                r.def.unit
                            )
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };

        let severity = if !held.is_empty() {
            Some(Severity::High)
        } else if !copies || receives == Some(true) {
            None
        } else if unit.template_only {
            Some(if receives == Some(false) {
                Severity::Medium
            } else {
                Severity::Low
            })
        } else if receives == Some(false) {
            Some(
                if enabled || running == Some(true) || !ordered_after.is_empty() {
                    Severity::High
                } else {
                    Severity::Medium
                },
            )
        } else if enabled || running == Some(true) {
            Some(Severity::Medium)
        } else {
            Some(Severity::Low)
        };
        let status = match severity {
            Some(_) => "finding",
            None if !copies => "ok: no container mounts in the host's namespace to copy",
            None => "ok: its copies receive the host's umounts",
        };
        services.push(ServiceView {
            unit: unit.name.clone(),
            fragment: unit.fragment.clone(),
            dropins: unit.dropins.clone(),
            namespace_from: ns.implied_by.iter().map(Setting::cite).collect(),
            propagation: prop.as_str(),
            enabled,
            running,
            ordered_after: ordered_after.iter().map(|s| s.cite()).collect(),
            copies_container_mounts: copies,
            receives_host_umounts: receives,
            holds_now: held.len(),
            status,
        });
        let Some(severity) = severity else { continue };
        service_findings += 1;
        worst_service = worst_service.max(Some(severity));

        let mut evidence: Vec<Evidence> = ns.implied_by.iter().map(Evidence::setting).collect();
        if let Some((_, s)) = &ns.mount_flags {
            if !ns.implied_by.contains(s) {
                evidence.push(Evidence::setting(s));
            }
        }
        let runtime_names: Vec<&str> = host_runtime_units.iter().map(|r| r.def.unit).collect();
        if !ordered_after.is_empty() {
            evidence.extend(ordered_after.iter().map(|s| Evidence::setting(s)));
        }
        evidence.extend(started_after_runtime.iter().map(Evidence::fact));
        evidence.extend(
            unit.enabled_by
                .iter()
                .map(|l| Evidence::in_file(l, "enabled (symlink)")),
        );
        for d in &not_shared_dirs {
            if let Some(Some(st)) = dir_state.get(d) {
                let src = input.host.as_ref().map_or("", |t| t.source.as_str());
                evidence.extend(st.not_shared.iter().map(|l| Evidence::mount(src, l)));
            }
        }
        for (f, h) in held {
            evidence.push(Evidence::fact(format!(
                "now: {} {} in mnt ns {} holds {} ({} propagation, {} {})",
                name_of_holder(h),
                unit.name,
                h.mnt_ns,
                f.mount.path,
                h.propagation,
                f.kind.as_str(),
                f.id
            )));
            evidence.extend(copy_line(h));
        }

        let when = if !started_after_runtime.is_empty() || !ordered_after.is_empty() {
            format!(
                "it starts after {}, so it copies the container mounts present then",
                runtime_names.join(", ")
            )
        } else if runtime_names.is_empty() {
            "it copies whatever container mounts exist when it starts".to_string()
        } else {
            format!(
                "it is not ordered against {}: any start or restart while containers run copies their mounts",
                runtime_names.join(", ")
            )
        };
        let why = if !prop.can_receive() {
            "with MountFlags=private its copies never receive the host's umounts".to_string()
        } else if receives == Some(false) {
            format!(
                "its copies are slaves of the host's mounts, but container mounts under {} are not shared, so no umount reaches the copies",
                not_shared_dirs.join(", ")
            )
        } else if receives.is_none() {
            "whether its copies receive the host's umounts depends on the data directories' propagation, which could not be read".to_string()
        } else {
            "it holds container mounts right now".to_string()
        };
        let mut summary = format!(
            "{} runs in its own mount namespace ({}); {when}; {why}",
            unit.name,
            ns.implied_by
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !held.is_empty() {
            summary.push_str(&format!("; it holds {} container mount(s) now", held.len()));
        }
        if unit.template_only {
            summary.push_str("; no instance of this template is known yet");
        }
        if let Some(pu) = &ns.private_users {
            summary.push_str(&format!(
                "; {} makes its copies locked (umount inside fails with EINVAL)",
                pu.text
            ));
        }

        let mut fix = Fix::default();
        let restart_unit = if unit.template_only {
            None
        } else {
            Some(restart(&unit.name))
        };
        if !prop.can_receive() {
            let (_, s) = ns
                .mount_flags
                .as_ref()
                .expect("private propagation comes from MountFlags=");
            let editable = s.file.starts_with("/etc/");
            fix.text = format!(
                "let the host's umounts reach its copies: MountFlags=slave{}{}",
                if editable {
                    format!(" (or remove {}:{})", s.file, s.line)
                } else {
                    String::new()
                },
                if not_shared_dirs.is_empty() {
                    String::new()
                } else {
                    "; the container mounts must also be shared: see the runtime finding"
                        .to_string()
                }
            );
            fix.files
                .push(mountflags_dropin(unit, "slave", SERVICE_SLAVE));
            fix.commands.push("systemctl daemon-reload".into());
            fix.commands.extend(restart_unit.clone());
        } else if receives == Some(false) {
            // The runtimes whose container mounts are private get
            // MountFlags=slave (kubelet must stay in the host's namespace);
            // the other directories are made shared.
            let mut texts = Vec::new();
            let mut covered: Vec<&str> = Vec::new();
            for r in &host_runtime_units {
                let Some(ru) = r.unit else { continue };
                if r.def.name == "kubelet"
                    || !r.def.dirs.iter().any(|d| not_shared_dirs.contains(d))
                {
                    continue;
                }
                covered.extend(r.def.dirs.iter().copied());
                texts.push(format!(
                    "MountFlags=slave for {} (the field report's fix)",
                    r.def.unit
                ));
                fix.files
                    .push(mountflags_dropin(ru, "slave", RUNTIME_SLAVE));
            }
            let mut make_shared = Vec::new();
            for d in not_shared_dirs.iter().filter(|d| !covered.contains(d)) {
                if let Some(Some(st)) = dir_state.get(d) {
                    make_shared.extend(st.not_shared.iter().map(|l| {
                        format!(
                            "mount --make-shared {}",
                            l.entry().mount_point.shell_quoted()
                        )
                    }));
                }
            }
            make_shared.dedup();
            if !make_shared.is_empty() {
                texts.push(
                    "make the container mounts' parent shared so slave copies receive the umounts"
                        .to_string(),
                );
            }
            fix.text = format!(
                "{}{}",
                texts.join("; and "),
                match &restart_unit {
                    Some(_) => format!(
                        "; then restart {} to drop the copies it holds now",
                        unit.name
                    ),
                    None => String::new(),
                }
            );
            if !fix.files.is_empty() {
                fix.commands.push("systemctl daemon-reload".into());
                for r in &host_runtime_units {
                    if r.def.dirs.iter().any(|d| covered.contains(d)) && r.def.name != "kubelet" {
                        fix.commands.push(restart(r.def.unit));
                    }
                }
            }
            fix.commands.extend(make_shared);
            fix.commands.extend(restart_unit.clone());
        } else {
            fix.text = "release what it holds now (`mountleak fix PATH`, a dry run first) or restart it; then check the data directories' propagation".into();
            for (f, _) in held {
                if !f.mount.path.is_empty() {
                    fix.commands
                        .push(format!("mountleak fix {}", f.mount.path.shell_quoted()));
                }
            }
            fix.commands.extend(restart_unit.clone());
        }
        // What it holds now can be released at once.
        for (f, _) in held {
            if !f.mount.path.is_empty() {
                let c = format!("mountleak fix {}", f.mount.path.shell_quoted());
                if !fix.commands.contains(&c) {
                    fix.commands.push(c);
                }
            }
        }
        findings.push(Finding {
            check: "service",
            severity,
            subject: unit.name.clone(),
            summary,
            evidence,
            fix,
        });
    }

    // ----- runtime findings (needs the services' verdicts) ----------------
    let any_holders = !held_by_ns.is_empty() || !held_by_unit.is_empty();
    for r in &runtimes {
        if !r.present || r.own_namespace || (r.unit.is_none() && r.procs.is_empty()) {
            continue;
        }
        let bad: Vec<(&str, &DataDir)> = r
            .def
            .dirs
            .iter()
            .filter_map(|d| Some((*d, dir_state.get(d)?.as_ref()?)))
            .filter(|(_, s)| !s.shared())
            .collect();
        if bad.is_empty() {
            continue;
        }
        let severity = if any_holders || worst_service == Some(Severity::High) {
            Severity::High
        } else {
            Severity::Medium
        };
        let src = input.host.as_ref().map_or("", |t| t.source.as_str());
        let mut evidence = Vec::new();
        if let (Some(u), Some(ns)) = (r.unit, &r.ns) {
            evidence.push(Evidence::in_file(
                &u.fragment,
                if ns.has_namespace() {
                    "has a mount namespace setting, yet runs in the host's".to_string()
                } else {
                    format!(
                        "no MountFlags= or other mount namespace setting in {} or its drop-ins",
                        u.name
                    )
                },
            ));
        }
        evidence.extend(r.own_namespace_from.iter().map(Evidence::fact));
        let mut where_ = Vec::new();
        for (d, st) in &bad {
            for l in &st.not_shared {
                evidence.push(Evidence::mount(src, l));
                where_.push(format!(
                    "{} is {}",
                    l.entry().mount_point,
                    mounts::propagation(l.entry())
                ));
            }
            for l in st.private_container_mounts.iter().take(3) {
                evidence.push(Evidence::mount(src, l));
            }
            if st.private_container_mounts.len() > 3 {
                evidence.push(Evidence::fact(format!(
                    "and {} more private container mounts under {d}",
                    st.private_container_mounts.len() - 3
                )));
            }
        }
        where_.dedup();
        let where_ = if where_.is_empty() {
            "its container mounts are private".to_string()
        } else {
            where_.join(", ")
        };
        let who = if service_findings > 0 {
            format!("{service_findings} service(s) with a mount namespace (below) keep")
        } else {
            "every mount namespace made later (a PrivateTmp= service, `unshare -m`) keeps"
                .to_string()
        };
        let subject = r
            .unit
            .map_or_else(|| r.def.name.to_string(), |u| u.name.clone());
        let summary = format!(
            "{subject} makes container mounts in the host's mount namespace under {} ({where_}): {who} private copies that the runtime's umount never reaches",
            bad.iter().map(|(d, _)| *d).collect::<Vec<_>>().join(", ")
        );
        let mut fix = Fix::default();
        let make_shared: Vec<String> = bad
            .iter()
            .flat_map(|(_, st)| st.not_shared.iter())
            .map(|l| {
                format!(
                    "mount --make-shared {}",
                    l.entry().mount_point.shell_quoted()
                )
            })
            .collect();
        match r.unit {
            Some(u) if r.def.name != "kubelet" => {
                let caveat = if r.def.name == "docker" {
                    String::new()
                } else {
                    " (with Kubernetes this also stops Bidirectional mounts of CSI plugins from reaching the host; prefer making the directory shared there)".to_string()
                };
                fix.text = format!(
                    "give {} its own mount namespace with MountFlags=slave, as the field report did{caveat}; or make the data directory shared so slave copies receive its umounts (running containers keep private mounts until restarted)",
                    u.name
                );
                fix.files.push(mountflags_dropin(u, "slave", RUNTIME_SLAVE));
                fix.commands.push("systemctl daemon-reload".into());
                fix.commands.push(restart(&u.name));
                fix.commands.extend(make_shared);
            }
            _ => {
                fix.text = "make the directory's mounts shared so that copies made with slave propagation receive the runtime's umounts (mounts made before keep their propagation until remounted); kubelet itself must stay in the host's namespace".into();
                fix.commands.extend(make_shared);
            }
        }
        findings.push(Finding {
            check: "runtime",
            severity,
            subject,
            summary,
            evidence,
            fix,
        });
    }
    // Data directories with no runtime unit (podman, or a runtime started by
    // hand) that are not shared.
    for d in &not_shared_dirs {
        let owned = runtimes.iter().any(|r| {
            r.def.dirs.contains(d)
                && r.present
                && !r.own_namespace
                && (r.unit.is_some() || !r.procs.is_empty())
        });
        if owned {
            continue;
        }
        let Some(Some(st)) = dir_state.get(d) else {
            continue;
        };
        let src = input.host.as_ref().map_or("", |t| t.source.as_str());
        let mut evidence: Vec<Evidence> = st
            .not_shared
            .iter()
            .map(|l| Evidence::mount(src, l))
            .collect();
        evidence.extend(
            st.private_container_mounts
                .iter()
                .take(3)
                .map(|l| Evidence::mount(src, l)),
        );
        let severity = if any_holders || worst_service == Some(Severity::High) {
            Severity::High
        } else {
            Severity::Medium
        };
        findings.push(Finding {
            check: "data_dir",
            severity,
            subject: d.to_string(),
            summary: format!(
                "container mounts under {d} are private ({} private container mount(s) now): every mount namespace made while they exist keeps copies that the runtime's umount never reaches",
                st.private_container_mounts.len()
            ),
            evidence,
            fix: Fix {
                text: "make the directory's mounts shared so that copies made with slave propagation receive the runtime's umounts; container mounts made before keep their propagation until remounted".into(),
                files: Vec::new(),
                commands: st
                    .not_shared
                    .iter()
                    .map(|l| format!("mount --make-shared {}", l.entry().mount_point.shell_quoted()))
                    .collect(),
            },
        });
    }

    // ----- holders with no unit -------------------------------------------
    for (ns, list) in &held_by_ns {
        let (_, first) = list[0];
        let severity = if list.iter().any(|(f, _)| f.kind == FindingKind::Leak) {
            Severity::High
        } else {
            Severity::Medium
        };
        let mut evidence = Vec::new();
        let mut commands = Vec::new();
        for (f, h) in list {
            evidence.push(Evidence::fact(format!(
                "{} {}: {}",
                f.kind.as_str(),
                f.id,
                f.summary
            )));
            evidence.extend(copy_line(h));
            if !f.mount.path.is_empty() {
                let c = format!("mountleak fix {}", f.mount.path.shell_quoted());
                if !commands.contains(&c) {
                    commands.push(c);
                }
            }
        }
        let remedy = list[0].0.remedy.first().cloned().unwrap_or_default();
        let how = match first.hold {
            HoldKind::Copy => format!("{} propagation", first.propagation),
            HoldKind::Cwd => "its working directory".to_string(),
            HoldKind::Root => "its root directory".to_string(),
            HoldKind::Fd => "an open file".to_string(),
        };
        findings.push(Finding {
            check: "holder",
            severity,
            subject: format!("{} in mnt ns {ns}", name_of_holder(first)),
            summary: format!(
                "{} in mnt ns {ns} holds {} container mount(s) now ({how}); no unit file explains it",
                name_of_holder(first),
                list.len()
            ),
            evidence,
            fix: Fix {
                text: format!("release them: `mountleak fix PATH` shows the actions, `--yes` carries them out ({remedy})"),
                files: Vec::new(),
                commands,
            },
        });
    }

    // ----- Kubernetes Bidirectional ----------------------------------------
    if let (Some(l), Some(host)) = (live, &input.host) {
        let mut others: Vec<NsTable> = l
            .tables
            .iter()
            .filter(|t| {
                Some(t.ns) != l.self_ns && !l.runtime_procs.iter().any(|p| p.mnt_ns == t.ns)
            })
            .cloned()
            .collect();
        others.sort_by_key(|t| t.ns);
        for b in mounts::bidirectional(host, &others, "/var/lib/kubelet") {
            findings.push(bidi_finding(&b, &host.source));
        }
    }

    // ----- unit files systemd would complain about -------------------------
    let mut by_file: BTreeMap<&str, Vec<&FileError>> = BTreeMap::new();
    for e in &units.errors {
        by_file.entry(e.file.as_str()).or_default().push(e);
    }
    for (file, errs) in by_file {
        let first = errs[0];
        findings.push(Finding {
            check: "unit_file",
            severity: Severity::Low,
            subject: file.to_string(),
            summary: if first.line == 0 {
                format!("{file} cannot be read: {}", first.message)
            } else {
                format!(
                    "{file} has {} line(s) systemd ignores (first: line {}, {}); the audit used the rest of the file",
                    errs.len(),
                    first.line,
                    first.message
                )
            },
            evidence: errs
                .iter()
                .map(|e| Evidence {
                    file: Some(e.file.clone()),
                    line: (e.line > 0).then_some(e.line),
                    text: if e.line > 0 {
                        format!("{} ({})", e.text, e.message)
                    } else {
                        e.message.clone()
                    },
                })
                .collect(),
            fix: Fix {
                text: "correct or remove the line(s), then `systemctl daemon-reload`; until then systemd ignores them (a setting meant to be there is not in effect)".into(),
                ..Fix::default()
            },
        });
    }

    // ----- notes ------------------------------------------------------------
    if input.host.is_none() {
        notes.push(format!(
            "no mount table under {}: the data directories' propagation was not checked",
            input.root
        ));
    }
    match live {
        None => notes.push("auditing a tree (--root): nothing running was looked at".into()),
        Some(l) => {
            if l.systemd.is_none() {
                notes.push(
                    "systemd is not PID 1: unit files read from disk; running state from /proc"
                        .into(),
                );
            }
            if l.uid != 0 {
                notes.push(format!(
                    "running as uid {}: other users' mount namespaces could not be read; run as root for a complete audit",
                    l.uid
                ));
            }
            if l.unread > 0 {
                notes.push(format!("{} mount namespace(s) could not be read", l.unread));
            }
        }
    }
    for u in &units.masked {
        if is_runtime_unit(u) {
            notes.push(format!("{u} is masked"));
        }
    }

    for f in &mut findings {
        let mut seen = Vec::new();
        f.evidence.retain(|e| {
            let fresh = !seen.contains(e);
            if fresh {
                seen.push(e.clone());
            }
            fresh
        });
        f.fix.commands.dedup();
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(check_rank(a.check).cmp(&check_rank(b.check)))
            .then(a.subject.cmp(&b.subject))
    });
    let runtime_views = runtimes
        .iter()
        .filter(|r| r.present)
        .map(|r| RuntimeView {
            name: r.def.name,
            unit_file: r.unit.map(|u| u.fragment.clone()),
            own_namespace: r.own_namespace,
            own_namespace_from: r.own_namespace_from.clone(),
            processes: r.procs.iter().map(|p| p.pid).collect(),
            data_dirs: r.def.dirs.to_vec(),
        })
        .collect();
    Report {
        root: input.root.clone(),
        kernel: k.release.clone(),
        detaches_on_rmdir: k.detaches_on_rmdir(),
        may_detach_mounts: k.may_detach_mounts,
        mount_table: input.host.as_ref().map(|t| t.source.clone()),
        live: live.is_some(),
        systemd_live: live.is_some_and(|l| l.systemd.is_some()),
        units_read: units.files_read,
        findings,
        services,
        runtimes: runtime_views,
        data_dirs,
        notes,
    }
}

fn check_rank(check: &str) -> usize {
    [
        "kernel",
        "runtime",
        "data_dir",
        "service",
        "holder",
        "bidirectional",
        "unit_file",
    ]
    .iter()
    .position(|c| *c == check)
    .unwrap_or(99)
}

fn bidi_finding(b: &Bidirectional, host_source: &str) -> Finding {
    let who = match b
        .cgroup
        .as_deref()
        .and_then(monitor_model::container::pod_uid_from_cgroup)
    {
        Some(uid) => format!("pid {} ({}, pod uid {uid})", b.pid, b.comm),
        None => format!("pid {} ({})", b.pid, b.comm),
    };
    Finding {
        check: "bidirectional",
        severity: Severity::Medium,
        subject: format!("{who} in mnt ns {}", b.ns),
        summary: format!(
            "{who} in mnt ns {} is a peer (shared:{}) of the host's {}: Kubernetes Bidirectional propagation; mounts it makes there appear on the host and stay after it exits unless it unmounts them, and every pod volume mount also appears in its namespace",
            b.ns,
            b.group,
            b.host_line.entry().mount_point
        ),
        evidence: vec![
            Evidence::mount(host_source, &b.host_line),
            Evidence::mount(&format!("/proc/{}/mountinfo", b.pid), &b.line),
        ],
        fix: Fix {
            text: "Bidirectional is meant for CSI node plugins, which must unmount what they mount before exiting (a preStop hook); for anything else use mountPropagation: HostToContainer".into(),
            ..Fix::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::units::{resolve, Content, SourceFile};

    fn src(rank: usize, rel: &str, text: &str) -> SourceFile {
        SourceFile {
            rank,
            rel: rel.into(),
            path: format!("{}/{rel}", crate::doctor::units::UNIT_DIRS[rank]),
            content: Content::Text(text.into()),
            alias_of: None,
        }
    }

    fn wants(rel: &str) -> SourceFile {
        SourceFile {
            rank: 3,
            rel: rel.into(),
            path: format!("/etc/systemd/system/{rel}"),
            content: Content::Link(rel.rsplit('/').next().unwrap().into()),
            alias_of: None,
        }
    }

    const DOCKER: &str =
        "[Unit]\nAfter=network-online.target\n[Service]\nExecStart=/usr/bin/dockerd\n";

    fn input(files: Vec<SourceFile>, table: Option<&str>, kernel: KernelFacts) -> Input {
        Input {
            root: "/".into(),
            units: resolve(&files, &[]),
            kernel: KernelInput {
                facts: kernel,
                release_source: "uname(2)".into(),
                sysctl_path: "/proc/sys/fs/may_detach_mounts".into(),
            },
            host: table.map(|t| Table::parse("/proc/self/mountinfo", t.as_bytes())),
            existing_dirs: vec!["/var/lib/docker".into()],
            live: None,
            patterns: Patterns::default(),
        }
    }

    const PRIVATE_DOCKER: &str = "1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n2 1 8:1 /var/lib/docker/overlay2 /var/lib/docker/overlay2 rw - ext4 /dev/sda1 rw\n";
    const SHARED_DOCKER: &str = "1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n";

    fn modern() -> KernelFacts {
        KernelFacts::from_release("6.1.0-18-amd64", None)
    }

    fn by_subject<'a>(r: &'a Report, s: &str) -> Option<&'a Finding> {
        r.findings.iter().find(|f| f.subject == s)
    }

    #[test]
    fn private_tmp_with_private_container_mounts_is_high_and_the_fix_is_the_runtime_dropin() {
        let r = audit(&input(
            vec![
                src(6, "docker.service", DOCKER),
                src(
                    6,
                    "ntpd.service",
                    "[Unit]\nAfter=network.target\n[Service]\nPrivateTmp=true\n",
                ),
                wants("multi-user.target.wants/ntpd.service"),
            ],
            Some(PRIVATE_DOCKER),
            modern(),
        ));
        let f = by_subject(&r, "ntpd.service").expect("ntpd finding");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(
            f.evidence[0].cite(),
            "/usr/lib/systemd/system/ntpd.service:4: PrivateTmp=true"
        );
        assert!(f
            .evidence
            .iter()
            .any(|e| e.text.starts_with("2 1 8:1 /var/lib/docker/overlay2")));
        assert_eq!(
            f.fix.files[0].path,
            "/etc/systemd/system/docker.service.d/50-mountleak.conf"
        );
        assert!(f.fix.files[0]
            .content
            .contains("[Service]\nMountFlags=slave\n"));
        let d = by_subject(&r, "docker.service").expect("runtime finding");
        assert_eq!(d.check, "runtime");
        assert_eq!(d.severity, Severity::High);
        assert!(
            d.summary.contains("/var/lib/docker/overlay2 is private"),
            "{}",
            d.summary
        );
        assert!(r.findings.iter().all(|f| f.check != "kernel"));
    }

    #[test]
    fn shared_container_mounts_make_default_propagation_fine_but_not_mountflags_private() {
        let r = audit(&input(
            vec![
                src(6, "docker.service", DOCKER),
                src(6, "ntpd.service", "[Service]\nPrivateTmp=true\n"),
                src(6, "nginx.service", "[Service]\nPrivateTmp=true\n"),
                src(
                    3,
                    "nginx.service.d/override.conf",
                    "[Service]\nMountFlags=private\n",
                ),
                wants("multi-user.target.wants/nginx.service"),
            ],
            Some(SHARED_DOCKER),
            modern(),
        ));
        assert!(
            by_subject(&r, "ntpd.service").is_none(),
            "{:#?}",
            r.findings
        );
        assert!(by_subject(&r, "docker.service").is_none());
        let n = by_subject(&r, "nginx.service").unwrap();
        assert_eq!(n.severity, Severity::High);
        assert!(n.evidence.iter().any(|e| e.cite()
            == "/etc/systemd/system/nginx.service.d/override.conf:2: MountFlags=private"));
        // The new drop-in must sort after override.conf to win.
        assert_eq!(
            n.fix.files[0].path,
            "/etc/systemd/system/nginx.service.d/zz-mountleak.conf"
        );
        assert!(n
            .fix
            .text
            .contains("or remove /etc/systemd/system/nginx.service.d/override.conf:2"));
        let ntpd = r
            .services
            .iter()
            .find(|s| s.unit == "ntpd.service")
            .unwrap();
        assert_eq!(ntpd.receives_host_umounts, Some(true));
    }

    #[test]
    fn a_runtime_in_its_own_namespace_keeps_copies_away() {
        let r = audit(&input(
            vec![
                src(6, "docker.service", DOCKER),
                src(
                    3,
                    "docker.service.d/mountflags.conf",
                    "[Service]\nMountFlags=slave\n",
                ),
                src(
                    6,
                    "ntpd.service",
                    "[Service]\nPrivateTmp=true\nMountFlags=private\n",
                ),
            ],
            Some(PRIVATE_DOCKER),
            modern(),
        ));
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert!(r.runtimes[0].own_namespace);
        assert!(!r.services[0].copies_container_mounts);
    }

    #[test]
    fn el7_kernel_without_may_detach_mounts() {
        let r = audit(&input(
            vec![],
            None,
            KernelFacts::from_release("3.10.0-693.el7.x86_64", Some(false)),
        ));
        let k = &r.findings[0];
        assert_eq!((k.check, k.severity), ("kernel", Severity::High));
        assert_eq!(k.fix.commands, vec!["sysctl -w fs.may_detach_mounts=1"]);
        assert_eq!(k.fix.files[0].path, "/etc/sysctl.d/99-mountleak.conf");
        assert!(k
            .evidence
            .iter()
            .any(|e| e.cite() == "/proc/sys/fs/may_detach_mounts: fs.may_detach_mounts = 0"));
        assert!(audit(&input(
            vec![],
            None,
            KernelFacts::from_release("3.10.0-1160.el7.x86_64", Some(true))
        ))
        .findings
        .is_empty());
    }

    #[test]
    fn without_a_mount_table_it_is_medium_and_said() {
        let r = audit(&input(
            vec![
                src(6, "docker.service", DOCKER),
                src(6, "ntpd.service", "[Service]\nPrivateTmp=true\n"),
                wants("multi-user.target.wants/ntpd.service"),
            ],
            None,
            modern(),
        ));
        assert_eq!(
            by_subject(&r, "ntpd.service").unwrap().severity,
            Severity::Medium
        );
        assert!(r.notes.iter().any(|n| n.contains("no mount table")));
    }

    #[test]
    fn no_runtime_no_copies() {
        let mut i = input(
            vec![src(6, "ntpd.service", "[Service]\nPrivateTmp=true\n")],
            Some(SHARED_DOCKER),
            modern(),
        );
        i.existing_dirs.clear();
        let r = audit(&i);
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert_eq!(
            r.services[0].status,
            "ok: no container mounts in the host's namespace to copy"
        );
    }

    #[test]
    fn parse_errors_are_low_findings_with_lines() {
        let r = audit(&input(
            vec![src(
                3,
                "broken.service",
                "[Service]\nPrivateTmp\nExecStart=/bin/true\n",
            )],
            None,
            modern(),
        ));
        let f = &r.findings[0];
        assert_eq!((f.check, f.severity), ("unit_file", Severity::Low));
        assert_eq!(
            f.evidence[0].cite(),
            "/etc/systemd/system/broken.service:2: PrivateTmp (missing '=')"
        );
    }

    #[test]
    fn dropin_names_sort_last() {
        assert_eq!(dropin_name(&[]), "50-mountleak.conf");
        assert_eq!(dropin_name(&["/x/10-a.conf".into()]), "50-mountleak.conf");
        assert_eq!(
            dropin_name(&["/x/override.conf".into()]),
            "zz-mountleak.conf"
        );
        assert_eq!(dropin_name(&["/x/zzz.conf".into()]), "zzz.mountleak.conf");
    }
}
