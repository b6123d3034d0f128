//! The network configuration on stdin: Intel's userspace-CNI network object with
//! `"engine": "podwire"`, plus the CNI spec's own keys. Parsed once into
//! [`NetConf`]; every value is checked here so the commands work on known-good data.
//!
//! ```json
//! {"cniVersion": "1.1.0", "name": "dpdk-net", "type": "userspace",
//!  "host": {"engine": "podwire", "iftype": "vhostuser", "netType": "bridge",
//!           "vhost": {"mode": "server", "group": "hugetlbfs"},
//!           "bridge": {"bridgeName": "br0", "vlanId": 10}},
//!  "container": {"engine": "podwire", "iftype": "vhostuser", "netType": "interface",
//!                "vhost": {"mode": "client"}},
//!  "sharedDir": "/var/lib/cni/usrspcni", "logFile": "/var/log/podwire-cni.log",
//!  "logLevel": "info", "ipam": {"type": "host-local", "subnet": "10.56.0.0/24"}}
//! ```
//!
//! podwire adds two optional keys: `controlSocket` (the daemon's control socket,
//! default [`DEFAULT_CONTROL_SOCKET`]) and `stateDir` (where the plugin records its
//! attachments, default [`DEFAULT_STATE_DIR`]).

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, CniResult, DECODE_FAILURE};
use crate::version::{self, Version};

/// The daemon's default control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/podwire/podwire.sock";
/// Where the plugin keeps its attachment records and lock.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/podwire";
/// Intel's default shared directory (one sub-directory per container).
pub const DEFAULT_SHARED_DIR: &str = "/var/lib/cni/usrspcni";
/// The bridge used when `netType` is `bridge` and no `bridgeName` is given.
pub const DEFAULT_BRIDGE: &str = "br0";

/// `vhost.mode`: which side listens on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostMode {
    /// Listens (creates the socket file).
    Server,
    /// Connects to a socket the other side created.
    Client,
}

impl VhostMode {
    /// `"server"` or `"client"`.
    pub fn as_str(self) -> &'static str {
        match self {
            VhostMode::Server => "server",
            VhostMode::Client => "client",
        }
    }

    /// The other side's mode.
    pub fn inverse(self) -> VhostMode {
        match self {
            VhostMode::Server => VhostMode::Client,
            VhostMode::Client => VhostMode::Server,
        }
    }
}

/// `netType`: a bridge member or a port on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetType {
    /// The port joins `bridge.bridgeName` (created when missing).
    Bridge,
    /// A port with no bridge (wired up later, e.g. a cross-connect).
    Interface,
}

impl NetType {
    /// `"bridge"` or `"interface"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetType::Bridge => "bridge",
            NetType::Interface => "interface",
        }
    }
}

/// Intel's `vhost` block, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RawVhost {
    /// client | server.
    #[serde(default)]
    pub mode: Option<String>,
    /// Group owning the socket file.
    #[serde(default)]
    pub group: Option<String>,
    /// Socket file name (no directory); default `<cid12>-<ifname>`.
    #[serde(default)]
    pub socketfile: Option<String>,
}

/// Intel's `bridge` block, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RawBridge {
    /// Bridge name.
    #[serde(default, rename = "bridgeName")]
    pub bridge_name: Option<String>,
    /// Deprecated in Intel's plugin in favour of bridgeName; refused here.
    #[serde(default, rename = "bridgeId")]
    pub bridge_id: Option<i64>,
    /// Access VLAN (0 or absent: untagged, VLAN 1 in podwire's bridge).
    #[serde(default, rename = "vlanId")]
    pub vlan_id: Option<i64>,
}

