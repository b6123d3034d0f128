//! `podwire demo`: podwire switching real traffic on this machine, set up and torn
//! down in one command (root).
//!
//! 1. Two network namespaces `pwdemo-<pid>-a` and `-b` (10.99.0.1 and .2), each
//!    behind a veth whose host end (`pwd<pid>a`, `pwd<pid>b`) podwire takes with
//!    AF_XDP; when `dpdk-testpmd` is installed, a DPDK pod in `pwdemo-<pid>-pod`
//!    attached to a vhost-user port ([`pod`]: testpmd in `icmpecho` mode answers
//!    ARP and ping for 10.99.0.100 from its own datapath).
//! 2. `podwire run` (this binary, as a child) on a generated config in
//!    `/tmp/podwire-demo-<pid>/`: all ports on one L2 bridge `demo`.
//! 3. Traffic ([`traffic`]): a first reply on each path (reported, not counted),
//!    then each namespace pings the pod (which teaches the bridge every address),
//!    the namespaces ping each other, a TCP transfer a -> b whose
//!    every byte is checked, then steady pings for `--duration` seconds. A live table
//!    of per-port counters runs meanwhile ([`display`]).
//! 4. A summary (ping replies and RTTs, TCP bytes and throughput, per-port packets and
//!    bytes, bridge counters, each worker's busy share of poll rounds from
//!    `GET /metrics`, the pod's own counters) and a verdict: exit 0 only when every
//!    check passed.
//! 5. Teardown ([`teardown`]): podwire (it detaches its XDP programs and removes its
//!    sockets), the pod and its DPDK files, the veths and namespaces, the directory;
//!    also on error and on Ctrl-C/SIGTERM (exit 130).
//!
//! The traffic phase itself is in `steps.rs` (on its own thread), the summary and
//! verdict in `summary.rs`.
//!
//! With the pod on the bridge, the namespaces get permanent neighbour entries for
//! each other: testpmd's `icmpecho` answers ARP for *any* address and would otherwise
//! race the real owner's reply.

/// `println!` that never panics: the demo must clean up even when its stdout is gone
/// (`podwire demo | head`, a closed terminal), so write errors are ignored.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod display;
pub mod netns;
pub mod pod;
mod steps;
mod summary;
pub mod teardown;
pub mod traffic;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::{fetch_stats, get_json, BridgeInfo};
use crate::signals::{signal_name, ShutdownSignals};
use netns::Namespace;
use steps::{traffic_steps, Progress, TrafficReport};
use summary::{summary, worker_polls};
use teardown::Teardown;

/// The subnet of the demo's namespaces (inside them only).
const SUBNET: &str = "10.99.0";
/// The address the DPDK pod answers for.
const POD_IP: &str = "10.99.0.100";
/// TCP port of the transfer.
const TCP_PORT: u16 = 5399;
/// Longest wait for the first ping reply on a path.
const FIRST_REPLY_PATIENCE: Duration = Duration::from_secs(20);
/// Longest wait for podwire or the pod to come up.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// What `podwire demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Steady-ping phase after the checks (live table running).
    pub duration: Duration,
    /// Bytes sent in the TCP transfer.
    pub tcp_bytes: u64,
    /// Leave out the DPDK pod even if testpmd is installed.
    pub no_pod: bool,
    /// After the checks, keep everything running until Ctrl-C.
    pub keep: bool,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A step failed.
    #[error("{0}")]
    Failed(String),
    /// SIGINT or SIGTERM arrived.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
}

fn fail(msg: impl Into<String>) -> DemoError {
    DemoError::Failed(msg.into())
}

/// Prints a step announcement.
fn say(msg: &str) {
    out!("==> {msg}");
}

/// Runs the demo; the process's exit code. Call it from the main thread before any
/// other thread is started (signals are blocked and collected here).
pub fn main(opts: &DemoOptions) -> ExitCode {
    let signals = match ShutdownSignals::block() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("podwire demo: cannot block SIGINT/SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut teardown = Teardown::new();
    let result = Demo { opts, signals: &signals, teardown: &mut teardown }.run();
    let code = match &result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(DemoError::Interrupted(sig)) => {
            out!("\n==> {sig}: stopping and cleaning up");
            ExitCode::from(130)
        }
        Err(DemoError::Failed(why)) => {
            out!("\n==> error: {why}");
            out!("==> cleaning up");
            ExitCode::FAILURE
        }
    };
    if result.is_ok() {
        say("cleaning up");
    }
    teardown.run();
    match result {
        Ok(true) => out!("podwire demo: PASSED (everything it created is gone)"),
        Ok(false) => out!("podwire demo: FAILED (see above; everything it created is gone)"),
        Err(DemoError::Interrupted(_)) => {
            out!("podwire demo: interrupted (everything it created is gone)")
        }
        Err(DemoError::Failed(_)) => {
            out!("podwire demo: FAILED (everything it created is gone)")
        }
    }
    code
}

