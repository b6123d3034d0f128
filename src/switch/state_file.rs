//! The state file: what the control API made (ports, bridges, bridge membership,
//! cross-connects), kept on disk so that a restarted daemon — after a crash, a
//! SIGKILL, an OOM kill or an upgrade — puts it back. The CNI plugin attaches pods
//! through the API, so without this a restart would cut every pod off.
//!
//! The file is JSON with a `version` (this code writes and reads [`VERSION`]):
//!
//! ```json
//! {"version": 1,
//!  "bridges": [{"name": "br0", "mac_age_secs": 300, "mac_table_size": 8192}],
//!  "ports": [{"name": "pod1", "type": "vhost-user", "socket": "/var/lib/x/pod1.sock",
//!             "mode": "server", "queues": 1, "mac": "02:12:34:56:78:9a",
//!             "socket_perms": "0660"}],
//!  "bridge_ports": [{"bridge": "br0", "port": "pod1", "vlan": 10}],
//!  "xconnects": [{"ports": ["a", "b"]}]}
//! ```
//!
//! - `ports`: every port made through the API, as a complete `POST /ports` body
//!   (every setting spelled out, the MAC the port was given included, so that a pod
//!   and the CNI plugin's CHECK see the same MAC after a restart).
//! - `bridges`: bridges made through the API.
//! - `bridge_ports`, `xconnects`: every membership and cross-connect the config file
//!   does not describe (an API port in a file bridge, a file port in an API bridge,
//!   ...).
//!
//! It is rewritten after every successful change through the API (and after a
//! reload), before the answer goes out: a temp file in the same directory, fsync,
//! rename over the old one, fsync of the directory — a crash at any point leaves
//! the old file or the new one, never a mix.
//!
//! At start, after the config file's objects exist, [`Switch::restore_state`]
//! replays it through the same code as the API requests: bridges, ports,
//! memberships, cross-connects. A file that cannot be read or parsed is renamed
//! aside (`<file>.corrupt-<unix time>`) with an error in the log, and the daemon
//! starts with its config alone. An object that cannot be made again (a name the
//! config file now uses — the file wins —, an interface that is gone, a vhost-user
//! port whose socket directory was removed, e.g. by a CNI DEL while podwire was down)
//! is logged and skipped. The file is then rewritten to what exists.
//!
//! What the API removed from the file's own objects (a file port deleted, or taken
//! out of its bridge) is not recorded: a restart puts back what the file says.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::reload::wiring;
use super::{Origin, Switch};
use crate::bridge::VlanMode;
use crate::config::{PortConfig, PortKind};
use crate::engine::Attachment;
use podwire_driver::xdp::{XdpMode, ZeroCopy};
use podwire_driver::MacAddr;
use podwire_vhost::SocketMode;

/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// Largest state file read (256 ports of a few hundred bytes fit many times over).
const MAX_BYTES: u64 = 16 << 20;

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Bridges made through the API.
    #[serde(default)]
    pub bridges: Vec<BridgeState>,
    /// Ports made through the API: `POST /ports` bodies.
    #[serde(default)]
    pub ports: Vec<Map<String, Value>>,
    /// Bridge memberships the config file does not describe.
    #[serde(default)]
    pub bridge_ports: Vec<MemberState>,
    /// Cross-connects the config file does not describe.
    #[serde(default)]
    pub xconnects: Vec<XconnectState>,
}

/// A bridge made through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeState {
    /// Its name.
    pub name: String,
    /// MAC aging.
    pub mac_age_secs: u32,
    /// Most MAC entries.
    pub mac_table_size: usize,
}

/// A port in a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberState {
    /// The bridge.
    pub bridge: String,
    /// The port.
    pub port: String,
    /// Access VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Trunk VLANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Vec<u16>>,
}

/// A cross-connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XconnectState {
    /// Its two ports.
    pub ports: [String; 2],
}

