//! `podwire run`: builds what the config describes, forwards until SIGINT or SIGTERM,
//! then takes everything down in order. SIGHUP reloads the config file (see
//! [`crate::switch::reload`]); the control API changes the switch meanwhile.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podwire_driver::{DriverError, Mempool, MempoolConfig};

use crate::config::{Config, PortKind};
use crate::control::metrics_listener::{MetricsListenError, MetricsListener};
use crate::control::{ControlServer, ControlState, ServerError};
use crate::engine::{Engine, EngineError};
use crate::ports::{build_ports, PortBuildError};
use crate::signals::{signal_name, ShutdownSignals};
use crate::switch::Switch;

/// How often the main thread looks at signals and worker health.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(200);
/// How often the main thread lets idle ports (in no bridge or cross-connect) apply
/// their frontends' ring changes: a frontend waits at most about this long for an
/// answer that needs the datapath side (GET_VRING_BASE).
const IDLE_SERVICE_INTERVAL: Duration = Duration::from_millis(2);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Signals could not be set up.
    #[error("cannot block SIGINT/SIGTERM/SIGHUP: {0}")]
    Signals(#[source] std::io::Error),
    /// The packet memory could not be allocated.
    #[error("packet memory ({buffers} buffers): {source}{hint}")]
    Memory {
        /// Buffers requested.
        buffers: u32,
        /// The driver's error.
        #[source]
        source: DriverError,
        /// What else the operator can do.
        hint: &'static str,
    },
    /// A port could not be created.
    #[error(transparent)]
    Port(#[from] PortBuildError),
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] ServerError),
    /// The metrics TCP port could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsListenError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A worker thread died (it panicked).
    #[error("worker thread on core {0} stopped unexpectedly; podwire shut down")]
    WorkerFailed(usize),
}

