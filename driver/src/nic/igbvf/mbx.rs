//! The VF <-> PF mailbox: message encoding (pure functions, unit-tested) and the
//! lock/post/ack protocol over the V2PMAILBOX register and the 16-word mailbox memory.
//!
//! Message semantics are the Linux igb PF driver's (the PF is whatever driver owns the
//! physical function, normally the kernel's igb): word 0 carries the message type in
//! bits 15:0, message info in bits 23:16 and the reply type in bits 31:29.

use std::time::{Duration, Instant};

use super::regs::*;
use crate::nic::Regs;
use crate::port::MacAddr;

/// VF reset request; the reply carries the MAC the PF assigned.
pub const MSG_RESET: u32 = 0x01;
/// Set the VF's MAC address.
pub const MSG_SET_MAC_ADDR: u32 = 0x02;
/// Set the multicast hash list.
pub const MSG_SET_MULTICAST: u32 = 0x03;
/// Add or remove a VLAN filter.
pub const MSG_SET_VLAN: u32 = 0x04;
/// Set the largest receive frame (long packet enable).
pub const MSG_SET_LPE: u32 = 0x05;

/// Reply: the PF did it.
pub const MSGTYPE_ACK: u32 = 0x8000_0000;
/// Reply: the PF refused.
pub const MSGTYPE_NACK: u32 = 0x4000_0000;
/// Reply flag: the PF is clear to send (the VF finished its reset handshake).
pub const MSGTYPE_CTS: u32 = 0x2000_0000;
/// Shift of the message info field.
pub const MSGINFO_SHIFT: u32 = 16;
/// Mask of the message info field.
pub const MSGINFO_MASK: u32 = 0xff << MSGINFO_SHIFT;

/// Multicast hashes one SET_MULTICAST message carries (the PF keeps 30 per VF).
pub const MAX_MULTICAST: usize = 30;
/// Largest frame the PF accepts in SET_LPE (MAX_JUMBO_FRAME_SIZE of the igb PF).
pub const MAX_LPE_FRAME: u32 = 9728;

/// Mailbox failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    /// The PF did not answer in time: no PF driver, or the PF is down.
    #[error("the PF did not {what} within {ms} ms: is the PF's driver (igb) loaded and its interface up?")]
    Timeout {
        /// What we waited for.
        what: &'static str,
        /// How long.
        ms: u64,
    },
    /// The PF refused the request.
    #[error("the PF refused {msg}{hint}")]
    Nack {
        /// The message.
        msg: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// The PF answered something that is not a reply to the request.
    #[error("unexpected mailbox reply {got:#010x} to {msg}")]
    Unexpected {
        /// The message.
        msg: &'static str,
        /// Word 0 of the reply.
        got: u32,
    },
    /// A request that cannot be encoded.
    #[error("invalid mailbox request: {0}")]
    Invalid(String),
}

/// Name of a message type, for errors.
pub fn msg_name(msg_type: u32) -> &'static str {
    match msg_type & 0xffff {
        MSG_RESET => "RESET",
        MSG_SET_MAC_ADDR => "SET_MAC_ADDR",
        MSG_SET_MULTICAST => "SET_MULTICAST",
        MSG_SET_VLAN => "SET_VLAN",
        MSG_SET_LPE => "SET_LPE",
        _ => "an unknown message",
    }
}

/// Packs MAC bytes into mailbox words starting at word 1 (little-endian bytes).
fn put_mac(words: &mut [u32], mac: MacAddr) {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&mac.0);
    words[1] = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    words[2] = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
}

/// SET_MAC_ADDR: 3 words.
pub fn encode_set_mac(mac: MacAddr) -> [u32; 3] {
    let mut w = [MSG_SET_MAC_ADDR, 0, 0];
    put_mac(&mut w, mac);
    w
}

/// SET_VLAN: add (`true`) or remove VLAN `vid` (1..4095).
pub fn encode_set_vlan(vid: u16, add: bool) -> Result<[u32; 2], MailboxError> {
    if vid == 0 || vid > 4095 {
        return Err(MailboxError::Invalid(format!("VLAN id {vid} is not in 1..4095")));
    }
    Ok([MSG_SET_VLAN | (add as u32) << MSGINFO_SHIFT, vid as u32])
}

