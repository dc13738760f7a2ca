//! `mountleak scan --json`, run inside a lab, against real overlays, loop
//! devices and holder namespaces: what a user of the one-shot scan sees,
//! and whether what it tells them is true (a printed remedy is run as
//! printed; a claimed EINVAL is provoked).
//!
//! The scan sees every mount namespace on the machine, so each test keeps
//! the findings for the paths (or the device) it made and asserts the exact
//! set of those. Exit codes depend on every finding: [`Scan::assert_exit`]
//! checks the code exactly when nothing else on the machine is reported,
//! and against the whole document when something is.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};

use crate::support::{self, Holder, Lab, Propagation};

/// One `mountleak scan --json` run.
struct Scan {
    /// The command line, for messages.
    args: Vec<String>,
    code: i32,
    /// The parsed document (`Null` when the scan failed).
    doc: Value,
    stdout: String,
    stderr: String,
}

impl Scan {
    /// Runs `mountleak scan --json ARGS` in the lab's host namespace (which
    /// mountleak therefore takes as the host).
    fn run(lab: &Lab, args: &[&str]) -> Scan {
        let mut cmd = lab.mountleak();
        cmd.args(["scan", "--json"]).args(args);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("could not run mountleak scan: {err}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("mountleak scan was killed: {}\n{stderr}", out.status));
        let doc = if code == 2 {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|err| {
                panic!("scan (exit {code}) printed no JSON document ({err}):\n{stdout}\nstderr: {stderr}")
            })
        };
        Scan {
            args: args.iter().map(|a| a.to_string()).collect(),
            code,
            doc,
            stdout,
            stderr,
        }
    }

    fn findings(&self) -> &[Value] {
        self.doc["findings"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("no findings array in:\n{}", self.stdout))
    }

    /// The findings about the mount at exactly `path`.
    fn at(&self, path: &Path) -> Vec<&Value> {
        self.findings()
            .iter()
            .filter(|f| path_is(&f["mount"], "path", path))
            .collect()
    }

    /// The one finding about `path`; panics (showing the scan) unless there
    /// is exactly one.
    fn only_at(&self, path: &Path) -> &Value {
        match self.at(path).as_slice() {
            [one] => one,
            other => panic!(
                "expected one finding for {path:?}, got {}:\n{}",
                other.len(),
                self.stdout
            ),
        }
    }

    /// The findings about the filesystem on device `dev` (`major:minor`).
    fn on_dev(&self, dev: &str) -> Vec<&Value> {
        self.findings()
            .iter()
            .filter(|f| f["mount"]["dev"] == dev)
            .collect()
    }

    /// Asserts the exit code. `mine` picks this test's findings. When the
    /// scan reports nothing else, the code must be `expected` (what this
    /// test's mounts call for). Other namespaces on the machine (another
    /// developer's experiment) can add findings; then the code must still be
    /// exactly what the whole document calls for, and `expected` must be
    /// consistent with it.
    fn assert_exit(&self, expected: i32, mine: impl Fn(&Value) -> bool) {
        let fail_on_risk = self.args.iter().any(|a| a == "--fail-on-risk");
        let failing = |f: &&Value| f["kind"] == "leak" || (fail_on_risk && f["kind"] == "risk");
        let (own, foreign): (Vec<&Value>, Vec<&Value>) =
            self.findings().iter().partition(|f| mine(f));
        let own_code = i32::from(own.iter().any(failing));
        assert_eq!(
            own_code, expected,
            "this test's findings call for exit {own_code}, not {expected}:\n{}",
            self.stdout
        );
        let whole = i32::from(own.iter().chain(&foreign).any(failing));
        if !foreign.is_empty() {
            eprintln!(
                "note: {} finding(s) from other namespaces on this machine; checking exit {whole} for the whole document",
                foreign.len()
            );
        }
        assert_eq!(
            self.code, whole,
            "mountleak scan {:?} exited {} (expected {whole}):\n{}\nstderr: {}",
            self.args, self.code, self.stdout, self.stderr
        );
        assert_eq!(
            self.doc["leaks"],
            json!(self
                .findings()
                .iter()
                .filter(|f| f["kind"] == "leak")
                .count()),
            "`leaks` counts the leak findings"
        );
    }
}

