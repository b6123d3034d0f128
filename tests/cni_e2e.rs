//! podwire-cni end to end, driven the way a container runtime drives it (env vars,
//! config on stdin, result on stdout), against the real daemon (`podwire run`,
//! runtime ports over the control API), the real `host-local` IPAM plugin and real
//! DPDK pods. A "pod" is a network namespace plus a private bind mount of its
//! shared directory (what a container's volume mount is), in which dpdk-testpmd
//! attaches with virtio-user to the socket file the CNI result names.
//!
//! - two pods on one bridge (VLAN 10) exchange traffic both ways through podwire;
//!   CHECK passes; DEL removes port, socket, lease, configData, device-info and
//!   record, leaves the bridge; DEL twice succeeds;
//! - GC with one valid attachment removes the other; a socket path too long for
//!   `sun_path` works through the alias directory;
//! - a port the daemon refuses (name taken) rolls the ADD back, lease included;
//! - concurrent ADD/DEL for different containers (file lock);
//! - with a kubeconfig, the pod's annotations are written and cleaned (against a
//!   small local fake API server: no real kube-apiserver can run on this machine),
//!   also over TLS with the CA and a client certificate from the kubeconfig;
//! - ADD and DEL latency over 100 pods (median, p99), printed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cni::{api, daemon_body, percentile, port_name, BindMount, Cni, Netns};
use common::daemon::{Daemon, TempDir};
use common::testpmd::{require_testpmd, PeerLock, Pod, PodConfig};
use serde_json::{json, Value};

/// Asserts that nothing of attachment `cid` is left.
fn assert_gone(cni: &Cni, root: &Path, cid: &str, socket: &Path) {
    assert!(!socket.exists(), "socket {} left", socket.display());
    assert!(
        !socket.parent().unwrap().exists(),
        "socket dir {} left",
        socket.parent().unwrap().display()
    );
    assert_eq!(
        api(root, "GET", &format!("/ports/{}", port_name(cid)), None).0,
        404,
        "port {cid} left"
    );
    assert!(!cni.devinfo(cid).exists(), "device-info of {cid} left");
}

