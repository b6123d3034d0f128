//! QEMU 10 guests whose stock Linux virtio_net driver talks through podwire.
//!
//! `podwire run` cross-connects two pairs of vhost-user ports; each pair gets two TCG
//! guests (Debian's 6.12 kernel, a busybox initramfs built by
//! `scripts/build-guest.sh` and cached under `target/guest/`). The `split` pair uses
//! split rings with podwire as the socket server; the `packed` pair packed rings with
//! podwire as the client of a listening QEMU. Verified from inside the guests:
//!
//! 1. The client pings the server (20 counted pings after a warm-up, 0% loss),
//!    unloads and reloads virtio_net (a device reset: podwire sees its rings stopped
//!    and restarted), pings again, and sends 1 MiB of random data over TCP; both
//!    print the md5 on the serial console and the test compares them.
//! 2. The clients' QEMUs are SIGKILLed while they ping; new clients (without
//!    EVENT_IDX this time) boot on the same sockets and ping the servers again.
//!
//! A kernel driver negotiates EVENT_IDX and sleeps until interrupted, so this is the
//! test of podwire's call-eventfd path (`ring/split.rs` `publish()`,
//! `ring/packed.rs` `notify()`), with and without event indexes. podwire's counters
//! (traffic on every port, no errors) and its memory maps (no guest memory left once
//! every QEMU is gone) are checked at the end.
//!
//! Needs root, hugepages, `qemu-system-x86_64` 10.x from bookworm-backports and
//! busybox-static (all from `scripts/install-deps.sh`), and on the first run
//! `apt-get download` of the guest kernel. Guest addresses (10.99.x.y) exist only
//! inside the guests: nothing touches a host interface.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, TempDir};
use common::qemu::{check_qemu, guest_image, read_lossy, tail, QEMU};
use podwire_vhost::proto::feat;

/// A guest that has not configured eth0 by then is stuck (a vhost-user handshake
/// that never completes leaves QEMU waiting before the guest even starts).
const BOOT_TIMEOUT: Duration = Duration::from_secs(75);
/// Each round (boot, pings, transfer) for all pairs. Round 1 takes ~20 s here.
const RUN_TIMEOUT: Duration = Duration::from_secs(150);
/// Hard bound on each QEMU process, enforced by `timeout(1)` even if this test dies.
const QEMU_LIFETIME_SECS: u32 = 200;

const PINGS: u32 = 20;
const TRANSFER_KIB: u32 = 1024;
/// virtio feature bits, as printed by the guest (`/sys/class/net/eth0/device/features`).
const F_MRG_RXBUF: usize = bit(feat::NET_F_MRG_RXBUF);
const F_EVENT_IDX: usize = bit(feat::RING_F_EVENT_IDX);
const F_VERSION_1: usize = bit(feat::F_VERSION_1);
const F_RING_PACKED: usize = bit(feat::F_RING_PACKED);

/// The bit number of a one-bit feature mask.
const fn bit(mask: u64) -> usize {
    mask.trailing_zeros() as usize
}

/// One cross-connected pair of guests.
struct Pair {
    /// Names used in messages, the config and file names.
    name: &'static str,
    /// Extra `-device virtio-net-pci` options.
    device_opts: &'static str,
    /// Whether the guests must have negotiated packed rings.
    packed: bool,
    /// Third octet of the pair's 10.99.x.0/24 subnet.
    subnet: u8,
    /// podwire's socket mode: "server" (QEMU connects) or "client" (QEMU listens
    /// with `server=on` and waits for podwire before it starts the guest).
    mode: &'static str,
}

const PAIRS: [Pair; 2] = [
    Pair { name: "split", device_opts: "", packed: false, subnet: 1, mode: "server" },
    Pair { name: "packed", device_opts: ",packed=on", packed: true, subnet: 2, mode: "client" },
];

/// One QEMU process (under `timeout`, in its own process group).
struct Guest {
    name: String,
    serial: PathBuf,
    stderr: PathBuf,
    child: Child,
    exited: bool,
}

