//! soak: podwire under mixed traffic and churn for a given time, sampling the
//! resources a leak would grow: resident memory, open file descriptors, hugepage
//! memory mapped by the daemon and packet buffers held (mempool occupancy).
//!
//! ```text
//! cargo bench --bench soak -- [--duration SECS] [--warmup SECS] [--csv FILE]
//! ```
//!
//! What runs (one `podwire run` process, worker on core 0):
//! - a steady pair: vhost-user ports `a`, `b` cross-connected, a testpmd pod on core 1
//!   looping frames through them (io forwarding) the whole time;
//! - bridge `br0` with two AF_XDP ports on veths into two namespaces, whose kernels
//!   ping each other and run checked TCP transfers through podwire the whole time;
//! - churn, in cycles: 8 vhost-user ports created on `br0` through the control API;
//!   a frontend that connects to their sockets and hangs up 50 times per port (the
//!   "connect loop" a broken pod does); every 4th cycle a testpmd pod attaches to
//!   two of them, sends frames into the bridge (then only receives) and is killed
//!   with SIGKILL; then the 8
//!   ports are deleted. After each cycle (same ports as at the start) one sample.
//!
//! Verdict: after the warm-up, no sample may exceed the warm-up's largest by more
//! than a small tolerance (RSS 4 MiB, fds 2, hugepage memory 0, buffers held 512),
//! the kernel pings lost at most 1%, and once the traffic stops the mempool's free
//! count is back to at least its value before the traffic started. Exit status 1
//! when any check fails. `scripts/test.sh` runs it for 2 minutes.
//!
//! Needs root, hugepages, dpdk-testpmd, iproute2, ethtool, ping
//! (`scripts/install-deps.sh`), and a quiet machine for the figures to mean much.

#[path = "../tests/common/daemon.rs"]
mod daemon;
#[path = "../tests/common/netns.rs"]
mod netns;
#[path = "../tests/common/testpmd.rs"]
mod testpmd;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon::{Daemon, TempDir};
use netns::{tcp_echo, NetSetup};
use testpmd::{PeerLock, Pod, PodConfig};

const HELP: &str = "\
soak: podwire under mixed traffic and churn, sampling RSS, fds, hugepage memory and
packet buffers held; fails (exit 1) if any of them grows after the warm-up.

USAGE: cargo bench --bench soak -- [OPTIONS]

OPTIONS:
  --duration SECS   how long to run (default 120)
  --warmup SECS     samples in the first SECS set the baseline (default: a quarter of
                    the duration, at most 60)
  --csv FILE        also write every sample to FILE
  -h, --help        this text

Needs root, hugepages, dpdk-testpmd (scripts/install-deps.sh installs them all).";

/// Ports created and deleted per churn cycle.
const CHURN_PORTS: usize = 8;
/// Connect-and-hang-up rounds per churn port and cycle.
const CONNECT_LOOP: usize = 50;

struct Opts {
    duration: Duration,
    warmup: Option<Duration>,
    csv: Option<PathBuf>,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts { duration: Duration::from_secs(120), warmup: None, csv: None };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut secs = |name: &str| -> Result<Duration, String> {
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            v.parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .ok_or(format!("{name}: {v:?} is not a positive number of seconds"))
        };
        match a.as_str() {
            "--duration" => o.duration = secs("--duration")?,
            "--warmup" => o.warmup = Some(secs("--warmup")?),
            "--csv" => o.csv = Some(args.next().ok_or("--csv needs a file")?.into()),
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(o)
}

/// One sample of the daemon's resources.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    hugetlb_kib: u64,
    held: u64,
}

fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(key))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn sample(d: &Daemon, t0: Instant) -> Sample {
    let pid = d.pid();
    // Let the control thread close the connection of the last request first.
    std::thread::sleep(Duration::from_millis(200));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |r| r.count() as u64);
    let rss_kib = proc_kib(pid, "status", "VmRSS:");
    let hugetlb_kib = proc_kib(pid, "smaps_rollup", "Shared_Hugetlb:")
        + proc_kib(pid, "smaps_rollup", "Private_Hugetlb:");
    let (total, free) = d.mempool();
    Sample { at: t0.elapsed(), rss_kib, fds, hugetlb_kib, held: total - free }
}

fn config(a: &Path, b: &Path, net: &NetSetup) -> String {
    let mut s =
        String::from("[workers]\ncores = [0]\n[memory]\nbuffers = 16384\nhugepages = true\n");
    for (name, p) in [("a", a), ("b", b)] {
        s += &format!(
            "[[ports]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"server\"\n",
            p.display()
        );
    }
    for (i, e) in net.ends.iter().enumerate() {
        s += &format!(
            "[[ports]]\nname = \"x{i}\"\ntype = \"af-xdp\"\ninterface = \"{}\"\nxdp_mode = \"generic\"\n",
            e.host
        );
    }
    s += "[[xconnect]]\nports = [\"a\", \"b\"]\n[[bridge]]\nname = \"br0\"\nports = [\"x0\", \"x1\"]\n";
    s
}

