//! The input of the ring targets (`split_ring`, `packed_ring`): a ring setup, a guest
//! memory map, a list of operations and the memory image, and the pieces both
//! targets drive the ring with.
//!
//! Layout (little-endian):
//!
//! ```text
//! flags u8        bit 0 mergeable rx buffers, bit 1 event index, bit 2 12-byte
//!                 virtio-net header (else 10), bit 3 regions end at a page boundary
//!                 (else start at one), bit 4 a call eventfd, bit 5 VIRTIO_F_IN_ORDER
//! size u16        queue size
//! base u32        ring base (SET_VRING_BASE)
//! desc, avail, used u64   the ring addresses (frontend-virtual)
//! nregions u8     1 + n % 4 regions, each: gpa u64, uva u64, size u32
//! nops u8         operations, 4 bytes each: kind, a, b, c
//! image           the rest: copied into the regions one after another
//! ```

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use podwire_driver::port::{CounterSnapshot, QueueCounters};
use podwire_driver::PacketBuf;
use podwire_vhost::memory::GuestMemory;
use podwire_vhost::proto::VringAddr;
use podwire_vhost::ring::RingParams;

use crate::{Bytes, FencedMemory, Put};

/// Input flag: mergeable rx buffers.
pub const F_MRG: u8 = 1;
/// Input flag: event index.
pub const F_EVENT_IDX: u8 = 2;
/// Input flag: 12-byte virtio-net header.
pub const F_HDR12: u8 = 4;
/// Input flag: regions end at a page boundary.
pub const F_END_ALIGNED: u8 = 8;
/// Input flag: give the ring a call eventfd.
pub const F_CALL: u8 = 16;
/// Input flag: VIRTIO_F_IN_ORDER (one used entry per guest-tx burst).
pub const F_IN_ORDER: u8 = 32;

/// One operation on the ring.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// The device takes up to this many packets the guest sent.
    Dequeue(usize),
    /// The device sends packets of these lengths (count, base length, step).
    Enqueue { count: usize, len: usize, step: usize },
    /// The guest makes buffers available (split: advances avail.idx by `a`; packed:
    /// writes the flags of descriptor `pos`).
    Publish { a: u8, b: u8, c: u8 },
    /// The guest writes byte `value` at `offset` of its memory image.
    Poke { offset: usize, value: u8 },
}

/// A decoded ring input.
#[derive(Clone)]
pub struct RingInput {
    /// Flags (`F_*`).
    pub flags: u8,
    /// Queue size.
    pub size: u16,
    /// Ring base.
    pub base: u32,
    /// Ring addresses.
    pub addr: VringAddr,
    /// (gpa, uva, size) of each region.
    pub regions: Vec<(u64, u64, u64)>,
    /// The operations.
    pub ops: Vec<Op>,
    /// The memory image.
    pub image: Vec<u8>,
}

impl RingInput {
    /// Decodes an input (never fails: missing bytes read as 0).
    pub fn parse(data: &[u8]) -> Self {
        let mut b = Bytes::new(data);
        let flags = b.u8();
        let size = b.u16();
        let base = b.u32();
        let (desc, avail, used) = (b.u64(), b.u64(), b.u64());
        let n = 1 + b.u8() as usize % 4;
        let regions = (0..n).map(|_| (b.u64(), b.u64(), b.u32() as u64)).collect();
        let nops = b.u8() as usize;
        let ops = (0..nops)
            .map(|_| {
                let (k, a, x, c) = (b.u8(), b.u8(), b.u8(), b.u8());
                match k % 4 {
                    0 => Op::Dequeue(a as usize % 65),
                    1 => Op::Enqueue {
                        count: a as usize % 33,
                        len: x as usize * 8,
                        step: c as usize,
                    },
                    2 => Op::Publish { a, b: x, c },
                    _ => Op::Poke { offset: (a as usize) << 8 | x as usize, value: c },
                }
            })
            .collect();
        let image = b.rest().to_vec();
        RingInput {
            flags,
            size,
            base,
            addr: VringAddr { index: 0, flags: 0, desc, used, avail, log: 0 },
            regions,
            ops,
            image,
        }
    }

