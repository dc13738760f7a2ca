//! Which `[Service]` settings give a unit its own mount namespace, and with
//! which propagation. Pure.
//!
//! The list follows systemd's `exec_needs_mount_namespace()`
//! (src/core/execute.c; src/core/exec-invoke.c since v255) and
//! systemd.exec(5): any of these makes systemd `unshare(CLONE_NEWNS)` before
//! starting the service, which copies every mount of the host, container
//! mounts included.
//!
//! Propagation (systemd.exec(5), `MountFlags=`): systemd first makes the
//! whole new namespace `slave`, then applies `MountFlags=` (default
//! `shared`). So by default the service's copies are slaves of the host's
//! mounts and receive the host's umounts **if the host's mount is shared**;
//! with `MountFlags=private` they never do.

use super::unitfile::{parse_bool, words};
use super::units::{Setting, Unit};

/// The final propagation of the unit's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// No `MountFlags=`: slave, then shared (systemd's default).
    Default,
    Shared,
    Slave,
    Private,
}

impl Propagation {
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Default => "default (slave, then shared)",
            Propagation::Shared => "shared (after slave)",
            Propagation::Slave => "slave",
            Propagation::Private => "private",
        }
    }

    /// Whether copies can receive the host's umounts at all (they do when
    /// the host's mount is shared, except with `private`).
    pub fn can_receive(self) -> bool {
        self != Propagation::Private
    }
}

/// What a unit's settings say about its mount namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountNs {
    /// The effective settings that each give it a mount namespace.
    pub implied_by: Vec<Setting>,
    /// `MountFlags=` when set (and the setting).
    pub mount_flags: Option<(Propagation, Setting)>,
    /// `PrivateUsers=` on: the namespace is owned by a user namespace, so
    /// its copies are locked (umount inside fails with EINVAL).
    pub private_users: Option<Setting>,
    /// Effective `After=` entries.
    pub after: Vec<(String, Setting)>,
    /// Effective `Before=` entries.
    pub before: Vec<(String, Setting)>,
}

impl MountNs {
    pub fn has_namespace(&self) -> bool {
        !self.implied_by.is_empty()
    }

    pub fn propagation(&self) -> Propagation {
        self.mount_flags
            .as_ref()
            .map_or(Propagation::Default, |(p, _)| *p)
    }

    /// The `After=` setting naming `unit`, if any.
    pub fn after_unit(&self, unit: &str) -> Option<&Setting> {
        self.after.iter().find(|(u, _)| u == unit).map(|(_, s)| s)
    }

    pub fn before_unit(&self, unit: &str) -> Option<&Setting> {
        self.before.iter().find(|(u, _)| u == unit).map(|(_, s)| s)
    }
}

/// How a key's value turns it on.
#[derive(Clone, Copy)]
enum Kind {
    /// A boolean; these extra words also count as on.
    Bool(&'static [&'static str]),
    /// On unless the value is one of these.
    OffUnless(&'static [&'static str]),
    /// A list: on while non-empty (an empty assignment clears it).
    List,
    /// A path: on when set.
    Path,
}

/// Settings that give a service a mount namespace by themselves.
const NAMESPACING: &[(&str, Kind)] = &[
    ("PrivateTmp", Kind::Bool(&["disconnected"])),
    ("PrivateDevices", Kind::Bool(&[])),
    ("PrivateMounts", Kind::Bool(&[])),
    (
        "ProtectSystem",
        Kind::OffUnless(&["no", "false", "0", "off"]),
    ),
    ("ProtectHome", Kind::OffUnless(&["no", "false", "0", "off"])),
    ("ProtectKernelTunables", Kind::Bool(&[])),
    ("ProtectKernelModules", Kind::Bool(&[])),
    ("ProtectKernelLogs", Kind::Bool(&[])),
    ("ProtectControlGroups", Kind::Bool(&["private", "strict"])),
    ("ProtectProc", Kind::OffUnless(&["default"])),
    ("ProcSubset", Kind::OffUnless(&["all"])),
    ("DynamicUser", Kind::Bool(&[])),
    ("PrivateIPC", Kind::Bool(&[])),
    ("ReadWritePaths", Kind::List),
    ("ReadOnlyPaths", Kind::List),
    ("InaccessiblePaths", Kind::List),
    ("ExecPaths", Kind::List),
    ("NoExecPaths", Kind::List),
    ("BindPaths", Kind::List),
    ("BindReadOnlyPaths", Kind::List),
    ("TemporaryFileSystem", Kind::List),
    ("MountImages", Kind::List),
    ("ExtensionImages", Kind::List),
    ("ExtensionDirectories", Kind::List),
    // Old spellings, still accepted.
    ("ReadWriteDirectories", Kind::List),
    ("ReadOnlyDirectories", Kind::List),
    ("InaccessibleDirectories", Kind::List),
    ("RootImage", Kind::Path),
    ("IPCNamespacePath", Kind::Path),
    ("LogNamespace", Kind::Path),
];

