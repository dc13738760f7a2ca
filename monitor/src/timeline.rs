//! Postmortem timelines: the event store the daemon keeps, and
//! `mountleak timeline TARGET`, which tells from it how a container mount
//! ended up held somewhere else — after the holder is gone and across
//! daemon restarts.
//!
//! # Layout
//! - [`event`]: which inputs are kept and the record each becomes (raw
//!   event JSON with a stable schema).
//! - [`store`]: the SQLite file (schema, batches, retention, lookups).
//! - [`writer`]: the writer thread behind a bounded queue; [`sink`]: the
//!   daemon's `Sink` feeding it without ever blocking.
//! - [`query`]: TARGET parsing and the walk from a target to its rows.
//! - [`story`]: rows → [`schema::Timeline`] (pure); [`text`], [`html`]:
//!   its renderings (pure); [`schema`]: the JSON document, also read back
//!   by `--import`.
//!
//! This file is the thin command around them.

pub mod event;
pub mod html;
pub mod query;
pub mod schema;
pub mod sink;
pub mod store;
pub mod story;
pub mod text;
pub mod writer;

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context as _};

pub use sink::StoreSink;

use crate::cli::TimelineArgs;
use crate::config::Config;
use event::{rfc3339_ns, unix_ns};
use query::{collect, StoreLookup, Target};
use schema::{TargetInfo, Timeline};
use store::Store;

/// For `mountleak fix --yes` (its `record_in_timeline` hook): adds a remedy
/// it carried out for `finding` on the mount at `path` to the store the
/// daemon keeps, so the mount's timeline tells how it was resolved. `step`
/// is fix's record of the action, kept as given. Nothing is created: with
/// no store (or `[store] enabled = false`) this does nothing.
pub fn record_remedy(
    cfg: &Config,
    finding: &str,
    path: Option<&[u8]>,
    container: Option<&str>,
    step: serde_json::Value,
) -> Result<(), store::StoreError> {
    if !cfg.store.enabled || !cfg.store.path.exists() {
        return Ok(());
    }
    let kt = crate::procfs::clock::boottime_ns();
    let rec = event::remedy_record(
        kt,
        unix_ns(SystemTime::now()),
        finding,
        path,
        container,
        step,
    );
    Store::append(&cfg.store.path, &[rec])
}

/// Runs `mountleak timeline`; returns the exit code (errors exit 2).
pub fn run(cfg: &Config, args: &TimelineArgs) -> anyhow::Result<u8> {
    let timeline = match &args.import {
        Some(file) => {
            if args.target.is_some() || args.since.is_some() || args.until.is_some() {
                bail!("--import renders a saved timeline as it is: leave out TARGET, --since and --until");
            }
            import(file)?
        }
        None => from_store(cfg, args)?,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(file) = &args.html {
        let page = html::render(&timeline);
        std::fs::write(file, page).with_context(|| format!("writing {}", file.display()))?;
        writeln!(
            out,
            "wrote {}: {} step(s), {} lifeline(s); {}",
            file.display(),
            timeline.steps.len(),
            timeline.lifelines.len(),
            timeline.summary
        )?;
    } else if crate::config::Format::Json == cfg.output.format {
        serde_json::to_writer_pretty(&mut out, &timeline)?;
        writeln!(out)?;
    } else {
        out.write_all(text::render(&timeline).as_bytes())?;
    }
    out.flush()?;
    Ok(0)
}

fn import(file: &Path) -> anyhow::Result<Timeline> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Timeline::import(&text).with_context(|| format!("{} cannot be imported", file.display()))
}

fn from_store(cfg: &Config, args: &TimelineArgs) -> anyhow::Result<Timeline> {
    let Some(query) = &args.target else {
        bail!("give a TARGET (container id or name, pod NAMESPACE/NAME, mount path, mount namespace id or pid), or --import FILE");
    };
    let target = Target::parse(query).map_err(anyhow::Error::msg)?;
    let now = SystemTime::now();
    let since = args
        .since
        .as_deref()
        .map(|s| parse_when(s, now).map_err(|e| anyhow::anyhow!("--since {e}")))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| parse_when(s, now).map_err(|e| anyhow::anyhow!("--until {e}")))
        .transpose()?;
    if let (Some(a), Some(b)) = (since, until) {
        if a > b {
            bail!("--since is after --until");
        }
    }
    let path = args.store.as_deref().unwrap_or(&cfg.store.path);
    let store = Store::open_existing(path)?;
    let Some(related) = collect(&target, &mut StoreLookup(&store))? else {
        let stats = store.stats()?;
        let extent = match (stats.first_wall_ns, stats.last_wall_ns) {
            (Some(a), Some(b)) => format!(
                "it holds {} event(s) from {} to {}",
                stats.events,
                rfc3339_ns(a),
                rfc3339_ns(b)
            ),
            _ => "it holds no events yet".into(),
        };
        bail!(
            "unknown target {query:?} ({}): the store {} knows no such {}; {extent}",
            target.kind(),
            path.display(),
            match target.kind() {
                "container" => "container id, id prefix or name",
                "pod" => "pod",
                "path" => "mount path",
                "mnt_ns" => "mount namespace",
                _ => "pid",
            }
        );
    };
    let host = store
        .runs()
        .ok()
        .and_then(|runs| runs.last().and_then(|(_, r)| r.hostname.clone()));
    let ctx = story::Context {
        target: Some(TargetInfo {
            query: query.clone(),
            kind: target.kind().into(),
            matched: related.matched.clone(),
        }),
        generated_at_ns: unix_ns(now),
        host,
        since_ns: since,
        until_ns: until,
        notes: related.notes.clone(),
    };
    let timeline = story::build(ctx, &related.rows);
    if timeline.steps.is_empty() {
        bail!(
            "nothing recorded for {query:?} between {} and {}",
            since
                .map(rfc3339_ns)
                .unwrap_or_else(|| "the beginning".into()),
            until.map(rfc3339_ns).unwrap_or_else(|| "now".into())
        );
    }
    Ok(timeline)
}

/// `--since`/`--until`: RFC3339 (`2026-11-27T13:52:33Z`, a space for the
/// `T` and no zone are fine, UTC assumed), a date, or a duration ago (`2h`).
fn parse_when(text: &str, now: SystemTime) -> Result<i64, String> {
    let t = text.trim();
    let full = if t.len() == 10 && t.as_bytes().get(4) == Some(&b'-') {
        format!("{t}T00:00:00Z")
    } else {
        t.to_string()
    };
    if let Ok(at) = humantime::parse_rfc3339_weak(&full) {
        return Ok(unix_ns(at));
    }
    if let Ok(ago) = humantime::parse_duration(t) {
        return Ok(unix_ns(
            now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
    Err(format!(
        "{text:?}: not a time (RFC3339 such as 2026-11-27T13:52:33Z) nor a duration ago (such as 2h)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_and_durations_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_when("2h", now),
            Ok((1_000_000 - 7200) * 1_000_000_000)
        );
        assert_eq!(parse_when("1970-01-02", now), Ok(86_400 * 1_000_000_000));
        assert_eq!(
            parse_when("1970-01-01T00:00:10Z", now),
            Ok(10 * 1_000_000_000)
        );
        assert_eq!(
            parse_when("1970-01-01 00:00:10", now),
            Ok(10 * 1_000_000_000)
        );
        assert!(parse_when("yesterday", now)
            .unwrap_err()
            .contains("not a time"));
    }
}
