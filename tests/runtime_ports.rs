//! Ports, bridges and cross-connects changed through the control API while podwire
//! forwards, with real DPDK pods (`dpdk-testpmd`, `net_virtio_user`) as peers.
//!
//! - A steady pair (one pod's two ports, cross-connected in the config file)
//!   circulates traffic while 50 vhost-user ports are added and removed, half of them
//!   through a bridge and some cross-connected. Afterwards every packet the pod sent
//!   into podwire was delivered or counted as a drop for lack of room (both sides'
//!   counters), no socket file is left, `GET /ports` lists the steady pair only and
//!   the mempool's free count is back where it started.
//! - The CLI (`podwire port`, `bridge`, `xconnect`, `stats --watch`, `reload`) drives
//!   the same API.
//! - Two pods on a bridge built at runtime exchange traffic (MAC learning visible in
//!   `GET /bridges/NAME/macs`); their ports are then deleted while traffic flows and
//!   every buffer comes back.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, TempDir};
use common::testpmd::{self, PeerLock, Pod, PodConfig};

/// podwire's worker core; the pods run on the other one.
const SWITCH_CPU: usize = 0;
const POD_CPU: usize = 1;

fn base_config(extra: &str) -> String {
    format!(
        "[workers]\ncores = [{SWITCH_CPU}]\n[memory]\nbuffers = 16384\nhugepages = false\n{extra}\n"
    )
}

fn vhost_port(name: &str, socket: &Path) -> String {
    format!(
        "[[ports]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"server\"\n",
        socket.display()
    )
}

fn port_body(name: &str, socket: &Path, extra: &str) -> String {
    format!(
        "{{\"name\":\"{name}\",\"type\":\"vhost-user\",\"socket\":\"{}\"{extra}}}",
        socket.display()
    )
}

/// Steady pair counters: podwire's p0 receives what pod port 0 sends.
fn p0_rx(d: &Daemon) -> u64 {
    d.port("p0").rx_packets
}