#[test]
fn two_pods_on_a_bridge_exchange_traffic_and_del_removes_everything() {
    let _peers = PeerLock::acquire();
    require_testpmd();
    let root = TempDir::kept_on_failure("cni-e2e");
    let daemon = Daemon::start(&root, &daemon_body(), &[]);
    let cni = Cni::new(&root, "10.215.1.0/24");
    let pid = std::process::id();
    let cids = [format!("a{pid:011}aaaaaaaa"), format!("b{pid:011}bbbbbbbb")];
    let nss = [Netns::new("a"), Netns::new("b")];

    let results: Vec<Value> = cids.iter().zip(&nss).map(|(c, n)| cni.add(c, &n.path())).collect();
    let mut sockets = Vec::new();
    let mut macs = Vec::new();
    for (cid, r) in cids.iter().zip(&results) {
        assert_eq!(r["cniVersion"], "1.1.0");
        let iface = &r["interfaces"][0];
        assert_eq!(iface["name"], "net1");
        let socket = PathBuf::from(iface["socketPath"].as_str().expect("socketPath"));
        assert_eq!(socket, root.join("shared").join(&cid[..12]).join(port_name(cid)));
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::metadata(&socket).unwrap().file_type().is_socket(),
            "{} is a socket",
            socket.display()
        );
        assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.215.1."), "{r}");
        let data: Value = serde_json::from_slice(
            &std::fs::read(
                socket.parent().unwrap().join(format!("configData-{}-net1.json", &cid[..12])),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(data["containerId"], cid.as_str());
        assert_eq!(data["config"]["vhost"]["mode"], "client");
        assert_eq!(data["ipResult"]["ips"][0]["address"], r["ips"][0]["address"]);
        let dev: Value = serde_json::from_slice(&std::fs::read(cni.devinfo(cid)).unwrap()).unwrap();
        assert_eq!(dev["vhost-user"]["path"], iface["socketPath"]);
        let (code, port) = api(&root, "GET", &format!("/ports/{}", port_name(cid)), None);
        assert_eq!(code, 200);
        assert_eq!((port["bridge"].as_str(), port["vlan"].as_u64()), (Some("br-e2e"), Some(10)));
        assert_eq!(port["mac"], iface["mac"]);
        sockets.push(socket);
        macs.push(iface["mac"].as_str().unwrap().to_string());
    }
    assert_ne!(results[0]["ips"][0]["address"], results[1]["ips"][0]["address"]);
    assert_eq!(cni.leases().len(), 2);

    // CHECK with the ADD result as prevResult.
    for (cid, (r, ns)) in cids.iter().zip(results.iter().zip(&nss)) {
        let (code, v) = cni.call_with("CHECK", cid, &ns.path(), &json!({"prevResult": r}));
        assert_eq!((code, &v), (0, &Value::Null), "CHECK {cid}");
    }

    // The pods: each sees only its own shared dir, through its own mount.
    let mounts: Vec<BindMount> = cids
        .iter()
        .zip(&sockets)
        .map(|(c, s)| BindMount::new(s.parent().unwrap(), &root.join("pods").join(&c[..1])))
        .collect();
    let mut pods: Vec<Pod> = sockets
        .iter()
        .zip(&mounts)
        .zip(&nss)
        .map(|((s, m), ns)| {
            let in_pod = m.0.join(s.file_name().unwrap());
            Pod::start(PodConfig::new(&[in_pod]).netns(ns.0.clone()).arg("--port-topology=loop"))
                .expect("testpmd pod")
        })
        .collect();
    for p in &mut pods {
        p.wait_links_up(Duration::from_secs(20)).expect("pod link up");
    }
    for (from, to) in [(0, 1), (1, 0)] {
        for p in &mut pods {
            p.clear_stats().unwrap();
        }
        pods[to].cmd("set fwd rxonly").unwrap();
        pods[to].start_fwd().unwrap();
        pods[from].cmd("set fwd txonly").unwrap();
        pods[from].start_fwd().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        pods[from].stop().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        pods[to].stop().unwrap();
        let sent = pods[from].port_stats().unwrap()[0].tx_packets;
        let got = pods[to].port_stats().unwrap()[0].rx_packets;
        eprintln!("pod {from} -> pod {to} through podwire's bridge: {sent} sent, {got} received");
        assert!(
            got >= 1000,
            "pod {to} received {got} of {sent} frames from pod {from}\n{}",
            daemon.log_text()
        );
        assert!(got <= sent, "pod {to} received more than pod {from} sent ({got} > {sent})");
    }
    assert_eq!(macs.len(), 2);
    for p in pods {
        p.quit().unwrap();
    }
    drop(mounts);

    // DEL removes everything but the bridge; DEL twice is fine.
    for (cid, s) in cids.iter().zip(&sockets) {
        cni.del(cid);
        assert_gone(&cni, &root, cid, s);
        cni.del(cid);
    }
    assert_eq!(cni.leases(), Vec::<String>::new(), "IPAM leases left");
    assert_eq!(cni.records(), 0, "records left");
    assert_eq!(api(&root, "GET", "/bridges/br-e2e", None).0, 200, "DEL never deletes the bridge");
    daemon.stop();
}

#[test]
fn gc_keeps_valid_attachments_and_long_paths_use_the_alias() {
    let root = TempDir::kept_on_failure("cni-gc");
    let daemon = Daemon::start(&root, &daemon_body(), &[]);
    let mut cni = Cni::new(&root, "10.215.2.0/24");
    // A shared dir so deep that <dir>/<cid12>/<cid12>-net1 does not fit in sun_path.
    let deep = root.join("shared").join("d".repeat(60)).join("e".repeat(40));
    cni.conf["sharedDir"] = json!(deep);
    let ns = Netns::new("g");
    let pid = std::process::id();
    let keep = format!("k{pid:011}kkkkkkkk");
    let stale = format!("s{pid:011}ssssssss");
    let r_keep = cni.add(&keep, &ns.path());
    let r_stale = cni.add(&stale, &ns.path());
    let stale_socket = PathBuf::from(r_stale["interfaces"][0]["socketPath"].as_str().unwrap());
    assert!(
        stale_socket.as_os_str().len() > 107,
        "the test path is long: {}",
        stale_socket.display()
    );
    assert!(stale_socket.exists(), "the socket is at its real (long) path");
    let (_, port) = api(&root, "GET", &format!("/ports/{}", port_name(&stale)), None);
    let via = port["socket"].as_str().unwrap();
    assert!(
        via.len() <= 107 && via.contains("/state/s/"),
        "the daemon binds through the alias: {via}"
    );

    let (code, v) = cni.call_with(
        "GC",
        "",
        "",
        &json!({"cni.dev/valid-attachments": [{"containerID": keep, "ifname": "net1"}]}),
    );
    assert_eq!((code, &v), (0, &Value::Null), "GC\n{}", cni.log());
    assert_gone(&cni, &root, &stale, &stale_socket);
    let alias = Path::new(via).parent().unwrap();
    assert!(
        std::fs::symlink_metadata(alias).is_err(),
        "alias {} of the stale pod removed",
        alias.display()
    );
    assert_eq!(cni.leases().len(), 1, "only the valid attachment keeps its lease");
    assert_eq!(cni.records(), 1);
    let (code, v) = cni.call_with("CHECK", &keep, &ns.path(), &json!({"prevResult": r_keep}));
    assert_eq!((code, &v), (0, &Value::Null), "the valid attachment still checks");
    // A second ADD of an existing attachment is refused and changes nothing.
    let (code, v) = cni.call("ADD", &keep, &ns.path());
    assert_eq!((code, v["code"].as_u64()), (1, Some(102)), "{v}");
    let (code, v) = cni.call_with("CHECK", &keep, &ns.path(), &json!({"prevResult": r_keep}));
    assert_eq!((code, &v), (0, &Value::Null), "the attachment survives a repeated ADD");
    cni.del(&keep);
    assert_eq!((cni.leases().len(), cni.records()), (0, 0));

    // DEL after the daemon stopped (its ports went with it) still releases the lease.
    let late = format!("z{pid:011}zzzzzzzz");
    cni.add(&late, &ns.path());
    daemon.stop();
    cni.del(&late);
    assert_eq!((cni.leases().len(), cni.records()), (0, 0));
    assert!(!deep.join(&late[..12]).exists(), "socket dir removed");
}

#[test]
fn a_refused_port_rolls_the_add_back_and_check_sees_a_lost_port() {
    let root = TempDir::kept_on_failure("cni-refused");
    let daemon = Daemon::start(&root, &daemon_body(), &[]);
    let cni = Cni::new(&root, "10.215.3.0/24");
    let ns = Netns::new("r");
    let cid = format!("r{:011}rrrrrrrr", std::process::id());
    // Someone else holds the port name: the daemon answers 409.
    let other = root.join("other.sock");
    let (code, _) = api(
        &root,
        "POST",
        "/ports",
        Some(
            &json!({"name": port_name(&cid), "type": "vhost-user", "socket": other, "mode": "server"}),
        ),
    );
    assert_eq!(code, 201);
    let (code, v) = cni.call("ADD", &cid, &ns.path());
    assert_eq!(code, 1);
    assert_eq!(v["code"], 101, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("409"), "{v}");
    assert_eq!(cni.leases(), Vec::<String>::new(), "the IPAM lease was released");
    assert_eq!(cni.records(), 0);
    assert!(!root.join("shared").join(&cid[..12]).exists(), "no socket dir left");
    assert!(!cni.devinfo(&cid).exists());
    assert_eq!(
        api(&root, "GET", &format!("/ports/{}", port_name(&cid)), None).0,
        200,
        "the other port is untouched"
    );
    assert_eq!(api(&root, "DELETE", &format!("/ports/{}", port_name(&cid)), None).0, 204);

    // Results in the configuration's version; the socket's group from vhost.group.
    for (version, socket_path, ip_version) in [("1.0.0", false, false), ("0.4.0", false, true)] {
        let mut old = Cni::new(&root, "10.215.3.0/24");
        old.conf["cniVersion"] = json!(version);
        old.conf["host"]["vhost"]["group"] = json!("daemon");
        let r = old.add(&cid, &ns.path());
        assert_eq!(r["cniVersion"], version);
        assert_eq!(r["interfaces"][0].get("socketPath").is_some(), socket_path, "{r}");
        assert_eq!(r["ips"][0].get("version").is_some(), ip_version, "{r}");
        let socket = root.join("shared").join(&cid[..12]).join(port_name(&cid));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&socket).unwrap().gid(), 1, "socket group is \"daemon\"");
        old.del(&cid);
    }

    // STATUS: ready with the daemon up; 50 when the IPAM plugin is missing.
    let (code, v) = cni.call("STATUS", "", "");
    assert_eq!((code, &v), (0, &Value::Null), "STATUS with the daemon up");
    let mut no_ipam = Cni::new(&root, "10.215.3.0/24");
    no_ipam.conf["ipam"]["type"] = json!("no-such-ipam");
    let (code, v) = no_ipam.call("STATUS", "", "");
    assert_eq!((code, v["code"].as_u64()), (1, Some(50)), "{v}");

    // CHECK notices a port the daemon lost; DEL still succeeds.
    let r = cni.add(&cid, &ns.path());
    assert_eq!(api(&root, "DELETE", &format!("/ports/{}", port_name(&cid)), None).0, 204);
    let (code, v) = cni.call_with("CHECK", &cid, &ns.path(), &json!({"prevResult": r}));
    assert_eq!((code, v["code"].as_u64()), (1, Some(100)), "{v}");
    cni.del(&cid);
    assert_eq!((cni.leases().len(), cni.records()), (0, 0));
    daemon.stop();
}

