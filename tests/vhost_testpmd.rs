//! podwire's vhost-user port against its real peer: a DPDK pod (`dpdk-testpmd` with
//! `net_virtio_user` ports) attached to `podwire run`.
//!
//! Payload integrity uses the pcap loop (see tests/common/testpmd.rs): the pod reads
//! frames from a pcap file, sends them into podwire on one port, receives them on the
//! other and writes them to a second pcap file, which must hold the same frames, in
//! the same order, byte for byte.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, TempDir};
use common::testpmd::{self, PeerLock, Pod, PodConfig};

/// podwire's worker core; the pod runs on the other one.
const SWITCH_CPU: usize = 0;
const POD_CPU: usize = 1;

fn xconnect_config(socks: &[&Path], mode: &str, queues: u16, extra_memory: &str) -> String {
    let mut s = format!(
        "[workers]\ncores = [{SWITCH_CPU}]\n[memory]\nbuffers = 16384\nhugepages = true\n{extra_memory}\n"
    );
    for (i, p) in socks.iter().enumerate() {
        s += &format!(
            "[[ports]]\nname = \"p{i}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"{mode}\"\nqueues = {queues}\n",
            p.display()
        );
    }
    for pair in 0..socks.len() / 2 {
        s += &format!("[[xconnect]]\nports = [\"p{}\", \"p{}\"]\n", 2 * pair, 2 * pair + 1);
    }
    s
}

/// Sends `frames` through podwire (pod pcap -> virtio a -> podwire -> virtio b ->
/// pod pcap) and checks they all come back intact and that podwire counted them.
fn pcap_roundtrip(
    tag: &str,
    frames: &[Vec<u8>],
    podwire_mode: &str,
    tune: impl Fn(PodConfig) -> PodConfig,
    extra_memory: &str,
) {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = TempDir::kept_on_failure(tag);
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let (input, output) = (dir.join("in.pcap"), dir.join("out.pcap"));
    testpmd::write_pcap(&input, frames).expect("write pcap");
    let server = podwire_mode == "server";
    let cfg = xconnect_config(&[&a, &b], podwire_mode, 1, extra_memory);
    let wait_for: Vec<&Path> = if server { vec![&a, &b] } else { vec![] };
    let daemon = Daemon::start(&dir, &cfg, &wait_for);

    let pod_cfg =
        tune(PodConfig::pcap_loop(&a, &b, &input, &output).on_cpu(POD_CPU)).server(!server);
    let mut pod = Pod::start(pod_cfg).expect("pod starts");
    pod.wait_links_up(Duration::from_secs(20)).expect("pod links up");
    daemon.wait_port("p0", Duration::from_secs(10), "link up", |p| p.link == "up");
    daemon.wait_port("p1", Duration::from_secs(10), "link up", |p| p.link == "up");
    pod.start_fwd().expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stats = pod.port_stats().expect("stats");
    while stats[3].tx_packets < frames.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        stats = pod.port_stats().expect("stats");
    }
    pod.stop().expect("stop");
    let sw = (daemon.port("p0"), daemon.port("p1"));
    pod.quit().expect("pod quits cleanly");
    let log = daemon.stop();

    let got = testpmd::read_pcap(&output).expect("read output pcap");
    assert_eq!(got.len(), frames.len(), "frames back; pod {stats:?}; podwire {sw:?}\n{log}");
    for (i, (g, f)) in got.iter().zip(frames).enumerate() {
        assert_eq!(g, f, "frame {i} differs (len {} vs {})", g.len(), f.len());
    }
    // podwire received every frame on p0 and sent it on p1, with its bytes.
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!((sw.0.rx_packets, sw.0.rx_bytes), (frames.len() as u64, bytes), "p0 rx: {sw:?}");
    assert_eq!((sw.1.tx_packets, sw.1.tx_bytes), (frames.len() as u64, bytes), "p1 tx: {sw:?}");
    assert_eq!(sw.0.errors + sw.1.errors, 0, "errors: {sw:?}");
}

const SIZES: &[usize] = &[60, 64, 65, 128, 511, 1000, 1500, 1514];
// At most 1000 frames per run: they all fit the pod's 1024-entry rings at once, so
// testpmd's io forwarding (which drops what a full ring refuses) never loses one,
// however slow the machine. Loss would then be podwire's.

#[test]
fn split_ring_mergeable_frames_arrive_intact() {
    let frames = testpmd::test_frames(1000, SIZES, 1);
    pcap_roundtrip("split-mrg", &frames, "server", |c| c.mrg_rxbuf(true), "");
}

#[test]
fn split_ring_without_mergeable_buffers_frames_arrive_intact() {
    let frames = testpmd::test_frames(1000, SIZES, 2);
    pcap_roundtrip("split-nomrg", &frames, "server", |c| c.mrg_rxbuf(false), "");
}

#[test]
fn packed_ring_frames_arrive_intact() {
    let frames = testpmd::test_frames(1000, SIZES, 3);
    pcap_roundtrip("packed", &frames, "server", |c| c.packed_vq(true), "");
}

#[test]
fn packed_ring_without_mergeable_buffers_frames_arrive_intact() {
    let frames = testpmd::test_frames(1000, SIZES, 4);
    pcap_roundtrip("packed-nomrg", &frames, "server", |c| c.packed_vq(true).mrg_rxbuf(false), "");
}

/// DPDK pods ask for VIRTIO_F_IN_ORDER by default (and podwire then completes guest
/// tx in batches); these two keep the out-of-order paths, which Linux guests use,
/// proven against testpmd too.
#[test]
fn split_ring_without_in_order_frames_arrive_intact() {
    let frames = testpmd::test_frames(1000, SIZES, 7);
    pcap_roundtrip("split-ooo", &frames, "server", |c| c.in_order(false), "");
}

