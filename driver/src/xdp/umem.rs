//! UMEM: the packet memory AF_XDP sockets share with the kernel.
//!
//! # Choice: the whole mempool is the UMEM, and UMEM frames are mempool buffers
//! The UMEM is registered on the mempool's [`DmaMemory`](crate::DmaMemory) in
//! *unaligned chunk mode* (`XDP_UMEM_UNALIGNED_CHUNK_FLAG`). Unaligned mode lets a fill
//! or tx address be any byte offset, so mempool slots (whose stride, 2176 bytes by
//! default, is not a power of two) are used as they are: no dedicated UMEM area and no
//! copy between UMEM frames and mempool buffers.
//!
//! - rx: a free mempool buffer is given to the kernel through the fill ring (its slot
//!   offset is the address); the kernel writes the frame at `slot + 256`
//!   (`XDP_PACKET_HEADROOM`) and returns `slot | 256 << 48` in the rx descriptor. The
//!   port turns that back into a [`PacketBuf`](crate::PacketBuf) with a 256-byte
//!   headroom. A frame received on AF_XDP is therefore forwarded to another port
//!   without a copy, as far as that port allows (another AF_XDP port on the same pool
//!   transmits it as it is; the vhost-user port copies it once into the guest).
//! - tx: a buffer of the same pool is handed to the kernel as `slot | data_off << 48`
//!   and comes back through the completion ring; a buffer of another pool is copied
//!   into one of ours first.
//! - The chunk size registered is `min(stride, 4096)`: it bounds what the kernel
//!   writes after a fill address and the longest frame sent. A mempool stride below
//!   2048 bytes (the kernel's smallest chunk) is rejected.
//!
//! Every address the kernel returns is checked against a table with one state byte
//! per slot ([`FrameTable`]): only a slot the port gave to the fill ring may come back
//! on rx, and only one it gave to the tx ring may come back on completion. Anything
//! else is counted as an error and ignored, never dereferenced.
//!
//! Zero-copy drivers need the chunk not to cross a non-contiguous page: that holds
//! with hugepage memory (buffers never straddle a 2 MiB page in physical mode, and
//! hugepage memory is contiguous per page); with `hugepages = false` some buffers
//! straddle 4 KiB pages, which is fine in copy mode (the only mode veth has).

use crate::error::{DriverError, Result};
use crate::mempool::Mempool;

/// The kernel's headroom in front of every received frame (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: usize = 256;
/// Smallest chunk size the kernel accepts.
pub const MIN_CHUNK_SIZE: usize = 2048;
/// Largest chunk size used (one small page).
pub const MAX_CHUNK_SIZE: usize = 4096;
/// Low 48 bits of an unaligned-mode address: the base.
pub const ADDR_MASK: u64 = (1 << 48) - 1;
/// Shift of the offset in an unaligned-mode address.
pub const OFFSET_SHIFT: u32 = 48;

/// The `XDP_UMEM_REG` parameters for a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemLayout {
    /// First byte of the region.
    pub addr: u64,
    /// Bytes registered.
    pub len: u64,
    /// Chunk size.
    pub chunk_size: u32,
}

impl UmemLayout {
    /// The layout for `pool`, or why it cannot be a UMEM.
    pub fn for_pool(pool: &Mempool) -> Result<Self> {
        let stride = pool.stride();
        if pool.slot_size() < MIN_CHUNK_SIZE {
            return Err(DriverError::InvalidArgument(format!(
                "AF_XDP needs packet buffers of at least {MIN_CHUNK_SIZE} bytes including \
                 headroom; the mempool's are {} (raise [memory] buffer_size)",
                pool.slot_size()
            )));
        }
        let mem = pool.memory();
        Ok(Self {
            addr: mem.as_ptr() as u64,
            len: mem.len() as u64,
            chunk_size: stride.min(pool.slot_size()).min(MAX_CHUNK_SIZE) as u32,
        })
    }

