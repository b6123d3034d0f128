//! Shared pieces of podwire's fuzz targets (see README.md): a synthetic guest memory
//! fenced by inaccessible pages, a decoder for the ring targets' inputs, a small
//! byte reader, and leak checks.

use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use podwire_driver::{Mempool, MempoolConfig};
use podwire_vhost::memory::{GuestMemory, RegionDesc};

pub mod ring;

/// Host address ranges `[start, end)`.
pub type Spans = Vec<(usize, usize)>;

/// Reads numbers off the front of a fuzz input; past its end everything reads as 0.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.data.split_first() else { return 0 };
        self.data = rest;
        b
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        self.u32() as u64 | (self.u32() as u64) << 32
    }

    /// Up to `n` next bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Appends little-endian numbers (for building seeds).
pub trait Put {
    /// Appends `v`.
    fn put8(&mut self, v: u8);
    /// Appends `v`.
    fn put16(&mut self, v: u16);
    /// Appends `v`.
    fn put32(&mut self, v: u32);
    /// Appends `v`.
    fn put64(&mut self, v: u64);
}

impl Put for Vec<u8> {
    fn put8(&mut self, v: u8) {
        self.push(v);
    }
    fn put16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}

const PAGE: usize = 4096;
/// Most bytes one region of the synthetic guest memory may have.
pub const MAX_REGION: usize = 256 * 1024;
/// Regions the synthetic guest memory can have.
pub const SLOTS: usize = 4;
/// Each slot: the largest region, rounded to pages, plus one inaccessible page after it.
const SLOT_BYTES: usize = MAX_REGION + 2 * PAGE;
/// The byte written around every region, checked after each operation.
pub const CANARY: u8 = 0xa5;

/// A guest memory map over this process's memory in which every region sits
/// between inaccessible pages: an access outside the regions faults (the fuzzer
/// reports the SIGSEGV as a crash) or, within the region's first or last page,
/// lands on a canary byte that [`FencedMemory::canaries_intact`] checks.
pub struct FencedMemory {
    base: NonNull<u8>,
    /// (gpa, uva, size, host) of each region.
    pub regions: Vec<(u64, u64, u64, *mut u8)>,
    /// Accessible byte ranges (page-rounded) of each region, for restoring.
    open: Vec<(usize, usize)>,
}

// SAFETY: the reservation is owned by this value; it is used by one thread at a time.
unsafe impl Send for FencedMemory {}

