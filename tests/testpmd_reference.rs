//! The harness and the peers against DPDK's own vhost-user backend only: a testpmd pod
//! with two `net_virtio_user` ports attached to the reference switch (testpmd
//! `net_vhost`, io forwarding). Proves that testpmd, hugepages and the harness work on
//! this machine before any podwire test relies on them.

mod common;

use common::testpmd::{self, PeerLock, Pod, PodConfig, ReferenceSwitch, SwitchConfig};
use std::path::PathBuf;
use std::time::Duration;

fn sock_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pw-ref-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create socket dir");
    d
}

fn assert_no_leftovers(prefixes: &[String]) {
    for p in prefixes {
        let left = testpmd::leftovers(p);
        assert!(left.is_empty(), "DPDK files left behind for prefix {p}: {left:?}");
    }
}

#[test]
fn tx_first_burst_circulates_through_the_reference_switch() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = sock_dir("circ");
    let socks = [dir.join("a.sock"), dir.join("b.sock")];

    let mut sw = ReferenceSwitch::start(SwitchConfig::new(&socks).on_cpu(0)).expect("switch");
    let mut pod = Pod::start(PodConfig::new(&socks).on_cpu(1)).expect("pod");
    pod.wait_links_up(Duration::from_secs(10)).expect("pod links up");
    let prefixes = [sw.prefix().to_string(), pod.prefix().to_string()];
    let (sw_pid, pod_pid) = (sw.pid(), pod.pid());

    pod.start_tx_first(32).expect("start tx_first");
    std::thread::sleep(Duration::from_millis(1500));
    // Stop the pod first and let the frames in flight land: counters read while the
    // traffic still circulates are taken at different instants, and the switch's
    // (read second) could exceed what the pod had sent when it was read.
    let pod_fwd = pod.stop().expect("pod stop");
    std::thread::sleep(Duration::from_millis(200));
    let pod_stats = pod.port_stats().expect("pod stats");
    let sw_stats = sw.port_stats().expect("switch stats");
    eprintln!("pod ports: {pod_stats:?}\nswitch ports: {sw_stats:?}\npod fwd: {pod_fwd:?}");

    assert_eq!(pod_stats.len(), 2, "pod ports");
    assert_eq!(sw_stats.len(), 2, "switch ports");
    let all: Vec<(String, u64)> = pod_stats
        .iter()
        .map(|s| (format!("pod{} rx", s.port), s.rx_packets))
        .chain(pod_stats.iter().map(|s| (format!("pod{} tx", s.port), s.tx_packets)))
        .chain(sw_stats.iter().map(|s| (format!("switch{} rx", s.port), s.rx_packets)))
        .chain(sw_stats.iter().map(|s| (format!("switch{} tx", s.port), s.tx_packets)))
        .collect();
    // 32 bursts of 32 per port are injected; circulating for 1.5 s moves far more.
    for (what, n) in &all {
        assert!(*n > 10_000, "{what} moved only {n} packets: {all:?}");
    }
    let min = all.iter().map(|a| a.1).min().unwrap_or(0) as f64;
    let max = all.iter().map(|a| a.1).max().unwrap_or(0) as f64;
    assert!(min / max > 0.5, "directions unbalanced: {all:?}");
    // Everything the pod sent on one port the switch received on the same port.
    for (p, s) in pod_stats.iter().zip(&sw_stats) {
        assert!(s.rx_packets <= p.tx_packets, "switch rx > pod tx: {p:?} {s:?}");
        assert_eq!(p.rx_errors + s.rx_errors + p.tx_errors + s.tx_errors, 0, "errors: {p:?} {s:?}");
    }

    pod.quit().expect("pod quits cleanly");
    sw.quit().expect("switch quits cleanly");
    for pid in [sw_pid, pod_pid] {
        assert!(!PathBuf::from(format!("/proc/{pid}")).exists(), "testpmd {pid} still running");
    }
    assert_no_leftovers(&prefixes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn frames_come_back_byte_for_byte_through_the_reference_switch() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = sock_dir("pcap");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let (input, output) = (dir.join("in.pcap"), dir.join("out.pcap"));
    let frames = testpmd::test_frames(500, &[60, 64, 128, 511, 1000, 1514], 0x5eed);
    testpmd::write_pcap(&input, &frames).expect("write pcap");

    let sw = ReferenceSwitch::start(SwitchConfig::new(&[&a, &b]).on_cpu(0)).expect("switch");
    let mut pod = Pod::start(PodConfig::pcap_loop(&a, &b, &input, &output).on_cpu(1)).expect("pod");
    pod.wait_links_up(Duration::from_secs(10)).expect("pod links up");
    let prefixes = [sw.prefix().to_string(), pod.prefix().to_string()];
    pod.start_fwd().expect("start");
    // Wait until every frame came back (or 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut stats = pod.port_stats().expect("stats");
    while stats[3].tx_packets < frames.len() as u64 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        stats = pod.port_stats().expect("stats");
    }
    pod.stop().expect("stop");
    pod.quit().expect("pod quits cleanly");
    sw.quit().expect("switch quits cleanly");

    let got = testpmd::read_pcap(&output).expect("read output pcap");
    assert_eq!(got.len(), frames.len(), "frames back; pod stats {stats:?}");
    for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(g, f, "frame {i} differs (len {} vs {})", g.len(), f.len());
    }
    assert_no_leftovers(&prefixes);
    let _ = std::fs::remove_dir_all(&dir);
}
