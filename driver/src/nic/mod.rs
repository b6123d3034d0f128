//! Poll-mode NIC drivers over VFIO, one module per device family. A new family
//! (ixgbevf, iavf) slots in as a module plus one line each in [`driver_name`] and
//! [`open_vfio_port`].

pub mod igbvf;
pub mod virtio;

use crate::mempool::Mempool;
use crate::pci::{PciAddress, PciError, Sysfs};
use crate::port::{MacAddr, Port};
use crate::vfio::VfioError;
use crate::DriverError;

/// Register access, implemented by a mapped BAR (and by fakes in tests).
pub trait Regs {
    /// Reads the 32-bit register at byte offset `off`.
    fn read32(&self, off: usize) -> u32;
    /// Writes the 32-bit register at byte offset `off`.
    fn write32(&self, off: usize, v: u32);
}

/// Errors of opening and running a VFIO NIC.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// VFIO setup failed.
    #[error(transparent)]
    Vfio(#[from] VfioError),
    /// The PCI device cannot be used.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// DMA memory could not be allocated.
    #[error(transparent)]
    Memory(#[from] DriverError),
    /// The VF's PF refused or did not answer.
    #[error("mailbox: {0}")]
    Mailbox(#[from] igbvf::mbx::MailboxError),
    /// podwire has no driver for this device.
    #[error("PCI device {addr} is {vendor:04x}:{device:04x}, which podwire has no driver for (supported: 8086:10ca 82576 VF, 8086:1520 I350 VF, 1af4:1041 virtio-net)")]
    Unsupported {
        /// The device.
        addr: PciAddress,
        /// Vendor id.
        vendor: u16,
        /// Device id.
        device: u16,
    },
    /// The device behaved unexpectedly.
    #[error("device: {0}")]
    Device(String),
    /// The port's settings cannot work with this device.
    #[error("{0}")]
    Config(String),
}

/// Settings of a VFIO port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioPortConfig {
    /// Port name.
    pub name: String,
    /// The PCI function.
    pub pci: PciAddress,
    /// Queue pairs to use.
    pub queues: u16,
    /// MAC to set (the PF-assigned one, or a random local one, when `None`).
    pub mac: Option<MacAddr>,
    /// Descriptors per ring (power of two).
    pub ring_size: u16,
}

/// Default descriptors per ring.
pub const DEFAULT_RING_SIZE: u16 = 512;

/// The podwire driver for a vendor:device, if there is one.
pub fn driver_name(vendor: u16, device: u16) -> Option<&'static str> {
    match (vendor, device) {
        (0x8086, igbvf::DEVICE_82576_VF) | (0x8086, igbvf::DEVICE_I350_VF) => Some("igbvf"),
        (virtio::regs::VENDOR, virtio::regs::DEVICE_NET_MODERN) => Some("virtio-net"),
        _ => None,
    }
}

/// Opens the device at `cfg.pci` with the driver its vendor:device calls for.
pub fn open_vfio_port(
    cfg: &VfioPortConfig,
    pool: Mempool,
    sysfs: &Sysfs,
) -> Result<Box<dyn Port>, NicError> {
    let dev = sysfs.device(cfg.pci)?;
    match driver_name(dev.vendor, dev.device) {
        Some("igbvf") => Ok(Box::new(igbvf::IgbVf::open(cfg, pool, sysfs)?)),
        Some("virtio-net") => Ok(Box::new(virtio::VirtioNet::open(cfg, pool, sysfs)?)),
        _ => Err(NicError::Unsupported { addr: cfg.pci, vendor: dev.vendor, device: dev.device }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::MempoolConfig;
    use crate::pci::tests::FakeSysfs;

    #[test]
    fn drivers_are_chosen_by_id() {
        assert_eq!(driver_name(0x8086, 0x10ca), Some("igbvf"));
        assert_eq!(driver_name(0x8086, 0x1520), Some("igbvf"));
        assert_eq!(driver_name(0x1af4, 0x1041), Some("virtio-net"));
        assert_eq!(driver_name(0x1af4, 0x1000), None, "legacy virtio-net is not supported");
        assert_eq!(driver_name(0x8086, 0x10c9), None);
    }

    #[test]
    fn unsupported_device_is_named() {
        let f = FakeSysfs::new("nic-unsupported");
        f.add("0000:01:00.0", 0x8086, 0x10c9, 0x020000);
        let pool = Mempool::small_pages(MempoolConfig { count: 64, ..Default::default() }).unwrap();
        let cfg = VfioPortConfig {
            name: "p".into(),
            pci: "0000:01:00.0".parse().unwrap(),
            queues: 1,
            mac: None,
            ring_size: 512,
        };
        let Err(e) = open_vfio_port(&cfg, pool, &f.sysfs()) else { panic!("opened") };
        assert!(e.to_string().contains("8086:10c9"), "{e}");
    }
}
