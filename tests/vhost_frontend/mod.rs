//! A minimal vhost-user **frontend** (the driver side: what a pod's virtio-user or
//! QEMU is to podwire), written in test code with std and libc only.
//!
//! # Why this exists
//!
//! This is a *test peer*, not a product. It was built because no real frontend can
//! produce hostile input: DPDK's virtio-user and QEMU lay out well-formed rings and
//! send well-formed messages, so they can never show that podwire survives a
//! descriptor loop, an indirect table outside memory or a memory table with nine
//! regions. The well-behaved functional tests use real peers (DPDK `testpmd` with
//! `net_virtio_user`, and QEMU) elsewhere (`tests/vhost_testpmd.rs`,
//! `tests/vhost_qemu.rs`); this frontend's well-behaved mode exists so the same code
//! can check packet integrity byte for byte, and give the hostile cases a correctly
//! set-up connection to break.
//!
//! # What it does
//!
//! * speaks the vhost-user protocol over a unix socket: GET_FEATURES, SET_OWNER,
//!   GET/SET_PROTOCOL_FEATURES (REPLY_ACK, so every setup step is acknowledged),
//!   SET_FEATURES, SET_MEM_TABLE (a memfd passed with SCM_RIGHTS), SET_VRING_NUM /
//!   ADDR / BASE, SET_VRING_KICK / CALL (with the "no fd" flag), SET_VRING_ENABLE and
//!   GET_VRING_BASE;
//! * lays out one queue pair of split rings in its memfd (guest-physical addresses
//!   for descriptors, frontend-virtual addresses for the rings, deliberately
//!   different so a backend that mixes them up fails);
//! * sends packets (guest tx, vring 1) and receives them (guest rx, vring 0), with or
//!   without mergeable rx buffers (12-byte virtio-net header, `num_buffers` at 10);
//! * and, for the hostile tests, sends raw and malformed messages
//!   ([`send_raw`], [`Frontend::send_msg`]) and writes arbitrary descriptors and ring
//!   indexes ([`Frontend::write_desc`], [`Frontend::set_avail_idx`], ...).
//!
//! Packed rings are not implemented here.
//!
//! Shared by two test crates, each of which uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use podwire_vhost::proto::{
    feat, pfeat, req, FLAG_NEED_REPLY, FLAG_REPLY, HDR_LEN, MAX_PAYLOAD, VERSION as FLAG_VERSION,
    VRING_NOFD,
};
use podwire_vhost::ring::DESC_F_WRITE;

/// Vring indexes of the one queue pair.
pub const RX: usize = 0;
pub const TX: usize = 1;

/// Guest-physical address of the first byte of the frontend's memory. Not zero and
/// not the frontend-virtual address, so gpa/uva confusion shows.
pub const GPA_BASE: u64 = 0x4000_0000;
/// Bytes of each tx buffer slot (header + the largest frame, rounded up).
pub const TX_SLOT: u32 = 2048;
/// Bytes of scratch space after the buffers, for hostile tables and buffers.
pub const SCRATCH_LEN: usize = 64 * 1024;

/// How long a reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the frontend sets itself up.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Queue size of both rings.
    pub queue_size: u16,
    /// Bytes of each rx buffer (the device writes header + packet into it).
    pub rx_buf_len: u32,
    /// Negotiate VIRTIO_NET_F_MRG_RXBUF.
    pub mrg_rxbuf: bool,
    /// Negotiate VIRTIO_F_VERSION_1 (12-byte header even without mergeable buffers).
    pub version_1: bool,
    /// Post every rx buffer at setup. Hostile tests that write their own rx
    /// descriptors turn this off.
    pub post_rx: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { queue_size: 256, rx_buf_len: 2048, mrg_rxbuf: false, version_1: true, post_rx: true }
    }
}

