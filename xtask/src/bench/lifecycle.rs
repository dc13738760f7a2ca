//! Container lifecycle against a real dockerd (issue 3, section 5).
//!
//! 1. **stop → warning latency.** [`RUNNING`] containers keep running the
//!    whole time; [`STOPS`] more are stopped one by one (`docker stop -t 0`),
//!    each while a process has its cwd inside the container's `merged` dir in
//!    a private mount namespace made before the daemon started (an old
//!    holder, as a `PrivateTmp=` service on a real node; one process per
//!    held container, entered with `nsenter --wdns`), with `mountleak run
//!    --json` following the engine. The
//!    latency of one stop is the wall time at which the bench read the
//!    daemon's `removal_warning` line for that container minus the
//!    `timeNano` of Docker's `die` event for it (`docker events`); both
//!    clocks are this machine's CLOCK_REALTIME. Target: p99 under 100 ms.
//! 2. **`mountleak check NAME`** (the release binary, no daemon) on the same
//!    node with [`NAMESPACES`] more private mount namespaces (`unshare -m
//!    --propagation private sleep infinity`, each a copy of every container
//!    rootfs): for a held container (stopped, cwd-pinned), a clean running
//!    one and a clean stopped one; [`CHECK_RUNS`] timed runs each,
//!    interleaved. Target: under 100 ms.
//!
//! Everything started here (containers, holders, the daemon, dockerd) is
//! stopped and removed at the end, on error too.
//!
//! May import: std, anyhow, libc and the rest of the bench.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};

use super::docker::{Dockerd, PREFIX};
use super::sys::{self, Guard};
use super::tracer::Tools;
use super::Section;

/// Containers running throughout.
const RUNNING: usize = 200;
/// Held containers stopped one by one (made beside the running ones).
const STOPS: usize = 100;
/// Private mount namespaces added for the `check` timings.
const NAMESPACES: usize = 200;
const CHECK_WARMUP: usize = 3;
const CHECK_RUNS: usize = 40;
/// A warning later than this is counted as missing: it is 20 times the
/// target, and waiting longer for each would make a bad run take an hour.
const WARNING_TIMEOUT: Duration = Duration::from_secs(2);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Keeps the daemon and `check` off any containerd on the machine.
const NO_CONTAINERD: &str = "--containerd-socket=/run/mountleak-bench-no-containerd.sock";

/// Wall-clock nanoseconds since the epoch (CLOCK_REALTIME, the clock of
/// Docker's `timeNano`).
fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A child's stdout lines, each stamped with the wall time it was read.
struct Stamped {
    rx: Receiver<(i128, String)>,
    seen: Vec<(i128, String)>,
}

