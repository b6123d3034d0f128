//! `podwire demo` as a user runs it: the built binary, to the end, with the DPDK pod
//! (dpdk-testpmd must be installed: scripts/install-deps.sh). Its exit status and its
//! summary must show real forwarding (ping replies, TCP bytes verified, counters of
//! every port above zero), and nothing it created may survive it: namespaces, veths,
//! processes, sockets and files, DPDK hugepage files. The same after SIGINT in the
//! middle of the traffic and SIGTERM in the middle of the setup.
//!
//! Needs root, iproute2, ethtool, ping, dpdk-testpmd and free hugepages.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::daemon::BIN;
use common::testpmd::{require_testpmd, PeerLock};

/// Everything of demo `pid` still on the machine.
fn leftovers(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let out = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new(args[0]).args(&args[1..]).output().unwrap().stdout)
            .into_owned()
    };
    for l in out(&["ip", "netns", "list"]).lines() {
        if l.contains(&format!("pwdemo-{pid}-")) {
            found.push(format!("namespace {l}"));
        }
    }
    for l in out(&["ip", "-o", "link", "show"]).lines() {
        if l.contains(&format!("pwd{pid}")) {
            found.push(format!("link {l}"));
        }
    }
    let dir = format!("/tmp/podwire-demo-{pid}");
    if std::path::Path::new(&dir).exists() {
        found.push(format!("directory {dir} (config, sockets, logs)"));
    }
    let marks = [format!("podwire-demo-{pid}"), format!("pwdemo{pid}"), format!("pwdemo-{pid}-")];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if marks.iter().any(|m| cmd.contains(m.as_str())) {
            found.push(format!("process {}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    for e in std::fs::read_dir("/dev/hugepages").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&format!("pwdemo{pid}")) {
            found.push(format!("hugepage file {}", e.path().display()));
        }
    }
    if std::path::Path::new(&format!("/var/run/dpdk/pwdemo{pid}")).exists() {
        found.push(format!("/var/run/dpdk/pwdemo{pid}"));
    }
    found
}

/// The processes descended from `pid` right now: (pid, command line).
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1));
        if let Some(ppid) = ppid.and_then(|x| x.parse::<u32>().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut found: Vec<u32> = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found[1..].iter().map(|&p| (p, cmdline(p))).collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Those of `procs` that still run (same PID and command line).
fn still_running(procs: &[(u32, String)]) -> Vec<(u32, String)> {
    procs.iter().filter(|(p, c)| !c.is_empty() && cmdline(*p) == *c).cloned().collect()
}

/// A running demo; a test that fails half way interrupts it and waits, so that it
/// cleans up after itself.
struct DemoRun {
    child: Child,
}

impl Drop for DemoRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's PID, not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `podwire demo ARGS` with stdout read line by line (and drained to the end even
/// when nobody reads the lines any more: the demo must never see a closed pipe).
fn spawn(args: &[&str]) -> (DemoRun, Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start podwire demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo| {line}");
            let _ = tx.send(line);
        }
    });
    (DemoRun { child }, rx)
}

