//! Advanced receive and transmit descriptor rings of the 82576/I350 VF. The ring
//! code only touches descriptor memory and packet buffers; the caller writes the
//! tail register it returns. That keeps it testable, and benchmarkable, over a ring
//! in ordinary memory with a simulated device.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use crate::mempool::{Mempool, PacketBuf};
use crate::port::QueueCounters;

/// Bytes of one advanced descriptor.
pub const DESC_LEN: usize = 16;

/// Rx write-back status: descriptor done.
pub const RXD_STAT_DD: u32 = 1 << 0;
/// Rx write-back status: end of packet.
pub const RXD_STAT_EOP: u32 = 1 << 1;
/// Rx write-back errors that mean a bad frame: CRC/symbol/sequence/carrier-extension/
/// rx-data errors (bits 24, 25, 26, 28, 31).
pub const RXD_ERR_FRAME: u32 = 0x9700_0000;

/// Tx command: data descriptor type (DTYP = 0011b).
pub const TXD_DTYP_DATA: u32 = 0x3 << 20;
/// Tx command: end of packet.
pub const TXD_CMD_EOP: u32 = 1 << 24;
/// Tx command: insert FCS (CRC).
pub const TXD_CMD_IFCS: u32 = 1 << 25;
/// Tx command: report status (write DD back).
pub const TXD_CMD_RS: u32 = 1 << 27;
/// Tx command: advanced descriptor.
pub const TXD_CMD_DEXT: u32 = 1 << 29;
/// Shift of the payload length in olinfo_status.
pub const TXD_PAYLEN_SHIFT: u32 = 14;
/// Tx write-back status: descriptor done.
pub const TXD_STAT_DD: u32 = 1 << 0;
/// Largest frame one tx data descriptor may carry (16-bit length field; the VF's
/// largest frame is 9728 bytes anyway).
pub const TX_MAX_LEN: usize = 9728;

/// The command word of a one-descriptor frame of `len` bytes. Report status (RS)
/// is set only on the last descriptor of a burst, by [`TxRing::tx`]: the device then
/// writes back one descriptor per burst instead of one per frame.
#[inline(always)]
pub const fn tx_cmd_type_len(len: u32) -> u32 {
    len | TXD_DTYP_DATA | TXD_CMD_DEXT | TXD_CMD_IFCS | TXD_CMD_EOP
}

/// The olinfo_status word of a one-descriptor frame of `len` bytes.
#[inline(always)]
pub const fn tx_olinfo(len: u32) -> u32 {
    len << TXD_PAYLEN_SHIFT
}

/// Descriptor memory: `count` 16-byte descriptors at `base` (device-visible DMA
/// memory), with their IOVA.
#[derive(Debug)]
pub struct DescRing {
    base: NonNull<u8>,
    count: u16,
    iova: u64,
}

// SAFETY: the ring memory is owned by the port (one thread at a time uses it).
unsafe impl Send for DescRing {}

impl DescRing {
    /// Wraps descriptor memory.
    ///
    /// # Safety
    /// `base..base + count * 16` must be valid, writable, 16-byte aligned memory that
    /// lives as long as the ring and that only this ring (and the device) uses.
    pub unsafe fn new(base: NonNull<u8>, count: u16, iova: u64) -> Self {
        Self { base, count, iova }
    }

    /// Number of descriptors (a power of two).
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The ring's IOVA, for the base-address registers.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Byte length of the ring.
    pub fn byte_len(&self) -> usize {
        self.count as usize * DESC_LEN
    }

    #[inline(always)]
    fn ptr(&self, i: u16) -> *mut u32 {
        debug_assert!(i < self.count);
        // SAFETY: i < count (callers mask indices): inside the ring.
        unsafe { self.base.as_ptr().add((i & (self.count - 1)) as usize * DESC_LEN).cast() }
    }

    /// Reads dword `w` (0..4) of descriptor `i`, volatile (the device writes it).
    #[inline(always)]
    pub fn read(&self, i: u16, w: usize) -> u32 {
        // SAFETY: the descriptor is inside the ring; w < 4 keeps it inside the 16 bytes.
        unsafe { self.ptr(i).add(w & 3).read_volatile() }
    }

