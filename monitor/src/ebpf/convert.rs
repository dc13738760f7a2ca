//! Records from the ring buffer → model inputs. The kernel copied raw values;
//! here they get names and types, and relative paths get resolved (best
//! effort, after the fact: see [`ProcResolver`]).
//!
//! Owns: [`to_input`] and path resolution. Imports `monitor_common` (the
//! records) and `monitor_model` (the inputs); the only I/O is the resolver's
//! `readlink` in /proc, behind the [`Resolve`] trait so tests need none.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use monitor_common::user::Record;
use monitor_common::{kind, syscall, Header};
use monitor_model::{
    Call, Input, PathArg, PathBytes, ProcessEvent, ProcessEventKind, SyscallEvent, Task,
};

/// `MS_BIND`, `MS_MOVE` (`<linux/mount.h>`): the only mounts whose source is a
/// path. Other sources (`tmpfs`, `overlay`, `/dev/loop0`) are left as given.
const MS_BIND: u64 = 0x1000;
const MS_MOVE: u64 = 0x2000;
/// `AT_FDCWD` (`<linux/fcntl.h>`).
const AT_FDCWD: i32 = -100;

/// Where a relative path argument was relative to.
pub trait Resolve {
    /// The directory `dfd` of process `tgid` named (its cwd for `AT_FDCWD`),
    /// as an absolute path, or `None` when it cannot be known any more.
    fn dir_of(&mut self, tgid: u32, dfd: i32) -> Option<Vec<u8>>;
}

/// Resolves through `/proc/<tgid>/cwd` and `/proc/<tgid>/fd/<dfd>`.
///
/// Best effort: this runs after the call returned, so the process may have
/// exited or moved (then the path stays relative), and a cwd removed since
/// reads as `... (deleted)` (also left relative). Answers are cached per
/// batch, which is short enough that a cwd rarely changes within it.
#[derive(Default)]
pub struct ProcResolver {
    cache: HashMap<(u32, i32), Option<Vec<u8>>>,
}

impl ProcResolver {
    /// Forgets cached answers; called between batches.
    pub fn clear(&mut self) {
        self.cache.clear();
    }
}

impl Resolve for ProcResolver {
    fn dir_of(&mut self, tgid: u32, dfd: i32) -> Option<Vec<u8>> {
        self.cache
            .entry((tgid, dfd))
            .or_insert_with(|| {
                let link: PathBuf = if dfd == AT_FDCWD {
                    format!("/proc/{tgid}/cwd").into()
                } else {
                    format!("/proc/{tgid}/fd/{dfd}").into()
                };
                let target = std::fs::read_link(link).ok()?;
                let bytes = target.as_os_str().as_bytes().to_vec();
                // Not a directory path: `anon_inode:[...]`, `mnt:[...]`, or
                // a removed directory.
                (bytes.first() == Some(&b'/') && !bytes.ends_with(b" (deleted)")).then_some(bytes)
            })
            .clone()
    }
}

/// How a path argument became a model [`PathArg`].
struct PathIn<'a> {
    /// `None`: the kernel could not read it.
    bytes: Option<&'a [u8]>,
    truncated: bool,
    tgid: u32,
    dfd: i32,
    /// Resolve relative paths. False for a mount source that is not a path.
    is_path: bool,
    /// An empty path names `dfd` itself (`AT_EMPTY_PATH`, `OPEN_TREE` on an
    /// fd, `move_mount` from a detached mount).
    empty_means_dfd: bool,
}

fn path_arg(p: PathIn<'_>, resolver: &mut dyn Resolve) -> PathArg {
    let Some(bytes) = p.bytes else {
        // TODO(model): `PathArg` has no "unreadable" flag. An empty path
        // flagged truncated is the closest: a prefix that matches nothing
        // for certain. Ask for `PathArg::unreadable` if the model needs to
        // tell the two apart.
        return PathArg {
            path: PathBytes::default(),
            truncated: true,
        };
    };
    let path = match bytes.first() {
        Some(b'/') => bytes.to_vec(),
        _ if !p.is_path => bytes.to_vec(),
        None if p.empty_means_dfd && p.dfd >= 0 => {
            resolver.dir_of(p.tgid, p.dfd).unwrap_or_default()
        }
        _ => match resolver.dir_of(p.tgid, p.dfd) {
            // TODO(model): `PathArg` has no "resolved from cwd" flag; a
            // resolved path is indistinguishable from an absolute argument,
            // and one that could not be resolved stays relative (the model
            // can test `is_absolute()`).
            Some(dir) => join(&dir, bytes),
            None => bytes.to_vec(),
        },
    };
    PathArg {
        path: PathBytes(path),
        truncated: p.truncated,
    }
}

