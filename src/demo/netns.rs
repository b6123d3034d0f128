//! The demo's "pods" without DPDK: network namespaces, each behind a veth pair whose
//! host end podwire takes with AF_XDP. Names carry the demo's PID so that parallel
//! runs never collide: namespace `pwdemo-<pid>-a`, host end `pwd<pid>a`, and `eth0`
//! inside.

use std::os::fd::AsRawFd;
use std::process::Command;

use super::teardown::Teardown;
use super::DemoError;

/// One namespace and its veth.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Short label ("a", "b").
    pub label: String,
    /// Namespace name.
    pub ns: String,
    /// The veth end podwire takes (in the demo's namespace).
    pub host_if: String,
    /// The end inside the namespace.
    pub inner_if: String,
    /// IPv4 address inside (with a /24).
    pub ip: String,
    /// MAC address inside.
    pub mac: String,
}

/// Runs a command; its failure is a [`DemoError`] quoting its output.
pub fn sh(args: &[&str]) -> Result<String, DemoError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| DemoError::Failed(format!("cannot run {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(DemoError::Failed(format!(
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `tool` is on `PATH`.
pub fn have(tool: &str) -> bool {
    find_in_path(tool).is_some()
}

/// The full path of `tool` on `PATH`.
pub fn find_in_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    })
}

/// Creates namespace `ns` with `lo` up and IPv6 off (no neighbour discovery noise
/// on the bridge), registered for teardown.
pub fn add_netns(ns: &str, teardown: &mut Teardown) -> Result<(), DemoError> {
    sh(&["ip", "netns", "add", ns])?;
    teardown.netns(ns);
    sh(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
    sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
    sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
    Ok(())
}

/// Creates namespace `n.ns` with `eth0` = one end of a veth pair whose other end
/// (`n.host_if`) stays here, up, with no address. Checksum offload is turned off
/// inside: veth leaves TCP/UDP checksums to "hardware", and frames copied through
/// AF_XDP would arrive with bad ones.
pub fn create(n: &Namespace, teardown: &mut Teardown) -> Result<(), DemoError> {
    add_netns(&n.ns, teardown)?;
    sh(&[
        "ip",
        "link",
        "add",
        &n.host_if,
        "type",
        "veth",
        "peer",
        "name",
        &n.inner_if,
        "netns",
        &n.ns,
    ])?;
    teardown.link(&n.host_if);
    let inside = |args: &[&str]| {
        let mut v = vec!["ip", "netns", "exec", &n.ns];
        v.extend_from_slice(args);
        sh(&v)
    };
    inside(&["ip", "link", "set", &n.inner_if, "address", &n.mac])?;
    inside(&["ip", "addr", "add", &format!("{}/24", n.ip), "dev", &n.inner_if])?;
    inside(&["ethtool", "-K", &n.inner_if, "tx", "off"])?;
    inside(&["ip", "link", "set", &n.inner_if, "up"])?;
    sh(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", n.host_if)])?;
    sh(&["ip", "link", "set", &n.host_if, "up"])?;
    Ok(())
}

/// A permanent neighbour entry in `n`'s namespace: `ip` is at `mac`.
pub fn static_neighbour(n: &Namespace, ip: &str, mac: &str) -> Result<(), DemoError> {
    sh(&[
        "ip",
        "netns",
        "exec",
        &n.ns,
        "ip",
        "neigh",
        "replace",
        ip,
        "lladdr",
        mac,
        "nud",
        "permanent",
        "dev",
        &n.inner_if,
    ])
    .map(drop)
}

/// Runs `f` on a new thread that has entered namespace `ns` (only that thread moves;
/// sockets it creates live in the namespace).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> std::thread::JoinHandle<Result<T, String>> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        // SAFETY: setns on a valid namespace fd; it affects only the calling thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        f()
    })
}
