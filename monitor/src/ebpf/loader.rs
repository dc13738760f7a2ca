//! Loading and attaching the programs, and the maps userspace touches.
//! Every failure names what is missing; optional pieces (a tracepoint an
//! older kernel lacks, tracefs) are skipped with a warning, not fatal.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, ProgramError, TracePoint};
use aya::{Ebpf, EbpfLoader, Endianness};
use monitor_common::{counter, KernelOffsets};
use monitor_model::{Input, NsId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::btf::{kernel_offsets, Btf};
use super::convert::order_key;
use super::{reader, Counters, EbpfError, ProbeMode, ProbeOptions};

/// The object `build.rs` produced; empty when it had no eBPF toolchain.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// BTF tracepoints: loaded in every mode. They attach through
/// BPF_RAW_TRACEPOINT_OPEN by name, so they need no tracefs.
const BTF_PROGRAMS: [&str; 3] = ["task_newtask", "sched_process_fork", "sched_process_exit"];

/// Syscall tracepoint pairs (`syscalls/sys_enter_*`, `sys_exit_*`).
/// `umount2(2)`'s tracepoints are named `umount`, after its kernel name.
const SYSCALL_PAIRS: [(&str, &str); 14] = [
    ("sys_enter_mount", "sys_exit_mount"),
    ("sys_enter_umount", "sys_exit_umount"),
    ("sys_enter_unshare", "sys_exit_unshare"),
    ("sys_enter_setns", "sys_exit_setns"),
    ("sys_enter_clone", "sys_exit_clone"),
    ("sys_enter_clone3", "sys_exit_clone3"),
    ("sys_enter_move_mount", "sys_exit_move_mount"),
    ("sys_enter_open_tree", "sys_exit_open_tree"),
    // open_tree_attr(2) exists since Linux 6.15.
    ("sys_enter_open_tree_attr", "sys_exit_open_tree_attr"),
    ("sys_enter_fsmount", "sys_exit_fsmount"),
    ("sys_enter_mount_setattr", "sys_exit_mount_setattr"),
    ("sys_enter_pivot_root", "sys_exit_pivot_root"),
    ("sys_enter_rmdir", "sys_exit_rmdir"),
    ("sys_enter_unlinkat", "sys_exit_unlinkat"),
];

/// Where tracefs is usually mounted; the same two places aya looks.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const MOUNT_TRACEFS: &str = "mount -t tracefs tracefs /sys/kernel/tracing";

/// A program left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub program: String,
    pub reason: String,
}

/// The loaded probes. Dropping this detaches every program; the event
/// stream then ends once its receiver is dropped.
pub struct Probes {
    /// Owns the programs and their links: they live as long as this.
    _ebpf: Ebpf,
    mode: ProbeMode,
    attached: Vec<String>,
    skipped: Vec<Skipped>,
    /// Taken by [`Probes::events`].
    events: Option<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    watched: HashMap<MapData, u32, u8>,
    decode_errors: Arc<AtomicU64>,
    channel_batches: usize,
    resolve_paths: bool,
}

/// `KernelOffsets` as aya's `Pod`, for `override_global` (the orphan rule
/// keeps us from implementing aya's trait on the common crate's type).
#[repr(transparent)]
#[derive(Clone, Copy)]
struct PodOffsets(KernelOffsets);

// SAFETY: `KernelOffsets` is `repr(C)`, all `u32`, no padding, no pointers.
unsafe impl aya::Pod for PodOffsets {}

