//! `mountleak fix TARGET [--yes] [--kill]`: releases what holds a container,
//! pod or mount, the way that works for each holder, and only when asked.
//!
//! TARGET is resolved like `mountleak check` (a container id, prefix or
//! name, a pod `NAMESPACE/NAME`, a mount path), or is a finding id `ML-N`
//! from a scan. One read of /proc goes through the model; its findings name
//! the holders, and [`plan`] turns each into actions. Without `--yes`
//! nothing is changed: the exact actions are printed. With `--yes` each
//! action is checked again right before it runs ([`act`]), carried out by
//! [`os`] (setns(2) + umount2(2) in a forked child, never nsenter), printed
//! and logged as it completes, and a second read of /proc reports what
//! remains.
//!
//! Finding ids are numbered per scan, so `ML-N` names whatever the fresh
//! scan numbers N: fine to look at, not to act on. With `--yes` an id is
//! refused and the command to run with the mount's path is printed.
//!
//! Exit codes: 0 nothing holds the target (after acting: released); 1 a
//! dry run with something to do, or something still held after acting; 2
//! error (unknown or ambiguous target, not a container mount, needs root).

pub mod act;
pub mod os;
pub mod plan;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use monitor_model::finding::{Finding, FindingKind};
use monitor_model::{ContainerEvent, ContainerInfo, Input, KernelFacts, Model};
use serde_json::json;

use crate::check::Target;
use crate::cli::FixArgs;
use crate::config::{Config, Format};
use crate::output::{finding_json, SCHEMA_VERSION};
use crate::procfs::clock::boottime_ns;
use crate::procfs::read_kernel_facts;
use crate::procfs::scan::{ScanOptions, Scanner};
use act::{Record, Status};
use plan::{Item, Options};

/// Test hook (tests/fix.rs): with `--yes`, after printing the plan, create
/// `<path>.ready` and wait until `<path>` is removed (at most a minute)
/// before acting, so a test can make a target vanish or a holder exit
/// between the plan and the action. Unset in normal use.
pub const PAUSE_ENV: &str = "MOUNTLEAK_FIX_TEST_PAUSE";

/// What TARGET names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixTarget {
    /// A finding id from a scan.
    Finding(String),
    Check(Target),
}

impl FixTarget {
    pub fn parse(s: &str) -> anyhow::Result<FixTarget> {
        if let Some(n) = s.strip_prefix("ML-") {
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(FixTarget::Finding(s.to_string()));
            }
        }
        Ok(FixTarget::Check(Target::parse(s)?))
    }
}

/// Namespaces a scan could not read, and why.
type Unread = Vec<(u64, String)>;

/// The findings a target resolved to.
struct Resolved {
    findings: Vec<Finding>,
    /// Container filesystems looked at (for "nothing holds it").
    filesystems: usize,
    containers: Vec<ContainerInfo>,
    kernel: KernelFacts,
    unread: Unread,
}

/// Adds an action `fix --yes` carried out (with its outcome) to the event
/// store the daemon keeps, so the mount's timeline tells how it was
/// resolved. A store that cannot take it costs a warning, never the fix.
fn record_in_timeline(cfg: &Config, rec: &Record, finding: Option<&Finding>) {
    let path = finding.map(|f| f.mount.path.as_bytes());
    let container = finding.and_then(|f| f.mount.owner.as_ref().map(|o| o.id.as_str()));
    let step = serde_json::to_value(rec).unwrap_or_default();
    if let Err(err) = crate::timeline::record_remedy(cfg, &rec.finding, path, container, step) {
        tracing::warn!(finding = %rec.finding, "the event store did not take this fix action: {err}");
    }
}

