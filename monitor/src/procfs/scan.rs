//! The [`Scanner`]: processes grouped by mount namespace, one mount table per
//! namespace, every living namespace, and pins, as a `Snapshot`.
//!
//! Works from /proc alone (RHEL/CentOS 7, Linux 3.10). Newer kernels add,
//! each detected by errno and remembered in [`Support`]:
//! - `NS_MNT_GET_NEXT`/`PREV` (6.12): every mount namespace, including
//!   those no process is in (kept alive by an nsfs bind mount or an fd);
//! - listmount/statmount with a namespace id (6.11): their mount tables,
//!   and, in a scoped scan (`check`, with the walk), where it is several
//!   times cheaper than mountinfo (no options formatted), the tables of the
//!   namespaces processes are in too, read on a second thread. The daemon's
//!   and `scan`'s reads take those from mountinfo: moving them made a
//!   daemon test fail once under the full suite, cause not found.
//!
//! Without them, a namespace pinned by an nsfs bind mount is still found
//! (its `mnt:[N]` shows in some table) and read with nsenter(1).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monitor_model::{
    Dev, MountEntry, NamespaceSnapshot, NsId, NsfsMount, PathBytes, Pid, ProcessInfo, Snapshot,
    TableSource,
};

use super::mountinfo::{self, LineError};
use super::pins::{self, Candidate};
use super::process::{parse_ns_link, Basics, ProcHandle, START_UNREAD};
use super::{clock, nsenter, statmount, sys};

/// Decides which processes get their cwd/root/fd devices read (costly: one
/// stat per open fd). Gets the process's namespace and what is known of it.
pub type DeviceFilter = Arc<dyn Fn(NsId, &ProcessInfo) -> bool + Send + Sync>;

/// What a scan collects.
#[derive(Clone)]
pub struct ScanOptions {
    /// exe, cgroup, uid and user namespace of every member process.
    pub process_details: bool,
    /// The owning user namespace of each namespace read (`NS_GET_USERNS`,
    /// Linux 4.9).
    pub namespace_owner: bool,
    /// Walk every mount namespace with `NS_MNT_GET_NEXT` (Linux 6.12).
    pub walk_namespaces: bool,
    /// Read the tables of namespaces no process is in (statmount, or nsenter
    /// through their nsfs mount).
    pub processless_tables: bool,
    /// Allow spawning nsenter(1) when statmount cannot read such a table.
    pub nsenter_fallback: bool,
    /// Whose devices to read. `None`: no device facts and no pins.
    pub devices: Option<DeviceFilter>,
    /// Look for pins among the processes whose devices are read. Needs every
    /// mount table, so a targeted scan with pins reads them all; without,
    /// device facts stay cheap (the daemon's targeted scans).
    pub pins: bool,
    /// Read only what one target needs of most tables (`mountleak check`).
    pub scope: Option<Arc<TableScope>>,
    /// Set by someone else to stop the scan early (the daemon, when a read
    /// a warning waits for must go first): it then ends `Cancelled`.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// A scan about one target (a container, a pod, a mount path): the host
/// namespaces' tables are read whole; of every other table only the mounts
/// that may concern the target (see [`statmount::read_table_scoped`]):
/// those of a filesystem the host does not show (a copy of something the
/// host already unmounted, or the namespace's own mounts), those of the
/// target's filesystems, and what sits on them. Copies of every other
/// container's rootfs, the bulk of a holder's table, are left out.
///
/// Needs the namespace walk and statmount; without them every table is
/// read whole, as without a scope.
pub struct TableScope {
    /// Read whole: the namespaces the host's mounts are judged from.
    pub full: BTreeSet<NsId>,
    /// Whether a mount point in a host table is one of the target's.
    pub target: Box<dyn Fn(&PathBytes) -> bool + Send + Sync>,
}

impl std::fmt::Debug for TableScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableScope")
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

/// A scope and the devices it decides by, from the host tables.
struct Scoped {
    scope: Arc<TableScope>,
    host_devs: BTreeSet<Dev>,
    target_devs: BTreeSet<Dev>,
}

impl Scoped {
    /// A mount of `dev` outside the host tables may concern the target: a
    /// filesystem the host does not show, or one of the target's.
    fn concerns(&self, dev: &Dev) -> bool {
        !self.host_devs.contains(dev) || self.target_devs.contains(dev)
    }

    /// Whether `ns` is a host namespace (read whole).
    fn is_host(&self, ns: &NsId) -> bool {
        self.scope.full.contains(ns)
    }
}

impl Default for ScanOptions {
    /// Everything except device facts, which the caller scopes.
    fn default() -> Self {
        ScanOptions {
            process_details: true,
            namespace_owner: true,
            walk_namespaces: true,
            processless_tables: true,
            nsenter_fallback: true,
            devices: None,
            pins: false,
            scope: None,
            cancel: None,
        }
    }
}

impl ScanOptions {
    /// Device facts (and pins) for every process.
    pub fn with_all_devices(mut self) -> Self {
        self.devices = Some(Arc::new(|_, _| true));
        self.pins = true;
        self
    }

