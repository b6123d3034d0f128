//! Cycles and nanoseconds per packet in the VFIO drivers' own descriptor code, over
//! rings in ordinary memory with a minimal simulated device (a few stores per
//! descriptor, included in the figure). An emulated NIC would measure the emulator;
//! this measures the driver.
//!
//! - `igbvf/rx`: 32 descriptors completed (DD|EOP, length) -> `RxRing::rx` takes the
//!   32 frames and re-arms the descriptors with fresh buffers -> the frames are freed.
//! - `igbvf/tx`: `TxRing::tx` queues 32 frames (and reclaims the previous burst,
//!   whose descriptors the device marked done).
//! - `virtio/rx`, `virtio/tx`: the same over a split virtqueue (used ring entries in,
//!   avail ring entries out).
//!
//! Criterion reports time per burst of 32 (throughput = 32 elements); after each
//! group a line `cycles/packet` from the TSC is printed.
//!
//! Run: `cargo bench --bench nic_rings`.

use std::hint::black_box;
use std::ptr::NonNull;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use podwire_driver::mem::DmaMemory;
use podwire_driver::nic::igbvf::ring::{
    DescRing, RxRing, TxRing, RXD_STAT_DD, RXD_STAT_EOP, TXD_STAT_DD,
};
use podwire_driver::nic::virtio::ring::{RxQueue, SplitQueue, TxQueue};
use podwire_driver::port::PortCounters;
use podwire_driver::{Mempool, MempoolConfig, PacketBuf, BURST_SIZE};

const RING: u16 = 512;
const FRAME: usize = 64;

fn pool() -> Mempool {
    let cfg = MempoolConfig { count: 8192, ..Default::default() };
    Mempool::hugepages(cfg).or_else(|_| Mempool::small_pages(cfg)).expect("mempool")
}

fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions on x86_64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Runs `f` (one burst) many times and prints TSC cycles per packet.
fn cycles_per_packet(name: &str, mut f: impl FnMut()) {
    const ROUNDS: u64 = 50_000;
    for _ in 0..1000 {
        f();
    }
    let t0 = tsc();
    for _ in 0..ROUNDS {
        f();
    }
    let cyc = (tsc() - t0) as f64 / (ROUNDS * BURST_SIZE as u64) as f64;
    println!("{name}: {cyc:.1} cycles/packet (TSC, includes the simulated device)");
}

fn igbvf(c: &mut Criterion) {
    let pool = pool();
    let counters = PortCounters::new(1);
    let mem = DmaMemory::with_small_pages(2 * RING as usize * 16).unwrap();
    // SAFETY: mem outlives both rings (dropped at the end of this function) and is
    // split between them.
    let (rd, td) = unsafe {
        (
            DescRing::new(mem.base(), RING, mem.iova_at(0)),
            DescRing::new(
                NonNull::new(mem.as_ptr().add(RING as usize * 16)).unwrap(),
                RING,
                mem.iova_at(RING as usize * 16),
            ),
        )
    };
    let mut rx = RxRing::new(rd, pool.clone(), 2048);
    rx.fill().unwrap();
    let mut out: Vec<PacketBuf> = Vec::with_capacity(BURST_SIZE);
    let mut dev = 0u16;
    let mut rx_burst = || {
        for _ in 0..BURST_SIZE {
            let d = rx.descs();
            d.write(dev, 3, FRAME as u32);
            d.write(dev, 2, RXD_STAT_DD | RXD_STAT_EOP);
            dev = (dev + 1) & (RING - 1);
        }
        black_box(rx.rx(&mut out, BURST_SIZE, counters.queue(0)));
        out.clear();
    };
    let mut g = c.benchmark_group("igbvf");
    g.throughput(Throughput::Elements(BURST_SIZE as u64));
    g.bench_function("rx", |b| b.iter(&mut rx_burst));
    cycles_per_packet("igbvf/rx", &mut rx_burst);

    let mut tx = TxRing::new(td);
    let mut bufs: Vec<PacketBuf> = Vec::with_capacity(BURST_SIZE);
    let mut done = 0u16;
    let mut tx_burst = || {
        pool.alloc_bulk(&mut bufs, BURST_SIZE);
        for b in bufs.iter_mut() {
            b.set_len(FRAME);
        }
        let tail = tx.tx(&mut bufs, counters.queue(0));
        // The device finishes everything queued so far.
        if let Some(t) = tail {
            while done != t {
                tx.descs().write(done, 3, TXD_STAT_DD);
                done = (done + 1) & (RING - 1);
            }
        }
        bufs.clear();
    };
    g.bench_function("tx", |b| b.iter(&mut tx_burst));
    cycles_per_packet("igbvf/tx", &mut tx_burst);
    g.finish();
}

