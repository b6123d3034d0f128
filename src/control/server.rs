//! The control socket server: one thread, one request per connection, every
//! connection bounded in size and time so that no client can wedge it. Requests that
//! change something lock the [`Switch`] for their duration; the workers never take
//! that lock, so forwarding goes on meanwhile. The routes are in [`respond`]; what
//! each does is in docs/control-api.md.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn;
use super::http::{self, Request, RequestError};
use super::metrics;
use super::{BridgeInfo, ControlStats, MacTableResponse, PortList, XconnectList};
use crate::switch::{Switch, SwitchError};

/// How long a MAC table request waits for the bridge's worker.
const MAC_TABLE_WAIT: Duration = Duration::from_secs(2);

/// What the control server works on: the running switch, and counters of the
/// requests it answered.
#[derive(Debug, Clone)]
pub struct ControlState {
    switch: Arc<Mutex<Switch>>,
    counters: Arc<RequestCounters>,
}

/// Requests answered, and how many of them were refused (status 400 and above).
#[derive(Debug, Default)]
pub struct RequestCounters {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests answered with a 4xx or 5xx status.
    pub rejected: AtomicU64,
}

impl ControlState {
    /// The state for `switch`, shared with the thread that supervises the daemon.
    pub fn new(switch: Arc<Mutex<Switch>>) -> Self {
        Self { switch, counters: Arc::default() }
    }

    /// Locks the switch (a panic in an earlier holder does not make it unusable:
    /// every operation leaves it consistent before it can fail).
    pub fn lock(&self) -> MutexGuard<'_, Switch> {
        self.switch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Request counters.
    pub fn counters(&self) -> &RequestCounters {
        &self.counters
    }

    /// Counts one answered request with `status`.
    fn count(&self, status: u16) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 400 {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Permission bits of the control socket.
pub const SOCKET_MODE: u32 = 0o660;
/// Longest a client may take to send its request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

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
            .spawn(move || {
                conn::serve_loop(&listener, &flag, "control socket", |s| {
                    handle_connection(s, &state)
                })
            })
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

fn handle_connection(stream: UnixStream, status: &ControlState) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_write_timeout(Some(REQUEST_DEADLINE)).is_err()
    {
        return;
    }
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let request = http::read_request(&mut conn::DeadlineReader { stream: &stream, deadline });
    if let Some(req) = request.as_ref().ok().filter(|r| r.path == metrics::PATH) {
        let (code, content_type, body) = metrics::respond(&req.method, status);
        status.count(code);
        metrics::count_answer(metrics::Listener::Control, code);
        let allow = (code == 405).then_some("GET");
        let _ = http::write_typed(&mut &stream, code, content_type, &body, allow);
        return conn::linger(&stream);
    }
    let answer = match request {
        Ok(req) => respond(&req, status),
        Err(RequestError::Malformed(why)) => {
            Answer::error(400, &format!("malformed request: {why}"), None)
        }
        Err(RequestError::TooLarge) => Answer::error(
            413,
            &format!("request head larger than {} bytes", http::MAX_REQUEST_BYTES),
            None,
        ),
        Err(RequestError::BodyTooLarge(n)) => Answer::error(
            413,
            &format!("request body of {n} bytes; at most {} are accepted", http::MAX_BODY_BYTES),
            None,
        ),
        Err(RequestError::Timeout) => Answer::error(408, "request not received in time", None),
        Err(RequestError::Closed) => return,
    };
    status.count(answer.status);
    metrics::count_answer(metrics::Listener::Control, answer.status);
    if answer.status >= 400 {
        tracing::debug!(status = answer.status, body = %answer.body, "control request refused");
    }
    let mut w = &stream;
    if let Err(e) = http::write_response(&mut w, answer.status, &answer.body, answer.allow) {
        tracing::debug!("control response not delivered: {e}");
    }
    conn::linger(&stream);
}

/// A response: status, JSON body, and the methods a 405 allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body (ignored for 204).
    pub body: String,
    /// `Allow` header value (405 only).
    pub allow: Option<&'static str>,
}

impl Answer {
    fn json<T: serde::Serialize>(status: u16, v: &T) -> Self {
        match serde_json::to_string(v) {
            Ok(body) => Self { status, body, allow: None },
            Err(e) => Self::error(500, &format!("cannot encode the answer: {e}"), None),
        }
    }

