//! The rollout's side of the fleet lock ([`crate::fleet`]): a slot is taken before a swap is
//! planned, checked (the fencing check) before each step that takes a node away, and given
//! back when the swap ends; this host's nodes are published beside the slots.
//!
//! The lock store is blocking (an etcd call may wait for its request timeout on each member),
//! so every call runs in `spawn_blocking`. Publishing and reading the slots for status run in
//! a task of their own, every few seconds, never in the loop. A take, a check and a release
//! are awaited by the loop (one transaction each when the store answers); after the store
//! failed to answer, nothing more is asked of it for [`QUIET`], so a store that is down costs
//! the loop one timeout per [`QUIET`], not one per wake.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Daemon;
use crate::api::SlotInfo;
use crate::driver::Driver;
use crate::fleet::{ClusterView, Health, Holding, NodeReport, Slot, Slots, Take};
use crate::model::NodeState;
use crate::swap::{Step, Swap};

/// How long nothing more is asked of a store that did not answer, at least (and three times
/// as long as one call may take: every member's request timeout).
const QUIET: Duration = Duration::from_secs(5);
/// How often this host's nodes are published and the slots read for status.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(2);

/// The nodes of each cluster as this host reports them.
type Reports = BTreeMap<String, Vec<NodeReport>>;

/// What each cluster's slots looked like at the last read, or why they could not be read.
type Views = Arc<Mutex<BTreeMap<String, Result<ClusterView, String>>>>;

/// The fleet lock as the daemon holds it.
pub(super) struct Fleet {
    store: Arc<dyn Slots>,
    /// The slot held for each node swapping, by node (in memory: a restarted slipwayd has a
    /// new lease, and takes its slot again once the old one has expired).
    held: BTreeMap<String, Slot>,
    /// Slots to give back once the store answers again.
    releases: Vec<Slot>,
    /// Nothing is asked of the store before this (it did not answer lately).
    quiet_until: Option<Instant>,
    /// How long that is.
    quiet: Duration,
    /// Why the store did not answer, while it does not.
    pub(super) problem: String,
    /// What the publisher sends next.
    reports: watch::Sender<Reports>,
    /// What it read last.
    views: Views,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("held", &self.held)
            .field("releases", &self.releases)
            .finish_non_exhaustive()
    }
}

/// What the fencing check says a step may do.
pub(super) enum Fence {
    /// Go on.
    Go,
    /// Not now (the reason is shown).
    Wait(String),
    /// The slot is gone: the step fails.
    Lost(String),
}

impl Fleet {
    /// The fleet of `store`, and its publisher task (every [`PUBLISH_INTERVAL`]).
    pub(super) fn start(store: Arc<dyn Slots>, host: &str, config: &crate::config::Fleet) -> Fleet {
        let (reports, mut receiver) = watch::channel(Reports::new());
        let views: Views = Arc::default();
        let (publisher, seen) = (Arc::clone(&store), Arc::clone(&views));
        let host = host.to_owned();
        tokio::spawn(async move {
            let mut previous = Reports::new();
            loop {
                let current = receiver.borrow_and_update().clone();
                let store = Arc::clone(&publisher);
                let gone = retired(&previous, &current);
                let (reports, host) = (current.clone(), host.clone());
                let read = tokio::task::spawn_blocking(move || {
                    publish_all(&*store, &host, &reports, &gone)
                })
                .await
                .unwrap_or_default();
                *seen.lock().unwrap_or_else(PoisonError::into_inner) = read;
                previous = current;
                let tick = tokio::time::sleep(PUBLISH_INTERVAL);
                tokio::select! {
                    () = tick => {}
                    changed = receiver.changed() => if changed.is_err() { return },
                }
            }
        });
        Fleet {
            store,
            held: BTreeMap::new(),
            releases: Vec::new(),
            quiet_until: None,
            quiet: match config {
                crate::config::Fleet::None => QUIET,
                crate::config::Fleet::Etcd {
                    endpoints,
                    request_timeout,
                    ..
                // Three times one call to every member: a store that is down holds the loop
                // a quarter of the time at most.
                } => QUIET.max(
                    request_timeout
                        .saturating_mul(3 * u32::try_from(endpoints.len()).unwrap_or(1)),
                ),
            },
            problem: String::new(),
            reports,
            views,
        }
    }

    fn quiet(&self) -> bool {
        self.quiet_until.is_some_and(|t| Instant::now() < t)
    }

