//! One L2 bridge whose ports are polled by two workers: network namespaces behind
//! veths whose host ends podwire takes with AF_XDP, placed alternately on the two
//! workers. Frames between ports of different workers cross through the lock-free
//! rings between the workers. Checks ping and TCP across workers, learning (a
//! unicast conversation stops reaching a third port), flooding to ports of both
//! workers, VLAN isolation across workers, the worker of each port in `GET /ports`,
//! and that ports leaving under traffic disturb no other port and leak no buffer.
//!
//! Needs root, iproute2, ethtool and ping.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::daemon::{Daemon, TempDir};
use common::netns::{tcp_echo, NetSetup};
use podwire::control::{get_json, BridgeInfo, MacTableResponse, PortList};

/// One daemon at a time: its workers spin on the cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Two cores this process may use (the same one twice on a one-core machine: the
/// workers are still two threads with rings between them).
fn two_cores() -> [usize; 2] {
    let cpus = podwire::config::allowed_cpus().unwrap_or_default();
    match cpus[..] {
        [] => [0, 0],
        [c] => [c, c],
        [.., a, b] => [a, b],
    }
}

fn worker_of(d: &Daemon, port: &str) -> Option<usize> {
    let (_, list) = get_json::<PortList>(&d.control, "/ports").expect("GET /ports");
    list.ports.iter().find(|p| p.name == port).and_then(|p| p.worker)
}

fn bridge(d: &Daemon) -> BridgeInfo {
    get_json::<BridgeInfo>(&d.control, "/bridges/br0").expect("GET /bridges/br0").1
}

fn has_mac(d: &Daemon, mac: &str, port: &str, vlan: u16) -> bool {
    let t = get_json::<MacTableResponse>(&d.control, "/bridges/br0/macs").expect("macs").1;
    t.entries.iter().any(|e| e.mac == mac && e.port == port && e.vlan == vlan)
}

