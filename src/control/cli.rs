//! The CLI commands that talk to the control socket: `podwire bridge
//! list|show|add|del|attach|detach`, `podwire mac-table`, `podwire port
//! add|del|list|show`, `podwire xconnect add|del|list`, `podwire stats --watch`,
//! `podwire reload`. Each returns the text to print (a table, the raw JSON with
//! `--json`, or one line saying what was done) or an error message.

use std::path::Path;

use super::client::{error_message, request};
use super::{
    get_json, BridgeInfo, MacTableResponse, PortList, PortView, StatsResponse, XconnectList,
};

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

/// Sends a change; 2xx gives the body, anything else the daemon's message.
fn change(socket: &Path, method: &str, target: &str, body: Option<&str>) -> Result<String, String> {
    let (code, answer) = request(socket, method, target, body).map_err(|e| e.to_string())?;
    if (200..300).contains(&code) {
        Ok(answer)
    } else {
        Err(error_message(code, &answer))
    }
}

/// Whether a port name may be put in a request path as it is.
fn check_port_name(name: &str) -> Result<(), String> {
    check_name(name).map_err(|_| format!("{name:?} is not a port name"))
}

fn attachment(p: &PortView) -> String {
    match (&p.bridge, p.vlan, &p.trunk, &p.xconnect) {
        (Some(b), Some(v), _, _) => format!("bridge {b} vlan {v}"),
        (Some(b), _, Some(t), _) => format!(
            "bridge {b} trunk {}",
            t.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
        ),
        (Some(b), _, _, _) => format!("bridge {b}"),
        (_, _, _, Some(x)) => format!("xconnect {x}"),
        _ => "- (not polled)".into(),
    }
}

fn port_table(ports: &[PortView]) -> String {
    let mut out = format!(
        "{:<16} {:<10} {:<4} {:>2} {:<7} {:<24} {:>12} {:>12} {:>10}  SOCKET\n",
        "PORT", "KIND", "LINK", "Q", "ORIGIN", "ATTACHED", "RX-PKTS", "TX-PKTS", "DROPS"
    );
    for p in ports {
        out.push_str(&format!(
            "{:<16} {:<10} {:<4} {:>2} {:<7} {:<24} {:>12} {:>12} {:>10}  {}\n",
            p.name,
            p.kind,
            p.link,
            p.queues,
            p.origin.as_deref().unwrap_or("-"),
            attachment(p),
            p.rx_packets,
            p.tx_packets,
            p.rx_drops + p.tx_drops,
            p.socket.as_deref().unwrap_or("-"),
        ));
    }
    if ports.is_empty() {
        out.push_str("(no ports)\n");
    }
    out
}

/// `podwire port list`.
pub fn port_list(socket: &Path, json: bool) -> Result<String, String> {
    let (body, list): (String, PortList) = get_json(socket, "/ports").map_err(|e| e.to_string())?;
    Ok(if json { body } else { port_table(&list.ports) })
}

/// `podwire port show NAME`.
pub fn port_show(socket: &Path, name: &str, json: bool) -> Result<String, String> {
    check_port_name(name)?;
    let (body, p): (String, PortView) =
        get_json(socket, &format!("/ports/{name}")).map_err(|e| e.to_string())?;
    Ok(if json { body } else { port_table(std::slice::from_ref(&p)) })
}

/// `podwire port add`: `body` is the JSON of `POST /ports`.
pub fn port_add(socket: &Path, body: &serde_json::Value) -> Result<String, String> {
    let answer = change(socket, "POST", "/ports", Some(&body.to_string()))?;
    let p: PortView =
        serde_json::from_str(&answer).map_err(|e| format!("unexpected answer: {e}: {answer}"))?;
    let place = match attachment(&p).as_str() {
        "- (not polled)" => "not attached yet: `podwire bridge attach` or `podwire xconnect add` \
                             puts it to work"
            .to_owned(),
        a => a.to_owned(),
    };
    let socket = p.socket.as_deref().map(|s| format!(", socket {s}")).unwrap_or_default();
    Ok(format!("port {} added ({}{socket}, mac {}); {place}", p.name, p.kind, p.mac))
}

/// `podwire port del NAME`.
pub fn port_del(socket: &Path, name: &str) -> Result<String, String> {
    check_port_name(name)?;
    change(socket, "DELETE", &format!("/ports/{name}"), None)?;
    Ok(format!("port {name} removed"))
}

/// `podwire bridge add NAME`.
pub fn bridge_add(
    socket: &Path,
    name: &str,
    mac_age_secs: Option<u32>,
    mac_table_size: Option<u32>,
) -> Result<String, String> {
    let mut body = serde_json::json!({ "name": name });
    if let Some(a) = mac_age_secs {
        body["mac_age_secs"] = a.into();
    }
    if let Some(n) = mac_table_size {
        body["mac_table_size"] = n.into();
    }
    change(socket, "POST", "/bridges", Some(&body.to_string()))?;
    Ok(format!("bridge {name} created"))
}

