//! The rollout executor: carries each swap in the journal through its steps with the driver,
//! and starts the swaps the plan allows when the verified image of a node's OS's channel
//! differs from what it runs.
//!
//! Every step change is written to the journal before the step's side effect runs, and every
//! side effect is idempotent (see [`crate::swap`]), so a supervisor killed anywhere resumes
//! the swap, or rolls it back, from what the journal says.

use std::collections::BTreeMap;
use std::time::Instant;

use super::Daemon;
use crate::driver::{Driver, Stopped, VmStatus};
use crate::model::{Digest, NodeState};
use crate::swap::journal::Journal;
use crate::swap::{ABANDONED, ABORTED, FENCED, Outcome, Step, Swap, replaced, replacement_key};

mod drain;
mod mixed;
mod operate;
mod surge;

/// What the executor keeps in memory for a swap (lost on restart, on purpose: a restarted
/// supervisor stops anew and soaks anew).
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// A stop task runs for the VM tracked as this (the node's, or its replacement's).
    stopping: Option<String>,
    /// How the last stop ended, and of which VM.
    stopped: Option<(String, Result<Stopped, String>)>,
    /// Since when the node has been healthy on the swap's image without a break, and when
    /// that was in Unix seconds.
    healthy_since: Option<(Instant, f64)>,
    /// Healthy beacons since then.
    healthy_beacons: u32,
    /// When this supervisor saw the step begin (for the step timings logged).
    entered: Option<Instant>,
    /// This supervisor started the node's VM in this step (or the booting step before).
    launched: bool,
    /// When this supervisor began to watch the step (Unix seconds): after a restart the boot
    /// deadline counts from here at the earliest.
    watched: Option<i64>,
    /// The step failed for a reason of the host's.
    host_failure: bool,
    /// A rollback that failed is tried again after this.
    retry_at: Option<Instant>,
    /// A surge's rollback wrote the node's previous record.
    restored: bool,
    /// The fencing check passed for this step.
    fenced: bool,
    /// Why the step waits (for the fleet lock, a join token), while it does.
    pub(super) waiting: Option<String>,
}

