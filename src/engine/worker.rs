//! A poll-mode worker: one thread pinned to one core, running its cross-connects and
//! bridges to completion in a loop until told to stop, and applying the commands of
//! its [`Inbox`] between two rounds (see [`super::command`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use podwire_driver::{Mempool, PacketBuf, Port, BURST_SIZE};

use super::command::{Command, Inbox, Reply};
use super::cross::{Inbound, Outbound};
use super::poll_stats::{PollTally, WorkerPollStats};
use super::xconnect::XconnectPair;
use crate::bridge::Bridge;

/// Poll rounds between two publications of link state and MAC.
const STATUS_EVERY_ROUNDS: u32 = 1024;
/// Poll rounds between two bridge maintenance steps (clock, aging, table copies).
const MAINTAIN_EVERY_ROUNDS: u32 = 256;
/// How long a worker with nothing to run sleeps between two looks at its inbox.
const IDLE_SLEEP: std::time::Duration = std::time::Duration::from_micros(200);

/// Pins the calling thread to `core`.
pub(crate) fn pin_to_core(core: usize) -> std::io::Result<()> {
    if core >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: core is below the capacity of the set (checked above).
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The body of a worker thread: pins itself, reports the outcome on `ready`, then
/// polls until `stop` is set. Returns the ports so that the caller decides when they
/// are dropped (their sockets are removed then).
pub(crate) fn run(
    core: usize,
    mut pairs: Vec<XconnectPair>,
    mut bridges: Vec<Bridge>,
    stop: Arc<AtomicBool>,
    links: WorkerLinks,
    ready: mpsc::Sender<(usize, std::io::Result<()>)>,
) -> Vec<Box<dyn Port>> {
    let WorkerLinks { inbox, cache, polls, mut cross } = links;
    let pinned = pin_to_core(core);
    let ok = pinned.is_ok();
    let _ = ready.send((core, pinned));
    if ok {
        let mut tally = PollTally::new(&polls);
        poll_loop(&mut pairs, &mut bridges, &stop, &inbox, &cache, &mut tally, &mut cross);
    }
    // Frames still in the rings are dropped with them (their buffers go back to
    // the pool) once both ends are gone.
    drop(cross);
    if let Some(pool) = &cache.pool {
        pool.release_thread_cache();
        cache.held.store(0, Ordering::Relaxed);
    }
    for p in &pairs {
        p.publish_status();
    }
    for b in &bridges {
        b.publish_status();
    }
    let mut ports: Vec<Box<dyn Port>> = pairs.into_iter().flat_map(|p| p.ports).collect();
    ports.extend(bridges.into_iter().flat_map(Bridge::into_ports));
    ports
}

/// What a worker shares with the engine besides its ports: its command inbox, its
/// mempool cache gauge and its poll counters.
pub(crate) struct WorkerLinks {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) cache: CacheGauge,
    pub(crate) polls: Arc<WorkerPollStats>,
    pub(crate) cross: CrossLinks,
}

/// A worker's rings to and from the other workers (see [`super::cross`]).
pub(crate) struct CrossLinks {
    /// `tx[j]`: the ring to worker `j` (`None` for itself).
    pub(crate) tx: Vec<Option<Outbound>>,
    /// One ring from each other worker.
    pub(crate) rx: Vec<Inbound>,
}

impl CrossLinks {
    /// Takes up to a burst from every inbound ring and hands each frame to this
    /// worker's part of its bridge, which transmits it; a frame for a bridge this
    /// worker no longer runs is dropped (its buffer goes back to the pool). Returns
    /// the frames taken.
    #[inline]
    fn drain(&mut self, bridges: &mut [Bridge]) -> usize {
        let mut taken = 0;
        for rx in self.rx.iter_mut() {
            if rx.is_empty() {
                continue;
            }
            let mut at = 0usize;
            let mut n = 0;
            while n < BURST_SIZE {
                let Some(msg) = rx.pop() else { break };
                n += 1;
                if bridges.get(at).is_none_or(|b| b.id() != msg.bridge) {
                    match bridges.iter().position(|b| b.id() == msg.bridge) {
                        Some(i) => at = i,
                        None => continue,
                    }
                }
                bridges[at].deliver(msg);
            }
            for b in bridges.iter_mut() {
                b.flush_delivered();
            }
            taken += n;
        }
        taken
    }
}

/// Where a worker publishes how many buffers of the mempool its thread cache holds
/// (they are free, but only this thread can hand them out), so that the control API
/// can report the pool's free buffers exactly.
pub(crate) struct CacheGauge {
    pub(crate) pool: Option<Mempool>,
    pub(crate) held: Arc<AtomicUsize>,
}

