//! Mempool: fixed-size packet buffers carved from [`DmaMemory`], handed out as owned
//! [`PacketBuf`] handles that return to their pool when dropped.
//!
//! The design is DPDK's: one lock-free shared ring of free buffers per pool, and in
//! front of it a cache per thread, so that a core that allocates and frees in bursts
//! touches no shared cache line in the common case. Buffers move between the cache
//! and the shared ring in batches of [`CACHE_REFILL`].
//!
//! # Lifetime
//! A pool stays alive while any [`Mempool`] handle, any thread's cache of it, or any
//! [`PacketBuf`] from it exists. Buffers are not reference counted one by one (that
//! would put an atomic on every packet); instead the pool counts buffers outside its
//! shared ring in bulk and is released when the last handle and the last buffer are
//! gone. A thread's cache holds a handle until the thread exits or calls
//! [`Mempool::release_thread_cache`].

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::error::{DriverError, Result};
use crate::mem::{DmaMemory, IovaMode, HUGEPAGE_SIZE};

/// Alignment of every buffer slot.
pub const CACHE_LINE: usize = 64;
/// Default bytes of packet data a buffer holds.
pub const DEFAULT_DATA_ROOM: usize = 2048;
/// Default bytes reserved in front of the data for headers pushed later.
pub const DEFAULT_HEADROOM: usize = 128;
/// Buffers moved between a thread cache and the shared ring at once.
pub const CACHE_REFILL: usize = 256;
/// A thread cache holding more than this spills back down to [`CACHE_REFILL`].
pub const CACHE_MAX: usize = 768;

/// Shape of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Number of buffers.
    pub count: u32,
    /// Bytes of packet data each buffer holds after the headroom.
    pub data_room: usize,
    /// Bytes in front of the data, for headers pushed with [`PacketBuf::prepend`].
    pub headroom: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self { count: 8192, data_room: DEFAULT_DATA_ROOM, headroom: DEFAULT_HEADROOM }
    }
}

impl MempoolConfig {
    /// Bytes between the starts of two buffers.
    pub fn stride(&self) -> usize {
        (self.headroom + self.data_room).next_multiple_of(CACHE_LINE)
    }

    /// DMA memory needed for this pool when packed into segments of `segment` bytes
    /// (buffers never straddle a segment boundary).
    fn bytes_needed(&self, segment: usize) -> Result<usize> {
        let stride = self.stride();
        if stride > segment {
            return Err(DriverError::InvalidArgument(format!(
                "buffer of {stride} bytes does not fit a {segment}-byte page"
            )));
        }
        let per_segment = segment / stride;
        Ok((self.count as usize).div_ceil(per_segment) * segment)
    }

    fn validate(&self) -> Result<()> {
        if self.count == 0 {
            return Err(DriverError::InvalidArgument("mempool needs at least one buffer".into()));
        }
        if self.data_room == 0 || self.headroom + self.data_room > u16::MAX as usize {
            return Err(DriverError::InvalidArgument(format!(
                "headroom {} + data room {} must be between 1 and {} bytes",
                self.headroom,
                self.data_room,
                u16::MAX
            )));
        }
        Ok(())
    }
}

struct PoolInner {
    mem: DmaMemory,
    free: ArrayQueue<u32>,
    cfg: MempoolConfig,
    /// Bytes of one buffer slot (headroom + data room).
    slot_size: u16,
    /// Mempool handles plus thread caches of this pool.
    handles: AtomicUsize,
    /// Buffers outside the shared ring (in thread caches or held as PacketBufs).
    outside_ring: AtomicUsize,
    released: AtomicBool,
}

impl PoolInner {
    /// Frees the pool once nothing refers to it any more. Called after `handles` or
    /// `outside_ring` dropped to zero.
    ///
    /// # Safety
    /// `this` must come from `Box::into_raw` in [`Mempool::new`].
    unsafe fn release_if_unused(this: NonNull<PoolInner>) {
        // SAFETY: the pool is alive: the caller held a handle or a buffer a moment ago
        // and `released` is only set by the one thread that frees it.
        let inner = unsafe { this.as_ref() };
        if inner.handles.load(Ordering::SeqCst) == 0
            && inner.outside_ring.load(Ordering::SeqCst) == 0
            && inner
                .released
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            // SAFETY: no handle, cache or buffer refers to the pool any more, and the
            // compare-exchange makes this thread the only one to free it.
            drop(unsafe { Box::from_raw(this.as_ptr()) });
        }
    }
}

