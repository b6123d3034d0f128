//! The ADD result, written in the version the configuration asked for: 1.1.0 adds
//! `interfaces[].socketPath`; 0.3.x/0.4.0 carry `ips[].version`.

use serde_json::{json, Value};

use crate::ipam::IpamResult;
use crate::version::{Version, V1_0, V1_1};

/// What ADD made, in a version-neutral form.
#[derive(Debug, Clone, PartialEq)]
pub struct AddResult {
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The port's MAC (the guest's address).
    pub mac: String,
    /// `CNI_NETNS`.
    pub sandbox: String,
    /// The vhost-user socket on the host.
    pub socket_path: String,
    /// IPAM's addresses, routes and DNS.
    pub ipam: IpamResult,
}

fn ip_version(address: &str) -> &'static str {
    if address.contains(':') {
        "6"
    } else {
        "4"
    }
}

impl AddResult {
    /// The result JSON for spec version `cni_version` (one of the supported ones).
    pub fn to_json(&self, cni_version: &str) -> Value {
        let v = Version::parse(cni_version).unwrap_or(V1_1);
        let mut iface = json!({"name": self.ifname, "mac": self.mac, "sandbox": self.sandbox});
        if v >= V1_1 {
            iface["socketPath"] = Value::String(self.socket_path.clone());
        }
        let ips: Vec<Value> = self
            .ipam
            .ips
            .iter()
            .map(|ip| {
                let mut o = json!({"address": ip.address, "interface": 0});
                if let Some(gw) = &ip.gateway {
                    o["gateway"] = Value::String(gw.clone());
                }
                if v < V1_0 {
                    o["version"] = Value::String(ip_version(&ip.address).to_string());
                }
                o
            })
            .collect();
        let mut out = json!({"cniVersion": cni_version, "interfaces": [iface], "ips": ips});
        if !self.ipam.routes.is_empty() {
            out["routes"] = Value::Array(self.ipam.routes.clone());
        }
        if self.ipam.dns.as_object().is_some_and(|o| !o.is_empty()) {
            out["dns"] = self.ipam.dns.clone();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::IpConfig;

    fn sample() -> AddResult {
        AddResult {
            ifname: "net1".into(),
            mac: "02:00:00:00:00:01".into(),
            sandbox: "/var/run/netns/p".into(),
            socket_path: "/var/lib/cni/usrspcni/abc/abc-net1".into(),
            ipam: IpamResult {
                ips: vec![
                    IpConfig { address: "10.1.0.2/24".into(), gateway: Some("10.1.0.1".into()) },
                    IpConfig { address: "fd00::2/64".into(), gateway: None },
                ],
                routes: vec![json!({"dst": "0.0.0.0/0"})],
                dns: json!({}),
            },
        }
    }

    #[test]
    fn v1_1_has_socket_path() {
        let r = sample().to_json("1.1.0");
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["interfaces"][0]["socketPath"], "/var/lib/cni/usrspcni/abc/abc-net1");
        assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:00:01");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert!(r.get("dns").is_none());
    }

    #[test]
    fn v1_0_and_v0_4_shapes() {
        let r = sample().to_json("1.0.0");
        assert!(r["interfaces"][0].get("socketPath").is_none());
        let old = sample().to_json("0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert_eq!(old["ips"][0]["gateway"], "10.1.0.1");
        assert!(old["ips"][1].get("gateway").is_none());
    }
}
