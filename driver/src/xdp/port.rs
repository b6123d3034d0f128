//! [`AfXdpPort`]: a kernel netdev's queues as a podwire [`Port`], one AF_XDP socket per
//! queue, all sharing one UMEM (the mempool, see [`super::umem`]).
//!
//! # Threads
//! The worker owns the port and is the only one touching rings and the frame table.
//! A small monitor thread (not on the datapath) checks every 200 ms that the
//! interface still exists and is up and running, and reads the kernel's per-socket
//! drop counters (`XDP_STATISTICS`). It publishes them through atomics; the worker
//! folds the kernel's drops into its own `rx_drops` (and invalid descriptors into
//! `errors`) with one relaxed load per burst, so every counter keeps one writer.
//!
//! # Teardown
//! Dropping the port stops the monitor, detaches the program (closing the BPF link),
//! closes the sockets and only then returns the buffers the kernel held to the pool.
//!
//! # Known limits
//! - An interface that disappears leaves the port down for good (the sockets are
//!   unbound by the kernel); recreating the port (restarting podwire) is needed.
//! - Frames larger than one chunk (1920 bytes by default) are dropped by the kernel
//!   (no multi-buffer support yet): jumbo frames need a larger chunk.
//! - veth and other drivers that leave checksums to the hardware deliver
//!   CHECKSUM_PARTIAL packets: the endpoints must compute checksums
//!   (`ethtool -K <dev> tx off` on the far side).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::bpf;
use super::link::{AttachedMode, XdpAttachment, XdpMode};
use super::rings::XdpDesc;
use super::socket::{statistics, UmemSource, XskSocket, ZeroCopy};
use super::umem::{FrameState, FrameTable, UmemLayout, ADDR_MASK, OFFSET_SHIFT};
use crate::error::{DriverError, Result};
use crate::mempool::{Mempool, PacketBuf};
use crate::port::{bump, MacAddr, Port, PortCounters, PortInfo};

/// Entries of each ring of each socket.
pub const DEFAULT_RING_SIZE: u32 = 2048;
/// Most queues a port takes.
pub const MAX_QUEUES: u16 = 64;
/// The fill ring is topped up when at least this many entries are free.
const FILL_BATCH: u32 = 32;
/// How often the monitor thread looks at the interface and the kernel counters.
const MONITOR_INTERVAL: Duration = Duration::from_millis(200);

/// Settings of an AF_XDP port.
#[derive(Debug, Clone)]
pub struct AfXdpConfig {
    /// Port name.
    pub name: String,
    /// Kernel interface.
    pub interface: String,
    /// Queues taken (queue ids 0..queues), one socket each.
    pub queues: u16,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Zero-copy request.
    pub zero_copy: ZeroCopy,
    /// Whether a foreign XDP program on the interface may be replaced.
    pub replace_program: bool,
    /// Entries of each ring (power of two).
    pub ring_size: u32,
}

struct Queue {
    sock: XskSocket,
    /// Buffers currently given to the fill ring (or received, not read yet).
    in_fill: u32,
    /// Buffers currently in the tx ring (or sent, not completed yet).
    in_tx: u32,
    fill_target: u32,
    scratch: Vec<PacketBuf>,
    kernel_drops_seen: u64,
    kernel_errors_seen: u64,
}

/// State shared with the monitor thread.
#[derive(Debug)]
struct Shared {
    link_up: AtomicBool,
    stop: AtomicBool,
    /// Per queue: kernel rx_dropped + rx_ring_full.
    kernel_drops: Box<[AtomicU64]>,
    /// Per queue: rx_invalid_descs + tx_invalid_descs.
    kernel_errors: Box<[AtomicU64]>,
}

