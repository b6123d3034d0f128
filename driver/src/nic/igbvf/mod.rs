//! Poll-mode driver for the Intel 82576 virtual function (8086:10ca) and the I350
//! VF (8086:1520): VF reset and the PF mailbox handshake, advanced rx/tx descriptor
//! rings on both queue pairs, link status, the VF statistics registers and jumbo
//! frames (SET_LPE). No interrupts: every queue is polled.
//!
//! When the PF resets (an MTU change on the PF, a PF driver reload) it stops the
//! VF's queues and signals it through the mailbox (RSTI/RSTD, or a control message).
//! [`Port::link_up`], which the engine calls periodically, notices that and reports
//! the link down; the next `rx_burst` then redoes the VF reset, the RESET handshake,
//! the MAC, SET_LPE and the VLAN and multicast filters set earlier, and restarts
//! the rings.

pub mod mbx;
pub mod regs;
pub mod ring;

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mem::DmaMemory;
use crate::mempool::{Mempool, PacketBuf};
use crate::nic::{NicError, Regs, VfioPortConfig};
use crate::pci::Sysfs;
use crate::port::{MacAddr, Port, PortCounters, PortInfo};
use crate::vfio::{Bar, VfioDevice};

use mbx::Mailbox;
use regs::*;
use ring::{DescRing, RxRing, TxRing, DESC_LEN};

/// 82576 VF device id.
pub const DEVICE_82576_VF: u16 = 0x10ca;
/// I350 VF device id.
pub const DEVICE_I350_VF: u16 = 0x1520;

/// Largest frame the VF receives (without CRC) when buffers allow: 9000-byte MTU
/// plus Ethernet header and one VLAN tag.
pub const MAX_FRAME: usize = 9000 + 14 + 4;

/// How long one mailbox step may take (the PF is a kernel driver answering from
/// its interrupt handler; under an emulator that is slow).
const MBX_TIMEOUT: Duration = Duration::from_secs(3);
/// Least time between two recovery attempts after a PF reset.
const RECOVERY_INTERVAL: Duration = Duration::from_millis(200);

/// The VF's statistics registers (32-bit, wrapping, never reset by software).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgbVfStats {
    /// Good packets received.
    pub rx_packets: u32,
    /// Good octets received.
    pub rx_bytes: u32,
    /// Good packets transmitted.
    pub tx_packets: u32,
    /// Good octets transmitted.
    pub tx_bytes: u32,
    /// Multicast packets received.
    pub rx_multicast: u32,
}

/// An igbvf port: one VF owned through VFIO.
pub struct IgbVf {
    name: String,
    mac: MacAddr,
    queues: u16,
    rx: Vec<RxRing>,
    tx: Vec<TxRing>,
    counters: Arc<PortCounters>,
    mbx: Mailbox,
    bsize_kib: u32,
    max_frame: u32,
    /// Set by `link_up` when the PF signalled a reset; cleared by a recovery.
    needs_reset: Cell<bool>,
    last_recovery: Instant,
    resets: u64,
    /// VLAN filters and multicast list asked for, replayed after a PF reset.
    vlans: Vec<u16>,
    multicast: Vec<MacAddr>,
    bar: Bar,
    // Dropped after the rings (their buffers) and the BAR; the device (and its DMA
    // mappings) go last but one, the ring memory last.
    device: VfioDevice,
    _ring_mem: DmaMemory,
    _pool: Mempool,
}

impl std::fmt::Debug for IgbVf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgbVf")
            .field("name", &self.name)
            .field("pci", &self.device.addr())
            .field("mac", &self.mac)
            .field("queues", &self.queues)
            .finish()
    }
}

impl Regs for Bar {
    #[inline(always)]
    fn read32(&self, off: usize) -> u32 {
        Bar::read32(self, off)
    }
    #[inline(always)]
    fn write32(&self, off: usize, v: u32) {
        Bar::write32(self, off, v)
    }
}

