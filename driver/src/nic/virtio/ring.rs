//! Split virtqueues (virtio 1.2 section 2.7) in DMA memory, driver side: the rx
//! queue keeps one buffer posted per descriptor, the tx queue hands out descriptors
//! from a free list. Every id and length the device writes into the used ring is
//! bounds-checked. Like the igbvf rings, this touches memory only: the caller does
//! the notification the methods ask for.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use super::regs::*;
use crate::mempool::{Mempool, PacketBuf};
use crate::port::{bump, QueueCounters};

/// Largest frame podwire sends in one descriptor.
pub const TX_MAX_LEN: usize = 65535 - NET_HDR_LEN;

/// One split virtqueue's memory: descriptor table, avail ring, used ring.
#[derive(Debug)]
pub struct SplitQueue {
    base: NonNull<u8>,
    iova: u64,
    size: u16,
    avail_off: usize,
    used_off: usize,
    /// Next avail index the driver publishes (shadow of avail.idx).
    avail_idx: u16,
    /// Used entries consumed so far.
    last_used: u16,
}

// SAFETY: the queue memory belongs to this queue (and the device) alone.
unsafe impl Send for SplitQueue {}

impl SplitQueue {
    fn layout(size: u16) -> (usize, usize, usize) {
        let n = size as usize;
        let avail_off = 16 * n;
        let used_off = (avail_off + 6 + 2 * n).next_multiple_of(64);
        (avail_off, used_off, used_off + 6 + 8 * n)
    }

    /// Bytes a queue of `size` descriptors needs.
    pub fn bytes(size: u16) -> usize {
        Self::layout(size).2.next_multiple_of(64)
    }

    /// A queue over zeroed memory.
    ///
    /// # Safety
    /// `base..base + bytes(size)` must be valid, 64-byte aligned memory that lives as
    /// long as the queue and that only this queue and the device use.
    pub unsafe fn new(base: NonNull<u8>, iova: u64, size: u16) -> Self {
        let (avail_off, used_off, len) = Self::layout(size);
        // SAFETY: the caller guarantees the range.
        unsafe { std::ptr::write_bytes(base.as_ptr(), 0, len) };
        Self { base, iova, size, avail_off, used_off, avail_idx: 0, last_used: 0 }
    }

    /// Number of descriptors (a power of two).
    pub fn size(&self) -> u16 {
        self.size
    }

    /// IOVA of the descriptor table.
    pub fn desc_iova(&self) -> u64 {
        self.iova
    }

    /// IOVA of the avail (driver) ring.
    pub fn avail_iova(&self) -> u64 {
        self.iova + self.avail_off as u64
    }

    /// IOVA of the used (device) ring.
    pub fn used_iova(&self) -> u64 {
        self.iova + self.used_off as u64
    }

    #[inline(always)]
    fn at<T>(&self, off: usize) -> *mut T {
        // SAFETY: callers pass offsets inside the layout computed in `new`.
        unsafe { self.base.as_ptr().add(off).cast() }
    }

    /// Writes descriptor `id` (`id < size`).
    #[inline(always)]
    pub fn set_desc(&self, id: u16, addr: u64, len: u32, flags: u16) {
        let id = (id & (self.size - 1)) as usize;
        let p = self.at::<u64>(16 * id);
        // SAFETY: descriptor id is inside the table (masked), 16-byte aligned.
        unsafe {
            p.write_volatile(addr.to_le());
            p.add(1).write_volatile((len as u64 | (flags as u64) << 32).to_le());
        }
    }

    /// Sets the `next` field of descriptor `id` (call after [`set_desc`](Self::set_desc),
    /// which clears it).
    pub fn set_next(&self, id: u16, next: u16) {
        let id = (id & (self.size - 1)) as usize;
        // SAFETY: `next` is the last u16 of descriptor id, inside the table (masked).
        unsafe { self.at::<u16>(16 * id + 14).write_volatile(next.to_le()) };
    }

    /// The `next` field of descriptor `id`.
    pub fn next(&self, id: u16) -> u16 {
        let id = (id & (self.size - 1)) as usize;
        // SAFETY: as in `set_next`.
        u16::from_le(unsafe { self.at::<u16>(16 * id + 14).read_volatile() })
    }

