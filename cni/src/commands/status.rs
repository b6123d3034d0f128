//! STATUS (spec 1.1.0): ready for ADDs when the daemon answers `GET /health` and
//! the IPAM plugin is in `CNI_PATH`; error 50 otherwise.

use super::Ctx;
use crate::error::{CniError, CniResult, INCOMPATIBLE_VERSION, NOT_AVAILABLE};
use crate::ipam::find_plugin;
use crate::version::V1_1;

pub fn status(ctx: &Ctx<'_>) -> CniResult<()> {
    let conf = ctx.conf;
    if conf.version < V1_1 {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("STATUS needs cniVersion 1.1.0, not {}", conf.cni_version),
        ));
    }
    match ctx.control.request("GET", "/health", None) {
        Ok(a) if a.status == 200 => {}
        Ok(a) => {
            return Err(CniError::new(
                NOT_AVAILABLE,
                format!("podwire daemon unhealthy: {} {}", a.status, a.error_text()),
            ))
        }
        Err(e) => return Err(CniError::new(NOT_AVAILABLE, e.to_string())),
    }
    if let Some(t) = conf.ipam.as_ref().and_then(|i| i.get("type")).and_then(|t| t.as_str()) {
        find_plugin(t, &ctx.env.path).map_err(|e| CniError::new(NOT_AVAILABLE, e.msg))?;
    }
    Ok(())
}