/// A handle to a pool of packet buffers. Cloning is cheap; the pool lives on while
/// any handle or buffer does.
pub struct Mempool {
    inner: NonNull<PoolInner>,
}

// SAFETY: PoolInner is only accessed through atomics, the lock-free ring and
// immutable fields; buffers handed out are owned exclusively by their PacketBuf.
unsafe impl Send for Mempool {}
// SAFETY: as above; &Mempool allows only thread-safe operations.
unsafe impl Sync for Mempool {}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("config", &self.inner().cfg)
            .field("in_ring", &self.inner().free.len())
            .finish()
    }
}

impl Clone for Mempool {
    fn clone(&self) -> Self {
        self.inner().handles.fetch_add(1, Ordering::SeqCst);
        Self { inner: self.inner }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        if self.inner().handles.fetch_sub(1, Ordering::SeqCst) == 1 {
            // SAFETY: inner came from Box::into_raw in Mempool::new.
            unsafe { PoolInner::release_if_unused(self.inner) };
        }
    }
}

impl Mempool {
    /// A pool in freshly allocated hugepage memory with identity IOVAs.
    pub fn hugepages(cfg: MempoolConfig) -> Result<Self> {
        Self::hugepages_with_mode(cfg, IovaMode::Identity)
    }

    /// A pool in hugepage memory with the given translation mode.
    pub fn hugepages_with_mode(cfg: MempoolConfig, mode: IovaMode) -> Result<Self> {
        cfg.validate()?;
        let segment = if mode == IovaMode::Physical { HUGEPAGE_SIZE } else { usize::MAX };
        let bytes = if mode == IovaMode::Physical {
            cfg.bytes_needed(segment)?
        } else {
            cfg.count as usize * cfg.stride()
        };
        Self::new(DmaMemory::hugepages(bytes, mode)?, cfg)
    }

    /// A pool in ordinary locked pages (opt-in fallback for AF_XDP and tests).
    pub fn small_pages(cfg: MempoolConfig) -> Result<Self> {
        cfg.validate()?;
        Self::new(DmaMemory::with_small_pages(cfg.count as usize * cfg.stride())?, cfg)
    }

    /// Carves `cfg.count` buffers out of `mem`. In physical IOVA mode no buffer
    /// straddles a page boundary.
    pub fn new(mem: DmaMemory, cfg: MempoolConfig) -> Result<Self> {
        cfg.validate()?;
        let stride = cfg.stride();
        let segment =
            if mem.iova_mode() == IovaMode::Physical { mem.page_size() } else { mem.len() };
        if cfg.bytes_needed(segment)? > mem.len() || mem.len() > u32::MAX as usize {
            return Err(DriverError::InvalidArgument(format!(
                "{} buffers of {} bytes do not fit {} bytes of DMA memory (or it exceeds 4 GiB)",
                cfg.count,
                stride,
                mem.len()
            )));
        }
        let per_segment = segment / stride;
        let free = ArrayQueue::new(cfg.count as usize);
        for i in 0..cfg.count as usize {
            let off = (i / per_segment) * segment + (i % per_segment) * stride;
            free.push(off as u32).expect("ring sized for every buffer");
        }
        let inner = Box::new(PoolInner {
            mem,
            free,
            slot_size: (cfg.headroom + cfg.data_room) as u16,
            cfg,
            handles: AtomicUsize::new(1),
            outside_ring: AtomicUsize::new(0),
            released: AtomicBool::new(false),
        });
        Ok(Self { inner: NonNull::from(Box::leak(inner)) })
    }

    fn inner(&self) -> &PoolInner {
        // SAFETY: a handle keeps the pool alive.
        unsafe { self.inner.as_ref() }
    }

    /// The pool's shape.
    pub fn config(&self) -> MempoolConfig {
        self.inner().cfg
    }

    /// The memory the buffers live in.
    pub fn memory(&self) -> &DmaMemory {
        &self.inner().mem
    }

    /// Bytes between the starts of two buffer slots.
    pub fn stride(&self) -> usize {
        self.inner().cfg.stride()
    }

