//! The real [`System`]: setns(2) + umount2(2) in a forked child, rmdir and
//! mkdir on the host, signals, /proc reads.
//!
//! Entering a mount namespace is done in a child process forked for the
//! purpose, not with nsenter(1) and not in one of our threads:
//! setns(CLONE_NEWNS) fails with EINVAL in a process whose fs_struct is
//! shared (any multi-threaded process, setns(2)), and the child must not
//! touch the parent's root or cwd. The child only makes async-signal-safe
//! calls on data prepared before the fork, and reports through a pipe.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use monitor_model::{Dev, NsId, PathBytes, Pid};

use super::act::{Killed, OpError, System};
use super::plan::Enter;
use crate::procfs::mountinfo;

/// How long a child in another namespace may take (an umount of a hung
/// network filesystem would otherwise hang fix).
const CHILD_TIMEOUT: Duration = Duration::from_secs(15);
/// Between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
const KILL_WAIT: Duration = Duration::from_secs(3);

/// `umount2(2)`: do not follow a symlink in the last component.
const UMOUNT_NOFOLLOW: libc::c_int = 8;

fn os(op: &'static str, source: io::Error) -> OpError {
    OpError::Os { op, source }
}

fn path_of(p: &PathBytes) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(p.as_bytes()))
}

fn cstring(p: &PathBytes) -> Result<CString, OpError> {
    CString::new(p.as_bytes().to_vec())
        .map_err(|_| OpError::Refused(format!("{p} holds a NUL byte")))
}

fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes().to_vec())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat_ino(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// What the child reports: `[stage, errno, found major, found minor, is a
/// mount point]`.
type Report = [i32; 5];

const STAGE_OK: i32 = 0;
const STAGE_SETNS: i32 = 1;
const STAGE_CHROOT: i32 = 2;
const STAGE_STAT: i32 = 3;
const STAGE_DEV: i32 = 4;
const STAGE_UMOUNT: i32 = 5;

/// What to do once inside.
#[derive(Clone, Copy)]
enum Op {
    /// Only check that `path` is a mount of `dev`.
    Probe,
    Umount(libc::c_int),
}

/// Runs `op` on `path` inside mount namespace `ns`.
fn in_namespace(
    ns: NsId,
    enter: &Enter,
    path: &PathBytes,
    dev: Option<Dev>,
    op: Op,
) -> Result<(), OpError> {
    // Everything the child needs is opened and built here.
    let (ns_fd, root_fd) = match enter {
        Enter::Process { pid, .. } => {
            let link = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
            let fd = open(&link, libc::O_RDONLY).map_err(|e| {
                if gone(&e) {
                    OpError::ProcessGone(*pid)
                } else {
                    os("open /proc/PID/ns/mnt", e)
                }
            })?;
            let now = fstat_ino(&fd).map_err(|e| os("fstat", e))?;
            if now != ns {
                return Err(OpError::NamespaceChanged {
                    pid: *pid,
                    expected: ns,
                    now,
                });
            }
            // The holder's root, for a holder that chrooted: its mountinfo
            // paths are relative to it.
            let root = open(
                Path::new(&format!("/proc/{pid}/root")),
                libc::O_PATH | libc::O_DIRECTORY,
            )
            .map_err(|e| {
                if gone(&e) {
                    OpError::ProcessGone(*pid)
                } else {
                    os("open /proc/PID/root", e)
                }
            })?;
            (fd, Some(root))
        }
        Enter::Nsfs { file } => {
            let fd = open(&path_of(file), libc::O_RDONLY).map_err(|e| os("open nsfs file", e))?;
            let now = fstat_ino(&fd).map_err(|e| os("fstat", e))?;
            if now != ns {
                return Err(OpError::WrongNamespace {
                    file: file.clone(),
                    expected: ns,
                    now,
                });
            }
            (fd, None)
        }
    };
    let target = cstring(path)?;
    let parent = cstring(&path.join(b".."))?;
    let dot = c".";
    let expected = dev.map(|d| (d.major, d.minor));
    let mut pipe = [0 as libc::c_int; 2];
    // SAFETY: a two-int array for pipe2.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os("pipe2", io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors we own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let ns_raw = ns_fd.as_raw_fd();
    let root_raw = root_fd.as_ref().map_or(-1, |f| f.as_raw_fd());
    let wr_raw = wr.as_raw_fd();

    // SAFETY: fork(2). The child below only calls async-signal-safe
    // functions (prctl, setns, fchdir, chroot, stat, umount2, write,
    // _exit) on memory prepared before the fork, and never returns.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(os("fork", io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: see above; every pointer refers to memory that stays
        // valid in the child's copy of the address space.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let mut r: Report = [STAGE_OK, 0, 0, 0, 0];
            let errno = || *libc::__errno_location();
            let mut st: libc::statx = std::mem::zeroed();
            let mut up: libc::statx = std::mem::zeroed();
            let mask = libc::STATX_BASIC_STATS | libc::STATX_MNT_ID;
            if libc::setns(ns_raw, libc::CLONE_NEWNS) != 0 {
                r[0] = STAGE_SETNS;
                r[1] = errno();
            } else if root_raw >= 0
                && (libc::fchdir(root_raw) != 0 || libc::chroot(dot.as_ptr()) != 0)
            {
                r[0] = STAGE_CHROOT;
                r[1] = errno();
            } else if libc::statx(
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                mask,
                &mut st,
            ) != 0
            {
                r[0] = STAGE_STAT;
                r[1] = errno();
            } else {
                // A mount point when `path/..` is on another mount (mount
                // ids, Linux 5.8+; else devices, which miss a bind mount
                // of the same filesystem), or `path` is the root.
                let ids = libc::STATX_MNT_ID;
                let is_mount = libc::statx(libc::AT_FDCWD, parent.as_ptr(), 0, mask, &mut up) != 0
                    || if st.stx_mask & ids != 0 && up.stx_mask & ids != 0 {
                        st.stx_mnt_id != up.stx_mnt_id
                    } else {
                        (st.stx_dev_major, st.stx_dev_minor) != (up.stx_dev_major, up.stx_dev_minor)
                    }
                    || st.stx_ino == up.stx_ino;
                r[4] = i32::from(is_mount);
                let found = (st.stx_dev_major, st.stx_dev_minor);
                if !is_mount || expected.is_some_and(|e| e != found) {
                    r[0] = STAGE_DEV;
                    r[2] = found.0 as i32;
                    r[3] = found.1 as i32;
                } else if let Op::Umount(flags) = op {
                    if libc::umount2(target.as_ptr(), flags | UMOUNT_NOFOLLOW) != 0 {
                        r[0] = STAGE_UMOUNT;
                        r[1] = errno();
                    }
                }
            }
            libc::write(wr_raw, r.as_ptr().cast(), std::mem::size_of::<Report>());
            libc::_exit(0);
        }
    }
    drop(wr);
    drop(ns_fd);
    drop(root_fd);
    wait_child(child)?;
    let mut buf = [0u8; std::mem::size_of::<Report>()];
    // SAFETY: reading into a buffer of the right size from our pipe.
    let n = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n != buf.len() as isize {
        return Err(OpError::Refused(
            "the child in the namespace died before reporting".into(),
        ));
    }
    let mut r: Report = [0; 5];
    for (i, chunk) in buf.chunks_exact(4).enumerate() {
        r[i] = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    let err = |op| os(op, io::Error::from_raw_os_error(r[1]));
    match r[0] {
        STAGE_OK => Ok(()),
        STAGE_SETNS => Err(err("setns")),
        STAGE_CHROOT => Err(err("chroot to the holder's root")),
        STAGE_STAT if r[1] == libc::ENOENT => Err(OpError::NotMounted(path.clone())),
        STAGE_STAT => Err(err("stat")),
        STAGE_DEV if r[4] == 0 => Err(OpError::NotMounted(path.clone())),
        STAGE_DEV => Err(OpError::DevMismatch {
            path: path.clone(),
            expected: dev.unwrap_or_default(),
            found: Dev {
                major: r[2] as u32,
                minor: r[3] as u32,
            },
        }),
        _ => Err(err("umount2")),
    }
}