#[test]
fn concurrent_adds_and_dels_for_different_containers() {
    let root = TempDir::kept_on_failure("cni-conc");
    let daemon = Daemon::start(&root, &daemon_body(), &[]);
    let cni = Arc::new(Cni::new(&root, "10.215.4.0/24"));
    let ns = Netns::new("c");
    let path = ns.path();
    let ips = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (cni, ips, path) = (cni.clone(), ips.clone(), path.clone());
            std::thread::spawn(move || {
                for round in 0..3 {
                    let cid =
                        format!("c{:06}{i:02}{round:02}cccccccc", std::process::id() % 1_000_000);
                    let r = cni.add(&cid, &path);
                    ips.lock().unwrap().push(r["ips"][0]["address"].as_str().unwrap().to_string());
                    if round < 2 {
                        cni.del(&cid);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("an ADD or DEL failed");
    }
    assert_eq!(cni.records(), 8);
    assert_eq!(cni.leases().len(), 8);
    let (_, ports) = api(&root, "GET", "/ports", None);
    assert_eq!(ports["ports"].as_array().unwrap().len(), 8, "{ports}");
    for i in 0..8 {
        cni.del(&format!("c{:06}{i:02}02cccccccc", std::process::id() % 1_000_000));
    }
    assert_eq!((cni.leases().len(), cni.records()), (0, 0));
    assert_eq!(api(&root, "GET", "/ports", None).1["ports"], json!([]));
    daemon.stop();
}

/// A tiny stand-in for the Kubernetes API server (plain HTTP on 127.0.0.1): one pod,
/// GET returns it, a merge PATCH updates its annotations. Requests are recorded.
/// One request the fake API server saw: method, path, Authorization header, body.
type SeenRequest = (String, String, String, String);

struct FakeApiServer {
    addr: String,
    log: Arc<Mutex<Vec<SeenRequest>>>,
    pod: Arc<Mutex<Value>>,
}

impl FakeApiServer {
    fn start(pod: Value) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let pod = Arc::new(Mutex::new(pod));
        let (l2, p2) = (log.clone(), pod.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let (mut len, mut auth) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("authorization:") {
                        auth = h.trim().to_string();
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                let (status, answer) = if path != "/api/v1/namespaces/default/pods/e2e-pod" {
                    (404, json!({"kind": "Status", "message": "not found"}))
                } else if method == "GET" {
                    (200, p2.lock().unwrap().clone())
                } else if method == "PATCH" {
                    let patch: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let mut pod = p2.lock().unwrap();
                    for (k, v) in patch["metadata"]["annotations"].as_object().into_iter().flatten()
                    {
                        if v.is_null() {
                            pod["metadata"]["annotations"].as_object_mut().map(|a| a.remove(k));
                        } else {
                            pod["metadata"]["annotations"][k] = v.clone();
                        }
                    }
                    (200, pod.clone())
                } else {
                    (405, json!({}))
                };
                l2.lock().unwrap().push((method, path, auth, body));
                let text = answer.to_string();
                let mut s = r.into_inner();
                let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
            }
        });
        FakeApiServer { addr, log, pod }
    }
}

#[test]
fn with_a_kubeconfig_the_pod_gets_its_annotations() {
    let root = TempDir::kept_on_failure("cni-kube");
    let daemon = Daemon::start(&root, &daemon_body(), &[]);
    let mut cni = Cni::new(&root, "10.215.5.0/24");
    let volume = root.join("pod-volume");
    let api_server = FakeApiServer::start(json!({
        "metadata": {"name": "e2e-pod", "namespace": "default", "uid": "u1", "annotations": {"keep": "me"}},
        "spec": {"volumes": [{"name": "shared-dir", "hostPath": {"path": volume}}],
                 "containers": [{"name": "app", "volumeMounts": [{"name": "shared-dir", "mountPath": "/var/run/app"}]}]}
    }));
    let kubeconfig = root.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: cni\n  user:\n    token: t0ken\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: cni\ncurrent-context: c\n",
            api_server.addr
        ),
    )
    .unwrap();
    cni.conf["kubeconfig"] = json!(kubeconfig);
    let ns = Netns::new("k");
    let cid = format!("k{:011}kkkkkkkk", std::process::id());
    let r = cni.add(&cid, &ns.path());
    let socket = r["interfaces"][0]["socketPath"].as_str().unwrap();
    assert_eq!(
        Path::new(socket),
        volume.join(port_name(&cid)),
        "the socket is in the pod's shared-dir volume"
    );
    let pod = api_server.pod.lock().unwrap().clone();
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["userspace/mapped-dir"], "/var/run/app/");
    assert_eq!(ann["keep"], "me", "other annotations stay");
    let list: Value =
        serde_json::from_str(ann["userspace/configuration-data"].as_str().unwrap()).unwrap();
    assert_eq!(list[0]["containerId"], cid.as_str());
    assert_eq!(list[0]["config"]["vhost"]["socketfile"], port_name(&cid));
    assert!(
        api_server
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, auth, _)| auth == "Authorization: Bearer t0ken"),
        "every request carries the token"
    );
    cni.del(&cid);
    let pod = api_server.pod.lock().unwrap().clone();
    assert_eq!(
        pod["metadata"]["annotations"]["userspace/configuration-data"], "[]",
        "DEL takes the entry out"
    );
    assert!(!Path::new(socket).exists());
    assert!(volume.is_dir(), "the pod's volume directory is the pod's: DEL leaves it");
    let methods: Vec<String> =
        api_server.log.lock().unwrap().iter().map(|(m, ..)| m.clone()).collect();
    assert_eq!(methods, ["GET", "PATCH", "GET", "PATCH"]);
    daemon.stop();
}

