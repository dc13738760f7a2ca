//! Propagation facts from mount tables: whether the runtime's data
//! directories are shared, slave or private in the host, and which other
//! namespaces are peers of kubelet's mounts (Kubernetes `Bidirectional`
//! propagation). Pure: parsed mountinfo in, facts with their lines out.
//!
//! Why it matters (Documentation/filesystems/sharedsubtree.rst): a mount
//! made under a shared mount is shared, so a namespace that copies it as a
//! slave (systemd's default for its services) receives the host's umount.
//! A mount made under a private or slave-only mount is private: every copy
//! of it is on its own, and the host's umount never reaches it.

use monitor_model::{MountEntry, NsId, PathBytes, Patterns, Pid};

use crate::procfs::mountinfo::{self, MountinfoLine};

/// One mountinfo line, parsed, with its text for evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub raw: String,
    pub m: MountinfoLine,
}

impl Line {
    pub fn entry(&self) -> &MountEntry {
        &self.m.entry
    }
}

/// A whole table and where it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// `/proc/self/mountinfo`, or the file under `--root`.
    pub source: String,
    pub lines: Vec<Line>,
    /// Lines that did not parse (skipped).
    pub malformed: usize,
}

impl Table {
    pub fn parse(source: &str, text: &[u8]) -> Table {
        let mut t = Table {
            source: source.to_string(),
            ..Table::default()
        };
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            if raw.is_empty() {
                continue;
            }
            match mountinfo::parse_line(raw, i + 1) {
                Ok(m) => t.lines.push(Line {
                    raw: String::from_utf8_lossy(raw).into_owned(),
                    m,
                }),
                Err(_) => t.malformed += 1,
            }
        }
        t
    }
}

/// `shared`, `slave`, `shared+slave`, `private` or `unbindable`, from the
/// optional fields.
pub fn propagation(e: &MountEntry) -> &'static str {
    match (e.shared.is_some(), e.master.is_some()) {
        (true, true) => "shared+slave",
        (true, false) => "shared",
        (false, true) => "slave",
        (false, false) if e.unbindable => "unbindable",
        (false, false) => "private",
    }
}

/// The runtime data directories the audit looks at, and who uses them.
pub const DATA_DIRS: &[(&str, &str)] = &[
    ("/var/lib/docker", "docker"),
    ("/var/lib/containerd", "containerd"),
    ("/run/containerd", "containerd"),
    ("/var/lib/containers", "cri-o/podman"),
    ("/var/lib/kubelet", "kubelet"),
];

/// What the host's table says about one data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    pub dir: String,
    /// The mount the directory lives on (top of the stack).
    pub containing: Option<Line>,
    /// The containing mount and the non-container mounts under the
    /// directory that are not shared: container mounts made under them are
    /// private, and so is every copy of them.
    pub not_shared: Vec<Line>,
    /// Container mounts (by the patterns) under the directory.
    pub container_mounts: usize,
    /// Those of them that are not shared.
    pub private_container_mounts: Vec<Line>,
    /// Something is mounted at or under the directory.
    pub has_mounts: bool,
}

impl DataDir {
    /// Copies of container mounts made here receive the host's umounts
    /// (given a propagation that can receive).
    pub fn shared(&self) -> bool {
        self.not_shared.is_empty() && self.private_container_mounts.is_empty()
    }

    pub fn containing_propagation(&self) -> &'static str {
        self.containing
            .as_ref()
            .map_or("unknown", |l| propagation(l.entry()))
    }
}

/// The mount `path` lives on: the longest mount point above it, the last
/// one in table order when several are stacked.
pub fn containing<'a>(table: &'a Table, path: &PathBytes) -> Option<&'a Line> {
    let mut best: Option<&Line> = None;
    for l in &table.lines {
        if path.is_under(&l.entry().mount_point)
            && !shadowed(table, l)
            && best.is_none_or(|b| l.entry().mount_point.0.len() >= b.entry().mount_point.0.len())
        {
            best = Some(l);
        }
    }
    best
}

