//! Packet copies tuned for the sizes a switch moves: small packets are copied inline
//! with 16/32-byte moves (no call into libc's memcpy, whose dispatch costs as much
//! as the copy itself for 64 bytes); large ones use memcpy.

use podwire_driver::PacketBuf;

/// Copies `n` bytes from `src` to `dst`.
///
/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable, the two not overlapping.
#[inline(always)]
pub unsafe fn copy_packet(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY (all branches): every access stays inside [0, n) of both ranges; the
    // overlapping tail copies write bytes already written with the same values.
    unsafe {
        if n >= 32 {
            if n > 256 {
                std::ptr::copy_nonoverlapping(src, dst, n);
                return;
            }
            let mut off = 0;
            while off + 32 <= n {
                std::ptr::copy_nonoverlapping(src.add(off), dst.add(off), 32);
                off += 32;
            }
            if off < n {
                std::ptr::copy_nonoverlapping(src.add(n - 32), dst.add(n - 32), 32);
            }
        } else if n >= 16 {
            std::ptr::copy_nonoverlapping(src, dst, 16);
            std::ptr::copy_nonoverlapping(src.add(n - 16), dst.add(n - 16), 16);
        } else if n >= 8 {
            std::ptr::copy_nonoverlapping(src, dst, 8);
            std::ptr::copy_nonoverlapping(src.add(n - 8), dst.add(n - 8), 8);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
    }
}

/// Writes `src` (at most 16 bytes: a virtio-net header) to `dst` unless `dst` already
/// holds exactly those bytes.
///
/// The header of a received packet is almost always the same (no offloads,
/// `num_buffers` 1), and the guest reads it from its own cache: storing it again
/// would take the line away from the guest's core and make the guest miss on it for
/// every packet. Reading first leaves the line shared (DPDK's vhost does the same).
///
/// # Safety
/// `dst..dst+src.len()` readable and writable, not overlapping `src`.
#[inline(always)]
pub unsafe fn store_if_changed(dst: *mut u8, src: &[u8]) {
    let n = src.len();
    if (8..=16).contains(&n) {
        // SAFETY: n >= 8, so [0, 8) and [n-8, n) lie inside both ranges; together
        // they cover every byte when n <= 16. Unaligned reads of plain bytes.
        let same = unsafe {
            let s = src.as_ptr();
            std::ptr::read_unaligned(dst.cast::<u64>()) == std::ptr::read_unaligned(s.cast::<u64>())
                && std::ptr::read_unaligned(dst.add(n - 8).cast::<u64>())
                    == std::ptr::read_unaligned(s.add(n - 8).cast::<u64>())
        };
        if same {
            return;
        }
    }
    // SAFETY: the caller guarantees both ranges.
    unsafe { copy_packet(dst, src.as_ptr(), n) };
}

/// Guest tx from a single descriptor (the common case): copies the packet that
/// follows the `hdr_len`-byte virtio-net header in `src[..len]` into `buf` and sets
/// its length. Returns the packet's length, or `None` when the descriptor is shorter
/// than the header or the packet does not fit `buf`.
///
/// # Safety
/// `src..src+len` readable guest memory, not overlapping `buf`.
#[inline(always)]
pub unsafe fn copy_from_single(
    src: *const u8,
    len: usize,
    hdr_len: usize,
    buf: &mut PacketBuf,
) -> Option<usize> {
    let n = len.checked_sub(hdr_len)?;
    let room = buf.room_mut();
    if n > room.len() {
        return None;
    }
    // SAFETY: hdr_len + n == len readable bytes at src (caller); `room` has >= n.
    unsafe { copy_packet(room.as_mut_ptr(), src.add(hdr_len), n) };
    buf.set_len(n);
    Some(n)
}

/// Guest rx into a single descriptor with room for the whole packet (the common
/// case): the header (stored only where it differs, see [`store_if_changed`]), then
/// the data right after it.
///
/// # Safety
/// `dst..dst+hdr.len()+data.len()` writable guest memory, overlapping neither.
#[inline(always)]
pub unsafe fn copy_to_single(dst: *mut u8, hdr: &[u8], data: &[u8]) {
    // SAFETY: the caller guarantees room for both, back to back.
    unsafe {
        store_if_changed(dst, hdr);
        copy_packet(dst.add(hdr.len()), data.as_ptr(), data.len());
    }
}

/// Asks the CPU to start loading the cache line at `p` (never faults).
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to fetch the cache line at `p` for writing (never faults): the
/// copy into a guest rx buffer then needs no second round trip to own the line.
#[inline(always)]
pub fn prefetch_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint; it never faults, whatever the address (CPUs without
    // it execute it as a NOP).
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Buffers [`prefetch_buffer`] is asked for ahead of the one being copied. Asking
/// for a whole burst at once (64 lines) fills the core's queue of outstanding misses,
/// and the prefetches themselves then stall the loop (seen as ~40 % of the packed
/// ring's time in `perf` on the PVP loop); eight buffers ahead covers the latency.
pub const PREFETCH_AHEAD: usize = 8;

/// Starts loading the cache lines of a guest buffer at `p` that a 64-byte frame and
/// its `hdr_len`-byte virtio-net header occupy (two or three). For guest rx
/// (`write`), the lines the packet data goes to are fetched for writing; the
/// header's own line, when the data starts
/// on the next one (DPDK's layout: the header ends where the mbuf's data begins), is
/// fetched for reading only, so that it stays shared with the guest when
/// [`store_if_changed`] finds it unchanged.
#[inline(always)]
pub fn prefetch_buffer(p: *const u8, write: bool, hdr_len: usize) {
    if write {
        let data = p.wrapping_add(hdr_len);
        if (p as usize) >> 6 != (data as usize) >> 6 {
            prefetch(p);
        }
        prefetch_write(data);
        prefetch_write(data.wrapping_add(63));
    } else {
        prefetch(p);
        prefetch(p.wrapping_add(64));
    }
}

/// Starts loading the buffer [`PREFETCH_AHEAD`] places past `i` (the one about to be
/// copied) among a burst's translated buffers `ptrs` (null: not a single
/// descriptor, walked later), so that a few are always on their way.
#[inline(always)]
pub fn prefetch_ahead(ptrs: &[*mut u8], i: usize, write: bool, hdr_len: usize) {
    if let Some(&p) = ptrs.get(i + PREFETCH_AHEAD) {
        if !p.is_null() {
            prefetch_buffer(p, write, hdr_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_if_changed_leaves_equal_bytes_and_writes_different_ones() {
        for n in [0usize, 3, 8, 10, 12, 16] {
            let src: Vec<u8> = (0..n as u8).map(|i| i + 1).collect();
            let mut dst = vec![0u8; n + 2];
            // SAFETY: dst holds n + 2 bytes.
            unsafe { store_if_changed(dst.as_mut_ptr(), &src) };
            assert_eq!(&dst[..n], &src[..], "n = {n}");
            assert_eq!(&dst[n..], &[0, 0], "n = {n} wrote past the end");
            if n >= 8 {
                // Only the last byte differs: it must still be written.
                dst[n - 1] = 0xff;
                // SAFETY: as above.
                unsafe { store_if_changed(dst.as_mut_ptr(), &src) };
                assert_eq!(&dst[..n], &src[..], "n = {n}");
            }
        }
    }

    #[test]
    fn copies_every_length_exactly() {
        let src: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..600 {
            let mut dst = vec![0xeeu8; 610];
            // SAFETY: both buffers hold at least n bytes.
            unsafe { copy_packet(dst.as_mut_ptr(), src.as_ptr(), n) };
            assert_eq!(&dst[..n], &src[..n], "n = {n}");
            assert!(dst[n..].iter().all(|&b| b == 0xee), "n = {n} wrote past the end");
        }
    }
}
