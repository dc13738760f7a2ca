//! Reading the ring buffer: the tokio task that waits on its fd with
//! `AsyncFd`, and the synchronous [`Decoder::drain`] both it and
//! `Probes::drain` use. A bad record bumps a counter and the loop goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use monitor_common::user::decode;
use monitor_model::Input;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
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

#[instrument(name = "ebpf_reader", skip_all)]
async fn run(
    mut fd: AsyncFd<RingBuf<MapData>>,
    tx: mpsc::Sender<Vec<Input>>,
    mut decoder: Decoder,
) {
    loop {
        let mut guard = tokio::select! {
            ready = fd.readable_mut() => match ready {
                Ok(guard) => guard,
                Err(error) => {
                    warn!(%error, "ring buffer fd failed: eBPF events stop");
                    return;
                }
            },
            () = tx.closed() => return,
        };
        let (batch, drained) = decoder.drain(guard.get_inner_mut());
        // Only an emptied ring may wait for the next wake-up: the kernel
        // wakes the reader when data arrives, not while data sits there.
        if drained {
            guard.clear_ready();
        }
        drop(guard);
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return;
        }
    }
}
