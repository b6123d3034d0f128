//! One AF_XDP socket bound to one queue of an interface, with its four rings.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::rings::{Ring, XdpDesc};
use super::umem::UmemLayout;
use crate::error::{DriverError, Result};

/// How long a bind failing with EBUSY is retried: the kernel releases a queue some
/// time (about 200 ms here) after the previous socket on it was closed.
pub const BIND_BUSY_RETRY: Duration = Duration::from_secs(3);

/// Requested zero-copy behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy if the driver supports it, copy mode otherwise.
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// The UMEM a socket uses: registered by it, or shared with an earlier socket.
#[derive(Debug, Clone, Copy)]
pub enum UmemSource {
    /// This socket registers the UMEM.
    Register(UmemLayout),
    /// Share the UMEM registered by the socket `fd` (bound already).
    Shared(RawFd),
}

/// A bound AF_XDP socket.
#[derive(Debug)]
pub struct XskSocket {
    /// Rx ring (kernel produces).
    pub rx: Ring<XdpDesc>,
    /// Tx ring (we produce).
    pub tx: Ring<XdpDesc>,
    /// Fill ring (we produce).
    pub fill: Ring<u64>,
    /// Completion ring (kernel produces).
    pub comp: Ring<u64>,
    zero_copy: bool,
    // Declared last: the rings are unmapped before the socket closes.
    fd: OwnedFd,
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T, what: &'static str) -> Result<()> {
    // SAFETY: v is a valid T of the size passed, for an option that expects a T.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(DriverError::io(what, std::io::Error::last_os_error()));
    }
    Ok(())
}

impl XskSocket {
    /// Creates a socket for queue `queue` of `ifindex` with rings of `ring_size`
    /// entries, binds it (retrying EBUSY for [`BIND_BUSY_RETRY`]).
    pub fn new(
        ifindex: u32,
        queue: u32,
        umem: UmemSource,
        ring_size: u32,
        zero_copy: ZeroCopy,
    ) -> Result<Self> {
        match (umem, zero_copy) {
            (UmemSource::Shared(_), _) | (_, ZeroCopy::Off) => {
                Self::new_with(ifindex, queue, umem, ring_size, false)
            }
            (_, ZeroCopy::On) => Self::new_with(ifindex, queue, umem, ring_size, true),
            (_, ZeroCopy::Auto) => match Self::new_with(ifindex, queue, umem, ring_size, true) {
                Ok(s) => Ok(s),
                Err(DriverError::Io { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::EPROTONOSUPPORT)
                    ) =>
                {
                    Self::new_with(ifindex, queue, umem, ring_size, false)
                }
                Err(e) => Err(e),
            },
        }
    }