/// How long a rollback that failed (a VM that would not stop) waits before it tries again.
const ROLLBACK_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a node's beacon comes (tiny-linux and linux-node send one every 5 s).
const BEACON_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// The most finished swap durations kept for the histogram.
const DURATIONS_KEPT: usize = 4096;

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
        self.report_to_fleet();
        self.retry_releases().await;
        let names: Vec<String> = self.journal.swaps.keys().cloned().collect();
        for name in names {
            self.advance(&name, probe).await;
        }
        let planned = self.plan_swaps().await;
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
            let orphaned = self.orphaned(name);
            if let Some(why) = &orphaned
                && (swap.surge.is_none() || swap.moving())
            {
                self.abandon(&swap, why);
                continue;
            }
            // The fleet's slot is taken only once the swap's image is on the hypervisor: an
            // upload that fails for as long as its host is down holds no other host's swaps.
            if swap.step == Step::Planned && self.planned(&swap).is_none() {
                return;
            }
            let fenced = if self.progress.get(name).is_some_and(|p| p.fenced) {
                None
            } else {
                match self.fence(&swap).await {
                    super::fleet::Fence::Go => {
                        let progress = self.progress.entry(name.to_owned()).or_default();
                        progress.fenced = true;
                        progress.waiting = None;
                        None
                    }
                    super::fleet::Fence::Wait(why) => {
                        let progress = self.progress.entry(name.to_owned()).or_default();
                        if progress.waiting.as_ref() != Some(&why) {
                            tracing::warn!(node = %name, step = %swap.step, "swap waits: {why}");
                        }
                        progress.waiting = Some(why);
                        return;
                    }
                    super::fleet::Fence::Lost(why) => {
                        Some((Outcome::Failed, format!("{FENCED}: {why}")))
                    }
                }
            };
            let fence_lost = fenced.is_some();
            let worked = match fenced {
                Some(lost) => Some(lost),
                None => self.work(&swap, probe).await,
            };
            let Some((outcome, why)) = worked else {
                return;
            };
            let mut next = swap.clone();
            let now = super::unix_now();
            if !next.advance(outcome, now) {
                return;
            }
            // An abandoned surge's replacement is gone: its node is not configured any more,
            // so its old VM is left to the ordinary supervision (which stops it).
            if orphaned.is_some() && next.step == Step::BootingPrevious {
                next.step = Step::RolledBack;
            }
            // A slot lost before the VM stops: the node still runs its image, untouched, and
            // a rollback would stop it (while another host may hold the freed slot).
            if fence_lost && swap.step == Step::Stopping && swap.surge.is_none() {
                next.step = Step::RolledBack;
            }
            if outcome == Outcome::Failed && next.reason.is_empty() {
                next.reason.clone_from(&why);
                next.host_failure = self.progress.get(name).is_some_and(|p| p.host_failure);
            }
            match next.step {
                Step::Booting | Step::BootingPrevious => {
                    next.booted = now;
                    next.extended = 0;
                }
                Step::Stopped => {
                    next.last_healthy = self.nodes.get(name).map_or(0.0, |n| n.last_ready);
                }
                // A surge's replacement is healthy when it leaves verifying; a node swapped in
                // place when it commits.
                Step::Committed | Step::Drained
                    if (next.step == Step::Drained) == next.surge.is_some() =>
                {
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
                // A fresh step starts with a fresh view of the node's health (verifying knows
                // whether booting started the VM).
                let launched = next.step == Step::Verifying
                    && self.progress.get(name).is_some_and(|p| p.launched);
                let fresh = Progress {
                    entered: Some(Instant::now()),
                    launched,
                    ..Progress::default()
                };
                self.progress.insert(name.to_owned(), fresh);
            }
            let (from, to) = (self.image_label(&next.from), self.image_label(&next.to));
            // A failure the image is to blame for marks it failed as the rollback begins, in
            // the same write: nothing else starts on it meanwhile. One of the host's pauses
            // the rollouts.
            let starts_back = next.step == Step::RollingBack && swap.step != Step::RollingBack;
            if !self.journal(|j| {
                j.swaps.insert(name.to_owned(), next.clone());
                if starts_back && next.host_failure {
                    j.pause_for_host(&next);
                } else if starts_back && !next.blameless() {
                    j.fail_image(&next);
                }
            }) {
                return;
            }
            if outcome == Outcome::Failed {
                tracing::error!(node = %name, step = %next.step, after = %swap.step, took_ms, %from, %to, "swap failed: {why}");
            } else {
                tracing::info!(node = %name, step = %next.step, after = %swap.step, took_ms, %from, %to, "swap step");
            }
            if next.step == swap.step {
                // A rollback that failed (the VM would not stop): tried again later, not in
                // a loop on every wake.
                let progress = self.progress.entry(name.to_owned()).or_default();
                progress.retry_at = Some(Instant::now() + ROLLBACK_RETRY);
                return;
            }
        }
    }

    /// The planned step's work: none, once the swap's image is on the hypervisor (an upload
    /// to a Hyper-V host takes minutes, made before the swap touches its node, which serves
    /// meanwhile). None while it waits for it.
    pub(in crate::daemon) fn planned(&mut self, swap: &Swap) -> Option<(Outcome, String)> {
        let Some(why) = self.waits_for_image(&swap.to) else {
            return Some((Outcome::Done, String::new()));
        };
        let name = swap.node.as_str();
        let progress = self.progress.entry(name.to_owned()).or_default();
        if progress.waiting.as_ref() != Some(&why) {
            tracing::info!(node = %name, "swap waits: {why}");
        }
        progress.waiting = Some(why);
        None
    }

    /// The work of `swap`'s step: None while it is under way, else how it ended and, when it
    /// failed, why.
    async fn work(&mut self, swap: &Swap, probe: bool) -> Option<(Outcome, String)> {
        if swap.surge.is_some() {
            return self.work_surge(swap, probe).await;
        }
        let name = swap.node.as_str();
        let done = Some((Outcome::Done, String::new()));
        match swap.step {
            Step::Planned => self.planned(swap),
            // Cordoned and drained through the cluster's API (with `[clusters.kube]`).
            Step::Drained => self.drain_step(swap).await,
            Step::Stopping => {
                let reason = format!("swap to {}: powering down", self.image_label(&swap.to));
                self.mark_swapping(name, reason);
                let stopped = self.stop_for_swap(name, name)?;
                Some(self.host_outcome(name, stopped.map(|_| ())))
            }
            Step::Stopped => match self.driver.status(name, &self.node_dir(name)).await {
                VmStatus::Stopped => done,
                _ => {
                    Some(self.host_outcome(name, Err("its VM runs again after it stopped".into())))
                }
            },
            Step::DisksSwitched => {
                let switched = self.switch_disks(swap).await;
                Some(self.host_outcome(name, switched))
            }
            Step::Booting => {
                let booted = self.boot_for_swap(name, name, &swap.to).await;
                Some(self.host_outcome(name, booted))
            }
            Step::Verifying => self.verify(swap, name, probe).await,
            Step::RollingBack => {
                if self.waits_to_retry(name) {
                    return None;
                }
                let reason = format!(
                    "rolling back to {}: {}",
                    self.image_label(&swap.from),
                    swap.reason
                );
                self.mark_swapping(name, reason);
                if let Err(e) = self.set_record_image(name, &swap.from) {
                    return Some((Outcome::Failed, format!("{e:#}")));
                }
                self.stop_for_swap(name, name).map(|r| {
                    r.map_or_else(|e| (Outcome::Failed, e), |_| (Outcome::Done, String::new()))
                })
            }
            Step::BootingPrevious => self.back_on_previous(swap, probe).await,
            Step::Committed | Step::RolledBack => None,
        }
    }

    /// booting-previous: the node's VM on its previous image (started again unless it runs:
    /// a surge's old VM usually still does), healthy once.
    async fn back_on_previous(&mut self, swap: &Swap, probe: bool) -> Option<(Outcome, String)> {
        let name = swap.node.as_str();
        if !self.progress.get(name).is_some_and(|p| p.launched) {
            let booted = self.boot_for_swap(name, name, &swap.from).await;
            if booted.is_err() {
                return Some(self.host_outcome(name, booted));
            }
        }
        self.verify(swap, name, probe).await
    }

    /// Whether node `name`'s rollback failed lately and waits before it tries again.
    fn waits_to_retry(&self, name: &str) -> bool {
        self.progress
            .get(name)
            .and_then(|p| p.retry_at)
            .is_some_and(|t| Instant::now() < t)
    }

    /// The outcome of a step whose failure is the host's, not the image's.
    fn host_outcome(&mut self, name: &str, result: Result<(), String>) -> (Outcome, String) {
        match result {
            Ok(()) => (Outcome::Done, String::new()),
            Err(why) => {
                self.progress
                    .entry(name.to_owned())
                    .or_default()
                    .host_failure = true;
                (Outcome::Failed, why)
            }
        }
    }

    /// Why the swap of `name` cannot go on: its node left host.toml or has no record.
    fn orphaned(&self, name: &str) -> Option<String> {
        if !self.config.nodes.contains_key(name) {
            Some(format!("node {name} left host.toml"))
        } else if !self.records.contains_key(name) {
            Some(format!("node {name} has no record"))
        } else {
            None
        }
    }

    /// Ends the swap of a node that left host.toml (or lost its record) without blaming its
    /// image: its record names the previous image again, and the ordinary supervision takes
    /// the node (a removed node's VM is stopped).
    fn abandon(&mut self, swap: &Swap, why: &str) {
        let name = swap.node.clone();
        let now = super::unix_now();
        let reason = format!("{ABANDONED}: {why}");
        if swap.surge.is_some() {
            // Its replacement is stopped and deleted first, and its record set back (see
            // `drop_replacement`); the old VM is then left to the ordinary supervision.
            if self.journal(|j| {
                if let Some(s) = j.swaps.get_mut(&name) {
                    s.send_back(&reason, now);
                }
            }) {
                tracing::warn!(node = %name, "surge abandoned: {why}: its replacement is dropped");
            }
            return;
        }
        if self.records.contains_key(&name)
            && let Err(e) = self.set_record_image(&name, &swap.from)
        {
            tracing::warn!(node = %name, "cannot set its record back: {e:#}");
        }
        if self.journal(|j| {
            if let Some(s) = j.swaps.get_mut(&name) {
                // A swap already rolling back keeps its reason: its image failed.
                if s.moving() {
                    s.reason = reason;
                }
                s.step = Step::RolledBack;
                s.since = now;
            }
        }) {
            tracing::warn!(node = %name, "swap abandoned: {why}");
        }
    }

    /// Shows node `name` as swapping.
    fn mark_swapping(&mut self, name: &str, reason: String) {
        if let Some(node) = self.nodes.get_mut(name) {
            node.set(NodeState::Swapping, reason);
        }
    }

    /// Stops the VM tracked as `key` (node `name`'s own, or its replacement) for node
    /// `name`'s swap: None while the stop runs, else how it ended.
    fn stop_for_swap(&mut self, name: &str, key: &str) -> Option<Result<Stopped, String>> {
        let dir = self.node_dir(key);
        let progress = self.progress.entry(name.to_owned()).or_default();
        match progress.stopped.take() {
            Some((of, result)) if of == key => return Some(result),
            // Another VM's stop (an abort came while it ran): not this one's.
            _ => {}
        }
        if progress.stopping.is_some() {
            return None;
        }
        progress.stopping = Some(key.to_owned());
        self.spawn_stop(key, dir);
        None
    }

    /// A stop ended for the VM tracked as `key`, which a swap owns.
    pub(super) fn swap_stopped(&mut self, key: &str, result: Result<Stopped, String>) {
        if let Ok(how) = &result {
            tracing::info!(vm = %key, ?how, "its VM stopped for its swap");
            if let Some(node) = self.nodes.get_mut(key) {
                node.pid = 0;
            }
        }
        let name = replaced(key).unwrap_or(key);
        let progress = self.progress.entry(name.to_owned()).or_default();
        progress.stopping = None;
        progress.stopped = Some((key.to_owned(), result));
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
    async fn switch_disks(&mut self, swap: &Swap) -> Result<(), String> {
        let stored = match self.store.get(swap.to.as_ref()) {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(format!("its new image {} is not in the store", swap.to)),
            Err(e) => return Err(format!("cannot read the store: {e:#}")),
        };
        let dir = self.node_dir(&swap.node);
        if let Err(e) = self
            .driver
            .overlay(&dir, &stored.vhdx, swap.to.as_str())
            .await
        {
            return Err(format!("cannot make its new OS disk: {e:#}"));
        }
        self.set_record_image(&swap.node, &swap.to)
            .map_err(|e| format!("{e:#}"))
    }

    /// Boots the VM tracked as `key` (node `name`'s, or its replacement) on `image` unless it
    /// already runs (never two VMs on one run directory's disks).
    async fn boot_for_swap(&mut self, name: &str, key: &str, image: &Digest) -> Result<(), String> {
        if self.driver.status(key, &self.node_dir(key)).await != VmStatus::Stopped {
            return Ok(());
        }
        self.launch(key, image)
            .await
            .map_err(|e| format!("cannot start its VM: {e:#}"))?;
        self.progress.entry(name.to_owned()).or_default().launched = true;
        Ok(())
    }

    /// A beacon was judged for the VM tracked as `key` (now in `state`): counts towards its
    /// swap's soak when that VM is the one the step watches (a surge's replacement while it
    /// verifies, the node's own VM otherwise).
    pub(super) fn swap_heard(&mut self, key: &str, state: NodeState) {
        let name = replaced(key).unwrap_or(key);
        let Some(swap) = self.journal.swaps.get(name) else {
            return;
        };
        if !matches!(swap.step, Step::Verifying | Step::BootingPrevious) {
            return;
        }
        let watched = if swap.surge.is_some() && swap.step == Step::Verifying {
            replacement_key(name)
        } else {
            name.to_owned()
        };
        if key != watched {
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

    /// verifying / booting-previous: healthy on the swap's image, beacons still coming, for
    /// the soak (one healthy beacon for the way back), within the boot deadline; the state
    /// disk the one the node had.
    async fn verify(
        &mut self,
        swap: &Swap,
        subject: &str,
        probe: bool,
    ) -> Option<(Outcome, String)> {
        let name = swap.node.as_str();
        let policy = self
            .config
            .clusters
            .get(&swap.cluster)
            .map(|c| c.rollout.clone())
            .unwrap_or_default();
        let back = swap.step == Step::BootingPrevious;
        let dir = self.node_dir(subject);
        let console = dir.join("console.log");
        let now = super::unix_now();
        let watched = *self
            .progress
            .entry(name.to_owned())
            .or_default()
            .watched
            .get_or_insert(now);
        // A supervisor that restarts gives the node its whole deadline from its restart, once.
        let (start, extends) = swap.deadline_start(watched);
        if extends {
            tracing::info!(node = %name, "found verifying after a restart: its boot deadline starts again (once)");
            self.journal(|j| {
                if let Some(s) = j.swaps.get_mut(name) {
                    s.extended = watched;
                }
            });
        }
        let lost = self.nodes.get(subject).is_some_and(|n| n.is_lost());
        let status = if probe || lost || !self.listening(subject) {
            Some(self.driver.status(subject, &dir).await)
        } else {
            None
        };
        match status {
            Some(VmStatus::Stopped) if !self.progress.get(name).is_some_and(|p| p.launched) => {
                // Found stopped by a supervisor that did not start it (the host rebooted, or
                // `slipwayd down` ran): booted again, once, and watched anew.
                tracing::warn!(vm = %subject, "its VM is not running: starting it again to verify");
                if let Err(why) = self.boot_for_swap(name, subject, swap.image()).await {
                    return Some(self.host_outcome(name, Err(why)));
                }
                // A new VM: watched anew, its predecessor's soak forgotten.
                let progress = self.progress.entry(name.to_owned()).or_default();
                progress.watched = Some(now);
                progress.healthy_since = None;
                progress.healthy_beacons = 0;
                return None;
            }
            Some(VmStatus::Stopped) => {
                if let Some(node) = self.nodes.get_mut(subject) {
                    node.pid = 0;
                }
                let image = self.image_label(swap.image());
                return Some((
                    Outcome::Failed,
                    format!("its VM exited on {image} (see {})", console.display()),
                ));
            }
            // Found running after a restart of slipwayd: listen to it again.
            Some(status) if !self.listening(subject) => {
                self.keep(subject, Some(swap.image()), status);
            }
            _ => {}
        }
        if let Some(node) = self.nodes.get(subject) {
            if node.state == NodeState::Mismatch {
                return Some((Outcome::Failed, node.reason.clone()));
            }
            if let Some(why) = state_disk_changed(swap, &node.node_id, &node.state_disk) {
                return Some((Outcome::Failed, why));
            }
        }
        let quiet = self.nodes.get(subject).and_then(|n| n.quiet());
        // The beacon's word, and the API server's (the Node's Ready condition) where the
        // cluster gates on it.
        let api = self.api_ready(subject);
        let ready = self
            .nodes
            .get(subject)
            .is_some_and(|n| n.state == NodeState::Ready && !n.is_lost())
            && api.passes();
        let progress = self.progress.entry(name.to_owned()).or_default();
        let soak = if back {
            std::time::Duration::ZERO
        } else {
            policy.soak
        };
        // About one beacon per interval of the soak, two at least, and the last one recent.
        let wanted = if soak.is_zero() {
            1
        } else {
            u32::try_from(soak.as_secs() / BEACON_INTERVAL.as_secs())
                .unwrap_or(u32::MAX)
                .max(2)
        };
        let recent = quiet.is_some_and(|q| q < BEACON_INTERVAL * 2);
        if let Some((since, _)) = progress.healthy_since {
            if since.elapsed() >= soak && progress.healthy_beacons >= wanted && recent && ready {
                return Some((Outcome::Done, String::new()));
            }
            if quiet.is_some_and(|q| q > self.deadlines.silence) {
                return Some((
                    Outcome::Failed,
                    format!(
                        "its beacon went silent for over {} s while it soaked (see {})",
                        self.deadlines.silence.as_secs(),
                        console.display()
                    ),
                ));
            }
        }
        let elapsed = u64::try_from(now - start).unwrap_or(0);
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
                let mut said = self
                    .nodes
                    .get(subject)
                    .map(|n| n.reason.clone())
                    .unwrap_or_default();
                if let crate::kube::ops::ApiReady::NotReady(why)
                | crate::kube::ops::ApiReady::Unknown(why) = &api
                {
                    if !said.is_empty() {
                        said.push_str("; ");
                    }
                    said.push_str(&format!("the API server: {why}"));
                }
                // An API server that does not answer is the host's problem: the image is not
                // blamed for it.
                if matches!(api, crate::kube::ops::ApiReady::Unknown(_)) {
                    self.progress
                        .entry(name.to_owned())
                        .or_default()
                        .host_failure = true;
                }
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
        // Only what this swap cordoned is uncordoned, before the swap leaves the journal.
        if !self.uncordon_after(swap).await {
            return;
        }
        let name = swap.node.as_str();
        let dir = self.node_dir(name);
        let abandoned = swap.reason.starts_with(ABANDONED);
        let result = if swap.step == Step::Committed {
            "committed"
        } else if swap.reason == ABORTED {
            "aborted"
        } else if abandoned {
            "abandoned"
        } else {
            "rolled-back"
        };
        // A surge leaves one generation: the old VM's disks go after a commit, the
        // replacement's (if any are left) after a rollback.
        if let Some(next) = &swap.surge {
            let generation = if swap.step == Step::Committed {
                next.previous_generation
            } else {
                next.generation
            };
            if let Err(e) = self.remove_generation(name, generation).await {
                tracing::warn!(node = %name, generation, "cannot delete the disks of a VM it no longer runs: {e:#}");
            }
        }
        // The overlay the node no longer runs goes: the previous one after a commit, the
        // failed image's after a rollback (a later swap to it starts from a fresh one). An
        // abandoned node's VM may still run either.
        if !abandoned && swap.surge.is_none() {
            let keep = if swap.step == Step::Committed {
                &swap.to
            } else {
                &swap.from
            };
            if let Err(e) = self.driver.drop_overlays(&dir, keep.as_str()).await {
                tracing::warn!(node = %name, "cannot drop an OS overlay it no longer runs: {e:#}");
            }
        }
        let marks_failed = swap.step == Step::RolledBack && !swap.blameless();
        // The journal marks a failed image (and sends its other swaps back) as it ends the swap.
        let finished = self.journal(|j| j.finish(name));
        if !finished {
            return;
        }
        self.progress.remove(name);
        self.release_slot(name).await;
        // Supervised like any node from here: listened to at once (after a restart nothing
        // listens yet), not at the next whole pass.
        if !self.listening(name) {
            let status = self.driver.status(name, &dir).await;
            if status != VmStatus::Stopped {
                let image = self.records.get(name).and_then(|r| r.image.clone());
                self.keep(name, image.as_ref(), status);
            }
        }
        let seconds = (swap.since - swap.started).max(0);
        let durations = &mut self.swap_stats.durations;
        if durations.len() >= DURATIONS_KEPT {
            durations.remove(0);
        }
        #[allow(clippy::cast_precision_loss)]
        durations.push(seconds as f64);
        *self
            .swap_stats
            .results
            .entry(result.to_owned())
            .or_default() += 1;
        if let Some(downtime) = swap.downtime() {
            self.swap_stats.downtime.insert(name.to_owned(), downtime);
        }
        let (from, to) = (self.image_label(&swap.from), self.image_label(&swap.to));
        match result {
            "committed" => {
                tracing::info!(node = %name, %from, %to, seconds, downtime_s = ?swap.downtime(), "swap committed");
            }
            _ if marks_failed => {
                tracing::error!(node = %name, %from, %to, seconds, reason = %swap.reason, "swap rolled back: {to} is not rolled further on this host");
            }
            _ if swap.host_failure => {
                tracing::error!(node = %name, %from, %to, seconds, reason = %swap.reason, "swap rolled back for a host failure: rollouts are paused until `slipwayd rollout resume`");
            }
            _ => {
                tracing::warn!(node = %name, %from, %to, seconds, reason = %swap.reason, "swap {result}");
            }
        }
    }
}

/// Why the state disk a node reports is not the one it had before its swap, if it is not: its
/// node id changed, or the disk was found blank (formatted) or unreadable. Nothing to compare
/// when the node reported no id before the swap (an image that does not say).
fn state_disk_changed(swap: &Swap, node_id: &str, state_disk: &str) -> Option<String> {
    if swap.node_id.is_empty() {
        return None;
    }
    if matches!(state_disk, "formatted" | "unreadable" | "missing") {
        return Some(format!(
            "its state disk is {state_disk} on {} (it held node id {})",
            if swap.step == Step::BootingPrevious {
                "the previous image"
            } else {
                "the new image"
            },
            swap.node_id
        ));
    }
    (!node_id.is_empty() && node_id != swap.node_id).then(|| {
        format!(
            "its state disk holds node id {node_id}, not {} as before the swap",
            swap.node_id
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_fails_when_the_node_comes_back_with_another_state_disk() {
        let mut swap = Swap::plan(
            "w-1",
            "lab",
            Digest::repeated('a'),
            Digest::repeated('b'),
            0,
        );
        assert_eq!(
            state_disk_changed(&swap, "x", "formatted"),
            None,
            "no id known before"
        );
        swap.node_id = "0f1e".into();
        assert_eq!(state_disk_changed(&swap, "0f1e", "mounted"), None);
        assert_eq!(
            state_disk_changed(&swap, "", ""),
            None,
            "a beacon that does not say"
        );
        let why = state_disk_changed(&swap, "77aa", "mounted").unwrap();
        assert!(why.contains("77aa") && why.contains("0f1e"), "{why}");
        let why = state_disk_changed(&swap, "77aa", "formatted").unwrap();
        assert!(why.contains("formatted on the new image"), "{why}");
    }
}
