//! The vhost-user message decoder and device (vhost/src/conn.rs, proto.rs,
//! device.rs): the input is a byte stream a frontend writes on the socket, cut into
//! `sendmsg` calls that may carry file descriptors; podwire's `Connection` reads it
//! message by message and its `Device` handles each one, as a port's control thread
//! does, and the rings the device starts are polled once after every message.
//!
//! Input: records `fds u8, len u16, bytes[len]`. `fds`: low 4 bits = how many
//! descriptors go with the record (more than 8 is a frontend overflowing the control
//! buffer); bits 4-5 = their kind (0: a 64 KiB memfd, 1: an eventfd, 2: a pipe,
//! 3: a 4 KiB memfd).
//!
//! Beyond "no panic":
//! - every message read has a payload of exactly its header's size, at most
//!   `MAX_PAYLOAD`, the protocol version in its flags and at most 8 fds;
//! - every reply is well formed: version and reply flag, the request's code, a
//!   payload of the size its header states (8 bytes for an ack);
//! - after the connection is gone no descriptor is left open (no fd leaks, whatever
//!   was sent), and every packet buffer is back in the pool.
#![no_main]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use podwire_driver::port::QueueCounters;
use podwire_driver::MacAddr;
use podwire_fuzz::ring::{eventfd, packets};
use podwire_fuzz::{buffers_in_use, open_fds, pool, Bytes};
use podwire_vhost::conn::Connection;
use podwire_vhost::device::Device;
use podwire_vhost::handoff::{Change, Handoff, Ring};
use podwire_vhost::proto::{FLAG_REPLY, HDR_LEN, MAX_PAYLOAD, VERSION};
use podwire_vhost::ProtocolError;

const QUEUES: u16 = 2;

fn memfd(len: i64) -> OwnedFd {
    // SAFETY: static NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"fuzz-guest".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: valid fd.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }, 0);
    fd
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0 as RawFd; 2];
    // SAFETY: p has room for the two fds; the result is checked.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds we own.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

/// Sends `bytes` with `fds` attached (SCM_RIGHTS).
fn send(sock: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> bool {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let data_len = std::mem::size_of_val(&raw[..]);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid starting value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds one cmsg of data_len bytes.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(c).cast(), raw.len());
        }
    }
    // SAFETY: msg points at live buffers of the sizes it states. MSG_DONTWAIT: the
    // reader only runs once everything is sent, so a full socket buffer ends the
    // stream instead of blocking forever.
    unsafe {
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            == bytes.len() as isize
    }
}

/// Checks and discards every reply waiting on the frontend's end; `code` is the
/// request just handled.
fn check_replies(front: &mut UnixStream, code: u32) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match front.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break, // WouldBlock: all read
        }
    }
    let mut b = &buf[..];
    while !b.is_empty() {
        assert!(b.len() >= HDR_LEN, "truncated reply header");
        let req = u32::from_le_bytes(b[0..4].try_into().unwrap());
        let flags = u32::from_le_bytes(b[4..8].try_into().unwrap());
        let size = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        assert_eq!(req, code, "reply to another request");
        assert_eq!(flags, VERSION | FLAG_REPLY, "reply flags");
        assert!(b.len() >= HDR_LEN + size, "reply shorter than its header says");
        assert!(size <= MAX_PAYLOAD, "reply payload of {size} bytes");
        b = &b[HDR_LEN + size..];
    }
}

fuzz_target!(|data: &[u8]| {
    pool(); // made once per process (it may hold an fd): before the count
    let fds0 = open_fds();
    run(data);
    assert_eq!(open_fds(), fds0, "file descriptors leaked");
    assert_eq!(buffers_in_use(), 0, "packet buffers leaked");
});

fn run(data: &[u8]) {
    let (mut front, back) = UnixStream::pair().expect("socketpair");
    let mut b = Bytes::new(data);
    let mut sent = 0usize;
    while !b.is_empty() {
        let sel = b.u8();
        let len = b.u16() as usize % 1024;
        let bytes = b.take(len);
        let fds: Vec<OwnedFd> = (0..(sel & 15))
            .map(|_| match sel >> 4 & 3 {
                0 => memfd(64 << 10),
                1 => eventfd(),
                2 => pipe().0,
                _ => memfd(4 << 10),
            })
            .collect();
        // Stay below the socket buffer: the reader runs after the writer. A send that
        // would block (many small sends fill the buffer with their overhead) or fails
        // ends the stream: what follows a partial send would be garbage anyway.
        if bytes.is_empty() {
            continue;
        }
        if sent + bytes.len() > 64 << 10 || !send(&front, bytes, &fds) {
            break;
        }
        sent += bytes.len();
        // Our copies of the fds close here; the socket holds its own.
    }
    front.shutdown(std::net::Shutdown::Write).expect("shutdown");
    front.set_nonblocking(true).expect("nonblocking");

    let handoff = Arc::new(Handoff::new(2 * QUEUES as usize + 1));
    // No worker thread: changes are taken below, right after each message.
    handoff.ack(u64::MAX);
    let mut conn = Connection::new(back);
    let mut dev = Device::new("fuzz", MacAddr([2, 0, 0, 0, 0, 9]), QUEUES, handoff.clone());
    let mut rings: Vec<Option<Ring>> = (0..2 * QUEUES as usize + 1).map(|_| None).collect();
    let q = QueueCounters::default();
    let mut serial = 0;
    loop {
        let msg = match conn.recv() {
            Ok(m) => m,
            Err(ProtocolError::Closed) => break,
            Err(_) => break,
        };
        assert_eq!(msg.payload.len(), msg.hdr.size as usize, "payload size");
        assert!(msg.payload.len() <= MAX_PAYLOAD);
        assert_eq!(msg.hdr.flags & 3, VERSION);
        assert!(msg.fds.len() <= 8, "{} fds accepted", msg.fds.len());
        let code = msg.hdr.request;
        let r = dev.handle(msg, &mut conn);
        check_replies(&mut front, code);
        let (changes, _) = handoff.take();
        for c in changes {
            match c {
                Change::Start(i, ring) => rings[i] = Some(*ring),
                Change::Stop(i) => {
                    if let Some(r) = rings[i].take() {
                        handoff.bases[i].store(r.base(), Ordering::Release);
                    }
                }
            }
        }
        if r.is_err() {
            break;
        }
        // Poll every running ring once, as the worker does.
        let mut broken = false;
        for ring in rings.iter_mut().flatten() {
            let mut out = Vec::new();
            let mut bufs = packets(2, 60, 1, &mut serial);
            let r = match ring {
                Ring::Split(s) => {
                    s.dequeue(pool(), &mut out, 4, &q).and_then(|_| s.enqueue(&mut bufs, &q))
                }
                Ring::Packed(p) => {
                    p.dequeue(pool(), &mut out, 4, &q).and_then(|_| p.enqueue(&mut bufs, &q))
                }
            };
            broken |= r.is_err();
        }
        if broken || dev.memory_faulted() {
            break;
        }
    }
    drop(dev);
    for (i, c) in handoff.take().0.into_iter().enumerate() {
        if let Change::Stop(j) = c {
            rings[j] = None;
        } else {
            panic!("change {i} of a dropped device starts a ring");
        }
    }
    drop(rings);
    drop(conn);
    drop(front);
}
