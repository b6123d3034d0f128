//! Errors of the vhost-user port.

use thiserror::Error;

/// Errors creating or running a vhost-user port.
#[derive(Debug, Error)]
pub enum VhostError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
}

impl VhostError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }
}

/// A frontend broke the vhost-user protocol: the connection is dropped, the daemon and
/// every other port carry on.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The socket failed or the frontend hung up.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The frontend closed the connection.
    #[error("frontend closed the connection")]
    Closed,
    /// A message that cannot be decoded.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message with a request code we do not know or support.
    #[error("unsupported request {0}")]
    Unsupported(u32),
    /// A message out of order (e.g. ring setup before the memory table).
    #[error("out of order: {0}")]
    OutOfOrder(String),
    /// A memory table that cannot be mapped safely.
    #[error("bad memory table: {0}")]
    BadMemoryTable(String),
    /// The worker found a ring that breaks the virtio rules (already counted on
    /// the queue's errors).
    #[error("the frontend broke a ring")]
    RingBroken,
    /// A vring index, size or address that cannot be used.
    #[error("bad vring: {0}")]
    BadVring(String),
}

/// A ring can no longer be trusted: what the frontend put in it breaks the virtio
/// rules. The datapath stops using the device and the port disconnects the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RingError {
    /// The avail index moved by more than the queue size.
    #[error("avail index jumped by more than the queue size")]
    AvailJump,
    /// A descriptor index outside the table.
    #[error("descriptor index out of range")]
    DescIndex,
    /// A chain longer than the table (a loop).
    #[error("descriptor chain loops or is longer than the queue")]
    ChainTooLong,
    /// An indirect table that is misaligned, empty, too big or nested.
    #[error("bad indirect descriptor table")]
    BadIndirect,
    /// An address or length outside every memory region.
    #[error("descriptor address outside the frontend's memory")]
    BadAddress,
    /// A descriptor of the wrong direction (write-only in a tx chain or the reverse).
    #[error("descriptor of the wrong direction")]
    BadDirection,
}