/// Kernel traffic between the namespaces until `stop`: pings and checked TCP
/// transfers. Returns (pings sent, replies, TCP bytes echoed).
fn kernel_traffic(net: Arc<NetSetup>, stop: Arc<AtomicBool>) -> (u64, u64, u64) {
    let (mut sent, mut got, mut bytes) = (0u64, 0u64, 0u64);
    let mut port = 5300;
    while !stop.load(Ordering::Relaxed) {
        let r = net.ping(0, 1, 10, 1000) as u64;
        sent += 10;
        got += r;
        let (a, b, ip) = (net.ends[0].ns.clone(), net.ends[1].ns.clone(), net.ends[1].ip.clone());
        bytes += tcp_echo(&a, &b, &ip, port, 1 << 20) as u64;
        port = if port == 5399 { 5300 } else { port + 1 };
    }
    (sent, got, bytes)
}

/// One churn cycle; `pod` says whether a testpmd pod attaches this time.
fn churn_cycle(d: &Daemon, dir: &Path, pod: bool) {
    let socks: Vec<PathBuf> =
        (0..CHURN_PORTS).map(|i| dir.join(format!("churn{i}.sock"))).collect();
    for (i, s) in socks.iter().enumerate() {
        let body = serde_json::json!({
            "name": format!("churn{i}"), "type": "vhost-user", "socket": s,
            "mode": "server", "bridge": "br0",
        });
        d.api_ok("POST", "/ports", Some(&body.to_string()), 201);
    }
    for s in &socks {
        for _ in 0..CONNECT_LOOP {
            match UnixStream::connect(s) {
                Ok(c) => drop(c),
                Err(e) => panic!("connect {}: {e}", s.display()),
            }
        }
    }
    if pod {
        // rxonly: after its first bursts the pod only receives. An io-forwarding pod
        // on two ports of one bridge would be a loop (as a cable would be).
        let cfg = PodConfig::new(&socks[..2]).on_cpu(1).mem_mb(128).forward_mode("rxonly");
        let mut p = Pod::start(cfg).unwrap_or_else(|e| panic!("churn pod: {e}"));
        p.wait_links_up(Duration::from_secs(10)).unwrap_or_else(|e| panic!("churn pod: {e}"));
        p.start_tx_first(4).unwrap_or_else(|e| panic!("churn pod: {e}"));
        std::thread::sleep(Duration::from_millis(300));
        p.sigkill();
    }
    for i in 0..CHURN_PORTS {
        d.api_ok("DELETE", &format!("/ports/churn{i}"), None, 204);
    }
    for s in &socks {
        assert!(!s.exists(), "{} left behind by DELETE", s.display());
    }
}

