//! The running switch: the [`Engine`] with the packet memory, every port's config and
//! where it came from (the file or the control API), and the operations the control
//! API and a reload perform on it. Each operation checks everything first and changes
//! nothing when it fails; its error carries the HTTP status and the request field at
//! fault ([`SwitchError`]).
//!
//! One thread at a time works on a `Switch` (the daemon keeps it behind a mutex that
//! only the control server and the supervising thread take; the workers never do).
//! Ports are created and dropped here, on that thread: a dropped vhost-user port
//! removes its socket file. Every operation that may have freed buffers returns this
//! thread's mempool cache to the pool, so that [`Switch::mempool`] is exact.
//!
//! - [`request`]: reading JSON request fields.
//! - [`reload`]: applying the difference between the running file config and a new
//!   one.
//! - [`state_file`]: what the control API made, kept on disk and replayed at start.

pub mod reload;
pub mod request;
pub mod state_file;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use podwire_driver::Mempool;
use serde_json::Value;

use crate::bridge::{BridgeShared, VlanMode};
use crate::config::{self, Config, Limits, PortConfig, PortKind};
use crate::control::{MempoolStats, PortStats, PortView, StatsResponse, XconnectView};
use crate::engine::{Attachment, Engine, OpError};
use crate::ports::build_port;
use request::{object, Fields};

/// How a request failed; maps onto an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: a field is wrong.
    BadRequest,
    /// 404: what the request names does not exist.
    NotFound,
    /// 409: it conflicts with what exists.
    Conflict,
    /// 503: a worker did not answer.
    Unavailable,
    /// 500: the change failed half way (the log says what was applied).
    Internal,
}

/// A refused or failed request: one sentence, the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SwitchError {
    /// The kind (HTTP status).
    pub kind: ErrorKind,
    /// The request field at fault.
    pub field: Option<String>,
    /// One sentence.
    pub message: String,
}

impl SwitchError {
    fn new(kind: ErrorKind, field: Option<&str>, reason: String) -> Self {
        let message = match field {
            Some(f) if !reason.starts_with(&format!("{f}:")) => format!("{f}: {reason}"),
            _ => reason,
        };
        Self { kind, field: field.map(str::to_owned), message }
    }

    /// A 400 about `field`.
    pub fn bad_request(field: Option<&str>, reason: String) -> Self {
        Self::new(ErrorKind::BadRequest, field, reason)
    }

    /// A 404 about `field`.
    pub fn not_found(field: Option<&str>, reason: String) -> Self {
        Self::new(ErrorKind::NotFound, field, reason)
    }

    /// A 409 about `field`.
    pub fn conflict(field: Option<&str>, reason: String) -> Self {
        Self::new(ErrorKind::Conflict, field, reason)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    fn from_op(e: OpError, field: Option<&str>) -> Self {
        match e {
            OpError::NotFound(m) => Self::new(ErrorKind::NotFound, field, m),
            OpError::Conflict(m) => Self::new(ErrorKind::Conflict, field, m),
            OpError::Unavailable(m) => Self::new(ErrorKind::Unavailable, None, m),
        }
    }

    fn from_field(e: config::FieldError) -> Self {
        Self { kind: ErrorKind::BadRequest, field: e.field, message: e.message }
    }
}

/// Where a port, bridge or cross-connect came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The config file (a reload may change or remove it).
    Config,
    /// The control API (a reload leaves it alone).
    Api,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }
}

struct PortEntry {
    config: PortConfig,
    origin: Origin,
}

/// See the module docs.
pub struct Switch {
    engine: Engine,
    pool: Mempool,
    /// The file config last applied.
    config: Config,
    config_path: Option<PathBuf>,
    limits: Limits,
    ports: Vec<PortEntry>,
    api_bridges: Vec<String>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch").field("engine", &self.engine).finish()
    }
}

