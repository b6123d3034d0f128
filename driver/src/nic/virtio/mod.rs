//! Poll-mode driver for a modern virtio-net PCI function (1af4:1041) owned through
//! VFIO: what vDPA-capable NICs expose as VFs and what cloud VMs have. Capability
//! parsing, feature negotiation (VERSION_1, ACCESS_PLATFORM, MAC, STATUS, MRG_RXBUF,
//! and MQ with CTRL_VQ when more than one queue pair is configured and the device
//! offers them), one rx and one tx split virtqueue per queue pair in DMA memory, and
//! notifications only when the device asks for them (used ring flags). No
//! interrupts.
//!
//! Multiqueue: queue pair `i` is virtqueues `2i` (rx) and `2i + 1` (tx); the control
//! virtqueue is `2 * max_virtqueue_pairs` (the device's limit, not the pairs used).
//! After DRIVER_OK the driver sends `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET` on the control
//! queue ([`ctrl`]); until the device acknowledges it only the first pair carries
//! traffic, so `open` fails when the device refuses.

pub mod ctrl;
pub mod regs;
pub mod ring;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mem::DmaMemory;
use crate::mempool::{Mempool, PacketBuf};
use crate::nic::{NicError, VfioPortConfig};
use crate::pci::Sysfs;
use crate::port::{MacAddr, Port, PortCounters, PortInfo};
use crate::vfio::{Bar, VfioDevice};

use ctrl::CtrlQueue;
use regs::*;
use ring::{RxQueue, SplitQueue, TxQueue};

/// Where one virtio structure lives: BAR, offset, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapRegion {
    /// BAR index (0..6).
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

/// The virtio structures a device's capabilities point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioCaps {
    /// Common configuration.
    pub common: CapRegion,
    /// Notification area.
    pub notify: CapRegion,
    /// Bytes between the notify addresses of consecutive `queue_notify_off` values.
    pub notify_multiplier: u32,
    /// Device-specific configuration.
    pub device: CapRegion,
}

/// Walks the capability list of a 256-byte config-space image. Every pointer and
/// length is checked; a loop or a pointer outside config space is an error.
pub fn parse_caps(cfg: &[u8; 256]) -> Result<VirtioCaps, String> {
    let rd16 = |o: usize| u16::from_le_bytes([cfg[o], cfg[o + 1]]);
    let rd32 = |o: usize| u32::from_le_bytes([cfg[o], cfg[o + 1], cfg[o + 2], cfg[o + 3]]);
    if rd16(PCI_STATUS as usize) & PCI_STATUS_CAP_LIST == 0 {
        return Err("the device has no PCI capability list".into());
    }
    let (mut common, mut notify, mut device, mut mult) = (None, None, None, 0);
    let mut ptr = cfg[PCI_CAP_PTR as usize] as usize & !3;
    let mut hops = 0;
    while ptr != 0 {
        hops += 1;
        if !(0x40..=256 - 16).contains(&ptr) || hops > 48 {
            return Err(format!("bad capability pointer {ptr:#x}"));
        }
        let (id, next, len) = (cfg[ptr], cfg[ptr + 1] as usize & !3, cfg[ptr + 2] as usize);
        if id == PCI_CAP_ID_VNDR && len >= 16 {
            let region =
                CapRegion { bar: cfg[ptr + 4], offset: rd32(ptr + 8), length: rd32(ptr + 12) };
            if region.bar > 5 {
                return Err(format!("virtio capability at {ptr:#x} names BAR{}", region.bar));
            }
            match cfg[ptr + 3] {
                CAP_COMMON if common.is_none() => common = Some(region),
                CAP_NOTIFY if notify.is_none() => {
                    if len < 20 || ptr + 20 > 256 {
                        return Err("notify capability too short".into());
                    }
                    mult = rd32(ptr + 16);
                    notify = Some(region);
                }
                CAP_DEVICE if device.is_none() => device = Some(region),
                _ => {}
            }
        }
        ptr = next;
    }
    let common = common.ok_or("no common configuration capability (not a modern virtio device)")?;
    if (common.length as usize) < COMMON_LEN {
        return Err(format!("common configuration is {} bytes, want {COMMON_LEN}", common.length));
    }
    let notify = notify.ok_or("no notification capability")?;
    let device = device.ok_or("no device configuration capability")?;
    if device.length < 10 {
        return Err(format!("device configuration is {} bytes, want 10", device.length));
    }
    Ok(VirtioCaps { common, notify, notify_multiplier: mult, device })
}

