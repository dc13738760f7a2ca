//! Which service units exist, and what each one's settings are after
//! drop-ins: systemd's unit search path, precedence, masking, templates and
//! their instances (systemd.unit(5)), without systemd running.
//!
//! [`read_tree`] is the only I/O: it lists the unit directories under a root
//! into [`SourceFile`]s. [`resolve`] is pure and does the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::unitfile::{self, SyntaxError};

/// System unit directories, highest precedence first (systemd.unit(5),
/// "System Unit Search Path"; generator directories are left out: their
/// output only exists while systemd runs).
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// What a directory entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// A symlink to /dev/null (or an empty symlink): masked.
    Masked,
    /// A symlink whose target is only a name (enablement links in `.wants/`).
    Link(String),
    /// Could not be read.
    Unreadable(String),
}

/// One entry of a unit directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Index into [`UNIT_DIRS`] (lower wins).
    pub rank: usize,
    /// Path relative to the unit directory: `nginx.service`,
    /// `nginx.service.d/override.conf`, `multi-user.target.wants/nginx.service`.
    pub rel: String,
    /// Path on the audited system, for evidence (`/etc/systemd/system/…`).
    pub path: String,
    pub content: Content,
    /// For a unit file that is a symlink to another unit name (an alias).
    pub alias_of: Option<String>,
}

/// One effective assignment and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub section: String,
    pub key: String,
    pub value: String,
    pub file: String,
    pub line: usize,
    pub text: String,
}

impl Setting {
    /// `/etc/systemd/system/x.service:7: PrivateTmp=true`
    pub fn cite(&self) -> String {
        format!("{}:{}: {}", self.file, self.line, self.text)
    }
}

/// A service unit as systemd would load it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// `nginx.service`, `ceph-osd@0.service`, or a template `ceph-osd@.service`
    /// when no instance is known.
    pub name: String,
    /// The template it is an instance of.
    pub template: Option<String>,
    /// The unit file that was loaded.
    pub fragment: String,
    /// Drop-ins applied, in order.
    pub dropins: Vec<String>,
    /// Every assignment, fragment first, then drop-ins in order.
    pub settings: Vec<Setting>,
    /// `.wants/`, `.requires/` or `.upholds/` links that pull it in.
    pub enabled_by: Vec<String>,
    /// A template with no known instance: nothing runs from it yet.
    pub template_only: bool,
}

impl Unit {
    /// Settings for `section`/`key`, in the order they apply.
    pub fn get<'a>(&'a self, section: &'a str, key: &'a str) -> impl Iterator<Item = &'a Setting> {
        self.settings
            .iter()
            .filter(move |s| s.section == section && s.key == key)
    }
}

/// A file that could not be parsed or read, with the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    /// 0 when the whole file could not be read.
    pub line: usize,
    pub text: String,
    pub message: String,
}

/// Every service unit found, and every problem met on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitSet {
    pub units: Vec<Unit>,
    pub masked: Vec<String>,
    pub errors: Vec<FileError>,
    /// Unit files read (fragments and drop-ins), for the summary.
    pub files_read: usize,
}

impl UnitSet {
    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }
}

/// `foo@bar.service` → (`foo@.service`, `bar`); `None` for other names.
pub fn split_instance(name: &str) -> Option<(String, &str)> {
    let (prefix, rest) = name.split_once('@')?;
    let (instance, suffix) = rest.rsplit_once('.')?;
    if instance.is_empty() {
        return None;
    }
    Some((format!("{prefix}@.{suffix}"), instance))
}

fn is_template(name: &str) -> bool {
    name.contains("@.")
}

/// Directory names whose `*.conf` files apply to `name`, most specific
/// first: the unit, its template, its dash-prefixes (`foo-.service.d` for
/// `foo-bar.service`, systemd 246+), and the type-wide `service.d`.
fn dropin_dirs(name: &str) -> Vec<String> {
    let mut dirs = vec![format!("{name}.d")];
    let mut base = name.to_string();
    if let Some((template, _)) = split_instance(name) {
        dirs.push(format!("{template}.d"));
        base = template;
    }
    if let Some(stem) = base.strip_suffix(".service") {
        let stem = stem.trim_end_matches('@');
        let parts: Vec<&str> = stem.split('-').collect();
        for n in (1..parts.len()).rev() {
            dirs.push(format!("{}-.service.d", parts[..n].join("-")));
        }
    }
    dirs.push("service.d".to_string());
    dirs
}

