//! kubeadm configuration documents (API group `kubeadm.k8s.io/v1beta4`) plus the small part of
//! `KubeletConfiguration` (`kubelet.config.k8s.io/v1beta1`) that a Slipway node needs.
//!
//! The types are transcribed from kubeadm's `cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go`
//! (and `apis/bootstraptoken/v1`, `k8s.io/api/core/v1` for `Taint`, `k8s.io/kubelet/config/v1beta1`)
//! but cover only the fields Slipway emits. Invariants:
//! - Every struct refuses unknown fields when parsed, so a typo in a hand-edited seed, or a field
//!   from another API version, is an error instead of being silently dropped.
//! - Nothing unset is emitted: kubeadm applies its own defaults to absent fields, and we want
//!   those defaults, not Go zero values spelled out by us.
//! - `apiVersion` and `kind` belong to [`Document`], never to the bodies, so a body cannot be
//!   emitted under the wrong kind.
//!
//! Durations are kept as Go duration strings ("24h0m0s", "4m"), as kubeadm's `metav1.Duration`
//! reads them.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// `apiVersion` of the kubeadm documents.
pub const KUBEADM_API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// `apiVersion` of the kubelet configuration document.
pub const KUBELET_API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";

const INIT_KIND: &str = "InitConfiguration";
const CLUSTER_KIND: &str = "ClusterConfiguration";
const JOIN_KIND: &str = "JoinConfiguration";
const KUBELET_KIND: &str = "KubeletConfiguration";

/// The prefix kubeadm puts in front of a discovery CA pin (`pubkeypin.formatSHA256`).
const CA_CERT_HASH_PREFIX: &str = "sha256:";

/// One document of a kubeadm `--config` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// `kind: InitConfiguration`: node-local settings for `kubeadm init`.
    Init(InitConfiguration),
    /// `kind: ClusterConfiguration`: cluster-wide settings.
    Cluster(ClusterConfiguration),
    /// `kind: JoinConfiguration`: node-local settings for `kubeadm join`.
    Join(JoinConfiguration),
    /// `kind: KubeletConfiguration`: kubelet settings shared by every node.
    Kubelet(KubeletConfiguration),
}

impl Document {
    /// The `apiVersion` this document is written with.
    pub fn api_version(&self) -> &'static str {
        match self {
            Self::Init(_) | Self::Cluster(_) | Self::Join(_) => KUBEADM_API_VERSION,
            Self::Kubelet(_) => KUBELET_API_VERSION,
        }
    }

    /// The `kind` this document is written with.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Init(_) => INIT_KIND,
            Self::Cluster(_) => CLUSTER_KIND,
            Self::Join(_) => JOIN_KIND,
            Self::Kubelet(_) => KUBELET_KIND,
        }
    }
}

/// A body written after its `apiVersion` and `kind` (kubeadm's inline `TypeMeta`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Typed<'a, T> {
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

