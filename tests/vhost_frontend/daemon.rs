//! The daemon under test, as a process: `podwire run` on a config of vhost-user
//! server ports, asked for counters with `podwire stats --json`, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_podwire");

/// A temp directory with a name unique to this process and `tag`, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let d =
            std::env::temp_dir().join(format!("podwire-{tag}-{}-{nanos:08x}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Self(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `podwire run`. Dropping it (a failed test) sends SIGTERM and, if that
/// does not stop it within 10 s, SIGKILL; [`Daemon::stop`] is the checked path.
pub struct Daemon {
    child: Option<Child>,
    pub ctl: PathBuf,
    pub log: PathBuf,
}

/// Port counters as `podwire stats --json` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub link: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_drops: u64,
    pub tx_drops: u64,
    pub errors: u64,
}

impl Daemon {
    /// Writes a config with server-mode vhost-user ports `ports` in `dir` (socket
    /// `<dir>/<name>.sock`), cross-connected pairwise as `xconnects`, one worker on
    /// the last core this process may use, and starts the daemon; returns once the
    /// control socket answers.
    pub fn start(dir: &Path, ports: &[&str], xconnects: &[[&str; 2]]) -> Self {
        let ctl = dir.join("ctl.sock");
        let core = podwire::config::allowed_cpus().and_then(|c| c.last().copied()).unwrap_or(0);
        let mut cfg = format!(
            "control_socket = \"{}\"\nlog_level = \"info\"\n[workers]\ncores = [{core}]\n\
             [memory]\nhugepages = false\nbuffers = 4096\n",
            ctl.display()
        );
        for p in ports {
            cfg += &format!(
                "[[ports]]\nname = \"{p}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nmode = \"server\"\n",
                socket(dir, p).display()
            );
        }
        for [a, b] in xconnects {
            cfg += &format!("[[xconnect]]\nports = [\"{a}\", \"{b}\"]\n");
        }
        let config = dir.join("podwire.toml");
        std::fs::write(&config, cfg).unwrap();
        let log = dir.join("podwire.log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start podwire run");
        let mut d = Self { child: Some(child), ctl, log };
        let start = Instant::now();
        loop {
            if d.try_stats().is_some() {
                break;
            }
            d.assert_alive();
            assert!(start.elapsed() < Duration::from_secs(20), "podwire never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in ports {
            assert!(socket(dir, p).exists(), "port {p} has no socket");
        }
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the daemon exited or logged a panic.
    pub fn assert_alive(&mut self) {
        let status = self.child.as_mut().expect("running").try_wait().unwrap();
        if let Some(s) = status {
            panic!("podwire exited with {s}; log:\n{}", self.log_text());
        }
        let log = self.log_text();
        assert!(!log.contains("panicked"), "podwire panicked; log:\n{log}");
    }

    /// All ports' counters, or `None` when the control socket does not answer.
    pub fn try_stats(&self) -> Option<std::collections::BTreeMap<String, Stats>> {
        let out = Command::new(BIN)
            .arg("stats")
            .arg("--socket")
            .arg(&self.ctl)
            .arg("--json")
            .output()
            .expect("run podwire stats");
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
        let n = |p: &serde_json::Value, k: &str| {
            p[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {p}"))
        };
        Some(
            v["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .map(|p| {
                    let s = Stats {
                        link: p["link"].as_str().expect("link").to_owned(),
                        rx_packets: n(p, "rx_packets"),
                        rx_bytes: n(p, "rx_bytes"),
                        tx_packets: n(p, "tx_packets"),
                        tx_bytes: n(p, "tx_bytes"),
                        rx_drops: n(p, "rx_drops"),
                        tx_drops: n(p, "tx_drops"),
                        errors: n(p, "errors"),
                    };
                    (p["name"].as_str().expect("name").to_owned(), s)
                })
                .collect(),
        )
    }

    /// Counters of port `name`.
    pub fn stats(&self, name: &str) -> Stats {
        let all = self.try_stats().unwrap_or_else(|| {
            panic!("podwire stats failed (did the daemon die?); log:\n{}", self.log_text())
        });
        all.get(name).unwrap_or_else(|| panic!("no port {name} in {all:?}")).clone()
    }

    /// Waits (up to `timeout`) until `cond` holds for port `name`'s counters.
    pub fn wait_stats(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&Stats) -> bool,
    ) -> Stats {
        let start = Instant::now();
        loop {
            let s = self.stats(name);
            if cond(&s) {
                return s;
            }
            assert!(start.elapsed() < timeout, "port {name}: {what} within {timeout:?}: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then checks the daemon exits 0 within 15 s and logged no panic.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("podwire did not stop on SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log_text();
        assert!(status.success(), "podwire exited with {status}; log:\n{log}");
        assert!(!log.contains("panicked"), "podwire panicked; log:\n{log}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if std::thread::panicking() {
            eprintln!("---- podwire log ----\n{}", self.log_text());
        }
        if let Ok(None) = child.try_wait() {
            // SAFETY: as in `stop`; our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The socket path of port `name` in `dir`.
pub fn socket(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}
