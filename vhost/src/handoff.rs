//! Hand-off of rings between the control thread (which speaks vhost-user) and the
//! worker (which polls the rings).
//!
//! The control thread queues ring changes and bumps an epoch; the worker checks the
//! epoch with one atomic load per burst call, and when it moved, applies the changes
//! and acknowledges. The control thread waits for that acknowledgement before it
//! answers a frontend that expects the ring to be stopped (GET_VRING_BASE) or goes on
//! to tear the connection down, so the worker never touches a ring the frontend
//! thinks is stopped. Guest memory stays mapped as long as any ring holds it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ring::packed::PackedRing;
use crate::ring::split::SplitRing;

/// A ring ready for the worker. Kept inline (not boxed) in the worker's ring table:
/// the hot path should not chase a pointer to reach it.
#[allow(clippy::large_enum_variant)]
pub enum Ring {
    /// Split layout.
    Split(SplitRing),
    /// Packed layout.
    Packed(PackedRing),
}

impl Ring {
    /// The ring position to report in GET_VRING_BASE (packed: wrap counter in bit 15).
    pub fn base(&self) -> u32 {
        match self {
            Ring::Split(r) => r.last_avail() as u32,
            Ring::Packed(r) => r.base(),
        }
    }
}

/// One change for the worker to apply.
pub enum Change {
    /// Start polling vring `idx` with this ring.
    Start(usize, Box<Ring>),
    /// Stop polling vring `idx`, recording its position in `bases`.
    Stop(usize),
}

/// State shared by one port's control thread and its worker.
pub struct Handoff {
    epoch: AtomicU64,
    acked: AtomicU64,
    changes: Mutex<Vec<Change>>,
    /// Position of each vring when the worker last gave it up (or as the frontend set
    /// it with SET_VRING_BASE).
    pub bases: Box<[AtomicU32]>,
    /// Set by the worker when a ring broke the rules: the control thread disconnects.
    pub broken: AtomicBool,
    /// Whether the first queue pair is being polled (the port's link state).
    pub link: AtomicBool,
    /// Set once a worker polls the port: from then on the control thread waits for
    /// every acknowledgement (a loaded machine can delay a worker by many ms).
    pub attached: AtomicBool,
}

/// How long the control thread waits for an acknowledgement while no worker has
/// polled the port yet (the changes are then applied when one starts).
const ACK_WAIT_UNATTACHED: Duration = Duration::from_millis(50);
/// How long it waits for a worker that polls the port. A polling worker answers
/// within microseconds; this bound only keeps a wedged worker from wedging the
/// control thread too.
const ACK_WAIT_ATTACHED: Duration = Duration::from_secs(10);

impl Handoff {
    /// State for `vrings` vrings.
    pub fn new(vrings: usize) -> Self {
        Self {
            epoch: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            changes: Mutex::new(Vec::new()),
            bases: (0..vrings).map(|_| AtomicU32::new(0)).collect(),
            broken: AtomicBool::new(false),
            link: AtomicBool::new(false),
            attached: AtomicBool::new(false),
        }
    }

    /// Control side: queues `changes`, then waits until the worker applied them (or
    /// until it is clear that no worker polls this port, in which case they are
    /// applied when one starts).
    pub fn submit(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let epoch = {
            let mut q = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            q.extend(changes);
            self.epoch.fetch_add(1, Ordering::AcqRel) + 1
        };
        let start = Instant::now();
        while self.acked.load(Ordering::Acquire) < epoch {
            let waited = start.elapsed();
            let attached = self.attached.load(Ordering::Acquire);
            if (!attached && waited > ACK_WAIT_UNATTACHED) || waited > ACK_WAIT_ATTACHED {
                if attached {
                    tracing::error!(
                        ?waited,
                        "worker did not take ring changes; going on without it"
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Worker side: whether changes are waiting. One atomic load.
    #[inline(always)]
    pub fn pending(&self, seen: u64) -> bool {
        self.epoch.load(Ordering::Acquire) != seen
    }

    /// Worker side: takes the queued changes and the epoch they bring the worker to.
    pub fn take(&self) -> (Vec<Change>, u64) {
        let mut q = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = self.epoch.load(Ordering::Acquire);
        (std::mem::take(&mut *q), epoch)
    }

    /// Worker side: the changes up to `epoch` are applied.
    pub fn ack(&self, epoch: u64) {
        self.acked.store(epoch, Ordering::Release);
    }
}