impl Probes {
    /// Loads and attaches the probes for `options.mode`. In `Syscalls` mode
    /// without usable tracefs it degrades to `Lean` with a warning; check
    /// [`Probes::mode`].
    pub fn load(options: ProbeOptions) -> Result<Probes, EbpfError> {
        check_object(OBJECT)?;
        check_privileges()?;
        raise_memlock();

        let btf = Btf::from_file(&options.btf_path)?;
        let offsets = kernel_offsets(&btf)?;
        // sched_process_exit gained `bool group_dead` as a second argument;
        // without it the program reads signal->live instead.
        let exit_has_group_dead = btf.tracepoint_arity("sched_process_exit").unwrap_or(1) >= 2;
        debug!(?offsets, exit_has_group_dead, "kernel offsets from BTF");

        let mut mode = options.mode;
        let mut skipped = Vec::new();
        let tracefs = match mode {
            ProbeMode::Lean => None,
            ProbeMode::Syscalls => match syscall_tracepoints() {
                Ok(dir) => Some(dir),
                Err(reason) => {
                    warn!(
                        %reason,
                        fix = MOUNT_TRACEFS,
                        "syscall tracepoints unavailable: degrading to lean probes (clone-made namespaces, forks and exits only)"
                    );
                    mode = ProbeMode::Lean;
                    None
                }
            },
        };

        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &PodOffsets(offsets), true)
            .override_global("EXIT_HAS_GROUP_DEAD", &u8::from(exit_has_group_dead), true)
            .map_max_entries("EVENTS", options.ringbuf_bytes)
            .load(OBJECT)
            .map_err(EbpfError::Load)?;

        let aya_btf = aya::Btf::parse_file(&options.btf_path, Endianness::default())
            .map_err(EbpfError::AyaBtf)?;
        let mut attached = Vec::new();
        for name in BTF_PROGRAMS {
            let program: &mut BtfTracePoint = program_mut(&mut ebpf, name)?;
            program
                .load(name, &aya_btf)
                .map_err(|e| refused(name, "tp_btf", e))?;
            program.attach().map_err(|source| EbpfError::Attach {
                program: name,
                target: format!("tp_btf/{name}"),
                source,
            })?;
            attached.push(name.to_string());
        }

        if let Some(tracefs) = tracefs {
            for (enter, exit) in SYSCALL_PAIRS {
                // Older kernels lack some (the mount API before 5.2, clone3
                // before 5.3, mount_setattr before 5.12, open_tree_attr before
                // 6.15): skip the pair, keep the rest.
                if let Some(missing) = [enter, exit]
                    .into_iter()
                    .find(|tp| !tracepoint_exists(&tracefs, tp))
                {
                    let reason =
                        format!("tracepoint syscalls/{missing} does not exist on this kernel");
                    warn!(program = enter, %reason, "skipping a syscall probe");
                    skipped.push(Skipped {
                        program: format!("{enter}+{exit}"),
                        reason,
                    });
                    continue;
                }
                for name in [enter, exit] {
                    attach_syscall(&mut ebpf, name)?;
                    attached.push(name.to_string());
                }
            }
        }
        info!(
            ?mode,
            attached = attached.len(),
            skipped = skipped.len(),
            "eBPF probes attached"
        );