impl Guest {
    /// Sends `sig` to `timeout` and QEMU: both are in the process group led by our
    /// child.
    fn signal(&self, sig: libc::c_int) {
        if self.exited {
            return;
        }
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on the process group of a child we spawned (it leads
        // the group: `process_group(0)`) and have not reaped yet, so the id cannot
        // have been reused.
        unsafe { libc::kill(-pgid, sig) };
    }

    /// Ends QEMU politely (SIGTERM), then by force.
    fn kill(&mut self) {
        if self.exited {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.exited = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_now();
    }

    /// SIGKILL: QEMU gets no chance to tell the backend anything.
    fn kill_now(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        self.exited = true;
    }

    fn poll_exit(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.exited = true;
                Some(s)
            }
            _ => None,
        }
    }

    fn output(&self) -> String {
        read_lossy(&self.serial)
    }

    /// The verdict line, once printed.
    fn verdict(&self) -> Option<String> {
        self.output()
            .lines()
            .find_map(|l| l.find("PODWIRE-RESULT: ").map(|i| l[i + 16..].trim().to_string()))
    }

    fn describe(&self) -> String {
        format!(
            "--- {} serial (last lines) ---\n{}\n--- {} qemu stderr ---\n{}",
            self.name,
            tail(&read_lossy(&self.serial), 40),
            self.name,
            tail(&read_lossy(&self.stderr), 20)
        )
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(clippy::too_many_arguments)]
fn start_guest(
    dir: &Path,
    name: &str,
    (socket, listen): (&Path, bool),
    mac: &str,
    device_opts: &str,
    (kernel, initrd): (&Path, &Path),
    append: &str,
) -> Guest {
    let serial = dir.join(format!("{name}.serial"));
    let stderr = dir.join(format!("{name}.qemu.log"));
    let mut c = Command::new("timeout");
    c.arg("--kill-after=5")
        .arg(QEMU_LIFETIME_SECS.to_string())
        .arg(QEMU)
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "512M"])
        .args(["-object", "memory-backend-memfd,id=mem,size=512M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=c0,path={}{}",
            socket.display(),
            if listen { ",server=on" } else { "" }
        ))
        .args(["-netdev", "vhost-user,id=n0,chardev=c0,queues=1"])
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={mac}{device_opts}"))
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer
        // check can time out and panic ("IO-APIC + timer doesn't work!").
        .arg(format!("console=ttyS0 quiet panic=-1 no_timer_check {append}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        // Own process group, so that the guard can end `timeout` and QEMU together.
        .process_group(0);
    let child = c.spawn().unwrap_or_else(|e| panic!("start {QEMU} for {name}: {e}"));
    Guest { name: name.to_string(), serial, stderr, child, exited: false }
}

/// The value after `key` in a whitespace-separated line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next();
        }
    }
    None
}

/// The guest's negotiated virtio feature bits (a '0'/'1' string, bit 0 first).
fn guest_features(serial: &str) -> Option<String> {
    serial
        .lines()
        .find(|l| l.contains("PODWIRE: eth0 up"))
        .and_then(|l| field(l, "features"))
        .map(String::from)
}

fn has_bit(bits: &str, bit: usize) -> bool {
    bits.as_bytes().get(bit) == Some(&b'1')
}

