//! The forwarding engine: poll-mode worker threads, one pinned per core, each running
//! the cross-connects and bridges assigned to it. This is the library `podwire run`
//! drives.
//!
//! # Threading
//! [`Engine::start`] starts one worker per core and moves every cross-connected port
//! onto the worker that owns its pair (both ports of a pair on the same worker, pairs
//! dealt round-robin over the cores); [`Engine::start_with_bridges`] does the same
//! with L2 bridges (bridges homed round-robin after the pairs, each member placed as
//! a port joining at runtime). From then on only that worker calls the port. Other threads see
//! a port through its [`PortStatus`]: the shared counters, and link state and MAC
//! that the worker republishes every few hundred microseconds. Ports in no
//! cross-connect or bridge stay with the engine (unpolled, "idle") and are refreshed
//! by [`Engine::refresh_idle`] on the thread that owns the engine.
//!
//! # At runtime
//! The thread owning the engine changes it while the workers forward: ports are
//! added ([`Engine::add_port`], idle at first) and removed ([`Engine::remove_port`]),
//! bridges created and deleted, ports join and leave bridges, cross-connects come and
//! go. Each change that touches a worker is a command (`engine::command`) handed to that worker
//! through its lock-free inbox and applied between two poll rounds; the engine waits
//! for the reply. Ports are created and dropped on the calling thread, never on a
//! worker. Placement: a new cross-connect or bridge goes to the worker with the
//! fewest ports; a port joining a bridge goes to the worker asked for, else to the
//! one with the fewest ports. A bridge runs in parts, one on each worker polling a
//! member (and one on its home worker): frames for a member of another worker cross
//! through the single-producer/single-consumer rings between every two workers
//! (`cross`, `ring`). A joining port is added on its worker before the other
//! parts learn of it; a leaving port is forgotten by the other parts before its own
//! worker lets it go, so no frame for it enters a ring afterwards and those already
//! in one are freed by its worker.
//!
//! Each worker counts its poll rounds as busy (packets moved) or idle
//! ([`WorkerPollStats`], [`Engine::worker_polls`]) for `GET /metrics`.
//!
//! [`Engine::stop`] sets the stop flag, joins the workers and hands every port back
//! (dropping an engine does the same and drops the ports).

pub(crate) mod command;
pub(crate) mod cross;
mod poll_stats;
pub(crate) mod ring;
mod worker;
mod xconnect;

pub use poll_stats::WorkerPollStats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use podwire_driver::port::CounterSnapshot;
use podwire_driver::{MacAddr, Mempool, Port, PortCounters, PortInfo};

use crate::bridge::{Bridge, BridgeShared, BridgeSpec, RemoteMember, VlanMode};

use command::{Command, Inbox, Reply};
use xconnect::XconnectPair;

