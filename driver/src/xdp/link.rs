//! Attaching the redirect program to an interface, and detaching it.
//!
//! The preferred way is a BPF link (`BPF_LINK_CREATE`, attach type `BPF_XDP`): the
//! program stays attached exactly as long as the link fd is open, so even a crash of
//! podwire detaches it. Kernels without XDP links (before 5.9) get the netlink way
//! (`RTM_SETLINK` with `IFLA_XDP`), which needs the explicit detach done in
//! [`XdpAttachment`]'s `Drop`.
//!
//! Another program already on the interface is never replaced silently: attaching
//! fails with [`AttachError::Foreign`] unless the caller asked to replace it (which
//! works for a program attached through netlink; a program held by someone else's
//! BPF link cannot be taken away, and the error says so).

use std::os::fd::{AsRawFd, OwnedFd};

use super::bpf;

/// XDP attach flags (`linux/if_link.h`).
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
/// Generic (SKB) mode.
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
/// Native (driver) mode.
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_F_NESTED: u16 = 1 << 15;

/// Requested XDP mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native if the driver supports it, generic otherwise.
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (SKB) mode only.
    Generic,
}

/// The mode the program ended up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// Driver mode.
    Native,
    /// Generic mode.
    Generic,
}

impl AttachedMode {
    fn flags(self) -> u32 {
        match self {
            AttachedMode::Native => XDP_FLAGS_DRV_MODE,
            AttachedMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }

    /// "native" or "generic".
    pub fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        }
    }
}

/// Why the program could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Another program is attached and replacing it was not allowed (or not possible).
    #[error("{0}")]
    Foreign(String),
    /// The kernel refused.
    #[error("{what}: {source}")]
    Io {
        /// What was tried.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What netlink reports about the XDP program of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpQuery {
    /// `XDP_ATTACHED_*`: 0 none, 1 driver, 2 generic, 3 hardware, 4 several.
    pub attached: u8,
    /// Id of the attached program (0 if none).
    pub prog_id: u32,
}

/// The redirect program attached to an interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct XdpAttachment {
    ifindex: u32,
    mode: AttachedMode,
    /// The BPF link, when attached that way (closing it detaches).
    link: Option<OwnedFd>,
    /// Program id attached through netlink, to detach only our own program.
    netlink_prog_id: Option<u32>,
}

impl XdpAttachment {
    /// Checks that no other program is attached to `ifindex`, or removes it when
    /// `replace` allows (only possible for a program attached through netlink). Call
    /// it before taking the interface's queues, so that the error is about the
    /// program and not about busy queues.
    pub fn clear_foreign(ifindex: u32, ifname: &str, replace: bool) -> Result<(), AttachError> {
        let existing = query(ifindex).unwrap_or_default();
        if existing.prog_id != 0 {
            if !replace {
                return Err(AttachError::Foreign(format!(
                    "another XDP program (id {}, {}) is attached to {ifname}; podwire does not \
                     replace it unless the port sets `replace_program = true` (see `ip link \
                     show {ifname}`, detach it with `ip link set {ifname} xdp off`)",
                    existing.prog_id,
                    attached_name(existing.attached)
                )));
            }
            // Remove the netlink-attached program in whatever mode it is in. A program
            // held by a BPF link refuses this with EBUSY.
            let flags = match existing.attached {
                1 => XDP_FLAGS_DRV_MODE,
                2 => XDP_FLAGS_SKB_MODE,
                _ => 0,
            };
            if let Err(e) = netlink_set_xdp(ifindex, -1, flags) {
                return Err(AttachError::Foreign(format!(
                    "cannot remove the XDP program (id {}) already attached to {ifname}: {e} (it \
                     is probably held by another process's BPF link; stop that process)",
                    existing.prog_id
                )));
            }
            tracing::warn!(
                interface = ifname,
                prog_id = existing.prog_id,
                "replaced a foreign XDP program (replace_program = true)"
            );
        }
        Ok(())
    }

