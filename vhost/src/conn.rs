//! One vhost-user connection: reads messages (with the file descriptors passed along
//! with them) and writes replies.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::error::ProtocolError;
use crate::proto::{Header, HDR_LEN};

/// Most fds accepted with one message (a memory table has at most 8).
const MAX_FDS: usize = 8;

/// A message from the frontend.
#[derive(Debug)]
pub struct Message {
    /// The header.
    pub hdr: Header,
    /// The payload (exactly `hdr.size` bytes).
    pub payload: Vec<u8>,
    /// File descriptors that came with the header.
    pub fds: Vec<OwnedFd>,
}

/// A connected vhost-user socket.
#[derive(Debug)]
pub struct Connection {
    sock: UnixStream,
}

impl Connection {
    /// Wraps a connected stream.
    pub fn new(sock: UnixStream) -> Self {
        Self { sock }
    }

    /// The socket (for polling and shutdown).
    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Reads one message. Blocks until it is complete (the caller polls first).
    pub fn recv(&mut self) -> Result<Message, ProtocolError> {
        let mut hdr = [0u8; HDR_LEN];
        let (n, fds) = recv_with_fds(&self.sock, &mut hdr)?;
        if n == 0 {
            return Err(ProtocolError::Closed);
        }
        if n < HDR_LEN {
            self.sock.read_exact(&mut hdr[n..]).map_err(eof_is_closed)?;
        }
        let hdr = Header::parse(&hdr)?;
        let mut payload = vec![0u8; hdr.size as usize];
        self.sock.read_exact(&mut payload).map_err(eof_is_closed)?;
        Ok(Message { hdr, payload, fds })
    }

    /// Sends a reply to `request` carrying `payload`.
    pub fn reply(&mut self, request: u32, payload: &[u8]) -> Result<(), ProtocolError> {
        let mut b = Vec::with_capacity(HDR_LEN + payload.len());
        b.extend_from_slice(&Header::reply(request, payload.len()));
        b.extend_from_slice(payload);
        self.sock.write_all(&b).map_err(|e| match e.kind() {
            // The socket's write timeout: the frontend has stopped reading replies.
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ProtocolError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "reply timed out: the frontend does not read its replies",
                ))
            }
            _ => eof_is_closed(e),
        })
    }
}

/// A peer that went away (end of file, connection reset, broken pipe) is a
/// disconnect, not a protocol error: a killed frontend resets the socket when it had
/// unread replies.
fn eof_is_closed(e: std::io::Error) -> ProtocolError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    match e.kind() {
        UnexpectedEof | ConnectionReset | BrokenPipe => ProtocolError::Closed,
        _ => ProtocolError::Io(e),
    }
}

/// recvmsg() into `buf`, collecting SCM_RIGHTS fds. Every fd received is owned (and
/// so closed) even when the message turns out to be bad.
fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>), ProtocolError> {
    let space = cmsg_space(MAX_FDS * std::mem::size_of::<libc::c_int>());
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid starting value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes it states.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(eof_is_closed(e));
        }
        break n as usize;
    };
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled in, bounded
    // by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
                let count = bytes / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                    // The kernel just gave us this fd: we own it.
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(ProtocolError::Malformed(format!("more than {MAX_FDS} fds")));
    }
    Ok((n, fds))
}

fn cmsg_space(len: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE(len as u32) as usize }
}