impl Stamped {
    fn read(stdout: ChildStdout) -> Stamped {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((now_ns(), line)).is_err() {
                    break;
                }
            }
        });
        Stamped {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line (seen or to come) that `wanted` accepts, with its
    /// stamp; `None` after `timeout`.
    fn wait_for(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Option<(i128, String)>> {
        if let Some(hit) = self.seen.iter().find(|(_, l)| wanted(l)) {
            return Ok(Some(hit.clone()));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(hit) => {
                    let ok = wanted(&hit.1);
                    self.seen.push(hit.clone());
                    if ok {
                        return Ok(Some(hit));
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => bail!("the daemon's output ended"),
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(hit) = self.rx.try_recv() {
            self.seen.push(hit);
        }
    }
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time as mountleak prints
/// it (`2026-11-27T16:43:01.123Z`).
fn rfc3339_ns(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + min * 60 + sec;
    let frac_ns = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<i64>().ok()? * 10_i64.pow(9 - digits.len() as u32)
    };
    Some(secs as i128 * 1_000_000_000 + frac_ns as i128)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// A process in a private mount namespace of its own (a copy of the
/// bench's, which is the host's), sleeping with its cwd at `cwd`.
fn holder(cwd: &Path) -> Result<Guard> {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sleep", "infinity"])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Guard::spawn(&mut cmd, format!("holder in {}", cwd.display()))
}

/// Waits until every holder has exec'd sleep (its namespace is made then).
fn wait_sleeping(holders: &mut [Guard]) -> Result<()> {
    let started = Instant::now();
    for h in holders.iter_mut() {
        loop {
            if let Some(status) = h.try_wait()? {
                bail!("a holder (unshare) exited: {status}");
            }
            let comm = fs::read_to_string(format!("/proc/{}/comm", h.pid())).unwrap_or_default();
            if comm.trim_end() == "sleep" {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "holders did not start"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(())
}

/// Distinct mount namespaces of the machine's processes.
fn namespace_count() -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    let set: std::collections::BTreeSet<u64> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| sys::mnt_ns(pid).ok())
        .collect();
    set.len()
}

struct Stop {
    name: String,
    latency_ms: Option<f64>,
    /// The finding's own `time` minus the die event (ms precision).
    time_field_ms: Option<f64>,
    /// From `docker stop` returning to the warning being read.
    after_stop_return_ms: Option<f64>,
}

struct CheckTarget {
    label: &'static str,
    name: String,
    expect: &'static str,
    verdict: String,
    code: i32,
    times_ms: Vec<f64>,
}

pub fn run(tools: &Tools, out_dir: &Path) -> Result<Section> {
    let d = Dockerd::start()?;
    let result = measure(&d, tools, out_dir);
    let teardown = d.teardown();
    let section = result?;
    teardown.context("tear down dockerd")?;
    Ok(section)
}

fn measure(d: &Dockerd, tools: &Tools, out_dir: &Path) -> Result<Section> {
    let running: Vec<String> = (0..RUNNING)
        .map(|i| format!("{PREFIX}run-{i:03}"))
        .collect();
    let held: Vec<String> = (0..STOPS).map(|i| format!("{PREFIX}held-{i:03}")).collect();
    let setup = Instant::now();
    d.run_many(&running)?;
    let held_ids = d.run_many(&held)?;
    let setup_s = setup.elapsed().as_secs_f64();
    println!(
        "bench: {} containers started in {setup_s:.0} s",
        RUNNING + STOPS
    );
    let mut merged: Vec<PathBuf> = Vec::new();
    let mut args = vec!["inspect", "--format", "{{.GraphDriver.Data.MergedDir}}"];
    args.extend(held.iter().map(String::as_str));
    for line in d.docker(&args)?.lines() {
        merged.push(PathBuf::from(line));
    }
    ensure!(merged.len() == STOPS, "docker inspect gave {merged:?}");

    // The holder namespace, a copy of every container rootfs, and in it one
    // process per held container with its cwd in that container's copy.
    let mut ns_holder = vec![holder(Path::new("/"))?];
    wait_sleeping(&mut ns_holder)?;
    let holder_pid = ns_holder[0].pid().to_string();
    let mut pinners: Vec<Option<Guard>> = Vec::new();
    for dir in &merged {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &holder_pid, "--mount"])
            .arg(format!("--wdns={}", dir.display()))
            .args(["sleep", "infinity"])
            .stdin(Stdio::null());
        let mut g = vec![Guard::spawn(&mut cmd, "a cwd in a rootfs copy")?];
        wait_sleeping(&mut g)?;
        pinners.push(g.pop());
    }

    // Docker's own clock for each stop.
    let (_events, mut events) = sys::spawn_piped(
        d.cli().args([
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=die",
            "--format",
            "{{.ID}} {{.TimeNano}}",
        ]),
        "docker events",
    )?;

    let logs = &tools.logs;
    fs::create_dir_all(logs)?;
    let daemon_log = logs.join("lifecycle-daemon.stderr");
    let mut cmd = Command::new(&tools.mountleak);
    cmd.args(["run", "--json", NO_CONTAINERD])
        .arg("--docker-socket")
        .arg(d.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&daemon_log)?);
    let mut daemon = Guard::spawn(&mut cmd, "mountleak run --json")?;
    let mut out = Stamped::read(daemon.child().stdout.take().context("piped stdout")?);
    let ready = out
        .wait_for(READY_TIMEOUT, |l| l.contains("\"type\":\"ready\""))?
        .context("the daemon printed no ready line")?
        .1;
    let probes = sys::json_string(&ready, "probes").unwrap_or_else(|| "?".into());
    out.wait_for(READY_TIMEOUT, |l| {
        l.contains("\"type\":\"runtime\"")
            && l.contains("\"runtime\":\"docker\"")
            && l.contains("\"connected\":true")
    })?
    .context("the daemon never said docker connected")?;
    // The daemon's first inventory of every container, and dockerd's work,
    // settle before anything is timed.
    let (busy_stops, quiet_stops) = sys::wait_quiet(Duration::from_secs(120));
    let daemon_cpu0 = sys::cpu_time(daemon.pid()).unwrap_or_default();

    let mut stops: Vec<Stop> = Vec::new();
    let mut instead: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, name) in held.iter().enumerate() {
        let id = &held_ids[i];
        let since = out.seen.len();
        d.docker(&["stop", "-t", "0", name])?;
        let returned = now_ns();
        let die = events
            .wait_for(WARNING_TIMEOUT, |l| l.starts_with(id.as_str()))
            .with_context(|| format!("no die event for {name}"))?;
        let die_ns: i128 = die
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no timeNano in {die:?}"))?;
        let warning = out.wait_for(WARNING_TIMEOUT, |l| {
            l.contains("\"kind\":\"removal_warning\"") && l.contains(id.as_str())
        })?;
        let ms = |ns: i128| ns as f64 / 1e6;
        stops.push(Stop {
            name: name.clone(),
            latency_ms: warning.as_ref().map(|(at, _)| ms(at - die_ns)),
            time_field_ms: warning.as_ref().and_then(|(_, l)| {
                let t = sys::json_string(&l[l.find("\"kind\"")?..], "time")?;
                Some(ms(rfc3339_ns(&t)? - die_ns))
            }),
            after_stop_return_ms: warning.as_ref().map(|(at, _)| ms(at - returned)),
        });
        match &stops.last().and_then(|s| s.latency_ms) {
            Some(l) => println!("bench: {name}: die → removal_warning {l:.1} ms"),
            None => {
                // What the daemon said about it instead.
                let said: Vec<String> = out.seen[since..]
                    .iter()
                    .filter(|(_, l)| l.contains(id.as_str()) && l.contains("\"type\":\"finding\""))
                    .filter_map(|(_, l)| sys::json_string(&l[l.find("\"kind\"")?..], "kind"))
                    .collect();
                println!(
                    "bench: {name}: NO removal_warning within {WARNING_TIMEOUT:?} (said: {})",
                    said.join(", ")
                );
                for k in said {
                    *instead.entry(k).or_insert(0) += 1;
                }
            }
        }
    }
    let daemon_cpu = sys::cpu_time(daemon.pid())
        .unwrap_or_default()
        .saturating_sub(daemon_cpu0);
    out.drain();
    let lines = out.seen.len();
    let bytes: usize = out.seen.iter().map(|(_, l)| l.len() + 1).sum();
    let lost = out
        .seen
        .iter()
        .filter(|(_, l)| l.contains("\"type\":\"lost\""))
        .count();
    fs::write(
        out_dir.join("lifecycle-daemon.jsonl"),
        out.seen
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect::<String>(),
    )?;
    daemon
        .stop(libc::SIGTERM, Duration::from_secs(15))
        .context("stop the daemon")?;
    drop(_events);

    // check: the node as it is now, plus NAMESPACES private namespaces.
    let mut holders: Vec<Guard> = (0..NAMESPACES)
        .map(|_| holder(Path::new("/")))
        .collect::<Result<_>>()?;
    wait_sleeping(&mut holders)?;
    let namespaces = namespace_count();
    let held_name = held.last().context("held containers")?.clone();
    let mut targets = vec![
        CheckTarget {
            label: "held (stopped, a holder's cwd in its rootfs)",
            name: held_name,
            expect: "held",
            verdict: String::new(),
            code: -1,
            times_ms: Vec::new(),
        },
        CheckTarget {
            label: "clean, running (200 idle private copies of its rootfs)",
            name: running[0].clone(),
            expect: "safe",
            verdict: String::new(),
            code: -1,
            times_ms: Vec::new(),
        },
        CheckTarget {
            label: "clean, stopped (its pinning process gone)",
            name: held[0].clone(),
            expect: "safe",
            verdict: String::new(),
            code: -1,
            times_ms: Vec::new(),
        },
    ];
    // The first held container loses its pinning process: clean, stopped.
    drop(pinners[0].take());
    let (busy_check, quiet_check) = sys::wait_quiet(Duration::from_secs(120));
    let check = |name: &str| -> Result<(f64, i32, String, String)> {
        let started = Instant::now();
        let o = Command::new(&tools.mountleak)
            // Where the time goes, in the saved answer (one debug line).
            .env("RUST_LOG", "mountleak::check=debug")
            .args(["check", "--json", NO_CONTAINERD])
            .arg("--docker-socket")
            .arg(d.socket())
            .arg(name)
            .stdin(Stdio::null())
            .output()
            .context("run mountleak check")?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let stdout = String::from_utf8_lossy(&o.stdout);
        let verdict = sys::json_string(&stdout, "verdict").unwrap_or_else(|| {
            format!(
                "none ({})",
                String::from_utf8_lossy(&o.stderr).trim().replace('\n', " ")
            )
        });
        Ok((
            ms,
            o.status.code().unwrap_or(-1),
            verdict,
            format!("{stdout}\n{}", String::from_utf8_lossy(&o.stderr)),
        ))
    };
    for round in 0..CHECK_WARMUP + CHECK_RUNS {
        for t in targets.iter_mut() {
            let (ms, code, verdict, doc) = check(&t.name)?;
            if round == 0 {
                fs::write(
                    out_dir.join(format!("lifecycle-check-{}.txt", t.name)),
                    format!("{} -> exit {code}, verdict {verdict}\n{doc}", t.name),
                )?;
            }
            if round >= CHECK_WARMUP {
                t.times_ms.push(ms);
            }
            t.code = code;
            t.verdict = verdict;
        }
    }
    drop(pinners);
    drop(ns_holder);
    drop(holders);

    Ok(report(
        &stops,
        &targets,
        Facts {
            setup_s,
            probes,
            busy_stops,
            quiet_stops,
            busy_check,
            quiet_check,
            daemon_cpu,
            lines,
            bytes,
            lost,
            namespaces,
            instead,
        },
    ))
}

struct Facts {
    setup_s: f64,
    probes: String,
    busy_stops: f64,
    quiet_stops: bool,
    busy_check: f64,
    quiet_check: bool,
    daemon_cpu: Duration,
    lines: usize,
    bytes: usize,
    lost: usize,
    namespaces: usize,
    instead: std::collections::BTreeMap<String, usize>,
}

fn report(stops: &[Stop], targets: &[CheckTarget], f: Facts) -> Section {
    let lat = sorted(stops.iter().filter_map(|s| s.latency_ms).collect());
    let field = sorted(stops.iter().filter_map(|s| s.time_field_ms).collect());
    let after = sorted(
        stops
            .iter()
            .filter_map(|s| s.after_stop_return_ms)
            .collect(),
    );
    let missed: Vec<&str> = stops
        .iter()
        .filter(|s| s.latency_ms.is_none())
        .map(|s| s.name.as_str())
        .collect();
    let quiet = |busy: f64, quiet: bool| {
        format!(
            "{:.0}% busy{}",
            busy * 100.0,
            if quiet { "" } else { ", NOT quiet" }
        )
    };
    let row = |what: &str, v: &[f64]| {
        format!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            v.len(),
            pct(v, 50.0),
            pct(v, 95.0),
            pct(v, 99.0),
            v.last().copied().unwrap_or(f64::NAN),
            v.first().copied().unwrap_or(f64::NAN),
        )
    };
    let mut body = format!(
        "Real dockerd (overlay2), {RUNNING} containers running throughout, {STOPS} more stopped \
         one by one (`docker stop -t 0`), each while a process has its cwd in the container's \
         `merged` dir in a private mount namespace made before the daemon started (one namespace, \
         a process per held container); `mountleak run --json` (probes `{}`) following the \
         engine; a warning later than {} s counts as missing. {} containers started in {:.0} s. \
         Machine before the stops: {}.\n\n\
         | die event → `removal_warning` (ms) | n | p50 | p95 | p99 | max | min |\n\
         |---|---|---|---|---|---|---|\n",
        f.probes,
        WARNING_TIMEOUT.as_secs(),
        RUNNING + STOPS,
        f.setup_s,
        quiet(f.busy_stops, f.quiet_stops),
    );
    body += &row("line read by the bench − die `timeNano`", &lat);
    body += &row("finding's `time` field − die `timeNano`", &field);
    body += &row("line read − `docker stop` returned", &after);
    let p99 = pct(&lat, 99.0);
    let verdict = if !missed.is_empty() {
        format!("MISSES ({} of {STOPS} warnings never came)", missed.len())
    } else if p99 < 100.0 {
        "meets".into()
    } else {
        "MISSES".into()
    };
    body += &format!(
        "\nTarget (p99 under 100 ms): {verdict}. Daemon during the stops: {:.2} s CPU, {} lines \
         ({:.1} MiB) of JSON, {} `lost` notices.{}\n\n",
        f.daemon_cpu.as_secs_f64(),
        f.lines,
        f.bytes as f64 / (1 << 20) as f64,
        f.lost,
        if missed.is_empty() {
            String::new()
        } else {
            format!(
                " No warning for {} stops; what the daemon said about those containers instead \
                 (findings by kind): {:?}.",
                missed.len(),
                f.instead
            )
        }
    );
    body += &format!(
        "`mountleak check --json NAME` (release binary, no daemon), the same node plus \
         {NAMESPACES} private mount namespaces (`unshare -m --propagation private sleep \
         infinity`, each with a copy of every container rootfs): {} mount namespaces on the \
         machine, {} containers. {CHECK_WARMUP} warmup and {CHECK_RUNS} timed runs per target, \
         interleaved; wall time of the whole command. Machine before: {}.\n\n\
         | target | verdict (exit) | median | p95 | min | max |\n|---|---|---|---|---|---|\n",
        f.namespaces,
        RUNNING + STOPS,
        quiet(f.busy_check, f.quiet_check),
    );
    let mut all_under = true;
    let mut verdicts_ok = true;
    for t in targets {
        let v = sorted(t.times_ms.clone());
        all_under &= pct(&v, 95.0) < 100.0;
        verdicts_ok &= t.verdict == t.expect;
        body += &format!(
            "| {} | {}{} ({}) | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |\n",
            t.label,
            t.verdict,
            if t.verdict == t.expect {
                String::new()
            } else {
                format!(", expected {}", t.expect)
            },
            t.code,
            sys::median(&v),
            pct(&v, 95.0),
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
        );
    }
    body += &format!(
        "\nTarget (under 100 ms): {}{}.",
        if all_under { "meets" } else { "MISSES" },
        if verdicts_ok {
            ""
        } else {
            "; and a verdict is wrong"
        }
    );
    Section {
        title: format!(
            "lifecycle: stop → removal warning and `check`, real dockerd, {RUNNING} containers"
        ),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_the_epoch() {
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ns("2026-11-27T16:43:01.123Z"),
            Some(1_795_797_781_123_000_000)
        );
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&v, 50.0), 50.0);
        assert_eq!(pct(&v, 99.0), 99.0);
        assert_eq!(pct(&v[..10], 99.0), 10.0);
    }
}
