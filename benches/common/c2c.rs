//! Core-to-core probe (`#[path]`-included by pvp.rs): the round-trip time of one
//! cache line bounced between two pinned threads.
//!
//! On this kind of VM the host moves the two virtual CPUs between placements that
//! are near (a cache line crosses in tens of ns) and far (several hundred ns), a few
//! times a minute. A PVP loopback moves several cache lines per packet between the
//! switch's core and the pod's, so its throughput roughly halves in the far
//! placement, for every switch. The harness probes before and after each run so that
//! pairs taken in different placements can be told apart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Round trips at or above this are the far placement (measured: near 42-132 ns,
/// far 347-482 ns).
pub const FAR_NS: f64 = 250.0;

#[repr(align(128))]
struct Line(AtomicU64);

fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays inside it for cpu < CPU_SETSIZE
    // (checked), and sched_setaffinity only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::other(format!("cpu {cpu} out of range")));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Median round trip in ns of a cache line between threads pinned on `a` and `b`
/// (5 rounds of 20,000 round trips; gives up after `limit`, e.g. when one of the
/// cores is held by a real-time task, and answers `None`). The calling thread's own
/// CPU affinity is left alone (processes it starts later inherit it).
pub fn round_trip_ns(a: usize, b: usize, limit: Duration) -> Option<f64> {
    const ROUNDS: usize = 5;
    const TRIPS: u64 = 20_000;
    let line = Arc::new(Line(AtomicU64::new(0)));
    let give_up = Arc::new(AtomicBool::new(false));
    let (l2, g2) = (line.clone(), give_up.clone());
    let echo = std::thread::spawn(move || -> bool {
        if pin(b).is_err() {
            g2.store(true, Ordering::Relaxed);
            return false;
        }
        let mut want = 1u64;
        while want < 2 * TRIPS * ROUNDS as u64 {
            while l2.0.load(Ordering::Acquire) != want {
                if g2.load(Ordering::Relaxed) {
                    return false;
                }
                std::hint::spin_loop();
            }
            l2.0.store(want + 1, Ordering::Release);
            want += 2;
        }
        true
    });
    let (l1, g1) = (line, give_up);
    let ping = std::thread::spawn(move || -> Option<Vec<f64>> {
        let started = Instant::now();
        if pin(a).is_err() {
            g1.store(true, Ordering::Relaxed);
            return None;
        }
        let mut samples = Vec::with_capacity(ROUNDS);
        let mut next = 0u64;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for _ in 0..TRIPS {
                l1.0.store(next + 1, Ordering::Release);
                let mut spins = 0u32;
                while l1.0.load(Ordering::Acquire) != next + 2 {
                    spins = spins.wrapping_add(1);
                    // The clock is read rarely: it would lengthen the round trip.
                    if spins.is_multiple_of(4096)
                        && (g1.load(Ordering::Relaxed) || started.elapsed() > limit)
                    {
                        g1.store(true, Ordering::Relaxed);
                        return None;
                    }
                    std::hint::spin_loop();
                }
                next += 2;
            }
            samples.push(t.elapsed().as_nanos() as f64 / TRIPS as f64);
        }
        Some(samples)
    });
    let samples = ping.join().ok().flatten();
    let echoed = echo.join().unwrap_or(false);
    let mut samples = samples.filter(|_| echoed)?;
    samples.sort_by(|x, y| x.total_cmp(y));
    Some(samples[ROUNDS / 2])
}

/// "near" / "far" / "?" for a probe result.
pub fn placement(ns: Option<f64>) -> &'static str {
    match ns {
        Some(v) if v >= FAR_NS => "far",
        Some(_) => "near",
        None => "?",
    }
}
