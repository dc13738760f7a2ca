//! The tax on everything else: the wall time of a getppid(2) loop pinned to
//! one CPU (helper `__getppid` under `taskset -c 1`), with no tracer and
//! under each tracer. Attaching any `syscalls/*` tracepoint sends every
//! system call of every process through the tracing slow path
//! (PLATFORM.md: +23% on this loop with one sys_enter_mount tracepoint), so
//! `--probes syscalls` should cost about that, and `lean` and `--no-ebpf`
//! about nothing.

use std::time::Duration;

use anyhow::{Context, Result};

use super::probes::run_helper;
use super::tracer::{self, Tools, Tracer};
use super::{sys, Section};

pub const CALLS: u64 = 20_000_000;
pub const ROUNDS: usize = 5;
/// The loop's CPU; the tracers may run anywhere.
const CPU: usize = 1;

const TRACERS: [Tracer; 5] = [
    Tracer::None,
    Tracer::Mountleak("syscalls"),
    Tracer::Mountleak("lean"),
    Tracer::Mountleak("off"),
    Tracer::BpftraceOneMount,
];

fn loop_once() -> Result<f64> {
    let line = run_helper(
        &[
            "__getppid".into(),
            "--calls".into(),
            CALLS.to_string(),
            "--cpu".into(),
            CPU.to_string(),
        ],
        Duration::from_secs(300),
    )?;
    Ok(sys::field(&line, "wall_ns")? / CALLS as f64)
}

pub fn run(tools: &Tools) -> Result<Section> {
    loop_once()?; // untimed warm-up
    let mut samples: Vec<Vec<f64>> = TRACERS.iter().map(|_| Vec::new()).collect();
    let mut tracer_cpu: Vec<Vec<f64>> = TRACERS.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for k in 0..TRACERS.len() {
            let i = (round + k) % TRACERS.len();
            let t = TRACERS[i];
            let running = t.start(tools, None).with_context(|| t.label())?;
            let ns = loop_once().with_context(|| format!("round {round}: {}", t.label()))?;
            let cpu = match running {
                Some(r) => r.stop()?.cpu,
                None => Duration::ZERO,
            };
            println!(
                "bench: tax round {}/{ROUNDS}: {:<40} {ns:>6.1} ns/call, tracer cpu {:>6.1} ms",
                round + 1,
                t.label(),
                cpu.as_secs_f64() * 1e3
            );
            samples[i].push(ns);
            tracer_cpu[i].push(cpu.as_secs_f64() * 1e3);
        }
    }
    let base = sys::median(&samples[0]);
    let mut body = format!(
        "Loop: {CALLS} getppid() calls pinned to CPU {CPU} (sched_setaffinity, as `taskset -c {CPU}`), wall time. \
         Median of {ROUNDS} interleaved runs.\n\n\
         | tracer | ns per call | slowdown | runs (ns/call) | tracer CPU |\n|---|---|---|---|---|\n"
    );
    let mut slow = Vec::new();
    for ((t, v), c) in TRACERS.iter().zip(&samples).zip(&tracer_cpu) {
        let m = sys::median(v);
        let pct = (m / base - 1.0) * 100.0;
        slow.push((*t, pct));
        body += &format!(
            "| {} | {m:.1} | {} | {} | {:.0} ms |\n",
            t.label(),
            if *t == Tracer::None {
                "—".to_owned()
            } else {
                format!("{pct:+.1}%")
            },
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            sys::median(c)
        );
    }
    let pct = |t: Tracer| {
        slow.iter()
            .find(|(x, _)| *x == t)
            .map_or(f64::NAN, |(_, p)| *p)
    };
    body += &format!(
        "\nExpectation (PLATFORM.md): any syscall tracepoint ≈ +23%, lean ≈ 0. Measured: \
         `--probes syscalls` {:+.1}%, one bpftrace tracepoint {:+.1}%, `--probes lean` {:+.1}%, \
         `--no-ebpf` {:+.1}%.\n\nCommand: `cargo xtask bench tax` (bpftrace: `bpftrace -e '{}'`).",
        pct(Tracer::Mountleak("syscalls")),
        pct(Tracer::BpftraceOneMount),
        pct(Tracer::Mountleak("lean")),
        pct(Tracer::Mountleak("off")),
        tracer::BPFTRACE_ONE_MOUNT,
    );
    Ok(Section {
        title: "tax: getppid slowdown (cost on every other syscall)".into(),
        body,
    })
}
