//! ADD: IPAM first, then the pod's socket directory, the bridge (created when
//! missing), the daemon's vhost-user port, the configData and device-info files and
//! the record. A failure at any step undoes the steps before it, IPAM lease included.

use std::path::Path;

use serde_json::{json, Value};

use super::teardown::{teardown, Leftovers};
use super::Ctx;
use crate::config::NetType;
use crate::error::{
    CniError, CniResult, ALREADY_ATTACHED, DECODE_FAILURE, INVALID_CONFIG, INVALID_ENV,
    UNKNOWN_CONTAINER,
};
use crate::files;
use crate::ipam::{Ipam, IpamResult};
use crate::kube::{self, KubeClient, SharedDir};
use crate::naming::Names;
use crate::result::AddResult;
use crate::state::{PodRef, Record};

pub fn add(ctx: &Ctx<'_>) -> CniResult<Value> {
    let (conf, env) = (ctx.conf, ctx.env);
    if !Path::new(&env.netns).exists() {
        return Err(CniError::new(
            UNKNOWN_CONTAINER,
            format!("CNI_NETNS {} does not exist: the container is gone", env.netns),
        ));
    }
    let _lock = ctx.state.lock()?;
    let pod = match &conf.kubeconfig {
        Some(kc) => Some(PodCtx::load(ctx, kc)?),
        None => None,
    };
    let names = match pod.as_ref().and_then(|p| p.shared.as_ref()) {
        Some(sd) => Names::in_dir(
            &sd.host,
            env.cid12(),
            &env.ifname,
            conf.socketfile.as_deref(),
            &conf.state_dir,
        )?,
        None => Names::new(
            &conf.shared_dir,
            env.cid12(),
            &env.ifname,
            conf.socketfile.as_deref(),
            &conf.state_dir,
        )?,
    };
    if ctx.state.load(&conf.name, &env.container_id, &env.ifname)?.is_some() {
        return Err(CniError::new(
            ALREADY_ATTACHED,
            format!(
                "{}/{} is already attached to {}: DEL it first",
                env.container_id, env.ifname, conf.name
            ),
        ));
    }
    ctx.log.info(&format!("ADD {} {} port {}", env.container_id, env.ifname, names.port));

    let mut done = Leftovers {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        ..Default::default()
    };
    match steps(ctx, &names, pod.as_ref(), &mut done) {
        Ok(v) => Ok(v),
        Err(e) => {
            ctx.log.error(&format!("ADD {}/{} failed, undoing: {e}", env.container_id, env.ifname));
            if let Err(u) = teardown(ctx, &done) {
                ctx.log.error(&format!("undoing the failed ADD: {u}"));
                return Err(e.with_details(format!("and undoing it failed too: {u}")));
            }
            Err(e)
        }
    }
}

fn steps(
    ctx: &Ctx<'_>,
    names: &Names,
    pod: Option<&PodCtx>,
    done: &mut Leftovers,
) -> CniResult<Value> {
    let (conf, env) = (ctx.conf, ctx.env);

    let ipam = match &conf.ipam {
        Some(_) => {
            let delegate = Ipam::new(&conf.raw, env)?;
            done.ipam = true;
            let r = delegate.add(&env.container_id, &env.ifname)?;
            ctx.log.debug(&format!("IPAM gave {:?}", r.ips));
            r
        }
        None => IpamResult::default(),
    };

    if !names.dir.exists() {
        std::fs::create_dir_all(&names.dir)
            .map_err(|e| CniError::io(format!("creating {}", names.dir.display()), &e))?;
    }
    let own_dir = pod.and_then(|p| p.shared.as_ref()).is_none();
    if own_dir {
        done.dir = Some(names.dir.clone());
    }
    if let Some(link) = &names.short_link {
        make_alias(link, &names.dir)?;
        done.short_link = Some(link.clone());
    }

    if let (NetType::Bridge, Some(bridge)) = (conf.net_type, &conf.bridge) {
        ensure_bridge(ctx, bridge)?;
    }
    let mut port = json!({
        "name": names.port,
        "type": "vhost-user",
        "socket": names.daemon_socket.display().to_string(),
        "mode": conf.host_mode.as_str(),
        "queues": 1,
    });
    if let Some(g) = &conf.group {
        port["socket_group"] = Value::String(g.clone());
    }
    if let Some(b) = &conf.bridge {
        port["bridge"] = Value::String(b.clone());
        if let Some(v) = conf.vlan {
            port["vlan"] = Value::from(v);
        }
    }
    let answer = ctx.control.request("POST", "/ports", Some(&port))?;
    if answer.status != 201 && answer.status != 200 {
        let e = answer.refused(&format!("creating port {}", names.port));
        return Err(if answer.status == 400 { CniError::new(INVALID_CONFIG, e.msg) } else { e });
    }
    done.port = Some(names.port.clone());
    ctx.log.debug(&format!("port {} created", names.port));
    done.socket = Some(names.socket.clone());
    let mac = answer
        .body
        .get("mac")
        .and_then(Value::as_str)
        .ok_or_else(|| CniError::new(DECODE_FAILURE, "the daemon's port answer has no \"mac\""))?
        .to_string();

    let add = AddResult {
        ifname: env.ifname.clone(),
        mac: mac.clone(),
        sandbox: env.netns.clone(),
        socket_path: names.socket.display().to_string(),
        ipam,
    };
    let socket_file =
        names.socket.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let data = files::config_data(
        conf,
        &env.container_id,
        &env.ifname,
        &socket_file,
        &add.to_json("0.4.0"),
    );
    done.files.push(names.config_data.clone());
    files::write_atomic(&names.config_data, data.to_string().as_bytes(), 0o644)?;
    let devinfo_path = files::device_info_path(conf, &env.container_id, &env.ifname);
    let devinfo = files::device_info(conf.container_mode.as_str(), &names.socket);
    done.files.push(devinfo_path.clone());
    files::write_atomic(&devinfo_path, devinfo.to_string().as_bytes(), 0o444)?;

    if let Some(p) = pod {
        done.kube = Some(p.pod.clone());
        p.annotate(&env.container_id, &env.ifname, &data)?;
    }

    let result = add.to_json(&conf.cni_version);
    let record = Record {
        network: conf.name.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: env.netns.clone(),
        port: names.port.clone(),
        socket: names.socket.clone(),
        daemon_socket: names.daemon_socket.clone(),
        short_link: names.short_link.clone(),
        dir: names.dir.clone(),
        own_dir,
        config_data: names.config_data.clone(),
        device_info: Some(devinfo_path),
        bridge: conf.bridge.clone(),
        vlan: conf.vlan,
        mode: conf.host_mode.as_str().to_string(),
        mac,
        ipam: conf.ipam.is_some(),
        result: result.clone(),
        kube: pod.map(|p| p.pod.clone()),
    };
    done.files.push(ctx.state.record_path(&conf.name, &env.container_id, &env.ifname));
    ctx.state.save(&record)?;
    Ok(result)
}