/// Whether `obj[key]` names exactly `path`: the text when it is UTF-8
/// (with no `KEY_hex` twin), else `KEY_hex` holds its bytes.
fn path_is(obj: &Value, key: &str, path: &Path) -> bool {
    let hex_key = format!("{key}_hex");
    match path.to_str() {
        Some(text) => obj[key] == text && obj.get(&hex_key).is_none(),
        None => obj[&hex_key] == hex(path.as_os_str().as_bytes()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that `finding` names exactly one holder, `holder`, holding a copy
/// with `propagation`, and returns that holder's JSON.
fn assert_one_holder<'a>(finding: &'a Value, holder: Holder, propagation: &str) -> &'a Value {
    let holders = finding["holders"].as_array().expect("holders array");
    assert_eq!(holders.len(), 1, "one holder expected: {finding:#}");
    let h = &holders[0];
    assert_eq!(h["pid"], json!(holder.pid), "holder pid: {h:#}");
    assert_eq!(h["comm"], "sleep", "holder comm: {h:#}");
    assert_eq!(h["mnt_ns"], json!(holder.ns), "holder mnt_ns: {h:#}");
    assert_eq!(
        h["mnt_ns"],
        json!(support::mnt_ns(holder.pid)),
        "mnt_ns is what readlink /proc/PID/ns/mnt shows"
    );
    assert_eq!(h["propagation"], propagation, "propagation: {h:#}");
    assert_eq!(h["hold"], "copy", "hold: {h:#}");
    h
}

/// The first command a remedy line gives: the text between its first pair
/// of backticks.
fn first_command(remedy: &Value) -> String {
    let line = remedy.as_str().unwrap_or_else(|| panic!("remedy {remedy}"));
    let mut parts = line.split('`');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(command), Some(_)) => command.to_string(),
        _ => panic!("no `command` in remedy {line:?}"),
    }
}

/// `major:minor` of the filesystem mounted at `path` in the lab, as
/// mountinfo and mountleak write it.
fn dev_of(lab: &Lab, path: &Path) -> String {
    let inside = Path::new(&format!("/proc/{}/root", lab.host_pid()))
        .join(path.strip_prefix("/").expect("an absolute path"));
    let dev = fs::metadata(&inside)
        .unwrap_or_else(|err| panic!("stat {}: {err}", inside.display()))
        .dev();
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// A private holder keeps its copy of a container rootfs: while the lab
/// still mounts it, `scan` calls it a risk (exit 0, or 1 with
/// `--fail-on-risk`) and names the holder; once the lab unmounts it, a leak
/// (exit 1) naming the same holder.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn private_copy_is_a_risk_then_a_leak() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("private-{}", lab.id()));
    let dev = dev_of(&lab, &merged);
    let holder = lab.holder(Propagation::Private, None);
    let mine = |f: &Value| path_is(&f["mount"], "path", &merged);

    let risk = Scan::run(&lab, &["--risk-grace", "0s"]);
    let f = risk.only_at(&merged);
    assert_eq!(f["kind"], "risk", "{f:#}");
    let h = assert_one_holder(f, holder, "private");
    assert_eq!(h["receives_host_umounts"], false, "{h:#}");
    assert_eq!(f["mount"]["fstype"], "overlay");
    assert_eq!(f["mount"]["dev"], dev.as_str());
    risk.assert_exit(0, mine);

    let strict = Scan::run(&lab, &["--risk-grace", "0s", "--fail-on-risk"]);
    assert_eq!(strict.only_at(&merged)["kind"], "risk");
    strict.assert_exit(1, mine);

    lab.umount(&merged).unwrap();
    assert!(
        support::has_mount(holder.pid, &merged),
        "premise: the private copy outlives the lab's umount"
    );
    let leak = Scan::run(&lab, &["--risk-grace", "0s"]);
    let f = leak.only_at(&merged);
    assert_eq!(f["kind"], "leak", "{f:#}");
    assert_one_holder(f, holder, "private");
    assert_eq!(f["mount"]["dev"], dev.as_str());
    assert_eq!(f["mount"]["container"]["runtime"], "docker", "{f:#}");
    let fix = first_command(&f["remedy"][0]);
    assert_eq!(
        fix,
        format!("nsenter -t {} -m umount {}", holder.pid, merged.display())
    );
    leak.assert_exit(1, mine);
}

