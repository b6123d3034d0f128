//! `GET /metrics`: the daemon's counters in the Prometheus text exposition format,
//! version 0.0.4 (`Content-Type: text/plain; version=0.0.4`), served on the control
//! socket and, when the config has `metrics_listen`, on a loopback TCP port
//! ([`super::metrics_listener`]).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `podwire_port_rx_packets_total`, `_rx_bytes_total`, `_tx_packets_total`, `_tx_bytes_total`, `_rx_drops_total`, `_tx_drops_total`, `_errors_total`, `_cross_worker_drops_total` (frames a bridge on another worker could not hand over: ring full) | counter | `port`, `kind` |
//! | `podwire_port_link_up` (1 up, 0 down) | gauge | `port`, `kind` |
//! | `podwire_bridge_frames_total` | counter | `bridge`, `action` (forwarded, flooded, filtered, vlan_drop, runt, no_buffer, cross_worker_drop: for a port on another worker, ring full or port gone) |
//! | `podwire_bridge_mac_events_total` | counter | `bridge`, `event` (learned, moved, table_full, aged) |
//! | `podwire_bridge_mac_entries` | gauge | `bridge` |
//! | `podwire_mempool_buffers` | gauge | (none) |
//! | `podwire_mempool_buffers_free` (in the shared ring or a worker's cache; the rest are held by rings and packets in flight) | gauge | (none) |
//! | `podwire_worker_polls_total` | counter | `worker`, `core`, `state` (busy: the round moved packets; idle: it did not) |
//! | `podwire_http_requests_rejected_total` (answered 4xx: malformed, too large, too slow, unknown path or method) | counter | `listener` (control, metrics) |
//! | `podwire_state_file_write_failures_total` (the state file could not be written: what the control API made since the last good write would not survive a restart) | counter | (none) |
//!
//! A worker's busy ratio over an interval is
//! `rate(podwire_worker_polls_total{state="busy"}[1m]) / sum without(state)(rate(podwire_worker_polls_total[1m]))`.
//! Everything is read from the same relaxed counters `GET /stats` reads: scraping
//! costs the datapath nothing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::sync::Arc;

use super::server::ControlState;
use super::{MempoolStats, PortStats};
use crate::bridge::BridgeShared;
use crate::engine::{PortStatus, WorkerPollStats};
use crate::switch::Switch;

/// The path, on the control socket and on the TCP listener.
pub const PATH: &str = "/metrics";
/// The content type of format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which HTTP listener answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The control socket.
    Control,
    /// The `metrics_listen` TCP port.
    Metrics,
}

