//! `mountleak doctor`: audits one node for mount-leak risks before any leak
//! happens. Needs no eBPF and no running systemd.
//!
//! Owns the I/O of the audit: unit directories and sysctls under a root,
//! the host's mount table, and (when auditing this node, not a `--root`
//! tree) one /proc scan through the model and `systemctl show` when
//! systemd is PID 1. The decisions are pure and live in the submodules:
//! - [`unitfile`]: systemd's unit file syntax;
//! - [`units`]: unit search path, precedence, drop-ins, templates;
//! - [`exec`]: which settings give a service a mount namespace, and its
//!   propagation;
//! - [`mounts`]: data directory propagation and Bidirectional peers;
//! - [`audit`]: the findings, with evidence and exact fixes;
//! - [`systemd`]: `systemctl` output parsers.
//!
//! Exit codes: 0 nothing found, 1 findings, 2 error.

pub mod audit;
pub mod exec;
pub mod mounts;
pub mod systemd;
pub mod unitfile;
pub mod units;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use monitor_model::finding::unit_from_cgroup;
use monitor_model::{Input as ModelInput, KernelFacts, Model};
use serde_json::json;

use crate::cli::DoctorArgs;
use crate::config::{Config, Format};
use crate::output::SCHEMA_VERSION;
use crate::procfs::scan::{ScanOptions, Scanner};
use audit::{Finding, Input, Live, Report, RuntimeProc, Severity};
use mounts::{NsTable, Table, DATA_DIRS};

/// Runtime daemons whose namespace says where container mounts are made.
const RUNTIME_COMMS: &[&str] = &["dockerd", "containerd", "crio", "kubelet"];

/// Runs `mountleak doctor`; returns the exit code.
pub fn run(cfg: &Config, args: &DoctorArgs) -> anyhow::Result<u8> {
    let input = gather(cfg, args.root.as_deref())?;
    let report = audit::audit(&input);
    for f in &report.findings {
        tracing::debug!(check = f.check, severity = f.severity.as_str(), subject = %f.subject, "finding");
    }
    let json = cfg.output.format == Format::Json;
    print(&report, json, &mut std::io::stdout().lock())?;
    Ok(u8::from(!report.findings.is_empty()))
}

