//! deploy/ is valid: every Kubernetes object passes `kubernetes-validate --strict`
//! (offline, against the bundled schemas of the Kubernetes API), each
//! NetworkAttachmentDefinition passes the NPWG CRD's schema (jsonschema), and each
//! network's `spec.config` is accepted by podwire-cni's own config parser.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Where scripts/install-deps.sh puts the validator (a Python venv).
const TOOLS: &str = "/opt/podwire-tools/bin";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn tool(name: &str) -> PathBuf {
    let p = Path::new(TOOLS).join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-deps.sh (python3 -m venv /opt/podwire-tools && \
         /opt/podwire-tools/bin/pip install kubernetes-validate)",
        p.display()
    );
    p
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "deploy/ has {v:?}");
    v
}

#[test]
fn kubernetes_objects_pass_the_api_schemas() {
    let out = Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .args(manifests())
        .output()
        .expect("run kubernetes-validate");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    for kind in [
        "daemonset/podwire",
        "serviceaccount/podwire",
        "clusterrole/podwire-cni",
        "clusterrolebinding/podwire-cni",
        "pod/testpmd",
        "configmap/podwire-config",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{text}"
        );
    }
    // The only objects without an API schema are the CRD's, checked below.
    for line in text.lines().filter(|l| l.starts_with("WARN")) {
        assert!(line.contains("NetworkAttachmentDefinition"), "unexpected warning: {line}");
    }
}

/// The NetworkAttachmentDefinition CRD's schema (k8snetworkplumbingwg), as JSON
/// Schema: spec.config is a JSON string.
const NAD_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["apiVersion", "kind", "metadata", "spec"],
  "additionalProperties": false,
  "properties": {
    "apiVersion": {"const": "k8s.cni.cncf.io/v1"},
    "kind": {"const": "NetworkAttachmentDefinition"},
    "metadata": {"type": "object", "required": ["name"],
                 "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                                "namespace": {"type": "string"}}},
    "spec": {"type": "object", "additionalProperties": false,
             "properties": {"config": {"type": "string"}}}
  }
}"#;

const CHECK_NADS: &str = r#"
import json, sys, yaml, jsonschema
schema = json.loads(sys.argv[1])
out = []
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "NetworkAttachmentDefinition":
            jsonschema.validate(doc, schema)
            out.append({"file": path, "name": doc["metadata"]["name"], "config": doc["spec"]["config"]})
print(json.dumps(out))
"#;

#[test]
fn network_attachment_definitions_are_valid_and_parse_as_podwire_networks() {
    let out = Command::new(tool("python"))
        .args(["-c", CHECK_NADS, NAD_SCHEMA])
        .args(manifests())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "NAD schema check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nads: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nads.len(), 2, "{nads:?}");
    let mut net_types = Vec::new();
    for nad in &nads {
        let config = nad["config"].as_str().unwrap();
        let conf = podwire_cni::config::NetConf::parse(config.as_bytes())
            .unwrap_or_else(|e| panic!("{}: podwire-cni refuses its config: {e}", nad["file"]));
        assert_eq!(conf.name, nad["name"].as_str().unwrap(), "network name = object name");
        net_types.push((conf.net_type.as_str(), conf.vlan));
    }
    assert!(
        net_types.contains(&("bridge", Some(100))),
        "a bridge network with a VLAN: {net_types:?}"
    );
    assert!(
        net_types.iter().any(|(t, _)| *t == "interface"),
        "an interface network: {net_types:?}"
    );
}
