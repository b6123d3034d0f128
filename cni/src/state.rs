//! The plugin's own state: one record per attachment, written by ADD and read by
//! DEL, CHECK and GC (`<stateDir>/<network>/<cid12>-<ifname>-<hash>.json`), and the
//! lock that serializes invocations (`<stateDir>/lock`, `flock(2)`), so concurrent
//! ADDs and DELs for different containers never interleave their steps.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CniError, CniResult, DECODE_FAILURE, TRY_AGAIN};
use crate::naming::fnv1a;

/// How long an invocation waits for the lock before answering "try again" (11).
pub const LOCK_PATIENCE: Duration = Duration::from_secs(60);

/// What ADD did for one attachment: everything DEL, CHECK and GC need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Network name.
    pub network: String,
    /// Full container ID.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// The daemon's port name.
    pub port: String,
    /// Socket path on the host.
    pub socket: PathBuf,
    /// The path the daemon uses (maybe through `short_link`).
    pub daemon_socket: PathBuf,
    /// The short alias directory, when one was made.
    pub short_link: Option<PathBuf>,
    /// The pod's socket directory.
    pub dir: PathBuf,
    /// Whether the plugin owns `dir` (`<sharedDir>/<cid12>`, removed when empty)
    /// rather than it being the pod's shared-dir volume.
    #[serde(default = "yes")]
    pub own_dir: bool,
    /// configData file.
    pub config_data: PathBuf,
    /// Device-info file.
    pub device_info: Option<PathBuf>,
    /// Bridge (netType bridge).
    pub bridge: Option<String>,
    /// Access VLAN.
    pub vlan: Option<u16>,
    /// podwire's mode on the socket.
    pub mode: String,
    /// The port's MAC.
    pub mac: String,
    /// Whether IPAM was run (and a lease must be released).
    pub ipam: bool,
    /// The ADD result as returned.
    pub result: Value,
    /// The pod whose annotations ADD wrote (kubeconfig given).
    #[serde(default)]
    pub kube: Option<PodRef>,
}

/// A pod by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

fn yes() -> bool {
    true
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

/// The held lock; released on drop (or when the process exits).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl State {
    /// The state under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock, waiting up to [`LOCK_PATIENCE`].
    pub fn lock(&self) -> CniResult<Lock> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| CniError::io(format!("creating {}", self.dir.display()), &e))?;
        let path = self.dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| CniError::io(format!("opening {}", path.display()), &e))?;
        let start = Instant::now();
        loop {
            // SAFETY: flock on a file descriptor this function owns; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(CniError::io(format!("locking {}", path.display()), &err));
            }
            if start.elapsed() > LOCK_PATIENCE {
                return Err(CniError::new(
                    TRY_AGAIN,
                    format!(
                        "{} is held by another podwire-cni for {LOCK_PATIENCE:?}",
                        path.display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn network_dir(&self, network: &str) -> PathBuf {
        self.dir.join("networks").join(network)
    }

    /// The record file of one attachment.
    pub fn record_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        let h = fnv1a(format!("{container_id}/{ifname}").as_bytes());
        let cid12 = crate::env::cid12(container_id);
        self.network_dir(network).join(format!("{cid12}-{ifname}-{h:016x}.json"))
    }

    /// Reads an attachment's record; `None` when there is none.
    pub fn load(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> CniResult<Option<Record>> {
        let p = self.record_path(network, container_id, ifname);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                CniError::new(
                    DECODE_FAILURE,
                    format!("attachment record {} is damaged: {e}", p.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("reading {}", p.display()), &e)),
        }
    }

    /// Writes an attachment's record.
    pub fn save(&self, r: &Record) -> CniResult<()> {
        let p = self.record_path(&r.network, &r.container_id, &r.ifname);
        let body = serde_json::to_vec_pretty(r).unwrap_or_default();
        crate::files::write_atomic(&p, &body, 0o600)
    }

    /// Removes an attachment's record (fine when there is none).
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> CniResult<()> {
        crate::files::remove_file(&self.record_path(network, container_id, ifname))
    }

    /// Every record of `network`; damaged files are returned as errors by path.
    pub fn list(&self, network: &str) -> CniResult<Vec<Result<Record, PathBuf>>> {
        let dir = self.network_dir(network);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::io(format!("listing {}", dir.display()), &e)),
        };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let p = ent.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok()) {
                Some(r) => out.push(Ok(r)),
                None => out.push(Err(p)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("podwire-cni-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn record(cid: &str) -> Record {
        Record {
            network: "n".into(),
            container_id: cid.into(),
            ifname: "net1".into(),
            netns: "/x".into(),
            port: "p".into(),
            socket: "/s".into(),
            daemon_socket: "/s".into(),
            short_link: None,
            dir: "/d".into(),
            own_dir: true,
            config_data: "/d/c.json".into(),
            device_info: None,
            bridge: Some("br0".into()),
            vlan: None,
            mode: "server".into(),
            mac: "02:00:00:00:00:01".into(),
            ipam: true,
            result: Value::Null,
            kube: None,
        }
    }

    #[test]
    fn records_round_trip_and_list() {
        let d = tmp("rt");
        let s = State::new(&d);
        assert_eq!(s.load("n", "aaa", "net1").unwrap(), None);
        s.save(&record("aaa")).unwrap();
        s.save(&record("bbb")).unwrap();
        assert_eq!(s.load("n", "aaa", "net1").unwrap(), Some(record("aaa")));
        assert_eq!(s.list("n").unwrap().len(), 2);
        std::fs::write(s.record_path("n", "ccc", "net1"), b"{broken").unwrap();
        assert_eq!(s.load("n", "ccc", "net1").unwrap_err().code, 6);
        assert_eq!(s.list("n").unwrap().iter().filter(|r| r.is_err()).count(), 1);
        s.remove("n", "aaa", "net1").unwrap();
        s.remove("n", "aaa", "net1").unwrap();
        assert_eq!(s.list("other").unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn lock_is_exclusive_across_open_files() {
        let d = tmp("lock");
        let s = State::new(&d);
        let held = s.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            let _l = s2.lock().unwrap();
            tx.send(Instant::now()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(100));
        let released = Instant::now();
        drop(held);
        let got = rx.recv().unwrap();
        assert!(got >= released, "second lock taken while the first was held");
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }
}
