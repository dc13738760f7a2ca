//! Daemon memory: VmRSS and VmHWM (/proc/PID/status) of `mountleak run`
//! idle after startup, right after 10,000 mount namespaces were created and
//! destroyed (helper `__churn`; every 10th enters the fixture's host
//! namespace first, so its copy holds a container overlay and lives 3 s,
//! past the risk grace, and the model tracks it), and 30 s later. Run in the
//! fixture's host namespace (the reference) with `--probes syscalls` and with
//! `--no-ebpf`. Target: under 50 MiB, and flat (back to about idle).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use super::fixture::{Fixture, Spec};
use super::probes::run_helper;
use super::tracer::{Tools, Tracer};
use super::{sys, Section};

pub const NAMESPACES: u64 = 10_000;
const HOLD_EVERY: u64 = 10;
const HOLD_MS: u64 = 3_000;
/// One fork per millisecond or so: the churn takes ~15 s and about 300
/// overlay holders are alive at any time.
const PACE_US: u64 = 1_000;
const SETTLE: Duration = Duration::from_secs(30);
const TARGET_KIB: u64 = 50 * 1024;

const SPEC: Spec = Spec {
    mounts: 0,
    holders: 0,
    per: 1,
    overlay: "keep",
};

#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
    /// The anonymous part of rss (heap, stacks), without mapped files.
    anon: u64,
}

