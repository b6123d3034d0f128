//! The Port API: the one burst-oriented interface every port implements (vhost-user,
//! AF_XDP, VFIO NICs), modelled on DPDK's ethdev.
//!
//! # Ownership and threading rules
//! - A `Port` is owned by exactly one worker thread at a time; only that thread calls
//!   [`Port::rx_burst`] and [`Port::tx_burst`]. Ports are `Send` so they can be moved to
//!   their worker, but never shared: there is no locking on the datapath.
//! - `rx_burst` appends received packets to the caller's vector; they are the caller's
//!   from then on (dropping one returns it to its mempool).
//! - `tx_burst` takes packets from the *front* of the caller's vector and returns how
//!   many it took; the packets it did not take stay in the vector, in order, still
//!   owned by the caller (who may retry or drop them, and counts the drop).
//! - Counters live in a [`PortCounters`] shared by `Arc`: the worker updates them
//!   (single writer, relaxed atomics, no read-modify-write), and any thread may read
//!   them, for example the control socket serving `podwire stats`.
//! - Everything else (`info`, `link_up`) may be called by the owning thread only,
//!   and is cheap enough to call once per poll round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::mempool::PacketBuf;

/// Packets moved per burst unless configured otherwise.
pub const BURST_SIZE: usize = 32;

/// A 48-bit Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random locally administered unicast address.
    pub fn random_local() -> Self {
        let mut b = [0u8; 6];
        // SAFETY: getrandom writes at most b.len() bytes into b.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n != b.len() as isize {
            // Fall back to time and pid: uniqueness, not secrecy, is what matters.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ ((std::process::id() as u64) << 20);
            b.copy_from_slice(&t.to_le_bytes()[..6]);
        }
        b[0] = (b[0] & 0xfe) | 0x02;
        Self(b)
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a MAC address (want xx:xx:xx:xx:xx:xx)"));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("{s:?} is not a MAC address (want xx:xx:xx:xx:xx:xx)"));
            }
            b[i] = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (bad hex {p:?})"))?;
        }
        Ok(Self(b))
    }
}

/// What a port is, for the registry and for `podwire stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Kind of port ("vhost-user", "af-xdp", "vfio", ...).
    pub kind: &'static str,
    /// MAC address of the port (the guest's, for a vhost-user port).
    pub mac: MacAddr,
    /// Number of rx queues (equal to tx queues for every port podwire has).
    pub queues: u16,
}

/// Counters of one queue. Single writer (the owning worker), many readers.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct QueueCounters {
    /// Packets received.
    pub rx_packets: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// Packets transmitted.
    pub tx_packets: AtomicU64,
    /// Bytes transmitted.
    pub tx_bytes: AtomicU64,
    /// Packets received by the port but dropped (no buffer, peer refused them).
    pub rx_drops: AtomicU64,
    /// Packets handed to the port for transmission but dropped (no room).
    pub tx_drops: AtomicU64,
    /// Errors: malformed input from the peer or the device.
    pub errors: AtomicU64,
}

/// Adds `n` to a single-writer counter without a read-modify-write instruction.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl QueueCounters {
    /// Counts `packets` received carrying `bytes`.
    #[inline]
    pub fn count_rx(&self, packets: usize, bytes: usize) {
        if packets > 0 {
            bump(&self.rx_packets, packets as u64);
            bump(&self.rx_bytes, bytes as u64);
        }
    }

    /// Counts `packets` transmitted carrying `bytes`.
    #[inline]
    pub fn count_tx(&self, packets: usize, bytes: usize) {
        if packets > 0 {
            bump(&self.tx_packets, packets as u64);
            bump(&self.tx_bytes, bytes as u64);
        }
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_drops: self.rx_drops.load(Ordering::Relaxed),
            tx_drops: self.tx_drops.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Plain copy of counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Received packets dropped.
    pub rx_drops: u64,
    /// Packets to transmit dropped.
    pub tx_drops: u64,
    /// Errors.
    pub errors: u64,
}

impl std::ops::AddAssign for CounterSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_drops += o.rx_drops;
        self.tx_drops += o.tx_drops;
        self.errors += o.errors;
    }
}

/// Counters of all queues of one port.
#[derive(Debug)]
pub struct PortCounters {
    queues: Box<[QueueCounters]>,
    /// Errors outside any queue's datapath (a malformed control message from the
    /// peer, a failed reconnect). Any thread may add to it with `fetch_add`.
    pub port_errors: AtomicU64,
}

impl PortCounters {
    /// Counters for `queues` queues, all zero.
    pub fn new(queues: u16) -> Arc<Self> {
        Arc::new(Self {
            queues: (0..queues.max(1)).map(|_| QueueCounters::default()).collect(),
            port_errors: AtomicU64::new(0),
        })
    }

    /// Counters of queue `q` (queue 0's when `q` is out of range, so a bad index never
    /// panics the datapath).
    #[inline]
    pub fn queue(&self, q: u16) -> &QueueCounters {
        self.queues.get(q as usize).unwrap_or(&self.queues[0])
    }

    /// Number of queues counted.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Counts one port-level error (any thread).
    pub fn count_port_error(&self) {
        self.port_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Sum over all queues, plus port-level errors.
    pub fn total(&self) -> CounterSnapshot {
        let mut t = CounterSnapshot {
            errors: self.port_errors.load(Ordering::Relaxed),
            ..Default::default()
        };
        for q in self.queues.iter() {
            t += q.snapshot();
        }
        t
    }
}

/// The interface every port implements. See the module docs for the rules.
pub trait Port: Send {
    /// The port's name (unique in the daemon).
    fn name(&self) -> &str;

    /// What the port is.
    fn info(&self) -> PortInfo;

    /// Whether the link is up (for a vhost-user port: a frontend is attached and its
    /// rings are ready).
    fn link_up(&self) -> bool;

    /// Appends at most `max` received packets of `queue` to `bufs`; returns how many.
    fn rx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize;

    /// Transmits packets from the front of `bufs` on `queue`, removing the ones it
    /// took; returns how many. Packets not taken stay in `bufs`, in order.
    fn tx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>) -> usize;

    /// The port's counters, shared with readers on other threads.
    fn counters(&self) -> Arc<PortCounters>;

    /// Called now and then, by the thread that owns it, on a port no worker polls:
    /// applies whatever control-plane changes wait for the datapath side (a vhost-user
    /// frontend starting or stopping rings), without moving packets. The default does
    /// nothing.
    fn service(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "02:00:0a:0B:ff:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:0a:0b:ff:01");
        assert!("02:00:0a:0b:ff".parse::<MacAddr>().is_err());
        assert!("02:00:0a:0b:ff:zz".parse::<MacAddr>().is_err());
        assert!("002:00:0a:0b:ff:01".parse::<MacAddr>().is_err());
        let r = MacAddr::random_local();
        assert_eq!(r.0[0] & 0x03, 0x02);
    }

    #[test]
    fn counters_sum_queues_and_tolerate_bad_index() {
        let c = PortCounters::new(2);
        c.queue(0).count_rx(3, 300);
        c.queue(1).count_rx(2, 200);
        c.queue(9).count_tx(1, 10);
        let t = c.total();
        assert_eq!((t.rx_packets, t.rx_bytes, t.tx_packets), (5, 500, 1));
    }
}
