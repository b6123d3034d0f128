//! DMA memory: one shareable, locked, pre-faulted mapping with a known IO virtual
//! address (IOVA) for every byte.
//!
//! The memory is a `memfd` (so it can later be handed to another process or to the
//! kernel by file descriptor), backed by 2 MiB hugepages unless the caller opts in
//! to ordinary pages with [`DmaMemory::with_small_pages`].
//!
//! Translation from a virtual address inside the region to its IOVA is O(1):
//! - [`IovaMode::Identity`]: IOVA == virtual address (what VFIO type1 uses once the
//!   region is DMA-mapped with iova = vaddr, and what AF_XDP and vhost-user need).
//! - [`IovaMode::Physical`]: the physical address of each hugepage, read once from
//!   `/proc/self/pagemap` (for no-IOMMU use). Only hugepage memory can be used this
//!   way, because a buffer must not straddle two physically unrelated pages.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use std::ptr::NonNull;

use crate::error::{DriverError, Result};

/// Size of one hugepage used for DMA memory.
pub const HUGEPAGE_SIZE: usize = 2 << 20;
/// Size of an ordinary page on the platforms podwire supports.
pub const SMALL_PAGE_SIZE: usize = 4096;

/// How a virtual address in the region becomes the address a device uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IovaMode {
    /// IOVA equals the process virtual address.
    Identity,
    /// IOVA is the physical address (no IOMMU). Requires hugepages.
    Physical,
}

/// A contiguous virtual region of DMA-able memory.
pub struct DmaMemory {
    map: memmap2::MmapMut,
    file: File,
    page_size: usize,
    page_shift: u32,
    mode: IovaMode,
    /// Physical base of each page (Physical mode only).
    page_iova: Vec<u64>,
}

impl std::fmt::Debug for DmaMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaMemory")
            .field("base", &self.map.as_ptr())
            .field("len", &self.map.len())
            .field("page_size", &self.page_size)
            .field("mode", &self.mode)
            .finish()
    }
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl DmaMemory {
    /// Allocates `size` bytes (rounded up to whole 2 MiB pages) of hugepage memory.
    ///
    /// Fails with [`DriverError::NoHugepages`] when the kernel has too few free
    /// hugepages; the message says how to reserve more.
    pub fn hugepages(size: usize, mode: IovaMode) -> Result<Self> {
        Self::create(size, HUGEPAGE_SIZE, mode)
    }

    /// Allocates `size` bytes of ordinary locked pages: an explicit opt-in for ports
    /// that do not need hugepages (AF_XDP, tests). Identity translation only.
    pub fn with_small_pages(size: usize) -> Result<Self> {
        Self::create(size, SMALL_PAGE_SIZE, IovaMode::Identity)
    }

    fn create(size: usize, page_size: usize, mode: IovaMode) -> Result<Self> {
        if size == 0 {
            return Err(DriverError::InvalidArgument("DMA memory size must not be zero".into()));
        }
        if mode == IovaMode::Physical && page_size != HUGEPAGE_SIZE {
            return Err(DriverError::InvalidArgument(
                "physical IOVA mode needs hugepage memory".into(),
            ));
        }
        let len = round_up(size, page_size);
        let huge = page_size == HUGEPAGE_SIZE;
        let name = CString::new(if huge { "podwire-dma-huge" } else { "podwire-dma" })
            .expect("static name has no NUL");
        let mut flags = libc::MFD_CLOEXEC;
        if huge {
            flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
        }
        // SAFETY: name is a valid NUL-terminated string; memfd_create has no other
        // memory-safety preconditions.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd < 0 {
            return Err(DriverError::io("memfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64).map_err(|e| DriverError::io("ftruncate of DMA memfd", e))?;
        // SAFETY: the memfd is private to this process until we hand it out; nobody
        // truncates it while mapped (we own the only handle).
        let mut map =
            unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }.map_err(|e| {
                if huge && e.raw_os_error() == Some(libc::ENOMEM) {
                    DriverError::NoHugepages { bytes: len, pages: len / HUGEPAGE_SIZE }
                } else {
                    DriverError::io("mmap of DMA memory", e)
                }
            })?;
        // Touch every page so that no fault happens on the datapath, then lock.
        for off in (0..len).step_by(page_size) {
            map[off] = 0;
        }
        // SAFETY: the range is exactly the mapping we own.
        if unsafe { libc::mlock(map.as_ptr().cast(), len) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(DriverError::io(
                "mlock of DMA memory (raise RLIMIT_MEMLOCK or run as root)",
                e,
            ));
        }
        let page_iova = if mode == IovaMode::Physical {
            physical_pages(map.as_ptr() as usize, len, page_size)?
        } else {
            Vec::new()
        };
        Ok(Self { map, file, page_size, page_shift: page_size.trailing_zeros(), mode, page_iova })
    }

    /// First byte of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr() as *mut u8
    }

    /// First byte of the region, never null.
    pub fn base(&self) -> NonNull<u8> {
        NonNull::new(self.as_ptr()).expect("mmap never returns null")
    }

    /// Length of the region in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the region is empty (never true for a created region).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The page size backing the region (2 MiB or 4 KiB).
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Whether the region is backed by hugepages.
    pub fn is_hugepage(&self) -> bool {
        self.page_size == HUGEPAGE_SIZE
    }

    /// The translation mode.
    pub fn iova_mode(&self) -> IovaMode {
        self.mode
    }

    /// The memfd behind the region, for sharing with a device or another process.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether `addr..addr+len` lies inside the region.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        let base = self.as_ptr() as usize;
        addr >= base && len <= self.len() && addr - base <= self.len() - len
    }

    /// The IOVA of a virtual address inside the region, or `None` outside it.
    #[inline]
    pub fn virt_to_iova(&self, addr: usize) -> Option<u64> {
        let off = addr.checked_sub(self.as_ptr() as usize)?;
        if off >= self.len() {
            return None;
        }
        Some(self.iova_at(off))
    }

    /// The IOVA of byte `off` of the region. `off` must be below `len()`.
    #[inline]
    pub fn iova_at(&self, off: usize) -> u64 {
        debug_assert!(off < self.len());
        match self.mode {
            IovaMode::Identity => (self.as_ptr() as usize + off) as u64,
            IovaMode::Physical => {
                self.page_iova[off >> self.page_shift] + (off & (self.page_size - 1)) as u64
            }
        }
    }
}

