//! `GET /metrics` on a running daemon with real traffic: two network namespaces behind
//! veths whose host ends podwire bridges with AF_XDP. The exposition is read over the
//! control socket and over the `metrics_listen` TCP port (raw HTTP and curl), parsed
//! by a strict 0.0.4 parser (`common/prometheus.rs`), and its port, bridge, mempool
//! and worker figures must move with ping and TCP traffic. Also: `metrics_listen`
//! config errors, the log level (config `log_level`, overridden by `RUST_LOG`), and
//! the counter of failed state-file writes.
//!
//! Needs root, iproute2, ethtool, ping and curl (scripts/install-deps.sh).

mod common;
#[path = "common/prometheus.rs"]
mod prometheus;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::{Daemon, TempDir, BIN};
use common::netns::{tcp_echo, NetSetup};
use prometheus::Exposition;

/// Splits a raw HTTP response into status line, headers (lowercased names) and body.
fn split_response(raw: &str) -> (String, Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {raw:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

fn unix_get(sock: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(sock).expect("connect control socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read answer");
    out
}

fn tcp_get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read answer");
    out
}

/// Scrapes over the control socket, checking status and content type; parses.
fn scrape(d: &Daemon) -> Exposition {
    let raw = unix_get(&d.control, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, headers, body) = split_response(&raw);
    assert_eq!(status, "HTTP/1.1 200 OK", "{raw}");
    let ct = header(&headers, "content-type");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "content type {ct:?}");
    assert_eq!(header(&headers, "content-length"), body.len().to_string());
    prometheus::parse(&body).unwrap_or_else(|e| panic!("bad exposition: {e}\n{body}"))
}

/// A TCP port on loopback nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn check_config(dir: &Path, body: &str) -> std::process::Output {
    let path = dir.join("check.toml");
    std::fs::write(&path, body).unwrap();
    Command::new(BIN).arg("check-config").arg("--config").arg(&path).output().unwrap()
}