impl Switch {
    /// Wraps an engine started from `config` (its ports in `config.ports` order).
    /// `config_path` is the file reloads read.
    pub fn new(
        engine: Engine,
        pool: Mempool,
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Self {
        let ports = config
            .ports
            .iter()
            .map(|c| PortEntry { config: c.clone(), origin: Origin::Config })
            .collect();
        let limits = config.limits;
        Self { engine, pool, config, config_path, limits, ports, api_bridges: Vec::new() }
    }

    /// The engine (read-only).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The file reloads read.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Republishes link state of idle ports; call it now and then.
    pub fn refresh_idle(&self) {
        self.engine.refresh_idle();
    }

    /// Lets idle ports apply pending control-plane changes; call it every few ms.
    pub fn service_idle(&mut self) {
        self.engine.service_idle();
    }

    /// Stops the workers and hands every port back.
    pub fn stop(self) -> Vec<Box<dyn podwire_driver::Port>> {
        self.engine.stop()
    }

    /// Buffers in the pool and how many are free.
    pub fn mempool(&self) -> MempoolStats {
        self.pool.release_thread_cache();
        MempoolStats {
            total: u64::from(self.pool.config().count),
            free: (self.pool.in_ring() + self.engine.cached_buffers()) as u64,
        }
    }

    /// `GET /stats`.
    pub fn stats(&self) -> StatsResponse {
        StatsResponse {
            ports: self.engine.status().iter().map(|s| PortStats::of(s)).collect(),
            mempool: Some(self.mempool()),
            control: None,
        }
    }

    /// Every port.
    pub fn ports(&self) -> Vec<PortView> {
        self.engine.status().iter().filter_map(|s| self.port(s.name())).collect()
    }

    /// One port.
    pub fn port(&self, name: &str) -> Option<PortView> {
        let status = self.engine.port_status(name)?;
        let s = PortStats::of(&status);
        let entry = self.ports.iter().find(|e| e.config.name == name);
        let (socket, mode) = match entry.map(|e| &e.config.kind) {
            Some(PortKind::VhostUser(v)) => (
                Some(v.socket.display().to_string()),
                Some(
                    match v.mode {
                        podwire_vhost::SocketMode::Server => "server",
                        podwire_vhost::SocketMode::Client => "client",
                    }
                    .to_owned(),
                ),
            ),
            _ => (None, None),
        };
        let (mut bridge, mut vlan, mut trunk, mut xconnect) = (None, None, None, None);
        match self.engine.attachment(name) {
            Some(Attachment::Bridge(b, VlanMode::Access(v))) => (bridge, vlan) = (Some(b), Some(v)),
            Some(Attachment::Bridge(b, VlanMode::Trunk(t))) => (bridge, trunk) = (Some(b), Some(t)),
            Some(Attachment::Xconnect(peer)) => xconnect = Some(peer),
            _ => {}
        }
        Some(PortView {
            name: s.name,
            kind: s.kind,
            mac: s.mac,
            link: s.link,
            queues: s.queues,
            socket,
            mode,
            bridge,
            vlan,
            trunk,
            xconnect,
            worker: self.engine.port_core(name),
            origin: entry.map(|e| e.origin.as_str().to_owned()),
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            rx_drops: s.rx_drops,
            tx_drops: s.tx_drops,
            errors: s.errors,
        })
    }

    /// Every bridge.
    pub fn bridges(&self) -> Vec<Arc<BridgeShared>> {
        self.engine.bridges()
    }

    /// One bridge.
    pub fn bridge(&self, name: &str) -> Option<Arc<BridgeShared>> {
        self.engine.bridge(name)
    }

    /// Every cross-connect.
    pub fn xconnects(&self) -> Vec<XconnectView> {
        self.engine.xconnects().into_iter().map(|ports| XconnectView { ports }).collect()
    }

    /// Checks that `cfg` may be created next to the ports there are: name, socket,
    /// interface or PCI device not taken, the port limit not reached. `ignore` names
    /// ports about to go (a reload replacing them).
    fn check_new_port(
        &self,
        cfg: &PortConfig,
        ignore: &[String],
        extra: usize,
    ) -> Result<(), SwitchError> {
        let live = || self.ports.iter().filter(|e| !ignore.contains(&e.config.name));
        let count = live().count() + extra;
        if count >= self.limits.max_ports {
            return Err(SwitchError::conflict(
                None,
                format!(
                    "the port limit is reached ({count} ports; [limits] max_ports = {})",
                    self.limits.max_ports
                ),
            ));
        }
        for e in live() {
            if e.config.name == cfg.name {
                return Err(SwitchError::conflict(
                    Some("name"),
                    format!("a port named {:?} exists", cfg.name),
                ));
            }
            let clash = match (&e.config.kind, &cfg.kind) {
                (PortKind::VhostUser(a), PortKind::VhostUser(b)) if a.socket == b.socket => Some((
                    "socket",
                    format!("socket {} is in use by port {:?}", b.socket.display(), e.config.name),
                )),
                (PortKind::AfXdp(a), PortKind::AfXdp(b)) if a.interface == b.interface => Some((
                    "interface",
                    format!("interface {} is in use by port {:?}", b.interface, e.config.name),
                )),
                (PortKind::Vfio(a), PortKind::Vfio(b)) if a.pci == b.pci => Some((
                    "pci",
                    format!("PCI device {} is in use by port {:?}", b.pci, e.config.name),
                )),
                _ => None,
            };
            if let Some((field, why)) = clash {
                return Err(SwitchError::conflict(Some(field), why));
            }
        }
        if let PortKind::VhostUser(v) = &cfg.kind {
            if v.socket == self.config.control_socket {
                return Err(SwitchError::conflict(
                    Some("socket"),
                    format!("{} is podwire's control socket", v.socket.display()),
                ));
            }
            if self.config.state_file.as_ref() == Some(&v.socket) {
                return Err(SwitchError::conflict(
                    Some("socket"),
                    format!("{} is podwire's state file", v.socket.display()),
                ));
            }
        }
        Ok(())
    }

    /// Creates port `cfg` (idle) and records it.
    fn create_port(&mut self, cfg: PortConfig, origin: Origin) -> Result<(), SwitchError> {
        let field = match &cfg.kind {
            PortKind::VhostUser(_) => "socket",
            PortKind::AfXdp(_) => "interface",
            PortKind::Vfio(_) => "pci",
        };
        let port = build_port(&cfg, &self.pool).map_err(|e| {
            let kind = if e.reason.contains("in use") || e.reason.contains("exists") {
                ErrorKind::Conflict
            } else {
                ErrorKind::BadRequest
            };
            SwitchError::new(kind, Some(field), e.reason)
        })?;
        if let Err((e, port)) = self.engine.add_port(port) {
            drop(port);
            return Err(SwitchError::from_op(e, Some("name")));
        }
        tracing::info!(port = %cfg.name, origin = origin.as_str(), "port created");
        self.ports.push(PortEntry { config: cfg, origin });
        Ok(())
    }

    /// Removes port `name` (leaving its bridge or cross-connect) and drops it.
    fn destroy_port(&mut self, name: &str) -> Result<(), SwitchError> {
        let port = self.engine.remove_port(name).map_err(|e| SwitchError::from_op(e, None))?;
        drop(port);
        self.pool.release_thread_cache();
        self.ports.retain(|e| e.config.name != name);
        tracing::info!(port = name, "port removed");
        Ok(())
    }

    /// `POST /ports`.
    pub fn add_port(&mut self, body: &Value) -> Result<PortView, SwitchError> {
        let obj = object(body)?;
        let mut table = obj.clone();
        let bridge = match table.remove("bridge") {
            None => None,
            Some(Value::String(b)) => Some(b),
            Some(v) => {
                return Err(SwitchError::bad_request(
                    Some("bridge"),
                    format!("must be string, not {}", json_type(&v)),
                ))
            }
        };
        let worker = match table.remove("worker") {
            None | Some(Value::Null) => None,
            Some(v) => Some(worker_field(&v)?),
        };
        let (cfg, vlan) = config::port_from_json(&table).map_err(SwitchError::from_field)?;
        if let (Some(_), None) = (worker, &bridge) {
            return Err(SwitchError::bad_request(
                Some("worker"),
                "only bridge ports are placed on a worker: give `bridge` too".into(),
            ));
        }
        if let Some(w) = worker {
            self.check_worker(w)?;
        }
        if let (Some(mode), None) = (&vlan, &bridge) {
            let field = if matches!(mode, VlanMode::Trunk(_)) { "trunk" } else { "vlan" };
            return Err(SwitchError::bad_request(
                Some(field),
                "only bridge ports have VLANs: give `bridge` too".into(),
            ));
        }
        if let Some(b) = &bridge {
            if self.engine.bridge(b).is_none() {
                return Err(SwitchError::not_found(
                    Some("bridge"),
                    format!("no bridge named {b:?}"),
                ));
            }
        }
        self.check_new_port(&cfg, &[], 0)?;
        let name = cfg.name.clone();
        self.create_port(cfg, Origin::Api)?;
        if let Some(b) = bridge {
            let mode = vlan.unwrap_or_default();
            if let Err(e) = self.engine.bridge_add_port_on(&b, &name, mode, worker) {
                let _ = self.destroy_port(&name);
                return Err(SwitchError::from_op(e, Some("bridge")));
            }
        }
        self.port(&name).ok_or_else(|| {
            SwitchError::new(ErrorKind::Internal, None, format!("port {name:?} vanished"))
        })
    }

    /// `DELETE /ports/NAME`.
    pub fn delete_port(&mut self, name: &str) -> Result<(), SwitchError> {
        if self.engine.port_status(name).is_none() {
            return Err(SwitchError::not_found(None, format!("no port named {name:?}")));
        }
        self.destroy_port(name)
    }

    /// `POST /bridges`.
    pub fn add_bridge(&mut self, body: &Value) -> Result<Arc<BridgeShared>, SwitchError> {
        let mut f = Fields::new(object(body)?);
        let name = f.string("name", true)?.unwrap_or_default();
        let age = f.integer("mac_age_secs")?;
        let size = f.integer("mac_table_size")?;
        f.finish()?;
        let spec = config::bridge_from_request(name, age, size).map_err(SwitchError::from_field)?;
        let b =
            self.engine.create_bridge(&spec).map_err(|e| SwitchError::from_op(e, Some("name")))?;
        self.api_bridges.push(spec.name.clone());
        tracing::info!(bridge = %spec.name, "bridge created");
        Ok(b)
    }

    /// `DELETE /bridges/NAME`.
    pub fn delete_bridge(&mut self, name: &str) -> Result<(), SwitchError> {
        self.engine.delete_bridge(name).map_err(|e| SwitchError::from_op(e, None))?;
        self.pool.release_thread_cache();
        self.api_bridges.retain(|b| b != name);
        tracing::info!(bridge = name, "bridge deleted");
        Ok(())
    }

    /// `POST /bridges/NAME/ports`.
    pub fn bridge_add_port(&mut self, bridge: &str, body: &Value) -> Result<(), SwitchError> {
        let mut f = Fields::new(object(body)?);
        let port = f.string("port", true)?.unwrap_or_default().to_owned();
        let vlan = f.raw("vlan");
        let trunk = f.raw("trunk");
        let mode = config::vlan_from_json(vlan, trunk).map_err(SwitchError::from_field)?;
        let worker = match f.raw("worker") {
            None | Some(Value::Null) => None,
            Some(v) => Some(worker_field(v)?),
        };
        f.finish()?;
        if let Some(w) = worker {
            self.check_worker(w)?;
        }
        if self.engine.bridge(bridge).is_none() {
            return Err(SwitchError::not_found(None, format!("no bridge named {bridge:?}")));
        }
        if self.engine.port_status(&port).is_none() {
            return Err(SwitchError::not_found(Some("port"), format!("no port named {port:?}")));
        }
        self.engine
            .bridge_add_port_on(bridge, &port, mode, worker)
            .map_err(|e| SwitchError::from_op(e, Some("port")))?;
        tracing::info!(bridge, port = %port, "port joined the bridge");
        Ok(())
    }

    /// `DELETE /bridges/NAME/ports/PORT`.
    pub fn bridge_remove_port(&mut self, bridge: &str, port: &str) -> Result<(), SwitchError> {
        if self.engine.bridge(bridge).is_none() {
            return Err(SwitchError::not_found(None, format!("no bridge named {bridge:?}")));
        }
        self.engine.bridge_remove_port(bridge, port).map_err(|e| SwitchError::from_op(e, None))?;
        self.pool.release_thread_cache();
        tracing::info!(bridge, port, "port left the bridge");
        Ok(())
    }

    /// `POST /xconnects`.
    pub fn add_xconnect(&mut self, body: &Value) -> Result<XconnectView, SwitchError> {
        let mut f = Fields::new(object(body)?);
        let ports = f.raw("ports");
        f.finish()?;
        let names: Vec<&str> = match ports {
            None => return Err(SwitchError::bad_request(Some("ports"), "missing field".into())),
            Some(Value::Array(a)) => {
                a.iter().map(|v| v.as_str()).collect::<Option<_>>().ok_or_else(|| {
                    SwitchError::bad_request(Some("ports"), "must be an array of port names".into())
                })?
            }
            Some(v) => {
                return Err(SwitchError::bad_request(
                    Some("ports"),
                    format!("must be an array of 2 port names, not {}", json_type(v)),
                ))
            }
        };
        let [a, b] = names[..] else {
            return Err(SwitchError::bad_request(
                Some("ports"),
                format!("a cross-connect joins exactly 2 ports, {} given", names.len()),
            ));
        };
        for n in [a, b] {
            if self.engine.port_status(n).is_none() {
                return Err(SwitchError::not_found(Some("ports"), format!("no port named {n:?}")));
            }
        }
        self.engine.add_xconnect(a, b).map_err(|e| SwitchError::from_op(e, Some("ports")))?;
        tracing::info!("cross-connect {a} <-> {b} added");
        Ok(XconnectView { ports: [a.to_owned(), b.to_owned()] })
    }

    /// `DELETE /xconnects/PORT`.
    pub fn delete_xconnect(&mut self, port: &str) -> Result<(), SwitchError> {
        self.engine.remove_xconnect(port).map_err(|e| SwitchError::from_op(e, None))?;
        self.pool.release_thread_cache();
        tracing::info!(port, "cross-connect removed");
        Ok(())
    }
}

/// Reads the `worker` field: a core number.
fn worker_field(v: &Value) -> Result<usize, SwitchError> {
    v.as_u64().and_then(|c| usize::try_from(c).ok()).ok_or_else(|| {
        SwitchError::bad_request(
            Some("worker"),
            format!("must be a core number (one of [workers] cores), not {}", json_type(v)),
        )
    })
}

impl Switch {
    /// Whether a worker runs on core `core` (400 naming `worker` if not).
    fn check_worker(&self, core: usize) -> Result<(), SwitchError> {
        let cores: Vec<usize> = self.engine.assignments().iter().map(|a| a.core).collect();
        if cores.contains(&core) {
            return Ok(());
        }
        Err(SwitchError::bad_request(
            Some("worker"),
            format!("no worker runs on core {core}; [workers] cores = {cores:?}"),
        ))
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