    /// Device facts (cwd, root, fd devices) for the processes `select`
    /// picks, without looking for pins.
    pub fn with_device_facts(
        mut self,
        select: impl Fn(NsId, &ProcessInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.devices = Some(Arc::new(select));
        self.pins = false;
        self
    }

    /// Read only what `scope`'s target needs of most tables.
    pub fn scoped(mut self, scope: TableScope) -> Self {
        self.scope = Some(Arc::new(scope));
        self
    }

    /// Stops the scan early when `flag` is set.
    pub fn cancelled_by(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    fn is_cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Device facts (and pins) for the processes `select` picks.
    pub fn with_devices(
        mut self,
        select: impl Fn(NsId, &ProcessInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.devices = Some(Arc::new(select));
        self.pins = true;
        self
    }
}

impl std::fmt::Debug for ScanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanOptions")
            .field("process_details", &self.process_details)
            .field("namespace_owner", &self.namespace_owner)
            .field("walk_namespaces", &self.walk_namespaces)
            .field("processless_tables", &self.processless_tables)
            .field("nsenter_fallback", &self.nsenter_fallback)
            .field("devices", &self.devices.as_ref().map(|_| "filter"))
            .field("pins", &self.pins)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Which optional kernel interfaces worked. `None`: not tried yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Support {
    pub ns_walk: Option<bool>,
    pub statmount: Option<bool>,
}

/// A scan that could not run at all. Anything smaller (a process exiting,
/// an unreadable table) is counted in [`ScanStats`] instead.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot list /proc: {0}")]
    ListProc(#[source] io::Error),
    #[error("cancelled")]
    Cancelled,
}

/// See [`ScanStats::phases`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    pub before_proc: Duration,
    pub proc_walk: Duration,
    pub tables_alongside: Duration,
    pub after_proc: Duration,
}

/// How one mount table was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableRead {
    /// `/proc/PID/mountinfo` of a member.
    Mountinfo { ns: NsId, pid: Pid },
    /// listmount/statmount by namespace id.
    Statmount { ns: NsId },
    /// nsenter(1) through an nsfs mount.
    Nsenter { ns: NsId, path: PathBuf },
}

/// What happened during a scan, beyond the snapshot.
#[derive(Clone, Debug, Default)]
pub struct ScanStats {
    pub duration: Duration,
    /// Where `duration` went: the namespace walk and host tables before
    /// /proc (scoped scans), the /proc walk, the second thread's table
    /// reads alongside it, and everything after.
    pub phases: Phases,
    /// User processes grouped into namespaces.
    pub processes: usize,
    pub kernel_threads: usize,
    /// Processes that exited mid-scan (normal).
    pub vanished: usize,
    /// Processes we may not look at (e.g. `/proc/1/ns` is EACCES here).
    pub inaccessible: usize,
    /// Every table read, in order. Each namespace appears at most once.
    pub tables: Vec<TableRead>,
    /// Of those, tables read only in part (a scoped scan).
    pub partial_tables: usize,
    /// Malformed mountinfo lines, skipped.
    pub malformed_lines: usize,
    /// The first few of them, for the log.
    pub line_errors: Vec<(NsId, LineError)>,
    /// Namespaces whose table was wanted but could not be read, and why.
    pub unread: Vec<(NsId, String)>,
    /// False when `alive` may miss namespaces held only by an fd or by a
    /// thread (no `NS_MNT_GET_NEXT` walk on this kernel).
    pub alive_complete: bool,
    /// False when pins were not looked for, or some table was unread (so a
    /// device may be "unshown" only because we could not see its table).
    /// Becomes `Snapshot::pins_scanned`.
    pub pins_complete: bool,
    pub support: Support,
}

/// A snapshot and how it was made.
#[derive(Clone, Debug)]
pub struct ScanOutput {
    pub snapshot: Snapshot,
    pub stats: ScanStats,
}

const MAX_LINE_ERRORS: usize = 32;
/// Spare members remembered per namespace (see `Group::spare`).
const MAX_SPARE: usize = 4;

/// The mount namespace this process is in.
pub fn own_mnt_ns() -> Option<NsId> {
    ProcHandle::myself().and_then(|me| me.mnt_ns()).ok()
}

/// The mount namespace process `pid` is in.
pub fn mnt_ns_of(pid: Pid) -> Option<NsId> {
    ProcHandle::open(pid).and_then(|p| p.mnt_ns()).ok()
}

/// Builds snapshots. Keeps only what it learned about the kernel between
/// scans; every scan reads everything afresh.
#[derive(Debug)]
pub struct Scanner {
    ticks_per_second: u64,
    support: Support,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

/// One namespace being assembled.
#[derive(Default)]
struct Group {
    /// A process of it was visited to the end.
    seen: bool,
    members: Vec<ProcessInfo>,
    table: Option<(Vec<MountEntry>, TableSource)>,
    /// The pid whose table we have (to reach nsfs mounts it shows).
    reader: Option<Pid>,
    /// Members whose root is not the namespace root (chroot): their
    /// mountinfo hides mounts outside it. Read only if nobody else can.
    chrooted: Vec<Pid>,
    /// A few members of a namespace whose table was not wanted, in case it
    /// is needed after all (finding nsfs mounts). A pid is checked to be
    /// still in the namespace before its table is taken.
    spare: Vec<Pid>,
    user_ns: Option<u64>,
    /// Known from the walk: the 64-bit id statmount takes.
    mnt_ns_id: Option<u64>,
}

impl Scanner {
    pub fn new() -> Self {
        Self::with_support(Support::default())
    }

    /// A scanner that takes `support` as already known: `Some(false)` keeps
    /// it off an interface (a kernel known to misbehave, or a test of the
    /// old-kernel path).
    pub fn with_support(support: Support) -> Self {
        Scanner {
            ticks_per_second: clock::ticks_per_second(),
            support,
        }
    }

    /// What the kernel turned out to support so far.
    pub fn support(&self) -> Support {
        self.support
    }

    /// Every namespace: members, mount table, nsfs mounts; plus pins if
    /// `opts.devices` asks for them.
    pub fn scan(&mut self, opts: &ScanOptions) -> Result<ScanOutput, ScanError> {
        self.run(None, opts)
    }

