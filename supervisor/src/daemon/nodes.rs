//! The node executor: carries out the reconcile actions (start, keep, stop) through the
//! driver, judges beacons, and watches for silence, exits and crash loops.
//!
//! A node boots the image its record names; a node that never booted takes the verified image
//! of its OS's channel, and its record names it before its VM starts (durable before the side
//! effect). An image of another OS than the node's is never booted. Its address and MAC come
//! from its record too, and only the node recorded as its cluster's initialiser is ever sent an
//! InitConfiguration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::health::{Booted, judge};
use super::{Daemon, Event, unix_now};
use crate::api::NodeInfo;
use crate::beacon::{Heard, Listener};
use crate::config;
use crate::driver::{Driver, NetSpec, Stopped, VmSpec, VmStatus};
use crate::model::{CRASHLOOP_AFTER, Digest, NodeState, jitter};
use crate::reconcile::{self, Action, Observed};
use crate::records::{self, NodeRecord};
use crate::seed;
use crate::swap;

/// How long [`Daemon::sweep_leftovers`] waits before trying a generation's leftovers again.
const SWEEP_AGAIN: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether a node's own directory (generation 0's run directory) holds files of a VM: anything
/// but its record, its later generations' directories and a record being written.
fn has_leftovers(root: &Path) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            !(file == "record"
                || records::generation_dir(&file).is_some()
                || (file.starts_with('.') && file.ends_with(".tmp")))
        })
}

/// How many VMs [`Daemon::statuses`] asks about at once.
const STATUS_ASKS: usize = 8;

/// What the loop knows of a node beyond its record.
pub(super) struct Node {
    name: String,
    cluster: String,
    role: String,
    address: String,
    pub(super) state: NodeState,
    pub(super) reason: String,
    /// sha256 of the kubeadm documents its seed carries.
    documents: String,
    /// The image it was started from.
    booted: Option<Booted>,
    pub(super) pid: u32,
    last_beacon: i64,
    /// Its last ready beacon (Unix seconds, fractional; 0: none yet).
    pub(super) last_ready: f64,
    /// The node id its state disk holds, as its beacon says.
    pub(super) node_id: String,
    /// What its beacon says of its state disk (`mounted`, `formatted`, ...).
    pub(super) state_disk: String,
    uptime: u64,
    heard: Option<Instant>,
    /// Its beacon port closed since its last beacon (its QEMU may have ended).
    lost: bool,
    /// When it entered a state whose deadline counts (start, re-attach).
    since: Option<Instant>,
    /// Consecutive exits without a ready beacon in between.
    pub(super) failures: u32,
    /// Whether it was ready since its VM last started.
    ready_since_start: bool,
    /// Not started again before this (crash backoff).
    pub(super) next_start: Option<Instant>,
    listener: Option<Listener>,
}

impl Node {
    fn new(name: &str) -> Node {
        Node {
            name: name.to_owned(),
            cluster: String::new(),
            role: String::new(),
            address: String::new(),
            state: NodeState::Waiting,
            reason: String::new(),
            documents: String::new(),
            booted: None,
            pid: 0,
            last_beacon: 0,
            last_ready: 0.0,
            node_id: String::new(),
            state_disk: String::new(),
            uptime: 0,
            heard: None,
            lost: false,
            since: None,
            failures: 0,
            ready_since_start: false,
            next_start: None,
            listener: None,
        }
    }

    /// Moves to `state`; a move the lifecycle does not allow is a bug, logged and not made.
    pub(super) fn set(&mut self, state: NodeState, reason: impl Into<String>) {
        if state != self.state && !self.state.may_become(state) {
            tracing::error!(
                node = %self.name,
                from = %self.state,
                to = %state,
                "a node state change the lifecycle does not allow was asked for: ignored"
            );
            return;
        }
        self.state = state;
        self.reason = reason.into();
    }

    /// Whether its beacon port closed since its last beacon (its VM may have ended).
    pub(super) fn is_lost(&self) -> bool {
        self.lost
    }

    /// How long since its last beacon (None: none heard from this VM).
    pub(super) fn quiet(&self) -> Option<std::time::Duration> {
        self.heard.map(|t| t.elapsed())
    }

    fn stop_listening(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.stop();
        }
    }

    /// As the API shows it.
    pub(super) fn info(&self) -> NodeInfo {
        NodeInfo {
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            role: self.role.clone(),
            state: self.state.as_str().to_owned(),
            reason: self.reason.clone(),
            image: self
                .booted
                .as_ref()
                .map_or_else(String::new, |b| format!("{} {}", b.name, b.version)),
            digest: self
                .booted
                .as_ref()
                .map_or_else(String::new, |b| b.digest.clone()),
            address: self.address.clone(),
            last_beacon: self.last_beacon,
            uptime: self.uptime,
            pid: self.pid,
        }
    }
}

