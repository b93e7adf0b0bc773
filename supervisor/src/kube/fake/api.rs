//! The FAKE API server's objects and their REST semantics: discovery, nodes (GET, LIST as
//! JSON or as the Table kubectl prints, PATCH with merge semantics), pods (GET, LIST by field
//! selector, DELETE with a termination period), Secrets (POST, GET), DaemonSets (GET), and the Eviction
//! subresource in policy/v1 and policy/v1beta1 with the PodDisruptionBudget arithmetic of the
//! real API server: disruptions allowed = healthy pods − pods the budget wants healthy; none
//! allowed answers 429.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::http::{Request, Response};
use super::spec::{FakePod, log_line};

mod secrets;

/// The Kubernetes version the fake claims (its discovery is that of a 1.24 server: policy/v1
/// and policy/v1beta1 both served).
pub const VERSION: (u32, u32, u32) = (1, 24, 17);

/// A pod's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One answered eviction request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionRecord {
    /// The pod.
    pub pod: PodKey,
    /// The body's apiVersion.
    pub api_version: String,
    /// The status code answered.
    pub code: u16,
}

/// A PodDisruptionBudget.
#[derive(Debug, Clone)]
struct Pdb {
    namespace: String,
    name: String,
    selector: BTreeMap<String, String>,
    min_available: Option<u32>,
    max_unavailable: Option<u32>,
    /// The pods its controller wants (for maxUnavailable): the matching pods at creation.
    expected: u32,
}

/// Everything the fake API server holds, and what it saw.
#[derive(Debug)]
pub struct World {
    /// Whether policy/v1 is served (false: a server before 1.22, Eviction in v1beta1 only).
    pub policy_v1: bool,
    /// How long an evicted or deleted pod stays (terminating) before it is gone.
    pub termination: Duration,
    /// `address:port`, for discovery.
    pub address: String,
    nodes: BTreeMap<String, Value>,
    pods: BTreeMap<(String, String), Value>,
    daemonsets: BTreeSet<(String, String)>,
    secrets: BTreeMap<(String, String), Value>,
    pdbs: Vec<Pdb>,
    gone_at: BTreeMap<(String, String), Instant>,
    counter: u64,
    /// Every eviction request answered, in order.
    pub evictions: Vec<EvictionRecord>,
    /// Every request: `METHOD PATH`.
    pub requests: Vec<String>,
    /// TLS handshakes that failed (a client certificate from another CA, among others).
    pub rejected_handshakes: usize,
    /// Where every request that changes something is logged, one JSON object a line.
    log: Option<std::fs::File>,
}

impl Default for World {
    fn default() -> World {
        World {
            policy_v1: true,
            termination: Duration::ZERO,
            address: String::new(),
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            daemonsets: BTreeSet::new(),
            secrets: BTreeMap::new(),
            pdbs: Vec::new(),
            gone_at: BTreeMap::new(),
            counter: 0,
            evictions: Vec::new(),
            requests: Vec::new(),
            rejected_handshakes: 0,
            log: None,
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 in UTC, as the API writes timestamps.
fn timestamp(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if !details.is_null() {
        body["details"] = details;
    }
    Response { code, body }
}

fn not_found_path() -> Response {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Value::Null,
    )
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
        json!({"name": name, "kind": resource}),
    )
}

fn ok(body: Value) -> Response {
    Response { code: 200, body }
}

/// RFC 7386 merge: what a strategic merge patch does to maps and scalars (lists, where the
/// two differ, are not patched by kubectl's cordon).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &Value) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).and_then(Value::as_str) == Some(v.as_str()))
}

impl World {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Logs every request that changes something to `file`, one JSON object a line:
    /// `{"what": "cordon", "node": "w1", "code": 200}`, `"uncordon"`, `"patch-node"`,
    /// `"patch-node-status"`, `{"what": "evict", "pod": "shop/web-1", "code": 429}`,
    /// `{"what": "delete", "pod": ...}`, each with `"at"` (Unix seconds, fractional).
    pub fn log_to(&mut self, file: std::fs::File) {
        self.log = Some(file);
    }