/// Runs the daemon until SIGINT or SIGTERM. Call it from the main thread before any
/// other thread is started (so that the signal mask is inherited). `config_path` is
/// the file SIGHUP and `POST /reload` read again.
pub fn run(config: &Config, config_path: Option<&Path>) -> Result<(), DaemonError> {
    let signals = ShutdownSignals::block().map_err(DaemonError::Signals)?;
    // First, so that a second daemon with the same config stops here, before it
    // touches the first one's port sockets.
    let control = ControlServer::bind(&config.control_socket)?;

    let mem = config.memory;
    let pool_cfg = MempoolConfig {
        count: mem.buffers,
        data_room: mem.buffer_size as usize,
        ..Default::default()
    };
    let pool =
        if mem.hugepages { Mempool::hugepages(pool_cfg) } else { Mempool::small_pages(pool_cfg) }
            .map_err(|source| DaemonError::Memory {
            buffers: mem.buffers,
            hint: match (&source, mem.hugepages) {
                (DriverError::NoHugepages { .. }, true) => {
                    "; or set `hugepages = false` under [memory] to use ordinary locked pages"
                }
                _ => "",
            },
            source,
        })?;
    tracing::info!(
        buffers = mem.buffers,
        bytes = pool.memory().len(),
        hugepages = pool.memory().is_hugepage(),
        "packet memory ready"
    );

    let ports = build_ports(&config.ports, &pool)?;
    for (p, cfg) in ports.iter().zip(&config.ports) {
        let info = p.info();
        match &cfg.kind {
            PortKind::VhostUser(v) => tracing::info!(
                port = p.name(),
                kind = info.kind,
                socket = %v.socket.display(),
                mode = ?v.mode,
                queues = info.queues,
                mac = %info.mac,
                "port created"
            ),
            PortKind::Vfio(v) => tracing::info!(
                port = p.name(),
                kind = info.kind,
                pci = %v.pci,
                queues = info.queues,
                mac = %info.mac,
                link_up = p.link_up(),
                "port created"
            ),
            PortKind::AfXdp(x) => tracing::info!(
                port = p.name(),
                kind = info.kind,
                interface = %x.interface,
                queues = info.queues,
                mac = %info.mac,
                "port created"
            ),
        }
    }

    let pairs: Vec<[usize; 2]> = config.xconnects.iter().map(|x| x.ports).collect();
    let engine = Engine::start_with_bridges(
        ports,
        &pairs,
        &config.bridges,
        &config.workers.cores,
        Some(&pool),
    )?;
    // The ports filled their rings from this thread's cache of the pool: what is left
    // there goes back to the shared ring, where `GET /stats` counts it as free.
    pool.release_thread_cache();
    for w in engine.assignments() {
        for [a, b] in &w.xconnects {
            tracing::info!(core = w.core, "worker on core {}: cross-connect {a} <-> {b}", w.core);
        }
        for b in &w.bridges {
            tracing::info!(core = w.core, bridge = %b, "worker on core {}: bridge {b}", w.core);
        }
    }
    for w in engine.assignments() {
        if w.xconnects.is_empty() && w.bridges.is_empty() {
            tracing::info!(core = w.core, "worker on core {} idle: waits for ports", w.core);
        }
    }
    for name in engine.idle_ports() {
        tracing::warn!(port = %name, "port is in no cross-connect or bridge: it is not polled");
    }
    let switch = Arc::new(Mutex::new(Switch::new(
        engine,
        pool.clone(),
        config.clone(),
        config_path.map(Path::to_owned),
    )));
    {
        // The control API's objects of the last run, after the file's and before the
        // first request: a CNI CHECK never sees them missing.
        let mut sw = switch.lock().unwrap_or_else(|e| e.into_inner());
        sw.restore_state();
    }
    let state = ControlState::new(switch.clone());
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let m = MetricsListener::start(addr, state.clone())?;
            tracing::info!(address = %m.addr(), "metrics served at http://{}/metrics", m.addr());
            Some(m)
        }
        None => None,
    };
    let server = control.serve_state(state.clone())?;
    tracing::info!(socket = %config.control_socket.display(), "podwire running; control socket ready");

    let mut result = Ok(());
    let mut server_down_logged = false;
    let mut supervised = std::time::Instant::now();
    loop {
        match signals.wait(IDLE_SERVICE_INTERVAL) {
            Some(libc::SIGHUP) => {
                tracing::info!("SIGHUP received: reloading the config file");
                let mut sw = state.lock();
                match sw.reload_from_file() {
                    Ok(_) => {
                        sw.save_state();
                    }
                    Err(e) => tracing::error!("reload refused: {e}"),
                }
            }
            Some(sig) => {
                tracing::info!("{} received: shutting down", signal_name(sig));
                break;
            }
            None => {}
        }
        let mut sw = state.lock();
        sw.service_idle();
        if supervised.elapsed() < SUPERVISE_INTERVAL {
            continue;
        }
        supervised = std::time::Instant::now();
        if let Some(core) = sw.engine().failed_worker() {
            tracing::error!(core, "worker thread stopped unexpectedly: shutting down");
            result = Err(DaemonError::WorkerFailed(core));
            break;
        }
        if server.is_finished() && !server_down_logged {
            tracing::error!("control server stopped; forwarding continues without it");
            server_down_logged = true;
        }
        sw.refresh_idle();
    }

    // The servers go first: no request may find the switch half stopped.
    server.stop();
    if let Some(m) = metrics {
        m.stop();
    }
    drop(state);
    let switch = match Arc::try_unwrap(switch) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(still_shared) => {
            // Cannot happen (the server thread has been joined); the ports then go
            // when the last holder drops them.
            tracing::error!("switch still shared at shutdown; ports closed with it");
            drop(still_shared);
            return result;
        }
    };
    let ports = switch.stop();
    tracing::info!(ports = ports.len(), "workers stopped and joined; closing ports");
    drop(ports);
    tracing::info!(socket = %config.control_socket.display(), "control socket removed");
    drop(pool);
    tracing::info!("podwire stopped");
    result
}