/// How long making a node's seed and disks and starting its VM may take.
const BOOT_STEPS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The image a VM started by a slipwayd from before node records booted, from the
/// `image.json` it wrote beside the VM: such a node keeps its image like any other.
fn booted_before_records(dir: &Path) -> Option<Digest> {
    #[derive(serde::Deserialize)]
    struct Booted {
        digest: Digest,
    }
    let bytes = std::fs::read(dir.join("image.json")).ok()?;
    serde_json::from_slice::<Booted>(&bytes)
        .ok()
        .map(|b| b.digest)
}

fn removed_reason() -> String {
    "no longer in host.toml; its disks stay until `slipwayd purge`".into()
}

impl<D: Driver> Daemon<D> {
    /// Records for configured nodes that have none (addresses never renumbered, one
    /// initialiser per cluster), made durable before anything boots.
    pub(super) fn ensure_records(&mut self) -> anyhow::Result<()> {
        let plan = records::plan(
            &self.config,
            &self.records,
            &self.initialisers,
            &self.journal.reserved(),
        )?;
        if plan.is_empty() {
            return Ok(());
        }
        // Records first: a crash before the initialiser is recorded leaves records from which
        // the same one is chosen again.
        for mut record in plan.records {
            if record.image.is_none() {
                record.image = booted_before_records(&self.node_dir(record.name.as_ref()));
            }
            records::save(&self.config.state_dir, &record)?;
            tracing::info!(node = %record.name, address = %record.address, image = ?record.image, "node recorded");
            self.records.insert(record.name.to_string(), record);
        }
        for (cluster, node) in &plan.initialisers {
            records::record_initialiser(&self.config.state_dir, cluster, node)?;
            tracing::info!(%cluster, %node, "recorded as the node that initialises its cluster");
            self.initialisers.insert(cluster.clone(), node.clone());
        }
        Ok(())
    }

