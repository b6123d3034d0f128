//! Pod churn under load (issue 8): a steady pair keeps forwarding at full rate while
//! 100 other pods are created through the CNI plugin, attach, exchange traffic and go
//! away again, SIGKILLed or deleted, in a random order.
//!
//! - **The steady pair** is static: two server-mode vhost-user ports `s0` and `s1`
//!   in the daemon's config file, cross-connected, driven by one testpmd pod (io
//!   forwarding, `start tx_first 32`: packets circulate pod port 0 -> podwire -> pod
//!   port 1 -> podwire -> ...), as in `tests/runtime_ports.rs`. It shares podwire's
//!   one worker core with the churn pods' bridge.
//! - **The churn pods** are attached the way a container runtime attaches them: the
//!   real `podwire-cni` binary, one process per ADD or DEL, with Debian's host-local
//!   IPAM, on a bridge with VLAN 10. To keep the wall time reasonable, one testpmd
//!   process serves a batch of 10 pods: one `net_virtio_user` port per pod, on the
//!   `socketPath` and with the `mac` of that pod's CNI result (so a batch's pods
//!   share one network namespace, the `CNI_NETNS` of their ADDs). Ports 2k and 2k+1
//!   of a batch are a pair: each sends one burst to the other's MAC (`set eth-peer`,
//!   `start tx_first 1`) and macswap forwarding sends every frame back to its sender
//!   through the bridge. The test waits until every churn pod has received traffic.
//! - **Order**: batches overlap (between 1 and 3 are live at once, chosen at random)
//!   and the batch torn down is a random live one. Tearing down a batch DELs a random
//!   number of its pods, in random order, while testpmd still forwards on them (the
//!   port goes away under a live frontend), then SIGKILLs the testpmd (every pod left
//!   crashes at once), then DELs the rest in random order, as the runtime does for
//!   a dead pod. The seed is printed; `PODWIRE_CHURN_SEED=N` replays a run.
//!
//! Afterwards: every packet the steady pod sent into podwire was delivered to the
//! other port or counted there as dropped for lack of room (both sides' counters),
//! the pod received what podwire delivered (but for what its rings held), no churn
//! port, socket, socket directory, configData, device-info file, plugin record or
//! IPAM lease is left, the bridge has no members, the daemon's mempool is back at its
//! starting free count and the daemon stops cleanly. The figures (packets of the
//! steady pair, pods churned, ADD/DEL latency under load, elapsed time) are printed.

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cni::{api, percentile, Cni, Netns};
use common::daemon::{Daemon, TempDir};
use common::testpmd::{self, PeerLock, Pod, PodConfig};
use serde_json::json;

/// podwire's worker core; every testpmd runs on the other one.
const SWITCH_CPU: usize = 0;
const POD_CPU: usize = 1;
/// Pods created and destroyed through the plugin.
const PODS: usize = 100;
/// Pods per testpmd process (even: they are paired).
const BATCH: usize = 10;
const NETWORK: &str = "churn-net";
const BRIDGE: &str = "br-churn";

/// splitmix64: small, seeded, good enough to pick orders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

fn seed() -> u64 {
    if let Ok(s) = std::env::var("PODWIRE_CHURN_SEED") {
        return s.trim().parse().expect("PODWIRE_CHURN_SEED is a number");
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()) << 32
}

/// One churn pod: its container ID and what its CNI result said.
struct ChurnPod {
    cid: String,
    socket: PathBuf,
    mac: String,
}

/// A batch of pods served by one testpmd process.
struct Batch {
    index: usize,
    pods: Vec<ChurnPod>,
    testpmd: Option<Pod>,
    _ns: Netns,
}

/// What the churn measured.
#[derive(Default)]
struct Figures {
    adds: Vec<Duration>,
    dels: Vec<Duration>,
    live_dels: usize,
    killed: usize,
}

/// The daemon's config file: the steady pair, cross-connected.
fn steady_config(a: &Path, b: &Path) -> String {
    let mut cfg = format!(
        "log_level = \"info\"\n[workers]\ncores = [{SWITCH_CPU}]\n\
         [memory]\nhugepages = false\nbuffers = 16384\n"
    );
    for (name, s) in [("s0", a), ("s1", b)] {
        cfg += &format!(
            "[[ports]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"server\"\n",
            s.display()
        );
    }
    cfg + "[[xconnect]]\nports = [\"s0\", \"s1\"]\n"
}