#[test]
fn fifty_ports_come_and_go_while_a_steady_pair_forwards() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = TempDir::kept_on_failure("runtime-50");
    let (a, b) = (dir.join("p0.sock"), dir.join("p1.sock"));
    let cfg = base_config("[limits]\nmax_ports = 64")
        + &vhost_port("p0", &a)
        + &vhost_port("p1", &b)
        + "[[xconnect]]\nports = [\"p0\", \"p1\"]\n";
    let mut d = Daemon::start(&dir, &cfg, &[&a, &b]);
    assert_eq!(d.port_names(), ["p0", "p1"]);

    let mut pod = Pod::start(PodConfig::new(&[&a, &b]).on_cpu(POD_CPU)).expect("pod starts");
    pod.wait_links_up(Duration::from_secs(20)).expect("pod links up");
    d.wait_port("p0", Duration::from_secs(10), "link up", |p| p.link == "up");
    d.wait_port("p1", Duration::from_secs(10), "link up", |p| p.link == "up");
    let (total, free_at_start) = d.mempool();
    assert_eq!(total, 16384);
    pod.start_tx_first(32).expect("start");
    d.wait_port("p0", Duration::from_secs(10), "traffic", |p| p.rx_packets > 10_000);

    // The steady pair must keep moving all along: sampled between steps.
    let mut last = p0_rx(&d);
    let mut still_moving = |d: &Daemon, when: &str| {
        let start = Instant::now();
        loop {
            let now = p0_rx(d);
            if now > last {
                last = now;
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(2), "steady pair stalled {when}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    d.api_ok("POST", "/bridges", Some("{\"name\":\"churn\",\"mac_table_size\":256}"), 201);
    let socks: Vec<PathBuf> = (0..50).map(|i| dir.join(format!("c{i}.sock"))).collect();
    let (mut add_times, mut del_times) = (Vec::new(), Vec::new());
    for (i, s) in socks.iter().enumerate() {
        let name = format!("c{i}");
        let extra = match i % 4 {
            // Half join the bridge as they are created, on two VLANs.
            0 => ",\"bridge\":\"churn\",\"vlan\":100".to_string(),
            2 => ",\"bridge\":\"churn\",\"trunk\":[100,200]".to_string(),
            _ => String::new(),
        };
        let t = Instant::now();
        let v = d.api_ok("POST", "/ports", Some(&port_body(&name, s, &extra)), 201);
        add_times.push(t.elapsed());
        assert_eq!(v["name"], name.as_str());
        assert_eq!(v["origin"], "api");
        assert!(s.exists(), "socket of {name} listening when the answer arrives");
        if i % 10 == 9 {
            still_moving(&d, &format!("while adding port {i}"));
        }
    }
    // Odd ports: pairs cross-connected, some join the bridge afterwards.
    for i in (1..47).step_by(4) {
        let body = format!("{{\"ports\":[\"c{i}\",\"c{}\"]}}", i + 2);
        let v = d.api_ok("POST", "/xconnects", Some(&body), 201);
        assert_eq!(v["ports"][1], format!("c{}", i + 2));
    }
    let v = d.api_ok("POST", "/bridges/churn/ports", Some("{\"port\":\"c49\",\"vlan\":200}"), 201);
    assert_eq!(v["ports"].as_array().unwrap().len(), 26, "{v}");
    still_moving(&d, "after the cross-connects");
    assert_eq!(d.port_names().len(), 52);
    let x = d.api_ok("GET", "/xconnects", None, 200);
    assert_eq!(x["xconnects"].as_array().unwrap().len(), 1 + 12, "{x}");
    let c0 = d.api_ok("GET", "/ports/c0", None, 200);
    assert_eq!((c0["bridge"].as_str(), c0["vlan"].as_u64()), (Some("churn"), Some(100)), "{c0}");
    let c1 = d.api_ok("GET", "/ports/c1", None, 200);
    assert_eq!(c1["xconnect"], "c3", "{c1}");
    // A bridge with members is not deleted.
    let (code, err) = d.api("DELETE", "/bridges/churn", None);
    assert_eq!(code, 409, "{err}");

    // Take everything down again: some cross-connects and bridge memberships first,
    // then every port (the rest leave their bridge or cross-connect by themselves).
    d.api_ok("DELETE", "/xconnects/c3", None, 204);
    d.api_ok("DELETE", "/bridges/churn/ports/c0", None, 204);
    let c0 = d.api_ok("GET", "/ports/c0", None, 200);
    assert!(c0.get("bridge").is_none() && c0.get("xconnect").is_none(), "{c0}");
    for (i, s) in socks.iter().enumerate() {
        let t = Instant::now();
        d.api_ok("DELETE", &format!("/ports/c{i}"), None, 204);
        del_times.push(t.elapsed());
        assert!(!s.exists(), "socket of c{i} removed with the port");
        if i % 10 == 9 {
            still_moving(&d, &format!("while deleting port {i}"));
        }
    }
    d.api_ok("DELETE", "/bridges/churn", None, 204);
    assert_eq!(d.port_names(), ["p0", "p1"]);
    assert_eq!(d.api_ok("GET", "/xconnects", None, 200)["xconnects"].as_array().unwrap().len(), 1);
    still_moving(&d, "after the churn");

    // Stop the pod; podwire drains what the pod had sent, then everything is counted.
    let fwd = pod.stop().expect("stop");
    std::thread::sleep(Duration::from_millis(500));
    let pod_stats = pod.port_stats().expect("pod stats");
    let (s0, s1) = (d.port("p0"), d.port("p1"));
    let report = format!("pod {pod_stats:?} {fwd:?}; podwire {s0:?} {s1:?}");
    // Every packet the pod put on its rings reached podwire...
    assert_eq!(s0.rx_packets, pod_stats[0].tx_packets, "{report}");
    assert_eq!(s1.rx_packets, pod_stats[1].tx_packets, "{report}");
    // ...and left on the other port or was counted as refused there (no room).
    assert_eq!(s0.rx_packets, s1.tx_packets + s1.tx_drops, "{report}");
    assert_eq!(s1.rx_packets, s0.tx_packets + s0.tx_drops, "{report}");
    // The pod received what podwire delivered, but for what it left in its rings.
    for (sw_tx, pod_rx) in
        [(s1.tx_packets, pod_stats[1].rx_packets), (s0.tx_packets, pod_stats[0].rx_packets)]
    {
        assert!(pod_rx <= sw_tx && sw_tx - pod_rx <= 1024, "{report}");
    }
    assert_eq!(s0.errors + s1.errors, 0, "{report}");
    let ms = |v: &[Duration]| {
        let max = v.iter().max().copied().unwrap_or_default();
        let avg = v.iter().sum::<Duration>() / v.len().max(1) as u32;
        format!("avg {:.2} ms, max {:.2} ms", avg.as_secs_f64() * 1e3, max.as_secs_f64() * 1e3)
    };
    eprintln!(
        "steady pair during the churn: {} packets forwarded, {} dropped for lack of room; \
         POST /ports {}; DELETE /ports {}",
        s0.rx_packets + s1.rx_packets,
        s0.tx_drops + s1.tx_drops,
        ms(&add_times),
        ms(&del_times)
    );

    let free = d.wait_mempool_free(free_at_start, Duration::from_secs(5));
    assert_eq!(free, free_at_start, "buffers leaked: {free} free, {free_at_start} at start");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix('c')
                .and_then(|r| r.strip_suffix(".sock"))
                .is_some_and(|num| num.parse::<u32>().is_ok())
        })
        .collect();
    assert!(leftovers.is_empty(), "socket files left: {leftovers:?}");
    pod.quit().expect("pod quits");
    d.assert_alive();
    let log = d.stop();
    assert!(log.contains("port created port=c49"), "{log}");
}

