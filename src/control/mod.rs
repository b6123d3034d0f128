//! The control API: HTTP/1.1 with JSON bodies on a unix socket, served by a thread
//! that is not on the datapath.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /stats` | `{"ports":[{"name","kind","mac","link","queues","rx_packets",...}]}` |
//! | `GET /health` | `{"status":"ok"}` |
//! | anything else | 404 / 405 / 400 with `{"error":"..."}` |
//!
//! `curl --unix-socket /run/podwire/podwire.sock http://x/stats` works;
//! `podwire stats` is the bundled client.

pub mod client;
pub mod http;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::engine::PortStatus;

pub use client::{fetch_stats, ClientError};
pub use server::{ControlServer, ServerError};

/// The answer to `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// One entry per port, in config order.
    pub ports: Vec<PortStats>,
}

/// Counters and state of one port, summed over its queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Port name.
    pub name: String,
    /// Port type ("vhost-user", ...).
    pub kind: String,
    /// MAC address.
    pub mac: String,
    /// "up" or "down".
    pub link: String,
    /// Number of queues.
    pub queues: u16,
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
    /// Packets to transmit dropped (including those the engine could not hand over).
    pub tx_drops: u64,
    /// Errors.
    pub errors: u64,
}

impl PortStats {
    /// Reads a port's live status.
    pub fn of(s: &PortStatus) -> Self {
        let t = s.totals();
        Self {
            name: s.name().to_owned(),
            kind: s.kind().to_owned(),
            mac: s.mac().to_string(),
            link: if s.link_up() { "up" } else { "down" }.to_owned(),
            queues: s.queues(),
            rx_packets: t.rx_packets,
            rx_bytes: t.rx_bytes,
            tx_packets: t.tx_packets,
            tx_bytes: t.tx_bytes,
            rx_drops: t.rx_drops,
            tx_drops: t.tx_drops,
            errors: t.errors,
        }
    }
}

impl StatsResponse {
    /// A readable table, one line per port.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:<16} {:<10} {:<17} {:<4} {:>2} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10} {:>8}\n",
            "PORT",
            "KIND",
            "MAC",
            "LINK",
            "Q",
            "RX-PKTS",
            "RX-BYTES",
            "TX-PKTS",
            "TX-BYTES",
            "RX-DROP",
            "TX-DROP",
            "ERRORS"
        );
        for p in &self.ports {
            out.push_str(&format!(
                "{:<16} {:<10} {:<17} {:<4} {:>2} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10} {:>8}\n",
                p.name,
                p.kind,
                p.mac,
                p.link,
                p.queues,
                p.rx_packets,
                p.rx_bytes,
                p.tx_packets,
                p.tx_bytes,
                p.rx_drops,
                p.tx_drops,
                p.errors
            ));
        }
        if self.ports.is_empty() {
            out.push_str("(no ports)\n");
        }
        out
    }
}