/// A resource check: name, how to read it from a sample, tolerated growth.
type Check = (&'static str, fn(&Sample) -> u64, u64);

/// Largest value of `f` over `v`.
fn max_of(v: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    v.iter().map(f).max().unwrap_or(0)
}

fn main() {
    let o = parse_args().unwrap_or_else(|e| {
        eprintln!("soak: {e}");
        std::process::exit(2)
    });
    if let Err(e) = testpmd::testpmd_path() {
        eprintln!("soak: {e}");
        std::process::exit(2);
    }
    let warmup = o.warmup.unwrap_or((o.duration / 4).min(Duration::from_secs(60)));
    let _lock = PeerLock::acquire();
    // NetSetup puts the process id in the names itself.
    let net = Arc::new(NetSetup::new("sk", 2, 1, 43));
    let dir = TempDir::kept_on_failure("soak");
    let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let d = Daemon::start(dir.path(), &config(&a, &b, &net), &[&a, &b]);
    std::thread::sleep(Duration::from_millis(500));
    let (total, free_before) = d.mempool();

    let mut steady = Pod::start(PodConfig::new(&[&a, &b]).on_cpu(1)).expect("steady pod");
    steady.wait_links_up(Duration::from_secs(20)).expect("steady pod links");
    steady.start_tx_first(8).expect("steady pod start");
    let stop = Arc::new(AtomicBool::new(false));
    let kernel = {
        let (net, stop) = (net.clone(), stop.clone());
        std::thread::spawn(move || kernel_traffic(net, stop))
    };

    println!(
        "soak: {:?}, warm-up {:?}, {CHURN_PORTS} ports per churn cycle, {total} buffers",
        o.duration, warmup
    );
    println!(
        "{:>7} {:>6} {:>9} {:>5} {:>12} {:>6}",
        "t(s)", "cycle", "rss(KiB)", "fds", "hugetlb(KiB)", "held"
    );
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut cycle = 0u64;
    while t0.elapsed() < o.duration {
        churn_cycle(&d, dir.path(), cycle % 4 == 3);
        cycle += 1;
        let s = sample(&d, t0);
        println!(
            "{:>7.1} {cycle:>6} {:>9} {:>5} {:>12} {:>6}",
            s.at.as_secs_f64(),
            s.rss_kib,
            s.fds,
            s.hugetlb_kib,
            s.held
        );
        samples.push(s);
    }

    stop.store(true, Ordering::Relaxed);
    let (sent, got, bytes) = kernel.join().expect("kernel traffic thread");
    let steady_stats = steady.stop().expect("steady pod stop");
    steady.quit().expect("steady pod quit");
    let free_after = d.wait_mempool_free(free_before, Duration::from_secs(5));
    let stats = d.stats();
    let log_errors: u64 = stats.iter().map(|p| p.errors).sum();
    for p in stats.iter().filter(|p| p.name.starts_with('x')) {
        println!(
            "port {}: rx {} tx {} rx_drops {} tx_drops {} errors {}",
            p.name, p.rx_packets, p.tx_packets, p.rx_drops, p.tx_drops, p.errors
        );
    }
    let log = d.stop();

    if let Some(f) = &o.csv {
        let mut text = String::from("t_s,rss_kib,fds,hugetlb_kib,held\n");
        for s in &samples {
            text += &format!(
                "{:.1},{},{},{},{}\n",
                s.at.as_secs_f64(),
                s.rss_kib,
                s.fds,
                s.hugetlb_kib,
                s.held
            );
        }
        std::fs::write(f, text).unwrap_or_else(|e| eprintln!("soak: {}: {e}", f.display()));
    }

    let (warm, after): (Vec<Sample>, Vec<Sample>) = samples.iter().partition(|s| s.at <= warmup);
    let mut failures = Vec::new();
    if warm.is_empty() || after.is_empty() {
        failures.push(format!(
            "{} samples in the warm-up and {} after it: run longer than the warm-up",
            warm.len(),
            after.len()
        ));
    }
    let checks: [Check; 4] = [
        ("RSS (KiB)", |s| s.rss_kib, 4096),
        ("open fds", |s| s.fds, 2),
        ("hugepage memory (KiB)", |s| s.hugetlb_kib, 0),
        ("buffers held", |s| s.held, 512),
    ];
    println!(
        "\n{:<22} {:>12} {:>12} {:>12} {:>10}",
        "resource", "first", "warm-up max", "after max", "verdict"
    );
    for (name, f, tol) in checks {
        let (first, wmax, amax) =
            (samples.first().map_or(0, f), max_of(&warm, f), max_of(&after, f));
        let ok = amax <= wmax + tol;
        println!(
            "{name:<22} {first:>12} {wmax:>12} {amax:>12} {:>10}",
            if ok { "ok" } else { "GROWS" }
        );
        if !ok {
            failures
                .push(format!("{name} grew after the warm-up: {wmax} -> {amax} (tolerance {tol})"));
        }
    }
    println!(
        "churn: {cycle} cycles, {} ports created and deleted, {} frontend connects, {} testpmd \
         pods killed",
        cycle * CHURN_PORTS as u64,
        cycle * (CHURN_PORTS * CONNECT_LOOP) as u64,
        cycle / 4
    );
    let steady_rx: u64 = steady_stats.iter().map(|s| s.rx_packets).sum();
    println!(
        "traffic: steady pod forwarded {steady_rx} frames; kernel pings {got}/{sent}, TCP {} MiB \
         echoed and checked",
        bytes >> 20
    );
    println!("mempool free: {free_before} before the traffic, {free_after} after it stopped");
    // A reply later than ping's 1 s wait counts as lost: allow 1% for a loaded host.
    if sent == 0 || (sent - got) * 100 > sent {
        failures.push(format!("kernel pings through the bridge lost {} of {sent}", sent - got));
    }
    // More free after than before is fine: AF_XDP tx completions are reaped on the
    // next send, so a quiet port may hold a few buffers at either moment.
    if free_after < free_before {
        failures.push(format!(
            "{} packet buffers not returned to the mempool",
            free_before - free_after
        ));
    }
    if steady_rx == 0 {
        failures.push("the steady pod forwarded nothing".into());
    }
    if log_errors != 0 {
        failures.push(format!("{log_errors} port errors counted"));
    }
    if log.contains("panicked") {
        failures.push("the daemon's log shows a panic".into());
    }
    drop(net);
    if failures.is_empty() {
        println!("soak: OK");
    } else {
        for f in &failures {
            println!("soak: FAIL {f}");
        }
        std::process::exit(1);
    }
}