/// The same fake API server over HTTPS with client-certificate authentication
/// (Python's ssl module), so the kubeconfig's CA data and client certificate and key
/// data are exercised: the plugin's curl must verify the server and present its
/// certificate, or the request fails.
const TLS_API_SERVER: &str = r#"
import json, ssl, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
root = sys.argv[1]
pod = json.load(open(root + "/pod.json"))
seen = []
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        seen.append([self.command, self.path, self.connection.getpeercert()["subject"][0][0][1]])
        json.dump({"pod": pod, "seen": seen}, open(root + "/state.tmp", "w"))
        import os; os.replace(root + "/state.tmp", root + "/state.json")
    def do_GET(self):
        self.reply(200, pod)
    def do_PATCH(self):
        patch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for k, v in patch["metadata"]["annotations"].items():
            pod["metadata"]["annotations"][k] = v
        self.reply(200, pod)
srv = HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(root + "/server.crt", root + "/server.key")
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(root + "/client.crt")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// A child process killed (by PID) on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl_self_signed(dir: &Path, name: &str, cn: &str, san: Option<&str>) {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")));
    if let Some(san) = san {
        cmd.args(["-addext", &format!("subjectAltName={san}")]);
    }
    let out = cmd.output().expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                o.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

#[test]
fn with_a_kubeconfig_over_tls_and_a_client_certificate() {
    let root = TempDir::kept_on_failure("cni-kube-tls");
    let daemon = Daemon::start(&root, &daemon_body(), &[]);
    let mut cni = Cni::new(&root, "10.215.7.0/24");
    let tls = root.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    openssl_self_signed(&tls, "server", "fake-apiserver", Some("IP:127.0.0.1"));
    openssl_self_signed(&tls, "client", "podwire-cni", None);
    let volume = root.join("pod-volume");
    std::fs::write(
        tls.join("pod.json"),
        json!({"metadata": {"name": "e2e-pod", "namespace": "default", "uid": "u2", "annotations": {}},
               "spec": {"volumes": [{"name": "shared-dir", "hostPath": {"path": volume}}],
                        "containers": [{"name": "app", "volumeMounts": [{"name": "shared-dir", "mountPath": "/data/"}]}]}})
        .to_string(),
    )
    .unwrap();
    let mut server = Command::new("/usr/bin/python3")
        .args(["-c", TLS_API_SERVER])
        .arg(&tls)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3)");
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let _server = Child(server);
    let read = |n: &str| base64(&std::fs::read(tls.join(n)).unwrap());
    let kubeconfig = root.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: tls\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\nusers:\n- name: cni\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: c\n  context:\n    cluster: tls\n    user: cni\ncurrent-context: c\n",
            port.trim(),
            read("server.crt"),
            read("client.crt"),
            read("client.key")
        ),
    )
    .unwrap();
    cni.conf["kubeconfig"] = json!(kubeconfig);
    let ns = Netns::new("t");
    let cid = format!("t{:011}tttttttt", std::process::id());
    cni.add(&cid, &ns.path());
    let state: Value =
        serde_json::from_slice(&std::fs::read(tls.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["pod"]["metadata"]["annotations"]["userspace/mapped-dir"], "/data/");
    assert!(state["pod"]["metadata"]["annotations"]["userspace/configuration-data"]
        .as_str()
        .unwrap()
        .contains(&cid));
    assert_eq!(
        state["seen"],
        json!([
            ["GET", "/api/v1/namespaces/default/pods/e2e-pod", "podwire-cni"],
            ["PATCH", "/api/v1/namespaces/default/pods/e2e-pod", "podwire-cni"]
        ])
    );
    let leftovers: Vec<_> = std::fs::read_dir(root.join("state"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".kube-"))
        .collect();
    assert!(leftovers.is_empty(), "credential scratch files removed: {leftovers:?}");
    cni.del(&cid);

    // A server the CA does not vouch for is refused (I/O error, nothing left).
    openssl_self_signed(&tls, "other", "other", Some("IP:127.0.0.1"));
    let bad = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .replace(&read("server.crt"), &read("other.crt"));
    std::fs::write(&kubeconfig, bad).unwrap();
    let (code, v) = cni.call("ADD", &cid, &ns.path());
    assert_eq!((code, v["code"].as_u64()), (1, Some(5)), "{v}");
    assert_eq!((cni.leases().len(), cni.records()), (0, 0));
    assert_eq!(api(&root, "GET", "/ports", None).1["ports"], json!([]));
    daemon.stop();
}