    /// Writes dword `w` of descriptor `i`.
    #[inline(always)]
    pub fn write(&self, i: u16, w: usize, v: u32) {
        // SAFETY: as in `read`.
        unsafe { self.ptr(i).add(w & 3).write_volatile(v) }
    }

    /// Writes a whole descriptor as two 64-bit halves.
    #[inline(always)]
    pub fn write_desc(&self, i: u16, lo: u64, hi: u64) {
        let p = self.ptr(i).cast::<u64>();
        // SAFETY: 16-byte aligned descriptor inside the ring.
        unsafe {
            p.write_volatile(lo);
            p.add(1).write_volatile(hi);
        }
    }

    /// Zeroes every descriptor.
    pub fn clear(&self) {
        for i in 0..self.count {
            self.write_desc(i, 0, 0);
        }
    }
}

/// An rx queue: descriptors plus the buffer posted in each.
#[derive(Debug)]
pub struct RxRing {
    ring: DescRing,
    bufs: Box<[Option<PacketBuf>]>,
    next: u16,
    spare: Vec<PacketBuf>,
    pool: Mempool,
    buf_len: usize,
}

impl RxRing {
    /// An rx ring over `ring`, posting buffers from `pool` whose usable length is
    /// `buf_len` (what the device was told in SRRCTL).
    pub fn new(ring: DescRing, pool: Mempool, buf_len: usize) -> Self {
        let n = ring.count as usize;
        Self {
            bufs: (0..n).map(|_| None).collect(),
            ring,
            next: 0,
            spare: Vec::with_capacity(n),
            pool,
            buf_len,
        }
    }

    /// The descriptors.
    pub fn descs(&self) -> &DescRing {
        &self.ring
    }

    #[inline(always)]
    fn post(&mut self, i: u16, buf: PacketBuf) {
        // Read format: packet buffer address, header buffer address 0 (this clears DD).
        self.ring.write_desc(i, buf.iova(), 0);
        self.bufs[i as usize] = Some(buf);
    }

    /// Posts a buffer in every descriptor. Returns the tail to write (count - 1) or
    /// `None` when the pool has too few buffers.
    pub fn fill(&mut self) -> Option<u16> {
        let n = self.ring.count;
        let mut v = Vec::with_capacity(n as usize);
        if self.pool.alloc_bulk(&mut v, n as usize) < n as usize {
            return None;
        }
        for (i, mut b) in v.into_iter().enumerate() {
            b.reset();
            self.post(i as u16, b);
        }
        self.next = 0;
        Some(n - 1)
    }

    /// Moves up to `max` received frames into `out`, re-arming each descriptor with
    /// a fresh buffer. Returns the new tail to write, if any descriptor was re-armed.
    #[inline]
    pub fn rx(&mut self, out: &mut Vec<PacketBuf>, max: usize, c: &QueueCounters) -> Option<u16> {
        let mask = self.ring.count - 1;
        // How many are done?
        let mut ready = 0usize;
        let limit = max.min(self.ring.count as usize);
        while ready < limit {
            let st = self.ring.read((self.next + ready as u16) & mask, 2);
            if st & RXD_STAT_DD == 0 {
                break;
            }
            ready += 1;
        }
        if ready == 0 {
            return None;
        }
        // Read the rest of each descriptor only after seeing its DD bit.
        fence(Ordering::Acquire);
        if self.spare.len() < ready {
            let want = ready - self.spare.len();
            self.pool.alloc_bulk(&mut self.spare, want);
            // Without buffers, leave the frames in the ring for a later poll.
            ready = ready.min(self.spare.len());
            if ready == 0 {
                return None;
            }
        }
        let (mut pkts, mut bytes, mut errors) = (0usize, 0usize, 0u64);
        let mut i = self.next;
        for _ in 0..ready {
            let st = self.ring.read(i, 2);
            let len = (self.ring.read(i, 3) & 0xffff) as usize;
            let good = st & RXD_STAT_EOP != 0
                && st & RXD_ERR_FRAME == 0
                && len != 0
                && len <= self.buf_len;
            match self.bufs[i as usize].take() {
                Some(mut b) if good && len <= b.capacity() => {
                    b.set_len(len);
                    out.push(b);
                    pkts += 1;
                    bytes += len;
                    let mut fresh = self.spare.pop().expect("spare holds `ready` buffers");
                    fresh.reset();
                    self.post(i, fresh);
                }
                Some(mut b) => {
                    // A bad frame, or one the device split over descriptors (larger
                    // than the buffers): re-post the same buffer and count it.
                    errors += 1;
                    b.reset();
                    self.post(i, b);
                }
                None => {
                    // Only reachable if the device reported a descriptor we never
                    // armed: re-arm it.
                    errors += 1;
                    let mut fresh = self.spare.pop().expect("spare holds `ready` buffers");
                    fresh.reset();
                    self.post(i, fresh);
                }
            }
            i = (i + 1) & mask;
        }
        self.next = i;
        c.count_rx(pkts, bytes);
        if errors > 0 {
            crate::port::bump(&c.errors, errors);
        }
        // Descriptors must be visible before the device sees the tail move.
        fence(Ordering::Release);
        Some(i.wrapping_sub(1) & mask)
    }

