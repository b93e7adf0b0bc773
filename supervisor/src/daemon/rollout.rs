//! The rollout executor: carries each swap in the journal through its steps with the driver,
//! and starts the swaps the plan allows when the channel's verified image differs from what
//! nodes run.
//!
//! Every step change is written to the journal before the step's side effect runs, and every
//! side effect is idempotent (see [`crate::swap`]), so a supervisor killed anywhere resumes
//! the swap, or rolls it back, from what the journal says.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Daemon, Event};
use crate::api::{RolloutControl, RolloutInfo, SwapInfo};
use crate::driver::{Driver, Stopped, VmStatus};
use crate::model::{Digest, NodeState};
use crate::swap::journal::Journal;
use crate::swap::plan::{self, Holds, Member};
use crate::swap::{ABORTED, Outcome, Step, Swap};

/// What the executor keeps in memory for a swap (lost on restart, on purpose: a restarted
/// supervisor stops anew and soaks anew).
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// A stop task runs for the node.
    stopping: bool,
    /// How the last stop ended.
    stopped: Option<Result<Stopped, String>>,
    /// Since when the node has been healthy on the swap's image without a break, and when
    /// that was in Unix seconds.
    healthy_since: Option<(Instant, f64)>,
    /// Healthy beacons since then.
    healthy_beacons: u32,
    /// When this supervisor saw the step begin (for the step timings logged).
    entered: Option<Instant>,
}

/// What the supervisor counted of finished swaps (for the metrics).
#[derive(Debug, Default, Clone)]
pub(super) struct SwapStats {
    pub(super) durations: Vec<f64>,
    pub(super) results: BTreeMap<String, u64>,
    pub(super) downtime: BTreeMap<String, f64>,
}

impl<D: Driver> Daemon<D> {
    /// Writes the journal as `change` leaves it; the change is kept (and true returned) only
    /// once it is durable, so no side effect runs ahead of its record.
    fn journal(&mut self, change: impl FnOnce(&mut Journal)) -> bool {
        let mut journal = self.journal.clone();
        change(&mut journal);
        match journal.save(&self.config.state_dir) {
            Ok(()) => {
                self.journal = journal;
                self.rollout_problem.clear();
                true
            }
            Err(e) => {
                tracing::error!("cannot write the rollout journal: {e:#}");
                self.rollout_problem = format!("cannot write the rollout journal: {e:#}");
                false
            }
        }
    }

    /// Advances the swaps in flight, then starts those the plan allows, then refreshes what
    /// status shows. `probe`: ask the driver whether VMs still run (the check timer's passes;
    /// beacons alone do not).
    pub(super) async fn roll(&mut self, probe: bool) {
        let names: Vec<String> = self.journal.swaps.keys().cloned().collect();
        for name in names {
            self.advance(&name, probe).await;
        }
        let planned = self.plan_swaps();
        for name in planned {
            self.advance(&name, true).await;
        }
        self.rollouts = self.rollout_infos();
    }

    /// Carries node `name`'s swap as far as it can go now.
    async fn advance(&mut self, name: &str, probe: bool) {
        // Shown in status from the start (after a restart, reconcile leaves it to its swap).
        let _ = self.tracked(name);
        // Each turn moves one step; a swap has fewer steps than this.
        for _ in 0..Step::ALL.len() + 2 {
            let Some(swap) = self.journal.swaps.get(name).cloned() else {
                return;
            };
            if swap.step.is_final() {
                self.finish(&swap).await;
                return;
            }
            let Some((outcome, why)) = self.work(&swap, probe).await else {
                return;
            };
            let mut next = swap.clone();
            let now = super::unix_now();
            if !next.advance(outcome, now) {
                return;
            }
            if outcome == Outcome::Failed && next.reason.is_empty() {
                next.reason.clone_from(&why);
            }
            match next.step {
                Step::Booting | Step::BootingPrevious => next.booted = now,
                Step::Stopped => {
                    next.last_healthy = self.nodes.get(name).map_or(0.0, |n| n.last_ready);
                }
                Step::Committed => {
                    next.first_healthy = self
                        .progress
                        .get(name)
                        .and_then(|p| p.healthy_since)
                        .map_or(0.0, |(_, at)| at);
                }
                _ => {}
            }
            let took_ms = self
                .progress
                .get(name)
                .and_then(|p| p.entered)
                .map_or(0, |t| t.elapsed().as_millis());
            if next.step != swap.step {
                // A fresh step starts with a fresh view of the node's health.
                let fresh = Progress {
                    entered: Some(Instant::now()),
                    ..Progress::default()
                };
                self.progress.insert(name.to_owned(), fresh);
            }
            let (from, to) = (self.image_label(&next.from), self.image_label(&next.to));
            if !self.journal(|j| {
                j.swaps.insert(name.to_owned(), next.clone());
            }) {
                return;
            }
            if outcome == Outcome::Failed {
                tracing::error!(node = %name, step = %next.step, after = %swap.step, took_ms, %from, %to, "swap failed: {why}");
            } else {
                tracing::info!(node = %name, step = %next.step, after = %swap.step, took_ms, %from, %to, "swap step");
            }
        }
    }

