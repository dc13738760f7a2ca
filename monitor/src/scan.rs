//! `mountleak scan`: one read of /proc (and statmount where the kernel has
//! it) through the model. Needs no eBPF, so it works on RHEL/CentOS 7.

use std::io::Write;

use anyhow::Context;
use monitor_model::{Finding, FindingKind, Input, KernelFacts, Model};
use serde_json::json;

use crate::config::Config;
use crate::output::{finding_json, finding_text, rfc3339};
use crate::procfs::read_kernel_facts;
use crate::procfs::scan::{ScanOptions, ScanStats, Scanner};

/// What one scan found.
pub struct ScanReport {
    pub findings: Vec<Finding>,
    pub stats: ScanStats,
    pub kernel: KernelFacts,
    pub taken_at: u64,
    pub namespaces: usize,
}

impl ScanReport {
    pub fn leaks(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.kind == FindingKind::Leak)
            .count()
    }

    pub fn risks(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.kind == FindingKind::Risk)
            .count()
    }
}

/// Scans every namespace (device facts of every process included, so a
/// filesystem kept alive only by a cwd or an open file is found too).
pub fn scan(cfg: &Config) -> anyhow::Result<ScanReport> {
    let kernel = read_kernel_facts();
    let mut model = Model::new(crate::model_config(cfg, kernel.clone()));
    let mut scanner = Scanner::new();
    let out = scanner
        .scan(&ScanOptions::default().with_all_devices())
        .context("scanning /proc")?;
    let taken_at = out.snapshot.taken_at;
    let namespaces = out
        .snapshot
        .alive
        .as_ref()
        .map_or(out.snapshot.namespaces.len(), Vec::len);
    model.apply(&Input::Snapshot(out.snapshot));
    // Lets the grace period count from what the snapshot said about ages.
    model.apply(&Input::Tick { now: taken_at });
    Ok(ScanReport {
        findings: model.open_findings(),
        stats: out.stats,
        kernel,
        taken_at,
        namespaces,
    })
}

/// Prints a report; returns the exit code (0 clean, 1 leak, or risk with
/// `fail_on_risk`).
pub fn print(
    report: &ScanReport,
    json: bool,
    fail_on_risk: bool,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let failing = report.leaks() > 0 || (fail_on_risk && report.risks() > 0);
    if json {
        let doc = json!({
            "schema": crate::output::SCHEMA_VERSION,
            "time": rfc3339(report.taken_at),
            "kernel": report.kernel.release,
            "detaches_on_rmdir": report.kernel.detaches_on_rmdir(),
            "namespaces": report.namespaces,
            "processes": report.stats.processes,
            "duration_ms": report.stats.duration.as_secs_f64() * 1000.0,
            "complete": report.stats.unread.is_empty(),
            "unread_namespaces": report.stats.unread.iter().map(|(ns, why)| json!({"mnt_ns": ns, "error": why})).collect::<Vec<_>>(),
            "leaks": report.leaks(),
            "risks": report.risks(),
            "findings": report.findings.iter().map(finding_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            out,
            "mountleak scan: {} leak(s), {} risk(s); kernel {}; {} mount namespaces, {} processes read in {} ms",
            report.leaks(),
            report.risks(),
            report.kernel.release,
            report.namespaces,
            report.stats.processes,
            report.stats.duration.as_millis()
        )?;
        for (ns, why) in &report.stats.unread {
            writeln!(out, "warning: could not read mount namespace {ns}: {why}")?;
        }
        if report.stats.malformed_lines > 0 {
            writeln!(
                out,
                "warning: skipped {} malformed mountinfo lines (see -v)",
                report.stats.malformed_lines
            )?;
        }
        for f in &report.findings {
            writeln!(out)?;
            write!(out, "{}", finding_text(f))?;
        }
        if report.findings.is_empty() {
            writeln!(
                out,
                "No container mount is held by another mount namespace."
            )?;
        }
    }
    out.flush()?;
    Ok(u8::from(failing))
}
