//! One process as /proc shows it: identity, namespace, mount table, and the
//! devices its cwd, root and open files live on.
//!
//! Every read goes through one `O_PATH` fd on `/proc/PID`, so all facts come
//! from the same process even if the pid is reused meanwhile: once the
//! process is gone, reads through the old fd fail with ENOENT/ESRCH instead
//! of reaching the newcomer (proc(5), "/proc/pid").

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use monitor_model::{Dev, NsId, PathBytes, Pid, ProcessInfo};
use procfs::process::Stat;
use procfs::FromRead;

use super::clock;
use super::sys;

/// `PF_KTHREAD` in `/proc/PID/stat` flags (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;

/// An open `/proc/PID` directory.
pub(crate) struct ProcHandle {
    pub pid: Pid,
    dir: OwnedFd,
}

/// What `stat` says, in model units.
pub(crate) struct Basics {
    pub comm: String,
    pub start: u64,
    pub kernel_thread: bool,
}

/// `ProcessInfo::start` of a member whose `stat` a scoped scan has not read
/// (yet): only outside the host namespaces, where every process started
/// after boot.
pub(crate) const START_UNREAD: u64 = 0;

impl Basics {
    /// Puts comm and start into `info` if they were not read; `false` if
    /// they were and `info` is another process (its pid was reused).
    pub fn complete(self, info: &mut ProcessInfo) -> bool {
        if info.start == START_UNREAD {
            info.start = self.start;
            info.comm = self.comm;
            true
        } else {
            info.start == self.start
        }
    }
}

/// The devices a process uses, with where each came from (for pins).
#[derive(Debug, Default, Clone)]
pub(crate) struct DeviceUse {
    pub cwd: Option<Dev>,
    pub root: Option<Dev>,
    /// Every regular-file or directory fd, by fd number.
    pub fds: Vec<(u32, Dev)>,
}

impl DeviceUse {
    /// The distinct fd devices, sorted.
    pub fn fd_devs(&self) -> Vec<Dev> {
        let mut devs: Vec<Dev> = self.fds.iter().map(|&(_, d)| d).collect();
        devs.sort_unstable();
        devs.dedup();
        devs
    }
}

impl ProcHandle {
    pub fn open(pid: Pid) -> io::Result<Self> {
        let path = PathBuf::from(format!("/proc/{pid}"));
        let dir = sys::open(&path, libc::O_PATH | libc::O_DIRECTORY)?;
        Ok(ProcHandle { pid, dir })
    }