    /// Sets node `name`'s Ready condition (as its kubelet, or the node controller, would).
    pub fn set_ready(&mut self, name: &str, ready: bool) {
        if let Some(node) = self.nodes.get_mut(name) {
            node["status"]["conditions"][0]["status"] = json!(if ready { "True" } else { "False" });
        }
    }

    /// Adds a node, Ready or not, with role labels.
    pub fn add_node(&mut self, name: &str, ready: bool, roles: &[&str]) {
        let n = self.next();
        let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
        for role in roles {
            labels[format!("node-role.kubernetes.io/{role}")] = json!("");
        }
        let ts = timestamp(now_unix().saturating_sub(300));
        let (status, reason) = if ready {
            ("True", "KubeletReady")
        } else {
            ("False", "KubeletNotReady")
        };
        let node = json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "uid": format!("node-uid-{n}"), "resourceVersion": n.to_string(),
                         "creationTimestamp": ts, "labels": labels},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "conditions": [{"type": "Ready", "status": status, "reason": reason,
                                "message": "fake", "lastHeartbeatTime": ts, "lastTransitionTime": ts}],
                "nodeInfo": {"kubeletVersion": format!("v{}.{}.{}", VERSION.0, VERSION.1, VERSION.2),
                             "operatingSystem": "linux", "architecture": "amd64"},
            },
        });
        self.nodes.insert(name.into(), node);
    }

    /// Adds a pod (and the DaemonSet that owns it, if one does).
    pub fn add_pod(&mut self, pod: FakePod) {
        let n = self.next();
        let mut metadata = json!({
            "name": pod.name, "namespace": pod.namespace, "uid": format!("pod-uid-{n}"),
            "resourceVersion": n.to_string(), "creationTimestamp": timestamp(now_unix()),
            "labels": pod.labels,
        });
        if let Some((kind, owner)) = &pod.owner {
            let api_version = if kind == "Node" { "v1" } else { "apps/v1" };
            metadata["ownerReferences"] = json!([{
                "apiVersion": api_version, "kind": kind, "name": owner,
                "uid": format!("owner-uid-{owner}"), "controller": true, "blockOwnerDeletion": true,
            }]);
            if kind == "DaemonSet" {
                self.daemonsets
                    .insert((pod.namespace.clone(), owner.clone()));
            }
        }
        if pod.mirror {
            metadata["annotations"] = json!({
                "kubernetes.io/config.mirror": "fake-hash", "kubernetes.io/config.source": "file",
            });
        }
        let volumes = if pod.empty_dir {
            json!([{"name": "scratch", "emptyDir": {}}])
        } else {
            json!([])
        };
        let ready = if pod.phase == "Running" {
            "True"
        } else {
            "False"
        };
        let value = json!({
            "kind": "Pod", "apiVersion": "v1", "metadata": metadata,
            "spec": {"nodeName": pod.node, "volumes": volumes, "terminationGracePeriodSeconds": 30,
                     "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]},
            "status": {"phase": pod.phase, "conditions": [{"type": "Ready", "status": ready}]},
        });
        self.pods.insert((pod.namespace, pod.name), value);
    }

    /// Adds a PodDisruptionBudget over the pods of `namespace` with `selector`'s labels.
    pub fn add_pdb(
        &mut self,
        namespace: &str,
        name: &str,
        selector: &[(&str, &str)],
        min_available: Option<u32>,
        max_unavailable: Option<u32>,
    ) {
        let selector: BTreeMap<String, String> = selector
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let expected = self
            .pods
            .iter()
            .filter(|((ns, _), p)| {
                ns == namespace && labels_match(&selector, &p["metadata"]["labels"])
            })
            .count();
        self.pdbs.push(Pdb {
            namespace: namespace.into(),
            name: name.into(),
            selector,
            min_available,
            max_unavailable,
            expected: u32::try_from(expected).unwrap_or(u32::MAX),
        });
    }

    /// Whether node `name` is cordoned.
    pub fn unschedulable(&self, name: &str) -> bool {
        self.nodes[name]["spec"]["unschedulable"] == json!(true)
    }

    /// The pods (namespace/name) still bound to `node`, terminating ones included.
    pub fn pods_on(&mut self, node: &str) -> BTreeSet<String> {
        self.reap();
        self.pods
            .iter()
            .filter(|(_, p)| p["spec"]["nodeName"] == json!(node))
            .map(|((ns, name), _)| format!("{ns}/{name}"))
            .collect()
    }

    /// The pods whose eviction was accepted.
    pub fn evicted(&self) -> BTreeSet<String> {
        self.evictions
            .iter()
            .filter(|e| e.code == 201)
            .map(|e| e.pod.to_string())
            .collect()
    }

    /// Removes pods whose termination period has passed.
    fn reap(&mut self) {
        let now = Instant::now();
        let gone: Vec<_> = self
            .gone_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.gone_at.remove(&key);
            self.pods.remove(&key);
        }
    }

    /// Starts deleting a pod: gone now, or terminating for `grace`.
    fn delete(&mut self, key: &(String, String), grace: Duration) {
        if grace.is_zero() {
            self.pods.remove(key);
            return;
        }
        if let Some(pod) = self.pods.get_mut(key)
            && pod["metadata"]["deletionTimestamp"].is_null()
        {
            pod["metadata"]["deletionTimestamp"] = json!(timestamp(now_unix()));
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace.as_secs());
            self.gone_at.insert(key.clone(), Instant::now() + grace);
        }
    }

    /// Answers one authenticated request (and logs it if it changes something).
    pub fn handle(&mut self, request: &Request) -> Response {
        let response = self.answer(request);
        if let Some(line) = log_line(request, &response)
            && let Some(log) = &mut self.log
        {
            use std::io::Write;
            let _ = writeln!(log, "{line}").and_then(|()| log.flush());
        }
        response
    }

    fn answer(&mut self, request: &Request) -> Response {
        self.reap();
        self.requests
            .push(format!("{} {}", request.method, request.path));
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let table = request.header("accept").contains("as=Table");
        match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["version"]) => ok(json!({
                "major": VERSION.0.to_string(), "minor": VERSION.1.to_string(),
                "gitVersion": format!("v{}.{}.{}", VERSION.0, VERSION.1, VERSION.2),
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2023-01-01T00:00:00Z", "goVersion": "go1.19", "compiler": "gc",
                "platform": "linux/amd64",
            })),
            ("GET", ["api"]) => ok(json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}],
            })),
            ("GET", ["apis"]) => ok(self.groups()),
            ("GET", ["api", "v1"]) => ok(self.core_resources()),
            ("GET", ["apis", "apps", "v1"]) => ok(resource_list(
                "apps/v1",
                &[
                    ("daemonsets", "DaemonSet", true, "ds"),
                    ("deployments", "Deployment", true, "deploy"),
                    ("replicasets", "ReplicaSet", true, "rs"),
                    ("statefulsets", "StatefulSet", true, "sts"),
                ],
            )),
            ("GET", ["apis", "policy", version]) if self.serves_policy(version) => {
                ok(resource_list(
                    &format!("policy/{version}"),
                    &[("poddisruptionbudgets", "PodDisruptionBudget", true, "pdb")],
                ))
            }
            ("GET", ["api", "v1", "nodes"]) => {
                let nodes: Vec<&Value> = self.nodes.values().collect();
                if table {
                    ok(node_table(&nodes))
                } else {
                    ok(json!({"kind": "NodeList", "apiVersion": "v1",
                              "metadata": {"resourceVersion": self.counter.to_string()},
                              "items": nodes.iter().map(|n| strip_type(n)).collect::<Vec<_>>()}))
                }
            }
            ("GET", ["api", "v1", "nodes", name]) => match self.nodes.get(*name) {
                Some(node) if table => ok(node_table(&[node])),
                Some(node) => ok(node.clone()),
                None => not_found("nodes", name),
            },
            ("PATCH", ["api", "v1", "nodes", name] | ["api", "v1", "nodes", name, "status"]) => {
                self.patch_node(name, request)
            }
            ("GET", ["api", "v1", "pods"]) => self.list_pods(None, request),
            ("GET", ["api", "v1", "namespaces", ns, "pods"]) => self.list_pods(Some(ns), request),
            ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
                match self.pods.get(&((*ns).into(), (*name).into())) {
                    Some(pod) => ok(pod.clone()),
                    None => not_found("pods", name),
                }
            }
            ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
                let key = ((*ns).to_owned(), (*name).to_owned());
                let grace = match request.query.get("gracePeriodSeconds") {
                    Some(s) => Duration::from_secs(s.parse().unwrap_or(30)).min(self.termination),
                    None => self.termination,
                };
                match self.pods.get(&key).cloned() {
                    Some(pod) => {
                        self.delete(&key, grace);
                        ok(self.pods.get(&key).cloned().unwrap_or(pod))
                    }
                    None => not_found("pods", name),
                }
            }
            ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
                self.evict(ns, name, &request.body)
            }
            ("POST", ["api", "v1", "namespaces", ns, "secrets"]) => {
                self.create_secret(ns, &request.body)
            }
            ("GET", ["api", "v1", "namespaces", ns, "secrets", name]) => {
                match self.secrets.get(&((*ns).into(), (*name).into())) {
                    Some(secret) => ok(secret.clone()),
                    None => not_found("secrets", name),
                }
            }
            ("GET", ["apis", "apps", "v1", "namespaces", ns, "daemonsets", name]) => {
                if self.daemonsets.contains(&((*ns).into(), (*name).into())) {
                    ok(json!({"kind": "DaemonSet", "apiVersion": "apps/v1",
                              "metadata": {"name": name, "namespace": ns, "uid": format!("owner-uid-{name}")},
                              "spec": {}, "status": {}}))
                } else {
                    not_found("daemonsets.apps", name)
                }
            }
            _ => not_found_path(),
        }
    }

    fn serves_policy(&self, version: &str) -> bool {
        version == "v1beta1" || (version == "v1" && self.policy_v1)
    }

    fn groups(&self) -> Value {
        let gv =
            |group: &str, v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
        let policy_versions: Vec<Value> = if self.policy_v1 {
            vec![gv("policy", "v1"), gv("policy", "v1beta1")]
        } else {
            vec![gv("policy", "v1beta1")]
        };
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [gv("apps", "v1")], "preferredVersion": gv("apps", "v1")},
            {"name": "policy", "versions": policy_versions.clone(), "preferredVersion": policy_versions[0]},
        ]})
    }

    fn core_resources(&self) -> Value {
        let mut list = resource_list(
            "v1",
            &[
                ("namespaces", "Namespace", false, "ns"),
                ("nodes", "Node", false, "no"),
                ("pods", "Pod", true, "po"),
                ("secrets", "Secret", true, ""),
            ],
        );
        let version = if self.policy_v1 { "v1" } else { "v1beta1" };
        if let Some(resources) = list["resources"].as_array_mut() {
            resources.push(
                json!({"name": "pods/eviction", "singularName": "", "namespaced": true,
                                  "group": "policy", "version": version, "kind": "Eviction",
                                  "verbs": ["create"]}),
            );
        }
        list
    }

    fn patch_node(&mut self, name: &str, request: &Request) -> Response {
        let content_type = request.header("content-type");
        let content_type = content_type.split(';').next().unwrap_or("").trim();
        if !matches!(
            content_type,
            "application/strategic-merge-patch+json" | "application/merge-patch+json"
        ) {
            return status(
                415,
                "UnsupportedMediaType",
                &format!("the fake API server does not apply {content_type:?} patches"),
                Value::Null,
            );
        }
        let patch: Value = match serde_json::from_slice(&request.body) {
            Ok(p) => p,
            Err(e) => return status(400, "BadRequest", &e.to_string(), Value::Null),
        };
        let counter = self.next();
        let Some(node) = self.nodes.get_mut(name) else {
            return not_found("nodes", name);
        };
        merge(node, &patch);
        let unschedulable = &node["spec"]["unschedulable"];
        if !(unschedulable.is_null() || unschedulable.is_boolean()) {
            return status(
                422,
                "Invalid",
                "spec.unschedulable: must be a boolean",
                Value::Null,
            );
        }
        node["metadata"]["resourceVersion"] = json!(counter.to_string());
        ok(node.clone())
    }

    fn list_pods(&self, namespace: Option<&str>, request: &Request) -> Response {
        let mut fields = Vec::new();
        for requirement in request
            .query
            .get("fieldSelector")
            .map_or("", String::as_str)
            .split(',')
            .filter(|r| !r.is_empty())
        {
            let (key, value) = match requirement
                .split_once("==")
                .or_else(|| requirement.split_once('='))
            {
                Some((k, v)) if !k.ends_with('!') => (k, v),
                _ => {
                    return status(
                        400,
                        "BadRequest",
                        &format!("field selector {requirement:?}: only = is supported by the fake"),
                        Value::Null,
                    );
                }
            };
            let pointer = match key {
                "spec.nodeName" => "/spec/nodeName",
                "metadata.name" => "/metadata/name",
                "metadata.namespace" => "/metadata/namespace",
                "status.phase" => "/status/phase",
                _ => {
                    return status(
                        400,
                        "BadRequest",
                        &format!(
                            "\"{key}\" is not a known field selector: only \"spec.nodeName\", \"metadata.name\", \"metadata.namespace\", \"status.phase\""
                        ),
                        Value::Null,
                    );
                }
            };
            fields.push((pointer, value));
        }
        let mut labels = BTreeMap::new();
        for requirement in request
            .query
            .get("labelSelector")
            .map_or("", String::as_str)
            .split(',')
            .filter(|r| !r.is_empty())
        {
            match requirement.split_once('=') {
                Some((k, v)) => labels.insert(k.to_owned(), v.trim_start_matches('=').to_owned()),
                None => {
                    return status(
                        400,
                        "BadRequest",
                        "only k=v label selectors are supported by the fake",
                        Value::Null,
                    );
                }
            };
        }
        let items: Vec<Value> = self
            .pods
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
            .filter(|(_, p)| {
                fields
                    .iter()
                    .all(|(ptr, v)| p.pointer(ptr).and_then(Value::as_str) == Some(*v))
            })
            .filter(|(_, p)| labels_match(&labels, &p["metadata"]["labels"]))
            .map(|(_, p)| strip_type(p))
            .collect();
        ok(json!({"kind": "PodList", "apiVersion": "v1",
                  "metadata": {"resourceVersion": self.counter.to_string()}, "items": items}))
    }

    /// The Eviction subresource, as the API server's eviction REST handler decides.
    fn evict(&mut self, ns: &str, name: &str, body: &[u8]) -> Response {
        let eviction: Value = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => return status(400, "BadRequest", &e.to_string(), Value::Null),
        };
        let api_version = eviction["apiVersion"].as_str().unwrap_or("").to_owned();
        let pod = PodKey {
            namespace: ns.into(),
            name: name.into(),
        };
        let response = self.decide_eviction(ns, name, &api_version, &eviction);
        self.evictions.push(EvictionRecord {
            pod,
            api_version,
            code: response.code,
        });
        response
    }

    fn decide_eviction(
        &mut self,
        ns: &str,
        name: &str,
        api_version: &str,
        eviction: &Value,
    ) -> Response {
        match api_version.strip_prefix("policy/") {
            Some(v) if self.serves_policy(v) => {}
            // A server that does not know the version answers as for an unknown resource.
            _ => return not_found_path(),
        }
        if eviction["kind"] != json!("Eviction") {
            return status(
                400,
                "BadRequest",
                "the body is not an Eviction",
                Value::Null,
            );
        }
        if eviction["metadata"]["name"].as_str() != Some(name) {
            return status(
                400,
                "BadRequest",
                "name in URL does not match name in Eviction object",
                Value::Null,
            );
        }
        let key = (ns.to_owned(), name.to_owned());
        let Some(pod) = self.pods.get(&key) else {
            return not_found("pods", name);
        };
        let created = Response {
            code: 201,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        };
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return created;
        }
        // Pods that are not running need no budget.
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        if !matches!(phase, "Succeeded" | "Failed" | "Pending") {
            let labels = &pod["metadata"]["labels"];
            let budgets: Vec<&Pdb> = self
                .pdbs
                .iter()
                .filter(|b| b.namespace == ns && labels_match(&b.selector, labels))
                .collect();
            if budgets.len() > 1 {
                return status(
                    500,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    Value::Null,
                );
            }
            if let Some(budget) = budgets.first() {
                let healthy = self.healthy(budget);
                let desired = match (budget.min_available, budget.max_unavailable) {
                    (Some(min), _) => min,
                    (None, Some(max)) => budget.expected.saturating_sub(max),
                    (None, None) => 0,
                };
                if healthy <= desired {
                    return status(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        json!({"causes": [{"reason": "DisruptionBudget", "message": format!(
                            "The disruption budget {} needs {desired} healthy pods and has {healthy} currently",
                            budget.name)}]}),
                    );
                }
            }
        }
        let grace = self.termination;
        self.delete(&key, grace);
        created
    }

    /// The budget's pods that are running, ready and not being deleted.
    fn healthy(&self, budget: &Pdb) -> u32 {
        let count = self
            .pods
            .iter()
            .filter(|((ns, _), p)| {
                *ns == budget.namespace
                    && labels_match(&budget.selector, &p["metadata"]["labels"])
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["phase"] == json!("Running")
                    && p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
                    })
            })
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// A list item as the API sends it: without its own kind and apiVersion.
fn strip_type(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    object
}

