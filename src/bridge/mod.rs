//! L2 bridges: MAC learning with aging, flooding of broadcast, multicast and unknown
//! unicast within the bridge and VLAN (never back to the ingress port), and 802.1Q
//! access and trunk ports.
//!
//! A bridge whose members are polled by several workers is run in parts, one
//! `Bridge` per worker: each owns the ports its worker polls, its own MAC table and
//! per-port transmit vectors, and knows the members of other workers as remote
//! entries. A frame for a remote member goes through the ring to that member's worker
//! (`engine::cross`); a flood goes once to each other worker polling a member of the
//! VLAN, which floods it to its own members; the receiving part learns the frame's
//! source on the remote ingress member (`Bridge::deliver`). The datapath takes no
//! lock and allocates nothing on the heap (a flooded frame is copied into a buffer from the mempool's
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

use crate::engine::cross::{CrossPacket, Outbound, FLOOD_PORT};
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

/// Counters of a bridge (of one worker's part of it: single writer, that worker).
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
    /// Frames for a port on another worker that were dropped: the ring to that
    /// worker was full, or the port left the bridge while they were in the ring.
    pub cross_worker_drops: AtomicU64,
}

impl BridgeCounters {
    fn fields(&self) -> [&AtomicU64; 12] {
        [
            &self.forwarded,
            &self.flooded,
            &self.filtered,
            &self.vlan_drops,
            &self.runts,
            &self.no_buffer,
            &self.learned,
            &self.moved,
            &self.table_full,
            &self.aged,
            &self.entries,
            &self.cross_worker_drops,
        ]
    }