    /// The calling process, whatever its pid.
    pub fn myself() -> io::Result<Self> {
        let dir = sys::open(
            std::path::Path::new("/proc/self"),
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        // SAFETY: getpid has no failure mode.
        let pid = unsafe { libc::getpid() } as Pid;
        Ok(ProcHandle { pid, dir })
    }

    fn read(&self, name: &CStr) -> io::Result<Vec<u8>> {
        let fd = sys::openat(self.dir.as_fd(), name, libc::O_RDONLY)?;
        let mut buf = Vec::with_capacity(4096);
        File::from(fd).read_to_end(&mut buf)?;
        Ok(buf)
    }

    pub fn readlink(&self, name: &CStr) -> io::Result<Vec<u8>> {
        sys::readlinkat(self.dir.as_fd(), name)
    }

    /// comm, start time and whether it is a kernel thread, from `stat`.
    pub fn basics(&self, ticks_per_second: u64) -> io::Result<Basics> {
        let bytes = self.read(c"stat")?;
        // procfs slices around "pid (comm) state"; make sure that shape is
        // there so a garbled file is an error, not a panic.
        let shaped = bytes.windows(2).any(|w| w == b" (")
            && bytes
                .iter()
                .rposition(|&b| b == b')')
                .is_some_and(|i| i + 2 < bytes.len());
        if !shaped {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let stat = Stat::from_read(&bytes[..]).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Basics {
            comm: stat.comm,
            start: clock::ticks_to_boottime_ns(stat.starttime, ticks_per_second),
            kernel_thread: stat.flags & PF_KTHREAD != 0,
        })
    }

    /// The mount namespace, by inode number.
    pub fn mnt_ns(&self) -> io::Result<NsId> {
        let link = self.readlink(c"ns/mnt")?;
        parse_ns_link(&link, b"mnt").ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// The raw `mountinfo` bytes.
    pub fn mountinfo(&self) -> io::Result<Vec<u8>> {
        self.read(c"mountinfo")
    }

    /// An fd on the process's mount namespace (for nsfs ioctls).
    pub fn open_mnt_ns(&self) -> io::Result<OwnedFd> {
        sys::openat(self.dir.as_fd(), c"ns/mnt", libc::O_RDONLY)
    }

    /// exe, cgroup, uid and user namespace. Each is optional: a zombie has
    /// no exe, a process may exit between reads.
    pub fn fill_details(&self, info: &mut ProcessInfo) {
        info.exe = self.readlink(c"exe").ok().map(PathBytes);
        info.cgroup = self
            .read(c"cgroup")
            .ok()
            .and_then(|text| cgroup_path(&text));
        // The real uid, as `bpf_get_current_uid_gid()` reports it. Only the
        // `Uid:` line: procfs's full `Status` parse costs twice the read
        // (43 vs 24 us per process, measured here).
        if let Some(uid) = self.read(c"status").ok().and_then(|s| real_uid(&s)) {
            info.uid = uid;
        }
        info.user_ns = self
            .readlink(c"ns/user")
            .ok()
            .and_then(|l| parse_ns_link(&l, b"user"));
    }

    /// The devices of the cwd, root and open regular files/directories.
    /// Sockets, pipes, anon inodes and device nodes are left out: they hold
    /// no mount.
    pub fn devices(&self) -> io::Result<DeviceUse> {
        let mut out = DeviceUse {
            cwd: sys::statat(self.dir.as_fd(), c"cwd")
                .ok()
                .map(|st| sys::dev_of(st.st_dev)),
            root: sys::statat(self.dir.as_fd(), c"root")
                .ok()
                .map(|st| sys::dev_of(st.st_dev)),
            fds: Vec::new(),
        };
        let fd_dir = sys::openat(self.dir.as_fd(), c"fd", libc::O_RDONLY | libc::O_DIRECTORY)?;
        for name in sys::read_dir_names(&fd_dir)? {
            let Some(fd) = std::str::from_utf8(name.as_bytes())
                .ok()
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            // Closed meanwhile: normal.
            let Ok(st) = sys::statat(fd_dir.as_fd(), &name) else {
                continue;
            };
            let kind = st.st_mode & libc::S_IFMT;
            if kind == libc::S_IFREG || kind == libc::S_IFDIR {
                out.fds.push((fd, sys::dev_of(st.st_dev)));
            }
        }
        Ok(out)
    }

    /// `/proc/PID/<rest>` as a path, for calls that only take paths
    /// (statfs, nsenter). Races with pid reuse; callers use it only right
    /// after a read through the handle.
    pub fn path(&self, rest: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStringExt;
        let mut bytes = format!("/proc/{}/", self.pid).into_bytes();
        bytes.extend_from_slice(rest.strip_prefix(b"/").unwrap_or(rest));
        PathBuf::from(std::ffi::OsString::from_vec(bytes))
    }

    /// `readlink` of `cwd`, `root` or `fd/N`.
    pub fn link_of(&self, rel: &str) -> Option<PathBytes> {
        let name = CString::new(rel).ok()?;
        self.readlink(&name).ok().map(PathBytes)
    }
}

/// `mnt:[4026531841]` → 4026531841.
pub(crate) fn parse_ns_link(link: &[u8], kind: &[u8]) -> Option<u64> {
    let rest = link.strip_prefix(kind)?.strip_prefix(b":[")?;
    let digits = rest.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The real uid from `/proc/PID/status` (`Uid:\treal\teffective\tsaved\tfs`).
pub(crate) fn real_uid(status: &[u8]) -> Option<u32> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"Uid:"))?;
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The cgroup path from `/proc/PID/cgroup` (cgroups(7)): the v2 `0::` line
/// when there is one, else the v1 `name=systemd` hierarchy.
pub(crate) fn cgroup_path(text: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    let mut systemd = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            return Some(path.to_string());
        }
        if controllers.split(',').any(|c| c == "name=systemd") {
            systemd = Some(path.to_string());
        }
    }
    systemd
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn ns_links() {
        assert_eq!(
            parse_ns_link(b"mnt:[4026531841]", b"mnt"),
            Some(4_026_531_841)
        );
        assert_eq!(
            parse_ns_link(b"user:[4026531837]", b"user"),
            Some(4_026_531_837)
        );
        assert_eq!(parse_ns_link(b"net:[1]", b"mnt"), None);
        assert_eq!(parse_ns_link(b"mnt:[x]", b"mnt"), None);
        assert_eq!(parse_ns_link(b"mnt:[1", b"mnt"), None);
    }

    #[test]
    fn uid_line() {
        let status = b"Name:\tsleep\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(real_uid(status), Some(1000));
        assert_eq!(real_uid(b"Name:\tx\n"), None);
        assert_eq!(real_uid(b"Uid:\tx\n"), None);
    }

    #[test]
    fn cgroup_v2_wins_over_v1() {
        let hybrid = b"12:memory:/docker/abc\n1:name=systemd:/system.slice/docker-abc.scope\n0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            cgroup_path(hybrid).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        let v1 = b"11:cpu,cpuacct:/x\n1:name=systemd:/user.slice/y\n";
        assert_eq!(cgroup_path(v1).as_deref(), Some("/user.slice/y"));
        assert_eq!(cgroup_path(b"3:cpu:/x\n"), None);
        // A path may hold ':'.
        assert_eq!(cgroup_path(b"0::/a:b\n").as_deref(), Some("/a:b"));
    }

    #[test]
    fn reads_itself() {
        let me = ProcHandle::myself().unwrap();
        let basics = me.basics(clock::ticks_per_second()).unwrap();
        assert!(!basics.kernel_thread);
        assert!(basics.start <= clock::boottime_ns());
        let ns = me.mnt_ns().unwrap();
        let link = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        assert_eq!(format!("mnt:[{ns}]"), link.to_string_lossy());
        let mut info = ProcessInfo::default();
        me.fill_details(&mut info);
        assert!(info.exe.is_some());
        assert!(info.user_ns.is_some());
        let devs = me.devices().unwrap();
        assert!(devs.cwd.is_some() && devs.root.is_some());
    }

    #[test]
    fn open_files_are_found_wherever_they_sit_in_the_fd_table() {
        use std::process::{Command, Stdio};
        let file = std::env::temp_dir().join(format!("mountleak-fds-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let dev = sys::dev_of(std::fs::metadata(&file).unwrap().dev());
        let sleeping = |child: &std::process::Child| {
            let h = ProcHandle::open(child.id()).unwrap();
            for _ in 0..500 {
                if h.basics(clock::ticks_per_second())
                    .is_ok_and(|b| b.comm == "sleep")
                {
                    return h;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("child never slept");
        };
        // The file on fd 0.
        let mut dense = Command::new("sleep")
            .arg("100")
            .stdin(File::open(&file).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The file on fd 7, after a gap.
        let mut gap = Command::new("sh")
            .args(["-c", "exec 7<\"$0\"; exec sleep 100"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let found_dense = sleeping(&dense).devices().map(|d| d.fds);
        let found_gap = sleeping(&gap).devices().map(|d| d.fds);
        let _ = dense.kill();
        let _ = gap.kill();
        let _ = dense.wait();
        let _ = gap.wait();
        let _ = std::fs::remove_file(&file);
        assert_eq!(found_dense.unwrap(), vec![(0, dev)]);
        assert_eq!(found_gap.unwrap(), vec![(7, dev)]);
    }

    #[test]
    fn reads_its_own_mount_table() {
        let me = ProcHandle::myself().unwrap();
        assert!(!crate::procfs::mountinfo::parse(&me.mountinfo().unwrap())
            .mounts
            .is_empty());
    }
}
