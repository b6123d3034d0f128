//! `metrics_listen = "127.0.0.1:9100"`: `GET /metrics` on a loopback TCP port, for a
//! Prometheus server or agent on the same node. One thread, one request per
//! connection, every connection bounded in size and time (as on the control socket);
//! any other path is 404, any other method 405. The config only accepts loopback
//! addresses ([`crate::config`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::conn;
use super::http::{self, RequestError};
use super::metrics;
use super::server::{ControlState, REQUEST_DEADLINE};

/// The TCP port could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("metrics_listen {addr}: {what}: {source}")]
pub struct MetricsListenError {
    /// The address.
    pub addr: SocketAddr,
    /// What was being done.
    pub what: &'static str,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// The metrics TCP port, served by its thread until stopped or dropped.
#[derive(Debug)]
pub struct MetricsListener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl MetricsListener {
    /// Binds `addr` and starts answering from `state`.
    pub fn start(addr: SocketAddr, state: ControlState) -> Result<Self, MetricsListenError> {
        let err = |what| move |source| MetricsListenError { addr, what, source };
        let listener = TcpListener::bind(addr).map_err(err("bind"))?;
        listener.set_nonblocking(true).map_err(err("set non-blocking"))?;
        let addr = listener.local_addr().map_err(err("local address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("podwire-metrics".into())
            .spawn(move || {
                conn::serve_loop(&listener, &flag, "metrics listener", |s| {
                    handle_connection(&s, &state)
                })
            })
            .map_err(err("start thread"))?;
        Ok(Self { addr, stop, handle: Some(handle) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread and closes the port.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("metrics listener thread panicked");
            }
        }
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn handle_connection(stream: &TcpStream, state: &ControlState) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_write_timeout(Some(REQUEST_DEADLINE)).is_err()
    {
        return;
    }
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let json = "application/json";
    let (code, content_type, body) = match http::read_request(&mut conn::DeadlineReader {
        stream,
        deadline,
    }) {
        Ok(req) if req.path == metrics::PATH => metrics::respond(&req.method, state),
        Ok(req) => (
            404,
            json,
            http::error_body(&format!("no such resource: {} (only {})", req.path, metrics::PATH)),
        ),
        Err(RequestError::Malformed(why)) => {
            (400, json, http::error_body(&format!("malformed request: {why}")))
        }
        Err(RequestError::TooLarge) => (413, json, http::error_body("request head too large")),
        Err(RequestError::BodyTooLarge(_)) => {
            (413, json, http::error_body("request body too large"))
        }
        Err(RequestError::Timeout) => (408, json, http::error_body("request not received in time")),
        Err(RequestError::Closed) => return,
    };
    metrics::count_answer(metrics::Listener::Metrics, code);
    if let Err(e) =
        http::write_typed(&mut &*stream, code, content_type, &body, (code == 405).then_some("GET"))
    {
        tracing::debug!("metrics response not delivered: {e}");
    }
    conn::linger(stream);
}