#[test]
fn packed_ring_without_in_order_frames_arrive_intact() {
    let frames = testpmd::test_frames(1000, SIZES, 8);
    pcap_roundtrip("packed-ooo", &frames, "server", |c| c.packed_vq(true).in_order(false), "");
}

#[test]
fn podwire_as_client_frames_arrive_intact() {
    let frames = testpmd::test_frames(1000, SIZES, 5);
    pcap_roundtrip("client", &frames, "client", |c| c, "");
}

#[test]
fn jumbo_9000_byte_frames_arrive_intact() {
    let frames = testpmd::test_frames(500, &[9000, 8000, 64, 4000], 6);
    pcap_roundtrip(
        "jumbo",
        &frames,
        "server",
        |c| c.mrg_rxbuf(true).arg("--mbuf-size=10240").arg("--max-pkt-len=9600"),
        "buffer_size = 9216",
    );
}

/// Per-queue rx packets of one pod port (`show port xstats`).
fn rx_queue_packets(pod: &mut Pod, port: u16, queue: u16) -> u64 {
    let out = pod.cmd(&format!("show port xstats {port}")).expect("xstats");
    let key = format!("rx_q{queue}_good_packets:");
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&key).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {key} in xstats of port {port}:\n{out}"))
}

#[test]
fn two_queue_pairs_both_carry_traffic() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = TempDir::kept_on_failure("mq");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let daemon = Daemon::start(&dir, &xconnect_config(&[&a, &b], "server", 2, ""), &[&a, &b]);
    let mut pod = Pod::start(PodConfig::new(&[&a, &b]).queues(2).on_cpu(POD_CPU)).expect("pod");
    pod.wait_links_up(Duration::from_secs(20)).expect("links up");
    pod.start_tx_first(32).expect("start");
    std::thread::sleep(Duration::from_millis(1500));
    let per_queue: Vec<u64> = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .iter()
        .map(|&(p, q)| rx_queue_packets(&mut pod, p, q))
        .collect();
    pod.stop().expect("stop");
    let sw = daemon.stats();
    pod.quit().expect("quit");
    daemon.stop();
    for (i, n) in per_queue.iter().enumerate() {
        assert!(*n > 1000, "pod port {} queue {} received only {n}: {per_queue:?}", i / 2, i % 2);
    }
    for p in &sw {
        assert_eq!(p.queues, 2, "{p:?}");
        assert!(p.rx_packets > 10_000 && p.tx_packets > 10_000, "{p:?}");
        assert_eq!(p.errors, 0, "{p:?}");
    }
}

fn total_rx(pod: &mut Pod) -> u64 {
    pod.port_stats().expect("stats").iter().map(|s| s.rx_packets).sum()
}

/// A pod killed with SIGKILL and started again: podwire lives, traffic resumes on the
/// restarted pod, and a second pod on other ports never stops forwarding.
#[test]
fn pod_killed_and_restarted_while_another_keeps_forwarding() {
    kill_and_restart("server");
}

/// The same with podwire as the vhost-user client: it reconnects to the restarted
/// pod's socket by itself.
#[test]
fn podwire_as_client_reconnects_to_a_restarted_pod() {
    kill_and_restart("client");
}

fn kill_and_restart(mode: &str) {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = TempDir::kept_on_failure(&format!("kill-{mode}"));
    let s: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("s{i}.sock"))).collect();
    let socks: Vec<&Path> = s.iter().map(PathBuf::as_path).collect();
    let server = mode == "server";
    let wait_for: &[&Path] = if server { &socks } else { &[] };
    let mut daemon = Daemon::start(&dir, &xconnect_config(&socks, mode, 1, ""), wait_for);
    let pod_cfg = |socks: &[&Path]| PodConfig::new(socks).on_cpu(POD_CPU).server(!server);

    let mut steady = Pod::start(pod_cfg(&socks[2..])).expect("steady pod");
    steady.wait_links_up(Duration::from_secs(20)).expect("steady links");
    steady.start_tx_first(8).expect("steady start");

    let start_victim = || {
        let mut p = Pod::start(pod_cfg(&socks[..2])).expect("victim pod");
        p.wait_links_up(Duration::from_secs(20)).expect("victim links");
        p.start_tx_first(8).expect("victim start");
        p
    };
    let mut victim = start_victim();
    std::thread::sleep(Duration::from_millis(700));
    assert!(total_rx(&mut victim) > 1000, "victim pod forwards before the kill");

    let steady_before = total_rx(&mut steady);
    victim.sigkill();
    daemon.wait_port("p0", Duration::from_secs(10), "link down", |p| p.link == "down");
    std::thread::sleep(Duration::from_millis(300));
    let steady_mid = total_rx(&mut steady);
    assert!(steady_mid > steady_before, "steady pod stopped when the other was killed");
    assert!(daemon.alive(), "podwire died with the pod");

    let mut victim = start_victim();
    daemon.wait_port("p0", Duration::from_secs(10), "link up", |p| p.link == "up");
    std::thread::sleep(Duration::from_millis(700));
    let victim_rx = total_rx(&mut victim);
    let steady_after = total_rx(&mut steady);
    assert!(victim_rx > 1000, "restarted pod forwards again (rx {victim_rx})");
    assert!(steady_after > steady_mid, "steady pod kept forwarding");

    victim.stop().expect("stop");
    steady.stop().expect("stop");
    victim.quit().expect("quit");
    steady.quit().expect("quit");
    let sw = daemon.stats();
    let log = daemon.stop();
    assert!(log.contains("frontend connected port=p0"), "{log}");
    for p in &sw {
        assert_eq!(p.errors, 0, "a killed frontend is not a protocol error: {p:?}");
    }
}
