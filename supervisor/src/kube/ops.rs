//! What the swap executor asks of a cluster's API server, as blocking calls for tokio's
//! blocking pool: cordon and drain a node under the cluster's `[clusters.kube]` policy
//! ([`drain_for_swap`]), uncordon it ([`uncordon_for_swap`]), list the nodes' Ready conditions
//! ([`list_ready`]); and what the executor keeps between its calls ([`Tasks`]): a client per
//! cluster ([`Clients`]), the drains and uncordons under way, the Ready conditions last seen
//! ([`ReadyCache`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::Error;
use super::client::{Client, CordonChange};
use super::drain::{self, DrainOutcome};
use super::model::PodRef;
use crate::config::{Kube, OnDeadline};

/// A client's identity is minted for an hour ([`Client::for_cluster`]); a cached client is
/// replaced after this, so no request of a drain meets an expired one.
const CLIENT_RENEW: Duration = Duration::from_secs(40 * 60);
/// How long the pods deleted by a forced drain are waited for before the swap goes on anyway
/// (the VM's stop ends whatever is left).
const FORCE_WAIT: Duration = Duration::from_secs(60);
/// How often the nodes of a cluster with a Ready gate are listed (while someone asks).
pub const READY_INTERVAL: Duration = Duration::from_secs(5);
/// Ready conditions listed longer ago than this count as unknown.
pub const READY_STALE: Duration = Duration::from_secs(30);
/// A listing still running after this is taken for lost (one request times out at 30 s).
const READY_LOST: Duration = Duration::from_secs(90);

/// Where the PKI of `cluster` is kept (as [`crate::seed::for_node`] makes it).
pub fn pki_dir(state_dir: &Path, cluster: &str) -> PathBuf {
    state_dir.join("clusters").join(cluster).join("pki")
}

/// An error and its causes on one line, for a swap's reason.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Clients by cluster, each with an identity minted from its cluster's CA.
#[derive(Debug, Default)]
pub struct Clients {
    cached: Mutex<BTreeMap<String, Cached>>,
}

#[derive(Debug)]
struct Cached {
    endpoint: String,
    minted: Instant,
    client: Arc<Client>,
}

impl Clients {
    /// The client of `cluster`'s API server at `endpoint`, minted from the CA in `pki_dir`
    /// unless one minted lately for the same endpoint is cached. Blocking: reads the CA key.
    pub fn get(&self, cluster: &str, pki_dir: &Path, endpoint: &str) -> Result<Arc<Client>, Error> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.get(cluster)
            && c.endpoint == endpoint
            && c.minted.elapsed() < CLIENT_RENEW
        {
            return Ok(c.client.clone());
        }
        let client = Arc::new(Client::for_cluster(pki_dir, endpoint)?);
        cached.insert(
            cluster.to_owned(),
            Cached {
                endpoint: endpoint.to_owned(),
                minted: Instant::now(),
                client: client.clone(),
            },
        );
        Ok(client)
    }
}

/// What the cordon before a drain found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cordoned {
    /// This drain cordoned the node.
    Changed,
    /// The node was cordoned already (by an operator, or by this swap before a restart).
    Already,
    /// The API server has no such node: nothing to cordon or drain.
    NotRegistered,
    /// Not known: the cordon request got no answer, or an error.
    Unknown,
}

/// How a swap's drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// What the cordon found.
    pub cordoned: Cordoned,
    /// Ok (what was done): the node's VM may stop; Err (why): it may not.
    pub result: Result<String, String>,
}

/// A swap's drain of Kubernetes node `node` of `cluster`, whose PKI is in `pki_dir` (see
/// [`cordon_and_drain`]).
pub fn drain_for_swap(
    clients: &Clients,
    cluster: &str,
    pki_dir: &Path,
    kube: &Kube,
    node: &str,
    deadline: Instant,
    cancel: &AtomicBool,
) -> DrainReport {
    match clients.get(cluster, pki_dir, &kube.endpoint) {
        Ok(client) => cordon_and_drain(&client, node, kube, deadline, cancel),
        Err(e) => DrainReport {
            cordoned: Cordoned::Unknown,
            result: Err(format!(
                "cannot make a client of cluster {cluster}'s API server {}: {}",
                kube.url(),
                chain(&e)
            )),
        },
    }
}