/// Whether a mount is hidden by another mount made later over its path
/// (e.g. a tmpfs mounted over the data directory after it): some mount
/// hangs off one of its ancestors, is not itself an ancestor, and sits on a
/// directory on the way to it (or on the same directory, mounted later).
pub fn shadowed(table: &Table, l: &Line) -> bool {
    let e = l.entry();
    let mut ancestors: Vec<u64> = Vec::new();
    let mut cur = e.parent_id;
    while !ancestors.contains(&cur) {
        ancestors.push(cur);
        match table.lines.iter().find(|x| x.entry().mount_id == cur) {
            Some(p) => cur = p.entry().parent_id,
            None => break,
        }
    }
    let at = table.lines.iter().position(|x| x == l).unwrap_or(0);
    table.lines.iter().enumerate().any(|(i, x)| {
        let xe = x.entry();
        xe.mount_id != e.mount_id
            && ancestors.contains(&xe.parent_id)
            && !ancestors.contains(&xe.mount_id)
            && e.mount_point.is_under(&xe.mount_point)
            && (xe.mount_point != e.mount_point || i > at)
    })
}

pub fn data_dir(table: &Table, dir: &str, patterns: &Patterns) -> DataDir {
    let dir_p = PathBytes::from(dir);
    let containing = containing(table, &dir_p).cloned();
    let mut out = DataDir {
        dir: dir.to_string(),
        not_shared: Vec::new(),
        container_mounts: 0,
        private_container_mounts: Vec::new(),
        has_mounts: false,
        containing: containing.clone(),
    };
    if let Some(c) = &containing {
        if c.entry().shared.is_none() {
            out.not_shared.push(c.clone());
        }
    }
    let container_points: Vec<&PathBytes> = table
        .lines
        .iter()
        .map(|l| &l.entry().mount_point)
        .filter(|p| p.is_under(&dir_p) && patterns.matches(p))
        .collect();
    for l in &table.lines {
        let e = l.entry();
        if !e.mount_point.is_under(&dir_p) || shadowed(table, l) {
            continue;
        }
        out.has_mounts = true;
        if patterns.matches(&e.mount_point) {
            out.container_mounts += 1;
            if e.shared.is_none() {
                out.private_container_mounts.push(l.clone());
            }
            continue;
        }
        // Inside a container mount (its submounts), or an nsfs file: not
        // part of the directory's own structure.
        if container_points.iter().any(|c| e.mount_point.is_under(c)) || e.fstype == "nsfs" {
            continue;
        }
        if containing.as_ref() != Some(l) && e.shared.is_none() {
            out.not_shared.push(l.clone());
        }
    }
    out
}

/// Another namespace's table, and who is in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsTable {
    pub ns: NsId,
    pub pid: Pid,
    pub comm: String,
    pub cgroup: Option<String>,
    pub lines: Vec<Line>,
}

/// A namespace whose mount is a peer of a host mount holding kubelet's
/// directory: mounts and umounts go both ways (Kubernetes
/// `mountPropagation: Bidirectional`, used by CSI node plugins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bidirectional {
    pub ns: NsId,
    pub pid: Pid,
    pub comm: String,
    pub cgroup: Option<String>,
    pub group: u32,
    pub line: Line,
    pub host_line: Line,
}

/// Path inside the filesystem of `host` that `path` (a host path on it)
/// names.
fn fs_path(host: &MountEntry, path: &PathBytes) -> PathBytes {
    let rest = &path.as_bytes()[host.mount_point.as_bytes().len().min(path.as_bytes().len())..];
    if host.mount_point.as_bytes() == b"/" {
        host.root.join(path.as_bytes())
    } else {
        host.root.join(rest)
    }
}