impl Serialize for Document {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn typed<S: Serializer, T: Serialize>(
            doc: &Document,
            body: &T,
            ser: S,
        ) -> Result<S::Ok, S::Error> {
            let (api_version, kind) = (doc.api_version(), doc.kind());
            Typed {
                api_version,
                kind,
                body,
            }
            .serialize(ser)
        }
        match self {
            Self::Init(body) => typed(self, body, serializer),
            Self::Cluster(body) => typed(self, body, serializer),
            Self::Join(body) => typed(self, body, serializer),
            Self::Kubelet(body) => typed(self, body, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Document {
    /// Reads `apiVersion` and `kind`, then the rest strictly as that kind's body.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde_json::{Map, Value};

        fn take_string<E: serde::de::Error>(
            fields: &mut Map<String, Value>,
            key: &'static str,
        ) -> Result<String, E> {
            match fields.remove(key) {
                Some(Value::String(text)) => Ok(text),
                Some(other) => Err(E::custom(format!(
                    "`{key}` must be a string, found {other}"
                ))),
                None => Err(E::missing_field(key)),
            }
        }

        fn body<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            kind: &str,
            fields: Map<String, Value>,
        ) -> Result<T, E> {
            serde_json::from_value(Value::Object(fields))
                .map_err(|err| E::custom(format!("{kind}: {err}")))
        }

        // Buffering the document lets the bodies keep their derived strict parsing, to which
        // `apiVersion` and `kind` would be unknown fields. The price: errors carry no line number.
        let mut fields = Map::deserialize(deserializer)?;
        let api_version = take_string(&mut fields, "apiVersion")?;
        let kind = take_string(&mut fields, "kind")?;
        match (api_version.as_str(), kind.as_str()) {
            (KUBEADM_API_VERSION, INIT_KIND) => body(&kind, fields).map(Self::Init),
            (KUBEADM_API_VERSION, CLUSTER_KIND) => body(&kind, fields).map(Self::Cluster),
            (KUBEADM_API_VERSION, JOIN_KIND) => body(&kind, fields).map(Self::Join),
            (KUBELET_API_VERSION, KUBELET_KIND) => body(&kind, fields).map(Self::Kubelet),
            _ => Err(D::Error::custom(format!(
                "unsupported document `apiVersion: {api_version}` `kind: {kind}`; expected \
                 Init/Cluster/JoinConfiguration of {KUBEADM_API_VERSION} or \
                 KubeletConfiguration of {KUBELET_API_VERSION}"
            ))),
        }
    }
}

/// Renders documents as one multi-document YAML stream, separated by `---`, as
/// `kubeadm init --config` and `kubeadm join --config` read it.
#[expect(
    clippy::expect_used,
    reason = "serde-saphyr fails only on custom Serialize errors, tags/anchors, bad options or a \
              failing writer; these types are plain derived structs written to a String with \
              default options, so no input can reach the error"
)]
pub fn to_yaml_documents(docs: &[Document]) -> String {
    serde_saphyr::to_string_multiple(docs).expect("kubeadm documents always serialise to YAML")
}

/// kubeadm's discovery pin for a CA: `sha256:` and the lower-case hex SHA-256 of the CA
/// certificate's DER `SubjectPublicKeyInfo` (as kubeadm's `pubkeypin.Hash`). Goes into
/// [`BootstrapTokenDiscovery::ca_cert_hashes`].
pub fn ca_cert_hash(spki_der: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(spki_der);
    let mut out = String::with_capacity(CA_CERT_HASH_PREFIX.len() + digest.len() * 2);
    out.push_str(CA_CERT_HASH_PREFIX);
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// Settings for `kubeadm init` that apply to this node only and are not stored in the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    /// Bootstrap tokens to create; joining nodes authenticate with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_tokens: Vec<BootstrapToken>,
    /// How this node registers itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_registration: Option<NodeRegistrationOptions>,
    /// Where this node's own API server advertises and listens.
    #[serde(
        rename = "localAPIEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub local_api_endpoint: Option<ApiEndpoint>,
    /// Hex AES-256 key that encrypts the control-plane certificates uploaded for joining
    /// control-plane nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_key: Option<String>,
    /// `kubeadm init` phases to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_phases: Vec<String>,
    /// Time limits for the steps of `kubeadm init`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

/// Cluster-wide settings, stored by kubeadm in the `kubeadm-config` ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    /// etcd settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,
    /// Service and pod networks, DNS domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    /// Control-plane version, e.g. `v1.31.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Stable address (IP or DNS name, optional port) of the control plane as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<String>,
    /// kube-apiserver settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServer>,
    /// kube-controller-manager settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<ControlPlaneComponent>,
    /// kube-scheduler settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ControlPlaneComponent>,
    /// Directory holding the cluster PKI (kubeadm's default `/etc/kubernetes/pki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates_dir: Option<String>,
    /// Registry the control-plane images are pulled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
    /// Name of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

/// Settings for `kubeadm join` on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinConfiguration {
    /// How this node registers itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_registration: Option<NodeRegistrationOptions>,
    /// Where the cluster CA certificate is written (kubeadm's default `/etc/kubernetes/pki/ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<String>,
    /// How the node finds and authenticates the cluster. Required.
    pub discovery: Discovery,
    /// Present when the node joins as an additional control-plane node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<JoinControlPlane>,
    /// `kubeadm join` phases to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_phases: Vec<String>,
    /// Time limits for the steps of `kubeadm join`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

/// The part of the kubelet's configuration Slipway sets; kubeadm applies it to every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletConfiguration {
    /// Rotate the kubelet's client certificate through the certificates API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_certificates: Option<bool>,
    /// Request the kubelet's serving certificate from the certificates API instead of
    /// self-signing it (the CSRs then need an approver).
    #[serde(
        rename = "serverTLSBootstrap",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub server_tls_bootstrap: Option<bool>,
    /// DNS search domain of the cluster, e.g. `cluster.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,
    /// Cluster DNS server addresses given to pods.
    #[serde(rename = "clusterDNS", default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
    /// cgroup driver; must match the container runtime's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_driver: Option<CgroupDriver>,
    /// Refuse to start when swap is on (the kubelet defaults to true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_swap_on: Option<bool>,
    /// CRI endpoint, e.g. `unix:///run/containerd/containerd.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_runtime_endpoint: Option<String>,
}

