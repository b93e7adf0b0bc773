//! `[[nodes]]`: the node VMs of `host.toml`, each given its address from its cluster's pool in
//! the order the tables are written.
//!
//! `os` (`"linux"`, the default, or `"windows"`) names the image family a node boots. Windows
//! nodes are workers only: kubeadm's control plane (etcd, the API server and the other static
//! pods) runs on Linux alone, so a `role = "control-plane"` node with `os = "windows"` is refused
//! at its `role`, and a Windows node needs `[source] windows-channel` (the channel its images
//! come from: a channel names one image, of one OS).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::{Cluster, Error, Validator};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the control plane (the first one initialises the cluster).
    ControlPlane,
    /// Runs workloads.
    Worker,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        })
    }
}

/// The operating system a node runs: which image family it boots and how its seed is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeOs {
    /// A Linux node (linux-node images); what a node without `os` runs.
    #[default]
    Linux,
    /// A Windows Server worker (windows-node images).
    Windows,
}

impl NodeOs {
    /// The name host.toml and the image manifest's `os` spell it with: `linux`, `windows`.
    pub fn name(self) -> &'static str {
        match self {
            NodeOs::Linux => "linux",
            NodeOs::Windows => "windows",
        }
    }
}

/// The longest name a Windows node may have: Windows' computer names (NetBIOS) hold 15
/// characters, and the first-boot agent names the computer after its node.
pub const WINDOWS_NAME_MAX: usize = 15;

impl fmt::Display for NodeOs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A node VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Name (a DNS label; the VM's and the Kubernetes node's name).
    pub name: String,
    /// Its cluster.
    pub cluster: String,
    /// Its role.
    pub role: Role,
    /// Its operating system (`os`, default Linux).
    pub os: NodeOs,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// State disk size in bytes.
    pub state_disk: u64,
    /// Its address on the cluster's network.
    pub address: std::net::Ipv4Addr,
}

/// A `[[nodes]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    name: Spanned<String>,
    cluster: Spanned<String>,
    role: Spanned<Role>,
    os: Option<Spanned<NodeOs>>,
    #[serde(default = "two")]
    cpus: Spanned<u32>,
    memory: Spanned<String>,
    state_disk: Spanned<String>,
}

fn two() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}

