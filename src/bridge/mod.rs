//! L2 bridges: MAC learning with aging, flooding of broadcast, multicast and unknown
//! unicast within the bridge and VLAN (never back to the ingress port), and 802.1Q
//! access and trunk ports.
//!
//! A [`Bridge`] is run by one worker, which owns all its ports, its MAC table and
//! its per-port transmit vectors: the datapath takes no lock and allocates nothing
//! on the heap (a flooded frame is copied into a buffer from the mempool's
//! per-thread cache). Per packet the work beyond the port I/O is one learn probe for
//! the source and one lookup for the destination, skipped for a frame with the same
//! addresses and VLAN as the one before it in the burst (it gets the same decision);
//! aging happens in [`Bridge::maintain`], called every few hundred poll rounds.
//!
//! Frames are handled inside the bridge untagged, with their VLAN beside them: an
//! access port (`vlan = N`, or VLAN 1 when nothing is configured) accepts untagged
//! frames only; a trunk (`trunk = [ids]`) accepts frames tagged with one of its ids
//! only, and the tag is removed on the way in and added back on the way out.
//! Everything else is dropped and counted (`vlan_drops`, and the port's `rx_drops`).
//!
//! Members come and go at runtime (`Bridge::add_member`, `Bridge::remove_member`,
//! applied by the worker between two poll rounds): a member that leaves has its MAC
//! entries flushed and the last member takes its index (its entries are renumbered).
//!
//! Other threads see a bridge through its [`BridgeShared`]: counters, and a MAC table
//! snapshot the worker copies out on request (the copy is made in `maintain`, off the
//! per-packet path).

#[doc(hidden)]
pub mod fuzzing;
pub mod table;
pub mod vlan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use podwire_driver::port::bump;
use podwire_driver::{Mempool, PacketBuf, Port, PortCounters, BURST_SIZE};

use crate::engine::PortStatus;
use table::{Learned, MacEntry, MacTable};
use vlan::{EthHeader, MacKey, MAC_GROUP_BIT};

/// VLAN of a port with neither `vlan` nor `trunk` configured.
pub const DEFAULT_VLAN: u16 = 1;
/// Default MAC age.
pub const DEFAULT_MAC_AGE_SECS: u32 = 300;
/// Default MAC table entry limit.
pub const DEFAULT_MAC_TABLE_SIZE: usize = 8192;
/// Slots the aging sweep looks at per [`Bridge::maintain`] call.
const SWEEP_SLOTS: usize = 256;

/// How a bridge port carries VLANs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanMode {
    /// Untagged frames, all in this VLAN.
    Access(u16),
    /// Tagged frames of these VLANs (sorted, unique, 1..=4094).
    Trunk(Vec<u16>),
}

impl Default for VlanMode {
    fn default() -> Self {
        VlanMode::Access(DEFAULT_VLAN)
    }
}

/// What a bridge is built from: member ports by index into the engine's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Unique name.
    pub name: String,
    /// Member ports (indices into the engine's port list) and their VLAN mode.
    pub ports: Vec<(usize, VlanMode)>,
    /// Seconds after which an address not seen again is forgotten.
    pub mac_age_secs: u32,
    /// Most MAC table entries.
    pub mac_table_size: usize,
}

/// Counters of a bridge; single writer (its worker).
#[derive(Debug, Default)]
pub struct BridgeCounters {
    /// Frames sent to the one port their destination was learned on.
    pub forwarded: AtomicU64,
    /// Frames flooded (broadcast, multicast, unknown unicast); counted once each.
    pub flooded: AtomicU64,
    /// Frames dropped because their destination is on the port they came from.
    pub filtered: AtomicU64,
    /// Frames dropped at ingress for their VLAN tag (or lack of one).
    pub vlan_drops: AtomicU64,
    /// Frames too short to carry an Ethernet header.
    pub runts: AtomicU64,
    /// Flood copies that found no free buffer.
    pub no_buffer: AtomicU64,
    /// Addresses learned.
    pub learned: AtomicU64,
    /// Addresses seen moving to another port.
    pub moved: AtomicU64,
    /// Addresses not learned because the table was at its limit.
    pub table_full: AtomicU64,
    /// Addresses removed by aging.
    pub aged: AtomicU64,
    /// Entries in the table (as of the last maintenance).
    pub entries: AtomicU64,
}

/// A MAC table entry as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct MacReport {
    /// `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// VLAN id.
    pub vlan: u16,
    /// Port name.
    pub port: String,
    /// Seconds since last seen (fractional).
    pub age_secs: f64,
}

#[derive(Debug, Default)]
struct Snapshot {
    seq: u64,
    entries: Vec<MacEntry>,
    /// Member names by bridge-local index when the copy was made.
    names: Vec<String>,
}

