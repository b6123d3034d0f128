//! The daemon's configuration file: TOML, read once at start and validated completely
//! before anything is built.
//!
//! ```toml
//! control_socket = "/run/podwire/podwire.sock"   # optional, this is the default
//! state_file = "/run/podwire/podwire.state.json" # optional: what the control API
//!                                                # made, replayed at start; default:
//!                                                # next to control_socket; "" = none
//! log_level = "info,podwire_vhost=debug"         # optional: LEVEL and TARGET=LEVEL
//!                                                # directives; RUST_LOG overrides it
//! metrics_listen = "127.0.0.1:9100"              # optional: GET /metrics over TCP
//!                                                # (loopback addresses only)
//! [memory]
//! buffers = 16384                                # packet buffers in the mempool
//! hugepages = true                               # false: ordinary locked pages
//! buffer_size = 2048                             # bytes of packet data per buffer
//!                                                # (9216 for 9000-byte jumbo frames)
//! [workers]
//! cores = [0]                                    # one pinned poll-mode thread per core
//! [[ports]]
//! name = "a"
//! type = "vhost-user"
//! socket = "/tmp/a.sock"
//! mode = "server"                                # or "client"
//! queues = 1                                     # 1..=16
//! mac = "02:00:00:00:00:01"                      # optional
//! socket_perms = "0660"                          # optional (string or 0o660)
//! socket_group = "kvm"                           # optional
//! [[ports]]
//! name = "uplink"
//! type = "af-xdp"
//! interface = "eth1"                             # a kernel netdev
//! queues = 2                                     # queues 0..2, one AF_XDP socket each
//! xdp_mode = "auto"                              # auto | native | generic
//! zero_copy = "auto"                             # auto | on | off
//! replace_program = false                        # true: replace a foreign XDP program
//! [[ports]]
//! name = "vf0"
//! type = "vfio"                                  # a NIC function owned through VFIO
//! pci = "0000:01:10.0"                           # bound with `podwire pci bind`
//! queues = 1                                     # optional: 1..=2 for igbvf; virtio: MQ
//! mac = "02:00:00:00:00:02"                      # optional; default: the PF's
//! ring_size = 512                                # optional, descriptors per ring
//! [[xconnect]]
//! ports = ["a", "b"]
//! [[bridge]]                                     # an L2 bridge (ports in no xconnect)
//! name = "br0"
//! ports = ["p1", "p2", "uplink2"]
//! mac_age_secs = 300                             # optional, default 300
//! mac_table_size = 8192                          # optional, most MAC entries
//! [limits]
//! max_ports = 256                                # optional: most ports (file + API)
//! ```
//!
//! A bridge port may also say `vlan = 10` (access port: untagged frames in VLAN 10;
//! VLAN 1 when absent) or `trunk = [10, 20]` (802.1Q-tagged frames of these VLANs).
//!
//! Every mistake is reported as one line that names the file, the key and the reason.
//! Untrusted input: nothing here panics on any file content.
//!
//! The control API checks its requests with the same code ([`port_from_json`],
//! [`vlan_from_json`], [`bridge_from_request`]): a `POST /ports` body is a `[[ports]]`
//! table in JSON, and its errors name the request's field (`socket`) where the file's
//! name the key (`ports[0].socket`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::bridge::table::MAX_TABLE_SIZE;
use crate::bridge::vlan::MAX_VLAN_ID;
use crate::bridge::{BridgeSpec, VlanMode, DEFAULT_MAC_AGE_SECS, DEFAULT_MAC_TABLE_SIZE};
use podwire_driver::nic::{VfioPortConfig, DEFAULT_RING_SIZE};
use podwire_driver::pci::PciAddress;
use podwire_driver::xdp::{XdpMode, ZeroCopy};
use podwire_driver::MacAddr;
use podwire_vhost::{SocketMode, VhostUserConfig};
use serde::Deserialize;

/// Where the control socket lives unless the config says otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/podwire/podwire.sock";
/// Packet buffers in the mempool unless the config says otherwise.
pub const DEFAULT_BUFFERS: u32 = 16384;
/// Fewest packet buffers accepted (each worker's cache alone holds hundreds).
pub const MIN_BUFFERS: u32 = 1024;
/// Most packet buffers accepted (the pool's memory must stay below 4 GiB).
pub const MAX_BUFFERS: u32 = 1 << 20;
/// Bytes of packet data per buffer unless the config says otherwise.
pub const DEFAULT_BUFFER_SIZE: u32 = 2048;
/// Smallest buffer accepted (a full 1514-byte frame must fit).
pub const MIN_BUFFER_SIZE: u32 = 1536;
/// Largest buffer accepted (9000-byte jumbo frames and their headers fit).
pub const MAX_BUFFER_SIZE: u32 = 16384;
/// Most queue pairs of a vhost-user port.
pub const MAX_QUEUES: u16 = 16;
/// Most queues of an AF_XDP port.
pub const MAX_XDP_QUEUES: u16 = 64;
/// Longest unix socket path: `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest port name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest MAC age accepted (11.5 days).
pub const MAX_MAC_AGE_SECS: i64 = 1_000_000;
/// Most ports unless `[limits] max_ports` says otherwise.
pub const DEFAULT_MAX_PORTS: usize = 256;
/// Largest `[limits] max_ports` accepted.
pub const MAX_MAX_PORTS: usize = 4096;
/// Largest config file read (a config is a few hundred bytes; this bounds a mistake).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a config was rejected. Its `Display` is always exactly one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {reason}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{path}: {location}{message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// "line L, column C: " when known, else empty.
        location: String,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value is wrong.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The key at fault, e.g. `ports[1].queues` or `xconnect[0].ports`.
        key: String,
        /// Why it is wrong.
        reason: String,
    },
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Path of the control socket (`podwire stats` talks to it).
    pub control_socket: PathBuf,
    /// Where the ports, bridges and cross-connects made through the control API are
    /// kept across restarts (`None`: nowhere). See [`crate::switch::state_file`].
    pub state_file: Option<PathBuf>,
    /// Log filter from the config (`RUST_LOG` overrides it).
    pub log_level: Option<String>,
    /// Loopback address on which `GET /metrics` is also served over TCP.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Packet memory.
    pub memory: MemoryConfig,
    /// Worker threads.
    pub workers: WorkersConfig,
    /// Ports, in config order.
    pub ports: Vec<PortConfig>,
    /// Cross-connects, as indices into `ports`.
    pub xconnects: Vec<XconnectConfig>,
    /// L2 bridges, their ports as indices into `ports`.
    pub bridges: Vec<BridgeSpec>,
    /// Caps on what the control API may create.
    pub limits: Limits,
}