/// The features podwire accepts out of those `offered` for `pairs` queue pairs;
/// errors when a required one is missing. MQ and CTRL_VQ are taken only for more
/// than one pair (and both are then required).
pub fn negotiate(offered: u64, pairs: u16) -> Result<u64, String> {
    if offered & F_VERSION_1 == 0 {
        return Err("the device does not offer VIRTIO_F_VERSION_1 (a legacy device)".into());
    }
    let mut wanted = F_VERSION_1 | F_ACCESS_PLATFORM | NET_F_MAC | NET_F_STATUS | NET_F_MRG_RXBUF;
    if pairs > 1 {
        let mq = NET_F_MQ | NET_F_CTRL_VQ;
        if offered & mq != mq {
            return Err(format!(
                "{pairs} queue pairs need multiqueue, but the device does not offer \
                 VIRTIO_NET_F_MQ and VIRTIO_NET_F_CTRL_VQ (QEMU: virtio-net-pci mq=on with a \
                 multiqueue netdev); use queues = 1"
            ));
        }
        wanted |= mq;
    }
    Ok(offered & wanted)
}

/// The ring size to use: the configured one, or the largest power of two the
/// device allows (`max`, its queue_size register) when that is smaller. `max` is
/// device input: any value, 0 excepted by the caller, gives a power of two.
pub fn queue_size(configured: u16, max: u16) -> u16 {
    configured.min(1u16 << (15 - max.max(1).leading_zeros()))
}

/// Checks `pairs` against the device's `max_virtqueue_pairs` (device input: the
/// spec's range is 1..=0x8000).
pub fn check_pairs(pairs: u16, max_pairs: u16) -> Result<(), String> {
    if !(1..=0x8000).contains(&max_pairs) {
        return Err(format!("the device reports max_virtqueue_pairs = {max_pairs}"));
    }
    if pairs > max_pairs {
        return Err(format!("{pairs} queue pairs configured, the device has at most {max_pairs}"));
    }
    Ok(())
}

/// A virtio-net port: one modern virtio-net function owned through VFIO.
pub struct VirtioNet {
    name: String,
    mac: MacAddr,
    features: u64,
    /// One per queue pair, with the notify offset of its virtqueue.
    rx: Vec<(RxQueue, usize)>,
    tx: Vec<(TxQueue, usize)>,
    counters: Arc<PortCounters>,
    caps: VirtioCaps,
    bars: Vec<Option<Bar>>,
    device: VfioDevice,
    /// Kept so its memory stays with the port (used only while opening).
    _ctrl: Option<CtrlQueue>,
    _ring_mem: DmaMemory,
    _pool: Mempool,
}

impl std::fmt::Debug for VirtioNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNet")
            .field("name", &self.name)
            .field("pci", &self.device.addr())
            .field("mac", &self.mac)
            .field("features", &format_args!("{:#x}", self.features))
            .finish()
    }
}

/// Register access to one virtio structure.
struct View<'a> {
    bar: &'a Bar,
    base: usize,
}

