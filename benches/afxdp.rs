//! Side-by-side AF_XDP forwarding: podwire cross-connecting two AF_XDP ports vs
//! `dpdk-testpmd` with two `net_af_xdp` ports in io mode, on the same veth setup, the
//! same pinned core and the same traffic source, in one invocation.
//!
//! ```text
//!  generator (BPF_PROG_RUN live frames, XDP_TX, core 1)
//!     pwbg ==veth== pwbi  --AF_XDP-->  DUT (core 0)  --AF_XDP-->  pwbo ==veth== pwbk (sink)
//! ```
//! The generator runs an `XDP_TX` program with `BPF_F_TEST_XDP_LIVE_FRAMES` on `pwbg`,
//! so frames go out of `pwbg` straight into `pwbi`'s XDP program (native mode), which
//! redirects them into the DUT's AF_XDP socket; the copy into the DUT's UMEM runs on
//! the generator's core (veth runs the peer's XDP in the sender's softirq). The DUT
//! forwards to `pwbo`; its peer `pwbk` drops everything (its stack: frames not for its
//! MAC; or XDP_DROP with `--sink xdp`). The DUT's
//! forwarded packets (tx of the out port) are counted over a window.
//!
//! For each frame size and run, the two DUTs go back to back (order alternating);
//! prints Mpps min/median/max per DUT and min/median/max of the podwire/DPDK ratio of
//! back-to-back pairs. `cargo bench --bench afxdp -- --help` for the flags. Needs root
//! and `dpdk-testpmd` with librte-net-af-xdp23 (scripts/install-deps.sh).

#[path = "common/harness.rs"]
mod harness;
use harness::{fmt3, min_med_max, spawn_podwire};
#[path = "../tests/common/testpmd.rs"]
mod testpmd;

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use podwire_driver::xdp::bpf;
use testpmd::{Pod, PodConfig};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const GEN: &str = "pwbg";
const DUT_IN: &str = "pwbi";
const DUT_OUT: &str = "pwbo";
const SINK: &str = "pwbk";

const USAGE: &str = "\
usage: cargo bench --bench afxdp -- [options] [FILTER]

Side-by-side AF_XDP forwarding on veth: podwire vs DPDK testpmd net_af_xdp (io mode).

options:
  --sizes LIST       frame sizes without FCS (default 60,1500; 60 = a 64-byte frame)
  --runs N           runs per size and DUT (default 3)
  --duration SECS    measurement window (default 5)
  --warmup SECS      warm-up after the generator starts (default 2)
  --only WHICH       dpdk | podwire | both (default both)
  --dut-cpu N        core of the DUT (default 0)
  --gen-cpu N        core of the generator (default 1)
  --sink KIND        stack: the sink veth's kernel stack drops the frames (not for
                     its MAC; default) | xdp: an XDP_DROP program on the sink veth
  -h, --help         this text

A positional FILTER other than \"afxdp\" runs nothing (cargo bench passes filters
meant for other benches).";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    Podwire = 0,
    Dpdk = 1,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Dpdk => "DPDK",
            Which::Podwire => "podwire",
        }
    }
}

struct Opts {
    sizes: Vec<usize>,
    runs: usize,
    duration: Duration,
    warmup: Duration,
    duts: Vec<Which>,
    dut_cpu: usize,
    gen_cpu: usize,
    xdp_sink: bool,
}

fn parse_args() -> Result<Option<Opts>, String> {
    let mut o = Opts {
        sizes: vec![60, 1500],
        runs: 3,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(2),
        duts: vec![Which::Podwire, Which::Dpdk],
        dut_cpu: 0,
        gen_cpu: 1,
        xdp_sink: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--bench" => {}
            "--sizes" => {
                o.sizes = val("--sizes")?
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("bad size {s:?}")))
                    .collect::<Result<_, _>>()?;
                if o.sizes.iter().any(|&s| !(60..=1514).contains(&s)) {
                    return Err("sizes must be 60..=1514".into());
                }
            }
            "--runs" => o.runs = val("--runs")?.parse().map_err(|_| "bad --runs")?,
            "--duration" => {
                o.duration = Duration::from_secs_f64(
                    val("--duration")?.parse().map_err(|_| "bad --duration")?,
                )
            }
            "--warmup" => {
                o.warmup =
                    Duration::from_secs_f64(val("--warmup")?.parse().map_err(|_| "bad --warmup")?)
            }
            "--only" => {
                o.duts = match val("--only")?.as_str() {
                    "dpdk" => vec![Which::Dpdk],
                    "podwire" => vec![Which::Podwire],
                    "both" => vec![Which::Podwire, Which::Dpdk],
                    w => return Err(format!("--only {w:?}: dpdk | podwire | both")),
                }
            }
            "--dut-cpu" => o.dut_cpu = val("--dut-cpu")?.parse().map_err(|_| "bad --dut-cpu")?,
            "--sink" => {
                o.xdp_sink = match val("--sink")?.as_str() {
                    "xdp" => true,
                    "stack" => false,
                    w => return Err(format!("--sink {w:?}: stack | xdp")),
                }
            }
            "--gen-cpu" => o.gen_cpu = val("--gen-cpu")?.parse().map_err(|_| "bad --gen-cpu")?,
            f if !f.starts_with('-') => {
                if !"afxdp".contains(f) {
                    o.sizes.clear();
                }
            }
            f => return Err(format!("unknown option {f}")),
        }
    }
    Ok(Some(o))
}