/// Caps (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most ports in all, from the file and the control API together.
    pub max_ports: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_ports: DEFAULT_MAX_PORTS }
    }
}

/// The mempool shared by every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Number of packet buffers.
    pub buffers: u32,
    /// Hugepage memory (true) or ordinary locked pages (false, explicit opt-in).
    pub hugepages: bool,
    /// Bytes of packet data per buffer: the largest frame podwire forwards.
    pub buffer_size: u32,
}

/// The poll-mode worker threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkersConfig {
    /// CPU cores, one pinned worker each, in config order.
    pub cores: Vec<usize>,
}

/// One port.
#[derive(Debug, Clone, PartialEq)]
pub struct PortConfig {
    /// Unique name.
    pub name: String,
    /// What kind of port, with its settings.
    pub kind: PortKind,
}

/// Port types that are implemented.
#[derive(Debug, Clone, PartialEq)]
pub enum PortKind {
    /// A vhost-user-net port, with the settings it is created with (its `name` is
    /// the port's).
    VhostUser(VhostUserConfig),
    /// A NIC function owned through VFIO; the driver is chosen by vendor:device.
    Vfio(VfioPortConfig),
    /// An AF_XDP port on a kernel interface.
    AfXdp(AfXdpPortConfig),
}

/// Settings of an AF_XDP port.
#[derive(Debug, Clone, PartialEq)]
pub struct AfXdpPortConfig {
    /// Kernel interface name.
    pub interface: String,
    /// Queues taken (0..queues).
    pub queues: u16,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Zero-copy request.
    pub zero_copy: ZeroCopy,
    /// Whether a foreign XDP program may be replaced.
    pub replace_program: bool,
}

/// A cross-connect: everything received on one port is sent on the other, and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XconnectConfig {
    /// Indices into [`Config::ports`]; never equal.
    pub ports: [usize; 2],
}

