//! The rollout seen from outside the swaps: which swaps start now (the plan, per cluster),
//! what `slipwayd rollout status` shows, and an operator's pause, resume and abort.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use super::Progress;
use super::mixed::{self, Aim, abort_key};
use crate::api::{RolloutControl, RolloutInfo, SwapInfo};
use crate::config::{Cluster, NodeOs, Role, Strategy};
use crate::daemon::Daemon;
use crate::driver::Driver;
use crate::model::{Digest, NodeName, NodeState};
use crate::records::{self, NodeRecord};
use crate::swap::plan::{self, Holds, Member};
use crate::swap::{ABORTED, Replacement, Swap};

impl<D: Driver> Daemon<D> {
    /// The swaps the plan starts now, planned in the journal: each node to the target of its
    /// own OS's channel (see [`super::mixed`]).
    pub(in crate::daemon) async fn plan_swaps(&mut self) -> Vec<String> {
        let targets: BTreeMap<NodeOs, Digest> = self.channels.targets();
        if targets.is_empty() {
            self.decisions.clear();
            return Vec::new();
        }
        let now = crate::daemon::unix_now();
        let mut planned = Vec::new();
        // The Kubernetes each image carries, from its manifest in the store (read once here).
        let mut kubernetes: BTreeMap<Digest, Option<String>> = BTreeMap::new();
        let mut labels: BTreeMap<NodeOs, String> = BTreeMap::new();
        let mut target_kubernetes: BTreeMap<NodeOs, Option<String>> = BTreeMap::new();
        for (os, target) in &targets {
            labels.insert(*os, self.image_label(target));
            target_kubernetes.insert(*os, self.image_kubernetes(target, &mut kubernetes));
        }
        let clusters: Vec<_> = self.config.clusters.values().cloned().collect();
        for cluster in clusters {
            // What each node runs: its image's Kubernetes, else the cluster's configured one.
            let runs: BTreeMap<String, String> = self
                .config
                .nodes
                .values()
                .filter(|n| n.cluster == cluster.name)
                .filter_map(|n| {
                    let image = self.records.get(&n.name)?.image.clone()?;
                    let version = self
                        .image_kubernetes(&image, &mut kubernetes)
                        .unwrap_or_else(|| cluster.kubernetes.clone());
                    Some((n.name.clone(), version))
                })
                .collect();
            let members: Vec<(NodeOs, Member)> = self
                .config
                .nodes
                .values()
                .filter(|n| n.cluster == cluster.name)
                .filter_map(|n| {
                    let record = self.records.get(&n.name)?;
                    // A node whose os in host.toml is no longer its image's is not swapped
                    // to the other OS's image (nor back, on a rollback): it changes OS only
                    // as a new node, after a purge.
                    if let Some(image) = &record.image
                        && let Ok(Some(stored)) = self.store.get(image.as_ref())
                        && let Some(why) = crate::daemon::channel::wrong_os(n, &stored)
                    {
                        tracing::warn!(node = %n.name, "not in the rollout: {why}");
                        return None;
                    }
                    let member = Member {
                        name: n.name.clone(),
                        role: n.role,
                        image: record.image.clone(),
                        ready: self
                            .nodes
                            .get(&n.name)
                            .is_some_and(|t| t.state == NodeState::Ready),
                        swapping: self.journal.swaps.contains_key(&n.name),
                        initialises: record.initialises,
                        kubernetes: runs.get(&n.name).cloned(),
                    };
                    Some((n.os, member))
                })
                .collect();
            let paused = self.journal.paused.then(|| {
                if self.journal.pause_reason.is_empty() {
                    "paused by an operator".to_owned()
                } else {
                    self.journal.pause_reason.clone()
                }
            });
            let window_open = cluster.rollout.window.is_none_or(|w| w.contains(now));
            let aim = |os: NodeOs| {
                let target = targets.get(&os).cloned();
                let failed = target.as_ref().and_then(|t| {
                    let f = self.journal.failed.get(t)?;
                    let label = labels.get(&os).cloned().unwrap_or_default();
                    Some(format!("{label} failed on {}: {}", f.node, f.reason))
                });
                let aborted = target.is_some()
                    && self.journal.aborted.get(&abort_key(&cluster.name, os)) == target.as_ref();
                Aim {
                    kubernetes: target_kubernetes.get(&os).cloned().flatten(),
                    target,
                    holds: Holds {
                        paused: paused.clone(),
                        failed,
                        aborted,
                        window_open,
                    },
                }
            };
            let linux = aim(NodeOs::Linux);
            let windows = self
                .channels
                .windows
                .is_some()
                .then(|| aim(NodeOs::Windows));
            let mut decision = mixed::decide(&cluster.rollout, &linux, windows.as_ref(), &members);
            for node in &decision.start.clone() {
                let Some(record) = self.records.get(node).cloned() else {
                    continue;
                };
                let Some(from) = record.image.clone() else {
                    continue;
                };
                let os = self.config.nodes.get(node).map_or(NodeOs::Linux, |n| n.os);
                let Some(target) = targets.get(&os).cloned() else {
                    continue;
                };
                // Across hosts, workers wait for every control plane (as the fleet last
                // read them) to be ready on the target (the Linux one: control planes run
                // Linux).
                let worker = self
                    .config
                    .nodes
                    .get(node)
                    .is_some_and(|n| n.role == Role::Worker);
                if worker
                    && let Some(linux) = targets.get(&NodeOs::Linux)
                    && let Some(why) = self.control_planes_first(&cluster.name, linux.as_str())
                {
                    decision.state = plan::State::Waiting;
                    decision.reason = why;
                    break;
                }
                // The fleet's slot first: at most max-unavailable nodes down across hosts.
                if let Err(why) = self.take_slot(&cluster.name, node).await {
                    decision.state = plan::State::Waiting;
                    decision.reason = why;
                    break;
                }
                let mut swap = Swap::plan(node, &cluster.name, from, target.clone(), now);
                let surges = cluster.rollout.strategy == Strategy::Surge
                    && self
                        .config
                        .nodes
                        .get(node)
                        .is_some_and(|n| n.role == Role::Worker);
                if surges {
                    // A fresh state disk: nothing of the old one to compare.
                    match self.replacement(&cluster, &record) {
                        Ok(replacement) => swap.surge = Some(replacement),
                        Err(why) => {
                            tracing::error!(node = %node, "cannot plan its surge swap: {why}");
                            decision.state = plan::State::Waiting;
                            decision.reason = format!("cannot plan the surge of {node}: {why}");
                            self.release_slot(node).await;
                            continue;
                        }
                    }
                } else {
                    swap.node_id = self
                        .nodes
                        .get(node)
                        .map(|n| n.node_id.clone())
                        .unwrap_or_default();
                }
                if self.journal(|j| {
                    j.swaps.insert(node.clone(), swap.clone());
                }) {
                    let entered = Progress {
                        entered: Some(Instant::now()),
                        ..Progress::default()
                    };
                    self.progress.insert(node.clone(), entered);
                    tracing::info!(node = %node, cluster = %cluster.name, from = %self.image_label(&swap.from), to = %self.image_label(&target), "swap planned");
                    planned.push(node.clone());
                } else {
                    self.release_slot(node).await;
                }
            }
            self.decisions.insert(cluster.name.clone(), decision);
        }
        planned
    }

