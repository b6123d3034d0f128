//! Mempool microbenchmark: bulk alloc + free of one burst (32 buffers) on one core,
//! the way a poll-mode worker uses the pool. Reported per buffer: criterion's
//! throughput is 32 elements per iteration, so ns/buffer = time per iteration / 32.
//!
//! Run: `cargo bench --bench mempool`. Target: under 5 ns per buffer per round trip.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use podwire_driver::{Mempool, MempoolConfig, PacketBuf, BURST_SIZE};

fn bench_pool(c: &mut Criterion, name: &str, pool: Mempool) {
    let mut bufs: Vec<PacketBuf> = Vec::with_capacity(BURST_SIZE);
    // Warm this thread's cache of the pool.
    pool.alloc_bulk(&mut bufs, BURST_SIZE);
    bufs.clear();
    let mut group = c.benchmark_group("mempool");
    group.throughput(Throughput::Elements(BURST_SIZE as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let n = pool.alloc_bulk(black_box(&mut bufs), BURST_SIZE);
            debug_assert_eq!(n, BURST_SIZE);
            bufs.clear();
        })
    });
    group.finish();
}

fn mempool(c: &mut Criterion) {
    let cfg = MempoolConfig { count: 8192, ..Default::default() };
    match Mempool::hugepages(cfg) {
        Ok(pool) => bench_pool(c, "alloc_free_burst32/hugepages", pool),
        Err(e) => eprintln!("hugepage pool unavailable, benchmarking small pages only: {e}"),
    }
    let pool = Mempool::small_pages(cfg).expect("small-page mempool");
    bench_pool(c, "alloc_free_burst32/small_pages", pool);
}

criterion_group!(benches, mempool);
criterion_main!(benches);
