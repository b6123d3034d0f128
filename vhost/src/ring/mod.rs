//! The virtqueue fast path, written by hand for the poll-mode worker: split and packed
//! rings, dequeue (guest tx -> mempool buffers) and enqueue (mempool buffers -> guest
//! rx, with mergeable rx buffers).
//!
//! Everything read from guest memory is untrusted: descriptor indexes are checked
//! against the table size, chains are bounded, and every address goes through
//! [`GuestMemory`]. A violation returns a [`RingError`]; the port then stops using
//! the device and disconnects the frontend.

pub mod copy;
pub mod packed;
pub mod segs;
pub mod split;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::error::{ProtocolError, RingError};
use crate::memory::GuestMemory;

pub use segs::SegList;

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// Largest queue size virtio allows.
pub const MAX_QUEUE_SIZE: u32 = 32768;
/// Bytes in one descriptor (split and packed alike).
pub const DESC_LEN: usize = 16;

/// A descriptor as read (once) from guest memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    /// Guest address of the buffer.
    pub addr: u64,
    /// Length of the buffer.
    pub len: u32,
    /// Split: next index. Packed: buffer id.
    pub next_or_id: u16,
    /// Flags.
    pub flags: u16,
}

impl Desc {
    /// Reads a split-ring descriptor at `p` (any alignment), once.
    ///
    /// # Safety
    /// `p..p+16` must be readable.
    #[inline(always)]
    pub unsafe fn read_split(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes.
        let (lo, hi) = unsafe { read_desc_words(p) };
        Desc { addr: lo, len: hi as u32, flags: (hi >> 32) as u16, next_or_id: (hi >> 48) as u16 }
    }

    /// Reads the body of a packed-ring descriptor (flags read separately, first).
    ///
    /// # Safety
    /// `p..p+16` must be readable.
    #[inline(always)]
    pub unsafe fn read_packed(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes.
        let (lo, hi) = unsafe { read_desc_words(p) };
        Desc { addr: lo, len: hi as u32, next_or_id: (hi >> 32) as u16, flags: (hi >> 48) as u16 }
    }
}

/// The 16 bytes of a descriptor at `p` as two little-endian words, each byte read
/// from guest memory exactly once (volatile). Descriptor rings are 16-aligned, so
/// this is two 8-byte loads; an indirect table the guest put at an odd address is
/// read byte by byte (a volatile `[u8; 16]` read compiles to 16 one-byte loads and
/// the shifts to reassemble them: ~30 instructions per descriptor on the hot path).
///
/// # Safety
/// `p..p+16` must be readable.
#[inline(always)]
unsafe fn read_desc_words(p: *const u8) -> (u64, u64) {
    if (p as usize).is_multiple_of(8) {
        // SAFETY: 8-aligned and 16 readable bytes (caller): two aligned u64 reads.
        unsafe {
            (
                u64::from_le(std::ptr::read_volatile(p.cast::<u64>())),
                u64::from_le(std::ptr::read_volatile(p.add(8).cast::<u64>())),
            )
        }
    } else {
        // SAFETY: 16 readable bytes; [u8; 16] has alignment 1.
        let b: [u8; 16] = unsafe { std::ptr::read_volatile(p.cast::<[u8; 16]>()) };
        (
            u64::from_le_bytes(b[0..8].try_into().expect("8")),
            u64::from_le_bytes(b[8..16].try_into().expect("8")),
        )
    }
}

/// What a ring needs from its device, fixed for the ring's life.
#[derive(Debug, Clone)]
pub struct RingParams {
    /// The frontend's memory (kept mapped while the ring lives).
    pub mem: Arc<GuestMemory>,
    /// Queue size.
    pub size: u16,
    /// Virtio-net header length (10 or 12).
    pub hdr_len: usize,
    /// Mergeable rx buffers negotiated.
    pub mrg_rxbuf: bool,
    /// Event index negotiated.
    pub event_idx: bool,
    /// VIRTIO_F_IN_ORDER negotiated: buffers are used in the order they were made
    /// available (podwire always does so), and the frontend accepts one used entry
    /// for a whole batch of guest-tx buffers (the id of the batch's last one).
    pub in_order: bool,
    /// The call eventfd (interrupt to the frontend), when it gave one.
    pub call: Option<Arc<OwnedFd>>,
}