/// Intel's `host` / `container` block, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RawSide {
    /// Engine name.
    #[serde(default)]
    pub engine: Option<String>,
    /// vhostuser | memif.
    #[serde(default)]
    pub iftype: Option<String>,
    /// bridge | interface.
    #[serde(default, rename = "netType")]
    pub net_type: Option<String>,
    /// The vhost block.
    #[serde(default)]
    pub vhost: Option<RawVhost>,
    /// The bridge block.
    #[serde(default)]
    pub bridge: Option<RawBridge>,
    /// The memif block (refused).
    #[serde(default)]
    pub memif: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RawConf {
    #[serde(default, rename = "cniVersion")]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    plugin_type: Option<String>,
    #[serde(default)]
    host: Option<RawSide>,
    #[serde(default)]
    container: Option<RawSide>,
    #[serde(default, rename = "sharedDir")]
    shared_dir: Option<String>,
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default, rename = "logFile")]
    log_file: Option<String>,
    #[serde(default, rename = "logLevel")]
    log_level: Option<String>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default, rename = "controlSocket")]
    control_socket: Option<String>,
    #[serde(default, rename = "stateDir")]
    state_dir: Option<String>,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<Value>,
    #[serde(default, rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
}

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ValidAttachment {
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// Log verbosity (`logLevel`), Intel's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// And warnings.
    Warning,
    /// And one line per command.
    Info,
    /// And every step.
    Debug,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// `cniVersion` as written (one of [`version::SUPPORTED`]).
    pub cni_version: String,
    /// Parsed `cniVersion`.
    pub version: Version,
    /// Network name.
    pub name: String,
    /// How podwire's port listens.
    pub host_mode: VhostMode,
    /// The container side's mode (the inverse of `host_mode` unless given).
    pub container_mode: VhostMode,
    /// Group of the socket file.
    pub group: Option<String>,
    /// Socket file name override.
    pub socketfile: Option<String>,
    /// Bridge or interface.
    pub net_type: NetType,
    /// Bridge name (for [`NetType::Bridge`]).
    pub bridge: Option<String>,
    /// Access VLAN (1..=4094) or none.
    pub vlan: Option<u16>,
    /// Base shared directory.
    pub shared_dir: PathBuf,
    /// Kubeconfig path, when the pod annotation is to be written.
    pub kubeconfig: Option<PathBuf>,
    /// Log file.
    pub log_file: Option<PathBuf>,
    /// Log level.
    pub log_level: LogLevel,
    /// The IPAM block (with a checked `type`).
    pub ipam: Option<Value>,
    /// The daemon's control socket.
    pub control_socket: PathBuf,
    /// Where attachment records live.
    pub state_dir: PathBuf,
    /// `runtimeConfig.CNIDeviceInfoFile` (Multus' device-info path).
    pub device_info_file: Option<PathBuf>,
    /// `prevResult` (CHECK, DEL).
    pub prev_result: Option<Value>,
    /// GC's valid attachments.
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// The `container` block as written, for the configData file.
    pub container_raw: RawSide,
    /// The whole configuration as received (delegated to IPAM unchanged).
    pub raw: Value,
}

fn str_field(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Reads the `cniVersion` of `stdin` when it is JSON, for error messages; the
/// current version otherwise.
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
        .filter(|s| version::supported(s).is_ok())
        .unwrap_or_else(|| version::CURRENT.to_string())
}

