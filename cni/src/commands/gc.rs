//! GC (spec 1.1.0): removes every attachment of this network that the plugin
//! recorded and that is not in `cni.dev/valid-attachments` — port, socket, files,
//! IPAM lease (by an IPAM DEL per stale attachment: host-local has no GC).

use super::del::leftovers_of;
use super::teardown::teardown;
use super::Ctx;
use crate::error::{CniError, CniResult, INCOMPATIBLE_VERSION, INVALID_CONFIG};
use crate::version::V1_1;

pub fn gc(ctx: &Ctx<'_>) -> CniResult<()> {
    let conf = ctx.conf;
    if conf.version < V1_1 {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("GC needs cniVersion 1.1.0, not {}", conf.cni_version),
        ));
    }
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "GC needs \"cni.dev/valid-attachments\" (an empty list removes everything)",
        )
    })?;
    let _lock = ctx.state.lock()?;
    let mut first: Option<CniError> = None;
    for rec in ctx.state.list(&conf.name)? {
        let r = match rec {
            Ok(r) => r,
            Err(path) => {
                ctx.log.warn(&format!("GC: skipping damaged record {}", path.display()));
                continue;
            }
        };
        if valid.iter().any(|v| v.container_id == r.container_id && v.ifname == r.ifname) {
            continue;
        }
        ctx.log.info(&format!("GC: removing {}/{} (port {})", r.container_id, r.ifname, r.port));
        let res = teardown(ctx, &leftovers_of(&r))
            .and_then(|()| ctx.state.remove(&conf.name, &r.container_id, &r.ifname));
        if let Err(e) = res {
            first.get_or_insert(e);
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
