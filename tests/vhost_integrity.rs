//! Packet integrity through `podwire run`: two vhost-user ports cross-connected, the
//! test's own frontend (tests/vhost_frontend) on both, 10,000 packets of 60 to 1514
//! bytes each way, every one checked byte for byte and in order; with mergeable rx
//! buffers of 512 bytes (large packets span three), then without them (12-byte and
//! legacy 10-byte headers); the counters `podwire stats` prints must add up; and a
//! frontend that disconnects and comes back forwards again (link down, then up).

mod common;
mod vhost_frontend;

use std::time::Duration;

use common::daemon::{socket, Daemon, TempDir};
use podwire::control::PortStats;
use vhost_frontend::{run_flows, Flow, Frontend, Options, RX, TX};

/// Packets per direction per phase.
const N: u32 = 10_000;
/// Packets in flight per direction: at most 3 buffers of 512 bytes each, well within
/// a 256-entry rx ring, so nothing is ever dropped for want of room.
const WINDOW: u32 = 64;
const PHASE_TIMEOUT: Duration = Duration::from_secs(40);
const WAIT: Duration = Duration::from_secs(5);

/// What the counters must read after the traffic so far.
#[derive(Default)]
struct Expected {
    /// a -> b packets and bytes.
    ab: (u64, u64),
    /// b -> a packets and bytes.
    ba: (u64, u64),
}

impl Expected {
    fn add(&mut self, flows: &[(Flow, bool)]) {
        for (f, a_to_b) in flows {
            let t = if *a_to_b { &mut self.ab } else { &mut self.ba };
            t.0 += f.received as u64;
            t.1 += f.bytes;
        }
    }

    /// Waits until both ports' counters are exactly what was sent.
    fn check(&self, d: &Daemon) {
        // The link and every counter: (link, rx (packets, bytes), tx, (drops, errors)).
        let state = |s: &PortStats| {
            let (rx, tx) = ((s.rx_packets, s.rx_bytes), (s.tx_packets, s.tx_bytes));
            (s.link.clone(), rx, tx, (s.rx_drops, s.tx_drops, s.errors))
        };
        // a receives (from its guest) what goes a -> b and transmits what goes b -> a.
        let a = ("up".to_owned(), self.ab, self.ba, (0, 0, 0));
        let b = ("up".to_owned(), self.ba, self.ab, (0, 0, 0));
        d.wait_port("a", WAIT, &format!("counters {a:?}"), |s| state(s) == a);
        d.wait_port("b", WAIT, &format!("counters {b:?}"), |s| state(s) == b);
    }
}

fn wait_link(d: &Daemon, port: &str, state: &str) {
    d.wait_port(port, WAIT, &format!("link {state}"), |s| s.link == state);
}

/// Runs N packets each way and checks every one.
fn traffic(a: &mut Frontend, b: &mut Frontend, exp: &mut Expected, flow_ids: (u8, u8)) {
    let mut flows = [(Flow::new(flow_ids.0, N), true), (Flow::new(flow_ids.1, N), false)];
    if let Err(e) = run_flows(a, b, &mut flows, WINDOW, PHASE_TIMEOUT) {
        panic!("{e}");
    }
    exp.add(&flows);
}

/// GET_VRING_BASE on both rings: podwire stops where the frontend's indexes say it
/// has consumed everything (all tx sent; all rx buffers used but the ring's worth
/// still posted).
fn stop_rings(f: &mut Frontend) {
    let tx = f.get_vring_base(TX);
    assert_eq!(tx, f.vq[TX].avail_idx as u32, "tx ring base");
    let rx = f.get_vring_base(RX);
    let posted = f.vq[RX].size;
    assert_eq!(rx, f.vq[RX].avail_idx.wrapping_sub(posted) as u32, "rx ring base");
}

#[test]
fn forwarding_is_lossless_intact_and_in_order() {
    let dir = TempDir::new("integrity");
    let mut d = Daemon::start_vhost_servers(dir.path(), &["a", "b"], &[["a", "b"]]);
    let (sa, sb) = (socket(dir.path(), "a"), socket(dir.path(), "b"));
    let mut exp = Expected::default();

    // Phase 1: mergeable rx buffers of 512 bytes on both sides.
    let mrg = Options { rx_buf_len: 512, mrg_rxbuf: true, ..Default::default() };
    let mut a = Frontend::connect(&sa, mrg);
    let mut b = Frontend::connect(&sb, mrg);
    wait_link(&d, "a", "up");
    wait_link(&d, "b", "up");
    traffic(&mut a, &mut b, &mut exp, (1, 2));
    // 1514 + 12 bytes need three 512-byte buffers.
    assert_eq!(a.rx_max_buffers, 3, "largest packet's buffers on a");
    assert_eq!(b.rx_max_buffers, 3, "largest packet's buffers on b");
    exp.check(&d);

    // a goes away (without stopping its rings: a crashed pod); b is unaffected.
    drop(a);
    wait_link(&d, "a", "down");
    assert_eq!(d.port("b").link, "up");
    assert!(socket(dir.path(), "a").exists(), "a's socket remains");
    d.assert_alive();

    // Phase 2: a comes back without mergeable buffers (one 2048-byte buffer per
    // packet, 12-byte header); b stops its rings cleanly and comes back legacy
    // (neither VERSION_1 nor mergeable buffers: 10-byte header).
    let mut a = Frontend::connect(&sa, Options::default());
    stop_rings(&mut b);
    drop(b);
    wait_link(&d, "b", "down");
    let mut b = Frontend::connect(&sb, Options { version_1: false, ..Default::default() });
    assert_eq!(b.hdr_len, 10);
    wait_link(&d, "a", "up");
    wait_link(&d, "b", "up");
    traffic(&mut a, &mut b, &mut exp, (3, 4));
    assert_eq!(a.rx_max_buffers, 1);
    assert_eq!(b.rx_max_buffers, 1);
    exp.check(&d);
    stop_rings(&mut a);
    stop_rings(&mut b);

    drop((a, b));
    wait_link(&d, "a", "down");
    wait_link(&d, "b", "down");
    d.assert_alive();
    d.stop();
}