/// Cordons `node`, then drains it under `kube`'s policy until `deadline` (or until `cancel`
/// is set), then applies `kube.on_deadline` to the pods still there: roll-back is an `Err`,
/// force deletes them (bypassing their PodDisruptionBudgets) and is `Ok`. A node the API
/// server does not know is `Ok` (nothing runs there). Requests that get no answer, or a server
/// error, are retried until the deadline.
#[tracing::instrument(skip(client, kube, deadline, cancel))]
pub fn cordon_and_drain(
    client: &Client,
    node: &str,
    kube: &Kube,
    deadline: Instant,
    cancel: &AtomicBool,
) -> DrainReport {
    let cordoned = match cordon(client, node, deadline, cancel) {
        Ok(Some(CordonChange::Changed)) => Cordoned::Changed,
        Ok(Some(CordonChange::Unchanged)) => Cordoned::Already,
        Ok(None) => {
            return DrainReport {
                cordoned: Cordoned::NotRegistered,
                result: Ok(format!(
                    "node {node} is not registered with the API server: nothing to drain"
                )),
            };
        }
        Err(e) => {
            return DrainReport {
                cordoned: Cordoned::Unknown,
                result: Err(format!("cannot cordon node {node}: {}", chain(&e))),
            };
        }
    };
    let result = match drain::drain_until(client, node, &kube.drain, deadline, cancel) {
        Err(e) => Err(format!("cannot drain node {node}: {}", chain(&e))),
        Ok(outcome @ DrainOutcome::Drained(_)) => Ok(outcome.to_string()),
        Ok(outcome @ DrainOutcome::Refused(_)) => Err(format!(
            "{outcome} (empty-dir and unmanaged in [clusters.kube] say which pods may go)"
        )),
        Ok(_) if cancel.load(Ordering::SeqCst) => Err("drain cancelled: its swap ended".into()),
        Ok(outcome @ DrainOutcome::DeadlinePassed { .. })
            if kube.on_deadline == OnDeadline::RollBack =>
        {
            Err(format!(
                "{outcome} after {} s (on-deadline = \"roll-back\": let the budgets allow a disruption, or set on-deadline = \"force\")",
                kube.drain_deadline.as_secs()
            ))
        }
        Ok(DrainOutcome::DeadlinePassed { done, holdouts }) => {
            let pods: Vec<PodRef> = holdouts.into_iter().map(|(p, _)| p).collect();
            tracing::warn!(
                node,
                pods = pods.len(),
                "drain deadline passed: deleting the pods still there (on-deadline = \"force\")"
            );
            match drain::force(client, &pods, Instant::now() + FORCE_WAIT) {
                Ok(left) => Ok(format!(
                    "drain deadline passed ({} pods evicted): {} pods deleted (on-deadline = \"force\"){}",
                    done.evicted.len(),
                    pods.len(),
                    if left.is_empty() {
                        String::new()
                    } else {
                        format!(", {} still terminating", left.len())
                    }
                )),
                Err(e) => Err(format!(
                    "cannot force the drain of node {node}: {}",
                    chain(&e)
                )),
            }
        }
    };
    DrainReport { cordoned, result }
}

