//! `mountleak fix` on real leaks in a lab: each case released the way that
//! works for it, verified by the resource itself (the holder's mount table,
//! the loop device detaching, an `index=on` overlay reusing its upper
//! directory), a dry run that changes no byte of any mountinfo, and bad
//! input (a holder exiting or a copy vanishing between plan and action,
//! no privileges, targets fix must refuse).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use monitor_model::Patterns;
use mountleak::timeline::writer::{Writer, WriterConfig};
use serde_json::Value;

use crate::support::docker::{Dockerd, NsHolder};
use crate::support::{self, Lab, Propagation};

/// One `mountleak fix` run (JSON unless said otherwise).
struct Fix {
    code: i32,
    doc: Value,
    stdout: String,
    stderr: String,
}

impl Fix {
    fn output(cmd: &mut Command) -> Fix {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("could not run mountleak fix: {err}"));
        Fix::from_output(out)
    }

    fn from_output(out: std::process::Output) -> Fix {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("mountleak fix was killed: {}\n{stderr}", out.status));
        let doc = if stdout.trim_start().starts_with('{') {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|err| panic!("bad JSON ({err}):\n{stdout}\nstderr: {stderr}"))
        } else {
            Value::Null
        };
        Fix {
            code,
            doc,
            stdout,
            stderr,
        }
    }

    /// `mountleak fix --json --risk-grace 0s TARGET ARGS` in the lab.
    fn run(lab: &Lab, target: &Path, args: &[&str]) -> Fix {
        let mut cmd = lab.mountleak();
        cmd.args(["fix", "--json", "--risk-grace", "0s"])
            .arg(target)
            .args(args);
        Fix::output(&mut cmd)
    }

    fn actions(&self) -> &[Value] {
        self.doc["actions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("no actions in:\n{}\nstderr: {}", self.stdout, self.stderr))
    }

    /// `(action, status)` of every step.
    fn steps(&self) -> Vec<(String, String)> {
        self.actions()
            .iter()
            .map(|a| {
                (
                    a["action"]["action"].as_str().unwrap().to_string(),
                    a["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn assert_released(&self) {
        assert_eq!(
            (self.code, &self.doc["released"]),
            (0, &Value::Bool(true)),
            "fix --yes did not release everything:\n{}\nstderr: {}",
            self.stdout,
            self.stderr
        );
    }
}

fn pair(a: &str, s: &str) -> (String, String) {
    (a.into(), s.into())
}

/// Every process's mountinfo, by pid.
fn all_mountinfo() -> BTreeMap<u32, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(text) = fs::read(format!("/proc/{pid}/mountinfo")) {
            out.insert(pid, text);
        }
    }
    out
}

/// Pids (present before and after) whose mountinfo changed.
fn changed(before: &BTreeMap<u32, Vec<u8>>, after: &BTreeMap<u32, Vec<u8>>) -> Vec<u32> {
    before
        .iter()
        .filter(|(pid, text)| after.get(pid).is_some_and(|t| t != *text))
        .map(|(pid, _)| *pid)
        .collect()
}

/// An overlay at `/var/lib/docker/overlay2/<id>/merged` with
/// `index=on` (the kernel then refuses a second overlay on the same upper
/// directory while the first is alive: "upperdir is in-use").
fn overlay_index_on(lab: &Lab, id: &str) -> (PathBuf, String) {
    let base = format!("/var/lib/docker/overlay2/{id}");
    let opts = format!("lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work,index=on");
    lab.run_in_host(&format!(
        "mkdir -p {base}/lower {base}/upper {base}/work {base}/merged \
         && echo hello > {base}/lower/hello \
         && mount -t overlay overlay -o {opts} {base}/merged"
    ));
    (PathBuf::from(base).join("merged"), opts)
}

/// A mount namespace with no process, copied from the lab with private
/// propagation and kept alive by an nsfs bind mount on `<scratch>/nsfs/ns`
/// (on a private tmpfs: unshare refuses a shared parent). Returns the file
/// and the namespace's inode.
fn processless_namespace(lab: &Lab) -> (PathBuf, u64) {
    let dir = lab.scratch().join("nsfs");
    let file = dir.join("ns");
    fs::create_dir_all(&dir).unwrap();
    // `unshare --mount=FILE` fails with EINVAL now and then (PLATFORM.md).
    lab.run_in_host(&format!(
        "mount -t tmpfs mountleak-nsfs '{dir}' && mount --make-private '{dir}' \
         && touch '{file}' && for i in $(seq 1 100); do \
           unshare --mount='{file}' --propagation private true 2>/dev/null && exit 0; \
           sleep 0.02; \
         done; echo 'unshare --mount=FILE kept failing' >&2; exit 1",
        dir = dir.display(),
        file = file.display(),
    ));
    let through =
        Path::new(&format!("/proc/{}/root", lab.host_pid())).join(file.strip_prefix("/").unwrap());
    let ns = fs::metadata(&through).unwrap().ino();
    (file, ns)
}

/// A dry run prints the exact actions and changes nothing: every
/// process's mountinfo is byte-identical before and after (other
/// namespaces on the machine may change on their own, so a difference
/// outside the lab is measured again; the lab's never may).
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn a_dry_run_changes_no_byte_of_any_mountinfo() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("dry-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    let busy = lab.holder(Propagation::Private, Some(&merged));
    lab.umount(&merged).unwrap();
    let lab_pids = [lab.host_pid(), holder.pid, busy.pid];

    let mut clean = false;
    for attempt in 0..3 {
        let before = all_mountinfo();
        let f = Fix::run(&lab, &merged, &["--kill"]);
        let after = all_mountinfo();
        assert_eq!(
            f.code, 1,
            "a dry run with work to do exits 1:\n{}\n{}",
            f.stdout, f.stderr
        );
        assert_eq!(f.doc["dry_run"], true);
        assert!(
            f.steps().iter().all(|(_, s)| s == "planned"),
            "{}",
            f.stdout
        );
        assert!(f.steps().contains(&pair("umount", "planned")));
        assert!(f.steps().contains(&pair("kill", "planned")));
        let diff = changed(&before, &after);
        for pid in lab_pids {
            assert!(
                !diff.contains(&pid),
                "the dry run changed pid {pid}'s mountinfo"
            );
        }
        if diff.is_empty() {
            clean = true;
            break;
        }
        eprintln!(
            "attempt {attempt}: mountinfo of {diff:?} (outside the lab) changed meanwhile; again"
        );
    }
    assert!(
        clean,
        "some mountinfo outside the lab changed on every attempt"
    );
    assert!(support::has_mount(holder.pid, &merged));
    assert!(support::has_mount(busy.pid, &merged));

    // The text form says what it would do, step by step.
    let mut cmd = lab.mountleak();
    cmd.args(["fix", "--risk-grace", "0s"]).arg(&merged);
    let text = Fix::output(&mut cmd);
    assert_eq!(text.code, 1);
    for want in [
        "dry run: nothing is changed",
        &format!(
            "umount {} in mnt ns {} of pid {} (sleep)",
            merged.display(),
            holder.ns,
            holder.pid
        ),
        "carries them out",
    ] {
        assert!(
            text.stdout.contains(want),
            "missing {want:?}:\n{}",
            text.stdout
        );
    }
}

/// The field report's leak: a private holder keeps a container rootfs
/// after the runtime's umount. `fix --yes` unmounts it inside the holder's
/// namespace and the new scan finds nothing; the holder keeps running.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn overlay_with_a_private_holder_is_released() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("yes-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    lab.umount(&merged).unwrap();
    assert!(support::has_mount(holder.pid, &merged), "premise");

    // With an event store (the daemon's), what fix did joins the mount's story.
    let store_dir = std::env::temp_dir().join(format!("mountleak-fix-store-{}", lab.id()));
    std::fs::create_dir_all(&store_dir).unwrap();
    let db = store_dir.join("events.db");
    drop(Writer::spawn(WriterConfig::new(&db, Patterns::default())).unwrap());
    let config = store_dir.join("mountleak.toml");
    std::fs::write(
        &config,
        format!("[store]\npath = {:?}\n", db.display().to_string()),
    )
    .unwrap();

    let f = Fix::run(
        &lab,
        &merged,
        &["--yes", "--config", config.to_str().unwrap()],
    );
    f.assert_released();
    assert_eq!(
        f.steps(),
        vec![pair("umount", "done"), pair("remove_mountpoint", "skipped")]
    );
    let story = lab
        .mountleak()
        .arg("timeline")
        .arg(&merged)
        .args(["--store", db.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&story.stdout);
    assert!(
        story.status.success()
            && text.contains("`mountleak fix` for ML-")
            && text.contains("→ done"),
        "the store tells the fix:\n{text}\nstderr: {}",
        String::from_utf8_lossy(&story.stderr)
    );
    let _ = std::fs::remove_dir_all(&store_dir);
    assert!(!support::has_mount(holder.pid, &merged));
    assert_eq!(
        support::mnt_ns(holder.pid),
        holder.ns,
        "the holder still runs"
    );
    assert!(lab
        .command("test")
        .arg("-d")
        .arg(&merged)
        .status()
        .unwrap()
        .success());

    // Again: nothing left to do.
    let again = Fix::run(&lab, &merged, &["--yes"]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert!(again.actions().is_empty());
}

/// An `index=on` overlay's upper directory cannot be used by a new overlay
/// while a leaked copy keeps the old one alive (EBUSY); after `fix --yes`
/// it can.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn index_on_overlay_can_reuse_its_upper_dir_after_the_fix() {
    let mut lab = Lab::new();
    let (merged, opts) = overlay_index_on(&lab, &format!("index-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    lab.umount(&merged).unwrap();
    let remount = format!("mount -t overlay overlay -o {opts} {}", merged.display());
    let refused = support::check(lab.command("sh").args(["-c", &remount]))
        .expect_err("premise: the upper dir is in use while the copy lives");
    assert!(
        refused.stderr.contains("busy") || refused.stderr.contains("in use"),
        "{refused}"
    );

    let f = Fix::run(&lab, &merged, &["--yes"]);
    f.assert_released();
    assert!(!support::has_mount(holder.pid, &merged));
    lab.run_in_host(&remount);
    assert!(support::has_mount(lab.host_pid(), &merged));
    lab.umount(&merged).unwrap();
}

/// A CSI-style volume (ext4 on a loop device) kept by a private holder:
/// before the fix e2fsck refuses the device (in use) and `losetup -d` only
/// defers; after `fix --yes` e2fsck runs, and the device really detaches.
#[test]
#[ignore = "needs root: creates mounts, namespaces and loop devices"]
fn loop_volume_detaches_after_the_fix() {
    let mut lab = Lab::new();
    let pod = format!("fixpod-{}", lab.id());
    let volume = lab.loop_ext4(&pod, "pvc-data");
    let holder = lab.holder(Propagation::Private, None);
    lab.umount(&volume.mountpoint).unwrap();
    // Both open the device O_EXCL and refuse while the copy holds it
    // (`e2fsck -n` would only warn).
    let e2fsck = || support::check(Command::new("e2fsck").arg("-fp").arg(&volume.device));
    let mkfs = || {
        support::check(
            Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&volume.device),
        )
    };
    let busy = e2fsck().expect_err("premise: e2fsck refuses a device the copy holds");
    assert!(format!("{busy}").contains("in use"), "{busy}");
    let busy = mkfs().expect_err("premise: mkfs refuses a device the copy holds");
    assert!(format!("{busy}").contains("in use"), "{busy}");

    let f = Fix::run(&lab, &volume.mountpoint, &["--yes"]);
    f.assert_released();
    assert!(!support::has_mount(holder.pid, &volume.mountpoint));
    e2fsck().expect("e2fsck runs once nothing holds the device");
    mkfs().expect("and mkfs");
    support::check(Command::new("losetup").arg("-d").arg(&volume.device)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while support::loop_backing_file(&volume.device).is_some() {
        assert!(
            Instant::now() < deadline,
            "{} did not detach after losetup -d",
            volume.device.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A holder in a user namespace: its copy is locked and umount inside fails
/// with EINVAL, so fix does not try; it removes the now-empty mountpoint
/// directory on the host (which detaches every copy) and makes it again
/// with the same mode.
#[test]
#[ignore = "needs root: creates mounts, user and mount namespaces"]
fn user_namespace_holder_is_released_by_removing_the_mountpoint() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("fixuserns-{}", lab.id()));
    let holder = lab.holder_unshare(&[
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
    ]);
    lab.umount(&merged).unwrap();
    lab.run_in_host(&format!("chmod 0710 {}", merged.display()));

    let dry = Fix::run(&lab, &merged, &[]);
    assert_eq!(
        dry.steps(),
        vec![pair("remove_mountpoint", "planned")],
        "{}",
        dry.stdout
    );
    assert!(
        dry.actions()[0]["text"]
            .as_str()
            .unwrap()
            .contains("locked in a user namespace"),
        "{}",
        dry.stdout
    );

    let f = Fix::run(&lab, &merged, &["--yes"]);
    f.assert_released();
    assert_eq!(f.steps(), vec![pair("remove_mountpoint", "done")]);
    assert!(!support::has_mount(holder.pid, &merged));
    let mode = lab.run_in_host(&format!("stat -c %a {}", merged.display()));
    assert_eq!(mode.trim(), "710", "made again with the same mode");
}

/// A namespace with no process, kept alive by an nsfs bind mount: fix
/// enters it through the nsfs file and unmounts the copy; the namespace
/// itself (and the nsfs mount) stay.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn nsfs_pinned_namespace_is_released_through_its_nsfs_mount() {
    let lab = Lab::new();
    let merged = lab.overlay(&format!("fixnsfs-{}", lab.id()));
    let (file, ns) = processless_namespace(&lab);
    lab.umount(&merged).unwrap();
    let inside = || {
        let mut arg = std::ffi::OsString::from("--mount=");
        arg.push(&file);
        support::check(
            lab.command("nsenter")
                .arg(arg)
                .args(["cat", "/proc/self/mountinfo"]),
        )
        .unwrap()
    };
    assert!(inside().contains(merged.to_str().unwrap()), "premise");

    let f = Fix::run(&lab, &merged, &["--yes"]);
    f.assert_released();
    assert_eq!(
        f.steps(),
        vec![pair("umount", "done"), pair("remove_mountpoint", "skipped")]
    );
    let via = &f.actions()[0]["action"]["enter"];
    assert_eq!(via["via"], "nsfs", "{via}");
    assert_eq!(via["file"], file.to_str().unwrap());
    assert_eq!(f.actions()[0]["action"]["mnt_ns"], ns);
    assert!(!inside().contains(merged.to_str().unwrap()));
}

/// A holder whose cwd is inside its copy: the plain umount is EBUSY, so fix
/// unmounts lazily and says the filesystem lives on; without `--kill` the
/// holder is never signalled and the leak remains (exit 1, the pin named,
/// by device since no table has the path any more); with `--kill` in the
/// same run the holder is stopped once the lazy umount leaves it pinning.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn busy_copy_goes_lazy_and_only_kill_releases_the_pin() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("fixbusy-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, Some(&merged));
    lab.umount(&merged).unwrap();

    let f = Fix::run(&lab, &merged, &["--yes"]);
    assert_eq!(f.code, 1, "{}", f.stdout);
    assert_eq!(f.steps()[0], pair("umount", "done"));
    assert!(
        f.actions()[0]["detail"]
            .as_str()
            .unwrap()
            .contains("lazily"),
        "{}",
        f.stdout
    );
    assert!(!support::has_mount(holder.pid, &merged));
    assert_eq!(
        support::mnt_ns(holder.pid),
        holder.ns,
        "not killed without --kill"
    );
    let left = f.doc["remaining"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{}", f.stdout);
    assert_eq!(left[0]["holders"][0]["hold"], "cwd");
    assert_eq!(left[0]["holders"][0]["pid"], holder.pid);

    let merged2 = lab.overlay(&format!("fixbusy2-{}", lab.id()));
    let holder2 = lab.holder(Propagation::Private, Some(&merged2));
    lab.umount(&merged2).unwrap();
    let f = Fix::run(&lab, &merged2, &["--yes", "--kill"]);
    f.assert_released();
    let steps = f.steps();
    assert_eq!(steps[0], pair("umount", "done"), "{}", f.stdout);
    assert_eq!(steps.last().unwrap(), &pair("kill", "done"), "{}", f.stdout);
    let stat = fs::read_to_string(format!("/proc/{}/stat", holder2.pid)).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
}

/// Finding ids are numbered per scan: `fix ML-N` shows the plan for what a
/// fresh scan numbers N; `--yes` with an id is refused, naming the path to
/// use instead.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn finding_ids_are_for_looking_not_for_acting() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("fixid-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    lab.umount(&merged).unwrap();
    let mut cmd = lab.mountleak();
    cmd.args(["scan", "--json"]);
    let scan = Fix::output(&mut cmd);
    let id = scan.doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["mount"]["path"] == merged.to_str().unwrap())
        .map(|f| f["id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no finding for {merged:?}:\n{}", scan.stdout));

    let mut cmd = lab.mountleak();
    cmd.args(["fix", "--json", &id]);
    let dry = Fix::output(&mut cmd);
    assert_eq!(dry.code, 1, "{}\n{}", dry.stdout, dry.stderr);
    assert_eq!(dry.doc["items"][0]["path"], merged.to_str().unwrap());
    assert_eq!(dry.steps()[0], pair("umount", "planned"));

    let mut cmd = lab.mountleak();
    cmd.args(["fix", &id, "--yes"]);
    let f = Fix::output(&mut cmd);
    assert_eq!(f.code, 2, "{}", f.stdout);
    assert!(
        f.stderr.contains("numbered per scan")
            && f.stderr
                .contains(&format!("mountleak fix {} --yes", merged.display())),
        "{}",
        f.stderr
    );
    assert!(support::has_mount(holder.pid, &merged), "nothing was done");
}

/// `--kill` on a copy that even a lazy umount cannot take (a user
/// namespace holder while the host still has the mount): the holder is
/// killed, and only then.
#[test]
#[ignore = "needs root: creates mounts, user and mount namespaces"]
fn kill_is_the_last_resort_and_needs_the_flag() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("fixkill-{}", lab.id()));
    let holder = lab.holder_unshare(&[
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
    ]);
    // The host still has it: no directory removal; a locked copy: no umount.
    let f = Fix::run(&lab, &merged, &["--yes"]);
    assert_eq!(f.code, 1, "{}", f.stdout);
    assert!(f.actions().is_empty(), "{}", f.stdout);
    let not_done = &f.doc["items"][0]["not_done"][0]["why"];
    assert!(
        not_done.as_str().unwrap().contains("EINVAL"),
        "{}",
        f.stdout
    );
    assert_eq!(support::mnt_ns(holder.pid), holder.ns);

    let f = Fix::run(&lab, &merged, &["--yes", "--kill"]);
    f.assert_released();
    assert_eq!(f.steps(), vec![pair("kill", "done")]);
    let stat = fs::read_to_string(format!("/proc/{}/stat", holder.pid)).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the holder is dead (or a zombie awaiting the lab): {stat}"
    );
}

