//! Errors of the driver crate.

use thiserror::Error;

/// Result with a [`DriverError`].
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// What went wrong in the driver core.
#[derive(Debug, Error)]
pub enum DriverError {
    /// Too few free 2 MiB hugepages to back the requested memory.
    #[error(
        "not enough free 2 MiB hugepages for {bytes} bytes ({pages} pages): reserve more with \
         `echo 1024 > /proc/sys/vm/nr_hugepages` (see HugePages_Free in /proc/meminfo)"
    )]
    NoHugepages {
        /// Bytes requested (rounded to whole pages).
        bytes: usize,
        /// Pages requested.
        pages: usize,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A caller passed a value that cannot work.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The platform or environment does not support the request.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl DriverError {
    /// Wraps an OS error with what was being done.
    pub fn io(what: &'static str, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}
