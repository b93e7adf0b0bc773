//! The kubeadm types against golden YAML: what Slipway writes, and every field of every type.

use super::*;

const TOKEN: &str = "abcdef.0123456789abcdef";
const CONTAINERD: &str = "unix:///run/containerd/containerd.sock";

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

fn parse(yaml: &str) -> Result<Vec<Document>, serde_saphyr::Error> {
    serde_saphyr::from_multiple(yaml)
}

/// What Slipway writes for the first control-plane node.
fn control_plane_init() -> Vec<Document> {
    let init = InitConfiguration {
        bootstrap_tokens: vec![BootstrapToken {
            token: TOKEN.to_owned(),
            description: some("slipway join token"),
            ttl: some("24h0m0s"),
            usages: vec!["signing".to_owned(), "authentication".to_owned()],
            groups: vec!["system:bootstrappers:kubeadm:default-node-token".to_owned()],
        }],
        node_registration: Some(NodeRegistrationOptions {
            name: some("cp-0"),
            cri_socket: some(CONTAINERD),
            kubelet_extra_args: vec![Arg::new("node-ip", "10.0.0.10")],
            image_pull_policy: Some(ImagePullPolicy::Never),
            ..Default::default()
        }),
        local_api_endpoint: Some(ApiEndpoint {
            advertise_address: some("10.0.0.10"),
            bind_port: Some(6443),
        }),
        timeouts: Some(Timeouts {
            control_plane_component_health_check: some("4m0s"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let etcd = LocalEtcd {
        data_dir: "/var/lib/etcd".to_owned(),
        extra_args: vec![],
    };
    let cluster = ClusterConfiguration {
        etcd: Some(Etcd { local: Some(etcd) }),
        networking: Some(Networking {
            service_subnet: some("10.96.0.0/12"),
            pod_subnet: some("10.244.0.0/16"),
            dns_domain: None,
        }),
        kubernetes_version: some("v1.31.2"),
        control_plane_endpoint: some("10.0.0.10:6443"),
        api_server: Some(ApiServer {
            extra_args: vec![],
            cert_sans: vec!["10.0.0.10".to_owned(), "cp-0".to_owned()],
        }),
        cluster_name: some("lab"),
        ..Default::default()
    };
    let kubelet = KubeletConfiguration {
        cgroup_driver: Some(CgroupDriver::Systemd),
        container_runtime_endpoint: some(CONTAINERD),
        ..Default::default()
    };
    vec![
        Document::Init(init),
        Document::Cluster(cluster),
        Document::Kubelet(kubelet),
    ]
}

/// What Slipway writes for a worker.
fn worker_join() -> Document {
    Document::Join(JoinConfiguration {
        node_registration: Some(NodeRegistrationOptions {
            name: some("worker-0"),
            taints: Some(vec![]),
            ..Default::default()
        }),
        ca_cert_path: None,
        discovery: Discovery {
            bootstrap_token: Some(BootstrapTokenDiscovery {
                token: TOKEN.to_owned(),
                api_server_endpoint: some("10.0.0.10:6443"),
                ca_cert_hashes: vec![ca_cert_hash(b"")],
                unsafe_skip_ca_verification: None,
            }),
            tls_bootstrap_token: None,
        },
        control_plane: None,
        skip_phases: vec![],
        timeouts: None,
    })
}

#[test]
fn control_plane_init_matches_golden() {
    let expected = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
  description: slipway join token
  ttl: 24h0m0s
  usages:
  - signing
  - authentication
  groups:
  - system:bootstrappers:kubeadm:default-node-token
nodeRegistration:
  name: cp-0
  criSocket: unix:///run/containerd/containerd.sock
  kubeletExtraArgs:
  - name: node-ip
    value: \"10.0.0.10\"
  imagePullPolicy: Never
localAPIEndpoint:
  advertiseAddress: \"10.0.0.10\"
  bindPort: 6443
timeouts:
  controlPlaneComponentHealthCheck: 4m0s
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
etcd:
  local:
    dataDir: /var/lib/etcd
networking:
  serviceSubnet: 10.96.0.0/12
  podSubnet: 10.244.0.0/16
kubernetesVersion: v1.31.2
controlPlaneEndpoint: 10.0.0.10:6443
apiServer:
  certSANs:
  - \"10.0.0.10\"
  - cp-0
clusterName: lab
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
";
    assert_eq!(to_yaml_documents(&control_plane_init()), expected);
}

#[test]
fn worker_join_matches_golden() {
    // `taints: []` is kept: it is how a node opts out of kubeadm's default taint.
    let expected = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration:
  name: worker-0
  taints: []
discovery:
  bootstrapToken:
    token: abcdef.0123456789abcdef
    apiServerEndpoint: 10.0.0.10:6443
    caCertHashes:
    - sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
";
    assert_eq!(to_yaml_documents(&[worker_join()]), expected);
}

/// Every field of every type set, in exactly the form we emit, with strings that plain YAML
/// would read as numbers, booleans or null (so they must come out quoted).
const EVERY_FIELD: &str = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
  description: |-
    it's: \"quoted\"
    and two lines
  ttl: 0s
  usages:
  - signing
  groups:
  - system:nodes
nodeRegistration:
  name: \"1.30\"
  criSocket: unix:///run/containerd/containerd.sock
  taints:
  - key: a/b
    value: \"null\"
    effect: NoExecute
  - key: c
    effect: PreferNoSchedule
  - key: d
    effect: NoSchedule
  kubeletExtraArgs:
  - name: flag
    value: \"true\"
  ignorePreflightErrors:
  - Swap
  imagePullPolicy: IfNotPresent
localAPIEndpoint:
  advertiseAddress: \"::1\"
  bindPort: 65535
certificateKey: \"0123456789\"
skipPhases:
- addon/kube-proxy
timeouts:
  controlPlaneComponentHealthCheck: 1m
  kubeletHealthCheck: 2m
  kubernetesAPICall: 3m
  etcdAPICall: 4m
  tlsBootstrap: 5m
  discovery: 6m
  upgradeManifests: 7m
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
etcd:
  local:
    dataDir: /state/etcd
    extraArgs:
    - name: empty
      value: \"\"
networking:
  serviceSubnet: 10.96.0.0/12
  podSubnet: fd00::/48
  dnsDomain: cluster.local
kubernetesVersion: \"1.31\"
controlPlaneEndpoint: cp.lab:6443
apiServer:
  extraArgs:
  - name: v
    value: \"5\"
  certSANs:
  - \"yes\"
controllerManager:
  extraArgs:
  - name: a
    value: b
scheduler:
  extraArgs:
  - name: c
    value: d
certificatesDir: /etc/kubernetes/pki
imageRepository: registry.lab:5000
clusterName: \"~\"
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration:
  imagePullPolicy: Always
caCertPath: /etc/kubernetes/pki/ca.crt
discovery:
  bootstrapToken:
    token: abcdef.0123456789abcdef
    apiServerEndpoint: cp.lab:6443
    caCertHashes:
    - sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881
    unsafeSkipCAVerification: false
  tlsBootstrapToken: abcdef.0123456789abcdef
controlPlane:
  localAPIEndpoint:
    bindPort: 1
  certificateKey: ff
skipPhases:
- preflight
timeouts:
  discovery: 6m
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
rotateCertificates: true
serverTLSBootstrap: true
clusterDomain: cluster.local
clusterDNS:
- \"10.96.0.10\"
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
";

#[test]
fn every_field_round_trips_to_the_same_text() {
    let docs = parse(EVERY_FIELD).expect("fixture parses");
    let yaml = to_yaml_documents(&docs);
    assert_eq!(yaml, EVERY_FIELD);
    assert_eq!(parse(&yaml).expect("our output parses"), docs);
}

#[test]
fn built_documents_round_trip() {
    let mut docs = control_plane_init();
    docs.push(worker_join());
    let yaml = to_yaml_documents(&docs);
    assert_eq!(parse(&yaml).expect("our output parses"), docs, "{yaml}");
}

/// kubeadm's documented join example (v1beta4 `doc.go`), with our values: its keys, with
/// their irregular capitals, must be the ones we read.
#[test]
fn reads_kubeadm_documented_shape() {
    let yaml = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: some-address:6443
    token: abcdef.0123456789abcdef
    unsafeSkipCAVerification: true
  tlsBootstrapToken: abcdef.0123456789abcdef
";
    let docs = parse(yaml).expect("documented shape parses");
    let [Document::Join(join)] = docs.as_slice() else {
        panic!("expected one JoinConfiguration: {docs:?}")
    };
    let discovery = join
        .discovery
        .bootstrap_token
        .as_ref()
        .expect("token discovery");
    assert_eq!(discovery.unsafe_skip_ca_verification, Some(true));
}

#[test]
fn unknown_fields_are_refused() {
    let cases = [
        // Nested, the typical typo.
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  nam: a\n",
        // Top level.
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ndryRun: true\n",
        // A v1beta3 field that v1beta4 moved to `timeouts.discovery`.
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  timeout: 5m\n",
        // A kubelet field outside our subset.
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 10\n",
    ];
    for yaml in cases {
        let err = parse(yaml).expect_err(yaml);
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}

#[test]
fn wrong_or_missing_type_meta_is_refused() {
    let cases = [
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n",
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: KubeletConfiguration\n",
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ResetConfiguration\n",
        "apiVersion: kubeadm.k8s.io/v1beta4\n",
        "kind: InitConfiguration\n",
    ];
    for yaml in cases {
        assert!(parse(yaml).is_err(), "accepted:\n{yaml}");
    }
}

#[test]
fn empty_options_are_not_emitted() {
    let docs = [
        Document::Init(InitConfiguration::default()),
        Document::Cluster(ClusterConfiguration::default()),
        Document::Kubelet(KubeletConfiguration::default()),
        Document::Init(InitConfiguration {
            node_registration: Some(NodeRegistrationOptions::default()),
            ..Default::default()
        }),
    ];
    let expected = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration: {}
";
    assert_eq!(to_yaml_documents(&docs), expected);
    assert_eq!(to_yaml_documents(&[]), "");
}

#[test]
fn ca_cert_hash_matches_openssl() {
    // The DER SubjectPublicKeyInfo of a throwaway P-256 key, made with
    //   openssl ecparam -name prime256v1 -genkey -noout | openssl ec -pubout -outform der
    // and the expected pin from OpenSSL 3.0 with
    //   printf '<the hex below>' | xxd -r -p | openssl dgst -sha256 -hex
    // which is the pipeline kubeadm's docs run on `openssl x509 -pubkey` of ca.crt.
    let spki_hex = "3059301306072a8648ce3d020106082a8648ce3d0301070342000440c138c0e41cbc3dceaa\
                        6916f97eadd865f509bf10d95d17702ac0f716cc3dc93d37d5c2c3981b0515fd209b68a12d\
                        35a58810269feb3f7293c2049a2db494eb";
    let spki: Vec<u8> = (0..spki_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&spki_hex[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(spki.len(), 91);
    assert_eq!(
        ca_cert_hash(&spki),
        "sha256:c80815a94c03ccceabc711bc31b6ad361c1bd752a999a6e2f5ba8808d8098e3e"
    );
    // `printf '' | openssl dgst -sha256 -hex`: the well-known digest of no bytes.
    assert_eq!(
        ca_cert_hash(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}
