//! The vhost-user-net device: what one connection negotiated and the state of its
//! vrings, driven by the frontend's messages on the control thread. Rings that are
//! complete and enabled are handed to the worker through [`Handoff`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use podwire_driver::MacAddr;

use crate::conn::{Connection, Message};
use crate::error::ProtocolError;
use crate::handoff::{Change, Handoff, Ring};
use crate::memory::GuestMemory;
use crate::proto::{self, feat, pfeat, req, VringAddr, FLAG_NEED_REPLY};
use crate::ring::packed::PackedRing;
use crate::ring::split::SplitRing;
use crate::ring::{RingParams, MAX_QUEUE_SIZE};

/// VIRTIO_NET_S_LINK_UP in the config space status.
const NET_S_LINK_UP: u16 = 1;

/// Features podwire offers for a port with `queues` queue pairs.
pub fn offered_features(queues: u16) -> u64 {
    let mut f = feat::F_VERSION_1
        | feat::NET_F_MRG_RXBUF
        | feat::NET_F_MAC
        | feat::NET_F_STATUS
        | feat::RING_F_EVENT_IDX
        | feat::RING_F_INDIRECT_DESC
        | feat::F_RING_PACKED
        | feat::F_IN_ORDER
        | feat::VHOST_USER_F_PROTOCOL_FEATURES;
    if queues > 1 {
        f |= feat::NET_F_MQ;
    }
    f
}

/// Protocol features podwire offers.
pub const OFFERED_PROTOCOL_FEATURES: u64 =
    pfeat::MQ | pfeat::REPLY_ACK | pfeat::CONFIG | pfeat::STATUS | pfeat::RESET_DEVICE;

#[derive(Default)]
struct Vring {
    num: u32,
    addr: Option<VringAddr>,
    kicked: bool,
    enabled: bool,
    call: Option<Arc<OwnedFd>>,
    /// Handed to the worker.
    running: bool,
}