    /// The replacement a surge of the node `record` names boots: the next generation (past
    /// any leftover generation directory, so its state disk is fresh), its hostname's MAC, and
    /// the first address of the pool that no record, configured node or other surge holds.
    /// Refused when the hostname or MAC is another node's.
    fn replacement(&self, cluster: &Cluster, record: &NodeRecord) -> Result<Replacement, String> {
        let name = record.name.as_str();
        let leftover = records::vm_dirs(&self.config.state_dir, name)
            .iter()
            .filter_map(|d| d.file_name()?.to_str().and_then(records::generation_dir))
            .max()
            .unwrap_or(0);
        let generation = record
            .generation
            .max(leftover)
            .checked_add(1)
            .ok_or_else(|| format!("node {name} has no generation left"))?;
        let hostname = records::hostname(name, generation);
        if NodeName::new(&hostname).is_err() {
            return Err(format!(
                "its replacement's hostname {hostname} is not a DNS label of at most 63 characters (shorten the node's name)"
            ));
        }
        // A Windows node's hostname is its computer name, which holds 15 characters.
        let windows = self
            .config
            .nodes
            .get(name)
            .is_some_and(|n| n.os == NodeOs::Windows);
        if windows && hostname.len() > crate::config::WINDOWS_NAME_MAX {
            return Err(format!(
                "its replacement's hostname {hostname} is longer than a Windows computer name's {} characters (shorten the node's name, or swap it in place)",
                crate::config::WINDOWS_NAME_MAX
            ));
        }
        let mac = crate::seed::mac_address(&cluster.name, &hostname);
        let taken = |r: &NodeRecord| {
            records::hostname(r.name.as_str(), r.generation) == hostname || r.mac == mac
        };
        let mut surging = self.journal.swaps.values().filter_map(|s| s.surge.as_ref());
        if self.config.nodes.contains_key(&hostname)
            || self.records.values().any(taken)
            || surging.any(|r| r.mac == mac || r.previous_mac == mac)
        {
            return Err(format!(
                "its replacement's hostname {hostname} or MAC {mac} is another node's (rename one of them)"
            ));
        }
        let held: BTreeSet<Ipv4Addr> = self
            .records
            .values()
            .map(|r| r.address)
            .chain(
                self.config
                    .nodes
                    .values()
                    .filter(|n| n.cluster == cluster.name)
                    .map(|n| n.address),
            )
            .chain(self.journal.reserved())
            .collect();
        let address = records::free_address(cluster, &held).ok_or_else(|| {
            format!(
                "the pool {} has no free address for a replacement (widen it, or purge removed nodes)",
                cluster.pool
            )
        })?;
        Ok(Replacement {
            generation,
            previous_generation: record.generation,
            address,
            mac,
            previous_address: record.address,
            previous_mac: record.mac.clone(),
        })
    }

