//! Split virtqueues (virtio 1.x section 2.7).
//!
//! Layout in guest memory: the descriptor table (16 bytes each), the avail ring
//! (`flags`, `idx`, `ring[size]`, `used_event`) and the used ring (`flags`, `idx`,
//! `ring[size]` of `{id: u32, len: u32}`, `avail_event`). The worker reads `avail.idx`
//! once per burst, copies the burst, writes used entries, and publishes `used.idx`
//! once per burst.

use std::sync::atomic::{fence, AtomicU16, Ordering};

use podwire_driver::mempool::{drop_front, PacketBuf};
use podwire_driver::port::{bump, QueueCounters};
use podwire_driver::Mempool;

use super::copy::{
    copy_from_single, copy_to_single, prefetch, prefetch_ahead, prefetch_buffer, PREFETCH_AHEAD,
};
use super::{
    need_event, net_hdr, push_buffer, ring_area, Desc, RingParams, SegList, DESC_F_INDIRECT,
    DESC_F_NEXT, DESC_F_WRITE, DESC_LEN, MAX_QUEUE_SIZE,
};
use crate::error::{ProtocolError, RingError};
use crate::proto::VringAddr;

const USED_F_NO_NOTIFY: u16 = 1;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Most rx chains one packet may be spread over with mergeable buffers.
const MAX_MRG_CHAINS: usize = 64;

/// A split virtqueue, owned by the worker that polls it.
pub struct SplitRing {
    p: RingParams,
    desc: *const u8,
    avail: *const u8,
    used: *mut u8,
    mask: u16,
    last_avail: u16,
    last_used: u16,
    /// `last_avail` when `avail_event` was last pushed ahead (event-idx only).
    event_base: u16,
    segs: SegList,
    batch: Batch,
}

/// Most avail entries one burst call looks at.
const BATCH: usize = 64;

/// Heads and (for single-descriptor chains) translated buffers of one burst.
struct Batch {
    head: [u16; BATCH],
    ptr: [*mut u8; BATCH],
    len: [u32; BATCH],
}

impl Default for Batch {
    fn default() -> Self {
        Self { head: [0; BATCH], ptr: [std::ptr::null_mut(); BATCH], len: [0; BATCH] }
    }
}

// SAFETY: the raw pointers point into `p.mem`, which the ring keeps alive (Arc); the
// ring is owned by one worker at a time.
unsafe impl Send for SplitRing {}

