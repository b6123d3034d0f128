//! DEL: removes the port, the socket, the files and the IPAM lease of one
//! attachment. Idempotent: with no record (never added, or deleted already) it
//! still removes whatever the names from config and environment point at, and
//! succeeds when nothing is left. It never deletes a bridge.

use super::teardown::{teardown, Leftovers};
use super::Ctx;
use crate::error::CniResult;
use crate::files;
use crate::naming::Names;
use crate::state::Record;

/// What to undo for a recorded attachment.
pub fn leftovers_of(r: &Record) -> Leftovers {
    let mut files = vec![r.config_data.clone()];
    files.extend(r.device_info.clone());
    Leftovers {
        container_id: r.container_id.clone(),
        ifname: r.ifname.clone(),
        port: Some(r.port.clone()),
        socket: Some(r.socket.clone()),
        short_link: r.short_link.clone(),
        files,
        dir: r.own_dir.then(|| r.dir.clone()),
        ipam: r.ipam,
        kube: r.kube.clone(),
    }
}

pub fn del(ctx: &Ctx<'_>) -> CniResult<()> {
    let (conf, env) = (ctx.conf, ctx.env);
    let _lock = ctx.state.lock()?;
    let record = ctx.state.load(&conf.name, &env.container_id, &env.ifname).ok().flatten();
    let l = match &record {
        Some(r) => leftovers_of(r),
        None => {
            let names = Names::new(
                &conf.shared_dir,
                env.cid12(),
                &env.ifname,
                conf.socketfile.as_deref(),
                &conf.state_dir,
            )?;
            Leftovers {
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
                port: Some(names.port),
                socket: Some(names.socket),
                short_link: names.short_link,
                files: vec![
                    names.config_data,
                    files::device_info_path(conf, &env.container_id, &env.ifname),
                ],
                dir: Some(names.dir),
                ipam: true,
                kube: None,
            }
        }
    };
    ctx.log.info(&format!(
        "DEL {} {} ({})",
        env.container_id,
        env.ifname,
        if record.is_some() { "recorded" } else { "no record" }
    ));
    teardown(ctx, &l)?;
    ctx.state.remove(&conf.name, &env.container_id, &env.ifname)
}