/// Copies that receive the host's umounts (a slave or a shared peer of the
/// lab's tree) are not a problem: no finding before or after the umount,
/// exit 0.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn slave_and_shared_copies_are_not_reported() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("propagating-{}", lab.id()));
    let slave = lab.holder(Propagation::Slave, None);
    let shared = lab.holder(Propagation::Shared, None);
    let mine = |f: &Value| path_is(&f["mount"], "path", &merged);
    for holder in [slave, shared] {
        assert!(
            support::has_mount(holder.pid, &merged),
            "premise: {holder:?} has a copy"
        );
    }

    let before = Scan::run(&lab, &["--risk-grace", "0s", "--fail-on-risk"]);
    assert!(before.at(&merged).is_empty(), "{}", before.stdout);
    before.assert_exit(0, mine);

    lab.umount(&merged).unwrap();
    for holder in [slave, shared] {
        assert!(
            !support::has_mount(holder.pid, &merged),
            "premise: the umount reached {holder:?}"
        );
    }
    let after = Scan::run(&lab, &["--risk-grace", "0s", "--fail-on-risk"]);
    assert!(after.at(&merged).is_empty(), "{}", after.stdout);
    after.assert_exit(0, mine);
}

/// The other way a copy breaks a removal (PLATFORM.md): a slave holder whose
/// cwd is inside the container mount receives the umount and makes it fail
/// with "target is busy". `mountleak` says it "finds container mounts held
/// by other mount namespaces before a removal fails", so a scan before the
/// umount should name that holder (a risk, exit 1 with `--fail-on-risk`).
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn busy_slave_copy_is_reported_before_the_umount_fails() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("busy-slave-{}", lab.id()));
    let holder = lab.holder(Propagation::Slave, Some(&merged));

    let scan = Scan::run(&lab, &["--risk-grace", "0s", "--fail-on-risk"]);
    let busy = lab.umount(&merged).unwrap_err();
    assert!(busy.stderr.contains("target is busy"), "premise: {busy}");
    let f = scan.only_at(&merged);
    assert_eq!(f["kind"], "risk", "{f:#}");
    let h = assert_one_holder(f, holder, "slave");
    assert_eq!(
        h["busy"],
        json!([format!("cwd of pid {} (sleep) is inside", holder.pid)]),
        "{h:#}"
    );
    scan.assert_exit(1, |f| path_is(&f["mount"], "path", &merged));
}

/// A Kubernetes-style CSI volume (ext4 on a loop device) kept by a private
/// holder after kubelet's umount: a leak naming the ext4 filesystem and its
/// loop device, whose consequence says the block device stays in use — and
/// it does (an exclusive open of the device fails with EBUSY).
#[test]
#[ignore = "needs root: creates mounts, namespaces and loop devices"]
fn loop_volume_leak_names_the_block_device() {
    let mut lab = Lab::new();
    let pod = format!("pod-{}", lab.id());
    let volume = lab.loop_ext4(&pod, "pvc-data");
    let rdev = fs::metadata(&volume.device).unwrap().rdev();
    let dev = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    assert!(dev.starts_with("7:"), "a loop device is major 7: {dev}");
    let holder = lab.holder(Propagation::Private, None);
    lab.umount(&volume.mountpoint).unwrap();

    let scan = Scan::run(&lab, &["--risk-grace", "0s"]);
    let f = scan.only_at(&volume.mountpoint);
    assert_eq!(f["kind"], "leak", "{f:#}");
    assert_one_holder(f, holder, "private");
    assert_eq!(f["mount"]["fstype"], "ext4");
    assert_eq!(f["mount"]["dev"], dev.as_str());
    let consequence = f["consequence"]["text"].as_str().unwrap();
    assert!(
        consequence.contains("block device"),
        "the consequence names the block device: {consequence}"
    );
    scan.assert_exit(1, |f| path_is(&f["mount"], "path", &volume.mountpoint));

    // The claim is true: the device is still in use.
    let exclusive = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&volume.device);
    assert_eq!(
        exclusive.map(drop).map_err(|err| err.raw_os_error()),
        Err(Some(libc::EBUSY)),
        "O_EXCL open of {} while the leaked copy holds it",
        volume.device.display()
    );
}

