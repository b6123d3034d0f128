//! Packed virtqueues (virtio 1.x section 2.8).
//!
//! One ring of 16-byte descriptors `{addr, len, id, flags}` used in both directions:
//! a descriptor is available when its AVAIL flag equals the driver's wrap counter and
//! its USED flag does not; the device marks it used by writing both flags equal to
//! its own wrap counter. Two small event-suppression areas replace the split ring's
//! flags and event indexes.

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

const F_AVAIL: u16 = 1 << 7;
const F_USED: u16 = 1 << 15;
const EVENT_ENABLE: u16 = 0;
const EVENT_DISABLE: u16 = 1;
const EVENT_DESC: u16 = 2;
const MAX_MRG_CHAINS: usize = 64;
/// Used descriptors one burst may record (32 packets of up to 64 chains each would
/// need more; the enqueue loop flushes early when it gets close).
const MAX_SHADOW: usize = 512;

/// A chain found at the head of the ring.
#[derive(Clone, Copy)]
struct Chain {
    /// Buffer id (from the chain's last descriptor).
    id: u16,
    /// Descriptors it occupies in the ring.
    count: u16,
    /// Bytes of its buffers.
    cap: u32,
}

/// A packed virtqueue, owned by the worker that polls it.
pub struct PackedRing {
    p: RingParams,
    desc: *mut u8,
    /// Driver event suppression area (the frontend tells us when it wants interrupts).
    driver_event: *const u8,
    /// Device event suppression area (we tell the frontend not to kick).
    device_event: *mut u8,
    size: u16,
    avail_idx: u16,
    avail_wrap: bool,
    used_idx: u16,
    used_wrap: bool,
    segs: SegList,
    /// Used descriptors of the current burst, written together by `flush_used`.
    shadow: Vec<UsedEntry>,
    batch: Batch,
    /// Guest tx only: the first used descriptor not yet shown to the frontend. The
    /// ones after it are written as they complete (not at all with in-order: this
    /// one then carries the id of the last, and is released after every burst), but
    /// the frontend, which consumes used descriptors in order, sees none of them
    /// until this one's flags flip. Without in-order they are released in large
    /// groups, which keeps the frontend's tx clean-up from pulling ring cache lines
    /// back and forth every burst.
    held: Option<UsedEntry>,
    /// Descriptors completed since (and including) the held one.
    held_descs: u16,
}

/// Most descriptors one burst call looks at ahead.
const BATCH: usize = 64;

/// The burst's available descriptors, read ahead: for single-descriptor chains of
/// the right direction, the translated buffer (prefetched) and buffer id.
struct Batch {
    n: usize,
    ptr: [*mut u8; BATCH],
    len: [u32; BATCH],
    id: [u16; BATCH],
}

impl Default for Batch {
    fn default() -> Self {
        Self { n: 0, ptr: [std::ptr::null_mut(); BATCH], len: [0; BATCH], id: [0; BATCH] }
    }
}

/// A used descriptor waiting to be written.
#[derive(Clone, Copy)]
struct UsedEntry {
    at: u16,
    id: u16,
    len: u32,
    flags: u16,
}

impl Drop for PackedRing {
    /// A ring given up (the frontend stopped it, or left) hands back what it held.
    fn drop(&mut self) {
        self.release_held();
    }
}

// SAFETY: the raw pointers point into `p.mem`, kept alive by the ring; one owner.
unsafe impl Send for PackedRing {}