    /// The work of `swap`'s step: None while it is under way, else how it ended and, when it
    /// failed, why.
    async fn work(&mut self, swap: &Swap, probe: bool) -> Option<(Outcome, String)> {
        let name = swap.node.as_str();
        let done = Some((Outcome::Done, String::new()));
        match swap.step {
            // The drain hook: nothing to drain without a Kubernetes client (the fleet issue).
            Step::Planned | Step::Drained => done,
            Step::Stopping => {
                let reason = format!("swap to {}: powering down", self.image_label(&swap.to));
                self.mark_swapping(name, reason);
                self.stop_for_swap(name).map(|r| {
                    r.map_or_else(|e| (Outcome::Failed, e), |_| (Outcome::Done, String::new()))
                })
            }
            Step::Stopped => match self.driver.status(name, &self.node_dir(name)).await {
                VmStatus::Stopped => done,
                _ => Some((Outcome::Failed, "its VM runs again after it stopped".into())),
            },
            Step::DisksSwitched => Some(self.switch_disks(swap).await),
            Step::Booting => Some(self.boot_for_swap(name, &swap.to).await),
            Step::Verifying => self.verify(swap, probe).await,
            Step::RollingBack => {
                let reason = format!(
                    "rolling back to {}: {}",
                    self.image_label(&swap.from),
                    swap.reason
                );
                self.mark_swapping(name, reason);
                if let Err(e) = self.set_record_image(name, &swap.from) {
                    return Some((Outcome::Failed, format!("{e:#}")));
                }
                self.stop_for_swap(name).map(|r| {
                    r.map_or_else(|e| (Outcome::Failed, e), |_| (Outcome::Done, String::new()))
                })
            }
            Step::BootingPrevious => {
                if self.nodes.get(name).is_none_or(|n| n.pid == 0) {
                    let booted = self.boot_for_swap(name, &swap.from).await;
                    if booted.0 == Outcome::Failed {
                        return Some(booted);
                    }
                }
                self.verify(swap, probe).await
            }
            Step::Committed | Step::RolledBack => None,
        }
    }

    /// Shows node `name` as swapping.
    fn mark_swapping(&mut self, name: &str, reason: String) {
        if let Some(node) = self.nodes.get_mut(name) {
            node.set(NodeState::Swapping, reason);
        }
    }

    /// Stops node `name`'s VM for its swap: None while the stop runs, else how it ended.
    fn stop_for_swap(&mut self, name: &str) -> Option<Result<Stopped, String>> {
        let progress = self.progress.entry(name.to_owned()).or_default();
        if let Some(result) = progress.stopped.take() {
            return Some(result);
        }
        if progress.stopping {
            return None;
        }
        progress.stopping = true;
        let (events, driver) = (self.events.clone(), self.driver.clone());
        let (name, dir) = (name.to_owned(), self.node_dir(name));
        let deadlines = super::admin::stop_deadlines(&self.deadlines);
        tokio::spawn(async move {
            let result = driver
                .stop(&name, &dir, deadlines)
                .await
                .map_err(|e| format!("{e:#}"));
            let _ = events.send(Event::Stopped(name, result));
        });
        None
    }

    /// A stop ended for a node a swap owns.
    pub(super) fn swap_stopped(&mut self, name: &str, result: Result<Stopped, String>) {
        if let Ok(how) = &result {
            tracing::info!(node = %name, ?how, "its VM stopped for its swap");
            if let Some(node) = self.nodes.get_mut(name) {
                node.pid = 0;
            }
        }
        let progress = self.progress.entry(name.to_owned()).or_default();
        progress.stopping = false;
        progress.stopped = Some(result);
    }

