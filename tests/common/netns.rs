//! Network namespaces and veth pairs for AF_XDP tests: created by the test, removed
//! by a Drop guard even when the test fails. Only addresses in 10.77.0.0/16, only
//! inside these namespaces.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (install iproute2 / ethtool)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failure (cleanup).
fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// One namespace with one veth end inside (`inner`, addressed `ip`/24) and the other
/// end (`host`) left in the test's namespace, up, without an address.
pub struct VethNs {
    pub ns: String,
    pub host: String,
    pub inner: String,
    pub ip: String,
    pub mac: String,
}

/// A set of namespaces; dropping it deletes them and their veths.
pub struct NetSetup {
    pub ends: Vec<VethNs>,
}

/// Fails with a useful message when the tools are missing or we are not root.
pub fn require_root_tools() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "AF_XDP tests need root (namespaces, XDP)");
    for t in ["ip", "ethtool", "ping"] {
        assert!(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success()),
            "{t} is missing: apt-get install iproute2 ethtool iputils-ping"
        );
    }
}

impl NetSetup {
    /// `n` namespaces `pw<tag><pid>x<i>`, each with a veth of `queues` queues whose
    /// host end is `pw<tag><pid>x<i>h`; namespace `i` gets 10.77.<subnet>.<i+1>/24.
    /// `<pid>` (this process's id, last 5 digits) keeps test runs in other worktrees
    /// on the same machine from deleting each other's interfaces.
    pub fn new(tag: &str, n: usize, queues: u16, subnet: u8) -> NetSetup {
        require_root_tools();
        let mut setup = NetSetup { ends: Vec::new() };
        let pid = std::process::id() % 100_000;
        for i in 0..n {
            let ns = format!("pw{tag}{pid}x{i}");
            let host = format!("pw{tag}{pid}x{i}h");
            let inner = format!("pw{tag}{pid}x{i}n");
            assert!(host.len() < 16, "interface name {host} too long");
            // Remove leftovers of an earlier failed run with the same names.
            sh_quiet(&["ip", "netns", "del", &ns]);
            sh_quiet(&["ip", "link", "del", &host]);
            let q = queues.to_string();
            sh(&["ip", "netns", "add", &ns]);
            let ip = format!("10.77.{subnet}.{}", i + 1);
            setup.ends.push(VethNs {
                ns: ns.clone(),
                host: host.clone(),
                inner: inner.clone(),
                ip: ip.clone(),
                mac: format!("02:77:{subnet:02x}:00:00:{:02x}", i + 1),
            });
            sh(&[
                "ip",
                "link",
                "add",
                &host,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            let e = &setup.ends[i];
            let nsx = |args: &[&str]| {
                let mut v = vec!["ip", "netns", "exec", &ns];
                v.extend_from_slice(args);
                sh(&v)
            };
            nsx(&["ip", "link", "set", "lo", "up"]);
            nsx(&["ip", "link", "set", &inner, "address", &e.mac]);
            nsx(&["sysctl", "-qw", &format!("net.ipv6.conf.{inner}.disable_ipv6=1")]);
            nsx(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &inner]);
            // veth leaves checksums to "hardware": frames copied through AF_XDP would
            // arrive with bad TCP/UDP checksums. Compute them in the stack.
            nsx(&["ethtool", "-K", &inner, "tx", "off"]);
            nsx(&["ip", "link", "set", &inner, "up"]);
            sh(&["sysctl", "-qw", &format!("net.ipv6.conf.{host}.disable_ipv6=1")]);
            sh(&["ip", "link", "set", &host, "up"]);
        }
        setup
    }

    /// Runs a command inside namespace `i`.
    pub fn exec(&self, i: usize, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ends[i].ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// `ping` from namespace `from` to namespace `to`'s address; returns packets
    /// received.
    pub fn ping(&self, from: usize, to: usize, count: u32, size: usize) -> u32 {
        let out = self.exec(
            from,
            &[
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                "0.05",
                // A reply held up by a busy machine still counts; a lost one does not.
                "-W",
                "3",
                "-s",
                &size.to_string(),
                "-p",
                "a5",
                &self.ends[to].ip,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(',')
            .find(|p| p.contains("received"))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// What `ip link show` says about host end `i`.
    pub fn host_link(&self, i: usize) -> String {
        sh(&["ip", "link", "show", &self.ends[i].host])
    }
}

impl Drop for NetSetup {
    fn drop(&mut self) {
        for e in &self.ends {
            sh_quiet(&["ip", "link", "del", &e.host]);
            sh_quiet(&["ip", "netns", "del", &e.ns]);
        }
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns` (only that thread
/// is moved; sockets it creates stay in the namespace).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Deterministic test bytes: a xorshift stream, different per `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// TCP echo through the namespaces: a server in namespace `server_ns` echoes
/// everything; a client in `client_ns` sends `len` pattern bytes and checks that every
/// byte comes back unchanged and in order. Returns the bytes checked.
pub fn tcp_echo(client_ns: &str, server_ns: &str, server_ip: &str, port: u16, len: usize) -> usize {
    let addr: SocketAddr = format!("{server_ip}:{port}").parse().expect("address");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_netns(server_ns, move || {
        let l = TcpListener::bind(addr).expect("bind in server namespace");
        ready_tx.send(()).expect("ready");
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).expect("server read");
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).expect("server write");
            total += n;
        }
        total
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("server listening");
    let client = in_netns(client_ns, move || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .expect("connect through podwire");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let data = pattern(port as u64, len);
        let mut w = s.try_clone().expect("clone");
        let to_send = data.clone();
        let writer = std::thread::spawn(move || {
            for chunk in to_send.chunks(7919) {
                w.write_all(chunk).expect("client write");
            }
            w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        });
        let mut back = Vec::with_capacity(len);
        let mut r = s;
        r.read_to_end(&mut back).expect("client read (echo stalled?)");
        writer.join().expect("writer");
        assert_eq!(back.len(), data.len(), "echo length");
        if let Some(i) = back.iter().zip(&data).position(|(a, b)| a != b) {
            panic!("byte {i} differs: got {:#04x}, sent {:#04x}", back[i], data[i]);
        }
        back.len()
    });
    let got = client.join().expect("client thread");
    let served = server.join().expect("server thread");
    assert_eq!(served, len, "server saw every byte");
    got
}
