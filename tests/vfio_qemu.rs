//! podwire's VFIO drivers on emulated hardware: a QEMU 10 guest (TCG, vIOMMU) with an
//! emulated `igb` PF whose SR-IOV VFs the guest's igb driver creates. Inside the
//! guest, podwire (built on the host, run from the host's root mounted read-only
//! over 9p) binds a VF with `podwire pci bind` and owns it through VFIO with its
//! igbvf driver (`podwire pci echo`: ARP and ICMP echo for 10.77.0.2 on both queue
//! pairs); the
//! guest kernel's igb PF netdev (10.77.0.1) pings it with ordinary and 9000-byte
//! jumbo frames, then again after the PF is reset under podwire (MTU bounce). The
//! frames cross the VF's rings in both directions, counted by podwire and by the
//! VF's own statistics registers.
//! A second test runs `podwire run` with the VF cross-connected to a virtio-net
//! function (both through VFIO), between the PF's netdev and an e1000e netdev; hub 1's
//! pcap shows podwire's virtio-net transmitting on the wire. The guest script's verdict comes back as QEMU's exit
//! status through isa-debug-exit, and the responder's counters on the console.
//!
//! Needs root, `qemu-system-x86_64` 10.x from bookworm-backports and busybox-static
//! (`scripts/install-deps.sh`), and on the first run `apt-get download` of the guest
//! kernel (`scripts/build-guest.sh target/guest vfio`). Guest addresses exist only
//! inside the guest: nothing touches a host interface.

mod common;

use common::qemu::{check_qemu, guest_image, read_lossy, tail, QEMU};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Hard bound on the QEMU process, enforced by `timeout(1)` even if this test dies.
const QEMU_LIFETIME_SECS: u32 = 200;
/// isa-debug-exit status for a guest script that succeeded (0x10 << 1 | 1).
const EXIT_PASS: i32 = 33;

const PODWIRE: &str = env!("CARGO_BIN_EXE_podwire");

/// A directory the guest can read, removed unless the test fails. The guest sees
/// the host's root read-only but mounts its own tmpfs on /tmp and /run, so the
/// directory (and the podwire binary the guest runs) must not live under those: a
/// checkout under /tmp would be invisible to the guest. /var/tmp is on the root
/// filesystem here.
struct RunDir(PathBuf);

