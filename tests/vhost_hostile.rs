//! A hostile vhost-user frontend against `podwire run`.
//!
//! The daemon runs two cross-connects on ONE worker core: a <-> b, where a hostile
//! frontend (tests/vhost_frontend, the only peer that can produce bad input) connects
//! to `a` again and again, and c <-> d, where a well-behaved frontend forwards packets
//! both ways in a background thread throughout, checking every packet. For each kind
//! of bad input, a fresh connection to `a` sends it; then the test asserts that
//!
//! * podwire closed that connection (the read returns end-of-file),
//! * `a`'s error counter went up (ring errors are detected by the worker, which logs
//!   "frontend broke the ring"; protocol errors by the control thread),
//! * the daemon is alive and logged no panic, and
//! * c <-> d kept forwarding: its packets keep arriving intact, in order, and its
//!   counters keep increasing.
//!
//! At the end a well-behaved frontend attaches to `a` and forwards through it: the
//! port recovered without a restart; then the daemon stops cleanly on SIGTERM.

mod common;
mod vhost_frontend;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::daemon::{socket, Daemon, TempDir};
use podwire_vhost::proto::{req, VERSION as FLAG_VERSION, VRING_NOFD};
use podwire_vhost::ring::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use vhost_frontend::{
    connect, encode, make_packet, mem_table_payload, memfd, run_flows, send_raw, state, vring_addr,
    wait_closed, Desc, Flow, Frontend, Options, GPA_BASE, RX, TX,
};

const WAIT: Duration = Duration::from_secs(5);

/// The well-behaved c <-> d traffic, in a thread of its own.
struct Background {
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
    handle: Option<JoinHandle<[Flow; 2]>>,
}

impl Background {
    fn start(mut c: Frontend, mut d: Frontend) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let (s, n, e) = (stop.clone(), delivered.clone(), error.clone());
        let handle = std::thread::spawn(move || {
            let mut flows = [Flow::new(10, u32::MAX), Flow::new(11, u32::MAX)];
            let mut last_progress = Instant::now();
            let result = (|| -> Result<(), String> {
                loop {
                    let stopping = s.load(Ordering::Acquire);
                    if stopping {
                        // Send no more; drain what is in flight, then stop.
                        for f in &mut flows {
                            f.total = f.sent;
                        }
                        if flows.iter().all(Flow::done) {
                            return Ok(());
                        }
                    }
                    let moved =
                        flows[0].step(&mut c, &mut d, 32)? | flows[1].step(&mut d, &mut c, 32)?;
                    n.store(flows.iter().map(|f| f.received as u64).sum(), Ordering::Release);
                    if moved {
                        last_progress = Instant::now();
                    } else if last_progress.elapsed() > Duration::from_secs(3) {
                        return Err(format!("c <-> d stalled for 3 s: {flows:?}"));
                    }
                    // Leave CPU for the rest of the test: the machine is small.
                    std::thread::sleep(Duration::from_micros(200));
                }
            })();
            if let Err(msg) = result {
                *e.lock().unwrap() = Some(msg);
            }
            flows
        });
        Self { stop, delivered, error, handle: Some(handle) }
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    fn assert_ok(&self) {
        if let Some(e) = self.error.lock().unwrap().as_ref() {
            panic!("well-behaved traffic failed: {e}");
        }
    }

