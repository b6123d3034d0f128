//! The control API: HTTP/1.1 with JSON bodies on a unix socket, served by a thread
//! that is not on the datapath. The contract is docs/control-api.md:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /stats` | `{"ports":[{"name","kind","mac","link","queues","rx_packets",...}],"mempool":{"total","free"},"control":{"requests","rejected"}}` |
//! | `GET /health` | `{"status":"ok"}` |
//! | `GET /ports`, `GET /ports/NAME` | [`PortList`], [`PortView`] |
//! | `POST /ports`, `DELETE /ports/NAME` | a `[[ports]]` table in JSON (+ `bridge`, `vlan`/`trunk`) → 201 [`PortView`]; 204 |
//! | `GET /bridges`, `GET /bridges/NAME`, `GET /bridges/NAME/macs` | [`BridgeInfo`]s, [`MacTableResponse`] |
//! | `POST /bridges`, `DELETE /bridges/NAME` | `{"name","mac_age_secs","mac_table_size"}` → 201; 204 (409 with members) |
//! | `POST /bridges/NAME/ports`, `DELETE /bridges/NAME/ports/PORT` | `{"port","vlan"|"trunk"}` → 201; 204 |
//! | `GET /xconnects`, `POST /xconnects`, `DELETE /xconnects/PORT` | [`XconnectList`]; `{"ports":[a,b]}` → 201; 204 |
//! | `POST /reload` | [`ReloadReport`] |
//! | `GET /metrics` | Prometheus text exposition 0.0.4 ([`metrics`]) |
//! | anything else | 404 / 405 / 400 / 409 / 411 / 413 with `{"error":"...","field":"..."}` |
//!
//! `curl --unix-socket /run/podwire/podwire.sock http://x/stats` works; the `podwire`
//! CLI ([`cli`]) is the bundled client. The operations themselves are in
//! [`crate::switch`].

pub mod cli;
pub mod client;
mod conn;
pub mod http;
pub mod metrics;
pub mod metrics_listener;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::bridge::{BridgeShared, MacReport, VlanMode};
use crate::engine::PortStatus;

pub use client::{fetch_stats, get_json, ClientError};
pub use server::{ControlServer, ControlState, ServerError};

/// One bridge port as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgePortInfo {
    /// Port name.
    pub name: String,
    /// Access VLAN (absent for a trunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Trunk VLANs (absent for an access port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Vec<u16>>,
}

/// Bridge counters as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeCountersInfo {
    /// Frames sent to the one port their destination was learned on.
    pub forwarded: u64,
    /// Frames flooded.
    pub flooded: u64,
    /// Frames whose destination is on their ingress port (dropped).
    pub filtered: u64,
    /// Frames dropped at ingress for their VLAN tag.
    pub vlan_drops: u64,
    /// Frames shorter than an Ethernet header.
    pub runts: u64,
    /// Flood copies without a buffer.
    pub no_buffer: u64,
    /// Addresses learned.
    pub learned: u64,
    /// Addresses that moved port.
    pub moved: u64,
    /// Addresses not learned: table full.
    pub table_full: u64,
    /// Addresses aged out.
    pub aged: u64,
    /// Entries in the table (the largest of the per-worker tables).
    pub entries: u64,
    /// Frames for a port on another worker dropped: the ring to that worker was
    /// full, or the port left while they were in it.
    #[serde(default)]
    pub cross_worker_drops: u64,
}

/// A bridge as reported by `GET /bridges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeInfo {
    /// Name.
    pub name: String,
    /// Member ports.
    pub ports: Vec<BridgePortInfo>,
    /// MAC age.
    pub mac_age_secs: u32,
    /// MAC table entry limit.
    pub mac_table_size: usize,
    /// Counters.
    pub counters: BridgeCountersInfo,
}