    /// Notes that the store did not answer (`why`), or that it did.
    fn answered(&mut self, failure: Option<String>) {
        match failure {
            Some(why) => {
                if self.problem.is_empty() {
                    tracing::error!("fleet: {why}");
                }
                self.problem = why;
                self.quiet_until = Some(Instant::now() + self.quiet);
            }
            None => {
                if !self.problem.is_empty() {
                    tracing::info!("fleet: the lock store answers again");
                }
                self.problem.clear();
                self.quiet_until = None;
            }
        }
    }

    /// Who holds which slot of `cluster`, as last read; or why it could not be read.
    pub(super) fn holders(&self, cluster: &str) -> (Vec<SlotInfo>, String) {
        let views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        match views.get(cluster) {
            None => (Vec::new(), String::new()),
            Some(Err(why)) => (Vec::new(), why.clone()),
            Some(Ok(view)) => (
                view.slots
                    .values()
                    .map(|h| SlotInfo {
                        index: h.index,
                        host: h.host.clone(),
                        node: h.node.clone(),
                        since: h.since,
                    })
                    .collect(),
                String::new(),
            ),
        }
    }
}

/// Nodes reported before and not now, by cluster: retired from the store (a node that left
/// host.toml would otherwise count as down, unreported, for ever).
fn retired(previous: &Reports, current: &Reports) -> Vec<(String, String)> {
    let mut gone = Vec::new();
    for (cluster, reports) in previous {
        for report in reports {
            let still = current
                .get(cluster)
                .is_some_and(|r| r.iter().any(|n| n.node == report.node));
            if !still {
                gone.push((cluster.clone(), report.node.clone()));
            }
        }
    }
    gone
}

/// Publishes every cluster's reports, retires `gone` and every member the store says is this
/// host's but that it no longer reports (removed while slipwayd was down, or a retire that
/// failed before), and reads each cluster's view.
fn publish_all(
    store: &dyn Slots,
    host: &str,
    reports: &Reports,
    gone: &[(String, String)],
) -> BTreeMap<String, Result<ClusterView, String>> {
    let retire = |cluster: &str, node: &str| match store.retire(cluster, node) {
        Ok(()) => tracing::info!(%cluster, %node, "fleet: node retired (no longer on this host)"),
        Err(e) => tracing::warn!(%cluster, %node, "fleet: cannot retire the node: {e:#}"),
    };
    for (cluster, node) in gone {
        retire(cluster, node);
    }
    let mut views = BTreeMap::new();
    for (cluster, nodes) in reports {
        let read = store
            .publish(cluster, nodes)
            .and_then(|()| store.view(cluster))
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
        if let Ok(view) = &read {
            for (node, owner) in &view.members {
                if owner == host && !nodes.iter().any(|r| &r.node == node) {
                    retire(cluster, node);
                }
            }
        }
        views.insert(cluster.clone(), read);
    }
    views
}

/// The control planes of `view` that are not ready on `target`, as `NODE on HOST` (a control
/// plane no live host reports is not known to be).
fn behind_control_planes(view: &ClusterView, target: &str) -> Vec<String> {
    view.control_planes
        .iter()
        .filter_map(|n| match view.statuses.get(n) {
            Some(s) if s.image == target && s.health == Health::Ready => None,
            Some(s) => Some(format!("{n} on {}", s.host)),
            None => Some(format!("{n} (reported by no live host)")),
        })
        .collect()
}

/// A node's health for the fleet, from its state on this host.
fn health(state: Option<NodeState>) -> Health {
    match state {
        Some(NodeState::Ready) => Health::Ready,
        Some(
            NodeState::Starting | NodeState::Unreachable | NodeState::Mismatch | NodeState::Silent,
        ) => Health::NotReady,
        _ => Health::Down,
    }
}

/// Runs a blocking store call off the loop.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| format!("the fleet task failed: {e}"))
}

