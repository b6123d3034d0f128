//! Bad configs: each gives a non-zero exit and exactly one line on stderr naming the
//! problem, from both `podwire check-config` and `podwire run`; none panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_podwire");

/// A fresh directory for this test's files.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("podwire-cfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs podwire and collects its output. A config wrongly accepted by `run` would
/// start the daemon: it is killed after a while so that the test fails, not hangs.
fn podwire(args: &[&str], config: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run podwire");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "podwire {args:?} {config:?} did not exit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait_with_output().expect("collect output")
}

/// A good config with sockets in `dir`; the cases below mutate it.
fn good(dir: &Path) -> String {
    format!(
        r#"control_socket = "{d}/ctl.sock"
[memory]
buffers = 2048
hugepages = false
[workers]
cores = [0]
[[ports]]
name = "a"
type = "vhost-user"
socket = "{d}/a.sock"
[[ports]]
name = "b"
type = "vhost-user"
socket = "{d}/b.sock"
mode = "client"
queues = 2
mac = "02:00:00:00:00:02"
socket_perms = "0600"
[[xconnect]]
ports = ["a", "b"]
"#,
        d = dir.display()
    )
}

const PORT_C: &str =
    "\n[[ports]]\nname = \"c\"\ntype = \"vhost-user\"\nsocket = \"/tmp/pw-c.sock\"\n";

/// (what, config text, text the error must contain). `good` is the base config.
fn cases(dir: &Path) -> Vec<(&'static str, String, String)> {
    let g = good(dir);
    let long = format!("/tmp/{}/x.sock", "d".repeat(110));
    vec![
        ("unknown top-level key", format!("threads = 4\n{g}"), "unknown field `threads`".into()),
        (
            "unknown key in a port",
            g.replace("mode = \"client\"", "mode = \"client\"\nqueue = 2"),
            "unknown field `queue`".into(),
        ),
        (
            "misspelt key in a section",
            g.replace("hugepages = false", "hugepage = false"),
            "unknown field `hugepage`".into(),
        ),
        (
            "unknown port in xconnect",
            g.replace("[\"a\", \"b\"]", "[\"a\", \"z\"]"),
            "xconnect[0].ports: unknown port \"z\"".into(),
        ),
        (
            "port used in two xconnects",
            format!("{g}{PORT_C}[[xconnect]]\nports = [\"c\", \"a\"]\n"),
            "xconnect[1].ports: port \"a\" is already cross-connected in xconnect[0]".into(),
        ),
        (
            "duplicate port name",
            g.replace("name = \"b\"", "name = \"a\""),
            "ports[1].name: duplicate port name \"a\"".into(),
        ),
        (
            "empty port name",
            g.replace("name = \"b\"", "name = \"\""),
            "ports[1].name: must not be empty".into(),
        ),
        (
            "invalid port name",
            g.replace("name = \"b\"", "name = \"b c/d\""),
            "ports[1].name: \"b c/d\" may only contain".into(),
        ),
        (
            "xconnect of three ports",
            format!("{g}{PORT_C}").replace("[\"a\", \"b\"]", "[\"a\", \"b\", \"c\"]"),
            "xconnect[0].ports: a cross-connect joins exactly 2 ports, 3 given".into(),
        ),
        (
            "xconnect of a port with itself",
            g.replace("[\"a\", \"b\"]", "[\"b\", \"b\"]"),
            "cannot be cross-connected with itself".into(),
        ),
        (
            "no worker cores",
            g.replace("cores = [0]", "cores = []"),
            "workers.cores: at least one".into(),
        ),
        (
            "duplicate cores",
            g.replace("cores = [0]", "cores = [0, 0]"),
            "core 0 is listed twice".into(),
        ),
        (
            "core not online",
            g.replace("cores = [0]", "cores = [1000]"),
            "workers.cores: core 1000 is not online".into(),
        ),
        (
            "negative core",
            g.replace("cores = [0]", "cores = [-1]"),
            "-1 is not a CPU number".into(),
        ),
        (
            "socket path too long",
            g.replace(&format!("{}/a.sock", dir.display()), &long),
            format!("ports[0].socket: {long} is {} bytes, longer than", long.len()),
        ),
        (
            "bad mac",
            g.replace("02:00:00:00:00:02", "02:00:00:00:00:zz"),
            "ports[1].mac: \"02:00:00:00:00:zz\" is not a MAC address".into(),
        ),
        (
            "multicast mac",
            g.replace("02:00:00:00:00:02", "03:00:00:00:00:02"),
            "ports[1].mac: \"03:00:00:00:00:02\" is a multicast address".into(),
        ),
        (
            "bad mode",
            g.replace("mode = \"client\"", "mode = \"listen\""),
            "ports[1].mode: \"listen\" is not \"server\" or \"client\"".into(),
        ),
        (
            "zero queues",
            g.replace("queues = 2", "queues = 0"),
            "ports[1].queues: 0 is out of range".into(),
        ),
        (
            "too many queues",
            g.replace("queues = 2", "queues = 17"),
            "ports[1].queues: 17 is out of range".into(),
        ),
        (
            "bad socket perms",
            g.replace("socket_perms = \"0600\"", "socket_perms = \"rw-rw----\""),
            "ports[1].socket_perms: \"rw-rw----\" is not a permission mode".into(),
        ),
        (
            "decimal socket perms",
            g.replace("socket_perms = \"0600\"", "socket_perms = 660"),
            "ports[1].socket_perms: 660 is not a permission mode".into(),
        ),
        (
            "duplicate socket path",
            g.replace("b.sock", "a.sock"),
            "ports[1].socket: socket ".to_string()
                + &dir.display().to_string()
                + "/a.sock is also used by ports[0].socket",
        ),
        (
            "port socket is the control socket",
            g.replace("b.sock", "ctl.sock"),
            "is also used by control_socket".into(),
        ),
        (
            "missing socket",
            g.replace(&format!("socket = \"{}/a.sock\"", dir.display()), ""),
            "missing field `socket`".into(),
        ),
        (
            "missing port name",
            g.replace("name = \"a\"", ""),
            "ports[0]: missing field `name`".into(),
        ),
        (
            "missing port type",
            g.replacen("type = \"vhost-user\"", "", 1),
            "ports[0]: missing field `type`".into(),
        ),
        (
            "missing workers",
            g.replace("[workers]\ncores = [0]\n", ""),
            "missing field `workers`".into(),
        ),
        (
            "af-xdp port with vhost-user keys",
            g.replacen("\"vhost-user\"", "\"af-xdp\"", 1),
            "unknown field `socket`, expected one of `name`, `type`, `interface`".into(),
        ),
        (
            "vfio port with vhost-user keys",
            g.replacen("\"vhost-user\"", "\"vfio\"", 1),
            "ports[0] (a): unknown field `socket`".into(),
        ),
        (
            "vfio port with a bad PCI address",
            g.replacen("type = \"vhost-user\"", "type = \"vfio\"\npci = \"01:32.0\"", 1).replacen(
                "\nsocket = ",
                "\n#socket = ",
                1,
            ),
            "ports[0].pci: \"01:32.0\" is not a PCI address".into(),
        ),
        (
            "vfio port with a bad ring size",
            g.replacen(
                "type = \"vhost-user\"",
                "type = \"vfio\"\npci = \"01:10.0\"\nring_size = 100",
                1,
            )
            .replacen("\nsocket = ", "\n#socket = ", 1),
            "ports[0].ring_size: 100 is not a power of two in 8..=4096".into(),
        ),
        (
            "unknown port type",
            g.replacen("\"vhost-user\"", "\"ring\"", 1),
            "ports[0].type: unknown port type \"ring\"".into(),
        ),
        (
            "wrong value type",
            g.replace("queues = 2", "queues = \"two\""),
            "ports[1].queues: must be integer, not string".into(),
        ),
        (
            "wrong value type of an optional key",
            g.replace("mode = \"client\"", "mode = \"client\"\nsocket_group = 3"),
            "ports[1].socket_group: must be string, not integer".into(),
        ),
        (
            "wrong value type in a section",
            g.replace("hugepages = false", "hugepages = \"no\""),
            "line 4, column 13: invalid type: string \"no\", expected a boolean".into(),
        ),
        (
            "buffers out of range",
            g.replace("buffers = 2048", "buffers = 10"),
            "memory.buffers: 10 is out of range".into(),
        ),
        (
            "buffer size too small for a full frame",
            g.replace("buffers = 2048", "buffers = 2048\nbuffer_size = 1000"),
            "memory.buffer_size: 1000 is out of range".into(),
        ),
        ("invalid TOML", g.replace("[workers]", "[workers"), "line 5, column".into()),
        (
            "control character in a string",
            g.replace("name = \"a\"", "name = \"a\u{1}\""),
            "line 8".into(),
        ),
        (
            "control socket path too long",
            g.replace(&format!("{}/ctl.sock", dir.display()), &long),
            "control_socket: ".into(),
        ),
    ]
}

