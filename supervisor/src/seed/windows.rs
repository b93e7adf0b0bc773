//! The seed of a Windows worker (`os = "windows"` in host.toml): the same CIDATA FAT disk as a
//! Linux node's, written for cloudbase-init's NoCloud service and for windows-node's first-boot
//! agent. Every file is UTF-8 with `\n` line ends, at the root of the volume (label `CIDATA`, a
//! FAT filesystem on the whole disk, no partition table), and nothing else is on it:
//!
//! - `meta-data` (YAML mapping): `instance-id: NAME-DIGEST12` (the node's name and the first 12
//!   hex digits of the kubeadm digest; a new seed is a new instance) and `local-hostname: NAME`,
//!   the Kubernetes node name (`NAME` or `NAME-gN` for a surge's replacement; up to 63
//!   characters, so the script must not rely on the 15-character NetBIOS name).
//! - `network-config` (YAML, cloud-init network config **version 1**): one `physical` entry
//!   named `Ethernet` whose `mac_address` (`52:54:00:xx:xx:xx`, lower case) is the NIC to
//!   configure, with one `static` subnet: `address` as `A.B.C.D/PREFIX` and `gateway` (the
//!   default route). No DNS servers, as on Linux nodes. Version 1 and not the Linux seed's
//!   version 2: cloudbase-init's documentation names only v1 (and the Debian `interfaces`
//!   form) for NoCloud, and a v2 parser it shipped reads `nameservers` unguarded and fails on
//!   an interface without it.
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
//! No `cni` file and no `pki/` directory: a Windows node is never its cluster's initialiser nor a
//! control plane (host.toml refuses it).

use std::net::Ipv4Addr;

/// containerd's CRI endpoint on Windows (its default named pipe).
pub const CRI_SOCKET: &str = "npipe:////./pipe/containerd-containerd";

/// Where the seed's user-data has cloudbase-init write the kubeadm documents.
pub const KUBEADM_PATH: &str = r"C:\ProgramData\Slipway\kubeadm.yaml";

/// The name the network-config gives the node's adapter (Windows' own name for the first one).
const ADAPTER: &str = "Ethernet";

/// `network-config`, version 1: the NIC with `mac` gets `address/prefix` and a default route
/// through `gateway`.
pub fn network_config(mac: &str, address: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> String {
    format!(
        "version: 1\nconfig:\n  - type: physical\n    name: {ADAPTER}\n    mac_address: \"{mac}\"\n    \
         subnets:\n      - type: static\n        address: {address}/{prefix}\n        gateway: {gateway}\n"
    )
}

/// The head of `user-data`, up to the kubeadm documents' block (which follows indented by six
/// spaces). The path is single-quoted: its backslashes are then plain characters to YAML.
pub fn user_data_head() -> String {
    format!(
        "#cloud-config\nwrite_files:\n  - path: '{KUBEADM_PATH}'\n    permissions: \"0600\"\n    content: |\n"
    )
}