    /// Tests: a second handle on the same queue memory, for a simulated device that
    /// runs while the driver side is borrowed. Only its `device_*` and read methods
    /// may be used.
    #[cfg(test)]
    pub(crate) fn device_view(&self) -> SplitQueue {
        SplitQueue { ..*self }
    }

    /// Reads descriptor `id`: (addr, len, flags).
    pub fn desc(&self, id: u16) -> (u64, u32, u16) {
        let id = (id & (self.size - 1)) as usize;
        let p = self.at::<u64>(16 * id);
        // SAFETY: as in `set_desc`.
        let (a, b) = unsafe { (p.read_volatile(), p.add(1).read_volatile()) };
        (u64::from_le(a), u64::from_le(b) as u32, (u64::from_le(b) >> 32) as u16)
    }

    /// Makes descriptor `id` available (published by [`publish`](Self::publish)).
    #[inline(always)]
    pub fn push_avail(&mut self, id: u16) {
        let slot = (self.avail_idx & (self.size - 1)) as usize;
        // SAFETY: ring[slot] lies inside the avail ring.
        unsafe { self.at::<u16>(self.avail_off + 4 + 2 * slot).write_volatile(id.to_le()) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Publishes pushed descriptors to the device (avail.idx).
    #[inline(always)]
    pub fn publish(&self) {
        fence(Ordering::Release);
        // SAFETY: avail.idx is at avail_off + 2.
        unsafe { self.at::<u16>(self.avail_off + 2).write_volatile(self.avail_idx.to_le()) };
    }

    /// Whether the device asks to be notified (used.flags lacks NO_NOTIFY). Call
    /// after [`publish`](Self::publish).
    #[inline(always)]
    pub fn needs_notify(&self) -> bool {
        fence(Ordering::SeqCst);
        // SAFETY: used.flags is at used_off.
        let flags = u16::from_le(unsafe { self.at::<u16>(self.used_off).read_volatile() });
        flags & VRING_USED_F_NO_NOTIFY == 0
    }

    /// The device's used index.
    #[inline(always)]
    fn used_idx(&self) -> u16 {
        // SAFETY: used.idx is at used_off + 2.
        u16::from_le(unsafe { self.at::<u16>(self.used_off + 2).read_volatile() })
    }

    /// The next used entry (id, len), if the device returned one.
    #[inline(always)]
    pub fn take_used(&mut self) -> Option<(u32, u32)> {
        if self.last_used == self.used_idx() {
            return None;
        }
        fence(Ordering::Acquire);
        let slot = (self.last_used & (self.size - 1)) as usize;
        let p = self.at::<u32>(self.used_off + 4 + 8 * slot);
        // SAFETY: ring[slot] lies inside the used ring.
        let (id, len) = unsafe { (p.read_volatile(), p.add(1).read_volatile()) };
        self.last_used = self.last_used.wrapping_add(1);
        Some((u32::from_le(id), u32::from_le(len)))
    }

    /// Device side, for tests and benchmarks: returns descriptor `id` with `len`
    /// bytes written, as a device would.
    pub fn device_put_used(&self, id: u32, len: u32) {
        let idx = self.used_idx();
        let slot = (idx & (self.size - 1)) as usize;
        let p = self.at::<u32>(self.used_off + 4 + 8 * slot);
        // SAFETY: ring[slot] lies inside the used ring; used.idx at used_off + 2.
        unsafe {
            p.write_volatile(id.to_le());
            p.add(1).write_volatile(len.to_le());
            fence(Ordering::Release);
            self.at::<u16>(self.used_off + 2).write_volatile(idx.wrapping_add(1).to_le());
        }
    }

    /// Device side, for tests and benchmarks: the avail entries not yet seen since
    /// `from`, as (next index, ids).
    pub fn device_avail(&self, from: u16, out: &mut Vec<u16>) -> u16 {
        // SAFETY: avail.idx and ring entries are inside the avail ring.
        let idx = u16::from_le(unsafe { self.at::<u16>(self.avail_off + 2).read_volatile() });
        let mut i = from;
        while i != idx {
            let slot = (i & (self.size - 1)) as usize;
            // SAFETY: as above.
            out.push(u16::from_le(unsafe {
                self.at::<u16>(self.avail_off + 4 + 2 * slot).read_volatile()
            }));
            i = i.wrapping_add(1);
        }
        idx
    }
}

/// The rx queue: one buffer per descriptor, descriptor id = slot.
#[derive(Debug)]
pub struct RxQueue {
    q: SplitQueue,
    bufs: Box<[Option<PacketBuf>]>,
    spare: Vec<PacketBuf>,
    pool: Mempool,
    /// Used entries still to drop: the tail buffers of a frame merged over several.
    skip: u16,
}

impl RxQueue {
    /// An rx queue posting buffers from `pool`.
    pub fn new(q: SplitQueue, pool: Mempool) -> Self {
        let n = q.size as usize;
        Self {
            bufs: (0..n).map(|_| None).collect(),
            spare: Vec::with_capacity(n),
            q,
            pool,
            skip: 0,
        }
    }

    /// The queue memory.
    pub fn queue(&self) -> &SplitQueue {
        &self.q
    }

    #[inline(always)]
    fn post(&mut self, id: u16, mut buf: PacketBuf) {
        buf.reset();
        // The device writes the 12-byte header into the headroom, then the frame at
        // the buffer's data start.
        let addr = buf.iova() - NET_HDR_LEN as u64;
        let len = (buf.capacity() + NET_HDR_LEN) as u32;
        self.q.set_desc(id, addr, len, VRING_DESC_F_WRITE);
        self.q.push_avail(id);
        self.bufs[id as usize] = Some(buf);
    }

    /// Posts a buffer in every descriptor. False when the pool has too few, or its
    /// buffers have less than 12 bytes of headroom.
    pub fn fill(&mut self) -> bool {
        let n = self.q.size as usize;
        let mut v = Vec::with_capacity(n);
        if self.pool.alloc_bulk(&mut v, n) < n || v[0].headroom() < NET_HDR_LEN {
            return false;
        }
        for (i, b) in v.into_iter().enumerate() {
            self.post(i as u16, b);
        }
        self.q.publish();
        true
    }

    /// Moves up to `max` received frames into `out` and re-posts their descriptors.
    /// Returns whether the device must be notified.
    #[inline]
    pub fn rx(&mut self, out: &mut Vec<PacketBuf>, max: usize, c: &QueueCounters) -> bool {
        // Never more than a ring's worth: `spare` keeps its first capacity.
        let max = max.min(self.q.size as usize);
        if self.spare.len() < max {
            let want = max - self.spare.len();
            self.pool.alloc_bulk(&mut self.spare, want);
        }
        let (mut pkts, mut bytes, mut errors, mut reposted) = (0usize, 0usize, 0u64, 0usize);
        while pkts < max && !self.spare.is_empty() {
            let Some((id, len)) = self.q.take_used() else { break };
            let Some(slot) = self.bufs.get_mut(id as usize) else {
                // An id we never gave out: nothing to re-post.
                errors += 1;
                continue;
            };
            let Some(mut b) = slot.take() else {
                errors += 1;
                continue;
            };
            let id = id as u16;
            reposted += 1;
            if self.skip > 0 {
                self.skip -= 1;
                errors += 1;
                self.post(id, b);
                continue;
            }
            let len = len as usize;
            let frame = len.wrapping_sub(NET_HDR_LEN);
            if len <= NET_HDR_LEN || frame > b.capacity() {
                errors += 1;
                self.post(id, b);
                continue;
            }
            // num_buffers (header bytes 10..12): more than one means the device
            // merged a frame larger than our buffers; drop all of its pieces.
            let nb = {
                // SAFETY: the 12 header bytes lie in the buffer's headroom (checked
                // in `fill`), just before its data, and the device has written them.
                let h = unsafe { std::slice::from_raw_parts(b.data_ptr().sub(NET_HDR_LEN), 12) };
                u16::from_le_bytes([h[10], h[11]])
            };
            if nb > 1 {
                self.skip = nb - 1;
                errors += 1;
                self.post(id, b);
                continue;
            }
            b.set_len(frame);
            out.push(b);
            pkts += 1;
            bytes += frame;
            let fresh = self.spare.pop().expect("loop runs while spare is not empty");
            self.post(id, fresh);
        }
        c.count_rx(pkts, bytes);
        if errors > 0 {
            bump(&c.errors, errors);
        }
        if reposted == 0 {
            return false;
        }
        self.q.publish();
        self.q.needs_notify()
    }

    /// Drops every posted buffer (after the device is reset).
    pub fn release(&mut self) {
        for b in self.bufs.iter_mut() {
            b.take();
        }
        self.spare.clear();
    }
}

/// The tx queue: descriptors from a free list, one per frame.
#[derive(Debug)]
pub struct TxQueue {
    q: SplitQueue,
    bufs: Box<[Option<PacketBuf>]>,
    free: Vec<u16>,
}

impl TxQueue {
    /// A tx queue with every descriptor free.
    pub fn new(q: SplitQueue) -> Self {
        let n = q.size;
        Self { bufs: (0..n).map(|_| None).collect(), free: (0..n).rev().collect(), q }
    }

    /// The queue memory.
    pub fn queue(&self) -> &SplitQueue {
        &self.q
    }

    /// Frames handed to the device and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.q.size as usize - self.free.len()
    }

    /// Frees the buffers the device has returned. Returns bad used entries seen.
    #[inline]
    pub fn reclaim(&mut self) -> u64 {
        let mut errors = 0;
        while let Some((id, _)) = self.q.take_used() {
            match self.bufs.get_mut(id as usize).and_then(|s| s.take()) {
                Some(b) => {
                    drop(b);
                    self.free.push(id as u16);
                }
                None => errors += 1,
            }
        }
        errors
    }

    /// Queues frames from the front of `bufs` (removing those taken). Returns
    /// whether the device must be notified.
    #[inline]
    pub fn tx(&mut self, bufs: &mut Vec<PacketBuf>, c: &QueueCounters) -> bool {
        let mut errors = self.reclaim();
        let n = self.free.len().min(bufs.len());
        let (mut pkts, mut bytes, mut dropped) = (0usize, 0usize, 0u64);
        for mut b in bufs.drain(..n) {
            let len = b.len();
            if len == 0 || len > TX_MAX_LEN {
                dropped += 1;
                continue;
            }
            match b.prepend(NET_HDR_LEN) {
                Some(h) => h.fill(0),
                None => {
                    dropped += 1;
                    continue;
                }
            }
            let id = self.free.pop().expect("n <= free.len()");
            self.q.set_desc(id, b.iova(), (len + NET_HDR_LEN) as u32, 0);
            self.q.push_avail(id);
            self.bufs[id as usize] = Some(b);
            pkts += 1;
            bytes += len;
        }
        c.count_tx(pkts, bytes);
        errors += dropped;
        if dropped > 0 {
            bump(&c.tx_drops, dropped);
        }
        if errors > 0 {
            bump(&c.errors, errors);
        }
        if pkts == 0 {
            return false;
        }
        self.q.publish();
        self.q.needs_notify()
    }

    /// Drops every in-flight buffer (after the device is reset).
    pub fn release(&mut self) {
        for b in self.bufs.iter_mut() {
            b.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::DmaMemory;
    use crate::mempool::MempoolConfig;
    use crate::port::PortCounters;

    fn queue(mem: &DmaMemory, size: u16) -> SplitQueue {
        assert!(SplitQueue::bytes(size) <= mem.len());
        // SAFETY: the memory outlives the queue in each test and only it uses it.
        unsafe { SplitQueue::new(mem.base(), mem.iova_at(0), size) }
    }

    fn pool() -> Mempool {
        Mempool::small_pages(MempoolConfig { count: 128, data_room: 2048, headroom: 128 }).unwrap()
    }

    #[test]
    fn layout_is_aligned_and_sized() {
        assert_eq!(SplitQueue::bytes(256), 4096 + 576 + 2112 - 64 + 64);
        let (a, u, _) = SplitQueue::layout(8);
        assert_eq!((a, u), (128, 192));
    }

    #[test]
    fn tx_writes_header_and_descriptor_and_reclaims() {
        let mem = DmaMemory::with_small_pages(8192).unwrap();
        let p = pool();
        let c = PortCounters::new(1);
        let mut tx = TxQueue::new(queue(&mem, 8));
        let mut v = Vec::new();
        p.alloc_bulk(&mut v, 2);
        v[0].copy_from(&[0xab; 60]);
        v[1].copy_from(&[]);
        let data_iova = v[0].iova();
        assert!(tx.tx(&mut v, c.queue(0)), "a fresh device wants notifications");
        assert!(v.is_empty());
        let mut ids = Vec::new();
        assert_eq!(tx.queue().device_avail(0, &mut ids), 1);
        let (addr, len, flags) = tx.queue().desc(ids[0]);
        assert_eq!((addr, len, flags), (data_iova - 12, 72, 0));
        let s = c.queue(0).snapshot();
        assert_eq!((s.tx_packets, s.tx_bytes, s.tx_drops), (1, 60, 1));
        assert_eq!(tx.in_flight(), 1);
        tx.queue().device_put_used(ids[0] as u32, 0);
        tx.queue().device_put_used(99, 0); // bogus id: counted, ignored
        assert_eq!(tx.reclaim(), 1);
        assert_eq!(tx.in_flight(), 0);
    }

    fn write_hdr_and_frame(q: &SplitQueue, id: u16, frame: &[u8], num_buffers: u16) {
        let (addr, len, flags) = q.desc(id);
        assert_eq!(flags, VRING_DESC_F_WRITE);
        assert!(frame.len() + 12 <= len as usize);
        let mut hdr = [0u8; 12];
        hdr[10..12].copy_from_slice(&num_buffers.to_le_bytes());
        // SAFETY: identity IOVA; addr..addr+len is the posted buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(hdr.as_ptr(), addr as *mut u8, 12);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), (addr + 12) as *mut u8, frame.len());
        }
        q.device_put_used(id as u32, (frame.len() + 12) as u32);
    }

    #[test]
    fn rx_takes_frames_and_rejects_bad_entries() {
        let mem = DmaMemory::with_small_pages(8192).unwrap();
        let c = PortCounters::new(1);
        let mut rx = RxQueue::new(queue(&mem, 8), pool());
        assert!(rx.fill());
        let mut ids = Vec::new();
        let mut seen = rx.queue().device_avail(0, &mut ids);
        assert_eq!(ids, (0..8).collect::<Vec<u16>>());
        write_hdr_and_frame(rx.queue(), 3, &[7u8; 100], 1);
        rx.queue().device_put_used(42, 100); // id out of range
        rx.queue().device_put_used(5, 4); // shorter than the header
        rx.queue().device_put_used(6, 5000); // longer than the buffer
        let mut out = Vec::new();
        rx.rx(&mut out, 32, c.queue(0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data(), &[7u8; 100][..]);
        let s = c.queue(0).snapshot();
        assert_eq!((s.rx_packets, s.rx_bytes), (1, 100));
        assert_eq!(s.errors, 3, "{s:?}");
        // Re-posted descriptors come back as avail entries.
        ids.clear();
        seen = rx.queue().device_avail(seen, &mut ids);
        assert_eq!(ids, vec![3, 5, 6], "(avail idx {seen})");
    }

    #[test]
    fn rx_drops_merged_frames_whole() {
        let mem = DmaMemory::with_small_pages(8192).unwrap();
        let c = PortCounters::new(1);
        let mut rx = RxQueue::new(queue(&mem, 8), pool());
        assert!(rx.fill());
        write_hdr_and_frame(rx.queue(), 0, &[1u8; 64], 2);
        rx.queue().device_put_used(1, 64); // second piece, no header
        write_hdr_and_frame(rx.queue(), 2, &[2u8; 64], 1);
        let mut out = Vec::new();
        rx.rx(&mut out, 32, c.queue(0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data()[0], 2);
        assert_eq!(c.queue(0).snapshot().errors, 2);
    }
}