/// Reaps our child, killing it after [`CHILD_TIMEOUT`].
fn wait_child(child: libc::pid_t) -> Result<(), OpError> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            return Ok(());
        }
        if r < 0 {
            return Err(os("waitpid", io::Error::last_os_error()));
        }
        if Instant::now() >= deadline {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, &mut status, 0);
            }
            return Err(OpError::Timeout(CHILD_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The running system.
pub struct RealSystem;

fn mnt_ns_of(pid: Pid) -> io::Result<NsId> {
    fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| m.ino())
}

/// Whether `pid` is gone or a zombie (a zombie has dropped its namespaces,
/// cwd and files already).
fn dead(pid: Pid) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

fn wait_dead(pids: &[Pid], within: Duration) -> Vec<Pid> {
    let deadline = Instant::now() + within;
    loop {
        let alive: Vec<Pid> = pids.iter().copied().filter(|&p| !dead(p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl System for RealSystem {
    fn process_in_ns(&self, pid: Pid, ns: NsId) -> Result<(), OpError> {
        match mnt_ns_of(pid) {
            Ok(now) if now == ns => Ok(()),
            Ok(now) => Err(OpError::NamespaceChanged {
                pid,
                expected: ns,
                now,
            }),
            Err(e) if gone(&e) => Err(OpError::ProcessGone(pid)),
            Err(e) => Err(os("stat /proc/PID/ns/mnt", e)),
        }
    }

    fn umount_in(
        &self,
        ns: NsId,
        enter: &Enter,
        path: &PathBytes,
        dev: Option<Dev>,
        lazy: bool,
    ) -> Result<(), OpError> {
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        in_namespace(ns, enter, path, dev, Op::Umount(flags))
    }

    fn copy_present(
        &self,
        ns: NsId,
        enter: &Enter,
        path: &PathBytes,
        dev: Option<Dev>,
    ) -> Result<bool, OpError> {
        match enter {
            Enter::Process { pid, .. } => {
                match self.process_in_ns(*pid, ns) {
                    Ok(()) => {}
                    Err(OpError::ProcessGone(_)) | Err(OpError::NamespaceChanged { .. }) => {
                        return Ok(false)
                    }
                    Err(e) => return Err(e),
                }
                let text = match fs::read(format!("/proc/{pid}/mountinfo")) {
                    Ok(t) => t,
                    Err(e) if gone(&e) => return Ok(false),
                    Err(e) => return Err(os("read /proc/PID/mountinfo", e)),
                };
                Ok(mountinfo::parse(&text)
                    .mounts
                    .iter()
                    .any(|m| m.entry.mount_point == *path && dev.is_none_or(|d| d == m.entry.dev)))
            }
            Enter::Nsfs { .. } => match in_namespace(ns, enter, path, dev, Op::Probe) {
                Ok(()) => Ok(true),
                Err(OpError::NotMounted(_)) | Err(OpError::DevMismatch { .. }) => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    fn host_has_mount(&self, path: &PathBytes) -> Result<bool, OpError> {
        let text =
            fs::read("/proc/self/mountinfo").map_err(|e| os("read /proc/self/mountinfo", e))?;
        Ok(mountinfo::parse(&text)
            .mounts
            .iter()
            .any(|m| m.entry.mount_point == *path))
    }

    fn remove_mountpoint(&self, path: &PathBytes) -> Result<(), OpError> {
        let p = path_of(path);
        let meta = fs::symlink_metadata(&p).map_err(|e| os("lstat", e))?;
        if !meta.file_type().is_dir() {
            return Err(OpError::Refused(format!("{path} is not a directory")));
        }
        fs::remove_dir(&p).map_err(|e| os("rmdir", e))?;
        let mode = meta.mode() & 0o7777;
        let again = fs::DirBuilder::new()
            .mode(mode)
            .create(&p)
            .and_then(|()| std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid())))
            .and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(mode)));
        again.map_err(|e| {
            OpError::Refused(format!(
                "{path} was removed (the copies are detached) but could not be made again ({e}): the runtime recreates it on the container's next start"
            ))
        })
    }

    fn ns_members(&self, ns: NsId) -> Result<Vec<Pid>, OpError> {
        let mut out = Vec::new();
        for e in fs::read_dir("/proc").map_err(|e| os("list /proc", e))? {
            let Ok(e) = e else { continue };
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<Pid>().ok()) else {
                continue;
            };
            if mnt_ns_of(pid).is_ok_and(|n| n == ns) && !dead(pid) {
                out.push(pid);
            }
        }
        Ok(out)
    }

    fn pinned_by(&self, pid: Pid, dev: Dev) -> Result<bool, OpError> {
        let want = libc::makedev(dev.major, dev.minor);
        let on = |p: PathBuf| fs::metadata(p).is_ok_and(|m| m.dev() == want);
        if dead(pid) {
            return Ok(false);
        }
        if on(format!("/proc/{pid}/cwd").into()) || on(format!("/proc/{pid}/root").into()) {
            return Ok(true);
        }
        match fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => Ok(fds.filter_map(Result::ok).any(|fd| on(fd.path()))),
            Err(e) if gone(&e) => Ok(false),
            Err(e) => Err(os("list /proc/PID/fd", e)),
        }
    }

    fn kill(&self, pids: &[Pid]) -> Result<Killed, OpError> {
        let mut k = Killed::default();
        let mut sent = Vec::new();
        for &pid in pids {
            // SAFETY: kill(2) on a pid; no memory involved.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } == 0 {
                sent.push(pid);
            } else {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    k.gone.push(pid);
                } else {
                    return Err(os("kill SIGTERM", e));
                }
            }
        }
        let stubborn = wait_dead(&sent, TERM_GRACE);
        k.terminated = sent
            .iter()
            .copied()
            .filter(|p| !stubborn.contains(p))
            .collect();
        for &pid in &stubborn {
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        k.survivors = wait_dead(&stubborn, KILL_WAIT);
        k.killed = stubborn
            .iter()
            .copied()
            .filter(|p| !k.survivors.contains(p))
            .collect();
        Ok(k)
    }

    fn umount_host_detach(&self, file: &PathBytes) -> Result<(), OpError> {
        let c = cstring(file)?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | UMOUNT_NOFOLLOW) } != 0 {
            return Err(os("umount2", io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Our parent chain (never signalled).
pub fn ancestors() -> Vec<Pid> {
    let mut out = Vec::new();
    let mut pid = std::process::id();
    for _ in 0..64 {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            break;
        };
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<Pid>().ok())
            .unwrap_or(0);
        if ppid <= 1 {
            break;
        }
        out.push(ppid);
        pid = ppid;
    }
    out
}

/// Effective capabilities (`CapEff` in /proc/self/status).
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub const CAP_KILL: u32 = 5;
pub const CAP_SYS_CHROOT: u32 = 18;
pub const CAP_SYS_ADMIN: u32 = 21;
