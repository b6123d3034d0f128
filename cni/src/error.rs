//! CNI errors: the spec's error codes and the `{cniVersion, code, msg, details}`
//! object a failed command prints on stdout (with a non-zero exit).

use serde::Serialize;

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration (the message names key and value).
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables, like `CNI_COMMAND`, `CNI_CONTAINERID`.
pub const INVALID_ENV: u32 = 4;
/// I/O failure (reading stdin, writing files, running a delegated plugin).
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content (stdin is not JSON, a delegate's answer is not).
pub const DECODE_FAILURE: u32 = 6;
/// Invalid network configuration.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later: a transient condition (the daemon is not reachable yet).
pub const TRY_AGAIN: u32 = 11;
/// STATUS: the plugin is not available (the daemon does not answer).
pub const NOT_AVAILABLE: u32 = 50;
/// STATUS: not available, and existing containers may be damaged.
pub const NOT_AVAILABLE_DAMAGED: u32 = 51;
/// podwire-specific (100+): CHECK found the attachment not as ADD left it.
pub const CHECK_FAILED: u32 = 100;
/// podwire-specific: the daemon refused a request.
pub const DAEMON_REFUSED: u32 = 101;
/// podwire-specific: ADD for an attachment that already exists.
pub const ALREADY_ATTACHED: u32 = 102;

/// A CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// One of the codes above.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Longer detail (may be empty).
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg` and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: String::new() }
    }

    /// The same error with `details`.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Error 7 (invalid network configuration).
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(INVALID_CONFIG, msg)
    }

    /// Error 2 naming the field and the value that is not supported.
    pub fn unsupported(field: &str, value: &str, supported: &str) -> Self {
        Self::new(UNSUPPORTED_FIELD, format!("unsupported {field} {value:?}: {supported}"))
    }

    /// Error 5 with the operation and the OS error.
    pub fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        Self::new(IO_FAILURE, format!("{what}: {e}"))
    }

    /// The JSON object the spec asks for, with `cniVersion` set to `version`.
    pub fn to_json(&self, version: &str) -> String {
        let mut v = serde_json::json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v.to_string()
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Result type of every command.
pub type CniResult<T> = Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(TRY_AGAIN, "daemon down").with_details("connect: ENOENT");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 11);
        assert_eq!(v["msg"], "daemon down");
        assert_eq!(v["details"], "connect: ENOENT");
        let plain: serde_json::Value =
            serde_json::from_str(&CniError::config("x").to_json("0.4.0")).unwrap();
        assert!(plain.get("details").is_none());
        assert_eq!(plain["code"], 7);
    }

    #[test]
    fn unsupported_names_field_and_value() {
        let e = CniError::unsupported("host.engine", "ovs-dpdk", "podwire only");
        assert_eq!(e.code, 2);
        assert!(e.msg.contains("host.engine") && e.msg.contains("ovs-dpdk"), "{}", e.msg);
    }
}