/// ADDs the pods of batch `index`, starts their testpmd and waits until every pod
/// receives its partner's traffic.
fn start_batch(cni: &Cni, index: usize, fig: &mut Figures) -> Batch {
    let ns = Netns::new(&format!("b{index}"));
    let mut pods = Vec::new();
    for i in 0..BATCH {
        // The first 12 characters (the socket's directory and name) differ per pod.
        let cid = format!("c{index:02}{i:02}{:07}churnchurn", std::process::id() % 10_000_000);
        let t = Instant::now();
        let r = cni.add(&cid, &ns.path());
        fig.adds.push(t.elapsed());
        let iface = &r["interfaces"][0];
        let socket = PathBuf::from(iface["socketPath"].as_str().expect("socketPath"));
        assert!(socket.exists(), "{} listening when ADD answers", socket.display());
        let mac = iface["mac"].as_str().expect("mac").to_owned();
        pods.push(ChurnPod { cid, socket, mac });
    }
    // macswap on each port by itself (loop topology): a frame goes back out of the
    // port it came in on, addressed to its sender, so every frame a port sends
    // carries that port's own MAC once the first flood is answered. (io forwarding
    // between two ports would be a loop in the bridge: every flood, e.g. after a
    // partner's port was deleted, would come back in and be flooded again.)
    let mut cfg = PodConfig::default()
        .on_cpu(POD_CPU)
        .netns(ns.0.clone())
        .mem_mb(128)
        .forward_mode("macswap")
        .arg("--port-topology=loop");
    cfg.rxd = 256;
    cfg.txd = 256;
    cfg.total_num_mbufs = 8192;
    for (i, p) in pods.iter().enumerate() {
        cfg = cfg.vdev(format!(
            "net_virtio_user{i},path={},queues=1,queue_size=256,mac={}",
            p.socket.display(),
            p.mac
        ));
    }
    let mut tp = Pod::start(cfg).expect("churn testpmd starts");
    tp.wait_links_up(Duration::from_secs(30)).expect("churn pods' links up");
    for k in (0..BATCH).step_by(2) {
        tp.cmd(&format!("set eth-peer {k} {}", pods[k + 1].mac)).expect("eth-peer");
        tp.cmd(&format!("set eth-peer {} {}", k + 1, pods[k].mac)).expect("eth-peer");
    }
    tp.start_tx_first(1).expect("churn traffic starts");
    let start = Instant::now();
    loop {
        let stats = tp.port_stats().expect("churn pod stats");
        if stats.len() == BATCH && stats.iter().all(|s| s.rx_packets >= 100) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "batch {index}: not every churn pod receives its partner's traffic: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Batch { index, pods, testpmd: Some(tp), _ns: ns }
}

/// Takes batch `b` down: some pods DELeted under traffic, then the testpmd
/// SIGKILLed, then the rest DELeted; both in random order.
fn tear_down(cni: &Cni, mut b: Batch, rng: &mut Rng, fig: &mut Figures) {
    let mut order: Vec<usize> = (0..b.pods.len()).collect();
    rng.shuffle(&mut order);
    let live = rng.below(b.pods.len() + 1);
    for (n, &i) in order.iter().enumerate() {
        if n == live {
            b.testpmd.take().expect("testpmd running").sigkill();
            fig.killed += b.pods.len() - live;
        }
        let t = Instant::now();
        cni.del(&b.pods[i].cid);
        let took = t.elapsed();
        fig.dels.push(took);
        if took > Duration::from_secs(1) {
            let how = if n < live { "under traffic" } else { "after the SIGKILL" };
            eprintln!(
                "slow DEL {} ({how}): {took:?}; its steps:\n{}",
                b.pods[i].cid,
                last_call_log(cni, &b.pods[i].cid)
            );
        }
        if n < live {
            fig.live_dels += 1;
        }
        assert!(!b.pods[i].socket.exists(), "DEL removed {}", b.pods[i].socket.display());
    }
    if let Some(tp) = b.testpmd.take() {
        // Every pod was deleted under it: its links are down; it still quits.
        tp.sigkill();
    }
    eprintln!(
        "batch {}: {live} pods deleted under traffic, {} after a SIGKILL",
        b.index,
        b.pods.len() - live
    );
}

/// The plugin's log lines (timestamped steps) of the last call that named `cid`.
fn last_call_log(cni: &Cni, cid: &str) -> String {
    let log = cni.log();
    let tag = |l: &str| l.split_whitespace().nth(1).unwrap_or("").to_owned();
    let Some(last) = log.lines().rev().find(|l| l.contains(cid)).map(tag) else {
        return String::new();
    };
    log.lines().filter(|l| tag(l) == last).collect::<Vec<_>>().join("\n")
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn a_hundred_pods_come_and_go_through_the_plugin_while_a_steady_pair_forwards() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let began = Instant::now();
    let seed = seed();
    eprintln!("churn seed {seed} (rerun with PODWIRE_CHURN_SEED={seed})");
    let mut rng = Rng(seed);
    let root = TempDir::kept_on_failure("cni-churn");
    let (a, b) = (root.join("s0.sock"), root.join("s1.sock"));
    let mut d = Daemon::start(&root, &steady_config(&a, &b), &[&a, &b]);
    let mut cni = Cni::new(&root, "10.215.9.0/24");
    cni.conf["name"] = json!(NETWORK);
    cni.conf["host"]["bridge"]["bridgeName"] = json!(BRIDGE);
    // Debug: every step timestamped, printed for a slow DEL.
    cni.conf["logLevel"] = json!("debug");

    // The steady pair, circulating before the churn starts.
    let mut steady = Pod::start(PodConfig::new(&[&a, &b]).on_cpu(POD_CPU)).expect("steady pod");
    steady.wait_links_up(Duration::from_secs(20)).expect("steady links up");
    d.wait_port("s0", Duration::from_secs(10), "link up", |p| p.link == "up");
    d.wait_port("s1", Duration::from_secs(10), "link up", |p| p.link == "up");
    let (_, free_at_start) = d.mempool();
    steady.start_tx_first(32).expect("steady traffic");
    d.wait_port("s0", Duration::from_secs(10), "traffic", |p| p.rx_packets > 10_000);
    let mut last = d.port("s0").rx_packets;
    let mut still_moving = |d: &Daemon, when: &str| {
        let start = Instant::now();
        loop {
            let now = d.port("s0").rx_packets;
            if now > last {
                last = now;
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "steady pair stalled {when}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    let mut fig = Figures::default();
    let mut live: VecDeque<Batch> = VecDeque::new();
    for index in 0..PODS / BATCH {
        live.push_back(start_batch(&cni, index, &mut fig));
        still_moving(&d, &format!("after batch {index} came up"));
        let keep = 1 + rng.below(3);
        while live.len() > keep {
            let i = rng.below(live.len());
            let batch = live.remove(i).expect("a live batch");
            tear_down(&cni, batch, &mut rng, &mut fig);
            still_moving(&d, "after a batch went away");
        }
    }
    while !live.is_empty() {
        let i = rng.below(live.len());
        let batch = live.remove(i).expect("a live batch");
        tear_down(&cni, batch, &mut rng, &mut fig);
    }
    still_moving(&d, "after the churn");
    d.assert_alive();

    // Nothing of the churn pods is left.
    assert_eq!(d.port_names(), ["s0", "s1"], "churn ports left");
    let (code, br) = api(&root, "GET", &format!("/bridges/{BRIDGE}"), None);
    assert_eq!(code, 200, "the bridge stays (DEL never deletes it): {br}");
    assert_eq!(br["ports"], json!([]), "bridge members left: {br}");
    assert_eq!(names(&root.join("shared")), Vec::<String>::new(), "socket dirs left");
    assert_eq!(names(&root.join("devinfo")), Vec::<String>::new(), "device-info files left");
    assert_eq!(cni.records(), 0, "plugin records left");
    assert_eq!(names(&root.join("state/s")), Vec::<String>::new(), "socket aliases left");
    assert_eq!(cni.leases(), Vec::<String>::new(), "IPAM leases left");
    assert_eq!(fig.adds.len(), PODS);
    assert_eq!(fig.dels.len(), PODS);

    // The steady pair: every packet accounted for on both sides.
    let fwd = steady.stop().expect("stop");
    std::thread::sleep(Duration::from_millis(500));
    let pod = steady.port_stats().expect("steady pod stats");
    let (s0, s1) = (d.port("s0"), d.port("s1"));
    let report = format!("pod {pod:?} {fwd:?}; podwire {s0:?} {s1:?}");
    assert_eq!(s0.rx_packets, pod[0].tx_packets, "{report}");
    assert_eq!(s1.rx_packets, pod[1].tx_packets, "{report}");
    assert_eq!(s0.rx_packets, s1.tx_packets + s1.tx_drops, "{report}");
    assert_eq!(s1.rx_packets, s0.tx_packets + s0.tx_drops, "{report}");
    for (sw_tx, pod_rx) in [(s1.tx_packets, pod[1].rx_packets), (s0.tx_packets, pod[0].rx_packets)]
    {
        assert!(pod_rx <= sw_tx && sw_tx - pod_rx <= 1024, "{report}");
    }
    assert_eq!(s0.errors + s1.errors, 0, "{report}");
    let free = d.wait_mempool_free(free_at_start, Duration::from_secs(5));
    assert_eq!(free, free_at_start, "buffers leaked: {free} free, {free_at_start} at start");

    let sent = pod[0].tx_packets + pod[1].tx_packets;
    let received = pod[0].rx_packets + pod[1].rx_packets;
    let dropped = s0.tx_drops + s1.tx_drops;
    let (mut adds, mut dels) = (fig.adds.clone(), fig.dels.clone());
    adds.sort();
    dels.sort();
    let ms = |v: &[Duration], p: f64| percentile(v, p).as_secs_f64() * 1e3;
    eprintln!(
        "churn (seed {seed}): {PODS} pods churned in batches of {BATCH} ({} deleted under \
         traffic, {} SIGKILLed first); steady pair: {sent} packets sent, {received} received, \
         {dropped} dropped by podwire for lack of room, {} in flight at the end, 0 lost; \
         ADD median {:.1} ms p99 {:.1} ms, DEL median {:.1} ms p99 {:.1} ms under load; \
         elapsed {:.1} s",
        fig.live_dels,
        fig.killed,
        sent - received - dropped,
        ms(&adds, 0.5),
        ms(&adds, 0.99),
        ms(&dels, 0.5),
        ms(&dels, 0.99),
        began.elapsed().as_secs_f64()
    );
    eprintln!("bridge {BRIDGE} counters: {}", br["counters"]);
    steady.quit().expect("steady pod quits");
    let log = d.stop();
    assert!(!log.contains("panicked"), "{log}");
}