/// Runs `mountleak fix`; returns the exit code.
pub fn run(cfg: &Config, args: &FixArgs) -> anyhow::Result<u8> {
    let json = cfg.output.format == Format::Json;
    let target = FixTarget::parse(&args.target)?;
    if args.yes {
        require_privileges(args.kill)?;
    }
    let resolved = resolve(cfg, &target)?;
    if args.yes {
        if let FixTarget::Finding(id) = &target {
            let f = &resolved.findings[0];
            if f.mount.path.is_empty() {
                anyhow::bail!(
                    "finding ids are numbered per scan, so `--yes` does not act on one; {id} in this scan is a detached {} filesystem ({}) with no path: target its container, or stop the process that keeps it (see `mountleak fix {id}`)",
                    f.mount.fstype,
                    f.mount.dev.as_deref().unwrap_or("?")
                );
            }
            anyhow::bail!(
                "finding ids are numbered per scan, so `--yes` does not act on one; {id} in this scan is {}: run `mountleak fix {} --yes`",
                f.mount.path,
                f.mount.path.shell_quoted()
            );
        }
    }
    let patterns = cfg.patterns();
    let opts = Options { kill: args.kill };
    let items: Vec<Item> = resolved
        .findings
        .iter()
        .map(|f| plan::plan_finding(f, &resolved.kernel, &patterns, opts))
        .collect();

    let mut out = std::io::stdout().lock();
    if !json {
        print_header(&mut out, args, &resolved, &items)?;
    }
    if args.yes && !items.is_empty() {
        pause_for_tests();
    }

    let me = std::process::id();
    let ancestors = os::ancestors();
    let mut current = String::new();
    let records = act::execute(
        &items,
        &os::RealSystem,
        !args.yes,
        me,
        &ancestors,
        &mut |rec| {
            if args.yes {
                log_record(rec);
                let finding = resolved.findings.iter().find(|f| f.id == rec.finding);
                record_in_timeline(cfg, rec, finding);
            }
            if !json {
                let _ = print_record(&mut out, rec, &items, &mut current);
            }
        },
    );

    let acted = args.yes && records.iter().any(|r| r.status != Status::Skipped);
    let remaining = if args.yes && !items.is_empty() {
        let verify = verify(cfg, &items)?;
        Some(verify)
    } else {
        None
    };

    let nothing = items
        .iter()
        .all(|i| i.steps.is_empty() && i.not_done.is_empty());
    let code = match &remaining {
        Some(left) => u8::from(!left.is_empty()),
        None => u8::from(!nothing),
    };
    if json {
        let doc = json!({
            "schema": SCHEMA_VERSION,
            "target": args.target,
            "dry_run": !args.yes,
            "kill": args.kill,
            "kernel": resolved.kernel.release,
            "containers": resolved.containers.iter().map(|c| json!({"runtime": c.runtime, "id": c.id, "name": c.name})).collect::<Vec<_>>(),
            "filesystems": resolved.filesystems,
            "unread_namespaces": resolved.unread.iter().map(|(ns, why)| json!({"mnt_ns": ns, "error": why})).collect::<Vec<_>>(),
            "items": items.iter().map(|i| json!({
                "finding": i.id,
                "kind": i.kind.as_str(),
                "summary": i.summary,
                "path": i.path.lossy(),
                "dev": i.dev,
                "fstype": i.fstype,
                "not_done": i.not_done,
            })).collect::<Vec<_>>(),
            "actions": records,
            "remaining": remaining.as_ref().map(|r| r.iter().map(finding_json).collect::<Vec<_>>()),
            "released": remaining.as_ref().map(Vec::is_empty),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        print_footer(
            &mut out,
            args,
            &items,
            &records,
            remaining.as_deref(),
            acted,
        )?;
    }
    out.flush()?;
    Ok(code)
}

/// `--yes` needs to enter other mount namespaces (CAP_SYS_ADMIN and
/// CAP_SYS_CHROOT for setns(2)), unmount (CAP_SYS_ADMIN) and, with
/// `--kill`, signal other users' processes (CAP_KILL).
fn require_privileges(kill: bool) -> anyhow::Result<()> {
    let caps = os::effective_caps();
    let mut missing = Vec::new();
    for (bit, name) in [
        (os::CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (os::CAP_SYS_CHROOT, "CAP_SYS_CHROOT"),
    ] {
        if caps & (1 << bit) == 0 {
            missing.push(name);
        }
    }
    if kill && caps & (1 << os::CAP_KILL) == 0 {
        missing.push("CAP_KILL");
    }
    if !missing.is_empty() {
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        anyhow::bail!(
            "`mountleak fix --yes` needs root: entering other mount namespaces and unmounting need {} (running as uid {uid}); nothing was changed. Run it as root, or without --yes to see what it would do",
            missing.join(", ")
        );
    }
    Ok(())
}

/// One read of /proc through the model, with the runtimes' containers.
fn scan_model(
    cfg: &Config,
    containers: &[ContainerInfo],
) -> anyhow::Result<(Model, KernelFacts, Unread)> {
    let kernel = read_kernel_facts();
    let mut model = Model::new(crate::model_config(cfg, kernel.clone()));
    let at = boottime_ns();
    for info in containers {
        model.apply(&Input::Container(ContainerEvent::Seen {
            at,
            info: Box::new(info.clone()),
        }));
    }
    let out = Scanner::new()
        .scan(&ScanOptions::default().with_all_devices())
        .context("scanning /proc")?;
    let taken_at = out.snapshot.taken_at;
    model.apply(&Input::Snapshot(out.snapshot));
    model.apply(&Input::Tick { now: taken_at });
    Ok((model, kernel, out.stats.unread))
}

fn resolve(cfg: &Config, target: &FixTarget) -> anyhow::Result<Resolved> {
    let patterns = cfg.patterns();
    let containers = match target {
        FixTarget::Check(t @ (Target::Container(_) | Target::Pod { .. })) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let (found, unreachable) = rt.block_on(crate::runtime::lookup(cfg, t));
            let why = if unreachable.is_empty() {
                String::new()
            } else {
                format!(" ({})", unreachable.join("; "))
            };
            if found.is_empty() {
                // Docker answers an id prefix shared by several containers
                // with an error, not a list.
                if unreachable
                    .iter()
                    .any(|u| u.to_ascii_lowercase().contains("multiple ids"))
                {
                    anyhow::bail!(
                        "ambiguous target: it names several containers{why}; give a longer id"
                    );
                }
                anyhow::bail!(
                    "unknown target: no runtime knows a container or pod by that name{why}"
                );
            }
            if let Target::Container(name) = t {
                if found.len() > 1 {
                    let list: Vec<String> = found
                        .iter()
                        .map(|c| {
                            format!(
                                "{} {} ({})",
                                c.runtime,
                                c.id.chars().take(12).collect::<String>(),
                                c.name
                            )
                        })
                        .collect();
                    anyhow::bail!(
                        "ambiguous target {name:?}: it names {} containers ({}); give a longer id",
                        found.len(),
                        list.join(", ")
                    );
                }
            }
            found
        }
        FixTarget::Check(Target::Path(p)) => {
            if !patterns.matches(p) {
                anyhow::bail!(
                    "{p} is not a container mount (container mount patterns: see `mountleak config`); fix never touches other mounts"
                );
            }
            Vec::new()
        }
        _ => Vec::new(),
    };
    let (mut model, kernel, unread) = scan_model(cfg, &containers)?;
    let open = model.open_findings();
    let (findings, filesystems) = match target {
        FixTarget::Finding(id) => {
            let f = open.into_iter().find(|f| &f.id == id).with_context(|| {
                format!("no finding {id} in a fresh scan: finding ids are numbered per scan, so take the id from a `mountleak scan` run just before, or give the mount path")
            })?;
            (vec![f], 1)
        }
        FixTarget::Check(Target::Path(p)) => {
            let n = model.check_path(p).map_or(0, |r| r.filesystems);
            let found: Vec<Finding> = open.into_iter().filter(|f| f.mount.path == *p).collect();
            (found, n.max(1))
        }
        FixTarget::Check(_) => {
            let mut ids = Vec::new();
            let mut n = 0;
            for c in &containers {
                if let Some(r) = model.check_container(&c.runtime, &c.id) {
                    n += r.filesystems;
                    ids.extend(r.findings.into_iter().map(|f| f.id));
                }
            }
            let found: Vec<Finding> = open.into_iter().filter(|f| ids.contains(&f.id)).collect();
            (found, n)
        }
    };
    let findings = findings
        .into_iter()
        .filter(|f| matches!(f.kind, FindingKind::Risk | FindingKind::Leak))
        .collect();
    Ok(Resolved {
        findings,
        filesystems,
        containers,
        kernel,
        unread,
    })
}

/// A fresh read after acting: the findings still open on the same
/// filesystems (by path, or by device for a detached one).
fn verify(cfg: &Config, items: &[Item]) -> anyhow::Result<Vec<Finding>> {
    let (model, _, _) = scan_model(cfg, &[]).context("verifying (a new scan)")?;
    Ok(model
        .open_findings()
        .into_iter()
        .filter(|f| {
            // By path, or by device: after a lazy umount a filesystem kept
            // alive by a cwd is in no table, and its finding has no path.
            items.iter().any(|i| {
                (!i.path.is_empty() && f.mount.path == i.path)
                    || (i.dev.is_some() && f.mount.dev == i.dev)
            })
        })
        .collect())
}

fn pause_for_tests() {
    let Some(path) = std::env::var_os(PAUSE_ENV) else {
        return;
    };
    let path = Path::new(&path).to_path_buf();
    let mut ready = path.clone().into_os_string();
    ready.push(".ready");
    if let Err(err) = std::fs::write(&ready, b"") {
        tracing::warn!(%err, "test pause: cannot create the ready file");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_record(rec: &Record) {
    let action = serde_json::to_value(&rec.action)
        .ok()
        .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_string))
        .unwrap_or_default();
    match rec.status {
        Status::Failed => tracing::warn!(
            finding = %rec.finding,
            step = rec.n,
            action,
            status = "failed",
            errno = rec.errno,
            detail = %rec.detail,
            "fix action failed"
        ),
        _ => tracing::info!(
            finding = %rec.finding,
            step = rec.n,
            action,
            status = ?rec.status,
            detail = %rec.detail,
            "fix action"
        ),
    }
}

fn print_header(
    out: &mut impl Write,
    args: &FixArgs,
    r: &Resolved,
    items: &[Item],
) -> std::io::Result<()> {
    let mode = if args.yes {
        "carrying out the actions below"
    } else {
        "dry run: nothing is changed (add --yes to carry it out)"
    };
    writeln!(out, "mountleak fix {}: {mode}", args.target)?;
    for c in &r.containers {
        writeln!(
            out,
            "target: {} container {} ({})",
            c.runtime,
            c.id.chars().take(12).collect::<String>(),
            c.name
        )?;
    }
    for (ns, why) in &r.unread {
        writeln!(out, "warning: could not read mount namespace {ns}: {why}")?;
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        writeln!(
            out,
            "note: running as uid {uid}: other users' mount namespaces may be unreadable, so holders may be missing; `--yes` needs root"
        )?;
    }
    if items.is_empty() {
        writeln!(
            out,
            "Nothing holds {}: no other mount namespace has a copy ({} container filesystem(s) checked).",
            args.target, r.filesystems
        )?;
    }
    Ok(())
}

fn print_item(out: &mut impl Write, i: &Item) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{} {}: {} ({} {})",
        i.id,
        i.kind.as_str(),
        i.summary,
        i.fstype,
        i.dev.as_deref().unwrap_or("?")
    )?;
    for n in &i.not_done {
        writeln!(
            out,
            "  not done: {} in mnt ns {}: {}",
            n.holder, n.mnt_ns, n.why
        )?;
    }
    Ok(())
}

