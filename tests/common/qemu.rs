//! What the QEMU-guest tests share: the QEMU 10 check (fail, never skip, with how
//! to install it), the guest image built by scripts/build-guest.sh (cached next to
//! the cargo target dir), and small helpers for reading guest output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub const QEMU: &str = "qemu-system-x86_64";
pub const INSTALL_HINT: &str = "install it with `sudo scripts/install-deps.sh` (QEMU 10: \
     `apt-get install -t bookworm-backports qemu-system-x86`)";

/// A file's bytes as text (empty when unreadable).
pub fn read_lossy(p: &Path) -> String {
    std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The last `n` lines of `s`, for failure messages.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Checks that QEMU 10 or newer is installed; fails (never skips) with how to
/// install it.
pub fn check_qemu() {
    let out = match Command::new(QEMU).arg("--version").output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("`{QEMU} --version` failed ({}): {INSTALL_HINT}", o.status),
        Err(e) => panic!("{QEMU} not found ({e}): {INSTALL_HINT}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "QEMU emulator version 10.0.2 (Debian ...)"
    let major = text
        .split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok());
    match major {
        Some(m) if m >= 10 => {}
        _ => panic!("need QEMU 10 or newer, found {:?}: {INSTALL_HINT}", text.trim()),
    }
}

/// Builds (or finds cached) the guest kernel and the initramfs of `flavour` (`None`:
/// the virtio_net guest, `Some("vfio")`: the VFIO guest); returns (vmlinuz, initrd).
pub fn guest_image(flavour: Option<&str>) -> (PathBuf, PathBuf) {
    let dir = match std::env::var_os("PODWIRE_GUEST_DIR") {
        Some(d) => PathBuf::from(d),
        // CARGO_TARGET_TMPDIR is <target>/tmp: keep the image next to it.
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("guest"),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-guest.sh");
    let start = Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.args(["600", "bash"]).arg(&script).arg(&dir);
    if let Some(f) = flavour {
        cmd.arg(f);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run scripts/build-guest.sh");
    let log =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{} {} {} failed ({}):\n{log}\n(it needs apt-get access to bookworm-backports and \
         busybox-static: `sudo scripts/install-deps.sh`)",
        script.display(),
        dir.display(),
        flavour.unwrap_or(""),
        out.status
    );
    if !log.trim().is_empty() {
        println!("{log}");
    }
    println!("guest image ready in {:.1} s ({})", start.elapsed().as_secs_f64(), dir.display());
    let initrd = match flavour {
        Some(f) => format!("initrd-{f}.img"),
        None => "initrd.img".to_string(),
    };
    (dir.join("vmlinuz"), dir.join(initrd))
}
