//! podwire-cni driven the way a container runtime drives it (env vars, config on
//! stdin, result on stdout), for the tests that attach pods through the plugin
//! (`tests/cni_e2e.rs`, `tests/cni_churn.rs`): the plugin binary, a network
//! configuration against a test daemon and Debian's host-local IPAM, network
//! namespaces and bind mounts removed on drop, the control API over curl.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::daemon::{control_socket, BIN};

pub const CNI_DIR: &str = "/usr/lib/cni";

/// The podwire-cni binary next to the daemon cargo built (debug or release),
/// refused when older than its sources.
pub fn plugin() -> PathBuf {
    let target = Path::new(BIN).parent().and_then(Path::parent).expect("target dir");
    let cni = Path::new(env!("CARGO_MANIFEST_DIR")).join("cni");
    // Only what the binary is built from (cargo does not rebuild for a README).
    let newest_src = newest_mtime(&cni.join("src")).max(
        std::fs::metadata(cni.join("Cargo.toml"))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    let mut found = Vec::new();
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("podwire-cni");
        if let Ok(m) = std::fs::metadata(&p).and_then(|m| m.modified()) {
            found.push((m, p));
        }
    }
    found.sort();
    match found.pop() {
        Some((m, p)) if m >= newest_src => p,
        Some((_, p)) => panic!("{} is older than cni/src: run `cargo build -p podwire-cni` (scripts/test.sh builds it)", p.display()),
        None => panic!("podwire-cni is not built: run `cargo build -p podwire-cni` (scripts/test.sh builds it)"),
    }
}

pub fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                newest = newest.max(m);
            }
        }
    }
    newest
}

pub fn require_peers() {
    assert!(
        Path::new(CNI_DIR).join("host-local").is_file(),
        "/usr/lib/cni/host-local is missing: run scripts/install-deps.sh (apt-get install containernetworking-plugins)"
    );
}

/// A network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("pwcni{}{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns (apt-get install iproute2)");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A bind mount (the pod's view of its shared dir), unmounted on drop.
pub struct BindMount(pub PathBuf);

impl BindMount {
    pub fn new(from: &Path, to: &Path) -> BindMount {
        std::fs::create_dir_all(to).unwrap();
        let out = Command::new("mount").arg("--bind").arg(from).arg(to).output().expect("mount");
        assert!(out.status.success(), "mount --bind: {}", String::from_utf8_lossy(&out.stderr));
        let _ = Command::new("mount").args(["--make-private"]).arg(to).output();
        BindMount(to.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// The network configuration and a way to invoke the plugin with it.
pub struct Cni {
    pub plugin: PathBuf,
    pub root: PathBuf,
    pub conf: Value,
}

impl Cni {
    pub fn new(root: &Path, subnet: &str) -> Cni {
        require_peers();
        let conf = json!({
            "cniVersion": "1.1.0",
            "name": "e2e-net",
            "type": "userspace",
            "host": {"engine": "podwire", "iftype": "vhostuser", "netType": "bridge",
                     "vhost": {"mode": "server"}, "bridge": {"bridgeName": "br-e2e", "vlanId": 10}},
            "container": {"engine": "podwire", "iftype": "vhostuser", "netType": "interface",
                          "vhost": {"mode": "client"}},
            "sharedDir": root.join("shared"),
            "stateDir": root.join("state"),
            "controlSocket": control_socket(root),
            "logFile": root.join("cni.log"),
            "logLevel": "debug",
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": root.join("ipam")}
        });
        Cni { plugin: plugin(), root: root.to_path_buf(), conf }
    }

    pub fn devinfo(&self, cid: &str) -> PathBuf {
        self.root.join("devinfo").join(format!("{cid}.json"))
    }

    /// Runs `command` for container `cid`; `extra` is merged into the config.
    pub fn call_with(&self, command: &str, cid: &str, netns: &str, extra: &Value) -> (i32, Value) {
        let mut conf = self.conf.clone();
        conf["runtimeConfig"] = json!({"CNIDeviceInfoFile": self.devinfo(cid)});
        for (k, v) in extra.as_object().into_iter().flatten() {
            conf[k] = v.clone();
        }
        let mut child = Command::new(&self.plugin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "net1")
            .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=e2e-pod")
            .env("CNI_PATH", CNI_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run podwire-cni");
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("stdout JSON")
        };
        (out.status.code().unwrap_or(-1), v)
    }

    pub fn call(&self, command: &str, cid: &str, netns: &str) -> (i32, Value) {
        self.call_with(command, cid, netns, &json!({}))
    }

    pub fn add(&self, cid: &str, netns: &str) -> Value {
        let (code, v) = self.call("ADD", cid, netns);
        assert_eq!(code, 0, "ADD {cid}: {v}\nplugin log:\n{}", self.log());
        v
    }

    pub fn del(&self, cid: &str) {
        let (code, v) = self.call("DEL", cid, "");
        assert_eq!((code, &v), (0, &Value::Null), "DEL {cid}\nplugin log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("cni.log")).unwrap_or_default()
    }

    /// The network's name (IPAM leases and records are kept per network).
    pub fn network(&self) -> String {
        self.conf["name"].as_str().unwrap_or_default().to_owned()
    }

    /// The addresses host-local has leased on this network (one file each).
    pub fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("ipam").join(self.network()))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many attachments the plugin has recorded on this network.
    pub fn records(&self) -> usize {
        std::fs::read_dir(self.root.join("state/networks").join(self.network()))
            .map(|r| r.count())
            .unwrap_or(0)
    }
}

/// `method path` on the daemon's control socket (curl): (status, body).
pub fn api(root: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--unix-socket"])
        .arg(control_socket(root))
        .arg(format!("http://podwire{path}"));
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
    }
    let out = cmd.output().expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

pub fn daemon_body() -> String {
    let core = podwire::config::allowed_cpus().and_then(|c| c.first().copied()).unwrap_or(0);
    format!("log_level = \"info\"\n[workers]\ncores = [{core}]\n[memory]\nhugepages = false\nbuffers = 8192\n")
}

pub fn port_name(cid: &str) -> String {
    format!("{}-net1", &cid[..12])
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