fn print_record(
    out: &mut impl Write,
    rec: &Record,
    items: &[Item],
    current: &mut String,
) -> std::io::Result<()> {
    if *current != rec.finding {
        current.clone_from(&rec.finding);
        if let Some(i) = items.iter().find(|i| i.id == rec.finding) {
            print_item(out, i)?;
        }
    }
    writeln!(out, "  {}. {}", rec.n, rec.text)?;
    let status = match rec.status {
        Status::Planned => return out.flush(),
        Status::Done => "done",
        Status::AlreadyReleased => "already released",
        Status::Skipped => "skipped",
        Status::Failed => "FAILED",
    };
    writeln!(out, "     {status}: {}", rec.detail)?;
    out.flush()
}

fn print_footer(
    out: &mut impl Write,
    args: &FixArgs,
    items: &[Item],
    records: &[Record],
    remaining: Option<&[Finding]>,
    acted: bool,
) -> std::io::Result<()> {
    for i in items.iter().filter(|i| i.steps.is_empty()) {
        print_item(out, i)?;
        writeln!(out, "  no action can release it here")?;
    }
    let planned = records.len();
    match remaining {
        None if planned > 0 => {
            writeln!(out)?;
            writeln!(
                out,
                "{planned} action(s) planned; `mountleak fix {} --yes{}` carries them out.",
                args.target,
                if args.kill { " --kill" } else { "" }
            )?;
        }
        None => {}
        Some(left) => {
            writeln!(out)?;
            let failed = records
                .iter()
                .filter(|r| r.status == Status::Failed)
                .count();
            if failed > 0 {
                writeln!(out, "{failed} action(s) failed (see above).")?;
            }
            if !acted {
                writeln!(out, "No action was needed.")?;
            }
            if left.is_empty() {
                writeln!(
                    out,
                    "verify (a new scan): released; no other mount namespace holds {} any more.",
                    args.target
                )?;
            } else {
                writeln!(out, "verify (a new scan): still held:")?;
                for f in left {
                    writeln!(out, "  {} {}: {}", f.id, f.kind.as_str(), f.summary)?;
                    for r in f.remedy.iter().take(1) {
                        writeln!(out, "    {r}")?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            FixTarget::parse("ML-12").unwrap(),
            FixTarget::Finding("ML-12".into())
        );
        assert_eq!(
            FixTarget::parse("ML-x").unwrap(),
            FixTarget::Check(Target::Container("ML-x".into()))
        );
        assert_eq!(
            FixTarget::parse("/var/lib/docker/overlay2/a/merged").unwrap(),
            FixTarget::Check(Target::Path("/var/lib/docker/overlay2/a/merged".into()))
        );
        assert!(FixTarget::parse("").is_err());
    }
}
