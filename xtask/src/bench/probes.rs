//! Probe overhead on mount work: the CPU time of a loop that mounts and
//! unmounts a tmpfs and forks a child that unshares a mount namespace (helper
//! `__mount-loop`, in a throwaway namespace), with no tracer and under each
//! tracer. The loop's own CPU time (itself plus its children, user + system,
//! getrusage) is the measurement; each tracer's CPU time is shown beside it.
//! Target: mountleak close to the in-kernel bpftrace counter, far below
//! mountsnoop (PLATFORM.md: ~9% vs ~60% system time on a mount loop).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::tracer::{self, Tools, Tracer};
use super::{sys, Section};

/// Iterations per run (each: mount, umount, fork, unshare, exit, wait).
pub const ITERATIONS: u64 = 10_000;
/// Runs per tracer, interleaved; the median is reported.
pub const ROUNDS: usize = 5;

const TRACERS: [Tracer; 5] = [
    Tracer::None,
    Tracer::Mountleak("syscalls"),
    Tracer::Mountleak("lean"),
    Tracer::Mountsnoop,
    Tracer::BpftraceCounter,
];

/// A directory that exists for the bench and is removed after it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir(&self.0) {
            eprintln!("bench: remove {}: {err}", self.0.display());
        }
    }
}

/// One run of the loop.
struct Sample {
    /// Loop CPU, user + system, itself and its children.
    cpu: Duration,
    sys: Duration,
    wall: Duration,
    /// Times the loop process was preempted, per iteration.
    preempted: f64,
    /// The tracer's CPU over the same run.
    tracer_cpu: Duration,
    /// What the tracer saw, as a check that it traced the loop.
    seen: String,
}

/// Runs helper `args` (`__name --key value ...`) and returns its one line
/// of output.
pub fn run_helper(args: &[String], timeout: Duration) -> Result<String> {
    let mut cmd = Command::new(sys::self_exe()?);
    cmd.arg("bench").args(args);
    let line = crate::cmd::show(&cmd);
    let (guard, lines) = sys::spawn_piped(&mut cmd, "a bench loop")?;
    let status = guard.wait(timeout)?;
    let out = lines.all(Duration::from_secs(5));
    ensure!(status.success(), "`{line}` failed ({status}): {out:?}");
    out.last()
        .cloned()
        .with_context(|| format!("`{line}` printed nothing"))
}

/// (CPU, system CPU, wall, involuntary context switches per iteration).
fn loop_once(dir: &Path) -> Result<(Duration, Duration, Duration, f64)> {
    let line = run_helper(
        &[
            "__mount-loop".into(),
            "--iterations".into(),
            ITERATIONS.to_string(),
            "--dir".into(),
            dir.display().to_string(),
        ],
        Duration::from_secs(300),
    )?;
    let us = |k: &str| sys::field(&line, k).map(|v| Duration::from_micros(v as u64));
    let sys_time = us("sys_us")? + us("child_sys_us")?;
    let cpu = sys_time + us("user_us")? + us("child_user_us")?;
    let preempted = sys::field(&line, "nivcsw")? / ITERATIONS as f64;
    Ok((cpu, sys_time, us("wall_us")?, preempted))
}

fn sample(tracer: Tracer, tools: &Tools, dir: &Path) -> Result<Sample> {
    let running = tracer.start(tools, None)?;
    let (cpu, sys_time, wall, preempted) = loop_once(dir)?;
    let (tracer_cpu, seen) = match running {
        None => (Duration::ZERO, String::new()),
        Some(r) => {
            let stopped = r.stop()?;
            let seen = match tracer {
                Tracer::Mountsnoop => {
                    format!("{} events printed", stopped.lines.len().saturating_sub(1))
                }
                Tracer::BpftraceCounter => {
                    let n = |p: &str| {
                        tracer::bpftrace_count(&stopped.lines, &format!("tracepoint:syscalls:{p}"))
                            .unwrap_or(0)
                    };
                    format!(
                        "counted {} mount, {} umount, {} unshare",
                        n("sys_enter_mount"),
                        n("sys_enter_umount"),
                        n("sys_enter_unshare")
                    )
                }
                _ => format!("{} output lines", stopped.lines.len()),
            };
            (stopped.cpu, seen)
        }
    };
    Ok(Sample {
        cpu,
        sys: sys_time,
        wall,
        preempted,
        tracer_cpu,
        seen,
    })
}

