//! Drives the forwarding engine (the code `podwire run` uses) with in-process ports.
//!
//! `RingPort` lives here and only here: the config accepts no such port type. Each
//! queue of a RingPort is a pair of lock-free rings: the test injects packets into
//! the port's receive ring and collects what the port transmits from its transmit
//! ring, while the engine's pinned worker moves packets between two ports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use podwire::engine::{Engine, EngineError};
use podwire_driver::{MacAddr, Mempool, MempoolConfig, PacketBuf, Port, PortCounters, PortInfo};

type Ring = Arc<ArrayQueue<PacketBuf>>;

/// The outside ends of one RingPort queue.
#[derive(Clone)]
struct RingEnd {
    /// Packets pushed here are received by the port.
    inject: Ring,
    /// Packets the port transmits arrive here.
    collect: Ring,
}

/// A port whose "wire" is a pair of in-process rings per queue.
struct RingPort {
    name: String,
    mac: MacAddr,
    queues: Vec<RingEnd>,
    counters: Arc<PortCounters>,
}

impl RingPort {
    fn new(name: &str, queues: u16, rx_cap: usize, tx_cap: usize) -> (Self, Vec<RingEnd>) {
        let ends: Vec<RingEnd> = (0..queues)
            .map(|_| RingEnd {
                inject: Arc::new(ArrayQueue::new(rx_cap)),
                collect: Arc::new(ArrayQueue::new(tx_cap)),
            })
            .collect();
        let port = Self {
            name: name.into(),
            mac: MacAddr::random_local(),
            queues: ends.clone(),
            counters: PortCounters::new(queues),
        };
        (port, ends)
    }
}

impl Port for RingPort {
    fn name(&self) -> &str {
        &self.name
    }
    fn info(&self) -> PortInfo {
        PortInfo { kind: "ring", mac: self.mac, queues: self.queues.len() as u16 }
    }
    fn link_up(&self) -> bool {
        true
    }
    fn rx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize {
        let Some(q) = self.queues.get(queue as usize) else { return 0 };
        let (mut n, mut bytes) = (0, 0);
        while n < max {
            let Some(b) = q.inject.pop() else { break };
            bytes += b.len();
            bufs.push(b);
            n += 1;
        }
        self.counters.queue(queue).count_rx(n, bytes);
        n
    }
    fn tx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>) -> usize {
        let Some(q) = self.queues.get(queue as usize) else { return 0 };
        // This port is the ring's only producer, so the room can only grow meanwhile.
        let n = bufs.len().min(q.collect.capacity() - q.collect.len());
        let mut bytes = 0;
        for b in bufs.drain(..n) {
            bytes += b.len();
            if q.collect.push(b).is_err() {
                unreachable!("single producer: room was checked");
            }
        }
        self.counters.queue(queue).count_tx(n, bytes);
        n
    }
    fn counters(&self) -> Arc<PortCounters> {
        self.counters.clone()
    }
}

fn pool(count: u32) -> Mempool {
    Mempool::small_pages(MempoolConfig { count, ..Default::default() }).expect("mempool")
}

/// The core the worker is pinned to: the last one this process may use.
fn worker_core() -> usize {
    *podwire::config::allowed_cpus().and_then(|c| c.last().copied()).as_ref().unwrap_or(&0)
}

/// Length of packet `seq`: varies between 60 and 1514 bytes.
fn len_of(seq: u64) -> usize {
    60 + (seq.wrapping_mul(2654435761) % 1455) as usize
}

/// Fills a packet: direction byte, sequence number, then a pattern derived from both.
fn fill(b: &mut PacketBuf, dir: u8, seq: u64) {
    let len = len_of(seq);
    let room = b.room_mut();
    room[0] = dir;
    room[1..9].copy_from_slice(&seq.to_le_bytes());
    for (i, x) in room[9..len].iter_mut().enumerate() {
        *x = (seq as u8).wrapping_add(i as u8).wrapping_mul(31) ^ dir;
    }
    b.set_len(len);
}