#[test]
fn metrics_listen_config_errors() {
    let dir = TempDir::new("metrics-cfg");
    let base = "[workers]\ncores = [0]\n";
    for (value, want) in [
        ("0.0.0.0:9100", "0.0.0.0:9100 is not a loopback address"),
        ("192.168.1.5:9100", "is not a loopback address"),
        ("[::]:9100", "is not a loopback address"),
        ("localhost:9100", "\"localhost:9100\" is not an IP:port address"),
        ("127.0.0.1", "is not an IP:port address"),
        ("127.0.0.1:0", "give a port number, not 0"),
    ] {
        let out = check_config(&dir, &format!("metrics_listen = \"{value}\"\n{base}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value} accepted");
        assert!(err.contains("metrics_listen: ") && err.contains(want), "{value}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let out = check_config(&dir, &format!("metrics_listen = 9100\n{base}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("expected a string"), "{err}");
    for ok in ["127.0.0.1:9100", "127.0.0.2:9100", "[::1]:9100"] {
        let out = check_config(&dir, &format!("metrics_listen = \"{ok}\"\n{base}"));
        assert!(out.status.success(), "{ok}: {out:?}");
    }
}

#[test]
fn metrics_follow_traffic_on_socket_and_tcp() {
    let net = NetSetup::new("mt", 2, 1, 31);
    let dir = TempDir::kept_on_failure("metrics");
    let core = podwire::config::allowed_cpus().and_then(|c| c.last().copied()).unwrap_or(0);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cfg = format!(
        "log_level = \"warn\"\nmetrics_listen = \"{addr}\"\n[workers]\ncores = [{core}]\n\
         [memory]\nbuffers = 8192\nhugepages = false\n"
    );
    for (i, e) in net.ends.iter().enumerate() {
        cfg +=
            &format!("[[ports]]\nname = \"x{i}\"\ntype = \"af-xdp\"\ninterface = \"{}\"\n", e.host);
    }
    cfg += "[[bridge]]\nname = \"br0\"\nports = [\"x0\", \"x1\"]\n";
    let d = Daemon::start(dir.path(), &cfg, &[]);
    for p in ["x0", "x1"] {
        d.wait_port(p, Duration::from_secs(5), "link up", |s| s.link == "up");
    }

    let before = scrape(&d);
    for fam in [
        "podwire_port_rx_packets_total",
        "podwire_port_tx_bytes_total",
        "podwire_port_errors_total",
        "podwire_bridge_frames_total",
        "podwire_worker_polls_total",
    ] {
        assert_eq!(before.types[fam], "counter", "{fam}");
        assert!(!before.help[fam].is_empty(), "{fam}");
    }
    assert_eq!(before.types["podwire_mempool_buffers"], "gauge");
    assert_eq!(before.value("podwire_mempool_buffers", &[]), 8192.0);
    let in_ring = before.value("podwire_mempool_buffers_free", &[]);
    assert!(in_ring > 0.0 && in_ring < 8192.0, "AF_XDP fill rings hold buffers: {in_ring}");
    assert_eq!(before.value("podwire_port_link_up", &[("port", "x0"), ("kind", "af-xdp")]), 1.0);
    let core_s = core.to_string();
    let polls = |e: &Exposition, st: &str| {
        e.value("podwire_worker_polls_total", &[("worker", "0"), ("core", &core_s), ("state", st)])
    };
    assert!(polls(&before, "idle") > 0.0, "an idle worker counts idle rounds");

    assert_eq!(net.ping(0, 1, 10, 56), 10, "ping:\n{}", d.log_text());
    assert_eq!(tcp_echo(&net.ends[0].ns, &net.ends[1].ns, &net.ends[1].ip, 5311, 1 << 20), 1 << 20);
    std::thread::sleep(Duration::from_millis(50)); // a publication period of the worker

    let after = scrape(&d);
    let port_delta = |name: &str, port: &str| {
        let l = [("port", port), ("kind", "af-xdp")];
        after.value(name, &l) - before.value(name, &l)
    };
    // 1 MiB each way in frames of at most 1514 bytes, plus 10 pings.
    let min_frames = (1u64 << 20) as f64 / 1514.0;
    for p in ["x0", "x1"] {
        assert!(port_delta("podwire_port_rx_packets_total", p) > min_frames, "{p}");
        assert!(port_delta("podwire_port_tx_packets_total", p) > min_frames, "{p}");
        assert!(port_delta("podwire_port_rx_bytes_total", p) > (1u64 << 20) as f64, "{p}");
        assert!(port_delta("podwire_port_tx_bytes_total", p) > (1u64 << 20) as f64, "{p}");
        assert_eq!(port_delta("podwire_port_errors_total", p), 0.0, "{p}");
    }
    // The metrics agree with GET /stats.
    let x0 = d.port("x0");
    let rx_now = after.value("podwire_port_rx_packets_total", &[("port", "x0")]);
    assert!(rx_now <= x0.rx_packets as f64 && rx_now + 5.0 >= x0.rx_packets as f64, "{x0:?}");
    let fwd = |e: &Exposition| {
        e.value("podwire_bridge_frames_total", &[("bridge", "br0"), ("action", "forwarded")])
    };
    assert!(fwd(&after) - fwd(&before) > 2.0 * min_frames, "bridge forwarded");
    let learned =
        after.value("podwire_bridge_mac_events_total", &[("bridge", "br0"), ("event", "learned")]);
    assert!(learned >= 2.0);
    assert_eq!(after.value("podwire_bridge_mac_entries", &[("bridge", "br0")]), 2.0);
    let busy = polls(&after, "busy") - polls(&before, "busy");
    let idle = polls(&after, "idle") - polls(&before, "idle");
    assert!(busy > min_frames / 32.0, "busy rounds moved the traffic: {busy}");
    assert!(idle > 0.0, "{idle}");

    // The same exposition over TCP: raw HTTP, then curl.
    let raw = tcp_get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, headers, body) = split_response(&raw);
    assert_eq!(status, "HTTP/1.1 200 OK", "{raw}");
    assert!(header(&headers, "content-type").starts_with("text/plain; version=0.0.4"));
    let tcp = prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert!(tcp.value("podwire_port_rx_packets_total", &[("port", "x1")]) >= rx_now.min(1.0));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl (apt-get install curl; scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("podwire_worker_polls_total{worker=\"0\""), "{text}");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(&d.control)
        .arg("http://podwire/metrics")
        .output()
        .unwrap();
    prometheus::parse(&String::from_utf8_lossy(&out.stdout)).expect("curl over the socket");

    // Anything but GET /metrics is refused with a JSON error and counted, and the port
    // still serves.
    let rejected = |e: &Exposition, l: &str| {
        e.value("podwire_http_requests_rejected_total", &[("listener", l)])
    };
    let (tcp_rejected, ctl_rejected) = (rejected(&tcp, "metrics"), rejected(&tcp, "control"));
    for (req, want) in [
        ("GET /stats HTTP/1.1\r\n\r\n", "HTTP/1.1 404"),
        ("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405"),
        ("\u{1}\u{2} nonsense\r\n\r\n", "HTTP/1.1 400"),
    ] {
        let raw = tcp_get(addr, req);
        assert!(raw.starts_with(want), "{req:?}: {raw}");
        assert!(raw.contains("{\"error\":"), "{raw}");
    }
    let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100 * 1024));
    assert!(tcp_get(addr, &huge).starts_with("HTTP/1.1 413"));
    assert!(unix_get(&d.control, "DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(tcp_get(addr, "GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
    let now = scrape(&d);
    assert_eq!(rejected(&now, "metrics") - tcp_rejected, 4.0, "3 bad requests and a huge one");
    assert_eq!(rejected(&now, "control") - ctl_rejected, 1.0, "DELETE /metrics");

    let log = d.stop();
    // log_level = "warn": the info lines of a normal start are not there.
    assert!(!log.contains("podwire running") && !log.contains(" INFO "), "{log}");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "port closed");
}

