//! [`HyperV`]: the [`Driver`] that makes and runs node VMs on a Hyper-V host through plans.
//!
//! Everything of a VM lives on the host under the root R: the node images as
//! `R\images\HEX.vhdx` (uploaded once per digest, removed once the store no longer keeps it
//! and no disk rests on it: [`Driver::prune_images`]), and per VM `R\vms\NAME\` with its
//! state disk `state.vhdx`, one differencing OS disk per image `os-HEX16.vhdx`, and the seed
//! `seed-HEX16.vhdx` (named by its content: never rewritten in place).
//! NAME is the run directory's path under `STATE/nodes` joined with `.`: `worker-1`, and
//! `worker-1.gen-2` for a surge's replacement (a node name has no dot, so no node's NAME is
//! another's replacement). The run directory here keeps the seed as it was
//! written and nothing else of the VM.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::exec::{self, Executor};
use super::parse::{
    self, BeaconAnswer, Created, HowStopped, Pruned, Purged, Removed, Started, StopAnswer,
};
use super::plan::{self, NewVm};
use crate::beacon::{Poll, Port};
use crate::config::{HostConfig, HyperVHost, Link};
use crate::driver::{Driver, StopDeadlines, Stopped, VmSpec, VmStatus};
use crate::model::Digest;

/// The KVP item a node's beacon line is published as.
pub const BEACON_ITEM: &str = "SlipwayBeacon";

/// The Hyper-V driver.
pub struct HyperV {
    exec: Arc<Executor>,
    switch: String,
    root: String,
    /// `STATE/nodes`: run directories below it name their VMs.
    nodes: PathBuf,
    /// Each cluster's VLAN (0: untagged), from the host config in force.
    vlans: Mutex<BTreeMap<String, u16>>,
    /// Image digests (hex) known to be on the host.
    images: exec::Gates,
    /// Held (shared) while an image is uploaded or a disk is made over one; the prune runs
    /// only when it can hold it alone, so it never removes an image in that window.
    using: tokio::sync::RwLock<()>,
}

impl HyperV {
    /// The driver for `host`, keeping run directories under `state_dir`.
    pub fn open(host: &HyperVHost, state_dir: &Path) -> HyperV {
        let executor = match &host.executor {
            crate::config::hyperv::Executor::Local => Executor::Local(exec::Local::new(
                PathBuf::from("powershell.exe"),
                PathBuf::from(&host.root),
            )),
            crate::config::hyperv::Executor::Ssh(target) => {
                let mut ssh = exec::Ssh::new(target.target.clone(), host.root.clone());
                ssh.port = target.port;
                ssh.identity.clone_from(&target.identity);
                ssh.known_hosts.clone_from(&target.known_hosts);
                Executor::Ssh(ssh)
            }
        };
        HyperV::with_executor(executor, host, state_dir)
    }

    /// The driver for `host` running its plans through `executor`.
    pub fn with_executor(executor: Executor, host: &HyperVHost, state_dir: &Path) -> HyperV {
        HyperV {
            exec: Arc::new(executor),
            switch: host.switch.clone(),
            root: host.root.trim_end_matches('\\').to_owned(),
            nodes: state_dir.join("nodes"),
            vlans: Mutex::default(),
            images: exec::Gates::default(),
            using: tokio::sync::RwLock::default(),
        }
    }

    /// The VM's name on the host for run directory `dir`.
    fn vm_name(&self, dir: &Path) -> anyhow::Result<String> {
        let relative = dir.strip_prefix(&self.nodes).with_context(|| {
            format!(
                "run directory {} is not under {}",
                dir.display(),
                self.nodes.display()
            )
        })?;
        let parts = relative
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()
            .filter(|parts| !parts.is_empty())
            .with_context(|| format!("run directory {} names no VM", dir.display()))?;
        Ok(parts.join("."))
    }

    /// `R\vms\NAME`.
    fn vm_dir(&self, name: &str) -> String {
        format!("{}\\vms\\{name}", self.root)
    }

    /// `R\images`.
    fn images_dir(&self) -> String {
        format!("{}\\images", self.root)
    }

    /// `R\images\HEX.vhdx` for image `digest` (`sha256:HEX`).
    fn image_path(&self, digest: &str) -> anyhow::Result<String> {
        Ok(format!("{}\\{}.vhdx", self.images_dir(), hex(digest)?))
    }

