//! The vhost-user wire protocol: message codes, feature bits and payload decoding.
//!
//! Every payload is decoded from bytes with explicit length checks: nothing a
//! frontend sends is trusted to be the size its header claims.

use crate::error::ProtocolError;
use crate::memory::{RegionDesc, MAX_REGIONS};

/// Size of the message header (request, flags, size).
pub const HDR_LEN: usize = 12;
/// Largest payload accepted (the biggest legal one, SET_CONFIG, is 12 + 256 bytes).
pub const MAX_PAYLOAD: usize = 4096;
/// Protocol version in the header flags.
pub const VERSION: u32 = 0x1;
/// Header flag: this message is a reply.
pub const FLAG_REPLY: u32 = 0x4;
/// Header flag: the frontend wants a REPLY_ACK.
pub const FLAG_NEED_REPLY: u32 = 0x8;
/// SET_VRING_KICK/CALL/ERR payload: the bits that hold the vring index.
pub const VRING_IDX_MASK: u64 = 0xff;
/// SET_VRING_KICK/CALL/ERR payload flag: no fd comes with this message.
pub const VRING_NOFD: u64 = 0x100;

/// Requests from the frontend.
#[allow(missing_docs)]
pub mod req {
    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const SET_OWNER: u32 = 3;
    pub const RESET_OWNER: u32 = 4;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_LOG_BASE: u32 = 6;
    pub const SET_LOG_FD: u32 = 7;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const GET_VRING_BASE: u32 = 11;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    pub const SET_VRING_ERR: u32 = 14;
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    pub const GET_QUEUE_NUM: u32 = 17;
    pub const SET_VRING_ENABLE: u32 = 18;
    pub const SEND_RARP: u32 = 19;
    pub const NET_SET_MTU: u32 = 20;
    pub const GET_CONFIG: u32 = 24;
    pub const SET_CONFIG: u32 = 25;
    pub const RESET_DEVICE: u32 = 34;
    pub const SET_STATUS: u32 = 39;
    pub const GET_STATUS: u32 = 40;
}

/// Virtio and vhost-user feature bits podwire knows.
#[allow(missing_docs)]
pub mod feat {
    pub const NET_F_MAC: u64 = 1 << 5;
    pub const NET_F_MRG_RXBUF: u64 = 1 << 15;
    pub const NET_F_STATUS: u64 = 1 << 16;
    pub const NET_F_CTRL_VQ: u64 = 1 << 17;
    pub const NET_F_MQ: u64 = 1 << 22;
    pub const F_ANY_LAYOUT: u64 = 1 << 27;
    pub const RING_F_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_F_EVENT_IDX: u64 = 1 << 29;
    pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
    pub const F_VERSION_1: u64 = 1 << 32;
    pub const F_RING_PACKED: u64 = 1 << 34;
    pub const F_IN_ORDER: u64 = 1 << 35;
}

/// vhost-user protocol feature bits podwire knows.
#[allow(missing_docs)]
pub mod pfeat {
    pub const MQ: u64 = 1 << 0;
    pub const REPLY_ACK: u64 = 1 << 3;
    pub const CONFIG: u64 = 1 << 9;
    pub const RESET_DEVICE: u64 = 1 << 13;
    pub const STATUS: u64 = 1 << 16;
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request code.
    pub request: u32,
    /// Flags (version, reply, need-reply).
    pub flags: u32,
    /// Payload size.
    pub size: u32,
}

impl Header {
    /// Decodes and validates a header.
    pub fn parse(b: &[u8; HDR_LEN]) -> Result<Self, ProtocolError> {
        let h = Header { request: le32(b, 0), flags: le32(b, 4), size: le32(b, 8) };
        if h.flags & 0x3 != VERSION {
            return Err(ProtocolError::Malformed(format!("protocol version {}", h.flags & 0x3)));
        }
        if h.size as usize > MAX_PAYLOAD {
            return Err(ProtocolError::Malformed(format!("payload of {} bytes", h.size)));
        }
        Ok(h)
    }