/// `podwire bridge del NAME`.
pub fn bridge_del(socket: &Path, name: &str) -> Result<String, String> {
    check_name(name)?;
    change(socket, "DELETE", &format!("/bridges/{name}"), None)?;
    Ok(format!("bridge {name} deleted"))
}

/// How a port joins a bridge: its VLAN mode and, optionally, its worker's core.
#[derive(Debug, Default, Clone, Copy)]
pub struct Placement<'a> {
    /// Access VLAN.
    pub vlan: Option<u16>,
    /// Trunk VLANs.
    pub trunk: Option<&'a [u16]>,
    /// The core whose worker polls the port.
    pub worker: Option<usize>,
}

/// `podwire bridge attach BRIDGE PORT [--vlan N | --trunk IDS] [--worker CORE]`.
pub fn bridge_attach(
    socket: &Path,
    bridge: &str,
    port: &str,
    how: Placement<'_>,
) -> Result<String, String> {
    check_name(bridge)?;
    let mut body = serde_json::json!({ "port": port });
    if let Some(v) = how.vlan {
        body["vlan"] = v.into();
    }
    if let Some(t) = how.trunk {
        body["trunk"] = t.into();
    }
    if let Some(w) = how.worker {
        body["worker"] = w.into();
    }
    change(socket, "POST", &format!("/bridges/{bridge}/ports"), Some(&body.to_string()))?;
    Ok(format!("port {port} joined bridge {bridge}"))
}

/// `podwire bridge detach BRIDGE PORT`.
pub fn bridge_detach(socket: &Path, bridge: &str, port: &str) -> Result<String, String> {
    check_name(bridge)?;
    check_port_name(port)?;
    change(socket, "DELETE", &format!("/bridges/{bridge}/ports/{port}"), None)?;
    Ok(format!("port {port} left bridge {bridge} (it stays, not polled)"))
}

/// `podwire xconnect add A B`.
pub fn xconnect_add(socket: &Path, a: &str, b: &str) -> Result<String, String> {
    let body = serde_json::json!({ "ports": [a, b] });
    change(socket, "POST", "/xconnects", Some(&body.to_string()))?;
    Ok(format!("cross-connect {a} <-> {b} added"))
}

/// `podwire xconnect del PORT`.
pub fn xconnect_del(socket: &Path, port: &str) -> Result<String, String> {
    check_port_name(port)?;
    change(socket, "DELETE", &format!("/xconnects/{port}"), None)?;
    Ok(format!("the cross-connect of {port} removed"))
}

/// `podwire xconnect list`.
pub fn xconnect_list(socket: &Path, json: bool) -> Result<String, String> {
    let (body, list): (String, XconnectList) =
        get_json(socket, "/xconnects").map_err(|e| e.to_string())?;
    if json {
        return Ok(body);
    }
    let mut out = String::new();
    for x in &list.xconnects {
        out.push_str(&format!("{} <-> {}\n", x.ports[0], x.ports[1]));
    }
    if list.xconnects.is_empty() {
        out.push_str("(no cross-connects)\n");
    }
    Ok(out)
}

/// `podwire reload`.
pub fn reload(socket: &Path) -> Result<String, String> {
    let answer = change(socket, "POST", "/reload", None)?;
    let r: super::ReloadReport =
        serde_json::from_str(&answer).map_err(|e| format!("unexpected answer: {e}: {answer}"))?;
    let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
    Ok(format!(
        "config reloaded: added {}; removed {}; changed {}",
        list(&r.added),
        list(&r.removed),
        list(&r.changed)
    ))
}

/// The `podwire stats --watch` table: counters with packet rates since `prev`
/// (taken `secs` seconds earlier).
pub fn rate_table(now: &StatsResponse, prev: Option<&StatsResponse>, secs: f64) -> String {
    let mut out = format!(
        "{:<16} {:<4} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>8}\n",
        "PORT", "LINK", "RX-PPS", "TX-PPS", "RX-PKTS", "TX-PKTS", "RX-DROP", "TX-DROP", "ERRORS"
    );
    for p in &now.ports {
        let before = prev.and_then(|s| s.ports.iter().find(|q| q.name == p.name));
        let rate = |n: u64, b: Option<u64>| match b {
            Some(b) if secs > 0.0 => format!("{:.0}", n.saturating_sub(b) as f64 / secs),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<16} {:<4} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>8}\n",
            p.name,
            p.link,
            rate(p.rx_packets, before.map(|b| b.rx_packets)),
            rate(p.tx_packets, before.map(|b| b.tx_packets)),
            p.rx_packets,
            p.tx_packets,
            p.rx_drops,
            p.tx_drops,
            p.errors
        ));
    }
    if now.ports.is_empty() {
        out.push_str("(no ports)\n");
    }
    if let Some(m) = now.mempool {
        out.push_str(&format!("buffers: {} free of {}\n", m.free, m.total));
    }
    out
}
