//! CHECK: the attachment is as ADD left it: the record exists, the daemon has the
//! port with the same socket, mode, bridge and VLAN, the socket file exists (when
//! podwire listens), `prevResult` names the interface with the port's MAC, and the
//! IPAM plugin's own CHECK passes.

use serde_json::Value;

use super::Ctx;
use crate::error::{CniError, CniResult, CHECK_FAILED, INCOMPATIBLE_VERSION, INVALID_CONFIG};
use crate::ipam::Ipam;
use crate::version::V0_4;

fn failed(msg: String) -> CniError {
    CniError::new(CHECK_FAILED, msg)
}

pub fn check(ctx: &Ctx<'_>) -> CniResult<()> {
    let (conf, env) = (ctx.conf, ctx.env);
    if conf.version < V0_4 {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("CHECK needs cniVersion 0.4.0 or newer, not {}", conf.cni_version),
        ));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(INVALID_CONFIG, "CHECK needs prevResult (the ADD result)"))?;
    let r = ctx.state.load(&conf.name, &env.container_id, &env.ifname)?.ok_or_else(|| {
        failed(format!("{}/{} is not attached to {}", env.container_id, env.ifname, conf.name))
    })?;
    let a = ctx.control.request("GET", &format!("/ports/{}", r.port), None)?;
    if a.status == 404 {
        return Err(failed(format!("the daemon has no port {}", r.port)));
    }
    if a.status != 200 {
        return Err(a.refused(&format!("reading port {}", r.port)));
    }
    let p = &a.body;
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    if s("socket").as_deref() != Some(&*r.daemon_socket.to_string_lossy()) {
        return Err(failed(format!(
            "port {} has socket {:?}, not {}",
            r.port,
            s("socket"),
            r.daemon_socket.display()
        )));
    }
    if s("mode").as_deref() != Some(r.mode.as_str()) {
        return Err(failed(format!("port {} is in mode {:?}, not {}", r.port, s("mode"), r.mode)));
    }
    if s("bridge") != r.bridge {
        return Err(failed(format!(
            "port {} is on bridge {:?}, not {:?}",
            r.port,
            s("bridge"),
            r.bridge
        )));
    }
    let vlan = p.get("vlan").and_then(Value::as_u64);
    if r.bridge.is_some() && vlan.unwrap_or(1) != u64::from(r.vlan.unwrap_or(1)) {
        return Err(failed(format!("port {} is in VLAN {:?}, not {:?}", r.port, vlan, r.vlan)));
    }
    if r.mode == "server" && !r.socket.exists() {
        return Err(failed(format!("socket {} is gone", r.socket.display())));
    }
    let mac_ok = prev.get("interfaces").and_then(Value::as_array).is_some_and(|l| {
        l.iter().any(|i| i["name"] == env.ifname.as_str() && i["mac"] == r.mac.as_str())
    });
    if !mac_ok {
        return Err(failed(format!(
            "prevResult has no interface {} with MAC {}",
            env.ifname, r.mac
        )));
    }
    if s("mac").as_deref() != Some(r.mac.as_str()) {
        return Err(failed(format!("port {} has MAC {:?}, not {}", r.port, s("mac"), r.mac)));
    }
    if conf.ipam.is_some() {
        Ipam::new(&conf.raw, env)?.check(&env.container_id, &env.ifname)?;
    }
    Ok(())
}
