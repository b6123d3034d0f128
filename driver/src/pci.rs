//! PCI devices through sysfs: discovery by address or vendor:device, and moving a
//! device between its kernel driver and `vfio-pci`.
//!
//! Every function takes a [`Sysfs`] root so that the logic (and each of its refusals)
//! can be tested against a fake tree; [`Sysfs::system`] is the real `/sys`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

/// The driver podwire binds devices to.
pub const VFIO_PCI_DRIVER: &str = "vfio-pci";

/// PCI class code of Ethernet controllers (class 0x02, subclass 0x00).
pub const CLASS_ETHERNET: u32 = 0x020000;

/// Errors of PCI discovery and binding. Each message says what to do about it.
#[derive(Debug, Error)]
pub enum PciError {
    /// The address is not `DDDD:BB:DD.F` (or `BB:DD.F`).
    #[error("{0:?} is not a PCI address (want DDDD:BB:DD.F, e.g. 0000:01:10.0)")]
    BadAddress(String),
    /// No device at this address.
    #[error("no PCI device {0} (see `podwire pci list`)")]
    NotFound(PciAddress),
    /// The device has no IOMMU group: the IOMMU is off or absent.
    #[error(
        "PCI device {0} has no IOMMU group: the IOMMU is off; boot with `intel_iommu=on \
         iommu=pt` (or `amd_iommu=on`) on the kernel command line (see `podwire doctor`)"
    )]
    NoIommuGroup(PciAddress),
    /// Another device in the same IOMMU group is bound to a kernel driver.
    #[error(
        "PCI device {dev} shares IOMMU group {group} with {other}, which is in use by \
         driver {driver}: unbind it too (`podwire pci bind {other}`) or move the NIC to \
         another slot"
    )]
    GroupInUse {
        /// The device asked for.
        dev: PciAddress,
        /// Its IOMMU group.
        group: u32,
        /// The other device.
        other: PciAddress,
        /// Its driver.
        driver: String,
    },
    /// The device's network interface is up: binding would cut that traffic.
    #[error(
        "PCI device {dev} is in use: its interface {ifname} is up; take it down first \
         (`ip link set {ifname} down`)"
    )]
    InterfaceUp {
        /// The device.
        dev: PciAddress,
        /// Its network interface.
        ifname: String,
    },
    /// After binding, the device is not on the expected driver.
    #[error("PCI device {dev} did not bind to {want} (driver now: {now}){hint}")]
    BindFailed {
        /// The device.
        dev: PciAddress,
        /// The driver wanted.
        want: String,
        /// The driver it has.
        now: String,
        /// What to do.
        hint: &'static str,
    },
    /// A sysfs file could not be read or written.
    #[error("{path}: {source}{hint}")]
    Sysfs {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
}

fn sysfs_err(path: &Path, source: std::io::Error) -> PciError {
    let hint = if source.kind() == std::io::ErrorKind::PermissionDenied {
        " (permission denied: run as root)"
    } else {
        ""
    };
    PciError::Sysfs { path: path.to_path_buf(), source, hint }
}

/// A PCI address: domain, bus, device, function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// Domain (segment).
    pub domain: u16,
    /// Bus.
    pub bus: u8,
    /// Device (0..32).
    pub device: u8,
    /// Function (0..8).
    pub function: u8,
}

impl FromStr for PciAddress {
    type Err = PciError;
    fn from_str(s: &str) -> Result<Self, PciError> {
        let bad = || PciError::BadAddress(s.to_string());
        let (rest, func) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (dom, bus, dev) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0000", *b, *v),
            _ => return Err(bad()),
        };
        let hex = |t: &str, max_len: usize| -> Result<u32, PciError> {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(t, 16).map_err(|_| bad())
        };
        let (domain, bus, device, function) =
            (hex(dom, 4)?, hex(bus, 2)?, hex(dev, 2)?, hex(func, 1)?);
        if device > 0x1f || function > 7 {
            return Err(bad());
        }
        Ok(Self {
            domain: domain as u16,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.domain, self.bus, self.device, self.function)
    }
}