/// A leak ends when its holder exits: the next scan reports nothing for the
/// path and exits 0.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn leak_is_gone_once_the_holder_exits() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("exits-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    let mine = |f: &Value| path_is(&f["mount"], "path", &merged);
    lab.umount(&merged).unwrap();
    let leak = Scan::run(&lab, &[]);
    assert_eq!(leak.only_at(&merged)["kind"], "leak");
    leak.assert_exit(1, mine);

    lab.stop(holder);
    let after = Scan::run(&lab, &["--risk-grace", "0s"]);
    assert!(after.at(&merged).is_empty(), "{}", after.stdout);
    after.assert_exit(0, mine);
}

/// The 6.18 shape of the seed incident: a private holder's cwd is inside the
/// container rootfs; the runtime unmounts and removes `merged`, which
/// detaches the holder's copy, so no mountinfo anywhere shows it. The scan
/// still reports a leak, held through the holder's cwd, with the
/// `filesystem_pinned` consequence; after the holder exits, nothing.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn detached_filesystem_pinned_by_a_cwd_is_a_leak() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("pinned-{}", lab.id()));
    let dev = dev_of(&lab, &merged);
    let holder = lab.holder(Propagation::Private, Some(&merged));
    lab.umount(&merged).unwrap();

    // Before the removal the copy is still mounted, and busy: the scan says
    // the removal will not free it and that only a lazy umount releases it.
    let busy = Scan::run(&lab, &[]);
    let f = busy.only_at(&merged);
    assert_eq!(f["kind"], "leak", "{f:#}");
    let h = assert_one_holder(f, holder, "private");
    let cwd_inside = format!("cwd of pid {} (sleep) is inside", holder.pid);
    assert_eq!(h["busy"], json!([cwd_inside]), "{h:#}");
    assert_eq!(f["consequence"]["kind"], "filesystem_pinned", "{f:#}");
    assert_eq!(
        first_command(&f["remedy"][0]),
        format!(
            "nsenter -t {} -m umount -l {}",
            holder.pid,
            merged.display()
        )
    );

    lab.rmdir(&merged).unwrap();
    assert!(
        !support::has_mount(holder.pid, &merged),
        "premise (PLATFORM.md): removing the mountpoint detached the holder's copy"
    );
    let pinned = Scan::run(&lab, &[]);
    let found = pinned.on_dev(&dev);
    let [f] = found.as_slice() else {
        panic!(
            "expected one finding on {dev}, got {}:\n{}",
            found.len(),
            pinned.stdout
        );
    };
    assert_eq!(f["kind"], "leak", "{f:#}");
    assert_eq!(f["mount"]["fstype"], "overlay");
    // No mount table names the path any more; a one-shot scan has no
    // history to recover it from.
    assert!(
        f["mount"]["path"] == "" || path_is(&f["mount"], "path", &merged),
        "{f:#}"
    );
    let holders = f["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{f:#}");
    let h = &holders[0];
    assert_eq!(h["pid"], json!(holder.pid));
    assert_eq!(h["comm"], "sleep");
    assert_eq!(h["mnt_ns"], json!(holder.ns));
    assert_eq!(h["hold"], "cwd", "{h:#}");
    assert_eq!(f["consequence"]["kind"], "filesystem_pinned", "{f:#}");
    let remedy = f["remedy"][0].as_str().unwrap();
    assert!(
        remedy.contains(&format!("pid {}", holder.pid)) && remedy.contains("working directory"),
        "{remedy}"
    );
    pinned.assert_exit(1, |f| f["mount"]["dev"] == dev.as_str());

    lab.stop(holder);
    let after = Scan::run(&lab, &[]);
    assert!(after.on_dev(&dev).is_empty(), "{}", after.stdout);
    after.assert_exit(0, |f| f["mount"]["dev"] == dev.as_str());
}

