//! Drives DPDK's `dpdk-testpmd` as a real peer of podwire: as a **pod** (vhost-user
//! frontend, `net_virtio_user` ports) and as the **reference switch** (vhost-user
//! backend, `net_vhost` ports in io forwarding: the DPDK backend podwire must beat).
//!
//! Self-contained (std + libc) so that tests include it with `mod common;` and benches
//! with `#[path = "../tests/common/testpmd.rs"] mod testpmd;`.
//!
//! # How testpmd is driven
//! testpmd runs interactively (`-i`) with its stdin and stdout on pipes, under
//! `stdbuf -o0` (through a pipe, testpmd's `printf` output is block-buffered while the
//! prompt is written unbuffered, so without it a command's output arrives after the
//! next prompt). A reader thread drains stdout into a channel; [`Testpmd::cmd`] writes
//! one command and collects everything up to the next `testpmd> ` prompt, with a
//! timeout. Every process gets a unique `--file-prefix`, `--huge-dir /dev/hugepages`,
//! `--single-file-segments` (virtio-user shares at most 8 memory regions) and
//! `PR_SET_PDEATHSIG` (SIGKILL), so a crashed test cannot leave a busy-polling
//! testpmd behind. On drop (or [`Testpmd::quit`]) the process is stopped by PID
//! (SIGTERM, then SIGKILL after a timeout) and its `/dev/hugepages/<prefix>map_*`
//! files and `/var/run/dpdk/<prefix>` directory are removed.
//!
//! Note: `PR_SET_PDEATHSIG` fires when the *thread* that spawned testpmd exits: create
//! and use a [`Pod`] or [`ReferenceSwitch`] on one thread.
//!
//! Both testpmd instances run with `--no-flush-rx`: by default `start` drains every rx
//! queue first, which silently eats packets a peer queued before the `start`.
//!
//! # What testpmd can verify (22.11, measured here)
//! - **Packet counts** per port (`show port stats all`: RX/TX packets, bytes, missed,
//!   errors, nombuf, and pps since the previous `show`) and per forwarding stream
//!   (`stop` prints RX/TX/dropped per port). In io mode with `start tx_first N`, N
//!   bursts of 32 packets are injected once and then circulate pod port 0 -> switch ->
//!   pod port 1 -> switch -> ... ; a loss-free switch keeps them all circulating
//!   (both directions move, roughly balanced), a switch that drops counts them as
//!   the difference between what one side sent and the other received.
//! - **Headers and lengths** for a few packets: `set fwd rxonly` + `set verbose 1`
//!   prints src/dst MAC, ethertype, length, nb_segs and the software-parsed packet type
//!   (L2_ETHER L3_IPV4 L4_UDP) of each received packet. It does not dump payloads.
//! - **Payload, byte for byte: yes, with `net_pcap`** (Debian package
//!   `librte-net-pcap23`). A pod with four ports — `net_pcap0,rx_pcap=IN` ,
//!   `net_virtio_user0`, `net_virtio_user1`, `net_pcap1,tx_pcap=OUT` — in io mode
//!   (paired topology: 0<->1, 2<->3) reads every frame of IN, sends it on virtio port 0,
//!   receives what the switch delivers on virtio port 1 and writes it to OUT. The test
//!   writes IN with [`write_pcap`] (arbitrary frames: sequence number, random payload,
//!   any length up to the mbuf size) and compares [`read_pcap`] of OUT with it: same
//!   frames, same order, same bytes. See [`PodConfig::pcap_loop`]. Verified against
//!   DPDK's `net_vhost` switch (tests/testpmd_reference.rs).
//! - What it cannot do: `txonly`/`tx_first` frames carry a fixed UDP/IPv4 header and
//!   whatever bytes the mbuf held as payload (no pattern, UDP checksum 0), and no
//!   engine checks payloads on receive: the `csum` engine only reports the checksum
//!   flags the PMD sets (virtio-user does not verify checksums in software), `flowgen`
//!   and `rxonly` only count. So counts/pps come from io + `tx_first`, and integrity
//!   from the pcap loop.
//! - Jumbo frames (9000 bytes) need `--mbuf-size` large enough or scattered rx
//!   (`--max-pkt-len`, mergeable buffers): pass them with [`PodConfig::extra_args`].
#![allow(dead_code)]

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Where hugetlbfs is mounted (scripts/install-deps.sh mounts it); passed to every
/// testpmd as `--huge-dir` so leftovers are found exactly.
pub const HUGE_DIR: &str = "/dev/hugepages";
/// DPDK's runtime directory for root.
pub const DPDK_RUN_DIR: &str = "/var/run/dpdk";
/// What a missing testpmd says.
pub const MISSING_TESTPMD: &str =
    "dpdk-testpmd not found: run scripts/install-deps.sh (apt-get install dpdk)";
