//! The one-shot scan on a busy node, beside the field report's manual method.
//!
//! Fixture: 1,000 processes in 200 mount namespaces of ~530 mounts each (500
//! tmpfs mounts plus the machine's own), all copies of one private host
//! namespace; the first holder keeps the only copy of a Docker-style overlay
//! that the host has unmounted. Measured with hyperfine:
//! `mountleak scan --json` run in the fixture's host namespace (nsenter, so
//! that namespace is the reference), and `grep -l PATH /proc/*/mountinfo`.
//! Target: the scan is faster than the grep while it tells far more (which
//! namespace, which processes, what happens on this kernel, what to do).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use super::fixture::{Fixture, Spec};
use super::tracer::Tools;
use super::{sys, Section};

const SPEC: Spec = Spec {
    mounts: 500,
    holders: 200,
    per: 5,
    overlay: "leak",
};
const WARMUP: u32 = 3;
const RUNS: u32 = 10;

/// One command's figures from hyperfine's JSON export, in seconds.
struct Timing {
    mean: f64,
    stddev: f64,
    median: f64,
    min: f64,
    max: f64,
    user: f64,
    system: f64,
}

fn timings(json: &str) -> Result<Vec<(String, Timing)>> {
    let mut out = Vec::new();
    for chunk in json.split("\"command\":").skip(1) {
        let name = chunk
            .trim_start()
            .strip_prefix('"')
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let n = |key: &str| {
            sys::json_number(chunk, key).with_context(|| format!("no {key} for {name}"))
        };
        out.push((
            name.clone(),
            Timing {
                mean: n("mean")?,
                stddev: n("stddev")?,
                median: n("median")?,
                min: n("min")?,
                max: n("max")?,
                user: n("user")?,
                system: n("system")?,
            },
        ));
    }
    Ok(out)
}

pub fn run(tools: &Tools, out_dir: &Path) -> Result<Section> {
    let fx = Fixture::start(&SPEC)?;
    let path = fx
        .overlay
        .clone()
        .context("the scan fixture has an overlay")?
        .display()
        .to_string();
    let processes = sys::processes_in(&fx.namespaces).len();
    let first_holder = *fx.holder_pids.first().context("the fixture has holders")?;
    let mounts_per_ns = fs::read_to_string(format!("/proc/{first_holder}/mountinfo"))?
        .lines()
        .count();
    let total_mounts: usize = fx
        .holder_pids
        .iter()
        .map(|pid| {
            fs::read_to_string(format!("/proc/{pid}/mountinfo")).map_or(0, |t| t.lines().count())
        })
        .sum();
    println!(
        "bench: scan fixture: {processes} processes in {} namespaces, {mounts_per_ns} mounts per \
         namespace ({total_mounts} in the holders), leaked copy of {path}",
        fx.namespaces.len()
    );

    // What each method tells, once, checked.
    let scan = fx
        .command(&tools.mountleak)
        .args(["scan", "--json"])
        .output()
        .context("run mountleak scan")?;
    let scan_json = String::from_utf8_lossy(&scan.stdout).into_owned();
    ensure!(
        scan.status.code() == Some(1),
        "mountleak scan should exit 1 (a leak) on the fixture, got {}: {}",
        scan.status,
        String::from_utf8_lossy(&scan.stderr)
    );
    ensure!(
        scan_json.contains(&path),
        "mountleak scan does not name {path}: {scan_json}"
    );
    fs::write(out_dir.join("scan-output.json"), &scan_json)?;
    let field = |key: &str| sys::json_number(&scan_json, key).unwrap_or(f64::NAN);
    let (leaks, risks, scanned_ns, scanned_procs, internal_ms) = (
        field("leaks"),
        field("risks"),
        field("namespaces"),
        field("processes"),
        field("duration_ms"),
    );
    let grep_line = format!("grep -l {path} /proc/*/mountinfo");
    let grep = Command::new("sh")
        .args(["-c", &grep_line])
        .output()
        .context("run grep")?;
    let grep_hits = String::from_utf8_lossy(&grep.stdout).lines().count();
    ensure!(
        grep_hits == SPEC.per as usize,
        "grep should list the {} processes of the holder, listed {grep_hits}",
        SPEC.per
    );

    let scan_line = format!(
        "{} {} scan --json",
        fx.nsenter_prefix(),
        tools.mountleak.display()
    );
    let export = out_dir.join("scan-hyperfine.json");
    // -i: the scan exits 1 when it finds a leak (it does here), and grep
    // exits 2 when a process vanishes between the glob and the read (the
    // shell hyperfine starts is one); both were checked above.
    crate::cmd::run(
        Command::new("hyperfine")
            .args(["--style", "basic", "-i"])
            .args(["--warmup", &WARMUP.to_string(), "--runs", &RUNS.to_string()])
            .arg("--export-json")
            .arg(&export)
            .args(["-n", "mountleak scan --json", &scan_line])
            .args(["-n", "grep -l", &grep_line]),
    )?;
    let results = timings(&sys::read_text(&export)?)?;
    let namespaces = fx.namespaces.len();
    fx.teardown()?;

    let mut body = format!(
        "Fixture: {processes} processes in {namespaces} mount namespaces, {mounts_per_ns} mounts each \
         ({total_mounts} mounts in the holders); one holder keeps the only copy of an overlay \
         the host unmounted. hyperfine, {WARMUP} warmup runs, {RUNS} runs.\n\n\
         | method | mean ± σ | median | min … max | user | system |\n|---|---|---|---|---|---|\n",
    );
    for (name, t) in &results {
        body += &format!(
            "| `{name}` | {:.1} ± {:.1} ms | {:.1} ms | {:.1} … {:.1} ms | {:.1} ms | {:.1} ms |\n",
            t.mean * 1e3,
            t.stddev * 1e3,
            t.median * 1e3,
            t.min * 1e3,
            t.max * 1e3,
            t.user * 1e3,
            t.system * 1e3
        );
    }
    let mean_of = |prefix: &str| {
        results
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map_or(f64::NAN, |(_, t)| t.mean)
    };
    let ratio = mean_of("grep") / mean_of("mountleak");
    body += &format!(
        "\nmountleak scan: exit 1, {leaks} leak(s), {risks} risk(s), {scanned_ns} namespaces and \
         {scanned_procs} processes read, {internal_ms:.1} ms by its own clock; every finding names \
         the holder's namespace, its processes (pid, comm, unit), propagation, what this kernel \
         will do and the remedy. grep: {grep_hits} file names, nothing else.\n\n\
         Target (faster than the grep): {} ({ratio:.1}x the grep's speed).\n\n\
         Commands: `{scan_line}` and `{grep_line}` (the pid and path are the fixture's).",
        if ratio > 1.0 { "meets" } else { "MISSES" }
    );
    Ok(Section {
        title: "scan: 1,000 processes in 200 namespaces of 500 mounts".into(),
        body,
    })
}
