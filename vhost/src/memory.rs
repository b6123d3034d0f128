//! The frontend's memory, as announced by `SET_MEM_TABLE`: up to eight regions, each
//! an fd mapped into this process. Every address a frontend gives us (descriptor
//! addresses are guest-physical, ring addresses are frontend-virtual) goes through
//! one bounds-checked translation here; nothing else in the crate turns a peer's
//! number into a pointer.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::ProtocolError;
use crate::fault::{self, FaultGuard};

/// Most regions a `SET_MEM_TABLE` may carry (the vhost-user limit).
pub const MAX_REGIONS: usize = 8;

/// One region as the frontend describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionDesc {
    /// Guest-physical address of the first byte.
    pub guest_phys_addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Frontend-virtual address of the first byte.
    pub user_addr: u64,
    /// Offset of the region in the fd.
    pub mmap_offset: u64,
}

#[derive(Debug)]
struct Region {
    gpa: u64,
    uva: u64,
    size: u64,
    /// Host address of the region's first byte.
    host: NonNull<u8>,
    /// The whole mapping (from offset 0 of the fd), for munmap.
    map_base: NonNull<u8>,
    map_len: usize,
    /// Keeps a SIGBUS in this mapping from killing the daemon (see [`fault`]).
    guard: Option<FaultGuard>,
}

impl std::fmt::Debug for FaultGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultGuard")
    }
}

/// The frontend's memory mapped into this process. Unmapped on drop.
#[derive(Debug, Default)]
pub struct GuestMemory {
    regions: Vec<Region>,
    /// Raised when the frontend shrank a region's file under us.
    faulted: Arc<AtomicBool>,
}

// SAFETY: the mappings are plain shared memory owned by this object; concurrent
// access to guest memory is the virtio protocol's business, not Rust's aliasing.
unsafe impl Send for GuestMemory {}
// SAFETY: translation only reads immutable fields.
unsafe impl Sync for GuestMemory {}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        for r in &mut self.regions {
            // Unregister before unmapping, so the SIGBUS handler never remaps an
            // address range that is no longer ours.
            drop(r.guard.take());
            if r.map_len == 0 {
                continue; // borrowed memory (`from_raw_parts`): not ours to unmap
            }
            // SAFETY: map_base/map_len are exactly what mmap returned for this region.
            unsafe { libc::munmap(r.map_base.as_ptr().cast(), r.map_len) };
        }
    }
}

impl GuestMemory {
    /// Maps `descs` from `fds` (one fd per region). Validates every number before use:
    /// overflowing ranges, overlapping regions, and regions that extend past the end
    /// of their file (which would fault on access) are refused.
    pub fn map(descs: &[RegionDesc], fds: Vec<OwnedFd>) -> Result<Self, ProtocolError> {
        if descs.is_empty() || descs.len() > MAX_REGIONS {
            return Err(ProtocolError::BadMemoryTable(format!(
                "{} regions (1 to {MAX_REGIONS} allowed)",
                descs.len()
            )));
        }
        if fds.len() != descs.len() {
            return Err(ProtocolError::BadMemoryTable(format!(
                "{} regions but {} file descriptors",
                descs.len(),
                fds.len()
            )));
        }
        let mut mem = GuestMemory {
            regions: Vec::with_capacity(descs.len()),
            faulted: Arc::new(AtomicBool::new(false)),
        };
        for (d, fd) in descs.iter().zip(fds) {
            let mut r = map_region(d, &fd)?;
            r.guard = fault::register(r.map_base.as_ptr() as usize, r.map_len, mem.faulted.clone());
            mem.regions.push(r);
            // The fd is closed here; the mapping keeps the memory.
        }
        mem.check_overlap()?;
        Ok(mem)
    }

    fn check_overlap(&self) -> Result<(), ProtocolError> {
        for (i, a) in self.regions.iter().enumerate() {
            for b in &self.regions[i + 1..] {
                if a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size {
                    return Err(ProtocolError::BadMemoryTable("overlapping regions".into()));
                }
            }
        }
        Ok(())
    }

