//! The control API's request decoding (src/control/http.rs): `read_request` over a
//! reader that hands the input out in pieces whose sizes the input chooses, so that
//! the head terminator can fall across reads.
//!
//! Beyond "no panic":
//! - the result does not depend on how the bytes were split into reads;
//! - it is the result of `parse_head` on the input up to the first blank line (or
//!   `Closed`/`TooLarge` when there is none);
//! - a parsed request round-trips: written back as `METHOD PATH HTTP/1.1` it parses
//!   to the same request, and its path starts with `/` and holds no `?` or `#`.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use podwire::control::http::{parse_head, read_request, RequestError, MAX_REQUEST_BYTES};

/// Hands out `data` in reads of the sizes in `cuts` (cycled; 0 means 1).
struct Pieces<'a> {
    data: &'a [u8],
    cuts: &'a [u8],
    i: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let cut = if self.cuts.is_empty() {
            usize::MAX
        } else {
            self.cuts[self.i % self.cuts.len()].max(1) as usize * 37
        };
        self.i += 1;
        let n = cut.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn head_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

fuzz_target!(|input: &[u8]| {
    // First byte: how many of the following bytes choose the read sizes.
    let Some((&k, rest)) = input.split_first() else { return };
    let (cuts, data) = rest.split_at((k as usize % 8).min(rest.len()));
    let whole = read_request(&mut &data[..]);
    let pieces = read_request(&mut Pieces { data, cuts, i: 0 });
    assert_eq!(whole, pieces, "result depends on how the bytes arrive");
    match head_end(data) {
        Some(end) if end <= MAX_REQUEST_BYTES => {
            // read_request also reads the body the head announces; the head alone
            // must parse to the same request without it (or fail the same way).
            let head = parse_head(&data[..end]);
            match (&whole, &head) {
                (Ok(w), Ok(h)) => {
                    let mut w = w.clone();
                    w.body.clear();
                    assert_eq!(&w, h, "read_request != parse_head");
                }
                (Ok(_), Err(e)) => panic!("read_request accepted a head parse_head refuses: {e:?}"),
                // A body that is missing, too large or cut short fails only the read.
                (Err(_), _) => {}
            }
        }
        Some(_) => assert_eq!(whole, Err(RequestError::TooLarge)),
        None => assert!(
            matches!(whole, Err(RequestError::Closed) | Err(RequestError::TooLarge)),
            "no blank line, yet {whole:?}"
        ),
    }
    if let Ok(req) = whole {
        assert!(req.path.starts_with('/'), "path {:?}", req.path);
        assert!(!req.path.contains(['?', '#']), "path {:?}", req.path);
        assert!(!req.method.is_empty() && req.method.bytes().all(|b| b.is_ascii_uppercase()));
        assert_eq!(req.body.len(), req.content_length.unwrap_or(0), "body of the announced length");
        let mut again = format!("{} {} HTTP/1.1\r\nHost: podwire\r\n", req.method, req.path);
        if let Some(n) = req.content_length {
            again += &format!("Content-Length: {n}\r\n");
        }
        if req.chunked {
            again += "Transfer-Encoding: chunked\r\n";
        }
        again += "\r\n";
        let mut head_only = req.clone();
        head_only.body.clear();
        assert_eq!(parse_head(again.as_bytes()), Ok(head_only), "request does not round-trip");
    }
});