    /// Encodes an input (for seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.put8(self.flags);
        v.put16(self.size);
        v.put32(self.base);
        v.put64(self.addr.desc);
        v.put64(self.addr.avail);
        v.put64(self.addr.used);
        v.put8(self.regions.len() as u8 - 1);
        for &(g, u, s) in &self.regions {
            v.put64(g);
            v.put64(u);
            v.put32(s as u32);
        }
        v.put8(self.ops.len() as u8);
        for op in &self.ops {
            let (k, a, x, c) = match *op {
                Op::Dequeue(n) => (0, n as u8, 0, 0),
                Op::Enqueue { count, len, step } => (1, count as u8, (len / 8) as u8, step as u8),
                Op::Publish { a, b, c } => (2, a, b, c),
                Op::Poke { offset, value } => (3, (offset >> 8) as u8, offset as u8, value),
            };
            v.extend_from_slice(&[k, a, x, c]);
        }
        v.extend_from_slice(&self.image);
        v
    }

    /// Whether VIRTIO_F_IN_ORDER is on: guest tx completes a whole burst with one
    /// used entry (split) or descriptor (packed) carrying the burst's last id.
    pub fn in_order(&self) -> bool {
        self.flags & F_IN_ORDER != 0
    }

    /// Virtio-net header length.
    pub fn hdr_len(&self) -> usize {
        if self.flags & F_HDR12 != 0 {
            12
        } else {
            10
        }
    }

    /// The guest memory, or `None` when the input's regions cannot be laid out.
    pub fn memory(&self) -> Option<FencedMemory> {
        FencedMemory::new(&self.regions, self.flags & F_END_ALIGNED != 0, &self.image)
    }

    /// Ring parameters over `mem`.
    pub fn params(&self, mem: Arc<GuestMemory>) -> RingParams {
        RingParams {
            mem,
            size: self.size,
            hdr_len: self.hdr_len(),
            mrg_rxbuf: self.flags & F_MRG != 0,
            event_idx: self.flags & F_EVENT_IDX != 0,
            in_order: self.in_order(),
            call: (self.flags & F_CALL != 0).then(|| Arc::new(eventfd())),
        }
    }
}

/// A non-blocking eventfd (a frontend's call fd).
pub fn eventfd() -> OwnedFd {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd");
    // SAFETY: a fresh fd we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Pokes `value` at `offset` of the image (the regions one after another), unless
/// that byte is in `protect` (host address ranges the oracle relies on). Returns the
/// host address written.
pub fn poke(mem: &FencedMemory, offset: usize, value: u8) -> Option<usize> {
    let mut off = offset;
    for &(_, _, size, host) in &mem.regions {
        if off < size as usize {
            // SAFETY: off < size: inside the region.
            unsafe { *host.add(off) = value };
            return Some(host as usize + off);
        }
        off -= size as usize;
    }
    None
}

/// Packets for an enqueue: `count` packets of distinct contents, lengths
/// `len + i * step` (capped by the buffer).
pub fn packets(count: usize, len: usize, step: usize, serial: &mut u32) -> Vec<PacketBuf> {
    let pool = crate::pool();
    let mut v = Vec::with_capacity(count);
    for i in 0..count {
        let Some(mut b) = pool.alloc() else { break };
        let n = (len + i * step).min(b.capacity());
        *serial = serial.wrapping_add(1);
        let room = b.room_mut();
        for (k, byte) in room[..n].iter_mut().enumerate() {
            *byte = (k as u32 ^ serial.wrapping_mul(0x9e37)) as u8;
        }
        b.set_len(n);
        v.push(b);
    }
    v
}

/// Counter difference `b - a`.
pub fn delta(a: &CounterSnapshot, q: &QueueCounters) -> CounterSnapshot {
    let b = q.snapshot();
    CounterSnapshot {
        rx_packets: b.rx_packets - a.rx_packets,
        rx_bytes: b.rx_bytes - a.rx_bytes,
        tx_packets: b.tx_packets - a.tx_packets,
        tx_bytes: b.tx_bytes - a.tx_bytes,
        rx_drops: b.rx_drops - a.rx_drops,
        tx_drops: b.tx_drops - a.tx_drops,
        errors: b.errors - a.errors,
    }
}

/// Whether host range `a` overlaps any of `spans`.
pub fn overlaps(spans: &[(usize, usize)], a: (usize, usize)) -> bool {
    spans.iter().any(|&(s, e)| s < a.1 && a.0 < e)
}

/// A guest-side descriptor, for building seeds: (addr, len, flags, next-or-id).
pub type SeedDesc = (u64, u32, u16, u16);

/// Writes a 16-byte descriptor into `image` at `at` in split layout.
pub fn put_split_desc(image: &mut [u8], at: usize, d: SeedDesc) {
    image[at..at + 8].copy_from_slice(&d.0.to_le_bytes());
    image[at + 8..at + 12].copy_from_slice(&d.1.to_le_bytes());
    image[at + 12..at + 14].copy_from_slice(&d.2.to_le_bytes());
    image[at + 14..at + 16].copy_from_slice(&d.3.to_le_bytes());
}

/// Writes a 16-byte descriptor into `image` at `at` in packed layout.
pub fn put_packed_desc(image: &mut [u8], at: usize, d: SeedDesc) {
    image[at..at + 8].copy_from_slice(&d.0.to_le_bytes());
    image[at + 8..at + 12].copy_from_slice(&d.1.to_le_bytes());
    image[at + 12..at + 14].copy_from_slice(&d.3.to_le_bytes());
    image[at + 14..at + 16].copy_from_slice(&d.2.to_le_bytes());
}
