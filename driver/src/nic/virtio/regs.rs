//! virtio 1.x PCI transport (virtio-v1.2 section 4.1) and virtio-net constants: the
//! vendor capability layout, the common configuration structure's offsets, the
//! device status bits, the feature bits podwire negotiates and the split-ring flags.

/// Vendor id of virtio devices.
pub const VENDOR: u16 = 0x1af4;
/// Modern (virtio 1.x) network device id.
pub const DEVICE_NET_MODERN: u16 = 0x1041;

/// PCI config: status register, and its "capability list" bit.
pub const PCI_STATUS: u64 = 0x06;
/// PCI_STATUS: capabilities list present.
pub const PCI_STATUS_CAP_LIST: u16 = 1 << 4;
/// PCI config: first capability pointer.
pub const PCI_CAP_PTR: u64 = 0x34;
/// Capability id of vendor-specific capabilities (virtio uses them).
pub const PCI_CAP_ID_VNDR: u8 = 0x09;

/// virtio_pci_cap.cfg_type: common configuration.
pub const CAP_COMMON: u8 = 1;
/// virtio_pci_cap.cfg_type: notifications.
pub const CAP_NOTIFY: u8 = 2;
/// virtio_pci_cap.cfg_type: ISR status.
pub const CAP_ISR: u8 = 3;
/// virtio_pci_cap.cfg_type: device-specific configuration.
pub const CAP_DEVICE: u8 = 4;

/// Common config: device_feature_select (u32).
pub const DEVICE_FEATURE_SELECT: usize = 0x00;
/// Common config: device_feature (u32).
pub const DEVICE_FEATURE: usize = 0x04;
/// Common config: driver_feature_select (u32).
pub const DRIVER_FEATURE_SELECT: usize = 0x08;
/// Common config: driver_feature (u32).
pub const DRIVER_FEATURE: usize = 0x0c;
/// Common config: msix_config (u16).
pub const MSIX_CONFIG: usize = 0x10;
/// Common config: num_queues (u16).
pub const NUM_QUEUES: usize = 0x12;
/// Common config: device_status (u8).
pub const DEVICE_STATUS: usize = 0x14;
/// Common config: queue_select (u16).
pub const QUEUE_SELECT: usize = 0x16;
/// Common config: queue_size (u16).
pub const QUEUE_SIZE: usize = 0x18;
/// Common config: queue_msix_vector (u16).
pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
/// Common config: queue_enable (u16).
pub const QUEUE_ENABLE: usize = 0x1c;
/// Common config: queue_notify_off (u16).
pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
/// Common config: queue_desc (u64, written as two u32).
pub const QUEUE_DESC: usize = 0x20;
/// Common config: queue_driver (avail ring).
pub const QUEUE_DRIVER: usize = 0x28;
/// Common config: queue_device (used ring).
pub const QUEUE_DEVICE: usize = 0x30;
/// Bytes of the common config structure podwire touches.
pub const COMMON_LEN: usize = 0x38;

/// "No MSI-X vector": polling.
pub const NO_VECTOR: u16 = 0xffff;

/// Device status: the driver noticed the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status: the driver knows how to drive it.
pub const STATUS_DRIVER: u8 = 2;
/// Device status: the driver is ready.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status: feature negotiation done.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status: the device hit an error and needs a reset.
pub const STATUS_NEEDS_RESET: u8 = 0x40;
/// Device status: the driver gave up.
pub const STATUS_FAILED: u8 = 0x80;

/// Feature: the device has a MAC address in its config.
pub const NET_F_MAC: u64 = 1 << 5;
/// Feature: mergeable rx buffers.
pub const NET_F_MRG_RXBUF: u64 = 1 << 15;
/// Feature: link status in the config.
pub const NET_F_STATUS: u64 = 1 << 16;
/// Feature: control virtqueue.
pub const NET_F_CTRL_VQ: u64 = 1 << 17;
/// Feature: multiqueue.
pub const NET_F_MQ: u64 = 1 << 22;
/// Feature: virtio 1.x.
pub const F_VERSION_1: u64 = 1 << 32;
/// Feature: the device's DMA goes through the platform IOMMU (must be accepted
/// when offered: the device then uses podwire's IOVAs).
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Device config (net): MAC address (6 bytes).
pub const NET_CFG_MAC: usize = 0;
/// Device config (net): status (u16), bit 0 = link up.
pub const NET_CFG_STATUS: usize = 6;
/// Device config (net): max_virtqueue_pairs (u16).
pub const NET_CFG_MAX_PAIRS: usize = 8;
/// NET_CFG_STATUS: link up.
pub const NET_S_LINK_UP: u16 = 1;

/// virtio-net header length with VERSION_1 (num_buffers always present).
pub const NET_HDR_LEN: usize = 12;

/// Descriptor flag: continues in `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const VRING_DESC_F_WRITE: u16 = 2;
/// Used ring flag: the device does not need notifications.
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;