/// Makes a frontend's call (interrupt) fd safe for the worker to write to.
///
/// The worker signals the frontend with a write() on its datapath, so that write must
/// never block. A hostile frontend could otherwise hand over a pipe nobody reads, or
/// a blocking eventfd whose counter it pushed to the maximum itself: the first
/// interrupt then hangs the worker, and with it every port that worker polls (found
/// by tests/vhost_hostile.rs). So the fd must be an eventfd (what vhost-user
/// specifies), and it is switched to non-blocking; DPDK and QEMU create theirs
/// non-blocking already, so nothing changes for them.
///
/// Not covered: O_NONBLOCK lives in the open file description the frontend shares, so
/// a frontend that clears it again afterwards *and* saturates the counter can still
/// block the worker. Closing that needs the write moved off the worker thread.
fn checked_call_fd(fd: OwnedFd) -> Result<OwnedFd, ProtocolError> {
    let raw = fd.as_raw_fd();
    let target = std::fs::read_link(format!("/proc/self/fd/{raw}"))?;
    if target.as_os_str() != "anon_inode:[eventfd]" {
        return Err(ProtocolError::BadVring(format!(
            "call fd is {} rather than an eventfd",
            target.display()
        )));
    }
    // SAFETY: fcntl on an fd we own; F_GETFL has no pointer arguments.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    // SAFETY: as above; F_SETFL takes an int.
    if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(ProtocolError::Io(std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// One connection's device state.
pub struct Device {
    name: String,
    mac: MacAddr,
    queues: u16,
    features: u64,
    protocol_features: u64,
    status: u8,
    mem: Option<Arc<GuestMemory>>,
    vrings: Vec<Vring>,
    handoff: Arc<Handoff>,
}

impl Device {
    /// A fresh device for a new connection.
    pub fn new(name: &str, mac: MacAddr, queues: u16, handoff: Arc<Handoff>) -> Self {
        let vrings = (0..handoff.bases.len()).map(|_| Vring::default()).collect();
        Self {
            name: name.to_string(),
            mac,
            queues,
            features: 0,
            protocol_features: 0,
            status: 0,
            mem: None,
            vrings,
            handoff,
        }
    }

    /// Whether the frontend shrank its memory under us.
    pub fn memory_faulted(&self) -> bool {
        self.mem.as_ref().is_some_and(|m| m.faulted())
    }

    fn hdr_len(&self) -> usize {
        if self.features & (feat::NET_F_MRG_RXBUF | feat::F_VERSION_1) != 0 {
            12
        } else {
            10
        }
    }

    fn vring(&mut self, index: u32) -> Result<&mut Vring, ProtocolError> {
        let n = self.vrings.len();
        self.vrings
            .get_mut(index as usize)
            .ok_or_else(|| ProtocolError::BadVring(format!("vring {index} (device has {n})")))
    }

    /// Handles one message, replying where the protocol says so.
    pub fn handle(&mut self, mut msg: Message, conn: &mut Connection) -> Result<(), ProtocolError> {
        let code = msg.hdr.request;
        let need_ack =
            msg.hdr.flags & FLAG_NEED_REPLY != 0 && self.protocol_features & pfeat::REPLY_ACK != 0;
        let payload = std::mem::take(&mut msg.payload);
        let p = &payload[..];
        let mut replied = false;
        let result: Result<(), ProtocolError> = (|| {
            match code {
                req::GET_FEATURES => {
                    conn.reply(code, &offered_features(self.queues).to_le_bytes())?;
                    replied = true;
                }
                req::SET_FEATURES => {
                    let f = proto::u64_payload(p, "SET_FEATURES")?;
                    let offered = offered_features(self.queues);
                    if f & !offered != 0 {
                        return Err(ProtocolError::Malformed(format!(
                            "features {:#x} not offered",
                            f & !offered
                        )));
                    }
                    if self.vrings.iter().any(|v| v.running) {
                        return Err(ProtocolError::OutOfOrder(
                            "SET_FEATURES on running rings".into(),
                        ));
                    }
                    self.features = f;
                    tracing::debug!(port = %self.name, features = format!("{f:#x}"), "features set");
                }
                req::SET_OWNER => {}
                req::RESET_OWNER | req::RESET_DEVICE => self.reset(),
                req::GET_PROTOCOL_FEATURES => {
                    conn.reply(code, &OFFERED_PROTOCOL_FEATURES.to_le_bytes())?;
                    replied = true;
                }
                req::SET_PROTOCOL_FEATURES => {
                    let f = proto::u64_payload(p, "SET_PROTOCOL_FEATURES")?;
                    self.protocol_features = f & OFFERED_PROTOCOL_FEATURES;
                }
                req::GET_QUEUE_NUM => {
                    conn.reply(code, &(self.queues as u64).to_le_bytes())?;
                    replied = true;
                }
                req::SET_MEM_TABLE => self.set_mem_table(p, &msg.fds)?,
                req::SET_VRING_NUM => {
                    let (i, num) = proto::vring_state(p, "SET_VRING_NUM")?;
                    if num == 0 || num > MAX_QUEUE_SIZE {
                        return Err(ProtocolError::BadVring(format!("size {num}")));
                    }
                    self.vring(i)?.num = num;
                }
                req::SET_VRING_ADDR => {
                    let a = proto::vring_addr(p)?;
                    self.vring(a.index)?.addr = Some(a);
                }
                req::SET_VRING_BASE => {
                    let (i, base) = proto::vring_state(p, "SET_VRING_BASE")?;
                    if self.vring(i)?.running {
                        return Err(ProtocolError::OutOfOrder(
                            "SET_VRING_BASE on a running ring".into(),
                        ));
                    }
                    self.handoff.bases[i as usize].store(base, Ordering::Relaxed);
                }
                req::GET_VRING_BASE => {
                    let (i, _) = proto::vring_state(p, "GET_VRING_BASE")?;
                    self.stop_vring(i as usize, true)?;
                    let base = self.handoff.bases[i as usize].load(Ordering::Acquire);
                    let mut r = [0u8; 8];
                    r[..4].copy_from_slice(&i.to_le_bytes());
                    r[4..].copy_from_slice(&base.to_le_bytes());
                    conn.reply(code, &r)?;
                    replied = true;
                }
                req::SET_VRING_KICK | req::SET_VRING_CALL | req::SET_VRING_ERR => {
                    let v = proto::u64_payload(p, "SET_VRING_*FD")?;
                    let i = (v & proto::VRING_IDX_MASK) as u32;
                    let nofd = v & proto::VRING_NOFD != 0;
                    let mut fds = std::mem::take(&mut msg.fds);
                    if !nofd && fds.len() != 1 {
                        return Err(ProtocolError::Malformed(format!(
                            "vring fd message with {} fds",
                            fds.len()
                        )));
                    }
                    let fd = if nofd { None } else { fds.pop() };
                    // The worker writes to the call fd on its datapath: make sure that
                    // write can never block (see checked_call_fd).
                    let fd = match fd {
                        Some(f) if code == req::SET_VRING_CALL => Some(checked_call_fd(f)?),
                        other => other,
                    };
                    let legacy = self.features & feat::VHOST_USER_F_PROTOCOL_FEATURES == 0;
                    let vr = self.vring(i)?;
                    match code {
                        req::SET_VRING_KICK => {
                            // Poll mode: the kick fd is never read; dropping it is fine.
                            vr.kicked = true;
                            if legacy {
                                vr.enabled = true;
                            }
                        }
                        req::SET_VRING_CALL => {
                            vr.call = fd.map(Arc::new);
                            if vr.running {
                                // Restart the ring so the worker gets the new call fd.
                                self.stop_vring(i as usize, false)?;
                            }
                        }
                        _ => {}
                    }
                    self.start_ready()?;
                }
                req::SET_VRING_ENABLE => {
                    let (i, on) = proto::vring_state(p, "SET_VRING_ENABLE")?;
                    if on > 1 {
                        return Err(ProtocolError::Malformed(format!("enable = {on}")));
                    }
                    self.vring(i)?.enabled = on == 1;
                    if on == 0 {
                        self.stop_vring(i as usize, false)?;
                    }
                    self.start_ready()?;
                }
                req::GET_CONFIG => {
                    let (off, size, flags, _) = proto::config_payload(p)?;
                    let cfg = self.config_space();
                    let mut out = Vec::with_capacity(12 + size as usize);
                    out.extend_from_slice(&off.to_le_bytes());
                    out.extend_from_slice(&size.to_le_bytes());
                    out.extend_from_slice(&flags.to_le_bytes());
                    for k in 0..size as usize {
                        out.push(cfg.get(off as usize + k).copied().unwrap_or(0));
                    }
                    conn.reply(code, &out)?;
                    replied = true;
                }
                req::SET_CONFIG => {
                    // The MAC is podwire's to choose; writes are accepted and ignored.
                    proto::config_payload(p)?;
                }
                req::SET_STATUS => {
                    let s = proto::u64_payload(p, "SET_STATUS")?;
                    self.status = s as u8;
                    if s == 0 {
                        self.reset();
                    }
                }
                req::GET_STATUS => {
                    conn.reply(code, &(self.status as u64).to_le_bytes())?;
                    replied = true;
                }
                req::SEND_RARP | req::NET_SET_MTU => {}
                other => return Err(ProtocolError::Unsupported(other)),
            }
            Ok(())
        })();
        if need_ack && !replied {
            let status: u64 = if result.is_ok() { 0 } else { 1 };
            conn.reply(code, &status.to_le_bytes())?;
        }
        result
    }

    fn config_space(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.mac.0);
        let link = if self.handoff.link.load(Ordering::Relaxed) { NET_S_LINK_UP } else { 0 };
        c[6..8].copy_from_slice(&link.to_le_bytes());
        c[8..10].copy_from_slice(&self.queues.to_le_bytes());
        c[10..12].copy_from_slice(&1500u16.to_le_bytes());
        c
    }

    fn set_mem_table(&mut self, payload: &[u8], fds: &[OwnedFd]) -> Result<(), ProtocolError> {
        let regions = proto::mem_table(payload)?;
        let fds = fds.iter().map(|f| f.try_clone()).collect::<Result<Vec<_>, _>>()?;
        let mem = GuestMemory::map(&regions, fds)?;
        tracing::info!(
            port = %self.name,
            regions = mem.num_regions(),
            mapped_mib = mem.mapped_bytes() >> 20,
            "frontend memory mapped"
        );
        // Rings built on the old table are restarted on the new one.
        let running: Vec<usize> =
            (0..self.vrings.len()).filter(|&i| self.vrings[i].running).collect();
        for &i in &running {
            self.stop_vring(i, false)?;
        }
        self.mem = Some(Arc::new(mem));
        self.start_ready()
    }

    /// Stops vring `i` if the worker has it, waiting until the worker let go.
    /// `for_good`: the frontend stopped it (GET_VRING_BASE) and must kick it again;
    /// otherwise it restarts as soon as it is ready again.
    fn stop_vring(&mut self, i: usize, for_good: bool) -> Result<(), ProtocolError> {
        let v =
            self.vrings.get_mut(i).ok_or_else(|| ProtocolError::BadVring(format!("vring {i}")))?;
        if for_good {
            v.kicked = false;
        }
        if v.running {
            v.running = false;
            self.handoff.submit(vec![Change::Stop(i)]);
        }
        self.update_link();
        Ok(())
    }

    /// Hands every complete, enabled vring that is not running yet to the worker.
    fn start_ready(&mut self) -> Result<(), ProtocolError> {
        let Some(mem) = self.mem.clone() else { return Ok(()) };
        let packed = self.features & feat::F_RING_PACKED != 0;
        let mut changes = Vec::new();
        for i in 0..self.vrings.len() {
            let v = &self.vrings[i];
            if v.running || !v.kicked || !v.enabled || v.num == 0 {
                continue;
            }
            let Some(addr) = v.addr else { continue };
            // The control queue (index 2 * queues) is never polled: frontends that
            // podwire serves handle it themselves.
            if i >= 2 * self.queues as usize {
                continue;
            }
            let params = RingParams {
                mem: mem.clone(),
                size: v.num.min(u16::MAX as u32) as u16,
                hdr_len: self.hdr_len(),
                mrg_rxbuf: self.features & feat::NET_F_MRG_RXBUF != 0,
                event_idx: self.features & feat::RING_F_EVENT_IDX != 0,
                in_order: self.features & feat::F_IN_ORDER != 0,
                call: v.call.clone(),
            };
            let base = self.handoff.bases[i].load(Ordering::Acquire);
            let ring = if packed {
                Ring::Packed(PackedRing::new(params, &addr, base)?)
            } else {
                Ring::Split(SplitRing::new(params, &addr, base as u16)?)
            };
            tracing::info!(
                port = %self.name,
                vring = i,
                size = v.num,
                layout = if packed { "packed" } else { "split" },
                in_order = self.features & feat::F_IN_ORDER != 0,
                "vring started"
            );
            self.vrings[i].running = true;
            changes.push(Change::Start(i, Box::new(ring)));
        }
        self.handoff.submit(changes);
        self.update_link();
        Ok(())
    }

    fn update_link(&self) {
        let up = self.vrings.len() >= 2 && self.vrings[0].running && self.vrings[1].running;
        self.handoff.link.store(up, Ordering::Relaxed);
    }

    /// Stops every ring and forgets what was negotiated.
    pub fn reset(&mut self) {
        let changes: Vec<Change> =
            (0..self.vrings.len()).filter(|&i| self.vrings[i].running).map(Change::Stop).collect();
        self.handoff.submit(changes);
        for v in &mut self.vrings {
            *v = Vring::default();
        }
        for b in self.handoff.bases.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.update_link();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.reset();
    }
}
