//! Pods attached through podwire-cni survive a daemon crash: podwire is SIGKILLed
//! while two dpdk-testpmd pods exchange traffic through a bridge made by the plugin
//! (control API ports, real host-local IPAM), then started again with the same
//! config. Its state file brings the ports back — same sockets, MACs, bridge, VLAN —
//! before the control socket answers, CHECK passes, the pods forward again, and DEL
//! then leaves nothing (port, socket, state file entry, lease).
//!
//! - podwire as vhost-user **client** (`host.vhost.mode = "client"`, the pod's
//!   virtio-user has `server=1`): the pods keep running through the crash and podwire
//!   reconnects to them by itself. The time from the restart to traffic reaching the
//!   receiving pod again is measured and printed.
//! - podwire as vhost-user **server** (the plugin's default): the ports and their
//!   listening sockets come back, but DPDK 22.11's virtio-user in client mode does
//!   not reconnect once its backend has gone (only a `server=1` virtio-user
//!   reconnects; its link stays down): the test shows that, then restarts the pods
//!   on the same sockets (what a pod whose app exits on link loss gets from its
//!   restart policy) and measures the time to traffic from then.
//!
//! Needs root, dpdk-testpmd, host-local (`scripts/install-deps.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cni::{api, daemon_body, port_name, BindMount, Cni, Netns};
use common::daemon::{control_socket, Daemon, TempDir};
use common::testpmd::{require_testpmd, PeerLock, Pod, PodConfig};
use serde_json::{json, Value};

/// The two pods' attachments.
struct Attached {
    cids: [String; 2],
    nss: [Netns; 2],
    results: Vec<Value>,
    sockets: Vec<PathBuf>,
    mounts: Vec<BindMount>,
}

fn attach(root: &Path, cni: &Cni, tag: &str) -> Attached {
    let pid = std::process::id();
    let cids = [format!("{tag}a{pid:010}aaaaaaaa"), format!("{tag}b{pid:010}bbbbbbbb")];
    let nss = [Netns::new(&format!("{tag}a")), Netns::new(&format!("{tag}b"))];
    let results: Vec<Value> = cids.iter().zip(&nss).map(|(c, n)| cni.add(c, &n.path())).collect();
    let sockets: Vec<PathBuf> = results
        .iter()
        .map(|r| PathBuf::from(r["interfaces"][0]["socketPath"].as_str().expect("socketPath")))
        .collect();
    let mounts = cids
        .iter()
        .zip(&sockets)
        .map(|(c, s)| BindMount::new(s.parent().unwrap(), &root.join("pods").join(&c[..2])))
        .collect();
    Attached { cids, nss, results, sockets, mounts }
}

impl Attached {
    /// Starts pod `i` on its socket (seen through its own mount, in its netns).
    fn pod(&self, i: usize, server: bool) -> Pod {
        let in_pod = self.mounts[i].0.join(self.sockets[i].file_name().unwrap());
        let mut pod = Pod::start(
            PodConfig::new(&[in_pod])
                .netns(self.nss[i].0.clone())
                .server(server)
                .arg("--port-topology=loop"),
        )
        .expect("testpmd pod");
        pod.wait_links_up(Duration::from_secs(30)).expect("pod link up");
        pod
    }

    fn check(&self, cni: &Cni) {
        for ((cid, r), ns) in self.cids.iter().zip(&self.results).zip(&self.nss) {
            let (code, v) = cni.call_with("CHECK", cid, &ns.path(), &json!({"prevResult": r}));
            assert_eq!((code, &v), (0, &Value::Null), "CHECK {cid}\n{}", cni.log());
        }
    }
}

/// Pod 0 sends (txonly), pod 1 receives (rxonly).
fn start_traffic(pods: &mut [Pod]) {
    pods[1].cmd("set fwd rxonly").unwrap();
    pods[1].start_fwd().unwrap();
    pods[0].cmd("set fwd txonly").unwrap();
    pods[0].start_fwd().unwrap();
}

fn rx(pod: &mut Pod) -> u64 {
    pod.port_stats().expect("pod stats")[0].rx_packets
}

