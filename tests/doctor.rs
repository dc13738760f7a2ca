//! `mountleak doctor --json`: against fixture trees of real-world unit files
//! (`--root`, no privileges needed) and, as root, against this machine with
//! real mounts and namespaces in a lab.
//!
//! The fixture trees under `tests/fixtures/doctor/`:
//! - `el7-seed`: the field report's node. CentOS 7 kernel with
//!   `fs.may_detach_mounts=0`; docker-ce's unit without `MountFlags=`; the
//!   old overlay driver's private bind mount of `/var/lib/docker/overlay`
//!   with a container mounted under it; ntpd and nginx with
//!   `PrivateTmp=true` (ntpd enabled, nginx only installed); a templated
//!   `ceph-osd@.service` with `PrivateTmp=true` and an enabled instance
//!   `ceph-osd@0`; a hand-written unit with a bad line.
//! - `debian12`: a current node. Container mounts are shared (`/` is
//!   `shared:1`), so systemd's default propagation is fine; an admin
//!   drop-in sets `MountFlags=private` on nginx; another turns ntpd's
//!   `PrivateTmp=` off.
//!
//! Variants (docker with `MountFlags=slave` in a drop-in or in its own
//! unit, drop-ins that undo it) are made by copying a tree and adding
//! files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{self, Lab, Propagation};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/doctor")
        .join(name)
}

/// One `mountleak doctor` run.
struct Doctor {
    code: i32,
    doc: Value,
    stdout: String,
    stderr: String,
}

impl Doctor {
    fn run(mut cmd: Command) -> Doctor {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("could not run mountleak doctor: {err}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("mountleak doctor was killed: {}\n{stderr}", out.status));
        let doc = if stdout.trim_start().starts_with('{') {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|err| panic!("doctor printed bad JSON ({err}):\n{stdout}"))
        } else {
            Value::Null
        };
        Doctor {
            code,
            doc,
            stdout,
            stderr,
        }
    }

    /// `mountleak doctor --json --root ROOT`.
    fn tree(root: &Path) -> Doctor {
        let mut cmd = Command::new(support::mountleak_bin());
        cmd.args(["doctor", "--json", "--root"]).arg(root);
        Doctor::run(cmd)
    }

    fn findings(&self) -> &[Value] {
        self.doc["findings"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("no findings in:\n{}\nstderr: {}", self.stdout, self.stderr))
    }

