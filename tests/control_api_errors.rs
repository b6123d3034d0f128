//! Malformed and conflicting control API requests, sent byte for byte over the unix
//! socket while a testpmd pod's traffic runs through podwire: each gets the right
//! status and a JSON error (naming the field when one is at fault), none changes
//! anything, and the daemon keeps forwarding afterwards.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use common::daemon::{Daemon, TempDir};
use common::testpmd::{self, PeerLock, Pod, PodConfig};

const SWITCH_CPU: usize = 0;
const POD_CPU: usize = 1;

/// Sends `raw` and returns the status, the headers and the body.
fn raw(socket: &Path, raw: &[u8]) -> (u16, String, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(raw).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read answer");
    let text = String::from_utf8(out).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
    (code, head.to_owned(), body.to_owned())
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

fn req(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

fn vhost(name: &str, socket: &Path, extra: &str) -> String {
    format!(
        "{{\"name\":\"{name}\",\"type\":\"vhost-user\",\"socket\":\"{}\"{extra}}}",
        socket.display()
    )
}

#[test]
fn malformed_requests_get_4xx_naming_the_field_and_change_nothing() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = TempDir::kept_on_failure("api-errors");
    let (a, b) = (dir.join("p0.sock"), dir.join("p1.sock"));
    let mut cfg = format!(
        "[workers]\ncores = [{SWITCH_CPU}]\n[memory]\nbuffers = 8192\nhugepages = false\n\
         [limits]\nmax_ports = 5\n"
    );
    for (n, s) in [("p0", &a), ("p1", &b)] {
        cfg += &format!(
            "[[ports]]\nname = \"{n}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n",
            s.display()
        );
    }
    cfg += "[[xconnect]]\nports = [\"p0\", \"p1\"]\n";
    let mut d = Daemon::start(&dir, &cfg, &[&a, &b]);
    let ctl = d.control.clone();
    let mut pod = Pod::start(PodConfig::new(&[&a, &b]).on_cpu(POD_CPU)).expect("pod");
    pod.wait_links_up(Duration::from_secs(20)).expect("links up");
    pod.start_tx_first(16).expect("traffic");
    d.wait_port("p0", Duration::from_secs(10), "traffic", |p| p.rx_packets > 1000);

    // State the conflicts below run into: a bridge with a member, an idle port, and
    // a socket another process listens on.
    d.api_ok("POST", "/bridges", Some("{\"name\":\"brm\"}"), 201);
    d.api_ok(
        "POST",
        "/ports",
        Some(&vhost("m1", &dir.join("m1.sock"), ",\"bridge\":\"brm\"")),
        201,
    );
    d.api_ok("POST", "/ports", Some(&vhost("idle", &dir.join("idle.sock"), "")), 201);
    let busy = dir.join("busy.sock");
    let _listener = UnixListener::bind(&busy).expect("a socket in use by this test");
    let s = |n: &str| dir.join(n);
    let ok_port = |name: &str, extra: &str| vhost(name, &s(&format!("{name}.sock")), extra);
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(70 * 1024));

    // (request, status, field named or None, words the error contains)
    let cases: Vec<(Vec<u8>, u16, Option<&str>, &str)> = vec![
        // Framing.
        (
            format!("POST /ports HTTP/1.1\r\nHost: x\r\n\r\n{}", ok_port("n1", "")).into_bytes(),
            411,
            None,
            "Content-Length",
        ),
        (
            b"POST /bridges HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}\r\n0\r\n\r\n"
                .to_vec(),
            411,
            None,
            "chunked",
        ),
        (
            b"POST /bridges HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
            400,
            None,
            "Content-Length",
        ),
        (post("/bridges", &huge), 413, None, "at most 65536"),
        (b"\x00\x01 garbage\r\n\r\n".to_vec(), 400, None, "malformed"),
        // Bodies.
        (post("/ports", "{\"name\": \"n1\", "), 400, None, "not valid JSON"),
        (post("/ports", "[1, 2]"), 400, None, "JSON object"),
        (post("/ports", ""), 400, None, "not valid JSON"),
        (
            post("/ports", &ok_port("n1", ",\"colour\":\"red\"")),
            400,
            Some("colour"),
            "unknown field",
        ),
        (
            post("/ports", "{\"name\":5,\"type\":\"vhost-user\"}"),
            400,
            Some("name"),
            "must be string",
        ),
        (post("/ports", "{\"name\":\"n1\"}"), 400, Some("type"), "missing field"),
        (
            post("/ports", "{\"name\":\"a/b\",\"type\":\"vhost-user\"}"),
            400,
            Some("name"),
            "may only",
        ),
        (
            post("/ports", "{\"name\":\"n1\",\"type\":\"tap\"}"),
            400,
            Some("type"),
            "unknown port type",
        ),
        (
            post("/ports", "{\"name\":\"n1\",\"type\":\"vhost-user\"}"),
            400,
            Some("socket"),
            "missing",
        ),
        (post("/ports", &ok_port("n1", ",\"queues\":-1")), 400, Some("queues"), "out of range"),
        (post("/ports", &ok_port("n1", ",\"queues\":1e30")), 400, Some("queues"), "not float"),
        (
            post("/ports", &ok_port("n1", ",\"queues\":99999999999999999999")),
            400,
            Some("queues"),
            "",
        ),
        (post("/ports", &ok_port("n1", ",\"queues\":\"2\"")), 400, Some("queues"), "not string"),
        (post("/ports", &ok_port("n1", ",\"mode\":\"both\"")), 400, Some("mode"), "is not"),
        (post("/ports", &ok_port("n1", ",\"mac\":null")), 400, Some("mac"), "null"),
        (
            post("/ports", &ok_port("n1", ",\"mac\":\"01:00:5e:00:00:01\"")),
            400,
            Some("mac"),
            "multicast",
        ),
        (post("/ports", &ok_port("n1", ",\"vlan\":10")), 400, Some("vlan"), "bridge"),
        (
            post("/ports", &ok_port("n1", ",\"bridge\":\"brm\",\"vlan\":4095")),
            400,
            Some("vlan"),
            "VLAN id",
        ),
        (
            post("/ports", &ok_port("n1", ",\"bridge\":\"brm\",\"trunk\":7")),
            400,
            Some("trunk"),
            "array",
        ),
        (
            post("/ports", &ok_port("n1", ",\"bridge\":\"nosuch\"")),
            404,
            Some("bridge"),
            "no bridge",
        ),
        (post("/ports", &ok_port("n1", ",\"bridge\":5")), 400, Some("bridge"), "must be string"),
        (
            post("/bridges", "{\"name\":\"b2\",\"mac_table_size\":0}"),
            400,
            Some("mac_table_size"),
            "out of range",
        ),
        (post("/bridges", "{\"name\":\"b2\",\"ports\":[]}"), 400, Some("ports"), "unknown field"),
        (post("/xconnects", "{\"ports\":\"p0\"}"), 400, Some("ports"), "array"),
        (post("/xconnects", "{\"ports\":[\"idle\"]}"), 400, Some("ports"), "exactly 2"),
        (
            post("/bridges/brm/ports", "{\"port\":\"idle\",\"vlan\":10,\"trunk\":[10]}"),
            400,
            Some("trunk"),
            "not both",
        ),
        // Names that do not exist.
        (req("GET", "/portz"), 404, None, "no such resource"),
        (req("GET", "/ports/idle/extra"), 404, None, "no such resource"),
        (req("GET", "/ports/nosuch"), 404, None, "no port named"),
        (req("DELETE", "/ports/nosuch"), 404, None, "no port named"),
        (req("DELETE", "/bridges/nosuch"), 404, None, "no bridge named"),
        (post("/bridges/nosuch/ports", "{\"port\":\"idle\"}"), 404, None, "no bridge named"),
        (post("/bridges/brm/ports", "{\"port\":\"nosuch\"}"), 404, Some("port"), "no port named"),
        (req("DELETE", "/bridges/brm/ports/idle"), 404, None, "not in bridge"),
        (post("/xconnects", "{\"ports\":[\"idle\",\"nosuch\"]}"), 404, Some("ports"), "no port"),
        (req("DELETE", "/xconnects/idle"), 404, None, "in no cross-connect"),
        // Methods.
        (req("PUT", "/ports"), 405, None, "use GET, POST"),
        (req("DELETE", "/stats"), 405, None, "use GET"),
        (req("GET", "/reload"), 405, None, "use POST"),
        (req("PATCH", "/bridges/brm"), 405, None, "use GET, DELETE"),
        // Conflicts.
        (post("/ports", &vhost("p0", &s("other.sock"), "")), 409, Some("name"), "exists"),
        (post("/ports", &vhost("n1", &a, "")), 409, Some("socket"), "in use by port \\\"p0\\\""),
        (post("/ports", &vhost("n1", &busy, "")), 409, Some("socket"), "in use by another process"),
        (post("/ports", &vhost("n1", &ctl, "")), 409, Some("socket"), "control socket"),
        (post("/bridges", "{\"name\":\"brm\"}"), 409, Some("name"), "exists"),
        (req("DELETE", "/bridges/brm"), 409, None, "still has ports (m1)"),
        (post("/bridges/brm/ports", "{\"port\":\"p0\"}"), 409, Some("port"), "cross-connected"),
        (post("/xconnects", "{\"ports\":[\"idle\",\"m1\"]}"), 409, Some("ports"), "in bridge"),
        (post("/xconnects", "{\"ports\":[\"idle\",\"idle\"]}"), 409, Some("ports"), "itself"),
        (post("/reload", "{\"x\":1}"), 400, None, "no body"),
    ];
    let before = d.port_names();
    for (i, (request, code, field, words)) in cases.iter().enumerate() {
        let (got, head, body) = raw(&ctl, request);
        let shown = String::from_utf8_lossy(&request[..request.len().min(160)]).into_owned();
        assert_eq!(got, *code, "case {i} {shown:?}: {head}\n{body}");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("case {i} {shown:?}: not JSON ({e}): {body}"));
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("case {i}: no error: {body}"));
        assert!(!msg.is_empty() && !msg.contains('\n'), "case {i}: {msg:?}");
        assert!(body.contains(words), "case {i} {shown:?}: {body} lacks {words:?}");
        assert_eq!(v["field"].as_str(), *field, "case {i} {shown:?}: {body}");
        if let Some(f) = field {
            assert!(msg.starts_with(&format!("{f}:")), "case {i}: the sentence names {f}: {msg}");
        }
        if *code == 405 {
            assert!(head.contains("\r\nAllow: "), "case {i}: {head}");
        }
    }
    // Nothing changed: same ports, no socket created for a refused port.
    assert_eq!(d.port_names(), before);
    assert!(!s("n1.sock").exists() && !s("other.sock").exists());
    assert!(busy.exists(), "a socket in use is never replaced");
    let bridge = d.api_ok("GET", "/bridges/brm", None, 200);
    assert_eq!(bridge["ports"].as_array().unwrap().len(), 1, "{bridge}");

    // The port limit (max_ports = 5; there are 4): one more fits, then a clear 409.
    d.api_ok("POST", "/ports", Some(&ok_port("n5", "")), 201);
    let (code, v) = d.api("POST", "/ports", Some(&ok_port("n6", "")));
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_ports = 5"), "{v}");
    assert!(!s("n6.sock").exists());

    // The refusals were counted, and the steady pair kept forwarding throughout.
    let stats = d.api_ok("GET", "/stats", None, 200);
    let rejected = stats["control"]["rejected"].as_u64().unwrap();
    assert!(rejected >= cases.len() as u64, "rejected {rejected} of {} bad requests", cases.len());
    let before = d.port("p1").rx_packets;
    d.wait_port("p1", Duration::from_secs(5), "still forwarding", |p| p.rx_packets > before + 1000);
    d.assert_alive();
    pod.stop().expect("stop");
    pod.quit().expect("quit");
    d.stop();
}
