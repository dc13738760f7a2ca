//! `cargo xtask bench [model|scan|probes|tax|memory|lifecycle|all]`: the measurements
//! behind BENCHMARKS.md, each against its target from the performance issue.
//!
//! Owns: the bench command, its helper processes (helper.rs), the namespace
//! fixture (fixture.rs), the tracers compared (tracer.rs) and one module per
//! bench. Needs root (namespaces, mounts, eBPF); installs the bench-only
//! Debian packages it lacks (hyperfine, libbpf-tools, bpftrace); `lifecycle`
//! also runs a real dockerd (docker.rs; setup installs docker.io). Everything
//! except `model` runs under the root tests' file lock, so no test lab and
//! no other bench overlaps it. Figures go to the terminal and, as Markdown,
//! to target/bench/results.md.
//!
//! May import: std, anyhow, libc, and the rest of xtask.

mod docker;
mod fixture;
mod helper;
mod lifecycle;
mod memory;
mod model;
mod probes;
mod scan;
mod sys;
mod tax;
mod tracer;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use tracer::Tools;

pub const USAGE: &str = "\
usage: cargo xtask bench [model|scan|probes|tax|memory|lifecycle|all]...

  model    criterion bench of the model on a realistic event mix (events/s)
  scan     `mountleak scan --json` beside `grep -l PATH /proc/*/mountinfo`
           on 1,000 processes in 200 namespaces of 500 mounts (hyperfine)
  probes   CPU cost added to a mount/umount/unshare loop by each tracer
  tax      slowdown of a getppid loop (every other syscall) by each tracer
  memory   daemon RSS idle, after 10,000 namespaces, and 30 s later
  lifecycle  real dockerd, 200 running containers: docker stop -> removal
           warning latency, and `mountleak check NAME` with 200 private
           namespaces (2 to 5 min; not part of `all`)
  all      model scan probes tax memory (default)
";

/// How long a bench waits for other work on the machine to finish.
const QUIET_WAIT: Duration = Duration::from_secs(600);

/// The benches in the order `all` runs them (cheapest first).
const ALL: [&str; 5] = ["model", "scan", "probes", "tax", "memory"];
/// Benches run only when named: they need more than the others (a real
/// dockerd and hundreds of containers) and take as long as `all`.
const EXTRA: [&str; 1] = ["lifecycle"];

/// One bench's result as Markdown, for results.md and the terminal.
pub struct Section {
    pub title: String,
    pub body: String,
}

pub fn run(args: &[String]) -> Result<()> {
    if let Some(first) = args.first().filter(|a| a.starts_with("__")) {
        return helper::main(first, &args[1..]);
    }
    let mut chosen: Vec<&str> = Vec::new();
    for arg in args {
        match arg.as_str() {
            "all" => chosen.extend(ALL),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            name if ALL.contains(&name) || EXTRA.contains(&name) => {
                let known = ALL.iter().chain(&EXTRA);
                chosen.extend(known.copied().find(|a| *a == name))
            }
            other => bail!("unknown bench `{other}`\n\n{USAGE}"),
        }
    }
    if chosen.is_empty() {
        chosen.extend(ALL);
    }
    chosen.dedup();
    let started = Instant::now();

    let mut packages = Vec::new();
    if chosen.contains(&"scan") {
        packages.push("hyperfine");
    }
    if chosen.contains(&"lifecycle") {
        packages.extend(["docker.io", "busybox-static"]);
    }
    if chosen.contains(&"probes") {
        packages.extend(["libbpf-tools", "bpftrace"]);
    }
    if chosen.contains(&"tax") {
        packages.push("bpftrace");
    }
    packages.dedup();
    sys::ensure_packages(&packages)?;
    // util-linux (nsenter, taskset) and the eBPF toolchain for the build.
    crate::setup::run()?;

    let out_dir = crate::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let needs_daemon = chosen.iter().any(|c| *c != "model");
    if needs_daemon {
        crate::cmd::step(
            "build mountleak (release)",
            crate::cargo().args(["build", "--release", "-p", "monitor"]),
        )?;
    }
    if chosen.contains(&"model") {
        model::build()?;
    }
    let tools = Tools {
        mountleak: crate::target_dir().join("release/mountleak"),
        mountsnoop: if chosen.contains(&"probes") {
            Some(sys::package_file("libbpf-tools", "mountsnoop")?)
        } else {
            None
        },
        logs: out_dir.join("logs"),
    };

    // From here to the end, no test lab may exist: scans and daemons see
    // every namespace on the machine, and tracers slow every process.
    let _lock = sys::lock()?;
    let mut sections = Vec::new();
    for name in &chosen {
        println!("\n==> bench {name}");
        let (busy, quiet) = sys::wait_quiet(QUIET_WAIT);
        let bench_started = Instant::now();
        let section = match *name {
            "model" => model::run(),
            "scan" => scan::run(&tools, &out_dir),
            "probes" => probes::run(&tools),
            "tax" => tax::run(&tools),
            "memory" => memory::run(&tools, &out_dir),
            "lifecycle" => lifecycle::run(&tools, &out_dir),
            _ => unreachable!("checked above"),
        }
        .with_context(|| format!("bench {name}"))?;
        let section = Section {
            body: format!(
                "{}\n\nMachine before this bench: {:.0}% busy with other work{}.",
                section.body,
                busy * 100.0,
                if quiet {
                    ""
                } else {
                    " (NOT quiet: these figures are noisy)"
                }
            ),
            ..section
        };
        println!(
            "\n### {} ({:.0} s)\n\n{}",
            section.title,
            bench_started.elapsed().as_secs_f64(),
            section.body
        );
        sections.push(section);
    }
    drop(_lock);

    let mut md = String::new();
    writeln!(md, "# mountleak bench results\n")?;
    writeln!(md, "{}\n", machine())?;
    for s in &sections {
        writeln!(md, "## {}\n\n{}\n", s.title, s.body)?;
    }
    writeln!(
        md,
        "`cargo xtask bench {}` took {:.0} s.",
        chosen.join(" "),
        started.elapsed().as_secs_f64()
    )?;
    let path: PathBuf = out_dir.join("results.md");
    fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
    println!(
        "\nbench: done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// CPUs, kernel and rustc, for the results file.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let rustc =
        crate::cmd::probe(std::process::Command::new("rustc").arg("--version")).unwrap_or_default();
    // The build is of the work tree, which may differ from the commit.
    let commit = crate::cmd::probe(
        std::process::Command::new("git")
            .current_dir(crate::repo_root())
            .args(["describe", "--always", "--dirty", "--abbrev=12"]),
    )
    .unwrap_or_default();
    format!(
        "Machine: {cpus} vCPU ({model}), kernel {}, {}. Source: {}.",
        kernel.trim(),
        rustc.trim(),
        commit.trim()
    )
}