/// Where sysfs is (`/sys` on a real system; a temporary tree in tests).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// The real `/sys`.
    pub fn system() -> Self {
        Self { root: PathBuf::from("/sys") }
    }

    /// A tree rooted elsewhere (tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn devices(&self) -> PathBuf {
        self.root.join("bus/pci/devices")
    }

    /// The sysfs directory of a device.
    pub fn device_dir(&self, addr: PciAddress) -> PathBuf {
        self.devices().join(addr.to_string())
    }

    /// Reads one device's facts.
    pub fn device(&self, addr: PciAddress) -> Result<PciDevice, PciError> {
        let dir = self.device_dir(addr);
        if !dir.exists() {
            return Err(PciError::NotFound(addr));
        }
        let hexfile = |name: &str| -> Result<u32, PciError> {
            let p = dir.join(name);
            let s = fs::read_to_string(&p).map_err(|e| sysfs_err(&p, e))?;
            let t = s.trim().trim_start_matches("0x");
            u32::from_str_radix(t, 16).map_err(|_| {
                sysfs_err(&p, std::io::Error::new(std::io::ErrorKind::InvalidData, "not hex"))
            })
        };
        let vendor = hexfile("vendor")? as u16;
        let device = hexfile("device")? as u16;
        let class = hexfile("class")?;
        let link_name = |name: &str| {
            fs::read_link(dir.join(name))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        };
        let driver = link_name("driver");
        let iommu_group = link_name("iommu_group").and_then(|n| n.parse().ok());
        // Network interfaces: net/ of the device, or of its virtio child (virtio-net
        // puts them under virtioN/net).
        let mut net_dirs = vec![dir.join("net")];
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("virtio") {
                    net_dirs.push(e.path().join("net"));
                }
            }
        }
        let mut interfaces = Vec::new();
        for nd in &net_dirs {
            if let Ok(rd) = fs::read_dir(nd) {
                for e in rd.flatten() {
                    interfaces.push((e.file_name().to_string_lossy().into_owned(), e.path()));
                }
            }
        }
        interfaces.sort();
        let up_interfaces = interfaces
            .iter()
            .filter(|(_, path)| {
                fs::read_to_string(path.join("flags"))
                    .ok()
                    .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                    .is_some_and(|f| f & 1 != 0)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let interfaces = interfaces.into_iter().map(|(name, _)| name).collect();
        let physfn = link_name("physfn").and_then(|n| n.parse().ok());
        let sriov_totalvfs = fs::read_to_string(dir.join("sriov_totalvfs"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .filter(|n: &u32| *n > 0);
        Ok(PciDevice {
            addr,
            vendor,
            device,
            class,
            driver,
            iommu_group,
            interfaces,
            up_interfaces,
            physfn,
            sriov_totalvfs,
        })
    }

    /// Every PCI device, sorted by address.
    pub fn list(&self) -> Result<Vec<PciDevice>, PciError> {
        let dir = self.devices();
        let rd = fs::read_dir(&dir).map_err(|e| sysfs_err(&dir, e))?;
        let mut out = Vec::new();
        for e in rd.flatten() {
            if let Ok(addr) = e.file_name().to_string_lossy().parse::<PciAddress>() {
                out.push(self.device(addr)?);
            }
        }
        out.sort_by_key(|d| d.addr);
        Ok(out)
    }

    /// Every Ethernet controller (class 0x0200), sorted by address.
    pub fn list_nics(&self) -> Result<Vec<PciDevice>, PciError> {
        Ok(self.list()?.into_iter().filter(|d| d.class >> 8 == CLASS_ETHERNET >> 8).collect())
    }

    /// Devices with this vendor and device id, sorted by address.
    pub fn find_by_id(&self, vendor: u16, device: u16) -> Result<Vec<PciDevice>, PciError> {
        Ok(self.list()?.into_iter().filter(|d| d.vendor == vendor && d.device == device).collect())
    }

    /// The addresses of the devices in IOMMU group `group`.
    pub fn group_members(&self, group: u32) -> Result<Vec<PciAddress>, PciError> {
        let dir = self.root.join("kernel/iommu_groups").join(group.to_string()).join("devices");
        let rd = fs::read_dir(&dir).map_err(|e| sysfs_err(&dir, e))?;
        let mut out: Vec<PciAddress> =
            rd.flatten().filter_map(|e| e.file_name().to_string_lossy().parse().ok()).collect();
        out.sort();
        Ok(out)
    }

    fn write(&self, path: &Path, value: &str) -> Result<(), PciError> {
        fs::write(path, value).map_err(|e| sysfs_err(path, e))
    }

    /// Binds `addr` to `vfio-pci`: checks the IOMMU group and that the device is not
    /// in use, sets `driver_override`, unbinds the current driver and asks the kernel
    /// to probe again. Does nothing if it is already bound to `vfio-pci`.
    pub fn bind_vfio(&self, addr: PciAddress) -> Result<PciDevice, PciError> {
        let dev = self.device(addr)?;
        if dev.driver.as_deref() == Some(VFIO_PCI_DRIVER) {
            return Ok(dev);
        }
        self.check_bindable(&dev)?;
        let dir = self.device_dir(addr);
        self.write(&dir.join("driver_override"), VFIO_PCI_DRIVER)?;
        if dev.driver.is_some() {
            self.write(&dir.join("driver/unbind"), &addr.to_string())?;
        }
        self.write(&self.root.join("bus/pci/drivers_probe"), &addr.to_string())?;
        let now = self.device(addr)?;
        if now.driver.as_deref() != Some(VFIO_PCI_DRIVER) {
            let hint = if self.root.join("bus/pci/drivers").join(VFIO_PCI_DRIVER).exists() {
                ""
            } else {
                ": the vfio-pci module is not loaded; run `modprobe vfio-pci`"
            };
            return Err(PciError::BindFailed {
                dev: addr,
                want: VFIO_PCI_DRIVER.into(),
                now: now.driver.unwrap_or_else(|| "none".into()),
                hint,
            });
        }
        Ok(now)
    }

    /// Refuses a device that has no IOMMU group, whose interface is up, or whose
    /// group holds another device bound to a kernel driver.
    pub fn check_bindable(&self, dev: &PciDevice) -> Result<(), PciError> {
        if let Some(ifname) = dev.up_interfaces.first() {
            return Err(PciError::InterfaceUp { dev: dev.addr, ifname: ifname.clone() });
        }
        let group = dev.iommu_group.ok_or(PciError::NoIommuGroup(dev.addr))?;
        for other in self.group_members(group)? {
            if other == dev.addr {
                continue;
            }
            let o = self.device(other)?;
            // Bridges stay on their driver; anything else must be free or on vfio-pci.
            let bridge = o.class >> 16 == 0x06;
            match o.driver.as_deref() {
                None | Some(VFIO_PCI_DRIVER) | Some("pci-stub") => {}
                Some(_) if bridge => {}
                Some(d) => {
                    return Err(PciError::GroupInUse {
                        dev: dev.addr,
                        group,
                        other,
                        driver: d.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Gives `addr` back to its kernel driver: clears `driver_override`, unbinds
    /// `vfio-pci` and asks the kernel to probe again. Returns the device as it is now
    /// (its `driver` is `None` if no kernel driver claims it).
    pub fn unbind_vfio(&self, addr: PciAddress) -> Result<PciDevice, PciError> {
        let dev = self.device(addr)?;
        let dir = self.device_dir(addr);
        // An empty override ("\n") restores matching by id table.
        self.write(&dir.join("driver_override"), "\n")?;
        if dev.driver.is_some() {
            self.write(&dir.join("driver/unbind"), &addr.to_string())?;
        }
        self.write(&self.root.join("bus/pci/drivers_probe"), &addr.to_string())?;
        self.device(addr)
    }
}

/// What sysfs says about one PCI device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Its address.
    pub addr: PciAddress,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (24 bits: class, subclass, prog-if).
    pub class: u32,
    /// The bound driver, if any.
    pub driver: Option<String>,
    /// Its IOMMU group, if the IOMMU is on.
    pub iommu_group: Option<u32>,
    /// Its network interfaces (when a kernel network driver has it).
    pub interfaces: Vec<String>,
    /// Those of its interfaces that are up.
    pub up_interfaces: Vec<String>,
    /// For a virtual function: its physical function.
    pub physfn: Option<PciAddress>,
    /// For an SR-IOV capable physical function: how many VFs it can have.
    pub sriov_totalvfs: Option<u32>,
}

impl PciDevice {
    /// Whether podwire has a driver for this vendor:device.
    pub fn podwire_driver(&self) -> Option<&'static str> {
        crate::nic::driver_name(self.vendor, self.device)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake sysfs tree in a fresh temporary directory, removed on drop.
    pub struct FakeSysfs {
        pub root: PathBuf,
    }

    impl FakeSysfs {
        pub fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let root = std::env::temp_dir()
                .join(format!("podwire-sysfs-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("bus/pci/devices")).unwrap();
            fs::create_dir_all(root.join("bus/pci/drivers")).unwrap();
            fs::write(root.join("bus/pci/drivers_probe"), "").unwrap();
            Self { root }
        }

        pub fn add(&self, addr: &str, vendor: u16, device: u16, class: u32) -> PathBuf {
            let d = self.root.join("bus/pci/devices").join(addr);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("vendor"), format!("0x{vendor:04x}\n")).unwrap();
            fs::write(d.join("device"), format!("0x{device:04x}\n")).unwrap();
            fs::write(d.join("class"), format!("0x{class:06x}\n")).unwrap();
            fs::write(d.join("driver_override"), "(null)\n").unwrap();
            d
        }

        pub fn set_driver(&self, addr: &str, driver: &str) {
            let drv = self.root.join("bus/pci/drivers").join(driver);
            fs::create_dir_all(&drv).unwrap();
            fs::write(drv.join("unbind"), "").unwrap();
            let link = self.root.join("bus/pci/devices").join(addr).join("driver");
            let _ = fs::remove_file(&link);
            symlink(&drv, link).unwrap();
        }

        pub fn set_group(&self, addr: &str, group: u32) {
            let g = self.root.join("kernel/iommu_groups").join(group.to_string());
            fs::create_dir_all(g.join("devices")).unwrap();
            let dev = self.root.join("bus/pci/devices").join(addr);
            symlink(&g, dev.join("iommu_group")).unwrap();
            symlink(&dev, g.join("devices").join(addr)).unwrap();
        }

        pub fn add_netdev(&self, addr: &str, ifname: &str, up: bool) {
            let n = self.root.join("bus/pci/devices").join(addr).join("net").join(ifname);
            fs::create_dir_all(&n).unwrap();
            fs::write(n.join("flags"), if up { "0x1003\n" } else { "0x1002\n" }).unwrap();
        }

        pub fn sysfs(&self) -> Sysfs {
            Sysfs::at(&self.root)
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn addresses_parse_and_print() {
        let a: PciAddress = "0000:01:10.0".parse().unwrap();
        assert_eq!(a, PciAddress { domain: 0, bus: 1, device: 0x10, function: 0 });
        assert_eq!(a.to_string(), "0000:01:10.0");
        assert_eq!("3:1f.7".parse::<PciAddress>().unwrap().to_string(), "0000:03:1f.7");
        for bad in ["", "0000:01:10", "0000:01:20.0", "0000:01:10.8", "x:01:10.0", "00000:01:10.0"]
        {
            assert!(matches!(bad.parse::<PciAddress>(), Err(PciError::BadAddress(_))), "{bad}");
        }
    }

    #[test]
    fn lists_nics_with_driver_group_and_interfaces() {
        let f = FakeSysfs::new("list");
        f.add("0000:01:00.0", 0x8086, 0x10c9, 0x020000);
        f.set_driver("0000:01:00.0", "igb");
        f.set_group("0000:01:00.0", 4);
        f.add_netdev("0000:01:00.0", "eth0", true);
        fs::write(f.root.join("bus/pci/devices/0000:01:00.0/sriov_totalvfs"), "7\n").unwrap();
        f.add("0000:01:10.0", 0x8086, 0x10ca, 0x020000);
        f.set_group("0000:01:10.0", 5);
        symlink(
            f.root.join("bus/pci/devices/0000:01:00.0"),
            f.root.join("bus/pci/devices/0000:01:10.0/physfn"),
        )
        .unwrap();
        f.add("0000:00:1f.0", 0x8086, 0x2918, 0x060100);
        let s = f.sysfs();
        let nics = s.list_nics().unwrap();
        assert_eq!(nics[0].sriov_totalvfs, Some(7));
        assert_eq!(nics[1].physfn.map(|a| a.to_string()).as_deref(), Some("0000:01:00.0"));
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[0].driver.as_deref(), Some("igb"));
        assert_eq!(nics[0].iommu_group, Some(4));
        assert_eq!(nics[0].up_interfaces, vec!["eth0".to_string()]);
        assert_eq!(nics[1].podwire_driver(), Some("igbvf"));
        assert_eq!(nics[0].podwire_driver(), None);
        assert_eq!(s.find_by_id(0x8086, 0x10ca).unwrap()[0].addr.to_string(), "0000:01:10.0");
        assert!(matches!(s.device("0000:09:00.0".parse().unwrap()), Err(PciError::NotFound(_))));
    }

    #[test]
    fn bind_refuses_without_iommu_group() {
        let f = FakeSysfs::new("nogroup");
        f.add("0000:01:10.0", 0x8086, 0x10ca, 0x020000);
        let e = f.sysfs().bind_vfio("0000:01:10.0".parse().unwrap()).unwrap_err();
        assert!(matches!(e, PciError::NoIommuGroup(_)), "{e}");
        assert!(e.to_string().contains("intel_iommu=on"));
    }

    #[test]
    fn bind_refuses_an_interface_that_is_up() {
        let f = FakeSysfs::new("up");
        f.add("0000:01:10.0", 0x8086, 0x10ca, 0x020000);
        f.set_driver("0000:01:10.0", "igbvf");
        f.set_group("0000:01:10.0", 5);
        f.add_netdev("0000:01:10.0", "eth3", true);
        let e = f.sysfs().bind_vfio("0000:01:10.0".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("ip link set eth3 down"), "{e}");
    }

    #[test]
    fn virtio_interfaces_are_found_under_their_virtio_child() {
        let f = FakeSysfs::new("virtio-net");
        f.add("0000:02:00.0", 0x1af4, 0x1041, 0x020000);
        f.set_driver("0000:02:00.0", "virtio-pci");
        f.set_group("0000:02:00.0", 8);
        let n = f.root.join("bus/pci/devices/0000:02:00.0/virtio0/net/eth1");
        fs::create_dir_all(&n).unwrap();
        fs::write(n.join("flags"), "0x1003\n").unwrap();
        let s = f.sysfs();
        let d = s.device("0000:02:00.0".parse().unwrap()).unwrap();
        assert_eq!(d.interfaces, vec!["eth1".to_string()]);
        let e = s.bind_vfio(d.addr).unwrap_err();
        assert!(e.to_string().contains("ip link set eth1 down"), "{e}");
    }

    #[test]
    fn bind_refuses_a_group_shared_with_a_busy_device() {
        let f = FakeSysfs::new("shared");
        f.add("0000:02:00.0", 0x8086, 0x10c9, 0x020000);
        f.set_driver("0000:02:00.0", "igb");
        f.set_group("0000:02:00.0", 7);
        f.add("0000:02:00.1", 0x8086, 0x10c9, 0x020000);
        f.set_driver("0000:02:00.1", "igb");
        // Same group as .0.
        let g = f.root.join("kernel/iommu_groups/7");
        let dev = f.root.join("bus/pci/devices/0000:02:00.1");
        symlink(&g, dev.join("iommu_group")).unwrap();
        symlink(&dev, g.join("devices/0000:02:00.1")).unwrap();
        let e = f.sysfs().bind_vfio("0000:02:00.0".parse().unwrap()).unwrap_err();
        match e {
            PciError::GroupInUse { other, group, ref driver, .. } => {
                assert_eq!(other.to_string(), "0000:02:00.1");
                assert_eq!(group, 7);
                assert_eq!(driver, "igb");
            }
            e => panic!("wrong error {e}"),
        }
    }

    #[test]
    fn bind_writes_override_unbind_and_probe_then_reports_failure() {
        let f = FakeSysfs::new("bind");
        f.add("0000:01:10.0", 0x8086, 0x10ca, 0x020000);
        f.set_driver("0000:01:10.0", "igbvf");
        f.set_group("0000:01:10.0", 5);
        let e = f.sysfs().bind_vfio("0000:01:10.0".parse().unwrap()).unwrap_err();
        // Nothing rebinds in a fake tree: the device stays on igbvf, and the message
        // says the vfio-pci module is missing.
        assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");
        let d = f.root.join("bus/pci/devices/0000:01:10.0");
        assert_eq!(fs::read_to_string(d.join("driver_override")).unwrap(), "vfio-pci");
        assert_eq!(
            fs::read_to_string(f.root.join("bus/pci/drivers/igbvf/unbind")).unwrap(),
            "0000:01:10.0"
        );
        assert_eq!(
            fs::read_to_string(f.root.join("bus/pci/drivers_probe")).unwrap(),
            "0000:01:10.0"
        );
    }

    #[test]
    fn bind_is_a_no_op_when_already_on_vfio() {
        let f = FakeSysfs::new("already");
        f.add("0000:01:10.0", 0x8086, 0x10ca, 0x020000);
        f.set_driver("0000:01:10.0", "vfio-pci");
        let d = f.sysfs().bind_vfio("0000:01:10.0".parse().unwrap()).unwrap();
        assert_eq!(d.driver.as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn unbind_clears_override() {
        let f = FakeSysfs::new("unbind");
        f.add("0000:01:10.0", 0x8086, 0x10ca, 0x020000);
        f.set_driver("0000:01:10.0", "vfio-pci");
        f.sysfs().unbind_vfio("0000:01:10.0".parse().unwrap()).unwrap();
        let d = f.root.join("bus/pci/devices/0000:01:10.0");
        assert_eq!(fs::read_to_string(d.join("driver_override")).unwrap(), "\n");
        assert_eq!(
            fs::read_to_string(f.root.join("bus/pci/drivers/vfio-pci/unbind")).unwrap(),
            "0000:01:10.0"
        );
    }
}