fn mem(pid: u32) -> Result<Mem> {
    Ok(Mem {
        rss: sys::status_kib(pid, "VmRSS").context("VmRSS")?,
        hwm: sys::status_kib(pid, "VmHWM").context("VmHWM")?,
        anon: sys::status_kib(pid, "RssAnon").context("RssAnon")?,
    })
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB (anon {:.1}), HWM {:.1} MiB",
            mib(self.rss),
            mib(self.anon),
            mib(self.hwm)
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Outcome {
    idle: Mem,
    after: Mem,
    settled: Mem,
    /// After a second churn of the same size: a leak grows again, memory
    /// the allocator merely kept from the first does not.
    again: Mem,
    peak_rss: u64,
    churn_wall: Duration,
    daemon_cpu: Duration,
    kinds: BTreeMap<String, u64>,
    output_bytes: usize,
}

fn churn(host_pid: u32) -> Result<Duration> {
    let started = Instant::now();
    let line = run_helper(
        &[
            "__churn".into(),
            "--target".into(),
            host_pid.to_string(),
            "--count".into(),
            NAMESPACES.to_string(),
            "--hold-every".into(),
            HOLD_EVERY.to_string(),
            "--hold-ms".into(),
            HOLD_MS.to_string(),
            "--pace-us".into(),
            PACE_US.to_string(),
        ],
        Duration::from_secs(600),
    )?;
    ensure!(
        sys::field(&line, "namespaces")? as u64 == NAMESPACES,
        "churn: {line}"
    );
    Ok(started.elapsed())
}

fn one(mode: &'static str, tools: &Tools, out_dir: &Path) -> Result<Outcome> {
    let fx = Fixture::start(&SPEC)?;
    let tracer = Tracer::Mountleak(mode);
    let label = tracer.label();
    let mut daemon = tracer
        .start(tools, Some(&fx))?
        .context("mountleak is a tracer")?;
    let pid = daemon.pid();
    thread::sleep(Duration::from_secs(2));
    let idle = mem(pid)?;
    println!("bench: memory {label}: idle: {idle}");

    let churn_wall = churn(fx.host_pid)?;
    daemon.check()?;
    let after = mem(pid)?;
    println!(
        "bench: memory {label}: after {NAMESPACES} namespaces ({:.1} s): {after}",
        churn_wall.as_secs_f64()
    );
    let mut peak_rss = after.rss;
    let settle_start = Instant::now();
    while settle_start.elapsed() < SETTLE {
        thread::sleep(Duration::from_secs(1));
        daemon.check()?;
        peak_rss = peak_rss.max(mem(pid)?.rss);
    }
    let settled = mem(pid)?;
    println!(
        "bench: memory {label}: {} s later: {settled}",
        SETTLE.as_secs()
    );

    churn(fx.host_pid)?;
    // Let the risk grace and the next poll pass, as after the first churn.
    thread::sleep(Duration::from_secs(5));
    daemon.check()?;
    let again = mem(pid)?;
    peak_rss = peak_rss.max(again.rss);
    println!("bench: memory {label}: after another {NAMESPACES} namespaces: {again}");

    let stopped = daemon.stop()?;
    let mut kinds = BTreeMap::new();
    for l in &stopped.lines {
        let ty = sys::json_string(l, "type").unwrap_or_default();
        let key = if ty == "finding" {
            format!(
                "finding:{}",
                sys::json_string(l, "kind").unwrap_or_default()
            )
        } else {
            ty
        };
        *kinds.entry(key).or_insert(0) += 1;
    }
    let output_bytes = stopped.lines.iter().map(|l| l.len() + 1).sum();
    let log = out_dir.join(format!("memory-{mode}.jsonl"));
    fs::write(&log, stopped.lines.join("\n") + "\n")
        .with_context(|| format!("write {}", log.display()))?;
    fx.teardown()?;
    Ok(Outcome {
        idle,
        after,
        settled,
        again,
        peak_rss,
        churn_wall,
        daemon_cpu: stopped.cpu,
        kinds,
        output_bytes,
    })
}

pub fn run(tools: &Tools, out_dir: &Path) -> Result<Section> {
    let mut body = format!(
        "{NAMESPACES} mount namespaces created and destroyed (fork, unshare, exit; one fork \
         every ~{PACE_US} µs, ~15 s); every {HOLD_EVERY}th is a copy of the fixture's host \
         namespace with a Docker-style overlay mounted, alive {HOLD_MS} ms (past the 2 s risk \
         grace), so about 300 holders of it exist at any moment. The daemon runs in the \
         fixture's host namespace; its stdout is read and kept. RSS (anonymous part) and HWM \
         from /proc/PID/status. The last column repeats the churn once more: memory that a leak \
         holds grows again, memory the allocator kept from the first round does not.\n\n\
         | mode | idle | after churn | +{}s | after a 2nd churn | daemon CPU | output |\n\
         |---|---|---|---|---|---|---|\n",
        SETTLE.as_secs()
    );
    let mut verdicts = Vec::new();
    for mode in ["syscalls", "off"] {
        let label = Tracer::Mountleak(mode).label();
        let o = one(mode, tools, out_dir).with_context(|| label.clone())?;
        let kinds = o
            .kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let cell = |m: Mem| {
            format!(
                "{:.1} ({:.1}) / {:.1} MiB",
                mib(m.rss),
                mib(m.anon),
                mib(m.hwm)
            )
        };
        body += &format!(
            "| `{label}` | {} | {} | {} | {} | {:.1} s | {kinds}; {:.1} MiB of JSON |\n",
            cell(o.idle),
            cell(o.after),
            cell(o.settled),
            cell(o.again),
            o.daemon_cpu.as_secs_f64(),
            o.output_bytes as f64 / (1024.0 * 1024.0),
        );
        let peak = o.again.hwm.max(o.peak_rss);
        verdicts.push(format!(
            "`{label}`: peak {:.1} MiB ({}); RSS {:+.1} MiB after the first churn, {:+.1} MiB \
             30 s later, {:+.1} MiB after the second (vs idle); churn took {:.1} s",
            mib(peak),
            if peak < TARGET_KIB {
                "under 50 MiB"
            } else {
                "OVER 50 MiB"
            },
            mib(o.after.rss) - mib(o.idle.rss),
            mib(o.settled.rss) - mib(o.idle.rss),
            mib(o.again.rss) - mib(o.idle.rss),
            o.churn_wall.as_secs_f64(),
        ));
    }
    body += &format!(
        "\nCells: RSS (anonymous) / HWM. Target (under 50 MiB and flat): {}.\n\n\
         Command: `cargo xtask bench memory` (daemon output kept in target/bench/memory-*.jsonl).",
        verdicts.join("; ")
    );
    Ok(Section {
        title: "memory: daemon RSS under namespace churn".into(),
        body,
    })
}