impl StateFile {
    /// Parses a state file; the version is checked before anything else, so a file
    /// from a newer podwire is named as such.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not JSON: {e}"))?;
        match v.get("version") {
            Some(Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
            Some(other) => {
                return Err(format!(
                    "has version {other}, which this podwire does not read (it reads {VERSION})"
                ))
            }
            None => return Err("has no \"version\" field".into()),
        }
        serde_json::from_value(v).map_err(|e| format!("is not a podwire state file: {e}"))
    }

    /// The file's bytes: indented JSON and a final newline, for an operator to read.
    /// (Serialising strings, numbers and string-keyed maps cannot fail.)
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).unwrap_or_default();
        b.push(b'\n');
        b
    }

    /// Whether it describes nothing.
    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty()
            && self.ports.is_empty()
            && self.bridge_ports.is_empty()
            && self.xconnects.is_empty()
    }
}

/// A port's complete `POST /ports` body: every setting written out, `mac` being the
/// MAC the port has (`live_mac`) when its config left it to chance.
pub fn port_table(cfg: &PortConfig, live_mac: Option<MacAddr>) -> Map<String, Value> {
    let mut t = Map::new();
    t.insert("name".into(), json!(cfg.name));
    match &cfg.kind {
        PortKind::VhostUser(v) => {
            t.insert("type".into(), json!("vhost-user"));
            t.insert("socket".into(), json!(v.socket));
            let mode = match v.mode {
                SocketMode::Server => "server",
                SocketMode::Client => "client",
            };
            t.insert("mode".into(), json!(mode));
            t.insert("queues".into(), json!(v.queues));
            if let Some(mac) = v.mac.or(live_mac) {
                t.insert("mac".into(), json!(mac.to_string()));
            }
            t.insert("socket_perms".into(), json!(format!("{:04o}", v.socket_perms)));
            if let Some(g) = &v.socket_group {
                t.insert("socket_group".into(), json!(g));
            }
        }
        PortKind::AfXdp(x) => {
            t.insert("type".into(), json!("af-xdp"));
            t.insert("interface".into(), json!(x.interface));
            t.insert("queues".into(), json!(x.queues));
            let mode = match x.xdp_mode {
                XdpMode::Auto => "auto",
                XdpMode::Native => "native",
                XdpMode::Generic => "generic",
            };
            t.insert("xdp_mode".into(), json!(mode));
            let zc = match x.zero_copy {
                ZeroCopy::Auto => "auto",
                ZeroCopy::On => "on",
                ZeroCopy::Off => "off",
            };
            t.insert("zero_copy".into(), json!(zc));
            t.insert("replace_program".into(), json!(x.replace_program));
        }
        PortKind::Vfio(v) => {
            // The MAC stays the PF's when none was asked for: the PF may change it.
            t.insert("type".into(), json!("vfio"));
            t.insert("pci".into(), json!(v.pci.to_string()));
            t.insert("queues".into(), json!(v.queues));
            if let Some(mac) = v.mac {
                t.insert("mac".into(), json!(mac.to_string()));
            }
            t.insert("ring_size".into(), json!(v.ring_size));
        }
    }
    t
}

/// Writes `bytes` to `path` so that `path` holds either its old content or all of
/// the new one whatever happens: temp file in the same directory (mode 0600),
/// fsync, rename, fsync of the directory. Creates the directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What reading the state file gave.
#[derive(Debug)]
pub enum Loaded {
    /// No file: nothing to restore (a first start).
    Missing,
    /// The file's content.
    State(StateFile),
    /// A file that could not be read or parsed, renamed aside (`moved_to`, or `None`
    /// when even that failed).
    Bad {
        /// Why it was refused.
        reason: String,
        /// Where it is now.
        moved_to: Option<PathBuf>,
    },
}