#[test]
fn a_bridge_spanning_two_workers_switches_learns_floods_and_isolates_vlans() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // x0, x1, x2: VLAN 1; x3, x4: VLAN 10 (all in one subnet: only the VLANs keep
    // them apart); x5 joins later through the API on the second worker.
    let net = NetSetup::new("sp", 6, 1, 17);
    let dir = TempDir::kept_on_failure("bridge-span");
    let [c0, c1] = two_cores();
    let mut cfg =
        format!("[workers]\ncores = [{c0}, {c1}]\n[memory]\nbuffers = 65536\nhugepages = false\n");
    for (i, e) in net.ends.iter().take(5).enumerate() {
        let vlan = if i >= 3 { "vlan = 10\n" } else { "" };
        cfg += &format!(
            "[[ports]]\nname = \"x{i}\"\ntype = \"af-xdp\"\ninterface = \"{}\"\n{vlan}",
            e.host
        );
    }
    cfg += "[[bridge]]\nname = \"br0\"\nports = [\"x0\", \"x1\", \"x2\", \"x3\", \"x4\"]\n";
    let d = Daemon::start(dir.path(), &cfg, &[]);
    for i in 0..5 {
        d.wait_port(&format!("x{i}"), Duration::from_secs(5), "link up", |p| p.link == "up");
    }

    // Placement: each new member goes to the least-loaded worker, so they alternate.
    let workers: Vec<Option<usize>> = (0..5).map(|i| worker_of(&d, &format!("x{i}"))).collect();
    assert_eq!(workers, [Some(c0), Some(c1), Some(c0), Some(c1), Some(c0)], "GET /ports");
    let a = podwire::control::get_json::<serde_json::Value>(&d.control, "/ports/x1").unwrap().1;
    assert_eq!(a["worker"], c1, "GET /ports/x1: {a}");

    // Across workers: x0 (first worker) <-> x1 (second). The ARP request is flooded
    // to x1 (other worker) and x2 (same worker), and to neither VLAN 10 port.
    assert_eq!(net.ping(0, 1, 3, 56), 3, "ping x0 -> x1:\n{}", d.log_text());
    let b = bridge(&d);
    assert!(b.counters.flooded >= 1, "{b:?}");
    assert!(
        d.port("x2").tx_packets >= 1,
        "the flood reached the port of the same worker: {b:?} {:?}",
        d.stats()
    );
    assert!(has_mac(&d, &net.ends[0].mac, "x0", 1), "learned on the first worker");
    assert!(has_mac(&d, &net.ends[1].mac, "x1", 1), "learned on the second worker");

    // Learned: a unicast conversation across workers no longer reaches x2.
    let x2_before = d.port("x2").tx_packets;
    let fwd_before = bridge(&d).counters.forwarded;
    assert_eq!(net.ping(0, 1, 20, 1000), 20);
    assert_eq!(tcp_echo(&net.ends[1].ns, &net.ends[0].ns, &net.ends[0].ip, 5311, 4 << 20), 4 << 20);
    let x2_after = d.port("x2").tx_packets;
    let b = bridge(&d);
    assert!(b.counters.forwarded >= fwd_before + 40 + 2000, "{b:?}");
    assert!(x2_after - x2_before <= 2, "unicast leaked to x2: {x2_before} -> {x2_after}");
    assert_eq!(b.counters.cross_worker_drops, 0, "{b:?}");

    // x2 (first worker) reaches x1 too; its ARP is flooded to the second worker.
    assert_eq!(net.ping(2, 1, 3, 56), 3);

    // VLANs across workers: x3 (second worker) and x4 (first) talk in VLAN 10;
    // nothing of VLAN 1 reaches them and they reach nothing of VLAN 1.
    assert_eq!(net.ping(3, 4, 3, 56), 3, "VLAN 10 across workers");
    // A host that received an ARP request for its address keeps the asker in its
    // neighbour table: no VLAN 1 host may have heard x4 ask, nor x3 have heard x0.
    let neigh = |i: usize| {
        String::from_utf8_lossy(&net.exec(i, &["ip", "neigh", "show"]).stdout).into_owned()
    };
    assert_eq!(net.ping(0, 3, 2, 56), 0, "VLAN 1 reached VLAN 10");
    assert_eq!(net.ping(4, 1, 2, 56), 0, "VLAN 10 reached VLAN 1");
    assert!(!neigh(3).contains(&net.ends[0].ip), "x3 heard x0: {}", neigh(3));
    assert!(!neigh(1).contains(&net.ends[4].ip), "x1 heard x4: {}", neigh(1));
    assert!(has_mac(&d, &net.ends[3].mac, "x3", 10));
    assert!(has_mac(&d, &net.ends[4].mac, "x4", 10));

    // A port joins through the API on a given worker.
    let (total, _) = d.mempool();
    let body = format!(
        "{{\"name\":\"x5\",\"type\":\"af-xdp\",\"interface\":\"{}\",\"bridge\":\"br0\",\"worker\":{c1}}}",
        net.ends[5].host
    );
    let v = d.api_ok("POST", "/ports", Some(&body), 201);
    assert_eq!(v["worker"], c1, "{v}");
    let bad = d.api("POST", "/bridges/br0/ports", Some("{\"port\":\"x0\",\"worker\":4096}"));
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert_eq!(bad.1["field"], "worker");
    d.wait_port("x5", Duration::from_secs(5), "link up", |p| p.link == "up");
    assert_eq!(net.ping(0, 5, 3, 56), 3, "x0 -> x5 across workers");

    // Under traffic: x0 floods x5 with pings and x2 <-> x1 runs a steady ping and a
    // TCP transfer; x4 leaves the bridge and x5 is deleted meanwhile. The ports that
    // do not change lose nothing.
    let flood = {
        let (ns, ip) = (net.ends[0].ns.clone(), net.ends[5].ip.clone());
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "ping", "-f", "-w", "3", "-s", "1200", &ip])
                .output()
                .expect("flood ping")
        })
    };
    let steady = {
        let (ns, ip) = (net.ends[2].ns.clone(), net.ends[1].ip.clone());
        std::thread::spawn(move || {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "ping", "-c", "300", "-i", "0.01", "-W", "3", &ip])
                .output()
                .expect("steady ping");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let tcp = {
        let (c, s, ip) = (net.ends[1].ns.clone(), net.ends[2].ns.clone(), net.ends[2].ip.clone());
        std::thread::spawn(move || tcp_echo(&c, &s, &ip, 5312, 16 << 20))
    };
    std::thread::sleep(Duration::from_millis(800));
    d.api_ok("DELETE", "/bridges/br0/ports/x4", None, 204);
    std::thread::sleep(Duration::from_millis(300));
    d.api_ok("DELETE", "/ports/x5", None, 204);
    assert_eq!(worker_of(&d, "x4"), None, "x4 is idle: not polled");
    let _ = flood.join().expect("flood ping");
    let steady = steady.join().expect("steady ping");
    assert!(steady.contains("300 packets transmitted, 300 received"), "x2 -> x1: {steady}");
    assert_eq!(tcp.join().expect("tcp"), 16 << 20);
    assert_eq!(net.ping(0, 1, 3, 56), 3, "the bridge still forwards");
    let b = bridge(&d);
    assert_eq!(b.ports.len(), 4, "{b:?}");
    assert!(!d.port_names().contains(&"x5".to_owned()), "x5 is gone");
    // Metrics name the new counters.
    let (_, m) = podwire::control::client::request(&d.control, "GET", "/metrics", None).unwrap();
    assert!(m.contains("podwire_port_cross_worker_drops_total{port=\"x1\""), "{m}");
    assert!(m.contains("action=\"cross_worker_drop\""), "{m}");

    // The CLI places a port on a given worker too: x4 comes back, on the second one.
    let out = std::process::Command::new(common::daemon::BIN)
        .args(["bridge", "attach", "br0", "x4", "--vlan", "10", "--worker", &c1.to_string()])
        .arg("--socket")
        .arg(&d.control)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(worker_of(&d, "x4"), Some(c1));
    assert_eq!(net.ping(3, 4, 3, 56), 3, "x3 and x4 on one worker again");

    // Every port goes, the last ones under a flood across workers: then every
    // buffer is back in the pool, none left in a ring between the workers.
    let flood = {
        let (ns, ip) = (net.ends[0].ns.clone(), net.ends[1].ip.clone());
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "ping", "-f", "-w", "2", "-s", "1200", &ip])
                .output()
                .expect("flood ping")
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for p in ["x1", "x4", "x2", "x3", "x0"] {
        d.api_ok("DELETE", &format!("/ports/{p}"), None, 204);
    }
    let _ = flood.join();
    let free = d.wait_mempool_free(total, Duration::from_secs(10));
    assert_eq!(free, total, "every buffer is back in the pool");
    d.stop();
}
