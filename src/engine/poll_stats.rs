//! How busy a worker is: every poll round either moved packets (busy) or found every
//! queue empty (idle). The ratio is the one load figure a busy-polling core has (its
//! CPU time is always 100 %).
//!
//! The worker counts in plain locals ([`PollTally`]) and publishes them to the shared
//! [`WorkerPollStats`] every [`PUBLISH_EVERY_ROUNDS`] rounds and when it stops: one
//! relaxed store of two words every few hundred rounds, single writer, no atomic
//! read-modify-write and nothing shared per round.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Poll rounds between two publications of a worker's tallies.
pub const PUBLISH_EVERY_ROUNDS: u32 = 256;

/// A worker's poll-round counters as other threads see them.
#[derive(Debug)]
pub struct WorkerPollStats {
    core: usize,
    busy: AtomicU64,
    idle: AtomicU64,
}

impl WorkerPollStats {
    /// Zeroed counters for the worker pinned to `core`.
    pub fn new(core: usize) -> Self {
        Self { core, busy: AtomicU64::new(0), idle: AtomicU64::new(0) }
    }

    /// The worker's core.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Poll rounds that moved at least one packet (as last published).
    pub fn busy(&self) -> u64 {
        self.busy.load(Relaxed)
    }

    /// Poll rounds that found nothing to do (as last published).
    pub fn idle(&self) -> u64 {
        self.idle.load(Relaxed)
    }
}

/// The worker thread's own running count, published to a [`WorkerPollStats`].
#[derive(Debug)]
pub(crate) struct PollTally<'a> {
    shared: &'a WorkerPollStats,
    busy: u64,
    idle: u64,
    since_publish: u32,
}

impl<'a> PollTally<'a> {
    /// Continues from what `shared` holds (a worker that restarts its loop keeps its
    /// totals).
    pub(crate) fn new(shared: &'a WorkerPollStats) -> Self {
        Self { shared, busy: shared.busy(), idle: shared.idle(), since_publish: 0 }
    }

    /// Counts one poll round.
    #[inline]
    pub(crate) fn record(&mut self, moved_packets: bool) {
        if moved_packets {
            self.busy += 1;
        } else {
            self.idle += 1;
        }
        self.since_publish += 1;
        if self.since_publish >= PUBLISH_EVERY_ROUNDS {
            self.publish();
        }
    }

    /// Makes the counts visible to other threads.
    pub(crate) fn publish(&mut self) {
        self.since_publish = 0;
        self.shared.busy.store(self.busy, Relaxed);
        self.shared.idle.store(self.idle, Relaxed);
    }
}

impl Drop for PollTally<'_> {
    fn drop(&mut self) {
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_are_published_in_steps_and_at_the_end() {
        let s = WorkerPollStats::new(3);
        {
            let mut t = PollTally::new(&s);
            for i in 0..PUBLISH_EVERY_ROUNDS - 1 {
                t.record(i % 4 == 0);
            }
            assert_eq!((s.busy(), s.idle()), (0, 0), "not yet published");
            t.record(true);
            assert_eq!(s.busy() + s.idle(), PUBLISH_EVERY_ROUNDS as u64);
            assert_eq!(s.busy(), PUBLISH_EVERY_ROUNDS as u64 / 4 + 1);
            t.record(false);
        }
        assert_eq!(s.busy() + s.idle(), PUBLISH_EVERY_ROUNDS as u64 + 1, "published on drop");
        assert_eq!(s.core(), 3);
        // A new tally continues the totals.
        let mut t = PollTally::new(&s);
        t.record(true);
        t.publish();
        assert_eq!(s.busy(), PUBLISH_EVERY_ROUNDS as u64 / 4 + 2);
    }
}
