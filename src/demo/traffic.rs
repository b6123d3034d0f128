//! The demo's proof of forwarding: `ping` between namespaces (a child process per
//! run, parsed), and a TCP transfer whose every byte is checked at the receiver,
//! from sockets opened by threads that entered the namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::netns::in_netns;
use super::teardown::Helpers;

/// What one `ping` run showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PingResult {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Replies received.
    pub received: u32,
    /// Round-trip times in ms: min, avg, max (absent when nothing came back).
    pub rtt_ms: Option<(f64, f64, f64)>,
    /// Duplicate replies seen.
    pub duplicates: u32,
}

impl PingResult {
    /// Parses iputils ping's summary lines.
    pub fn parse(out: &str) -> Self {
        let mut r = Self::default();
        for line in out.lines() {
            if line.contains("packets transmitted") {
                for part in line.split(',') {
                    let mut w = part.split_whitespace();
                    let n = w.next().and_then(|n| n.trim_start_matches('+').parse().ok());
                    match (n, w.next()) {
                        (Some(n), Some("packets")) => r.transmitted = n,
                        (Some(n), Some("received")) => r.received = n,
                        (Some(n), Some("duplicates")) => r.duplicates = n,
                        _ => {}
                    }
                }
            }
            if let Some(v) = line.strip_prefix("rtt min/avg/max/mdev = ") {
                let nums: Vec<f64> = v
                    .trim_end_matches(" ms")
                    .split('/')
                    .filter_map(|x| x.trim().parse().ok())
                    .collect();
                if let [min, avg, max, ..] = nums[..] {
                    r.rtt_ms = Some((min, avg, max));
                }
            }
        }
        r
    }

    /// "10/10 replies, rtt min/avg/max 0.051/0.083/0.154 ms".
    pub fn describe(&self) -> String {
        let rtt = match self.rtt_ms {
            Some((a, b, c)) => format!(", rtt min/avg/max {a:.3}/{b:.3}/{c:.3} ms"),
            None => String::new(),
        };
        let dup = if self.duplicates > 0 {
            format!(", {} duplicates", self.duplicates)
        } else {
            String::new()
        };
        format!("{}/{} replies{rtt}{dup}", self.received, self.transmitted)
    }

    /// Every request answered, once.
    pub fn ok(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted && self.duplicates == 0
    }
}

/// `ping` from namespace `ns` to `ip`: `count` requests `interval` s apart (or for
/// `deadline` seconds when `count` is 0). The child is registered with `helpers`
/// while it runs so that teardown can stop it.
pub fn ping(
    ns: &str,
    ip: &str,
    count: u32,
    interval: f64,
    deadline: u32,
    helpers: &Helpers,
) -> Result<PingResult, String> {
    let mut cmd = Command::new("ip");
    // -W 5: a reply held up by a busy machine (podwire's worker shares its core with
    // whatever else runs there) still counts; a lost one does not.
    cmd.args(["netns", "exec", ns, "ping", "-n", "-i", &format!("{interval}"), "-W", "5"]);
    if count > 0 {
        cmd.args(["-c", &count.to_string()]);
    } else {
        cmd.args(["-w", &deadline.to_string()]);
    }
    cmd.arg(ip).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group: a Ctrl-C in the terminal goes to the demo, which stops
    // everything in order.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    super::teardown::die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|e| format!("cannot run ping: {e}"))?;
    let pid = child.id();
    helpers.add(pid);
    let out = child.wait_with_output();
    helpers.remove(pid);
    let out = out.map_err(|e| format!("ping: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let r = PingResult::parse(&text);
    if r.transmitted == 0 {
        return Err(format!(
            "ping from {ns} to {ip} did not run: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(r)
}

/// Pings `ip` from `ns` once a second until a reply comes back (the path is up: the
/// XDP programs and sockets are ready and the bridge has learned the addresses);
/// returns how long that took, or an error after `timeout`.
pub fn wait_for_reply(
    ns: &str,
    ip: &str,
    timeout: Duration,
    helpers: &Helpers,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let r = ping(ns, ip, 1, 1.0, 0, helpers)?;
        if r.received > 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(format!("no ping reply from {ip} to {ns} within {timeout:?}"));
        }
    }
}

/// What a TCP transfer showed.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpResult {
    /// Bytes the receiver got.
    pub bytes: u64,
    /// Whether every byte was the one sent, in order.
    pub intact: bool,
    /// From the connection's accept to the last byte.
    pub seconds: f64,
}

impl TcpResult {
    /// Throughput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 * 8.0 / self.seconds / 1e6
        } else {
            0.0
        }
    }
}

