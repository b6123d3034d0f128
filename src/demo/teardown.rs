//! Everything the demo creates is registered here the moment it exists, and undone in
//! reverse order exactly once: on normal exit, on error, on Ctrl-C/SIGTERM, and when
//! the demo unwinds from a panic (the registry's `Drop`).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process gets to stop after SIGTERM before SIGKILL.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// One thing to undo.
#[derive(Debug)]
enum Undo {
    /// A network namespace (`ip netns del`).
    Netns(String),
    /// A network interface in the demo's own namespace (`ip link del`).
    Link(String),
    /// A child process: SIGTERM, wait, SIGKILL if needed.
    Process { name: String, child: Child },
    /// A DPDK process's hugepage and runtime files (`--file-prefix`).
    DpdkFiles(String),
    /// A directory tree.
    Dir(PathBuf),
}

/// PIDs of short-lived helper processes (ping) started by other threads; killed at
/// teardown if they still run, and at once if they start after it.
#[derive(Debug, Clone, Default)]
pub struct Helpers(Arc<Mutex<HelperList>>);

#[derive(Debug, Default)]
struct HelperList {
    pids: Vec<u32>,
    closed: bool,
}

fn kill_now(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions; pid is a child of this
    // process that has not been reaped (reaped helpers are removed first).
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

impl Helpers {
    fn list(&self) -> std::sync::MutexGuard<'_, HelperList> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a running helper (killed right away once teardown has begun).
    pub fn add(&self, pid: u32) {
        let mut l = self.list();
        if l.closed {
            kill_now(pid);
        } else {
            l.pids.push(pid);
        }
    }

    /// Forgets a helper that was reaped (its PID may be reused).
    pub fn remove(&self, pid: u32) {
        self.list().pids.retain(|p| *p != pid);
    }

    fn kill_all(&self) {
        let mut l = self.list();
        l.closed = true;
        for pid in l.pids.drain(..) {
            kill_now(pid);
        }
    }
}

/// Makes `cmd`'s process receive SIGKILL when the thread that starts it ends (the
/// demo killed outright, or the helper's thread gone): nothing outlives the demo.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // prctl, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The registry of things to undo.
#[derive(Debug, Default)]
pub struct Teardown {
    undo: Vec<Undo>,
    helpers: Helpers,
    /// Print each step (the demo talks; tests of the registry do not).
    pub verbose: bool,
}

impl Teardown {
    /// An empty registry that prints what it undoes.
    pub fn new() -> Self {
        let mut t = Self::default();
        t.verbose = true;
        t
    }

    /// The helper-process list shared with traffic threads.
    pub fn helpers(&self) -> Helpers {
        self.helpers.clone()
    }

    /// Registers a namespace.
    pub fn netns(&mut self, name: &str) {
        self.undo.push(Undo::Netns(name.to_owned()));
    }

    /// Registers an interface in the current namespace.
    pub fn link(&mut self, name: &str) {
        self.undo.push(Undo::Link(name.to_owned()));
    }

    /// Registers a child process.
    pub fn process(&mut self, name: &str, child: Child) {
        self.undo.push(Undo::Process { name: name.to_owned(), child });
    }

    /// Registers a DPDK file prefix.
    pub fn dpdk_files(&mut self, prefix: &str) {
        self.undo.push(Undo::DpdkFiles(prefix.to_owned()));
    }

    /// Registers a directory.
    pub fn dir(&mut self, path: PathBuf) {
        self.undo.push(Undo::Dir(path));
    }

    /// The child registered as `name`, if still registered.
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Child> {
        self.undo.iter_mut().find_map(|u| match u {
            Undo::Process { name: n, child } if n == name => Some(child),
            _ => None,
        })
    }

    /// Stops the process registered as `name` now (SIGTERM, then SIGKILL) and returns
    /// how it ended, with its output if it was piped.
    pub fn stop_process(&mut self, name: &str) -> Option<std::process::Output> {
        let i = self
            .undo
            .iter()
            .position(|u| matches!(u, Undo::Process { name: n, .. } if n == name))?;
        let Undo::Process { child, .. } = self.undo.remove(i) else { return None };
        Some(stop_child(child))
    }

    /// Undoes everything, last first. Safe to call more than once.
    pub fn run(&mut self) {
        self.helpers.kill_all();
        while let Some(u) = self.undo.pop() {
            let what = match u {
                Undo::Netns(ns) => {
                    quiet(&["ip", "netns", "del", &ns]);
                    format!("deleted network namespace {ns}")
                }
                Undo::Link(l) => {
                    quiet(&["ip", "link", "del", &l]);
                    format!("deleted veth {l}")
                }
                Undo::Process { name, child } => {
                    let pid = child.id();
                    let out = stop_child(child);
                    format!("stopped {name} (pid {pid}, {})", out.status)
                }
                Undo::DpdkFiles(prefix) => {
                    remove_dpdk_files(&prefix);
                    format!("removed DPDK files of {prefix}")
                }
                Undo::Dir(d) => {
                    let _ = std::fs::remove_dir_all(&d);
                    format!("removed {}", d.display())
                }
            };
            if self.verbose {
                out!("    cleanup: {what}");
            }
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.run();
    }
}

/// Runs a command, ignoring its outcome (cleanup of something that may be gone).
fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// Closes its stdin if piped (a process that quits at end of input) and gives it
/// [`STOP_PATIENCE`]; then SIGTERM, up to [`STOP_PATIENCE`] again, then SIGKILL;
/// reaps it.
fn stop_child(mut child: Child) -> std::process::Output {
    if let Some(stdin) = child.stdin.take() {
        drop(stdin);
        let start = Instant::now();
        while start.elapsed() < STOP_PATIENCE {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) has no memory-safety preconditions; the PID is our child's
        // and not yet reaped (try_wait said it is running).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < STOP_PATIENCE {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    child.wait_with_output().unwrap_or_else(|e| std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(e.raw_os_error().unwrap_or(1)),
        stdout: Vec::new(),
        stderr: Vec::new(),
    })
}

/// Removes the hugepage files and runtime directory a DPDK process with
/// `--file-prefix=prefix` leaves when it is killed.
pub fn remove_dpdk_files(prefix: &str) {
    if let Ok(rd) = std::fs::read_dir("/dev/hugepages") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&format!("{prefix}map_")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoes_last_first_and_once() {
        let base = std::env::temp_dir().join(format!("pw-teardown-{}", std::process::id()));
        let inner = base.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        let mut t = Teardown::default();
        t.dir(base.clone());
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        t.process("sleeper", child);
        assert!(t.child_mut("sleeper").is_some());
        t.run();
        assert!(!base.exists());
        // Reaped: no such process any more.
        // SAFETY: signal 0 only checks existence.
        assert_ne!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0);
        t.run(); // nothing left to do
        assert!(t.child_mut("sleeper").is_none());
    }

    #[test]
    fn helpers_started_after_teardown_are_killed_at_once() {
        let mut t = Teardown::default();
        let helpers = t.helpers();
        let mut running = Command::new("sleep").arg("30").spawn().unwrap();
        helpers.add(running.id());
        t.run();
        let status = running.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        let mut late = Command::new("sleep").arg("30").spawn().unwrap();
        helpers.add(late.id());
        let status = late.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    }
}