/// Creates bridge `name` unless it exists (another ADD may create it first: 409 is fine).
fn ensure_bridge(ctx: &Ctx<'_>, name: &str) -> CniResult<()> {
    let a = ctx.control.request("GET", &format!("/bridges/{name}"), None)?;
    if a.status == 200 {
        return Ok(());
    }
    if a.status != 404 {
        return Err(a.refused(&format!("looking up bridge {name}")));
    }
    let a = ctx.control.request("POST", "/bridges", Some(&json!({"name": name})))?;
    match a.status {
        200 | 201 | 409 => {
            ctx.log.info(&format!("created bridge {name}"));
            Ok(())
        }
        _ => Err(a.refused(&format!("creating bridge {name}"))),
    }
}

/// Points the short alias `link` at `dir` (replacing a stale alias).
fn make_alias(link: &Path, dir: &Path) -> CniResult<()> {
    if let Ok(target) = std::fs::read_link(link) {
        if target == dir {
            return Ok(());
        }
        files::remove_file(link)?;
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CniError::io(format!("creating {}", parent.display()), &e))?;
    }
    std::os::unix::fs::symlink(dir, link)
        .map_err(|e| CniError::io(format!("linking {}", link.display()), &e))
}

/// The pod, when a kubeconfig is given.
struct PodCtx {
    client: KubeClient,
    pod: PodRef,
    /// Its `shared-dir` volume (none: the sockets go under `sharedDir`).
    shared: Option<SharedDir>,
    /// The configuration-data annotation as read.
    current: Option<String>,
}

impl PodCtx {
    fn load(ctx: &Ctx<'_>, kubeconfig: &Path) -> CniResult<PodCtx> {
        let env = ctx.env;
        let need = |k: &str| {
            env.arg(k).map(str::to_string).ok_or_else(|| {
                CniError::new(
                    INVALID_ENV,
                    format!("CNI_ARGS has no {k}: needed with a kubeconfig (to annotate the pod)"),
                )
            })
        };
        let pod = PodRef { namespace: need("K8S_POD_NAMESPACE")?, name: need("K8S_POD_NAME")? };
        let client = KubeClient::load(kubeconfig, ctx.state.dir())?;
        let p = client.get_pod(&pod.namespace, &pod.name)?.ok_or_else(|| {
            CniError::new(
                UNKNOWN_CONTAINER,
                format!("pod {}/{} does not exist", pod.namespace, pod.name),
            )
        })?;
        let shared = kube::shared_dir_of(&p);
        if shared.is_none() {
            ctx.log.warn(&format!(
                "pod {}/{} has no \"{}\" volume: sockets go under sharedDir",
                pod.namespace,
                pod.name,
                kube::SHARED_DIR_VOLUME
            ));
        }
        let current =
            p["metadata"]["annotations"][kube::CONFIG_DATA_ANNOTATION].as_str().map(str::to_string);
        Ok(PodCtx { client, pod, shared, current })
    }

    /// Adds this interface's configData to the pod's annotation and sets the
    /// mapped dir.
    fn annotate(&self, cid: &str, ifname: &str, data: &Value) -> CniResult<()> {
        let list = kube::merge_config_data(self.current.as_deref(), cid, ifname, Some(data));
        let mut ann = json!({ kube::CONFIG_DATA_ANNOTATION: list.to_string() });
        if let Some(sd) = &self.shared {
            ann[kube::MAPPED_DIR_ANNOTATION] = Value::String(sd.mapped.clone());
        }
        self.client.patch_annotations(&self.pod.namespace, &self.pod.name, ann)
    }
}