/// SET_LPE: the largest frame to receive, in bytes (without CRC), 64..=9728.
pub fn encode_set_lpe(max_frame: u32) -> Result<[u32; 2], MailboxError> {
    if !(64..=MAX_LPE_FRAME).contains(&max_frame) {
        return Err(MailboxError::Invalid(format!(
            "largest frame {max_frame} is not in 64..={MAX_LPE_FRAME}"
        )));
    }
    Ok([MSG_SET_LPE, max_frame])
}

/// The 12-bit multicast table hash of a MAC (filter type 0: address bits 47:36).
pub fn multicast_hash(mac: MacAddr) -> u16 {
    ((mac.0[4] as u16 >> 4) | ((mac.0[5] as u16) << 4)) & 0xfff
}

/// SET_MULTICAST: count in the info field, then the hashes two per word. At most
/// [`MAX_MULTICAST`] addresses; returns the words used.
pub fn encode_set_multicast(
    macs: &[MacAddr],
    out: &mut [u32; MBX_WORDS],
) -> Result<usize, MailboxError> {
    if macs.len() > MAX_MULTICAST {
        return Err(MailboxError::Invalid(format!(
            "{} multicast addresses (the PF takes at most {MAX_MULTICAST})",
            macs.len()
        )));
    }
    *out = [0; MBX_WORDS];
    out[0] = MSG_SET_MULTICAST | (macs.len() as u32) << MSGINFO_SHIFT;
    for (i, m) in macs.iter().enumerate() {
        let h = multicast_hash(*m) as u32;
        out[1 + i / 2] |= h << (16 * (i % 2));
    }
    Ok(1 + macs.len().div_ceil(2))
}

/// Decodes the reply to RESET: `Some(mac)` when the PF assigned one, `None` when it
/// NACKed (no MAC assigned: the VF must pick one).
pub fn decode_reset_reply(w: &[u32; 3]) -> Result<Option<MacAddr>, MailboxError> {
    match w[0] & !MSGTYPE_CTS {
        x if x == MSG_RESET | MSGTYPE_ACK => {
            let a = w[1].to_le_bytes();
            let b = w[2].to_le_bytes();
            let mac = MacAddr([a[0], a[1], a[2], a[3], b[0], b[1]]);
            if mac.0 == [0; 6] || mac.0[0] & 1 != 0 {
                // A zero or multicast "assigned" address is no assignment.
                return Ok(None);
            }
            Ok(Some(mac))
        }
        x if x == MSG_RESET | MSGTYPE_NACK => Ok(None),
        _ => Err(MailboxError::Unexpected { msg: "RESET", got: w[0] }),
    }
}

/// Checks word 0 of the reply to a request of `msg_type`.
pub fn check_reply(msg_type: u32, reply0: u32) -> Result<(), MailboxError> {
    let t = reply0 & !(MSGTYPE_CTS | MSGINFO_MASK);
    if t == msg_type | MSGTYPE_ACK {
        Ok(())
    } else if t == msg_type | MSGTYPE_NACK {
        let hint = match msg_type {
            MSG_SET_MAC_ADDR => {
                ": the PF administrator fixed this VF's MAC (`ip link set PF vf N mac ...`); \
                 leave `mac` out of the port's config or use that one"
            }
            MSG_SET_LPE => ": the PF's MTU may be too small (`ip link set PF mtu 9000`)",
            _ => "",
        };
        Err(MailboxError::Nack { msg: msg_name(msg_type), hint })
    } else {
        Err(MailboxError::Unexpected { msg: msg_name(msg_type), got: reply0 })
    }
}

/// The VF side of the mailbox. Remembers the read-to-clear bits of V2PMAILBOX.
#[derive(Debug)]
pub struct Mailbox {
    cached: u32,
    timeout: Duration,
}

impl Mailbox {
    /// A mailbox that waits at most `timeout` for each step.
    pub fn new(timeout: Duration) -> Self {
        Self { cached: 0, timeout }
    }

    fn read(&mut self, r: &impl Regs) -> u32 {
        let v = r.read32(V2PMAILBOX);
        self.cached |= v & MBX_R2C_BITS;
        v | self.cached
    }

    /// Whether `bit` is set (now or in a remembered read), consuming a remembered one.
    fn take(&mut self, r: &impl Regs, bit: u32) -> bool {
        let v = self.read(r);
        self.cached &= !bit;
        v & bit != 0
    }