// ---- raw shapes, as written in the file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    control_socket: Option<PathBuf>,
    state_file: Option<PathBuf>,
    log_level: Option<String>,
    metrics_listen: Option<String>,
    memory: Option<RawMemory>,
    workers: RawWorkers,
    #[serde(default)]
    ports: Vec<toml::Table>,
    #[serde(default)]
    xconnect: Vec<RawXconnect>,
    #[serde(default)]
    bridge: Vec<RawBridge>,
    limits: Option<RawLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_ports: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    name: String,
    ports: Vec<String>,
    mac_age_secs: Option<i64>,
    mac_table_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    buffers: Option<i64>,
    hugepages: Option<bool>,
    buffer_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    cores: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXconnect {
    ports: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAfXdp {
    #[serde(rename = "name")]
    _name: String,
    #[serde(rename = "type")]
    _type: String,
    interface: String,
    queues: Option<i64>,
    xdp_mode: Option<String>,
    zero_copy: Option<String>,
    replace_program: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVhostUser {
    #[serde(rename = "name")]
    _name: String,
    #[serde(rename = "type")]
    _type: String,
    socket: PathBuf,
    mode: Option<String>,
    queues: Option<i64>,
    mac: Option<String>,
    socket_perms: Option<toml::Value>,
    socket_group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVfio {
    #[serde(rename = "name")]
    _name: String,
    #[serde(rename = "type")]
    _type: String,
    pci: String,
    queues: Option<i64>,
    mac: Option<String>,
    ring_size: Option<i64>,
}

/// Most bytes of `log_level`.
const MAX_LOG_LEVEL_BYTES: usize = 1024;

/// Checks that `log_level` holds only `LEVEL` and `TARGET=LEVEL` directives. The
/// span and field filters `EnvFilter` also takes (`target[span{field=value}]`) compile
/// field values to regex automata, and a crafted one of a few hundred bytes took 4
/// minutes and 900 MB to build (found by fuzz/ config): those stay for `RUST_LOG`,
/// which only the operator of the host sets.
fn log_directives(level: &str) -> Result<(), String> {
    if level.len() > MAX_LOG_LEVEL_BYTES {
        return Err(format!("longer than {MAX_LOG_LEVEL_BYTES} bytes"));
    }
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, lvl) = d.rsplit_once('=').map_or(("", d), |(t, l)| (t, l));
        let target_ok = target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'));
        if !target_ok || !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(lvl)) {
            return Err(format!(
                "{d:?} is not LEVEL or TARGET=LEVEL (levels: {}; span and field filters \
                 only in RUST_LOG)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Collapses a message onto one line. Other control characters (a key written as
/// `"\rb"` is quoted back in the parser's message) are escaped, so that they cannot
/// break or rewrite the log line either (found by fuzz/ config).
fn one_line(s: &str) -> String {
    let joined =
        s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// 1-based line and column of byte `offset` in `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |reason: String| ConfigError::Read { path: path.to_owned(), reason };
        let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(read_err("not a regular file".into()));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(read_err(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| read_err("not UTF-8 text".into()))?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|s| {
                    let (l, c) = line_col(text, s.start);
                    format!("line {l}, column {c}: ")
                })
                .unwrap_or_default();
            ConfigError::Parse { path: path.to_owned(), location, message: one_line(e.message()) }
        })?;
        Validator { path, api: false }.validate(raw)
    }
}

struct Validator<'a> {
    path: &'a Path,
    /// Checking one control API request: keys are the request's own field names
    /// (`socket`), not the file's (`ports[0].socket`).
    api: bool,
}

impl Validator<'_> {
    /// Key of field `k` of port table `i`.
    fn port_key(&self, i: usize, k: &str) -> String {
        if self.api {
            k.to_owned()
        } else {
            format!("ports[{i}].{k}")
        }
    }

    /// Key for an error about port table `i` as a whole, or its missing field `k`.
    fn port_table_key(&self, i: usize, k: &str) -> String {
        if self.api {
            k.to_owned()
        } else {
            format!("ports[{i}]")
        }
    }

    /// Key of field `k` of bridge `i`.
    fn bridge_key(&self, i: usize, k: &str) -> String {
        if self.api {
            k.to_owned()
        } else {
            format!("bridge[{i}].{k}")
        }
    }

    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            reason: one_line(&reason.into()),
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let control_socket =
            raw.control_socket.unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET));
        self.socket_path("control_socket", &control_socket)?;
        let state_file = match raw.state_file {
            None => Some(default_state_file(&control_socket)),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) if p.is_relative() || p.file_name().is_none() => {
                return Err(self.err(
                    "state_file",
                    format!(
                        "{} is not an absolute path to a file (\"\" turns it off)",
                        p.display()
                    ),
                ))
            }
            Some(p) if p == control_socket => {
                return Err(self.err("state_file", "must not be the control socket"))
            }
            Some(p) => Some(p),
        };

        if let Some(level) = &raw.log_level {
            log_directives(level).map_err(|why| self.err("log_level", why))?;
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
                return Err(self.err("log_level", format!("{level:?} is not a log filter: {e}")));
            }
        }

        let metrics_listen =
            raw.metrics_listen.as_deref().map(|a| self.metrics_listen(a)).transpose()?;
        let memory = self.memory(raw.memory)?;
        let workers = self.workers(raw.workers)?;
        let limits = match raw.limits.and_then(|l| l.max_ports) {
            None => Limits::default(),
            Some(n) if (1..=MAX_MAX_PORTS as i64).contains(&n) => Limits { max_ports: n as usize },
            Some(n) => {
                return Err(self
                    .err("limits.max_ports", format!("{n} is out of range (1..={MAX_MAX_PORTS})")))
            }
        };
        if raw.ports.len() > limits.max_ports {
            return Err(self.err(
                "limits.max_ports",
                format!(
                    "the file has {} ports, more than max_ports = {}",
                    raw.ports.len(),
                    limits.max_ports
                ),
            ));
        }

        let mut ports = Vec::with_capacity(raw.ports.len());
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut sockets: HashMap<PathBuf, String> = HashMap::new();
        let mut interfaces: HashMap<String, String> = HashMap::new();
        let mut pcis: HashMap<PciAddress, String> = HashMap::new();
        sockets.insert(control_socket.clone(), "control_socket".into());
        if let Some(f) = &state_file {
            sockets.insert(f.clone(), "state_file".into());
        }
        let mut port_vlans: Vec<Option<VlanMode>> = Vec::with_capacity(raw.ports.len());
        for (i, mut table) in raw.ports.into_iter().enumerate() {
            port_vlans.push(self.port_vlan(i, &mut table)?);
            let port = self.port(i, table)?;
            if let Some(first) = by_name.insert(port.name.clone(), i) {
                return Err(self.err(
                    format!("ports[{i}].name"),
                    format!("duplicate port name {:?} (also ports[{first}])", port.name),
                ));
            }
            match &port.kind {
                PortKind::VhostUser(v) => {
                    let key = format!("ports[{i}].socket");
                    if let Some(other) = sockets.insert(v.socket.clone(), key.clone()) {
                        return Err(self.err(
                            key,
                            format!("socket {} is also used by {other}", v.socket.display()),
                        ));
                    }
                }
                PortKind::Vfio(v) => {
                    let key = format!("ports[{i}].pci");
                    if let Some(other) = pcis.insert(v.pci, key.clone()) {
                        return Err(
                            self.err(key, format!("PCI device {} is also used by {other}", v.pci))
                        );
                    }
                }
                PortKind::AfXdp(x) => {
                    let key = format!("ports[{i}].interface");
                    if let Some(other) = interfaces.insert(x.interface.clone(), key.clone()) {
                        return Err(self.err(
                            key,
                            format!("interface {} is also used by {other}", x.interface),
                        ));
                    }
                }
            }
            ports.push(port);
        }

        let mut xconnects = Vec::with_capacity(raw.xconnect.len());
        let mut used: HashMap<usize, usize> = HashMap::new();
        for (i, x) in raw.xconnect.into_iter().enumerate() {
            let key = format!("xconnect[{i}].ports");
            if x.ports.len() != 2 {
                return Err(self.err(
                    key,
                    format!("a cross-connect joins exactly 2 ports, {} given", x.ports.len()),
                ));
            }
            let mut idx = [0usize; 2];
            for (j, name) in x.ports.iter().enumerate() {
                let Some(&p) = by_name.get(name) else {
                    return Err(self.err(key, format!("unknown port {name:?}")));
                };
                if let Some(other) = used.insert(p, i) {
                    let reason = if other == i {
                        format!("port {name:?} cannot be cross-connected with itself")
                    } else {
                        format!("port {name:?} is already cross-connected in xconnect[{other}]")
                    };
                    return Err(self.err(key, reason));
                }
                idx[j] = p;
            }
            xconnects.push(XconnectConfig { ports: idx });
        }

        let bridges = self.bridges(raw.bridge, &by_name, &used, &mut port_vlans)?;
        if let Some(i) = port_vlans.iter().position(Option::is_some) {
            let key = match port_vlans[i] {
                Some(VlanMode::Trunk(_)) => "trunk",
                _ => "vlan",
            };
            return Err(self.err(
                self.port_key(i, key),
                format!("port {:?} is in no bridge: only bridge ports have VLANs", ports[i].name),
            ));
        }

        Ok(Config {
            control_socket,
            state_file,
            log_level: raw.log_level,
            metrics_listen,
            memory,
            workers,
            ports,
            xconnects,
            bridges,
            limits,
        })
    }

    /// `metrics_listen`: an IP:port on loopback (metrics are not for the network).
    fn metrics_listen(&self, text: &str) -> Result<std::net::SocketAddr, ConfigError> {
        let addr: std::net::SocketAddr = text.parse().map_err(|_| {
            self.err(
                "metrics_listen",
                format!("{text:?} is not an IP:port address (e.g. \"127.0.0.1:9100\")"),
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(self.err(
                "metrics_listen",
                format!(
                    "{addr} is not a loopback address: metrics are served on 127.0.0.0/8 or \
                     [::1] only (scrape through a local agent or a port-forward)"
                ),
            ));
        }
        if addr.port() == 0 {
            return Err(self.err("metrics_listen", format!("{addr}: give a port number, not 0")));
        }
        Ok(addr)
    }

    /// Takes `vlan` / `trunk` out of a port's table (they belong to any port type).
    fn port_vlan(&self, i: usize, t: &mut toml::Table) -> Result<Option<VlanMode>, ConfigError> {
        let id = |key: String, v: &toml::Value| -> Result<u16, ConfigError> {
            match v.as_integer() {
                Some(n) if (1..=MAX_VLAN_ID as i64).contains(&n) => Ok(n as u16),
                Some(n) => Err(self.err(key, format!("{n} is not a VLAN id (1..={MAX_VLAN_ID})"))),
                None => Err(self.err(key, format!("must be integer, not {}", v.type_str()))),
            }
        };
        match (t.remove("vlan"), t.remove("trunk")) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(self.err(
                self.port_key(i, "trunk"),
                "a port is either an access port (`vlan`) or a trunk (`trunk`), not both",
            )),
            (Some(v), None) => Ok(Some(VlanMode::Access(id(self.port_key(i, "vlan"), &v)?))),
            (None, Some(v)) => {
                let key = self.port_key(i, "trunk");
                let Some(list) = v.as_array() else {
                    return Err(self
                        .err(key, format!("must be an array of VLAN ids, not {}", v.type_str())));
                };
                if list.is_empty() {
                    return Err(self.err(key, "a trunk carries at least one VLAN"));
                }
                let mut ids = Vec::with_capacity(list.len());
                for (j, e) in list.iter().enumerate() {
                    let n = id(format!("{key}[{j}]"), e)?;
                    if ids.contains(&n) {
                        return Err(self.err(key, format!("VLAN {n} is listed twice")));
                    }
                    ids.push(n);
                }
                ids.sort_unstable();
                Ok(Some(VlanMode::Trunk(ids)))
            }
        }
    }

    fn bridges(
        &self,
        raw: Vec<RawBridge>,
        by_name: &HashMap<String, usize>,
        in_xconnect: &HashMap<usize, usize>,
        port_vlans: &mut [Option<VlanMode>],
    ) -> Result<Vec<BridgeSpec>, ConfigError> {
        let mut out: Vec<BridgeSpec> = Vec::with_capacity(raw.len());
        let mut member_of: HashMap<usize, usize> = HashMap::new();
        for (i, b) in raw.into_iter().enumerate() {
            self.name(&format!("bridge[{i}].name"), &b.name)?;
            if let Some(j) = out.iter().position(|o| o.name == b.name) {
                return Err(self.err(
                    format!("bridge[{i}].name"),
                    format!("duplicate bridge name {:?} (also bridge[{j}])", b.name),
                ));
            }
            let key = format!("bridge[{i}].ports");
            if b.ports.len() < 2 {
                return Err(self.err(
                    key,
                    format!("a bridge joins at least 2 ports, {} given", b.ports.len()),
                ));
            }
            let mut ports = Vec::with_capacity(b.ports.len());
            for name in &b.ports {
                let Some(&p) = by_name.get(name) else {
                    return Err(self.err(key, format!("unknown port {name:?}")));
                };
                if let Some(x) = in_xconnect.get(&p) {
                    return Err(self.err(
                        key,
                        format!("port {name:?} is already cross-connected in xconnect[{x}]"),
                    ));
                }
                if let Some(other) = member_of.insert(p, i) {
                    let reason = if other == i {
                        format!("port {name:?} is listed twice")
                    } else {
                        format!("port {name:?} is already in bridge[{other}]")
                    };
                    return Err(self.err(key, reason));
                }
                let mode = port_vlans.get_mut(p).and_then(Option::take).unwrap_or_default();
                ports.push((p, mode));
            }
            let (mac_age_secs, mac_table_size) =
                self.bridge_settings(i, b.mac_age_secs, b.mac_table_size)?;
            out.push(BridgeSpec { name: b.name, ports, mac_age_secs, mac_table_size });
        }
        Ok(out)
    }

    /// A bridge's MAC age and table size, defaults filled in.
    fn bridge_settings(
        &self,
        i: usize,
        age: Option<i64>,
        size: Option<i64>,
    ) -> Result<(u32, usize), ConfigError> {
        let mac_age_secs = match age {
            None => DEFAULT_MAC_AGE_SECS,
            Some(n) if (1..=MAX_MAC_AGE_SECS).contains(&n) => n as u32,
            Some(n) => {
                return Err(self.err(
                    self.bridge_key(i, "mac_age_secs"),
                    format!("{n} is out of range (1..={MAX_MAC_AGE_SECS})"),
                ))
            }
        };
        let mac_table_size = match size {
            None => DEFAULT_MAC_TABLE_SIZE,
            Some(n) if (1..=MAX_TABLE_SIZE as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(self.err(
                    self.bridge_key(i, "mac_table_size"),
                    format!("{n} is out of range (1..={MAX_TABLE_SIZE})"),
                ))
            }
        };
        Ok((mac_age_secs, mac_table_size))
    }

    fn memory(&self, raw: Option<RawMemory>) -> Result<MemoryConfig, ConfigError> {
        let raw = raw.unwrap_or(RawMemory { buffers: None, hugepages: None, buffer_size: None });
        let buffers = match raw.buffers {
            None => DEFAULT_BUFFERS,
            Some(n) if (MIN_BUFFERS as i64..=MAX_BUFFERS as i64).contains(&n) => n as u32,
            Some(n) => {
                return Err(self.err(
                    "memory.buffers",
                    format!("{n} is out of range ({MIN_BUFFERS}..={MAX_BUFFERS})"),
                ))
            }
        };
        let buffer_size = match raw.buffer_size {
            None => DEFAULT_BUFFER_SIZE,
            Some(n) if (MIN_BUFFER_SIZE as i64..=MAX_BUFFER_SIZE as i64).contains(&n) => n as u32,
            Some(n) => {
                return Err(self.err(
                    "memory.buffer_size",
                    format!("{n} is out of range ({MIN_BUFFER_SIZE}..={MAX_BUFFER_SIZE})"),
                ))
            }
        };
        Ok(MemoryConfig { buffers, hugepages: raw.hugepages.unwrap_or(true), buffer_size })
    }

    fn workers(&self, raw: RawWorkers) -> Result<WorkersConfig, ConfigError> {
        if raw.cores.is_empty() {
            return Err(self.err("workers.cores", "at least one worker core is needed"));
        }
        let allowed = allowed_cpus();
        let mut seen = HashSet::new();
        let mut cores = Vec::with_capacity(raw.cores.len());
        for &c in &raw.cores {
            if !(0..CPU_SET_BITS as i64).contains(&c) {
                return Err(self.err("workers.cores", format!("{c} is not a CPU number")));
            }
            let c = c as usize;
            if !seen.insert(c) {
                return Err(self.err("workers.cores", format!("core {c} is listed twice")));
            }
            if let Some(allowed) = &allowed {
                if !allowed.contains(&c) {
                    return Err(self.err(
                        "workers.cores",
                        format!(
                            "core {c} is not online or not available to podwire (available: {})",
                            cpu_list(allowed)
                        ),
                    ));
                }
            }
            cores.push(c);
        }
        Ok(WorkersConfig { cores })
    }

    /// Checks the value types of a port's keys first, so that an error names the key
    /// (the table-to-struct conversion reports types without it), then decodes it.
    fn typed_port_table<T: serde::de::DeserializeOwned>(
        &self,
        i: usize,
        name: &str,
        table: toml::Table,
        types: &[(&str, &[&str])],
    ) -> Result<T, ConfigError> {
        for (key, value) in &table {
            let Some(&(want, _)) = types.iter().find(|(_, keys)| keys.contains(&key.as_str()))
            else {
                continue;
            };
            if value.type_str() != want {
                return Err(self.err(
                    self.port_key(i, key),
                    format!("must be {want}, not {}", value.type_str()),
                ));
            }
        }
        toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            let key = if self.api { String::new() } else { format!("ports[{i}] ({name})") };
            self.err(key, e.message())
        })
    }

    fn port(&self, i: usize, table: toml::Table) -> Result<PortConfig, ConfigError> {
        let at = |k: &str| self.port_key(i, k);
        let name = match table.get("name") {
            None => return Err(self.err(self.port_table_key(i, "name"), "missing field `name`")),
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(self.err(at("name"), format!("must be string, not {}", v.type_str())))
            }
        };
        self.name(&at("name"), &name)?;
        let kind = match table.get("type") {
            None => return Err(self.err(self.port_table_key(i, "type"), "missing field `type`")),
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(self.err(at("type"), format!("must be string, not {}", v.type_str())))
            }
        };
        match kind.as_str() {
            "vhost-user" => {
                let raw: RawVhostUser = self.typed_port_table(
                    i,
                    &name,
                    table,
                    &[
                        ("integer", &["queues"]),
                        ("string", &["name", "type", "socket", "mode", "mac", "socket_group"]),
                    ],
                )?;
                let v = self.vhost_user(i, &name, raw)?;
                Ok(PortConfig { name, kind: PortKind::VhostUser(v) })
            }
            "af-xdp" => {
                let raw: RawAfXdp = self.typed_port_table(
                    i,
                    &name,
                    table,
                    &[
                        ("integer", &["queues"]),
                        ("boolean", &["replace_program"]),
                        ("string", &["name", "type", "interface", "xdp_mode", "zero_copy"]),
                    ],
                )?;
                Ok(PortConfig { name, kind: PortKind::AfXdp(self.af_xdp(i, raw)?) })
            }
            "vfio" => {
                let raw: RawVfio = self.typed_port_table(
                    i,
                    &name,
                    table,
                    &[
                        ("integer", &["queues", "ring_size"]),
                        ("string", &["name", "type", "pci", "mac"]),
                    ],
                )?;
                let v = self.vfio(i, &name, raw)?;
                Ok(PortConfig { name, kind: PortKind::Vfio(v) })
            }
            _ => Err(self.err(
                at("type"),
                format!("unknown port type {kind:?} (known: \"vhost-user\", \"af-xdp\", \"vfio\")"),
            )),
        }
    }

    fn name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if name.is_empty() {
            return Err(self.err(key, "must not be empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(self.err(key, format!("{name:?} is longer than {MAX_NAME_LEN} bytes")));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(self
                .err(key, format!("{name:?} may only contain letters, digits, '-', '_' and '.'")));
        }
        Ok(())
    }

    fn socket_path(&self, key: &str, path: &Path) -> Result<(), ConfigError> {
        let len = path.as_os_str().len();
        if len == 0 {
            return Err(self.err(key, "must not be empty"));
        }
        if len > MAX_SOCKET_PATH {
            return Err(self.err(
                key,
                format!(
                    "{} is {len} bytes, longer than a unix socket path may be ({MAX_SOCKET_PATH})",
                    path.display()
                ),
            ));
        }
        if path.file_name().is_none() {
            return Err(self.err(key, format!("{} does not name a file", path.display())));
        }
        Ok(())
    }

    fn vhost_user(
        &self,
        i: usize,
        name: &str,
        raw: RawVhostUser,
    ) -> Result<VhostUserConfig, ConfigError> {
        let at = |k: &str| self.port_key(i, k);
        self.socket_path(&at("socket"), &raw.socket)?;
        let mode = match raw.mode.as_deref() {
            None | Some("server") => SocketMode::Server,
            Some("client") => SocketMode::Client,
            Some(m) => {
                return Err(self.err(at("mode"), format!("{m:?} is not \"server\" or \"client\"")))
            }
        };
        let queues = self.queues(&at("queues"), raw.queues)?;
        let mac = self.unicast_mac(&at("mac"), raw.mac.as_deref())?;
        let socket_perms = match raw.socket_perms {
            None => 0o660,
            Some(v) => self.perms(&at("socket_perms"), &v)?,
        };
        if let Some(g) = &raw.socket_group {
            if g.is_empty() {
                return Err(self.err(at("socket_group"), "must not be empty"));
            }
        }
        Ok(VhostUserConfig {
            name: name.to_owned(),
            socket: raw.socket,
            mode,
            queues,
            mac,
            socket_perms,
            socket_group: raw.socket_group,
        })
    }

    fn vfio(&self, i: usize, name: &str, raw: RawVfio) -> Result<VfioPortConfig, ConfigError> {
        let at = |k: &str| self.port_key(i, k);
        let pci: PciAddress = raw
            .pci
            .parse()
            .map_err(|e: podwire_driver::pci::PciError| self.err(at("pci"), e.to_string()))?;
        let queues = self.queues(&at("queues"), raw.queues)?;
        let ring_size = match raw.ring_size {
            None => DEFAULT_RING_SIZE,
            Some(n) if (8..=4096).contains(&n) && (n as u64).is_power_of_two() => n as u16,
            Some(n) => {
                return Err(
                    self.err(at("ring_size"), format!("{n} is not a power of two in 8..=4096"))
                )
            }
        };
        let mac = self.unicast_mac(&at("mac"), raw.mac.as_deref())?;
        Ok(VfioPortConfig { name: name.to_owned(), pci, queues, mac, ring_size })
    }

    fn af_xdp(&self, i: usize, raw: RawAfXdp) -> Result<AfXdpPortConfig, ConfigError> {
        let at = |k: &str| self.port_key(i, k);
        let ifname = &raw.interface;
        if ifname.is_empty()
            || ifname.len() >= libc::IF_NAMESIZE
            || ifname.contains('/')
            || ifname.contains(char::is_whitespace)
            || ifname == "."
            || ifname == ".."
        {
            return Err(self.err(
                at("interface"),
                format!(
                    "{ifname:?} is not an interface name (1 to {} bytes, no '/' or spaces)",
                    libc::IF_NAMESIZE - 1
                ),
            ));
        }
        let queues = match raw.queues {
            None => 1,
            Some(q) if (1..=MAX_XDP_QUEUES as i64).contains(&q) => q as u16,
            Some(q) => {
                return Err(
                    self.err(at("queues"), format!("{q} is out of range (1..={MAX_XDP_QUEUES})"))
                )
            }
        };
        let xdp_mode = match raw.xdp_mode.as_deref() {
            None | Some("auto") => XdpMode::Auto,
            Some("native") => XdpMode::Native,
            Some("generic") => XdpMode::Generic,
            Some(m) => {
                return Err(self.err(
                    at("xdp_mode"),
                    format!("{m:?} is not \"auto\", \"native\" or \"generic\""),
                ))
            }
        };
        let zero_copy = match raw.zero_copy.as_deref() {
            None | Some("auto") => ZeroCopy::Auto,
            Some("on") => ZeroCopy::On,
            Some("off") => ZeroCopy::Off,
            Some(m) => {
                return Err(
                    self.err(at("zero_copy"), format!("{m:?} is not \"auto\", \"on\" or \"off\""))
                )
            }
        };
        Ok(AfXdpPortConfig {
            interface: raw.interface,
            queues,
            xdp_mode,
            zero_copy,
            replace_program: raw.replace_program.unwrap_or(false),
        })
    }

    /// A port's queue count: 1 when absent, else 1..=MAX_QUEUES.
    fn queues(&self, key: &str, raw: Option<i64>) -> Result<u16, ConfigError> {
        match raw {
            None => Ok(1),
            Some(q) if (1..=MAX_QUEUES as i64).contains(&q) => Ok(q as u16),
            Some(q) => Err(self.err(key, format!("{q} is out of range (1..={MAX_QUEUES})"))),
        }
    }

    /// An optional MAC address, which must be unicast.
    fn unicast_mac(&self, key: &str, raw: Option<&str>) -> Result<Option<MacAddr>, ConfigError> {
        let Some(m) = raw else { return Ok(None) };
        let mac: MacAddr = m.parse().map_err(|e: String| self.err(key, e))?;
        if mac.0[0] & 1 != 0 {
            return Err(self.err(key, format!("{m:?} is a multicast address")));
        }
        Ok(Some(mac))
    }

    fn perms(&self, key: &str, v: &toml::Value) -> Result<u32, ConfigError> {
        let bits = match v {
            toml::Value::String(s) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                if digits.is_empty() || digits.len() > 4 {
                    None
                } else {
                    u32::from_str_radix(digits, 8).ok()
                }
            }
            toml::Value::Integer(n) => u32::try_from(*n).ok(),
            _ => None,
        };
        match bits {
            Some(b) if b <= 0o777 => Ok(b),
            _ => Err(self.err(
                key,
                format!(
                    "{v} is not a permission mode: write an octal string like \"0660\" or a TOML \
                     octal integer like 0o660"
                ),
            )),
        }
    }
}

