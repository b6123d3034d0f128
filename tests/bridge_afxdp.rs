//! podwire's L2 bridge with real ports: network namespaces behind veths whose host
//! ends podwire takes with AF_XDP and puts on one bridge. The kernel stacks in the
//! namespaces ARP (broadcast: flooded), ping and run TCP through the bridge.
//! Checks learning (a unicast conversation stops reaching the third port), the MAC
//! table over the control API and the CLI, aging, the table limit, VLAN isolation
//! between access ports, and a trunk carrying two VLANs tagged (Linux VLAN devices
//! in the trunk's namespace only accept their own tag).
//!
//! Needs root, iproute2, ethtool and ping.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, TempDir, BIN};
use common::netns::{tcp_echo, NetSetup};
use podwire::control::{get_json, BridgeInfo, MacTableResponse};

/// One daemon at a time: they spin on the same core.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bridge `br0` over every namespace's host end (port `x<i>`), with extra bridge
/// keys `bridge_extra` and per-port extra keys `port_extra[i]`.
fn config(net: &NetSetup, bridge_extra: &str, port_extra: &[&str]) -> String {
    let core = podwire::config::allowed_cpus().and_then(|c| c.last().copied()).unwrap_or(0);
    let mut s =
        format!("[workers]\ncores = [{core}]\n[memory]\nbuffers = 8192\nhugepages = false\n");
    let mut names = Vec::new();
    for (i, e) in net.ends.iter().enumerate() {
        s += &format!(
            "[[ports]]\nname = \"x{i}\"\ntype = \"af-xdp\"\ninterface = \"{}\"\n{}\n",
            e.host,
            port_extra.get(i).copied().unwrap_or("")
        );
        names.push(format!("\"x{i}\""));
    }
    s += &format!("[[bridge]]\nname = \"br0\"\nports = [{}]\n{bridge_extra}\n", names.join(", "));
    s
}

fn start(dir: &TempDir, net: &NetSetup, cfg: &str) -> Daemon {
    let d = Daemon::start(dir.path(), cfg, &[]);
    for i in 0..net.ends.len() {
        d.wait_port(&format!("x{i}"), Duration::from_secs(5), "link up", |p| p.link == "up");
    }
    d
}

fn bridge(d: &Daemon) -> BridgeInfo {
    get_json::<BridgeInfo>(&d.control, "/bridges/br0").expect("GET /bridges/br0").1
}

fn macs(d: &Daemon) -> MacTableResponse {
    get_json::<MacTableResponse>(&d.control, "/bridges/br0/macs").expect("GET macs").1
}

fn has_mac(t: &MacTableResponse, mac: &str, port: &str, vlan: u16) -> bool {
    t.entries.iter().any(|e| e.mac == mac && e.port == port && e.vlan == vlan)
}