/// Reads the physical address of every page of a mapping from /proc/self/pagemap.
fn physical_pages(base: usize, len: usize, page_size: usize) -> Result<Vec<u64>> {
    let mut f = File::open("/proc/self/pagemap")
        .map_err(|e| DriverError::io("open /proc/self/pagemap", e))?;
    let mut out = Vec::with_capacity(len / page_size);
    for va in (base..base + len).step_by(page_size) {
        let entry_off = (va / SMALL_PAGE_SIZE) as u64 * 8;
        let mut entry = [0u8; 8];
        f.seek(SeekFrom::Start(entry_off))
            .and_then(|_| f.read_exact(&mut entry))
            .map_err(|e| DriverError::io("read /proc/self/pagemap", e))?;
        let e = u64::from_le_bytes(entry);
        let pfn = e & ((1u64 << 55) - 1);
        if e & (1 << 63) == 0 || pfn == 0 {
            return Err(DriverError::Unsupported(
                "physical addresses are hidden in /proc/self/pagemap (needs CAP_SYS_ADMIN)".into(),
            ));
        }
        out.push(pfn * SMALL_PAGE_SIZE as u64);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_pages_identity_translation() {
        let m = DmaMemory::with_small_pages(10_000).unwrap();
        assert_eq!(m.len(), 12288);
        let base = m.as_ptr() as usize;
        assert_eq!(m.virt_to_iova(base + 100), Some(base as u64 + 100));
        assert_eq!(m.virt_to_iova(base + m.len()), None);
        assert_eq!(m.virt_to_iova(base - 1), None);
        assert!(m.contains(base, m.len()));
        assert!(!m.contains(base + 1, m.len()));
        assert!(!m.contains(base + m.len(), 1));
    }

    #[test]
    fn zero_size_is_rejected() {
        assert!(matches!(DmaMemory::with_small_pages(0), Err(DriverError::InvalidArgument(_))));
    }

    #[test]
    fn physical_mode_needs_hugepages() {
        assert!(DmaMemory::create(4096, SMALL_PAGE_SIZE, IovaMode::Physical).is_err());
    }
}
