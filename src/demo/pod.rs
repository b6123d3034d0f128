//! The demo's DPDK pod: `dpdk-testpmd` in its own network namespace, attached to
//! podwire's vhost-user socket with `net_virtio_user`, in `icmpecho` forwarding
//! mode: it answers ARP requests and pings (for any IPv4 address) from the DPDK
//! datapath, so the namespaces can ping a DPDK application through podwire.
//!
//! Non-interactive testpmd: it forwards from the start and prints its per-port
//! totals when it stops (SIGTERM), which the summary quotes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::netns::find_in_path;
use super::teardown::Teardown;
use super::DemoError;

/// The name the pod is registered under in the teardown.
pub const PROCESS_NAME: &str = "the DPDK pod (dpdk-testpmd)";
/// Hugepage memory the pod asks for, MiB.
pub const POD_MEMORY_MB: u32 = 256;

/// How to install the pod's software, for messages.
pub const INSTALL_HINT: &str = "apt-get install dpdk-dev librte-net-virtio23 \
     librte-mempool-ring23 (or run scripts/install-deps.sh, which also reserves hugepages)";

/// `dpdk-testpmd`'s path, if installed.
pub fn testpmd() -> Option<PathBuf> {
    find_in_path("dpdk-testpmd")
}

/// Free 2 MiB hugepages.
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Starts the pod in namespace `ns` on `cpu`, attached to `socket`, its output in
/// `log`; registers it (and its DPDK files under `prefix`) for teardown.
pub fn start(
    testpmd: &Path,
    ns: &str,
    socket: &Path,
    cpu: usize,
    prefix: &str,
    log: &Path,
    teardown: &mut Teardown,
) -> Result<(), DemoError> {
    let needed = u64::from(POD_MEMORY_MB / 2);
    if free_hugepages() < needed {
        return Err(DemoError::Failed(format!(
            "the DPDK pod needs {needed} free 2 MiB hugepages, {} are free: \
             `echo 1024 > /proc/sys/vm/nr_hugepages` (scripts/install-deps.sh reserves them), \
             or run with --no-pod",
            free_hugepages()
        )));
    }
    let out = std::fs::File::create(log)
        .map_err(|e| DemoError::Failed(format!("{}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| DemoError::Failed(e.to_string()))?;
    let lcores = format!("0@{cpu},1@{cpu}");
    let mut cmd = Command::new("ip");
    // stdbuf: unbuffered output, so the log shows progress as it happens.
    cmd.args(["netns", "exec", ns, "stdbuf", "-o0", "-e0"])
        .arg(testpmd)
        .args(["--lcores", &lcores, "--main-lcore", "0", "--no-pci"])
        .arg(format!("--file-prefix={prefix}"))
        .args(["--huge-dir", "/dev/hugepages", "-m", &POD_MEMORY_MB.to_string()])
        .arg("--single-file-segments")
        .arg(format!("--vdev=net_virtio_user0,path={},queues=1,queue_size=1024", socket.display()))
        .args(["--", "--nb-cores=1", "--forward-mode=icmpecho", "--total-num-mbufs=8192"])
        // Stdin stays an open pipe: non-interactive testpmd quits (printing its
        // totals) at end of input; it does not quit on SIGTERM while it waits there.
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    super::teardown::die_with_parent(&mut cmd);
    teardown.dpdk_files(prefix);
    let child = cmd
        .spawn()
        .map_err(|e| DemoError::Failed(format!("cannot start {}: {e}", testpmd.display())))?;
    teardown.process(PROCESS_NAME, child);
    Ok(())
}

/// The pod's totals from its log after it stopped: (rx packets, tx packets).
pub fn totals(log_text: &str) -> Option<(u64, u64)> {
    // "  RX-packets: 25             RX-dropped: 0             RX-total: 25"
    // (the last "Forward statistics for port 0" block, or the accumulated block).
    let mut rx = None;
    let mut tx = None;
    for line in log_text.lines() {
        let l = line.trim();
        let first = |key: &str| {
            l.strip_prefix(key)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(n) = first("RX-packets:") {
            rx = Some(n);
        }
        if let Some(n) = first("TX-packets:") {
            tx = Some(n);
        }
    }
    Some((rx?, tx?))
}

/// Whether the pod's log shows it up and forwarding.
pub fn started(log_text: &str) -> bool {
    log_text.contains("Press enter to exit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_testpmd_totals() {
        let log = "  ---------------------- Forward statistics for port 0  --------------\n\
                   RX-packets: 25             RX-dropped: 0             RX-total: 25\n\
                   TX-packets: 24             TX-dropped: 1             TX-total: 25\n";
        assert_eq!(totals(log), Some((25, 24)));
        assert_eq!(totals("nothing"), None);
    }
}
