//! The four AF_XDP rings, mmap'd from the socket: fill and completion (addresses,
//! `u64`) and rx and tx (descriptors, [`XdpDesc`]).
//!
//! Each ring is single-producer single-consumer shared with the kernel: one side
//! writes entries then publishes its index with a release store; the other side reads
//! that index with an acquire load before reading the entries. Indices are free
//! running `u32`s; `index & mask` is the slot. Local copies of both indices
//! (`cached_prod`, `cached_cons`) keep the shared cache lines out of the common case.
//!
//! The kernel's index values are not trusted: a consumer ring never reports more than
//! `size` entries available, and a producer ring never reports more than `size` free.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{DriverError, Result};

/// An rx or tx descriptor (`struct xdp_desc`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct XdpDesc {
    /// UMEM address (in unaligned mode: base, plus an offset in the top 16 bits).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Options (XDP_PKT_CONTD, ...).
    pub options: u32,
}

/// One mmap'd ring.
pub struct Ring<T: Copy> {
    map: *mut libc::c_void,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
    cached_prod: u32,
    cached_cons: u32,
}

// SAFETY: the ring is owned by one thread at a time (the port's worker); the mapping
// stays valid wherever the owner moves.
unsafe impl<T: Copy> Send for Ring<T> {}

impl<T: Copy> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("size", &self.size).finish()
    }
}

impl<T: Copy> Ring<T> {
    /// Maps the ring of `size` entries at page offset `pgoff` of socket `fd`, with the
    /// layout `off` reported by `XDP_MMAP_OFFSETS`.
    pub fn map(
        fd: &OwnedFd,
        pgoff: u64,
        size: u32,
        off: &libc::xdp_ring_offset,
        what: &'static str,
    ) -> Result<Self> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: mapping a region the kernel provides for this socket; no existing
        // memory is affected.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(DriverError::io(what, std::io::Error::last_os_error()));
        }
        let at = |o: u64| (map as usize + o as usize) as *mut u8;
        // SAFETY (for the loads below): the offsets come from the kernel for this
        // mapping, are inside it and are 4-byte aligned.
        let producer = at(off.producer) as *const AtomicU32;
        let consumer = at(off.consumer) as *const AtomicU32;
        let mut r = Self {
            map,
            map_len,
            producer,
            consumer,
            flags: at(off.flags) as *const AtomicU32,
            entries: at(off.desc) as *mut T,
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
        };
        // SAFETY: producer/consumer point into the live mapping.
        unsafe {
            r.cached_prod = (*r.producer).load(Ordering::Acquire);
            r.cached_cons = (*r.consumer).load(Ordering::Acquire);
        }
        Ok(r)
    }

    /// Entries the ring holds.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether the kernel asked to be woken up (XDP_RING_NEED_WAKEUP).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: flags points into the live mapping.
        unsafe { (*self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    // ---- producer side (fill, tx) ----

    /// Free entries, looking at the kernel's consumer index only when the local view
    /// shows fewer than `want`.
    #[inline]
    pub fn prod_free(&mut self, want: u32) -> u32 {
        let free = self.size.wrapping_sub(self.cached_prod.wrapping_sub(self.cached_cons));
        if free >= want {
            return free.min(self.size);
        }
        // SAFETY: consumer points into the live mapping.
        self.cached_cons = unsafe { (*self.consumer).load(Ordering::Acquire) };
        let used = self.cached_prod.wrapping_sub(self.cached_cons);
        // A kernel index claiming more than `size` consumed entries is nonsense:
        // report no room rather than overwrite entries the kernel still owns.
        if used > self.size {
            return 0;
        }
        self.size - used
    }

    /// Writes entry number `i` past the producer index (call after `prod_free`).
    #[inline]
    pub fn prod_write(&mut self, i: u32, v: T) {
        let slot = self.cached_prod.wrapping_add(i) & self.mask;
        // SAFETY: slot <= mask < size: inside the entries array of the mapping.
        unsafe { self.entries.add(slot as usize).write(v) };
    }

    /// Publishes `n` written entries to the kernel.
    #[inline]
    pub fn prod_submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        // SAFETY: producer points into the live mapping.
        unsafe { (*self.producer).store(self.cached_prod, Ordering::Release) };
    }

    /// Entries produced and not yet consumed by the kernel.
    #[inline]
    pub fn prod_outstanding(&mut self) -> u32 {
        // SAFETY: consumer points into the live mapping.
        self.cached_cons = unsafe { (*self.consumer).load(Ordering::Acquire) };
        self.cached_prod.wrapping_sub(self.cached_cons).min(self.size)
    }

    // ---- consumer side (rx, completion) ----

    /// Entries available to read, at most `max`.
    #[inline]
    pub fn cons_peek(&mut self, max: u32) -> u32 {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail < max {
            // SAFETY: producer points into the live mapping.
            self.cached_prod = unsafe { (*self.producer).load(Ordering::Acquire) };
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        // Never trust the kernel's index beyond the ring size.
        avail.min(self.size).min(max)
    }

    /// Reads entry number `i` past the consumer index (`i` < what `cons_peek` gave).
    #[inline]
    pub fn cons_read(&self, i: u32) -> T {
        let slot = self.cached_cons.wrapping_add(i) & self.mask;
        // SAFETY: slot <= mask < size: inside the entries array of the mapping.
        unsafe { self.entries.add(slot as usize).read() }
    }

    /// Hands `n` read entries back to the kernel.
    #[inline]
    pub fn cons_release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        // SAFETY: consumer points into the live mapping.
        unsafe { (*self.consumer).store(self.cached_cons, Ordering::Release) };
    }
}

impl<T: Copy> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`; no reference into it
        // outlives the ring.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}