/// Asserts a failed run: non-zero exit, one non-empty stderr line containing `want`,
/// no panic.
fn assert_one_line_error(what: &str, out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{what}: exit status {:?}, stderr {stderr:?}", out.status);
    assert!(!stderr.contains("panicked") && !stdout.contains("panicked"), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: want one line on stderr, got {stderr:?}");
    assert!(lines[0].contains(want), "{what}: {:?} does not contain {want:?}", lines[0]);
}

#[test]
fn bad_configs_fail_with_one_line_naming_the_problem() {
    let dir = temp_dir("bad");
    let cases = cases(&dir);
    assert!(cases.len() >= 12);
    for (i, (what, text, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for cmd in ["check-config", "run"] {
            let out = podwire(&[cmd], &path);
            assert_one_line_error(&format!("{what} ({cmd})"), &out, want);
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(&*path.to_string_lossy()),
                "{what}: the error names the file"
            );
        }
    }
    // Nothing was created by the failed runs.
    assert!(!dir.join("ctl.sock").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unreadable_configs_fail_with_one_line() {
    let dir = temp_dir("unreadable");
    let missing = dir.join("missing.toml");
    let not_utf8 = dir.join("binary.toml");
    std::fs::write(&not_utf8, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    for (what, path, want) in [
        ("missing file", &missing, "cannot read config"),
        ("a directory", &dir, "not a regular file"),
        ("not UTF-8", &not_utf8, "not UTF-8 text"),
    ] {
        for cmd in ["check-config", "run"] {
            assert_one_line_error(&format!("{what} ({cmd})"), &podwire(&[cmd], path), want);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn good_config_passes_check_config() {
    let dir = temp_dir("good");
    let path = dir.join("good.toml");
    std::fs::write(&path, good(&dir)).unwrap();
    let out = podwire(&["check-config"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("ok (ports: 2, cross-connects: 1, worker cores: [0])"));
    // Defaults: a config with only the required keys is fine too.
    std::fs::write(&path, "[workers]\ncores = [0]\n").unwrap();
    assert!(podwire(&["check-config"], &path).status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
