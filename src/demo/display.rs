//! The demo's live view: per-port counters with rates and the current step, redrawn
//! in place on a terminal (ANSI cursor movement) and printed as plain tables every
//! few seconds when stdout is not a terminal (a log, a CI job).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::control::PortStats;

/// How often a terminal view is redrawn.
pub const TTY_REFRESH: Duration = Duration::from_millis(500);
/// How often a plain view prints a table.
pub const PLAIN_REFRESH: Duration = Duration::from_secs(3);

/// The live view.
#[derive(Debug)]
pub struct LiveView {
    tty: bool,
    lines_drawn: usize,
    last_draw: Option<Instant>,
    last: Vec<(String, u64, u64)>,
    last_at: Option<Instant>,
    started: Instant,
}

impl LiveView {
    /// A view for a terminal (`tty`) or for plain output.
    pub fn new(tty: bool) -> Self {
        Self {
            tty,
            lines_drawn: 0,
            last_draw: None,
            last: Vec::new(),
            last_at: None,
            started: Instant::now(),
        }
    }

    /// Whether this view redraws in place.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Whether a redraw is due.
    pub fn due(&self) -> bool {
        let every = if self.tty { TTY_REFRESH } else { PLAIN_REFRESH };
        self.last_draw.is_none_or(|t| t.elapsed() >= every)
    }

    /// Forgets what was drawn, so the next draw starts below any text printed since.
    pub fn detach(&mut self) {
        self.lines_drawn = 0;
    }

    /// Prints `events` (lines that stay), then the table for `ports` under the line
    /// `step` (redrawn in place on a terminal).
    pub fn draw(&mut self, events: &[String], step: &str, ports: &[PortStats]) {
        let now = Instant::now();
        let secs = self.last_at.map(|t| now.duration_since(t).as_secs_f64()).unwrap_or(0.0);
        let mut text = String::new();
        text.push_str(&format!(
            "  [{:>5.1}s] {step}\n  {:<6} {:<10} {:<4} {:>10} {:>12} {:>10} {:>12} {:>9} {:>9} {:>6} {:>6}\n",
            self.started.elapsed().as_secs_f64(),
            "PORT",
            "KIND",
            "LINK",
            "RX-PKTS",
            "RX-BYTES",
            "TX-PKTS",
            "TX-BYTES",
            "RX-PPS",
            "TX-PPS",
            "DROPS",
            "ERRORS"
        ));
        for p in ports {
            let prev = self.last.iter().find(|(n, _, _)| *n == p.name);
            let rate = |now: u64, before: Option<u64>| match before {
                Some(b) if secs > 0.0 => format!("{:.0}", now.saturating_sub(b) as f64 / secs),
                _ => "-".to_string(),
            };
            text.push_str(&format!(
                "  {:<6} {:<10} {:<4} {:>10} {:>12} {:>10} {:>12} {:>9} {:>9} {:>6} {:>6}\n",
                p.name,
                p.kind,
                p.link,
                p.rx_packets,
                p.rx_bytes,
                p.tx_packets,
                p.tx_bytes,
                rate(p.rx_packets, prev.map(|x| x.1)),
                rate(p.tx_packets, prev.map(|x| x.2)),
                p.rx_drops + p.tx_drops,
                p.errors
            ));
        }
        let mut out = std::io::stdout().lock();
        if self.tty && self.lines_drawn > 0 {
            // Up to the first line of the previous table, and clear to the end.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.lines_drawn);
        }
        for e in events {
            let _ = writeln!(out, "{e}");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.lines_drawn = if self.tty { text.lines().count() } else { 0 };
        self.last = ports.iter().map(|p| (p.name.clone(), p.rx_packets, p.tx_packets)).collect();
        self.last_at = Some(now);
        self.last_draw = Some(now);
    }
}

/// A text progress bar: `[#####-----]  50%`.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let frac = if total == 0 { 1.0 } else { (done as f64 / total as f64).min(1.0) };
    let full = (frac * width as f64).round() as usize;
    format!("[{}{}] {:>3.0}%", "#".repeat(full), "-".repeat(width - full), frac * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0, 10, 4), "[----]   0%");
        assert_eq!(bar(5, 10, 4), "[##--]  50%");
        assert_eq!(bar(20, 10, 4), "[####] 100%");
        assert_eq!(bar(0, 0, 2), "[##] 100%");
    }
}