/// Deterministic test bytes: a xorshift stream.
fn fill_pattern(state: &mut u64, out: &mut [u8]) {
    for b in out {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *b = *state as u8;
    }
}

/// Sends `len` pattern bytes from namespace `from_ns` to a receiver in `to_ns`
/// listening on `to_ip:port`, which checks them as they arrive; `progress` counts
/// the bytes received.
pub fn tcp_transfer(
    from_ns: &str,
    to_ns: &str,
    to_ip: &str,
    port: u16,
    len: u64,
    progress: Arc<AtomicU64>,
) -> Result<TcpResult, String> {
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    const IO_TIMEOUT: Duration = Duration::from_secs(15);
    let addr: SocketAddr =
        format!("{to_ip}:{port}").parse().map_err(|e| format!("address {to_ip}:{port}: {e}"))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(to_ns, move || {
        let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        let _ = ready_tx.send(());
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if t0.elapsed() > IO_TIMEOUT {
                        return Err("no connection arrived through podwire".to_string());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut state = SEED;
        let mut buf = vec![0u8; 64 * 1024];
        let mut want = vec![0u8; 64 * 1024];
        let (mut got, mut intact) = (0u64, true);
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(format!("receive after {got} bytes: {e}")),
            };
            fill_pattern(&mut state, &mut want[..n]);
            intact &= buf[..n] == want[..n];
            got += n as u64;
            progress.store(got, Relaxed);
        }
        Ok(TcpResult {
            bytes: got,
            intact: intact && got == len,
            seconds: start.elapsed().as_secs_f64(),
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "the TCP receiver did not start".to_string())?;
    let sender = in_netns(from_ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| format!("connect to {addr} through podwire: {e}"))?;
        s.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        let mut state = SEED;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < len {
            let n = (len - sent).min(chunk.len() as u64) as usize;
            fill_pattern(&mut state, &mut chunk[..n]);
            s.write_all(&chunk[..n]).map_err(|e| format!("send after {sent} bytes: {e}"))?;
            sent += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
        Ok(sent)
    });
    let sent = sender.join().map_err(|_| "the TCP sender panicked".to_string())??;
    let r = receiver.join().map_err(|_| "the TCP receiver panicked".to_string())??;
    if sent != len {
        return Err(format!("sent {sent} of {len} bytes"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_output() {
        let out = "PING 10.99.0.2 (10.99.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.99.0.2: icmp_seq=1 ttl=64 time=0.081 ms\n\n\
                   --- 10.99.0.2 ping statistics ---\n\
                   10 packets transmitted, 9 received, +2 duplicates, 10% packet loss, time 905ms\n\
                   rtt min/avg/max/mdev = 0.045/0.081/0.154/0.030 ms\n";
        let r = PingResult::parse(out);
        assert_eq!((r.transmitted, r.received, r.duplicates), (10, 9, 2));
        assert_eq!(r.rtt_ms, Some((0.045, 0.081, 0.154)));
        assert!(!r.ok());
        assert!(r.describe().starts_with("9/10 replies, rtt min/avg/max 0.045/0.081/0.154 ms"));
        let none = PingResult::parse("3 packets transmitted, 0 received, 100% packet loss\n");
        assert_eq!((none.transmitted, none.received, none.rtt_ms), (3, 0, None));
        assert_eq!(PingResult::parse("garbage"), PingResult::default());
    }

    #[test]
    fn pattern_is_the_same_in_any_chunking() {
        let (mut a, mut b) = (7u64, 7u64);
        let mut whole = vec![0u8; 1000];
        fill_pattern(&mut a, &mut whole);
        let mut parts = vec![0u8; 1000];
        let (x, y) = parts.split_at_mut(333);
        fill_pattern(&mut b, x);
        fill_pattern(&mut b, y);
        assert_eq!(whole, parts);
    }
}