/// A split-ring descriptor as the frontend writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Desc {
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// The frontend's "guest memory": one memfd, mapped here and shared with podwire.
pub struct GuestMem {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this object; it is only
// accessed through raw pointers with explicit atomics/volatile where the peer races.
unsafe impl Send for GuestMem {}

impl GuestMem {
    /// A memfd of `len` bytes (rounded up to pages), mapped read-write and shared.
    pub fn new(len: usize) -> Self {
        let len = len.next_multiple_of(4096);
        let fd = memfd(len as u64);
        // SAFETY: mapping a fresh fd of `len` bytes at an address of the kernel's
        // choosing; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Self { fd, base: p.cast(), len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Guest-physical address of byte `off`.
    pub fn gpa(&self, off: usize) -> u64 {
        GPA_BASE + off as u64
    }

    /// Frontend-virtual address of byte `off` (where it is mapped in this process).
    pub fn uva(&self, off: usize) -> u64 {
        self.base as u64 + off as u64
    }

    fn check(&self, off: usize, n: usize) {
        assert!(off.checked_add(n).is_some_and(|e| e <= self.len), "{off}+{n} outside memory");
    }

    pub fn write(&self, off: usize, data: &[u8]) {
        self.check(off, data.len());
        // SAFETY: off..off+len is inside the mapping (checked); the peer only writes
        // buffers the frontend handed it, which this code does not write meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off), data.len()) };
    }

    pub fn read(&self, off: usize, n: usize) -> Vec<u8> {
        self.check(off, n);
        let mut v = vec![0u8; n];
        // SAFETY: inside the mapping (checked); see `write`.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(off), v.as_mut_ptr(), n) };
        v
    }

    /// The 16-bit field at `off` (2-aligned), shared with the peer.
    pub fn u16_at(&self, off: usize) -> &AtomicU16 {
        self.check(off, 2);
        assert_eq!(off % 2, 0);
        // SAFETY: inside the mapping and 2-aligned (checked); the reference does not
        // outlive `self`, which keeps the mapping.
        unsafe { &*(self.base.add(off) as *const AtomicU16) }
    }

    pub fn read_u32(&self, off: usize) -> u32 {
        self.check(off, 4);
        // SAFETY: inside the mapping (checked); volatile because the peer writes it.
        unsafe { std::ptr::read_volatile(self.base.add(off) as *const u32) }
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A fresh memfd of `len` bytes.
pub fn memfd(len: u64) -> OwnedFd {
    // SAFETY: static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"vhost-test-frontend".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: valid fd.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) };
    assert_eq!(rc, 0, "ftruncate: {}", std::io::Error::last_os_error());
    fd
}

/// Where one split ring lives in the memory, and the frontend's view of it.
#[derive(Debug, Clone)]
pub struct Vq {
    pub size: u16,
    pub desc: usize,
    pub avail: usize,
    pub used: usize,
    /// First buffer slot, and bytes per slot (descriptor i uses slot i).
    pub bufs: usize,
    pub slot: u32,
    /// Next avail index the frontend will publish.
    pub avail_idx: u16,
    /// Used entries consumed so far.
    pub last_used: u16,
    /// Free descriptor ids (tx).
    free: Vec<u16>,
}

impl Vq {
    fn slot_off(&self, id: u16) -> usize {
        self.bufs + id as usize * self.slot as usize
    }
}

/// Encodes a message: header (request, flags, size) then payload.
pub fn encode(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HDR_LEN + payload.len());
    b.extend_from_slice(&request.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

/// Sends `bytes` in one sendmsg, with `fds` attached as SCM_RIGHTS. Errors are
/// returned, not asserted: a hostile test may be writing to a socket podwire has
/// already closed.
pub fn send_raw(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid starting value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is `space` bytes, enough for one header and
        // `fds.len()` ints (CMSG_SPACE); CMSG_FIRSTHDR/DATA point inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fd_bytes);
        }
    }
    // SAFETY: msg points at live buffers of the sizes it states.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if (n as usize) < bytes.len() {
        (&*sock).write_all(&bytes[n as usize..])?;
    }
    Ok(())
}

/// Waits until podwire closes `sock`: a read returns end-of-file (or ECONNRESET, which
/// a unix socket reports when it was closed with our bytes still unread). Anything
/// podwire sends meanwhile (an ack) is skipped. Returns an error on timeout.
pub fn wait_closed(sock: &UnixStream, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("podwire did not close the connection within {timeout:?}"));
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match (&*sock).read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Connects to `path`, retrying while the socket is not there yet.
pub fn connect(path: &Path, timeout: Duration) -> UnixStream {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One connection to a podwire vhost-user port, with its memory and rings.
pub struct Frontend {
    pub sock: UnixStream,
    pub mem: GuestMem,
    pub opts: Options,
    pub features: u64,
    pub hdr_len: usize,
    reply_ack: bool,
    pub vq: [Vq; 2],
    /// First byte of the scratch area.
    pub scratch: usize,
    /// Most rx buffers one received packet spanned.
    pub rx_max_buffers: u16,
}

impl Frontend {
    /// Connects to `path` and sets the device up, as virtio-user does: both rings
    /// started and enabled, every step acknowledged.
    pub fn connect(path: &Path, opts: Options) -> Self {
        let sock = connect(path, Duration::from_secs(10));
        Self::setup(sock, opts)
    }

    /// Lays out memory and rings for `opts` and runs the setup over `sock`.
    pub fn setup(sock: UnixStream, opts: Options) -> Self {
        let mut f = Self::unconfigured(sock, opts);
        f.negotiate();
        f.send_mem_table();
        f.setup_rings();
        f
    }

    /// Memory and ring layout, nothing sent yet.
    pub fn unconfigured(sock: UnixStream, opts: Options) -> Self {
        sock.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let n = opts.queue_size as usize;
        let page = |x: usize| x.next_multiple_of(4096);
        let mut off = 0usize;
        let mut ring = |slot: u32| {
            let desc = off;
            let avail = desc + page(16 * n);
            let used = avail + page(6 + 2 * n);
            let bufs = used + page(6 + 8 * n);
            off = bufs + page(n * slot as usize);
            Vq {
                size: opts.queue_size,
                desc,
                avail,
                used,
                bufs,
                slot,
                avail_idx: 0,
                last_used: 0,
                free: (0..opts.queue_size).rev().collect(),
            }
        };
        let rx = ring(opts.rx_buf_len);
        let tx = ring(TX_SLOT);
        let scratch = off;
        let mem = GuestMem::new(scratch + SCRATCH_LEN);
        let hdr_len = if opts.mrg_rxbuf || opts.version_1 { 12 } else { 10 };
        Self {
            sock,
            mem,
            opts,
            features: 0,
            hdr_len,
            reply_ack: false,
            vq: [rx, tx],
            scratch,
            rx_max_buffers: 0,
        }
    }

    /// Sends one message (no fds), without waiting for anything.
    pub fn send_msg(&self, request: u32, flags: u32, payload: &[u8]) -> std::io::Result<()> {
        send_raw(&self.sock, &encode(request, flags, payload), &[])
    }

    /// Reads one reply to `request` and returns its payload.
    pub fn recv_reply(&mut self, request: u32) -> Vec<u8> {
        let mut hdr = [0u8; HDR_LEN];
        self.sock.read_exact(&mut hdr).unwrap_or_else(|e| panic!("reply to {request}: {e}"));
        let code = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
        assert_eq!(code, request, "reply to the wrong request");
        assert_eq!(flags & 0x7, FLAG_VERSION | FLAG_REPLY, "reply flags {flags:#x}");
        assert!(size <= MAX_PAYLOAD, "reply of {size} bytes");
        let mut p = vec![0u8; size];
        self.sock.read_exact(&mut p).unwrap();
        p
    }

    /// Sends a request that expects a u64 answer.
    pub fn get_u64(&mut self, request: u32) -> u64 {
        self.send_msg(request, FLAG_VERSION, &[]).unwrap();
        let p = self.recv_reply(request);
        assert_eq!(p.len(), 8);
        u64::from_le_bytes(p.try_into().unwrap())
    }

    /// Sends a setter with `fds`; when REPLY_ACK is on, waits for a success ack.
    pub fn set(&mut self, request: u32, payload: &[u8], fds: &[RawFd]) {
        let flags = if self.reply_ack { FLAG_VERSION | FLAG_NEED_REPLY } else { FLAG_VERSION };
        send_raw(&self.sock, &encode(request, flags, payload), fds)
            .unwrap_or_else(|e| panic!("send request {request}: {e}"));
        if self.reply_ack {
            let p = self.recv_reply(request);
            assert_eq!(p, 0u64.to_le_bytes(), "podwire refused request {request}");
        }
    }

    /// SET_OWNER, features, protocol features (with REPLY_ACK).
    pub fn negotiate(&mut self) {
        self.set(req::SET_OWNER, &[], &[]);
        let offered = self.get_u64(req::GET_FEATURES);
        let mut want = feat::VHOST_USER_F_PROTOCOL_FEATURES;
        if self.opts.version_1 {
            want |= feat::F_VERSION_1;
        }
        if self.opts.mrg_rxbuf {
            want |= feat::NET_F_MRG_RXBUF;
        }
        assert_eq!(offered & want, want, "podwire offers {offered:#x}");
        let pf = self.get_u64(req::GET_PROTOCOL_FEATURES);
        assert!(pf & pfeat::REPLY_ACK != 0, "no REPLY_ACK in {pf:#x}");
        self.set(req::SET_PROTOCOL_FEATURES, &pfeat::REPLY_ACK.to_le_bytes(), &[]);
        self.reply_ack = true;
        self.set(req::SET_FEATURES, &want.to_le_bytes(), &[]);
        self.features = want;
    }

    /// The SET_MEM_TABLE payload for our one region.
    pub fn mem_table_payload(&self) -> Vec<u8> {
        mem_table_payload(&[(self.mem.gpa(0), self.mem.len() as u64, self.mem.uva(0), 0)])
    }

    pub fn send_mem_table(&mut self) {
        let p = self.mem_table_payload();
        let fd = self.mem.fd();
        self.set(req::SET_MEM_TABLE, &p, &[fd]);
    }

    /// SET_VRING_NUM/BASE/ADDR/KICK/CALL for both rings, posts rx buffers, then
    /// enables both rings (podwire starts polling when the enable is acknowledged).
    pub fn setup_rings(&mut self) {
        for i in [RX, TX] {
            let q = self.vq[i].clone();
            self.set(req::SET_VRING_NUM, &state(i as u32, q.size as u32), &[]);
            self.set(req::SET_VRING_BASE, &state(i as u32, 0), &[]);
            let addr = vring_addr(
                i as u32,
                self.mem.uva(q.desc),
                self.mem.uva(q.used),
                self.mem.uva(q.avail),
            );
            self.set(req::SET_VRING_ADDR, &addr, &[]);
            self.set(req::SET_VRING_KICK, &(i as u64 | VRING_NOFD).to_le_bytes(), &[]);
            self.set(req::SET_VRING_CALL, &(i as u64 | VRING_NOFD).to_le_bytes(), &[]);
        }
        if self.opts.post_rx {
            let q = self.vq[RX].clone();
            for id in 0..q.size {
                let d = Desc {
                    addr: self.mem.gpa(q.slot_off(id)),
                    len: q.slot,
                    flags: DESC_F_WRITE,
                    next: 0,
                };
                self.write_desc(RX, id, d);
                self.push_avail(RX, id);
            }
            self.publish_avail(RX);
        }
        self.enable(RX);
        self.enable(TX);
    }

    pub fn enable(&mut self, vring: usize) {
        self.set(req::SET_VRING_ENABLE, &state(vring as u32, 1), &[]);
    }

    /// GET_VRING_BASE: stops the ring and returns where podwire stopped.
    pub fn get_vring_base(&mut self, vring: usize) -> u32 {
        self.send_msg(req::GET_VRING_BASE, FLAG_VERSION, &state(vring as u32, 0)).unwrap();
        let p = self.recv_reply(req::GET_VRING_BASE);
        assert_eq!(p.len(), 8);
        assert_eq!(u32::from_le_bytes(p[0..4].try_into().unwrap()), vring as u32);
        u32::from_le_bytes(p[4..8].try_into().unwrap())
    }

    // ---- raw ring access (also what the hostile tests use) ----

    /// Writes descriptor `id` of `vring`'s table.
    pub fn write_desc(&self, vring: usize, id: u16, d: Desc) {
        let q = &self.vq[vring];
        assert!(id < q.size);
        self.mem.write(q.desc + 16 * id as usize, &d.to_bytes());
    }

    /// Writes a descriptor table of `descs` at byte `off` (an indirect table).
    pub fn write_table(&self, off: usize, descs: &[Desc]) {
        for (i, d) in descs.iter().enumerate() {
            self.mem.write(off + 16 * i, &d.to_bytes());
        }
    }

    /// Puts `head` in the next avail slot (not published yet).
    pub fn push_avail(&mut self, vring: usize, head: u16) {
        let q = &mut self.vq[vring];
        let slot = q.avail + 4 + 2 * (q.avail_idx % q.size) as usize;
        self.mem.u16_at(slot).store(head, Ordering::Relaxed);
        q.avail_idx = q.avail_idx.wrapping_add(1);
    }

    /// Publishes the avail index (release: entries and buffers are visible first).
    pub fn publish_avail(&self, vring: usize) {
        let q = &self.vq[vring];
        self.mem.u16_at(q.avail + 2).store(q.avail_idx, Ordering::Release);
    }

    /// Sets the published avail index to anything.
    pub fn set_avail_idx(&mut self, vring: usize, idx: u16) {
        self.vq[vring].avail_idx = idx;
        self.publish_avail(vring);
    }

    pub fn used_idx(&self, vring: usize) -> u16 {
        self.mem.u16_at(self.vq[vring].used + 2).load(Ordering::Acquire)
    }

    /// Used entry `i` (mod size): (id, len).
    pub fn used_entry(&self, vring: usize, i: u16) -> (u32, u32) {
        let q = &self.vq[vring];
        let e = q.used + 4 + 8 * (i % q.size) as usize;
        (self.mem.read_u32(e), self.mem.read_u32(e + 4))
    }

    /// Guest-physical address of tx slot `id`.
    pub fn tx_slot_gpa(&self, id: u16) -> u64 {
        self.mem.gpa(self.vq[TX].slot_off(id))
    }

    /// Writes a header and `pkt` into tx slot `id`; returns the bytes written.
    pub fn fill_tx_slot(&self, id: u16, pkt: &[u8]) -> u32 {
        let q = &self.vq[TX];
        let total = self.hdr_len + pkt.len();
        assert!(total <= q.slot as usize, "packet of {} bytes too big", pkt.len());
        let mut b = vec![0u8; total];
        b[self.hdr_len..].copy_from_slice(pkt);
        self.mem.write(q.slot_off(id), &b);
        total as u32
    }

    // ---- well-behaved datapath ----

    /// Returns tx descriptors podwire has used to the free list.
    pub fn reclaim_tx(&mut self) {
        let used = self.used_idx(TX);
        while self.vq[TX].last_used != used {
            let (id, _) = self.used_entry(TX, self.vq[TX].last_used);
            let q = &mut self.vq[TX];
            assert!(id < q.size as u32, "podwire returned tx descriptor {id}");
            assert!(!q.free.contains(&(id as u16)), "tx descriptor {id} returned twice");
            q.free.push(id as u16);
            q.last_used = q.last_used.wrapping_add(1);
        }
    }

    /// Free tx descriptors.
    pub fn tx_free(&self) -> usize {
        self.vq[TX].free.len()
    }

    /// Queues one packet for podwire (guest tx); false when the ring is full.
    /// Published at once.
    pub fn send(&mut self, pkt: &[u8]) -> bool {
        let Some(id) = self.vq[TX].free.pop() else { return false };
        let len = self.fill_tx_slot(id, pkt);
        self.write_desc(TX, id, Desc { addr: self.tx_slot_gpa(id), len, flags: 0, next: 0 });
        self.push_avail(TX, id);
        self.publish_avail(TX);
        true
    }

    /// Takes the next received packet (guest rx) if a whole one is there, checks its
    /// virtio-net header, and gives its buffers back to podwire.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let used = self.used_idx(RX);
        let ready = used.wrapping_sub(self.vq[RX].last_used);
        if ready == 0 {
            return None;
        }
        let size = self.vq[RX].size;
        assert!(ready <= size, "used index moved by {ready} on a ring of {size}");
        let first = self.vq[RX].last_used;
        let (id, len) = self.used_entry(RX, first);
        let slot = self.vq[RX].slot;
        assert!(id < size as u32 && len <= slot, "bad used entry ({id}, {len})");
        let head = self.mem.read(self.vq[RX].slot_off(id as u16), len as usize);
        assert!(head.len() >= self.hdr_len, "rx buffer of {len} bytes has no header");
        let num_buffers =
            if self.hdr_len == 12 { u16::from_le_bytes([head[10], head[11]]) } else { 1 };
        assert!(
            head[..10].iter().all(|&b| b == 0),
            "virtio-net header {:?}: podwire asks for no offloads",
            &head[..self.hdr_len]
        );
        if !self.features_have(feat::NET_F_MRG_RXBUF) {
            assert_eq!(num_buffers, 1, "num_buffers without mergeable rx buffers");
        }
        assert!(num_buffers >= 1, "num_buffers = 0");
        if ready < num_buffers {
            // podwire publishes a packet's buffers together; wait for the rest.
            return None;
        }
        let mut pkt = head[self.hdr_len..].to_vec();
        let mut ids = vec![id as u16];
        for k in 1..num_buffers {
            let (id, len) = self.used_entry(RX, first.wrapping_add(k));
            assert!(id < size as u32 && len <= slot, "bad used entry ({id}, {len})");
            assert!(len > 0, "empty merged buffer");
            pkt.extend_from_slice(&self.mem.read(self.vq[RX].slot_off(id as u16), len as usize));
            ids.push(id as u16);
        }
        self.vq[RX].last_used = first.wrapping_add(num_buffers);
        self.rx_max_buffers = self.rx_max_buffers.max(num_buffers);
        for id in ids {
            // Descriptor `id` still points at slot `id`: give the same buffer back.
            self.push_avail(RX, id);
        }
        self.publish_avail(RX);
        Some(pkt)
    }

    pub fn features_have(&self, f: u64) -> bool {
        self.features & f != 0
    }
}

/// A vring state payload (index, num).
pub fn state(index: u32, num: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&index.to_le_bytes());
    b[4..].copy_from_slice(&num.to_le_bytes());
    b
}

/// A SET_VRING_ADDR payload.
pub fn vring_addr(index: u32, desc: u64, used: u64, avail: u64) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[0..4].copy_from_slice(&index.to_le_bytes());
    b[8..16].copy_from_slice(&desc.to_le_bytes());
    b[16..24].copy_from_slice(&used.to_le_bytes());
    b[24..32].copy_from_slice(&avail.to_le_bytes());
    b
}

