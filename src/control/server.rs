//! The control socket server: one thread, one request per connection, every
//! connection bounded in size and time so that no client can wedge it.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{self, RequestError};
use super::metrics;
use super::{BridgeInfo, MacTableResponse, PortStats, StatsResponse};
use crate::bridge::BridgeShared;
use crate::engine::PortStatus;

/// How long a MAC table request waits for the bridge's worker.
const MAC_TABLE_WAIT: Duration = Duration::from_secs(2);

/// What the control server reads: every port's status and every bridge's.
#[derive(Debug, Clone, Default)]
pub struct ControlState {
    /// Ports, in config order.
    pub ports: Vec<Arc<PortStatus>>,
    /// Bridges, in config order.
    pub bridges: Vec<Arc<BridgeShared>>,
    /// Workers' poll counters, for `GET /metrics`.
    pub workers: Vec<Arc<crate::engine::WorkerPollStats>>,
    /// The packet mempool, for `GET /metrics` (its size and free buffers).
    pub mempool: Option<podwire_driver::Mempool>,
}

/// Permission bits of the control socket.
pub const SOCKET_MODE: u32 = 0o660;
/// Longest a client may take to send its request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Longest the server waits for a client to hang up after the response.
const LINGER: Duration = Duration::from_millis(200);
/// How often the server thread looks at its stop flag.
const POLL_INTERVAL_MS: i32 = 100;

/// The control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon answers on the socket.
    #[error("control socket {0}: another podwire is already listening there")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("control socket {0}: the path exists and is not a socket")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("control socket {path}: {what}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A bound control socket, not yet serving.
#[derive(Debug)]
pub struct ControlServer {
    /// Always `Some` until [`ControlServer::serve`] moves it to the server thread.
    listener: Option<UnixListener>,
    path: PathBuf,
    inode: (u64, u64),
}

/// A control socket being served by its thread.
#[derive(Debug)]
pub struct RunningServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    path: PathBuf,
    inode: (u64, u64),
}

impl ControlServer {
    /// Creates the socket's directory if needed, replaces a stale socket (one nobody
    /// answers on), binds, and sets the socket's mode to 0660.
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        let io = |what: &'static str| {
            move |source| ServerError::Io { path: path.to_owned(), what, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create directory"))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ServerError::InUse(path.to_owned()));
                }
                tracing::info!(path = %path.display(), "replacing stale control socket");
                std::fs::remove_file(path).map_err(io("remove stale socket"))?;
            }
            Ok(_) => return Err(ServerError::NotASocket(path.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("stat")(e)),
        }
        let listener = UnixListener::bind(path).map_err(io("bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io("chmod"))?;
        let m = std::fs::symlink_metadata(path).map_err(io("stat"))?;
        listener.set_nonblocking(true).map_err(io("set non-blocking"))?;
        Ok(Self { listener: Some(listener), path: path.to_owned(), inode: (m.dev(), m.ino()) })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the server thread answering from `status`.
    pub fn serve(self, status: Vec<Arc<PortStatus>>) -> Result<RunningServer, ServerError> {
        self.serve_state(ControlState { ports: status, ..Default::default() })
    }

    /// Starts the server thread answering from `state`.
    pub fn serve_state(mut self, state: ControlState) -> Result<RunningServer, ServerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let Some(listener) = self.listener.take() else {
            return Err(ServerError::Io {
                path: self.path.clone(),
                what: "serve",
                source: std::io::ErrorKind::NotConnected.into(),
            });
        };
        let handle = std::thread::Builder::new()
            .name("podwire-control".into())
            .spawn(move || serve_loop(&listener, &state, &flag))
            .map_err(|source| ServerError::Io {
                path: self.path.clone(),
                what: "start thread",
                source,
            })?;
        // The running server owns the socket file from here on.
        let path = std::mem::take(&mut self.path);
        Ok(RunningServer { stop, handle: Some(handle), path, inode: self.inode })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        remove_if_ours(&self.path, self.inode);
    }
}

impl RunningServer {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the server thread ended (it only does when stopped, or if it failed).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops the thread and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("control server thread panicked");
            }
        }
        remove_if_ours(&self.path, self.inode);
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Removes `path` if it is still the socket we created (not a successor's).
fn remove_if_ours(path: &Path, inode: (u64, u64)) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if (m.dev(), m.ino()) == inode {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), "cannot remove control socket: {e}");
            }
        }
    }
}

fn serve_loop(listener: &UnixListener, status: &ControlState, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: pfd is one valid pollfd and the count passed is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, POLL_INTERVAL_MS) };
        if rc <= 0 {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle_connection(stream, status)
                }));
                if r.is_err() {
                    tracing::error!("control request handler panicked; connection dropped");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS as u64));
            }
        }
    }
}

/// A reader that fails with `TimedOut` once `deadline` has passed.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