    /// Bytes of one buffer slot (headroom plus data room): what a device may write
    /// from a slot's first byte.
    pub fn slot_size(&self) -> usize {
        self.inner().slot_size as usize
    }

    /// The slot containing byte `off` of [`memory`](Self::memory): its index and the
    /// offset of its first byte. `None` when `off` lies outside every slot (beyond the
    /// last one, or in the padding at the end of a segment). For untrusted offsets
    /// coming back from a device.
    #[inline]
    pub fn slot_containing(&self, off: usize) -> Option<(u32, u32)> {
        let inner = self.inner();
        let stride = inner.cfg.stride();
        let (segment, per_segment) = if inner.mem.iova_mode() == IovaMode::Physical {
            let seg = inner.mem.page_size();
            (seg, seg / stride)
        } else {
            (usize::MAX, usize::MAX)
        };
        let (seg_idx, within) =
            if segment == usize::MAX { (0, off) } else { (off / segment, off % segment) };
        let in_seg = within / stride;
        if in_seg >= per_segment {
            return None;
        }
        let idx = seg_idx.checked_mul(per_segment.min(u32::MAX as usize))?.checked_add(in_seg)?;
        if idx >= inner.cfg.count as usize {
            return None;
        }
        let start = if segment == usize::MAX {
            in_seg * stride
        } else {
            seg_idx * segment + in_seg * stride
        };
        Some((idx as u32, start as u32))
    }

    /// Offset of slot number `idx` in [`memory`](Self::memory), or `None` beyond the
    /// last slot. The inverse of [`slot_containing`](Self::slot_containing).
    pub fn slot_offset_of(&self, idx: u32) -> Option<u32> {
        let inner = self.inner();
        if idx >= inner.cfg.count {
            return None;
        }
        let stride = inner.cfg.stride();
        let i = idx as usize;
        let off = if inner.mem.iova_mode() == IovaMode::Physical {
            let seg = inner.mem.page_size();
            let per = seg / stride;
            (i / per) * seg + (i % per) * stride
        } else {
            i * stride
        };
        u32::try_from(off).ok()
    }

    /// Turns a slot handed out with [`PacketBuf::into_raw`] back into a buffer with
    /// `len` bytes of data starting `data_off` bytes into the slot.
    ///
    /// # Safety
    /// `slot_off` must be the offset returned by `into_raw` of a buffer of this pool
    /// that has not been turned back yet (exactly once per `into_raw`), and nothing
    /// else may access the slot any more. `data_off + len` must not exceed
    /// [`slot_size`](Self::slot_size) (checked; panics otherwise).
    #[inline]
    pub unsafe fn buf_from_raw(&self, slot_off: u32, data_off: u16, len: u16) -> PacketBuf {
        let inner = self.inner();
        assert!(data_off as usize + len as usize <= inner.slot_size as usize);
        PacketBuf {
            pool: self.inner,
            // SAFETY: the caller guarantees slot_off is a slot of this pool, so it
            // lies inside the memory region.
            slot: unsafe { NonNull::new_unchecked(inner.mem.as_ptr().add(slot_off as usize)) },
            off: slot_off,
            data_off,
            len,
        }
    }

    /// Whether `buf` belongs to this pool.
    #[inline]
    pub fn owns(&self, buf: &PacketBuf) -> bool {
        buf.pool == self.inner
    }

    /// Buffers in the shared ring (not counting thread caches and packets in use).
    pub fn in_ring(&self) -> usize {
        self.inner().free.len()
    }

    /// Buffers outside the shared ring: held as packets or parked in thread caches.
    pub fn outside_ring(&self) -> usize {
        self.inner().outside_ring.load(Ordering::Relaxed)
    }

    /// Buffers parked in this thread's cache of the pool.
    pub fn in_thread_cache(&self) -> usize {
        with_cache(self.inner, |c| c.offs.len()).unwrap_or(0)
    }

    /// Allocates one buffer (empty, data starting after the headroom).
    pub fn alloc(&self) -> Option<PacketBuf> {
        let mut v = Vec::with_capacity(1);
        self.alloc_bulk(&mut v, 1);
        v.pop()
    }