impl RunDir {
    fn new(tag: &str) -> Self {
        let p = PathBuf::from(format!("/var/tmp/podwire-vfio-qemu-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// A copy of the podwire binary inside the directory, for the guest to run.
    fn podwire(&self) -> PathBuf {
        let dst = self.0.join("podwire");
        std::fs::copy(PODWIRE, &dst).expect("copy the podwire binary for the guest");
        dst
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(test files kept in {})", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The QEMU process (under `timeout`, in its own process group), killed on drop.
struct Qemu {
    child: Child,
    serial: PathBuf,
    stderr: PathBuf,
    done: bool,
}

impl Qemu {
    fn signal(&self, sig: libc::c_int) {
        if self.done {
            return;
        }
        // SAFETY: kill(2) on the process group our unreaped child leads
        // (`process_group(0)`), so the id cannot have been reused.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), sig) };
    }

    /// Waits for QEMU to exit; returns its exit code, or None after `limit`.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.done = true;
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    fn serial(&self) -> String {
        read_lossy(&self.serial)
    }

    fn describe(&self) -> String {
        format!(
            "--- guest serial (last lines) ---\n{}\n--- qemu stderr ---\n{}",
            tail(&self.serial(), 80),
            tail(&read_lossy(&self.stderr), 20)
        )
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait(Duration::from_secs(3)).is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Boots the guest with the devices in `devices` and runs `script` (a host path).
fn boot(dir: &Path, devices: &[&str], script: &Path) -> Qemu {
    boot_in(None, dir, devices, script)
}

/// As [`boot`], with QEMU in network namespace `netns` when given (for a tap netdev
/// that must not appear in the host's namespace).
fn boot_in(netns: Option<&str>, dir: &Path, devices: &[&str], script: &Path) -> Qemu {
    let (kernel, initrd) = guest_image(Some("vfio"));
    let serial = dir.join("serial.log");
    let stderr = dir.join("qemu.log");
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "timeout"]);
            c
        }
        None => Command::new("timeout"),
    };
    c.arg("--kill-after=5")
        .arg(QEMU_LIFETIME_SECS.to_string())
        .arg(QEMU)
        // One TCG thread for both vCPUs: with multi-threaded TCG, QEMU 10 once
        // aborted in iotlb_to_section (an assertion on its memory map) while the
        // guest set up VFIO under the vIOMMU.
        .args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", "1G"])
        .args(["-machine", "q35"])
        .args(["-device", "intel-iommu,intremap=on,aw-bits=48"]);
    for d in devices {
        c.args(d.split(' '));
    }
    c.args(["-virtfs", "local,path=/,mount_tag=host0,security_model=none,id=host0,readonly=on"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 no_timer_check intel_iommu=on iommu=pt hugepages=64 \
             podwire.script={}",
            script.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0);
    let child = c.spawn().unwrap_or_else(|e| panic!("start {QEMU}: {e}"));
    Qemu { child, serial, stderr, done: false }
}

/// The value of `key=` in a line.
fn kv(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
}

/// Shell helpers shared by the guest scripts (POSIX sh; the host's /bin/sh runs them).
const SH_COMMON: &str = r#"
say() { echo "PODWIRE: $*"; }
fail() { echo "PODWIRE: FAIL $*"; [ -f /tmp/resp.log ] && cat /tmp/resp.log; exit 1; }
find_dev() { # vendor device -> first PCI address
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat $d/vendor)" = "$1" ] && [ "$(cat $d/device)" = "$2" ]; then
      echo "${d##*/}"; return 0
    fi
  done
  return 1
}
wait_for_line() { # file pattern seconds
  n=0
  until grep -q "$2" "$1" 2>/dev/null; do
    n=$((n + 1)); [ $n -gt $(($3 * 5)) ] && return 1
    sleep 0.2
  done
}
ping_ok() { # count size target [extra]
  out=$(ping -c "$1" -s "$2" -i 0.2 -W 3 $4 "$3" 2>&1)
  sum=$(echo "$out" | grep 'packets transmitted')
  say "ping -s $2 $3: $sum"
  echo "$sum" | grep -q ' 0% packet loss'
}
"#;

#[test]
fn igbvf_answers_the_guest_kernel_through_vfio() {
    check_qemu();
    let dir = RunDir::new("igbvf");
    let script = dir.0.join("guest.sh");
    let body = format!(
        r#"{SH_COMMON}
PODWIRE={podwire}
pf=$(find_dev 0x8086 0x10c9) || fail "no igb PF (8086:10c9) in the guest"
n=0
while [ ! -d /sys/bus/pci/devices/$pf/net ]; do
  n=$((n + 1)); [ $n -gt 100 ] && fail "igb PF $pf has no netdev"; sleep 0.2
done
pfif=$(ls /sys/bus/pci/devices/$pf/net | head -1)
ip link set lo up
# MTU first (an igb PF resets on an MTU change: tested below, on purpose).
ip link set "$pfif" up mtu 9000 || fail "ip link set $pfif up mtu 9000"
ip addr add 10.77.0.1/24 dev "$pfif"
echo 2 > /sys/bus/pci/devices/$pf/sriov_numvfs || fail "cannot create VFs on $pf"
ip link set "$pfif" vf 0 mac 02:00:00:77:00:02 || fail "cannot set the VF's MAC"
vf=$(basename "$(readlink /sys/bus/pci/devices/$pf/virtfn0)")
say "PF $pf ($pfif) VF $vf"
# The kernel's igbvf has the VF now: podwire must take it away.
n=0
while [ ! -e /sys/bus/pci/devices/$vf/driver ]; do
  n=$((n + 1)); [ $n -gt 50 ] && break; sleep 0.2
done
say "VF driver before: $(basename "$(readlink /sys/bus/pci/devices/$vf/driver)" 2>/dev/null)"
$PODWIRE pci list
# A VF whose kernel interface is up is in use: podwire must refuse it and say how.
vf1=$(basename "$(readlink /sys/bus/pci/devices/$pf/virtfn1)")
vf1if=$(ls /sys/bus/pci/devices/$vf1/net | head -1)
ip link set "$vf1if" up
if $PODWIRE pci bind "$vf1" 2>/tmp/refused; then fail "podwire bound $vf1 whose $vf1if is up"; fi
say "refused: $(cat /tmp/refused)"
grep -q "ip link set $vf1if down" /tmp/refused || fail "the refusal does not say how to fix it"
$PODWIRE pci bind "$vf" || fail "podwire pci bind $vf"
$PODWIRE pci list | grep "$vf" | grep -q vfio-pci || fail "$vf is not on vfio-pci after bind"
# Everything VFIO needs is here (hugepages, vIOMMU, vfio modules): doctor must agree.
$PODWIRE doctor || fail "podwire doctor reports a failure in a ready guest"
$PODWIRE pci echo "$vf" --ip 10.77.0.2 --queues 2 --buffer-size 9216 --stop-file /tmp/stop \
  >/tmp/resp.log 2>&1 &
rpid=$!
wait_for_line /tmp/resp.log 'RESPONDER: ready\|error' 60 || fail "podwire pci echo never got ready"
grep -q 'RESPONDER: ready' /tmp/resp.log || fail "podwire pci echo: $(cat /tmp/resp.log)"
say "$(grep 'RESPONDER: ready' /tmp/resp.log)"
n=0
until ping -c 1 -W 1 10.77.0.2 >/dev/null 2>&1; do
  n=$((n + 1)); [ $n -ge 20 ] && fail "10.77.0.2 (podwire's VF) never answered"
done
say "first answer after $n unanswered pings"
ping_ok 10 56 10.77.0.2 || fail "ping loss through the VF"
ping_ok 3 8972 10.77.0.2 "-M do" || fail "jumbo ping loss through the VF"
# Reset the PF under podwire (two MTU changes): its VF's queues stop, and podwire
# must notice through the mailbox and restart the VF by itself.
ip link set "$pfif" mtu 1500 && ip link set "$pfif" mtu 9000 || fail "PF MTU bounce"
n=0
until ping -c 1 -W 1 10.77.0.2 >/dev/null 2>&1; do
  n=$((n + 1)); [ $n -ge 30 ] && fail "the VF never answered again after the PF reset"
done
say "answers again after the PF reset ($n unanswered pings)"
ping_ok 5 56 10.77.0.2 || fail "ping loss after the PF reset"
ping_ok 2 8972 10.77.0.2 "-M do" || fail "jumbo ping loss after the PF reset"
touch /tmp/stop
wait $rpid || fail "podwire pci echo exited with $?"
cat /tmp/resp.log
$PODWIRE pci unbind "$vf" || fail "podwire pci unbind $vf"
say "VF driver after unbind: $(basename "$(readlink /sys/bus/pci/devices/$vf/driver)" 2>/dev/null)"
exit 0
"#,
        podwire = dir.podwire().display(),
    );
    std::fs::write(&script, body).unwrap();
    // PF <-> VF frames are switched inside the igb (its VMDq loopback) and never
    // reach the hub, so there is no pcap here: the VF's own statistics registers
    // count them instead. The cross-connect test below checks the hub.
    let start = Instant::now();
    let mut q = boot(
        &dir.0,
        &[
            "-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1",
            "-netdev hubport,id=n0,hubid=0",
            "-device igb,bus=rp1,netdev=n0,mac=52:54:00:77:00:01",
        ],
        &script,
    );
    let code = q.wait(Duration::from_secs(QEMU_LIFETIME_SECS as u64 + 10));
    let serial = q.serial();
    println!("guest finished in {:.1} s\n{}", start.elapsed().as_secs_f64(), tail(&serial, 60));
    assert_eq!(code, Some(EXIT_PASS), "guest verdict (33 = pass)\n{}", q.describe());
    let done = serial
        .lines()
        .find(|l| l.contains("RESPONDER: done"))
        .unwrap_or_else(|| panic!("no responder summary\n{}", q.describe()));
    let get = |k: &str| kv(done, k).unwrap_or_else(|| panic!("no {k}= in {done:?}"));
    assert!(get("arp") >= 1, "the VF answered no ARP request: {done}");
    assert!(get("icmp") >= 21, "10 + 3 jumbo + 1 + 5 + 2 jumbo echo requests: {done}");
    assert!(get("jumbo") >= 5, "jumbo frames crossed the VF: {done}");
    assert!(get("pf_resets") >= 1, "podwire restarted the VF after the PF reset: {done}");
    assert_eq!(get("errors"), 0, "{done}");
    // Replies alternate between the two tx queues: both queue pairs carried frames.
    assert!(get("q0_tx") >= 1 && get("q1_tx") >= 1, "both tx queues used: {done}");
    assert!(serial.contains("RESPONDER: mailbox SET_VLAN 100 ok, SET_MULTICAST 1 ok"));
    assert!(serial.contains("refused: podwire: error: PCI device"), "bind refusal missing");
    // `pci list` explains the PF and relates each VF to it.
    assert!(serial.contains("no: an SR-IOV PF; create VFs with"), "pci list: PF hint missing");
    assert!(serial.contains("[VF of 0000:01:00.0]"), "pci list: VF's PF missing");
    assert!(serial.contains("ok   VFIO: vfio, vfio_iommu_type1 and vfio_pci are loaded"));
    // The VF's own statistics registers count too (a PF reset may clear them).
    assert!(get("vf_rx_packets") >= 7 && get("vf_tx_packets") >= 7, "{done}");
    assert!(get("tx") >= 22, "{done}");
}

/// The daemon path: `podwire run` cross-connects the VF and a virtio-net function,
/// both owned through VFIO; then it is SIGKILLed while forwarding and started again
/// on the same config, with no cleanup in between: it must take both devices again
/// (the guest prints the time to the first ping answered through them). The guest kernel's igb PF netdev (10.78.0.1, root
/// namespace) reaches an e1000e netdev (10.78.0.2, namespace `peer`) only through
/// podwire: PF -> (igb's internal switch) VF -> podwire -> virtio-net -> hub 1 ->
/// e1000e, and back. The e1000e carries the VF's MAC, so the PF's frames for it are
/// switched to the VF, and the replies leave the VF with its own source MAC.
#[test]
fn daemon_cross_connects_igbvf_and_virtio_net_and_takes_them_again_after_sigkill() {
    check_qemu();
    let dir = RunDir::new("xconnect");
    let script = dir.0.join("guest.sh");
    let body = format!(
        r#"{SH_COMMON}
PODWIRE={podwire}
M=02:00:00:78:00:02
pf=$(find_dev 0x8086 0x10c9) || fail "no igb PF (8086:10c9) in the guest"
vio=$(find_dev 0x1af4 0x1041) || fail "no virtio-net (1af4:1041) in the guest"
e1k=$(find_dev 0x8086 0x10d3) || fail "no e1000e (8086:10d3) in the guest"
n=0
while [ ! -d /sys/bus/pci/devices/$pf/net ] || [ ! -d /sys/bus/pci/devices/$e1k/net ]; do
  n=$((n + 1)); [ $n -gt 100 ] && fail "igb PF or e1000e has no netdev"; sleep 0.2
done
pfif=$(ls /sys/bus/pci/devices/$pf/net | head -1)
e1kif=$(ls /sys/bus/pci/devices/$e1k/net | head -1)
ip link set lo up
ip link set "$pfif" up mtu 9000 || fail "PF up"
ip addr add 10.78.0.1/24 dev "$pfif"
echo 1 > /sys/bus/pci/devices/$pf/sriov_numvfs || fail "cannot create a VF on $pf"
ip link set "$pfif" vf 0 mac $M || fail "cannot set the VF's MAC"
vf=$(basename "$(readlink /sys/bus/pci/devices/$pf/virtfn0)")
ip netns add peer || fail "ip netns add"
ip link set "$e1kif" netns peer || fail "move $e1kif to netns peer"
ip -n peer link set lo up
ip -n peer link set "$e1kif" address $M mtu 9000 up || fail "peer link"
ip -n peer addr add 10.78.0.2/24 dev "$e1kif"
say "PF $pf ($pfif) VF $vf virtio $vio e1000e $e1k ($e1kif, netns peer)"
# The virtio function still has the kernel's virtio_net; its interface is down.
$PODWIRE pci bind "$vf" || fail "podwire pci bind $vf"
$PODWIRE pci bind "$vio" || fail "podwire pci bind $vio"
$PODWIRE pci list
cat > /run/podwire.toml <<CFG
control_socket = "/run/podwire.sock"
[memory]
buffers = 4096
buffer_size = 9216
[workers]
cores = [1]
[[ports]]
name = "vf"
type = "vfio"
pci = "$vf"
[[ports]]
name = "virtio"
type = "vfio"
pci = "$vio"
ring_size = 256
[[xconnect]]
ports = ["vf", "virtio"]
CFG
# Milliseconds from $1 (date +%s%N) to $2 (seconds.fraction); the time of the first
# line of log $1 that matches $2 (the log's UTC timestamps).
ms_since() {{ awk -v a="$1" -v b="$2" 'BEGIN {{ printf "%d", b * 1000 - a / 1000000 }}'; }}
logts() {{ date -u -d "$(sed -n "s/^\([0-9T:.-]*\)Z .*$2.*/\1/p" "$1" | head -1)" +%s.%N; }}
t0=$(date +%s%N)
RUST_LOG=info $PODWIRE run -c /run/podwire.toml >/tmp/resp.log 2>&1 &
dpid=$!
wait_for_line /tmp/resp.log 'control socket ready\|error' 60 || fail "podwire never got ready"
grep -q 'control socket ready' /tmp/resp.log || fail "podwire did not start"
say "FIRST START: exec to first log line $(ms_since $t0 $(logts /tmp/resp.log starting)) ms, control socket ready after $(ms_since $t0 $(logts /tmp/resp.log 'control socket ready')) ms"
n=0
until ping -c 1 -W 1 10.78.0.2 >/dev/null 2>&1; do
  n=$((n + 1)); [ $n -ge 20 ] && fail "10.78.0.2 never answered through podwire"
done
say "first answer after $n unanswered pings"
ping_ok 10 56 10.78.0.2 || fail "ping loss through podwire"
ping_ok 3 8972 10.78.0.2 "-M do" || fail "jumbo ping loss through podwire"
$PODWIRE stats --socket /run/podwire.sock --json | sed 's/^/PODWIRE-STATS: /'
# SIGKILL while frames cross podwire: no cleanup of any kind, then the same config
# again. The dead process's VFIO container, group and device fds close with it (DMA
# unmapped, the function reset by vfio-pci), its packet memory was a hugetlb memfd
# (no file left in a hugetlbfs), the control socket file stays behind.
ping -q -i 0.05 -W 1 10.78.0.2 >/dev/null 2>&1 &
ppid=$!
sleep 1
kill -KILL $dpid
wait $dpid 2>/dev/null
kill $ppid; wait $ppid 2>/dev/null
[ -S /run/podwire.sock ] || fail "the control socket file should be left behind by SIGKILL"
hp=$(awk '/HugePages_Total/ {{t=$2}} /HugePages_Free/ {{f=$2}} END {{print t - f}}' /proc/meminfo)
say "podwire SIGKILLed while forwarding; hugepages still in use after its death: $hp"
[ "$hp" = 0 ] || fail "the dead podwire's hugepages were not released ($hp)"
$PODWIRE pci list | grep -q "$vf.*vfio-pci" || fail "$vf left vfio-pci"
t0=$(date +%s%N)
RUST_LOG=info $PODWIRE run -c /run/podwire.toml >/tmp/resp2.log 2>&1 &
dpid=$!
ping -D -i 0.05 -W 1 -c 1200 10.78.0.2 >/tmp/ping2.log 2>&1 &
ppid=$!
wait_for_line /tmp/ping2.log 'bytes from' 60 || {{ cat /tmp/resp2.log; fail "no answer through podwire within 60 s of the restart"; }}
kill $ppid; wait $ppid 2>/dev/null
t1=$(sed -n 's/^\[\([0-9.]*\)\] .*bytes from.*/\1/p' /tmp/ping2.log | head -1)
wait_for_line /tmp/resp2.log 'control socket ready' 30 || fail "podwire never got ready after the restart"
say "RESTART: exec to first log line $(ms_since $t0 $(logts /tmp/resp2.log starting)) ms, control socket ready after $(ms_since $t0 $(logts /tmp/resp2.log 'control socket ready')) ms, first ping answered through both VFIO ports after $(ms_since $t0 $t1) ms"
ping_ok 10 56 10.78.0.2 || fail "ping loss through podwire after the restart"
ping_ok 3 8972 10.78.0.2 "-M do" || fail "jumbo ping loss after the restart"
$PODWIRE stats --socket /run/podwire.sock --json | sed 's/^/PODWIRE-STATS2: /'
kill -TERM $dpid
wait $dpid || fail "podwire exited with $?"
cat /tmp/resp.log
cat /tmp/resp2.log
$PODWIRE pci unbind "$vio" || fail "podwire pci unbind $vio"
say "virtio driver after unbind: $(basename "$(readlink /sys/bus/pci/devices/$vio/driver)" 2>/dev/null)"
exit 0
"#,
        podwire = dir.podwire().display(),
    );
    std::fs::write(&script, body).unwrap();
    let pcap = dir.0.join("hub1.pcap");
    let start = Instant::now();
    let mut q = boot(
        &dir.0,
        &[
            "-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1",
            "-device pcie-root-port,id=rp2,bus=pcie.0,chassis=2",
            "-device pcie-root-port,id=rp3,bus=pcie.0,chassis=3",
            "-netdev hubport,id=n0,hubid=0",
            "-device igb,bus=rp1,netdev=n0,mac=52:54:00:78:00:01",
            "-netdev hubport,id=n1,hubid=1",
            "-device virtio-net-pci,bus=rp2,netdev=n1,mac=52:54:00:78:00:03,\
             disable-legacy=on,iommu_platform=on,ats=on",
            "-netdev hubport,id=n2,hubid=1",
            "-device e1000e,bus=rp3,netdev=n2,mac=52:54:00:78:00:04",
            &format!("-object filter-dump,id=d1,netdev=n1,file={}", pcap.display()),
        ],
        &script,
    );
    let code = q.wait(Duration::from_secs(QEMU_LIFETIME_SECS as u64 + 10));
    let serial = q.serial();
    println!("guest finished in {:.1} s\n{}", start.elapsed().as_secs_f64(), tail(&serial, 60));
    assert_eq!(code, Some(EXIT_PASS), "guest verdict (33 = pass)\n{}", q.describe());
    let json = serial
        .lines()
        .find_map(|l| l.split_once("PODWIRE-STATS: ").map(|(_, j)| j.to_string()))
        .unwrap_or_else(|| panic!("no stats line\n{}", q.describe()));
    let stats: podwire::control::StatsResponse =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("stats {json:?}: {e}"));
    for p in &stats.ports {
        assert_eq!(p.kind, "vfio", "{p:?}");
        assert_eq!(p.link, "up", "{p:?}");
        // 10 + 3 jumbo echo requests one way, as many replies the other way.
        assert!(p.rx_packets >= 13 && p.tx_packets >= 13, "{p:?}");
        assert_eq!(p.errors, 0, "{p:?}");
    }
    assert_eq!(stats.ports.len(), 2);
    // After the SIGKILL and the restart: both devices taken again, forwarding.
    // Each start reset both functions through VFIO before using them.
    assert_eq!(
        serial.matches("function_reset=\"done\"").count(),
        4,
        "a function reset per device and start\n{}",
        q.describe()
    );
    for what in ["FIRST START: ", "RESTART: "] {
        let line = serial
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line\n{}", q.describe()));
        println!("{}", line.trim());
    }
    let json = serial
        .lines()
        .find_map(|l| l.split_once("PODWIRE-STATS2: ").map(|(_, j)| j.to_string()))
        .unwrap_or_else(|| panic!("no stats line after the restart\n{}", q.describe()));
    let stats: podwire::control::StatsResponse =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("stats {json:?}: {e}"));
    assert_eq!(stats.ports.len(), 2);
    for p in &stats.ports {
        assert_eq!(p.link, "up", "after the restart: {p:?}");
        assert!(p.rx_packets >= 13 && p.tx_packets >= 13, "after the restart: {p:?}");
        assert_eq!(p.errors, 0, "after the restart: {p:?}");
    }
    // On hub 1, podwire's virtio-net sent the PF's frames (source: the PF's MAC), and
    // the e1000e's replies (source: the VF's MAC) came back.
    let cap = std::fs::read(&pcap).unwrap_or_default();
    let count_src = |mac: [u8; 6]| cap.windows(12).filter(|w| w[6..12] == mac).count();
    let from_pf = count_src([0x52, 0x54, 0x00, 0x78, 0x00, 0x01]);
    let from_peer = count_src([0x02, 0x00, 0x00, 0x78, 0x00, 0x02]);
    assert!(
        from_pf >= 13 && from_peer >= 13,
        "hub 1 pcap ({} bytes): {from_pf} frames from the PF via podwire, {from_peer} from \
         the e1000e",
        cap.len()
    );
}

/// A network namespace for the host side of a tap, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        let ok = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(ok.is_ok_and(|s| s.success()), "ip netns add {name} (needs root and iproute2)");
        Self(name)
    }

    /// Runs `ip -n NS ARGS`; panics with the command when it fails.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(["-n", &self.0]).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.0,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Multiqueue virtio-net through VFIO: QEMU's virtio-net-pci with `mq=on` on a