/// kubelet cgroup drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// `systemd`: cgroups managed through systemd (what kubeadm recommends).
    Systemd,
    /// `cgroupfs`: the kubelet writes cgroupfs directly.
    Cgroupfs,
}

/// A bootstrap token that `kubeadm init` creates (kubeadm's `bootstraptoken/v1` type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapToken {
    /// The token, `[a-z0-9]{6}.[a-z0-9]{16}`. Slipway always sets it: every node's config is
    /// generated before boot, so kubeadm may not pick one at random.
    pub token: String,
    /// Why the token exists, for other administrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Lifetime as a Go duration, e.g. `24h0m0s` (kubeadm's default is 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// What the token may be used for, e.g. `signing`, `authentication`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<String>,
    /// Extra groups the token authenticates as.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// How a node registers with the cluster, for both init and join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistrationOptions {
    /// Node object name (kubeadm defaults to the host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CRI socket, e.g. `unix:///run/containerd/containerd.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_socket: Option<String>,
    /// Taints to register with. Unlike other lists, absent and empty differ: `None` lets kubeadm
    /// put its control-plane taint on control-plane nodes, `Some(vec![])` (written `taints: []`)
    /// registers the node with no taints at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
    /// Extra kubelet flags (names without leading dashes); duplicates are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubelet_extra_args: Vec<Arg>,
    /// Preflight checks whose errors are ignored, e.g. `Swap`; `all` ignores every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_preflight_errors: Vec<String>,
    /// When kubeadm pulls images during init and join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
}

/// A node taint (`k8s.io/api/core/v1` `Taint`, without the controller-set `timeAdded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Taint key, e.g. `node-role.kubernetes.io/control-plane`.
    pub key: String,
    /// Optional taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What the taint does to pods that do not tolerate it.
    pub effect: TaintEffect,
}

/// The effect of a [`Taint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    /// Untolerating pods are not scheduled on the node.
    NoSchedule,
    /// The scheduler avoids the node for untolerating pods where it can.
    PreferNoSchedule,
    /// Untolerating pods are not scheduled and running ones are evicted.
    NoExecute,
}

/// Image pull policy for the images kubeadm itself pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImagePullPolicy {
    /// Always pull.
    Always,
    /// Pull only images not already present (kubeadm's default).
    IfNotPresent,
    /// Never pull; images must be preloaded (as in a Slipway image).
    Never,
}