    /// The record of `name` names `image` from now on (what it restarts on).
    fn set_record_image(&mut self, name: &str, image: &Digest) -> anyhow::Result<()> {
        let Some(record) = self.records.get(name) else {
            anyhow::bail!("node {name} has no record");
        };
        if record.image.as_ref() == Some(image) {
            return Ok(());
        }
        let mut record = record.clone();
        record.image = Some(image.clone());
        crate::records::save(&self.config.state_dir, &record)?;
        self.records.insert(name.to_owned(), record);
        Ok(())
    }

    /// disks-switched: the new image's OS overlay (the previous one stays), then the record.
    async fn switch_disks(&mut self, swap: &Swap) -> (Outcome, String) {
        let stored = match self.store.get(swap.to.as_ref()) {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                return (
                    Outcome::Failed,
                    format!("its new image {} is not in the store", swap.to),
                );
            }
            Err(e) => return (Outcome::Failed, format!("cannot read the store: {e:#}")),
        };
        let dir = self.node_dir(&swap.node);
        if let Err(e) = self
            .driver
            .overlay(&dir, &stored.vhdx, swap.to.as_str())
            .await
        {
            return (
                Outcome::Failed,
                format!("cannot make its new OS disk: {e:#}"),
            );
        }
        match self.set_record_image(&swap.node, &swap.to) {
            Ok(()) => (Outcome::Done, String::new()),
            Err(e) => (Outcome::Failed, format!("{e:#}")),
        }
    }

    /// Boots `name` on `image` unless its VM already runs (never two VMs on one node's disks).
    async fn boot_for_swap(&mut self, name: &str, image: &Digest) -> (Outcome, String) {
        match self.driver.status(name, &self.node_dir(name)).await {
            VmStatus::Stopped => {}
            _ => return (Outcome::Done, String::new()),
        }
        match self.launch(name, image).await {
            Ok(()) => (Outcome::Done, String::new()),
            Err(e) => (Outcome::Failed, format!("cannot start its VM: {e:#}")),
        }
    }

    /// A beacon was judged for node `name` (now in `state`): counts towards a soak.
    pub(super) fn swap_heard(&mut self, name: &str, state: NodeState) {
        let Some(swap) = self.journal.swaps.get(name) else {
            return;
        };
        if !matches!(swap.step, Step::Verifying | Step::BootingPrevious) {
            return;
        }
        let progress = self.progress.entry(name.to_owned()).or_default();
        if state == NodeState::Ready {
            progress
                .healthy_since
                .get_or_insert_with(|| (Instant::now(), super::unix_now_f64()));
            progress.healthy_beacons += 1;
        } else {
            progress.healthy_since = None;
            progress.healthy_beacons = 0;
        }
    }

    /// verifying / booting-previous: healthy on the swap's image for the soak (one healthy
    /// beacon for the way back), within the boot deadline.
    async fn verify(&mut self, swap: &Swap, probe: bool) -> Option<(Outcome, String)> {
        let name = swap.node.as_str();
        let policy = self
            .config
            .clusters
            .get(&swap.cluster)
            .map(|c| c.rollout.clone())
            .unwrap_or_default();
        let back = swap.step == Step::BootingPrevious;
        let console = self.node_dir(name).join("console.log");
        // Found running after a restart of slipwayd: listen to it again.
        if !self.listening(name) {
            let status = self.driver.status(name, &self.node_dir(name)).await;
            if status != VmStatus::Stopped {
                self.keep(name, Some(swap.image()), status);
            }
        }
        if probe && self.driver.status(name, &self.node_dir(name)).await == VmStatus::Stopped {
            if let Some(node) = self.nodes.get_mut(name) {
                node.pid = 0;
            }
            return Some((
                Outcome::Failed,
                format!(
                    "its VM exited on {} (see {})",
                    self.image_label(swap.image()),
                    console.display()
                ),
            ));
        }
        if let Some(node) = self.nodes.get(name)
            && node.state == NodeState::Mismatch
        {
            return Some((Outcome::Failed, node.reason.clone()));
        }
        let progress = self.progress.entry(name.to_owned()).or_default();
        let soak = if back {
            std::time::Duration::ZERO
        } else {
            policy.soak
        };
        let wanted = if soak.is_zero() { 1 } else { 2 };
        if let Some((since, _)) = progress.healthy_since
            && since.elapsed() >= soak
            && progress.healthy_beacons >= wanted
        {
            return Some((Outcome::Done, String::new()));
        }
        let elapsed = u64::try_from(super::unix_now() - swap.booted).unwrap_or(0);
        let healthy = progress.healthy_since.is_some();
        // The deadline for a first healthy beacon; a node that flaps during its soak has the
        // soak's length more to settle.
        let limit = if healthy {
            policy.boot_deadline + soak
        } else {
            policy.boot_deadline
        };
        if elapsed > limit.as_secs() {
            let what = if healthy {
                format!(
                    "it did not stay healthy for the soak ({} s)",
                    soak.as_secs()
                )
            } else {
                let said = self
                    .nodes
                    .get(name)
                    .map(|n| n.reason.clone())
                    .unwrap_or_default();
                format!(
                    "no healthy beacon on {} within {} s{} (see {})",
                    self.image_label(swap.image()),
                    policy.boot_deadline.as_secs(),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(": {said}")
                    },
                    console.display()
                )
            };
            return Some((Outcome::Failed, what));
        }
        None
    }

    /// A swap reached its final step: the committed one drops its previous overlay, the
    /// rolled-back one marks its image failed; both leave the swaps in flight.
    async fn finish(&mut self, swap: &Swap) {
        let name = swap.node.as_str();
        let result = if swap.step == Step::Committed {
            let dir = self.node_dir(name);
            if let Err(e) = self.driver.drop_overlays(&dir, swap.to.as_str()).await {
                tracing::warn!(node = %name, "cannot drop its previous OS overlay: {e:#}");
            }
            "committed"
        } else if swap.reason == ABORTED {
            "aborted"
        } else {
            "rolled-back"
        };
        if !self.journal(|j| j.finish(name)) {
            return;
        }
        self.progress.remove(name);
        // Supervised like any node from here: listened to at once (after a restart nothing
        // listens yet), not at the next whole pass.
        if !self.listening(name) {
            let status = self.driver.status(name, &self.node_dir(name)).await;
            if status != VmStatus::Stopped {
                let image = self.records.get(name).and_then(|r| r.image.clone());
                self.keep(name, image.as_ref(), status);
            }
        }
        let seconds = (swap.since - swap.started).max(0);
        #[allow(clippy::cast_precision_loss)]
        self.swap_stats.durations.push(seconds as f64);
        *self
            .swap_stats
            .results
            .entry(result.to_owned())
            .or_default() += 1;
        if let Some(downtime) = swap.downtime() {
            self.swap_stats.downtime.insert(name.to_owned(), downtime);
        }
        let (from, to) = (self.image_label(&swap.from), self.image_label(&swap.to));
        if result == "committed" {
            tracing::info!(node = %name, %from, %to, seconds, downtime_s = ?swap.downtime(), "swap committed");
        } else {
            tracing::error!(node = %name, %from, %to, seconds, reason = %swap.reason, "swap {result}: {to} is not rolled further on this host");
        }
    }

    /// The swaps the plan starts now, planned in the journal.
    fn plan_swaps(&mut self) -> Vec<String> {
        let Some(target) = self.channel.target_digest() else {
            self.decisions.clear();
            return Vec::new();
        };
        let now = super::unix_now();
        let mut planned = Vec::new();
        let clusters: Vec<_> = self.config.clusters.values().cloned().collect();
        for cluster in clusters {
            let members: Vec<Member> = self
                .config
                .nodes
                .values()
                .filter(|n| n.cluster == cluster.name)
                .filter_map(|n| {
                    let record = self.records.get(&n.name)?;
                    Some(Member {
                        name: n.name.clone(),
                        role: n.role,
                        image: record.image.clone(),
                        ready: self
                            .nodes
                            .get(&n.name)
                            .is_some_and(|t| t.state == NodeState::Ready),
                        swapping: self.journal.swaps.contains_key(&n.name),
                    })
                })
                .collect();
            let label = self.image_label(&target);
            let holds = Holds {
                paused: self.journal.paused,
                failed: self
                    .journal
                    .failed
                    .get(&target)
                    .map(|f| format!("{label} failed on {}: {}", f.node, f.reason)),
                aborted: self.journal.aborted.get(&cluster.name) == Some(&target),
                window_open: cluster.rollout.window.is_none_or(|w| w.contains(now)),
            };
            let decision = plan::decide(&cluster.rollout, Some(&target), &holds, &members);
            for node in &decision.start {
                let Some(from) = self.records.get(node).and_then(|r| r.image.clone()) else {
                    continue;
                };
                let swap = Swap::plan(node, &cluster.name, from, target.clone(), now);
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
                }
            }
            self.decisions.insert(cluster.name.clone(), decision);
        }
        planned
    }

    /// `NAME VERSION` of `digest` when the store has it, else the digest.
    pub(super) fn image_label(&mut self, digest: &Digest) -> String {
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
    fn rollout_infos(&mut self) -> Vec<RolloutInfo> {
        let target = self.channel.target_digest();
        let target_label = match &target {
            Some(t) => format!("{} {t}", self.image_label(t)),
            None => String::new(),
        };
        let mut infos = Vec::new();
        let clusters: Vec<String> = self.config.clusters.keys().cloned().collect();
        for cluster in clusters {
            let decision = self.decisions.get(&cluster).cloned();
            let nodes: Vec<(String, String)> = self
                .config
                .nodes
                .values()
                .filter(|n| n.cluster == cluster)
                .map(|n| (n.name.clone(), n.role.to_string()))
                .collect();
            let mut swaps = Vec::new();
            for (name, role) in nodes {
                let current = self.records.get(&name).and_then(|r| r.image.clone());
                let swap = self.journal.swaps.get(&name).cloned();
                let (step, reason, since) = match &swap {
                    Some(s) => (s.step.as_str().to_owned(), s.reason.clone(), s.since),
                    None => match self.journal.last.get(&name) {
                        Some(s)
                            if Some(&s.to) == target.as_ref()
                                || Some(&s.from) == current.as_ref() =>
                        {
                            (s.step.as_str().to_owned(), s.reason.clone(), s.since)
                        }
                        _ => (String::new(), String::new(), 0),
                    },
                };
                let wanted = swap.as_ref().map(|s| s.to.clone()).or_else(|| {
                    target
                        .clone()
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
            infos.push(RolloutInfo {
                cluster,
                state,
                target: target_label.clone(),
                reason,
                nodes: swaps,
            });
        }
        infos
    }

    /// An operator's pause, resume or abort.
    pub(super) async fn control(&mut self, control: RolloutControl) {
        match control {
            RolloutControl::Pause => {
                if self.journal(|j| j.paused = true) {
                    tracing::warn!("rollouts paused by an operator: no new swap starts");
                }
            }
            RolloutControl::Resume => {
                if self.journal(|j| j.paused = false) {
                    tracing::info!("rollouts resumed by an operator");
                }
            }
            RolloutControl::Abort { cluster } => {
                let Some(target) = self.channel.target_digest() else {
                    return;
                };
                let clusters: Vec<String> = self
                    .config
                    .clusters
                    .keys()
                    .filter(|c| cluster.is_empty() || **c == cluster)
                    .cloned()
                    .collect();
                let now = super::unix_now();
                let ok = self.journal(|j| {
                    for swap in j
                        .swaps
                        .values_mut()
                        .filter(|s| clusters.contains(&s.cluster))
                    {
                        swap.reason = ABORTED.to_owned();
                        swap.since = now;
                        swap.step = match swap.step {
                            Step::Planned | Step::Drained => Step::RolledBack,
                            Step::Stopping
                            | Step::Stopped
                            | Step::DisksSwitched
                            | Step::Booting
                            | Step::Verifying => Step::RollingBack,
                            other => other,
                        };
                    }
                    for c in &clusters {
                        j.aborted.insert(c.clone(), target.clone());
                    }
                });
                if ok {
                    tracing::warn!(clusters = ?clusters, image = %self.image_label(&target), "rollout aborted by an operator: swaps in flight roll back");
                }
            }
        }
        self.roll(true).await;
    }
}

impl<D: Driver> Daemon<D> {
    /// The image a node that never booted takes: the channel's verified image, unless it
    /// failed on this host; then the one before it, if the store still has it.
    pub(super) fn image_for_new_nodes(&self) -> Option<Digest> {
        let target = self.channel.target_digest()?;
        if !self.journal.failed.contains_key(&target) {
            return Some(target);
        }
        self.channel.previous.clone().filter(|p| {
            !self.journal.failed.contains_key(p)
                && matches!(self.store.get(p.as_ref()), Ok(Some(_)))
        })
    }
}