#[test]
fn learning_flooding_aging_and_table_limit() {
    let _g = serial();
    let net = NetSetup::new("b", 3, 1, 11);
    let dir = TempDir::kept_on_failure("bridge-learn");
    let d = start(&dir, &net, &config(&net, "mac_age_secs = 2", &[]));

    // The first ping ARPs (broadcast): flooded to both other ports.
    assert_eq!(net.ping(0, 1, 3, 56), 3, "ping a->b:\n{}", d.log_text());
    let b = bridge(&d);
    assert!(b.counters.flooded >= 1, "the ARP request was flooded: {b:?}");
    assert!(b.counters.learned >= 2, "{b:?}");
    assert!(d.port("x2").tx_packets >= 1, "the flood reached the third port");
    let t = macs(&d);
    assert!(has_mac(&t, &net.ends[0].mac, "x0", 1), "{t:?}");
    assert!(has_mac(&t, &net.ends[1].mac, "x1", 1), "{t:?}");

    // Learned: a unicast conversation between a and b no longer reaches c.
    let c_before = d.port("x2").tx_packets;
    let fwd_before = bridge(&d).counters.forwarded;
    assert_eq!(net.ping(0, 1, 20, 56), 20);
    assert_eq!(tcp_echo(&net.ends[1].ns, &net.ends[0].ns, &net.ends[0].ip, 5301, 1 << 20), 1 << 20);
    let c_after = d.port("x2").tx_packets;
    let b = bridge(&d);
    assert!(b.counters.forwarded >= fwd_before + 40 + 700, "{b:?}");
    assert!(c_after - c_before <= 2, "unicast leaked to the third port: {c_before} -> {c_after}");
    assert_eq!(b.counters.table_full, 0, "{b:?}");
    assert_eq!(b.counters.vlan_drops + b.counters.runts, 0, "{b:?}");

    // c is reachable too (its ARP is flooded, its replies teach the bridge).
    assert_eq!(net.ping(2, 0, 3, 56), 3);
    assert!(has_mac(&macs(&d), &net.ends[2].mac, "x2", 1));

    // The CLI shows the same table.
    let out = std::process::Command::new(BIN)
        .args(["mac-table", "br0", "--socket"])
        .arg(&d.control)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&net.ends[2].mac), "{text}");
    let out = std::process::Command::new(BIN)
        .args(["mac-table", "nosuch", "--socket"])
        .arg(&d.control)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no bridge named \"nosuch\""));

    // Aging: silence for longer than mac_age_secs empties the table.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let t = macs(&d);
        if t.entries.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "entries did not age out: {t:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The table reports live entries only; the sweep that removes (and counts) the
    // expired ones visits a few hundred slots per maintenance step, so it may finish
    // a little later on a busy core.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let b = bridge(&d);
        if b.counters.aged >= 3 && b.counters.entries == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "expired entries not swept: {b:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();

    // Table limit: one entry. The second address is refused and counted, and
    // traffic still flows (unknown unicast is flooded).
    let d = start(&dir, &net, &config(&net, "mac_table_size = 1", &[]));
    assert_eq!(net.ping(0, 1, 5, 56), 5);
    assert_eq!(net.ping(2, 0, 5, 56), 5);
    let b = bridge(&d);
    assert_eq!(b.counters.entries, 1, "{b:?}");
    assert!(b.counters.table_full >= 1, "{b:?}");
    assert_eq!(macs(&d).entries.len(), 1);
    d.stop();
}

/// Ethertype of the test frames (IEEE "local experimental").
const TEST_ETHERTYPE: u16 = 0x88b5;