/// Checks a packet is `seq` of direction `dir`, bytes intact.
fn check(b: &PacketBuf, dir: u8, seq: u64) {
    let d = b.data();
    assert_eq!(d.len(), len_of(seq), "length of packet {seq} (dir {dir})");
    assert_eq!(d[0], dir, "direction of packet {seq}");
    let got = u64::from_le_bytes(d[1..9].try_into().unwrap());
    assert_eq!(got, seq, "packet out of order or lost (dir {dir})");
    for (i, x) in d[9..].iter().enumerate() {
        assert_eq!(*x, (seq as u8).wrapping_add(i as u8).wrapping_mul(31) ^ dir, "byte {i}");
    }
}

fn total_bytes(n: u64) -> u64 {
    (0..n).map(|s| len_of(s) as u64).sum()
}

/// Cpus_allowed_list of this process's thread called `name`.
fn thread_affinity(name: &str) -> Option<String> {
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = t.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|s| s.trim().to_owned());
        }
    }
    None
}

const DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn every_packet_arrives_in_order_both_ways_and_counters_match() {
    const N: u64 = 100_000;
    let pool = pool(16384);
    let (a, a_ends) = RingPort::new("a", 1, 512, 512);
    let (b, b_ends) = RingPort::new("b", 1, 512, 512);
    let (a_counters, b_counters) = (a.counters(), b.counters());
    let core = worker_core();
    let ports: Vec<Box<dyn Port>> = vec![Box::new(a), Box::new(b)];
    let engine = Engine::start(ports, &[[0, 1]], &[core]).expect("engine starts");
    assert_eq!(engine.assignments().len(), 1);
    assert_eq!(engine.assignments()[0].core, core);
    assert_eq!(engine.assignments()[0].xconnects, vec![["a".to_string(), "b".to_string()]]);
    assert_eq!(thread_affinity(&format!("podwire-w{core}")), Some(core.to_string()));

    // One sender thread per direction; this thread collects both directions. The
    // senders keep at most WINDOW packets in flight, less than the collecting ring
    // holds, so the engine never meets a full peer (that is the next test).
    const WINDOW: u64 = 256;
    let received: [Arc<AtomicU64>; 2] = Default::default();
    let senders: Vec<_> = [(0u8, a_ends[0].inject.clone()), (1u8, b_ends[0].inject.clone())]
        .into_iter()
        .map(|(dir, ring)| {
            let pool = pool.clone();
            let received = received[dir as usize].clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut burst = Vec::with_capacity(32);
                let mut seq = 0;
                while seq < N {
                    assert!(start.elapsed() < DEADLINE, "sender {dir} stuck at {seq}");
                    if burst.is_empty() {
                        let want = (N - seq).min(32) as usize;
                        pool.alloc_bulk(&mut burst, want);
                    }
                    if burst.is_empty() || seq - received.load(Ordering::Acquire) >= WINDOW {
                        std::thread::yield_now();
                        continue;
                    }
                    let mut b = burst.pop().unwrap();
                    fill(&mut b, dir, seq);
                    let mut item = b;
                    loop {
                        match ring.push(item) {
                            Ok(()) => break,
                            Err(back) => {
                                item = back;
                                assert!(start.elapsed() < DEADLINE, "ring {dir} never drained");
                                std::thread::yield_now();
                            }
                        }
                    }
                    seq += 1;
                }
            })
        })
        .collect();

    let mut next = [0u64; 2];
    let start = Instant::now();
    // Packets injected on a leave on b, and the other way round.
    let outs = [&b_ends[0].collect, &a_ends[0].collect];
    while next[0] < N || next[1] < N {
        assert!(start.elapsed() < DEADLINE, "only {next:?} of {N} packets arrived");
        let mut idle = true;
        for dir in 0..2 {
            while let Some(p) = outs[dir].pop() {
                check(&p, dir as u8, next[dir]);
                next[dir] += 1;
                received[dir].store(next[dir], Ordering::Release);
                idle = false;
            }
        }
        if idle {
            std::thread::yield_now();
        }
    }
    for s in senders {
        s.join().expect("sender");
    }
    let ports = engine.stop();
    assert_eq!(ports.len(), 2, "the engine hands back both ports");

    let (ta, tb) = (a_counters.total(), b_counters.total());
    let bytes = total_bytes(N);
    assert_eq!((ta.rx_packets, ta.rx_bytes, ta.tx_packets, ta.tx_bytes), (N, bytes, N, bytes));
    assert_eq!((tb.rx_packets, tb.rx_bytes, tb.tx_packets, tb.tx_bytes), (N, bytes, N, bytes));
    assert_eq!((ta.tx_drops, tb.tx_drops, ta.rx_drops, tb.rx_drops), (0, 0, 0, 0));
    assert!(a_ends[0].inject.is_empty() && b_ends[0].inject.is_empty());
}

