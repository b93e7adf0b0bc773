//! A swap's work with its cluster's Kubernetes API server (`[clusters.kube]`, see
//! [`crate::kube::ops`]): the drained step's cordon and drain, the uncordon when the swap
//! ends, and the Ready gate the verifying step joins with the beacon's word. Every request
//! runs in tokio's blocking pool: these methods start tasks and look at how they ended, so
//! the supervision loop never waits on an API server.
//!
//! Which Kubernetes node: a VM's hostname ([`records::hostname`]), `NODE`, or `NODE-gN` for
//! generation N. The drained step drains the VM that is about to stop: in place, the node's
//! own (its record's generation); in a surge, the old VM (the replacement's previous
//! generation). The name is journaled ([`Swap::cordoned`]) before the cordon request goes,
//! and the swap's end uncordons exactly that name: after a surge commits, the node's name is
//! the replacement's, which was never cordoned.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Kube;
use crate::daemon::Daemon;
use crate::driver::Driver;
use crate::kube::ops::{self, ApiReady, Cordoned, Drain, DrainReport, Uncordon};
use crate::records;
use crate::swap::{Outcome, Swap, replaced};

/// How long a failed uncordon waits before it is tried again.
const UNCORDON_RETRY: Duration = Duration::from_secs(15);
/// How long a swap's end waits for its uncordon before it ends anyway, leaving the node
/// cordoned (said in the log, and kept in the journal: the node's next swap uncordons it).
const UNCORDON_PATIENCE: Duration = Duration::from_secs(10 * 60);

impl<D: Driver> Daemon<D> {
    /// The cluster's `[clusters.kube]`, if it has one.
    fn kube_of(&self, cluster: &str) -> Option<Kube> {
        self.config
            .clusters
            .get(cluster)
            .and_then(|c| c.kube.clone())
    }

    /// The Kubernetes node name of the VM `swap`'s drained step drains: in place, the node's;
    /// in a surge, the old VM's.
    fn drained_node(&self, swap: &Swap) -> String {
        let generation = match &swap.surge {
            Some(replacement) => replacement.previous_generation,
            None => self.records.get(&swap.node).map_or(0, |r| r.generation),
        };
        records::hostname(&swap.node, generation)
    }