        let events = take_map(&mut ebpf, "EVENTS", RingBuf::try_from)?;
        let counters = take_map(&mut ebpf, "COUNTERS", PerCpuArray::try_from)?;
        let watched = take_map(&mut ebpf, "WATCHED_NS", HashMap::try_from)?;
        Ok(Probes {
            _ebpf: ebpf,
            mode,
            attached,
            skipped,
            events: Some(events),
            counters,
            watched,
            decode_errors: Arc::new(AtomicU64::new(0)),
            channel_batches: options.channel_batches.max(1),
            resolve_paths: options.resolve_paths,
        })
    }

    /// The mode actually in force (`Lean` after a degrade).
    pub fn mode(&self) -> ProbeMode {
        self.mode
    }

    /// Names of the attached programs, for logs.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// Programs left out (a tracepoint this kernel lacks), with the reason.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Starts the reader task and returns its batches: every record drained
    /// from the ring buffer in one wake-up, decoded, ordered by end time.
    /// Call once, inside a tokio runtime. The task stops when the receiver
    /// is dropped.
    pub fn events(&mut self) -> Result<mpsc::Receiver<Vec<Input>>, EbpfError> {
        tokio::runtime::Handle::try_current().map_err(|_| EbpfError::NoRuntime)?;
        let ring = self.events.take().ok_or(EbpfError::EventsTaken)?;
        let (tx, rx) = mpsc::channel(self.channel_batches);
        reader::spawn(ring, tx, self.decoder())?;
        Ok(rx)
    }

    /// Reads the records waiting in the ring buffer now, without a runtime
    /// (one-shot checks, tests). Ordered by end time; `Ok(vec![])` when
    /// nothing is waiting. Fails once [`Probes::events`] took the buffer.
    pub fn drain(&mut self) -> Result<Vec<Input>, EbpfError> {
        let mut decoder = self.decoder();
        let ring = self.events.as_mut().ok_or(EbpfError::EventsTaken)?;
        let mut all = Vec::new();
        loop {
            let (batch, drained) = decoder.drain(ring);
            all.extend(batch);
            if drained {
                break;
            }
        }
        all.sort_by_key(order_key);
        Ok(all)
    }

    fn decoder(&self) -> reader::Decoder {
        reader::Decoder::new(self.resolve_paths, Arc::clone(&self.decode_errors))
    }

    /// The kernel's counters summed over CPUs, plus userspace decode errors.
    pub fn counters(&self) -> Result<Counters, EbpfError> {
        let sum = |index: u32| -> Result<u64, EbpfError> {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(|source| EbpfError::Map {
                    name: "COUNTERS",
                    source,
                })?;
            Ok(values.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
        };
        Ok(Counters {
            ringbuf_full: sum(counter::RINGBUF_FULL)?,
            missing_entry: sum(counter::MISSING_ENTRY)?,
            kernel_read: sum(counter::KERNEL_READ)?,
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        })
    }

    /// Reports forks and exits of processes in mount namespace `ns`.
    pub fn watch(&mut self, ns: NsId) -> Result<(), EbpfError> {
        let key = u32::try_from(ns).map_err(|_| EbpfError::NsOutOfRange(ns))?;
        self.watched
            .insert(key, 1, 0)
            .map_err(|source| EbpfError::Map {
                name: "WATCHED_NS",
                source,
            })
    }

    /// Stops reporting forks and exits in `ns`. Unwatching a namespace that
    /// is not watched is not an error.
    pub fn unwatch(&mut self, ns: NsId) -> Result<(), EbpfError> {
        let Ok(key) = u32::try_from(ns) else {
            return Ok(());
        };
        match self.watched.remove(&key) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(source) => Err(EbpfError::Map {
                name: "WATCHED_NS",
                source,
            }),
        }
    }
}

/// `build.rs` leaves an empty object when the eBPF toolchain was missing.
fn check_object(object: &[u8]) -> Result<(), EbpfError> {
    if object.is_empty() {
        return Err(EbpfError::NotBuilt);
    }
    Ok(())
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(EbpfError::Missing {
        what: "program",
        name,
    })?;
    program.try_into().map_err(|_| EbpfError::Missing {
        what: "program of the expected type",
        name,
    })
}

fn attach_syscall(ebpf: &mut Ebpf, name: &'static str) -> Result<(), EbpfError> {
    let program: &mut TracePoint = program_mut(ebpf, name)?;
    program.load().map_err(|e| refused(name, "tracepoint", e))?;
    program
        .attach("syscalls", name)
        .map_err(|source| EbpfError::Attach {
            program: name,
            target: format!("tracepoint syscalls/{name}"),
            source,
        })?;
    Ok(())
}

fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, EbpfError> {
    let map = ebpf
        .take_map(name)
        .ok_or(EbpfError::Missing { what: "map", name })?;
    convert(map).map_err(|source| EbpfError::Map { name, source })
}

/// Names the errno of a refused BPF_PROG_LOAD.
fn refused(program: &'static str, kind: &'static str, error: ProgramError) -> EbpfError {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let verifier_log = verifier_log.to_string();
            debug!(program, %verifier_log, "verifier log");
            let hint = match io_error.raw_os_error() {
                // Seen on this VM for fentry/LSM: refused before verification.
                Some(libc::EPERM) => {
                    " (the kernel forbids this program type here, or CAP_BPF/CAP_PERFMON is missing)"
                }
                Some(libc::EACCES) | Some(libc::EINVAL) => {
                    " (the verifier rejected it; RUST_LOG=debug prints its log)"
                }
                Some(libc::E2BIG) => " (program too large for this kernel's verifier)",
                _ => "",
            };
            EbpfError::ProgramRefused {
                program,
                kind,
                errno: io_error,
                hint,
                verifier_log,
            }
        }
        other => EbpfError::ProgramRefused {
            program,
            kind,
            errno: io::Error::other(other.to_string()),
            hint: "",
            verifier_log: String::new(),
        },
    }
}

