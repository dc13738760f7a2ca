//! Carrying out a plan: each step checked just before it runs (is the
//! holder still the same process in the same namespace, is the copy still
//! there, is it still the same filesystem), run, and recorded with its
//! outcome. The operating system is behind [`System`], so every path
//! (vanished targets, exited holders, EINVAL, EPERM) is tested without
//! root; `os.rs` is the real one.

use std::io;

use monitor_model::{Dev, NsId, PathBytes, Pid};
use serde::Serialize;

use super::plan::{Action, Enter, Item, When};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{op}: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("pid {0} has exited")]
    ProcessGone(Pid),
    #[error("pid {pid} is now in mnt ns {now}, not {expected} (a reused pid?)")]
    NamespaceChanged { pid: Pid, expected: NsId, now: NsId },
    #[error("{file} is mnt ns {now}, not {expected}")]
    WrongNamespace {
        file: PathBytes,
        expected: NsId,
        now: NsId,
    },
    #[error("nothing is mounted at {0} there any more")]
    NotMounted(PathBytes),
    #[error("{path} is now a different filesystem ({found}, expected {expected})")]
    DevMismatch {
        path: PathBytes,
        expected: Dev,
        found: Dev,
    },
    #[error("refused: {0}")]
    Refused(String),
    #[error("timed out after {0} s")]
    Timeout(u64),
}

impl OpError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            OpError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The target is gone: nothing left to do, not a failure.
    pub fn is_gone(&self) -> bool {
        matches!(self, OpError::ProcessGone(_) | OpError::NotMounted(_))
            || self.errno() == Some(libc::ESRCH)
    }
}

/// What a kill did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Killed {
    pub terminated: Vec<Pid>,
    pub killed: Vec<Pid>,
    /// Already gone when the signal was sent.
    pub gone: Vec<Pid>,
    /// Still there after SIGKILL (uninterruptible sleep).
    pub survivors: Vec<Pid>,
}

/// The operations a fix needs from the system.
pub trait System {
    /// Whether `pid` exists and is in mount namespace `ns`.
    fn process_in_ns(&self, pid: Pid, ns: NsId) -> Result<(), OpError>;
    /// `umount2(path, MNT_DETACH if lazy)` inside the namespace, after
    /// checking that `path` there is the filesystem `dev`.
    fn umount_in(
        &self,
        ns: NsId,
        enter: &Enter,
        path: &PathBytes,
        dev: Option<Dev>,
        lazy: bool,
    ) -> Result<(), OpError>;
    /// Whether the copy (mount point `path` of filesystem `dev`) is still in
    /// the namespace. A vanished holder counts as no copy.
    fn copy_present(
        &self,
        ns: NsId,
        enter: &Enter,
        path: &PathBytes,
        dev: Option<Dev>,
    ) -> Result<bool, OpError>;
    /// Whether this (the host's) namespace has something mounted at `path`.
    fn host_has_mount(&self, path: &PathBytes) -> Result<bool, OpError>;
    /// `rmdir` then `mkdir` with the same mode and owner.
    fn remove_mountpoint(&self, path: &PathBytes) -> Result<(), OpError>;
    /// Every process in mount namespace `ns` now.
    fn ns_members(&self, ns: NsId) -> Result<Vec<Pid>, OpError>;
    /// Whether `pid`'s cwd, root or an open file is on `dev`.
    fn pinned_by(&self, pid: Pid, dev: Dev) -> Result<bool, OpError>;
    /// SIGTERM, a grace period, SIGKILL.
    fn kill(&self, pids: &[Pid]) -> Result<Killed, OpError>;
    /// `umount2(file, MNT_DETACH)` in this namespace.
    fn umount_host_detach(&self, file: &PathBytes) -> Result<(), OpError>;
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Dry run: what would be done.
    Planned,
    Done,
    /// The target was gone already (holder exited, copy unmounted).
    AlreadyReleased,
    /// A condition was not met (`IfStillHeld` with nothing held).
    Skipped,
    Failed,
}

/// One step's outcome, for the output, the log and the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    /// The finding (`ML-N`) the step belongs to.
    pub finding: String,
    /// 1-based, per finding, as printed in the plan.
    pub n: usize,
    pub text: String,
    pub action: Action,
    pub status: Status,
    /// What happened, in words (the error for `failed`).
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// Processes that are never signalled: init, ourselves, our parent chain.
pub fn protected(pid: Pid, me: Pid, ancestors: &[Pid]) -> bool {
    pid <= 1 || pid == me || ancestors.contains(&pid)
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EINVAL => "EINVAL",
        libc::EBUSY => "EBUSY",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ESRCH => "ESRCH",
        _ => "error",
    }
}