/// Requests answered with a 4xx status, per listener (process-wide: one daemon per
/// process).
static REJECTED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Counts an answer given by `listener` with status `code` (only 4xx are counted).
pub fn count_answer(listener: Listener, code: u16) {
    if (400..500).contains(&code) {
        REJECTED[listener as usize].fetch_add(1, Relaxed);
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Builds an exposition: one `# HELP` and `# TYPE` per family, then its samples.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes backslash and line feed only.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label_value(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// What one scrape reads: handles on the live counters, taken from the switch under
/// its lock and read after it is released.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Ports.
    pub ports: Vec<Arc<PortStatus>>,
    /// Bridges.
    pub bridges: Vec<Arc<BridgeShared>>,
    /// Workers' poll counters.
    pub workers: Vec<Arc<WorkerPollStats>>,
    /// Packet buffers (absent for a snapshot without a pool).
    pub mempool: Option<MempoolStats>,
}

impl Snapshot {
    /// The handles of the running `switch`.
    pub fn of(switch: &Switch) -> Self {
        let engine = switch.engine();
        Self {
            ports: engine.status(),
            bridges: engine.bridges(),
            workers: engine.worker_polls(),
            mempool: Some(switch.mempool()),
        }
    }
}

/// The exposition text for `state`.
pub fn render(state: &Snapshot) -> String {
    let mut e = Exposition::default();
    let ports: Vec<PortStats> = state.ports.iter().map(|s| PortStats::of(s)).collect();
    type PortField = fn(&PortStats) -> u64;
    let port_counters: [(&str, &str, PortField); 8] = [
        ("rx_packets", "Packets received on the port.", |p| p.rx_packets),
        ("rx_bytes", "Bytes received on the port.", |p| p.rx_bytes),
        ("tx_packets", "Packets sent on the port.", |p| p.tx_packets),
        ("tx_bytes", "Bytes sent on the port.", |p| p.tx_bytes),
        ("rx_drops", "Received packets dropped (by the port or the kernel).", |p| p.rx_drops),
        ("tx_drops", "Packets to send that were dropped.", |p| p.tx_drops),
        ("errors", "Errors on the port (bad descriptors, peer faults).", |p| p.errors),
        (
            "cross_worker_drops",
            "Frames for the port that a bridge on another worker could not hand over (ring full).",
            |p| p.cross_worker_drops,
        ),
    ];
    for (field, help, get) in port_counters {
        let name = format!("podwire_port_{field}_total");
        e.family(&name, "counter", help);
        for p in &ports {
            e.sample(&name, &[("port", &p.name), ("kind", &p.kind)], get(p));
        }
    }
    e.family("podwire_port_link_up", "gauge", "1 when the port's link is up, else 0.");
    for p in &ports {
        e.sample(
            "podwire_port_link_up",
            &[("port", &p.name), ("kind", &p.kind)],
            u64::from(p.link == "up"),
        );
    }

    e.family(
        "podwire_bridge_frames_total",
        "counter",
        "Frames handled by an L2 bridge, by what happened to them.",
    );
    for b in &state.bridges {
        let c = b.counters();
        for (action, v) in [
            ("forwarded", &c.forwarded),
            ("flooded", &c.flooded),
            ("filtered", &c.filtered),
            ("vlan_drop", &c.vlan_drops),
            ("runt", &c.runts),
            ("no_buffer", &c.no_buffer),
            ("cross_worker_drop", &c.cross_worker_drops),
        ] {
            e.sample(
                "podwire_bridge_frames_total",
                &[("bridge", b.name()), ("action", action)],
                v.load(Relaxed),
            );
        }
    }
    e.family("podwire_bridge_mac_events_total", "counter", "MAC table events of an L2 bridge.");
    for b in &state.bridges {
        let c = b.counters();
        for (event, v) in [
            ("learned", &c.learned),
            ("moved", &c.moved),
            ("table_full", &c.table_full),
            ("aged", &c.aged),
        ] {
            e.sample(
                "podwire_bridge_mac_events_total",
                &[("bridge", b.name()), ("event", event)],
                v.load(Relaxed),
            );
        }
    }
    e.family("podwire_bridge_mac_entries", "gauge", "Addresses in a bridge's MAC table.");
    for b in &state.bridges {
        e.sample(
            "podwire_bridge_mac_entries",
            &[("bridge", b.name())],
            b.counters().entries.load(Relaxed),
        );
    }

    if let Some(pool) = &state.mempool {
        e.family("podwire_mempool_buffers", "gauge", "Packet buffers in the mempool.");
        e.sample("podwire_mempool_buffers", &[], pool.total);
        e.family(
            "podwire_mempool_buffers_free",
            "gauge",
            "Free packet buffers (in the shared ring or a worker's cache); the rest are held \
             by ports' rings and packets in flight.",
        );
        e.sample("podwire_mempool_buffers_free", &[], pool.free);
    }

    e.family(
        "podwire_worker_polls_total",
        "counter",
        "Poll rounds of a worker: busy when the round moved packets, idle when it did not.",
    );
    for (i, w) in state.workers.iter().enumerate() {
        let (worker, core) = (i.to_string(), w.core().to_string());
        for (st, v) in [("busy", w.busy()), ("idle", w.idle())] {
            e.sample(
                "podwire_worker_polls_total",
                &[("worker", &worker), ("core", &core), ("state", st)],
                v,
            );
        }
    }
    e.family(
        "podwire_http_requests_rejected_total",
        "counter",
        "Requests answered with a 4xx status (malformed, too large, too slow, unknown path or \
         method).",
    );
    for (listener, which) in [("control", Listener::Control), ("metrics", Listener::Metrics)] {
        e.sample(
            "podwire_http_requests_rejected_total",
            &[("listener", listener)],
            REJECTED[which as usize].load(Relaxed),
        );
    }
    e.family(
        "podwire_state_file_write_failures_total",
        "counter",
        "State-file writes that failed: what the control API made since the last good write \
         would not survive a restart.",
    );
    e.sample(
        "podwire_state_file_write_failures_total",
        &[],
        crate::switch::state_file::write_failures(),
    );
    e.text
}

/// The answer to a request for [`PATH`]: status, content type, body.
pub fn respond(method: &str, state: &ControlState) -> (u16, &'static str, String) {
    match method {
        "GET" => {
            let snapshot = Snapshot::of(&state.lock());
            (200, CONTENT_TYPE, render(&snapshot))
        }
        // HEAD would need a body-less response; scrapers use GET.
        _ => (
            405,
            "application/json",
            super::http::error_body(&format!("{method} is not allowed on {PATH}; use GET")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(escape_label_value("plain-name_0"), "plain-name_0");
    }

    #[test]
    fn empty_state_has_every_family_once() {
        let text = render(&Snapshot::default());
        for fam in [
            "podwire_port_rx_packets_total",
            "podwire_port_errors_total",
            "podwire_port_link_up",
            "podwire_bridge_frames_total",
            "podwire_worker_polls_total",
            "podwire_state_file_write_failures_total",
        ] {
            assert_eq!(text.matches(&format!("# TYPE {fam} ")).count(), 1, "{fam}:\n{text}");
            assert_eq!(text.matches(&format!("# HELP {fam} ")).count(), 1, "{fam}:\n{text}");
        }
        assert!(text.ends_with('\n'));
        assert!(!text.contains("mempool"), "no pool given: {text}");
    }

    #[test]
    fn samples_carry_escaped_labels() {
        let mut e = Exposition::default();
        e.sample("m", &[("port", "we\"ird"), ("kind", "k")], 7);
        e.sample("n", &[], 0);
        assert_eq!(e.text, "m{port=\"we\\\"ird\",kind=\"k\"} 7\nn 0\n");
    }
}
