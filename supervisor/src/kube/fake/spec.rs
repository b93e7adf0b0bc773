//! The FAKE API server's objects as a test describes them: pods built up in code, or a whole
//! world read from a JSON file (for the fake-apiserver binary); and the log line of each
//! request that changes something.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::api::World;
use super::http::{Request, Response};

/// A pod to add, built up (or read from a [`Spec`]: `{"namespace": "shop", "name": "web-1",
/// "node": "w1", "owner": ["ReplicaSet", "web-5d8f"], "labels": {"app": "web"}, "mirror":
/// false, "emptyDir": false, "phase": "Running"}`, all but the first three optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FakePod {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) node: String,
    #[serde(default)]
    pub(super) owner: Option<(String, String)>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) mirror: bool,
    #[serde(default)]
    pub(super) empty_dir: bool,
    #[serde(default = "running")]
    pub(super) phase: String,
}

fn running() -> String {
    "Running".into()
}

fn yes() -> bool {
    true
}

/// A node of a [`Spec`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecNode {
    name: String,
    #[serde(default = "yes")]
    ready: bool,
    #[serde(default)]
    roles: Vec<String>,
}

/// A PodDisruptionBudget of a [`Spec`] (over the pods listed before it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpecPdb {
    namespace: String,
    name: String,
    selector: BTreeMap<String, String>,
    #[serde(default)]
    min_available: Option<u32>,
    #[serde(default)]
    max_unavailable: Option<u32>,
}

/// A world as a JSON file describes it, for the fake-apiserver binary:
/// `{"nodes": [{"name": "w1", "ready": true, "roles": []}], "pods": [...], "pdbs":
/// [{"namespace": "shop", "name": "web", "selector": {"app": "web"}, "minAvailable": 1}],
/// "terminationSeconds": 0, "policyV1": true}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    nodes: Vec<SpecNode>,
    #[serde(default)]
    pods: Vec<FakePod>,
    #[serde(default)]
    pdbs: Vec<SpecPdb>,
    #[serde(default)]
    termination_seconds: u64,
    #[serde(default = "yes")]
    policy_v1: bool,
}

impl FakePod {
    /// A running, ready pod with no controller.
    pub fn new(namespace: &str, name: &str, node: &str) -> FakePod {
        FakePod {
            namespace: namespace.into(),
            name: name.into(),
            node: node.into(),
            owner: None,
            labels: BTreeMap::new(),
            mirror: false,
            empty_dir: false,
            phase: "Running".into(),
        }
    }
    /// Managed by a controller of `kind` named `name`.
    pub fn owned_by(mut self, kind: &str, name: &str) -> FakePod {
        self.owner = Some((kind.into(), name.into()));
        self
    }
    /// With a label.
    pub fn label(mut self, key: &str, value: &str) -> FakePod {
        self.labels.insert(key.into(), value.into());
        self
    }
    /// A static pod's mirror.
    pub fn mirror(mut self) -> FakePod {
        self.mirror = true;
        self
    }
    /// With an emptyDir volume.
    pub fn empty_dir(mut self) -> FakePod {
        self.empty_dir = true;
        self
    }
    /// In `phase`.
    pub fn phase(mut self, phase: &str) -> FakePod {
        self.phase = phase.into();
        self
    }
}

impl World {
    /// The world `spec` describes.
    pub fn from_spec(spec: &Spec) -> World {
        let mut world = World::default();
        world.policy_v1 = spec.policy_v1;
        world.termination = Duration::from_secs(spec.termination_seconds);
        for node in &spec.nodes {
            let roles: Vec<&str> = node.roles.iter().map(String::as_str).collect();
            world.add_node(&node.name, node.ready, &roles);
        }
        for pod in &spec.pods {
            world.add_pod(pod.clone());
        }
        for pdb in &spec.pdbs {
            let selector: Vec<(&str, &str)> = pdb
                .selector
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            world.add_pdb(
                &pdb.namespace,
                &pdb.name,
                &selector,
                pdb.min_available,
                pdb.max_unavailable,
            );
        }
        world
    }
}

/// The log line of a request that changes something (None for one that does not).
pub(super) fn log_line(request: &Request, response: &Response) -> Option<Value> {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let code = response.code;
    let mut line = match (request.method.as_str(), segments.as_slice()) {
        ("PATCH", ["api", "v1", "nodes", node]) => {
            let what = match &body["spec"]["unschedulable"] {
                Value::Bool(true) => "cordon",
                Value::Null | Value::Bool(false) if body["spec"].get("unschedulable").is_some() => {
                    "uncordon"
                }
                _ => "patch-node",
            };
            json!({"what": what, "node": node, "code": code})
        }
        ("PATCH", ["api", "v1", "nodes", node, "status"]) => {
            json!({"what": "patch-node-status", "node": node, "code": code})
        }
        ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
            json!({"what": "evict", "pod": format!("{ns}/{name}"), "code": code,
                   "apiVersion": body["apiVersion"]})
        }
        // The Secret's name only: its data holds a token.
        ("POST", ["api", "v1", "namespaces", ns, "secrets"]) => {
            json!({"what": "create-secret", "secret": format!("{ns}/{}", body["metadata"]["name"].as_str().unwrap_or("")),
                   "code": code})
        }
        ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
            json!({"what": "delete", "pod": format!("{ns}/{name}"), "code": code})
        }
        _ => return None,
    };
    // When, for ordering against what the client logged (Unix seconds).
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    line["at"] = json!(at);
    Some(line)
}
