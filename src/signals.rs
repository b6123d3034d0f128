//! Shutdown signals (SIGINT, SIGTERM) and the reload signal (SIGHUP), handled
//! synchronously.
//!
//! [`ShutdownSignals::block`] blocks these signals in the calling thread before any
//! other thread exists, so every thread started later inherits the mask and no
//! signal handler ever runs: the daemon's main thread collects them with
//! `sigtimedwait` in its supervision loop. No async-signal-safety questions arise.

use std::time::Duration;

/// SIGINT, SIGTERM and SIGHUP, blocked, waiting to be collected.
pub struct ShutdownSignals {
    set: libc::sigset_t,
}

impl std::fmt::Debug for ShutdownSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownSignals(SIGINT, SIGTERM, SIGHUP)")
    }
}

/// Name of a signal number, for logs.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

impl ShutdownSignals {
    /// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and so in every thread it
    /// starts afterwards). Call it before starting any thread.
    pub fn block() -> std::io::Result<Self> {
        // SAFETY: an all-zero sigset_t is valid storage; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is valid, writable storage for a sigset_t; the signal numbers
        // are valid.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGHUP);
        }
        // SAFETY: set is initialised; passing null for the old set is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(Self { set })
    }

    /// Waits up to `timeout` for SIGINT, SIGTERM or SIGHUP; returns the signal number.
    pub fn wait(&self, timeout: Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: set is an initialised sigset_t; a null siginfo pointer is allowed;
        // ts is a valid timespec.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}