    /// Adds `other` to these (entries excepted); control path only.
    fn absorb(&self, other: &BridgeCounters) {
        for (a, b) in self.fields().into_iter().zip(other.fields()) {
            if !std::ptr::eq(a, &self.entries) {
                a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
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
    /// Member names by bridge-local index when the copy was made, and whether the
    /// member was polled by this worker.
    names: Vec<(String, bool)>,
}

/// What other threads may know about one worker's part of a bridge.
#[derive(Debug)]
pub(crate) struct ShardShared {
    worker: usize,
    counters: BridgeCounters,
    requested: AtomicU64,
    snapshot: Mutex<Snapshot>,
}

/// What other threads may know about a bridge while workers run it.
#[derive(Debug)]
pub struct BridgeShared {
    name: String,
    /// Engine-wide id, carried by frames crossing between workers.
    id: u32,
    /// Kept by the thread that changes the bridge's membership (the engine's owner);
    /// never touched by the workers.
    ports: Mutex<Vec<(String, VlanMode)>>,
    mac_age_secs: u32,
    mac_table_size: usize,
    /// The parts of the bridge the workers run (one per worker holding members,
    /// plus the bridge's home worker). Changed by the engine's owner only.
    shards: Mutex<Vec<Arc<ShardShared>>>,
    /// Counters of parts that were removed (a worker's last member left).
    retired: BridgeCounters,
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

    fn shards(&self) -> Vec<Arc<ShardShared>> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The counters, summed over the workers running the bridge (`entries`: the
    /// largest of the workers' tables; each holds the addresses it learned from its
    /// own ports and from frames other workers sent it).
    pub fn counters(&self) -> BridgeCounters {
        let sum = BridgeCounters::default();
        sum.absorb(&self.retired);
        let mut entries = 0;
        for s in self.shards() {
            sum.absorb(&s.counters);
            entries = entries.max(s.counters.entries.load(Ordering::Relaxed));
        }
        sum.entries.store(entries, Ordering::Relaxed);
        sum
    }

    /// Forgets the part run by worker `w` (after the worker dropped it), keeping its
    /// counts.
    pub(crate) fn retire(&self, w: usize) {
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = shards.iter().position(|s| s.worker == w) {
            let s = shards.remove(i);
            self.retired.absorb(&s.counters);
        }
    }

    /// Asks the workers for a copy of the MAC table and waits up to `timeout` for it.
    /// Each address is reported by the worker polling the port it was learned on.
    /// `None` if a worker did not answer (it is not running).
    pub fn mac_table(&self, timeout: Duration) -> Option<Vec<MacReport>> {
        let shards = self.shards();
        let wants: Vec<u64> =
            shards.iter().map(|s| s.requested.fetch_add(1, Ordering::AcqRel) + 1).collect();
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        for (s, want) in shards.iter().zip(wants) {
            loop {
                {
                    let snap = s.snapshot.lock().unwrap_or_else(|e| e.into_inner());
                    if snap.seq >= want {
                        for e in &snap.entries {
                            let Some((name, true)) = snap.names.get(e.port as usize) else {
                                continue;
                            };
                            out.push(MacReport {
                                mac: podwire_driver::MacAddr(vlan::mac_bytes(e.mac)).to_string(),
                                vlan: e.vlan,
                                port: name.clone(),
                                age_secs: f64::from(e.age_ms) / 1000.0,
                            });
                        }
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        out.sort_by(|a, b| (a.vlan, &a.mac).cmp(&(b.vlan, &b.mac)));
        Some(out)
    }
}

/// A member polled by another worker, as a worker that forwards to it knows it.
pub(crate) struct RemoteMember {
    pub(crate) id: u32,
    pub(crate) worker: usize,
    pub(crate) status: Arc<PortStatus>,
    pub(crate) mode: VlanMode,
}

/// One member port, as a worker holds it.
struct Member {
    /// The port, when this worker polls it; `None` for a member on another worker
    /// (frames for it cross through the ring to `worker`).
    port: Option<Box<dyn Port>>,
    /// Engine-wide port id.
    id: u32,
    worker: usize,
    status: Arc<PortStatus>,
    counters: Arc<PortCounters>,
    queues: u16,
    /// Access VLAN, or 0 for a trunk.
    access: u16,
    /// Trunk membership bitmap (all zero for an access port).
    trunk: Box<[u64; 64]>,
}

impl Member {
    fn new(
        port: Option<Box<dyn Port>>,
        id: u32,
        worker: usize,
        status: Arc<PortStatus>,
        mode: &VlanMode,
    ) -> Self {
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
            queues: status.queues().max(1),
            counters: status.counters().clone(),
            port,
            id,
            worker,
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

/// Where a flooded frame goes: a member here, or a worker (which floods it to its
/// own members).
#[derive(Clone, Copy)]
enum Target {
    Local(usize),
    Worker(usize),
}

/// Counts of frames that came from other workers, bumped once per drained chunk.
#[derive(Default)]
struct Delivered {
    forwarded: u64,
    flooded: u64,
    learned: u64,
    moved: u64,
    full: u64,
    nobuf: u64,
    stale: u64,
    pending: bool,
}

/// One worker's part of a bridge. See the module docs.
pub(crate) struct Bridge {
    members: Vec<Member>,
    table: MacTable,
    /// One transmit vector per member, capacity [`BURST_SIZE`] (none for members on
    /// other workers): every received packet adds at most one packet to each, and
    /// they are flushed after every receive burst.
    out: Vec<Vec<PacketBuf>>,
    pool: Mempool,
    shared: Arc<BridgeShared>,
    shard: Arc<ShardShared>,
    /// The worker running this part (index).
    worker: usize,
    epoch: Instant,
    now_ms: u32,
    answered: u64,
    delivered: Delivered,
}

impl Bridge {
    /// Builds a bridge whose home part runs on worker `worker`; `ports` (with their
    /// ids, in `spec.ports` order) are polled there.
    pub(crate) fn new(
        spec: &BridgeSpec,
        id: u32,
        worker: usize,
        ports: Vec<(Box<dyn Port>, Arc<PortStatus>, u32)>,
        pool: Mempool,
    ) -> Self {
        let shared = Arc::new(BridgeShared {
            name: spec.name.clone(),
            id,
            ports: Mutex::new(
                ports
                    .iter()
                    .zip(&spec.ports)
                    .map(|((_, s, _), (_, mode))| (s.name().to_owned(), mode.clone()))
                    .collect(),
            ),
            mac_age_secs: spec.mac_age_secs,
            mac_table_size: spec.mac_table_size,
            shards: Mutex::new(Vec::new()),
            retired: BridgeCounters::default(),
        });
        let mut b = Self::part(&shared, worker, pool);
        for ((port, status, pid), (_, mode)) in ports.into_iter().zip(&spec.ports) {
            b.add_member(port, status, pid, mode);
        }
        b
    }

    /// Another part of bridge `shared`, for worker `worker` (no members yet).
    pub(crate) fn part(shared: &Arc<BridgeShared>, worker: usize, pool: Mempool) -> Self {
        let shard = Arc::new(ShardShared {
            worker,
            counters: BridgeCounters::default(),
            requested: AtomicU64::new(0),
            snapshot: Mutex::new(Snapshot::default()),
        });
        shared.shards.lock().unwrap_or_else(|e| e.into_inner()).push(shard.clone());
        Self {
            members: Vec::new(),
            table: MacTable::new(shared.mac_table_size, shared.mac_age_secs.saturating_mul(1000)),
            out: Vec::new(),
            pool,
            shared: shared.clone(),
            shard,
            worker,
            epoch: Instant::now(),
            now_ms: 0,
            answered: 0,
            delivered: Delivered::default(),
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

    /// The engine-wide id.
    #[inline]
    pub(crate) fn id(&self) -> u32 {
        self.shared.id
    }

    /// Gives the ports polled here back.
    pub(crate) fn into_ports(self) -> Vec<Box<dyn Port>> {
        self.members.into_iter().filter_map(|m| m.port).collect()
    }

    /// A port joins, polled here (called by the worker between two polls; allocates
    /// its transmit vector, which is not on the per-packet path).
    pub(crate) fn add_member(
        &mut self,
        port: Box<dyn Port>,
        status: Arc<PortStatus>,
        id: u32,
        mode: &VlanMode,
    ) {
        self.members.push(Member::new(Some(port), id, self.worker, status, mode));
        self.out.push(Vec::with_capacity(BURST_SIZE));
    }

    /// A port polled by another worker joins: frames for it cross to that worker.
    pub(crate) fn add_remote(&mut self, r: RemoteMember) {
        self.members.push(Member::new(None, r.id, r.worker, r.status, &r.mode));
        self.out.push(Vec::new());
    }

    /// Member `id` leaves: its MAC entries are flushed and, if it was polled here,
    /// the port is handed back (`Some(None)` for a member of another worker). Between
    /// two polls its transmit vector is empty (every burst is flushed), so no packet
    /// is in flight inside this part. The last member takes its index.
    pub(crate) fn remove_member(&mut self, id: u32) -> Option<Option<Box<dyn Port>>> {
        let i = self.members.iter().position(|m| m.id == id)?;
        let last = self.members.len() - 1;
        let flushed = self.table.flush_port(i as u16);
        if i != last {
            self.table.renumber_port(last as u16, i as u16);
        }
        let out = self.out.swap_remove(i);
        debug_assert!(out.is_empty());
        drop(out);
        self.shard.counters.entries.store(self.table.len() as u64, Ordering::Relaxed);
        let m = self.members.swap_remove(i);
        tracing::debug!(
            bridge = %self.shared.name, port = m.status.name(), flushed, "port left the bridge"
        );
        Some(m.port)
    }

    /// Publishes link state and MAC of every member polled here.
    pub(crate) fn publish_status(&self) {
        for m in &self.members {
            if let Some(p) = &m.port {
                m.status.publish(p.as_ref());
            }
        }
    }

    /// Clock update, an aging step, and a MAC table copy if one was asked for. Not
    /// per packet: the worker calls it every few hundred rounds.
    pub(crate) fn maintain(&mut self) {
        self.now_ms = self.epoch.elapsed().as_millis() as u32;
        let aged = self.table.sweep(self.now_ms, SWEEP_SLOTS);
        let c = &self.shard.counters;
        if aged > 0 {
            bump(&c.aged, aged as u64);
        }
        c.entries.store(self.table.len() as u64, Ordering::Relaxed);
        let want = self.shard.requested.load(Ordering::Acquire);
        if want > self.answered {
            let entries = self.table.entries(self.now_ms);
            if let Ok(mut snap) = self.shard.snapshot.try_lock() {
                snap.entries = entries;
                snap.names = self
                    .members
                    .iter()
                    .map(|m| (m.status.name().to_owned(), m.port.is_some()))
                    .collect();
                snap.seq = want;
                self.answered = want;
            }
        }
    }

    /// Receives one burst on every queue of every member polled here and switches
    /// it; frames for members of other workers go to `tx[worker]`. Returns the
    /// packets received. `buf` must be empty and is left empty.
    #[inline]
    pub(crate) fn poll(&mut self, buf: &mut Vec<PacketBuf>, tx: &mut [Option<Outbound>]) -> usize {
        let mut received = 0;
        for i in 0..self.members.len() {
            for q in 0..self.members[i].queues {
                let Some(port) = self.members[i].port.as_mut() else {
                    break;
                };
                port.rx_burst(q, buf, BURST_SIZE);
                if buf.is_empty() {
                    continue;
                }
                received += buf.len();
                self.switch(i, q, buf, tx);
                self.flush(q);
            }
        }
        received
    }

    /// Classifies, learns and queues every packet of `buf` (received on member
    /// `from`, queue `q`) on the members' transmit vectors or the rings to other
    /// workers.
    #[inline]
    fn switch(
        &mut self,
        from: usize,
        q: u16,
        buf: &mut Vec<PacketBuf>,
        tx: &mut [Option<Outbound>],
    ) {
        let now = self.now_ms;
        let c = &self.shard.counters;
        let n = self.members.len();
        let (mut fwd, mut flood, mut filtered, mut vdrop, mut runts) = (0u64, 0u64, 0, 0, 0);
        let (mut learned, mut moved, mut full, mut nobuf) = (0u64, 0u64, 0u64, 0u64);
        let mut cross_drops = 0u64;
        let (bridge, src_id) = (self.shared.id, self.members[from].id);
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
                    let m = &self.members[p as usize];
                    if m.port.is_some() {
                        Self::enqueue(m, &mut self.out[p as usize], pkt, vid);
                    } else {
                        let msg =
                            CrossPacket { pkt, bridge, src_port: src_id, dst_port: m.id, vid };
                        if !send_cross(tx, m.worker, msg) {
                            cross_drops += 1;
                            m.status.count_cross_drop();
                        }
                    }
                }
                _ => {
                    flood += 1;
                    let (nb, cd) = Self::flood(
                        &self.members,
                        &mut self.out,
                        &self.pool,
                        Some(from),
                        pkt,
                        vid,
                        Some((tx, bridge, src_id)),
                    );
                    nobuf += nb;
                    cross_drops += cd;
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
            (cross_drops, &c.cross_worker_drops),
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

    /// Sends `pkt` to every member polled here that carries `vid` except `from`,
    /// and, when `remote` is given, once to every other worker polling a member that
    /// carries `vid` (that worker floods it to its own members): copies for all but
    /// the last target, the original to the last. Returns copies that found no
    /// buffer and frames dropped at a full ring.
    #[inline]
    fn flood(
        members: &[Member],
        out: &mut [Vec<PacketBuf>],
        pool: &Mempool,
        from: Option<usize>,
        pkt: PacketBuf,
        vid: u16,
        mut remote: Option<(&mut [Option<Outbound>], u32, u32)>,
    ) -> (u64, u64) {
        let mut last: Option<Target> = None;
        let (mut nobuf, mut cross_drops) = (0, 0);
        let mut workers: u64 = 0;
        let mut emit =
            |t: Target, p: PacketBuf, remote: &mut Option<(&mut [Option<Outbound>], u32, u32)>| {
                match t {
                    Target::Local(j) => Self::enqueue(&members[j], &mut out[j], p, vid),
                    Target::Worker(w) => {
                        if let Some((tx, bridge, src)) = remote {
                            let msg = CrossPacket {
                                pkt: p,
                                bridge: *bridge,
                                src_port: *src,
                                dst_port: FLOOD_PORT,
                                vid,
                            };
                            if !send_cross(tx, w, msg) {
                                cross_drops += 1;
                            }
                        }
                    }
                }
            };
        let mut next = |t: Target, remote: &mut Option<(&mut [Option<Outbound>], u32, u32)>| {
            if let Some(prev) = last {
                match pool.alloc() {
                    Some(mut copy) => {
                        if copy.copy_from(pkt.data()) {
                            emit(prev, copy, remote);
                        } else {
                            nobuf += 1;
                        }
                    }
                    None => nobuf += 1,
                }
            }
            last = Some(t);
        };
        for (j, m) in members.iter().enumerate() {
            if Some(j) == from || !m.carries(vid) {
                continue;
            }
            if m.port.is_some() {
                next(Target::Local(j), &mut remote);
            } else if remote.is_some() {
                workers |= 1 << (m.worker & 63);
            }
        }
        while workers != 0 {
            let w = workers.trailing_zeros() as usize;
            workers &= workers - 1;
            next(Target::Worker(w), &mut remote);
        }
        if let Some(t) = last {
            emit(t, pkt, &mut remote);
        }
        (nobuf, cross_drops)
    }

    /// Takes one frame another worker sent this part: learns its source on the
    /// member it came from, and queues it for its destination member or, for a
    /// flood, for every member polled here that carries its VLAN. A frame for a
    /// member that left meanwhile is dropped (its buffer goes back to the pool).
    /// [`Bridge::flush_delivered`] transmits what was queued; call it after at most
    /// [`BURST_SIZE`] frames.
    #[inline]
    pub(crate) fn deliver(&mut self, msg: CrossPacket) {
        let CrossPacket { pkt, src_port, dst_port, vid, .. } = msg;
        let d = &mut self.delivered;
        d.pending = true;
        if let Some(h) = EthHeader::new_checked(pkt.data()) {
            let src = h.src();
            if src & MAC_GROUP_BIT == 0 {
                if let Some(i) = self.members.iter().position(|m| m.id == src_port) {
                    match self.table.learn(src, vid, i as u16, self.now_ms) {
                        Learned::Refreshed => {}
                        Learned::New => d.learned += 1,
                        Learned::Moved => d.moved += 1,
                        Learned::Full => d.full += 1,
                    }
                }
            }
        }
        if dst_port == FLOOD_PORT {
            d.flooded += 1;
            let (nb, _) =
                Self::flood(&self.members, &mut self.out, &self.pool, None, pkt, vid, None);
            self.delivered.nobuf += nb;
            return;
        }
        match self.members.iter().position(|m| m.id == dst_port && m.port.is_some()) {
            Some(j) => {
                d.forwarded += 1;
                Self::enqueue(&self.members[j], &mut self.out[j], pkt, vid);
            }
            None => {
                d.stale += 1;
                drop(pkt);
            }
        }
    }

    /// Transmits what [`Bridge::deliver`] queued and counts it.
    pub(crate) fn flush_delivered(&mut self) {
        if !self.delivered.pending {
            return;
        }
        self.flush(0);
        let d = std::mem::take(&mut self.delivered);
        let c = &self.shard.counters;
        for (v, ctr) in [
            (d.forwarded, &c.forwarded),
            (d.flooded, &c.flooded),
            (d.learned, &c.learned),
            (d.moved, &c.moved),
            (d.full, &c.table_full),
            (d.nobuf, &c.no_buffer),
            (d.stale, &c.cross_worker_drops),
        ] {
            if v > 0 {
                bump(ctr, v);
            }
        }
    }

    /// Transmits every member's queued packets on queue `q % queues`; what a port
    /// does not take is dropped and counted on its `tx_drops`.
    #[inline]
    fn flush(&mut self, q: u16) {
        for (m, out) in self.members.iter_mut().zip(self.out.iter_mut()) {
            if out.is_empty() {
                continue;
            }
            let Some(port) = m.port.as_mut() else {
                out.clear();
                continue;
            };
            let tq = q % m.queues;
            port.tx_burst(tq, out);
            if !out.is_empty() {
                bump(&m.counters.queue(tq).tx_drops, out.len() as u64);
                out.clear();
            }
        }
    }
}

/// Pushes `msg` on the ring to worker `w`; false (the frame is dropped, its buffer
/// freed) when the ring is full or there is none.
#[inline]
fn send_cross(tx: &mut [Option<Outbound>], w: usize, msg: CrossPacket) -> bool {
    match tx.get_mut(w).and_then(Option::as_mut) {
        Some(p) => p.push(msg).is_ok(),
        None => false,
    }
}

/// Formats a packed MAC.
pub fn mac_string(k: MacKey) -> String {
    podwire_driver::MacAddr(vlan::mac_bytes(k)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ring;
    use podwire_driver::{MacAddr, MempoolConfig, PortInfo};
    use std::sync::Mutex as StdMutex;

    type Wire = Arc<StdMutex<Vec<PacketBuf>>>;

    /// A port whose receive side is `rx` and whose transmit side appends to `tx`.
    struct TestPort {
        name: String,
        rx: Wire,
        tx: Wire,
        counters: Arc<PortCounters>,
    }

    fn test_port(name: &str) -> (Box<dyn Port>, Wire, Wire) {
        let (rx, tx) = (Wire::default(), Wire::default());
        let p = TestPort {
            name: name.into(),
            rx: rx.clone(),
            tx: tx.clone(),
            counters: PortCounters::new(1),
        };
        (Box::new(p), rx, tx)
    }

    impl Port for TestPort {
        fn name(&self) -> &str {
            &self.name
        }
        fn info(&self) -> PortInfo {
            PortInfo { kind: "test", mac: MacAddr([2, 0, 0, 0, 0, 0]), queues: 1 }
        }
        fn link_up(&self) -> bool {
            true
        }
        fn rx_burst(&mut self, _q: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize {
            let mut rx = self.rx.lock().unwrap();
            let n = rx.len().min(max);
            bufs.extend(rx.drain(..n));
            n
        }
        fn tx_burst(&mut self, _q: u16, bufs: &mut Vec<PacketBuf>) -> usize {
            let n = bufs.len();
            self.tx.lock().unwrap().append(bufs);
            n
        }
        fn counters(&self) -> Arc<PortCounters> {
            self.counters.clone()
        }
    }

    const COUNT: u32 = 512;

    fn pool() -> Mempool {
        Mempool::small_pages(MempoolConfig { count: COUNT, ..Default::default() }).unwrap()
    }

    fn frame(pool: &Mempool, dst: u8, src: u8) -> PacketBuf {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut b = pool.alloc().unwrap();
        assert!(b.copy_from(&f));
        b
    }

    fn spec() -> BridgeSpec {
        BridgeSpec {
            name: "br".into(),
            ports: vec![(0, VlanMode::default())],
            mac_age_secs: 300,
            mac_table_size: 64,
        }
    }

    fn remote(name: &str, id: u32, worker: usize, mode: VlanMode) -> RemoteMember {
        let (p, _, _) = test_port(name);
        RemoteMember { id, worker, status: Arc::new(PortStatus::of(p.as_ref())), mode }
    }

    fn all_free(pool: &Mempool) -> bool {
        pool.release_thread_cache();
        pool.in_ring() == COUNT as usize
    }

    #[test]
    fn full_ring_drops_are_counted_and_every_buffer_comes_back() {
        let pool = pool();
        let (a, a_rx, a_tx) = test_port("a");
        let status = Arc::new(PortStatus::of(a.as_ref()));
        let mut br = Bridge::new(&spec(), 0, 0, vec![(a, status, 10)], pool.clone());
        let b = remote("b", 11, 1, VlanMode::default());
        let b_status = b.status.clone();
        br.add_remote(b);
        let (p, mut c) = ring::channel::<CrossPacket>(4);
        let mut tx = vec![None, Some(p)];
        // b's address comes from worker 1 (a flood): learned on b, delivered to a.
        br.deliver(CrossPacket {
            pkt: frame(&pool, 0xff, 0xb),
            bridge: 0,
            src_port: 11,
            dst_port: FLOOD_PORT,
            vid: DEFAULT_VLAN,
        });
        br.flush_delivered();
        assert_eq!(a_tx.lock().unwrap().len(), 1);
        // Ten frames a -> b: four fit in the ring, six are dropped and counted.
        a_rx.lock().unwrap().extend((0..10).map(|_| frame(&pool, 0xb, 0xa)));
        let mut buf = Vec::with_capacity(BURST_SIZE);
        assert_eq!(br.poll(&mut buf, &mut tx), 10);
        let cnt = br.shared().counters();
        assert_eq!(cnt.forwarded.load(Ordering::Relaxed), 10);
        assert_eq!(cnt.cross_worker_drops.load(Ordering::Relaxed), 6);
        assert_eq!(cnt.flooded.load(Ordering::Relaxed), 1, "not flooded: b was learned");
        assert_eq!(b_status.cross_worker_drops(), 6);
        let first = c.pop().unwrap();
        assert_eq!((first.src_port, first.dst_port, first.vid), (10, 11, DEFAULT_VLAN));
        drop(first);
        a_tx.lock().unwrap().clear();
        // The three frames left in the ring go back to the pool with it.
        assert!(!all_free(&pool));
        drop((tx, c));
        assert!(all_free(&pool), "{} of {COUNT} free", pool.in_ring());
        drop(br);
    }

    #[test]
    fn frames_for_a_port_that_left_are_freed_and_floods_reach_each_worker_once() {
        let pool = pool();
        let (a, _a_rx, a_tx) = test_port("a");
        let status = Arc::new(PortStatus::of(a.as_ref()));
        let mut br = Bridge::new(&spec(), 0, 0, vec![(a, status, 1)], pool.clone());
        let (l2, l2_rx, l2_tx) = test_port("l2");
        let s2 = Arc::new(PortStatus::of(l2.as_ref()));
        br.add_member(l2, s2, 2, &VlanMode::default());
        // Worker 1 polls two members of VLAN 1 and one of VLAN 9; worker 2 one of
        // VLAN 9 only.
        br.add_remote(remote("r3", 3, 1, VlanMode::default()));
        br.add_remote(remote("r4", 4, 1, VlanMode::Trunk(vec![1, 9])));
        br.add_remote(remote("r5", 5, 1, VlanMode::Access(9)));
        br.add_remote(remote("r6", 6, 2, VlanMode::Access(9)));
        let rings: Vec<_> = (0..3).map(|_| ring::channel::<CrossPacket>(64)).collect();
        let (mut tx, mut rx): (Vec<_>, Vec<_>) =
            rings.into_iter().map(|(p, c)| (Some(p), c)).unzip();
        tx[0] = None;
        // A broadcast from l2 (VLAN 1): a here, once to worker 1, nothing to worker 2.
        l2_rx.lock().unwrap().push(frame(&pool, 0xff, 0x22));
        let mut buf = Vec::with_capacity(BURST_SIZE);
        br.poll(&mut buf, &mut tx);
        assert_eq!(a_tx.lock().unwrap().len(), 1);
        assert!(l2_tx.lock().unwrap().is_empty(), "never back to the ingress port");
        let m = rx[1].pop().expect("one copy for worker 1");
        assert_eq!((m.dst_port, m.src_port), (FLOOD_PORT, 2));
        assert!(rx[1].pop().is_none(), "exactly one copy per worker");
        assert!(rx[2].pop().is_none(), "worker 2 has no member in VLAN 1");
        drop(m);
        // Member a leaves; a frame for it that was already in a ring is freed.
        assert!(br.remove_member(1).unwrap().is_some());
        assert!(br.remove_member(3).unwrap().is_none(), "a remote member leaves too");
        br.deliver(CrossPacket {
            pkt: frame(&pool, 0xa, 0x33),
            bridge: 0,
            src_port: 4,
            dst_port: 1,
            vid: DEFAULT_VLAN,
        });
        br.flush_delivered();
        let c = br.shared().counters();
        assert_eq!(c.cross_worker_drops.load(Ordering::Relaxed), 1);
        assert_eq!(c.learned.load(Ordering::Relaxed), 2, "0x22 on l2 and 0x33 on r4");
        a_tx.lock().unwrap().clear();
        l2_tx.lock().unwrap().clear();
        drop((tx, rx));
        drop(br);
        assert!(all_free(&pool), "{} of {COUNT} free", pool.in_ring());
    }
}
