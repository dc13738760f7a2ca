//! `mountleak timeline` and the event store behind it (issue 5), against
//! real leaks: the daemon records a leak as it happens (probes on), then
//! `timeline` tells it for the mount path, the namespace and the pid —
//! after the holder exited and the daemon restarted, from the store alone.
//! Also: the HTML picture in headless Chromium; kill -9 of a store writer
//! under heavy writing (every acknowledged event survives, the file stays
//! sound) and of the daemon itself; a full or read-only store (the daemon
//! says so once and keeps detecting); clear errors with exit code 2.
//!
//! The daemon runs in a lab (see `support`); its store lives in the lab's
//! scratch directory. Every wait has a deadline; failures print what the
//! daemon said.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use monitor_model::{Call, Input, PathArg, Patterns, SyscallEvent, Task};
use mountleak::timeline::event::{Kind, Record, Ref};
use mountleak::timeline::store::Store;
use mountleak::timeline::writer::{Item, Writer, WriterConfig};
use serde_json::Value;

use crate::support::docker::{Dockerd, JsonLines, NsHolder};
use crate::support::{self, Lab, Propagation};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const FINDING_TIMEOUT: Duration = Duration::from_secs(15);

/// `mountleak run --json --store STORE` in a lab, killed on drop.
struct Daemon {
    child: Child,
    rx: mpsc::Receiver<Value>,
    lines: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(lab: &Lab, store: &Path, extra: &[&str]) -> Daemon {
        let mut cmd = lab.mountleak();
        cmd.args(["run", "--json", "--risk-grace", "1s", "--store"])
            .arg(store)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: one async-signal-safe call between fork and exec; the
        // daemon dies with the test even if Drop does not run.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start mountleak run");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().expect("piped stderr");
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Daemon {
            child,
            rx,
            lines: Vec::new(),
            stderr,
        }
    }

