//! Side-by-side PVP loopback: podwire vs DPDK's `net_vhost` (testpmd, io forwarding)
//! as the vhost-user switch, same testpmd pod, same two cores, in one invocation.
//!
//! For each case and run, the two switches go back to back (the order alternates
//! between runs): the switch on core 0 with two vhost-user server sockets
//! cross-connected, the pod (testpmd, two `net_virtio_user` ports, io forwarding) on
//! core 1, `start tx_first 32`, a warm-up, then the switch's received packets (both
//! directions) are counted over a window. Prints Mpps min/median/max per switch and
//! the min/median/max of the podwire/DPDK ratio of back-to-back pairs (the machine
//! drifts between fast and slow states; only pairs taken back to back compare), plus
//! the hugepage memory each switch holds.
//!
//! Before and after each run the harness times a cache line bounced between the two
//! cores (`common/c2c.rs`): the host moves this VM's two virtual CPUs between a near
//! placement (round trip ~45-130 ns) and a far one (~350-480 ns), and every switch
//! loses about half its throughput in the far one. Each run line shows the placement
//! and, for podwire, the share of its poll rounds that found nothing to do and the
//! packets per busy round (from GET /metrics: a podwire that idles is waiting for the
//! pod). The summary adds the ratio over the pairs taken wholly near, and wholly far.
//!
//! The `64-bridge` case adds a third switch: podwire with the two ports on an L2
//! bridge (MAC learning on) instead of the cross-connect. The pod (the same for all
//! three switches of that case, io forwarding) gets fixed port MACs (`mac=` devarg)
//! and sends to the other port's MAC (`--eth-peer`): frames from pod port 0 (source
//! M0, destination M1) always enter the switch on socket a, those of port 1 (M1 to
//! M0) on b, so after the first frames both addresses are learned and the bridge
//! forwards learned unicast (its `forwarded` and `flooded` counters are printed to
//! show it). The bridge/cross-connect ratio is printed beside podwire/DPDK.
//!
//! `cargo bench --bench pvp -- --help` for the flags. Needs root, hugepages and
//! `dpdk-testpmd` (scripts/install-deps.sh).

#[path = "common/c2c.rs"]
mod c2c;
#[path = "common/harness.rs"]
mod harness;
#[path = "../tests/common/prometheus.rs"]
mod prometheus;
use harness::{fmt3, min_med_max, spawn_podwire};
#[path = "../tests/common/testpmd.rs"]
mod testpmd;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use testpmd::{Pod, PodConfig, ReferenceSwitch, SwitchConfig};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "\
usage: cargo bench --bench pvp -- [options] [CASE-FILTER]

Side-by-side PVP loopback throughput: podwire vs DPDK testpmd net_vhost.

options:
  --cases LIST       comma-separated cases (default: all):
                       64-split-mrg1  64-byte frames, split ring, mrg_rxbuf=1
                       64-split-mrg0  64-byte frames, split ring, mrg_rxbuf=0
                       64-packed      64-byte frames, packed ring
                       1500-split     1500-byte frames, split ring
                       64-bridge      64-byte frames, split ring, pod sending to learned
                                      MACs: podwire cross-connect, podwire L2 bridge, DPDK
  --runs N           runs per case and switch (default 3)
  --duration SECS    measurement window (default 5)
  --warmup SECS      warm-up after start tx_first (default 2)
  --only WHICH       dpdk | podwire | both (default both; podwire includes the bridge)
  --podwire PATH     podwire binary (default: the one cargo built, target/release/podwire)
  --switch-cpu N     core of the switch (default 0)
  --pod-cpu N        core of the pod (default 1)
  -h, --help         this text

A positional CASE-FILTER runs only the cases whose name contains it (a filter that
matches none, e.g. one meant for another bench, runs nothing).";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    /// podwire cross-connecting the two ports.
    Podwire = 0,
    Dpdk = 1,
    /// podwire with the two ports on an L2 bridge.
    Bridge = 2,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Dpdk => "DPDK",
            Which::Podwire => "podwire",
            Which::Bridge => "bridge",
        }
    }
}