impl NetConf {
    /// Parses and checks the configuration on stdin.
    pub fn parse(stdin: &[u8]) -> CniResult<NetConf> {
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(DECODE_FAILURE, format!("the network configuration is not JSON: {e}"))
        })?;
        if !raw.is_object() {
            return Err(CniError::new(
                DECODE_FAILURE,
                "the network configuration is not a JSON object",
            ));
        }
        let rc: RawConf = serde_json::from_value(raw.clone()).map_err(|e| {
            CniError::new(DECODE_FAILURE, format!("the network configuration has a bad value: {e}"))
        })?;
        // Old configurations without cniVersion mean 0.1.0, which is not spoken here.
        let cni_version = rc.cni_version.clone().unwrap_or_else(|| "0.1.0".to_string());
        let version = version::supported(&cni_version)?;

        let name = str_field(&rc.name)
            .ok_or_else(|| CniError::config("\"name\" (the network name) is required"))?
            .to_string();
        if name.len() > 128 || name.contains('/') || name.contains('\0') || name.starts_with('.') {
            return Err(CniError::config(format!(
                "network name {name:?} must be at most 128 bytes, without '/' and not start with '.'"
            )));
        }
        match str_field(&rc.plugin_type) {
            Some("podwire") | Some("userspace") => {}
            Some(t) => {
                return Err(CniError::unsupported(
                    "type",
                    t,
                    "this plugin is \"podwire\" (or \"userspace\")",
                ))
            }
            None => return Err(CniError::config("\"type\" is required")),
        }

        let host = rc.host.clone().unwrap_or_default();
        match str_field(&host.engine) {
            Some("podwire") => {}
            Some(e) => {
                return Err(CniError::unsupported(
                    "host.engine",
                    e,
                    "podwire-cni drives the podwire engine only; set \"engine\": \"podwire\"",
                ))
            }
            None => return Err(CniError::config("host.engine is required: set it to \"podwire\"")),
        }
        let iftype = str_field(&host.iftype).unwrap_or("vhostuser");
        check_iftype("host.iftype", iftype)?;
        if host.memif.is_some() {
            return Err(CniError::unsupported("host.memif", "{...}", "memif is not supported yet"));
        }
        let vhost = host.vhost.clone().unwrap_or_default();
        let host_mode =
            parse_mode("host.vhost.mode", str_field(&vhost.mode))?.unwrap_or(VhostMode::Server);
        let group = str_field(&vhost.group).map(str::to_string);
        if let Some(g) = &group {
            if !g.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
                return Err(CniError::config(format!(
                    "host.vhost.group {g:?} is not a group name"
                )));
            }
        }
        let socketfile = str_field(&vhost.socketfile).map(str::to_string);
        if let Some(f) = &socketfile {
            if f.contains('/') || f == "." || f == ".." || f.len() > 64 {
                return Err(CniError::config(format!(
                    "host.vhost.socketfile {f:?} must be a file name (no '/', at most 64 bytes)"
                )));
            }
        }
        let bridge_raw = host.bridge.clone().unwrap_or_default();
        if bridge_raw.bridge_id.is_some() && str_field(&bridge_raw.bridge_name).is_none() {
            return Err(CniError::unsupported(
                "host.bridge.bridgeId",
                &bridge_raw.bridge_id.unwrap_or_default().to_string(),
                "use bridgeName (bridgeId is deprecated in the userspace CNI too)",
            ));
        }
        let net_type = match str_field(&host.net_type) {
            Some("bridge") => NetType::Bridge,
            Some("interface") => NetType::Interface,
            Some(t) => {
                return Err(CniError::unsupported(
                    "host.netType",
                    t,
                    "use \"bridge\" or \"interface\"",
                ))
            }
            None if str_field(&bridge_raw.bridge_name).is_some() => NetType::Bridge,
            None => NetType::Interface,
        };
        let vlan = match bridge_raw.vlan_id {
            None | Some(0) => None,
            Some(v @ 1..=4094) => Some(v as u16),
            Some(v) => {
                return Err(CniError::config(format!("host.bridge.vlanId {v} is outside 1..=4094")))
            }
        };
        let bridge = match net_type {
            NetType::Bridge => {
                let b = str_field(&bridge_raw.bridge_name).unwrap_or(DEFAULT_BRIDGE).to_string();
                if b.len() > 64
                    || !b.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
                {
                    return Err(CniError::config(format!(
                        "host.bridge.bridgeName {b:?}: letters, digits, '-', '_', '.', at most 64"
                    )));
                }
                Some(b)
            }
            NetType::Interface => {
                if vlan.is_some() {
                    return Err(CniError::config(
                        "host.bridge.vlanId needs netType \"bridge\" (an interface port has no VLAN)",
                    ));
                }
                None
            }
        };

        let container_raw = rc.container.clone().unwrap_or_default();
        if let Some(t) = str_field(&container_raw.iftype) {
            check_iftype("container.iftype", t)?;
        }
        if let Some(t) = str_field(&container_raw.net_type) {
            if !matches!(t, "bridge" | "interface" | "none") {
                return Err(CniError::unsupported("container.netType", t, "use \"interface\""));
            }
        }
        let cvhost = container_raw.vhost.clone().unwrap_or_default();
        let container_mode = parse_mode("container.vhost.mode", str_field(&cvhost.mode))?
            .unwrap_or(host_mode.inverse());
        if container_mode == host_mode {
            return Err(CniError::config(format!(
                "host.vhost.mode and container.vhost.mode are both {:?}: one side must listen and the other connect",
                host_mode.as_str()
            )));
        }

        let shared_dir =
            abs_path("sharedDir", str_field(&rc.shared_dir).unwrap_or(DEFAULT_SHARED_DIR))?;
        let kubeconfig =
            str_field(&rc.kubeconfig).map(|p| abs_path("kubeconfig", p)).transpose()?;
        let log_file = str_field(&rc.log_file).map(|p| abs_path("logFile", p)).transpose()?;
        let log_level = match str_field(&rc.log_level).unwrap_or("info") {
            "panic" | "error" => LogLevel::Error,
            "warning" | "warn" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" | "verbose" => LogLevel::Debug,
            l => {
                return Err(CniError::unsupported(
                    "logLevel",
                    l,
                    "use error, warning, info, debug (or panic, verbose)",
                ))
            }
        };
        if let Some(ipam) = &rc.ipam {
            match ipam.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() && !t.contains('/') && t != "." && t != ".." => {}
                _ => {
                    return Err(CniError::config(
                        "ipam.type must name a plugin in CNI_PATH (e.g. \"host-local\")",
                    ))
                }
            }
        }
        let control_socket = abs_path(
            "controlSocket",
            str_field(&rc.control_socket).unwrap_or(DEFAULT_CONTROL_SOCKET),
        )?;
        let state_dir =
            abs_path("stateDir", str_field(&rc.state_dir).unwrap_or(DEFAULT_STATE_DIR))?;
        let device_info_file = rc
            .runtime_config
            .as_ref()
            .and_then(|r| r.get("CNIDeviceInfoFile"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|p| abs_path("runtimeConfig.CNIDeviceInfoFile", p))
            .transpose()?;

        Ok(NetConf {
            cni_version,
            version,
            name,
            host_mode,
            container_mode,
            group,
            socketfile,
            net_type,
            bridge,
            vlan,
            shared_dir,
            kubeconfig,
            log_file,
            log_level,
            ipam: rc.ipam,
            control_socket,
            state_dir,
            device_info_file,
            prev_result: rc.prev_result,
            valid_attachments: rc.valid_attachments,
            container_raw,
            raw,
        })
    }
}

