//! `host.toml`: what one host runs. Parsed strictly (unknown keys refused) and validated as a
//! whole, every error located as `file:line:column` with what was expected. Each node gets its
//! address from its cluster's static pool here, so the whole plan is known before anything boots.
//!
//! # A cluster's node network
//!
//! `network = { cidr, gateway, pool }` alone: the cluster lives on this host only. Its nodes plug
//! into a VDE switch of their own, and the host holds `gateway` on it.
//!
//! Spread over several hosts, a cluster's nodes share one L2 segment on a LAN the hosts share:
//! `network = { cidr, gateway, pool, uplink = "eth1", vlan = 101, host-address = "10.44.0.2" }`.
//! - `uplink`: this host's device on that LAN (a NIC, a bond), which slipwayd brings up.
//! - `vlan` (1 to 4094): the cluster's 802.1Q VLAN on it, tagged by a VLAN device on the uplink
//!   (`slwv` and a hash: never `UPLINK.VLAN`, which the host may use itself). The LAN's switch ports must trunk it. Or `vxlan` (1 to 16777215): a VXLAN
//!   network identifier, UDP port 4789, its broadcasts sent to multicast group 239.X.Y.Z (the
//!   three bytes of the identifier); the uplink must hold an address on the hosts' LAN, and
//!   the nodes lose 50 bytes of MTU to the encapsulation. Exactly one of the two.
//!   Every cluster gets its own segment, so clusters never see each other's frames: two clusters
//!   of one host.toml on the same uplink and VLAN, or the same VXLAN identifier, are refused.
//! - `host-address`: this host's own address on the cluster network, one per host, on a bridge
//!   that holds the segment and the node VMs' tap devices. Several hosts cannot all hold the
//!   gateway on one segment (every ARP question would get several answers), so `gateway` is
//!   the nodes' default route held by one party only: the host whose `host-address` equals it,
//!   or a router on the segment. The others hold addresses of their own.
//! - `pool`: the addresses this host gives its nodes. The hosts of one cluster each write the
//!   same `cidr`, `gateway` and segment, and pools that do not overlap: slipwayd sees one host
//!   and cannot check the others.

mod cni;
mod fleet;
pub mod hyperv;
mod kube;
mod net;
mod node;
mod rollout;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use cni::Cni;
pub use fleet::Fleet;
pub use hyperv::HyperVHost;
pub use kube::{Kube, OnDeadline};
pub use net::{Cidr, Pool};
pub use node::{Node, NodeOs, Role, WINDOWS_NAME_MAX};
#[cfg(test)]
pub use rollout::Window;
pub use rollout::{Rollout, Strategy};
pub use source::Source;

/// The host config format this build reads.
pub const FORMAT: u32 = 1;

/// The user node VMs run as when `[hypervisor] user` is not given (`scripts/setup` creates it).
pub const DEFAULT_VM_USER: &str = "slipway-vm";

/// A config error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read host config {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config is invalid.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// A validated host config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The host's name.
    pub name: String,
    /// Where slipwayd keeps images, disks, PKI and state.
    pub state_dir: PathBuf,
    /// Where images come from.
    pub source: Source,
    /// The hypervisor.
    pub hypervisor: Hypervisor,
    /// `[hypervisor] user`: the unprivileged user QEMU runs as (default [`DEFAULT_VM_USER`]).
    pub vm_user: String,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// Node VMs by name, each with its address.
    pub nodes: BTreeMap<String, Node>,
    /// `[fleet]`: where the hosts sharing a cluster keep their lock slots.
    pub fleet: Fleet,
}

/// The hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hypervisor {
    /// QEMU with this acceleration.
    Qemu(Accel),
    /// Hyper-V (Windows hosts), driven through PowerShell plans.
    HyperV(HyperVHost),
}

/// QEMU acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when a probe shows it works, TCG otherwise.
    Auto,
    /// KVM only.
    Kvm,
    /// TCG only.
    Tcg,
}