    /// The drained step's work: None while the drain runs; Done once the node is drained (or
    /// forced, or not registered), or at once when its cluster has no `[clusters.kube]`;
    /// Failed (a host failure: the image is not blamed, rollouts pause) when the policy
    /// refuses, the deadline passed with `on-deadline = "roll-back"`, or the API server cannot
    /// be used. The node is cordoned first, its name journaled before the request goes. The
    /// deadline counts from the step's start as journaled, so a restarted supervisor does not
    /// give it more.
    pub(in crate::daemon) async fn drain_step(&mut self, swap: &Swap) -> Option<(Outcome, String)> {
        let name = swap.node.as_str();
        if let Some(mut drain) = self.kube.drains.remove(name) {
            let ended = match drain.ended.take() {
                Some(ended) => ended,
                None => {
                    let Some(task) = drain.task.take_if(|t| t.is_finished()) else {
                        self.kube.drains.insert(name.to_owned(), drain);
                        return None;
                    };
                    let report = task.await.unwrap_or_else(|e| DrainReport {
                        cordoned: Cordoned::Unknown,
                        result: Err(format!("the drain task failed: {e}")),
                    });
                    let theirs = match report.cordoned {
                        Cordoned::NotRegistered => true,
                        Cordoned::Already => !drain.resumed,
                        Cordoned::Changed | Cordoned::Unknown => false,
                    };
                    if !theirs {
                        return Some(self.drain_ended(name, &drain.node, report.result));
                    }
                    report.result
                }
            };
            // Not this swap's cordon: forgotten before the step moves on. The caller journals
            // the next step from its own copy of the swap, so the result waits for a call
            // whose copy no longer names the node (one per wake until the journal is written).
            if swap.cordoned.is_empty() {
                return Some(self.drain_ended(name, &drain.node, ended));
            }
            if self.journal(|j| {
                if let Some(s) = j.swaps.get_mut(name) {
                    s.cordoned.clear();
                }
            }) {
                tracing::info!(node = %name, kube_node = %drain.node, "the node was cordoned before this swap (or is not registered): it is not uncordoned after it");
            }
            drain.ended = Some(ended);
            self.kube.drains.insert(name.to_owned(), drain);
            return None;
        }
        let Some(kube) = self.kube_of(&swap.cluster) else {
            return Some((Outcome::Done, String::new()));
        };
        let node = self.drained_node(swap);
        // A name journaled already is this swap's (a restarted supervisor), as is one a swap
        // before it could not uncordon.
        let resumed = swap.cordoned == node
            || self
                .journal
                .last
                .get(name)
                .is_some_and(|last| last.cordoned == node);
        let now = crate::daemon::unix_now();
        let began = if swap.drain_since > 0 {
            swap.drain_since
        } else {
            now
        };
        if (swap.cordoned != node || swap.drain_since == 0)
            && !self.journal(|j| {
                if let Some(s) = j.swaps.get_mut(name) {
                    s.cordoned.clone_from(&node);
                    s.drain_since = began;
                }
            })
        {
            // Nothing is cordoned that the journal does not name: tried again on a later call.
            return None;
        }
        let left = began
            .saturating_add(secs(kube.drain_deadline))
            .saturating_sub(crate::daemon::unix_now())
            .max(0);
        let deadline = Instant::now() + Duration::from_secs(left.unsigned_abs());
        let reason = format!(
            "swap to {}: draining Kubernetes node {node} (up to {} s)",
            self.image_label(&swap.to),
            left
        );
        self.mark_swapping(name, reason);
        tracing::info!(node = %name, kube_node = %node, api = %kube.url(), deadline_s = left, on_deadline = %kube.on_deadline, "cordoning and draining");
        let cancel = Arc::new(AtomicBool::new(false));
        let task = {
            let (clients, cancel) = (self.kube.clients.clone(), cancel.clone());
            let (cluster, node) = (swap.cluster.clone(), node.clone());
            let pki = ops::pki_dir(&self.config.state_dir, &cluster);
            tokio::task::spawn_blocking(move || {
                ops::drain_for_swap(&clients, &cluster, &pki, &kube, &node, deadline, &cancel)
            })
        };
        self.kube.drains.insert(
            name.to_owned(),
            Drain {
                node,
                resumed,
                cancel,
                task: Some(task),
                ended: None,
            },
        );
        None
    }

    /// The drained step's outcome from how its drain ended.
    fn drain_ended(
        &mut self,
        name: &str,
        node: &str,
        result: Result<String, String>,
    ) -> (Outcome, String) {
        match result {
            Ok(done) => {
                tracing::info!(node = %name, kube_node = %node, "{done}");
                (Outcome::Done, String::new())
            }
            Err(why) => self.host_outcome(name, Err(why)),
        }
    }