/// The effective value of a single-valued key: the last assignment, or
/// `None` after an empty one (which resets to the default).
fn last<'a>(unit: &'a Unit, key: &'a str) -> Option<&'a Setting> {
    let mut cur = None;
    for s in unit.get("Service", key) {
        cur = (!s.value.is_empty()).then_some(s);
    }
    cur
}

/// The effective entries of a list key and the assignments that made them.
fn list<'a>(unit: &'a Unit, section: &'a str, key: &'a str) -> Vec<(String, &'a Setting)> {
    let mut out = Vec::new();
    for s in unit.get(section, key) {
        if s.value.is_empty() {
            out.clear();
        } else {
            out.extend(words(&s.value).map(|w| (w.to_string(), s)));
        }
    }
    out
}

fn bool_on(v: &str, extra: &[&str]) -> bool {
    parse_bool(v).unwrap_or_else(|| extra.iter().any(|e| v.eq_ignore_ascii_case(e)))
}

/// Reads a unit's mount-namespace settings.
pub fn mount_ns(unit: &Unit) -> MountNs {
    let mut ns = MountNs::default();
    for &(key, kind) in NAMESPACING {
        match kind {
            Kind::Bool(extra) => {
                if let Some(s) = last(unit, key).filter(|s| bool_on(&s.value, extra)) {
                    ns.implied_by.push(s.clone());
                }
            }
            Kind::OffUnless(off) => {
                if let Some(s) =
                    last(unit, key).filter(|s| !off.iter().any(|o| s.value.eq_ignore_ascii_case(o)))
                {
                    ns.implied_by.push(s.clone());
                }
            }
            Kind::List => {
                if let Some((_, s)) = list(unit, "Service", key).last() {
                    ns.implied_by.push((*s).clone());
                }
            }
            Kind::Path => {
                if let Some(s) = last(unit, key) {
                    ns.implied_by.push(s.clone());
                }
            }
        }
    }
    // PrivateNetwork= (or a network namespace path) sets up a mount
    // namespace too, to mount a fresh /sys, unless PrivateMounts=no.
    let private_mounts_off =
        last(unit, "PrivateMounts").is_some_and(|s| parse_bool(&s.value) == Some(false));
    if !private_mounts_off {
        if let Some(s) = last(unit, "PrivateNetwork").filter(|s| bool_on(&s.value, &[])) {
            ns.implied_by.push(s.clone());
        } else if let Some(s) = last(unit, "NetworkNamespacePath") {
            ns.implied_by.push(s.clone());
        }
    }
    // RootDirectory= with API file systems mounted (the default since v247
    // unless MountAPIVFS=no).
    if let Some(s) = last(unit, "RootDirectory") {
        let apivfs_off =
            last(unit, "MountAPIVFS").is_some_and(|m| parse_bool(&m.value) == Some(false));
        if !apivfs_off {
            ns.implied_by.push(s.clone());
        }
    }
    if let Some(s) = last(unit, "MountFlags") {
        let p = match s.value.to_ascii_lowercase().as_str() {
            "shared" => Some(Propagation::Shared),
            "slave" => Some(Propagation::Slave),
            "private" => Some(Propagation::Private),
            _ => None,
        };
        if let Some(p) = p {
            if p != Propagation::Shared {
                ns.implied_by.push(s.clone());
            }
            ns.mount_flags = Some((p, s.clone()));
        }
    }
    if let Some(s) = last(unit, "PrivateUsers").filter(|s| bool_on(&s.value, &["self", "identity"]))
    {
        ns.private_users = Some(s.clone());
    }
    ns.after = list(unit, "Unit", "After")
        .into_iter()
        .map(|(u, s)| (u, s.clone()))
        .collect();
    ns.before = list(unit, "Unit", "Before")
        .into_iter()
        .map(|(u, s)| (u, s.clone()))
        .collect();
    ns
}

