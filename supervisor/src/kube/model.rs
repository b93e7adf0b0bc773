//! The few fields of Kubernetes objects slipwayd reads (core/v1 Node, Pod, meta/v1 Status),
//! each defaulted, so an object with more fields, or without optional ones, decodes.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The annotation the kubelet puts on the API's copy of a static pod (a mirror pod).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// meta/v1 ObjectMeta (what is read of it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Unique id: a pod recreated under the same name has another.
    pub uid: String,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Owners.
    pub owner_references: Vec<OwnerReference>,
    /// Set once the object is being deleted.
    pub deletion_timestamp: Option<String>,
}

/// meta/v1 OwnerReference.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OwnerReference {
    /// Kind of the owner (`ReplicaSet`, `DaemonSet`, ...).
    pub kind: String,
    /// Name of the owner.
    pub name: String,
    /// Whether this owner is the managing controller.
    pub controller: Option<bool>,
}

/// core/v1 Node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Node {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: NodeSpec,
    /// Status.
    pub status: NodeStatus,
}

/// core/v1 NodeSpec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NodeSpec {
    /// Cordoned: no new pods are scheduled on it.
    pub unschedulable: bool,
}

/// core/v1 NodeStatus.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    /// Conditions (`Ready`, `MemoryPressure`, ...).
    pub conditions: Vec<Condition>,
}

/// A node or pod condition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Condition {
    /// `Ready`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Node {
    /// The Ready condition: `Some(true)` when its status is `True`, `Some(false)` when `False`
    /// or `Unknown` (the node controller's word for a kubelet that stopped reporting), `None`
    /// when the node has no Ready condition yet.
    pub fn ready(&self) -> Option<bool> {
        self.status
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .map(|c| c.status == "True")
    }
}

/// core/v1 Pod.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Pod {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: PodSpec,
    /// Status.
    pub status: PodStatus,
}

/// core/v1 PodSpec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    /// The node it is bound to.
    pub node_name: String,
    /// Volumes.
    pub volumes: Vec<Volume>,
}

/// core/v1 Volume: only whether it is an emptyDir matters here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Present for an emptyDir volume (its content is lost with the pod).
    pub empty_dir: Option<serde_json::Value>,
}

/// core/v1 PodStatus.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: String,
}

impl Pod {
    /// The managing controller (the owner reference with `controller: true`).
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.metadata
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
    }

    /// Whether the pod has finished (`Succeeded` or `Failed`): such a pod can always go.
    pub fn finished(&self) -> bool {
        matches!(self.status.phase.as_str(), "Succeeded" | "Failed")
    }

    /// Whether the pod is the API's copy of a static pod (it cannot be deleted through the
    /// API: the kubelet runs it from a file).
    pub fn is_mirror(&self) -> bool {
        self.metadata
            .annotations
            .contains_key(MIRROR_POD_ANNOTATION)
    }

    /// Whether the pod has an emptyDir volume.
    pub fn has_empty_dir(&self) -> bool {
        self.spec.volumes.iter().any(|v| v.empty_dir.is_some())
    }

    /// `namespace/name`.
    pub fn key(&self) -> PodRef {
        PodRef {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }
}

/// A pod's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// core/v1 NodeList.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeList {
    /// The nodes.
    pub items: Vec<Node>,
}

/// core/v1 PodList.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodList {
    /// The pods.
    pub items: Vec<Pod>,
    /// List metadata (`continue` token for chunked lists).
    pub metadata: ListMeta,
}

/// meta/v1 ListMeta.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListMeta {
    /// Token for the next chunk; empty on the last one.
    #[serde(rename = "continue")]
    pub continue_token: String,
}

/// meta/v1 Status: what the API server answers on errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    /// `NotFound`, `TooManyRequests`, ...
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// Which object, when the error is about one.
    pub details: Option<StatusDetails>,
}

/// meta/v1 StatusDetails.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StatusDetails {
    /// The object's name.
    pub name: String,
    /// The object's kind (the resource, `pods`, for NotFound).
    pub kind: String,
    /// Causes (a PodDisruptionBudget refusal names the budget here).
    pub causes: Vec<StatusCause>,
}

/// meta/v1 StatusCause.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StatusCause {
    /// Machine-readable reason (`DisruptionBudget`).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// meta/v1 APIResourceList (discovery), for the Eviction subresource's version.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiResourceList {
    /// The resources.
    pub resources: Vec<ApiResource>,
}

/// meta/v1 APIResource.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiResource {
    /// `pods`, `pods/eviction`, ...
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Group of a subresource's kind (`policy` for `pods/eviction`).
    pub group: String,
    /// Version of a subresource's kind (`v1` or `v1beta1` for `pods/eviction`).
    pub version: String,
}
