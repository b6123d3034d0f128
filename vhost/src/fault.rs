//! Surviving a frontend that shrinks its memory file under us.
//!
//! A frontend keeps the fds of the memory it shares. If it truncates one after
//! podwire mapped it, the next access to the missing pages raises SIGBUS, which would
//! kill the daemon and every other port with it. Refusing unsealed memfds is not an
//! option (DPDK does not seal its memory files), so podwire catches the signal
//! instead: every mapped guest region is registered here, and a SIGBUS inside one
//! replaces the whole region with anonymous zero pages (so the faulting access
//! completes) and raises the region's `faulted` flag. The port's control thread sees
//! the flag and disconnects that frontend; its rings are torn down and the mapping is
//! released as usual. A SIGBUS anywhere else goes to the handler that was installed
//! before (Rust's, or the default action).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

/// Regions that can be registered at once (8 per frontend).
const SLOTS: usize = 4096;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;
const HANDLING: u8 = 3;

struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicPtr<AtomicBool>,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faulted: AtomicPtr::new(std::ptr::null_mut()),
};

static REGISTRY: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();
static mut PREVIOUS: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

/// A registered mapping; unregistered on drop (before the caller unmaps it).
pub struct FaultGuard {
    slot: usize,
    _faulted: Arc<AtomicBool>,
}

/// Registers `start..start+len` (a guest region's whole mapping). When the frontend
/// truncates the file behind it, `faulted` is raised. `None` when the registry is full
/// (the region is then unprotected, as it would be without this module).
pub fn register(start: usize, len: usize, faulted: Arc<AtomicBool>) -> Option<FaultGuard> {
    INSTALL.call_once(install);
    for (i, s) in REGISTRY.iter().enumerate() {
        if s.state.compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            s.start.store(start, Ordering::Relaxed);
            s.len.store(len, Ordering::Relaxed);
            s.faulted.store(Arc::as_ptr(&faulted) as *mut AtomicBool, Ordering::Relaxed);
            s.state.store(ACTIVE, Ordering::Release);
            return Some(FaultGuard { slot: i, _faulted: faulted });
        }
    }
    tracing::warn!("fault registry full: a frontend truncating this region would crash podwire");
    None
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        let s = &REGISTRY[self.slot];
        // Wait out a handler that is replacing this region right now.
        while s
            .state
            .compare_exchange(ACTIVE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        s.faulted.store(std::ptr::null_mut(), Ordering::Relaxed);
        s.state.store(FREE, Ordering::Release);
    }
}

fn install() {
    // SAFETY: a zeroed sigaction is a valid value to fill in; the handler is an
    // extern "C" fn of the SA_SIGINFO signature; PREVIOUS is written only here, once
    // (inside Once), before the handler can run.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        let prev = std::ptr::addr_of_mut!(PREVIOUS).cast::<libc::sigaction>();
        if libc::sigaction(libc::SIGBUS, &sa, prev) != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot install the SIGBUS handler: a frontend truncating its memory would crash podwire"
            );
        }
    }
}

/// The SIGBUS handler. Async-signal-safe: atomics and mmap only.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in REGISTRY.iter() {
        if s.state.load(Ordering::Acquire) != ACTIVE {
            continue;
        }
        let (start, len) = (s.start.load(Ordering::Relaxed), s.len.load(Ordering::Relaxed));
        if addr < start || addr - start >= len {
            continue;
        }
        if s.state.compare_exchange(ACTIVE, HANDLING, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            continue;
        }
        // SAFETY: start..start+len is a live mapping of a guest region (registered,
        // and its owner unregisters before unmapping, which waits while we are
        // HANDLING); replacing it with anonymous memory keeps the address range valid.
        unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            );
            let f = s.faulted.load(Ordering::Relaxed);
            if !f.is_null() {
                (*f).store(true, Ordering::Release);
            }
        }
        s.state.store(ACTIVE, Ordering::Release);
        return;
    }
    // Not a guest region: hand over to whatever handled SIGBUS before us.
    // SAFETY: PREVIOUS was filled by sigaction before this handler was installed.
    unsafe {
        let prev = &*std::ptr::addr_of!(PREVIOUS).cast::<libc::sigaction>();
        if prev.sa_flags & libc::SA_SIGINFO != 0 && prev.sa_sigaction > 1 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(prev.sa_sigaction);
            f(sig, info, ctx);
        } else {
            // Restore the previous disposition; returning re-runs the access, which
            // faults again and gets the default action.
            libc::sigaction(libc::SIGBUS, prev, std::ptr::null_mut());
        }
    }
}
