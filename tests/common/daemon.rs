//! Runs `podwire run` as a process for integration tests: writes the config, waits
//! for the control socket, reads `podwire stats --json`, and stops it with SIGTERM
//! (checking a clean exit). The daemon is killed if a test fails half way.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The podwire binary cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_podwire");

/// One port's line of `podwire stats --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStat {
    pub name: String,
    pub link: String,
    pub queues: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_drops: u64,
    pub tx_drops: u64,
    pub errors: u64,
}

/// A running `podwire run`.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub control: PathBuf,
    log: PathBuf,
}

/// A fresh directory for one test's sockets and config.
pub fn test_dir(tag: &str) -> PathBuf {
    let d = PathBuf::from(format!("/tmp/pwt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

impl Daemon {
    /// Starts `podwire run` on `body` (the config without `control_socket`, which is
    /// put in `dir`), and waits until the control socket answers and every path in
    /// `sockets` exists.
    pub fn start(dir: &Path, body: &str, sockets: &[&Path]) -> Daemon {
        let control = dir.join("ctl.sock");
        let config = dir.join("podwire.toml");
        std::fs::write(&config, format!("control_socket = \"{}\"\n{body}", control.display()))
            .expect("write config");
        let log = dir.join("podwire.log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn podwire run");
        let mut d = Daemon { child: Some(child), dir: dir.to_path_buf(), control, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = d.try_stats().is_some() && sockets.iter().all(|s| s.exists());
            if ready {
                return d;
            }
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("podwire exited at start ({st}):\n{}", d.log_text());
            }
            assert!(Instant::now() < deadline, "podwire not ready in 10 s:\n{}", d.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn try_stats(&self) -> Option<Vec<PortStat>> {
        let out = Command::new(BIN)
            .args(["stats", "--json", "--socket"])
            .arg(&self.control)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let ports = v.get("ports")?.as_array()?;
        Some(
            ports
                .iter()
                .map(|p| {
                    let n = |k: &str| p.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
                    let s = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                    PortStat {
                        name: s("name"),
                        link: s("link"),
                        queues: n("queues"),
                        rx_packets: n("rx_packets"),
                        rx_bytes: n("rx_bytes"),
                        tx_packets: n("tx_packets"),
                        tx_bytes: n("tx_bytes"),
                        rx_drops: n("rx_drops"),
                        tx_drops: n("tx_drops"),
                        errors: n("errors"),
                    }
                })
                .collect(),
        )
    }

    /// Every port's counters (panics if the daemon does not answer).
    pub fn stats(&self) -> Vec<PortStat> {
        self.try_stats().unwrap_or_else(|| panic!("podwire stats failed:\n{}", self.log_text()))
    }

    /// One port's counters.
    pub fn port(&self, name: &str) -> PortStat {
        self.stats()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no port {name} in podwire stats"))
    }

    /// Waits until `cond` holds for port `name` (or panics after `timeout`).
    pub fn wait_port(&self, name: &str, timeout: Duration, cond: impl Fn(&PortStat) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.port(name);
            if cond(&p) {
                return;
            }
            assert!(Instant::now() < deadline, "port {name} never reached the state: {p:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then checks a clean exit (status 0, no panic in the log) and that the
    /// control socket is gone. Returns the log.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("podwire did not stop within 10 s of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log_text();
        assert!(status.success(), "podwire exited with {status}:\n{log}");
        assert!(!log.contains("panicked"), "podwire panicked:\n{log}");
        assert!(!self.control.exists(), "control socket left behind");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
