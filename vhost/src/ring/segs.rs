//! A short list of host-memory segments that make up one guest buffer (a descriptor
//! chain, after translation), with gather and scatter copies.

use super::copy::{copy_packet, store_if_changed};
use crate::error::RingError;

/// Most segments one packet may span (chains longer than this are refused).
pub const MAX_SEGS: usize = 64;

/// Segments of translated guest memory, in chain order.
pub struct SegList {
    ptr: [*mut u8; MAX_SEGS],
    len: [u32; MAX_SEGS],
    n: usize,
    total: u64,
}

impl Default for SegList {
    fn default() -> Self {
        Self { ptr: [std::ptr::null_mut(); MAX_SEGS], len: [0; MAX_SEGS], n: 0, total: 0 }
    }
}

impl SegList {
    /// Empties the list.
    #[inline]
    pub fn clear(&mut self) {
        self.n = 0;
        self.total = 0;
    }

    /// Number of segments.
    #[inline]
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no segments.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Total bytes of all segments.
    #[inline]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Appends a segment (callers translated and bounds-checked it).
    #[inline]
    pub fn push(&mut self, p: *mut u8, len: u32) -> Result<(), RingError> {
        if len == 0 {
            return Ok(());
        }
        if self.n == MAX_SEGS {
            return Err(RingError::ChainTooLong);
        }
        self.ptr[self.n] = p;
        self.len[self.n] = len;
        self.n += 1;
        self.total += len as u64;
        Ok(())
    }

    /// Copies the bytes after the first `skip` into `dst`; returns how many bytes that
    /// is, or `None` when they do not fit `dst`.
    #[inline]
    pub fn gather(&self, mut skip: usize, dst: &mut [u8]) -> Option<usize> {
        let total = self.total as usize;
        if total < skip || total - skip > dst.len() {
            return None;
        }
        let mut at = 0;
        for i in 0..self.n {
            let l = self.len[i] as usize;
            if skip >= l {
                skip -= l;
                continue;
            }
            let n = l - skip;
            // SAFETY: segment i is `l` readable bytes of mapped guest memory (checked
            // when pushed); at + n <= total - skip <= dst.len().
            unsafe { copy_packet(dst.as_mut_ptr().add(at), self.ptr[i].add(skip), n) };
            at += n;
            skip = 0;
        }
        Some(at)
    }

    /// Writes `parts` one after another from the start of the segments; returns how
    /// many bytes were written (stops when the segments are full).
    #[inline]
    pub fn scatter(&self, parts: &[&[u8]]) -> usize {
        self.scatter_from(0, 0, parts)
    }

    /// Like `scatter(&[hdr, data])` for a packet's virtio-net header (at most 16
    /// bytes) and data, but the header bytes are stored only where the buffer does
    /// not hold them already (see [`store_if_changed`]), when the first segment holds
    /// the whole header.
    #[inline]
    pub fn scatter_hdr(&self, hdr: &[u8], data: &[u8]) -> usize {
        if self.n == 0 || (self.len[0] as usize) < hdr.len() || hdr.len() > 16 {
            return self.scatter(&[hdr, data]);
        }
        // SAFETY: segment 0 has len[0] >= hdr.len() writable bytes (checked when
        // pushed), and guest memory does not overlap the header on our stack.
        unsafe { store_if_changed(self.ptr[0], hdr) };
        let (seg, off) = if self.len[0] as usize == hdr.len() { (1, 0) } else { (0, hdr.len()) };
        hdr.len() + self.scatter_from(seg, off, &[data])
    }

    /// Writes `parts` from byte `seg_off` of segment `seg` on.
    #[inline(always)]
    fn scatter_from(&self, mut seg: usize, mut seg_off: usize, parts: &[&[u8]]) -> usize {
        let mut written = 0usize;
        for part in parts {
            let mut src = *part;
            while !src.is_empty() && seg < self.n {
                let room = self.len[seg] as usize - seg_off;
                let n = room.min(src.len());
                // SAFETY: segment `seg` has `len` writable bytes (checked when pushed);
                // seg_off + n <= len.
                unsafe { copy_packet(self.ptr[seg].add(seg_off), src.as_ptr(), n) };
                src = &src[n..];
                seg_off += n;
                written += n;
                if seg_off == self.len[seg] as usize {
                    seg += 1;
                    seg_off = 0;
                }
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_skips_header_across_segments() {
        let mut a = *b"0123456789AB";
        let mut b = *b"hello";
        let mut s = SegList::default();
        s.push(a.as_mut_ptr(), 4).unwrap();
        s.push(a[4..].as_mut_ptr(), 8).unwrap();
        s.push(b.as_mut_ptr(), 5).unwrap();
        let mut out = [0u8; 16];
        assert_eq!(s.gather(10, &mut out), Some(7));
        assert_eq!(&out[..7], b"ABhello");
        assert_eq!(s.gather(0, &mut [0u8; 10]), None);
        assert_eq!(s.gather(18, &mut out), None);
    }

    #[test]
    fn scatter_fills_in_order_and_stops_when_full() {
        let mut a = [0u8; 3];
        let mut b = [0u8; 4];
        let mut s = SegList::default();
        s.push(a.as_mut_ptr(), 3).unwrap();
        s.push(b.as_mut_ptr(), 4).unwrap();
        assert_eq!(s.scatter(&[b"HH", b"abcdefgh"]), 7);
        assert_eq!(&a, b"HHa");
        assert_eq!(&b, b"bcde");
    }

    #[test]
    fn scatter_hdr_writes_like_scatter_and_keeps_equal_header_bytes() {
        let data = b"abcdefghij";
        for first in [12usize, 14, 20] {
            let mut a = vec![0u8; first];
            let mut b = [0u8; 16];
            let mut s = SegList::default();
            s.push(a.as_mut_ptr(), first as u32).unwrap();
            s.push(b.as_mut_ptr(), 16).unwrap();
            let hdr = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
            assert_eq!(s.scatter_hdr(&hdr, data), 22, "first = {first}");
            let mut all = a.clone();
            all.extend_from_slice(&b);
            assert_eq!(&all[..12], &hdr);
            assert_eq!(&all[12..22], data);
        }
        // A first segment shorter than the header falls back to the plain copy.
        let mut a = [0u8; 4];
        let mut b = [0u8; 32];
        let mut s = SegList::default();
        s.push(a.as_mut_ptr(), 4).unwrap();
        s.push(b.as_mut_ptr(), 32).unwrap();
        assert_eq!(s.scatter_hdr(b"HHHHHHHHHHHH", b"xy"), 14);
        assert_eq!(&a, b"HHHH");
        assert_eq!(&b[..10], b"HHHHHHHHxy");
    }

    #[test]
    fn too_many_segments_is_an_error() {
        let mut x = [0u8; 1];
        let mut s = SegList::default();
        for _ in 0..MAX_SEGS {
            s.push(x.as_mut_ptr(), 1).unwrap();
        }
        assert_eq!(s.push(x.as_mut_ptr(), 1), Err(RingError::ChainTooLong));
    }
}