    /// Like [`Scanner::scan`] but reads the tables (and member details) of
    /// `targets` only. `alive` still covers every namespace. Pins, if asked
    /// for, still need every table's devices, so those are read too (and
    /// not returned).
    pub fn scan_namespaces(
        &mut self,
        targets: &[NsId],
        opts: &ScanOptions,
    ) -> Result<ScanOutput, ScanError> {
        let targets: BTreeSet<NsId> = targets.iter().copied().collect();
        self.run(Some(&targets), opts)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(targeted = targets.is_some()))]
    fn run(
        &mut self,
        targets: Option<&BTreeSet<NsId>>,
        opts: &ScanOptions,
    ) -> Result<ScanOutput, ScanError> {
        let started = Instant::now();
        let taken_at = clock::boottime_ns();
        let self_ns = ProcHandle::myself().and_then(|me| me.mnt_ns()).ok();
        let mut pass = Pass {
            opts,
            targets,
            // Pins compare against every table, so then every table is read.
            read_all: targets.is_none() || (opts.pins && opts.devices.is_some()),
            groups: BTreeMap::new(),
            ids: BTreeMap::new(),
            scoped: None,
            left_out: BTreeSet::new(),
            prefetching: BTreeSet::new(),
            late_details: false,
            candidates: Vec::new(),
            nsfs: BTreeMap::new(),
            stats: ScanStats::default(),
        };

        // A scoped scan walks the namespaces first: the walk gives the ids
        // statmount reads its tables by. Others walk after /proc, so that a
        // namespace made meanwhile is still found.
        let can_walk = opts.walk_namespaces && self.support.ns_walk != Some(false);
        let mut walked = None;
        if can_walk && opts.scope.is_some() {
            walked = self.walk_namespaces(opts.namespace_owner);
        }
        if let Some(walked) = &walked {
            pass.ids = walked.iter().map(|w| (w.ino, (w.id, w.user_ns))).collect();
            if let Some(scope) = &opts.scope {
                self.read_host_tables(&mut pass, scope);
            }
        }

        // With the walk's ids and statmount, the tables are read on a
        // second thread while this one walks /proc: the two take about as
        // long on a busy node.
        let prefetch: Vec<(NsId, u64)> =
            if walked.is_some() && self.support.statmount != Some(false) {
                pass.ids
                    .iter()
                    .filter(|(ns, _)| pass.wants(**ns) && !pass.has_table(**ns))
                    .map(|(&ns, &(id, _))| (ns, id))
                    .collect()
            } else {
                Vec::new()
            };
        pass.prefetching = prefetch.iter().map(|&(ns, _)| ns).collect();
        pass.late_details = opts.process_details && pass.scoped.is_some();
        let scoped = pass.scoped.take();
        // Both threads take tables from one list: the second from the
        // start, this one once /proc is walked.
        let next = std::sync::atomic::AtomicUsize::new(0);
        pass.stats.phases.before_proc = started.elapsed();
        let read_some = || {
            let mut read = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(ns, id)) = prefetch.get(i) else {
                    return read;
                };
                read.push((ns, read_by_id(scoped.as_ref(), ns, id)));
            }
        };
        let walk_started = Instant::now();
        let mut alongside = Duration::ZERO;
        let walked_proc = std::thread::scope(|threads| {
            let reader = (prefetch.len() > 1).then(|| {
                threads.spawn(|| {
                    let t = Instant::now();
                    (read_some(), t.elapsed())
                })
            });
            let listed = self.walk_proc(&mut pass);
            pass.stats.phases.proc_walk = walk_started.elapsed();
            let mut read = read_some();
            // A panic there is a bug; its tables are read below instead.
            if let Some(Ok((mut more, took))) = reader.map(|r| r.join()) {
                read.append(&mut more);
                alongside = took;
            }
            listed.map(|()| read)
        });
        pass.stats.phases.tables_alongside = alongside;
        let after_started = Instant::now();
        pass.scoped = scoped;
        pass.prefetching.clear();
        // A group nobody finished visiting: all its processes exited
        // mid-read. If the namespace lives on, the walk brings it back.
        pass.groups.retain(|_, g| g.seen);
        for (ns, result) in walked_proc? {
            match result {
                Ok(read) => {
                    self.support.statmount = Some(true);
                    let table = pass.count_read(read);
                    pass.store(ns, table, TableSource::Statmount, None);
                    pass.stats.tables.push(TableRead::Statmount { ns });
                }
                Err(err) => {
                    if sys::is_unsupported(&err) {
                        self.support.statmount = Some(false);
                    }
                    // Dead since the walk, or not ours: read_late and the
                    // process-less path try the other ways.
                    tracing::debug!(ns, %err, "statmount failed");
                }
            }
        }
        let read_all = pass.read_all;
        let wanted = |ns: NsId| read_all || targets.is_none_or(|t| t.contains(&ns));
        self.read_late(&mut pass, wanted);

        pass.stats.alive_complete = false;
        if can_walk && opts.scope.is_none() {
            walked = self.walk_namespaces(opts.namespace_owner);
        }
        if let Some(walked) = walked {
            pass.add_walked(walked);
        }
        // Without the walk, a target no process is in can only be found by
        // an nsfs mount in some other table: read them all, then. (With it,
        // a target the walk did not find is dead.)
        let unresolved = !pass.stats.alive_complete
            && targets.is_some_and(|t| {
                t.iter().any(|ns| {
                    pass.groups
                        .get(ns)
                        .is_none_or(|g| g.members.is_empty() && g.mnt_ns_id.is_none())
                })
            });
        if unresolved && opts.processless_tables {
            self.read_late(&mut pass, |_| true);
        }
        pass.add_nsfs_targets();
        if opts.processless_tables {
            let missing: Vec<NsId> = pass
                .groups
                .iter()
                .filter(|(&ns, g)| g.members.is_empty() && g.table.is_none() && pass.wants(ns))
                .map(|(&ns, _)| ns)
                .collect();
            for ns in missing {
                self.read_processless(&mut pass, ns);
            }
        }
        pass.note_unread();
        if pass.late_details {
            pass.fill_named_details(self.ticks_per_second);
        }

