//! [`Switch`]: a cluster's VDE switch and the host's tap on it (see the module comment of
//! `network`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Error;

/// A cluster's switch.
#[derive(Debug, Clone)]
pub struct Switch {
    /// The cluster.
    pub cluster: String,
    /// Its directory (the socket directory VMs plug into, and the pid file beside it).
    pub dir: PathBuf,
}

impl Switch {
    /// The switch of `cluster` under `state_dir`.
    pub fn new(state_dir: &Path, cluster: &str) -> Switch {
        Switch {
            cluster: cluster.to_owned(),
            dir: state_dir.join("clusters").join(cluster).join("network"),
        }
    }

    /// The socket directory QEMU's `-netdev vde,sock=` names.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("switch")
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("switch.pid")
    }

    /// The switch's pid, if it runs.
    pub fn running(&self) -> Option<u32> {
        crate::driver::live_pid(&self.pidfile(), "vde_switch", &self.socket())
    }

    /// The host's tap device on the switch: `slw-` and 8 hex digits of the cluster name (device
    /// names have at most 15 bytes).
    pub fn tap(&self) -> String {
        let digest = Sha256::digest(self.cluster.as_bytes());
        format!(
            "slw-{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        )
    }

    /// The host link's pid file (what [`Switch::stop`] ends).
    pub fn plug_pidfile(&self) -> PathBuf {
        self.dir.join("host-link.pid")
    }

    /// The host link's pid (vde_plug2tap), if it runs.
    fn plug(&self) -> Option<u32> {
        crate::driver::live_pid(&self.plug_pidfile(), "vde_plug2tap", &self.socket())
    }

    /// Starts the switch and the host's link to it, holding `gateway` in a network of
    /// `prefix` bits, unless they run.
    pub fn ensure(&self, gateway: Ipv4Addr, prefix: u8) -> Result<(), Error> {
        self.ensure_switch()?;
        let tap = self.tap();
        let fail = |why: String| Error::HostLink {
            cluster: self.cluster.clone(),
            gateway: gateway.to_string(),
            tap: tap.clone(),
            why,
        };
        let device = Path::new("/sys/class/net").join(&tap);
        if self.plug().is_none() {
            let _ = std::fs::remove_file(self.plug_pidfile());
            run(Command::new("vde_plug2tap")
                .arg("-s")
                .arg(self.socket())
                .arg("-P")
                .arg(self.plug_pidfile())
                .arg("-d")
                .arg(&tap))
            .map_err(|e| fail(format!("vde_plug2tap: {e}")))?;
            let start = Instant::now();
            while !device.exists() {
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(fail("the tap device did not appear within 10 s".into()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let address = format!("{gateway}/{prefix}");
        run(Command::new("ip").args(["address", "replace", &address, "dev", &tap]))
            .and_then(|()| run(Command::new("ip").args(["link", "set", &tap, "up"])))
            .map_err(|e| fail(format!("ip: {e}")))
    }

    /// Starts the switch alone (no host link) unless it runs.
    pub fn ensure_switch(&self) -> Result<(), Error> {
        if self.running().is_some() {
            return Ok(());
        }
        let fail = |why: String| Error::StartSwitch {
            cluster: self.cluster.clone(),
            why,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| fail(e.to_string()))?;
        let _ = std::fs::remove_file(self.pidfile());
        // Root's alone: the VMs' QEMU connects while still root (see the module comment).
        let output = Command::new("vde_switch")
            .arg("-s")
            .arg(self.socket())
            .arg("-p")
            .arg(self.pidfile())
            .args(["-d", "--dirmode", "0700", "-m", "0600"])
            .output()
            .map_err(|e| fail(e.to_string()))?;
        if !output.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        let start = Instant::now();
        while self.running().is_none() || !self.socket().join("ctl").exists() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(fail("it did not come up within 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the host link (its tap goes with it) and the switch.
    pub fn stop(&self) {
        for pid in [self.plug(), self.running()].into_iter().flatten() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// Runs a command; its stderr is the error.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
