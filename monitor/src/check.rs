//! `mountleak check TARGET`: will removing this container, pod or mount
//! fail or leave something pinned? One read of /proc and the runtimes, no
//! daemon needed, so it fits a pre-removal hook or a `preStop`.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;

use anyhow::Context;
use monitor_model::{
    CheckReport, ContainerEvent, ContainerHint, ContainerInfo, Input, Model, NsId, PathBytes,
    Reference,
};
use serde_json::json;

use crate::config::Config;
use crate::output::{finding_json, finding_text, rfc3339};
use crate::procfs::clock::boottime_ns;
use crate::procfs::read_kernel_facts;
use crate::procfs::scan::{mnt_ns_of, own_mnt_ns, ScanOptions, Scanner, TableScope};

/// What TARGET names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An absolute mount path.
    Path(PathBytes),
    /// `NAMESPACE/NAME`: a Kubernetes pod.
    Pod { namespace: String, name: String },
    /// A container id, id prefix or name.
    Container(String),
}

impl Target {
    pub fn parse(s: &str) -> anyhow::Result<Target> {
        if s.is_empty() {
            anyhow::bail!("empty target: give a container id or name, a pod as NAMESPACE/NAME, or a mount path");
        }
        if s.starts_with('/') {
            return Ok(Target::Path(PathBytes::from(s)));
        }
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Target::Pod {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            Some(_) => {
                anyhow::bail!("{s:?} is neither a pod (NAMESPACE/NAME) nor an absolute path")
            }
            None => Ok(Target::Container(s.to_string())),
        }
    }
}

/// The answer, with what it was about.
pub struct CheckOutcome {
    pub target: String,
    /// The containers the target resolved to (empty for a path).
    pub containers: Vec<ContainerInfo>,
    pub report: CheckReport,
    pub kernel: String,
    pub taken_at: u64,
    /// Runtimes that could not be asked, and why.
    pub unreachable: Vec<String>,
}

/// Resolves the target with the runtimes, reads /proc once (every table,
/// in part where the kernel allows, see [`scope_for`]; devices of every
/// process: a stopped container's overlay may survive only as a pinned,
/// detached filesystem), and asks the model.
pub async fn check(cfg: &Config, target: &str) -> anyhow::Result<CheckOutcome> {
    let parsed = Target::parse(target)?;
    let started = std::time::Instant::now();
    let (containers, unreachable) = match &parsed {
        Target::Path(_) => (Vec::new(), Vec::new()),
        other => crate::runtime::lookup(cfg, other).await,
    };
    if !matches!(parsed, Target::Path(_)) && containers.is_empty() {
        let why = if unreachable.is_empty() {
            String::new()
        } else {
            format!(" ({})", unreachable.join("; "))
        };
        anyhow::bail!(
            "unknown target {target:?}: no runtime knows a container or pod by that name{why}"
        );
    }

    let kernel = read_kernel_facts();
    let mut model = Model::new(crate::model_config(cfg, kernel.clone()));
    let at = boottime_ns();
    for info in &containers {
        model.apply(&Input::Container(ContainerEvent::Seen {
            at,
            info: Box::new(info.clone()),
        }));
    }
    let opts =
        ScanOptions::default()
            .with_all_devices()
            .scoped(scope_for(cfg, &parsed, &containers));
    let out = tokio::task::spawn_blocking(move || Scanner::new().scan(&opts))
        .await
        .context("scan task")?
        .context("scanning /proc")?;
    let taken_at = out.snapshot.taken_at;
    let scanned = started.elapsed();
    model.apply(&Input::Snapshot(out.snapshot));
    model.apply(&Input::Tick { now: taken_at });
    tracing::debug!(
        lookup_ms = (scanned - out.stats.duration).as_secs_f64() * 1e3,
        scan_ms = out.stats.duration.as_secs_f64() * 1e3,
        model_ms = (started.elapsed() - scanned).as_secs_f64() * 1e3,
        processes = out.stats.processes,
        tables = out.stats.tables.len(),
        partial = out.stats.partial_tables,
        phases = ?out.stats.phases,
        "check: where the time went"
    );

    let report = match &parsed {
        Target::Path(p) => match model.check_path(p) {
            Some(r) => r,
            None if cfg.patterns().matches(p) => CheckReport { filesystems: 0, held: false, findings: Vec::new() },
            None => anyhow::bail!(
                "unknown target {target:?}: no container mount is known at that path (container mount patterns: see `mountleak config`)"
            ),
        },
        _ => {
            let mut all = CheckReport { filesystems: 0, held: false, findings: Vec::new() };
            for c in &containers {
                if let Some(r) = model.check_container(&c.runtime, &c.id) {
                    all.filesystems += r.filesystems;
                    all.held |= r.held;
                    all.findings.extend(r.findings);
                }
            }
            all
        }
    };
    Ok(CheckOutcome {
        target: target.to_string(),
        containers,
        report,
        kernel: kernel.release,
        taken_at,
        unreachable,
    })
}