    /// The OS disk's file name in the VM's directory for image `digest`.
    fn os_disk_file(digest: &str) -> anyhow::Result<String> {
        Ok(format!("os-{}.vhdx", &hex(digest)?[..16]))
    }

    /// Uploads the image `digest` from `base` unless the host has it (the caller holds
    /// `using`). An upload of one image never holds up another's, or a disk over another.
    async fn ensure_image(&self, base: &Path, digest: &str) -> anyhow::Result<String> {
        let remote = self.image_path(digest)?;
        let gate = self.images.gate(&remote);
        let mut there = gate.lock().await;
        if !*there {
            if !self.exec.exists(&remote).await? {
                tracing::info!(image = %digest, to = %remote, "uploading the node image to the Hyper-V host");
                self.exec.upload(base, &remote).await?;
            }
            *there = true;
        }
        Ok(remote)
    }

    /// Runs `plan` and reads its answer.
    async fn ask<T: serde::de::DeserializeOwned>(&self, plan: &plan::Plan) -> anyhow::Result<T> {
        let output = self.exec.run(plan).await?;
        Ok(parse::answer(plan.action, &output)?)
    }

    /// Makes VM `name`'s OS disk over image `digest` (uploaded from `base`) unless it exists.
    async fn os_disk(&self, name: &str, base: &Path, digest: &str) -> anyhow::Result<String> {
        let _using = self.using.read().await;
        let parent = self.ensure_image(base, digest).await?;
        let path = format!("{}\\{}", self.vm_dir(name), HyperV::os_disk_file(digest)?);
        if let Err(e) = self.ask::<Created>(&plan::os_disk(&parent, &path)).await {
            // The image may be what is gone (pruned by hand): the next try looks for it again.
            *self.images.gate(&parent).lock().await = false;
            return Err(e);
        }
        Ok(path)
    }
}

/// The hex of a `sha256:HEX` digest.
fn hex(digest: &str) -> anyhow::Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("{digest:?} is not a sha256 digest"))
}

/// Hyper-V's Secure Boot template for what an image's manifest asks (`boot.secure_boot`).
pub fn secure_boot_template(asked: &str) -> anyhow::Result<&'static str> {
    Ok(match asked {
        "none" => "None",
        "MicrosoftWindows" => "MicrosoftWindows",
        "MicrosoftUEFICertificateAuthority" => "MicrosoftUEFICertificateAuthority",
        other => anyhow::bail!(
            "the image asks for Secure Boot keys {other:?}, which Hyper-V has no template for \
             (none, MicrosoftWindows, MicrosoftUEFICertificateAuthority)"
        ),
    })
}

impl Driver for HyperV {
    async fn prepare(&self, spec: &VmSpec) -> anyhow::Result<()> {
        let name = self.vm_name(&spec.dir)?;
        let directory = self.vm_dir(&name);
        let vlan = self
            .vlans
            .lock()
            .map_err(|_| anyhow::anyhow!("the VLAN table is poisoned"))?
            .get(&spec.network.cluster)
            .copied()
            .unwrap_or(0);
        let state_disk = format!("{directory}\\state.vhdx");
        let template = secure_boot_template(&spec.secure_boot)?;
        let created: Created = self
            .ask(&plan::create_vm(&NewVm {
                name: &name,
                directory: &directory,
                memory_bytes: spec.memory,
                processors: spec.cpus,
                switch: &self.switch,
                mac: &spec.mac,
                vlan,
                secure_boot_template: template,
                state_disk: &state_disk,
                state_disk_bytes: spec.state_disk,
            }))
            .await
            .with_context(|| format!("cannot make VM {name} on the Hyper-V host"))?;
        if created.created {
            tracing::info!(vm = %name, "Hyper-V VM made");
        }
        if !created.differs.is_empty() {
            // A VM is never changed under a node: what host.toml changed applies when the VM
            // is made again (a surge's replacement, or after `slipwayd purge`).
            tracing::warn!(vm = %name, differs = ?created.differs, "the VM on the Hyper-V host differs from host.toml; it keeps its settings");
        }
        self.os_disk(&name, &spec.base, &spec.image).await?;
        Ok(())
    }

