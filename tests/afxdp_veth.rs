//! podwire's AF_XDP port on veth pairs: two network namespaces, each with a veth whose
//! host end podwire takes with AF_XDP and cross-connects to the other. The kernel
//! stacks in the namespaces ping each other and run TCP echo through podwire, checking
//! every byte. Generic and native XDP, one and two queues; the program must be gone
//! from the interfaces once podwire stops.
//!
//! Needs root, iproute2, ethtool and ping (no other peer).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::daemon::{Daemon, TempDir};
use common::netns::{tcp_echo, NetSetup};
use podwire_driver::xdp::{AfXdpConfig, AfXdpPort, XdpMode, ZeroCopy};
use podwire_driver::{Mempool, MempoolConfig, Port};

/// One daemon at a time: they all spin on the same core.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(net: &NetSetup, queues: u16, mode: &str) -> String {
    let mut s =
        String::from("[workers]\ncores = [0]\n[memory]\nbuffers = 16384\nhugepages = false\n");
    for (i, e) in net.ends.iter().enumerate() {
        s += &format!(
            "[[ports]]\nname = \"x{i}\"\ntype = \"af-xdp\"\ninterface = \"{}\"\nqueues = {queues}\n\
             xdp_mode = \"{mode}\"\nzero_copy = \"auto\"\n",
            e.host
        );
    }
    s += "[[xconnect]]\nports = [\"x0\", \"x1\"]\n";
    s
}

fn assert_no_xdp(net: &NetSetup) {
    for i in 0..net.ends.len() {
        let l = net.host_link(i);
        assert!(!l.contains("xdp"), "XDP program left attached after podwire stopped: {l}");
    }
}

/// Ping both ways, then TCP echo, then the counters; returns the daemon log.
fn ping_tcp_roundtrip(tag: &str, subnet: u8, queues: u16, mode: &str, streams: u16) {
    let _g = serial();
    let net = NetSetup::new(tag, 2, queues, subnet);
    let dir = TempDir::kept_on_failure(&format!("xdp-{tag}"));
    let daemon = Daemon::start(dir.path(), &config(&net, queues, mode), &[]);
    daemon.wait_port("x0", Duration::from_secs(5), "link up", |p| p.link == "up");
    daemon.wait_port("x1", Duration::from_secs(5), "link up", |p| p.link == "up");
    let shown = net.host_link(0);
    let want = if mode == "generic" { "xdpgeneric" } else { "xdp" };
    assert!(shown.contains(want), "{want} not attached: {shown}");
    if mode == "native" {
        assert!(!shown.contains("xdpgeneric"), "native requested, got generic: {shown}");
    }

    assert_eq!(net.ping(0, 1, 20, 56), 20, "ping a->b:\n{}", daemon.log_text());
    assert_eq!(net.ping(1, 0, 10, 1400), 10, "large ping b->a:\n{}", daemon.log_text());

    let mut handles = Vec::new();
    for s in 0..streams {
        let (a, b, ip) = (net.ends[0].ns.clone(), net.ends[1].ns.clone(), net.ends[1].ip.clone());
        handles.push(std::thread::spawn(move || tcp_echo(&a, &b, &ip, 5201 + s, 3 << 20)));
    }
    for h in handles {
        assert_eq!(h.join().expect("tcp echo"), 3 << 20);
    }

    if queues > 1 && mode != "generic" {
        // Every queue carried traffic to its own socket (veth counts native XDP
        // redirects per rx queue).
        for e in &net.ends {
            let stats = common::netns::sh(&["ethtool", "-S", &e.host]);
            for q in 0..queues {
                let key = format!("rx_queue_{q}_xdp_redirect:");
                let n: u64 = stats
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&key))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no {key} in ethtool -S {}:\n{stats}", e.host));
                assert!(n > 0, "queue {q} of {} redirected nothing:\n{stats}", e.host);
            }
        }
    }
    let x0 = daemon.port("x0");
    let x1 = daemon.port("x1");
    assert_eq!(x0.queues as u64, queues as u64);
    // 3 MiB each way per stream, in frames of at most 1514 bytes.
    let min_frames = streams as u64 * (3 << 20) / 1514;
    assert!(x0.rx_packets > min_frames && x1.rx_packets > min_frames, "{x0:?} {x1:?}");
    assert!(x0.tx_packets > min_frames && x1.tx_packets > min_frames, "{x0:?} {x1:?}");
    assert_eq!(x0.errors + x1.errors, 0, "{x0:?} {x1:?}");

    // Link state follows the interface.
    net.exec(0, &["ip", "link", "set", &net.ends[0].inner, "down"]);
    daemon.wait_port("x0", Duration::from_secs(3), "link down", |p| p.link == "down");
    net.exec(0, &["ip", "link", "set", &net.ends[0].inner, "up"]);
    daemon.wait_port("x0", Duration::from_secs(3), "link up", |p| p.link == "up");

    let log = daemon.stop();
    assert!(log.contains("AF_XDP port ready"), "{log}");
    assert_no_xdp(&net);

    // A restart right away gets the queues back (EBUSY on quick rebind is retried).
    let daemon = Daemon::start(dir.path(), &config(&net, queues, mode), &[]);
    daemon.wait_port("x1", Duration::from_secs(5), "link up", |p| p.link == "up");
    assert_eq!(net.ping(1, 0, 5, 56), 5, "ping after restart:\n{}", daemon.log_text());
    daemon.stop();
    assert_no_xdp(&net);

    // Even a SIGKILLed podwire leaves no program behind (the BPF link dies with it).
    let daemon = Daemon::start(dir.path(), &config(&net, queues, mode), &[]);
    assert!(net.host_link(0).contains("xdp"));
    drop(daemon); // SIGKILL and reap
    assert_no_xdp(&net);
}