/// Makes a mount namespace with no process, copied from the lab's host
/// namespace with private propagation and kept alive by an nsfs bind mount
/// on `<scratch>/nsfs/ns` (on a private tmpfs in the lab: unshare refuses a
/// shared parent). Returns the nsfs file and the namespace's inode.
fn processless_namespace(lab: &Lab) -> (PathBuf, u64) {
    let dir = lab.scratch().join("nsfs");
    let file = dir.join("ns");
    fs::create_dir_all(&dir).unwrap();
    // `unshare --mount=FILE` fails with EINVAL now and then on this kernel
    // (PLATFORM.md; procfs_scan measured about half the time): retry.
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
    let ns = fs::metadata(&through)
        .unwrap_or_else(|err| panic!("stat {}: {err}", through.display()))
        .ino();
    assert_ne!(ns, lab.host_ns());
    (file, ns)
}

/// A namespace with no process, kept alive by an nsfs bind mount, holds a
/// copy no /proc/PID/mountinfo shows: the scan still reports the leak, with
/// no pid, names the nsfs mount, and prints an `nsenter --mount=FILE`
/// remedy that works as printed.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn processless_namespace_kept_by_nsfs_mount_is_a_leak() {
    let lab = Lab::new();
    let merged = lab.overlay(&format!("nsfs-{}", lab.id()));
    let (file, ns) = processless_namespace(&lab);
    let mine = |f: &Value| path_is(&f["mount"], "path", &merged);
    lab.umount(&merged).unwrap();

    let scan = Scan::run(&lab, &[]);
    let f = scan.only_at(&merged);
    assert_eq!(f["kind"], "leak", "{f:#}");
    let holders = f["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{f:#}");
    let h = &holders[0];
    assert_eq!(h["pid"], Value::Null, "{h:#}");
    assert_eq!(h["processes"], json!([]), "{h:#}");
    assert_eq!(h["mnt_ns"], json!(ns), "{h:#}");
    assert_eq!(h["propagation"], "private", "{h:#}");
    assert_eq!(h["nsfs_mounts"], json!([file.to_str().unwrap()]), "{h:#}");
    let remedy = f["remedy"][0].as_str().unwrap();
    let fix = first_command(&f["remedy"][0]);
    assert_eq!(
        fix,
        format!(
            "nsenter --mount={} umount {}",
            file.display(),
            merged.display()
        ),
        "{remedy}"
    );
    scan.assert_exit(1, mine);

    // The remedy works as printed.
    support::check(lab.command("bash").args(["-c", &fix])).unwrap();
    let after = Scan::run(&lab, &[]);
    assert!(after.at(&merged).is_empty(), "{}", after.stdout);
    after.assert_exit(0, mine);
}

/// Paths are bytes: an overlay id with a space, a tab, a newline and a byte
/// that is not UTF-8 (mountinfo escapes the first three, passes the last
/// raw). The JSON names the path exactly (`path_hex` for the bytes), and the
/// first remedy, run as printed with bash, releases the holder's copy.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn odd_path_is_exact_and_its_remedy_works_as_printed() {
    let mut lab = Lab::new();
    let mut id = b"odd \t\n\xe9-".to_vec();
    id.extend_from_slice(lab.id().as_bytes());
    let merged = lab.overlay_named(&OsString::from_vec(id));
    let holder = lab.holder(Propagation::Private, None);
    lab.umount(&merged).unwrap();
    assert!(support::has_mount_exact(holder.pid, &merged), "premise");

    let scan = Scan::run(&lab, &[]);
    let f = scan.only_at(&merged);
    assert_eq!(f["kind"], "leak", "{f:#}");
    let bytes = merged.as_os_str().as_bytes();
    assert_eq!(
        f["mount"]["path"],
        String::from_utf8_lossy(bytes).as_ref(),
        "the text is the lossy path"
    );
    assert_eq!(f["mount"]["path_hex"], hex(bytes));
    let h = assert_one_holder(f, holder, "private");
    assert!(path_is(h, "mount_point", &merged), "{h:#}");

    let fix = first_command(&f["remedy"][0]);
    assert!(
        fix.starts_with(&format!("nsenter -t {} -m umount ", holder.pid)),
        "{fix}"
    );
    support::check(lab.command("bash").args(["-c", &fix])).unwrap();
    assert!(
        !support::has_mount_exact(holder.pid, &merged),
        "`{fix}` left the copy in place"
    );
    let after = Scan::run(&lab, &[]);
    assert!(after.at(&merged).is_empty(), "{}", after.stdout);
}

