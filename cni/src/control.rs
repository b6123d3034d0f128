//! A tiny HTTP/1.1 client for the daemon's control socket (docs/control-api.md):
//! one request per connection, JSON bodies, `Content-Length` framing. Kept here,
//! not shared with the daemon crate, so the plugin binary does not link the datapath.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{CniError, DAEMON_REFUSED, DECODE_FAILURE, IO_FAILURE, TRY_AGAIN};

/// How long one exchange with the daemon may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_RESPONSE: u64 = 4 << 20;

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub enum ControlError {
    /// Nothing listens on the socket (the daemon is down or not started yet).
    Unreachable(PathBuf, std::io::Error),
    /// The exchange broke half way, or timed out.
    Io(PathBuf, std::io::Error),
    /// The answer is not HTTP.
    BadAnswer(PathBuf, String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::Unreachable(p, e) => {
                write!(f, "podwire daemon not reachable on {} ({e}): is it running?", p.display())
            }
            ControlError::Io(p, e) => {
                write!(f, "talking to the podwire daemon on {}: {e}", p.display())
            }
            ControlError::BadAnswer(p, why) => {
                write!(f, "unexpected answer from the podwire daemon on {}: {why}", p.display())
            }
        }
    }
}

impl From<ControlError> for CniError {
    fn from(e: ControlError) -> CniError {
        let code = match e {
            ControlError::Unreachable(..) => TRY_AGAIN,
            ControlError::Io(..) => IO_FAILURE,
            ControlError::BadAnswer(..) => DECODE_FAILURE,
        };
        CniError::new(code, e.to_string())
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// The daemon's `error` sentence, or the body.
    pub fn error_text(&self) -> String {
        match self.body.get("error").and_then(Value::as_str) {
            Some(e) => match self.body.get("field").and_then(Value::as_str) {
                Some(f) => format!("{e} (field {f})"),
                None => e.to_string(),
            },
            None => self.text.trim().to_string(),
        }
    }

    /// A CNI error for an answer the plugin did not expect.
    pub fn refused(&self, what: &str) -> CniError {
        CniError::new(
            DAEMON_REFUSED,
            format!("{what}: podwire answered {}: {}", self.status, self.error_text()),
        )
    }
}

/// The daemon's control socket.
#[derive(Debug, Clone)]
pub struct Control {
    socket: PathBuf,
}

impl Control {
    /// A client for the daemon listening on `socket`.
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
    }

    /// `method target` with an optional JSON body.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ControlError> {
        let mut s = UnixStream::connect(&self.socket)
            .map_err(|e| ControlError::Unreachable(self.socket.clone(), e))?;
        let io = |e| ControlError::Io(self.socket.clone(), e);
        s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let payload = body.map(Value::to_string).unwrap_or_default();
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nHost: podwire\r\nConnection: close\r\n");
        if body.is_some() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{payload}", payload.len()));
        s.write_all(req.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
        parse_answer(&raw).map_err(|why| ControlError::BadAnswer(self.socket.clone(), why))
    }
}

/// Parses a whole HTTP/1.1 response (status line, headers, body).
pub fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or("").starts_with("HTTP/1.") {
        return Err(format!("status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| format!("status line {status_line:?}"))?;
    let mut len: Option<usize> = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = Some(v.trim().parse().map_err(|_| format!("Content-Length {v:?}"))?);
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = match len {
        Some(n) if n > rest.len() => return Err("body shorter than Content-Length".into()),
        Some(n) => &rest[..n],
        None => rest,
    };
    let text = String::from_utf8_lossy(body).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Answer { status, body: json, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let a =
            parse_answer(b"HTTP/1.1 201 Created\r\nContent-Length: 13\r\n\r\n{\"name\":\"p\"}\n")
                .unwrap();
        assert_eq!(a.status, 201);
        assert_eq!(a.body["name"], "p");
        let e = parse_answer(
            b"HTTP/1.1 409 Conflict\r\ncontent-length: 40\r\n\r\n{\"error\":\"port exists\",\"field\":\"name\"}  ",
        )
        .unwrap();
        assert_eq!(e.error_text(), "port exists (field name)");
        assert_eq!(parse_answer(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().body, Value::Null);
        for bad in [
            &b""[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 99 x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
        ] {
            assert!(parse_answer(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn no_daemon_is_try_again() {
        let c = Control::new(Path::new("/nonexistent/podwire-cni-test.sock"));
        let e: CniError = c.request("GET", "/health", None).unwrap_err().into();
        assert_eq!(e.code, TRY_AGAIN);
        assert!(e.msg.contains("not reachable"), "{}", e.msg);
    }
}