/// Cordons `node`, retrying requests without an answer (or with a server error) until
/// `deadline`; `None` when the API server has no such node.
fn cordon(
    client: &Client,
    node: &str,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<Option<CordonChange>, Error> {
    let mut wait = drain::RETRY_FIRST;
    // A failed attempt may have been a PATCH the server applied but whose answer was lost:
    // after one, a node found cordoned is taken as ours (an operator's cordon made in that
    // moment would be undone by our uncordon, a lesser harm than a node cordoned for good).
    let mut tried = false;
    loop {
        match client.cordon(node) {
            Ok(CordonChange::Unchanged) if tried => return Ok(Some(CordonChange::Changed)),
            Ok(change) => return Ok(Some(change)),
            Err(Error::Api { code: 404, .. }) => return Ok(None),
            Err(e)
                if drain::transient(&e)
                    && Instant::now() < deadline
                    && !cancel.load(Ordering::SeqCst) =>
            {
                tried = true;
                tracing::warn!(node, error = %e, "cannot cordon yet: retrying");
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(drain::jitter(wait).min(left));
                wait = (wait * 2).min(drain::RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Uncordons `node` of `cluster` at `endpoint` (a node the API server does not know counts as
/// done).
pub fn uncordon_for_swap(
    clients: &Clients,
    cluster: &str,
    pki_dir: &Path,
    endpoint: &str,
    node: &str,
) -> Result<CordonChange, String> {
    let uncordoned = clients
        .get(cluster, pki_dir, endpoint)
        .and_then(|client| client.uncordon(node));
    match uncordoned {
        Err(Error::Api { code: 404, .. }) => Ok(CordonChange::Unchanged),
        Err(e) => Err(format!("cannot uncordon node {node}: {}", chain(&e))),
        Ok(change) => Ok(change),
    }
}

/// The Ready condition of every node of `cluster` (`None`: a node without one yet).
pub fn list_ready(
    clients: &Clients,
    cluster: &str,
    pki_dir: &Path,
    endpoint: &str,
) -> Result<BTreeMap<String, Option<bool>>, String> {
    let listed = clients
        .get(cluster, pki_dir, endpoint)
        .and_then(|client| client.nodes());
    match listed {
        Ok(nodes) => Ok(nodes
            .iter()
            .map(|n| (n.metadata.name.clone(), n.ready()))
            .collect()),
        Err(e) => Err(chain(&e)),
    }
}

/// What the API server says of a node's health, for the beacon's word to be joined with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiReady {
    /// No gate: the cluster has no `[clusters.kube]`, or `ready-gate = false`.
    Ungated,
    /// The API server said lately that the node's Ready condition is True.
    Ready,
    /// Gated, and not Ready as the API server says: why.
    NotReady(String),
    /// Gated, and the API server has not answered lately: why (the host's problem, not the
    /// image's).
    Unknown(String),
}

impl ApiReady {
    /// Whether the node may count as healthy as far as the API server is concerned.
    pub fn passes(&self) -> bool {
        matches!(self, ApiReady::Ungated | ApiReady::Ready)
    }
}

/// The Ready conditions last listed, by cluster.
#[derive(Debug, Default)]
pub struct ReadyCache {
    clusters: Mutex<BTreeMap<String, Seen>>,
}

#[derive(Debug, Default)]
struct Seen {
    /// When a listing last succeeded.
    listed: Option<Instant>,
    /// When the last listing ended, either way.
    tried: Option<Instant>,
    /// Since when a listing runs.
    running: Option<Instant>,
    nodes: BTreeMap<String, Option<bool>>,
    /// Why the last listing failed ("" when it did not).
    error: String,
}

impl ReadyCache {
    /// Whether a listing of `cluster` is due at `now` (none runs, the last one ended
    /// [`READY_INTERVAL`] ago or more); if so it counts as running from now, and the caller
    /// runs it and gives its result to [`ReadyCache::store`].
    pub fn claim(&self, cluster: &str, now: Instant) -> bool {
        let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        let seen = clusters.entry(cluster.to_owned()).or_default();
        let running = seen
            .running
            .is_some_and(|t| now.saturating_duration_since(t) < READY_LOST);
        let rested = seen
            .tried
            .is_none_or(|t| now.saturating_duration_since(t) >= READY_INTERVAL);
        if running || !rested {
            return false;
        }
        seen.running = Some(now);
        true
    }

    /// A listing of `cluster` ended at `now`. A failed one keeps what was listed before (it
    /// goes stale by itself).
    pub fn store(
        &self,
        cluster: &str,
        listed: Result<BTreeMap<String, Option<bool>>, String>,
        now: Instant,
    ) {
        let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        let seen = clusters.entry(cluster.to_owned()).or_default();
        seen.running = None;
        seen.tried = Some(now);
        match listed {
            Ok(nodes) => {
                seen.nodes = nodes;
                seen.listed = Some(now);
                seen.error.clear();
            }
            Err(why) => {
                if seen.error != why {
                    tracing::warn!(%cluster, "cannot list the nodes' Ready conditions: {why}");
                }
                seen.error = why;
            }
        }
    }

    /// What the last listing of `cluster` says of Kubernetes node `node` at `now`.
    pub fn get(&self, cluster: &str, node: &str, now: Instant) -> ApiReady {
        let clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        let Some(seen) = clusters.get(cluster) else {
            return ApiReady::Unknown("the API server was not asked yet".into());
        };
        let fresh = seen
            .listed
            .is_some_and(|t| now.saturating_duration_since(t) < READY_STALE);
        if !fresh {
            return ApiReady::Unknown(if seen.error.is_empty() {
                "the API server has not listed the nodes lately".into()
            } else {
                format!("the API server does not answer: {}", seen.error)
            });
        }
        match seen.nodes.get(node) {
            Some(Some(true)) => ApiReady::Ready,
            Some(Some(false)) => {
                ApiReady::NotReady(format!("the API server says node {node} is not Ready"))
            }
            Some(None) => ApiReady::NotReady(format!(
                "node {node} has no Ready condition yet in the API server"
            )),
            None => {
                ApiReady::NotReady(format!("node {node} is not registered with the API server"))
            }
        }
    }
}

/// A swap's drain under way.
#[derive(Debug)]
pub struct Drain {
    /// The Kubernetes node drained.
    pub node: String,
    /// The swap had journaled this node as cordoned before this drain began (a restarted
    /// supervisor's, or a cordon an earlier swap left): an `Already` is then its own.
    pub resumed: bool,
    /// Set to end the drain early (its swap was sent back).
    pub cancel: Arc<AtomicBool>,
    /// The task, until it ended and was looked at.
    pub task: Option<JoinHandle<DrainReport>>,
    /// Its result, held back one call while the journal forgets a cordon that was not the
    /// swap's.
    pub ended: Option<Result<String, String>>,
}

/// A swap's uncordon under way, or waiting to be tried again.
#[derive(Debug)]
pub struct Uncordon {
    /// When the first attempt began.
    pub since: Instant,
    /// The task, until it ended and was looked at.
    pub task: Option<JoinHandle<Result<CordonChange, String>>>,
    /// A failed attempt is tried again after this.
    pub retry_at: Option<Instant>,
}

/// What the swap executor keeps of its work with the API servers.
#[derive(Debug, Default)]
pub struct Tasks {
    /// Clients by cluster (shared with the blocking tasks).
    pub clients: Arc<Clients>,
    /// Ready conditions by cluster (shared with the blocking listings).
    pub ready: Arc<ReadyCache>,
    /// Drains by swap (node name).
    pub drains: BTreeMap<String, Drain>,
    /// Uncordons by swap (node name).
    pub uncordons: BTreeMap<String, Uncordon>,
    /// Bootstrap tokens being minted, by cluster (shared with the blocking mints).
    pub tokens: Arc<super::tokens::Minting>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_gate_lists_at_most_once_an_interval_and_forgets_what_goes_stale() {
        let cache = ReadyCache::default();
        let t0 = Instant::now();
        // Not asked yet: unknown (the host's problem, never the image's).
        assert!(matches!(cache.get("lab", "w1", t0), ApiReady::Unknown(_)));
        assert!(cache.claim("lab", t0));
        assert!(!cache.claim("lab", t0), "one listing at a time");
        let nodes = BTreeMap::from([
            ("w1".to_owned(), Some(true)),
            ("w2".to_owned(), Some(false)),
            ("w3".to_owned(), None),
        ]);
        cache.store("lab", Ok(nodes), t0);
        assert!(!cache.claim("lab", t0 + Duration::from_secs(1)), "rests");
        assert_eq!(cache.get("lab", "w1", t0), ApiReady::Ready);
        assert!(ApiReady::Ready.passes() && ApiReady::Ungated.passes());
        for (node, says) in [
            ("w2", "is not Ready"),
            ("w3", "no Ready condition"),
            ("w4", "not registered"),
        ] {
            let got = cache.get("lab", node, t0);
            assert!(!got.passes());
            assert!(
                matches!(&got, ApiReady::NotReady(m) if m.contains(says)),
                "{got:?}"
            );
        }
        // A failed listing keeps the last word until it goes stale.
        let t1 = t0 + READY_INTERVAL;
        assert!(cache.claim("lab", t1));
        cache.store("lab", Err("connection refused".into()), t1);
        assert_eq!(cache.get("lab", "w1", t1), ApiReady::Ready);
        let late = t0 + READY_STALE;
        assert!(
            matches!(cache.get("lab", "w1", late), ApiReady::Unknown(m) if m.contains("connection refused"))
        );
        // A listing that never ended does not stop the next one for ever.
        let t2 = t1 + READY_INTERVAL;
        assert!(cache.claim("lab", t2));
        assert!(!cache.claim("lab", t2 + READY_INTERVAL));
        assert!(cache.claim("lab", t2 + READY_LOST));
        assert!(matches!(cache.get("other", "w1", t0), ApiReady::Unknown(_)));
        assert!(!ApiReady::Unknown(String::new()).passes());
    }
}