/// `dir` + `/` + `rel`, dropping `./` prefixes. `..` is left in place:
/// resolving it lexically would be wrong across symlinks.
fn join(dir: &[u8], mut rel: &[u8]) -> Vec<u8> {
    while let Some(rest) = rel.strip_prefix(b"./") {
        rel = rest;
    }
    if rel == b"." || rel.is_empty() {
        return dir.to_vec();
    }
    let mut out = dir.to_vec();
    if out.last() != Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(rel);
    out
}

fn task(h: &Header) -> Task {
    Task {
        tid: h.tid,
        tgid: h.tgid,
        uid: h.uid,
        comm: String::from_utf8_lossy(h.comm()).into_owned(),
        cgroup_id: h.cgroup_id,
    }
}

fn syscall_event(h: &Header, ret: i64, call: Call) -> Input {
    Input::Syscall(SyscallEvent {
        start: h.start_ns,
        end: h.end_ns,
        task: task(h),
        ns: u64::from(h.mnt_ns),
        ns_after: u64::from(h.mnt_ns_after),
        ret,
        call,
    })
}

/// Converts one record. `None` for a record the model has no input for
/// (none today; kept so a new kind can be decoded before it is modelled).
pub fn to_input(record: &Record, resolver: &mut dyn Resolve) -> Option<Input> {
    let mut resolve = |bytes, truncated, tgid, dfd, is_path, empty_means_dfd| {
        path_arg(
            PathIn {
                bytes,
                truncated,
                tgid,
                dfd,
                is_path,
                empty_means_dfd,
            },
            resolver,
        )
    };
    Some(match record {
        Record::Mount(e) => {
            let h = &e.header;
            let source_is_path = e.flags & (MS_BIND | MS_MOVE) != 0;
            let source = resolve(
                e.source.bytes(),
                e.source.is_truncated(),
                h.tgid,
                AT_FDCWD,
                source_is_path,
                false,
            );
            let target = resolve(
                e.target.bytes(),
                e.target.is_truncated(),
                h.tgid,
                AT_FDCWD,
                true,
                false,
            );
            let fstype = String::from_utf8_lossy(e.fstype.bytes().unwrap_or_default()).into_owned();
            syscall_event(
                h,
                e.ret,
                Call::Mount {
                    source,
                    target,
                    fstype,
                    flags: e.flags,
                },
            )
        }
        Record::Umount(e) => {
            let h = &e.header;
            let target = resolve(
                e.target.bytes(),
                e.target.is_truncated(),
                h.tgid,
                AT_FDCWD,
                true,
                false,
            );
            syscall_event(
                h,
                e.ret,
                Call::Umount {
                    target,
                    flags: e.flags,
                },
            )
        }
        Record::Ns(e) => {
            let call = match e.header.kind {
                kind::UNSHARE => Call::Unshare { flags: e.flags },
                kind::SETNS => Call::Setns { nstype: e.flags },
                _ => Call::Clone {
                    flags: e.flags,
                    clone3: e.syscall == syscall::CLONE3,
                },
            };
            syscall_event(&e.header, e.ret, call)
        }
        Record::NewTask(e) => {
            let call = Call::NewTask {
                child: e.child_tgid,
                child_ns: u64::from(e.child_mnt_ns),
                flags: e.clone_flags,
            };
            // A tracepoint, not a call: nothing failed, nothing returned.
            syscall_event(&e.header, 0, call)
        }
        Record::MoveMount(e) => {
            let h = &e.header;
            let from = resolve(
                e.from_path.bytes(),
                e.from_path.is_truncated(),
                h.tgid,
                e.from_dfd,
                true,
                true,
            );
            let to = resolve(
                e.to_path.bytes(),
                e.to_path.is_truncated(),
                h.tgid,
                e.to_dfd,
                true,
                true,
            );
            syscall_event(
                h,
                e.ret,
                Call::MoveMount {
                    from,
                    to,
                    flags: e.flags,
                },
            )
        }
        Record::Path(e) => {
            let h = &e.header;
            let path = resolve(
                e.path.bytes(),
                e.path.is_truncated(),
                h.tgid,
                e.dfd,
                true,
                true,
            );
            let call = match h.kind {
                kind::OPEN_TREE => Call::OpenTree {
                    path,
                    flags: e.flags,
                },
                kind::MOUNT_SETATTR => Call::MountSetattr {
                    path,
                    flags: e.flags,
                    attr_set: e.attr_set,
                    attr_clr: e.attr_clr,
                    propagation: e.propagation,
                },
                kind::PIVOT_ROOT => {
                    let put_old = resolve(
                        e.path2.bytes(),
                        e.path2.is_truncated(),
                        h.tgid,
                        AT_FDCWD,
                        true,
                        false,
                    );
                    Call::PivotRoot {
                        new_root: path,
                        put_old,
                    }
                }
                _ => Call::Rmdir { path },
            };
            syscall_event(h, e.ret, call)
        }
        Record::Fsmount(e) => syscall_event(&e.header, e.ret, Call::Fsmount { flags: e.flags }),
        Record::Process(e) => {
            let h = &e.header;
            let (ns, kind) = if h.kind == kind::PROCESS_FORK {
                // The probe put the child's namespace in mnt_ns_after.
                let comm = String::from_utf8_lossy(h.comm()).into_owned();
                let fork = ProcessEventKind::Fork {
                    parent: h.tgid,
                    child: e.other_tgid,
                    comm,
                };
                (h.mnt_ns_after, fork)
            } else {
                (h.mnt_ns, ProcessEventKind::Exit { pid: h.tgid })
            };
            Input::Process(ProcessEvent {
                at: h.end_ns,
                ns: u64::from(ns),
                kind,
            })
        }
    })
}