/// Waits until `f` holds or the deadline passes.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn packets_the_peer_refuses_are_dropped_and_counted_on_the_peer() {
    const N: u64 = 1000;
    const ROOM: usize = 8;
    let pool = pool(4096);
    let (a, a_ends) = RingPort::new("a", 1, 1024, 1024);
    // Nobody drains b: it takes ROOM packets and refuses the rest.
    let (b, b_ends) = RingPort::new("b", 1, 16, ROOM);
    let (a_counters, b_counters) = (a.counters(), b.counters());
    let mut bufs = Vec::new();
    assert_eq!(pool.alloc_bulk(&mut bufs, N as usize), N as usize);
    for (seq, mut p) in bufs.drain(..).enumerate() {
        fill(&mut p, 0, seq as u64);
        a_ends[0].inject.push(p).expect("ring has room");
    }
    let ports: Vec<Box<dyn Port>> = vec![Box::new(a), Box::new(b)];
    let engine = Engine::start(ports, &[[0, 1]], &[worker_core()]).expect("engine starts");
    wait_for("a to receive every packet", || a_counters.total().rx_packets == N);
    wait_for("the drops to be counted", || {
        let t = b_counters.total();
        t.tx_packets + t.tx_drops == N
    });
    let status = engine.status();
    drop(engine.stop());

    let (ta, tb) = (a_counters.total(), b_counters.total());
    assert_eq!((ta.rx_packets, ta.rx_bytes), (N, total_bytes(N)));
    assert_eq!(tb.tx_packets, ROOM as u64);
    assert_eq!(tb.tx_bytes, total_bytes(ROOM as u64));
    assert_eq!(tb.tx_drops, N - ROOM as u64, "refused packets are counted on the peer");
    assert_eq!((ta.tx_drops, ta.tx_packets, tb.rx_packets), (0, 0, 0));
    // The ones b took are the first ones, in order and intact.
    for seq in 0..ROOM as u64 {
        check(&b_ends[0].collect.pop().expect("packet"), 0, seq);
    }
    assert!(b_ends[0].collect.is_empty());
    // The status the control socket reads agrees.
    assert_eq!(status[1].name(), "b");
    assert_eq!(status[1].totals().tx_drops, N - ROOM as u64);
    assert!(status[0].link_up());
    // Every dropped buffer went back to the pool.
    drop(b_ends);
    drop(a_ends);
    assert_eq!(pool.outside_ring(), pool.in_thread_cache());
}

#[test]
fn queues_map_onto_the_peers_queues_modulo_its_count() {
    let pool = pool(4096);
    let (a, a_ends) = RingPort::new("a", 3, 64, 64);
    let (b, b_ends) = RingPort::new("b", 2, 64, 64);
    let mut bufs = Vec::new();
    pool.alloc_bulk(&mut bufs, 30);
    for (i, mut p) in bufs.drain(..).enumerate() {
        fill(&mut p, 0, i as u64);
        a_ends[i % 3].inject.push(p).expect("room");
    }
    let b_counters = b.counters();
    let ports: Vec<Box<dyn Port>> = vec![Box::new(a), Box::new(b)];
    let engine = Engine::start(ports, &[[0, 1]], &[worker_core()]).expect("engine starts");
    wait_for("30 packets on b", || b_counters.total().tx_packets == 30);
    drop(engine.stop());
    // a's queues 0 and 2 land on b's queue 0, a's queue 1 on b's queue 1.
    assert_eq!(b_ends[0].collect.len(), 20);
    assert_eq!(b_ends[1].collect.len(), 10);
    assert_eq!(b_counters.queue(0).snapshot().tx_packets, 20);
    assert_eq!(b_counters.queue(1).snapshot().tx_packets, 10);
}

