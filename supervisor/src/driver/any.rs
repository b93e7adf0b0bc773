//! [`AnyDriver`]: the driver a host config names, QEMU or Hyper-V, behind one type so the daemon
//! stays generic over [`Driver`] and is built once. QEMU exists on Unix builds alone.

use std::collections::BTreeSet;
use std::path::Path;

use super::hyperv::driver::HyperV;
#[cfg(unix)]
use super::qemu::Qemu;
use super::{Driver, StopDeadlines, Stopped, VmSpec, VmStatus};
use crate::beacon::Port;
use crate::config::HostConfig;
use crate::model::Digest;

/// QEMU or Hyper-V.
pub enum AnyDriver {
    /// QEMU/KVM on this Linux host.
    #[cfg(unix)]
    Qemu(Qemu),
    /// Hyper-V, through PowerShell plans.
    HyperV(HyperV),
}

/// Calls `$call` on whichever driver `$self` holds.
macro_rules! each {
    ($self:ident, $driver:ident => $call:expr) => {
        match $self {
            #[cfg(unix)]
            AnyDriver::Qemu($driver) => $call,
            AnyDriver::HyperV($driver) => $call,
        }
    };
}

impl Driver for AnyDriver {
    async fn prepare(&self, spec: &VmSpec) -> anyhow::Result<()> {
        each!(self, d => d.prepare(spec).await)
    }
    async fn overlay(&self, dir: &Path, base: &Path, image: &str) -> anyhow::Result<()> {
        each!(self, d => d.overlay(dir, base, image).await)
    }
    async fn drop_overlays(&self, dir: &Path, keep: &str) -> anyhow::Result<()> {
        each!(self, d => d.drop_overlays(dir, keep).await)
    }
    async fn start(&self, spec: &VmSpec) -> anyhow::Result<u32> {
        each!(self, d => d.start(spec).await)
    }
    async fn stop(
        &self,
        name: &str,
        dir: &Path,
        deadlines: StopDeadlines,
    ) -> anyhow::Result<Stopped> {
        each!(self, d => d.stop(name, dir, deadlines).await)
    }
    async fn status(&self, name: &str, dir: &Path) -> VmStatus {
        each!(self, d => d.status(name, dir).await)
    }
    fn beacon(&self, dir: &Path) -> Port {
        each!(self, d => d.beacon(dir))
    }
    async fn stop_network(&self, cluster: &str) {
        each!(self, d => d.stop_network(cluster).await)
    }
    fn configure(&self, config: &HostConfig) {
        each!(self, d => d.configure(config))
    }
    async fn forget(&self, dir: &Path) -> anyhow::Result<()> {
        each!(self, d => d.forget(dir).await)
    }
    async fn stage(&self, base: &Path, digest: &str) -> anyhow::Result<()> {
        each!(self, d => d.stage(base, digest).await)
    }
    fn stages(&self) -> bool {
        each!(self, d => d.stages())
    }
    async fn prune_images(&self, keep: &BTreeSet<Digest>) -> anyhow::Result<()> {
        each!(self, d => d.prune_images(keep).await)
    }
}
