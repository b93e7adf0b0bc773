//! A node's NoCloud seed: a small FAT disk labelled CIDATA with `meta-data`, `user-data` (a
//! cloud-config that writes the kubeadm documents), `network-config` (version 2, the node's
//! static address) and the kubeadm documents themselves as `kubeadm.yaml`, which Slipway's own
//! first-boot code reads. The first control-plane node of a cluster gets Init + Cluster +
//! Kubelet configuration, other control-plane nodes a Join with the certificate key, workers a
//! Join with bootstrap-token discovery pinned to the CA. The seed holds the cluster's secrets:
//! every file of it is written 0600.
//!
//! Two small files beside them tell linux-node's first boot what else to do:
//! - `kubernetes`: the version the node is to run (`v1.33.2`): the Kubernetes of the image it
//!   boots when slipwayd knows it, else the cluster's configured one. On a state disk that
//!   already holds a cluster at another version, first boot upgrades the node to it
//!   (`kubeadm upgrade apply` on the initialiser, `kubeadm upgrade node` elsewhere).
//! - `cni` (the initialiser's seed only): the pod network it applies after `kubeadm init`
//!   (`flannel` or `none`, from host.toml).
//!
//! A Windows worker's seed (`os = "windows"`) has the same files, written for cloudbase-init and
//! windows-node's first boot: see [`windows`] for exactly what each holds.

pub mod kubeadm;
pub mod windows;

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::{Cluster, Cni, HostConfig, Node, NodeOs, Role};
use crate::pki::ClusterPki;
use kubeadm::{
    ApiEndpoint, BootstrapToken, BootstrapTokenDiscovery, CgroupDriver, ClusterConfiguration,
    Discovery, Document, InitConfiguration, JoinConfiguration, JoinControlPlane,
    KubeletConfiguration, Networking, NodeRegistrationOptions,
};

/// containerd's CRI socket, as linux-node runs it.
const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
/// Where a Linux node's user-data writes the kubeadm documents.
const KUBEADM_PATH: &str = "/etc/kubernetes/slipway/kubeadm.yaml";
/// The API server port nodes advertise.
const API_PORT: u16 = 6443;
/// Size of the seed disk.
const SEED_SIZE: u64 = 2 << 20;