#[test]
fn generic_xdp_ping_and_tcp() {
    ping_tcp_roundtrip("g", 1, 1, "generic", 1);
}

#[test]
fn native_xdp_ping_and_tcp() {
    ping_tcp_roundtrip("n", 2, 1, "native", 1);
}

#[test]
fn two_queues_ping_and_tcp() {
    ping_tcp_roundtrip("q", 3, 2, "auto", 4);
}

fn pool() -> Mempool {
    Mempool::small_pages(MempoolConfig { count: 4096, ..Default::default() }).expect("pool")
}

fn port_cfg(ifname: &str, queues: u16, replace: bool) -> AfXdpConfig {
    AfXdpConfig {
        name: "t".into(),
        interface: ifname.into(),
        queues,
        xdp_mode: XdpMode::Auto,
        zero_copy: ZeroCopy::Auto,
        replace_program: replace,
        ring_size: 512,
    }
}

#[test]
fn bad_setups_fail_with_clear_errors() {
    let _g = serial();
    let net = NetSetup::new("e", 1, 1, 4);
    let host = net.ends[0].host.clone();

    let e = AfXdpPort::new(port_cfg("pwnosuch0", 1, false), pool()).unwrap_err().to_string();
    assert!(e.contains("\"pwnosuch0\" does not exist"), "{e}");

    let e = AfXdpPort::new(port_cfg(&host, 4, false), pool()).unwrap_err().to_string();
    assert!(e.contains("has 1 rx queue(s) but the port asks for 4"), "{e}");

    // A program someone else holds is never replaced silently, and cannot be taken
    // from its BPF link even when replacing is allowed.
    let first = AfXdpPort::new(port_cfg(&host, 1, false), pool()).expect("first port");
    assert!(first.xdp_mode().is_some());
    assert!(first.link_up());
    let e = AfXdpPort::new(port_cfg(&host, 1, false), pool()).unwrap_err().to_string();
    assert!(e.contains("another XDP program") && e.contains("replace_program"), "{e}");
    let e = AfXdpPort::new(port_cfg(&host, 1, true), pool()).unwrap_err().to_string();
    assert!(e.contains("cannot remove the XDP program"), "{e}");
    assert!(net.host_link(0).contains("xdp"));
    drop(first);
    assert_no_xdp(&net);

    // Port removal detaches; a new port binds the same queue at once (EBUSY retried).
    let again = AfXdpPort::new(port_cfg(&host, 1, false), pool()).expect("rebind");
    drop(again);
    assert_no_xdp(&net);

    // The interface disappearing: the port goes down, and closing it still works.
    let gone = AfXdpPort::new(port_cfg(&host, 1, false), pool()).expect("port");
    assert!(gone.link_up());
    common::netns::sh(&["ip", "link", "del", &host]);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while gone.link_up() {
        assert!(std::time::Instant::now() < deadline, "port still up after its interface left");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gone.counters().total().errors, 1, "disappearance counted once");
    drop(gone);

    // The daemon reports a missing interface in one line naming port and interface.
    let dir = TempDir::kept_on_failure("xdp-missing");
    let cfg = format!(
        "control_socket = \"{}\"\n[workers]\ncores = [0]\n[memory]\nbuffers = 4096\nhugepages = \
         false\n[[ports]]\nname = \"up\"\ntype = \"af-xdp\"\ninterface = \"pwnosuch0\"\n",
        dir.path().join("ctl.sock").display()
    );
    std::fs::write(dir.path().join("c.toml"), cfg).unwrap();
    let out = std::process::Command::new(common::daemon::BIN)
        .args(["run", "--config"])
        .arg(dir.path().join("c.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port \"up\"") && err.contains("\"pwnosuch0\" does not exist"), "{err}");
}