        let mut pins = Vec::new();
        if opts.pins && opts.devices.is_some() {
            let shown: BTreeSet<Dev> = pass
                .groups
                .values()
                .filter_map(|g| g.table.as_ref())
                .flat_map(|(t, _)| t.iter().map(|m| m.dev))
                .chain(pass.left_out.iter().copied())
                .collect();
            if pass.late_details {
                // `check`: on both cores, like the tables.
                let (a, b) = pass.candidates.split_at(pass.candidates.len() / 2);
                pins = std::thread::scope(|threads| {
                    let first = threads.spawn(|| pins::find(a, &shown));
                    let second = pins::find(b, &shown);
                    // A panic there is a bug; that half is done here instead.
                    let mut all = first.join().unwrap_or_else(|_| pins::find(a, &shown));
                    all.extend(second);
                    all
                });
                let ticks = self.ticks_per_second;
                on_two_threads(&mut pins, |pin| fill_details_again(&mut pin.process, ticks));
            } else {
                pins = pins::find(&pass.candidates, &shown);
            }
            // A gap makes "no table shows it" unreliable. Namespaces held
            // only by an fd are invisible without the walk; that gap is
            // accepted, or old kernels would never be complete.
            pass.stats.pins_complete = pass.groups.values().all(|g| g.table.is_some());
        }

        let alive: Vec<NsId> = pass.groups.keys().copied().collect();
        let Pass {
            groups,
            mut nsfs,
            mut stats,
            ..
        } = pass;
        let namespaces = groups
            .into_iter()
            .filter(|(ns, _)| targets.is_none_or(|t| t.contains(ns)))
            .filter_map(|(ns, g)| {
                let (mounts, source) = g.table?;
                Some(NamespaceSnapshot {
                    ns,
                    mounts,
                    members: g.members,
                    nsfs_mounts: nsfs.remove(&ns).unwrap_or_default(),
                    user_ns: g.user_ns,
                    source,
                })
            })
            .collect();
        let snapshot = Snapshot {
            taken_at,
            alive: Some(alive),
            namespaces,
            pins,
            pins_scanned: stats.pins_complete,
            self_ns,
        };

        stats.duration = started.elapsed();
        stats.phases.after_proc = after_started.elapsed();
        stats.support = self.support;
        tracing::debug!(
            processes = stats.processes,
            namespaces = snapshot.namespaces.len(),
            tables = stats.tables.len(),
            partial = stats.partial_tables,
            vanished = stats.vanished,
            malformed = stats.malformed_lines,
            unread = stats.unread.len(),
            pins = snapshot.pins.len(),
            took_us = stats.duration.as_micros() as u64,
            "scan done"
        );
        Ok(ScanOutput { snapshot, stats })
    }

    fn walk_proc(&self, pass: &mut Pass<'_>) -> Result<(), ScanError> {
        let proc_dir = std::fs::read_dir("/proc").map_err(ScanError::ListProc)?;
        for entry in proc_dir {
            if pass.opts.is_cancelled() {
                return Err(ScanError::Cancelled);
            }
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            if let Some(pid) = name.to_str().and_then(|s| s.parse::<Pid>().ok()) {
                self.visit(pass, pid);
            }
        }
        Ok(())
    }

