//! Split virtqueue walker: podwire's `SplitRing` (vhost/src/ring/split.rs) over a
//! synthetic guest memory map built from the input (see `podwire_fuzz::ring` for the
//! layout), driven by a list of dequeue, enqueue and guest operations.
//!
//! Beyond "no panic", after every operation:
//! - every access stayed inside the memory map (regions sit between inaccessible
//!   pages; the bytes around them are canaries that must be intact);
//! - the ring consumed at most `size` entries, and `used.idx` advanced by exactly the
//!   entries consumed, each used entry naming a descriptor index below `size`;
//! - the counters add up (packets received + malformed chains = chains consumed;
//!   bytes sent = the lengths in the used entries);
//! - each packet dequeued holds exactly the bytes of its descriptor chain after the
//!   virtio-net header (checked by an independent walk of the chain);
//! - after the run, every packet buffer is back in the pool.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podwire_driver::port::QueueCounters;
use podwire_fuzz::ring::{delta, overlaps, packets, poke, Op, RingInput};
use podwire_fuzz::{buffers_in_use, pool, FencedMemory, Spans};
use podwire_vhost::ring::split::SplitRing;
use podwire_vhost::ring::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};

fuzz_target!(|data: &[u8]| run(data));

fn rd16(p: *const u8) -> u16 {
    // SAFETY: callers pass pointers into the fenced regions (checked translations).
    unsafe { std::ptr::read_unaligned(p.cast::<u16>()) }
}

fn rd32(p: *const u8) -> u32 {
    // SAFETY: as above.
    unsafe { std::ptr::read_unaligned(p.cast::<u32>()) }
}

fn rd64(p: *const u8) -> u64 {
    // SAFETY: as above.
    unsafe { std::ptr::read_unaligned(p.cast::<u64>()) }
}

/// The model's walk of the chain at `head`: its bytes and every host range it read.
/// `None` when the model finds the chain invalid.
fn walk(fm: &FencedMemory, desc: *const u8, size: usize, head: u16) -> Option<(Vec<u8>, Spans)> {
    let (mut table, mut table_len) = (desc, size);
    let mut idx = head as usize;
    let mut bytes = Vec::new();
    let mut spans = Vec::new();
    let mut indirect = false;
    for _ in 0..=size + 64 {
        if idx >= table_len {
            return None;
        }
        let d = table.wrapping_add(16 * idx);
        spans.push((d as usize, d as usize + 16));
        let (addr, len, flags, next) =
            (rd64(d), rd32(d.wrapping_add(8)), rd16(d.wrapping_add(12)), rd16(d.wrapping_add(14)));
        if flags & DESC_F_INDIRECT != 0 {
            if indirect || len % 16 != 0 || len == 0 {
                return None;
            }
            table = fm.gpa(addr, len as u64)?;
            spans.push((table as usize, table as usize + len as usize));
            table_len = len as usize / 16;
            idx = 0;
            indirect = true;
            continue;
        }
        spans.extend(fm.read_gpa(addr, len as u64, &mut bytes)?);
        if flags & DESC_F_NEXT == 0 {
            return Some((bytes, spans));
        }
        idx = next as usize;
    }
    None
}

/// Whether any device-writable buffer in the descriptor table (or an indirect table
/// it names) overlaps host range `span`.
fn writable_buffers_hit(
    fm: &FencedMemory,
    desc: *const u8,
    size: usize,
    span: (usize, usize),
) -> bool {
    let hit = |addr: u64, len: u32| {
        fm.gpa_spans(addr, len as u64, None)
            .is_some_and(|s| s.iter().any(|&x| overlaps(&[span], x)))
    };
    for i in 0..size {
        let d = desc.wrapping_add(16 * i);
        let (addr, len, flags) = (rd64(d), rd32(d.wrapping_add(8)), rd16(d.wrapping_add(12)));
        if flags & DESC_F_INDIRECT != 0 {
            let Some(t) = fm.gpa(addr, len as u64) else { continue };
            for j in 0..len as usize / 16 {
                let e = t.wrapping_add(16 * j);
                if rd16(e.wrapping_add(12)) & DESC_F_WRITE != 0
                    && hit(rd64(e), rd32(e.wrapping_add(8)))
                {
                    return true;
                }
            }
        } else if flags & DESC_F_WRITE != 0 && hit(addr, len) {
            return true;
        }
    }
    false
}

fn run(data: &[u8]) {
    let input = RingInput::parse(data);
    let Some(fm) = input.memory() else { return };
    let Ok(mem) = fm.guest_memory() else { return };
    let cap = pool().alloc().map_or(0, |b| b.capacity());
    {
        let result = SplitRing::new(input.params(mem.clone()), &input.addr, input.base as u16);
        assert!(fm.canaries_intact(), "ring setup wrote outside the memory map");
        let Ok(mut ring) = result else { return };
        drive(&input, &fm, &mut ring, cap);
    }
    drop(mem);
    drop(fm);
    assert_eq!(buffers_in_use(), 0, "packet buffers leaked");
}

