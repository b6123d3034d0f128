//! `podwire pci`, `podwire doctor` and `vfio` ports on the host itself: the error
//! paths an operator meets before any device is usable. Each expectation follows
//! what this host's sysfs says (an IOMMU or not, vfio loaded or not), so the test
//! holds on any machine; the device side is tests/vfio_qemu.rs.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_podwire");

fn podwire(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run podwire");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn iommu_on() -> bool {
    std::fs::read_dir("/sys/kernel/iommu_groups").map(|d| d.count() > 0).unwrap_or(false)
}

fn vfio_loaded() -> bool {
    Path::new("/sys/module/vfio_pci").exists() && Path::new("/dev/vfio/vfio").exists()
}

#[test]
fn bad_addresses_are_refused_with_the_expected_form() {
    for (args, want) in [
        (&["pci", "bind", "0000:00:99.0"][..], "is not a PCI address (want DDDD:BB:DD.F"),
        (&["pci", "unbind", "nonsense"][..], "is not a PCI address"),
        (&["pci", "bind", "0000:7f:1f.7"][..], "no PCI device 0000:7f:1f.7"),
        (&["pci", "echo", "0000:7f:1f.7", "--ip", "10.0.0.1"][..], "no PCI device 0000:7f:1f.7"),
    ] {
        let (ok, _, err) = podwire(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.starts_with("podwire: error: ") && err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn pci_list_shows_every_ethernet_function() {
    let (ok, out, err) = podwire(&["pci", "list"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ADDRESS"), "{out}");
    let mut nics = 0;
    for e in std::fs::read_dir("/sys/bus/pci/devices").unwrap().flatten() {
        let class = std::fs::read_to_string(e.path().join("class")).unwrap_or_default();
        if class.trim().starts_with("0x0200") {
            nics += 1;
            let addr = e.file_name().to_string_lossy().into_owned();
            let line = out.lines().find(|l| l.starts_with(&addr)).unwrap_or_else(|| {
                panic!("{addr} missing from:\n{out}");
            });
            if !iommu_on() {
                assert!(line.contains(" -  ") || line.contains("no ("), "{line}");
            }
        }
    }
    assert_eq!(out.lines().count(), nics + 1, "{out}");
}

#[test]
fn doctor_matches_the_host() {
    let (ok, out, _) = podwire(&["doctor"]);
    let iommu = if iommu_on() { "ok   IOMMU:" } else { "FAIL IOMMU: no IOMMU is active" };
    assert!(out.contains(iommu), "{out}");
    let vfio = if vfio_loaded() { "ok   VFIO:" } else { "FAIL VFIO: module(s) not loaded" };
    assert!(out.contains(vfio), "{out}");
    if !vfio_loaded() {
        assert!(out.contains("fix: `modprobe vfio-pci`"), "{out}");
    }
    assert_eq!(ok, iommu_on() && vfio_loaded() && !out.contains("FAIL"), "exit status:\n{out}");
}

#[test]
fn a_vfio_port_on_a_device_without_vfio_fails_in_one_line() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pci-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("vfio.toml");
    // The first Ethernet function here (if any), else an address with no device.
    let addr = std::fs::read_dir("/sys/bus/pci/devices")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("class"))
                .is_ok_and(|c| c.trim().starts_with("0x0200"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "0000:7f:1f.7".into());
    std::fs::write(
        &cfg,
        format!(
            "control_socket = \"{d}/ctl.sock\"\n[memory]\nbuffers = 1024\nhugepages = false\n\
             [workers]\ncores = [0]\n[[ports]]\nname = \"vf\"\ntype = \"vfio\"\npci = \"{addr}\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let (ok, out, err) = podwire(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(ok, "a vfio port validates without touching the device: {err}");
    assert!(out.contains("ok (ports: 1"), "{out}");
    let (ok, _, err) = podwire(&["run", "-c", cfg.to_str().unwrap()]);
    assert!(!ok, "podwire run owned {addr} without VFIO?");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("podwire: error: port \"vf\": "), "{err}");
    if !iommu_on() && addr != "0000:7f:1f.7" {
        assert!(last.contains("has no IOMMU group") && last.contains("intel_iommu=on"), "{last}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
