//! Just enough HTTP/1.1 for the control API: one request per connection, a body only
//! with `Content-Length` (at most [`MAX_BODY_BYTES`]; no chunked encoding),
//! `Connection: close`. Requests are untrusted: bounded, and every malformed input
//! is an error value, never a panic.

use std::io::{Read, Write};

/// Largest request head (request line plus headers) accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path without query string, e.g. `/stats`.
    pub path: String,
    /// The `Content-Length` header, if any.
    pub content_length: Option<usize>,
    /// Whether the client sent `Transfer-Encoding` (not supported: such a request
    /// is answered 411).
    pub chunked: bool,
    /// The body (`content_length` bytes; empty without one).
    pub body: Vec<u8>,
}

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The request is not HTTP/1.x as we understand it (answer 400).
    Malformed(&'static str),
    /// The head exceeds [`MAX_REQUEST_BYTES`] (answer 413).
    TooLarge,
    /// The body announced exceeds [`MAX_BODY_BYTES`] (answer 413).
    BodyTooLarge(usize),
    /// The client took too long (answer 408).
    Timeout,
    /// The connection closed or failed before a whole head arrived (no answer).
    Closed,
}

/// Reads one request head from `r` (up to the blank line) and parses it.
pub fn read_request(r: &mut impl Read) -> Result<Request, RequestError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Err(RequestError::Closed),
            Ok(n) => n,
            Err(e) => match read_failure(&e) {
                Some(fail) => return Err(fail),
                None => continue,
            },
        };
        // Only the newly read bytes (plus 3 before them) can complete the terminator.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&head[from..]) {
            let mut req = parse_head(&head[..from + end])?;
            let rest = &head[from + end..];
            if let Some(n) = req.content_length {
                if n > MAX_BODY_BYTES {
                    return Err(RequestError::BodyTooLarge(n));
                }
                req.body = read_body(r, rest, n)?;
            }
            return Ok(req);
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge);
        }
    }
}

/// Reads a body of `n` bytes, of which `first` arrived with the head.
fn read_body(r: &mut impl Read, first: &[u8], n: usize) -> Result<Vec<u8>, RequestError> {
    let mut body = first[..first.len().min(n)].to_vec();
    let mut chunk = [0u8; 4096];
    while body.len() < n {
        let want = (n - body.len()).min(chunk.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) => return Err(RequestError::Malformed("body shorter than its Content-Length")),
            Ok(k) => body.extend_from_slice(&chunk[..k]),
            Err(e) => {
                if let Some(fail) = read_failure(&e) {
                    return Err(fail);
                }
            }
        }
    }
    Ok(body)
}

/// What a failed read of a request means: `None` (interrupted: read again), a timeout
/// (the socket's read deadline passed), or a closed connection.
fn read_failure(e: &std::io::Error) -> Option<RequestError> {
    match e.kind() {
        std::io::ErrorKind::Interrupted => None,
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Some(RequestError::Timeout)
        }
        _ => Some(RequestError::Closed),
    }
}

/// Offset just past the blank line ending a head (`\r\n\r\n`, or a bare `\n\n`).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf[i..].starts_with(b"\n\n") {
            return Some(i + 2);
        }
    }
    None
}

