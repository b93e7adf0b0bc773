//! A network namespace of the test's own (`ip netns`, as root), with its loopback up, for
//! programs that configure network devices (slipwayd's tap holding a cluster's gateway
//! address): nothing they do reaches the host's own namespace. Deleted when dropped.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A named network namespace.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with its loopback up.
    pub fn create() -> Netns {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "slipway-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        crate::run(Command::new("ip").args(["netns", "add", &name]));
        let netns = Netns { name };
        crate::run(netns.command("ip").args(["link", "set", "lo", "up"]));
        netns
    }

    /// `program` to be run inside the namespace (`ip netns exec` execs it: its pid is the
    /// program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// A LAN: a namespace of the test's own holding a plain bridge (it forwards VLAN-tagged frames
/// as they come), that other namespaces join through a veth pair each, as hosts plugged into
/// one switch. Deleted (with its links) when dropped.
pub struct Lan {
    /// The namespace the bridge is in.
    pub netns: Netns,
    ports: AtomicU32,
}

impl Lan {
    /// The bridge's name in the LAN namespace.
    const BRIDGE: &'static str = "lan0";

    /// Creates the LAN's namespace and its bridge.
    pub fn create() -> Lan {
        let netns = Netns::create();
        crate::run(
            netns
                .command("ip")
                .args(["link", "add", Lan::BRIDGE, "type", "bridge"]),
        );
        crate::run(netns.command("ip").args(["link", "set", Lan::BRIDGE, "up"]));
        Lan {
            netns,
            ports: AtomicU32::new(0),
        }
    }

    /// Plugs `host` into the LAN: a veth pair made inside the LAN namespace, one end a bridge
    /// port, the other moved into `host` as `device`, up, holding `address` (CIDR).
    pub fn join(&self, host: &Netns, device: &str, address: &str) {
        let port = format!("port{}", self.ports.fetch_add(1, Ordering::Relaxed));
        crate::run(self.netns.command("ip").args([
            "link", "add", &port, "type", "veth", "peer", "name", device, "netns", &host.name,
        ]));
        crate::run(self.netns.command("ip").args([
            "link",
            "set",
            &port,
            "master",
            Lan::BRIDGE,
            "up",
        ]));
        crate::run(
            host.command("ip")
                .args(["addr", "add", address, "dev", device]),
        );
        crate::run(host.command("ip").args(["link", "set", device, "up"]));
    }
}