// ---- control API requests, checked by the same code as the file ----

/// The state file of a daemon whose control socket is `control_socket`: next to it,
/// named after it (`/run/podwire/podwire.sock` -> `/run/podwire/podwire.state.json`).
/// On a tmpfs like /run it survives a daemon restart but not a reboot, like the pods
/// whose ports it describes.
pub fn default_state_file(control_socket: &Path) -> PathBuf {
    let stem = control_socket.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = format!("{}.state.json", stem.as_deref().unwrap_or("podwire"));
    control_socket.with_file_name(name)
}

/// A control API request that is wrong: one sentence, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The request field at fault, when one is.
    pub field: Option<String>,
    /// One sentence, starting with the field.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: &str, reason: impl std::fmt::Display) -> Self {
        Self { field: Some(field.to_owned()), message: format!("{field}: {reason}") }
    }

    fn from_config(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid { key, reason, .. } if key.is_empty() => {
                // A decoding message names the field in backquotes: "unknown field `x`".
                let field = reason.split('`').nth(1).map(str::to_owned);
                let message = match &field {
                    Some(f) => format!("{f}: {reason}"),
                    None => reason,
                };
                Self { field, message }
            }
            ConfigError::Invalid { key, reason, .. } => {
                Self { message: format!("{key}: {reason}"), field: Some(key) }
            }
            other => Self { field: None, message: other.to_string() },
        }
    }
}

