//! Why podwire's split-ring fast path is written by hand: the same burst of 32
//! packets dequeued (guest tx -> mempool buffers) and enqueued (mempool buffers ->
//! guest rx), once through `podwire_vhost::ring::split::SplitRing` and once through
//! the rust-vmm `virtio-queue` crate (`pop_descriptor_chain` + `vm-memory` reads and
//! writes + `add_used`), on one core, over the same shared memory.
//!
//! A tiny in-process "frontend" refills the avail ring before every burst, and the
//! enqueue figures include allocating and filling the 32 mempool buffers: both costs
//! are the same in both variants. Run: `cargo bench --bench vring`.
//!
//! The `packed_*` groups run the same bursts through podwire's packed ring
//! (`PackedRing`), with and without VIRTIO_F_IN_ORDER; no crate to compare with
//! implements packed rings.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use podwire_driver::port::QueueCounters;
use podwire_driver::{Mempool, MempoolConfig, PacketBuf};
use podwire_vhost::memory::{GuestMemory, RegionDesc};
use podwire_vhost::proto::VringAddr;
use podwire_vhost::ring::packed::PackedRing;
use podwire_vhost::ring::split::SplitRing;
use podwire_vhost::ring::RingParams;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

const QSIZE: u16 = 256;
const BURST: usize = 32;
const MEM: usize = 4 << 20;
const DESC: u64 = 0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const BUFS: u64 = 0x10000;
const BUF_LEN: u64 = 2048 + 64;
const PKT: usize = 64;
const HDR: usize = 12;

/// The frontend's view of the shared memory.
struct Frontend {
    base: *mut u8,
    avail_idx: u16,
}

impl Frontend {
    fn new(fd: &OwnedFd, write: bool) -> Self {
        // SAFETY: mapping MEM bytes of a memfd of that size, shared.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        for i in 0..QSIZE as u64 {
            let d = DESC + i * 16;
            let addr = BUFS + i * BUF_LEN;
            let (len, flags) = if write { (BUF_LEN as u32, 2u16) } else { ((HDR + PKT) as u32, 0) };
            // SAFETY: the descriptor table and buffers lie inside the MEM-byte mapping.
            unsafe {
                std::ptr::write_unaligned(base.add(d as usize).cast::<u64>(), addr);
                std::ptr::write_unaligned(base.add(d as usize + 8).cast::<u32>(), len);
                std::ptr::write_unaligned(base.add(d as usize + 12).cast::<u16>(), flags);
                std::ptr::write_bytes(base.add(addr as usize), 0x5a, BUF_LEN as usize);
            }
        }
        Frontend { base, avail_idx: 0 }
    }

    /// Makes `n` more descriptors available (one per packet).
    fn post(&mut self, n: usize) {
        for _ in 0..n {
            let slot = (self.avail_idx % QSIZE) as usize;
            // SAFETY: the avail ring entry lies inside the mapping.
            unsafe {
                std::ptr::write_volatile(
                    self.base.add(AVAIL as usize + 4 + 2 * slot).cast::<u16>(),
                    slot as u16,
                )
            };
            self.avail_idx = self.avail_idx.wrapping_add(1);
        }
        // SAFETY: avail.idx lies inside the mapping, 2-aligned.
        unsafe {
            (*self.base.add(AVAIL as usize + 2).cast::<AtomicU16>())
                .store(self.avail_idx, Ordering::Release)
        };
    }
}

fn memfd() -> OwnedFd {
    // SAFETY: static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"vring-bench".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: valid fd.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), MEM as i64) }, 0);
    fd
}

fn ring_params(fd: &OwnedFd, in_order: bool) -> RingParams {
    let region = RegionDesc { guest_phys_addr: 0, size: MEM as u64, user_addr: 0, mmap_offset: 0 };
    let mem = GuestMemory::map(&[region], vec![fd.try_clone().unwrap()]).unwrap();
    RingParams {
        mem: Arc::new(mem),
        size: QSIZE,
        hdr_len: HDR,
        mrg_rxbuf: true,
        event_idx: false,
        in_order,
        call: None,
    }
}