/// A holder in a new user namespace: its copy is locked. The leak says so
/// (`user_ns_locked`) and warns that `nsenter … umount` fails with EINVAL;
/// that is true (the printed command fails and umount2 returns EINVAL), and
/// the alternatives it gives work: removing the mountpoint detaches the
/// copy on this kernel.
#[test]
#[ignore = "needs root: creates mounts, user and mount namespaces"]
fn user_namespace_holder_is_locked_and_nsenter_umount_fails() {
    let mut lab = Lab::new();
    let merged = lab.overlay(&format!("userns-{}", lab.id()));
    let holder = lab.holder_unshare(&[
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
    ]);
    lab.umount(&merged).unwrap();

    let scan = Scan::run(&lab, &[]);
    let f = scan.only_at(&merged);
    assert_eq!(f["kind"], "leak", "{f:#}");
    let h = assert_one_holder(f, holder, "private");
    assert_eq!(h["user_ns_locked"], true, "{h:#}");
    let remedy = f["remedy"][0].as_str().unwrap();
    let claimed = format!("nsenter -t {} -m umount {}", holder.pid, merged.display());
    assert_eq!(first_command(&f["remedy"][0]), claimed, "{remedy}");
    assert!(remedy.contains("fails with EINVAL"), "{remedy}");
    scan.assert_exit(1, |f| path_is(&f["mount"], "path", &merged));

    // The claim is true: the command fails (util-linux prints EINVAL as
    // "not mounted") and leaves the copy; the syscall's errno is EINVAL.
    let failed = support::check(lab.command("bash").args(["-c", &claimed])).unwrap_err();
    assert!(support::has_mount(holder.pid, &merged), "{failed}");
    let target = std::ffi::CString::new(bytes_of(&merged)).unwrap();
    let errno = support::in_mount_ns(holder.pid, move || {
        // SAFETY: umount2 on a NUL-terminated path, errno read right
        // after; both async-signal-safe.
        unsafe {
            if libc::umount2(target.as_ptr(), 0) == 0 {
                0
            } else {
                *libc::__errno_location()
            }
        }
    });
    assert_eq!(errno, libc::EINVAL, "umount2 in the holder's namespace");
    assert!(support::has_mount(holder.pid, &merged));

    // "on this kernel removing the mountpoint directory on the host also
    // detaches the copy"
    assert!(
        remedy.contains("removing the mountpoint directory"),
        "{remedy}"
    );
    lab.rmdir(&merged).unwrap();
    assert!(!support::has_mount(holder.pid, &merged));
    let after = Scan::run(&lab, &[]);
    assert!(after.at(&merged).is_empty(), "{}", after.stdout);
}

fn bytes_of(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

/// Bad input is an error (exit 2) that says what is wrong: a config file
/// with an unknown key names the key and its line; a config path that
/// cannot be read names the path.
#[test]
#[ignore = "needs root: runs mountleak in a lab"]
fn bad_config_is_exit_2_naming_the_key_and_line() {
    let lab = Lab::new();
    let config = lab.scratch().join("mountleak.toml");
    fs::write(
        &config,
        "[detect]\nrisk_grace = \"1s\"\nrisk_grase = \"2s\"\n",
    )
    .unwrap();
    let scan = Scan::run(&lab, &["--config", config.to_str().unwrap()]);
    assert_eq!(scan.code, 2, "{}\n{}", scan.stdout, scan.stderr);
    assert!(
        scan.stderr.contains("risk_grase") && scan.stderr.contains("line 3"),
        "stderr names the key and the line: {}",
        scan.stderr
    );
    assert!(
        scan.stdout.is_empty(),
        "no document on error: {}",
        scan.stdout
    );

    for unreadable in [lab.scratch().join("missing.toml"), lab.scratch().to_owned()] {
        let scan = Scan::run(&lab, &["--config", unreadable.to_str().unwrap()]);
        assert_eq!(scan.code, 2, "{}\n{}", scan.stdout, scan.stderr);
        assert!(
            scan.stderr.contains(unreadable.to_str().unwrap()),
            "stderr names the path: {}",
            scan.stderr
        );
    }
}
