//! The L2 bridge (src/bridge/): Ethernet/802.1Q header parsing and the forwarding
//! decision, on frames from the input received by 2 to 5 member ports (access ports
//! in VLANs 1..4 and trunks), with the bridge clock moved by the input.
//!
//! Input: `nports u8`, `table_limit u8`, one VLAN-mode byte per port, then frames:
//! an op byte (bit 7 clear: a built frame, see `frame`; `0xff`: the clock moves on by
//! the next byte in seconds and an aging step runs; otherwise a raw frame of the
//! next byte's length), each frame received on port `op % nports` and switched at
//! once.
//!
//! Beyond "no panic", per frame:
//! - it is counted exactly once (forwarded, flooded, filtered, VLAN drop or runt),
//!   and the ingress port's rx drops count the VLAN drops and runts;
//! - it is dropped exactly when the ingress rules say so (a runt; a tagged frame on an
//!   access port; an untagged, priority-tagged or foreign-VLAN frame on a trunk);
//! - it never leaves by its ingress port, leaves only by members of its VLAN, each
//!   copy untagged on access ports and tagged with the VLAN on trunks, and its bytes
//!   are the received frame's (with the tag moved);
//! - while the clock has not moved, the decision is exactly that of a simple model
//!   of MAC learning with the table limit: to the learned port (or filtered when that
//!   is the ingress port), else flooded to every other member of the VLAN;
//! - at the end every packet buffer is back in the pool.
#![no_main]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use podwire::bridge::fuzzing::FuzzBridge;
use podwire::bridge::{BridgeSpec, VlanMode};
use podwire_driver::port::{PortCounters, PortInfo};
use podwire_driver::{MacAddr, PacketBuf, Port};
use podwire_fuzz::{buffers_in_use, pool, Bytes};
use std::sync::atomic::Ordering::Relaxed;

/// The "wire" of one fake port: frames to receive, frames sent.
#[derive(Default)]
struct Wire {
    rx: VecDeque<PacketBuf>,
    tx: Vec<Vec<u8>>,
}

struct FakePort {
    name: String,
    wire: Arc<Mutex<Wire>>,
    counters: Arc<PortCounters>,
}

impl Port for FakePort {
    fn name(&self) -> &str {
        &self.name
    }
    fn info(&self) -> PortInfo {
        PortInfo { kind: "fuzz", mac: MacAddr([2, 0, 0, 0, 0, 1]), queues: 1 }
    }
    fn link_up(&self) -> bool {
        true
    }
    fn rx_burst(&mut self, _q: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize {
        let mut w = self.wire.lock().unwrap();
        let n = max.min(w.rx.len());
        bufs.extend(w.rx.drain(..n));
        n
    }
    fn tx_burst(&mut self, _q: u16, bufs: &mut Vec<PacketBuf>) -> usize {
        let mut w = self.wire.lock().unwrap();
        let n = bufs.len();
        w.tx.extend(bufs.drain(..).map(|b| b.data().to_vec()));
        n
    }
    fn counters(&self) -> Arc<PortCounters> {
        self.counters.clone()
    }
}

const MACS: [[u8; 6]; 8] = [
    [2, 0, 0, 0, 0, 1],
    [2, 0, 0, 0, 0, 2],
    [2, 0, 0, 0, 0, 3],
    [2, 0, 0, 0, 0, 4],
    [0xff; 6],
    [1, 0, 0x5e, 0, 0, 1],
    [0x33, 0x33, 0, 0, 0, 1],
    [2, 0, 0, 0, 1, 0],
];

/// A built frame: dst and src from a small set (so that they repeat), an optional
/// tag, a short payload.
fn frame(b: &mut Bytes) -> Vec<u8> {
    let (sel, tag, plen) = (b.u8(), b.u8(), b.u8());
    let mut f = Vec::new();
    f.extend_from_slice(&MACS[(sel & 7) as usize]);
    f.extend_from_slice(&MACS[(sel >> 3 & 7) as usize]);
    match tag {
        0 => {}
        t if t & 0x80 == 0 => f.extend_from_slice(&[0x81, 0, 0, t & 7]),
        _ => {
            let v = b.u16();
            f.extend_from_slice(&[0x81, 0]);
            f.extend_from_slice(&v.to_be_bytes());
        }
    }
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..plen % 64).map(|i| i ^ sel));
    f
}

fn carries(m: &VlanMode, vid: u16) -> bool {
    match m {
        VlanMode::Access(v) => *v == vid,
        VlanMode::Trunk(ids) => ids.contains(&vid),
    }
}

fn mac(f: &[u8], at: usize) -> u64 {
    f[at..at + 6].iter().fold(0, |a, &b| a << 8 | b as u64)
}

fuzz_target!(|data: &[u8]| {
    run(data);
    assert_eq!(buffers_in_use(), 0, "packet buffers leaked");
});

fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let n = 2 + b.u8() as usize % 4;
    let limit = 1 + b.u8() as usize % 8;
    let modes: Vec<VlanMode> = (0..n)
        .map(|_| {
            let m = b.u8();
            if m & 0x80 == 0 {
                VlanMode::Access(1 + (m & 3) as u16)
            } else {
                VlanMode::Trunk((1..=4u16).filter(|v| m & (1 << (v - 1)) != 0).collect())
            }
        })
        .collect();
    let spec = BridgeSpec {
        name: "br".into(),
        ports: modes.iter().cloned().enumerate().collect(),
        mac_age_secs: 60,
        mac_table_size: limit,
    };
    let wires: Vec<Arc<Mutex<Wire>>> = (0..n).map(|_| Arc::default()).collect();
    let counters: Vec<Arc<PortCounters>> = (0..n).map(|_| PortCounters::new(1)).collect();
    let ports: Vec<Box<dyn Port>> = (0..n)
        .map(|i| {
            Box::new(FakePort {
                name: format!("p{i}"),
                wire: wires[i].clone(),
                counters: counters[i].clone(),
            }) as Box<dyn Port>
        })
        .collect();
    let mut br = FuzzBridge::new(&spec, ports, pool().clone());
    let shared = br.shared();
    // The model: (mac, vid) -> port, exact while the clock has not moved.
    let mut model: HashMap<(u64, u16), usize> = HashMap::new();
    let mut exact = true;
    let mut now_ms = 0u32;
    let mut buf = Vec::new();
    while !b.is_empty() {
        let op = b.u8();
        let f = if op & 0x80 == 0 {
            frame(&mut b)
        } else if op == 0xff {
            now_ms = now_ms.wrapping_add(b.u8() as u32 * 1000);
            br.age(now_ms, 64);
            exact = false;
            continue;
        } else {
            let len = b.u8() as usize;
            b.take(len).to_vec()
        };
        let from = op as usize % n;
        let Some(mut pkt) = pool().alloc() else { return };
        assert!(pkt.copy_from(&f));
        wires[from].lock().unwrap().rx.push_back(pkt);
        let total = |c: &podwire::bridge::BridgeCounters| {
            [&c.forwarded, &c.flooded, &c.filtered, &c.vlan_drops, &c.runts]
                .map(|x| x.load(Relaxed))
        };
        let before = total(&shared.counters());
        let drops0 = counters[from].queue(0).rx_drops.load(Relaxed);
        assert_eq!(br.poll(&mut buf), 1);
        assert!(buf.is_empty());
        let after = total(&shared.counters());
        let d: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(d.iter().sum::<u64>(), 1, "frame counted once: {d:?}");
        let dropped = d[3] + d[4];
        assert_eq!(counters[from].queue(0).rx_drops.load(Relaxed) - drops0, dropped);
        let out: Vec<Vec<Vec<u8>>> =
            wires.iter().map(|w| std::mem::take(&mut w.lock().unwrap().tx)).collect();
        assert!(out[from].is_empty(), "frame sent back to its ingress port");
        // What the ingress rules say.
        let tagged = f.len() >= 14 && f[12..14] == [0x81, 0];
        let runt = f.len() < 14 || (tagged && f.len() < 18);
        if runt {
            assert_eq!(d[4], 1, "runt not counted as one");
            assert!(out.iter().all(Vec::is_empty));
            continue;
        }
        let tag = tagged.then(|| u16::from_be_bytes([f[14], f[15]]) & 0xfff);
        let vid = match (&modes[from], tag) {
            (VlanMode::Access(v), None) => Some(*v),
            (VlanMode::Trunk(ids), Some(t)) if t != 0 && ids.contains(&t) => Some(t),
            _ => None,
        };
        let Some(vid) = vid else {
            assert_eq!(d[3], 1, "frame should be a VLAN drop");
            assert!(out.iter().all(Vec::is_empty));
            continue;
        };
        assert_eq!(dropped, 0, "frame of VLAN {vid} dropped");
        // The frame inside the bridge: untagged.
        let inner: Vec<u8> = if tagged { [&f[..12], &f[16..]].concat() } else { f.clone() };
        let mut egress = Vec::new();
        for (j, frames) in out.iter().enumerate() {
            assert!(frames.len() <= 1, "port {j} got {} copies", frames.len());
            let Some(g) = frames.first() else { continue };
            assert!(carries(&modes[j], vid), "sent to port {j} outside VLAN {vid}");
            let want = match modes[j] {
                VlanMode::Access(_) => inner.clone(),
                VlanMode::Trunk(_) => {
                    [&inner[..12], &[0x81, 0], &vid.to_be_bytes()[..], &inner[12..]].concat()
                }
            };
            assert!(*g == want, "port {j} got different bytes");
            egress.push(j);
        }
        let (dst, src) = (mac(&f, 0), mac(&f, 6));
        let members: Vec<usize> =
            (0..n).filter(|&j| j != from && carries(&modes[j], vid)).collect();
        if exact {
            // The bridge learns the source before it looks the destination up.
            if src & (1 << 40) == 0 && (model.contains_key(&(src, vid)) || model.len() < limit) {
                model.insert((src, vid), from);
            }
            if dst & (1 << 40) == 0 {
                match model.get(&(dst, vid)) {
                    Some(&p) if p == from => {
                        assert_eq!(d[2], 1, "should be filtered");
                        assert!(egress.is_empty());
                    }
                    Some(&p) => {
                        assert_eq!(d[0], 1, "should be forwarded");
                        assert_eq!(egress, [p], "forwarded to the wrong port");
                    }
                    None => {
                        assert_eq!(d[1], 1, "unknown unicast should be flooded");
                        assert_eq!(egress, members);
                    }
                }
            } else {
                assert_eq!(d[1], 1, "group address should be flooded");
                assert_eq!(egress, members);
            }
            assert_eq!(br.table_len(), model.len(), "MAC table size");
        } else if d[1] == 1 {
            assert_eq!(egress, members, "flooded to every other member of the VLAN");
        } else {
            assert!(egress.len() <= 1);
        }
    }
    drop(br);
}
