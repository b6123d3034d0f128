//! [`VhostUserPort`]: the Port the worker polls, and the control thread that serves
//! its socket (server or client mode, reconnecting forever).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use podwire_driver::port::bump;
use podwire_driver::{MacAddr, Mempool, PacketBuf, Port, PortCounters, PortInfo};

use crate::conn::Connection;
use crate::device::Device;
use crate::error::{ProtocolError, RingError, VhostError};
use crate::handoff::{Change, Handoff, Ring};

/// Who listens on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMode {
    /// podwire listens; the frontend (virtio-user, QEMU) connects.
    Server,
    /// The frontend listens (virtio-user `server=1`); podwire connects and reconnects.
    Client,
}

/// Configuration of one vhost-user port.
#[derive(Debug, Clone, PartialEq)]
pub struct VhostUserConfig {
    /// Port name (for logs and counters).
    pub name: String,
    /// Path of the unix socket.
    pub socket: PathBuf,
    /// Server or client.
    pub mode: SocketMode,
    /// Queue pairs offered to the frontend (1 or more).
    pub queues: u16,
    /// MAC address given to the guest; random locally administered if `None`.
    pub mac: Option<MacAddr>,
    /// Permission bits of the socket file (server mode).
    pub socket_perms: u32,
    /// Group owning the socket file (server mode), by name.
    pub socket_group: Option<String>,
}

/// Most queue pairs a port offers.
pub const MAX_QUEUE_PAIRS: u16 = 16;

/// How long a reply may wait for the frontend to make room in the socket before the
/// frontend is dropped.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A vhost-user-net port.
pub struct VhostUserPort {
    name: String,
    mac: MacAddr,
    queues: u16,
    pool: Mempool,
    counters: Arc<PortCounters>,
    handoff: Arc<Handoff>,
    seen_epoch: u64,
    /// Indexed by vring: even = guest rx (we enqueue), odd = guest tx (we dequeue).
    rings: Vec<Option<Ring>>,
    stop: Arc<AtomicBool>,
    /// Written on drop so that the control thread, blocked in `poll`, sees `stop` at
    /// once rather than at its next poll timeout.
    wake: Arc<OwnedFd>,
    control: Option<JoinHandle<()>>,
    socket: PathBuf,
    owns_socket: bool,
    /// Whether this worker told the control thread it polls the port.
    attached: bool,
}

impl VhostUserPort {
    /// Creates the port: binds its socket (server) or starts connecting (client), and
    /// starts its control thread.
    pub fn new(cfg: VhostUserConfig, pool: Mempool) -> Result<Self, VhostError> {
        if cfg.queues == 0 || cfg.queues > MAX_QUEUE_PAIRS {
            return Err(VhostError::Config(format!(
                "port {}: queues = {} (1 to {MAX_QUEUE_PAIRS})",
                cfg.name, cfg.queues
            )));
        }
        let mac = cfg.mac.unwrap_or_else(MacAddr::random_local);
        let vrings = 2 * cfg.queues as usize + 1;
        let handoff = Arc::new(Handoff::new(vrings));
        let counters = PortCounters::new(cfg.queues);
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(new_eventfd()?);
        let listener = match cfg.mode {
            SocketMode::Server => Some(bind_socket(&cfg)?),
            SocketMode::Client => None,
        };
        let ctl = Control {
            name: cfg.name.clone(),
            socket: cfg.socket.clone(),
            mac,
            queues: cfg.queues,
            handoff: handoff.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            wake: wake.clone(),
        };
        let control = std::thread::Builder::new()
            .name(format!("vhost-{}", cfg.name))
            .spawn(move || ctl.run(listener))
            .map_err(|e| VhostError::io("spawn control thread", e))?;
        tracing::info!(
            port = %cfg.name,
            socket = %cfg.socket.display(),
            mode = ?cfg.mode,
            queues = cfg.queues,
            %mac,
            "vhost-user port ready"
        );
        Ok(Self {
            name: cfg.name,
            mac,
            queues: cfg.queues,
            pool,
            counters,
            handoff,
            seen_epoch: 0,
            rings: (0..vrings).map(|_| None).collect(),
            stop,
            wake,
            control: Some(control),
            socket: cfg.socket,
            owns_socket: cfg.mode == SocketMode::Server,
            attached: false,
        })
    }