/// Reads the state file at `path`; a bad one is renamed aside.
pub fn load(path: &Path) -> Loaded {
    let read = std::fs::File::open(path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    let reason = match read {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => format!("cannot be read: {e}"),
        Ok(b) if b.len() as u64 > MAX_BYTES => format!("is larger than {MAX_BYTES} bytes"),
        Ok(b) => match StateFile::parse(&b) {
            Ok(s) => return Loaded::State(s),
            Err(e) => e,
        },
    };
    Loaded::Bad { reason, moved_to: set_aside(path).ok() }
}

/// Renames `path` to `<path>.corrupt-<unix time>` (with `-N` if that exists).
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut to = PathBuf::from(&base);
    let mut n = 1;
    while to.exists() {
        to = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// What [`Switch::restore_state`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Objects made again.
    pub restored: usize,
    /// Objects skipped (each logged with why).
    pub skipped: usize,
}

fn vlan_json(mode: &VlanMode) -> (Option<u16>, Option<Vec<u16>>) {
    match mode {
        VlanMode::Access(v) => (Some(*v), None),
        VlanMode::Trunk(t) => (None, Some(t.clone())),
    }
}

/// State-file writes that failed, process-wide (one daemon per process): exported
/// as `podwire_state_file_write_failures_total`, so that an operator learns that API
/// changes stopped being saved before a restart loses them.
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many state-file writes have failed since the daemon started.
pub fn write_failures() -> u64 {
    WRITE_FAILURES.load(Relaxed)
}

impl Switch {
    /// What the control API made, as the state file describes it.
    pub fn state_snapshot(&self) -> StateFile {
        let file: HashMap<String, Attachment> = wiring(&self.config);
        let bridges = self
            .api_bridges
            .iter()
            .filter_map(|n| self.engine.bridge(n))
            .map(|b| BridgeState {
                name: b.name().to_owned(),
                mac_age_secs: b.mac_age_secs(),
                mac_table_size: b.mac_table_size(),
            })
            .collect();
        let ports = self
            .ports
            .iter()
            .filter(|e| e.origin == Origin::Api)
            .map(|e| {
                let mac = self.engine.port_status(&e.config.name).map(|s| s.mac());
                port_table(&e.config, mac)
            })
            .collect();
        let mut bridge_ports = Vec::new();
        for b in self.engine.bridges() {
            for (port, mode) in b.ports() {
                let here = Attachment::Bridge(b.name().to_owned(), mode.clone());
                if file.get(&port) != Some(&here) {
                    let (vlan, trunk) = vlan_json(&mode);
                    bridge_ports.push(MemberState {
                        bridge: b.name().to_owned(),
                        port,
                        vlan,
                        trunk,
                    });
                }
            }
        }
        let xconnects = self
            .engine
            .xconnects()
            .into_iter()
            .filter(|[a, b]| file.get(a) != Some(&Attachment::Xconnect(b.clone())))
            .map(|ports| XconnectState { ports })
            .collect();
        StateFile { version: VERSION, bridges, ports, bridge_ports, xconnects }
    }

    /// Writes the state file (when there is one); a failure is logged, the change
    /// stays (it is live), and the next change writes the file again.
    pub fn save_state(&self) -> bool {
        let Some(path) = &self.config.state_file else { return true };
        match write_atomic(path, &self.state_snapshot().to_bytes()) {
            Ok(()) => true,
            Err(e) => {
                WRITE_FAILURES.fetch_add(1, Relaxed);
                tracing::error!(
                    path = %path.display(),
                    "cannot write the state file: {e}; what the control API made since the \
                     last write will not survive a restart"
                );
                false
            }
        }
    }

    /// Makes again what the state file describes (at start, after the config file's
    /// objects), then rewrites it to what exists. See the module docs.
    pub fn restore_state(&mut self) -> RestoreReport {
        let mut report = RestoreReport::default();
        let Some(path) = self.config.state_file.clone() else { return report };
        let state = match load(&path) {
            Loaded::Missing => {
                tracing::info!(path = %path.display(), "no state file: nothing to restore");
                return report;
            }
            Loaded::Bad { reason, moved_to } => {
                let aside = match moved_to {
                    Some(p) => format!("renamed to {}", p.display()),
                    None => "could not be renamed aside".into(),
                };
                tracing::error!(
                    "state file {} {reason}; {aside}. Starting with the config file alone: \
                     ports, bridges and cross-connects made through the control API before \
                     the restart are not restored",
                    path.display()
                );
                self.save_state();
                return report;
            }
            Loaded::State(s) => s,
        };
        let file_ports: Vec<String> = self.config.ports.iter().map(|p| p.name.clone()).collect();
        let from_file = |name: &str| file_ports.iter().any(|p| p == name);
        let skip = |report: &mut RestoreReport, what: String, why: String| {
            tracing::warn!("state file: {what} not restored: {why}");
            report.skipped += 1;
        };

        for b in &state.bridges {
            if self.config.bridges.iter().any(|c| c.name == b.name) {
                skip(
                    &mut report,
                    format!("bridge {:?}", b.name),
                    "the config file has a bridge \
                     of that name, and the config file wins"
                        .into(),
                );
                continue;
            }
            let body = json!({"name": b.name, "mac_age_secs": b.mac_age_secs,
                              "mac_table_size": b.mac_table_size});
            match self.add_bridge(&body) {
                Ok(_) => report.restored += 1,
                Err(e) => skip(&mut report, format!("bridge {:?}", b.name), e.message),
            }
        }
        let mut lost_ports = Vec::new();
        for p in &state.ports {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("?").to_owned();
            let what = format!("port {name:?} ({})", Value::Object(p.clone()));
            if from_file(&name) {
                skip(
                    &mut report,
                    what,
                    "the config file has a port of that name, and the \
                     config file wins"
                        .into(),
                );
                lost_ports.push(name);
                continue;
            }
            if let Some(dir) = gone_socket_dir(p) {
                skip(
                    &mut report,
                    what,
                    format!(
                        "its socket directory {} is gone (the pod was \
                     deleted while podwire was down?)",
                        dir.display()
                    ),
                );
                lost_ports.push(name);
                continue;
            }
            match self.add_port(&Value::Object(p.clone())) {
                Ok(_) => report.restored += 1,
                Err(e) => {
                    skip(&mut report, what, e.message);
                    lost_ports.push(name);
                }
            }
        }
        for m in &state.bridge_ports {
            let what = format!("port {:?} in bridge {:?}", m.port, m.bridge);
            if lost_ports.contains(&m.port) {
                skip(&mut report, what, "the port was not restored".into());
                continue;
            }
            let mut body = json!({"port": m.port});
            if let Some(v) = m.vlan {
                body["vlan"] = json!(v);
            }
            if let Some(t) = &m.trunk {
                body["trunk"] = json!(t);
            }
            if self.engine.bridge(&m.bridge).is_none() {
                skip(&mut report, what, format!("no bridge named {:?}", m.bridge));
                continue;
            }
            match self.bridge_add_port(&m.bridge, &body) {
                Ok(()) => report.restored += 1,
                Err(e) => skip(&mut report, what, e.message),
            }
        }
        for x in &state.xconnects {
            let what = format!("cross-connect {} <-> {}", x.ports[0], x.ports[1]);
            match self.add_xconnect(&json!({"ports": x.ports})) {
                Ok(_) => report.restored += 1,
                Err(e) => skip(&mut report, what, e.message),
            }
        }
        tracing::info!(
            path = %path.display(),
            restored = report.restored,
            skipped = report.skipped,
            "state file replayed: what the control API made before the restart is back"
        );
        self.save_state();
        report
    }
}

/// For a vhost-user port, its socket's directory when that no longer exists.
fn gone_socket_dir(table: &Map<String, Value>) -> Option<PathBuf> {
    if table.get("type").and_then(Value::as_str) != Some("vhost-user") {
        return None;
    }
    let socket = Path::new(table.get("socket")?.as_str()?);
    let dir = socket.parent().filter(|d| !d.as_os_str().is_empty())?;
    (!dir.exists()).then(|| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::port_from_json;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pw-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn every_port_kind_round_trips_through_its_table() {
        let bodies = [
            json!({"name": "v", "type": "vhost-user", "socket": "/tmp/v.sock"}),
            json!({"name": "c", "type": "vhost-user", "socket": "/tmp/c.sock", "mode": "client",
                   "queues": 4, "mac": "02:00:00:00:00:07", "socket_perms": "0600",
                   "socket_group": "kvm"}),
            json!({"name": "x", "type": "af-xdp", "interface": "eth1", "queues": 2,
                   "xdp_mode": "generic", "zero_copy": "off", "replace_program": true}),
            json!({"name": "x2", "type": "af-xdp", "interface": "eth2"}),
            json!({"name": "f", "type": "vfio", "pci": "0000:01:10.0", "queues": 2,
                   "ring_size": 1024}),
            json!({"name": "g", "type": "vfio", "pci": "0000:00:03.0",
                   "mac": "02:00:00:00:00:10"}),
        ];
        let live: MacAddr = "02:aa:bb:cc:dd:ee".parse().unwrap();
        for b in bodies {
            let (cfg, _) = port_from_json(b.as_object().unwrap()).unwrap();
            let table = port_table(&cfg, Some(live));
            let (again, vlan) = port_from_json(&table).unwrap();
            assert_eq!(vlan, None);
            let mut want = cfg.clone();
            // A vhost-user port keeps the MAC it was given at random.
            if let PortKind::VhostUser(v) = &mut want.kind {
                v.mac = v.mac.or(Some(live));
            }
            assert_eq!(again, want, "{b} -> {}", Value::Object(table.clone()));
            // Idempotent: the table of the table is the same table.
            assert_eq!(port_table(&again, Some(live)), table);
        }
    }

    #[test]
    fn state_file_serialises_with_its_version_and_parses_back() {
        let s = StateFile {
            version: VERSION,
            bridges: vec![BridgeState {
                name: "br0".into(),
                mac_age_secs: 300,
                mac_table_size: 8192,
            }],
            ports: vec![json!({"name": "p", "type": "vhost-user", "socket": "/tmp/p.sock"})
                .as_object()
                .unwrap()
                .clone()],
            bridge_ports: vec![
                MemberState { bridge: "br0".into(), port: "p".into(), vlan: Some(10), trunk: None },
                MemberState {
                    bridge: "br0".into(),
                    port: "q".into(),
                    vlan: None,
                    trunk: Some(vec![10, 20]),
                },
            ],
            xconnects: vec![XconnectState { ports: ["a".into(), "b".into()] }],
        };
        let bytes = s.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["bridge_ports"][0], json!({"bridge": "br0", "port": "p", "vlan": 10}));
        assert_eq!(v["bridge_ports"][1], json!({"bridge": "br0", "port": "q", "trunk": [10, 20]}));
        assert_eq!(StateFile::parse(&bytes).unwrap(), s);
        assert!(!s.is_empty());
        let empty = StateFile::parse(br#"{"version": 1}"#).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn bad_content_is_refused_with_a_reason() {
        for (text, why) in [
            ("", "not JSON"),
            ("{\"version\": 1, \"ports\": [", "not JSON"),
            ("[]", "no \"version\""),
            ("{\"ports\": []}", "no \"version\""),
            ("{\"version\": 2}", "has version 2, which this podwire does not read (it reads 1)"),
            ("{\"version\": \"1\"}", "has version \"1\", which"),
            ("{\"version\": 1, \"extra\": 1}", "unknown field `extra`"),
            ("{\"version\": 1, \"bridges\": [{\"name\": 5}]}", "not a podwire state file"),
        ] {
            let e = StateFile::parse(text.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp("write");
        let path = d.join("sub").join("podwire.state.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["podwire.state.json".to_string()]);
        // A directory in the way: the write fails, the temp file is gone.
        let blocked = d.join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"z").is_err());
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_renamed_aside_and_a_missing_one_is_nothing() {
        let d = tmp("corrupt");
        let path = d.join("s.json");
        assert!(matches!(load(&path), Loaded::Missing));
        std::fs::write(&path, b"{\"version\": 1, \"ports\": [{\"na").unwrap();
        let Loaded::Bad { reason, moved_to: Some(aside) } = load(&path) else {
            panic!("a truncated file is bad")
        };
        assert!(reason.contains("not JSON"), "{reason}");
        assert!(!path.exists());
        assert!(aside.to_string_lossy().contains("s.json.corrupt-"), "{}", aside.display());
        assert_eq!(std::fs::read(&aside).unwrap(), b"{\"version\": 1, \"ports\": [{\"na");
        // A second bad file in the same second gets its own name.
        std::fs::write(&path, b"{\"version\": 9}").unwrap();
        let Loaded::Bad { reason, moved_to: Some(aside2) } = load(&path) else { panic!() };
        assert!(reason.contains("version 9"), "{reason}");
        assert_ne!(aside, aside2);
        assert!(aside2.exists() && aside.exists());
        // A good one loads.
        write_atomic(&path, &StateFile { version: VERSION, ..Default::default() }.to_bytes())
            .unwrap();
        assert!(matches!(load(&path), Loaded::State(s) if s.is_empty()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_vhost_port_whose_socket_dir_is_gone_is_noticed() {
        let t = |s: &str| json!({"type": "vhost-user", "socket": s}).as_object().unwrap().clone();
        assert_eq!(gone_socket_dir(&t("/tmp/x.sock")), None);
        assert_eq!(
            gone_socket_dir(&t("/nonexistent-pw/d/x.sock")),
            Some(PathBuf::from("/nonexistent-pw/d"))
        );
        let x = json!({"type": "af-xdp", "interface": "eth0"}).as_object().unwrap().clone();
        assert_eq!(gone_socket_dir(&x), None);
    }

    /// A switch on `dir` with the file config `extra` (TOML after `[memory]`).
    fn switch(dir: &Path, extra: &str) -> Switch {
        switch_with(dir, "", extra)
    }

    /// [`switch`] with top-level keys `top`.
    fn switch_with(dir: &Path, top: &str, extra: &str) -> Switch {
        use crate::engine::Engine;
        use podwire_driver::{Mempool, MempoolConfig};
        let core = crate::config::allowed_cpus().and_then(|c| c.last().copied()).unwrap_or(0);
        let text = format!(
            "control_socket = \"{}\"\n{top}[workers]\ncores = [{core}]\n[memory]\n\
             hugepages = false\nbuffers = 1024\n{extra}",
            dir.join("ctl.sock").display()
        );
        let config = crate::config::Config::parse(&text, Path::new("t.toml")).unwrap();
        let pool =
            Mempool::small_pages(MempoolConfig { count: 1024, ..Default::default() }).unwrap();
        let ports = crate::ports::build_ports(&config.ports, &pool).unwrap();
        let pairs: Vec<[usize; 2]> = config.xconnects.iter().map(|x| x.ports).collect();
        let engine =
            Engine::start_with_bridges(ports, &pairs, &config.bridges, &[core], Some(&pool))
                .unwrap();
        Switch::new(engine, pool, config, None)
    }

    #[test]
    fn a_new_switch_restores_what_the_api_made_and_the_file_wins_on_names() {
        let d = tmp("switch");
        let sock = |n: &str| d.join(format!("{n}.sock")).display().to_string();
        let port = |n: &str| {
            format!("[[ports]]\nname = \"{n}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n", sock(n))
        };
        let file = format!(
            "{}{}{}[[bridge]]\nname = \"fbr\"\nports = [\"g\", \"h\"]\n",
            port("f"),
            port("g"),
            port("h")
        );
        let mut sw = switch(&d, &file);
        let state_path = d.join("ctl.state.json");
        assert_eq!(sw.config.state_file.as_deref(), Some(state_path.as_path()));
        sw.add_bridge(&json!({"name": "br0", "mac_age_secs": 60})).unwrap();
        let p1 = sw
            .add_port(&json!({"name": "p1", "type": "vhost-user", "socket": sock("p1"),
                              "bridge": "br0", "vlan": 10}))
            .unwrap();
        sw.add_port(&json!({"name": "p2", "type": "vhost-user", "socket": sock("p2"),
                            "mode": "client"}))
            .unwrap();
        sw.add_port(&json!({"name": "p3", "type": "vhost-user", "socket": sock("p3")})).unwrap();
        sw.add_xconnect(&json!({"ports": ["p2", "p3"]})).unwrap();
        // The file's port joins the API's bridge; an API port joins the file's bridge.
        sw.bridge_add_port("br0", &json!({"port": "f", "trunk": [5, 6]})).unwrap();
        sw.add_port(&json!({"name": "p4", "type": "vhost-user", "socket": sock("p4"),
                            "bridge": "fbr"}))
            .unwrap();
        let e = sw
            .add_port(&json!({"name": "z", "type": "vhost-user", "socket": state_path}))
            .unwrap_err();
        assert_eq!((e.status(), e.field.as_deref()), (409, Some("socket")), "{e}");
        assert!(sw.save_state());
        let saved = sw.state_snapshot();
        assert_eq!(saved.ports.len(), 4);
        assert_eq!(saved.bridges.len(), 1);
        assert_eq!(saved.bridge_ports.len(), 3, "{saved:?}");
        assert_eq!(saved.xconnects.len(), 1);
        assert_eq!(load_ok(&state_path), saved);
        drop(sw.stop());

        // Same config: everything comes back, MAC included.
        let mut sw = switch(&d, &file);
        assert_eq!(sw.restore_state(), RestoreReport { restored: 9, skipped: 0 });
        assert_eq!(sw.state_snapshot(), saved);
        assert_eq!(sw.port("p1").unwrap().mac, p1.mac);
        assert_eq!(sw.port("p1").unwrap().vlan, Some(10));
        assert_eq!(sw.port("f").unwrap().trunk, Some(vec![5, 6]));
        assert!(d.join("p1.sock").exists(), "server socket listening again");
        drop(sw.stop());

        // The file now has a port p1 and a bridge br0: the file wins, the rest stays.
        let file2 = format!(
            "{}[[ports]]\nname = \"p1\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n{}\
             [[bridge]]\nname = \"br0\"\nports = [\"p1\", \"q\"]\n",
            file,
            sock("other"),
            port("q")
        );
        let mut sw = switch(&d, &file2);
        let r = sw.restore_state();
        // Skipped: bridge br0, port p1, p1's membership. f still joins the file's br0.
        assert_eq!(r, RestoreReport { restored: 6, skipped: 3 });
        let now = load_ok(&state_path);
        assert!(now.bridges.is_empty());
        assert_eq!(now.ports.len(), 3);
        drop(sw.stop());

        // A corrupt file: set aside, the switch starts with the file config alone.
        std::fs::write(&state_path, b"{\"version\": 1, \"ports\": [tru").unwrap();
        let mut sw = switch(&d, &file);
        assert_eq!(sw.restore_state(), RestoreReport::default());
        assert_eq!(sw.ports().len(), 3);
        assert!(load_ok(&state_path).is_empty(), "rewritten to what exists");
        let aside = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ctl.state.json.corrupt-"))
            .count();
        assert_eq!(aside, 1);
        drop(sw.stop());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_state_file_that_cannot_be_written_leaves_the_change_live() {
        let d = tmp("unwritable");
        std::fs::write(d.join("blocker"), b"a file where a directory should be").unwrap();
        let top = format!("state_file = \"{}\"\n", d.join("blocker/s.json").display());
        let mut sw = switch_with(&d, &top, "");
        // Unreadable (not a directory) and cannot be set aside: logged, nothing restored.
        assert_eq!(sw.restore_state(), RestoreReport::default());
        sw.add_bridge(&json!({"name": "br0"})).unwrap();
        let failures = write_failures();
        assert!(!sw.save_state(), "the write fails");
        assert!(write_failures() > failures, "the failure is counted for /metrics");
        assert!(sw.bridge("br0").is_some(), "the change stays");
        drop(sw.stop());
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn load_ok(path: &Path) -> StateFile {
        match load(path) {
            Loaded::State(s) => s,
            other => panic!("{}: {other:?}", path.display()),
        }
    }
}
