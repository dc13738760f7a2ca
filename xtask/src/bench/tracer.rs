//! The tracers the overhead benches compare: mountleak in each probe mode,
//! and the peers (libbpf-tools `mountsnoop`, bpftrace). Starting one returns
//! only once its programs are attached, checked from outside the process
//! (sys.rs `wait_attached`), not just once it says so; stopping one returns
//! its output and the CPU time it used in between.

use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::fixture::Fixture;
use super::sys::{self, Guard, Lines};

/// The peer's in-kernel counter, verbatim from the bench's brief: the three
/// syscalls of the mount loop, counted in a BPF map, nothing sent to user
/// space per event.
pub const BPFTRACE_COUNTER: &str = "tracepoint:syscalls:sys_enter_mount,tracepoint:syscalls:sys_enter_umount,tracepoint:syscalls:sys_enter_unshare { @[probe] = count(); }";

/// One syscall tracepoint and the cheapest possible program on it: what any
/// syscall-tracepoint tracer costs every other process (PLATFORM.md).
pub const BPFTRACE_ONE_MOUNT: &str = "tracepoint:syscalls:sys_enter_mount { @ = count(); }";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracer {
    None,
    /// `mountleak run --probes <mode>`; "off" runs `--no-ebpf`.
    Mountleak(&'static str),
    Mountsnoop,
    BpftraceCounter,
    BpftraceOneMount,
}

/// Paths the tracers run from.
pub struct Tools {
    pub mountleak: PathBuf,
    pub mountsnoop: Option<PathBuf>,
    /// Where each tracer's stderr goes.
    pub logs: PathBuf,
}

impl Tracer {
    pub fn label(self) -> String {
        match self {
            Tracer::None => "no tracer".into(),
            Tracer::Mountleak("off") => "mountleak --no-ebpf".into(),
            Tracer::Mountleak(mode) => format!("mountleak --probes {mode}"),
            Tracer::Mountsnoop => "mountsnoop (libbpf-tools)".into(),
            Tracer::BpftraceCounter => "bpftrace counter (3 tracepoints)".into(),
            Tracer::BpftraceOneMount => "bpftrace, one sys_enter_mount tracepoint".into(),
        }
    }

    fn slug(self) -> String {
        self.label()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    }

    /// The command, or None for [`Tracer::None`]. `fixture`: run it inside
    /// the fixture's host namespace.
    pub fn command(self, tools: &Tools, fixture: Option<&Fixture>) -> Result<Option<Command>> {
        let (program, args): (PathBuf, Vec<String>) = match self {
            Tracer::None => return Ok(None),
            Tracer::Mountleak(mode) => {
                let mut args = vec!["run".to_owned(), "--json".to_owned()];
                if mode == "off" {
                    args.push("--no-ebpf".into());
                } else {
                    args.extend(["--probes".to_owned(), mode.to_owned()]);
                }
                (tools.mountleak.clone(), args)
            }
            Tracer::Mountsnoop => (
                tools
                    .mountsnoop
                    .clone()
                    .context("mountsnoop is not installed (libbpf-tools)")?,
                vec![],
            ),
            Tracer::BpftraceCounter => (
                "bpftrace".into(),
                vec!["-e".into(), BPFTRACE_COUNTER.into()],
            ),
            Tracer::BpftraceOneMount => (
                "bpftrace".into(),
                vec!["-e".into(), BPFTRACE_ONE_MOUNT.into()],
            ),
        };
        let mut cmd = match fixture {
            Some(f) => f.command(&program),
            None => Command::new(&program),
        };
        cmd.args(args);
        Ok(Some(cmd))
    }

    /// The tracepoints that must carry its programs before it counts as
    /// running. mountleak's list comes from its ready line.
    fn required(self) -> &'static [&'static str] {
        match self {
            Tracer::None | Tracer::Mountleak(_) => &[],
            Tracer::Mountsnoop => &[
                "sys_enter_mount",
                "sys_exit_mount",
                "sys_enter_umount",
                "sys_exit_umount",
            ],
            Tracer::BpftraceCounter => {
                &["sys_enter_mount", "sys_enter_umount", "sys_enter_unshare"]
            }
            Tracer::BpftraceOneMount => &["sys_enter_mount"],
        }
    }

    /// Starts it and waits until it is attached (and, for mountleak, past
    /// its startup scan). None for [`Tracer::None`].
    pub fn start(self, tools: &Tools, fixture: Option<&Fixture>) -> Result<Option<Running>> {
        let Some(mut cmd) = self.command(tools, fixture)? else {
            return Ok(None);
        };
        fs::create_dir_all(&tools.logs)?;
        let log = tools.logs.join(format!("{}.stderr", self.slug()));
        let stderr: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        cmd.stderr(stderr);
        let started = Instant::now();
        let (guard, mut lines) = sys::spawn_piped(&mut cmd, &self.label())?;
        let pid = guard.pid();
        let attached = match self {
            Tracer::Mountleak(mode) => {
                let ready = lines
                    .wait_for(Duration::from_secs(120), |l| {
                        l.contains("\"type\":\"ready\"")
                    })
                    .with_context(|| {
                        format!(
                            "{} never printed its ready line (see {})",
                            self.label(),
                            log.display()
                        )
                    })?;
                let got = sys::json_string(&ready, "probes").unwrap_or_default();
                ensure!(
                    got == mode,
                    "{} came up with probes {got:?}, not {mode:?}: {ready}",
                    self.label()
                );
                let names = attached_list(&ready);
                let required: Vec<&str> = names.iter().map(String::as_str).collect();
                sys::wait_attached(pid, &required, Duration::from_secs(30))?
            }
            _ => sys::wait_attached(pid, self.required(), Duration::from_secs(60)).with_context(
                || format!("{} did not attach (see {})", self.label(), log.display()),
            )?,
        };
        println!(
            "bench: {} (pid {pid}): programs on {} tracepoints after {:.2} s",
            self.label(),
            attached.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(Some(Running {
            tracer: self,
            guard,
            lines,
            pid,
            cpu_at_ready: sys::cpu_time(pid).unwrap_or_default(),
            log,
        }))
    }
}

/// The `"attached":[...]` names of mountleak's ready line.
fn attached_list(ready: &str) -> Vec<String> {
    let Some(at) = ready.find("\"attached\":[") else {
        return Vec::new();
    };
    let rest = &ready[at + "\"attached\":[".len()..];
    let list = &rest[..rest.find(']').unwrap_or(0)];
    list.split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A started tracer.
pub struct Running {
    tracer: Tracer,
    guard: Guard,
    lines: Lines,
    pid: u32,
    cpu_at_ready: Duration,
    log: PathBuf,
}

/// What a tracer did between ready and stop.
pub struct Stopped {
    /// CPU time it used (all threads) after it was ready.
    pub cpu: Duration,
    pub lines: Vec<String>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU time since it was ready.
    pub fn cpu(&self) -> Duration {
        sys::cpu_time(self.pid)
            .unwrap_or_default()
            .saturating_sub(self.cpu_at_ready)
    }

    /// Fails if it died.
    pub fn check(&mut self) -> Result<()> {
        if let Some(status) = self.guard.try_wait()? {
            bail!(
                "{} exited during the measurement ({status}; see {})",
                self.tracer.label(),
                self.log.display()
            );
        }
        Ok(())
    }

    /// Stops it the way an operator would (SIGINT; bpftrace then prints its
    /// maps) and collects its output.
    pub fn stop(mut self) -> Result<Stopped> {
        self.check()?;
        let cpu = self.cpu();
        let status = self.guard.stop(libc::SIGINT, Duration::from_secs(30))?;
        let lines = self.lines.all(Duration::from_secs(5));
        // Killed by the SIGINT we sent is a normal end for the peers.
        if !status.success()
            && !matches!(
                self.tracer,
                Tracer::Mountsnoop | Tracer::BpftraceCounter | Tracer::BpftraceOneMount
            )
        {
            bail!(
                "{} ended with {status} (see {})",
                self.tracer.label(),
                self.log.display()
            );
        }
        Ok(Stopped { cpu, lines })
    }
}

/// bpftrace's map print-out at exit: `@[tracepoint:syscalls:sys_enter_mount]: 12`.
pub fn bpftrace_count(lines: &[String], probe: &str) -> Option<u64> {
    lines.iter().find_map(|l| {
        let rest = l.strip_prefix(&format!("@[{probe}]: "))?;
        rest.trim().parse().ok()
    })
}
