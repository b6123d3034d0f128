//! One memory-mapped BAR and the one volatile read/write pair every register access
//! goes through.

use std::ptr::NonNull;

/// A memory-mapped PCI BAR, unmapped on drop.
#[derive(Debug)]
pub struct Bar {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is device memory owned by this value; register accesses are
// volatile and the device orders them.
unsafe impl Send for Bar {}

impl Bar {
    /// Wraps a mapping.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be a live `mmap` mapping that nothing else unmaps; the Bar
    /// unmaps it on drop.
    pub unsafe fn from_mapping(ptr: NonNull<u8>, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the BAR is empty (never, for a mapped one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn in_range(&self, off: usize, size: usize) -> bool {
        off.is_multiple_of(size) && off.checked_add(size).is_some_and(|end| end <= self.len)
    }

    /// Reads the 32-bit register at byte offset `off`. An offset outside the BAR (a
    /// driver bug) reads as all ones, like a device that fell off the bus.
    #[inline(always)]
    pub fn read32(&self, off: usize) -> u32 {
        if !self.in_range(off, 4) {
            return u32::MAX;
        }
        // SAFETY: off..off+4 is inside the mapping and 4-byte aligned.
        unsafe { self.ptr.as_ptr().add(off).cast::<u32>().read_volatile() }
    }

    /// Writes the 32-bit register at byte offset `off`; ignored outside the BAR.
    #[inline(always)]
    pub fn write32(&self, off: usize, value: u32) {
        if !self.in_range(off, 4) {
            return;
        }
        // SAFETY: off..off+4 is inside the mapping and 4-byte aligned.
        unsafe { self.ptr.as_ptr().add(off).cast::<u32>().write_volatile(value) }
    }

    /// Reads the 16-bit register at `off` (virtio common config has some).
    #[inline(always)]
    pub fn read16(&self, off: usize) -> u16 {
        if !self.in_range(off, 2) {
            return u16::MAX;
        }
        // SAFETY: off..off+2 is inside the mapping and 2-byte aligned.
        unsafe { self.ptr.as_ptr().add(off).cast::<u16>().read_volatile() }
    }

    /// Writes the 16-bit register at `off`; ignored outside the BAR.
    #[inline(always)]
    pub fn write16(&self, off: usize, value: u16) {
        if !self.in_range(off, 2) {
            return;
        }
        // SAFETY: off..off+2 is inside the mapping and 2-byte aligned.
        unsafe { self.ptr.as_ptr().add(off).cast::<u16>().write_volatile(value) }
    }

    /// Reads the 8-bit register at `off`.
    #[inline(always)]
    pub fn read8(&self, off: usize) -> u8 {
        if !self.in_range(off, 1) {
            return u8::MAX;
        }
        // SAFETY: off is inside the mapping.
        unsafe { self.ptr.as_ptr().add(off).read_volatile() }
    }

    /// Writes the 8-bit register at `off`; ignored outside the BAR.
    #[inline(always)]
    pub fn write8(&self, off: usize, value: u8) {
        if !self.in_range(off, 1) {
            return;
        }
        // SAFETY: off is inside the mapping.
        unsafe { self.ptr.as_ptr().add(off).write_volatile(value) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: ptr..ptr+len is the mapping this Bar owns.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
