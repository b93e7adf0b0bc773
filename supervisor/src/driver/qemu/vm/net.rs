//! The QEMU driver's part of the node network: which clusters the config in force bridges over
//! hosts, bringing a VM's network up before it starts, and the `-netdev` it gets.

use std::path::Path;
use std::sync::PoisonError;

use super::{Error, Qemu};
use crate::config;
use crate::driver::VmSpec;
use crate::driver::network::{self, Bridge, Ip};

impl Qemu {
    /// The bridge of `cluster` if the config in force bridges it over hosts.
    pub(super) fn bridge(&self, cluster: &str) -> Option<Bridge> {
        let bridges = self.bridges.read().unwrap_or_else(PoisonError::into_inner);
        bridges.get(cluster).cloned()
    }

    /// Learns which clusters `config` bridges over hosts (see [`Driver::configure`]).
    pub fn use_networks(&self, config: &config::HostConfig) {
        let bridges = config
            .clusters
            .values()
            .filter_map(|c| match &c.link {
                config::Link::Switch | config::Link::HyperV { .. } => None,
                config::Link::Bridge(b) => Some((
                    c.name.clone(),
                    Bridge {
                        cluster: c.name.clone(),
                        uplink: b.uplink.clone(),
                        segment: b.segment,
                        address: b.host_address,
                        prefix: c.network.prefix,
                    },
                )),
            })
            .collect();
        *self.bridges.write().unwrap_or_else(PoisonError::into_inner) = bridges;
    }

    /// Brings up the network of the VM of `spec`: its cluster's bridge and its own tap, or its
    /// cluster's switch.
    pub(super) async fn prepare_network(&self, spec: &VmSpec) -> Result<(), Error> {
        let cluster = spec.network.cluster.clone();
        let work: Box<dyn FnOnce() -> Result<(), network::Error> + Send> =
            match self.bridge(&cluster) {
                Some(bridge) => {
                    let (tap, user) = (network::tap_name(&spec.dir), self.user.name.clone());
                    let alias = format!("slipway VM {}", spec.name);
                    Box::new(move || {
                        let ip = Ip::host();
                        bridge.ensure(&ip)?;
                        bridge.ensure_tap(&ip, &tap, &user, &alias)
                    })
                }
                None => {
                    let switch = self.switch(&cluster);
                    let (gateway, prefix) = (spec.network.gateway, spec.network.prefix);
                    let host_link = self.host_link;
                    Box::new(move || {
                        if host_link {
                            switch.ensure(gateway, prefix)
                        } else {
                            switch.ensure_switch()
                        }
                    })
                }
            };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::access("start the network of", Path::new(&cluster), e.into()))?
            .map_err(|source| Error::Network { cluster, source })
    }

    /// QEMU's `-netdev` for the VM of `spec`. The cluster's VDE switch: nodes of one cluster
    /// reach each other, nothing else; QEMU connects to the switch while still root, and the
    /// connected socket keeps working after the drop. A bridged cluster: the VM's own tap,
    /// made for the VM user by [`Qemu::prepare_network`] (QEMU runs no script: slipwayd made
    /// and joined it already).
    pub(super) fn netdev(&self, spec: &VmSpec) -> String {
        match self.bridge(&spec.network.cluster) {
            Some(_) => format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                network::tap_name(&spec.dir)
            ),
            None => format!(
                "vde,id=net0,sock={}",
                self.switch(&spec.network.cluster).socket().display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{self, HostConfig};
    use crate::driver::qemu::Qemu;
    use crate::driver::{Driver, NetSpec, VmSpec};

    /// Two clusters: `lab` bridged on VLAN 101 of eth1 (unless `bridged` is false), `dev` on a
    /// VDE switch.
    fn config(bridged: bool) -> HostConfig {
        let extra = if bridged {
            ", uplink = \"eth1\", vlan = 101, host-address = \"10.44.0.2\""
        } else {
            ""
        };
        let mut text = String::from(
            "format = 1\n[host]\nname = \"h\"\nstate-dir = \"/var/lib/slipway\"\n\
             [source]\nreference = \"oci:/srv/nodes\"\nchannel = \"stable\"\nkeys = [\"/k.pub\"]\n\
             [hypervisor]\nkind = \"qemu\"\n",
        );
        for (name, net, link) in [("lab", 44, extra), ("dev", 45, "")] {
            text.push_str(&format!(
                "[[clusters]]\nname = \"{name}\"\nkubernetes = \"1.32.10\"\n\
                 control-plane-endpoint = \"10.{net}.0.10:6443\"\npod-cidr = \"10.244.0.0/16\"\n\
                 service-cidr = \"10.96.0.0/12\"\nnetwork = {{ cidr = \"10.{net}.0.0/24\", \
                 gateway = \"10.{net}.0.1\", pool = \"10.{net}.0.10-10.{net}.0.50\"{link} }}\n"
            ));
        }
        HostConfig::parse(Path::new("host.toml"), &text).unwrap()
    }

    fn spec(cluster: &str) -> VmSpec {
        VmSpec {
            name: "w-1".into(),
            dir: "/var/lib/slipway/nodes/w-1".into(),
            base: "/base.vhdx".into(),
            image: "sha256:00".into(),
            seed: "/seed.img".into(),
            state_disk: 1 << 30,
            cpus: 1,
            memory: 1 << 30,
            mac: "52:54:00:00:00:01".into(),
            network: NetSpec {
                cluster: cluster.into(),
                gateway: "10.44.0.1".parse().unwrap(),
                prefix: 24,
            },
            secure_boot: "none".into(),
        }
    }

    #[tokio::test]
    async fn a_bridged_clusters_vm_gets_its_own_tap_and_others_the_switch() {
        let qemu = Qemu::open(
            Path::new("/var/lib/slipway"),
            config::Accel::Tcg,
            "slipway-vm",
        )
        .await
        .unwrap();
        let tap = crate::driver::network::tap_name(Path::new("/var/lib/slipway/nodes/w-1"));
        let vde = "vde,id=net0,sock=/var/lib/slipway/clusters/lab/network/switch";
        assert_eq!(qemu.netdev(&spec("lab")), vde, "no config given: a switch");
        qemu.configure(&config(true));
        assert_eq!(
            qemu.netdev(&spec("lab")),
            format!("tap,id=net0,ifname={tap},script=no,downscript=no")
        );
        assert!(qemu.netdev(&spec("dev")).starts_with("vde,"));
        // A reload that drops the bridge brings the switch back for the next start.
        qemu.configure(&config(false));
        assert_eq!(qemu.netdev(&spec("lab")), vde);
    }
}