const PROMPT: &str = "testpmd> ";

/// Errors from driving testpmd: a message with the tail of testpmd's output.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error(msg.into()))
}

/// Path of `dpdk-testpmd` (`$PODWIRE_TESTPMD` overrides the `$PATH` search).
pub fn testpmd_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PODWIRE_TESTPMD") {
        return Ok(PathBuf::from(p));
    }
    find_in_path("dpdk-testpmd").ok_or_else(|| Error(MISSING_TESTPMD.into()))
}

/// Like [`testpmd_path`] but panics with the install hint: tests never skip silently.
pub fn require_testpmd() -> PathBuf {
    match testpmd_path() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A unique `--file-prefix` for this process (short: it names hugepage files).
pub fn unique_prefix(role: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("pw{role}{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Serializes everything that starts testpmd peers, across threads and processes
/// (an exclusive `flock` on /tmp/podwire-peers.lock): two switch+pod pairs at once
/// would share two cores and could exhaust the hugepages. Hold it for a whole test.
pub struct PeerLock {
    fd: libc::c_int,
}

impl PeerLock {
    pub fn acquire() -> PeerLock {
        let path = CString::new("/tmp/podwire-peers.lock").expect("no NUL");
        // SAFETY: `path` is a valid NUL-terminated string; open has no other preconditions.
        let fd = unsafe {
            libc::open(path.as_ptr(), libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC, 0o666)
        };
        assert!(fd >= 0, "open /tmp/podwire-peers.lock: {}", std::io::Error::last_os_error());
        loop {
            // SAFETY: `fd` is an open descriptor owned by this function.
            let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
            if rc == 0 {
                return PeerLock { fd };
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "flock: {e}");
        }
    }
}

impl Drop for PeerLock {
    fn drop(&mut self) {
        // SAFETY: `self.fd` was opened by `acquire` and is closed only here; closing
        // it releases the lock.
        unsafe { libc::close(self.fd) };
    }
}

/// One port's counters from `show port stats all`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub port: u16,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub rx_nombuf: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    /// Packets per second since the previous `show port stats` (0 on the first call).
    pub rx_pps: u64,
    pub tx_pps: u64,
}

/// Parses the output of `show port stats all` (or `show port stats N`).
pub fn parse_port_stats(out: &str) -> Vec<PortStats> {
    let mut all = Vec::new();
    for section in out.split("NIC statistics for port").skip(1) {
        let mut tokens = section.split_whitespace();
        let port = tokens.next().and_then(|t| t.parse().ok()).unwrap_or(u16::MAX);
        let mut s = PortStats { port, ..PortStats::default() };
        let toks: Vec<&str> = tokens.collect();
        for w in toks.windows(2) {
            let Ok(v) = w[1].parse::<u64>() else { continue };
            match w[0] {
                "RX-packets:" => s.rx_packets = v,
                "RX-bytes:" => s.rx_bytes = v,
                "RX-missed:" => s.rx_missed = v,
                "RX-errors:" => s.rx_errors = v,
                "RX-nombuf:" => s.rx_nombuf = v,
                "TX-packets:" => s.tx_packets = v,
                "TX-bytes:" => s.tx_bytes = v,
                "TX-errors:" => s.tx_errors = v,
                "Rx-pps:" => s.rx_pps = v,
                "Tx-pps:" => s.tx_pps = v,
                _ => {}
            }
        }
        all.push(s);
    }
    all
}

/// One port's forwarding counters from the output of `stop`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FwdStats {
    pub port: u16,
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Parses the per-port "Forward statistics for port N" blocks printed by `stop`.
pub fn parse_fwd_stats(out: &str) -> Vec<FwdStats> {
    let mut all = Vec::new();
    for section in out.split("Forward statistics for port").skip(1) {
        let section = section.split("Accumulated forward statistics").next().unwrap_or("");
        let mut tokens = section.split_whitespace();
        let port = tokens.next().and_then(|t| t.parse().ok()).unwrap_or(u16::MAX);
        let mut s = FwdStats { port, ..FwdStats::default() };
        let toks: Vec<&str> = tokens.collect();
        for w in toks.windows(2) {
            let Ok(v) = w[1].parse::<u64>() else { continue };
            match w[0] {
                "RX-packets:" => s.rx_packets = v,
                "RX-dropped:" => s.rx_dropped = v,
                "TX-packets:" => s.tx_packets = v,
                "TX-dropped:" => s.tx_dropped = v,
                _ => {}
            }
        }
        all.push(s);
    }
    all
}

/// Everything needed to start one testpmd process.
#[derive(Clone, Debug)]
struct Launch {
    role: &'static str,
    /// `--vdev` arguments, in port order.
    vdevs: Vec<String>,
    lcores: String,
    mem_mb: u32,
    netns: Option<String>,
    /// `--nb-cores`.
    nb_cores: u32,
    /// `--rxq` and `--txq`.
    queues: u16,
    rxd: u32,
    txd: u32,
    total_num_mbufs: u32,
    forward_mode: String,
    /// More arguments after `--` (testpmd's own), after those above.
    app_args: Vec<String>,
    /// How many ports must have probed.
    expect_ports: usize,
    startup_timeout: Duration,
}

/// A running interactive testpmd.
pub struct Testpmd {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<Vec<u8>>,
    pending: String,
    /// Everything testpmd printed (stdout and stderr), for error messages.
    log: Arc<Mutex<String>>,
    prefix: String,
    exited: bool,
    /// Output printed before the first prompt (EAL and port setup).
    pub startup_output: String,
}

fn append_log(log: &Mutex<String>, bytes: &[u8]) {
    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
    l.push_str(&String::from_utf8_lossy(bytes));
    // Keep the tail only.
    if l.len() > 256 * 1024 {
        let mut cut = l.len() - 128 * 1024;
        while !l.is_char_boundary(cut) {
            cut += 1;
        }
        l.drain(..cut);
    }
}

impl Testpmd {
    fn spawn(l: Launch) -> Result<Testpmd> {
        let testpmd = testpmd_path()?;
        if find_in_path("stdbuf").is_none() {
            return err("stdbuf not found (Debian package coreutils)");
        }
        let prefix = unique_prefix(l.role);
        let mut args: Vec<String> = Vec::new();
        if let Some(ns) = &l.netns {
            args.extend(["netns".into(), "exec".into(), ns.clone(), "stdbuf".into()]);
        }
        args.extend(["-o0".into(), "-e0".into(), testpmd.display().to_string()]);
        args.extend([
            "--lcores".into(),
            l.lcores.clone(),
            "--main-lcore".into(),
            "0".into(),
            "--no-pci".into(),
            format!("--file-prefix={prefix}"),
            "--huge-dir".into(),
            HUGE_DIR.into(),
            "-m".into(),
            l.mem_mb.to_string(),
            "--single-file-segments".into(),
        ]);
        for v in &l.vdevs {
            args.push(format!("--vdev={v}"));
        }
        args.extend([
            "--".into(),
            "-i".into(),
            format!("--nb-cores={}", l.nb_cores),
            format!("--rxq={}", l.queues),
            format!("--txq={}", l.queues),
            format!("--rxd={}", l.rxd),
            format!("--txd={}", l.txd),
            format!("--total-num-mbufs={}", l.total_num_mbufs),
            format!("--forward-mode={}", l.forward_mode),
            "--no-flush-rx".into(),
        ]);
        args.extend(l.app_args.iter().cloned());
        let program = if l.netns.is_some() { "ip" } else { "stdbuf" };
        let mut cmd = Command::new(program);
        cmd.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error(format!("spawning {program} {}: {e}", args.join(" "))))?;
        let log = Arc::new(Mutex::new(format!("$ {program} {}\n", args.join(" "))));
        let (tx, rx) = mpsc::channel();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let log_out = log.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                append_log(&log_out, &buf[..n]);
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let log_err = log.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                append_log(&log_err, &buf[..n]);
            }
        });
        let stdin = child.stdin.take();
        let mut t = Testpmd {
            child,
            stdin,
            out: rx,
            pending: String::new(),
            log,
            prefix,
            exited: false,
            startup_output: String::new(),
        };
        t.startup_output = t.wait_prompt(l.startup_timeout)?;
        let probed = t
            .startup_output
            .lines()
            .filter(|line| {
                let line = line.trim();
                line.starts_with("Port ")
                    && line
                        .split(": ")
                        .nth(1)
                        .is_some_and(|mac| mac.len() == 17 && mac.contains(':'))
            })
            .count();
        if probed != l.expect_ports {
            return err(format!(
                "{} testpmd probed {probed} ports, expected {}\n{}",
                l.role,
                l.expect_ports,
                t.log_tail()
            ));
        }
        Ok(t)
    }

    /// PID of the testpmd process (`ip netns exec` and `stdbuf` exec it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `--file-prefix` of this instance.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The last few KiB of everything testpmd printed.
    pub fn log_tail(&self) -> String {
        let l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut cut = l.len().saturating_sub(6000);
        while !l.is_char_boundary(cut) {
            cut += 1;
        }
        format!("--- testpmd {} output (tail) ---\n{}", self.prefix, &l[cut..])
    }

    fn wait_prompt(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.pending.find(PROMPT) {
                let out = self.pending[..pos].to_string();
                self.pending.drain(..pos + PROMPT.len());
                return Ok(out);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(bytes) => self.pending.push_str(&String::from_utf8_lossy(&bytes)),
                Err(RecvTimeoutError::Timeout) => {
                    return err(format!(
                        "testpmd {}: no prompt within {timeout:?}\n{}",
                        self.prefix,
                        self.log_tail()
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    self.exited = true;
                    return err(format!(
                        "testpmd {} exited ({status:?}) before its prompt\n{}",
                        self.prefix,
                        self.log_tail()
                    ));
                }
            }
        }
    }

    /// Sends one command line and returns its output (up to the next prompt).
    pub fn cmd_timeout(&mut self, line: &str, timeout: Duration) -> Result<String> {
        self.pending.clear();
        let stdin = self.stdin.as_mut().ok_or_else(|| Error("stdin closed".into()))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| Error(format!("writing '{line}' to testpmd: {e}\n{}", self.log_tail())))?;
        self.wait_prompt(timeout)
    }

    /// [`Testpmd::cmd_timeout`] with a 10 s timeout.
    pub fn cmd(&mut self, line: &str) -> Result<String> {
        self.cmd_timeout(line, Duration::from_secs(10))
    }

    pub fn start(&mut self) -> Result<()> {
        self.cmd("start").map(drop)
    }

    /// `start tx_first N`: injects N bursts (of 32) per port, then forwards.
    pub fn start_tx_first(&mut self, bursts: u32) -> Result<()> {
        self.cmd(&format!("start tx_first {bursts}")).map(drop)
    }

    /// `stop`; returns the per-port forwarding counters it prints.
    pub fn stop(&mut self) -> Result<Vec<FwdStats>> {
        self.cmd_timeout("stop", Duration::from_secs(20)).map(|o| parse_fwd_stats(&o))
    }

    pub fn port_stats(&mut self) -> Result<Vec<PortStats>> {
        let out = self.cmd("show port stats all")?;
        let stats = parse_port_stats(&out);
        if stats.is_empty() {
            return err(format!("no port stats in output:\n{out}"));
        }
        Ok(stats)
    }

    pub fn clear_stats(&mut self) -> Result<()> {
        self.cmd("clear port stats all").map(drop)
    }

    /// Port link states from `show port summary all` (true = up), in port order.
    pub fn links_up(&mut self) -> Result<Vec<bool>> {
        let out = self.cmd("show port summary all")?;
        Ok(out
            .lines()
            .filter(|l| l.split_whitespace().next().is_some_and(|t| t.parse::<u16>().is_ok()))
            .map(|l| l.split_whitespace().any(|t| t == "up"))
            .collect())
    }

    /// Polls [`Testpmd::links_up`] until every port is up.
    pub fn wait_links_up(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let links = self.links_up()?;
            if !links.is_empty() && links.iter().all(|&u| u) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return err(format!(
                    "testpmd {}: links not up within {timeout:?}: {links:?}\n{}",
                    self.prefix,
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Hugepage memory mapped by this process, in KiB, not counting mappings whose
    /// path contains one of `exclude` (e.g. a pod's prefix, for a switch that maps its
    /// pods' memory).
    pub fn hugepage_kib(&self, exclude: &[&str]) -> u64 {
        hugepage_kib(self.pid(), exclude)
    }

    /// `quit`, then waits (10 s) for the process to exit and removes its files.
    /// Errors if it had to be killed.
    pub fn quit(mut self) -> Result<()> {
        let _ = self.stdin.as_mut().map(|s| s.write_all(b"quit\n").and_then(|_| s.flush()));
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.exited = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if !self.exited {
            let tail = self.log_tail();
            self.kill();
            return err(format!("testpmd {} did not quit within 10 s\n{tail}", self.prefix));
        }
        self.cleanup_files();
        Ok(())
    }

    /// SIGKILL at once, by PID (a crashing pod), then removes the files.
    pub fn sigkill(&mut self) {
        self.stdin = None;
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
        }
        self.cleanup_files();
    }

    /// SIGTERM, then SIGKILL after 5 s, by PID; then removes the files.
    pub fn kill(&mut self) {
        self.stdin = None;
        if !self.exited {
            if let Ok(None) = self.child.try_wait() {
                let pid = self.child.id() as libc::pid_t;
                // SAFETY: `pid` is our own child, not yet reaped (try_wait returned
                // None), so the PID cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
            self.exited = true;
        }
        self.cleanup_files();
    }

    fn cleanup_files(&self) {
        remove_dpdk_files(&self.prefix);
    }

    /// Whether hugepage files or the runtime directory of this prefix still exist.
    pub fn leftovers(prefix: &str) -> Vec<PathBuf> {
        leftovers(prefix)
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Hugepage files (`HUGE_DIR/<prefix>map_N`) and runtime dir of a DPDK file prefix.
pub fn leftovers(prefix: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(HUGE_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_ours = name
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix("map_"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_ours {
                v.push(e.path());
            }
        }
    }
    let run = Path::new(DPDK_RUN_DIR).join(prefix);
    if run.exists() {
        v.push(run);
    }
    v
}

/// Removes what [`leftovers`] finds. Only call it for a prefix whose process is gone.
pub fn remove_dpdk_files(prefix: &str) {
    for p in leftovers(prefix) {
        if p.is_dir() {
            let _ = fs::remove_dir_all(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Hugetlb KiB mapped by `pid` (from /proc/PID/smaps: Private_Hugetlb +
/// Shared_Hugetlb), skipping mappings whose path contains any of `exclude`.
pub fn hugepage_kib(pid: u32, exclude: &[&str]) -> u64 {
    let Ok(smaps) = fs::read_to_string(format!("/proc/{pid}/smaps")) else { return 0 };
    let mut total = 0;
    let mut skip = false;
    for line in smaps.lines() {
        let mut t = line.split_whitespace();
        let Some(first) = t.next() else { continue };
        if first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            // Mapping header: range perms offset dev inode [path]
            let path = line.split_whitespace().nth(5).unwrap_or("");
            skip = exclude.iter().any(|x| !x.is_empty() && path.contains(x));
        } else if !skip && (first == "Private_Hugetlb:" || first == "Shared_Hugetlb:") {
            total += t.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// `HugePages_Free` from /proc/meminfo.
pub fn hugepages_free() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn wait_for_paths(paths: &[PathBuf], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for p in paths {
        while !p.exists() {
            if Instant::now() > deadline {
                return err(format!("{} did not appear within {timeout:?}", p.display()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// The frontend side: a testpmd "pod" with `net_virtio_user` ports.
#[derive(Clone, Debug)]
pub struct PodConfig {
    /// Ports in order: virtio-user sockets and raw vdevs (see [`PodConfig::vdev`]).
    pub ports: Vec<PodPort>,
    pub queues: u16,
    pub queue_size: u16,
    pub packed_vq: bool,
    /// `mrg_rxbuf=` devarg; `None` keeps DPDK's default (1).
    pub mrg_rxbuf: Option<bool>,
    /// `in_order=` devarg; `None` keeps DPDK's default (1).
    pub in_order: Option<bool>,
    /// `server=1`: the pod listens on the socket, the switch connects.
    pub server: bool,
    /// `--txpkts=N`: frame size of tx_first/txonly packets.
    pub txpkts: Option<u32>,
    /// `--lcores` (lcore 0 is the main lcore, the others forward).
    pub lcores: String,
    pub nb_cores: u32,
    /// `-m` in MiB of hugepages.
    pub mem_mb: u32,
    pub netns: Option<String>,
    /// `--forward-mode=`.
    pub forward_mode: String,
    pub rxd: u32,
    pub txd: u32,
    pub total_num_mbufs: u32,
    /// More testpmd arguments (after `--`).
    pub extra_args: Vec<String>,
    /// In client mode: how long to wait for the switch's sockets to appear.
    pub socket_timeout: Duration,
    pub startup_timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum PodPort {
    VirtioUser(PathBuf),
    /// A `--vdev` string used as is (e.g. `net_pcap0,rx_pcap=in.pcap`).
    Raw(String),
}

impl Default for PodConfig {
    fn default() -> Self {
        PodConfig {
            ports: Vec::new(),
            queues: 1,
            queue_size: 1024,
            packed_vq: false,
            mrg_rxbuf: None,
            in_order: None,
            server: false,
            txpkts: None,
            lcores: "0@1,1@1".into(),
            nb_cores: 1,
            mem_mb: 256,
            netns: None,
            forward_mode: "io".into(),
            rxd: 1024,
            txd: 1024,
            total_num_mbufs: 32768,
            extra_args: Vec::new(),
            socket_timeout: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl PodConfig {
    /// A pod with one `net_virtio_user` port per socket.
    pub fn new<P: AsRef<Path>>(sockets: &[P]) -> PodConfig {
        let mut c = PodConfig::default();
        for s in sockets {
            c.ports.push(PodPort::VirtioUser(s.as_ref().to_path_buf()));
        }
        c
    }

    /// The payload-integrity loop (see the module docs): ports `pcap in` ->
    /// virtio `a`, virtio `b` -> `pcap out`, io forwarding, paired topology.
    pub fn pcap_loop(a: &Path, b: &Path, input: &Path, output: &Path) -> PodConfig {
        PodConfig {
            ports: vec![
                PodPort::Raw(format!("net_pcap0,rx_pcap={},tx_pcap=/dev/null", input.display())),
                PodPort::VirtioUser(a.to_path_buf()),
                PodPort::VirtioUser(b.to_path_buf()),
                PodPort::Raw(format!("net_pcap1,tx_pcap={}", output.display())),
            ],
            ..PodConfig::default()
        }
    }

    pub fn vdev(mut self, v: impl Into<String>) -> Self {
        self.ports.push(PodPort::Raw(v.into()));
        self
    }
    pub fn queues(mut self, q: u16) -> Self {
        self.queues = q;
        self
    }
    pub fn queue_size(mut self, n: u16) -> Self {
        self.queue_size = n;
        self
    }
    pub fn packed_vq(mut self, on: bool) -> Self {
        self.packed_vq = on;
        self
    }
    pub fn mrg_rxbuf(mut self, on: bool) -> Self {
        self.mrg_rxbuf = Some(on);
        self
    }
    pub fn in_order(mut self, on: bool) -> Self {
        self.in_order = Some(on);
        self
    }
    pub fn server(mut self, on: bool) -> Self {
        self.server = on;
        self
    }
    pub fn txpkts(mut self, bytes: u32) -> Self {
        self.txpkts = Some(bytes);
        self
    }
    /// Main and forwarding lcore both on `cpu`.
    pub fn on_cpu(mut self, cpu: usize) -> Self {
        self.lcores = format!("0@{cpu},1@{cpu}");
        self.nb_cores = 1;
        self
    }
    pub fn lcores(mut self, lcores: impl Into<String>, nb_cores: u32) -> Self {
        self.lcores = lcores.into();
        self.nb_cores = nb_cores;
        self
    }
    pub fn mem_mb(mut self, mb: u32) -> Self {
        self.mem_mb = mb;
        self
    }
    pub fn netns(mut self, ns: impl Into<String>) -> Self {
        self.netns = Some(ns.into());
        self
    }
    pub fn forward_mode(mut self, mode: impl Into<String>) -> Self {
        self.forward_mode = mode.into();
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }

    fn vdevs(&self) -> Vec<String> {
        let mut n = 0;
        self.ports
            .iter()
            .map(|p| match p {
                PodPort::Raw(s) => s.clone(),
                PodPort::VirtioUser(path) => {
                    let mut v = format!(
                        "net_virtio_user{n},path={},queues={},queue_size={}",
                        path.display(),
                        self.queues,
                        self.queue_size
                    );
                    n += 1;
                    if self.packed_vq {
                        v.push_str(",packed_vq=1");
                    }
                    if let Some(m) = self.mrg_rxbuf {
                        v.push_str(&format!(",mrg_rxbuf={}", m as u8));
                    }
                    if let Some(o) = self.in_order {
                        v.push_str(&format!(",in_order={}", o as u8));
                    }
                    if self.server {
                        v.push_str(",server=1");
                    }
                    v
                }
            })
            .collect()
    }

    fn sockets(&self) -> Vec<PathBuf> {
        self.ports
            .iter()
            .filter_map(|p| match p {
                PodPort::VirtioUser(s) => Some(s.clone()),
                PodPort::Raw(_) => None,
            })
            .collect()
    }
}

/// A testpmd process started from a config `C`: [`Pod`] or [`ReferenceSwitch`].
pub struct Instance<C> {
    pub tp: Testpmd,
    pub config: C,
}

impl<C> Instance<C> {
    pub fn cmd(&mut self, line: &str) -> Result<String> {
        self.tp.cmd(line)
    }
    pub fn start_fwd(&mut self) -> Result<()> {
        self.tp.start()
    }
    pub fn stop(&mut self) -> Result<Vec<FwdStats>> {
        self.tp.stop()
    }
    pub fn port_stats(&mut self) -> Result<Vec<PortStats>> {
        self.tp.port_stats()
    }
    pub fn clear_stats(&mut self) -> Result<()> {
        self.tp.clear_stats()
    }
    pub fn pid(&self) -> u32 {
        self.tp.pid()
    }
    pub fn prefix(&self) -> &str {
        self.tp.prefix()
    }
    pub fn quit(self) -> Result<()> {
        self.tp.quit()
    }
}

/// A testpmd pod (see [`PodConfig`]).
pub type Pod = Instance<PodConfig>;

impl Pod {
    /// Starts the pod and waits for its prompt. In client mode it first waits for the
    /// switch's sockets; in server mode it removes stale socket files first.
    pub fn start(config: PodConfig) -> Result<Pod> {
        let sockets = config.sockets();
        if config.server {
            for s in &sockets {
                let _ = fs::remove_file(s);
            }
        } else {
            wait_for_paths(&sockets, config.socket_timeout)?;
        }
        let mut app_args: Vec<String> =
            config.txpkts.map(|t| format!("--txpkts={t}")).into_iter().collect();
        app_args.extend(config.extra_args.iter().cloned());
        let tp = Testpmd::spawn(Launch {
            role: "pod",
            vdevs: config.vdevs(),
            lcores: config.lcores.clone(),
            mem_mb: config.mem_mb,
            netns: config.netns.clone(),
            nb_cores: config.nb_cores,
            queues: config.queues,
            rxd: config.rxd,
            txd: config.txd,
            total_num_mbufs: config.total_num_mbufs,
            forward_mode: config.forward_mode.clone(),
            app_args,
            expect_ports: config.ports.len(),
            startup_timeout: config.startup_timeout,
        })?;
        Ok(Pod { tp, config })
    }

    pub fn start_tx_first(&mut self, bursts: u32) -> Result<()> {
        self.tp.start_tx_first(bursts)
    }
    pub fn wait_links_up(&mut self, timeout: Duration) -> Result<()> {
        self.tp.wait_links_up(timeout)
    }
    /// Kills the pod with SIGKILL, as a crash would.
    pub fn sigkill(mut self) {
        self.tp.sigkill()
    }
}

/// DPDK's vhost-user backend: testpmd with `net_vhost` ports, io forwarding.
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    pub sockets: Vec<PathBuf>,
    pub queues: u16,
    /// `client=1`: the switch connects to pods that run virtio-user with `server=1`.
    pub client: bool,
    /// One core: `0@C,1@C` (main lcore and the forwarding lcore share CPU C).
    pub lcores: String,
    pub mem_mb: u32,
    pub rxd: u32,
    pub txd: u32,
    pub total_num_mbufs: u32,
    pub extra_args: Vec<String>,
    pub startup_timeout: Duration,
}

impl SwitchConfig {
    pub fn new<P: AsRef<Path>>(sockets: &[P]) -> SwitchConfig {
        SwitchConfig {
            sockets: sockets.iter().map(|s| s.as_ref().to_path_buf()).collect(),
            queues: 1,
            client: false,
            lcores: "0@0,1@0".into(),
            mem_mb: 256,
            rxd: 1024,
            txd: 1024,
            total_num_mbufs: 32768,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
    pub fn on_cpu(mut self, cpu: usize) -> Self {
        self.lcores = format!("0@{cpu},1@{cpu}");
        self
    }
    pub fn queues(mut self, q: u16) -> Self {
        self.queues = q;
        self
    }
    pub fn client(mut self, on: bool) -> Self {
        self.client = on;
        self
    }
    pub fn mem_mb(mut self, mb: u32) -> Self {
        self.mem_mb = mb;
        self
    }
}

/// The reference switch, started and forwarding (`start` already sent).
pub type ReferenceSwitch = Instance<SwitchConfig>;

impl ReferenceSwitch {
    /// Starts testpmd with one `net_vhost` port per socket and starts io forwarding.
    /// In server mode stale socket files are removed first and the call returns once
    /// the sockets exist.
    pub fn start(config: SwitchConfig) -> Result<ReferenceSwitch> {
        if !config.client {
            for s in &config.sockets {
                let _ = fs::remove_file(s);
            }
        }
        let vdevs = config
            .sockets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "net_vhost{i},iface={},queues={}{}",
                    s.display(),
                    config.queues,
                    if config.client { ",client=1" } else { "" }
                )
            })
            .collect();
        let mut tp = Testpmd::spawn(Launch {
            role: "sw",
            vdevs,
            lcores: config.lcores.clone(),
            mem_mb: config.mem_mb,
            netns: None,
            nb_cores: 1,
            queues: config.queues,
            rxd: config.rxd,
            txd: config.txd,
            total_num_mbufs: config.total_num_mbufs,
            forward_mode: "io".into(),
            app_args: config.extra_args.clone(),
            expect_ports: config.sockets.len(),
            startup_timeout: config.startup_timeout,
        })?;
        tp.start()?;
        if !config.client {
            wait_for_paths(&config.sockets, Duration::from_secs(10))?;
        }
        Ok(ReferenceSwitch { tp, config })
    }

    /// Sum of RX-packets over all ports: what the switch forwarded (both directions).
    pub fn rx_packets_total(&mut self) -> Result<u64> {
        Ok(self.port_stats()?.iter().map(|s| s.rx_packets).sum())
    }
}

/// Writes frames to a classic little-endian pcap file (microsecond timestamps,
/// linktype Ethernet).
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(i as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    fs::write(path, b)
}

/// Reads the frames of a classic pcap file (either byte order; captured bytes only).
pub fn read_pcap(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let d = fs::read(path)?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    if d.len() < 24 {
        return Err(bad("pcap shorter than its header"));
    }
    let magic = u32::from_le_bytes(d[0..4].try_into().expect("4 bytes"));
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => return Err(bad("not a pcap file")),
    };
    let rd = |o: usize| {
        let w: [u8; 4] = d[o..o + 4].try_into().expect("4 bytes");
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut frames = Vec::new();
    let mut o = 24;
    while o < d.len() {
        if o + 16 > d.len() {
            return Err(bad("truncated pcap record header"));
        }
        let caplen = rd(o + 8) as usize;
        let start = o + 16;
        let end = start
            .checked_add(caplen)
            .filter(|&e| e <= d.len())
            .ok_or_else(|| bad("truncated pcap record"))?;
        frames.push(d[start..end].to_vec());
        o = end;
    }
    Ok(frames)
}

/// Deterministic test frames: Ethernet (locally administered MACs, ethertype 0x88b5 =
/// local experimental), a 4-byte sequence number, then pseudo-random payload; lengths
/// cycle through `sizes`.
pub fn test_frames(count: usize, sizes: &[usize], seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|i| {
            let len = sizes[i % sizes.len()].max(18);
            let mut f = Vec::with_capacity(len);
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xb5]);
            f.extend_from_slice(&(i as u32).to_be_bytes());
            while f.len() < len {
                f.push(next() as u8);
            }
            f
        })
        .collect()
}
