//! A cluster's node network on this host, in one of two shapes (host.toml chooses; see the
//! `config` module comment).
//!
//! On one host alone (the default), [`Switch`]: a VDE switch (Debian's vde2) per cluster,
//! listening on a unix socket directory in the state directory, that every node VM of the
//! cluster plugs into, and the host's link to it: a tap device (vde_plug2tap plugs it into the
//! switch) that holds the cluster's gateway address in slipwayd's network namespace. Nodes reach
//! each other on their static addresses and the host at the gateway. Making the tap needs
//! CAP_NET_ADMIN (slipwayd runs as root on a host; tests run it in a network namespace of their
//! own). The switch and the plug run detached, like the VMs, and survive slipwayd.
//!
//! Both stay root while the VMs' QEMU runs as the VM user, for two reasons found by running them:
//! their sockets live in the state directory, which is root's alone (0700: it holds the
//! clusters' PKI), so the VM user cannot reach them there; and vde_plug2tap needs CAP_NET_ADMIN
//! unless the tap is made beforehand for that user. Root switches cost the VMs nothing: QEMU
//! connects its `-netdev vde` socket while still root, and the connected socket keeps sending
//! after QEMU drops to the VM user (measured: the host tap receives the firmware's PXE frames).
//!
//! Spread over hosts, [`Bridge`]: a Linux bridge per cluster on each host, holding the cluster's
//! own segment of the LAN the hosts share (an 802.1Q VLAN device on the uplink, or a VXLAN
//! device over it), one tap device per node VM (made by slipwayd for the VM user before QEMU
//! starts, deleted when the VM stops), and the host's own address. Clusters are isolated from
//! each other at layer 2 by their segments; nodes of one cluster on different hosts share one
//! segment. Everything goes through iproute2 ([`Ip`]), which tests point at namespaces of
//! their own.

mod bridge;
mod ip;
mod switch;

pub use bridge::{Bridge, remove_tap, tap_name, tear_down};
pub use ip::{Ip, IpError};
pub use switch::Switch;

/// Errors of the node network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// vde_switch failed.
    #[error(
        "cannot start the VDE switch of cluster {cluster}: {why} (is vde2 installed? ./scripts/setup)"
    )]
    StartSwitch {
        /// The cluster.
        cluster: String,
        /// Why.
        why: String,
    },
    /// The host link failed.
    #[error(
        "cannot give this host the gateway address {gateway} on cluster {cluster}'s network: {why} (slipwayd needs CAP_NET_ADMIN for its tap device {tap})"
    )]
    HostLink {
        /// The cluster.
        cluster: String,
        /// The gateway address.
        gateway: String,
        /// The tap device.
        tap: String,
        /// Why.
        why: String,
    },
    /// The uplink of a bridged cluster network is missing.
    #[error(
        "cluster {cluster}: its uplink {uplink} does not exist on this host (check network.uplink in host.toml against `ip link`)"
    )]
    FindUplink {
        /// The cluster.
        cluster: String,
        /// The uplink.
        uplink: String,
    },
    /// A device of a name slipwayd derives is something else.
    #[error(
        "cluster {cluster}: a {found} named {device} exists where slipwayd makes its {want}: rename or delete it"
    )]
    ForeignDevice {
        /// The cluster.
        cluster: String,
        /// The device.
        device: String,
        /// What slipwayd makes under that name.
        want: &'static str,
        /// What is there.
        found: String,
    },
    /// The bridge, its segment or the host's address could not be set up.
    #[error("cannot set up bridge {bridge} of cluster {cluster} (slipwayd needs CAP_NET_ADMIN)")]
    SetUpBridge {
        /// The cluster.
        cluster: String,
        /// The bridge.
        bridge: String,
        /// The cause.
        #[source]
        source: IpError,
    },
    /// A VM's tap device could not be made or joined to its bridge.
    #[error("cannot set up tap device {tap} on bridge {bridge}")]
    SetUpTap {
        /// The tap device.
        tap: String,
        /// The bridge.
        bridge: String,
        /// The cause.
        #[source]
        source: IpError,
    },
    /// A VM's tap device could not be deleted.
    #[error("cannot delete tap device {tap}")]
    RemoveTap {
        /// The tap device.
        tap: String,
        /// The cause.
        #[source]
        source: IpError,
    },
    /// A bridge could not be deleted.
    #[error("cannot delete bridge {bridge} of cluster {cluster}")]
    TearDownBridge {
        /// The cluster.
        cluster: String,
        /// The bridge.
        bridge: String,
        /// The cause.
        #[source]
        source: IpError,
    },
}

#[cfg(test)]
mod tests;