/// A port on the queues of a kernel interface through AF_XDP.
pub struct AfXdpPort {
    name: String,
    ifname: String,
    mac: MacAddr,
    pool: Mempool,
    layout: UmemLayout,
    queues: Vec<Queue>,
    frames: FrameTable,
    counters: Arc<PortCounters>,
    shared: Arc<Shared>,
    monitor: Option<JoinHandle<()>>,
    attachment: Option<XdpAttachment>,
    map: OwnedFd,
    _prog: OwnedFd,
    zero_copy: bool,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("name", &self.name)
            .field("interface", &self.ifname)
            .field("queues", &self.queues.len())
            .field("mode", &self.xdp_mode())
            .field("zero_copy", &self.zero_copy)
            .finish()
    }
}

fn if_nametoindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// IFF_UP and IFF_RUNNING of interface `ifindex`, or `None` if it does not exist.
fn link_flags(ifindex: u32) -> Option<(bool, bool)> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: name has IF_NAMESIZE bytes, as if_indextoname requires.
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return None;
    }
    // SAFETY: plain socket(2) call.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return None;
    }
    // SAFETY: s is a new socket we own.
    let s = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    // SAFETY: all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name = name;
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of a valid ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return None;
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags } as libc::c_int;
    Some((flags & libc::IFF_UP != 0, flags & libc::IFF_RUNNING != 0))
}

fn rx_queue_count(ifname: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues")).ok()?;
    Some(
        dir.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count() as u32,
    )
}

fn read_mac(ifname: &str) -> Option<MacAddr> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).ok()?.trim().parse().ok()
}

