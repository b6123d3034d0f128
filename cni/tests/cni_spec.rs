//! The plugin as a runtime drives it (env vars, config on stdin, result or error on
//! stdout, exit status) with the real `host-local` IPAM plugin from Debian's
//! containernetworking-plugins: every spec error case gives its code and leaves
//! nothing behind (no record, no socket directory, no IPAM lease), a failed ADD
//! releases its lease, DEL is idempotent, STATUS says 50 without a daemon.
//! The cases that need the daemon's runtime-port API are in tests/cni_e2e.rs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const PLUGIN: &str = env!("CARGO_BIN_EXE_podwire-cni");
const CNI_DIR: &str = "/usr/lib/cni";

fn require_host_local() {
    assert!(
        Path::new(CNI_DIR).join("host-local").is_file(),
        "/usr/lib/cni/host-local is missing: run scripts/install-deps.sh (apt-get install containernetworking-plugins)"
    );
}

/// A private root for one test: shared dir, state dir, host-local's data dir.
struct Sandbox {
    root: PathBuf,
    subnet: String,
}

impl Sandbox {
    fn new(tag: &str) -> Sandbox {
        require_host_local();
        let root = std::env::temp_dir().join(format!("podwire-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        // A subnet per test process; no traffic ever uses it.
        let n = std::process::id() % 200 + 20;
        Sandbox { root, subnet: format!("10.213.{n}.0/24") }
    }

    fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }
    fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    fn leases(&self) -> PathBuf {
        self.root.join("ipam")
    }

    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "spec-net",
            "type": "podwire",
            "host": {"engine": "podwire", "iftype": "vhostuser", "netType": "bridge",
                     "vhost": {"mode": "server"}, "bridge": {"bridgeName": "br-spec", "vlanId": 10}},
            "container": {"engine": "podwire", "iftype": "vhostuser", "netType": "interface"},
            "sharedDir": self.shared(),
            "stateDir": self.state(),
            "controlSocket": self.root.join("no-daemon.sock"),
            "logFile": self.root.join("cni.log"),
            "logLevel": "debug",
            "runtimeConfig": {"CNIDeviceInfoFile": self.root.join("devinfo.json")},
            "ipam": {"type": "host-local", "subnet": self.subnet, "dataDir": self.leases()}
        })
    }

    /// The leases host-local holds (files named after an address).
    fn leases_held(&self) -> Vec<String> {
        let dir = self.leases().join("spec-net");
        let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// Everything the plugin could have left: records, socket dirs, device-info.
    fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.leases_held(), Vec::<String>::new(), "{what}: IPAM lease left");
        let shared: Vec<_> = std::fs::read_dir(self.shared())
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(shared.is_empty(), "{what}: left in the shared dir: {shared:?}");
        let records: Vec<_> = std::fs::read_dir(self.state().join("networks/spec-net"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(records.is_empty(), "{what}: records left: {records:?}");
        assert!(!self.root.join("devinfo.json").exists(), "{what}: device-info file left");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for a look; cni.log is the plugin's log)", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// One invocation: (exit code, stdout as JSON or Null).
fn run(env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    let mut cmd = Command::new(PLUGIN);
    cmd.env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run podwire-cni");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text:?}"))
    };
    (out.status.code().unwrap_or(-1), v)
}

fn env_for<'a>(command: &'a str, cid: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "net1"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=spec"),
        ("CNI_PATH", CNI_DIR),
    ]
}

fn assert_error(got: &(i32, Value), code: u64, needle: &str, what: &str) {
    assert_ne!(got.0, 0, "{what}: exit status 0 for an error: {}", got.1);
    assert_eq!(got.1["code"].as_u64(), Some(code), "{what}: {}", got.1);
    let msg = got.1["msg"].as_str().unwrap_or("");
    assert!(msg.contains(needle), "{what}: msg {msg:?} lacks {needle:?}");
    assert!(got.1["cniVersion"].is_string(), "{what}: no cniVersion in {}", got.1);
}

#[test]
fn version_lists_the_spoken_versions() {
    let (code, v) = run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(code, 0);
    assert_eq!(v["cniVersion"], "1.1.0");
    let list: Vec<&str> =
        v["supportedVersions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for want in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(list.contains(&want), "{list:?}");
    }
}