    /// The Kubernetes version the manifest of `digest` names (None: it names none, or the
    /// store does not hold it), remembered in `seen`.
    fn image_kubernetes(
        &self,
        digest: &Digest,
        seen: &mut BTreeMap<Digest, Option<String>>,
    ) -> Option<String> {
        seen.entry(digest.clone())
            .or_insert_with(|| match self.store.get(digest.as_ref()) {
                Ok(Some(image)) => image.manifest.kubernetes,
                _ => None,
            })
            .clone()
    }

    /// `NAME VERSION` of `digest` when the store has it, else the digest.
    pub(in crate::daemon) fn image_label(&mut self, digest: &Digest) -> String {
        if let Some(label) = self.labels.get(digest) {
            return label.clone();
        }
        match self.store.get(digest.as_ref()) {
            Ok(Some(image)) => {
                let label = format!("{} {}", image.manifest.name, image.manifest.version);
                self.labels.insert(digest.clone(), label.clone());
                label
            }
            _ => digest.to_string(),
        }
    }

    /// What `slipwayd rollout status` shows.
    pub(in crate::daemon) fn rollout_infos(&mut self) -> Vec<RolloutInfo> {
        let targets: BTreeMap<NodeOs, Digest> = self.channels.targets();
        let mut label = |os: NodeOs| match targets.get(&os) {
            Some(t) => format!("{} {t}", self.image_label(t)),
            None => String::new(),
        };
        let (target_label, windows_label) = (label(NodeOs::Linux), label(NodeOs::Windows));
        let mut infos = Vec::new();
        let clusters: Vec<String> = self.config.clusters.keys().cloned().collect();
        for cluster in clusters {
            let decision = self.decisions.get(&cluster).cloned();
            let nodes: Vec<(String, String, NodeOs)> = self
                .config
                .nodes
                .values()
                .filter(|n| n.cluster == cluster)
                .map(|n| (n.name.clone(), n.role.to_string(), n.os))
                .collect();
            let mut swaps = Vec::new();
            for (name, role, os) in nodes {
                let target = targets.get(&os);
                let current = self.records.get(&name).and_then(|r| r.image.clone());
                let swap = self.journal.swaps.get(&name).cloned();
                let (step, reason, since) = match &swap {
                    Some(s) if s.reason.is_empty() => {
                        let waits = self.progress.get(&name).and_then(|p| p.waiting.clone());
                        (
                            s.step.as_str().to_owned(),
                            waits.unwrap_or_default(),
                            s.since,
                        )
                    }
                    Some(s) => (s.step.as_str().to_owned(), s.reason.clone(), s.since),
                    None => match self.journal.last.get(&name) {
                        Some(s) if Some(&s.to) == target || Some(&s.from) == current.as_ref() => {
                            (s.step.as_str().to_owned(), s.reason.clone(), s.since)
                        }
                        _ => (String::new(), String::new(), 0),
                    },
                };
                let wanted = swap.as_ref().map(|s| s.to.clone()).or_else(|| {
                    target
                        .cloned()
                        .filter(|t| current.as_ref().is_some_and(|c| c != t))
                });
                swaps.push(SwapInfo {
                    node: name,
                    role,
                    current: current
                        .as_ref()
                        .map(|c| self.image_label(c))
                        .unwrap_or_default(),
                    current_digest: current.map(|c| c.to_string()).unwrap_or_default(),
                    target: wanted.map(|t| t.to_string()).unwrap_or_default(),
                    step,
                    reason,
                    since,
                });
            }
            let (state, reason) = decision.map_or_else(
                || {
                    (
                        plan::State::Idle.as_str().to_owned(),
                        "no verified image yet".to_owned(),
                    )
                },
                |d| (d.state.as_str().to_owned(), d.reason),
            );
            let (slots, fleet_problem) = self.fleet.holders(&cluster);
            infos.push(RolloutInfo {
                cluster,
                state,
                target: target_label.clone(),
                windows_target: windows_label.clone(),
                reason,
                nodes: swaps,
                slots,
                fleet_problem,
            });
        }
        infos
    }