impl AfXdpPort {
    /// Loads and attaches the redirect program, creates and binds one socket per
    /// queue on the UMEM made of `pool`'s memory, and starts the monitor thread.
    pub fn new(cfg: AfXdpConfig, pool: Mempool) -> Result<Self> {
        let inv = |m: String| DriverError::InvalidArgument(m);
        if cfg.queues == 0 || cfg.queues > MAX_QUEUES {
            return Err(inv(format!("queues = {} (1 to {MAX_QUEUES})", cfg.queues)));
        }
        if !cfg.ring_size.is_power_of_two() || !(64..=1 << 15).contains(&cfg.ring_size) {
            return Err(inv(format!(
                "ring size {} (a power of two from 64 to 32768)",
                cfg.ring_size
            )));
        }
        let ifname = cfg.interface.clone();
        let Some(ifindex) = if_nametoindex(&ifname) else {
            return Err(inv(format!("interface {ifname:?} does not exist")));
        };
        let have = rx_queue_count(&ifname).unwrap_or(1).max(1);
        if u32::from(cfg.queues) > have {
            return Err(inv(format!(
                "interface {ifname} has {have} rx queue(s) but the port asks for {} (lower \
                 `queues`, or raise the interface's with `ethtool -L {ifname} combined {}`)",
                cfg.queues, cfg.queues
            )));
        }
        let (up, running) = link_flags(ifindex).unwrap_or((false, false));
        if !up {
            tracing::warn!(port = %cfg.name, interface = %ifname, "interface is down: the port stays down until it is up");
        }
        let mac = read_mac(&ifname).unwrap_or_default();
        let layout = UmemLayout::for_pool(&pool)?;

        let map = bpf::create_xskmap(have.max(u32::from(cfg.queues)))
            .map_err(|e| DriverError::io("create XSKMAP (bpf BPF_MAP_CREATE; needs root)", e))?;
        let prog = bpf::load_redirect_program(&map).map_err(|(e, log)| {
            DriverError::Unsupported(format!("load XDP redirect program: {e}; verifier: {log}"))
        })?;

        XdpAttachment::clear_foreign(ifindex, &ifname, cfg.replace_program)
            .map_err(|e| DriverError::Unsupported(e.to_string()))?;
        // Sockets first (so that the program never redirects to a queue without one),
        // then the map entries, then the attach.
        let ring = cfg.ring_size;
        let mut socks: Vec<XskSocket> = Vec::with_capacity(cfg.queues as usize);
        for q in 0..u32::from(cfg.queues) {
            let umem = match socks.first() {
                None => UmemSource::Register(layout),
                Some(first) => UmemSource::Shared(first.fd().as_raw_fd()),
            };
            let s = XskSocket::new(ifindex, q, umem, ring, cfg.zero_copy).map_err(|e| match e {
                DriverError::Io { what, source } => DriverError::Io {
                    what,
                    source: std::io::Error::new(
                        source.kind(),
                        format!("{ifname} queue {q}: {source}"),
                    ),
                },
                e => e,
            })?;
            bpf::xskmap_set(&map, q, s.fd().as_raw_fd())
                .map_err(|e| DriverError::io("insert socket into XSKMAP", e))?;
            socks.push(s);
        }
        let zero_copy = socks[0].is_zero_copy();
        let attachment = XdpAttachment::attach(&prog, ifindex, &ifname, cfg.xdp_mode)
            .map_err(|e| DriverError::Unsupported(e.to_string()))?;
        tracing::info!(
            port = %cfg.name,
            interface = %ifname,
            queues = cfg.queues,
            xdp_mode = attachment.mode().as_str(),
            attach = if attachment.is_link() { "bpf-link" } else { "netlink" },
            zero_copy,
            chunk = layout.chunk_size,
            "AF_XDP port ready ({} XDP, {} mode)",
            attachment.mode().as_str(),
            if zero_copy { "zero-copy" } else { "copy" }
        );

        let slots = pool.config().count as usize;
        // Keep the fill ring (2 * ring entries) nearly full: on veth, forwarding rose
        // from 0.45 to 0.52 Mpps going from 512 to 4000 buffers in it. At most a
        // quarter of the pool goes to the fill rings of one port.
        let fill_target = (2 * ring - FILL_BATCH)
            .min((slots / (4 * cfg.queues as usize)).max(FILL_BATCH as usize * 2) as u32);
        let shared = Arc::new(Shared {
            link_up: AtomicBool::new(up && running),
            stop: AtomicBool::new(false),
            kernel_drops: (0..cfg.queues).map(|_| AtomicU64::new(0)).collect(),
            kernel_errors: (0..cfg.queues).map(|_| AtomicU64::new(0)).collect(),
        });
        let fds: Vec<OwnedFd> = socks
            .iter()
            .map(|s| s.fd().try_clone())
            .collect::<std::io::Result<_>>()
            .map_err(|e| DriverError::io("dup AF_XDP socket for the monitor", e))?;
        let counters = PortCounters::new(cfg.queues);
        let monitor = {
            let shared = shared.clone();
            let name = cfg.name.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name(format!("xdp-mon-{}", cfg.name))
                .spawn(move || monitor(name, ifindex, fds, shared, counters))
                .map_err(|e| DriverError::io("spawn AF_XDP monitor thread", e))?
        };
        let queues = socks
            .into_iter()
            .map(|sock| Queue {
                sock,
                in_fill: 0,
                in_tx: 0,
                fill_target,
                scratch: Vec::with_capacity(ring as usize),
                kernel_drops_seen: 0,
                kernel_errors_seen: 0,
            })
            .collect();
        let mut port = Self {
            name: cfg.name,
            ifname,
            mac,
            layout,
            queues,
            frames: FrameTable::new(slots),
            pool,
            counters,
            shared,
            monitor: Some(monitor),
            attachment: Some(attachment),
            map,
            _prog: prog,
            zero_copy,
        };
        for q in 0..port.queues.len() {
            port.refill(q);
        }
        Ok(port)
    }

    /// The XDP mode the program runs in.
    pub fn xdp_mode(&self) -> Option<AttachedMode> {
        self.attachment.as_ref().map(|a| a.mode())
    }