/// One command-line flag for a component: v1beta4 lists flags as name/value pairs (earlier
/// versions used a map), so order is kept and a flag may repeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arg {
    /// Flag name without leading dashes, e.g. `node-ip`.
    pub name: String,
    /// Flag value.
    pub value: String,
}

impl Arg {
    /// A flag `--name=value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Address and port an API server instance advertises (kubeadm's `APIEndpoint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiEndpoint {
    /// IP address to advertise (kubeadm otherwise uses the default route's interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<String>,
    /// Secure port (kubeadm's default 6443). kubeadm's type is int32; u16 keeps it a valid port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_port: Option<u16>,
}

/// Time limits for kubeadm steps, each a Go duration string such as `4m0s`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Wait for a control-plane component (e.g. the API server) to be healthy (default 4m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_component_health_check: Option<String>,
    /// Wait for the kubelet to be healthy (default 4m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_health_check: Option<String>,
    /// Limit for one request to the API server (default 1m).
    #[serde(
        rename = "kubernetesAPICall",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes_api_call: Option<String>,
    /// Limit for one request to etcd (default 2m).
    #[serde(
        rename = "etcdAPICall",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub etcd_api_call: Option<String>,
    /// Wait for a joining kubelet's TLS bootstrap (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_bootstrap: Option<String>,
    /// Wait for a joining node to validate the API server's identity (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<String>,
    /// Limit for upgrading the static Pod manifests (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_manifests: Option<String>,
}

/// The cluster's network layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    /// Service CIDR (kubeadm's default `10.96.0.0/12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_subnet: Option<String>,
    /// Pod CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_subnet: Option<String>,
    /// Service DNS domain (kubeadm's default `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
}

/// kube-apiserver settings (kubeadm's `APIServer`, whose component fields are inlined).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    /// Extra kube-apiserver flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<Arg>,
    /// Extra subject alternative names for the API server's serving certificate.
    #[serde(rename = "certSANs", default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
}

/// Settings shared by the controller manager and the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneComponent {
    /// Extra flags for the component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<Arg>,
}

/// etcd settings; Slipway only runs kubeadm's stacked (local) etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    /// The etcd member kubeadm runs as a static Pod on each control-plane node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalEtcd>,
}

/// A kubeadm-managed etcd member on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalEtcd {
    /// etcd data directory; required by kubeadm's type (its default is `/var/lib/etcd`). On a
    /// Slipway node it must live on the state disk so it survives an image swap.
    pub data_dir: String,
    /// Extra etcd flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<Arg>,
}

/// How a joining node finds the cluster and checks it is the right one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    /// Token-based discovery (the only kind Slipway uses; kubeadm's file discovery is left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<BootstrapTokenDiscovery>,
    /// Token for the kubelet's TLS bootstrap; kubeadm defaults it to the discovery token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_bootstrap_token: Option<String>,
}

/// Token-based discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenDiscovery {
    /// Token that validates the cluster information fetched from the control plane.
    pub token: String,
    /// API server address (`host:port`) to fetch the cluster information from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_endpoint: Option<String>,
    /// Accepted CA pins, each as [`ca_cert_hash`] makes them. Leaving this empty disables
    /// pinning, which kubeadm only allows with `unsafe_skip_ca_verification`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_cert_hashes: Vec<String>,
    /// Join without checking the CA against a pin. Slipway knows its CA up front and should
    /// never need this.
    #[serde(
        rename = "unsafeSkipCAVerification",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unsafe_skip_ca_verification: Option<bool>,
}

/// Settings for a node joining as an additional control-plane node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinControlPlane {
    /// Where this node's API server advertises and listens.
    #[serde(
        rename = "localAPIEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub local_api_endpoint: Option<ApiEndpoint>,
    /// Key that decrypts the control-plane certificates uploaded by `kubeadm init`
    /// ([`InitConfiguration::certificate_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_key: Option<String>,
}

#[cfg(test)]
mod tests;