    /// An operator's pause, resume or abort.
    pub(in crate::daemon) async fn control(&mut self, control: RolloutControl) {
        match control {
            RolloutControl::Pause => {
                if self.journal(|j| {
                    j.paused = true;
                    j.pause_reason = "paused by an operator (`slipwayd rollout resume`)".into();
                }) {
                    tracing::warn!("rollouts paused by an operator: no new swap starts");
                }
            }
            RolloutControl::Resume => {
                if self.journal(|j| {
                    j.paused = false;
                    j.pause_reason.clear();
                }) {
                    tracing::info!("rollouts resumed by an operator");
                }
            }
            RolloutControl::Abort { cluster } => {
                let targets = self.channels.targets();
                if targets.is_empty() {
                    return;
                }
                let clusters: Vec<String> = self
                    .config
                    .clusters
                    .keys()
                    .filter(|c| cluster.is_empty() || **c == cluster)
                    .cloned()
                    .collect();
                let now = crate::daemon::unix_now();
                let ok = self.journal(|j| {
                    // A swap already rolling back keeps its reason: its image failed.
                    for swap in j
                        .swaps
                        .values_mut()
                        .filter(|s| clusters.contains(&s.cluster))
                    {
                        swap.send_back(ABORTED, now);
                    }
                    for c in &clusters {
                        for (os, target) in &targets {
                            j.aborted.insert(abort_key(c, *os), target.clone());
                        }
                    }
                });
                if ok {
                    let images: Vec<String> =
                        targets.values().map(|t| self.image_label(t)).collect();
                    tracing::warn!(clusters = ?clusters, images = ?images, "rollout aborted by an operator: swaps in flight roll back");
                }
            }
        }
        self.roll(true).await;
    }
}

impl<D: Driver> Daemon<D> {
    /// The image a node of `cluster` running `os` that never booted takes: the verified image
    /// of its OS's channel, unless it failed on this host or its rollout was aborted in the
    /// cluster; then the one before it, if that one is neither and the store still has it.
    pub(in crate::daemon) fn image_for_new_nodes(
        &self,
        cluster: &str,
        os: NodeOs,
    ) -> Option<Digest> {
        let aborted = self.journal.aborted.get(&abort_key(cluster, os));
        let allowed = |d: &Digest| !self.journal.failed.contains_key(d) && aborted != Some(d);
        let channel = self.channels.get(os)?;
        let target = channel.target_digest()?;
        if allowed(&target) {
            return Some(target);
        }
        channel
            .previous
            .clone()
            .filter(|p| allowed(p) && matches!(self.store.get(p.as_ref()), Ok(Some(_))))
    }
}

#[cfg(test)]
mod tests;