impl FencedMemory {
    fn reservation() -> NonNull<u8> {
        static BASE: OnceLock<usize> = OnceLock::new();
        let p = *BASE.get_or_init(|| {
            // SAFETY: an anonymous PROT_NONE reservation at an address of the kernel's
            // choosing; never unmapped (one per process, reused by every run).
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    SLOTS * SLOT_BYTES + PAGE,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED, "reserving the fenced guest memory");
            p as usize
        });
        NonNull::new(p as *mut u8).expect("mmap does not return null")
    }

    /// Lays out `regions` (gpa, uva, size): region `i` in slot `i`, ending at a page
    /// boundary when `end_aligned` (over-runs fault) or starting at one (under-runs
    /// fault), the rest of its pages filled with [`CANARY`]. Then copies `image` into
    /// the regions one after another (zeros after its end). `None` when a size is 0
    /// or larger than [`MAX_REGION`], or there are more than [`SLOTS`] regions.
    pub fn new(regions: &[(u64, u64, u64)], end_aligned: bool, image: &[u8]) -> Option<Self> {
        if regions.is_empty() || regions.len() > SLOTS {
            return None;
        }
        let base = Self::reservation();
        let mut m = FencedMemory { base, regions: Vec::new(), open: Vec::new() };
        let mut image = image;
        for (i, &(gpa, uva, size)) in regions.iter().enumerate() {
            if size == 0 || size as usize > MAX_REGION {
                return None;
            }
            let size = size as usize;
            let pages = size.div_ceil(PAGE) * PAGE;
            let start = PAGE + i * SLOT_BYTES; // the page before stays inaccessible
                                               // SAFETY: start..start+pages lies inside the reservation (pages <= MAX_REGION).
            let slot = unsafe { base.as_ptr().add(start) };
            // SAFETY: mprotect of whole pages of our own reservation.
            let rc =
                unsafe { libc::mprotect(slot.cast(), pages, libc::PROT_READ | libc::PROT_WRITE) };
            assert_eq!(rc, 0, "mprotect");
            m.open.push((start, pages));
            let off = if end_aligned { pages - size } else { 0 };
            // SAFETY: slot..slot+pages is now accessible and ours.
            let all = unsafe { std::slice::from_raw_parts_mut(slot, pages) };
            all.fill(CANARY);
            let n = size.min(image.len());
            all[off..off + n].copy_from_slice(&image[..n]);
            all[off + n..off + size].fill(0);
            image = &image[n..];
            m.regions.push((gpa, uva, size as u64, all[off..].as_mut_ptr()));
        }
        Some(m)
    }

    /// The ring code's view: a [`GuestMemory`] over these regions (`Err` when the
    /// table is one `GuestMemory` refuses, e.g. overlapping).
    pub fn guest_memory(&self) -> Result<Arc<GuestMemory>, String> {
        let table: Vec<(RegionDesc, NonNull<u8>)> = self
            .regions
            .iter()
            .map(|&(gpa, uva, size, host)| {
                (
                    RegionDesc { guest_phys_addr: gpa, size, user_addr: uva, mmap_offset: 0 },
                    NonNull::new(host).expect("region host pointer"),
                )
            })
            .collect();
        // SAFETY: every region lies in accessible pages of the reservation, which stays
        // mapped for the life of the process and accessible until `self` is dropped;
        // the caller drops every ring and GuestMemory before dropping `self`.
        unsafe { GuestMemory::from_raw_parts(&table) }.map(Arc::new).map_err(|e| e.to_string())
    }

    /// Whether every byte around the regions still holds [`CANARY`]: the ring code
    /// wrote nothing outside the memory map.
    pub fn canaries_intact(&self) -> bool {
        for (&(start, pages), &(_, _, size, host)) in self.open.iter().zip(&self.regions) {
            // SAFETY: start..start+pages is accessible (opened in `new`).
            let all = unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), pages) };
            let off = host as usize - all.as_ptr() as usize;
            let end = off + size as usize;
            if all[..off].iter().any(|&b| b != CANARY) || all[end..].iter().any(|&b| b != CANARY) {
                return false;
            }
        }
        true
    }

    /// Host pointer of guest-physical `gpa`, when `gpa..gpa+len` lies in one region.
    pub fn gpa(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let end = gpa.checked_add(len)?;
        self.regions.iter().find_map(|&(g, _, size, host)| {
            (gpa >= g && end <= g + size).then(|| host.wrapping_add((gpa - g) as usize))
        })
    }

    /// Host pointer of frontend-virtual `uva`, when `uva..uva+len` lies in one region.
    pub fn uva(&self, uva: u64, len: u64) -> Option<*mut u8> {
        let end = uva.checked_add(len)?;
        self.regions.iter().find_map(|&(_, u, size, host)| {
            (uva >= u && end <= u + size).then(|| host.wrapping_add((uva - u) as usize))
        })
    }

    /// Appends the guest bytes `gpa..gpa+len` to `out`, across regions. Also returns
    /// their host ranges. `None` when some byte is outside every region.
    pub fn read_gpa(&self, gpa: u64, len: u64, out: &mut Vec<u8>) -> Option<Spans> {
        self.gpa_spans(gpa, len, Some(out))
    }

    /// The host ranges of guest bytes `gpa..gpa+len` (appended to `out` when given).
    pub fn gpa_spans(&self, gpa: u64, len: u64, mut out: Option<&mut Vec<u8>>) -> Option<Spans> {
        let (mut a, mut left) = (gpa, len);
        let mut spans = Vec::new();
        while left > 0 {
            let &(g, _, size, host) =
                self.regions.iter().find(|&&(g, _, size, _)| a >= g && a - g < size)?;
            let n = left.min(size - (a - g));
            let p = host.wrapping_add((a - g) as usize);
            if let Some(out) = out.as_mut() {
                // SAFETY: p..p+n lies inside region (g, size), accessible memory.
                out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, n as usize) });
            }
            spans.push((p as usize, p as usize + n as usize));
            a += n;
            left -= n;
        }
        Some(spans)
    }
}

impl Drop for FencedMemory {
    fn drop(&mut self) {
        for &(start, pages) in &self.open {
            // SAFETY: makes our own pages inaccessible again (and drops their contents).
            unsafe {
                let p = self.base.as_ptr().add(start);
                libc::madvise(p.cast(), pages, libc::MADV_DONTNEED);
                libc::mprotect(p.cast(), pages, libc::PROT_NONE);
            }
        }
    }
}

/// The packet pool every target shares (small pages, made once per process).
pub fn pool() -> &'static Mempool {
    static POOL: OnceLock<Mempool> = OnceLock::new();
    POOL.get_or_init(|| {
        Mempool::small_pages(MempoolConfig { count: 512, ..Default::default() })
            .expect("a 512-buffer mempool in ordinary pages")
    })
}

/// Buffers of [`pool`] held somewhere (not in the pool's ring or this thread's
/// cache): must be 0 between runs, or a run leaked packets.
pub fn buffers_in_use() -> usize {
    let p = pool();
    p.outside_ring() - p.in_thread_cache()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}
