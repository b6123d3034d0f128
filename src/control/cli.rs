//! The CLI commands that read bridges over the control socket (`podwire bridge
//! list|show`, `podwire mac-table`). Each prints a table, or the raw JSON with
//! `--json`, and returns an error message on failure.

use std::path::Path;

use super::{get_json, BridgeInfo, MacTableResponse};

/// Whether a bridge name may be put in a request path as it is.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > crate::config::MAX_NAME_LEN
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!("{name:?} is not a bridge name"));
    }
    Ok(())
}

fn bridge_table(bridges: &[BridgeInfo]) -> String {
    let mut out = format!(
        "{:<16} {:>7} {:>8} {:>12} {:>12} {:>10} {:>10}  PORTS\n",
        "BRIDGE", "MACS", "LIMIT", "FORWARDED", "FLOODED", "FULL", "VLAN-DROP"
    );
    for b in bridges {
        let ports: Vec<String> = b
            .ports
            .iter()
            .map(|p| match (&p.vlan, &p.trunk) {
                (Some(v), _) => format!("{}(vlan {v})", p.name),
                (_, Some(t)) => format!(
                    "{}(trunk {})",
                    p.name,
                    t.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
                ),
                _ => p.name.clone(),
            })
            .collect();
        let c = &b.counters;
        out.push_str(&format!(
            "{:<16} {:>7} {:>8} {:>12} {:>12} {:>10} {:>10}  {}\n",
            b.name,
            c.entries,
            b.mac_table_size,
            c.forwarded,
            c.flooded,
            c.table_full,
            c.vlan_drops,
            ports.join(" ")
        ));
    }
    if bridges.is_empty() {
        out.push_str("(no bridges)\n");
    }
    out
}

/// `podwire bridge list`.
pub fn bridge_list(socket: &Path, json: bool) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct List {
        bridges: Vec<BridgeInfo>,
    }
    let (body, list): (String, List) = get_json(socket, "/bridges").map_err(|e| e.to_string())?;
    Ok(if json { body } else { bridge_table(&list.bridges) })
}

/// `podwire bridge show NAME`.
pub fn bridge_show(socket: &Path, name: &str, json: bool) -> Result<String, String> {
    check_name(name)?;
    let (body, b): (String, BridgeInfo) =
        get_json(socket, &format!("/bridges/{name}")).map_err(|e| e.to_string())?;
    Ok(if json { body } else { bridge_table(std::slice::from_ref(&b)) })
}

/// `podwire mac-table BRIDGE`.
pub fn mac_table(socket: &Path, name: &str, json: bool) -> Result<String, String> {
    check_name(name)?;
    let (body, t): (String, MacTableResponse) =
        get_json(socket, &format!("/bridges/{name}/macs")).map_err(|e| e.to_string())?;
    Ok(if json { body } else { t.to_table() })
}