    /// Returns every posted buffer to the pool and starts over at descriptor 0
    /// (after the queue is disabled).
    pub fn release(&mut self) {
        for b in self.bufs.iter_mut() {
            b.take();
        }
        self.spare.clear();
        self.next = 0;
        self.ring.clear();
    }
}

/// A tx queue: descriptors plus the buffer in flight in each.
#[derive(Debug)]
pub struct TxRing {
    ring: DescRing,
    bufs: Box<[Option<PacketBuf>]>,
    /// Next descriptor to fill.
    next: u16,
    /// Oldest descriptor not yet known done.
    clean: u16,
    in_flight: u16,
    /// Bursts in flight, oldest first: (last descriptor, which carries RS; frames).
    /// Its capacity (the ring size) is never exceeded: each burst holds a frame.
    bursts: std::collections::VecDeque<(u16, u16)>,
}

impl TxRing {
    /// A tx ring over `ring`.
    pub fn new(ring: DescRing) -> Self {
        let n = ring.count as usize;
        ring.clear();
        Self {
            bufs: (0..n).map(|_| None).collect(),
            ring,
            next: 0,
            clean: 0,
            in_flight: 0,
            bursts: std::collections::VecDeque::with_capacity(n),
        }
    }

    /// The descriptors.
    pub fn descs(&self) -> &DescRing {
        &self.ring
    }

    /// Frames handed to the device and not yet reclaimed.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Frees the buffers of the bursts the device has finished (it writes DD back
    /// into each burst's last descriptor, the one with RS).
    #[inline]
    pub fn reclaim(&mut self) {
        let mask = self.ring.count - 1;
        while let Some(&(last, frames)) = self.bursts.front() {
            if self.ring.read(last, 3) & TXD_STAT_DD == 0 {
                break;
            }
            for _ in 0..frames {
                self.bufs[self.clean as usize].take();
                self.clean = (self.clean + 1) & mask;
            }
            self.in_flight -= frames;
            self.bursts.pop_front();
        }
    }

    /// Queues frames from the front of `bufs`, removing the ones taken. Returns the
    /// tail to write, if any frame was queued. Frames that are empty or too long are
    /// taken and dropped (counted as errors) so they cannot block the queue.
    #[inline]
    pub fn tx(&mut self, bufs: &mut Vec<PacketBuf>, c: &QueueCounters) -> Option<u16> {
        self.reclaim();
        let mask = self.ring.count - 1;
        // One descriptor stays empty so that head == tail means "empty".
        let room = (self.ring.count - 1 - self.in_flight) as usize;
        let n = room.min(bufs.len());
        if n == 0 {
            return None;
        }
        let (mut pkts, mut bytes, mut bad) = (0usize, 0usize, 0u64);
        let mut i = self.next;
        for b in bufs.drain(..n) {
            let len = b.len();
            if len == 0 || len > TX_MAX_LEN {
                bad += 1;
                continue;
            }
            let lo = b.iova();
            let hi = tx_cmd_type_len(len as u32) as u64 | (tx_olinfo(len as u32) as u64) << 32;
            self.ring.write_desc(i, lo, hi);
            self.bufs[i as usize] = Some(b);
            i = (i + 1) & mask;
            pkts += 1;
            bytes += len;
        }
        if pkts > 0 {
            let last = i.wrapping_sub(1) & mask;
            self.ring.write(last, 2, self.ring.read(last, 2) | TXD_CMD_RS);
            self.bursts.push_back((last, pkts as u16));
        }
        self.in_flight += pkts as u16;
        c.count_tx(pkts, bytes);
        if bad > 0 {
            crate::port::bump(&c.errors, bad);
            crate::port::bump(&c.tx_drops, bad);
        }
        if pkts == 0 {
            return None;
        }
        self.next = i;
        fence(Ordering::Release);
        Some(i)
    }