/// Root, or CAP_BPF + CAP_PERFMON (Linux 5.8+): tracing programs and
/// tracepoint perf events need both (CAP_SYS_ADMIN covers them too).
fn check_privileges() -> Result<(), EbpfError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Some(caps) = effective_caps() else {
        // Cannot tell: let the kernel decide and report its errno.
        return Ok(());
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing = match (has(CAP_BPF), has(CAP_PERFMON)) {
        (false, false) => "CAP_BPF and CAP_PERFMON",
        (false, true) => "CAP_BPF",
        _ => "CAP_PERFMON",
    };
    Err(EbpfError::NotPrivileged { missing })
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the
/// memory cgroup. Raising it needs CAP_SYS_RESOURCE, which containers and
/// this VM often lack: failing is harmless on a modern kernel.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        debug!(error = %io::Error::last_os_error(), "raising RLIMIT_MEMLOCK failed (harmless on Linux 5.11+)");
    }
}

/// Finds tracefs with syscall tracepoints, or says why not.
fn syscall_tracepoints() -> Result<PathBuf, String> {
    let mounted = TRACEFS.iter().map(Path::new).find(|dir| {
        // An empty directory is a mount point with nothing mounted on it.
        std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    });
    let Some(dir) = mounted else {
        return Err(format!(
            "tracefs is not mounted (looked in {})",
            TRACEFS.join(", ")
        ));
    };
    if !dir.join("events/syscalls").is_dir() {
        return Err(format!(
            "{}/events/syscalls is missing (kernel built without CONFIG_FTRACE_SYSCALLS)",
            dir.display()
        ));
    }
    Ok(dir.to_path_buf())
}

fn tracepoint_exists(tracefs: &Path, name: &str) -> bool {
    tracefs
        .join("events/syscalls")
        .join(name)
        .join("id")
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_match_the_program_names() {
        for (enter, exit) in SYSCALL_PAIRS {
            assert_eq!(
                enter.strip_prefix("sys_enter_"),
                exit.strip_prefix("sys_exit_")
            );
        }
    }

    #[test]
    fn an_empty_object_says_how_to_get_the_programs() {
        let Err(error) = check_object(&[]) else {
            panic!("an empty object passed")
        };
        let message = error.to_string();
        assert_eq!(
            message,
            "this binary was built without its eBPF programs (bpf-linker/nightly missing at build time): run `cargo xtask setup` and rebuild"
        );
    }

    /// The async stream, end to end: one reader, batches through the
    /// channel, a clone(CLONE_NEWNS) arriving as `NewTask`.
    #[test]
    #[ignore = "needs root: loads eBPF"]
    fn events_stream_delivers_batches() {
        use monitor_model::Call;

        let options = ProbeOptions {
            mode: ProbeMode::Lean,
            ..Default::default()
        };
        let mut probes = Probes::load(options).expect("load");
        assert!(matches!(probes.events(), Err(EbpfError::NoRuntime)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut batches = probes.events().expect("events");
            assert!(matches!(probes.events(), Err(EbpfError::EventsTaken)));
            assert!(matches!(probes.drain(), Err(EbpfError::EventsTaken)));
            // SAFETY: fork semantics (no new stack); the child only exits.
            let child = unsafe {
                libc::syscall(libc::SYS_clone, (libc::CLONE_NEWNS | libc::SIGCHLD) as u64, 0, 0, 0, 0)
            };
            if child == 0 {
                // SAFETY: a raw exit in the child.
                unsafe { libc::_exit(0) }
            }
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(child as i32, &mut status, 0) };
            let found = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while let Some(batch) = batches.recv().await {
                    let ends: Vec<u64> = batch.iter().map(order_key).collect();
                    assert!(ends.is_sorted(), "batch not ordered by end time");
                    if batch.iter().any(|i| {
                        matches!(i, Input::Syscall(e)
                            if matches!(e.call, Call::NewTask { child: c, .. } if i64::from(c) == child))
                    }) {
                        return true;
                    }
                }
                false
            })
            .await;
            assert_eq!(found, Ok(true), "no NewTask for {child} within 5 s");
        });
        assert_eq!(probes.counters().expect("counters").decode_errors, 0);
    }
}