    /// Brings the VMs to the config: start, keep, stop.
    pub(super) async fn reconcile(&mut self) {
        self.counters.passes += 1;
        // A node that cannot be recorded is shown failed below; every recorded node is still
        // supervised (one bad edit must not stop restarts and stops of the others).
        self.records_problem = match self.ensure_records() {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::error!("cannot record the nodes: {e:#}");
                format!("cannot record the nodes: {e:#}")
            }
        };
        let wanted: BTreeSet<String> = self.config.nodes.keys().cloned().collect();
        let images = self
            .records
            .iter()
            .filter_map(|(name, r)| Some((name.clone(), r.image.clone()?)))
            .collect();
        for name in wanted.iter().filter(|n| !self.records.contains_key(*n)) {
            let reason = format!("not booted: {}", self.records_problem);
            let node = self
                .nodes
                .entry(name.clone())
                .or_insert_with(|| Node::new(name));
            node.set(NodeState::Failed, reason);
        }
        let statuses = self.observe().await;
        let observed = statuses
            .iter()
            .map(|(name, status)| {
                let seen = match status {
                    VmStatus::Stopped => Observed::Stopped,
                    VmStatus::Running { .. } | VmStatus::Paused { .. } => Observed::Running,
                };
                (name.clone(), seen)
            })
            .collect();
        let fresh = self
            .config
            .nodes
            .values()
            .filter_map(|n| Some((n.name.clone(), self.image_for_new_nodes(&n.cluster, n.os)?)))
            .collect();
        let owned = self.journal.swaps.keys().cloned().collect();
        for action in reconcile::decide(&wanted, &images, &fresh, &observed, &owned) {
            match action {
                Action::Stop { node } => self.stop(&node),
                Action::Start { node, image } => self.start(&node, &image).await,
                Action::Keep { node, image } => {
                    let status = statuses.get(&node).cloned().unwrap_or(VmStatus::Stopped);
                    self.keep(&node, image.as_ref(), status);
                }
                Action::Wait { node } => self.wait(&node),
            }
        }
        // Left behind: not configured, not running. Their disks stay until a purge.
        for (name, seen) in &observed {
            if !wanted.contains(name)
                && *seen == Observed::Stopped
                && !self.journal.swaps.contains_key(name)
            {
                let node = self
                    .nodes
                    .entry(name.clone())
                    .or_insert_with(|| Node::new(name));
                if node.state != NodeState::Removed && node.state != NodeState::Stopping {
                    node.stop_listening();
                    node.pid = 0;
                    node.role.clear();
                    node.cluster.clear();
                    node.set(NodeState::Removed, removed_reason());
                }
            }
        }
        self.stop_strays(&observed).await;
        // Purged: gone from the disk and the config (a surge's replacement stays while its
        // swap runs).
        let swaps = &self.journal.swaps;
        self.nodes.retain(|name, _| {
            wanted.contains(name)
                || observed.contains_key(name)
                || swap::replaced(name).is_some_and(|n| swaps.contains_key(n))
        });
    }

    /// Stops any VM that runs in a node's generation directory that neither its record nor a
    /// surge in flight names (a handover that was undone on the disk only, a replacement whose
    /// start timed out after its disks went): nothing else would ever see it. Its VMs are asked
    /// together; a node's own directory is asked only while it holds a VM's files, and a VM
    /// whose status is unknown (its hypervisor out of reach) is left alone.
    async fn stop_strays(&mut self, observed: &BTreeMap<String, Observed>) {
        let mut asks = Vec::new();
        let mut generations = BTreeMap::new();
        for name in observed.keys() {
            let own = self.node_dir(name);
            let next = self
                .journal
                .swaps
                .get(name)
                .filter(|s| s.surge.is_some())
                .map(|_| self.node_dir(&swap::replacement_key(name)));
            for dir in records::vm_dirs(&self.config.state_dir, name) {
                if dir == own || Some(&dir) == next.as_ref() {
                    continue;
                }
                // Generation 0's directory is the node's own, where its record stays: asked only
                // while it holds a VM's files.
                let generation = if dir == records::run_dir(&self.config.state_dir, name, 0) {
                    has_leftovers(&dir).then_some(0)
                } else {
                    dir.file_name()
                        .and_then(|f| f.to_str())
                        .and_then(records::generation_dir)
                };
                let Some(generation) = generation else {
                    continue;
                };
                let sub = dir.file_name().unwrap_or_default().to_string_lossy();
                let key = format!("{name}/{sub}");
                if !self.strays.contains(&key) {
                    generations.insert(key.clone(), generation);
                    asks.push((key, dir));
                }
            }
        }
        let dirs: BTreeMap<String, PathBuf> = asks.iter().cloned().collect();
        self.swept.retain(|dir, _| dir.exists());
        // One sweep a pass at most: each asks the hypervisor on the loop.
        let mut swept = false;
        for (key, status) in self.statuses(asks).await {
            let (Some(dir), Some((name, _))) = (dirs.get(&key), key.split_once('/')) else {
                continue;
            };
            if status == VmStatus::Stopped {
                if !swept && let Some(generation) = generations.get(&key) {
                    swept = self.sweep_leftovers(name, dir, *generation).await;
                }
                continue;
            }
            if status.is_unknown() {
                continue;
            }
            tracing::warn!(node = %name, dir = %dir.display(), "a VM runs in a generation its node's record does not name: stopping it");
            self.strays.insert(key.clone());
            self.spawn_stop(&key, dir.clone());
        }
    }

    /// Removes what is left in `dir`, generation `generation`'s directory of node `name`, in
    /// which no VM runs and which neither its record nor a swap names: a surge's old VM whose removal the
    /// hypervisor refused (on a Hyper-V host its VM, disks and seed, a bootstrap token with
    /// it, stay there), or one slipwayd stopped before deleting. Tried again at most every
    /// [`SWEEP_AGAIN`]; never while a swap of the node is in flight. Whether it tried.
    async fn sweep_leftovers(&mut self, name: &str, dir: &Path, generation: u32) -> bool {
        if self.journal.swaps.contains_key(name) || !self.records.contains_key(name) {
            return false;
        }
        if self
            .swept
            .get(dir)
            .is_some_and(|t| t.elapsed() < SWEEP_AGAIN)
        {
            return false;
        }
        self.swept.insert(dir.to_owned(), Instant::now());
        match self.remove_generation(name, generation).await {
            Ok(()) if !dir.exists() || (generation == 0 && !has_leftovers(dir)) => {
                tracing::info!(node = %name, generation, "removed the leftovers of a generation it no longer runs");
                self.swept.remove(dir);
            }
            // Kept by the hypervisor: remove_generation said why.
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(node = %name, generation, "cannot remove the leftovers of a generation it no longer runs: {e:#}");
            }
        }
        true
    }

    /// Every node directory in the state directory, with what the VM of its record's
    /// generation is doing.
    async fn observe(&self) -> BTreeMap<String, VmStatus> {
        let dir = self.config.state_dir.join("nodes");
        let asks = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            .map(|name| {
                let dir = self.node_dir(&name);
                (name, dir)
            })
            .collect();
        self.statuses(asks).await
    }

    /// What the VM of each `(name, run directory)` of `asks` is doing, asked at once, at most
    /// [`STATUS_ASKS`] at a time: a slow hypervisor (a Hyper-V host answers each ask with a
    /// PowerShell of its own, up to its plan's deadline) holds the loop for about its slowest
    /// answer, not for the sum of them. An ask whose task failed is [`VmStatus::unknown`].
    async fn statuses(&self, asks: Vec<(String, PathBuf)>) -> BTreeMap<String, VmStatus> {
        let permits = Arc::new(tokio::sync::Semaphore::new(STATUS_ASKS));
        let mut tasks = tokio::task::JoinSet::new();
        let mut names = BTreeMap::new();
        for (name, dir) in asks {
            let (driver, permits) = (self.driver.clone(), permits.clone());
            let task = name.clone();
            let handle = tasks.spawn(async move {
                // Never closed: an ask always gets its turn.
                let _permit = permits.acquire_owned().await;
                let status = driver.status(&task, &dir).await;
                (task, status)
            });
            names.insert(handle.id(), name);
        }
        // Not join_all: it panics with a task that did.
        let mut seen = BTreeMap::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((name, status)) => {
                    seen.insert(name, status);
                }
                Err(e) => {
                    let name = names.get(&e.id()).cloned().unwrap_or_default();
                    tracing::error!(vm = %name, "asking for the VM's status failed: {e}");
                    seen.insert(name, VmStatus::unknown(format!("asking failed: {e}")));
                }
            }
        }
        seen
    }

    /// The config and record of the VM tracked as `key`: a configured node's own, or, for a
    /// surge's replacement (`NAME/next`), the record it will hand over to its node.
    pub(super) fn identity(&self, key: &str) -> Option<(config::Node, NodeRecord)> {
        let Some(name) = swap::replaced(key) else {
            let node = self.config.nodes.get(key)?.clone();
            return Some((node, self.records.get(key)?.clone()));
        };
        let node = self.config.nodes.get(name)?.clone();
        let record = self.records.get(name)?;
        let swap = self.journal.swaps.get(name)?;
        let next = swap.surge.as_ref()?;
        let record = NodeRecord {
            image: Some(swap.to.clone()),
            address: next.address,
            mac: next.mac.clone(),
            initialises: false,
            generation: next.generation,
            ..record.clone()
        };
        Some((node, record))
    }

    /// The tracked entry of configured node `name` (or of a surge's replacement, see
    /// [`Daemon::identity`]), its facts refreshed from the config and its record.
    pub(super) fn tracked(&mut self, name: &str) -> Option<(config::Node, NodeRecord, &mut Node)> {
        let (node, record) = self.identity(name)?;
        let tracked = self
            .nodes
            .entry(name.to_owned())
            .or_insert_with(|| Node::new(name));
        tracked.cluster.clone_from(&node.cluster);
        tracked.role = node.role.to_string();
        if tracked.address.is_empty() || tracked.last_beacon == 0 {
            tracked.address = record.address.to_string();
        }
        Some((node, record, tracked))
    }

    fn wait(&mut self, name: &str) {
        let os = self
            .config
            .nodes
            .get(name)
            .map_or_else(Default::default, |n| n.os);
        let reason = match self.channels.get(os) {
            // Not configured: host.toml refuses a Windows node without a windows-channel.
            None => format!("not booted: the host follows no channel of {os} images"),
            Some(channel) => {
                let (which, problem) = (
                    format!("channel {} ({os} nodes)", channel.name),
                    channel.reason.clone(),
                );
                match channel.target_digest() {
                    Some(target) => format!(
                        "not booted: the image {} of its {which} failed on this host or its rollout was aborted in this cluster, and the image before it is not usable (promote another image)",
                        self.image_label(&target)
                    ),
                    None if problem.is_empty() => {
                        format!("not booted: no verified image yet on its {which}")
                    }
                    None => format!("not booted: no verified image yet on its {which} ({problem})"),
                }
            }
        };
        if let Some((_, _, tracked)) = self.tracked(name) {
            tracked.set(NodeState::Waiting, reason);
        }
    }

    pub(super) async fn start(&mut self, name: &str, image: &Digest) {
        let Some((_, _, tracked)) = self.tracked(name) else {
            return;
        };
        if tracked.next_start.is_some_and(|t| Instant::now() < t) {
            return;
        }
        // An image the hypervisor does not have yet is brought there first, in the
        // background: the node waits, without counting towards its crash backoff.
        if let Some(why) = self.waits_for_image(image) {
            if let Some((_, _, tracked)) = self.tracked(name) {
                tracked.set(NodeState::Waiting, format!("not booted: {why}"));
            }
            return;
        }
        let Err(e) = self.launch(name, image).await else {
            return;
        };
        if self.waits_for_token(name, &e) {
            return;
        }
        let backoff = self.backoff;
        let Some((_, _, tracked)) = self.tracked(name) else {
            return;
        };
        // Tried again after the crash backoff, counted towards crashloop.
        tracked.pid = 0;
        tracked.failures += 1;
        let delay = backoff.delay(tracked.failures, jitter());
        tracked.next_start = Some(Instant::now() + delay);
        tracing::error!(node = %name, delay_s = delay.as_secs(), "cannot start the node VM: {e:#}");
        let state = if tracked.failures >= CRASHLOOP_AFTER {
            NodeState::Crashloop
        } else {
            NodeState::Failed
        };
        let reason = format!(
            "cannot start its VM: {e:#} (tried {} times; next try in {} s)",
            tracked.failures,
            delay.as_secs()
        );
        tracked.set(state, reason);
    }

    /// Makes node `name`'s seed and disks and starts its VM on `image` (its record names the
    /// image first), then tracks the started VM: listening to its beacon, judging it against
    /// `image`.
    pub(super) async fn launch(&mut self, name: &str, image: &Digest) -> anyhow::Result<()> {
        // The image reaches the hypervisor first, under its own deadline: on a Hyper-V host
        // that is an upload of gigabytes, which the boot steps' deadline would cut short. A
        // start or a swap waited for it in the background (see `staging`), so this finds it
        // there; only a rollback's boot after a restart asks the host inline (it has it).
        if let Some(stored) = self.store.get(image.as_ref())? {
            self.driver
                .stage(&stored.vhdx, image.as_str())
                .await
                .context("cannot bring its image to the hypervisor")?;
        }
        // A QEMU or qemu-img that hangs must not hold the loop.
        let (booted, documents, pid) =
            tokio::time::timeout(BOOT_STEPS_DEADLINE, self.boot(name, image))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "its seed, disks and VM start took over {} s",
                        BOOT_STEPS_DEADLINE.as_secs()
                    ))
                })?;
        let events = self.events.clone();
        let socket = self.driver.beacon(&self.node_dir(name));
        let Some((_, _, tracked)) = self.tracked(name) else {
            anyhow::bail!("node {name} is no longer configured");
        };
        tracing::info!(node = %name, image = %booted.name, version = %booted.version, pid, "node VM started");
        tracked.pid = pid;
        tracked.booted = Some(booted);
        tracked.documents = documents;
        tracked.heard = None;
        tracked.since = Some(Instant::now());
        tracked.ready_since_start = false;
        tracked.next_start = None;
        // What the previous VM said of its state disk is not what this one will.
        tracked.node_id.clear();
        tracked.state_disk.clear();
        tracked.set(NodeState::Starting, "booting; waiting for its first beacon");
        if tracked.listener.is_none() {
            tracked.listener = Some(Listener::start(name, socket, events, Event::Heard));
        }
        self.counters.starts += 1;
        Ok(())
    }

    /// Seed, disks and VM for node `name` from `image`: the booted image, the digest of the
    /// documents sent, the pid.
    async fn boot(&mut self, name: &str, image: &Digest) -> anyhow::Result<(Booted, String, u32)> {
        let (spec, booted, documents) = self.prepare(name, image).await?;
        let pid = self.driver.start(&spec).await?;
        Ok((booted, documents, pid))
    }

    /// Seed and disks for the VM tracked as `name` (a node, or a surge's replacement) on
    /// `image`: what starts it, the image and the digest of the documents sent. A node's
    /// record names the image first.
    pub(super) async fn prepare(
        &mut self,
        name: &str,
        image: &Digest,
    ) -> anyhow::Result<(VmSpec, Booted, String)> {
        let stored = self.store.get(image.as_ref())?.ok_or_else(|| {
            anyhow::anyhow!(
                "its image {image} is not in the store (a node only boots the image its record names; see `slipwayd status`)"
            )
        })?;
        let (node, mut record, _) = self
            .tracked(name)
            .ok_or_else(|| anyhow::anyhow!("node {name} is not configured"))?;
        // Checked before the record names it: a node never boots another OS's image.
        if let Some(why) = super::channel::wrong_os(&node, &stored) {
            anyhow::bail!("{why}");
        }
        // The record names the image before the VM exists: a crash from here on restarts it
        // on this image, never on whatever the channel names by then. (A replacement's record
        // is written at its handover.)
        if swap::replaced(name).is_none() && record.image.as_ref() != Some(image) {
            record.image = Some(image.clone());
            records::save(&self.config.state_dir, &record)?;
            self.records.insert(name.to_owned(), record.clone());
        }
        let cluster = self
            .config
            .clusters
            .get(&node.cluster)
            .ok_or_else(|| anyhow::anyhow!("cluster {} is not configured", node.cluster))?;
        let placed = record.placed(&node);
        let dir = self.node_dir(name);
        // The seed: the cluster's PKI (made on first use) and a FAT image (mkfs.vfat, mcopy),
        // written on the blocking pool so beacons, D-Bus and metrics are served meanwhile.
        let seed_path = seed::image_path(&dir);
        let (config, init, path) = (self.config.clone(), record.initialises, seed_path.clone());
        let for_seed = placed.clone();
        // The seed names the Kubernetes of the image the node boots: a swap to a newer one
        // upgrades the node at its first boot.
        let kubernetes = stored.manifest.kubernetes.clone();
        let token = self.join_token(name, &node.cluster, init).await?;
        let seed = tokio::task::spawn_blocking(move || -> anyhow::Result<seed::Seed> {
            let seed = super::tokens::render(
                &config,
                &for_seed,
                init,
                token.as_ref(),
                kubernetes.as_deref(),
            )?;
            if let Some(dir) = path.parent() {
                crate::persist::private_dir(dir)?;
            }
            seed::write_image(&seed, &path)?;
            super::tokens::written(&path, token.as_ref(), &seed.kubeadm_sha256)?;
            Ok(seed)
        })
        .await??;
        // The seed's network-config finds the node's NIC by this MAC.
        anyhow::ensure!(
            seed.mac == record.mac,
            "node {name}: its record's MAC {} differs from its seed's {}",
            record.mac,
            seed.mac
        );
        let spec = VmSpec {
            name: placed.name.clone(),
            dir,
            base: stored.vhdx.clone(),
            image: image.to_string(),
            seed: seed_path,
            state_disk: node.state_disk,
            cpus: node.cpus,
            memory: node.memory,
            mac: record.mac.clone(),
            network: NetSpec {
                cluster: node.cluster.clone(),
                gateway: cluster.gateway,
                prefix: cluster.network.prefix,
            },
            secure_boot: stored.manifest.boot.secure_boot.clone(),
        };
        self.driver.prepare(&spec).await?;
        Ok((spec, Booted::from(&stored), seed.kubeadm_sha256))
    }

    /// A configured node whose VM runs: re-attach (after a restart) and refresh what it must
    /// report.
    pub(super) fn keep(&mut self, name: &str, image: Option<&Digest>, status: VmStatus) {
        let dir = self.node_dir(name);
        let stored = image.and_then(|digest| self.store.get(digest.as_ref()).ok().flatten());
        let booted = stored.as_ref().map(Booted::from);
        // The same documents `prepare` wrote: the initialiser's name its image's Kubernetes.
        let kubernetes = stored.and_then(|i| i.manifest.kubernetes);
        let documents = self.identity(name).map(|(node, record)| {
            let dir = self.node_dir(name);
            // What the seed was written with, as recorded then (a newer slipwayd, or an
            // edited host.toml, may render other documents: the node still runs these).
            if let Some(recorded) = super::tokens::recorded_digest(&dir)? {
                return Ok(recorded);
            }
            super::tokens::as_written(
                &self.config,
                &record.placed(&node),
                record.initialises,
                &dir,
                kubernetes.as_deref(),
            )
            .map(|s| s.kubeadm_sha256)
        });
        let events = self.events.clone();
        let socket = self.driver.beacon(&dir);
        let Some((_, _, tracked)) = self.tracked(name) else {
            return;
        };
        match documents {
            Some(Ok(documents)) => tracked.documents = documents,
            Some(Err(e)) => {
                tracked.set(NodeState::Failed, format!("cannot render its seed: {e:#}"));
                return;
            }
            None => {}
        }
        if tracked.booted.is_none() {
            tracked.booted = booted;
        }
        match status {
            VmStatus::Running { pid } => tracked.pid = pid,
            // Nothing is known of the VM this pass: its state stays what it was (a node whose
            // host stays out of reach falls silent, and its beacons' absence says so).
            unknown if unknown.is_unknown() => {
                tracing::warn!(node = %name, ?unknown, "its VM's status is not known");
                return;
            }
            VmStatus::Paused { pid, status } => {
                tracked.pid = pid;
                // QEMU can run and its guest not: a KVM or TCG internal error pauses the VM.
                tracked.set(NodeState::Failed, format!("its VM runs but is {status}"));
                return;
            }
            VmStatus::Stopped => return,
        }
        // Configured again while it was being stopped, or after, or found after a restart:
        // it is ours again.
        if matches!(
            tracked.state,
            NodeState::Stopping
                | NodeState::Removed
                | NodeState::Exited
                | NodeState::Crashloop
                | NodeState::Failed
                | NodeState::Waiting
        ) {
            tracked.since = Some(Instant::now());
            let reason = format!(
                "its VM runs (pid {}); waiting for its next beacon",
                tracked.pid
            );
            tracked.set(NodeState::Starting, reason);
        }
        if tracked.listener.is_none() {
            tracked.listener = Some(Listener::start(name, socket, events, Event::Heard));
        }
    }

    /// A node no longer configured whose VM runs: stop it in the background (power-down,
    /// quit, kill, each with its deadline).
    fn stop(&mut self, name: &str) {
        let dir = self.node_dir(name);
        let tracked = self
            .nodes
            .entry(name.to_owned())
            .or_insert_with(|| Node::new(name));
        if tracked.state == NodeState::Stopping {
            return;
        }
        // No longer configured: no role (status and metrics count configured nodes by it).
        tracked.role.clear();
        tracked.cluster.clear();
        tracked.stop_listening();
        tracked.set(
            NodeState::Stopping,
            "no longer in host.toml: powering down (its disks stay)",
        );
        tracing::info!(node = %name, "no longer configured: stopping its VM; its state disk stays");
        self.spawn_stop(name, dir);
    }

    /// Stops the VM of `name` in `dir` in the background (power-down, quit, kill, each with
    /// its deadline); [`Event::Stopped`] says how it ended.
    pub(super) fn spawn_stop(&self, name: &str, dir: std::path::PathBuf) {
        let (events, driver) = (self.events.clone(), self.driver.clone());
        let name = name.to_owned();
        let deadlines = super::admin::stop_deadlines(&self.deadlines);
        tokio::spawn(async move {
            let result = driver
                .stop(&name, &dir, deadlines)
                .await
                .map_err(|e| format!("{e:#}"));
            let _ = events.send(Event::Stopped(name, result));
        });
    }

    pub(super) fn stopped(&mut self, name: &str, result: Result<Stopped, String>) {
        if self.strays.remove(name) {
            match result {
                Ok(how) => tracing::info!(vm = %name, ?how, "the stray VM stopped"),
                Err(e) => tracing::error!(vm = %name, "cannot stop the stray VM: {e}"),
            }
            return;
        }
        let owner = swap::replaced(name).unwrap_or(name);
        if self.journal.swaps.contains_key(owner) {
            self.swap_stopped(name, result);
            return;
        }
        let configured = self.config.nodes.contains_key(name);
        let Some(tracked) = self.nodes.get_mut(name) else {
            return;
        };
        match result {
            Ok(how) => {
                tracing::info!(node = %name, ?how, "its VM stopped");
                tracked.pid = 0;
                // Configured again meanwhile: the next pass starts it.
                if configured {
                    tracked.set(
                        NodeState::Exited,
                        "stopped; configured again: it starts on the next pass",
                    );
                } else {
                    tracked.set(NodeState::Removed, removed_reason());
                }
            }
            Err(e) => {
                // Never reported stopped while its process lives: the next pass tries again.
                tracing::error!(node = %name, "cannot stop its VM: {e}");
                tracked.set(NodeState::Failed, format!("cannot stop its VM: {e}"));
            }
        }
    }

    /// A purge asked over D-Bus: done here, between passes, with the config in force.
    pub(super) async fn purge(&mut self, name: &str) {
        match super::admin::purge_node(&self.config, self.driver.as_ref(), name).await {
            Ok(()) => {
                tracing::info!(node = %name, "purged: its disks, seed, logs and record are deleted");
                if let Some(mut node) = self.nodes.remove(name) {
                    node.stop_listening();
                }
                self.records.remove(name);
            }
            Err(e) => {
                tracing::error!(node = %name, "purge refused: {e:#}");
                if let Some(tracked) = self.nodes.get_mut(name) {
                    tracked.reason = format!("purge refused: {e:#}");
                }
            }
        }
    }

    /// A beacon, or its port closing; true when a check is due (a closed port usually means
    /// the VM's QEMU ended: it is seen at once, not at the next timer).
    pub(super) fn heard(&mut self, name: &str, heard: Heard) -> bool {
        let Some(tracked) = self.nodes.get_mut(name) else {
            return false;
        };
        let Heard::Beacon(beacon) = heard else {
            tracing::debug!(node = %name, "beacon port closed");
            tracked.lost = true;
            return !tracked.state.is_leaving();
        };
        tracked.lost = false;
        self.counters.beacons += 1;
        tracked.heard = Some(Instant::now());
        tracked.last_beacon = unix_now();
        // Float to integer casts saturate: a silly uptime cannot wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let uptime = beacon.uptime as u64;
        tracked.uptime = uptime;
        if !beacon.address.is_empty() {
            tracked.address.clone_from(&beacon.address);
        }
        // Leaving, or on its way to another image: what its old VM still says is not judged.
        if tracked.state.is_leaving() || tracked.state == NodeState::Swapping {
            return false;
        }
        let (state, reason) = judge(&beacon, tracked.booted.as_ref(), &tracked.documents);
        if state == NodeState::Mismatch {
            self.counters.mismatches += 1;
        }
        if state == NodeState::Ready {
            tracked.ready_since_start = true;
            tracked.failures = 0;
            tracked.last_ready = super::unix_now_f64();
        }
        tracked.node_id.clone_from(&beacon.node_id);
        tracked.state_disk.clone_from(&beacon.state_disk);
        tracked.set(state, reason);
        self.swap_heard(name, state);
        false
    }

    /// A surge's handover: the replacement's tracking (`NAME/next`) becomes node `name`'s,
    /// listened to under the node's name; the old VM's is dropped. Without one (a restarted
    /// supervisor), the node is tracked anew and re-attached when its swap ends.
    pub(super) fn adopt_replacement(&mut self, name: &str) {
        if let Some(mut old) = self.nodes.remove(name) {
            old.stop_listening();
        }
        let Some(mut tracked) = self.nodes.remove(&swap::replacement_key(name)) else {
            return;
        };
        tracked.stop_listening();
        tracked.name = name.to_owned();
        let socket = self.driver.beacon(&self.node_dir(name));
        tracked.listener = Some(Listener::start(
            name,
            socket,
            self.events.clone(),
            Event::Heard,
        ));
        self.nodes.insert(name.to_owned(), tracked);
    }

    /// Node `name`'s VM in `dir`, which a swap owns, was found stopped: counted as an exit
    /// (with its crash backoff) and started again on `image` once the backoff allows.
    pub(super) async fn restart_exited(&mut self, name: &str, dir: &Path, image: &Digest) {
        let backoff = self.backoff;
        if let Some(tracked) = self.nodes.get_mut(name)
            && tracked.pid != 0
        {
            exited(tracked, dir, &backoff);
        }
        tracing::warn!(node = %name, "its VM exited while its replacement is made: starting it again");
        self.start(name, image).await;
    }

    /// Stops tracking the VM tracked as `key` (its listener ends).
    pub(super) fn forget(&mut self, key: &str) {
        if let Some(mut tracked) = self.nodes.remove(key) {
            tracked.stop_listening();
        }
    }

    /// Whether node `name`'s beacon is being listened to.
    pub(super) fn listening(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(|n| n.listener.is_some())
    }

    /// When the next node held back by its crash backoff may start.
    pub(super) fn next_start(&self) -> Option<Instant> {
        self.nodes
            .values()
            .filter(|n| n.pid == 0)
            .filter(|n| {
                matches!(
                    n.state,
                    NodeState::Exited | NodeState::Crashloop | NodeState::Failed
                )
            })
            .filter_map(|n| n.next_start)
            .min()
    }

    /// Looks for exited VMs, silent nodes and an edited host.toml; true when a pass is due
    /// (a VM to start again, a config to apply).
    pub(super) async fn check(&mut self) -> bool {
        let mut due = false;
        self.refresh_api_ready();
        if super::modified(&self.path) != self.stamp {
            self.reload();
            due = true;
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let mut asks = Vec::new();
        for name in names {
            let dir = self.node_dir(&name);
            let state = self.nodes.get(&name).map(|n| n.state);
            let Some(state) = state else { continue };
            // A node a swap owns, or a surge's replacement, is watched by its swap (its exits
            // are the swap's to judge).
            if state.is_leaving()
                || matches!(state, NodeState::Waiting)
                || self.journal.swaps.contains_key(&name)
                || swap::replaced(&name).is_some()
            {
                continue;
            }
            let idle = self.nodes.get(&name).is_some_and(|n| n.pid == 0);
            if idle
                && matches!(
                    state,
                    NodeState::Exited | NodeState::Crashloop | NodeState::Failed
                )
            {
                // No VM, waiting out a backoff: due when its next start has come (one failed
                // for another reason, say it has no record, waits for the next whole pass).
                due |= self
                    .nodes
                    .get(&name)
                    .is_some_and(|n| n.next_start.is_some_and(|t| Instant::now() >= t));
                continue;
            }
            // A node heard from lately runs: no need to ask its VM (QMP costs a connection);
            // an exit shows as its beacon port closing anyway.
            let recently = self.deadlines.silence / 2;
            if self
                .nodes
                .get(&name)
                .filter(|n| !n.lost)
                .and_then(|n| n.heard)
                .is_some_and(|t| t.elapsed() < recently)
            {
                continue;
            }
            asks.push((name, dir));
        }
        // Asked together: one slow answer does not wait behind another. Silence counts up to
        // the asking: beacons heard meanwhile wait in the inbox until this returns.
        let dirs: BTreeMap<String, PathBuf> = asks.iter().cloned().collect();
        let asked = Instant::now();
        for (name, status) in self.statuses(asks).await {
            let Some(dir) = dirs.get(&name) else { continue };
            let backoff = self.backoff;
            let deadlines = self.deadlines;
            let Some(tracked) = self.nodes.get_mut(&name) else {
                continue;
            };
            if status == VmStatus::Stopped {
                exited(tracked, dir, &backoff);
                due = true;
                continue;
            }
            let quiet = tracked
                .heard
                .or(tracked.since)
                .map(|t| asked.saturating_duration_since(t));
            if let Some(quiet) = quiet
                && let Some(limit) = tracked.state.deadline(&deadlines)
                && quiet > limit
            {
                tracked.set(
                    NodeState::Silent,
                    format!(
                        "no beacon for over {} s (see {})",
                        limit.as_secs(),
                        dir.join("console.log").display()
                    ),
                );
            }
        }
        due
    }

    /// Lets go of the VMs when slipwayd stops: listeners end, VMs keep running.
    pub(super) fn detach(&mut self) {
        for node in self.nodes.values_mut() {
            node.stop_listening();
        }
    }
}