    /// Encodes a reply header for request `request` with `size` payload bytes.
    pub fn reply(request: u32, size: usize) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..4].copy_from_slice(&request.to_le_bytes());
        b[4..8].copy_from_slice(&(VERSION | FLAG_REPLY).to_le_bytes());
        b[8..12].copy_from_slice(&(size as u32).to_le_bytes());
        b
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn want(payload: &[u8], n: usize, what: &str) -> Result<(), ProtocolError> {
    if payload.len() < n {
        return Err(ProtocolError::Malformed(format!(
            "{what}: payload of {} bytes, need {n}",
            payload.len()
        )));
    }
    Ok(())
}

/// A u64 payload.
pub fn u64_payload(p: &[u8], what: &str) -> Result<u64, ProtocolError> {
    want(p, 8, what)?;
    Ok(le64(p, 0))
}

/// A vring state payload: (index, num).
pub fn vring_state(p: &[u8], what: &str) -> Result<(u32, u32), ProtocolError> {
    want(p, 8, what)?;
    Ok((le32(p, 0), le32(p, 4)))
}

/// SET_VRING_ADDR payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VringAddr {
    /// Vring index.
    pub index: u32,
    /// Flags (bit 0: log).
    pub flags: u32,
    /// Descriptor table (frontend-virtual).
    pub desc: u64,
    /// Used ring / device area (frontend-virtual).
    pub used: u64,
    /// Avail ring / driver area (frontend-virtual).
    pub avail: u64,
    /// Log address.
    pub log: u64,
}

/// Decodes SET_VRING_ADDR.
pub fn vring_addr(p: &[u8]) -> Result<VringAddr, ProtocolError> {
    want(p, 40, "SET_VRING_ADDR")?;
    Ok(VringAddr {
        index: le32(p, 0),
        flags: le32(p, 4),
        desc: le64(p, 8),
        used: le64(p, 16),
        avail: le64(p, 24),
        log: le64(p, 32),
    })
}

/// Decodes SET_MEM_TABLE's region list.
pub fn mem_table(p: &[u8]) -> Result<Vec<RegionDesc>, ProtocolError> {
    want(p, 8, "SET_MEM_TABLE")?;
    let n = le32(p, 0) as usize;
    if n == 0 || n > MAX_REGIONS {
        return Err(ProtocolError::BadMemoryTable(format!(
            "{n} regions (1 to {MAX_REGIONS} allowed)"
        )));
    }
    want(p, 8 + n * 32, "SET_MEM_TABLE")?;
    Ok((0..n)
        .map(|i| {
            let o = 8 + i * 32;
            RegionDesc {
                guest_phys_addr: le64(p, o),
                size: le64(p, o + 8),
                user_addr: le64(p, o + 16),
                mmap_offset: le64(p, o + 24),
            }
        })
        .collect())
}

/// A GET_CONFIG / SET_CONFIG payload: (offset, size, flags, bytes after the 12-byte head).
pub fn config_payload(p: &[u8]) -> Result<(u32, u32, u32, &[u8]), ProtocolError> {
    want(p, 12, "GET_CONFIG/SET_CONFIG")?;
    let (off, size, flags) = (le32(p, 0), le32(p, 4), le32(p, 8));
    if size as usize > p.len() - 12 || size > 256 {
        return Err(ProtocolError::Malformed(format!("config access of {size} bytes")));
    }
    Ok((off, size, flags, &p[12..12 + size as usize]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rejects_bad_version_and_size() {
        let mut b = [0u8; HDR_LEN];
        b[4] = 1;
        assert!(Header::parse(&b).is_ok());
        b[4] = 2;
        assert!(Header::parse(&b).is_err());
        b[4] = 1;
        b[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(Header::parse(&b).is_err());
    }

    #[test]
    fn short_payloads_are_errors() {
        assert!(u64_payload(&[0; 7], "x").is_err());
        assert!(vring_addr(&[0; 39]).is_err());
        let mut t = vec![0u8; 8 + 32];
        t[0] = 2;
        assert!(mem_table(&t).is_err());
        t[0] = 9;
        assert!(mem_table(&t).is_err());
        t[0] = 0;
        assert!(mem_table(&t).is_err());
        let mut c = vec![0u8; 12 + 4];
        c[4] = 5;
        assert!(config_payload(&c).is_err());
    }
}