fn drive(input: &RingInput, fm: &FencedMemory, ring: &mut SplitRing, cap: usize) {
    let size = input.size as usize;
    let hdr = input.hdr_len();
    let in_order = input.in_order();
    let a = input.addr;
    let desc = fm.uva(a.desc, 16 * size as u64).expect("SplitRing::new checked the table");
    let avail = fm.uva(a.avail, 6 + 2 * size as u64).expect("checked avail ring");
    let used = fm.uva(a.used, 6 + 8 * size as u64).expect("checked used ring");
    let used_span = (used as usize, used as usize + 6 + 8 * size);
    let mut used_poked = false;
    let q = QueueCounters::default();
    let mut la = ring.last_avail();
    let mut used_idx = rd16(used.wrapping_add(2));
    assert_eq!(la, used_idx, "the ring starts where used.idx is");
    let mut serial = 0u32;
    for op in &input.ops {
        let c0 = q.snapshot();
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
                let consumed = ring.last_avail().wrapping_sub(la) as usize;
                assert!(consumed <= size, "consumed {consumed} entries of a {size}-entry ring");
                let d = delta(&c0, &q);
                assert_eq!(d.rx_packets as usize, n);
                assert_eq!(d.rx_bytes as usize, out.iter().map(|b| b.len()).sum::<usize>());
                assert_eq!(d.errors as usize, consumed - n, "bad chains are counted");
                let ui = rd16(used.wrapping_add(2));
                if !used_poked {
                    assert_eq!(ui.wrapping_sub(used_idx) as usize, consumed, "used.idx advance");
                    // The model: each consumed chain, walked independently.
                    let mut expect = Vec::new();
                    let mut comparable = true;
                    for k in 0..consumed {
                        let ae = avail.wrapping_add(4 + 2 * ((la as usize + k) & (size - 1)));
                        if overlaps(&[used_span], (ae as usize, ae as usize + 2)) {
                            comparable = false;
                            continue;
                        }
                        let id = rd16(ae) as u32;
                        // In order, one used entry stands for the burst: at the burst's
                        // first slot (where the frontend reads next), with the id of
                        // its last chain.
                        if !in_order || k == consumed - 1 {
                            let first = if in_order { 0 } else { k };
                            let slot = (used_idx as usize + first) & (size - 1);
                            let e = used.wrapping_add(4 + 8 * slot);
                            let (uid, len) = (rd32(e), rd32(e.wrapping_add(4)));
                            assert!((uid as usize) < size, "used id {uid} outside the table");
                            assert_eq!(len, 0, "tx chains are returned with length 0");
                            assert_eq!(uid, id, "used id is the avail head");
                        }
                        // A table the guest put inside its used ring reads differently
                        // now: no comparison then.
                        let Some((bytes, spans)) = walk(fm, desc, size, id as u16) else {
                            comparable = false;
                            continue;
                        };
                        if spans.iter().any(|&s| overlaps(&[used_span], s)) {
                            comparable = false;
                        }
                        if bytes.len() >= hdr && bytes.len() - hdr <= cap {
                            expect.push(bytes[hdr..].to_vec());
                        }
                    }
                    if comparable {
                        assert_eq!(expect.len(), n, "packets kept");
                        for (b, e) in out.iter().zip(&expect) {
                            assert!(b.data() == &e[..], "packet bytes differ from the chain");
                        }
                    }
                }
                la = ring.last_avail();
                used_idx = ui;
            }
            Op::Enqueue { count, len, step } => {
                // A guest may point rx buffers at its own used ring; the used-ring
                // checks below then do not apply.
                used_poked |= writable_buffers_hit(fm, desc, size, used_span);
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
                let consumed = ring.last_avail().wrapping_sub(la) as usize;
                assert!(consumed <= size, "consumed {consumed} entries of a {size}-entry ring");
                let ui = rd16(used.wrapping_add(2));
                if !used_poked {
                    assert_eq!(ui.wrapping_sub(used_idx) as usize, consumed, "used.idx advance");
                    let mut written = 0u64;
                    for k in 0..consumed {
                        let e = used.wrapping_add(4 + 8 * ((used_idx as usize + k) & (size - 1)));
                        assert!((rd32(e) as usize) < size, "used id outside the table");
                        written += rd32(e.wrapping_add(4)) as u64;
                    }
                    assert_eq!(
                        written,
                        d.tx_bytes + d.tx_packets * hdr as u64,
                        "used lengths = headers + bytes sent"
                    );
                }
                la = ring.last_avail();
                used_idx = ui;
            }
            Op::Publish { a: n, b: head, c } => {
                // The guest puts `head` in the next avail slot and moves avail.idx on
                // (by more than one when `n` says so: a hostile jump).
                let idx = rd16(avail.wrapping_add(2));
                let slot = avail.wrapping_add(4 + 2 * (idx as usize & (size - 1)));
                let v = head as u16 | ((c as u16) << 8);
                for (p, val) in [
                    (slot, v),
                    (
                        avail.wrapping_add(2),
                        idx.wrapping_add(1 + (n as u16 & 0x7f) * (n >> 7) as u16),
                    ),
                ] {
                    if overlaps(&[used_span], (p as usize, p as usize + 2)) {
                        used_poked = true;
                    }
                    // SAFETY: inside the checked avail ring.
                    unsafe { std::ptr::write_unaligned(p.cast::<u16>(), val) };
                }
            }
            Op::Poke { offset, value } => {
                if let Some(at) = poke(fm, offset, value) {
                    used_poked |= overlaps(&[used_span], (at, at + 1));
                }
            }
        }
    }
}
