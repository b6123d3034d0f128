//! VFIO: a PCI device owned by this process through the Linux VFIO group/container
//! API with a type1v2 IOMMU, its config space, its BARs mapped into memory, and DMA
//! memory mapped for it with IOVA = virtual address.
//!
//! One [`VfioDevice`] owns its own container: every DMA mapping made through it is
//! undone when it is dropped.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::ptr::NonNull;

use thiserror::Error;
use vfio_bindings::bindings::vfio as sys;

use crate::mem::{DmaMemory, IovaMode};
use crate::pci::{PciAddress, PciError, Sysfs, VFIO_PCI_DRIVER};

mod bar;
pub use bar::Bar;

/// Errors of VFIO setup. Each message says what to do about it.
#[derive(Debug, Error)]
pub enum VfioError {
    /// `/dev/vfio/vfio` is missing.
    #[error("/dev/vfio/vfio does not exist: the VFIO modules are not loaded; run `modprobe vfio-pci` (see `podwire doctor`)")]
    NoVfio,
    /// The device has no IOMMU group.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// The device is not bound to vfio-pci.
    #[error("PCI device {addr} is bound to {driver}, not vfio-pci: run `podwire pci bind {addr}`")]
    NotBound {
        /// The device.
        addr: PciAddress,
        /// Its driver ("no driver" when none).
        driver: String,
    },
    /// Not every device of the group is bound to vfio-pci.
    #[error("IOMMU group {group} is not viable: every device in it must be bound to vfio-pci (see `ls /sys/kernel/iommu_groups/{group}/devices`, then `podwire pci bind` each)")]
    GroupNotViable {
        /// The group.
        group: u32,
    },
    /// Opening a VFIO file was refused.
    #[error("{path}: permission denied: run as root, or give this user the VFIO group file (`chown USER {path}`) and enough locked memory (`ulimit -l unlimited`)")]
    Permission {
        /// The file.
        path: PathBuf,
    },
    /// Another process holds the group.
    #[error("{path} is busy: another process (a DPDK application, another podwire) already uses this device")]
    Busy {
        /// The group file.
        path: PathBuf,
    },
    /// The kernel offers no type1v2 IOMMU.
    #[error("the kernel's VFIO has no type1v2 IOMMU (VFIO_TYPE1v2_IOMMU): load `vfio_iommu_type1` and enable the IOMMU (`intel_iommu=on iommu=pt`)")]
    NoType1v2,
    /// A VFIO ioctl failed.
    #[error("{what}: {source}")]
    Ioctl {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// DMA memory whose IOVA is not its virtual address was given.
    #[error("DMA memory must use IovaMode::Identity to be mapped through VFIO type1")]
    NotIdentity,
    /// A BAR cannot be memory-mapped.
    #[error("PCI device {addr}: BAR{bar} {why}")]
    Bar {
        /// The device.
        addr: PciAddress,
        /// BAR index.
        bar: u32,
        /// What is wrong with it.
        why: String,
    },
}

fn ioctl_err(what: &'static str) -> VfioError {
    VfioError::Ioctl { what, source: std::io::Error::last_os_error() }
}

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`.
const fn vfio_io(n: u32) -> libc::c_ulong {
    ((sys::VFIO_TYPE as u32) << 8 | (sys::VFIO_BASE + n)) as libc::c_ulong
}
const VFIO_GET_API_VERSION: libc::c_ulong = vfio_io(0);
const VFIO_CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
const VFIO_SET_IOMMU: libc::c_ulong = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const VFIO_DEVICE_GET_INFO: libc::c_ulong = vfio_io(7);
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);
const VFIO_DEVICE_RESET: libc::c_ulong = vfio_io(11);
const VFIO_IOMMU_MAP_DMA: libc::c_ulong = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: libc::c_ulong = vfio_io(14);

/// PCI command register offset and its bits.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;
const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;

fn open_rw(path: &std::path::Path) -> Result<File, VfioError> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => VfioError::Permission { path: path.into() },
        Some(libc::EBUSY) => VfioError::Busy { path: path.into() },
        _ => VfioError::Ioctl { what: "open VFIO file", source: e },
    })
}

/// A VFIO container with a type1v2 IOMMU. DMA mappings are undone on drop.
#[derive(Debug)]
pub struct VfioContainer {
    file: File,
    maps: Vec<(u64, u64)>,
}

impl VfioContainer {
    fn open() -> Result<Self, VfioError> {
        let path = std::path::Path::new("/dev/vfio/vfio");
        if !path.exists() {
            return Err(VfioError::NoVfio);
        }
        let file = open_rw(path)?;
        // SAFETY: the ioctl takes no argument.
        let v = unsafe { libc::ioctl(file.as_raw_fd(), VFIO_GET_API_VERSION) };
        if v != sys::VFIO_API_VERSION as i32 {
            return Err(VfioError::Ioctl {
                what: "VFIO_GET_API_VERSION",
                source: std::io::Error::other(format!("API version {v}, want 0")),
            });
        }
        // SAFETY: the argument is an integer, passed by value.
        let ok = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                VFIO_CHECK_EXTENSION,
                sys::VFIO_TYPE1v2_IOMMU as libc::c_ulong,
            )
        };
        if ok != 1 {
            return Err(VfioError::NoType1v2);
        }
        Ok(Self { file, maps: Vec::new() })
    }

    /// Maps `len` bytes at virtual address `vaddr` for device DMA, IOVA = `vaddr`.
    fn map(&mut self, vaddr: u64, len: u64) -> Result<(), VfioError> {
        let m = sys::vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_map>() as u32,
            flags: sys::VFIO_DMA_MAP_FLAG_READ | sys::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr,
            iova: vaddr,
            size: len,
        };
        // SAFETY: m is a valid vfio_iommu_type1_dma_map that outlives the call.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), VFIO_IOMMU_MAP_DMA, &m) } != 0 {
            let e = std::io::Error::last_os_error();
            let what = if e.raw_os_error() == Some(libc::ENOMEM) {
                "VFIO_IOMMU_MAP_DMA (ENOMEM: the locked-memory limit is too low; `ulimit -l unlimited`)"
            } else {
                "VFIO_IOMMU_MAP_DMA"
            };
            return Err(VfioError::Ioctl { what, source: e });
        }
        self.maps.push((vaddr, len));
        Ok(())
    }
}

impl Drop for VfioContainer {
    fn drop(&mut self) {
        for &(iova, size) in &self.maps {
            let u = sys::vfio_iommu_type1_dma_unmap {
                argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_unmap>() as u32,
                flags: 0,
                iova,
                size,
                ..Default::default()
            };
            // SAFETY: u is a valid vfio_iommu_type1_dma_unmap that outlives the call.
            unsafe { libc::ioctl(self.file.as_raw_fd(), VFIO_IOMMU_UNMAP_DMA, &u) };
        }
    }
}

/// Facts about one region of a device (a BAR, or config space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index (0..6 BARs, 7 config space).
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Size in bytes.
    pub size: u64,
    /// Offset into the device file.
    pub offset: u64,
}

impl RegionInfo {
    /// Whether the region can be memory-mapped.
    pub fn mappable(&self) -> bool {
        self.flags & sys::VFIO_REGION_INFO_FLAG_MMAP != 0
    }
}

/// A PCI device owned through VFIO.
#[derive(Debug)]
pub struct VfioDevice {
    addr: PciAddress,
    // Field order is drop order: the device closes first, then the container undoes
    // its DMA mappings (while the group is still attached), then the group closes.
    device: File,
    flags: u32,
    num_regions: u32,
    config: RegionInfo,
    container: VfioContainer,
    _group: File,
}

impl VfioDevice {
    /// Opens `addr`, which must be bound to vfio-pci, in a fresh type1v2 container.
    pub fn open(sysfs: &Sysfs, addr: PciAddress) -> Result<Self, VfioError> {
        let dev = sysfs.device(addr)?;
        let group = dev.iommu_group.ok_or(PciError::NoIommuGroup(addr))?;
        if dev.driver.as_deref() != Some(VFIO_PCI_DRIVER) {
            return Err(VfioError::NotBound {
                addr,
                driver: dev.driver.unwrap_or_else(|| "no driver".into()),
            });
        }
        let container = VfioContainer::open()?;
        let gpath = PathBuf::from(format!("/dev/vfio/{group}"));
        if !gpath.exists() {
            return Err(VfioError::NotBound {
                addr,
                driver: "vfio-pci (but no group file)".into(),
            });
        }
        let gfile = open_rw(&gpath)?;
        let mut status = sys::vfio_group_status {
            argsz: std::mem::size_of::<sys::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: status is a valid vfio_group_status the kernel writes into.
        if unsafe { libc::ioctl(gfile.as_raw_fd(), VFIO_GROUP_GET_STATUS, &mut status) } != 0 {
            return Err(ioctl_err("VFIO_GROUP_GET_STATUS"));
        }
        if status.flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::GroupNotViable { group });
        }
        let cfd = container.file.as_raw_fd();
        // SAFETY: the argument points at a valid int holding the container fd.
        if unsafe { libc::ioctl(gfile.as_raw_fd(), VFIO_GROUP_SET_CONTAINER, &cfd) } != 0 {
            return Err(ioctl_err("VFIO_GROUP_SET_CONTAINER"));
        }
        // SAFETY: the argument is an integer, passed by value.
        if unsafe { libc::ioctl(cfd, VFIO_SET_IOMMU, sys::VFIO_TYPE1v2_IOMMU as libc::c_ulong) }
            != 0
        {
            return Err(ioctl_err("VFIO_SET_IOMMU type1v2"));
        }
        let name = std::ffi::CString::new(addr.to_string()).expect("no NUL in an address");
        // SAFETY: name is a valid NUL-terminated string.
        let fd = unsafe { libc::ioctl(gfile.as_raw_fd(), VFIO_GROUP_GET_DEVICE_FD, name.as_ptr()) };
        if fd < 0 {
            return Err(ioctl_err("VFIO_GROUP_GET_DEVICE_FD"));
        }
        // SAFETY: fd was just returned to us and is owned by nobody else.
        let device = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut info = sys::vfio_device_info {
            argsz: std::mem::size_of::<sys::vfio_device_info>() as u32,
            ..Default::default()
        };
        // SAFETY: info is a valid vfio_device_info the kernel writes into.
        if unsafe { libc::ioctl(fd, VFIO_DEVICE_GET_INFO, &mut info) } != 0 {
            return Err(ioctl_err("VFIO_DEVICE_GET_INFO"));
        }
        let config = region_info(&device, sys::VFIO_PCI_CONFIG_REGION_INDEX)?;
        Ok(Self {
            addr,
            device,
            flags: info.flags,
            num_regions: info.num_regions,
            config,
            _group: gfile,
            container,
        })
    }

    /// The device's PCI address.
    pub fn addr(&self) -> PciAddress {
        self.addr
    }

    /// Facts about region `index`.
    pub fn region(&self, index: u32) -> Result<RegionInfo, VfioError> {
        if index >= self.num_regions {
            return Err(VfioError::Bar {
                addr: self.addr,
                bar: index,
                why: format!("does not exist (the device has {} regions)", self.num_regions),
            });
        }
        region_info(&self.device, index)
    }

    /// Reads `buf.len()` bytes of config space at `off`.
    pub fn read_config(&self, off: u64, buf: &mut [u8]) -> Result<(), VfioError> {
        if off + buf.len() as u64 > self.config.size {
            return Err(VfioError::Ioctl {
                what: "config space read",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        self.device
            .read_exact_at(buf, self.config.offset + off)
            .map_err(|source| VfioError::Ioctl { what: "config space read", source })
    }

    /// Writes `buf` into config space at `off`.
    pub fn write_config(&self, off: u64, buf: &[u8]) -> Result<(), VfioError> {
        if off + buf.len() as u64 > self.config.size {
            return Err(VfioError::Ioctl {
                what: "config space write",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        self.device
            .write_all_at(buf, self.config.offset + off)
            .map_err(|source| VfioError::Ioctl { what: "config space write", source })
    }

    /// Reads a little-endian u16 of config space.
    pub fn config_u16(&self, off: u64) -> Result<u16, VfioError> {
        let mut b = [0u8; 2];
        self.read_config(off, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian u32 of config space.
    pub fn config_u32(&self, off: u64) -> Result<u32, VfioError> {
        let mut b = [0u8; 4];
        self.read_config(off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Enables memory decoding and bus mastering (DMA), and disables INTx.
    pub fn enable_bus_master(&self) -> Result<(), VfioError> {
        let cmd = self.config_u16(PCI_COMMAND)?;
        let cmd = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE;
        self.write_config(PCI_COMMAND, &cmd.to_le_bytes())
    }

    /// Disables bus mastering: the device stops all DMA.
    pub fn disable_bus_master(&self) -> Result<(), VfioError> {
        let cmd = self.config_u16(PCI_COMMAND)? & !PCI_COMMAND_MASTER;
        self.write_config(PCI_COMMAND, &cmd.to_le_bytes())
    }

    /// [`VfioDevice::reset`] at open, for the log: `"done"`, `"not supported"` or
    /// `"failed"` (warned about). The drivers reset the function through their own
    /// registers as well, so a device without a reset still starts clean; this one
    /// also stops DMA a previous owner left running (a podwire killed with SIGKILL:
    /// vfio-pci resets the function when the last fd closes, where it can).
    pub fn reset_at_open(&self) -> &'static str {
        match self.reset() {
            Ok(true) => "done",
            Ok(false) => "not supported",
            Err(e) => {
                tracing::warn!(pci = %self.addr, "function reset failed: {e}; the driver resets the device itself");
                "failed"
            }
        }
    }

    /// Function-level reset, when the device supports one. Returns whether it did.
    pub fn reset(&self) -> Result<bool, VfioError> {
        if self.flags & sys::VFIO_DEVICE_FLAGS_RESET == 0 {
            return Ok(false);
        }
        // SAFETY: the ioctl takes no argument.
        if unsafe { libc::ioctl(self.device.as_raw_fd(), VFIO_DEVICE_RESET) } != 0 {
            return Err(ioctl_err("VFIO_DEVICE_RESET"));
        }
        Ok(true)
    }

    /// Maps BAR `index` into memory.
    pub fn map_bar(&self, index: u32) -> Result<Bar, VfioError> {
        let r = self.region(index)?;
        let bad = |why: &str| VfioError::Bar { addr: self.addr, bar: index, why: why.into() };
        if r.size == 0 {
            return Err(bad("is not implemented by the device"));
        }
        if !r.mappable() {
            return Err(bad("cannot be memory-mapped"));
        }
        let len = usize::try_from(r.size).map_err(|_| bad("is too large"))?;
        // SAFETY: a fresh shared mapping of the device file at the region's offset;
        // the kernel checks offset and length against the BAR.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.device.as_raw_fd(),
                r.offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(VfioError::Ioctl {
                what: "mmap of a BAR",
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| bad("mapped at null"))?;
        // SAFETY: ptr..ptr+len is a fresh mapping owned by the Bar from here on.
        Ok(unsafe { Bar::from_mapping(ptr, len) })
    }

    /// Maps all of `mem` for the device's DMA, IOVA = virtual address; undone when
    /// the device is dropped.
    pub fn map_dma(&mut self, mem: &DmaMemory) -> Result<(), VfioError> {
        if mem.iova_mode() != IovaMode::Identity {
            return Err(VfioError::NotIdentity);
        }
        self.container.map(mem.as_ptr() as u64, mem.len() as u64)
    }
}

fn region_info(device: &File, index: u32) -> Result<RegionInfo, VfioError> {
    let mut r = sys::vfio_region_info {
        argsz: std::mem::size_of::<sys::vfio_region_info>() as u32,
        index,
        ..Default::default()
    };
    // SAFETY: r is a valid vfio_region_info the kernel writes into.
    if unsafe { libc::ioctl(device.as_raw_fd(), VFIO_DEVICE_GET_REGION_INFO, &mut r) } != 0 {
        return Err(ioctl_err("VFIO_DEVICE_GET_REGION_INFO"));
    }
    Ok(RegionInfo { index, flags: r.flags, size: r.size, offset: r.offset })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::tests::FakeSysfs;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // linux/vfio.h: _IO(';', 100 + n)
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_RESET, 0x3b6f);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
    }

    #[test]
    fn open_refuses_a_device_without_iommu_group() {
        let f = FakeSysfs::new("vfio-nogroup");
        f.add("0000:01:10.0", 0x8086, 0x10ca, 0x020000);
        let e = VfioDevice::open(&f.sysfs(), "0000:01:10.0".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("intel_iommu=on"), "{e}");
    }

    #[test]
    fn open_refuses_a_device_on_another_driver() {
        let f = FakeSysfs::new("vfio-driver");
        f.add("0000:01:10.0", 0x8086, 0x10ca, 0x020000);
        f.set_group("0000:01:10.0", 3);
        f.set_driver("0000:01:10.0", "igbvf");
        let e = VfioDevice::open(&f.sysfs(), "0000:01:10.0".parse().unwrap()).unwrap_err();
        assert!(matches!(e, VfioError::NotBound { .. }), "{e}");
        assert!(e.to_string().contains("podwire pci bind 0000:01:10.0"), "{e}");
    }

    #[test]
    fn open_of_a_missing_device_says_so() {
        let f = FakeSysfs::new("vfio-missing");
        let e = VfioDevice::open(&f.sysfs(), "0000:01:10.0".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("no PCI device 0000:01:10.0"), "{e}");
    }

    #[test]
    fn bar_rejects_out_of_range_access() {
        let mut backing = vec![0u32; 4];
        let ptr = NonNull::new(backing.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: 16 bytes of a live Vec; the Bar is leaked below (not unmapped).
        let bar = unsafe { Bar::from_mapping(ptr, 16) };
        bar.write32(12, 0xdead_beef);
        assert_eq!(bar.read32(12), 0xdead_beef);
        assert_eq!(bar.read32(16), u32::MAX);
        assert_eq!(bar.read32(2), u32::MAX);
        bar.write32(16, 1); // ignored
        assert_eq!(bar.len(), 16);
        std::mem::forget(bar);
        assert_eq!(backing[3], 0xdead_beef);
    }
}