impl PackedRing {
    /// Sets up a ring; `base` is the vhost-user encoding (index | wrap << 15).
    pub fn new(p: RingParams, addr: &VringAddr, base: u32) -> Result<Self, ProtocolError> {
        let size = p.size as u32;
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(ProtocolError::BadVring(format!("packed ring size {size}")));
        }
        let area = |a, len, align, what| ring_area(&p.mem, a, len, align, what);
        let desc = area(addr.desc, size as u64 * DESC_LEN as u64, 16, "descriptor ring")?;
        let driver_event = area(addr.avail, 4, 4, "driver event area")?;
        let device_event = area(addr.used, 4, 4, "device event area")?;
        let idx = (base & 0x7fff) as u16;
        if idx as u32 >= size {
            return Err(ProtocolError::BadVring(format!("packed ring base {base:#x}")));
        }
        let wrap = base & 0x8000 != 0;
        let ring = PackedRing {
            p,
            desc,
            driver_event,
            device_event,
            size: size as u16,
            avail_idx: idx,
            avail_wrap: wrap,
            used_idx: idx,
            used_wrap: wrap,
            segs: SegList::default(),
            shadow: Vec::with_capacity(MAX_SHADOW),
            batch: Batch::default(),
            held: None,
            held_descs: 0,
        };
        // Poll mode: ask the frontend not to kick.
        // SAFETY: device_event+2 is inside the checked 4-byte area, 2-aligned.
        unsafe {
            (*(ring.device_event.add(2) as *const AtomicU16))
                .store(EVENT_DISABLE, Ordering::Release)
        };
        Ok(ring)
    }

    /// Position for GET_VRING_BASE: index | wrap << 15.
    pub fn base(&self) -> u32 {
        self.avail_idx as u32 | ((self.avail_wrap as u32) << 15)
    }

    #[inline(always)]
    fn flags_at(&self, i: u16) -> u16 {
        // SAFETY: i < size: the flags field of descriptor i, inside the checked ring,
        // 2-aligned (the ring is 16-aligned).
        unsafe {
            (*(self.desc.add(i as usize * DESC_LEN + 14) as *const AtomicU16))
                .load(Ordering::Acquire)
        }
    }

    #[inline(always)]
    fn is_avail(&self, i: u16, wrap: bool) -> bool {
        let f = self.flags_at(i);
        ((f & F_AVAIL) != 0) == wrap && ((f & F_USED) != 0) != wrap
    }

    /// Translates the chain at ring position `pos` (wrap `wrap`) into `self.segs`.
    fn collect(&mut self, mut pos: u16, write: bool) -> Result<Chain, RingError> {
        self.segs.clear();
        let mut count = 0u16;
        loop {
            // SAFETY: pos < size: descriptor `pos` is inside the checked ring.
            let d = unsafe { Desc::read_packed(self.desc.add(pos as usize * DESC_LEN)) };
            count += 1;
            if d.flags & DESC_F_INDIRECT != 0 {
                if count != 1 || d.flags & DESC_F_NEXT != 0 {
                    return Err(RingError::BadIndirect);
                }
                self.collect_indirect(&d, write)?;
                return Ok(Chain { id: d.next_or_id, count, cap: self.segs.total() as u32 });
            }
            if (d.flags & DESC_F_WRITE != 0) != write {
                return Err(RingError::BadDirection);
            }
            push_buffer(&self.p.mem, &mut self.segs, d.addr, d.len)?;
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(Chain { id: d.next_or_id, count, cap: self.segs.total() as u32 });
            }
            if count >= self.size {
                return Err(RingError::ChainTooLong);
            }
            pos += 1;
            if pos == self.size {
                pos = 0;
            }
        }
    }

    fn collect_indirect(&mut self, d: &Desc, write: bool) -> Result<(), RingError> {
        let n = d.len as usize / DESC_LEN;
        if !(d.len as usize).is_multiple_of(DESC_LEN) || n == 0 || n > MAX_QUEUE_SIZE as usize {
            return Err(RingError::BadIndirect);
        }
        let table = self.p.mem.gpa_range(d.addr, d.len as u64).ok_or(RingError::BadIndirect)?;
        for i in 0..n {
            // SAFETY: i < n and the table is n*16 checked bytes.
            let e = unsafe { Desc::read_packed(table.as_ptr().add(i * DESC_LEN)) };
            if e.flags & DESC_F_INDIRECT != 0 {
                return Err(RingError::BadIndirect);
            }
            if (e.flags & DESC_F_WRITE != 0) != write {
                return Err(RingError::BadDirection);
            }
            push_buffer(&self.p.mem, &mut self.segs, e.addr, e.len)?;
        }
        Ok(())
    }

    /// Records a chain as used at the used position; [`flush_used`](Self::flush_used)
    /// writes the batch. Writing used descriptors one at a time, between reads of
    /// the next available ones, would bounce each ring cache line between the two
    /// cores for every packet (the frontend polls those very lines).
    #[inline(always)]
    fn push_used(&mut self, id: u16, len: u32, count: u16) {
        let flags = if self.used_wrap { F_AVAIL | F_USED } else { 0 };
        self.shadow.push(UsedEntry { at: self.used_idx, id, len, flags });
        self.used_idx += count;
        if self.used_idx >= self.size {
            self.used_idx -= self.size;
            self.used_wrap = !self.used_wrap;
        }
    }

    /// Writes the recorded used descriptors, the batch's first one last, so the
    /// frontend (which consumes used descriptors in order, polling the first) sees
    /// the batch complete or not at all. Each descriptor is written whole (length,
    /// id, then flags) so every ring cache line changes hands once, not once per field.
    #[inline]
    fn flush_used(&mut self) {
        let Some(first) = self.shadow.first().copied() else { return };
        for e in &self.shadow[1..] {
            self.write_used_desc(e);
        }
        self.write_used_desc(&first);
        self.shadow.clear();
    }

    #[inline(always)]
    fn write_used_desc(&self, e: &UsedEntry) {
        // SAFETY: e.at < size: inside the checked ring; fields at their offsets.
        unsafe {
            let d = self.desc.add(e.at as usize * DESC_LEN);
            std::ptr::write_volatile(d.add(8) as *mut u32, e.len);
            std::ptr::write_volatile(d.add(12) as *mut u16, e.id);
        }
        self.set_flags(e.at, e.flags);
    }

    #[inline(always)]
    fn set_flags(&self, at: u16, flags: u16) {
        // SAFETY: at < size: the flags field of descriptor `at`, inside the ring.
        unsafe {
            (*(self.desc.add(at as usize * DESC_LEN + 14) as *const AtomicU16))
                .store(flags, Ordering::Release)
        }
    }

    #[inline(always)]
    fn advance_avail(&mut self, count: u16) {
        self.avail_idx += count;
        if self.avail_idx >= self.size {
            self.avail_idx -= self.size;
            self.avail_wrap = !self.avail_wrap;
        }
    }

    /// Interrupts the frontend if its driver event area asks for it.
    #[inline]
    fn notify(&self, old_used: u16, used_moved: u16) {
        if self.p.call.is_none() || used_moved == 0 {
            return;
        }
        fence(Ordering::SeqCst);
        // SAFETY: driver_event..+4 is inside the checked area, 4-aligned.
        let (off_wrap, flags) = unsafe {
            (
                (*(self.driver_event as *const AtomicU16)).load(Ordering::Relaxed),
                (*(self.driver_event.add(2) as *const AtomicU16)).load(Ordering::Relaxed),
            )
        };
        let due = match flags {
            EVENT_ENABLE => true,
            EVENT_DISABLE => false,
            EVENT_DESC if self.p.event_idx => {
                // The spec's event check in ring positions, as the frontend counts.
                let size = self.size;
                let new = self.used_idx;
                let mut old = old_used;
                if new <= old {
                    old = old.wrapping_sub(size);
                }
                let mut ev = off_wrap & 0x7fff;
                if (off_wrap >> 15 != 0) != self.used_wrap {
                    ev = ev.wrapping_sub(size);
                }
                need_event(ev, new, old)
            }
            _ => true,
        };
        if due {
            self.p.signal();
        }
    }

    /// Guest tx: marks a chain used. The first one after a release is held back
    /// (written at release, flags last); without in-order the rest are written whole
    /// at once, with in-order they are not written at all: the held descriptor, given
    /// the id of the last completed chain, stands for all of them.
    #[inline(always)]
    fn complete_tx(&mut self, id: u16, count: u16) {
        let at = self.used_idx;
        match &mut self.held {
            None => {
                let flags = if self.used_wrap { F_AVAIL | F_USED } else { 0 };
                self.held = Some(UsedEntry { at, id, len: 0, flags });
            }
            Some(h) if self.p.in_order => h.id = id,
            Some(_) => {
                let flags = if self.used_wrap { F_AVAIL | F_USED } else { 0 };
                self.write_used_desc(&UsedEntry { at, id, len: 0, flags });
            }
        }
        self.held_descs = self.held_descs.saturating_add(count);
        self.used_idx += count;
        if self.used_idx >= self.size {
            self.used_idx -= self.size;
            self.used_wrap = !self.used_wrap;
        }
    }

    /// How many completed tx descriptors may be held back: all but two bursts' worth,
    /// so the frontend always has room to send while it waits.
    #[inline(always)]
    fn release_threshold(&self) -> u16 {
        self.size.saturating_sub(64).max(self.size / 2).max(1)
    }

    /// Shows the frontend every held-back tx completion (and interrupts it if it
    /// asked).
    #[inline]
    fn release_held(&mut self) {
        if let Some(e) = self.held.take() {
            self.write_used_desc(&e);
            self.notify(e.at, self.held_descs);
            self.held_descs = 0;
        }
    }

    /// Reads up to `max` available descriptors ahead (stopping at the first one not
    /// available), translating and prefetching the buffers of single-descriptor
    /// chains, so the copies that follow overlap their cache misses.
    #[inline]
    fn prepare(&mut self, max: usize, write: bool) -> usize {
        let want = if write { DESC_F_WRITE } else { 0 };
        let (mut pos, mut wrap) = (self.avail_idx, self.avail_wrap);
        // Start fetching the descriptor lines of the whole burst at once (4 per line).
        for line in 0..max.min(BATCH).div_ceil(4) {
            let i = (pos as usize + 4 * line) % self.size as usize;
            prefetch(self.desc.wrapping_add(i * DESC_LEN));
        }
        let mut n = 0;
        while n < max.min(BATCH) && self.is_avail(pos, wrap) {
            // SAFETY: pos < size: inside the checked ring.
            let d = unsafe { Desc::read_packed(self.desc.add(pos as usize * DESC_LEN)) };
            self.batch.ptr[n] = std::ptr::null_mut();
            if d.flags & (DESC_F_NEXT | DESC_F_INDIRECT | DESC_F_WRITE) == want {
                if let Some(p) = self.p.mem.gpa_range(d.addr, d.len as u64) {
                    let p = p.as_ptr();
                    if n < PREFETCH_AHEAD {
                        prefetch_buffer(p, write, self.p.hdr_len); // the rest: see `prefetch_ahead`
                    }
                    self.batch.ptr[n] = p;
                    self.batch.len[n] = d.len;
                    self.batch.id[n] = d.next_or_id;
                }
            }
            n += 1;
            pos += 1;
            if pos == self.size {
                pos = 0;
                wrap = !wrap;
            }
        }
        self.batch.n = n;
        n
    }

    /// The chain at ring position `pos`, `k` descriptors past the burst's start:
    /// from the prepared batch when it is a single descriptor, else walked.
    #[inline(always)]
    fn chain_at(&mut self, k: usize, pos: u16, write: bool) -> Result<Chain, RingError> {
        if k < self.batch.n && !self.batch.ptr[k].is_null() {
            self.segs.clear();
            self.segs.push(self.batch.ptr[k], self.batch.len[k])?;
            return Ok(Chain { id: self.batch.id[k], count: 1, cap: self.batch.len[k] });
        }
        self.collect(pos, write)
    }

    /// Whether the chain `k` descriptors past the burst's start is available.
    #[inline(always)]
    fn avail_at(&self, k: usize, pos: u16, wrap: bool) -> bool {
        k < self.batch.n || self.is_avail(pos, wrap)
    }

    /// Guest tx: copies up to `max` packets into fresh buffers appended to `out`.
    pub fn dequeue(
        &mut self,
        pool: &Mempool,
        out: &mut Vec<PacketBuf>,
        max: usize,
        q: &QueueCounters,
    ) -> Result<usize, RingError> {
        if !self.is_avail(self.avail_idx, self.avail_wrap) {
            // Idle: show the frontend everything completed so far.
            self.release_held();
            return Ok(0);
        }
        // The burst is estimated from the descriptors made available (one per packet
        // in the common case), so an idle ring does not churn the mempool.
        let est = self.prepare(max.min(MAX_SHADOW), false);
        let start = out.len();
        let got = pool.alloc_bulk(out, est);
        let (mut kept, mut bytes, mut bad) = (start, 0usize, 0u64);
        let mut k = 0usize;
        for _ in 0..got {
            if !self.avail_at(k, self.avail_idx, self.avail_wrap) {
                break;
            }
            prefetch_ahead(&self.batch.ptr[..self.batch.n], k, false, self.p.hdr_len);
            if k < self.batch.n && !self.batch.ptr[k].is_null() {
                // One descriptor (the common case): copy straight out of it.
                let (p, len, id) = (self.batch.ptr[k], self.batch.len[k], self.batch.id[k]);
                // SAFETY: `p..p+len` is guest memory translated by `prepare`.
                match unsafe { copy_from_single(p, len as usize, self.p.hdr_len, &mut out[kept]) } {
                    Some(n) => {
                        bytes += n;
                        kept += 1;
                    }
                    None => bad += 1,
                }
                self.advance_avail(1);
                self.complete_tx(id, 1);
                k += 1;
                continue;
            }
            let chain = match self.chain_at(k, self.avail_idx, false) {
                Ok(c) => c,
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            };
            let buf = &mut out[kept];
            match self.segs.gather(self.p.hdr_len, buf.room_mut()) {
                Some(n) => {
                    buf.set_len(n);
                    bytes += n;
                    kept += 1;
                }
                None => bad += 1,
            }
            self.advance_avail(chain.count);
            self.complete_tx(chain.id, chain.count);
            k += chain.count as usize;
        }
        out.truncate(kept);
        // In order, a release writes one descriptor for the whole burst: show it
        // every burst (as DPDK's vhost does). Held back for longer, a DPDK pod's tx
        // clean-up found nothing to free when its ring ran low and dropped packets
        // (~900 per port at `start tx_first 32`), leaving fewer in flight.
        if self.p.in_order || self.held_descs >= self.release_threshold() {
            self.release_held();
        }
        if bad > 0 {
            bump(&q.errors, bad);
        }
        q.count_rx(kept - start, bytes);
        Ok(kept - start)
    }

    /// Guest rx: copies packets from the front of `bufs` into the frontend's buffers,
    /// removing those it took.
    pub fn enqueue(
        &mut self,
        bufs: &mut Vec<PacketBuf>,
        q: &QueueCounters,
    ) -> Result<usize, RingError> {
        let hdr_len = self.p.hdr_len;
        let old_used = self.used_idx;
        let mut moved = 0u16;
        let (mut taken, mut sent, mut bytes, mut dropped) = (0usize, 0usize, 0usize, 0u64);
        let mut chains = [(0u16, Chain { id: 0, count: 0, cap: 0 }); MAX_MRG_CHAINS];
        self.prepare(bufs.len(), true);
        let mut k = 0usize;
        // The header of a packet that fits one buffer: the same for all of them.
        let hdr1 = net_hdr(hdr_len, 1);
        'packets: for buf in bufs.iter() {
            if self.shadow.len() + MAX_MRG_CHAINS > MAX_SHADOW {
                self.flush_used();
            }
            let data = buf.data();
            let need = hdr_len + data.len();
            prefetch_ahead(&self.batch.ptr[..self.batch.n], k, true, self.p.hdr_len);
            if k < self.batch.n
                && !self.batch.ptr[k].is_null()
                && self.batch.len[k] as usize >= need
            {
                // One descriptor with room for the whole packet (the common case).
                let (p, id) = (self.batch.ptr[k], self.batch.id[k]);
                // SAFETY: `p..p+batch.len[k]` is guest memory translated by `prepare`,
                // at least `need` bytes; the packet's buffer does not overlap it.
                unsafe { copy_to_single(p, &hdr1[..hdr_len], data) };
                self.push_used(id, need as u32, 1);
                if self.used_idx.is_multiple_of(4) {
                    // A ring cache line (four descriptors) is complete: hand it to the
                    // frontend now, so it can start on these packets while the
                    // rest of the burst is copied.
                    self.flush_used();
                }
                self.advance_avail(1);
                moved = moved.wrapping_add(1);
                k += 1;
                taken += 1;
                sent += 1;
                bytes += data.len();
                continue;
            }
            // Find the chains this packet needs, without consuming them yet.
            let (mut pos, mut wrap) = (self.avail_idx, self.avail_wrap);
            let (mut n, mut total, mut kk) = (0usize, 0usize, k);
            while total < need {
                if n == MAX_MRG_CHAINS || (n == 1 && !self.p.mrg_rxbuf) {
                    dropped += 1;
                    taken += 1;
                    continue 'packets;
                }
                if !self.avail_at(kk, pos, wrap) {
                    break 'packets; // no room now: leave the rest with the caller
                }
                let c = self.chain_at(kk, pos, true)?;
                kk += c.count as usize;
                chains[n] = (pos, c);
                total += c.cap as usize;
                n += 1;
                pos += c.count;
                if pos >= self.size {
                    pos -= self.size;
                    wrap = !wrap;
                }
            }
            let hdr = net_hdr(hdr_len, n as u16);
            let mut off = 0usize;
            for &(at, c) in &chains[..n] {
                if n > 1 {
                    self.collect(at, true)?;
                }
                let len = (c.cap as usize).min(need - off);
                let [h, d] = super::split_range(&hdr[..hdr_len], data, off, len);
                if h.len() == hdr_len {
                    self.segs.scatter_hdr(h, d);
                } else {
                    self.segs.scatter(&[h, d]);
                }
                self.push_used(c.id, len as u32, c.count);
                self.advance_avail(c.count);
                moved = moved.wrapping_add(c.count);
                k += c.count as usize;
                off += len;
            }
            taken += 1;
            sent += 1;
            bytes += data.len();
        }
        self.flush_used();
        self.notify(old_used, moved);
        drop_front(bufs, taken);
        q.count_tx(sent, bytes);
        if dropped > 0 {
            bump(&q.tx_drops, dropped);
        }
        Ok(taken)
    }
}
