//! podwire killed with SIGKILL while pods are attached and forwarding, then started
//! again with the same config: no manual cleanup, and every port forwards again.
//!
//! The daemon holds two vhost-user ports in client mode, cross-connected, whose
//! frontend is a testpmd pod running `net_virtio_user` with `server=1` (the pod
//! outlives the daemon and takes the reconnect); a server-mode vhost-user port (its
//! socket file stays behind after the kill and must be replaced); and two AF_XDP
//! ports on veths into two namespaces, cross-connected (the kernel ping crosses
//! podwire), one from the config file, the other and the cross-connect made through
//! the control API (they come back from the state file). After the kill the control
//! socket and the server socket are stale files; the new daemon must take them over,
//! reconnect to the pod, take the interfaces' queues again (the XDP program died with
//! its BPF link), and forward.
//! The test prints the time from the restart to each stage.
//!
//! Needs root, hugepages, dpdk-testpmd, iproute2, ethtool and ping
//! (`scripts/install-deps.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, TempDir};
use common::netns::NetSetup;
use common::testpmd::{self, PeerLock, Pod, PodConfig};

fn config(client: &[PathBuf], server: &Path, net: &NetSetup) -> String {
    let mut s =
        String::from("[workers]\ncores = [0]\n[memory]\nbuffers = 16384\nhugepages = true\n");
    for (i, p) in client.iter().enumerate() {
        s += &format!(
            "[[ports]]\nname = \"c{i}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"client\"\n",
            p.display()
        );
    }
    s += &format!(
        "[[ports]]\nname = \"s0\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"server\"\n",
        server.display()
    );
    // x1 and its cross-connect come from the control API (see the test).
    s += &format!(
        "[[ports]]\nname = \"x0\"\ntype = \"af-xdp\"\ninterface = \"{}\"\nxdp_mode = \"generic\"\n",
        net.ends[0].host
    );
    s += "[[xconnect]]\nports = [\"c0\", \"c1\"]\n";
    s
}

/// Adds AF_XDP port x1 and the cross-connect x0 <-> x1 through the control API.
fn api_objects(daemon: &Daemon, net: &NetSetup) {
    let body = format!(
        "{{\"name\": \"x1\", \"type\": \"af-xdp\", \"interface\": \"{}\", \
         \"xdp_mode\": \"generic\"}}",
        net.ends[1].host
    );
    daemon.api_ok("POST", "/ports", Some(&body), 201);
    daemon.api_ok("POST", "/xconnects", Some("{\"ports\": [\"x0\", \"x1\"]}"), 201);
}

fn total_rx(pod: &mut Pod) -> u64 {
    pod.port_stats().expect("pod stats").iter().map(|s| s.rx_packets).sum()
}

/// Waits until `f` holds, polling every 10 ms; returns the time since `t0`.
fn until(t0: Instant, limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    while !f() {
        assert!(t0.elapsed() < limit, "{what} not within {limit:?} of the restart");
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

#[test]
fn sigkilled_daemon_restarts_and_every_port_forwards_again() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    // NetSetup puts the process id in the names.
    let net = NetSetup::new("rs", 2, 1, 41);
    let dir = TempDir::kept_on_failure("restart");
    let client: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("pod{i}.sock"))).collect();
    let server = dir.path().join("s0.sock");
    let cfg = config(&client, &server, &net);

    // A virtio-user server waits for its client during startup: daemon first.
    let daemon = Daemon::start(dir.path(), &cfg, &[&server]);
    api_objects(&daemon, &net);
    let mut pod = Pod::start(PodConfig::new(&client).on_cpu(1).server(true)).expect("pod");
    pod.wait_links_up(Duration::from_secs(20)).expect("pod links up");
    pod.start_tx_first(8).expect("pod start");
    std::thread::sleep(Duration::from_millis(700));
    assert!(total_rx(&mut pod) > 1000, "the pod forwards through podwire before the kill");
    assert_eq!(net.ping(0, 1, 3, 56), 3, "ping through podwire before the kill");

    let control = daemon.control.clone();
    daemon.sigkill();
    assert!(control.exists() && server.exists(), "SIGKILL leaves the sockets behind");
    let frozen = total_rx(&mut pod);
    std::thread::sleep(Duration::from_millis(300));
    assert!(total_rx(&mut pod) - frozen < 64, "nothing forwards while podwire is dead");

    let t0 = Instant::now();
    let daemon = Daemon::start(dir.path(), &cfg, &[&server]);
    let t_control = t0.elapsed();
    let limit = Duration::from_secs(20);
    let t_links = until(t0, limit, "vhost-user reconnect", || {
        let s = daemon.stats();
        ["c0", "c1"].iter().all(|n| s.iter().any(|p| p.name == *n && p.link == "up"))
    });
    // Frames in flight died with the old daemon: the pod injects new ones.
    pod.stop().expect("pod stop");
    pod.start_tx_first(8).expect("pod restart tx");
    let t_vhost = until(t0, limit, "vhost-user forwarding", || {
        let s = daemon.stats();
        ["c0", "c1"].iter().all(|n| s.iter().any(|p| p.name == *n && p.rx_packets > 0))
    });
    let t_xdp = until(t0, limit, "AF_XDP ping", || net.ping(0, 1, 1, 56) == 1);
    let before = total_rx(&mut pod);
    std::thread::sleep(Duration::from_millis(700));
    assert!(total_rx(&mut pod) - before > 1000, "the pod forwards again after the restart");
    assert_eq!(net.ping(1, 0, 10, 56), 10, "ping both ways after the restart");
    println!(
        "restart after SIGKILL: control socket answers after {t_control:.2?}, vhost-user \
         reconnected after {t_links:.2?}, vhost-user forwarding after {t_vhost:.2?}, AF_XDP \
         ping answered after {t_xdp:.2?}"
    );

    for p in daemon.stats() {
        assert_eq!(p.errors, 0, "{p:?}");
    }
    let x1 = daemon.api_ok("GET", "/ports/x1", None, 200);
    assert_eq!((&x1["origin"], &x1["xconnect"]), (&"api".into(), &"x0".into()), "{x1}");
    pod.stop().expect("pod stop");
    pod.quit().expect("pod quit");
    let log = daemon.stop();
    assert!(log.contains("frontend connected port=c0"), "{log}");
}
