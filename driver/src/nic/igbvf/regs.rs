//! Registers of the Intel 82576 virtual function (8086:10ca) and the I350 VF
//! (8086:1520), as byte offsets into BAR0 and bit masks, from the 82576 and I350
//! datasheets (section "Virtual Function Registers"). The two agree on everything
//! podwire uses.

/// Device control (VTCTRL).
pub const CTRL: usize = 0x0000;
/// Device status (VTSTATUS).
pub const STATUS: usize = 0x0008;
/// Free-running timer (VTFRTIMER); reading it is a harmless posted-write flush.
pub const FRTIMER: usize = 0x1048;
/// Extended interrupt mask clear (VTEIMC).
pub const EIMC: usize = 0x1528;

/// CTRL: VF software reset.
pub const CTRL_RST: u32 = 1 << 26;
/// STATUS: link up.
pub const STATUS_LU: u32 = 1 << 1;

/// Rx descriptor base low of queue `q` (0 or 1).
pub const fn rdbal(q: usize) -> usize {
    0x2800 + q * 0x100
}
/// Rx descriptor base high.
pub const fn rdbah(q: usize) -> usize {
    0x2804 + q * 0x100
}
/// Rx descriptor ring length in bytes (multiple of 128).
pub const fn rdlen(q: usize) -> usize {
    0x2808 + q * 0x100
}
/// Split and replication receive control.
pub const fn srrctl(q: usize) -> usize {
    0x280c + q * 0x100
}
/// Rx descriptor head.
pub const fn rdh(q: usize) -> usize {
    0x2810 + q * 0x100
}
/// Rx descriptor tail.
pub const fn rdt(q: usize) -> usize {
    0x2818 + q * 0x100
}
/// Rx descriptor control.
pub const fn rxdctl(q: usize) -> usize {
    0x2828 + q * 0x100
}
/// Tx descriptor base low.
pub const fn tdbal(q: usize) -> usize {
    0x3800 + q * 0x100
}
/// Tx descriptor base high.
pub const fn tdbah(q: usize) -> usize {
    0x3804 + q * 0x100
}
/// Tx descriptor ring length in bytes (multiple of 128).
pub const fn tdlen(q: usize) -> usize {
    0x3808 + q * 0x100
}
/// Tx descriptor head.
pub const fn tdh(q: usize) -> usize {
    0x3810 + q * 0x100
}
/// Tx descriptor tail.
pub const fn tdt(q: usize) -> usize {
    0x3818 + q * 0x100
}
/// Tx descriptor control.
pub const fn txdctl(q: usize) -> usize {
    0x3828 + q * 0x100
}

/// Queue pairs a VF has.
pub const MAX_QUEUES: u16 = 2;
/// Bytes of BAR0 the driver touches (the VF's BAR0 is 16 KiB).
pub const BAR0_MIN_LEN: usize = 0x4000;

/// SRRCTL: packet buffer size in 1 KiB units (bits 6:0).
pub const SRRCTL_BSIZEPKT_MASK: u32 = 0x7f;
/// SRRCTL: advanced descriptors, one buffer.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
/// SRRCTL: drop packets when no descriptor is free (do not stall the pool).
pub const SRRCTL_DROP_EN: u32 = 1 << 31;
/// RXDCTL / TXDCTL: queue enable.
pub const DCTL_ENABLE: u32 = 1 << 25;

/// Good packets received count (VFGPRC).
pub const VFGPRC: usize = 0x0f10;
/// Good packets transmitted count (VFGPTC).
pub const VFGPTC: usize = 0x0f14;
/// Good octets received count (VFGORC).
pub const VFGORC: usize = 0x0f18;
/// Good octets transmitted count (VFGOTC).
pub const VFGOTC: usize = 0x0f34;
/// Multicast packets received count (VFMPRC).
pub const VFMPRC: usize = 0x0f3c;

/// VF-to-PF mailbox control (V2PMAILBOX).
pub const V2PMAILBOX: usize = 0x0c40;
/// Mailbox memory: 16 dwords (VMBMEM).
pub const VMBMEM: usize = 0x0800;
/// Words in the mailbox memory.
pub const MBX_WORDS: usize = 16;

/// V2PMAILBOX: request for PF ready (we sent a message).
pub const MBX_REQ: u32 = 1 << 0;
/// V2PMAILBOX: PF message received (we acknowledge).
pub const MBX_ACK: u32 = 1 << 1;
/// V2PMAILBOX: buffer taken by the VF.
pub const MBX_VFU: u32 = 1 << 2;
/// V2PMAILBOX: buffer taken by the PF.
pub const MBX_PFU: u32 = 1 << 3;
/// V2PMAILBOX: the PF wrote a message (read-to-clear).
pub const MBX_PFSTS: u32 = 1 << 4;
/// V2PMAILBOX: the PF acknowledged our message (read-to-clear).
pub const MBX_PFACK: u32 = 1 << 5;
/// V2PMAILBOX: the PF is resetting.
pub const MBX_RSTI: u32 = 1 << 6;
/// V2PMAILBOX: the PF finished a reset (read-to-clear).
pub const MBX_RSTD: u32 = 1 << 7;
/// V2PMAILBOX bits that clear when read: the driver must remember them.
pub const MBX_R2C_BITS: u32 = MBX_PFSTS | MBX_PFACK | MBX_RSTD;