/// Resolves the service units from the directory listings. `extra_instances`
/// are instance names known otherwise (running now).
pub fn resolve(files: &[SourceFile], extra_instances: &[String]) -> UnitSet {
    let mut out = UnitSet::default();
    // Unit files by name, best first.
    let mut fragments: BTreeMap<&str, Vec<&SourceFile>> = BTreeMap::new();
    // Drop-in directory name -> files.
    let mut dropins: BTreeMap<&str, Vec<&SourceFile>> = BTreeMap::new();
    // Unit name -> links that enable it.
    let mut enabled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        match f.rel.split_once('/') {
            None if f.rel.ends_with(".service") => {
                fragments.entry(f.rel.as_str()).or_default().push(f)
            }
            None => {}
            Some((dir, file)) if dir.ends_with(".d") && file.ends_with(".conf") => {
                dropins.entry(dir).or_default().push(f)
            }
            Some((dir, file))
                if (dir.ends_with(".wants")
                    || dir.ends_with(".requires")
                    || dir.ends_with(".upholds"))
                    && file.ends_with(".service") =>
            {
                enabled
                    .entry(file.to_string())
                    .or_default()
                    .push(f.path.clone())
            }
            Some(_) => {}
        }
    }
    for list in fragments.values_mut() {
        list.sort_by_key(|f| f.rank);
    }

    let mut names: BTreeSet<String> = BTreeSet::new();
    for (name, list) in &fragments {
        if list[0].alias_of.is_some() {
            continue;
        }
        names.insert(name.to_string());
    }
    for name in enabled.keys().chain(extra_instances) {
        if let Some((template, _)) = split_instance(name) {
            if fragments.contains_key(name.as_str()) || fragments.contains_key(template.as_str()) {
                names.insert(name.clone());
            }
        }
    }
    // A template stands for itself only when no instance of it is known.
    let instantiated: BTreeSet<String> = names
        .iter()
        .filter_map(|n| split_instance(n).map(|(t, _)| t))
        .collect();
    names.retain(|n| !is_template(n) || !instantiated.contains(n));

    let mut parsed: BTreeMap<String, unitfile::UnitFile> = BTreeMap::new();
    let mut parse = |f: &SourceFile, errors: &mut Vec<FileError>| -> Option<unitfile::UnitFile> {
        match &f.content {
            Content::Text(text) => {
                let p = parsed.entry(f.path.clone()).or_insert_with(|| {
                    let p = unitfile::parse(text);
                    errors.extend(p.errors.iter().map(|e: &SyntaxError| FileError {
                        file: f.path.clone(),
                        line: e.line,
                        text: e.text.clone(),
                        message: e.message.to_string(),
                    }));
                    p
                });
                Some(p.clone())
            }
            Content::Unreadable(why) => {
                if !errors.iter().any(|e| e.file == f.path) {
                    errors.push(FileError {
                        file: f.path.clone(),
                        line: 0,
                        text: String::new(),
                        message: why.clone(),
                    });
                }
                None
            }
            Content::Masked | Content::Link(_) => None,
        }
    };

    for name in names {
        let template = split_instance(&name).map(|(t, _)| t);
        let frag = fragments
            .get(name.as_str())
            .or_else(|| template.as_deref().and_then(|t| fragments.get(t)))
            .and_then(|l| l.first().copied());
        let Some(frag) = frag else { continue };
        if frag.content == Content::Masked {
            out.masked.push(name);
            continue;
        }
        let Some(unit_file) = parse(frag, &mut out.errors) else {
            continue;
        };
        let mut settings: Vec<Setting> = unit_file
            .assignments
            .iter()
            .map(|a| setting(a, &frag.path))
            .collect();

        // Drop-ins: one per file name, from the most specific directory of
        // the highest-precedence unit directory; applied by file name.
        let mut chosen: BTreeMap<&str, (usize, usize, &SourceFile)> = BTreeMap::new();
        for (spec, dir) in dropin_dirs(&name).iter().enumerate() {
            for f in dropins.get(dir.as_str()).into_iter().flatten() {
                let base = f.rel.rsplit('/').next().unwrap_or(&f.rel);
                let key = (f.rank, spec);
                match chosen.get(base) {
                    Some((r, s, _)) if (*r, *s) <= key => {}
                    _ => {
                        chosen.insert(base, (f.rank, spec, f));
                    }
                }
            }
        }
        let mut applied = Vec::new();
        for (_, (_, _, f)) in chosen {
            if f.content == Content::Masked {
                continue;
            }
            if let Some(d) = parse(f, &mut out.errors) {
                settings.extend(d.assignments.iter().map(|a| setting(a, &f.path)));
                applied.push(f.path.clone());
            }
        }
        out.files_read += 1 + applied.len();
        let mut enabled_by = enabled.get(&name).cloned().unwrap_or_default();
        enabled_by.sort();
        enabled_by.dedup();
        out.units.push(Unit {
            template_only: is_template(&name),
            name,
            template,
            fragment: frag.path.clone(),
            dropins: applied,
            settings,
            enabled_by,
        });
    }
    out.errors
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out
}

