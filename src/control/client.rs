//! The client side of the control socket, used by `podwire stats`, `podwire port`,
//! `podwire bridge` and the other CLI commands.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::StatsResponse;

/// Longest the client waits for the daemon.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket.
    #[error("cannot connect to {path}: is podwire running? ({source})")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed half way.
    #[error("talking to {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered something unexpected.
    #[error("unexpected answer from {path}: {reason}")]
    BadResponse {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Sends `GET target` to the daemon; returns the status code and the body.
pub fn get(socket: &Path, target: &str) -> Result<(u16, String), ClientError> {
    request(socket, "GET", target, None)
}

/// Sends `method target` with an optional JSON body; returns the status code and the
/// body. Waits up to [`CLIENT_TIMEOUT`] plus the daemon's own 5 s for a worker.
pub fn request(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> Result<(u16, String), ClientError> {
    let mut s = UnixStream::connect(socket)
        .map_err(|source| ClientError::Connect { path: socket.to_owned(), source })?;
    let io = |source| ClientError::Io { path: socket.to_owned(), source };
    s.set_read_timeout(Some(CLIENT_TIMEOUT * 3)).map_err(io)?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: podwire\r\nConnection: close\r\n");
    if let Some(b) = body {
        head += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len());
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).map_err(io)?;
    if let Some(b) = body {
        s.write_all(b.as_bytes()).map_err(io)?;
    }
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw).map_err(io)?;
    let bad = |reason: &str| ClientError::BadResponse {
        path: socket.to_owned(),
        reason: reason.to_owned(),
    };
    let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| head.starts_with("HTTP/1."))
        .ok_or_else(|| bad("no HTTP status line"))?;
    Ok((code, body.to_owned()))
}

/// The daemon's error message in a non-2xx answer.
pub fn error_message(code: u16, body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    format!("{msg} (status {code})")
}

/// Fetches `target` and decodes its JSON (an answer other than 200 is an error
/// carrying the daemon's message). Returns the raw body too.
pub fn get_json<T: serde::de::DeserializeOwned>(
    socket: &Path,
    target: &str,
) -> Result<(String, T), ClientError> {
    let (code, body) = get(socket, target)?;
    let bad = |reason: String| ClientError::BadResponse { path: socket.to_owned(), reason };
    if code != 200 {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        return Err(bad(format!("status {code}: {msg}")));
    }
    let v = serde_json::from_str(&body).map_err(|e| bad(format!("bad JSON for {target}: {e}")))?;
    Ok((body, v))
}

/// Fetches `/stats`: the raw JSON body and its decoded form.
pub fn fetch_stats(socket: &Path) -> Result<(String, StatsResponse), ClientError> {
    let (code, body) = get(socket, "/stats")?;
    if code != 200 {
        return Err(ClientError::BadResponse {
            path: socket.to_owned(),
            reason: format!("status {code}: {}", body.trim()),
        });
    }
    let stats = serde_json::from_str(&body).map_err(|e| ClientError::BadResponse {
        path: socket.to_owned(),
        reason: format!("bad stats JSON: {e}"),
    })?;
    Ok((body, stats))
}
