//! A vhost-user port that no worker polls (in no bridge or cross-connect) still
//! answers its frontend promptly: ring changes that need the datapath side's
//! acknowledgement (GET_VRING_BASE) are applied by the daemon's main thread, also
//! after the port was polled once and then left its cross-connect.

mod common;
mod vhost_frontend;

use std::time::{Duration, Instant};

use common::daemon::{socket, Daemon, TempDir};
use vhost_frontend::{Frontend, Options, RX, TX};

#[test]
fn an_unattached_port_answers_ring_changes_at_once() {
    let dir = TempDir::kept_on_failure("vhost-idle");
    let d = Daemon::start_vhost_servers(dir.path(), &["a", "b", "c"], &[["a", "b"]]);

    // a is polled (cross-connected with b), then left idle.
    let mut fa = Frontend::connect(&socket(dir.path(), "a"), Options::default());
    d.wait_port("a", Duration::from_secs(5), "link up", |p| p.link == "up");
    d.api_ok("DELETE", "/xconnects/a", None, 204);
    let t = Instant::now();
    fa.get_vring_base(RX);
    fa.get_vring_base(TX);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "GET_VRING_BASE of an idle port took {took:?}");

    // c was never polled: the same.
    let mut fc = Frontend::connect(&socket(dir.path(), "c"), Options::default());
    let t = Instant::now();
    fc.get_vring_base(RX);
    fc.get_vring_base(TX);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "GET_VRING_BASE of a never polled port took {took:?}");
    drop((fa, fc));
    d.stop();
}