fn sh(args: &[&str]) -> BoxResult<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(())
}

/// The two veth pairs, and XDP_DROP on the sink; removed on drop.
struct Veths {
    _drop_link: Option<OwnedFd>,
    _gen_link: OwnedFd,
}

impl Veths {
    fn new(xdp_sink: bool) -> BoxResult<Self> {
        Self::remove();
        for (a, b) in [(GEN, DUT_IN), (DUT_OUT, SINK)] {
            sh(&["ip", "link", "add", a, "type", "veth", "peer", "name", b])?;
        }
        for i in [GEN, DUT_IN, DUT_OUT, SINK] {
            let _ = sh(&["sysctl", "-qw", &format!("net.ipv6.conf.{i}.disable_ipv6=1")]);
            sh(&["ip", "link", "set", i, "up"])?;
        }
        let link = if xdp_sink {
            let prog = bpf::load_xdp_program(&bpf::action_program(1))
                .map_err(|(e, log)| format!("load XDP_DROP: {e} {log}"))?;
            Some(bpf::link_create_xdp(&prog, ifindex(SINK)?, 4)?)
        } else {
            None
        };
        // Live frames need the generator's rx queue registered for XDP, which veth
        // does once a native program is attached: an XDP_PASS one.
        let pass = bpf::load_xdp_program(&bpf::action_program(2))
            .map_err(|(e, log)| format!("load XDP_PASS: {e} {log}"))?;
        let gen_link = bpf::link_create_xdp(&pass, ifindex(GEN)?, 4)?;
        Ok(Self { _drop_link: link, _gen_link: gen_link })
    }

    fn remove() {
        for i in [GEN, DUT_OUT] {
            let _ = Command::new("ip").args(["link", "del", i]).output();
        }
    }
}

impl Drop for Veths {
    fn drop(&mut self) {
        Self::remove();
    }
}

fn ifindex(name: &str) -> BoxResult<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(format!("no interface {name}").into());
    }
    Ok(i)
}

fn pin(cpu: usize) -> BoxResult<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; cpu is checked below.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 1024 {
        return Err("cpu out of range".into());
    }
    // SAFETY: cpu < CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size passed; 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A UDP/IPv4 frame of `len` bytes (without FCS), checksums filled.
fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0x77, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x02, 0x77, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 77, 9, 1]);
    ip[16..20].copy_from_slice(&[10, 77, 9, 2]);
    let mut sum: u32 = ip.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp_len = ip_len - 20;
    f[34..36].copy_from_slice(&9u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    f
}

/// The traffic source: `BPF_PROG_TEST_RUN` with live frames of an XDP_TX program on
/// the generator veth, in a loop on its own pinned thread.
struct Generator {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<Result<(), String>>>,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

impl Generator {
    fn start(len: usize, cpu: usize) -> BoxResult<Self> {
        let prog = bpf::load_xdp_program(&bpf::action_program(3))
            .map_err(|(e, log)| format!("load XDP_TX: {e} {log}"))?;
        let gen_if = ifindex(GEN)?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s2, n2) = (stop.clone(), sent.clone());
        let handle = thread::spawn(move || -> Result<(), String> {
            pin(cpu).map_err(|e| e.to_string())?;
            let data = frame(len);
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex.
            // data_end must equal the frame length.
            let ctx: [u32; 6] = [0, data.len() as u32, 0, gen_if, 0, 0];
            const REPEAT: u32 = 1 << 16;
            while !s2.load(Ordering::Relaxed) {
                let mut a = [0u8; 128];
                let put32 = |a: &mut [u8; 128], o: usize, v: u32| {
                    a[o..o + 4].copy_from_slice(&v.to_ne_bytes())
                };
                let put64 = |a: &mut [u8; 128], o: usize, v: u64| {
                    a[o..o + 8].copy_from_slice(&v.to_ne_bytes())
                };
                put32(&mut a, 0, prog.as_raw_fd() as u32);
                put32(&mut a, 8, data.len() as u32);
                put64(&mut a, 16, data.as_ptr() as u64);
                put32(&mut a, 32, REPEAT);
                put32(&mut a, 40, std::mem::size_of_val(&ctx) as u32);
                put64(&mut a, 48, ctx.as_ptr() as u64);
                put32(&mut a, 64, BPF_F_TEST_XDP_LIVE_FRAMES);
                // SAFETY: a is a 128-byte bpf_attr for BPF_PROG_TEST_RUN whose pointers
                // (data, ctx) outlive the call.
                let rc = unsafe {
                    libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, a.as_mut_ptr(), 128u32)
                };
                if rc < 0 {
                    // Interrupted (a signal reached this thread): the batch was cut
                    // short; carry on without counting it.
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                        continue;
                    }
                    return Err(format!(
                        "BPF_PROG_TEST_RUN live frames: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                n2.fetch_add(REPEAT as u64, Ordering::Relaxed);
            }
            Ok(())
        });
        Ok(Self { stop, sent, handle: Some(handle) })
    }