impl CacheGauge {
    fn publish(&self) {
        if let Some(pool) = &self.pool {
            self.held.store(pool.in_thread_cache(), Ordering::Relaxed);
        }
    }
}

/// The run-to-completion loop. Allocates nothing, locks nothing and makes no
/// syscall per packet; the one burst vector is allocated here, once.
fn poll_loop(
    pairs: &mut Vec<XconnectPair>,
    bridges: &mut Vec<Bridge>,
    stop: &AtomicBool,
    inbox: &Inbox,
    cache: &CacheGauge,
    tally: &mut PollTally<'_>,
    cross: &mut CrossLinks,
) {
    let mut buf: Vec<PacketBuf> = Vec::with_capacity(BURST_SIZE);
    let mut round: u32 = 0;
    for p in pairs.iter() {
        p.publish_status();
    }
    for b in bridges.iter_mut() {
        b.publish_status();
        b.maintain();
    }
    while !stop.load(Ordering::Relaxed) {
        if inbox.has_pending() {
            for (cmd, reply) in inbox.take() {
                let answer = apply(cmd, pairs, bridges);
                // A control thread that gave up waiting dropped its receiver: the
                // ports in the answer are dropped here, which closes them.
                let _ = reply.send(answer);
            }
        }
        if pairs.is_empty() && bridges.is_empty() {
            // Frames sent before this worker's last bridge part went: freed here.
            cross.drain(bridges);
            tally.record(false);
            cache.publish();
            std::thread::sleep(IDLE_SLEEP);
            continue;
        }
        let mut received = 0;
        for pair in pairs.iter_mut() {
            received += pair.poll(&mut buf);
        }
        for b in bridges.iter_mut() {
            received += b.poll(&mut buf, &mut cross.tx);
        }
        received += cross.drain(bridges);
        tally.record(received != 0);
        round = round.wrapping_add(1);
        if round.is_multiple_of(MAINTAIN_EVERY_ROUNDS) {
            for b in bridges.iter_mut() {
                b.maintain();
            }
        }
        if round.is_multiple_of(STATUS_EVERY_ROUNDS) {
            cache.publish();
            for p in pairs.iter() {
                p.publish_status();
            }
            for b in bridges.iter() {
                b.publish_status();
            }
        }
        if received == 0 {
            std::hint::spin_loop();
        }
    }
}

/// Applies one command between two poll rounds.
fn apply(cmd: Command, pairs: &mut Vec<XconnectPair>, bridges: &mut Vec<Bridge>) -> Reply {
    let what = cmd.describe();
    match cmd {
        Command::AddXconnect(pair) => {
            pair.publish_status();
            pairs.push(pair);
            Reply::Ports(Vec::new())
        }
        Command::RemoveXconnect { port } => {
            match pairs.iter().position(|p| p.status.iter().any(|s| s.name() == port)) {
                Some(i) => {
                    let pair = pairs.remove(i);
                    pair.publish_status();
                    Reply::Ports(pair.ports.into())
                }
                None => Reply::Rejected(format!("{what}: not run by this worker"), Vec::new()),
            }
        }
        Command::AddBridge(mut b) => {
            b.publish_status();
            b.maintain();
            bridges.push(b);
            Reply::Ports(Vec::new())
        }
        Command::RemoveBridge { name } => match bridges.iter().position(|b| b.name() == name) {
            Some(i) => Reply::Ports(bridges.remove(i).into_ports()),
            None => Reply::Rejected(format!("{what}: not run by this worker"), Vec::new()),
        },
        Command::AddMember { bridge, port, status, id, mode } => {
            match bridges.iter_mut().find(|b| b.name() == bridge) {
                Some(b) => {
                    status.publish(port.as_ref());
                    b.add_member(port, status, id, &mode);
                    Reply::Ports(Vec::new())
                }
                None => Reply::Rejected(format!("{what}: not run by this worker"), vec![port]),
            }
        }
        Command::AddRemote { bridge, remote } => {
            match bridges.iter_mut().find(|b| b.name() == bridge) {
                Some(b) => {
                    b.add_remote(remote);
                    Reply::Ports(Vec::new())
                }
                None => Reply::Rejected(format!("{what}: not run by this worker"), Vec::new()),
            }
        }
        Command::RemoveMember { bridge, port, id } => {
            let found = bridges.iter_mut().find(|b| b.name() == bridge);
            match found.and_then(|b| b.remove_member(id)) {
                Some(p) => Reply::Ports(p.into_iter().collect()),
                None => Reply::Rejected(
                    format!("{what}: port {port} is not in this worker's part"),
                    Vec::new(),
                ),
            }
        }
    }
}
