//! Ethernet and 802.1Q headers over untrusted bytes: a typed view validated once
//! ([`EthHeader::new_checked`]), then cheap accessors; and the tag push/pop done in
//! place in a [`PacketBuf`] (no copy of the payload: the 12 address bytes move).

use podwire_driver::PacketBuf;

/// Bytes of an untagged Ethernet header (destination, source, EtherType).
pub const ETH_HEADER_LEN: usize = 14;
/// Bytes an 802.1Q tag adds.
pub const VLAN_TAG_LEN: usize = 4;
/// The 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// Highest usable VLAN id (4095 is reserved).
pub const MAX_VLAN_ID: u16 = 4094;

/// A MAC address packed into the low 48 bits of a `u64`, first byte most significant
/// (so the group bit of the first byte is bit 40).
pub type MacKey = u64;

/// The group (multicast, including broadcast) bit of a packed MAC.
pub const MAC_GROUP_BIT: u64 = 1 << 40;

/// Packs 6 bytes as a [`MacKey`].
#[inline]
pub fn mac_key(b: &[u8; 6]) -> MacKey {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// Unpacks a [`MacKey`].
pub fn mac_bytes(k: MacKey) -> [u8; 6] {
    let b = k.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// A checked view of the start of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct EthHeader<'a> {
    bytes: &'a [u8],
}

impl<'a> EthHeader<'a> {
    /// Validates that `bytes` holds at least an Ethernet header, and a whole 802.1Q
    /// tag when the EtherType says there is one. `None` for a runt.
    #[inline]
    pub fn new_checked(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < ETH_HEADER_LEN {
            return None;
        }
        let h = Self { bytes };
        if h.ethertype() == TPID_8021Q && bytes.len() < ETH_HEADER_LEN + VLAN_TAG_LEN {
            return None;
        }
        Some(h)
    }

    /// Destination MAC.
    #[inline]
    pub fn dst(&self) -> MacKey {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.bytes[0..6]);
        mac_key(&a)
    }

    /// Source MAC.
    #[inline]
    pub fn src(&self) -> MacKey {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.bytes[6..12]);
        mac_key(&a)
    }

    /// The outer EtherType (0x8100 for a tagged frame).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.bytes[12], self.bytes[13]])
    }

    /// The VLAN id of an 802.1Q-tagged frame (0 for a priority tag), `None` if
    /// untagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        if self.ethertype() != TPID_8021Q {
            return None;
        }
        Some(u16::from_be_bytes([self.bytes[14], self.bytes[15]]) & 0x0fff)
    }
}

/// Inserts an 802.1Q tag with `vid` (priority 0) after the source MAC. Returns false,
/// leaving the frame as it was, if the frame is shorter than an Ethernet header or
/// the buffer has no headroom for the tag.
#[inline]
pub fn push_vlan(buf: &mut PacketBuf, vid: u16) -> bool {
    if buf.len() < ETH_HEADER_LEN || buf.headroom() < VLAN_TAG_LEN {
        return false;
    }
    if buf.prepend(VLAN_TAG_LEN).is_none() {
        return false;
    }
    let d = buf.data_mut();
    d.copy_within(VLAN_TAG_LEN..VLAN_TAG_LEN + 12, 0);
    d[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
    d[14..16].copy_from_slice(&(vid & 0x0fff).to_be_bytes());
    true
}

/// Removes the outer 802.1Q tag. Returns false, leaving the frame as it was, if the
/// frame is not a whole tagged header.
#[inline]
pub fn pop_vlan(buf: &mut PacketBuf) -> bool {
    let d = buf.data_mut();
    if d.len() < ETH_HEADER_LEN + VLAN_TAG_LEN || d[12..14] != TPID_8021Q.to_be_bytes() {
        return false;
    }
    d.copy_within(0..12, VLAN_TAG_LEN);
    buf.adj(VLAN_TAG_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwire_driver::{Mempool, MempoolConfig};

    fn pool() -> Mempool {
        Mempool::small_pages(MempoolConfig { count: 1024, ..Default::default() }).expect("pool")
    }

    const FRAME: [u8; 20] = [
        0x02, 0, 0, 0, 0, 0x0b, // dst
        0x02, 0, 0, 0, 0, 0x0a, // src
        0x08, 0x00, // IPv4
        0x45, 0, 0, 20, 0xaa, 0xbb,
    ];

    #[test]
    fn header_accessors_and_runts() {
        let h = EthHeader::new_checked(&FRAME).unwrap();
        assert_eq!(mac_bytes(h.dst()), [2, 0, 0, 0, 0, 0x0b]);
        assert_eq!(mac_bytes(h.src()), [2, 0, 0, 0, 0, 0x0a]);
        assert_eq!((h.ethertype(), h.vlan_id()), (0x0800, None));
        assert_eq!(h.dst() & MAC_GROUP_BIT, 0);
        assert_ne!(mac_key(&[0xff; 6]) & MAC_GROUP_BIT, 0);
        assert_ne!(mac_key(&[0x01, 0, 0x5e, 0, 0, 1]) & MAC_GROUP_BIT, 0);
        for n in 0..ETH_HEADER_LEN {
            assert!(EthHeader::new_checked(&FRAME[..n]).is_none());
        }
        // A tag announced but cut short is a runt too.
        let mut t = FRAME;
        t[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(EthHeader::new_checked(&t[..16]).is_none());
        assert_eq!(EthHeader::new_checked(&t[..18]).unwrap().vlan_id(), Some(0x4500 & 0xfff));
    }

    #[test]
    fn push_then_pop_restores_the_frame() {
        let p = pool();
        let mut b = p.alloc().unwrap();
        assert!(b.copy_from(&FRAME));
        assert!(push_vlan(&mut b, 0x123));
        assert_eq!(b.len(), FRAME.len() + 4);
        let d = b.data();
        assert_eq!(&d[..12], &FRAME[..12]);
        assert_eq!(&d[12..16], &[0x81, 0x00, 0x01, 0x23]);
        assert_eq!(&d[16..], &FRAME[12..]);
        assert_eq!(EthHeader::new_checked(d).unwrap().vlan_id(), Some(0x123));
        assert!(pop_vlan(&mut b));
        assert_eq!(b.data(), &FRAME);
        // Untagged: pop refuses and changes nothing.
        assert!(!pop_vlan(&mut b));
        assert_eq!(b.data(), &FRAME);
    }

    #[test]
    fn push_and_pop_refuse_bad_frames() {
        let p = pool();
        let mut b = p.alloc().unwrap();
        assert!(b.copy_from(&FRAME[..10]));
        assert!(!push_vlan(&mut b, 5), "runt");
        assert_eq!(b.len(), 10);
        assert!(b.copy_from(&FRAME));
        let room = b.headroom();
        assert!(b.prepend(room).is_some());
        assert!(!push_vlan(&mut b, 5), "no headroom");
        assert_eq!(b.len(), FRAME.len() + room);
        // A tagged header cut short is left alone.
        let mut t = FRAME;
        t[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(b.copy_from(&t[..17]));
        assert!(!pop_vlan(&mut b));
        assert_eq!(b.len(), 17);
    }
}