/// Between the plan and the action one holder exits and another's copy is
/// unmounted by someone else: both steps say "already released", nothing
/// fails, and the verification finds nothing.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn holders_that_exit_or_let_go_mid_fix_are_reported_as_released() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("fixvanish-{}", lab.id()));
    let leaving = lab.holder(Propagation::Private, None);
    let letting_go = lab.holder(Propagation::Private, None);
    lab.umount(&merged).unwrap();

    let pause = lab.scratch().join("pause");
    fs::write(&pause, b"").unwrap();
    let mut ready = pause.clone().into_os_string();
    ready.push(".ready");
    let child = lab
        .mountleak()
        .args(["fix", "--json", "--risk-grace", "0s"])
        .arg(&merged)
        .arg("--yes")
        .env("MOUNTLEAK_FIX_TEST_PAUSE", &pause)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_until("fix to finish planning", || Path::new(&ready).exists());
    lab.stop(leaving);
    support::check(
        Command::new("nsenter")
            .arg(format!("--target={}", letting_go.pid))
            .args(["--mount", "umount"])
            .arg(&merged),
    )
    .unwrap();
    fs::remove_file(&pause).unwrap();
    let f = Fix::from_output(child.wait_with_output().unwrap());
    f.assert_released();
    let statuses: Vec<String> = f.steps().into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        statuses,
        vec!["already_released", "already_released", "skipped"],
        "{}",
        f.stdout
    );
    let details: Vec<&str> = f
        .actions()
        .iter()
        .map(|a| a["detail"].as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains(&format!("pid {} has exited", leaving.pid))),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("nothing is mounted")),
        "{details:?}"
    );
}