    fn error(status: u16, message: &str, field: Option<&str>) -> Self {
        Self { status, body: http::error_body_field(message, field), allow: None }
    }

    fn no_content() -> Self {
        Self { status: 204, body: String::new(), allow: None }
    }

    fn from_err(e: SwitchError) -> Self {
        Self::error(e.status(), &e.message, e.field.as_deref())
    }
}

/// The routes: which methods each path takes.
fn allowed(segs: &[&str]) -> Option<&'static str> {
    Some(match segs {
        ["stats"] | ["health"] => "GET",
        ["ports"] | ["bridges"] | ["xconnects"] => "GET, POST",
        ["ports", _] | ["bridges", _] => "GET, DELETE",
        ["bridges", _, "macs"] => "GET",
        ["bridges", _, "ports"] => "POST",
        ["bridges", _, "ports", _] | ["xconnects", _] => "DELETE",
        ["reload"] => "POST",
        _ => return None,
    })
}

/// The request body as JSON (a request that needs one).
fn body_json(req: &Request, empty_ok: bool) -> Result<serde_json::Value, Answer> {
    if req.chunked || req.content_length.is_none() {
        return Err(Answer::error(
            411,
            "a request with a body needs a Content-Length header (chunked bodies are not \
             supported)",
            None,
        ));
    }
    if req.body.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| Answer::error(400, &format!("the body is not valid JSON: {e}"), None))
}

/// The answer to a request. After a change that succeeded, the state file is
/// written before the answer goes out ([`crate::switch::state_file`]).
pub fn respond(req: &Request, state: &ControlState) -> Answer {
    let answer = route(req, state);
    if matches!(req.method.as_str(), "POST" | "DELETE") && (200..300).contains(&answer.status) {
        state.lock().save_state();
    }
    answer
}

