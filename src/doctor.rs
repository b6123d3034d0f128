//! `podwire doctor`: checks what a VFIO or hugepage setup needs and says, in plain
//! words, what is missing and the command that fixes it.

use std::fs;
use std::path::{Path, PathBuf};

use podwire_driver::pci::Sysfs;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but not as well as it could.
    Warn,
    /// Missing: VFIO ports will not work until it is fixed.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Outcome.
    pub status: Status,
    /// What was checked, in a few words.
    pub topic: &'static str,
    /// What was found, in plain words.
    pub detail: String,
    /// The command (or edit) that fixes it, when not ok.
    pub fix: Option<String>,
}

/// Where the checks look (the real system, or a fake tree in tests).
#[derive(Debug, Clone)]
pub struct Doctor {
    /// sysfs root (`/sys`).
    pub sys: PathBuf,
    /// procfs root (`/proc`).
    pub proc: PathBuf,
    /// devfs root (`/dev`).
    pub dev: PathBuf,
}

impl Default for Doctor {
    fn default() -> Self {
        Self { sys: "/sys".into(), proc: "/proc".into(), dev: "/dev".into() }
    }
}

fn read(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok()
}

fn meminfo_value(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

impl Doctor {
    /// Runs every check.
    pub fn run(&self) -> Vec<Finding> {
        vec![
            self.hugepages(),
            self.iommu(),
            self.iommu_mode(),
            self.vfio_modules(),
            self.cpu_isolation(),
            self.nics(),
        ]
    }

    fn hugepages(&self) -> Finding {
        let topic = "hugepages";
        let Some(mi) = read(&self.proc.join("meminfo")) else {
            return Finding {
                status: Status::Fail,
                topic,
                detail: "cannot read /proc/meminfo".into(),
                fix: Some("mount procfs: `mount -t proc proc /proc`".into()),
            };
        };
        let total = meminfo_value(&mi, "HugePages_Total").unwrap_or(0);
        let free = meminfo_value(&mi, "HugePages_Free").unwrap_or(0);
        let size_kb = meminfo_value(&mi, "Hugepagesize").unwrap_or(0);
        let fix = Some(
            "reserve 2 MiB hugepages: `echo 1024 > /proc/sys/vm/nr_hugepages` (to keep them \
             across reboots: `vm.nr_hugepages = 1024` in /etc/sysctl.d/podwire.conf)"
                .to_string(),
        );
        if total == 0 {
            Finding {
                status: Status::Fail,
                topic,
                detail: "no hugepages are reserved: packet memory cannot be allocated (unless \
                         the config says `hugepages = false`)"
                    .into(),
                fix,
            }
        } else if free < 64 {
            Finding {
                status: Status::Warn,
                topic,
                detail: format!(
                    "only {free} of {total} hugepages ({size_kb} kB each) are free: a 16384-buffer \
                     pool needs about 20"
                ),
                fix,
            }
        } else {
            Finding {
                status: Status::Ok,
                topic,
                detail: format!("{free} of {total} hugepages ({size_kb} kB each) free"),
                fix: None,
            }
        }
    }

    fn iommu(&self) -> Finding {
        let topic = "IOMMU";
        let units = fs::read_dir(self.sys.join("class/iommu")).map(|d| d.count()).unwrap_or(0);
        let groups =
            fs::read_dir(self.sys.join("kernel/iommu_groups")).map(|d| d.count()).unwrap_or(0);
        if units == 0 && groups == 0 {
            let cmdline = read(&self.proc.join("cmdline")).unwrap_or_default();
            let detail = if cmdline.contains("intel_iommu=on") || cmdline.contains("amd_iommu=on") {
                "the kernel command line asks for an IOMMU but none is active: enable VT-d / \
                 AMD-Vi in the firmware (BIOS) settings"
                    .to_string()
            } else {
                "no IOMMU is active: devices have no IOMMU groups, so VFIO cannot own them".into()
            };
            return Finding {
                status: Status::Fail,
                topic,
                detail,
                fix: Some(
                    "add `intel_iommu=on iommu=pt` (Intel) or `amd_iommu=on iommu=pt` (AMD) to \
                     GRUB_CMDLINE_LINUX in /etc/default/grub, run `update-grub`, and reboot"
                        .into(),
                ),
            };
        }
        Finding {
            status: Status::Ok,
            topic,
            detail: format!("{units} IOMMU unit(s), {groups} IOMMU group(s)"),
            fix: None,
        }
    }

    fn iommu_mode(&self) -> Finding {
        let topic = "IOMMU mode";
        let mut types = std::collections::BTreeMap::<String, usize>::new();
        if let Ok(rd) = fs::read_dir(self.sys.join("kernel/iommu_groups")) {
            for e in rd.flatten() {
                if let Some(t) = read(&e.path().join("type")) {
                    *types.entry(t.trim().to_string()).or_default() += 1;
                }
            }
        }
        if types.is_empty() {
            return Finding {
                status: Status::Warn,
                topic,
                detail: "unknown (no IOMMU groups)".into(),
                fix: None,
            };
        }
        let summary: Vec<String> = types.iter().map(|(t, n)| format!("{n} {t}")).collect();
        let translated = types.keys().any(|t| t.starts_with("DMA"));
        let pt = types.contains_key("identity");
        if translated && !pt {
            Finding {
                status: Status::Warn,
                topic,
                detail: format!(
                    "groups: {}; kernel drivers translate every DMA (slower for them, fine for \
                     VFIO)",
                    summary.join(", ")
                ),
                fix: Some("add `iommu=pt` to the kernel command line".into()),
            }
        } else {
            Finding {
                status: Status::Ok,
                topic,
                detail: format!("groups: {}", summary.join(", ")),
                fix: None,
            }
        }
    }

    fn vfio_modules(&self) -> Finding {
        let topic = "VFIO";
        let missing: Vec<&str> = ["vfio", "vfio_iommu_type1", "vfio_pci"]
            .into_iter()
            .filter(|m| !self.sys.join("module").join(m).exists())
            .collect();
        let node = self.dev.join("vfio/vfio").exists();
        if missing.is_empty() && node {
            return Finding {
                status: Status::Ok,
                topic,
                detail: "vfio, vfio_iommu_type1 and vfio_pci are loaded; /dev/vfio/vfio exists"
                    .into(),
                fix: None,
            };
        }
        let detail = if missing.is_empty() {
            "the modules are loaded but /dev/vfio/vfio is missing".to_string()
        } else {
            format!("module(s) not loaded: {}", missing.join(", "))
        };
        Finding {
            status: Status::Fail,
            topic,
            detail,
            fix: Some(
                "`modprobe vfio-pci` (to load it at boot: `echo vfio-pci > \
                 /etc/modules-load.d/vfio.conf`)"
                    .into(),
            ),
        }
    }

    fn cpu_isolation(&self) -> Finding {
        let topic = "CPU isolation";
        let isolated = read(&self.sys.join("devices/system/cpu/isolated")).unwrap_or_default();
        let isolated = isolated.trim();
        let cmdline = read(&self.proc.join("cmdline")).unwrap_or_default();
        if isolated.is_empty() {
            return Finding {
                status: Status::Warn,
                topic,
                detail: "no CPU is isolated: poll-mode workers share their cores with other \
                         tasks and will see latency spikes"
                    .into(),
                fix: Some(
                    "reserve the worker cores (here 2-3) with `isolcpus=2-3 nohz_full=2-3 \
                     rcu_nocbs=2-3` on the kernel command line, then `cores = [2, 3]` in the \
                     config"
                        .into(),
                ),
            };
        }
        let nohz = cmdline.split_whitespace().any(|w| w.starts_with("nohz_full="));
        Finding {
            status: if nohz { Status::Ok } else { Status::Warn },
            topic,
            detail: format!(
                "isolated CPUs: {isolated}{}",
                if nohz {
                    ""
                } else {
                    " (without nohz_full: the timer tick still interrupts them)"
                }
            ),
            fix: (!nohz).then(|| format!("add `nohz_full={isolated}` to the kernel command line")),
        }
    }

    fn nics(&self) -> Finding {
        let topic = "NICs";
        let nics = match Sysfs::at(&self.sys).list_nics() {
            Ok(n) => n,
            Err(e) => {
                return Finding {
                    status: Status::Warn,
                    topic,
                    detail: format!("cannot list PCI devices: {e}"),
                    fix: None,
                }
            }
        };
        let usable: Vec<_> = nics.iter().filter(|d| d.podwire_driver().is_some()).collect();
        if usable.is_empty() {
            return Finding {
                status: Status::Warn,
                topic,
                detail: format!(
                    "{} Ethernet function(s), none that podwire drives (82576/I350 VFs); \
                     create VFs on an igb PF",
                    nics.len()
                ),
                fix: Some("`echo 2 > /sys/bus/pci/devices/PF_ADDR/sriov_numvfs`".into()),
            };
        }
        let bound = usable.iter().filter(|d| d.driver.as_deref() == Some("vfio-pci")).count();
        let first_unbound = usable.iter().find(|d| d.driver.as_deref() != Some("vfio-pci"));
        Finding {
            status: Status::Ok,
            topic,
            detail: format!(
                "{} function(s) podwire can drive, {bound} bound to vfio-pci",
                usable.len()
            ),
            fix: first_unbound.map(|d| format!("`podwire pci bind {}`", d.addr)),
        }
    }
}

/// Formats findings for a terminal, one block each.
pub fn report(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let tag = match f.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        s.push_str(&format!("{tag} {}: {}\n", f.topic, f.detail));
        if let Some(fix) = &f.fix {
            s.push_str(&format!("     fix: {fix}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tree(tag: &str) -> (Tree, Doctor) {
        let root =
            std::env::temp_dir().join(format!("podwire-doctor-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in ["sys/bus/pci/devices", "sys/module", "proc", "dev"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let d = Doctor { sys: root.join("sys"), proc: root.join("proc"), dev: root.join("dev") };
        (Tree(root), d)
    }

    #[test]
    fn a_bare_machine_fails_with_fixes() {
        let (_t, d) = tree("bare");
        fs::write(d.proc.join("meminfo"), "HugePages_Total:       0\nHugePages_Free:        0\n")
            .unwrap();
        fs::write(d.proc.join("cmdline"), "root=/dev/sda1 quiet\n").unwrap();
        let f = d.run();
        let by = |t: &str| f.iter().find(|x| x.topic == t).unwrap().clone();
        assert_eq!(by("hugepages").status, Status::Fail);
        assert!(by("hugepages").fix.unwrap().contains("nr_hugepages"));
        assert_eq!(by("IOMMU").status, Status::Fail);
        assert!(by("IOMMU").fix.unwrap().contains("intel_iommu=on iommu=pt"));
        assert_eq!(by("VFIO").status, Status::Fail);
        assert!(by("VFIO").fix.unwrap().contains("modprobe vfio-pci"));
        assert_eq!(by("CPU isolation").status, Status::Warn);
        let text = report(&f);
        assert!(text.contains("FAIL hugepages"), "{text}");
    }

    #[test]
    fn a_ready_machine_passes() {
        let (_t, d) = tree("ready");
        fs::write(
            d.proc.join("meminfo"),
            "HugePages_Total:    1024\nHugePages_Free:     1000\nHugepagesize:       2048 kB\n",
        )
        .unwrap();
        fs::write(d.proc.join("cmdline"), "intel_iommu=on iommu=pt isolcpus=1 nohz_full=1\n")
            .unwrap();
        fs::create_dir_all(d.sys.join("class/iommu/dmar0")).unwrap();
        fs::create_dir_all(d.sys.join("kernel/iommu_groups/0")).unwrap();
        fs::write(d.sys.join("kernel/iommu_groups/0/type"), "identity\n").unwrap();
        for m in ["vfio", "vfio_iommu_type1", "vfio_pci"] {
            fs::create_dir_all(d.sys.join("module").join(m)).unwrap();
        }
        fs::create_dir_all(d.dev.join("vfio")).unwrap();
        fs::write(d.dev.join("vfio/vfio"), "").unwrap();
        fs::create_dir_all(d.sys.join("devices/system/cpu")).unwrap();
        fs::write(d.sys.join("devices/system/cpu/isolated"), "1\n").unwrap();
        let f = d.run();
        for x in &f {
            if x.topic != "NICs" {
                assert_eq!(x.status, Status::Ok, "{x:?}");
            }
        }
    }
}