fn mac_bytes(m: &str) -> [u8; 6] {
    let v: Vec<u8> = m.split(':').map(|p| u8::from_str_radix(p, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// An AF_PACKET socket on `ifname` in the calling thread's namespace.
fn packet_socket(ifname: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: name is a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "no interface {ifname}");
    let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a new socket we own from here on.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero sockaddr_ll is valid; we fill the fields bind needs.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
    let one: libc::c_int = 1;
    // SAFETY: option value is a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    assert_eq!(rc, 0);
    let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    // SAFETY: option value is a timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    fd
}

/// Test frames (`TEST_ETHERTYPE`) received in namespace `ns` on `ifname` for `dur`:
/// `(vlan tag if any, payload)`. Frames the namespace sent itself are skipped.
fn capture(
    ns: &str,
    ifname: &str,
    dur: Duration,
) -> std::thread::JoinHandle<Vec<(Option<u16>, String)>> {
    let ifname = ifname.to_owned();
    common::netns::in_netns(ns, move || {
        use std::os::fd::AsRawFd;
        let fd = packet_socket(&ifname);
        let mut got = Vec::new();
        let end = Instant::now() + dur;
        while Instant::now() < end {
            let mut buf = [0u8; 2048];
            let mut ctl = [0u64; 16];
            // SAFETY: all-zero sockaddr_ll and msghdr are valid; pointers set below
            // point at live buffers of the sizes given.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctl.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&ctl);
            // SAFETY: msg describes valid buffers.
            let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
            if n < 14 || from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let frame = &buf[..n as usize];
            if u16::from_be_bytes([frame[12], frame[13]]) != TEST_ETHERTYPE {
                continue;
            }
            let mut vlan = None;
            // SAFETY: msg was filled by recvmsg; CMSG_* walk the control buffer.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux: libc::tpacket_auxdata =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                            vlan = Some(aux.tp_vlan_tci & 0x0fff);
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            got.push((
                vlan,
                String::from_utf8_lossy(&frame[14..]).trim_end_matches('\0').to_owned(),
            ));
        }
        got
    })
}

/// Sends one broadcast test frame from namespace `ns` on `ifname`, tagged with `vlan`
/// if given, carrying `payload`.
fn send_frame(ns: &str, ifname: &str, src: &str, vlan: Option<u16>, payload: &str) {
    let (ifname, src, payload) = (ifname.to_owned(), mac_bytes(src), payload.to_owned());
    common::netns::in_netns(ns, move || {
        use std::os::fd::AsRawFd;
        let fd = packet_socket(&ifname);
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&src);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
        f.extend_from_slice(payload.as_bytes());
        f.resize(f.len().max(60), 0);
        // SAFETY: f is a live buffer of the length passed.
        let n = unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
        assert_eq!(n, f.len() as isize, "send: {}", std::io::Error::last_os_error());
    })
    .join()
    .expect("send frame");
}

#[test]
fn vlans_isolate_and_trunk_carries_both_tagged() {
    let _g = serial();
    // a: VLAN 10, b: VLAN 20, c: VLAN 10, t: trunk [10, 20]. All inner ends are in
    // 10.77.12.0/24, so only the VLANs keep a and b apart.
    let net = NetSetup::new("v", 4, 1, 12);
    let dir = TempDir::kept_on_failure("bridge-vlan");
    let d = start(
        &dir,
        &net,
        &config(&net, "", &["vlan = 10", "vlan = 20", "vlan = 10", "trunk = [10, 20]"]),
    );

    assert_eq!(net.ping(0, 2, 5, 56), 5, "same VLAN:\n{}", d.log_text());
    assert_eq!(tcp_echo(&net.ends[2].ns, &net.ends[0].ns, &net.ends[0].ip, 5302, 1 << 20), 1 << 20);
    assert_eq!(net.ping(0, 1, 3, 56), 0, "VLAN 10 reached VLAN 20");
    assert_eq!(d.port("x1").tx_packets, 0, "nothing of VLAN 10 went out on the VLAN 20 port");
    let t = macs(&d);
    assert!(has_mac(&t, &net.ends[0].mac, "x0", 10), "{t:?}");
    assert!(has_mac(&t, &net.ends[2].mac, "x2", 10), "{t:?}");

    // Raw frames: capture everywhere, then send.
    let window = Duration::from_millis(1500);
    let caps: Vec<_> = net.ends.iter().map(|e| capture(&e.ns, &e.inner, window)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let e = &net.ends;
    send_frame(&e[3].ns, &e[3].inner, &e[3].mac, Some(10), "t-vlan10");
    send_frame(&e[3].ns, &e[3].inner, &e[3].mac, Some(20), "t-vlan20");
    send_frame(&e[3].ns, &e[3].inner, &e[3].mac, Some(30), "t-vlan30");
    send_frame(&e[3].ns, &e[3].inner, &e[3].mac, None, "t-untagged");
    send_frame(&e[1].ns, &e[1].inner, &e[1].mac, None, "b-untagged");
    send_frame(&e[0].ns, &e[0].inner, &e[0].mac, Some(10), "a-tagged");
    let got: Vec<Vec<(Option<u16>, String)>> =
        caps.into_iter().map(|h| h.join().expect("capture")).collect();
    let untagged = |s: &str| (None, s.to_owned());
    assert_eq!(got[0], vec![untagged("t-vlan10")], "a (VLAN 10) receives");
    assert_eq!(got[1], vec![untagged("t-vlan20")], "b (VLAN 20) receives");
    assert_eq!(got[2], vec![untagged("t-vlan10")], "c (VLAN 10) receives");
    assert_eq!(got[3], vec![(Some(20), "b-untagged".to_owned())], "the trunk receives, tagged");
    let b = bridge(&d);
    // t-vlan30, t-untagged and a-tagged are dropped at ingress.
    assert_eq!(b.counters.vlan_drops, 3, "{b:?}");
    let t = macs(&d);
    assert!(has_mac(&t, &net.ends[3].mac, "x3", 10), "{t:?}");
    assert!(has_mac(&t, &net.ends[3].mac, "x3", 20), "the trunk's MAC is learned per VLAN: {t:?}");
    let x0 = d.port("x0");
    assert!(x0.rx_drops >= 1, "{x0:?}");
    d.stop();
}