impl RingParams {
    /// Signals the frontend through its call eventfd.
    #[inline]
    pub fn signal(&self) {
        if let Some(fd) = &self.call {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a live u64 to an eventfd we own. A failure
            // (EAGAIN when the counter is saturated) loses nothing: the frontend is
            // already due to wake up.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

/// Host pointer of a ring area the frontend placed at frontend-virtual `a`: `len`
/// bytes in one region, aligned to `align` both as the frontend numbers it and in
/// this process. The two differ when a region's `user_addr` or `mmap_offset` is not
/// aligned itself, and the ring code reads and writes these areas with atomic and
/// multi-byte accesses, which must be aligned (found by fuzz/ split_ring and
/// packed_ring: a misaligned pointer dereference).
pub(crate) fn ring_area(
    mem: &GuestMemory,
    a: u64,
    len: u64,
    align: u64,
    what: &str,
) -> Result<*mut u8, ProtocolError> {
    if !a.is_multiple_of(align) {
        return Err(ProtocolError::BadVring(format!("{what} at {a:#x} misaligned")));
    }
    let h = mem
        .uva_range(a, len)
        .ok_or_else(|| ProtocolError::BadVring(format!("{what} at {a:#x} outside memory")))?
        .as_ptr();
    if !(h as u64).is_multiple_of(align) {
        return Err(ProtocolError::BadVring(format!(
            "{what} at {a:#x} misaligned in the frontend's memory map (region user address \
             or mmap offset not aligned)"
        )));
    }
    Ok(h)
}

/// Translates a descriptor's buffer into segments of host memory, appending them to
/// `segs`. Fails when the buffer lies outside guest memory.
#[inline]
pub(crate) fn push_buffer(
    mem: &GuestMemory,
    segs: &mut SegList,
    addr: u64,
    len: u32,
) -> Result<(), RingError> {
    if let Some(p) = mem.gpa_range(addr, len as u64) {
        return segs.push(p.as_ptr(), len);
    }
    // Straddles regions (or is bad): walk it region by region.
    let (mut a, mut left) = (addr, len as u64);
    while left > 0 {
        let (p, n) = mem.gpa_prefix(a, left).ok_or(RingError::BadAddress)?;
        segs.push(p.as_ptr(), n as u32)?;
        a = a.checked_add(n).ok_or(RingError::BadAddress)?;
        left -= n;
    }
    Ok(())
}

/// Writes the virtio-net header for a received packet: no offloads, and
/// `num_buffers` when mergeable rx buffers are on.
#[inline]
pub(crate) fn net_hdr(hdr_len: usize, num_buffers: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    if hdr_len == 12 {
        h[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    }
    h
}

/// Whether an event-index notification is due (the virtio spec's vring_need_event).
#[inline]
pub(crate) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Bytes `off..off+len` of the concatenation `a ++ b`, as two slices (a packet's
/// header and data, split over several rx buffers).
#[inline]
pub(crate) fn split_range<'a>(a: &'a [u8], b: &'a [u8], off: usize, len: usize) -> [&'a [u8]; 2] {
    let end = off + len;
    [
        &a[off.min(a.len())..end.min(a.len())],
        &b[off.saturating_sub(a.len())..end.saturating_sub(a.len())],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_range_spans_header_and_data() {
        let (h, d) = (&b"HHHH"[..], &b"dddddddd"[..]);
        assert_eq!(split_range(h, d, 0, 6), [&b"HHHH"[..], &b"dd"[..]]);
        assert_eq!(split_range(h, d, 2, 2), [&b"HH"[..], &b""[..]]);
        assert_eq!(split_range(h, d, 6, 6), [&b""[..], &b"dddddd"[..]]);
    }

    #[test]
    fn ring_areas_must_be_aligned_in_host_memory_too() {
        use crate::memory::RegionDesc;
        use std::ptr::NonNull;
        let mut backing = vec![0u64; 64];
        let base = backing.as_mut_ptr().cast::<u8>();
        let region = |off: usize| {
            let d = RegionDesc { guest_phys_addr: 0, size: 256, user_addr: 0x1000, mmap_offset: 0 };
            // SAFETY: off + 256 <= 512 bytes of `backing`, which outlives `mem`.
            let host = NonNull::new(unsafe { base.add(off) }).unwrap();
            // SAFETY: as above; nothing else touches `backing` meanwhile.
            unsafe { GuestMemory::from_raw_parts(&[(d, host)]) }.unwrap()
        };
        assert!(ring_area(&region(0), 0x1010, 16, 16, "t").is_ok());
        // Aligned as the frontend numbers it, but not in this process.
        let e = ring_area(&region(2), 0x1010, 16, 16, "t").unwrap_err();
        assert!(e.to_string().contains("misaligned in the frontend's memory map"), "{e}");
        assert!(ring_area(&region(0), 0x1012, 16, 16, "t").is_err());
        assert!(ring_area(&region(0), 0x10f8, 16, 8, "t").is_err(), "past the region");
    }

    #[test]
    fn descriptors_read_the_same_at_any_alignment() {
        #[repr(align(16))]
        struct Aligned([u8; 40]);
        let mut buf = Aligned([0; 40]);
        let raw = &mut buf.0;
        // Offsets 0 and 8: the two-word path; 3: the byte path.
        for off in [0usize, 8, 3] {
            let d = &mut raw[off..off + 16];
            d[..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
            d[8..12].copy_from_slice(&0x99aa_bbccu32.to_le_bytes());
            d[12..14].copy_from_slice(&0x0102u16.to_le_bytes());
            d[14..16].copy_from_slice(&0x0304u16.to_le_bytes());
            // SAFETY: 16 readable bytes at raw[off..].
            let (s, p) = unsafe {
                (Desc::read_split(raw.as_ptr().add(off)), Desc::read_packed(raw.as_ptr().add(off)))
            };
            let want = |flags, next_or_id| Desc {
                addr: 0x1122_3344_5566_7788,
                len: 0x99aa_bbcc,
                next_or_id,
                flags,
            };
            assert_eq!(s, want(0x0102, 0x0304), "split at offset {off}");
            assert_eq!(p, want(0x0304, 0x0102), "packed at offset {off}");
        }
    }

    #[test]
    fn event_index_rule() {
        assert!(need_event(5, 6, 5));
        assert!(!need_event(7, 6, 5));
        assert!(need_event(0xffff, 1, 0xfffe));
    }
}
