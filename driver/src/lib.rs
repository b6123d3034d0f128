//! podwire-driver: the poll-mode driver core.
//!
//! - [`mem`]: hugepage DMA memory with O(1) virtual-to-IOVA translation.
//! - [`mempool`]: packet buffers carved from DMA memory, with per-thread caches.
//! - [`port`]: the burst-oriented Port API every port implements.
//! - [`pci`], [`vfio`]: PCI devices in sysfs, and owning one through VFIO.
//! - [`nic`]: poll-mode drivers for VFIO devices (igbvf).
//! - [`xdp`]: the AF_XDP port.
#![warn(missing_docs)]

pub mod error;
pub mod mem;
pub mod mempool;
pub mod nic;
pub mod pci;
pub mod port;
pub mod vfio;
pub mod xdp;

pub use error::{DriverError, Result};
pub use mem::{DmaMemory, IovaMode};
pub use mempool::{Mempool, MempoolConfig, PacketBuf};
pub use port::{MacAddr, Port, PortCounters, PortInfo, BURST_SIZE};