struct Demo<'a> {
    opts: &'a DemoOptions,
    signals: &'a ShutdownSignals,
    teardown: &'a mut Teardown,
}

impl Demo<'_> {
    /// Waits until `cond` holds, watching signals; `what` names what is awaited.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&mut Teardown) -> Result<bool, DemoError>,
    ) -> Result<(), DemoError> {
        let start = Instant::now();
        loop {
            if cond(self.teardown)? {
                return Ok(());
            }
            if let Some(sig) = self.signals.wait(Duration::from_millis(100)) {
                return Err(DemoError::Interrupted(signal_name(sig)));
            }
            if start.elapsed() > timeout {
                return Err(fail(format!("{what}: not within {timeout:?}")));
            }
        }
    }

    fn interrupted(&self) -> Result<(), DemoError> {
        match self.signals.wait(Duration::ZERO) {
            Some(sig) => Err(DemoError::Interrupted(signal_name(sig))),
            None => Ok(()),
        }
    }

    /// The whole demo; `Ok(passed)`.
    fn run(&mut self) -> Result<bool, DemoError> {
        let pid = std::process::id();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(fail(
                "podwire demo needs root (network namespaces, veths, XDP programs): run it with sudo",
            ));
        }
        for (tool, pkg) in [
            ("ip", "iproute2"),
            ("ethtool", "ethtool"),
            ("ping", "iputils-ping"),
            ("sysctl", "procps"),
        ] {
            if !netns::have(tool) {
                return Err(fail(format!("{tool} is not installed: apt-get install {pkg}")));
            }
        }
        let testpmd = if self.opts.no_pod { None } else { pod::testpmd() };
        out!(
            "podwire demo (pid {pid}): two network namespaces{} on one podwire L2 bridge.\n\
             Everything it creates carries {pid} in its name and is removed at the end, \
             also on Ctrl-C.",
            if testpmd.is_some() { " and a DPDK pod" } else { "" }
        );
        if self.opts.no_pod {
            say("--no-pod: the DPDK pod is left out");
        } else if testpmd.is_none() {
            say(&format!(
                "dpdk-testpmd is not installed, so the demo runs without the DPDK pod \
                 (vhost-user port). To include it: {}",
                pod::INSTALL_HINT
            ));
        }

        let dir = PathBuf::from(format!("/tmp/podwire-demo-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
        self.teardown.dir(dir.clone());

        // ---- namespaces
        let spaces: Vec<Namespace> = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, l)| Namespace {
                label: l.to_string(),
                ns: format!("pwdemo-{pid}-{l}"),
                host_if: format!("pwd{pid}{l}"),
                inner_if: "eth0".into(),
                ip: format!("{SUBNET}.{}", i + 1),
                mac: format!("02:99:00:00:00:{:02x}", i + 1),
            })
            .collect();
        for n in &spaces {
            say(&format!(
                "creating network namespace {} ({}/24 on eth0) behind veth {}",
                n.ns, n.ip, n.host_if
            ));
            netns::create(n, self.teardown)?;
            self.interrupted()?;
        }
        let pod_ns = format!("pwdemo-{pid}-pod");
        if testpmd.is_some() {
            say(&format!("creating network namespace {pod_ns} for the DPDK pod"));
            netns::add_netns(&pod_ns, self.teardown)?;
        }

        // ---- podwire
        let cpus = crate::config::allowed_cpus().unwrap_or_else(|| vec![0]);
        let worker_core = cpus.first().copied().unwrap_or(0);
        let pod_cpu = cpus.last().copied().unwrap_or(0);
        let control = dir.join("podwire.sock");
        let pod_sock = dir.join("pod.sock");
        let config =
            demo_config(&control, worker_core, &spaces, testpmd.is_some().then_some(&pod_sock));
        let config_path = dir.join("podwire.toml");
        std::fs::write(&config_path, &config).map_err(|e| fail(format!("write config: {e}")))?;
        let log = dir.join("podwire.log");
        say(&format!(
            "starting podwire (`podwire run --config {}`, worker on core {worker_core}): \
             AF_XDP ports ns-a, ns-b{} on bridge \"demo\"",
            config_path.display(),
            if testpmd.is_some() { " and vhost-user port pod" } else { "" }
        ));
        self.start_podwire(&config_path, &log)?;
        let ctl = control.clone();
        let log2 = log.clone();
        self.wait_for("podwire's AF_XDP ports up", START_PATIENCE, |t| {
            podwire_alive(t, &log2)?;
            Ok(fetch_stats(&ctl).is_ok_and(|(_, s)| {
                s.ports.iter().filter(|p| p.name.starts_with("ns-")).all(|p| p.link == "up")
            }))
        })?;
        say(&format!("podwire is forwarding; control socket {}", control.display()));

        // ---- the pod
        if let Some(testpmd) = &testpmd {
            let prefix = format!("pwdemo{pid}");
            let pod_log = dir.join("pod.log");
            say(&format!(
                "starting the DPDK pod: {} in {pod_ns} on core {pod_cpu}, net_virtio_user on \
                 {}, icmpecho mode (answers ARP and ping for {POD_IP})",
                testpmd.display(),
                pod_sock.display()
            ));
            pod::start(testpmd, &pod_ns, &pod_sock, pod_cpu, &prefix, &pod_log, self.teardown)?;
            let ctl = control.clone();
            let log2 = log.clone();
            let pod_log2 = pod_log.clone();
            self.wait_for("the DPDK pod attached", START_PATIENCE, |t| {
                podwire_alive(t, &log2)?;
                if let Some(Ok(Some(status))) = t.child_mut(pod::PROCESS_NAME).map(|c| c.try_wait())
                {
                    return Err(fail(format!(
                        "the DPDK pod exited ({status}) at start; its log:\n{}",
                        tail(&pod_log, 15)
                    )));
                }
                let text = std::fs::read_to_string(&pod_log).unwrap_or_default();
                Ok(pod::started(&text)
                    && fetch_stats(&ctl).is_ok_and(|(_, s)| {
                        s.ports.iter().any(|p| p.name == "pod" && p.link == "up")
                    }))
            })
            .map_err(|e| match e {
                DemoError::Failed(why) => fail(format!(
                    "{why}; the pod's log (tail):\n{}\npodwire's log (tail):\n{}",
                    tail(&pod_log2, 15),
                    tail(&log, 10)
                )),
                e => e,
            })?;
            say("the DPDK pod is attached: podwire's port \"pod\" is up");
            say("permanent neighbour entries between the namespaces (the pod answers ARP for any address)");
            netns::static_neighbour(&spaces[0], &spaces[1].ip, &spaces[1].mac)?;
            netns::static_neighbour(&spaces[1], &spaces[0].ip, &spaces[0].mac)?;
        }

        // ---- traffic, with the live view
        say("traffic through podwire (live counters below)");
        let progress = Arc::new(Progress::default());
        let report = self.traffic(&spaces, testpmd.is_some(), &control, &log, &progress)?;

        // ---- summary
        let stats = fetch_stats(&control).map(|(_, s)| s.ports).unwrap_or_default();
        let bridge = get_json::<BridgeInfo>(&control, "/bridges/demo").ok().map(|(_, b)| b);
        let polls = crate::control::client::get(&control, "/metrics")
            .ok()
            .map(|(_, body)| worker_polls(&body))
            .unwrap_or_default();
        // The pod prints its own counters when it quits; with --keep it stays up.
        let pod_totals = if testpmd.is_some() && !self.opts.keep {
            say("stopping the DPDK pod to read its own counters");
            self.teardown.stop_process(pod::PROCESS_NAME);
            pod::totals(&std::fs::read_to_string(dir.join("pod.log")).unwrap_or_default())
        } else {
            None
        };
        let passed = summary(self.opts, &report, &stats, bridge.as_ref(), &polls, pod_totals);

        if self.opts.keep {
            out!(
                "\n==> --keep: everything stays up until Ctrl-C. Try:\n    \
                 podwire stats --socket {ctl}\n    curl -s --unix-socket {ctl} http://podwire/metrics\n    \
                 ip netns exec {a} ping {b_ip}",
                ctl = control.display(),
                a = spaces[0].ns,
                b_ip = spaces[1].ip
            );
            let mut view = display::LiveView::new(std::io::stdout().is_terminal());
            loop {
                if let Some(sig) = self.signals.wait(Duration::from_millis(100)) {
                    out!("==> {}: cleaning up", signal_name(sig));
                    break;
                }
                podwire_alive(self.teardown, &log)?;
                if view.due() {
                    let ports = fetch_stats(&control).map(|(_, s)| s.ports).unwrap_or_default();
                    view.draw(&[], "running (--keep); Ctrl-C cleans up", &ports);
                }
            }
        }
        Ok(passed)
    }

    fn start_podwire(&mut self, config: &Path, log: &Path) -> Result<(), DemoError> {
        let exe = std::env::current_exe().map_err(|e| fail(format!("own executable: {e}")))?;
        let err =
            std::fs::File::create(log).map_err(|e| fail(format!("{}: {e}", log.display())))?;
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // If the demo is killed outright, podwire goes too (its XDP links with it).
        teardown::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| fail(format!("cannot start podwire run: {e}")))?;
        self.teardown.process(PODWIRE, child);
        Ok(())
    }

    /// Runs the traffic steps on a thread while this one draws the live view and
    /// watches signals and podwire.
    fn traffic(
        &mut self,
        spaces: &[Namespace],
        with_pod: bool,
        control: &Path,
        log: &Path,
        progress: &Arc<Progress>,
    ) -> Result<TrafficReport, DemoError> {
        let helpers = self.teardown.helpers();
        let (a, b) = (spaces[0].clone(), spaces[1].clone());
        let opts = self.opts.clone();
        let p = progress.clone();
        let worker = std::thread::Builder::new()
            .name("demo-traffic".into())
            .spawn(move || traffic_steps(&a, &b, with_pod, &opts, &p, &helpers))
            .map_err(|e| fail(format!("cannot start the traffic thread: {e}")))?;
        let mut view = display::LiveView::new(std::io::stdout().is_terminal());
        loop {
            if let Some(sig) = self.signals.wait(Duration::from_millis(100)) {
                return Err(DemoError::Interrupted(signal_name(sig)));
            }
            podwire_alive(self.teardown, log)?;
            let done = worker.is_finished();
            let events = progress.take_events();
            if done || view.due() || (view.is_tty() && !events.is_empty()) {
                let ports = fetch_stats(control).map(|(_, s)| s.ports).unwrap_or_default();
                view.draw(&events, &progress.current(), &ports);
            } else {
                for e in events {
                    out!("{e}");
                }
            }
            if done {
                break;
            }
        }
        worker.join().map_err(|_| fail("the traffic thread panicked"))?.map_err(DemoError::Failed)
    }
}