#[test]
fn each_bad_environment_variable_is_error_4_and_leaves_nothing() {
    let sb = Sandbox::new("env");
    let conf = sb.conf("1.1.0").to_string();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("CNI_COMMAND", None, "CNI_COMMAND"),
        ("CNI_COMMAND", Some("ATTACH"), "ATTACH"),
        ("CNI_CONTAINERID", None, "CNI_CONTAINERID"),
        ("CNI_CONTAINERID", Some("../../etc"), "CNI_CONTAINERID"),
        ("CNI_NETNS", None, "CNI_NETNS"),
        ("CNI_IFNAME", None, "CNI_IFNAME"),
        ("CNI_IFNAME", Some("eth0/../x"), "CNI_IFNAME"),
        ("CNI_IFNAME", Some("sixteen-bytes-xx"), "CNI_IFNAME"),
        ("CNI_ARGS", Some("K8S_POD_NAME"), "CNI_ARGS"),
        ("CNI_PATH", None, "CNI_PATH"),
    ];
    for (key, value, needle) in cases {
        let mut env: Vec<(&str, &str)> =
            env_for("ADD", "envcase0000001").into_iter().filter(|(k, _)| k != key).collect();
        if let Some(v) = value {
            env.push((key, v));
        }
        assert_error(&run(&env, &conf), 4, needle, &format!("{key}={value:?}"));
        sb.assert_nothing_left(&format!("{key}={value:?}"));
    }
}

#[test]
fn bad_configurations_get_their_codes_and_leave_nothing() {
    let sb = Sandbox::new("conf");
    let base = sb.conf("1.1.0");
    let with = |ptr: &str, v: Value| {
        let mut c = base.clone();
        *c.pointer_mut(ptr).unwrap() = v;
        c.to_string()
    };
    let cases: Vec<(String, u64, &str, &str)> = vec![
        ("{\"cniVersion\": \"1.1.0\", ".to_string(), 6, "not JSON", "truncated JSON"),
        ("not json at all".to_string(), 6, "not JSON", "garbage"),
        (with("/cniVersion", json!("0.2.0")), 1, "0.2.0", "old version"),
        (with("/cniVersion", json!("2.0.0")), 1, "2.0.0", "future version"),
        (with("/host/engine", json!("ovs-dpdk")), 2, "host.engine", "other engine"),
        (with("/host/iftype", json!("memif")), 2, "memif", "memif"),
        (with("/host/netType", json!("l3")), 2, "host.netType", "netType"),
        (with("/host/vhost/mode", json!("duplex")), 2, "host.vhost.mode", "vhost mode"),
        (with("/host/bridge/vlanId", json!(5000)), 7, "vlanId", "vlan"),
        (with("/name", json!("")), 7, "name", "no name"),
        (with("/sharedDir", json!("relative")), 7, "sharedDir", "relative sharedDir"),
    ];
    for (stdin, code, needle, what) in &cases {
        assert_error(&run(&env_for("ADD", "confcase000001"), stdin), *code, needle, what);
        sb.assert_nothing_left(what);
    }
}

#[test]
fn ipam_failures_are_reported_and_rolled_back() {
    let sb = Sandbox::new("ipam");
    // host-local refuses a subnet that is not a CIDR: its own error comes back.
    let mut bad = sb.conf("1.0.0");
    bad["ipam"]["subnet"] = json!("10.0.0.0/99");
    let got = run(&env_for("ADD", "ipamcase000001"), &bad.to_string());
    assert_ne!(got.0, 0);
    assert!(got.1["msg"].as_str().unwrap_or("").contains("IPAM host-local ADD"), "{}", got.1);
    sb.assert_nothing_left("bad subnet");
    // An IPAM plugin that is not in CNI_PATH is an I/O error naming the package.
    let mut missing = sb.conf("1.1.0");
    missing["ipam"]["type"] = json!("no-such-ipam");
    assert_error(
        &run(&env_for("ADD", "ipamcase000002"), &missing.to_string()),
        5,
        "no-such-ipam",
        "missing IPAM",
    );
    sb.assert_nothing_left("missing IPAM");
}

