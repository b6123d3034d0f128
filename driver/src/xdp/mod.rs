//! AF_XDP port: a kernel netdev's queues (a NIC, a veth, a bond) forwarded in user
//! space, with only `libc` (no libbpf, libxdp or C toolchain).
//!
//! - [`bpf`]: the `bpf(2)` calls and the six-instruction XSKMAP redirect program.
//! - [`link`]: attach (BPF link, netlink fallback) and detach.
//! - [`umem`]: the UMEM is the mempool's memory; frames are mempool buffers.
//! - [`rings`]: the mmap'd fill, completion, rx and tx rings.
//! - [`socket`]: one bound AF_XDP socket.
//! - [`port`]: [`AfXdpPort`], the [`Port`](crate::Port).

pub mod bpf;
pub mod link;
pub mod port;
pub mod rings;
pub mod socket;
pub mod umem;

pub use link::{AttachedMode, XdpMode};
pub use port::{AfXdpConfig, AfXdpPort, DEFAULT_RING_SIZE};
pub use socket::ZeroCopy;