impl BridgeInfo {
    /// Reads a bridge's live state.
    pub fn of(b: &BridgeShared) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let c = b.counters();
        Self {
            name: b.name().to_owned(),
            ports: b
                .ports()
                .iter()
                .map(|(name, mode)| match mode {
                    VlanMode::Access(v) => {
                        BridgePortInfo { name: name.clone(), vlan: Some(*v), trunk: None }
                    }
                    VlanMode::Trunk(ids) => {
                        BridgePortInfo { name: name.clone(), vlan: None, trunk: Some(ids.clone()) }
                    }
                })
                .collect(),
            mac_age_secs: b.mac_age_secs(),
            mac_table_size: b.mac_table_size(),
            counters: BridgeCountersInfo {
                forwarded: c.forwarded.load(Relaxed),
                flooded: c.flooded.load(Relaxed),
                filtered: c.filtered.load(Relaxed),
                vlan_drops: c.vlan_drops.load(Relaxed),
                runts: c.runts.load(Relaxed),
                no_buffer: c.no_buffer.load(Relaxed),
                learned: c.learned.load(Relaxed),
                moved: c.moved.load(Relaxed),
                table_full: c.table_full.load(Relaxed),
                aged: c.aged.load(Relaxed),
                entries: c.entries.load(Relaxed),
                cross_worker_drops: c.cross_worker_drops.load(Relaxed),
            },
        }
    }
}

/// One MAC table entry as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacEntryInfo {
    /// `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// VLAN id.
    pub vlan: u16,
    /// Port name.
    pub port: String,
    /// Seconds since last seen.
    pub age_secs: f64,
}

/// The answer to `GET /bridges/NAME/macs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacTableResponse {
    /// The bridge.
    pub bridge: String,
    /// Live entries, by VLAN then MAC.
    pub entries: Vec<MacEntryInfo>,
}

impl MacTableResponse {
    /// From a bridge's reported entries.
    pub fn new(bridge: &str, entries: Vec<MacReport>) -> Self {
        Self {
            bridge: bridge.to_owned(),
            entries: entries
                .into_iter()
                .map(|e| MacEntryInfo {
                    mac: e.mac,
                    vlan: e.vlan,
                    port: e.port,
                    age_secs: e.age_secs,
                })
                .collect(),
        }
    }

    /// A readable table.
    pub fn to_table(&self) -> String {
        let mut out = format!("{:<17} {:>5} {:<16} {:>8}\n", "MAC", "VLAN", "PORT", "AGE(s)");
        for e in &self.entries {
            out.push_str(&format!(
                "{:<17} {:>5} {:<16} {:>8.1}\n",
                e.mac, e.vlan, e.port, e.age_secs
            ));
        }
        if self.entries.is_empty() {
            out.push_str(&format!("(no addresses learned on {})\n", self.bridge));
        }
        out
    }
}

/// The answer to `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// One entry per port, in config order, then in the order they were added.
    pub ports: Vec<PortStats>,
    /// Packet buffers (absent in answers of older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mempool: Option<MempoolStats>,
    /// Control API requests (absent in answers of older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlStats>,
}

/// Requests the control socket answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStats {
    /// Requests answered (before this one).
    pub requests: u64,
    /// Of those, refused with a 4xx or 5xx status.
    pub rejected: u64,
}

/// Occupancy of the packet buffer pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolStats {
    /// Buffers in the pool.
    pub total: u64,
    /// Buffers free: in the shared ring or a worker's cache. Packets held by ports
    /// (rings, in flight) are the difference.
    pub free: u64,
}

/// A port as `GET /ports` reports it (docs/control-api.md, `PortView`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    /// Port name.
    pub name: String,
    /// Port type ("vhost-user", "af-xdp", "vfio").
    pub kind: String,
    /// MAC address.
    pub mac: String,
    /// "up" or "down".
    pub link: String,
    /// Number of queues.
    pub queues: u16,
    /// Socket path (vhost-user only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// "server" or "client" (vhost-user only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The bridge the port is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Access VLAN (bridge members that are not trunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Trunk VLANs (bridge members that are trunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Vec<u16>>,
    /// The cross-connected peer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xconnect: Option<String>,
    /// The core of the worker polling the port (absent when it is not polled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// "config" (from the file) or "api" (created through the control API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
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

/// The answer to `GET /ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortList {
    /// Every port.
    pub ports: Vec<PortView>,
}

/// One cross-connect as `GET /xconnects` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XconnectView {
    /// The two ports.
    pub ports: [String; 2],
}

/// The answer to `GET /xconnects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XconnectList {
    /// Every cross-connect.
    pub xconnects: Vec<XconnectView>,
}

/// The answer to `POST /reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Ports created from the file.
    pub added: Vec<String>,
    /// Ports removed because they left the file.
    pub removed: Vec<String>,
    /// Ports whose settings, bridge or cross-connect changed in the file.
    pub changed: Vec<String>,
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
    /// Frames for this port that a bridge on another worker could not hand over
    /// (the ring to this port's worker was full).
    #[serde(default)]
    pub cross_worker_drops: u64,
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
            cross_worker_drops: s.cross_worker_drops(),
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