    /// One /proc entry: group it, read its namespace's table if nobody has
    /// yet, collect its devices if selected. Any failure means the process
    /// is skipped, never that the scan fails.
    fn visit(&self, pass: &mut Pass<'_>, pid: Pid) {
        let gone = |stats: &mut ScanStats, err: &io::Error, what: &str| {
            if sys::is_gone(err) {
                stats.vanished += 1;
            } else {
                stats.inaccessible += 1;
                tracing::debug!(pid, %err, what, "process not readable");
            }
        };
        let handle = match ProcHandle::open(pid) {
            Ok(h) => h,
            Err(err) => return gone(&mut pass.stats, &err, "open"),
        };
        // The namespace first: most processes of a targeted scan are only
        // counted, and that needs no stat. A zombie has no namespaces any
        // more: ENOENT, counted as gone.
        let ns = match handle.mnt_ns() {
            Ok(ns) => ns,
            Err(err) => return gone(&mut pass.stats, &err, "ns/mnt"),
        };
        let kept = pass.keeps(ns);
        // A table being read on the other thread is not read here; members
        // are remembered as spares in case that read fails.
        let wants_table = pass.wants(ns) && !pass.prefetching.contains(&ns);
        let opts = pass.opts;
        let group = pass.groups.entry(ns).or_default();
        let reads_table = group.table.is_none() && wants_table;
        if !kept && !reads_table {
            if group.table.is_none() && group.spare.len() < MAX_SPARE {
                group.spare.push(pid);
            }
            // A kernel thread lands here too (in the first namespace); it
            // is counted as a process then, harmlessly.
            group.seen = true;
            pass.stats.processes += 1;
            return;
        }
        // `check` reads stat late, only for who may be named, outside the
        // host namespaces (where kernel threads are).
        let late_stat = !reads_table
            && pass.late_details
            && opts.scope.as_ref().is_some_and(|s| !s.full.contains(&ns));
        let basics = if late_stat {
            Basics {
                comm: String::new(),
                start: START_UNREAD,
                kernel_thread: false,
            }
        } else {
            match handle.basics(self.ticks_per_second) {
                Ok(b) => b,
                Err(err) => return gone(&mut pass.stats, &err, "stat"),
            }
        };
        if basics.kernel_thread {
            pass.stats.kernel_threads += 1;
            return;
        }

        if reads_table {
            // mountinfo shows mounts relative to the reader's root, so a
            // chrooted member would hide the rest of the table.
            match handle.readlink(c"root") {
                Ok(root) if root == b"/" => match handle.mountinfo() {
                    Ok(text) => {
                        let table = parse_table(ns, &text, &mut pass.stats);
                        group.table = Some((table, TableSource::Mountinfo));
                        group.reader = Some(pid);
                        // The namespace was alive when read, even if this
                        // process exits before we are done with it.
                        group.seen = true;
                        pass.stats.tables.push(TableRead::Mountinfo { ns, pid });
                        if opts.namespace_owner {
                            group.user_ns = owner_of(&handle);
                        }
                    }
                    Err(err) => return gone(&mut pass.stats, &err, "mountinfo"),
                },
                Ok(_) => group.chrooted.push(pid),
                Err(err) => return gone(&mut pass.stats, &err, "root"),
            }
        } else if group.table.is_none() && group.spare.len() < MAX_SPARE {
            group.spare.push(pid);
        }

        if kept {
            let mut info = ProcessInfo {
                pid,
                start: basics.start,
                comm: basics.comm,
                ..ProcessInfo::default()
            };
            // A scoped scan fills them in later, only for who may be named.
            if opts.process_details && !pass.late_details {
                handle.fill_details(&mut info);
            }
            if let Some(select) = &opts.devices {
                if select(ns, &info) {
                    match handle.devices() {
                        Ok(devices) => {
                            info.cwd_dev = devices.cwd;
                            info.root_dev = devices.root;
                            info.fd_devs = devices.fd_devs();
                            if opts.pins {
                                pass.candidates.push(Candidate {
                                    ns,
                                    info: info.clone(),
                                    devices,
                                });
                            }
                        }
                        Err(err) => return gone(&mut pass.stats, &err, "fd"),
                    }
                }
            }
            group.members.push(info);
        }
        group.seen = true;
        pass.stats.processes += 1;
    }

    /// Reads the tables still missing for the namespaces `want` picks,
    /// through members remembered during the walk over /proc: spare ones
    /// first, chrooted ones (a partial view) last.
    fn read_late(&self, pass: &mut Pass<'_>, want: impl Fn(NsId) -> bool) {
        for (&ns, group) in pass.groups.iter_mut() {
            if group.table.is_some() || !want(ns) {
                continue;
            }
            let tries = group.spare.iter().map(|&m| (m, false));
            let tries = tries.chain(group.chrooted.iter().map(|&m| (m, true)));
            for (pid, chrooted) in tries.collect::<Vec<_>>() {
                let Ok(handle) = ProcHandle::open(pid) else {
                    continue;
                };
                // Reused pids are harmless if still in the namespace.
                if !handle.mnt_ns().is_ok_and(|n| n == ns) {
                    continue;
                }
                if !chrooted && !handle.readlink(c"root").is_ok_and(|r| r == b"/") {
                    continue;
                }
                if let Ok(text) = handle.mountinfo() {
                    if chrooted {
                        tracing::debug!(
                            ns,
                            pid,
                            "only chrooted members: table limited to their root"
                        );
                    }
                    let table = parse_table(ns, &text, &mut pass.stats);
                    group.table = Some((table, TableSource::Mountinfo));
                    group.reader = Some(pid);
                    pass.stats.tables.push(TableRead::Mountinfo { ns, pid });
                    break;
                }
            }
        }
    }

    /// A scoped scan's first step: the host tables, whole, by id. Only if
    /// all of them can be read is the rest read in part.
    fn read_host_tables(&mut self, pass: &mut Pass<'_>, scope: &Arc<TableScope>) {
        if self.support.statmount == Some(false) {
            return;
        }
        let mut host_devs = BTreeSet::new();
        let mut target_devs = BTreeSet::new();
        for &ns in &scope.full {
            let Some(&(id, owner)) = pass.ids.get(&ns) else {
                return;
            };
            match statmount::read_table(id) {
                Ok(table) => {
                    self.support.statmount = Some(true);
                    for m in &table {
                        host_devs.insert(m.dev);
                        if (scope.target)(&m.mount_point) {
                            target_devs.insert(m.dev);
                        }
                    }
                    pass.store(ns, table, TableSource::Statmount, owner);
                    // Alive by the walk, even if no process of it is seen.
                    if let Some(g) = pass.groups.get_mut(&ns) {
                        g.seen = true;
                    }
                    pass.stats.tables.push(TableRead::Statmount { ns });
                }
                Err(err) => {
                    if sys::is_unsupported(&err) {
                        self.support.statmount = Some(false);
                    }
                    tracing::debug!(ns, %err, "scoped scan: host table unreadable by id, reading every table whole");
                    return;
                }
            }
        }
        pass.scoped = Some(Scoped {
            scope: Arc::clone(scope),
            host_devs,
            target_devs,
        });
    }

    /// Every mount namespace, if this kernel can list them.
    fn walk_namespaces(&mut self, owner: bool) -> Option<Vec<Walked>> {
        match walk(owner) {
            Ok(walked) => {
                self.support.ns_walk = Some(true);
                Some(walked)
            }
            Err(err) => {
                if sys::is_unsupported(&err) || err.raw_os_error() == Some(libc::EPERM) {
                    self.support.ns_walk = Some(false);
                }
                tracing::debug!(%err, "no mount namespace walk");
                None
            }
        }
    }