    /// Applies ring changes from the control thread. Called at most once per burst
    /// call, only when the epoch moved.
    #[cold]
    fn resync(&mut self) {
        if !self.attached {
            self.attached = true;
            self.handoff.attached.store(true, Ordering::Release);
        }
        let (changes, epoch) = self.handoff.take();
        for c in changes {
            match c {
                Change::Start(i, ring) => {
                    if let Some(slot) = self.rings.get_mut(i) {
                        *slot = Some(*ring);
                    }
                }
                Change::Stop(i) => {
                    if let Some(r) = self.rings.get_mut(i).and_then(Option::take) {
                        self.handoff.bases[i].store(r.base(), Ordering::Release);
                    }
                }
            }
        }
        self.seen_epoch = epoch;
        self.handoff.ack(epoch);
    }

    /// A ring broke the rules: stop using every ring of this frontend and have the
    /// control thread disconnect it.
    #[cold]
    fn fail(&mut self, vring: usize, e: RingError) {
        tracing::warn!(port = %self.name, vring, error = %e, "frontend broke the ring; disconnecting it");
        bump(&self.counters.queue((vring / 2) as u16).errors, 1);
        for r in &mut self.rings {
            *r = None;
        }
        self.handoff.broken.store(true, Ordering::Release);
    }
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        wake_up(&self.wake);
        // Nobody polls any more: the control thread must not wait for this side.
        self.handoff.attached.store(false, Ordering::Release);
        // The control thread waits for this worker side to acknowledge ring changes;
        // we will never poll again, so drop the rings and acknowledge everything.
        for r in &mut self.rings {
            *r = None;
        }
        if let Some(h) = self.control.take() {
            while !h.is_finished() {
                let (_, epoch) = self.handoff.take();
                self.handoff.ack(epoch);
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = h.join();
        }
        if self.owns_socket {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Port for VhostUserPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> PortInfo {
        PortInfo { kind: "vhost-user", mac: self.mac, queues: self.queues }
    }

    /// Applies and acknowledges ring changes while no worker polls the port, so that
    /// the control thread answers the frontend at once (GET_VRING_BASE waits for it).
    fn service(&mut self) {
        if self.handoff.pending(self.seen_epoch) {
            self.resync();
        }
    }

    fn link_up(&self) -> bool {
        self.handoff.link.load(Ordering::Relaxed)
    }

    #[inline]
    fn rx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>, max: usize) -> usize {
        if !self.attached || self.handoff.pending(self.seen_epoch) {
            self.resync();
        }
        let vring = 2 * queue as usize + 1;
        let q = self.counters.queue(queue);
        let res = match self.rings.get_mut(vring) {
            Some(Some(Ring::Split(r))) => r.dequeue(&self.pool, bufs, max, q),
            Some(Some(Ring::Packed(r))) => r.dequeue(&self.pool, bufs, max, q),
            _ => return 0,
        };
        match res {
            Ok(n) => n,
            Err(e) => {
                self.fail(vring, e);
                0
            }
        }
    }

    #[inline]
    fn tx_burst(&mut self, queue: u16, bufs: &mut Vec<PacketBuf>) -> usize {
        if !self.attached || self.handoff.pending(self.seen_epoch) {
            self.resync();
        }
        let vring = 2 * queue as usize;
        let q = self.counters.queue(queue);
        let res = match self.rings.get_mut(vring) {
            Some(Some(Ring::Split(r))) => r.enqueue(bufs, q),
            Some(Some(Ring::Packed(r))) => r.enqueue(bufs, q),
            _ => return 0,
        };
        match res {
            Ok(n) => n,
            Err(e) => {
                self.fail(vring, e);
                0
            }
        }
    }

    fn counters(&self) -> Arc<PortCounters> {
        self.counters.clone()
    }
}

/// Creates the listening socket: parent directories as needed, a stale socket file
/// replaced (a live one is refused), permissions and group applied.
fn bind_socket(cfg: &VhostUserConfig) -> Result<UnixListener, VhostError> {
    let path = &cfg.socket;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| VhostError::io(format!("create directory {}", dir.display()), e))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(VhostError::Config(format!(
                "{} exists and is not a socket: refusing to replace it",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(VhostError::Config(format!(
                "{} is in use by another process (something accepted a connection on it)",
                path.display()
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| VhostError::io(format!("remove stale socket {}", path.display()), e))?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| VhostError::io(format!("bind {}", path.display()), e))?;
    l.set_nonblocking(true).map_err(|e| VhostError::io("set_nonblocking", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_perms))
        .map_err(|e| VhostError::io(format!("chmod {}", path.display()), e))?;
    if let Some(g) = &cfg.socket_group {
        let gid = group_id(g)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| VhostError::io(format!("chgrp {g} {}", path.display()), e))?;
    }
    Ok(l)
}

/// Looks a group up by name (or takes a numeric gid).
fn group_id(name: &str) -> Result<u32, VhostError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let groups =
        std::fs::read_to_string("/etc/group").map_err(|e| VhostError::io("read /etc/group", e))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (n, _, gid) = (f.next()?, f.next()?, f.next()?);
            (n == name).then(|| gid.parse().ok()).flatten()
        })
        .next()
        .ok_or_else(|| VhostError::Config(format!("socket_group {name:?}: no such group")))
}