/// A cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Name.
    pub name: String,
    /// Kubernetes version.
    pub kubernetes: String,
    /// `address:port` of the API server.
    pub control_plane_endpoint: String,
    /// Pod network.
    pub pod_cidr: Cidr,
    /// Pod network add-on its first control plane applies (`cni`, default flannel).
    pub cni: Cni,
    /// Service network.
    pub service_cidr: Cidr,
    /// The node network.
    pub network: Cidr,
    /// Its gateway (the host side).
    pub gateway: std::net::Ipv4Addr,
    /// Addresses nodes get, in order.
    pub pool: Pool,
    /// How the nodes are joined: a switch on this host, or a bridge shared with other hosts.
    pub link: Link,
    /// How its nodes move to a new image.
    pub rollout: Rollout,
    /// `[clusters.kube]`: the Kubernetes API slipwayd talks to (drains, Ready gate); None:
    /// slipwayd never calls it.
    pub kube: Option<Kube>,
}

/// How a cluster's node VMs are joined on this host (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A VDE switch on this host alone; the host holds the gateway on it.
    Switch,
    /// A Linux bridge on a segment of an uplink shared with other hosts.
    Bridge(Bridged),
    /// The Hyper-V host's virtual switch (`[hypervisor] switch`), the adapters tagged with the
    /// cluster's VLAN when it has one.
    HyperV {
        /// The cluster's VLAN id (1 to 4094); untagged when absent.
        vlan: Option<u16>,
    },
}

/// A cluster network spread over hosts: `uplink`, `vlan` or `vxlan`, and `host-address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridged {
    /// This host's device on the LAN the hosts share.
    pub uplink: String,
    /// The cluster's own segment on that LAN.
    pub segment: Segment,
    /// This host's address on the cluster network (the gateway, when this host holds it).
    pub host_address: std::net::Ipv4Addr,
}

/// A cluster's own L2 segment on the hosts' LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    /// An 802.1Q VLAN, 1 to 4094.
    Vlan(u16),
    /// A VXLAN network identifier, 1 to 16777215.
    Vxlan(u32),
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Vlan(id) => write!(f, "vlan {id}"),
            Segment::Vxlan(id) => write!(f, "vxlan {id}"),
        }
    }
}