/// Permission errors: as uid 65534, `--yes` is refused before anything is
/// done, naming what it needs; so is root without CAP_SYS_ADMIN. A dry run
/// as 65534 runs and says holders may be missing. Nothing changes.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn without_privileges_fix_refuses_and_changes_nothing() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("fixperm-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    lab.umount(&merged).unwrap();
    let before = fs::read(format!("/proc/{}/mountinfo", holder.pid)).unwrap();
    // A copy uid 65534 can execute, whatever the build directory allows.
    let bin = lab.scratch().join("mountleak");
    fs::copy(support::mountleak_bin(), &bin).unwrap();
    fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let as_nobody = |extra: &[&str]| {
        let mut cmd = lab.command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(["fix", "--risk-grace", "0s"])
            .arg(&merged)
            .args(extra);
        Fix::output(&mut cmd)
    };
    let f = as_nobody(&["--yes"]);
    assert_eq!(f.code, 2, "{}\n{}", f.stdout, f.stderr);
    assert!(
        f.stderr.contains("needs root")
            && f.stderr.contains("CAP_SYS_ADMIN")
            && f.stderr.contains("nothing was changed"),
        "{}",
        f.stderr
    );
    let dry = as_nobody(&[]);
    assert!(
        dry.code == 0 || dry.code == 1,
        "{}\n{}",
        dry.stdout,
        dry.stderr
    );
    assert!(
        dry.stdout.contains("running as uid 65534"),
        "{}",
        dry.stdout
    );

    let mut cmd = lab.command("setpriv");
    cmd.args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"])
        .arg(&bin)
        .args(["fix", "--risk-grace", "0s"])
        .arg(&merged)
        .arg("--yes");
    let f = Fix::output(&mut cmd);
    assert_eq!(f.code, 2, "{}\n{}", f.stdout, f.stderr);
    assert!(f.stderr.contains("CAP_SYS_ADMIN"), "{}", f.stderr);

    assert_eq!(
        fs::read(format!("/proc/{}/mountinfo", holder.pid)).unwrap(),
        before,
        "the holder's table is untouched"
    );
}

