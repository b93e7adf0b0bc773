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
