//! Frames crossing from one worker to another: a bridge whose members are polled by
//! several workers switches each frame on the worker that received it, and a frame
//! for a member of another worker travels in a [`CrossPacket`] through the
//! single-producer/single-consumer ring from the sending worker to that worker (one
//! ring per ordered pair of workers, see [`super::ring`]). The receiving worker drains
//! its inbound rings every poll round and transmits in bursts.

use podwire_driver::PacketBuf;

use super::ring::{self, Consumer, Producer};

/// Frames a ring between two workers holds at most; a frame finding it full is
/// dropped and counted (`cross_worker_drops`).
pub(crate) const CROSS_RING_CAPACITY: usize = 1024;

/// `dst_port` of a frame to flood to every member of the receiving worker that
/// carries its VLAN.
pub(crate) const FLOOD_PORT: u32 = u32::MAX;

/// One frame for another worker: untagged, with its VLAN beside it.
pub(crate) struct CrossPacket {
    pub(crate) pkt: PacketBuf,
    /// The bridge's engine-wide id.
    pub(crate) bridge: u32,
    /// The member it was received on (engine-wide port id): the receiver learns its
    /// source address there.
    pub(crate) src_port: u32,
    /// The member to send it on, or [`FLOOD_PORT`].
    pub(crate) dst_port: u32,
    pub(crate) vid: u16,
}

/// A worker's sending end towards one other worker.
pub(crate) type Outbound = Producer<CrossPacket>;
/// A worker's receiving end from one other worker.
pub(crate) type Inbound = Consumer<CrossPacket>;

/// The rings between `n` workers: for worker `i`, `tx[i][j]` sends to worker `j`
/// (`None` for `j == i`) and `rx[i]` holds one ring from each other worker.
pub(crate) fn mesh(n: usize) -> (Vec<Vec<Option<Outbound>>>, Vec<Vec<Inbound>>) {
    let mut tx: Vec<Vec<Option<Outbound>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut rx: Vec<Vec<Inbound>> = (0..n).map(|_| Vec::new()).collect();
    for (i, row) in tx.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            if i != j {
                let (p, c) = ring::channel(CROSS_RING_CAPACITY);
                *slot = Some(p);
                rx[j].push(c);
            }
        }
    }
    (tx, rx)
}
