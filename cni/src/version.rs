//! CNI spec versions: which this plugin speaks, parsing and ordering them.

use crate::error::{CniError, CniResult, INCOMPATIBLE_VERSION};

/// The newest spec version, answered by VERSION and used for errors when the
/// configuration cannot be read.
pub const CURRENT: &str = "1.1.0";

/// Every config `cniVersion` this plugin accepts (and returns results in).
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A parsed `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `"1.0.0"`; `None` when it is not three dot-separated numbers.
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.').map(|p| {
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse::<u32>().ok()
            }
        });
        let v = Version(it.next()??, it.next()??, it.next()??);
        if it.next().is_some() {
            return None;
        }
        Some(v)
    }
}

/// Spec 1.1.0.
pub const V1_1: Version = Version(1, 1, 0);
/// Spec 1.0.0.
pub const V1_0: Version = Version(1, 0, 0);
/// Spec 0.4.0 (the first with CHECK).
pub const V0_4: Version = Version(0, 4, 0);

/// Checks that `s` is a version this plugin speaks; error 1 otherwise.
pub fn supported(s: &str) -> CniResult<Version> {
    match Version::parse(s) {
        Some(v) if SUPPORTED.contains(&s) => Ok(v),
        _ => Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {s:?} is not supported; podwire-cni speaks {}",
                SUPPORTED.join(", ")
            ),
        )),
    }
}

/// The VERSION command's answer.
pub fn version_answer() -> String {
    serde_json::json!({"cniVersion": CURRENT, "supportedVersions": SUPPORTED}).to_string()
}

/// The newest version in both `ours` and `theirs` that is not newer than `want`.
pub fn best_common(want: &str, theirs: &[String]) -> Option<String> {
    let want = Version::parse(want)?;
    theirs
        .iter()
        .filter_map(|s| Version::parse(s).map(|v| (v, s)))
        .filter(|(v, _)| *v <= want)
        .max_by_key(|(v, _)| *v)
        .map(|(_, s)| s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(Version::parse("1.1.0"), Some(V1_1));
        assert!(Version::parse("0.4.0").unwrap() < V1_0);
        for bad in ["", "1", "1.0", "1.0.0.0", "a.b.c", "1.-1.0", "1..0", "+1.0.0"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn supported_versions() {
        for v in SUPPORTED {
            supported(v).unwrap();
        }
        let e = supported("0.2.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(supported("2.0.0").unwrap_err().code, 1);
        assert_eq!(supported("x").unwrap_err().code, 1);
    }

    #[test]
    fn best_common_version_for_a_delegate() {
        let hl: Vec<String> = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(best_common("1.1.0", &hl).as_deref(), Some("1.0.0"));
        assert_eq!(best_common("0.4.0", &hl).as_deref(), Some("0.4.0"));
        assert_eq!(best_common("0.3.1", &["1.0.0".to_string()]), None);
    }
}