    /// Appends up to `n` fresh buffers to `out`, returning how many it appended (fewer
    /// only when the pool runs dry).
    #[inline]
    pub fn alloc_bulk(&self, out: &mut Vec<PacketBuf>, n: usize) -> usize {
        let inner = self.inner();
        let headroom = inner.cfg.headroom as u16;
        let base = inner.mem.as_ptr();
        let pool = self.inner;
        let got = with_cache(pool, |cache| {
            if cache.offs.len() < n {
                cache.refill(inner, n);
            }
            let take = n.min(cache.offs.len());
            let start = cache.offs.len() - take;
            // One reservation for the burst: a slice iterator knows its length.
            out.extend(cache.offs[start..].iter().map(|&off| PacketBuf {
                pool,
                // SAFETY: off < mem.len() by construction of the ring contents.
                slot: unsafe { NonNull::new_unchecked(base.add(off as usize)) },
                off,
                data_off: headroom,
                len: 0,
            }));
            cache.offs.truncate(start);
            take
        });
        match got {
            Some(n) => n,
            // The thread is exiting and its cache is gone: take from the ring.
            None => {
                let mut taken = 0;
                while taken < n {
                    let Some(off) = inner.free.pop() else { break };
                    inner.outside_ring.fetch_add(1, Ordering::SeqCst);
                    out.push(PacketBuf {
                        pool,
                        // SAFETY: as above.
                        slot: unsafe { NonNull::new_unchecked(base.add(off as usize)) },
                        off,
                        data_off: headroom,
                        len: 0,
                    });
                    taken += 1;
                }
                taken
            }
        }
    }

    /// Returns this thread's cached buffers of the pool to the shared ring and drops
    /// the thread's hold on the pool.
    pub fn release_thread_cache(&self) {
        let pool = self.inner;
        let _ = CACHES.try_with(|c| {
            // SAFETY: CACHES is only touched by this thread, never re-entrantly.
            let caches = unsafe { &mut *c.get() };
            if let Some(i) = caches.iter().position(|c| c.pool == pool) {
                caches.swap_remove(i);
            }
        });
    }
}

/// One thread's cache of one pool.
struct LocalCache {
    pool: NonNull<PoolInner>,
    offs: Vec<u32>,
}

impl LocalCache {
    // Cold and out of line: keeps the per-buffer alloc and free paths small enough
    // to inline into the caller's burst loop.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, inner: &PoolInner, n: usize) {
        let want = CACHE_REFILL + n - self.offs.len();
        let mut got = 0;
        while got < want {
            match inner.free.pop() {
                Some(off) => self.offs.push(off),
                None => break,
            }
            got += 1;
        }
        inner.outside_ring.fetch_add(got, Ordering::SeqCst);
    }

    #[cold]
    #[inline(never)]
    fn spill_to(&mut self, inner: &PoolInner, keep: usize) {
        let n = self.offs.len().saturating_sub(keep);
        for off in self.offs.drain(keep..) {
            inner.free.push(off).expect("ring has room for every buffer of the pool");
        }
        inner.outside_ring.fetch_sub(n, Ordering::SeqCst);
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        // SAFETY: this cache holds a handle, so the pool is alive.
        let inner = unsafe { self.pool.as_ref() };
        self.spill_to(inner, 0);
        if inner.handles.fetch_sub(1, Ordering::SeqCst) == 1 {
            // SAFETY: pool came from Box::into_raw.
            unsafe { PoolInner::release_if_unused(self.pool) };
        }
    }
}

thread_local! {
    static CACHES: UnsafeCell<Vec<LocalCache>> = const { UnsafeCell::new(Vec::new()) };
}

/// Runs `f` on this thread's cache of `pool`, creating it if needed. `None` when the
/// thread's caches are already destroyed (thread exit).
///
/// The pool must be alive (the caller holds a handle or a buffer of it).
#[inline]
fn with_cache<R>(pool: NonNull<PoolInner>, f: impl FnOnce(&mut LocalCache) -> R) -> Option<R> {
    CACHES
        .try_with(|c| {
            // SAFETY: CACHES belongs to this thread; `f` never reaches back into
            // CACHES (it only moves buffer offsets), so the borrow is unique.
            let caches = unsafe { &mut *c.get() };
            let i = match caches.iter().position(|c| c.pool == pool) {
                Some(i) => i,
                None => new_cache(caches, pool),
            };
            f(&mut caches[i])
        })
        .ok()
}

