//! Model throughput: monitor-model's criterion bench on its realistic event
//! mix (monitor-model/benches/apply.rs), read back as events per second.
//! Target (issue 2 §7): at least 1,000,000 events/s on one core.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{sys, Section};

const TARGET_EVENTS_PER_SEC: f64 = 1_000_000.0;
/// Events per criterion iteration (`Throughput::Elements(100)` in apply.rs).
const EVENTS_PER_ITER: f64 = 100.0;
/// criterion's directory for group "model", function
/// "apply/realistic_mix_100_events".
const ESTIMATES: &str = "criterion/model/apply_realistic_mix_100_events/new/estimates.json";

pub const COMMAND: &str = "cargo bench -p monitor-model --bench apply";

/// Compiles the bench before the lock is taken.
pub fn build() -> Result<()> {
    crate::cmd::step(
        "build the model bench",
        crate::cargo().args([
            "bench",
            "-p",
            "monitor-model",
            "--bench",
            "apply",
            "--no-run",
        ]),
    )
}

pub fn run() -> Result<Section> {
    let estimates: PathBuf = crate::target_dir().join(ESTIMATES);
    // A stale file must not pass for this run's result.
    let _ = std::fs::remove_file(&estimates);
    crate::cmd::run(crate::cargo().args(["bench", "-p", "monitor-model", "--bench", "apply"]))?;
    let text = sys::read_text(&estimates)?;
    let ns = |stat: &str| -> Result<f64> {
        let at = text
            .find(&format!("\"{stat}\":"))
            .with_context(|| format!("no {stat} in {}", estimates.display()))?;
        sys::json_number(&text[at..], "point_estimate")
            .with_context(|| format!("no {stat}.point_estimate in {}", estimates.display()))
    };
    let (mean, median) = (ns("mean")?, ns("median")?);
    let rate = |ns_per_iter: f64| EVENTS_PER_ITER / (ns_per_iter * 1e-9);
    let verdict = if rate(mean) >= TARGET_EVENTS_PER_SEC {
        "meets"
    } else {
        "MISSES"
    };
    let body = format!(
        "| statistic | time per 100 events | events/s (one core) |\n\
         |---|---|---|\n\
         | mean | {:.1} µs | {:.2} M |\n\
         | median | {:.1} µs | {:.2} M |\n\n\
         Target ≥ 1.00 M events/s: {verdict} ({:.1}x). Command: `{COMMAND}`.",
        mean / 1e3,
        rate(mean) / 1e6,
        median / 1e3,
        rate(median) / 1e6,
        rate(mean) / TARGET_EVENTS_PER_SEC,
    );
    Ok(Section {
        title: "model: events per second".into(),
        body,
    })
}