/// A JSON value as the TOML value the config code checks (`key` names it in errors):
/// JSON has no integer/float distinction beyond the literal, no null in TOML.
pub fn json_to_toml(key: &str, v: &serde_json::Value) -> Result<toml::Value, FieldError> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => return Err(FieldError::new(key, "must not be null (leave the field out)")),
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, _) if n.is_u64() => {
                return Err(FieldError::new(key, format!("{n} is too large")))
            }
            (None, Some(f)) => toml::Value::Float(f),
            (None, None) => return Err(FieldError::new(key, format!("{n} is not a number"))),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(a) => toml::Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, e)| json_to_toml(&format!("{key}[{i}]"), e))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(o) => {
            let mut t = toml::Table::new();
            for (k, e) in o {
                t.insert(k.clone(), json_to_toml(k, e)?);
            }
            toml::Value::Table(t)
        }
    })
}

fn api_validator() -> Validator<'static> {
    Validator { path: Path::new("request"), api: true }
}

/// A port as `POST /ports` gives it (a `[[ports]]` table in JSON, without the API's
/// own keys such as `bridge`), checked by the config file's code: the port and its
/// `vlan`/`trunk`.
pub fn port_from_json(
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<(PortConfig, Option<VlanMode>), FieldError> {
    let mut table = toml::Table::new();
    for (k, v) in obj {
        table.insert(k.clone(), json_to_toml(k, v)?);
    }
    let v = api_validator();
    let vlan = v.port_vlan(0, &mut table).map_err(FieldError::from_config)?;
    let port = v.port(0, table).map_err(FieldError::from_config)?;
    Ok((port, vlan))
}

/// The `vlan` or `trunk` of a port joining a bridge (VLAN 1 access when neither).
pub fn vlan_from_json(
    vlan: Option<&serde_json::Value>,
    trunk: Option<&serde_json::Value>,
) -> Result<VlanMode, FieldError> {
    let mut table = toml::Table::new();
    for (k, v) in [("vlan", vlan), ("trunk", trunk)] {
        if let Some(v) = v {
            table.insert(k.into(), json_to_toml(k, v)?);
        }
    }
    let mode = api_validator().port_vlan(0, &mut table).map_err(FieldError::from_config)?;
    Ok(mode.unwrap_or_default())
}

/// A bridge as `POST /bridges` gives it, without ports.
pub fn bridge_from_request(
    name: &str,
    mac_age_secs: Option<i64>,
    mac_table_size: Option<i64>,
) -> Result<BridgeSpec, FieldError> {
    let v = api_validator();
    v.name("name", name).map_err(FieldError::from_config)?;
    let (mac_age_secs, mac_table_size) =
        v.bridge_settings(0, mac_age_secs, mac_table_size).map_err(FieldError::from_config)?;
    Ok(BridgeSpec { name: name.to_owned(), ports: Vec::new(), mac_age_secs, mac_table_size })
}

/// Whether `name` is a valid port or bridge name (`None`) or why not.
pub fn name_problem(name: &str) -> Option<String> {
    api_validator().name("name", name).err().map(|e| FieldError::from_config(e).message)
}

/// Bits in a `cpu_set_t`.
const CPU_SET_BITS: usize = 8 * std::mem::size_of::<libc::cpu_set_t>();

/// CPUs this process may run on and that are online, or `None` if that cannot be
/// determined (then every core is accepted and pinning reports the problem).
pub fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return None;
    }
    let online = online_cpus();
    let cpus: Vec<usize> = (0..CPU_SET_BITS)
        // SAFETY: i < CPU_SET_BITS, the capacity of the set.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .filter(|i| online.as_ref().is_none_or(|o| o.contains(i)))
        .collect();
    Some(cpus)
}