/// Creates this thread's cache of `pool` (once per thread and pool); returns its index.
/// The pool must be alive.
#[cold]
#[inline(never)]
fn new_cache(caches: &mut Vec<LocalCache>, pool: NonNull<PoolInner>) -> usize {
    // SAFETY: the caller guarantees the pool is alive.
    unsafe { pool.as_ref() }.handles.fetch_add(1, Ordering::SeqCst);
    caches.push(LocalCache { pool, offs: Vec::with_capacity(CACHE_MAX + CACHE_REFILL) });
    caches.len() - 1
}

/// Returns a buffer straight to the shared ring (the thread's cache is gone).
#[cold]
#[inline(never)]
fn free_uncached(pool: NonNull<PoolInner>, off: u32) {
    // SAFETY: the buffer being freed keeps its pool alive until this returns.
    let inner = unsafe { pool.as_ref() };
    inner.free.push(off).expect("ring has room for every buffer of the pool");
    if inner.outside_ring.fetch_sub(1, Ordering::SeqCst) == 1 {
        // SAFETY: pool came from Box::into_raw.
        unsafe { PoolInner::release_if_unused(pool) };
    }
}

/// An owned packet buffer from a [`Mempool`]: `len` bytes of data starting
/// `headroom()` bytes into its slot. Dropping it returns the buffer to its pool.
pub struct PacketBuf {
    pool: NonNull<PoolInner>,
    slot: NonNull<u8>,
    off: u32,
    data_off: u16,
    len: u16,
}

// SAFETY: a PacketBuf owns its slot exclusively; returning it to the pool is
// thread-safe from any thread.
unsafe impl Send for PacketBuf {}
// SAFETY: &PacketBuf only reads the slot, which nobody else writes.
unsafe impl Sync for PacketBuf {}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("off", &self.off)
            .field("data_off", &self.data_off)
            .field("len", &self.len)
            .finish()
    }
}

impl PacketBuf {
    #[inline]
    fn pool(&self) -> &PoolInner {
        // SAFETY: a live buffer keeps its pool alive.
        unsafe { self.pool.as_ref() }
    }

    #[inline]
    fn slot_size(&self) -> usize {
        self.pool().slot_size as usize
    }

    /// Bytes of packet data.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the buffer holds no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.data_off as usize
    }

    /// Free bytes after the data.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.slot_size() - self.data_off as usize - self.len as usize
    }

    /// The packet data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: data_off + len <= slot_size, inside the slot this buffer owns.
        unsafe {
            std::slice::from_raw_parts(self.slot.as_ptr().add(self.data_off as usize), self.len())
        }
    }

    /// The packet data, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and &mut self gives exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.slot.as_ptr().add(self.data_off as usize),
                self.len(),
            )
        }
    }

    /// Pointer to the first data byte (for DMA descriptors and copies).
    #[inline]
    pub fn data_ptr(&mut self) -> *mut u8 {
        // SAFETY: data_off <= slot_size: inside (or one past) the slot.
        unsafe { self.slot.as_ptr().add(self.data_off as usize) }
    }

    /// Everything from the first data byte to the end of the slot, writable: fill it,
    /// then call [`set_len`](Self::set_len).
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        let n = self.slot_size() - self.data_off as usize;
        // SAFETY: data_off + n == slot_size, inside the owned slot.
        unsafe { std::slice::from_raw_parts_mut(self.slot.as_ptr().add(self.data_off as usize), n) }
    }

    /// Bytes [`room_mut`](Self::room_mut) offers.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slot_size() - self.data_off as usize
    }

    /// Sets the data length. Panics if it exceeds [`capacity`](Self::capacity)
    /// (a caller bug, never a peer's input: check against `capacity` first).
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "PacketBuf::set_len beyond the buffer");
        self.len = len as u16;
    }

    /// Copies `bytes` in as the whole packet. Returns false (and leaves the buffer
    /// empty) if they do not fit.
    #[inline]
    pub fn copy_from(&mut self, bytes: &[u8]) -> bool {
        let room = self.room_mut();
        if bytes.len() > room.len() {
            self.len = 0;
            return false;
        }
        room[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len() as u16;
        true
    }

    /// Grows the data by `n` bytes at the front (for a header), returning the new
    /// front, or `None` when the headroom is too small.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.data_off as usize {
            return None;
        }
        self.data_off -= n as u16;
        self.len += n as u16;
        Some(&mut self.data_mut()[..n])
    }

    /// Removes `n` bytes from the front of the data. Returns false if there are fewer.
    #[inline]
    pub fn adj(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.data_off += n as u16;
        self.len -= n as u16;
        true
    }

    /// Removes `n` bytes from the end of the data. Returns false if there are fewer.
    #[inline]
    pub fn trim(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.len -= n as u16;
        true
    }

    /// Resets the buffer to empty with the pool's default headroom.
    #[inline]
    pub fn reset(&mut self) {
        self.data_off = self.pool().cfg.headroom as u16;
        self.len = 0;
    }

    /// Offset of the buffer's slot in its pool's memory.
    #[inline]
    pub fn slot_offset(&self) -> u32 {
        self.off
    }

    /// Gives up the handle without returning the buffer to its pool, for a device
    /// that owns the slot for a while (an AF_XDP fill or tx ring). Returns the slot's
    /// offset; [`Mempool::buf_from_raw`] turns it back into a buffer. A slot never
    /// turned back stays out of the pool (and keeps the pool's memory alive).
    #[inline]
    pub fn into_raw(self) -> u32 {
        let off = self.off;
        std::mem::forget(self);
        off
    }

    /// The IOVA of the first data byte.
    #[inline]
    pub fn iova(&self) -> u64 {
        self.pool().mem.iova_at(self.off as usize + self.data_off as usize)
    }
}