/// After this long without a reply the engine logs that a worker is slow (it keeps
/// waiting: a command handed over cannot be taken back, and giving up would leave the
/// worker running something the engine does not know about).
const COMMAND_SLOW: Duration = Duration::from_secs(5);
/// How often the engine checks, while it waits, that the worker still runs.
const COMMAND_POLL: Duration = Duration::from_millis(100);
/// Most workers (a flood marks the workers it reaches in a 64-bit mask).
pub const MAX_WORKERS: usize = 64;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No worker core was given.
    #[error("no worker cores")]
    NoCores,
    /// A cross-connect refers to a port that does not exist, to one port twice, or to
    /// a port already cross-connected.
    #[error("cross-connect {index}: {reason}")]
    BadXconnect {
        /// Which cross-connect.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A bridge refers to a port that does not exist or is already used, or no
    /// mempool was given for its flood copies.
    #[error("bridge {name}: {reason}")]
    BadBridge {
        /// Which bridge.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A worker thread could not be created.
    #[error("cannot start worker thread for core {core}: {source}")]
    Spawn {
        /// The core.
        core: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A runtime change was refused.
    #[error(transparent)]
    Op(#[from] OpError),
    /// More worker cores than the engine supports.
    #[error("{0} worker cores; at most {MAX_WORKERS} are supported")]
    TooManyCores(usize),
    /// A worker could not pin itself to its core.
    #[error("cannot pin worker thread to core {core}: {source}")]
    Pin {
        /// The core.
        core: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a runtime change was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The named port, bridge or cross-connect does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (name taken, port attached, bridge
    /// not empty).
    #[error("{0}")]
    Conflict(String),
    /// A worker did not take or answer the command in time.
    #[error("{0}")]
    Unavailable(String),
}

/// Where a port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// In no bridge or cross-connect: not polled.
    Idle,
    /// A member of this bridge, with its VLAN mode.
    Bridge(String, VlanMode),
    /// Cross-connected with this port.
    Xconnect(String),
}

/// What other threads may know about a port while a worker owns it.
#[derive(Debug)]
pub struct PortStatus {
    name: String,
    kind: &'static str,
    queues: u16,
    mac: AtomicU64,
    link_up: AtomicBool,
    counters: Arc<PortCounters>,
    /// Frames for this port that another worker could not hand over (the ring to
    /// this port's worker was full). Several writers: bumped only on a drop.
    cross_drops: AtomicU64,
}

fn mac_to_u64(m: MacAddr) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&m.0);
    u64::from_le_bytes(b)
}

fn mac_from_u64(v: u64) -> MacAddr {
    let b = v.to_le_bytes();
    MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
}

impl PortStatus {
    /// A status for `port`, read on the thread that owns the port.
    pub fn of(port: &dyn Port) -> Self {
        let info = port.info();
        Self {
            name: port.name().to_owned(),
            kind: info.kind,
            queues: info.queues,
            mac: AtomicU64::new(mac_to_u64(info.mac)),
            link_up: AtomicBool::new(port.link_up()),
            counters: port.counters(),
            cross_drops: AtomicU64::new(0),
        }
    }

    /// Counts one frame for this port dropped on its way from another worker.
    #[cold]
    pub(crate) fn count_cross_drop(&self) {
        self.cross_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames for this port dropped on their way from another worker (ring full).
    pub fn cross_worker_drops(&self) -> u64 {
        self.cross_drops.load(Ordering::Relaxed)
    }

    /// Republishes link state and MAC; called by the thread owning `port`.
    pub(crate) fn publish(&self, port: &dyn Port) {
        let up = port.link_up();
        if self.link_up.load(Ordering::Relaxed) != up {
            self.link_up.store(up, Ordering::Relaxed);
        }
        let mac = mac_to_u64(port.info().mac);
        if self.mac.load(Ordering::Relaxed) != mac {
            self.mac.store(mac, Ordering::Relaxed);
        }
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of port ("vhost-user", ...).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Number of queues.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// The port's MAC address as last published.
    pub fn mac(&self) -> MacAddr {
        mac_from_u64(self.mac.load(Ordering::Relaxed))
    }

    /// The port's [`PortInfo`] as last published.
    pub fn info(&self) -> PortInfo {
        PortInfo { kind: self.kind, mac: self.mac(), queues: self.queues }
    }

    /// Link state as last published.
    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Relaxed)
    }

    /// The port's counters (live).
    pub fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }

    /// The counters summed over all queues.
    pub fn totals(&self) -> CounterSnapshot {
        self.counters.total()
    }
}

/// One worker as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerAssignment {
    /// The core the worker is pinned to.
    pub core: usize,
    /// The cross-connects it runs, by port names.
    pub xconnects: Vec<[String; 2]>,
    /// The bridges it runs, by name.
    pub bridges: Vec<String>,
}

struct Worker {
    core: usize,
    polls: Arc<WorkerPollStats>,
    handle: Option<JoinHandle<Vec<Box<dyn Port>>>>,
    inbox: Arc<Inbox>,
    /// Ports it polls.
    ports: usize,
    /// Buffers its thread cache holds, as it last published.
    cached: Arc<std::sync::atomic::AtomicUsize>,
}

struct XconnectEntry {
    ports: [String; 2],
    worker: usize,
}

struct BridgeEntry {
    shared: Arc<BridgeShared>,
    /// The worker that runs the bridge's part from its creation to its deletion.
    home: usize,
    /// Workers running a part of it: the home, and every worker polling a member.
    parts: Vec<usize>,
    members: Vec<MemberEntry>,
}

/// A bridge member as the engine knows it.
struct MemberEntry {
    name: String,
    id: u32,
    worker: usize,
    mode: VlanMode,
    status: Arc<PortStatus>,
}

/// The running forwarding engine.
pub struct Engine {
    stop: Arc<AtomicBool>,
    workers: Vec<Worker>,
    idle: Vec<(Box<dyn Port>, Arc<PortStatus>)>,
    status: Vec<Arc<PortStatus>>,
    bridges: Vec<BridgeEntry>,
    xconnects: Vec<XconnectEntry>,
    pool: Option<Mempool>,
    /// The next engine-wide id for a bridge member or a bridge.
    next_id: u32,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.assignments())
            .field("idle_ports", &self.idle.len())
            .finish()
    }
}