    /// Whether the sockets run in zero-copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.ifname
    }

    /// Gives free buffers to queue `q`'s fill ring, up to its target.
    #[inline]
    fn refill(&mut self, q: usize) {
        let queue = &mut self.queues[q];
        let want = queue.fill_target.saturating_sub(queue.in_fill);
        if want < FILL_BATCH {
            return;
        }
        let free = queue.sock.fill.prod_free(want);
        let n = want.min(free);
        if n == 0 {
            return;
        }
        queue.scratch.clear();
        let got = self.pool.alloc_bulk(&mut queue.scratch, n as usize) as u32;
        let mut produced = 0;
        for buf in queue.scratch.drain(..) {
            let off = buf.into_raw();
            let Some((idx, _)) = self.pool.slot_containing(off as usize) else { continue };
            if self.frames.transition(idx, FrameState::Free, FrameState::Fill) {
                queue.sock.fill.prod_write(produced, off as u64);
                produced += 1;
            }
        }
        debug_assert_eq!(produced, got);
        queue.sock.fill.prod_submit(produced);
        queue.in_fill += produced;
        if queue.sock.fill.needs_wakeup() {
            queue.sock.kick_rx();
        }
    }

    /// Returns completed tx buffers of queue `q` to the pool.
    #[inline]
    fn reap_completions(&mut self, q: usize) {
        let queue = &mut self.queues[q];
        if queue.in_tx == 0 {
            return;
        }
        let n = queue.sock.comp.cons_peek(queue.sock.comp.size());
        let mut bad = 0;
        for i in 0..n {
            let addr = queue.sock.comp.cons_read(i);
            let base = (addr & ADDR_MASK) as usize;
            match self.pool.slot_containing(base) {
                Some((idx, slot_off))
                    if slot_off as usize == base
                        && self.frames.transition(idx, FrameState::Tx, FrameState::Free) =>
                {
                    // SAFETY: the slot was handed out with into_raw when it went to
                    // the tx ring (state Tx), and the kernel is done with it: it is
                    // turned back exactly once (the state is now Free).
                    drop(unsafe { self.pool.buf_from_raw(slot_off, 0, 0) });
                    queue.in_tx -= 1;
                }
                _ => bad += 1,
            }
        }
        queue.sock.comp.cons_release(n);
        if bad > 0 {
            bump(&self.counters.queue(q as u16).errors, bad);
        }
    }

    /// Folds the kernel's drop counters published by the monitor into queue `q`'s.
    #[inline]
    fn fold_kernel_counters(&mut self, q: usize) {
        let queue = &mut self.queues[q];
        let d = self.shared.kernel_drops[q].load(Ordering::Relaxed);
        if d != queue.kernel_drops_seen {
            bump(&self.counters.queue(q as u16).rx_drops, d.wrapping_sub(queue.kernel_drops_seen));
            queue.kernel_drops_seen = d;
        }
        let e = self.shared.kernel_errors[q].load(Ordering::Relaxed);
        if e != queue.kernel_errors_seen {
            bump(&self.counters.queue(q as u16).errors, e.wrapping_sub(queue.kernel_errors_seen));
            queue.kernel_errors_seen = e;
        }
    }

    /// Turns an rx descriptor into a buffer, or `None` (counted) when the kernel
    /// returned something this port did not give it.
    #[inline]
    fn take_rx(&mut self, d: XdpDesc) -> std::result::Result<PacketBuf, bool> {
        let data = (d.addr & ADDR_MASK).wrapping_add(d.addr >> OFFSET_SHIFT) as usize;
        let Some((idx, slot_off)) = self.pool.slot_containing(data) else { return Err(false) };
        if !self.frames.transition(idx, FrameState::Fill, FrameState::Free) {
            return Err(false);
        }
        let data_off = data - slot_off as usize;
        let len = d.len as usize;
        let ok = data_off + len <= self.layout.chunk_size as usize && len > 0;
        // SAFETY: the slot was given to the fill ring with into_raw (state was Fill)
        // and the kernel handed it back in this rx descriptor; it is turned back
        // exactly once (state is now Free). data_off + len lies inside the chunk,
        // which lies inside the slot (chunk_size <= slot size).
        let buf = unsafe {
            self.pool.buf_from_raw(
                slot_off,
                if ok { data_off as u16 } else { 0 },
                if ok { len as u16 } else { 0 },
            )
        };
        if ok {
            Ok(buf)
        } else {
            Err(true)
        }
    }
}