    /// The uncordon of what `swap` cordoned, when it has reached its end (committed or rolled
    /// back): true once done (or nothing to do), false while it runs or waits to be tried
    /// again. A drain still running (its swap was sent back meanwhile) is cancelled and waited
    /// for first: it may yet cordon. After [`UNCORDON_PATIENCE`] of failures it gives up (true),
    /// says so, and leaves the name journaled: the node's next swap uncordons it.
    pub(in crate::daemon) async fn uncordon_after(&mut self, swap: &Swap) -> bool {
        let name = swap.node.as_str();
        if let Some(mut drain) = self.kube.drains.remove(name) {
            drain.cancel.store(true, Ordering::SeqCst);
            let theirs = match drain.task.take_if(|t| t.is_finished()) {
                Some(task) => task.await.is_ok_and(|report| match report.cordoned {
                    Cordoned::NotRegistered => true,
                    Cordoned::Already => !drain.resumed,
                    Cordoned::Changed | Cordoned::Unknown => false,
                }),
                None if drain.task.is_some() => {
                    self.kube.drains.insert(name.to_owned(), drain);
                    return false;
                }
                // Its result was held back: the cordon was not this swap's.
                None => drain.ended.is_some(),
            };
            if theirs
                && !self.journal(|j| {
                    if let Some(s) = j.swaps.get_mut(name) {
                        s.cordoned.clear();
                    }
                })
            {
                drain.ended = Some(Err("the swap ended".into()));
                self.kube.drains.insert(name.to_owned(), drain);
                return false;
            }
        }
        // The journal's own copy: a call before may have changed it.
        let node = self
            .journal
            .swaps
            .get(name)
            .map_or_else(|| swap.cordoned.clone(), |s| s.cordoned.clone());
        if node.is_empty() {
            self.kube.uncordons.remove(name);
            return true;
        }
        let Some(cluster) = self.config.clusters.get(&swap.cluster) else {
            tracing::error!(node = %name, kube_node = %node, cluster = %swap.cluster, "the cluster left host.toml: its node stays cordoned (kubectl uncordon {node})");
            return true;
        };
        // A cluster whose table was removed meanwhile is still asked at its endpoint: the
        // cordon is slipwayd's to undo.
        let endpoint = cluster.kube.as_ref().map_or_else(
            || cluster.control_plane_endpoint.clone(),
            |k| k.endpoint.clone(),
        );
        let now = Instant::now();
        let uncordon = self
            .kube
            .uncordons
            .entry(name.to_owned())
            .or_insert_with(|| Uncordon {
                since: now,
                task: None,
                retry_at: None,
            });
        let result = match uncordon.task.take_if(|t| t.is_finished()) {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(format!("the uncordon task failed: {e}"))),
            None if uncordon.task.is_some() => return false,
            None if uncordon.retry_at.is_some_and(|t| now < t) => return false,
            None => {
                let clients = self.kube.clients.clone();
                let (cluster, kube_node) = (swap.cluster.clone(), node.clone());
                let pki = ops::pki_dir(&self.config.state_dir, &cluster);
                uncordon.task = Some(tokio::task::spawn_blocking(move || {
                    ops::uncordon_for_swap(&clients, &cluster, &pki, &endpoint, &kube_node)
                }));
                return false;
            }
        };
        match result {
            Ok(change) => {
                if !self.journal(|j| {
                    if let Some(s) = j.swaps.get_mut(name) {
                        s.cordoned.clear();
                    }
                }) {
                    return false;
                }
                self.kube.uncordons.remove(name);
                tracing::info!(node = %name, kube_node = %node, ?change, "uncordoned after its swap");
                true
            }
            Err(why) if uncordon.since.elapsed() >= UNCORDON_PATIENCE => {
                tracing::error!(node = %name, kube_node = %node, "{why}: giving up after {} s; the node stays cordoned until its next swap (or kubectl uncordon {node})", UNCORDON_PATIENCE.as_secs());
                self.kube.uncordons.remove(name);
                true
            }
            Err(why) => {
                tracing::warn!(node = %name, kube_node = %node, "{why}: trying again in {} s", UNCORDON_RETRY.as_secs());
                uncordon.retry_at = Some(now + UNCORDON_RETRY);
                false
            }
        }
    }

    /// What the API server says of the VM tracked as `key` (a node's, or a surge's
    /// replacement's `NODE/next`), for the gate the cluster's `ready-gate` sets: `Ungated`
    /// without one. Never waits: it reads what the last listing of the cluster's nodes said,
    /// and starts the next listing when one is due ([`ops::READY_INTERVAL`]); a node is
    /// `NotReady` until a listing says Ready, and again when none succeeded for
    /// [`ops::READY_STALE`].
    pub(in crate::daemon) fn api_ready(&self, key: &str) -> ApiReady {
        let name = replaced(key).unwrap_or(key);
        let Some(cluster) = self.config.nodes.get(name).map(|n| n.cluster.as_str()) else {
            return ApiReady::Ungated;
        };
        let Some(kube) = self.kube_of(cluster).filter(|k| k.ready_gate) else {
            return ApiReady::Ungated;
        };
        let generation = if replaced(key).is_some() {
            let surge = self.journal.swaps.get(name).and_then(|s| s.surge.as_ref());
            surge.map_or(0, |r| r.generation)
        } else {
            self.records.get(name).map_or(0, |r| r.generation)
        };
        self.list_ready(cluster, &kube);
        self.kube.ready.get(
            cluster,
            &records::hostname(name, generation),
            Instant::now(),
        )
    }

    /// Starts the listing of every gated cluster's nodes that is due (for the check timer, so
    /// the gate's word is fresh before a swap asks).
    pub(in crate::daemon) fn refresh_api_ready(&self) {
        for cluster in self.config.clusters.values() {
            if let Some(kube) = cluster.kube.as_ref().filter(|k| k.ready_gate) {
                self.list_ready(&cluster.name, kube);
            }
        }
    }

    /// Starts a listing of `cluster`'s nodes in the blocking pool, if one is due.
    fn list_ready(&self, cluster: &str, kube: &Kube) {
        if !self.kube.ready.claim(cluster, Instant::now()) {
            return;
        }
        let (clients, ready) = (self.kube.clients.clone(), self.kube.ready.clone());
        let (cluster, endpoint) = (cluster.to_owned(), kube.endpoint.clone());
        let pki = ops::pki_dir(&self.config.state_dir, &cluster);
        tokio::task::spawn_blocking(move || {
            let listed = ops::list_ready(&clients, &cluster, &pki, &endpoint);
            ready.store(&cluster, listed, Instant::now());
        });
    }
}

