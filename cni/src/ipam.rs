//! IPAM delegation as the spec describes it: the plugin named by `ipam.type` is
//! looked up in `CNI_PATH`, run with the same environment and the complete network
//! configuration on stdin, and its result or error taken over. The `cniVersion`
//! passed down is the newest the delegate speaks that is not newer than the
//! config's (Debian's host-local 1.1.1 stops at 1.0.0).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::{CniEnv, Command};
use crate::error::{CniError, CniResult, DECODE_FAILURE, INCOMPATIBLE_VERSION, IO_FAILURE};
use crate::version;

/// One address from IPAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR address.
    pub address: String,
    /// Gateway, when the IPAM plugin gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// What IPAM returned, in a version-neutral form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamResult {
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes (`{dst, gw}` objects), passed through.
    #[serde(default)]
    pub routes: Vec<Value>,
    /// DNS (`{nameservers, domain, search, options}`), passed through.
    #[serde(default)]
    pub dns: Value,
}

impl IpamResult {
    /// Reads an IPAM plugin's result of any version from 0.3.0 on.
    pub fn from_json(v: &Value) -> CniResult<IpamResult> {
        let bad = |why: &str| CniError::new(DECODE_FAILURE, format!("IPAM result: {why}"));
        let mut out = IpamResult::default();
        if let Some(ips) = v.get("ips") {
            for ip in ips.as_array().ok_or_else(|| bad("\"ips\" is not a list"))? {
                let address = ip
                    .get("address")
                    .and_then(Value::as_str)
                    .filter(|a| a.contains('/'))
                    .ok_or_else(|| bad("an address is missing or not in CIDR form"))?;
                out.ips.push(IpConfig {
                    address: address.to_string(),
                    gateway: ip.get("gateway").and_then(Value::as_str).map(str::to_string),
                });
            }
        }
        if let Some(r) = v.get("routes") {
            out.routes = r.as_array().ok_or_else(|| bad("\"routes\" is not a list"))?.clone();
        }
        if let Some(d) = v.get("dns") {
            if !d.is_object() {
                return Err(bad("\"dns\" is not an object"));
            }
            out.dns = d.clone();
        }
        Ok(out)
    }
}

/// Finds plugin `name` in the `CNI_PATH` directories.
pub fn find_plugin(name: &str, path: &[PathBuf]) -> CniResult<PathBuf> {
    for dir in path {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    Err(CniError::new(
        IO_FAILURE,
        format!(
            "IPAM plugin {name:?} not found in CNI_PATH ({}); on Debian: apt-get install containernetworking-plugins",
            dirs.join(":")
        ),
    ))
}

/// Runs `plugin` with `command` and the given container, interface and stdin;
/// returns its stdout, or its error (the delegate's own code and message).
fn exec(
    plugin: &Path,
    command: Command,
    env: &CniEnv,
    container_id: &str,
    ifname: &str,
    stdin: &[u8],
) -> CniResult<Vec<u8>> {
    let path: Vec<String> = env.path.iter().map(|p| p.display().to_string()).collect();
    let args: Vec<String> = env.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // The delegate inherits this process's environment (as the spec asks), with
    // the CNI variables of this call (GC passes each stale attachment's own).
    let mut child = Process::new(plugin)
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", path.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(format!("running IPAM plugin {}", plugin.display()), &e))?;
    if let Some(mut i) = child.stdin.take() {
        // A delegate that exits without reading stdin closes the pipe; its exit
        // status then says what went wrong.
        let _ = i.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("waiting for IPAM plugin {}", plugin.display()), &e))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let name = plugin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(v) if v.get("code").and_then(Value::as_u64).is_some() => {
            let code = v["code"].as_u64().unwrap_or(0) as u32;
            let msg = v.get("msg").and_then(Value::as_str).unwrap_or("");
            let details = v.get("details").and_then(Value::as_str).unwrap_or("");
            Err(CniError::new(code, format!("IPAM {name} {}: {msg}", command.as_str()))
                .with_details(details))
        }
        _ => Err(CniError::new(
            IO_FAILURE,
            format!(
                "IPAM {name} {} failed ({}): {}{}",
                command.as_str(),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )),
    }
}