#[test]
fn guests_ping_and_transfer_through_podwire() {
    let t0 = Instant::now();
    check_qemu();
    let (kernel, initrd) = guest_image(None);
    let t_image = t0.elapsed();

    let dir = TempDir::kept_on_failure("qemu");
    let mut ports = String::new();
    let mut xconnects = String::new();
    for p in &PAIRS {
        for (side, host) in [("c", 1), ("s", 2)] {
            ports += &format!(
                "[[ports]]\nname = \"{n}-{side}\"\ntype = \"vhost-user\"\nsocket = \"{s}\"\n\
                 mode = \"{mode}\"\nmac = \"52:54:00:00:{sub:02x}:{host:02x}\"\n",
                n = p.name,
                s = dir.join(format!("{}-{side}.sock", p.name)).display(),
                sub = p.subnet,
                mode = p.mode,
            );
        }
        xconnects += &format!("[[xconnect]]\nports = [\"{n}-c\", \"{n}-s\"]\n", n = p.name);
    }
    // Every vhost-user message at trace level: the log explains a stuck handshake.
    let config = format!(
        "log_level = \"info,podwire_vhost=trace\"\n[memory]\nbuffers = 4096\nhugepages = true\n\
         [workers]\ncores = [0]\n{ports}{xconnects}"
    );
    let mut daemon = Daemon::start(&dir, &config, &[]);

    let run = Run { dir: dir.to_path_buf(), log: daemon.log.clone(), kernel, initrd };

    // Round 1. Server guests first: they only listen, while the clients wait for them.
    // Every guest stays up after its verdict (the clients keep pinging).
    let mut guests: Vec<Guest> = Vec::new();
    for p in &PAIRS {
        guests.push(run.guest(p, "s", true, &format!("podwire.kib={TRANSFER_KIB} podwire.stay=1")));
        guests.push(run.guest(
            p,
            "c",
            true,
            &format!("podwire.kib={TRANSFER_KIB} podwire.reload=1 podwire.stay=1"),
        ));
    }
    let start = Instant::now();
    run.wait_for_verdicts(&mut guests, 0, &mut daemon);
    let t_round1 = start.elapsed();

    // Verdicts: both sides ok, same md5, the features that make this test worth it.
    for (k, p) in PAIRS.iter().enumerate() {
        let (server, client) = (&guests[2 * k], &guests[2 * k + 1]);
        let sv = server.verdict().unwrap();
        let cv = client.verdict().unwrap();
        println!("{}: {cv}\n{}: {sv}", client.name, server.name);
        for g in [server, client] {
            run.check_guest(g, p, true, &guests);
        }
        // The client reset its device (driver unloaded and loaded again) half way.
        let again = client.output();
        let again = again.lines().find(|l| l.contains("ping after driver reload")).unwrap_or("");
        assert!(again.contains(" 0% packet loss"), "{}: {again:?}", client.name);
        let bytes = (TRANSFER_KIB as u64 * 1024).to_string();
        assert_eq!(field(&sv, "received"), Some(bytes.as_str()), "{} received: {sv}", p.name);
        assert!(cv.contains(&format!("ping {PINGS} sent 0% loss")), "{}: {cv}", p.name);
        assert!(cv.contains(&format!("sent {bytes} bytes")), "{}: {cv}", p.name);
        let (ms, mc) = (field(&sv, "md5"), field(&cv, "md5"));
        assert!(ms.is_some() && ms == mc, "{}: md5 differs: client {mc:?}, server {ms:?}", p.name);
    }

    // Round 2. SIGKILL the client QEMUs while they ping (rings running, guest memory
    // mapped by podwire), then boot new clients on the same sockets: podwire must let
    // go of the dead frontends, take the new ones (in client mode: reconnect to the
    // new QEMU's socket) and forward to the servers, which never stopped. The new
    // clients run without EVENT_IDX: interrupts then follow the avail-ring flags
    // (split) or the driver event flags (packed) instead of the event indexes.
    let start = Instant::now();
    for k in 0..PAIRS.len() {
        guests[2 * k + 1].kill_now();
    }
    let first_new = guests.len();
    for p in &PAIRS {
        let mut g = run.guest(p, "c", false, "podwire.kib=0");
        g.name = format!("{}-c-restarted", p.name);
        guests.push(g);
    }
    run.wait_for_verdicts(&mut guests, first_new, &mut daemon);
    let t_round2 = start.elapsed();
    for (k, p) in PAIRS.iter().enumerate() {
        let g = &guests[first_new + k];
        let v = g.verdict().unwrap();
        println!("{}: {v}", g.name);
        run.check_guest(g, p, false, &guests);
        assert!(v.contains(&format!("ping {PINGS} sent 0% loss")), "{}: {v}", g.name);
    }
    // The new clients power themselves off; then end the servers.
    let deadline = Instant::now() + Duration::from_secs(15);
    while guests[first_new..].iter_mut().any(|g| g.poll_exit().is_none())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    for g in &mut guests {
        g.kill();
    }

    // podwire's own counters: every port forwarded, none counted an error.
    // TCP segments of at most 1460 payload bytes (podwire offers no TSO).
    let data_frames = TRANSFER_KIB as u64 * 1024 / 1460;
    for p in &PAIRS {
        let (c, s) = (daemon.port(&format!("{}-c", p.name)), daemon.port(&format!("{}-s", p.name)));
        println!("{}: {c:?}\n{}: {s:?}", p.name, p.name);
        for q in [&c, &s] {
            assert_eq!(q.errors, 0, "errors counted on {}: {q:?}", q.name);
            assert!(q.rx_packets >= 2 * PINGS as u64, "{q:?}");
            assert!(q.tx_packets >= 2 * PINGS as u64, "{q:?}");
        }
        // The client's data went in through its port and out through the server's.
        assert!(c.rx_packets >= PINGS as u64 + data_frames, "{c:?}");
        assert!(c.rx_bytes >= TRANSFER_KIB as u64 * 1024, "{c:?}");
        assert!(s.tx_packets >= PINGS as u64 + data_frames, "{s:?}");
        assert!(s.tx_bytes >= TRANSFER_KIB as u64 * 1024, "{s:?}");
    }

    // Every frontend left: podwire must have unmapped all guest memory (QEMU's RAM
    // shows in /proc/PID/maps as a memfd; podwire's own packet memory is
    // "podwire-dma*").
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let maps = read_lossy(Path::new(&format!("/proc/{}/maps", daemon.pid())));
        let guest_maps: Vec<&str> =
            maps.lines().filter(|l| l.contains("/memfd:") && !l.contains("podwire-dma")).collect();
        if guest_maps.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "podwire still maps guest memory after every QEMU exited:\n{}",
            guest_maps.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The daemon is still healthy and stops cleanly.
    let log = daemon.stop();
    let warnings: Vec<String> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(String::from)
        .collect();
    println!(
        "guest image {:.1} s; round 1 ({} pairs at once: boot, {PINGS} pings, driver reload, \
         {PINGS} pings, {TRANSFER_KIB} KiB TCP) {:.1} s; round 2 (clients SIGKILLed and \
         rebooted, {PINGS} pings) {:.1} s; whole test {:.1} s; podwire warnings: {warnings:?}",
        t_image.as_secs_f64(),
        PAIRS.len(),
        t_round1.as_secs_f64(),
        t_round2.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// What every guest of one test run shares.
struct Run {
    dir: PathBuf,
    log: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

impl Run {
    /// Starts the `side` ("c" client or "s" server) guest of pair `p`.
    /// `event_idx`: false to make QEMU withhold VIRTIO_RING_F_EVENT_IDX from the guest.
    fn guest(&self, p: &Pair, side: &str, event_idx: bool, extra: &str) -> Guest {
        let (host, peer, role) = if side == "c" { (1, 2, "client") } else { (2, 1, "server") };
        let net = format!("10.99.{}", p.subnet);
        let name = format!("{}-{side}", p.name);
        // A restarted guest gets its own serial file.
        let mut file_name = name.clone();
        let mut n = 1;
        while self.dir.join(format!("{file_name}.serial")).exists() {
            n += 1;
            file_name = format!("{name}.{n}");
        }
        start_guest(
            &self.dir,
            &file_name,
            (&self.dir.join(format!("{name}.sock")), p.mode == "client"),
            &format!("52:54:00:00:{:02x}:{host:02x}", p.subnet),
            &format!("{}{}", p.device_opts, if event_idx { "" } else { ",event_idx=off" }),
            (&self.kernel, &self.initrd),
            &format!(
                "podwire.ip={net}.{host}/24 podwire.peer={net}.{peer} podwire.role={role} \
                 podwire.pings={PINGS} {extra}"
            ),
        )
    }

    /// Fails the test with everything needed to see why.
    fn fail(&self, guests: &[Guest], why: String) -> ! {
        let mut msg = format!("{why}\n");
        for g in guests {
            msg += &g.describe();
            msg += "\n";
        }
        msg += &format!("--- podwire log (last lines) ---\n{}", tail(&read_lossy(&self.log), 60));
        msg += &format!("\n(all files kept in {})", self.dir.display());
        panic!("{msg}");
    }

    /// Waits until `guests[from..]` all printed a verdict, bounding the boot and the
    /// whole run; fails on a FAIL verdict, a QEMU gone without one, or a dead daemon.
    fn wait_for_verdicts(&self, guests: &mut [Guest], from: usize, daemon: &mut Daemon) {
        let start = Instant::now();
        let mut booted = vec![false; guests.len()];
        loop {
            let mut done = 0;
            let mut problem = None;
            for (i, g) in guests.iter_mut().enumerate().skip(from) {
                booted[i] |= g.output().contains("PODWIRE: eth0 up");
                match g.verdict() {
                    Some(v) if v.starts_with("FAIL") => problem = Some(format!("{}: {v}", g.name)),
                    Some(_) => done += 1,
                    None => {
                        if let Some(status) = g.poll_exit() {
                            problem =
                                Some(format!("{} exited ({status}) without a verdict", g.name));
                        }
                    }
                }
            }
            if let Some(why) = problem {
                self.fail(guests, why);
            }
            if done == guests.len() - from {
                return;
            }
            if let Some(status) = daemon.exit_status() {
                self.fail(guests, format!("podwire run exited with {status} while guests ran"));
            }
            if start.elapsed() > BOOT_TIMEOUT {
                if let Some(i) = (from..guests.len()).find(|&i| !booted[i]) {
                    let why = format!(
                        "{} did not bring eth0 up within {BOOT_TIMEOUT:?} (stuck vhost-user \
                         handshake? see the trace of messages in the podwire log)",
                        guests[i].name
                    );
                    self.fail(guests, why);
                }
            }
            if start.elapsed() > RUN_TIMEOUT {
                self.fail(guests, format!("no verdict from every guest within {RUN_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An ok verdict, the features that make this test worth it, and rx interrupts.
    fn check_guest(&self, g: &Guest, p: &Pair, event_idx: bool, guests: &[Guest]) {
        let v = g.verdict().unwrap_or_default();
        if !v.starts_with("ok ") {
            self.fail(guests, format!("{} failed: {v}", g.name));
        }
        let out = g.output();
        let bits = guest_features(&out).unwrap_or_default();
        for (bit, what) in [(F_VERSION_1, "VERSION_1"), (F_MRG_RXBUF, "MRG_RXBUF")] {
            assert!(has_bit(&bits, bit), "{}: guest did not negotiate {what}: {bits}", g.name);
        }
        assert_eq!(has_bit(&bits, F_EVENT_IDX), event_idx, "{}: EVENT_IDX in {bits}", g.name);
        assert_eq!(has_bit(&bits, F_RING_PACKED), p.packed, "{}: RING_PACKED in {bits}", g.name);
        // The driver sleeps between interrupts: rx works only if podwire's call
        // eventfd fired.
        let irq_line = out.lines().find(|l| l.contains("PODWIRE: interrupts")).unwrap_or("");
        let input: u64 = field(irq_line, "input").and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(input > 0, "{}: no rx interrupts ({irq_line:?})", g.name);
        println!("{}: {}", g.name, irq_line.trim());
    }
}
