//! The forwarding engine: poll-mode worker threads, one pinned per core, each running
//! the cross-connects assigned to it. This is the library `podwire run` drives.
//!
//! # Threading
//! [`Engine::start`] moves every cross-connected port onto the worker that owns its
//! pair (both ports of a pair on the same worker, pairs dealt round-robin over the
//! cores); [`Engine::start_with_bridges`] does the same with L2 bridges (all ports
//! of a bridge on one worker, bridges dealt round-robin after the pairs). From then on only that worker calls the port. Other threads see a port
//! through its [`PortStatus`]: the shared counters, and link state and MAC that the
//! worker republishes every few hundred microseconds. Ports in no cross-connect stay
//! with the engine (unpolled) and are refreshed by [`Engine::refresh_idle`] on the
//! thread that owns the engine.
//!
//! Each worker counts its poll rounds as busy (packets moved) or idle
//! ([`WorkerPollStats`], [`Engine::worker_polls`]) for `GET /metrics`.
//!
//! [`Engine::stop`] sets the stop flag, joins the workers and hands every port back
//! (dropping an engine does the same and drops the ports).

mod poll_stats;
mod worker;
mod xconnect;

pub use poll_stats::WorkerPollStats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use podwire_driver::port::CounterSnapshot;
use podwire_driver::{MacAddr, Mempool, Port, PortCounters, PortInfo};

use crate::bridge::{Bridge, BridgeShared, BridgeSpec};

use xconnect::XconnectPair;

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

/// What other threads may know about a port while a worker owns it.
#[derive(Debug)]
pub struct PortStatus {
    name: String,
    kind: &'static str,
    queues: u16,
    mac: AtomicU64,
    link_up: AtomicBool,
    counters: Arc<PortCounters>,
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
        }
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
    assignment: WorkerAssignment,
    polls: Arc<WorkerPollStats>,
    handle: Option<JoinHandle<Vec<Box<dyn Port>>>>,
}

/// The running forwarding engine.
pub struct Engine {
    stop: Arc<AtomicBool>,
    workers: Vec<Worker>,
    idle: Vec<(Box<dyn Port>, Arc<PortStatus>)>,
    status: Vec<Arc<PortStatus>>,
    bridges: Vec<Arc<BridgeShared>>,
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
    /// Starts one pinned worker per core that has cross-connects to run (pair `i` goes
    /// to `cores[i % cores.len()]`); ports in no cross-connect stay idle with the
    /// engine. `xconnects` holds indices into `ports`. Returns once every worker is
    /// pinned and polling; on error every port has been dropped.
    pub fn start(
        ports: Vec<Box<dyn Port>>,
        xconnects: &[[usize; 2]],
        cores: &[usize],
    ) -> Result<Self, EngineError> {
        Self::start_with_bridges(ports, xconnects, &[], cores, None)
    }

    /// [`Engine::start`] plus L2 bridges: bridge `k` goes to
    /// `cores[(xconnects.len() + k) % cores.len()]` with all its ports. `pool` is the
    /// mempool flooded frames are copied into (needed when there are bridges).
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
        let mut bridges_per_core: Vec<Vec<Bridge>> = cores.iter().map(|_| Vec::new()).collect();
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
            per_core[index % cores.len()].push(pair);
        }
        let mut shared = Vec::with_capacity(bridges.len());
        for (k, spec) in bridges.iter().enumerate() {
            let bad = |reason: String| EngineError::BadBridge { name: spec.name.clone(), reason };
            let Some(pool) = pool else {
                return Err(bad("no mempool for flood copies".into()));
            };
            let mut members = Vec::with_capacity(spec.ports.len());
            for &(i, _) in &spec.ports {
                let p = slots
                    .get_mut(i)
                    .ok_or_else(|| bad(format!("no port {i}")))?
                    .take()
                    .ok_or_else(|| bad(format!("port {i} is already in use")))?;
                members.push((p, status[i].clone()));
            }
            let bridge = Bridge::new(spec, members, pool.clone());
            shared.push(bridge.shared());
            bridges_per_core[(xconnects.len() + k) % cores.len()].push(bridge);
        }
        let idle: Vec<(Box<dyn Port>, Arc<PortStatus>)> =
            slots.into_iter().zip(&status).filter_map(|(p, s)| p.map(|p| (p, s.clone()))).collect();

        let stop = Arc::new(AtomicBool::new(false));
        let mut engine =
            Engine { stop: stop.clone(), workers: Vec::new(), idle, status, bridges: shared };
        let (ready_tx, ready_rx) = mpsc::channel();
        for ((&core, pairs), brs) in cores.iter().zip(per_core).zip(bridges_per_core) {
            if pairs.is_empty() && brs.is_empty() {
                continue;
            }
            let assignment = WorkerAssignment {
                core,
                xconnects: pairs
                    .iter()
                    .map(|p| [p.status[0].name.clone(), p.status[1].name.clone()])
                    .collect(),
                bridges: brs.iter().map(|b| b.name().to_owned()).collect(),
            };
            let stop = stop.clone();
            let ready = ready_tx.clone();
            let polls = Arc::new(WorkerPollStats::new(core));
            let worker_polls = polls.clone();
            let handle = std::thread::Builder::new()
                .name(format!("podwire-w{core}"))
                .spawn(move || worker::run(core, pairs, brs, stop, ready, worker_polls))
                .map_err(|source| EngineError::Spawn { core, source })?;
            engine.workers.push(Worker { assignment, polls, handle: Some(handle) });
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
        Ok(engine)
    }

    /// Workers and what they run.
    pub fn assignments(&self) -> Vec<WorkerAssignment> {
        self.workers.iter().map(|w| w.assignment.clone()).collect()
    }

    /// Every worker's poll-round counters (busy and idle), in worker order.
    pub fn worker_polls(&self) -> Vec<Arc<WorkerPollStats>> {
        self.workers.iter().map(|w| w.polls.clone()).collect()
    }

    /// The bridges, in the order given.
    pub fn bridges(&self) -> Vec<Arc<BridgeShared>> {
        self.bridges.clone()
    }

    /// Names of the ports that are in no cross-connect or bridge (not polled).
    pub fn idle_ports(&self) -> Vec<String> {
        self.idle.iter().map(|(p, _)| p.name().to_owned()).collect()
    }

    /// Every port's status, in the order the ports were given.
    pub fn status(&self) -> Vec<Arc<PortStatus>> {
        self.status.clone()
    }

    /// Republishes link state and MAC of the idle ports (this thread owns them).
    pub fn refresh_idle(&self) {
        for (p, s) in &self.idle {
            s.publish(p.as_ref());
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
            .map(|w| w.assignment.core)
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
                        core = w.assignment.core,
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