fn check_iftype(field: &str, t: &str) -> CniResult<()> {
    match t {
        "vhostuser" => Ok(()),
        "memif" => {
            Err(CniError::unsupported(field, t, "memif is not supported yet; use \"vhostuser\""))
        }
        _ => Err(CniError::unsupported(field, t, "use \"vhostuser\"")),
    }
}

fn parse_mode(field: &str, m: Option<&str>) -> CniResult<Option<VhostMode>> {
    match m {
        None => Ok(None),
        Some("server") => Ok(Some(VhostMode::Server)),
        Some("client") => Ok(Some(VhostMode::Client)),
        Some(m) => Err(CniError::unsupported(field, m, "use \"client\" or \"server\"")),
    }
}

fn abs_path(field: &str, p: &str) -> CniResult<PathBuf> {
    if !p.starts_with('/') || p.contains('\0') {
        return Err(CniError::config(format!("{field} {p:?} must be an absolute path")));
    }
    Ok(PathBuf::from(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INTEL: &str = r#"{
      "cniVersion": "0.4.0", "type": "userspace", "name": "userspace-net-1",
      "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
      "logFile": "/var/log/userspace-net-1-cni.log", "logLevel": "debug",
      "sharedDir": "/var/lib/cni/usrspcni",
      "host": {"engine": "podwire", "iftype": "vhostuser", "netType": "bridge",
               "vhost": {"mode": "client"}, "bridge": {"bridgeName": "br-4", "vlanId": 20}},
      "container": {"engine": "podwire", "iftype": "vhostuser", "netType": "interface",
                    "vhost": {"mode": "server"}},
      "ipam": {"type": "host-local", "subnet": "10.56.217.0/24",
               "routes": [{"dst": "0.0.0.0/0"}], "gateway": "10.56.217.1"}
    }"#;

    #[test]
    fn intel_network_object_with_engine_podwire() {
        let c = NetConf::parse(INTEL.as_bytes()).unwrap();
        assert_eq!(c.name, "userspace-net-1");
        assert_eq!(c.host_mode, VhostMode::Client);
        assert_eq!(c.container_mode, VhostMode::Server);
        assert_eq!(c.net_type, NetType::Bridge);
        assert_eq!(c.bridge.as_deref(), Some("br-4"));
        assert_eq!(c.vlan, Some(20));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.shared_dir, PathBuf::from(DEFAULT_SHARED_DIR));
        assert_eq!(c.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    }

    #[test]
    fn defaults_for_a_minimal_object() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"podwire","host":{"engine":"podwire"}}"#,
        )
        .unwrap();
        assert_eq!(c.host_mode, VhostMode::Server);
        assert_eq!(c.container_mode, VhostMode::Client);
        assert_eq!(c.net_type, NetType::Interface);
        assert_eq!(c.bridge, None);
        let b = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"podwire","host":{"engine":"podwire","netType":"bridge"}}"#,
        )
        .unwrap();
        assert_eq!(b.bridge.as_deref(), Some(DEFAULT_BRIDGE));
    }

    fn code_of(json: &str) -> (u32, String) {
        let e = NetConf::parse(json.as_bytes()).unwrap_err();
        (e.code, e.msg)
    }

    #[test]
    fn each_bad_value_gets_its_code_and_names_the_field() {
        let base: Value = serde_json::from_str(INTEL).unwrap();
        let cases: &[(&str, Value, u32, &str)] = &[
            ("/cniVersion", Value::from("0.2.0"), 1, "cniVersion"),
            ("/cniVersion", Value::from("9.9.9"), 1, "cniVersion"),
            ("/name", Value::from(""), 7, "name"),
            ("/type", Value::from("bridge"), 2, "type"),
            ("/host/engine", Value::from("ovs-dpdk"), 2, "host.engine"),
            ("/host/engine", Value::from("vpp"), 2, "vpp"),
            ("/host/iftype", Value::from("memif"), 2, "memif"),
            ("/host/iftype", Value::from("tap"), 2, "host.iftype"),
            ("/host/netType", Value::from("none"), 2, "host.netType"),
            ("/host/vhost/mode", Value::from("both"), 2, "host.vhost.mode"),
            ("/host/bridge/vlanId", Value::from(4095), 7, "vlanId"),
            ("/host/bridge/vlanId", Value::from(-1), 7, "vlanId"),
            ("/host/bridge/bridgeName", Value::from("a b"), 7, "bridgeName"),
            ("/container/iftype", Value::from("memif"), 2, "container.iftype"),
            ("/container/vhost/mode", Value::from("client"), 7, "both"),
            ("/sharedDir", Value::from("relative/dir"), 7, "sharedDir"),
            ("/logLevel", Value::from("loud"), 2, "logLevel"),
            ("/ipam/type", Value::from("../evil"), 7, "ipam.type"),
            ("/host/vhost/mode", Value::from(5), 6, "bad value"),
        ];
        for (ptr, value, code, needle) in cases {
            let mut v = base.clone();
            *v.pointer_mut(ptr).unwrap_or_else(|| panic!("{ptr}")) = value.clone();
            let (c, msg) = code_of(&v.to_string());
            assert_eq!(c, *code, "{ptr}={value}: {msg}");
            assert!(msg.contains(needle), "{ptr}={value}: {msg}");
        }
        assert_eq!(code_of("{not json").0, 6);
        assert_eq!(code_of("[1,2]").0, 6);
        assert_eq!(code_of(r#"{"name":"n","type":"podwire"}"#).0, 1, "no cniVersion = 0.1.0");
        let mut no_engine = base.clone();
        no_engine["host"].as_object_mut().unwrap().remove("engine");
        assert_eq!(code_of(&no_engine.to_string()).0, 7);
        let mut iface_vlan = base.clone();
        iface_vlan["host"]["netType"] = Value::from("interface");
        assert!(code_of(&iface_vlan.to_string()).1.contains("vlanId"));
    }

    #[test]
    fn runtime_config_device_info_and_gc_list() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"podwire","host":{"engine":"podwire"},
                "runtimeConfig":{"CNIDeviceInfoFile":"/var/run/k8s.cni.cncf.io/devinfo/cni/x.json"},
                "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"net1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.device_info_file.as_deref(),
            Some(std::path::Path::new("/var/run/k8s.cni.cncf.io/devinfo/cni/x.json"))
        );
        assert_eq!(
            c.valid_attachments,
            Some(vec![ValidAttachment { container_id: "abc".into(), ifname: "net1".into() }])
        );
    }

    #[test]
    fn hostile_input_is_an_error_never_a_panic() {
        let base: Value = serde_json::from_str(INTEL).unwrap();
        let weird = [
            Value::Null,
            json!(true),
            json!(-1),
            json!(1e308),
            json!(u64::MAX),
            json!("\u{0}"),
            json!("x".repeat(100_000)),
            json!([]),
            json!([[[[]]]]),
            json!({}),
            json!({"type": {"x": 1}}),
        ];
        let keys = [
            "/cniVersion",
            "/name",
            "/type",
            "/host",
            "/host/engine",
            "/host/iftype",
            "/host/netType",
            "/host/vhost",
            "/host/vhost/mode",
            "/host/vhost/group",
            "/host/bridge",
            "/host/bridge/vlanId",
            "/host/bridge/bridgeName",
            "/container",
            "/container/vhost",
            "/sharedDir",
            "/kubeconfig",
            "/logLevel",
            "/ipam",
            "/ipam/type",
        ];
        let mut errors = 0;
        for k in keys {
            for w in &weird {
                let mut v = base.clone();
                let (parent, key) = k.rsplit_once('/').unwrap();
                v.pointer_mut(parent)
                    .and_then(Value::as_object_mut)
                    .unwrap()
                    .insert(key.into(), w.clone());
                if NetConf::parse(v.to_string().as_bytes()).is_err() {
                    errors += 1;
                }
            }
        }
        assert!(errors > keys.len() * 5, "most of these are refused ({errors})");
        for raw in
            [&b"\xff\xfe"[..], b"", b"{", b"{\"cniVersion\":", b"nul\0l", &[b'['; 10_000][..]]
        {
            assert!(NetConf::parse(raw).is_err());
        }
    }

    #[test]
    fn version_of_falls_back_to_current() {
        assert_eq!(version_of(b"{\"cniVersion\":\"0.4.0\"}"), "0.4.0");
        assert_eq!(version_of(b"garbage"), version::CURRENT);
        assert_eq!(version_of(b"{\"cniVersion\":\"0.1.0\"}"), version::CURRENT);
    }
}
