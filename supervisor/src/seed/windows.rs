//! The seed of a Windows worker (`os = "windows"` in host.toml): the same CIDATA FAT disk as a
//! Linux node's, read by windows-node's first-boot agent (laid out as cloudbase-init's NoCloud
//! source expects, though windows-node ships no cloudbase-init). Every file is UTF-8 with `\n`
//! line ends, at the root of the volume (label `CIDATA`, a FAT filesystem on the whole disk, no
//! partition table); besides them there are only the empty `pki/etcd/` directories every seed
//! has:
//!
//! - `meta-data` (YAML mapping): `instance-id: NAME-DIGEST12` (the node's name and the first 12
//!   hex digits of the kubeadm digest; a new seed is a new instance) and `local-hostname: NAME`,
//!   the Kubernetes node name (`NAME` or `NAME-gN` for a surge's replacement; up to 63
//!   characters, so the script must not rely on the 15-character NetBIOS name).
//! - `network-config`: the Linux seed's, cloud-init network config version 2: one ethernet
//!   (`node`) matched by `macaddress` (`52:54:00:xx:xx:xx`, lower case), one address
//!   `A.B.C.D/PREFIX`, a default route (`to: default`, `via` the gateway), no DNS servers.
//!   windows-node's first-boot agent parses exactly this (its `Read-NetworkConfig`). It is not
//!   cloudbase-init's documented NoCloud form (version 1), and windows-node ships no
//!   cloudbase-init: an image that did would need version 1 here.
//! - `user-data` (`#cloud-config`): one `write_files` entry that writes the kubeadm documents to
//!   `C:\ProgramData\Slipway\kubeadm.yaml` (`content` as a literal block, `permissions`
//!   `"0600"`). cloudbase-init's cloud-config supports `write_files` (`path`, `content`,
//!   `permissions`, `encoding` b64/gzip, `append`; `owner` is ignored), `set_timezone`,
//!   `set_hostname`, `ntp` and `runcmd`. On Windows `permissions` only sets or clears the
//!   read-only attribute: the file's ACL is inherited from `C:\ProgramData\Slipway`, which the
//!   image must create readable by SYSTEM and Administrators only. The agent may ignore
//!   user-data and read `kubeadm.yaml` below instead: both hold the same bytes.
//! - `kubeadm.yaml`: one kubeadm `v1beta4` `JoinConfiguration` (a worker's: bootstrap-token
//!   discovery pinned to the cluster CA, `nodeRegistration.name`, the kubelet's `node-ip`) whose
//!   `nodeRegistration.criSocket` is `npipe:////./pipe/containerd-containerd`. Its sha256, lower
//!   case hex, is the digest the node's beacon must echo (`kubeadm_sha256`, as on Linux). It
//!   holds the bootstrap token: a secret.
//! - `kubernetes`: the version the node is to run, `vX.Y.Z` and a newline.
//!
//! No `cni` file and nothing under `pki/`: a Windows node is never its cluster's initialiser
//! nor a control plane (host.toml refuses it).

/// containerd's CRI endpoint on Windows (its default named pipe).
pub const CRI_SOCKET: &str = "npipe:////./pipe/containerd-containerd";

/// Where the seed's user-data has cloudbase-init write the kubeadm documents.
pub const KUBEADM_PATH: &str = r"C:\ProgramData\Slipway\kubeadm.yaml";

/// The head of `user-data`, up to the kubeadm documents' block (which follows indented by six
/// spaces). The path is single-quoted: its backslashes are then plain characters to YAML.
pub fn user_data_head() -> String {
    format!(
        "#cloud-config\nwrite_files:\n  - path: '{KUBEADM_PATH}'\n    permissions: \"0600\"\n    content: |\n"
    )
}