/// Parses a request head.
pub fn parse_head(head: &[u8]) -> Result<Request, RequestError> {
    if head.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("request line is not `METHOD TARGET HTTP/1.x`"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed("bad method"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(RequestError::Malformed("unsupported HTTP version"));
    }
    // Origin form (`/stats`) or absolute form (`http://host/stats`).
    let path = if target.starts_with('/') {
        target
    } else if let Some(rest) =
        target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        return Err(RequestError::Malformed("bad request target"));
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for h in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = h.split_once(':') else {
            return Err(RequestError::Malformed("bad header line"));
        };
        if h.starts_with([' ', '\t']) {
            return Err(RequestError::Malformed("bad header line"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RequestError::Malformed("Content-Length is not a number"));
            }
            // Digits only: a value too large for usize is surely too large.
            let n = value.parse::<usize>().unwrap_or(usize::MAX);
            if content_length.is_some_and(|c| c != n) {
                return Err(RequestError::Malformed("two different Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        content_length,
        chunked,
        body: Vec::new(),
    })
}

/// The reason phrase of the status codes the control API uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Writes a complete response with a JSON body and closes the exchange (a 405 says
/// `Allow: GET`).
pub fn write_json(w: &mut impl Write, status: u16, body: &str) -> std::io::Result<()> {
    write_response(w, status, body, (status == 405).then_some("GET"))
}

/// Writes a complete response with a JSON body (none for 204) and an `Allow` header
/// when `allow` is given.
pub fn write_response(
    w: &mut impl Write,
    status: u16,
    body: &str,
    allow: Option<&str>,
) -> std::io::Result<()> {
    write_typed(w, status, "application/json", body, allow)
}

/// Writes a complete response with a body of type `content_type` (none for 204) and
/// an `Allow` header when `allow` is given, and closes the exchange.
pub fn write_typed(
    w: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &str,
    allow: Option<&str>,
) -> std::io::Result<()> {
    let allow = allow.map(|a| format!("Allow: {a}\r\n")).unwrap_or_default();
    let body = if status == 204 { "" } else { body };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {allow}Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

/// A JSON error body.
pub fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// A JSON error body naming the request field at fault.
pub fn error_body_field(message: &str, field: Option<&str>) -> String {
    match field {
        Some(f) => serde_json::json!({ "error": message, "field": f }).to_string(),
        None => error_body(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, RequestError> {
        read_request(&mut s.as_bytes())
    }

    #[test]
    fn parses_curl_request() {
        let r =
            parse("GET /stats HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88\r\nAccept: */*\r\n\r\n")
                .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.content_length), ("GET", "/stats", None));
        let r = parse("GET http://x/health?pretty HTTP/1.0\n\n").unwrap();
        assert_eq!(r.path, "/health");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "\r\n\r\n",
            "GET\r\n\r\n",
            "GET /stats\r\n\r\n",
            "GET /stats HTTP/2\r\n\r\n",
            "get /stats HTTP/1.1\r\n\r\n",
            "GET stats HTTP/1.1\r\n\r\n",
            "GET /stats HTTP/1.1 extra\r\n\r\n",
            "GET /stats HTTP/1.1\r\nno colon\r\n\r\n",
            "\u{0}\u{1}\u{2}\n\n",
        ] {
            assert!(matches!(parse(bad), Err(RequestError::Malformed(_))), "{bad:?}");
        }
        assert!(matches!(parse("GET /stats HTTP/1.1\r\n"), Err(RequestError::Closed)));
        assert!(matches!(
            read_request(&mut &[0xffu8, 0xfe, b'\n', b'\n'][..]),
            Err(RequestError::Malformed(_))
        ));
        let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_BYTES + 10));
        assert_eq!(parse(&huge), Err(RequestError::TooLarge));
    }

    #[test]
    fn bodies_are_read_by_content_length_and_bounded() {
        let r = parse("POST /ports HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"a\":1}extra").unwrap();
        assert_eq!(r.body, b"{\"a\":1}");
        let r = parse("POST /ports HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(r.chunked && r.content_length.is_none());
        for bad in ["-1", "abc", "", "1 2"] {
            let req = format!("POST /p HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert!(matches!(parse(&req), Err(RequestError::Malformed(_))), "{bad:?}");
        }
        let req = "POST /p HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert!(matches!(parse(req), Err(RequestError::BodyTooLarge(_))));
        let req = format!("POST /p HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1);
        assert!(matches!(parse(&req), Err(RequestError::BodyTooLarge(_))));
        let short = "POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        assert!(matches!(parse(short), Err(RequestError::Malformed(_))));
    }

    #[test]
    fn response_has_length_and_json() {
        let mut out = Vec::new();
        write_json(&mut out, 404, &error_body("no such path")).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"error\":\"no such path\"}"));
        assert!(
            s.contains(&format!("Content-Length: {}\r\n", "{\"error\":\"no such path\"}".len()))
        );
    }
}