/// Whole seconds of `d`, as the journal's times count.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::path::Path;

    use super::*;
    use crate::config::HostConfig;
    use crate::kube::client::{Client, CordonChange};
    use crate::kube::fake::{FakeApiServer, FakePod, World};
    use crate::model::Digest;
    use crate::swap::{Replacement, Step};

    use crate::driver::testing::NoVms;

    /// A FAKE API server of cluster lab (its PKI made in `dir`'s state directory), and a
    /// supervisor of cp-1 and worker-1 whose `[clusters.kube]` points at it, with `extra`.
    fn setup(dir: &Path, world: World, extra: &str) -> (FakeApiServer, Daemon<NoVms>) {
        let state = dir.join("state");
        crate::pki::ensure(&ops::pki_dir(&state, "lab"), "lab").unwrap();
        let server = FakeApiServer::start(&ops::pki_dir(&state, "lab"), world).unwrap();
        let text = format!(
            "format = 1\n[host]\nname = \"hci-01\"\nstate-dir = \"{}\"\n\
             [source]\nreference = \"oci:/srv/nodes\"\nchannel = \"stable\"\nkeys = [\"/k.pub\"]\n\
             [hypervisor]\nkind = \"qemu\"\n\
             [[clusters]]\nname = \"lab\"\nkubernetes = \"1.32.10\"\n\
             control-plane-endpoint = \"10.44.0.10:6443\"\npod-cidr = \"10.244.0.0/16\"\n\
             service-cidr = \"10.96.0.0/12\"\n\
             network = {{ cidr = \"10.44.0.0/24\", gateway = \"10.44.0.1\", pool = \"10.44.0.10-10.44.0.20\" }}\n\
             [clusters.kube]\napi = \"https://{}\"\n{extra}\n\
             [[nodes]]\nname = \"cp-1\"\ncluster = \"lab\"\nrole = \"control-plane\"\nmemory = \"1G\"\nstate-disk = \"1G\"\n\
             [[nodes]]\nname = \"worker-1\"\ncluster = \"lab\"\nrole = \"worker\"\nmemory = \"1G\"\nstate-disk = \"1G\"\n",
            state.display(),
            server.endpoint()
        );
        let path = dir.join("host.toml");
        std::fs::write(&path, &text).unwrap();
        let config = HostConfig::parse(&path, &text).unwrap();
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        let daemon = Daemon::new(&path, config, NoVms::default(), events).unwrap();
        (server, daemon)
    }

    /// worker-1 runs web-1, under a budget that wants both web pods (no disruption allowed);
    /// cp-1 runs web-2; worker-1-g1 and worker-1-g2 are a surge's VMs.
    fn blocked() -> World {
        let mut world = World::default();
        for node in ["cp-1", "worker-1", "worker-1-g1", "worker-1-g2"] {
            world.add_node(node, true, &[]);
        }
        for (pod, node) in [("web-1", "worker-1"), ("web-2", "cp-1")] {
            world.add_pod(
                FakePod::new("shop", pod, node)
                    .owned_by("ReplicaSet", "web-5d8f")
                    .label("app", "web"),
            );
        }
        world.add_pdb("shop", "web", &[("app", "web")], Some(2), None);
        world
    }

    /// Plants worker-1's swap in its drained step, as `advance` finds it.
    fn drained_step(daemon: &mut Daemon<NoVms>, surge: Option<Replacement>) {
        let now = crate::daemon::unix_now();
        let mut swap = Swap::plan(
            "worker-1",
            "lab",
            Digest::repeated('a'),
            Digest::repeated('b'),
            now,
        );
        swap.step = Step::Drained;
        swap.surge = surge;
        assert!(daemon.journal(|j| {
            j.swaps.insert("worker-1".into(), swap);
        }));
    }

    /// Calls the drained step's work as `advance` would on every wake (with the journal's
    /// copy of the swap) until it ends.
    async fn drain(daemon: &mut Daemon<NoVms>) -> (Outcome, String) {
        for _ in 0..100 {
            let swap = daemon.journal.swaps["worker-1"].clone();
            if let Some(ended) = daemon.drain_step(&swap).await {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the drain did not end");
    }

    /// Ends worker-1's swap at `step` and calls the uncordon until it is done.
    async fn finish(daemon: &mut Daemon<NoVms>, step: Step) {
        daemon.journal.swaps.get_mut("worker-1").unwrap().step = step;
        for _ in 0..100 {
            let swap = daemon.journal.swaps["worker-1"].clone();
            if daemon.uncordon_after(&swap).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the uncordon did not end");
    }

    #[tokio::test]
    async fn a_blocked_drain_fails_at_its_deadline_without_blaming_the_image_and_is_uncordoned() {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut daemon) = setup(dir.path(), blocked(), "drain-deadline = \"1s\"");
        drained_step(&mut daemon, None);
        let start = Instant::now();
        let swap = daemon.journal.swaps["worker-1"].clone();
        assert_eq!(daemon.drain_step(&swap).await, None, "never waits");
        assert_eq!(
            crate::swap::journal::Journal::load(&daemon.config.state_dir)
                .unwrap()
                .swaps["worker-1"]
                .cordoned,
            "worker-1",
            "journaled before the cordon request goes"
        );
        let (outcome, why) = drain(&mut daemon).await;
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(outcome, Outcome::Failed);
        assert!(why.contains("blocked by a PodDisruptionBudget"), "{why}");
        assert!(
            daemon.progress["worker-1"].host_failure,
            "the host's failure: the image is not marked failed, rollouts pause"
        );
        {
            let mut world = server.world();
            assert!(world.unschedulable("worker-1"));
            assert!(world.pods_on("worker-1").contains("shop/web-1"));
        }
        finish(&mut daemon, Step::RolledBack).await;
        assert!(
            !server.world().unschedulable("worker-1"),
            "left schedulable"
        );
        assert_eq!(daemon.journal.swaps["worker-1"].cordoned, "");
        let swap = daemon.journal.swaps["worker-1"].clone();
        assert!(daemon.uncordon_after(&swap).await, "nothing more to do");
    }

    #[tokio::test]
    async fn force_deletes_the_held_pod_and_an_operators_cordon_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut daemon) = setup(
            dir.path(),
            blocked(),
            "drain-deadline = \"1s\"\non-deadline = \"force\"",
        );
        let pki = ops::pki_dir(&daemon.config.state_dir, "lab");
        let client = Client::for_cluster(&pki, &server.endpoint()).unwrap();
        assert_eq!(client.cordon("worker-1").unwrap(), CordonChange::Changed);
        drained_step(&mut daemon, None);
        assert_eq!(drain(&mut daemon).await, (Outcome::Done, String::new()));
        assert!(server.world().pods_on("worker-1").is_empty(), "deleted");
        assert_eq!(
            daemon.journal.swaps["worker-1"].cordoned, "",
            "cordoned already: not this swap's"
        );
        finish(&mut daemon, Step::Committed).await;
        assert!(
            server.world().unschedulable("worker-1"),
            "the operator's cordon stays"
        );
    }

    #[tokio::test]
    async fn a_surge_drains_its_old_vm_and_the_gate_reads_its_replacements_ready_condition() {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut daemon) = setup(dir.path(), blocked(), "drain-deadline = \"1s\"");
        let replacement = Replacement {
            generation: 2,
            previous_generation: 1,
            address: "10.44.0.12".parse().unwrap(),
            mac: "52:54:00:00:00:02".into(),
            previous_address: "10.44.0.11".parse().unwrap(),
            previous_mac: "52:54:00:00:00:01".into(),
        };
        drained_step(&mut daemon, Some(replacement));
        assert_eq!(drain(&mut daemon).await, (Outcome::Done, String::new()));
        assert_eq!(daemon.journal.swaps["worker-1"].cordoned, "worker-1-g1");
        assert!(server.world().unschedulable("worker-1-g1"));
        // Ready per the API server: the replacement (generation 2), as verifying asks.
        let mut seen = ApiReady::NotReady(String::new());
        for _ in 0..50 {
            seen = daemon.api_ready("worker-1/next");
            if seen == ApiReady::Ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, ApiReady::Ready);
        server.world().set_ready("worker-1-g2", false);
        for _ in 0..100 {
            seen = daemon.api_ready("worker-1/next");
            if !seen.passes() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            seen,
            ApiReady::NotReady("the API server says node worker-1-g2 is not Ready".into())
        );
        assert_eq!(daemon.api_ready("not-configured"), ApiReady::Ungated);
        // Committed: the old VM's name is uncordoned, never the replacement's.
        finish(&mut daemon, Step::Committed).await;
        let world = server.world();
        assert!(!world.unschedulable("worker-1-g1"));
        assert!(
            !world
                .requests
                .iter()
                .any(|r| r == "PATCH /api/v1/nodes/worker-1-g2"),
            "{:?}",
            world.requests
        );
    }

    #[tokio::test]
    async fn a_swap_sent_back_while_it_drains_stops_the_drain_then_uncordons() {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut daemon) = setup(dir.path(), blocked(), "drain-deadline = \"60s\"");
        drained_step(&mut daemon, None);
        let swap = daemon.journal.swaps["worker-1"].clone();
        assert_eq!(daemon.drain_step(&swap).await, None);
        // Until the cordon went, a sent-back swap could be uncordoned too early.
        for _ in 0..50 {
            if server.world().unschedulable("worker-1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(server.world().unschedulable("worker-1"));
        let start = Instant::now();
        finish(&mut daemon, Step::RolledBack).await;
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the drain was cancelled, not waited out: {:?}",
            start.elapsed()
        );
        assert!(!server.world().unschedulable("worker-1"));
        assert!(server.world().pods_on("worker-1").contains("shop/web-1"));
        assert!(daemon.kube.drains.is_empty() && daemon.kube.uncordons.is_empty());
    }
}
