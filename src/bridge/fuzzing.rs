//! The entry point of the bridge fuzz target (`fuzz/fuzz_targets/bridge.rs`): a
//! [`Bridge`] driven directly, with its clock set by the caller instead of read from
//! the system, so that a run is a function of its input. Not an API: the daemon builds
//! bridges through the engine.

use std::sync::Arc;

use podwire_driver::{Mempool, PacketBuf, Port};

use super::{Bridge, BridgeShared, BridgeSpec};
use crate::engine::PortStatus;

/// A bridge the fuzz target polls itself.
pub struct FuzzBridge(Bridge);

impl FuzzBridge {
    /// Builds the bridge from `ports` (in `spec.ports` order), as the engine does.
    pub fn new(spec: &BridgeSpec, ports: Vec<Box<dyn Port>>, pool: Mempool) -> Self {
        let ports = ports
            .into_iter()
            .zip(0u32..)
            .map(|(p, id)| {
                let status = Arc::new(PortStatus::of(p.as_ref()));
                (p, status, id)
            })
            .collect();
        Self(Bridge::new(spec, 0, 0, ports, pool))
    }

    /// One poll round (see `Bridge::poll`).
    pub fn poll(&mut self, buf: &mut Vec<PacketBuf>) -> usize {
        self.0.poll(buf, &mut [])
    }

    /// Sets the bridge clock (milliseconds since its start) and runs one aging step
    /// of `slots` slots; returns the entries aged out.
    pub fn age(&mut self, now_ms: u32, slots: usize) -> usize {
        self.0.now_ms = now_ms;
        self.0.table.sweep(now_ms, slots)
    }

    /// Entries in the MAC table (including expired ones not swept yet).
    pub fn table_len(&self) -> usize {
        self.0.table.len()
    }

    /// The view other threads get (counters).
    pub fn shared(&self) -> Arc<BridgeShared> {
        self.0.shared()
    }

    /// Gives the ports back.
    pub fn into_ports(self) -> Vec<Box<dyn Port>> {
        self.0.into_ports()
    }
}
