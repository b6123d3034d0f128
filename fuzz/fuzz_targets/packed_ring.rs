//! Packed virtqueue walker: podwire's `PackedRing` (vhost/src/ring/packed.rs) over a
//! synthetic guest memory map built from the input (see `podwire_fuzz::ring` for the
//! layout), driven by a list of dequeue, enqueue and guest operations.
//!
//! Beyond "no panic", after every operation:
//! - every access stayed inside the memory map (fenced regions, canaries intact);
//! - the ring position stays below the ring size, and moves by at most one lap;
//! - every chain consumed was available (its head's AVAIL/USED flags against the
//!   driver's wrap counter) and gets a used descriptor at its head carrying its
//!   buffer id;
//! - the counters add up (packets received + malformed chains = chains consumed;
//!   bytes sent = the lengths of the used descriptors);
//! - each packet dequeued holds exactly the bytes of its chain after the virtio-net
//!   header (an independent walk of the chain over a copy of the ring taken before);
//! - after the run, every packet buffer is back in the pool.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podwire_driver::port::QueueCounters;
use podwire_fuzz::ring::{delta, overlaps, packets, poke, Op, RingInput};
use podwire_fuzz::{buffers_in_use, pool, FencedMemory};
use podwire_vhost::ring::packed::PackedRing;
use podwire_vhost::ring::{DESC_F_INDIRECT, DESC_F_NEXT};

const F_AVAIL: u16 = 1 << 7;
const F_USED: u16 = 1 << 15;

fuzz_target!(|data: &[u8]| run(data));

fn rd16(p: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([p[at], p[at + 1]])
}

fn rd32(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().expect("4"))
}

fn rd64(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().expect("8"))
}