struct Case {
    name: &'static str,
    what: &'static str,
    frame: u32,
    packed: bool,
    mrg_rxbuf: bool,
    /// Also run podwire's bridge; the pod's ports then have fixed MACs and send to
    /// each other's.
    bridge: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "64-split-mrg1",
        what: "64 B split mrg_rxbuf=1",
        frame: 64,
        packed: false,
        mrg_rxbuf: true,
        bridge: false,
    },
    Case {
        name: "64-split-mrg0",
        what: "64 B split mrg_rxbuf=0",
        frame: 64,
        packed: false,
        mrg_rxbuf: false,
        bridge: false,
    },
    Case {
        name: "64-packed",
        what: "64 B packed",
        frame: 64,
        packed: true,
        mrg_rxbuf: true,
        bridge: false,
    },
    Case {
        name: "1500-split",
        what: "1500 B split mrg_rxbuf=1",
        frame: 1500,
        packed: false,
        mrg_rxbuf: true,
        bridge: false,
    },
    Case {
        name: "64-bridge",
        what: "64 B split, bridge MACs",
        frame: 64,
        packed: false,
        mrg_rxbuf: true,
        bridge: true,
    },
];

struct Opts {
    cases: Vec<&'static Case>,
    runs: usize,
    duration: Duration,
    warmup: Duration,
    switches: Vec<Which>,
    podwire: PathBuf,
    switch_cpu: usize,
    pod_cpu: usize,
}

fn parse_args() -> Result<Option<Opts>, String> {
    let mut o = Opts {
        cases: CASES.iter().collect(),
        runs: 3,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(2),
        switches: vec![Which::Podwire, Which::Dpdk],
        podwire: PathBuf::from(env!("CARGO_BIN_EXE_podwire")),
        switch_cpu: 0,
        pod_cpu: 1,
    };
    let mut filter: Option<String> = None;
    let mut args = std::env::args().skip(1);
    let secs = |v: String| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && s.is_finite())
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("bad number of seconds: {v}"))
    };
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--cases" => {
                let v = val("--cases")?;
                let mut cs = Vec::new();
                for n in v.split(',').filter(|n| !n.is_empty()) {
                    let c = CASES
                        .iter()
                        .find(|c| c.name == n)
                        .ok_or_else(|| format!("unknown case {n} (see --help)"))?;
                    cs.push(c);
                }
                o.cases = cs;
            }
            "--runs" => {
                o.runs = val("--runs")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--runs needs a positive integer")?
            }
            "--duration" => o.duration = secs(val("--duration")?)?,
            "--warmup" => o.warmup = secs(val("--warmup")?)?,
            "--only" => {
                o.switches = match val("--only")?.as_str() {
                    "dpdk" => vec![Which::Dpdk],
                    "podwire" => vec![Which::Podwire],
                    "both" => vec![Which::Podwire, Which::Dpdk],
                    x => return Err(format!("--only takes dpdk, podwire or both, not {x}")),
                }
            }
            "--podwire" => o.podwire = PathBuf::from(val("--podwire")?),
            "--switch-cpu" => {
                o.switch_cpu = val("--switch-cpu")?.parse().map_err(|_| "bad --switch-cpu")?
            }
            "--pod-cpu" => o.pod_cpu = val("--pod-cpu")?.parse().map_err(|_| "bad --pod-cpu")?,
            x if x.starts_with('-') => return Err(format!("unknown option {x} (see --help)")),
            x => filter = Some(x.to_string()),
        }
    }
    if let Some(f) = filter {
        o.cases.retain(|c| c.name.contains(&f));
    }
    Ok(Some(o))
}

/// podwire as the switch: `podwire run` with a generated config.
struct PodwireSwitch {
    child: Child,
    dir: PathBuf,
    control: PathBuf,
    exited: bool,
}

