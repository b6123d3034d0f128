//! The whole daemon as a process: `podwire run` with two vhost-user ports, asked
//! through its control socket by `podwire stats` and by raw HTTP, then stopped with
//! SIGTERM.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::{control_socket, stats_command as stats, Daemon, TempDir};

/// Sends raw bytes to the control socket and returns the whole answer.
fn raw_request(socket: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read answer");
    out
}

#[test]
fn run_serves_stats_and_stops_cleanly_on_sigterm() {
    let dir = TempDir::kept_on_failure("stats");
    let ctl = control_socket(&dir);
    let (a_sock, b_sock) = (dir.join("a.sock"), dir.join("b.sock"));
    let core = podwire::config::allowed_cpus().and_then(|c| c.last().copied()).unwrap_or(0);
    let config = format!(
        r#"log_level = "debug"
[memory]
buffers = 2048
hugepages = false
[workers]
cores = [{core}]
[[ports]]
name = "a"
type = "vhost-user"
socket = "{a}"
mac = "02:00:00:00:00:0a"
[[ports]]
name = "b"
type = "vhost-user"
socket = "{b}"
mode = "server"
queues = 2
socket_perms = "0600"
socket_group = "daemon"
[[xconnect]]
ports = ["a", "b"]
"#,
        a = a_sock.display(),
        b = b_sock.display()
    );

    // Nobody running yet: a clear one-line error.
    let out = stats(&ctl, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot connect to {}: is podwire running?", ctl.display())));
    assert_eq!(err.lines().count(), 1, "{err}");

    // A stale socket from a killed daemon is replaced.
    drop(UnixListener::bind(&ctl).unwrap());
    assert!(ctl.exists());

    let daemon = Daemon::start(&dir, &config, &[]);
    let out = stats(&ctl, true);
    assert!(out.status.success(), "{out:?}");
    let body = String::from_utf8(out.stdout).unwrap();

    let v: serde_json::Value = serde_json::from_str(&body).expect("stats --json prints JSON");
    let ports = v["ports"].as_array().expect("ports array");
    assert_eq!(ports.len(), 2, "{body}");
    for (p, (name, queues)) in ports.iter().zip([("a", 1), ("b", 2)]) {
        assert_eq!(p["name"], name);
        assert_eq!(p["kind"], "vhost-user");
        assert_eq!(p["link"], "down");
        assert_eq!(p["queues"], queues);
        for k in
            ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_drops", "tx_drops", "errors"]
        {
            assert_eq!(p[k], 0, "{name}.{k} in {body}");
        }
    }
    assert_eq!(ports[0]["mac"], "02:00:00:00:00:0a");

    // The table form.
    let out = stats(&ctl, false);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("PORT"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("a ") && l.contains("down")), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");

    // What curl sends, and things curl would not send.
    let mode = std::fs::metadata(&ctl).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // The vhost-user sockets: 0660 by default, or the mode and group configured
    // ("daemon" is gid 1 on Debian).
    use std::os::unix::fs::MetadataExt;
    let a_meta = std::fs::metadata(&a_sock).expect("port a's socket exists");
    assert!(a_meta.file_type().is_socket());
    assert_eq!(a_meta.permissions().mode() & 0o777, 0o660);
    let b_meta = std::fs::metadata(&b_sock).expect("port b's socket exists");
    assert_eq!(b_meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(b_meta.gid(), 1, "socket_group applied");
    let health = raw_request(&ctl, b"GET /health HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.ends_with("{\"status\":\"ok\"}"), "{health}");
    let nope = raw_request(&ctl, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(nope.starts_with("HTTP/1.1 404 "), "{nope}");
    assert!(nope.contains("{\"error\":"), "{nope}");
    let post = raw_request(&ctl, b"POST /stats HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let garbage = raw_request(&ctl, b"\x00\x01garbage\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    let mut huge = b"GET /stats HTTP/1.1\r\nX: ".to_vec();
    huge.resize(100 * 1024, b'a');
    let too_big = raw_request(&ctl, &huge);
    assert!(too_big.starts_with("HTTP/1.1 413 "), "{too_big}");
    // A client that connects and says nothing does not wedge the server for others
    // beyond the request deadline; one that hangs up early is simply dropped.
    drop(UnixStream::connect(&ctl).unwrap());
    assert!(stats(&ctl, true).status.success());

    // The vhost-user crate owns its sockets: note which ones it created.
    let port_sockets: Vec<&PathBuf> =
        [&a_sock, &b_sock].into_iter().filter(|p| p.exists()).collect();

    let log_text = daemon.stop();
    for want in ["SIGTERM received", "cross-connect a <-> b", "replacing stale control socket"] {
        assert!(log_text.contains(want), "log lacks {want:?}:\n{log_text}");
    }
    for p in port_sockets {
        assert!(!p.exists(), "{} removed by its port", p.display());
    }
    for p in [&a_sock, &b_sock] {
        // Whatever is left at a port path must not be a socket.
        if let Ok(m) = std::fs::symlink_metadata(p) {
            assert!(!m.file_type().is_socket(), "{} left behind", p.display());
        }
    }
}