/// The time a batch is ordered by: a call's exit (when its effect is
/// visible), a fork's or exit's moment.
pub fn order_key(input: &Input) -> u64 {
    match input {
        Input::Syscall(e) => e.end,
        Input::Process(e) => e.at,
        Input::Lost { at, .. } => *at,
        Input::Tick { now } => *now,
        Input::Snapshot(s) => s.taken_at,
        Input::Container(e) => e.at(),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use monitor_common::{
        Header, MountEvent, MoveMountEvent, PathArg as RawPath, PathEvent,
        ProcessEvent as RawProcess, COMM_LEN, FSTYPE_LEN, PATH_LEN, SOURCE_LEN,
    };

    use super::*;

    /// Answers from a table instead of /proc.
    struct Table(HashMap<(u32, i32), Vec<u8>>);

    impl Resolve for Table {
        fn dir_of(&mut self, tgid: u32, dfd: i32) -> Option<Vec<u8>> {
            self.0.get(&(tgid, dfd)).cloned()
        }
    }

    fn table() -> Table {
        Table(HashMap::from([
            ((7, AT_FDCWD), b"/srv/my dir".to_vec()),
            ((7, 5), b"/var/lib/x".to_vec()),
        ]))
    }

    fn header(kind: u32, size: usize) -> Header {
        let mut comm = [0u8; COMM_LEN];
        comm[..5].copy_from_slice(b"runc:");
        Header {
            kind,
            size: size as u32,
            start_ns: 100,
            end_ns: 200,
            tid: 8,
            tgid: 7,
            uid: 0,
            gid: 0,
            cgroup_id: 1,
            mnt_ns: 4026531841,
            mnt_ns_after: 4026531841,
            comm,
        }
    }

    fn raw<const N: usize>(s: &[u8]) -> RawPath<N> {
        let mut p = RawPath {
            len: s.len() as u32,
            truncated: 0,
            bytes: [0; N],
        };
        p.bytes[..s.len()].copy_from_slice(s);
        p
    }

    fn path_of(arg: &PathArg) -> &[u8] {
        arg.path.as_bytes()
    }

    #[test]
    fn mount_resolves_relative_target_but_not_a_tmpfs_source() {
        let e = MountEvent {
            header: header(kind::MOUNT, size_of::<MountEvent>()),
            ret: 0,
            flags: 0,
            source: raw::<SOURCE_LEN>(b"tmpfs"),
            target: raw::<PATH_LEN>(b"./sub dir"),
            fstype: raw::<FSTYPE_LEN>(b"tmpfs"),
        };
        let Some(Input::Syscall(ev)) = to_input(&Record::Mount(e), &mut table()) else {
            panic!()
        };
        let Call::Mount {
            source,
            target,
            fstype,
            ..
        } = ev.call
        else {
            panic!()
        };
        assert_eq!(path_of(&source), b"tmpfs");
        assert_eq!(path_of(&target), b"/srv/my dir/sub dir");
        assert_eq!(fstype, "tmpfs");
        assert_eq!(
            (ev.task.comm.as_str(), ev.task.tgid, ev.start, ev.end),
            ("runc:", 7, 100, 200)
        );
    }

    #[test]
    fn bind_mount_source_is_a_path() {
        let e = MountEvent {
            header: header(kind::MOUNT, size_of::<MountEvent>()),
            ret: -16,
            flags: MS_BIND,
            source: raw::<SOURCE_LEN>(b"a"),
            target: raw::<PATH_LEN>(b"/b"),
            fstype: RawPath {
                len: u32::MAX,
                truncated: 0,
                bytes: [0; FSTYPE_LEN],
            },
        };
        let Some(Input::Syscall(ev)) = to_input(&Record::Mount(e), &mut table()) else {
            panic!()
        };
        let Call::Mount { source, fstype, .. } = ev.call else {
            panic!()
        };
        assert_eq!(path_of(&source), b"/srv/my dir/a");
        assert_eq!(fstype, "");
        assert_eq!(ev.ret, -16);
    }

    #[test]
    fn unreadable_and_truncated_paths_are_flagged() {
        let mut target = raw::<PATH_LEN>(b"/long");
        target.truncated = 1;
        let mut e = MountEvent {
            header: header(kind::MOUNT, size_of::<MountEvent>()),
            ret: 0,
            flags: 0,
            source: RawPath {
                len: u32::MAX,
                truncated: 0,
                bytes: [0; SOURCE_LEN],
            },
            target,
            fstype: raw::<FSTYPE_LEN>(b"ext4"),
        };
        let Some(Input::Syscall(ev)) = to_input(&Record::Mount(e), &mut table()) else {
            panic!()
        };
        let Call::Mount { source, target, .. } = ev.call else {
            panic!()
        };
        assert!(source.truncated && source.path.is_empty());
        assert!(target.truncated && path_of(&target) == b"/long");
        // A process that is gone leaves the path relative.
        e.header.tgid = 99;
        e.target = raw::<PATH_LEN>(b"rel");
        let Some(Input::Syscall(ev)) = to_input(&Record::Mount(e), &mut table()) else {
            panic!()
        };
        let Call::Mount { target, .. } = ev.call else {
            panic!()
        };
        assert_eq!(path_of(&target), b"rel");
    }

    #[test]
    fn move_mount_from_an_fd_uses_the_fd_path() {
        let e = MoveMountEvent {
            header: header(kind::MOVE_MOUNT, size_of::<MoveMountEvent>()),
            ret: 0,
            flags: 4, // MOVE_MOUNT_F_EMPTY_PATH
            from_dfd: 5,
            to_dfd: AT_FDCWD,
            from_path: raw::<PATH_LEN>(b""),
            to_path: raw::<PATH_LEN>(b"./t"),
        };
        let Some(Input::Syscall(ev)) = to_input(&Record::MoveMount(e), &mut table()) else {
            panic!()
        };
        let Call::MoveMount { from, to, .. } = ev.call else {
            panic!()
        };
        assert_eq!(path_of(&from), b"/var/lib/x");
        assert_eq!(path_of(&to), b"/srv/my dir/t");
    }

    #[test]
    fn rmdir_relative_to_a_dfd() {
        let e = PathEvent {
            header: header(kind::RMDIR, size_of::<PathEvent>()),
            ret: 0,
            flags: 0x200,
            attr_set: 0,
            attr_clr: 0,
            propagation: 0,
            dfd: 5,
            syscall: syscall::UNLINKAT,
            path: raw::<PATH_LEN>(b"merged"),
            path2: raw::<PATH_LEN>(b""),
        };
        let Some(Input::Syscall(ev)) = to_input(&Record::Path(e), &mut table()) else {
            panic!()
        };
        let Call::Rmdir { path } = ev.call else {
            panic!()
        };
        assert_eq!(path_of(&path), b"/var/lib/x/merged");
    }

    #[test]
    fn fork_carries_the_child_namespace() {
        let mut h = header(kind::PROCESS_FORK, size_of::<RawProcess>());
        h.mnt_ns_after = 4026532999;
        let e = RawProcess {
            header: h,
            other_tid: 12,
            other_tgid: 12,
            exit_code: 0,
            group_dead: 0,
        };
        let Some(Input::Process(p)) = to_input(&Record::Process(e), &mut table()) else {
            panic!()
        };
        assert_eq!(p.ns, 4026532999);
        assert!(matches!(
            p.kind,
            ProcessEventKind::Fork {
                parent: 7,
                child: 12,
                ..
            }
        ));
    }

    #[test]
    fn join_drops_dot_prefixes() {
        assert_eq!(join(b"/a", b"./b"), b"/a/b");
        assert_eq!(join(b"/", b"b"), b"/b");
        assert_eq!(join(b"/a", b"."), b"/a");
        assert_eq!(join(b"/a", b"../b"), b"/a/../b");
    }
}