impl Engine {
    /// Starts one pinned worker per core; cross-connect `i` goes to
    /// `cores[i % cores.len()]`; ports in no cross-connect stay idle with the engine.
    /// `xconnects` holds indices into `ports`. Returns once every worker is pinned
    /// and polling; on error every port has been dropped.
    pub fn start(
        ports: Vec<Box<dyn Port>>,
        xconnects: &[[usize; 2]],
        cores: &[usize],
    ) -> Result<Self, EngineError> {
        Self::start_with_bridges(ports, xconnects, &[], cores, None)
    }

    /// [`Engine::start`] plus L2 bridges: bridge `k` goes to
    /// `cores[(xconnects.len() + k) % cores.len()]` with all its ports. `pool` is the
    /// mempool flooded frames are copied into (needed for bridges, also those
    /// created later).
    pub fn start_with_bridges(
        ports: Vec<Box<dyn Port>>,
        xconnects: &[[usize; 2]],
        bridges: &[BridgeSpec],
        cores: &[usize],
        pool: Option<&Mempool>,
    ) -> Result<Self, EngineError> {
        if cores.is_empty() {
            return Err(EngineError::NoCores);
        }
        let status: Vec<Arc<PortStatus>> =
            ports.iter().map(|p| Arc::new(PortStatus::of(p.as_ref()))).collect();
        let mut slots: Vec<Option<Box<dyn Port>>> = ports.into_iter().map(Some).collect();

        let mut per_core: Vec<Vec<XconnectPair>> = cores.iter().map(|_| Vec::new()).collect();
        let mut xc_entries = Vec::new();
        for (index, &[a, b]) in xconnects.iter().enumerate() {
            let bad = |reason: String| EngineError::BadXconnect { index, reason };
            if a == b {
                return Err(bad(format!("port {a} is cross-connected with itself")));
            }
            let mut take = |i: usize| {
                slots
                    .get_mut(i)
                    .ok_or_else(|| bad(format!("no port {i}")))?
                    .take()
                    .ok_or_else(|| bad(format!("port {i} is already cross-connected")))
            };
            let pa = take(a)?;
            let pb = take(b)?;
            let pair = XconnectPair::new([pa, pb], [status[a].clone(), status[b].clone()]);
            let w = index % cores.len();
            xc_entries.push(XconnectEntry {
                ports: [status[a].name.clone(), status[b].name.clone()],
                worker: w,
            });
            per_core[w].push(pair);
        }
        if cores.len() > MAX_WORKERS {
            return Err(EngineError::TooManyCores(cores.len()));
        }
        if !bridges.is_empty() && pool.is_none() {
            return Err(EngineError::BadBridge {
                name: bridges[0].name.clone(),
                reason: "no mempool for flood copies".into(),
            });
        }
        // Bridge members must exist and be free; they join once the workers run.
        let mut seen = vec![false; slots.len()];
        for spec in bridges {
            let bad = |reason: String| EngineError::BadBridge { name: spec.name.clone(), reason };
            for &(i, _) in &spec.ports {
                match slots.get(i) {
                    None => return Err(bad(format!("no port {i}"))),
                    Some(None) => return Err(bad(format!("port {i} is already in use"))),
                    Some(Some(_)) if seen[i] => {
                        return Err(bad(format!("port {i} is already in use")))
                    }
                    Some(Some(_)) => seen[i] = true,
                }
            }
        }
        let idle: Vec<(Box<dyn Port>, Arc<PortStatus>)> =
            slots.into_iter().zip(&status).filter_map(|(p, s)| p.map(|p| (p, s.clone()))).collect();

        let stop = Arc::new(AtomicBool::new(false));
        let mut engine = Engine {
            stop: stop.clone(),
            workers: Vec::new(),
            idle,
            status,
            bridges: Vec::new(),
            xconnects: xc_entries,
            pool: pool.cloned(),
            next_id: 0,
        };
        let (mut cross_tx, mut cross_rx) = cross::mesh(cores.len());
        let (ready_tx, ready_rx) = mpsc::channel();
        for (index, (&core, pairs)) in cores.iter().zip(per_core).enumerate() {
            let ports = 2 * pairs.len();
            let cross = worker::CrossLinks {
                tx: std::mem::take(&mut cross_tx[index]),
                rx: std::mem::take(&mut cross_rx[index]),
            };
            let stop = stop.clone();
            let ready = ready_tx.clone();
            let inbox = Inbox::new();
            let for_worker = inbox.clone();
            let cached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let gauge = worker::CacheGauge { pool: pool.cloned(), held: cached.clone() };
            let polls = Arc::new(WorkerPollStats::new(core));
            let worker_polls = polls.clone();
            let handle = std::thread::Builder::new()
                .name(format!("podwire-w{core}"))
                .spawn(move || {
                    let links = worker::WorkerLinks {
                        inbox: for_worker,
                        cache: gauge,
                        polls: worker_polls,
                        cross,
                    };
                    worker::run(core, pairs, Vec::new(), stop, links, ready)
                })
                .map_err(|source| EngineError::Spawn { core, source })?;
            engine.workers.push(Worker { core, polls, handle: Some(handle), inbox, ports, cached });
        }
        drop(ready_tx);
        for _ in 0..engine.workers.len() {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                // Dropping the engine stops and joins the workers that did start.
                Ok((core, Err(source))) => return Err(EngineError::Pin { core, source }),
                Err(_) => break,
            }
        }
        // Bridge `k` is homed on worker (xconnects + k) mod workers, as before; its
        // members are placed like ports joining at runtime.
        for (k, spec) in bridges.iter().enumerate() {
            let empty = BridgeSpec { ports: Vec::new(), ..spec.clone() };
            let home = (xconnects.len() + k) % cores.len();
            let bad = |e: OpError| EngineError::BadBridge {
                name: spec.name.clone(),
                reason: e.to_string(),
            };
            engine.create_bridge_on(&empty, home).map_err(bad)?;
            for (i, mode) in &spec.ports {
                let name = engine.status[*i].name.clone();
                engine.bridge_add_port_on(&spec.name, &name, mode.clone(), None).map_err(bad)?;
            }
        }
        Ok(engine)
    }

    /// Workers and what they run.
    pub fn assignments(&self) -> Vec<WorkerAssignment> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerAssignment {
                core: w.core,
                xconnects: self
                    .xconnects
                    .iter()
                    .filter(|x| x.worker == i)
                    .map(|x| x.ports.clone())
                    .collect(),
                bridges: self
                    .bridges
                    .iter()
                    .filter(|b| b.parts.contains(&i))
                    .map(|b| b.shared.name().to_owned())
                    .collect(),
            })
            .collect()
    }

    /// Every worker's poll-round counters (busy and idle), in worker order.
    pub fn worker_polls(&self) -> Vec<Arc<WorkerPollStats>> {
        self.workers.iter().map(|w| w.polls.clone()).collect()
    }

    /// The bridges, in the order they were created.
    pub fn bridges(&self) -> Vec<Arc<BridgeShared>> {
        self.bridges.iter().map(|b| b.shared.clone()).collect()
    }

    /// One bridge.
    pub fn bridge(&self, name: &str) -> Option<Arc<BridgeShared>> {
        self.bridges.iter().find(|b| b.shared.name() == name).map(|b| b.shared.clone())
    }

    /// The cross-connects, by port names, in the order they were made.
    pub fn xconnects(&self) -> Vec<[String; 2]> {
        self.xconnects.iter().map(|x| x.ports.clone()).collect()
    }

    /// Names of the ports that are in no cross-connect or bridge (not polled).
    pub fn idle_ports(&self) -> Vec<String> {
        self.idle.iter().map(|(p, _)| p.name().to_owned()).collect()
    }

    /// Every port's status, in the order the ports were given or added.
    pub fn status(&self) -> Vec<Arc<PortStatus>> {
        self.status.clone()
    }

    /// One port's status.
    pub fn port_status(&self, name: &str) -> Option<Arc<PortStatus>> {
        self.status.iter().find(|s| s.name() == name).cloned()
    }

    /// Where port `name` is; `None` when there is no such port.
    pub fn attachment(&self, name: &str) -> Option<Attachment> {
        self.port_status(name)?;
        if let Some(x) = self.xconnects.iter().find(|x| x.ports.iter().any(|p| p == name)) {
            let peer = if x.ports[0] == name { &x.ports[1] } else { &x.ports[0] };
            return Some(Attachment::Xconnect(peer.clone()));
        }
        for b in &self.bridges {
            if let Some((_, mode)) = b.shared.ports().into_iter().find(|(n, _)| n == name) {
                return Some(Attachment::Bridge(b.shared.name().to_owned(), mode));
            }
        }
        Some(Attachment::Idle)
    }

    /// Buffers of the engine's mempool held in the workers' thread caches (free, as
    /// last published by each worker, at most a few milliseconds old).
    pub fn cached_buffers(&self) -> usize {
        self.workers.iter().map(|w| w.cached.load(Ordering::Relaxed)).sum()
    }

    /// Republishes link state and MAC of the idle ports (this thread owns them).
    pub fn refresh_idle(&self) {
        for (p, s) in &self.idle {
            s.publish(p.as_ref());
        }
    }

    /// Lets the idle ports apply pending control-plane changes (see
    /// [`Port::service`]): a frontend of a port in no bridge or cross-connect gets its
    /// answers without waiting for a worker that will not come.
    pub fn service_idle(&mut self) {
        for (p, _) in &mut self.idle {
            p.service();
        }
    }

    /// The core of a worker that has exited although it was not told to stop (it
    /// panicked), if any.
    pub fn failed_worker(&self) -> Option<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.workers
            .iter()
            .find(|w| w.handle.as_ref().is_none_or(|h| h.is_finished()))
            .map(|w| w.core)
    }

    /// Adds a port, idle (not polled until it joins a bridge or cross-connect).
    /// Gives the port back with the error when the name is taken.
    #[allow(clippy::result_large_err)]
    pub fn add_port(
        &mut self,
        port: Box<dyn Port>,
    ) -> Result<Arc<PortStatus>, (OpError, Box<dyn Port>)> {
        if self.port_status(port.name()).is_some() {
            let e = OpError::Conflict(format!("a port named {:?} exists", port.name()));
            return Err((e, port));
        }
        let status = Arc::new(PortStatus::of(port.as_ref()));
        self.status.push(status.clone());
        self.idle.push((port, status.clone()));
        Ok(status)
    }

    /// Removes port `name`: it leaves its bridge (its MAC entries are flushed) or
    /// cross-connect (the peer stays, idle) first. Returns the port for the caller
    /// to drop.
    pub fn remove_port(&mut self, name: &str) -> Result<Box<dyn Port>, OpError> {
        match self.attachment(name) {
            None => return Err(OpError::NotFound(format!("no port named {name:?}"))),
            Some(Attachment::Idle) => {}
            Some(Attachment::Bridge(b, _)) => self.bridge_remove_port(&b, name)?,
            Some(Attachment::Xconnect(_)) => self.remove_xconnect(name)?,
        }
        let i = self
            .idle
            .iter()
            .position(|(p, _)| p.name() == name)
            .ok_or_else(|| OpError::NotFound(format!("no idle port named {name:?}")))?;
        let (port, _) = self.idle.remove(i);
        self.status.retain(|s| s.name() != name);
        Ok(port)
    }

    /// Index of the worker polling the fewest ports (of those, the one running the
    /// fewest bridges and cross-connects, so that empty bridges spread too).
    fn least_loaded(&self) -> usize {
        let units = |i: usize| {
            self.bridges.iter().filter(|b| b.home == i).count()
                + self.xconnects.iter().filter(|x| x.worker == i).count()
        };
        (0..self.workers.len()).min_by_key(|&i| (self.workers[i].ports, units(i))).unwrap_or(0)
    }

    /// Hands `cmd` to worker `w` and waits for its reply. On `Rejected`, the ports
    /// the command carried come back with the error.
    fn command(&mut self, w: usize, cmd: Command) -> Result<Vec<Box<dyn Port>>, OpError> {
        let what = cmd.describe();
        let worker = &self.workers[w];
        if worker.handle.as_ref().is_none_or(|h| h.is_finished()) {
            return Err(OpError::Unavailable(format!(
                "{what}: the worker on core {} is not running",
                worker.core
            )));
        }
        let (tx, rx) = mpsc::channel();
        if worker.inbox.send((cmd, tx)).is_err() {
            return Err(OpError::Unavailable(format!(
                "{what}: the worker on core {} has too many commands queued; try again",
                worker.core
            )));
        }
        let start = std::time::Instant::now();
        let mut warned = false;
        let reply = loop {
            match rx.recv_timeout(COMMAND_POLL) {
                Ok(r) => break r,
                Err(mpsc::RecvTimeoutError::Timeout)
                    if !worker.handle.as_ref().is_none_or(|h| h.is_finished()) =>
                {
                    if !warned && start.elapsed() > COMMAND_SLOW {
                        warned = true;
                        tracing::warn!(
                            core = worker.core,
                            "{what}: the worker has not answered for {COMMAND_SLOW:?}; \
                             is its core starved?"
                        );
                    }
                }
                Err(_) => {
                    return Err(OpError::Unavailable(format!(
                        "{what}: the worker on core {} stopped",
                        worker.core
                    )))
                }
            }
        };
        match reply {
            Reply::Ports(ports) => Ok(ports),
            Reply::Rejected(why, ports) => {
                for p in ports {
                    if let Some(s) = self.port_status(p.name()) {
                        self.idle.push((p, s));
                    }
                }
                Err(OpError::Conflict(why))
            }
        }
    }

    /// Takes idle port `name` out of the idle list.
    fn take_idle(
        &mut self,
        name: &str,
        purpose: &str,
    ) -> Result<(Box<dyn Port>, Arc<PortStatus>), OpError> {
        self.check_idle(name, purpose)?;
        let i = self
            .idle
            .iter()
            .position(|(p, _)| p.name() == name)
            .ok_or_else(|| OpError::NotFound(format!("no idle port named {name:?}")))?;
        Ok(self.idle.remove(i))
    }

    /// Whether port `name` exists and is idle (the error says why not).
    fn check_idle(&self, name: &str, purpose: &str) -> Result<(), OpError> {
        match self.attachment(name) {
            None => Err(OpError::NotFound(format!("no port named {name:?}"))),
            Some(Attachment::Bridge(b, _)) => Err(OpError::Conflict(format!(
                "port {name:?} is already in bridge {b:?}; it cannot {purpose}"
            ))),
            Some(Attachment::Xconnect(peer)) => Err(OpError::Conflict(format!(
                "port {name:?} is already cross-connected with {peer:?}; it cannot {purpose}"
            ))),
            Some(Attachment::Idle) => Ok(()),
        }
    }

    /// Puts ports a worker handed back among the idle ones.
    fn park(&mut self, ports: Vec<Box<dyn Port>>) {
        for p in ports {
            match self.port_status(p.name()) {
                Some(s) => {
                    s.publish(p.as_ref());
                    self.idle.push((p, s));
                }
                // Not ours any more (cannot happen): dropping it closes it.
                None => drop(p),
            }
        }
    }

    /// Creates an empty bridge homed on the least-loaded worker (`spec.ports` must
    /// be empty; ports join with [`Engine::bridge_add_port`]).
    pub fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<Arc<BridgeShared>, OpError> {
        let w = self.least_loaded();
        self.create_bridge_on(spec, w)
    }

    /// Creates an empty bridge homed on worker `w` (by index).
    fn create_bridge_on(
        &mut self,
        spec: &BridgeSpec,
        w: usize,
    ) -> Result<Arc<BridgeShared>, OpError> {
        if self.bridge(&spec.name).is_some() {
            return Err(OpError::Conflict(format!("a bridge named {:?} exists", spec.name)));
        }
        if !spec.ports.is_empty() {
            return Err(OpError::Conflict("a new bridge starts without ports".into()));
        }
        let Some(pool) = self.pool.clone() else {
            return Err(OpError::Unavailable("the engine has no mempool for bridges".into()));
        };
        let id = self.new_id();
        let bridge = Bridge::new(spec, id, w, Vec::new(), pool);
        let shared = bridge.shared();
        if let Err(e) = self.command(w, Command::AddBridge(bridge)) {
            shared.retire(w);
            return Err(e);
        }
        self.bridges.push(BridgeEntry {
            shared: shared.clone(),
            home: w,
            parts: vec![w],
            members: Vec::new(),
        });
        Ok(shared)
    }

    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        // FLOOD_PORT (u32::MAX) is never an id; 4 billion joins wrap first.
        self.next_id = self.next_id.wrapping_add(1) % cross::FLOOD_PORT;
        id
    }

    /// Deletes bridge `name`; refused while it has members.
    pub fn delete_bridge(&mut self, name: &str) -> Result<(), OpError> {
        let i = self
            .bridges
            .iter()
            .position(|b| b.shared.name() == name)
            .ok_or_else(|| OpError::NotFound(format!("no bridge named {name:?}")))?;
        let members = self.bridges[i].shared.ports();
        if !members.is_empty() {
            let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
            return Err(OpError::Conflict(format!(
                "bridge {name:?} still has ports ({}); remove them first",
                names.join(", ")
            )));
        }
        for w in self.bridges[i].parts.clone() {
            let left = self.command(w, Command::RemoveBridge { name: name.to_owned() })?;
            self.park(left);
            self.bridges[i].shared.retire(w);
            self.bridges[i].parts.retain(|&p| p != w);
        }
        self.bridges.remove(i);
        Ok(())
    }

    /// Idle port `port` joins bridge `bridge` with `mode`, polled by the
    /// least-loaded worker.
    pub fn bridge_add_port(
        &mut self,
        bridge: &str,
        port: &str,
        mode: VlanMode,
    ) -> Result<(), OpError> {
        self.bridge_add_port_on(bridge, port, mode, None)
    }

    /// The index of the worker pinned to `core`.
    fn worker_on(&self, core: usize) -> Result<usize, OpError> {
        self.workers
            .iter()
            .position(|w| w.core == core)
            .ok_or_else(|| OpError::NotFound(format!("no worker runs on core {core}")))
    }

    /// Idle port `port` joins bridge `bridge` with `mode`, polled by the worker on
    /// core `core`, or by the least-loaded worker (of those, one already running the
    /// bridge) when `None`. The worker runs the bridge's switching for the frames the
    /// port receives; frames for members of other workers cross through the rings.
    pub fn bridge_add_port_on(
        &mut self,
        bridge: &str,
        port: &str,
        mode: VlanMode,
        core: Option<usize>,
    ) -> Result<(), OpError> {
        let bi = self
            .bridges
            .iter()
            .position(|b| b.shared.name() == bridge)
            .ok_or_else(|| OpError::NotFound(format!("no bridge named {bridge:?}")))?;
        let w = match core {
            Some(c) => self.worker_on(c)?,
            None => {
                let parts = &self.bridges[bi].parts;
                (0..self.workers.len())
                    .min_by_key(|&i| (self.workers[i].ports, !parts.contains(&i)))
                    .unwrap_or(0)
            }
        };
        self.check_idle(port, "join a bridge")?;
        let shared = self.bridges[bi].shared.clone();
        if !self.bridges[bi].parts.contains(&w) {
            let Some(pool) = self.pool.clone() else {
                return Err(OpError::Unavailable("the engine has no mempool for bridges".into()));
            };
            let mut part = Bridge::part(&shared, w, pool);
            for m in &self.bridges[bi].members {
                part.add_remote(RemoteMember {
                    id: m.id,
                    worker: m.worker,
                    status: m.status.clone(),
                    mode: m.mode.clone(),
                });
            }
            if let Err(e) = self.command(w, Command::AddBridge(part)) {
                shared.retire(w);
                return Err(e);
            }
            self.bridges[bi].parts.push(w);
        }
        let (p, status) = self.take_idle(port, "join a bridge")?;
        let id = self.new_id();
        let cmd = Command::AddMember {
            bridge: bridge.to_owned(),
            port: p,
            status: status.clone(),
            id,
            mode: mode.clone(),
        };
        if let Err(e) = self.command(w, cmd) {
            self.drop_empty_part(bi, w);
            return Err(e);
        }
        shared.set_member(port, Some(mode.clone()));
        self.workers[w].ports += 1;
        self.bridges[bi].members.push(MemberEntry {
            name: port.to_owned(),
            id,
            worker: w,
            mode: mode.clone(),
            status: status.clone(),
        });
        // The other parts learn of it last: until then they send it nothing.
        for other in self.bridges[bi].parts.clone() {
            if other == w {
                continue;
            }
            let remote = RemoteMember { id, worker: w, status: status.clone(), mode: mode.clone() };
            self.command(other, Command::AddRemote { bridge: bridge.to_owned(), remote })?;
        }
        Ok(())
    }

    /// Removes the part of bridge `bi` on worker `w` if it is not the home and has no
    /// member there.
    fn drop_empty_part(&mut self, bi: usize, w: usize) {
        let b = &self.bridges[bi];
        if b.home == w || !b.parts.contains(&w) || b.members.iter().any(|m| m.worker == w) {
            return;
        }
        let name = b.shared.name().to_owned();
        match self.command(w, Command::RemoveBridge { name: name.clone() }) {
            Ok(left) => {
                self.park(left);
                let b = &mut self.bridges[bi];
                b.shared.retire(w);
                b.parts.retain(|&p| p != w);
            }
            Err(e) => tracing::warn!(bridge = %name, "cannot remove an empty part: {e}"),
        }
    }

    /// Port `port` leaves bridge `bridge` (its MAC entries are flushed on every
    /// worker) and stays, idle. The other workers forget it first, so no frame for
    /// it enters a ring afterwards; frames already in a ring are dropped (freed) by
    /// its worker.
    pub fn bridge_remove_port(&mut self, bridge: &str, port: &str) -> Result<(), OpError> {
        let bi = self
            .bridges
            .iter()
            .position(|b| b.shared.name() == bridge)
            .ok_or_else(|| OpError::NotFound(format!("no bridge named {bridge:?}")))?;
        let Some(mi) = self.bridges[bi].members.iter().position(|m| m.name == port) else {
            return Err(OpError::NotFound(format!("port {port:?} is not in bridge {bridge:?}")));
        };
        let (id, w) = (self.bridges[bi].members[mi].id, self.bridges[bi].members[mi].worker);
        let rm = || Command::RemoveMember { bridge: bridge.to_owned(), port: port.to_owned(), id };
        for other in self.bridges[bi].parts.clone() {
            if other != w {
                self.command(other, rm())?;
            }
        }
        let back = self.command(w, rm())?;
        let b = &mut self.bridges[bi];
        b.members.remove(mi);
        b.shared.set_member(port, None);
        self.workers[w].ports = self.workers[w].ports.saturating_sub(1);
        self.park(back);
        self.drop_empty_part(bi, w);
        Ok(())
    }

    /// The core of the worker polling port `name`, `None` when it is idle or
    /// unknown.
    pub fn port_core(&self, name: &str) -> Option<usize> {
        let w = self
            .xconnects
            .iter()
            .find(|x| x.ports.iter().any(|p| p == name))
            .map(|x| x.worker)
            .or_else(|| {
                self.bridges
                    .iter()
                    .flat_map(|b| b.members.iter())
                    .find(|m| m.name == name)
                    .map(|m| m.worker)
            })?;
        self.workers.get(w).map(|w| w.core)
    }

    /// Cross-connects idle ports `a` and `b` on the least-loaded worker.
    pub fn add_xconnect(&mut self, a: &str, b: &str) -> Result<(), OpError> {
        if a == b {
            return Err(OpError::Conflict(format!(
                "port {a:?} cannot be cross-connected with itself"
            )));
        }
        self.check_idle(b, "be cross-connected")?;
        let (pa, sa) = self.take_idle(a, "be cross-connected")?;
        let (pb, sb) = match self.take_idle(b, "be cross-connected") {
            Ok(x) => x,
            Err(e) => {
                self.idle.push((pa, sa));
                return Err(e);
            }
        };
        let w = self.least_loaded();
        let pair = XconnectPair::new([pa, pb], [sa, sb]);
        self.command(w, Command::AddXconnect(pair))?;
        self.xconnects.push(XconnectEntry { ports: [a.to_owned(), b.to_owned()], worker: w });
        self.workers[w].ports += 2;
        Ok(())
    }

    /// Removes the cross-connect with `port` on either side; both ports stay, idle.
    pub fn remove_xconnect(&mut self, port: &str) -> Result<(), OpError> {
        let i =
            self.xconnects.iter().position(|x| x.ports.iter().any(|p| p == port)).ok_or_else(
                || OpError::NotFound(format!("port {port:?} is in no cross-connect")),
            )?;
        let w = self.xconnects[i].worker;
        let back = self.command(w, Command::RemoveXconnect { port: port.to_owned() })?;
        self.xconnects.remove(i);
        self.workers[w].ports = self.workers[w].ports.saturating_sub(2);
        self.park(back);
        Ok(())
    }

    /// Stops and joins every worker and returns all ports that survived (a worker
    /// that panicked dropped its ports while unwinding).
    pub fn stop(mut self) -> Vec<Box<dyn Port>> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Vec<Box<dyn Port>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut ports = Vec::new();
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                match h.join() {
                    Ok(p) => ports.extend(p),
                    Err(_) => tracing::error!(
                        core = w.core,
                        "worker thread panicked; its ports were dropped"
                    ),
                }
            }
        }
        ports.extend(self.idle.drain(..).map(|(p, _)| p));
        ports
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        drop(self.shutdown());
    }
}