    fn wait(&mut self, r: &impl Regs, bit: u32, what: &'static str) -> Result<(), MailboxError> {
        let start = Instant::now();
        loop {
            if self.take(r, bit) {
                return Ok(());
            }
            if start.elapsed() > self.timeout {
                return Err(MailboxError::Timeout { what, ms: self.timeout.as_millis() as u64 });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Whether the PF is in reset (RSTI), or has just finished one (RSTD, consumed).
    pub fn pf_reset_pending(&mut self, r: &impl Regs) -> bool {
        self.read(r) & MBX_RSTI != 0
    }

    /// Forgets remembered bits (after a VF reset).
    pub fn clear(&mut self, r: &impl Regs) {
        let _ = self.read(r);
        self.cached = 0;
    }

    fn lock(&mut self, r: &impl Regs) -> Result<(), MailboxError> {
        let start = Instant::now();
        loop {
            r.write32(V2PMAILBOX, MBX_VFU);
            if self.read(r) & MBX_VFU != 0 {
                return Ok(());
            }
            if start.elapsed() > self.timeout {
                return Err(MailboxError::Timeout {
                    what: "release the mailbox",
                    ms: self.timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Posts `msg` and waits for the PF's acknowledgement.
    pub fn write_posted(&mut self, r: &impl Regs, msg: &[u32]) -> Result<(), MailboxError> {
        if msg.is_empty() || msg.len() > MBX_WORDS {
            return Err(MailboxError::Invalid(format!("{} mailbox words", msg.len())));
        }
        // Drop stale notifications from earlier exchanges.
        self.cached &= !(MBX_PFACK | MBX_PFSTS);
        let _ = self.read(r);
        self.cached &= !(MBX_PFACK | MBX_PFSTS);
        self.lock(r)?;
        for (i, w) in msg.iter().enumerate() {
            r.write32(VMBMEM + 4 * i, *w);
        }
        r.write32(V2PMAILBOX, MBX_REQ);
        self.wait(r, MBX_PFACK, "acknowledge a mailbox message")
    }

    /// Waits for the PF's message and reads `out.len()` words of it.
    pub fn read_posted(&mut self, r: &impl Regs, out: &mut [u32]) -> Result<(), MailboxError> {
        if out.len() > MBX_WORDS {
            return Err(MailboxError::Invalid(format!("{} mailbox words", out.len())));
        }
        self.wait(r, MBX_PFSTS, "answer a mailbox message")?;
        self.lock(r)?;
        for (i, w) in out.iter_mut().enumerate() {
            *w = r.read32(VMBMEM + 4 * i);
        }
        // Acknowledge and release the buffer.
        r.write32(V2PMAILBOX, MBX_ACK);
        Ok(())
    }

    /// Sends a request and checks the PF's reply.
    pub fn request(&mut self, r: &impl Regs, msg: &[u32]) -> Result<(), MailboxError> {
        self.write_posted(r, msg)?;
        let mut reply = [0u32; 1];
        self.read_posted(r, &mut reply)?;
        check_reply(msg[0] & 0xffff, reply[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn set_mac_packs_bytes_little_endian() {
        let w = encode_set_mac(MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(w, [0x02, 0x3322_1102, 0x0000_5544]);
    }

    #[test]
    fn vlan_and_lpe_encoding_and_limits() {
        assert_eq!(encode_set_vlan(100, true).unwrap(), [0x0001_0004, 100]);
        assert_eq!(encode_set_vlan(100, false).unwrap(), [0x0000_0004, 100]);
        assert!(encode_set_vlan(0, true).is_err());
        assert!(encode_set_vlan(4096, true).is_err());
        assert_eq!(encode_set_lpe(9018).unwrap(), [0x05, 9018]);
        assert!(encode_set_lpe(9729).is_err());
        assert!(encode_set_lpe(10).is_err());
    }

    #[test]
    fn multicast_hashes_pack_two_per_word() {
        let a = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
        let b = MacAddr([0x33, 0x33, 0x00, 0x00, 0xab, 0xcd]);
        assert_eq!(multicast_hash(a), 0x010);
        assert_eq!(multicast_hash(b), 0xcda);
        let mut w = [0u32; MBX_WORDS];
        let n = encode_set_multicast(&[a, b, a], &mut w).unwrap();
        assert_eq!(n, 3);
        assert_eq!(w[0], 0x0003_0003);
        assert_eq!(w[1], 0x0cda_0010);
        assert_eq!(w[2], 0x0000_0010);
        let many = vec![a; 31];
        assert!(encode_set_multicast(&many, &mut w).is_err());
    }

    #[test]
    fn reset_reply_ack_nack_and_garbage() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let mut w = encode_set_mac(mac);
        w[0] = MSG_RESET | MSGTYPE_ACK | MSGTYPE_CTS;
        assert_eq!(decode_reset_reply(&w).unwrap(), Some(mac));
        w[0] = MSG_RESET | MSGTYPE_NACK;
        assert_eq!(decode_reset_reply(&w).unwrap(), None);
        let zero = [MSG_RESET | MSGTYPE_ACK, 0, 0];
        assert_eq!(decode_reset_reply(&zero).unwrap(), None);
        assert!(matches!(
            decode_reset_reply(&[MSG_SET_LPE | MSGTYPE_ACK, 0, 0]),
            Err(MailboxError::Unexpected { .. })
        ));
    }

    #[test]
    fn replies_are_checked() {
        assert!(check_reply(MSG_SET_LPE, MSG_SET_LPE | MSGTYPE_ACK | MSGTYPE_CTS).is_ok());
        let e = check_reply(MSG_SET_MAC_ADDR, MSG_SET_MAC_ADDR | MSGTYPE_NACK).unwrap_err();
        assert!(e.to_string().contains("ip link set PF vf N mac"), "{e}");
        assert!(matches!(
            check_reply(MSG_SET_VLAN, MSG_RESET | MSGTYPE_ACK),
            Err(MailboxError::Unexpected { .. })
        ));
    }

    /// A PF that acknowledges every message at once and answers with `reply`.
    struct FakePf {
        mbx: RefCell<u32>,
        mem: RefCell<[u32; MBX_WORDS]>,
        reply: u32,
        answer: bool,
        writes: RefCell<Vec<u32>>,
    }

    impl Regs for FakePf {
        fn read32(&self, off: usize) -> u32 {
            if off == V2PMAILBOX {
                let v = *self.mbx.borrow();
                *self.mbx.borrow_mut() &= !MBX_R2C_BITS;
                v
            } else {
                self.mem.borrow()[(off - VMBMEM) / 4]
            }
        }
        fn write32(&self, off: usize, v: u32) {
            if off == V2PMAILBOX {
                let mut m = self.mbx.borrow_mut();
                *m = (*m & !MBX_VFU) | (v & MBX_VFU);
                if v & MBX_REQ != 0 {
                    self.writes.borrow_mut().extend_from_slice(&self.mem.borrow()[..3]);
                    *m |= MBX_PFACK;
                    if self.answer {
                        self.mem.borrow_mut()[0] = self.reply;
                        *m |= MBX_PFSTS;
                    }
                }
            } else {
                self.mem.borrow_mut()[(off - VMBMEM) / 4] = v;
            }
        }
    }

    fn pf(reply: u32, answer: bool) -> FakePf {
        FakePf {
            mbx: RefCell::new(0),
            mem: RefCell::new([0; MBX_WORDS]),
            reply,
            answer,
            writes: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn request_round_trip_with_a_fake_pf() {
        let p = pf(MSG_SET_LPE | MSGTYPE_ACK | MSGTYPE_CTS, true);
        let mut m = Mailbox::new(Duration::from_millis(50));
        m.request(&p, &encode_set_lpe(9018).unwrap()).unwrap();
        assert_eq!(&p.writes.borrow()[..2], &[MSG_SET_LPE, 9018]);
    }

    #[test]
    fn nack_and_silence_are_errors() {
        let p = pf(MSG_SET_MAC_ADDR | MSGTYPE_NACK, true);
        let mut m = Mailbox::new(Duration::from_millis(20));
        let e = m.request(&p, &encode_set_mac(MacAddr::random_local())).unwrap_err();
        assert!(matches!(e, MailboxError::Nack { .. }), "{e}");
        let p = pf(0, false);
        let e = m.request(&p, &encode_set_lpe(1518).unwrap()).unwrap_err();
        assert!(matches!(e, MailboxError::Timeout { .. }), "{e}");
    }
}