fn handle_connection(stream: UnixStream, status: &ControlState) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_write_timeout(Some(REQUEST_DEADLINE)).is_err()
    {
        return;
    }
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let request = http::read_request(&mut DeadlineReader { stream: &stream, deadline });
    if let Some(req) = request.as_ref().ok().filter(|r| r.path == metrics::PATH) {
        let (code, content_type, body) = metrics::respond(&req.method, status);
        metrics::count_answer(metrics::Listener::Control, code);
        let _ = http::write_response(&mut &stream, code, content_type, &body);
        return linger(&stream);
    }
    let (code, body) = match request {
        Ok(req) => respond(&req.method, &req.path, status),
        Err(RequestError::Malformed(why)) => {
            (400, http::error_body(&format!("malformed request: {why}")))
        }
        Err(RequestError::TooLarge) => (
            413,
            http::error_body(&format!(
                "request head larger than {} bytes",
                http::MAX_REQUEST_BYTES
            )),
        ),
        Err(RequestError::Timeout) => (408, http::error_body("request not received in time")),
        Err(RequestError::Closed) => return,
    };
    metrics::count_answer(metrics::Listener::Control, code);
    let mut w = &stream;
    if let Err(e) = http::write_json(&mut w, code, &body) {
        tracing::debug!("control response not delivered: {e}");
    }
    linger(&stream);
}

/// Ends the exchange without losing the response: closing a unix socket with unread
/// input resets the connection, and the client's read then fails before it sees the
/// answer. So: signal end of response, then discard what the client still sends
/// (bounded in bytes and time) until it hangs up.
fn linger(stream: &UnixStream) {
    const MAX_DISCARD: usize = 1 << 20;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < MAX_DISCARD {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&mut &*stream).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> (u16, String) {
    match serde_json::to_string(v) {
        Ok(body) => (200, body),
        Err(e) => (500, http::error_body(&format!("cannot encode the answer: {e}"))),
    }
}

/// The answer to a request: status code and JSON body.
pub fn respond(method: &str, path: &str, state: &ControlState) -> (u16, String) {
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let find_bridge = |name: &str| state.bridges.iter().find(|b| b.name() == name);
    let known = match segs.as_slice() {
        ["stats"] | ["health"] | ["bridges"] => true,
        ["bridges", name] | ["bridges", name, "macs"] => {
            if find_bridge(name).is_none() {
                return (404, http::error_body(&format!("no bridge named {name:?}")));
            }
            true
        }
        _ => false,
    };
    if !known {
        return (404, http::error_body(&format!("no such resource: {path}")));
    }
    if method != "GET" {
        return (405, http::error_body(&format!("{method} is not allowed on {path}; use GET")));
    }
    match segs.as_slice() {
        ["health"] => (200, serde_json::json!({ "status": "ok" }).to_string()),
        ["bridges"] => json(&serde_json::json!({
            "bridges": state.bridges.iter().map(|b| BridgeInfo::of(b)).collect::<Vec<_>>()
        })),
        ["bridges", name] => match find_bridge(name) {
            Some(b) => json(&BridgeInfo::of(b)),
            None => (404, http::error_body(&format!("no bridge named {name:?}"))),
        },
        ["bridges", name, "macs"] => match find_bridge(name) {
            Some(b) => match b.mac_table(MAC_TABLE_WAIT) {
                Some(entries) => json(&MacTableResponse::new(b.name(), entries)),
                None => {
                    (503, http::error_body(&format!("bridge {name:?}: its worker did not answer")))
                }
            },
            None => (404, http::error_body(&format!("no bridge named {name:?}"))),
        },
        _ => json(&StatsResponse { ports: state.ports.iter().map(|s| PortStats::of(s)).collect() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_paths_are_validated() {
        let state = ControlState::default();
        let cases = [
            ("GET", "/bridges", 200, "{\"bridges\":[]}"),
            ("GET", "/bridges/", 200, "{\"bridges\":[]}"),
            ("GET", "/bridges/br0", 404, "no bridge named \\\"br0\\\""),
            ("GET", "/bridges/br0/macs", 404, "no bridge named"),
            ("GET", "/bridges/br0/macs/x", 404, "no such resource"),
            ("GET", "/bridges//macs", 404, "no bridge named \\\"\\\""),
            ("POST", "/bridges", 405, "POST is not allowed on /bridges"),
            ("DELETE", "/stats", 405, "use GET"),
            ("GET", "/nosuch", 404, "no such resource"),
            ("GET", "/health", 200, "ok"),
        ];
        for (method, path, code, want) in cases {
            let (c, body) = respond(method, path, &state);
            assert_eq!(c, code, "{method} {path}: {body}");
            assert!(body.contains(want), "{method} {path}: {body:?} lacks {want:?}");
            assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "{body}");
        }
    }
}