mod raw {
    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub format: Spanned<u32>,
        pub host: Host,
        pub source: Source,
        pub hypervisor: Hypervisor,
        #[serde(default)]
        pub clusters: Vec<Spanned<Cluster>>,
        #[serde(default)]
        pub nodes: Vec<Spanned<super::node::Raw>>,
        pub fleet: Option<Spanned<super::fleet::Raw>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Host {
        pub name: Spanned<String>,
        pub state_dir: Spanned<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Source {
        pub reference: Spanned<String>,
        pub channel: Spanned<String>,
        pub windows_channel: Option<Spanned<String>>,
        pub keys: Spanned<Vec<String>>,
        #[serde(default)]
        pub plain_http: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Hypervisor {
        pub kind: Spanned<String>,
        pub accel: Option<super::Accel>,
        pub user: Option<Spanned<String>>,
        pub executor: Option<Spanned<super::hyperv::RawExecutor>>,
        pub switch: Option<Spanned<String>>,
        pub root: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Cluster {
        pub name: Spanned<String>,
        pub kubernetes: Spanned<String>,
        pub control_plane_endpoint: Spanned<String>,
        pub pod_cidr: Spanned<String>,
        pub cni: Option<super::Cni>,
        pub service_cidr: Spanned<String>,
        pub network: Network,
        pub rollout: Option<Spanned<super::rollout::Raw>>,
        pub kube: Option<Spanned<super::kube::Raw>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Network {
        pub cidr: Spanned<String>,
        pub gateway: Spanned<String>,
        pub pool: Spanned<String>,
        pub uplink: Option<Spanned<String>>,
        pub vlan: Option<Spanned<i64>>,
        pub vxlan: Option<Spanned<i64>>,
        pub host_address: Option<Spanned<String>>,
    }
}

impl HostConfig {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<HostConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        HostConfig::parse(path, &text)
    }

    /// Validates config `text` read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<HostConfig, Error> {
        let v = Validator { path, text };
        let raw: raw::Config = toml::from_str(text)
            .map_err(|e| v.error(&e.span().unwrap_or(0..0), e.message().trim_end().to_owned()))?;
        v.config(raw)
    }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Validator<'_> {
    fn error(&self, span: &Range<usize>, message: impl Into<String>) -> Error {
        let before = &self.text[..span.start.min(self.text.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Error::Invalid {
            path: self.path.to_owned(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: message.into(),
        }
    }

    fn label(&self, name: &Spanned<String>, what: &str) -> Result<String, Error> {
        let n = name.get_ref();
        let ok = !n.is_empty()
            && n.len() <= 63
            && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && n.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(n.clone())
        } else {
            Err(self.error(
                &name.span(),
                format!(
                    "{what} {n:?} is not a DNS label: 1 to 63 lowercase letters, digits and '-'"
                ),
            ))
        }
    }

    /// A user name as `useradd` accepts it: a lowercase letter or `_`, then lowercase letters,
    /// digits, `_` and `-`, at most 32 bytes.
    fn user_name(&self, name: &Spanned<String>) -> Result<String, Error> {
        let n = name.get_ref();
        let ok = !n.is_empty()
            && n.len() <= 32
            && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok && n != "root" {
            Ok(n.clone())
        } else {
            Err(self.error(
                &name.span(),
                format!(
                    "user {n:?}: expected an unprivileged system user's name (not root), like \"{DEFAULT_VM_USER}\""
                ),
            ))
        }
    }

    /// A cluster network's link: a switch unless `uplink` and a segment are given.
    /// A VLAN id, 1 to 4094.
    fn vlan(&self, vlan: &Spanned<i64>) -> Result<u16, Error> {
        u16::try_from(*vlan.get_ref())
            .ok()
            .filter(|id| (1..=4094).contains(id))
            .ok_or_else(|| {
                self.error(
                    &vlan.span(),
                    format!("vlan {}: expected a VLAN id from 1 to 4094", vlan.get_ref()),
                )
            })
    }

    fn link(
        &self,
        n: &raw::Network,
        network: Cidr,
        pool: Pool,
        hyperv: bool,
    ) -> Result<Link, Error> {
        if hyperv {
            let qemu_only = [&n.uplink, &n.host_address]
                .into_iter()
                .flatten()
                .map(Spanned::span)
                .chain(n.vxlan.as_ref().map(Spanned::span))
                .next();
            if let Some(span) = qemu_only {
                return Err(self.error(
                    &span,
                    "uplink, vxlan and host-address apply to QEMU hosts: on Hyper-V the nodes plug \
                     into [hypervisor] switch, tagged with the cluster's vlan",
                ));
            }
            let vlan = match &n.vlan {
                None => None,
                Some(vlan) => Some(self.vlan(vlan)?),
            };
            return Ok(Link::HyperV { vlan });
        }
        let (uplink, host_address) = match (&n.uplink, &n.vlan, &n.vxlan, &n.host_address) {
            (None, None, None, None) => return Ok(Link::Switch),
            (Some(uplink), _, _, Some(host)) => (uplink, host),
            (Some(uplink), _, _, None) => {
                return Err(self.error(
                    &uplink.span(),
                    "uplink: a bridged cluster network needs host-address, this host's own address on it",
                ));
            }
            (None, vlan, vxlan, host) => {
                let span = vlan
                    .as_ref()
                    .or(vxlan.as_ref())
                    .map(Spanned::span)
                    .or(host.as_ref().map(Spanned::span))
                    .unwrap_or(0..0);
                return Err(self.error(
                    &span,
                    "vlan, vxlan and host-address need uplink, the host's device on the LAN the hosts share",
                ));
            }
        };
        let name = uplink.get_ref();
        // The kernel's rule for device names (dev_valid_name).
        if name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(self.error(
                &uplink.span(),
                format!("uplink {name:?}: expected a network device name like \"eth1\" (1 to 15 bytes, no '/', ':' or spaces)"),
            ));
        }
        let segment = match (&n.vlan, &n.vxlan) {
            (Some(vlan), None) => Segment::Vlan(self.vlan(vlan)?),
            (None, Some(vxlan)) => u32::try_from(*vxlan.get_ref())
                .ok()
                .filter(|id| (1..=0xff_ffff).contains(id))
                .map(Segment::Vxlan)
                .ok_or_else(|| {
                    self.error(
                        &vxlan.span(),
                        format!(
                            "vxlan {}: expected a VXLAN network identifier from 1 to 16777215",
                            vxlan.get_ref()
                        ),
                    )
                })?,
            (Some(vlan), Some(_)) => {
                return Err(self.error(&vlan.span(), "give vlan or vxlan, not both"));
            }
            (None, None) => {
                return Err(self.error(
                    &uplink.span(),
                    "uplink: a bridged cluster network needs vlan (1 to 4094) or vxlan (1 to 16777215), the cluster's own segment",
                ));
            }
        };
        let host: std::net::Ipv4Addr = host_address.get_ref().parse().map_err(|_| {
            self.error(
                &host_address.span(),
                "host-address: expected an IPv4 address",
            )
        })?;
        if !network.contains(host) || pool.contains(host) {
            return Err(self.error(
                &host_address.span(),
                format!(
                    "host-address {host} must lie inside {network} and outside the pool {pool}"
                ),
            ));
        }
        Ok(Link::Bridge(Bridged {
            uplink: name.clone(),
            segment,
            host_address: host,
        }))
    }

    fn size(&self, text: &Spanned<String>, what: &str, min: u64) -> Result<u64, Error> {
        let t = text.get_ref().trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let shift = match t[digits..].to_ascii_uppercase().as_str() {
            "M" | "MIB" => 20,
            "G" | "GIB" => 30,
            "T" | "TIB" => 40,
            _ => 64,
        };
        let value = t[..digits]
            .parse::<u64>()
            .ok()
            .filter(|_| shift < 64)
            .and_then(|n| n.checked_mul(1 << shift));
        match value {
            Some(v) if v >= min => Ok(v),
            _ => Err(self.error(
                &text.span(),
                format!(
                    "{what} {t:?}: expected a size like \"2G\" or \"512M\", at least {} MiB",
                    min >> 20
                ),
            )),
        }
    }

    fn config(&self, raw: raw::Config) -> Result<HostConfig, Error> {
        if *raw.format.get_ref() != FORMAT {
            return Err(self.error(
                &raw.format.span(),
                format!(
                    "host config format {} is not supported: this slipwayd reads format {FORMAT}",
                    raw.format.get_ref()
                ),
            ));
        }
        let name = self.label(&raw.host.name, "host name")?;
        let state_dir = PathBuf::from(raw.host.state_dir.get_ref());
        if !state_dir.is_absolute() {
            return Err(self.error(
                &raw.host.state_dir.span(),
                "state-dir must be an absolute path",
            ));
        }
        let source = self.source(&raw.source, raw.hypervisor.kind.get_ref() == "qemu")?;
        let h = &raw.hypervisor;
        let hyperv_keys = [
            h.executor.as_ref().map(Spanned::span),
            h.switch.as_ref().map(Spanned::span),
            h.root.as_ref().map(Spanned::span),
        ];
        let hypervisor = match h.kind.get_ref().as_str() {
            "qemu" => {
                if let Some(span) = hyperv_keys.into_iter().flatten().next() {
                    return Err(self.error(
                        &span,
                        "executor, switch and root apply to kind = \"hyperv\" only",
                    ));
                }
                Hypervisor::Qemu(h.accel.unwrap_or(Accel::Auto))
            }
            "hyperv" if h.accel.is_none() => {
                let host = hyperv::Raw {
                    executor: h.executor.as_ref(),
                    switch: h.switch.as_ref(),
                    root: h.root.as_ref(),
                    kind: h.kind.span(),
                }
                .validate()
                .map_err(|(span, why)| self.error(&span, why))?;
                Hypervisor::HyperV(host)
            }
            "hyperv" => {
                return Err(self.error(&h.kind.span(), "accel applies to qemu only"));
            }
            other => {
                return Err(self.error(
                    &h.kind.span(),
                    format!("hypervisor {other:?}: expected \"qemu\" or \"hyperv\""),
                ));
            }
        };

        let vm_user = match &raw.hypervisor.user {
            None => DEFAULT_VM_USER.to_owned(),
            Some(user) if matches!(hypervisor, Hypervisor::HyperV(_)) => {
                return Err(self.error(&user.span(), "user applies to qemu only"));
            }
            Some(user) => self.user_name(user)?,
        };

        let mut clusters = BTreeMap::new();
        for spanned in raw.clusters {
            let span = spanned.span();
            let c = spanned.into_inner();
            let name = self.label(&c.name, "cluster name")?;
            let cidr = |s: &Spanned<String>| {
                Cidr::parse(s.get_ref()).map_err(|why| self.error(&s.span(), why))
            };
            let network = cidr(&c.network.cidr)?;
            let gateway: std::net::Ipv4Addr =
                c.network.gateway.get_ref().parse().map_err(|_| {
                    self.error(
                        &c.network.gateway.span(),
                        "gateway: expected an IPv4 address",
                    )
                })?;
            if !network.contains(gateway) {
                return Err(self.error(
                    &c.network.gateway.span(),
                    format!("gateway {gateway} is outside the network {network}"),
                ));
            }
            let pool = Pool::parse(c.network.pool.get_ref())
                .map_err(|why| self.error(&c.network.pool.span(), why))?;
            if !network.contains(pool.first)
                || !network.contains(pool.last)
                || pool.contains(gateway)
            {
                return Err(self.error(
                    &c.network.pool.span(),
                    format!(
                        "pool {pool} must lie inside {network} and leave out the gateway {gateway}"
                    ),
                ));
            }
            let link = self.link(
                &c.network,
                network,
                pool,
                matches!(hypervisor, Hypervisor::HyperV(_)),
            )?;
            if let Link::Bridge(bridged) = &link {
                let other = clusters
                    .values()
                    .find(|other: &&Cluster| match &other.link {
                        Link::Bridge(o) => {
                            o.segment == bridged.segment
                                && (o.uplink == bridged.uplink
                                    || matches!(o.segment, Segment::Vxlan(_)))
                        }
                        Link::Switch | Link::HyperV { .. } => false,
                    });
                if let Some(other) = other {
                    let span = match (&c.network.vlan, &c.network.vxlan) {
                        (Some(v), _) | (None, Some(v)) => v.span(),
                        (None, None) => span.clone(),
                    };
                    return Err(self.error(
                        &span,
                        format!(
                            "{} on {} is already cluster {}'s: give each cluster a segment of its own (clusters on one segment reach each other's nodes)",
                            bridged.segment, bridged.uplink, other.name
                        ),
                    ));
                }
            }
            let kubernetes = c.kubernetes.get_ref();
            let parts: Vec<&str> = kubernetes.split('.').collect();
            if parts.len() != 3
                || !parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_digit()))
            {
                return Err(self.error(
                    &c.kubernetes.span(),
                    format!("kubernetes {kubernetes:?}: expected a version like \"1.32.10\""),
                ));
            }
            let endpoint = c.control_plane_endpoint.get_ref();
            if endpoint
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(self.error(
                    &c.control_plane_endpoint.span(),
                    format!("control-plane-endpoint {endpoint:?}: expected ADDRESS:PORT"),
                ));
            }
            if clusters.contains_key(&name) {
                return Err(self.error(&span, format!("cluster {name} is declared twice")));
            }
            let rollout = match c.rollout {
                None => Rollout::default(),
                Some(raw) => raw
                    .into_inner()
                    .validate()
                    .map_err(|(span, why)| self.error(&span, why))?,
            };
            let kube = match c.kube {
                None => None,
                Some(raw) => Some(
                    raw.into_inner()
                        .validate(endpoint)
                        .map_err(|(span, why)| self.error(&span, why))?,
                ),
            };
            clusters.insert(
                name.clone(),
                Cluster {
                    name,
                    kubernetes: kubernetes.clone(),
                    control_plane_endpoint: endpoint.clone(),
                    pod_cidr: cidr(&c.pod_cidr)?,
                    cni: c.cni.unwrap_or_default(),
                    service_cidr: cidr(&c.service_cidr)?,
                    network,
                    gateway,
                    pool,
                    link,
                    rollout,
                    kube,
                },
            );
        }

        let qemu = matches!(hypervisor, Hypervisor::Qemu(_));
        let (nodes, control_planes) =
            self.nodes(raw.nodes, &clusters, qemu, source.windows_channel.is_some())?;
        let fleet = match raw.fleet {
            None => Fleet::None,
            Some(f) => f
                .into_inner()
                .validate()
                .map_err(|(span, why)| self.error(&span, why))?,
        };
        // A host alone needs a control plane for its nodes to join; hosts that share a fleet
        // may run only workers of a cluster whose control planes are on other hosts.
        for cluster in clusters.values() {
            let has_nodes = nodes.values().any(|n| n.cluster == cluster.name);
            if has_nodes && fleet == Fleet::None && !control_planes.contains(&cluster.name) {
                return Err(self.error(
                    &(0..0),
                    format!(
                        "cluster {} has nodes but no control-plane node (a host that runs only \
                         workers of a cluster spread over several hosts needs a [fleet] shared with them)",
                        cluster.name
                    ),
                ));
            }
        }
        Ok(HostConfig {
            name,
            state_dir,
            source,
            hypervisor,
            vm_user,
            clusters,
            nodes,
            fleet,
        })
    }
}

#[cfg(test)]
mod tests;