/// The teardown name of podwire's process.
const PODWIRE: &str = "podwire";

/// Fails (with its log) when podwire has exited.
fn podwire_alive(t: &mut Teardown, log: &Path) -> Result<(), DemoError> {
    match t.child_mut(PODWIRE).map(|c| c.try_wait()) {
        Some(Ok(Some(status))) => {
            Err(fail(format!("podwire exited ({status}); its log:\n{}", tail(log, 20))))
        }
        _ => Ok(()),
    }
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The generated `podwire run` config.
fn demo_config(
    control: &Path,
    core: usize,
    spaces: &[Namespace],
    pod_sock: Option<&PathBuf>,
) -> String {
    let mut c = format!(
        "# Generated by `podwire demo`.\ncontrol_socket = \"{}\"\nlog_level = \"info\"\n\
         [workers]\ncores = [{core}]\n[memory]\nbuffers = 8192\nhugepages = false\n",
        control.display()
    );
    let mut names = Vec::new();
    for n in spaces {
        c += &format!(
            "[[ports]]\nname = \"ns-{}\"\ntype = \"af-xdp\"\ninterface = \"{}\"\n",
            n.label, n.host_if
        );
        names.push(format!("\"ns-{}\"", n.label));
    }
    if let Some(sock) = pod_sock {
        c += &format!(
            "[[ports]]\nname = \"pod\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"server\"\n",
            sock.display()
        );
        names.push("\"pod\"".into());
    }
    c += &format!("[[bridge]]\nname = \"demo\"\nports = [{}]\n", names.join(", "));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_valid_and_bridges_every_port() {
        let spaces: Vec<Namespace> = ["a", "b"]
            .iter()
            .map(|l| Namespace {
                label: l.to_string(),
                ns: format!("pwdemo-1-{l}"),
                host_if: format!("pwd1{l}"),
                inner_if: "eth0".into(),
                ip: "10.99.0.1".into(),
                mac: "02:99:00:00:00:01".into(),
            })
            .collect();
        let sock = PathBuf::from("/tmp/podwire-demo-1/pod.sock");
        let text = demo_config(Path::new("/tmp/podwire-demo-1/c.sock"), 0, &spaces, Some(&sock));
        let c = crate::Config::parse(&text, Path::new("demo.toml")).expect("valid config");
        assert_eq!(c.ports.len(), 3);
        assert_eq!(c.bridges.len(), 1);
        assert_eq!(c.bridges[0].ports.len(), 3);
    }
}