fn virtio(c: &mut Criterion) {
    let pool = pool();
    let counters = PortCounters::new(1);
    let qb = SplitQueue::bytes(RING).next_multiple_of(4096);
    let mem = DmaMemory::with_small_pages(2 * qb).unwrap();
    // SAFETY: mem outlives both queues and is split between them.
    let (rq, tq) = unsafe {
        (
            SplitQueue::new(mem.base(), mem.iova_at(0), RING),
            SplitQueue::new(NonNull::new(mem.as_ptr().add(qb)).unwrap(), mem.iova_at(qb), RING),
        )
    };
    let mut rx = RxQueue::new(rq, pool.clone());
    assert!(rx.fill());
    let mut out: Vec<PacketBuf> = Vec::with_capacity(BURST_SIZE);
    let mut ids: Vec<u16> = Vec::with_capacity(RING as usize);
    let mut avail_seen = 0u16;
    let mut pending = std::collections::VecDeque::with_capacity(RING as usize);
    let mut rx_burst = || {
        // The device takes newly posted descriptors and returns 32 of them filled.
        ids.clear();
        avail_seen = rx.queue().device_avail(avail_seen, &mut ids);
        pending.extend(ids.iter().copied());
        for _ in 0..BURST_SIZE {
            let id = pending.pop_front().unwrap();
            let (addr, _, _) = rx.queue().desc(id);
            // SAFETY: identity IOVA: addr is the posted buffer's header, inside the
            // pool; num_buffers (bytes 10..12) = 1.
            unsafe { (addr as *mut u8).add(10).cast::<u16>().write_unaligned(1) };
            rx.queue().device_put_used(id as u32, (FRAME + 12) as u32);
        }
        black_box(rx.rx(&mut out, BURST_SIZE, counters.queue(0)));
        out.clear();
    };
    let mut g = c.benchmark_group("virtio");
    g.throughput(Throughput::Elements(BURST_SIZE as u64));
    g.bench_function("rx", |b| b.iter(&mut rx_burst));
    cycles_per_packet("virtio/rx", &mut rx_burst);

    let mut tx = TxQueue::new(tq);
    let mut bufs: Vec<PacketBuf> = Vec::with_capacity(BURST_SIZE);
    let mut tx_seen = 0u16;
    let mut tids: Vec<u16> = Vec::with_capacity(RING as usize);
    let mut tx_burst = || {
        pool.alloc_bulk(&mut bufs, BURST_SIZE);
        for b in bufs.iter_mut() {
            b.set_len(FRAME);
        }
        black_box(tx.tx(&mut bufs, counters.queue(0)));
        // The device consumes and returns everything queued.
        tids.clear();
        tx_seen = tx.queue().device_avail(tx_seen, &mut tids);
        for &id in &tids {
            tx.queue().device_put_used(id as u32, 0);
        }
        bufs.clear();
    };
    g.bench_function("tx", |b| b.iter(&mut tx_burst));
    cycles_per_packet("virtio/tx", &mut tx_burst);
    g.finish();
}

criterion_group!(benches, igbvf, virtio);
criterion_main!(benches);
