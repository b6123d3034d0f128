//! The files ADD writes for the pod: `configData-<cid12>-<ifname>.json` in Intel's
//! app-netutil format, and the Network Plumbing WG device-info file; plus the
//! atomic write and forgiving remove every file operation here uses.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde_json::{json, Value};

use crate::config::NetConf;
use crate::error::{CniError, CniResult};

/// Where Multus looks for device-info files written by CNI plugins when it does
/// not name one in `runtimeConfig.CNIDeviceInfoFile`.
pub const DEVINFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/cni";

/// Writes `body` to `path` through a temporary file and a rename, so a reader
/// never sees half a file; creates the parent directory.
pub fn write_atomic(path: &Path, body: &[u8], mode: u32) -> CniResult<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)
        .map_err(|e| CniError::io(format!("creating {}", dir.display()), &e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(body)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CniError::io(format!("writing {}", path.display()), &e)
    })
}

/// Removes a file; fine when it is already gone.
pub fn remove_file(path: &Path) -> CniResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io(format!("removing {}", path.display()), &e)),
    }
}

/// Removes a directory if it is empty; fine when it is gone or not empty.
pub fn remove_dir_if_empty(path: &Path) {
    let _ = std::fs::remove_dir(path);
}

/// The configData object (Intel's `ConfigurationData`): what the DPDK app in the
/// pod reads through app-netutil. `config` is the container side with its defaults
/// filled in (iftype, netType, the inverse vhost mode, the socket file name);
/// `ipResult` is the IPAM result in the 0.4.0 shape every app-netutil parses.
pub fn config_data(
    conf: &NetConf,
    container_id: &str,
    ifname: &str,
    socket_file: &str,
    ip_result: &Value,
) -> Value {
    let c = &conf.container_raw;
    let mut vhost = json!({"mode": conf.container_mode.as_str(), "socketfile": socket_file});
    if let Some(g) = c.vhost.as_ref().and_then(|v| v.group.clone()) {
        vhost["group"] = Value::String(g);
    }
    let mut config = json!({
        "engine": c.engine.clone().unwrap_or_else(|| "podwire".into()),
        "iftype": "vhostuser",
        "netType": c.net_type.clone().unwrap_or_else(|| "interface".into()),
        "vhost": vhost,
    });
    if let Some(b) = &c.bridge {
        let mut bridge = json!({});
        if let Some(n) = &b.bridge_name {
            bridge["bridgeName"] = Value::String(n.clone());
        }
        if let Some(v) = b.vlan_id {
            bridge["vlanId"] = Value::from(v);
        }
        config["bridge"] = bridge;
    }
    json!({
        "containerId": container_id,
        "ifName": ifname,
        "name": conf.name,
        "config": config,
        "ipResult": ip_result,
    })
}

/// The device-info object (Network Plumbing WG device-info spec 1.1.0) for a
/// vhost-user socket: `mode` is the mode the pod's side must use.
pub fn device_info(pod_mode: &str, socket: &Path) -> Value {
    json!({
        "type": "vhost-user",
        "version": "1.1.0",
        "vhost-user": {"mode": pod_mode, "path": socket.display().to_string()},
    })
}

/// The device-info file's path: the one Multus named, else
/// `<DEVINFO_DIR>/<network>-<container id>-<ifname>-device-info.json`.
pub fn device_info_path(conf: &NetConf, container_id: &str, ifname: &str) -> std::path::PathBuf {
    conf.device_info_file.clone().unwrap_or_else(|| {
        Path::new(DEVINFO_DIR)
            .join(format!("{}-{container_id}-{ifname}-device-info.json", conf.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_remove() {
        let d = std::env::temp_dir().join(format!("podwire-cni-files-{}", std::process::id()));
        let p = d.join("sub/x.json");
        write_atomic(&p, b"{}", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        remove_file(&p).unwrap();
        remove_file(&p).unwrap();
        remove_dir_if_empty(&d.join("sub"));
        assert!(!d.join("sub").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn config_data_has_the_app_netutil_fields() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"net-a","type":"podwire",
                "host":{"engine":"podwire","netType":"bridge","vhost":{"mode":"server"}},
                "container":{"engine":"podwire","iftype":"vhostuser","netType":"interface"}}"#,
        )
        .unwrap();
        let v = config_data(
            &conf,
            "0123456789abcdef",
            "net1",
            "0123456789ab-net1",
            &json!({"ips": []}),
        );
        assert_eq!(v["containerId"], "0123456789abcdef");
        assert_eq!(v["ifName"], "net1");
        assert_eq!(v["name"], "net-a");
        assert_eq!(v["config"]["vhost"]["mode"], "client");
        assert_eq!(v["config"]["vhost"]["socketfile"], "0123456789ab-net1");
        assert_eq!(v["config"]["iftype"], "vhostuser");
        assert_eq!(v["config"]["netType"], "interface");
        assert!(v["ipResult"]["ips"].is_array());
        let d = device_info("client", Path::new("/x/y"));
        assert_eq!(d["type"], "vhost-user");
        assert_eq!(d["vhost-user"]["path"], "/x/y");
        assert_eq!(
            device_info_path(&conf, "cid", "net1"),
            Path::new("/var/run/k8s.cni.cncf.io/devinfo/cni/net-a-cid-net1-device-info.json")
        );
    }
}