/// [`respond`] without the state file.
fn route(req: &Request, state: &ControlState) -> Answer {
    let path = &req.path;
    let method = req.method.as_str();
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let Some(allow) = allowed(&segs) else {
        return Answer::error(404, &format!("no such resource: {path}"), None);
    };
    // A named bridge must exist whatever the method.
    if let ["bridges", name, ..] = segs.as_slice() {
        if state.lock().bridge(name).is_none() {
            return Answer::error(404, &format!("no bridge named {name:?}"), None);
        }
    }
    if !allow.split(", ").any(|m| m == method) {
        return Answer {
            allow: Some(allow),
            ..Answer::error(405, &format!("{method} is not allowed on {path}; use {allow}"), None)
        };
    }
    let body = match method {
        // `curl -X POST .../reload` sends no body and no Content-Length.
        "POST" if segs == ["reload"] && req.content_length.is_none() && !req.chunked => {
            serde_json::Value::Null
        }
        "POST" => match body_json(req, segs == ["reload"]) {
            Ok(b) => b,
            Err(a) => return a,
        },
        _ => serde_json::Value::Null,
    };
    let done =
        |r: Result<(), SwitchError>| r.map_or_else(Answer::from_err, |()| Answer::no_content());
    match (method, segs.as_slice()) {
        ("GET", ["health"]) => Answer::json(200, &serde_json::json!({ "status": "ok" })),
        ("GET", ["stats"]) => {
            let mut stats = state.lock().stats();
            let c = state.counters();
            stats.control = Some(ControlStats {
                requests: c.requests.load(Ordering::Relaxed),
                rejected: c.rejected.load(Ordering::Relaxed),
            });
            Answer::json(200, &stats)
        }
        ("GET", ["ports"]) => Answer::json(200, &PortList { ports: state.lock().ports() }),
        ("GET", ["ports", name]) => match state.lock().port(name) {
            Some(p) => Answer::json(200, &p),
            None => Answer::error(404, &format!("no port named {name:?}"), None),
        },
        ("POST", ["ports"]) => {
            state.lock().add_port(&body).map_or_else(Answer::from_err, |p| Answer::json(201, &p))
        }
        ("DELETE", ["ports", name]) => done(state.lock().delete_port(name)),
        ("GET", ["bridges"]) => {
            let bridges = state.lock().bridges();
            Answer::json(
                200,
                &serde_json::json!({
                    "bridges": bridges.iter().map(|b| BridgeInfo::of(b)).collect::<Vec<_>>()
                }),
            )
        }
        ("POST", ["bridges"]) => state
            .lock()
            .add_bridge(&body)
            .map_or_else(Answer::from_err, |b| Answer::json(201, &BridgeInfo::of(&b))),
        ("GET", ["bridges", name]) => match state.lock().bridge(name) {
            Some(b) => Answer::json(200, &BridgeInfo::of(&b)),
            None => Answer::error(404, &format!("no bridge named {name:?}"), None),
        },
        ("DELETE", ["bridges", name]) => done(state.lock().delete_bridge(name)),
        ("GET", ["bridges", name, "macs"]) => {
            // Waits for the worker without holding the switch.
            let bridge = state.lock().bridge(name);
            match bridge {
                Some(b) => match b.mac_table(MAC_TABLE_WAIT) {
                    Some(entries) => Answer::json(200, &MacTableResponse::new(b.name(), entries)),
                    None => Answer::error(
                        503,
                        &format!("bridge {name:?}: its worker did not answer"),
                        None,
                    ),
                },
                None => Answer::error(404, &format!("no bridge named {name:?}"), None),
            }
        }
        ("POST", ["bridges", name, "ports"]) => {
            let mut sw = state.lock();
            match sw.bridge_add_port(name, &body) {
                Ok(()) => match sw.bridge(name) {
                    Some(b) => Answer::json(201, &BridgeInfo::of(&b)),
                    None => Answer::no_content(),
                },
                Err(e) => Answer::from_err(e),
            }
        }
        ("DELETE", ["bridges", name, "ports", port]) => {
            done(state.lock().bridge_remove_port(name, port))
        }
        ("GET", ["xconnects"]) => {
            Answer::json(200, &XconnectList { xconnects: state.lock().xconnects() })
        }
        ("POST", ["xconnects"]) => state
            .lock()
            .add_xconnect(&body)
            .map_or_else(Answer::from_err, |x| Answer::json(201, &x)),
        ("DELETE", ["xconnects", port]) => done(state.lock().delete_xconnect(port)),
        ("POST", ["reload"]) => {
            if !body.is_null() && body.as_object().is_none_or(|o| !o.is_empty()) {
                return Answer::error(400, "POST /reload takes no body (or {})", None);
            }
            state.lock().reload_from_file().map_or_else(Answer::from_err, |r| Answer::json(200, &r))
        }
        _ => Answer::error(405, &format!("{method} is not allowed on {path}; use {allow}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use podwire_driver::{Mempool, MempoolConfig};

    fn state() -> ControlState {
        let core = crate::config::allowed_cpus().and_then(|c| c.last().copied()).unwrap_or(0);
        let text = format!(
            "control_socket = \"/tmp/pw-unit-{}.sock\"\nstate_file = \"\"\n\
             [workers]\ncores = [{core}]\n",
            std::process::id()
        );
        let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let pool =
            Mempool::small_pages(MempoolConfig { count: 1024, ..Default::default() }).unwrap();
        let engine =
            Engine::start_with_bridges(Vec::new(), &[], &[], &[core], Some(&pool)).unwrap();
        ControlState::new(Arc::new(Mutex::new(Switch::new(engine, pool, config, None))))
    }

    fn req(method: &str, path: &str, body: Option<&str>) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            content_length: body.map(str::len),
            chunked: false,
            body: body.unwrap_or("").as_bytes().to_vec(),
        }
    }

    #[test]
    fn routes_methods_and_bodies_are_validated() {
        let state = state();
        let vu = |extra: &str| {
            format!("{{\"name\":\"p\",\"type\":\"vhost-user\",\"socket\":\"/tmp/x.sock\"{extra}}}")
        };
        let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
            ("GET", "/bridges", None, 200, "{\"bridges\":[]}"),
            ("GET", "/bridges/", None, 200, "{\"bridges\":[]}"),
            ("GET", "/bridges/br0", None, 404, "no bridge named \\\"br0\\\""),
            ("GET", "/bridges/br0/macs", None, 404, "no bridge named"),
            ("GET", "/bridges/br0/macs/x", None, 404, "no such resource"),
            ("GET", "/bridges//macs", None, 404, "no bridge named \\\"\\\""),
            ("PUT", "/bridges", None, 405, "PUT is not allowed on /bridges"),
            ("DELETE", "/stats", None, 405, "use GET"),
            ("GET", "/nosuch", None, 404, "no such resource"),
            ("GET", "/health", None, 200, "ok"),
            ("POST", "/bridges", None, 411, "Content-Length"),
            ("POST", "/bridges", Some("{".into()), 400, "not valid JSON"),
            ("POST", "/bridges", Some("[]".into()), 400, "JSON object"),
            ("POST", "/bridges", Some("{\"nam\":\"x\"}".into()), 400, "\"field\":\"name\""),
            ("POST", "/bridges", Some("{\"name\":\"b\",\"x\":1}".into()), 400, "\"field\":\"x\""),
            ("POST", "/bridges", Some("{\"name\":7}".into()), 400, "must be string"),
            ("POST", "/bridges", Some("{\"name\":\"b r\"}".into()), 400, "may only contain"),
            (
                "POST",
                "/bridges",
                Some("{\"name\":\"b\",\"mac_age_secs\":-1}".into()),
                400,
                "\"field\":\"mac_age_secs\"",
            ),
            ("POST", "/bridges", Some("{\"name\":\"br0\"}".into()), 201, "\"name\":\"br0\""),
            ("POST", "/bridges", Some("{\"name\":\"br0\"}".into()), 409, "exists"),
            (
                "POST",
                "/bridges/br0/ports",
                Some("{\"port\":\"p\"}".into()),
                404,
                "\"field\":\"port\"",
            ),
            (
                "POST",
                "/bridges/br0/ports",
                Some("{\"port\":\"p\",\"vlan\":5000}".into()),
                400,
                "\"field\":\"vlan\"",
            ),
            ("GET", "/bridges/br0/macs", None, 200, "\"entries\":[]"),
            ("POST", "/ports", Some("{\"name\":\"p\"}".into()), 400, "missing field `type`"),
            (
                "POST",
                "/ports",
                Some("{\"name\":\"p\",\"type\":\"vhost-user\"}".into()),
                400,
                "socket",
            ),
            ("POST", "/ports", Some(vu(",\"queues\":99")), 400, "\"field\":\"queues\""),
            ("POST", "/ports", Some(vu(",\"queues\":\"1\"")), 400, "must be integer, not string"),
            ("POST", "/ports", Some(vu(",\"bogus\":1")), 400, "\"field\":\"bogus\""),
            ("POST", "/ports", Some(vu(",\"vlan\":3")), 400, "\"field\":\"vlan\""),
            ("POST", "/ports", Some(vu(",\"bridge\":\"nope\"")), 404, "\"field\":\"bridge\""),
            ("POST", "/ports", Some(vu(",\"mac\":null")), 400, "\"field\":\"mac\""),
            (
                "POST",
                "/ports",
                Some(vu(",\"queues\":18446744073709551615")),
                400,
                "\"field\":\"queues\"",
            ),
            ("GET", "/ports/p", None, 404, "no port named"),
            ("DELETE", "/ports/p", None, 404, "no port named"),
            ("POST", "/xconnects", Some("{\"ports\":[\"a\"]}".into()), 400, "exactly 2"),
            ("POST", "/xconnects", Some("{\"ports\":[\"a\",\"b\"]}".into()), 404, "no port named"),
            ("DELETE", "/xconnects/a", None, 404, "no cross-connect"),
            ("GET", "/xconnects", None, 200, "{\"xconnects\":[]}"),
            ("POST", "/reload", None, 400, "not started from a config file"),
            ("DELETE", "/bridges/br0", None, 204, ""),
            ("GET", "/bridges", None, 200, "{\"bridges\":[]}"),
        ];
        for (method, path, body, code, want) in cases {
            let a = respond(&req(method, path, body.as_deref()), &state);
            assert_eq!(a.status, code, "{method} {path} {body:?}: {}", a.body);
            assert!(a.body.contains(want), "{method} {path}: {:?} lacks {want:?}", a.body);
            if code != 204 {
                assert!(serde_json::from_str::<serde_json::Value>(&a.body).is_ok(), "{}", a.body);
            }
            if code == 405 {
                assert!(a.allow.is_some());
            }
        }
        let stats = respond(&req("GET", "/stats", None), &state);
        let v: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
        assert_eq!(v["mempool"]["total"], 1024);
    }
}
