//! Building ports from their configuration.

use podwire_driver::xdp::{AfXdpConfig, AfXdpPort, DEFAULT_RING_SIZE};
use podwire_driver::{Mempool, Port};
use podwire_vhost::VhostUserPort;

use crate::config::{PortConfig, PortKind};

/// A port could not be created.
#[derive(Debug, thiserror::Error)]
#[error("port {name:?}: {reason}")]
pub struct PortBuildError {
    /// The port's name.
    pub name: String,
    /// What went wrong.
    pub reason: String,
}

/// Creates one port, cloning `pool` into it.
pub fn build_port(cfg: &PortConfig, pool: &Mempool) -> Result<Box<dyn Port>, PortBuildError> {
    match &cfg.kind {
        PortKind::VhostUser(v) => VhostUserPort::new(v.clone(), pool.clone())
            .map(|p| Box::new(p) as Box<dyn Port>)
            .map_err(|e| PortBuildError { name: cfg.name.clone(), reason: e.to_string() }),
        PortKind::Vfio(v) => podwire_driver::nic::open_vfio_port(
            v,
            pool.clone(),
            &podwire_driver::pci::Sysfs::system(),
        )
        .map_err(|e| PortBuildError { name: cfg.name.clone(), reason: e.to_string() }),
        PortKind::AfXdp(x) => {
            let xcfg = AfXdpConfig {
                name: cfg.name.clone(),
                interface: x.interface.clone(),
                queues: x.queues,
                xdp_mode: x.xdp_mode,
                zero_copy: x.zero_copy,
                replace_program: x.replace_program,
                ring_size: DEFAULT_RING_SIZE,
            };
            AfXdpPort::new(xcfg, pool.clone()).map(|p| Box::new(p) as Box<dyn Port>).map_err(|e| {
                PortBuildError {
                    name: cfg.name.clone(),
                    reason: format!("AF_XDP on {}: {e}", x.interface),
                }
            })
        }
    }
}

/// Creates every port in config order. On error the ports already created are
/// dropped (removing their sockets).
pub fn build_ports(
    cfgs: &[PortConfig],
    pool: &Mempool,
) -> Result<Vec<Box<dyn Port>>, PortBuildError> {
    cfgs.iter().map(|c| build_port(c, pool)).collect()
}