/// Errors making a seed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool failed.
    #[error("{tool} failed while making the seed {path}: {stderr}")]
    RunTool {
        /// The program.
        tool: &'static str,
        /// The seed image.
        path: std::path::PathBuf,
        /// What it said.
        stderr: String,
    },
    /// Files.
    #[error("cannot write the seed {path}")]
    WriteSeed {
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A node's seed, rendered.
pub struct Seed {
    /// `meta-data`.
    pub meta_data: String,
    /// `network-config`.
    pub network_config: String,
    /// `user-data` (holds secrets).
    pub user_data: Zeroizing<String>,
    /// The kubeadm documents (hold secrets).
    pub kubeadm_yaml: Zeroizing<String>,
    /// sha256 of `kubeadm_yaml`, hex: what the node's beacon must echo.
    pub kubeadm_sha256: String,
    /// The node's MAC address (the network-config matches on it).
    pub mac: String,
    /// Control-plane nodes: the cluster's CA files, `pki/...` on the seed.
    pub pki_files: Vec<crate::pki::PkiFile>,
    /// The Kubernetes version the node is to run, `vX.Y.Z`: the seed's `kubernetes` file.
    pub kubernetes: String,
    /// The initialiser only: the pod network it applies after init, the seed's `cni` file.
    pub cni: Option<Cni>,
}

/// The MAC address of `node` in `cluster`: QEMU's 52:54:00 prefix and three derived bytes.
pub fn mac_address(cluster: &str, node: &str) -> String {
    let digest = Sha256::digest(format!("{cluster}/{node}").as_bytes());
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

/// The kubeadm documents for `node`: Init + Cluster + Kubelet configurations when it is the
/// node that initialises its cluster (`init`: the one its cluster's record names, see
/// [`crate::records`]), a JoinConfiguration for its role otherwise. `kubernetes` (`1.33.2`): the
/// version the node's image carries; a cluster it initialises is made at that version. A
/// Windows node's documents differ only in the CRI endpoint (containerd's named pipe): a
/// worker's join sets nothing else that is Linux's alone (the cgroup driver is in the
/// initialiser's KubeletConfiguration, which a Windows node never gets).
pub fn documents(
    cluster: &Cluster,
    node: &Node,
    pki: &ClusterPki,
    init: bool,
    kubernetes: &str,
) -> Vec<Document> {
    let registration = NodeRegistrationOptions {
        name: Some(node.name.clone()),
        cri_socket: Some(cri_socket(node.os).into()),
        // The kubelet registers the node's pool address, not whichever interface it picks.
        kubelet_extra_args: vec![kubeadm::Arg::new("node-ip", node.address.to_string())],
        ..NodeRegistrationOptions::default()
    };
    let endpoint = ApiEndpoint {
        advertise_address: Some(node.address.to_string()),
        bind_port: Some(API_PORT),
    };
    if init {
        return vec![
            Document::Init(InitConfiguration {
                bootstrap_tokens: vec![BootstrapToken {
                    token: pki.bootstrap_token.expose().to_owned(),
                    description: Some(format!("Slipway: nodes of cluster {}", cluster.name)),
                    ttl: Some("24h0m0s".into()),
                    usages: vec!["signing".into(), "authentication".into()],
                    groups: Vec::new(),
                }],
                node_registration: Some(registration),
                local_api_endpoint: Some(endpoint),
                // Every control-plane seed carries the shared keys: nothing to upload.
                certificate_key: None,
                skip_phases: Vec::new(),
                timeouts: None,
            }),
            Document::Cluster(ClusterConfiguration {
                etcd: None,
                networking: Some(Networking {
                    service_subnet: Some(cluster.service_cidr.to_string()),
                    pod_subnet: Some(cluster.pod_cidr.to_string()),
                    dns_domain: None,
                }),
                kubernetes_version: Some(format!("v{kubernetes}")),
                control_plane_endpoint: Some(cluster.control_plane_endpoint.clone()),
                api_server: None,
                controller_manager: None,
                scheduler: None,
                certificates_dir: Some("/etc/kubernetes/pki".into()),
                image_repository: None,
                cluster_name: Some(cluster.name.clone()),
            }),
            Document::Kubelet(KubeletConfiguration {
                rotate_certificates: Some(true),
                server_tls_bootstrap: None,
                cluster_domain: None,
                cluster_dns: Vec::new(),
                cgroup_driver: Some(CgroupDriver::Systemd),
                fail_swap_on: None,
                container_runtime_endpoint: Some(CRI_SOCKET.into()),
            }),
        ];
    }
    let control_plane = (node.role == Role::ControlPlane).then_some(JoinControlPlane {
        local_api_endpoint: Some(endpoint),
        // Its seed carries the shared keys (the kubeadm-certs Secret that `--upload-certs`
        // makes is deleted after 2 h: a control plane joining later would need a new one).
        certificate_key: None,
    });
    vec![Document::Join(JoinConfiguration {
        node_registration: Some(registration),
        ca_cert_path: None,
        discovery: Discovery {
            bootstrap_token: Some(BootstrapTokenDiscovery {
                token: pki.bootstrap_token.expose().to_owned(),
                api_server_endpoint: Some(cluster.control_plane_endpoint.clone()),
                ca_cert_hashes: vec![pki.ca_cert_hash.clone()],
                unsafe_skip_ca_verification: None,
            }),
            tls_bootstrap_token: None,
        },
        control_plane,
        skip_phases: Vec::new(),
        timeouts: None,
    })]
}

/// containerd's CRI endpoint on a node running `os`.
fn cri_socket(os: NodeOs) -> &'static str {
    match os {
        NodeOs::Linux => CRI_SOCKET,
        NodeOs::Windows => windows::CRI_SOCKET,
    }
}

/// The seed of `node` (which initialises its cluster when `init`), with its cluster's PKI (made
/// on first use) from the state directory.
pub fn for_node(config: &HostConfig, node: &Node, init: bool) -> anyhow::Result<Seed> {
    for_node_on(config, node, init, None)
}

/// [`for_node`] booting an image whose manifest says it carries Kubernetes `image_kubernetes`
/// (`1.33.2`; None: it names none, the cluster's configured version is the target).
pub fn for_node_on(
    config: &HostConfig,
    node: &Node,
    init: bool,
    image_kubernetes: Option<&str>,
) -> anyhow::Result<Seed> {
    let pki_dir = config
        .state_dir
        .join("clusters")
        .join(&node.cluster)
        .join("pki");
    let pki = crate::pki::ensure(&pki_dir, &node.cluster)?;
    Ok(render(config, node, &pki, init, image_kubernetes)?)
}

/// Where the seed disk of the VM whose run directory is `dir` lives: `DIR/seed.img` (see
/// [`crate::records::run_dir`]).
pub fn image_path(dir: &Path) -> std::path::PathBuf {
    dir.join("seed.img")
}

/// Renders the seed of `node` (which initialises its cluster when `init`), booting an image
/// that carries Kubernetes `image_kubernetes` (None: the cluster's configured version).
pub fn render(
    config: &HostConfig,
    node: &Node,
    pki: &ClusterPki,
    init: bool,
    image_kubernetes: Option<&str>,
) -> Result<Seed, crate::pki::Error> {
    let cluster = &config.clusters[&node.cluster];
    let kubernetes = image_kubernetes.unwrap_or(&cluster.kubernetes);
    let kubeadm_yaml = Zeroizing::new(kubeadm::to_yaml_documents(&documents(
        cluster, node, pki, init, kubernetes,
    )));
    let kubeadm_sha256: String = Sha256::digest(kubeadm_yaml.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mac = mac_address(&cluster.name, &node.name);
    let meta_data = format!(
        "instance-id: {}-{}\nlocal-hostname: {}\n",
        node.name,
        &kubeadm_sha256[..12],
        node.name
    );
    // One network-config for both: cloud-init's version 2, which linux-node's cloud-init and
    // windows-node's first-boot agent both read (the agent renames nothing: `set-name` is
    // Linux's).
    let network_config = format!(
        "version: 2\nethernets:\n  node:\n    match:\n      macaddress: \"{mac}\"\n    set-name: eth0\n    \
         addresses:\n      - {}/{}\n    routes:\n      - to: default\n        via: {}\n",
        node.address, cluster.network.prefix, cluster.gateway
    );
    let mut user_data = match node.os {
        NodeOs::Linux => Zeroizing::new(format!(
            "#cloud-config\nwrite_files:\n  - path: {KUBEADM_PATH}\n    permissions: \"0600\"\n    content: |\n",
        )),
        NodeOs::Windows => Zeroizing::new(windows::user_data_head()),
    };
    for line in kubeadm_yaml.lines() {
        user_data.push_str("      ");
        user_data.push_str(line);
        user_data.push('\n');
    }
    let pki_files = if node.role == Role::ControlPlane {
        pki.control_plane_files()?
    } else {
        Vec::new()
    };
    for crate::pki::PkiFile { name, bytes, mode } in &pki_files {
        use base64::Engine;
        let encoded =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()));
        user_data.push_str(&format!(
            "  - path: /etc/kubernetes/pki/{name}\n    permissions: \"{mode:04o}\"\n    \
             encoding: b64\n    content: {}\n",
            encoded.as_str()
        ));
    }
    Ok(Seed {
        meta_data,
        network_config,
        user_data,
        kubeadm_yaml,
        kubeadm_sha256,
        mac,
        pki_files,
        kubernetes: format!("v{kubernetes}"),
        cni: init.then_some(cluster.cni),
    })
}

