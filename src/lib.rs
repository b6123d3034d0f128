//! podwire: the forwarding daemon.
//!
//! - [`config`]: the TOML config, validated completely at start.
//! - [`ports`]: building ports from their config.
//! - [`engine`]: pinned poll-mode workers running cross-connects and bridges.
//! - [`bridge`]: L2 bridges (MAC learning and aging, flooding, 802.1Q VLANs).
//! - [`control`]: HTTP+JSON control API on a unix socket, and its client.
//! - [`signals`]: SIGINT/SIGTERM/SIGHUP, collected synchronously.
//! - [`switch`]: the running switch: runtime ports, bridges, cross-connects, reload.
//! - [`daemon`]: `podwire run`, tying the above together.
//! - [`doctor`]: `podwire doctor`, the host readiness checks.
//! - [`echo`]: `podwire pci echo`, an ARP/ping responder on a VFIO port.
#![warn(missing_docs)]

pub mod bridge;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod echo;
pub mod engine;
pub mod ports;
pub mod signals;
pub mod switch;

pub use config::{Config, ConfigError};
pub use engine::{Engine, EngineError, PortStatus};
