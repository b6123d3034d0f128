//! Cross-connect: everything received on one port is sent on the other, and back.

use std::sync::Arc;

use podwire_driver::port::bump;
use podwire_driver::{PacketBuf, Port, PortCounters, BURST_SIZE};

use super::PortStatus;

/// Two ports joined back to back, owned by one worker thread.
///
/// Both ports of a pair live on the same worker, so every counter the pair touches
/// (the ports' own and the drops counted here) keeps a single writer.
pub(crate) struct XconnectPair {
    pub(crate) ports: [Box<dyn Port>; 2],
    queues: [u16; 2],
    counters: [Arc<PortCounters>; 2],
    pub(crate) status: [Arc<PortStatus>; 2],
}

impl XconnectPair {
    pub(crate) fn new(ports: [Box<dyn Port>; 2], status: [Arc<PortStatus>; 2]) -> Self {
        let queues = [ports[0].info().queues.max(1), ports[1].info().queues.max(1)];
        let counters = [ports[0].counters(), ports[1].counters()];
        Self { ports, queues, counters, status }
    }

    /// Moves one burst per queue in each direction; returns the packets received.
    /// `buf` must be empty and is left empty.
    #[inline]
    pub(crate) fn poll(&mut self, buf: &mut Vec<PacketBuf>) -> usize {
        self.forward(0, buf) + self.forward(1, buf)
    }

    /// Receives on every queue of port `from` and transmits on the peer's queue
    /// `q % peer_queues`.
    ///
    /// Packets the peer does not take are dropped here and counted on the **peer's**
    /// `tx_drops` of that queue: the packet got as far as the peer's transmit queue and
    /// was refused there (no room, link down), which is what an operator looks for
    /// when a port is the bottleneck. The receiving port counted it as received.
    #[inline]
    fn forward(&mut self, from: usize, buf: &mut Vec<PacketBuf>) -> usize {
        let to = 1 - from;
        let [a, b] = &mut self.ports;
        let (src, dst) = if from == 0 { (a, b) } else { (b, a) };
        let dst_queues = self.queues[to];
        let mut received = 0;
        for q in 0..self.queues[from] {
            src.rx_burst(q, buf, BURST_SIZE);
            if buf.is_empty() {
                continue;
            }
            received += buf.len();
            let dq = q % dst_queues;
            dst.tx_burst(dq, buf);
            if !buf.is_empty() {
                bump(&self.counters[to].queue(dq).tx_drops, buf.len() as u64);
                buf.clear();
            }
        }
        received
    }

    /// Publishes link state and MAC of both ports for the control socket.
    pub(crate) fn publish_status(&self) {
        for (port, status) in self.ports.iter().zip(&self.status) {
            status.publish(port.as_ref());
        }
    }
}