#[test]
fn rust_log_overrides_the_config_log_level() {
    let dir = TempDir::kept_on_failure("metrics-log");
    let ctl = dir.path().join("ctl.sock");
    let port = free_port();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "control_socket = \"{}\"\nlog_level = \"error\"\nmetrics_listen = \"127.0.0.1:{port}\"\n\
             [workers]\ncores = [0]\n[memory]\nbuffers = 1024\nhugepages = false\n",
            ctl.display()
        ),
    )
    .unwrap();
    let run = |rust_log: &str| {
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", rust_log)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while !ctl.exists() {
            assert!(t0.elapsed() < Duration::from_secs(20), "no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: kill(2) on our own child's PID, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let info = run("info");
    assert!(info.contains("metrics served at http://127.0.0.1:"), "{info}");
    assert!(info.contains("podwire running"), "{info}");
    let quiet = run("");
    assert!(quiet.is_empty(), "config log_level = error: {quiet}");
}

/// A state file that cannot be written (its directory replaced by a plain file while
/// the daemon runs): the API change still answers 201 and is live, the daemon logs
/// the failure and `podwire_state_file_write_failures_total` counts it; once the
/// directory is back, the next change writes the file again with every change.
#[test]
fn a_failed_state_file_write_is_counted_in_metrics() {
    let dir = TempDir::kept_on_failure("metrics-statefile");
    let state_dir = dir.path().join("state");
    let state = state_dir.join("podwire.state.json");
    let body = format!(
        "state_file = \"{}\"\n[workers]\ncores = [0]\n[memory]\nbuffers = 1024\nhugepages = false\n",
        state.display()
    );
    let d = Daemon::start(dir.path(), &body, &[]);
    let failures = |e: &Exposition| e.value("podwire_state_file_write_failures_total", &[]);
    assert_eq!(failures(&scrape(&d)), 0.0, "nothing failed yet");
    d.api_ok("POST", "/bridges", Some(r#"{"name": "br0"}"#), 201);
    assert!(state.is_file(), "the first API change writes the file (and its directory)");
    assert_eq!(failures(&scrape(&d)), 0.0);

    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::write(&state_dir, b"a file where the state directory was").unwrap();
    d.api_ok("POST", "/bridges", Some(r#"{"name": "br1"}"#), 201);
    assert_eq!(failures(&scrape(&d)), 1.0, "the failed write is counted");
    let v = d.api_ok("GET", "/bridges", None, 200);
    let names: Vec<&str> =
        v["bridges"].as_array().unwrap().iter().filter_map(|b| b["name"].as_str()).collect();
    assert!(names.contains(&"br1"), "the change is live: {v}");
    assert!(d.log_text().contains("cannot write the state file"), "logged: {}", d.log_text());

    std::fs::remove_file(&state_dir).unwrap();
    d.api_ok("POST", "/bridges", Some(r#"{"name": "br2"}"#), 201);
    assert_eq!(failures(&scrape(&d)), 1.0, "this write worked");
    let saved = std::fs::read_to_string(&state).expect("state file written again");
    for b in ["br0", "br1", "br2"] {
        assert!(saved.contains(&format!("\"{b}\"")), "{b} saved: {saved}");
    }
    d.stop();
}
