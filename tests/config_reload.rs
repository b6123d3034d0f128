//! Config reload (`POST /reload` and SIGHUP): only the difference is applied, ports
//! made through the control API are left alone, a bad file changes nothing; and a
//! testpmd pod on two ports the reload does not touch keeps forwarding without
//! noticing.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{control_socket, Daemon, TempDir};
use common::testpmd::{self, PeerLock, Pod, PodConfig};

const SWITCH_CPU: usize = 0;
const POD_CPU: usize = 1;

fn port(dir: &Path, name: &str, extra: &str) -> String {
    format!(
        "[[ports]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n{extra}\n",
        dir.join(format!("{name}.sock")).display()
    )
}

fn head(buffers: u32) -> String {
    format!("[workers]\ncores = [{SWITCH_CPU}]\n[memory]\nbuffers = {buffers}\nhugepages = false\n")
}

/// Rewrites the daemon's config file (as `Daemon::start` wrote it).
fn rewrite(dir: &Path, body: &str) {
    let text = format!("control_socket = \"{}\"\n{body}", control_socket(dir).display());
    std::fs::write(dir.join("podwire.toml"), text).expect("rewrite config");
}

fn names(d: &Daemon) -> BTreeSet<String> {
    d.port_names().into_iter().collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn list(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

#[test]
fn reload_applies_only_the_difference_and_a_bad_file_changes_nothing() {
    testpmd::require_testpmd();
    let _lock = PeerLock::acquire();
    let dir = TempDir::kept_on_failure("reload");
    let p = |n: &str, e: &str| port(&dir, n, e);
    let first = head(8192)
        + &p("a", "")
        + &p("b", "")
        + &p("c", "")
        + &p("d", "")
        + &p("e", "")
        + "[[xconnect]]\nports = [\"a\", \"b\"]\n[[bridge]]\nname = \"br0\"\nports = [\"d\", \"e\"]\n";
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let mut d = Daemon::start(&dir, &first, &[&a, &b]);
    let mut pod = Pod::start(PodConfig::new(&[&a, &b]).on_cpu(POD_CPU)).expect("pod");
    pod.wait_links_up(Duration::from_secs(20)).expect("links up");
    pod.start_tx_first(16).expect("traffic");
    d.wait_port("a", Duration::from_secs(10), "traffic", |p| p.rx_packets > 1000);
    // A port made through the API: reloads leave it alone.
    let z = format!(
        "{{\"name\":\"z\",\"type\":\"vhost-user\",\"socket\":\"{}\",\"bridge\":\"br0\"}}",
        dir.join("z.sock").display()
    );
    d.api_ok("POST", "/ports", Some(&z), 201);

    // c goes, d gets two queues (recreated), e moves to a new bridge br1 on VLAN 5,
    // f is new in br0, h new in br1; a and b are untouched.
    let second = head(8192)
        + &p("a", "")
        + &p("b", "")
        + &p("d", "queues = 2")
        + &p("e", "vlan = 5")
        + &p("f", "")
        + &p("h", "")
        + "[[xconnect]]\nports = [\"a\", \"b\"]\n[[bridge]]\nname = \"br0\"\nports = [\"d\", \"f\"]\n\
           [[bridge]]\nname = \"br1\"\nports = [\"e\", \"h\"]\n";
    rewrite(&dir, &second);
    let rx_before = d.port("a").rx_packets;
    let r = d.api_ok("POST", "/reload", None, 200);
    assert_eq!(list(&r["added"]), ["f", "h"], "{r}");
    assert_eq!(list(&r["removed"]), ["c"], "{r}");
    assert_eq!(list(&r["changed"]), ["d", "e"], "{r}");
    assert_eq!(names(&d), set(&["a", "b", "d", "e", "f", "h", "z"]));
    assert!(!dir.join("c.sock").exists(), "c's socket removed");
    assert!(dir.join("f.sock").exists(), "f's socket listening");
    let dv = d.api_ok("GET", "/ports/d", None, 200);
    assert_eq!((dv["queues"].as_u64(), dv["bridge"].as_str()), (Some(2), Some("br0")), "{dv}");
    let ev = d.api_ok("GET", "/ports/e", None, 200);
    assert_eq!((ev["bridge"].as_str(), ev["vlan"].as_u64()), (Some("br1"), Some(5)), "{ev}");
    let zv = d.api_ok("GET", "/ports/z", None, 200);
    assert_eq!((zv["origin"].as_str(), zv["bridge"].as_str()), (Some("api"), Some("br0")), "{zv}");
    let av = d.api_ok("GET", "/ports/a", None, 200);
    assert_eq!((av["xconnect"].as_str(), av["origin"].as_str()), (Some("b"), Some("config")));
    d.wait_port("a", Duration::from_secs(5), "still forwarding", |p| p.rx_packets > rx_before);

    // The same file again: nothing to do.
    let r = d.api_ok("POST", "/reload", Some("{}"), 200);
    assert!(
        r["added"].as_array().unwrap().is_empty() && r["changed"].as_array().unwrap().is_empty()
    );

    // Bad files change nothing and say why.
    let bad_cases = [
        (second.clone() + "[[ports]]\nname = \"g\"\n", "missing field `type`"),
        (second.replace("[[xconnect]]", "[[xconect]]"), "unknown field `xconect`"),
        (second.replace("buffers = 8192", "buffers = 4096"), "[memory] cannot change"),
        (second.clone() + &p("z", ""), "created through the control API"),
        (
            second.replace(
                "name = \"br0\"\nports = [\"d\", \"f\"]",
                "name = \"brq\"\nports = [\"d\", \"f\"]",
            ),
            "has ports created through the control API (z)",
        ),
    ];
    for (text, words) in &bad_cases {
        rewrite(&dir, text);
        let (code, v) = d.api("POST", "/reload", None);
        assert_eq!(code, 400, "{words}: {v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{v} lacks {words:?}");
        assert_eq!(names(&d), set(&["a", "b", "d", "e", "f", "h", "z"]), "{words}");
        assert!(d.api_ok("GET", "/bridges/br0", None, 200)["ports"].as_array().unwrap().len() == 3);
    }

    // SIGHUP: a bad file is logged and ignored, a good one applied.
    d.signal(libc::SIGHUP);
    let start = Instant::now();
    while !d.log_text().contains("reload refused") {
        assert!(start.elapsed() < Duration::from_secs(10), "SIGHUP with a bad file not logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.assert_alive();
    rewrite(&dir, &(second.clone() + &p("g", "")));
    d.signal(libc::SIGHUP);
    let start = Instant::now();
    while !names(&d).contains("g") {
        assert!(start.elapsed() < Duration::from_secs(10), "SIGHUP did not add g");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.join("g.sock").exists());

    // The pod on a and b never noticed.
    let before = d.port("b").rx_packets;
    d.wait_port("b", Duration::from_secs(5), "still forwarding", |p| p.rx_packets > before + 1000);
    pod.stop().expect("stop");
    pod.quit().expect("quit");
    let log = d.stop();
    let a_disconnects = log.lines().filter(|l| l.contains("frontend disconnected port=a")).count();
    assert!(a_disconnects <= 1, "a was reconnected by a reload:\n{log}");
}