fn resource_list(group_version: &str, resources: &[(&str, &str, bool, &str)]) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(name, kind, namespaced, short)| {
            let mut resource = json!({"name": name, "singularName": "", "namespaced": namespaced,
                   "kind": kind, "verbs": ["create", "delete", "get", "list", "patch"]});
            if !short.is_empty() {
                resource["shortNames"] = json!([short]);
            }
            resource
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// The Table kubectl asks for and prints as `kubectl get nodes`.
fn node_table(nodes: &[&Value]) -> Value {
    let column = |name: &str, format: &str| json!({"name": name, "type": "string", "format": format, "description": name, "priority": 0});
    let rows: Vec<Value> = nodes
        .iter()
        .map(|node| {
            let ready = node["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == json!("Ready")))
                .is_some_and(|c| c["status"] == json!("True"));
            let mut status = if ready { "Ready" } else { "NotReady" }.to_owned();
            if node["spec"]["unschedulable"] == json!(true) {
                status.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<&str> = node["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            if roles.is_empty() {
                roles.push("<none>");
            }
            json!({
                "cells": [node["metadata"]["name"], status, roles.join(","), "5m",
                          node["status"]["nodeInfo"]["kubeletVersion"]],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": node["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
        "columnDefinitions": [column("Name", "name"), column("Status", ""), column("Roles", ""),
                              column("Age", ""), column("Version", "")],
        "rows": rows,
    })
}
