//! The traffic phase, run on its own thread while the main thread draws the live
//! view: first replies, counted pings, the checked TCP transfer, steady pings. It
//! reports through [`Progress`] (the current step and finished results).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::netns::Namespace;
use super::summary::describe_tcp;
use super::traffic::{self, PingResult, TcpResult};
use super::{display, teardown, DemoOptions, FIRST_REPLY_PATIENCE, POD_IP, TCP_PORT};

/// What the traffic thread is doing and has done, shared with the display.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    step: Mutex<String>,
    events: Mutex<Vec<String>>,
    tcp_received: Arc<AtomicU64>,
}

impl Progress {
    pub(crate) fn step(&self, s: String) {
        *self.step.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
    pub(crate) fn event(&self, s: String) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
    pub(crate) fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
    pub(crate) fn current(&self) -> String {
        self.step.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Results of the traffic phase.
#[derive(Debug, Default)]
pub(crate) struct TrafficReport {
    pub(crate) pings: Vec<(String, PingResult)>,
    pub(crate) tcp: Option<TcpResult>,
}

/// The traffic steps, in order; each result is also reported as an event line.
pub(crate) fn traffic_steps(
    a: &Namespace,
    b: &Namespace,
    with_pod: bool,
    opts: &DemoOptions,
    progress: &Progress,
    helpers: &teardown::Helpers,
) -> Result<TrafficReport, String> {
    let mut report = TrafficReport::default();
    let mut ping = |label: String, from: &Namespace, to_ip: &str, count: u32| {
        progress.step(format!("{label}: {count} pings"));
        let r = traffic::ping(&from.ns, to_ip, count, 0.1, 0, helpers)?;
        progress.event(format!("    {label:<22} {}", r.describe()));
        report.pings.push((label, r));
        Ok::<_, String>(())
    };
    // First replies: the path is up (a first frame may also wait for a busy core).
    let first: Vec<(&Namespace, &str, &str)> = if with_pod {
        vec![(a, POD_IP, "ns-a -> pod"), (b, POD_IP, "ns-b -> pod")]
    } else {
        vec![(a, b.ip.as_str(), "ns-a -> ns-b")]
    };
    for (from, ip, label) in first {
        progress.step(format!("{label}: waiting for a first ping reply"));
        let t = traffic::wait_for_reply(&from.ns, ip, FIRST_REPLY_PATIENCE, helpers)?;
        progress.event(format!("    {:<22} first reply after {:.2} s", label, t.as_secs_f64()));
    }
    if with_pod {
        ping("ping ns-a -> pod".into(), a, POD_IP, 5)?;
        ping("ping ns-b -> pod".into(), b, POD_IP, 5)?;
    }
    ping("ping ns-a -> ns-b".into(), a, &b.ip, 10)?;
    ping("ping ns-b -> ns-a".into(), b, &a.ip, 10)?;

    let len = opts.tcp_bytes;
    let got = progress.tcp_received.clone();
    let (a_ns, b_ns, b_ip) = (a.ns.clone(), b.ns.clone(), b.ip.clone());
    let tcp =
        std::thread::spawn(move || traffic::tcp_transfer(&a_ns, &b_ns, &b_ip, TCP_PORT, len, got));
    while !tcp.is_finished() {
        progress.step(format!(
            "tcp ns-a -> ns-b {} of {:.1} MiB",
            display::bar(progress.tcp_received.load(Relaxed), len, 30),
            len as f64 / (1 << 20) as f64
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = tcp.join().map_err(|_| "the TCP transfer panicked".to_string())??;
    progress.event(format!("    {:<22} {}", "tcp ns-a -> ns-b", describe_tcp(&r)));
    report.tcp = Some(r);

    let secs = opts.duration.as_secs_f64();
    if secs > 0.0 {
        let count = ((secs * 10.0).round() as u32).max(1);
        progress.step(format!(
            "steady pings for {secs:.0} s (both ways{})",
            if with_pod { ", and to the pod" } else { "" }
        ));
        let mut runs: Vec<(String, String, String)> = vec![
            ("steady ns-a -> ns-b".into(), a.ns.clone(), b.ip.clone()),
            ("steady ns-b -> ns-a".into(), b.ns.clone(), a.ip.clone()),
        ];
        if with_pod {
            runs.push(("steady ns-a -> pod".into(), a.ns.clone(), POD_IP.into()));
        }
        let handles: Vec<_> = runs
            .into_iter()
            .map(|(label, ns, ip)| {
                let h = helpers.clone();
                (label, std::thread::spawn(move || traffic::ping(&ns, &ip, count, 0.1, 0, &h)))
            })
            .collect();
        for (label, h) in handles {
            let r = h.join().map_err(|_| "a ping thread panicked".to_string())??;
            progress.event(format!("    {label:<22} {}", r.describe()));
            report.pings.push((label, r));
        }
    }
    progress.step("traffic done".into());
    Ok(report)
}