impl PodwireSwitch {
    fn start(
        bin: &Path,
        dir: &Path,
        socks: &[PathBuf],
        cpu: usize,
        bridge: bool,
    ) -> BoxResult<Self> {
        if !bin.is_file() {
            return Err(format!(
                "podwire binary {} not found: cargo build --release, or pass --podwire PATH",
                bin.display()
            )
            .into());
        }
        let control = dir.join("podwire.sock");
        let mut cfg = format!(
            "control_socket = \"{}\"\n[workers]\ncores = [{cpu}]\n[memory]\nbuffers = 16384\nhugepages = true\n",
            control.display()
        );
        for (i, s) in socks.iter().enumerate() {
            let _ = std::fs::remove_file(s);
            write!(
                cfg,
                "[[ports]]\nname = \"p{i}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"server\"\nqueues = 1\n",
                s.display()
            )?;
        }
        if bridge {
            cfg.push_str("[[bridge]]\nname = \"br0\"\nports = [\"p0\", \"p1\"]\n");
        } else {
            cfg.push_str("[[xconnect]]\nports = [\"p0\", \"p1\"]\n");
        }
        let child = spawn_podwire(bin, dir, &cfg)?;
        let mut sw = PodwireSwitch { child, dir: dir.to_path_buf(), control, exited: false };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(socks.iter().all(|s| s.exists()) && sw.control.exists()) {
            if let Ok(Some(st)) = sw.child.try_wait() {
                sw.exited = true;
                return Err(format!("podwire exited ({st}) at start:\n{}", sw.log_tail()).into());
            }
            if Instant::now() > deadline {
                return Err(
                    format!("podwire sockets missing after 20 s:\n{}", sw.log_tail()).into()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(sw)
    }

    fn log_tail(&self) -> String {
        let l = std::fs::read_to_string(self.dir.join("podwire.log")).unwrap_or_default();
        l.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sum of a counter (`rx_packets`, `tx_drops`, ...) over all ports, from
    /// `podwire stats --json`.
    fn ports_sum(&self, bin: &Path, counter: &str) -> BoxResult<u64> {
        let v = self.query(bin, &["stats"])?;
        let ports = v["ports"].as_array().ok_or("podwire stats --json: no \"ports\" array")?;
        Ok(ports.iter().filter_map(|p| p[counter].as_u64()).sum())
    }

    /// The worker's poll rounds so far, (busy, idle): `podwire_worker_polls_total`
    /// from GET /metrics on the control socket.
    fn poll_rounds(&self) -> BoxResult<(u64, u64)> {
        let (code, body) =
            podwire::control::client::request(&self.control, "GET", "/metrics", None)?;
        if code != 200 {
            return Err(format!("GET /metrics answered {code}: {body}").into());
        }
        let e = prometheus::parse(&body)?;
        let rounds = |state| e.get("podwire_worker_polls_total", &[("state", state)]);
        match (rounds("busy"), rounds("idle")) {
            (Some(b), Some(i)) => Ok((b as u64, i as u64)),
            _ => Err("GET /metrics: no single worker's podwire_worker_polls_total".into()),
        }
    }

    /// The first bridge's `forwarded` and `flooded` counters.
    fn bridge_counters(&self, bin: &Path) -> BoxResult<(u64, u64)> {
        let v = self.query(bin, &["bridge", "list"])?;
        let c = &v["bridges"][0]["counters"];
        match (c["forwarded"].as_u64(), c["flooded"].as_u64()) {
            (Some(f), Some(fl)) => Ok((f, fl)),
            _ => Err(format!("podwire bridge list --json: no counters in {v}").into()),
        }
    }

    /// Runs `podwire ARGS --socket CONTROL --json` and parses its output.
    fn query(&self, bin: &Path, args: &[&str]) -> BoxResult<serde_json::Value> {
        let mut c = Command::new(bin)
            .args(args)
            .arg("--socket")
            .arg(&self.control)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if c.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return Err(format!("podwire {args:?} did not answer within 5 s").into());
            }
            thread::sleep(Duration::from_millis(5));
        }
        let out = c.wait_with_output()?;
        if !out.status.success() {
            return Err(format!(
                "podwire {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn stop(&mut self) -> BoxResult<()> {
        if self.exited {
            return Ok(());
        }
        if self.child.try_wait()?.is_none() {
            // SAFETY: our own child, not yet reaped, so the PID is still ours.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    self.exited = true;
                    return Err("podwire did not stop within 10 s of SIGTERM".into());
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.exited = true;
        Ok(())
    }
}

impl Drop for PodwireSwitch {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.stop();
        }
    }
}

enum Switch {
    Dpdk(ReferenceSwitch),
    Podwire(PodwireSwitch, PathBuf),
}

impl Switch {
    fn start(which: Which, o: &Opts, dir: &Path, socks: &[PathBuf]) -> BoxResult<Switch> {
        Ok(match which {
            Which::Dpdk => {
                Switch::Dpdk(ReferenceSwitch::start(SwitchConfig::new(socks).on_cpu(o.switch_cpu))?)
            }
            Which::Podwire | Which::Bridge => Switch::Podwire(
                PodwireSwitch::start(&o.podwire, dir, socks, o.switch_cpu, which == Which::Bridge)?,
                o.podwire.clone(),
            ),
        })
    }
    fn rx_packets_total(&mut self) -> BoxResult<u64> {
        match self {
            Switch::Dpdk(s) => Ok(s.rx_packets_total()?),
            Switch::Podwire(s, bin) => s.ports_sum(bin, "rx_packets"),
        }
    }
    /// Packets the switch dropped since it started because the pod's rx ring had no
    /// room (DPDK: `stop`'s TX-dropped, which also stops its forwarding).
    fn dropped(&mut self) -> BoxResult<u64> {
        match self {
            Switch::Dpdk(s) => Ok(s.stop()?.iter().map(|f| f.tx_dropped).sum()),
            Switch::Podwire(s, bin) => s.ports_sum(bin, "tx_drops"),
        }
    }
    /// podwire only: the worker's (busy, idle) poll rounds so far.
    fn poll_rounds(&self) -> Option<(u64, u64)> {
        match self {
            Switch::Podwire(s, _) => s.poll_rounds().ok(),
            Switch::Dpdk(_) => None,
        }
    }
    /// podwire bridge only: (forwarded, flooded).
    fn bridge_counters(&self) -> Option<(u64, u64)> {
        match self {
            Switch::Podwire(s, bin) => s.bridge_counters(bin).ok(),
            Switch::Dpdk(_) => None,
        }
    }
    fn pid(&self) -> u32 {
        match self {
            Switch::Dpdk(s) => s.pid(),
            Switch::Podwire(s, _) => s.pid(),
        }
    }
    fn stop(self) -> BoxResult<()> {
        match self {
            Switch::Dpdk(s) => Ok(s.quit()?),
            Switch::Podwire(mut s, _) => s.stop(),
        }
    }
}

struct Sample {
    mpps: f64,
    /// Hugepage KiB mapped by the switch, not counting the pod's memory it maps.
    own_hugepage_kib: u64,
    /// Drop in HugePages_Free while the switch started (2 MiB pages).
    hugepages_taken: i64,
    /// Bridge only: frames forwarded to a learned port, and flooded, over the run.
    bridge: Option<(u64, u64)>,
    /// podwire only, over the window: the share of poll rounds that found every queue
    /// empty, and packets received per busy round.
    polls: Option<(f64, f64)>,
    /// Packets dropped since the start by the pod (its tx ring full) and by the switch
    /// (the pod's rx ring full). The loop has no packet source after `tx_first`:
    /// every drop leaves fewer packets in flight (2048 at the start).
    dropped: (u64, u64),
    /// Core-to-core round trips (ns) probed just before and just after the run.
    c2c: [Option<f64>; 2],
}

impl Sample {
    /// The placement of the two cores over the run: "near" or "far" when both probes
    /// agree, else "mixed" (the host moved them during the run) or "?".
    fn placement(&self) -> &'static str {
        match (c2c::placement(self.c2c[0]), c2c::placement(self.c2c[1])) {
            (a, b) if a == b => a,
            ("?", _) | (_, "?") => "?",
            _ => "mixed",
        }
    }
}

/// The pod's port MACs in the bridge case.
const POD_MACS: [&str; 2] = ["02:00:00:00:0a:00", "02:00:00:00:0a:01"];

fn run_one(which: Which, case: &Case, o: &Opts, dir: &Path) -> BoxResult<Sample> {
    let socks = [dir.join("a.sock"), dir.join("b.sock")];
    let probe = || c2c::round_trip_ns(o.switch_cpu, o.pod_cpu, Duration::from_secs(2));
    let c2c_before = probe();
    let free_before = testpmd::hugepages_free() as i64;
    let mut sw = Switch::start(which, o, dir, &socks)?;
    let free_after = testpmd::hugepages_free() as i64;
    let mut pod_cfg = PodConfig::new(&socks)
        .on_cpu(o.pod_cpu)
        .packed_vq(case.packed)
        .mrg_rxbuf(case.mrg_rxbuf)
        .txpkts(case.frame);
    if case.bridge {
        // Same ports, with fixed MACs, each sending to the other's MAC.
        pod_cfg.ports = socks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                testpmd::PodPort::Raw(format!(
                    "net_virtio_user{i},path={},queues=1,queue_size={},mrg_rxbuf={},mac={}",
                    s.display(),
                    pod_cfg.queue_size,
                    case.mrg_rxbuf as u8,
                    POD_MACS[i]
                ))
            })
            .collect();
        pod_cfg = pod_cfg
            .arg(format!("--eth-peer=0,{}", POD_MACS[1]))
            .arg(format!("--eth-peer=1,{}", POD_MACS[0]));
    }
    let mut pod = Pod::start(pod_cfg)?;
    pod.wait_links_up(Duration::from_secs(15))?;
    pod.start_tx_first(32)?;
    thread::sleep(o.warmup);
    let r0 = sw.poll_rounds();
    let c0 = sw.rx_packets_total()?;
    let t0 = Instant::now();
    thread::sleep(o.duration);
    let c1 = sw.rx_packets_total()?;
    let polls = match (r0, sw.poll_rounds()) {
        (Some((b0, i0)), Some((b1, i1))) if b1 > b0 => {
            let (busy, idle) = ((b1 - b0) as f64, i1.saturating_sub(i0) as f64);
            Some((idle / (busy + idle), c1.saturating_sub(c0) as f64 / busy))
        }
        _ => None,
    };
    let secs = t0.elapsed().as_secs_f64();
    let own = testpmd::hugepage_kib(sw.pid(), &[pod.prefix()]);
    let bridge = if which == Which::Bridge {
        Some(sw.bridge_counters().ok_or("podwire bridge list failed")?)
    } else {
        None
    };
    let fwd = pod.stop()?;
    let dropped = (fwd.iter().map(|f| f.tx_dropped).sum(), sw.dropped()?);
    pod.quit()?;
    sw.stop()?;
    let c2c_after = probe();
    Ok(Sample {
        mpps: c1.saturating_sub(c0) as f64 / secs / 1e6,
        own_hugepage_kib: own,
        hugepages_taken: free_before - free_after,
        bridge,
        c2c: [c2c_before, c2c_after],
        polls,
        dropped,
    })
}

fn main() {
    let o = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            eprintln!("pvp: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if o.cases.is_empty() {
        println!("pvp: no case matches the filter; nothing to run");
        return;
    }
    if let Err(e) = testpmd::testpmd_path() {
        eprintln!("pvp: {e}");
        std::process::exit(1);
    }
    let _lock = testpmd::PeerLock::acquire();
    let dir = std::env::temp_dir().join(format!("pw-pvp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create work dir");
    println!(
        "pvp: switch on cpu {}, pod on cpu {}, {} run(s), warm-up {:?}, window {:?}, switches: {:?}",
        o.switch_cpu,
        o.pod_cpu,
        o.runs,
        o.warmup,
        o.duration,
        o.switches.iter().map(|w| w.name()).collect::<Vec<_>>()
    );
    let mut failures = 0;
    let mut rows = Vec::new();
    for case in &o.cases {
        let mut switches = o.switches.clone();
        if case.bridge && switches.contains(&Which::Podwire) {
            switches.insert(1, Which::Bridge);
        }
        // mpps[run][switch]: Mpps and the cores' placement (None = failed run)
        let mut mpps: Vec<[Option<(f64, &str)>; 3]> = vec![[None; 3]; o.runs];
        let mut mem: [Option<(u64, i64)>; 3] = [None; 3];
        for (run, slot) in mpps.iter_mut().enumerate() {
            let mut order = switches.clone();
            if run % 2 == 1 {
                order.reverse();
            }
            for which in order {
                let idx = which as usize;
                match run_one(which, case, &o, &dir) {
                    Ok(s) => {
                        let extra = match s.bridge {
                            Some((fwd, flood)) => {
                                format!(", bridge forwarded {fwd}, flooded {flood}")
                            }
                            None => String::new(),
                        };
                        let polls = match s.polls {
                            Some((idle, per)) => format!(
                                "; idle rounds {:.0} %, {per:.1} packets per busy round",
                                idle * 100.0
                            ),
                            None => String::new(),
                        };
                        let ns = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}"));
                        println!(
                            "  {:<14} run {} {:<8} {:>7.2} Mpps  (cores {:<5} c2c {}/{} ns; dropped by pod {}, by switch {}; switch hugepages: {} MiB own, {} pages taken{extra}{polls})",
                            case.name,
                            run + 1,
                            which.name(),
                            s.mpps,
                            s.placement(),
                            ns(s.c2c[0]),
                            ns(s.c2c[1]),
                            s.dropped.0,
                            s.dropped.1,
                            s.own_hugepage_kib / 1024,
                            s.hugepages_taken
                        );
                        slot[idx] = Some((s.mpps, s.placement()));
                        mem[idx] = Some((s.own_hugepage_kib, s.hugepages_taken));
                    }
                    Err(e) => {
                        failures += 1;
                        println!(
                            "  {:<14} run {} {:<8} FAILED: {e}",
                            case.name,
                            run + 1,
                            which.name()
                        );
                    }
                }
            }
        }
        let ok =
            |i: Which| mpps.iter().filter_map(|r| r[i as usize]).map(|m| m.0).collect::<Vec<f64>>();
        // Ratios of the pairs taken back to back in one run (only those where both
        // ran in placement `only`, when given).
        let pair_ratios = |a: Which, b: Which, only: Option<&str>| -> Vec<f64> {
            mpps.iter()
                .filter_map(|r| match (r[a as usize], r[b as usize]) {
                    (Some((x, pa)), Some((y, pb)))
                        if y > 0.0 && only.is_none_or(|p| p == pa && p == pb) =>
                    {
                        Some(x / y)
                    }
                    _ => None,
                })
                .collect()
        };
        let ratios = |a: Which, b: Which| pair_ratios(a, b, None);
        let bridge = case.bridge.then(|| {
            (
                min_med_max(&ok(Which::Bridge)),
                min_med_max(&ratios(Which::Bridge, Which::Podwire)),
                min_med_max(&ratios(Which::Bridge, Which::Dpdk)),
            )
        });
        rows.push((
            case.what,
            min_med_max(&ok(Which::Podwire)),
            min_med_max(&ok(Which::Dpdk)),
            min_med_max(&ratios(Which::Podwire, Which::Dpdk)),
            mem,
            bridge,
            ["near", "far"].map(|p| pair_ratios(Which::Podwire, Which::Dpdk, Some(p))),
        ));
    }
    println!();
    println!(
        "{:<26} {:>24} {:>24} {:>24}",
        "case", "podwire Mpps min/med/max", "DPDK Mpps min/med/max", "ratio min/med/max"
    );
    for (what, p, d, r, _, _, _) in &rows {
        println!("{what:<26} {:>24} {:>24} {:>24}", fmt3(*p, 2), fmt3(*d, 2), fmt3(*r, 3));
    }
    println!();
    println!(
        "podwire/DPDK by core placement (pairs whose two runs both had the cores near, or both far; c2c round trip below / above {:.0} ns):",
        c2c::FAR_NS
    );
    println!("{:<26} {:>30} {:>30}", "case", "near: pairs, min/med/max", "far: pairs, min/med/max");
    for (what, _, _, _, _, _, by) in &rows {
        let f = |v: &Vec<f64>| format!("{}, {}", v.len(), fmt3(min_med_max(v), 3));
        println!("{what:<26} {:>30} {:>30}", f(&by[0]), f(&by[1]));
    }
    if rows.iter().any(|r| r.5.is_some()) {
        println!();
        println!(
            "{:<26} {:>24} {:>24} {:>24}",
            "case", "bridge Mpps min/med/max", "bridge/xconnect", "bridge/DPDK"
        );
        for (what, _, _, _, _, b, _) in &rows {
            if let Some((m, rx, rd)) = b {
                println!(
                    "{what:<26} {:>24} {:>24} {:>24}",
                    fmt3(*m, 2),
                    fmt3(*rx, 3),
                    fmt3(*rd, 3)
                );
            }
        }
    }
    println!();
    println!("hugepage memory held by the switch (last run; excluding the pod memory it maps):");
    for (what, _, _, _, mem, _, _) in &rows {
        let f = |m: Option<(u64, i64)>| match m {
            Some((kib, pages)) => {
                format!("{} MiB mapped, {} MiB taken from HugePages_Free", kib / 1024, pages * 2)
            }
            None => "-".into(),
        };
        println!("  {what:<26} podwire: {:<48} DPDK: {}", f(mem[0]), f(mem[1]));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failures > 0 {
        eprintln!("pvp: {failures} run(s) failed");
        std::process::exit(1);
    }
}