/// Targets fix must refuse: a path that is not a container mount (even a
/// parent of one), an unknown finding id, a container no runtime knows.
#[test]
#[ignore = "needs root: runs mountleak in a lab"]
fn refuses_what_is_not_a_container_mount_and_unknown_targets() {
    let lab = Lab::new();
    let merged = lab.overlay(&format!("fixrefuse-{}", lab.id()));
    let _ = merged;
    for (target, want) in [
        ("/var/lib/docker", "not a container mount"),
        ("/tmp", "not a container mount"),
        ("ML-999999", "no finding ML-999999"),
        ("no-such-container-anywhere", "unknown target"),
    ] {
        let mut cmd = lab.mountleak();
        cmd.args(["fix", target, "--yes"]);
        let f = Fix::output(&mut cmd);
        assert_eq!(f.code, 2, "{target}: {}\n{}", f.stdout, f.stderr);
        assert!(f.stderr.contains(want), "{target}: {}", f.stderr);
        assert!(f.stdout.is_empty(), "{target}: {}", f.stdout);
    }
}

/// A Docker container named as the target: its rootfs, copied into a
/// private holder while it runs (a risk), is found through the engine's
/// API; `--yes` unmounts the copy in the holder's namespace and the
/// container is then stopped and removed with nothing left pinned. An id
/// prefix that two containers share is refused as ambiguous.
#[test]
#[ignore = "needs root: runs dockerd, containers and namespaces"]
fn docker_container_target_is_resolved_through_the_engine() {
    let mut d = Dockerd::start();
    let name = format!("mlfix-{}", std::process::id());
    let id = d.run(&name);
    let merged = d.merged_dir(&name);
    let holder = NsHolder::start(Propagation::Private, Path::new("/"));
    assert!(support::has_mount(holder.pid, &merged), "premise");
    let sock = d.socket();
    let fix = |args: &[&str]| {
        let mut cmd = Command::new(support::mountleak_bin());
        cmd.arg("--docker-socket")
            .arg(&sock)
            .args(["fix", "--json", "--risk-grace", "0s"])
            .args(args);
        Fix::output(&mut cmd)
    };

    let dry = fix(&[&name]);
    assert_eq!(dry.code, 1, "{}\n{}", dry.stdout, dry.stderr);
    assert_eq!(dry.doc["containers"][0]["id"], id.as_str());
    assert_eq!(dry.doc["items"][0]["path"], merged.to_str().unwrap());
    assert_eq!(dry.doc["items"][0]["kind"], "risk");
    assert_eq!(
        dry.steps(),
        vec![pair("umount", "planned")],
        "no rmdir while Docker has it mounted"
    );

    let f = fix(&[&id[..12], "--yes"]);
    f.assert_released();
    assert!(!support::has_mount(holder.pid, &merged));
    d.stop(&name);
    d.rm(&name);

    // Two containers whose ids start alike (at most 17 tries for 16 hex
    // digits), named by that shared first digit.
    let mut by_first: BTreeMap<char, String> = BTreeMap::new();
    let mut shared = None;
    for i in 0..17 {
        let id = d.run(&format!("mlfix-{}-{i}", std::process::id()));
        let c = id.chars().next().unwrap();
        if by_first.insert(c, id).is_some() {
            shared = Some(c);
            break;
        }
    }
    let c = shared
        .expect("17 ids over 16 digits share a first digit")
        .to_string();
    let f = fix(&[&c, "--yes"]);
    assert_eq!(f.code, 2, "{}\n{}", f.stdout, f.stderr);
    assert!(f.stderr.contains("ambiguous"), "{}", f.stderr);
}