    /// Attaches `prog` to `ifindex` in `mode` (after [`clear_foreign`](Self::clear_foreign)).
    pub fn attach(
        prog: &OwnedFd,
        ifindex: u32,
        ifname: &str,
        mode: XdpMode,
    ) -> Result<Self, AttachError> {
        let modes: &[AttachedMode] = match mode {
            XdpMode::Auto => &[AttachedMode::Native, AttachedMode::Generic],
            XdpMode::Native => &[AttachedMode::Native],
            XdpMode::Generic => &[AttachedMode::Generic],
        };
        let mut last = None;
        for &m in modes {
            match bpf::link_create_xdp(prog, ifindex, m.flags()) {
                Ok(link) => {
                    return Ok(Self { ifindex, mode: m, link: Some(link), netlink_prog_id: None })
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(AttachError::Foreign(format!(
                        "an XDP program was attached to {ifname} by someone else meanwhile ({e})"
                    )))
                }
                // EINVAL from kernels without XDP links: try netlink in this mode.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && m == modes[0] => {
                    match netlink_set_xdp(
                        ifindex,
                        prog.as_raw_fd(),
                        m.flags() | XDP_FLAGS_UPDATE_IF_NOEXIST,
                    ) {
                        Ok(()) => {
                            let id = query(ifindex).map(|q| q.prog_id).unwrap_or(0);
                            return Ok(Self {
                                ifindex,
                                mode: m,
                                link: None,
                                netlink_prog_id: Some(id),
                            });
                        }
                        Err(e2) => {
                            last = Some(AttachError::Io {
                                what: format!(
                                    "attach XDP program to {ifname} in {} mode (BPF link: {e}; \
                                     netlink)",
                                    m.as_str()
                                ),
                                source: e2,
                            })
                        }
                    }
                }
                Err(e) => {
                    last = Some(AttachError::Io {
                        what: format!("attach XDP program to {ifname} in {} mode", m.as_str()),
                        source: e,
                    })
                }
            }
            if modes.len() > 1 {
                tracing::info!(interface = ifname, "native XDP not available, trying generic");
            }
        }
        Err(last.expect("at least one mode tried"))
    }

    /// The mode the program runs in.
    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// Whether the program is held by a BPF link (else by netlink).
    pub fn is_link(&self) -> bool {
        self.link.is_some()
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        // Closing the link fd detaches a link-attached program.
        self.link.take();
        if let Some(id) = self.netlink_prog_id {
            // Only detach if the program there is still ours.
            if query(self.ifindex).map(|q| q.prog_id).ok() == Some(id) {
                if let Err(e) = netlink_set_xdp(self.ifindex, -1, self.mode.flags()) {
                    tracing::warn!(ifindex = self.ifindex, "cannot detach XDP program: {e}");
                }
            }
        }
    }
}

fn attached_name(a: u8) -> &'static str {
    match a {
        1 => "native mode",
        2 => "generic mode",
        3 => "offloaded",
        4 => "several modes",
        _ => "unknown mode",
    }
}

// ---- netlink (rtnetlink) -----------------------------------------------------------

struct Netlink(OwnedFd);

impl Netlink {
    fn open() -> std::io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new socket nobody else owns.
        Ok(Self(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }))
    }

    fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        // SAFETY: the kernel address (all zero, family AF_NETLINK) is a valid
        // sockaddr_nl.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msg is a readable buffer of msg.len() bytes; sa is a sockaddr_nl of
        // the size passed.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: buf is writable for buf.len() bytes.
        let rc = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn link_msg(ty: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    let total = NLMSG_HDR + IFINFOMSG + attrs.len();
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                              // struct ifinfomsg: family, pad, type, index, flags, change
    m.push(libc::AF_UNSPEC as u8);
    m.push(0);
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(attrs);
    m
}