impl View<'_> {
    fn r8(&self, o: usize) -> u8 {
        self.bar.read8(self.base + o)
    }
    fn w8(&self, o: usize, v: u8) {
        self.bar.write8(self.base + o, v)
    }
    fn r16(&self, o: usize) -> u16 {
        self.bar.read16(self.base + o)
    }
    fn w16(&self, o: usize, v: u16) {
        self.bar.write16(self.base + o, v)
    }
    fn r32(&self, o: usize) -> u32 {
        self.bar.read32(self.base + o)
    }
    fn w32(&self, o: usize, v: u32) {
        self.bar.write32(self.base + o, v)
    }
    fn w64(&self, o: usize, v: u64) {
        self.w32(o, v as u32);
        self.w32(o + 4, (v >> 32) as u32);
    }
}

fn view<'a>(bars: &'a [Option<Bar>], r: &CapRegion) -> View<'a> {
    View { bar: bars[r.bar as usize].as_ref().expect("mapped in open"), base: r.offset as usize }
}

impl VirtioNet {
    /// Takes the virtio-net function at `cfg.pci` (bound to vfio-pci), negotiates
    /// features and starts `cfg.queues` queue pairs posting buffers from `pool`.
    pub fn open(cfg: &VfioPortConfig, pool: Mempool, sysfs: &Sysfs) -> Result<Self, NicError> {
        let pairs = cfg.queues;
        if pairs == 0 {
            return Err(NicError::Config("a virtio-net port needs at least 1 queue pair".into()));
        }
        let mut device = VfioDevice::open(sysfs, cfg.pci)?;
        // Stops whatever the previous owner left running; the status reset below too.
        let function_reset = device.reset_at_open();
        device.enable_bus_master()?;
        let mut image = [0u8; 256];
        device.read_config(0, &mut image)?;
        let caps = parse_caps(&image).map_err(NicError::Device)?;
        let mut bars: Vec<Option<Bar>> = (0..6).map(|_| None).collect();
        for r in [caps.common, caps.notify, caps.device] {
            if bars[r.bar as usize].is_none() {
                bars[r.bar as usize] = Some(device.map_bar(r.bar as u32)?);
            }
            let bar_len = bars[r.bar as usize].as_ref().map_or(0, |b| b.len());
            if r.offset as usize + r.length as usize > bar_len {
                return Err(NicError::Device(format!(
                    "a virtio structure ({r:?}) lies outside BAR{} ({bar_len} bytes)",
                    r.bar
                )));
            }
        }
        device.map_dma(pool.memory())?;
        let common = view(&bars, &caps.common);
        // Reset, then ACKNOWLEDGE | DRIVER.
        common.w8(DEVICE_STATUS, 0);
        let start = Instant::now();
        while common.r8(DEVICE_STATUS) != 0 {
            if start.elapsed() > Duration::from_secs(2) {
                return Err(NicError::Device("the device did not finish its reset".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        common.w8(DEVICE_STATUS, STATUS_ACKNOWLEDGE);
        common.w8(DEVICE_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        common.w32(DEVICE_FEATURE_SELECT, 0);
        let lo = common.r32(DEVICE_FEATURE) as u64;
        common.w32(DEVICE_FEATURE_SELECT, 1);
        let offered = lo | (common.r32(DEVICE_FEATURE) as u64) << 32;
        let features = negotiate(offered, pairs).map_err(NicError::Config)?;
        let dev = view(&bars, &caps.device);
        // The control queue sits after the device's largest number of pairs.
        let ctrl_index = if features & NET_F_MQ != 0 {
            let max_pairs = dev.r16(NET_CFG_MAX_PAIRS);
            check_pairs(pairs, max_pairs).map_err(NicError::Config)?;
            Some(2 * max_pairs)
        } else {
            None
        };
        common.w32(DRIVER_FEATURE_SELECT, 0);
        common.w32(DRIVER_FEATURE, features as u32);
        common.w32(DRIVER_FEATURE_SELECT, 1);
        common.w32(DRIVER_FEATURE, (features >> 32) as u32);
        let st = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        common.w8(DEVICE_STATUS, st);
        if common.r8(DEVICE_STATUS) & STATUS_FEATURES_OK == 0 {
            common.w8(DEVICE_STATUS, STATUS_FAILED);
            return Err(NicError::Device(format!(
                "the device refused features {features:#x} (offered {offered:#x})"
            )));
        }
        let num_queues = common.r16(NUM_QUEUES);
        let needed = ctrl_index.map_or(2 * pairs, |c| c + 1);
        if num_queues < needed {
            return Err(NicError::Device(format!(
                "the device has {num_queues} virtqueues, {needed} needed for {pairs} queue pair(s)"
            )));
        }
        common.w16(MSIX_CONFIG, NO_VECTOR);

        // Virtqueues 0..2*pairs, then the control queue; its command buffer last.
        let size = cfg.ring_size;
        let qbytes = SplitQueue::bytes(size).next_multiple_of(4096);
        let nq = 2 * pairs as usize + ctrl_index.is_some() as usize;
        let ring_mem = DmaMemory::with_small_pages(nq * qbytes + 4096)?;
        device.map_dma(&ring_mem)?;
        let mut queues = Vec::with_capacity(nq);
        let indexes = (0..2 * pairs).chain(ctrl_index);
        for (slot, q) in indexes.enumerate() {
            common.w16(QUEUE_SELECT, q);
            let max = common.r16(QUEUE_SIZE);
            if max == 0 {
                return Err(NicError::Device(format!("virtqueue {q} does not exist")));
            }
            let n = if Some(q) == ctrl_index { queue_size(16, max) } else { queue_size(size, max) };
            let off = slot * qbytes;
            // SAFETY: ring_mem holds nq queues of qbytes each (qbytes >= bytes(n) as
            // n <= size), page aligned, and lives in the port as long as the queues.
            let sq = unsafe {
                SplitQueue::new(
                    std::ptr::NonNull::new(ring_mem.as_ptr().add(off)).expect("not null"),
                    ring_mem.iova_at(off),
                    n,
                )
            };
            common.w16(QUEUE_SIZE, n);
            common.w16(QUEUE_MSIX_VECTOR, NO_VECTOR);
            common.w64(QUEUE_DESC, sq.desc_iova());
            common.w64(QUEUE_DRIVER, sq.avail_iova());
            common.w64(QUEUE_DEVICE, sq.used_iova());
            let noff = common.r16(QUEUE_NOTIFY_OFF) as usize * caps.notify_multiplier as usize;
            if noff + 2 > caps.notify.length as usize {
                return Err(NicError::Device(format!(
                    "virtqueue {q}'s notify address {noff:#x} lies outside the notify area"
                )));
            }
            common.w16(QUEUE_ENABLE, 1);
            queues.push((sq, caps.notify.offset as usize + noff));
        }
        let mut ctrl = match ctrl_index {
            Some(_) => {
                let (cq, noff) = queues.pop().expect("control queue set up above");
                let off = nq * qbytes;
                // SAFETY: the last page of ring_mem is the command buffer, used only
                // by this control queue and the device; it lives as long as the port.
                let buf = unsafe { ring_mem.as_ptr().add(off) };
                let buf = std::ptr::NonNull::new(buf).expect("not null");
                // SAFETY: as above.
                Some((unsafe { CtrlQueue::new(cq, buf, ring_mem.iova_at(off)) }, noff))
            }
            None => None,
        };
        let mut rx = Vec::with_capacity(pairs as usize);
        let mut tx = Vec::with_capacity(pairs as usize);
        let mut it = queues.into_iter();
        while let (Some((rq, rn)), Some((tq, tn))) = (it.next(), it.next()) {
            let mut r = RxQueue::new(rq, pool.clone());
            if !r.fill() {
                return Err(NicError::Config(
                    "the mempool has too few buffers (or less than 12 bytes of headroom) for \
                     the virtio rx queues"
                        .into(),
                ));
            }
            rx.push((r, rn));
            tx.push((TxQueue::new(tq), tn));
        }
        common.w8(DEVICE_STATUS, st | STATUS_DRIVER_OK);
        if common.r8(DEVICE_STATUS) & (STATUS_NEEDS_RESET | STATUS_FAILED) != 0 {
            return Err(NicError::Device("the device needs a reset right after start".into()));
        }
        let notify_bar = bars[caps.notify.bar as usize].as_ref().expect("mapped");
        if let Some((cq, noff)) = ctrl.as_mut() {
            let q = ctrl_index.expect("control queue index");
            cq.set_queue_pairs(pairs, || notify_bar.write16(*noff, q)).map_err(NicError::Device)?;
        }
        let mac = match cfg.mac {
            Some(m) => m,
            None if features & NET_F_MAC != 0 => {
                let mut m = [0u8; 6];
                for (i, b) in m.iter_mut().enumerate() {
                    *b = dev.r8(NET_CFG_MAC + i);
                }
                MacAddr(m)
            }
            None => MacAddr::random_local(),
        };
        // Kick every rx queue once so the device sees the posted buffers.
        for (i, (_, noff)) in rx.iter().enumerate() {
            notify_bar.write16(*noff, 2 * i as u16);
        }
        tracing::info!(port = %cfg.name, pci = %cfg.pci, %mac, features = format_args!("{features:#x}"),
            ring = size, queue_pairs = pairs, function_reset, "virtio-net started");
        Ok(Self {
            name: cfg.name.clone(),
            mac,
            features,
            rx,
            tx,
            counters: PortCounters::new(pairs),
            caps,
            bars,
            device,
            _ctrl: ctrl.map(|(c, _)| c),
            _ring_mem: ring_mem,
            _pool: pool,
        })
    }

    /// The negotiated feature bits.
    pub fn features(&self) -> u64 {
        self.features
    }

    #[inline(always)]
    fn notify(&self, off: usize, q: u16) {
        if let Some(b) = &self.bars[self.caps.notify.bar as usize] {
            b.write16(off, q);
        }
    }
}

impl Drop for VirtioNet {
    fn drop(&mut self) {
        view(&self.bars, &self.caps.common).w8(DEVICE_STATUS, 0);
        let _ = self.device.disable_bus_master();
        for (r, _) in &mut self.rx {
            r.release();
        }
        for (t, _) in &mut self.tx {
            t.release();
        }
    }
}

impl Port for VirtioNet {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> PortInfo {
        PortInfo { kind: "vfio", mac: self.mac, queues: self.rx.len() as u16 }
    }

    fn link_up(&self) -> bool {
        if self.features & NET_F_STATUS == 0 {
            return true;
        }
        view(&self.bars, &self.caps.device).r16(NET_CFG_STATUS) & NET_S_LINK_UP != 0
    }

    #[inline]
    fn rx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize {
        let Some((rxq, noff)) = self.rx.get_mut(queue as usize) else {
            return 0;
        };
        let before = bufs.len();
        if rxq.rx(bufs, max, self.counters.queue(queue)) {
            let noff = *noff;
            self.notify(noff, 2 * queue);
        }
        bufs.len() - before
    }

    #[inline]
    fn tx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>) -> usize {
        let Some((txq, noff)) = self.tx.get_mut(queue as usize) else {
            return 0;
        };
        let before = bufs.len();
        if txq.tx(bufs, self.counters.queue(queue)) {
            let noff = *noff;
            self.notify(noff, 2 * queue + 1);
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

    /// A config image with QEMU's modern virtio-pci capability layout (BAR4).
    fn image() -> [u8; 256] {
        let mut c = [0u8; 256];
        c[PCI_STATUS as usize] = PCI_STATUS_CAP_LIST as u8;
        c[PCI_CAP_PTR as usize] = 0x40;
        let mut put = |at: usize, next: u8, ty: u8, off: u32, len: u32, extra: Option<u32>| {
            c[at] = PCI_CAP_ID_VNDR;
            c[at + 1] = next;
            c[at + 2] = if extra.is_some() { 20 } else { 16 };
            c[at + 3] = ty;
            c[at + 4] = 4;
            c[at + 8..at + 12].copy_from_slice(&off.to_le_bytes());
            c[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
            if let Some(m) = extra {
                c[at + 16..at + 20].copy_from_slice(&m.to_le_bytes());
            }
        };
        put(0x40, 0x54, CAP_COMMON, 0, 0x1000, None);
        put(0x54, 0x68, CAP_ISR, 0x1000, 0x1000, None);
        put(0x68, 0x7c, CAP_DEVICE, 0x2000, 0x1000, None);
        put(0x7c, 0, CAP_NOTIFY, 0x3000, 0x1000, Some(4));
        c
    }

    #[test]
    fn capabilities_parse() {
        let caps = parse_caps(&image()).unwrap();
        assert_eq!(caps.common, CapRegion { bar: 4, offset: 0, length: 0x1000 });
        assert_eq!(caps.notify.offset, 0x3000);
        assert_eq!(caps.notify_multiplier, 4);
        assert_eq!(caps.device.offset, 0x2000);
    }

    #[test]
    fn capability_errors() {
        let mut c = image();
        c[0x7c + 1] = 0x40; // loop back to the first capability
        assert!(parse_caps(&c).unwrap_err().contains("bad capability pointer"));
        let mut c = image();
        c[0x41] = 0xf8; // past the end of config space
        assert!(parse_caps(&c).is_err());
        let mut c = image();
        c[0x40 + 4] = 7; // BAR7
        assert!(parse_caps(&c).unwrap_err().contains("BAR7"));
        let mut c = image();
        c[PCI_STATUS as usize] = 0;
        assert!(parse_caps(&c).unwrap_err().contains("no PCI capability list"));
        let mut c = image();
        c[0x40 + 3] = CAP_ISR; // no common config
        assert!(parse_caps(&c).unwrap_err().contains("common configuration"));
    }

    #[test]
    fn queue_size_is_a_power_of_two_within_the_device_limit() {
        assert_eq!(queue_size(512, 1024), 512);
        assert_eq!(queue_size(512, 256), 256);
        assert_eq!(queue_size(512, 300), 256);
        assert_eq!(queue_size(512, 0xffff), 512);
        assert_eq!(queue_size(4096, 0xffff), 4096);
        assert_eq!(queue_size(512, 1), 1);
    }

    #[test]
    fn feature_negotiation() {
        let offered = F_VERSION_1 | F_ACCESS_PLATFORM | NET_F_MAC | NET_F_CTRL_VQ | NET_F_MQ;
        let f = negotiate(offered, 1).unwrap();
        assert_eq!(f, F_VERSION_1 | F_ACCESS_PLATFORM | NET_F_MAC);
        let f = negotiate(offered, 2).unwrap();
        assert_eq!(f, F_VERSION_1 | F_ACCESS_PLATFORM | NET_F_MAC | NET_F_CTRL_VQ | NET_F_MQ);
        assert!(negotiate(NET_F_MAC, 1).unwrap_err().contains("VERSION_1"));
        let e = negotiate(F_VERSION_1 | NET_F_MQ, 2).unwrap_err();
        assert!(e.contains("VIRTIO_NET_F_CTRL_VQ") && e.contains("queues = 1"), "{e}");
    }

    #[test]
    fn queue_pairs_within_the_device_limit() {
        assert_eq!(check_pairs(2, 2), Ok(()));
        assert_eq!(check_pairs(1, 8), Ok(()));
        assert!(check_pairs(4, 2).unwrap_err().contains("at most 2"));
        assert!(check_pairs(2, 0).unwrap_err().contains("max_virtqueue_pairs = 0"));
        assert!(check_pairs(2, 0x8001).is_err());
    }
}
