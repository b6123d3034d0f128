//! podwire-vhost: the device side of vhost-user for virtio-net, and its poll-mode
//! virtqueue datapath (split and packed rings).
//!
//! A [`VhostUserPort`] is a [`podwire_driver::Port`]: the worker that owns it polls the
//! frontend's rings directly; a control thread per port speaks the vhost-user
//! protocol on the unix socket and hands ready rings to the worker ([`handoff`]).
//!
//! The protocol layer is written here rather than taken from the `vhost` crate: that
//! crate (0.18) does not handle SET_STATUS/GET_STATUS, and this is the boundary where
//! every byte from a possibly hostile pod is checked and counted.
#![warn(missing_docs)]

pub mod conn;
pub mod device;
pub mod error;
pub mod fault;
pub mod handoff;
pub mod memory;
pub mod port;
pub mod proto;
pub mod ring;

pub use error::{ProtocolError, RingError, VhostError};
pub use port::{SocketMode, VhostUserConfig, VhostUserPort, MAX_QUEUE_PAIRS};
