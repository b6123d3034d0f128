//! What the control socket and the metrics port share: the accept loop (bounded
//! polling of a stop flag, a panicking handler costs only its connection), a reader
//! that gives up at a deadline, and lingering after the response.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often an accept loop looks at its stop flag.
const POLL_INTERVAL_MS: i32 = 100;
/// How long [`linger`] waits for the client to hang up.
pub(crate) const LINGER: Duration = Duration::from_millis(200);

/// A connected stream of either listener.
pub(crate) trait Conn {
    fn set_read_deadline(&self, left: Duration) -> std::io::Result<()>;
    fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn shutdown_write(&self);
}

macro_rules! conn_impl {
    ($t:ty) => {
        impl Conn for $t {
            fn set_read_deadline(&self, left: Duration) -> std::io::Result<()> {
                self.set_read_timeout(Some(left))
            }
            fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                (&mut &*self).read(buf)
            }
            fn shutdown_write(&self) {
                let _ = self.shutdown(std::net::Shutdown::Write);
            }
        }
    };
}
conn_impl!(UnixStream);
conn_impl!(TcpStream);

/// A listening socket of either kind.
pub(crate) trait Accept: AsRawFd {
    type Stream;
    fn accept_one(&self) -> std::io::Result<Self::Stream>;
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    fn accept_one(&self) -> std::io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    fn accept_one(&self) -> std::io::Result<TcpStream> {
        self.accept().map(|(s, _)| s)
    }
}

/// Accepts connections on `listener` (non-blocking) and hands each to `handle`,
/// until `stop` is set. `what` names the listener in logs.
pub(crate) fn serve_loop<L: Accept>(
    listener: &L,
    stop: &AtomicBool,
    what: &str,
    handle: impl Fn(L::Stream),
) {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: pfd is one valid pollfd and the count passed is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, POLL_INTERVAL_MS) };
        if rc <= 0 {
            continue;
        }
        match listener.accept_one() {
            Ok(stream) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(stream)));
                if r.is_err() {
                    tracing::error!("{what} request handler panicked; connection dropped");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!("{what} accept failed: {e}");
                std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS as u64));
            }
        }
    }
}

/// A reader that fails with `TimedOut` once `deadline` has passed.
pub(crate) struct DeadlineReader<'a, S: Conn> {
    pub(crate) stream: &'a S,
    pub(crate) deadline: Instant,
}

impl<S: Conn> Read for DeadlineReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_deadline(left)?;
        self.stream.read_some(buf)
    }
}

/// Ends the exchange without losing the response: closing a socket with unread
/// input resets the connection, and the client's read then fails before it sees the
/// answer. So: signal end of response, then discard what the client still sends
/// (bounded in bytes and time) until it hangs up.
pub(crate) fn linger<S: Conn>(stream: &S) {
    const MAX_DISCARD: usize = 1 << 20;
    stream.shutdown_write();
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < MAX_DISCARD {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_deadline(left).is_err() {
            break;
        }
        match stream.read_some(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
}