/// Reads lines until one contains `mark` (panics after `timeout`); returns all read.
fn read_until(rx: &Receiver<String>, mark: &str, timeout: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(mark);
                seen.push(l);
                if hit {
                    return;
                }
            }
            Err(_) => {
                panic!("no line with {mark:?} within {timeout:?}; output:\n{}", seen.join("\n"))
            }
        }
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("podwire demo did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first number after `key` on the line starting with `prefix` (after spaces).
fn number_after(lines: &[String], prefix: &str, key: &str) -> u64 {
    let line = lines
        .iter()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{}", lines.join("\n")));
    line.split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn demo_forwards_and_leaves_nothing_behind() {
    require_testpmd();
    let _peers = PeerLock::acquire();
    let (mut run, rx) = spawn(&["--duration", "1", "--tcp-mib", "4"]);
    let pid = run.child.id();
    let mut lines = Vec::new();
    read_until(&rx, "==> traffic through podwire", Duration::from_secs(180), &mut lines);
    let started = descendants(pid);
    for what in ["podwire run --config", "dpdk-testpmd"] {
        assert!(started.iter().any(|(_, c)| c.contains(what)), "no {what} in {started:?}");
    }
    let status = wait_exit(&mut run.child, Duration::from_secs(240));
    lines.extend(rx.try_iter());
    let text = lines.join("\n");
    assert!(status.success(), "podwire demo failed ({status}):\n{text}");
    assert!(text.contains("podwire demo: PASSED"), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
    let summary: Vec<String> =
        lines.iter().skip_while(|l| !l.starts_with("==> summary")).cloned().collect();
    for (label, n) in [
        ("ping ns-a -> pod", 5),
        ("ping ns-b -> pod", 5),
        ("ping ns-a -> ns-b", 10),
        ("ping ns-b -> ns-a", 10),
        ("steady ns-a -> ns-b", 10),
        ("steady ns-a -> pod", 10),
    ] {
        let line = summary.iter().find(|l| l.trim_start().starts_with(label));
        let want = format!("{n}/{n} replies, rtt min/avg/max ");
        assert!(line.is_some_and(|l| l.contains(&want)), "{label}: want {want:?}:\n{text}");
    }
    assert_eq!(number_after(&summary, "tcp ns-a -> ns-b", "ns-b"), 4 << 20, "{text}");
    assert!(text.contains("every byte verified"), "{text}");
    for port in ["ns-a", "ns-b", "pod"] {
        let prefix = format!("port {port} ");
        assert!(number_after(&summary, &prefix, " rx ") > 0, "{port} rx:\n{text}");
        assert!(number_after(&summary, &prefix, " tx ") > 0, "{port} tx:\n{text}");
        assert_eq!(number_after(&summary, &prefix, "errors "), 0, "{port}:\n{text}");
    }
    // 4 MiB a -> b in frames of at most 1514 bytes.
    assert!(number_after(&summary, "port ns-a ", " rx ") > (4 << 20) / 1514, "{text}");
    assert!(number_after(&summary, "port ns-b ", " tx ") > (4 << 20) / 1514, "{text}");
    assert!(number_after(&summary, "bridge demo:", "forwarded ") > (4 << 20) / 1514, "{text}");
    assert!(number_after(&summary, "pod (testpmd", "rx ") >= 20, "the pod's own count:\n{text}");
    assert!(number_after(&summary, "worker 0", "):") > 0, "busy poll rounds:\n{text}");
    // It said what it was doing, and undid it.
    for step in [
        "==> creating network namespace pwdemo-",
        "==> starting podwire",
        "==> starting the DPDK pod",
        "cleanup: deleted network namespace",
        "cleanup: stopped podwire",
    ] {
        assert!(text.contains(step), "no {step:?}:\n{text}");
    }
    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind by podwire demo");
    assert_eq!(still_running(&started), vec![], "processes the demo started");
}

#[test]
fn interrupted_demo_cleans_up() {
    require_testpmd();
    let _peers = PeerLock::acquire();

    // SIGINT while traffic flows (steady pings running, ping processes alive).
    let (mut run, rx) = spawn(&["--duration", "60", "--tcp-mib", "2"]);
    let pid = run.child.id();
    let mut seen = Vec::new();
    read_until(&rx, "every byte verified", Duration::from_secs(180), &mut seen);
    std::thread::sleep(Duration::from_millis(500));
    let running = descendants(pid);
    // `ip netns exec NS ping ...` until it has exec'd, `ping ...` after.
    let pings = running.iter().filter(|(_, c)| c.contains("ping -n -i 0.1")).count();
    assert_eq!(pings, 3, "steady pings should be running: {running:?}");
    // SAFETY: kill(2) on our own child's PID, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) }, 0);
    let status = wait_exit(&mut run.child, Duration::from_secs(60));
    seen.extend(rx.try_iter());
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("==> SIGINT: stopping and cleaning up"), "{text}");
    assert!(text.contains("podwire demo: interrupted (everything it created is gone)"), "{text}");
    assert!(!text.contains("==> summary"), "{text}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind after SIGINT");
    assert_eq!(still_running(&running), vec![], "processes the demo started");

    // SIGTERM while the pod starts.
    let (mut run, rx) = spawn(&["--duration", "1"]);
    let pid = run.child.id();
    let mut seen = Vec::new();
    read_until(&rx, "==> starting the DPDK pod", Duration::from_secs(120), &mut seen);
    let running = descendants(pid);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut run.child, Duration::from_secs(60));
    seen.extend(rx.try_iter());
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("==> SIGTERM: stopping and cleaning up"), "{text}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "left behind after SIGTERM");
    assert_eq!(still_running(&running), vec![], "processes the demo started");
}