/// The MAC the port uses, and whether it must be sent to the PF (SET_MAC_ADDR):
/// the configured one, else the one the PF assigned in its RESET reply, else (the
/// PF NACKed: none assigned) a random locally administered one.
pub fn choose_mac(configured: Option<MacAddr>, pf_assigned: Option<MacAddr>) -> (MacAddr, bool) {
    match (configured, pf_assigned) {
        (Some(m), Some(pf)) if m == pf => (m, false),
        (Some(m), _) => (m, true),
        (None, Some(pf)) => (pf, false),
        (None, None) => (MacAddr::random_local(), true),
    }
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

impl IgbVf {
    /// Takes the VF at `cfg.pci` (bound to vfio-pci), resets it, asks its PF for
    /// its MAC (or sets `cfg.mac`), and starts `cfg.queues` queue pairs posting
    /// buffers from `pool`, whose memory is mapped for the device's DMA.
    pub fn open(cfg: &VfioPortConfig, pool: Mempool, sysfs: &Sysfs) -> Result<Self, NicError> {
        if cfg.queues == 0 || cfg.queues > MAX_QUEUES {
            return Err(NicError::Config(format!(
                "igbvf has 1 or 2 queue pairs, not {}",
                cfg.queues
            )));
        }
        let ring_size = cfg.ring_size;
        if !ring_size.is_power_of_two() || !(8..=4096).contains(&ring_size) {
            return Err(NicError::Config(format!(
                "ring size {ring_size} must be a power of two in 8..=4096"
            )));
        }
        let mut device = VfioDevice::open(sysfs, cfg.pci)?;
        // A function-level reset stops whatever the previous owner left running.
        let function_reset = device.reset_at_open();
        device.enable_bus_master()?;
        let bar = device.map_bar(0)?;
        if bar.len() < BAR0_MIN_LEN {
            return Err(NicError::Device(format!(
                "BAR0 is {} bytes, an igb VF has {BAR0_MIN_LEN}",
                bar.len()
            )));
        }
        device.map_dma(pool.memory())?;
        let per_ring = ring_size as usize * DESC_LEN;
        let ring_mem = DmaMemory::with_small_pages(per_ring * 2 * cfg.queues as usize)?;
        device.map_dma(&ring_mem)?;

        let mut mbx = Mailbox::new(MBX_TIMEOUT);
        let pf_mac = Self::reset(&bar, &mut mbx)?;
        let (mac, set) = choose_mac(cfg.mac, pf_mac);
        if set {
            mbx.request(&bar, &mbx::encode_set_mac(mac))?;
        }
        // Buffers: the usable room of one pool buffer, in whole KiB for SRRCTL.
        let room = {
            let b = pool.alloc().ok_or(NicError::Config("the mempool is empty".into()))?;
            b.capacity()
        };
        let bsize_kib = (room / 1024).min(SRRCTL_BSIZEPKT_MASK as usize);
        if bsize_kib < 2 {
            return Err(NicError::Config(format!(
                "packet buffers of {room} bytes are too small for igbvf (at least 2048)"
            )));
        }
        let buf_len = bsize_kib * 1024;
        let max_frame = buf_len.min(MAX_FRAME) as u32;
        if max_frame > 1518 {
            mbx.request(&bar, &mbx::encode_set_lpe(max_frame)?)?;
        }

        let counters = PortCounters::new(cfg.queues);
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        for q in 0..cfg.queues as usize {
            let off = q * 2 * per_ring;
            // SAFETY: ring_mem is page aligned, holds 2 rings per queue, and lives
            // in the port as long as the rings.
            let rdesc = unsafe {
                DescRing::new(
                    std::ptr::NonNull::new(ring_mem.as_ptr().add(off)).expect("not null"),
                    ring_size,
                    ring_mem.iova_at(off),
                )
            };
            // SAFETY: as above, the second ring of the pair.
            let tdesc = unsafe {
                DescRing::new(
                    std::ptr::NonNull::new(ring_mem.as_ptr().add(off + per_ring))
                        .expect("not null"),
                    ring_size,
                    ring_mem.iova_at(off + per_ring),
                )
            };
            let mut r = RxRing::new(rdesc, pool.clone(), buf_len);
            let t = TxRing::new(tdesc);
            Self::start_rx(&bar, q, &mut r, bsize_kib as u32)?;
            Self::start_tx(&bar, q, &t)?;
            rx.push(r);
            tx.push(t);
        }
        tracing::info!(port = %cfg.name, pci = %cfg.pci, %mac, queues = cfg.queues, max_frame,
            link_up = bar.read32(STATUS) & STATUS_LU != 0, function_reset, "igbvf started");
        Ok(Self {
            name: cfg.name.clone(),
            mac,
            queues: cfg.queues,
            rx,
            tx,
            counters,
            mbx,
            bsize_kib: bsize_kib as u32,
            max_frame,
            needs_reset: Cell::new(false),
            last_recovery: Instant::now(),
            resets: 0,
            vlans: Vec::new(),
            multicast: Vec::new(),
            bar,
            device,
            _ring_mem: ring_mem,
            _pool: pool,
        })
    }

    /// VF reset and the RESET handshake; returns the MAC the PF assigned, if any.
    fn reset(bar: &Bar, mbx: &mut Mailbox) -> Result<Option<MacAddr>, NicError> {
        bar.write32(EIMC, u32::MAX);
        let ctrl = bar.read32(CTRL);
        bar.write32(CTRL, ctrl | CTRL_RST);
        std::thread::sleep(Duration::from_millis(10));
        // The PF must not be in reset itself.
        if !wait_for(MBX_TIMEOUT, || !mbx.pf_reset_pending(bar)) {
            return Err(NicError::Device(
                "the PF stays in reset (RSTI): is its interface up (`ip link set PF up`)?".into(),
            ));
        }
        mbx.clear(bar);
        mbx.write_posted(bar, &[mbx::MSG_RESET])?;
        let mut reply = [0u32; 3];
        mbx.read_posted(bar, &mut reply)?;
        Ok(mbx::decode_reset_reply(&reply)?)
    }

    fn start_rx(bar: &Bar, q: usize, r: &mut RxRing, bsize_kib: u32) -> Result<(), NicError> {
        bar.write32(rxdctl(q), 0);
        let d = r.descs();
        bar.write32(rdbal(q), d.iova() as u32);
        bar.write32(rdbah(q), (d.iova() >> 32) as u32);
        bar.write32(rdlen(q), d.byte_len() as u32);
        bar.write32(srrctl(q), bsize_kib | SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN);
        bar.write32(rdh(q), 0);
        bar.write32(rdt(q), 0);
        let tail = r.fill().ok_or_else(|| {
            NicError::Config("the mempool has too few buffers for the rx rings".into())
        })?;
        bar.write32(rxdctl(q), DCTL_ENABLE);
        if !wait_for(Duration::from_millis(500), || bar.read32(rxdctl(q)) & DCTL_ENABLE != 0) {
            return Err(NicError::Device(format!("rx queue {q} did not enable")));
        }
        bar.write32(rdt(q), tail as u32);
        Ok(())
    }

    fn start_tx(bar: &Bar, q: usize, t: &TxRing) -> Result<(), NicError> {
        bar.write32(txdctl(q), 0);
        let d = t.descs();
        bar.write32(tdbal(q), d.iova() as u32);
        bar.write32(tdbah(q), (d.iova() >> 32) as u32);
        bar.write32(tdlen(q), d.byte_len() as u32);
        bar.write32(tdh(q), 0);
        bar.write32(tdt(q), 0);
        bar.write32(txdctl(q), DCTL_ENABLE);
        if !wait_for(Duration::from_millis(500), || bar.read32(txdctl(q)) & DCTL_ENABLE != 0) {
            return Err(NicError::Device(format!("tx queue {q} did not enable")));
        }
        Ok(())
    }

    /// The VF's own statistics registers.
    pub fn stats(&self) -> IgbVfStats {
        IgbVfStats {
            rx_packets: self.bar.read32(VFGPRC),
            rx_bytes: self.bar.read32(VFGORC),
            tx_packets: self.bar.read32(VFGPTC),
            tx_bytes: self.bar.read32(VFGOTC),
            rx_multicast: self.bar.read32(VFMPRC),
        }
    }

    /// Asks the PF to add (or remove) a VLAN filter.
    pub fn set_vlan(&mut self, vid: u16, add: bool) -> Result<(), NicError> {
        self.mbx.request(&self.bar, &mbx::encode_set_vlan(vid, add)?)?;
        self.vlans.retain(|v| *v != vid);
        if add {
            self.vlans.push(vid);
        }
        Ok(())
    }

    /// Asks the PF to accept these multicast addresses.
    pub fn set_multicast(&mut self, macs: &[MacAddr]) -> Result<(), NicError> {
        let mut w = [0u32; MBX_WORDS];
        let n = mbx::encode_set_multicast(macs, &mut w)?;
        self.mbx.request(&self.bar, &w[..n])?;
        self.multicast = macs.to_vec();
        Ok(())
    }

    /// The PCI address.
    pub fn pci(&self) -> crate::pci::PciAddress {
        self.device.addr()
    }

    /// How many times the port recovered from a PF reset.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Restarts the VF after a PF reset: queues off, VF reset and RESET handshake,
    /// MAC and SET_LPE again, rings refilled and enabled.
    fn recover(&mut self) -> Result<(), NicError> {
        for q in 0..self.queues as usize {
            self.bar.write32(rxdctl(q), 0);
            self.bar.write32(txdctl(q), 0);
        }
        for r in &mut self.rx {
            r.release();
        }
        for t in &mut self.tx {
            t.release();
        }
        let pf_mac = Self::reset(&self.bar, &mut self.mbx)?;
        if pf_mac != Some(self.mac) {
            self.mbx.request(&self.bar, &mbx::encode_set_mac(self.mac))?;
        }
        if self.max_frame > 1518 {
            self.mbx.request(&self.bar, &mbx::encode_set_lpe(self.max_frame)?)?;
        }
        for &vid in &self.vlans {
            self.mbx.request(&self.bar, &mbx::encode_set_vlan(vid, true)?)?;
        }
        if !self.multicast.is_empty() {
            let mut w = [0u32; MBX_WORDS];
            let n = mbx::encode_set_multicast(&self.multicast, &mut w)?;
            self.mbx.request(&self.bar, &w[..n])?;
        }
        for (q, (r, t)) in self.rx.iter_mut().zip(&self.tx).enumerate() {
            Self::start_rx(&self.bar, q, r, self.bsize_kib)?;
            Self::start_tx(&self.bar, q, t)?;
        }
        Ok(())
    }

    #[cold]
    fn try_recover(&mut self) {
        if self.last_recovery.elapsed() < RECOVERY_INTERVAL {
            return;
        }
        self.last_recovery = Instant::now();
        match self.recover() {
            Ok(()) => {
                self.resets += 1;
                self.needs_reset.set(false);
                tracing::warn!(port = %self.name, pci = %self.device.addr(),
                    "the PF was reset: VF restarted");
            }
            Err(e) => {
                self.counters.count_port_error();
                tracing::warn!(port = %self.name, "VF restart after a PF reset failed (will retry): {e}");
            }
        }
    }
}

impl Drop for IgbVf {
    fn drop(&mut self) {
        for q in 0..self.queues as usize {
            self.bar.write32(rxdctl(q), 0);
            self.bar.write32(txdctl(q), 0);
        }
        let ctrl = self.bar.read32(CTRL);
        self.bar.write32(CTRL, ctrl | CTRL_RST);
        let _ = self.bar.read32(FRTIMER);
        let _ = self.device.disable_bus_master();
        for r in &mut self.rx {
            r.release();
        }
        for t in &mut self.tx {
            t.release();
        }
    }
}

impl Port for IgbVf {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> PortInfo {
        PortInfo { kind: "vfio", mac: self.mac, queues: self.queues }
    }

    fn link_up(&self) -> bool {
        // Nothing is in flight on the mailbox outside open/set_* (which take &mut
        // self on this same thread), so any PF notification here is unsolicited: a
        // reset (RSTI/RSTD) or a control message, which the PF sends when it resets.
        let mb = self.bar.read32(V2PMAILBOX);
        if mb & (MBX_RSTI | MBX_RSTD | MBX_PFSTS) != 0 {
            self.needs_reset.set(true);
        }
        !self.needs_reset.get() && self.bar.read32(STATUS) & STATUS_LU != 0
    }

    #[inline]
    fn rx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize {
        if self.needs_reset.get() {
            self.try_recover();
            return 0;
        }
        let Some(r) = self.rx.get_mut(queue as usize) else { return 0 };
        let before = bufs.len();
        if let Some(tail) = r.rx(bufs, max, self.counters.queue(queue)) {
            self.bar.write32(rdt(queue as usize), tail as u32);
        }
        bufs.len() - before
    }

    #[inline]
    fn tx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>) -> usize {
        let Some(t) = self.tx.get_mut(queue as usize) else { return 0 };
        let before = bufs.len();
        if let Some(tail) = t.tx(bufs, self.counters.queue(queue)) {
            self.bar.write32(tdt(queue as usize), tail as u32);
        }
        before - bufs.len()
    }

    fn counters(&self) -> Arc<PortCounters> {
        self.counters.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_choice() {
        let pf = MacAddr([0x02, 0, 0, 0, 0, 1]);
        let mine = MacAddr([0x02, 0, 0, 0, 0, 2]);
        assert_eq!(choose_mac(None, Some(pf)), (pf, false));
        assert_eq!(choose_mac(Some(mine), Some(pf)), (mine, true));
        assert_eq!(choose_mac(Some(pf), Some(pf)), (pf, false));
        assert_eq!(choose_mac(Some(mine), None), (mine, true));
        let (m, set) = choose_mac(None, None);
        assert!(set);
        assert_eq!(m.0[0] & 0x03, 0x02, "random, locally administered, unicast: {m}");
    }

    #[test]
    fn register_offsets_match_the_datasheet() {
        assert_eq!((rdbal(0), rdt(0), srrctl(1), rxdctl(1)), (0x2800, 0x2818, 0x290c, 0x2928));
        assert_eq!((tdbal(0), tdt(1), txdctl(0)), (0x3800, 0x3918, 0x3828));
        assert_eq!((V2PMAILBOX, VMBMEM, VFGPRC, VFGOTC), (0x0c40, 0x0800, 0x0f10, 0x0f34));
    }
}