/// Mixing kinds: an AF_XDP port (a kernel namespace behind a veth) cross-connected
/// with a vhost-user port (a DPDK testpmd pod in `icmpecho` mode, which answers ARP
/// and ping). The namespace pings the pod through podwire.
#[test]
fn af_xdp_to_vhost_user_pod_answers_ping() {
    use common::testpmd::{self, PeerLock, Pod, PodConfig};
    testpmd::require_testpmd();
    let _peers = PeerLock::acquire();
    let _g = serial();
    let net = NetSetup::new("m", 1, 1, 5);
    let dir = TempDir::kept_on_failure("xdp-mixed");
    let sock = dir.path().join("pod.sock");
    let cfg = format!(
        "[workers]\ncores = [0]\n[memory]\nbuffers = 16384\nhugepages = false\n\
         [[ports]]\nname = \"kernel\"\ntype = \"af-xdp\"\ninterface = \"{}\"\n\
         [[ports]]\nname = \"pod\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n\
         [[xconnect]]\nports = [\"kernel\", \"pod\"]\n",
        net.ends[0].host,
        sock.display()
    );
    let daemon = Daemon::start(dir.path(), &cfg, &[&sock]);
    let mut pod =
        Pod::start(PodConfig::new(&[&sock]).on_cpu(1).forward_mode("icmpecho")).expect("pod");
    pod.wait_links_up(Duration::from_secs(20)).expect("pod link up");
    daemon.wait_port("pod", Duration::from_secs(10), "link up", |p| p.link == "up");
    daemon.wait_port("kernel", Duration::from_secs(5), "link up", |p| p.link == "up");
    pod.start_fwd().expect("start icmpecho");

    // The pod answers ARP and ping for any address.
    let out =
        net.exec(0, &["ping", "-c", "20", "-i", "0.05", "-W", "2", "-s", "1000", "10.77.5.9"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pod_stats = pod.port_stats().expect("pod stats");
    pod.stop().expect("stop");
    let kernel = daemon.port("kernel");
    let vhost = daemon.port("pod");
    pod.quit().expect("pod quits");
    let log = daemon.stop();
    assert!(
        text.contains("20 received"),
        "ping through podwire to the pod:\n{text}\npod {pod_stats:?}\nkernel {kernel:?}\npod port \
         {vhost:?}\n{log}"
    );
    // ARP + 20 echo requests went kernel -> pod, and as many replies came back.
    assert!(kernel.rx_packets >= 21 && vhost.tx_packets >= 21, "{kernel:?} {vhost:?}");
    assert!(vhost.rx_packets >= 21 && kernel.tx_packets >= 21, "{kernel:?} {vhost:?}");
    assert_eq!(kernel.errors + vhost.errors, 0, "{kernel:?} {vhost:?}");
    assert_no_xdp(&net);
}