    fn read_processless(&mut self, pass: &mut Pass<'_>, ns: NsId) {
        let mut last_err: Option<String> = None;
        // Paths to the namespace file, through a process that sees the
        // nsfs mount: the one whose table shows it first, then the others.
        let paths: Vec<PathBuf> = pass
            .nsfs
            .get(&ns)
            .into_iter()
            .flatten()
            .flat_map(|m| {
                let g = pass.groups.get(&m.in_ns);
                let reader = g.and_then(|g| g.reader);
                let others = g.into_iter().flat_map(|g| g.members.iter().map(|p| p.pid));
                reader
                    .into_iter()
                    .chain(others)
                    .map(|pid| through_root(pid, &m.path))
            })
            .collect();

        let mut id = pass.groups.get(&ns).and_then(|g| g.mnt_ns_id);
        let mut owner = None;
        if id.is_none() {
            // Kernels with statmount but no walk (6.11): the id via the file.
            for path in &paths {
                match open_ns_file(path, ns) {
                    Ok(fd) => {
                        id = sys::mntns_id(fd.as_fd()).ok();
                        if pass.opts.namespace_owner {
                            owner = owner_fd(&fd);
                        }
                        break;
                    }
                    Err(err) => last_err = Some(format!("{}: {err}", path.display())),
                }
            }
        }

        if let Some(id) = id.filter(|_| self.support.statmount != Some(false)) {
            match pass.read_by_id(ns, id) {
                Ok(table) => {
                    self.support.statmount = Some(true);
                    pass.store(ns, table, TableSource::Statmount, owner);
                    pass.stats.tables.push(TableRead::Statmount { ns });
                    return;
                }
                // Found by the walk, died since: not alive after all.
                Err(err) if sys::is_gone(&err) && !pass.nsfs.contains_key(&ns) => {
                    pass.groups.remove(&ns);
                    return;
                }
                Err(err) => {
                    if sys::is_unsupported(&err) {
                        self.support.statmount = Some(false);
                    }
                    last_err = Some(format!("statmount: {err}"));
                }
            }
        }

        if pass.opts.nsenter_fallback {
            for path in &paths {
                // Check it is that namespace before entering anything.
                if let Err(err) = open_ns_file(path, ns) {
                    last_err = Some(format!("{}: {err}", path.display()));
                    continue;
                }
                match nsenter::read_mountinfo(path) {
                    Ok(text) => {
                        let table = parse_table(ns, &text, &mut pass.stats);
                        pass.store(ns, table, TableSource::Mountinfo, owner);
                        pass.stats.tables.push(TableRead::Nsenter {
                            ns,
                            path: path.clone(),
                        });
                        return;
                    }
                    Err(err) => last_err = Some(format!("nsenter: {err}")),
                }
            }
        }
        let why = last_err.unwrap_or_else(|| "no statmount and no nsfs mount to enter".into());
        tracing::debug!(ns, why, "process-less namespace not read");
        pass.stats.unread.push((ns, why));
    }
}

/// The state of one scan in progress.
struct Pass<'a> {
    opts: &'a ScanOptions,
    targets: Option<&'a BTreeSet<NsId>>,
    read_all: bool,
    groups: BTreeMap<NsId, Group>,
    /// The namespaces the walk found, by inode: their 64-bit ids and owners.
    ids: BTreeMap<NsId, (u64, Option<u64>)>,
    /// Set when a scoped scan could read its host tables by id.
    scoped: Option<Scoped>,
    /// Devices of the mounts a scoped read left out: still "shown" to pins.
    left_out: BTreeSet<Dev>,
    /// Namespaces whose tables another thread is reading.
    prefetching: BTreeSet<NsId>,
    /// Process details are read after the walk, only for processes a
    /// finding may name (a scoped scan: most processes hold nothing that
    /// concerns the target, and details are most of a process's cost).
    late_details: bool,
    candidates: Vec<Candidate>,
    /// nsfs mounts by the namespace they pin.
    nsfs: BTreeMap<NsId, Vec<NsfsMount>>,
    stats: ScanStats,
}

