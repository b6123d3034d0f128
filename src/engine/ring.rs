//! A bounded single-producer/single-consumer lock-free ring: the path packets take
//! from one worker to another.
//!
//! One [`Producer`] and one [`Consumer`] share a power-of-two array of slots and two
//! monotonically increasing indices, each on its own cache line: `tail` is written
//! only by the producer (release, after the slot is written), `head` only by the
//! consumer (release, after the slot is read). Each side also keeps a private copy of
//! the other side's index and reloads it (acquire) only when the copy says the ring is
//! full (producer) or empty (consumer), so in steady state a push or pop touches no
//! cache line the other core writes. No compare-and-swap, no lock.
//!
//! Whatever is still in the ring when both ends are gone is dropped with the ring
//! (packet buffers go back to their mempool).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Aligns its content to a cache line (128 bytes: adjacent-line prefetch on x86 pulls
/// lines in pairs) so that the two indices never share one.
#[repr(align(128))]
struct CachePadded<T>(T);

struct Shared<T> {
    /// Next slot the consumer reads; written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes; written by the producer only.
    tail: CachePadded<AtomicUsize>,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a slot is accessed by one side at a time: the producer writes slots in
// [tail, head + capacity) and publishes them with a release store of `tail`; the
// consumer reads slots in [head, tail) and hands them back with a release store of
// `head`. Each side acquires the other's index before touching a slot the other
// released, so no slot is ever accessed by both threads at once. Values of `T` move
// from one thread to the other, hence `T: Send`.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the ring owns values of `T`, which may be sent.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both ends are gone (we hold the last reference): drop what is left.
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        for i in head..tail {
            let slot = self.slots[i & self.mask].get_mut();
            // SAFETY: slots in [head, tail) were written by the producer and not yet
            // read by the consumer: each holds an initialized value, dropped once here.
            unsafe { slot.assume_init_drop() };
        }
    }
}

/// The sending end (one thread).
pub(crate) struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    /// The consumer's `head` as last read.
    head_cache: usize,
}

/// The receiving end (one thread).
pub(crate) struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    /// The producer's `tail` as last read.
    tail_cache: usize,
}

/// A ring holding at most `capacity` values, rounded up to a power of two (at least 2).
pub(crate) fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        mask: cap - 1,
        slots,
    });
    (
        Producer { shared: shared.clone(), tail: 0, head_cache: 0 },
        Consumer { shared, head: 0, tail_cache: 0 },
    )
}

impl<T> Producer<T> {
    /// The number of values the ring holds at most.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Appends `v`; gives it back when the ring is full.
    #[inline]
    pub(crate) fn push(&mut self, v: T) -> Result<(), T> {
        let cap = self.shared.mask + 1;
        if self.tail.wrapping_sub(self.head_cache) >= cap {
            self.head_cache = self.shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cache) >= cap {
                return Err(v);
            }
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: tail - head < capacity, so this slot is outside [head, tail): the
        // consumer has released it (acquire load of `head` above or earlier) and will
        // not read it before the release store of `tail` below. Only this producer
        // writes slots. The slot holds no live value (it was never written or was
        // moved out by the consumer), so nothing is leaked by overwriting it.
        unsafe { (*slot.get()).write(v) };
        self.tail = self.tail.wrapping_add(1);
        self.shared.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }
}

impl<T> Consumer<T> {
    /// Takes the oldest value, if any.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.head == self.tail_cache {
            self.tail_cache = self.shared.tail.0.load(Ordering::Acquire);
            if self.head == self.tail_cache {
                return None;
            }
        }
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: head < tail (as acquired from the producer's release store), so the
        // producer wrote this slot before publishing `tail` and will not touch it
        // again until `head` moves past it (release store below). The value is moved
        // out exactly once: `head` advances right after.
        let v = unsafe { (*slot.get()).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.shared.head.0.store(self.head, Ordering::Release);
        Some(v)
    }

    /// Whether the ring looked empty (a hint: the producer may be pushing).
    #[inline]
    pub(crate) fn is_empty(&mut self) -> bool {
        if self.head != self.tail_cache {
            return false;
        }
        self.tail_cache = self.shared.tail.0.load(Ordering::Acquire);
        self.head == self.tail_cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn fifo_full_and_empty() {
        let (mut p, mut c) = channel::<u32>(3);
        assert_eq!(p.capacity(), 4, "rounded up to a power of two");
        assert!(c.is_empty());
        assert_eq!(c.pop(), None);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9), "full");
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        assert_eq!(p.push(10), Err(10));
        let got: Vec<u32> = std::iter::from_fn(|| c.pop()).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        assert!(c.is_empty());
        // Many laps around the ring.
        for i in 0..1000 {
            p.push(i).unwrap();
            assert_eq!(c.pop(), Some(i));
        }
    }

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn values_left_in_the_ring_are_dropped_with_it() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut p, mut c) = channel(8);
        for _ in 0..5 {
            assert!(p.push(Counted(drops.clone())).is_ok());
        }
        drop(c.pop());
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(p);
        assert_eq!(drops.load(Ordering::Relaxed), 1, "the consumer still holds the ring");
        drop(c);
        assert_eq!(drops.load(Ordering::Relaxed), 5, "the 4 left are dropped once each");
    }

    #[test]
    fn two_threads_stress_in_order_nothing_lost() {
        const N: u64 = 2_000_000;
        let (mut p, mut c) = channel::<u64>(64);
        let producer = std::thread::spawn(move || {
            let mut full = 0u64;
            for i in 0..N {
                let mut v = i;
                loop {
                    match p.push(v) {
                        Ok(()) => break,
                        Err(back) => {
                            v = back;
                            full += 1;
                            std::hint::spin_loop();
                            if full.is_multiple_of(1024) {
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            }
            full
        });
        let mut next = 0u64;
        let mut spins = 0u64;
        while next < N {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v, next, "out of order or duplicated");
                    next += 1;
                }
                None => {
                    spins += 1;
                    if spins.is_multiple_of(1024) {
                        std::thread::yield_now();
                    }
                }
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pop(), None);
    }
}