/// The control thread of one port.
struct Control {
    name: String,
    socket: PathBuf,
    mac: MacAddr,
    queues: u16,
    handoff: Arc<Handoff>,
    counters: Arc<PortCounters>,
    stop: Arc<AtomicBool>,
    /// Readable once the port is dropped (see [`VhostUserPort`]'s `wake`).
    wake: Arc<OwnedFd>,
}

const POLL_MS: i32 = 50;

impl Control {
    fn run(self, listener: Option<UnixListener>) {
        let mut backoff = Duration::from_millis(50);
        while !self.stop.load(Ordering::Acquire) {
            let stream = match &listener {
                Some(l) => match self.accept(l) {
                    Some(s) => s,
                    None => continue,
                },
                None => match UnixStream::connect(&self.socket) {
                    Ok(s) => {
                        backoff = Duration::from_millis(50);
                        s
                    }
                    Err(e) => {
                        tracing::debug!(port = %self.name, error = %e, "frontend not listening yet");
                        self.sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            tracing::info!(port = %self.name, "frontend connected");
            match self.serve(stream) {
                Ok(()) => tracing::info!(port = %self.name, "frontend disconnected"),
                Err(e) => {
                    // A broken ring was already counted on its queue by the worker.
                    if !matches!(e, ProtocolError::RingBroken) {
                        self.counters.count_port_error();
                    }
                    tracing::warn!(port = %self.name, error = %e, "frontend dropped");
                }
            }
            self.handoff.broken.store(false, Ordering::Release);
        }
    }

    /// Sleeps `d`, or less when the port is dropped meanwhile.
    fn sleep(&self, d: Duration) {
        let end = std::time::Instant::now() + d;
        while !self.stop.load(Ordering::Acquire) {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            poll_readable(self.wake.as_raw_fd(), self.wake.as_raw_fd(), ms);
        }
    }

    fn accept(&self, l: &UnixListener) -> Option<UnixStream> {
        if !poll_readable(l.as_raw_fd(), self.wake.as_raw_fd(), POLL_MS) {
            return None;
        }
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).ok()?;
                Some(s)
            }
            Err(e) => {
                tracing::warn!(port = %self.name, error = %e, "accept failed");
                None
            }
        }
    }

    /// Serves one connection until it closes, breaks the protocol, or the port stops.
    fn serve(&self, stream: UnixStream) -> Result<(), ProtocolError> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        // A frontend that never reads its replies must not block this thread for good
        // (nor, through it, the port's drop and daemon shutdown).
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let mut conn = Connection::new(stream);
        let mut dev = Device::new(&self.name, self.mac, self.queues, self.handoff.clone());
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            if self.handoff.broken.load(Ordering::Acquire) {
                return Err(ProtocolError::RingBroken);
            }
            if dev.memory_faulted() {
                return Err(ProtocolError::BadMemoryTable(
                    "the frontend truncated its memory file under podwire".into(),
                ));
            }
            if !poll_readable(conn.socket().as_raw_fd(), self.wake.as_raw_fd(), POLL_MS) {
                continue;
            }
            let msg = match conn.recv() {
                Ok(m) => m,
                Err(ProtocolError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            let code = msg.hdr.request;
            tracing::trace!(port = %self.name, request = code, size = msg.hdr.size, "message");
            match dev.handle(msg, &mut conn) {
                Ok(()) => {}
                // The frontend went away while we answered: a disconnect.
                Err(ProtocolError::Closed) => return Ok(()),
                Err(e) => {
                    tracing::debug!(port = %self.name, request = code, error = %e, "bad message");
                    return Err(e);
                }
            }
        }
        // `dev` drops here: its rings are stopped before the memory goes away.
    }
}

/// Waits up to `ms` for `fd` to become readable (or hung up); returns early, with
/// `false`, when `wake` becomes readable (the port is being dropped).
fn poll_readable(fd: i32, wake: i32, ms: i32) -> bool {
    let mut p = [
        libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 },
    ];
    // SAFETY: two valid pollfds in an array on the stack, their count passed.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    n > 0 && p[1].revents == 0 && p[0].revents != 0
}