#[test]
fn two_pods_on_a_bridge_built_at_runtime_exchange_traffic() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = TempDir::kept_on_failure("runtime-bridge");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    // No ports in the file at all: everything comes through the API.
    let d = Daemon::start(&dir, &base_config(""), &[]);
    let (_, free_at_start) = d.mempool();
    d.api_ok("POST", "/bridges", Some("{\"name\":\"br0\",\"mac_age_secs\":60}"), 201);
    d.api_ok("POST", "/ports", Some(&port_body("a", &a, ",\"bridge\":\"br0\"")), 201);
    d.api_ok("POST", "/ports", Some(&port_body("b", &b, "")), 201);
    d.api_ok("POST", "/bridges/br0/ports", Some("{\"port\":\"b\"}"), 201);

    // macswap pods: pod A sends to 02:00:00:00:00:00 (testpmd's default peer), pod B
    // swaps the addresses and sends it back, and so on: the bridge floods the first
    // frames, learns both addresses and then forwards.
    let pod_cfg = |s: &Path| PodConfig::new(&[s]).on_cpu(POD_CPU).forward_mode("macswap");
    let mut pod_a = Pod::start(pod_cfg(&a)).expect("pod a");
    let mut pod_b = Pod::start(pod_cfg(&b)).expect("pod b");
    pod_a.wait_links_up(Duration::from_secs(20)).expect("a up");
    pod_b.wait_links_up(Duration::from_secs(20)).expect("b up");
    d.wait_port("a", Duration::from_secs(10), "link up", |p| p.link == "up");
    d.wait_port("b", Duration::from_secs(10), "link up", |p| p.link == "up");
    pod_b.start_fwd().expect("b forwards");
    pod_a.start_tx_first(4).expect("a sends");
    d.wait_port("b", Duration::from_secs(20), "traffic from a", |p| p.tx_packets > 10_000);
    d.wait_port("a", Duration::from_secs(20), "traffic from b", |p| p.tx_packets > 10_000);

    let br = d.api_ok("GET", "/bridges/br0", None, 200);
    let c = &br["counters"];
    assert!(c["forwarded"].as_u64().unwrap() > 10_000, "learned, so forwarded: {br}");
    // Pod A's own address (virtio-user picks one) on a; the swapped peer address on b.
    let macs = d.api_ok("GET", "/bridges/br0/macs", None, 200);
    let entries = macs["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["port"] == "a" && e["mac"] != "02:00:00:00:00:00"),
        "pod A's address learned on a: {macs}"
    );
    assert!(
        entries.iter().any(|e| e["port"] == "b" && e["mac"] == "02:00:00:00:00:00"),
        "pod B's (swapped) address learned on b: {macs}"
    );
    assert_eq!(entries.len(), 2, "{macs}");

    // Both ports go while the pods still send: in-flight buffers come back, MAC
    // entries are flushed, sockets are removed, the bridge empties.
    d.api_ok("DELETE", "/ports/a", None, 204);
    let macs = d.api_ok("GET", "/bridges/br0/macs", None, 200);
    assert!(
        macs["entries"].as_array().unwrap().iter().all(|e| e["port"] != "a"),
        "a's entries flushed: {macs}"
    );
    d.api_ok("DELETE", "/ports/b", None, 204);
    assert!(!a.exists() && !b.exists(), "sockets removed");
    d.api_ok("DELETE", "/bridges/br0", None, 204);
    assert!(d.port_names().is_empty());
    let _ = pod_a.stop();
    let _ = pod_b.stop();
    pod_a.quit().expect("pod a quits");
    pod_b.quit().expect("pod b quits");
    let free = d.wait_mempool_free(free_at_start, Duration::from_secs(5));
    assert_eq!(free, free_at_start, "buffers leaked");
    d.stop();
}