/// Whether the copy (or pin) a conditional step is about is still there.
fn still_held(sys: &dyn System, item: &Item, action: &Action) -> Result<bool, OpError> {
    match action {
        Action::RemoveMountpoint { .. } => {
            for s in &item.steps {
                if let Action::Umount {
                    mnt_ns,
                    enter,
                    path,
                    dev,
                } = &s.action
                {
                    if sys.copy_present(*mnt_ns, enter, path, *dev)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
        Action::Kill {
            pids,
            mnt_ns: Some(ns),
            copy_at: Some(path),
            dev,
            ..
        } => {
            for &pid in pids {
                let enter = Enter::Process {
                    pid,
                    comm: String::new(),
                };
                if sys.copy_present(*ns, &enter, path, *dev)? {
                    return Ok(true);
                }
            }
            // After a lazy umount the copy is gone from the table, but a
            // member whose cwd (or file) was inside still keeps the
            // filesystem alive.
            if let Some(dev) = dev {
                for pid in sys.ns_members(*ns)? {
                    if sys.pinned_by(pid, *dev)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
        Action::Kill {
            pids,
            dev: Some(dev),
            ..
        } => {
            for &pid in pids {
                if sys.pinned_by(pid, *dev)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Action::Kill { .. } => Ok(true),
        Action::UmountNsfs {
            file,
            mnt_ns,
            copy_at,
            dev,
        } => sys.copy_present(*mnt_ns, &Enter::Nsfs { file: file.clone() }, copy_at, *dev),
        Action::Umount { .. } => Ok(true),
    }
}

/// Runs one action; `Ok((status, detail))` or the error.
fn run(
    sys: &dyn System,
    action: &Action,
    me: Pid,
    ancestors: &[Pid],
) -> Result<(Status, String), OpError> {
    match action {
        Action::Umount {
            mnt_ns,
            enter,
            path,
            dev,
        } => {
            if let Enter::Process { pid, .. } = enter {
                sys.process_in_ns(*pid, *mnt_ns)?;
            }
            match sys.umount_in(*mnt_ns, enter, path, *dev, false) {
                Ok(()) => Ok((Status::Done, format!("unmounted {path} in mnt ns {mnt_ns}"))),
                Err(e) if e.errno() == Some(libc::EBUSY) => {
                    sys.umount_in(*mnt_ns, enter, path, *dev, true)?;
                    Ok((
                        Status::Done,
                        format!("{path} was busy in mnt ns {mnt_ns} (EBUSY): unmounted lazily (MNT_DETACH); the mount is gone, the filesystem lives until nothing uses it"),
                    ))
                }
                Err(e) if e.errno() == Some(libc::EINVAL) => Err(OpError::Refused(format!(
                    "umount in mnt ns {mnt_ns} failed with EINVAL: the copy is locked (inherited into a user namespace) or no longer a mount point"
                ))),
                Err(e) => Err(e),
            }
        }
        Action::RemoveMountpoint { path } => {
            if sys.host_has_mount(path)? {
                return Err(OpError::Refused(format!(
                    "the host has {path} mounted (again): removing it would detach the runtime's own mount"
                )));
            }
            sys.remove_mountpoint(path)?;
            Ok((
                Status::Done,
                format!("removed {path} (detaching every copy) and made it again"),
            ))
        }
        Action::Kill { pids, mnt_ns, .. } => {
            let mut targets: Vec<Pid> = match mnt_ns {
                Some(ns) => sys.ns_members(*ns)?,
                None => pids.clone(),
            };
            let refused: Vec<Pid> = targets
                .iter()
                .copied()
                .filter(|&p| protected(p, me, ancestors))
                .collect();
            targets.retain(|&p| !protected(p, me, ancestors));
            if targets.is_empty() {
                if !refused.is_empty() {
                    return Err(OpError::Refused(format!(
                        "will not signal {refused:?} (init, mountleak itself or its parents)"
                    )));
                }
                return Ok((Status::AlreadyReleased, "no process left to stop".into()));
            }
            let k = sys.kill(&targets)?;
            let mut parts = Vec::new();
            if !k.terminated.is_empty() {
                parts.push(format!("stopped by SIGTERM: {:?}", k.terminated));
            }
            if !k.killed.is_empty() {
                parts.push(format!("killed by SIGKILL: {:?}", k.killed));
            }
            if !k.gone.is_empty() {
                parts.push(format!("already gone: {:?}", k.gone));
            }
            if !refused.is_empty() {
                parts.push(format!("not signalled (protected): {refused:?}"));
            }
            if !k.survivors.is_empty() {
                return Err(OpError::Refused(format!(
                    "{}; still alive after SIGKILL: {:?}",
                    parts.join("; "),
                    k.survivors
                )));
            }
            Ok((Status::Done, parts.join("; ")))
        }
        Action::UmountNsfs { file, mnt_ns, .. } => {
            sys.umount_host_detach(file)?;
            Ok((
                Status::Done,
                format!("unmounted the nsfs mount {file}: mnt ns {mnt_ns} is released"),
            ))
        }
    }
}

/// Carries out every step of `items` (or, for a dry run, records them as
/// planned). `log` sees each record as soon as it exists, so nothing done
/// goes unreported even if a later step panics or the process is killed.
pub fn execute(
    items: &[Item],
    sys: &dyn System,
    dry_run: bool,
    me: Pid,
    ancestors: &[Pid],
    log: &mut dyn FnMut(&Record),
) -> Vec<Record> {
    let mut out = Vec::new();
    for item in items {
        for (i, step) in item.steps.iter().enumerate() {
            let mut rec = Record {
                finding: item.id.clone(),
                n: i + 1,
                text: step.text.clone(),
                action: step.action.clone(),
                status: Status::Planned,
                detail: String::new(),
                errno: None,
            };
            if !dry_run {
                let go = match step.when {
                    When::Always => Ok(true),
                    When::IfStillHeld => still_held(sys, item, &step.action),
                };
                match go {
                    Ok(false) => {
                        rec.status = Status::Skipped;
                        rec.detail = "nothing left to release".into();
                    }
                    Err(e) if e.is_gone() => {
                        rec.status = Status::Skipped;
                        rec.detail = format!("nothing left to release ({e})");
                    }
                    Err(e) => {
                        rec.status = Status::Failed;
                        rec.errno = e.errno();
                        rec.detail = format!("could not tell whether it is still held: {e}");
                    }
                    Ok(true) => match run(sys, &step.action, me, ancestors) {
                        Ok((status, detail)) => {
                            rec.status = status;
                            rec.detail = detail;
                        }
                        Err(e) if e.is_gone() => {
                            rec.status = Status::AlreadyReleased;
                            rec.detail = format!("already released: {e}");
                        }
                        Err(e) => {
                            rec.status = Status::Failed;
                            rec.errno = e.errno();
                            rec.detail = match e.errno() {
                                Some(n) => format!("{e} ({})", errno_name(n)),
                                None => e.to_string(),
                            };
                        }
                    },
                }
            }
            log(&rec);
            out.push(rec);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::fix::plan::Step;
    use monitor_model::finding::FindingKind;

    /// A scripted system: copies per namespace, processes, and errors to
    /// return; every call is logged.
    #[derive(Default)]
    struct Fake {
        /// ns -> mounted paths.
        copies: RefCell<BTreeMap<NsId, Vec<String>>>,
        /// pid -> ns.
        procs: RefCell<BTreeMap<Pid, NsId>>,
        /// errno for umount without/with MNT_DETACH.
        umount_errno: Option<i32>,
        lazy_errno: Option<i32>,
        host_mounted: bool,
        rmdir_errno: Option<i32>,
        calls: RefCell<Vec<String>>,
        /// The holder exits right before the umount is attempted.
        exit_before_umount: bool,
    }

    impl System for Fake {
        fn process_in_ns(&self, pid: Pid, ns: NsId) -> Result<(), OpError> {
            if self.exit_before_umount {
                self.procs.borrow_mut().remove(&pid);
                self.copies.borrow_mut().remove(&ns);
            }
            match self.procs.borrow().get(&pid) {
                None => Err(OpError::ProcessGone(pid)),
                Some(&now) if now != ns => Err(OpError::NamespaceChanged {
                    pid,
                    expected: ns,
                    now,
                }),
                Some(_) => Ok(()),
            }
        }
        fn umount_in(
            &self,
            ns: NsId,
            _e: &Enter,
            path: &PathBytes,
            _d: Option<Dev>,
            lazy: bool,
        ) -> Result<(), OpError> {
            self.calls.borrow_mut().push(format!(
                "umount{} {ns} {path}",
                if lazy { " -l" } else { "" }
            ));
            let err = if lazy {
                self.lazy_errno
            } else {
                self.umount_errno
            };
            if let Some(e) = err {
                return Err(OpError::Os {
                    op: "umount2",
                    source: io::Error::from_raw_os_error(e),
                });
            }
            let mut c = self.copies.borrow_mut();
            let list = c.entry(ns).or_default();
            if !list.iter().any(|p| p.as_str() == path.lossy()) {
                return Err(OpError::NotMounted(path.clone()));
            }
            list.retain(|p| p.as_str() != path.lossy());
            Ok(())
        }
        fn copy_present(
            &self,
            ns: NsId,
            _e: &Enter,
            path: &PathBytes,
            _d: Option<Dev>,
        ) -> Result<bool, OpError> {
            Ok(self
                .copies
                .borrow()
                .get(&ns)
                .is_some_and(|l| l.iter().any(|p| p.as_str() == path.lossy())))
        }
        fn host_has_mount(&self, _p: &PathBytes) -> Result<bool, OpError> {
            Ok(self.host_mounted)
        }
        fn remove_mountpoint(&self, path: &PathBytes) -> Result<(), OpError> {
            self.calls.borrow_mut().push(format!("rmdir {path}"));
            if let Some(e) = self.rmdir_errno {
                return Err(OpError::Os {
                    op: "rmdir",
                    source: io::Error::from_raw_os_error(e),
                });
            }
            for l in self.copies.borrow_mut().values_mut() {
                l.retain(|p| p.as_str() != path.lossy());
            }
            Ok(())
        }
        fn ns_members(&self, ns: NsId) -> Result<Vec<Pid>, OpError> {
            Ok(self
                .procs
                .borrow()
                .iter()
                .filter(|(_, n)| **n == ns)
                .map(|(p, _)| *p)
                .collect())
        }
        fn pinned_by(&self, pid: Pid, _dev: Dev) -> Result<bool, OpError> {
            Ok(self.procs.borrow().contains_key(&pid))
        }
        fn kill(&self, pids: &[Pid]) -> Result<Killed, OpError> {
            self.calls.borrow_mut().push(format!("kill {pids:?}"));
            let mut k = Killed::default();
            for p in pids {
                if let Some(ns) = self.procs.borrow_mut().remove(p) {
                    self.copies.borrow_mut().remove(&ns);
                    k.terminated.push(*p);
                } else {
                    k.gone.push(*p);
                }
            }
            Ok(k)
        }
        fn umount_host_detach(&self, file: &PathBytes) -> Result<(), OpError> {
            self.calls.borrow_mut().push(format!("umount -l {file}"));
            Ok(())
        }
    }

    const P: &str = "/var/lib/docker/overlay2/a/merged";
    const NS: NsId = 40;

    fn umount_step(pid: Pid) -> Step {
        Step {
            action: Action::Umount {
                mnt_ns: NS,
                enter: Enter::Process {
                    pid,
                    comm: "sleep".into(),
                },
                path: P.into(),
                dev: None,
            },
            when: When::Always,
            text: "umount".into(),
        }
    }

    fn item(steps: Vec<Step>) -> Item {
        Item {
            id: "ML-1".into(),
            kind: FindingKind::Leak,
            summary: String::new(),
            path: P.into(),
            dev: None,
            fstype: "overlay".into(),
            steps,
            not_done: Vec::new(),
        }
    }

    fn rmdir(when: When) -> Step {
        Step {
            action: Action::RemoveMountpoint { path: P.into() },
            when,
            text: "rmdir".into(),
        }
    }

    fn kill(pid: Pid) -> Step {
        Step {
            action: Action::Kill {
                pids: vec![pid],
                mnt_ns: Some(NS),
                why: String::new(),
                copy_at: Some(P.into()),
                dev: None,
            },
            when: When::IfStillHeld,
            text: "kill".into(),
        }
    }

    fn fake() -> Fake {
        let f = Fake::default();
        f.copies.borrow_mut().insert(NS, vec![P.into()]);
        f.procs.borrow_mut().insert(7, NS);
        f
    }

    fn statuses(r: &[Record]) -> Vec<Status> {
        r.iter().map(|r| r.status.clone()).collect()
    }

    fn go(items: &[Item], sys: &Fake) -> Vec<Record> {
        let mut logged = 0;
        let r = execute(items, sys, false, 1000, &[999], &mut |_| logged += 1);
        assert_eq!(logged, r.len(), "every record is logged as it happens");
        r
    }

    #[test]
    fn a_dry_run_calls_nothing() {
        let sys = fake();
        let r = execute(
            &[item(vec![
                umount_step(7),
                rmdir(When::IfStillHeld),
                kill(7),
            ])],
            &sys,
            true,
            1,
            &[],
            &mut |_| {},
        );
        assert_eq!(statuses(&r), vec![Status::Planned; 3]);
        assert!(sys.calls.borrow().is_empty());
    }

    #[test]
    fn unmount_then_nothing_else_is_needed() {
        let sys = fake();
        let r = go(
            &[item(vec![
                umount_step(7),
                rmdir(When::IfStillHeld),
                kill(7),
            ])],
            &sys,
        );
        assert_eq!(
            statuses(&r),
            vec![Status::Done, Status::Skipped, Status::Skipped]
        );
        assert_eq!(*sys.calls.borrow(), vec![format!("umount 40 {P}")]);
    }

    #[test]
    fn ebusy_goes_lazy() {
        let mut sys = fake();
        sys.umount_errno = Some(libc::EBUSY);
        let r = go(&[item(vec![umount_step(7)])], &sys);
        assert_eq!(r[0].status, Status::Done);
        assert!(r[0].detail.contains("lazily"), "{}", r[0].detail);
        assert_eq!(sys.calls.borrow().len(), 2);
    }

    #[test]
    fn einval_falls_back_to_removing_the_directory() {
        let mut sys = fake();
        sys.umount_errno = Some(libc::EINVAL);
        let r = go(
            &[item(vec![
                umount_step(7),
                rmdir(When::IfStillHeld),
                kill(7),
            ])],
            &sys,
        );
        assert_eq!(
            statuses(&r),
            vec![Status::Failed, Status::Done, Status::Skipped]
        );
        assert!(r[0].detail.contains("locked"), "{}", r[0].detail);
    }

    #[test]
    fn rmdir_is_refused_while_the_host_has_the_mount_and_kill_follows() {
        let mut sys = fake();
        sys.umount_errno = Some(libc::EINVAL);
        sys.host_mounted = true;
        let r = go(
            &[item(vec![
                umount_step(7),
                rmdir(When::IfStillHeld),
                kill(7),
            ])],
            &sys,
        );
        assert_eq!(
            statuses(&r),
            vec![Status::Failed, Status::Failed, Status::Done]
        );
        assert!(r[1].detail.contains("host has"), "{}", r[1].detail);
        assert!(!sys.calls.borrow().iter().any(|c| c.starts_with("rmdir")));
        assert_eq!(sys.calls.borrow().last().unwrap(), "kill [7]");
    }

    #[test]
    fn a_holder_that_exits_before_the_umount_is_already_gone() {
        let mut sys = fake();
        sys.exit_before_umount = true;
        let r = go(
            &[item(vec![umount_step(7), rmdir(When::IfStillHeld)])],
            &sys,
        );
        assert_eq!(statuses(&r), vec![Status::AlreadyReleased, Status::Skipped]);
        assert!(r[0].detail.contains("pid 7 has exited"), "{}", r[0].detail);
        assert!(sys.calls.borrow().is_empty());
    }

    #[test]
    fn a_copy_unmounted_by_someone_else_is_already_gone() {
        let sys = fake();
        sys.copies.borrow_mut().insert(NS, Vec::new());
        let r = go(&[item(vec![umount_step(7)])], &sys);
        assert_eq!(r[0].status, Status::AlreadyReleased);
    }

    #[test]
    fn permission_errors_fail_the_step_and_the_rest_still_runs_and_is_reported() {
        let mut sys = fake();
        sys.umount_errno = Some(libc::EPERM);
        sys.rmdir_errno = Some(libc::EACCES);
        let r = go(
            &[item(vec![umount_step(7), rmdir(When::IfStillHeld)])],
            &sys,
        );
        assert_eq!(statuses(&r), vec![Status::Failed, Status::Failed]);
        assert_eq!(r[0].errno, Some(libc::EPERM));
        assert!(r[0].detail.ends_with("(EPERM)"), "{}", r[0].detail);
        assert_eq!(r[1].errno, Some(libc::EACCES));
    }

    #[test]
    fn kills_spare_init_ourselves_and_our_parents() {
        let sys = fake();
        sys.procs.borrow_mut().insert(999, NS);
        sys.procs.borrow_mut().insert(1, NS);
        let mut k = kill(7);
        k.when = When::Always;
        let r = go(&[item(vec![k])], &sys);
        assert_eq!(r[0].status, Status::Done);
        assert_eq!(sys.calls.borrow().last().unwrap(), "kill [7]");
        assert!(r[0].detail.contains("protected"), "{}", r[0].detail);
        assert!(protected(1, 5, &[]) && protected(5, 5, &[]) && protected(4, 5, &[4]));
        assert!(!protected(6, 5, &[4]));
    }
}