impl Pass<'_> {
    /// Whether `ns` goes into the snapshot.
    fn keeps(&self, ns: NsId) -> bool {
        self.targets.is_none_or(|t| t.contains(&ns))
    }

    /// Whether `ns`'s table is read.
    fn wants(&self, ns: NsId) -> bool {
        self.read_all || self.keeps(ns)
    }

    fn store(&mut self, ns: NsId, table: Vec<MountEntry>, source: TableSource, owner: Option<u64>) {
        let g = self.groups.entry(ns).or_default();
        g.table = Some((table, source));
        g.user_ns = g.user_ns.or(owner);
    }

    /// A table by listmount/statmount: in part when the scan is scoped and
    /// `ns` is not a host namespace, whole otherwise.
    fn read_by_id(&mut self, ns: NsId, id: u64) -> io::Result<Vec<MountEntry>> {
        let read = read_by_id(self.scoped.as_ref(), ns, id)?;
        Ok(self.count_read(read))
    }

    /// The table of a read by id; a partial one is counted, and the devices
    /// it left out still count as shown.
    fn count_read(
        &mut self,
        (table, left_out): (Vec<MountEntry>, Option<Vec<Dev>>),
    ) -> Vec<MountEntry> {
        if let Some(devs) = left_out {
            self.left_out.extend(devs);
            self.stats.partial_tables += 1;
        }
        table
    }

    /// Details of the members of the namespaces a finding about the target
    /// may name: those holding a mount of one of the target's filesystems,
    /// known by a host mount at a target path or, for one the host no
    /// longer shows, by a copy at a target path. (A container namespace's
    /// own proc, sysfs and devpts are not the host's either, but concern
    /// no target.) Pinning processes get theirs with the pins.
    fn fill_named_details(&mut self, ticks_per_second: u64) {
        let Some(s) = &self.scoped else { return };
        let mut devs = s.target_devs.clone();
        for (ns, g) in &self.groups {
            if let Some((table, _)) = g.table.as_ref().filter(|_| !s.is_host(ns)) {
                devs.extend(
                    table
                        .iter()
                        .filter(|m| {
                            !s.host_devs.contains(&m.dev) && (s.scope.target)(&m.mount_point)
                        })
                        .map(|m| m.dev),
                );
            }
        }
        let mut named: Vec<&mut ProcessInfo> = Vec::new();
        for (ns, g) in self.groups.iter_mut() {
            let holds = !s.is_host(ns)
                && g.table
                    .as_ref()
                    .is_some_and(|(t, _)| t.iter().any(|m| devs.contains(&m.dev)));
            if holds {
                named.extend(g.members.iter_mut());
            }
        }
        on_two_threads(&mut named, |p| fill_details_again(p, ticks_per_second));
    }

    fn has_table(&self, ns: NsId) -> bool {
        self.groups.get(&ns).is_some_and(|g| g.table.is_some())
    }

    fn add_walked(&mut self, walked: Vec<Walked>) {
        self.stats.alive_complete = true;
        for w in walked {
            let g = self.groups.entry(w.ino).or_default();
            g.mnt_ns_id = Some(w.id);
            g.user_ns = g.user_ns.or(w.user_ns);
        }
    }

    /// nsfs mounts in the tables read so far name namespaces too (alive by
    /// definition: the mount holds them), and say where they are pinned.
    fn add_nsfs_targets(&mut self) {
        for (&ns, group) in &self.groups {
            if let Some((table, _)) = &group.table {
                for (target, mount) in nsfs_mounts(ns, table) {
                    self.nsfs.entry(target).or_default().push(mount);
                }
            }
        }
        for &target in self.nsfs.keys() {
            self.groups.entry(target).or_default();
        }
    }

    fn note_unread(&mut self) {
        for (&ns, g) in &self.groups {
            let noted = self.stats.unread.iter().any(|(u, _)| *u == ns);
            if g.table.is_some() || noted || !(self.read_all || self.keeps(ns)) {
                continue;
            }
            let why = if !g.members.is_empty() || !g.chrooted.is_empty() {
                "every member that could show it exited"
            } else if !self.opts.processless_tables {
                "process-less tables not requested"
            } else {
                "no process in it and no way to read it on this kernel"
            };
            self.stats.unread.push((ns, why.to_string()));
        }
    }
}

/// A table by id: in part when the scan is scoped and `ns` is not a host
/// namespace (then with the devices of every mount, read or not), whole
/// otherwise.
fn read_by_id(
    scoped: Option<&Scoped>,
    ns: NsId,
    id: u64,
) -> io::Result<(Vec<MountEntry>, Option<Vec<Dev>>)> {
    match scoped.filter(|s| !s.is_host(&ns)) {
        None => Ok((statmount::read_table(id)?, None)),
        Some(s) => {
            let (table, devs) = statmount::read_table_scoped(id, |dev| s.concerns(dev))?;
            Ok((table, Some(devs)))
        }
    }
}

/// `each` over `items` on this thread and one more (`check`'s late reads:
/// independent per process, and `check` has the machine's cores to itself).
fn on_two_threads<T: Send>(items: &mut [T], each: impl Fn(&mut T) + Sync) {
    if items.len() < 8 {
        items.iter_mut().for_each(&each);
        return;
    }
    let (a, b) = items.split_at_mut(items.len() / 2);
    std::thread::scope(|threads| {
        threads.spawn(|| a.iter_mut().for_each(&each));
        b.iter_mut().for_each(&each);
    });
}

/// Process details read after the walk, if it is still the same process
/// (with its comm and start time, if the walk did not read them).
fn fill_details_again(info: &mut ProcessInfo, ticks_per_second: u64) {
    let Ok(handle) = ProcHandle::open(info.pid) else {
        return;
    };
    if handle
        .basics(ticks_per_second)
        .is_ok_and(|b| b.complete(info))
    {
        handle.fill_details(info);
    }
}

/// `/proc/PID/root/<path>`: a path as that process sees it.
fn through_root(pid: Pid, path: &PathBytes) -> PathBuf {
    let mut bytes = format!("/proc/{pid}/root").into_bytes();
    bytes.extend_from_slice(path.as_bytes());
    PathBuf::from(OsString::from_vec(bytes))
}

fn parse_table(ns: NsId, text: &[u8], stats: &mut ScanStats) -> Vec<MountEntry> {
    let parsed = mountinfo::parse(text);
    for err in parsed.errors.iter().cloned() {
        stats.malformed_lines += 1;
        tracing::warn!(ns, %err, "malformed mountinfo line skipped");
        if stats.line_errors.len() < MAX_LINE_ERRORS {
            stats.line_errors.push((ns, err));
        }
    }
    parsed.into_entries()
}

