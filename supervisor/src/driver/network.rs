//! A cluster's node network on this host: a VDE switch (Debian's vde2) per cluster, listening
//! on a unix socket directory in the state directory, that every node VM of the cluster plugs
//! into. Nodes reach each other on their static addresses; nothing is configured in the host's
//! own network namespace. The switch runs detached, like the VMs, and survives slipwayd.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
}

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
        super::live_pid(&self.pidfile(), "vde_switch", &self.socket())
    }

    /// Starts the switch unless it runs.
    pub fn ensure(&self) -> Result<(), Error> {
        if self.running().is_some() {
            return Ok(());
        }
        let fail = |why: String| Error::StartSwitch {
            cluster: self.cluster.clone(),
            why,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| fail(e.to_string()))?;
        let _ = std::fs::remove_file(self.pidfile());
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

    /// Stops the switch.
    pub fn stop(&self) {
        if let Some(pid) = self.running() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}