#[cfg(test)]
mod tests {
    use super::super::units::{resolve, Content, SourceFile};
    use super::*;

    fn unit(text: &str) -> Unit {
        let set = resolve(
            &[SourceFile {
                rank: 6,
                rel: "x.service".into(),
                path: "/usr/lib/systemd/system/x.service".into(),
                content: Content::Text(text.into()),
                alias_of: None,
            }],
            &[],
        );
        set.units.into_iter().next().unwrap()
    }

    fn keys(ns: &MountNs) -> Vec<String> {
        ns.implied_by.iter().map(|s| s.text.clone()).collect()
    }

    #[test]
    fn private_tmp_gives_a_namespace_with_default_propagation() {
        let ns = mount_ns(&unit(
            "[Unit]\nAfter=network.target docker.service\n[Service]\nPrivateTmp=true\n",
        ));
        assert_eq!(keys(&ns), vec!["PrivateTmp=true"]);
        assert_eq!(ns.propagation(), Propagation::Default);
        assert!(ns.propagation().can_receive());
        assert_eq!(ns.after_unit("docker.service").unwrap().line, 2);
    }

    #[test]
    fn last_assignment_wins_and_empty_resets() {
        let ns = mount_ns(&unit("[Service]\nPrivateTmp=true\nPrivateTmp=false\nReadOnlyPaths=/a\nReadOnlyPaths=\nProtectSystem=full\nProtectSystem=\n"));
        assert!(!ns.has_namespace(), "{:?}", keys(&ns));
        let ns = mount_ns(&unit(
            "[Service]\nProtectSystem=strict\nProtectHome=read-only\nInaccessiblePaths=/x\n",
        ));
        assert_eq!(
            keys(&ns),
            vec![
                "ProtectSystem=strict",
                "ProtectHome=read-only",
                "InaccessiblePaths=/x"
            ]
        );
    }

    #[test]
    fn mount_flags() {
        let ns = mount_ns(&unit("[Service]\nMountFlags=slave\n"));
        assert!(ns.has_namespace());
        assert_eq!(ns.propagation(), Propagation::Slave);
        let ns = mount_ns(&unit("[Service]\nMountFlags=shared\n"));
        assert!(!ns.has_namespace(), "shared alone needs no namespace");
        let ns = mount_ns(&unit("[Service]\nPrivateTmp=yes\nMountFlags=private\n"));
        assert_eq!(ns.propagation(), Propagation::Private);
        assert!(!ns.propagation().can_receive());
        let ns = mount_ns(&unit("[Service]\nMountFlags=private\nMountFlags=\n"));
        assert!(!ns.has_namespace());
    }

    #[test]
    fn indirect_namespaces() {
        assert!(mount_ns(&unit("[Service]\nPrivateNetwork=yes\n")).has_namespace());
        assert!(
            !mount_ns(&unit("[Service]\nPrivateNetwork=yes\nPrivateMounts=no\n")).has_namespace()
        );
        assert!(mount_ns(&unit("[Service]\nRootDirectory=/srv/x\n")).has_namespace());
        assert!(
            !mount_ns(&unit("[Service]\nRootDirectory=/srv/x\nMountAPIVFS=no\n")).has_namespace()
        );
        assert!(mount_ns(&unit("[Service]\nDynamicUser=yes\n")).has_namespace());
        assert!(mount_ns(&unit("[Service]\nProtectKernelTunables=yes\n")).has_namespace());
        assert!(mount_ns(&unit("[Service]\nPrivateTmp=disconnected\n")).has_namespace());
        assert!(mount_ns(&unit("[Service]\nProtectProc=invisible\n")).has_namespace());
        assert!(!mount_ns(&unit(
            "[Service]\nProtectProc=default\nProtectClock=yes\nNoNewPrivileges=yes\n"
        ))
        .has_namespace());
        assert!(
            mount_ns(&unit("[Service]\nPrivateUsers=yes\nPrivateTmp=yes\n"))
                .private_users
                .is_some()
        );
    }
}