/// The delegate for one network configuration.
pub struct Ipam<'a> {
    plugin: PathBuf,
    env: &'a CniEnv,
    /// The configuration as passed down (cniVersion adjusted).
    config: Vec<u8>,
}

impl<'a> Ipam<'a> {
    /// Finds the plugin `raw.ipam.type` and settles the version to talk with it.
    pub fn new(raw: &Value, env: &'a CniEnv) -> CniResult<Ipam<'a>> {
        let name =
            raw.get("ipam").and_then(|i| i.get("type")).and_then(Value::as_str).unwrap_or("");
        let plugin = find_plugin(name, &env.path)?;
        let want = raw.get("cniVersion").and_then(Value::as_str).unwrap_or(version::CURRENT);
        let answer = exec(&plugin, Command::Version, env, "", "", br#"{"cniVersion":"0.4.0"}"#)?;
        let theirs: Vec<String> = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v.get("supportedVersions").cloned())
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                CniError::new(DECODE_FAILURE, format!("IPAM {name} VERSION answer is not JSON"))
            })?;
        let common = version::best_common(want, &theirs).ok_or_else(|| {
            CniError::new(
                INCOMPATIBLE_VERSION,
                format!("IPAM {name} speaks {} but not {want} or older", theirs.join(", ")),
            )
        })?;
        let mut conf = raw.clone();
        conf["cniVersion"] = Value::String(common);
        Ok(Ipam { plugin, env, config: conf.to_string().into_bytes() })
    }

    /// IPAM ADD for this container and interface.
    pub fn add(&self, container_id: &str, ifname: &str) -> CniResult<IpamResult> {
        let out = exec(&self.plugin, Command::Add, self.env, container_id, ifname, &self.config)?;
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| CniError::new(DECODE_FAILURE, format!("IPAM result is not JSON: {e}")))?;
        IpamResult::from_json(&v)
    }

    /// IPAM DEL (releases the lease; succeeds when there is none).
    pub fn del(&self, container_id: &str, ifname: &str) -> CniResult<()> {
        exec(&self.plugin, Command::Del, self.env, container_id, ifname, &self.config).map(drop)
    }

    /// IPAM CHECK.
    pub fn check(&self, container_id: &str, ifname: &str) -> CniResult<()> {
        exec(&self.plugin, Command::Check, self.env, container_id, ifname, &self.config).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_results_of_each_version() {
        let v04: Value = serde_json::from_str(
            r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.2/24","gateway":"10.1.0.1"}],
                "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#,
        )
        .unwrap();
        let r = IpamResult::from_json(&v04).unwrap();
        assert_eq!(
            r.ips,
            vec![IpConfig { address: "10.1.0.2/24".into(), gateway: Some("10.1.0.1".into()) }]
        );
        assert_eq!(r.routes.len(), 1);
        let v1: Value =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","ips":[{"address":"fd00::2/64"}]}"#)
                .unwrap();
        assert_eq!(IpamResult::from_json(&v1).unwrap().ips[0].gateway, None);
        for bad in [
            r#"{"ips":{}}"#,
            r#"{"ips":[{"address":"10.0.0.1"}]}"#,
            r#"{"routes":1}"#,
            r#"{"dns":[]}"#,
        ] {
            let v: Value = serde_json::from_str(bad).unwrap();
            assert_eq!(IpamResult::from_json(&v).unwrap_err().code, 6, "{bad}");
        }
    }

    #[test]
    fn missing_plugin_says_how_to_install() {
        let e = find_plugin("host-local", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("containernetworking-plugins"), "{}", e.msg);
    }
}