#[test]
fn add_and_del_latency_over_100_pods() {
    let root = TempDir::kept_on_failure("cni-latency");
    let daemon = Daemon::start(&root, &daemon_body(), &[]);
    let mut cni = Cni::new(&root, "10.215.6.0/24");
    cni.conf["logLevel"] = json!("info");
    let ns = Netns::new("l");
    let cids: Vec<String> =
        (0..100).map(|i| format!("l{:08}{i:03}llllllll", std::process::id())).collect();
    let mut adds = Vec::new();
    for c in &cids {
        let t = Instant::now();
        cni.add(c, &ns.path());
        adds.push(t.elapsed());
    }
    assert_eq!(
        api(&root, "GET", "/bridges/br-e2e", None).1["ports"].as_array().map(Vec::len),
        Some(100)
    );
    let mut dels = Vec::new();
    for c in &cids {
        let t = Instant::now();
        cni.del(c);
        dels.push(t.elapsed());
    }
    adds.sort();
    dels.sort();
    println!(
        "podwire-cni latency over 100 pods (bridge + VLAN + host-local IPAM): ADD median {:.1} ms p99 {:.1} ms; DEL median {:.1} ms p99 {:.1} ms",
        percentile(&adds, 0.5).as_secs_f64() * 1e3,
        percentile(&adds, 0.99).as_secs_f64() * 1e3,
        percentile(&dels, 0.5).as_secs_f64() * 1e3,
        percentile(&dels, 0.99).as_secs_f64() * 1e3,
    );
    assert_eq!((cni.leases().len(), cni.records()), (0, 0));
    daemon.stop();
}