/// Reads everything the audit needs.
pub fn gather(cfg: &Config, root: Option<&Path>) -> anyhow::Result<Input> {
    let root_dir: PathBuf = match root {
        Some(r) => {
            let meta = std::fs::metadata(r)
                .with_context(|| format!("--root {}: cannot read it", r.display()))?;
            anyhow::ensure!(meta.is_dir(), "--root {}: not a directory", r.display());
            r.to_path_buf()
        }
        None => PathBuf::from("/"),
    };
    let live = if root.is_none() {
        Some(live_state(cfg)?)
    } else {
        None
    };
    let files = units::read_tree(&root_dir);
    let mut extra: Vec<String> = Vec::new();
    if let Some(l) = &live {
        extra.extend(l.running_units.keys().cloned());
        if let Some(sd) = &l.systemd {
            extra.extend(sd.keys().cloned());
        }
    }
    let mut unit_set = units::resolve(&files, &extra);
    // Live state needs the unit names, which need the files: ask systemctl
    // once the units are known.
    let mut live = live;
    if let Some(l) = live.as_mut() {
        if systemd::is_pid1() {
            let names: Vec<String> = unit_set.units.iter().map(|u| u.name.clone()).collect();
            l.systemd = systemd::query(&names);
            if let Some(sd) = &l.systemd {
                let more: Vec<String> = sd.keys().cloned().collect();
                unit_set = units::resolve(&files, &[extra, more].concat());
            }
        }
    }

    let kernel = kernel_input(root);
    let host = match root {
        Some(r) => {
            let p = r.join("proc/self/mountinfo");
            match std::fs::read(&p) {
                Ok(text) => Some(Table::parse(&p.display().to_string(), &text)),
                Err(_) => None,
            }
        }
        None => Some(Table::parse(
            "/proc/self/mountinfo",
            &std::fs::read("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?,
        )),
    };
    let existing_dirs = DATA_DIRS
        .iter()
        .map(|(d, _)| *d)
        .filter(|d| units::under(&root_dir, d).is_dir())
        .map(str::to_string)
        .collect();
    Ok(Input {
        root: root_dir.display().to_string(),
        units: unit_set,
        kernel,
        host,
        existing_dirs,
        live,
        patterns: cfg.patterns(),
    })
}

/// The kernel's facts: this machine's, or the tree's
/// (`proc/sys/kernel/osrelease`, `proc/sys/fs/may_detach_mounts` under it).
fn kernel_input(root: Option<&Path>) -> audit::KernelInput {
    match root {
        None => audit::KernelInput {
            facts: crate::procfs::read_kernel_facts(),
            release_source: "uname(2)".into(),
            sysctl_path: "/proc/sys/fs/may_detach_mounts".into(),
        },
        Some(r) => {
            let osrelease = r.join("proc/sys/kernel/osrelease");
            let (release, release_source) = match std::fs::read_to_string(&osrelease) {
                Ok(t) => (t.trim().to_string(), osrelease.display().to_string()),
                Err(_) => (
                    crate::procfs::read_kernel_facts().release,
                    format!("uname(2) (no {})", osrelease.display()),
                ),
            };
            let sysctl = r.join("proc/sys/fs/may_detach_mounts");
            let may = std::fs::read_to_string(&sysctl)
                .ok()
                .and_then(|t| match t.trim() {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                });
            audit::KernelInput {
                facts: KernelFacts::from_release(&release, may),
                release_source,
                sysctl_path: sysctl.display().to_string(),
            }
        }
    }
}

/// One scan of this node through the model, and the tables of the
/// namespaces it found.
fn live_state(cfg: &Config) -> anyhow::Result<Live> {
    let kernel = crate::procfs::read_kernel_facts();
    let mut model = Model::new(crate::model_config(cfg, kernel));
    let out = Scanner::new()
        .scan(&ScanOptions::default().with_all_devices())
        .context("scanning /proc")?;
    let snap = out.snapshot;
    let self_ns = snap.self_ns;
    let mut running_units: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    let mut runtime_procs = Vec::new();
    let mut tables = Vec::new();
    for ns in &snap.namespaces {
        for p in &ns.members {
            if let Some(u) = p.cgroup.as_deref().and_then(unit_from_cgroup) {
                if u.ends_with(".service") {
                    running_units.entry(u).or_default().push((p.pid, ns.ns));
                }
            }
            if RUNTIME_COMMS.contains(&p.comm.as_str()) {
                runtime_procs.push(RuntimeProc {
                    comm: p.comm.clone(),
                    pid: p.pid,
                    mnt_ns: ns.ns,
                });
            }
        }
        if Some(ns.ns) == self_ns {
            continue;
        }
        // The first member whose table is still readable (it may exit).
        for p in &ns.members {
            if let Ok(text) = std::fs::read(format!("/proc/{}/mountinfo", p.pid)) {
                tables.push(NsTable {
                    ns: ns.ns,
                    pid: p.pid,
                    comm: p.comm.clone(),
                    cgroup: p.cgroup.clone(),
                    lines: Table::parse("", &text).lines,
                });
                break;
            }
        }
    }
    let taken_at = snap.taken_at;
    model.apply(&ModelInput::Snapshot(snap));
    model.apply(&ModelInput::Tick { now: taken_at });
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    Ok(Live {
        self_ns,
        systemd: None,
        findings: model.open_findings(),
        runtime_procs,
        tables,
        running_units,
        unread: out.stats.unread.len(),
        uid,
    })
}

/// Prints the report as text or one JSON document.
pub fn print(r: &Report, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        let doc = json!({
            "schema": SCHEMA_VERSION,
            "root": r.root,
            "kernel": {
                "release": r.kernel,
                "detaches_on_rmdir": r.detaches_on_rmdir,
                "may_detach_mounts": r.may_detach_mounts,
            },
            "mount_table": r.mount_table,
            "live": r.live,
            "systemd_live": r.systemd_live,
            "units_read": r.units_read,
            "counts": {
                "high": r.count(Severity::High),
                "medium": r.count(Severity::Medium),
                "low": r.count(Severity::Low),
            },
            "findings": r.findings,
            "services": r.services,
            "runtimes": r.runtimes,
            "data_dirs": r.data_dirs,
            "notes": r.notes,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        out.flush()?;
        return Ok(());
    }
    writeln!(
        out,
        "mountleak doctor: {} finding(s) ({} high, {} medium, {} low); kernel {}; {} unit files under {}",
        r.findings.len(),
        r.count(Severity::High),
        r.count(Severity::Medium),
        r.count(Severity::Low),
        r.kernel,
        r.units_read,
        r.root
    )?;
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    for f in &r.findings {
        writeln!(out)?;
        write!(out, "{}", finding_text(f))?;
    }
    if !r.services.is_empty() {
        writeln!(out)?;
        writeln!(out, "Services with their own mount namespace:")?;
        for s in &r.services {
            let recv = match s.receives_host_umounts {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            };
            writeln!(
                out,
                "  {:<28} {}; copies container mounts: {}; receives host umounts: {recv}; {}",
                s.unit,
                s.propagation,
                if s.copies_container_mounts {
                    "yes"
                } else {
                    "no"
                },
                s.status
            )?;
        }
    }
    if !r.runtimes.is_empty() || !r.data_dirs.is_empty() {
        writeln!(out)?;
        writeln!(out, "Container runtimes:")?;
        for rt in &r.runtimes {
            writeln!(
                out,
                "  {:<12} {}; {}",
                rt.name,
                rt.unit_file.as_deref().unwrap_or("no unit file"),
                if rt.own_namespace {
                    "own mount namespace (container mounts stay out of the host's)"
                } else {
                    "host mount namespace"
                }
            )?;
        }
        for d in &r.data_dirs {
            let shared = match d.shared {
                Some(true) => "container mounts shared",
                Some(false) => "container mounts PRIVATE",
                None => "propagation unknown",
            };
            writeln!(
                out,
                "  {:<24} on a {} mount; {shared}; {} container mount(s)",
                d.dir, d.propagation, d.container_mounts
            )?;
        }
    }
    if r.findings.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "No mount-leak risk found in this node's configuration."
        )?;
    }
    out.flush()?;
    Ok(())
}

/// One finding as a block a person can act on.
pub fn finding_text(f: &Finding) -> String {
    let mut s = format!(
        "{} {}: {}\n  {}\n",
        f.severity.as_str().to_uppercase(),
        f.check,
        f.subject,
        f.summary
    );
    for (i, e) in f.evidence.iter().enumerate() {
        let label = if i == 0 { "evidence" } else { "" };
        s.push_str(&format!("  {label:<9} {}\n", e.cite()));
    }
    s.push_str(&format!("  {:<9} {}\n", "fix", f.fix.text));
    for file in &f.fix.files {
        s.push_str(&format!("  {:<9} write {}:\n", "", file.path));
        for line in file.content.lines() {
            s.push_str(&format!("  {:<9}   | {line}\n", ""));
        }
    }
    for c in &f.fix.commands {
        s.push_str(&format!("  {:<9} $ {c}\n", ""));
    }
    s
}