    async fn overlay(&self, dir: &Path, base: &Path, image: &str) -> anyhow::Result<()> {
        let name = self.vm_name(dir)?;
        self.os_disk(&name, base, image).await?;
        Ok(())
    }

    async fn drop_overlays(&self, dir: &Path, keep: &str) -> anyhow::Result<()> {
        let name = self.vm_name(dir)?;
        let removed: Removed = self
            .ask(&plan::drop_os_disks(
                &name,
                &self.vm_dir(&name),
                &HyperV::os_disk_file(keep)?,
            ))
            .await?;
        if !removed.removed.is_empty() {
            tracing::info!(vm = %name, removed = ?removed.removed, "previous OS disks removed");
        }
        Ok(())
    }

    async fn start(&self, spec: &VmSpec) -> anyhow::Result<u32> {
        let name = self.vm_name(&spec.dir)?;
        let directory = self.vm_dir(&name);
        // The seed is written raw (a FAT volume); Hyper-V attaches VHDX files. Each seed has a
        // name of its own (its content's digest) and is never rewritten in place: Hyper-V grants
        // a VM access to a disk file when it attaches it, and a file replaced under the same name
        // would not carry that grant. start-vm removes the seeds it no longer attaches.
        let raw = spec.seed.clone();
        let digest = tokio::task::spawn_blocking(move || images::oci::digest_file(&raw))
            .await??
            .0;
        let seed = format!("{directory}\\seed-{}.vhdx", &hex(&digest)?[..16]);
        if !self.exec.exists(&seed).await? {
            let (raw, vhdx) = (spec.seed.clone(), spec.dir.join("seed.vhdx"));
            let local = vhdx.clone();
            tokio::task::spawn_blocking(move || seed_vhdx(&raw, &local)).await??;
            self.exec.upload(&vhdx, &seed).await?;
        }
        let os_disk = format!("{directory}\\{}", HyperV::os_disk_file(&spec.image)?);
        let started: Started = self
            .ask(&plan::start_vm(&name, &os_disk, &seed))
            .await
            .with_context(|| format!("cannot start VM {name} on the Hyper-V host"))?;
        Ok(started.pid)
    }

    async fn stop(
        &self,
        _name: &str,
        dir: &Path,
        deadlines: StopDeadlines,
    ) -> anyhow::Result<Stopped> {
        let name = self.vm_name(dir)?;
        let answer: StopAnswer = self
            .ask(&plan::stop_vm(&name, deadlines.powerdown))
            .await
            .with_context(|| format!("cannot stop VM {name} on the Hyper-V host"))?;
        Ok(match answer.stopped {
            HowStopped::AlreadyStopped => Stopped::AlreadyStopped,
            HowStopped::ShutDown => Stopped::PoweredDown,
            HowStopped::TurnedOff => Stopped::Killed,
        })
    }

    async fn status(&self, _name: &str, dir: &Path) -> VmStatus {
        let name = match self.vm_name(dir) {
            Ok(name) => name,
            Err(_) => return VmStatus::Stopped,
        };
        match self.ask::<parse::VmState>(&plan::status(&name)).await {
            Ok(vm) => vm_status(&vm),
            // Not knowing is not "stopped": nothing may start a second VM, or delete its disks.
            Err(e) => VmStatus::unknown(format!("{e:#}")),
        }
    }

    fn beacon(&self, dir: &Path) -> Port {
        let name = self
            .vm_name(dir)
            .unwrap_or_else(|_| dir.display().to_string());
        Port::Poll(Arc::new(Kvp {
            exec: self.exec.clone(),
            name,
        }))
    }

    async fn stop_network(&self, _cluster: &str) {}

    fn configure(&self, config: &HostConfig) {
        let vlans = config
            .clusters
            .iter()
            .map(|(name, cluster)| {
                let vlan = match cluster.link {
                    Link::HyperV { vlan } => vlan.unwrap_or(0),
                    _ => 0,
                };
                (name.clone(), vlan)
            })
            .collect();
        if let Ok(mut table) = self.vlans.lock() {
            *table = vlans;
        }
    }

    async fn stage(&self, base: &Path, digest: &str) -> anyhow::Result<()> {
        let _using = self.using.read().await;
        self.ensure_image(base, digest).await?;
        Ok(())
    }

    fn stages(&self) -> bool {
        true
    }