    /// Guest memory over host memory the caller owns, for the fuzz targets (fuzz/):
    /// they place each region between inaccessible pages, so that any access the
    /// ring code makes outside the memory map faults. The regions are checked as
    /// `map` checks them (count, zero size, overflow, overlap); nothing is mapped or
    /// unmapped here, and no SIGBUS protection is registered.
    ///
    /// # Safety
    /// For each region, `host..host + size` must be readable and writable memory
    /// that stays valid (and is not otherwise accessed through Rust references) for
    /// as long as the returned value and every ring built on it live.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub unsafe fn from_raw_parts(
        regions: &[(RegionDesc, NonNull<u8>)],
    ) -> Result<Self, ProtocolError> {
        if regions.is_empty() || regions.len() > MAX_REGIONS {
            return Err(ProtocolError::BadMemoryTable(format!("{} regions", regions.len())));
        }
        let mut mem = GuestMemory::default();
        for (d, host) in regions {
            let bad = |why: &str| ProtocolError::BadMemoryTable(format!("region {d:x?}: {why}"));
            if d.size == 0 {
                return Err(bad("zero size"));
            }
            d.guest_phys_addr.checked_add(d.size).ok_or_else(|| bad("guest address overflows"))?;
            d.user_addr.checked_add(d.size).ok_or_else(|| bad("user address overflows"))?;
            mem.regions.push(Region {
                gpa: d.guest_phys_addr,
                uva: d.user_addr,
                size: d.size,
                host: *host,
                map_base: *host,
                map_len: 0,
                guard: None,
            });
        }
        mem.check_overlap()?;
        Ok(mem)
    }

    /// Whether the frontend shrank a region's file under us (the region now reads
    /// as zeros; the frontend must be disconnected).
    pub fn faulted(&self) -> bool {
        self.faulted.load(Ordering::Acquire)
    }

    /// Number of regions.
    pub fn num_regions(&self) -> usize {
        self.regions.len()
    }

    /// Bytes mapped in all.
    pub fn mapped_bytes(&self) -> usize {
        self.regions.iter().map(|r| r.map_len).sum()
    }

    /// Host pointer for guest-physical `gpa..gpa+len`, which must lie in one region.
    #[inline]
    pub fn gpa_range(&self, gpa: u64, len: u64) -> Option<NonNull<u8>> {
        let end = gpa.checked_add(len)?;
        for r in &self.regions {
            if gpa >= r.gpa && end <= r.gpa + r.size {
                // SAFETY: gpa - r.gpa + len <= r.size: inside the mapped region.
                return Some(unsafe { r.host.add((gpa - r.gpa) as usize) });
            }
        }
        None
    }

    /// Host pointer and contiguous length for the start of `gpa..gpa+len`: the longest
    /// prefix that lies in one region (for buffers that straddle regions).
    #[inline]
    pub fn gpa_prefix(&self, gpa: u64, len: u64) -> Option<(NonNull<u8>, u64)> {
        for r in &self.regions {
            if gpa >= r.gpa && gpa - r.gpa < r.size {
                let off = gpa - r.gpa;
                let n = len.min(r.size - off);
                // SAFETY: off < r.size: inside the mapped region.
                return Some((unsafe { r.host.add(off as usize) }, n));
            }
        }
        None
    }

    /// Host pointer for frontend-virtual `uva..uva+len` (ring addresses), in one region.
    pub fn uva_range(&self, uva: u64, len: u64) -> Option<NonNull<u8>> {
        let end = uva.checked_add(len)?;
        for r in &self.regions {
            if uva >= r.uva && end <= r.uva + r.size {
                // SAFETY: inside the mapped region, as above.
                return Some(unsafe { r.host.add((uva - r.uva) as usize) });
            }
        }
        None
    }
}