    fn transcript(&self) -> String {
        let mut out: String = self.lines.iter().map(|l| format!("{l}\n")).collect();
        out.push_str("stderr:\n");
        out.push_str(&self.stderr.lock().unwrap());
        out
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.lines.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.lines.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("timed out waiting for {what}\n{}", self.transcript())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "mountleak exited while waiting for {what}\n{}",
                        self.transcript()
                    )
                }
            }
        }
    }

    fn ready(&mut self) {
        self.wait_for("the ready notice", READY_TIMEOUT, |v| v["type"] == "ready");
    }

    /// Waits for a finding of `kind` about `path` that came after the ones
    /// already read.
    fn finding(&mut self, kind: &str, path: &Path) -> Value {
        let p = path.to_str().expect("UTF-8 test path").to_string();
        self.wait_for(&format!("a {kind} finding for {p}"), FINDING_TIMEOUT, |v| {
            v["type"] == "finding" && v["kind"] == kind && v["mount"]["path"] == p.as_str()
        })
    }

    /// SIGTERM, then waits for the exit (the store flushes on the way out).
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "mountleak run exited {status}\n{}",
                    self.transcript()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mountleak did not stop\n{}",
                self.transcript()
            );
            thread::sleep(Duration::from_millis(20));
        }
        while let Ok(v) = self.rx.recv_timeout(Duration::from_secs(2)) {
            self.lines.push(v);
        }
        self.transcript()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mountleak timeline ARGS` (outside the lab: the store is a plain file).
fn timeline(args: &[&str]) -> Output {
    Command::new(support::mountleak_bin())
        .arg("timeline")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mountleak timeline")
}

fn stdout_ok(out: &Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: exit {}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Asserts that `needles` occur in `text` in this order.
fn assert_in_order(text: &str, needles: &[String]) {
    let mut from = 0;
    for n in needles {
        match text[from..].find(n.as_str()) {
            Some(at) => from += at + n.len(),
            None => panic!("{n:?} missing (or out of order) in:\n{text}"),
        }
    }
}

fn store_path(lab: &Lab) -> PathBuf {
    lab.scratch().join("events.db")
}

/// What a recorded leak left: where, who, and the store.
struct Replay {
    merged: PathBuf,
    holder: support::Holder,
    store: PathBuf,
}

/// A real leak recorded by the daemon with probes: the overlay is mounted
/// while it watches, a private holder copies it (risk), the lab unmounts it
/// (leak). With `restart`, the daemon is stopped and started again before
/// the holder exits (resolved); otherwise the holder exits under the first
/// daemon. The daemon is stopped at the end either way.
fn replay_leak(lab: &mut Lab, tag: &str, restart: bool) -> Replay {
    let store = store_path(lab);
    let mut d = Daemon::start(lab, &store, &[]);
    d.ready();
    let merged = lab.overlay(&format!("{tag}-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    d.finding("risk", &merged);
    lab.umount(&merged).unwrap();
    d.finding("leak", &merged);
    let d = if restart {
        d.stop();
        let mut d2 = Daemon::start(lab, &store, &[]);
        d2.ready();
        d2.finding("leak", &merged);
        d2
    } else {
        d
    };
    let mut d = d;
    lab.stop(holder);
    d.finding("resolved", &merged);
    d.stop();
    Replay {
        merged,
        holder,
        store,
    }
}

/// The story, told for the path, the namespace and the pid, after the
/// holder exited and the daemon restarted; then as JSON, and imported
/// elsewhere (no store).
#[test]
#[ignore = "needs root: loads eBPF, creates mounts and namespaces"]
fn timeline_tells_a_real_leak_after_the_holder_exited_and_a_restart() {
    let mut lab = Lab::new();
    let r = replay_leak(&mut lab, "timeline", true);
    let store = r.store.to_str().unwrap();
    let merged = r.merged.to_str().unwrap();
    let (ns, pid) = (r.holder.ns, r.holder.pid);
    let story = [
        format!("(overlay) was mounted at {merged}"),
        format!("(pid {pid}) created mount namespace {ns} with unshare"),
        "private propagation".into(),
        format!("copying {merged}"),
        format!("risk: {merged} was copied into namespace {ns} held by `sleep` (pid {pid})"),
        format!("the host unmounted {merged}"),
        format!("leak: the host no longer has {merged}, but the copy survived in namespace {ns} held by `sleep` (pid {pid})"),
        "mountleak stopped".into(),
        "mountleak restarted".into(),
        format!("leak: the host no longer has {merged}"),
        format!("resolved: {merged} is no longer held (the holder exited)"),
    ];
    let exit =
        format!("`sleep` (pid {pid}) exited (mount namespace {ns}); it held the copy of {merged}");
    let mut texts = Vec::new();
    for target in [merged.to_string(), ns.to_string(), pid.to_string()] {
        let text = stdout_ok(&timeline(&[&target, "--store", store]), &target);
        assert_in_order(&text, &story);
        assert!(text.contains(&exit), "{text}");
        assert!(text.contains("\nRESOLVED: "), "{text}");
        texts.push(text);
    }
    eprintln!("{}", texts[0]);

    // JSON: the same steps, every field, the stable schema.
    let json_out = stdout_ok(&timeline(&[merged, "--store", store, "--json"]), "--json");
    let doc: Value = serde_json::from_str(&json_out).expect("timeline --json is JSON");
    assert_eq!(doc["schema"], "mountleak.timeline/1");
    assert_eq!(doc["target"]["kind"], "path");
    assert_eq!(doc["status"], "resolved");
    let kinds: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    // The second run's startup scan finds the leak again before it says
    // it is ready.
    let want = [
        "mounted",
        "ns_created",
        "risk",
        "host_unmounted",
        "leak",
        "daemon_stopped",
        "leak",
        "daemon_started",
        "process_exited",
        "resolved",
    ];
    let mut at = 0;
    for w in want {
        at += kinds[at..]
            .iter()
            .position(|k| *k == w)
            .unwrap_or_else(|| panic!("{w} missing after step {at}: {kinds:?}"))
            + 1;
    }
    let leak = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "leak")
        .unwrap();
    assert_eq!(leak["mnt_ns"], ns);
    assert_eq!(leak["events"][0]["finding"]["holders"][0]["pid"], pid);
    let ids: Vec<&str> = doc["lifelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    for id in [
        format!("mount:{merged}"),
        format!("mnt_ns:{ns}"),
        format!("pid:{pid}"),
    ] {
        assert!(ids.contains(&id.as_str()), "{id} not in {ids:?}");
    }

    // Another machine: no store, the saved JSON renders the same story.
    let saved = lab.scratch().join("incident.json");
    std::fs::write(&saved, &json_out).unwrap();
    let elsewhere = timeline(&[
        "--import",
        saved.to_str().unwrap(),
        "--store",
        "/nonexistent/events.db",
    ]);
    let imported = stdout_ok(&elsewhere, "--import");
    let steps = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("20"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(steps(&imported), steps(&texts[0]));
}

/// With a runtime: a real Docker container whose rootfs a private holder
/// copies; `docker stop` and `docker rm`. The story by the container's name
/// and by an id prefix: started, the holder's namespace copying it, the
/// risk, stopped, resolved (overlay2's rmdir detaches the idle copy on this
/// kernel), removed — after the holder and the daemon are gone.
#[test]
#[ignore = "needs root: runs dockerd and the mountleak daemon"]
fn timeline_tells_a_docker_container_story_by_name_and_id() {
    let mut d = Dockerd::start();
    let dir = std::env::temp_dir().join(format!("mountleak-tl-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("events.db");
    let mut cmd = Command::new(support::mountleak_bin());
    cmd.args([
        "run",
        "--json",
        "--risk-grace",
        "1s",
        "--containerd-socket=/run/mountleak-tests-no-containerd.sock",
        "--store",
    ])
    .arg(&store)
    .arg("--docker-socket")
    .arg(d.socket());
    let mut daemon = JsonLines::spawn(cmd);
    daemon.wait_for("the ready notice", READY_TIMEOUT, |v| v["type"] == "ready");
    let name = format!("mlk-timeline-{}", std::process::id());
    let id = d.run(&name);
    let short = &id[..12];
    let merged = d.merged_dir(&name);
    let merged_s = merged.to_str().unwrap().to_string();
    let holder = NsHolder::start(Propagation::Private, Path::new("/"));
    let (holder_pid, holder_ns) = (holder.pid, holder.ns);
    let at = |kind: &'static str| {
        let m = merged_s.clone();
        move |v: &Value| {
            v["type"] == "finding" && v["kind"] == kind && v["mount"]["path"] == m.as_str()
        }
    };
    daemon.wait_for("the risk", FINDING_TIMEOUT, at("risk"));
    d.stop(&name);
    d.rm(&name);
    daemon.wait_for("the resolution", FINDING_TIMEOUT, at("resolved"));
    // Committed within milliseconds; then the daemon dies hard.
    thread::sleep(Duration::from_millis(1500));
    drop(daemon);
    drop(holder);
    let label = format!("container {name} ({short})");
    let story = [
        format!("{label} started from image {}", support::docker::IMAGE),
        format!("(pid {holder_pid}) created mount namespace {holder_ns} with unshare"),
        format!("copying {merged_s}"),
        format!("risk: {merged_s} was copied into namespace {holder_ns}"),
        format!("{label} stopped"),
        format!("resolved: {merged_s} is no longer held"),
        format!("{label} was removed by its runtime"),
    ];
    for target in [name.as_str(), short] {
        let text = stdout_ok(
            &timeline(&[target, "--store", store.to_str().unwrap()]),
            target,
        );
        assert_in_order(&text, &story);
        assert!(
            text.contains(&format!("timeline of container {target} = {id}")),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Chromium, as packaged by Debian (`cargo xtask setup` installs it).
fn chromium(args: &[&str], profile: &Path) -> Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run chromium ({e}): `cargo xtask setup` installs it"))
}

/// Luminance statistics of a PNG: (mean, variance, share of strongly red
/// pixels).
fn png_stats(path: &Path) -> (f64, f64, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a PNG's size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let bytes = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "unexpected PNG colour type {:?}",
        info.color_type
    );
    let (mut sum, mut sq, mut red, mut n) = (0f64, 0f64, 0u64, 0u64);
    for px in bytes.chunks_exact(channels) {
        let (r, g, b) = (f64::from(px[0]), f64::from(px[1]), f64::from(px[2]));
        let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        sum += y;
        sq += y * y;
        if r > 180.0 && g < 110.0 && b < 110.0 {
            red += 1;
        }
        n += 1;
    }
    let mean = sum / n as f64;
    (mean, sq / n as f64 - mean * mean, red as f64 / n as f64)
}

/// `--html`: one self-contained file that Chromium renders, with the
/// lifelines and markers of the real leak in its DOM and a picture that is
/// not blank.
#[test]
#[ignore = "needs root: loads eBPF, creates mounts and namespaces; needs chromium"]
fn timeline_html_renders_the_leak_in_headless_chromium() {
    let mut lab = Lab::new();
    let r = replay_leak(&mut lab, "picture", false);
    let html = lab.scratch().join("leak.html");
    let out = timeline(&[
        r.merged.to_str().unwrap(),
        "--store",
        r.store.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let said = stdout_ok(&out, "--html");
    assert!(said.contains("wrote"), "{said}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("<script") && !page.contains("<link"),
        "not self-contained"
    );

    let profile = lab.scratch().join("chromium-profile");
    let url = format!("file://{}", html.display());
    let dom = chromium(&["--dump-dom", &url], &profile);
    let dom = stdout_ok(&dom, "chromium --dump-dom");
    let merged = r.merged.to_str().unwrap();
    for needle in [
        format!("data-id=\"mount:{merged}\""),
        format!("data-id=\"mnt_ns:{}\"", r.holder.ns),
        format!("data-id=\"pid:{}\"", r.holder.pid),
        "class=\"leak-window\"".into(),
        "class=\"marker\" data-kind=\"risk\"".into(),
        "class=\"marker\" data-kind=\"leak\"".into(),
        "class=\"marker\" data-kind=\"resolved\"".into(),
        "class=\"marker\" data-kind=\"ns_created\"".into(),
        "class=\"marker\" data-kind=\"process_exited\"".into(),
        "id=\"legend\"".into(),
        "How to read this".into(),
    ] {
        assert!(dom.contains(&needle), "{needle} not in the rendered DOM");
    }

    let shot = lab.scratch().join("leak.png");
    let out = chromium(
        &[
            "--hide-scrollbars",
            "--window-size=1300,1000",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
        &profile,
    );
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keep = std::env::temp_dir().join("mountleak-timeline-screenshot.png");
    let _ = std::fs::copy(&shot, &keep);
    eprintln!("screenshot: {}", keep.display());
    let (mean, variance, red) = png_stats(&shot);
    eprintln!("screenshot luminance mean {mean:.1}, variance {variance:.1}, red share {red:.4}");
    assert!(
        variance > 200.0,
        "the screenshot looks blank (variance {variance})"
    );
    assert!(
        red > 0.0005,
        "no leak window or leak marker visible (red share {red})"
    );
}

/// The crash harness: re-executed by [`store_survives_kill_9_under_heavy_writing`]
/// with `MOUNTLEAK_CRASH_STORE` set, it writes events as fast as the writer
/// takes them and prints `acked N` after each commit (N: the highest
/// sequence number committed). Without the variable it does nothing.
#[test]
fn store_crash_child() {
    let Ok(path) = std::env::var("MOUNTLEAK_CRASH_STORE") else {
        return;
    };
    let first: u32 = std::env::var("MOUNTLEAK_CRASH_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    let retention = std::env::var("MOUNTLEAK_CRASH_RETENTION").is_ok();
    let mut cfg = WriterConfig::new(&path, Patterns::default());
    cfg.batch = 2048;
    if retention {
        cfg.retention.max_bytes = Some(4 << 20);
        cfg.retention_every_rows = 20_000;
        cfg.retention_chunk = 5_000;
    }
    let writer = Writer::spawn(cfg).unwrap();
    let handle = writer.handle();
    thread::spawn(move || {
        let mut last = 0;
        loop {
            let c = handle.stats().committed;
            if c != last {
                last = c;
                println!("acked {}", u64::from(first) + c - 1);
            }
            thread::sleep(Duration::from_micros(200));
        }
    });
    for seq in first.. {
        let rec = Record {
            kt: u64::from(seq),
            wall_ns: i64::from(seq),
            kind: Kind::ProcessExit,
            pid: Some(seq),
            mnt_ns: Some(4_026_532_000 + u64::from(seq % 97)),
            path: (seq % 5 == 0)
                .then(|| format!("/var/lib/docker/overlay2/{}/merged", seq % 1000).into_bytes()),
            container: None,
            name: None,
            pod: None,
            refs: if seq % 7 == 0 {
                vec![Ref::Ns(u64::from(seq)), Ref::Pid(seq)]
            } else {
                vec![]
            },
            data: format!(
                "{{\"type\":\"process_exit\",\"seq\":{seq},\"pad\":\"{}\"}}",
                "x".repeat((seq % 64) as usize)
            ),
        };
        writer.send(Item::Record(rec));
    }
}

/// kill -9 a store writer under heavy writing, 25 times: each time the
/// store opens, `PRAGMA integrity_check` says ok and every acknowledged
/// event is there (the last five rounds run retention, which deletes the
/// oldest on purpose: integrity only).
#[test]
fn store_survives_kill_9_under_heavy_writing() {
    // It needs no root, but it loads both cores and the disk for 20 s: not
    // while a lab measures latencies.
    let _machine = support::exclusive();
    let dir = std::env::temp_dir().join(format!("mountleak-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("events.db");
    let me = std::env::current_exe().unwrap();
    let mut first: u32 = 1;
    let mut total_acked = 0u64;
    for round in 0..25 {
        let retention = round >= 20;
        let mut cmd = Command::new(&me);
        cmd.args([
            "--exact",
            "timeline::store_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MOUNTLEAK_CRASH_STORE", &db)
        .env("MOUNTLEAK_CRASH_FIRST", first.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if retention {
            cmd.env("MOUNTLEAK_CRASH_RETENTION", "1");
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let acked = Arc::new(Mutex::new(None::<u64>));
        let seen = Arc::clone(&acked);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("acked ").and_then(|n| n.parse().ok()) {
                    *seen.lock().unwrap() = Some(n);
                }
            }
        });
        // Let it get going, then kill it at a different moment each round.
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.lock().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "round {round}: the writer acknowledged nothing"
            );
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(40 + (round as u64 * 37) % 260));
        let before_kill = acked.lock().unwrap().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = acked.lock().unwrap().unwrap();
        assert!(acked >= before_kill);

        let store = Store::open_existing(&db).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(store.integrity_check().unwrap(), "ok", "round {round}");
        let conn = store.connection();
        let max: i64 = conn
            .query_row("SELECT max(pid) FROM events", [], |r| r.get(0))
            .unwrap();
        if !retention {
            let present: i64 = conn
                .query_row(
                    "SELECT count(DISTINCT pid) FROM events WHERE pid BETWEEN ?1 AND ?2",
                    [i64::from(first), acked as i64],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                present,
                acked as i64 - i64::from(first) + 1,
                "round {round}: acknowledged events {first}..={acked} are not all there"
            );
        }
        total_acked += acked - u64::from(first) + 1;
        first = u32::try_from(max).unwrap() + 1;
    }
    eprintln!(
        "25 kill -9 rounds: {total_acked} acknowledged events checked, last sequence {first}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Makes 50 container mount points `/var/lib/docker/overlay2/TAG<i>/merged`
/// in the lab, for [`burst_at`].
fn burst_paths(lab: &Lab, tag: &str) -> Arc<Vec<CString>> {
    let base = format!("/var/lib/docker/overlay2/{tag}");
    lab.run_in_host(&format!(
        "for i in $(seq 0 49); do mkdir -p {base}$i/merged; done"
    ));
    Arc::new(
        (0..50)
            .map(|i| CString::new(format!("{base}{i}/merged")).unwrap())
            .collect(),
    )
}

/// A burst of container mounts and umounts in the namespace of `pid`, as
/// fast as raw syscalls go (heavy writing for the daemon's store).
fn burst_at(pid: u32, paths: Arc<Vec<CString>>, rounds: usize) {
    let code = support::in_mount_ns(pid, move || {
        for _ in 0..rounds {
            for p in paths.iter() {
                // SAFETY: NUL-terminated strings made before the fork.
                unsafe {
                    libc::mount(
                        c"burst".as_ptr(),
                        p.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    );
                    libc::umount2(p.as_ptr(), 0);
                }
            }
        }
        0
    });
    assert_eq!(code, 0);
}

fn burst(lab: &Lab, tag: &str, rounds: usize) {
    burst_at(lab.host_pid(), burst_paths(lab, tag), rounds);
}

/// kill -9 the daemon itself while it writes a burst: the store opens
/// cleanly every time, and the next run goes on where it stopped.
#[test]
#[ignore = "needs root: loads eBPF, creates mounts and namespaces"]
fn daemon_killed_9_while_writing_leaves_a_sound_store() {
    let lab = Lab::new();
    let store = store_path(&lab);
    let mut events = 0;
    for round in 0..4 {
        let mut d = Daemon::start(&lab, &store, &[]);
        d.ready();
        let paths = burst_paths(&lab, &format!("burst{round}-"));
        let lab_pid = lab.host_pid();
        let burster = thread::spawn(move || burst_at(lab_pid, paths, 200));
        thread::sleep(Duration::from_millis(150 + 100 * round as u64));
        d.kill9();
        burster.join().unwrap();
        let s = Store::open_existing(&store).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(s.integrity_check().unwrap(), "ok", "round {round}");
        let now = s.stats().unwrap();
        assert!(now.events > events, "round {round}: nothing new was kept");
        assert_eq!(now.runs, round as u64 + 1);
        events = now.events;
    }
    // A last, orderly run: the history of one burst path is there.
    let d = Daemon::start(&lab, &store, &[]);
    let mut d = d;
    d.ready();
    burst(&lab, "last-", 2);
    thread::sleep(Duration::from_millis(500));
    d.stop();
    let text = stdout_ok(
        &timeline(&[
            "/var/lib/docker/overlay2/last-7/merged",
            "--store",
            store.to_str().unwrap(),
        ]),
        "timeline of a burst path",
    );
    assert!(
        text.contains("the host unmounted /var/lib/docker/overlay2/last-7/merged"),
        "{text}"
    );
}

/// Polls `ready` for up to 10 s; panics with the daemon's transcript.
fn wait_log(d: &Daemon, what: &str, ready: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready(&d.stderr.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            d.transcript()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A store on a full disk, then on a read-only one: the daemon logs at
/// error level that history is not kept (once per change), says when it is
/// kept again, and reports findings all along.
#[test]
#[ignore = "needs root: loads eBPF, creates mounts and namespaces"]
fn a_full_or_read_only_store_is_said_loudly_and_detection_goes_on() {
    const NOT_KEPT: &str = "history is NOT being kept";
    let mut lab = Lab::new();
    // A small tmpfs only the lab sees, for the store (room for the WAL).
    let dir = format!("/run/mountleak-store-test-{}", lab.id());
    lab.run_in_host(&format!(
        "mkdir -p {dir} && mount -t tmpfs -o size=16m store {dir}"
    ));
    let store = PathBuf::from(format!("{dir}/events.db"));
    let mut d = Daemon::start(&lab, &store, &[]);
    d.ready();
    lab.run_in_host(&format!(
        "dd if=/dev/zero of={dir}/fill bs=4k 2>/dev/null || true"
    ));
    // Events keep coming, a leak among them: detection does not care.
    let merged = lab.overlay(&format!("full-{}", lab.id()));
    burst(&lab, "full-burst-", 20);
    let holder = lab.holder(Propagation::Private, None);
    d.finding("risk", &merged);
    lab.umount(&merged).unwrap();
    d.finding("leak", &merged);
    wait_log(&d, "the disk-full error", |e| e.contains(NOT_KEPT));
    burst(&lab, "full-burst2-", 20);
    thread::sleep(Duration::from_millis(1500));
    let err = d.stderr.lock().unwrap().clone();
    assert_eq!(
        err.matches(NOT_KEPT).count(),
        1,
        "once per change\n{}",
        d.transcript()
    );
    let line = err.lines().find(|l| l.contains(NOT_KEPT)).unwrap();
    assert!(
        line.contains("ERROR") && line.contains("disk is full"),
        "{line}"
    );

    // Space again: kept again, and said so.
    lab.run_in_host(&format!("rm {dir}/fill"));
    thread::sleep(Duration::from_millis(1200));
    burst(&lab, "full-burst3-", 2);
    wait_log(&d, "the recovery", |e| e.contains("writable again"));
    let transcript = d.stop();
    assert_eq!(transcript.matches(NOT_KEPT).count(), 1, "{transcript}");

    // Read-only (a filesystem cannot go read-only under an open writer, so
    // the next start finds it so): said once, detection goes on.
    lab.run_in_host(&format!("mount -o remount,ro {dir}"));
    let mut d = Daemon::start(&lab, &store, &[]);
    d.ready();
    d.finding("leak", &merged);
    wait_log(&d, "the read-only error", |e| e.contains(NOT_KEPT));
    burst(&lab, "ro-burst-", 5);
    lab.stop(holder);
    d.finding("resolved", &merged);
    thread::sleep(Duration::from_millis(1500));
    let transcript = d.stop();
    assert_eq!(transcript.matches(NOT_KEPT).count(), 1, "{transcript}");
    // What it kept while it could is there (read from inside the lab,
    // where the store's filesystem is).
    let kept = lab
        .mountleak()
        .args([
            "timeline",
            "/var/lib/docker/overlay2/full-burst3-7/merged",
            "--store",
        ])
        .arg(&store)
        .output()
        .unwrap();
    let text = stdout_ok(&kept, "timeline from the read-only store");
    assert!(
        text.contains("the host unmounted /var/lib/docker/overlay2/full-burst3-7/merged"),
        "{text}"
    );
}

/// A store made by the writer itself (no root): a namespace made by
/// `ntpd`, a container path unmounted.
fn synthetic_store(dir: &Path) -> PathBuf {
    let db = dir.join("events.db");
    let mut w = Writer::spawn(WriterConfig::new(&db, Patterns::default())).unwrap();
    let task = |comm: &str, pid: u32| Task {
        tid: pid,
        tgid: pid,
        uid: 0,
        comm: comm.into(),
        cgroup_id: 1,
    };
    let now = mountleak::procfs::clock::boottime_ns();
    w.send(Item::Input(Input::Syscall(SyscallEvent {
        start: now - 2_000_000_000,
        end: now - 2_000_000_000,
        task: task("ntpd", 4242),
        ns: 4026531840,
        ns_after: 4026532999,
        ret: 0,
        call: Call::Unshare { flags: 0x20000 },
    })));
    w.send(Item::Input(Input::Syscall(SyscallEvent {
        start: now - 1_000_000_000,
        end: now - 1_000_000_000,
        task: task("dockerd", 812),
        ns: 4026531840,
        ns_after: 4026531840,
        ret: 0,
        call: Call::Umount {
            target: PathArg::new("/var/lib/docker/overlay2/synthetic/merged"),
            flags: 0,
        },
    })));
    assert!(w.wait_idle(Duration::from_secs(10)));
    assert!(w.shutdown(Duration::from_secs(5)));
    db
}

/// Unknown targets, a missing or corrupt store, a bad import or a bad time:
/// a clear message and exit code 2; a good target exits 0.
#[test]
fn timeline_errors_are_clear_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("mountleak-tl-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = synthetic_store(&dir);
    let db = db.to_str().unwrap();

    let ok = timeline(&["/var/lib/docker/overlay2/synthetic/merged", "--store", db]);
    let text = stdout_ok(&ok, "a known path");
    assert!(
        text.contains(
            "the host unmounted /var/lib/docker/overlay2/synthetic/merged (`dockerd` (pid 812)"
        ),
        "{text}"
    );
    let ns = stdout_ok(
        &timeline(&["4026532999", "--store", db]),
        "a known namespace",
    );
    assert!(
        ns.contains("`ntpd` (pid 4242) created mount namespace 4026532999 with unshare"),
        "{ns}"
    );

    let corrupt = dir.join("corrupt.db");
    std::fs::write(&corrupt, vec![0x5a; 16384]).unwrap();
    let not_json = dir.join("not.json");
    std::fs::write(&not_json, "{ this is not").unwrap();
    let other_json = dir.join("other.json");
    std::fs::write(&other_json, "{\"schema\": \"something-else/1\"}").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["no-such-container", "--store", db],
            "unknown target \"no-such-container\"",
        ),
        (
            vec!["4026539999", "--store", db],
            "knows no such mount namespace",
        ),
        (
            vec!["/var/lib/docker/overlay2/other/merged", "--store", db],
            "unknown target",
        ),
        (
            vec!["web", "--store", "/nonexistent/events.db"],
            "no event store at /nonexistent/events.db",
        ),
        (
            vec!["web", "--store", corrupt.to_str().unwrap()],
            "is not a mountleak event store",
        ),
        (
            vec!["--import", not_json.to_str().unwrap()],
            "cannot be imported: not JSON",
        ),
        (
            vec!["--import", other_json.to_str().unwrap()],
            "not one this mountleak reads",
        ),
        (
            vec!["--import", "/nonexistent.json"],
            "cannot read /nonexistent.json",
        ),
        (
            vec!["web", "--import", not_json.to_str().unwrap()],
            "leave out TARGET",
        ),
        (
            vec!["4026532999", "--store", db, "--since", "soon"],
            "--since \"soon\": not a time",
        ),
        (
            vec!["4026532999", "--store", db, "--until", "1h"],
            "nothing recorded for \"4026532999\"",
        ),
        (vec!["--store", db], "give a TARGET"),
    ];
    for (args, says) in cases {
        let out = timeline(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err:?} should say {says:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `mountleak fix --yes` did, recorded through `record_remedy` (its
/// hook into the store), is a step of the mount's story.
#[test]
fn a_remedy_recorded_by_fix_joins_the_story() {
    let dir = std::env::temp_dir().join(format!("mountleak-tl-remedy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = synthetic_store(&dir);
    let mut cfg = mountleak::config::Config::default();
    cfg.store.path = db.clone();
    let path = b"/var/lib/docker/overlay2/synthetic/merged";
    let step = serde_json::json!({"n": 1, "text": "nsenter -t 4242 -m umount /var/lib/docker/overlay2/synthetic/merged",
                                  "action": "umount", "status": "done", "detail": "the copy is gone"});
    mountleak::timeline::record_remedy(&cfg, "ML-7", Some(path), None, step).unwrap();
    let text = stdout_ok(
        &timeline(&[
            "/var/lib/docker/overlay2/synthetic/merged",
            "--store",
            db.to_str().unwrap(),
        ]),
        "timeline with a remedy",
    );
    assert_in_order(
        &text,
        &[
            "the host unmounted /var/lib/docker/overlay2/synthetic/merged".into(),
            "`mountleak fix` for ML-7: nsenter -t 4242 -m umount /var/lib/docker/overlay2/synthetic/merged → done (the copy is gone)".into(),
        ],
    );
    // No store: nothing to do, no error.
    cfg.store.path = dir.join("none.db");
    mountleak::timeline::record_remedy(&cfg, "ML-7", Some(path), None, serde_json::json!({}))
        .unwrap();
    assert!(!cfg.store.path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