/// CPUs listed in `/sys/devices/system/cpu/online`.
fn online_cpus() -> Option<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse_cpu_list(text.trim())
}

/// Parses a kernel CPU list like `0-3,6,8-9`.
fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b >= CPU_SET_BITS {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// Formats CPUs as a kernel CPU list.
fn cpu_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        parts.push(if cpus[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("t.toml"))
    }

    const GOOD: &str = r#"
        control_socket = "/tmp/pw-test/ctl.sock"
        [workers]
        cores = [0]
        [[ports]]
        name = "a"
        type = "vhost-user"
        socket = "/tmp/a.sock"
        [[ports]]
        name = "b"
        type = "vhost-user"
        socket = "/tmp/b.sock"
        mode = "client"
        queues = 4
        mac = "02:00:00:00:00:0b"
        socket_perms = 0o600
        [[xconnect]]
        ports = ["a", "b"]
    "#;

    const XDP: &str = r#"
        [workers]
        cores = [0]
        [[ports]]
        name = "x"
        type = "af-xdp"
        interface = "veth-a"
        queues = 2
        xdp_mode = "native"
        zero_copy = "off"
        replace_program = true
        [[ports]]
        name = "y"
        type = "af-xdp"
        interface = "veth-b"
    "#;

    #[test]
    fn af_xdp_config_parses() {
        let c = parse(XDP).unwrap();
        let PortKind::AfXdp(x) = &c.ports[0].kind else { panic!("af-xdp") };
        assert_eq!(
            x,
            &AfXdpPortConfig {
                interface: "veth-a".into(),
                queues: 2,
                xdp_mode: XdpMode::Native,
                zero_copy: ZeroCopy::Off,
                replace_program: true
            }
        );
        let PortKind::AfXdp(y) = &c.ports[1].kind else { panic!("af-xdp") };
        assert_eq!(
            (y.queues, y.xdp_mode, y.zero_copy, y.replace_program),
            (1, XdpMode::Auto, ZeroCopy::Auto, false)
        );
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.memory,
            MemoryConfig {
                buffers: DEFAULT_BUFFERS,
                hugepages: true,
                buffer_size: DEFAULT_BUFFER_SIZE
            }
        );
        assert_eq!(c.ports.len(), 2);
        let PortKind::VhostUser(a) = &c.ports[0].kind else { panic!("vhost-user") };
        assert_eq!((a.mode, a.queues, a.socket_perms, a.mac), (SocketMode::Server, 1, 0o660, None));
        let PortKind::VhostUser(b) = &c.ports[1].kind else { panic!("vhost-user") };
        assert_eq!((b.mode, b.queues, b.socket_perms), (SocketMode::Client, 4, 0o600));
        assert_eq!((a.name.as_str(), b.name.as_str()), ("a", "b"), "named after their entries");
        assert_eq!(c.xconnects, vec![XconnectConfig { ports: [0, 1] }]);
    }

    const VFIO: &str = r#"
        [workers]
        cores = [0]
        [[ports]]
        name = "vf"
        type = "vfio"
        pci = "0000:01:10.0"
        [[ports]]
        name = "vf2"
        type = "vfio"
        pci = "01:10.2"
        queues = 2
        mac = "02:00:00:00:00:0c"
        ring_size = 1024
        [[xconnect]]
        ports = ["vf", "vf2"]
    "#;

    #[test]
    fn vfio_ports_parse_with_defaults() {
        let c = parse(VFIO).unwrap();
        let PortKind::Vfio(a) = &c.ports[0].kind else { panic!("not vfio") };
        assert_eq!(a.pci.to_string(), "0000:01:10.0");
        assert_eq!((a.queues, a.mac, a.ring_size), (1, None, DEFAULT_RING_SIZE));
        let PortKind::Vfio(b) = &c.ports[1].kind else { panic!("not vfio") };
        assert_eq!(b.pci.to_string(), "0000:01:10.2");
        assert_eq!((b.queues, b.ring_size), (2, 1024));
        assert_eq!(b.mac.unwrap().to_string(), "02:00:00:00:00:0c");
        let dup = VFIO.replace("01:10.2", "0000:01:10.0");
        let e = parse(&dup).unwrap_err().to_string();
        assert!(
            e.contains("ports[1].pci: PCI device 0000:01:10.0 is also used by ports[0].pci"),
            "{e}"
        );
        for (text, want) in [
            (VFIO.replace("pci = \"01:10.2\"", "pci = 5"), "ports[1].pci: must be string"),
            (VFIO.replace("queues = 2", "queues = 0"), "ports[1].queues: 0 is out of range"),
            (VFIO.replace("0c\"", "0c\"\nsocket = \"/x\""), "unknown field `socket`"),
            (VFIO.replace("02:00:00:00:00:0c", "03:00:00:00:00:0c"), "multicast"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    #[test]
    fn errors_are_one_line_and_name_the_key() {
        let cases = [
            (GOOD.replace("mode = \"client\"", "mode = \"both\""), "ports[1].mode"),
            (GOOD.replace("queues = 4", "queues = 17"), "ports[1].queues"),
            (GOOD.replace("socket_perms = 0o600", "socket_perms = \"999\""), "socket_perms"),
            (GOOD.replace("socket_perms = 0o600", "socket_perms = 660"), "socket_perms"),
            (GOOD.replace("[\"a\", \"b\"]", "[\"a\", \"a\"]"), "with itself"),
            (GOOD.replace("cores = [0]", "cores = [0, 0]"), "listed twice"),
            (GOOD.replace("[workers]", "[workers]\nthreads = 2"), "unknown field `threads`"),
            (GOOD.replace("socket = \"/tmp/a.sock\"", "sokcet = 1"), "unknown field `sokcet`"),
            (GOOD.replacen("vhost-user", "vhost", 1), "ports[0].type: unknown port type"),
            (GOOD.replacen("vhost-user", "vfio", 1), "ports[0] (a): unknown field `socket`"),
            (GOOD.replacen("vhost-user", "af-xdp", 1), "ports[0] (a): unknown field `socket`"),
            (XDP.replace("queues = 2", "queues = 0"), "ports[0].queues: 0 is out of range"),
            (XDP.replace("\"native\"", "\"fast\""), "ports[0].xdp_mode: \"fast\" is not"),
            (XDP.replace("\"off\"", "\"yes\""), "ports[0].zero_copy: \"yes\" is not"),
            (XDP.replace("replace_program = true", "replace_program = 1"), "must be boolean"),
            (XDP.replace("\"veth-b\"", "\"veth-a\""), "interface veth-a is also used by"),
            (XDP.replace("\"veth-a\"", "\"a/b\""), "ports[0].interface: \"a/b\" is not"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    const BRIDGE: &str = r#"
        [workers]
        cores = [0]
        [[ports]]
        name = "a"
        type = "vhost-user"
        socket = "/tmp/a.sock"
        vlan = 10
        [[ports]]
        name = "b"
        type = "vhost-user"
        socket = "/tmp/b.sock"
        [[ports]]
        name = "up"
        type = "af-xdp"
        interface = "eth9"
        trunk = [20, 10]
        [[bridge]]
        name = "br0"
        ports = ["a", "b", "up"]
        mac_age_secs = 5
        mac_table_size = 100
    "#;

    #[test]
    fn bridge_config_parses() {
        let c = parse(BRIDGE).unwrap();
        assert_eq!(
            c.bridges,
            vec![BridgeSpec {
                name: "br0".into(),
                ports: vec![
                    (0, VlanMode::Access(10)),
                    (1, VlanMode::Access(1)),
                    (2, VlanMode::Trunk(vec![10, 20]))
                ],
                mac_age_secs: 5,
                mac_table_size: 100,
            }]
        );
        let c =
            parse(&BRIDGE.replace("mac_age_secs = 5\n", "").replace("mac_table_size = 100", ""))
                .unwrap();
        assert_eq!(
            (c.bridges[0].mac_age_secs, c.bridges[0].mac_table_size),
            (DEFAULT_MAC_AGE_SECS, DEFAULT_MAC_TABLE_SIZE)
        );
        assert!(parse(GOOD).unwrap().bridges.is_empty());
    }

    #[test]
    fn bridge_errors_name_the_key() {
        let cases = [
            (BRIDGE.replace("vlan = 10", "vlan = 4095"), "ports[0].vlan: 4095 is not a VLAN id"),
            (BRIDGE.replace("vlan = 10", "vlan = \"10\""), "ports[0].vlan: must be integer"),
            (BRIDGE.replace("vlan = 10", "vlan = 10\ntrunk = [1]"), "ports[0].trunk: a port is"),
            (BRIDGE.replace("[20, 10]", "[]"), "ports[2].trunk: a trunk carries at least one"),
            (BRIDGE.replace("[20, 10]", "[20, 20]"), "ports[2].trunk: VLAN 20 is listed twice"),
            (BRIDGE.replace("[20, 10]", "[20, 0]"), "ports[2].trunk[1]: 0 is not a VLAN id"),
            (BRIDGE.replace("[20, 10]", "20"), "ports[2].trunk: must be an array"),
            (
                BRIDGE.replace("\"a\", \"b\", \"up\"", "\"a\""),
                "bridge[0].ports: a bridge joins at least 2",
            ),
            (BRIDGE.replace("\"a\", \"b\", \"up\"", "\"a\", \"a\""), "\"a\" is listed twice"),
            (
                BRIDGE.replace("\"a\", \"b\", \"up\"", "\"a\", \"zz\""),
                "bridge[0].ports: unknown port \"zz\"",
            ),
            (
                BRIDGE.replace("\"a\", \"b\", \"up\"", "\"b\", \"up\""),
                "ports[0].vlan: port \"a\" is in no bridge",
            ),
            (
                BRIDGE.replace("\"a\", \"b\", \"up\"", "\"a\", \"b\""),
                "ports[2].trunk: port \"up\" is in no",
            ),
            (
                BRIDGE.replace("mac_age_secs = 5", "mac_age_secs = 0"),
                "bridge[0].mac_age_secs: 0 is out",
            ),
            (
                BRIDGE.replace("mac_table_size = 100", "mac_table_size = -1"),
                "bridge[0].mac_table_size",
            ),
            (BRIDGE.replace("name = \"br0\"", "name = \"br 0\""), "bridge[0].name"),
            (BRIDGE.replace("mac_age_secs = 5", "mac_age = 5"), "unknown field `mac_age`"),
            (
                format!("{BRIDGE}[[bridge]]\nname = \"br0\"\nports = [\"a\", \"b\"]\n"),
                "bridge[1].name: duplicate bridge name",
            ),
            (
                format!("{BRIDGE}[[xconnect]]\nports = [\"a\", \"b\"]\n"),
                "already cross-connected in xconnect[0]",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    #[test]
    fn log_level_takes_levels_and_targets_only() {
        let with = |l: &str| {
            parse(&format!("log_level = {l:?}\n[workers]\ncores = [0]\n")).map(|c| c.log_level)
        };
        for ok in ["info", "info,podwire=debug", "podwire_vhost=TRACE", "warn,podwire::bridge=off"]
        {
            assert_eq!(with(ok).unwrap().as_deref(), Some(ok));
        }
        for bad in ["verbose", "podwire=loud", "a b=info", "x[span{f=a*}]=debug", "[{s=a***}]"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("log_level") && e.contains("LEVEL"), "{bad}: {e}");
        }
        assert!(with(&"a,".repeat(600)).unwrap_err().to_string().contains("longer than"));
    }

    #[test]
    fn control_characters_in_keys_stay_on_one_line() {
        // Found by fuzz/ config: the parser quotes an unknown key back verbatim.
        let e = parse("\"\\rb\" = 1\n").unwrap_err().to_string();
        assert!(!e.contains('\r') && !e.contains('\n'), "{e:?}");
        assert!(e.contains("unknown field `\\rb`"), "{e}");
    }

    #[test]
    fn parse_error_has_location() {
        let e = parse("[workers]\ncores = [0]\nbogus = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml: line 3, column 1: unknown field `bogus`"), "{e}");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn state_file_defaults_next_to_the_control_socket() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.state_file, Some(PathBuf::from("/tmp/pw-test/ctl.state.json")));
        let c = parse("[workers]\ncores = [0]\n").unwrap();
        assert_eq!(c.state_file, Some(PathBuf::from("/run/podwire/podwire.state.json")));
        let with = |v: &str| parse(&format!("state_file = {v}\n{GOOD}"));
        assert_eq!(with("\"\"").unwrap().state_file, None);
        assert_eq!(
            with("\"/var/lib/pw/s.json\"").unwrap().state_file,
            Some("/var/lib/pw/s.json".into())
        );
        let clash = with("\"/tmp/a.sock\"").unwrap_err().to_string();
        assert!(clash.contains("is also used by state_file"), "{clash}");
        for bad in ["\"rel.json\"", "\"/\"", "\"/tmp/pw-test/ctl.sock\""] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("state_file"), "{bad}: {e}");
        }
    }
}
