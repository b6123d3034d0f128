//! A poll-mode worker: one thread pinned to one core, running its cross-connects to
//! completion in a loop until told to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use podwire_driver::{PacketBuf, Port, BURST_SIZE};

use super::poll_stats::{PollTally, WorkerPollStats};
use super::xconnect::XconnectPair;
use crate::bridge::Bridge;

/// Poll rounds between two publications of link state and MAC.
const STATUS_EVERY_ROUNDS: u32 = 1024;
/// Poll rounds between two bridge maintenance steps (clock, aging, table copies).
const MAINTAIN_EVERY_ROUNDS: u32 = 256;

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
    ready: mpsc::Sender<(usize, std::io::Result<()>)>,
    polls: Arc<WorkerPollStats>,
) -> Vec<Box<dyn Port>> {
    let pinned = pin_to_core(core);
    let ok = pinned.is_ok();
    let _ = ready.send((core, pinned));
    if ok {
        poll_loop(&mut pairs, &mut bridges, &stop, &mut PollTally::new(&polls));
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

/// The run-to-completion loop. Allocates nothing, locks nothing and makes no
/// syscall per packet; the one burst vector is allocated here, once.
fn poll_loop(
    pairs: &mut [XconnectPair],
    bridges: &mut [Bridge],
    stop: &AtomicBool,
    tally: &mut PollTally<'_>,
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
        let mut received = 0;
        for pair in pairs.iter_mut() {
            received += pair.poll(&mut buf);
        }
        for b in bridges.iter_mut() {
            received += b.poll(&mut buf);
        }
        tally.record(received != 0);
        round = round.wrapping_add(1);
        if round.is_multiple_of(MAINTAIN_EVERY_ROUNDS) {
            for b in bridges.iter_mut() {
                b.maintain();
            }
        }
        if round.is_multiple_of(STATUS_EVERY_ROUNDS) {
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