#[test]
fn add_without_daemon_is_try_again_and_releases_the_lease() {
    let sb = Sandbox::new("nodaemon");
    for version in ["1.1.0", "1.0.0", "0.4.0"] {
        let got = run(&env_for("ADD", "nodaemon00000001"), &sb.conf(version).to_string());
        assert_error(&got, 11, "not reachable", version);
        assert_eq!(got.1["cniVersion"], version, "the error comes in the config's version");
        sb.assert_nothing_left(version);
    }
    let log = std::fs::read_to_string(sb.root.join("cni.log")).unwrap();
    assert!(log.contains("undoing"), "the log says the ADD was undone: {log}");
}

#[test]
fn add_for_a_missing_netns_is_error_3() {
    let sb = Sandbox::new("netns");
    let mut env = env_for("ADD", "netnscase00001");
    env[2] = ("CNI_NETNS", "/var/run/netns/podwire-cni-no-such-ns");
    assert_error(&run(&env, &sb.conf("1.1.0").to_string()), 3, "does not exist", "missing netns");
    sb.assert_nothing_left("missing netns");
}

#[test]
fn del_is_idempotent_and_releases_a_lease_without_a_daemon() {
    let sb = Sandbox::new("del");
    let conf = sb.conf("1.1.0");
    // Nothing was ever added: DEL succeeds, twice.
    for _ in 0..2 {
        let got = run(&env_for("DEL", "delcase0000001"), &conf.to_string());
        assert_eq!(got, (0, Value::Null));
    }
    // A lease taken straight from host-local (as a crashed ADD would leave it) is
    // released by DEL even though the daemon is down.
    let mut hl = Command::new(Path::new(CNI_DIR).join("host-local"));
    hl.env_clear().stdin(Stdio::piped()).stdout(Stdio::piped());
    for (k, v) in env_for("ADD", "delcase0000002") {
        hl.env(k, v);
    }
    let mut ipam_conf = conf.clone();
    ipam_conf["cniVersion"] = json!("1.0.0");
    let mut child = hl.spawn().unwrap();
    child.stdin.take().unwrap().write_all(ipam_conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "host-local ADD: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(sb.leases_held().len(), 1);
    let mut env = env_for("DEL", "delcase0000002");
    env.retain(|(k, _)| *k != "CNI_NETNS");
    assert_eq!(run(&env, &conf.to_string()), (0, Value::Null));
    sb.assert_nothing_left("DEL of a leftover lease");
}

#[test]
fn status_gc_and_check_version_rules() {
    let sb = Sandbox::new("status");
    let path_only = [("CNI_PATH", CNI_DIR)];
    let mut env = vec![("CNI_COMMAND", "STATUS")];
    env.extend(path_only);
    assert_error(
        &run(&env, &sb.conf("1.1.0").to_string()),
        50,
        "not reachable",
        "STATUS without daemon",
    );
    assert_error(&run(&env, &sb.conf("1.0.0").to_string()), 1, "1.1.0", "STATUS on 1.0.0");
    let mut gc = vec![("CNI_COMMAND", "GC")];
    gc.extend(path_only);
    assert_error(&run(&gc, &sb.conf("1.0.0").to_string()), 1, "1.1.0", "GC on 1.0.0");
    assert_error(
        &run(&gc, &sb.conf("1.1.0").to_string()),
        7,
        "valid-attachments",
        "GC without list",
    );
    let mut empty = sb.conf("1.1.0");
    empty["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(run(&gc, &empty.to_string()), (0, Value::Null), "GC with nothing recorded");
    let mut check = sb.conf("0.3.1");
    check["prevResult"] = json!({"cniVersion": "0.3.1", "interfaces": []});
    assert_error(
        &run(&env_for("CHECK", "checkcase00001"), &check.to_string()),
        1,
        "0.4.0",
        "CHECK on 0.3.1",
    );
    assert_error(
        &run(&env_for("CHECK", "checkcase00001"), &sb.conf("1.1.0").to_string()),
        7,
        "prevResult",
        "CHECK without prevResult",
    );
    let mut prev = sb.conf("1.1.0");
    prev["prevResult"] = json!({"cniVersion": "1.1.0", "interfaces": []});
    assert_error(
        &run(&env_for("CHECK", "checkcase00001"), &prev.to_string()),
        100,
        "not attached",
        "CHECK of nothing",
    );
    sb.assert_nothing_left("STATUS/GC/CHECK");
}

#[test]
fn help_and_version_flags() {
    let out = Command::new(PLUGIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CNI_COMMAND") && text.contains("engine"), "{text}");
}