impl Validator<'_> {
    /// The nodes by name, each with the next free address of its cluster's pool, and the names
    /// of the clusters that have a control-plane node on this host.
    pub(super) fn nodes(
        &self,
        raw: Vec<Spanned<Raw>>,
        clusters: &BTreeMap<String, Cluster>,
        qemu: bool,
        windows_channel: bool,
    ) -> Result<(BTreeMap<String, Node>, BTreeSet<String>), Error> {
        let mut nodes = BTreeMap::new();
        let mut next: BTreeMap<String, u32> = BTreeMap::new();
        let mut control_planes: BTreeSet<String> = BTreeSet::new();
        for spanned in raw {
            let span = spanned.span();
            let n = spanned.into_inner();
            let name = self.label(&n.name, "node name")?;
            let cluster = clusters.get(n.cluster.get_ref()).ok_or_else(|| {
                self.error(
                    &n.cluster.span(),
                    format!(
                        "node {name} names cluster {:?}, which [[clusters]] does not declare",
                        n.cluster.get_ref()
                    ),
                )
            })?;
            if nodes.contains_key(&name) {
                return Err(self.error(&span, format!("node {name} is declared twice")));
            }
            let role = *n.role.get_ref();
            let os = n.os.as_ref().map_or(NodeOs::Linux, |os| *os.get_ref());
            if os == NodeOs::Windows && role == Role::ControlPlane {
                return Err(self.error(
                    &n.role.span(),
                    format!(
                        "node {name}: Windows nodes can only be workers (the Kubernetes control \
                         plane runs on Linux only): set role = \"worker\", or drop os = \"windows\" \
                         to make it a Linux control plane"
                    ),
                ));
            }
            if os == NodeOs::Windows && qemu {
                let at = n.os.as_ref().map_or(span.clone(), Spanned::span);
                return Err(self.error(
                    &at,
                    format!(
                        "node {name}: Windows nodes run on Hyper-V hosts ([hypervisor] kind = \
                         \"hyperv\"); the QEMU driver boots Linux node images only (it pulls \
                         os = \"linux\" images and reads their beacon on a virtio-serial port)"
                    ),
                ));
            }
            if os == NodeOs::Windows && !windows_channel {
                let at = n.os.as_ref().map_or(span.clone(), Spanned::span);
                return Err(self.error(
                    &at,
                    format!(
                        "node {name} has os = \"windows\" but [source] names no windows-channel: \
                         add windows-channel = \"NAME\" to [source], the channel of its Windows \
                         images (channel is the Linux nodes')"
                    ),
                ));
            }
            // The agent names the computer after its node: Windows' computer names (NetBIOS)
            // hold 15 characters.
            if os == NodeOs::Windows && name.bytes().all(|b| b.is_ascii_digit()) {
                return Err(self.error(
                    &span,
                    format!("node {name}: a Windows node's name is its computer name, which cannot be all digits"),
                ));
            }
            if os == NodeOs::Windows && name.len() > WINDOWS_NAME_MAX {
                return Err(self.error(
                    &span,
                    format!(
                        "node {name}: a Windows node's name is its computer name, at most {WINDOWS_NAME_MAX} characters ({} here): choose a shorter one",
                        name.len()
                    ),
                ));
            }
            let cpus = *n.cpus.get_ref();
            if !(1..=256).contains(&cpus) {
                return Err(self.error(&n.cpus.span(), format!("cpus {cpus}: expected 1 to 256")));
            }
            let index = next.entry(cluster.name.clone()).or_insert(0);
            let address = cluster.pool.nth(*index).ok_or_else(|| {
                self.error(
                    &span,
                    format!(
                        "cluster {}'s pool {} has no address left for node {name}",
                        cluster.name, cluster.pool
                    ),
                )
            })?;
            *index += 1;
            if role == Role::ControlPlane {
                control_planes.insert(cluster.name.clone());
            }
            nodes.insert(
                name.clone(),
                Node {
                    name,
                    cluster: cluster.name.clone(),
                    role,
                    os,
                    cpus,
                    memory: self.size(&n.memory, "memory", 256 << 20)?,
                    state_disk: self.size(&n.state_disk, "state-disk", 64 << 20)?,
                    address,
                },
            );
        }
        Ok((nodes, control_planes))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::HostConfig;

    const EXAMPLE: &str = include_str!("../../examples/host.toml");

    fn parse(text: &str) -> Result<HostConfig, Error> {
        HostConfig::parse(Path::new("host.toml"), text)
    }

    /// `file:line:column` of the first `at` in `text`, as the config errors print it.
    fn located(text: &str, at: &str) -> String {
        let offset = text.find(at).unwrap();
        let line = text[..offset].matches('\n').count() + 1;
        let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("host.toml:{line}:{column}: ")
    }

    #[test]
    fn a_node_without_os_is_linux_and_os_is_read_as_written() {
        let config = parse(EXAMPLE).unwrap();
        assert!(config.nodes.values().all(|n| n.os == NodeOs::Linux));
        let text = EXAMPLE.replacen(
            "name = \"worker-2\"\ncluster = \"lab\"\nrole = \"worker\"\n",
            "name = \"worker-2\"\ncluster = \"lab\"\nrole = \"worker\"\nos = \"windows\"\n",
            1,
        );
        assert_ne!(text, EXAMPLE);
        // Under QEMU a Windows node is refused at its os.
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with(&located(&text, "\"windows\"\n"))
                && message.contains("Windows nodes run on Hyper-V hosts"),
            "{message}"
        );
        let text = with_windows_channel(&hyperv(&text));
        let config = parse(&text).unwrap();
        assert_eq!(config.nodes["worker-2"].os, NodeOs::Windows);
        assert_eq!(config.nodes["worker-1"].os, NodeOs::Linux);
        // The address plan does not depend on the OS.
        assert_eq!(
            config.nodes["worker-2"].address,
            std::net::Ipv4Addr::new(10, 44, 0, 12)
        );
        let explicit = EXAMPLE.replacen(
            "role = \"worker\"\n",
            "role = \"worker\"\nos = \"linux\"\n",
            1,
        );
        assert_eq!(parse(&explicit).unwrap(), parse(EXAMPLE).unwrap());
        assert_eq!(NodeOs::Windows.name(), "windows");
        assert_eq!(NodeOs::Linux.to_string(), "linux");
    }

    /// `text` with a Hyper-V host's `[hypervisor]`.
    fn hyperv(text: &str) -> String {
        let qemu = "kind = \"qemu\"\naccel = \"auto\"";
        let user = text.lines().find(|l| l.starts_with("user = ")).unwrap();
        let out = text
            .replacen(
                qemu,
                "kind = \"hyperv\"\nswitch = \"Slipway\"\nroot = 'D:\\Slipway'\n\
                 executor = { ssh = \"slipway@hv-01\" }",
                1,
            )
            .replacen(&format!("{user}\n"), "", 1);
        assert!(out.contains("kind = \"hyperv\"") && !out.contains(user));
        out
    }

    /// `text` whose `[source]` names `windows-channel = "stable-windows"`.
    fn with_windows_channel(text: &str) -> String {
        let out = text.replacen(
            "channel = \"stable\"\n",
            "channel = \"stable\"\nwindows-channel = \"stable-windows\"\n",
            1,
        );
        assert_ne!(out, text);
        out
    }

    #[test]
    fn a_windows_node_needs_a_windows_channel_of_its_own_on_a_hyperv_host() {
        let windows = hyperv(&EXAMPLE.replacen(
            "name = \"worker-2\"\ncluster = \"lab\"\nrole = \"worker\"\n",
            "name = \"worker-2\"\ncluster = \"lab\"\nrole = \"worker\"\nos = \"windows\"\n",
            1,
        ));
        // Without one: refused at the node's os, saying what to add.
        let message = parse(&windows).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}node worker-2 has os = \"windows\" but [source] names no windows-channel: add \
                 windows-channel = \"NAME\" to [source], the channel of its Windows images \
                 (channel is the Linux nodes')",
                located(&windows, "\"windows\"\n")
            )
        );
        // With one: each OS's channel as written; a host without it follows one channel.
        let config = parse(&with_windows_channel(&windows)).unwrap();
        assert_eq!(config.source.channel, "stable");
        assert_eq!(
            config.source.windows_channel.as_deref(),
            Some("stable-windows")
        );
        assert_eq!(parse(EXAMPLE).unwrap().source.windows_channel, None);
        // A Windows node's name is its computer name: 15 characters at most.
        let long = with_windows_channel(&windows).replace("worker-2", "windows-worker-2");
        let message = parse(&long).unwrap_err().to_string();
        assert!(
            message.contains("node windows-worker-2: a Windows node's name is its computer name, at most 15 characters (16 here)"),
            "{message}"
        );
        assert!(
            parse(&with_windows_channel(&windows).replace("worker-2", "windows-worker2")).is_ok()
        );
        let digits = with_windows_channel(&windows).replace("worker-2", "1234");
        let message = parse(&digits).unwrap_err().to_string();
        assert!(
            message.contains(
                "node 1234: a Windows node's name is its computer name, which cannot be all digits"
            ),
            "{message}"
        );
        // A Hyper-V host may follow a Windows channel before it has a Windows node.
        assert!(parse(&with_windows_channel(&hyperv(EXAMPLE))).is_ok());
        // Refused: a bad name, the Linux channel's own name, and a QEMU host (no Windows node
        // runs there), each at the value.
        for (value, says) in [
            (
                "\"stable windows\"",
                "windows-channel \"stable windows\": letters, digits",
            ),
            ("\"stable\"", "windows-channel \"stable\" is also channel"),
        ] {
            let bad = windows.replacen(
                "channel = \"stable\"\n",
                &format!("channel = \"stable\"\nwindows-channel = {value}\n"),
                1,
            );
            let message = parse(&bad).unwrap_err().to_string();
            let at = located(&bad, &format!("{value}\nkeys"));
            assert!(
                message.starts_with(&at) && message.contains(says),
                "{message}"
            );
        }
        let qemu = with_windows_channel(EXAMPLE);
        let message = parse(&qemu).unwrap_err().to_string();
        assert!(
            message.starts_with(&located(&qemu, "\"stable-windows\""))
                && message.contains("Windows nodes run on Hyper-V hosts only"),
            "{message}"
        );
    }

    #[test]
    fn a_windows_control_plane_is_refused_at_its_role() {
        let text = hyperv(EXAMPLE);
        let text = text.replacen(
            "role = \"control-plane\"\n",
            "role = \"control-plane\"\nos = \"windows\"\n",
            1,
        );
        assert_ne!(text, EXAMPLE);
        assert_ne!(text, hyperv(EXAMPLE));
        let message = parse(&text).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}node cp-1: Windows nodes can only be workers (the Kubernetes control plane \
                 runs on Linux only): set role = \"worker\", or drop os = \"windows\" to make it \
                 a Linux control plane",
                located(&text, "\"control-plane\"\nos")
            )
        );
        // A Linux control plane, written out, is taken.
        let linux = EXAMPLE.replacen(
            "role = \"control-plane\"\n",
            "role = \"control-plane\"\nos = \"linux\"\n",
            1,
        );
        assert!(parse(&linux).is_ok());
    }

    #[test]
    fn an_unknown_os_is_refused_at_its_value() {
        let text = EXAMPLE.replacen(
            "role = \"worker\"\n",
            "role = \"worker\"\nos = \"macos\"\n",
            1,
        );
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with(&located(&text, "\"macos\"")),
            "{message}"
        );
        assert!(
            message.contains("unknown variant `macos`, expected `linux` or `windows`"),
            "{message}"
        );
    }

    #[test]
    fn a_hyperv_host_reads_its_switch_root_executor_and_each_clusters_vlan() {
        let net = "pool = \"10.44.0.10-10.44.0.50\" }";
        let text =
            hyperv(EXAMPLE).replacen(net, "pool = \"10.44.0.10-10.44.0.50\", vlan = 42 }", 1);
        let config = parse(&text).unwrap();
        let crate::config::Hypervisor::HyperV(host) = &config.hypervisor else {
            panic!("{:?}", config.hypervisor)
        };
        assert_eq!(
            (host.switch.as_str(), host.root.as_str()),
            ("Slipway", "D:\\Slipway")
        );
        assert!(matches!(
            &host.executor,
            crate::config::hyperv::Executor::Ssh(ssh) if ssh.target == "slipway@hv-01"
        ));
        let cluster = config.clusters.values().next().unwrap();
        assert_eq!(cluster.link, crate::config::Link::HyperV { vlan: Some(42) });

        // Each refusal names its key.
        for (from, to, says) in [
            (
                "vlan = 42 }",
                "uplink = \"eth1\" }",
                "uplink, vxlan and host-address apply to QEMU hosts",
            ),
            (
                "vlan = 42 }",
                "vlan = 4095 }",
                "vlan 4095: expected a VLAN id from 1 to 4094",
            ),
            (
                "switch = \"Slipway\"\n",
                "",
                "kind = \"hyperv\" needs switch",
            ),
            (
                "{ ssh = \"slipway@hv-01\" }",
                "\"local\"",
                "this slipwayd is not a Windows build",
            ),
            (
                "{ ssh = \"slipway@hv-01\" }",
                "{ ssh = \"-oProxyCommand=x\" }",
                "expected user@host",
            ),
            (
                "root = 'D:\\Slipway'",
                "root = 'Slipway'",
                "drive-absolute Windows path",
            ),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text, "{from}");
            let message = parse(&bad).unwrap_err().to_string();
            assert!(message.contains(says), "{message}");
        }
        // And Hyper-V's keys on a QEMU host.
        let qemu = EXAMPLE.replacen(
            "kind = \"qemu\"",
            "kind = \"qemu\"\nswitch = \"Slipway\"",
            1,
        );
        let message = parse(&qemu).unwrap_err().to_string();
        assert!(
            message.contains("apply to kind = \"hyperv\" only"),
            "{message}"
        );
    }
}