/// A chain as the model sees it in a copy of the ring.
struct Chain {
    pos: usize,
    count: usize,
    id: u16,
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

/// Walks the chain at `pos` of `ring` (a copy of the descriptor ring), reading
/// buffers and indirect tables from `fm`. `None` when the model finds it invalid.
fn walk(fm: &FencedMemory, ring: &[u8], size: usize, pos: usize) -> Option<Chain> {
    let mut c = Chain { pos, count: 0, id: 0, bytes: Vec::new(), spans: Vec::new() };
    let mut p = pos;
    loop {
        let d = 16 * p;
        let (addr, len, id, flags) =
            (rd64(ring, d), rd32(ring, d + 8), rd16(ring, d + 12), rd16(ring, d + 14));
        c.count += 1;
        if c.count > size {
            return None;
        }
        if flags & DESC_F_INDIRECT != 0 {
            let t = fm.gpa(addr, len as u64)?;
            c.spans.push((t as usize, t as usize + len as usize));
            // SAFETY: t..t+len lies in a fenced region.
            let table = unsafe { std::slice::from_raw_parts(t, len as usize) };
            for e in table.chunks_exact(16) {
                c.spans.extend(fm.read_gpa(rd64(e, 0), rd32(e, 8) as u64, &mut c.bytes)?);
            }
            c.id = id;
            return Some(c);
        }
        c.spans.extend(fm.read_gpa(addr, len as u64, &mut c.bytes)?);
        if flags & DESC_F_NEXT == 0 {
            c.id = id;
            return Some(c);
        }
        p = (p + 1) % size;
    }
}

/// Position (index, wrap) as one number that grows by one per descriptor.
fn lin(base: u32, size: usize) -> usize {
    (base & 0x7fff) as usize + if base & 0x8000 != 0 { size } else { 0 }
}

fn run(data: &[u8]) {
    let input = RingInput::parse(data);
    let Some(fm) = input.memory() else { return };
    let Ok(mem) = fm.guest_memory() else { return };
    let cap = pool().alloc().map_or(0, |b| b.capacity());
    {
        let result = PackedRing::new(input.params(mem.clone()), &input.addr, input.base);
        assert!(fm.canaries_intact(), "ring setup wrote outside the memory map");
        let Ok(mut ring) = result else { return };
        drive(&input, &fm, &mut ring, cap);
        drop(ring);
        assert!(fm.canaries_intact(), "ring teardown wrote outside the memory map");
    }
    drop(mem);
    drop(fm);
    assert_eq!(buffers_in_use(), 0, "packet buffers leaked");
}

fn drive(input: &RingInput, fm: &FencedMemory, ring: &mut PackedRing, cap: usize) {
    let size = input.size as usize;
    let hdr = input.hdr_len();
    let in_order = input.in_order();
    let desc = fm.uva(input.addr.desc, 16 * size as u64).expect("PackedRing::new checked it");
    let ring_span = (desc as usize, desc as usize + 16 * size);
    // SAFETY: desc..desc+16*size lies in a fenced region.
    let live = || unsafe { std::slice::from_raw_parts(desc, 16 * size) }.to_vec();
    let q = QueueCounters::default();
    let mut serial = 0u32;
    for op in &input.ops {
        let c0 = q.snapshot();
        let before = live();
        let b0 = ring.base();
        // The model's walk of what the op may consume: chains from the ring position
        // on, over the copy taken before the op.
        let chains_from = |b1: u32| -> Option<Vec<Chain>> {
            let (mut p, mut wrap) = ((b0 & 0x7fff) as usize, b0 & 0x8000 != 0);
            let steps = (lin(b1, size) + 2 * size - lin(b0, size)) % (2 * size);
            let mut done = 0;
            let mut v = Vec::new();
            while done < steps {
                let f = rd16(&before, 16 * p + 14);
                let avail = ((f & F_AVAIL != 0) == wrap) && ((f & F_USED != 0) != wrap);
                assert!(avail, "consumed a descriptor the driver had not made available");
                let c = walk(fm, &before, size, p)?;
                done += c.count;
                p += c.count;
                if p >= size {
                    p -= size;
                    wrap = !wrap;
                }
                v.push(c);
            }
            assert_eq!(done, steps, "the position moved to the end of a chain");
            Some(v)
        };
        match *op {
            Op::Dequeue(max) => {
                let mut out = Vec::new();
                let r = ring.dequeue(pool(), &mut out, max, &q);
                assert!(fm.canaries_intact(), "dequeue wrote outside the memory map");
                let Ok(n) = r else {
                    assert!(out.is_empty(), "a failed dequeue returns no packets");
                    return;
                };
                assert_eq!(n, out.len());
                assert!(n <= max, "dequeue returned {n} > max {max}");
                let b1 = ring.base();
                assert!(((b1 & 0x7fff) as usize) < size, "ring position {b1:#x} outside the ring");
                let d = delta(&c0, &q);
                assert_eq!(d.rx_packets as usize, n);
                assert_eq!(d.rx_bytes as usize, out.iter().map(|b| b.len()).sum::<usize>());
                // The model reads indirect tables live: one the guest put inside its
                // ring may have been overwritten by used descriptors meanwhile.
                let Some(chains) = chains_from(b1) else { continue };
                assert_eq!(d.errors as usize, chains.len() - n, "bad chains are counted");
                let now = live();
                let mut expect = Vec::new();
                let mut comparable = true;
                if in_order && !chains.is_empty() {
                    // In order, the burst's first descriptor, released at the end of
                    // the burst, carries the id of its last chain and stands for all.
                    let (first, last) = (&chains[0], &chains[chains.len() - 1]);
                    let flags = rd16(&now, 16 * first.pos + 14);
                    let used = (flags >> 7) & 1 == (flags >> 15) & 1;
                    assert!(used, "an in-order tx burst is released when it ends");
                    assert_eq!(rd16(&now, 16 * first.pos + 12), last.id, "burst's last id");
                }
                for c in &chains {
                    // A used descriptor shows AVAIL == USED; the first one of a tx batch
                    // is held back (still as the driver made it available) until its
                    // release writes id, length and flags together.
                    let flags = rd16(&now, 16 * c.pos + 14);
                    if !in_order && (flags >> 7) & 1 == (flags >> 15) & 1 {
                        assert_eq!(
                            rd16(&now, 16 * c.pos + 12),
                            c.id,
                            "used descriptor carries the id"
                        );
                    }
                    comparable &= !c.spans.iter().any(|&s| overlaps(&[ring_span], s));
                    if c.bytes.len() >= hdr && c.bytes.len() - hdr <= cap {
                        expect.push(&c.bytes[hdr..]);
                    }
                }
                if comparable {
                    assert_eq!(expect.len(), n, "packets kept");
                    for (b, e) in out.iter().zip(&expect) {
                        assert!(b.data() == *e, "packet bytes differ from the chain");
                    }
                }
            }
            Op::Enqueue { count, len, step } => {
                let mut bufs = packets(count, len, step, &mut serial);
                let lens: Vec<usize> = bufs.iter().map(|b| b.len()).collect();
                let r = ring.enqueue(&mut bufs, &q);
                assert!(fm.canaries_intact(), "enqueue wrote outside the memory map");
                let Ok(taken) = r else { return };
                assert!(taken <= lens.len());
                let left: Vec<usize> = bufs.iter().map(|b| b.len()).collect();
                assert_eq!(left, lens[taken..], "untaken packets stay, in order");
                let d = delta(&c0, &q);
                assert_eq!((d.tx_packets + d.tx_drops) as usize, taken, "taken = sent + dropped");
                let b1 = ring.base();
                assert!(((b1 & 0x7fff) as usize) < size, "ring position {b1:#x} outside the ring");
                let Some(chains) = chains_from(b1) else { continue };
                // Buffers the guest pointed at its own ring make the ring unreadable.
                if chains.iter().any(|c| c.spans.iter().any(|&s| overlaps(&[ring_span], s))) {
                    continue;
                }
                let now = live();
                let mut written = 0u64;
                for c in &chains {
                    let f = rd16(&now, 16 * c.pos + 14);
                    assert_eq!(f & F_AVAIL != 0, f & F_USED != 0, "used descriptor flags");
                    // A used descriptor shows AVAIL == USED; the first one of a tx batch
                    // is held back (still as the driver made it available) until its
                    // release writes id, length and flags together.
                    let flags = rd16(&now, 16 * c.pos + 14);
                    if (flags >> 7) & 1 == (flags >> 15) & 1 {
                        assert_eq!(
                            rd16(&now, 16 * c.pos + 12),
                            c.id,
                            "used descriptor carries the id"
                        );
                    }
                    written += rd32(&now, 16 * c.pos + 8) as u64;
                }
                assert_eq!(written, d.tx_bytes + d.tx_packets * hdr as u64, "used lengths");
            }
            Op::Publish { a, b, c } => {
                // The guest writes the flags of descriptor a|b<<8: `c` picks NEXT,
                // WRITE, INDIRECT and which wrap counter it is available for.
                let pos = (a as usize | (b as usize) << 8) % size;
                let wrap = c & 0x80 != 0;
                let mut f = (c & 7) as u16;
                if wrap {
                    f |= F_AVAIL;
                } else {
                    f |= F_USED;
                }
                if c & 0x40 != 0 {
                    f ^= F_USED; // both or neither: a used-looking descriptor
                }
                // SAFETY: pos < size: inside the checked descriptor ring.
                unsafe { std::ptr::write_unaligned(desc.add(16 * pos + 14).cast::<u16>(), f) };
            }
            Op::Poke { offset, value } => {
                poke(fm, offset, value);
            }
        }
    }
}
