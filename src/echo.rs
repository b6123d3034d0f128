//! `podwire pci echo`: a diagnostic that owns one NIC function through podwire's
//! VFIO drivers and answers ARP requests and ICMP echo requests for one IPv4 address
//! on every queue (replies leave on the tx queues in turn), like testpmd's `icmpecho`
//! mode. An operator checks a VF's wiring with it; tests/vfio_qemu.rs checks the
//! drivers with it.
//!
//! Lines printed: `RESPONDER: ready ...` once the port is up, then at the end
//! `RESPONDER: done rx=.. tx=.. arp=.. icmp=.. jumbo=.. other=.. errors=..
//! q0_rx=.. q0_tx=.. ...` plus the VF's own statistics registers for igbvf.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use podwire_driver::nic::igbvf::IgbVf;
use podwire_driver::nic::{self, VfioPortConfig, DEFAULT_RING_SIZE};
use podwire_driver::pci::{PciAddress, Sysfs};
use podwire_driver::{MacAddr, Mempool, MempoolConfig, PacketBuf, Port};

use crate::signals::ShutdownSignals;

#[derive(Default)]
struct Tally {
    arp: u64,
    icmp: u64,
    jumbo: u64,
    other: u64,
}

fn csum_add(sum: u16, add: u16) -> u16 {
    let s = sum as u32 + add as u32;
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Turns a request for `ip` into its reply in place. Returns false to drop.
fn answer(buf: &mut PacketBuf, mac: MacAddr, ip: Ipv4Addr, t: &mut Tally) -> bool {
    let len = buf.len();
    let d = buf.data_mut();
    if len < 42 {
        t.other += 1;
        return false;
    }
    let ethertype = u16::from_be_bytes([d[12], d[13]]);
    if ethertype == 0x0806 {
        // ARP request (op 1) for our address?
        if u16::from_be_bytes([d[20], d[21]]) != 1 || d[38..42] != ip.octets() {
            t.other += 1;
            return false;
        }
        let (sha, spa) = ([d[22], d[23], d[24], d[25], d[26], d[27]], [d[28], d[29], d[30], d[31]]);
        d[0..6].copy_from_slice(&sha);
        d[6..12].copy_from_slice(&mac.0);
        d[21] = 2;
        d[22..28].copy_from_slice(&mac.0);
        d[28..32].copy_from_slice(&ip.octets());
        d[32..38].copy_from_slice(&sha);
        d[38..42].copy_from_slice(&spa);
        t.arp += 1;
        return true;
    }
    if ethertype != 0x0800 || d[14] >> 4 != 4 {
        t.other += 1;
        return false;
    }
    let ihl = (d[14] & 0x0f) as usize * 4;
    if ihl < 20 || len < 14 + ihl + 8 || d[23] != 1 || d[30..34] != ip.octets() {
        t.other += 1;
        return false;
    }
    let icmp = 14 + ihl;
    if d[icmp] != 8 {
        t.other += 1;
        return false;
    }
    // Swap addresses (the IPv4 header checksum does not change), make it a reply and
    // fix the ICMP checksum for the type change (8 -> 0).
    let src_mac = [d[6], d[7], d[8], d[9], d[10], d[11]];
    d[0..6].copy_from_slice(&src_mac);
    d[6..12].copy_from_slice(&mac.0);
    let src_ip = [d[26], d[27], d[28], d[29]];
    d.copy_within(30..34, 26);
    d[30..34].copy_from_slice(&src_ip);
    d[icmp] = 0;
    let c = u16::from_be_bytes([d[icmp + 2], d[icmp + 3]]);
    d[icmp + 2..icmp + 4].copy_from_slice(&csum_add(c, 0x0800).to_be_bytes());
    t.icmp += 1;
    if len > 1514 {
        t.jumbo += 1;
    }
    true
}

/// What `podwire pci echo` is asked to do.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// The NIC function (bound to vfio-pci).
    pub pci: PciAddress,
    /// The IPv4 address to answer for.
    pub ip: Ipv4Addr,
    /// Queue pairs to poll.
    pub queues: u16,
    /// Bytes of packet data per buffer (9216 for jumbo frames).
    pub buffer_size: usize,
    /// MAC to use instead of the device's.
    pub mac: Option<MacAddr>,
    /// Stop when this file exists.
    pub stop_file: Option<PathBuf>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Owns the function and answers until SIGINT/SIGTERM, the stop file or the
/// duration. Prints `RESPONDER: ready ...` when up and `RESPONDER: done ...` at the end.
pub fn run(o: &EchoOptions) -> Result<(), String> {
    let signals = ShutdownSignals::block().map_err(|e| format!("signals: {e}"))?;
    let (pci, ip, queues, data_room, mac) = (o.pci, o.ip, o.queues, o.buffer_size, o.mac);
    let started = Instant::now();
    let pool = Mempool::hugepages(MempoolConfig { count: 4096, data_room, headroom: 128 })
        .map_err(|e| e.to_string())?;
    let cfg = VfioPortConfig { name: "vf".into(), pci, queues, mac, ring_size: DEFAULT_RING_SIZE };
    let sysfs = Sysfs::system();
    let dev = sysfs.device(pci).map_err(|e| e.to_string())?;
    // igbvf is opened by type to print its statistics registers at the end.
    let mut igb: Option<IgbVf> = None;
    let mut other: Option<Box<dyn Port>> = None;
    if nic::driver_name(dev.vendor, dev.device) == Some("igbvf") {
        igb = Some(IgbVf::open(&cfg, pool.clone(), &sysfs).map_err(|e| e.to_string())?);
    } else {
        other = Some(nic::open_vfio_port(&cfg, pool.clone(), &sysfs).map_err(|e| e.to_string())?);
    }
    if let Some(p) = &mut igb {
        // The PF must accept a VLAN filter and a multicast list from this VF.
        let mc = [MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb])];
        p.set_vlan(100, true).map_err(|e| format!("SET_VLAN: {e}"))?;
        p.set_multicast(&mc).map_err(|e| format!("SET_MULTICAST: {e}"))?;
        println!("RESPONDER: mailbox SET_VLAN 100 ok, SET_MULTICAST 1 ok");
    }
    let port: &mut dyn Port = match (&mut igb, &mut other) {
        (Some(p), _) => p,
        (None, Some(p)) => p.as_mut(),
        _ => return Err("no port was opened".into()),
    };
    let info = port.info();
    println!(
        "RESPONDER: ready pci {pci} mac {} queues {} link {}",
        info.mac,
        info.queues,
        if port.link_up() { "up" } else { "down" }
    );
    let mut t = Tally::default();
    let mut rx: Vec<PacketBuf> = Vec::with_capacity(64);
    let mut tx: Vec<PacketBuf> = Vec::with_capacity(64);
    let mut last_check = Instant::now();
    let mut bursts = 0u16;
    loop {
        let mut moved = 0;
        for q in 0..info.queues {
            moved += port.rx_burst(q, &mut rx, 32);
            for mut b in rx.drain(..) {
                if answer(&mut b, info.mac, ip, &mut t) {
                    tx.push(b);
                }
            }
            if tx.is_empty() {
                continue;
            }
            // Replies leave on every tx queue in turn, so each queue pair carries some.
            let out_q = bursts % info.queues;
            bursts = bursts.wrapping_add(1);
            let mut tries = 0;
            while !tx.is_empty() && tries < 1000 {
                if port.tx_burst(out_q, &mut tx) == 0 {
                    tries += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            // A queue that stays full for 0.1 s drops the rest (counted as tx drops
            // by nobody else: this is a test tool).
            tx.clear();
        }
        if moved == 0 {
            // An emulated NIC is slow; do not starve the guest's other work.
            std::thread::sleep(Duration::from_micros(200));
        }
        if last_check.elapsed() > Duration::from_millis(100) {
            last_check = Instant::now();
            // Also how a port notices a reset of its PF (igbvf).
            let _ = port.link_up();
            if o.stop_file.as_ref().is_some_and(|f| f.exists())
                || o.duration.is_some_and(|d| started.elapsed() > d)
                || signals.wait(Duration::ZERO).is_some()
            {
                break;
            }
        }
    }
    let counters = port.counters();
    let per_queue: Vec<String> = (0..info.queues)
        .map(|q| {
            let s = counters.queue(q).snapshot();
            format!("q{q}_rx={} q{q}_tx={}", s.rx_packets, s.tx_packets)
        })
        .collect();
    let c = counters.total();
    let stats = match &igb {
        Some(p) => {
            let s = p.stats();
            format!(
                "vf_rx_packets={} vf_tx_packets={} vf_rx_bytes={} vf_tx_bytes={} pf_resets={}",
                s.rx_packets,
                s.tx_packets,
                s.rx_bytes,
                s.tx_bytes,
                p.resets()
            )
        }
        None => String::new(),
    };
    println!(
        "RESPONDER: done rx={} tx={} arp={} icmp={} jumbo={} other={} errors={} {} {stats}",
        c.rx_packets,
        c.tx_packets,
        t.arp,
        t.icmp,
        t.jumbo,
        t.other,
        c.errors,
        per_queue.join(" ")
    );
    Ok(())
}