fn podwire_ring(fd: &OwnedFd) -> SplitRing {
    let addr = VringAddr { index: 0, flags: 0, desc: DESC, used: USED, avail: AVAIL, log: 0 };
    SplitRing::new(ring_params(fd, false), &addr, 0).unwrap()
}

/// The frontend of a packed ring: descriptors `{addr, len, id, flags}` at DESC, the
/// driver event area at AVAIL, the device event area at USED.
struct PackedFrontend {
    base: *mut u8,
    write: bool,
    idx: u16,
    wrap: bool,
}

impl PackedFrontend {
    fn new(fd: &OwnedFd, write: bool) -> Self {
        // Reuse the split frontend's mapping and buffer fill; the descriptor table is
        // rewritten by every post.
        let fe = Frontend::new(fd, write);
        PackedFrontend { base: fe.base, write, idx: 0, wrap: true }
    }

    /// Makes `n` more single-descriptor buffers available, flags last.
    fn post(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.idx as u64;
            let d = (DESC + i * 16) as usize;
            let addr = BUFS + i * BUF_LEN;
            let len = if self.write { BUF_LEN as u32 } else { (HDR + PKT) as u32 };
            let mut flags: u16 = if self.wrap { 1 << 7 } else { 1 << 15 };
            if self.write {
                flags |= 2;
            }
            // SAFETY: descriptor i lies inside the mapping, 16-aligned.
            unsafe {
                std::ptr::write_volatile(self.base.add(d).cast::<u64>(), addr);
                std::ptr::write_volatile(self.base.add(d + 8).cast::<u32>(), len);
                std::ptr::write_volatile(self.base.add(d + 12).cast::<u16>(), i as u16);
                (*self.base.add(d + 14).cast::<AtomicU16>()).store(flags, Ordering::Release);
            }
            self.idx += 1;
            if self.idx == QSIZE {
                self.idx = 0;
                self.wrap = !self.wrap;
            }
        }
    }
}

fn packed_ring(fd: &OwnedFd, in_order: bool) -> PackedRing {
    let addr = VringAddr { index: 0, flags: 0, desc: DESC, used: USED, avail: AVAIL, log: 0 };
    // base: index 0, wrap counter 1.
    PackedRing::new(ring_params(fd, in_order), &addr, 1 << 15).unwrap()
}

fn rustvmm_queue(fd: &OwnedFd) -> (Queue, GuestMemoryMmap) {
    let file = std::fs::File::from(fd.try_clone().unwrap());
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
        GuestAddress(0),
        MEM,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap();
    let mut q = Queue::new(QSIZE).unwrap();
    q.set_size(QSIZE);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    (q, mem)
}

fn pool() -> Mempool {
    Mempool::small_pages(MempoolConfig { count: 4096, ..Default::default() }).unwrap()
}

fn dequeue(c: &mut Criterion) {
    let mut g = c.benchmark_group("split_dequeue_64B");
    g.throughput(Throughput::Elements(BURST as u64));
    let pool = pool();
    let counters = QueueCounters::default();

    let fd = memfd();
    let mut fe = Frontend::new(&fd, false);
    let mut ring = podwire_ring(&fd);
    let mut out: Vec<PacketBuf> = Vec::with_capacity(BURST);
    g.bench_function("podwire", |b| {
        b.iter(|| {
            fe.post(BURST);
            let n = ring.dequeue(&pool, &mut out, BURST, &counters).unwrap();
            assert_eq!(n, BURST);
            out.clear();
        })
    });

    let fd = memfd();
    let mut fe = Frontend::new(&fd, false);
    let (mut q, mem) = rustvmm_queue(&fd);
    g.bench_function("virtio-queue", |b| {
        b.iter(|| {
            fe.post(BURST);
            assert_eq!(pool.alloc_bulk(&mut out, BURST), BURST);
            for buf in out.iter_mut() {
                let chain = q.pop_descriptor_chain(&mem).expect("chain");
                let head = chain.head_index();
                let mut at = 0usize;
                let mut skip = HDR;
                for d in chain {
                    let len = d.len() as usize;
                    let take = len.saturating_sub(skip);
                    let room = buf.room_mut();
                    mem.read_slice(
                        &mut room[at..at + take],
                        GuestAddress(d.addr().0 + skip as u64),
                    )
                    .unwrap();
                    at += take;
                    skip = skip.saturating_sub(len);
                }
                buf.set_len(at);
                q.add_used(&mem, head, 0).unwrap();
            }
            out.clear();
        })
    });
    g.finish();
}