/// Peers of the host's kubelet mounts in other namespaces. `kubelet_dir` is
/// `/var/lib/kubelet`.
pub fn bidirectional(host: &Table, others: &[NsTable], kubelet_dir: &str) -> Vec<Bidirectional> {
    let dir = PathBytes::from(kubelet_dir);
    // (group, host line, the kubelet path inside that filesystem)
    let mut groups: Vec<(u32, &Line, PathBytes)> = Vec::new();
    if let Some(c) = containing(host, &dir) {
        if let Some(g) = c.entry().shared {
            groups.push((g, c, fs_path(c.entry(), &dir)));
        }
    }
    for l in &host.lines {
        let e = l.entry();
        if e.mount_point.is_under(&dir) {
            if let Some(g) = e.shared {
                if !groups.iter().any(|(gg, _, _)| *gg == g) {
                    groups.push((g, l, e.root.clone()));
                }
            }
        }
    }
    let mut out = Vec::new();
    for t in others {
        for l in &t.lines {
            let e = l.entry();
            let Some(g) = e.shared else { continue };
            let Some((_, host_line, kube_fs)) = groups.iter().find(|(gg, _, _)| *gg == g) else {
                continue;
            };
            // The peer must show kubelet's directory (or part of it), not
            // just another directory of the same filesystem.
            if !(kube_fs.is_under(&e.root) || e.root.is_under(kube_fs)) {
                continue;
            }
            out.push(Bidirectional {
                ns: t.ns,
                pid: t.pid,
                comm: t.comm.clone(),
                cgroup: t.cgroup.clone(),
                group: g,
                line: l.clone(),
                host_line: (*host_line).clone(),
            });
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EL7: &str = "\
18 40 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
40 1 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/centos-root rw,attr2,inode64,noquota
92 40 253:0 /var/lib/docker/overlay /var/lib/docker/overlay rw,relatime - xfs /dev/mapper/centos-root rw,attr2,inode64,noquota
3441 92 0:639 / /var/lib/docker/overlay/cd38/merged rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay/125d/root,upperdir=/var/lib/docker/overlay/cd38/upper,workdir=/var/lib/docker/overlay/cd38/work
";

    fn patterns() -> Patterns {
        Patterns::default()
    }

    #[test]
    fn a_private_bind_under_the_data_dir_makes_container_mounts_private() {
        let t = Table::parse("/proc/self/mountinfo", EL7.as_bytes());
        assert_eq!(t.lines.len(), 4);
        let d = data_dir(&t, "/var/lib/docker", &patterns());
        assert_eq!(d.containing_propagation(), "shared");
        assert!(!d.shared());
        assert_eq!(d.not_shared.len(), 1);
        assert!(d.not_shared[0].raw.starts_with("92 40"));
        assert_eq!(d.container_mounts, 1);
        assert_eq!(d.private_container_mounts.len(), 1);
        let k = data_dir(&t, "/var/lib/kubelet", &patterns());
        assert!(k.shared() && !k.has_mounts);
    }

    #[test]
    fn mounts_hidden_under_a_later_mount_do_not_count() {
        let t = Table::parse(
            "x",
            b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
              5 1 0:40 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/d rw - tmpfs old rw\n\
              6 1 0:41 / /var/lib/kubelet rw shared:9 - tmpfs lab rw\n\
              7 6 0:42 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/d rw shared:10 - tmpfs new rw\n",
        );
        assert!(shadowed(&t, &t.lines[1]));
        assert!(!shadowed(&t, &t.lines[3]));
        assert!(!shadowed(&t, &t.lines[0]));
        let k = data_dir(&t, "/var/lib/kubelet", &patterns());
        assert!(k.shared(), "{k:?}");
        assert_eq!(k.container_mounts, 1);
    }

    #[test]
    fn a_private_root_is_not_shared() {
        let t = Table::parse(
            "x",
            b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:50 / /var/lib/kubelet rw shared:7 - tmpfs tmpfs rw\n",
        );
        let d = data_dir(&t, "/var/lib/docker", &patterns());
        assert_eq!(d.containing_propagation(), "private");
        assert!(!d.shared());
        let k = data_dir(&t, "/var/lib/kubelet", &patterns());
        assert_eq!(k.containing_propagation(), "shared");
        assert!(k.shared());
    }

    #[test]
    fn peers_of_kubelet_mounts_are_bidirectional() {
        let host = Table::parse(
            "/proc/self/mountinfo",
            b"1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n\
              2 1 8:1 /srv /srv rw shared:1 - ext4 /dev/sda1 rw\n",
        );
        let csi = NsTable {
            ns: 9,
            pid: 42,
            comm: "csi-node".into(),
            cgroup: Some("/kubepods/pod1234/abcd".into()),
            lines: Table::parse(
                "/proc/42/mountinfo",
                b"100 99 0:80 / / rw master:3 - overlay overlay rw\n\
                  101 100 8:1 /var/lib/kubelet /var/lib/kubelet rw shared:1 - ext4 /dev/sda1 rw\n",
            )
            .lines,
        };
        // Same filesystem and peer group, but a different directory.
        let other = NsTable {
            ns: 10,
            pid: 43,
            comm: "x".into(),
            cgroup: None,
            lines: Table::parse(
                "/proc/43/mountinfo",
                b"200 199 8:1 /srv /data rw shared:1 - ext4 /dev/sda1 rw\n",
            )
            .lines,
        };
        let found = bidirectional(&host, &[csi, other], "/var/lib/kubelet");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, 42);
        assert_eq!(found[0].group, 1);
        assert!(found[0].line.raw.starts_with("101 100"));
    }
}