/// A SET_MEM_TABLE payload for regions (gpa, size, uva, mmap_offset).
pub fn mem_table_payload(regions: &[(u64, u64, u64, u64)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 32 * regions.len());
    b.extend_from_slice(&(regions.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for &(gpa, size, uva, off) in regions {
        for v in [gpa, size, uva, off] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

// ---- test packets ----

/// Ethertype of test packets (IEEE local experimental).
pub const TEST_ETHERTYPE: u16 = 0x88b5;

/// Size of packet `seq` of a flow: 60..=1514, both ends included early, the rest
/// spread pseudo-randomly.
pub fn packet_len(seq: u32) -> usize {
    match seq % 1000 {
        0 => 60,
        1 => 1514,
        2 => 61,
        3 => 1513,
        _ => {
            let x = seq.wrapping_mul(2_654_435_761).rotate_left(13);
            60 + (x % 1455) as usize
        }
    }
}

/// Packet `seq` of flow `flow`: Ethernet header, then flow, sequence number and
/// length, then bytes that depend on all three, so any corruption, reordering,
/// truncation or mix-up between flows shows.
pub fn make_packet(flow: u8, seq: u32, len: usize) -> Vec<u8> {
    assert!((60..=1514).contains(&len));
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&[0x02, 0, 0, 0, 0xd0, flow]); // dst
    p.extend_from_slice(&[0x02, 0, 0, 0, 0x50, flow]); // src
    p.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    p.push(flow);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(len as u16).to_be_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9) ^ ((flow as u32) << 24) ^ len as u32;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p.push(x as u8);
    }
    p
}

/// Checks that `got` is exactly packet `seq` of `flow`; describes the difference.
pub fn check_packet(flow: u8, seq: u32, got: &[u8]) -> Result<(), String> {
    if got.len() < 21 {
        return Err(format!("flow {flow}: runt of {} bytes where #{seq} was due", got.len()));
    }
    let got_flow = got[14];
    let got_seq = u32::from_be_bytes(got[15..19].try_into().unwrap());
    if got_flow != flow || got_seq != seq {
        return Err(format!(
            "flow {flow}: got packet #{got_seq} of flow {got_flow} where #{seq} was due"
        ));
    }
    let want = make_packet(flow, seq, packet_len(seq));
    if got != want.as_slice() {
        let at = got.iter().zip(&want).position(|(a, b)| a != b);
        return Err(format!(
            "flow {flow}: packet #{seq} corrupted: {} bytes (want {}), first difference at {at:?}",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

/// One direction of test traffic between two frontends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flow {
    pub id: u8,
    /// Packets to send in all.
    pub total: u32,
    pub sent: u32,
    pub received: u32,
    pub bytes: u64,
}

impl Flow {
    pub fn new(id: u8, total: u32) -> Self {
        Self { id, total, ..Default::default() }
    }

    pub fn done(&self) -> bool {
        self.received == self.total
    }

    /// Sends what the window allows from `src`, takes what arrived at `dst` and checks
    /// each packet. Returns whether anything moved.
    pub fn step(
        &mut self,
        src: &mut Frontend,
        dst: &mut Frontend,
        window: u32,
    ) -> Result<bool, String> {
        let mut moved = false;
        src.reclaim_tx();
        while self.sent < self.total && self.sent - self.received < window {
            let len = packet_len(self.sent);
            if !src.send(&make_packet(self.id, self.sent, len)) {
                break;
            }
            self.bytes += len as u64;
            self.sent += 1;
            moved = true;
        }
        while let Some(p) = dst.recv() {
            if self.received >= self.sent {
                return Err(format!("flow {}: packet arrived that was never sent", self.id));
            }
            check_packet(self.id, self.received, &p)?;
            self.received += 1;
            moved = true;
        }
        Ok(moved)
    }
}

/// Runs `flows` (each a flow and whether it goes from `a` to `b`) until all are done,
/// the deadline passes, or a packet is wrong. Nothing is lost in a lossless setup
/// (the window keeps rx rings from overflowing), so a stall is an error.
pub fn run_flows(
    a: &mut Frontend,
    b: &mut Frontend,
    flows: &mut [(Flow, bool)],
    window: u32,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last_progress = Instant::now();
    while !flows.iter().all(|(f, _)| f.done()) {
        let mut moved = false;
        for (f, a_to_b) in flows.iter_mut() {
            moved |= if *a_to_b { f.step(a, b, window)? } else { f.step(b, a, window)? };
        }
        let now = Instant::now();
        if moved {
            last_progress = now;
        } else {
            if now > deadline || now - last_progress > Duration::from_secs(3) {
                return Err(format!("traffic stalled: {flows:?}"));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Ok(())
}