pub fn run(tools: &Tools) -> Result<Section> {
    let dir =
        Scratch(std::env::temp_dir().join(format!("mountleak-bench-loop-{}", std::process::id())));
    fs::create_dir_all(&dir.0)?;
    // Warm the page cache and the allocator paths once, untimed.
    loop_once(&dir.0)?;
    let mut samples: Vec<Vec<Sample>> = TRACERS.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        // Rotate the order so slow drift (thermal, page cache) spreads evenly.
        for k in 0..TRACERS.len() {
            let i = (round + k) % TRACERS.len();
            let s = sample(TRACERS[i], tools, &dir.0)
                .with_context(|| format!("round {round}: {}", TRACERS[i].label()))?;
            println!(
                "bench: probes round {}/{ROUNDS}: {:<34} loop cpu {:>7.1} ms (sys {:>7.1}), wall \
                 {:>7.1} ms, preempted {:.2}/iter, tracer cpu {:>6.1} ms, {}",
                round + 1,
                TRACERS[i].label(),
                ms(s.cpu),
                ms(s.sys),
                ms(s.wall),
                s.preempted,
                ms(s.tracer_cpu),
                s.seen
            );
            samples[i].push(s);
        }
    }
    let med = |v: &[Sample], f: fn(&Sample) -> Duration| {
        sys::median(&v.iter().map(|s| ms(f(s))).collect::<Vec<_>>())
    };
    let base = med(&samples[0], |s| s.cpu);
    let base_sys = med(&samples[0], |s| s.sys);
    let mut body = format!(
        "Loop: {ITERATIONS} × (mount tmpfs, umount, fork a child that unshares a mount namespace \
         and exits), in a throwaway namespace. Median of {ROUNDS} interleaved runs; loop CPU = \
         user + system of the loop and its children (getrusage). Wall time is shown but is not \
         the measure: umount and namespace teardown wait for RCU grace periods, so the loop \
         sleeps most of the time and its wall time swings with whatever else runs.\n\n\
         | tracer | loop CPU (min–max) | added | loop system, added | preempted / iteration | wall | tracer CPU | what it saw (last run) |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    let mut added = Vec::new();
    for (t, v) in TRACERS.iter().zip(&samples) {
        let cpu = med(v, |s| s.cpu);
        let pct = (cpu / base - 1.0) * 100.0;
        added.push((*t, pct));
        let cpus: Vec<f64> = v.iter().map(|s| ms(s.cpu)).collect();
        let (lo, hi) = cpus
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let none = *t == Tracer::None;
        body += &format!(
            "| {} | {cpu:.0} ms ({lo:.0}–{hi:.0}) | {} | {:.0} ms{} | {:.2} | {:.0} ms | {:.0} ms | {} |\n",
            t.label(),
            if none { "—".to_owned() } else { format!("{pct:+.1}%") },
            med(v, |s| s.sys),
            if none {
                String::new()
            } else {
                format!(", {:+.1}%", (med(v, |s| s.sys) / base_sys - 1.0) * 100.0)
            },
            sys::median(&v.iter().map(|s| s.preempted).collect::<Vec<_>>()),
            med(v, |s| s.wall),
            med(v, |s| s.tracer_cpu),
            v.last().map_or("", |s| s.seen.as_str()),
        );
    }
    let pct = |t: Tracer| {
        added
            .iter()
            .find(|(x, _)| *x == t)
            .map_or(f64::NAN, |(_, p)| *p)
    };
    let (full, lean, snoop, counter) = (
        pct(Tracer::Mountleak("syscalls")),
        pct(Tracer::Mountleak("lean")),
        pct(Tracer::Mountsnoop),
        pct(Tracer::BpftraceCounter),
    );
    body += &format!(
        "\nTarget (close to the counter, far below mountsnoop): `--probes syscalls` {full:+.1}% \
         vs counter {counter:+.1}% and mountsnoop {snoop:+.1}%; `--probes lean` {lean:+.1}%.\n\n\
         Command: `cargo xtask bench probes` (tracers: `{}`, `{}`, `{}`, `bpftrace -e '{}'`).",
        tools.mountleak.display().to_string() + " run --json --probes syscalls",
        tools.mountleak.display().to_string() + " run --json --probes lean",
        tools
            .mountsnoop
            .as_ref()
            .map_or("mountsnoop".into(), |p| p.display().to_string()),
        tracer::BPFTRACE_COUNTER,
    );
    Ok(Section {
        title: "probes: overhead on mount work".into(),
        body,
    })
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