#[test]
fn pairs_are_dealt_round_robin_and_unpaired_ports_stay_idle() {
    let mk = |n: &str| -> Box<dyn Port> { Box::new(RingPort::new(n, 1, 4, 4).0) };
    let ports = vec![mk("a"), mk("b"), mk("c"), mk("d"), mk("e")];
    let core = worker_core();
    let cores = [core, core];
    // Two workers may share a core: the engine does not forbid it, config does.
    let engine = Engine::start(ports, &[[0, 1], [3, 2]], &cores).expect("engine starts");
    let a = engine.assignments();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].xconnects, vec![["a".to_string(), "b".to_string()]]);
    assert_eq!(a[1].xconnects, vec![["d".to_string(), "c".to_string()]]);
    assert_eq!(engine.idle_ports(), vec!["e".to_string()]);
    assert_eq!(engine.status().len(), 5);
    assert_eq!(engine.stop().len(), 5);
}

#[test]
fn bad_cross_connects_are_rejected() {
    let mk = |n: &str| -> Box<dyn Port> { Box::new(RingPort::new(n, 1, 4, 4).0) };
    let core = worker_core();
    let cases: [(&[[usize; 2]], &[usize]); 4] =
        [(&[[0, 0]], &[core]), (&[[0, 5]], &[core]), (&[[0, 1], [1, 0]], &[core]), (&[], &[])];
    for (pairs, cores) in cases {
        let r = Engine::start(vec![mk("a"), mk("b")], pairs, cores);
        assert!(
            matches!(r, Err(EngineError::BadXconnect { .. } | EngineError::NoCores)),
            "{pairs:?} {cores:?}"
        );
    }
}

#[test]
fn runtime_changes_do_not_disturb_a_steady_pair() {
    use podwire::bridge::{BridgeSpec, VlanMode};
    use podwire::engine::OpError;
    const N: u64 = 50_000;
    const WINDOW: u64 = 256;
    let pool = pool(16384);
    let (a, a_ends) = RingPort::new("a", 1, 512, 512);
    let (b, b_ends) = RingPort::new("b", 1, 512, 512);
    let (a_counters, b_counters) = (a.counters(), b.counters());
    let ports: Vec<Box<dyn Port>> = vec![Box::new(a), Box::new(b)];
    let mut engine =
        Engine::start_with_bridges(ports, &[[0, 1]], &[], &[worker_core()], Some(&pool))
            .expect("engine starts");
    let free_at_start = pool.in_ring();

    // One direction, a -> b, with a window so that nothing is dropped for lack of room.
    let received = Arc::new(AtomicU64::new(0));
    let sender = {
        let (pool, ring, received) = (pool.clone(), a_ends[0].inject.clone(), received.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut seq = 0;
            while seq < N {
                assert!(start.elapsed() < DEADLINE, "sender stuck at {seq}");
                if seq - received.load(Ordering::Acquire) >= WINDOW {
                    std::thread::yield_now();
                    continue;
                }
                let Some(mut p) = pool.alloc() else {
                    std::thread::yield_now();
                    continue;
                };
                fill(&mut p, 0, seq);
                if let Err(p) = ring.push(p) {
                    drop(p);
                    std::thread::yield_now();
                    continue;
                }
                seq += 1;
            }
            pool.release_thread_cache();
        })
    };
    let collector = {
        let (ring, received) = (b_ends[0].collect.clone(), received.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut next = 0;
            while next < N {
                assert!(start.elapsed() < DEADLINE, "only {next} of {N} arrived");
                match ring.pop() {
                    Some(p) => {
                        check(&p, 0, next);
                        next += 1;
                        received.store(next, Ordering::Release);
                    }
                    None => std::thread::yield_now(),
                }
            }
        })
    };

    // Meanwhile: 50 ports come and go, through a bridge and cross-connects.
    let spec = BridgeSpec {
        name: "br0".into(),
        ports: Vec::new(),
        mac_age_secs: 300,
        mac_table_size: 1024,
    };
    engine.create_bridge(&spec).expect("bridge");
    for round in 0..5 {
        let names: Vec<String> = (0..10).map(|i| format!("p{round}-{i}")).collect();
        for n in &names {
            let port: Box<dyn Port> = Box::new(RingPort::new(n, 1, 64, 64).0);
            engine.add_port(port).map_err(|(e, _)| e).expect("add port");
        }
        for n in &names[..6] {
            engine.bridge_add_port("br0", n, VlanMode::Access(7)).expect("join");
        }
        engine.add_xconnect(&names[6], &names[7]).expect("xconnect");
        assert!(matches!(engine.add_xconnect(&names[6], &names[8]), Err(OpError::Conflict(_))));
        assert!(matches!(engine.delete_bridge("br0"), Err(OpError::Conflict(_))));
        assert_eq!(engine.bridge("br0").unwrap().ports().len(), 6);
        engine.bridge_remove_port("br0", &names[0]).expect("leave");
        engine.remove_xconnect(&names[7]).expect("unxconnect");
        for n in &names {
            drop(engine.remove_port(n).expect("remove"));
        }
        assert!(matches!(engine.remove_port(&names[0]), Err(OpError::NotFound(_))));
    }
    engine.delete_bridge("br0").expect("empty bridge deleted");
    sender.join().expect("sender");
    collector.join().expect("collector");
    assert_eq!(engine.status().len(), 2);
    assert_eq!(engine.xconnects(), vec![["a".to_string(), "b".to_string()]]);
    let ports = engine.stop();
    assert_eq!(ports.len(), 2);
    drop(ports);
    let (ta, tb) = (a_counters.total(), b_counters.total());
    assert_eq!((ta.rx_packets, tb.tx_packets, tb.tx_drops), (N, N, 0));
    assert_eq!(pool.in_ring(), free_at_start, "every buffer is back in the pool");
}