impl Port for AfXdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> PortInfo {
        PortInfo { kind: "af-xdp", mac: self.mac, queues: self.queues.len() as u16 }
    }

    fn link_up(&self) -> bool {
        self.shared.link_up.load(Ordering::Relaxed)
    }

    #[inline]
    fn rx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize {
        let q = queue as usize;
        if q >= self.queues.len() {
            return 0;
        }
        self.refill(q);
        self.reap_completions(q);
        self.fold_kernel_counters(q);
        let n = self.queues[q].sock.rx.cons_peek(max.min(u32::MAX as usize) as u32);
        let mut bytes = 0;
        let mut got = 0;
        let mut bad = 0;
        for i in 0..n {
            let d = self.queues[q].sock.rx.cons_read(i);
            match self.take_rx(d) {
                Ok(b) => {
                    bytes += b.len();
                    got += 1;
                    bufs.push(b);
                    self.queues[q].in_fill -= 1;
                }
                // A slot of ours with a bad length: it is back in the pool.
                Err(true) => {
                    self.queues[q].in_fill -= 1;
                    bad += 1;
                }
                Err(false) => bad += 1,
            }
        }
        let queue_ref = &mut self.queues[q];
        queue_ref.sock.rx.cons_release(n);
        // Copy mode transmits at most 32 descriptors per kick: keep kicking while
        // the tx ring holds some, as long as the kernel asks for it.
        if queue_ref.in_tx > 0
            && queue_ref.sock.tx.needs_wakeup()
            && queue_ref.sock.tx.prod_outstanding() > 0
        {
            let _ = queue_ref.sock.kick_tx();
        }
        let c = self.counters.queue(queue);
        c.count_rx(got, bytes);
        if bad > 0 {
            bump(&c.errors, bad);
        }
        got
    }

    #[inline]
    fn tx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>) -> usize {
        let q = queue as usize;
        if q >= self.queues.len() || bufs.is_empty() {
            return 0;
        }
        self.reap_completions(q);
        if !self.shared.link_up.load(Ordering::Relaxed) {
            return 0;
        }
        let want = bufs.len().min(u32::MAX as usize) as u32;
        let free = self.queues[q].sock.tx.prod_free(want);
        let n = want.min(free) as usize;
        if n == 0 {
            if self.queues[q].sock.tx.needs_wakeup() {
                let _ = self.queues[q].sock.kick_tx();
            }
            return 0;
        }
        let max_len = self.layout.chunk_size as usize;
        let mut produced = 0u32;
        let mut bytes = 0;
        let mut dropped = 0;
        let queue_state = &mut self.queues[q];
        for buf in bufs.drain(..n) {
            let buf = if self.pool.owns(&buf) {
                buf
            } else {
                // A buffer of another pool is not in the UMEM: copy it into ours.
                queue_state.scratch.clear();
                self.pool.alloc_bulk(&mut queue_state.scratch, 1);
                match queue_state.scratch.pop() {
                    Some(mut own) => {
                        if !own.copy_from(buf.data()) {
                            dropped += 1;
                            continue;
                        }
                        own
                    }
                    None => {
                        dropped += 1;
                        continue;
                    }
                }
            };
            let len = buf.len();
            let data_off = buf.headroom();
            if len == 0 || len > max_len || data_off + len > self.pool.slot_size() {
                dropped += 1;
                continue;
            }
            let off = buf.into_raw();
            let Some((idx, _)) = self.pool.slot_containing(off as usize) else {
                dropped += 1;
                continue;
            };
            if !self.frames.transition(idx, FrameState::Free, FrameState::Tx) {
                // Cannot happen (a buffer we own is not in the kernel's hands); keep
                // the slot out of the pool rather than risk handing it out twice.
                dropped += 1;
                continue;
            }
            queue_state.sock.tx.prod_write(
                produced,
                XdpDesc {
                    addr: off as u64 | (data_off as u64) << OFFSET_SHIFT,
                    len: len as u32,
                    options: 0,
                },
            );
            produced += 1;
            bytes += len;
        }
        queue_state.sock.tx.prod_submit(produced);
        queue_state.in_tx += produced;
        if produced > 0 && queue_state.sock.tx.needs_wakeup() {
            if let Err(e) = queue_state.sock.kick_tx() {
                if matches!(e.raw_os_error(), Some(libc::ENETDOWN) | Some(libc::ENXIO)) {
                    self.shared.link_up.store(false, Ordering::Relaxed);
                }
                bump(&self.counters.queue(queue).errors, 1);
            }
        }
        let c = self.counters.queue(queue);
        c.count_tx(produced as usize, bytes);
        if dropped > 0 {
            bump(&c.tx_drops, dropped);
        }
        n
    }

    fn counters(&self) -> Arc<PortCounters> {
        self.counters.clone()
    }
}