/// What other threads may know about a bridge while a worker runs it.
#[derive(Debug)]
pub struct BridgeShared {
    name: String,
    /// Kept by the thread that changes the bridge's membership (the engine's owner);
    /// never touched by the worker.
    ports: Mutex<Vec<(String, VlanMode)>>,
    mac_age_secs: u32,
    mac_table_size: usize,
    counters: BridgeCounters,
    requested: AtomicU64,
    snapshot: Mutex<Snapshot>,
}

impl BridgeShared {
    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Member port names and VLAN modes, in the order they joined.
    pub fn ports(&self) -> Vec<(String, VlanMode)> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records that `name` joined (with `mode`) or, with `None`, left.
    pub(crate) fn set_member(&self, name: &str, mode: Option<VlanMode>) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.retain(|(n, _)| n != name);
        if let Some(mode) = mode {
            ports.push((name.to_owned(), mode));
        }
    }

    /// The MAC age.
    pub fn mac_age_secs(&self) -> u32 {
        self.mac_age_secs
    }

    /// The MAC table entry limit.
    pub fn mac_table_size(&self) -> usize {
        self.mac_table_size
    }

    /// Live counters.
    pub fn counters(&self) -> &BridgeCounters {
        &self.counters
    }

    /// Asks the worker for a copy of the MAC table and waits up to `timeout` for it.
    /// `None` if the worker did not answer (it is not running).
    pub fn mac_table(&self, timeout: Duration) -> Option<Vec<MacReport>> {
        let want = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = Instant::now() + timeout;
        loop {
            {
                let snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
                if snap.seq >= want {
                    return Some(
                        snap.entries
                            .iter()
                            .map(|e| MacReport {
                                mac: podwire_driver::MacAddr(vlan::mac_bytes(e.mac)).to_string(),
                                vlan: e.vlan,
                                port: snap
                                    .names
                                    .get(e.port as usize)
                                    .map_or_else(|| "?".to_owned(), Clone::clone),
                                age_secs: f64::from(e.age_ms) / 1000.0,
                            })
                            .collect(),
                    );
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// One member port, as the worker holds it.
struct Member {
    port: Box<dyn Port>,
    status: Arc<PortStatus>,
    counters: Arc<PortCounters>,
    queues: u16,
    /// Access VLAN, or 0 for a trunk.
    access: u16,
    /// Trunk membership bitmap (all zero for an access port).
    trunk: Box<[u64; 64]>,
}

impl Member {
    fn new(port: Box<dyn Port>, status: Arc<PortStatus>, mode: &VlanMode) -> Self {
        let mut trunk = Box::new([0u64; 64]);
        let access = match mode {
            VlanMode::Access(v) => *v,
            VlanMode::Trunk(ids) => {
                for &id in ids {
                    trunk[(id as usize >> 6) & 63] |= 1 << (id & 63);
                }
                0
            }
        };
        Member {
            queues: port.info().queues.max(1),
            counters: port.counters(),
            port,
            status,
            access,
            trunk,
        }
    }

    #[inline]
    fn carries(&self, vid: u16) -> bool {
        if self.access != 0 {
            self.access == vid
        } else {
            self.trunk[(vid as usize >> 6) & 63] & (1 << (vid & 63)) != 0
        }
    }
}

/// A bridge as its worker runs it. See the module docs.
pub(crate) struct Bridge {
    members: Vec<Member>,
    table: MacTable,
    /// One transmit vector per member, capacity [`BURST_SIZE`]: every received
    /// packet adds at most one packet to each, and they are flushed after every
    /// receive burst.
    out: Vec<Vec<PacketBuf>>,
    pool: Mempool,
    shared: Arc<BridgeShared>,
    epoch: Instant,
    now_ms: u32,
    answered: u64,
}

impl Bridge {
    /// Builds a bridge from its member ports (in `spec.ports` order). `statuses`
    /// match `ports`.
    pub(crate) fn new(
        spec: &BridgeSpec,
        ports: Vec<(Box<dyn Port>, Arc<PortStatus>)>,
        pool: Mempool,
    ) -> Self {
        let members: Vec<Member> = ports
            .into_iter()
            .zip(&spec.ports)
            .map(|((port, status), (_, mode))| Member::new(port, status, mode))
            .collect();
        let shared = Arc::new(BridgeShared {
            name: spec.name.clone(),
            ports: Mutex::new(
                members
                    .iter()
                    .zip(&spec.ports)
                    .map(|(m, (_, mode))| (m.status.name().to_owned(), mode.clone()))
                    .collect(),
            ),
            mac_age_secs: spec.mac_age_secs,
            mac_table_size: spec.mac_table_size,
            counters: BridgeCounters::default(),
            requested: AtomicU64::new(0),
            snapshot: Mutex::new(Snapshot::default()),
        });
        let out = members.iter().map(|_| Vec::with_capacity(BURST_SIZE)).collect();
        Self {
            members,
            table: MacTable::new(spec.mac_table_size, spec.mac_age_secs.saturating_mul(1000)),
            out,
            pool,
            shared,
            epoch: Instant::now(),
            now_ms: 0,
            answered: 0,
        }
    }

    /// The view other threads get.
    pub(crate) fn shared(&self) -> Arc<BridgeShared> {
        self.shared.clone()
    }

    /// The name.
    pub(crate) fn name(&self) -> &str {
        &self.shared.name
    }

    /// Gives the ports back.
    pub(crate) fn into_ports(self) -> Vec<Box<dyn Port>> {
        self.members.into_iter().map(|m| m.port).collect()
    }

    /// Number of member ports.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// A port joins (called by the worker between two polls; allocates its transmit
    /// vector, which is not on the per-packet path).
    pub(crate) fn add_member(
        &mut self,
        port: Box<dyn Port>,
        status: Arc<PortStatus>,
        mode: &VlanMode,
    ) {
        self.members.push(Member::new(port, status, mode));
        self.out.push(Vec::with_capacity(BURST_SIZE));
    }

    /// Member `name` leaves: its MAC entries are flushed and the port is handed back.
    /// Between two polls its transmit vector is empty (every burst is flushed), so no
    /// packet is in flight inside the bridge. The last member takes its index.
    pub(crate) fn remove_member(&mut self, name: &str) -> Option<Box<dyn Port>> {
        let i = self.members.iter().position(|m| m.status.name() == name)?;
        let last = self.members.len() - 1;
        let flushed = self.table.flush_port(i as u16);
        if i != last {
            self.table.renumber_port(last as u16, i as u16);
        }
        let out = self.out.swap_remove(i);
        debug_assert!(out.is_empty());
        drop(out);
        self.shared.counters.entries.store(self.table.len() as u64, Ordering::Relaxed);
        tracing::debug!(bridge = %self.shared.name, port = name, flushed, "port left the bridge");
        Some(self.members.swap_remove(i).port)
    }

    /// Publishes link state and MAC of every member.
    pub(crate) fn publish_status(&self) {
        for m in &self.members {
            m.status.publish(m.port.as_ref());
        }
    }

    /// Clock update, an aging step, and a MAC table copy if one was asked for. Not
    /// per packet: the worker calls it every few hundred rounds.
    pub(crate) fn maintain(&mut self) {
        self.now_ms = self.epoch.elapsed().as_millis() as u32;
        let aged = self.table.sweep(self.now_ms, SWEEP_SLOTS);
        let c = &self.shared.counters;
        if aged > 0 {
            bump(&c.aged, aged as u64);
        }
        c.entries.store(self.table.len() as u64, Ordering::Relaxed);
        let want = self.shared.requested.load(Ordering::Acquire);
        if want > self.answered {
            let entries = self.table.entries(self.now_ms);
            if let Ok(mut snap) = self.shared.snapshot.try_lock() {
                snap.entries = entries;
                snap.names = self.members.iter().map(|m| m.status.name().to_owned()).collect();
                snap.seq = want;
                self.answered = want;
            }
        }
    }

    /// Receives one burst on every queue of every member and switches it; returns
    /// the packets received. `buf` must be empty and is left empty.
    #[inline]
    pub(crate) fn poll(&mut self, buf: &mut Vec<PacketBuf>) -> usize {
        let mut received = 0;
        for i in 0..self.members.len() {
            for q in 0..self.members[i].queues {
                self.members[i].port.rx_burst(q, buf, BURST_SIZE);
                if buf.is_empty() {
                    continue;
                }
                received += buf.len();
                self.switch(i, q, buf);
                self.flush(q);
            }
        }
        received
    }

    /// Classifies, learns and queues every packet of `buf` (received on member
    /// `from`, queue `q`) on the members' transmit vectors.
    #[inline]
    fn switch(&mut self, from: usize, q: u16, buf: &mut Vec<PacketBuf>) {
        let now = self.now_ms;
        let c = &self.shared.counters;
        let n = self.members.len();
        let (mut fwd, mut flood, mut filtered, mut vdrop, mut runts) = (0u64, 0u64, 0, 0, 0);
        let (mut learned, mut moved, mut full, mut nobuf) = (0u64, 0u64, 0u64, 0u64);
        // The previous frame's (dst, src, vid), where its destination was found, and
        // whether its source found the table full. Frames of one flow come in runs
        // within a burst: a frame with the same addresses and VLAN as the one before
        // needs neither the learn probe (its source was just seen at this `now`) nor
        // the lookup (the table has not changed since), only the same decision.
        let mut prev: Option<(MacKey, MacKey, u16, Option<u16>, bool)> = None;
        for mut pkt in buf.drain(..) {
            let Some(h) = EthHeader::new_checked(pkt.data()) else {
                runts += 1;
                continue;
            };
            let (dst, src, tag) = (h.dst(), h.src(), h.vlan_id());
            let ingress = &self.members[from];
            let vid = if ingress.access != 0 {
                if tag.is_some() {
                    vdrop += 1;
                    continue;
                }
                ingress.access
            } else {
                match tag {
                    Some(v) if v != 0 && ingress.carries(v) => {
                        if !vlan::pop_vlan(&mut pkt) {
                            vdrop += 1;
                            continue;
                        }
                        v
                    }
                    _ => {
                        vdrop += 1;
                        continue;
                    }
                }
            };
            let known = match prev {
                Some((d, sa, v, known, was_full)) if d == dst && sa == src && v == vid => {
                    // Learning it again would find the table just as full.
                    full += u64::from(was_full);
                    known
                }
                _ => {
                    let mut was_full = false;
                    if src & MAC_GROUP_BIT == 0 {
                        match self.table.learn(src, vid, from as u16, now) {
                            Learned::Refreshed => {}
                            Learned::New => learned += 1,
                            Learned::Moved => moved += 1,
                            Learned::Full => {
                                full += 1;
                                was_full = true;
                            }
                        }
                    }
                    let known = if dst & MAC_GROUP_BIT == 0 {
                        self.table.lookup(dst, vid, now)
                    } else {
                        None
                    };
                    prev = Some((dst, src, vid, known, was_full));
                    known
                }
            };
            match known {
                Some(p) if p as usize == from => filtered += 1,
                Some(p) if (p as usize) < n => {
                    fwd += 1;
                    Self::enqueue(&self.members[p as usize], &mut self.out[p as usize], pkt, vid);
                }
                _ => {
                    flood += 1;
                    nobuf += Self::flood(&self.members, &mut self.out, &self.pool, from, pkt, vid);
                }
            }
        }
        let drops = vdrop + runts;
        if drops > 0 {
            bump(&self.members[from].counters.queue(q).rx_drops, drops);
        }
        for (v, ctr) in [
            (fwd, &c.forwarded),
            (flood, &c.flooded),
            (filtered, &c.filtered),
            (vdrop, &c.vlan_drops),
            (runts, &c.runts),
            (learned, &c.learned),
            (moved, &c.moved),
            (full, &c.table_full),
            (nobuf, &c.no_buffer),
        ] {
            if v > 0 {
                bump(ctr, v);
            }
        }
    }

    /// Queues `pkt` (untagged, in `vid`) for `m`, tagging it for a trunk.
    #[inline]
    fn enqueue(m: &Member, out: &mut Vec<PacketBuf>, mut pkt: PacketBuf, vid: u16) {
        if m.access == 0 && !vlan::push_vlan(&mut pkt, vid) {
            // No headroom for the tag: counted as the output port's drop.
            bump(&m.counters.queue(0).tx_drops, 1);
            return;
        }
        if out.len() < out.capacity() {
            out.push(pkt);
        } else {
            bump(&m.counters.queue(0).tx_drops, 1);
        }
    }

    /// Sends `pkt` to every member of `vid` except `from`: copies for all but the
    /// last, the original to the last. Returns copies that found no buffer.
    #[inline]
    fn flood(
        members: &[Member],
        out: &mut [Vec<PacketBuf>],
        pool: &Mempool,
        from: usize,
        pkt: PacketBuf,
        vid: u16,
    ) -> u64 {
        let mut last: Option<usize> = None;
        let mut nobuf = 0;
        for (j, m) in members.iter().enumerate() {
            if j == from || !m.carries(vid) {
                continue;
            }
            if let Some(prev) = last {
                match pool.alloc() {
                    Some(mut copy) => {
                        if copy.copy_from(pkt.data()) {
                            Self::enqueue(&members[prev], &mut out[prev], copy, vid);
                        } else {
                            nobuf += 1;
                        }
                    }
                    None => nobuf += 1,
                }
            }
            last = Some(j);
        }
        if let Some(j) = last {
            Self::enqueue(&members[j], &mut out[j], pkt, vid);
        }
        nobuf
    }

    /// Transmits every member's queued packets on queue `q % queues`; what a port
    /// does not take is dropped and counted on its `tx_drops`.
    #[inline]
    fn flush(&mut self, q: u16) {
        for (m, out) in self.members.iter_mut().zip(self.out.iter_mut()) {
            if out.is_empty() {
                continue;
            }
            let tq = q % m.queues;
            m.port.tx_burst(tq, out);
            if !out.is_empty() {
                bump(&m.counters.queue(tq).tx_drops, out.len() as u64);
                out.clear();
            }
        }
    }
}

/// Formats a packed MAC.
pub fn mac_string(k: MacKey) -> String {
    podwire_driver::MacAddr(vlan::mac_bytes(k)).to_string()
}