    /// `(check, subject, severity)` of every finding, in order.
    fn summary(&self) -> Vec<(String, String, String)> {
        self.findings()
            .iter()
            .map(|f| {
                (
                    f["check"].as_str().unwrap().to_string(),
                    f["subject"].as_str().unwrap().to_string(),
                    f["severity"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn finding(&self, check: &str, subject: &str) -> &Value {
        self.findings()
            .iter()
            .find(|f| f["check"] == check && f["subject"] == subject)
            .unwrap_or_else(|| panic!("no {check} finding for {subject}:\n{}", self.stdout))
    }

    fn service(&self, unit: &str) -> &Value {
        self.doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["unit"] == unit)
            .unwrap_or_else(|| panic!("{unit} not among the services:\n{}", self.stdout))
    }
}

fn triple(check: &str, subject: &str, severity: &str) -> (String, String, String) {
    (check.into(), subject.into(), severity.into())
}

/// The evidence of a finding as `file:line: text` strings.
fn cites(f: &Value) -> Vec<String> {
    f["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match (e["file"].as_str(), e["line"].as_u64()) {
            (Some(file), Some(line)) => format!("{file}:{line}: {}", e["text"].as_str().unwrap()),
            (Some(file), None) => format!("{file}: {}", e["text"].as_str().unwrap()),
            _ => e["text"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// A scratch copy of a fixture tree (symlinks kept), removed on drop.
struct TreeCopy(PathBuf);

impl TreeCopy {
    fn of(name: &str, tag: &str) -> TreeCopy {
        let dir = std::env::temp_dir().join(format!(
            "mountleak-doctor-{name}-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        support::check(Command::new("cp").arg("-a").arg(fixture(name)).arg(&dir)).unwrap();
        TreeCopy(dir)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
    }
}

impl Drop for TreeCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The field report's node: every cause it names is found, with the unit
/// file line or the mountinfo line that shows it and the fix it ended with
/// (`MountFlags=slave` on docker.service), plus the kernel setting that
/// turns the EBUSY into a detach.
#[test]
fn el7_seed_node_has_every_cause_of_the_field_report() {
    let d = Doctor::tree(&fixture("el7-seed"));
    assert_eq!(d.code, 1, "{}\n{}", d.stdout, d.stderr);
    assert_eq!(
        d.summary(),
        vec![
            triple("kernel", "kernel 3.10.0-693.11.6.el7.x86_64", "high"),
            triple("runtime", "docker.service", "high"),
            triple("service", "ceph-osd@0.service", "high"),
            triple("service", "ntpd.service", "high"),
            triple("service", "broken.service", "medium"),
            triple("service", "nginx.service", "medium"),
            triple("unit_file", "/etc/systemd/system/broken.service", "low"),
        ],
        "{}",
        d.stdout
    );

    let kernel = d.finding("kernel", "kernel 3.10.0-693.11.6.el7.x86_64");
    assert!(
        cites(kernel)
            .iter()
            .any(|c| c.ends_with("proc/sys/fs/may_detach_mounts: fs.may_detach_mounts = 0")),
        "{kernel:#}"
    );
    assert_eq!(
        kernel["fix"]["commands"][0],
        "sysctl -w fs.may_detach_mounts=1"
    );
    assert_eq!(
        kernel["fix"]["files"][0]["path"],
        "/etc/sysctl.d/99-mountleak.conf"
    );

    let docker = d.finding("runtime", "docker.service");
    let c = cites(docker);
    assert!(
        c.iter().any(|c| c.ends_with(
            "proc/self/mountinfo: 3441 39 253:0 /var/lib/docker/overlay /var/lib/docker/overlay rw,relatime - xfs /dev/mapper/centos-root rw,attr2,inode64,noquota"
        )),
        "the private bind mount is the evidence: {c:#?}"
    );
    assert!(
        c.iter().any(|c| c.contains(" 3967 3441 0:639 / /var/lib/docker/overlay/cd38b6e94e55a36b43cefe9cb3a74050fdc485e233c72a1fa125277d6b3f630d/merged ")),
        "and the container mount that is private because of it: {c:#?}"
    );
    let dropin = &docker["fix"]["files"][0];
    assert_eq!(
        dropin["path"],
        "/etc/systemd/system/docker.service.d/50-mountleak.conf"
    );
    assert!(
        dropin["content"]
            .as_str()
            .unwrap()
            .ends_with("[Service]\nMountFlags=slave\n"),
        "{dropin:#}"
    );
    assert_eq!(
        docker["fix"]["commands"],
        serde_json::json!([
            "systemctl daemon-reload",
            "systemctl restart docker.service",
            "mount --make-shared /var/lib/docker/overlay"
        ])
    );

    let ntpd = d.finding("service", "ntpd.service");
    let c = cites(ntpd);
    assert_eq!(
        c[0],
        "/usr/lib/systemd/system/ntpd.service:9: PrivateTmp=true"
    );
    assert!(c.contains(
        &"/etc/systemd/system/multi-user.target.wants/ntpd.service: enabled (symlink)".to_string()
    ));
    assert_eq!(
        ntpd["fix"]["files"], docker["fix"]["files"],
        "the runtime's drop-in fixes it"
    );
    assert_eq!(
        ntpd["fix"]["commands"].as_array().unwrap().last().unwrap(),
        "systemctl restart ntpd.service"
    );

    // The template's line, for the instance the wants/ link enables.
    let osd = d.finding("service", "ceph-osd@0.service");
    let c = cites(osd);
    assert!(
        c.contains(&"/usr/lib/systemd/system/ceph-osd@.service:17: PrivateTmp=true".to_string()),
        "{c:#?}"
    );
    assert!(c.contains(
        &"/etc/systemd/system/ceph-osd.target.wants/ceph-osd@0.service: enabled (symlink)"
            .to_string()
    ));

    // Installed but not enabled: it would keep copies once started.
    let nginx = d.service("nginx.service");
    assert_eq!(nginx["enabled"], false);
    assert_eq!(nginx["receives_host_umounts"], false);
    assert_eq!(nginx["propagation"], "default (slave, then shared)");

    // The bad line is reported, and the rest of the file still counts.
    let broken = d.finding("unit_file", "/etc/systemd/system/broken.service");
    assert_eq!(
        cites(broken),
        vec![
            "/etc/systemd/system/broken.service:7: ExecStart /usr/local/bin/backup.sh (missing '=')"
        ]
    );
    assert_eq!(
        cites(d.finding("service", "broken.service"))[0],
        "/etc/systemd/system/broken.service:8: PrivateTmp=true"
    );
    // sshd has no mount namespace; the kernel facts come from the tree.
    assert!(d.doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["unit"] != "sshd.service"));
    assert_eq!(d.doc["kernel"]["may_detach_mounts"], false);
    assert_eq!(d.doc["kernel"]["detaches_on_rmdir"], false);
}

/// A current node: shared container mounts make systemd's default
/// propagation safe (ceph-osd@1 is fine), a drop-in turning ntpd's
/// PrivateTmp= off removes its namespace, and only nginx's admin drop-in
/// with `MountFlags=private` is a finding; its fix is a drop-in named to
/// sort after that one.
#[test]
fn debian12_node_only_the_private_dropin_is_a_finding() {
    let d = Doctor::tree(&fixture("debian12"));
    assert_eq!(d.code, 1, "{}\n{}", d.stdout, d.stderr);
    assert_eq!(
        d.summary(),
        vec![triple("service", "nginx.service", "high")],
        "{}",
        d.stdout
    );
    let nginx = d.finding("service", "nginx.service");
    let c = cites(nginx);
    assert!(
        c.contains(
            &"/etc/systemd/system/nginx.service.d/override.conf:3: MountFlags=private".to_string()
        ),
        "{c:#?}"
    );
    assert!(c.contains(&"/usr/lib/systemd/system/nginx.service:16: PrivateTmp=true".to_string()));
    let file = &nginx["fix"]["files"][0];
    assert_eq!(
        file["path"],
        "/etc/systemd/system/nginx.service.d/zz-mountleak.conf"
    );
    assert!(file["content"]
        .as_str()
        .unwrap()
        .ends_with("MountFlags=slave\n"));
    assert_eq!(
        d.service("ceph-osd@1.service")["receives_host_umounts"],
        true
    );
    assert!(d.doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["unit"] != "ntpd.service"));
    assert_eq!(d.doc["data_dirs"][0]["dir"], "/var/lib/docker");
    assert_eq!(d.doc["data_dirs"][0]["shared"], true);
}

/// The field report's fix, applied to its node: with `MountFlags=slave` on
/// docker.service (a drop-in, or the vendor unit itself) the container
/// mounts leave the host's table and no service copies them; what remains
/// is the kernel and the bad line. A later drop-in that empties
/// `MountFlags=` undoes it.
#[test]
fn mountflags_slave_on_docker_clears_the_services_and_a_later_dropin_undoes_it() {
    let host_without_containers = fs::read_to_string(fixture("el7-seed/proc/self/mountinfo"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("/var/lib/docker"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();

    let t = TreeCopy::of("el7-seed", "dropin");
    t.write("proc/self/mountinfo", &host_without_containers);
    t.write(
        "etc/systemd/system/docker.service.d/mountflags.conf",
        "[Service]\nMountFlags=slave\n",
    );
    let d = Doctor::tree(&t.0);
    assert_eq!(
        d.summary(),
        vec![
            triple("kernel", "kernel 3.10.0-693.11.6.el7.x86_64", "high"),
            triple("unit_file", "/etc/systemd/system/broken.service", "low"),
        ],
        "{}",
        d.stdout
    );
    let docker = &d.doc["runtimes"][0];
    assert_eq!(docker["own_namespace"], true, "{docker:#}");
    assert_eq!(
        docker["own_namespace_from"][0],
        "/etc/systemd/system/docker.service.d/mountflags.conf:2: MountFlags=slave"
    );
    assert_eq!(d.service("ntpd.service")["copies_container_mounts"], false);

    // A vendor unit that has it already (RHEL's own docker package did).
    let v = TreeCopy::of("el7-seed", "vendor");
    v.write("proc/self/mountinfo", &host_without_containers);
    let unit = fs::read_to_string(v.0.join("usr/lib/systemd/system/docker.service")).unwrap();
    v.write(
        "usr/lib/systemd/system/docker.service",
        &unit.replace("[Service]\n", "[Service]\nMountFlags=slave\n"),
    );
    let d = Doctor::tree(&v.0);
    assert_eq!(d.doc["runtimes"][0]["own_namespace"], true);
    assert_eq!(d.findings().len(), 2, "{}", d.stdout);

    // An empty assignment in a drop-in that sorts later resets it.
    t.write(
        "run/systemd/system/docker.service.d/zz-reset.conf",
        "[Service]\nMountFlags=\n",
    );
    let d = Doctor::tree(&t.0);
    assert_eq!(d.doc["runtimes"][0]["own_namespace"], false, "{}", d.stdout);
    // With / shared and no private bind, the container mounts would be
    // shared: systemd's default propagation then receives the umounts.
    assert_eq!(d.service("ntpd.service")["receives_host_umounts"], true);
}

/// Bad input: a unit file that is a dangling symlink is reported with its
/// path and the audit goes on; a --root that does not exist is exit 2
/// naming it.
#[test]
fn unreadable_units_are_reported_and_a_bad_root_is_exit_2() {
    let t = TreeCopy::of("debian12", "dangling");
    std::os::unix::fs::symlink(
        "/opt/vendor/gone.service",
        t.0.join("etc/systemd/system/gone.service"),
    )
    .unwrap();
    let d = Doctor::tree(&t.0);
    assert_eq!(d.code, 1);
    let gone = d.finding("unit_file", "/etc/systemd/system/gone.service");
    assert!(
        gone["summary"].as_str().unwrap().contains("cannot be read"),
        "{gone:#}"
    );
    assert!(d
        .summary()
        .contains(&triple("service", "nginx.service", "high")));

    let missing = std::env::temp_dir().join("mountleak-doctor-no-such-root");
    let d = Doctor::tree(&missing);
    assert_eq!(d.code, 2, "{}", d.stdout);
    assert!(d.stdout.is_empty(), "{}", d.stdout);
    assert!(
        d.stderr.contains(missing.to_str().unwrap()),
        "stderr names the root: {}",
        d.stderr
    );
}

/// The text form carries the same: severity, evidence line, the drop-in's
/// path and content, the commands.
#[test]
fn text_report_shows_evidence_and_the_dropin() {
    let mut cmd = Command::new(support::mountleak_bin());
    cmd.args(["doctor", "--root"]).arg(fixture("el7-seed"));
    let d = Doctor::run(cmd);
    assert_eq!(d.code, 1);
    for want in [
        "HIGH service: ntpd.service",
        "/usr/lib/systemd/system/ntpd.service:9: PrivateTmp=true",
        "write /etc/systemd/system/docker.service.d/50-mountleak.conf:",
        "| MountFlags=slave",
        "$ systemctl restart docker.service",
        "LOW unit_file: /etc/systemd/system/broken.service",
    ] {
        assert!(
            d.stdout.contains(want),
            "missing {want:?} in:\n{}",
            d.stdout
        );
    }
}

/// This node, live, in a lab: a private mount under docker's data
/// directory (what the old overlay driver made) leaves the container mounts
/// under it private; a private holder keeps a copy now; a namespace made
/// with shared propagation is a peer of kubelet's directory (what
/// Bidirectional propagation does). Each is a finding with its mountinfo
/// line; kubelet's shared directory is not.
#[test]
#[ignore = "needs root: creates mounts and namespaces"]
fn live_private_data_dir_holder_and_bidirectional_peer() {
    let mut lab = Lab::new();
    lab.run_in_host(
        "mkdir -p /var/lib/docker/overlay2 \
         && mount -t tmpfs mountleak-private /var/lib/docker/overlay2 \
         && mount --make-private /var/lib/docker/overlay2",
    );
    let merged = lab.overlay(&format!("doctor-{}", lab.id()));
    let holder = lab.holder(Propagation::Private, None);
    let peer = lab.holder(Propagation::Shared, None);

    let mut cmd = lab.mountleak();
    cmd.args(["doctor", "--json", "--risk-grace", "0s"]);
    let d = Doctor::run(cmd);
    assert_eq!(d.code, 1, "{}\n{}", d.stdout, d.stderr);
    assert_eq!(d.doc["live"], true);

    let dirs = d.doc["data_dirs"].as_array().unwrap();
    let docker = dirs.iter().find(|x| x["dir"] == "/var/lib/docker").unwrap();
    assert_eq!(docker["shared"], false, "{docker:#}");
    assert!(docker["container_mounts"].as_u64().unwrap() >= 1);
    let kubelet = dirs
        .iter()
        .find(|x| x["dir"] == "/var/lib/kubelet")
        .unwrap();
    assert_eq!(kubelet["shared"], true, "{kubelet:#}");

    // The private tmpfs is the evidence, whichever runtime view names it
    // (docker.service if installed here, else the directory).
    let private_line = d
        .findings()
        .iter()
        .filter(|f| f["check"] == "runtime" || f["check"] == "data_dir")
        .flat_map(cites)
        .find(|c| c.contains(" /var/lib/docker/overlay2 ") && c.contains("mountleak-private"));
    assert!(private_line.is_some(), "{}", d.stdout);

    let subject = format!("pid {} (sleep) in mnt ns {}", holder.pid, holder.ns);
    let h = d.finding("holder", &subject);
    assert_eq!(
        h["severity"], "medium",
        "a risk (still mounted in the lab): {h:#}"
    );
    let merged_text = merged.to_str().unwrap();
    assert!(
        cites(h).iter().any(
            |c| c.starts_with(&format!("/proc/{}/mountinfo: ", holder.pid))
                && c.contains(&format!(" {merged_text} "))
        ),
        "the holder's copy line: {h:#}"
    );
    assert!(
        h["fix"]["commands"]
            .as_array()
            .unwrap()
            .contains(&Value::from(format!("mountleak fix {merged_text}"))),
        "{h:#}"
    );

    let b = d
        .findings()
        .iter()
        .find(|f| {
            f["check"] == "bidirectional"
                && f["subject"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("pid {} (sleep)", peer.pid))
        })
        .unwrap_or_else(|| panic!("no bidirectional finding for {peer:?}:\n{}", d.stdout));
    let c = cites(b);
    assert!(
        c[0].contains(" /var/lib/kubelet "),
        "the host's kubelet mount: {c:#?}"
    );
    assert!(
        c[1].starts_with(&format!("/proc/{}/mountinfo: ", peer.pid)),
        "{c:#?}"
    );
    assert!(
        !d.findings().iter().any(|f| f["check"] == "bidirectional"
            && f["subject"]
                .as_str()
                .unwrap()
                .starts_with(&format!("pid {} ", holder.pid))),
        "a private holder is not a peer"
    );

    // Once the holders are gone, neither is reported.
    lab.stop(holder);
    lab.stop(peer);
    let mut cmd = lab.mountleak();
    cmd.args(["doctor", "--json", "--risk-grace", "0s"]);
    let after = Doctor::run(cmd);
    assert!(
        !after.findings().iter().any(|f| f["check"] == "holder"
            || f["check"] == "bidirectional"
                && f["subject"].as_str().unwrap().contains(" (sleep) ")),
        "{}",
        after.stdout
    );
}
