//! Poll-mode driver for a modern virtio-net PCI function (1af4:1041) owned through
//! VFIO: what vDPA-capable NICs expose as VFs and what cloud VMs have. Capability
//! parsing, feature negotiation (VERSION_1, ACCESS_PLATFORM, MAC, STATUS, MRG_RXBUF),
//! one rx and one tx split virtqueue in DMA memory, and notifications only when the
//! device asks for them (used ring flags). No interrupts.
//!
//! Multiqueue (MQ) needs the control virtqueue to enable more pairs; podwire does
//! not implement it yet, so a virtio port has one queue pair.

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

/// The features podwire accepts out of those `offered`; errors when a required one
/// is missing.
pub fn negotiate(offered: u64) -> Result<u64, String> {
    if offered & F_VERSION_1 == 0 {
        return Err("the device does not offer VIRTIO_F_VERSION_1 (a legacy device)".into());
    }
    let wanted = F_VERSION_1 | F_ACCESS_PLATFORM | NET_F_MAC | NET_F_STATUS | NET_F_MRG_RXBUF;
    Ok(offered & wanted)
}

/// The ring size to use: the configured one, or the largest power of two the
/// device allows (`max`, its queue_size register) when that is smaller. `max` is
/// device input: any value, 0 excepted by the caller, gives a power of two.
pub fn queue_size(configured: u16, max: u16) -> u16 {
    configured.min(1u16 << (15 - max.max(1).leading_zeros()))
}

/// A virtio-net port: one modern virtio-net function owned through VFIO.
pub struct VirtioNet {
    name: String,
    mac: MacAddr,
    features: u64,
    rx: RxQueue,
    tx: TxQueue,
    notify_rx: usize,
    notify_tx: usize,
    counters: Arc<PortCounters>,
    caps: VirtioCaps,
    bars: Vec<Option<Bar>>,
    device: VfioDevice,
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
    /// features and starts one queue pair posting buffers from `pool`.
    pub fn open(cfg: &VfioPortConfig, pool: Mempool, sysfs: &Sysfs) -> Result<Self, NicError> {
        if cfg.queues != 1 {
            return Err(NicError::Config(format!(
                "a virtio-net port has 1 queue pair in podwire (multiqueue needs the control \
                 queue, not implemented), not {}",
                cfg.queues
            )));
        }
        let mut device = VfioDevice::open(sysfs, cfg.pci)?;
        let _ = device.reset();
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
        let features = negotiate(offered).map_err(NicError::Device)?;
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
        if common.r16(NUM_QUEUES) < 2 {
            return Err(NicError::Device("the device has fewer than 2 virtqueues".into()));
        }
        common.w16(MSIX_CONFIG, NO_VECTOR);

        let size = cfg.ring_size;
        let qbytes = SplitQueue::bytes(size).next_multiple_of(4096);
        let ring_mem = DmaMemory::with_small_pages(2 * qbytes)?;
        device.map_dma(&ring_mem)?;
        let mut queues = Vec::new();
        let mut notify = [0usize; 2];
        for q in 0..2u16 {
            common.w16(QUEUE_SELECT, q);
            let max = common.r16(QUEUE_SIZE);
            if max == 0 {
                return Err(NicError::Device(format!("virtqueue {q} does not exist")));
            }
            let n = queue_size(size, max);
            let off = q as usize * qbytes;
            // SAFETY: ring_mem holds 2 queues of qbytes each, page aligned, and lives
            // in the port as long as the queues.
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
            notify[q as usize] = caps.notify.offset as usize + noff;
            common.w16(QUEUE_ENABLE, 1);
            queues.push(sq);
        }
        let txq = queues.pop().expect("two queues");
        let rxq = queues.pop().expect("two queues");
        let mut rx = RxQueue::new(rxq, pool.clone());
        if !rx.fill() {
            return Err(NicError::Config(
                "the mempool has too few buffers (or less than 12 bytes of headroom) for the \
                 virtio rx queue"
                    .into(),
            ));
        }
        let tx = TxQueue::new(txq);
        common.w8(DEVICE_STATUS, st | STATUS_DRIVER_OK);
        if common.r8(DEVICE_STATUS) & (STATUS_NEEDS_RESET | STATUS_FAILED) != 0 {
            return Err(NicError::Device("the device needs a reset right after start".into()));
        }
        let dev = view(&bars, &caps.device);
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
        let notify_bar = bars[caps.notify.bar as usize].as_ref().expect("mapped");
        // Kick rx once so the device sees the posted buffers.
        notify_bar.write16(notify[0], 0);
        tracing::info!(port = %cfg.name, pci = %cfg.pci, %mac, features = format_args!("{features:#x}"),
            ring = size, "virtio-net started");
        Ok(Self {
            name: cfg.name.clone(),
            mac,
            features,
            rx,
            tx,
            notify_rx: notify[0],
            notify_tx: notify[1],
            counters: PortCounters::new(1),
            caps,
            bars,
            device,
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
        self.rx.release();
        self.tx.release();
    }
}

impl Port for VirtioNet {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> PortInfo {
        PortInfo { kind: "vfio", mac: self.mac, queues: 1 }
    }

    fn link_up(&self) -> bool {
        if self.features & NET_F_STATUS == 0 {
            return true;
        }
        view(&self.bars, &self.caps.device).r16(NET_CFG_STATUS) & NET_S_LINK_UP != 0
    }

    #[inline]
    fn rx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize {
        if queue != 0 {
            return 0;
        }
        let before = bufs.len();
        if self.rx.rx(bufs, max, self.counters.queue(0)) {
            self.notify(self.notify_rx, 0);
        }
        bufs.len() - before
    }

    #[inline]
    fn tx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>) -> usize {
        if queue != 0 {
            return 0;
        }
        let before = bufs.len();
        if self.tx.tx(bufs, self.counters.queue(0)) {
            self.notify(self.notify_tx, 1);
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
        let f = negotiate(offered).unwrap();
        assert_eq!(f, F_VERSION_1 | F_ACCESS_PLATFORM | NET_F_MAC);
        assert!(negotiate(NET_F_MAC).unwrap_err().contains("VERSION_1"));
    }
}
