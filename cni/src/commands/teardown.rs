//! Undoing an attachment: the port, the socket and alias, the files, the IPAM
//! lease, the record. Used by DEL, by GC for stale attachments and by a failed ADD.
//! Every step is idempotent, so a DEL after a partial ADD or a second DEL succeeds.

use std::path::PathBuf;

use super::Ctx;
use crate::control::ControlError;
use crate::error::{CniError, CniResult};
use crate::files;
use crate::ipam::Ipam;
use crate::kube::{self, KubeClient};
use crate::state::PodRef;

/// What there is to undo (from the record, or computed from config and env).
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    /// Container ID.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
    /// The daemon's port name.
    pub port: Option<String>,
    /// Socket paths to remove (the real one).
    pub socket: Option<PathBuf>,
    /// The alias symlink.
    pub short_link: Option<PathBuf>,
    /// Files ADD wrote.
    pub files: Vec<PathBuf>,
    /// The socket directory the plugin made (`<sharedDir>/<cid12>`), removed when
    /// empty; never the pod's own shared-dir volume.
    pub dir: Option<PathBuf>,
    /// Release the IPAM lease.
    pub ipam: bool,
    /// Take this attachment out of the pod's annotation.
    pub kube: Option<PodRef>,
}

/// Deletes the daemon's port `name`; gone already (404) or a daemon that is not
/// running (its ports went with it) count as done.
pub fn delete_port(ctx: &Ctx<'_>, name: &str) -> CniResult<()> {
    match ctx.control.request("DELETE", &format!("/ports/{name}"), None) {
        Ok(a) if a.status == 204 || a.status == 200 || a.status == 404 => Ok(()),
        Ok(a) => Err(a.refused(&format!("deleting port {name}"))),
        Err(ControlError::Unreachable(p, e)) => {
            ctx.log.warn(&format!(
                "daemon not reachable on {} ({e}): port {name} went with it",
                p.display()
            ));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Undoes everything in `l`; the first error is returned after every step was tried.
pub fn teardown(ctx: &Ctx<'_>, l: &Leftovers) -> CniResult<()> {
    let mut first: Option<CniError> = None;
    let mut keep = |r: CniResult<()>| {
        if let Err(e) = r {
            ctx.log.error(&format!("teardown {}/{}: {e}", l.container_id, l.ifname));
            first.get_or_insert(e);
        }
    };
    if let Some(port) = &l.port {
        keep(delete_port(ctx, port));
        ctx.log.debug(&format!("port {port} deleted"));
    }
    if let (Some(pod), Some(kc)) = (&l.kube, &ctx.conf.kubeconfig) {
        keep(unannotate(ctx, kc, pod, &l.container_id, &l.ifname));
    }
    if let Some(s) = &l.socket {
        keep(files::remove_file(s));
    }
    for f in &l.files {
        keep(files::remove_file(f));
    }
    if let Some(d) = &l.dir {
        files::remove_dir_if_empty(d);
    }
    if let Some(link) = &l.short_link {
        keep(files::remove_file(link));
    }
    if l.ipam && ctx.conf.ipam.is_some() {
        keep(Ipam::new(&ctx.conf.raw, ctx.env).and_then(|i| i.del(&l.container_id, &l.ifname)));
        ctx.log.debug(&format!("IPAM lease of {}/{} released", l.container_id, l.ifname));
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Removes this attachment's entry from the pod's configuration-data annotation
/// (the pod being gone already is fine).
fn unannotate(
    ctx: &Ctx<'_>,
    kubeconfig: &std::path::Path,
    pod: &PodRef,
    cid: &str,
    ifname: &str,
) -> CniResult<()> {
    let client = KubeClient::load(kubeconfig, ctx.state.dir())?;
    let Some(p) = client.get_pod(&pod.namespace, &pod.name)? else { return Ok(()) };
    let current = p["metadata"]["annotations"][kube::CONFIG_DATA_ANNOTATION].as_str();
    if current.is_none() {
        return Ok(());
    }
    let list = kube::merge_config_data(current, cid, ifname, None);
    client.patch_annotations(
        &pod.namespace,
        &pod.name,
        serde_json::json!({ kube::CONFIG_DATA_ANNOTATION: list.to_string() }),
    )
}
