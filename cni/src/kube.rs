//! The Kubernetes side, used when the network names a `kubeconfig`: read the pod
//! (its `shared-dir` volume says where the sockets go on the host and where the
//! container sees them) and merge-patch its annotations
//! `userspace/configuration-data` (a JSON list of configData objects, one per
//! interface) and `userspace/mapped-dir` (the container's path, ending in `/`).
//!
//! The API server, its CA and the credentials come from the kubeconfig (YAML:
//! current-context, token / tokenFile / client certificate, CA file or data,
//! insecure-skip-tls-verify). The HTTPS transport is `curl` (run with its
//! configuration on stdin, so the token never shows in a process listing): podwire
//! builds with no C toolchain, and every TLS stack for Rust either needs one or is
//! experimental.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{CniError, CniResult, DECODE_FAILURE, INVALID_CONFIG, INVALID_ENV, IO_FAILURE};

/// Annotation with the configData list.
pub const CONFIG_DATA_ANNOTATION: &str = "userspace/configuration-data";
/// Annotation with the container's socket directory.
pub const MAPPED_DIR_ANNOTATION: &str = "userspace/mapped-dir";
/// The pod volume that holds the sockets.
pub const SHARED_DIR_VOLUME: &str = "shared-dir";
/// kubelet's root directory (emptyDir volumes live under it).
pub const KUBELET_ROOT: &str = "/var/lib/kubelet";

#[derive(Debug, Default, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: Option<T>,
}

#[derive(Debug, Default, Deserialize)]
struct ClusterEntry {
    server: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
struct UserEntry {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    #[serde(rename = "client-certificate")]
    cert: Option<String>,
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-key")]
    key: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ContextEntry {
    cluster: String,
    user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct KubeconfigFile {
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
}

/// A credential or CA, as a file or as inline (base64-decoded) bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    File(PathBuf),
    Data(Vec<u8>),
}

/// A client for the API server a kubeconfig names.
#[derive(Debug, Clone)]
pub struct KubeClient {
    server: String,
    ca: Option<Material>,
    insecure: bool,
    token: Option<String>,
    cert: Option<Material>,
    key: Option<Material>,
    scratch: PathBuf,
}

fn config_err(path: &Path, why: impl std::fmt::Display) -> CniError {
    CniError::new(INVALID_CONFIG, format!("kubeconfig {}: {why}", path.display()))
}

/// Decodes standard base64 (padding optional, whitespace ignored).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn material(
    base: &Path,
    file: &Option<String>,
    data: &Option<String>,
    what: &str,
    kc: &Path,
) -> CniResult<Option<Material>> {
    if let Some(d) = data.as_deref().filter(|d| !d.is_empty()) {
        return base64_decode(d)
            .map(|b| Some(Material::Data(b)))
            .ok_or_else(|| config_err(kc, format!("{what}-data is not base64")));
    }
    Ok(file.as_deref().filter(|f| !f.is_empty()).map(|f| Material::File(base.join(f))))
}

/// Escapes `s` for a double-quoted curl config value.
fn curl_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Checks a namespace or pod name (DNS-1123 subdomain characters only).
pub fn check_k8s_name(what: &str, s: &str) -> CniResult<()> {
    if s.is_empty()
        || s.len() > 253
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(CniError::new(
            INVALID_ENV,
            format!("CNI_ARGS {what} {s:?} is not a Kubernetes name"),
        ));
    }
    Ok(())
}

