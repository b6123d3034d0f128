//! The demo's closing summary and verdict.

use super::steps::TrafficReport;
use super::traffic::TcpResult;
use super::{say, DemoOptions};
use crate::control::{BridgeInfo, PortStats};

pub(crate) fn describe_tcp(r: &TcpResult) -> String {
    format!(
        "{} bytes in {:.2} s ({:.1} Mbit/s), {}",
        r.bytes,
        r.seconds,
        r.mbit_per_s(),
        if r.intact { "every byte verified" } else { "DATA CORRUPTED OR SHORT" }
    )
}

/// `(worker, core, busy, idle)` from a `/metrics` body.
pub(crate) fn worker_polls(body: &str) -> Vec<(String, String, u64, u64)> {
    let mut out: Vec<(String, String, u64, u64)> = Vec::new();
    for line in body.lines().filter(|l| l.starts_with("podwire_worker_polls_total{")) {
        let label = |k: &str| {
            line.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let value: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let (w, c) = (label("worker"), label("core"));
        let i = match out.iter().position(|x| x.0 == w) {
            Some(i) => i,
            None => {
                out.push((w, c, 0, 0));
                out.len() - 1
            }
        };
        match label("state").as_str() {
            "busy" => out[i].2 = value,
            _ => out[i].3 = value,
        }
    }
    out
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Prints the summary; whether every check passed.
pub(crate) fn summary(
    opts: &DemoOptions,
    report: &TrafficReport,
    ports: &[PortStats],
    bridge: Option<&BridgeInfo>,
    polls: &[(String, String, u64, u64)],
    pod: Option<(u64, u64)>,
) -> bool {
    let mut problems = Vec::new();
    say("summary");
    for (label, r) in &report.pings {
        out!("  {label:<22} {}", r.describe());
        if !r.ok() {
            problems.push(format!("{label}: {}", r.describe()));
        }
    }
    match &report.tcp {
        Some(r) => {
            out!("  {:<22} {}", "tcp ns-a -> ns-b", describe_tcp(r));
            if !r.intact || r.bytes != opts.tcp_bytes {
                problems.push(format!(
                    "tcp: {} of {} bytes, intact: {}",
                    r.bytes, opts.tcp_bytes, r.intact
                ));
            }
        }
        None => problems.push("tcp: no transfer".into()),
    }
    for p in ports {
        out!(
            "  port {:<6} {:<10} rx {} pkts / {}, tx {} pkts / {}, drops {}, errors {}",
            p.name,
            p.kind,
            p.rx_packets,
            human_bytes(p.rx_bytes),
            p.tx_packets,
            human_bytes(p.tx_bytes),
            p.rx_drops + p.tx_drops,
            p.errors
        );
        if p.rx_packets == 0 || p.tx_packets == 0 {
            problems.push(format!("port {}: nothing forwarded", p.name));
        }
    }
    if ports.is_empty() {
        problems.push("no port counters from podwire".into());
    }
    if let Some(b) = bridge {
        let c = &b.counters;
        out!(
            "  bridge {}: forwarded {}, flooded {}, learned {}, MAC entries {}",
            b.name,
            c.forwarded,
            c.flooded,
            c.learned,
            c.entries
        );
    }
    for (w, core, busy, idle) in polls {
        let total = busy + idle;
        let pct = if total > 0 { *busy as f64 * 100.0 / total as f64 } else { 0.0 };
        out!(
            "  worker {w} (core {core}): {busy} of {total} poll rounds moved packets ({pct:.3}%, \
             GET /metrics)"
        );
    }
    if let Some((rx, tx)) = pod {
        out!("  pod (testpmd icmpecho): rx {rx} pkts, tx {tx} pkts (its own counters)");
    }
    if problems.is_empty() {
        out!("  all checks passed: ping, TCP bytes verified, every port forwarded");
        true
    } else {
        for p in &problems {
            out!("  CHECK FAILED: {p}");
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_worker_polls_from_metrics() {
        let body = "# TYPE podwire_worker_polls_total counter\n\
                    podwire_worker_polls_total{worker=\"0\",core=\"1\",state=\"busy\"} 25\n\
                    podwire_worker_polls_total{worker=\"0\",core=\"1\",state=\"idle\"} 75\n";
        assert_eq!(worker_polls(body), vec![("0".into(), "1".into(), 25, 75)]);
    }
}