fn setting(a: &unitfile::Assignment, file: &str) -> Setting {
    Setting {
        section: a.section.clone(),
        key: a.key.clone(),
        value: a.value.clone(),
        file: file.to_string(),
        line: a.line,
        text: a.text.clone(),
    }
}

/// `root` + an absolute system path.
pub fn under(root: &Path, system_path: &str) -> PathBuf {
    root.join(system_path.trim_start_matches('/'))
}

/// Lists the unit directories under `root` (`/` for this system). A missing
/// directory is skipped; one that resolves to a directory already read
/// (`/lib` → `/usr/lib` on merged-/usr systems) is read once.
pub fn read_tree(root: &Path) -> Vec<SourceFile> {
    let mut out = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for (rank, dir) in UNIT_DIRS.iter().enumerate() {
        let real = resolve_in_root(root, dir);
        let Some(real) = real.filter(|p| p.is_dir()) else {
            continue;
        };
        if seen.contains(&real) {
            continue;
        }
        seen.push(real.clone());
        read_dir(root, rank, dir, &real, &mut out);
    }
    out
}

fn read_dir(root: &Path, rank: usize, sys_dir: &str, real: &Path, out: &mut Vec<SourceFile>) {
    let entries = match fs::read_dir(real) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(dir = %real.display(), %err, "cannot list unit directory");
            return;
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = real.join(&name);
        let sys_path = format!("{sys_dir}/{name}");
        let is_sub = name.ends_with(".d")
            || name.ends_with(".wants")
            || name.ends_with(".requires")
            || name.ends_with(".upholds");
        if is_sub && path.is_dir() {
            let mut subs: Vec<String> = fs::read_dir(&path)
                .map(|e| {
                    e.filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            subs.sort();
            for sub in subs {
                let rel = format!("{name}/{sub}");
                let content = if name.ends_with(".d") {
                    if !sub.ends_with(".conf") {
                        continue;
                    }
                    read_content(root, &path.join(&sub))
                } else {
                    // Enablement links: only the name matters.
                    Content::Link(sub.clone())
                };
                out.push(SourceFile {
                    rank,
                    rel,
                    path: format!("{sys_path}/{sub}"),
                    content,
                    alias_of: None,
                });
            }
        } else if name.ends_with(".service") {
            let alias_of = fs::read_link(&path).ok().and_then(|t| {
                let base = t.file_name()?.to_string_lossy().into_owned();
                (base != name && base.ends_with(".service")).then_some(base)
            });
            out.push(SourceFile {
                rank,
                rel: name.clone(),
                path: sys_path,
                content: read_content(root, &path),
                alias_of,
            });
        }
    }
}

/// Reads a unit file, following symlinks inside `root` (an absolute link
/// target is taken relative to `root`, not to this machine's `/`).
fn read_content(root: &Path, path: &Path) -> Content {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = match fs::read_link(&p) {
                    Ok(t) => t,
                    Err(err) => return Content::Unreadable(format!("readlink: {err}")),
                };
                if target.as_os_str().is_empty() || target == Path::new("/dev/null") {
                    return Content::Masked;
                }
                p = if target.is_absolute() {
                    under(root, &target.to_string_lossy())
                } else {
                    p.parent().unwrap_or(Path::new("/")).join(target)
                };
            }
            Ok(_) => break,
            Err(err) => return Content::Unreadable(err.to_string()),
        }
    }
    match fs::read(&p) {
        Ok(bytes) if bytes.is_empty() => Content::Masked,
        Ok(bytes) => Content::Text(String::from_utf8_lossy(&bytes).into_owned()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Content::Unreadable(format!("dangling symlink to {}", p.display()))
        }
        Err(err) => Content::Unreadable(err.to_string()),
    }
}

