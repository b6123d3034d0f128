//! Runs `podwire run` as a process for integration tests: writes the config, waits
//! for the control socket, reads `podwire stats --json`, and stops it with SIGTERM
//! (checking a clean exit). A test that fails half way prints the daemon's log and
//! stops the daemon (SIGTERM, then SIGKILL).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use podwire::control::{PortStats, StatsResponse};

/// The podwire binary cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_podwire");

/// How long the daemon may take to answer after starting, and to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);

/// A temp directory with a name unique to this process and `tag`.
pub struct TempDir {
    path: PathBuf,
    keep_on_failure: bool,
}

impl TempDir {
    /// A directory removed on drop, even when the test fails.
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("podwire-{tag}-{}-{nanos:08x}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path, keep_on_failure: false }
    }

    /// A directory removed on drop when the test passed, and kept (its path printed)
    /// for a look at its logs when the test fails.
    pub fn kept_on_failure(tag: &str) -> Self {
        let mut d = Self::new(tag);
        d.keep_on_failure = true;
        d
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep_on_failure && std::thread::panicking() {
            eprintln!("(test files kept in {})", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The socket path of port `name` in `dir`.
pub fn socket(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// The control socket [`Daemon::start`] configures in `dir`.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join("ctl.sock")
}

/// Runs `podwire stats [--json]` against control socket `control`.
pub fn stats_command(control: &Path, json: bool) -> Output {
    let mut c = Command::new(BIN);
    c.arg("stats").arg("--socket").arg(control);
    if json {
        c.arg("--json");
    }
    c.output().expect("run podwire stats")
}

/// The config of [`Daemon::start_vhost_servers`]: server-mode vhost-user ports
/// `ports` (socket [`socket`]`(dir, name)`), cross-connected pairwise as `xconnects`,
/// one worker on the last core this process may use, no hugepages.
pub fn vhost_servers_config(dir: &Path, ports: &[&str], xconnects: &[[&str; 2]]) -> String {
    let core = podwire::config::allowed_cpus().and_then(|c| c.last().copied()).unwrap_or(0);
    let mut cfg = format!(
        "log_level = \"info\"\n[workers]\ncores = [{core}]\n\
         [memory]\nhugepages = false\nbuffers = 4096\n"
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
    cfg
}

/// A running `podwire run`. Dropping it (a failed test) prints its log if the test
/// is failing, sends SIGTERM and, if that does not stop it within 10 s, SIGKILL;
/// [`Daemon::stop`] is the checked path.
pub struct Daemon {
    child: Option<Child>,
    /// The control socket.
    pub control: PathBuf,
    /// The daemon's stderr.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `podwire run` on `body` (the config without `control_socket`, which is
    /// [`control_socket`]`(dir)`; the log level is the config's: `RUST_LOG` is not
    /// passed on), and waits until the control socket answers and every path in
    /// `sockets` exists. Config and log (`podwire.log`) are written in `dir`.
    pub fn start(dir: &Path, body: &str, sockets: &[&Path]) -> Self {
        let control = control_socket(dir);
        let config = dir.join("podwire.toml");
        std::fs::write(&config, format!("control_socket = \"{}\"\n{body}", control.display()))
            .expect("write config");
        let log = dir.join("podwire.log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start podwire run");
        let mut d = Self { child: Some(child), control, log };
        let start = Instant::now();
        loop {
            if d.try_stats().is_some() && sockets.iter().all(|s| s.exists()) {
                return d;
            }
            if let Some(status) = d.exit_status() {
                let hint = if body.contains("hugepages = true") {
                    " (hugepages reserved? `sudo scripts/install-deps.sh` reserves them)"
                } else {
                    ""
                };
                panic!("podwire run exited at start with {status}{hint}; log:\n{}", d.log_text());
            }
            let missing: Vec<&&Path> = sockets.iter().filter(|s| !s.exists()).collect();
            assert!(
                start.elapsed() < PATIENCE,
                "podwire not ready in {PATIENCE:?} (sockets missing: {missing:?}); log:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Daemon::start`] on [`vhost_servers_config`], waiting for every port's socket.
    pub fn start_vhost_servers(dir: &Path, ports: &[&str], xconnects: &[[&str; 2]]) -> Self {
        let sockets: Vec<PathBuf> = ports.iter().map(|p| socket(dir, p)).collect();
        let sockets: Vec<&Path> = sockets.iter().map(PathBuf::as_path).collect();
        Self::start(dir, &vhost_servers_config(dir, ports, xconnects), &sockets)
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How the process exited, if it did.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().expect("running").try_wait().expect("wait for podwire")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Panics (with the log) if the daemon exited or logged a panic.
    pub fn assert_alive(&mut self) {
        if let Some(s) = self.exit_status() {
            panic!("podwire exited with {s}; log:\n{}", self.log_text());
        }
        let log = self.log_text();
        assert!(!log.contains("panicked"), "podwire panicked; log:\n{log}");
    }

    /// Every port's counters, or `None` when the control socket does not answer.
    pub fn try_stats(&self) -> Option<Vec<PortStats>> {
        let out = stats_command(&self.control, true);
        if !out.status.success() {
            return None;
        }
        let stats: StatsResponse = serde_json::from_slice(&out.stdout).expect("stats JSON");
        Some(stats.ports)
    }

    /// Every port's counters (panics, with the log, if the daemon does not answer).
    pub fn stats(&self) -> Vec<PortStats> {
        self.try_stats().unwrap_or_else(|| {
            panic!("podwire stats failed (did the daemon die?); log:\n{}", self.log_text())
        })
    }

    /// Counters of port `name`.
    pub fn port(&self, name: &str) -> PortStats {
        let all = self.stats();
        all.iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no port {name} in {all:?}"))
            .clone()
    }

    /// Waits (up to `timeout`) until `cond` holds for port `name`'s counters; `what`
    /// says what was awaited when it does not.
    pub fn wait_port(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&PortStats) -> bool,
    ) -> PortStats {
        let start = Instant::now();
        loop {
            let s = self.port(name);
            if cond(&s) {
                return s;
            }
            assert!(start.elapsed() < timeout, "port {name}: {what} within {timeout:?}: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `method path` with an optional JSON body to the control API; returns the
    /// status and the JSON answer (`null` for an empty body).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (code, text) = podwire::control::client::request(&self.control, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.log_text()));
        let v = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
        };
        (code, v)
    }

    /// [`Daemon::api`], asserting the status.
    pub fn api_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        want: u16,
    ) -> serde_json::Value {
        let (code, v) = self.api(method, path, body);
        assert_eq!(code, want, "{method} {path} {body:?}: {v}");
        v
    }

    /// Names of the ports `GET /ports` lists.
    pub fn port_names(&self) -> Vec<String> {
        let v = self.api_ok("GET", "/ports", None, 200);
        v["ports"]
            .as_array()
            .expect("ports array")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect()
    }

    /// `(total, free)` buffers of the mempool (`GET /stats`).
    pub fn mempool(&self) -> (u64, u64) {
        let v = self.api_ok("GET", "/stats", None, 200);
        let m = &v["mempool"];
        (m["total"].as_u64().expect("total"), m["free"].as_u64().expect("free"))
    }

    /// Waits up to `timeout` until the mempool's free count is `want`; returns the last
    /// count seen.
    pub fn wait_mempool_free(&self, want: u64, timeout: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let (_, free) = self.mempool();
            if free == want || start.elapsed() > timeout {
                return free;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) has no memory-safety preconditions; the PID is our child's,
        // not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, sig) }, 0);
    }

    /// SIGTERM, then checks a clean exit (status 0, no panic in the log) and that the
    /// control socket is gone. Returns the log.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) has no memory-safety preconditions; the PID is our child's,
        // not yet reaped.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for podwire") {
                break s;
            }
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("podwire did not stop on SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log_text();
        assert!(status.success(), "podwire exited with {status}; log:\n{log}");
        assert!(!log.contains("panicked"), "podwire panicked; log:\n{log}");
        assert!(!self.control.exists(), "control socket left behind");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if std::thread::panicking() {
            eprintln!("---- podwire log ({}) ----\n{}", self.log.display(), self.log_text());
        }
        if let Ok(None) = child.try_wait() {
            // SAFETY: as in `stop`; our own child's PID, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
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