/// A non-blocking eventfd, counter 0: the control thread's wake-up call.
fn new_eventfd() -> Result<OwnedFd, VhostError> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(VhostError::io("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `wake` readable for good (its counter is never read back).
fn wake_up(wake: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. A failure (counter
    // full, which cannot happen with one write per port) leaves it readable anyway.
    unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Whether `path` names a socket file.
pub fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).map(|m| m.file_type().is_socket()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(path: &Path) -> VhostUserConfig {
        VhostUserConfig {
            name: "t".into(),
            socket: path.to_path_buf(),
            mode: SocketMode::Server,
            queues: 1,
            mac: None,
            socket_perms: 0o660,
            socket_group: None,
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pw-sock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Regression: dropping a port used to wait for its control thread's next poll
    /// timeout (50 ms) before the thread saw `stop`, which made `DELETE /ports` take
    /// ~40 ms. The wake eventfd ends a poll at once, however long its timeout.
    #[test]
    fn the_wake_eventfd_ends_a_poll_without_timeout() {
        let d = dir("wake");
        let l = bind_socket(&cfg(&d.join("w.sock"))).unwrap();
        let wake = Arc::new(new_eventfd().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let w = wake.clone();
        let fd = l.as_raw_fd();
        let t = std::thread::spawn(move || {
            // -1: no timeout at all; only the wake-up (or a connection) ends it.
            tx.send(poll_readable(fd, w.as_raw_fd(), -1)).unwrap();
        });
        std::thread::sleep(Duration::from_millis(20));
        wake_up(&wake);
        let readable = rx.recv_timeout(Duration::from_secs(30)).expect("poll ended by the wake-up");
        assert!(!readable, "a wake-up is not a connection");
        t.join().unwrap();
        // Once woken, it stays woken: later polls return at once too.
        assert!(!poll_readable(fd, wake.as_raw_fd(), -1));
        drop(l);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A dropped port's control thread ends although it waits in `poll` with a long
    /// timeout, serving a connected frontend that sends nothing.
    #[test]
    fn dropping_a_port_with_an_idle_frontend_ends_its_control_thread() {
        let d = dir("dropidle");
        let path = d.join("i.sock");
        let pool =
            Mempool::small_pages(podwire_driver::MempoolConfig { count: 64, ..Default::default() })
                .expect("pool");
        let port = VhostUserPort::new(cfg(&path), pool).expect("port");
        let _frontend = UnixStream::connect(&path).expect("connect");
        std::thread::sleep(Duration::from_millis(20));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(port);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("drop returned");
        assert!(!path.exists(), "socket removed");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A frontend that sends requests but never reads the replies fills the socket:
    /// the control thread's reply must give up (and drop that frontend) rather than
    /// block forever, which would also hang the port's drop and daemon shutdown.
    #[test]
    fn a_frontend_that_never_reads_replies_cannot_wedge_the_port() {
        use std::io::Write;
        let d = dir("noread");
        let path = d.join("a.sock");
        let pool =
            Mempool::small_pages(podwire_driver::MempoolConfig { count: 64, ..Default::default() })
                .unwrap();
        let port = VhostUserPort::new(cfg(&path), pool).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_nonblocking(true).unwrap();
        // GET_FEATURES (request 1, version 1, no payload): each one gets a reply.
        let one = [1u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        let many: Vec<u8> = one.iter().copied().cycle().take(12 * 50_000).collect();
        let mut at = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while at < many.len() && std::time::Instant::now() < deadline {
            match s.write(&many[at..]) {
                Ok(n) => at += n,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        assert!(at < many.len(), "podwire kept reading without ever blocking on its replies");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(port);
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the port's control thread is stuck writing replies nobody reads"
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn socket_dirs_are_created_and_stale_sockets_replaced() {
        let d = dir("stale");
        let path = d.join("deep/er/a.sock");
        let l = bind_socket(&cfg(&path)).expect("bind in new directories");
        assert!(is_socket(&path));
        drop(l); // a dead daemon's socket file stays behind
        assert!(is_socket(&path));
        let _l = bind_socket(&cfg(&path)).expect("stale socket replaced");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn live_sockets_and_other_files_are_not_replaced() {
        let d = dir("live");
        std::fs::create_dir_all(&d).unwrap();
        let live = d.join("live.sock");
        let _l = bind_socket(&cfg(&live)).unwrap();
        let e = bind_socket(&cfg(&live)).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        let file = d.join("file");
        std::fs::write(&file, b"precious").unwrap();
        let e = bind_socket(&cfg(&file)).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        let mut c = cfg(&d.join("g.sock"));
        c.socket_group = Some("no-such-group-podwire".into());
        assert!(bind_socket(&c).unwrap_err().to_string().contains("no such group"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