    fn new_with(
        ifindex: u32,
        queue: u32,
        umem: UmemSource,
        ring_size: u32,
        zc: bool,
    ) -> Result<Self> {
        if !ring_size.is_power_of_two() {
            return Err(DriverError::InvalidArgument(format!(
                "AF_XDP ring size {ring_size} is not a power of two"
            )));
        }
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(DriverError::io(
                "socket(AF_XDP) (kernel without CONFIG_XDP_SOCKETS, or not root)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: raw is a new socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if let UmemSource::Register(layout) = umem {
            setsockopt(&fd, libc::XDP_UMEM_REG, &layout.reg(), "register UMEM (XDP_UMEM_REG)")?;
        }
        // Every socket gets its own fill and completion rings (needed when sockets on
        // different queues share a UMEM). They are twice the size of rx and tx, as
        // libxdp does: the kernel publishes its fill consumer index only when it has
        // used up every entry it saw, so a fill ring exactly as large as the buffers
        // put in it can look full to us while the kernel has taken them all.
        let big = ring_size.checked_mul(2).ok_or_else(|| {
            DriverError::InvalidArgument(format!("AF_XDP ring size {ring_size} too large"))
        })?;
        setsockopt(&fd, libc::XDP_UMEM_FILL_RING, &big, "XDP_UMEM_FILL_RING")?;
        setsockopt(&fd, libc::XDP_UMEM_COMPLETION_RING, &big, "XDP_UMEM_COMPLETION_RING")?;
        setsockopt(&fd, libc::XDP_RX_RING, &ring_size, "XDP_RX_RING")?;
        setsockopt(&fd, libc::XDP_TX_RING, &ring_size, "XDP_TX_RING")?;

        // SAFETY: an all-zero xdp_mmap_offsets is valid; the kernel fills it.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: off is writable for len bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(DriverError::io("XDP_MMAP_OFFSETS", std::io::Error::last_os_error()));
        }
        if len as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(DriverError::Unsupported(
                "kernel too old: AF_XDP rings without flags (need 5.4 or later)".into(),
            ));
        }
        let rx =
            Ring::map(&fd, libc::XDP_PGOFF_RX_RING as u64, ring_size, &off.rx, "mmap rx ring")?;
        let tx =
            Ring::map(&fd, libc::XDP_PGOFF_TX_RING as u64, ring_size, &off.tx, "mmap tx ring")?;
        let fill = Ring::map(&fd, libc::XDP_UMEM_PGOFF_FILL_RING, big, &off.fr, "mmap fill ring")?;
        let comp = Ring::map(
            &fd,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            big,
            &off.cr,
            "mmap completion ring",
        )?;

        let (flags, shared_fd) = match umem {
            UmemSource::Shared(f) => (libc::XDP_SHARED_UMEM, f as u32),
            UmemSource::Register(_) => (
                libc::XDP_USE_NEED_WAKEUP | if zc { libc::XDP_ZEROCOPY } else { libc::XDP_COPY },
                0,
            ),
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared_fd,
        };
        let deadline = Instant::now() + BIND_BUSY_RETRY;
        loop {
            // SAFETY: sa is a valid sockaddr_xdp of the size passed.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_xdp).cast(),
                    std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            return Err(DriverError::io(
                match (e.raw_os_error(), zc) {
                    (Some(libc::EBUSY), _) => {
                        "bind AF_XDP socket: queue still busy after 3 s (another AF_XDP user?)"
                    }
                    (_, true) => "bind AF_XDP socket in zero-copy mode",
                    (_, false) => "bind AF_XDP socket",
                },
                e,
            ));
        }
        // Shared sockets inherit the mode of the first one.
        let zero_copy = zc || matches!(umem, UmemSource::Shared(_)) && Self::bound_zero_copy(&fd);
        Ok(Self { rx, tx, fill, comp, zero_copy, fd })
    }

    fn bound_zero_copy(fd: &OwnedFd) -> bool {
        let mut o = libc::xdp_options { flags: 0 };
        let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
        // SAFETY: o is writable for len bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_OPTIONS,
                (&mut o as *mut libc::xdp_options).cast(),
                &mut len,
            )
        };
        rc == 0 && o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0
    }

    /// Whether the socket runs in zero-copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The socket's fd.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Asks the kernel to transmit what the tx ring holds. Returns the error if the
    /// kernel refused for a reason other than "try again".
    #[inline]
    pub fn kick_tx(&self) -> std::result::Result<(), std::io::Error> {
        // SAFETY: sendto with no data and no address: only wakes the socket's tx.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::EINTR) => {
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Wakes the kernel's rx side (zero-copy drivers that set NEED_WAKEUP on the fill
    /// ring).
    #[inline]
    pub fn kick_rx(&self) {
        // SAFETY: recvfrom with no buffer: only wakes the socket's rx processing.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

/// Kernel-side counters of a socket (`XDP_STATISTICS`).
pub fn statistics(fd: RawFd) -> Option<libc::xdp_statistics> {
    // SAFETY: all-zero statistics are valid; the kernel fills them.
    let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: s is writable for len bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut s as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(s)
}
