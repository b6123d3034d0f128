//! Building ports from their configuration.

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
