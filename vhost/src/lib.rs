//! podwire-vhost: the device side of vhost-user for virtio-net, and its
//! poll-mode virtqueue datapath (split and packed rings).
//!
//! A [`VhostUserPort`] is a [`podwire_driver::Port`]: the worker that owns it polls the
//! guest's rings directly; a control thread per port speaks the vhost-user protocol on
//! the unix socket and hands ready rings to the datapath.

use std::path::PathBuf;
use std::sync::Arc;

use podwire_driver::{MacAddr, Mempool, PacketBuf, Port, PortCounters, PortInfo};

/// Who listens on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMode {
    /// podwire listens; the frontend (virtio-user, QEMU) connects.
    Server,
    /// The frontend listens (virtio-user `server=1`); podwire connects and reconnects.
    Client,
}

/// Configuration of one vhost-user port.
#[derive(Debug, Clone)]
pub struct VhostUserConfig {
    /// Port name (for logs and counters).
    pub name: String,
    /// Path of the unix socket.
    pub socket: PathBuf,
    /// Server or client.
    pub mode: SocketMode,
    /// Queue pairs offered to the frontend (1 or more).
    pub queues: u16,
    /// MAC address given to the guest; random locally administered if `None`.
    pub mac: Option<MacAddr>,
    /// Permission bits of the socket file (server mode).
    pub socket_perms: u32,
    /// Group owning the socket file (server mode), by name.
    pub socket_group: Option<String>,
}

/// Errors of the vhost-user port.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
}

/// A vhost-user-net port. (Datapath lands with the vhost-user issue.)
pub struct VhostUserPort {
    cfg: VhostUserConfig,
    mac: MacAddr,
    counters: Arc<PortCounters>,
    _pool: Mempool,
}

impl VhostUserPort {
    /// Creates the port: binds (server) or starts connecting (client) its socket.
    pub fn new(cfg: VhostUserConfig, pool: Mempool) -> Result<Self, VhostError> {
        let mac = cfg.mac.unwrap_or_else(MacAddr::random_local);
        let counters = PortCounters::new(cfg.queues);
        Ok(Self { cfg, mac, counters, _pool: pool })
    }
}

impl Port for VhostUserPort {
    fn name(&self) -> &str {
        &self.cfg.name
    }
    fn info(&self) -> PortInfo {
        PortInfo { kind: "vhost-user", mac: self.mac, queues: self.cfg.queues }
    }
    fn link_up(&self) -> bool {
        false
    }
    fn rx_burst(&mut self, _queue: u16, _bufs: &mut Vec<PacketBuf>, _max: usize) -> usize {
        0
    }
    fn tx_burst(&mut self, _queue: u16, _bufs: &mut Vec<PacketBuf>) -> usize {
        0
    }
    fn counters(&self) -> Arc<PortCounters> {
        self.counters.clone()
    }
}