fn enqueue(c: &mut Criterion) {
    let mut g = c.benchmark_group("split_enqueue_64B");
    g.throughput(Throughput::Elements(BURST as u64));
    let pool = pool();
    let counters = QueueCounters::default();
    let fill = |bufs: &mut Vec<PacketBuf>| {
        pool.alloc_bulk(bufs, BURST);
        for b in bufs.iter_mut() {
            b.copy_from(&[0xa5; PKT]);
        }
    };

    let fd = memfd();
    let mut fe = Frontend::new(&fd, true);
    let mut ring = podwire_ring(&fd);
    let mut bufs = Vec::with_capacity(BURST);
    g.bench_function("podwire", |b| {
        b.iter(|| {
            fill(&mut bufs);
            fe.post(BURST);
            assert_eq!(ring.enqueue(&mut bufs, &counters).unwrap(), BURST);
        })
    });

    let fd = memfd();
    let mut fe = Frontend::new(&fd, true);
    let (mut q, mem) = rustvmm_queue(&fd);
    g.bench_function("virtio-queue", |b| {
        b.iter(|| {
            fill(&mut bufs);
            fe.post(BURST);
            let hdr = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
            for buf in bufs.drain(..) {
                let chain = q.pop_descriptor_chain(&mem).expect("chain");
                let head = chain.head_index();
                let d = chain.clone().next().expect("one descriptor");
                mem.write_slice(&hdr, d.addr()).unwrap();
                mem.write_slice(buf.data(), GuestAddress(d.addr().0 + HDR as u64)).unwrap();
                q.add_used(&mem, head, (HDR + buf.len()) as u32).unwrap();
            }
        })
    });
    g.finish();
}

fn packed(c: &mut Criterion) {
    let pool = pool();
    let counters = QueueCounters::default();
    let mut g = c.benchmark_group("packed_dequeue_64B");
    g.throughput(Throughput::Elements(BURST as u64));
    for in_order in [false, true] {
        let fd = memfd();
        let mut fe = PackedFrontend::new(&fd, false);
        let mut ring = packed_ring(&fd, in_order);
        let mut out: Vec<PacketBuf> = Vec::with_capacity(BURST);
        let name = if in_order { "podwire in_order" } else { "podwire" };
        g.bench_function(name, |b| {
            b.iter(|| {
                fe.post(BURST);
                let n = ring.dequeue(&pool, &mut out, BURST, &counters).unwrap();
                assert_eq!(n, BURST);
                out.clear();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("packed_enqueue_64B");
    g.throughput(Throughput::Elements(BURST as u64));
    let fd = memfd();
    let mut fe = PackedFrontend::new(&fd, true);
    let mut ring = packed_ring(&fd, false);
    let mut bufs = Vec::with_capacity(BURST);
    g.bench_function("podwire", |b| {
        b.iter(|| {
            pool.alloc_bulk(&mut bufs, BURST);
            for buf in bufs.iter_mut() {
                buf.copy_from(&[0xa5; PKT]);
            }
            fe.post(BURST);
            assert_eq!(ring.enqueue(&mut bufs, &counters).unwrap(), BURST);
        })
    });
    g.finish();
}

criterion_group!(benches, dequeue, enqueue, packed);
criterion_main!(benches);
