//! Reading the ring buffer: the tokio task that waits on its fd with
//! `AsyncFd` and drains it in batches (see [`run`] for when), and the
//! synchronous [`Decoder::drain`] both it and `Probes::drain` use. A bad
//! record bumps a counter and the loop goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use monitor_common::{user::decode, WAKEUP_INTERVAL_NS};
use monitor_model::Input;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::{self, Instant};
use tracing::{debug, instrument, warn};

use super::convert::{order_key, to_input, ProcResolver, Resolve};
use super::EbpfError;

/// Records per batch at most: bounds a batch's memory when the ring buffer
/// is large and full. The rest is read right after (the fd stays ready).
const MAX_BATCH: usize = 4096;

/// Leaves relative paths as the kernel saw them.
struct NoResolve;

impl Resolve for NoResolve {
    fn dir_of(&mut self, _tgid: u32, _dfd: i32) -> Option<Vec<u8>> {
        None
    }
}

/// Decodes and converts records; shared by the task and `Probes::drain`.
pub(super) struct Decoder {
    resolver: ProcResolver,
    resolve_paths: bool,
    errors: Arc<AtomicU64>,
}

impl Decoder {
    pub(super) fn new(resolve_paths: bool, errors: Arc<AtomicU64>) -> Decoder {
        Decoder {
            resolver: ProcResolver::default(),
            resolve_paths,
            errors,
        }
    }

    /// Reads up to [`MAX_BATCH`] records, ordered by end time. The bool is
    /// true when the ring buffer was left empty.
    pub(super) fn drain(&mut self, ring: &mut RingBuf<MapData>) -> (Vec<Input>, bool) {
        let resolver: &mut dyn Resolve = if self.resolve_paths {
            &mut self.resolver
        } else {
            &mut NoResolve
        };
        let mut batch = Vec::new();
        let mut drained = false;
        while batch.len() < MAX_BATCH {
            let Some(item) = ring.next() else {
                drained = true;
                break;
            };
            match decode(&item) {
                Ok(record) => batch.extend(to_input(&record, resolver)),
                Err(error) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    debug!(%error, "skipping an undecodable record");
                }
            }
        }
        self.resolver.clear();
        // Records reach the ring in reservation order, CPUs racing each
        // other; the model wants the order in which calls took effect.
        batch.sort_by_key(order_key);
        (batch, drained)
    }
}

pub(super) fn spawn(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<Input>>,
    decoder: Decoder,
) -> Result<(), EbpfError> {
    // SAFETY: the RingBuf owns its map's fd (an OwnedFd inside MapData) and
    // returns that same fd until it is dropped, which only the AsyncFd does.
    let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| EbpfError::Io(e.into_parts().1))?;
    tokio::spawn(run(fd, tx, decoder));
    Ok(())
}

/// Waits for the kernel to wake it, drains the ring, and drains it again
/// [`WAKEUP_INTERVAL_NS`] after its last wake-up: the programs submit a
/// record without a wake-up only within that interval after one they forced
/// (`monitor-ebpf/src/probes/mod.rs`, `submit`), so that second drain reads
/// every such record (a program decides just before it commits, so that
/// drain finds the record committed). A record thus waits at most about one
/// interval; the first of a burst, a failed removal (EBUSY) and anything
/// arriving while the ring is a quarter full wake the task at once. While
/// the ring stays empty the task only waits: no timer runs.
#[instrument(name = "ebpf_reader", skip_all)]
async fn run(
    mut fd: AsyncFd<RingBuf<MapData>>,
    tx: mpsc::Sender<Vec<Input>>,
    mut decoder: Decoder,
) {
    let interval = Duration::from_nanos(WAKEUP_INTERVAL_NS);
    // One drain an interval after the start, for records submitted before
    // the fd was registered without a wake-up of their own.
    let mut due = Some(Instant::now() + interval);
    loop {
        let woken = tokio::select! {
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    // Records submitted from now on without a wake-up are
                    // read by the drain below or the one due after it.
                    guard.clear_ready();
                    true
                }
                Err(error) => {
                    warn!(%error, "ring buffer fd failed: eBPF events stop");
                    return;
                }
            },
            () = sleep_until(due) => false,
            () = tx.closed() => return,
        };
        due = woken.then(|| Instant::now() + interval);
        loop {
            let (batch, drained) = decoder.drain(fd.get_mut());
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return;
            }
            if drained {
                break;
            }
        }
    }
}

/// Sleeps until `due`; never returns when there is none.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