impl Drop for AfXdpPort {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(m) = self.monitor.take() {
            m.thread().unpark();
            let _ = m.join();
        }
        // Detach first (no new packets are redirected), then empty the map and close
        // the sockets (the kernel gives up the UMEM), then take the buffers back.
        self.attachment.take();
        for q in 0..self.queues.len() as u32 {
            let _ = bpf::xskmap_delete(&self.map, q);
        }
        self.queues.clear();
        let held: Vec<u32> = self.frames.held().map(|(idx, _)| idx).collect();
        self.frames.clear();
        for idx in held {
            if let Some(off) = self.pool.slot_offset_of(idx) {
                // SAFETY: the slot was handed to the kernel with into_raw and never
                // turned back (its state was not Free); the sockets are closed, so the
                // kernel no longer writes it. Each held slot is turned back once.
                drop(unsafe { self.pool.buf_from_raw(off, 0, 0) });
            }
        }
        tracing::info!(port = %self.name, interface = %self.ifname, "AF_XDP port closed, XDP program detached");
    }
}

fn monitor(
    name: String,
    ifindex: u32,
    fds: Vec<OwnedFd>,
    shared: Arc<Shared>,
    counters: Arc<PortCounters>,
) {
    let mut was_up = shared.link_up.load(Ordering::Relaxed);
    let mut gone_logged = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let up = match link_flags(ifindex) {
            Some((up, running)) => up && running,
            None => {
                if !gone_logged {
                    tracing::error!(port = %name, "interface disappeared: port is down until podwire restarts");
                    counters.count_port_error();
                    gone_logged = true;
                }
                false
            }
        };
        if up != was_up {
            tracing::info!(port = %name, "link {}", if up { "up" } else { "down" });
            shared.link_up.store(up, Ordering::Relaxed);
            was_up = up;
        }
        for (q, fd) in fds.iter().enumerate() {
            if let Some(s) = statistics(fd.as_raw_fd()) {
                tracing::debug!(
                    port = %name,
                    queue = q,
                    rx_dropped = s.rx_dropped,
                    rx_ring_full = s.rx_ring_full,
                    fill_ring_empty = s.rx_fill_ring_empty_descs,
                    rx_invalid = s.rx_invalid_descs,
                    tx_invalid = s.tx_invalid_descs,
                    tx_ring_empty = s.tx_ring_empty_descs,
                    "kernel AF_XDP statistics"
                );
                shared.kernel_drops[q].store(s.rx_dropped + s.rx_ring_full, Ordering::Relaxed);
                shared.kernel_errors[q]
                    .store(s.rx_invalid_descs + s.tx_invalid_descs, Ordering::Relaxed);
            }
        }
        std::thread::park_timeout(MONITOR_INTERVAL);
    }
}