/// The CLI drives the same API: `podwire bridge add`, `port add|list|show|del`,
/// `xconnect add|list|del`, `bridge attach|detach|del`, `stats --watch`, `reload`,
/// with the daemon's one-sentence errors passed on and a non-zero exit.
#[test]
fn the_cli_drives_runtime_changes() {
    use std::process::Command;
    let dir = TempDir::kept_on_failure("runtime-cli");
    let d = Daemon::start(&dir, &base_config(""), &[]);
    let ctl = d.control.display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(common::daemon::BIN).args(args).output().expect("run podwire");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let sock = |n: &str| dir.join(format!("{n}.sock")).display().to_string();
    let ok = |args: &[&str], want: &str| {
        let (success, text) = run(args);
        assert!(success && text.contains(want), "{args:?}: {text}");
        text
    };
    ok(&["bridge", "add", "br0", "--mac-age-secs", "30", "--socket", &ctl], "bridge br0 created");
    let (s1, s2, s3) = (sock("v1"), sock("v2"), sock("v3"));
    ok(
        &[
            "port",
            "add",
            "v1",
            "--type",
            "vhost-user",
            "--socket",
            &s1,
            "--bridge",
            "br0",
            "--trunk",
            "10,20",
            "--control",
            &ctl,
        ],
        "bridge br0 trunk 10,20",
    );
    ok(
        &["port", "add", "v2", "--type", "vhost-user", "--socket", &s2, "--control", &ctl],
        "not attached yet",
    );
    let body = format!("{{\"type\":\"vhost-user\",\"socket\":\"{s3}\",\"queues\":2}}");
    ok(&["port", "add", "v3", "--json", &body, "--control", &ctl], "port v3 added");
    ok(&["xconnect", "add", "v2", "v3", "--control", &ctl], "cross-connect v2 <-> v3 added");
    ok(&["xconnect", "list", "--socket", &ctl], "v2 <-> v3");
    let list = ok(&["port", "list", "--control", &ctl], "xconnect v3");
    assert!(list.contains("bridge br0 trunk 10,20") && list.lines().count() == 4, "{list}");
    let show = ok(&["port", "show", "v3", "--json", "--control", &ctl], "\"queues\":2");
    assert!(show.contains("\"xconnect\":\"v2\""), "{show}");
    ok(&["bridge", "list", "--socket", &ctl], "v1(trunk 10,20)");
    ok(&["stats", "--socket", &ctl, "--json"], "\"mempool\"");
    // --watch prints a table per interval until stopped; two samples then a timeout.
    let out = Command::new("timeout")
        .args(["1.5", common::daemon::BIN, "stats", "--watch", "0.5", "--socket", &ctl])
        .output()
        .expect("timeout(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("RX-PPS").count() >= 2 && text.contains("v3"), "{text}");

    // Errors: the daemon's sentence, non-zero exit.
    let (success, text) =
        run(&["port", "add", "v4", "--type", "vhost-user", "--socket", &s1, "--control", &ctl]);
    assert!(!success && text.contains("in use by port \"v1\"") && text.contains("409"), "{text}");
    let (success, text) = run(&[
        "port",
        "add",
        "v4",
        "--type",
        "vhost-user",
        "--socket",
        &sock("v4"),
        "--queues",
        "0",
        "--control",
        &ctl,
    ]);
    assert!(!success && text.contains("queues: 0 is out of range"), "{text}");
    let (success, text) = run(&["bridge", "del", "br0", "--socket", &ctl]);
    assert!(!success && text.contains("still has ports (v1)"), "{text}");
    let (success, text) = run(&["port", "add", "--type", "vhost-user", "--control", &ctl]);
    assert!(!success && text.contains("give the port's name"), "{text}");

    ok(&["bridge", "detach", "br0", "v1", "--socket", &ctl], "left bridge br0");
    ok(&["bridge", "attach", "br0", "v1", "--vlan", "7", "--socket", &ctl], "joined bridge br0");
    ok(&["xconnect", "del", "v3", "--socket", &ctl], "removed");
    for p in ["v1", "v2", "v3"] {
        ok(&["port", "del", p, "--control", &ctl], &format!("port {p} removed"));
    }
    ok(&["bridge", "del", "br0", "--socket", &ctl], "bridge br0 deleted");
    ok(&["port", "list", "--control", &ctl], "(no ports)");
    ok(&["reload", "--socket", &ctl], "config reloaded: added -; removed -; changed -");
    assert!(!dir.join("v1.sock").exists() && !dir.join("v3.sock").exists());
    d.stop();
}