/// `(target namespace, where)` for every nsfs mount of a mount namespace
/// in `table` (root `mnt:[INUM]`; other namespace types are ignored).
fn nsfs_mounts(in_ns: NsId, table: &[MountEntry]) -> Vec<(NsId, NsfsMount)> {
    table
        .iter()
        .filter(|m| m.fstype == "nsfs")
        .filter_map(|m| {
            let target = parse_ns_link(m.root.as_bytes(), b"mnt")?;
            Some((
                target,
                NsfsMount {
                    in_ns,
                    path: m.mount_point.clone(),
                },
            ))
        })
        .collect()
}

/// Opens an nsfs file and checks it is mount namespace `ns` (an nsfs
/// file's inode number is the namespace's).
fn open_ns_file(path: &std::path::Path, ns: NsId) -> io::Result<std::os::fd::OwnedFd> {
    let fd = sys::open(path, libc::O_RDONLY)?;
    let st = sys::fstat(fd.as_fd())?;
    if st.st_ino != ns {
        return Err(io::Error::other(format!(
            "inode {} is not namespace {ns}",
            st.st_ino
        )));
    }
    Ok(fd)
}

fn owner_of(handle: &ProcHandle) -> Option<u64> {
    owner_fd(&handle.open_mnt_ns().ok()?)
}

fn owner_fd(ns: &std::os::fd::OwnedFd) -> Option<u64> {
    let user = sys::owning_userns(ns.as_fd()).ok()?;
    sys::fstat(user.as_fd()).ok().map(|st| st.st_ino)
}

/// A namespace found by the walk.
struct Walked {
    ino: NsId,
    id: u64,
    user_ns: Option<u64>,
}

/// Every mount namespace, by `NS_MNT_GET_NEXT`/`PREV` from our own.
fn walk(owner: bool) -> io::Result<Vec<Walked>> {
    // Far above any real count; guards against a kernel bug looping us.
    const LIMIT: usize = 1 << 20;
    let start = sys::open(std::path::Path::new("/proc/self/ns/mnt"), libc::O_RDONLY)?;
    let describe = |fd: &std::os::fd::OwnedFd, id: u64| -> io::Result<Walked> {
        Ok(Walked {
            ino: sys::fstat(fd.as_fd())?.st_ino,
            id,
            user_ns: if owner { owner_fd(fd) } else { None },
        })
    };
    let mut out = vec![describe(&start, sys::mntns_id(start.as_fd())?)?];
    for previous in [false, true] {
        let mut cur = start.try_clone()?;
        for step in 0..LIMIT {
            match sys::mntns_step(cur.as_fd(), previous) {
                Ok((fd, info)) => {
                    out.push(describe(&fd, info.mnt_ns_id)?);
                    cur = fd;
                }
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => break,
                // Unsupported shows on the first step; later errors end
                // this direction with what we have.
                Err(err) if step == 0 => return Err(err),
                Err(err) => {
                    tracing::debug!(%err, "mount namespace walk stopped early");
                    break;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsfs_mounts_of_mount_namespaces_only() {
        let table = mountinfo::parse(
            b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
              2 1 0:4 mnt:[4026532301] /run/a\\040b rw - nsfs nsfs rw\n\
              3 1 0:4 net:[4026532000] /run/netns/x rw - nsfs nsfs rw\n",
        )
        .into_entries();
        assert_eq!(
            nsfs_mounts(7, &table),
            vec![(
                4_026_532_301,
                NsfsMount {
                    in_ns: 7,
                    path: PathBytes::from("/run/a b")
                }
            )]
        );
    }

    #[test]
    fn scans_this_machine_unprivileged_parts() {
        let mut scanner = Scanner::new();
        let out = scanner.scan(&ScanOptions::default()).unwrap();
        let snap = &out.snapshot;
        let me = snap.self_ns.unwrap();
        let mine = snap.namespaces.iter().find(|n| n.ns == me).unwrap();
        assert!(mine.members.iter().any(|p| p.pid == std::process::id()));
        assert!(!mine.mounts.is_empty());
        assert!(snap.alive.as_ref().unwrap().contains(&me));
        // Each namespace read at most once.
        let mut read: Vec<NsId> = out
            .stats
            .tables
            .iter()
            .map(|t| match t {
                TableRead::Mountinfo { ns, .. } | TableRead::Statmount { ns } => *ns,
                TableRead::Nsenter { ns, .. } => *ns,
            })
            .collect();
        let n = read.len();
        read.sort_unstable();
        read.dedup();
        assert_eq!(read.len(), n);
        assert!(snap.taken_at > 0);
    }

    #[test]
    fn a_cancelled_scan_ends_cancelled_and_an_uncancelled_one_does_not() {
        let flag = Arc::new(AtomicBool::new(true));
        let opts = ScanOptions::default().cancelled_by(flag.clone());
        let mut scanner = Scanner::new();
        assert!(matches!(scanner.scan(&opts), Err(ScanError::Cancelled)));
        flag.store(false, Ordering::Relaxed);
        let out = scanner.scan(&opts).expect("not cancelled");
        assert!(out.stats.processes > 0);
    }

    #[test]
    fn targeted_scan_reads_only_targets() {
        let mut scanner = Scanner::new();
        let opts = ScanOptions {
            walk_namespaces: false,
            ..ScanOptions::default()
        };
        let me = ProcHandle::myself().unwrap().mnt_ns().unwrap();
        let out = scanner.scan_namespaces(&[me], &opts).unwrap();
        assert_eq!(out.snapshot.namespaces.len(), 1);
        assert_eq!(out.snapshot.namespaces[0].ns, me);
        assert!(out.stats.tables.len() == 1);
        let none = scanner.scan_namespaces(&[], &opts).unwrap();
        assert!(none.snapshot.namespaces.is_empty() && none.stats.tables.is_empty());
        assert!(none.snapshot.alive.unwrap().contains(&me));
    }
}