/// Sets (fd >= 0) or removes (fd == -1) the netlink-attached XDP program.
fn netlink_set_xdp(ifindex: u32, fd: i32, flags: u32) -> std::io::Result<()> {
    let mut inner = Vec::new();
    push_attr(&mut inner, IFLA_XDP_FD, &fd.to_ne_bytes());
    if flags != 0 {
        push_attr(&mut inner, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    }
    let mut attrs = Vec::new();
    push_attr(&mut attrs, IFLA_XDP | NLA_F_NESTED, &inner);
    let msg = link_msg(
        libc::RTM_SETLINK,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        ifindex,
        &attrs,
    );
    let nl = Netlink::open()?;
    nl.send(&msg)?;
    let mut buf = vec![0u8; 8192];
    let n = nl.recv(&mut buf)?;
    match first_error(&buf[..n]) {
        Some(0) | None => Ok(()),
        Some(e) => Err(std::io::Error::from_raw_os_error(-e)),
    }
}

/// The `error` field of the first NLMSG_ERROR message in `buf`, if any.
fn first_error(buf: &[u8]) -> Option<i32> {
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().ok()?);
        if len < NLMSG_HDR || off + len > buf.len() {
            return None;
        }
        if ty == libc::NLMSG_ERROR as u16 && len >= NLMSG_HDR + 4 {
            return Some(i32::from_ne_bytes(buf[off + 16..off + 20].try_into().ok()?));
        }
        off += align4(len);
    }
    None
}

/// Asks the kernel which XDP program (if any) is attached to `ifindex`.
pub fn query(ifindex: u32) -> std::io::Result<XdpQuery> {
    let msg = link_msg(libc::RTM_GETLINK, libc::NLM_F_REQUEST as u16, ifindex, &[]);
    let nl = Netlink::open()?;
    nl.send(&msg)?;
    let mut buf = vec![0u8; 32768];
    let n = nl.recv(&mut buf)?;
    let buf = &buf[..n];
    if let Some(e) = first_error(buf) {
        if e < 0 {
            return Err(std::io::Error::from_raw_os_error(-e));
        }
    }
    Ok(parse_link_reply(buf).unwrap_or_default())
}

/// Reads IFLA_XDP out of an RTM_NEWLINK reply. Every length is checked.
fn parse_link_reply(buf: &[u8]) -> Option<XdpQuery> {
    let len = u32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let ty = u16::from_ne_bytes(buf.get(4..6)?.try_into().ok()?);
    if ty != libc::RTM_NEWLINK || len > buf.len() {
        return None;
    }
    let attrs = buf.get(NLMSG_HDR + IFINFOMSG..len)?;
    let xdp = find_attr(attrs, IFLA_XDP)?;
    let mut q = XdpQuery::default();
    if let Some(a) = find_attr(xdp, IFLA_XDP_ATTACHED) {
        q.attached = *a.first()?;
    }
    if let Some(p) = find_attr(xdp, IFLA_XDP_PROG_ID) {
        q.prog_id = u32::from_ne_bytes(p.get(0..4)?.try_into().ok()?);
    }
    Some(q)
}

fn find_attr(mut attrs: &[u8], want: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == want {
            return Some(&attrs[4..len]);
        }
        attrs = attrs.get(align4(len)..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_are_bounds_checked() {
        let mut a = Vec::new();
        push_attr(&mut a, 4, &7u32.to_ne_bytes());
        push_attr(&mut a, 2, &[1]);
        assert_eq!(find_attr(&a, 2), Some(&[1u8][..]));
        assert_eq!(find_attr(&a, 4), Some(&7u32.to_ne_bytes()[..]));
        assert_eq!(find_attr(&a, 9), None);
        a[0] = 200; // length beyond the buffer
        assert_eq!(find_attr(&a, 4), None);
        assert_eq!(first_error(&[0u8; 7]), None);
        assert_eq!(parse_link_reply(&[0xff; 40]), None);
    }
}
