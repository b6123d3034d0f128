//! DMA memory and the mempool on real 2 MiB hugepages. These tests need hugepages
//! reserved and fail (never skip) with the command to reserve them when there are
//! none. Physical IOVA mode also needs root (CAP_SYS_ADMIN to read PFNs).

use podwire_driver::mem::HUGEPAGE_SIZE;
use podwire_driver::{
    DmaMemory, DriverError, IovaMode, Mempool, MempoolConfig, PacketBuf, BURST_SIZE,
};

/// Unwraps a hugepage allocation, failing with how to fix the machine.
fn need_hugepages<T>(r: Result<T, DriverError>, what: &str) -> T {
    r.unwrap_or_else(|e| {
        panic!(
            "{what} needs 2 MiB hugepages and could not get them ({e}). Reserve them with \
             `echo 1024 > /proc/sys/vm/nr_hugepages` (as root) and run the tests again."
        )
    })
}

#[test]
fn identity_mode_hugepage_memory() {
    let m = need_hugepages(DmaMemory::hugepages(3 << 20, IovaMode::Identity), "DMA memory");
    assert!(m.is_hugepage());
    assert_eq!(m.page_size(), HUGEPAGE_SIZE);
    assert_eq!(m.len(), 4 << 20, "rounded up to whole hugepages");
    assert_eq!(m.iova_mode(), IovaMode::Identity);
    let base = m.as_ptr() as usize;
    assert_eq!(base % HUGEPAGE_SIZE, 0, "hugepage mappings are 2 MiB aligned");
    for off in [0, 1, 4095, HUGEPAGE_SIZE, m.len() - 1] {
        assert_eq!(m.virt_to_iova(base + off), Some((base + off) as u64));
    }
    assert_eq!(m.virt_to_iova(base + m.len()), None);
    assert_eq!(m.virt_to_iova(base - 1), None);
    // The memory is usable end to end.
    // SAFETY: the region is m.len() bytes, mapped writable, and owned by `m`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), m.len()) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == i as u8));
    assert_eq!(m.file().metadata().unwrap().len(), m.len() as u64);
}

#[test]
fn physical_mode_translates_within_and_across_hugepages() {
    let m =
        need_hugepages(DmaMemory::hugepages(2 * HUGEPAGE_SIZE, IovaMode::Physical), "DMA memory");
    assert_eq!(m.iova_mode(), IovaMode::Physical);
    let base = m.as_ptr() as usize;
    for page in 0..2 {
        let start = base + page * HUGEPAGE_SIZE;
        let p0 = m.virt_to_iova(start).expect("inside");
        assert_ne!(p0, 0, "a physical address");
        assert_eq!(p0 % HUGEPAGE_SIZE as u64, 0, "hugepages are physically 2 MiB aligned");
        // Two addresses in one hugepage differ by their offset.
        for off in [1usize, 100, 4096, 65_537, HUGEPAGE_SIZE - 1] {
            let p = m.virt_to_iova(start + off).expect("inside");
            assert_eq!(p - p0, off as u64, "page {page} offset {off}");
        }
    }
    assert_eq!(m.virt_to_iova(base + m.len()), None);
}

/// Allocates and frees in bursts, checking every buffer and its IOVA.
fn exercise(pool: &Mempool, rounds: usize) {
    let mut burst: Vec<PacketBuf> = Vec::with_capacity(BURST_SIZE);
    let mut held: Vec<PacketBuf> = Vec::new();
    for round in 0..rounds {
        assert_eq!(pool.alloc_bulk(&mut burst, BURST_SIZE), BURST_SIZE, "round {round}");
        for (i, b) in burst.iter_mut().enumerate() {
            let tag = (round * BURST_SIZE + i) as u32;
            let payload: Vec<u8> = (0..1500u32).map(|k| (k ^ tag) as u8).collect();
            assert!(b.copy_from(&payload));
            let va = b.data_ptr() as usize;
            let mem = pool.memory();
            assert_eq!(mem.virt_to_iova(va), Some(b.iova()));
            // The whole buffer is contiguous in IOVA space (no page straddled).
            let last = mem.virt_to_iova(va + b.len() - 1).expect("inside");
            assert_eq!(last - b.iova(), b.len() as u64 - 1);
            if mem.iova_mode() == IovaMode::Identity {
                assert_eq!(b.iova(), va as u64);
            }
        }
        for (i, b) in burst.iter().enumerate() {
            let tag = (round * BURST_SIZE + i) as u32;
            assert!(b.data().iter().enumerate().all(|(k, x)| *x == (k as u32 ^ tag) as u8));
        }
        // Keep every third burst for a while so buffers are reused in a shuffled order.
        if round % 3 == 0 {
            held.append(&mut burst);
        } else {
            burst.clear();
        }
        if held.len() > 8 * BURST_SIZE {
            held.clear();
        }
    }
    held.clear();
    assert_eq!(pool.outside_ring(), pool.in_thread_cache(), "every buffer came back");
}

#[test]
fn mempool_on_hugepages_in_bursts() {
    let cfg = MempoolConfig { count: 4096, ..Default::default() };
    let pool = need_hugepages(Mempool::hugepages(cfg), "the mempool");
    assert!(pool.memory().is_hugepage());
    exercise(&pool, 2000);
}

#[test]
fn mempool_on_hugepages_with_physical_iovas() {
    let cfg = MempoolConfig { count: 2048, ..Default::default() };
    let pool = need_hugepages(Mempool::hugepages_with_mode(cfg, IovaMode::Physical), "the mempool");
    assert_eq!(pool.memory().iova_mode(), IovaMode::Physical);
    exercise(&pool, 500);
}