impl SplitRing {
    /// Sets up a ring from the frontend's addresses, starting at index `base`.
    /// Refuses sizes that are not powers of two and areas outside the memory table or
    /// misaligned.
    pub fn new(p: RingParams, addr: &VringAddr, base: u16) -> Result<Self, ProtocolError> {
        let size = p.size as u32;
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(ProtocolError::BadVring(format!("split ring size {size}")));
        }
        let s = size as u64;
        let area = |a, len, align, what| ring_area(&p.mem, a, len, align, what);
        let desc = area(addr.desc, s * DESC_LEN as u64, 16, "descriptor table")?;
        let avail = area(addr.avail, 6 + 2 * s, 2, "avail ring")?;
        let used = area(addr.used, 6 + 8 * s, 4, "used ring")?;
        let mut ring = SplitRing {
            mask: (size - 1) as u16,
            p,
            desc,
            avail,
            used,
            last_avail: base,
            last_used: base,
            event_base: base,
            segs: SegList::default(),
            batch: Batch::default(),
        };
        // A frontend restarted against a running ring (or a backend restarted under a
        // running frontend) can leave base and used.idx apart; the used ring is the
        // truth about what was completed.
        let used_idx = ring.used_idx().load(Ordering::Acquire);
        if used_idx != base {
            tracing::warn!(
                base,
                used_idx,
                "vring base differs from used.idx; resuming at used.idx"
            );
            ring.last_avail = used_idx;
            ring.last_used = used_idx;
        }
        // Poll mode: ask the frontend not to kick.
        if ring.p.event_idx {
            ring.push_avail_event();
        } else {
            // SAFETY: used..used+2 is inside the checked used area, 2-aligned.
            unsafe {
                (*(ring.used as *const AtomicU16)).store(USED_F_NO_NOTIFY, Ordering::Release)
            };
        }
        Ok(ring)
    }

    /// Index of the next avail entry to process (for GET_VRING_BASE).
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    #[inline(always)]
    fn avail_idx(&self) -> u16 {
        // SAFETY: avail+2 is inside the checked avail area and 2-aligned.
        unsafe { (*(self.avail.add(2) as *const AtomicU16)).load(Ordering::Acquire) }
    }

    #[inline(always)]
    fn avail_flags(&self) -> u16 {
        // SAFETY: as above.
        unsafe { (*(self.avail as *const AtomicU16)).load(Ordering::Relaxed) }
    }

    #[inline(always)]
    fn avail_entry(&self, i: u16) -> u16 {
        // SAFETY: (i & mask) < size: inside the avail ring.
        unsafe {
            (*(self.avail.add(4 + 2 * (i & self.mask) as usize) as *const AtomicU16))
                .load(Ordering::Relaxed)
        }
    }

    #[inline(always)]
    fn used_event(&self) -> u16 {
        // SAFETY: avail + 4 + 2*size is the used_event field, inside the checked area.
        unsafe {
            (*(self.avail.add(4 + 2 * (self.mask as usize + 1)) as *const AtomicU16))
                .load(Ordering::Relaxed)
        }
    }

    #[inline(always)]
    fn used_idx(&self) -> &AtomicU16 {
        // SAFETY: used+2 is inside the checked used area and 2-aligned; the reference
        // lives no longer than &self, which keeps the memory mapped.
        unsafe { &*(self.used.add(2) as *const AtomicU16) }
    }

    #[inline(always)]
    fn write_used(&mut self, id: u16, len: u32) {
        let slot = (self.last_used & self.mask) as usize;
        // SAFETY: slot < size: the entry is inside the checked used area, 4-aligned.
        unsafe {
            let e = self.used.add(4 + 8 * slot);
            std::ptr::write_volatile(e as *mut u32, id as u32);
            std::ptr::write_volatile(e.add(4) as *mut u32, len);
        }
        self.last_used = self.last_used.wrapping_add(1);
    }

    /// In-order guest tx: one used entry (the last chain's head) stands for the
    /// `count` chains completed since `last_used`.
    #[inline(always)]
    fn write_used_batch(&mut self, last_head: u16, count: u16) {
        self.write_used(last_head, 0);
        self.last_used = self.last_used.wrapping_add(count - 1);
    }

    fn push_avail_event(&mut self) {
        // Far enough ahead that the frontend's index never reaches it: no kicks.
        let ev = self.last_avail.wrapping_add(0x7fff);
        // SAFETY: used + 4 + 8*size is the avail_event field, inside the checked area.
        unsafe {
            (*(self.used.add(4 + 8 * (self.mask as usize + 1)) as *const AtomicU16))
                .store(ev, Ordering::Relaxed)
        };
        self.event_base = self.last_avail;
    }

    /// Publishes used entries written since `old` and interrupts the frontend if it
    /// asked for it.
    #[inline]
    fn publish(&mut self, old: u16) {
        if self.last_used == old {
            return;
        }
        self.used_idx().store(self.last_used, Ordering::Release);
        if self.p.call.is_none() {
            return;
        }
        // The frontend's flags/used_event must be read after our index is visible.
        fence(Ordering::SeqCst);
        let due = if self.p.event_idx {
            need_event(self.used_event(), self.last_used, old)
        } else {
            self.avail_flags() & AVAIL_F_NO_INTERRUPT == 0
        };
        if due {
            self.p.signal();
        }
    }

    /// Entries the frontend made available and we have not processed.
    #[inline]
    fn pending(&self) -> Result<u16, RingError> {
        let n = self.avail_idx().wrapping_sub(self.last_avail);
        if n > self.mask.wrapping_add(1) && self.mask != u16::MAX {
            return Err(RingError::AvailJump);
        }
        Ok(n)
    }

    /// Translates the chain starting at `head` into `self.segs`. `write`: the chain
    /// must be device-writable (rx) rather than device-readable (tx).
    #[inline]
    fn collect(&mut self, head: u16, write: bool) -> Result<(), RingError> {
        self.segs.clear();
        let size = self.mask as u32 + 1;
        if head as u32 >= size {
            return Err(RingError::DescIndex);
        }
        let mut table = self.desc;
        let mut table_len = size;
        let mut idx = head as u32;
        let mut hops = 0u32;
        let mut indirect = false;
        loop {
            if idx >= table_len {
                return Err(RingError::DescIndex);
            }
            // SAFETY: idx < table_len and the table is table_len*16 checked bytes.
            let d = unsafe { Desc::read_split(table.add(idx as usize * DESC_LEN)) };
            if d.flags & DESC_F_INDIRECT != 0 {
                if indirect || hops != 0 || d.flags & DESC_F_NEXT != 0 {
                    return Err(RingError::BadIndirect);
                }
                let n = d.len as usize / DESC_LEN;
                if !(d.len as usize).is_multiple_of(DESC_LEN)
                    || n == 0
                    || n > MAX_QUEUE_SIZE as usize
                {
                    return Err(RingError::BadIndirect);
                }
                table = self
                    .p
                    .mem
                    .gpa_range(d.addr, d.len as u64)
                    .ok_or(RingError::BadIndirect)?
                    .as_ptr();
                table_len = n as u32;
                idx = 0;
                indirect = true;
                continue;
            }
            if (d.flags & DESC_F_WRITE != 0) != write {
                return Err(RingError::BadDirection);
            }
            push_buffer(&self.p.mem, &mut self.segs, d.addr, d.len)?;
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            hops += 1;
            if hops >= table_len {
                return Err(RingError::ChainTooLong);
            }
            idx = d.next_or_id as u32;
        }
    }

    /// Reads the heads of the next `n` avail entries into `self.batch`, and for each
    /// chain that is a single direct descriptor of the right direction, its
    /// translated buffer; starts loading those buffers into the cache so the copies
    /// that follow overlap their misses instead of taking them one by one.
    #[inline]
    fn prepare(&mut self, n: usize, write: bool) {
        let size = self.mask as usize + 1;
        for i in 0..n {
            let head = self.avail_entry(self.last_avail.wrapping_add(i as u16));
            self.batch.head[i] = head;
            if (head as usize) < size {
                prefetch(self.desc.wrapping_add(head as usize * DESC_LEN));
            }
        }
        let want = if write { DESC_F_WRITE } else { 0 };
        for i in 0..n {
            let head = self.batch.head[i] as usize;
            self.batch.ptr[i] = std::ptr::null_mut();
            if head >= size {
                continue; // collect() reports it
            }
            // SAFETY: head < size: inside the checked descriptor table.
            let d = unsafe { Desc::read_split(self.desc.add(head * DESC_LEN)) };
            if d.flags & (DESC_F_NEXT | DESC_F_INDIRECT | DESC_F_WRITE) != want {
                continue; // the general path handles (or refuses) it
            }
            if let Some(p) = self.p.mem.gpa_range(d.addr, d.len as u64) {
                let p = p.as_ptr();
                if i < PREFETCH_AHEAD {
                    prefetch_buffer(p, write, self.p.hdr_len); // the rest: `prefetch_ahead`
                }
                self.batch.ptr[i] = p;
                self.batch.len[i] = d.len;
            }
        }
    }

    /// Puts chain `i` of the prepared batch into `self.segs`.
    #[inline(always)]
    fn batch_chain(&mut self, i: usize, write: bool) -> Result<(), RingError> {
        if !self.batch.ptr[i].is_null() {
            self.segs.clear();
            return self.segs.push(self.batch.ptr[i], self.batch.len[i]);
        }
        self.collect(self.batch.head[i], write)
    }

    /// Guest tx: copies up to `max` packets the frontend sent into fresh buffers from
    /// `pool`, appended to `out`. Packets that do not fit a buffer are dropped and
    /// counted as errors; their descriptors are still returned to the frontend.
    pub fn dequeue(
        &mut self,
        pool: &Mempool,
        out: &mut Vec<PacketBuf>,
        max: usize,
        q: &QueueCounters,
    ) -> Result<usize, RingError> {
        let pending = self.pending()? as usize;
        if pending == 0 {
            return Ok(0);
        }
        let start = out.len();
        let got = pool.alloc_bulk(out, pending.min(max).min(BATCH));
        if got == 0 {
            // Pool dry: leave the packets in the ring (back-pressure to the frontend).
            return Ok(0);
        }
        self.prepare(got, false);
        let old_used = self.last_used;
        let (mut kept, mut bytes, mut bad) = (start, 0usize, 0u64);
        for i in 0..got {
            let head = self.batch.head[i];
            self.last_avail = self.last_avail.wrapping_add(1);
            prefetch_ahead(&self.batch.ptr[..got], i, false, self.p.hdr_len);
            let p = self.batch.ptr[i];
            if !p.is_null() {
                // One descriptor (the common case): copy straight out of it.
                let len = self.batch.len[i] as usize;
                // SAFETY: `p..p+len` is guest memory translated by `prepare`.
                match unsafe { copy_from_single(p, len, self.p.hdr_len, &mut out[kept]) } {
                    Some(n) => {
                        bytes += n;
                        kept += 1;
                    }
                    None => bad += 1,
                }
                if !self.p.in_order {
                    self.write_used(head, 0);
                }
                continue;
            }
            if let Err(e) = self.batch_chain(i, false) {
                out.truncate(start);
                return Err(e);
            }
            let buf = &mut out[kept];
            match self.segs.gather(self.p.hdr_len, buf.room_mut()) {
                Some(n) => {
                    buf.set_len(n);
                    bytes += n;
                    kept += 1;
                }
                None => bad += 1,
            }
            if !self.p.in_order {
                self.write_used(head, 0);
            }
        }
        if self.p.in_order {
            // In order: the frontend frees everything up to this entry's id, so the
            // burst costs one used entry (one ring cache line) instead of `got`.
            self.write_used_batch(self.batch.head[got - 1], got as u16);
        }
        out.truncate(kept);
        if self.p.event_idx && self.last_avail.wrapping_sub(self.event_base) > 0x4000 {
            self.push_avail_event();
        }
        self.publish(old_used);
        if bad > 0 {
            bump(&q.errors, bad);
        }
        q.count_rx(kept - start, bytes);
        Ok(kept - start)
    }

    /// Guest rx: copies packets from the front of `bufs` into the frontend's rx
    /// buffers, removing those it took. Stops when the frontend has no more room.
    pub fn enqueue(
        &mut self,
        bufs: &mut Vec<PacketBuf>,
        q: &QueueCounters,
    ) -> Result<usize, RingError> {
        let free = self.pending()?;
        if free == 0 || bufs.is_empty() {
            return Ok(0);
        }
        let prepared = (free as usize).min(bufs.len()).min(BATCH);
        self.prepare(prepared, true);
        let first_avail = self.last_avail;
        let end_avail = first_avail.wrapping_add(free);
        let old_used = self.last_used;
        let (mut taken, mut sent, mut bytes, mut dropped) = (0usize, 0usize, 0usize, 0u64);
        let hdr_len = self.p.hdr_len;
        let mut heads = [(0u16, 0u32); MAX_MRG_CHAINS];
        // The header of a packet that fits one buffer: the same for all of them.
        let hdr1 = net_hdr(hdr_len, 1);
        for buf in bufs.iter() {
            let left = end_avail.wrapping_sub(self.last_avail);
            if left == 0 {
                break;
            }
            let data = buf.data();
            let need = hdr_len + data.len();
            let slot = self.last_avail.wrapping_sub(first_avail) as usize;
            prefetch_ahead(&self.batch.ptr[..prepared], slot, true, self.p.hdr_len);
            if slot < prepared
                && !self.batch.ptr[slot].is_null()
                && self.batch.len[slot] as usize >= need
            {
                // One descriptor with room for the whole packet (the common case).
                // SAFETY: `batch.ptr[slot]` is `batch.len[slot] >= need` bytes of guest
                // memory translated by `prepare`; the packet's buffer does not overlap.
                unsafe { copy_to_single(self.batch.ptr[slot], &hdr1[..hdr_len], data) };
                self.write_used(self.batch.head[slot], need as u32);
                self.last_avail = self.last_avail.wrapping_add(1);
                taken += 1;
                sent += 1;
                bytes += data.len();
                continue;
            }
            let head = if slot < prepared {
                self.batch_chain(slot, true)?;
                self.batch.head[slot]
            } else {
                let h = self.avail_entry(self.last_avail);
                self.collect(h, true)?;
                h
            };
            let cap = self.segs.total() as usize;
            if cap >= need {
                self.segs.scatter_hdr(&hdr1[..hdr_len], data);
                self.write_used(head, need as u32);
                self.last_avail = self.last_avail.wrapping_add(1);
            } else if !self.p.mrg_rxbuf {
                // One buffer per packet and this one is too small: drop the packet,
                // keep the buffer for the next.
                dropped += 1;
                taken += 1;
                continue;
            } else {
                // Mergeable: spread the packet over as many chains as it needs.
                heads[0] = (head, cap as u32);
                let (mut n, mut total) = (1usize, cap);
                while total < need && n < left as usize && n < MAX_MRG_CHAINS {
                    let h = self.avail_entry(self.last_avail.wrapping_add(n as u16));
                    self.collect(h, true)?;
                    heads[n] = (h, self.segs.total() as u32);
                    total += self.segs.total() as usize;
                    n += 1;
                }
                if total < need {
                    if n == MAX_MRG_CHAINS {
                        dropped += 1;
                        taken += 1;
                        continue;
                    }
                    break; // not enough room now: leave it with the caller
                }
                let hdr = net_hdr(hdr_len, n as u16);
                let mut off = 0usize;
                for &(h, cap) in &heads[..n] {
                    self.collect(h, true)?;
                    let len = (cap as usize).min(need - off);
                    let [hp, dp] = super::split_range(&hdr[..hdr_len], data, off, len);
                    if hp.len() == hdr_len {
                        self.segs.scatter_hdr(hp, dp);
                    } else {
                        self.segs.scatter(&[hp, dp]);
                    }
                    self.write_used(h, len as u32);
                    off += len;
                }
                self.last_avail = self.last_avail.wrapping_add(n as u16);
            }
            taken += 1;
            sent += 1;
            bytes += data.len();
        }
        self.publish(old_used);
        drop_front(bufs, taken);
        q.count_tx(sent, bytes);
        if dropped > 0 {
            bump(&q.tx_drops, dropped);
        }
        Ok(taken)
    }
}