/// Writes `seed` as a FAT disk labelled CIDATA at `path` (mode 0600), atomically.
pub fn write_image(seed: &Seed, path: &Path) -> Result<(), Error> {
    let fail = |source| Error::WriteSeed {
        path: path.to_owned(),
        source,
    };
    let dir = tempfile::tempdir_in(path.parent().unwrap_or(Path::new("."))).map_err(fail)?;
    let image = dir.path().join("seed.img");
    let kubernetes = format!("{}\n", seed.kubernetes);
    let cni = seed.cni.map(|c| format!("{c}\n"));
    let mut files = vec![
        ("meta-data", seed.meta_data.as_str()),
        ("network-config", seed.network_config.as_str()),
        ("user-data", seed.user_data.as_str()),
        ("kubeadm.yaml", seed.kubeadm_yaml.as_str()),
        ("kubernetes", kubernetes.as_str()),
    ];
    if let Some(cni) = &cni {
        files.push(("cni", cni.as_str()));
    }
    for &(name, text) in &files {
        images::atomic::write(&dir.path().join(name), text.as_bytes(), 0o600).map_err(fail)?;
    }
    std::fs::create_dir_all(dir.path().join("pki/etcd")).map_err(fail)?;
    for crate::pki::PkiFile { name, bytes, .. } in &seed.pki_files {
        images::atomic::write(&dir.path().join("pki").join(name), bytes, 0o600).map_err(fail)?;
    }
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        // The seed holds the cluster's keys. Windows has no mode bits: the file inherits the
        // ACL of the state directory, which the operator restricts.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&image).map_err(fail)?;
        file.set_len(SEED_SIZE).map_err(fail)?;
    }
    let run = |tool: &'static str, args: &[&str]| -> Result<(), Error> {
        let output = Command::new(tool)
            .args(args)
            .env("SOURCE_DATE_EPOCH", "315532800")
            .output()
            .map_err(fail)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::RunTool {
                tool,
                path: path.to_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    };
    let image_str = image.to_string_lossy().into_owned();
    run("mkfs.vfat", &["-n", "CIDATA", "--invariant", &image_str])?;
    for &(name, _) in &files {
        let source = dir.path().join(name).to_string_lossy().into_owned();
        run("mcopy", &["-i", &image_str, &source, &format!("::/{name}")])?;
    }
    if !seed.pki_files.is_empty() {
        run("mmd", &["-i", &image_str, "::/pki", "::/pki/etcd"])?;
        for crate::pki::PkiFile { name, .. } in &seed.pki_files {
            let source = dir
                .path()
                .join("pki")
                .join(name)
                .to_string_lossy()
                .into_owned();
            run(
                "mcopy",
                &["-i", &image_str, &source, &format!("::/pki/{name}")],
            )?;
        }
    }
    images::atomic::publish(&image, path).map_err(fail)
}

#[cfg(test)]
mod cni_tests;
#[cfg(test)]
mod tests;