fn map_region(d: &RegionDesc, fd: &OwnedFd) -> Result<Region, ProtocolError> {
    let bad = |why: &str| ProtocolError::BadMemoryTable(format!("region {d:x?}: {why}"));
    if d.size == 0 {
        return Err(bad("zero size"));
    }
    let end = d.mmap_offset.checked_add(d.size).ok_or_else(|| bad("offset + size overflows"))?;
    d.guest_phys_addr.checked_add(d.size).ok_or_else(|| bad("guest address + size overflows"))?;
    d.user_addr.checked_add(d.size).ok_or_else(|| bad("user address + size overflows"))?;
    // SAFETY: fstat writes into the zeroed struct we pass; fd is a valid open fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(bad(&format!("fstat: {}", std::io::Error::last_os_error())));
    }
    if (st.st_mode & libc::S_IFMT) == libc::S_IFREG && (st.st_size as u64) < end {
        // Touching memory past the end of a file raises SIGBUS: refuse it up front.
        return Err(bad(&format!("extends past the end of its file ({} bytes)", st.st_size)));
    }
    let align = (st.st_blksize as u64).max(4096);
    let map_len = end.div_ceil(align).checked_mul(align).ok_or_else(|| bad("size overflows"))?;
    if map_len > isize::MAX as u64 {
        return Err(bad("too large"));
    }
    // SAFETY: mapping a shared fd at an address of the kernel's choosing; the result
    // is checked below and owned by the Region.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            // No MAP_POPULATE: the frontend's pages already exist, and populating a
            // huge sparse file would let a frontend make podwire allocate memory.
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(bad(&format!("mmap: {}", std::io::Error::last_os_error())));
    }
    let map_base = NonNull::new(p.cast::<u8>()).ok_or_else(|| bad("mmap returned null"))?;
    Ok(Region {
        gpa: d.guest_phys_addr,
        uva: d.user_addr,
        size: d.size,
        // SAFETY: mmap_offset + size <= map_len.
        host: unsafe { map_base.add(d.mmap_offset as usize) },
        map_base,
        map_len: map_len as usize,
        guard: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A memfd of `len` bytes, for tests.
    pub(crate) fn memfd(len: u64) -> OwnedFd {
        // SAFETY: static NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"test-guest".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: valid fd.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) }, 0);
        fd
    }

    fn desc(gpa: u64, size: u64) -> RegionDesc {
        RegionDesc { guest_phys_addr: gpa, size, user_addr: gpa + 0x1000_0000, mmap_offset: 0 }
    }

    #[test]
    fn translation_is_bounds_checked() {
        let m = GuestMemory::map(&[desc(0x10000, 0x4000)], vec![memfd(0x4000)]).unwrap();
        assert!(m.gpa_range(0x10000, 0x4000).is_some());
        assert!(m.gpa_range(0x10000, 0x4001).is_none());
        assert!(m.gpa_range(0xffff, 1).is_none());
        assert!(m.gpa_range(u64::MAX - 1, 4).is_none());
        assert!(m.uva_range(0x1001_0000, 16).is_some());
        assert!(m.uva_range(0x10000, 16).is_none());
        let (_, n) = m.gpa_prefix(0x13000, 0x2000).unwrap();
        assert_eq!(n, 0x1000);
    }

    #[test]
    fn bad_tables_are_refused() {
        // Region larger than its file.
        assert!(GuestMemory::map(&[desc(0, 0x8000)], vec![memfd(0x4000)]).is_err());
        // Fd count mismatch.
        assert!(GuestMemory::map(&[desc(0, 0x1000)], vec![]).is_err());
        // Overflow.
        let mut d = desc(0, 0x1000);
        d.mmap_offset = u64::MAX;
        assert!(GuestMemory::map(&[d], vec![memfd(0x1000)]).is_err());
        // Overlap.
        assert!(GuestMemory::map(
            &[desc(0, 0x2000), desc(0x1000, 0x1000)],
            vec![memfd(0x2000), memfd(0x1000)]
        )
        .is_err());
        // Too many.
        let descs: Vec<_> = (0..9).map(|i| desc(i * 0x1000, 0x1000)).collect();
        let fds = (0..9).map(|_| memfd(0x1000)).collect();
        assert!(GuestMemory::map(&descs, fds).is_err());
    }
}