impl Drop for PacketBuf {
    #[inline]
    fn drop(&mut self) {
        let off = self.off;
        let pool = self.pool;
        let cached = with_cache(pool, |cache| {
            cache.offs.push(off);
            if cache.offs.len() > CACHE_MAX {
                // SAFETY: the cache holds a handle: the pool is alive.
                cache.spill_to(unsafe { pool.as_ref() }, CACHE_REFILL);
            }
        });
        if cached.is_none() {
            free_uncached(pool, off);
        }
    }
}

/// Drops the first `n` buffers of `bufs` (keeping the rest, in order), returning them
/// to their pool with one visit to this thread's cache when they share a pool (the
/// common case after a burst was transmitted): dropping them one by one costs a
/// thread-local lookup per packet.
#[inline]
pub fn drop_front(bufs: &mut Vec<PacketBuf>, n: usize) {
    let n = n.min(bufs.len());
    if n == 0 {
        return;
    }
    let pool = bufs[0].pool;
    if bufs[..n].iter().all(|b| b.pool == pool) {
        let cached = with_cache(pool, |cache| {
            for b in &bufs[..n] {
                cache.offs.push(b.off);
                if cache.offs.len() > CACHE_MAX {
                    // SAFETY: the cache holds a handle: the pool is alive.
                    cache.spill_to(unsafe { pool.as_ref() }, CACHE_REFILL);
                }
            }
        });
        if cached.is_some() {
            let rest = bufs.len() - n;
            // SAFETY: the first n buffers' slots are back in the cache, so their
            // handles are forgotten (not dropped); the remaining `rest` elements are
            // moved to the front (ranges may overlap: `copy`), and the length then
            // covers exactly those initialized elements.
            unsafe {
                let p = bufs.as_mut_ptr();
                std::ptr::copy(p.add(n), p, rest);
                bufs.set_len(rest);
            }
            return;
        }
    }
    bufs.drain(..n);
}

/// A mempool shared by reference count, for APIs that prefer `Arc`.
pub type SharedMempool = Arc<Mempool>;

#[cfg(test)]
mod tests {
    use super::*;

    fn small(count: u32) -> Mempool {
        Mempool::small_pages(MempoolConfig { count, ..Default::default() }).unwrap()
    }

    #[test]
    fn alloc_write_read_and_return() {
        let pool = small(64);
        let mut bufs = Vec::new();
        assert_eq!(pool.alloc_bulk(&mut bufs, 32), 32);
        for (i, b) in bufs.iter_mut().enumerate() {
            assert_eq!(b.headroom(), DEFAULT_HEADROOM);
            assert_eq!(b.capacity(), DEFAULT_DATA_ROOM);
            assert!(b.copy_from(&[i as u8; 100]));
        }
        for (i, b) in bufs.iter().enumerate() {
            assert_eq!(b.data(), &[i as u8; 100][..]);
        }
        drop(bufs);
        assert_eq!(pool.outside_ring(), pool.in_thread_cache());
    }