/// What of the node the answer needs: the host tables whole (ours, pid 1's
/// and any configured reference namespace), and of the others only the
/// mounts of the target's filesystems and of filesystems the host no longer
/// shows. A node of 400 namespaces each with a copy of 300 container
/// rootfs is then read in a fraction of the time (BENCHMARKS.md).
fn scope_for(cfg: &Config, target: &Target, containers: &[ContainerInfo]) -> TableScope {
    let mut full: BTreeSet<NsId> = [own_mnt_ns(), mnt_ns_of(1)].into_iter().flatten().collect();
    if let Reference::Namespaces(list) = cfg.reference() {
        full.extend(list);
    }
    let target: Box<dyn Fn(&PathBytes) -> bool + Send + Sync> = match target {
        Target::Path(p) => {
            let p = p.clone();
            Box::new(move |m| *m == p)
        }
        _ => {
            let paths: HashSet<PathBytes> = containers
                .iter()
                .flat_map(|c| c.mounts.iter().cloned())
                .collect();
            // A pod's volumes: kubelet paths naming its uid, the rule the
            // model itself uses to give a mount to a pod.
            let uids: HashSet<String> = containers
                .iter()
                .filter_map(|c| c.pod.as_ref())
                .map(|p| p.uid.clone())
                .filter(|u| !u.is_empty())
                .collect();
            Box::new(move |m| {
                paths.contains(m)
                    || (!uids.is_empty()
                        && ContainerHint::from_path(m)
                            .pod_uid
                            .is_some_and(|u| uids.contains(&u)))
            })
        }
    };
    TableScope { full, target }
}

/// Prints the answer; returns the exit code: 0 safe, 1 held.
pub fn print(o: &CheckOutcome, json: bool, out: &mut impl Write) -> anyhow::Result<u8> {
    let code = u8::from(o.report.held);
    if json {
        let doc = json!({
            "schema": crate::output::SCHEMA_VERSION,
            "time": rfc3339(o.taken_at),
            "target": o.target,
            "kernel": o.kernel,
            "verdict": if o.report.held { "held" } else { "safe" },
            "filesystems": o.report.filesystems,
            "containers": o.containers.iter().map(|c| json!({
                "runtime": c.runtime, "namespace": c.namespace, "id": c.id, "name": c.name,
                "image": c.image, "pod": c.pod, "state": c.state,
            })).collect::<Vec<_>>(),
            "unreachable_runtimes": o.unreachable,
            "findings": o.report.findings.iter().map(finding_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        let what = match o.containers.as_slice() {
            [] => o.target.clone(),
            [c] => format!(
                "{} ({} {})",
                o.target,
                c.runtime,
                c.id.chars().take(12).collect::<String>()
            ),
            many => format!("{} ({} containers)", o.target, many.len()),
        };
        if o.report.held {
            writeln!(
                out,
                "HELD: removing {what} will fail or leave something pinned."
            )?;
        } else if o.report.findings.is_empty() {
            writeln!(
                out,
                "SAFE: nothing holds {what} ({} container filesystems checked).",
                o.report.filesystems
            )?;
        } else {
            writeln!(
                out,
                "SAFE: removing {what} will detach the copies below; nothing stays pinned."
            )?;
        }
        for w in &o.unreachable {
            writeln!(out, "note: {w}")?;
        }
        for f in &o.report.findings {
            writeln!(out)?;
            write!(out, "{}", finding_text(f))?;
        }
    }
    out.flush()?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("/var/lib/x").unwrap(),
            Target::Path("/var/lib/x".into())
        );
        assert_eq!(
            Target::parse("shop/web-7f9c").unwrap(),
            Target::Pod {
                namespace: "shop".into(),
                name: "web-7f9c".into()
            }
        );
        assert_eq!(
            Target::parse("web").unwrap(),
            Target::Container("web".into())
        );
        assert!(Target::parse("").is_err());
        assert!(Target::parse("a/b/c").is_err());
        assert!(Target::parse("/").is_ok());
    }
}
