//! A tiny host on a VFIO port, for tests/vfio_qemu.rs: owns one NIC function
//! through podwire's VFIO drivers and answers ARP requests and ICMP echo requests
//! for one IPv4 address, on every queue, until a stop file appears. Then it prints
//! one summary line and exits with status 0.
//!
//! ```text
//! vfio_responder PCI_ADDR IPV4 QUEUES BUFFER_SIZE STOP_FILE [MAC]
//! ```
//!
//! Lines: `RESPONDER: ready ...` once the port is up, `RESPONDER: done rx=.. tx=..
//! arp=.. icmp=.. jumbo=.. other=.. errors=.. <driver stats>` at the end.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use podwire_driver::nic::igbvf::IgbVf;
use podwire_driver::nic::{self, VfioPortConfig, DEFAULT_RING_SIZE};
use podwire_driver::pci::Sysfs;
use podwire_driver::{MacAddr, Mempool, MempoolConfig, PacketBuf, Port};

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

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: vfio_responder PCI_ADDR IPV4 QUEUES BUFFER_SIZE STOP_FILE [MAC]");
        return ExitCode::from(2);
    }
    let result = run(&a[1], &a[2], &a[3], &a[4], Path::new(&a[5]), a.get(6));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("RESPONDER: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    pci: &str,
    ip: &str,
    queues: &str,
    buffer_size: &str,
    stop: &Path,
    mac: Option<&String>,
) -> Result<(), String> {
    let pci = pci.parse().map_err(|e| format!("{e}"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
    let queues: u16 = queues.parse().map_err(|e| format!("queues: {e}"))?;
    let data_room: usize = buffer_size.parse().map_err(|e| format!("buffer size: {e}"))?;
    let mac = match mac {
        Some(m) => Some(m.parse::<MacAddr>()?),
        None => None,
    };
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
    let port: &mut dyn Port = match (&mut igb, &mut other) {
        (Some(p), _) => p,
        (None, Some(p)) => p.as_mut(),
        _ => unreachable!(),
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
    loop {
        let mut moved = 0;
        for q in 0..info.queues {
            moved += port.rx_burst(q, &mut rx, 32);
            for mut b in rx.drain(..) {
                if answer(&mut b, info.mac, ip, &mut t) {
                    tx.push(b);
                }
            }
            let mut tries = 0;
            while !tx.is_empty() && tries < 1000 {
                if port.tx_burst(q, &mut tx) == 0 {
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
            if stop.exists() {
                break;
            }
        }
    }
    let c = port.counters().total();
    let stats = match &igb {
        Some(p) => {
            let s = p.stats();
            format!(
                "vf_rx_packets={} vf_tx_packets={} vf_rx_bytes={} vf_tx_bytes={}",
                s.rx_packets, s.tx_packets, s.rx_bytes, s.tx_bytes
            )
        }
        None => String::new(),
    };
    println!(
        "RESPONDER: done rx={} tx={} arp={} icmp={} jumbo={} other={} errors={} {stats}",
        c.rx_packets, c.tx_packets, t.arp, t.icmp, t.jumbo, t.other, c.errors
    );
    Ok(())
}
