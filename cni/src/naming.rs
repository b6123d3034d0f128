//! Where an attachment's socket lives and what it and its port are called:
//! Intel's layout, `<sharedDir>/<cid12>/<cid12>-<ifname>`, and a short alias
//! directory when that path does not fit in `sun_path`.

use std::path::{Path, PathBuf};

use crate::error::{CniError, CniResult};

/// Longest socket path `bind(2)` takes (`sun_path` is 108 bytes with the NUL).
pub const SUN_PATH_MAX: usize = 107;

/// Names and paths of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The daemon's port name: `<cid12>-<ifname>`.
    pub port: String,
    /// The socket's directory as the pod's shared dir: `<sharedDir>/<cid12>`.
    pub dir: PathBuf,
    /// The socket file's real path, `dir/<socket file>`.
    pub socket: PathBuf,
    /// The path the daemon binds or connects to: `socket`, or the same file through
    /// a short alias directory (`short_link`, one per attachment) when `socket` is
    /// too long.
    pub daemon_socket: PathBuf,
    /// The alias (a symlink to `dir`) when one is needed.
    pub short_link: Option<PathBuf>,
    /// `configData-<cid12>-<ifname>.json` in `dir`.
    pub config_data: PathBuf,
}

/// 64-bit FNV-1a: a stable, dependency-free hash for alias names.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Names {
    /// The names for container `cid12`, interface `ifname`, under `shared_dir`;
    /// `socketfile` overrides the socket's file name; aliases go in
    /// `<state_dir>/s/`.
    pub fn new(
        shared_dir: &Path,
        cid12: &str,
        ifname: &str,
        socketfile: Option<&str>,
        state_dir: &Path,
    ) -> CniResult<Names> {
        Self::in_dir(&shared_dir.join(cid12), cid12, ifname, socketfile, state_dir)
    }

    /// The same names with the socket directly in `dir` (the pod's own
    /// `shared-dir` volume, when a kubeconfig is given).
    pub fn in_dir(
        dir: &Path,
        cid12: &str,
        ifname: &str,
        socketfile: Option<&str>,
        state_dir: &Path,
    ) -> CniResult<Names> {
        let port = format!("{cid12}-{ifname}");
        let dir = dir.to_path_buf();
        let file = socketfile.map(str::to_string).unwrap_or_else(|| port.clone());
        let socket = dir.join(&file);
        let config_data = dir.join(format!("configData-{cid12}-{ifname}.json"));
        let (daemon_socket, short_link) = if socket.as_os_str().len() <= SUN_PATH_MAX {
            (socket.clone(), None)
        } else {
            // One alias per attachment (the directory plus the port name), so
            // each teardown removes its own and never one another socket uses.
            let key = format!("{}\0{port}", dir.display());
            let link = state_dir.join("s").join(format!("{:016x}", fnv1a(key.as_bytes())));
            let via = link.join(&file);
            if via.as_os_str().len() > SUN_PATH_MAX {
                return Err(CniError::config(format!(
                    "socket path {} is longer than {SUN_PATH_MAX} bytes and so is its alias {} (shorten stateDir)",
                    socket.display(),
                    via.display()
                )));
            }
            (via, Some(link))
        };
        Ok(Names { port, dir, socket, daemon_socket, short_link, config_data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intel_layout() {
        let n = Names::new(
            Path::new("/var/lib/cni/usrspcni"),
            "0958c8871b32",
            "net1",
            None,
            Path::new("/var/lib/cni/podwire"),
        )
        .unwrap();
        assert_eq!(n.port, "0958c8871b32-net1");
        assert_eq!(n.socket, Path::new("/var/lib/cni/usrspcni/0958c8871b32/0958c8871b32-net1"));
        assert_eq!(n.daemon_socket, n.socket);
        assert_eq!(n.short_link, None);
        assert_eq!(
            n.config_data,
            Path::new("/var/lib/cni/usrspcni/0958c8871b32/configData-0958c8871b32-net1.json")
        );
    }

    #[test]
    fn long_paths_go_through_a_short_alias() {
        let long = format!(
            "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~empty-dir/shared-dir",
            "f".repeat(36)
        );
        let n = Names::new(
            Path::new(&long),
            "0958c8871b32",
            "net1",
            None,
            Path::new("/var/lib/cni/podwire"),
        )
        .unwrap();
        assert!(n.socket.as_os_str().len() > SUN_PATH_MAX);
        let link = n.short_link.clone().unwrap();
        assert!(link.starts_with("/var/lib/cni/podwire/s/"));
        assert_eq!(n.daemon_socket, link.join("0958c8871b32-net1"));
        assert!(n.daemon_socket.as_os_str().len() <= SUN_PATH_MAX);
        // Stable for one attachment, distinct for another interface of the pod.
        let same = Names::new(
            Path::new(&long),
            "0958c8871b32",
            "net1",
            None,
            Path::new("/var/lib/cni/podwire"),
        )
        .unwrap();
        assert_eq!(same.short_link, n.short_link);
        let other = Names::new(
            Path::new(&long),
            "0958c8871b32",
            "net2",
            None,
            Path::new("/var/lib/cni/podwire"),
        )
        .unwrap();
        assert_ne!(other.short_link, n.short_link);
        let e = Names::new(Path::new(&long), "0958c8871b32", "net1", None, Path::new(&long))
            .unwrap_err();
        assert_eq!(e.code, 7);
    }

    #[test]
    fn socketfile_override() {
        let n =
            Names::new(Path::new("/d"), "abc", "net1", Some("vhu.sock"), Path::new("/s")).unwrap();
        assert_eq!(n.socket, Path::new("/d/abc/vhu.sock"));
        assert_eq!(n.port, "abc-net1");
    }
}