    #[test]
    fn pool_runs_dry_and_recovers() {
        let pool = small(40);
        let mut bufs = Vec::new();
        assert_eq!(pool.alloc_bulk(&mut bufs, 32), 32);
        assert_eq!(pool.alloc_bulk(&mut bufs, 32), 8);
        assert_eq!(pool.alloc_bulk(&mut bufs, 1), 0);
        bufs.truncate(10);
        assert_eq!(pool.alloc_bulk(&mut bufs, 32), 30);
    }

    #[test]
    fn buffers_are_distinct_and_aligned() {
        let pool = small(256);
        let mut bufs = Vec::new();
        pool.alloc_bulk(&mut bufs, 256);
        let mut addrs: Vec<usize> = bufs.iter_mut().map(|b| b.data_ptr() as usize).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 256);
        for w in addrs.windows(2) {
            assert!(w[1] - w[0] >= MempoolConfig::default().stride());
        }
        for a in addrs {
            assert_eq!((a - DEFAULT_HEADROOM) % CACHE_LINE, 0);
        }
    }

    #[test]
    fn prepend_adj_trim() {
        let pool = small(4);
        let mut b = pool.alloc().unwrap();
        assert!(b.copy_from(b"payload"));
        b.prepend(4).unwrap().copy_from_slice(b"HDR:");
        assert_eq!(b.data(), b"HDR:payload");
        assert!(b.prepend(DEFAULT_HEADROOM).is_none());
        assert!(b.adj(4));
        assert!(b.trim(3));
        assert_eq!(b.data(), b"payl");
        assert!(!b.trim(5));
        let big = vec![0u8; DEFAULT_DATA_ROOM + 1];
        assert!(!b.copy_from(&big));
        assert!(b.is_empty());
    }

    #[test]
    fn buffers_freed_on_other_threads_come_back() {
        let pool = small(512);
        let mut bufs = Vec::new();
        assert_eq!(pool.alloc_bulk(&mut bufs, 500), 500);
        std::thread::spawn(move || drop(bufs)).join().unwrap();
        // The other thread's cache spilled when it exited.
        pool.release_thread_cache();
        assert_eq!(pool.outside_ring(), 0);
        assert_eq!(pool.in_ring(), 512);
    }

    #[test]
    fn buffers_outlive_every_handle() {
        let pool = small(8);
        let b = pool.alloc().unwrap();
        pool.release_thread_cache();
        drop(pool);
        // The pool is still alive for the buffer: reading it is valid.
        assert_eq!(b.len(), 0);
        std::thread::spawn(move || drop(b)).join().unwrap();
    }

    #[test]
    fn drop_front_returns_buffers_and_keeps_the_rest_in_order() {
        let pool = small(64);
        let mut bufs = Vec::new();
        pool.alloc_bulk(&mut bufs, 10);
        for (i, b) in bufs.iter_mut().enumerate() {
            assert!(b.copy_from(&[i as u8; 4]));
        }
        let before = pool.in_thread_cache();
        drop_front(&mut bufs, 4);
        assert_eq!(bufs.len(), 6);
        assert_eq!(pool.in_thread_cache(), before + 4);
        for (i, b) in bufs.iter().enumerate() {
            assert_eq!(b.data(), &[(i + 4) as u8; 4]);
        }
        drop_front(&mut bufs, 100);
        assert!(bufs.is_empty());
        assert_eq!(pool.in_thread_cache(), before + 10);
        // Buffers of two pools: falls back to dropping one by one.
        let other = small(8);
        pool.alloc_bulk(&mut bufs, 2);
        other.alloc_bulk(&mut bufs, 2);
        drop_front(&mut bufs, 3);
        assert_eq!(bufs.len(), 1);
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(Mempool::small_pages(MempoolConfig { count: 0, ..Default::default() }).is_err());
        assert!(Mempool::small_pages(MempoolConfig { count: 1, data_room: 70000, headroom: 0 })
            .is_err());
    }
}