/// Waits until pod 1 receives at least 1000 more frames; the time since `t0`.
fn until_forwarding(t0: Instant, pods: &mut [Pod], daemon: &Daemon, what: &str) -> Duration {
    let start = rx(&mut pods[1]);
    loop {
        if rx(&mut pods[1]) >= start + 1000 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what}: pod 1 receives nothing within 30 s; podwire log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The daemon's state file (next to its control socket).
fn state_file(root: &Path) -> Value {
    let path = control_socket(root).with_file_name("ctl.state.json");
    serde_json::from_slice(&std::fs::read(&path).expect("state file")).expect("state JSON")
}

/// The ports as the daemon shows them: name -> (socket, mode, mac, bridge, vlan).
fn ports(root: &Path) -> Vec<Value> {
    let (code, v) = api(root, "GET", "/ports", None);
    assert_eq!(code, 200);
    let mut p: Vec<Value> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            json!([
                p["name"],
                p["socket"],
                p["mode"],
                p["mac"],
                p["bridge"],
                p["vlan"],
                p["origin"]
            ])
        })
        .collect();
    p.sort_by_key(|v| v.to_string());
    p
}

/// DEL both; nothing is left: ports, sockets, dirs, state file entries, leases, records.
fn del_all(cni: &Cni, root: &Path, a: Attached) {
    let Attached { cids, sockets, mounts, .. } = a;
    drop(mounts);
    for (cid, s) in cids.iter().zip(&sockets) {
        cni.del(cid);
        assert!(!s.exists(), "socket {} left", s.display());
        assert!(!s.parent().unwrap().exists(), "socket dir of {cid} left");
        assert_eq!(api(root, "GET", &format!("/ports/{}", port_name(cid)), None).0, 404);
    }
    assert_eq!(cni.leases(), Vec::<String>::new(), "IPAM leases left");
    assert_eq!(cni.records(), 0, "plugin records left");
    let st = state_file(root);
    assert_eq!(st["ports"], json!([]), "state file still has ports: {st}");
    assert_eq!(st["bridge_ports"], json!([]), "state file still has members: {st}");
    assert_eq!(st["bridges"][0]["name"], "br-e2e", "the bridge stays: {st}");
}

#[test]
fn client_mode_pods_forward_again_after_the_daemon_is_sigkilled_and_restarted() {
    let _peers = PeerLock::acquire();
    require_testpmd();
    let root = TempDir::kept_on_failure("cni-rs-c");
    let body = daemon_body();
    let daemon = Daemon::start(&root, &body, &[]);
    let mut cni = Cni::new(&root, "10.215.9.0/24");
    cni.conf["host"]["vhost"]["mode"] = json!("client");
    cni.conf["container"]["vhost"]["mode"] = json!("server");
    let att = attach(&root, &cni, "c");
    let mut pods: Vec<Pod> = (0..2).map(|i| att.pod(i, true)).collect();
    start_traffic(&mut pods);
    until_forwarding(Instant::now(), &mut pods, &daemon, "before the kill");
    let before = ports(&root);
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(state_file(&root)["ports"].as_array().map(Vec::len), Some(2));

    daemon.sigkill();
    // Frames podwire put in the pod's rx ring before it died are still received: let
    // the pod drain them (a loaded machine may leave it unscheduled for a while).
    std::thread::sleep(Duration::from_millis(500));
    let frozen = rx(&mut pods[1]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx(&mut pods[1]) - frozen < 64, "nothing forwards while podwire is dead");

    let t0 = Instant::now();
    let daemon = Daemon::start(&root, &body, &[]);
    let t_control = t0.elapsed();
    assert_eq!(ports(&root), before, "the same ports are back (socket, mode, MAC, bridge, VLAN)");
    let t_forward = until_forwarding(t0, &mut pods, &daemon, "after the restart");
    println!(
        "CNI pods, podwire as vhost-user client, SIGKILL + restart: control socket (ports \
         restored) after {t_control:.2?}, traffic between the pods again after {t_forward:.2?}"
    );
    att.check(&cni);
    assert!(daemon.log_text().contains("restored=5 skipped=0"), "{}", daemon.log_text());
    for p in pods {
        p.quit().expect("pod quit");
    }
    del_all(&cni, &root, att);
    daemon.stop();
}