/// two-queue tap (the tap in a namespace of this test, so nothing reaches a host
/// interface). In the guest, `podwire pci echo --queues 2` negotiates MQ, enables
/// two queue pairs through the control virtqueue and answers ARP/ICMP for
/// 10.79.0.2. The test pings it from 16 source addresses on the tap: the tap spreads
/// flows over its two queues, which QEMU maps to the two rx virtqueues, and the
/// echo's replies leave on both tx virtqueues in turn, so both pairs must carry
/// frames in both directions.
#[test]
fn virtio_net_multiqueue_answers_on_both_queue_pairs() {
    check_qemu();
    let dir = RunDir::new("virtio-mq");
    let ns = Netns::new(format!("pwmq{}", std::process::id()));
    let stop = dir.0.join("stop");
    let script = dir.0.join("guest.sh");
    let body = format!(
        r#"{SH_COMMON}
PODWIRE={podwire}
vio=$(find_dev 0x1af4 0x1041) || fail "no virtio-net (1af4:1041) in the guest"
ip link set lo up
$PODWIRE pci bind "$vio" || fail "podwire pci bind $vio"
$PODWIRE pci echo "$vio" --ip 10.79.0.2 --queues 2 --stop-file {stop} >/tmp/resp.log 2>&1 &
rpid=$!
wait_for_line /tmp/resp.log 'RESPONDER: ready\|rror' 90 || fail "podwire pci echo never got ready"
grep -q 'RESPONDER: ready' /tmp/resp.log || fail "podwire pci echo: $(cat /tmp/resp.log)"
say "$(grep 'RESPONDER: ready' /tmp/resp.log)"
wait $rpid || fail "podwire pci echo exited with $?"
cat /tmp/resp.log
$PODWIRE pci unbind "$vio" || fail "podwire pci unbind $vio"
exit 0
"#,
        podwire = dir.podwire().display(),
        stop = stop.display(),
    );
    std::fs::write(&script, body).unwrap();
    let start = Instant::now();
    let mut q = boot_in(
        Some(&ns.0),
        &dir.0,
        &[
            "-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1",
            "-netdev tap,id=n0,ifname=pwmq0,script=no,downscript=no,queues=2,vhost=off",
            "-device virtio-net-pci,bus=rp1,netdev=n0,mac=52:54:00:79:00:02,mq=on,vectors=6,\
             disable-legacy=on,iommu_platform=on,ats=on",
        ],
        &script,
    );
    // The tap exists once QEMU has opened it; give it addresses in the namespace.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !Command::new("ip")
        .args(["-n", &ns.0, "link", "show", "pwmq0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < ready_by, "QEMU never created tap pwmq0\n{}", q.describe());
        assert!(q.wait(Duration::from_millis(200)).is_none(), "QEMU exited\n{}", q.describe());
    }
    ns.ip(&["link", "set", "pwmq0", "up"]);
    ns.ip(&["addr", "add", "10.79.0.1/24", "dev", "pwmq0"]);
    let sources: Vec<String> = (101..117).map(|i| format!("10.79.0.{i}")).collect();
    for a in &sources {
        ns.ip(&["addr", "add", &format!("{a}/24"), "dev", "pwmq0"]);
    }
    // Wait for the guest's echo, then ping it from every source address.
    let ready_by = Instant::now() + Duration::from_secs(170);
    while !q.serial().contains("RESPONDER: ready") {
        assert!(Instant::now() < ready_by, "echo never ready\n{}", q.describe());
        assert!(q.wait(Duration::from_millis(500)).is_none(), "QEMU exited\n{}", q.describe());
    }
    let ping = |src: &str, count: &str| {
        Command::new("ip")
            .args(["netns", "exec", &ns.0, "ping", "-n", "-q", "-c", count, "-i", "0.2"])
            .args(["-W", "3", "-I", src, "10.79.0.2"])
            .output()
            .unwrap()
    };
    let mut tries = 0;
    while !ping("10.79.0.1", "1").status.success() {
        tries += 1;
        assert!(tries < 20, "10.79.0.2 (podwire's echo) never answered\n{}", q.describe());
    }
    let mut replies = 0;
    for a in &sources {
        let out = ping(a, "3");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains(" 0% packet loss"), "ping -I {a}: {text}\n{}", q.describe());
        replies += 3;
    }
    std::fs::write(&stop, b"").unwrap();
    let code = q.wait(Duration::from_secs(QEMU_LIFETIME_SECS as u64 + 10));
    let serial = q.serial();
    println!("guest finished in {:.1} s\n{}", start.elapsed().as_secs_f64(), tail(&serial, 40));
    assert_eq!(code, Some(EXIT_PASS), "guest verdict (33 = pass)\n{}", q.describe());
    assert!(serial.contains("queues 2 link up"), "echo did not get 2 queue pairs\n{serial}");
    let done = serial
        .lines()
        .find(|l| l.contains("RESPONDER: done"))
        .unwrap_or_else(|| panic!("no responder summary\n{}", q.describe()));
    let get = |k: &str| kv(done, k).unwrap_or_else(|| panic!("no {k}= in {done:?}"));
    assert!(get("icmp") >= replies, "{replies} echo requests answered from 16 sources: {done}");
    assert_eq!(get("errors"), 0, "{done}");
    for k in ["q0_rx", "q1_rx", "q0_tx", "q1_tx"] {
        assert!(get(k) >= 1, "both queue pairs carry frames both ways ({k}): {done}");
    }
}