/// The real location of an absolute system path under `root`, following a
/// symlink at the last component inside `root` (`/lib` → `usr/lib`).
fn resolve_in_root(root: &Path, sys: &str) -> Option<PathBuf> {
    let mut p = under(root, sys);
    let mut parts: Vec<&str> = sys.trim_start_matches('/').split('/').collect();
    // Follow a symlinked first component (merged /usr: /lib -> usr/lib).
    if let Some(first) = parts.first().copied() {
        let top = root.join(first);
        if let Ok(t) = fs::read_link(&top) {
            let base = if t.is_absolute() {
                under(root, &t.to_string_lossy())
            } else {
                root.join(t)
            };
            parts.remove(0);
            p = parts.iter().fold(base, |acc, part| acc.join(part));
        }
    }
    Some(fs::canonicalize(&p).unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rank: usize, rel: &str, text: &str) -> SourceFile {
        SourceFile {
            rank,
            rel: rel.to_string(),
            path: format!("{}/{rel}", UNIT_DIRS[rank]),
            content: Content::Text(text.to_string()),
            alias_of: None,
        }
    }

    fn link(rank: usize, rel: &str) -> SourceFile {
        SourceFile {
            rank,
            rel: rel.to_string(),
            path: format!("{}/{rel}", UNIT_DIRS[rank]),
            content: Content::Link(rel.rsplit('/').next().unwrap().to_string()),
            alias_of: None,
        }
    }

    const ETC: usize = 3;
    const RUN: usize = 4;
    const USR: usize = 6;

    fn values(u: &Unit, key: &str) -> Vec<String> {
        u.get("Service", key).map(|s| s.value.clone()).collect()
    }

    #[test]
    fn etc_overrides_usr_and_dropins_apply_by_name() {
        let set = resolve(
            &[
                file(USR, "nginx.service", "[Service]\nPrivateTmp=true\n"),
                file(
                    ETC,
                    "nginx.service",
                    "[Service]\nPrivateTmp=yes\nUser=www\n",
                ),
                file(USR, "nginx.service.d/10-a.conf", "[Service]\nA=usr\n"),
                file(RUN, "nginx.service.d/10-a.conf", "[Service]\nA=run\n"),
                file(
                    USR,
                    "nginx.service.d/20-b.conf",
                    "[Service]\nPrivateTmp=false\n",
                ),
                file(USR, "service.d/05-all.conf", "[Service]\nAll=1\n"),
                link(ETC, "multi-user.target.wants/nginx.service"),
            ],
            &[],
        );
        let u = set.unit("nginx.service").unwrap();
        assert_eq!(u.fragment, "/etc/systemd/system/nginx.service");
        assert_eq!(
            u.dropins,
            vec![
                "/usr/lib/systemd/system/service.d/05-all.conf",
                "/run/systemd/system/nginx.service.d/10-a.conf",
                "/usr/lib/systemd/system/nginx.service.d/20-b.conf",
            ]
        );
        assert_eq!(values(u, "PrivateTmp"), vec!["yes", "false"]);
        assert_eq!(values(u, "A"), vec!["run"]);
        assert_eq!(
            u.enabled_by,
            vec!["/etc/systemd/system/multi-user.target.wants/nginx.service"]
        );
        assert_eq!(set.files_read, 4);
    }

    #[test]
    fn templates_are_instantiated_from_wants_links_and_live_names() {
        let set = resolve(
            &[
                file(USR, "ceph-osd@.service", "[Service]\nPrivateTmp=true\n"),
                file(ETC, "ceph-osd@.service.d/x.conf", "[Service]\nT=1\n"),
                file(
                    ETC,
                    "ceph-osd@1.service.d/x.conf",
                    "[Service]\nT=instance\n",
                ),
                link(ETC, "ceph-osd.target.wants/ceph-osd@0.service"),
                file(USR, "getty@.service", "[Service]\nX=1\n"),
            ],
            &[
                "ceph-osd@1.service".to_string(),
                "nosuch@1.service".to_string(),
            ],
        );
        let names: Vec<&str> = set.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["ceph-osd@0.service", "ceph-osd@1.service", "getty@.service"]
        );
        let osd0 = set.unit("ceph-osd@0.service").unwrap();
        assert_eq!(osd0.template.as_deref(), Some("ceph-osd@.service"));
        assert_eq!(osd0.fragment, "/usr/lib/systemd/system/ceph-osd@.service");
        assert_eq!(values(osd0, "T"), vec!["1"]);
        assert!(!osd0.enabled_by.is_empty());
        // The instance's own drop-in of the same name wins over the template's.
        assert_eq!(
            values(set.unit("ceph-osd@1.service").unwrap(), "T"),
            vec!["instance"]
        );
        assert!(set.unit("getty@.service").unwrap().template_only);
    }

    #[test]
    fn masked_units_and_dropins_and_aliases() {
        let mut masked = file(ETC, "ntpd.service", "");
        masked.content = Content::Masked;
        let mut masked_dropin = file(ETC, "chronyd.service.d/10-x.conf", "");
        masked_dropin.content = Content::Masked;
        let mut alias = file(ETC, "dbus-org.x.service", "[Service]\n");
        alias.alias_of = Some("x.service".into());
        let set = resolve(
            &[
                masked,
                file(USR, "ntpd.service", "[Service]\nPrivateTmp=true\n"),
                file(USR, "chronyd.service", "[Service]\nPrivateTmp=true\n"),
                file(
                    USR,
                    "chronyd.service.d/10-x.conf",
                    "[Service]\nPrivateTmp=false\n",
                ),
                masked_dropin,
                alias,
            ],
            &[],
        );
        assert_eq!(set.masked, vec!["ntpd.service"]);
        assert!(set.unit("dbus-org.x.service").is_none());
        let c = set.unit("chronyd.service").unwrap();
        assert!(c.dropins.is_empty());
        assert_eq!(values(c, "PrivateTmp"), vec!["true"]);
    }

    #[test]
    fn dash_prefix_dropin_dirs() {
        assert_eq!(
            dropin_dirs("foo-bar-baz.service"),
            vec![
                "foo-bar-baz.service.d",
                "foo-bar-.service.d",
                "foo-.service.d",
                "service.d"
            ]
        );
        assert_eq!(
            dropin_dirs("ceph-osd@0.service"),
            vec![
                "ceph-osd@0.service.d",
                "ceph-osd@.service.d",
                "ceph-.service.d",
                "service.d"
            ]
        );
    }

    #[test]
    fn errors_carry_file_and_line_once_per_file() {
        let set = resolve(
            &[
                file(USR, "a@.service", "[Service]\nPrivateTmp\n"),
                link(ETC, "x.target.wants/a@1.service"),
                link(ETC, "x.target.wants/a@2.service"),
                SourceFile {
                    rank: ETC,
                    rel: "b.service".into(),
                    path: "/etc/systemd/system/b.service".into(),
                    content: Content::Unreadable("Permission denied".into()),
                    alias_of: None,
                },
            ],
            &[],
        );
        assert_eq!(set.units.len(), 2);
        let errs: Vec<(&str, usize)> = set
            .errors
            .iter()
            .map(|e| (e.file.as_str(), e.line))
            .collect();
        assert_eq!(
            errs,
            vec![
                ("/etc/systemd/system/b.service", 0),
                ("/usr/lib/systemd/system/a@.service", 2)
            ]
        );
    }

    #[test]
    fn instance_names() {
        assert_eq!(
            split_instance("ceph-osd@0.service"),
            Some(("ceph-osd@.service".to_string(), "0"))
        );
        assert_eq!(split_instance("ceph-osd@.service"), None);
        assert_eq!(split_instance("nginx.service"), None);
    }
}