#[test]
fn server_mode_ports_come_back_and_restarted_pods_forward() {
    let _peers = PeerLock::acquire();
    require_testpmd();
    let root = TempDir::kept_on_failure("cni-rs-s");
    let body = daemon_body();
    let daemon = Daemon::start(&root, &body, &[]);
    let cni = Cni::new(&root, "10.215.10.0/24");
    let att = attach(&root, &cni, "s");
    let mut pods: Vec<Pod> = (0..2).map(|i| att.pod(i, false)).collect();
    start_traffic(&mut pods);
    until_forwarding(Instant::now(), &mut pods, &daemon, "before the kill");
    let before = ports(&root);

    daemon.sigkill();
    assert!(att.sockets.iter().all(|s| s.exists()), "SIGKILL leaves the socket files");
    let t0 = Instant::now();
    let daemon = Daemon::start(&root, &body, &[]);
    let t_control = t0.elapsed();
    assert_eq!(ports(&root), before, "the same ports are back (socket, mode, MAC, bridge, VLAN)");
    for s in &att.sockets {
        std::os::unix::net::UnixStream::connect(s)
            .unwrap_or_else(|e| panic!("{} listens again: {e}", s.display()));
    }
    att.check(&cni);

    // DPDK's virtio-user (client) does not reconnect to a backend that went away.
    std::thread::sleep(Duration::from_secs(2));
    let reconnected = daemon
        .stats()
        .iter()
        .filter(|p| p.link == "up" && att.cids.iter().any(|c| port_name(c) == p.name))
        .count();
    println!("server mode: {reconnected} of 2 pods reconnected by themselves within 2 s");
    for p in pods {
        p.sigkill();
    }
    let t1 = Instant::now();
    let mut pods: Vec<Pod> = (0..2).map(|i| att.pod(i, false)).collect();
    start_traffic(&mut pods);
    let t_forward = until_forwarding(t1, &mut pods, &daemon, "restarted pods");
    println!(
        "CNI pods, podwire as vhost-user server, SIGKILL + restart: control socket (ports and \
         sockets restored) after {t_control:.2?}; restarted pods exchange traffic \
         {t_forward:.2?} after they were started ({:.2?} after podwire was)",
        t1.duration_since(t0) + t_forward
    );
    att.check(&cni);
    for p in pods {
        p.quit().expect("pod quit");
    }
    del_all(&cni, &root, att);
    daemon.stop();
}

#[test]
fn a_pod_deleted_while_podwire_is_down_does_not_come_back() {
    let root = TempDir::kept_on_failure("cni-rs-d");
    let body = daemon_body();
    let daemon = Daemon::start(&root, &body, &[]);
    let cni = Cni::new(&root, "10.215.11.0/24");
    let ns = Netns::new("d");
    let pid = std::process::id();
    let (gone, kept) = (format!("dg{pid:010}gggggggg"), format!("dk{pid:010}kkkkkkkk"));
    let r_kept = cni.add(&kept, &ns.path());
    cni.add(&gone, &ns.path());
    daemon.sigkill();
    // DEL while the daemon is down: lease, files and socket dir go; the state file
    // still names the port, which the next start skips (its socket dir is gone).
    cni.del(&gone);
    let daemon = Daemon::start(&root, &body, &[]);
    assert_eq!(api(&root, "GET", &format!("/ports/{}", port_name(&gone)), None).0, 404);
    assert_eq!(api(&root, "GET", &format!("/ports/{}", port_name(&kept)), None).0, 200);
    let log = daemon.log_text();
    assert!(log.contains("socket directory") && log.contains("is gone"), "{log}");
    let st = state_file(&root);
    assert_eq!(st["ports"].as_array().map(Vec::len), Some(1), "{st}");
    assert_eq!(st["ports"][0]["name"], port_name(&kept).as_str());
    let (code, v) = cni.call_with("CHECK", &kept, &ns.path(), &json!({"prevResult": r_kept}));
    assert_eq!((code, &v), (0, &Value::Null), "CHECK {kept}\n{}", cni.log());
    cni.del(&kept);
    assert_eq!((cni.leases().len(), cni.records()), (0, 0));
    assert_eq!(state_file(&root)["ports"], json!([]));
    daemon.stop();
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_daemon_starts_with_its_config() {
    let root = TempDir::kept_on_failure("cni-rs-x");
    let state = control_socket(&root).with_file_name("ctl.state.json");
    std::fs::write(&state, b"{\"version\": 1, \"ports\": [{\"name\": \"half-writ").unwrap();
    let daemon = Daemon::start(&root, &daemon_body(), &[]);
    let log = daemon.log_text();
    assert!(log.contains("ERROR") && log.contains("ctl.state.json is not JSON"), "{log}");
    let aside: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ctl.state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept aside for a look");
    assert_eq!(state_file(&root)["ports"], json!([]), "a fresh state file");
    // The API works and its changes are kept again.
    let (code, _) = api(&root, "POST", "/bridges", Some(&json!({"name": "br-x"})));
    assert_eq!(code, 201);
    assert_eq!(state_file(&root)["bridges"][0]["name"], "br-x");
    daemon.stop();
}