    /// Waits until `more` further packets were delivered.
    fn wait_progress(&self, more: u64, what: &str) {
        let start = Instant::now();
        let from = self.delivered();
        while self.delivered() < from + more {
            self.assert_ok();
            assert!(start.elapsed() < WAIT, "c <-> d stopped forwarding after {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
        self.assert_ok();
    }

    fn finish(mut self) -> [Flow; 2] {
        self.stop.store(true, Ordering::Release);
        let flows = self.handle.take().unwrap().join().expect("traffic thread");
        self.assert_ok();
        flows
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// How podwire must notice a case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// The worker finds it in a ring.
    Ring,
    /// The control thread finds it in a message.
    Protocol,
}

struct Ctx {
    daemon: Daemon,
    /// Well-behaved frontend on b (a's peer), to send packets into a's rx ring.
    b: Frontend,
    b_sent: u32,
    bg: Background,
    cases: usize,
    /// Last, so it is removed after the daemon stopped, even when the test fails.
    dir: TempDir,
}

impl Ctx {
    fn a(&self) -> PathBuf {
        socket(self.dir.path(), "a")
    }

    /// A well set-up hostile connection to `a`, rx buffers not posted.
    fn hostile(&self) -> Frontend {
        Frontend::connect(&self.a(), Options { post_rx: false, ..Default::default() })
    }

    /// Sends one packet from b, towards a's rx ring.
    fn packet_from_b(&mut self) {
        self.b.reclaim_tx();
        assert!(self.b.send(&make_packet(20, self.b_sent, 100)), "b's tx ring full");
        self.b_sent += 1;
    }

    /// Runs one case: `attack` gets a fresh connection to `a` and misbehaves on it; it
    /// returns the socket podwire must close.
    fn case(&mut self, name: &str, kind: Kind, attack: impl FnOnce(&mut Ctx) -> UnixStream) {
        self.cases += 1;
        let before = self.daemon.port("a");
        let broke = self.daemon.log_text().matches("frontend broke the ring").count();
        let cd_before = (self.daemon.port("c"), self.daemon.port("d"));
        let sock = attack(self);
        if let Err(e) = wait_closed(&sock, WAIT) {
            panic!("case {name:?}: {e}");
        }
        let after = self.daemon.wait_port("a", WAIT, &format!("errors up after {name:?}"), |s| {
            s.errors > before.errors
        });
        self.daemon.assert_alive();
        let broke_now = self.daemon.log_text().matches("frontend broke the ring").count();
        match kind {
            Kind::Ring => assert_eq!(broke_now, broke + 1, "case {name:?}: not a ring error"),
            Kind::Protocol => assert_eq!(broke_now, broke, "case {name:?}: not a protocol error"),
        }
        // c <-> d kept going, and counted it.
        self.bg.wait_progress(20, name);
        for (port, was) in [("c", &cd_before.0), ("d", &cd_before.1)] {
            let s = self.daemon.wait_port(port, WAIT, "more packets", |s| {
                s.rx_packets > was.rx_packets && s.tx_packets > was.tx_packets
            });
            assert_eq!((s.errors, s.rx_drops, s.tx_drops), (0, 0, 0), "{port} after {name:?}");
        }
        eprintln!("case {name:?}: closed, a.errors {} -> {}", before.errors, after.errors);
    }
}

// ---- ring attacks on a's tx ring (vring 1): the worker dequeues them ----

/// Makes `descs` descriptors 0.. of a's tx table and offers chain `head`.
fn bad_tx(cx: &mut Ctx, descs: &[Desc], head: u16) -> UnixStream {
    let mut h = cx.hostile();
    for (i, d) in descs.iter().enumerate() {
        h.write_desc(TX, i as u16, *d);
    }
    h.push_avail(TX, head);
    h.publish_avail(TX);
    h.sock
}

/// Makes `descs` descriptors 0.. of a's rx table, offers chain `head`, and sends a
/// packet from b so the worker has something to put there.
fn bad_rx(cx: &mut Ctx, descs: &[Desc], head: u16) -> UnixStream {
    let mut h = cx.hostile();
    for (i, d) in descs.iter().enumerate() {
        h.write_desc(RX, i as u16, *d);
    }
    h.push_avail(RX, head);
    h.publish_avail(RX);
    cx.packet_from_b();
    h.sock
}

/// An indirect table (made by `table` from the scratch area's guest address) at the
/// start of the hostile frontend's scratch area, referenced by tx descriptor 0 with
/// length `len` (None: the table's real length).
fn indirect_tx(cx: &mut Ctx, table: impl FnOnce(u64) -> Vec<Desc>, len: Option<u32>) -> UnixStream {
    let mut h = cx.hostile();
    let table = table(h.mem.gpa(h.scratch));
    h.write_table(h.scratch, &table);
    let len = len.unwrap_or(16 * table.len() as u32);
    let d = Desc { addr: h.mem.gpa(h.scratch), len, flags: DESC_F_INDIRECT, next: 0 };
    h.write_desc(TX, 0, d);
    h.push_avail(TX, 0);
    h.publish_avail(TX);
    h.sock
}

/// A guest address inside the hostile frontend's memory (any will do for a
/// descriptor that podwire must refuse for another reason).
fn slot(i: u16) -> u64 {
    GPA_BASE + (i as u64 % 128) * 2048
}

fn ring_cases(cx: &mut Ctx) {
    let size = 256u16;
    let mem_end = |h: &Frontend| GPA_BASE + h.mem.len() as u64;

    cx.case("descriptor loop (next points back)", Kind::Ring, |cx| {
        let d0 = Desc { addr: slot(0), len: 64, flags: DESC_F_NEXT, next: 1 };
        let d1 = Desc { addr: slot(1), len: 64, flags: DESC_F_NEXT, next: 0 };
        bad_tx(cx, &[d0, d1], 0)
    });
    cx.case("descriptor pointing at itself, zero length", Kind::Ring, |cx| {
        bad_tx(cx, &[Desc { addr: slot(0), len: 0, flags: DESC_F_NEXT, next: 0 }], 0)
    });
    cx.case("chain longer than the queue (every descriptor, in a circle)", Kind::Ring, |cx| {
        let descs: Vec<Desc> = (0..size)
            .map(|i| Desc { addr: slot(i), len: 0, flags: DESC_F_NEXT, next: (i + 1) % size })
            .collect();
        bad_tx(cx, &descs, 0)
    });
    cx.case("chain of 100 real buffers (more segments than a packet may have)", Kind::Ring, |cx| {
        let descs: Vec<Desc> = (0..100)
            .map(|i| Desc { addr: slot(i), len: 8, flags: DESC_F_NEXT, next: i + 1 })
            .collect();
        bad_tx(cx, &descs, 0)
    });
    cx.case("next index outside the table", Kind::Ring, |cx| {
        bad_tx(cx, &[Desc { addr: slot(0), len: 64, flags: DESC_F_NEXT, next: size }], 0)
    });
    cx.case("indirect table outside memory", Kind::Ring, |cx| {
        let mut h = cx.hostile();
        let d = Desc { addr: mem_end(&h) + 0x10000, len: 64, flags: DESC_F_INDIRECT, next: 0 };
        h.write_desc(TX, 0, d);
        h.push_avail(TX, 0);
        h.publish_avail(TX);
        h.sock
    });
    cx.case("nested indirect table", Kind::Ring, |cx| {
        let nested = |scratch: u64| {
            vec![Desc { addr: scratch + 1024, len: 32, flags: DESC_F_INDIRECT, next: 0 }]
        };
        indirect_tx(cx, nested, None)
    });
    cx.case("indirect length not a multiple of 16", Kind::Ring, |cx| {
        indirect_tx(cx, |_| vec![Desc { addr: slot(0), len: 64, flags: 0, next: 0 }], Some(20))
    });
    cx.case("indirect table of length 0", Kind::Ring, |cx| indirect_tx(cx, |_| vec![], Some(0)));
    cx.case("loop inside an indirect table", Kind::Ring, |cx| {
        let t0 = Desc { addr: slot(0), len: 64, flags: DESC_F_NEXT, next: 1 };
        let t1 = Desc { addr: slot(1), len: 64, flags: DESC_F_NEXT, next: 0 };
        indirect_tx(cx, |_| vec![t0, t1], None)
    });
    cx.case("indirect table chained with NEXT", Kind::Ring, |cx| {
        let mut h = cx.hostile();
        h.write_table(h.scratch, &[Desc { addr: slot(0), len: 64, flags: 0, next: 0 }]);
        let d = Desc {
            addr: h.mem.gpa(h.scratch),
            len: 16,
            flags: DESC_F_INDIRECT | DESC_F_NEXT,
            next: 1,
        };
        h.write_desc(TX, 0, d);
        h.write_desc(TX, 1, Desc { addr: slot(1), len: 64, flags: 0, next: 0 });
        h.push_avail(TX, 0);
        h.publish_avail(TX);
        h.sock
    });
    cx.case("descriptor address outside every region", Kind::Ring, |cx| {
        let mut h = cx.hostile();
        let d = Desc { addr: mem_end(&h) + 4096, len: 64, flags: 0, next: 0 };
        h.write_desc(TX, 0, d);
        h.push_avail(TX, 0);
        h.publish_avail(TX);
        h.sock
    });
    cx.case("descriptor address below every region", Kind::Ring, |cx| {
        bad_tx(cx, &[Desc { addr: 0x1000, len: 64, flags: 0, next: 0 }], 0)
    });
    cx.case("address + length overflows u64", Kind::Ring, |cx| {
        bad_tx(cx, &[Desc { addr: u64::MAX - 15, len: 64, flags: 0, next: 0 }], 0)
    });
    cx.case("buffer running past the end of memory", Kind::Ring, |cx| {
        let mut h = cx.hostile();
        let d = Desc { addr: mem_end(&h) - 16, len: u32::MAX, flags: 0, next: 0 };
        h.write_desc(TX, 0, d);
        h.push_avail(TX, 0);
        h.publish_avail(TX);
        h.sock
    });
    cx.case("head index = queue size", Kind::Ring, |cx| bad_tx(cx, &[], size));
    cx.case("head index 0xffff", Kind::Ring, |cx| bad_tx(cx, &[], 0xffff));
    cx.case("avail idx jumps by more than the queue size", Kind::Ring, |cx| {
        let mut h = cx.hostile();
        h.set_avail_idx(TX, size + 1);
        h.sock
    });
    cx.case("avail idx jumps backwards", Kind::Ring, |cx| {
        let mut h = cx.hostile();
        h.set_avail_idx(TX, 0xfff0);
        h.sock
    });
    cx.case("write-only descriptor in a tx chain", Kind::Ring, |cx| {
        bad_tx(cx, &[Desc { addr: slot(0), len: 64, flags: DESC_F_WRITE, next: 0 }], 0)
    });
    cx.case("write-only descriptor second in a tx chain", Kind::Ring, |cx| {
        let d0 = Desc { addr: slot(0), len: 12, flags: DESC_F_NEXT, next: 1 };
        let d1 = Desc { addr: slot(1), len: 64, flags: DESC_F_WRITE, next: 0 };
        bad_tx(cx, &[d0, d1], 0)
    });

    // ---- a's rx ring (vring 0): the worker finds these when b sends to a ----
    cx.case("read-only descriptor in an rx chain", Kind::Ring, |cx| {
        bad_rx(cx, &[Desc { addr: slot(0), len: 2048, flags: 0, next: 0 }], 0)
    });
    cx.case("rx descriptor outside memory", Kind::Ring, |cx| {
        bad_rx(cx, &[Desc { addr: 0x10, len: 2048, flags: DESC_F_WRITE, next: 0 }], 0)
    });
    cx.case("rx head index out of range", Kind::Ring, |cx| bad_rx(cx, &[], 1000));
    cx.case("rx loop", Kind::Ring, |cx| {
        let d0 = Desc { addr: slot(0), len: 0, flags: DESC_F_WRITE | DESC_F_NEXT, next: 0 };
        bad_rx(cx, &[d0], 0)
    });
    cx.case("rx avail idx jumps by more than the queue size", Kind::Ring, |cx| {
        let mut h = cx.hostile();
        h.set_avail_idx(RX, 300);
        cx.packet_from_b();
        h.sock
    });
}

// ---- protocol attacks ----

/// A fresh connection to `a` that sends `bytes` (with `fds`) first thing.
fn raw(cx: &Ctx, bytes: &[u8], fds: &[i32]) -> UnixStream {
    let s = connect(&cx.a(), WAIT);
    // podwire may close before reading everything; only the close matters.
    let _ = send_raw(&s, bytes, fds);
    s
}

/// A connection that negotiated features and sent its memory table, then sends
/// `request` without asking for an ack.
fn after_mem_table(cx: &Ctx, request: u32, payload: &[u8]) -> UnixStream {
    let mut h = Frontend::unconfigured(connect(&cx.a(), WAIT), Options::default());
    h.negotiate();
    h.send_mem_table();
    let _ = h.send_msg(request, FLAG_VERSION, payload);
    let Frontend { sock, .. } = h;
    sock
}

/// A connection that sets up vring 1 with `num` and `addr` (all acknowledged, as
/// the ring is not enabled yet) and then enables it: podwire must refuse to start it.
fn ring_setup(cx: &Ctx, num: u32, addr: impl FnOnce(&Frontend) -> [u8; 40]) -> UnixStream {
    let mut h = Frontend::unconfigured(connect(&cx.a(), WAIT), Options::default());
    h.negotiate();
    h.send_mem_table();
    h.set(req::SET_VRING_NUM, &state(1, num), &[]);
    let a = addr(&h);
    h.set(req::SET_VRING_ADDR, &a, &[]);
    h.set(req::SET_VRING_KICK, &(1 | VRING_NOFD).to_le_bytes(), &[]);
    h.set(req::SET_VRING_CALL, &(1 | VRING_NOFD).to_le_bytes(), &[]);
    let _ = h.send_msg(req::SET_VRING_ENABLE, FLAG_VERSION, &state(1, 1));
    let Frontend { sock, .. } = h;
    sock
}

fn good_addr(h: &Frontend) -> [u8; 40] {
    let q = &h.vq[TX];
    vring_addr(1, h.mem.uva(q.desc), h.mem.uva(q.used), h.mem.uva(q.avail))
}

fn memfds(n: usize, len: u64) -> Vec<OwnedFd> {
    (0..n).map(|_| memfd(len)).collect()
}

fn raw_fds(v: &[OwnedFd]) -> Vec<i32> {
    v.iter().map(|f| f.as_raw_fd()).collect()
}

fn protocol_cases(cx: &mut Ctx) {
    let p = Kind::Protocol;
    let m = |r: u32, payload: &[u8]| encode(r, FLAG_VERSION, payload);

    cx.case("SET_FEATURES payload of 4 bytes", p, |cx| {
        raw(cx, &m(req::SET_FEATURES, &[0; 4]), &[])
    });
    cx.case("SET_VRING_ADDR payload of 20 bytes", p, |cx| {
        raw(cx, &m(req::SET_VRING_ADDR, &[0; 20]), &[])
    });
    cx.case("SET_MEM_TABLE payload shorter than its region count", p, |cx| {
        let f = memfd(1 << 20);
        let mut t = mem_table_payload(&[(0, 1 << 20, 0x7000_0000, 0)]);
        t[0] = 2; // claims two regions, carries one
        raw(cx, &m(req::SET_MEM_TABLE, &t), &[f.as_raw_fd()])
    });
    cx.case("SET_VRING_NUM payload of 0 bytes", p, |cx| raw(cx, &m(req::SET_VRING_NUM, &[]), &[]));
    cx.case("header size 4097", p, |cx| {
        let mut b = m(req::SET_OWNER, &[]);
        b[8..12].copy_from_slice(&4097u32.to_le_bytes());
        raw(cx, &b, &[])
    });
    cx.case("header size 0xffffffff", p, |cx| {
        let mut b = m(req::SET_OWNER, &[]);
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        raw(cx, &b, &[])
    });
    for (flags, what) in [(0u32, "version 0"), (2, "version 2"), (3, "version 3")] {
        cx.case(&format!("wrong version bits ({what})"), p, |cx| {
            raw(cx, &encode(req::SET_OWNER, flags, &[]), &[])
        });
    }
    cx.case("unknown request code 999", p, |cx| raw(cx, &m(999, &[0; 8]), &[]));
    cx.case("request code 0", p, |cx| raw(cx, &m(0, &[]), &[]));
    cx.case("SET_MEM_TABLE with 9 regions and 9 fds", p, |cx| {
        let fds = memfds(9, 1 << 16);
        let regions: Vec<_> =
            (0..9u64).map(|i| (i << 16, 1 << 16, 0x7000_0000 + (i << 16), 0)).collect();
        raw(cx, &m(req::SET_MEM_TABLE, &mem_table_payload(&regions)), &raw_fds(&fds))
    });
    cx.case("SET_MEM_TABLE with 9 regions and 8 fds", p, |cx| {
        let fds = memfds(8, 1 << 16);
        let regions: Vec<_> =
            (0..9u64).map(|i| (i << 16, 1 << 16, 0x7000_0000 + (i << 16), 0)).collect();
        raw(cx, &m(req::SET_MEM_TABLE, &mem_table_payload(&regions)), &raw_fds(&fds))
    });
    cx.case("SET_MEM_TABLE with 0 regions", p, |cx| {
        raw(cx, &m(req::SET_MEM_TABLE, &mem_table_payload(&[])), &[])
    });
    cx.case("SET_MEM_TABLE with fewer fds than regions", p, |cx| {
        let fds = memfds(1, 1 << 16);
        let regions = [(0, 1 << 16, 0x7000_0000, 0), (1 << 16, 1 << 16, 0x7001_0000, 0)];
        raw(cx, &m(req::SET_MEM_TABLE, &mem_table_payload(&regions)), &raw_fds(&fds))
    });
    cx.case("SET_MEM_TABLE with no fd at all", p, |cx| {
        let t = mem_table_payload(&[(0, 1 << 16, 0x7000_0000, 0)]);
        raw(cx, &m(req::SET_MEM_TABLE, &t), &[])
    });
    cx.case("SET_MEM_TABLE region larger than its memfd", p, |cx| {
        let fds = memfds(1, 1 << 16);
        let t = mem_table_payload(&[(0, 1 << 20, 0x7000_0000, 0)]);
        raw(cx, &m(req::SET_MEM_TABLE, &t), &raw_fds(&fds))
    });
    cx.case("SET_MEM_TABLE region at an mmap offset past its memfd", p, |cx| {
        let fds = memfds(1, 1 << 16);
        let t = mem_table_payload(&[(0, 1 << 12, 0x7000_0000, 1 << 16)]);
        raw(cx, &m(req::SET_MEM_TABLE, &t), &raw_fds(&fds))
    });
    cx.case("SET_MEM_TABLE mmap offset + size overflows", p, |cx| {
        let fds = memfds(1, 1 << 16);
        let t = mem_table_payload(&[(0, 1 << 16, 0x7000_0000, u64::MAX - 100)]);
        raw(cx, &m(req::SET_MEM_TABLE, &t), &raw_fds(&fds))
    });
    cx.case("SET_MEM_TABLE guest address + size overflows", p, |cx| {
        let fds = memfds(1, 1 << 16);
        let t = mem_table_payload(&[(u64::MAX - 100, 1 << 16, 0x7000_0000, 0)]);
        raw(cx, &m(req::SET_MEM_TABLE, &t), &raw_fds(&fds))
    });
    cx.case("SET_MEM_TABLE with overlapping regions", p, |cx| {
        let fds = memfds(2, 1 << 16);
        let regions = [(0, 1 << 16, 0x7000_0000, 0), (1 << 15, 1 << 16, 0x7100_0000, 0)];
        raw(cx, &m(req::SET_MEM_TABLE, &mem_table_payload(&regions)), &raw_fds(&fds))
    });
    cx.case("SET_MEM_TABLE with an eventfd for memory", p, |cx| {
        // SAFETY: plain syscall; the result is checked.
        let e = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(e >= 0);
        // SAFETY: fresh fd, ours.
        let e = unsafe { OwnedFd::from_raw_fd(e) };
        let t = mem_table_payload(&[(0, 1 << 16, 0x7000_0000, 0)]);
        raw(cx, &m(req::SET_MEM_TABLE, &t), &[e.as_raw_fd()])
    });
    cx.case("more fds than any message may carry", p, |cx| {
        let fds = memfds(12, 4096);
        raw(cx, &m(req::SET_OWNER, &[]), &raw_fds(&fds))
    });

    // Vring index out of range (a has one queue pair: vrings 0, 1 and control 2).
    for (r, what, payload) in [
        (req::SET_VRING_NUM, "SET_VRING_NUM", state(3, 256).to_vec()),
        (req::SET_VRING_BASE, "SET_VRING_BASE", state(3, 0).to_vec()),
        (req::GET_VRING_BASE, "GET_VRING_BASE", state(3, 0).to_vec()),
        (req::SET_VRING_ENABLE, "SET_VRING_ENABLE", state(7, 1).to_vec()),
        (req::SET_VRING_ADDR, "SET_VRING_ADDR", vring_addr(200, 0, 0, 0).to_vec()),
        (req::SET_VRING_KICK, "SET_VRING_KICK", (0xff | VRING_NOFD).to_le_bytes().to_vec()),
        (req::SET_VRING_CALL, "SET_VRING_CALL", (5 | VRING_NOFD).to_le_bytes().to_vec()),
        (req::SET_VRING_NUM, "SET_VRING_NUM index 2^32-1", state(u32::MAX, 256).to_vec()),
    ] {
        cx.case(&format!("vring index out of range: {what}"), p, |cx| {
            raw(cx, &m(r, &payload), &[])
        });
    }
    for num in [0u32, 32769, 65536, u32::MAX] {
        cx.case(&format!("SET_VRING_NUM {num}"), p, |cx| {
            raw(cx, &m(req::SET_VRING_NUM, &state(1, num)), &[])
        });
    }
    cx.case("SET_VRING_ENABLE 2", p, |cx| raw(cx, &m(req::SET_VRING_ENABLE, &state(1, 2)), &[]));
    cx.case("SET_VRING_KICK without fd or no-fd flag", p, |cx| {
        raw(cx, &m(req::SET_VRING_KICK, &1u64.to_le_bytes()), &[])
    });
    cx.case("SET_FEATURES with bits not offered", p, |cx| {
        raw(cx, &m(req::SET_FEATURES, &(1u64 << 63).to_le_bytes()), &[])
    });
    cx.case("non-power-of-two split ring size (100)", p, |cx| ring_setup(cx, 100, good_addr));
    cx.case("descriptor table outside memory", p, |cx| {
        ring_setup(cx, 256, |h| {
            let q = &h.vq[TX];
            vring_addr(1, h.mem.uva(0) + (1 << 40), h.mem.uva(q.used), h.mem.uva(q.avail))
        })
    });
    cx.case("used ring running past the end of memory", p, |cx| {
        ring_setup(cx, 256, |h| {
            let q = &h.vq[TX];
            let end = h.mem.uva(h.mem.len()) - 64;
            vring_addr(1, h.mem.uva(q.desc), end, h.mem.uva(q.avail))
        })
    });
    cx.case("avail ring address + size overflows", p, |cx| {
        ring_setup(cx, 256, |h| {
            let q = &h.vq[TX];
            vring_addr(1, h.mem.uva(q.desc), h.mem.uva(q.used), u64::MAX - 1)
        })
    });
    cx.case("misaligned descriptor table", p, |cx| {
        ring_setup(cx, 256, |h| {
            let q = &h.vq[TX];
            vring_addr(1, h.mem.uva(q.desc) + 8, h.mem.uva(q.used), h.mem.uva(q.avail))
        })
    });
    cx.case("ring given as guest-physical instead of frontend-virtual", p, |cx| {
        ring_setup(cx, 256, |h| {
            let q = &h.vq[TX];
            vring_addr(1, h.mem.gpa(q.desc), h.mem.gpa(q.used), h.mem.gpa(q.avail))
        })
    });
    cx.case("SET_VRING_BASE on a running ring", p, |cx| {
        let h = cx.hostile();
        let _ = h.send_msg(req::SET_VRING_BASE, FLAG_VERSION, &state(1, 0));
        let Frontend { sock, .. } = h;
        sock
    });
    cx.case("SET_FEATURES on running rings", p, |cx| {
        let h = cx.hostile();
        let _ = h.send_msg(req::SET_FEATURES, FLAG_VERSION, &h.features.to_le_bytes());
        let Frontend { sock, .. } = h;
        sock
    });
    cx.case("GET_CONFIG asking for 4096 bytes", p, |cx| {
        let mut c = vec![0u8; 12];
        c[4..8].copy_from_slice(&4096u32.to_le_bytes());
        after_mem_table(cx, 24, &c)
    });
    cx.case("payload shorter than its header says, then silence", p, |cx| {
        // podwire waits for the rest (its read times out after 5 s) on this port's
        // control thread only; the test waits for the close with a longer timeout.
        let s = connect(&cx.a(), WAIT);
        let mut b = m(req::SET_FEATURES, &[0; 8]);
        b.truncate(12 + 3);
        send_raw(&s, &b, &[]).unwrap();
        wait_closed(&s, Duration::from_secs(10)).unwrap();
        s
    });
}

/// An eventfd; `blocking`: without EFD_NONBLOCK, as a hostile frontend may make it.
fn eventfd(blocking: bool) -> OwnedFd {
    let flags = libc::EFD_CLOEXEC | if blocking { 0 } else { libc::EFD_NONBLOCK };
    // SAFETY: plain syscall; the result is checked.
    let e = unsafe { libc::eventfd(0, flags) };
    assert!(e >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fd, ours.
    unsafe { OwnedFd::from_raw_fd(e) }
}

/// Interrupt (call) fds a frontend could use to stall the worker, which writes to
/// them on the datapath.
fn call_fd_cases(cx: &mut Ctx) {
    // A blocking eventfd whose counter the frontend itself pushed to the maximum:
    // one more write() blocks until someone reads it, and nobody will.
    {
        let mut h = Frontend::connect(&cx.a(), Options::default());
        let e = eventfd(true);
        let max = (u64::MAX - 1).to_le_bytes();
        // SAFETY: writing 8 bytes from a live array to our own eventfd.
        let n = unsafe { libc::write(e.as_raw_fd(), max.as_ptr().cast(), 8) };
        assert_eq!(n, 8);
        let before = cx.bg.delivered();
        // The ring restarts with the new call fd; interrupts are wanted (avail flags 0).
        h.set(req::SET_VRING_CALL, &(RX as u64).to_le_bytes(), &[e.as_raw_fd()]);
        for _ in 0..5 {
            cx.packet_from_b();
        }
        let start = Instant::now();
        let mut got = 0;
        while got < 5 {
            if h.recv().is_some() {
                got += 1;
                continue;
            }
            assert!(
                start.elapsed() < WAIT,
                "a received {got} of 5 packets with a saturated call eventfd"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        cx.bg.wait_progress(20, "a saturated blocking call eventfd");
        assert!(cx.bg.delivered() > before);
        cx.daemon.assert_alive();
        eprintln!("case \"saturated blocking call eventfd\": a and c <-> d kept going");
    }
    // Call fds that are not eventfds are refused: a pipe nobody reads would block
    // the worker once full; a memfd is simply not an interrupt.
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 fills the two-int array we pass; the result is checked.
    assert_eq!(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and ours.
    let (pipe_r, pipe_w) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let mem = memfd(4096);
    for (what, fd) in [("the write end of a pipe", &pipe_w), ("a memfd", &mem)] {
        cx.case(&format!("call fd is {what}"), Kind::Protocol, |cx| {
            let h = cx.hostile();
            let m = encode(req::SET_VRING_CALL, FLAG_VERSION, &(RX as u64).to_le_bytes());
            let _ = send_raw(&h.sock, &m, &[fd.as_raw_fd()]);
            let Frontend { sock, .. } = h;
            sock
        });
    }
    drop(pipe_r);
}

fn start(tag: &str) -> Ctx {
    let dir = TempDir::new(tag);
    let daemon =
        Daemon::start_vhost_servers(dir.path(), &["a", "b", "c", "d"], &[["a", "b"], ["c", "d"]]);
    let path = dir.path().to_path_buf();
    let c = Frontend::connect(&socket(&path, "c"), Options::default());
    let d = Frontend::connect(&socket(&path, "d"), Options::default());
    let b = Frontend::connect(&socket(&path, "b"), Options::default());
    let bg = Background::start(c, d);
    bg.wait_progress(100, "start");
    Ctx { daemon, b, b_sent: 0, bg, cases: 0, dir }
}

fn finish(mut cx: Ctx) {
    // a recovered: a well-behaved frontend forwards through it, no restart needed.
    let mut a = Frontend::connect(&cx.a(), Options::default());
    cx.daemon.wait_port("a", WAIT, "link up", |s| s.link == "up");
    let mut flows = [(Flow::new(30, 500), true), (Flow::new(31, 500), false)];
    run_flows(&mut a, &mut cx.b, &mut flows, 32, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("a <-> b after the attacks: {e}"));
    assert_eq!(cx.daemon.port("b").errors, 0, "b never saw bad input");

    // The c <-> d totals add up exactly: nothing lost or counted twice.
    let [cd, dc] = cx.bg.finish();
    assert!(cd.received > 1000 && dc.received > 1000, "too little traffic: {cd:?} {dc:?}");
    let c = cx.daemon.port("c");
    let d = cx.daemon.port("d");
    assert_eq!((c.rx_packets, c.rx_bytes), (cd.sent as u64, cd.bytes), "c rx");
    assert_eq!((d.tx_packets, d.tx_bytes), (cd.sent as u64, cd.bytes), "d tx");
    assert_eq!((d.rx_packets, d.rx_bytes), (dc.sent as u64, dc.bytes), "d rx");
    assert_eq!((c.tx_packets, c.tx_bytes), (dc.sent as u64, dc.bytes), "c tx");
    for s in [&c, &d] {
        assert_eq!((s.errors, s.rx_drops, s.tx_drops), (0, 0, 0), "{s:?}");
    }
    eprintln!(
        "{} hostile cases; c <-> d delivered {} packets meanwhile",
        cx.cases,
        cd.received + dc.received
    );
    drop((a, cx.b));
    cx.daemon.stop();
}

#[test]
fn hostile_frontend_cannot_hurt_the_daemon_or_other_ports() {
    let mut cx = start("hostile");
    call_fd_cases(&mut cx);
    ring_cases(&mut cx);
    protocol_cases(&mut cx);
    finish(cx);
}

/// A frontend that shrinks its memfd after SET_MEM_TABLE: podwire's next access to
/// that memory raises SIGBUS. podwire catches it (vhost/src/fault.rs), maps zero pages
/// over the region, disconnects that frontend and counts the error; the daemon lives.
/// (DPDK does not seal its memory files, so podwire cannot require F_SEAL_SHRINK.)
#[test]
fn frontend_truncating_its_memory_does_not_kill_the_daemon() {
    let dir = TempDir::new("sigbus");
    let mut daemon = Daemon::start_vhost_servers(dir.path(), &["a", "b"], &[["a", "b"]]);
    let h = Frontend::connect(&socket(dir.path(), "a"), Options::default());
    // SAFETY: ftruncate on our own memfd; our mapping of it is not touched again.
    assert_eq!(unsafe { libc::ftruncate(h.mem.fd(), 0) }, 0);
    wait_closed(&h.sock, WAIT).unwrap();
    daemon.assert_alive();
    daemon.wait_port("a", WAIT, "errors up", |s| s.errors > 0);
    daemon.stop();
}