/// A node's VM is gone without being asked to stop: count it, and hold its next start back
/// (exponential, jittered, bounded); after [`CRASHLOOP_AFTER`] exits without a ready beacon
/// in between, it is shown as `crashloop`.
fn exited(tracked: &mut Node, dir: &Path, backoff: &crate::model::Backoff) {
    tracked.pid = 0;
    tracked.failures = if tracked.ready_since_start {
        1
    } else {
        tracked.failures + 1
    };
    tracked.ready_since_start = false;
    let delay = backoff.delay(tracked.failures, jitter());
    tracked.next_start = Some(Instant::now() + delay);
    let console = dir.join("console.log");
    if tracked.failures >= CRASHLOOP_AFTER {
        tracing::warn!(node = %tracked.name, failures = tracked.failures, delay_s = delay.as_secs(), "its VM keeps exiting before it is ready");
        tracked.set(
            NodeState::Crashloop,
            format!(
                "its VM exited {} times without becoming ready; next start in {} s (see {})",
                tracked.failures,
                delay.as_secs(),
                console.display()
            ),
        );
    } else {
        tracing::warn!(node = %tracked.name, delay_s = delay.as_secs(), "its VM is gone: it will be started again");
        tracked.set(
            NodeState::Exited,
            format!(
                "its VM stopped (see {}); started again in {} s",
                console.display(),
                delay.as_secs()
            ),
        );
    }
}

#[cfg(test)]
mod tests;