#[test]
fn new_units_and_bridge_ports_go_to_the_least_loaded_worker() {
    use podwire::bridge::{BridgeSpec, VlanMode};
    let mk = |n: &str| -> Box<dyn Port> { Box::new(RingPort::new(n, 1, 4, 4).0) };
    let pool = pool(2048);
    let core = worker_core();
    let mut engine = Engine::start_with_bridges(
        vec![mk("a"), mk("b")],
        &[[0, 1]],
        &[],
        &[core, core],
        Some(&pool),
    )
    .expect("engine starts");
    let spec = |name: &str| BridgeSpec {
        name: name.into(),
        ports: Vec::new(),
        mac_age_secs: 300,
        mac_table_size: 64,
    };
    // Worker 0 polls a and b; worker 1 nothing: the first bridge goes to worker 1.
    engine.create_bridge(&spec("br1")).unwrap();
    let a = engine.assignments();
    assert_eq!(a[1].bridges, ["br1"], "{a:?}");
    for n in ["p1", "p2", "p3"] {
        engine.add_port(mk(n)).map_err(|(e, _)| e).unwrap();
        engine.bridge_add_port("br1", n, VlanMode::default()).unwrap();
    }
    // Each port went to the least-loaded worker, the bridge's own on a tie: p1 and p2
    // to worker 1 (0 and 1 ports against 2), p3 too (2 against 2, and worker 1 runs
    // the bridge). Worker 1 now polls 3 ports, worker 0 two, so the next bridge goes
    // to worker 0.
    engine.create_bridge(&spec("br2")).unwrap();
    let a = engine.assignments();
    assert_eq!(a[0].bridges, ["br2"], "{a:?}");
    engine.add_port(mk("q1")).map_err(|(e, _)| e).unwrap();
    engine.add_port(mk("q2")).map_err(|(e, _)| e).unwrap();
    engine.add_xconnect("q1", "q2").unwrap();
    let a = engine.assignments();
    assert_eq!(a[0].xconnects.len() + a[1].xconnects.len(), 2, "{a:?}");
    assert_eq!(engine.stop().len(), 7);
}

/// An Ethernet frame `dst` <- `src` carrying `seq` (60 bytes).
fn eth(pool: &Mempool, dst: MacAddr, src: MacAddr, seq: u64) -> PacketBuf {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f[14..22].copy_from_slice(&seq.to_le_bytes());
    let mut b = pool.alloc().expect("buffer");
    assert!(b.copy_from(&f));
    b
}