    /// Longest frame the kernel can receive into one chunk.
    pub fn max_rx_frame(&self) -> usize {
        self.chunk_size as usize - XDP_PACKET_HEADROOM
    }

    /// The `struct xdp_umem_reg` to register.
    pub fn reg(&self) -> libc::xdp_umem_reg {
        libc::xdp_umem_reg {
            addr: self.addr,
            len: self.len,
            chunk_size: self.chunk_size,
            headroom: 0,
            flags: libc::XDP_UMEM_UNALIGNED_CHUNK_FLAG,
            tx_metadata_len: 0,
        }
    }
}

/// Who holds a slot of the pool, from the port's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameState {
    /// Not given to the kernel by this port.
    Free = 0,
    /// In a fill ring (or received but not yet read from the rx ring).
    Fill = 1,
    /// In a tx ring (or sent but not yet completed).
    Tx = 2,
}

/// One state byte per mempool slot: which slots this port gave to the kernel, and
/// how. Shared by all queues of a port (one worker thread owns them all).
#[derive(Debug)]
pub struct FrameTable {
    state: Vec<FrameState>,
}

impl FrameTable {
    /// A table for `slots` slots, all free.
    pub fn new(slots: usize) -> Self {
        Self { state: vec![FrameState::Free; slots] }
    }

    /// Moves slot `idx` from `from` to `to`; false (and no change) when it is not in
    /// state `from` or out of range.
    #[inline]
    pub fn transition(&mut self, idx: u32, from: FrameState, to: FrameState) -> bool {
        match self.state.get_mut(idx as usize) {
            Some(s) if *s == from => {
                *s = to;
                true
            }
            _ => false,
        }
    }

    /// Slots currently given to the kernel, with their state.
    pub fn held(&self) -> impl Iterator<Item = (u32, FrameState)> + '_ {
        self.state
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != FrameState::Free)
            .map(|(i, s)| (i as u32, *s))
    }

    /// Marks every slot free.
    pub fn clear(&mut self) {
        self.state.fill(FrameState::Free);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::MempoolConfig;

    #[test]
    fn layout_and_table() {
        let pool = Mempool::small_pages(MempoolConfig { count: 64, ..Default::default() }).unwrap();
        let l = UmemLayout::for_pool(&pool).unwrap();
        assert_eq!(l.chunk_size, 2176);
        assert_eq!(l.max_rx_frame(), 1920);
        let small =
            Mempool::small_pages(MempoolConfig { count: 8, data_room: 1536, headroom: 128 })
                .unwrap();
        assert!(UmemLayout::for_pool(&small).is_err());

        let mut t = FrameTable::new(4);
        assert!(t.transition(1, FrameState::Free, FrameState::Fill));
        assert!(!t.transition(1, FrameState::Free, FrameState::Fill));
        assert!(!t.transition(1, FrameState::Tx, FrameState::Free));
        assert!(!t.transition(9, FrameState::Free, FrameState::Fill));
        assert_eq!(t.held().collect::<Vec<_>>(), vec![(1, FrameState::Fill)]);
    }

    #[test]
    fn raw_round_trip_and_slot_lookup() {
        let pool = Mempool::small_pages(MempoolConfig { count: 16, ..Default::default() }).unwrap();
        let stride = pool.stride();
        let b = pool.alloc().unwrap();
        let off = b.into_raw();
        assert_eq!(pool.slot_containing(off as usize + 300), Some((off / stride as u32, off)));
        assert_eq!(pool.slot_containing(16 * stride), None);
        assert_eq!(pool.slot_offset_of(off / stride as u32), Some(off));
        assert_eq!(pool.slot_offset_of(16), None);
        // SAFETY: off came from into_raw of this pool and is turned back once.
        let mut b = unsafe { pool.buf_from_raw(off, 256, 60) };
        assert_eq!((b.headroom(), b.len()), (256, 60));
        b.data_mut()[0] = 1;
        drop(b);
    }
}