    fn stop(mut self) -> BoxResult<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(_)) => Err("generator panicked".into()),
            _ => Ok(self.sent.load(Ordering::Relaxed)),
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct PodwireDut {
    child: Child,
    dir: PathBuf,
    control: PathBuf,
    bin: PathBuf,
}

impl PodwireDut {
    fn start(dir: &Path, cpu: usize) -> BoxResult<Self> {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_podwire"));
        let control = dir.join("podwire.sock");
        let mut cfg = format!(
            "control_socket = \"{}\"\n[workers]\ncores = [{cpu}]\n[memory]\nbuffers = 32768\nhugepages = true\n",
            control.display()
        );
        for (n, i) in [("in", DUT_IN), ("out", DUT_OUT)] {
            write!(
                cfg,
                "[[ports]]\nname = \"{n}\"\ntype = \"af-xdp\"\ninterface = \"{i}\"\nxdp_mode = \"native\"\n"
            )?;
        }
        cfg.push_str("[[xconnect]]\nports = [\"in\", \"out\"]\n");
        let child = spawn_podwire(&bin, dir, &cfg)?;
        let mut d = PodwireDut { child, dir: dir.to_path_buf(), control, bin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.tx_out().is_err() {
            if let Ok(Some(st)) = d.child.try_wait() {
                return Err(format!("podwire exited ({st}):\n{}", d.log()).into());
            }
            if Instant::now() > deadline {
                return Err(format!("podwire not ready in 20 s:\n{}", d.log()).into());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("podwire.log")).unwrap_or_default()
    }

    fn tx_out(&self) -> BoxResult<u64> {
        let out = Command::new(&self.bin)
            .args(["stats", "--json", "--socket"])
            .arg(&self.control)
            .output()?;
        if !out.status.success() {
            return Err("podwire stats failed".into());
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v["ports"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == "out"))
            .and_then(|p| p["tx_packets"].as_u64())
            .ok_or_else(|| "no port out in podwire stats".into())
    }

    /// `podwire stats` of both ports, one line each, for the log of a run.
    fn stats_line(&self) -> String {
        let out = Command::new(&self.bin)
            .args(["stats", "--socket"])
            .arg(&self.control)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines().skip(1).map(|l| format!("      {l}\n")).collect()
    }

    fn stop(mut self) -> BoxResult<()> {
        if let Some(keep) = std::env::var_os("AFXDP_KEEP_LOG") {
            let _ = std::fs::copy(self.dir.join("podwire.log"), keep);
        }
        // SAFETY: kill(2) on the PID of the child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    return Err(format!("podwire exited with {st}:\n{}", self.log()).into());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("podwire did not stop in 10 s".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PodwireDut {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum Dut {
    Podwire(PodwireDut),
    Dpdk(Box<Pod>),
}

impl Dut {
    fn start(which: Which, o: &Opts, dir: &Path) -> BoxResult<Self> {
        Ok(match which {
            Which::Podwire => Dut::Podwire(PodwireDut::start(dir, o.dut_cpu)?),
            Which::Dpdk => {
                let cfg = PodConfig::default()
                    .vdev(format!(
                        "net_af_xdp0,iface={DUT_IN},start_queue=0,queue_count=1,busy_budget=0"
                    ))
                    .vdev(format!(
                        "net_af_xdp1,iface={DUT_OUT},start_queue=0,queue_count=1,busy_budget=0"
                    ))
                    .on_cpu(o.dut_cpu)
                    .forward_mode("io");
                let mut pod = Pod::start(cfg)?;
                pod.wait_links_up(Duration::from_secs(15))?;
                pod.start_fwd()?;
                Dut::Dpdk(Box::new(pod))
            }
        })
    }

    fn tx_out(&mut self) -> BoxResult<u64> {
        match self {
            Dut::Podwire(p) => p.tx_out(),
            Dut::Dpdk(pod) => {
                let s = pod.port_stats()?;
                Ok(s.get(1).ok_or("testpmd has no port 1")?.tx_packets)
            }
        }
    }

    fn stop(self) -> BoxResult<()> {
        match self {
            Dut::Podwire(p) => p.stop(),
            Dut::Dpdk(mut pod) => {
                pod.stop()?;
                pod.quit()?;
                Ok(())
            }
        }
    }
}

fn run_one(which: Which, size: usize, o: &Opts, dir: &Path) -> BoxResult<(f64, f64)> {
    let r = run_one_inner(which, size, o, dir);
    // The kernel needs a moment before the queues can be bound again.
    thread::sleep(Duration::from_millis(500));
    r
}

fn run_one_inner(which: Which, size: usize, o: &Opts, dir: &Path) -> BoxResult<(f64, f64)> {
    let mut dut = Dut::start(which, o, dir)?;
    let gen = Generator::start(size, o.gen_cpu)?;
    thread::sleep(o.warmup);
    let g0 = gen.sent.load(Ordering::Relaxed);
    let c0 = dut.tx_out()?;
    let t0 = Instant::now();
    thread::sleep(o.duration);
    let c1 = dut.tx_out()?;
    let g1 = gen.sent.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    if let (Dut::Podwire(p), true) = (&dut, std::env::var_os("AFXDP_VERBOSE").is_some()) {
        print!("{}", p.stats_line());
    }
    gen.stop()?;
    dut.stop()?;
    Ok((c1.saturating_sub(c0) as f64 / secs / 1e6, g1.saturating_sub(g0) as f64 / secs / 1e6))
}

fn main() {
    let o = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            eprintln!("afxdp: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if o.sizes.is_empty() {
        println!("afxdp: nothing to run for this filter");
        return;
    }
    if o.duts.contains(&Which::Dpdk) {
        if let Err(e) = testpmd::testpmd_path() {
            eprintln!("afxdp: {e}");
            std::process::exit(1);
        }
    }
    let _lock = testpmd::PeerLock::acquire();
    let veths = match Veths::new(o.xdp_sink) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("afxdp: veth setup: {e} (needs root)");
            std::process::exit(1);
        }
    };
    let dir = std::env::temp_dir().join(format!("pw-afxdp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create work dir");
    println!(
        "afxdp: DUT on cpu {}, generator on cpu {}, {} run(s), warm-up {:?}, window {:?}, sink {}",
        o.dut_cpu,
        o.gen_cpu,
        o.runs,
        o.warmup,
        o.duration,
        if o.xdp_sink { "XDP_DROP" } else { "kernel stack" }
    );
    let mut failures = 0;
    let mut rows = Vec::new();
    for &size in &o.sizes {
        let mut mpps: Vec<[Option<f64>; 2]> = vec![[None; 2]; o.runs];
        for (run, slot) in mpps.iter_mut().enumerate() {
            let mut order = o.duts.clone();
            if run % 2 == 1 {
                order.reverse();
            }
            for which in order {
                match run_one(which, size, &o, &dir) {
                    Ok((m, g)) => {
                        println!(
                            "  {:>4} B run {} {:<8} {:>6.3} Mpps forwarded  (generator offered {:.3} Mpps)",
                            size + 4,
                            run + 1,
                            which.name(),
                            m,
                            g
                        );
                        slot[which as usize] = Some(m);
                    }
                    Err(e) => {
                        failures += 1;
                        println!(
                            "  {:>4} B run {} {:<8} FAILED: {e}",
                            size + 4,
                            run + 1,
                            which.name()
                        );
                    }
                }
            }
        }
        let ok = |i: usize| mpps.iter().filter_map(|r| r[i]).collect::<Vec<f64>>();
        let ratios: Vec<f64> = mpps
            .iter()
            .filter_map(|r| match (r[0], r[1]) {
                (Some(p), Some(d)) if d > 0.0 => Some(p / d),
                _ => None,
            })
            .collect();
        rows.push((size + 4, min_med_max(&ok(0)), min_med_max(&ok(1)), min_med_max(&ratios)));
    }
    println!();
    println!(
        "{:<10} {:>26} {:>26} {:>24}",
        "frame", "podwire Mpps min/med/max", "DPDK Mpps min/med/max", "ratio min/med/max"
    );
    for (size, p, d, r) in &rows {
        println!(
            "{:<10} {:>26} {:>26} {:>24}",
            format!("{size} B"),
            fmt3(*p, 3),
            fmt3(*d, 3),
            fmt3(*r, 3)
        );
    }
    drop(veths);
    let _ = std::fs::remove_dir_all(&dir);
    if failures > 0 {
        eprintln!("afxdp: {failures} run(s) failed");
        std::process::exit(1);
    }
}