#[test]
fn a_bridge_over_two_workers_crosses_in_order_and_frees_what_a_departed_port_left() {
    use podwire::bridge::{BridgeSpec, VlanMode};
    const N: u64 = 20_000;
    let pool = pool(8192);
    let free_at_start = pool.in_ring();
    let core = worker_core();
    let mut engine =
        Engine::start_with_bridges(Vec::new(), &[], &[], &[core, core], Some(&pool)).unwrap();
    let spec =
        BridgeSpec { name: "br".into(), ports: Vec::new(), mac_age_secs: 300, mac_table_size: 64 };
    engine.create_bridge(&spec).unwrap();
    let (a, a_ends) = RingPort::new("a", 1, 4096, 4096);
    let (b, b_ends) = RingPort::new("b", 1, 4096, 4096);
    let (c, c_ends) = RingPort::new("c", 1, 4096, 4096);
    let macs = [a.mac, b.mac, c.mac];
    for p in [a, b, c] {
        let name = p.name.clone();
        engine.add_port(Box::new(p)).map_err(|(e, _)| e).unwrap();
        engine.bridge_add_port("br", &name, VlanMode::default()).unwrap();
    }
    // a and c on the home worker, b on the other.
    let workers = engine.assignments();
    assert_eq!(workers[0].bridges, ["br"]);
    assert_eq!(workers[1].bridges, ["br"], "{workers:?}");
    let bcast = MacAddr([0xff; 6]);
    // b announces itself (a broadcast crossing to a and c), then a sends N frames
    // to b: all cross to the other worker, in order; none reaches c.
    b_ends[0].inject.push(eth(&pool, bcast, macs[1], 0)).unwrap();
    wait_for("the broadcast to reach a and c", || {
        a_ends[0].collect.len() == 1 && c_ends[0].collect.len() == 1
    });
    // The sender keeps at most 256 frames ahead of what b collected: the ring between
    // the workers (1024) never fills, so every frame must arrive.
    let received = Arc::new(AtomicU64::new(0));
    let sender = {
        let (inject, pool, [a, b, _]) = (a_ends[0].inject.clone(), pool.clone(), macs);
        let received = received.clone();
        std::thread::spawn(move || {
            for seq in 0..N {
                if received.load(Ordering::Acquire) == u64::MAX {
                    return;
                }
                while seq >= received.load(Ordering::Acquire).saturating_add(256) {
                    std::thread::yield_now();
                }
                let mut p = eth(&pool, b, a, seq);
                loop {
                    match inject.push(p) {
                        Ok(()) => break,
                        Err(back) => {
                            p = back;
                            std::thread::yield_now();
                        }
                    }
                }
            }
        })
    };
    let mut next = 0u64;
    let start = Instant::now();
    while next < N / 2 {
        assert!(start.elapsed() < DEADLINE, "only {next} of {N} arrived");
        match b_ends[0].collect.pop() {
            Some(p) => {
                let seq = u64::from_le_bytes(p.data()[14..22].try_into().unwrap());
                assert_eq!(seq, next, "lost or out of order");
                next += 1;
                received.store(next, Ordering::Release);
            }
            None => std::thread::yield_now(),
        }
    }
    // b leaves under traffic (the sender is let loose), then a and c go too; every
    // buffer comes back.
    let stats = engine.bridge("br").unwrap().counters();
    assert_eq!(stats.cross_worker_drops.load(Ordering::Relaxed), 0, "the ring never filled");
    assert!(c_ends[0].collect.len() == 1, "unicast to a learned address leaked to c");
    drop(engine.remove_port("b").expect("remove b"));
    received.store(u64::MAX, Ordering::Release);
    sender.join().unwrap();
    let stats = engine.bridge("br").unwrap().counters();
    let lost = stats.cross_worker_drops.load(Ordering::Relaxed);
    eprintln!("{lost} frames for b were in flight or found the ring full");
    for p in ["a", "c"] {
        drop(engine.remove_port(p).expect("remove"));
    }
    let ports = engine.stop();
    assert!(ports.is_empty());
    drop((a_ends, b_ends, c_ends));
    pool.release_thread_cache();
    assert_eq!(pool.in_ring(), free_at_start, "every buffer is back in the pool");
}
