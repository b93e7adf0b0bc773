//! A cluster's node network spread over hosts: on each host a Linux bridge of the cluster's
//! own, holding the cluster's segment of the hosts' shared LAN (a VLAN device or a VXLAN device
//! on the uplink) and one tap device per node VM, with the host's own address on the bridge.
//!
//! Every step is idempotent and undoes what the config no longer wants: a restarted slipwayd
//! finds the bridge, the segment and the taps as it left them and changes nothing, and a
//! segment or host address that changed in host.toml replaces the old one. Only devices with
//! the names slipwayd derives are made or deleted; a device of such a name that is something
//! else is refused, not taken over.

use std::net::Ipv4Addr;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Error;
use super::ip::{Ip, IpError, Link};
use crate::config::Segment;

/// The UDP port of VXLAN segments (IANA's).
pub const VXLAN_PORT: u16 = 4789;

/// One cluster's bridge on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// The cluster.
    pub cluster: String,
    /// The host's device on the LAN the hosts share.
    pub uplink: String,
    /// The cluster's segment on it.
    pub segment: Segment,
    /// The host's own address on the cluster network.
    pub address: Ipv4Addr,
    /// The cluster network's prefix length.
    pub prefix: u8,
}

/// `PREFIX` and the first 4 bytes of SHA-256 of `what` in hex: 12 bytes, within the kernel's 15.
fn derived(prefix: &str, what: &str) -> String {
    let digest = Sha256::digest(what.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// The bridge device of `cluster`: `slwb` and 8 hex digits of the cluster's name.
pub fn bridge_name(cluster: &str) -> String {
    derived("slwb", cluster)
}

/// The tap device of the VM whose run directory is `dir`: `slwt` and 8 hex digits of the
/// directory's path. One per VM, not per node: a surge's replacement (`NAME/gen-N`) runs beside
/// the VM it replaces.
pub fn tap_name(dir: &Path) -> String {
    derived("slwt", &dir.to_string_lossy())
}

/// The multicast group of VXLAN identifier `id`: 239 and its three bytes, the same on every
/// host without a word of config.
pub fn vxlan_group(id: u32) -> Ipv4Addr {
    let [_, a, b, c] = id.to_be_bytes();
    Ipv4Addr::new(239, a, b, c)
}

impl Bridge {
    /// The bridge device's name.
    pub fn name(&self) -> String {
        bridge_name(&self.cluster)
    }

    /// The segment's device: `slwv` and a hash of `UPLINK.VLAN` (never Linux's own
    /// `UPLINK.VLAN`, which the host may already use for itself), `slwx` and the identifier
    /// for VXLAN.
    pub fn segment_device(&self) -> String {
        match self.segment {
            Segment::Vlan(id) => derived("slwv", &format!("{}.{id}", self.uplink)),
            Segment::Vxlan(id) => format!("slwx{id}"),
        }
    }

    /// Whether `link` is this bridge's segment device as configured.
    fn is_segment(&self, link: &Link) -> bool {
        let number = |key: &str| link.data(key).and_then(serde_json::Value::as_u64);
        let text = |key: &str| link.data(key).and_then(serde_json::Value::as_str);
        match self.segment {
            Segment::Vlan(id) => {
                link.kind() == "vlan"
                    && number("id") == Some(u64::from(id))
                    && link.link.as_deref() == Some(self.uplink.as_str())
            }
            Segment::Vxlan(id) => {
                link.kind() == "vxlan"
                    && number("id") == Some(u64::from(id))
                    && number("port") == Some(u64::from(VXLAN_PORT))
                    && text("link") == Some(self.uplink.as_str())
            }
        }
    }

    fn fail(&self, source: IpError) -> Error {
        Error::SetUpBridge {
            cluster: self.cluster.clone(),
            bridge: self.name(),
            source,
        }
    }

    /// Makes the bridge, its segment and the host's address, or finds them made: see the
    /// module comment.
    pub fn ensure(&self, ip: &Ip) -> Result<(), Error> {
        let fail = |e| self.fail(e);
        let bridge = self.name();
        if ip.link(&self.uplink).map_err(fail)?.is_none() {
            return Err(Error::FindUplink {
                cluster: self.cluster.clone(),
                uplink: self.uplink.clone(),
            });
        }
        // The uplink carries the segment: down, it would carry nothing.
        ip.run(&["link", "set", "dev", &self.uplink, "up"])
            .map_err(fail)?;
        match ip.link(&bridge).map_err(fail)? {
            None => {
                ip.run(&["link", "add", "name", &bridge, "type", "bridge"])
                    .map_err(fail)?;
            }
            Some(link) if link.kind() == "bridge" => {}
            Some(link) => return Err(self.foreign(&link, "bridge")),
        }
        let segment = self.segment_device();
        match ip.link(&segment).map_err(fail)? {
            Some(link) if self.is_segment(&link) => {}
            // Ours, from an earlier config: made again below as configured now.
            Some(link) if self.owns(&link) => {
                ip.run(&["link", "delete", "dev", &segment]).map_err(fail)?;
                self.add_segment(ip, &segment)?;
            }
            Some(link) => return Err(self.foreign(&link, "segment device")),
            None => self.add_segment(ip, &segment)?,
        }
        ip.run(&["link", "set", "dev", &segment, "master", &bridge, "up"])
            .map_err(fail)?;
        // A segment this bridge held under an earlier config (another VLAN, another uplink).
        for port in ip.ports(&bridge).map_err(fail)? {
            if port.ifname != segment && matches!(port.kind(), "vlan" | "vxlan") {
                ip.run(&["link", "delete", "dev", &port.ifname])
                    .map_err(fail)?;
            }
        }
        ip.run(&["link", "set", "dev", &bridge, "up"])
            .map_err(fail)?;
        let wanted = (self.address, self.prefix);
        for held in ip.ipv4_addresses(&bridge).map_err(fail)? {
            if held != wanted {
                let old = format!("{}/{}", held.0, held.1);
                ip.run(&["address", "del", &old, "dev", &bridge])
                    .map_err(fail)?;
            }
        }
        let address = format!("{}/{}", self.address, self.prefix);
        ip.run(&["address", "replace", &address, "dev", &bridge])
            .map_err(fail)?;
        Ok(())
    }

    /// Whether `link`, of the segment device's name, is one slipwayd made under an earlier
    /// config: a VLAN or VXLAN device in no bridge or in this one.
    fn owns(&self, link: &Link) -> bool {
        matches!(link.kind(), "vlan" | "vxlan")
            && link
                .master
                .as_deref()
                .is_none_or(|master| master == self.name())
    }

    fn add_segment(&self, ip: &Ip, device: &str) -> Result<(), Error> {
        let fail = |e| self.fail(e);
        match self.segment {
            Segment::Vlan(id) => {
                let id = id.to_string();
                ip.run(&[
                    "link",
                    "add",
                    "link",
                    &self.uplink,
                    "name",
                    device,
                    "type",
                    "vlan",
                    "id",
                    &id,
                ])
                .map_err(fail)?;
            }
            Segment::Vxlan(id) => {
                let (group, port) = (vxlan_group(id).to_string(), VXLAN_PORT.to_string());
                let id = id.to_string();
                ip.run(&[
                    "link",
                    "add",
                    device,
                    "type",
                    "vxlan",
                    "id",
                    &id,
                    "group",
                    &group,
                    "dev",
                    &self.uplink,
                    "dstport",
                    &port,
                ])
                .map_err(fail)?;
            }
        }
        Ok(())
    }

    fn foreign(&self, link: &Link, want: &'static str) -> Error {
        Error::ForeignDevice {
            cluster: self.cluster.clone(),
            device: link.ifname.clone(),
            want,
            found: match link.kind() {
                "" => "device".to_owned(),
                kind => format!("{kind} device"),
            },
        }
    }

    /// Makes the tap device `tap` for a VM that runs as `user` (QEMU opens it with
    /// `-netdev tap,ifname=TAP`), or finds it made, and makes it a port of the bridge. `alias`
    /// names the VM for people reading `ip link`.
    pub fn ensure_tap(&self, ip: &Ip, tap: &str, user: &str, alias: &str) -> Result<(), Error> {
        let fail = |source| Error::SetUpTap {
            tap: tap.to_owned(),
            bridge: self.name(),
            source,
        };
        match ip.link(tap).map_err(fail)? {
            Some(link) if is_tap(&link) && tap_user(&link).is_some_and(|u| u == user) => {}
            // Made for another user (the VM user changed): QEMU could not open it.
            Some(link) if is_tap(&link) => {
                ip.run(&["link", "delete", "dev", tap]).map_err(fail)?;
                ip.run(&["tuntap", "add", "dev", tap, "mode", "tap", "user", user])
                    .map_err(fail)?;
            }
            Some(link) => return Err(self.foreign(&link, "tap device")),
            None => {
                ip.run(&["tuntap", "add", "dev", tap, "mode", "tap", "user", user])
                    .map_err(fail)?;
            }
        }
        ip.run(&["link", "set", "dev", tap, "alias", alias])
            .map_err(fail)?;
        self.attach(ip, tap)
    }

    /// Makes device `port` a port of the bridge, up (a VM's tap; a test's stand-in for one).
    pub fn attach(&self, ip: &Ip, port: &str) -> Result<(), Error> {
        ip.run(&["link", "set", "dev", port, "master", &self.name(), "up"])
            .map(drop)
            .map_err(|source| Error::SetUpTap {
                tap: port.to_owned(),
                bridge: self.name(),
                source,
            })
    }
}

fn is_tap(link: &Link) -> bool {
    link.kind() == "tun" && link.data("type").and_then(|t| t.as_str()) == Some("tap")
}

/// The user a tap is made for, by name (or by number when `ip` cannot name it).
fn tap_user(link: &Link) -> Option<String> {
    match link.data("user")? {
        serde_json::Value::String(name) => Some(name.clone()),
        other => Some(other.to_string()),
    }
}

/// Deletes the tap device `tap` unless it is gone already; a device of that name that is not
/// a tap is left alone.
pub fn remove_tap(ip: &Ip, tap: &str) -> Result<(), Error> {
    let fail = |source| Error::RemoveTap {
        tap: tap.to_owned(),
        source,
    };
    match ip.link(tap).map_err(fail)? {
        Some(link) if is_tap(&link) => ip
            .run(&["link", "delete", "dev", tap])
            .map(drop)
            .map_err(fail),
        _ => Ok(()),
    }
}

/// Deletes the bridge of `cluster` and its segment device, if they exist (after the cluster's
/// last VM). The taps stay until their VMs stop.
pub fn tear_down(ip: &Ip, cluster: &str) -> Result<(), Error> {
    let bridge = bridge_name(cluster);
    let fail = |source| Error::TearDownBridge {
        cluster: cluster.to_owned(),
        bridge: bridge.clone(),
        source,
    };
    match ip.link(&bridge).map_err(fail)? {
        Some(link) if link.kind() == "bridge" => {}
        _ => return Ok(()),
    }
    for port in ip.ports(&bridge).map_err(fail)? {
        if matches!(port.kind(), "vlan" | "vxlan") {
            ip.run(&["link", "delete", "dev", &port.ifname])
                .map_err(fail)?;
        }
    }
    ip.run(&["link", "delete", "dev", &bridge])
        .map(drop)
        .map_err(fail)
}
