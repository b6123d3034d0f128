//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`, validated per command as the spec requires (error 4).

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::{CniError, CniResult, INVALID_ENV};

/// The six CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Verify an attachment is as ADD left it.
    Check,
    /// Is the plugin ready for ADDs?
    Status,
    /// Remove attachments not in the valid list.
    Gc,
    /// Which spec versions the plugin speaks.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The spelling in `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (ADD, CHECK; optional for DEL).
    pub netns: String,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: where delegated plugins (IPAM) are looked up.
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads the process environment.
    pub fn from_process() -> CniResult<CniEnv> {
        let vars: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::from_vars(&vars)
    }

    /// Validates the variables in `vars`.
    pub fn from_vars(vars: &HashMap<String, String>) -> CniResult<CniEnv> {
        let get = |k: &str| vars.get(k).map(String::as_str).unwrap_or("");
        let cmd = get("CNI_COMMAND");
        let command = Command::parse(cmd).ok_or_else(|| {
            let why = if cmd.is_empty() {
                "is not set".to_string()
            } else {
                format!("{cmd:?} is unknown")
            };
            CniError::new(
                INVALID_ENV,
                format!("CNI_COMMAND {why}; use ADD, DEL, CHECK, STATUS, GC or VERSION"),
            )
        })?;
        let attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut env = CniEnv {
            command,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            args: Vec::new(),
            path: Vec::new(),
        };
        if command == Command::Version {
            return Ok(env);
        }
        if attachment {
            env.container_id = get("CNI_CONTAINERID").to_string();
            check_container_id(&env.container_id)?;
            env.ifname = get("CNI_IFNAME").to_string();
            check_ifname(&env.ifname)?;
            env.netns = get("CNI_NETNS").to_string();
            if command != Command::Del && env.netns.is_empty() {
                return Err(env_err(
                    "CNI_NETNS is not set (the container's network namespace path)",
                ));
            }
        }
        env.args = parse_args(get("CNI_ARGS"))?;
        let path = get("CNI_PATH");
        if path.is_empty() {
            return Err(env_err("CNI_PATH is not set (where the IPAM plugin is looked up)"));
        }
        env.path = path.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        Ok(env)
    }

    /// The value of `key` in `CNI_ARGS` (e.g. `K8S_POD_NAME`).
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The first 12 characters of the container ID (Intel's naming unit).
    pub fn cid12(&self) -> &str {
        cid12(&self.container_id)
    }
}

/// The first 12 characters of `container_id` (all of it when shorter).
pub fn cid12(container_id: &str) -> &str {
    // The ID was checked to be ASCII, so byte 12 is a character boundary.
    container_id.get(..12).unwrap_or(container_id)
}

fn env_err(msg: impl Into<String>) -> CniError {
    CniError::new(INVALID_ENV, msg)
}

/// The spec: non-empty, alphanumerics plus `_`, `.`, `-`, starting alphanumeric.
pub fn check_container_id(id: &str) -> CniResult<()> {
    if id.is_empty() {
        return Err(env_err("CNI_CONTAINERID is not set"));
    }
    let first_ok = id.as_bytes()[0].is_ascii_alphanumeric();
    if !first_ok || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return Err(env_err(format!(
            "CNI_CONTAINERID {id:?} is invalid: letters, digits, '_', '.', '-' only, starting with a letter or digit"
        )));
    }
    if id.len() > 256 {
        return Err(env_err("CNI_CONTAINERID is longer than 256 characters"));
    }
    Ok(())
}

/// The spec's interface name rules: 1-15 bytes, not `.`/`..`, no `/`, `:` or
/// whitespace. podwire also keeps it to the characters its port names allow.
pub fn check_ifname(name: &str) -> CniResult<()> {
    if name.is_empty() {
        return Err(env_err("CNI_IFNAME is not set"));
    }
    if name.len() > 15 {
        return Err(env_err(format!("CNI_IFNAME {name:?} is longer than 15 bytes")));
    }
    if name == "." || name == ".." {
        return Err(env_err(format!("CNI_IFNAME {name:?} is not a valid interface name")));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return Err(env_err(format!(
            "CNI_IFNAME {name:?} is invalid: letters, digits, '_', '.', '-' only"
        )));
    }
    Ok(())
}

/// `K=V;K2=V2` into pairs; an entry without `=` is error 4.
pub fn parse_args(s: &str) -> CniResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| env_err(format!("CNI_ARGS entry {part:?} is not KEY=VALUE")))?;
        if k.is_empty() {
            return Err(env_err(format!("CNI_ARGS entry {part:?} has an empty key")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "0123456789abcdef"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"),
            ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin"),
        ]
    }

    #[test]
    fn full_add_environment() {
        let e = CniEnv::from_vars(&vars(&add_env())).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.cid12(), "0123456789ab");
        assert_eq!(e.arg("K8S_POD_NAME"), Some("p"));
        assert_eq!(e.path, vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]);
    }

    #[test]
    fn each_missing_or_bad_variable_is_error_4() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("CNI_COMMAND", None, "CNI_COMMAND"),
            ("CNI_COMMAND", Some("MOVE"), "MOVE"),
            ("CNI_CONTAINERID", None, "CNI_CONTAINERID"),
            ("CNI_CONTAINERID", Some("-bad"), "CNI_CONTAINERID"),
            ("CNI_CONTAINERID", Some("a/b"), "CNI_CONTAINERID"),
            ("CNI_NETNS", None, "CNI_NETNS"),
            ("CNI_IFNAME", None, "CNI_IFNAME"),
            ("CNI_IFNAME", Some("averyveryverylongname"), "15"),
            ("CNI_IFNAME", Some(".."), "CNI_IFNAME"),
            ("CNI_IFNAME", Some("a b"), "CNI_IFNAME"),
            ("CNI_IFNAME", Some("a:b"), "CNI_IFNAME"),
            ("CNI_ARGS", Some("novalue"), "CNI_ARGS"),
            ("CNI_PATH", None, "CNI_PATH"),
        ];
        for (key, value, needle) in cases {
            let mut v: Vec<(&str, &str)> =
                add_env().into_iter().filter(|(k, _)| k != key).collect();
            if let Some(value) = value {
                v.push((key, value));
            }
            let e = CniEnv::from_vars(&vars(&v)).unwrap_err();
            assert_eq!(e.code, 4, "{key}={value:?}: {e}");
            assert!(e.msg.contains(needle), "{key}: {}", e.msg);
        }
    }

    #[test]
    fn del_needs_no_netns_and_version_needs_nothing() {
        let mut v: Vec<_> = add_env().into_iter().filter(|(k, _)| *k != "CNI_NETNS").collect();
        v[0] = ("CNI_COMMAND", "DEL");
        CniEnv::from_vars(&vars(&v)).unwrap();
        CniEnv::from_vars(&vars(&[("CNI_COMMAND", "VERSION")])).unwrap();
        let gc = CniEnv::from_vars(&vars(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")])).unwrap();
        assert_eq!(gc.command, Command::Gc);
        assert_eq!(CniEnv::from_vars(&vars(&[("CNI_COMMAND", "STATUS")])).unwrap_err().code, 4);
    }

    #[test]
    fn short_container_ids_are_their_own_cid12() {
        assert_eq!(cid12("abc"), "abc");
        assert_eq!(cid12("0123456789abcdef"), "0123456789ab");
    }
}