impl<D: Driver> Daemon<D> {
    /// Hands this host's nodes, as they are now, to the publisher.
    pub(super) fn report_to_fleet(&mut self) {
        let mut reports = Reports::new();
        for node in self.config.nodes.values() {
            let state = self.nodes.get(&node.name).map(|n| n.state);
            let image = self
                .records
                .get(&node.name)
                .and_then(|r| r.image.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default();
            reports
                .entry(node.cluster.clone())
                .or_default()
                .push(NodeReport {
                    node: node.name.clone(),
                    health: health(state),
                    image,
                    control_plane: node.role == crate::config::Role::ControlPlane,
                });
        }
        self.fleet.reports.send_if_modified(|old| {
            let changed = *old != reports;
            if changed {
                *old = reports;
            }
            changed
        });
    }

    /// Why a worker of `cluster` may not start its swap to `target` yet: a control plane of
    /// the cluster on any host (as last read) is not ready on the target (control planes go
    /// first, as kubeadm upgrades need). None when it may.
    pub(super) fn control_planes_first(&self, cluster: &str, target: &str) -> Option<String> {
        let views = self
            .fleet
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let view = match views.get(cluster) {
            Some(Ok(view)) => view,
            Some(Err(why)) => {
                return Some(format!(
                    "the fleet's view of the cluster cannot be read: {why}"
                ));
            }
            None => return Some("the fleet's view of the cluster is not read yet".into()),
        };
        let behind = behind_control_planes(view, target);
        (!behind.is_empty()).then(|| {
            format!(
                "control planes first: {} not yet ready on the target",
                behind.join(", ")
            )
        })
    }

    /// Takes a slot for `node` of `cluster` (publishing this host's nodes first, so the count
    /// is fresh): Ok when held, else why not now.
    pub(super) async fn take_slot(&mut self, cluster: &str, node: &str) -> Result<(), String> {
        if self.fleet.held.contains_key(node) {
            return Ok(());
        }
        if self.fleet.quiet() {
            return Err(format!(
                "the fleet lock store does not answer: {}",
                self.fleet.problem
            ));
        }
        let max = self
            .config
            .clusters
            .get(cluster)
            .map_or(1, |c| c.rollout.max_unavailable);
        let reports = self
            .fleet
            .reports
            .borrow()
            .get(cluster)
            .cloned()
            .unwrap_or_default();
        let store = Arc::clone(&self.fleet.store);
        let (c, n) = (cluster.to_owned(), node.to_owned());
        let taken = blocking(move || {
            store.publish(&c, &reports)?;
            store.take(&c, &n, max)
        })
        .await;
        match taken {
            Ok(Ok(Take::Taken(slot))) => {
                self.fleet.answered(None);
                tracing::info!(%node, %cluster, slot = slot.index, "fleet slot taken");
                self.fleet.held.insert(node.to_owned(), slot);
                Ok(())
            }
            Ok(Ok(Take::Refused(refusal))) => {
                self.fleet.answered(None);
                Err(format!("no fleet slot for {node}: {refusal}"))
            }
            Ok(Err(e)) => {
                let why = format!("{:#}", anyhow::Error::from(e));
                self.fleet.answered(Some(why.clone()));
                Err(why)
            }
            Err(why) => Err(why),
        }
    }

    /// The fencing check before `swap`'s step: planned, drained and stopping (the steps that
    /// take the node away) need its slot, taken again if this supervisor has none (it
    /// restarted). A stopping step found after a restart goes on without one: its node may
    /// already be down, and is counted as such by every host. Other steps bring the node
    /// back, and go on whatever the store says.
    pub(super) async fn fence(&mut self, swap: &Swap) -> Fence {
        let name = swap.node.as_str();
        if !matches!(swap.step, Step::Planned | Step::Drained | Step::Stopping) {
            return Fence::Go;
        }
        let Some(slot) = self.fleet.held.get(name).cloned() else {
            if swap.step == Step::Stopping {
                return Fence::Go;
            }
            return match self.take_slot(&swap.cluster, name).await {
                Ok(()) => Fence::Go,
                Err(why) => Fence::Wait(why),
            };
        };
        if self.fleet.quiet() {
            return self.unanswered(swap, self.fleet.problem.clone());
        }
        let store = Arc::clone(&self.fleet.store);
        let checked = blocking(move || store.check(&slot)).await;
        match checked {
            Ok(Holding::Held) => {
                self.fleet.answered(None);
                Fence::Go
            }
            Ok(Holding::Lost { reason }) => {
                self.fleet.answered(None);
                self.fleet.held.remove(name);
                Fence::Lost(format!("it lost its fleet slot: {reason}"))
            }
            Ok(Holding::Unreachable(e)) => {
                let why = format!("{:#}", anyhow::Error::from(e));
                self.fleet.answered(Some(why.clone()));
                self.unanswered(swap, why)
            }
            Err(why) => self.unanswered(swap, why),
        }
    }

    /// The store did not answer the fencing check: a stopping step goes on (the swap finishes
    /// or rolls back), an earlier one waits.
    fn unanswered(&self, swap: &Swap, why: String) -> Fence {
        if swap.step == Step::Stopping {
            Fence::Go
        } else {
            Fence::Wait(format!("the fleet lock store does not answer: {why}"))
        }
    }

    /// Gives back node `name`'s slot, now or, if the store does not answer, later.
    pub(super) async fn release_slot(&mut self, name: &str) {
        if let Some(slot) = self.fleet.held.remove(name) {
            self.fleet.releases.push(slot);
        }
        self.retry_releases().await;
    }

    /// Gives back the slots whose release is pending.
    pub(super) async fn retry_releases(&mut self) {
        if self.fleet.releases.is_empty() || self.fleet.quiet() {
            return;
        }
        let pending = std::mem::take(&mut self.fleet.releases);
        let store = Arc::clone(&self.fleet.store);
        let outcome = blocking(move || {
            let mut left = Vec::new();
            let mut failure = None;
            for slot in pending {
                match store.release(&slot) {
                    Ok(()) => {
                        tracing::info!(node = %slot.node, slot = slot.index, "fleet slot released")
                    }
                    Err(e) => {
                        failure = Some(format!("{:#}", anyhow::Error::from(e)));
                        left.push(slot);
                    }
                }
            }
            (left, failure)
        })
        .await;
        match outcome {
            Ok((left, failure)) => {
                self.fleet.releases = left;
                self.fleet.answered(failure);
            }
            Err(why) => tracing::error!("{why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_nodes_count_as_available() {
        assert_eq!(health(Some(NodeState::Ready)), Health::Ready);
        assert_eq!(health(Some(NodeState::Silent)), Health::NotReady);
        assert_eq!(health(Some(NodeState::Swapping)), Health::Down);
        assert_eq!(health(None), Health::Down);
    }

    #[test]
    fn workers_wait_for_every_control_plane_ready_on_the_target() {
        let status = |host: &str, health, image: &str, control_plane| crate::fleet::NodeStatus {
            host: host.into(),
            health,
            since: 0,
            image: image.into(),
            control_plane,
        };
        let mut view = ClusterView::default();
        view.control_planes
            .extend(["cp-1".to_owned(), "cp-2".to_owned(), "cp-3".to_owned()]);
        view.statuses
            .insert("cp-3".into(), status("d", Health::Ready, "new", true));
        view.statuses
            .insert("cp-1".into(), status("a", Health::Ready, "new", true));
        view.statuses
            .insert("cp-2".into(), status("b", Health::Ready, "old", true));
        view.statuses
            .insert("w-1".into(), status("c", Health::Down, "old", false));
        assert_eq!(behind_control_planes(&view, "new"), ["cp-2 on b"]);
        view.statuses
            .insert("cp-2".into(), status("b", Health::NotReady, "new", true));
        assert_eq!(behind_control_planes(&view, "new"), ["cp-2 on b"]);
        view.statuses
            .insert("cp-2".into(), status("b", Health::Ready, "new", true));
        assert!(behind_control_planes(&view, "new").is_empty());
        // A control plane whose host died is not known to be on the target.
        view.statuses.remove("cp-3");
        assert_eq!(
            behind_control_planes(&view, "new"),
            ["cp-3 (reported by no live host)"]
        );
    }

    #[test]
    fn a_member_of_this_host_it_no_longer_reports_is_retired_at_the_next_publish() {
        // n2 left host.toml while slipwayd was down: nothing remembers it but the store.
        let store = crate::fleet::LocalSlots::new("h");
        let report = |node: &str| NodeReport {
            node: node.into(),
            health: Health::Ready,
            image: String::new(),
            control_plane: false,
        };
        store.publish("lab", &[report("n1"), report("n2")]).unwrap();
        let reports = Reports::from([("lab".into(), vec![report("n1")])]);
        let views = publish_all(&store, "h", &reports, &[]);
        let view = views["lab"].as_ref().unwrap();
        assert!(view.members.contains_key("n2"), "read before the retire");
        let view = store.view("lab").unwrap();
        assert_eq!(view.members.keys().collect::<Vec<_>>(), ["n1"]);
        // Another host's member is not this host's to retire.
        let other = crate::fleet::LocalSlots::new("other");
        other.publish("lab", &[report("n9")]).unwrap();
        publish_all(&other, "h", &Reports::from([("lab".into(), vec![])]), &[]);
        assert!(other.view("lab").unwrap().members.contains_key("n9"));
    }

    #[test]
    fn a_node_no_longer_reported_is_retired() {
        let report = |node: &str| NodeReport {
            node: node.into(),
            health: Health::Ready,
            image: String::new(),
            control_plane: false,
        };
        let before = Reports::from([("lab".into(), vec![report("a"), report("b")])]);
        let after = Reports::from([("lab".into(), vec![report("a")])]);
        assert_eq!(retired(&before, &after), vec![("lab".into(), "b".into())]);
        assert!(retired(&after, &before).is_empty());
    }
}