impl KubeClient {
    /// Reads the kubeconfig at `path`; temporary credential files go in `scratch`.
    pub fn load(path: &Path, scratch: &Path) -> CniResult<KubeClient> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CniError::io(format!("reading kubeconfig {}", path.display()), &e))?;
        let kc: KubeconfigFile = serde_yaml::from_str(&text).map_err(|e| {
            CniError::new(DECODE_FAILURE, format!("kubeconfig {}: {e}", path.display()))
        })?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let ctx_name =
            kc.current_context.clone().or_else(|| kc.contexts.first().map(|c| c.name.clone()));
        let ctx = kc
            .contexts
            .iter()
            .find(|c| Some(&c.name) == ctx_name.as_ref())
            .and_then(|c| c.item.as_ref());
        let cluster_name =
            ctx.map(|c| c.cluster.clone()).or_else(|| kc.clusters.first().map(|c| c.name.clone()));
        let cluster = kc
            .clusters
            .iter()
            .find(|c| Some(&c.name) == cluster_name.as_ref())
            .and_then(|c| c.item.as_ref())
            .ok_or_else(|| config_err(path, "no cluster for the current context"))?;
        let server = cluster
            .server
            .clone()
            .filter(|s| s.starts_with("https://") || s.starts_with("http://"))
            .ok_or_else(|| config_err(path, "the cluster has no http(s):// server"))?;
        let user_name = ctx.and_then(|c| c.user.clone());
        let user = kc
            .users
            .iter()
            .find(|u| Some(&u.name) == user_name.as_ref())
            .and_then(|u| u.item.as_ref());
        let default_user = UserEntry::default();
        let user = user.unwrap_or(&default_user);
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) if !t.is_empty() => Some(t.clone()),
            (_, Some(f)) if !f.is_empty() => Some(
                std::fs::read_to_string(base.join(f))
                    .map_err(|e| CniError::io(format!("reading tokenFile {f}"), &e))?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        Ok(KubeClient {
            server: server.trim_end_matches('/').to_string(),
            ca: material(base, &cluster.ca, &cluster.ca_data, "certificate-authority", path)?,
            insecure: cluster.insecure,
            token,
            cert: material(base, &user.cert, &user.cert_data, "client-certificate", path)?,
            key: material(base, &user.key, &user.key_data, "client-key", path)?,
            scratch: scratch.to_owned(),
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// One request through curl; returns (status, body).
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> CniResult<(u16, Value)> {
        let mut temps: Vec<PathBuf> = Vec::new();
        let res = self.request_inner(method, path, body, &mut temps);
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
        res
    }

    fn file_of(&self, m: &Material, tag: &str, temps: &mut Vec<PathBuf>) -> CniResult<PathBuf> {
        match m {
            Material::File(p) => Ok(p.clone()),
            Material::Data(d) => {
                let p = self.scratch.join(format!(
                    ".kube-{tag}-{}-{}",
                    std::process::id(),
                    temps.len()
                ));
                temps.push(p.clone());
                crate::files::write_atomic(&p, d, 0o600)?;
                Ok(p)
            }
        }
    }

    fn request_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        temps: &mut Vec<PathBuf>,
    ) -> CniResult<(u16, Value)> {
        let mut cfg = String::new();
        cfg += &format!("url = {}\n", curl_quote(&format!("{}{path}", self.server)));
        cfg += &format!("request = {}\n", curl_quote(method));
        cfg += "silent\nshow-error\nmax-time = 10\nheader = \"Accept: application/json\"\n";
        cfg += "write-out = \"\\n%{http_code}\"\n";
        if let Some(t) = &self.token {
            cfg += &format!("header = {}\n", curl_quote(&format!("Authorization: Bearer {t}")));
        }
        if let Some(b) = body {
            cfg += "header = \"Content-Type: application/merge-patch+json\"\n";
            cfg += &format!("data-binary = {}\n", curl_quote(&b.to_string()));
        }
        if self.insecure {
            cfg += "insecure\n";
        }
        if let Some(ca) = &self.ca {
            cfg += &format!(
                "cacert = {}\n",
                curl_quote(&self.file_of(ca, "ca", temps)?.display().to_string())
            );
        }
        if let Some(c) = &self.cert {
            cfg += &format!(
                "cert = {}\n",
                curl_quote(&self.file_of(c, "cert", temps)?.display().to_string())
            );
        }
        if let Some(k) = &self.key {
            cfg += &format!(
                "key = {}\n",
                curl_quote(&self.file_of(k, "key", temps)?.display().to_string())
            );
        }
        let mut child = Command::new("curl")
            .args(["--config", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                CniError::io("running curl for the Kubernetes API (apt-get install curl)", &e)
            })?;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(cfg.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| CniError::io("waiting for curl", &e))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body_text, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let status: u16 = code.trim().parse().unwrap_or(0);
        if !out.status.success() || status == 0 {
            return Err(CniError::new(
                IO_FAILURE,
                format!(
                    "Kubernetes API {method} {}{path}: {}",
                    self.server,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok((status, serde_json::from_str(body_text).unwrap_or(Value::Null)))
    }

    fn pod_path(namespace: &str, name: &str) -> CniResult<String> {
        check_k8s_name("K8S_POD_NAMESPACE", namespace)?;
        check_k8s_name("K8S_POD_NAME", name)?;
        Ok(format!("/api/v1/namespaces/{namespace}/pods/{name}"))
    }

    /// GET the pod; `None` when it does not exist (404).
    pub fn get_pod(&self, namespace: &str, name: &str) -> CniResult<Option<Value>> {
        let (status, body) = self.request("GET", &Self::pod_path(namespace, name)?, None)?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            s => Err(api_err("reading pod", namespace, name, s, &body)),
        }
    }

    /// Merge-patches the pod's annotations (`null` removes one). A pod that is
    /// gone (404) is fine.
    pub fn patch_annotations(
        &self,
        namespace: &str,
        name: &str,
        annotations: Value,
    ) -> CniResult<()> {
        let patch = json!({"metadata": {"annotations": annotations}});
        let (status, body) =
            self.request("PATCH", &Self::pod_path(namespace, name)?, Some(&patch))?;
        match status {
            200 | 201 | 404 => Ok(()),
            s => Err(api_err("patching pod", namespace, name, s, &body)),
        }
    }
}

fn api_err(what: &str, ns: &str, name: &str, status: u16, body: &Value) -> CniError {
    let msg = body.get("message").and_then(Value::as_str).unwrap_or("");
    CniError::new(IO_FAILURE, format!("Kubernetes API {what} {ns}/{name}: {status} {msg}"))
}

/// Where the pod's `shared-dir` volume is on the host and in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDir {
    /// Host directory.
    pub host: PathBuf,
    /// The container's mount path, ending in `/`.
    pub mapped: String,
}

/// Finds the `shared-dir` volume of `pod` (hostPath or emptyDir).
pub fn shared_dir_of(pod: &Value) -> Option<SharedDir> {
    let vol = pod["spec"]["volumes"].as_array()?.iter().find(|v| v["name"] == SHARED_DIR_VOLUME)?;
    let host = if let Some(p) = vol["hostPath"]["path"].as_str() {
        PathBuf::from(p)
    } else if vol.get("emptyDir").is_some() {
        let uid = pod["metadata"]["uid"].as_str().filter(|u| !u.is_empty() && !u.contains('/'))?;
        Path::new(KUBELET_ROOT)
            .join("pods")
            .join(uid)
            .join("volumes/kubernetes.io~empty-dir")
            .join(SHARED_DIR_VOLUME)
    } else {
        return None;
    };
    if !host.is_absolute() {
        return None;
    }
    let mount = pod["spec"]["containers"]
        .as_array()?
        .iter()
        .filter_map(|c| c["volumeMounts"].as_array())
        .flatten()
        .find(|m| m["name"] == SHARED_DIR_VOLUME)?["mountPath"]
        .as_str()?
        .to_string();
    let mapped = if mount.ends_with('/') { mount } else { format!("{mount}/") };
    Some(SharedDir { host, mapped })
}

/// The configuration-data list with `entry` replacing any entry of the same
/// container and interface (`entry` `None`: just removed).
pub fn merge_config_data(
    current: Option<&str>,
    container_id: &str,
    ifname: &str,
    entry: Option<&Value>,
) -> Value {
    let mut list: Vec<Value> =
        current.and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok()).unwrap_or_default();
    list.retain(|e| !(e["containerId"] == container_id && e["ifName"] == ifname));
    list.extend(entry.cloned());
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn curl_quoting() {
        assert_eq!(curl_quote(r#"{"a":"b\c"}"#), r#""{\"a\":\"b\\c\"}""#);
    }

    #[test]
    fn kubeconfig_with_token_and_ca_data() {
        let d = std::env::temp_dir().join(format!("podwire-cni-kc-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("token"), "s3cret\n").unwrap();
        let kc = d.join("kubeconfig");
        std::fs::write(
            &kc,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443/\n    certificate-authority-data: aGVsbG8=\nusers:\n- name: u\n  user:\n    tokenFile: token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
        )
        .unwrap();
        let k = KubeClient::load(&kc, &d).unwrap();
        assert_eq!(k.server(), "https://10.0.0.1:6443");
        assert_eq!(k.token.as_deref(), Some("s3cret"));
        assert_eq!(k.ca, Some(Material::Data(b"hello".to_vec())));
        std::fs::write(&kc, "clusters: []\n").unwrap();
        assert_eq!(KubeClient::load(&kc, &d).unwrap_err().code, 7);
        std::fs::write(&kc, "clusters: [[[\n").unwrap();
        assert_eq!(KubeClient::load(&kc, &d).unwrap_err().code, 6);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn shared_dir_volume_forms() {
        let pod = json!({"metadata": {"uid": "1234"}, "spec": {
            "volumes": [{"name": "shared-dir", "emptyDir": {}}],
            "containers": [{"volumeMounts": [{"name": "shared-dir", "mountPath": "/var/run/app"}]}]}});
        assert_eq!(
            shared_dir_of(&pod),
            Some(SharedDir {
                host: PathBuf::from(
                    "/var/lib/kubelet/pods/1234/volumes/kubernetes.io~empty-dir/shared-dir"
                ),
                mapped: "/var/run/app/".into()
            })
        );
        let hp = json!({"spec": {"volumes": [{"name": "shared-dir", "hostPath": {"path": "/x/y"}}],
            "containers": [{"volumeMounts": [{"name": "shared-dir", "mountPath": "/m/"}]}]}});
        assert_eq!(shared_dir_of(&hp).unwrap().host, PathBuf::from("/x/y"));
        assert_eq!(shared_dir_of(&json!({"spec": {}})), None);
    }

    #[test]
    fn config_data_list_merging() {
        let a = json!({"containerId": "c", "ifName": "net1", "v": 1});
        let b = json!({"containerId": "c", "ifName": "net2"});
        let l = merge_config_data(None, "c", "net1", Some(&a));
        let l = merge_config_data(Some(&l.to_string()), "c", "net2", Some(&b));
        assert_eq!(l.as_array().unwrap().len(), 2);
        let a2 = json!({"containerId": "c", "ifName": "net1", "v": 2});
        let l = merge_config_data(Some(&l.to_string()), "c", "net1", Some(&a2));
        assert_eq!(l.as_array().unwrap().len(), 2);
        assert_eq!(l[1]["v"], 2);
        let l = merge_config_data(Some(&l.to_string()), "c", "net1", None);
        assert_eq!(l, json!([b]));
        assert_eq!(merge_config_data(Some("garbage"), "c", "x", None), json!([]));
        check_k8s_name("K8S_POD_NAME", "web-0").unwrap();
        assert_eq!(check_k8s_name("K8S_POD_NAME", "../x").unwrap_err().code, 4);
    }
}