    async fn prune_images(&self, keep: &BTreeSet<Digest>) -> anyhow::Result<()> {
        // A store that keeps nothing is a state directory just made (or lost): the images on
        // the host may be what VMs this slipwayd does not know of yet rest on. Removing them
        // would only win disk space, so nothing is removed (nor could the plan be given an
        // empty Keep).
        if keep.is_empty() {
            tracing::debug!("the store keeps no image: none pruned on the Hyper-V host");
            return Ok(());
        }
        let keep: Vec<&str> = keep.iter().map(Digest::hex).collect();
        // Held alone while the plan runs: no upload, nor a disk made over an image, comes
        // between the plan and the gates forgetting what it removed. Never waited for (an
        // upload may take hours, and a waiting prune would hold up every boot): skipped, and
        // done at a later pull.
        let Ok(_alone) = self.using.try_write() else {
            tracing::debug!(
                "an image is being uploaded or used: the Hyper-V host's images are pruned at a later pull"
            );
            return Ok(());
        };
        let pruned: Pruned = self
            .ask(&plan::prune_images(
                &self.images_dir(),
                &format!("{}\\vms", self.root),
                &keep,
            ))
            .await
            .context("cannot prune the node images on the Hyper-V host")?;
        for removed in &pruned.removed {
            let path = self.image_path(&format!("sha256:{removed}"))?;
            *self.images.gate(&path).lock().await = false;
        }
        if !pruned.removed.is_empty() {
            tracing::info!(removed = ?pruned.removed, "node images the store no longer keeps removed from the Hyper-V host");
        }
        Ok(())
    }

    async fn forget(&self, dir: &Path) -> anyhow::Result<()> {
        let name = self.vm_name(dir)?;
        let purged: Purged = self
            .ask(&plan::remove_vm(&name, &self.vm_dir(&name)))
            .await
            .with_context(|| {
                format!("cannot remove VM {name} and its disks from the Hyper-V host")
            })?;
        if purged.removed {
            tracing::info!(vm = %name, "Hyper-V VM and its disks removed");
        }
        Ok(())
    }
}

/// What a `status` answer means to the daemon.
fn vm_status(vm: &parse::VmState) -> VmStatus {
    let pid = vm.pid.unwrap_or(0);
    match vm.state.as_deref() {
        _ if !vm.exists => VmStatus::Stopped,
        Some("Off") => VmStatus::Stopped,
        // Starting and stopping VMs are alive: nothing may start them again meanwhile.
        Some("Running" | "Starting" | "Stopping") => VmStatus::Running { pid },
        Some(other) => VmStatus::Paused {
            pid,
            status: other.to_lowercase(),
        },
        None => VmStatus::Paused {
            pid,
            status: "in an unknown state".to_owned(),
        },
    }
}

/// Writes the raw seed `raw` as the VHDX `vhdx` (0600: it holds a bootstrap token), atomically.
fn seed_vhdx(raw: &Path, vhdx: &Path) -> anyhow::Result<()> {
    use images::vhdx::{Extent, Identity, Options};
    let file =
        std::fs::File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let len = file.metadata()?.len();
    let extents = [Extent::File {
        file: Arc::new(file),
        offset: 0,
        len,
    }];
    let part = vhdx.with_extension("vhdx.part");
    let options = Options::new(Identity::random()?);
    images::vhdx::writer::write_file(&part, &extents, &options, &mut |_| {})
        .with_context(|| format!("cannot write the seed VHDX {}", part.display()))?;
    // The seed holds the cluster's keys: 0600 on Unix; on Windows the file inherits the ACL of
    // the state directory, which the operator restricts (slipwayd sets no ACL itself).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&part, vhdx)
        .with_context(|| format!("cannot rename {} into place", part.display()))?;
    Ok(())
}

/// A node's beacon as its KVP item, read by the `beacon` plan.
struct Kvp {
    exec: Arc<Executor>,
    name: String,
}

impl Poll for Kvp {
    fn read(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Option<String>>> + Send + '_>> {
        Box::pin(async move {
            let plan = plan::beacon(&self.name);
            let output = self.exec.run(&plan).await?;
            let answer: BeaconAnswer = parse::answer(plan.action, &output)?;
            if !answer.exists || !answer.running {
                return Ok(None);
            }
            Ok(parse::kvp_value(&answer.items, BEACON_ITEM))
        })
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