    /// Drops every in-flight buffer and starts over at descriptor 0 (after the
    /// queue is disabled).
    pub fn release(&mut self) {
        for b in self.bufs.iter_mut() {
            b.take();
        }
        self.in_flight = 0;
        self.next = 0;
        self.clean = 0;
        self.bursts.clear();
        self.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::DmaMemory;
    use crate::mempool::MempoolConfig;
    use crate::port::PortCounters;

    fn pool(data_room: usize) -> Mempool {
        Mempool::small_pages(MempoolConfig { count: 256, data_room, headroom: 128 }).unwrap()
    }

    fn ring(mem: &DmaMemory, count: u16) -> DescRing {
        // SAFETY: the memory outlives the ring in each test and is used by it alone.
        unsafe { DescRing::new(mem.base(), count, mem.iova_at(0)) }
    }

    #[test]
    fn tx_descriptor_encoding() {
        assert_eq!(tx_cmd_type_len(60), 0x2330_003c);
        assert_eq!(tx_olinfo(60), 60 << 14);
        let mem = DmaMemory::with_small_pages(4096).unwrap();
        let p = pool(2048);
        let c = PortCounters::new(1);
        let mut tx = TxRing::new(ring(&mem, 8));
        let mut v = Vec::new();
        p.alloc_bulk(&mut v, 3);
        v[0].copy_from(&[1u8; 60]);
        v[1].copy_from(&[]); // empty: dropped
        v[2].copy_from(&[2u8; 1514]);
        let iova0 = v[0].iova();
        assert_eq!(tx.tx(&mut v, c.queue(0)), Some(2));
        assert!(v.is_empty());
        let d = tx.descs();
        assert_eq!(d.read(0, 0) as u64 | (d.read(0, 1) as u64) << 32, iova0);
        assert_eq!(d.read(0, 2), tx_cmd_type_len(60), "no RS inside a burst");
        assert_eq!(d.read(0, 3), tx_olinfo(60));
        assert_eq!(d.read(1, 2), tx_cmd_type_len(1514) | TXD_CMD_RS, "RS on the burst's last");
        let s = c.queue(0).snapshot();
        assert_eq!((s.tx_packets, s.tx_bytes, s.errors, s.tx_drops), (2, 1574, 1, 1));
        // Nothing done yet: nothing reclaimed. DD on a descriptor without RS (which a
        // device never writes) frees nothing either; DD on the burst's last frees all.
        assert_eq!(tx.in_flight(), 2);
        tx.reclaim();
        tx.descs().write(0, 3, TXD_STAT_DD);
        tx.reclaim();
        assert_eq!(tx.in_flight(), 2);
        tx.descs().write(1, 3, TXD_STAT_DD);
        tx.reclaim();
        assert_eq!(tx.in_flight(), 0);
    }

    #[test]
    fn tx_stops_when_the_ring_is_full_and_keeps_the_rest() {
        let mem = DmaMemory::with_small_pages(4096).unwrap();
        let p = pool(2048);
        let c = PortCounters::new(1);
        let mut tx = TxRing::new(ring(&mem, 8));
        let mut v = Vec::new();
        p.alloc_bulk(&mut v, 10);
        for b in v.iter_mut() {
            b.copy_from(&[0u8; 64]);
        }
        assert_eq!(tx.tx(&mut v, c.queue(0)), Some(7));
        assert_eq!(v.len(), 3, "7 of 10 fit in an 8-descriptor ring");
        assert_eq!(tx.tx(&mut v, c.queue(0)), None);
        for i in 0..7 {
            tx.descs().write(i, 3, TXD_STAT_DD);
        }
        assert_eq!(tx.tx(&mut v, c.queue(0)), Some(2));
        assert!(v.is_empty());
    }

    /// Simulates the device writing back descriptor `i`.
    fn complete_rx(d: &DescRing, i: u16, status: u32, len: u16) {
        d.write(i, 2, status);
        d.write(i, 3, len as u32);
    }

    #[test]
    fn rx_takes_good_frames_and_rearms() {
        let mem = DmaMemory::with_small_pages(4096).unwrap();
        let p = pool(2048);
        let c = PortCounters::new(1);
        let mut rx = RxRing::new(ring(&mem, 8), p.clone(), 2048);
        assert_eq!(rx.fill(), Some(7));
        let d = rx.descs();
        let posted = d.read(0, 0) as u64 | (d.read(0, 1) as u64) << 32;
        assert!(mem.virt_to_iova(posted as usize).is_none(), "buffers come from the pool");
        let mut out = Vec::new();
        assert_eq!(rx.rx(&mut out, 32, c.queue(0)), None, "nothing done yet");
        complete_rx(rx.descs(), 0, RXD_STAT_DD | RXD_STAT_EOP, 60);
        complete_rx(rx.descs(), 1, RXD_STAT_DD | RXD_STAT_EOP, 1514);
        assert_eq!(rx.rx(&mut out, 32, c.queue(0)), Some(1));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].len(), out[1].len()), (60, 1514));
        assert_eq!(out[0].iova(), posted);
        // Re-armed: DD cleared, a fresh buffer posted.
        assert_eq!(rx.descs().read(0, 2) & RXD_STAT_DD, 0);
        let s = c.queue(0).snapshot();
        assert_eq!((s.rx_packets, s.rx_bytes), (2, 1574));
    }

    #[test]
    fn rx_rejects_bad_lengths_errors_and_split_frames() {
        let mem = DmaMemory::with_small_pages(4096).unwrap();
        let p = pool(2048);
        let c = PortCounters::new(1);
        let mut rx = RxRing::new(ring(&mem, 8), p.clone(), 2048);
        rx.fill().unwrap();
        let d = rx.descs();
        complete_rx(d, 0, RXD_STAT_DD | RXD_STAT_EOP, 0); // empty
        complete_rx(d, 1, RXD_STAT_DD | RXD_STAT_EOP, 4000); // longer than the buffer
        complete_rx(d, 2, RXD_STAT_DD, 2048); // not EOP: split frame
        complete_rx(d, 3, RXD_STAT_DD | RXD_STAT_EOP | 0x8000_0000, 64); // RXE
        complete_rx(d, 4, RXD_STAT_DD | RXD_STAT_EOP, 64); // good
        let mut out = Vec::new();
        assert_eq!(rx.rx(&mut out, 32, c.queue(0)), Some(4));
        assert_eq!(out.len(), 1);
        let s = c.queue(0).snapshot();
        assert_eq!((s.rx_packets, s.errors), (1, 4));
        // The ring keeps all its buffers: 8 posted, 1 given out, 1 taken from spare.
        drop(out);
        rx.release();
    }

    #[test]
    fn rx_respects_max() {
        let mem = DmaMemory::with_small_pages(4096).unwrap();
        let p = pool(2048);
        let c = PortCounters::new(1);
        let mut rx = RxRing::new(ring(&mem, 8), p, 2048);
        rx.fill().unwrap();
        for i in 0..5 {
            complete_rx(rx.descs(), i, RXD_STAT_DD | RXD_STAT_EOP, 100);
        }
        let mut out = Vec::new();
        assert_eq!(rx.rx(&mut out, 2, c.queue(0)), Some(1));
        assert_eq!(rx.rx(&mut out, 32, c.queue(0)), Some(4));
        assert_eq!(out.len(), 5);
    }
}
